//! What the crash test knows of the scope's events: every payload seen live, replayed on a
//! start or delivered to the CDH, by seq. An event is published (and delivered) only once its
//! batch is durable, so a seq once seen never changes its payload, and every later start's
//! replay holds it while it is retained.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

#[derive(Debug, Default)]
pub struct Events {
    /// Events the driver retains.
    pub retain: u64,
    /// Every seq seen (live, replayed or delivered), with its payload.
    payloads: BTreeMap<u64, Value>,
    /// Seqs received live, over every run: each one must reach the CDH.
    pub live: BTreeSet<u64>,
    /// The last live seq of the current run, unless the subscription lagged since.
    last_live: Option<u64>,
    /// The newest seq known when the current run started.
    known_at_start: Option<u64>,
    pub lagged: usize,
    pub replayed: usize,
    /// Events read from the log during the runs.
    pub read: usize,
    /// The newest oldest retained seq a replay started from.
    pub max_oldest: u64,
}

impl Events {
    /// Starts a run: live events restart from wherever the new subscription starts.
    pub fn new_run(&mut self) {
        self.last_live = None;
        self.known_at_start = self.payloads.keys().next_back().copied();
    }

    /// Records the payload of a seq; panics if the seq was seen with another payload.
    pub fn record(&mut self, seq: u64, payload: Value, source: &str) {
        match self.payloads.get(&seq) {
            Some(known) => assert_eq!(
                known, &payload,
                "seq {seq} ({source}) reused for a different event"
            ),
            None => {
                self.payloads.insert(seq, payload);
            }
        }
    }

    /// A live event: within a run they arrive in seq order without gaps.
    pub fn live(&mut self, seq: u64, payload: &str) {
        if let Some(last) = self.last_live {
            assert_eq!(seq, last + 1, "live event {seq} after {last}");
        }
        self.last_live = Some(seq);
        self.live.insert(seq);
        self.record(seq, parse(payload), "live");
    }

    /// An event a client read from the log during the run: it must be durable too.
    pub fn read(&mut self, seq: u64, payload: &str) {
        self.read += 1;
        self.record(seq, parse(payload), "read");
    }

    /// The live subscription fell behind: the next event may follow a gap.
    pub fn lagged(&mut self) {
        self.lagged += 1;
        self.last_live = None;
    }

    /// Checks a start's replay: exactly the seqs `oldest..=newest`, in order, holding every
    /// event seen before this run that is still retained, with its payload.
    pub fn replay(&mut self, replay: Vec<(u64, String)>, oldest: Option<u64>, newest: Option<u64>) {
        let seqs: Vec<u64> = replay.iter().map(|(seq, _)| *seq).collect();
        let expected: Vec<u64> = match (oldest, newest) {
            (Some(oldest), Some(newest)) => (oldest..=newest).collect(),
            _ => Vec::new(),
        };
        assert!(
            seqs == expected,
            "the replay holds {} events {:?}..{:?}, not every seq of {oldest:?}..={newest:?}",
            seqs.len(),
            seqs.first(),
            seqs.last()
        );
        if let (Some(oldest), Some(newest)) = (oldest, newest) {
            // The last `retain` events are retained, no fewer.
            let expected = (newest + 1).saturating_sub(self.retain).max(1);
            assert_eq!(oldest, expected, "oldest retained of {newest} events");
        }
        if let Some(known) = self.known_at_start {
            // With the replay contiguous, every known seq from `oldest` on is in it.
            assert!(
                newest.is_some_and(|newest| newest >= known),
                "event {known} was seen before the kill; the log ends at {newest:?}"
            );
        }
        self.replayed += replay.len();
        self.max_oldest = self.max_oldest.max(oldest.unwrap_or(0));
        for (seq, payload) in replay {
            self.record(seq, parse(&payload), "replayed");
        }
    }
}

/// Parses a payload: every event is a JSON object.
pub fn parse(payload: &str) -> Value {
    serde_json::from_str(payload).unwrap_or_else(|e| panic!("event payload {payload}: {e}"))
}
