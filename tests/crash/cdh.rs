//! A local HTTP server standing in for the CDH (SPEC 7), and the checks of what it received
//! across the kills: batches in seq order without gaps, a redelivery only of the batch in
//! flight and exactly as first sent (same idempotency key, same events), and every event
//! recorded with the payload the rest of the test saw under its seq.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::events::Events;

/// Bearer token the driver is configured to send.
pub const TOKEN: &str = "crash-cdh";

/// Every this many batches is answered 503, so that retries happen besides the kills.
const FAIL_EVERY: u64 = 7;

/// How long the stand-in takes to answer a batch it recorded: a kill in between leaves a
/// batch delivered that the driver must send again.
const ANSWER_DELAY: std::time::Duration = std::time::Duration::from_millis(3);

/// A batch as received, in arrival order.
#[derive(Debug, Clone)]
pub struct Received {
    key: String,
    authorization: String,
    body: Value,
    /// Answered 2xx (delivered), else 503.
    ok: bool,
}

#[derive(Default)]
struct Inbox {
    received: Mutex<Vec<Received>>,
    count: AtomicU64,
}

/// The stand-in CDH, serving on its own thread until the test ends.
pub struct StandIn {
    pub url: String,
    inbox: Arc<Inbox>,
}

impl StandIn {
    pub fn start() -> StandIn {
        let inbox = Arc::new(Inbox::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let state = inbox.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new()
                    .route("/v1/unify-events", axum::routing::post(receive))
                    .with_state(state);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        StandIn {
            url: format!("http://{addr}"),
            inbox,
        }
    }

    /// Takes what was received since the last call.
    pub fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.inbox.received.lock().unwrap())
    }
}

async fn receive(
    State(inbox): State<Arc<Inbox>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let ok = (inbox.count.fetch_add(1, Ordering::Relaxed) + 1) % FAIL_EVERY != 0;
    inbox.received.lock().unwrap().push(Received {
        key: crate::common::header(&headers, "idempotency-key"),
        authorization: crate::common::header(&headers, "authorization"),
        body,
        ok,
    });
    tokio::time::sleep(ANSWER_DELAY).await;
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// What the CDH was sent, checked batch by batch.
#[derive(Debug, Default)]
pub struct Deliveries {
    /// The scope of the batches.
    scope_id: Option<u64>,
    /// The last batch received: its key and seqs.
    last: Option<(String, Vec<u64>)>,
    /// Whether the last batch was answered 2xx.
    last_ok: bool,
    /// Seqs delivered (answered 2xx).
    pub delivered: BTreeSet<u64>,
    pub batches: usize,
    pub redeliveries: usize,
    /// Resends of a batch already answered 2xx: only a crash causes those.
    pub redeliveries_after_crash: usize,
}

impl Deliveries {
    /// Checks received batches in arrival order and records their events.
    pub fn check(&mut self, received: Vec<Received>, events: &mut Events) {
        for batch in received {
            assert_eq!(batch.authorization, format!("Bearer {TOKEN}"));
            let scope_id = batch.body["unify_scope_id"].as_u64().expect("a scope id");
            assert_eq!(
                *self.scope_id.get_or_insert(scope_id),
                scope_id,
                "one connected scope"
            );
            let list = batch.body["events"].as_array().expect("a batch has events");
            let seqs: Vec<u64> = list.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
            let (first, last) = (seqs[0], seqs[seqs.len() - 1]);
            assert_eq!(batch.key, format!("{scope_id}-{first}-{last}"));
            assert!(
                seqs.windows(2).all(|w| w[1] == w[0] + 1),
                "batch {} is not consecutive seqs: {seqs:?}",
                batch.key
            );
            for event in list {
                events.record(event["seq"].as_u64().unwrap(), event.clone(), "cdh");
            }
            match &self.last {
                // Resent (after a 503 or a crash): exactly the batch in flight.
                Some((key, before)) if *key == batch.key => {
                    assert_eq!(before, &seqs, "batch {key} resent with other events");
                    self.redeliveries += 1;
                    self.redeliveries_after_crash += usize::from(self.last_ok);
                }
                Some((key, before)) => {
                    assert!(
                        self.last_ok,
                        "batch {} sent before {key} was delivered",
                        batch.key
                    );
                    assert_eq!(
                        first,
                        before[before.len() - 1] + 1,
                        "batch {} follows {key}",
                        batch.key
                    );
                }
                None => {}
            }
            if batch.ok {
                self.delivered.extend(&seqs);
            }
            self.batches += 1;
            self.last_ok = batch.ok;
            self.last = Some((batch.key, seqs));
        }
    }
}
