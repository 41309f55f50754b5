//! The internal wire protocol between controller, storage nodes and frontends.
//!
//! All of it is plain HTTP/1.1 on the nodes' own ports, kept apart from the public API: paths
//! start with `/v1/`, and a frontend never serves or forwards them.
//!
//! Storage nodes serve records:
//! - `PUT /v1/record?key=K` with headers [`TIMESTAMP`] and, for a delete, [`TOMBSTONE`]`: 1`;
//!   the body is the value. Answers 200 with [`APPLIED`] `1` if the record superseded what the node
//!   held, `0` if the node already held that record or a newer one. Idempotent.
//! - `GET /v1/record?key=K`: 200 with the record (value as body, [`TIMESTAMP`] and
//!   [`TOMBSTONE`] headers; a tombstone has an empty body), 404 if the node holds nothing.
//!
//! The controller serves membership and the map:
//! - `POST /v1/storage/register` with [`StorageRegistration`] → [`StorageRegistered`]. Storage
//!   nodes repeat it as their heartbeat.
//! - `POST /v1/frontend/register` with [`FrontendRegistration`] → [`FrontendRegistered`].
//! - `GET /v1/map?newer_than=E&wait_ms=W`: the current map as soon as its epoch exceeds `E`
//!   (a long poll: the controller answers the moment a new map exists, or 304 after `W` ms).
//! - `GET /v1/status`: members, frontends and the map epoch, for operators.

use crate::partition::Partition;
use crate::placement::{Epoch, NodeId, NodeState, PartitionMap};
use serde::{Deserialize, Serialize};

/// Header carrying a record's timestamp (decimal microseconds).
pub const TIMESTAMP: &str = "vf-timestamp";
/// Header marking a record as a tombstone (`1`).
pub const TOMBSTONE: &str = "vf-tombstone";
/// Header in a write's answer: `1` if the write superseded the stored record.
pub const APPLIED: &str = "vf-applied";

pub const RECORD_PATH: &str = "/v1/record";
pub const STORAGE_REGISTER_PATH: &str = "/v1/storage/register";
pub const FRONTEND_REGISTER_PATH: &str = "/v1/frontend/register";
pub const MAP_PATH: &str = "/v1/map";
pub const STATUS_PATH: &str = "/v1/status";
pub const CAUGHT_UP_PATH: &str = "/v1/storage/caught-up";
pub const FENCE_PATH: &str = "/v1/fence";
pub const DIGESTS_PATH: &str = "/v1/digests";
pub const DIFF_PATH: &str = "/v1/diff";
pub const BATCH_PATH: &str = "/v1/batch";
/// Header on a record read asking for the record even without a read lease (`1`): the caller
/// compares several replicas, so it does not rely on any one being fresh.
pub const UNLEASED: &str = "vf-unleased";
/// Header carrying the map epoch a write was routed by.
pub const EPOCH: &str = "vf-epoch";

/// A storage node announcing itself (and, repeated, its heartbeat).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageRegistration {
    /// `host:port` where frontends reach the node.
    pub addr: String,
    /// The id the node was given before, if it remembers one.
    pub node_id: Option<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageRegistered {
    pub node_id: NodeId,
    /// Storage nodes registered so far, and how many the cluster waits for.
    pub registered: usize,
    pub expected: usize,
    /// The epoch of the current map, once the cluster has formed.
    pub epoch: Option<Epoch>,
    /// The node's state in that map, and the epoch it last joined the write set.
    pub state: NodeState,
    pub joined: Epoch,
    /// How long, from when it sent this heartbeat, the node may serve reads (0: it may not).
    pub lease_ms: u64,
}

/// A storage node telling the controller it has pulled everything it missed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaughtUp {
    pub node_id: NodeId,
    /// The epoch at which it started catching up (its `joined`), so a stale report is ignored.
    pub joined: Epoch,
}

/// A frontend asking the controller to fence a replica that failed a write out of reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceRequest {
    pub node_id: NodeId,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendRegistration {
    /// `host:port` of the frontend's public API, for the operator's view.
    pub addr: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendRegistered {
    pub frontend_id: u64,
    /// The current map, if the cluster has formed.
    pub map: Option<PartitionMap>,
    pub registered: usize,
    pub expected: usize,
}

/// The controller's view of the cluster, served at [`STATUS_PATH`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub expected_storage: usize,
    pub replication: usize,
    pub epoch: Option<Epoch>,
    pub partitions: Option<u32>,
    pub storage: Vec<StorageStatus>,
    pub frontends: Vec<FrontendStatus>,
    /// Partitions with every replica up.
    pub partitions_healthy: usize,
    /// Partitions with some replica not up, and their replicas' states.
    pub partitions_degraded: Vec<PartitionHealth>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionHealth {
    pub partition: Partition,
    pub replicas: Vec<(NodeId, NodeState)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStatus {
    pub node_id: NodeId,
    pub addr: String,
    pub state: NodeState,
    /// Milliseconds since the node's last heartbeat.
    pub last_seen_ms: u64,
    /// Partition replicas the node holds in the current map.
    pub partitions: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendStatus {
    pub frontend_id: u64,
    pub addr: String,
    pub last_seen_ms: u64,
}
