//! Calls from a frontend to the storage nodes holding a key: write to every replica in parallel,
//! read from one and fall back to the next, or read several and compare. Every call has a
//! deadline, so a dead or hung node costs a bounded delay: a buffered call's grows with the size
//! of the value; a streamed one has a deadline for its head (a read) or its answer once the
//! value is sent (a write), and fails in between if the replica sends (or takes) nothing for
//! [`MIN_STALL`] (or the replica timeout if longer), however long a large value takes to flow.

use crate::batcher::Batchers;
use crate::routing::Routes;
use bytes::Bytes;
use common::batch::{Op, Outcome};
use common::http::{self as h, Body, Client, RpcError};
use common::placement::NodeId;
use common::proto;
use common::version::Record;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::time::Duration;

/// Bodies up to this size are read whole before answering, so a replica that fails mid-body
/// can be replaced by the next; larger ones are streamed straight through to the client.
pub const BUFFERED_READ_BYTES: u64 = 1 << 20;
/// Written values at least this large are forwarded to the replicas while they arrive from the
/// client (see [`Replicas::write_streamed`]); smaller ones are read whole first.
pub const STREAMED_WRITE_BYTES: u64 = 1 << 20;
/// The slowest transfer rate a healthy node is allowed: a call's deadline grows by one second
/// for every this many bytes of value.
pub const MIN_TRANSFER_BYTES_PER_SEC: u64 = 20 << 20;
/// The least time a replica may send or take nothing in the middle of a streamed value before
/// its call fails (the replica timeout if longer).
pub const MIN_STALL: Duration = Duration::from_secs(2);
/// The overall deadline of a call bounded otherwise (by a watchdog).
const UNBOUNDED: Duration = Duration::from_secs(7 * 24 * 3600);

/// A replica's answer to a record write: on 200 stored, with the timestamp of a different record
/// it holds that wins over the write if there is one; otherwise its status and message.
fn stored(answer: Result<(http::response::Parts, Bytes), RpcError>) -> Result<Option<u64>, RpcError> {
    match answer? {
        (parts, _) if parts.status == StatusCode::OK => {
            Ok(parts.headers.get(proto::NEWER).and_then(|v| v.to_str().ok()?.parse().ok()))
        }
        (parts, message) => Err(RpcError::Status {
            status: parts.status,
            message: String::from_utf8_lossy(&message).trim().to_owned(),
        }),
    }
}

/// What became of a write sent to several replicas.
#[derive(Debug, Default)]
pub struct Written {
    /// Replicas that hold the write, or a record that wins over it, durably.
    pub acked: usize,
    pub failures: Vec<ReplicaFailure>,
    /// The newest timestamp of a different record that a replica holds and that wins over the
    /// write, if any replica said so.
    pub newer: Option<u64>,
}

/// Talks to storage nodes on behalf of one frontend.
#[derive(Debug, Clone)]
pub struct Replicas {
    client: Client,
    timeout: Duration,
    batchers: std::sync::Arc<Batchers>,
}

/// A request for `key`'s record on `node`, outside a batch: the key escaped into the URL, or,
/// when that would not fit in a URL, into the [`proto::KEY`] header.
fn record_request(routes: &Routes, node: NodeId, key: &[u8], method: http::Method) -> http::request::Builder {
    let escaped = common::query::encode(key);
    let prefix = routes.record_url(node);
    if escaped.len() <= proto::URL_KEY_BYTES {
        return Request::builder().method(method).uri(format!("{prefix}{escaped}"));
    }
    let url = prefix.strip_suffix("?key=").unwrap_or(prefix);
    Request::builder().method(method).uri(url).header(proto::KEY, escaped)
}

/// `request` (a record read) turned into a watch: `newer_than` and `wait_ms` appended to its URI.
fn watch_uri(request: http::request::Builder, newer_than: u64, wait: Duration) -> http::request::Builder {
    let uri = request.uri_ref().map(|u| u.to_string()).unwrap_or_default();
    let separator = if uri.contains('?') { '&' } else { '?' };
    request.uri(format!("{uri}{separator}newer_than={newer_than}&wait_ms={}", wait.as_millis()))
}

/// A replica that did not do what was asked, and why.
#[derive(Debug)]
pub struct ReplicaFailure {
    pub node: NodeId,
    pub addr: String,
    pub error: RpcError,
}

impl ReplicaFailure {
    /// The replica is alive but holds no read lease (or is not up).
    pub fn is_not_serving(&self) -> bool {
        matches!(&self.error, RpcError::Status { status, .. } if *status == StatusCode::SERVICE_UNAVAILABLE)
    }

    /// The replica refused the write because its timestamp is too far ahead of the replica's
    /// clock (this frontend's clock is wrong): nothing was stored, and nothing must be fenced.
    pub fn is_clock_refusal(&self) -> bool {
        matches!(&self.error, RpcError::Status { status, .. } if *status == StatusCode::UNPROCESSABLE_ENTITY)
    }

    /// The replica refused the write because its free disk space is below its floor: it is
    /// alive and stored nothing.
    pub fn is_disk_full(&self) -> bool {
        matches!(&self.error, RpcError::Status { status, .. } if *status == StatusCode::INSUFFICIENT_STORAGE)
    }

    /// The replica refused the write because it was routed by an outdated map.
    pub fn is_stale_epoch(&self) -> bool {
        matches!(&self.error, RpcError::Status { status, .. } if *status == StatusCode::CONFLICT)
    }
}

impl std::fmt::Display for ReplicaFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} at {}: {}", self.node, self.addr, self.error)
    }
}

/// What a read found on one replica.
pub enum Found {
    /// A live value (body streamed or buffered); `hash`: the replica's hash of a value kept
    /// in a file (see `common::proto::VALUE_HASH`).
    Value { timestamp: u64, length: Option<u64>, hash: Option<u128>, body: Body },
    /// The key was deleted.
    Tombstone { timestamp: u64 },
    /// The replica holds nothing for the key.
    Missing,
}

impl Found {
    /// A value read whole.
    pub fn value(timestamp: u64, value: Bytes) -> Self {
        Found::Value { timestamp, length: Some(value.len() as u64), hash: None, body: h::full(value) }
    }
}

impl Replicas {
    pub fn new(client: Client, timeout: Duration) -> Self {
        Self { client, timeout, batchers: Default::default() }
    }

    /// Sends `op` in the next batch of the node's read or write queue.
    async fn batched(&self, routes: &Routes, node: NodeId, op: Op) -> Result<Outcome, RpcError> {
        let lookup = || self.batchers.of(&self.client, routes.addr(node), self.timeout);
        let queues = routes.queues(node, lookup).ok_or_else(|| {
            RpcError::Connect(format!("node {node} is not in map epoch {}", routes.map.epoch))
        })?;
        match op {
            Op::Get { .. } => queues.reads.call(op).await,
            Op::Put { .. } => queues.writes.call(op).await,
        }
    }

    /// A batched read's outcome as a [`Found`]; `None` if the value must be read on its own.
    fn found(outcome: Outcome) -> Result<Option<Found>, RpcError> {
        match outcome {
            Outcome::Found(Record { timestamp, value: None }) => Ok(Some(Found::Tombstone { timestamp })),
            Outcome::Found(Record { timestamp, value: Some(value) }) => {
                Ok(Some(Found::value(timestamp, value)))
            }
            Outcome::Missing => Ok(Some(Found::Missing)),
            Outcome::TooLarge => Ok(None),
            Outcome::NotServing(message) => {
                Err(RpcError::Status { status: StatusCode::SERVICE_UNAVAILABLE, message })
            }
            Outcome::Failed(message) => {
                Err(RpcError::Status { status: StatusCode::INTERNAL_SERVER_ERROR, message })
            }
            other => Err(RpcError::Protocol(format!("unexpected outcome of a read: {other:?}"))),
        }
    }

    fn deadline_for(&self, bytes: u64) -> Duration {
        self.timeout + Duration::from_secs_f64(bytes as f64 / MIN_TRANSFER_BYTES_PER_SEC as f64)
    }

    /// Sends `record` for `key` to every node in `replicas` at once, marked with the map epoch
    /// it was routed by (`None`: a repair, never refused as stale).
    pub async fn write_all(
        &self,
        routes: &Routes,
        replicas: &[NodeId],
        key: &[u8],
        record: &Record,
        epoch: Option<u64>,
    ) -> Written {
        let body = record.value.clone().unwrap_or_default();
        let deadline = self.deadline_for(body.len() as u64);
        let batchable = crate::batcher::fits(key, record.value.as_ref());
        let shared_key = Bytes::copy_from_slice(key);
        let calls = replicas.iter().map(|&node| {
            let body = body.clone();
            let shared_key = shared_key.clone();
            async move {
                if batchable {
                    let op = Op::Put { key: shared_key, record: record.clone(), epoch };
                    let result = match self.batched(routes, node, op).await {
                        Ok(Outcome::Stored) => Ok(None),
                        Ok(Outcome::Superseded { by }) => Ok(Some(by)),
                        Ok(Outcome::StaleEpoch { needed }) => Err(RpcError::Status {
                            status: StatusCode::CONFLICT,
                            message: format!("stale map: the partition needs epoch {needed} or newer"),
                        }),
                        Ok(Outcome::Failed(message)) => {
                            Err(RpcError::Status { status: StatusCode::INTERNAL_SERVER_ERROR, message })
                        }
                        Ok(Outcome::FutureTimestamp(message)) => {
                            Err(RpcError::Status { status: StatusCode::UNPROCESSABLE_ENTITY, message })
                        }
                        Ok(Outcome::DiskFull(message)) => {
                            Err(RpcError::Status { status: StatusCode::INSUFFICIENT_STORAGE, message })
                        }
                        Ok(other) => {
                            Err(RpcError::Protocol(format!("unexpected outcome of a write: {other:?}")))
                        }
                        Err(e) => Err(e),
                    };
                    return result.map_err(|error| ReplicaFailure {
                        node,
                        addr: routes.addr(node).to_owned(),
                        error,
                    });
                }
                let make = || {
                    let mut request = record_request(routes, node, key, http::Method::PUT)
                        .header(proto::TIMESTAMP, record.timestamp);
                    if record.is_tombstone() {
                        request = request.header(proto::TOMBSTONE, "1");
                    }
                    if let Some(epoch) = epoch {
                        request = request.header(proto::EPOCH, epoch);
                    }
                    request.body(Full::new(body.clone())).expect("valid request")
                };
                stored(self.client.send_collect(make, deadline).await).map_err(|error| ReplicaFailure {
                    node,
                    addr: routes.addr(node).to_owned(),
                    error,
                })
            }
        });
        let mut written = Written::default();
        for (&node, result) in replicas.iter().zip(futures_util::future::join_all(calls).await) {
            let outcome = match &result {
                Ok(newer) => Ok(if newer.is_some() { "superseded" } else { "stored" }),
                Err(failure) => Err(&failure.error),
            };
            crate::metrics::replica_call(node, "write", outcome);
            match result {
                Ok(newer) => {
                    written.acked += 1;
                    written.newer = written.newer.max(newer);
                }
                Err(failure) => {
                    if !failure.is_stale_epoch() {
                        log::warn!("replica write failed: {failure}");
                    }
                    written.failures.push(failure);
                }
            }
        }
        written
    }

    /// Sends a value of `length` bytes for `key`, stamped `timestamp`, to every node in
    /// `replicas` while it arrives, in bounded memory at the pace of the `keep_up` fastest of
    /// them (see [`crate::fanout`]); each replica's result (as for `stored`). `Err` if `chunks`
    /// failed, in which case every replica's request was aborted and none stored anything.
    /// Nothing of the value is kept: it cannot be sent again.
    /// `repair`: the write repairs replicas found behind (sent without the map's epoch, so it
    /// is not refused as stale or as stamped too far behind).
    #[allow(clippy::too_many_arguments)]
    pub async fn write_streamed<E: std::fmt::Display>(
        &self,
        routes: &Routes,
        replicas: &[NodeId],
        key: &[u8],
        (timestamp, length): (u64, u64),
        keep_up: usize,
        repair: bool,
        chunks: impl futures_util::Stream<Item = Result<Bytes, E>>,
    ) -> (Result<(), String>, Vec<Result<Option<u64>, ReplicaFailure>>) {
        use http_body_util::BodyExt;
        let (mut fanout, bodies) = crate::fanout::Fanout::new(replicas.len(), length, keep_up);
        let calls = replicas.iter().zip(bodies).map(|(&node, body)| {
            let lane = body.lane();
            let mut request = record_request(routes, node, key, http::Method::PUT)
                .header(proto::TIMESTAMP, timestamp)
                .header(http::header::CONTENT_LENGTH, length);
            if !repair {
                request = request.header(proto::EPOCH, routes.map.epoch);
            }
            let request = request.body(body.boxed_unsync()).expect("valid request");
            async move {
                // The watchdog bounds the call: a replica that stalls, or does not answer in
                // time once it has the value; the body's own pace is the client's.
                let answer = tokio::select! {
                    answer = self.client.send_streamed(request, UNBOUNDED) => answer,
                    failed = crate::fanout::watchdog(&lane, self.stall(), self.deadline_for(length)) => Err(failed),
                };
                let error = |error| match lane.cut_reason() {
                    Some(why) => RpcError::Transport(why),
                    None => error,
                };
                stored(answer.map_err(error))
                    .map_err(|error| ReplicaFailure { node, addr: routes.addr(node).to_owned(), error })
            }
        });
        tokio::join!(fanout.forward(chunks), futures_util::future::join_all(calls))
    }

    /// How long a replica may send or take nothing in the middle of a value's body.
    pub fn stall(&self) -> Duration {
        self.timeout.max(MIN_STALL)
    }

    /// The timestamps of the records `replicas` hold for `key` (`None`: nothing), read without
    /// their values and without leases: what a streamed write must be stamped above.
    pub async fn versions(
        &self,
        routes: &Routes,
        replicas: &[NodeId],
        key: &[u8],
    ) -> Vec<Result<Option<u64>, ReplicaFailure>> {
        let heads = replicas.iter().map(|&node| async move {
            let make = || {
                record_request(routes, node, key, http::Method::HEAD)
                    .header(proto::UNLEASED, "1")
                    .body(Full::new(Bytes::new()))
                    .expect("valid request")
            };
            let answer = self.client.send_collect(make, self.timeout).await;
            let result = match answer {
                Ok((parts, _)) if parts.status == StatusCode::NOT_FOUND => Ok(None),
                Ok((parts, _)) if parts.status == StatusCode::OK => parts
                    .headers
                    .get(proto::TIMESTAMP)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .map(Some)
                    .ok_or_else(|| {
                        RpcError::Protocol(format!("record without a `{}` header", proto::TIMESTAMP))
                    }),
                Ok((parts, _)) => Err(RpcError::Status { status: parts.status, message: String::new() }),
                Err(e) => Err(e),
            };
            crate::metrics::replica_call(node, "version", result.as_ref().map(|_| "answered"));
            result.map_err(|error| ReplicaFailure { node, addr: routes.addr(node).to_owned(), error })
        });
        futures_util::future::join_all(heads).await
    }

    /// Reads `key` from the first of `order` that answers; the failures of those that did not.
    pub async fn read_first(
        &self,
        routes: &Routes,
        order: &[NodeId],
        key: &[u8],
    ) -> Result<Found, Vec<ReplicaFailure>> {
        let mut failures = Vec::new();
        for &node in order {
            let result = self.read_maybe_batched(routes, node, key, false).await;
            crate::metrics::replica_call(node, "read", result.as_ref().map(|_| "answered"));
            match result {
                Ok(found) => return Ok(found),
                Err(error) => {
                    let failure = ReplicaFailure { node, addr: routes.addr(node).to_owned(), error };
                    log::debug!("replica read failed, trying the next replica: {failure}");
                    failures.push(failure);
                }
            }
        }
        Err(failures)
    }

    /// Reads the record of `key` from `node`, whether or not the node holds a read lease: for
    /// callers that compare several replicas. A large value comes as a stream, unread.
    pub async fn read_unleased(
        &self,
        routes: &Routes,
        node: NodeId,
        key: &[u8],
    ) -> Result<Found, ReplicaFailure> {
        let result = self.read_maybe_batched(routes, node, key, true).await;
        crate::metrics::replica_call(node, "read", result.as_ref().map(|_| "answered"));
        result.map_err(|error| ReplicaFailure { node, addr: routes.addr(node).to_owned(), error })
    }

    /// A value's bytes from a [`Found::Value`] body of at most `BUFFERED_READ_BYTES` (already
    /// in memory, or close to it).
    pub async fn collect(&self, body: Body) -> Result<Bytes, RpcError> {
        let deadline = self.deadline_for(BUFFERED_READ_BYTES);
        Ok(tokio::time::timeout(deadline, http_body_util::BodyExt::collect(body))
            .await
            .map_err(|_| RpcError::Timeout(deadline))?
            .map_err(|e| RpcError::Transport(e.to_string()))?
            .to_bytes())
    }

    /// Reads through the node's read batch when the key is small, falling back to a request of
    /// its own for values too large for a batch.
    async fn read_maybe_batched(
        &self,
        routes: &Routes,
        node: NodeId,
        key: &[u8],
        unleased: bool,
    ) -> Result<Found, RpcError> {
        if crate::batcher::fits(key, None) {
            let op = Op::Get { key: Bytes::copy_from_slice(key), leased: !unleased };
            if let Some(found) = Self::found(self.batched(routes, node, op).await?)? {
                return Ok(found);
            }
        }
        self.read_one(routes, node, key, unleased).await
    }

    async fn read_one(
        &self,
        routes: &Routes,
        node: NodeId,
        key: &[u8],
        unleased: bool,
    ) -> Result<Found, RpcError> {
        let read = self.record_call(routes, node, key, unleased, None, self.timeout).await?;
        read.ok_or_else(|| RpcError::Protocol("304 to a read".into()))
    }

    /// Watches `key` on `node` (see `common::proto`, `GET /v1/record` with `wait_ms`): the
    /// record once the node holds one stamped after `newer_than`, `None` if `wait` passed
    /// without one.
    pub async fn watch_one(
        &self,
        routes: &Routes,
        node: NodeId,
        key: &[u8],
        newer_than: u64,
        wait: Duration,
    ) -> Result<Option<Found>, RpcError> {
        let watch = Some((newer_than, wait));
        let result = self.record_call(routes, node, key, false, watch, wait + self.timeout).await;
        crate::metrics::replica_call(node, "watch", result.as_ref().map(|_| "answered"));
        result
    }

    /// A record read outside a batch (a watch with `watch`): `None` for a 304.
    async fn record_call(
        &self,
        routes: &Routes,
        node: NodeId,
        key: &[u8],
        unleased: bool,
        watch: Option<(u64, Duration)>,
        deadline: Duration,
    ) -> Result<Option<Found>, RpcError> {
        let make = || {
            let mut request = record_request(routes, node, key, http::Method::GET);
            if let Some((newer_than, wait)) = watch {
                request = watch_uri(request, newer_than, wait);
            }
            if unleased {
                request = request.header(proto::UNLEASED, "1");
            }
            request.body(Full::new(Bytes::new())).expect("valid request")
        };
        let response = self.client.send(make, deadline).await?;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if status == StatusCode::NOT_FOUND {
            return Ok(Some(Found::Missing));
        }
        self.answered_record(response).await.map(Some)
    }

    /// The record in a 200 answer to a record read (or the error another status means).
    async fn answered_record(
        &self,
        response: http::Response<hyper::body::Incoming>,
    ) -> Result<Found, RpcError> {
        let status = response.status();
        let headers = response.headers();
        let timestamp = headers.get(proto::TIMESTAMP).and_then(|v| v.to_str().ok()?.parse().ok());
        let tombstone = headers.get(proto::TOMBSTONE).is_some_and(|v| v == "1");
        let length =
            headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let hash =
            headers.get(proto::VALUE_HASH).and_then(|v| u128::from_str_radix(v.to_str().ok()?, 16).ok());
        if status != StatusCode::OK {
            let (_, body) = response.into_parts();
            let message = tokio::time::timeout(self.timeout, http_body_util::BodyExt::collect(body))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
                .unwrap_or_default();
            return Err(RpcError::Status { status, message });
        }
        let Some(timestamp) = timestamp else {
            return Err(RpcError::Protocol(format!("record without a `{}` header", proto::TIMESTAMP)));
        };
        if tombstone {
            return Ok(Found::Tombstone { timestamp });
        }
        let body = match length {
            // Streamed: the head came within the call's deadline; from here the replica may not
            // stall, however long the value takes to flow.
            Some(n) if n > BUFFERED_READ_BYTES => h::stream_with_stall(response.into_body(), self.stall()),
            _ => {
                let deadline = self.deadline_for(length.unwrap_or(0));
                let bytes =
                    tokio::time::timeout(deadline, http_body_util::BodyExt::collect(response.into_body()))
                        .await
                        .map_err(|_| RpcError::Timeout(deadline))?
                        .map_err(|e| RpcError::Transport(h::error_chain(&e)))?
                        .to_bytes();
                h::full(bytes)
            }
        };
        Ok(Found::Value { timestamp, length, hash, body })
    }
}
