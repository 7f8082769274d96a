//! Behaviour of the store on a real sled database in a temporary directory.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use unify_storage::{
    Account, Channel, ContactApi, EventRecord, IdKind, JobKind, Member, Org, OutboxEntry,
    PendingJob, SCHEMA_VERSION, ScopeRecord, Source, Store, StoreError, UnifyKeyRecord, WriteBatch,
    keys,
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

/// Writes raw bytes into the sled database at `path` while no `Store` has it open. Polls for
/// the file lock, which sled releases shortly after a dropped `Store`.
fn write_raw(path: &Path, key: &[u8], value: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let db = loop {
        match sled::Config::new().path(path).open() {
            Ok(db) => break db,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(err) => panic!("cannot open {path:?}: {err}"),
        }
    };
    db.insert(key, value).unwrap();
    db.flush().unwrap();
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
            .put_member(&with_username)
            .put_username(2, "ann", 5)
            .put_scope(&scope(4, &[8, 9]))
            .put_event(&event(4, 1))
            .put_outbox(&entry(4, 1))
            .put_dead(&entry(4, 0));
    });
    let store = reopen(store, dir.path());

    assert_eq!(store.get_account(1).unwrap(), account(1));
    assert_eq!(store.get_org(2).unwrap(), org(2, 1, Source::Caac));
    assert_eq!(store.get_channel(3).unwrap(), channel(3, 2));
    assert_eq!(store.get_member(5).unwrap(), with_username);
    assert_eq!(store.get_scope(4).unwrap(), scope(4, &[8, 9]));
    assert_eq!(store.events_after(4, 0, 10).unwrap(), vec![event(4, 1)]);
    assert_eq!(store.outbox_head(4, 10).unwrap(), vec![entry(4, 1)]);
    assert_eq!(store.dead_entries(4).unwrap(), vec![entry(4, 0)]);
    assert_eq!(
        store.lookup_member_by_ext(2, Some(3), "U5").unwrap(),
        Some(5)
    );
    assert_eq!(store.lookup_username(2, "ann").unwrap(), Some(5));

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
    assert_eq!(store.count_members().unwrap(), 1);
}

#[test]
fn fresh_store_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(!store.has_accounts().unwrap());
    assert_eq!(store.count_members().unwrap(), 0);
    assert!(store.outbox_scopes().unwrap().is_empty());
    assert_eq!(store.oldest_event_seq(1).unwrap(), None);
    assert_eq!(store.last_event_seq(1).unwrap(), None);
    assert_eq!(store.scan_members().count(), 0);
}

#[test]
fn a_large_batch_is_applied_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut batch = WriteBatch::new();
    assert!(batch.is_empty());
    for id in 1..=2_000 {
        batch.put_member(&member(id, 1, None, &format!("ext-{id}")));
    }
    batch.put_event(&event(1, 1));
    assert_eq!(batch.len(), 2_000 * 3 + 1);

    // Nothing of the batch is visible before it is applied.
    assert_eq!(store.count_members().unwrap(), 0);
    store.apply(batch).unwrap();
    assert_eq!(store.count_members().unwrap(), 2_000);

    let store = reopen(store, dir.path());
    assert_eq!(store.count_members().unwrap(), 2_000);
    let scanned: Vec<Member> = store.scan_members().map(Result::unwrap).collect();
    assert_eq!(scanned.len(), 2_000);
    assert!(scanned.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(scanned[1_999], member(2_000, 1, None, "ext-2000"));
    assert_eq!(
        store.lookup_member_by_ext(1, None, "ext-1234").unwrap(),
        Some(1_234)
    );
    assert_eq!(store.last_event_seq(1).unwrap(), Some(1));
}

#[test]
fn absent_records_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let err = store.get_member(7).unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(err.to_string().contains("member 7"), "{err}");
    assert!(store.get_account(7).unwrap_err().is_not_found());
    assert!(store.get_org(7).unwrap_err().is_not_found());
    assert!(store.get_channel(7).unwrap_err().is_not_found());
    assert!(store.get_scope(7).unwrap_err().is_not_found());
    assert_eq!(store.lookup_member_by_ext(1, None, "x").unwrap(), None);
    assert_eq!(store.lookup_username(1, "x").unwrap(), None);
}

#[test]
fn corrupted_record_is_a_codec_error_not_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    apply(&store, |b| {
        b.put_member(&member(7, 1, None, "a"));
        b.put_member(&member(8, 1, None, "b"));
    });
    store.flush().unwrap();
    drop(store);

    // Garbage after a valid version byte, and a valid body behind an unknown version byte.
    write_raw(dir.path(), &keys::member(7), &[1, 0xff, 0xff, 0x03]);
    let mut future = unify_storage::codec::encode(&member(8, 1, None, "b"));
    future[0] = 2;
    write_raw(dir.path(), &keys::member(8), &future);

    let store = Store::open(dir.path()).unwrap();
    for id in [7, 8] {
        let err = store.get_member(id).unwrap_err();
        assert!(matches!(err, StoreError::Codec(_)), "member {id}: {err:?}");
        assert!(!err.is_not_found());
    }
    assert!(store.members_of_org(1).is_err());
    assert!(store.scan_members().any(|m| m.is_err()));

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
fn index_entry_of_a_missing_member_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .raw_insert_for_tests(&keys::org_member(1, 42), &[])
        .unwrap();
    let err = store.members_of_org(1).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
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
fn non_empty_store_without_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_raw(
        dir.path(),
        &keys::member(1),
        &unify_storage::codec::encode(&member(1, 1, None, "a")),
    );
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaMismatch { found: 0, .. }),
        "{err:?}"
    );
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
fn counters_catch_up_with_records_written_before_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.allocate_ids(IdKind::Member, 1).unwrap(), 1..2);
    // Records whose ids the counters never handed out, as after a crash that lost the
    // counter update but kept the records.
    apply(&store, |b| {
        b.put_member(&member(500, 1, None, "m"))
            .put_account(&account(70))
            .put_org(&org(71, 70, Source::Maac))
            .put_channel(&channel(72, 71))
            .put_scope(&scope(73, &[300, 12]));
    });
    let store = reopen(store, dir.path());

    assert!(store.allocate_ids(IdKind::Member, 1).unwrap().start > 500);
    assert!(store.allocate_ids(IdKind::Account, 1).unwrap().start > 70);
    assert!(store.allocate_ids(IdKind::Org, 1).unwrap().start > 71);
    assert!(store.allocate_ids(IdKind::Channel, 1).unwrap().start > 72);
    assert!(store.allocate_ids(IdKind::Scope, 1).unwrap().start > 73);
    assert!(store.allocate_ids(IdKind::UnifyKey, 1).unwrap().start > 300);
}

#[test]
fn secondary_lookups_follow_put_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let caac = member(1, 10, Some(20), "same-ext");
    let maac = member(2, 10, None, "same-ext");
    let other_channel = member(3, 10, Some(21), "same-ext");
    let mut named = member(4, 10, Some(20), "named");
    named.username = Some("bob".into());
    apply(&store, |b| {
        b.put_member(&caac)
            .put_member(&maac)
            .put_member(&other_channel)
            .put_member(&named)
            .put_username(10, "bob", 4);
    });

    assert_eq!(
        store
            .lookup_member_by_ext(10, Some(20), "same-ext")
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        store.lookup_member_by_ext(10, None, "same-ext").unwrap(),
        Some(2)
    );
    assert_eq!(
        store
            .lookup_member_by_ext(10, Some(21), "same-ext")
            .unwrap(),
        Some(3)
    );
    assert_eq!(
        store.lookup_member_by_ext(11, None, "same-ext").unwrap(),
        None
    );
    assert_eq!(store.lookup_username(10, "bob").unwrap(), Some(4));
    assert_eq!(store.lookup_username(11, "bob").unwrap(), None);

    apply(&store, |b| {
        b.delete_member(&caac).delete_member(&named);
    });
    assert_eq!(
        store
            .lookup_member_by_ext(10, Some(20), "same-ext")
            .unwrap(),
        None
    );
    assert_eq!(
        store.lookup_member_by_ext(10, Some(20), "named").unwrap(),
        None
    );
    assert_eq!(store.lookup_username(10, "bob").unwrap(), None);
    assert!(store.get_member(1).unwrap_err().is_not_found());
    assert_eq!(
        store.lookup_member_by_ext(10, None, "same-ext").unwrap(),
        Some(2)
    );
    let ids: Vec<u64> = store
        .members_of_org(10)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec![2, 3]);

    apply(&store, |b| {
        b.put_username(10, "carol", 3);
    });
    assert_eq!(store.lookup_username(10, "carol").unwrap(), Some(3));
    apply(&store, |b| {
        b.remove_username(10, "carol");
    });
    assert_eq!(store.lookup_username(10, "carol").unwrap(), None);
}

#[test]
fn members_of_an_org_are_paged_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    apply(&store, |b| {
        // Ids crossing byte boundaries, interleaved with another org's members.
        for id in [1, 255, 256, 257, 65_535, 65_536, 1 << 40] {
            b.put_member(&member(id, 7, None, &format!("e{id}")));
            b.put_member(&member(id + 1_000_000_000_000, 8, None, &format!("e{id}")));
        }
    });

    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = store.members_of_org_page(7, after, 3).unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = last.id;
        seen.extend(page.iter().map(|m| m.id));
    }
    assert_eq!(seen, vec![1, 255, 256, 257, 65_535, 65_536, 1 << 40]);
    assert!(
        store
            .members_of_org_page(7, u64::MAX, 3)
            .unwrap()
            .is_empty()
    );
    assert!(store.members_of_org_page(7, 0, 0).unwrap().is_empty());
    assert_eq!(store.members_of_org(8).unwrap().len(), 7);
    assert!(store.members_of_org(9).unwrap().is_empty());
}

#[test]
fn events_and_outbox_sort_by_numeric_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let seqs = [65_536u64, 1, 256, 255, 2, 257];
    apply(&store, |b| {
        for seq in seqs {
            b.put_event(&event(3, seq)).put_outbox(&entry(3, seq));
            // Neighbouring scopes must not leak into scope 3's ranges.
            b.put_event(&event(2, seq)).put_event(&event(4, seq));
        }
        b.put_outbox(&entry(256, 1)).put_outbox(&entry(1, 9));
    });
    let store = reopen(store, dir.path());

    let sorted = [1u64, 2, 255, 256, 257, 65_536];
    let events: Vec<u64> = store
        .events_after(3, 0, 100)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(events, sorted);
    let events: Vec<u64> = store
        .events_after(3, 255, 2)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(events, vec![256, 257]);
    assert!(store.events_after(3, 65_536, 10).unwrap().is_empty());
    assert!(store.events_after(3, u64::MAX, 10).unwrap().is_empty());
    assert_eq!(store.oldest_event_seq(3).unwrap(), Some(1));
    assert_eq!(store.last_event_seq(3).unwrap(), Some(65_536));

    let head: Vec<u64> = store
        .outbox_head(3, 4)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(head, vec![1, 2, 255, 256]);
    assert_eq!(store.outbox_len(3).unwrap(), 6);
    assert_eq!(store.outbox_scopes().unwrap(), vec![1, 3, 256]);

    // Retention and delivery remove from the front.
    apply(&store, |b| {
        b.delete_event(3, 1)
            .delete_event(3, 2)
            .delete_outbox(3, 1)
            .delete_outbox(256, 1)
            .delete_outbox(1, 9);
    });
    assert_eq!(store.oldest_event_seq(3).unwrap(), Some(255));
    assert_eq!(store.outbox_head(3, 1).unwrap(), vec![entry(3, 2)]);
    assert_eq!(store.outbox_len(3).unwrap(), 5);
    assert_eq!(store.outbox_scopes().unwrap(), vec![3]);
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
/// One step of the member model test.
#[derive(Debug, Clone)]
enum Op {
    /// Creates or updates member `id` with the identity `(org, channel, ext)`.
    Put {
        id: u64,
        org: u64,
        channel: Option<u64>,
        ext: u8,
    },
    /// Deletes member `id` if it exists.
    Delete { id: u64 },
    /// Flushes and reopens the store.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..12u64, 1..3u64, proptest::option::of(1..3u64), 0..3u8)
            .prop_map(|(id, org, channel, ext)| Op::Put { id, org, channel, ext }),
        3 => (1..12u64).prop_map(|id| Op::Delete { id }),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Random member writes leave the by-ext index equal to a model of the live members.
    #[test]
    fn by_ext_index_matches_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let mut model: HashMap<u64, Member> = HashMap::new();

        for op in ops {
            match op {
                Op::Put { id, org, channel, ext } => {
                    let new = member(id, org, channel, &format!("ext{ext}"));
                    // The engine never gives one identity to two members.
                    let taken = model.values().any(|m| {
                        m.id != id
                            && (m.org_id, m.channel_id, &m.external_member_id)
                                == (new.org_id, new.channel_id, &new.external_member_id)
                    });
                    if taken {
                        continue;
                    }
                    let mut batch = WriteBatch::new();
                    if let Some(old) = model.get(&id) {
                        batch.delete_member(old);
                    }
                    batch.put_member(&new);
                    store.apply(batch).unwrap();
                    model.insert(id, new);
                }
                Op::Delete { id } => {
                    if let Some(old) = model.remove(&id) {
                        let mut batch = WriteBatch::new();
                        batch.delete_member(&old);
                        store.apply(batch).unwrap();
                    }
                }
                Op::Reopen => store = reopen(store, dir.path()),
            }
        }

        for org in 1..3 {
            for channel in [None, Some(1), Some(2)] {
                for ext in 0..3 {
                    let ext = format!("ext{ext}");
                    let expected = model
                        .values()
                        .find(|m| (m.org_id, m.channel_id, &m.external_member_id) == (org, channel, &ext))
                        .map(|m| m.id);
                    prop_assert_eq!(store.lookup_member_by_ext(org, channel, &ext).unwrap(), expected);
                }
            }
            let mut expected: Vec<u64> =
                model.values().filter(|m| m.org_id == org).map(|m| m.id).collect();
            expected.sort_unstable();
            let listed: Vec<u64> = store.members_of_org(org).unwrap().iter().map(|m| m.id).collect();
            prop_assert_eq!(listed, expected);
        }
        prop_assert_eq!(store.count_members().unwrap(), model.len() as u64);
    }
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
