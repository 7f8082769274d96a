//! The drawable graph of a member's cluster (SPEC 4.5 `unify-profile/graph`) and the lookup of
//! the members holding one key node (SPEC 4.4 `?attribute=&value=`).
//!
//! The graph's members are those reachable from the member through linking key nodes (its
//! cluster), nearest first, so that a truncated graph still shows the member's neighbourhood.
//! Its links are the member-to-key-node holdings; a refused one is the link the partition did
//! not follow (SPEC 2.2 step 2), recorded by rerunning the cluster's partition as
//! [`Unifier::explain`] does.

use std::collections::{HashMap, HashSet};

use super::attribute::Attribute;
use super::partition::{NO_NODE, NodeId, Refusal};
use super::unifier::{MemberId, ProfileId, Unifier};

/// A key node of the graph: `(attribute, normalized value)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphNode {
    pub attribute: Attribute,
    pub value: String,
}

/// One member holding one key node; `refused` when the partition did not follow the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphLink {
    pub member: MemberId,
    /// Index into [`ClusterGraph::keys`].
    pub key: usize,
    pub refused: Option<Refusal>,
}

/// The members of a cluster (at most the bound), their key nodes and links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterGraph {
    /// The profile of the member asked about.
    pub profile_id: ProfileId,
    /// `(member, profile)`, nearest to the member asked about first.
    pub members: Vec<(MemberId, ProfileId)>,
    pub keys: Vec<GraphNode>,
    pub links: Vec<GraphLink>,
    /// The cluster has more visible members than the bound.
    pub truncated: bool,
}

impl Unifier {
    /// Returns the graph of the member's cluster with at most `max_members` members, among those
    /// `visible` accepts (the member itself always is); `None` if the member is not in the scope.
    pub fn cluster_graph(
        &self,
        member: MemberId,
        max_members: usize,
        visible: impl Fn(MemberId, ProfileId) -> bool,
    ) -> Option<ClusterGraph> {
        let &start = self.slot_of.get(&member)?;
        let profile_id = self.profile[start as usize];
        let cluster = self.reachable(&[start], |s| self.ids[s as usize] != 0);
        let order = self.nearest_first(start, &cluster);
        let shown: Vec<u32> = order
            .iter()
            .copied()
            .filter(|&s| s == start || visible(self.ids[s as usize], self.profile[s as usize]))
            .collect();
        let truncated = shown.len() > max_members;
        let shown = &shown[..shown.len().min(max_members.max(1))];
        // The refused links of the cluster, by (slot, node).
        let refused: HashMap<(u32, NodeId), Refusal> = self
            .refusals(&cluster)
            .into_iter()
            .map(|r| ((cluster[r.pos as usize], r.node), r.why))
            .collect();

        let mut keys = Vec::new();
        let mut key_index: HashMap<NodeId, usize> = HashMap::new();
        let mut links = Vec::new();
        for &slot in shown {
            for attribute in self.keys.attributes() {
                let node = self.links[slot as usize][attribute.index()];
                if node == NO_NODE || self.is_hot(node) {
                    continue;
                }
                let key = *key_index.entry(node).or_insert_with(|| {
                    keys.push(GraphNode {
                        attribute,
                        value: self.nodes.value(node).to_owned(),
                    });
                    keys.len() - 1
                });
                links.push(GraphLink {
                    member: self.ids[slot as usize],
                    key,
                    refused: refused.get(&(slot, node)).copied(),
                });
            }
        }
        Some(ClusterGraph {
            profile_id,
            members: shown
                .iter()
                .map(|&s| (self.ids[s as usize], self.profile[s as usize]))
                .collect(),
            keys,
            links,
            truncated,
        })
    }

    /// Returns the members holding the key node `(attribute, value)` (a normalized value),
    /// ascending; none when `attribute` is not a unify key of the scope, the value was never
    /// held, or it is hot (a hot value does not link, SPEC 2.1).
    pub fn holders_of(&self, attribute: Attribute, value: &str) -> Vec<MemberId> {
        if !self.keys.contains(attribute) {
            return Vec::new();
        }
        let Some(node) = self.nodes.find(attribute, value) else {
            return Vec::new();
        };
        if self.is_hot(node) {
            return Vec::new();
        }
        let mut members: Vec<MemberId> = self
            .nodes
            .holders(node)
            .iter()
            .map(|&s| self.ids[s as usize])
            .filter(|&id| id != 0)
            .collect();
        members.sort_unstable();
        members
    }

    /// Orders the slots of `cluster` breadth first from `start` through linking key nodes,
    /// ascending by member id within one distance.
    fn nearest_first(&self, start: u32, cluster: &[u32]) -> Vec<u32> {
        let attributes: Vec<usize> = self.keys.attributes().map(Attribute::index).collect();
        let mut seen: HashSet<u32> = HashSet::from([start]);
        let mut seen_nodes: HashSet<NodeId> = HashSet::new();
        let mut order = vec![start];
        let mut frontier = vec![start];
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for slot in frontier {
                for &a in &attributes {
                    let node = self.links[slot as usize][a];
                    if node == NO_NODE || self.is_hot(node) || !seen_nodes.insert(node) {
                        continue;
                    }
                    for &other in self.nodes.holders(node) {
                        if self.ids[other as usize] != 0 && seen.insert(other) {
                            next.push(other);
                        }
                    }
                }
            }
            next.sort_unstable();
            order.extend_from_slice(&next);
            frontier = next;
        }
        debug_assert_eq!(order.len(), cluster.len());
        order
    }
}

#[cfg(test)]
mod tests {
    use super::super::{KeySet, Limits, LinkValues, Normalizer, UnifyKey};
    use super::*;
    use Attribute::*;

    fn member(pairs: &[(Attribute, &str)]) -> LinkValues {
        let mut raw: [Option<&str>; 6] = Default::default();
        for (a, v) in pairs {
            raw[a.index()] = Some(v);
        }
        LinkValues::normalize(&Normalizer::default(), &raw, false)
    }

    /// 1 and 2 share an email; 3 shares it too but holds another distinct custom id than 1,
    /// so its link is refused; 4 is elsewhere.
    fn scope() -> Unifier {
        let keys = KeySet::new(vec![
            UnifyKey {
                attribute: CustomId,
                is_distinct: true,
            },
            UnifyKey {
                attribute: DisplayEmail,
                is_distinct: false,
            },
        ])
        .unwrap();
        Unifier::from_members(
            keys,
            Limits::default(),
            vec![
                (1, member(&[(DisplayEmail, "A@x.com"), (CustomId, "C1")])),
                (2, member(&[(DisplayEmail, "a@x.com")])),
                (3, member(&[(DisplayEmail, "a@x.com"), (CustomId, "C2")])),
                (4, member(&[(DisplayEmail, "z@x.com")])),
            ],
        )
    }

    #[test]
    fn the_graph_shows_the_cluster_its_key_nodes_and_the_refused_link() {
        let u = scope();
        let g = u.cluster_graph(2, 100, |_, _| true).unwrap();
        assert_eq!(g.profile_id, 1);
        assert_eq!(g.members, vec![(2, 1), (1, 1), (3, 3)]);
        assert!(!g.truncated);
        let name = |l: &GraphLink| {
            let why = l.refused.map(Refusal::as_str);
            (l.member, g.keys[l.key].value.clone(), why)
        };
        let mut links: Vec<_> = g.links.iter().map(name).collect();
        links.sort();
        assert_eq!(
            links,
            vec![
                (1, "C1".into(), None),
                (1, "a@x.com".into(), None),
                (2, "a@x.com".into(), None),
                (3, "C2".into(), None),
                (3, "a@x.com".into(), Some("distinct_conflict")),
            ]
        );
    }

    #[test]
    fn a_bounded_graph_keeps_the_nearest_members_and_says_it_is_truncated() {
        let u = scope();
        let g = u.cluster_graph(2, 2, |_, _| true).unwrap();
        assert!(g.truncated);
        assert_eq!(g.members, vec![(2, 1), (1, 1)]);
        let hidden = u.cluster_graph(2, 100, |m, _| m != 3).unwrap();
        assert_eq!(hidden.members, vec![(2, 1), (1, 1)]);
        assert!(!hidden.truncated);
        assert!(u.cluster_graph(99, 10, |_, _| true).is_none());
    }

    #[test]
    fn holders_are_found_by_normalized_value_of_a_key_only() {
        let u = scope();
        assert_eq!(u.holders_of(DisplayEmail, "a@x.com"), vec![1, 2, 3]);
        assert!(u.holders_of(DisplayEmail, "nobody@x.com").is_empty());
        assert!(u.holders_of(LineId, "a@x.com").is_empty());
    }
}
