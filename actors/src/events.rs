//! Scope events (SPEC 5): the frames websocket subscribers and the CDH receive, and their
//! derivation from a partition delta.

use std::collections::{BTreeMap, BTreeSet};

use hashbrown::HashMap;

use serde::Serialize;
use unify_storage::Id;

use crate::engine::{Delta, MemberId, ProfileId, Unifier};

/// Why a profile changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    MemberCreated,
    MemberUpdated,
    MemberDeleted,
    ChangeUnification,
    CancelUnification,
    UnifyKeysChanged,
    Integrate,
    Disconnect,
    Import,
    Provisioned,
}

/// The body of an event, before it is given its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    ProfileUpdated {
        profile_id: ProfileId,
        member_ids: Vec<MemberId>,
        previous_profile_ids: Vec<ProfileId>,
        reason: Reason,
        at: String,
    },
    ProfileRemoved {
        profile_id: ProfileId,
        merged_into: Option<ProfileId>,
    },
    MemberUpdated {
        member_id: MemberId,
        profile_id: Option<ProfileId>,
    },
    MergeProgress {
        done: u64,
        total: u64,
        is_finished: bool,
    },
}

/// A sequenced event of a scope, as sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub seq: u64,
    pub unify_scope_id: Id,
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    /// Returns the JSON frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events serialize")
    }
}

/// Returns the profile events of a delta: `profile_updated` for every profile that gained or
/// lost members, `profile_removed` for every profile that no longer exists.
pub fn profile_events(
    delta: &Delta,
    unifier: &Unifier,
    reason: Reason,
    at: &str,
) -> Vec<EventBody> {
    profile_events_knowing(delta, unifier, HashMap::new(), reason, at)
}

/// [`profile_events`] given the members (ascending) of some profiles already, e.g. by
/// [`Unifier::insert_new`]; the others are found in the unifier.
pub fn profile_events_knowing(
    delta: &Delta,
    unifier: &Unifier,
    mut known: HashMap<ProfileId, Vec<MemberId>>,
    reason: Reason,
    at: &str,
) -> Vec<EventBody> {
    // Per surviving profile, the profiles its moved members came from.
    let mut touched: BTreeMap<ProfileId, BTreeSet<ProfileId>> = BTreeMap::new();
    let mut left: BTreeSet<ProfileId> = BTreeSet::new();
    for m in &delta.moves {
        if let Some(to) = m.to {
            let sources = touched.entry(to).or_default();
            sources.extend(m.from);
        }
        left.extend(m.from);
    }
    for &old in &left {
        if unifier.profile_of(old) == Some(old) {
            touched.entry(old).or_default().insert(old);
        }
    }
    // Counted once: a per-profile scan of the moves is quadratic for a big delta (an import
    // chunk, a rebuild).
    let mut moved_in: BTreeMap<ProfileId, usize> = BTreeMap::new();
    for m in &delta.moves {
        if let Some(to) = m.to {
            *moved_in.entry(to).or_default() += 1;
        }
    }
    let mut members = unifier.members_of(
        touched
            .keys()
            .copied()
            .filter(|profile| !known.contains_key(profile)),
    );
    members.extend(known.drain());
    let mut events = Vec::new();
    for (profile, mut previous) in touched {
        let member_ids = members.remove(&profile).unwrap_or_default();
        let moved_in = moved_in.get(&profile).copied().unwrap_or(0);
        if member_ids.len() > moved_in {
            previous.insert(profile);
        }
        events.push(EventBody::ProfileUpdated {
            profile_id: profile,
            member_ids,
            previous_profile_ids: previous.into_iter().collect(),
            reason,
            at: at.to_owned(),
        });
    }
    for old in left {
        let now = unifier.profile_of(old);
        if now != Some(old) {
            events.push(EventBody::ProfileRemoved {
                profile_id: old,
                merged_into: now,
            });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Attribute, KeySet, Limits, LinkValues};

    fn email(v: &str) -> LinkValues {
        let mut values = LinkValues::default();
        values.0[Attribute::DisplayEmail.index()] = Some(v.to_owned());
        values
    }

    #[test]
    fn a_merge_updates_the_survivor_and_removes_the_absorbed_profile() {
        let keys = KeySet::plain(&[Attribute::DisplayEmail]).unwrap();
        let mut u = Unifier::from_members(
            keys,
            Limits::default(),
            vec![
                (40, email("a@x.com")),
                (41, email("b@x.com")),
                (42, email("b@x.com")),
            ],
        );
        let delta = u.upsert(41, &email("a@x.com"));
        let events = profile_events(&delta, &u, Reason::ChangeUnification, "t");
        assert_eq!(
            events,
            vec![
                EventBody::ProfileUpdated {
                    profile_id: 40,
                    member_ids: vec![40, 41],
                    previous_profile_ids: vec![40, 41],
                    reason: Reason::ChangeUnification,
                    at: "t".into(),
                },
                EventBody::ProfileUpdated {
                    profile_id: 42,
                    member_ids: vec![42],
                    previous_profile_ids: vec![41],
                    reason: Reason::ChangeUnification,
                    at: "t".into(),
                },
                EventBody::ProfileRemoved {
                    profile_id: 41,
                    merged_into: Some(40),
                },
            ]
        );
        let frame = Event {
            seq: 9,
            unify_scope_id: 3,
            body: events[2].clone(),
        };
        assert_eq!(
            frame.to_json(),
            r#"{"seq":9,"unify_scope_id":3,"type":"profile_removed","profile_id":41,"merged_into":40}"#
        );
    }
}
