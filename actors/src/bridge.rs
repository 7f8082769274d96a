//! The CDH bridge (SPEC 7): delivers the durable outbox of every scope to the configured
//! Customer Data Hub, in seq order, in batches.
//!
//! Three actors, each restarted by the one above it (ractor restarts nothing by itself):
//! - [`BridgeSupervisor`] keeps one [`Bridge`] running, restarting it when it fails.
//! - [`Bridge`] finds the scopes whose outbox is not empty and keeps one [`Delivery`] actor per
//!   scope, waking it when the scope commits new entries ([`Hub::notify_outbox`]) and on a
//!   periodic rescan; a failed delivery actor is replaced from the store.
//! - [`Delivery`] delivers one scope's outbox, one batch at a time, so scopes are independent:
//!   a slow or failing scope never delays another.
//!
//! A batch is the head of the outbox, at most `batch_max` entries. Its seq bounds are stored
//! (in the scope's [`DeliveryRecord`]) before it is first sent, so every resend of it — after a
//! failure or after a restart — carries exactly the same events under the same
//! `Idempotency-Key`. A 2xx removes the batch in one atomic, flushed write that also updates
//! the delivery counters and fixes the next batch. Retryable failures (408, 429, 5xx, timeout,
//! connection error) resend the same batch after an exponential backoff with jitter, forever;
//! other statuses are permanent rejections, and after `max_attempts` of them the batch moves to
//! the dead-letter list and delivery continues with the next batch.
//!
//! Entries are read from the store after the scope actor applied them, and the store is
//! flushed before they are first sent, so nothing the CDH receives can be lost by a crash.
//!
//! [`Cdh`] is the bridge service: it owns the bridge supervisor, answers a scope's delivery
//! state ([`Cdh::sync_state`]) and requeues its dead letters ([`Cdh::sync_retry`]). It reads
//! the store and is woken by the hub; it imports no other actor or service.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use rand::Rng;
use serde::Serialize;
use tokio::task::JoinHandle;
use unify_storage::{DeliveryRecord, Id, OutboxEntry, Store, WriteBatch};

use crate::clock::{now_millis, rfc3339};
use crate::error::OpError;
use crate::hub::Hub;
use crate::settings::{CdhSettings, Settings};

/// Interval of the fallback rescan of all outboxes, in case a wake-up was missed.
const RESCAN_INTERVAL: Duration = Duration::from_secs(5);
/// Delay before a failed delivery actor is replaced.
const RESPAWN_DELAY: Duration = Duration::from_secs(1);
/// Shortest interval between two recounts of a scope's outbox for the depth gauge.
const DEPTH_REFRESH: Duration = Duration::from_secs(2);
/// How long shutdown waits for an actor of the bridge to stop.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// Longest response-body excerpt kept in an error message.
const ERROR_BODY_MAX: usize = 200;

/// The CDH delivery state of an account scope (`GET .../sync-state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncState {
    /// Events in the outbox, not yet delivered.
    pub pending: u64,
    /// Events delivered (acknowledged with a 2xx).
    pub delivered: u64,
    /// Events in the dead-letter list.
    pub dead: u64,
    /// Error of the last failed attempt if the delivery is failing now, else the error of the
    /// newest dead letter; `None` when neither.
    pub last_error: Option<String>,
    /// When the last batch was delivered (RFC 3339 UTC).
    pub last_delivered_at: Option<String>,
}

/// The runtime's handle on the bridge.
#[derive(Debug)]
pub struct Cdh {
    store: Store,
    hub: Hub,
    /// Whether a CDH is configured (the bridge runs).
    configured: bool,
    /// The bridge supervisor and its task; `None` without a CDH or after shutdown.
    supervisor: tokio::sync::Mutex<Option<(ActorRef<BridgeSupervisorMsg>, JoinHandle<()>)>>,
    /// Serializes requeues of dead letters.
    requeue: tokio::sync::Mutex<()>,
}

impl Cdh {
    /// Starts the bridge when `settings` configure a CDH.
    pub async fn start(store: Store, settings: &Settings, hub: Hub) -> Result<Cdh, OpError> {
        let Some(cdh) = settings.cdh.clone() else {
            return Ok(Cdh {
                store,
                hub,
                configured: false,
                supervisor: tokio::sync::Mutex::new(None),
                requeue: tokio::sync::Mutex::new(()),
            });
        };
        let args = BridgeArgs {
            store: store.clone(),
            cdh: Arc::new(cdh),
            hub: hub.clone(),
            restart_limit: settings.restart_limit,
            restart_window: settings.restart_window,
        };
        let (actor, task) = Actor::spawn(None, BridgeSupervisor, args)
            .await
            .map_err(|e| OpError::Unavailable(format!("the cdh bridge failed to start: {e}")))?;
        Ok(Cdh {
            store,
            hub,
            configured: true,
            supervisor: tokio::sync::Mutex::new(Some((actor, task))),
            requeue: tokio::sync::Mutex::new(()),
        })
    }

    /// Stops the bridge. A batch in flight is abandoned; it stays in the outbox and is resent
    /// with the same idempotency key after the next start.
    pub async fn stop(&self) {
        if let Some((actor, task)) = self.supervisor.lock().await.take() {
            let _ = actor.stop_and_wait(None, Some(STOP_WAIT)).await;
            let _ = task.await;
        }
    }
}

impl Cdh {
    /// Returns the CDH delivery state of a scope (an account scope: the scope of an account's
    /// caac org).
    pub async fn sync_state(&self, scope_id: Id) -> Result<SyncState, OpError> {
        let store = &self.store;
        let record = store.get_delivery(scope_id)?.unwrap_or_default();
        let last_error = match record.last_error {
            Some(error) => Some(error),
            None => store
                .dead_entries(scope_id)?
                .pop()
                .and_then(|entry| entry.last_error),
        };
        Ok(SyncState {
            pending: store.outbox_len(scope_id)?,
            delivered: record.delivered,
            dead: store.dead_len(scope_id)?,
            last_error,
            last_delivered_at: record.last_delivered_at.map(rfc3339),
        })
    }

    /// Moves the account scope's dead-lettered events back into its outbox, in seq order with
    /// their attempts reset, wakes the bridge, and returns how many were requeued
    /// (`POST .../sync/retry`). Requeued events are delivered before any newer batch, but after
    /// the events that were delivered while they were dead. Without a configured CDH nothing is
    /// requeued (0).
    pub async fn sync_retry(&self, scope_id: Id) -> Result<u64, OpError> {
        if !self.configured {
            return Ok(0);
        }
        let store = &self.store;
        // Two concurrent requeues of the same entries could resurrect one that was delivered
        // in between; the bridge itself never writes the keys a requeue touches.
        let _requeue = self.requeue.lock().await;
        let dead = store.dead_entries(scope_id)?;
        if dead.is_empty() {
            return Ok(0);
        }
        let mut batch = WriteBatch::new();
        for entry in &dead {
            batch.delete_dead(scope_id, entry.seq);
            batch.put_outbox(&OutboxEntry {
                attempts: 0,
                last_error: None,
                ..entry.clone()
            });
        }
        store.apply(batch)?;
        store.flush_async().await?;
        tracing::info!(
            scope_id,
            requeued = dead.len(),
            "dead-lettered cdh events requeued"
        );
        self.hub.notify_outbox();
        Ok(dead.len() as u64)
    }

    /// Makes the CDH bridge (`None`) or the delivery actor of a scope panic (supervision
    /// tests); `Unavailable` when no bridge runs.
    #[doc(hidden)]
    pub async fn inject_panic(&self, scope_id: Option<Id>) -> Result<(), OpError> {
        let supervisor = self.supervisor.lock().await;
        let (actor, _) = supervisor
            .as_ref()
            .ok_or_else(|| OpError::Unavailable("no cdh bridge runs".into()))?;
        actor
            .send_message(BridgeSupervisorMsg::Forward(BridgeMsg::Panic(scope_id)))
            .map_err(|e| OpError::Unavailable(e.to_string()))
    }
}

// ------------------------------------------------------------------------------------------
// The supervisor.

/// Start-up arguments of the bridge and its supervisor.
#[derive(Debug, Clone)]
pub struct BridgeArgs {
    pub store: Store,
    pub cdh: Arc<CdhSettings>,
    pub hub: Hub,
    /// Restarts of the bridge allowed within `restart_window` before the next one is delayed
    /// by a whole window.
    pub restart_limit: u32,
    pub restart_window: Duration,
}

/// Keeps one [`Bridge`] running (configuration only).
#[derive(Debug, Clone, Copy, Default)]
pub struct BridgeSupervisor;

/// Messages of the bridge supervisor.
#[derive(Debug)]
pub enum BridgeSupervisorMsg {
    /// Starts the bridge if it is not running (a delayed restart).
    Restart,
    /// Forwards a message to the running bridge (supervision tests).
    #[doc(hidden)]
    Forward(BridgeMsg),
}

/// State of the bridge supervisor.
#[derive(Debug)]
pub struct BridgeSupervisorState {
    args: BridgeArgs,
    bridge: Option<ActorRef<BridgeMsg>>,
    /// Recent restart times, for the restart cap.
    restarts: VecDeque<Instant>,
}

impl Actor for BridgeSupervisor {
    type Msg = BridgeSupervisorMsg;
    type State = BridgeSupervisorState;
    type Arguments = BridgeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<BridgeSupervisorMsg>,
        args: BridgeArgs,
    ) -> Result<BridgeSupervisorState, ActorProcessingErr> {
        let mut state = BridgeSupervisorState {
            args,
            bridge: None,
            restarts: VecDeque::new(),
        };
        state.spawn(&myself).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<BridgeSupervisorMsg>,
        message: BridgeSupervisorMsg,
        state: &mut BridgeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BridgeSupervisorMsg::Restart => {
                if state.bridge.is_none() && state.spawn(&myself).await.is_err() {
                    myself.send_after(state.args.restart_window, || BridgeSupervisorMsg::Restart);
                }
            }
            BridgeSupervisorMsg::Forward(message) => {
                if let Some(bridge) = &state.bridge {
                    let _ = bridge.send_message(message);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<BridgeSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut BridgeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason),
            _ => return Ok(()),
        };
        if state.bridge.as_ref().map(|b| b.get_id()) != Some(cell.get_id()) {
            return Ok(());
        }
        state.bridge = None;
        tracing::warn!(reason = ?reason, "cdh bridge stopped unexpectedly, restarting");
        if state.allow_restart() {
            if state.spawn(&myself).await.is_ok() {
                return Ok(());
            }
        } else {
            tracing::error!(
                delay_s = state.args.restart_window.as_secs(),
                "cdh bridge restarted too often, delaying the next restart"
            );
        }
        myself.send_after(state.args.restart_window, || BridgeSupervisorMsg::Restart);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<BridgeSupervisorMsg>,
        state: &mut BridgeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(bridge) = state.bridge.take() {
            let _ = bridge.stop_and_wait(None, Some(STOP_WAIT)).await;
        }
        Ok(())
    }
}

impl BridgeSupervisorState {
    async fn spawn(
        &mut self,
        myself: &ActorRef<BridgeSupervisorMsg>,
    ) -> Result<(), ActorProcessingErr> {
        match Actor::spawn_linked(None, Bridge, self.args.clone(), myself.get_cell()).await {
            Ok((bridge, _)) => {
                self.bridge = Some(bridge);
                Ok(())
            }
            Err(err) => {
                tracing::error!(error = %err, "cdh bridge failed to start");
                Err(err.into())
            }
        }
    }

    /// Records a restart and returns whether it is within the cap.
    fn allow_restart(&mut self) -> bool {
        let now = Instant::now();
        let window = self.args.restart_window;
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        self.restarts.len() as u32 <= self.args.restart_limit
    }
}

// ------------------------------------------------------------------------------------------
// The bridge: one delivery actor per scope with a non-empty outbox.

/// Messages of the bridge.
#[derive(Debug)]
pub enum BridgeMsg {
    /// Finds the scopes with a non-empty outbox and wakes their delivery actors.
    Scan,
    /// Makes the bridge (`None`) or a scope's delivery actor panic, for supervision tests.
    #[doc(hidden)]
    Panic(Option<Id>),
}

/// The bridge (configuration only).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bridge;

/// A running delivery actor.
#[derive(Debug)]
struct Worker {
    actor: ActorRef<DeliveryMsg>,
    /// Set while a `Wake` is queued, so that wake-ups never pile up behind a slow request.
    woken: Arc<AtomicBool>,
}

/// State of the bridge.
#[derive(Debug)]
pub struct BridgeState {
    args: BridgeArgs,
    client: reqwest::Client,
    workers: HashMap<Id, Worker>,
    scopes: HashMap<ActorId, Id>,
    /// Set while a `Scan` is queued.
    scan_queued: Arc<AtomicBool>,
    /// Turns outbox notifications (and the periodic rescan) into `Scan` messages.
    waker: JoinHandle<()>,
}

impl Actor for Bridge {
    type Msg = BridgeMsg;
    type State = BridgeState;
    type Arguments = BridgeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<BridgeMsg>,
        args: BridgeArgs,
    ) -> Result<BridgeState, ActorProcessingErr> {
        let client = reqwest::Client::builder()
            .timeout(args.cdh.timeout)
            .build()?;
        let scan_queued = Arc::new(AtomicBool::new(true));
        myself.send_message(BridgeMsg::Scan)?;
        let waker = spawn_waker(args.hub.clone(), myself.clone(), scan_queued.clone());
        Ok(BridgeState {
            args,
            client,
            workers: HashMap::new(),
            scopes: HashMap::new(),
            scan_queued,
            waker,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<BridgeMsg>,
        message: BridgeMsg,
        state: &mut BridgeState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BridgeMsg::Scan => {
                state.scan_queued.store(false, Ordering::Release);
                // A store error is logged and the next scan tries again: the bridge itself
                // holds nothing that a restart would repair.
                match state.args.store.outbox_scopes() {
                    Ok(scopes) => {
                        for scope_id in scopes {
                            state.wake(&myself, scope_id).await;
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot list cdh outboxes"),
                }
            }
            BridgeMsg::Panic(None) => panic!("injected cdh bridge panic"),
            BridgeMsg::Panic(Some(scope_id)) => {
                if let Some(worker) = state.workers.get(&scope_id) {
                    let _ = worker.actor.send_message(DeliveryMsg::Panic);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<BridgeMsg>,
        event: SupervisionEvent,
        state: &mut BridgeState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, reason),
            _ => return Ok(()),
        };
        let Some(scope_id) = state.scopes.remove(&cell.get_id()) else {
            return Ok(());
        };
        state.workers.remove(&scope_id);
        tracing::warn!(scope_id, reason = ?reason, "cdh delivery stopped unexpectedly, restarting");
        // The next scan starts a fresh actor, which reloads the scope's state from the store.
        myself.send_after(RESPAWN_DELAY, || BridgeMsg::Scan);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<BridgeMsg>,
        state: &mut BridgeState,
    ) -> Result<(), ActorProcessingErr> {
        state.waker.abort();
        // Killing abandons a request in flight; its batch stays in the outbox with its bounds.
        for (_, worker) in state.workers.drain() {
            let _ = worker.actor.kill_and_wait(Some(STOP_WAIT)).await;
        }
        Ok(())
    }
}

impl BridgeState {
    /// Wakes the scope's delivery actor, starting it first if needed.
    async fn wake(&mut self, myself: &ActorRef<BridgeMsg>, scope_id: Id) {
        if !self.workers.contains_key(&scope_id) {
            let args = DeliveryArgs {
                scope_id,
                store: self.args.store.clone(),
                cdh: self.args.cdh.clone(),
                client: self.client.clone(),
                woken: Arc::new(AtomicBool::new(false)),
            };
            let woken = args.woken.clone();
            match Actor::spawn_linked(None, Delivery, args, myself.get_cell()).await {
                Ok((actor, _)) => {
                    self.scopes.insert(actor.get_id(), scope_id);
                    self.workers.insert(scope_id, Worker { actor, woken });
                }
                Err(err) => {
                    tracing::error!(scope_id, error = %err, "cdh delivery failed to start");
                    return;
                }
            }
        }
        if let Some(worker) = self.workers.get(&scope_id)
            && !worker.woken.swap(true, Ordering::AcqRel)
        {
            let _ = worker.actor.send_message(DeliveryMsg::Wake);
        }
    }
}

/// Sends the bridge a `Scan` when a scope commits outbox entries, and every
/// [`RESCAN_INTERVAL`] in case a notification was missed.
fn spawn_waker(hub: Hub, bridge: ActorRef<BridgeMsg>, queued: Arc<AtomicBool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = hub.outbox_notified() => {}
                () = tokio::time::sleep(RESCAN_INTERVAL) => {}
            }
            if !queued.swap(true, Ordering::AcqRel) && bridge.send_message(BridgeMsg::Scan).is_err()
            {
                // The bridge is gone; pass the wake-up on to its successor's waker.
                hub.notify_outbox();
                break;
            }
        }
    })
}

// ------------------------------------------------------------------------------------------
// Delivery of one scope.

/// Messages of a delivery actor.
#[derive(Debug)]
pub enum DeliveryMsg {
    /// New entries may be in the outbox (sent by the bridge).
    Wake,
    /// Delivers (or retries) the next batch (sent by the actor to itself).
    Step,
    /// Makes the actor panic, for supervision tests.
    #[doc(hidden)]
    Panic,
}

/// Start-up arguments of a delivery actor.
#[derive(Debug, Clone)]
pub struct DeliveryArgs {
    pub scope_id: Id,
    pub store: Store,
    pub cdh: Arc<CdhSettings>,
    pub client: reqwest::Client,
    /// Shared with the bridge: set while a `Wake` is queued.
    pub woken: Arc<AtomicBool>,
}

/// The delivery actor of one scope (configuration only).
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivery;

/// State of a delivery actor.
#[derive(Debug)]
pub struct DeliveryState {
    args: DeliveryArgs,
    /// The stored delivery state; this actor is its only writer.
    record: DeliveryRecord,
    /// A `Step` is queued, running, or scheduled after a backoff: a `Wake` changes nothing.
    busy: bool,
    /// When the depth gauge was last recounted.
    depth_counted: Option<Instant>,
}

/// Why an attempt failed.
#[derive(Debug)]
enum Failure {
    /// 408, 429, 5xx, timeout, connection error: resent until delivered.
    Retryable(String),
    /// Any other non-2xx status: dead-lettered after `max_attempts`.
    Permanent(String),
}

/// What a step leaves to do.
#[derive(Debug)]
enum Next {
    /// The outbox is empty.
    Idle,
    /// Deliver the next batch now.
    Continue,
    /// Resend the same batch after this delay.
    Retry(Duration),
}

impl Actor for Delivery {
    type Msg = DeliveryMsg;
    type State = DeliveryState;
    type Arguments = DeliveryArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<DeliveryMsg>,
        args: DeliveryArgs,
    ) -> Result<DeliveryState, ActorProcessingErr> {
        let record = args
            .store
            .get_delivery(args.scope_id)?
            .unwrap_or_else(|| DeliveryRecord {
                scope_id: args.scope_id,
                ..DeliveryRecord::default()
            });
        Ok(DeliveryState {
            args,
            record,
            busy: false,
            depth_counted: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<DeliveryMsg>,
        message: DeliveryMsg,
        state: &mut DeliveryState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DeliveryMsg::Wake => {
                state.args.woken.store(false, Ordering::Release);
                if !state.busy {
                    state.busy = true;
                    myself.send_message(DeliveryMsg::Step)?;
                }
            }
            DeliveryMsg::Panic => panic!("injected cdh delivery panic"),
            DeliveryMsg::Step => match state.step().await? {
                Next::Idle => {
                    state.busy = false;
                    state.gauge_depth(0);
                }
                Next::Continue => {
                    state.refresh_depth(false)?;
                    myself.send_message(DeliveryMsg::Step)?;
                }
                Next::Retry(delay) => {
                    state.refresh_depth(false)?;
                    myself.send_after(delay, || DeliveryMsg::Step);
                }
            },
        }
        Ok(())
    }
}

impl DeliveryState {
    fn scope_id(&self) -> Id {
        self.args.scope_id
    }

    /// Sends the current batch once and records the outcome.
    async fn step(&mut self) -> Result<Next, ActorProcessingErr> {
        let Some(entries) = self.batch().await? else {
            return Ok(Next::Idle);
        };
        match self.send(&entries).await {
            Ok(()) => {
                self.delivered(&entries).await?;
                Ok(Next::Continue)
            }
            Err(failure) => self.failed(&entries, failure).await,
        }
    }

    /// Returns the batch to send: the stored one if any of it is left, else the head of the
    /// outbox, whose bounds are stored (and flushed, with the entries) before it is sent.
    async fn batch(&mut self) -> Result<Option<Vec<OutboxEntry>>, ActorProcessingErr> {
        let store = &self.args.store;
        if let Some((first, last)) = self.record.batch {
            let span = usize::try_from(last.saturating_sub(first).saturating_add(1))
                .unwrap_or(usize::MAX)
                .min(u32::MAX as usize);
            let entries: Vec<_> = store
                .outbox_from(self.scope_id(), first, span)?
                .into_iter()
                .take_while(|e| e.seq <= last)
                .collect();
            if !entries.is_empty() {
                return Ok(Some(entries));
            }
        }
        let entries = store.outbox_head(self.scope_id(), self.args.cdh.batch_max)?;
        let mut record = self.record.clone();
        record.batch = bounds(&entries);
        record.rejections = 0;
        if record != self.record {
            let mut write = WriteBatch::new();
            write.put_delivery(&record);
            store.apply(write)?;
        }
        if entries.is_empty() {
            self.record = record;
            return Ok(None);
        }
        store.flush_async().await?;
        self.record = record;
        Ok(Some(entries))
    }

    /// Posts a batch to the CDH.
    async fn send(&self, entries: &[OutboxEntry]) -> Result<(), Failure> {
        let cdh = &self.args.cdh;
        let (first, last) = bounds(entries).expect("a batch is never empty");
        let events: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::from_str(&e.payload).unwrap_or_else(|err| {
                    // Payloads are written by the scope actor from serialized events; an
                    // unreadable one is sent as a string rather than blocking the outbox.
                    tracing::error!(scope_id = e.scope_id, seq = e.seq, error = %err, "outbox payload is not json");
                    serde_json::Value::String(e.payload.clone())
                })
            })
            .collect();
        let body = serde_json::json!({ "unify_scope_id": self.scope_id(), "events": events });
        let url = format!("{}/v1/unify-events", cdh.url.trim_end_matches('/'));
        let mut request = self
            .args
            .client
            .post(url)
            .header(
                "Idempotency-Key",
                idempotency_key(self.scope_id(), first, last),
            )
            .json(&body);
        if let Some(token) = &cdh.token {
            request = request.bearer_auth(token);
        }
        let started = Instant::now();
        let outcome = match request.send().await {
            Ok(response) if response.status().is_success() => {
                // Reading the body lets the connection be reused; the status is what counts.
                let _ = response.bytes().await;
                Ok(())
            }
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                let message = format!("HTTP {status}: {}", excerpt(&body));
                if is_retryable(status.as_u16()) {
                    Err(Failure::Retryable(message))
                } else {
                    Err(Failure::Permanent(message))
                }
            }
            Err(err) if err.is_timeout() => Err(Failure::Retryable(format!(
                "timed out after {} ms",
                cdh.timeout.as_millis()
            ))),
            Err(err) => Err(Failure::Retryable(error_chain(&err))),
        };
        metrics::histogram!("unify_cdh_delivery_seconds").record(started.elapsed().as_secs_f64());
        outcome
    }

    /// Removes a delivered batch and fixes the next one, in one flushed write.
    async fn delivered(&mut self, entries: &[OutboxEntry]) -> Result<(), ActorProcessingErr> {
        let store = &self.args.store;
        let scope_id = self.scope_id();
        let max = self.args.cdh.batch_max;
        let (first, last) = bounds(entries).expect("a batch is never empty");
        let next: Vec<_> = store
            .outbox_head(scope_id, entries.len() + max)?
            .into_iter()
            .filter(|e| e.seq < first || e.seq > last)
            .take(max)
            .collect();
        let mut record = self.record.clone();
        record.delivered += entries.len() as u64;
        record.last_delivered_at = Some(now_millis());
        record.last_error = None;
        record.batch = bounds(&next);
        record.rejections = 0;
        let mut write = WriteBatch::new();
        for entry in entries {
            write.delete_outbox(scope_id, entry.seq);
        }
        write.put_delivery(&record);
        store.apply(write)?;
        store.flush_async().await?;
        self.record = record;
        metrics::counter!("unify_cdh_delivered_events_total").increment(entries.len() as u64);
        tracing::debug!(scope_id, first, last, "cdh batch delivered");
        Ok(())
    }

    /// Records a failed attempt: counts it on every entry and either schedules the resend or,
    /// after `max_attempts` permanent rejections, moves the batch to the dead-letter list.
    async fn failed(
        &mut self,
        entries: &[OutboxEntry],
        failure: Failure,
    ) -> Result<Next, ActorProcessingErr> {
        let store = &self.args.store;
        let scope_id = self.scope_id();
        let cdh = &self.args.cdh;
        let (first, last) = bounds(entries).expect("a batch is never empty");
        let (message, permanent) = match failure {
            Failure::Retryable(m) => (m, false),
            Failure::Permanent(m) => (m, true),
        };
        let kind = if permanent { "permanent" } else { "retryable" };
        metrics::counter!("unify_cdh_delivery_failures_total", "kind" => kind).increment(1);
        let attempts = entries.iter().map(|e| e.attempts).max().unwrap_or(0) + 1;
        let mut record = self.record.clone();
        record.last_error = Some(message.clone());
        record.rejections += u32::from(permanent);
        let dead = permanent && record.rejections >= cdh.max_attempts;
        if dead {
            record.batch = None;
            record.rejections = 0;
        }
        let mut write = WriteBatch::new();
        for entry in entries {
            let updated = OutboxEntry {
                attempts,
                last_error: Some(message.clone()),
                ..entry.clone()
            };
            if dead {
                write.delete_outbox(scope_id, entry.seq).put_dead(&updated);
            } else {
                write.put_outbox(&updated);
            }
        }
        write.put_delivery(&record);
        store.apply(write)?;
        store.flush_async().await?;
        self.record = record;
        if dead {
            tracing::error!(scope_id, first, last, attempts, error = %message, "cdh batch dead-lettered");
            return Ok(Next::Continue);
        }
        let delay = backoff(cdh.retry_base, cdh.retry_max, attempts);
        tracing::warn!(scope_id, first, last, attempts, kind, retry_in_ms = delay.as_millis() as u64, error = %message, "cdh delivery failed");
        Ok(Next::Retry(delay))
    }

    /// Recounts the outbox for the depth gauge, at most every [`DEPTH_REFRESH`] unless forced.
    fn refresh_depth(&mut self, force: bool) -> Result<(), ActorProcessingErr> {
        if !force
            && self
                .depth_counted
                .is_some_and(|t| t.elapsed() < DEPTH_REFRESH)
        {
            return Ok(());
        }
        let depth = self.args.store.outbox_len(self.scope_id())?;
        self.gauge_depth(depth);
        Ok(())
    }

    fn gauge_depth(&mut self, depth: u64) {
        self.depth_counted = Some(Instant::now());
        metrics::gauge!("unify_cdh_outbox_depth", "scope" => self.scope_id().to_string())
            .set(depth as f64);
    }
}

/// Returns the seqs of the first and last entry.
fn bounds(entries: &[OutboxEntry]) -> Option<(u64, u64)> {
    Some((entries.first()?.seq, entries.last()?.seq))
}

/// Returns the `Idempotency-Key` of a batch: `<scope>-<first seq>-<last seq>`.
pub fn idempotency_key(scope_id: Id, first: u64, last: u64) -> String {
    format!("{scope_id}-{first}-{last}")
}

/// Returns whether a non-2xx status is worth resending unchanged.
fn is_retryable(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// Returns the delay before resend number `attempts` (1 for the first resend):
/// `base * 2^(attempts-1)`, capped at `max`, minus up to a quarter of it at random so that
/// scopes failing together do not retry in lockstep.
pub fn backoff(base: Duration, max: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(32);
    let nominal = base
        .saturating_mul(1u32 << doublings.min(31))
        .min(max)
        .max(Duration::from_millis(1));
    nominal.mul_f64(rand::rng().random_range(0.75..=1.0))
}

fn excerpt(body: &str) -> &str {
    match body.char_indices().nth(ERROR_BODY_MAX) {
        Some((at, _)) => &body[..at],
        None => body,
    }
}

/// Formats an error with its sources (reqwest's own message rarely says what went wrong).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(300);
        for (attempts, nominal) in [(1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (60, 300)] {
            let nominal = Duration::from_secs(nominal);
            for _ in 0..50 {
                let d = backoff(base, max, attempts);
                assert!(
                    d <= nominal && d >= nominal.mul_f64(0.75),
                    "{attempts}: {d:?}"
                );
            }
        }
    }

    #[test]
    fn only_timeouts_throttling_and_server_errors_are_retryable() {
        for s in [408, 429, 500, 502, 503, 599] {
            assert!(is_retryable(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422, 301] {
            assert!(!is_retryable(s), "{s}");
        }
    }

    #[test]
    fn excerpts_cut_on_char_boundaries() {
        let body = "é".repeat(500);
        assert_eq!(excerpt(&body).chars().count(), ERROR_BODY_MAX);
        assert_eq!(excerpt("short"), "short");
    }
}
