//! Which replica a read asks first.
//!
//! Any readable replica of a key may serve its read. Asking a random one per read spreads a
//! frontend's concurrent reads over every storage node at once, so each node's read queue (see
//! [`crate::batcher`]) coalesces only a few operations per batch, and every node wakes for
//! every burst. Instead, a frontend ranks all storage nodes in an order that changes every
//! [`ROTATION`], and a read asks the highest-ranked of its replicas first. Within one rotation,
//! concurrent reads converge on few nodes and travel in large batches (with K equal to the
//! number of nodes: one node, one queue); from one rotation to the next every node ranks first
//! equally often, so load evens out over any window of a few rotations. Each frontend ranks with
//! its own random seed, so frontends do not move in step.
//!
//! Only the first choice is affected: a replica that fails is followed by the next one in the
//! order, and recently failed replicas still go last (see `Frontend::read_order`).

use common::placement::NodeId;
use std::time::{Duration, Instant};

/// How long one ranking of the storage nodes lasts.
pub const ROTATION: Duration = Duration::from_millis(10);

/// A frontend's rotating preference among storage nodes for reads.
#[derive(Debug, Clone)]
pub struct ReadAffinity {
    seed: u64,
    start: Instant,
}

impl ReadAffinity {
    pub fn new(seed: u64) -> Self {
        Self { seed, start: Instant::now() }
    }

    /// The rotation `now` falls in.
    pub fn slot(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_nanos() / ROTATION.as_nanos()) as u64
    }

    /// Sorts `nodes` by their rank in rotation `slot`, the preferred first.
    pub fn order(&self, nodes: &mut [NodeId], slot: u64) {
        nodes.sort_by_key(|&node| self.rank(slot, node));
    }

    fn rank(&self, slot: u64, node: NodeId) -> u64 {
        mix(mix(self.seed ^ slot) ^ u64::from(node))
    }
}

/// SplitMix64's finalizer: a bijection on u64 whose output bits all depend on every input bit.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(affinity: &ReadAffinity, slot: u64, nodes: &[NodeId]) -> NodeId {
        let mut nodes = nodes.to_vec();
        affinity.order(&mut nodes, slot);
        nodes[0]
    }

    #[test]
    fn within_a_rotation_reads_over_the_same_replicas_ask_the_same_node() {
        let affinity = ReadAffinity::new(7);
        for slot in 0..100 {
            let chosen = first(&affinity, slot, &[1, 2, 3]);
            assert_eq!(first(&affinity, slot, &[3, 1, 2]), chosen);
            assert_eq!(first(&affinity, slot, &[2, 3, 1]), chosen);
        }
    }

    #[test]
    fn over_many_rotations_every_node_is_asked_first_about_equally_often() {
        let affinity = ReadAffinity::new(42);
        let nodes = [1, 2, 3, 4, 5];
        let mut firsts = [0u32; 6];
        let slots = 10_000;
        for slot in 0..slots {
            firsts[first(&affinity, slot, &nodes) as usize] += 1;
        }
        for node in nodes {
            let share = f64::from(firsts[node as usize]) / slots as f64;
            assert!((0.17..0.23).contains(&share), "node {node} first in {share:.3} of rotations");
        }
    }

    #[test]
    fn the_ranking_is_a_full_order_of_the_given_nodes() {
        let affinity = ReadAffinity::new(1);
        let mut nodes = vec![9, 4, 6, 1];
        affinity.order(&mut nodes, 3);
        let mut sorted = nodes.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![1, 4, 6, 9]);
    }

    #[test]
    fn frontends_with_different_seeds_do_not_move_in_step() {
        let (a, b) = (ReadAffinity::new(1), ReadAffinity::new(2));
        let differing =
            (0..1000).filter(|&slot| first(&a, slot, &[1, 2, 3]) != first(&b, slot, &[1, 2, 3])).count();
        // Independent choices among 3 differ in 2/3 of rotations.
        assert!((550..780).contains(&differing), "first choices differ in {differing} of 1000 rotations");
    }

    #[test]
    fn the_ranking_changes_every_rotation() {
        let affinity = ReadAffinity::new(5);
        let start = affinity.start;
        assert_eq!(affinity.slot(start), 0);
        assert_eq!(affinity.slot(start + ROTATION / 2), 0);
        assert_eq!(affinity.slot(start + ROTATION * 5 / 2), 2);
        let changes = (0..300)
            .filter(|&slot| first(&affinity, slot, &[1, 2, 3]) != first(&affinity, slot + 1, &[1, 2, 3]))
            .count();
        assert!(changes > 150, "first choice changed at only {changes} of 300 rotations");
    }
}
