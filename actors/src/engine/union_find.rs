//! A bare union-find over member–node links: the baseline the rebuild is benchmarked against
//! (SPEC 9, P1). It ignores distinct keys, hot values and size limits.

use super::partition::{Links, NO_NODE, NodeId};

/// Returns a component representative for each of `n` positions, joining every position with
/// each of its nodes on the attribute indices `attributes`.
pub(crate) fn components<L: Links + ?Sized>(
    n: u32,
    node_count: u32,
    links: &L,
    attributes: &[usize],
) -> Vec<u32> {
    let mut parent: Vec<u32> = (0..n + node_count).collect();
    let mut size: Vec<u32> = vec![1; parent.len()];
    fn find(parent: &mut [u32], mut x: u32) -> u32 {
        while parent[x as usize] != x {
            let grand = parent[parent[x as usize] as usize];
            parent[x as usize] = grand;
            x = grand;
        }
        x
    }
    for pos in 0..n {
        for &a in attributes {
            let node: NodeId = links.node(pos, a);
            if node == NO_NODE {
                continue;
            }
            let x = find(&mut parent, pos);
            let y = find(&mut parent, n + node);
            if x == y {
                continue;
            }
            let (root, child) = if size[x as usize] >= size[y as usize] {
                (x, y)
            } else {
                (y, x)
            };
            parent[child as usize] = root;
            size[root as usize] += size[child as usize];
        }
    }
    (0..n).map(|pos| find(&mut parent, pos)).collect()
}
