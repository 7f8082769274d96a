//! The sled implementation of [`MemberLog`]: per org, a manifest, chunked snapshots and a
//! journal of framed member writes (see [`crate::journal`] and the key table of [`keys`]).

use std::sync::atomic::{AtomicBool, Ordering};

use super::{Store, WriteBatch};
use crate::codec;
use crate::error::{Result, StoreError};
use crate::journal::{self, MemberLog, MemberWrite, OrgLog, SnapshotManifest};
use crate::keys;
use crate::records::Id;
use crate::stored_member::StoredMember;

/// Bytes of members per snapshot chunk: large values are what sled writes fastest.
const CHUNK_BYTES: usize = 4 << 20;

impl Store {
    /// Returns the manifest of org `org_id`'s snapshot, `None` before its first snapshot.
    pub fn snapshot_manifest(&self, org_id: Id) -> Result<Option<SnapshotManifest>> {
        self.db
            .get(keys::snapshot(org_id))?
            .map(|bytes| codec::decode(&bytes))
            .transpose()
    }

    /// Returns the orgs that have a snapshot or journal records, ascending: `unify verify`
    /// checks these too, also when their org record is missing.
    pub fn logged_orgs(&self) -> Result<Vec<Id>> {
        let mut orgs = self.leading_ids(keys::SNAPSHOT)?;
        orgs.extend(self.leading_ids(keys::JOURNAL)?);
        orgs.sort_unstable();
        orgs.dedup();
        Ok(orgs)
    }

    /// Returns the seqs of org `org_id`'s journal records, ascending (for tests and diagnostics).
    pub fn journal_seqs(&self, org_id: Id) -> Result<Vec<u64>> {
        self.db
            .scan_prefix(keys::id_key(keys::JOURNAL, org_id))
            .map(|item| keys::read_u64(&item?.0, 9))
            .collect()
    }
}

/// Returns `(generation, chunk)` of a snapshot chunk key.
fn chunk_key(key: &[u8]) -> Result<(u64, u32)> {
    let generation = keys::read_u64(key, 9)?;
    let chunk = key
        .get(17..21)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("snapshot chunk key {key:?}")))?;
    Ok((generation, chunk))
}

impl MemberLog for Store {
    fn read_org(&self, org_id: Id) -> Result<OrgLog> {
        // A snapshot installed between reading its manifest and its chunks (or the journal it
        // prunes) would leave this read torn, so reads wait for a snapshot being written.
        let _reading = self.snapshot_lock();
        let manifest = self.snapshot_manifest(org_id)?;
        let mut log = OrgLog {
            manifest,
            ..OrgLog::default()
        };
        // One pass over the org's chunks reads the manifest's, in order, and finds the rest:
        // leftovers of a snapshot whose writing a crash interrupted (no snapshot of this
        // process is being written meanwhile: the lock above), removed below.
        let lacks = |m: SnapshotManifest, chunk: u32| {
            StoreError::Corrupt(format!(
                "org {org_id}: snapshot {} lacks chunk {chunk}",
                m.generation
            ))
        };
        let mut stale = sled::Batch::default();
        let mut stale_chunks = 0;
        let mut next = 0;
        if let Some(m) = manifest {
            log.snapshot.reserve(m.members as usize);
        }
        for item in self
            .db
            .scan_prefix(keys::id_key(keys::SNAPSHOT_CHUNK, org_id))
        {
            let (key, bytes) = item?;
            let (generation, chunk) = chunk_key(&key)?;
            let Some(m) = manifest.filter(|m| m.generation == generation && chunk < m.chunks)
            else {
                stale.remove(key);
                stale_chunks += 1;
                continue;
            };
            if chunk != next {
                return Err(lacks(m, next));
            }
            next += 1;
            for write in journal::unframe(&bytes)? {
                match write {
                    MemberWrite::Put(stored) => log.snapshot.push(stored),
                    MemberWrite::Delete(id) => {
                        return Err(StoreError::Corrupt(format!(
                            "org {org_id}: snapshot chunk {chunk} deletes member {id}"
                        )));
                    }
                }
            }
        }
        if let Some(m) = manifest {
            if next < m.chunks {
                return Err(lacks(m, next));
            }
            if log.snapshot.len() as u64 != m.members {
                return Err(StoreError::Corrupt(format!(
                    "org {org_id}: snapshot holds {} members, its manifest says {}",
                    log.snapshot.len(),
                    m.members
                )));
            }
        }
        let upto = manifest.map_or(0, |m| m.upto);
        let from = keys::journal(org_id, upto.saturating_add(1));
        let to = keys::journal(org_id, u64::MAX);
        for (expected, item) in (upto + 1..).zip(self.db.range(from..=to)) {
            let (key, value) = item?;
            let seq = keys::read_u64(&key, 9)?;
            if seq != expected {
                return Err(StoreError::Corrupt(format!(
                    "org {org_id}: journal record {expected} is missing (found {seq})"
                )));
            }
            let (writes, size) = journal::unframe_sized(&value)?;
            log.journal_bytes += size as u64;
            log.journal.push((seq, writes));
        }
        if stale_chunks > 0 {
            tracing::info!(
                org_id,
                chunks = stale_chunks,
                "removing leftover snapshot chunks"
            );
            self.db.apply_batch(stale)?;
        }
        Ok(log)
    }

    fn write_snapshot_unless(
        &self,
        org_id: Id,
        upto: u64,
        members: &mut dyn Iterator<Item = StoredMember>,
        cancel: &AtomicBool,
    ) -> Result<Option<SnapshotManifest>> {
        let _writing = self.snapshot_lock();
        let previous = self.snapshot_manifest(org_id)?;
        let generation = previous.map_or(1, |m| m.generation + 1);
        let mut manifest = SnapshotManifest {
            generation,
            upto,
            chunks: 0,
            members: 0,
            bytes: 0,
        };
        // Chunks first, under a generation nothing names yet: a crash leaves leftovers only.
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        let mut members = members.peekable();
        while members.peek().is_some() || !chunk.is_empty() {
            if let Some(stored) = members.next() {
                chunk_bytes += stored.as_bytes().len();
                chunk.push(stored);
                if chunk_bytes < CHUNK_BYTES && members.peek().is_some() {
                    continue;
                }
            }
            if cancel.load(Ordering::Acquire) {
                return Ok(None);
            }
            let (framed, size) = journal::frame_members(&chunk);
            manifest.members += chunk.len() as u64;
            manifest.bytes += size as u64;
            self.db.insert(
                keys::snapshot_chunk(org_id, generation, manifest.chunks),
                framed,
            )?;
            manifest.chunks += 1;
            chunk.clear();
            chunk_bytes = 0;
        }
        self.db.flush()?;
        if cancel.load(Ordering::Acquire) {
            return Ok(None);
        }
        // Then the manifest, with the removal of what it replaces, in one atomic write.
        let mut batch = sled::Batch::default();
        batch.insert(&keys::snapshot(org_id), codec::encode(&manifest));
        if let Some(old) = previous {
            for chunk in 0..old.chunks {
                batch.remove(&keys::snapshot_chunk(org_id, old.generation, chunk));
            }
        }
        let first = previous.map_or(0, |m| m.upto) + 1;
        for seq in first..=upto {
            batch.remove(&keys::journal(org_id, seq));
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(Some(manifest))
    }
}

impl WriteBatch {
    /// Appends journal record `seq` of org `org_id`: the batch's writes of that org's members,
    /// in order. Returns its size unpacked (what replaying it reads).
    pub fn append_journal(&mut self, org_id: Id, seq: u64, writes: &[MemberWrite]) -> usize {
        let (framed, len) = journal::frame(writes);
        self.insert(&keys::journal(org_id, seq), &framed);
        len
    }
}
