//! The CDH bridge against a real HTTP server on 127.0.0.1:0 standing in for the CDH, with the
//! runtime on real sled stores in temp dirs: ordering, retries, restarts, dead letters,
//! isolation of scopes and of member operations from a hanging CDH.

mod common;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{boot, key};
use futures_util::StreamExt;
use serde_json::Value;
use unify_actors::engine::Attribute;
use unify_actors::ops::NewMember;
use unify_actors::runtime::Runtime;
use unify_actors::settings::{CdhSettings, Settings};
use unify_storage::{Id, Source};

const TOKEN: &str = "cdh-test-token";

// ------------------------------------------------------------------------------------------
// The stand-in CDH.

/// How the stand-in CDH answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// 200, after recording the batch as accepted.
    Accept,
    /// This status, without accepting.
    Status(u16),
    /// Never answers (the bridge times out).
    Hang,
    /// Accepts the batch, then never answers: the bridge must resend the same batch.
    AcceptThenHang,
}

/// One request the CDH received.
#[derive(Debug, Clone)]
struct Received {
    key: String,
    auth: Option<String>,
    scope: u64,
    seqs: Vec<u64>,
    events: Vec<Value>,
    accepted: bool,
}

#[derive(Debug)]
struct CdhState {
    received: Vec<Received>,
    mode: Mode,
    /// Modes for some scopes, overriding `mode`.
    scope_modes: HashMap<u64, Mode>,
    /// Batches containing this seq are answered 400.
    reject_seq: Option<u64>,
    /// The next this-many accepting answers hang after accepting.
    lose_responses: usize,
    /// Time taken before answering.
    delay: Duration,
}

type Shared = Arc<Mutex<CdhState>>;

struct FakeCdh {
    state: Shared,
    url: String,
}

impl FakeCdh {
    async fn start() -> FakeCdh {
        let state: Shared = Arc::new(Mutex::new(CdhState {
            received: Vec::new(),
            mode: Mode::Accept,
            scope_modes: HashMap::new(),
            reject_seq: None,
            lose_responses: 0,
            delay: Duration::ZERO,
        }));
        let app = axum::Router::new()
            .route("/v1/unify-events", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeCdh { state, url }
    }

    fn with<T>(&self, f: impl FnOnce(&mut CdhState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn set_mode(&self, mode: Mode) {
        self.with(|s| s.mode = mode);
    }

    fn received(&self) -> Vec<Received> {
        self.with(|s| s.received.clone())
    }

    fn requests(&self) -> usize {
        self.with(|s| s.received.len())
    }

    /// Returns the seqs the CDH accepted, in order, counting a batch once per idempotency
    /// key (what a receiver that honours the key stores).
    fn delivered(&self, scope: u64) -> Vec<u64> {
        let mut keys = HashSet::new();
        self.received()
            .into_iter()
            .filter(|r| r.accepted && r.scope == scope && keys.insert(r.key.clone()))
            .flat_map(|r| r.seqs)
            .collect()
    }

    /// Checks every request against the contract: bearer token, an idempotency key naming
    /// its scope and first and last seq, seqs strictly increasing within the batch, events
    /// matching the body's scope; and that a seq sent more than once was always sent in the
    /// very same batch under the same key.
    fn check_contract(&self, batch_max: usize) {
        let mut batch_of_key: HashMap<String, Vec<u64>> = HashMap::new();
        let mut key_of_seq: HashMap<(u64, u64), String> = HashMap::new();
        for r in self.received() {
            assert_eq!(r.auth.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
            assert!(!r.seqs.is_empty() && r.seqs.len() <= batch_max, "{r:?}");
            assert!(r.seqs.windows(2).all(|w| w[0] < w[1]), "{r:?}");
            let expected_key = format!("{}-{}-{}", r.scope, r.seqs[0], r.seqs.last().unwrap());
            assert_eq!(r.key, expected_key);
            for e in &r.events {
                assert_eq!(e["unify_scope_id"].as_u64(), Some(r.scope), "{e}");
            }
            let batch = batch_of_key.entry(r.key.clone()).or_insert(r.seqs.clone());
            assert_eq!(*batch, r.seqs, "a resend carries the same batch");
            for seq in &r.seqs {
                let key = key_of_seq.entry((r.scope, *seq)).or_insert(r.key.clone());
                assert_eq!(*key, r.key, "seq {seq} was sent under two keys");
            }
        }
    }
}

async fn receive(
    State(state): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let delay = state.lock().unwrap().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let scope = body["unify_scope_id"].as_u64().expect("unify_scope_id");
    let events = body["events"].as_array().expect("events").clone();
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    let mode = {
        let mut s = state.lock().unwrap();
        let mut mode = *s.scope_modes.get(&scope).unwrap_or(&s.mode);
        if s.reject_seq.is_some_and(|seq| seqs.contains(&seq)) {
            mode = Mode::Status(400);
        }
        if mode == Mode::Accept && s.lose_responses > 0 {
            s.lose_responses -= 1;
            mode = Mode::AcceptThenHang;
        }
        s.received.push(Received {
            key: header("idempotency-key").unwrap_or_default(),
            auth: header("authorization"),
            scope,
            seqs,
            events,
            accepted: matches!(mode, Mode::Accept | Mode::AcceptThenHang),
        });
        mode
    };
    match mode {
        Mode::Accept => StatusCode::OK,
        Mode::Status(code) => StatusCode::from_u16(code).unwrap(),
        Mode::Hang | Mode::AcceptThenHang => std::future::pending().await,
    }
}

// ------------------------------------------------------------------------------------------
// The engine side.

fn settings(url: &str, timeout_ms: u64, batch_max: usize) -> Settings {
    Settings {
        call_timeout: Duration::from_secs(30),
        cdh: Some(CdhSettings {
            url: url.to_owned(),
            token: Some(TOKEN.to_owned()),
            timeout: Duration::from_millis(timeout_ms),
            batch_max,
            max_attempts: 3,
            retry_base: Duration::from_millis(10),
            retry_max: Duration::from_millis(200),
        }),
        ..Settings::default()
    }
}

/// Polls `condition` until it holds or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An account whose caac and maac orgs are CDH-connected.
struct World {
    account: Id,
    caac: Id,
    channel: Id,
    /// The account scope.
    scope: Id,
    /// The scope's last seq before it was connected: every later event goes to the CDH.
    connected_after: u64,
}

async fn connected_world(rt: &Runtime, name: &str) -> World {
    let common::World {
        account,
        caac,
        channel,
    } = common::world(rt, name).await;
    rt.create_org(account, Source::Maac, "mkt", None)
        .await
        .unwrap();
    let connected_after = rt.setting(caac).await.unwrap().last_seq;
    let joined = rt
        .integrate(account, vec![key(Attribute::DisplayEmail)])
        .await
        .unwrap();
    eventually("the integration to finish", || async {
        rt.is_ready() && rt.scope_merge_state(caac).unwrap()
    })
    .await;
    World {
        account,
        caac,
        channel,
        scope: joined.id,
        connected_after,
    }
}

/// Creates members `from..to` concurrently (pairs share an email, so profiles merge); each
/// creation must succeed.
async fn create_members(rt: &Runtime, w: &World, from: usize, to: usize) {
    let results: Vec<_> = futures_util::stream::iter(from..to)
        .map(|i| {
            rt.create_member(
                w.caac,
                NewMember {
                    channel_id: Some(w.channel),
                    external_member_id: format!("ext-{i}"),
                    display_email: Some(format!("user{}@example.com", i / 2)),
                    ..NewMember::default()
                },
            )
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for r in results {
        r.expect("member created");
    }
}

/// Returns the seqs of the scope's events since it was connected, from its event log.
fn logged_seqs(rt: &Runtime, w: &World) -> Vec<u64> {
    rt.store()
        .events_after(w.scope, w.connected_after, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.seq)
        .collect()
}

/// Waits until the scope's outbox is empty (the integration's events are delivered).
async fn drain(rt: &Runtime, w: &World) {
    eventually("the outbox to drain", || async {
        rt.store().outbox_len(w.scope).unwrap() == 0
    })
    .await;
}

/// Waits until the outbox is empty and the CDH holds every logged event exactly once, in
/// order, and checks the delivered events are the logged ones.
async fn assert_all_delivered(rt: &Runtime, cdh: &FakeCdh, w: &World) {
    eventually("every event to reach the cdh", || async {
        rt.store().outbox_len(w.scope).unwrap() == 0
            && cdh.delivered(w.scope).len() >= logged_seqs(rt, w).len()
    })
    .await;
    let logged = logged_seqs(rt, w);
    assert_eq!(cdh.delivered(w.scope), logged, "in order, none missing");
    let log: HashMap<u64, Value> = rt
        .store()
        .events_after(w.scope, w.connected_after, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, serde_json::from_str(&e.payload).unwrap()))
        .collect();
    for r in cdh.received().iter().filter(|r| r.scope == w.scope) {
        for (seq, event) in r.seqs.iter().zip(&r.events) {
            assert_eq!(&log[seq], event, "the CDH receives the websocket frame");
        }
    }
}

// ------------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_events_arrive_in_order_in_batches() {
    let cdh = FakeCdh::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings(&cdh.url, 5000, 50)).await;
    let w = connected_world(&rt, "acme").await;
    create_members(&rt, &w, 0, 1500).await;
    assert_all_delivered(&rt, &cdh, &w).await;
    let events = logged_seqs(&rt, &w).len();
    assert!(events >= 2000, "thousands of events: {events}");
    assert!(cdh.requests() >= events / 50, "batches of at most 50");
    assert!(
        cdh.received().iter().any(|r| r.seqs.len() == 50),
        "full batches are used"
    );
    cdh.check_contract(50);
    let state = rt.sync_state(w.account).await.unwrap();
    assert_eq!((state.pending, state.dead), (0, 0));
    assert_eq!(state.delivered, events as u64);
    assert_eq!(state.last_error, None);
    assert!(state.last_delivered_at.is_some());
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cdh_gets_everything_in_order_once_it_recovers() {
    let cdh = FakeCdh::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings(&cdh.url, 300, 20)).await;
    let w = connected_world(&rt, "acme").await;
    drain(&rt, &w).await;
    let delivered = rt.sync_state(w.account).await.unwrap().delivered;

    cdh.set_mode(Mode::Status(500));
    let seen = cdh.requests();
    create_members(&rt, &w, 0, 100).await;
    eventually("500s to be retried", || async {
        cdh.requests() >= seen + 5
            && rt
                .sync_state(w.account)
                .await
                .unwrap()
                .last_error
                .is_some_and(|e| e.contains("500"))
    })
    .await;
    let state = rt.sync_state(w.account).await.unwrap();
    assert!(state.pending > 0 && state.dead == 0, "{state:?}");

    // Past the timeout, then accepted but the answer lost, then throttled.
    cdh.set_mode(Mode::Hang);
    create_members(&rt, &w, 100, 200).await;
    eventually("timeouts to be retried", || async {
        rt.sync_state(w.account)
            .await
            .unwrap()
            .last_error
            .is_some_and(|e| e.contains("timed out"))
    })
    .await;
    let seen = cdh.requests();
    eventually("a second timeout", || async { cdh.requests() >= seen + 2 }).await;
    cdh.with(|s| {
        s.lose_responses = 3;
        s.mode = Mode::Status(429);
    });
    let seen = cdh.requests();
    eventually("429s to be retried", || async {
        cdh.requests() >= seen + 3
    })
    .await;
    assert_eq!(
        rt.sync_state(w.account).await.unwrap().delivered,
        delivered,
        "nothing counts as delivered before a 2xx"
    );

    cdh.set_mode(Mode::Accept);
    create_members(&rt, &w, 200, 300).await;
    assert_all_delivered(&rt, &cdh, &w).await;
    cdh.check_contract(20);
    let accepted: Vec<_> = cdh.received().into_iter().filter(|r| r.accepted).collect();
    let keys: HashSet<_> = accepted.iter().map(|r| r.key.clone()).collect();
    assert!(
        accepted.len() >= keys.len() + 3,
        "lost answers were resent under the same key"
    );
    let state = rt.sync_state(w.account).await.unwrap();
    assert_eq!(state.delivered, logged_seqs(&rt, &w).len() as u64);
    assert_eq!((state.pending, state.dead, state.last_error), (0, 0, None));
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_delivery_loses_nothing_and_keeps_order() {
    let cdh = FakeCdh::start().await;
    cdh.with(|s| s.delay = Duration::from_millis(50));
    let dir = tempfile::tempdir().unwrap();
    let w = {
        let rt = boot(dir.path(), settings(&cdh.url, 5000, 10)).await;
        let w = connected_world(&rt, "acme").await;
        create_members(&rt, &w, 0, 600).await;
        eventually("delivery to be under way", || async {
            cdh.delivered(w.scope).len() >= 50
        })
        .await;
        rt.shutdown().await.unwrap();
        let left = rt.store().outbox_len(w.scope).unwrap();
        assert!(left > 0, "the restart happens mid-delivery");
        w
    };
    let before = cdh.delivered(w.scope).len();
    let rt = boot(dir.path(), settings(&cdh.url, 5000, 10)).await;
    assert_all_delivered(&rt, &cdh, &w).await;
    assert!(cdh.delivered(w.scope).len() > before);
    cdh.check_contract(10);
    let state = rt.sync_state(w.account).await.unwrap();
    assert_eq!(state.delivered, logged_seqs(&rt, &w).len() as u64);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_batch_is_dead_lettered_and_requeued_by_retry() {
    let cdh = FakeCdh::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings(&cdh.url, 5000, 10)).await;
    let w = connected_world(&rt, "acme").await;
    drain(&rt, &w).await;
    let first = rt.setting(w.caac).await.unwrap().last_seq + 1;
    cdh.with(|s| s.reject_seq = Some(first));
    create_members(&rt, &w, 0, 40).await;

    eventually("the rejected batch to be dead-lettered", || async {
        let s = rt.sync_state(w.account).await.unwrap();
        s.dead > 0 && s.pending == 0
    })
    .await;
    let state = rt.sync_state(w.account).await.unwrap();
    let logged = logged_seqs(&rt, &w);
    assert_eq!(state.dead + state.delivered, logged.len() as u64);
    assert!(
        state.dead <= 10 && state.delivered > 0,
        "later batches went on: {state:?}"
    );
    assert!(
        state
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("400")),
        "{state:?}"
    );
    let rejected: Vec<_> = cdh
        .received()
        .into_iter()
        .filter(|r| r.seqs.contains(&first))
        .collect();
    assert_eq!(rejected.len(), 3, "max_attempts permanent rejections");
    let dead = rt.store().dead_entries(w.scope).unwrap();
    assert!(
        dead.iter()
            .all(|e| e.attempts == 3 && e.last_error.is_some())
    );
    assert_eq!(dead[0].seq, first);

    cdh.with(|s| s.reject_seq = None);
    assert_eq!(rt.sync_retry(w.account).await.unwrap(), state.dead);
    assert_eq!(
        rt.sync_retry(w.account).await.unwrap(),
        0,
        "nothing left to requeue"
    );
    eventually("the requeued batch to be delivered", || async {
        let s = rt.sync_state(w.account).await.unwrap();
        s.pending == 0 && s.dead == 0 && s.delivered == logged.len() as u64
    })
    .await;
    let state = rt.sync_state(w.account).await.unwrap();
    assert_eq!(state.last_error, None);
    let mut delivered = cdh.delivered(w.scope);
    let requeued = delivered.split_off(delivered.len() - dead.len());
    assert_eq!(
        requeued,
        dead.iter().map(|e| e.seq).collect::<Vec<_>>(),
        "requeued in seq order"
    );
    assert!(delivered.windows(2).all(|p| p[0] < p[1]));
    cdh.check_contract(10);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_cdh_blocks_neither_member_operations_nor_shutdown() {
    let cdh = FakeCdh::start().await;
    cdh.set_mode(Mode::Hang);
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings(&cdh.url, 120_000, 100)).await;
    let w = connected_world(&rt, "acme").await;
    eventually("the bridge to be stuck on the cdh", || async {
        cdh.requests() >= 1
    })
    .await;
    let creates = async {
        for i in 0..200 {
            rt.create_member(
                w.caac,
                NewMember {
                    channel_id: Some(w.channel),
                    external_member_id: format!("ext-{i}"),
                    display_email: Some(format!("user{i}@example.com")),
                    ..NewMember::default()
                },
            )
            .await
            .expect("member created while the cdh hangs");
        }
    };
    tokio::time::timeout(Duration::from_secs(60), creates)
        .await
        .expect("creates are not held up by the cdh");
    assert_eq!(rt.list_members(w.caac, 0, 1000).await.unwrap().len(), 200);
    assert_eq!(cdh.requests(), 1, "one request, still hanging");
    let state = rt.sync_state(w.account).await.unwrap();
    assert_eq!(state.pending, logged_seqs(&rt, &w).len() as u64);
    tokio::time::timeout(Duration::from_secs(30), rt.shutdown())
        .await
        .expect("shutdown does not wait for the cdh")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_scope_does_not_hold_up_another() {
    let cdh = FakeCdh::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings(&cdh.url, 120_000, 20)).await;
    let stuck = connected_world(&rt, "stuck").await;
    let fine = connected_world(&rt, "fine").await;
    cdh.with(|s| {
        s.scope_modes.insert(stuck.scope, Mode::Hang);
    });
    create_members(&rt, &stuck, 0, 50).await;
    create_members(&rt, &fine, 0, 200).await;
    assert_all_delivered(&rt, &cdh, &fine).await;
    assert!(rt.store().outbox_len(stuck.scope).unwrap() > 0);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_disconnect_the_outbox_is_still_delivered_and_nothing_new_is_queued() {
    let cdh = FakeCdh::start().await;
    cdh.set_mode(Mode::Status(503));
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings(&cdh.url, 5000, 20)).await;
    let w = connected_world(&rt, "acme").await;
    create_members(&rt, &w, 0, 60).await;
    let connected_until = rt.setting(w.caac).await.unwrap().last_seq;
    rt.disconnect(w.account).await.unwrap();
    eventually("the split to finish", || async {
        rt.is_ready() && rt.scope_merge_state(w.caac).unwrap()
    })
    .await;
    assert_eq!(
        rt.scope_of(w.caac).unwrap(),
        w.scope,
        "the caac org keeps the scope"
    );
    create_members(&rt, &w, 60, 80).await;
    assert!(rt.setting(w.caac).await.unwrap().last_seq > connected_until);
    cdh.set_mode(Mode::Accept);
    drain(&rt, &w).await;
    let expected: Vec<u64> = (w.connected_after + 1..=connected_until).collect();
    assert_eq!(cdh.delivered(w.scope), expected);
    cdh.check_contract(20);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cdh_nothing_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(
        dir.path(),
        Settings {
            call_timeout: Duration::from_secs(30),
            ..Settings::default()
        },
    )
    .await;
    let w = connected_world(&rt, "acme").await;
    create_members(&rt, &w, 0, 20).await;
    assert!(!logged_seqs(&rt, &w).is_empty());
    let state = rt.sync_state(w.account).await.unwrap();
    assert_eq!((state.pending, state.delivered, state.dead), (0, 0, 0));
    assert_eq!(rt.sync_retry(w.account).await.unwrap(), 0);
    assert!(rt.sync_state(w.account + 100).await.is_err());
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_carries_the_same_batch_even_after_more_events_and_a_restart() {
    let cdh = FakeCdh::start().await;
    let dir = tempfile::tempdir().unwrap();
    let w = {
        let rt = boot(dir.path(), settings(&cdh.url, 500, 50)).await;
        let w = connected_world(&rt, "acme").await;
        drain(&rt, &w).await;
        cdh.set_mode(Mode::Hang);
        let seen = cdh.requests();
        create_members(&rt, &w, 0, 2).await;
        eventually("a small batch to be sent", || async {
            cdh.requests() > seen
        })
        .await;
        create_members(&rt, &w, 2, 40).await;
        eventually("the small batch to be resent after the timeout", || async {
            cdh.requests() > seen + 1
        })
        .await;
        rt.shutdown().await.unwrap();
        w
    };
    cdh.set_mode(Mode::Accept);
    let rt = boot(dir.path(), settings(&cdh.url, 500, 50)).await;
    assert_all_delivered(&rt, &cdh, &w).await;
    cdh.check_contract(50);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_bridge_actors_are_restarted_and_delivery_continues_in_order() {
    let cdh = FakeCdh::start().await;
    cdh.with(|s| s.delay = Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let rt = boot(dir.path(), settings(&cdh.url, 5000, 10)).await;
    let w = connected_world(&rt, "acme").await;
    drain(&rt, &w).await;
    let delivered = cdh.delivered(w.scope).len();
    create_members(&rt, &w, 0, 100).await;
    eventually("delivery to be under way", || async {
        cdh.delivered(w.scope).len() > delivered
    })
    .await;
    rt.inject_bridge_panic(Some(w.scope)).await.unwrap();
    create_members(&rt, &w, 100, 150).await;
    assert_all_delivered(&rt, &cdh, &w).await;
    rt.inject_bridge_panic(None).await.unwrap();
    create_members(&rt, &w, 150, 200).await;
    assert_all_delivered(&rt, &cdh, &w).await;
    cdh.check_contract(10);
    rt.shutdown().await.unwrap();
}
