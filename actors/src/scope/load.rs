//! Loading a scope: its record and orgs, each org's snapshot with its journal replayed, and
//! everything derived from the members (linking values, partition, profile ids, lookups).

use std::collections::{HashMap, VecDeque};

use ractor::ActorProcessingErr;
use std::borrow::Cow;

use unify_storage::{
    EventBlockSpan, Id, IdKind, MemberLog, MemberOutline, Org, ScopeRecord, Store, StoreError,
    StoredMember,
};

use super::OrgJournal;
use crate::engine::{ATTRIBUTE_COUNT, Normalizer, Unifier};
use crate::links::{outline_links, scope_keys};
use crate::roster::Roster;
use crate::settings::Settings;

/// A scope as loaded from the store, before its actor state is assembled.
pub(super) struct Loaded {
    pub record: ScopeRecord,
    pub orgs: HashMap<Id, Org>,
    pub roster: Roster,
    pub unifier: Unifier,
    pub journals: HashMap<Id, OrgJournal>,
    pub event_blocks: VecDeque<EventBlockSpan>,
}

/// Loads scope `id`. Members are decoded on all cores; only those whose stored linking values
/// were normalized under another configuration are normalized again.
pub(super) fn load(
    store: &Store,
    settings: &Settings,
    id: Id,
) -> Result<Loaded, ActorProcessingErr> {
    let started = std::time::Instant::now();
    let record = store.get_scope(id)?;
    let keys = scope_keys(&record)?;
    let mut orgs = HashMap::new();
    let mut journals = HashMap::new();
    let mut members = Vec::new();
    for &org_id in &record.org_ids {
        orgs.insert(org_id, store.get_org(org_id)?);
        let log = store.read_org(org_id)?;
        journals.insert(
            org_id,
            OrgJournal {
                seq: log.last_seq(),
                assigned: log.last_seq(),
                since_snapshot: log.journal_bytes,
                snapshot_bytes: log.manifest.map_or(0, |m| m.bytes),
                snapshotting: None,
            },
        );
        members.extend(log.replay()?);
    }
    // Orgs' ids interleave in a scope of two orgs.
    members.sort_unstable_by_key(|(id, _)| *id);
    let read = started.elapsed();
    let decoded = decode_all(&settings.normalizer, &members)?;
    let decode = started.elapsed();
    // The partition and the roster are built side by side on two cores; the roster starts
    // with every member in a profile of its own and then takes the partition's profile ids.
    let (unifier, mut roster) = std::thread::scope(|threads| {
        let unifying = threads.spawn(|| {
            let values = decoded.iter().map(|d| {
                let values: [Option<&str>; ATTRIBUTE_COUNT] =
                    std::array::from_fn(|i| d.values[i].as_deref());
                (d.outline.id, values)
            });
            Unifier::from_values(keys, settings.limits, values)
        });
        let mut roster = Roster::with_capacity(decoded.len());
        for d in &decoded {
            roster.put(d.stored.clone(), d.outline.username, d.outline.id);
        }
        let unifier = unifying.join().expect("the partition thread panicked");
        (unifier, roster)
    });
    drop(decoded);
    for (id, profile_id) in unifier.partition() {
        if profile_id != id {
            roster.set_profile(id, profile_id);
        }
    }
    let built = started.elapsed();
    store.raise_counter(IdKind::Member, roster.max_id())?;
    let event_blocks = store.event_blocks(id)?;
    tracing::debug!(
        scope_id = id,
        members = unifier.len(),
        read_ms = read.as_millis() as u64,
        decode_ms = decode.as_millis() as u64,
        built_ms = built.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "scope loaded"
    );
    Ok(Loaded {
        record,
        orgs,
        roster,
        unifier,
        journals,
        event_blocks,
    })
}

/// One member as a load reads it, borrowed from its stored bytes.
struct Decoded<'a> {
    outline: MemberOutline<'a>,
    values: [Option<Cow<'a, str>>; ATTRIBUTE_COUNT],
    stored: &'a StoredMember,
}

/// Reads every member (ascending id) and its linking values, in parts on all cores.
fn decode_all<'a>(
    normalizer: &Normalizer,
    members: &'a [(Id, StoredMember)],
) -> Result<Vec<Decoded<'a>>, StoreError> {
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get());
    let size = members.len().div_ceil(parts).max(1);
    std::thread::scope(|threads| {
        let parts: Vec<_> = members
            .chunks(size)
            .map(|part| {
                threads.spawn(move || {
                    part.iter()
                        .map(|(_, stored)| decode(normalizer, stored))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut decoded = Vec::with_capacity(members.len());
        for part in parts {
            decoded.extend(part.join().expect("a load thread panicked")?);
        }
        Ok(decoded)
    })
}

fn decode<'a>(
    normalizer: &Normalizer,
    stored: &'a StoredMember,
) -> Result<Decoded<'a>, StoreError> {
    let outline = stored.outline()?;
    let values = outline_links(normalizer, &outline, stored)?;
    Ok(Decoded {
        outline,
        values,
        stored,
    })
}
