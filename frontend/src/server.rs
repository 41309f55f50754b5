//! The frontend's public HTTP/1.1 server.
//!
//! Nearly every request a key-value store sees is small: a GET, or a SET whose value is a few
//! kilobytes at most. Those are parsed here straight from the connection's buffer (`httparse`),
//! answered by [`api::answer`], and written back with one `write`, without building a
//! `http::Request` and header map or running a general dispatcher per request. Pipelined
//! requests are answered in order. Anything else (a chunked or larger body, `Expect`, an
//! upgrade, HTTP/1.0, `HEAD`, a malformed or oversized head) hands the connection, with what was
//! already read from it, to hyper for the rest of its life: every corner of HTTP/1.1 keeps
//! hyper's handling, and large values still stream to the replicas while they arrive.
//!
//! Shutdown: the listener closes at once; an idle connection closes, one in the middle of a
//! request answers it first (with `connection: close`); after `SHUTDOWN_GRACE` the rest are
//! dropped.

use crate::api::{self, RequestBody};
use crate::Frontend;
use bytes::{Buf, Bytes, BytesMut};
use common::http::{Body, MAX_HEAD_BYTES};
use common::shutdown::Shutdown;
use http::uri::PathAndQuery;
use http::{header, Method, Response};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Largest request body read whole here; a larger one goes to hyper (and a value of 1 MiB or
/// more on to the replicas while it arrives).
pub const BUFFERED_BODY_BYTES: usize = 64 << 10;

/// Most headers a request answered here may carry (one with more goes to hyper).
const MAX_HEADERS: usize = 32;

/// A response body up to this size goes out in the same write as the head.
const COALESCE_BYTES: usize = 16 << 10;

/// Serves the public API on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, frontend: Arc<Frontend>, shutdown: Shutdown) {
    let connection_of = move |stream, shutdown| connection(stream, frontend.clone(), shutdown);
    common::http::serve_connections(listener, connection_of, shutdown).await
}

/// What a request head means for this server.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// Not all of it has arrived.
    Partial,
    /// A request answered here.
    Small(SmallRequest),
    /// Everything else: for hyper.
    Other,
}

#[derive(Debug, PartialEq, Eq)]
struct SmallRequest {
    method: Method,
    target: PathAndQuery,
    /// Bytes of the head, blank line included.
    head_len: usize,
    body_len: usize,
    keep_alive: bool,
}

/// Reads the request head at the start of `buf`.
fn parse_head(buf: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD_BYTES => return Head::Partial,
        // Malformed, too long or too many headers: hyper gives the proper answer.
        _ => return Head::Other,
    };
    let (Some(method), Some(target), Some(1)) = (request.method, request.path, request.version) else {
        return Head::Other;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return Head::Other };
    if method == Method::HEAD || method == Method::CONNECT || !target.starts_with('/') {
        return Head::Other;
    }
    let Ok(target) = PathAndQuery::try_from(target) else { return Head::Other };
    let mut body_len = None;
    let mut keep_alive = true;
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value = header.value.trim_ascii();
            let digits = !value.is_empty() && value.len() <= 12 && value.iter().all(u8::is_ascii_digit);
            if body_len.is_some() || !digits {
                return Head::Other;
            }
            body_len = std::str::from_utf8(value).ok().and_then(|v| v.parse::<usize>().ok());
        } else if ["transfer-encoding", "expect", "upgrade"].iter().any(|n| name.eq_ignore_ascii_case(n)) {
            return Head::Other;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"upgrade") {
                    return Head::Other;
                }
                keep_alive &= !token.eq_ignore_ascii_case(b"close");
            }
        }
    }
    match body_len.unwrap_or(0) {
        body_len if body_len <= BUFFERED_BODY_BYTES => {
            Head::Small(SmallRequest { method, target, head_len, body_len, keep_alive })
        }
        _ => Head::Other,
    }
}

/// One client connection: small requests answered here until one is not.
async fn connection(mut stream: TcpStream, frontend: Arc<Frontend>, mut shutdown: Shutdown) {
    let mut buf = BytesMut::with_capacity(8 << 10);
    loop {
        let request = loop {
            match parse_head(&buf) {
                Head::Partial => {}
                Head::Small(request) => break request,
                Head::Other => return hand_to_hyper(stream, buf.freeze(), frontend, shutdown).await,
            }
            // Waiting for a new request, shutdown closes the connection.
            let read = if buf.is_empty() {
                tokio::select! {
                    read = read_more(&mut stream, &mut buf) => read,
                    _ = shutdown.wait() => return,
                }
            } else {
                read_more(&mut stream, &mut buf).await
            };
            if !matches!(read, Ok(n) if n > 0) {
                return;
            }
        };
        let total = request.head_len + request.body_len;
        while buf.len() < total {
            if !matches!(read_more(&mut stream, &mut buf).await, Ok(n) if n > 0) {
                return;
            }
        }
        // Copied out, so that the buffer is reused for the next request.
        let body = Bytes::copy_from_slice(&buf[request.head_len..total]);
        buf.advance(total);
        let target = &request.target;
        let response = api::answer(
            &frontend,
            &request.method,
            target.path(),
            target.query(),
            RequestBody::Buffered(body),
        )
        .await;
        let keep_alive = request.keep_alive && !shutdown.is_triggered();
        if write_response(&mut stream, response, keep_alive).await.is_err() {
            return;
        }
        if !keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(8 << 10);
    }
    stream.read_buf(buf).await
}

/// Writes `response` as HTTP/1.1: head and a small body in one write, a larger or streamed body
/// after it as it comes (chunked if its length is unknown).
async fn write_response(
    stream: &mut TcpStream,
    response: Response<Body>,
    keep_alive: bool,
) -> io::Result<()> {
    let (parts, mut body) = response.into_parts();
    let mut out = Vec::with_capacity(256);
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        push_header(&mut out, name.as_str(), value.as_bytes());
    }
    let chunked = match (parts.headers.contains_key(header::CONTENT_LENGTH), body.size_hint().exact()) {
        (true, _) => false,
        (false, Some(length)) => {
            push_header(&mut out, "content-length", length.to_string().as_bytes());
            false
        }
        (false, None) => {
            push_header(&mut out, "transfer-encoding", b"chunked");
            true
        }
    };
    if !keep_alive {
        push_header(&mut out, "connection", b"close");
    }
    date::with_now(|date| push_header(&mut out, "date", date.as_bytes()));
    out.extend_from_slice(b"\r\n");
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(io::Error::other)?.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if out.len() + data.len() <= COALESCE_BYTES {
            out.extend_from_slice(&data);
        } else {
            stream.write_all(&out).await?;
            out.clear();
            stream.write_all(&data).await?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        stream.write_all(&out).await?;
    }
    Ok(())
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Serves the rest of a connection with hyper, `read` (bytes already taken from the socket)
/// first.
async fn hand_to_hyper(stream: TcpStream, read: Bytes, frontend: Arc<Frontend>, shutdown: Shutdown) {
    let handler = move |req| api::handle(frontend.clone(), req);
    common::http::serve_connection(Rewound { read, stream }, handler, shutdown).await
}

/// A connection whose first bytes were already read: reading yields them again first.
struct Rewound {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, out);
        }
        let n = self.read.len().min(out.remaining());
        out.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The `date` header's value, formatted once per second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    pub fn with_now<R>(f: impl FnOnce(&str) -> R) -> R {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            if cached.0 != second {
                *cached = (second, httpdate::fmt_http_date(now));
            }
            f(&cached.1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(head: &[u8]) -> SmallRequest {
        match parse_head(head) {
            Head::Small(request) => request,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(head)),
        }
    }

    #[test]
    fn small_requests_are_read_here() {
        let get = small(b"GET /get/?key=a%20b HTTP/1.1\r\nHost: x\r\n\r\nGET /next");
        assert_eq!(
            (get.method, get.target.path(), get.target.query()),
            (Method::GET, "/get/", Some("key=a%20b"))
        );
        assert_eq!((get.head_len, get.body_len, get.keep_alive), (41, 0, true));
        let set = small(
            b"POST /set/?key=k HTTP/1.1\r\ncontent-length: 5\r\nConnection: keep-alive, Close\r\n\r\nhello",
        );
        assert_eq!((set.method, set.body_len, set.keep_alive), (Method::POST, 5, false));
        let limit = format!("POST /set/?key=k HTTP/1.1\r\nContent-Length: {BUFFERED_BODY_BYTES}\r\n\r\n");
        assert_eq!(small(limit.as_bytes()).body_len, BUFFERED_BODY_BYTES);
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert_eq!(parse_head(b""), Head::Partial);
        assert_eq!(parse_head(b"GET /get/?key=a HTTP/1.1\r\nHost: x\r\n"), Head::Partial);
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        let over =
            format!("POST /set/?key=k HTTP/1.1\r\nContent-Length: {}\r\n\r\n", BUFFERED_BODY_BYTES + 1);
        let many_headers = format!("GET / HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(MAX_HEADERS + 1));
        let cases: &[&[u8]] = &[
            over.as_bytes(),
            many_headers.as_bytes(),
            b"POST /set/?key=k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /set/?key=k HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
            b"POST /set/?key=k HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST /set/?key=k HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"GET /get/?key=a HTTP/1.0\r\n\r\n",
            b"HEAD /get/?key=a HTTP/1.1\r\n\r\n",
            b"GET http://host/get/?key=a HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET /get/ HTTP/1.1\r\nbad header\r\n\r\n",
        ];
        for case in cases {
            assert_eq!(parse_head(case), Head::Other, "{:?}", String::from_utf8_lossy(case));
        }
        let endless = [b"GET /".as_slice(), &vec![b'a'; MAX_HEAD_BYTES]].concat();
        assert_eq!(parse_head(&endless), Head::Other, "a head past the limit");
    }

    #[tokio::test]
    async fn bytes_already_read_are_read_again_first() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(b" world").await.unwrap();
        drop(client);
        let mut rewound = Rewound { read: Bytes::from_static(b"hello"), stream: server };
        let mut all = String::new();
        rewound.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }

    /// What `write_response` puts on the wire for `response`.
    async fn written(response: Response<Body>, keep_alive: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        write_response(&mut server, response, keep_alive).await.unwrap();
        drop(server);
        let mut wire = String::new();
        client.read_to_string(&mut wire).await.unwrap();
        // The date changes; everything else is fixed.
        let date = wire.find("date: ").unwrap();
        wire.replace_range(date + 6..date + 35, "DATE");
        wire
    }

    #[tokio::test]
    async fn responses_carry_their_length_or_are_chunked() {
        let text = common::http::text(http::StatusCode::NOT_FOUND, "key not found");
        assert_eq!(
            written(text, true).await,
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 14\r\n\
             date: DATE\r\n\r\nkey not found\n"
        );
        let frames =
            ["ab", "", "cde"].map(|s| Ok(hyper::body::Frame::data(Bytes::from_static(s.as_bytes()))));
        let unknown_length =
            http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
        let streamed = Response::builder().status(200).body(unknown_length).unwrap();
        assert_eq!(
            written(streamed, false).await,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\ndate: DATE\r\n\r\n\
             2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
        );
        let big = Bytes::from(vec![b'v'; COALESCE_BYTES * 2]);
        let declared = Response::builder()
            .header(header::CONTENT_LENGTH, big.len())
            .body(common::http::full(big.clone()))
            .unwrap();
        let wire = written(declared, true).await;
        assert!(
            wire.starts_with(&format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\ndate", big.len())),
            "{wire}"
        );
        assert!(
            wire.ends_with(std::str::from_utf8(&big).unwrap()) && wire.matches("content-length").count() == 1
        );
    }

    #[test]
    fn dates_are_imf_fixdates() {
        let date = date::with_now(str::to_owned);
        assert_eq!(date.len(), 29, "{date}");
        assert!(date.ends_with(" GMT") && httpdate::parse_http_date(&date).is_ok(), "{date}");
    }
}
