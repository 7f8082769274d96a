//! Creates and provisioning through identity-keyed member actors: one identity's work runs
//! one at a time, so "get or create, then maybe update" never makes two members.

mod common;

use std::sync::Arc;
use std::time::Duration;

use unify_actors::engine::Attribute;
use unify_actors::events::Reason;
use unify_actors::member::Identity;
use unify_actors::ops::{MemberOp, NewMember};
use unify_actors::runtime::Runtime;
use unify_actors::settings::Settings;
use unify_storage::Id;

async fn boot(dir: &std::path::Path) -> (Runtime, Id, Id) {
    let settings = Settings {
        call_timeout: Duration::from_secs(30),
        member_idle: Duration::from_millis(50),
        ..Settings::default()
    };
    let rt = common::boot(dir, settings).await;
    let w = common::world(&rt, "acme").await;
    (rt, w.caac, w.channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_provisioning_of_one_identity_creates_one_member_and_applies_every_update() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, org, channel) = boot(dir.path()).await;
    let rt = Arc::new(rt);
    let identity = Identity {
        org_id: org,
        channel_id: Some(channel),
        external_member_id: "ou_abc".into(),
    };
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (rt, identity) = (rt.clone(), identity.clone());
            tokio::spawn(async move {
                rt.with_identity(identity, move |handle| async move {
                    let existed = handle.find().await?.is_some();
                    let (member, created) = handle
                        .get_or_create(NewMember::default(), Reason::Provisioned)
                        .await?;
                    assert_eq!(created, !existed, "find and create agree inside the actor");
                    let op = MemberOp::Uni {
                        attribute: Attribute::CustomId,
                        value: Some(format!("c{i}")),
                    };
                    let updated = handle.mutate(member.id, op).await?.unwrap();
                    Ok((updated, created))
                })
                .await
                .unwrap()
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    let members = rt.list_members(org, 0, 100).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].external_member_id, "ou_abc");
    assert_eq!(members[0].channel_id, Some(channel));
    assert!(results.iter().all(|(m, _)| m.id == members[0].id));
    // Every update was applied, one after another, each seeing the member.
    assert!(results.iter().all(|(m, _)| m.custom_id.is_some()));
    assert!(members[0].custom_id.is_some());
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_work_for_an_unknown_org_is_not_found_and_a_repeated_create_finds_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, org, channel) = boot(dir.path()).await;
    let missing = Identity {
        org_id: 9999,
        channel_id: None,
        external_member_id: "x".into(),
    };
    let result = rt
        .with_identity(missing, |_| async {
            Ok::<_, unify_actors::error::OpError>(())
        })
        .await;
    assert!(matches!(
        result,
        Err(unify_actors::error::OpError::NotFound(_))
    ));
    let new = NewMember {
        channel_id: Some(channel),
        external_member_id: "u1".into(),
        ..NewMember::default()
    };
    let (first, created) = rt.create_member(org, new.clone()).await.unwrap();
    assert!(created);
    let (again, created) = rt.create_member(org, new).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);
    rt.shutdown().await.unwrap();
}
