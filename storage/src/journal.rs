//! The durable form of members: per org, a snapshot (chunked) plus a journal of the
//! group-commit batches written since.
//!
//! A scope actor appends one journal record per org it wrote in a batch
//! ([`crate::WriteBatch::append_journal`]), in the same atomic write as the batch's events,
//! scope record and outbox entries, and writes a new snapshot in the background now and then
//! ([`MemberLog::write_snapshot`]), after which the journal behind it is pruned. Loading an org
//! ([`MemberLog::read_org`]) reads the snapshot and replays the journal after it. Nothing
//! derived (profile ids, indexes, member order) is stored: the scope rebuilds it in memory.
//!
//! Members are kept per org rather than per scope because the org is what moves between
//! scopes (integrate and disconnect): a scope loads the logs of its orgs.
//!
//! Journal records and snapshot chunks share one framing: the format-version byte, a u32
//! count, then per entry a tag byte (1 put, 0 delete), the member id (u64 LE) and, for a put,
//! the length (u32 LE) and bytes of the [`StoredMember`]. They are written packed: the
//! packed-version byte, then everything after the format-version byte LZ4-compressed (see
//! [`codec::pack`]). sled keeps every page it wrote in memory (its cache evicts only pages
//! accessed often enough to fill an access queue, which a few large records never do), so a
//! journal of a million members costs its size in memory until a snapshot replaces it: packed,
//! about a third. Unpacked records (written by earlier builds) still read.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::codec::{self, FORMAT_VERSION, PACKED_VERSION};
use crate::error::{Result, StoreError};
use crate::records::Id;
use crate::stored_member::StoredMember;

/// One member write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberWrite {
    /// The member as it now is (created or changed).
    Put(StoredMember),
    /// The member was deleted.
    Delete(Id),
}

impl MemberWrite {
    /// Returns the member id the write is about.
    pub fn member_id(&self) -> Result<Id> {
        match self {
            MemberWrite::Put(stored) => Ok(stored.identity()?.0),
            MemberWrite::Delete(id) => Ok(*id),
        }
    }
}

/// Where an org's snapshot stands: the generation of its chunks and the last journal record
/// it includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// Generation of the chunks (chunks of other generations are leftovers).
    pub generation: u64,
    /// Seq of the last journal record the snapshot includes (0: none).
    pub upto: u64,
    /// Number of chunks, numbered from 0.
    pub chunks: u32,
    /// Members in the snapshot.
    pub members: u64,
    /// Size of the snapshot unpacked (what loading it reads), to pace the next one against the
    /// journal written since, counted the same way.
    pub bytes: u64,
}

/// An org's members as the store holds them: the snapshot's, then the journal's writes in
/// order. Replaying `journal` over `snapshot` gives the members.
#[derive(Debug, Default)]
pub struct OrgLog {
    pub manifest: Option<SnapshotManifest>,
    /// The snapshot's members, ascending id.
    pub snapshot: Vec<StoredMember>,
    /// The journal records after the snapshot, in order, each with its seq.
    pub journal: Vec<(u64, Vec<MemberWrite>)>,
    /// Size of those journal records unpacked (what replaying them reads).
    pub journal_bytes: u64,
}

impl OrgLog {
    /// Replays the journal over the snapshot: the org's members, by id.
    pub fn replay(self) -> Result<BTreeMap<Id, StoredMember>> {
        let mut members = BTreeMap::new();
        for stored in self.snapshot {
            members.insert(stored.identity()?.0, stored);
        }
        for (_, writes) in self.journal {
            for write in writes {
                match write {
                    MemberWrite::Put(stored) => {
                        members.insert(stored.identity()?.0, stored);
                    }
                    MemberWrite::Delete(id) => {
                        members.remove(&id);
                    }
                }
            }
        }
        Ok(members)
    }

    /// Returns the seq of the last journal record (the snapshot's when the journal is empty).
    pub fn last_seq(&self) -> u64 {
        self.journal
            .last()
            .map(|(seq, _)| *seq)
            .or(self.manifest.map(|m| m.upto))
            .unwrap_or(0)
    }
}

/// The journal and snapshot operations a scope needs, domain-typed so that another backend (a
/// replicated log on an external database) can stand behind the same calls. [`crate::Store`]
/// implements it on sled.
pub trait MemberLog {
    /// Reads the snapshot and journal of org `org_id`, whole even while a snapshot of the org
    /// is being written.
    fn read_org(&self, org_id: Id) -> Result<OrgLog>;

    /// Writes `members` (ascending id) as org `org_id`'s new snapshot, including the journal up
    /// to seq `upto`, durably; then drops the previous snapshot and the journal it covers.
    /// Runs beside the scope actor, which keeps appending records after `upto`.
    fn write_snapshot(
        &self,
        org_id: Id,
        upto: u64,
        members: &mut dyn Iterator<Item = StoredMember>,
    ) -> Result<SnapshotManifest> {
        let never = AtomicBool::new(false);
        self.write_snapshot_unless(org_id, upto, members, &never)
            .map(|written| written.expect("a snapshot nothing cancels is written"))
    }

    /// [`MemberLog::write_snapshot`] that gives up, returning `None`, once `cancel` is set
    /// before its manifest is installed (a scope stopping does not wait for a whole snapshot:
    /// the journal still holds everything). What it wrote by then is a leftover that the next
    /// read of the org removes.
    fn write_snapshot_unless(
        &self,
        org_id: Id,
        upto: u64,
        members: &mut dyn Iterator<Item = StoredMember>,
        cancel: &AtomicBool,
    ) -> Result<Option<SnapshotManifest>>;
}

/// Returns the framed form of `writes` (a journal record), packed, with the size of its
/// unpacked form (what replaying it costs).
pub(crate) fn frame(writes: &[MemberWrite]) -> (Vec<u8>, usize) {
    let plain = frame_plain(writes);
    let len = plain.len();
    (pack_unless_larger(plain, codec::MAX_DECODE_BYTES), len)
}

/// Packs a framed record, unless it is larger than `limit`: reading a packed record back
/// refuses a claimed size above the decode limit (so that a corrupt size allocates nothing
/// large), and a record that large stays unpacked (it reads as records of earlier builds do).
fn pack_unless_larger(plain: Vec<u8>, limit: usize) -> Vec<u8> {
    if plain.len() > limit {
        return plain;
    }
    codec::pack(&plain)
}

fn frame_plain(writes: &[MemberWrite]) -> Vec<u8> {
    let mut out = framed(
        writes.len(),
        writes.iter().map(MemberWrite::framed_len).sum(),
    );
    for write in writes {
        match write {
            MemberWrite::Put(stored) => push_put(&mut out, stored),
            MemberWrite::Delete(id) => {
                out.push(0);
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
    }
    out
}

/// Returns the framed form of the members of one snapshot chunk (puts only), packed as
/// [`frame`] packs, with the size of its unpacked form.
pub(crate) fn frame_members(members: &[StoredMember]) -> (Vec<u8>, usize) {
    let mut out = framed(members.len(), members.iter().map(put_len).sum());
    for stored in members {
        push_put(&mut out, stored);
    }
    let len = out.len();
    (pack_unless_larger(out, codec::MAX_DECODE_BYTES), len)
}

/// Returns a buffer holding the version byte and the count, with room for `size` more bytes.
fn framed(count: usize, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + size);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    out
}

fn put_len(stored: &StoredMember) -> usize {
    13 + stored.as_bytes().len()
}

impl MemberWrite {
    fn framed_len(&self) -> usize {
        match self {
            MemberWrite::Put(stored) => put_len(stored),
            MemberWrite::Delete(_) => 9,
        }
    }
}

/// Appends one put: the tag, the member id (repeated in front so that a reader can skip a
/// member unparsed), the length and the bytes.
fn push_put(out: &mut Vec<u8>, stored: &StoredMember) {
    out.push(1);
    let id = stored.identity().map(|i| i.0).unwrap_or(0);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(stored.as_bytes().len() as u32).to_le_bytes());
    out.extend_from_slice(stored.as_bytes());
}

/// Reads framed writes back; anything malformed is [`StoreError::Codec`].
pub(crate) fn unframe(bytes: &[u8]) -> Result<Vec<MemberWrite>> {
    unframe_sized(bytes).map(|(writes, _)| writes)
}

/// [`unframe`], also returning the size of the record unpacked (as [`frame`] does).
pub(crate) fn unframe_sized(bytes: &[u8]) -> Result<(Vec<MemberWrite>, usize)> {
    let Some((&version, rest)) = bytes.split_first() else {
        return Err(StoreError::Codec("malformed journal record: empty".into()));
    };
    match version {
        FORMAT_VERSION => Ok((unframe_body(rest)?, bytes.len())),
        PACKED_VERSION => {
            let body = codec::unpack(rest, "journal record")?;
            Ok((unframe_body(&body)?, 1 + body.len()))
        }
        _ => Err(StoreError::Codec(format!(
            "unknown format version {version} of a journal record (expected {PACKED_VERSION} \
             or {FORMAT_VERSION})"
        ))),
    }
}

/// Reads the entries that follow a record's format-version byte.
fn unframe_body(rest: &[u8]) -> Result<Vec<MemberWrite>> {
    let corrupt = |what: &str| StoreError::Codec(format!("malformed journal record: {what}"));
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        let slice = rest
            .get(at..at.checked_add(n).ok_or_else(|| corrupt("length"))?)
            .ok_or_else(|| corrupt("truncated"))?;
        at += n;
        Ok(slice)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
    // Each entry takes at least 9 bytes: a corrupt count cannot make us allocate much.
    let mut writes = Vec::with_capacity(count.min(rest.len() / 9));
    for _ in 0..count {
        let tag = take(1)?[0];
        let id = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        match tag {
            0 => writes.push(MemberWrite::Delete(id)),
            1 => {
                let len = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
                writes.push(MemberWrite::Put(StoredMember::from_bytes(take(len)?)));
            }
            _ => return Err(corrupt("unknown tag")),
        }
    }
    if at != rest.len() {
        return Err(corrupt("trailing bytes"));
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Member, MemberLinks, Source};

    fn stored(id: Id) -> StoredMember {
        let member = Member::new(id, 1, Source::Maac, None, format!("m{id}"), 0);
        let links = MemberLinks {
            normalizer: 0,
            values: vec![None; 6],
        };
        StoredMember::new(&member, &links)
    }

    #[test]
    fn framing_round_trips_and_refuses_damage() {
        let writes = vec![
            MemberWrite::Put(stored(1)),
            MemberWrite::Delete(7),
            MemberWrite::Put(stored(300)),
        ];
        let (packed, plain_len) = frame(&writes);
        let plain = frame_plain(&writes);
        assert_eq!(plain.len(), plain_len);
        assert_eq!(packed[0], PACKED_VERSION);
        // Packed, and unpacked as earlier builds wrote it.
        for bytes in [packed, plain] {
            assert_eq!(unframe_sized(&bytes).unwrap(), (writes.clone(), plain_len));
            for len in 0..bytes.len() {
                assert!(unframe(&bytes[..len]).is_err(), "len {len}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(unframe(&longer).is_err());
        }
        assert!(unframe(&[9, 0, 0, 0, 0]).is_err());
        // A record over the limit stays unpacked, and reads.
        let over = pack_unless_larger(frame_plain(&writes), plain_len - 1);
        assert_eq!(over[0], FORMAT_VERSION);
        assert_eq!(unframe_sized(&over).unwrap(), (writes.clone(), plain_len));
        let under = pack_unless_larger(frame_plain(&writes), plain_len);
        assert_eq!(under[0], PACKED_VERSION);
        let members = vec![stored(2), stored(3)];
        let (chunk, _) = frame_members(&members);
        let back: Vec<_> = unframe(&chunk).unwrap();
        assert_eq!(
            back,
            members
                .into_iter()
                .map(MemberWrite::Put)
                .collect::<Vec<_>>()
        );
    }
}
