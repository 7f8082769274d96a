//! The ordered unify keys of a scope and the limits that shape its partition.

use super::attribute::Attribute;

/// One unify key: an attribute and whether it is the scope's distinct key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnifyKey {
    pub attribute: Attribute,
    pub is_distinct: bool,
}

/// Why a list of unify keys is not a valid setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    #[error("unify key `{0}` is listed more than once")]
    Duplicate(Attribute),
    #[error("at most one unify key may be distinct")]
    SeveralDistinct,
}

/// The validated, ordered unify keys of a scope (priority order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeySet {
    keys: Vec<UnifyKey>,
}

impl KeySet {
    /// Validates the keys: no attribute twice, at most one distinct key.
    pub fn new(keys: Vec<UnifyKey>) -> Result<Self, KeySetError> {
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.attribute == k.attribute) {
                return Err(KeySetError::Duplicate(k.attribute));
            }
        }
        if keys.iter().filter(|k| k.is_distinct).count() > 1 {
            return Err(KeySetError::SeveralDistinct);
        }
        Ok(KeySet { keys })
    }

    /// Builds a key set of non-distinct keys from attribute names in priority order.
    pub fn plain(attributes: &[Attribute]) -> Result<Self, KeySetError> {
        Self::new(
            attributes
                .iter()
                .map(|&attribute| UnifyKey {
                    attribute,
                    is_distinct: false,
                })
                .collect(),
        )
    }

    /// Returns the keys in priority order.
    pub fn keys(&self) -> &[UnifyKey] {
        &self.keys
    }

    /// Returns the key attributes in priority order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute> + '_ {
        self.keys.iter().map(|k| k.attribute)
    }

    /// Returns the distinct key's attribute, if any.
    pub fn distinct(&self) -> Option<Attribute> {
        self.keys
            .iter()
            .find(|k| k.is_distinct)
            .map(|k| k.attribute)
    }

    /// Returns whether `attribute` is one of the keys.
    pub fn contains(&self, attribute: Attribute) -> bool {
        self.keys.iter().any(|k| k.attribute == attribute)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Limits of SPEC 2.1 and 2.2 that keep placeholder data from building giant profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A key value held by more members than this does not link (a *hot value*).
    pub max_members_per_value: u32,
    /// A merge that would make a profile larger than this is refused.
    pub max_profile_size: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_members_per_value: 1000,
            max_profile_size: 10_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_and_several_distinct_keys_are_refused() {
        let email = UnifyKey {
            attribute: Attribute::DisplayEmail,
            is_distinct: false,
        };
        let custom = UnifyKey {
            attribute: Attribute::CustomId,
            is_distinct: true,
        };
        let line = UnifyKey {
            attribute: Attribute::LineId,
            is_distinct: true,
        };
        assert_eq!(
            KeySet::new(vec![email, email]),
            Err(KeySetError::Duplicate(Attribute::DisplayEmail))
        );
        assert_eq!(
            KeySet::new(vec![custom, line]),
            Err(KeySetError::SeveralDistinct)
        );
        let ok = KeySet::new(vec![email, custom]).unwrap();
        assert_eq!(ok.distinct(), Some(Attribute::CustomId));
        assert!(ok.contains(Attribute::DisplayEmail));
        assert!(!ok.contains(Attribute::LineId));
    }
}
