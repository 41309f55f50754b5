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

use crate::placement::{Epoch, NodeId, PartitionMap};
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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStatus {
    pub node_id: NodeId,
    pub addr: String,
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
