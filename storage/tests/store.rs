//! Behaviour of the store on a real sled database in a temporary directory.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use unify_storage::{
    Account, Channel, ContactApi, EventBlockSpan, EventRecord, IdKind, JobKind, Member,
    MemberLinks, MemberLog, MemberWrite, Org, OutboxEntry, PendingJob, SCHEMA_VERSION, ScopeRecord,
    Source, Store, StoreError, StoredMember, UnifyKeyRecord, WriteBatch, keys,
};

fn account(id: u64) -> Account {
    Account {
        id,
        name: format!("account {id}"),
        uuid: format!("uuid-a-{id}"),
        created_at: 1_700_000_000_000 + id as i64,
    }
}

fn org(id: u64, account_id: u64, source: Source) -> Org {
    Org {
        id,
        account_id,
        source,
        name: format!("org {id}"),
        uuid: format!("uuid-o-{id}"),
        scope_id: id,
        created_at: 5,
    }
}

fn channel(id: u64, org_id: u64) -> Channel {
    Channel {
        id,
        org_id,
        name: format!("channel {id}"),
        channel_type: "line".into(),
        tenant_key: Some("tenant".into()),
        auto_provision: true,
        contact_api: Some(ContactApi {
            url: "https://contacts.example.com".into(),
            token: "secret-token".into(),
        }),
        webhook_secret: "whsec".into(),
        created_at: 6,
        updated_at: 7,
    }
}

fn member(id: u64, org_id: u64, channel_id: Option<u64>, ext: &str) -> Member {
    Member {
        id,
        org_id,
        source: if channel_id.is_some() {
            Source::Caac
        } else {
            Source::Maac
        },
        channel_id,
        external_member_id: ext.into(),
        original_name: Some(format!("name {id}")),
        display_name: None,
        username: None,
        display_email: Some(format!("m{id}@example.com")),
        display_mobile: Some("+886912345678".into()),
        custom_id: None,
        line_id: None,
        connect_id: Some("c".into()),
        manual_unification: id.is_multiple_of(2),
        profile_id: id,
        last_message_at: Some(9),
        created_at: 10,
        updated_at: 11,
    }
}

fn scope(id: u64, key_ids: &[u64]) -> ScopeRecord {
    ScopeRecord {
        id,
        org_ids: vec![id, id + 1],
        keys: key_ids
            .iter()
            .enumerate()
            .map(|(i, key_id)| UnifyKeyRecord {
                id: *key_id,
                attribute: "display_email".into(),
                is_distinct: i == 0,
            })
            .collect(),
        last_seq: 3,
        pending_job: Some(PendingJob {
            kind: JobKind::KeysChanged,
            scheduled_at: 12,
        }),
        created_at: 13,
        updated_at: 14,
    }
}

fn event(scope_id: u64, seq: u64) -> EventRecord {
    EventRecord {
        scope_id,
        seq,
        payload: format!(r#"{{"seq":{seq}}}"#),
    }
}

fn entry(scope_id: u64, seq: u64) -> OutboxEntry {
    OutboxEntry {
        scope_id,
        seq,
        payload: format!(r#"{{"seq":{seq}}}"#),
        attempts: 2,
        last_error: Some("503".into()),
    }
}

fn apply(store: &Store, fill: impl FnOnce(&mut WriteBatch)) {
    let mut batch = WriteBatch::new();
    fill(&mut batch);
    store.apply(batch).unwrap();
}

/// Returns a store reopened from disk after flushing and dropping `store`.
fn reopen(store: Store, path: &Path) -> Store {
    store.flush().unwrap();
    drop(store);
    Store::open(path).unwrap()
}

fn links(id: u64) -> MemberLinks {
    MemberLinks {
        normalizer: 7,
        values: vec![Some(format!("m{id}@example.com")), None],
    }
}

fn stored(member: &Member) -> StoredMember {
    StoredMember::new(member, &links(member.id))
}

fn put(member: &Member) -> MemberWrite {
    MemberWrite::Put(stored(member))
}

/// Appends journal record `seq` of `org_id` holding `writes`, in a batch of its own.
fn journal(store: &Store, org_id: u64, seq: u64, writes: &[MemberWrite]) {
    apply(store, |b| {
        b.append_journal(org_id, seq, writes);
    });
}

/// Returns the members of `org_id` after replaying its snapshot and journal, ascending id.
fn members_of(store: &Store, org_id: u64) -> Vec<Member> {
    store
        .read_org(org_id)
        .unwrap()
        .replay()
        .unwrap()
        .values()
        .map(|s| s.member().unwrap())
        .collect()
}

/// Opens the raw sled database at `path` (no `Store` may have it open), polling for the file
/// lock that sled releases shortly after a dropped `Store`.
fn open_raw(path: &Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match unify_storage::store::sled_config(path).open() {
            Ok(db) => return db,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(err) => panic!("cannot open {path:?}: {err}"),
        }
    }
}

/// Writes raw bytes into the sled database at `path` while no `Store` has it open.
fn write_raw(path: &Path, key: &[u8], value: &[u8]) {
    let db = open_raw(path);
    db.insert(key, value).unwrap();
    db.flush().unwrap();
}

/// Returns `(generation, chunk)` of every snapshot chunk of `org_id` in the closed `store`.
fn chunk_keys(store: Store, path: &Path, org_id: u64) -> Vec<(u64, u32)> {
    store.flush().unwrap();
    drop(store);
    let db = open_raw(path);
    db.scan_prefix(keys::id_key(keys::SNAPSHOT_CHUNK, org_id))
        .map(|item| {
            let key = item.unwrap().0;
            (
                u64::from_be_bytes(key[9..17].try_into().unwrap()),
                u32::from_be_bytes(key[17..21].try_into().unwrap()),
            )
        })
        .collect()
}

#[test]
fn every_record_kind_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut with_username = member(5, 2, Some(3), "U5");
    with_username.username = Some("ann".into());
    apply(&store, |b| {
        b.put_account(&account(1))
            .put_org(&org(2, 1, Source::Caac))
            .put_channel(&channel(3, 2))
            .put_scope(&scope(4, &[8, 9]))
            .put_event_block(4, &[event(4, 1)])
            .put_outbox(&entry(4, 1))
            .put_dead(&entry(4, 0))
            .append_journal(2, 1, &[put(&with_username)]);
    });
    let store = reopen(store, dir.path());

    assert_eq!(store.get_account(1).unwrap(), account(1));
    assert_eq!(store.get_org(2).unwrap(), org(2, 1, Source::Caac));
    assert_eq!(store.get_channel(3).unwrap(), channel(3, 2));
    assert_eq!(store.get_scope(4).unwrap(), scope(4, &[8, 9]));
    assert_eq!(store.events_after(4, 0, 10).unwrap(), vec![event(4, 1)]);
    assert_eq!(store.outbox_head(4, 10).unwrap(), vec![entry(4, 1)]);
    assert_eq!(store.dead_entries(4).unwrap(), vec![entry(4, 0)]);
    let log = store.read_org(2).unwrap();
    assert_eq!(log.last_seq(), 1);
    let (back, back_links) = log.journal[0].1[0]
        .clone()
        .member_stored()
        .decode()
        .unwrap();
    assert_eq!(back, with_username);
    assert_eq!(back_links, links(5));

    assert_eq!(store.list_accounts().unwrap(), vec![account(1)]);
    assert!(store.has_accounts().unwrap());
    assert_eq!(store.list_orgs().unwrap(), vec![org(2, 1, Source::Caac)]);
    assert_eq!(
        store.orgs_of_account(1).unwrap(),
        vec![org(2, 1, Source::Caac)]
    );
    assert!(store.orgs_of_account(99).unwrap().is_empty());
    assert_eq!(store.channels_of_org(2).unwrap(), vec![channel(3, 2)]);
    assert!(store.channels_of_org(99).unwrap().is_empty());
    assert_eq!(store.list_scopes().unwrap(), vec![scope(4, &[8, 9])]);
}

/// Returns the member a put carries.
trait PutMember {
    fn member_stored(self) -> StoredMember;
}

impl PutMember for MemberWrite {
    fn member_stored(self) -> StoredMember {
        match self {
            MemberWrite::Put(stored) => stored,
            MemberWrite::Delete(id) => panic!("expected a put, got a delete of {id}"),
        }
    }
}

#[test]
fn fresh_store_is_empty_and_gets_the_current_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(!store.has_accounts().unwrap());
    assert!(store.outbox_scopes().unwrap().is_empty());
    assert_eq!(store.oldest_event_seq(1).unwrap(), None);
    assert_eq!(store.last_event_seq(1).unwrap(), None);
    assert!(store.event_blocks(1).unwrap().is_empty());
    let log = store.read_org(1).unwrap();
    assert!(log.manifest.is_none() && log.snapshot.is_empty() && log.journal.is_empty());
    assert_eq!(log.last_seq(), 0);
    assert_eq!(store.snapshot_manifest(1).unwrap(), None);
    assert!(store.journal_seqs(1).unwrap().is_empty());
    drop(store);

    let db = open_raw(dir.path());
    let version = db
        .get(keys::SCHEMA_VERSION_KEY)
        .unwrap()
        .expect("version written");
    assert_eq!(version.as_ref(), &2u32.to_be_bytes());
    assert_eq!(SCHEMA_VERSION, 2);
}

#[test]
fn a_large_batch_is_applied_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let writes: Vec<MemberWrite> = (1..=2_000)
        .map(|id| put(&member(id, 1, None, &format!("ext-{id}"))))
        .collect();
    let mut batch = WriteBatch::new();
    assert!(batch.is_empty());
    let bytes = batch.append_journal(1, 1, &writes);
    assert!(bytes > 2_000 * 13, "{bytes}");
    batch.put_event_block(1, &[event(1, 1), event(1, 2)]);
    assert_eq!(batch.len(), 2);

    // Nothing of the batch is visible before it is applied.
    assert!(store.read_org(1).unwrap().journal.is_empty());
    assert_eq!(store.last_event_seq(1).unwrap(), None);
    store.apply(batch).unwrap();
    assert_eq!(members_of(&store, 1).len(), 2_000);

    let store = reopen(store, dir.path());
    let log = store.read_org(1).unwrap();
    assert_eq!(log.journal_bytes, bytes as u64);
    let members = members_of(&store, 1);
    assert_eq!(members.len(), 2_000);
    assert!(members.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(members[1_999], member(2_000, 1, None, "ext-2000"));
    assert_eq!(store.last_event_seq(1).unwrap(), Some(2));
}

#[test]
fn absent_records_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for err in [
        store.get_account(7).unwrap_err(),
        store.get_org(7).unwrap_err(),
        store.get_channel(7).unwrap_err(),
        store.get_scope(7).unwrap_err(),
        store.get_import_job(7).unwrap_err(),
    ] {
        assert!(err.is_not_found(), "{err:?}");
        assert!(err.to_string().contains(" 7 not found"), "{err}");
    }
}

#[test]
fn corrupted_record_is_a_codec_error_not_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    journal(&store, 1, 1, &[put(&member(7, 1, None, "a"))]);
    journal(&store, 2, 1, &[put(&member(8, 2, None, "b"))]);
    store.flush().unwrap();
    drop(store);

    // A journal record cut short, and a valid one behind an unknown format version.
    write_raw(dir.path(), &keys::journal(1, 1), &[1, 1, 0, 0, 0, 1, 7]);
    write_raw(dir.path(), &keys::journal(2, 1), &[2, 0, 0, 0, 0]);

    let store = Store::open(dir.path()).unwrap();
    for org in [1, 2] {
        let err = store.read_org(org).unwrap_err();
        assert!(matches!(err, StoreError::Codec(_)), "org {org}: {err:?}");
        assert!(!err.is_not_found());
    }
    // A member whose bytes do not decode is reported when it is decoded.
    journal(
        &store,
        3,
        1,
        &[MemberWrite::Put(StoredMember::from_bytes(&[1, 0xff]))],
    );
    let log = store.read_org(3).unwrap();
    assert!(matches!(log.replay().unwrap_err(), StoreError::Codec(_)));

    // The same through the test hook, on a live store.
    store
        .raw_insert_for_tests(&keys::account(3), b"junk")
        .unwrap();
    assert!(matches!(
        store.get_account(3).unwrap_err(),
        StoreError::Codec(_)
    ));
    assert!(store.list_accounts().is_err());
}

#[test]
fn journal_replays_puts_and_deletes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ann = member(1, 10, Some(20), "ann");
    let bob = member(2, 10, None, "bob");
    let mut ann_renamed = ann.clone();
    ann_renamed.display_name = Some("Ann B.".into());
    journal(&store, 10, 1, &[put(&ann), put(&bob)]);
    // Within one record the later write wins: a put then a delete leaves nothing.
    journal(&store, 10, 2, &[put(&ann_renamed), MemberWrite::Delete(2)]);
    journal(&store, 10, 3, &[MemberWrite::Delete(1)]);
    assert_eq!(members_of(&store, 10), Vec::<Member>::new());
    let bob_again = member(2, 10, None, "bob-2");
    journal(
        &store,
        10,
        4,
        &[put(&bob_again), put(&ann_renamed), MemberWrite::Delete(99)],
    );
    // Another org's journal does not leak into org 10's.
    journal(&store, 11, 1, &[put(&member(3, 11, None, "carol"))]);
    let store = reopen(store, dir.path());

    let log = store.read_org(10).unwrap();
    let seqs: Vec<u64> = log.journal.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(log.journal[1].1[1], MemberWrite::Delete(2));
    assert_eq!(log.last_seq(), 4);
    assert_eq!(store.journal_seqs(10).unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(members_of(&store, 10), vec![ann_renamed, bob_again]);
    assert_eq!(members_of(&store, 11).len(), 1);
    assert!(members_of(&store, 12).is_empty());
}

#[test]
fn a_snapshot_then_more_journal_records_read_back_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Ids crossing byte boundaries.
    let ids = [1, 255, 256, 257, 65_535, 65_536, 1 << 40];
    let all: Vec<Member> = ids
        .iter()
        .map(|&id| member(id, 7, None, &format!("e{id}")))
        .collect();
    journal(&store, 7, 1, &all[..4].iter().map(put).collect::<Vec<_>>());
    journal(&store, 7, 2, &all[4..].iter().map(put).collect::<Vec<_>>());
    // The scope keeps journaling while the snapshot of seqs 1..=2 is written.
    journal(&store, 7, 3, &[MemberWrite::Delete(256)]);
    let manifest = store
        .write_snapshot(7, 2, &mut all.iter().map(stored))
        .unwrap();
    assert_eq!(
        (
            manifest.generation,
            manifest.upto,
            manifest.chunks,
            manifest.members
        ),
        (1, 2, 1, 7)
    );
    journal(&store, 7, 4, &[put(&member(2, 7, None, "late"))]);
    let store = reopen(store, dir.path());

    let log = store.read_org(7).unwrap();
    assert_eq!(log.manifest, Some(manifest));
    assert_eq!(store.snapshot_manifest(7).unwrap(), Some(manifest));
    let snapshot: Vec<u64> = log
        .snapshot
        .iter()
        .map(|s| s.identity().unwrap().0)
        .collect();
    assert_eq!(snapshot, ids);
    let seqs: Vec<u64> = log.journal.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, vec![3, 4]);
    assert_eq!(log.last_seq(), 4);
    let replayed: Vec<u64> = members_of(&store, 7).iter().map(|m| m.id).collect();
    assert_eq!(replayed, vec![1, 2, 255, 257, 65_535, 65_536, 1 << 40]);
    assert_eq!(members_of(&store, 7)[0], all[0]);
}

#[test]
fn write_snapshot_prunes_the_journal_and_the_previous_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Large members, so that a snapshot takes several chunks (4 MiB each).
    let big = |id: u64| {
        let mut m = member(id, 1, None, &format!("ext-{id}"));
        m.original_name = Some("x".repeat(1_000));
        m
    };
    let first: Vec<Member> = (1..=5_000).map(big).collect();
    for (i, part) in first.chunks(1_000).enumerate() {
        journal(
            &store,
            1,
            i as u64 + 1,
            &part.iter().map(put).collect::<Vec<_>>(),
        );
    }
    journal(&store, 2, 1, &[put(&member(9_000, 2, None, "other"))]);
    let gen1 = store
        .write_snapshot(1, 3, &mut first[..3_000].iter().map(stored))
        .unwrap();
    assert_eq!((gen1.generation, gen1.members), (1, 3_000));
    assert!(gen1.chunks >= 1);
    // Its size is counted unpacked, as journal records are: the framing of every member.
    let framed: u64 = first[..3_000]
        .iter()
        .map(|m| 13 + stored(m).as_bytes().len() as u64)
        .sum();
    assert_eq!(gen1.bytes, framed + 5 * u64::from(gen1.chunks));
    // Records 1..=3 are covered; 4 and 5 are not.
    assert_eq!(store.journal_seqs(1).unwrap(), vec![4, 5]);
    assert_eq!(members_of(&store, 1), first);

    journal(&store, 1, 6, &[MemberWrite::Delete(1)]);
    let gen2 = store
        .write_snapshot(1, 6, &mut first[1..].iter().map(stored))
        .unwrap();
    assert_eq!((gen2.generation, gen2.upto, gen2.members), (2, 6, 4_999));
    assert!(gen2.chunks >= 2, "{gen2:?}");
    assert!(store.journal_seqs(1).unwrap().is_empty());
    assert_eq!(members_of(&store, 1), first[1..]);
    // Other orgs' journals are untouched.
    assert_eq!(store.journal_seqs(2).unwrap(), vec![1]);

    // Installing generation 2 removed every chunk of generation 1 in the same write.
    let chunks = chunk_keys(store, dir.path(), 1);
    let expected: Vec<(u64, u32)> = (0..gen2.chunks).map(|c| (2, c)).collect();
    assert_eq!(chunks, expected);

    let store = Store::open(dir.path()).unwrap();
    let gen3 = store.write_snapshot(1, 6, &mut std::iter::empty()).unwrap();
    assert_eq!((gen3.generation, gen3.chunks, gen3.members), (3, 0, 0));
    assert!(members_of(&store, 1).is_empty());
    assert!(chunk_keys(store, dir.path(), 1).is_empty());
}

#[test]
fn a_cancelled_snapshot_installs_nothing_and_leaves_the_journal_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let big = |id: u64| {
        let mut m = member(id, 1, None, &format!("ext-{id}"));
        m.original_name = Some("x".repeat(1_000));
        m
    };
    let all: Vec<Member> = (1..=9_000).map(big).collect();
    journal(&store, 1, 1, &all.iter().map(put).collect::<Vec<_>>());
    // Cancelled after the first of its (4 MiB) chunks is written.
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let mut members = all.iter().enumerate().map(|(i, m)| {
        if i == 5_000 {
            cancel.store(true, std::sync::atomic::Ordering::Release);
        }
        stored(m)
    });
    let written = store
        .write_snapshot_unless(1, 1, &mut members, &cancel)
        .unwrap();
    assert_eq!(written, None);
    assert_eq!(store.journal_seqs(1).unwrap(), vec![1]);
    assert_eq!(members_of(&store, 1), all);
    // The chunk written before the cancel was a leftover, removed by that read.
    assert!(chunk_keys(store, dir.path(), 1).is_empty());
}

#[test]
fn leftover_chunks_of_an_interrupted_snapshot_are_ignored_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let ann = member(1, 5, None, "ann");
    journal(&store, 5, 1, &[put(&ann)]);
    store
        .write_snapshot(5, 1, &mut [stored(&ann)].into_iter())
        .unwrap();
    let store = reopen(store, dir.path());
    // Leftovers: a chunk of generation 1 beyond the manifest's count, and the first chunk of
    // a generation 2 whose manifest was never written (the process stopped in between).
    let framed = b"part of a snapshot";
    store
        .raw_insert_for_tests(&keys::snapshot_chunk(5, 1, 1), framed)
        .unwrap();
    store
        .raw_insert_for_tests(&keys::snapshot_chunk(5, 2, 3), framed)
        .unwrap();

    let log = store.read_org(5).unwrap();
    assert_eq!(log.snapshot, vec![stored(&ann)]);
    assert_eq!(members_of(&store, 5), vec![ann.clone()]);
    // Both leftovers are gone: reads and snapshot writes exclude each other, so no chunk the
    // manifest does not name can belong to a snapshot being written.
    assert_eq!(chunk_keys(store, dir.path(), 5), vec![(1, 0)]);

    let store = Store::open(dir.path()).unwrap();
    let gen2 = store
        .write_snapshot(5, 1, &mut [stored(&ann)].into_iter())
        .unwrap();
    assert_eq!((gen2.generation, gen2.chunks), (2, 1));
    assert_eq!(members_of(&store, 5), vec![ann]);
    assert_eq!(chunk_keys(store, dir.path(), 5), vec![(2, 0)]);
}

#[test]
fn reading_an_org_while_its_snapshots_are_written_is_never_torn() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let members: Vec<Member> = (1..=300).map(|id| member(id, 4, None, "m")).collect();
    let writes: Vec<MemberWrite> = members.iter().map(put).collect();
    journal(&store, 4, 1, &writes);
    let writer = {
        let store = store.clone();
        let members = members.clone();
        std::thread::spawn(move || {
            for _ in 0..40 {
                let mut stored_members = members.iter().map(stored);
                store.write_snapshot(4, 1, &mut stored_members).unwrap();
            }
        })
    };
    while !writer.is_finished() {
        let log = store.read_org(4).expect("a read beside a snapshot writer");
        assert_eq!(log.replay().unwrap().len(), members.len());
    }
    writer.join().unwrap();
}

#[test]
fn a_missing_journal_record_is_corrupt_not_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    journal(&store, 1, 1, &[put(&member(1, 1, None, "a"))]);
    journal(&store, 1, 3, &[put(&member(2, 1, None, "b"))]);
    let err = store.read_org(1).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(!err.is_not_found());
    assert!(err.to_string().contains("journal record 2"), "{err}");

    // Also right after a snapshot: the journal must go on at upto + 1.
    let ann = member(3, 2, None, "ann");
    store
        .write_snapshot(2, 4, &mut [stored(&ann)].into_iter())
        .unwrap();
    journal(&store, 2, 6, &[MemberWrite::Delete(3)]);
    let err = store.read_org(2).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    journal(&store, 2, 5, &[]);
    assert!(members_of(&store, 2).is_empty());

    // And a chunk the manifest names but the store lacks.
    let bob = member(4, 3, None, "bob");
    store
        .write_snapshot(3, 0, &mut [stored(&bob)].into_iter())
        .unwrap();
    store.flush().unwrap();
    drop(store);
    let db = open_raw(dir.path());
    db.remove(keys::snapshot_chunk(3, 1, 0)).unwrap();
    db.flush().unwrap();
    drop(db);
    let store = Store::open(dir.path()).unwrap();
    let err = store.read_org(3).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[test]
fn events_are_read_across_blocks_from_any_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let block = |scope_id: u64, seqs: std::ops::RangeInclusive<u64>| -> Vec<EventRecord> {
        seqs.map(|seq| event(scope_id, seq)).collect()
    };
    apply(&store, |b| {
        // Seqs crossing byte boundaries; blocks of neighbouring scopes around scope 3's.
        for scope_id in [2, 3, 4] {
            b.put_event_block(scope_id, &block(scope_id, 1..=3))
                .put_event_block(scope_id, &block(scope_id, 4..=4))
                .put_event_block(scope_id, &block(scope_id, 5..=300))
                .put_event_block(scope_id, &block(scope_id, 301..=65_540));
        }
        // An empty block writes nothing.
        b.put_event_block(9, &[]);
    });
    let store = reopen(store, dir.path());
    let seqs = |after: u64, limit: usize| -> Vec<u64> {
        let events = store.events_after(3, after, limit).unwrap();
        assert!(events.iter().all(|e| e.scope_id == 3));
        events.iter().map(|e| e.seq).collect()
    };

    assert_eq!(seqs(0, 100_000), (1..=65_540).collect::<Vec<_>>());
    // `after` inside a block, at a block's end, and a limit that ends inside a later block.
    assert_eq!(seqs(1, 4), vec![2, 3, 4, 5]);
    assert_eq!(seqs(3, 2), vec![4, 5]);
    assert_eq!(seqs(255, 3), vec![256, 257, 258]);
    assert_eq!(seqs(299, 3), vec![300, 301, 302]);
    assert_eq!(seqs(65_538, 10), vec![65_539, 65_540]);
    assert!(seqs(65_540, 10).is_empty());
    assert!(seqs(u64::MAX, 10).is_empty());
    assert!(seqs(0, 0).is_empty());
    assert!(store.events_after(9, 0, 10).unwrap().is_empty());
    assert_eq!(store.events_after(3, 2, 1).unwrap(), vec![event(3, 3)]);

    let spans: Vec<(u64, u64)> = store
        .event_blocks(3)
        .unwrap()
        .iter()
        .map(|s| (s.first, s.last))
        .collect();
    assert_eq!(spans, vec![(1, 3), (4, 4), (5, 300), (301, 65_540)]);
    assert_eq!(store.oldest_event_seq(3).unwrap(), Some(1));
    assert_eq!(store.last_event_seq(3).unwrap(), Some(65_540));

    // Retention removes blocks from the front.
    apply(&store, |b| {
        b.delete_event_block(3, EventBlockSpan { first: 1, last: 3 })
            .delete_event_block(3, EventBlockSpan { first: 4, last: 4 });
    });
    assert_eq!(store.oldest_event_seq(3).unwrap(), Some(5));
    assert_eq!(seqs(0, 2), vec![5, 6]);
    assert_eq!(store.oldest_event_seq(2).unwrap(), Some(1));
}

#[test]
fn outbox_sorts_by_numeric_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let seqs = [65_536u64, 1, 256, 255, 2, 257];
    apply(&store, |b| {
        for seq in seqs {
            b.put_outbox(&entry(3, seq));
        }
        b.put_outbox(&entry(256, 1)).put_outbox(&entry(1, 9));
    });
    let store = reopen(store, dir.path());

    let head: Vec<u64> = store
        .outbox_head(3, 4)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(head, vec![1, 2, 255, 256]);
    assert_eq!(store.outbox_len(3).unwrap(), 6);
    assert_eq!(store.outbox_scopes().unwrap(), vec![1, 3, 256]);

    // Delivery removes from the front.
    apply(&store, |b| {
        b.delete_outbox(3, 1)
            .delete_outbox(256, 1)
            .delete_outbox(1, 9);
    });
    assert_eq!(store.outbox_head(3, 1).unwrap(), vec![entry(3, 2)]);
    assert_eq!(store.outbox_len(3).unwrap(), 5);
    assert_eq!(store.outbox_scopes().unwrap(), vec![3]);
}

#[test]
fn non_empty_store_without_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_raw(
        dir.path(),
        &keys::account(1),
        &unify_storage::codec::encode(&account(1)),
    );
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaMismatch { found: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn counters_catch_up_with_records_written_before_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.allocate_ids(IdKind::Member, 1).unwrap(), 1..2);
    // Records whose ids the counters never handed out, as after a crash that lost the
    // counter update but kept the records.
    apply(&store, |b| {
        b.put_account(&account(70))
            .put_org(&org(71, 70, Source::Maac))
            .put_channel(&channel(72, 71))
            .put_scope(&scope(73, &[300, 12]));
    });
    let store = reopen(store, dir.path());

    assert!(store.allocate_ids(IdKind::Account, 1).unwrap().start > 70);
    assert!(store.allocate_ids(IdKind::Org, 1).unwrap().start > 71);
    assert!(store.allocate_ids(IdKind::Channel, 1).unwrap().start > 72);
    assert!(store.allocate_ids(IdKind::Scope, 1).unwrap().start > 73);
    assert!(store.allocate_ids(IdKind::UnifyKey, 1).unwrap().start > 300);

    // Members have no keys to reconcile from: a scope raises their counter when it loads.
    store.raise_counter(IdKind::Member, 500).unwrap();
    store.raise_counter(IdKind::Member, 400).unwrap();
    assert_eq!(store.counter_value(IdKind::Member).unwrap(), 500);
    assert_eq!(store.allocate_ids(IdKind::Member, 1).unwrap(), 501..502);
}

#[test]
fn ids_strictly_increase_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = store.allocate_ids(IdKind::Member, 1).unwrap();
    assert_eq!(first, 1..2);
    let batch = store.allocate_ids(IdKind::Member, 10).unwrap();
    assert_eq!(batch, 2..12);
    assert!(store.allocate_ids(IdKind::Member, 0).unwrap().is_empty());
    // Each kind has its own counter.
    assert_eq!(store.allocate_ids(IdKind::Job, 1).unwrap(), 1..2);

    let store = reopen(store, dir.path());
    let after = store.allocate_ids(IdKind::Member, 1).unwrap();
    assert!(after.start >= batch.end, "{after:?} after {batch:?}");
    assert!(store.allocate_ids(IdKind::Job, 1).unwrap().start > 1);
}

#[test]
fn concurrent_allocations_are_disjoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..200)
                    .flat_map(|_| store.allocate_ids(IdKind::Scope, 3).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    let expected: Vec<u64> = (1..=2_400).collect();
    assert_eq!(all, expected);
}

#[test]
fn dead_letters_are_moved_and_requeued() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    apply(&store, |b| {
        b.put_outbox(&entry(5, 256)).put_outbox(&entry(5, 255));
    });
    apply(&store, |b| {
        b.delete_outbox(5, 255)
            .put_dead(&entry(5, 255))
            .delete_outbox(5, 256)
            .put_dead(&entry(5, 256));
    });
    assert_eq!(store.outbox_len(5).unwrap(), 0);
    assert!(store.outbox_scopes().unwrap().is_empty());
    assert_eq!(
        store.dead_entries(5).unwrap(),
        vec![entry(5, 255), entry(5, 256)]
    );
    apply(&store, |b| {
        b.delete_dead(5, 255).put_outbox(&entry(5, 255));
    });
    assert_eq!(store.dead_entries(5).unwrap(), vec![entry(5, 256)]);
    assert_eq!(store.outbox_head(5, 10).unwrap(), vec![entry(5, 255)]);
}

#[test]
fn deleted_scope_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    apply(&store, |b| {
        b.put_scope(&scope(1, &[])).put_scope(&scope(2, &[1]));
    });
    apply(&store, |b| {
        b.delete_scope(1);
    });
    assert!(store.get_scope(1).unwrap_err().is_not_found());
    assert_eq!(store.list_scopes().unwrap(), vec![scope(2, &[1])]);
}

#[test]
fn newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    write_raw(dir.path(), keys::SCHEMA_VERSION_KEY, &99u32.to_be_bytes());

    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaMismatch {
                found: 99,
                expected: SCHEMA_VERSION
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("99"), "{message}");
    assert!(message.contains(&SCHEMA_VERSION.to_string()), "{message}");
}

#[test]
fn schema_version_is_kept_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    apply(&store, |b| {
        b.put_account(&account(1));
    });
    let store = reopen(store, dir.path());
    assert_eq!(store.get_account(1).unwrap(), account(1));
}

#[tokio::test]
async fn flush_async_makes_writes_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    apply(&store, |b| {
        b.put_account(&account(1));
    });
    store.flush_async().await.unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get_account(1).unwrap(), account(1));
}

#[test]
fn delivery_state_and_outbox_ranges_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.get_delivery(6).unwrap(), None);
    let record = unify_storage::DeliveryRecord {
        scope_id: 6,
        delivered: 300,
        last_delivered_at: Some(1_700_000_000_000),
        last_error: Some("HTTP 503".into()),
        batch: Some((255, 257)),
        rejections: 2,
    };
    apply(&store, |b| {
        for seq in [1u64, 255, 256, 257, 65_536] {
            b.put_outbox(&entry(6, seq));
        }
        b.put_outbox(&entry(7, 300))
            .put_dead(&entry(6, 2))
            .put_dead(&entry(7, 3))
            .put_delivery(&record);
    });
    let store = reopen(store, dir.path());
    assert_eq!(store.get_delivery(6).unwrap(), Some(record));
    assert_eq!(store.get_delivery(7).unwrap(), None);
    let from = |seq, limit| -> Vec<u64> {
        store
            .outbox_from(6, seq, limit)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    };
    assert_eq!(from(255, 3), vec![255, 256, 257]);
    assert_eq!(from(2, 10), vec![255, 256, 257, 65_536]);
    assert!(
        from(65_537, 10).is_empty(),
        "scope 7 does not leak into scope 6"
    );
    assert_eq!(store.dead_len(6).unwrap(), 1);
    assert_eq!(store.dead_len(8).unwrap(), 0);
}

/// One step of the member log model test.
#[derive(Debug, Clone)]
enum Op {
    /// Appends one journal record to `org`: per write, member `org * 100 + id` put with
    /// external id `ext` (`Some`) or deleted (`None`).
    Record {
        org: u64,
        writes: Vec<(u64, Option<u8>)>,
    },
    /// Writes a snapshot of `org` covering its journal up to `lag` records before the last.
    Snapshot { org: u64, lag: u64 },
    /// Flushes and reopens the store.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let write = (1..8u64, proptest::option::of(0..3u8));
    prop_oneof![
        6 => (1..3u64, proptest::collection::vec(write, 0..4))
            .prop_map(|(org, writes)| Op::Record { org, writes }),
        2 => (1..3u64, 0..3u64).prop_map(|(org, lag)| Op::Snapshot { org, lag }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Random journal records and snapshots (of a past state, as the scope writes them while
    /// it keeps journaling) replay to a model of the live members.
    #[test]
    fn read_org_replays_to_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        // Per org: the members after each seq (index 0: before the first record).
        let mut history: HashMap<u64, Vec<BTreeMap<u64, Member>>> = HashMap::new();
        for org in 1..3 {
            history.insert(org, vec![BTreeMap::new()]);
        }

        for op in ops {
            match op {
                Op::Record { org, writes } => {
                    let states = history.get_mut(&org).unwrap();
                    let mut state = states.last().unwrap().clone();
                    let writes: Vec<MemberWrite> = writes
                        .into_iter()
                        .map(|(id, ext)| {
                            let id = org * 100 + id;
                            match ext {
                                Some(ext) => {
                                    let m = member(id, org, None, &format!("ext{ext}"));
                                    state.insert(id, m.clone());
                                    put(&m)
                                }
                                None => {
                                    state.remove(&id);
                                    MemberWrite::Delete(id)
                                }
                            }
                        })
                        .collect();
                    journal(&store, org, states.len() as u64, &writes);
                    states.push(state);
                }
                Op::Snapshot { org, lag } => {
                    let states = &history[&org];
                    let last = states.len() as u64 - 1;
                    let covered = store.snapshot_manifest(org).unwrap().map_or(0, |m| m.upto);
                    let upto = last.saturating_sub(lag).max(covered);
                    let members = &states[upto as usize];
                    let manifest = store
                        .write_snapshot(org, upto, &mut members.values().map(stored))
                        .unwrap();
                    prop_assert_eq!(manifest.members, members.len() as u64);
                }
                Op::Reopen => store = reopen(store, dir.path()),
            }
        }

        for org in 1..3 {
            let states = &history[&org];
            let expected: Vec<Member> = states.last().unwrap().values().cloned().collect();
            prop_assert_eq!(members_of(&store, org), expected);
            let log = store.read_org(org).unwrap();
            prop_assert_eq!(log.last_seq(), states.len() as u64 - 1);
            let upto = log.manifest.map_or(0, |m| m.upto);
            let seqs = store.journal_seqs(org).unwrap();
            prop_assert!(seqs.iter().all(|&s| s > upto), "{seqs:?} after {upto}");
        }
    }
}
