//! HTTP plumbing shared by the three servers: the body type, plain-text and JSON responses, a
//! server loop with graceful shutdown whose clients pass a [`crate::guard`] first, and a client
//! whose every call has a deadline.

pub use crate::guard::{ClientTimeouts, Rules};

use crate::guard::{Exchanges, Guarded, Tracked};
use crate::shutdown::Shutdown;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client as PooledClient};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{de::DeserializeOwned, Serialize};
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the servers produce: a buffer or a stream passed through.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// How long in-flight requests may run on after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Largest request head (URI and headers) a server accepts: room for a 64 KiB key escaped.
pub const MAX_HEAD_BYTES: usize = 1 << 20;

/// How long a client waits for a TCP connection before calling the peer unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A body holding `bytes` (no copy).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A streamed body passed through unchanged.
pub fn stream(incoming: Incoming) -> Body {
    incoming.map_err(BoxError::from).boxed_unsync()
}

/// A streamed body passed through unchanged, which fails if the peer sends nothing for
/// `stall` while it is being read (time spent while nobody asks for the next chunk does not
/// count, so a slow reader downstream is not blamed on the peer).
pub fn stream_with_stall(incoming: Incoming, stall: Duration) -> Body {
    StallBounded { inner: incoming, stall, timer: None }.boxed_unsync()
}

/// See [`stream_with_stall`].
struct StallBounded {
    inner: Incoming,
    stall: Duration,
    /// Armed while a read waits on the peer.
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for StallBounded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            this.timer = None;
            return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
        }
        let stall = this.stall;
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(format!("the peer sent nothing for {stall:?}").into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A plain-text response: `message` and a newline, for people reading curl output.
pub fn text(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(format!("{message}\n")))
        .expect("static response parts are valid")
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(full(body))
            .expect("static response parts are valid"),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode JSON: {e}")),
    }
}

/// Serves HTTP/1.1 on `listener`, answering every request with `handler`, until `shutdown`
/// fires; then stops accepting and gives open connections [`SHUTDOWN_GRACE`] to finish. Clients
/// are held to the default [`Rules`].
pub async fn serve<H, F>(listener: TcpListener, handler: H, shutdown: Shutdown)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    serve_with(listener, handler, shutdown, Rules::default()).await
}

/// [`serve`], holding clients to `rules`.
pub async fn serve_with<H, F>(listener: TcpListener, handler: H, shutdown: Shutdown, rules: Rules)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let connection = move |stream, shutdown| {
        serve_connection(stream, bytes::BytesMut::new(), handler.clone(), shutdown, rules)
    };
    serve_connections(listener, connection, shutdown).await
}

/// Accepts connections on `listener` and runs `connection(stream, shutdown)` for each until
/// `shutdown` fires; then stops accepting, gives open connections (which see `shutdown` too)
/// [`SHUTDOWN_GRACE`] to finish, and drops the rest.
pub async fn serve_connections<C, F>(listener: TcpListener, connection: C, mut shutdown: Shutdown)
where
    C: Fn(TcpStream, Shutdown) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            stream = accept(&listener) => stream,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.wait() => break,
        };
        connections.spawn(connection(stream, shutdown.clone()));
    }
    drop(listener);
    let drained =
        tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        log::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
        connections.abort_all();
    }
}

/// Serves HTTP/1.1 (hyper) on one connection, of which `read` was already read (the start of
/// a request, or nothing), answering every request with `handler`, until the client leaves;
/// once `shutdown` fires, the request in progress is finished and the connection closed. Every
/// byte hyper reads has passed a [`Guarded`] held to `rules` (see `crate::guard`).
pub async fn serve_connection<T, H, F>(
    io: T,
    read: bytes::BytesMut,
    handler: H,
    mut shutdown: Shutdown,
    rules: Rules,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    H: Fn(Request<Incoming>) -> F,
    F: Future<Output = Response<Body>>,
{
    let handler = Box::new(handler); // hyper polls a service that is Unpin
    let exchanges = std::sync::Arc::new(Exchanges::default());
    let guarded = Guarded::new(io, read, rules, exchanges.clone());
    let service = hyper::service::service_fn(move |req| {
        let exchange = exchanges.begin();
        let response = handler(req);
        Box::pin(async move { Ok::<_, Infallible>(response.await.map(|body| Tracked { body, exchange })) })
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    // The guard bounds heads; hyper's buffer must hold the longest it lets through.
    http.max_buf_size(rules.max_head_bytes + (64 << 10));
    let mut connection = http.serve_connection(TokioIo::new(guarded), service);
    let served = {
        let served = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx));
        tokio::select! {
            result = served => Some(result),
            _ = shutdown.wait() => None,
        }
    };
    let result = match served {
        Some(result) => result,
        None => {
            std::pin::Pin::new(&mut connection).graceful_shutdown();
            std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)).await
        }
    };
    if let Err(e) = result {
        log::debug!("connection closed with error: {e}");
    }
    connection.into_parts().io.into_inner().finish().await;
}

/// The next connection on `listener`, with Nagle's algorithm off. A failed accept (out of file
/// descriptors and similar) is logged and retried after a pause instead of spinning.
pub async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(e) => {
                log::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How a call to another node failed. Callers act on the variant: a timeout or refused
/// connection means try another replica; a status is the peer's considered answer.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("connection failed: {0}")]
    Transport(String),
    #[error("answered {status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

/// A request body fed chunk by chunk through a channel, so a body can be forwarded while it
/// is still arriving. It declares its exact length; if the sender goes away before that many
/// bytes were sent (or sends an error), the request fails instead of ending short.
#[derive(Debug)]
pub struct ChannelBody {
    chunks: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>,
    remaining: u64,
}

/// The next frame of a body of exactly `remaining` more bytes, fed through a channel, given
/// what the channel `received`: the chunk (counted off `remaining`), or an error if it overruns
/// the length, the sender failed, or the channel closed short. For bodies like [`ChannelBody`].
pub fn next_frame(
    remaining: &mut u64,
    received: Option<Result<Bytes, BoxError>>,
) -> Result<hyper::body::Frame<Bytes>, BoxError> {
    match received {
        Some(Ok(chunk)) if chunk.len() as u64 > *remaining => {
            Err("body longer than its declared length".into())
        }
        Some(Ok(chunk)) => {
            *remaining -= chunk.len() as u64;
            Ok(hyper::body::Frame::data(chunk))
        }
        Some(Err(e)) => Err(e),
        None => Err("body ended before its declared length".into()),
    }
}

/// The sending half of a [`ChannelBody`].
pub type ChunkSender = tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>;

/// A [`ChannelBody`] of exactly `length` bytes, and its sender (which holds up to `depth`
/// chunks before `send` waits).
pub fn channel_body(length: u64, depth: usize) -> (ChunkSender, ChannelBody) {
    let (sender, chunks) = tokio::sync::mpsc::channel(depth);
    (sender, ChannelBody { chunks, remaining: length })
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let received = std::task::ready!(self.chunks.poll_recv(cx));
        std::task::Poll::Ready(Some(next_frame(&mut self.remaining, received)))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

/// A pooled HTTP/1.1 client for calls between nodes. Every request it sends carries the cluster
/// secret it was made with, if any (see [`crate::auth`]).
#[derive(Clone, Debug)]
pub struct Client {
    inner: PooledClient<HttpConnector, Full<Bytes>>,
    streaming: PooledClient<HttpConnector, Body>,
    authorization: Option<http::HeaderValue>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client whose requests prove they come from the cluster when `secret` is given.
    pub fn with_secret(secret: Option<&crate::auth::ClusterSecret>) -> Self {
        Self { authorization: secret.map(|s| s.header().clone()), ..Self::new() }
    }

    /// A client that sends no credentials.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let mut builder = PooledClient::builder(TokioExecutor::new());
        builder.pool_idle_timeout(Duration::from_secs(30)).pool_max_idle_per_host(512);
        Self {
            inner: builder.build(connector.clone()),
            streaming: builder.build(connector),
            authorization: None,
        }
    }

    fn authorize<B>(&self, request: &mut Request<B>) {
        if let Some(value) = &self.authorization {
            request.headers_mut().insert(http::header::AUTHORIZATION, value.clone());
        }
    }

    /// Sends a request whose body streams (through a channel, say) and reads the whole
    /// answer, all within `deadline`. Not retried: the body cannot be sent twice.
    pub async fn send_streamed(
        &self,
        mut request: Request<Body>,
        deadline: Duration,
    ) -> Result<(http::response::Parts, Bytes), RpcError> {
        self.authorize(&mut request);
        let call = async {
            let response = self.streaming.request(request).await.map_err(|e| {
                if e.is_connect() {
                    RpcError::Connect(error_chain(&e))
                } else {
                    RpcError::Transport(error_chain(&e))
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| RpcError::Transport(error_chain(&e)))?.to_bytes();
            Ok((parts, body))
        };
        tokio::time::timeout(deadline, call).await.map_err(|_| RpcError::Timeout(deadline))?
    }

    /// Sends the request `make` builds and waits for the response head, all within `deadline`.
    /// Requests sent this way must be idempotent: if a pooled connection turns out to be dead
    /// the request is sent once more on a fresh one. Any status is returned as a response.
    pub async fn send(
        &self,
        make: impl Fn() -> Request<Full<Bytes>>,
        deadline: Duration,
    ) -> Result<Response<Incoming>, RpcError> {
        let make = || {
            let mut request = make();
            self.authorize(&mut request);
            request
        };
        let attempt = async {
            match self.inner.request(make()).await {
                Ok(response) => Ok(response),
                Err(e) if e.is_connect() => Err(RpcError::Connect(error_chain(&e))),
                Err(first) => {
                    log::debug!("retrying once after transport error: {}", error_chain(&first));
                    self.inner.request(make()).await.map_err(|e| {
                        if e.is_connect() {
                            RpcError::Connect(error_chain(&e))
                        } else {
                            RpcError::Transport(error_chain(&e))
                        }
                    })
                }
            }
        };
        tokio::time::timeout(deadline, attempt).await.map_err(|_| RpcError::Timeout(deadline))?
    }

    /// Like [`Client::send`], and also reads the whole body within the same deadline.
    pub async fn send_collect(
        &self,
        make: impl Fn() -> Request<Full<Bytes>>,
        deadline: Duration,
    ) -> Result<(http::response::Parts, Bytes), RpcError> {
        let started = tokio::time::Instant::now();
        let response = self.send(make, deadline).await?;
        let (parts, body) = response.into_parts();
        let remaining = deadline.saturating_sub(started.elapsed());
        let body = tokio::time::timeout(remaining, body.collect())
            .await
            .map_err(|_| RpcError::Timeout(deadline))?
            .map_err(|e| RpcError::Transport(error_chain(&e)))?
            .to_bytes();
        Ok((parts, body))
    }

    /// POSTs `body` as JSON and decodes a 2xx JSON answer; any other status is an error
    /// carrying the peer's message.
    pub async fn post_json<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        url: &str,
        body: &Req,
        deadline: Duration,
    ) -> Result<Resp, RpcError> {
        let payload = Bytes::from(serde_json::to_vec(body).map_err(|e| RpcError::Protocol(e.to_string()))?);
        let make = || {
            Request::post(url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(payload.clone()))
                .expect("valid request")
        };
        let (parts, body) = self.send_collect(make, deadline).await?;
        decode_json(parts.status, &body)
    }

    /// GETs `url` and decodes a 2xx JSON answer. A 304 is returned as `Ok(None)`.
    pub async fn get_json<Resp: DeserializeOwned>(
        &self,
        url: &str,
        deadline: Duration,
    ) -> Result<Option<Resp>, RpcError> {
        let make = || Request::get(url).body(Full::new(Bytes::new())).expect("valid request");
        let (parts, body) = self.send_collect(make, deadline).await?;
        if parts.status == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        decode_json(parts.status, &body).map(Some)
    }
}

fn decode_json<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, RpcError> {
    if !status.is_success() {
        return Err(RpcError::Status { status, message: String::from_utf8_lossy(body).trim().to_owned() });
    }
    serde_json::from_slice(body).map_err(|e| RpcError::Protocol(format!("invalid JSON: {e}")))
}

/// An error and all its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadBodyError {
    #[error("body is larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    #[error("body could not be read: {0}")]
    Transport(String),
}

/// Reads a whole body into one buffer, failing as soon as it exceeds `limit` bytes (before
/// reading anything if the declared length already does). The bytes are copied once at most:
/// a body that arrives as a single chunk is kept as it is.
pub async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, ReadBodyError> {
    use hyper::body::Body as _;
    let declared = body.size_hint().lower() as usize;
    if declared > limit {
        return Err(ReadBodyError::TooLarge { limit });
    }
    let mut single: Option<Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadBodyError::Transport(error_chain(&e)))?;
        let Ok(chunk) = frame.into_data() else { continue };
        let so_far = single.as_ref().map_or(0, Bytes::len) + joined.as_ref().map_or(0, |b| b.len());
        if so_far + chunk.len() > limit {
            return Err(ReadBodyError::TooLarge { limit });
        }
        match (&mut single, &mut joined) {
            (None, None) => single = Some(chunk),
            (Some(first), None) => {
                let mut buf = bytes::BytesMut::with_capacity(declared.max(first.len() + chunk.len()));
                buf.extend_from_slice(first);
                buf.extend_from_slice(&chunk);
                single = None;
                joined = Some(buf);
            }
            (_, Some(buf)) => buf.extend_from_slice(&chunk),
        }
    }
    Ok(match (single, joined) {
        (_, Some(buf)) => buf.freeze(),
        (Some(chunk), None) => chunk,
        (None, None) => Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(body: ChannelBody) -> Result<Bytes, BoxError> {
        Ok(body.collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn a_channel_body_is_exactly_its_declared_length_or_an_error() {
        let (sender, body) = channel_body(6, 4);
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(6));
        sender.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
        sender.send(Ok(Bytes::from_static(b"def"))).await.unwrap();
        assert_eq!(drain(body).await.unwrap(), Bytes::from_static(b"abcdef"));

        let (sender, body) = channel_body(6, 4);
        sender.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
        drop(sender); // the source went away early
        assert!(drain(body).await.unwrap_err().to_string().contains("ended before"));

        let (sender, body) = channel_body(2, 4);
        sender.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
        assert!(drain(body).await.unwrap_err().to_string().contains("longer than"));

        let (sender, body) = channel_body(6, 4);
        sender.send(Err("client went away".into())).await.unwrap();
        assert!(drain(body).await.unwrap_err().to_string().contains("client went away"));
    }
}
