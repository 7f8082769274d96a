//! The pending limits of channel events: how many accepted events may wait for provisioning,
//! over every channel, per channel and per sender. An event holds its places from the moment
//! the webhook accepts it until it is provisioned; a delivery that finds one bound full is
//! answered `OVERLOADED` (429 with `Retry-After`), so a flood is refused where it comes from
//! instead of growing a queue or starving the channel's other senders.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use unify_storage::Id;

use super::LaneKey;
use crate::error::OpError;
use crate::settings::WebhookSettings;

/// The pending bounds and the places taken.
#[derive(Debug)]
pub(super) struct Pending {
    global: Arc<Semaphore>,
    channels: Arc<Shares<Id>>,
    senders: Arc<Shares<LaneKey>>,
}

/// One event's places in the pending bounds, given back when it is dropped.
#[derive(Debug)]
pub(super) struct PendingSlot {
    _global: OwnedSemaphorePermit,
    _channel: Share<Id>,
    _sender: Share<LaneKey>,
}

impl Pending {
    pub(super) fn new(settings: &WebhookSettings) -> Pending {
        Pending {
            global: Arc::new(Semaphore::new(settings.max_pending)),
            channels: Arc::new(Shares::new(settings.max_pending_per_channel)),
            senders: Arc::new(Shares::new(settings.max_pending_per_sender)),
        }
    }

    /// Takes an accepted event's places: a global one, its channel's and its sender's;
    /// `Overloaded` when any bound is full (nothing stays taken then).
    pub(super) fn admit(&self, sender: &LaneKey) -> Result<PendingSlot, OpError> {
        let global = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| OpError::Overloaded)?;
        let channel = self
            .channels
            .try_take(&sender.0)
            .ok_or(OpError::Overloaded)?;
        let sender = self.senders.try_take(sender).ok_or(OpError::Overloaded)?;
        Ok(PendingSlot {
            _global: global,
            _channel: channel,
            _sender: sender,
        })
    }

    /// Takes the places of an event resumed after a restart, waiting for a global one. It was
    /// accepted under the bounds before, so its channel's and sender's places are taken even
    /// past their limits: a sender with many resumed events is refused new ones until they
    /// drain, as it would have been without the restart.
    pub(super) async fn admit_resumed(&self, sender: &LaneKey) -> Result<PendingSlot, OpError> {
        let global = self
            .global
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| OpError::Unavailable(e.to_string()))?;
        Ok(PendingSlot {
            _global: global,
            _channel: self.channels.take(&sender.0),
            _sender: self.senders.take(sender),
        })
    }
}

/// Places taken per key (a channel, or a sender), at most `limit` each. A key is in the map
/// only while it holds places, so the map is as large as the set of keys with pending events.
#[derive(Debug)]
pub(super) struct Shares<K> {
    limit: usize,
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: Clone + Eq + Hash> Shares<K> {
    pub(super) fn new(limit: usize) -> Shares<K> {
        Shares {
            limit,
            counts: Mutex::default(),
        }
    }

    /// Takes one of the key's places, or `None` when it holds `limit`.
    pub(super) fn try_take(self: &Arc<Self>, key: &K) -> Option<Share<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key.clone()).or_default();
        if *count >= self.limit {
            if *count == 0 {
                counts.remove(key);
            }
            return None;
        }
        *count += 1;
        Some(Share {
            shares: self.clone(),
            key: key.clone(),
        })
    }

    /// Takes one of the key's places even when it holds `limit` (for events already accepted).
    pub(super) fn take(self: &Arc<Self>, key: &K) -> Share<K> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(key.clone()).or_default() += 1;
        Share {
            shares: self.clone(),
            key: key.clone(),
        }
    }

    #[cfg(test)]
    fn held(&self, key: &K) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }
}

/// One place of a key's share, given back when dropped.
#[derive(Debug)]
pub(super) struct Share<K: Clone + Eq + Hash> {
    shares: Arc<Shares<K>>,
    key: K,
}

impl<K: Clone + Eq + Hash> Drop for Share<K> {
    fn drop(&mut self) {
        let mut counts = self.shares.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_cannot_take_every_place() {
        let shares = Arc::new(Shares::new(3));
        let mut held: Vec<_> = (0..3)
            .map(|_| shares.try_take(&1).expect("within the share"))
            .collect();
        assert!(shares.try_take(&1).is_none(), "the flooding key is refused");
        assert!(shares.try_take(&2).is_some(), "another key still gets in");
        held.pop();
        assert!(
            shares.try_take(&1).is_some(),
            "a provisioned event frees its place"
        );
        drop(held);
        assert_eq!(shares.held(&1), 0);
        assert!(shares.counts.lock().unwrap().is_empty(), "no key is kept");
    }

    #[test]
    fn a_flooding_sender_leaves_its_channel_to_the_others() {
        let pending = Pending::new(&WebhookSettings {
            max_pending: 100,
            max_pending_per_channel: 10,
            max_pending_per_sender: 4,
            ..WebhookSettings::default()
        });
        let flooder: LaneKey = (1, "on_flood".into());
        let held: Vec<_> = (0..4).map(|_| pending.admit(&flooder).unwrap()).collect();
        assert!(matches!(pending.admit(&flooder), Err(OpError::Overloaded)));
        assert_eq!(
            pending.channels.held(&1),
            4,
            "the refused event gave its channel place back"
        );
        let others: Vec<_> = (0..6)
            .map(|i| pending.admit(&(1, format!("on_{i}"))).unwrap())
            .collect();
        assert!(
            matches!(
                pending.admit(&(1, "on_late".into())),
                Err(OpError::Overloaded)
            ),
            "the channel bound still holds"
        );
        assert!(
            pending.admit(&(2, "on_flood".into())).is_ok(),
            "per channel"
        );
        drop((held, others));
        assert_eq!(pending.global.available_permits(), 100);
    }

    #[tokio::test]
    async fn resumed_events_count_against_their_sender_and_channel() {
        let pending = Pending::new(&WebhookSettings {
            max_pending: 100,
            max_pending_per_channel: 10,
            max_pending_per_sender: 2,
            ..WebhookSettings::default()
        });
        let sender: LaneKey = (1, "on_flood".into());
        let mut resumed = Vec::new();
        for _ in 0..3 {
            resumed.push(pending.admit_resumed(&sender).await.unwrap());
        }
        assert_eq!(
            pending.senders.held(&sender),
            3,
            "past the limit: already accepted"
        );
        assert!(matches!(pending.admit(&sender), Err(OpError::Overloaded)));
        assert!(pending.admit(&(1, "on_other".into())).is_ok());
        resumed.truncate(1);
        assert!(pending.admit(&sender).is_ok(), "room again once they drain");
        drop(resumed);
        assert_eq!(pending.channels.held(&1), 0);
    }
}
