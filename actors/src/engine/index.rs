//! The key-node index of a scope: interned `(attribute, normalized value)` nodes and, for each
//! node, the member slots holding it.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable, hash_table::Entry};
use smallvec::SmallVec;

use super::attribute::{ATTRIBUTE_COUNT, Attribute};
use super::partition::NodeId;

/// Interns key nodes and indexes which member slots hold each one.
///
/// Each value is held once, in one arena of text; the per-attribute tables hold node ids and
/// look the value up there (a map keyed by the value would hold every value twice, and a
/// scope holds millions of them). Most values are held by one member or a few, so a node's
/// holders are kept inline up to four. Nodes are never dropped, so neither is their text.
/// The hasher is randomly seeded, since values come from users.
#[derive(Debug, Default, Clone)]
pub(crate) struct NodeIndex {
    ids: [HashTable<NodeId>; ATTRIBUTE_COUNT],
    hasher: DefaultHashBuilder,
    /// The text of every node, back to back.
    text: String,
    /// Per node: its attribute and where its value lies in `text`.
    values: Vec<(Attribute, Span)>,
    holders: Vec<SmallVec<[u32; 4]>>,
}

/// Where a value lies in [`NodeIndex::text`].
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn of(self, text: &str) -> &str {
        &text[self.start as usize..(self.start + self.len) as usize]
    }
}

impl NodeIndex {
    /// Returns the node of a normalized value, creating it if new.
    pub fn intern(&mut self, attribute: Attribute, value: &str) -> NodeId {
        let NodeIndex {
            ids,
            hasher,
            text,
            values,
            holders,
        } = self;
        let hash = hasher.hash_one(value);
        let entry = ids[attribute.index()].entry(
            hash,
            |&id| values[id as usize].1.of(text) == value,
            |&id| hasher.hash_one(values[id as usize].1.of(text)),
        );
        match entry {
            Entry::Occupied(found) => *found.get(),
            Entry::Vacant(vacant) => {
                let id = NodeId::try_from(values.len()).expect("fewer than 2^32 - 2 key nodes");
                u32::try_from(text.len() + value.len()).expect("less than 4 GiB of key values");
                let span = Span {
                    start: text.len() as u32,
                    len: value.len() as u32,
                };
                text.push_str(value);
                vacant.insert(id);
                values.push((attribute, span));
                holders.push(SmallVec::new());
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
        self.values[node as usize].1.of(&self.text)
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
