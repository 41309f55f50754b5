//! Partitions on the move: pulling the ones moving to this node, dropping the ones that left.
//!
//! When the controller starts moving a partition to this node (the node is in the partition's
//! `next` set but not among its replicas), [`run`] pulls it from the partition's current
//! replicas with the diff protocol of [`crate::repair`], one slice of the hash range at a time
//! (1/4096 of the key space), so memory stays bounded by a slice and a pull interrupted by a
//! crash of either side resumes where it stopped: what arrived is on disk, and the next diff
//! sends only what is still missing. Each slice is merged from enough replicas to include every
//! write a quorum acknowledged (`|O| - W + 1` of the `|O|` replicas, `W` a majority), and every
//! source must have installed the map that began the move, so from then on it refuses writes
//! routed by older maps (which skip this node); writes routed by newer maps reach this node
//! directly. Once the whole partition is pulled, the node says so in its heartbeats; the
//! controller then lets the new set serve reads (see `docs/membership.md`).
//!
//! Transfers share one rate limit per node (`--rebalance-mib-per-s`) and pause while the node's
//! disk is below its free-space floor (see [`crate::disk`]). A partition the node's
//! map no longer has it hold (its move to other nodes committed) is purged from the store, by a
//! member of the cluster or by a node the controller says it removed; a node refused for any
//! other reason (an unknown identity: pointed at the wrong cluster?) keeps its data.

use crate::repair::{self, SourceCheck};
use crate::Node;
use common::http::Client;
use common::partition::Partition;
use common::placement::{Epoch, NodeId, NodeState, PartitionMap};
use common::proto::TransferProgress;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the node looks for partitions to pull or purge.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(200);
/// Partitions pulled at the same time.
pub const PULLS_AT_ONCE: usize = 2;
/// Hex digits of a slice: the key space is pulled in at most 16^3 = 4096 slices (256 per
/// partition of a 16-partition map, one per partition of a 4096-partition map), so a slice
/// holds about 1/4096 of a node's data and a small partition costs few requests.
pub const SLICE_DIGITS: u8 = 3;

/// What this node pulled and is pulling.
#[derive(Debug)]
pub struct Moves {
    /// Partitions pulled completely, with their move's `since`, while at the `joined` epoch
    /// this set was started at (cleared when the node's `joined` changes).
    synced: Mutex<BTreeSet<(Partition, Epoch)>>,
    progress: Mutex<BTreeMap<(Partition, Epoch), TransferProgress>>,
    limiter: RateLimiter,
    /// Wakes the pulling loop early (a new map was installed).
    pub wake: tokio::sync::Notify,
}

impl Moves {
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            synced: Mutex::default(),
            progress: Mutex::default(),
            limiter: RateLimiter::new(bytes_per_sec),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// The partitions pulled so far, for the heartbeat.
    pub fn synced(&self) -> Vec<(Partition, Epoch)> {
        self.synced.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()
    }

    /// The pulls in progress, for the heartbeat.
    pub fn transfers(&self) -> Vec<TransferProgress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Forgets every pull: the node was down, so it may have missed writes since.
    pub fn forget_synced(&self) {
        self.synced.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn is_synced(&self, partition: Partition, since: Epoch) -> bool {
        self.synced.lock().unwrap_or_else(|p| p.into_inner()).contains(&(partition, since))
    }

    fn report(&self, progress: TransferProgress) {
        let key = (progress.partition, progress.since);
        self.progress.lock().unwrap_or_else(|p| p.into_inner()).insert(key, progress);
    }
}

/// Bounds the bytes per second of every pull of one node together.
#[derive(Debug)]
struct RateLimiter {
    bytes_per_sec: u64,
    /// When the bytes granted so far have been "paid for".
    next_free: Mutex<tokio::time::Instant>,
}

impl RateLimiter {
    fn new(bytes_per_sec: u64) -> Self {
        Self { bytes_per_sec: bytes_per_sec.max(1), next_free: Mutex::new(tokio::time::Instant::now()) }
    }

    /// Accounts `bytes` just received, sleeping as long as the rate requires.
    async fn spend(&self, bytes: u64) {
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let wake = {
            let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
            *next = (*next).max(tokio::time::Instant::now()) + cost;
            *next
        };
        tokio::time::sleep_until(wake).await;
    }
}

/// Pulls partitions moving to this node and purges those that left it, until `shutdown`.
pub async fn run(node: Arc<Node>, client: Client, mut shutdown: common::shutdown::Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SCAN_INTERVAL) => {}
            _ = node.moves.wake.notified() => {}
            _ = shutdown.wait() => return,
        }
        let Some((map, me)) = node.map_and_id() else { continue };
        // Only on the word of this cluster's controller: a member that registered, or a node
        // it removed (never a node that follows a map of a cluster it is not part of).
        let member = node.view().state.is_some() && map.member(me).is_some();
        if member || node.removed.load(std::sync::atomic::Ordering::Relaxed) {
            purge_departed(&node, &map, me);
        }
        if !member {
            continue;
        }
        // Only an up node's pull counts: one catching up is pulling everything anyway.
        if node.state() != NodeState::Up {
            continue;
        }
        let joined = node.view().joined;
        let wanted: Vec<(Partition, Epoch)> = (0..map.partition_count())
            .map(|p| (p, map.assignment(p)))
            .filter(|(p, a)| a.incoming().any(|id| id == me) && !node.moves.is_synced(*p, a.since))
            .map(|(p, a)| (p, a.since))
            .collect();
        for group in wanted.chunks(PULLS_AT_ONCE) {
            let pulls = group.iter().map(|&(p, since)| {
                let (node, client, map) = (&node, &client, &map);
                async move { (p, since, pull(node, client, map, me, p).await) }
            });
            for (p, since, result) in futures_util::future::join_all(pulls).await {
                match result {
                    Ok(bytes) => {
                        if node.view().joined == joined && node.state() == NodeState::Up {
                            node.moves.synced.lock().unwrap_or_else(|p| p.into_inner()).insert((p, since));
                            node.heartbeat_now.notify_one();
                        }
                        log::info!(
                            "partition {p} pulled ({bytes} bytes received) for the move of map epoch {since}"
                        );
                    }
                    Err(e) => log::warn!("pulling partition {p}: {e}; retrying"),
                }
            }
        }
    }
}

/// Pulls `partition` from its replicas, slice by slice; returns the bytes received.
async fn pull(
    node: &Node,
    client: &Client,
    map: &PartitionMap,
    me: NodeId,
    p: Partition,
) -> Result<u64, String> {
    let assignment = map.assignment(p);
    let since = assignment.since;
    let sources: Vec<(NodeId, String)> = assignment
        .replicas
        .iter()
        .filter(|&&id| id != me)
        .filter_map(|&id| map.member(id).filter(|m| m.state != NodeState::Down).map(|m| (id, m.addr.clone())))
        .collect();
    let replicas = assignment.replicas.len();
    let needed = common::placement::covering(replicas);
    let slice_digits = map.digits.max(SLICE_DIGITS);
    let shift = 4 * u32::from(slice_digits - map.digits);
    let slices = 1u32 << shift;
    let check = SourceCheck { min_epoch: since, leased: false };
    let mut progress = TransferProgress { partition: p, since, bytes_done: 0, bytes_total: 0 };
    for i in 0..slices {
        // Paused, not failed, while the disk is below its floor: the pull goes on from here.
        node.disk.wait_for_room(&format!("pulling partition {p}")).await;
        let slice = (p << shift) | i;
        let mut answered = 0;
        let mut errors = Vec::new();
        for (id, addr) in &sources {
            if answered >= needed {
                break;
            }
            match repair::sync_partition(node, client, addr, slice, slice_digits, Some(check)).await {
                Ok(pulled) => {
                    answered += 1;
                    progress.bytes_done += pulled.bytes;
                    crate::metrics::transferred(pulled.bytes);
                    node.moves.limiter.spend(pulled.bytes).await;
                }
                Err(e) => errors.push(format!("node {id}: {e}")),
            }
        }
        if answered < needed {
            return Err(format!(
                "slice {i} of {slices}: {answered} of the {needed} replicas needed answered ({})",
                errors.join("; ")
            ));
        }
        // The part still to come, estimated from the slices so far.
        progress.bytes_total =
            progress.bytes_done + progress.bytes_done / u64::from(i + 1) * u64::from(slices - i - 1);
        node.moves.report(progress.clone());
    }
    // Durable before it is reported pulled: one fsync for the whole partition.
    node.durability.wait_durable().await.map_err(|e| e.to_string())?;
    node.moves.progress.lock().unwrap_or_else(|p| p.into_inner()).remove(&(p, since));
    Ok(progress.bytes_done)
}

/// Removes from the store the partitions this node's map no longer has it hold (their moves
/// committed on other nodes), if it holds any data for them.
fn purge_departed(node: &Node, map: &PartitionMap, me: NodeId) {
    if map.digits > crate::digest::BUCKET_DIGITS {
        return;
    }
    // Not before the digests are whole; the next pass purges.
    let Ok(digests) = node.store.digests() else { return };
    let digests = digests.all(map.digits);
    for p in (0..map.partition_count()).filter(|&p| digests[p as usize] != 0 && !map.holds(me, p)) {
        match tokio::task::block_in_place(|| node.store.purge_partition(p, map.digits)) {
            Ok(0) => {}
            Ok(records) => {
                log::info!("partition {p} moved away (map epoch {}): {records} records removed", map.epoch)
            }
            Err(e) => log::warn!("cannot remove partition {p}, which moved away: {e}"),
        }
    }
}
