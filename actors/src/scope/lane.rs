//! The scope's commit lane (pipelined group commit): the batches the actor stages are encoded,
//! written and flushed here, in order, on a thread of their own, and then published and
//! answered, in the same order, by a task of the runtime ([`deliver`]), while the actor goes on
//! handling the next messages. A bulk import's next chunk is unified while the previous one is
//! written, so the scope uses a second core instead of waiting for the store.
//!
//! What a batch's writer promises stays as it was: its view is published once the store holds
//! the batch, and its events, its replies and the scope's durable event seq follow the flush.
//! When a write or a flush fails, the view is put back to the last durable one, the batch and
//! every batch behind it are answered with an error and never written, and the actor is told to
//! fail (`ScopeMsg::CommitFailed`), so that it is restarted from what the store holds. At most
//! [`DEPTH`] batches wait in the lane; the actor waits for room beyond that.
//!
//! A lane outlives the actor that started it until it has written what it was given; the next
//! incarnation of the scope loads only after that (the lane holds the scope's `lane_lock`).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ractor::{ActorProcessingErr, ActorRef};
use tokio::sync::{OwnedMutexGuard, mpsc};
use unify_storage::{EventBlockSpan, EventRecord, Id, MemberWrite, OutboxEntry, Store, WriteBatch};

use super::Deferred;
use crate::events::Event;
use crate::hub::Hub;
use crate::protocol::ScopeMsg;
use crate::roster::MemberView;
use crate::status::ScopeStatus;

/// Batches that may wait in the lane behind the one being written.
const DEPTH: usize = 2;

/// A batch handed to the lane, with what follows its flush. The lane encodes its journal
/// records and its events, so that the actor spends no time on them.
pub(super) struct Commit {
    /// Its records other than journal records and events.
    pub batch: WriteBatch,
    /// Per org: the journal record's seq and its member writes.
    pub journal: Vec<(Id, u64, Vec<MemberWrite>)>,
    /// The members once the batch is written.
    pub view: Arc<MemberView>,
    /// The scope's last event seq once the batch is written.
    pub last_seq: u64,
    pub events: Vec<Event>,
    /// The scope is CDH-connected: each event gets an outbox entry.
    pub outbox: bool,
    pub replies: Vec<Deferred>,
    pub members: u64,
    /// The running scope-wide job (this generation) finishes with this batch.
    pub finishes_job: Option<u64>,
    pub block: Option<EventBlockSpan>,
    /// The lane panics on this batch (a fault for tests).
    #[cfg(test)]
    pub panic: bool,
}

/// The actor's end of its lane.
pub(super) struct Lane {
    sender: Option<mpsc::Sender<Commit>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Batches handed over and not yet answered.
    in_flight: Arc<AtomicUsize>,
    /// A write failed: everything handed over since is refused.
    failed: Arc<AtomicBool>,
}

impl Lane {
    /// Starts the lane of a scope, holding its `lane_lock` (taken by the caller before the
    /// scope loaded) until the lane has written everything. The scope's published view is its
    /// last durable one.
    pub fn start(
        scope_id: Id,
        store: Store,
        status: Arc<ScopeStatus>,
        hub: Hub,
        actor: ActorRef<ScopeMsg>,
        lane_lock: OwnedMutexGuard<()>,
    ) -> Lane {
        let (sender, receiver) = mpsc::channel(DEPTH);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let (deliveries, delivering) = mpsc::unbounded_channel();
        tokio::spawn(deliver(
            delivering,
            scope_id,
            status.clone(),
            hub,
            in_flight.clone(),
        ));
        let writer = Writer {
            failed: failed.clone(),
            lane_lock,
            scope_id,
            store,
            status,
            actor,
            deliveries,
        };
        let thread = std::thread::Builder::new()
            .name(format!("scope-{scope_id}-commit"))
            .spawn(move || writer.run(receiver))
            .expect("the commit lane thread starts");
        Lane {
            sender: Some(sender),
            thread: Some(thread),
            in_flight,
            failed,
        }
    }

    /// Returns whether every batch handed over is written and answered.
    pub fn is_idle(&self) -> bool {
        !self.has_failed() && self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Returns whether a write failed (the actor's memory may hold a batch never written).
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Hands a batch over, waiting while the lane is full.
    pub async fn submit(&self, commit: Commit) -> Result<(), ActorProcessingErr> {
        let Some(sender) = &self.sender else {
            return Err("the commit lane is closed".into());
        };
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError(commit)) = sender.send(commit).await {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            for reply in commit.replies {
                reply(Err("the scope could not persist the operation".into()));
            }
            return Err("the commit lane stopped".into());
        }
        Ok(())
    }

    /// Waits until every batch handed over is written and answered, and the lane is gone.
    pub async fn close(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// What follows a batch's flush, done on the runtime (see [`deliver`]).
struct Delivery {
    /// `Err` when the batch was not written.
    outcome: Result<(), String>,
    events: Vec<Event>,
    replies: Vec<Deferred>,
    members: u64,
    finishes_job: Option<u64>,
    notify_outbox: bool,
}

/// Publishes each batch's events and answers its callers, in order, from a task of the
/// runtime: a websocket's task woken from a runtime worker is scheduled on that worker and
/// stolen by the other, where one woken from the lane's thread would queue in the runtime's
/// shared queue (10k subscribers took 70 ms instead of 40). Counts the batch answered last.
async fn deliver(
    mut deliveries: mpsc::UnboundedReceiver<Delivery>,
    scope_id: Id,
    status: Arc<ScopeStatus>,
    hub: Hub,
    in_flight: Arc<AtomicUsize>,
) {
    while let Some(delivery) = deliveries.recv().await {
        if let Err(message) = delivery.outcome {
            for reply in delivery.replies {
                reply(Err(message.clone()));
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        // Events go out before anything is answered: a caller that subscribes after its
        // reply does not receive this batch's events live.
        hub.publish(scope_id, delivery.events);
        status.members.store(delivery.members, Ordering::Release);
        if let Some(generation) = delivery.finishes_job {
            status.job_active.finish(generation);
        }
        for reply in delivery.replies {
            reply(Ok(()));
        }
        if delivery.notify_outbox {
            // The batch made outbox entries durable: the bridge delivers them now.
            hub.notify_outbox();
        }
        in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Returns what a panic said.
fn reason(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// The lane's thread.
struct Writer {
    failed: Arc<AtomicBool>,
    lane_lock: OwnedMutexGuard<()>,
    scope_id: Id,
    store: Store,
    status: Arc<ScopeStatus>,
    actor: ActorRef<ScopeMsg>,
    deliveries: mpsc::UnboundedSender<Delivery>,
}

impl Writer {
    fn run(self, mut receiver: mpsc::Receiver<Commit>) {
        let mut durable = self.status.view.load_full();
        while let Some(mut commit) = receiver.blocking_recv() {
            if self.failed.load(Ordering::Acquire) {
                self.refuse(commit.replies);
                continue;
            }
            let replies = std::mem::take(&mut commit.replies);
            let view = commit.view.clone();
            // A panic while writing is a failed write: the batch is answered with an error and
            // the actor restarted, instead of a lane gone silent with batches never answered.
            let written = std::panic::catch_unwind(AssertUnwindSafe(|| self.persist(&mut commit)))
                .unwrap_or_else(|panic| {
                    Err(format!("the commit lane panicked: {}", reason(&*panic)))
                });
            let journaled = match written {
                Ok(journaled) => journaled,
                Err(error) => {
                    // Reads go on from durable data while the scope waits to be restarted.
                    self.status.view.store(durable.clone());
                    tracing::error!(
                        scope_id = self.scope_id,
                        error,
                        "commit failed, restarting scope"
                    );
                    // Before the count drops: the actor must not take an empty lane for a
                    // durable one.
                    self.failed.store(true, Ordering::Release);
                    self.refuse(replies);
                    let _ = self.actor.send_message(ScopeMsg::CommitFailed { error });
                    continue;
                }
            };
            durable = Some(view.clone());
            self.status.durable_seq.set(commit.last_seq);
            let _ = self.deliveries.send(Delivery {
                outcome: Ok(()),
                notify_outbox: commit.outbox && !commit.events.is_empty(),
                events: commit.events,
                replies,
                members: commit.members,
                finishes_job: commit.finishes_job,
            });
            let _ = self.actor.send_message(ScopeMsg::Committed {
                journaled,
                block: commit.block,
                view,
            });
        }
        // The next incarnation of the scope loads only now that everything is written.
        drop(self.lane_lock);
    }

    /// Encodes and writes a batch, then flushes; returns per org the journal record's seq and
    /// size.
    fn persist(&self, commit: &mut Commit) -> Result<Vec<(Id, u64, u64)>, String> {
        #[cfg(test)]
        if commit.panic {
            panic!("a commit lane fault for a test");
        }
        let mut batch = std::mem::take(&mut commit.batch);
        let journaled = self.encode(&mut batch, &commit.journal, &commit.events, commit.outbox);
        // A batch of replies only (reads made while batches were in the lane) needs no
        // write: the batches before it are durable now.
        if !batch.is_empty() {
            self.write(batch, &commit.view)
                .map_err(|err| err.to_string())?;
        }
        Ok(journaled)
    }

    /// Answers a batch that is not written with an error.
    fn refuse(&self, replies: Vec<Deferred>) {
        let _ = self.deliveries.send(Delivery {
            outcome: Err("the scope could not persist the operation".into()),
            events: Vec::new(),
            replies,
            members: 0,
            finishes_job: None,
            notify_outbox: false,
        });
    }

    /// Adds the journal records, the event block and the outbox entries to `batch`; returns
    /// per org the journal record's seq and size.
    fn encode(
        &self,
        batch: &mut WriteBatch,
        journal: &[(Id, u64, Vec<MemberWrite>)],
        events: &[Event],
        outbox: bool,
    ) -> Vec<(Id, u64, u64)> {
        let journaled = journal
            .iter()
            .map(|(org_id, seq, writes)| {
                let bytes = batch.append_journal(*org_id, *seq, writes);
                (*org_id, *seq, bytes as u64)
            })
            .collect();
        let records: Vec<EventRecord> = events
            .iter()
            .map(|event| EventRecord {
                scope_id: self.scope_id,
                seq: event.seq,
                payload: event.to_json(),
            })
            .collect();
        if outbox {
            for record in &records {
                batch.put_outbox(&OutboxEntry {
                    scope_id: self.scope_id,
                    seq: record.seq,
                    payload: record.payload.clone(),
                    attempts: 0,
                    last_error: None,
                });
            }
        }
        batch.put_event_block(self.scope_id, &records);
        journaled
    }

    /// Writes a batch and flushes. The view goes out with the write, before the flush: sled
    /// shows an applied batch to every store read at once (an import job's progress, a scope
    /// record), and a reader that sees those must see the batch's members too.
    fn write(&self, batch: WriteBatch, view: &Arc<MemberView>) -> unify_storage::Result<()> {
        self.store.apply(batch)?;
        self.status.view.store(Some(view.clone()));
        self.store.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::Actor;
    use tokio::sync::oneshot;

    /// Stands in for the scope actor: tells the test what the lane told it (`None` for a
    /// batch committed, the error of a commit failure).
    struct Listener;

    type Told = mpsc::UnboundedSender<Option<String>>;

    impl Actor for Listener {
        type Msg = ScopeMsg;
        type State = Told;
        type Arguments = Told;

        async fn pre_start(
            &self,
            _: ActorRef<ScopeMsg>,
            told: Told,
        ) -> Result<Told, ActorProcessingErr> {
            Ok(told)
        }

        async fn handle(
            &self,
            _: ActorRef<ScopeMsg>,
            message: ScopeMsg,
            told: &mut Told,
        ) -> Result<(), ActorProcessingErr> {
            match message {
                ScopeMsg::Committed { .. } => drop(told.send(None)),
                ScopeMsg::CommitFailed { error } => drop(told.send(Some(error))),
                _ => {}
            }
            Ok(())
        }
    }

    fn commit(
        view: &Arc<MemberView>,
        panic: bool,
    ) -> (Commit, oneshot::Receiver<Result<(), String>>) {
        let (answer, answered) = oneshot::channel();
        let mut batch = WriteBatch::new();
        batch.put_event_block(1, &[]);
        let commit = Commit {
            batch,
            journal: vec![(1, 1, Vec::new())],
            view: view.clone(),
            last_seq: 0,
            events: Vec::new(),
            outbox: false,
            replies: vec![Box::new(move |result| drop(answer.send(result)))],
            members: 0,
            finishes_job: None,
            block: None,
            panic,
        };
        (commit, answered)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_in_the_lane_fails_its_batch_and_those_behind_and_tells_the_actor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let status = Arc::new(ScopeStatus::default());
        status.view.store(Some(Arc::new(MemberView::default())));
        let (told, mut telling) = mpsc::unbounded_channel();
        let (actor, handle) = Actor::spawn(None, Listener, told).await.unwrap();
        let lock = status.lane_lock.clone().lock_owned().await;
        let mut lane = Lane::start(
            1,
            store,
            status.clone(),
            Hub::default(),
            actor.clone(),
            lock,
        );

        let written = Arc::new(MemberView::default());
        let (first, answered) = commit(&written, false);
        lane.submit(first).await.unwrap();
        assert_eq!(answered.await.unwrap(), Ok(()));
        assert_eq!(telling.recv().await.unwrap(), None);
        assert!(Arc::ptr_eq(&status.view.load_full().unwrap(), &written));

        let (faulty, faulty_answered) = commit(&Arc::new(MemberView::default()), true);
        let (behind, behind_answered) = commit(&Arc::new(MemberView::default()), false);
        lane.submit(faulty).await.unwrap();
        lane.submit(behind).await.unwrap();
        assert!(faulty_answered.await.unwrap().is_err());
        assert!(behind_answered.await.unwrap().is_err());
        let error = telling.recv().await.unwrap().expect("a commit failure");
        assert!(error.contains("panicked"), "{error}");
        assert!(lane.has_failed() && !lane.is_idle());
        // Readers keep the last durable view.
        assert!(Arc::ptr_eq(&status.view.load_full().unwrap(), &written));
        // The lane still ends, and lets the next incarnation load.
        lane.close().await;
        assert!(status.lane_lock.try_lock().is_ok());
        actor.stop(None);
        handle.await.unwrap();
    }
}
