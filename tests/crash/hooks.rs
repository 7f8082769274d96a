//! What the crash test knows of the channel webhook events the driver sent: an event id
//! acknowledged once is answered "duplicate" ever after (across kills too), and its sender
//! gets one member, once.

use std::collections::{HashMap, HashSet};

#[derive(Debug, Default)]
pub struct Hooks {
    /// Sends per event id, with its sender.
    tries: HashMap<String, (String, usize)>,
    /// Sender identities of every event sent.
    senders: HashSet<String>,
    /// Accepted event ids, with the sender and the round that accepted them.
    accepted: HashMap<String, (String, u64)>,
    pub duplicates: usize,
    /// Duplicates answered for an event accepted before a kill.
    pub duplicates_after_kill: usize,
}

impl Hooks {
    pub fn tried(&mut self, event_id: String, identity: String) {
        self.senders.insert(identity.clone());
        self.tries.entry(event_id).or_insert((identity, 0)).1 += 1;
    }

    /// Checks a webhook answer in round `round`; returns the kind of an acknowledgement.
    pub fn answered(&mut self, event_id: &str, answer: &str, round: u64) -> Option<&'static str> {
        let (identity, tries) = self.tries[event_id].clone();
        let accepted = self.accepted.get(event_id).map(|(_, r)| *r);
        match answer {
            "accepted" => {
                assert_eq!(accepted, None, "event {event_id} accepted twice");
                self.accepted.insert(event_id.to_owned(), (identity, round));
                Some("hook accepted")
            }
            "duplicate" => {
                assert!(
                    tries > 1,
                    "event {event_id} answered duplicate on its first send"
                );
                self.duplicates += 1;
                if accepted.is_some_and(|r| r < round) {
                    self.duplicates_after_kill += 1;
                }
                Some("hook duplicate")
            }
            other => {
                assert_eq!(
                    accepted, None,
                    "event {event_id}, acknowledged before, answered {other}"
                );
                None
            }
        }
    }

    /// Whether `identity` is the sender of an event the driver sent.
    pub fn is_sender(&self, identity: &str) -> bool {
        self.senders.contains(identity)
    }

    /// The senders of accepted events.
    pub fn accepted_senders(&self) -> impl Iterator<Item = &str> {
        self.accepted
            .values()
            .map(|(identity, _)| identity.as_str())
    }
}
