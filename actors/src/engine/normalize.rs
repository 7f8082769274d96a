//! Normalization of attribute values for linking (SPEC 2.1). Stored values are kept as written;
//! only the linking value is normalized.

use std::collections::HashSet;

use phonenumber::country;
use regex::Regex;

use super::attribute::{ATTRIBUTE_COUNT, Attribute};

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

/// Turns raw attribute values into linking values, or `None` when a value does not link.
#[derive(Debug, Clone)]
pub struct Normalizer {
    region: country::Id,
    blocked: [HashSet<String>; ATTRIBUTE_COUNT],
    patterns: [Vec<Regex>; ATTRIBUTE_COUNT],
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
        Ok(normalizer)
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

    /// Parses a mobile number with the default region and formats it as E.164.
    fn mobile(&self, trimmed: &str) -> Option<String> {
        let number = phonenumber::parse(Some(self.region), trimmed).ok()?;
        if !phonenumber::is_valid(&number) {
            return None;
        }
        Some(number.format().mode(phonenumber::Mode::E164).to_string())
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
