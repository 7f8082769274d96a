//! The deterministic partition of SPEC 2.2, written once for both the full rebuild (dense
//! arrays over the whole scope) and incremental recomputation (sparse maps over the touched
//! clusters), so that the two cannot drift apart.
//!
//! Members are identified by *positions* `0..n` in ascending member-id order. Processing every
//! position in order is the same as processing each cluster in ascending id order, because
//! clusters never interact.

use hashbrown::HashMap;

use super::attribute::{ATTRIBUTE_COUNT, Attribute};

/// An interned key node `(attribute, normalized value)`.
pub type NodeId = u32;

/// The absence of a linking value.
pub const NO_NODE: NodeId = u32::MAX;

/// Owner-map value: nobody owns the node yet.
pub(crate) const UNOWNED: u32 = u32::MAX;
/// Owner-map value: the node is a hot value and does not link.
pub(crate) const HOT: u32 = u32::MAX - 1;

/// Gives the linking node of a position for an attribute index (or [`NO_NODE`]).
pub(crate) trait Links {
    fn node(&self, pos: u32, attribute: usize) -> NodeId;
}

/// Which profile (by any member position in it) owns each node; hot nodes read [`HOT`].
pub(crate) trait Owners {
    fn get(&self, node: NodeId) -> u32;
    fn set(&mut self, node: NodeId, pos: u32);
}

/// Why a link between two profiles was not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Both profiles hold a distinct-key value and the values differ.
    DistinctConflict,
    /// The merged profile would exceed `max_profile_size`.
    MaxProfileSize,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::DistinctConflict => "distinct_conflict",
            Refusal::MaxProfileSize => "max_profile_size",
        }
    }
}

/// Receives the refused links of a run, for explanations. The no-op implementation compiles
/// away, so the rebuild pays nothing for it.
pub(crate) trait Observer {
    fn refused(
        &mut self,
        _pos: u32,
        _attribute: Attribute,
        _node: NodeId,
        _owner: u32,
        _why: Refusal,
    ) {
    }
}

/// An observer that ignores everything.
pub(crate) struct Silent;
impl Observer for Silent {}

/// A refused link: `pos` could not join the profile owning `node` (which `owner` belongs to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RefusedLink {
    pub pos: u32,
    pub attribute: Attribute,
    pub node: NodeId,
    pub owner: u32,
    pub why: Refusal,
}

/// Records every refused link.
#[derive(Default)]
pub(crate) struct Recorder(pub Vec<RefusedLink>);
impl Observer for Recorder {
    fn refused(&mut self, pos: u32, attribute: Attribute, node: NodeId, owner: u32, why: Refusal) {
        self.0.push(RefusedLink {
            pos,
            attribute,
            node,
            owner,
            why,
        });
    }
}

/// The parts of a key setting the algorithm needs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Key attributes in priority order.
    pub keys: Vec<Attribute>,
    pub distinct: Option<Attribute>,
    pub max_profile_size: u32,
}

/// Dense owner map over every node of a scope, for the full rebuild.
pub(crate) struct DenseOwners(pub Vec<u32>);
impl Owners for DenseOwners {
    #[inline]
    fn get(&self, node: NodeId) -> u32 {
        self.0[node as usize]
    }
    #[inline]
    fn set(&mut self, node: NodeId, pos: u32) {
        self.0[node as usize] = pos;
    }
}

/// Sparse owner map for a few clusters. Hot nodes must be inserted as [`HOT`] beforehand.
#[derive(Default)]
pub(crate) struct SparseOwners(pub HashMap<NodeId, u32>);
impl Owners for SparseOwners {
    fn get(&self, node: NodeId) -> u32 {
        self.0.get(&node).copied().unwrap_or(UNOWNED)
    }
    fn set(&mut self, node: NodeId, pos: u32) {
        self.0.insert(node, pos);
    }
}

/// Union-find over positions whose roots carry the profile's distinct value and leader
/// (smallest position, hence smallest member id).
struct Profiles {
    parent: Vec<u32>,
    size: Vec<u32>,
    distinct: Vec<NodeId>,
    leader: Vec<u32>,
}

impl Profiles {
    #[inline]
    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }
}

/// Computes the partition of positions `0..n`. Returns, for every position, the position of
/// its profile's leader (the smallest member id of the profile).
pub(crate) fn partition<L: Links + ?Sized, O: Owners, X: Observer>(
    n: u32,
    links: &L,
    owners: &mut O,
    plan: &Plan,
    observer: &mut X,
) -> Vec<u32> {
    let len = n as usize;
    let mut p = Profiles {
        parent: (0..n).collect(),
        size: vec![1; len],
        distinct: vec![NO_NODE; len],
        leader: (0..n).collect(),
    };
    let keys: Vec<(Attribute, usize)> = plan.keys.iter().map(|a| (*a, a.index())).collect();
    debug_assert!(keys.iter().all(|(_, i)| *i < ATTRIBUTE_COUNT));
    let distinct = plan.distinct.map(Attribute::index);
    for pos in 0..n {
        if let Some(d) = distinct {
            let node = links.node(pos, d);
            if node != NO_NODE && owners.get(node) != HOT {
                p.distinct[pos as usize] = node;
            }
        }
        for &(attribute, index) in &keys {
            let node = links.node(pos, index);
            if node == NO_NODE {
                continue;
            }
            let owner = owners.get(node);
            if owner == HOT {
                continue;
            }
            if owner == UNOWNED {
                owners.set(node, pos);
                continue;
            }
            let mine = p.find(pos);
            let theirs = p.find(owner);
            if mine == theirs {
                continue;
            }
            let (dm, dt) = (p.distinct[mine as usize], p.distinct[theirs as usize]);
            if dm != NO_NODE && dt != NO_NODE && dm != dt {
                observer.refused(pos, attribute, node, owner, Refusal::DistinctConflict);
                continue;
            }
            let size = p.size[mine as usize] + p.size[theirs as usize];
            if size > plan.max_profile_size {
                observer.refused(pos, attribute, node, owner, Refusal::MaxProfileSize);
                continue;
            }
            let (root, child) = if p.size[mine as usize] >= p.size[theirs as usize] {
                (mine, theirs)
            } else {
                (theirs, mine)
            };
            p.parent[child as usize] = root;
            p.size[root as usize] = size;
            p.distinct[root as usize] = if dm != NO_NODE { dm } else { dt };
            p.leader[root as usize] = p.leader[mine as usize].min(p.leader[theirs as usize]);
        }
    }
    (0..n)
        .map(|pos| {
            let root = p.find(pos);
            p.leader[root as usize]
        })
        .collect()
}
