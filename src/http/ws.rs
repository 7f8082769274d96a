//! The websocket of SPEC 5: `GET /api/v1/orgs/{org_id}/ws[?since=SEQ]` streams the events of
//! the org's scope as JSON text frames.
//! It reads retained events through the runtime's event log and live ones through its hub;
//! it never touches the store.
//!
//! Every connection runs two tasks: the *connection* task reads the client (pongs, close),
//! the scope's broadcast receiver, the ping and scope-check timers and the shutdown signal, and
//! puts frames on a bounded queue (`events.ws_queue` frames); the *writer* task drains the
//! queue into the socket. The connection task never waits on the socket, so a client that does
//! not read fills its own queue and is sent `{"type":"lagged"}` and closed; the scope actor
//! only ever does a non-blocking broadcast send, so no subscriber slows the engine or the
//! other subscribers.
//!
//! Decisions where SPEC 5 is silent:
//! - `?since=SEQ` older than retention (or ahead of the scope's newest event, e.g. a seq of
//!   another scope): the first frame is `{"type":"resync_required","oldest_seq":N}` and the
//!   connection continues with live events only; the client re-reads the state it mirrors over
//!   HTTP and applies the following frames on top (the subscription started before the frame,
//!   so nothing committed after it is missed).
//! - An org whose scope changes (integrate, disconnect) is followed: the connection subscribes
//!   to the new scope and sends `resync_required` with that scope's `oldest_seq`; the frames
//!   after it carry the new `unify_scope_id` and its sequence numbers.
//! - A gap found while replaying (events trimmed under a slow replay) is treated as lagging.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};
use unify_actors::error::OpError;
use unify_actors::event_log::EventLog;
use unify_actors::events::Event;
use unify_actors::hub::Subscription;
use unify_storage::Id;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::extract::{Path, Query};
use super::params::OrgPath;
use super::state::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// How often a connection checks whether its org moved to another scope.
/// How long a live frame may wait for room in a full per-connection queue.
const LIVE_WAIT: Duration = Duration::from_secs(1);
/// The longest a connection may live on one token.
const MAX_CONNECTION_S: u64 = 365 * 24 * 3600;
const SCOPE_CHECK: Duration = Duration::from_secs(1);

/// Stored events read per store access while replaying `?since=`.
const REPLAY_CHUNK: usize = 256;

/// How long the last frames (and the close handshake) may take once a connection ends for
/// any reason but lagging; after it the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The largest message a client may send; clients only answer pings and close.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Read buffer per connection: clients only send pongs and close frames, and the default
/// (128 KiB) times 10k subscribers would be a lot of memory.
const READ_BUFFER: usize = 4 * 1024;

/// The leeway tokens are verified with (`crate::auth`): a connection ends when its token
/// would no longer be accepted.
const TOKEN_LEEWAY_S: u64 = 30;

/// Close code sent with `lagged`: "try again later" (RFC 6455 registry), reconnect with `since`.
const CLOSE_LAGGED: u16 = 1013;
/// Close code for a client that did not answer a ping, or whose token expired: "policy
/// violation".
const CLOSE_POLICY: u16 = 1008;
/// Close code at server shutdown: "going away".
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code when the store fails: "internal error".
const CLOSE_INTERNAL: u16 = 1011;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(subscribe))
}

/// Query of the websocket; any other parameter is `INVALID_ARGUMENT`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WsQuery {
    /// Replays the retained events after this seq before live ones.
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    since: Option<u64>,
    /// The token, for clients that cannot set the `Authorization` header (browsers).
    #[allow(dead_code)]
    access_token: Option<String>,
}

/// Subscribes to the events of the org's scope (SPEC 5).
///
/// A websocket upgrade. The server sends JSON text frames: `profile_updated`,
/// `profile_removed`, `member_updated`, `merge_progress` (each with `seq` and
/// `unify_scope_id`), `{"type":"resync_required","oldest_seq":N}` when `since` is older than
/// retention (then live events follow), and `{"type":"lagged"}` before closing a subscriber
/// that could not keep up. The server pings every `events.ping_interval_s` seconds and closes
/// connections that did not answer the previous ping. The token may be given as
/// `?access_token=`. Refusals (401, 403, 404, 400) happen before the upgrade, with the JSON
/// error body.
#[utoipa::path(get, path = "/ws", tag = "websocket",
    params(OrgPath, WsQuery),
    responses(
        (status = 101, description = "switching protocols: the event stream"),
        (status = "4XX", body = ErrorBody)))]
async fn subscribe(
    State(state): State<AppState>,
    caller: Caller,
    Path(p): Path<OrgPath>,
    query: Result<Query<WsQuery>, ApiError>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let org = caller.org(&state, p.org_id)?;
    let Query(query) = query?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::invalid(format!(
            "a websocket upgrade is required: {}",
            rejection.body_text()
        ))
    })?;
    let scope_id = state.runtime.scope_of(org.id)?;
    // Subscribed before anything is read from the store, so that replay and live events meet
    // without a gap.
    let live = state.runtime.hub().subscribe(scope_id);
    let valid_for = caller
        .0
        .exp
        .saturating_add(TOKEN_LEEWAY_S)
        .saturating_sub(unix_now());
    // A token valid for longer than a year is treated as valid for a year (an `exp` far in the
    // future must not overflow the clock).
    let expires = Duration::from_secs(valid_for.min(MAX_CONNECTION_S));
    let connection = Connection {
        expires: Instant::now() + expires,
        state,
        org_id: org.id,
        scope_id,
        live,
        last_seq: 0,
    };
    let since = query.since;
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| connection.serve(socket, since)))
}

/// Why a connection ends; decides the last frames it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The client closed or the socket failed: nothing more to send.
    ClientGone,
    /// The client could not keep up.
    Lagged,
    /// The client did not answer the previous ping.
    PingTimeout,
    /// The token the connection was opened with expired.
    TokenExpired,
    /// The server shuts down.
    ShuttingDown,
    /// The store failed.
    Internal,
}

impl Ending {
    /// Returns the frames sent after the queue is drained.
    fn frames(self) -> Vec<Message> {
        let close = |code, reason: &'static str| {
            Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            }))
        };
        match self {
            Ending::ClientGone => Vec::new(),
            Ending::Lagged => vec![
                Message::Text(Utf8Bytes::from_static(r#"{"type":"lagged"}"#)),
                close(CLOSE_LAGGED, "lagged"),
            ],
            Ending::PingTimeout => vec![close(CLOSE_POLICY, "ping timeout")],
            Ending::TokenExpired => vec![close(CLOSE_POLICY, "token expired")],
            Ending::ShuttingDown => vec![close(CLOSE_GOING_AWAY, "server shutting down")],
            Ending::Internal => vec![close(CLOSE_INTERNAL, "internal error")],
        }
    }
}

/// One subscriber: the org it watches, the scope it currently follows and where it stands.
struct Connection {
    state: AppState,
    org_id: Id,
    scope_id: Id,
    live: Subscription,
    /// Live events at or below this seq were already sent (by the replay).
    last_seq: u64,
    /// When the caller's token expires: the connection is closed then, so that access ends
    /// with the token (the client reconnects with a fresh one and `since`).
    expires: Instant,
}

impl Connection {
    async fn serve(mut self, socket: WebSocket, since: Option<u64>) {
        let queue = self.state.config.events.ws_queue.max(1);
        let ping_period = Duration::from_secs(self.state.config.events.ping_interval_s.max(1));
        let (sink, mut stream) = socket.split();
        let (tx, rx) = mpsc::channel(queue);
        let (ending_tx, ending_rx) = oneshot::channel();
        let mut writer = tokio::spawn(write(sink, rx, ending_rx));
        metrics::gauge!("unify_ws_connections").increment(1.0);
        tracing::debug!(
            org_id = self.org_id,
            scope_id = self.scope_id,
            "websocket opened"
        );

        let ending = match self.run(&mut stream, &tx, since, ping_period).await {
            Err(ending) => ending,
            Ok(never) => match never {},
        };
        if ending == Ending::Lagged {
            metrics::counter!("unify_ws_lagged_total").increment(1);
        }
        tracing::debug!(org_id = self.org_id, ending = ?ending, "websocket closing");
        drop(tx);
        let _ = ending_tx.send(ending);
        // A lagging client gets one ping interval to read up to `lagged`, as long as a client
        // that does not answer pings is kept anyway; every other ending closes promptly.
        let grace = match ending {
            Ending::Lagged => ping_period,
            _ => CLOSE_GRACE,
        };
        if timeout(grace, &mut writer).await.is_err() {
            writer.abort();
        } else {
            // Reads up to the client's close reply, so that the socket is not reset with
            // unread input (which could discard frames the client has not read yet).
            let _ = timeout(CLOSE_GRACE, async {
                while let Some(Ok(_)) = stream.next().await {}
            })
            .await;
        }
        metrics::gauge!("unify_ws_connections").decrement(1.0);
    }

    /// Streams until the connection has to end, and says why (never `Ok`).
    async fn run(
        &mut self,
        stream: &mut SplitStream<WebSocket>,
        tx: &mpsc::Sender<Message>,
        since: Option<u64>,
        ping_period: Duration,
    ) -> Result<Infallible, Ending> {
        // Both made once: the loop below runs for every event of every subscriber.
        let mut closing = self.state.closing.clone();
        let shutting_down = shutdown(&mut closing);
        tokio::pin!(shutting_down);
        let expiry = tokio::time::sleep_until(self.expires);
        tokio::pin!(expiry);
        if let Some(since) = since {
            tokio::select! {
                biased;
                _ = &mut shutting_down => return Err(Ending::ShuttingDown),
                _ = &mut expiry => return Err(Ending::TokenExpired),
                replayed = self.replay(since, tx) => replayed?,
            }
        }
        let mut ping = interval_at(Instant::now() + ping_period, ping_period);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut scope_check = interval_at(Instant::now() + SCOPE_CHECK, SCOPE_CHECK);
        scope_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut awaiting_pong = false;
        loop {
            tokio::select! {
                biased;
                _ = &mut shutting_down => return Err(Ending::ShuttingDown),
                _ = &mut expiry => return Err(Ending::TokenExpired),
                message = stream.next() => match message {
                    Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Err(Ending::ClientGone),
                    Some(Ok(_)) => {}
                },
                event = self.live.recv() => match event {
                    Ok(event) => {
                        if event.seq > self.last_seq {
                            self.last_seq = event.seq;
                            deliver(tx, Message::Text(frame_of(&event))).await?;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => return Err(Ending::Lagged),
                    Err(broadcast::error::RecvError::Closed) => return Err(Ending::ShuttingDown),
                },
                _ = ping.tick() => {
                    if awaiting_pong {
                        return Err(Ending::PingTimeout);
                    }
                    offer(tx, Message::Ping(Default::default()))?;
                    awaiting_pong = true;
                }
                _ = scope_check.tick() => self.follow_scope(tx).await?,
            }
        }
    }

    /// Sends the stored events after `since`, or `resync_required` when they are no longer
    /// all retained. Frames wait for room in the queue: a replay goes at the client's pace.
    async fn replay(&mut self, since: u64, tx: &mpsc::Sender<Message>) -> Result<(), Ending> {
        let mut cursor = since;
        loop {
            let chunk =
                self.log_read(self.log().after(self.scope_id, cursor, REPLAY_CHUNK).await)?;
            let Some(first) = chunk.first() else {
                if cursor == since {
                    let newest = self.log_read(self.log().newest_seq(self.scope_id).await)?;
                    if since > newest.unwrap_or(0) {
                        // Ahead of the scope: a seq of another scope or of lost history.
                        return self.resync(tx).await;
                    }
                }
                break;
            };
            if first.seq != cursor + 1 {
                if cursor == since {
                    // The events right after `since` were trimmed.
                    self.resync(tx).await?;
                    return Ok(());
                }
                // Trimmed while this replay was under way: too slow to follow.
                return Err(Ending::Lagged);
            }
            let full = chunk.len() == REPLAY_CHUNK;
            for record in chunk {
                cursor = record.seq;
                tx.send(Message::Text(record.payload.into()))
                    .await
                    .map_err(|_| Ending::ClientGone)?;
            }
            if !full {
                break;
            }
        }
        self.last_seq = cursor;
        Ok(())
    }

    /// Sends `resync_required` with the oldest seq the scope can still replay; live events
    /// follow.
    async fn resync(&mut self, tx: &mpsc::Sender<Message>) -> Result<(), Ending> {
        let oldest = self.log_read(self.log().oldest_seq(self.scope_id).await)?;
        let frame = resync_frame(oldest.unwrap_or(1));
        self.last_seq = 0;
        tx.send(frame).await.map_err(|_| Ending::ClientGone)
    }

    /// Follows the org to its new scope after an integrate or a disconnect.
    async fn follow_scope(&mut self, tx: &mpsc::Sender<Message>) -> Result<(), Ending> {
        let scope_id = match self.state.runtime.scope_of(self.org_id) {
            Ok(scope_id) => scope_id,
            Err(err) => {
                tracing::warn!(org_id = self.org_id, error = %err, "websocket scope check failed");
                return Ok(());
            }
        };
        if scope_id == self.scope_id {
            return Ok(());
        }
        tracing::debug!(
            org_id = self.org_id,
            from = self.scope_id,
            to = scope_id,
            "websocket follows the org to its new scope"
        );
        self.live = self.state.runtime.hub().subscribe(scope_id);
        self.scope_id = scope_id;
        self.last_seq = 0;
        let oldest = self.log_read(self.log().oldest_seq(scope_id).await)?;
        offer(tx, resync_frame(oldest.unwrap_or(1)))
    }

    /// The scope's retained events, read through the runtime.
    fn log(&self) -> &EventLog {
        self.state.runtime.event_log()
    }

    /// Ends the connection with `internal error` when the event log cannot be read.
    fn log_read<T>(&self, read: Result<T, OpError>) -> Result<T, Ending> {
        read.map_err(|err| {
            tracing::error!(scope_id = self.scope_id, error = %err, "websocket cannot read the event log");
            Ending::Internal
        })
    }
}

/// The JSON of the newest event of each scope, shared by the connections of that scope, so that
/// an event fanned out to 10k subscribers is serialized once. Entries are matched by the
/// event's allocation (every subscriber receives a clone of the same `Arc`), so that servers
/// sharing the process never see each other's frames.
static FRAMES: LazyLock<Mutex<HashMap<Id, CachedFrame>>> = LazyLock::new(Default::default);

/// An event and its JSON frame.
type CachedFrame = (Arc<Event>, Utf8Bytes);

/// Returns the frame of a live event.
fn frame_of(event: &Arc<Event>) -> Utf8Bytes {
    let mut frames = FRAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((cached, frame)) = frames.get(&event.unify_scope_id)
        && Arc::ptr_eq(cached, event)
    {
        return frame.clone();
    }
    let frame = Utf8Bytes::from(event.to_json());
    frames.insert(event.unify_scope_id, (event.clone(), frame.clone()));
    frame
}

/// Queues a live frame, waiting at most [`LIVE_WAIT`] for room: a queue that stays full that
/// long means the client cannot keep up. (A commit can carry thousands of events at once; a
/// client that reads steadily drains them within the wait.) Only this connection waits: the
/// engine publishes without ever waiting for a subscriber.
async fn deliver(tx: &mpsc::Sender<Message>, message: Message) -> Result<(), Ending> {
    match tx.try_send(message) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(Ending::ClientGone),
        Err(mpsc::error::TrySendError::Full(message)) => tx
            .send_timeout(message, LIVE_WAIT)
            .await
            .map_err(|err| match err {
                mpsc::error::SendTimeoutError::Timeout(_) => Ending::Lagged,
                mpsc::error::SendTimeoutError::Closed(_) => Ending::ClientGone,
            }),
    }
}

/// Queues a frame without waiting: a full queue means the client cannot keep up.
fn offer(tx: &mpsc::Sender<Message>, message: Message) -> Result<(), Ending> {
    tx.try_send(message).map_err(|err| match err {
        mpsc::error::TrySendError::Full(_) => Ending::Lagged,
        mpsc::error::TrySendError::Closed(_) => Ending::ClientGone,
    })
}

fn resync_frame(oldest_seq: u64) -> Message {
    Message::Text(format!(r#"{{"type":"resync_required","oldest_seq":{oldest_seq}}}"#).into())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Resolves when the server starts shutting down (or is gone).
async fn shutdown(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

/// The writer task: sends queued frames in order, then the frames of the ending. Frames
/// queued together are written with one flush.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Message>,
    ending: oneshot::Receiver<Ending>,
) {
    while let Some(message) = queue.recv().await {
        if sink.feed(message).await.is_err() {
            return;
        }
        while let Ok(message) = queue.try_recv() {
            if sink.feed(message).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    if let Ok(ending) = ending.await {
        for message in ending.frames() {
            if sink.send(message).await.is_err() {
                return;
            }
        }
    }
    let _ = sink.close().await;
}
