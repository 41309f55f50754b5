//! Which replica a read asks first.
//!
//! Any readable replica of a key may serve its read. The first choice goes by partition: a
//! partition's replicas are put in the order of their node ids and turned by the partition's
//! number, so partition `p` asks the `p mod n`-th of its `n` replicas first, and the next ones
//! in turn if it fails. That gives two things:
//!
//! - **The nodes read in parallel.** A frontend's concurrent reads spread over every storage
//!   node, each taking an equal share of the partitions (±1 when every node holds every
//!   partition), so each node's read queue (see [`crate::batcher`]) serves its share while the
//!   others serve theirs. The preference used before, one node first for all reads in a 10 ms
//!   rotation, sent each burst into one queue, whose node then read it alone, one record after
//!   the other: once the data outgrew the block cache each read waited for a file read. In
//!   paired runs (`bench/tune.sh`, 2 M keys over a 16 MiB cache per node) GETs ran at
//!   69–74k/s that way and at 80–88k/s by partition, 0.60–0.64× and 0.69–0.75× of the
//!   10,000-key rate of the same run (see `docs/performance.md`).
//! - **Each node caches what it serves.** Records are stored in partition order, so a node
//!   that serves the reads of a third of the partitions keeps the blocks of that third in its
//!   cache, not of everything: 20–22% of the data blocks those reads needed were in the
//!   cache against 13–14%. Every frontend orders alike (there is no seed), so this holds
//!   with any number of frontends.
//!
//! Only the first choice is affected: a replica that fails is followed by the next one in the
//! order, and recently failed replicas still go last (see `Frontend::read_order`).

use common::partition::Partition;
use common::placement::NodeId;

/// Sorts `nodes`, replicas of `partition`, the one its reads ask first first.
pub fn order(nodes: &mut [NodeId], partition: Partition) {
    if nodes.is_empty() {
        return;
    }
    nodes.sort_unstable();
    let turn = partition as usize % nodes.len();
    nodes.rotate_left(turn);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(partition: Partition, nodes: &[NodeId]) -> NodeId {
        let mut nodes = nodes.to_vec();
        order(&mut nodes, partition);
        nodes[0]
    }

    #[test]
    fn reads_of_one_partition_ask_the_same_node_first_whatever_the_given_order() {
        for partition in 0..256 {
            let chosen = first(partition, &[1, 2, 3]);
            assert_eq!(first(partition, &[3, 1, 2]), chosen);
            assert_eq!(first(partition, &[2, 3, 1]), chosen);
        }
    }

    #[test]
    fn every_node_is_asked_first_for_an_equal_share_of_the_partitions() {
        // Every node holding every partition (K equal to the number of nodes), as few as 16.
        for (nodes, partitions) in [(vec![1, 2, 3], 16), (vec![4, 9, 2, 7, 5], 256), (vec![3, 1], 16)] {
            let mut firsts = std::collections::HashMap::new();
            for partition in 0..partitions {
                *firsts.entry(first(partition, &nodes)).or_insert(0) += 1;
            }
            let (least, most) = (firsts.values().min().unwrap(), firsts.values().max().unwrap());
            assert_eq!(firsts.len(), nodes.len(), "{firsts:?}");
            assert!(most - least <= 1, "{nodes:?} over {partitions} partitions: {firsts:?}");
        }
    }

    #[test]
    fn the_order_is_a_full_order_of_the_given_nodes() {
        for partition in 0..8 {
            let mut nodes = vec![9, 4, 6, 1];
            order(&mut nodes, partition);
            let mut sorted = nodes.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![1, 4, 6, 9]);
        }
        order(&mut [], 5);
    }
}
