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
//! [`Cluster::saved`] and [`Cluster::restore`] turn the durable part (sizes, members, map) into
//! a [`SavedCluster`] and back, so a restarted controller resumes the same cluster and epoch.

use common::placement::{Epoch, Member, NodeId, PartitionMap, PlacementError};
use common::proto::{
    ClusterStatus, FrontendRegistered, FrontendStatus, StorageRegistered, StorageRegistration, StorageStatus,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

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
    last_seen: Instant,
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
    members: BTreeMap<NodeId, StorageMember>,
    frontends: BTreeMap<u64, Frontend>,
    map: Option<Arc<PartitionMap>>,
}

impl Cluster {
    /// A cluster waiting for `expected` storage nodes, storing each partition `replication`
    /// times. Fails if that can never form a map.
    pub fn new(expected: usize, replication: usize) -> Result<Self, PlacementError> {
        common::placement::choose_digits(expected, replication)?;
        Ok(Self { expected, replication, members: BTreeMap::new(), frontends: BTreeMap::new(), map: None })
    }

    /// Resumes a saved cluster; the sizes given at start must match the saved ones.
    pub fn restore(
        saved: SavedCluster,
        expected: usize,
        replication: usize,
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
            .map(|m| (m.id, StorageMember { addr: m.addr, last_seen: now }))
            .collect();
        Ok(Self { expected, replication, members, frontends: BTreeMap::new(), map: saved.map.map(Arc::new) })
    }

    /// The durable part of the state.
    pub fn saved(&self) -> SavedCluster {
        SavedCluster {
            expected: self.expected,
            replication: self.replication,
            members: self.members.iter().map(|(&id, m)| Member { id, addr: m.addr.clone() }).collect(),
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
        match self.members.get_mut(&id) {
            Some(member) => {
                member.last_seen = now;
                if &member.addr != addr {
                    log::info!("storage node {id} moved from {} to {addr}", member.addr);
                    member.addr = addr.clone();
                    routing_changed = true;
                }
            }
            None => {
                log::info!(
                    "storage node {id} registered from {addr} ({} of {})",
                    self.members.len() + 1,
                    self.expected
                );
                self.members.insert(id, StorageMember { addr: addr.clone(), last_seen: now });
                routing_changed = true;
            }
        }
        let new_map = if routing_changed && self.members.len() >= self.expected {
            Some(self.rebuild_map())
        } else {
            None
        };
        let answer = StorageRegistered {
            node_id: id,
            registered: self.members.len(),
            expected: self.expected,
            epoch: self.epoch(),
        };
        Ok(Admission { answer, changed: routing_changed, new_map })
    }

    fn rebuild_map(&mut self) -> Arc<PartitionMap> {
        let epoch = self.epoch().map_or(1, |e| e + 1);
        let members = self.members.iter().map(|(&id, m)| Member { id, addr: m.addr.clone() }).collect();
        let map = PartitionMap::build(epoch, members, self.replication)
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
        let mut cluster = Cluster::new(n, k).unwrap();
        for i in 0..n {
            cluster.register_storage(&reg(&format!("s{i}:1"), None), Instant::now()).unwrap();
        }
        cluster
    }

    #[test]
    fn forms_once_every_expected_node_registered() {
        let mut cluster = Cluster::new(3, 2).unwrap();
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
        let mut cluster = Cluster::new(2, 1).unwrap();
        let now = Instant::now();
        assert_eq!(cluster.register_storage(&reg("b:1", Some(7)), now).unwrap().answer.node_id, 7);
        assert_eq!(cluster.register_storage(&reg("a:1", None), now).unwrap().answer.node_id, 8);
    }

    #[test]
    fn frontends_get_the_current_map() {
        let mut cluster = Cluster::new(1, 1).unwrap();
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
        let mut resumed = Cluster::restore(saved.clone(), 3, 2, Instant::now()).unwrap();
        assert_eq!(resumed.epoch(), Some(2));
        assert_eq!(resumed.map(), cluster.map());
        // Members keep their ids; heartbeats change nothing.
        let again = resumed.register_storage(&reg("moved:1", Some(2)), Instant::now()).unwrap();
        assert_eq!((again.answer.node_id, again.changed), (2, false));
        assert_eq!(
            Cluster::restore(saved, 4, 2, Instant::now()).unwrap_err(),
            RestoreError::SizeMismatch { saved_nodes: 3, saved_replication: 2, nodes: 4, replication: 2 }
        );
    }

    #[test]
    fn impossible_sizes_are_rejected() {
        assert!(Cluster::new(2, 3).is_err());
        assert!(Cluster::new(2, 0).is_err());
    }
}
