//! The frontend's public HTTP/1.1 server.
//!
//! Nearly every request a key-value store sees is small: a GET, or a SET whose value is a few
//! kilobytes at most. Those are parsed here straight from the connection's buffer (`httparse`),
//! answered by [`api::answer`], and written back with one `write`, without building a
//! `http::Request` and header map or running a general dispatcher per request. Pipelined
//! requests are answered in order. Anything else (a chunked or larger body, `Expect`, an
//! upgrade, HTTP/1.0, `HEAD`) hands the connection, with what was already read from it, to
//! hyper behind `common::guard` for the rest of its life: every corner of HTTP/1.1 keeps
//! hyper's handling, and large values still stream to the replicas while they arrive.
//!
//! Both paths read every head through `common::framing`, so they refuse the same heads
//! (ambiguous framing, unknown codings, over `MAX_HEAD_BYTES` however the bytes arrive) and can
//! never disagree with hyper about where a request ends; `server/hyper_agreement.rs` checks this
//! against hyper itself. Both hold clients to the same [`ClientTimeouts`]: a head within its
//! bound of its first byte (else 408), an idle connection closed after its bound, a body at a
//! minimum pace (else 408 here, a body error through hyper).
//!
//! Targets longer than hyper's limit (65,534 bytes: a 64 KiB key percent-encoded is up to
//! 196,608) are carried here only, for any method but `HEAD` and `CONNECT`, with no body or a
//! Content-Length body up to `--max-value-bytes`; a chunked one is refused with 414.
//!
//! Shutdown: the listener closes at once; an idle connection closes after a request that
//! arrives within `SHUTDOWN_IDLE_DRAIN` (answered with `connection: close`, where a client
//! that sent it just before seeing the close would otherwise get a reset), one in the middle of a
//! request answers it first (with `connection: close`); after `SHUTDOWN_GRACE` the rest are
//! dropped.

use crate::api::{self, RequestBody};
use crate::{Frontend, Limits};
use bytes::{Buf, Bytes, BytesMut};
use common::framing::{self, Framing, Parsed, Refusal};
use common::guard::{self, ClientTimeouts, Rules, WaitClock};
use common::http::Body;
use common::shutdown::Shutdown;
use http::{header, Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Largest request body read whole here; a larger one goes to hyper (and a value of 1 MiB or
/// more on to the replicas while it arrives).
pub const BUFFERED_BODY_BYTES: usize = 64 << 10;

/// A response body up to this size goes out in the same write as the head.
const COALESCE_BYTES: usize = 16 << 10;

/// How long an idle connection stays open once shutdown begins, for a request already sent.
const SHUTDOWN_IDLE_DRAIN: std::time::Duration = std::time::Duration::from_millis(250);

/// Serves the public API on `listener` until `shutdown` fires, holding clients to `rules`.
pub async fn serve(listener: TcpListener, frontend: Arc<Frontend>, rules: Rules, shutdown: Shutdown) {
    let connection_of = move |stream, shutdown| connection(stream, frontend.clone(), rules, shutdown);
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
    /// Answered with this refusal, and the connection closed.
    Refused(Refusal),
}

#[derive(Debug, PartialEq, Eq)]
struct SmallRequest {
    method: Method,
    /// The request target as sent: an origin-form path and query.
    target: String,
    /// Bytes of the head, blank line included.
    head_len: usize,
    body_len: usize,
    keep_alive: bool,
    /// `Expect: 100-continue` (served here for long targets only).
    expect_continue: bool,
    /// The `If-None-Match` header's value, if any.
    if_none_match: Option<Vec<u8>>,
}

impl SmallRequest {
    /// The path and query of the target, split as `http::uri::PathAndQuery` splits them.
    fn path_and_query(&self) -> (&str, Option<&str>) {
        let target = self.target.split('#').next().unwrap_or_default();
        match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        }
    }
}

/// Reads the request head at the start of `buf`.
fn parse_head(buf: &[u8], limits: &Limits) -> Head {
    let head = match framing::parse_head(buf, common::http::MAX_HEAD_BYTES) {
        Parsed::Partial => return Head::Partial,
        Parsed::Refused(refusal) => return Head::Refused(refusal),
        Parsed::Complete(head) => head,
    };
    if head.target.len() > framing::MAX_HYPER_TARGET_BYTES {
        return long_target(&head, limits);
    }
    let body_len = match head.framing {
        Framing::Empty => 0,
        Framing::Length(n) if n <= BUFFERED_BODY_BYTES as u64 => n as usize,
        Framing::Length(_) | Framing::Chunked => return Head::Other,
    };
    let plain = head.http11 && !head.upgrade && !head.expect_continue && head.target.starts_with('/');
    if !plain || head.method == Method::HEAD || head.method == Method::CONNECT {
        return Head::Other;
    }
    Head::Small(SmallRequest {
        method: head.method,
        target: head.target.to_owned(),
        head_len: head.len,
        body_len,
        keep_alive: head.keep_alive,
        expect_continue: false,
        if_none_match: head.if_none_match.map(<[u8]>::to_vec),
    })
}

/// A target too long for hyper: served here if it can be without hyper's help.
fn long_target(head: &framing::Head<'_>, limits: &Limits) -> Head {
    let body_len = match head.framing {
        Framing::Empty => 0,
        Framing::Length(n) => n,
        Framing::Chunked => u64::MAX,
    };
    if head.method == Method::HEAD || head.method == Method::CONNECT || head.upgrade || body_len == u64::MAX {
        return Head::Refused(Refusal::new(
            StatusCode::URI_TOO_LONG,
            format!(
                "a request target over {} bytes is served only without a body or with a Content-Length \
                 body, and not for HEAD, CONNECT or upgrades",
                framing::MAX_HYPER_TARGET_BYTES
            ),
        ));
    }
    if body_len > limits.max_value_bytes as u64 {
        return Head::Refused(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("value is {body_len} bytes; the limit is {}", limits.max_value_bytes),
        ));
    }
    Head::Small(SmallRequest {
        method: head.method.clone(),
        target: head.target.to_owned(),
        head_len: head.len,
        body_len: body_len as usize,
        keep_alive: head.keep_alive,
        expect_continue: head.expect_continue,
        if_none_match: head.if_none_match.map(<[u8]>::to_vec),
    })
}

/// How a wait for the client's next request ended.
enum Next {
    Request(SmallRequest),
    ForHyper,
    Refused(Refusal),
    Closed,
}

/// One client connection on the fast path: its socket, and bytes read but not yet used.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
    timeouts: ClientTimeouts,
}

/// One client connection: small requests answered here until one is not.
async fn connection(stream: TcpStream, frontend: Arc<Frontend>, rules: Rules, mut shutdown: Shutdown) {
    let mut client = Client { stream, buf: BytesMut::new(), timeouts: rules.timeouts };
    loop {
        let request = match client.next_head(&frontend.limits, &mut shutdown).await {
            Next::Request(request) => request,
            Next::ForHyper => return hand_to_hyper(client, frontend, rules, shutdown).await,
            Next::Refused(refusal) => return guard::refuse(&mut client.stream, &refusal).await,
            Next::Closed => return,
        };
        let total = request.head_len + request.body_len;
        let waiting = request.expect_continue && client.buf.len() < total;
        if waiting && client.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
            return;
        }
        match client.read_body(request.head_len, total).await {
            Ok(()) => {}
            Err(Some(refusal)) => return guard::refuse(&mut client.stream, &refusal).await,
            Err(None) => return,
        }
        let body = if request.body_len <= BUFFERED_BODY_BYTES {
            // Copied out, so that the buffer is reused for the next request.
            let body = Bytes::copy_from_slice(&client.buf[request.head_len..total]);
            client.buf.advance(total);
            body
        } else {
            client.buf.split_to(total).split_off(request.head_len).freeze()
        };
        let (path, query) = request.path_and_query();
        let conditions = api::Conditions { if_none_match: request.if_none_match.as_deref() };
        let response =
            api::answer(&frontend, &request.method, path, query, conditions, RequestBody::Buffered(body))
                .await;
        let keep_alive = request.keep_alive && !shutdown.is_triggered();
        let stall = client.timeouts.body_stall();
        if write_response(&mut client.stream, response, keep_alive, stall).await.is_err() {
            return;
        }
        if !keep_alive {
            let _ = client.stream.shutdown().await;
            return;
        }
    }
}

impl Client {
    /// Waits for the next request head: within the idle bound for its first byte (shutdown
    /// closes the connection meanwhile), within the head bound for the rest.
    async fn next_head(&mut self, limits: &Limits, shutdown: &mut Shutdown) -> Next {
        let mut deadline = Instant::now() + self.timeouts.header();
        let mut checked = 0;
        loop {
            if framing::worth_parsing(&self.buf, checked, common::http::MAX_HEAD_BYTES) {
                match parse_head(&self.buf, limits) {
                    Head::Partial => {}
                    Head::Small(request) => return Next::Request(request),
                    Head::Other => return Next::ForHyper,
                    Head::Refused(refusal) => return Next::Refused(refusal),
                }
            }
            checked = self.buf.len();
            let read = if self.buf.is_empty() {
                let idle = Instant::now() + self.timeouts.idle();
                tokio::select! {
                    read = tokio::time::timeout_at(idle, read_more(&mut self.stream, &mut self.buf, 0)) => {
                        deadline = Instant::now() + self.timeouts.header();
                        read
                    }
                    _ = shutdown.wait() => {
                        // A request may already be on its way: the client cannot know this
                        // connection is closing until it sees the close. One arriving within
                        // a moment is answered (with `connection: close`), not reset.
                        let drain = read_more(&mut self.stream, &mut self.buf, 0);
                        match tokio::time::timeout(SHUTDOWN_IDLE_DRAIN, drain).await {
                            Ok(Ok(n)) if n > 0 => {
                                deadline = Instant::now() + self.timeouts.header();
                                continue;
                            }
                            _ => return Next::Closed,
                        }
                    }
                }
            } else {
                tokio::time::timeout_at(deadline, read_more(&mut self.stream, &mut self.buf, 0)).await
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                Err(_) if !self.buf.is_empty() => {
                    return Next::Refused(Refusal::new(
                        StatusCode::REQUEST_TIMEOUT,
                        format!("request head not complete within {} ms", self.timeouts.header_ms),
                    ))
                }
                _ => return Next::Closed,
            }
        }
    }

    /// Reads until the buffer holds `total` bytes (a head of `head_len` and its body), as long as
    /// the body keeps its pace: `Err(None)` if the client left.
    async fn read_body(&mut self, head_len: usize, total: usize) -> Result<(), Option<Refusal>> {
        let mut clock = WaitClock::default();
        while self.buf.len() < total {
            let received = (self.buf.len() - head_len) as u64;
            let now = Instant::now();
            clock.wait(now);
            let allowance = self.timeouts.body_allowance(received);
            let deadline = clock.deadline(allowance, Some(self.timeouts.body_stall())).unwrap_or(now);
            let left = total - self.buf.len();
            match tokio::time::timeout_at(deadline, read_more(&mut self.stream, &mut self.buf, left)).await {
                Ok(Ok(n)) if n > 0 => clock.stop(Instant::now()),
                Ok(_) => return Err(None),
                Err(_) => {
                    return Err(Some(Refusal::new(
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "request body too slow: {received} bytes after waiting {:?} (at most {} ms \
                             without a byte, and {} bytes/s after the first {} ms)",
                            clock.total(Instant::now()),
                            self.timeouts.body_stall_ms,
                            self.timeouts.body_min_bytes_per_s,
                            self.timeouts.body_stall_ms
                        ),
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Reads what the client sent next into `buf` (`left`: bytes still expected, if known). An
/// empty buffer is released while waiting, so an idle connection holds none.
async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut, left: usize) -> io::Result<usize> {
    loop {
        if buf.is_empty() && buf.capacity() > 0 {
            *buf = BytesMut::new();
        }
        stream.readable().await?;
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(left.clamp(8 << 10, 1 << 20));
        }
        match stream.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            read => return read,
        }
    }
}

/// Writes `response` as HTTP/1.1: head and a small body in one write, a larger or streamed body
/// after it as it comes (chunked if its length is unknown). A client that reads nothing for
/// `stall` fails the write.
async fn write_response(
    stream: &mut TcpStream,
    response: Response<Body>,
    keep_alive: bool,
    stall: Duration,
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
            write_paced(stream, &out, stall).await?;
            out.clear();
            write_paced(stream, &data, stall).await?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        write_paced(stream, &out, stall).await?;
    }
    Ok(())
}

/// Writes all of `data`, failing if the client takes none of it for `stall`.
async fn write_paced(stream: &mut TcpStream, mut data: &[u8], stall: Duration) -> io::Result<()> {
    while !data.is_empty() {
        let written = tokio::time::timeout(stall, stream.write(data)).await;
        match written.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the client read nothing"))?? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => data = &data[n..],
        }
    }
    Ok(())
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Serves the rest of a connection with hyper (behind the guard), the bytes already read first.
async fn hand_to_hyper(client: Client, frontend: Arc<Frontend>, rules: Rules, shutdown: Shutdown) {
    let handler = move |req| api::handle(frontend.clone(), req);
    common::http::serve_connection(client.stream, client.buf, handler, shutdown, rules).await
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
mod hyper_agreement;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const LIMITS: Limits = Limits { max_key_bytes: 64 << 10, max_value_bytes: 1 << 20 };

    fn small(head: &[u8]) -> SmallRequest {
        match parse_head(head, &LIMITS) {
            Head::Small(request) => request,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(head)),
        }
    }

    #[test]
    fn small_requests_are_read_here() {
        let get = small(b"GET /get/?key=a%20b HTTP/1.1\r\nHost: x\r\n\r\nGET /next");
        assert_eq!((&get.method, get.path_and_query()), (&Method::GET, ("/get/", Some("key=a%20b"))));
        assert_eq!((get.head_len, get.body_len, get.keep_alive), (41, 0, true));
        let set = small(
            b"POST /set/?key=k HTTP/1.1\r\ncontent-length: 5\r\nConnection: keep-alive, Close\r\n\r\nhello",
        );
        assert_eq!((set.method, set.body_len, set.keep_alive), (Method::POST, 5, false));
        let limit = format!("POST /set/?key=k HTTP/1.1\r\nContent-Length: {BUFFERED_BODY_BYTES}\r\n\r\n");
        assert_eq!(small(limit.as_bytes()).body_len, BUFFERED_BODY_BYTES);
        let bare_lf = small(b"GET /get/?key=a HTTP/1.1\nHost: x\n\n");
        assert_eq!(bare_lf.head_len, 34, "bare LF line endings, as hyper reads them");
    }

    #[test]
    fn targets_split_as_hyper_splits_them() {
        let cases = [
            ("/get/?key=a", ("/get/", Some("key=a"))),
            ("/get/", ("/get/", None)),
            ("/get/?", ("/get/", Some(""))),
            ("/get/?key=a#frag", ("/get/", Some("key=a"))),
            ("/get/#frag?key=a", ("/get/", None)),
            ("/get/?key=a?b", ("/get/", Some("key=a?b"))),
        ];
        for (target, expected) in cases {
            let request = small(format!("GET {target} HTTP/1.1\r\n\r\n").as_bytes());
            assert_eq!(request.path_and_query(), expected, "{target}");
            let uri: http::Uri = target.parse().unwrap();
            assert_eq!((uri.path(), uri.query()), expected, "{target} as http::Uri");
        }
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        assert_eq!(parse_head(b"", &LIMITS), Head::Partial);
        assert_eq!(parse_head(b"GET /get/?key=a HTTP/1.1\r\nHost: x\r\n", &LIMITS), Head::Partial);
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        let over =
            format!("POST /set/?key=k HTTP/1.1\r\nContent-Length: {}\r\n\r\n", BUFFERED_BODY_BYTES + 1);
        let cases: &[&[u8]] = &[
            over.as_bytes(),
            b"POST /set/?key=k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /set/?key=k HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
            b"GET /get/?key=a HTTP/1.0\r\n\r\n",
            b"HEAD /get/?key=a HTTP/1.1\r\n\r\n",
            b"GET http://host/get/?key=a HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        ];
        for case in cases {
            assert_eq!(parse_head(case, &LIMITS), Head::Other, "{:?}", String::from_utf8_lossy(case));
        }
    }

    #[test]
    fn malformed_ambiguous_or_oversized_heads_are_refused_here() {
        let endless = [b"GET /".as_slice(), &vec![b'a'; common::http::MAX_HEAD_BYTES]].concat();
        let complete_over =
            [b"GET / HTTP/1.1\r\nX-Pad: ".as_slice(), &vec![b'a'; common::http::MAX_HEAD_BYTES], b"\r\n\r\n"]
                .concat();
        let cases: &[(&[u8], StatusCode)] = &[
            (
                b"POST /set/?key=k HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                StatusCode::BAD_REQUEST,
            ),
            (
                b"POST /set/?key=k HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                StatusCode::BAD_REQUEST,
            ),
            (
                b"POST /set/?key=k HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                StatusCode::NOT_IMPLEMENTED,
            ),
            (b"POST /set/?key=k HTTP/1.1\r\nContent-Length: +5\r\n\r\n", StatusCode::BAD_REQUEST),
            (b"GET /get/ HTTP/1.1\r\nbad header\r\n\r\n", StatusCode::BAD_REQUEST),
            (&endless, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            (&complete_over, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        ];
        for &(case, status) in cases {
            let Head::Refused(refusal) = parse_head(case, &LIMITS) else {
                panic!("{:?} not refused", String::from_utf8_lossy(&case[..case.len().min(80)]))
            };
            assert_eq!(refusal.status, status, "{}", refusal.message);
        }
    }

    #[test]
    fn targets_too_long_for_hyper_are_served_here_when_they_can_be() {
        let key = "%41".repeat(LIMITS.max_key_bytes);
        let request =
            |method: &str, headers: &str| format!("{method} /set/?key={key} HTTP/1.1\r\n{headers}\r\n");
        let set = small(request("POST", "Content-Length: 100000\r\nExpect: 100-continue\r\n").as_bytes());
        assert_eq!((set.body_len, set.expect_continue), (100_000, true));
        assert_eq!(set.path_and_query(), ("/set/", Some(&*format!("key={key}"))));
        assert_eq!(small(request("DELETE", "").as_bytes()).body_len, 0);
        let refused = [
            (request("POST", "Transfer-Encoding: chunked\r\n"), StatusCode::URI_TOO_LONG),
            (request("HEAD", ""), StatusCode::URI_TOO_LONG),
            (request("POST", "Content-Length: 1048577\r\n"), StatusCode::PAYLOAD_TOO_LARGE),
        ];
        for (head, status) in refused {
            let Head::Refused(refusal) = parse_head(head.as_bytes(), &LIMITS) else { panic!("{status}") };
            assert_eq!(refusal.status, status, "{}", refusal.message);
        }
    }

    /// What `write_response` puts on the wire for `response`.
    async fn written(response: Response<Body>, keep_alive: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        write_response(&mut server, response, keep_alive, Duration::from_secs(10)).await.unwrap();
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
