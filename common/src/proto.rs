//! The internal wire protocol between controller, storage nodes and frontends.
//!
//! All of it is plain HTTP/1.1 on the nodes' own ports, kept apart from the public API: paths
//! start with `/v1/`, and a frontend never serves or forwards them. With a cluster secret, every
//! request here but `GET /v1/status` and `GET /v1/stats` (and `/health`) carries
//! `Authorization: Bearer <secret>` and is refused with 401 without it (see [`crate::auth`]).
//!
//! Storage nodes serve records:
//! - `PUT /v1/record?key=K` with headers [`TIMESTAMP`] and, for a delete, [`TOMBSTONE`]`: 1`;
//!   the body is the value. Answers 200 with [`APPLIED`] `1` if the record superseded what the node
//!   held, `0` if the node already held that record or a newer one (then [`NEWER`] names the
//!   newer one's timestamp). Idempotent. 409 if routed
//!   by a map older than the partition needs ([`EPOCH`]), 422 if the timestamp is more than the
//!   node's `--max-clock-skew-ms` ahead of its clock (nothing stored).
//!   A key whose escaped form is longer than [`URL_KEY_BYTES`] goes in the [`KEY`] header
//!   instead of `?key=` (on reads too).
//! - `GET /v1/record?key=K`: 200 with the record (value as body, [`TIMESTAMP`] and
//!   [`TOMBSTONE`] headers; a tombstone has an empty body), 404 if the node holds nothing.
//!   With `&newer_than=T&wait_ms=W` it is a watch: the record as soon as the node holds one
//!   stamped after `T`, 304 after `W` ms without, 503 once the node may not serve the key.
//!   A value kept in a value file is streamed from the file as the caller reads it.
//! - `HEAD /v1/record?key=K`: the headers of the `GET` (timestamp, tombstone), no value: what a
//!   frontend reads before streaming a large write, to stamp it above what the replicas hold.
//!
//! The controller serves membership and the map:
//! - `POST /v1/storage/register` with [`StorageRegistration`] → [`StorageRegistered`]. Storage
//!   nodes repeat it as their heartbeat.
//! - `POST /v1/frontend/register` with [`FrontendRegistration`] → [`FrontendRegistered`].
//! - `GET /v1/map?newer_than=E&wait_ms=W`: the current map as soon as its epoch exceeds `E`
//!   (a long poll: the controller answers the moment a new map exists, or 304 after `W` ms);
//!   every answer carries the controller's clock in [`NOW`].
//! - `POST /v1/storage/caught-up` with [`CaughtUp`]: a node back from being down pulled what it
//!   missed. (A node that pulled a partition moving to it says so in its heartbeats.)
//! - `POST /v1/fence` with [`FenceRequest`]: fence a replica that missed a write out of reads.
//! - `GET /v1/status`: members, frontends, the map epoch and every move, for operators.
//! - Admin (the `velourfog` CLI): `POST /v1/admin/node/add` and `/v1/admin/node/remove` with
//!   [`NodeRequest`], `POST /v1/admin/replication` with [`ReplicationRequest`]; each answers an
//!   [`AdminOutcome`].
//!
//! Storage nodes also serve peers: `GET /v1/digests?digits=D` and `POST /v1/diff` (see the
//! storage crate's `repair` module), and `POST /v1/batch` (see [`crate::batch`]).
//!
//! And frontends listing keys: `POST /v1/keys` with [`ListKeys`] → [`ListedKeys`]: the live
//! keys of one partition that start with a prefix, in stored order (the key's 4-byte SHA-1
//! prefix, then its bytes), from an inclusive position, within budgets of keys, bytes and
//! records examined (at most [`MAX_LISTED_KEYS`] and [`MAX_SCANNED_RECORDS`] per call).
//! Tombstones are left out. The answer says where to resume, or that the partition has no
//! record left. Served under the rules of a leased read: only by an up node holding a read
//! lease that is a read replica of every partition of its own map the requested one overlaps
//! (the maps' digit counts may differ), else 503. A POST so that long prefixes and positions
//! travel in the body, not in the URL.

use crate::partition::Partition;
use crate::placement::{Epoch, NodeId, NodeState, PartitionMap};
use serde::{Deserialize, Serialize};

/// Header carrying a record's timestamp (decimal microseconds).
pub const TIMESTAMP: &str = "vf-timestamp";
/// Header marking a record as a tombstone (`1`).
pub const TOMBSTONE: &str = "vf-tombstone";
/// Header in a write's answer: `1` if the write superseded the stored record.
pub const APPLIED: &str = "vf-applied";
/// Header in a write's answer when the node holds a different record that wins over the write:
/// that record's timestamp. The frontend then stamps its write again above it, so a write that
/// starts after another was acknowledged is never lost to it, whatever the clocks say.
pub const NEWER: &str = "vf-newer";
/// Header on a record read of a value kept in a file of its own (1 MiB or more): a 128-bit
/// hash of the value (seeded xxh3-128) as 32 hex digits. Two replicas' values of the same timestamp and hash are the same
/// value, so a read that compares replicas need not read the values to tell.
pub const VALUE_HASH: &str = "vf-value-hash";
/// Header on a [`DIFF_PATH`] answer to a caller that asked `by_reference=1`: the answer
/// stopped at its size budget, and the caller asks again with `from=` this (percent-encoded)
/// position. Such an answer carries values of 1 MiB or more by reference only, for the caller
/// to fetch one at a time as streams (see the storage crate's `repair`).
pub const RESUME: &str = "vf-resume";

pub const RECORD_PATH: &str = "/v1/record";
pub const STORAGE_REGISTER_PATH: &str = "/v1/storage/register";
pub const FRONTEND_REGISTER_PATH: &str = "/v1/frontend/register";
pub const MAP_PATH: &str = "/v1/map";
pub const STATUS_PATH: &str = "/v1/status";
/// The dashboard's data: the status, each storage node's records and disk, and the cluster's
/// request rates and latencies over the last minutes (see the controller's `dashboard` module).
pub const DASHBOARD_PATH: &str = "/v1/dashboard";
pub const CAUGHT_UP_PATH: &str = "/v1/storage/caught-up";
pub const FENCE_PATH: &str = "/v1/fence";
pub const DIGESTS_PATH: &str = "/v1/digests";
pub const DIFF_PATH: &str = "/v1/diff";
/// Storage node to storage node: reaping tombstones (`?phase=check|drop`, body a versions
/// list; see the storage crate's `reaper`).
pub const REAP_PATH: &str = "/v1/reap";
pub const BATCH_PATH: &str = "/v1/batch";
/// Listing the keys of a partition (see the module docs and [`ListKeys`]).
pub const KEYS_PATH: &str = "/v1/keys";
/// The most keys one [`KEYS_PATH`] call answers, and the bound of the public `limit`.
pub const MAX_LISTED_KEYS: usize = 10_000;
/// The most records one [`KEYS_PATH`] call examines, so a prefix that matches few keys cannot
/// make a call long.
pub const MAX_SCANNED_RECORDS: usize = 100_000;
pub const ADMIN_NODE_ADD_PATH: &str = "/v1/admin/node/add";
pub const ADMIN_NODE_REMOVE_PATH: &str = "/v1/admin/node/remove";
pub const ADMIN_REPLICATION_PATH: &str = "/v1/admin/replication";
/// Header on a record read asking for the record even without a read lease (`1`): the caller
/// compares several replicas, so it does not rely on any one being fresh.
pub const UNLEASED: &str = "vf-unleased";
/// The longest key any node accepts, and the default and bound of `--max-key-bytes`: the storage
/// engine holds keys of up to 65,535 bytes, and a stored key is the key behind a 4-byte
/// partition prefix.
pub const MAX_KEY_BYTES: usize = 65_535 - 4;

/// Header carrying a record's key, percent-encoded as in a query string, for keys whose escaped
/// form is too long for a URL (`/v1/record` without `?key=`).
pub const KEY: &str = "vf-key";
/// Escaped keys longer than this travel in the [`KEY`] header instead of the URL: a URL holds
/// at most 64 KiB, and escaping can triple a key.
pub const URL_KEY_BYTES: usize = 8 * 1024;
/// Header on the controller's map answers: its clock when it answered (microseconds since the
/// Unix epoch), which frontends compare their own with.
pub const NOW: &str = "vf-now";
/// Header carrying the map epoch a write was routed by.
pub const EPOCH: &str = "vf-epoch";

/// A storage node announcing itself (and, repeated, its heartbeat).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageRegistration {
    /// `host:port` where frontends reach the node.
    pub addr: String,
    /// The id the node was given before, if it remembers one.
    pub node_id: Option<NodeId>,
    /// The random token kept with the id in the node's data directory: the controller admits
    /// registrations for a member only with the token it first saw for it, so nobody can
    /// change a member's address or state by claiming its id.
    #[serde(default)]
    pub token: Option<String>,
    /// The node's failure domain (`storage --zone`).
    #[serde(default)]
    pub zone: Option<String>,
    /// The epoch of the newest map the node has installed.
    #[serde(default)]
    pub map_epoch: Option<Epoch>,
    /// That map itself, offered when the controller may not know it (its last answer named an
    /// older epoch, or none): a controller that lost its state adopts the newest map offered.
    #[serde(default)]
    pub map: Option<PartitionMap>,
    /// Partitions the node is pulling because they are moving to it, and how far it got.
    #[serde(default)]
    pub transfers: Vec<TransferProgress>,
    /// Partitions moving to the node that it has pulled completely, each with its move's
    /// `since` epoch, all while its `joined` epoch was [`Self::joined`] (a node that was down
    /// in between may have missed writes, so its reports are ignored).
    #[serde(default)]
    pub synced: Vec<(Partition, Epoch)>,
    #[serde(default)]
    pub joined: Epoch,
    /// The node's disk and its free-space floor (absent from nodes of older versions).
    #[serde(default)]
    pub disk: Option<DiskStatus>,
}

/// A storage node's disk as it reports it in heartbeats (see `storage --min-free-disk-mib`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStatus {
    /// Free and total bytes of the filesystem holding the node's data directory.
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// The floor below which it refuses writes of values (0: none).
    pub floor_bytes: u64,
    /// Free space is below the floor: writes of values are refused with 507.
    pub refusing_writes: bool,
}

/// How far a node got pulling one partition that is moving to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferProgress {
    pub partition: Partition,
    /// The move's `since` epoch.
    pub since: Epoch,
    pub bytes_done: u64,
    /// Bytes the sources hold for the partition (an estimate until the pull ends).
    pub bytes_total: u64,
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
    /// The node's identity token (see [`StorageRegistration::token`]).
    #[serde(default)]
    pub token: Option<String>,
    /// The epoch at which it started catching up (its `joined`), so a stale report is ignored.
    pub joined: Epoch,
}

/// A frontend asking a storage node for keys of one partition ([`KEYS_PATH`]). Byte strings
/// are percent-encoded as in a query string (`crate::query`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListKeys {
    /// The partition, in a map of `digits` hex digits (the caller's map).
    pub digits: u8,
    pub partition: Partition,
    /// Only keys that start with these bytes (empty: all).
    #[serde(default)]
    pub prefix: String,
    /// Where to start, inclusive, in the order of stored keys (4-byte hash prefix, then key):
    /// a [`ListedKeys::next`] of an earlier call; `None`: the partition's start.
    #[serde(default)]
    pub from: Option<String>,
    /// The most keys to answer, 1 to [`MAX_LISTED_KEYS`].
    pub limit: usize,
    /// Stop once the keys answered add up to this many bytes (unescaped), at least 1.
    pub max_bytes: usize,
    /// The most records to examine, 1 to [`MAX_SCANNED_RECORDS`].
    pub max_scan: usize,
}

/// A storage node's answer to [`ListKeys`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedKeys {
    /// Live keys with the prefix, percent-encoded, in stored order.
    pub keys: Vec<String>,
    /// Where the next call resumes (inclusive, percent-encoded): after every record this call
    /// examined and at or before the next one the node holds. `None`: the partition has no
    /// record after those examined.
    pub next: Option<String>,
    /// Records examined, matching or not.
    pub scanned: usize,
    /// Bytes of the keys, unescaped.
    pub key_bytes: usize,
}

/// An operator naming a storage node: its id or its `host:port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRequest {
    pub node: String,
}

/// An operator changing the replication factor K.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationRequest {
    pub replication: usize,
}

/// What an admin request did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminOutcome {
    pub message: String,
    /// The node concerned, if any.
    pub node_id: Option<NodeId>,
    /// Partition moves the change started or queued.
    pub moves: usize,
    pub epoch: Option<Epoch>,
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
    /// The epoch of the map the frontend routes by, if any: a controller that lost its state
    /// numbers its next map above every epoch in use.
    #[serde(default)]
    pub map_epoch: Option<Epoch>,
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// How new storage nodes join a formed cluster.
    pub join: JoinPolicy,
    /// Nodes waiting for `velourfog node add` (with `--join manual`).
    pub pending: Vec<PendingStatus>,
    /// Every partition move in progress or queued; empty once the cluster is settled.
    pub moves: Vec<MoveStatus>,
}

/// How storage nodes that register with a formed cluster are admitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinPolicy {
    /// Starting a node is the operator's intent: it joins at once.
    #[default]
    Auto,
    /// New nodes wait as `pending` until `velourfog node add`.
    Manual,
}

impl std::str::FromStr for JoinPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "manual" => Ok(Self::Manual),
            other => Err(format!("unknown join policy `{other}` (expected `auto` or `manual`)")),
        }
    }
}

/// A node waiting to be added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingStatus {
    pub addr: String,
    pub zone: Option<String>,
    pub last_seen_ms: u64,
}

/// Where a partition move stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovePhase {
    /// Planned; waits for a free transfer slot.
    Queued,
    /// The new replicas are pulling the partition; writes go to both sets.
    Copying,
    /// The new set serves reads; the old replicas are being let go.
    Retiring,
}

/// One partition move, for operators.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoveStatus {
    pub partition: Partition,
    pub phase: MovePhase,
    pub from: Vec<NodeId>,
    pub to: Vec<NodeId>,
    pub bytes_done: u64,
    pub bytes_left: u64,
    /// Bytes per second over the transfer so far.
    pub rate_bytes_per_s: f64,
    /// Seconds left at that rate, once there is a rate.
    pub eta_s: Option<f64>,
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
    pub zone: Option<String>,
    /// Removed by the operator: its partitions are moving away.
    pub leaving: bool,
    /// The newest map epoch the node reported having installed.
    pub map_epoch: Option<Epoch>,
    /// Its disk, as its last heartbeat reported it (if it did).
    #[serde(default)]
    pub disk: Option<DiskStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendStatus {
    pub frontend_id: u64,
    pub addr: String,
    pub last_seen_ms: u64,
}
