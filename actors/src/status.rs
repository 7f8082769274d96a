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
    pub job_active: JobFlag,
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
    /// it before loading, so that it never loads while an earlier lane still writes, and the
    /// runtime takes it before its last flush at shutdown.
    pub lane_lock: Arc<tokio::sync::Mutex<()>>,
    /// Held by a snapshot task while it writes (the runtime waits for it at shutdown).
    pub snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    /// The scope is stopping: no snapshot starts, and one being written gives up at its next
    /// chunk (the journal holds everything).
    pub stopping: AtomicBool,
}

/// Whether a scope-wide job runs, with the generation of the last one begun: the commit lane
/// makes a job's end durable after the actor may have begun the next one, and that end must
/// not mark the next job finished.
#[derive(Debug, Default)]
pub struct JobFlag(AtomicU64);

impl JobFlag {
    pub fn is_active(&self) -> bool {
        self.0.load(Ordering::Acquire) & 1 == 1
    }

    /// Marks a new job active (the scope actor is the one caller); returns its generation.
    pub fn begin(&self) -> u64 {
        let generation = (self.0.load(Ordering::Acquire) >> 1) + 1;
        self.0.store(generation << 1 | 1, Ordering::Release);
        generation
    }

    /// Marks job `generation` finished, unless a later one has begun.
    pub fn finish(&self, generation: u64) {
        let _ = self.0.compare_exchange(
            generation << 1 | 1,
            generation << 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Marks no job active (a scope loaded without a pending job).
    pub fn clear(&self) {
        self.0.fetch_and(!1, Ordering::AcqRel);
    }
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
        !self.job_active.is_active()
            && self.mutating.load(Ordering::Acquire) == 0
            && self.imports.load(Ordering::Acquire) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_an_earlier_job_does_not_finish_a_later_one() {
        let flag = JobFlag::default();
        assert!(!flag.is_active());
        let first = flag.begin();
        let second = flag.begin();
        assert!(flag.is_active());
        // The first job's last batch becomes durable after the second job began.
        flag.finish(first);
        assert!(flag.is_active());
        flag.finish(second);
        assert!(!flag.is_active());
        let third = flag.begin();
        assert!(third > second && flag.is_active());
        flag.clear();
        assert!(!flag.is_active());
    }
}
