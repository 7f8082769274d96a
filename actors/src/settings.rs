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
    /// Events retained per scope.
    pub events_retain: u64,
    /// Whether a CDH is configured; without one nothing is queued in the outbox.
    pub cdh_enabled: bool,
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
            job_chunk: 50_000,
            events_retain: 100_000,
            cdh_enabled: false,
        }
    }
}
