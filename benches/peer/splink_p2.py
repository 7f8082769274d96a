"""The peer of P2 (SPEC 9): the same NDJSON members loaded into DuckDB and unified by Splink.

    python3 benches/peer/splink_p2.py BODY.ndjson [--e164]

Run by `cargo bench --bench load -- peer`, which gives it the body it imports over HTTP, in
the same run. Splink links deterministically, as unify does: a pair of members links when
they share a normalized email, mobile or custom id (its blocking rules), and profiles are the
connected components of those links (its clustering). The load reads the file and normalizes
in SQL as unify's default configuration does, approximately: email trimmed and lowercased,
mobile reduced to its digits and a leading +, custom id trimmed; unify's default blocked
values, emails without @, mobiles under 8 digits and values held by more than 1000 members
do not link (without those rules the generator's placeholders make blocks of thousands and
Splink takes about 20 s at 1M). unify parses mobiles to E.164 with phonenumber (a port of
libphonenumber), so that `0912 345 678` and `+886 912-345-678` link; with `--e164` the load
does the same with the `phonenumbers` package (libphonenumber's Python port, region TW, valid
numbers only) in a DuckDB function, otherwise mobiles only link when their digits are equal.
unify also keeps custom id distinct (two members with different custom ids never share a
profile), which Splink cannot express. Nothing is durable and nothing serves requests.

Prints one line: `SPLINK load S s unify S s total S s members N profiles N`. Needs `splink`
(5.0.0 was measured), `duckdb` and, for `--e164`, `phonenumbers`.
"""

import logging
import sys
import time

import duckdb
from splink import DuckDBAPI, Linker, SettingsCreator, block_on


def e164(value: str):
    """A mobile as unify normalizes it by default: E.164 if valid (region TW), else none."""
    import phonenumbers

    if value is None:
        return None
    try:
        number = phonenumbers.parse(value, "TW")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def main(path: str, exact_mobiles: bool) -> None:
    logging.disable(logging.CRITICAL)
    con = duckdb.connect()
    started = time.perf_counter()
    if exact_mobiles:
        con.create_function(
            "normalize_mobile", e164, ["VARCHAR"], "VARCHAR", null_handling="special"
        )
    # unify's rules, in SQL: the default blocked values never link, an email needs an @, a
    # mobile at least 8 digits, and a value held by more than 1000 members (unify's
    # max_members_per_value) does not link.
    blocked = "('', 'null', 'none', 'n/a', 'test@test.com', '0000000000')"
    con.execute(
        f"""
        create table raw as
        select
            row_number() over () as unique_id,
            lower(trim(display_email)) as email,
            {"normalize_mobile(display_mobile)" if exact_mobiles else
             "regexp_replace(display_mobile, '[^0-9+]', '', 'g')"} as mobile,
            trim(custom_id) as custom_id
        from read_json(?, format = 'newline_delimited', columns = {{
            'display_email': 'varchar', 'display_mobile': 'varchar', 'custom_id': 'varchar'
        }})
        """,
        [path],
    )
    con.execute(
        f"""
        create table members as
        select
            unique_id,
            case when email like '%@%' and email not in {blocked}
                and count(*) over (partition by email) <= 1000 then email end as email,
            case when length(regexp_replace(mobile, '[^0-9]', '', 'g')) >= 8
                and mobile not in {blocked}
                and count(*) over (partition by mobile) <= 1000 then mobile end as mobile,
            case when lower(custom_id) not in {blocked}
                and count(*) over (partition by custom_id) <= 1000 then custom_id end
                as custom_id
        from raw
        """
    )
    loaded = time.perf_counter()
    db_api = DuckDBAPI(connection=con)
    settings = SettingsCreator(
        link_type="dedupe_only",
        blocking_rules_to_generate_predictions=[
            block_on("email"),
            block_on("mobile"),
            block_on("custom_id"),
        ],
        retain_intermediate_calculation_columns=False,
    )
    df = db_api.register("members")
    linker = Linker(df, settings)
    pairs = linker.inference.deterministic_link()
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(pairs)
    members, profiles = con.execute(
        f"select count(*), count(distinct cluster_id) from {clusters.physical_name}"
    ).fetchone()
    unified = time.perf_counter()
    print(
        f"SPLINK load {loaded - started:.2f} s unify {unified - loaded:.2f} s "
        f"total {unified - started:.2f} s members {members} profiles {profiles}"
    )


if __name__ == "__main__":
    main(sys.argv[1], "--e164" in sys.argv[2:])
