//! Event blocks: the events of one group-commit batch of a scope in one record, keyed by the
//! scope and the batch's first and last seq, for websocket `since` replay and retention.

use std::collections::VecDeque;

use super::{Store, WriteBatch};
use crate::codec;
use crate::error::Result;
use crate::keys;
use crate::records::{EventRecord, Id};

/// The seqs one event block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventBlockSpan {
    pub first: u64,
    pub last: u64,
}

impl Store {
    /// Returns the spans of scope `scope_id`'s event blocks, ascending.
    pub fn event_blocks(&self, scope_id: Id) -> Result<VecDeque<EventBlockSpan>> {
        self.db
            .scan_prefix(keys::id_key(keys::EVENT_BLOCK, scope_id))
            .map(|item| {
                let (key, _) = item?;
                Ok(EventBlockSpan {
                    first: keys::read_u64(&key, 9)?,
                    last: keys::read_u64(&key, 17)?,
                })
            })
            .collect()
    }

    /// Returns at most `limit` events of scope `scope_id` with a seq greater than `after_seq`,
    /// ascending seq.
    pub fn events_after(
        &self,
        scope_id: Id,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>> {
        let Some(first) = after_seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        let start = keys::event_block(scope_id, 0, 0);
        // The block holding `first` starts at or before it: begin with the last such block.
        let from = match self
            .db
            .range(start..=keys::event_block(scope_id, first, u64::MAX))
            .next_back()
            .transpose()?
        {
            Some((key, _)) => key.to_vec(),
            None => start.to_vec(),
        };
        let end = keys::event_block(scope_id, u64::MAX, u64::MAX);
        let mut events = Vec::new();
        for item in self.db.range(from.as_slice()..=&end[..]) {
            let (_, value) = item?;
            let block: Vec<EventRecord> = codec::decode(&value)?;
            for event in block {
                if events.len() == limit {
                    return Ok(events);
                }
                if event.seq >= first {
                    events.push(event);
                }
            }
        }
        Ok(events)
    }

    /// Returns the seq of the oldest retained event of scope `scope_id`, if any.
    pub fn oldest_event_seq(&self, scope_id: Id) -> Result<Option<u64>> {
        let first = self
            .db
            .scan_prefix(keys::id_key(keys::EVENT_BLOCK, scope_id))
            .next()
            .transpose()?;
        first.map(|(key, _)| keys::read_u64(&key, 9)).transpose()
    }

    /// Returns the seq of the newest event of scope `scope_id`, if any.
    pub fn last_event_seq(&self, scope_id: Id) -> Result<Option<u64>> {
        let last = self
            .db
            .scan_prefix(keys::id_key(keys::EVENT_BLOCK, scope_id))
            .next_back()
            .transpose()?;
        last.map(|(key, _)| keys::read_u64(&key, 17)).transpose()
    }
}

impl WriteBatch {
    /// Writes the events of one batch (ascending, consecutive seqs) as one block.
    pub fn put_event_block(&mut self, scope_id: Id, events: &[EventRecord]) -> &mut Self {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return self;
        };
        let key = keys::event_block(scope_id, first.seq, last.seq);
        self.insert(&key, &codec::encode_packed(&events))
    }

    /// Removes an event block, for retention.
    pub fn delete_event_block(&mut self, scope_id: Id, span: EventBlockSpan) -> &mut Self {
        self.remove(&keys::event_block(scope_id, span.first, span.last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(seqs: std::ops::RangeInclusive<u64>) -> Vec<EventRecord> {
        seqs.map(|seq| EventRecord {
            scope_id: 7,
            seq,
            payload: format!(r#"{{"seq":{seq},"type":"profile_updated"}}"#),
        })
        .collect()
    }

    #[test]
    fn blocks_written_plain_by_an_earlier_build_and_packed_read_as_one_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (old, new) = (events(1..=3), events(4..=6));
        let mut batch = WriteBatch::new();
        // An earlier build wrote event blocks plain (format version 1).
        batch.insert(&keys::event_block(7, 1, 3), &codec::encode(&old));
        batch.put_event_block(7, &new);
        store.apply(batch).unwrap();
        let raw = store.db.get(keys::event_block(7, 4, 6)).unwrap().unwrap();
        assert_eq!(raw[0], codec::PACKED_VERSION);
        let all: Vec<EventRecord> = old.into_iter().chain(new).collect();
        assert_eq!(store.events_after(7, 0, 100).unwrap(), all);
        assert_eq!(store.events_after(7, 2, 2).unwrap(), all[2..4]);
    }
}
