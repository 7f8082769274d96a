//! Explanations of the partition (SPEC 2.7): why two members share a profile, or which refused
//! link keeps them apart.

use std::collections::HashMap;

use super::attribute::Attribute;
use super::partition::{self, NO_NODE, NodeId, Recorder, Refusal, RefusedLink};
use super::unifier::{MemberId, ProfileId, Subset, Unifier};

/// One step of a chain of links: the member, and the key node joining it to the previous step
/// (`None` on the first step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStep {
    pub member_id: MemberId,
    pub attribute: Option<Attribute>,
    pub value: Option<String>,
}

/// The refused link that keeps two members of one cluster in different profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedView {
    /// The member whose link was refused.
    pub member_id: MemberId,
    pub attribute: Attribute,
    pub value: String,
    /// The final profile of `member_id`.
    pub profile_id: ProfileId,
    /// The final profile of the node's owner.
    pub other_profile_id: ProfileId,
    pub reason: Refusal,
}

/// Why two members are, or are not, one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub same_profile: bool,
    /// The shortest chain of links from the first member to the second; within the profile when
    /// `same_profile`, else through the cluster (empty when they are not even in one cluster).
    pub path: Vec<PathStep>,
    pub refused: Option<RefusedView>,
}

impl Unifier {
    /// Explains the relation of two members; `None` if either is not in the scope.
    pub fn explain(&self, a: MemberId, b: MemberId) -> Option<Explanation> {
        let (&sa, &sb) = (self.slot_of.get(&a)?, self.slot_of.get(&b)?);
        let profile = |s: u32| self.profile[s as usize];
        if profile(sa) == profile(sb) {
            let path = self
                .shortest_path(sa, sb, |s| profile(s) == profile(sa))
                .unwrap_or_default();
            return Some(Explanation {
                same_profile: true,
                path: self.steps(&path),
                refused: None,
            });
        }
        let Some(path) = self.shortest_path(sa, sb, |s| self.ids[s as usize] != 0) else {
            return Some(Explanation {
                same_profile: false,
                path: Vec::new(),
                refused: None,
            });
        };
        let cluster = self.reachable(&[sa], |s| self.ids[s as usize] != 0);
        let refusals = self.refusals(&cluster);
        let sides = |r: &RefusedLink| {
            (
                profile(cluster[r.pos as usize]),
                profile(cluster[r.owner as usize]),
            )
        };
        let direct = refusals.iter().find(|r| {
            let (x, y) = sides(r);
            (x, y) == (profile(sa), profile(sb)) || (y, x) == (profile(sa), profile(sb))
        });
        let boundary = || {
            let cross = path
                .windows(2)
                .find(|w| profile(w[0].0) != profile(w[1].0))?;
            let (x, (y, node)) = (cross[0].0, cross[1]);
            refusals.iter().find(|r| {
                r.node == node && (cluster[r.pos as usize] == x || cluster[r.pos as usize] == y)
            })
        };
        let refused = direct.or_else(boundary).map(|r| RefusedView {
            member_id: self.ids[cluster[r.pos as usize] as usize],
            attribute: r.attribute,
            value: self.nodes.value(r.node).to_owned(),
            profile_id: sides(r).0,
            other_profile_id: sides(r).1,
            reason: r.why,
        });
        Some(Explanation {
            same_profile: false,
            path: self.steps(&path),
            refused,
        })
    }

    /// Reruns the partition of a cluster, recording every refused link.
    pub(super) fn refusals(&self, cluster: &[u32]) -> Vec<RefusedLink> {
        let plan = self.plan(&self.keys);
        let mut owners = self.sparse_owners(cluster, &plan);
        let subset = Subset {
            slots: cluster,
            links: &self.links,
        };
        let mut recorder = Recorder::default();
        partition::partition(
            cluster.len() as u32,
            &subset,
            &mut owners,
            &plan,
            &mut recorder,
        );
        recorder.0
    }

    /// Breadth-first search from `from` to `to` through linking key nodes, visiting only slots
    /// accepted by `keep`. Each step carries the node that reached it.
    fn shortest_path(
        &self,
        from: u32,
        to: u32,
        keep: impl Fn(u32) -> bool,
    ) -> Option<Vec<(u32, NodeId)>> {
        let attributes: Vec<usize> = self.keys.attributes().map(Attribute::index).collect();
        let mut previous: HashMap<u32, (u32, NodeId)> = HashMap::from([(from, (from, NO_NODE))]);
        let mut frontier = vec![from];
        while !frontier.is_empty() && !previous.contains_key(&to) {
            let mut next = Vec::new();
            for slot in frontier {
                for &a in &attributes {
                    let node = self.links[slot as usize][a];
                    if node == NO_NODE || self.is_hot(node) {
                        continue;
                    }
                    for &other in self.nodes.holders(node) {
                        if keep(other) && !previous.contains_key(&other) {
                            previous.insert(other, (slot, node));
                            next.push(other);
                        }
                    }
                }
            }
            next.sort_unstable();
            frontier = next;
        }
        previous.get(&to)?;
        let mut path = vec![];
        let mut at = to;
        loop {
            let (prev, node) = previous[&at];
            path.push((at, node));
            if at == from {
                break;
            }
            at = prev;
        }
        path.reverse();
        Some(path)
    }

    fn steps(&self, path: &[(u32, NodeId)]) -> Vec<PathStep> {
        path.iter()
            .map(|&(slot, node)| PathStep {
                member_id: self.ids[slot as usize],
                attribute: (node != NO_NODE).then(|| self.nodes.attribute(node)),
                value: (node != NO_NODE).then(|| self.nodes.value(node).to_owned()),
            })
            .collect()
    }
}
