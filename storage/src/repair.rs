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
//! Memory stays bounded whatever the values and the partitions: a caller that asks
//! `by_reference=1` gets values of [`BY_REFERENCE_BYTES`] or more as references only, and
//! fetches each on its own (`GET /v1/record`, unleased), streamed into a value file; and the
//! answer stops after [`DIFF_ANSWER_BYTES`] with a position to resume from
//! (`common::proto::RESUME`), from which the caller asks again, sending only its versions from
//! there on. (A caller that does not ask gets the whole answer, values inline, as before.)
//!
//! Wire formats (all integers big-endian):
//! - versions list: repeated `u32 key_len, key, u64 timestamp, u8 tombstone, u64 value_fp`;
//! - diff answer: repeated `u32 key_len, key, u64 timestamp, u8 kind, u64 value_len, value`,
//!   `kind` 0 for a value, 1 for a tombstone, 2 for a value to fetch (its bytes left out).

use crate::digest;
use crate::store::{StoreError, VersionEntry};
use crate::Node;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::http::{self as h, Client, RpcError};
use common::partition::Partition;
use common::placement::{Epoch, NodeId, NodeState, PartitionMap};
use common::proto;
use common::version::Record;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Pulled records applied with one journal write.
const APPLY_GROUP: usize = 256;

/// Values at least this long leave a diff answer as references, fetched one at a time.
pub const BY_REFERENCE_BYTES: u64 = crate::value_files::VALUE_FILE_BYTES as u64;

/// A diff answer stops adding records once it is this long, and says where to resume.
pub const DIFF_ANSWER_BYTES: usize = 4 << 20;

/// Longest position a diff answer resumes from; an answer cuts only where the position is
/// shorter (neighbouring keys almost always differ within their first bytes).
const MAX_RESUME_BYTES: usize = 256;

/// Slowest rate a fetched value may arrive at, beyond [`REPAIR_TIMEOUT`] for its head.
const FETCH_BYTES_PER_SEC: u64 = 4 << 20;

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
    #[error("value from the peer: {0}")]
    Receive(#[from] crate::receive::ReceiveError),
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
    mine: &VersionEntry,
    reapable_before: u64,
) -> bool {
    match theirs.get(&mine.key) {
        None => !(mine.tombstone && mine.timestamp < reapable_before),
        Some(their) => {
            mine != their && (mine.timestamp, mine.tombstone) >= (their.timestamp, their.tombstone)
        }
    }
}

/// One entry of a diff answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offered {
    Record(Record),
    /// A value too large to carry in the answer: the caller fetches the peer's record.
    Fetch {
        timestamp: u64,
        length: u64,
    },
}

const KIND_VALUE: u8 = 0;
const KIND_TOMBSTONE: u8 = 1;
const KIND_FETCH: u8 = 2;

/// Appends one diff answer entry to `out`.
fn put_offered(out: &mut BytesMut, key: &[u8], offered: &Offered) {
    let (timestamp, kind, length, value) = match offered {
        Offered::Record(record) => match &record.value {
            Some(value) => (record.timestamp, KIND_VALUE, value.len() as u64, &value[..]),
            None => (record.timestamp, KIND_TOMBSTONE, 0, &[][..]),
        },
        Offered::Fetch { timestamp, length } => (*timestamp, KIND_FETCH, *length, &[][..]),
    };
    out.reserve(key.len() + value.len() + 21);
    out.put_u32(key.len() as u32);
    out.put_slice(key);
    out.put_u64(timestamp);
    out.put_u8(kind);
    out.put_u64(length);
    out.put_slice(value);
}

pub fn encode_offers(offers: &[(Bytes, Offered)]) -> Bytes {
    let mut out = BytesMut::new();
    for (key, offered) in offers {
        put_offered(&mut out, key, offered);
    }
    out.freeze()
}

pub fn decode_offers(mut buf: Bytes) -> Result<Vec<(Bytes, Offered)>, RepairError> {
    let mut offers = Vec::new();
    while buf.has_remaining() {
        let key = take_key(&mut buf)?;
        if buf.remaining() < 17 {
            return Err(RepairError::Malformed("truncated record header"));
        }
        let timestamp = buf.get_u64();
        let kind = buf.get_u8();
        let length = buf.get_u64();
        let offered = match kind {
            KIND_FETCH => Offered::Fetch { timestamp, length },
            KIND_TOMBSTONE => Offered::Record(Record::tombstone(timestamp)),
            KIND_VALUE if buf.remaining() as u64 >= length => {
                Offered::Record(Record::value(timestamp, buf.split_to(length as usize)))
            }
            KIND_VALUE => return Err(RepairError::Malformed("truncated value")),
            _ => return Err(RepairError::Malformed("unknown record kind")),
        };
        offers.push((key, offered));
    }
    Ok(offers)
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
/// [`common::partition::MAX_DIGITS`]) it holds newer than ours, in rounds of at most
/// [`DIFF_ANSWER_BYTES`], large values fetched one at a time as streams. The records have
/// reached the OS on return; a caller that reports them pulled waits for durability first
/// (one fsync for many pulls).
pub async fn sync_partition(
    node: &Node,
    client: &Client,
    peer: &str,
    partition: Partition,
    digits: u8,
    check: Option<SourceCheck>,
) -> Result<Pulled, RepairError> {
    let mut pulled = Pulled::default();
    let mut from: Option<Vec<u8>> = None;
    loop {
        let round = pull_round(node, client, peer, (partition, digits), check, from.as_deref()).await?;
        pulled.records += round.pulled.records;
        pulled.bytes += round.pulled.bytes;
        // Each position is past the last record of the round before, so the rounds end.
        match round.resume {
            Some(position) => from = Some(position),
            None => break,
        }
    }
    node.repair.records_pulled.fetch_add(pulled.records, Ordering::Relaxed);
    Ok(pulled)
}

/// What one diff round brought, and where the next starts if the answer was cut.
struct Round {
    pulled: Pulled,
    resume: Option<Vec<u8>>,
}

/// One diff round of [`sync_partition`] over `(partition, digits)`, from the stored position
/// `from` on.
async fn pull_round(
    node: &Node,
    client: &Client,
    peer: &str,
    (partition, digits): (Partition, u8),
    check: Option<SourceCheck>,
    from: Option<&[u8]>,
) -> Result<Round, RepairError> {
    let ours = tokio::task::block_in_place(|| node.store.versions_from(partition, digits, from))?;
    let body = encode_versions(&ours);
    drop(ours);
    let mut url =
        format!("http://{peer}{}?partition={partition}&digits={digits}&by_reference=1", proto::DIFF_PATH);
    if let Some(check) = check {
        url.push_str(&format!("&min_epoch={}&leased={}", check.min_epoch, u8::from(check.leased)));
    }
    if let Some(from) = from {
        url.push_str("&from=");
        common::query::encode_into(from, &mut url);
    }
    let make = || Request::post(url.as_str()).body(Full::new(body.clone())).expect("valid request");
    let (parts, answer) = client.send_collect(make, REPAIR_TIMEOUT).await?;
    if parts.status != StatusCode::OK {
        let message = String::from_utf8_lossy(&answer).trim().to_owned();
        return Err(RpcError::Status { status: parts.status, message }.into());
    }
    let resume = match parts.headers.get(proto::RESUME) {
        None => None,
        Some(position) => Some(
            common::query::decode(position.as_bytes())
                .map_err(|_| RepairError::Malformed("resume position is not percent-encoded"))?
                .into_owned(),
        ),
    };
    if resume.as_deref().is_some_and(|position| from.is_some_and(|from| position <= from)) {
        return Err(RepairError::Malformed("resume position does not advance"));
    }
    let stats = &node.repair;
    stats.bytes_moved.fetch_add((body.len() + answer.len()) as u64, Ordering::Relaxed);
    let mut pulled = Pulled { records: 0, bytes: answer.len() as u64 };
    let mut records = Vec::new();
    let mut fetches = Vec::new();
    for (key, offered) in decode_offers(answer)? {
        match offered {
            Offered::Record(record) => records.push((key, record)),
            Offered::Fetch { length, .. } => fetches.push((key, length)),
        }
    }
    // Applied in groups, one journal write each: a pull of many small records costs little.
    for group in records.chunks(APPLY_GROUP) {
        let writes: Vec<(&[u8], &Record)> =
            group.iter().map(|(key, record)| (key.as_ref(), record)).collect();
        let applied = tokio::task::block_in_place(|| node.store.apply_many(&writes))?;
        for ((key, record), applied) in group.iter().zip(applied) {
            if applied == crate::store::Applied::Stored {
                pulled.records += 1;
                let size = (key.len() + record.value.as_ref().map_or(0, Bytes::len)) as u64;
                stats.bytes_differing.fetch_add(size, Ordering::Relaxed);
            }
        }
    }
    for (key, length) in fetches {
        if let Some(fetched) = fetch_record(node, client, peer, &key, length).await? {
            stats.bytes_moved.fetch_add(fetched.bytes, Ordering::Relaxed);
            pulled.bytes += fetched.bytes;
            if fetched.applied == crate::store::Applied::Stored {
                pulled.records += 1;
                stats.bytes_differing.fetch_add(key.len() as u64 + fetched.bytes, Ordering::Relaxed);
            }
        }
    }
    Ok(Round { pulled, resume })
}

/// What [`fetch_record`] applied.
struct Fetched {
    applied: crate::store::Applied,
    /// Value bytes received.
    bytes: u64,
}

/// Fetches `peer`'s record of `key`, offered by reference (a value of about `length` bytes),
/// and applies it: a large value streams into a value file as it arrives. The record may be
/// newer than the one offered; `None` if the peer no longer holds one.
async fn fetch_record(
    node: &Node,
    client: &Client,
    peer: &str,
    key: &[u8],
    length: u64,
) -> Result<Option<Fetched>, RepairError> {
    let url = format!("http://{peer}{}?key={}", proto::RECORD_PATH, common::query::encode(key));
    let make = || {
        Request::get(url.as_str())
            .header(proto::UNLEASED, "1")
            .body(Full::new(Bytes::new()))
            .expect("valid request")
    };
    let deadline = REPAIR_TIMEOUT + Duration::from_secs(length / FETCH_BYTES_PER_SEC);
    let fetch = async {
        let (parts, body) = client.send(make, REPAIR_TIMEOUT).await?.into_parts();
        if parts.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if parts.status != StatusCode::OK {
            let message = h::read_body(body, 4096).await.map(|b| String::from_utf8_lossy(&b).into_owned());
            let message = message.unwrap_or_default().trim().to_owned();
            return Err(RpcError::Status { status: parts.status, message }.into());
        }
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let timestamp: u64 = header(proto::TIMESTAMP)
            .and_then(|t| t.parse().ok())
            .ok_or(RepairError::Malformed("record answer without a timestamp"))?;
        let store = &node.store;
        if header(proto::TOMBSTONE) == Some("1") {
            let applied = tokio::task::block_in_place(|| store.apply(key, &Record::tombstone(timestamp)))?;
            return Ok(Some(Fetched { applied, bytes: 0 }));
        }
        let length = hyper::body::Body::size_hint(&body)
            .exact()
            .ok_or(RepairError::Malformed("record answer without a content-length"))?;
        let applied = if length >= BY_REFERENCE_BYTES {
            let value = crate::receive::into_value_file(store, body, length as usize).await?;
            tokio::task::block_in_place(|| store.apply_file(key, timestamp, value))?
        } else {
            let value =
                h::read_body(body, length as usize).await.map_err(|e| RpcError::Transport(e.to_string()))?;
            tokio::task::block_in_place(|| store.apply(key, &Record::value(timestamp, value)))?
        };
        Ok(Some(Fetched { applied, bytes: length }))
    };
    tokio::time::timeout(deadline, fetch).await.map_err(|_| RpcError::Timeout(deadline))?
}

/// How a caller asks for a diff (query parameters of [`proto::DIFF_PATH`]).
#[derive(Debug, Clone, Default)]
pub struct DiffAsk {
    /// Large values by reference, and the answer cut at [`DIFF_ANSWER_BYTES`].
    pub by_reference: bool,
    /// The stored position to start from (inclusive), from the last answer's resume header.
    pub from: Option<Vec<u8>>,
}

/// A diff answer: the offers, and where to resume if it was cut.
#[derive(Debug, Clone, Default)]
pub struct DiffAnswer {
    pub body: Bytes,
    pub resume: Option<Vec<u8>>,
}

/// Serves `POST /v1/diff`: compares the caller's versions with ours, from `ask.from` on.
pub fn serve_diff(
    node: &Node,
    partition: Partition,
    digits: u8,
    theirs: Bytes,
    ask: &DiffAsk,
) -> Result<DiffAnswer, RepairError> {
    let theirs = index(decode_versions(theirs)?);
    let reapable_before = common::version::now_micros().saturating_sub(node.limits.tombstone_grace_us);
    let store = &node.store;
    let mut resume = None;
    let mut body = BytesMut::new();
    // The stored key of the last record put in the answer.
    let mut last: Option<Vec<u8>> = None;
    tokio::task::block_in_place(|| {
        store.for_each_held_in_partition(partition, digits, ask.from.as_deref(), |stored_key, key, held| {
            if !newer_than_theirs(&theirs, &held.version(key.clone()), reapable_before) {
                return Ok(ControlFlow::Continue(()));
            }
            if ask.by_reference && body.len() >= DIFF_ANSWER_BYTES {
                let position = last.as_deref().map(|last| crate::store::separator(last, stored_key));
                if let Some(position) = position.filter(|p| p.len() <= MAX_RESUME_BYTES) {
                    resume = Some(position);
                    return Ok(ControlFlow::Break(()));
                }
            }
            let offered = if ask.by_reference && held.value_len() >= BY_REFERENCE_BYTES {
                Offered::Fetch { timestamp: held.timestamp(), length: held.value_len() }
            } else {
                Offered::Record(store.load_held(held)?)
            };
            put_offered(&mut body, &key, &offered);
            last = Some(stored_key.to_vec());
            Ok(ControlFlow::Continue(()))
        })
    })?;
    Ok(DiffAnswer { body: body.freeze(), resume })
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
    let covering = common::placement::covering(replicas.len());
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
    let differing: Vec<Partition> = (0..ours.len())
        .filter(|&i| !digest::agree(ours[i], theirs.get_u128()))
        .map(|i| first + i as u32)
        .collect();
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
        // A partition with writes that skipped their read is left alone until it settles, as
        // one under writes is (see `crate::digest`).
        let unsettled =
            |p: Partition| ours[p as usize] == digest::UNSETTLED || theirs[p as usize] == digest::UNSETTLED;
        let differing: Vec<Partition> =
            shared.into_iter().filter(|&p| ours[p as usize] != theirs[p as usize] && !unsettled(p)).collect();
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
            let unsettled_later = ours_later[i] == digest::UNSETTLED || theirs_later[i] == digest::UNSETTLED;
            if !settled || unsettled_later || ours_later[i] == theirs_later[i] {
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
        ours.into_iter()
            .filter(|(key, record)| newer_than_theirs(&theirs, &VersionEntry::of(key.clone(), record), 0))
            .collect()
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
        let offers: Vec<(Bytes, Offered)> = sent.into_iter().map(|(k, r)| (k, Offered::Record(r))).collect();
        assert_eq!(decode_offers(encode_offers(&offers)).unwrap(), offers);
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
                newer_than_theirs(&theirs, &VersionEntry::of(key.clone(), record), reapable_before),
                *sent,
                "{key:?} {record:?}"
            );
        }
    }

    /// Every offer of `serve_diff` to a caller holding nothing, round after round as the
    /// answers say to resume; and how many rounds it took.
    fn diff_in_rounds(node: &Node, ask_by_reference: bool) -> (Vec<(Bytes, Offered)>, usize) {
        let (mut offers, mut rounds) = (Vec::new(), 0);
        let mut ask = DiffAsk { by_reference: ask_by_reference, from: None };
        loop {
            let answer = serve_diff(node, 3, 1, Bytes::new(), &ask).unwrap();
            rounds += 1;
            // One record past the budget at most (the records here are 2 KiB).
            let bound = if ask_by_reference { DIFF_ANSWER_BYTES + 4096 } else { usize::MAX };
            assert!(answer.body.len() <= bound, "{} bytes", answer.body.len());
            offers.extend(decode_offers(answer.body).unwrap());
            match answer.resume {
                Some(position) => {
                    assert!(ask.from.as_ref().is_none_or(|from| position > *from), "resume went back");
                    ask.from = Some(position);
                }
                None => return (offers, rounds),
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn diff_answers_are_cut_at_their_budget_and_carry_large_values_by_reference() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::for_tests(dir.path());
        // Keys of partition 3 of 16: 4,000 records of 2 KiB (8 MiB) and 3 values in files.
        let keys: Vec<Bytes> = (0..)
            .map(|i| Bytes::from(format!("key-{i}")))
            .filter(|k| common::partition::of(k, 1) == 3)
            .take(4_003)
            .collect();
        for key in &keys[3..] {
            node.store.apply(key, &Record::value(7, Bytes::from(vec![b'v'; 2048]))).unwrap();
        }
        let large = 2 * BY_REFERENCE_BYTES as usize;
        for (i, key) in keys[..3].iter().enumerate() {
            let mut writer = node.store.new_value_file().unwrap();
            writer.write(&vec![i as u8; large]).unwrap();
            node.store.apply_file(key, 9, writer.finish().unwrap()).unwrap();
        }
        let (offers, rounds) = diff_in_rounds(&node, true);
        assert!(rounds >= 2, "8 MiB in {rounds} answer");
        let mut seen: Vec<&Bytes> = offers.iter().map(|(k, _)| k).collect();
        seen.sort();
        seen.dedup();
        assert_eq!((seen.len(), offers.len()), (keys.len(), keys.len()), "each record exactly once");
        for (key, offered) in &offers {
            let expected = match keys[..3].contains(key) {
                true => Offered::Fetch { timestamp: 9, length: large as u64 },
                false => Offered::Record(Record::value(7, Bytes::from(vec![b'v'; 2048]))),
            };
            assert_eq!(*offered, expected, "{key:?}");
        }
        // A caller that does not ask by reference gets it all at once, values inline.
        let (offers, rounds) = diff_in_rounds(&node, false);
        assert_eq!((rounds, offers.len()), (1, keys.len()));
        let inline = offers.iter().filter(
            |(_, o)| matches!(o, Offered::Record(r) if r.value.as_ref().is_some_and(|v| v.len() == large)),
        );
        assert_eq!(inline.count(), 3);
    }

    #[test]
    fn wire_formats_round_trip_and_reject_truncation() {
        let list = entries(&[("k", value(1, "v")), ("", Record::tombstone(2))]);
        assert_eq!(decode_versions(encode_versions(&list)).unwrap(), list);
        let encoded = encode_versions(&list);
        assert!(decode_versions(encoded.slice(..encoded.len() - 1)).is_err());
        let offers = vec![
            (Bytes::from_static(b"k"), Offered::Record(value(3, "vvv"))),
            (Bytes::from_static(b"gone"), Offered::Record(Record::tombstone(4))),
            (Bytes::from_static(b"large"), Offered::Fetch { timestamp: 5, length: 128 << 20 }),
            (Bytes::from_static(b"z"), Offered::Record(value(6, "v"))),
        ];
        let encoded = encode_offers(&offers);
        assert_eq!(decode_offers(encoded.clone()).unwrap(), offers);
        // Cut anywhere, an answer is refused, or reads as the entries before the cut.
        let mut whole_entries = 0;
        for cut in 1..encoded.len() {
            if let Ok(prefix) = decode_offers(encoded.slice(..cut)) {
                assert_eq!(prefix[..], offers[..prefix.len()], "cut at {cut}");
                whole_entries += 1;
            }
        }
        assert_eq!(whole_entries, offers.len() - 1);
        let mut unknown = BytesMut::from(&encoded[..]);
        unknown[4 + 1 + 8] = 9; // the first entry's kind
        assert!(decode_offers(unknown.freeze()).is_err());
    }
}
