//! Validity of a parsed phone number, decided exactly as `phonenumber::is_valid` decides it
//! (phonenumber 0.3.10: `validator::is_valid_with`, `source_for`, `number_type` and
//! `Descriptor::is_match`), over the same metadata (`phonenumber::metadata::DATABASE`).
//!
//! The difference is how the patterns run. phonenumber sends every match through
//! `regex_cache::CachedRegex`: one process-wide mutex around an LRU of 100 compiled regexes,
//! the whole pattern string hashed twice per use and the match run while the lock is held, so
//! a validity check (up to a dozen matches) costs microseconds and two import threads
//! serialize on it. Here the patterns of a metadata entry are compiled into owned
//! `regex::Regex` values the first time a number needs them (`OnceLock`) and only read after
//! that, without any lock.
//!
//! The ported logic is kept literal on purpose, bugs included (a pattern matches a prefix of
//! the number, not the whole number; the first region of a shared code whose leading digits
//! match decides even when the number is not valid there), because the linking value of a
//! stored mobile must not change. `engine/phone_tests.rs` compares it with phonenumber.

use std::sync::{LazyLock, OnceLock};

use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use phonenumber::{PhoneNumber, country};
use regex::{Regex, RegexBuilder};

/// Returns the E.164 form of `number` (what `number.format().mode(Mode::E164)` writes) when
/// `phonenumber::is_valid(number)` holds, `None` otherwise.
///
/// phonenumber's E.164 formatting is `+`, the country code and the national number with its
/// leading zeros, written directly here: its formatter also picks a national format (more
/// pattern matches) that the E.164 mode does not use. It fails only for a country code
/// without metadata, and such a number is never valid.
pub fn valid_e164(number: &PhoneNumber) -> Option<String> {
    let code = number.country().code();
    let national = number.national().to_string();
    is_valid_national(code, &national).then(|| format!("+{code}{national}"))
}

/// Returns whether the national significant number (leading zeros included) is valid for the
/// country calling code (`is_valid_with`).
fn is_valid_national(code: u16, national: &str) -> bool {
    match CODES.get(usize::from(code)) {
        Some(Some(code)) => code.is_valid(national),
        _ => false,
    }
}

/// The metadata of every country calling code (they have at most three digits), indexed by
/// code. The codes are found by asking the database for each one: `Database::iter` walks the
/// entries by region id, where the non-geographic entities all share the id `001`, so it
/// yields only one of them.
static CODES: LazyLock<Vec<Option<Code>>> = LazyLock::new(|| {
    (0..1000u16)
        .map(|code| {
            DATABASE
                .region(&code)
                .map(|regions| Code::new(code, &regions))
        })
        .collect()
});

/// The metadata that can decide the numbers of one country calling code (`source_for`).
enum Code {
    /// The code's only region, or `None` when phonenumber cannot name that region (an id that
    /// is not a `country::Id`): then no number of the code is valid.
    One(Option<Entry>),
    /// The regions sharing the code, in the database's order (main country first).
    Shared(Vec<Entry>),
}

impl Code {
    fn new(code: u16, regions: &[&str]) -> Code {
        match regions {
            // Non-geographic entities (+800, +979, ...) are found by code; the first entry.
            ["001"] => Code::One(
                DATABASE
                    .by_code(&code)
                    .and_then(|metas| metas.into_iter().next())
                    .map(Entry::new),
            ),
            [region] => Code::One(
                region
                    .parse::<country::Id>()
                    .ok()
                    .and_then(|id| DATABASE.by_id(id.as_ref()))
                    .map(Entry::new),
            ),
            regions => Code::Shared(
                regions
                    .iter()
                    .filter_map(|region| DATABASE.by_id(*region))
                    .map(Entry::new)
                    .collect(),
            ),
        }
    }

    fn is_valid(&self, national: &str) -> bool {
        match self {
            Code::One(entry) => entry.as_ref().is_some_and(|e| e.has_type(national)),
            Code::Shared(entries) => {
                for entry in entries {
                    match entry.leading_digits() {
                        // Leading digits choose the region, and its types alone decide.
                        Some(leading) => {
                            if leading.is_match(national) {
                                return entry.has_type(national);
                            }
                        }
                        None => {
                            if entry.has_type(national) {
                                return true;
                            }
                        }
                    }
                }
                false
            }
        }
    }
}

/// One metadata entry, with its patterns compiled on first use.
struct Entry {
    meta: &'static Metadata,
    /// The region's leading-digits pattern (asked only when the code is shared).
    leading_digits: OnceLock<Option<Regex>>,
    types: OnceLock<Types>,
}

impl Entry {
    fn new(meta: &'static Metadata) -> Entry {
        Entry {
            meta,
            leading_digits: OnceLock::new(),
            types: OnceLock::new(),
        }
    }

    fn leading_digits(&self) -> Option<&Regex> {
        self.leading_digits
            .get_or_init(|| {
                self.meta
                    .leading_digits()
                    .map(|re| prefix_regex(re.as_str()))
            })
            .as_ref()
    }

    /// Returns whether `number_type` is not `Type::Unknown`.
    fn has_type(&self, national: &str) -> bool {
        let types = self.types.get_or_init(|| Types::new(self.meta));
        types.general.is_match(national) && types.kinds.iter().any(|d| d.is_match(national))
    }
}

/// The descriptors `number_type` consults. It returns a known type as soon as the general
/// descriptor and any one of the others match (which type does not matter for validity), so
/// their order does not change the answer; mobile and fixed line come first because most
/// numbers linked are of those types.
struct Types {
    general: Pattern,
    kinds: Vec<Pattern>,
}

impl Types {
    fn new(meta: &Metadata) -> Types {
        let d = meta.descriptors();
        let kinds = [
            d.mobile(),
            d.fixed_line(),
            d.premium_rate(),
            d.toll_free(),
            d.shared_cost(),
            d.voip(),
            d.personal_number(),
            d.pager(),
            d.uan(),
            d.voicemail(),
        ];
        Types {
            general: Pattern::new(d.general()),
            kinds: kinds.into_iter().flatten().map(Pattern::new).collect(),
        }
    }
}

/// A descriptor, as `Descriptor::is_match` uses it.
struct Pattern {
    possible_length: Vec<u16>,
    national_number: Regex,
}

impl Pattern {
    fn new(descriptor: &Descriptor) -> Pattern {
        Pattern {
            possible_length: descriptor.possible_length().to_vec(),
            national_number: prefix_regex(descriptor.national_number().as_str()),
        }
    }

    fn is_match(&self, national: &str) -> bool {
        // The same truncating conversion as phonenumber's (a national number is short anyway).
        let length = national.len() as u16;
        (self.possible_length.is_empty() || self.possible_length.contains(&length))
            && self.national_number.is_match(national)
    }
}

/// Compiles a metadata pattern to match where phonenumber accepts a match: phonenumber builds
/// every pattern with `ignore_whitespace(true)` and keeps a `find` only when it starts at 0,
/// i.e. a match anchored at the start and free at the end. The newline before the closing
/// parenthesis ends a `#` comment the pattern could end with (whitespace in this mode).
fn prefix_regex(source: &str) -> Regex {
    RegexBuilder::new(&format!("^(?:{source}\n)"))
        .ignore_whitespace(true)
        // regex_cache's limits (the regex defaults), so that what compiles there compiles here.
        .size_limit(10 * (1 << 20))
        .dfa_size_limit(2 * (1 << 20))
        .build()
        // phonenumber compiles the same source with the same options and unwraps it too.
        .expect("phonenumber metadata pattern compiles")
}

#[cfg(test)]
pub(super) fn compile_every_pattern() -> usize {
    let mut count = 0;
    for code in CODES.iter().flatten() {
        let entries: Vec<&Entry> = match code {
            Code::One(entry) => entry.iter().collect(),
            Code::Shared(entries) => entries.iter().collect(),
        };
        for entry in entries {
            count += usize::from(entry.leading_digits().is_some());
            let types = entry.types.get_or_init(|| Types::new(entry.meta));
            count += 1 + types.kinds.len();
        }
    }
    count
}
