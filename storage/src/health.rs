//! Whether the store can write, and the two metrics an operator alerts on.
//!
//! sled keeps the first I/O error it meets (a full disk, a failed write or fsync) and fails
//! every later write with it, even once the disk has room again; only a new instance of the
//! database starts clean. So the store is either [`Health::Ok`] or [`Health::Failed`]: failed
//! from the first I/O error on, until it has been reopened from what is on disk (`db.rs`).
//!
//! - `unify_storage_state` (gauge): 0 while the store is ok, 1 while it is failed and being
//!   recovered;
//! - `unify_storage_errors_total{kind}` (counter): every failed store operation, by
//!   [`StoreError::kind`] (`no_space`, `io`, `corrupt`, `db`, ...).

use crate::error::StoreError;

/// Name of the gauge of the store's [`Health`].
pub const STATE_METRIC: &str = "unify_storage_state";

/// Name of the counter of failed store operations.
pub const ERRORS_METRIC: &str = "unify_storage_errors_total";

/// Whether the store can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Writes succeed (as far as the store knows).
    Ok,
    /// An I/O error was met: every write fails until the store has been reopened, which it
    /// retries by itself once the file system accepts writes again.
    Failed,
}

impl Health {
    /// Returns the value of the state gauge.
    pub const fn gauge(self) -> f64 {
        match self {
            Health::Ok => 0.0,
            Health::Failed => 1.0,
        }
    }
}

/// Sets the state gauge.
pub(crate) fn record_state(health: Health) {
    metrics::gauge!(STATE_METRIC).set(health.gauge());
}

/// Counts a failed store operation.
pub(crate) fn record_error(err: &StoreError) {
    metrics::counter!(ERRORS_METRIC, "kind" => err.kind()).increment(1);
}
