//! The storage node's HTTP API (see `common::proto` for the protocol): record reads and writes
//! and key listings for frontends, digests and diffs for peers (see `repair`), stats and a
//! health check. Every bad request gets a 4xx naming what was wrong. With a cluster secret,
//! only `/health`, `/metrics` and `/v1/stats` (counters, no records) are open; everything else
//! answers 401 to a caller without it, before its body is read (see `common::auth`).
//!
//! Two rules keep reads fresh: a record is served to a frontend only while this node is up and
//! holds a valid lease (else 503, and the frontend asks another replica); and a write routed by
//! a map older than its partition's [`min_write_epoch`](common::placement::PartitionMap::min_write_epoch)
//! is refused with 409, so the frontend fetches the new map and writes to the replica it missed.

use crate::disk::Write;
use crate::store::{Applied, Bounded, Readable};
use crate::value_files::VALUE_FILE_BYTES;
use crate::Node;
use bytes::Bytes;
use common::auth::Access;
use common::http::{self as h, Body, ReadBodyError};
use common::placement::NodeId;
use common::proto;
use common::query::{Query, QueryError};
use common::version::Record;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;

/// Writes up to this size are applied on the async worker thread; larger ones off it.
const INLINE_WRITE_BYTES: usize = 64 * 1024;

/// Everything a storage request can fail with, and the status each maps to.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no record for this key")]
    NotFound,
    #[error("{0}")]
    TooLarge(String),
    #[error("method {method} is not supported on {path}")]
    MethodNotAllowed { method: Method, path: String, allow: &'static str },
    #[error("no such endpoint: {0}")]
    UnknownPath(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    NotDurable(#[from] crate::durability::SyncFailed),
    #[error("not serving reads: {0}")]
    NotServing(String),
    #[error("stale map: the write was routed by epoch {given}, but partition {partition} needs epoch {needed} or newer")]
    StaleEpoch { given: u64, needed: u64, partition: u32 },
    #[error("{0}")]
    RefusedTimestamp(String),
    #[error("this node has seen map epoch {have}, not {need} yet")]
    BehindEpoch { have: u64, need: u64 },
    #[error(transparent)]
    Repair(#[from] crate::repair::RepairError),
    /// The digests are rebuilt after an unclean stop: 503 until they are whole.
    #[error(transparent)]
    Rebuilding(#[from] crate::store::Rebuilding),
    /// Free disk space is below the floor (see [`crate::disk`]): 507, nothing stored.
    #[error("{who} {refusal}")]
    DiskFull { who: String, refusal: crate::disk::Refusal },
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            // 422: well-formed, refused for what it says; frontends never fence a node for it.
            ApiError::RefusedTimestamp(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound | ApiError::UnknownPath(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Store(_) | ApiError::NotDurable(_) | ApiError::Repair(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::NotServing(_) | ApiError::Rebuilding(_) => StatusCode::SERVICE_UNAVAILABLE,
            // 507: the node is alive and refuses to fill its disk; frontends never fence it for
            // that alone (see `frontend::api`).
            ApiError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::StaleEpoch { .. } | ApiError::BehindEpoch { .. } => StatusCode::CONFLICT,
        }
    }
}

impl From<crate::receive::ReceiveError> for ApiError {
    fn from(e: crate::receive::ReceiveError) -> Self {
        match e {
            crate::receive::ReceiveError::Store(e) => ApiError::Store(e),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

/// Every endpoint of a storage node, the methods it takes and who may call it (the dispatch in
/// [`handle`] must match; 405 answers say `Allow` from here).
const ROUTES: &[(&str, &str, Access)] = &[
    (proto::RECORD_PATH, "GET, HEAD, PUT", Access::Cluster),
    (proto::BATCH_PATH, "POST", Access::Cluster),
    (proto::DIGESTS_PATH, "GET", Access::Cluster),
    (proto::DIFF_PATH, "POST", Access::Cluster),
    (proto::KEYS_PATH, "POST", Access::Cluster),
    (proto::REAP_PATH, "POST", Access::Cluster),
    ("/v1/stats", "GET", Access::Open),
    ("/metrics", "GET", Access::Open),
    ("/health", "GET", Access::Open),
];

/// The methods `path` takes and who may call it, if it is an endpoint.
fn endpoint(path: &str) -> Option<(&'static str, Access)> {
    ROUTES.iter().find(|(p, _, _)| *p == path).map(|(_, allow, access)| (*allow, *access))
}

/// Answers one request.
pub async fn handle(node: Arc<Node>, req: Request<Incoming>) -> Response<Body> {
    if let Some((_, access)) = endpoint(req.uri().path()) {
        if let Err(refusal) = node.gate.check(access, req.headers()) {
            return common::auth::unauthorized(refusal);
        }
    }
    let result = match (req.method(), req.uri().path()) {
        (&Method::GET, proto::RECORD_PATH) => match Query::parse(req.uri().query().unwrap_or("")) {
            Ok(query) if query.get("wait_ms").is_some() => watch(&node, &req).await,
            _ => get(&node, &req, true),
        },
        (&Method::HEAD, proto::RECORD_PATH) => get(&node, &req, false),
        (&Method::PUT, proto::RECORD_PATH) => put(&node, req).await,
        (&Method::POST, proto::BATCH_PATH) => batch(&node, req).await,
        (&Method::GET, proto::DIGESTS_PATH) => digests(&node, &req),
        (&Method::POST, proto::DIFF_PATH) => diff(&node, req).await,
        (&Method::POST, proto::KEYS_PATH) => keys(&node, req).await,
        (&Method::POST, proto::REAP_PATH) => reap(&node, req).await,
        (&Method::GET, "/v1/stats") => Ok(h::json(StatusCode::OK, &stats(&node))),
        (&Method::GET, "/metrics") => {
            crate::metrics::refresh(&node);
            Ok(common::telemetry::render())
        }
        (&Method::GET, "/health") => match node.durability.failure() {
            None => Ok(h::text(StatusCode::OK, node.describe())),
            Some(failure) => Ok(h::text(StatusCode::SERVICE_UNAVAILABLE, failure)),
        },
        (method, path) => match endpoint(path) {
            Some((allow, _)) => {
                Err(ApiError::MethodNotAllowed { method: method.clone(), path: path.to_owned(), allow })
            }
            None => Err(ApiError::UnknownPath(path.to_owned())),
        },
    };
    result.unwrap_or_else(|e| {
        // Refusals for want of space are counted and logged when they start (`crate::disk`).
        if e.status().is_server_error() && !matches!(e, ApiError::DiskFull { .. }) {
            log::error!("request failed: {e}");
        }
        let mut response = h::text(e.status(), &e);
        if let ApiError::MethodNotAllowed { allow, .. } = e {
            response.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
        }
        response
    })
}

/// The record's key: the `key` parameter, or the [`proto::KEY`] header (escaped the same way)
/// for keys too long for a URL.
fn key_of<'a>(
    query: &'a Query<'_>,
    headers: &http::HeaderMap,
    max_key_bytes: usize,
) -> Result<std::borrow::Cow<'a, [u8]>, ApiError> {
    let key = match (query.get("key"), headers.get(proto::KEY)) {
        (Some(key), None) => std::borrow::Cow::Borrowed(key),
        (None, Some(header)) => {
            let escaped = header
                .to_str()
                .map_err(|_| ApiError::BadRequest(format!("header `{}` must be ASCII", proto::KEY)))?;
            let key = common::query::decode(escaped.as_bytes()).map_err(|escape| {
                ApiError::BadRequest(format!(
                    "malformed percent-escape {escape:?} in header `{}`",
                    proto::KEY
                ))
            })?;
            std::borrow::Cow::Owned(key.into_owned())
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(format!(
                "the key is given both as `key=` and as `{}`",
                proto::KEY
            )))
        }
        (None, None) => return Err(ApiError::BadRequest("missing parameter `key`".into())),
    };
    if key.len() > max_key_bytes {
        return Err(ApiError::TooLarge(format!("key is {} bytes; the limit is {max_key_bytes}", key.len())));
    }
    Ok(key)
}

/// The `digits` parameter, 1 to `max`.
fn digits_of(query: &Query<'_>, max: u8) -> Result<u8, ApiError> {
    let digits: u8 =
        query.parsed("digits")?.ok_or_else(|| ApiError::BadRequest("missing parameter `digits`".into()))?;
    if !(1..=max).contains(&digits) {
        return Err(ApiError::BadRequest(format!("`digits` must be 1 to {max}")));
    }
    Ok(digits)
}

/// `POST /v1/batch`: many small reads or writes in one request (see `common::batch`). The
/// rules are those of the single-record endpoints: leased reads need a lease, writes routed by
/// a stale map are refused, and the answer comes once every write is durable (one wait for all).
async fn batch(node: &Node, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    use common::batch::{self, Op, Outcome};
    let started = std::time::Instant::now();
    let limit = batch::MAX_OPS * (node.limits.max_key_bytes + batch::MAX_VALUE_BYTES + 32);
    let body = h::read_body(req.into_body(), limit).await.map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let ops = batch::decode_ops(body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let permission = node.read_permission();
    let me = node.id();
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut wrote = false;
    {
        // Held across every epoch check and apply, as for single writes.
        let view = node.view();
        // Writes accepted but not yet applied: applied together (one journal write) before the
        // next read of the batch and at its end, so a read sees every write before it.
        let mut pending: Vec<(usize, Bytes, Record)> = Vec::new();
        let flush = |pending: &mut Vec<(usize, Bytes, Record)>, outcomes: &mut Vec<Outcome>| {
            if pending.is_empty() {
                return false;
            }
            let writes: Vec<(&[u8], &Record)> =
                pending.iter().map(|(_, key, record)| (key.as_ref(), record)).collect();
            crate::metrics::writes(writes.len());
            let result = node.store.apply_many(&writes);
            for (i, (at, _, _)) in pending.iter().enumerate() {
                outcomes[*at] = match &result {
                    Ok(applied) => match applied[i] {
                        Applied::Superseded { by } => Outcome::Superseded { by },
                        Applied::Stored | Applied::AlreadyHeld => Outcome::Stored,
                    },
                    Err(e) => Outcome::Failed(e.to_string()),
                };
            }
            pending.clear();
            result.is_ok()
        };
        for op in ops {
            let outcome = match op {
                Op::Get { key, leased } => {
                    wrote |= flush(&mut pending, &mut outcomes);
                    crate::metrics::reads(1);
                    let refused = match (&permission, leased) {
                        (Err(why), true) => Some(why.clone()),
                        (Ok(()), true) => view.not_serving(&key, me),
                        (_, false) => None,
                    };
                    match refused {
                        Some(why) => Outcome::NotServing(why),
                        None => match node.store.get_bounded(&key, batch::MAX_VALUE_BYTES) {
                            Ok(Bounded::TooLarge) => Outcome::TooLarge,
                            Ok(Bounded::Found(record)) => Outcome::Found(record),
                            Ok(Bounded::Missing) => Outcome::Missing,
                            Err(e) => Outcome::Failed(e.to_string()),
                        },
                    }
                }
                Op::Put { key, record, epoch } => {
                    match refused_write(node, &view, me, &key, &record, epoch) {
                        Some(refusal) => refusal,
                        None => {
                            pending.push((outcomes.len(), key, record));
                            Outcome::Stored // replaced by the flush below
                        }
                    }
                }
            };
            outcomes.push(outcome);
        }
        wrote |= flush(&mut pending, &mut outcomes);
    }
    if wrote {
        if let Err(e) = node.durability.wait_durable().await {
            log::error!("batch not durable: {e}");
            for outcome in &mut outcomes {
                if matches!(outcome, Outcome::Stored | Outcome::Superseded { .. }) {
                    *outcome = Outcome::Failed(e.to_string());
                }
            }
        }
    }
    crate::metrics::batch(if wrote { "write" } else { "read" }, started.elapsed());
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(h::full(batch::encode_outcomes(&outcomes)))
        .expect("valid response parts"))
}

/// Why a batched write of `record` to `key`, routed by map `epoch`, is refused before it is
/// applied, if it is: a key too long, a timestamp out of bounds, a stale map, a full disk.
fn refused_write(
    node: &Node,
    view: &crate::View,
    me: Option<NodeId>,
    key: &[u8],
    record: &Record,
    epoch: Option<u64>,
) -> Option<common::batch::Outcome> {
    use common::batch::Outcome;
    if key.len() > node.limits.max_key_bytes {
        return Some(Outcome::Failed("key too large".into()));
    }
    if let Some(why) = node.limits.refused_timestamp(record.timestamp, epoch.is_none()) {
        return Some(Outcome::FutureTimestamp(why));
    }
    if let Some((_, needed)) = view.stale_write(key, epoch, me) {
        return Some(Outcome::StaleEpoch { needed });
    }
    let write = match &record.value {
        None => Write::Tombstone,
        Some(value) => Write::Value(value.len() as u64),
    };
    let refusal = node.disk.check(write).err()?;
    Some(Outcome::DiskFull(disk_full(node, refusal).to_string()))
}

/// `GET /v1/digests?digits=D`: every partition's digest in a map of `D` digits; with
/// `within=P&within_digits=d`, only those of the parts of partition `P` of a map of `d` digits
/// (for a catch-up, which then also passes the checks of a catch-up source, as for a diff).
fn digests(node: &Node, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let query = Query::parse(req.uri().query().unwrap_or(""))?;
    let digits = digits_of(&query, crate::digest::BUCKET_DIGITS)?;
    let held = node.store.digests()?;
    let Some(within) = query.parsed::<u32>("within")? else {
        return Ok(octets(held.all(digits).iter().flat_map(|d| d.to_be_bytes()).collect()));
    };
    let within_digits: u8 = query.parsed("within_digits")?.unwrap_or(0);
    if within_digits > digits || within >= common::partition::count(within_digits) {
        return Err(ApiError::BadRequest(format!(
            "no partition {within} with {within_digits} digits, or not coarser than {digits} digits"
        )));
    }
    let source = check_source(node, &query, within, within_digits)?;
    let out = held.within(within, within_digits, digits).iter().flat_map(|d| d.to_be_bytes()).collect();
    still_source(node, source, within, within_digits)?;
    Ok(octets(out))
}

/// A 200 answer of `bytes`, as `application/octet-stream`.
fn octets(bytes: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(h::full(bytes))
        .expect("valid response parts")
}

/// The checks a catch-up or a move asks of its source for a range (`partition` of a map of
/// `digits` digits) with `min_epoch` (and `leased`): past the epoch from which writes that skip
/// the caller are refused; for a sole source, holding every acknowledged write (up and
/// leased); and holding the range at all. Whether they were asked (then [`still_source`] must
/// hold once the answer is made).
fn check_source(node: &Node, query: &Query<'_>, partition: u32, digits: u8) -> Result<bool, ApiError> {
    let Some(need) = query.parsed::<u64>("min_epoch")? else { return Ok(false) };
    if query.parsed::<u8>("leased")? == Some(1) {
        node.read_permission().map_err(ApiError::NotServing)?;
    }
    let have = node.view().map.as_ref().map_or(0, |m| m.epoch);
    if have < need {
        return Err(ApiError::BehindEpoch { have, need });
    }
    still_source(node, true, partition, digits)?;
    Ok(true)
}

/// For an answer made for a source (`source`): this node still holds the range in its map. A
/// node that installs a map in which it no longer holds a range purges it, so an answer made
/// across that change may lack records; checked after the answer is made, a purge cannot have
/// begun before it was complete.
fn still_source(node: &Node, source: bool, partition: u32, digits: u8) -> Result<(), ApiError> {
    if !source {
        return Ok(());
    }
    let view = node.view();
    let (Some(map), Some(me)) = (view.map.as_ref(), node.id()) else {
        return Err(ApiError::NotServing("no map yet".into()));
    };
    let (start, end) = common::partition::prefix_range(partition, digits);
    let (first, last) =
        (common::partition::of_prefix(start, map.digits), common::partition::of_prefix(end, map.digits));
    let held = (first..=last).all(|p| {
        let assignment = map.assignment(p);
        assignment.replicas.contains(&me) || assignment.retiring.contains(&me)
    });
    if held {
        Ok(())
    } else {
        Err(ApiError::NotServing(format!(
            "this node does not hold partition {partition} of {digits} digits in map epoch {}",
            map.epoch
        )))
    }
}

async fn diff(node: &Node, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let query = Query::parse(parts.uri.query().unwrap_or(""))?;
    let digits = digits_of(&query, common::partition::MAX_DIGITS)?;
    let partition: u32 = query
        .parsed("partition")?
        .ok_or_else(|| ApiError::BadRequest("missing parameter `partition`".into()))?;
    if partition >= common::partition::count(digits) {
        return Err(ApiError::BadRequest(format!("no partition {partition} with {digits} digits")));
    }
    let source = check_source(node, &query, partition, digits)?;
    let by_reference = match query.get("by_reference") {
        None | Some(b"0") => false,
        Some(b"1") => true,
        Some(_) => return Err(ApiError::BadRequest("parameter `by_reference` must be 0 or 1".into())),
    };
    let ask = crate::repair::DiffAsk { by_reference, from: query.get("from").map(<[u8]>::to_vec) };
    let theirs = h::read_body(body, usize::MAX).await.map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let answer = crate::repair::serve_diff(node, partition, digits, theirs, &ask)?;
    still_source(node, source, partition, digits)?;
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/octet-stream");
    if let Some(position) = &answer.resume {
        response = response.header(proto::RESUME, common::query::encode(position));
    }
    Ok(response.body(h::full(answer.body)).expect("valid response parts"))
}

/// `POST /v1/reap?phase=check|drop`: one step of reaping tombstones (see [`crate::reaper`]).
async fn reap(node: &Node, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let query = Query::parse(parts.uri.query().unwrap_or(""))?;
    let phase = query
        .get("phase")
        .and_then(|p| crate::reaper::Phase::parse(&String::from_utf8_lossy(p)))
        .ok_or_else(|| ApiError::BadRequest("parameter `phase` must be `check` or `drop`".into()))?;
    let limit = crate::reaper::PASS_BUDGET * (node.limits.max_key_bytes + 32);
    let body = h::read_body(body, limit).await.map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let answer = crate::reaper::serve(node, phase, body).map_err(ApiError::BadRequest)?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(h::full(answer))
        .expect("valid response parts"))
}

/// The largest [`proto::ListKeys`] body: a prefix and a position of up to a key each, escaped.
const LIST_REQUEST_BYTES: usize = 3 * 2 * proto::MAX_KEY_BYTES + 4096;

/// `POST /v1/keys`: live keys of one partition for a frontend's listing (see
/// [`proto::ListKeys`]), under the rules of a leased read, since a listing must hold every
/// acknowledged write: only while this node holds a lease and is a read replica of the range.
async fn keys(node: &Node, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body = h::read_body(req.into_body(), LIST_REQUEST_BYTES)
        .await
        .map_err(|e| ApiError::BadRequest(format!("key listing request: {e}")))?;
    let request: proto::ListKeys = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid key listing request: {e}")))?;
    let decode = |name: &str, text: &str| {
        common::query::decode(text.as_bytes()).map(|b| b.into_owned()).map_err(|escape| {
            ApiError::BadRequest(format!("malformed percent-escape {escape:?} in `{name}`"))
        })
    };
    let prefix = decode("prefix", &request.prefix)?;
    let from = request.from.as_deref().map(|from| decode("from", from)).transpose()?;
    let scan = key_scan(&request, &prefix, from.as_deref()).map_err(ApiError::BadRequest)?;
    node.read_permission().map_err(ApiError::NotServing)?;
    if let Some(why) = not_serving_range(&node.view(), scan.partition, scan.digits, node.id()) {
        return Err(ApiError::NotServing(why));
    }
    // Up to MAX_SCANNED_RECORDS index entries: off the worker thread's other tasks.
    let found = tokio::task::block_in_place(|| node.store.scan_keys(&scan))?;
    let listed = proto::ListedKeys {
        keys: found.keys.iter().map(|key| common::query::encode(key)).collect(),
        next: found.next.as_deref().map(common::query::encode),
        scanned: found.scanned,
        key_bytes: found.key_bytes,
    };
    Ok(h::json(StatusCode::OK, &listed))
}

/// The scan a [`proto::ListKeys`] asks for, or what is wrong with it.
fn key_scan<'a>(
    request: &proto::ListKeys,
    prefix: &'a [u8],
    from: Option<&'a [u8]>,
) -> Result<crate::store::KeyScan<'a>, String> {
    use common::partition::{count, prefix_range, MAX_DIGITS};
    let (digits, partition) = (request.digits, request.partition);
    if !(1..=MAX_DIGITS).contains(&digits) {
        return Err(format!("`digits` must be 1 to {MAX_DIGITS}"));
    }
    if partition >= count(digits) {
        return Err(format!("no partition {partition} with {digits} digits"));
    }
    let (start, end) = prefix_range(partition, digits);
    if let Some(from) = from {
        // A position shorter than 4 bytes names the same point as padded with zeros.
        let mut at = from.to_vec();
        at.resize(at.len().max(4), 0);
        let after_end = end.checked_add(1).is_some_and(|next| at[..] >= next.to_be_bytes()[..]);
        if at[..] < start.to_be_bytes()[..] || after_end {
            return Err(format!("`from` is outside partition {partition} with {digits} digits"));
        }
    }
    let bounded = |name: &str, value: usize, most: usize| {
        (1..=most).contains(&value).then_some(value).ok_or_else(|| format!("`{name}` must be 1 to {most}"))
    };
    Ok(crate::store::KeyScan {
        partition,
        digits,
        prefix,
        from,
        limit: bounded("limit", request.limit, proto::MAX_LISTED_KEYS)?,
        max_bytes: bounded("max_bytes", request.max_bytes, usize::MAX)?,
        max_scan: bounded("max_scan", request.max_scan, proto::MAX_SCANNED_RECORDS)?,
    })
}

/// Why this node (`me`) may not serve a leased listing of `partition` in a map of `digits`
/// digits, if it may not: it must be a read replica of every partition of its own map that
/// overlaps it (its map may have more or fewer digits than the caller's).
fn not_serving_range(view: &crate::View, partition: u32, digits: u8, me: Option<NodeId>) -> Option<String> {
    use common::partition::{of_prefix, prefix_range};
    let (Some(map), Some(me)) = (view.map.as_ref(), me) else {
        return Some("this node has no map or id yet".into());
    };
    let (start, end) = prefix_range(partition, digits);
    (of_prefix(start, map.digits)..=of_prefix(end, map.digits))
        .find(|&p| !map.replicas_of(p).contains(&me))
        .map(|p| format!("not a replica of partition {p} in map epoch {}", map.epoch))
}

fn stats(node: &Node) -> serde_json::Value {
    // Before taking the view: `read_permission` takes it too, and a second read lock on the
    // same thread deadlocks behind a waiting writer.
    let serving_reads = node.read_permission().is_ok();
    let view = node.view();
    serde_json::json!({
        "node_id": node.id(),
        "state": view.state,
        "map_epoch": view.map.as_ref().map(|m| m.epoch),
        "serving_reads": serving_reads,
        "repair": node.repair.to_json(),
        "engine": node.store.engine_stats(),
        "heap": crate::heap::stats(),
        "disk": disk_stats(node),
    })
}

/// The disk section of `/v1/stats`: the filesystem's used, free and total bytes, the floor,
/// whether writes are refused (see [`crate::disk`]), and the size of the engine's files as the
/// engine counts it (apparent sizes: a preallocated journal counts whole).
fn disk_stats(node: &Node) -> serde_json::Value {
    let mut disk = serde_json::to_value(node.disk.report()).expect("a plain struct");
    disk["engine_bytes"] = node.store.disk_space().into();
    disk
}

/// `GET /v1/record` (with the value as body) or `HEAD /v1/record` (without).
fn get(node: &Node, req: &Request<Incoming>, with_value: bool) -> Result<Response<Body>, ApiError> {
    let query = Query::parse(req.uri().query().unwrap_or(""))?;
    let key = key_of(&query, req.headers(), node.limits.max_key_bytes)?;
    let key = key.as_ref();
    if req.headers().get(proto::UNLEASED).is_none_or(|v| v != "1") {
        may_serve(node, key)?;
    }
    // A point read is served from the block cache or one block read: cheaper inline than
    // handing the worker thread off (profiling showed the handoff dominating).
    crate::metrics::reads(1);
    let record = node.store.open_record(key)?.ok_or(ApiError::NotFound)?;
    Ok(record_response(record, with_value))
}

/// Whether this node may serve a leased read of `key` now.
fn may_serve(node: &Node, key: &[u8]) -> Result<(), ApiError> {
    node.read_permission().map_err(ApiError::NotServing)?;
    match node.view().not_serving(key, node.id()) {
        Some(why) => Err(ApiError::NotServing(why)),
        None => Ok(()),
    }
}

/// The answer to a record read: the record's headers and, `with_value`, its value as the body
/// (a value file streamed as the caller drains it, see [`crate::value_files::stream`]).
fn record_response(record: Readable, with_value: bool) -> Response<Body> {
    use http_body_util::BodyExt;
    let mut response =
        Response::builder().status(StatusCode::OK).header(proto::TIMESTAMP, record.timestamp());
    let body = match record {
        Readable::Whole(record) if record.is_tombstone() => {
            response = response.header(proto::TOMBSTONE, "1");
            h::empty()
        }
        Readable::Whole(_) if !with_value => h::empty(),
        Readable::Whole(record) => record.value.map(h::full).unwrap_or_else(h::empty),
        Readable::InFile { length, hash, file, .. } => {
            response = response.header(proto::VALUE_HASH, format!("{hash:032x}"));
            if with_value {
                crate::value_files::stream(file, length).boxed_unsync()
            } else {
                h::empty()
            }
        }
    };
    response.body(body).expect("valid response parts")
}

/// Longest a watch may be held open.
pub const MAX_WATCH_WAIT: std::time::Duration = std::time::Duration::from_secs(300);
/// How often a held watch checks that the node may still serve the key's reads.
const WATCH_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// `GET /v1/record?key=K&newer_than=T&wait_ms=W` (see `common::proto`): the record as soon as
/// this node holds one of `key` stamped after `T` (a tombstone included), 304 once `W` ms pass
/// without one, 503 as soon as the node may no longer serve the key's reads (so the frontend
/// watches on another replica).
async fn watch(node: &Node, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let query = Query::parse(req.uri().query().unwrap_or(""))?;
    let key = key_of(&query, req.headers(), node.limits.max_key_bytes)?.into_owned();
    let newer_than: u64 = query.parsed("newer_than")?.unwrap_or(0);
    let wait = std::time::Duration::from_millis(query.parsed("wait_ms")?.unwrap_or(0)).min(MAX_WATCH_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let watch = node.store.watchers.watch(&key);
    loop {
        may_serve(node, &key)?;
        let changed = watch.notify().notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Some(record) = node.store.open_record(&key)?.filter(|r| r.timestamp() > newer_than) {
            crate::metrics::reads(1);
            return Ok(record_response(record, true));
        }
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(WATCH_CHECK_INTERVAL) => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Ok(Response::builder()
                    .status(StatusCode::NOT_MODIFIED)
                    .body(h::empty())
                    .expect("valid response parts"));
            }
        }
    }
}

async fn put(node: &Node, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let (parts, mut body) = req.into_parts();
    let query = Query::parse(parts.uri.query().unwrap_or(""))?;
    let key = key_of(&query, &parts.headers, node.limits.max_key_bytes)?;
    let key = key.as_ref();
    let timestamp = parts
        .headers
        .get(proto::TIMESTAMP)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!("header `{}` must be a decimal timestamp", proto::TIMESTAMP))
        })?;
    // A write without the epoch it was routed by is a repair (see `crate::repair`).
    let repair = epoch_of(&parts.headers)?.is_none();
    if let Some(why) = node.limits.refused_timestamp(timestamp, repair) {
        return Err(ApiError::RefusedTimestamp(why));
    }
    let tombstone = match parts.headers.get(proto::TOMBSTONE).map(|v| v.as_bytes()) {
        None | Some(b"0") => false,
        Some(b"1") => true,
        Some(_) => return Err(ApiError::BadRequest(format!("header `{}` must be 0 or 1", proto::TOMBSTONE))),
    };
    let limit = node.limits.max_value_bytes;
    let declared = hyper::body::Body::size_hint(&body).exact().map(|n| n as usize);
    let write = if tombstone { Write::Tombstone } else { Write::Value(declared.unwrap_or(0) as u64) };
    room_for(node, write, &mut body, limit).await?;
    if let Some(length) = declared.filter(|&n| !tombstone && n >= VALUE_FILE_BYTES && n <= limit) {
        let epoch = epoch_of(&parts.headers)?;
        let value = crate::receive::into_value_file(&node.store, body, length).await?;
        return apply_write(node, key, epoch, || {
            tokio::task::block_in_place(|| node.store.apply_file(key, timestamp, value))
        })
        .await;
    }
    if let Some(length) = declared.filter(|&n| !tombstone && n > INLINE_WRITE_BYTES && n <= limit) {
        let stored = crate::receive::into_stored_value(body, timestamp, length).await?;
        let epoch = epoch_of(&parts.headers)?;
        return apply_write(node, key, epoch, || {
            tokio::task::block_in_place(|| node.store.apply_encoded(key, stored))
        })
        .await;
    }
    let value = h::read_body(body, limit).await.map_err(|e| match e {
        ReadBodyError::TooLarge { limit } => {
            ApiError::TooLarge(format!("value is larger than the {limit}-byte limit"))
        }
        ReadBodyError::Transport(e) => ApiError::BadRequest(format!("value could not be read: {e}")),
    })?;
    let record = if tombstone {
        if !value.is_empty() {
            return Err(ApiError::BadRequest("a tombstone carries no value".into()));
        }
        Record::tombstone(timestamp)
    } else {
        Record::value(timestamp, value)
    };
    let epoch = epoch_of(&parts.headers)?;
    // Small writes append to the journal inline; large ones may stall on I/O, so they leave
    // the worker thread to the runtime's other tasks.
    let value_len = record.value.as_ref().map_or(0, |v| v.len());
    apply_write(node, key, epoch, || {
        if value_len > INLINE_WRITE_BYTES {
            tokio::task::block_in_place(|| node.store.apply(key, &record))
        } else {
            node.store.apply(key, &record)
        }
    })
    .await
}

/// Refuses `write` if the disk has no room for it (see [`crate::disk`]), before its `body` is
/// stored (a body of unknown length counts as empty; the next reading of the disk sees it).
/// The body of a refused write is read and dropped first: a sender still writing it when the
/// connection closed would see a broken pipe, not the 507.
async fn room_for(node: &Node, write: Write, body: &mut Incoming, limit: usize) -> Result<(), ApiError> {
    let Err(refusal) = node.disk.check(write) else { return Ok(()) };
    discard(body, limit).await;
    Err(disk_full(node, refusal))
}

/// Reads and drops a body of up to `limit` bytes (stops early past it, or on an error).
async fn discard(body: &mut Incoming, limit: usize) {
    use http_body_util::BodyExt;
    let mut read = 0;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, |data| data.len());
        if read > limit {
            return;
        }
    }
}

/// The error for a write refused for want of disk space, naming this node.
fn disk_full(node: &Node, refusal: crate::disk::Refusal) -> ApiError {
    let who =
        node.id().map_or_else(|| "this node (not registered yet)".to_owned(), |id| format!("node {id}"));
    ApiError::DiskFull { who, refusal }
}

/// Applies one write unless it was routed by a stale map, and answers once it is durable.
async fn apply_write(
    node: &Node,
    key: &[u8],
    epoch: Option<u64>,
    apply: impl FnOnce() -> Result<Applied, crate::store::StoreError>,
) -> Result<Response<Body>, ApiError> {
    crate::metrics::writes(1);
    let applied = {
        // Held across the check and the apply: a newer map cannot be installed in between.
        let me = node.id();
        let view = node.view();
        if let Some((partition, needed)) = view.stale_write(key, epoch, me) {
            let given = epoch.unwrap_or_default();
            return Err(ApiError::StaleEpoch { given, needed, partition });
        }
        apply()?
    };
    // Even a superseded write waits: the newer record that beat it may not be durable yet.
    node.durability.wait_durable().await?;
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(proto::APPLIED, if applied == Applied::Stored { "1" } else { "0" });
    if let Applied::Superseded { by } = applied {
        response = response.header(proto::NEWER, by);
    }
    Ok(response.body(h::empty()).expect("valid response parts"))
}

fn epoch_of(headers: &http::HeaderMap) -> Result<Option<u64>, ApiError> {
    match headers.get(proto::EPOCH) {
        None => Ok(None),
        Some(v) => Ok(Some(v.to_str().ok().and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| {
            ApiError::BadRequest(format!("header `{}` must be a decimal epoch", proto::EPOCH))
        })?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::placement::NodeState;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    fn list_request(
        digits: u8,
        partition: u32,
        limit: usize,
        max_bytes: usize,
        max_scan: usize,
    ) -> proto::ListKeys {
        proto::ListKeys { digits, partition, prefix: String::new(), from: None, limit, max_bytes, max_scan }
    }

    #[test]
    fn key_listing_requests_are_checked_before_any_scan() {
        let max = proto::MAX_LISTED_KEYS;
        let scans = proto::MAX_SCANNED_RECORDS;
        /// A request, its `from`, and the reason it is refused (if it is).
        type Case = (proto::ListKeys, Option<&'static [u8]>, Result<(), &'static str>);
        let cases: &[Case] = &[
            (list_request(1, 15, max, 1, scans), None, Ok(())),
            (list_request(2, 0x5a, 1, usize::MAX, 1), Some(b"\x5a"), Ok(())),
            (list_request(2, 0x5a, 1, 1, 1), Some(b"\x5a\xff\xff\xff\xffkey"), Ok(())),
            (list_request(1, 15, 1, 1, 1), Some(b"\xff\xff\xff\xff\xff"), Ok(())),
            (list_request(0, 0, 1, 1, 1), None, Err("`digits` must be 1 to 6")),
            (list_request(7, 0, 1, 1, 1), None, Err("`digits` must be 1 to 6")),
            (list_request(1, 16, 1, 1, 1), None, Err("no partition 16 with 1 digits")),
            (list_request(1, 0, 0, 1, 1), None, Err("`limit` must be 1 to 10000")),
            (list_request(1, 0, max + 1, 1, 1), None, Err("`limit` must be 1 to 10000")),
            (list_request(1, 0, 1, 0, 1), None, Err("`max_bytes` must be 1 to")),
            (list_request(1, 0, 1, 1, 0), None, Err("`max_scan` must be 1 to 100000")),
            (list_request(1, 0, 1, 1, scans + 1), None, Err("`max_scan` must be 1 to 100000")),
            (list_request(2, 0x5a, 1, 1, 1), Some(b"\x59\xff"), Err("`from` is outside partition 90")),
            (list_request(2, 0x5a, 1, 1, 1), Some(b"\x59\xff\xff\xff\xff"), Err("`from` is outside")),
            (list_request(2, 0x5a, 1, 1, 1), Some(b""), Err("`from` is outside partition 90")),
            (list_request(2, 0x5a, 1, 1, 1), Some(b"\x5b"), Err("`from` is outside partition 90")),
        ];
        for (request, from, expected) in cases {
            let result = key_scan(request, b"p", *from);
            match (result, expected) {
                (Ok(scan), Ok(())) => {
                    assert_eq!(
                        (scan.partition, scan.digits, scan.from),
                        (request.partition, request.digits, *from)
                    );
                    assert_eq!(
                        (scan.limit, scan.max_bytes, scan.max_scan),
                        (request.limit, request.max_bytes, request.max_scan)
                    );
                }
                (Err(message), Err(expected)) => {
                    assert!(message.contains(expected), "{request:?}: {message}")
                }
                (result, expected) => panic!("{request:?} {from:?}: {result:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn a_listing_is_served_only_by_a_read_replica_of_the_whole_range() {
        use common::placement::{Assignment, Member, PartitionMap};
        // 16 partitions over nodes 1-3, node 1 a replica of all but 0x3 (whose move to it is
        // still copying).
        let members = (1..=3).map(|id| Member::up(id, format!("s{id}:1"))).collect();
        let mut map = PartitionMap::build(5, members, 3).unwrap();
        map.partitions[3] = Assignment { next: Some(vec![1, 2, 3]), ..Assignment::settled(vec![2, 3]) };
        let mut split = map.clone();
        split.digits = 2;
        split.partitions = map.partitions.iter().flat_map(|a| std::iter::repeat_n(a.clone(), 16)).collect();
        let view =
            |map: &PartitionMap| crate::View { map: Some(Arc::new(map.clone())), ..Default::default() };
        /// The node's map, the partition and digit count asked for, the node, why it refuses.
        type Case<'a> = (&'a PartitionMap, u32, u8, Option<NodeId>, Option<&'static str>);
        let cases: &[Case] = &[
            (&map, 2, 1, Some(1), None),
            (&map, 3, 1, Some(1), Some("not a replica of partition 3 in map epoch 5")),
            (&map, 3, 1, Some(2), None),
            (&map, 0x21, 2, Some(1), None),
            (&map, 0x35, 2, Some(1), Some("not a replica of partition 3 ")),
            (&map, 0, 1, None, Some("no map or id")),
            // The node's map has split (more digits than the caller's): every child counts.
            (&split, 2, 1, Some(1), None),
            (&split, 3, 1, Some(1), Some("not a replica of partition 48 ")),
        ];
        for &(map, partition, digits, me, expected) in cases {
            let why = not_serving_range(&view(map), partition, digits, me);
            match (why, expected) {
                (None, None) => {}
                (Some(why), Some(expected)) => {
                    assert!(why.contains(expected), "{partition:x}/{digits}: {why}")
                }
                (why, expected) => {
                    panic!("{partition:x}/{digits} for {me:?}: {why:?}, expected {expected:?}")
                }
            }
        }
        assert!(not_serving_range(&crate::View::default(), 0, 1, Some(1)).is_some(), "no map yet");
    }

    #[test]
    fn stats_report_engine_memory_against_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::for_tests(dir.path());
        let empty = stats(&node)["engine"].clone();
        assert_eq!(empty["cache_capacity_bytes"], 8 << 20);
        assert_eq!(empty["approximate_records"], 0);
        let record = common::version::Record::value(1, bytes::Bytes::from(vec![7u8; 4096]));
        node.store.apply(b"key", &record).unwrap();
        let engine = stats(&node)["engine"].clone();
        assert_eq!(engine["approximate_records"], 1);
        assert!(engine["write_buffer_bytes"].as_u64().unwrap() >= 4096, "{engine}");
        let disk = stats(&node)["disk"].clone();
        assert!(disk["engine_bytes"].as_u64().unwrap() > 0, "{disk}");
        assert!(disk["used_bytes"].as_u64().unwrap() > 0, "{disk}");
        assert!(disk["free_bytes"].as_u64().unwrap() <= disk["total_bytes"].as_u64().unwrap(), "{disk}");
        assert_eq!((disk["floor_bytes"].as_u64(), disk["refusing_writes"].as_bool()), (Some(0), Some(false)));
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            let heap = stats(&node)["heap"].clone();
            assert!(heap["in_use_bytes"].as_u64().unwrap() >= 4096, "{heap}");
            assert!(heap["free_bytes"].is_u64(), "{heap}");
        }
    }

    #[test]
    fn stats_never_deadlocks_with_a_waiting_writer() {
        // Regression: stats() once took the view lock twice on one thread; a heartbeat queued
        // for the write lock in between blocked the second read, and the node hung.
        let dir = tempfile::tempdir().unwrap();
        let node = Arc::new(Node::for_tests(dir.path()));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (node, stop) = (node.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    node.heard(NodeState::Up, 1, Duration::from_secs(1), Instant::now());
                }
            })
        };
        let reader = {
            let node = node.clone();
            std::thread::spawn(move || {
                for _ in 0..200_000 {
                    std::hint::black_box(stats(&node));
                }
            })
        };
        let started = Instant::now();
        while !reader.is_finished() {
            assert!(started.elapsed() < Duration::from_secs(10), "stats() deadlocked against a writer");
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }
}
