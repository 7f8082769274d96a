//! Key layout of the store.
//!
//! Every record lives in sled's default tree, so that one `sled::Batch` (applied atomically by
//! `Tree::apply_batch`) covers any multi-record write: a member with its indexes, a change with
//! its events and outbox entries. The first byte of a key names the record kind; ids and
//! sequence numbers follow in big-endian so that the lexicographic order of sled equals the
//! numeric order, which makes "last key of a prefix" the largest id and ranges sort by seq.
//!
//! | prefix | key after the prefix                      | value                      |
//! |--------|-------------------------------------------|----------------------------|
//! | `0x00` | `schema_version`                          | u32 BE                     |
//! | `0x01` | id-kind byte                              | u64 BE, last allocated id  |
//! | `0x10` | account id                                | `Account`                  |
//! | `0x11` | org id                                    | `Org`                      |
//! | `0x12` | channel id                                | `Channel`                  |
//! | `0x17` | scope id                                  | `ScopeRecord`              |
//! | `0x19` | scope id, seq                             | `OutboxEntry`              |
//! | `0x1a` | scope id, seq                             | `OutboxEntry` (dead letter)|
//! | `0x1b` | scope id                                  | `DeliveryRecord`           |
//! | `0x20` | job id                                    | `ImportJob`                |
//! | `0x21` | channel id, event id bytes                | `AcceptedEvent`            |
//! | `0x22` | link code bytes                           | `LinkCode`                 |
//! | `0x30` | org id, seq                               | journal record (members)   |
//! | `0x31` | org id                                    | `SnapshotManifest`         |
//! | `0x32` | org id, generation, chunk number          | snapshot chunk (members)   |
//! | `0x33` | scope id, first seq, last seq             | event block                |
//!
//! Members have no key of their own: they live in their org's snapshot and journal
//! ([`crate::journal`]), and every lookup of them (by id, by external id, by username, per org)
//! is built in memory by the scope. Schema version 1 kept members one key each (`0x13` to
//! `0x16`) and events one key each (`0x18`); `store/migrate.rs` rewrites such a store when it opens.
//!
//! Ids and seqs are 8-byte big-endian. Channel id 0 stands for "no channel" (ids start at 1).
//! External ids and usernames are the last component, so their variable length is unambiguous.

use crate::error::{Result, StoreError};
use crate::records::{Id, IdKind};

/// Prefix of store metadata (the schema version).
pub const META: u8 = 0x00;
/// Prefix of the id counters, one per [`IdKind`].
pub const COUNTER: u8 = 0x01;
/// Prefix of accounts by id.
pub const ACCOUNT: u8 = 0x10;
/// Prefix of orgs by id.
pub const ORG: u8 = 0x11;
/// Prefix of channels by id.
pub const CHANNEL: u8 = 0x12;
/// Prefix of members by id (schema version 1 only).
pub const MEMBER: u8 = 0x13;
/// Prefix of the org-members index of schema version 1 (org id, member id → profile id and
/// linking values).
pub const V1_ORG_MEMBERS: u8 = 0x16;
/// Prefixes of the member indexes of schema version 1 (by external id, username, per org).
pub const V1_MEMBER_INDEXES: [u8; 3] = [0x14, 0x15, V1_ORG_MEMBERS];
/// Prefix of scopes by id.
pub const SCOPE: u8 = 0x17;
/// Prefix of events by scope and seq (schema version 1 only).
pub const EVENT: u8 = 0x18;
/// Prefix of outbox entries by scope and seq.
pub const OUTBOX: u8 = 0x19;
/// Prefix of dead-lettered outbox entries by scope and seq.
pub const DEAD: u8 = 0x1a;
/// Prefix of the CDH delivery state by scope.
pub const DELIVERY: u8 = 0x1b;
/// Prefix of bulk import jobs by id (`0x20`, apart from the `0x1_` member and scope records).
pub const IMPORT_JOB: u8 = 0x20;
/// Prefix of the webhook events accepted per channel (deduplication and pending provisioning).
pub const ACCEPTED_EVENT: u8 = 0x21;
/// Prefix of link codes by code.
pub const LINK_CODE: u8 = 0x22;
/// Prefix of the member journal records by org and seq.
pub const JOURNAL: u8 = 0x30;
/// Prefix of the snapshot manifests by org.
pub const SNAPSHOT: u8 = 0x31;
/// Prefix of the snapshot chunks by org, generation and chunk number.
pub const SNAPSHOT_CHUNK: u8 = 0x32;
/// Prefix of the event blocks by scope, first seq and last seq.
pub const EVENT_BLOCK: u8 = 0x33;

/// Key of the schema version.
pub const SCHEMA_VERSION_KEY: &[u8] = b"\x00schema_version";

/// Every id kind, in the order their counters are reconciled at open.
pub(crate) const ID_KINDS: [IdKind; 7] = [
    IdKind::Account,
    IdKind::Org,
    IdKind::Channel,
    IdKind::Member,
    IdKind::Scope,
    IdKind::UnifyKey,
    IdKind::Job,
];

/// Returns the key of the counter of `kind`. The byte of each kind is fixed forever: changing it
/// would make ids restart.
pub fn counter(kind: IdKind) -> [u8; 2] {
    let byte = match kind {
        IdKind::Account => 1,
        IdKind::Org => 2,
        IdKind::Channel => 3,
        IdKind::Member => 4,
        IdKind::Scope => 5,
        IdKind::UnifyKey => 6,
        IdKind::Job => 7,
    };
    [COUNTER, byte]
}

/// Returns `prefix` followed by `id` in big-endian: the key of a record stored by id, or the
/// prefix of everything stored under a scope or org.
pub fn id_key(prefix: u8, id: Id) -> [u8; 9] {
    let mut key = [0; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

/// Returns `prefix` followed by two big-endian numbers: `(scope, seq)` or `(org, member)`.
pub fn pair_key(prefix: u8, first: u64, second: u64) -> [u8; 17] {
    let mut key = [0; 17];
    key[0] = prefix;
    key[1..9].copy_from_slice(&first.to_be_bytes());
    key[9..].copy_from_slice(&second.to_be_bytes());
    key
}

/// Returns the key of an account.
pub fn account(id: Id) -> [u8; 9] {
    id_key(ACCOUNT, id)
}

/// Returns the key of an org.
pub fn org(id: Id) -> [u8; 9] {
    id_key(ORG, id)
}

/// Returns the key of a channel.
pub fn channel(id: Id) -> [u8; 9] {
    id_key(CHANNEL, id)
}

/// Returns the key of a scope.
pub fn scope(id: Id) -> [u8; 9] {
    id_key(SCOPE, id)
}

/// Returns the key of an import job.
pub fn import_job(id: Id) -> [u8; 9] {
    id_key(IMPORT_JOB, id)
}

/// Returns the key of an accepted webhook event of a channel.
pub fn accepted_event(channel_id: Id, event_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + event_id.len());
    key.extend_from_slice(&id_key(ACCEPTED_EVENT, channel_id));
    key.extend_from_slice(event_id.as_bytes());
    key
}

/// Returns the key of a link code.
pub fn link_code(code: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + code.len());
    key.push(LINK_CODE);
    key.extend_from_slice(code.as_bytes());
    key
}

/// Returns the key of an event (schema version 1 only).
pub fn event(scope_id: Id, seq: u64) -> [u8; 17] {
    pair_key(EVENT, scope_id, seq)
}

/// Returns the key of an outbox entry.
pub fn outbox(scope_id: Id, seq: u64) -> [u8; 17] {
    pair_key(OUTBOX, scope_id, seq)
}

/// Returns the key of a dead-lettered outbox entry.
pub fn dead(scope_id: Id, seq: u64) -> [u8; 17] {
    pair_key(DEAD, scope_id, seq)
}

/// Returns the key of an org's journal record `seq`.
pub fn journal(org_id: Id, seq: u64) -> [u8; 17] {
    pair_key(JOURNAL, org_id, seq)
}

/// Returns the key of an org's snapshot manifest.
pub fn snapshot(org_id: Id) -> [u8; 9] {
    id_key(SNAPSHOT, org_id)
}

/// Returns the key of chunk `chunk` of generation `generation` of an org's snapshot.
pub fn snapshot_chunk(org_id: Id, generation: u64, chunk: u32) -> [u8; 21] {
    let mut key = [0; 21];
    key[..17].copy_from_slice(&pair_key(SNAPSHOT_CHUNK, org_id, generation));
    key[17..].copy_from_slice(&chunk.to_be_bytes());
    key
}

/// Returns the key of the event block holding seqs `first..=last` of a scope.
pub fn event_block(scope_id: Id, first: u64, last: u64) -> [u8; 25] {
    let mut key = [0; 25];
    key[..17].copy_from_slice(&pair_key(EVENT_BLOCK, scope_id, first));
    key[17..].copy_from_slice(&last.to_be_bytes());
    key
}

/// Returns the key of a scope's CDH delivery state.
pub fn delivery(scope_id: Id) -> [u8; 9] {
    id_key(DELIVERY, scope_id)
}

/// Returns the big-endian u64 at byte `at` of `bytes`, or `Corrupt` when it is too short.
pub(crate) fn read_u64(bytes: &[u8], at: usize) -> Result<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("key or value too short: {bytes:?}")))
}

/// Returns the u64 that makes up the whole of `value` (an index value or a counter), or
/// `Corrupt` when it is not exactly 8 bytes.
pub(crate) fn u64_value(value: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(value)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt(format!("expected an 8-byte number, got {value:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_endian_keys_sort_numerically() {
        let seqs = [0u64, 1, 255, 256, 65_535, 65_536, u64::MAX];
        for pair in seqs.windows(2) {
            assert!(event(3, pair[0]) < event(3, pair[1]));
            assert!(journal(3, pair[0]) < journal(3, pair[1]));
            assert!(event_block(3, pair[0], u64::MAX) < event_block(3, pair[1], 0));
        }
        assert!(event(1, u64::MAX) < event(2, 0));
        assert!(snapshot_chunk(1, 2, u32::MAX) < snapshot_chunk(1, 3, 0));
    }

    #[test]
    fn counter_keys_are_distinct() {
        let keys: std::collections::HashSet<_> = ID_KINDS.iter().map(|k| counter(*k)).collect();
        assert_eq!(keys.len(), ID_KINDS.len());
    }
}
