//! Changes of a scope's unify keys (SPEC 4.5, 4.6), resolved against the current setting
//! inside the scope actor so that the precondition and the change are one step.

use unify_storage::{Id, ScopeRecord};

use crate::engine::{Attribute, KeySet, UnifyKey};
use crate::error::{Code, OpError};

/// A requested change of a scope's unify keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// Sets the keys unconditionally.
    Set(Vec<UnifyKey>),
    /// Creates the setting: refused when keys are set or the scope is CDH-connected.
    Create(Vec<UnifyKey>),
    /// Replaces the key list by attributes: kept keys keep `is_distinct`, new keys are not
    /// distinct. Refused while connected unless `allow_connected` (Admin Center).
    Replace {
        attributes: Vec<Attribute>,
        allow_connected: bool,
    },
    /// Removes one key; refused while connected.
    Remove(Attribute),
    /// Changes the attribute and distinctness of the key with id `key_id` (Admin Center).
    Update {
        key_id: Id,
        attribute: Attribute,
        is_distinct: bool,
    },
}

impl From<Vec<UnifyKey>> for KeyChange {
    fn from(keys: Vec<UnifyKey>) -> Self {
        KeyChange::Set(keys)
    }
}

impl KeyChange {
    /// Returns the new key list, or why the change is refused.
    pub fn resolve(self, record: &ScopeRecord, current: &KeySet) -> Result<Vec<UnifyKey>, OpError> {
        let connected = record.org_ids.len() > 1;
        let refuse_connected = || {
            OpError::conflict(
                Code::CdhAlreadyConnected,
                "the unify keys of a CDH-connected scope are managed in the Admin Center",
            )
        };
        let keys = match self {
            KeyChange::Set(keys) => keys,
            KeyChange::Create(keys) => {
                if connected {
                    return Err(refuse_connected());
                }
                if !current.is_empty() {
                    return Err(OpError::conflict(
                        Code::UnifyScopeSettingExists,
                        "the unify scope setting already exists; replace its keys instead",
                    ));
                }
                keys
            }
            KeyChange::Replace {
                attributes,
                allow_connected,
            } => {
                if connected && !allow_connected {
                    return Err(refuse_connected());
                }
                keep_distinct(current, &attributes)
            }
            KeyChange::Remove(attribute) => {
                if connected {
                    return Err(refuse_connected());
                }
                if !current.contains(attribute) {
                    return Err(OpError::NotFound("unify key"));
                }
                current
                    .keys()
                    .iter()
                    .filter(|k| k.attribute != attribute)
                    .copied()
                    .collect()
            }
            KeyChange::Update {
                key_id,
                attribute,
                is_distinct,
            } => {
                let position = record
                    .keys
                    .iter()
                    .position(|k| k.id == key_id)
                    .ok_or(OpError::NotFound("unify key"))?;
                let mut keys = current.keys().to_vec();
                keys[position] = UnifyKey {
                    attribute,
                    is_distinct,
                };
                keys
            }
        };
        KeySet::new(keys.clone()).map_err(|e| OpError::invalid(e.to_string()))?;
        Ok(keys)
    }
}

/// Returns keys for `attributes` in order: an attribute that is a key of `current` keeps its
/// `is_distinct`, any other is not distinct.
pub fn keep_distinct(current: &KeySet, attributes: &[Attribute]) -> Vec<UnifyKey> {
    attributes
        .iter()
        .map(|&attribute| UnifyKey {
            attribute,
            is_distinct: current
                .keys()
                .iter()
                .any(|k| k.attribute == attribute && k.is_distinct),
        })
        .collect()
}
