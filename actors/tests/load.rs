//! Loading a scope from the linking values persisted in the org-members index: they are
//! trusted only under the normalizer configuration that made them, entries written before they
//! existed still load, and `verify` checks them against a fresh normalization.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_verified, boot, key, world};
use unify_actors::engine::{Attribute, Normalizer};
use unify_actors::ops::NewMember;
use unify_actors::runtime::Runtime;
use unify_actors::settings::Settings;
use unify_actors::verify::{Problem, verify};
use unify_storage::{Id, MemberLinks, Store, WriteBatch, keys};

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
    let entries: Vec<_> = store
        .org_member_entries(org, 0..=Id::MAX)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(entries.len(), 2);
    let links = entries[0].links.as_ref().expect("linking values persisted");
    assert_eq!(entries[0].profile_id, Some(a));
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
async fn entries_written_before_linking_values_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let (org, a, b) = two_taiwan_mobiles(dir.path()).await;
    {
        // The org-members entries of earlier stores are empty.
        let store = Store::open(dir.path()).unwrap();
        for id in [a, b] {
            store
                .raw_insert_for_tests(&keys::org_member(org, id), &[])
                .unwrap();
        }
        store.flush().unwrap();
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
    let (_, a, b) = two_taiwan_mobiles(dir.path()).await;
    let store = Store::open(dir.path()).unwrap();
    let normalizer = Normalizer::default();
    let mut values = vec![None; 6];
    values[Attribute::DisplayMobile.index()] = Some("+886900000000".to_owned());
    values[Attribute::ExternalMemberId.index()] = Some("a".to_owned());
    let wrong = MemberLinks {
        normalizer: normalizer.fingerprint(),
        values,
    };
    let mut batch = WriteBatch::new();
    batch.put_member_linked(&store.get_member(a).unwrap(), &wrong);
    // Values under another configuration are not trusted, so they are no problem.
    let other = MemberLinks {
        normalizer: normalizer.fingerprint() ^ 1,
        values: vec![None; 6],
    };
    batch.put_member_linked(&store.get_member(b).unwrap(), &other);
    store.apply(batch).unwrap();

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
