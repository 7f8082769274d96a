//! Fan-out of committed scope events to live subscribers (websockets, tests). Events are
//! published only after the batch that produced them is durable.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast};
use unify_storage::Id;

use crate::events::Event;

/// Commits buffered per scope for live subscribers; a subscriber further behind is lagged.
/// One commit is one item however many events it has (an import chunk has thousands), so a
/// subscriber that keeps up is never lagged by the size of a commit.
const CAPACITY: usize = 1024;

/// The events of one commit, in seq order.
pub type EventBatch = Arc<[Arc<Event>]>;

/// One broadcast channel per scope.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    channels: Arc<Mutex<HashMap<Id, broadcast::Sender<EventBatch>>>>,
    /// Wakes the CDH bridge when outbox entries become durable (or are requeued), so that it
    /// delivers at once instead of polling.
    outbox: Arc<Notify>,
}

impl Hub {
    /// Tells the CDH bridge that an outbox has new entries; wake-ups coalesce and none is lost.
    pub fn notify_outbox(&self) {
        self.outbox.notify_one();
    }

    /// Resolves at the next [`Hub::notify_outbox`] (or at once if one is pending).
    pub async fn outbox_notified(&self) {
        self.outbox.notified().await;
    }

    /// Returns a subscription to the scope's events published from now on.
    pub fn subscribe(&self, scope_id: Id) -> Subscription {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let receiver = channels
            .entry(scope_id)
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe();
        Subscription {
            receiver,
            pending: VecDeque::new(),
        }
    }

    /// Publishes the events of one commit; nobody listening is not an error. A scope nobody
    /// ever subscribed to gets no channel (and no buffer).
    pub fn publish(&self, scope_id: Id, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let sender = {
            let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
            match channels.get(&scope_id) {
                Some(sender) => sender.clone(),
                None => return,
            }
        };
        let batch: EventBatch = events.into_iter().map(Arc::new).collect();
        let _ = sender.send(batch);
    }
}

/// A subscriber's view of one scope's live events, one event at a time.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<EventBatch>,
    /// Events of the last received commit not yet handed out.
    pending: VecDeque<Arc<Event>>,
}

impl Subscription {
    /// Returns the next event; `Lagged` when the subscriber fell more than the buffer behind.
    /// Cancel safe: an event is handed out only by a call that returns it.
    pub async fn recv(&mut self) -> Result<Arc<Event>, broadcast::error::RecvError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let batch = self.receiver.recv().await?;
            self.pending.extend(batch.iter().cloned());
        }
    }

    /// Returns the next event if one is already there.
    pub fn try_recv(&mut self) -> Result<Arc<Event>, broadcast::error::TryRecvError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let batch = self.receiver.try_recv()?;
            self.pending.extend(batch.iter().cloned());
        }
    }
}
