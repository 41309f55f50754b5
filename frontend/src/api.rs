//! The public API: the original `/get/`, `/set/`, `/delete/`; the REST paths `/kv/<key>` (see
//! `crate::rest`) and `/kv/` (listing, see `crate::listing`); and for operators `/health` and
//! `/metrics`. Nothing internal is served here.
//!
//! Keys and values are byte strings, percent-decoded strictly (see `common::query`). Every
//! misuse is a 4xx with a one-line message; 503 means the cluster could not do what was asked;
//! 507 means a write missed its quorum because replicas refused it for want of disk space (their
//! free space is below `storage --min-free-disk-mib`): the message names them. Such replicas are
//! alive, so a refused write fences nobody; but a replica that missed a write that others
//! acknowledged is fenced out of reads like any other, so that no read can miss the write.

use crate::consistency::Level;
use crate::replica::{Found, ReplicaFailure, BUFFERED_READ_BYTES, STREAMED_WRITE_BYTES};
use crate::routing::Routes;
use crate::Frontend;
use bytes::Bytes;
use common::http::{self as h, Body, ReadBodyError};
use common::placement::NodeId;
use common::query::{Query, QueryError};
use common::version::Record;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;

const USAGE: &str =
    "use GET /get/?key=K[&r=one|quorum|all], GET or POST /set/?key=K&value=V[&w=one|quorum|all] \
(or the value as POST body), GET, POST or DELETE /delete/?key=K[&w=...]; or GET, HEAD, PUT and DELETE \
on /kv/<key>, GET /kv/<key>?wait=30s&newer_than=V, GET /kv/?prefix=P&limit=N[&after=C]";

/// The REST paths: `/kv/<key>` (see `crate::rest`).
pub const KV_PREFIX: &str = "/kv/";

/// Everything a public request can fail with, and the status each maps to.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("key not found")]
    KeyNotFound,
    #[error("{0}")]
    TooLarge(String),
    #[error("method {method} is not allowed on {path} (allowed: {allowed})")]
    MethodNotAllowed { method: Method, path: String, allowed: &'static str },
    #[error("no such endpoint: {0}; {USAGE}")]
    UnknownPath(String),
    #[error("cluster not ready: this frontend has no partition map yet (the controller forms the cluster once every storage node has registered)")]
    NoMap,
    #[error("{0}")]
    Unavailable(String),
    /// A write missed its quorum because replicas are out of disk space (names them).
    #[error("{0}")]
    InsufficientStorage(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::KeyNotFound | ApiError::UnknownPath(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NoMap | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
        }
    }

    fn into_response(self) -> Response<Body> {
        let mut response = h::text(self.status(), &self);
        if let ApiError::MethodNotAllowed { allowed, .. } = self {
            response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allowed));
        }
        response
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

/// A public request's body: already read whole (small requests, see `crate::server`) or still
/// arriving (everything else, through hyper).
pub enum RequestBody {
    Buffered(Bytes),
    Arriving(Incoming),
}

/// The request headers the API reads (every other header is ignored, and none is passed on to
/// the storage nodes).
#[derive(Debug, Clone, Copy, Default)]
pub struct Conditions<'a> {
    /// `If-None-Match`: a GET of a record whose version it names answers 304.
    pub if_none_match: Option<&'a [u8]>,
}

/// Answers one public request that came through hyper.
pub async fn handle(frontend: Arc<Frontend>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let if_none_match = parts.headers.get(header::IF_NONE_MATCH).map(|v| v.as_bytes());
    let conditions = Conditions { if_none_match };
    let (method, uri) = (&parts.method, &parts.uri);
    answer(&frontend, method, uri.path(), uri.query(), conditions, RequestBody::Arriving(body)).await
}

/// Answers one public request: `method` on `path`, with the raw (still escaped) `query`.
pub async fn answer(
    frontend: &Frontend,
    method: &Method,
    path: &str,
    query: Option<&str>,
    conditions: Conditions<'_>,
    body: RequestBody,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let response = route(frontend, method, path, query, conditions, body).await;
    let op = crate::metrics::operation(method, path, query);
    crate::metrics::request(op, response.status(), started.elapsed());
    response
}

async fn route(
    frontend: &Frontend,
    method: &Method,
    path: &str,
    query: Option<&str>,
    conditions: Conditions<'_>,
    body: RequestBody,
) -> Response<Body> {
    let not_allowed =
        |allowed| Err(ApiError::MethodNotAllowed { method: method.clone(), path: path.to_owned(), allowed });
    let result = match path {
        "/get/" | "/get" => match *method {
            Method::GET => get(frontend, query, conditions).await,
            _ => not_allowed("GET"),
        },
        "/set/" | "/set" => match *method {
            Method::GET | Method::POST => set(frontend, method, query, body).await,
            _ => not_allowed("GET, POST"),
        },
        "/delete/" | "/delete" => match *method {
            Method::GET | Method::POST | Method::DELETE => delete(frontend, query).await,
            _ => not_allowed("GET, POST, DELETE"),
        },
        "/kv/" | "/kv" => match *method {
            Method::GET => match parse_query(query, crate::listing::PARAMETERS) {
                Ok(query) => crate::listing::list(frontend, &query).await,
                Err(e) => Err(e),
            },
            _ => not_allowed("GET"),
        },
        "/health" => match *method {
            Method::GET => Ok(health(frontend)),
            _ => not_allowed("GET"),
        },
        "/metrics" => match *method {
            Method::GET => Ok(common::telemetry::render()),
            _ => not_allowed("GET"),
        },
        path if path.len() > KV_PREFIX.len() && path.starts_with(KV_PREFIX) => {
            let escaped_key = &path[KV_PREFIX.len()..];
            crate::rest::answer(frontend, method, escaped_key, query, conditions, body).await
        }
        path => Err(ApiError::UnknownPath(path.to_owned())),
    };
    result.unwrap_or_else(ApiError::into_response)
}

/// Parses the query, refusing parameters the endpoint does not take (a typo such as `kye=`
/// should not silently become "missing key").
pub(crate) fn parse_query<'a>(raw: Option<&'a str>, allowed: &[&str]) -> Result<Query<'a>, ApiError> {
    let query = Query::parse(raw.unwrap_or(""))?;
    if let Some(unknown) = query.names().find(|n| !allowed.contains(&n.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "unknown parameter `{unknown}` (this endpoint takes: {})",
            allowed.join(", ")
        )));
    }
    Ok(query)
}

fn key_of<'a>(query: &'a Query<'_>, frontend: &Frontend) -> Result<&'a [u8], ApiError> {
    let key =
        query.get("key").ok_or_else(|| ApiError::BadRequest(format!("missing parameter `key`; {USAGE}")))?;
    let limit = frontend.limits.max_key_bytes;
    if key.len() > limit {
        return Err(ApiError::TooLarge(format!("key is {} bytes; the limit is {limit}", key.len())));
    }
    Ok(key)
}

pub(crate) fn too_large_value(length: Option<usize>, limit: usize) -> ApiError {
    ApiError::TooLarge(match length {
        Some(length) => format!("value is {length} bytes; the limit is {limit}"),
        None => format!("value is larger than the {limit}-byte limit"),
    })
}

pub(crate) fn level_of(query: &Query<'_>, name: &str, default: Level) -> Result<Level, ApiError> {
    match query.get(name) {
        None => Ok(default),
        Some(raw) => std::str::from_utf8(raw)
            .map_err(|_| ApiError::BadRequest(format!("`{name}` must be one, quorum or all")))?
            .parse()
            .map_err(|e| ApiError::BadRequest(format!("parameter `{name}`: {e}"))),
    }
}

async fn get(
    frontend: &Frontend,
    query: Option<&str>,
    conditions: Conditions<'_>,
) -> Result<Response<Body>, ApiError> {
    let query = parse_query(query, &["key", "r"])?;
    let key = key_of(&query, frontend)?;
    let level = level_of(&query, "r", frontend.read_level)?;
    Ok(found_response(read(frontend, key, level).await?, conditions, false))
}

/// Reads `key` at `level`: from one up replica (the next if it fails), or by comparing replicas.
pub(crate) async fn read(frontend: &Frontend, key: &[u8], level: Level) -> Result<Found, ApiError> {
    let routes = frontend.router.current().ok_or(ApiError::NoMap)?;
    let partition = common::partition::of(key, routes.map.digits);
    let replication = routes.map.replicas_of(partition).len();
    if level != Level::One {
        return read_and_compare(frontend, &routes, partition, key, level.required(replication)).await;
    }
    let readable: Vec<NodeId> = routes.map.read_set(partition).collect();
    let failures =
        match frontend.replicas.read_first(&routes, &frontend.read_order(partition, readable), key).await {
            Ok(found) => return Ok(found),
            Err(failures) => failures,
        };
    frontend.suspect(&failures);
    // No up replica with a lease answered (the controller may be down, so leases lapse):
    // compare enough replicas to meet every write quorum; the newest record among them is at
    // least as new as any acknowledged write.
    if failures.iter().all(ReplicaFailure::is_not_serving) {
        let required = replication - frontend.write_level.required(replication) + 1;
        return read_and_compare(frontend, &routes, partition, key, required).await;
    }
    Err(ApiError::Unavailable(format!("no replica of partition {partition} answered: {}", join(&failures))))
}

/// A record's version as an entity tag: its timestamp, quoted.
pub(crate) fn etag(timestamp: u64) -> String {
    format!("\"{timestamp}\"")
}

/// Whether an `If-None-Match` value names `timestamp`'s version (or is `*`).
fn none_match_hits(if_none_match: &[u8], timestamp: u64) -> bool {
    let tag = etag(timestamp);
    if_none_match.split(|&b| b == b',').map(<[u8]>::trim_ascii).any(|candidate| {
        let candidate = candidate.strip_prefix(b"W/").unwrap_or(candidate);
        candidate == b"*" || candidate == tag.as_bytes()
    })
}

/// The answer to a read: 200 with the value (no body for `head`), 304 if `If-None-Match` names
/// its version, 404 for a deleted or missing key. Each carries the version, if any, in `ETag`
/// (values) and `vf-version`.
pub(crate) fn found_response(found: Found, conditions: Conditions<'_>, head: bool) -> Response<Body> {
    let (timestamp, length, body) = match found {
        Found::Value { timestamp, length, body, .. } => (timestamp, length, body),
        Found::Tombstone { timestamp } => {
            return versioned(ApiError::KeyNotFound.into_response(), timestamp, false);
        }
        Found::Missing => return ApiError::KeyNotFound.into_response(),
    };
    if conditions.if_none_match.is_some_and(|tags| none_match_hits(tags, timestamp)) {
        let response = Response::builder().status(StatusCode::NOT_MODIFIED).body(h::empty());
        return versioned(response.expect("valid response parts"), timestamp, true);
    }
    let mut response =
        Response::builder().status(StatusCode::OK).header(header::CONTENT_TYPE, "application/octet-stream");
    if let Some(length) = length {
        response = response.header(header::CONTENT_LENGTH, length);
    }
    let body = if head { h::empty() } else { body };
    versioned(response.body(body).expect("valid response parts"), timestamp, true)
}

/// `response` with `timestamp` as its `vf-version` and, with `tag`, its `ETag`.
fn versioned(mut response: Response<Body>, timestamp: u64, tag: bool) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(VERSION, header::HeaderValue::from(timestamp));
    if tag {
        headers.insert(header::ETAG, header::HeaderValue::from_str(&etag(timestamp)).expect("digits"));
    }
    response
}

/// The header carrying a record's version (its timestamp) on reads and writes.
pub const VERSION: &str = "vf-version";

/// The answer to a write that stored a record stamped `timestamp`: 200 `ok` with its version.
pub(crate) fn written(timestamp: u64) -> Response<Body> {
    versioned(h::text(StatusCode::OK, "ok"), timestamp, true)
}

/// Reads every replica of `partition` (leases not needed), and once `required` answered,
/// answers with the newest record and writes it back to any replica found behind (read
/// repair). Serves `r=quorum`, `r=all`, and reads while no replica holds a lease. Large values
/// are neither held nor read to be compared (see `crate::compare`): the answer streams from
/// the newest replica, and the repair streams a second read of it to those behind.
async fn read_and_compare(
    frontend: &Frontend,
    routes: &Arc<Routes>,
    partition: u32,
    key: &[u8],
    required: usize,
) -> Result<Found, ApiError> {
    use crate::compare::{self, Answer};
    let replicas = &frontend.replicas;
    let reads = routes.map.replicas_of(partition).iter().map(|&node| async move {
        let found = replicas.read_unleased(routes, node, key).await?;
        let fail = |error| ReplicaFailure { node, addr: routes.addr(node).to_owned(), error };
        let answer = match found {
            Found::Missing => Answer::Missing,
            Found::Tombstone { timestamp } => Answer::Whole(Record::tombstone(timestamp)),
            Found::Value { timestamp, length: Some(length), hash, body } if length > BUFFERED_READ_BYTES => {
                Answer::Streaming { timestamp, length, hash, body }
            }
            Found::Value { timestamp, body, .. } => {
                Answer::Whole(Record::value(timestamp, replicas.collect(body).await.map_err(fail)?))
            }
        };
        Ok::<_, ReplicaFailure>((node, answer))
    });
    let mut nodes = Vec::new();
    let mut answers = Vec::new();
    let mut failures = Vec::new();
    for result in futures_util::future::join_all(reads).await {
        match result {
            Ok((node, answer)) => {
                nodes.push(node);
                answers.push(answer);
            }
            Err(failure) => failures.push(failure),
        }
    }
    if answers.len() < required {
        frontend.suspect(&failures);
        return Err(ApiError::Unavailable(format!(
            "the read needs {required} replicas of partition {partition} to compare; {} answered ({})",
            answers.len(),
            join(&failures)
        )));
    }
    // Values stamped alike that only their bytes can order (two writers in one microsecond)
    // are read again, side by side, from their replicas: one pair at a time, until every pair
    // the ranking needs is known.
    let mut read_orders: std::collections::HashMap<(usize, usize), std::cmp::Ordering> = Default::default();
    let (winner, same) = loop {
        let mut unknown = None;
        let resolved = compare::resolve(&answers, |i, j| {
            let known =
                read_orders.get(&(i, j)).copied().or_else(|| read_orders.get(&(j, i)).map(|o| o.reverse()));
            known.unwrap_or_else(|| {
                unknown.get_or_insert((i, j));
                std::cmp::Ordering::Equal
            })
        });
        let Some((i, j)) = unknown else { break resolved };
        let ordering = compare_by_bytes(
            frontend,
            routes,
            key,
            (nodes[i], answers[i].value_version()),
            (nodes[j], answers[j].value_version()),
        )
        .await?;
        read_orders.insert((i, j), ordering);
    };
    let behind: Vec<NodeId> =
        nodes.iter().zip(&same).filter(|(_, same)| !**same).map(|(node, _)| *node).collect();
    let newest = answers.swap_remove(winner);
    if !behind.is_empty() && !matches!(newest, Answer::Missing) {
        log::info!("read repair of partition {partition}: nodes {behind:?} were behind");
        repair(frontend, routes, key, nodes[winner], &newest, behind);
    }
    Ok(match newest {
        Answer::Missing => Found::Missing,
        Answer::Whole(Record { timestamp, value: None }) => Found::Tombstone { timestamp },
        Answer::Whole(Record { timestamp, value: Some(value) }) => Found::value(timestamp, value),
        Answer::Streaming { timestamp, length, hash, body } => {
            Found::Value { timestamp, length: Some(length), hash, body }
        }
    })
}

/// The order of two values stamped alike by their bytes, each read again from its replica (the
/// streams already open stay unread, for the answer). 503 if either replica now holds another
/// record: the read is retried by the client.
async fn compare_by_bytes(
    frontend: &Frontend,
    routes: &Arc<Routes>,
    key: &[u8],
    (a_node, a): (NodeId, Option<(u64, u64)>),
    (b_node, b): (NodeId, Option<(u64, u64)>),
) -> Result<std::cmp::Ordering, ApiError> {
    let replicas = &frontend.replicas;
    let body_of = |node: NodeId, expected: Option<(u64, u64)>| async move {
        let changed = || ApiError::Unavailable("a record changed while replicas were compared; retry".into());
        match replicas.read_unleased(routes, node, key).await {
            Ok(Found::Value { timestamp, length: Some(length), body, .. })
                if Some((timestamp, length)) == expected =>
            {
                Ok(body)
            }
            Ok(_) => Err(changed()),
            Err(failure) => Err(ApiError::Unavailable(format!("replicas could not be compared: {failure}"))),
        }
    };
    let (a, b) = tokio::try_join!(body_of(a_node, a), body_of(b_node, b))?;
    crate::compare::compare_bodies(a, b, replicas.stall())
        .await
        .map_err(|e| ApiError::Unavailable(format!("replicas could not be compared: {e}")))
}

/// Sends the newest record, which `winner` holds, to the replicas `behind`, in the background:
/// a whole record as it is, a streaming value by a second read of `winner` streamed on to
/// them in bounded memory. Best effort: anti-entropy repairs whatever this misses.
fn repair(
    frontend: &Frontend,
    routes: &Arc<Routes>,
    key: &[u8],
    winner: NodeId,
    newest: &crate::compare::Answer,
    behind: Vec<NodeId>,
) {
    use futures_util::StreamExt;
    let (replicas, routes, key) = (frontend.replicas.clone(), routes.clone(), Bytes::copy_from_slice(key));
    match newest {
        crate::compare::Answer::Whole(record) => {
            let record = record.clone();
            tokio::spawn(async move {
                replicas.write_all(&routes, &behind, &key, &record, None).await;
            });
        }
        &crate::compare::Answer::Streaming { timestamp, length, .. } => {
            tokio::spawn(async move {
                let body = match replicas.read_unleased(&routes, winner, &key).await {
                    Ok(Found::Value { timestamp: now, body, .. }) if now == timestamp => body,
                    Ok(_) => return, // replaced meanwhile: the newer write reaches them itself
                    Err(failure) => {
                        log::warn!("read repair of a large value: {failure}");
                        return;
                    }
                };
                let chunks = http_body_util::BodyStream::new(body)
                    .filter_map(|frame| async { frame.map(|frame| frame.into_data().ok()).transpose() });
                let (_, results) = replicas
                    .write_streamed(&routes, &behind, &key, (timestamp, length), behind.len(), true, chunks)
                    .await;
                for failure in results.into_iter().filter_map(Result::err) {
                    log::warn!("read repair of a large value: {failure}");
                }
            });
        }
        crate::compare::Answer::Missing => {}
    }
}

async fn set(
    frontend: &Frontend,
    method: &Method,
    query: Option<&str>,
    body: RequestBody,
) -> Result<Response<Body>, ApiError> {
    let query = parse_query(query, &["key", "value", "w"])?;
    let key = key_of(&query, frontend)?;
    let level = level_of(&query, "w", frontend.write_level)?;
    let body = match (query.get("value"), method) {
        (Some(value), method) => {
            // The value must come from one place only.
            let has_body = match body {
                _ if method != Method::POST => false,
                RequestBody::Buffered(bytes) => !bytes.is_empty(),
                RequestBody::Arriving(body) => h::read_body(body, 0).await.is_err(),
            };
            if has_body {
                return Err(ApiError::BadRequest(
                    "the value is given both as `value=` and as the POST body; send one".into(),
                ));
            }
            RequestBody::Buffered(Bytes::copy_from_slice(value))
        }
        (None, &Method::POST) => body,
        (None, _) => {
            return Err(ApiError::BadRequest(
                "missing parameter `value` (or POST the value as the request body)".into(),
            ))
        }
    };
    put_value(frontend, key, level, body).await.map(written)
}

/// Stores the value `body` holds (within `--max-value-bytes`) under `key` at write `level`;
/// the version stored. A large body still arriving is forwarded while it arrives.
pub(crate) async fn put_value(
    frontend: &Frontend,
    key: &[u8],
    level: Level,
    body: RequestBody,
) -> Result<u64, ApiError> {
    let limit = frontend.limits.max_value_bytes;
    let routes = frontend.router.current().ok_or(ApiError::NoMap)?;
    let value = match body {
        RequestBody::Buffered(bytes) if bytes.len() > limit => {
            return Err(too_large_value(Some(bytes.len()), limit))
        }
        RequestBody::Buffered(bytes) => bytes,
        RequestBody::Arriving(body) => {
            let declared = hyper::body::Body::size_hint(&body).exact();
            if let Some(length) = declared.filter(|&n| n >= STREAMED_WRITE_BYTES && n <= limit as u64) {
                return set_streamed(frontend, routes, key, body, length, level).await;
            }
            h::read_body(body, limit).await.map_err(|e| match e {
                ReadBodyError::TooLarge { limit } => too_large_value(None, limit),
                ReadBodyError::Transport(e) => {
                    ApiError::BadRequest(format!("the request body could not be read: {e}"))
                }
            })?
        }
    };
    let record = Record::value(frontend.clock.next(), value);
    write(frontend, routes, key, record, level).await
}

/// A large POSTed value: forwarded to the replicas while it arrives, in bounded memory, so the
/// upload and the transfers to the replicas overlap, the client is paced by the write quorum,
/// and nothing of the value is kept (see [`crate::fanout`]).
///
/// Since the value cannot be sent twice, it is not stamped again when a replica holds a newer
/// write (as [`write`] does). Instead it is stamped, before it is sent, above every version a
/// write quorum of the replicas holds ([`stamp_above_quorum`]): any write acknowledged before
/// this one started is on at least one of them (quorums intersect), so this one wins over it
/// whatever the clocks say. A replica that answers that it holds a newer record can then only
/// hold a concurrent write, which may win either way. The rest is [`write`]'s: a quorum must
/// store it, and replicas that missed it (failed, or cut off for lagging) are fenced. A map
/// change during the write answers 503 (the value is gone; the client may retry).
async fn set_streamed(
    frontend: &Frontend,
    routes: Arc<Routes>,
    key: &[u8],
    body: Incoming,
    length: u64,
    level: Level,
) -> Result<u64, ApiError> {
    use futures_util::StreamExt;
    if let Some(why) = frontend.clock_check.refusal() {
        return Err(ApiError::Unavailable(format!("write refused: {why}")));
    }
    let partition = common::partition::of(key, routes.map.digits);
    let targets: Vec<NodeId> = routes.map.write_set(partition).collect();
    let timestamp = stamp_above_quorum(frontend, &routes, partition, &targets, key, level).await?;
    let chunks = http_body_util::BodyStream::new(body)
        .filter_map(|frame| async { frame.map(|frame| frame.into_data().ok()).transpose() });
    let keep_up = quorum_size(&routes.map, partition, level).min(targets.len());
    let (forwarded, results) = frontend
        .replicas
        .write_streamed(&routes, &targets, key, (timestamp, length), keep_up, false, chunks)
        .await;
    forwarded.map_err(|e| ApiError::BadRequest(format!("the request body could not be read: {e}")))?;
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(Some(newer)) => log::debug!("a concurrent write stamped {newer} wins over {timestamp}"),
            Ok(None) => {}
            Err(failure) => failures.push(failure),
        }
    }
    if failures.iter().any(ReplicaFailure::is_stale_epoch) {
        frontend.refresh_routes(routes.map.epoch).await;
        return Err(ApiError::Unavailable(format!(
            "write not acknowledged: the partition map changed during the write ({}); \
             the write may be visible on some replicas; send it again",
            join(&failures)
        )));
    }
    if let Some(refusal) = failures.iter().find(|f| f.is_clock_refusal()) {
        return Err(ApiError::Unavailable(format!(
            "write not acknowledged: a replica refused its timestamp ({refusal}); check this frontend's clock and the replica's (NTP)"
        )));
    }
    for failure in &failures {
        log::warn!("streamed write of {length} bytes failed on a replica: {failure}");
    }
    acknowledge(frontend, &routes, partition, &targets, &failures, level).await?;
    Ok(timestamp)
}

/// A timestamp for a write to `key` above every version that a write quorum (at `level`) of
/// `targets` holds, and above this frontend's clock; 503 naming the replicas if too few answer.
async fn stamp_above_quorum(
    frontend: &Frontend,
    routes: &Routes,
    partition: u32,
    targets: &[NodeId],
    key: &[u8],
    level: Level,
) -> Result<u64, ApiError> {
    let versions = frontend.replicas.versions(routes, targets, key).await;
    let mut failures = Vec::new();
    let mut answered = Vec::new();
    let mut newest = None;
    for (&node, version) in targets.iter().zip(versions) {
        match version {
            Ok(version) => {
                answered.push(node);
                newest = newest.max(version);
            }
            Err(failure) => failures.push(failure),
        }
    }
    if let Some((count, replicas, required)) =
        short_quorum(&routes.map, partition, level, |node| answered.contains(&node))
    {
        frontend.suspect(&failures);
        return Err(ApiError::Unavailable(format!(
            "write not started: {count} of {replicas} replicas of partition {partition} told the \
             version they hold, w={level} needs {required} ({})",
            join(&failures)
        )));
    }
    Ok(match newest {
        Some(newest) => frontend.clock.next_above(newest),
        None => frontend.clock.next(),
    })
}

/// How many replicas of `partition` a write at `level` needs in its largest quorum set.
fn quorum_size(map: &common::placement::PartitionMap, partition: u32, level: Level) -> usize {
    map.assignment(partition).quorum_sets().map(|set| level.required(set.len())).max().unwrap_or(1)
}

async fn delete(frontend: &Frontend, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let query = parse_query(query, &["key", "w"])?;
    let key = key_of(&query, frontend)?;
    let level = level_of(&query, "w", frontend.write_level)?;
    remove(frontend, key, level).await.map(written)
}

/// Deletes `key` at write `level` (writes a tombstone); the version stored.
pub(crate) async fn remove(frontend: &Frontend, key: &[u8], level: Level) -> Result<u64, ApiError> {
    let routes = frontend.router.current().ok_or(ApiError::NoMap)?;
    let record = Record::tombstone(frontend.clock.next());
    write(frontend, routes, key, record, level).await
}

/// Writes `record` to the live replicas of `key` and succeeds, with the version finally stored,
/// once `level` of them stored it and every live replica that did not is fenced out of reads, so
/// that no read can miss it.
///
/// A replica that holds a different record winning over this one (stamped by a frontend whose
/// clock is ahead of ours, or in the same microsecond) says so; the write is then stamped again
/// above it and sent again, so a write that starts after another was acknowledged always wins
/// over it whatever the clocks say (any write quorum overlaps the earlier one's).
async fn write(
    frontend: &Frontend,
    mut routes: Arc<Routes>,
    key: &[u8],
    mut record: Record,
    level: Level,
) -> Result<u64, ApiError> {
    if let Some(why) = frontend.clock_check.refusal() {
        return Err(ApiError::Unavailable(format!("write refused: {why}")));
    }
    let (mut refreshes, mut restamps) = (0, 0);
    loop {
        let partition = common::partition::of(key, routes.map.digits);
        let targets: Vec<NodeId> = routes.map.write_set(partition).collect();
        let written =
            frontend.replicas.write_all(&routes, &targets, key, &record, Some(routes.map.epoch)).await;
        let failures = &written.failures;
        if failures.iter().any(ReplicaFailure::is_stale_epoch) {
            // A replica has seen a newer map (a node rejoined): route by it and write again.
            if refreshes < MAP_REFRESHES {
                refreshes += 1;
                routes = frontend.refresh_routes(routes.map.epoch).await;
                continue;
            }
            return Err(ApiError::Unavailable(format!(
                "write not acknowledged: the partition map changed and the controller could not be asked for it ({})",
                join(failures)
            )));
        }
        if let Some(refusal) = failures.iter().find(|f| f.is_clock_refusal()) {
            // This frontend's clock is off: fencing the replicas would be wrong, acknowledging
            // the write too.
            return Err(ApiError::Unavailable(format!(
                "write not acknowledged: a replica refused its timestamp ({refusal}); check this frontend's clock and the replica's (NTP)"
            )));
        }
        if let Some(newer) = written.newer.filter(|_| restamps < RESTAMPS) {
            restamps += 1;
            crate::metrics::restamp();
            log::debug!(
                "a replica holds a write stamped {newer}, after this one's {}: stamping again",
                record.timestamp
            );
            record.timestamp = frontend.clock.next_above(newer);
            continue;
        }
        acknowledge(frontend, &routes, partition, &targets, failures, level).await?;
        return Ok(record.timestamp);
    }
}

/// Whether a write that reached `targets` but for `failures` is acknowledged: if `level` of each
/// quorum set stored it and every replica that did not is fenced out of reads; else 503.
async fn acknowledge(
    frontend: &Frontend,
    routes: &Routes,
    partition: u32,
    targets: &[NodeId],
    failures: &[ReplicaFailure],
    level: Level,
) -> Result<(), ApiError> {
    let stored = |node| targets.contains(&node) && !failures.iter().any(|f| f.node == node);
    if let Some((stored_by, replicas, required)) = short_quorum(&routes.map, partition, level, stored) {
        let moving = if routes.map.assignment(partition).is_moving() {
            " (the partition is moving: a write needs a quorum of its old and of its new replicas)"
        } else {
            ""
        };
        let message = format!(
            "write not acknowledged: {stored_by} of {replicas} replicas of partition {partition} stored it, \
             w={level} needs {required}{moving} ({}); the write may be visible on some replicas",
            join(failures)
        );
        let full: Vec<&ReplicaFailure> = failures.iter().filter(|f| f.is_disk_full()).collect();
        let full_ids: Vec<NodeId> = full.iter().map(|f| f.node).collect();
        if short_for_space(&routes.map, partition, level, stored, &full_ids) {
            let named: Vec<String> = full.iter().map(|f| format!("{} ({})", f.node, f.addr)).collect();
            return Err(ApiError::InsufficientStorage(format!(
                "insufficient storage on node {}: {message}",
                named.join(", node ")
            )));
        }
        return Err(ApiError::Unavailable(message));
    }
    let fences = failures.iter().map(|f| frontend.fence(f.node, f.to_string()));
    let unfenced: Vec<String> = futures_util::future::join_all(fences)
        .await
        .into_iter()
        .zip(failures)
        .filter_map(|(result, failure)| result.err().map(|e| format!("node {}: {e}", failure.node)))
        .collect();
    if !unfenced.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "write stored on {} of {} replicas, but replicas that missed it could not be fenced \
             out of reads ({}); the write may be visible on some replicas",
            targets.len() - failures.len(),
            targets.len(),
            unfenced.join("; ")
        )));
    }
    Ok(())
}

/// How many times a write is stamped again when a replica holds a newer write: once suffices
/// for every write acknowledged before this one started; more only for concurrent writers,
/// which may win either way.
const RESTAMPS: usize = 3;

/// How many times a write refetches the map when a replica says it routed by an outdated one.
const MAP_REFRESHES: usize = 3;

/// The first set of `partition` in which a write needs a quorum (its replicas, and while it
/// moves its next replicas too) where fewer than `level` requires `stored` it: how many did, of
/// how many, and how many were needed.
fn short_quorum(
    map: &common::placement::PartitionMap,
    partition: u32,
    level: Level,
    stored: impl Fn(NodeId) -> bool,
) -> Option<(usize, usize, usize)> {
    map.assignment(partition).quorum_sets().find_map(|set| {
        let (count, required) = (set.iter().filter(|&&node| stored(node)).count(), level.required(set.len()));
        (count < required).then_some((count, set.len(), required))
    })
}

/// Whether replicas out of disk space (`full`) are why a write that `stored` reports missed its
/// quorum: it would have met it had they stored it. Then the answer is 507, not 503.
fn short_for_space(
    map: &common::placement::PartitionMap,
    partition: u32,
    level: Level,
    stored: impl Fn(NodeId) -> bool,
    full: &[NodeId],
) -> bool {
    !full.is_empty()
        && short_quorum(map, partition, level, |node| stored(node) || full.contains(&node)).is_none()
}

fn health(frontend: &Frontend) -> Response<Body> {
    match frontend.router.current() {
        Some(routes) => h::text(
            StatusCode::OK,
            format!("ok: map epoch {}, {} storage nodes", routes.map.epoch, routes.map.members.len()),
        ),
        None => ApiError::NoMap.into_response(),
    }
}

fn join(failures: &[ReplicaFailure]) -> String {
    failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_short_of_its_quorum_for_want_of_disk_space_is_507() {
        use common::placement::{Member, PartitionMap};
        let members = (1..=3).map(|id| Member::up(id, format!("s{id}:1"))).collect();
        let map = PartitionMap::build(5, members, 3).unwrap();
        // The level, the replicas that stored the write, those out of space (the rest failed
        // otherwise), and whether the space is why the write missed its quorum.
        let cases: &[(Level, &[NodeId], &[NodeId], bool)] = &[
            (Level::Quorum, &[1], &[2], true),
            (Level::Quorum, &[], &[1, 2], true),
            (Level::Quorum, &[], &[1, 2, 3], true),
            (Level::Quorum, &[], &[1], false),
            (Level::Quorum, &[1], &[], false),
            (Level::All, &[1, 2], &[3], true),
            (Level::All, &[1], &[3], false),
            (Level::One, &[], &[2], true),
            (Level::One, &[], &[], false),
        ];
        for &(level, stored, full, expected) in cases {
            let decided = short_for_space(&map, 0, level, |node| stored.contains(&node), full);
            assert_eq!(decided, expected, "w={level}: stored on {stored:?}, full {full:?}");
        }
    }

    #[test]
    fn if_none_match_names_versions_strongly_weakly_or_all() {
        let cases: &[(&[u8], bool)] = &[
            (b"\"42\"", true),
            (b"W/\"42\"", true),
            (b"\"7\", \"42\"", true),
            (b"*", true),
            (b"\"43\"", false),
            (b"42", false),
            (b"", false),
        ];
        for (header, hit) in cases {
            assert_eq!(none_match_hits(header, 42), *hit, "{:?}", String::from_utf8_lossy(header));
        }
    }

    #[test]
    fn reads_carry_their_version() {
        let value = Found::value(42, Bytes::from_static(b"ab"));
        let response = found_response(value, Conditions::default(), false);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            (response.headers()["etag"].as_bytes(), response.headers()[VERSION].as_bytes()),
            (&b"\"42\""[..], &b"42"[..])
        );
        let value = Found::value(42, Bytes::from_static(b"ab"));
        let cached = found_response(value, Conditions { if_none_match: Some(b"\"42\"") }, false);
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        let deleted = found_response(Found::Tombstone { timestamp: 50 }, Conditions::default(), false);
        assert_eq!(
            (deleted.status(), deleted.headers()[VERSION].as_bytes()),
            (StatusCode::NOT_FOUND, &b"50"[..])
        );
        assert!(deleted.headers().get("etag").is_none());
        let missing = found_response(Found::Missing, Conditions::default(), false);
        assert!(missing.headers().get(VERSION).is_none());
    }
}
