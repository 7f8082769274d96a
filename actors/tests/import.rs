//! Bulk import as a durable job, on real sled stores in temp dirs: per-line errors, idempotent
//! re-import, merge state and progress events, and exactly-once resumption after a restart or
//! a scope failure mid-import.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{World, assert_verified, key};
use futures_util::stream;
use unify_actors::engine::Attribute;
use unify_actors::error::OpError;
use unify_actors::events::EventBody;
use unify_actors::runtime::Runtime;
use unify_actors::settings::Settings;
use unify_storage::{Id, ImportJob, ImportStatus, MemberLog, Source};

/// Settings whose import chunks (and job chunks) hold `chunk` lines.
fn settings(chunk: usize) -> Settings {
    Settings {
        job_chunk: chunk,
        import_chunk: chunk,
        call_timeout: Duration::from_secs(30),
        ..Settings::default()
    }
}

/// The store lives in `dir/store`, so spools go to `dir/imports`.
async fn boot(dir: &Path, settings: Settings) -> Runtime {
    common::boot(&dir.join("store"), settings).await
}

/// The common world, keyed by `display_email`.
async fn world(rt: &Runtime) -> World {
    let w = common::world(rt, "acme").await;
    rt.set_keys(w.caac, vec![key(Attribute::DisplayEmail)])
        .await
        .unwrap();
    w
}

fn body(text: &str) -> impl futures_util::Stream<Item = Result<Vec<u8>, String>> + Unpin + Send {
    let pieces: Vec<Result<Vec<u8>, String>> =
        text.as_bytes().chunks(13).map(|c| Ok(c.to_vec())).collect();
    stream::iter(pieces)
}

/// Starts an import of `n` lines and waits until some are applied.
async fn import_under_way(rt: &Runtime, w: &World, n: usize) -> Id {
    let job_id = rt
        .start_import(w.caac, body(&lines(w.channel, n)))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while rt.import_status(w.caac, job_id).unwrap().done == 0 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    job_id
}

/// Polls the job until it is no longer running.
async fn finished(rt: &Runtime, org: Id, job: Id) -> ImportJob {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = rt.import_status(org, job).unwrap();
        if status.status != ImportStatus::Running {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "import {job} did not finish: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn lines(channel: Id, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"channel_id": {channel}, "external_member_id": "m{i}", "display_email": "p{}@x.com"}}"#,
                i / 3
            ) + "\n"
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_reports_every_refused_line_and_unifies_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings(2)).await;
    let w = world(&rt).await;
    let c = w.channel;
    let mut events = rt.hub().subscribe(rt.scope_of(w.caac).unwrap());
    let text = format!(
        concat!(
            r#"{{"channel_id": {c}, "external_member_id": "a", "display_email": "A@x.com", "last_message_at": "2026-01-31T12:25:27Z"}}"#,
            "\n\n",
            r#"{{"channel_id": {c}, "external_member_id": "b""#,
            "\n",
            r#"{{"channel_id": {c}, "external_member_id": "  "}}"#,
            "\n   \n",
            r#"{{"channel_id": {c}, "external_member_id": "c", "nickname": "x"}}"#,
            "\n",
            r#"{{"channel_id": 9999, "external_member_id": "d"}}"#,
            "\n",
            r#"{{"external_member_id": "e"}}"#,
            "\n",
            r#"{{"channel_id": {c}, "external_member_id": "f", "display_email": " a@X.com", "custom_id": null}}"#,
            "\n",
            r#"{{"channel_id": {c}, "external_member_id": "a", "display_email": "other@x.com"}}"#,
            "\n",
            r#"{{"channel_id": {c}, "external_member_id": "g", "last_message_at": "soon"}}"#,
        ),
        c = c
    );
    let job_id = rt.start_import(w.caac, body(&text)).await.unwrap();
    let job = finished(&rt, w.caac, job_id).await;
    assert_eq!(job.status, ImportStatus::Finished);
    assert_eq!((job.total, job.done, job.failed), (9, 3, 6), "{job:?}");
    let codes: Vec<(u64, &str)> = job
        .errors
        .iter()
        .map(|e| (e.line, e.code.as_str()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (3, "MALFORMED_JSON"),
            (4, "EMPTY_EXTERNAL_ID"),
            (6, "INVALID_ARGUMENT"),
            (7, "INVALID_ARGUMENT"),
            (8, "INVALID_ARGUMENT"),
            (11, "INVALID_ARGUMENT"),
        ]
    );
    let members = rt.list_members(w.caac, 0, 100).await.unwrap();
    assert_eq!(members.len(), 2, "a repeated identity is created once");
    let (a, f) = (&members[0], &members[1]);
    assert_eq!(a.external_member_id, "a");
    assert_eq!(
        a.display_email.as_deref(),
        Some("A@x.com"),
        "the first line wins"
    );
    assert!(a.last_message_at.is_some());
    assert_eq!(f.profile_id, a.id, "emails link after normalization");
    // The job record says finished as soon as its last chunk is durable; the driver then
    // lowers the scope's import count.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rt.scope_merge_state(w.caac).unwrap() {
        assert!(Instant::now() < deadline, "merge state never finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !dir.path()
            .join("imports")
            .join(format!("{job_id}.ndjson"))
            .exists()
    );
    let mut progress = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let EventBody::MergeProgress {
            done,
            total,
            is_finished,
        } = event.body
            && total == 9
        {
            progress.push((done, total, is_finished));
        }
    }
    assert_eq!(progress.last(), Some(&(9, 9, true)), "{progress:?}");
    assert!(
        progress.len() >= 2,
        "one progress event per chunk: {progress:?}"
    );
    assert!(progress[..progress.len() - 1].iter().all(|p| !p.2));
    rt.shutdown().await.unwrap();
    assert_verified(rt.store());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_the_same_body_twice_creates_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings(50)).await;
    let w = world(&rt).await;
    let text = lines(w.channel, 300);
    let first = rt.start_import(w.caac, body(&text)).await.unwrap();
    let first = finished(&rt, w.caac, first).await;
    let second = rt.start_import(w.caac, body(&text)).await.unwrap();
    let second = finished(&rt, w.caac, second).await;
    assert_eq!((first.done, first.failed), (300, 0));
    assert_eq!((second.done, second.failed), (300, 0));
    assert_eq!(rt.list_members(w.caac, 0, 1000).await.unwrap().len(), 300);
    rt.shutdown().await.unwrap();
    assert_verified(rt.store());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_and_single_creates_find_each_others_identities() {
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings(50)).await;
    let w = world(&rt).await;
    let new = |ext: &str| unify_actors::ops::NewMember {
        channel_id: Some(w.channel),
        external_member_id: ext.into(),
        ..Default::default()
    };
    // Created before the scope tracks the org's identities (the first import does).
    let (before, created) = rt.create_member(w.caac, new("m0")).await.unwrap();
    assert!(created);
    let job = rt
        .start_import(w.caac, body(&lines(w.channel, 100)))
        .await
        .unwrap();
    assert_eq!(finished(&rt, w.caac, job).await.done, 100);
    assert_eq!(rt.list_members(w.caac, 0, 1000).await.unwrap().len(), 100);
    // Tracked now: an imported identity is found, a new one is created once.
    let (again, created) = rt.create_member(w.caac, new("m0")).await.unwrap();
    assert_eq!((again.id, created), (before.id, false));
    let (_, created) = rt.create_member(w.caac, new("m50")).await.unwrap();
    assert!(!created);
    let (after, created) = rt.create_member(w.caac, new("late")).await.unwrap();
    assert!(created);
    let text = format!(
        "{}{}",
        lines(w.channel, 100),
        format_args!(
            r#"{{"channel_id": {}, "external_member_id": "late"}}"#,
            w.channel
        )
    );
    let job = rt.start_import(w.caac, body(&text)).await.unwrap();
    assert_eq!(finished(&rt, w.caac, job).await.done, 101);
    let members = rt.list_members(w.caac, 0, 1000).await.unwrap();
    assert_eq!(members.len(), 101);
    assert!(members.iter().any(|m| m.id == after.id));
    rt.shutdown().await.unwrap();
    assert_verified(rt.store());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_errors_name_the_org_job_and_body() {
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings(50)).await;
    let w = world(&rt).await;
    assert!(matches!(
        rt.start_import(9999, body("{}")).await,
        Err(OpError::NotFound(_))
    ));
    let failing = stream::iter(vec![
        Ok(b"{}\n".to_vec()),
        Err("connection reset".to_owned()),
    ]);
    assert!(matches!(
        rt.start_import(w.caac, failing).await,
        Err(OpError::InvalidArgument(_))
    ));
    let maac = rt
        .create_org(w.account, Source::Maac, "mkt", None)
        .await
        .unwrap()
        .id;
    let job = rt.start_import(w.caac, body("")).await.unwrap();
    assert!(matches!(
        rt.import_status(maac, job),
        Err(OpError::NotFound(_))
    ));
    let job = finished(&rt, w.caac, job).await;
    assert_eq!((job.total, job.done, job.failed), (0, 0, 0));
    assert!(matches!(
        rt.import_status(w.caac, job.id + 100),
        Err(OpError::NotFound(_))
    ));
    rt.shutdown().await.unwrap();
}

/// Asserts that the org holds `m0..m{n}` exactly once each.
async fn assert_each_member_once(rt: &Runtime, org: Id, n: usize) {
    let members = rt.list_members(org, 0, n + 10).await.unwrap();
    let ids: HashSet<&str> = members
        .iter()
        .map(|m| m.external_member_id.as_str())
        .collect();
    assert_eq!(members.len(), n);
    assert_eq!(ids.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_stopped_midway_resumes_and_applies_every_line_once() {
    let n = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let (org, job_id) = {
        let rt = boot(dir.path(), settings(250)).await;
        let w = world(&rt).await;
        let job_id = rt
            .start_import(w.caac, body(&lines(w.channel, n)))
            .await
            .unwrap();
        assert!(!rt.scope_merge_state(w.caac).unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        while rt.import_status(w.caac, job_id).unwrap().done == 0 {
            assert!(Instant::now() < deadline, "no progress");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        rt.shutdown().await.unwrap();
        // What the stopped runtime left in the store.
        let job = rt.store().get_import_job(job_id).unwrap();
        assert_eq!(job.status, ImportStatus::Running, "stopped midway: {job:?}");
        assert!(job.done < n as u64);
        let stored = rt.store().read_org(w.caac).unwrap().replay().unwrap();
        assert_eq!(
            stored.len() as u64,
            job.done,
            "members and the job record are written together"
        );
        (w.caac, job_id)
    };
    let rt = boot(dir.path(), settings(250)).await;
    let job = finished(&rt, org, job_id).await;
    assert_eq!((job.done, job.failed), (n as u64, 0), "{job:?}");
    assert_each_member_once(&rt, org, n).await;
    rt.shutdown().await.unwrap();
    assert_verified(rt.store());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_survives_a_scope_failure_midway() {
    let n = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings(100)).await;
    let w = world(&rt).await;
    let job_id = import_under_way(&rt, &w, n).await;
    rt.inject_panic(w.caac).unwrap();
    let job = finished(&rt, w.caac, job_id).await;
    assert_eq!((job.done, job.failed), (n as u64, 0), "{job:?}");
    assert_each_member_once(&rt, w.caac, n).await;
    rt.shutdown().await.unwrap();
    assert_verified(rt.store());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_failed_while_its_scope_runs_applies_no_chunk_after_it() {
    // The scope holds a running job ahead of the store; a failure recorded beside it would
    // leave the job running there, and the next chunk would be applied over it.
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings(50)).await;
    let w = world(&rt).await;
    let n = 20_000;
    let job_id = import_under_way(&rt, &w, n).await;
    rt.inject_import_failure(w.caac, job_id, "given up by the test")
        .await
        .unwrap();
    let job = finished(&rt, w.caac, job_id).await;
    assert_eq!(job.status, ImportStatus::Failed, "{job:?}");
    assert_eq!(job.failure.as_deref(), Some("given up by the test"));
    assert!(job.done < n as u64, "{job:?}");
    rt.shutdown().await.unwrap();
    drop(rt);
    // After a restart the job is still failed, not resumed, and holds exactly its members.
    let rt = boot(dir.path(), settings(50)).await;
    let again = rt.import_status(w.caac, job_id).unwrap();
    assert_eq!((again.status, again.done), (ImportStatus::Failed, job.done));
    let members = rt.store().read_org(w.caac).unwrap().replay().unwrap();
    assert_eq!(members.len() as u64, job.done);
    assert_verified(rt.store());
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_into_a_scope_marked_failed_ends_failed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(
        dir.path(),
        Settings {
            restart_limit: 1,
            ..settings(50)
        },
    )
    .await;
    let w = world(&rt).await;
    let status = rt.scope_status(rt.scope_of(w.caac).unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !status.failed.load(std::sync::atomic::Ordering::Acquire) {
        assert!(
            Instant::now() < deadline,
            "the scope was never marked failed"
        );
        let _ = rt.inject_panic(w.caac);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let job = rt
        .start_import(w.caac, body(&lines(w.channel, 100)))
        .await
        .unwrap();
    let job = finished(&rt, w.caac, job).await;
    assert_eq!(job.status, ImportStatus::Failed, "{job:?}");
    assert!(job.failure.unwrap().contains("failed"));
}
