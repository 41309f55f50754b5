//! The controller's membership state machine, free of I/O.
//!
//! It admits storage nodes until the expected number has registered, then forms the cluster: it
//! builds the first [`PartitionMap`] (epoch 1). After that the cluster is elastic: a node that
//! registers joins (at once, or after `velourfog node add` with [`JoinPolicy::Manual`]), an
//! operator removes nodes and changes K, and every such change replans where each partition
//! should live ([`common::layout::plan`], moving as little as possible). [`Cluster::step`] then
//! walks the partitions there a few at a time, each through the phases of
//! [`common::placement::Assignment`] (copying, retiring), one map epoch per step. The design and
//! the argument for why no acknowledged write is lost or read stale: `docs/membership.md`.
//!
//! Identity: a storage node is recognised by the id saved in its data directory, never by its
//! address. A registration naming a member's id is that member (its address updated); one
//! naming no id is a new node, even from a member's address: a node whose disk was replaced
//! comes back empty, so it joins as a new member and the old one is removed (its partitions are
//! re-replicated to the newcomer from the survivors). It serves no read before it has pulled
//! what it holds.
//!
//! Liveness: every heartbeat of an up node grants it a read lease of [`Timing::lease`]. A node
//! whose heartbeats stop for [`Timing::down_after`] is marked down; a frontend that saw a node
//! fail a write asks to [`Cluster::fence`] it, which marks it down at once and tells the caller
//! when the last lease granted to it has expired: from then on the node serves no reads, so a
//! write it missed can be acknowledged. A down node that heartbeats again is marked catching up
//! (it takes new writes and pulls what it missed) and up once it reports [`Cluster::caught_up`].
//! Every change is a new map epoch.
//!
//! [`Cluster::saved`] and [`Cluster::restore`] turn the durable part (sizes, members, map, plan)
//! into a [`SavedCluster`] and back, so a restarted controller resumes the same cluster, epoch
//! and moves. A controller that lost its state adopts the newest map its nodes offer
//! ([`Cluster::new`] with `adopt_for`).

use common::layout;
use common::partition::Partition;
use common::placement::{Assignment, Epoch, Member, NodeId, NodeState, PartitionMap, PlacementError};
use common::proto::{
    ClusterStatus, FrontendRegistered, FrontendStatus, JoinPolicy, MovePhase, MoveStatus, PartitionHealth,
    PendingStatus, StorageRegistered, StorageRegistration, StorageStatus, TransferProgress,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
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

/// How the cluster admits and moves: the controller's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub join: JoinPolicy,
    /// Partitions copied at the same time.
    pub moves_at_once: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self { join: JoinPolicy::Auto, moves_at_once: 8 }
    }
}

/// Why a registration is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegisterError {
    #[error("node id {id} is claimed by {addr}, but it is not a member of this cluster; a node with a new disk starts with an empty data directory")]
    UnknownId { id: NodeId, addr: String },
    #[error("address {addr} belongs to node {owner}, not to node {claimed}")]
    AddressTaken { addr: String, owner: NodeId, claimed: NodeId },
    #[error("address {addr} belongs to node {owner}, which is alive; a node with a replaced disk at that address takes its place once node {owner} is marked down")]
    AddressLive { addr: String, owner: NodeId },
    #[error("node {id} cannot prove its identity: the token in its node.json is not the one it registered with (a copied or forged identity?); nothing changed")]
    Impostor { id: NodeId },
    #[error("node {id} was removed from the cluster; to add this machine again, start it with an empty data directory")]
    Removed { id: NodeId },
    #[error("{addr} waits to be added (the controller runs with --join manual): velourfog node add {addr}")]
    Pending { addr: String },
    #[error("the controller lost its state and is collecting the map from the nodes; try again in a moment")]
    Adopting,
}

/// Why an operator's request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminError {
    #[error("the cluster has not formed yet")]
    NotFormed,
    #[error("no storage node {0} (give its id or its host:port)")]
    UnknownNode(String),
    #[error("no node waits to be added at {0}")]
    NotPending(String),
    #[error("removing node {id} would leave {left} storage nodes for {replication} replicas per partition; lower the replication first")]
    TooFewNodes { id: NodeId, left: usize, replication: usize },
    #[error("replication must be between 1 and the {nodes} storage nodes in the cluster, not {replication}")]
    BadReplication { replication: usize, nodes: usize },
}

/// What the controller keeps on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCluster {
    /// The size at which the cluster first formed.
    pub expected: usize,
    pub replication: usize,
    pub members: Vec<Member>,
    pub map: Option<PartitionMap>,
    /// Where each partition should end up (empty until formed).
    #[serde(default)]
    pub plan: Vec<Vec<NodeId>>,
    /// Nodes that left: refused if they come back under their old id.
    #[serde(default)]
    pub removed: Vec<NodeId>,
    /// The digest of each member's identity token (see `common::auth::token_digest`).
    #[serde(default)]
    pub tokens: BTreeMap<NodeId, String>,
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
    zone: Option<String>,
    state: NodeState,
    joined: Epoch,
    leaving: bool,
    last_seen: Instant,
    /// When the last read lease granted to the node has surely expired.
    lease_expiry: Instant,
    /// The newest map the node said it installed.
    map_epoch: Option<Epoch>,
    /// Moving partitions it pulled, with their `since`, while at `synced_joined`.
    synced: BTreeSet<(Partition, Epoch)>,
    synced_joined: Epoch,
    transfers: Vec<(TransferProgress, Instant)>,
    /// Its disk, as its last heartbeat said.
    disk: Option<common::proto::DiskStatus>,
}

impl StorageMember {
    fn new(member: &Member, now: Instant, timing: &Timing) -> Self {
        Self {
            addr: member.addr.clone(),
            zone: member.zone.clone(),
            state: member.state,
            joined: member.joined,
            leaving: member.leaving,
            last_seen: now,
            // Conservative: a lease may have been granted just before we (re)started.
            lease_expiry: now + timing.lease + timing.margin,
            map_epoch: None,
            synced: BTreeSet::new(),
            synced_joined: 0,
            transfers: Vec::new(),
            disk: None,
        }
    }

    fn to_member(&self, id: NodeId) -> Member {
        Member {
            id,
            addr: self.addr.clone(),
            state: self.state,
            joined: self.joined,
            zone: self.zone.clone(),
            leaving: self.leaving,
        }
    }

    /// Takes in a heartbeat of member `id`; whether the map must change (a new address or
    /// zone, or a down node back, which catches up from `rejoin_at` if given).
    fn heard(
        &mut self,
        id: NodeId,
        registration: &StorageRegistration,
        now: Instant,
        rejoin_at: Option<Epoch>,
    ) -> bool {
        self.last_seen = now;
        self.map_epoch = registration.map_epoch;
        self.disk = registration.disk;
        let started = |t: &TransferProgress| {
            let same = |(old, _): &&(TransferProgress, Instant)| {
                (old.partition, old.since) == (t.partition, t.since)
            };
            self.transfers.iter().find(same).map_or(now, |(_, started)| *started)
        };
        self.transfers = registration.transfers.iter().map(|t| (t.clone(), started(t))).collect();
        if registration.joined == self.joined {
            self.synced = registration.synced.iter().copied().collect();
            self.synced_joined = registration.joined;
        }
        let mut changed = false;
        if self.addr != registration.addr {
            log::info!("storage node {id} moved from {} to {}", self.addr, registration.addr);
            self.addr = registration.addr.clone();
            changed = true;
        }
        if self.zone != registration.zone {
            log::info!("storage node {id} is now in zone {:?}", registration.zone);
            self.zone = registration.zone.clone();
            changed = true;
        }
        if let Some(epoch) = rejoin_at.filter(|_| self.state == NodeState::Down) {
            log::info!("storage node {id} is back: catching up (map epoch {epoch})");
            self.state = NodeState::CatchingUp;
            self.joined = epoch;
            changed = true;
        }
        changed
    }

    /// Whether the node pulled `partition` for the move that began at `since`, and has stayed up
    /// since it did.
    fn has_synced(&self, partition: Partition, since: Epoch) -> bool {
        self.state == NodeState::Up
            && self.synced_joined == self.joined
            && self.synced.contains(&(partition, since))
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

/// A frontend that has not polled the map for this long is forgotten (its polls come every
/// `common::mapwatch::WATCH_WAIT` at most).
pub const FRONTEND_SILENCE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
struct Pending {
    zone: Option<String>,
    last_seen: Instant,
    approved: bool,
}

/// A controller that lost its state, collecting the newest map its nodes and frontends hold.
#[derive(Debug)]
struct Adoption {
    until: Instant,
    newest_epoch: Epoch,
    /// A node offered a map, which the controller took.
    adopted: bool,
    /// Nodes with no identity that asked to join meanwhile: once as many as form a cluster
    /// have, and no node offered a map, this is a new cluster and adoption ends.
    fresh: BTreeSet<String>,
}

/// Everything the controller knows about the cluster.
#[derive(Debug)]
pub struct Cluster {
    expected: usize,
    replication: usize,
    timing: Timing,
    policy: Policy,
    members: BTreeMap<NodeId, StorageMember>,
    pending: BTreeMap<String, Pending>,
    removed: BTreeSet<NodeId>,
    /// The digest of each member's identity token: registrations for it must carry the token.
    tokens: BTreeMap<NodeId, String>,
    frontends: BTreeMap<u64, Frontend>,
    map: Option<Arc<PartitionMap>>,
    plan: Vec<Vec<NodeId>>,
    /// The epoch at which each retiring partition's new set took over reads: its former
    /// replicas are let go once each has installed it (or is down without a lease).
    committed: BTreeMap<Partition, Epoch>,
    adoption: Option<Adoption>,
}

impl Cluster {
    /// A cluster waiting for `expected` storage nodes, storing each partition `replication`
    /// times. Fails if that can never form a map. With `adopt_for`, the controller has no saved
    /// state but nodes may hold a cluster: for that long it changes nothing and adopts the
    /// newest map a node offers.
    pub fn new(
        expected: usize,
        replication: usize,
        timing: Timing,
        policy: Policy,
        adopt_for: Option<(Duration, Instant)>,
    ) -> Result<Self, PlacementError> {
        common::placement::choose_digits(expected, replication)?;
        Ok(Self {
            expected,
            replication,
            timing,
            policy,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            removed: BTreeSet::new(),
            tokens: BTreeMap::new(),
            frontends: BTreeMap::new(),
            map: None,
            plan: Vec::new(),
            committed: BTreeMap::new(),
            adoption: adopt_for.map(|(wait, now)| Adoption {
                until: now + wait,
                newest_epoch: 0,
                adopted: false,
                fresh: BTreeSet::new(),
            }),
        })
    }

    /// Resumes a saved cluster. Once formed, the saved sizes win over the ones given at start
    /// (the cluster may have grown or shrunk since).
    pub fn restore(saved: SavedCluster, timing: Timing, policy: Policy, now: Instant) -> Self {
        let members = saved.members.iter().map(|m| (m.id, StorageMember::new(m, now, &timing))).collect();
        let mut cluster = Self {
            expected: saved.expected,
            replication: saved.replication,
            timing,
            policy,
            members,
            pending: BTreeMap::new(),
            removed: saved.removed.into_iter().collect(),
            tokens: saved.tokens,
            frontends: BTreeMap::new(),
            map: saved.map.map(Arc::new),
            plan: saved.plan,
            committed: BTreeMap::new(),
            adoption: None,
        };
        if cluster.map.is_some()
            && cluster.plan.len() != cluster.map.as_ref().map_or(0, |m| m.partitions.len())
        {
            cluster.replan();
        }
        cluster
    }

    /// Takes the sizes given at start, for a cluster that has not formed yet.
    pub fn resize_unformed(&mut self, expected: usize, replication: usize) -> Result<(), PlacementError> {
        if self.map.is_none() {
            common::placement::choose_digits(expected, replication)?;
            (self.expected, self.replication) = (expected, replication);
        }
        Ok(())
    }

    /// The durable part of the state.
    pub fn saved(&self) -> SavedCluster {
        SavedCluster {
            expected: self.expected,
            replication: self.replication,
            members: self.member_list(),
            map: self.map.as_deref().cloned(),
            plan: self.plan.clone(),
            removed: self.removed.iter().copied().collect(),
            tokens: self.tokens.clone(),
        }
    }

    pub fn map(&self) -> Option<&Arc<PartitionMap>> {
        self.map.as_ref()
    }

    pub fn epoch(&self) -> Option<Epoch> {
        self.map.as_ref().map(|m| m.epoch)
    }

    pub fn replication(&self) -> usize {
        self.replication
    }

    /// Whether the controller is still collecting a lost state from its nodes.
    pub fn adopting(&self, now: Instant) -> bool {
        self.adoption.as_ref().is_some_and(|a| now < a.until)
    }

    /// Admits or refreshes a storage node.
    pub fn register_storage(
        &mut self,
        registration: &StorageRegistration,
        now: Instant,
    ) -> Result<Admission, RegisterError> {
        if let Some(claimed) = registration.node_id {
            // Before anything the registration says is believed.
            self.prove(claimed, registration.token.as_deref())?;
        }
        if let Some(epoch) = registration.map_epoch {
            self.note_epoch(epoch);
        }
        if let Some(offered) = &registration.map {
            self.offer_map(offered, now);
        }
        let id = self.identify(registration, now)?;
        let learned = self.learn_token(id, registration.token.as_deref());
        let formed = self.map.is_some();
        let adopting = self.adopting(now);
        let next_epoch = self.epoch().map_or(1, |e| e + 1);
        let rejoin_at = (formed && !adopting).then_some(next_epoch);
        let changed = match self.members.get_mut(&id) {
            Some(member) => member.heard(id, registration, now, rejoin_at),
            None => {
                self.admit(id, registration, now, next_epoch);
                true
            }
        };
        let new_map = if !changed {
            None
        } else if formed {
            self.reshape();
            Some(self.publish_next())
        } else if self.members.len() >= self.expected && !adopting {
            Some(self.form())
        } else {
            None
        };
        Ok(Admission { answer: self.answer(id, now), changed: changed || learned, new_map })
    }

    /// Checks that a registration or report for member `id` carries the token first seen for
    /// it. A member whose token is not known yet (a controller that adopted the cluster, or
    /// state saved before tokens existed) passes, and its token is learned on registration.
    fn prove(&self, id: NodeId, token: Option<&str>) -> Result<(), RegisterError> {
        match (self.tokens.get(&id), token) {
            (None, _) => Ok(()),
            (Some(digest), Some(token)) if common::auth::token_matches(digest, token) => Ok(()),
            (Some(_), _) => Err(RegisterError::Impostor { id }),
        }
    }

    /// Keeps the digest of `token` for member `id` if none is known; whether it was new.
    fn learn_token(&mut self, id: NodeId, token: Option<&str>) -> bool {
        let Some(token) = token.filter(|_| !self.tokens.contains_key(&id)) else { return false };
        self.tokens.insert(id, common::auth::token_digest(token));
        true
    }

    /// Adds the new member `id` (up: it serves nothing before partitions move to it).
    fn admit(&mut self, id: NodeId, registration: &StorageRegistration, now: Instant, next_epoch: Epoch) {
        let member = Member {
            id,
            addr: registration.addr.clone(),
            state: NodeState::Up,
            joined: next_epoch,
            zone: registration.zone.clone(),
            leaving: false,
        };
        let formed = self.map.is_some();
        let place = if formed {
            "joining the cluster".to_owned()
        } else {
            format!("{} of {}", self.members.len() + 1, self.expected)
        };
        log::info!("storage node {id} registered from {} ({place})", member.addr);
        self.members.insert(id, StorageMember::new(&member, now, &self.timing));
        self.pending.remove(&registration.addr);
    }

    /// Which member a registration is, admitting a new one if it may join.
    fn identify(
        &mut self,
        registration: &StorageRegistration,
        now: Instant,
    ) -> Result<NodeId, RegisterError> {
        let addr = &registration.addr;
        let owner_of_addr =
            self.members.iter().find(|(_, m)| &m.addr == addr && !m.leaving).map(|(&id, _)| id);
        match registration.node_id {
            Some(claimed) if self.members.contains_key(&claimed) => match owner_of_addr {
                Some(owner) if owner != claimed => {
                    Err(RegisterError::AddressTaken { addr: addr.clone(), owner, claimed })
                }
                _ => Ok(claimed),
            },
            Some(claimed) if self.removed.contains(&claimed) => Err(RegisterError::Removed { id: claimed }),
            Some(_) if self.adopting(now) => Err(RegisterError::Adopting),
            // Before formation, a node keeps the id it remembers (a controller restarted before
            // the cluster formed relearns the same members).
            Some(claimed) if self.map.is_none() => Ok(claimed),
            Some(claimed) => Err(RegisterError::UnknownId { id: claimed, addr: addr.clone() }),
            None if self.adopting(now) && !self.new_cluster(addr) => Err(RegisterError::Adopting),
            None => self.admit_new(addr, registration.zone.clone(), owner_of_addr, now),
        }
    }

    /// A node with no id: a new member (before formation, or when joins are automatic or this
    /// one was approved), else pending. A member at the same address is a node whose disk was
    /// replaced: it is fenced out and removed, its partitions re-replicated.
    fn admit_new(
        &mut self,
        addr: &str,
        zone: Option<String>,
        owner_of_addr: Option<NodeId>,
        now: Instant,
    ) -> Result<NodeId, RegisterError> {
        if self.map.is_some() && self.policy.join == JoinPolicy::Manual {
            let pending = self.pending.entry(addr.to_owned()).or_insert(Pending {
                zone: None,
                last_seen: now,
                approved: false,
            });
            (pending.zone, pending.last_seen) = (zone, now);
            if !pending.approved {
                return Err(RegisterError::Pending { addr: addr.to_owned() });
            }
        }
        if let Some(old) = owner_of_addr {
            if self.members[&old].state != NodeState::Down {
                // The node there is still heartbeating: this is not the same machine with a
                // new disk (two processes cannot listen on one address), but a forged or
                // misconfigured registration.
                return Err(RegisterError::AddressLive { addr: addr.to_owned(), owner: old });
            }
            log::warn!(
                "a node with no identity registered from {addr}, the address of node {old}: node {old} lost its data; \
                 it is fenced out and removed, and the newcomer joins in its place"
            );
            let member = self.members.get_mut(&old).expect("owner is a member");
            member.state = NodeState::Down;
            member.leaving = true;
        }
        let highest = self.members.keys().chain(&self.removed).max().copied().unwrap_or(0);
        Ok(highest + 1)
    }

    /// The heartbeat answer for member `id`: an up node gets a read lease.
    fn answer(&mut self, id: NodeId, now: Instant) -> StorageRegistered {
        let (registered, epoch, timing, expected) =
            (self.members.len(), self.epoch(), self.timing, self.expected);
        let member = self.members.get_mut(&id).expect("answered members exist");
        let lease = if member.state == NodeState::Up {
            member.lease_expiry = now + timing.lease + timing.margin;
            timing.lease
        } else {
            Duration::ZERO
        };
        StorageRegistered {
            node_id: id,
            registered,
            expected,
            epoch,
            state: member.state,
            joined: member.joined,
            lease_ms: lease.as_millis() as u64,
        }
    }

    /// Whether the nodes asking to join with no identity while the controller adopts are enough
    /// to form a cluster of their own, no node having offered a map: then this is a new cluster,
    /// and adoption ends.
    fn new_cluster(&mut self, addr: &str) -> bool {
        let Some(adoption) = &mut self.adoption else { return true };
        adoption.fresh.insert(addr.to_owned());
        if adoption.adopted || adoption.fresh.len() < self.expected {
            return false;
        }
        log::info!("{} new storage nodes and no map offered: a new cluster", adoption.fresh.len());
        self.adoption = None;
        true
    }

    /// A map a node offers: adopted if the controller lost its state and it is the newest yet.
    fn offer_map(&mut self, offered: &PartitionMap, now: Instant) {
        if !self.adopting(now) || self.map.as_ref().is_some_and(|m| m.epoch >= offered.epoch) {
            return;
        }
        log::info!("adopting map epoch {} offered by a storage node", offered.epoch);
        self.note_epoch(offered.epoch);
        if let Some(adoption) = &mut self.adoption {
            adoption.adopted = true;
        }
        self.members =
            offered.members.iter().map(|m| (m.id, StorageMember::new(m, now, &self.timing))).collect();
        self.replication = offered.replication;
        self.expected = offered.members.len();
        self.map = Some(Arc::new(offered.clone()));
        self.plan.clear();
    }

    /// Notes an epoch some node or frontend routes by, so the next map is numbered above it.
    pub fn note_epoch(&mut self, epoch: Epoch) {
        if let Some(adoption) = &mut self.adoption {
            adoption.newest_epoch = adoption.newest_epoch.max(epoch);
        }
    }

    /// Ends an adoption whose time is up: the adopted map is published again under an epoch
    /// above every one in use. Returns the map to publish.
    fn finish_adoption(&mut self, now: Instant) -> Option<Arc<PartitionMap>> {
        let adoption = self.adoption.as_ref()?;
        if now < adoption.until {
            return None;
        }
        let (newest, adopted) = (adoption.newest_epoch, adoption.adopted);
        self.adoption = None;
        let map = self.map.as_ref().filter(|_| adopted)?;
        log::info!("adopted the cluster at map epoch {}; resuming above epoch {newest}", map.epoch);
        let mut map = PartitionMap::clone(map);
        map.epoch = map.epoch.max(newest);
        self.map = Some(Arc::new(map));
        self.reshape();
        Some(self.publish_next())
    }

    /// Marks down every live node silent for longer than `down_after`; returns the new map if
    /// any was.
    pub fn check_liveness(&mut self, now: Instant) -> Option<Arc<PartitionMap>> {
        self.map.as_ref()?;
        if self.adopting(now) {
            return None;
        }
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
        changed.then(|| self.publish_next())
    }

    /// One round of housekeeping: adoption, liveness, then the moves. Returns the map to
    /// publish if anything changed.
    pub fn step(&mut self, now: Instant) -> Option<Arc<PartitionMap>> {
        self.frontends.retain(|_, f| now.saturating_duration_since(f.last_seen) < FRONTEND_SILENCE);
        if let Some(map) = self.finish_adoption(now) {
            return Some(map);
        }
        let mut published = self.check_liveness(now);
        if self.map.is_none() || self.adopting(now) {
            return published;
        }
        if self.advance_moves(now) {
            published = Some(self.publish_next());
        }
        published
    }

    /// Fences `id` out of reads because `reason`: marks it down (if it is not already) and says
    /// when its last lease has expired. A node that was removed holds nothing: fenced already.
    pub fn fence(&mut self, id: NodeId, reason: &str, now: Instant) -> Option<Fenced> {
        if self.removed.contains(&id) {
            return Some(Fenced { ready_at: now, new_map: None });
        }
        let member = self.members.get_mut(&id)?;
        let ready_at = member.lease_expiry;
        if member.state == NodeState::Down {
            return Some(Fenced { ready_at, new_map: None });
        }
        log::warn!("storage node {id} fenced out ({reason}): marked down");
        member.state = NodeState::Down;
        let new_map = self.map.is_some().then(|| self.publish_next());
        Some(Fenced { ready_at, new_map })
    }

    /// Marks `id` up if it is catching up since epoch `joined`; returns the new map if so.
    pub fn caught_up(
        &mut self,
        id: NodeId,
        token: Option<&str>,
        joined: Epoch,
    ) -> Result<Option<Arc<PartitionMap>>, RegisterError> {
        self.prove(id, token)?;
        Ok(self.mark_caught_up(id, joined))
    }

    fn mark_caught_up(&mut self, id: NodeId, joined: Epoch) -> Option<Arc<PartitionMap>> {
        let member = self.members.get_mut(&id)?;
        if member.state != NodeState::CatchingUp || member.joined != joined {
            return None;
        }
        log::info!("storage node {id} caught up: marked up");
        member.state = NodeState::Up;
        Some(self.publish_next())
    }

    /// The member named by `node`: an id, or a `host:port` (the member there that is not
    /// already leaving, else any).
    fn find(&self, node: &str) -> Option<NodeId> {
        if let Ok(id) = node.parse::<NodeId>() {
            return self.members.contains_key(&id).then_some(id);
        }
        let at = |leaving: bool| self.members.iter().find(|(_, m)| m.addr == node && m.leaving == leaving);
        at(false).or_else(|| at(true)).map(|(&id, _)| id)
    }

    /// `velourfog node remove`: the node's partitions move to the others (copied from it while
    /// it lives, re-replicated from the survivors if it is dead), then it leaves.
    pub fn remove(&mut self, node: &str) -> Result<(NodeId, Option<Arc<PartitionMap>>), AdminError> {
        self.map.as_ref().ok_or(AdminError::NotFormed)?;
        let id = self.find(node).ok_or_else(|| AdminError::UnknownNode(node.to_owned()))?;
        if self.members[&id].leaving {
            return Ok((id, None));
        }
        let left = self.members.values().filter(|m| !m.leaving).count() - 1;
        if left < self.replication {
            return Err(AdminError::TooFewNodes { id, left, replication: self.replication });
        }
        log::info!(
            "removing storage node {id} at {}: its partitions move to the others",
            self.members[&id].addr
        );
        self.members.get_mut(&id).expect("found").leaving = true;
        self.reshape();
        Ok((id, Some(self.publish_next())))
    }

    /// `velourfog node add`: admits a node waiting with `--join manual` at its next heartbeat.
    pub fn approve(&mut self, addr: &str) -> Result<(), AdminError> {
        let pending = self.pending.get_mut(addr).ok_or_else(|| AdminError::NotPending(addr.to_owned()))?;
        pending.approved = true;
        log::info!("{addr} approved: it joins at its next heartbeat");
        Ok(())
    }

    /// `velourfog replication set`: every partition moves to `replication` replicas.
    pub fn set_replication(&mut self, replication: usize) -> Result<Option<Arc<PartitionMap>>, AdminError> {
        self.map.as_ref().ok_or(AdminError::NotFormed)?;
        let nodes = self.members.values().filter(|m| !m.leaving).count();
        if replication == 0 || replication > nodes {
            return Err(AdminError::BadReplication { replication, nodes });
        }
        if replication == self.replication {
            return Ok(None);
        }
        log::info!("replication {} -> {replication}", self.replication);
        self.replication = replication;
        self.reshape();
        Ok(Some(self.publish_next()))
    }

    /// Partition moves planned but not finished.
    pub fn moves_left(&self) -> usize {
        let Some(map) = &self.map else { return 0 };
        (0..map.partitions.len())
            .filter(|&p| map.partitions[p].is_moving() || self.wants_move(map, p))
            .count()
    }

    fn wants_move(&self, map: &PartitionMap, p: usize) -> bool {
        self.plan.get(p).is_some_and(|planned| !same_set(planned, future_set(&map.partitions[p])))
    }

    /// Recomputes where every partition should go, from where each is going now.
    fn replan(&mut self) {
        let Some(map) = &self.map else { return };
        let nodes: Vec<layout::Node> = self
            .members
            .iter()
            .filter(|(_, m)| !m.leaving)
            .map(|(&id, m)| layout::Node { id, zone: m.zone.clone() })
            .collect();
        let current: Vec<Vec<NodeId>> = map.partitions.iter().map(|a| future_set(a).to_vec()).collect();
        match layout::plan(&current, &nodes, self.replication) {
            Ok(plan) => {
                let moves = layout::moves(&current, &plan);
                let minimum = layout::minimum_moves(&current, &nodes, self.replication);
                log::info!("new layout: {moves} replica moves (the minimum is {minimum})");
                self.plan = plan;
            }
            Err(e) => log::error!("cannot plan a layout: {e}; partitions stay where they are"),
        }
    }

    /// Walks the moves one phase further where they can go; whether the map changed.
    fn advance_moves(&mut self, now: Instant) -> bool {
        let Some(map) = self.map.clone() else { return false };
        let next_epoch = map.epoch + 1;
        let mut partitions = map.partitions.clone();
        let mut changed = false;
        let mut committed = std::mem::take(&mut self.committed);
        for (p, assignment) in partitions.iter_mut().enumerate() {
            changed |= self.advance(p as Partition, assignment, &mut committed, next_epoch, now);
        }
        self.committed = committed;
        let mut moving = partitions.iter().filter(|a| a.is_moving()).count();
        for (p, (assignment, planned)) in partitions.iter_mut().zip(&self.plan).enumerate() {
            if moving >= self.policy.moves_at_once {
                break;
            }
            if assignment.is_moving() || same_set(planned, &assignment.replicas) {
                continue;
            }
            log::info!(
                "partition {p}: moving from {:?} to {planned:?} (map epoch {next_epoch})",
                assignment.replicas
            );
            assignment.next = Some(planned.clone());
            assignment.since = next_epoch;
            moving += 1;
            changed = true;
        }
        let mut map = PartitionMap::clone(&map);
        map.partitions = partitions;
        changed |= self.drop_departed(&map);
        if changed {
            self.map = Some(Arc::new(map));
        }
        if self.split_if_needed() {
            self.replan();
            changed = true;
        }
        changed
    }

    /// One partition's next phase, if it is ready for it.
    fn advance(
        &self,
        p: Partition,
        a: &mut Assignment,
        committed: &mut BTreeMap<Partition, Epoch>,
        next_epoch: Epoch,
        now: Instant,
    ) -> bool {
        if let Some(next) = a.next.clone() {
            let incoming: Vec<NodeId> = a.incoming().collect();
            if incoming.iter().any(|id| self.members.get(id).is_none_or(|m| m.leaving)) {
                log::info!("partition {p}: move to {next:?} abandoned (a node it was moving to is leaving)");
                a.next = None;
                return true;
            }
            if incoming.iter().all(|id| self.members[id].has_synced(p, a.since)) {
                log::info!("partition {p}: {next:?} hold it; they serve reads from map epoch {next_epoch}");
                a.retiring = a.replicas.iter().copied().filter(|id| !next.contains(id)).collect();
                a.replicas = next;
                a.next = None;
                committed.insert(p, next_epoch);
                return true;
            }
            return false;
        }
        if a.retiring.is_empty() {
            return false;
        }
        // Unknown after a controller restart: the current epoch is a safe stand-in.
        let at = *committed.entry(p).or_insert(next_epoch - 1);
        let let_go = |id: &NodeId| {
            self.members.get(id).is_none_or(|m| {
                m.map_epoch.is_some_and(|e| e >= at) || (m.state == NodeState::Down && m.lease_expiry <= now)
            })
        };
        if a.retiring.iter().all(let_go) {
            log::info!("partition {p}: former replicas {:?} let go", a.retiring);
            a.retiring.clear();
            committed.remove(&p);
            return true;
        }
        false
    }

    /// Splits every partition in 16 when the settled map has too few partitions to balance the
    /// nodes it has (no data moves: a partition's children live where it does).
    fn split_if_needed(&mut self) -> bool {
        let Some(current) = &self.map else { return false };
        let nodes = self.members.values().filter(|m| !m.leaving).count();
        let wanted = common::placement::choose_digits(nodes, self.replication).unwrap_or(current.digits);
        if wanted <= current.digits
            || !current.is_settled()
            || current.digits >= common::partition::MAX_DIGITS
        {
            return false;
        }
        let mut map = PartitionMap::clone(current);
        log::info!(
            "splitting {} partitions into {} to balance {nodes} nodes",
            map.partitions.len(),
            map.partitions.len() * 16
        );
        let sets: Vec<Vec<NodeId>> = map.partitions.iter().map(|a| a.replicas.clone()).collect();
        map.partitions = layout::split(&sets, 1).into_iter().map(Assignment::settled).collect();
        map.digits += 1;
        self.plan = layout::split(&self.plan, 1);
        self.map = Some(Arc::new(map));
        true
    }

    /// After a membership change: splits the partitions if the cluster needs more of them
    /// (only a settled map splits; a moving one splits once its moves are done), then replans.
    fn reshape(&mut self) {
        self.split_if_needed();
        self.replan();
    }

    /// Removes leaving members that hold nothing any more; whether any left.
    fn drop_departed(&mut self, map: &PartitionMap) -> bool {
        let departed: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(id, m)| m.leaving && !map.partitions.iter().any(|a| a.holders().any(|h| h == **id)))
            .map(|(&id, _)| id)
            .collect();
        for id in &departed {
            log::info!("storage node {id} holds no partition any more: it has left the cluster");
            self.members.remove(id);
            self.removed.insert(*id);
        }
        !departed.is_empty()
    }

    fn member_list(&self) -> Vec<Member> {
        self.members.iter().map(|(&id, m)| m.to_member(id)).collect()
    }

    /// Forms the cluster: the first map, round-robin over the members.
    fn form(&mut self) -> Arc<PartitionMap> {
        let map = PartitionMap::build(1, self.member_list(), self.replication)
            .expect("cluster sizes were validated at start");
        log::info!(
            "cluster formed: {} storage nodes, {} partitions, {} replicas each (map epoch 1)",
            self.members.len(),
            map.partition_count(),
            self.replication
        );
        self.plan = map.partitions.iter().map(|a| a.replicas.clone()).collect();
        let map = Arc::new(map);
        self.map = Some(map.clone());
        map
    }

    /// The current map with the members as they are now, under the next epoch.
    fn publish_next(&mut self) -> Arc<PartitionMap> {
        let mut map = PartitionMap::clone(self.map.as_ref().expect("formed"));
        map.epoch += 1;
        map.members = self.member_list();
        map.replication = self.replication;
        let map = Arc::new(map);
        self.map = Some(map.clone());
        map
    }

    /// Registers or refreshes a frontend, identified by its address.
    pub fn register_frontend(
        &mut self,
        addr: &str,
        map_epoch: Option<Epoch>,
        now: Instant,
    ) -> FrontendRegistered {
        if let Some(epoch) = map_epoch {
            self.note_epoch(epoch);
        }
        let existing = self.frontends.iter().find(|(_, f)| f.addr == addr).map(|(&id, _)| id);
        let frontend_id = existing.unwrap_or_else(|| {
            let id = self.frontends.keys().next_back().map_or(1, |last| last + 1);
            log::info!("frontend {id} registered from {addr}");
            id
        });
        self.frontends.insert(frontend_id, Frontend { addr: addr.to_owned(), last_seen: now });
        let map = if self.adopting(now) { None } else { self.map.as_deref().cloned() };
        FrontendRegistered { frontend_id, map, registered: self.members.len(), expected: self.expected }
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
        let map = self.map.as_deref();
        ClusterStatus {
            expected_storage: self.expected,
            replication: self.replication,
            epoch: self.epoch(),
            partitions: map.map(|m| m.partition_count()),
            storage: self
                .members
                .iter()
                .map(|(&node_id, m)| StorageStatus {
                    node_id,
                    addr: m.addr.clone(),
                    state: m.state,
                    last_seen_ms: ms(m.last_seen),
                    partitions: map.map_or(0, |map| {
                        map.partitions.iter().filter(|a| a.replicas.contains(&node_id)).count()
                    }),
                    zone: m.zone.clone(),
                    leaving: m.leaving,
                    map_epoch: m.map_epoch,
                    disk: m.disk,
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
            partitions_healthy: map.map_or(0, |map| {
                (0..map.partition_count())
                    .filter(|&p| map.read_set(p).count() >= map.replicas_of(p).len())
                    .count()
            }),
            partitions_degraded: map.map_or_else(Vec::new, degraded),
            join: self.policy.join,
            pending: self
                .pending
                .iter()
                .map(|(addr, p)| PendingStatus {
                    addr: addr.clone(),
                    zone: p.zone.clone(),
                    last_seen_ms: ms(p.last_seen),
                })
                .collect(),
            moves: self.move_statuses(now),
        }
    }

    fn move_statuses(&self, now: Instant) -> Vec<MoveStatus> {
        let Some(map) = self.map.as_deref() else { return Vec::new() };
        let mut moves = Vec::new();
        for (p, a) in map.partitions.iter().enumerate() {
            let p = p as Partition;
            let (phase, from, to) = match (&a.next, a.retiring.is_empty()) {
                (Some(next), _) => (MovePhase::Copying, a.replicas.clone(), next.clone()),
                (None, false) => {
                    let from = a.retiring.iter().chain(&a.replicas).copied().collect();
                    (MovePhase::Retiring, from, a.replicas.clone())
                }
                (None, true) if self.wants_move(map, p as usize) => {
                    (MovePhase::Queued, a.replicas.clone(), self.plan[p as usize].clone())
                }
                _ => continue,
            };
            let transfers = a
                .incoming()
                .filter_map(|id| self.members.get(&id))
                .flat_map(|m| m.transfers.iter().filter(|(t, _)| t.partition == p && t.since == a.since));
            let (mut done, mut total, mut rate) = (0u64, 0u64, 0f64);
            for (t, started) in transfers {
                done += t.bytes_done;
                total += t.bytes_total.max(t.bytes_done);
                let secs = now.saturating_duration_since(*started).as_secs_f64();
                if secs > 0.0 {
                    rate += t.bytes_done as f64 / secs;
                }
            }
            let left = total - done;
            let eta_s = (rate > 0.0).then(|| left as f64 / rate);
            moves.push(MoveStatus {
                partition: p,
                phase,
                from,
                to,
                bytes_done: done,
                bytes_left: left,
                rate_bytes_per_s: rate,
                eta_s,
            });
        }
        moves
    }
}

/// The set a partition is heading for: `next` while copying, else its replicas.
fn future_set(a: &Assignment) -> &[NodeId] {
    a.next.as_deref().unwrap_or(&a.replicas)
}

fn same_set(a: &[NodeId], b: &[NodeId]) -> bool {
    a.len() == b.len() && a.iter().all(|id| b.contains(id))
}

fn degraded(map: &PartitionMap) -> Vec<PartitionHealth> {
    (0..map.partition_count())
        .filter(|&p| map.read_set(p).count() < map.replicas_of(p).len())
        .map(|partition| PartitionHealth {
            partition,
            replicas: map.replicas_of(partition).iter().map(|&id| (id, map.state(id))).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(addr: &str, node_id: Option<NodeId>) -> StorageRegistration {
        StorageRegistration {
            addr: addr.into(),
            node_id,
            token: None,
            zone: None,
            map_epoch: None,
            map: None,
            transfers: Vec::new(),
            synced: Vec::new(),
            joined: 0,
            disk: None,
        }
    }

    fn fresh(n: usize, k: usize, policy: Policy) -> Cluster {
        Cluster::new(n, k, Timing::default(), policy, None).unwrap()
    }

    fn formed(n: usize, k: usize) -> Cluster {
        let mut cluster = fresh(n, k, Policy::default());
        for i in 0..n {
            cluster.register_storage(&reg(&format!("s{i}:1"), None), Instant::now()).unwrap();
        }
        cluster
    }

    /// A heartbeat of member `id` from a node that does its part: it installed the current map
    /// and pulled every partition moving to it.
    fn beat(cluster: &mut Cluster, id: NodeId, now: Instant) -> Admission {
        let map = cluster.map().unwrap().clone();
        let member = map.member(id).unwrap();
        let synced = (0..map.partition_count())
            .filter(|&p| map.assignment(p).incoming().any(|i| i == id))
            .map(|p| (p, map.assignment(p).since))
            .collect();
        let registration = StorageRegistration {
            map_epoch: Some(map.epoch),
            synced,
            joined: member.joined,
            zone: member.zone.clone(),
            ..reg(&member.addr, Some(id))
        };
        cluster.register_storage(&registration, now).unwrap()
    }

    /// Runs heartbeats and steps, 100 ms apart, until every move is done; returns how many
    /// steps it took.
    fn settle(cluster: &mut Cluster) -> usize {
        let start = Instant::now();
        for round in 0..10_000 {
            if cluster.moves_left() == 0 {
                return round;
            }
            let now = start + Duration::from_millis(100) * round as u32;
            // Dead nodes do not heartbeat.
            let map = cluster.map().unwrap().clone();
            let ids: Vec<NodeId> =
                map.members.iter().filter(|m| m.state != NodeState::Down).map(|m| m.id).collect();
            for id in ids {
                beat(cluster, id, now);
            }
            cluster.step(now);
        }
        panic!("moves never finished: {:?}", cluster.status(Instant::now()).moves);
    }

    fn loads(cluster: &Cluster) -> Vec<usize> {
        cluster.map().unwrap().load()
    }

    #[test]
    fn forms_once_every_expected_node_registered() {
        let mut cluster = fresh(3, 2, Policy::default());
        let now = Instant::now();
        let a = cluster.register_storage(&reg("a:1", None), now).unwrap();
        assert_eq!((a.answer.node_id, a.answer.registered, a.answer.epoch, a.changed), (1, 1, None, true));
        assert!(a.new_map.is_none());
        assert_eq!(cluster.register_storage(&reg("b:1", None), now).unwrap().answer.node_id, 2);
        let c = cluster.register_storage(&reg("c:1", None), now).unwrap();
        assert_eq!((c.answer.node_id, c.answer.epoch), (3, Some(1)));
        let map = c.new_map.expect("cluster formed");
        assert_eq!(map.members.iter().map(|m| m.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(cluster.moves_left(), 0, "a new cluster is settled");
    }

    #[test]
    fn heartbeats_keep_identity_and_do_not_change_the_map() {
        let mut cluster = formed(3, 3);
        let again = cluster.register_storage(&reg("s1:1", Some(2)), Instant::now()).unwrap();
        assert_eq!((again.answer.node_id, again.changed, again.new_map), (2, false, None));
        assert_eq!(cluster.epoch(), Some(1));
    }

    #[test]
    fn a_node_with_no_identity_at_a_members_address_replaces_it() {
        // The wiped-disk restart: same address, no id. It must not inherit node 2's reads.
        let mut cluster = formed(3, 3);
        let start = Instant::now();
        // While node 2 still heartbeats, nobody else can be at its address.
        assert_eq!(
            cluster.register_storage(&reg("s1:1", None), start).unwrap_err(),
            RegisterError::AddressLive { addr: "s1:1".into(), owner: 2 }
        );
        // Its process died: once marked down, the newcomer takes its place.
        let later = start + Timing::default().down_after + Duration::from_millis(10);
        beat(&mut cluster, 1, later);
        beat(&mut cluster, 3, later);
        cluster.step(later);
        let newcomer = cluster.register_storage(&reg("s1:1", None), later).unwrap();
        assert_eq!(newcomer.answer.node_id, 4);
        let map = newcomer.new_map.expect("membership changed");
        assert_eq!(map.state(2), NodeState::Down, "the old member is fenced out");
        assert!(map.member(2).unwrap().leaving);
        assert_eq!(map.partitions_of(4).count(), 0, "the newcomer serves nothing before it pulled");
        settle(&mut cluster);
        let map = cluster.map().unwrap();
        assert!(map.member(2).is_none(), "the old member left once its partitions moved");
        assert_eq!(loads(&cluster), [16, 16, 16]);
        assert_eq!(
            cluster.register_storage(&reg("old:1", Some(2)), Instant::now()).unwrap_err(),
            RegisterError::Removed { id: 2 }
        );
    }

    #[test]
    fn registrations_and_reports_must_carry_the_members_token() {
        let mut cluster = formed(3, 2);
        let now = Instant::now();
        let with_token = |addr: &str, id, token: Option<&str>| StorageRegistration {
            token: token.map(str::to_owned),
            ..reg(addr, id)
        };
        // The token of node 1 is learned on its first registration that carries one (formed()
        // registered without: state from before tokens existed).
        assert!(cluster.register_storage(&with_token("s0:1", Some(1), Some("t1")), now).unwrap().changed);
        assert!(cluster.saved().tokens.contains_key(&1), "kept, as a digest");
        assert!(!cluster.saved().tokens[&1].contains("t1"));
        for token in [None, Some("t2")] {
            assert_eq!(
                cluster.register_storage(&with_token("evil:1", Some(1), token), now).unwrap_err(),
                RegisterError::Impostor { id: 1 }
            );
            assert_eq!(cluster.caught_up(1, token, 1).unwrap_err(), RegisterError::Impostor { id: 1 });
        }
        assert_eq!(cluster.map().unwrap().member(1).unwrap().addr, "s0:1", "nothing changed");
        // The node itself may move.
        let moved = cluster.register_storage(&with_token("new:1", Some(1), Some("t1")), now).unwrap();
        assert_eq!(moved.new_map.unwrap().member(1).unwrap().addr, "new:1");
        // A new member's token is kept from its first registration, and survives a restart.
        let joined = cluster.register_storage(&with_token("x:1", None, Some("t4")), now).unwrap();
        let id = joined.answer.node_id;
        let mut resumed = Cluster::restore(cluster.saved(), Timing::default(), Policy::default(), now);
        assert_eq!(
            resumed.register_storage(&with_token("x:1", Some(id), Some("t1")), now).unwrap_err(),
            RegisterError::Impostor { id }
        );
        assert!(resumed.register_storage(&with_token("x:1", Some(id), Some("t4")), now).is_ok());
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
    fn strangers_join_a_formed_cluster_unless_joins_are_manual() {
        let mut cluster = formed(2, 1);
        let now = Instant::now();
        let joined = cluster.register_storage(&reg("x:1", None), now).unwrap();
        assert_eq!(joined.answer.node_id, 3);
        assert!(joined.new_map.unwrap().member(3).is_some());
        assert!(cluster.moves_left() > 0, "the newcomer gets partitions");
        assert_eq!(
            cluster.register_storage(&reg("y:1", Some(9)), now).unwrap_err(),
            RegisterError::UnknownId { id: 9, addr: "y:1".into() }
        );
        assert_eq!(
            cluster.register_storage(&reg("s0:1", Some(2)), now).unwrap_err(),
            RegisterError::AddressTaken { addr: "s0:1".into(), owner: 1, claimed: 2 }
        );

        let mut manual = fresh(2, 1, Policy { join: JoinPolicy::Manual, ..Policy::default() });
        for addr in ["a:1", "b:1"] {
            manual.register_storage(&reg(addr, None), now).unwrap();
        }
        let held = manual.register_storage(&reg("c:1", None), now).unwrap_err();
        assert_eq!(held, RegisterError::Pending { addr: "c:1".into() });
        assert_eq!(manual.status(now).pending.len(), 1);
        assert_eq!(manual.approve("d:1"), Err(AdminError::NotPending("d:1".into())));
        manual.approve("c:1").unwrap();
        assert_eq!(manual.register_storage(&reg("c:1", None), now).unwrap().answer.node_id, 3);
        assert!(manual.status(now).pending.is_empty());
    }

    #[test]
    fn growing_moves_the_minimum_and_balances() {
        let mut cluster = formed(3, 3);
        for (i, nodes) in [(3, 4), (4, 5), (5, 6)] {
            let before: Vec<Vec<NodeId>> =
                cluster.map().unwrap().partitions.iter().map(|a| a.replicas.clone()).collect();
            cluster.register_storage(&reg(&format!("s{i}:1"), None), Instant::now()).unwrap();
            settle(&mut cluster);
            let map = cluster.map().unwrap();
            let after: Vec<Vec<NodeId>> = map.partitions.iter().map(|a| a.replicas.clone()).collect();
            let load = map.load();
            let mean = (map.partitions.len() * 3) as f64 / nodes as f64;
            assert_eq!(load.len(), nodes);
            assert!(load.iter().all(|&l| (l as f64) <= mean * 1.1 && l as f64 >= mean * 0.9), "{load:?}");
            let moved = layout::moves(&before, &after);
            let ideal = (map.partitions.len() * 3).div_ceil(nodes);
            assert!(moved as f64 <= ideal as f64 * 1.1 + 1.0, "{nodes} nodes: moved {moved}, ideal {ideal}");
            assert!(map.is_settled());
        }
    }

    #[test]
    fn moves_go_a_few_at_a_time_through_copying_and_retiring() {
        let mut cluster =
            Cluster::new(3, 3, Timing::default(), Policy { join: JoinPolicy::Auto, moves_at_once: 2 }, None)
                .unwrap();
        let now = Instant::now();
        for i in 0..3 {
            cluster.register_storage(&reg(&format!("s{i}:1"), None), now).unwrap();
        }
        cluster.register_storage(&reg("s3:1", None), now).unwrap();
        let map = cluster.step(now).expect("moves start");
        let moving: Vec<Partition> = (0..16).filter(|&p| map.assignment(p).is_moving()).collect();
        assert_eq!(moving.len(), 2, "two at a time");
        let p = moving[0];
        assert_eq!(map.assignment(p).incoming().collect::<Vec<_>>(), [4]);
        assert_eq!(map.assignment(p).since, map.epoch);
        assert_eq!(map.min_write_epoch(p), map.epoch);
        assert_eq!(cluster.status(now).moves.iter().filter(|m| m.phase == MovePhase::Copying).count(), 2);
        // Nothing commits before the newcomer pulled.
        assert!(cluster.step(now).is_none());
        // A report made before the node was down and back does not count.
        let stale = StorageRegistration {
            synced: vec![(p, map.assignment(p).since)],
            joined: 0,
            ..reg("s3:1", Some(4))
        };
        cluster.register_storage(&stale, now).unwrap();
        assert!(cluster.step(now).is_none());
        beat(&mut cluster, 4, now);
        let map = cluster.step(now).expect("committed");
        assert_eq!(map.assignment(p).replicas.len(), 3);
        assert!(map.assignment(p).replicas.contains(&4));
        let retiring = map.assignment(p).retiring.clone();
        assert_eq!(retiring.len(), 1);
        // The former replica is let go only once it has installed the map that dropped it.
        assert!(cluster.step(now).is_none_or(|m| !m.assignment(p).retiring.is_empty()));
        beat(&mut cluster, retiring[0], now);
        let map = cluster.step(now).expect("let go");
        assert!(!map.assignment(p).is_moving());
        assert!(!map.holds(retiring[0], p));
        settle(&mut cluster);
        assert!(cluster.status(now).moves.is_empty());
    }

    #[test]
    fn removing_drains_a_node_then_it_leaves() {
        let mut cluster = formed(4, 3);
        assert_eq!(cluster.remove("s9:1").unwrap_err(), AdminError::UnknownNode("s9:1".into()));
        let (id, map) = cluster.remove("s1:1").unwrap();
        assert_eq!(id, 2);
        assert!(map.unwrap().member(2).unwrap().leaving);
        settle(&mut cluster);
        let map = cluster.map().unwrap();
        assert!(map.member(2).is_none());
        assert_eq!(map.load(), [16, 16, 16]);
        assert_eq!(
            cluster.remove("1").unwrap_err(),
            AdminError::TooFewNodes { id: 1, left: 2, replication: 3 }
        );
        assert_eq!(
            cluster.register_storage(&reg("s1:1", Some(2)), Instant::now()).unwrap_err(),
            RegisterError::Removed { id: 2 }
        );
    }

    #[test]
    fn a_move_to_a_node_that_is_removed_meanwhile_is_abandoned() {
        let mut cluster = formed(3, 3);
        let now = Instant::now();
        cluster.register_storage(&reg("s3:1", None), now).unwrap();
        let map = cluster.step(now).unwrap();
        assert!(!map.is_settled());
        cluster.remove("4").unwrap();
        let map = cluster.step(now).unwrap();
        assert!(
            map.is_settled(),
            "copying moves roll back: the old replicas still hold everything: {:?}",
            map.partitions
        );
        settle(&mut cluster);
        assert_eq!(cluster.map().unwrap().load(), [16, 16, 16]);
    }

    #[test]
    fn replication_changes_move_partitions() {
        let mut cluster = formed(4, 2);
        assert_eq!(
            cluster.set_replication(5).unwrap_err(),
            AdminError::BadReplication { replication: 5, nodes: 4 }
        );
        cluster.set_replication(3).unwrap();
        settle(&mut cluster);
        let map = cluster.map().unwrap();
        assert!(map.partitions.iter().all(|a| a.replicas.len() == 3));
        assert_eq!(map.replication, 3);
        cluster.set_replication(1).unwrap();
        settle(&mut cluster);
        assert!(cluster.map().unwrap().partitions.iter().all(|a| a.replicas.len() == 1));
    }

    #[test]
    fn growing_far_splits_partitions_in_place() {
        let mut cluster = formed(3, 3);
        for i in 3..20 {
            cluster.register_storage(&reg(&format!("s{i}:1"), None), Instant::now()).unwrap();
        }
        settle(&mut cluster);
        let map = cluster.map().unwrap();
        assert_eq!(map.digits, common::placement::choose_digits(20, 3).unwrap());
        let load = map.load();
        let mean = (map.partitions.len() * 3) as f64 / 20.0;
        assert!(load.iter().all(|&l| (l as f64) <= mean * 1.1), "{load:?} mean {mean}");
    }

    #[test]
    fn saved_state_resumes_the_same_cluster_whatever_the_sizes_given() {
        let mut cluster = formed(3, 2);
        cluster.register_storage(&reg("s3:1", None), Instant::now()).unwrap();
        cluster.step(Instant::now());
        let saved = cluster.saved();
        let json = serde_json::to_vec(&saved).unwrap();
        let saved: SavedCluster = serde_json::from_slice(&json).unwrap();
        let mut resumed = Cluster::restore(saved, Timing::default(), Policy::default(), Instant::now());
        resumed.resize_unformed(7, 1).unwrap();
        assert_eq!(resumed.epoch(), cluster.epoch());
        assert_eq!(resumed.map(), cluster.map());
        assert_eq!(resumed.replication(), 2);
        assert_eq!(resumed.moves_left(), cluster.moves_left(), "the moves resume");
        let again = resumed.register_storage(&reg("s3:1", Some(4)), Instant::now()).unwrap();
        assert_eq!((again.answer.node_id, again.changed), (4, false));
        settle(&mut resumed);
        assert_eq!(resumed.map().unwrap().load().len(), 4);
    }

    #[test]
    fn a_controller_without_state_adopts_the_newest_map_its_nodes_hold() {
        let mut old = formed(3, 3);
        old.register_storage(&reg("s3:1", None), Instant::now()).unwrap();
        old.step(Instant::now());
        let held = old.map().unwrap().as_ref().clone();
        let start = Instant::now();
        let wait = Duration::from_secs(3);
        let mut new = Cluster::new(3, 3, Timing::default(), Policy::default(), Some((wait, start))).unwrap();
        // Nodes with ids wait while the map is collected; a frontend reports a newer epoch.
        assert_eq!(new.register_storage(&reg("s0:1", Some(1)), start).unwrap_err(), RegisterError::Adopting);
        new.register_frontend("f:1", Some(held.epoch + 5), start);
        let offer = StorageRegistration {
            map: Some(held.clone()),
            map_epoch: Some(held.epoch),
            ..reg("s1:1", Some(2))
        };
        new.register_storage(&offer, start).unwrap();
        assert!(new.step(start).is_none(), "no change while adopting");
        let map = new.step(start + wait).expect("adopted and republished");
        assert!(map.epoch > held.epoch + 5);
        assert_eq!(map.partitions, held.partitions);
        settle(&mut new);
        assert_eq!(new.map().unwrap().load().len(), 4);
    }

    #[test]
    fn a_controller_without_state_forms_a_new_cluster_from_new_nodes_at_once() {
        let start = Instant::now();
        let wait = Some((Duration::from_secs(3), start));
        let mut cluster = Cluster::new(2, 1, Timing::default(), Policy::default(), wait).unwrap();
        assert_eq!(cluster.register_storage(&reg("a:1", None), start).unwrap_err(), RegisterError::Adopting);
        assert_eq!(cluster.register_storage(&reg("b:1", None), start).unwrap().answer.node_id, 1);
        let formed = cluster.register_storage(&reg("a:1", None), start).unwrap();
        assert_eq!(formed.new_map.expect("formed").epoch, 1);
        assert!(!cluster.adopting(start));
        assert!(cluster.step(start).is_none(), "nothing adopted, nothing to republish");
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
        let later = start + timing.down_after + Duration::from_millis(10);
        for id in [1, 3] {
            cluster.register_storage(&reg(&format!("s{}:1", id - 1), Some(id)), later).unwrap();
        }
        let map = cluster.check_liveness(later).expect("node 2 marked down");
        assert_eq!(map.state(2), NodeState::Down);
        assert_eq!(map.read_set(0).count(), 2);
        let back = cluster.register_storage(&reg("s1:1", Some(2)), later).unwrap();
        assert_eq!((back.answer.state, back.answer.lease_ms), (NodeState::CatchingUp, 0));
        let map = back.new_map.expect("state changed");
        assert_eq!(map.member(2).unwrap().joined, map.epoch);
        assert_eq!(map.min_write_epoch(0), map.epoch);
        assert!(cluster.caught_up(2, None, map.epoch - 1).unwrap().is_none(), "a stale report is ignored");
        let up = cluster.caught_up(2, None, map.epoch).unwrap().expect("marked up");
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
        let fenced = cluster.fence(1, "write timed out", granted).unwrap();
        assert!(fenced.ready_at >= granted + timing.lease + timing.margin);
        assert_eq!(fenced.new_map.unwrap().state(1), NodeState::Down);
        let beat = cluster.register_storage(&reg("s0:1", Some(1)), granted).unwrap();
        assert_eq!((beat.answer.state, beat.answer.lease_ms), (NodeState::CatchingUp, 0));
        assert!(cluster.fence(9, "unknown", granted).is_none());
        let status = cluster.status(granted);
        assert_eq!(status.partitions_degraded.len(), 16);
        assert_eq!(status.partitions_healthy, 0);
    }

    #[test]
    fn impossible_sizes_are_rejected() {
        assert!(Cluster::new(2, 3, Timing::default(), Policy::default(), None).is_err());
        assert!(Cluster::new(2, 0, Timing::default(), Policy::default(), None).is_err());
    }
}
