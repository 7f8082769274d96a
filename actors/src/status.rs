//! Per-scope counters shared between the runtime and the scope actor, readable without a
//! message (merge state, backpressure, readiness) and surviving actor restarts.

use std::sync::Arc;
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
    /// The seq of the scope's last durable event: see [`DurableSeq`].
    pub durable_seq: DurableSeq,
    /// Held by the scope's commit lane while it writes; an actor taking over the scope takes
    /// it before loading, so that it never loads while an earlier lane still writes.
    pub lane_lock: Arc<tokio::sync::Mutex<()>>,
}

/// The seq of a scope's last durable event, where reads of its event log stop: the store shows
/// a batch's event block as soon as the batch is written, before the flush that makes it
/// durable, and a replayed event must never be one a crash can still take back (its seq would
/// be reused for another event). Unbounded until the scope's actor has loaded in this process,
/// since whatever a store holds when it opens is durable.
#[derive(Debug)]
pub struct DurableSeq(AtomicU64);

impl Default for DurableSeq {
    fn default() -> Self {
        DurableSeq(AtomicU64::new(u64::MAX))
    }
}

impl DurableSeq {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Records that every event up to `seq` is durable.
    pub fn set(&self, seq: u64) {
        self.0.store(seq, Ordering::Release);
    }
}

impl ScopeStatus {
    /// Returns whether the scope has no pending unification work.
    pub fn is_finished(&self) -> bool {
        !self.job_active.load(Ordering::Acquire)
            && self.mutating.load(Ordering::Acquire) == 0
            && self.imports.load(Ordering::Acquire) == 0
    }
}
