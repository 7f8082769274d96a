//! The event log service: reads of a scope's retained events (the stream a websocket
//! replays), run on the blocking pool so that a long range never stalls the async workers.
//!
//! A storage error stays [`OpError::Storage`]; it is never reported as an empty log or as
//! "not found". It reads the store only; it imports no actor and no service.

use unify_storage::{EventRecord, Id, Store, StoreError};

use crate::error::OpError;

/// Reads of retained events.
#[derive(Debug, Clone)]
pub struct EventLog {
    store: Store,
    /// Events retained per scope (`events.retain`).
    retain: u64,
}

impl EventLog {
    pub fn new(store: Store, retain: u64) -> EventLog {
        EventLog {
            store,
            retain: retain.max(1),
        }
    }

    /// Returns at most `limit` events of the scope with a seq greater than `after_seq`,
    /// ascending.
    pub async fn after(
        &self,
        scope_id: Id,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, OpError> {
        self.read(move |store| store.events_after(scope_id, after_seq, limit))
            .await
    }

    /// Returns the seq of the scope's oldest retained event, if any: the last `retain` events
    /// are retained. (Events are stored and trimmed in blocks, so the store may still hold a
    /// few older ones; they are not offered.)
    pub async fn oldest_seq(&self, scope_id: Id) -> Result<Option<u64>, OpError> {
        let retain = self.retain;
        self.read(move |store| {
            let Some(oldest) = store.oldest_event_seq(scope_id)? else {
                return Ok(None);
            };
            let newest = store.last_event_seq(scope_id)?.unwrap_or(oldest);
            Ok(Some(oldest.max((newest + 1).saturating_sub(retain))))
        })
        .await
    }

    /// Returns the seq of the scope's newest event, if any.
    pub async fn newest_seq(&self, scope_id: Id) -> Result<Option<u64>, OpError> {
        self.read(move |store| store.last_event_seq(scope_id)).await
    }

    /// Runs a store read on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, OpError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|e| OpError::Unavailable(format!("event log read: {e}")))?
            .map_err(OpError::Storage)
    }
}
