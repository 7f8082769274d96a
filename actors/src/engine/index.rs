//! The key-node index of a scope: interned `(attribute, normalized value)` nodes and, for each
//! node, the member slots holding it.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable, hash_table::Entry};

use super::attribute::{ATTRIBUTE_COUNT, Attribute};
use super::partition::NodeId;

/// Interns key nodes and indexes which member slots hold each one.
///
/// Each value is held once, in `values`; the per-attribute tables hold node ids and look the
/// value up there (a map keyed by the value would hold every value twice, and a scope holds
/// millions of them). The hasher is randomly seeded, since values come from users.
#[derive(Debug, Default, Clone)]
pub(crate) struct NodeIndex {
    ids: [HashTable<NodeId>; ATTRIBUTE_COUNT],
    hasher: DefaultHashBuilder,
    values: Vec<(Attribute, Box<str>)>,
    holders: Vec<Vec<u32>>,
}

impl NodeIndex {
    /// Returns the node of a normalized value, creating it if new.
    pub fn intern(&mut self, attribute: Attribute, value: &str) -> NodeId {
        self.intern_value(attribute, value)
    }

    /// Returns the node of a normalized value, creating it from `value` itself (no copy) if new.
    pub fn intern_owned(&mut self, attribute: Attribute, value: String) -> NodeId {
        self.intern_value(attribute, value)
    }

    fn intern_value<V: AsRef<str> + Into<Box<str>>>(
        &mut self,
        attribute: Attribute,
        value: V,
    ) -> NodeId {
        let NodeIndex {
            ids,
            hasher,
            values,
            holders,
        } = self;
        let hash = hasher.hash_one(value.as_ref());
        let entry = ids[attribute.index()].entry(
            hash,
            |&id| *values[id as usize].1 == *value.as_ref(),
            |&id| hasher.hash_one(&*values[id as usize].1),
        );
        match entry {
            Entry::Occupied(found) => *found.get(),
            Entry::Vacant(vacant) => {
                let id = NodeId::try_from(values.len()).expect("fewer than 2^32 - 2 key nodes");
                vacant.insert(id);
                values.push((attribute, value.into()));
                holders.push(Vec::new());
                id
            }
        }
    }

    /// Returns the node of a normalized value, if some member ever held it.
    pub fn find(&self, attribute: Attribute, value: &str) -> Option<NodeId> {
        let hash = self.hasher.hash_one(value);
        self.ids[attribute.index()]
            .find(hash, |&id| self.value(id) == value)
            .copied()
    }

    pub fn attribute(&self, node: NodeId) -> Attribute {
        self.values[node as usize].0
    }

    pub fn value(&self, node: NodeId) -> &str {
        &self.values[node as usize].1
    }

    /// Returns the number of interned nodes.
    pub fn len(&self) -> u32 {
        self.values.len() as u32
    }

    /// Returns the slots holding `node`.
    pub fn holders(&self, node: NodeId) -> &[u32] {
        &self.holders[node as usize]
    }

    /// Returns the number of members holding `node`.
    pub fn count(&self, node: NodeId) -> u32 {
        self.holders[node as usize].len() as u32
    }

    pub fn add(&mut self, node: NodeId, slot: u32) {
        self.holders[node as usize].push(slot);
    }

    pub fn remove(&mut self, node: NodeId, slot: u32) {
        let holders = &mut self.holders[node as usize];
        if let Some(i) = holders.iter().position(|&s| s == slot) {
            holders.swap_remove(i);
        }
    }

    /// Renumbers every slot through `remap` (old slot → new slot), after compaction.
    pub fn remap(&mut self, remap: &[u32]) {
        for holders in &mut self.holders {
            for slot in holders.iter_mut() {
                *slot = remap[*slot as usize];
            }
        }
    }
}
