//! The event log service: reads of a scope's retained events (the stream a websocket
//! replays), run on the blocking pool so that a long range never stalls the async workers.
//!
//! A storage error stays [`OpError::Storage`]; it is never reported as an empty log or as
//! "not found". It reads the store only; it imports no actor and no service.

use std::sync::Arc;

use unify_storage::{EventRecord, Id, Store, StoreError};

use crate::error::OpError;

/// Returns the seq of a scope's last durable event ([`crate::status::DurableSeq`]); reads stop
/// there.
pub type DurableBound = Arc<dyn Fn(Id) -> u64 + Send + Sync>;

/// Reads of retained events.
#[derive(Clone)]
pub struct EventLog {
    store: Store,
    /// Events retained per scope (`events.retain`).
    retain: u64,
    durable: DurableBound,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("retain", &self.retain)
            .finish_non_exhaustive()
    }
}

impl EventLog {
    pub fn new(store: Store, retain: u64, durable: DurableBound) -> EventLog {
        EventLog {
            store,
            retain: retain.max(1),
            durable,
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
        let durable = (self.durable)(scope_id);
        let mut events = self
            .read(move |store| store.events_after(scope_id, after_seq, limit))
            .await?;
        events.retain(|e| e.seq <= durable);
        Ok(events)
    }

    /// Returns the seq of the scope's oldest retained event, if any: the last `retain` events
    /// are retained. (Events are stored and trimmed in blocks, so the store may still hold a
    /// few older ones; they are not offered.)
    pub async fn oldest_seq(&self, scope_id: Id) -> Result<Option<u64>, OpError> {
        let retain = self.retain;
        let durable = (self.durable)(scope_id);
        self.read(move |store| {
            let Some(oldest) = store.oldest_event_seq(scope_id)?.filter(|&o| o <= durable) else {
                return Ok(None);
            };
            let newest = store
                .last_event_seq(scope_id)?
                .unwrap_or(oldest)
                .min(durable);
            Ok(Some(oldest.max((newest + 1).saturating_sub(retain))))
        })
        .await
    }

    /// Returns the seq of the scope's newest durable event, if any.
    pub async fn newest_seq(&self, scope_id: Id) -> Result<Option<u64>, OpError> {
        let durable = (self.durable)(scope_id);
        let newest = self
            .read(move |store| store.last_event_seq(scope_id))
            .await?;
        Ok(newest.map(|n| n.min(durable)).filter(|&n| n > 0))
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use unify_storage::WriteBatch;

    use super::*;

    #[tokio::test]
    async fn reads_stop_at_the_last_durable_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut batch = WriteBatch::new();
        for (first, last) in [(1, 3), (4, 6)] {
            let events: Vec<EventRecord> = (first..=last)
                .map(|seq| EventRecord {
                    scope_id: 9,
                    seq,
                    payload: format!("{{\"seq\":{seq}}}"),
                })
                .collect();
            batch.put_event_block(9, &events);
        }
        store.apply(batch).unwrap();
        let durable = Arc::new(AtomicU64::new(4));
        let bound = durable.clone();
        let log = EventLog::new(store, 100, Arc::new(move |_| bound.load(Ordering::Acquire)));
        let seqs = |events: Vec<EventRecord>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(log.after(9, 0, 10).await.unwrap()), [1, 2, 3, 4]);
        assert_eq!(log.newest_seq(9).await.unwrap(), Some(4));
        assert_eq!(log.oldest_seq(9).await.unwrap(), Some(1));
        durable.store(0, Ordering::Release);
        assert!(log.after(9, 0, 10).await.unwrap().is_empty());
        assert_eq!(log.newest_seq(9).await.unwrap(), None);
        assert_eq!(log.oldest_seq(9).await.unwrap(), None);
        durable.store(u64::MAX, Ordering::Release);
        assert_eq!(seqs(log.after(3, 0, 10).await.unwrap()), Vec::<u64>::new());
        assert_eq!(seqs(log.after(9, 2, 10).await.unwrap()), [3, 4, 5, 6]);
    }
}
