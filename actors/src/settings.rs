//! Settings of the actor runtime, derived from the binary's configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Limits, Normalizer};

/// Everything the actors need to know about the deployment's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub normalizer: Arc<Normalizer>,
    pub limits: Limits,
    /// Operations queued or running per scope before new ones are refused.
    pub max_in_flight_per_scope: usize,
    /// Operations applied together in one atomic write and one flush.
    pub batch_max: usize,
    /// A member actor stops after this long without messages.
    pub member_idle: Duration,
    /// Timeout of one call into an actor.
    pub call_timeout: Duration,
    /// Restarts of one scope allowed within `restart_window` before it is marked failed.
    pub restart_limit: u32,
    pub restart_window: Duration,
    /// Members rewritten per chunk of a scope-wide job.
    pub job_chunk: usize,
    /// Lines per import chunk (clamped to 1..=5000): one journal record and one commit each.
    pub import_chunk: usize,
    /// Events retained per scope.
    pub events_retain: u64,
    /// Journal bytes of an org after which a new snapshot is written in the background (at
    /// least the size of the last snapshot, so that snapshot writing stays a fraction of the
    /// journal written).
    pub snapshot_min_bytes: u64,
    /// Whether a CDH is configured; without one nothing is queued in the outbox.
    /// [`crate::runtime::Runtime::start`] sets it when `cdh` is given.
    pub cdh_enabled: bool,
    /// Where and how the bridge delivers the outbox; `None` runs no bridge.
    pub cdh: Option<CdhSettings>,
    /// Limits of channel-event intake and provisioning.
    pub webhooks: WebhookSettings,
}

/// Limits of channel-event intake and provisioning (SPEC 6): how many accepted events may
/// wait, how a failing contact API is spared, and how many wrong link codes a sender may try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Accepted events waiting for provisioning, over every channel; beyond it the webhook
    /// answers `OVERLOADED` instead of queueing without bound.
    pub max_pending: usize,
    /// Events one channel may have waiting, so a flood on one channel answers 429 there
    /// instead of taking every other channel's share of `max_pending`.
    pub max_pending_per_channel: usize,
    /// Events one sender (channel and identity) may have waiting, so one chatty sender whose
    /// provisioning is slow cannot take its channel's whole share.
    pub max_pending_per_sender: usize,
    /// Timeout of one contact-API request, connection included.
    pub contact_api_timeout: Duration,
    /// How long a failed profile fetch is remembered for its identity: the identity's later
    /// events provision without profile instead of waiting on the contact API again.
    pub contact_failure_ttl: Duration,
    /// Consecutive failed fetches of one channel after which its contact API is not asked for
    /// `contact_breaker_cooldown` (then one fetch probes it); 0 turns the breaker off.
    pub contact_breaker_failures: u32,
    pub contact_breaker_cooldown: Duration,
    /// Failed link-code redemptions one sender may make within `link_attempt_window`; beyond
    /// them its redemptions are refused until the window has passed. 0 turns the limit off.
    pub link_max_failed_attempts: u32,
    pub link_attempt_window: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            max_pending: 10_000,
            max_pending_per_channel: 2_000,
            max_pending_per_sender: 100,
            contact_api_timeout: Duration::from_secs(5),
            contact_failure_ttl: Duration::from_secs(60),
            contact_breaker_failures: 5,
            contact_breaker_cooldown: Duration::from_secs(30),
            link_max_failed_attempts: 10,
            link_attempt_window: Duration::from_secs(600),
        }
    }
}

/// The CDH endpoint and the bridge's delivery policy (SPEC 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdhSettings {
    /// Base URL; batches are posted to `{url}/v1/unify-events`.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// Timeout of one delivery request, connection included.
    pub timeout: Duration,
    /// Events per delivered batch.
    pub batch_max: usize,
    /// Permanent rejections of a batch before it is dead-lettered.
    pub max_attempts: u32,
    /// First retry delay; it doubles with every failed attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl Default for CdhSettings {
    fn default() -> Self {
        CdhSettings {
            url: String::new(),
            token: None,
            timeout: Duration::from_millis(5000),
            batch_max: 100,
            max_attempts: 12,
            retry_base: Duration::from_millis(1000),
            retry_max: Duration::from_millis(300_000),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            normalizer: Arc::new(Normalizer::default()),
            limits: Limits::default(),
            max_in_flight_per_scope: 10_000,
            batch_max: 512,
            member_idle: Duration::from_secs(30),
            call_timeout: Duration::from_secs(5),
            restart_limit: 5,
            restart_window: Duration::from_secs(60),
            job_chunk: 1_000,
            import_chunk: 5_000,
            events_retain: 100_000,
            snapshot_min_bytes: 64 << 20,
            cdh_enabled: false,
            cdh: None,
            webhooks: WebhookSettings::default(),
        }
    }
}
