//! A scope's members in memory: the one place members are read from.
//!
//! The [`Roster`] is the scope actor's own, mutable copy: every member (encoded, see
//! [`StoredMember`]) with its org, channel and current profile id in a persistent ordered map,
//! and the lookups derived from them (by identity, by username), rebuilt when the scope loads
//! and never stored. After each durable commit the actor publishes a [`MemberView`]: a clone
//! of the map, which costs O(1) because the map shares structure with its clones. Readers
//! take the view without a message to the actor, so member reads never queue behind a batch
//! or a job, and they never see a write that is not durable or half of a batch.
//!
//! It is a leaf: it uses the storage records and nothing else of this crate.

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use imbl::OrdMap;
use unify_storage::{Id, Member, StoreError, StoredMember};

/// One member of the roster. Its org and channel are read off the front of its bytes: an entry
/// is the map's value for every member of the scope, and each field more would cost the map
/// twice its size (the map's leaves are fixed arrays, and members, appended in id order, leave
/// them half full).
#[derive(Debug, Clone)]
pub struct Entry {
    /// The member's current profile id (derived from the partition).
    pub profile_id: Id,
    pub stored: StoredMember,
}

impl Entry {
    pub fn org_id(&self) -> Id {
        self.placement().0
    }

    pub fn channel_id(&self) -> Option<Id> {
        self.placement().1
    }

    fn placement(&self) -> (Id, Option<Id>) {
        self.stored
            .placement()
            .expect("a member's bytes are whole once it is in the roster")
    }

    /// Returns the decoded member with its profile id.
    pub fn member(&self) -> Result<Member, StoreError> {
        let mut member = self.stored.member()?;
        member.profile_id = self.profile_id;
        Ok(member)
    }
}

/// The members of a scope as of its last durable commit, for readers.
#[derive(Debug, Clone, Default)]
pub struct MemberView {
    members: OrdMap<Id, Entry>,
}

impl MemberView {
    /// Returns member `id` if it belongs to org `org_id`.
    pub fn member(&self, org_id: Id, id: Id) -> Option<Result<Member, StoreError>> {
        let entry = self.members.get(&id)?;
        (entry.org_id() == org_id).then(|| entry.member())
    }

    /// Returns at most `limit` members of org `org_id` (of one channel, when given) with an id
    /// greater than `after`, ascending id.
    pub fn page(
        &self,
        org_id: Id,
        channel_id: Option<Id>,
        after: Id,
        limit: usize,
    ) -> Result<Vec<Member>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        self.members
            .range(first..)
            .map(|(_, entry)| entry)
            .filter(|e| {
                let (org, channel) = e.placement();
                org == org_id && channel_id.is_none_or(|c| channel == Some(c))
            })
            .take(limit)
            .map(Entry::member)
            .collect()
    }

    /// Returns the number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Returns true when the scope has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Returns every entry, ascending member id.
    pub fn entries(&self) -> impl Iterator<Item = (&Id, &Entry)> {
        self.members.iter()
    }
}

/// The scope actor's members and their lookups.
#[derive(Debug, Default)]
pub struct Roster {
    members: OrdMap<Id, Entry>,
    /// `(hash, member id)` by hash of `(org, channel, external id)`, compared against the
    /// member itself; the hash is kept so that growing the table reads no member.
    identities: HashTable<(u64, Id)>,
    hasher: DefaultHashBuilder,
    usernames: HashMap<(Id, Box<str>), Id>,
}

impl Roster {
    /// Returns an empty roster.
    pub fn new() -> Roster {
        Roster::default()
    }

    /// Returns an empty roster with room for the lookups of `members` members.
    pub fn with_capacity(members: usize) -> Roster {
        Roster {
            identities: HashTable::with_capacity(members),
            ..Roster::default()
        }
    }

    /// Returns the view readers get: the members as they are now.
    pub fn view(&self) -> MemberView {
        MemberView {
            members: self.members.clone(),
        }
    }

    /// Returns the number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Returns true when the roster holds no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Returns the entry of member `id`.
    pub fn get(&self, id: Id) -> Option<&Entry> {
        self.members.get(&id)
    }

    /// Returns the largest member id (0 when empty).
    pub fn max_id(&self) -> Id {
        self.members.get_max().map_or(0, |(id, _)| *id)
    }

    /// Returns the member holding identity `(org, channel, external id)`.
    pub fn identity(&self, org_id: Id, channel_id: Option<Id>, ext: &str) -> Option<Id> {
        let hash = self.hasher.hash_one((org_id, channel_id, ext));
        self.identities
            .find(hash, |&(h, id)| {
                h == hash && self.holds(id, org_id, channel_id, ext)
            })
            .map(|&(_, id)| id)
    }

    /// Returns the member holding `username` in org `org_id`.
    pub fn username(&self, org_id: Id, username: &str) -> Option<Id> {
        self.usernames.get(&(org_id, username.into())).copied()
    }

    fn holds(&self, id: Id, org_id: Id, channel_id: Option<Id>, ext: &str) -> bool {
        self.members.get(&id).is_some_and(|e| {
            e.stored.identity().is_ok_and(|(_, org, channel, x)| {
                org == org_id && channel == channel_id && x == ext
            })
        })
    }

    /// Inserts or replaces a member, with its username and profile id. Its identity lookup
    /// follows the identity read off its bytes (an identity never changes: org, channel and
    /// external id are fixed at create), and its username lookup follows `username`.
    pub fn put(&mut self, stored: StoredMember, username: Option<&str>, profile_id: Id) {
        let (id, org_id, channel_id, ext) = stored
            .identity()
            .expect("a member's bytes are whole once it is in the roster");
        let hash = self.hasher.hash_one((org_id, channel_id, ext));
        let previous = self.members.insert(id, Entry { profile_id, stored });
        let old_username: Option<Box<str>> = match &previous {
            Some(old) => old
                .stored
                .outline()
                .ok()
                .and_then(|o| o.username.map(Into::into)),
            None => {
                self.identities.insert_unique(hash, (hash, id), |&(h, _)| h);
                None
            }
        };
        if old_username.as_deref() != username {
            if let Some(old) = old_username {
                self.usernames.remove(&(org_id, old));
            }
            if let Some(new) = username {
                self.usernames.insert((org_id, new.into()), id);
            }
        }
    }

    /// Sets the profile id of member `id` (a move of the partition).
    /// Looked up first: taking an entry mutably copies its path out of the published view,
    /// which a member whose profile did not change need not pay.
    pub fn set_profile(&mut self, id: Id, profile_id: Id) {
        if self
            .members
            .get(&id)
            .is_some_and(|e| e.profile_id != profile_id)
            && let Some(entry) = self.members.get_mut(&id)
        {
            entry.profile_id = profile_id;
        }
    }

    /// Removes member `id` and its lookups.
    pub fn remove(&mut self, id: Id) -> Option<Entry> {
        let entry = self.members.get(&id)?.clone();
        let (_, org, channel, ext) = entry.stored.identity().ok()?;
        let hash = self.hasher.hash_one((org, channel, ext));
        if let Ok(found) = self.identities.find_entry(hash, |&(_, other)| other == id) {
            found.remove();
        }
        if let Ok(member) = entry.stored.member()
            && let Some(username) = member.username
        {
            self.usernames.remove(&(member.org_id, username.into()));
        }
        self.members.remove(&id)
    }

    /// Returns every entry, ascending member id.
    pub fn entries(&self) -> impl Iterator<Item = (&Id, &Entry)> {
        self.members.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unify_storage::{MemberLinks, Source};

    fn member(id: Id, ext: &str, username: Option<&str>) -> Member {
        Member {
            username: username.map(Into::into),
            ..Member::new(id, 1, Source::Caac, Some(2), ext.into(), 0)
        }
    }

    fn put(roster: &mut Roster, m: &Member) {
        let links = MemberLinks {
            normalizer: 0,
            values: vec![],
        };
        roster.put(
            StoredMember::new(m, &links),
            m.username.as_deref(),
            m.profile_id,
        );
    }

    #[test]
    fn lookups_follow_puts_and_removes_and_views_stay_as_published() {
        let mut roster = Roster::new();
        put(&mut roster, &member(5, "a", None));
        put(&mut roster, &member(6, "b", Some("bee")));
        let view = roster.view();
        assert_eq!(roster.identity(1, Some(2), "a"), Some(5));
        assert_eq!(roster.identity(1, None, "a"), None);
        assert_eq!(roster.username(1, "bee"), Some(6));
        put(&mut roster, &member(6, "b", Some("bea")));
        assert_eq!(roster.username(1, "bee"), None);
        assert_eq!(roster.username(1, "bea"), Some(6));
        roster.set_profile(6, 5);
        roster.remove(5);
        assert_eq!(roster.identity(1, Some(2), "a"), None);
        assert_eq!(roster.identity(1, Some(2), "b"), Some(6));
        // The view published before is unchanged.
        assert_eq!(view.len(), 2);
        assert_eq!(view.member(1, 6).unwrap().unwrap().profile_id, 6);
        assert_eq!(
            view.member(1, 6).unwrap().unwrap().username.as_deref(),
            Some("bee")
        );
        assert!(view.member(9, 6).is_none());
        let now = roster.view();
        assert_eq!(now.member(1, 6).unwrap().unwrap().profile_id, 5);
        assert_eq!(now.page(1, Some(2), 0, 10).unwrap().len(), 1);
    }
}
