//! Migration of a schema-version-1 store, run once by [`Store::open`].
//!
//! Version 1 kept every member under keys of its own (the record, a by-external-id entry, an
//! org-members entry holding its profile id and linking values, a username entry) and every
//! event under a key of its own. Version 2 keeps members in per-org snapshots and journals and
//! events in blocks. The migration writes each org's members as its first snapshot and each
//! scope's events as blocks, then removes the version-1 keys and writes the new version in one
//! atomic batch: interrupted anywhere, the store still reads as version 1 and the migration
//! runs again.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{SCHEMA_VERSION, Store, WriteBatch};
use crate::codec;
use crate::error::Result;
use crate::journal::MemberLog;
use crate::keys;
use crate::records::{EventRecord, Id, Member, MemberLinks};
use crate::stored_member::StoredMember;

/// Events per block written by the migration.
const BLOCK_EVENTS: usize = 1000;

/// The value of a version-1 org-members entry (empty in the oldest stores).
#[derive(Deserialize)]
struct OrgMemberValue {
    #[allow(dead_code)]
    profile_id: Id,
    links: Option<MemberLinks>,
}

/// Rewrites a version-1 store as version 2.
pub(super) fn from_v1(store: &Store) -> Result<()> {
    let started = std::time::Instant::now();
    let db = &store.db;
    let mut removals = sled::Batch::default();
    // Members, by org, with the linking values their org-members entry held. Values written
    // under another normalizer (or none) are recomputed by the scope when it loads.
    let mut by_org: BTreeMap<Id, Vec<StoredMember>> = BTreeMap::new();
    let mut members = 0u64;
    for item in db.scan_prefix([keys::MEMBER]) {
        let (key, value) = item?;
        let member: Member = codec::decode(&value)?;
        let entry_key = keys::pair_key(keys::V1_ORG_MEMBERS, member.org_id, member.id);
        let links = match db.get(entry_key)? {
            Some(bytes) if !bytes.is_empty() => codec::decode::<OrgMemberValue>(&bytes)?.links,
            _ => None,
        };
        let links = links.unwrap_or(MemberLinks {
            normalizer: 0,
            values: Vec::new(),
        });
        by_org
            .entry(member.org_id)
            .or_default()
            .push(StoredMember::new(&member, &links));
        removals.remove(key);
        members += 1;
    }
    // Every org gets a snapshot, an empty one included; members of an org whose record is
    // missing keep theirs too, so that the migration drops nothing `unify verify` could report.
    for org in store.list_orgs()? {
        by_org.entry(org.id).or_default();
    }
    for (org_id, members) in by_org {
        store.write_snapshot(org_id, 0, &mut members.into_iter())?;
    }
    for prefix in keys::V1_MEMBER_INDEXES {
        for item in db.scan_prefix([prefix]) {
            removals.remove(item?.0);
        }
    }
    // Events, in blocks per scope.
    let mut blocks = WriteBatch::new();
    let mut block: Vec<EventRecord> = Vec::new();
    let mut events = 0u64;
    for item in db.scan_prefix([keys::EVENT]) {
        let (key, value) = item?;
        let event: EventRecord = codec::decode(&value)?;
        let next_seq = block.last().map(|e| (e.scope_id, e.seq + 1));
        if next_seq.is_some_and(|n| n != (event.scope_id, event.seq)) || block.len() == BLOCK_EVENTS
        {
            blocks.put_event_block(block[0].scope_id, &block);
            block.clear();
        }
        block.push(event);
        removals.remove(key);
        events += 1;
    }
    if let Some(first) = block.first() {
        blocks.put_event_block(first.scope_id, &block);
    }
    store.apply(blocks)?;
    removals.insert(keys::SCHEMA_VERSION_KEY, &SCHEMA_VERSION.to_be_bytes());
    db.apply_batch(removals)?;
    db.flush()?;
    tracing::info!(
        members,
        events,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "migrated the store from schema version 1 to {SCHEMA_VERSION}"
    );
    Ok(())
}
