//! Replica repair: how a storage node pulls what it missed and converges with its peers.
//!
//! One primitive does all of it: [`sync_partition`] sends a peer the versions this node holds
//! for one partition (keys and 17 bytes of version each, no values); the peer answers with the
//! records it holds that are newer or missing here. Repair only ever pulls: the peer's own pass
//! pulls what it lacks from us, so each differing record crosses the network once per replica
//! that lacks it.
//!
//! - **Catch-up**: a node back from being down is `catching_up` since epoch `joined`. It pulls
//!   every partition it holds from an up peer that holds a read lease and has seen epoch
//!   `joined` (the peer checks both, or refuses). From that epoch on, the peer refuses writes
//!   routed by older maps, so every acknowledged write is in what it sends; newer writes reach
//!   this node directly. If no replica of a partition is up (every one was fenced, say after all
//!   were killed), the node instead merges what every live replica holds, and needs at least
//!   K - W + 1 replicas (itself included, W a majority) so that every write acknowledged by a
//!   write quorum is among them. Then it reports itself caught up and the controller marks it up.
//! - **Anti-entropy**: every interval, an up node fetches each peer's partition digests (16
//!   bytes per partition, one request per peer) and syncs only the partitions whose digests
//!   differ, among those both are replicas of (a partition moving to a node is pulled by the
//!   move, see `moves`). Equal partitions cost nothing more.
//!
//! Both pause while the node's disk is below its free-space floor (see `crate::disk`): they
//! write what they pull, and resume once space returns.
//!
//! Wire formats (all integers big-endian):
//! - versions list: repeated `u32 key_len, key, u64 timestamp, u8 tombstone, u64 value_fp`;
//! - diff answer: repeated `u32 key_len, key, u64 timestamp, u8 tombstone, u64 value_len, value`.

use crate::store::{StoreError, VersionEntry};
use crate::Node;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::http::{Client, RpcError};
use common::partition::Partition;
use common::placement::{Epoch, NodeId, NodeState, PartitionMap};
use common::proto;
use common::version::Record;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Pulled records applied with one journal write.
const APPLY_GROUP: usize = 256;

/// Deadline of one repair call (a partition's records can be large).
pub const REPAIR_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters of the repair traffic of one node, served at `/v1/stats`.
#[derive(Debug, Default)]
pub struct RepairStats {
    pub passes: AtomicU64,
    pub partitions_compared: AtomicU64,
    pub partitions_differing: AtomicU64,
    /// Records received from peers that superseded ours.
    pub records_pulled: AtomicU64,
    /// Bytes of requests and answers exchanged for repair (digests, version lists, records).
    pub bytes_moved: AtomicU64,
    /// Key and value bytes of the pulled records that superseded ours.
    pub bytes_differing: AtomicU64,
    /// Tombstones removed by reaping (see `crate::reaper`).
    pub tombstones_reaped: AtomicU64,
}

impl RepairStats {
    pub fn to_json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "passes": get(&self.passes),
            "partitions_compared": get(&self.partitions_compared),
            "partitions_differing": get(&self.partitions_differing),
            "records_pulled": get(&self.records_pulled),
            "bytes_moved": get(&self.bytes_moved),
            "bytes_differing": get(&self.bytes_differing),
            "tombstones_reaped": get(&self.tombstones_reaped),
        })
    }
}

/// Why a repair step failed.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    NotDurable(#[from] crate::durability::SyncFailed),
    #[error(transparent)]
    Rebuilding(#[from] crate::store::Rebuilding),
    #[error("malformed repair message: {0}")]
    Malformed(&'static str),
}

pub fn encode_versions(entries: &[VersionEntry]) -> Bytes {
    let mut out = BytesMut::with_capacity(entries.iter().map(|e| e.key.len() + 21).sum());
    for e in entries {
        out.put_u32(e.key.len() as u32);
        out.put_slice(&e.key);
        out.put_u64(e.timestamp);
        out.put_u8(u8::from(e.tombstone));
        out.put_u64(e.value_fingerprint);
    }
    out.freeze()
}

pub fn decode_versions(mut buf: Bytes) -> Result<Vec<VersionEntry>, RepairError> {
    let mut entries = Vec::new();
    while buf.has_remaining() {
        let key = take_key(&mut buf)?;
        if buf.remaining() < 17 {
            return Err(RepairError::Malformed("truncated version entry"));
        }
        entries.push(VersionEntry {
            key,
            timestamp: buf.get_u64(),
            tombstone: buf.get_u8() == 1,
            value_fingerprint: buf.get_u64(),
        });
    }
    Ok(entries)
}

fn take_key(buf: &mut Bytes) -> Result<Bytes, RepairError> {
    if buf.remaining() < 4 {
        return Err(RepairError::Malformed("truncated key length"));
    }
    let len = buf.get_u32() as usize;
    if buf.remaining() < len {
        return Err(RepairError::Malformed("truncated key"));
    }
    Ok(buf.split_to(len))
}

/// The caller's versions, by key.
fn index(theirs: Vec<VersionEntry>) -> HashMap<Bytes, VersionEntry> {
    theirs.into_iter().map(|e| (e.key.clone(), e)).collect()
}

/// Whether our `record` of `key` must be sent to a node whose versions are `theirs`: it has
/// nothing for the key, or an older version. At equal timestamps with different values both
/// sides send theirs, and `supersedes` settles it on each. A tombstone stamped before
/// `reapable_before` is not sent to a node that has nothing for the key: nothing reads the same
/// as the tombstone there, and that node may have reaped it (see `crate::reaper`).
fn newer_than_theirs(
    theirs: &HashMap<Bytes, VersionEntry>,
    key: &Bytes,
    record: &Record,
    reapable_before: u64,
) -> bool {
    match theirs.get(key) {
        None => !(record.is_tombstone() && record.timestamp < reapable_before),
        Some(their) => {
            let mine = VersionEntry::of(key.clone(), record);
            mine != *their && (mine.timestamp, mine.tombstone) >= (their.timestamp, their.tombstone)
        }
    }
}

pub fn encode_records(records: &[(Bytes, Record)]) -> Bytes {
    let mut out = BytesMut::new();
    for (key, record) in records {
        let value = record.value.as_deref().unwrap_or_default();
        out.reserve(key.len() + value.len() + 21);
        out.put_u32(key.len() as u32);
        out.put_slice(key);
        out.put_u64(record.timestamp);
        out.put_u8(u8::from(record.is_tombstone()));
        out.put_u64(value.len() as u64);
        out.put_slice(value);
    }
    out.freeze()
}

pub fn decode_records(mut buf: Bytes) -> Result<Vec<(Bytes, Record)>, RepairError> {
    let mut records = Vec::new();
    while buf.has_remaining() {
        let key = take_key(&mut buf)?;
        if buf.remaining() < 17 {
            return Err(RepairError::Malformed("truncated record header"));
        }
        let timestamp = buf.get_u64();
        let tombstone = buf.get_u8() == 1;
        let len = buf.get_u64() as usize;
        if buf.remaining() < len {
            return Err(RepairError::Malformed("truncated value"));
        }
        let value = buf.split_to(len);
        let record = if tombstone { Record::tombstone(timestamp) } else { Record::value(timestamp, value) };
        records.push((key, record));
    }
    Ok(records)
}

/// What a catch-up asks of the peer it pulls from.
#[derive(Debug, Clone, Copy)]
pub struct SourceCheck {
    /// The peer must have installed this map epoch (409 otherwise).
    pub min_epoch: Epoch,
    /// The peer must hold a read lease, i.e. every acknowledged write (503 otherwise).
    pub leased: bool,
}

/// What one [`sync_partition`] brought.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pulled {
    /// Records that superseded ours.
    pub records: u64,
    /// Bytes of the peer's answer.
    pub bytes: u64,
}

/// Pulls from `peer` every record of `partition` (in a map of `digits` hex digits, at most
/// [`common::partition::MAX_DIGITS`]) it holds newer than ours. The records have reached the
/// OS on return; a caller that reports them pulled waits for durability first (one fsync for
/// many pulls).
pub async fn sync_partition(
    node: &Node,
    client: &Client,
    peer: &str,
    partition: Partition,
    digits: u8,
    check: Option<SourceCheck>,
) -> Result<Pulled, RepairError> {
    let ours = tokio::task::block_in_place(|| node.store.versions(partition, digits))?;
    let body = encode_versions(&ours);
    let mut url = format!("http://{peer}{}?partition={partition}&digits={digits}", proto::DIFF_PATH);
    if let Some(check) = check {
        url.push_str(&format!("&min_epoch={}&leased={}", check.min_epoch, u8::from(check.leased)));
    }
    let make = || Request::post(url.as_str()).body(Full::new(body.clone())).expect("valid request");
    let (parts, answer) = client.send_collect(make, REPAIR_TIMEOUT).await?;
    if parts.status != StatusCode::OK {
        let message = String::from_utf8_lossy(&answer).trim().to_owned();
        return Err(RpcError::Status { status: parts.status, message }.into());
    }
    let stats = &node.repair;
    stats.bytes_moved.fetch_add((body.len() + answer.len()) as u64, Ordering::Relaxed);
    let bytes = answer.len() as u64;
    let records = decode_records(answer)?;
    let mut pulled = 0;
    // Applied in groups, one journal write each: a pull of many small records costs little.
    for group in records.chunks(APPLY_GROUP) {
        let writes: Vec<(&[u8], &Record)> =
            group.iter().map(|(key, record)| (key.as_ref(), record)).collect();
        let applied = tokio::task::block_in_place(|| node.store.apply_many(&writes))?;
        for ((key, record), applied) in group.iter().zip(applied) {
            if applied == crate::store::Applied::Stored {
                pulled += 1;
                let size = (key.len() + record.value.as_ref().map_or(0, Bytes::len)) as u64;
                stats.bytes_differing.fetch_add(size, Ordering::Relaxed);
            }
        }
    }
    stats.records_pulled.fetch_add(pulled, Ordering::Relaxed);
    Ok(Pulled { records: pulled, bytes })
}

/// Serves `POST /v1/diff`: compares the caller's versions with ours.
pub fn serve_diff(
    node: &Node,
    partition: Partition,
    digits: u8,
    theirs: Bytes,
) -> Result<Bytes, RepairError> {
    let theirs = index(decode_versions(theirs)?);
    let reapable_before = common::version::now_micros().saturating_sub(node.limits.tombstone_grace_us);
    // Only the records to send are kept in memory, not the whole partition.
    let mut send = Vec::new();
    tokio::task::block_in_place(|| {
        node.store.for_each_in_partition(partition, digits, |key, record| {
            if newer_than_theirs(&theirs, &key, &record, reapable_before) {
                send.push((key, record));
            }
        })
    })?;
    Ok(encode_records(&send))
}

/// Pulls every partition this node holds from up peers that have seen `joined`, then reports
/// the node caught up. Retries until it succeeds or the node's state changes.
pub async fn catch_up(node: Arc<Node>, client: Client, controller: String, joined: Epoch) {
    log::info!("catching up since map epoch {joined}");
    let started = std::time::Instant::now();
    if node.store.digests().is_err() {
        log::info!("catch-up waits for the digests to be rebuilt (the last stop was not clean)");
        node.store.whole_digests().await;
    }
    let mut pulled = 0;
    let mut done = std::collections::HashSet::new();
    loop {
        let Some((map, me)) = node.map_and_id() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if map.epoch < joined {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        if node.state() != NodeState::CatchingUp {
            return;
        }
        node.disk.wait_for_room("catch-up").await;
        let mut complete = true;
        for partition in map.partitions_of(me).filter(|p| !done.contains(p)).collect::<Vec<_>>() {
            match catch_up_partition(&node, &client, &map, me, partition, joined).await {
                Some(count) => {
                    pulled += count;
                    done.insert(partition);
                }
                None => complete = false,
            }
        }
        if complete {
            if let Err(e) = node.durability.wait_durable().await {
                log::error!("catch-up not durable: {e}");
                return;
            }
            let report =
                proto::CaughtUp { node_id: me, token: Some(node.identity.token().to_owned()), joined };
            let url = format!("http://{controller}{}", proto::CAUGHT_UP_PATH);
            match client.post_json::<_, PartitionMap>(&url, &report, Duration::from_secs(5)).await {
                Ok(map) => {
                    log::info!(
                        "caught up in {:.1?}: {pulled} records pulled; marked up in map epoch {}",
                        started.elapsed(),
                        map.epoch
                    );
                    node.install_map(map);
                    node.heartbeat_now.notify_one();
                    return;
                }
                Err(RpcError::Status { status: StatusCode::CONFLICT, .. }) => return,
                Err(e) => log::warn!("cannot report catch-up to the controller: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Pulls `partition` for a node catching up since `joined`: from one leased up peer if one
/// serves, else merged from enough live replicas to meet every write quorum. `None` if neither
/// worked yet.
async fn catch_up_partition(
    node: &Node,
    client: &Client,
    map: &PartitionMap,
    me: NodeId,
    partition: Partition,
    joined: Epoch,
) -> Option<u64> {
    // Every holder but us: a partition on the move has all of them in its write set.
    let peers: Vec<&common::placement::Member> =
        map.assignment(partition).holders().filter(|&id| id != me).filter_map(|id| map.member(id)).collect();
    let leased = SourceCheck { min_epoch: joined, leased: true };
    let serving = |m: &&&common::placement::Member| {
        m.state == NodeState::Up && map.replicas_of(partition).contains(&m.id)
    };
    for peer in peers.iter().filter(serving) {
        match sync_changed_parts(node, client, &peer.addr, partition, map.digits, leased).await {
            Ok(pulled) => return Some(pulled),
            Err(e) => log::debug!("catch-up of partition {partition} from node {}: {e}", peer.id),
        }
    }
    // No up replica could serve: merge every live holder's records. Every write a quorum of the
    // replicas acknowledged is on any K - W + 1 of them (this node counting if it is one).
    let replicas = map.replicas_of(partition);
    let write_quorum = replicas.len() / 2 + 1;
    let covering = replicas.len() - write_quorum + 1;
    let peers_needed = covering - usize::from(replicas.contains(&me)).min(covering);
    let unleased = SourceCheck { min_epoch: joined, leased: false };
    let (mut merged, mut pulled) = (0, 0);
    for peer in &peers {
        match sync_partition(node, client, &peer.addr, partition, map.digits, Some(unleased)).await {
            Ok(count) => {
                merged += usize::from(replicas.contains(&peer.id));
                pulled += count.records;
            }
            Err(e) => log::debug!("catch-up merge of partition {partition} from node {}: {e}", peer.id),
        }
    }
    (merged >= peers_needed).then_some(pulled)
}

/// Pulls `partition` from `peer` for a catch-up, part by part where only a few of its parts
/// differ (parts of [`CATCH_UP_PART_DIGITS`] more digits, compared by digest first), else
/// whole: a node back from a short absence pulls in proportion to what changed, not to what it
/// holds. Returns the records pulled.
async fn sync_changed_parts(
    node: &Node,
    client: &Client,
    peer: &str,
    partition: Partition,
    digits: u8,
    check: SourceCheck,
) -> Result<u64, RepairError> {
    let finer = (digits + CATCH_UP_PART_DIGITS).min(crate::digest::BUCKET_DIGITS);
    if finer == digits {
        return Ok(sync_partition(node, client, peer, partition, digits, Some(check)).await?.records);
    }
    let url = format!(
        "http://{peer}{}?digits={finer}&within={partition}&within_digits={digits}&min_epoch={}&leased={}",
        proto::DIGESTS_PATH,
        check.min_epoch,
        u8::from(check.leased)
    );
    let make = || Request::get(url.as_str()).body(Full::new(Bytes::new())).expect("valid request");
    let (parts, mut theirs) = client.send_collect(make, REPAIR_TIMEOUT).await?;
    let ours = node.store.digests()?.within(partition, digits, finer);
    if parts.status != StatusCode::OK || theirs.len() != ours.len() * 16 {
        let message = String::from_utf8_lossy(&theirs).trim().to_owned();
        return Err(RpcError::Status { status: parts.status, message }.into());
    }
    node.repair.bytes_moved.fetch_add(theirs.len() as u64, Ordering::Relaxed);
    let first = partition << (4 * (finer - digits) as u32);
    let differing: Vec<Partition> =
        (0..ours.len()).filter(|&i| ours[i] != theirs.get_u128()).map(|i| first + i as u32).collect();
    if differing.len() * 4 > ours.len() {
        return Ok(sync_partition(node, client, peer, partition, digits, Some(check)).await?.records);
    }
    let mut pulled = 0;
    for part in differing {
        pulled += sync_partition(node, client, peer, part, finer, Some(check)).await?.records;
    }
    Ok(pulled)
}

/// How much finer than a partition the parts are that a catch-up compares (256 per partition).
const CATCH_UP_PART_DIGITS: u8 = 2;

/// Compares digests with every peer and syncs the partitions that differ, every `interval`.
pub async fn anti_entropy(
    node: Arc<Node>,
    client: Client,
    interval: Duration,
    mut shutdown: common::shutdown::Shutdown,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait() => return,
        }
        // Only a node that knows it is up (a valid lease, not a stale view after a pause), and
        // whose disk has room for what it would pull.
        if node.read_permission().is_err() || node.disk.refusing_writes() {
            continue;
        }
        if let Err(e) = anti_entropy_pass(&node, &client).await {
            log::warn!("anti-entropy pass failed: {e}");
        }
    }
}

/// How long a differing partition must stay unchanged on both sides before anti-entropy syncs
/// it: a partition under writes differs between replicas for a moment all the time, and the
/// write path already converges those; anti-entropy is for what stays different.
pub const SETTLE: Duration = Duration::from_millis(500);

async fn fetch_digests(
    client: &Client,
    addr: &str,
    digits: u8,
    count: usize,
    node: &Node,
) -> Option<Vec<u128>> {
    let url = format!("http://{addr}{}?digits={digits}", proto::DIGESTS_PATH);
    let make = || Request::get(url.as_str()).body(Full::new(Bytes::new())).expect("valid request");
    let (parts, mut body) = match client.send_collect(make, REPAIR_TIMEOUT).await {
        Ok(answer) => answer,
        Err(e) => {
            log::debug!("anti-entropy: {addr} unreachable: {e}");
            return None;
        }
    };
    if parts.status != StatusCode::OK || body.len() != count * 16 {
        return None;
    }
    node.repair.bytes_moved.fetch_add(body.len() as u64, Ordering::Relaxed);
    Some((0..count).map(|_| body.get_u128()).collect())
}

/// One anti-entropy pass over every peer; returns how many partitions were synced.
pub async fn anti_entropy_pass(node: &Node, client: &Client) -> Result<u64, RepairError> {
    let Some((map, me)) = node.map_and_id() else { return Ok(0) };
    // Not before the digests are whole (after an unclean stop, see `crate::store`).
    let Ok(digests) = node.store.digests() else { return Ok(0) };
    if map.digits > crate::digest::BUCKET_DIGITS {
        return Ok(0);
    }
    let stats = &node.repair;
    let count = map.partition_count() as usize;
    let mut synced = 0;
    for peer in map.members.iter().filter(|m| m.id != me && m.state == NodeState::Up) {
        // Replicas only: a partition moving to a node is pulled by the move, at its rate; compared
        // here it would differ until then and be pulled twice, unthrottled.
        let replica_of_both = |p: &Partition| {
            let replicas = map.replicas_of(*p);
            replicas.contains(&me) && replicas.contains(&peer.id)
        };
        let shared: Vec<Partition> = (0..map.partition_count()).filter(replica_of_both).collect();
        if shared.is_empty() {
            continue;
        }
        let ours = digests.all(map.digits);
        let Some(theirs) = fetch_digests(client, &peer.addr, map.digits, count, node).await else { continue };
        stats.partitions_compared.fetch_add(shared.len() as u64, Ordering::Relaxed);
        let differing: Vec<Partition> =
            shared.into_iter().filter(|&p| ours[p as usize] != theirs[p as usize]).collect();
        if differing.is_empty() {
            continue;
        }
        tokio::time::sleep(SETTLE).await;
        let ours_later = digests.all(map.digits);
        let Some(theirs_later) = fetch_digests(client, &peer.addr, map.digits, count, node).await else {
            continue;
        };
        for p in differing {
            let i = p as usize;
            let settled = ours[i] == ours_later[i] && theirs[i] == theirs_later[i];
            if !settled || ours_later[i] == theirs_later[i] {
                continue;
            }
            stats.partitions_differing.fetch_add(1, Ordering::Relaxed);
            let pulled = sync_partition(node, client, &peer.addr, p, map.digits, None).await?.records;
            synced += 1;
            if pulled > 0 {
                log::info!(
                    "anti-entropy: partition {p} differed from node {}: {pulled} records pulled",
                    peer.id
                );
            }
        }
    }
    stats.passes.fetch_add(1, Ordering::Relaxed);
    Ok(synced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(ts: u64, v: &'static str) -> Record {
        Record::value(ts, Bytes::from_static(v.as_bytes()))
    }

    /// What `serve_diff` sends, for records held in memory.
    fn diff(ours: Vec<(Bytes, Record)>, theirs: Vec<VersionEntry>) -> Vec<(Bytes, Record)> {
        let theirs = index(theirs);
        ours.into_iter().filter(|(key, record)| newer_than_theirs(&theirs, key, record, 0)).collect()
    }

    fn entries(records: &[(&'static str, Record)]) -> Vec<VersionEntry> {
        records.iter().map(|(k, r)| VersionEntry::of(Bytes::from_static(k.as_bytes()), r)).collect()
    }

    #[test]
    fn diff_sends_only_what_is_newer_or_missing_on_the_caller() {
        let ours = vec![
            (Bytes::from_static(b"same"), value(1, "a")),
            (Bytes::from_static(b"ours-newer"), value(5, "new")),
            (Bytes::from_static(b"theirs-newer"), value(1, "old")),
            (Bytes::from_static(b"only-ours"), Record::tombstone(3)),
            (Bytes::from_static(b"tie"), value(7, "x")),
        ];
        let theirs = entries(&[
            ("same", value(1, "a")),
            ("ours-newer", value(4, "old")),
            ("theirs-newer", Record::tombstone(2)),
            ("only-theirs", value(9, "z")),
            ("tie", value(7, "y")),
        ]);
        let sent = diff(ours, theirs);
        let keys: Vec<&[u8]> = sent.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, [&b"ours-newer"[..], b"only-ours", b"tie"]);
        assert_eq!(decode_records(encode_records(&sent)).unwrap(), sent);
    }

    #[test]
    fn tombstones_old_enough_to_reap_are_not_sent_to_a_caller_holding_nothing() {
        let theirs =
            index(entries(&[("held-value", value(1, "old")), ("held-tombstone", Record::tombstone(2))]));
        let reapable_before = 10;
        let cases: &[(&'static str, Record, bool)] = &[
            ("absent", Record::tombstone(9), false),
            ("absent", Record::tombstone(10), true),
            ("absent", value(1, "v"), true),
            ("held-value", Record::tombstone(9), true),
            ("held-tombstone", Record::tombstone(9), true),
        ];
        for (key, record, sent) in cases {
            let key = Bytes::from_static(key.as_bytes());
            assert_eq!(
                newer_than_theirs(&theirs, &key, record, reapable_before),
                *sent,
                "{key:?} {record:?}"
            );
        }
    }

    #[test]
    fn wire_formats_round_trip_and_reject_truncation() {
        let list = entries(&[("k", value(1, "v")), ("", Record::tombstone(2))]);
        assert_eq!(decode_versions(encode_versions(&list)).unwrap(), list);
        let encoded = encode_versions(&list);
        assert!(decode_versions(encoded.slice(..encoded.len() - 1)).is_err());
        let records = vec![(Bytes::from_static(b"k"), value(3, "vvv"))];
        let encoded = encode_records(&records);
        assert!(decode_records(encoded.slice(..encoded.len() - 1)).is_err());
    }
}
