//! The in-memory unification state of one scope: members' linking nodes, the key-node index,
//! the partition, and its incremental maintenance (SPEC 2.3).

use std::collections::BTreeSet;

use hashbrown::{HashMap, HashSet};

use super::attribute::{ATTRIBUTE_COUNT, Attribute};
use super::index::NodeIndex;
use super::keys::{KeySet, Limits};
use super::normalize::Normalizer;
use super::partition::{
    self, DenseOwners, HOT, Links, NO_NODE, NodeId, Plan, Silent, SparseOwners, UNOWNED,
};
use super::union_find;

/// A member id (global, strictly increasing, never 0).
pub type MemberId = u64;
/// A profile id: the smallest member id of the profile.
pub type ProfileId = u64;

/// A member's normalized linking values, by [`Attribute::index`]; `None` does not link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkValues(pub [Option<String>; ATTRIBUTE_COUNT]);

impl LinkValues {
    /// Normalizes raw attribute values. While `manual_unification` is set the member's
    /// `external_member_id` does not link (SPEC 2.6).
    pub fn normalize(
        normalizer: &Normalizer,
        raw: &[Option<&str>; ATTRIBUTE_COUNT],
        manual_unification: bool,
    ) -> Self {
        let mut values: [Option<String>; ATTRIBUTE_COUNT] = Default::default();
        for attribute in Attribute::ALL {
            if manual_unification && attribute == Attribute::ExternalMemberId {
                continue;
            }
            values[attribute.index()] =
                raw[attribute.index()].and_then(|v| normalizer.normalize(attribute, v));
        }
        LinkValues(values)
    }
}

/// One member whose profile changed: created (`from: None`), erased (`to: None`) or moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub member: MemberId,
    pub from: Option<ProfileId>,
    pub to: Option<ProfileId>,
}

/// The effect of one operation on the partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// Members whose profile id changed, ascending by member id.
    pub moves: Vec<Move>,
    /// Whether the whole scope was recomputed (keys changed, a hot value crossed the limit).
    pub full: bool,
}

/// A key value held by more members than `max_members_per_value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotValue {
    pub attribute: Attribute,
    pub value: String,
    pub members: u32,
}

/// The unification state of one scope.
///
/// Members live in *slots* kept in ascending member-id order, so that slot order is the
/// processing order of the partition. Erased members leave dead slots (id 0) until compaction.
#[derive(Debug, Clone)]
pub struct Unifier {
    pub(super) keys: KeySet,
    pub(super) limits: Limits,
    pub(super) nodes: NodeIndex,
    pub(super) ids: Vec<MemberId>,
    pub(super) links: Vec<[NodeId; ATTRIBUTE_COUNT]>,
    pub(super) profile: Vec<ProfileId>,
    pub(super) slot_of: HashMap<MemberId, u32>,
    /// Nodes (of any interned attribute) held by more than `max_members_per_value` members.
    hot: BTreeSet<NodeId>,
    dead: usize,
    /// Whether members' external member ids are interned: only once that attribute is (or has
    /// been) a key. Every member has one, nearly always its own, so interning them for a scope
    /// that does not link by them would cost a node per member (a million at 1M members,
    /// about 65 MB) and link nothing. Every other attribute is interned whether or not it is a
    /// key, so that a key change or a dry run needs no value it does not hold.
    external: bool,
}

/// What [`Unifier::insert_new`] did.
#[derive(Debug, Default)]
pub struct Inserted {
    pub delta: Delta,
    /// The profile id of each member given, in the order given.
    pub profile_ids: Vec<ProfileId>,
    /// The members (ascending) of every profile in the clusters it recomputed, which hold every
    /// profile its delta touches: what [`crate::events::profile_events_knowing`] would otherwise
    /// walk the index for (empty when it took another path than the bulk one).
    pub profiles: HashMap<ProfileId, Vec<MemberId>>,
}

/// The linking nodes of the slots listed in `slots`, position by position.
pub(super) struct Subset<'a> {
    pub slots: &'a [u32],
    pub links: &'a [[NodeId; ATTRIBUTE_COUNT]],
}

impl Links for Subset<'_> {
    #[inline]
    fn node(&self, pos: u32, attribute: usize) -> NodeId {
        self.links[self.slots[pos as usize] as usize][attribute]
    }
}

impl Links for [[NodeId; ATTRIBUTE_COUNT]] {
    #[inline]
    fn node(&self, pos: u32, attribute: usize) -> NodeId {
        self[pos as usize][attribute]
    }
}

impl Unifier {
    /// Returns an empty scope with the given keys and limits.
    pub fn new(keys: KeySet, limits: Limits) -> Self {
        Unifier {
            external: keys.contains(Attribute::ExternalMemberId),
            keys,
            limits,
            nodes: NodeIndex::default(),
            ids: Vec::new(),
            links: Vec::new(),
            profile: Vec::new(),
            slot_of: HashMap::new(),
            hot: BTreeSet::new(),
            dead: 0,
        }
    }

    /// Builds a scope from its members in any order (the last value of a repeated id wins) and
    /// computes the partition with one full rebuild.
    pub fn from_members(
        keys: KeySet,
        limits: Limits,
        members: impl IntoIterator<Item = (MemberId, LinkValues)>,
    ) -> Self {
        Self::from_values(keys, limits, members.into_iter().map(|(id, v)| (id, v.0)))
    }

    /// [`Unifier::from_members`] for linking values in any string form, e.g. borrowed from the
    /// stored members a scope load reads (the index copies each distinct value once).
    pub fn from_values<V: AsRef<str>>(
        keys: KeySet,
        limits: Limits,
        members: impl IntoIterator<Item = (MemberId, [Option<V>; ATTRIBUTE_COUNT])>,
    ) -> Self {
        let mut members: Vec<(MemberId, [Option<V>; ATTRIBUTE_COUNT])> =
            members.into_iter().collect();
        members.sort_by_key(|(id, _)| *id);
        members.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                std::mem::swap(later, earlier);
                true
            } else {
                false
            }
        });
        let mut unifier = Unifier::new(keys, limits);
        unifier.ids.reserve(members.len());
        unifier.links.reserve(members.len());
        unifier.profile.reserve(members.len());
        unifier.slot_of.reserve(members.len());
        for (id, values) in members {
            let mut links = [NO_NODE; ATTRIBUTE_COUNT];
            for (attribute, value) in Attribute::ALL.into_iter().zip(values) {
                if let Some(v) = value
                    && unifier.interns(attribute)
                {
                    links[attribute.index()] = unifier.nodes.intern(attribute, v.as_ref());
                }
            }
            let slot = unifier.push(id, links);
            unifier.attach(slot);
        }
        unifier.rebuild();
        unifier
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Returns the number of members.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    pub fn contains(&self, member: MemberId) -> bool {
        self.slot_of.contains_key(&member)
    }

    /// Returns the member's profile id.
    pub fn profile_of(&self, member: MemberId) -> Option<ProfileId> {
        self.slot_of.get(&member).map(|&s| self.profile[s as usize])
    }

    /// Returns the member's current linking values, as they were given to [`Unifier::upsert`],
    /// but for its external member id while those are not interned ([`Unifier::external`]).
    pub fn link_values(&self, member: MemberId) -> Option<LinkValues> {
        let slot = *self.slot_of.get(&member)?;
        let links = &self.links[slot as usize];
        Some(LinkValues(std::array::from_fn(|i| {
            (links[i] != NO_NODE).then(|| self.nodes.value(links[i]).to_owned())
        })))
    }

    /// Returns every `(member, profile)` pair, ascending by member id.
    pub fn partition(&self) -> impl Iterator<Item = (MemberId, ProfileId)> + '_ {
        self.ids
            .iter()
            .zip(&self.profile)
            .filter(|(id, _)| **id != 0)
            .map(|(id, p)| (*id, *p))
    }

    /// Returns the number of profiles.
    pub fn profile_count(&self) -> usize {
        self.partition().filter(|(m, p)| m == p).count()
    }

    /// Creates or updates a member and recomputes the clusters it touches.
    pub fn upsert(&mut self, member: MemberId, values: &LinkValues) -> Delta {
        let links = self.intern(values);
        let Some(&slot) = self.slot_of.get(&member) else {
            return self.insert(member, links);
        };
        if self.links[slot as usize] == links {
            return Delta::default();
        }
        let before = self.cluster(&[slot]);
        let mut crossed = self.detach(slot);
        self.links[slot as usize] = links;
        crossed |= self.attach(slot);
        if crossed {
            return self.rebuild();
        }
        let affected = self.cluster(&before);
        self.recompute(&affected)
    }

    /// Creates members not in the scope yet, all at once: the result is that of upserting
    /// them one by one, with one walk and one recompute of the clusters they touch instead of
    /// one per member (a bulk import). Members already present, or ids that are not above
    /// every id in the scope and ascending, take the one-by-one path.
    ///
    /// Also returns each new member's profile id, and the members (ascending) of every profile
    /// in the clusters it recomputed (see [`Inserted`]).
    pub fn insert_new(&mut self, members: &[(MemberId, &LinkValues)]) -> Inserted {
        let last = self.ids.iter().rev().find(|&&id| id != 0).copied();
        let ascending = members.windows(2).all(|w| w[0].0 < w[1].0);
        let above = members
            .first()
            .is_none_or(|&(first, _)| last.is_none_or(|last| last < first));
        if !ascending || !above {
            let delta = self.upsert_each(members);
            return self.inserted(delta, members);
        }
        let mut slots = Vec::with_capacity(members.len());
        let mut crossed = false;
        for &(member, values) in members {
            let links = self.intern(values);
            let slot = self.push(member, links);
            crossed |= self.attach(slot);
            slots.push(slot);
        }
        if crossed {
            let mut delta = self.rebuild();
            delta.full = false;
            return self.inserted(delta, members);
        }
        let affected = self.cluster(&slots);
        let delta = self.recompute(&affected);
        let mut profiles: HashMap<ProfileId, Vec<MemberId>> = HashMap::new();
        // Slots ascend, and so do their ids.
        for &slot in &affected {
            profiles
                .entry(self.profile[slot as usize])
                .or_default()
                .push(self.ids[slot as usize]);
        }
        Inserted {
            delta,
            profile_ids: slots.iter().map(|&s| self.profile[s as usize]).collect(),
            profiles,
        }
    }

    /// What [`Unifier::insert_new`] returns when it took another path than the bulk one.
    fn inserted(&self, delta: Delta, members: &[(MemberId, &LinkValues)]) -> Inserted {
        Inserted {
            delta,
            profile_ids: members
                .iter()
                .map(|&(member, _)| self.profile_of(member).unwrap_or(member))
                .collect(),
            profiles: HashMap::new(),
        }
    }

    /// Upserts members one by one, folding the deltas into one: each moved member's first
    /// origin and last destination, ascending, members that came back where they were left
    /// out.
    fn upsert_each(&mut self, members: &[(MemberId, &LinkValues)]) -> Delta {
        let mut moved: HashMap<MemberId, (Option<ProfileId>, Option<ProfileId>)> = HashMap::new();
        for &(member, values) in members {
            for m in self.upsert(member, values).moves {
                moved
                    .entry(m.member)
                    .and_modify(|e| e.1 = m.to)
                    .or_insert((m.from, m.to));
            }
        }
        let mut moves: Vec<Move> = moved
            .into_iter()
            .filter(|(_, (from, to))| from != to)
            .map(|(member, (from, to))| Move { member, from, to })
            .collect();
        moves.sort_by_key(|m| m.member);
        Delta { moves, full: false }
    }

    /// Erases a member and recomputes its old clusters.
    pub fn remove(&mut self, member: MemberId) -> Delta {
        let Some(slot) = self.slot_of.remove(&member) else {
            return Delta::default();
        };
        let before = self.cluster(&[slot]);
        let crossed = self.detach(slot);
        let erased = Move {
            member,
            from: Some(self.profile[slot as usize]),
            to: None,
        };
        let s = slot as usize;
        self.ids[s] = 0;
        self.profile[s] = 0;
        self.links[s] = [NO_NODE; ATTRIBUTE_COUNT];
        self.dead += 1;
        let mut delta = if crossed {
            self.rebuild()
        } else {
            let seeds: Vec<u32> = before.into_iter().filter(|&x| x != slot).collect();
            let affected = self.cluster(&seeds);
            self.recompute(&affected)
        };
        let at = delta.moves.partition_point(|m| m.member < member);
        delta.moves.insert(at, erased);
        delta
    }

    /// Replaces the unify keys and recomputes the whole scope. Keys that need the external
    /// member ids take them interned first ([`Unifier::needs_external`]).
    pub fn set_keys(&mut self, keys: KeySet) -> Delta {
        // Keys linking by ids the unifier does not hold would compute a wrong partition.
        assert!(
            !self.needs_external(&keys),
            "external member ids must be interned before they are a key"
        );
        self.keys = keys;
        self.rebuild()
    }

    /// Recomputes the whole scope and returns what moved.
    pub fn rebuild(&mut self) -> Delta {
        if self.dead * 4 > self.ids.len() {
            self.compact();
        }
        let fresh = self.rebuild_profiles(&self.keys);
        let mut moves = Vec::new();
        for (slot, new) in fresh.into_iter().enumerate() {
            let old = self.profile[slot];
            if self.ids[slot] != 0 && old != new {
                moves.push(Move {
                    member: self.ids[slot],
                    from: nonzero(old),
                    to: Some(new),
                });
                self.profile[slot] = new;
            }
        }
        Delta { moves, full: true }
    }

    /// Computes the partition under `keys` from scratch, without changing anything: the
    /// profile id of every slot (0 for dead slots). This is the full rebuild of SPEC 9 P1.
    pub fn rebuild_profiles(&self, keys: &KeySet) -> Vec<ProfileId> {
        let mut owners = DenseOwners(vec![UNOWNED; self.nodes.len() as usize]);
        for &node in &self.hot {
            owners.0[node as usize] = HOT;
        }
        let n = self.ids.len() as u32;
        let leaders = partition::partition(
            n,
            &self.links[..],
            &mut owners,
            &self.plan(keys),
            &mut Silent,
        );
        leaders
            .into_iter()
            .zip(&self.ids)
            .map(|(leader, id)| {
                if *id == 0 {
                    0
                } else {
                    self.ids[leader as usize]
                }
            })
            .collect()
    }

    /// Returns, per slot, a representative of its plain connected component over the same
    /// links, computed by a bare union-find: the baseline of SPEC 9 P1.
    pub fn baseline_components(&self, keys: &KeySet) -> Vec<u32> {
        let attributes: Vec<usize> = keys.attributes().map(Attribute::index).collect();
        union_find::components(
            self.ids.len() as u32,
            self.nodes.len(),
            &self.links[..],
            &attributes,
        )
    }

    /// Returns the members of the member's profile, ascending (empty if the member is unknown).
    pub fn profile_members(&self, member: MemberId) -> Vec<MemberId> {
        let Some(&slot) = self.slot_of.get(&member) else {
            return Vec::new();
        };
        let profile = self.profile[slot as usize];
        let mut members: Vec<MemberId> = self
            .reachable(&[slot], |s| self.profile[s as usize] == profile)
            .into_iter()
            .map(|s| self.ids[s as usize])
            .collect();
        members.sort_unstable();
        members
    }

    /// Returns the members of each of `profiles` that exists, ascending: one walk for all of
    /// them, where [`Unifier::profile_members`] per profile would allocate a walk each.
    pub fn members_of(
        &self,
        profiles: impl IntoIterator<Item = ProfileId>,
    ) -> HashMap<ProfileId, Vec<MemberId>> {
        let wanted: HashSet<ProfileId> = profiles.into_iter().collect();
        let seeds: Vec<u32> = wanted
            .iter()
            .filter_map(|p| self.slot_of.get(p).copied())
            .filter(|&s| wanted.contains(&self.profile[s as usize]))
            .collect();
        let mut members: HashMap<ProfileId, Vec<MemberId>> = HashMap::new();
        for slot in self.reachable(&seeds, |s| wanted.contains(&self.profile[s as usize])) {
            members
                .entry(self.profile[slot as usize])
                .or_default()
                .push(self.ids[slot as usize]);
        }
        for list in members.values_mut() {
            list.sort_unstable();
        }
        members
    }

    /// Returns the hot values of key attributes, most held first.
    pub fn hot_values(&self) -> Vec<HotValue> {
        let mut hot: Vec<HotValue> = self
            .hot
            .iter()
            .filter(|&&n| self.keys.contains(self.nodes.attribute(n)))
            .map(|&n| HotValue {
                attribute: self.nodes.attribute(n),
                value: self.nodes.value(n).to_owned(),
                members: self.nodes.count(n),
            })
            .collect();
        hot.sort_by(|a, b| b.members.cmp(&a.members).then(a.value.cmp(&b.value)));
        hot
    }

    pub(super) fn plan(&self, keys: &KeySet) -> Plan {
        Plan {
            keys: keys.attributes().collect(),
            distinct: keys.distinct(),
            max_profile_size: self.limits.max_profile_size,
        }
    }

    /// Returns an owner map for recomputing `slots` in which their hot key nodes read [`HOT`].
    pub(super) fn sparse_owners(&self, slots: &[u32], plan: &Plan) -> SparseOwners {
        let mut owners = SparseOwners::default();
        for &slot in slots {
            for a in &plan.keys {
                let node = self.links[slot as usize][a.index()];
                if node != NO_NODE && self.is_hot(node) {
                    owners.0.insert(node, HOT);
                }
            }
        }
        owners
    }

    /// Returns whether a node is hot (held by more than `max_members_per_value` members).
    pub(super) fn is_hot(&self, node: NodeId) -> bool {
        self.hot.contains(&node)
    }

    /// Returns the slots reachable from `seeds` through linking key nodes, visiting only slots
    /// accepted by `keep`; the cluster of the seeds when `keep` accepts everything.
    pub(super) fn reachable(&self, seeds: &[u32], keep: impl Fn(u32) -> bool) -> Vec<u32> {
        let attributes: Vec<usize> = self.keys.attributes().map(Attribute::index).collect();
        // Sized for the usual walk, where most seeds link to few others: a bulk import walks
        // from thousands of seeds at once.
        let mut seen: HashSet<u32> = HashSet::with_capacity(seeds.len() * 2);
        seen.extend(seeds.iter().copied().filter(|&s| keep(s)));
        let mut seen_nodes: HashSet<NodeId> =
            HashSet::with_capacity(seeds.len() * attributes.len());
        let mut queue: Vec<u32> = seen.iter().copied().collect();
        while let Some(slot) = queue.pop() {
            for &a in &attributes {
                let node = self.links[slot as usize][a];
                if node == NO_NODE || self.is_hot(node) || !seen_nodes.insert(node) {
                    continue;
                }
                for &other in self.nodes.holders(node) {
                    if keep(other) && seen.insert(other) {
                        queue.push(other);
                    }
                }
            }
        }
        let mut slots: Vec<u32> = seen.into_iter().collect();
        slots.sort_unstable();
        slots
    }

    /// Returns the clusters of the seeds, ascending by slot.
    fn cluster(&self, seeds: &[u32]) -> Vec<u32> {
        self.reachable(seeds, |s| self.ids[s as usize] != 0)
    }

    /// Recomputes the partition of `slots` (a union of whole clusters, ascending).
    fn recompute(&mut self, slots: &[u32]) -> Delta {
        let plan = self.plan(&self.keys);
        let mut owners = self.sparse_owners(slots, &plan);
        let subset = Subset {
            slots,
            links: &self.links,
        };
        let leaders =
            partition::partition(slots.len() as u32, &subset, &mut owners, &plan, &mut Silent);
        let mut moves = Vec::new();
        for (pos, &slot) in slots.iter().enumerate() {
            let new = self.ids[slots[leaders[pos] as usize] as usize];
            let old = self.profile[slot as usize];
            if old != new {
                moves.push(Move {
                    member: self.ids[slot as usize],
                    from: nonzero(old),
                    to: Some(new),
                });
                self.profile[slot as usize] = new;
            }
        }
        Delta { moves, full: false }
    }

    fn intern(&mut self, values: &LinkValues) -> [NodeId; ATTRIBUTE_COUNT] {
        let mut links = [NO_NODE; ATTRIBUTE_COUNT];
        for attribute in Attribute::ALL {
            if let Some(v) = &values.0[attribute.index()]
                && self.interns(attribute)
            {
                links[attribute.index()] = self.nodes.intern(attribute, v);
            }
        }
        links
    }

    /// Returns whether values of `attribute` are interned (see [`Unifier::external`]).
    fn interns(&self, attribute: Attribute) -> bool {
        attribute != Attribute::ExternalMemberId || self.external
    }

    /// Returns whether a partition under `keys` needs the members' external member ids, which
    /// are not interned yet: [`Unifier::intern_external`] first.
    pub fn needs_external(&self, keys: &KeySet) -> bool {
        !self.external && keys.contains(Attribute::ExternalMemberId)
    }

    /// Interns the members' external member ids (normalized, as [`LinkValues`] holds them;
    /// `None` for a member that does not link by it), given for every member, so that they
    /// can be a key. Changes no profile.
    pub fn intern_external<V: AsRef<str>>(
        &mut self,
        values: impl IntoIterator<Item = (MemberId, Option<V>)>,
    ) {
        self.external = true;
        let attribute = Attribute::ExternalMemberId;
        for (member, value) in values {
            let (Some(&slot), Some(value)) = (self.slot_of.get(&member), value) else {
                continue;
            };
            let node = self.nodes.intern(attribute, value.as_ref());
            self.links[slot as usize][attribute.index()] = node;
            self.attach_node(node, slot);
        }
    }

    /// Inserts a new member; an id below the largest one reorders the slots and rebuilds.
    fn insert(&mut self, member: MemberId, links: [NodeId; ATTRIBUTE_COUNT]) -> Delta {
        let in_order = self
            .ids
            .iter()
            .rev()
            .find(|&&id| id != 0)
            .is_none_or(|&last| last < member);
        if !in_order {
            self.compact();
            let at = self.ids.partition_point(|&id| id < member);
            let remap: Vec<u32> = (0..self.ids.len() as u32)
                .map(|s| if (s as usize) < at { s } else { s + 1 })
                .collect();
            self.nodes.remap(&remap);
            self.ids.insert(at, member);
            self.links.insert(at, links);
            self.profile.insert(at, 0);
            self.reindex_slots();
            self.attach(at as u32);
            return self.rebuild();
        }
        let slot = self.push(member, links);
        if self.attach(slot) {
            return self.rebuild();
        }
        let affected = self.cluster(&[slot]);
        self.recompute(&affected)
    }

    /// Appends a slot (not yet in the node index).
    fn push(&mut self, member: MemberId, links: [NodeId; ATTRIBUTE_COUNT]) -> u32 {
        let slot = self.ids.len() as u32;
        self.ids.push(member);
        self.links.push(links);
        self.profile.push(0);
        self.slot_of.insert(member, slot);
        slot
    }

    /// Adds the slot to the index of each of its nodes. Returns whether a node of a key
    /// attribute became hot.
    fn attach(&mut self, slot: u32) -> bool {
        let mut crossed = false;
        for node in self.links[slot as usize] {
            if node != NO_NODE {
                crossed |= self.attach_node(node, slot);
            }
        }
        crossed
    }

    /// Adds the slot to the index of one of its nodes. Returns whether the node, of a key
    /// attribute, became hot.
    fn attach_node(&mut self, node: NodeId, slot: u32) -> bool {
        self.nodes.add(node, slot);
        if self.nodes.count(node) == self.limits.max_members_per_value + 1 {
            self.hot.insert(node);
            return self.keys.contains(self.nodes.attribute(node));
        }
        false
    }

    /// Removes the slot from the index of each of its nodes. Returns whether a node of a key
    /// attribute stopped being hot.
    fn detach(&mut self, slot: u32) -> bool {
        let mut crossed = false;
        for node in self.links[slot as usize] {
            if node == NO_NODE {
                continue;
            }
            self.nodes.remove(node, slot);
            if self.nodes.count(node) == self.limits.max_members_per_value {
                self.hot.remove(&node);
                crossed |= self.keys.contains(self.nodes.attribute(node));
            }
        }
        crossed
    }

    /// Drops dead slots, keeping order.
    fn compact(&mut self) {
        if self.dead == 0 {
            return;
        }
        let mut remap = vec![u32::MAX; self.ids.len()];
        let mut next = 0u32;
        for (slot, id) in self.ids.iter().enumerate() {
            if *id != 0 {
                remap[slot] = next;
                next += 1;
            }
        }
        self.nodes.remap(&remap);
        let keep: Vec<bool> = self.ids.iter().map(|id| *id != 0).collect();
        let mut i = 0;
        self.links.retain(|_| (keep[i], i += 1).0);
        i = 0;
        self.profile.retain(|_| (keep[i], i += 1).0);
        self.ids.retain(|id| *id != 0);
        self.dead = 0;
        self.reindex_slots();
    }

    fn reindex_slots(&mut self) {
        self.slot_of = self
            .ids
            .iter()
            .enumerate()
            .filter(|(_, id)| **id != 0)
            .map(|(slot, id)| (*id, slot as u32))
            .collect();
    }
}

fn nonzero(profile: ProfileId) -> Option<ProfileId> {
    (profile != 0).then_some(profile)
}
