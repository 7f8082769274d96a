//! `phone::valid_e164` against phonenumber's own `is_valid` and E.164 formatting, and the
//! normalizer's mobiles against what it returned before (parse, `phonenumber::is_valid`,
//! format), over a large deterministic set of inputs: the spellings `unify gen` writes, random
//! digit strings with and without `+` and separators, international numbers of shared and
//! non-geographic country codes, and every example number of the metadata with variations.

use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use phonenumber::{Mode, country};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Attribute, Normalizer};
use super::{phone, phone_parse};

/// Default regions to parse with: the configured default (TW), NANPA, Italy (national numbers
/// keep their leading zero), and others with national prefixes or several number lengths.
const REGIONS: [&str; 11] = [
    "TW", "US", "GB", "IT", "JP", "CN", "DE", "BR", "IN", "RU", "KR",
];

/// Shared (+1, +44, +7, +61) and non-geographic (+800 ...) codes, and a few single ones.
const CODES: [u16; 16] = [
    1, 44, 7, 61, 800, 808, 870, 882, 883, 979, 886, 39, 81, 86, 49, 262,
];

/// How many inputs the tests generate. A debug build (what `cargo test` runs) runs
/// phonenumber about ten times slower than a release build, and random numbers of many
/// regions make its cache of 100 regexes recompile them again and again, so a debug build
/// compares about 27,000 (input, default region) pairs in 15-20 s, and
/// `cargo test --release -p unify-actors --lib phone_tests` about 360,000 in about 30 s.
const DEBUG: bool = cfg!(debug_assertions);
/// The gen spellings are checked for every `GEN_STEP`-th person of the 80M `unify gen` spans.
const GEN_STEP: usize = if DEBUG { 1999 * 8 } else { 1999 };
const RANDOM_PER_REGION: usize = if DEBUG { 60 } else { 5_000 };
const INTERNATIONAL_PER_CODE: usize = if DEBUG { 4 } else { 400 };
/// Example numbers with random last digits, per example number.
const EXAMPLE_CHANGES: usize = if DEBUG { 1 } else { 12 };
/// Whether example numbers are also checked with a digit dropped and a digit added.
const EXAMPLE_LENGTHS: bool = !DEBUG;

/// What `Normalizer::mobile` computed before `engine/phone.rs`.
fn reference(region: country::Id, raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return None;
    }
    let number = phonenumber::parse(Some(region), trimmed).ok()?;
    if !phonenumber::is_valid(&number) {
        return None;
    }
    Some(number.format().mode(Mode::E164).to_string())
}

fn region(id: &str) -> country::Id {
    id.parse().unwrap()
}

/// Counts the (input, default region) pairs compared, and how many parsed and were valid, so
/// that a generator producing only garbage cannot pass unnoticed.
#[derive(Debug, Default)]
struct Tally {
    pairs: usize,
    parsed: usize,
    valid: usize,
}

impl Tally {
    /// Parses `input` with `region` and compares validity and the E.164 form.
    fn check(&mut self, region: Option<country::Id>, input: &str) {
        self.pairs += 1;
        let parsed = phonenumber::parse(region, input).ok();
        if let Some(region) = region {
            assert_eq!(
                phone_parse::parse(region, input),
                parsed,
                "{input:?} parsed with default region {region:?}"
            );
        }
        let Some(number) = parsed else {
            return;
        };
        self.parsed += 1;
        let expected =
            phonenumber::is_valid(&number).then(|| number.format().mode(Mode::E164).to_string());
        assert_eq!(
            phone::valid_e164(&number),
            expected,
            "{input:?} parsed with default region {region:?} as {number:?}"
        );
        self.valid += usize::from(expected.is_some());
    }
}

/// No default region, then each of [`REGIONS`]. Inputs are checked region by region:
/// phonenumber's regex cache holds 100 patterns, and alternating regions would make it
/// recompile them all the time (slow in a debug build).
fn default_regions() -> impl Iterator<Item = Option<country::Id>> {
    std::iter::once(None).chain(REGIONS.iter().map(|id| Some(region(id))))
}

/// Every metadata entry, by country calling code (`Database::iter` yields only one of the
/// non-geographic entries, which all have the id `001`).
fn every_metadata() -> impl Iterator<Item = &'static Metadata> {
    (0..1000u16).flat_map(|code| DATABASE.by_code(&code).unwrap_or_default())
}

fn digits(rng: &mut StdRng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// Writes `digits` with random separators between them (spaces, hyphens, a parenthesized
/// group), as people type numbers.
fn decorate(rng: &mut StdRng, digits: &str) -> String {
    let mut out = String::new();
    let mut open = false;
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && rng.random_bool(0.25) {
            match rng.random_range(0..4) {
                0 => out.push(' '),
                1 => out.push('-'),
                2 if !open => {
                    out.push_str(" (");
                    open = true;
                }
                _ if open => {
                    out.push_str(") ");
                    open = false;
                }
                _ => out.push(' '),
            }
        }
        out.push(c);
    }
    if open {
        out.push(')');
    }
    out
}

fn descriptors(meta: &Metadata) -> impl Iterator<Item = &Descriptor> {
    let d = meta.descriptors();
    [
        Some(d.general()),
        d.fixed_line(),
        d.mobile(),
        d.toll_free(),
        d.premium_rate(),
        d.shared_cost(),
        d.personal_number(),
        d.voip(),
        d.pager(),
        d.uan(),
        d.emergency(),
        d.voicemail(),
        d.short_code(),
        d.standard_rate(),
        d.carrier(),
        d.no_international(),
    ]
    .into_iter()
    .flatten()
}

/// The TW mobiles of `unify gen` in its three spellings, and its junk values, through the
/// normalizer itself.
#[test]
fn gen_spellings_normalize_as_before() {
    let tw = region("TW");
    let normalizer = Normalizer::new("TW", Vec::new(), Vec::new()).unwrap();
    let mut linked = 0;
    for person in (0..80_000_000u64).step_by(GEN_STEP) {
        let d = format!("{:08}", 10_000_000 + person);
        for raw in [
            format!("09{d}"),
            format!("+886 9{} {} {}", &d[..2], &d[2..5], &d[5..]),
            format!("09{}-{}-{}", &d[..2], &d[2..5], &d[5..]),
        ] {
            let value = normalizer.normalize(Attribute::DisplayMobile, &raw);
            assert_eq!(value, reference(tw, &raw), "{raw:?}");
            linked += usize::from(value.is_some());
        }
    }
    assert!(
        linked > 3 * 80_000_000 / GEN_STEP * 9 / 10,
        "only {linked} gen mobiles linked"
    );
    for raw in ["0000000000", "123", "n/a", "", "  "] {
        assert_eq!(
            normalizer.normalize(Attribute::DisplayMobile, raw),
            reference(tw, raw),
            "{raw:?}"
        );
    }
}

/// Random inputs through the normalizer of every region in [`REGIONS`].
#[test]
fn random_inputs_normalize_as_before_in_every_region() {
    let mut rng = StdRng::seed_from_u64(7);
    let normalizers: Vec<(country::Id, Normalizer)> = REGIONS
        .iter()
        .map(|id| {
            (
                region(id),
                Normalizer::new(id, Vec::new(), Vec::new()).unwrap(),
            )
        })
        .collect();
    let mut linked = 0;
    for (id, normalizer) in &normalizers {
        for i in 0..RANDOM_PER_REGION / 2 {
            let len = rng.random_range(7..=13);
            let bare = digits(&mut rng, len);
            let mut raw = decorate(&mut rng, &bare);
            if i % 2 == 0 {
                raw.insert(0, '+');
            }
            let value = normalizer.normalize(Attribute::DisplayMobile, &raw);
            assert_eq!(value, reference(*id, &raw), "{raw:?} in {id:?}");
            linked += usize::from(value.is_some());
        }
    }
    assert!(
        linked > RANDOM_PER_REGION / 2,
        "only {linked} random inputs linked"
    );
}

/// Digit strings of 3 to 17 digits, bare, with `+`, with `00` and with separators, parsed with
/// no default region and with each of [`REGIONS`].
#[test]
fn random_digit_strings_agree_with_phonenumber() {
    let mut rng = StdRng::seed_from_u64(42);
    let mut tally = Tally::default();
    for region in default_regions() {
        for _ in 0..RANDOM_PER_REGION {
            let len = rng.random_range(3..=17);
            let bare = digits(&mut rng, len);
            let raw = match rng.random_range(0..5) {
                0 => bare,
                1 => format!("+{bare}"),
                2 => format!("+{}", decorate(&mut rng, &bare)),
                3 => format!("00{bare}"),
                _ => decorate(&mut rng, &bare),
            };
            tally.check(region, &raw);
        }
    }
    assert!(
        tally.parsed > tally.pairs / 2 && tally.valid > tally.pairs / 20,
        "{tally:?}"
    );
}

/// International numbers of shared codes (+1 NANPA with plausible area codes, +44, +7, +61),
/// non-geographic codes (+800, +808, +870, +882, +883, +979) and a few others.
#[test]
fn international_numbers_agree_with_phonenumber() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut tally = Tally::default();
    for region in default_regions() {
        for code in CODES {
            for i in 0..INTERNATIONAL_PER_CODE {
                let national = if code == 1 {
                    format!(
                        "{}{}{}",
                        rng.random_range(2..10),
                        digits(&mut rng, 2),
                        digits(&mut rng, 7)
                    )
                } else {
                    let len = rng.random_range(4..=13);
                    digits(&mut rng, len)
                };
                let raw = if i % 3 == 0 {
                    format!("+{code} {}", decorate(&mut rng, &national))
                } else {
                    format!("+{code}{national}")
                };
                tally.check(region, &raw);
            }
        }
    }
    assert!(
        tally.parsed > tally.pairs * 9 / 10 && tally.valid > tally.pairs / 20,
        "{tally:?}"
    );
}

/// Every example number of the metadata, international and national (with and without the
/// national prefix), and variations of it: the last one to four digits changed, one digit
/// dropped or added, so that numbers of every region and type, valid or nearly, are compared.
#[test]
fn example_numbers_and_their_variations_agree_with_phonenumber() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut tally = Tally::default();
    let mut examples = 0;
    for meta in every_metadata() {
        let code = meta.country_code();
        let id = meta.id().parse::<country::Id>().ok();
        for example in descriptors(meta).filter_map(Descriptor::example) {
            examples += 1;
            let mut variants = vec![example.to_owned()];
            if EXAMPLE_LENGTHS {
                variants.push(format!("{example}{}", digits(&mut rng, 1)));
                if example.len() > 1 {
                    variants.push(example[..example.len() - 1].to_owned());
                }
            }
            for _ in 0..EXAMPLE_CHANGES {
                let keep = example.len().saturating_sub(rng.random_range(1..=4));
                let changed = format!(
                    "{}{}",
                    &example[..keep],
                    digits(&mut rng, example.len() - keep)
                );
                variants.push(changed);
            }
            for national in &variants {
                tally.check(None, &format!("+{code}{national}"));
                tally.check(None, &format!("+{code} {}", decorate(&mut rng, national)));
                if let Some(id) = id {
                    tally.check(Some(id), national);
                    if let Some(prefix) = meta.national_prefix() {
                        tally.check(Some(id), &format!("{prefix}{national}"));
                    }
                }
                // The number as written abroad (from Taiwan: IDD 002).
                tally.check(Some(region("TW")), &format!("002 {code} {national}"));
            }
        }
    }
    assert!(examples > 1_000, "only {examples} example numbers");
    assert!(tally.valid > examples * 2, "{tally:?}");
}

/// Every pattern the port uses compiles (a failure would otherwise surface only when a number
/// of that region first arrives).
#[test]
fn every_metadata_pattern_compiles() {
    assert!(phone::compile_every_pattern() > 1_000);
}

/// phonenumber parses every region of a shared code as a `country::Id` (it unwraps that); the
/// port relies on looking those regions up by their id alone.
#[test]
fn the_regions_of_shared_codes_are_country_ids() {
    for code in 0..1000u16 {
        let regions = DATABASE.region(&code).unwrap_or_default();
        if regions.len() > 1 {
            for region in regions {
                assert!(region.parse::<country::Id>().is_ok(), "{region} of +{code}");
            }
        }
    }
}

/// The copy of the database has the same entries, field by field, in the same order for each
/// country code, and answers `by_id` with the same entries.
#[test]
fn the_copy_of_the_database_has_the_same_entries_and_lookups() {
    let copy = phone_parse::copy_of_database();
    let fields = |meta: &Metadata| format!("{:?}", phone_parse::loader_metadata(meta));
    for code in 0..1000u16 {
        assert_eq!(copy.region(&code), DATABASE.region(&code), "+{code}");
        let copied: Vec<String> = copy
            .by_code(&code)
            .unwrap_or_default()
            .into_iter()
            .map(fields)
            .collect();
        let original: Vec<String> = DATABASE
            .by_code(&code)
            .unwrap_or_default()
            .into_iter()
            .map(fields)
            .collect();
        assert_eq!(copied, original, "+{code}");
    }
    for meta in DATABASE.iter() {
        assert_eq!(
            fields(copy.by_id(meta.id()).unwrap()),
            fields(meta),
            "{}",
            meta.id()
        );
    }
}
