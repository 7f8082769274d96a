//! Fan-out of committed scope events to live subscribers (websockets, tests). Events are
//! published only after the batch that produced them is durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, broadcast};
use unify_storage::Id;

use crate::events::Event;

/// Frames buffered per scope for live subscribers; a subscriber further behind is lagged.
const CAPACITY: usize = 4096;

/// One broadcast channel per scope.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    channels: Arc<Mutex<HashMap<Id, broadcast::Sender<Arc<Event>>>>>,
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

    /// Returns a receiver of the scope's events published from now on.
    pub fn subscribe(&self, scope_id: Id) -> broadcast::Receiver<Arc<Event>> {
        self.sender(scope_id).subscribe()
    }

    /// Publishes committed events; nobody listening is not an error.
    pub fn publish(&self, scope_id: Id, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let sender = self.sender(scope_id);
        for event in events {
            let _ = sender.send(Arc::new(event));
        }
    }

    fn sender(&self, scope_id: Id) -> broadcast::Sender<Arc<Event>> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .entry(scope_id)
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .clone()
    }
}
