//! Normalization of attribute values for linking (SPEC 2.1). Stored values are kept as written;
//! only the linking value is normalized.

use std::collections::HashSet;

use phonenumber::country;
use regex::Regex;

use super::attribute::{ATTRIBUTE_COUNT, Attribute};
use super::{phone, phone_parse};

/// Values that never link, whatever the attribute: placeholders seen in real data.
pub const DEFAULT_BLOCKED_VALUES: &[&str] = &[
    "",
    "null",
    "NULL",
    "Null",
    "none",
    "None",
    "NONE",
    "n/a",
    "N/A",
    "test@test.com",
    "0000000000",
];

/// A blocked value or pattern, for one attribute or (`attribute: None`) for all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRule {
    pub attribute: Option<Attribute>,
    pub value: String,
}

/// Why a normalizer cannot be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeConfigError {
    #[error("unknown default region `{0}` (expected an ISO 3166 code such as TW)")]
    UnknownRegion(String),
    #[error("invalid blocked pattern `{pattern}`: {message}")]
    InvalidPattern { pattern: String, message: String },
}

/// Revision of the normalization rules themselves, part of every [`Normalizer::fingerprint`].
/// Bump it whenever a change of code (or of the phone-number library's metadata) can change a
/// linking value, so that values persisted by an older build are recomputed at load.
pub const NORMALIZE_REVISION: u64 = 1;

/// Turns raw attribute values into linking values, or `None` when a value does not link.
#[derive(Debug, Clone)]
pub struct Normalizer {
    region: country::Id,
    blocked: [HashSet<String>; ATTRIBUTE_COUNT],
    patterns: [Vec<Regex>; ATTRIBUTE_COUNT],
    /// Stable hash of everything above (see [`Normalizer::fingerprint`]).
    fingerprint: u64,
}

impl Default for Normalizer {
    /// Returns the normalizer of the embedded defaults: region `TW`, the default blocked values.
    fn default() -> Self {
        let rules = DEFAULT_BLOCKED_VALUES
            .iter()
            .map(|v| BlockRule {
                attribute: None,
                value: (*v).to_owned(),
            })
            .collect();
        Normalizer::new("TW", rules, Vec::new()).expect("embedded defaults are valid")
    }
}

impl Normalizer {
    /// Builds a normalizer. Blocked values are compared with the normalized value, so each is
    /// stored both as written (trimmed) and normalized (an email written in capitals still blocks).
    pub fn new(
        default_region: &str,
        blocked_values: Vec<BlockRule>,
        blocked_patterns: Vec<BlockRule>,
    ) -> Result<Self, NormalizeConfigError> {
        let region: country::Id = default_region
            .parse()
            .map_err(|_| NormalizeConfigError::UnknownRegion(default_region.to_owned()))?;
        let mut normalizer = Normalizer {
            region,
            blocked: Default::default(),
            patterns: Default::default(),
            fingerprint: 0,
        };
        for rule in blocked_values {
            for attribute in targets(rule.attribute) {
                let canonical = normalizer.canonical(attribute, &rule.value);
                let set = &mut normalizer.blocked[attribute.index()];
                set.insert(rule.value.trim().to_owned());
                set.extend(canonical);
            }
        }
        for rule in blocked_patterns {
            let regex =
                Regex::new(&rule.value).map_err(|e| NormalizeConfigError::InvalidPattern {
                    pattern: rule.value.clone(),
                    message: e.to_string(),
                })?;
            for attribute in targets(rule.attribute) {
                normalizer.patterns[attribute.index()].push(regex.clone());
            }
        }
        normalizer.fingerprint = normalizer.compute_fingerprint();
        Ok(normalizer)
    }

    /// Returns a fingerprint of the configuration: equal fingerprints normalize every value
    /// alike. It is stable across runs and builds (FNV-1a over a canonical description, with
    /// [`NORMALIZE_REVISION`]), so that it can be stored next to persisted linking values.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    fn compute_fingerprint(&self) -> u64 {
        let mut hash = Fnv::default();
        hash.write_u64(NORMALIZE_REVISION);
        hash.write_str(self.region.as_ref());
        for attribute in Attribute::ALL {
            let i = attribute.index();
            hash.write_str(attribute.as_str());
            let mut blocked: Vec<&String> = self.blocked[i].iter().collect();
            blocked.sort();
            hash.write_u64(blocked.len() as u64);
            for value in blocked {
                hash.write_str(value);
            }
            hash.write_u64(self.patterns[i].len() as u64);
            for pattern in &self.patterns[i] {
                hash.write_str(pattern.as_str());
            }
        }
        hash.0
    }

    /// Returns the linking value of `raw` for `attribute`, or `None` if it does not link
    /// (absent after trimming, malformed, or blocked).
    pub fn normalize(&self, attribute: Attribute, raw: &str) -> Option<String> {
        let value = self.canonical(attribute, raw)?;
        let i = attribute.index();
        if self.blocked[i].contains(&value) || self.patterns[i].iter().any(|p| p.is_match(&value)) {
            return None;
        }
        Some(value)
    }

    /// Returns the canonical form of a value, before blocking.
    fn canonical(&self, attribute: Attribute, raw: &str) -> Option<String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return None;
        }
        match attribute {
            Attribute::DisplayEmail => email(trimmed),
            Attribute::DisplayMobile => self.mobile(trimmed),
            _ => Some(trimmed.to_owned()),
        }
    }

    /// Parses a mobile number with the default region and formats it as E.164 when it is
    /// valid. Parsing, validity and formatting are phonenumber's, without its one locked regex
    /// cache (see `engine/phone_parse.rs` and `engine/phone.rs`).
    fn mobile(&self, trimmed: &str) -> Option<String> {
        let number = phone_parse::parse(self.region, trimmed)?;
        phone::valid_e164(&number)
    }
}

/// Lowercases an email and accepts it only with exactly one `@` and non-empty sides.
fn email(trimmed: &str) -> Option<String> {
    let lower = trimmed.to_lowercase();
    let (local, domain) = lower.split_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') {
        return None;
    }
    Some(lower)
}

/// 64-bit FNV-1a; strings are length-prefixed so that concatenations cannot collide.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.write(&n.to_le_bytes());
    }

    fn write_str(&mut self, s: &str) {
        self.write_u64(s.len() as u64);
        self.write(s.as_bytes());
    }
}

fn targets(attribute: Option<Attribute>) -> Vec<Attribute> {
    match attribute {
        Some(a) => vec![a],
        None => Attribute::ALL.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Attribute::*;

    fn n(attribute: Attribute, raw: &str) -> Option<String> {
        Normalizer::default().normalize(attribute, raw)
    }

    #[test]
    fn email_is_trimmed_and_lowercased() {
        assert_eq!(
            n(DisplayEmail, "  Kevin@Example.COM "),
            Some("kevin@example.com".into())
        );
    }

    #[test]
    fn email_needs_exactly_one_at_with_non_empty_sides() {
        assert_eq!(n(DisplayEmail, "kevin.example.com"), None);
        assert_eq!(n(DisplayEmail, "@example.com"), None);
        assert_eq!(n(DisplayEmail, "kevin@"), None);
        assert_eq!(n(DisplayEmail, "a@b@c"), None);
    }

    #[test]
    fn mobile_is_parsed_to_e164_with_the_default_region() {
        assert_eq!(
            n(DisplayMobile, "0912 345 678"),
            Some("+886912345678".into())
        );
        assert_eq!(
            n(DisplayMobile, "+886-912-345-678"),
            Some("+886912345678".into())
        );
        assert_eq!(
            n(DisplayMobile, "+1 650 253 0000"),
            Some("+16502530000".into())
        );
    }

    #[test]
    fn mobile_region_is_configurable() {
        let us = Normalizer::new("US", Vec::new(), Vec::new()).unwrap();
        assert_eq!(
            us.normalize(DisplayMobile, "(650) 253-0000"),
            Some("+16502530000".into())
        );
        assert!(matches!(
            Normalizer::new("XX", Vec::new(), Vec::new()),
            Err(NormalizeConfigError::UnknownRegion(_))
        ));
    }

    #[test]
    fn invalid_mobiles_do_not_link() {
        assert_eq!(n(DisplayMobile, "12"), None);
        assert_eq!(n(DisplayMobile, "not a number"), None);
        assert_eq!(n(DisplayMobile, "0000000000"), None);
    }

    #[test]
    fn other_attributes_are_trimmed_and_case_sensitive() {
        assert_eq!(n(CustomId, "  C-1 "), Some("C-1".into()));
        assert_ne!(n(CustomId, "c-1"), n(CustomId, "C-1"));
        assert_eq!(n(LineId, "   "), None);
        assert_eq!(n(ExternalMemberId, "ou_abc"), Some("ou_abc".into()));
    }

    #[test]
    fn default_placeholders_are_blocked() {
        for v in ["null", "NULL", "none", "n/a", "N/A", " ", "0000000000"] {
            assert_eq!(n(CustomId, v), None, "{v:?} must not link");
        }
        assert_eq!(n(DisplayEmail, "TEST@test.com"), None);
    }

    #[test]
    fn blocked_values_and_patterns_apply_per_attribute() {
        let normalizer = Normalizer::new(
            "TW",
            vec![BlockRule {
                attribute: Some(DisplayEmail),
                value: "NoReply@Shop.com".into(),
            }],
            vec![BlockRule {
                attribute: Some(CustomId),
                value: "^tmp-".into(),
            }],
        )
        .unwrap();
        assert_eq!(normalizer.normalize(DisplayEmail, "noreply@shop.com"), None);
        assert_eq!(
            normalizer.normalize(CustomId, "noreply@shop.com"),
            Some("noreply@shop.com".into())
        );
        assert_eq!(normalizer.normalize(CustomId, "tmp-123"), None);
        assert_eq!(
            normalizer.normalize(CustomId, "x-tmp-123"),
            Some("x-tmp-123".into())
        );
        assert_eq!(
            normalizer.normalize(LineId, "tmp-123"),
            Some("tmp-123".into())
        );
    }

    #[test]
    fn fingerprint_follows_the_configuration() {
        let rule = |value: &str| BlockRule {
            attribute: Some(CustomId),
            value: value.into(),
        };
        let base = Normalizer::default().fingerprint();
        assert_eq!(base, Normalizer::default().fingerprint());
        let tw = Normalizer::new("TW", vec![rule("x"), rule("y")], Vec::new()).unwrap();
        let tw_reordered = Normalizer::new("TW", vec![rule("y"), rule("x")], Vec::new()).unwrap();
        assert_eq!(tw.fingerprint(), tw_reordered.fingerprint());
        let us = Normalizer::new("US", vec![rule("x"), rule("y")], Vec::new()).unwrap();
        let fewer = Normalizer::new("TW", vec![rule("x")], Vec::new()).unwrap();
        let pattern = Normalizer::new("TW", vec![rule("x"), rule("y")], vec![rule("^t")]).unwrap();
        for other in [&us, &fewer, &pattern] {
            assert_ne!(tw.fingerprint(), other.fingerprint());
        }
        assert_ne!(base, tw.fingerprint());
    }

    #[test]
    fn an_invalid_pattern_is_a_configuration_error() {
        let err = Normalizer::new(
            "TW",
            Vec::new(),
            vec![BlockRule {
                attribute: None,
                value: "(".into(),
            }],
        )
        .unwrap_err();
        assert!(matches!(err, NormalizeConfigError::InvalidPattern { .. }));
    }
}
