//! The actor runtime on real sled stores in temp dirs: durability across restarts, supervision,
//! ordering, idempotent creates, jobs with progress and their resumption.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{World, assert_verified, boot, key, world};
use unify_actors::engine::{Attribute, KeySet};
use unify_actors::error::{Code, OpError};
use unify_actors::events::EventBody;
use unify_actors::hub::Subscription;
use unify_actors::ops::{MemberOp, MemberPatch, NewMember};
use unify_actors::runtime::{NewChannel, Runtime};
use unify_actors::settings::Settings;
use unify_storage::{Id, MemberLog, Source, Store};

fn settings() -> Settings {
    Settings {
        job_chunk: 100,
        call_timeout: Duration::from_secs(30),
        ..Settings::default()
    }
}

/// Polls `condition` until it holds or the deadline passes.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn maac_org(rt: &Runtime, w: &World) -> Id {
    rt.create_org(w.account, Source::Maac, "mkt", None)
        .await
        .unwrap()
        .id
}

fn member(channel: Id, ext: &str, email: Option<&str>) -> NewMember {
    NewMember {
        channel_id: Some(channel),
        external_member_id: ext.into(),
        display_email: email.map(str::to_owned),
        ..NewMember::default()
    }
}

/// Boots a runtime on `dir` with the "acme" world, its caac scope keyed by email.
async fn keyed_by_email(dir: &Path) -> (Runtime, World) {
    let rt = boot(dir, settings()).await;
    let w = world(&rt, "acme").await;
    rt.set_keys(w.caac, vec![key(Attribute::DisplayEmail)])
        .await
        .unwrap();
    (rt, w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (w, a, b, setting) = {
        let (rt, w) = keyed_by_email(dir.path()).await;
        let (a, _) = rt
            .create_member(w.caac, member(w.channel, "a", Some("x@y.com")))
            .await
            .unwrap();
        let (b, _) = rt
            .create_member(w.caac, member(w.channel, "b", Some("X@Y.com ")))
            .await
            .unwrap();
        assert_eq!(b.profile_id, a.id);
        let setting = rt.setting(w.caac).await.unwrap();
        rt.shutdown().await.unwrap();
        (w, a, b, setting)
    };
    let rt = boot(dir.path(), settings()).await;
    let store = rt.store().clone();
    assert_eq!(store.get_account(w.account).unwrap().name, "acme");
    assert_eq!(store.get_channel(w.channel).unwrap().org_id, w.caac);
    assert_eq!(rt.get_member(w.caac, a.id).await.unwrap(), a);
    assert_eq!(rt.get_member(w.caac, b.id).await.unwrap().profile_id, a.id);
    let after = rt.setting(w.caac).await.unwrap();
    assert_eq!(after.keys, setting.keys);
    assert_eq!(after.last_seq, setting.last_seq);
    let events = store.events_after(after.id, 0, 1000).unwrap();
    assert_eq!(
        events.len() as u64,
        after.last_seq,
        "every event is in the log"
    );
    // The sequence continues after the restart.
    rt.member_op(w.caac, b.id, MemberOp::CancelUnification)
        .await
        .unwrap();
    assert!(rt.setting(w.caac).await.unwrap().last_seq > after.last_seq);
    assert_eq!(rt.get_member(w.caac, b.id).await.unwrap().profile_id, b.id);
    assert_verified(&store);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_member_ids_link_once_they_are_a_key_and_after_a_restart() {
    // The scope does not hold external ids while they are not a key: a dry run and a key
    // change that need them take them from the stored members.
    let dir = tempfile::tempdir().unwrap();
    let (rt, w) = keyed_by_email(dir.path()).await;
    let channel = |name: &str| NewChannel {
        name: name.into(),
        channel_type: name.into(),
        ..NewChannel::default()
    };
    let fb = rt.create_channel(w.caac, channel("fb")).await.unwrap().id;
    let (a, _) = rt
        .create_member(w.caac, member(w.channel, "U1", None))
        .await
        .unwrap();
    let (b, _) = rt
        .create_member(w.caac, member(fb, " U1", None))
        .await
        .unwrap();
    assert_eq!(b.profile_id, b.id);
    let by_external = vec![key(Attribute::ExternalMemberId)];
    let report = rt
        .dry_run(w.caac, KeySet::new(by_external.clone()).unwrap())
        .await
        .unwrap();
    assert_eq!((report.profiles_merged, report.members_moved), (1, 1));
    rt.set_keys(w.caac, by_external).await.unwrap();
    eventually("the key change to finish", || {
        rt.scope_merge_state(w.caac).unwrap()
    })
    .await;
    assert_eq!(rt.get_member(w.caac, b.id).await.unwrap().profile_id, a.id);
    let webchat = rt
        .create_channel(w.caac, channel("webchat"))
        .await
        .unwrap()
        .id;
    let (c, _) = rt
        .create_member(w.caac, member(webchat, "U1", None))
        .await
        .unwrap();
    assert_eq!(c.profile_id, a.id);
    rt.shutdown().await.unwrap();
    drop(rt);
    let rt = boot(dir.path(), settings()).await;
    for id in [b.id, c.id] {
        assert_eq!(rt.get_member(w.caac, id).await.unwrap().profile_id, a.id);
    }
    assert_verified(rt.store());
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_scope_is_restarted_and_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, w) = keyed_by_email(dir.path()).await;
    let (a, _) = rt
        .create_member(w.caac, member(w.channel, "a", Some("k@x.com")))
        .await
        .unwrap();
    let status = rt.scope_status(rt.scope_of(w.caac).unwrap()).unwrap();
    let starts = status.starts.load(std::sync::atomic::Ordering::Acquire);
    // A kill skips post_stop: the actor's state, and its commit lane with it, goes to the
    // supervisor with the event, and the restart must not wait for that lane behind it.
    rt.inject_kill(w.caac).unwrap();
    eventually("the scope to restart", || {
        status.starts.load(std::sync::atomic::Ordering::Acquire) > starts && rt.is_ready()
    })
    .await;
    let (b, _) = rt
        .create_member(w.caac, member(w.channel, "b", Some("k@x.com")))
        .await
        .unwrap();
    assert_eq!(rt.get_member(w.caac, b.id).await.unwrap().profile_id, a.id);
    assert_verified(rt.store());
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_scope_is_restarted_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, w) = keyed_by_email(dir.path()).await;
    let rt = Arc::new(rt);
    let status = rt.scope_status(rt.scope_of(w.caac).unwrap()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let task_rt = rt.clone();
        let (org, channel) = (w.caac, w.channel);
        tasks.push(tokio::spawn(async move {
            let email = format!("p{}@x.com", i % 20);
            task_rt
                .create_member(org, member(channel, &format!("m{i}"), Some(&email)))
                .await
        }));
    }
    // Crash the scope mid-stream, once some writes are durable and others are queued.
    eventually("some writes to be durable", || {
        status.members.load(std::sync::atomic::Ordering::Acquire) >= 20
    })
    .await;
    let starts = status.starts.load(std::sync::atomic::Ordering::Acquire);
    rt.inject_panic(w.caac).unwrap();
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for task in tasks {
        // Every caller gets an answer: a durable member or Unavailable, never a hang.
        match tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap()
        {
            Ok((m, _)) => acknowledged.push(m),
            Err(OpError::Unavailable(_)) => refused += 1,
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert!(acknowledged.len() >= 20);
    eventually("the scope to restart", || {
        status.starts.load(std::sync::atomic::Ordering::Acquire) > starts && rt.is_ready()
    })
    .await;
    assert!(!status.failed.load(std::sync::atomic::Ordering::Acquire));
    for m in &acknowledged {
        let stored = rt.get_member(w.caac, m.id).await.unwrap();
        assert_eq!(stored.external_member_id, m.external_member_id);
    }
    eprintln!(
        "{} acknowledged, {refused} refused by the panic",
        acknowledged.len()
    );
    // Writes work again after the restart.
    rt.create_member(w.caac, member(w.channel, "after", None))
        .await
        .unwrap();
    assert_verified(rt.store());
    rt.shutdown().await.unwrap();
    drop(rt);
    // And everything acknowledged is durable across a process-level restart too.
    let store = Store::open(dir.path()).unwrap();
    let stored = store.read_org(w.caac).unwrap().replay().unwrap();
    for m in &acknowledged {
        assert_eq!(
            stored[&m.id].member().unwrap().external_member_id,
            m.external_member_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_that_keeps_failing_is_marked_failed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(
        dir.path(),
        Settings {
            restart_limit: 2,
            ..settings()
        },
    )
    .await;
    let w = world(&rt, "acme").await;
    let scope = rt.scope_of(w.caac).unwrap();
    let status = rt.scope_status(scope).unwrap();
    // Keep crashing every incarnation of the scope until the restart cap trips.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut injected = 0;
    while !status.failed.load(std::sync::atomic::Ordering::Acquire) {
        assert!(
            Instant::now() < deadline,
            "the scope was never marked failed"
        );
        if rt.inject_panic(w.caac).is_ok() {
            injected += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        injected >= 3,
        "two restarts are allowed, the third failure marks it failed"
    );
    eventually("the scope to be marked failed", || {
        rt.failed_scopes() == vec![scope]
    })
    .await;
    assert!(!rt.is_ready());
    assert!(matches!(
        rt.create_member(w.caac, member(w.channel, "x", None)).await,
        Err(OpError::Unavailable(_))
    ));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_operations_on_one_member_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(boot(dir.path(), settings()).await);
    let w = world(&rt, "acme").await;
    let (m, _) = rt
        .create_member(w.caac, member(w.channel, "m", None))
        .await
        .unwrap();
    let mut senders = Vec::new();
    for field in 0..3 {
        let rt = rt.clone();
        let (org, id) = (w.caac, m.id);
        senders.push(tokio::spawn(async move {
            for i in 0..25 {
                let value = Some(Some(format!("{field}-{i}")));
                let patch = match field {
                    0 => MemberPatch {
                        line_id: value,
                        ..MemberPatch::default()
                    },
                    1 => MemberPatch {
                        connect_id: value,
                        ..MemberPatch::default()
                    },
                    _ => MemberPatch {
                        custom_id: value,
                        ..MemberPatch::default()
                    },
                };
                let after = rt
                    .member_op(org, id, MemberOp::Patch(patch))
                    .await
                    .unwrap()
                    .unwrap();
                let mine = match field {
                    0 => after.line_id,
                    1 => after.connect_id,
                    _ => after.custom_id,
                };
                assert_eq!(
                    mine,
                    Some(format!("{field}-{i}")),
                    "each reply shows its own write"
                );
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let last = rt.get_member(w.caac, m.id).await.unwrap();
    assert_eq!(
        (
            last.line_id.as_deref(),
            last.connect_id.as_deref(),
            last.custom_id.as_deref()
        ),
        (Some("0-24"), Some("1-24"), Some("2-24"))
    );
    assert!(rt.member_merge_state(w.caac, m.id).await.unwrap());
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_creates_make_one_member() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(boot(dir.path(), settings()).await);
    let w = world(&rt, "acme").await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let rt = rt.clone();
            let (org, channel) = (w.caac, w.channel);
            tokio::spawn(async move {
                rt.create_member(org, member(channel, "same", Some("s@x.com")))
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
    assert!(results.iter().all(|(m, _)| m.id == results[0].0.id));
    assert_eq!(rt.list_members(w.caac, 0, 100).await.unwrap().len(), 1);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_members_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings()).await;
    let w = world(&rt, "acme").await;
    let maac = maac_org(&rt, &w).await;
    let before = rt.setting(w.caac).await.unwrap().last_seq;
    for (org, m) in [
        (
            w.caac,
            NewMember {
                external_member_id: "x".into(),
                ..NewMember::default()
            },
        ),
        (w.caac, member(9999, "x", None)),
        (w.caac, member(w.channel, "  ", None)),
        (maac, member(w.channel, "x", None)),
    ] {
        assert!(matches!(
            rt.create_member(org, m).await,
            Err(OpError::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        rt.create_org(w.account, Source::Caac, "again", None).await,
        Err(OpError::Conflict {
            code: Code::OrganizationExists,
            ..
        })
    ));
    assert!(rt.list_members(w.caac, 0, 10).await.unwrap().is_empty());
    assert_eq!(rt.setting(w.caac).await.unwrap().last_seq, before);
    rt.shutdown().await.unwrap();
}

/// Imports `n` members whose emails overlap in pairs and whose custom ids overlap in fours.
async fn populate(rt: &Runtime, w: &World, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let members = chunk
            .iter()
            .map(|i| NewMember {
                custom_id: Some(format!("c{}", i / 4)),
                ..member(
                    w.channel,
                    &format!("m{i}"),
                    Some(&format!("p{}@x.com", i / 2)),
                )
            })
            .collect();
        for r in rt.import_members(w.caac, members).await.unwrap() {
            r.unwrap();
        }
    }
}

/// Boots a scope keyed by email holding 3000 imported members, subscribed to its events.
async fn keyed_scope(dir: &Path) -> (Runtime, World, Subscription) {
    let (rt, w) = keyed_by_email(dir).await;
    populate(&rt, &w, 3000).await;
    let events = rt.hub().subscribe(rt.scope_of(w.caac).unwrap());
    (rt, w, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_change_reports_progress_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, w, mut events) = keyed_scope(dir.path()).await;
    rt.set_keys(
        w.caac,
        vec![key(Attribute::DisplayEmail), key(Attribute::CustomId)],
    )
    .await
    .unwrap();
    // Reads keep being served while the job runs.
    let probe = rt.list_members(w.caac, 0, 1).await.unwrap()[0].id;
    rt.get_member(w.caac, probe).await.unwrap();
    let mut progress = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .unwrap()
            .unwrap();
        if let EventBody::MergeProgress {
            done,
            total,
            is_finished,
        } = event.body
        {
            progress.push((done, total));
            if is_finished {
                break;
            }
        }
    }
    assert!(progress.len() > 3, "progress in chunks: {progress:?}");
    assert!(progress.windows(2).all(|p| p[0].0 <= p[1].0));
    let (done, total) = *progress.last().unwrap();
    assert_eq!(
        (done, total),
        (1500, 1500),
        "half the members move into the other pair's profile"
    );
    eventually("merge state finished", || {
        rt.scope_merge_state(w.caac).unwrap()
    })
    .await;
    assert_eq!(rt.setting(w.caac).await.unwrap().pending_job, None);
    assert_verified(rt.store());
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_midway_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, w, mut events) = keyed_scope(dir.path()).await;
    rt.set_keys(w.caac, vec![key(Attribute::CustomId)])
        .await
        .unwrap();
    // Kill the scope after the first durable chunk.
    loop {
        let event = events.recv().await.unwrap();
        if let EventBody::MergeProgress { done, .. } = event.body
            && done > 0
        {
            rt.inject_panic(w.caac).unwrap();
            break;
        }
    }
    eventually("the job to resume and finish", || {
        rt.is_ready() && rt.scope_merge_state(w.caac).unwrap()
    })
    .await;
    let setting = rt.setting(w.caac).await.unwrap();
    assert_eq!(setting.pending_job, None);
    assert_eq!(setting.keys.len(), 1);
    assert_verified(rt.store());
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrate_and_disconnect_reshape_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings()).await;
    let w = world(&rt, "acme").await;
    let maac = maac_org(&rt, &w).await;
    let (chat, _) = rt
        .create_member(w.caac, member(w.channel, "c", Some("k@x.com")))
        .await
        .unwrap();
    let (mkt, _) = rt
        .create_member(
            maac,
            NewMember {
                external_member_id: "m".into(),
                display_email: Some("K@x.com".into()),
                ..NewMember::default()
            },
        )
        .await
        .unwrap();
    assert_ne!(mkt.profile_id, chat.profile_id);
    let joined = rt
        .integrate(w.account, vec![key(Attribute::DisplayEmail)])
        .await
        .unwrap();
    assert_eq!(joined.org_ids.len(), 2);
    assert!(matches!(
        rt.integrate(w.account, vec![]).await,
        Err(OpError::Conflict {
            code: Code::CdhAlreadyConnected,
            ..
        })
    ));
    eventually("integrate to finish", || {
        rt.is_ready() && rt.scope_merge_state(w.caac).unwrap()
    })
    .await;
    assert_eq!(
        rt.get_member(maac, mkt.id).await.unwrap().profile_id,
        chat.id
    );
    assert_eq!(rt.scope_of(maac).unwrap(), rt.scope_of(w.caac).unwrap());
    assert_verified(rt.store());

    rt.disconnect(w.account).await.unwrap();
    assert!(matches!(
        rt.disconnect(w.account).await,
        Err(OpError::Conflict {
            code: Code::CdhNotConnected,
            ..
        })
    ));
    eventually("disconnect to finish", || {
        rt.is_ready()
            && rt.scope_merge_state(w.caac).unwrap()
            && rt.scope_merge_state(maac).unwrap()
    })
    .await;
    assert_ne!(rt.scope_of(maac).unwrap(), rt.scope_of(w.caac).unwrap());
    assert_eq!(
        rt.get_member(maac, mkt.id).await.unwrap().profile_id,
        mkt.id
    );
    let split = rt.setting(maac).await.unwrap();
    assert_eq!(split.keys[0].attribute, "display_email");
    assert_verified(rt.store());
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_beyond_the_bound_is_refused_as_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(
        boot(
            dir.path(),
            Settings {
                max_in_flight_per_scope: 4,
                ..settings()
            },
        )
        .await,
    );
    let w = world(&rt, "acme").await;
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let rt = rt.clone();
            let (org, channel) = (w.caac, w.channel);
            tokio::spawn(async move {
                rt.create_member(org, member(channel, &format!("o{i}"), None))
                    .await
            })
        })
        .collect();
    let mut overloaded = 0;
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(OpError::Overloaded) => overloaded += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(overloaded > 0, "64 concurrent creates against a bound of 4");
    assert_eq!(
        rt.list_members(w.caac, 0, 1000).await.unwrap().len(),
        created
    );
    rt.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_event_log_reads_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings()).await;
    let w = world(&rt, "acme").await;
    let scope = rt.scope_of(w.caac).unwrap();
    let log = rt.event_log();
    assert_eq!(log.newest_seq(scope).await.unwrap(), None);
    assert!(log.after(scope, 0, 10).await.unwrap().is_empty());
    for ext in ["a", "b", "c"] {
        rt.create_member(w.caac, member(w.channel, ext, None))
            .await
            .unwrap();
    }
    let store = rt.store();
    let all = log.after(scope, 0, 1000).await.unwrap();
    assert_eq!(all, store.events_after(scope, 0, 1000).unwrap());
    assert!(!all.is_empty());
    let oldest = log.oldest_seq(scope).await.unwrap();
    let newest = log.newest_seq(scope).await.unwrap();
    assert_eq!(oldest, store.oldest_event_seq(scope).unwrap());
    assert_eq!(newest, store.last_event_seq(scope).unwrap());
    assert_eq!(oldest, all.first().map(|e| e.seq));
    assert_eq!(newest, all.last().map(|e| e.seq));
    let tail = log.after(scope, all[0].seq, 1).await.unwrap();
    assert_eq!(tail, all[1..2].to_vec());
    rt.shutdown().await.unwrap();
}
