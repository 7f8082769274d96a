//! Per-scope counters shared between the runtime and the scope actor, readable without a
//! message (merge state, backpressure, readiness) and surviving actor restarts.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwapOption;

use crate::roster::MemberView;

/// Live state of one scope.
#[derive(Debug, Default)]
pub struct ScopeStatus {
    /// Operations sent to the scope (directly or through member actors) and not yet answered.
    pub in_flight: AtomicUsize,
    /// Mutations among `in_flight`.
    pub mutating: AtomicUsize,
    /// A scope-wide job is scheduled or running and its result is not yet durable.
    pub job_active: AtomicBool,
    pub job_done: AtomicU64,
    pub job_total: AtomicU64,
    /// Members in the scope (after the last commit).
    pub members: AtomicU64,
    /// The actor is running (false while it loads or restarts).
    pub running: AtomicBool,
    /// Times an actor was started for this scope (restarts included).
    pub starts: AtomicU64,
    /// The actor failed more often than the restart limit allows and is not restarted.
    pub failed: AtomicBool,
    /// The actor stopped while the store could not write and is restarted once it can;
    /// meanwhile its last published `view`, durable by construction, still answers reads.
    pub waiting_for_store: AtomicBool,
    /// Bulk imports running into the scope (their members are not all unified yet).
    pub imports: AtomicUsize,
    /// The scope's members as of its last durable commit; `None` while the actor loads.
    /// Member reads take it without a message to the actor.
    pub view: ArcSwapOption<MemberView>,
}

impl ScopeStatus {
    /// Returns whether the scope has no pending unification work.
    pub fn is_finished(&self) -> bool {
        !self.job_active.load(Ordering::Acquire)
            && self.mutating.load(Ordering::Acquire) == 0
            && self.imports.load(Ordering::Acquire) == 0
    }
}
