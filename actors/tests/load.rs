//! Loading a scope from the linking values persisted with each member in its org's snapshot and
//! journal: they are trusted only under the normalizer configuration that made them, members
//! migrated without them still load, and `verify` checks them against a fresh normalization.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_verified, boot, key, world};
use unify_actors::engine::{Attribute, Normalizer};
use unify_actors::ops::NewMember;
use unify_actors::runtime::Runtime;
use unify_actors::settings::Settings;
use unify_actors::verify::{Problem, verify};
use unify_storage::{Id, MemberLinks, MemberLog, MemberWrite, Store, StoredMember, WriteBatch};

fn settings() -> Settings {
    Settings {
        call_timeout: Duration::from_secs(30),
        ..Settings::default()
    }
}

fn us_settings() -> Settings {
    Settings {
        normalizer: Arc::new(Normalizer::new("US", Vec::new(), Vec::new()).unwrap()),
        ..settings()
    }
}

fn member(channel: Id, ext: &str, mobile: &str) -> NewMember {
    NewMember {
        channel_id: Some(channel),
        external_member_id: ext.into(),
        display_mobile: Some(mobile.into()),
        ..NewMember::default()
    }
}

/// Polls the profile of a member until it is `expected`.
async fn profile_becomes(rt: &Runtime, org: Id, member: Id, expected: Id) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let profile = rt.get_member(org, member).await.unwrap().profile_id;
        if profile == expected && rt.setting(org).await.unwrap().pending_job.is_none() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "member {member} stays in profile {profile}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two members whose mobiles are one number under region TW (the default) but not under US.
async fn two_taiwan_mobiles(dir: &std::path::Path) -> (Id, Id, Id) {
    let rt = boot(dir, settings()).await;
    let w = world(&rt, "acme").await;
    rt.set_keys(w.caac, vec![key(Attribute::DisplayMobile)])
        .await
        .unwrap();
    let (a, _) = rt
        .create_member(w.caac, member(w.channel, "a", "0912 345 678"))
        .await
        .unwrap();
    let (b, _) = rt
        .create_member(w.caac, member(w.channel, "b", "+886912345678"))
        .await
        .unwrap();
    assert_eq!(b.profile_id, a.id);
    rt.shutdown().await.unwrap();
    (w.caac, a.id, b.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_written_with_their_linking_values() {
    let dir = tempfile::tempdir().unwrap();
    let (org, a, _) = two_taiwan_mobiles(dir.path()).await;
    let store = Store::open(dir.path()).unwrap();
    let members = store.read_org(org).unwrap().replay().unwrap();
    assert_eq!(members.len(), 2);
    let (member, links) = members[&a].decode().unwrap();
    assert_eq!(member.external_member_id, "a");
    assert_eq!(links.normalizer, Normalizer::default().fingerprint());
    assert_eq!(
        links.values[Attribute::DisplayMobile.index()].as_deref(),
        Some("+886912345678")
    );
    assert_eq!(
        links.values[Attribute::ExternalMemberId.index()].as_deref(),
        Some("a")
    );
}

/// Appends `members` (with `links`) as the next journal record of `org`, as a scope would.
fn journal_with_links(
    store: &Store,
    org: Id,
    members: &[unify_storage::Member],
    links: &[MemberLinks],
) {
    let seq = store.read_org(org).unwrap().last_seq() + 1;
    let writes: Vec<MemberWrite> = members
        .iter()
        .zip(links)
        .map(|(m, l)| MemberWrite::Put(StoredMember::new(m, l)))
        .collect();
    let mut batch = WriteBatch::new();
    batch.append_journal(org, seq, &writes);
    store.apply(batch).unwrap();
    store.flush().unwrap();
}

/// Returns members `ids` of `org` as the store holds them.
fn stored_members(store: &Store, org: Id, ids: &[Id]) -> Vec<unify_storage::Member> {
    let members = store.read_org(org).unwrap().replay().unwrap();
    ids.iter().map(|id| members[id].member().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_linking_values_are_recomputed_when_the_normalizer_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (org, a, b) = two_taiwan_mobiles(dir.path()).await;

    // Same configuration: the persisted values are used and the profile stays.
    let rt = boot(dir.path(), settings()).await;
    assert_eq!(rt.get_member(org, b).await.unwrap().profile_id, a);
    rt.shutdown().await.unwrap();
    drop(rt);

    // Region US: "0912 345 678" is no valid number any more, so the members split.
    let rt = boot(dir.path(), us_settings()).await;
    profile_becomes(&rt, org, b, b).await;
    assert_eq!(rt.get_member(org, a).await.unwrap().profile_id, a);
    rt.shutdown().await.unwrap();
    drop(rt);
    let store = Store::open(dir.path()).unwrap();
    let report = verify(&store, &us_settings().normalizer, Default::default()).unwrap();
    assert!(report.is_ok(), "verify: {report:?}");
    drop(store);

    // Back to TW: they join again.
    let rt = boot(dir.path(), settings()).await;
    profile_becomes(&rt, org, b, a).await;
    rt.shutdown().await.unwrap();
    drop(rt);
    assert_verified(&Store::open(dir.path()).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_migrated_without_linking_values_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let (org, a, b) = two_taiwan_mobiles(dir.path()).await;
    {
        // The migration from schema version 1 writes members whose org-members entry held no
        // linking values with empty ones under fingerprint 0.
        let store = Store::open(dir.path()).unwrap();
        let empty = MemberLinks {
            normalizer: 0,
            values: Vec::new(),
        };
        let members = stored_members(&store, org, &[a, b]);
        journal_with_links(&store, org, &members, &[empty.clone(), empty]);
        assert_verified(&store);
    }
    let rt = boot(dir.path(), settings()).await;
    assert_eq!(rt.get_member(org, b).await.unwrap().profile_id, a);
    assert_eq!(rt.list_members(org, 0, 10).await.unwrap().len(), 2);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_persisted_values_against_a_fresh_normalization() {
    let dir = tempfile::tempdir().unwrap();
    let (org, a, b) = two_taiwan_mobiles(dir.path()).await;
    let store = Store::open(dir.path()).unwrap();
    let normalizer = Normalizer::default();
    let mut values = vec![None; 6];
    values[Attribute::DisplayMobile.index()] = Some("+886900000000".to_owned());
    values[Attribute::ExternalMemberId.index()] = Some("a".to_owned());
    let wrong = MemberLinks {
        normalizer: normalizer.fingerprint(),
        values,
    };
    // Values under another configuration are not trusted, so they are no problem.
    let other = MemberLinks {
        normalizer: normalizer.fingerprint() ^ 1,
        values: vec![None; 6],
    };
    let members = stored_members(&store, org, &[a, b]);
    journal_with_links(&store, org, &members, &[wrong, other]);

    let report = verify(&store, &normalizer, Default::default()).unwrap();
    assert_eq!(
        report.problems,
        vec![Problem::StaleLinkValues {
            member_id: a,
            attribute: Attribute::DisplayMobile,
            persisted: Some("+886900000000".to_owned()),
            fresh: Some("+886912345678".to_owned()),
        }],
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_under_another_fingerprint_are_recomputed_and_current_ones_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (org, a, b) = two_taiwan_mobiles(dir.path()).await;
    let fingerprint = Normalizer::default().fingerprint();
    // Values that keep a and b apart (distinct mobiles).
    let apart = |normalizer: u64, mobile: &str, ext: &str| {
        let mut values = vec![None; 6];
        values[Attribute::DisplayMobile.index()] = Some(mobile.to_owned());
        values[Attribute::ExternalMemberId.index()] = Some(ext.to_owned());
        MemberLinks { normalizer, values }
    };
    {
        let store = Store::open(dir.path()).unwrap();
        let members = stored_members(&store, org, &[a, b]);
        journal_with_links(
            &store,
            org,
            &members,
            &[
                apart(fingerprint ^ 1, "+1", "a"),
                apart(fingerprint ^ 1, "+2", "b"),
            ],
        );
    }
    // Stale: recomputed from the members, which share a number.
    let rt = boot(dir.path(), settings()).await;
    assert_eq!(rt.get_member(org, b).await.unwrap().profile_id, a);
    rt.shutdown().await.unwrap();
    drop(rt);

    {
        let store = Store::open(dir.path()).unwrap();
        let members = stored_members(&store, org, &[a, b]);
        journal_with_links(
            &store,
            org,
            &members,
            &[apart(fingerprint, "+1", "a"), apart(fingerprint, "+2", "b")],
        );
    }
    // Current: trusted as they are (verify would flag them), so the members load apart.
    let rt = boot(dir.path(), settings()).await;
    assert_eq!(rt.get_member(org, b).await.unwrap().profile_id, b);
    assert_eq!(rt.get_member(org, a).await.unwrap().profile_id, a);
    rt.shutdown().await.unwrap();
}
