//! Channel events and auto-provisioning (SPEC 6).
//!
//! The provisioning service. [`Provisioner::accept_event`] answers a webhook delivery synchronously, checking in the order
//! of the contract (duplicate event id, tenant, identity) before it writes anything; the one
//! write is the [`AcceptedEvent`] record, claimed with compare-and-swap so that concurrent
//! deliveries of one event id are accepted once, and flushed before the answer. It holds the
//! event until it is provisioned, so an event acknowledged just before a crash is provisioned
//! after the restart.
//!
//! Provisioning runs off the webhook's path. The events of one identity queue in its lane
//! (see [`Lanes`]) in the order the webhook accepted them, and each runs in the identity's
//! actor ([`Members::run_in_identity`]), serialized with the API's creates of that identity:
//! the slow contact-API fetch happens there, never in a scope actor. The get-or-create, the
//! enrichment, the username and the link-code redemption are decided by the scope actor
//! (`scope/provision.rs`), where the writes of an org are serialized: that is what
//! makes one member per identity and one holder per username race-free.
//!
//! Below it: the pending limits of accepted events ([`pending`]), the contact-API client
//! with its memory of outcomes and its circuit breaker ([`contact`]), and the limit on
//! failed link-code redemptions ([`attempts`]). It owns all of that state. It may call the
//! scope client (retried, see [`ScopeClient::call_retrying`]) and the members service; the
//! payloads it sends a scope are in `protocol`. It never imports the runtime.

mod attempts;
mod contact;
mod pending;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};
use unify_storage::{AcceptedEvent, Channel, ContactApi, Id, LinkCode, Millis, Store, WriteBatch};

use self::attempts::LinkAttempts;
pub use self::contact::CONTACT_CACHE_TTL;
use self::contact::Contacts;
use self::pending::{Pending, PendingSlot};

use crate::clock::{now_millis, parse_rfc3339};
use crate::error::{Code, OpError, found};
use crate::member::{Identity, IdentityHandle};
use crate::members::Members;
pub use crate::protocol::EventProfile;
use crate::protocol::{Redemption, ScopeMsg, Sender};
use crate::scope_client::ScopeClient;

/// How long an accepted event id answers "duplicate".
pub const EVENT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How long a link code can be redeemed.
pub const LINK_CODE_TTL: Duration = Duration::from_secs(10 * 60);

/// Longest accepted `event_id` (it is part of a store key).
const MAX_EVENT_ID_LEN: usize = 256;

/// How often expired event ids and link codes are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// Characters of link codes: no `0/O` or `1/I` to misread.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const CODE_LEN: usize = 10;

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
    /// `external_member_id`; both empty is `EMPTY_EXTERNAL_ID`. Values are kept as written.
    pub fn identity(&self) -> Result<&str, OpError> {
        fn present(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|s| !s.trim().is_empty())
        }
        present(&self.sender.union_id)
            .or_else(|| present(&self.sender.external_member_id))
            .ok_or_else(|| {
                OpError::conflict(
                    Code::EmptyExternalId,
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
    /// When the event was queued: a contact-API outcome obtained since serves it.
    queued_at: Instant,
    /// Counts the event against the pending limits until it is provisioned.
    _pending: PendingSlot,
}

/// The lane key: a channel and a sender identity.
type LaneKey = (Id, String);

/// Per-identity lanes, the identity-keyed mailboxes of provisioning: the events of one
/// identity are provisioned one at a time in arrival order (the order in which the webhook
/// accepted them), so the first fetches the contact profile and the events queued behind it
/// reuse that fetch's outcome, a failure included (see [`contact`]). A lane exists while it
/// has work; one task drains it and removes it when it is empty.
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

/// Provisioning state shared by the webhook path and the background work.
#[derive(Debug)]
pub struct Provisioner {
    client: Arc<ScopeClient>,
    /// The members: provisioning runs in the actor of the sender's identity.
    members: Arc<Members>,
    pending: Pending,
    contacts: Contacts,
    link_attempts: LinkAttempts,
    lanes: Lanes,
    /// Set at shutdown: no new work is started; accepted events stay pending in the store.
    closing: AtomicBool,
    sweeper: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    flusher: Flusher,
}

impl Provisioner {
    pub fn new(
        client: Arc<ScopeClient>,
        members: Arc<Members>,
    ) -> Result<Arc<Provisioner>, OpError> {
        let settings = &client.settings().webhooks;
        Ok(Arc::new(Provisioner {
            pending: Pending::new(settings),
            contacts: Contacts::new(settings)?,
            link_attempts: LinkAttempts::new(settings),
            client,
            members,
            lanes: Lanes::default(),
            closing: AtomicBool::new(false),
            sweeper: std::sync::Mutex::default(),
            flusher: Flusher::default(),
        }))
    }

    /// Accepts a channel event whose signature the caller has verified (SPEC 6, checks 2-5):
    /// a duplicate event id answers [`Acceptance::Duplicate`]; a tenant other than the
    /// channel's is `TENANT_MISMATCH` (counted); a sender without identity is
    /// `EMPTY_EXTERNAL_ID`. Nothing is written before these checks pass; then the event is
    /// recorded durably and provisioned in the background. `Overloaded` when too many events
    /// wait for provisioning: over every channel, on the event's channel, or of its sender.
    pub async fn accept_event(
        self: &Arc<Self>,
        channel: &Channel,
        event: ChannelEvent,
    ) -> Result<Acceptance, OpError> {
        let store = self.client.store();
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
                Code::TenantMismatch,
                "the event's tenant_key is not the channel's",
            ));
        }
        let sender: LaneKey = (channel.id, event.identity()?.to_owned());
        if self.closing.load(Ordering::Acquire) {
            return Err(OpError::Unavailable("shutting down".into()));
        }
        let needs_work = channel.auto_provision || event.link_code().is_some();
        // Only an event that will be provisioned takes a pending place.
        let pending = needs_work
            .then(|| self.pending.admit(&sender))
            .transpose()?;
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
        let flushed = self.flusher.flush(store).await;
        // The claim is in the store even when its flush failed, so a retry of the platform is
        // answered "duplicate": the event is provisioned anyway (that is idempotent), and the
        // error tells the platform that this answer is not an acknowledgement.
        match pending {
            Some(pending) => self.dispatch(channel.org_id, record, event, pending),
            None => count("skipped"),
        }
        flushed?;
        metrics::counter!("unify_webhook_events_total", "status" => "accepted").increment(1);
        Ok(Acceptance::Accepted)
    }

    /// Creates a single-use link code for a member of the org, valid for 10 minutes; a `link`
    /// event (or `/link CODE` message) redeems it.
    pub async fn create_link_code(&self, org_id: Id, member_id: Id) -> Result<LinkCode, OpError> {
        self.members.get_member(org_id, member_id).await?;
        let store = self.client.store();
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
                self.flusher.flush(store).await?;
                return Ok(code);
            }
        }
        Err(OpError::Unavailable("no free link code found".into()))
    }

    /// Resumes the events accepted but not provisioned before the last stop, and starts the
    /// periodic deletion of expired event ids and link codes.
    pub fn start(self: &Arc<Self>) {
        let this = self.clone();
        let started = now_millis();
        let task = tokio::spawn(async move {
            if let Err(err) = this.resume(started).await {
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
    pub fn stop(&self) {
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

    /// Dispatches the events accepted before `started` that are still pending, in the order
    /// they were accepted. Events accepted since are dispatched by `accept_event`; an event
    /// stamped later by a clock that went back stays pending until the next start.
    async fn resume(self: &Arc<Self>, started: Millis) -> Result<(), OpError> {
        let store = self.client.store().clone();
        let mut pending = tokio::task::spawn_blocking(move || {
            store
                .scan_accepted_events()
                .filter(|r| {
                    r.as_ref()
                        .map_or(true, |e| e.pending.is_some() && e.received_at < started)
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| OpError::Unavailable(e.to_string()))??;
        pending.sort_by_key(|e| e.received_at);
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
            let channel = match self.client.store().get_channel(record.channel_id) {
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
            let Ok(identity) = event.identity() else {
                // Accepted events always had one; a record without is of no use.
                self.finish(&record);
                continue;
            };
            let sender: LaneKey = (channel.id, identity.to_owned());
            let pending = self.pending.admit_resumed(&sender).await?;
            self.dispatch(channel.org_id, record, event, pending);
        }
        Ok(())
    }

    /// Deletes event ids past their retention and link codes a day past their expiry, and
    /// forgets expired contact-API outcomes and link-code failures.
    fn sweep(&self) -> Result<(), OpError> {
        self.contacts.prune();
        self.link_attempts.prune(Instant::now());
        let store = self.client.store();
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
            queued_at: Instant::now(),
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
                    let done = this.provision(&job, &key).await;
                    if done {
                        this.finish(&job.record);
                    }
                }
            });
        }
    }

    /// Marks an accepted event provisioned. Not flushed: the scope already marked an event it
    /// provisioned in the write that provisioned it (see [`Sender::event`]); for the others
    /// (skipped, dropped) a mark lost in a crash only means they are looked at again.
    fn finish(&self, record: &AcceptedEvent) {
        let mut batch = WriteBatch::new();
        batch.put_accepted_event(&AcceptedEvent {
            pending: None,
            ..record.clone()
        });
        if let Err(err) = self.client.store().apply(batch) {
            tracing::warn!(channel_id = record.channel_id, event_id = %record.event_id, error = %err, "marking an event provisioned failed");
        }
    }

    /// Provisions one event in the identity's member actor (serialized with the creates of
    /// that identity); returns whether it is finished (`false`: left pending for the next
    /// start because the runtime is shutting down).
    async fn provision(self: &Arc<Self>, job: &Job, key: &LaneKey) -> bool {
        let (org_id, event) = (job.org_id, &job.event);
        let (channel_id, identity) = (key.0, key.1.as_str());
        let channel = match found(self.client.store().get_channel(channel_id), "channel") {
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
            event: Some(job.record.clone()),
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
        let queued_at = job.queued_at;
        let work = move |_: IdentityHandle| async move {
            Ok(this
                .provision_in_actor(channel, sender, link_code, profile, queued_at)
                .await)
        };
        match self.members.run_in_identity(actor, work).await {
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
        queued_at: Instant,
    ) -> bool {
        let (org_id, channel_id) = (sender.org_id, sender.channel_id);
        let key: LaneKey = (channel_id, sender.external_member_id.clone());
        if let Some(code) = link_code {
            // The link-code flow is authoritative: such events are never auto-provisioned.
            count("skipped");
            return self.redeem(sender, code, &key).await;
        }
        let profile = match profile {
            Some(profile) => Some(profile),
            None => match &channel.contact_api {
                Some(api) => self.contacts.profile(&key, api, queued_at).await,
                None => None,
            },
        };
        let result = self
            .client
            .call_retrying(org_id, &self.closing, |reply| ScopeMsg::Provision {
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

    /// Redeems a link code for the sender unless its failed attempts are at the limit;
    /// returns whether the event is finished. Unknown, used and expired codes count as
    /// failed attempts; a valid code whose member has no key value to join on does not (the
    /// sender did not guess wrong).
    async fn redeem(&self, sender: Sender, code: String, key: &LaneKey) -> bool {
        let (org_id, channel_id) = (sender.org_id, sender.channel_id);
        if let Some(failures) = self.link_attempts.limited(key, Instant::now()) {
            metrics::counter!("unify_link_code_total", "outcome" => "limited").increment(1);
            tracing::warn!(
                org_id,
                channel_id,
                external_member_id = %key.1,
                failures,
                "link-code redemption refused, too many failed attempts"
            );
            return true;
        }
        let result = self
            .client
            .call_retrying(org_id, &self.closing, |reply| ScopeMsg::RedeemLinkCode {
                sender: sender.clone(),
                code: code.clone(),
                reply,
            })
            .await;
        match result {
            Ok(redemption) => {
                metrics::counter!("unify_link_code_total", "outcome" => redemption.label())
                    .increment(1);
                match &redemption {
                    Redemption::Joined { member, target } => {
                        tracing::info!(org_id, member_id = member.id, target, "link code redeemed");
                    }
                    Redemption::Unknown | Redemption::Expired | Redemption::Used => {
                        self.link_attempts.record_failure(key, Instant::now());
                    }
                    Redemption::NoKeyValue => {}
                }
                true
            }
            Err(err) => {
                metrics::counter!("unify_link_code_total", "outcome" => "failed").increment(1);
                tracing::warn!(org_id, channel_id, error = %err, "link-code redemption failed");
                !self.closing.load(Ordering::Acquire)
            }
        }
    }

    /// Detects a channel's tenant key from its contact API.
    pub async fn detect_tenant(&self, api: &ContactApi) -> Result<String, String> {
        self.contacts.detect_tenant(api).await
    }
}

/// Counts one provisioning outcome.
fn count(outcome: &'static str) {
    metrics::counter!("unify_provision_total", "outcome" => outcome).increment(1);
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

    fn event(json: &str) -> Result<ChannelEvent, OpError> {
        ChannelEvent::parse(json.as_bytes())
    }

    fn code_of(err: OpError) -> &'static str {
        err.code().as_str()
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
                code: Code::MalformedJson,
                ..
            })
        ));
    }

    #[test]
    fn identity_prefers_union_id_and_refuses_blank() {
        let e = event(r#"{"event_id": "e", "type": "follow", "sender": {"union_id": " ", "external_member_id": "ou_1"}}"#).unwrap();
        assert_eq!(e.identity().unwrap(), "ou_1");
        let e = event(r#"{"event_id": "e", "type": "follow", "sender": {"union_id": "", "external_member_id": "  "}}"#).unwrap();
        assert_eq!(
            code_of(e.identity().unwrap_err()),
            Code::EmptyExternalId.as_str()
        );
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
}
