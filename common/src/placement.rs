//! Placement: which storage nodes hold each partition, and which partitions are moving.
//!
//! The controller keeps a [`PartitionMap`]: a number of hex digits (so `16^digits` partitions),
//! the members with their states, and for every partition an [`Assignment`]: the replicas that
//! serve it and, while it moves, the set it is moving to or the nodes it is leaving. Routing
//! rules (write set, read set, the oldest epoch whose writes are still accepted) are methods
//! here, so frontends and storage nodes apply the same ones.
//!
//! A new cluster's first map deals the replica slots round-robin over the nodes in id order
//! (partition `p` replica `i` goes to node `(p * K + i) mod S`), so the `K` replicas of a
//! partition are distinct and every node holds `floor(P*K/S)` or `ceil(P*K/S)` slots. Later
//! changes keep that assignment and move as little as possible (see [`crate::layout`]).
//!
//! [`choose_digits`] picks the smallest number of digits for which that rounding leaves the most
//! loaded node within [`MAX_IMBALANCE`] of the mean. The prototype's rule (smallest `N` with
//! `16^N >= S/K`) gives 16 partitions for most clusters, and 16 partitions over 5 nodes means
//! some nodes hold 4 and others 3: a 25% skew. A growing cluster splits its partitions in place
//! when it needs more of them ([`crate::layout::split`]).

use crate::partition::{self, Partition, MAX_DIGITS};
use serde::{Deserialize, Serialize};

/// A storage node's cluster-wide identity, assigned by the controller at first registration.
pub type NodeId = u32;

/// The version number of a partition map; a newer map always has a greater epoch.
pub type Epoch = u64;

/// The most loaded node may hold at most this much more than the mean (0.10 = 10%).
pub const MAX_IMBALANCE: f64 = 0.10;

/// Where a storage node stands in the map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Holds every acknowledged write of its partitions: takes writes and serves reads.
    #[default]
    Up,
    /// Back after being down: takes new writes while it pulls what it missed; serves no reads.
    CatchingUp,
    /// Dead, hung or fenced out: takes no writes and serves no reads.
    Down,
}

/// A storage node as the map names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    /// `host:port` where frontends reach the node.
    pub addr: String,
    #[serde(default)]
    pub state: NodeState,
    /// The epoch at which the node last entered the write set (formation, or catching up after
    /// being down). Writes routed by an older map skip this node, so its partitions' other
    /// replicas refuse them (see [`PartitionMap::min_write_epoch`]).
    #[serde(default = "first_epoch")]
    pub joined: Epoch,
    /// The node's failure domain (`storage --zone`): replicas of a partition go to distinct
    /// zones whenever there are at least K of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The operator removed the node: its partitions are moving away, and it leaves the map once
    /// it holds none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaving: bool,
}

fn first_epoch() -> Epoch {
    1
}

impl Member {
    /// A node that is up since the map's first epoch.
    pub fn up(id: NodeId, addr: impl Into<String>) -> Self {
        Self { id, addr: addr.into(), state: NodeState::Up, joined: 1, zone: None, leaving: false }
    }
}

/// Who holds one partition, and where it is moving (see `docs/membership.md`).
///
/// A settled partition has only `replicas`. A move from set O to set N goes through two phases,
/// each started by a new map epoch:
/// - **copying**: `replicas` = O, `next` = N. Writes go to O ∪ N and need a write quorum in each;
///   reads use O. The nodes of N not in O pull the partition from O.
/// - **retiring**: `replicas` = N, `retiring` = O \ N. Reads use N; the retiring nodes still take
///   writes, because a frontend holding the copying map may still read from them, until each has
///   installed this map (from then on it refuses reads of the partition).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The nodes that serve reads of the partition (when up) and take its writes.
    pub replicas: Vec<NodeId>,
    /// While copying: the set that will replace `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Vec<NodeId>>,
    /// While retiring: former replicas that still take writes but serve no reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring: Vec<NodeId>,
    /// The epoch at which the current move began: writes routed by older maps miss the nodes it
    /// added, so they are refused (see [`PartitionMap::min_write_epoch`]). 0 if never moved.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub since: Epoch,
}

fn is_zero(epoch: &Epoch) -> bool {
    *epoch == 0
}

impl Assignment {
    /// A settled partition held by `replicas`.
    pub fn settled(replicas: Vec<NodeId>) -> Self {
        Self { replicas, ..Self::default() }
    }

    /// Whether a move is in progress.
    pub fn is_moving(&self) -> bool {
        self.next.is_some() || !self.retiring.is_empty()
    }

    /// Every node that must receive the partition's writes: replicas, incoming, retiring (each
    /// once, in that order).
    pub fn holders(&self) -> impl Iterator<Item = NodeId> + '_ {
        let next = self.next.iter().flatten().filter(|id| !self.replicas.contains(id));
        let retiring = self.retiring.iter().filter(|id| !self.replicas.contains(id));
        self.replicas.iter().chain(next).chain(retiring).copied()
    }

    /// The nodes of `next` that do not hold the partition yet.
    pub fn incoming(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.next.iter().flatten().copied().filter(|id| !self.replicas.contains(id))
    }

    /// The sets in each of which a write needs a quorum: `replicas`, and `next` while copying.
    pub fn quorum_sets(&self) -> impl Iterator<Item = &[NodeId]> + '_ {
        std::iter::once(self.replicas.as_slice()).chain(self.next.as_deref())
    }
}

/// The partition map the controller computes and every frontend routes by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMap {
    pub epoch: Epoch,
    /// Hex digits of SHA-1 used to pick a partition.
    pub digits: u8,
    /// Replicas per partition (K) the cluster aims for; a partition being moved to a new K has
    /// the old count in `replicas` until its move commits.
    pub replication: usize,
    /// Every storage node the map uses, sorted by id.
    pub members: Vec<Member>,
    /// Who holds each partition, in partition order.
    pub partitions: Vec<Assignment>,
}

/// Why a map cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("replication factor must be at least 1")]
    NoReplication,
    #[error("replication factor {replication} exceeds the {nodes} storage nodes available")]
    NotEnoughNodes { replication: usize, nodes: usize },
}

impl PartitionMap {
    /// The first map of a cluster formed by `members` (any order; ids must be distinct) with
    /// `replication` replicas per partition: replica slots dealt round-robin in id order, so
    /// partition `p` replica `i` is node `(p * K + i) mod S`.
    pub fn build(epoch: Epoch, mut members: Vec<Member>, replication: usize) -> Result<Self, PlacementError> {
        members.sort_by_key(|m| m.id);
        let digits = choose_digits(members.len(), replication)?;
        let partitions = partition::count(digits) as usize;
        let partitions = (0..partitions)
            .map(|p| {
                let slots = p * replication..(p + 1) * replication;
                Assignment::settled(slots.map(|slot| members[slot % members.len()].id).collect())
            })
            .collect();
        Ok(Self { epoch, digits, replication, members, partitions })
    }

    pub fn partition_count(&self) -> u32 {
        partition::count(self.digits)
    }

    /// Who holds `partition`.
    pub fn assignment(&self, partition: Partition) -> &Assignment {
        &self.partitions[partition as usize]
    }

    /// The nodes that serve reads of `partition` (when up).
    pub fn replicas_of(&self, partition: Partition) -> &[NodeId] {
        &self.assignment(partition).replicas
    }

    /// The partition of `key` and the nodes serving it.
    pub fn locate(&self, key: &[u8]) -> (Partition, &[NodeId]) {
        let p = partition::of(key, self.digits);
        (p, self.replicas_of(p))
    }

    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.binary_search_by_key(&id, |m| m.id).ok().map(|i| &self.members[i])
    }

    /// The state of `id` (a node the map does not know is down).
    pub fn state(&self, id: NodeId) -> NodeState {
        self.member(id).map_or(NodeState::Down, |m| m.state)
    }

    /// The nodes that take writes of `partition`: every holder that is not down.
    pub fn write_set(&self, partition: Partition) -> impl Iterator<Item = NodeId> + '_ {
        self.assignment(partition).holders().filter(move |&id| self.state(id) != NodeState::Down)
    }

    /// The replicas of `partition` that may serve reads: up only.
    pub fn read_set(&self, partition: Partition) -> impl Iterator<Item = NodeId> + '_ {
        self.replicas_of(partition).iter().copied().filter(move |&id| self.state(id) == NodeState::Up)
    }

    /// The oldest map epoch whose writes to `partition` are still accepted: the later of the
    /// epoch its current move began and the latest epoch at which one of its live holders
    /// (re)joined. A frontend routing by an older map does not send to every holder, so its
    /// write must be refused and retried with a newer map.
    pub fn min_write_epoch(&self, partition: Partition) -> Epoch {
        let joined = self.write_set(partition).filter_map(|id| self.member(id)).map(|m| m.joined).max();
        joined.unwrap_or(1).max(self.assignment(partition).since)
    }

    /// Whether `id` must hold `partition` (as replica, incoming or retiring).
    pub fn holds(&self, id: NodeId, partition: Partition) -> bool {
        self.assignment(partition).holders().any(|h| h == id)
    }

    /// The partitions `id` must hold (as replica, incoming or retiring).
    pub fn partitions_of(&self, id: NodeId) -> impl Iterator<Item = Partition> + '_ {
        (0..self.partition_count()).filter(move |&p| self.holds(id, p))
    }

    /// Whether no partition is moving.
    pub fn is_settled(&self) -> bool {
        !self.partitions.iter().any(Assignment::is_moving)
    }

    /// How many partitions each member serves reads of, in member order.
    pub fn load(&self) -> Vec<usize> {
        self.members
            .iter()
            .map(|m| self.partitions.iter().filter(|a| a.replicas.contains(&m.id)).count())
            .collect()
    }
}

/// The replicas of a write quorum out of `replicas`: a majority.
pub fn write_quorum(replicas: usize) -> usize {
    replicas / 2 + 1
}

/// How many of `replicas` replicas together hold every write a write quorum acknowledged:
/// `K - W + 1`, since any that many overlap every majority.
pub fn covering(replicas: usize) -> usize {
    replicas + 1 - write_quorum(replicas)
}

/// The smallest number of hex digits whose round-robin placement gives every one of `nodes`
/// nodes some partition and keeps the most loaded within [`MAX_IMBALANCE`] of the mean.
pub fn choose_digits(nodes: usize, replication: usize) -> Result<u8, PlacementError> {
    if replication == 0 {
        return Err(PlacementError::NoReplication);
    }
    if replication > nodes {
        return Err(PlacementError::NotEnoughNodes { replication, nodes });
    }
    let balanced = |digits: u8| {
        let slots = partition::count(digits) as usize * replication;
        let most = slots.div_ceil(nodes) as f64;
        let mean = slots as f64 / nodes as f64;
        slots >= nodes && most <= mean * (1.0 + MAX_IMBALANCE)
    };
    Ok((1..=MAX_DIGITS).find(|&d| balanced(d)).unwrap_or(MAX_DIGITS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_sets_overlap_every_write_quorum() {
        for (k, quorum, covering) in [(1, 1, 1), (2, 2, 1), (3, 2, 2), (4, 3, 2), (5, 3, 3)] {
            assert_eq!((write_quorum(k), super::covering(k)), (quorum, covering), "K = {k}");
            // Any covering set meets any quorum: together they are more than K.
            assert!(quorum + covering > k);
        }
    }

    fn members(n: usize) -> Vec<Member> {
        // Ids deliberately not contiguous and not in order.
        (0..n as u32).rev().map(|i| Member::up(i * 3 + 7, format!("10.0.0.{i}:7000"))).collect()
    }

    #[test]
    fn every_partition_has_distinct_replicas_and_load_is_even() {
        for nodes in 1..=64usize {
            for replication in 1..=nodes.min(5) {
                let map = PartitionMap::build(1, members(nodes), replication).unwrap();
                assert_eq!(map.partitions.len(), map.partition_count() as usize);
                for p in 0..map.partition_count() {
                    let mut r = map.replicas_of(p).to_vec();
                    r.sort();
                    r.dedup();
                    assert_eq!(r.len(), replication, "partition {p} of S={nodes} K={replication}");
                }
                let load = map.load();
                let mean = (map.partitions.len() * replication) as f64 / nodes as f64;
                let most = *load.iter().max().unwrap() as f64;
                assert!(
                    most <= mean * (1.0 + MAX_IMBALANCE),
                    "S={nodes} K={replication}: most loaded {most} vs mean {mean:.2}"
                );
                assert!(load.iter().all(|&l| l > 0), "S={nodes} K={replication}: idle node");
            }
        }
    }

    #[test]
    fn digits_are_the_smallest_that_balance() {
        assert_eq!(choose_digits(1, 1), Ok(1));
        assert_eq!(choose_digits(3, 3), Ok(1)); // 16 partitions, every node holds all
        assert_eq!(choose_digits(3, 1), Ok(2)); // 16/3 would leave one node 12.5% over
        assert_eq!(choose_digits(5, 3), Ok(1)); // 48 slots over 5 nodes: 10 vs 9.6
        assert_eq!(choose_digits(17, 1), Ok(2)); // 16 partitions would leave a node idle
        assert_eq!(choose_digits(63, 1), Ok(3)); // 256/63: 5 vs 4.06
        assert_eq!(choose_digits(64, 1), Ok(2)); // 256/64: exactly 4 each
        assert_eq!(choose_digits(64, 3), Ok(2));
    }

    #[test]
    fn impossible_replication_is_rejected() {
        assert_eq!(choose_digits(3, 0), Err(PlacementError::NoReplication));
        assert_eq!(choose_digits(2, 3), Err(PlacementError::NotEnoughNodes { replication: 3, nodes: 2 }));
    }

    #[test]
    fn locate_uses_the_key_hash() {
        let map = PartitionMap::build(1, members(4), 2).unwrap();
        let (p, replicas) = map.locate(b"foo");
        assert_eq!(p, partition::of(b"foo", map.digits));
        assert_eq!(replicas, map.replicas_of(p));
        assert!(map.member(replicas[0]).is_some());
    }

    #[test]
    fn states_shape_write_and_read_sets() {
        let mut map = PartitionMap::build(5, members(3), 3).unwrap();
        let ids: Vec<NodeId> = map.members.iter().map(|m| m.id).collect();
        map.members[0].state = NodeState::Down;
        map.members[1].state = NodeState::CatchingUp;
        map.members[1].joined = 5;
        let p = 0;
        let mut writes: Vec<_> = map.write_set(p).collect();
        writes.sort();
        assert_eq!(writes, [ids[1], ids[2]]);
        assert_eq!(map.read_set(p).collect::<Vec<_>>(), [ids[2]]);
        assert_eq!(map.min_write_epoch(p), 5, "a rejoined replica fences older writers");
        map.members[1].state = NodeState::Down;
        assert_eq!(map.min_write_epoch(p), 1, "down replicas do not fence");
        assert_eq!(map.partitions_of(ids[2]).count(), 16);
    }

    #[test]
    fn a_moving_partition_writes_to_both_sets_and_reads_from_the_old_one() {
        let mut map = PartitionMap::build(3, members(4), 2).unwrap();
        let ids: Vec<NodeId> = map.members.iter().map(|m| m.id).collect();
        let old = map.replicas_of(0).to_vec();
        let newcomer = *ids.iter().find(|id| !old.contains(id)).unwrap();
        let next = vec![old[0], newcomer];
        map.partitions[0].next = Some(next.clone());
        map.partitions[0].since = 3;
        assert_eq!(map.write_set(0).collect::<Vec<_>>(), [old[0], old[1], newcomer]);
        assert_eq!(map.read_set(0).collect::<Vec<_>>(), old);
        assert_eq!(map.assignment(0).quorum_sets().collect::<Vec<_>>(), [&old[..], &next[..]]);
        assert_eq!(map.assignment(0).incoming().collect::<Vec<_>>(), [newcomer]);
        assert_eq!(map.min_write_epoch(0), 3, "writers that skip the newcomer are refused");
        assert!(map.holds(newcomer, 0) && !map.is_settled());
        // Committed: the new set serves reads; the old replica still takes writes until retired.
        map.partitions[0] =
            Assignment { replicas: next.clone(), next: None, retiring: vec![old[1]], since: 3 };
        assert_eq!(map.write_set(0).collect::<Vec<_>>(), [old[0], newcomer, old[1]]);
        assert_eq!(map.read_set(0).collect::<Vec<_>>(), next);
        assert_eq!(map.assignment(0).quorum_sets().count(), 1);
        map.partitions[0].retiring.clear();
        assert!(!map.holds(old[1], 0));
        assert!(map.is_settled());
    }

    #[test]
    fn map_round_trips_through_json() {
        let map = PartitionMap::build(9, members(3), 2).unwrap();
        let json = serde_json::to_vec(&map).unwrap();
        assert_eq!(serde_json::from_slice::<PartitionMap>(&json).unwrap(), map);
    }
}
