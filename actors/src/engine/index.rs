//! The key-node index of a scope: interned `(attribute, normalized value)` nodes and, for each
//! node, the member slots holding it.

use std::collections::HashMap;

use super::attribute::{ATTRIBUTE_COUNT, Attribute};
use super::partition::NodeId;

/// Interns key nodes and indexes which member slots hold each one.
#[derive(Debug, Default, Clone)]
pub(crate) struct NodeIndex {
    ids: [HashMap<Box<str>, NodeId>; ATTRIBUTE_COUNT],
    values: Vec<(Attribute, Box<str>)>,
    holders: Vec<Vec<u32>>,
}

impl NodeIndex {
    /// Returns the node of a normalized value, creating it if new.
    pub fn intern(&mut self, attribute: Attribute, value: &str) -> NodeId {
        if let Some(&id) = self.ids[attribute.index()].get(value) {
            return id;
        }
        let id = NodeId::try_from(self.values.len()).expect("fewer than 2^32 - 2 key nodes");
        self.ids[attribute.index()].insert(value.into(), id);
        self.values.push((attribute, value.into()));
        self.holders.push(Vec::new());
        id
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
