//! Listing of the identity and username indexes, so that `unify verify` can find entries that
//! point at nothing or at the wrong member (stale entries), not only missing ones.

use super::Store;
use crate::error::{Result, StoreError};
use crate::keys;
use crate::records::Id;

/// One entry of the by-external-id index or of the username index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub org_id: Id,
    /// The channel of an identity entry (`None` for maac members and for usernames).
    pub channel_id: Option<Id>,
    /// The external member id, or the username.
    pub name: String,
    pub member_id: Id,
}

impl Store {
    /// Lists the by-external-id index: `(org, channel, external id) → member`.
    pub fn scan_ext_index(&self) -> impl Iterator<Item = Result<IndexEntry>> + Send + use<> {
        self.db.scan_prefix([keys::MEMBER_BY_EXT]).map(|entry| {
            let (key, value) = entry?;
            let corrupt = || StoreError::Corrupt(format!("external-id index key {key:?}"));
            if key.len() < 17 {
                return Err(corrupt());
            }
            let org_id = Id::from_be_bytes(key[1..9].try_into().map_err(|_| corrupt())?);
            let channel = Id::from_be_bytes(key[9..17].try_into().map_err(|_| corrupt())?);
            let name = String::from_utf8(key[17..].to_vec()).map_err(|_| corrupt())?;
            Ok(IndexEntry {
                org_id,
                channel_id: (channel != 0).then_some(channel),
                name,
                member_id: keys::u64_value(&value)?,
            })
        })
    }

    /// Lists the username index: `(org, username) → member`.
    pub fn scan_username_index(&self) -> impl Iterator<Item = Result<IndexEntry>> + Send + use<> {
        self.db.scan_prefix([keys::USERNAME]).map(|entry| {
            let (key, value) = entry?;
            let corrupt = || StoreError::Corrupt(format!("username index key {key:?}"));
            if key.len() < 9 {
                return Err(corrupt());
            }
            let org_id = Id::from_be_bytes(key[1..9].try_into().map_err(|_| corrupt())?);
            let name = String::from_utf8(key[9..].to_vec()).map_err(|_| corrupt())?;
            Ok(IndexEntry {
                org_id,
                channel_id: None,
                name,
                member_id: keys::u64_value(&value)?,
            })
        })
    }
}
