//! A Rust client for Velour Fog: `get`, `set`, `delete` and key listings ([`Client::list`],
//! [`Client::keys`]) over any number of frontends.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = client::Client::new(["10.0.0.5:8000", "10.0.0.6:8000"])?;
//! client.set("greeting", "hello").await?;
//! assert_eq!(client.get("greeting").await?.as_deref(), Some(&b"hello"[..]));
//! client.with_write_level(client::Level::All).delete("greeting").await?;
//! assert_eq!(client.get("greeting").await?, None);
//! # Ok(()) }
//! ```
//!
//! What it guarantees:
//! - **Every call is bounded in time**: by [`Policy::deadline`] (30 s) in all, and each attempt
//!   by [`Policy::attempt_timeout`] (5 s), both lengthened by [`Policy::per_mib`] per MiB of a
//!   value of known size. A value read as a stream ([`Client::get_stream`]) has that deadline
//!   until its first byte and then the attempt timeout for each chunk.
//! - **Load is spread and failures are routed around**: each call starts at the next frontend
//!   in turn; a connection that cannot be made or breaks, an attempt without an answer in
//!   time, and any 5xx (503: the frontend has no map yet or too few replicas answered) send
//!   the call on to the next frontend, and that frontend is tried last by later calls for
//!   [`Policy::suspicion`]. Once every frontend has been tried, attempts back off
//!   exponentially; there are at most [`Policy::retries`] retries ([`retry`]).
//! - **Only what is safe is retried**: gets and deletes are idempotent. A set is retried
//!   too, so a set whose first attempt was stored but whose answer was lost is stored again:
//!   the same value with a later timestamp, which readers cannot tell apart (last write wins).
//!   Against another writer of the same key the call is simply concurrent with it, and either
//!   value may win, as with any two concurrent sets. A 4xx is the request's fault and is
//!   returned at once ([`Error::BadRequest`]).
//! - **Streamed values are never sent twice**: [`Client::set_stream`] reads the caller's
//!   stream once, without keeping a copy, so it goes to another frontend only if the failed
//!   attempt took not one chunk of it (the connection was refused, say); after that a failure
//!   is returned ([`Error::Transport`] or [`Error::Unavailable`]) and the value may or may not
//!   have been stored. Values of 1 MiB or more with a declared length are forwarded by the
//!   frontend to the replicas while they arrive.
//! - **A missing key is an answer, not an error**: [`Client::get`] returns `Ok(None)`.
//! - **Listings go page by page**: each page is one call, retried like a get; the cursor
//!   between pages is valid on any frontend (see [`Client::pages`]).
//!
//! Consistency levels ([`Level`]) are per request: [`Client::with_read_level`] and
//! [`Client::with_write_level`] give a handle on the same connections whose calls carry them;
//! without one, each frontend's default applies (`r=one`, `w=quorum` unless configured).

mod body;
mod call;
pub mod endpoint;
mod error;
mod list;
pub mod retry;

pub use body::{ChunkStream, ValueStream};
pub use endpoint::{parse_list, BadEndpoint, Endpoint};
pub use error::Error;
pub use list::KeyPage;
pub use retry::Policy;

use body::{RequestBody, SharedStream};
use bytes::Bytes;
use call::{Failure, Payload, Reply};
use futures_util::Stream;
use http::{Method, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client as Pool};
use hyper_util::rt::TokioExecutor;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a connection to a frontend may take before the attempt counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The most of an error answer's body kept for the message.
const MAX_MESSAGE_BYTES: usize = 4 << 10;

/// How many replicas a read compares (`r=`) or a write must reach (`w=`), of a key's K.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    One,
    Quorum,
    All,
}

impl Level {
    /// The name the API uses: `one`, `quorum`, `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::One => "one",
            Level::Quorum => "quorum",
            Level::All => "all",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "one" => Ok(Level::One),
            "quorum" => Ok(Level::Quorum),
            "all" => Ok(Level::All),
            _ => Err(format!("`{s}` is not a consistency level (one, quorum, all)")),
        }
    }
}

/// Counters of a client's calls, for monitoring and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls made.
    pub calls: u64,
    /// Attempts after a call's first (each a failover or a retry).
    pub retries: u64,
    /// Calls that returned an error.
    pub failures: u64,
}

/// Configures a [`Client`]; from [`Client::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    frontends: Vec<Endpoint>,
    policy: Policy,
    connect_timeout: Duration,
    read_level: Option<Level>,
    write_level: Option<Level>,
}

impl Builder {
    /// The whole retry and deadline policy at once.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Attempts after the first [default: 6].
    pub fn retries(mut self, retries: u32) -> Self {
        self.policy.retries = retries;
        self
    }

    /// The first backoff and the longest [default: 50 ms doubling up to 1 s].
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        (self.policy.backoff, self.policy.max_backoff) = (first, max);
        self
    }

    /// The most one call may take, retries included [default: 30 s, plus 125 ms per MiB].
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.policy.deadline = deadline;
        self
    }

    /// The most one attempt may wait for its answer [default: 5 s, plus 125 ms per MiB].
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.policy.attempt_timeout = timeout;
        self
    }

    /// The most a TCP connection may take [default: [`CONNECT_TIMEOUT`]].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The read level of every get [default: the frontend's].
    pub fn read_level(mut self, level: Level) -> Self {
        self.read_level = Some(level);
        self
    }

    /// The write level of every set and delete [default: the frontend's].
    pub fn write_level(mut self, level: Level) -> Self {
        self.write_level = Some(level);
        self
    }

    /// The client. Calls must run inside a Tokio runtime; building does not need one.
    pub fn build(self) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(self.connect_timeout));
        let pool = Pool::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        let names = self.frontends.iter().map(Endpoint::to_string).collect();
        let suspect_until = self.frontends.iter().map(|_| AtomicU64::new(0)).collect();
        let shared = Shared {
            frontends: self.frontends,
            names,
            suspect_until,
            epoch: Instant::now(),
            next: AtomicUsize::new(0),
            pool,
            policy: self.policy,
            calls: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        };
        Client { shared: Arc::new(shared), read_level: self.read_level, write_level: self.write_level }
    }
}

/// A client of a Velour Fog cluster through its frontends. Cheap to clone (clones share the
/// connection pool and the failover state).
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    read_level: Option<Level>,
    write_level: Option<Level>,
}

struct Shared {
    frontends: Vec<Endpoint>,
    /// `http://host:port[/prefix]` of each, for messages.
    names: Vec<String>,
    /// Until when (ms after `epoch`) each frontend is tried last.
    suspect_until: Vec<AtomicU64>,
    epoch: Instant,
    /// Where the next call starts.
    next: AtomicUsize,
    pool: Pool<HttpConnector, RequestBody>,
    policy: Policy,
    calls: AtomicU64,
    retries: AtomicU64,
    failures: AtomicU64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("frontends", &self.shared.names)
            .field("policy", &self.shared.policy)
            .field("read_level", &self.read_level)
            .field("write_level", &self.write_level)
            .finish()
    }
}

impl Client {
    /// A client of `frontends` (each `host:port` or `http://host:port[/prefix]`) with the
    /// default [`Policy`].
    pub fn new<I>(frontends: I) -> Result<Self, BadEndpoint>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Ok(Self::builder(frontends)?.build())
    }

    /// A builder for a client of `frontends` (see [`Client::new`]); there must be at least one.
    pub fn builder<I>(frontends: I) -> Result<Builder, BadEndpoint>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let frontends =
            frontends.into_iter().map(|f| f.as_ref().parse()).collect::<Result<Vec<Endpoint>, _>>()?;
        if frontends.is_empty() {
            return Err(BadEndpoint { input: String::new(), reason: "no frontend given".to_owned() });
        }
        Ok(Builder {
            frontends,
            policy: Policy::default(),
            connect_timeout: CONNECT_TIMEOUT,
            read_level: None,
            write_level: None,
        })
    }

    /// The frontends, in the order given.
    pub fn frontends(&self) -> &[Endpoint] {
        &self.shared.frontends
    }

    /// The retry and deadline policy.
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// A handle on the same connections whose gets read at `level`.
    pub fn with_read_level(&self, level: Level) -> Self {
        Self { read_level: Some(level), ..self.clone() }
    }

    /// A handle on the same connections whose sets and deletes write at `level`.
    pub fn with_write_level(&self, level: Level) -> Self {
        Self { write_level: Some(level), ..self.clone() }
    }

    /// Counters of every call made through this client and its clones.
    pub fn stats(&self) -> Stats {
        let shared = &self.shared;
        Stats {
            calls: shared.calls.load(Ordering::Relaxed),
            retries: shared.retries.load(Ordering::Relaxed),
            failures: shared.failures.load(Ordering::Relaxed),
        }
    }

    /// The value of `key`, or `None` if it has none (never set, or deleted).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, Error> {
        let path = path("get", key.as_ref(), "r", self.read_level);
        self.call(Method::GET, &path, Payload::Empty, |reply: Reply| async move {
            match reply.status {
                StatusCode::NOT_FOUND => not_found(reply).await,
                _ => reply.collect().await.map(Some),
            }
        })
        .await
    }

    /// The value of `key` as it arrives, for values too large to hold twice; `None` if it has
    /// none. The call is retried until the value starts arriving, not after.
    pub async fn get_stream(&self, key: impl AsRef<[u8]>) -> Result<Option<ValueStream>, Error> {
        let path = path("get", key.as_ref(), "r", self.read_level);
        let idle = self.shared.policy.attempt_timeout;
        self.call(Method::GET, &path, Payload::Empty, |reply: Reply| async move {
            match reply.status {
                StatusCode::NOT_FOUND => not_found(reply).await,
                _ => Ok(Some(ValueStream::new(reply.body, reply.length, reply.frontend, idle))),
            }
        })
        .await
    }

    /// Sets `key` to `value` (sent as the request body, so any size up to the frontends'
    /// limit, 128 MiB by default).
    pub async fn set(&self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Result<(), Error> {
        let path = path("set", key.as_ref(), "w", self.write_level);
        self.call(Method::POST, &path, Payload::Bytes(value.into()), acknowledged).await
    }

    /// Sets `key` to the bytes of `chunks`, sent while they are produced, without a copy kept.
    /// With `length` (which the chunks must then add up to exactly) the frontend streams a
    /// value of 1 MiB or more on to the replicas while it arrives, and the call's deadline
    /// grows with it; without, the body is chunked. Tried on another frontend only while not
    /// one chunk has been sent (see the crate docs).
    pub async fn set_stream<S>(
        &self,
        key: impl AsRef<[u8]>,
        length: Option<u64>,
        chunks: S,
    ) -> Result<(), Error>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let path = path("set", key.as_ref(), "w", self.write_level);
        let payload = Payload::Stream(SharedStream::new(length, Box::pin(chunks)));
        self.call(Method::POST, &path, payload, acknowledged).await
    }

    /// [`Client::set_stream`] with the bytes of `reader`, read in chunks of up to 256 KiB.
    ///
    /// ```no_run
    /// # async fn example(client: client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let file = tokio::fs::File::open("photo.jpg").await?;
    /// let length = file.metadata().await?.len();
    /// client.set_reader("photo", Some(length), file).await?;
    /// let mut photo = client.get_stream("photo").await?.expect("stored");
    /// while let Some(chunk) = photo.chunk().await? {
    ///     println!("{} bytes", chunk.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn set_reader<R>(
        &self,
        key: impl AsRef<[u8]>,
        length: Option<u64>,
        reader: R,
    ) -> Result<(), Error>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
    {
        self.set_stream(key, length, reader_chunks(reader, 256 << 10)).await
    }

    /// Deletes `key` (a later get answers `None`). Deleting a missing key succeeds.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<(), Error> {
        let path = path("delete", key.as_ref(), "w", self.write_level);
        self.call(Method::DELETE, &path, Payload::Empty, acknowledged).await
    }
}

/// `/{endpoint}/?key=K[&{level_name}=L]`.
fn path(endpoint: &str, key: &[u8], level_name: &str, level: Option<Level>) -> String {
    let mut path = String::with_capacity(endpoint.len() + key.len() + 24);
    path.push('/');
    path.push_str(endpoint);
    path.push_str("/?key=");
    common::query::encode_into(key, &mut path);
    if let Some(level) = level {
        path.push('&');
        path.push_str(level_name);
        path.push('=');
        path.push_str(level.as_str());
    }
    path
}

/// A write's answer: 200 `ok` once the write was acknowledged.
async fn acknowledged(reply: Reply) -> Result<(), Failure> {
    match reply.status {
        StatusCode::NOT_FOUND => Err(reply.not_a_frontend().await),
        _ => reply.collect().await.map(drop),
    }
}

/// A get's 404: a missing key, or a server that is not a frontend.
async fn not_found<T>(reply: Reply) -> Result<Option<T>, Failure> {
    // Read the body before deciding: "key not found" is what a frontend says.
    let deadline = reply.body_deadline;
    let (frontend, body) = (reply.frontend, reply.body);
    let text = match tokio::time::timeout_at(deadline, http_body_util::BodyExt::collect(body)).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ => Bytes::new(),
    };
    if text.trim_ascii() == b"key not found" {
        return Ok(None);
    }
    let message = String::from_utf8_lossy(text.trim_ascii()).into_owned();
    Err(Failure::Stop(Error::Unexpected { frontend, status: 404, message }))
}

/// The bytes of `reader` as chunks of up to `chunk` bytes.
pub fn reader_chunks<R>(reader: R, chunk: usize) -> impl Stream<Item = std::io::Result<Bytes>> + Send
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
{
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold(Some(reader), move |reader| async move {
        let mut reader = reader?;
        let mut buf = bytes::BytesMut::with_capacity(chunk);
        match reader.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(reader))),
            Err(e) => Some((Err(e), None)),
        }
    })
}
