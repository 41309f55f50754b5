//! The controller's membership state machine, free of I/O.
//!
//! It admits storage nodes until the expected number has registered, then forms the cluster: it
//! builds the first [`PartitionMap`] (epoch 1). Later changes that affect routing (a member
//! re-registering from a new address) produce a new map with the next epoch. Frontends register
//! to be listed and to receive the map.
//!
//! Identity rules for a storage registration, in order:
//! - it names an id the controller knows: that member, its address updated;
//! - it names no id but comes from a member's address: that member (a restarted node that lost
//!   its id);
//! - it names an unknown id or none, and the cluster is still forming: a new member (keeping
//!   the id it names, so members survive a controller restart);
//! - otherwise it is refused: the cluster is full.
//!
//! Liveness: every heartbeat of an up node grants it a read lease of [`Timing::lease`]. A node
//! whose heartbeats stop for [`Timing::down_after`] is marked down; a frontend that saw a node
//! fail a write asks to [`Cluster::fence`] it, which marks it down at once and tells the caller
//! when the last lease granted to it has expired: from then on the node serves no reads, so a
//! write it missed can be acknowledged. A down node that heartbeats again is marked catching up
//! (it takes new writes and pulls what it missed) and up once it reports [`Cluster::caught_up`].
//! Every state change is a new map epoch.
//!
//! [`Cluster::saved`] and [`Cluster::restore`] turn the durable part (sizes, members, map) into
//! a [`SavedCluster`] and back, so a restarted controller resumes the same cluster and epoch.

use common::placement::{Epoch, Member, NodeId, NodeState, PartitionMap, PlacementError};
use common::proto::{
    ClusterStatus, FrontendRegistered, FrontendStatus, PartitionHealth, StorageRegistered,
    StorageRegistration, StorageStatus,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The liveness clocks. `down_after` must exceed `lease + margin`, so that a node marked down by
/// silence holds no lease any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long after sending a heartbeat an up node may serve reads.
    pub lease: Duration,
    /// Allowance for clock-rate differences and message delay on top of the lease.
    pub margin: Duration,
    /// Silence after which a node is marked down without anyone asking.
    pub down_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease: Duration::from_millis(1500),
            margin: Duration::from_millis(250),
            down_after: Duration::from_millis(3000),
        }
    }
}

/// Why a registration is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegisterError {
    #[error("the cluster already has all {expected} storage nodes; {addr} is not one of them")]
    ClusterFull { expected: usize, addr: String },
    #[error("node id {id} is claimed by {addr}, but the cluster has formed without it")]
    UnknownId { id: NodeId, addr: String },
    #[error("address {addr} belongs to node {owner}, not to node {claimed}")]
    AddressTaken { addr: String, owner: NodeId, claimed: NodeId },
}

/// What the controller keeps on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCluster {
    pub expected: usize,
    pub replication: usize,
    pub members: Vec<Member>,
    pub map: Option<PartitionMap>,
}

/// Why saved state cannot be resumed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    #[error(
        "the saved cluster has {saved_nodes} storage nodes and {saved_replication} replicas, but the controller \
         was started with {nodes} and {replication}; start it with the saved sizes or a fresh --state-dir"
    )]
    SizeMismatch { saved_nodes: usize, saved_replication: usize, nodes: usize, replication: usize },
}

/// The outcome of an accepted storage registration.
#[derive(Debug)]
pub struct Admission {
    pub answer: StorageRegistered,
    /// Membership changed: the saved state must be updated before answering.
    pub changed: bool,
    /// Routing changed: this new map must be published.
    pub new_map: Option<Arc<PartitionMap>>,
}

#[derive(Debug, Clone)]
struct StorageMember {
    addr: String,
    state: NodeState,
    joined: Epoch,
    last_seen: Instant,
    /// When the last read lease granted to the node has surely expired.
    lease_expiry: Instant,
}

impl StorageMember {
    fn new(addr: String, state: NodeState, joined: Epoch, now: Instant, timing: &Timing) -> Self {
        // Conservative: a lease may have been granted just before we (re)started.
        Self { addr, state, joined, last_seen: now, lease_expiry: now + timing.lease + timing.margin }
    }
}

/// When a fenced node can no longer serve reads.
#[derive(Debug)]
pub struct Fenced {
    /// The caller may acknowledge writes the node missed from this instant on.
    pub ready_at: Instant,
    /// The new map, if fencing changed it.
    pub new_map: Option<Arc<PartitionMap>>,
}

#[derive(Debug, Clone)]
struct Frontend {
    addr: String,
    last_seen: Instant,
}

/// Everything the controller knows about the cluster.
#[derive(Debug)]
pub struct Cluster {
    expected: usize,
    replication: usize,
    timing: Timing,
    members: BTreeMap<NodeId, StorageMember>,
    frontends: BTreeMap<u64, Frontend>,
    map: Option<Arc<PartitionMap>>,
}

impl Cluster {
    /// A cluster waiting for `expected` storage nodes, storing each partition `replication`
    /// times. Fails if that can never form a map.
    pub fn new(expected: usize, replication: usize, timing: Timing) -> Result<Self, PlacementError> {
        common::placement::choose_digits(expected, replication)?;
        Ok(Self {
            expected,
            replication,
            timing,
            members: BTreeMap::new(),
            frontends: BTreeMap::new(),
            map: None,
        })
    }

    /// Resumes a saved cluster; the sizes given at start must match the saved ones.
    pub fn restore(
        saved: SavedCluster,
        expected: usize,
        replication: usize,
        timing: Timing,
        now: Instant,
    ) -> Result<Self, RestoreError> {
        if (saved.expected, saved.replication) != (expected, replication) {
            return Err(RestoreError::SizeMismatch {
                saved_nodes: saved.expected,
                saved_replication: saved.replication,
                nodes: expected,
                replication,
            });
        }
        let members = saved
            .members
            .into_iter()
            .map(|m| (m.id, StorageMember::new(m.addr, m.state, m.joined, now, &timing)))
            .collect();
        Ok(Self {
            expected,
            replication,
            timing,
            members,
            frontends: BTreeMap::new(),
            map: saved.map.map(Arc::new),
        })
    }

    /// The durable part of the state.
    pub fn saved(&self) -> SavedCluster {
        SavedCluster {
            expected: self.expected,
            replication: self.replication,
            members: self.member_list(),
            map: self.map.as_deref().cloned(),
        }
    }

    pub fn map(&self) -> Option<&Arc<PartitionMap>> {
        self.map.as_ref()
    }

    pub fn epoch(&self) -> Option<Epoch> {
        self.map.as_ref().map(|m| m.epoch)
    }

    /// Admits or refreshes a storage node.
    pub fn register_storage(
        &mut self,
        registration: &StorageRegistration,
        now: Instant,
    ) -> Result<Admission, RegisterError> {
        let addr = &registration.addr;
        let owner_of_addr = self.members.iter().find(|(_, m)| &m.addr == addr).map(|(&id, _)| id);
        let id = match (registration.node_id, owner_of_addr) {
            (Some(claimed), Some(owner)) if claimed != owner => {
                return Err(RegisterError::AddressTaken { addr: addr.clone(), owner, claimed })
            }
            (Some(claimed), _) if self.members.contains_key(&claimed) => claimed,
            (None, Some(owner)) => owner,
            (claimed, _) if self.members.len() < self.expected && self.map.is_none() => {
                claimed.unwrap_or_else(|| self.members.keys().next_back().map_or(1, |last| last + 1))
            }
            (Some(id), _) => return Err(RegisterError::UnknownId { id, addr: addr.clone() }),
            (None, None) => {
                return Err(RegisterError::ClusterFull { expected: self.expected, addr: addr.clone() })
            }
        };
        let mut routing_changed = false;
        let next_epoch = self.epoch().map_or(1, |e| e + 1);
        let formed = self.map.is_some();
        match self.members.get_mut(&id) {
            Some(member) => {
                member.last_seen = now;
                if &member.addr != addr {
                    log::info!("storage node {id} moved from {} to {addr}", member.addr);
                    member.addr = addr.clone();
                    routing_changed = true;
                }
                if member.state == NodeState::Down && formed {
                    log::info!("storage node {id} is back: catching up (map epoch {next_epoch})");
                    member.state = NodeState::CatchingUp;
                    member.joined = next_epoch;
                    routing_changed = true;
                }
            }
            None => {
                log::info!(
                    "storage node {id} registered from {addr} ({} of {})",
                    self.members.len() + 1,
                    self.expected
                );
                let member = StorageMember::new(addr.clone(), NodeState::Up, 1, now, &self.timing);
                self.members.insert(id, member);
                routing_changed = true;
            }
        }
        let new_map = if routing_changed && self.members.len() >= self.expected {
            Some(self.rebuild_map())
        } else {
            None
        };
        let (registered, epoch, timing) = (self.members.len(), self.epoch(), self.timing);
        // Only an up node gets a read lease.
        let member = self.members.get_mut(&id).expect("admitted above");
        let lease = if member.state == NodeState::Up {
            member.lease_expiry = now + timing.lease + timing.margin;
            timing.lease
        } else {
            Duration::ZERO
        };
        let answer = StorageRegistered {
            node_id: id,
            registered,
            expected: self.expected,
            epoch,
            state: member.state,
            joined: member.joined,
            lease_ms: lease.as_millis() as u64,
        };
        Ok(Admission { answer, changed: routing_changed, new_map })
    }

    /// Marks down every live node silent for longer than `down_after`; returns the new map if
    /// any was.
    pub fn check_liveness(&mut self, now: Instant) -> Option<Arc<PartitionMap>> {
        self.map.as_ref()?;
        let down_after = self.timing.down_after;
        let mut changed = false;
        for (id, member) in &mut self.members {
            let silent = now.saturating_duration_since(member.last_seen);
            if member.state != NodeState::Down && silent > down_after {
                log::warn!("storage node {id} silent for {silent:?}: marked down");
                member.state = NodeState::Down;
                changed = true;
            }
        }
        changed.then(|| self.rebuild_map())
    }

    /// Fences `id` out of reads because `reason`: marks it down (if it is not already) and says
    /// when its last lease has expired.
    pub fn fence(&mut self, id: NodeId, reason: &str) -> Option<Fenced> {
        let member = self.members.get_mut(&id)?;
        let ready_at = member.lease_expiry;
        if member.state == NodeState::Down {
            return Some(Fenced { ready_at, new_map: None });
        }
        log::warn!("storage node {id} fenced out ({reason}): marked down");
        member.state = NodeState::Down;
        let new_map = self.map.is_some().then(|| self.rebuild_map());
        Some(Fenced { ready_at, new_map })
    }

    /// Marks `id` up if it is catching up since epoch `joined`; returns the new map if so.
    pub fn caught_up(&mut self, id: NodeId, joined: Epoch) -> Option<Arc<PartitionMap>> {
        let member = self.members.get_mut(&id)?;
        if member.state != NodeState::CatchingUp || member.joined != joined {
            return None;
        }
        log::info!("storage node {id} caught up: marked up");
        member.state = NodeState::Up;
        Some(self.rebuild_map())
    }

    fn member_list(&self) -> Vec<Member> {
        self.members
            .iter()
            .map(|(&id, m)| Member { id, addr: m.addr.clone(), state: m.state, joined: m.joined })
            .collect()
    }

    fn rebuild_map(&mut self) -> Arc<PartitionMap> {
        let epoch = self.epoch().map_or(1, |e| e + 1);
        let map = PartitionMap::build(epoch, self.member_list(), self.replication)
            .expect("cluster sizes were validated at start");
        if epoch == 1 {
            log::info!(
                "cluster formed: {} storage nodes, {} partitions, {} replicas each (map epoch 1)",
                self.members.len(),
                map.partition_count(),
                self.replication
            );
        }
        let map = Arc::new(map);
        self.map = Some(map.clone());
        map
    }

    /// Registers or refreshes a frontend, identified by its address.
    pub fn register_frontend(&mut self, addr: &str, now: Instant) -> FrontendRegistered {
        let existing = self.frontends.iter().find(|(_, f)| f.addr == addr).map(|(&id, _)| id);
        let frontend_id = existing.unwrap_or_else(|| {
            let id = self.frontends.keys().next_back().map_or(1, |last| last + 1);
            log::info!("frontend {id} registered from {addr}");
            id
        });
        self.frontends.insert(frontend_id, Frontend { addr: addr.to_owned(), last_seen: now });
        FrontendRegistered {
            frontend_id,
            map: self.map.as_deref().cloned(),
            registered: self.members.len(),
            expected: self.expected,
        }
    }

    /// Notes that the frontend at `addr` is still watching the map.
    pub fn touch_frontend(&mut self, frontend_id: u64, now: Instant) {
        if let Some(f) = self.frontends.get_mut(&frontend_id) {
            f.last_seen = now;
        }
    }

    /// The operator's view.
    pub fn status(&self, now: Instant) -> ClusterStatus {
        let ms = |t: Instant| now.saturating_duration_since(t).as_millis() as u64;
        ClusterStatus {
            expected_storage: self.expected,
            replication: self.replication,
            epoch: self.epoch(),
            partitions: self.map.as_ref().map(|m| m.partition_count()),
            storage: self
                .members
                .iter()
                .map(|(&node_id, m)| StorageStatus {
                    node_id,
                    addr: m.addr.clone(),
                    state: m.state,
                    last_seen_ms: ms(m.last_seen),
                    partitions: self
                        .map
                        .as_ref()
                        .map_or(0, |map| map.replicas.iter().filter(|&&r| r == node_id).count()),
                })
                .collect(),
            frontends: self
                .frontends
                .iter()
                .map(|(&frontend_id, f)| FrontendStatus {
                    frontend_id,
                    addr: f.addr.clone(),
                    last_seen_ms: ms(f.last_seen),
                })
                .collect(),
            partitions_healthy: self.map.as_ref().map_or(0, |map| {
                (0..map.partition_count()).filter(|&p| map.read_set(p).count() == map.replication).count()
            }),
            partitions_degraded: self.map.as_ref().map_or_else(Vec::new, |map| {
                (0..map.partition_count())
                    .filter(|&p| map.read_set(p).count() < map.replication)
                    .map(|partition| PartitionHealth {
                        partition,
                        replicas: map.replicas_of(partition).iter().map(|&id| (id, map.state(id))).collect(),
                    })
                    .collect()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(addr: &str, node_id: Option<NodeId>) -> StorageRegistration {
        StorageRegistration { addr: addr.into(), node_id }
    }

    fn formed(n: usize, k: usize) -> Cluster {
        let mut cluster = Cluster::new(n, k, Timing::default()).unwrap();
        for i in 0..n {
            cluster.register_storage(&reg(&format!("s{i}:1"), None), Instant::now()).unwrap();
        }
        cluster
    }

    #[test]
    fn forms_once_every_expected_node_registered() {
        let mut cluster = Cluster::new(3, 2, Timing::default()).unwrap();
        let now = Instant::now();
        let a = cluster.register_storage(&reg("a:1", None), now).unwrap();
        assert_eq!((a.answer.node_id, a.answer.registered, a.answer.epoch, a.changed), (1, 1, None, true));
        assert!(a.new_map.is_none());
        let b = cluster.register_storage(&reg("b:1", None), now).unwrap();
        assert_eq!(b.answer.node_id, 2);
        let c = cluster.register_storage(&reg("c:1", None), now).unwrap();
        assert_eq!((c.answer.node_id, c.answer.epoch), (3, Some(1)));
        let map = c.new_map.expect("cluster formed");
        assert_eq!(map.epoch, 1);
        assert_eq!(map.members.iter().map(|m| m.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(cluster.map(), Some(&map));
    }

    #[test]
    fn heartbeats_keep_identity_and_do_not_change_the_map() {
        let mut cluster = formed(3, 3);
        let again = cluster.register_storage(&reg("s1:1", Some(2)), Instant::now()).unwrap();
        assert_eq!((again.answer.node_id, again.changed, again.new_map), (2, false, None));
        // A node that lost its id but comes back from its old address is the same member.
        let again = cluster.register_storage(&reg("s2:1", None), Instant::now()).unwrap();
        assert_eq!((again.answer.node_id, again.changed, again.new_map), (3, false, None));
        assert_eq!(cluster.epoch(), Some(1));
    }

    #[test]
    fn a_member_moving_address_bumps_the_epoch() {
        let mut cluster = formed(3, 2);
        let moved = cluster.register_storage(&reg("new:9", Some(1)), Instant::now()).unwrap();
        let map = moved.new_map.expect("routing changed");
        assert_eq!((moved.answer.node_id, moved.changed, map.epoch), (1, true, 2));
        assert_eq!(map.member(1).unwrap().addr, "new:9");
    }

    #[test]
    fn refuses_strangers_once_formed() {
        let mut cluster = formed(2, 1);
        let now = Instant::now();
        assert_eq!(
            cluster.register_storage(&reg("x:1", None), now).unwrap_err(),
            RegisterError::ClusterFull { expected: 2, addr: "x:1".into() }
        );
        assert_eq!(
            cluster.register_storage(&reg("x:1", Some(9)), now).unwrap_err(),
            RegisterError::UnknownId { id: 9, addr: "x:1".into() }
        );
        assert_eq!(
            cluster.register_storage(&reg("s0:1", Some(2)), now).unwrap_err(),
            RegisterError::AddressTaken { addr: "s0:1".into(), owner: 1, claimed: 2 }
        );
    }

    #[test]
    fn remembered_ids_are_kept_after_a_controller_restart() {
        let mut cluster = Cluster::new(2, 1, Timing::default()).unwrap();
        let now = Instant::now();
        assert_eq!(cluster.register_storage(&reg("b:1", Some(7)), now).unwrap().answer.node_id, 7);
        assert_eq!(cluster.register_storage(&reg("a:1", None), now).unwrap().answer.node_id, 8);
    }

    #[test]
    fn frontends_get_the_current_map() {
        let mut cluster = Cluster::new(1, 1, Timing::default()).unwrap();
        let now = Instant::now();
        let early = cluster.register_frontend("f:1", now);
        assert_eq!((early.frontend_id, early.map), (1, None));
        cluster.register_storage(&reg("s:1", None), now).unwrap();
        let again = cluster.register_frontend("f:1", now);
        assert_eq!(again.frontend_id, 1);
        assert_eq!(again.map.unwrap().epoch, 1);
        assert_eq!(cluster.register_frontend("g:1", now).frontend_id, 2);
        let status = cluster.status(now);
        assert_eq!(status.frontends.len(), 2);
        assert_eq!(status.storage[0].partitions, 16);
    }

    #[test]
    fn saved_state_resumes_the_same_cluster_and_epoch() {
        let mut cluster = formed(3, 2);
        cluster.register_storage(&reg("moved:1", Some(2)), Instant::now()).unwrap();
        let saved = cluster.saved();
        let json = serde_json::to_vec(&saved).unwrap();
        let saved: SavedCluster = serde_json::from_slice(&json).unwrap();
        let mut resumed = Cluster::restore(saved.clone(), 3, 2, Timing::default(), Instant::now()).unwrap();
        assert_eq!(resumed.epoch(), Some(2));
        assert_eq!(resumed.map(), cluster.map());
        // Members keep their ids; heartbeats change nothing.
        let again = resumed.register_storage(&reg("moved:1", Some(2)), Instant::now()).unwrap();
        assert_eq!((again.answer.node_id, again.changed), (2, false));
        assert_eq!(
            Cluster::restore(saved, 4, 2, Timing::default(), Instant::now()).unwrap_err(),
            RestoreError::SizeMismatch { saved_nodes: 3, saved_replication: 2, nodes: 4, replication: 2 }
        );
    }

    #[test]
    fn silence_marks_down_and_a_returning_node_catches_up_before_it_is_up() {
        let timing = Timing::default();
        let mut cluster = formed(3, 3);
        let start = Instant::now();
        for id in 1..=3 {
            cluster.register_storage(&reg(&format!("s{}:1", id - 1), Some(id)), start).unwrap();
        }
        assert!(cluster.check_liveness(start + timing.down_after / 2).is_none());
        // Node 2 goes silent; the others keep heartbeating.
        let later = start + timing.down_after + Duration::from_millis(10);
        for id in [1, 3] {
            cluster.register_storage(&reg(&format!("s{}:1", id - 1), Some(id)), later).unwrap();
        }
        let map = cluster.check_liveness(later).expect("node 2 marked down");
        assert_eq!(map.state(2), NodeState::Down);
        assert_eq!(map.read_set(0).count(), 2);
        // It comes back: catching up, no lease, a new joined epoch; then up once caught up.
        let back = cluster.register_storage(&reg("s1:1", Some(2)), later).unwrap();
        assert_eq!((back.answer.state, back.answer.lease_ms), (NodeState::CatchingUp, 0));
        let map = back.new_map.expect("state changed");
        assert_eq!(map.member(2).unwrap().joined, map.epoch);
        assert_eq!(map.min_write_epoch(0), map.epoch);
        assert!(cluster.caught_up(2, map.epoch - 1).is_none(), "a stale report is ignored");
        let up = cluster.caught_up(2, map.epoch).expect("marked up");
        assert_eq!(up.state(2), NodeState::Up);
        let again = cluster.register_storage(&reg("s1:1", Some(2)), later).unwrap();
        assert_eq!(
            (again.answer.state, again.answer.lease_ms),
            (NodeState::Up, timing.lease.as_millis() as u64)
        );
    }

    #[test]
    fn fencing_waits_out_the_last_lease() {
        let timing = Timing::default();
        let mut cluster = formed(3, 3);
        let granted = Instant::now();
        cluster.register_storage(&reg("s0:1", Some(1)), granted).unwrap();
        let fenced = cluster.fence(1, "write timed out").unwrap();
        assert!(fenced.ready_at >= granted + timing.lease + timing.margin);
        assert_eq!(fenced.new_map.unwrap().state(1), NodeState::Down);
        // Heartbeats of a fenced node grant nothing; fencing again changes nothing.
        let beat = cluster.register_storage(&reg("s0:1", Some(1)), granted).unwrap();
        assert_eq!(beat.answer.state, NodeState::CatchingUp);
        assert_eq!(beat.answer.lease_ms, 0);
        assert!(cluster.fence(9, "unknown").is_none());
        let status = cluster.status(granted);
        assert_eq!(status.partitions_degraded.len(), 16);
        assert_eq!(status.partitions_healthy, 0);
    }

    #[test]
    fn impossible_sizes_are_rejected() {
        assert!(Cluster::new(2, 3, Timing::default()).is_err());
        assert!(Cluster::new(2, 0, Timing::default()).is_err());
    }
}
