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
/// The hasher is randomly seeded, since values come from users. Each table entry keeps its
/// value's hash beside the node id, so that growing a table (it doubles many times while a
/// scope loads or imports millions of values) never reads the values again.
#[derive(Debug, Default, Clone)]
pub(crate) struct NodeIndex {
    ids: [HashTable<(NodeId, Hash32)>; ATTRIBUTE_COUNT],
    hasher: DefaultHashBuilder,
    /// The text of every node, back to back.
    text: String,
    /// Per node: its attribute and where its value lies in `text`.
    values: Vec<(Attribute, Span)>,
    holders: Vec<SmallVec<[u32; 4]>>,
}

/// A value's hash as a table entry keeps it: 32 bits, spread back over 64 for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hash32(u32);

impl Hash32 {
    fn of(hasher: &DefaultHashBuilder, value: &str) -> Hash32 {
        Hash32(hasher.hash_one(value) as u32)
    }

    /// The table hash: its low bits pick the bucket and its top seven bits are the tag, so
    /// both come from the 32 kept.
    fn table(self) -> u64 {
        u64::from(self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
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
        let hash = Hash32::of(hasher, value);
        let entry = ids[attribute.index()].entry(
            hash.table(),
            |&(id, h)| h == hash && values[id as usize].1.of(text) == value,
            |&(_, h)| h.table(),
        );
        match entry {
            Entry::Occupied(found) => found.get().0,
            Entry::Vacant(vacant) => {
                let id = NodeId::try_from(values.len()).expect("fewer than 2^32 - 2 key nodes");
                u32::try_from(text.len() + value.len()).expect("less than 4 GiB of key values");
                let span = Span {
                    start: text.len() as u32,
                    len: value.len() as u32,
                };
                text.push_str(value);
                vacant.insert((id, hash));
                values.push((attribute, span));
                holders.push(SmallVec::new());
                id
            }
        }
    }

    /// Returns the node of a normalized value, if some member ever held it.
    pub fn find(&self, attribute: Attribute, value: &str) -> Option<NodeId> {
        let hash = Hash32::of(&self.hasher, value);
        self.ids[attribute.index()]
            .find(hash.table(), |&(id, h)| {
                h == hash && self.value(id) == value
            })
            .map(|&(id, _)| id)
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
