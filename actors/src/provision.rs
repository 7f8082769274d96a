//! Channel events and auto-provisioning (SPEC 6).
//!
//! [`Runtime::accept_event`] answers a webhook delivery synchronously, checking in the order
//! of the contract (duplicate event id, tenant, identity) before it writes anything; the one
//! write is the [`AcceptedEvent`] record, claimed with compare-and-swap so that concurrent
//! deliveries of one event id are accepted once, and flushed before the answer. It holds the
//! event until it is provisioned, so an event acknowledged just before a crash is provisioned
//! after the restart.
//!
//! Provisioning runs off the webhook's path. The events of one identity queue in its lane
//! (see [`Lanes`]) in the order the webhook accepted them, and each runs in the identity's
//! member actor ([`MemberRegistry::run`]), serialized with the API's creates of that identity:
//! the slow contact-API fetch happens there, never in a scope actor. The get-or-create, the
//! enrichment, the username and the link-code redemption are decided by the scope actor
//! (`scope/provision.rs`), where the writes of an org are serialized: that is what
//! makes one member per identity and one holder per username race-free.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use unify_storage::{
    AcceptedEvent, Channel, ContactApi, Id, LinkCode, Member, Millis, Store, WriteBatch,
};

use crate::clock::{now_millis, parse_rfc3339};
use crate::directory::ChannelPatch;
use crate::error::{OpError, found};
use crate::input::EMPTY_EXTERNAL_ID;
use crate::member::{Identity, MemberRegistry};
use crate::router::Router;
use crate::runtime::{NewChannel, Runtime};
use crate::scope::ScopeMsg;

/// API error code of an event whose tenant differs from its channel's.
pub const TENANT_MISMATCH: &str = "TENANT_MISMATCH";

/// How long an accepted event id answers "duplicate".
pub const EVENT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How long a link code can be redeemed.
pub const LINK_CODE_TTL: Duration = Duration::from_secs(10 * 60);

/// Timeout of one contact-API request, connection included.
pub const CONTACT_API_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a fetched contact profile is reused for its identity.
pub const CONTACT_CACHE_TTL: Duration = Duration::from_secs(3600);

/// Cached contact profiles kept at most; beyond it expired entries go first, then all.
const CONTACT_CACHE_MAX: usize = 100_000;

/// Events accepted and not yet provisioned, at most; beyond it the webhook answers
/// `OVERLOADED` instead of queueing without bound.
const MAX_PENDING_EVENTS: usize = 10_000;
/// Events one channel may have waiting for provisioning: a flood on one channel answers 429
/// there instead of taking every other channel's share of [`MAX_PENDING_EVENTS`].
const MAX_PENDING_PER_CHANNEL: usize = 2_000;

/// Longest accepted `event_id` (it is part of a store key).
const MAX_EVENT_ID_LEN: usize = 256;

/// How often expired event ids and link codes are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// Characters of link codes: no `0/O` or `1/I` to misread.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const CODE_LEN: usize = 10;

/// Attempts of one provisioning whose scope is briefly unavailable or overloaded.
const ATTEMPTS: u32 = 3;

// ---------------------------------------------------------------------------------------------
// The event.

/// The kind of a channel event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Message,
    Follow,
    Reaction,
    /// Redeems the link code carried in `text` (`CODE` or `/link CODE`).
    Link,
}

/// Who sent a channel event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventSender {
    /// The sender's id in this channel's app.
    #[serde(default)]
    pub external_member_id: Option<String>,
    /// The sender's id across the platform's apps; preferred as the identity when present.
    #[serde(default)]
    pub union_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// Profile values carried by an event, or fetched from the channel's contact API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventProfile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub display_email: Option<String>,
    #[serde(default)]
    pub display_mobile: Option<String>,
}

/// A channel event as the webhook receives it (SPEC 6). Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelEvent {
    /// Unique per channel; a repeated id within 24 hours is answered "duplicate".
    #[schema(pattern = r"\S", min_length = 1, max_length = 256)]
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    #[serde(default)]
    pub tenant_key: Option<String>,
    pub sender: EventSender,
    #[serde(default)]
    pub profile: Option<EventProfile>,
    #[serde(default)]
    pub text: Option<String>,
    /// RFC 3339 timestamp.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub sent_at: Option<String>,
}

impl ChannelEvent {
    /// Parses and checks the shape of an event body: a syntax error (or invalid UTF-8) is
    /// `MALFORMED_JSON`; wrong types, unknown fields, an empty or overlong `event_id` and a
    /// `sent_at` that is not RFC 3339 are `INVALID_ARGUMENT`.
    pub fn parse(bytes: &[u8]) -> Result<ChannelEvent, OpError> {
        let event: ChannelEvent = crate::json::parse(bytes)?;
        if event.event_id.trim().is_empty() {
            return Err(OpError::invalid("event_id must not be empty"));
        }
        if event.event_id.len() > MAX_EVENT_ID_LEN {
            return Err(OpError::invalid(format!(
                "event_id must be at most {MAX_EVENT_ID_LEN} bytes"
            )));
        }
        if let Some(at) = &event.sent_at
            && parse_rfc3339(at).is_none()
        {
            return Err(OpError::invalid("sent_at must be an RFC 3339 timestamp"));
        }
        Ok(event)
    }

    /// Returns the sender's identity: `union_id` when present (canonical across apps), else
    /// `external_member_id`; both empty is [`EMPTY_EXTERNAL_ID`]. Values are kept as written.
    pub fn identity(&self) -> Result<&str, OpError> {
        fn present(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|s| !s.trim().is_empty())
        }
        present(&self.sender.union_id)
            .or_else(|| present(&self.sender.external_member_id))
            .ok_or_else(|| {
                OpError::conflict(
                    EMPTY_EXTERNAL_ID,
                    "the sender has neither a union_id nor an external_member_id",
                )
            })
    }

    /// Returns the link code the event redeems: the text of a `link` event, or what follows
    /// `/link` in a message. Such events are never auto-provisioned.
    pub fn link_code(&self) -> Option<String> {
        let text = self.text.as_deref().unwrap_or("").trim();
        let code = match self.event_type {
            EventType::Link => text.strip_prefix("/link").unwrap_or(text),
            _ => text.strip_prefix("/link")?,
        };
        Some(code.trim().to_ascii_uppercase())
    }
}

/// The synchronous answer to a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Recorded; provisioning continues in the background (`202`).
    Accepted,
    /// The event id was already accepted on this channel within 24 hours (`200`).
    Duplicate,
}

// ---------------------------------------------------------------------------------------------
// What the scope decides.

/// The sender of an event as the scope provisions it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub org_id: Id,
    pub channel_id: Id,
    /// The channel's type, for the fallback username `<type>-<first 8 chars of the id>`.
    pub channel_type: String,
    pub external_member_id: String,
    pub name: Option<String>,
    pub last_message_at: Option<Millis>,
}

/// The member provisioning found or created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub member: Member,
    pub created: bool,
}

/// What redeeming a link code did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// The sender's member (created if needed) joined the code's member by manual unification.
    Joined {
        member: Box<Member>,
        target: Id,
    },
    /// No such code (or its member is gone, or in another scope).
    Unknown,
    Expired,
    Used,
    /// The code's member holds no value of an editable unify key to join on.
    NoKeyValue,
}

impl Redemption {
    fn label(&self) -> &'static str {
        match self {
            Redemption::Joined { .. } => "joined",
            Redemption::Unknown => "unknown",
            Redemption::Expired => "expired",
            Redemption::Used => "used",
            Redemption::NoKeyValue => "no_key_value",
        }
    }
}

/// Returns the username a provisioned member starts from: the email's local part, lowercased,
/// without characters outside `[a-z0-9._-]`; else `<channel type>-<first 8 chars of the id>`.
pub fn username_base(email: Option<&str>, channel_type: &str, external_member_id: &str) -> String {
    let local = email
        .and_then(|e| e.trim().split_once('@'))
        .map(|(local, _)| {
            local
                .to_lowercase()
                .chars()
                .filter(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
                .collect::<String>()
        })
        .filter(|l| !l.is_empty());
    local.unwrap_or_else(|| {
        let prefix: String = external_member_id.chars().take(8).collect();
        format!("{channel_type}-{prefix}")
    })
}

/// Returns the `n`-th username candidate of a base: the base, then `base-2`, `base-3`, ...
pub fn username_candidate(base: &str, n: u32) -> String {
    if n <= 1 {
        base.to_owned()
    } else {
        format!("{base}-{n}")
    }
}

// ---------------------------------------------------------------------------------------------
// The provisioner.

/// One accepted event waiting in its identity's lane.
#[derive(Debug)]
struct Job {
    org_id: Id,
    record: AcceptedEvent,
    event: ChannelEvent,
    /// Counts the event against the pending limits until it is provisioned.
    _pending: PendingSlot,
}

/// One event's place in the pending limits: the global one, and its channel's share (events
/// resumed after a restart take no channel share).
#[derive(Debug)]
struct PendingSlot {
    _global: OwnedSemaphorePermit,
    _channel: Option<ChannelShare>,
}

/// Pending events per channel.
#[derive(Debug, Default)]
struct ChannelShares(std::sync::Mutex<HashMap<Id, usize>>);

impl ChannelShares {
    /// Takes one of the channel's places, or `None` when it has [`MAX_PENDING_PER_CHANNEL`].
    fn try_take(self: &Arc<Self>, channel_id: Id) -> Option<ChannelShare> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(channel_id).or_default();
        if *count >= MAX_PENDING_PER_CHANNEL {
            return None;
        }
        *count += 1;
        Some(ChannelShare {
            shares: self.clone(),
            channel_id,
        })
    }
}

/// One place of a channel's share, given back when dropped.
#[derive(Debug)]
struct ChannelShare {
    shares: Arc<ChannelShares>,
    channel_id: Id,
}

impl Drop for ChannelShare {
    fn drop(&mut self) {
        let mut counts = self.shares.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.channel_id) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.channel_id);
            }
        }
    }
}

/// The lane key: a channel and a sender identity.
type LaneKey = (Id, String);

/// Per-identity lanes, the identity-keyed mailboxes of provisioning: the events of one
/// identity are provisioned one at a time in arrival order (the order in which the webhook
/// accepted them), so the first fetches the contact profile and the next find it cached. A
/// lane exists while it has work; one task drains it and removes it when it is empty.
#[derive(Debug, Default)]
struct Lanes {
    queues: std::sync::Mutex<HashMap<LaneKey, VecDeque<Job>>>,
}

impl Lanes {
    /// Queues a job; returns whether the lane was idle (the caller starts its drainer).
    fn push(&self, key: &LaneKey, job: Job) -> bool {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        match queues.get_mut(key) {
            Some(queue) => {
                queue.push_back(job);
                false
            }
            None => {
                queues.insert(key.clone(), VecDeque::from([job]));
                true
            }
        }
    }

    /// Returns the lane's next job, or removes the lane when it is empty.
    fn next(&self, key: &LaneKey) -> Option<Job> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let job = queues.get_mut(key).and_then(VecDeque::pop_front);
        if job.is_none() {
            queues.remove(key);
        }
        job
    }
}

/// Removes a lane whose drainer panicked, so that the identity's later events start a new
/// one (the dropped events stay pending in the store and resume at the next start).
struct DrainGuard<'a> {
    lanes: &'a Lanes,
    key: &'a LaneKey,
}

impl Drop for DrainGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut queues = self.lanes.queues.lock().unwrap_or_else(|e| e.into_inner());
            queues.remove(self.key);
        }
    }
}

/// Makes the webhook's writes durable with one flush at a time, shared by every caller
/// that asked before it started (group commit).
///
/// [`Store::flush_async`] alone is safe to call concurrently, but each call holds a thread of
/// the blocking pool for a whole flush; a burst of deliveries (50 at once) would queue that
/// many flushes. Here a burst costs one flush in progress and at most one more for everyone
/// who arrived during it.
#[derive(Debug, Default)]
struct Flusher {
    /// Tickets handed out: a caller's writes precede its ticket.
    requested: AtomicU64,
    /// Every ticket up to this one is durable.
    flushed: AtomicU64,
    turn: tokio::sync::Mutex<()>,
}

impl Flusher {
    /// Returns once every write made before the call is durable.
    async fn flush(&self, store: &Store) -> Result<(), OpError> {
        let ticket = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let _turn = self.turn.lock().await;
        if self.flushed.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let covered = self.requested.load(Ordering::Acquire);
        store.flush_async().await?;
        self.flushed.store(covered, Ordering::Release);
        Ok(())
    }
}

/// A cached contact profile.
#[derive(Debug, Clone)]
struct Cached {
    at: Instant,
    profile: EventProfile,
}

/// Provisioning state shared by the webhook path and the background work.
#[derive(Debug)]
pub struct Provisioner {
    router: Arc<Router>,
    /// The member actors: provisioning runs in the actor of the sender's identity.
    members: Arc<MemberRegistry>,
    client: reqwest::Client,
    permits: Arc<Semaphore>,
    channel_shares: Arc<ChannelShares>,
    lanes: Lanes,
    cache: std::sync::Mutex<HashMap<(Id, String), Cached>>,
    /// Set at shutdown: no new work is started; accepted events stay pending in the store.
    closing: AtomicBool,
    sweeper: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    flusher: Flusher,
}

impl Provisioner {
    pub(crate) fn new(
        router: Arc<Router>,
        members: Arc<MemberRegistry>,
    ) -> Result<Arc<Provisioner>, OpError> {
        let client = reqwest::Client::builder()
            .timeout(CONTACT_API_TIMEOUT)
            .connect_timeout(CONTACT_API_TIMEOUT)
            .build()
            .map_err(|e| OpError::Unavailable(format!("contact-API client: {e}")))?;
        Ok(Arc::new(Provisioner {
            router,
            members,
            client,
            permits: Arc::new(Semaphore::new(MAX_PENDING_EVENTS)),
            channel_shares: Arc::default(),
            lanes: Lanes::default(),
            cache: std::sync::Mutex::default(),
            closing: AtomicBool::new(false),
            sweeper: std::sync::Mutex::default(),
            flusher: Flusher::default(),
        }))
    }

    /// Resumes the events accepted but not provisioned before the last stop, and starts the
    /// periodic deletion of expired event ids and link codes.
    pub(crate) fn start(self: &Arc<Self>) {
        let this = self.clone();
        let task = tokio::spawn(async move {
            if let Err(err) = this.resume().await {
                tracing::error!(error = %err, "resuming accepted events failed");
            }
            let mut every = tokio::time::interval(SWEEP_EVERY);
            loop {
                every.tick().await;
                if let Err(err) = this.sweep() {
                    tracing::warn!(error = %err, "sweeping webhook records failed");
                }
            }
        });
        *self.sweeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Stops starting new work (events in flight stay pending in the store and resume at the
    /// next start).
    pub(crate) fn stop(&self) {
        self.closing.store(true, Ordering::Release);
        if let Some(task) = self
            .sweeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }

    async fn resume(self: &Arc<Self>) -> Result<(), OpError> {
        let store = self.router.store.clone();
        let pending = tokio::task::spawn_blocking(move || {
            store
                .scan_accepted_events()
                .filter(|r| r.as_ref().map_or(true, |e| e.pending.is_some()))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| OpError::Unavailable(e.to_string()))??;
        if !pending.is_empty() {
            tracing::info!(events = pending.len(), "resuming accepted channel events");
        }
        for record in pending {
            let Some(json) = &record.pending else {
                continue;
            };
            let event = match ChannelEvent::parse(json.as_bytes()) {
                Ok(event) => event,
                Err(err) => {
                    tracing::error!(channel_id = record.channel_id, event_id = %record.event_id, error = %err, "stored event unreadable, dropped");
                    self.finish(&record);
                    continue;
                }
            };
            let channel = match self.router.store.get_channel(record.channel_id) {
                Ok(channel) => channel,
                Err(e) if e.is_not_found() => {
                    // The channel was removed: nobody is left to provision for.
                    self.finish(&record);
                    continue;
                }
                // A storage error is not "no channel": the event stays pending for the next
                // start instead of being dropped.
                Err(e) => return Err(e.into()),
            };
            let permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| OpError::Unavailable(e.to_string()))?;
            let pending = PendingSlot {
                _global: permit,
                _channel: None,
            };
            self.dispatch(channel.org_id, record, event, pending);
        }
        Ok(())
    }

    /// Deletes event ids past their retention and link codes a day past their expiry.
    fn sweep(&self) -> Result<(), OpError> {
        let store = &self.router.store;
        let now = now_millis();
        let retained_since = now - EVENT_RETENTION.as_millis() as Millis;
        let mut batch = WriteBatch::new();
        for record in store.scan_accepted_events() {
            let record = record?;
            if record.pending.is_none() && record.received_at < retained_since {
                batch.delete_accepted_event(record.channel_id, &record.event_id);
            }
        }
        for code in store.scan_link_codes() {
            let code = code?;
            if code.expires_at < retained_since {
                batch.delete_link_code(&code.code);
            }
        }
        store.apply(batch)?;
        Ok(())
    }

    /// Provisions an accepted event in the background, in its identity's lane.
    fn dispatch(
        self: &Arc<Self>,
        org_id: Id,
        record: AcceptedEvent,
        event: ChannelEvent,
        pending: PendingSlot,
    ) {
        let Ok(identity) = event.identity().map(str::to_owned) else {
            self.finish(&record);
            return;
        };
        let key = (record.channel_id, identity);
        let job = Job {
            org_id,
            record,
            event,
            _pending: pending,
        };
        if self.lanes.push(&key, job) {
            let this = self.clone();
            tokio::spawn(async move {
                let _guard = DrainGuard {
                    lanes: &this.lanes,
                    key: &key,
                };
                while let Some(job) = this.lanes.next(&key) {
                    let done = this.provision(job.org_id, key.0, &key.1, &job.event).await;
                    if done {
                        this.finish(&job.record);
                    }
                }
            });
        }
    }

    /// Marks an accepted event provisioned. Not flushed: should the mark be lost in a crash,
    /// the event is provisioned again, which finds the same member.
    fn finish(&self, record: &AcceptedEvent) {
        let mut batch = WriteBatch::new();
        batch.put_accepted_event(&AcceptedEvent {
            pending: None,
            ..record.clone()
        });
        if let Err(err) = self.router.store.apply(batch) {
            tracing::warn!(channel_id = record.channel_id, event_id = %record.event_id, error = %err, "marking an event provisioned failed");
        }
    }

    /// Provisions one event in the identity's member actor (serialized with the creates of
    /// that identity); returns whether it is finished (`false`: left pending for the next
    /// start because the runtime is shutting down).
    async fn provision(
        self: &Arc<Self>,
        org_id: Id,
        channel_id: Id,
        identity: &str,
        event: &ChannelEvent,
    ) -> bool {
        let channel = match found(self.router.store.get_channel(channel_id), "channel") {
            Ok(channel) if channel.org_id == org_id => channel,
            Ok(_) | Err(OpError::NotFound(_)) => {
                count("skipped");
                return true;
            }
            Err(err) => {
                tracing::warn!(channel_id, error = %err, "provisioning failed");
                count("failed");
                return true;
            }
        };
        let sender = Sender {
            org_id,
            channel_id,
            channel_type: channel.channel_type.clone(),
            external_member_id: identity.to_owned(),
            name: event.sender.name.clone(),
            last_message_at: match event.event_type {
                EventType::Message => Some(
                    event
                        .sent_at
                        .as_deref()
                        .and_then(parse_rfc3339)
                        .unwrap_or_else(now_millis),
                ),
                _ => None,
            },
        };
        let link_code = event.link_code();
        if link_code.is_none() && !channel.auto_provision {
            count("skipped");
            return true;
        }
        let actor = Identity {
            org_id,
            channel_id: Some(channel_id),
            external_member_id: identity.to_owned(),
        };
        let this = self.clone();
        let profile = event.profile.clone();
        let work = move |_: crate::member::IdentityHandle| async move {
            Ok(this
                .provision_in_actor(channel, sender, link_code, profile)
                .await)
        };
        match self.members.run(&self.router, actor, work).await {
            Ok(done) => done,
            Err(err) => {
                count("failed");
                tracing::warn!(org_id, channel_id, error = %err, "provisioning failed");
                !self.closing.load(Ordering::Acquire)
            }
        }
    }

    /// The part of [`Provisioner::provision`] that runs in the identity's actor: redeems the
    /// link code, or fetches the profile (when the event has none) and provisions.
    async fn provision_in_actor(
        &self,
        channel: Channel,
        sender: Sender,
        link_code: Option<String>,
        profile: Option<EventProfile>,
    ) -> bool {
        let (org_id, channel_id) = (sender.org_id, sender.channel_id);
        if let Some(code) = link_code {
            // The link-code flow is authoritative: such events are never auto-provisioned.
            count("skipped");
            let result = self
                .call_scope(org_id, |reply| ScopeMsg::RedeemLinkCode {
                    sender: sender.clone(),
                    code: code.clone(),
                    reply,
                })
                .await;
            return match result {
                Ok(redemption) => {
                    metrics::counter!("unify_link_code_total", "outcome" => redemption.label())
                        .increment(1);
                    if let Redemption::Joined { member, target } = &redemption {
                        tracing::info!(org_id, member_id = member.id, target, "link code redeemed");
                    }
                    true
                }
                Err(err) => {
                    metrics::counter!("unify_link_code_total", "outcome" => "failed").increment(1);
                    tracing::warn!(org_id, channel_id, error = %err, "link-code redemption failed");
                    !self.closing.load(Ordering::Acquire)
                }
            };
        }
        let profile = match profile {
            Some(profile) => Some(profile),
            None => match &channel.contact_api {
                Some(api) => {
                    self.contact_profile(channel_id, &sender.external_member_id, api)
                        .await
                }
                None => None,
            },
        };
        let result = self
            .call_scope(org_id, |reply| ScopeMsg::Provision {
                sender: sender.clone(),
                profile: profile.clone(),
                reply,
            })
            .await;
        match result {
            Ok(p) => {
                count(if p.created { "created" } else { "existing" });
                true
            }
            Err(err) => {
                count("failed");
                tracing::warn!(org_id, channel_id, error = %err, "provisioning failed");
                !self.closing.load(Ordering::Acquire)
            }
        }
    }

    /// Calls the org's scope, retrying briefly while it is unavailable or overloaded.
    async fn call_scope<T: Send + 'static>(
        &self,
        org_id: Id,
        build: impl Fn(ractor::RpcReplyPort<Result<T, OpError>>) -> ScopeMsg,
    ) -> Result<T, OpError> {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let result = match self.router.scope_of(org_id) {
                Ok(scope_id) => self.router.call(scope_id, &build).await,
                Err(e) => Err(e),
            };
            match result {
                Err(OpError::Unavailable(_) | OpError::Overloaded)
                    if attempt < ATTEMPTS && !self.closing.load(Ordering::Acquire) =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff *= 4;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Returns the identity's contact profile: cached for an hour, else fetched from
    /// `GET {url}/users/{id}`. Any failure is logged and yields no profile.
    async fn contact_profile(
        &self,
        channel_id: Id,
        identity: &str,
        api: &ContactApi,
    ) -> Option<EventProfile> {
        let key = (channel_id, identity.to_owned());
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && hit.at.elapsed() < CONTACT_CACHE_TTL
        {
            return Some(hit.profile.clone());
        }
        match self.fetch_profile(api, identity).await {
            Ok(profile) => {
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= CONTACT_CACHE_MAX {
                    cache.retain(|_, c| c.at.elapsed() < CONTACT_CACHE_TTL);
                    if cache.len() >= CONTACT_CACHE_MAX {
                        cache.clear();
                    }
                }
                cache.insert(
                    key,
                    Cached {
                        at: Instant::now(),
                        profile: profile.clone(),
                    },
                );
                Some(profile)
            }
            Err(err) => {
                metrics::counter!("unify_contact_api_errors_total").increment(1);
                tracing::warn!(channel_id, error = %err, "contact-API fetch failed, provisioning without profile");
                None
            }
        }
    }

    async fn fetch_profile(
        &self,
        api: &ContactApi,
        identity: &str,
    ) -> Result<EventProfile, String> {
        /// The contact API's answer; other fields are ignored.
        #[derive(Deserialize)]
        struct Contact {
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            display_email: Option<String>,
            #[serde(default)]
            display_mobile: Option<String>,
        }
        let contact: Contact = self.get_json(api, &["users", identity]).await?;
        Ok(EventProfile {
            name: contact.name,
            display_email: contact.display_email,
            display_mobile: contact.display_mobile,
        })
    }

    /// Detects a channel's tenant key from `GET {url}/tenant` → `{tenant_key}`.
    async fn detect_tenant(&self, api: &ContactApi) -> Result<String, String> {
        #[derive(Deserialize)]
        struct Tenant {
            tenant_key: Option<String>,
        }
        let tenant: Tenant = self.get_json(api, &["tenant"]).await?;
        tenant
            .tenant_key
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| "answered no tenant_key".to_owned())
    }

    /// Sends `GET {url}/{segments}` to the contact API and decodes its JSON answer.
    async fn get_json<T: DeserializeOwned>(
        &self,
        api: &ContactApi,
        segments: &[&str],
    ) -> Result<T, String> {
        let url = endpoint(&api.url, segments)?;
        let response = self
            .client
            .get(url)
            .bearer_auth(&api.token)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        response
            .json()
            .await
            .map_err(|e| format!("unreadable answer: {e}"))
    }
}

/// Counts one provisioning outcome.
fn count(outcome: &'static str) {
    metrics::counter!("unify_provision_total", "outcome" => outcome).increment(1);
}

/// Returns `base` with path segments appended (each percent-encoded).
fn endpoint(base: &str, segments: &[&str]) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(base).map_err(|e| format!("bad contact-API url: {e}"))?;
    url.path_segments_mut()
        .map_err(|()| "bad contact-API url".to_owned())?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Checks a contact API's settings: an http(s) URL with a host and a token.
fn check_contact_api(api: &ContactApi) -> Result<(), OpError> {
    let url = reqwest::Url::parse(&api.url)
        .map_err(|e| OpError::invalid(format!("contact_api.url is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(OpError::invalid(
            "contact_api.url must be an http or https URL",
        ));
    }
    if api.token.trim().is_empty() {
        return Err(OpError::invalid("contact_api.token must not be empty"));
    }
    Ok(())
}

fn check_tenant_key(tenant_key: Option<&str>) -> Result<(), OpError> {
    match tenant_key {
        Some(k) if k.trim().is_empty() => Err(OpError::invalid(
            "tenant_key must not be empty (null removes it)",
        )),
        _ => Ok(()),
    }
}

/// Checks a channel as it is about to be saved: an auto-provisioning channel needs a tenant
/// key (detection happens before, see [`Runtime::settle_channel_patch`]).
pub(crate) fn check_channel(channel: &Channel) -> Result<(), OpError> {
    check_tenant_key(channel.tenant_key.as_deref())?;
    if let Some(api) = &channel.contact_api {
        check_contact_api(api)?;
    }
    if channel.auto_provision && channel.tenant_key.is_none() {
        return Err(OpError::invalid(
            "auto_provision needs a tenant_key, or a contact_api to detect it from",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The runtime's entry points.

impl Runtime {
    /// Accepts a channel event whose signature the caller has verified (SPEC 6, checks 2-5):
    /// a duplicate event id answers [`Acceptance::Duplicate`]; a tenant other than the
    /// channel's is [`TENANT_MISMATCH`] (counted); a sender without identity is
    /// [`EMPTY_EXTERNAL_ID`]. Nothing is written before these checks pass; then the event is
    /// recorded durably and provisioned in the background. `Overloaded` when too many events
    /// wait for provisioning.
    pub async fn accept_event(
        &self,
        channel: &Channel,
        event: ChannelEvent,
    ) -> Result<Acceptance, OpError> {
        let store = self.store();
        let now = now_millis();
        let retained_since = now - EVENT_RETENTION.as_millis() as Millis;
        if let Some(seen) = store.get_accepted_event(channel.id, &event.event_id)?
            && seen.received_at >= retained_since
        {
            metrics::counter!("unify_webhook_events_total", "status" => "duplicate").increment(1);
            return Ok(Acceptance::Duplicate);
        }
        if let Some(expected) = &channel.tenant_key
            && event.tenant_key.as_deref() != Some(expected.as_str())
        {
            metrics::counter!("unify_webhook_tenant_mismatch_total").increment(1);
            return Err(OpError::conflict(
                TENANT_MISMATCH,
                "the event's tenant_key is not the channel's",
            ));
        }
        event.identity()?;
        let provisioner = &self.provisioner;
        if provisioner.closing.load(Ordering::Acquire) {
            return Err(OpError::Unavailable("shutting down".into()));
        }
        let pending = PendingSlot {
            _global: provisioner
                .permits
                .clone()
                .try_acquire_owned()
                .map_err(|_| OpError::Overloaded)?,
            _channel: Some(
                provisioner
                    .channel_shares
                    .try_take(channel.id)
                    .ok_or(OpError::Overloaded)?,
            ),
        };
        let needs_work = channel.auto_provision || event.link_code().is_some();
        let record = AcceptedEvent {
            channel_id: channel.id,
            event_id: event.event_id.clone(),
            received_at: now,
            pending: needs_work.then(|| serde_json::to_string(&event).expect("events serialize")),
        };
        if !store.claim_accepted_event(&record, retained_since)? {
            metrics::counter!("unify_webhook_events_total", "status" => "duplicate").increment(1);
            return Ok(Acceptance::Duplicate);
        }
        self.provisioner.flusher.flush(store).await?;
        metrics::counter!("unify_webhook_events_total", "status" => "accepted").increment(1);
        if needs_work {
            provisioner.dispatch(channel.org_id, record, event, pending);
        } else {
            count("skipped");
        }
        Ok(Acceptance::Accepted)
    }

    /// Creates a single-use link code for a member of the org, valid for 10 minutes; a `link`
    /// event (or `/link CODE` message) redeems it.
    pub async fn create_link_code(&self, org_id: Id, member_id: Id) -> Result<LinkCode, OpError> {
        self.get_member(org_id, member_id).await?;
        let store = self.store();
        let now = now_millis();
        for _ in 0..8 {
            let code = LinkCode {
                code: random_code(),
                org_id,
                member_id,
                created_at: now,
                expires_at: now + LINK_CODE_TTL.as_millis() as Millis,
                used_by: None,
                used_at: None,
            };
            if store.insert_link_code(&code)? {
                self.provisioner.flusher.flush(store).await?;
                return Ok(code);
            }
        }
        Err(OpError::Unavailable("no free link code found".into()))
    }

    /// Checks a new channel's settings; an auto-provisioning channel without a tenant key gets
    /// the one its contact API reports.
    pub(crate) async fn settle_new_channel(
        &self,
        mut new: NewChannel,
    ) -> Result<NewChannel, OpError> {
        check_tenant_key(new.tenant_key.as_deref())?;
        if let Some(api) = &new.contact_api {
            check_contact_api(api)?;
        }
        if new.auto_provision && new.tenant_key.is_none() {
            new.tenant_key = Some(self.detect_tenant(new.contact_api.as_ref()).await?);
        }
        Ok(new)
    }

    /// Checks a channel patch against the channel it changes; when the result auto-provisions
    /// without a tenant key, the patch gets the one its contact API reports.
    pub(crate) async fn settle_channel_patch(
        &self,
        org_id: Id,
        channel_id: Id,
        mut patch: ChannelPatch,
    ) -> Result<ChannelPatch, OpError> {
        let current = self.channel(org_id, channel_id)?;
        if let Some(tenant_key) = &patch.tenant_key {
            check_tenant_key(tenant_key.as_deref())?;
        }
        if let Some(Some(api)) = &patch.contact_api {
            check_contact_api(api)?;
        }
        let tenant_key = patch.tenant_key.clone().unwrap_or(current.tenant_key);
        let auto_provision = patch.auto_provision.unwrap_or(current.auto_provision);
        let contact_api = patch.contact_api.clone().unwrap_or(current.contact_api);
        if auto_provision && tenant_key.is_none() {
            let detected = self.detect_tenant(contact_api.as_ref()).await?;
            patch.tenant_key = Some(Some(detected));
        }
        Ok(patch)
    }

    async fn detect_tenant(&self, api: Option<&ContactApi>) -> Result<String, OpError> {
        let Some(api) = api else {
            return Err(OpError::invalid(
                "auto_provision needs a tenant_key, or a contact_api to detect it from",
            ));
        };
        self.provisioner.detect_tenant(api).await.map_err(|e| {
            OpError::invalid(format!(
                "could not detect the tenant_key from the contact API: {e}"
            ))
        })
    }
}

fn random_code() -> String {
    let mut rng = rand::rng();
    (0..CODE_LEN)
        .map(|_| char::from(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_channel_cannot_take_every_pending_place() {
        let shares = Arc::new(ChannelShares::default());
        let mut held: Vec<_> = (0..MAX_PENDING_PER_CHANNEL)
            .map(|_| shares.try_take(1).expect("within the share"))
            .collect();
        assert!(
            shares.try_take(1).is_none(),
            "the flooding channel is refused"
        );
        assert!(
            shares.try_take(2).is_some(),
            "another channel still gets in"
        );
        held.pop();
        assert!(
            shares.try_take(1).is_some(),
            "a provisioned event frees its place"
        );
        drop(held);
        assert!(shares.0.lock().unwrap().get(&1).is_none_or(|&n| n == 0));
    }

    fn event(json: &str) -> Result<ChannelEvent, OpError> {
        ChannelEvent::parse(json.as_bytes())
    }

    fn code_of(err: OpError) -> &'static str {
        crate::input::error_code(&err)
    }

    #[test]
    fn the_spec_example_parses() {
        let e = event(
            r#"{"event_id": "evt-123", "type": "message", "tenant_key": "t-1",
                "sender": {"external_member_id": "ou_abc", "union_id": "on_xyz", "name": "Kevin"},
                "profile": {"display_email": "kevin@example.com", "display_mobile": null},
                "text": "hello", "sent_at": "2026-01-31T12:25:27Z"}"#,
        )
        .unwrap();
        assert_eq!(e.identity().unwrap(), "on_xyz");
        assert_eq!(e.link_code(), None);
        let round = serde_json::to_string(&e).unwrap();
        assert_eq!(ChannelEvent::parse(round.as_bytes()).unwrap(), e);
    }

    #[test]
    fn bad_shapes_get_their_codes() {
        let bad = |json: &str| code_of(event(json).unwrap_err());
        assert_eq!(bad(r#"{"event_id": "#), "MALFORMED_JSON");
        assert_eq!(
            bad(r#"{"event_id": "e", "type": "message", "sender": {}, "x": 1}"#),
            "INVALID_ARGUMENT"
        );
        assert_eq!(
            bad(r#"{"event_id": "e", "type": "poke", "sender": {}}"#),
            "INVALID_ARGUMENT"
        );
        assert_eq!(
            bad(r#"{"event_id": " ", "type": "message", "sender": {}}"#),
            "INVALID_ARGUMENT"
        );
        assert_eq!(
            bad(r#"{"event_id": "e", "type": "message", "sender": {"nick": "k"}}"#),
            "INVALID_ARGUMENT"
        );
        assert_eq!(
            bad(r#"{"event_id": "e", "type": "message", "sender": {}, "sent_at": "noon"}"#),
            "INVALID_ARGUMENT"
        );
        assert!(matches!(
            ChannelEvent::parse(&[0xff]),
            Err(OpError::Conflict {
                code: "MALFORMED_JSON",
                ..
            })
        ));
    }

    #[test]
    fn identity_prefers_union_id_and_refuses_blank() {
        let e = event(r#"{"event_id": "e", "type": "follow", "sender": {"union_id": " ", "external_member_id": "ou_1"}}"#).unwrap();
        assert_eq!(e.identity().unwrap(), "ou_1");
        let e = event(r#"{"event_id": "e", "type": "follow", "sender": {"union_id": "", "external_member_id": "  "}}"#).unwrap();
        assert_eq!(code_of(e.identity().unwrap_err()), EMPTY_EXTERNAL_ID);
    }

    #[test]
    fn link_codes_come_from_link_events_and_link_messages() {
        let with = |kind: &str, text: &str| {
            event(&format!(
                r#"{{"event_id": "e", "type": "{kind}", "sender": {{"union_id": "u"}}, "text": "{text}"}}"#
            ))
            .unwrap()
            .link_code()
        };
        assert_eq!(with("link", " abcd2345 "), Some("ABCD2345".into()));
        assert_eq!(with("link", "/link ABCD2345"), Some("ABCD2345".into()));
        assert_eq!(with("message", "/link abcd2345"), Some("ABCD2345".into()));
        assert_eq!(with("message", "hello /link X"), None);
        assert_eq!(with("reaction", "👍"), None);
    }

    #[test]
    fn usernames_come_from_the_email_or_the_channel() {
        assert_eq!(
            username_base(Some("Kevin.Lee+x@Example.com"), "line", "U1"),
            "kevin.leex"
        );
        assert_eq!(
            username_base(Some("李@x.com"), "feishu", "ou_abcdefghij"),
            "feishu-ou_abcde"
        );
        assert_eq!(username_base(Some("not-an-email"), "fb", "1234"), "fb-1234");
        assert_eq!(username_base(None, "line", "Uabcdefghijk"), "line-Uabcdefg");
        assert_eq!(username_candidate("kevin", 1), "kevin");
        assert_eq!(username_candidate("kevin", 3), "kevin-3");
    }

    #[test]
    fn contact_api_urls_are_checked_and_joined() {
        let api = |url: &str| ContactApi {
            url: url.into(),
            token: "t".into(),
        };
        assert!(check_contact_api(&api("https://contacts.example.com/v1")).is_ok());
        assert!(check_contact_api(&api("ftp://contacts.example.com")).is_err());
        assert!(check_contact_api(&api("not a url")).is_err());
        assert!(
            check_contact_api(&ContactApi {
                url: "http://x".into(),
                token: " ".into()
            })
            .is_err()
        );
        assert_eq!(
            endpoint("http://h:1/v1/", &["users", "a/b c"])
                .unwrap()
                .as_str(),
            "http://h:1/v1/users/a%2Fb%20c"
        );
        assert_eq!(
            endpoint("http://h:1", &["tenant"]).unwrap().as_str(),
            "http://h:1/tenant"
        );
    }
}
