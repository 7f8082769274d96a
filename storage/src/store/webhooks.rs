//! Records of channel webhooks (SPEC 6): the accepted-event log that deduplicates deliveries
//! and keeps accepted events until they are provisioned, and the single-use link codes.
//!
//! Both are claimed with compare-and-swap on their key, so two concurrent deliveries of one
//! event id (or two redemptions of one code) never both win.

use serde::{Deserialize, Serialize};

use super::{Store, WriteBatch};
use crate::codec;
use crate::error::Result;
use crate::keys;
use crate::records::{Id, Millis};

/// An event accepted on a channel's webhook. It answers later deliveries of the same event id
/// with "duplicate" while it is retained, and holds the event until its provisioning finishes,
/// so that an event acknowledged just before a crash is provisioned after the restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedEvent {
    pub channel_id: Id,
    pub event_id: String,
    pub received_at: Millis,
    /// The event (JSON) while its provisioning has not finished; `None` once it has.
    pub pending: Option<String>,
}

/// A single-use code that joins a channel sender to a member's profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCode {
    pub code: String,
    /// Org and member whose profile the code joins.
    pub org_id: Id,
    pub member_id: Id,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// The member that redeemed the code, once used.
    pub used_by: Option<Id>,
    pub used_at: Option<Millis>,
}

impl Store {
    /// Returns the accepted event `event_id` of channel `channel_id`, if one is stored (it may
    /// be older than the retention: callers compare `received_at`).
    pub fn get_accepted_event(
        &self,
        channel_id: Id,
        event_id: &str,
    ) -> Result<Option<AcceptedEvent>> {
        self.db
            .get(keys::accepted_event(channel_id, event_id))?
            .map(|bytes| codec::decode(&bytes))
            .transpose()
    }

    /// Stores `event` unless an accepted event with its id received at or after
    /// `retained_since` is already stored; returns whether it was stored. Atomic with respect
    /// to concurrent claims of the same id: exactly one of them wins. Durable after a flush.
    pub fn claim_accepted_event(
        &self,
        event: &AcceptedEvent,
        retained_since: Millis,
    ) -> Result<bool> {
        let key = keys::accepted_event(event.channel_id, &event.event_id);
        let value = codec::encode(event);
        loop {
            let current = self.db.get(&key)?;
            if let Some(bytes) = &current {
                let stored: AcceptedEvent = codec::decode(bytes)?;
                if stored.received_at >= retained_since {
                    return Ok(false);
                }
            }
            if self
                .db
                .compare_and_swap(&key, current, Some(value.as_slice()))?
                .is_ok()
            {
                return Ok(true);
            }
        }
    }

    /// Returns every accepted event, in key order. Reads lazily.
    pub fn scan_accepted_events(
        &self,
    ) -> impl Iterator<Item = Result<AcceptedEvent>> + Send + use<> {
        self.db.scan_prefix([keys::ACCEPTED_EVENT]).map(|item| {
            let (_, value) = item?;
            codec::decode(&value)
        })
    }

    /// Returns the link code `code`, if it exists.
    pub fn get_link_code(&self, code: &str) -> Result<Option<LinkCode>> {
        self.db
            .get(keys::link_code(code))?
            .map(|bytes| codec::decode(&bytes))
            .transpose()
    }

    /// Stores a new link code unless its code is taken; returns whether it was stored.
    /// Durable after a flush.
    pub fn insert_link_code(&self, code: &LinkCode) -> Result<bool> {
        let key = keys::link_code(&code.code);
        let value = codec::encode(code);
        Ok(self
            .db
            .compare_and_swap(key, None as Option<&[u8]>, Some(value.as_slice()))?
            .is_ok())
    }

    /// Returns every link code, in key order. Reads lazily.
    pub fn scan_link_codes(&self) -> impl Iterator<Item = Result<LinkCode>> + Send + use<> {
        self.db.scan_prefix([keys::LINK_CODE]).map(|item| {
            let (_, value) = item?;
            codec::decode(&value)
        })
    }
}

impl WriteBatch {
    /// Writes an accepted event (marking its provisioning finished, for instance).
    pub fn put_accepted_event(&mut self, event: &AcceptedEvent) -> &mut Self {
        self.insert_record(
            &keys::accepted_event(event.channel_id, &event.event_id),
            event,
        )
    }

    /// Removes an accepted event past its retention.
    pub fn delete_accepted_event(&mut self, channel_id: Id, event_id: &str) -> &mut Self {
        self.remove(&keys::accepted_event(channel_id, event_id))
    }

    /// Writes a link code (marking it used, for instance).
    pub fn put_link_code(&mut self, code: &LinkCode) -> &mut Self {
        self.insert_record(&keys::link_code(&code.code), code)
    }

    /// Removes a link code that expired or was used long ago.
    pub fn delete_link_code(&mut self, code: &str) -> &mut Self {
        self.remove(&keys::link_code(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(received_at: Millis) -> AcceptedEvent {
        AcceptedEvent {
            channel_id: 3,
            event_id: "evt-1".into(),
            received_at,
            pending: Some("{}".into()),
        }
    }

    #[test]
    fn one_claim_wins_until_the_record_falls_out_of_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.claim_accepted_event(&event(100), 0).unwrap());
        assert!(!store.claim_accepted_event(&event(200), 0).unwrap());
        assert_eq!(
            store.get_accepted_event(3, "evt-1").unwrap(),
            Some(event(100))
        );
        // Received before the retention cut-off: a new delivery is accepted again.
        assert!(store.claim_accepted_event(&event(300), 150).unwrap());
        assert_eq!(
            store.get_accepted_event(3, "evt-1").unwrap(),
            Some(event(300))
        );
        assert_eq!(store.get_accepted_event(4, "evt-1").unwrap(), None);
        assert_eq!(store.scan_accepted_events().count(), 1);
    }

    #[test]
    fn concurrent_claims_of_one_event_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let wins: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let store = store.clone();
                    s.spawn(move || store.claim_accepted_event(&event(i), 0).unwrap())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(wins, 1);
    }

    #[test]
    fn link_codes_are_inserted_once_and_updated_by_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut code = LinkCode {
            code: "ABCD2345".into(),
            org_id: 1,
            member_id: 7,
            created_at: 10,
            expires_at: 20,
            used_by: None,
            used_at: None,
        };
        assert!(store.insert_link_code(&code).unwrap());
        assert!(!store.insert_link_code(&code).unwrap());
        code.used_by = Some(9);
        code.used_at = Some(15);
        let mut batch = WriteBatch::new();
        batch.put_link_code(&code);
        store.apply(batch).unwrap();
        assert_eq!(store.get_link_code("ABCD2345").unwrap(), Some(code));
        let mut batch = WriteBatch::new();
        batch.delete_link_code("ABCD2345");
        store.apply(batch).unwrap();
        assert_eq!(store.get_link_code("ABCD2345").unwrap(), None);
        assert_eq!(store.scan_link_codes().count(), 0);
    }
}
