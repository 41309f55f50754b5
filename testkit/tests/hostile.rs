//! Hostile clients on raw TCP sockets against a real cluster: request smuggling material, heads
//! over the limit, chunk sizes that would make a server wait forever, clients that send a byte a
//! second, and a thousand idle connections. Every case must be answered 4xx (501 for an unknown
//! transfer coding) or closed cleanly, never 5xx and never later than its bound; afterwards no
//! process has panicked and a key written before the attacks reads back exactly.
//!
//! The servers run with short client timeouts (see `hostile_cluster`) so that this takes seconds.

use bytes::Bytes;
use http::StatusCode;
use std::time::{Duration, Instant};
use testkit::{Cluster, ClusterConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_TIMEOUT_MS: u64 = 1000;
const IDLE_TIMEOUT_MS: u64 = 2000;
const BODY_STALL_MS: u64 = 1000;
/// How late past its bound a server may act on a busy two-core machine.
const SLACK: Duration = Duration::from_secs(4);

const KNOWN_KEY: &[u8] = b"known key";
const KNOWN_VALUE: &[u8] = b"a value written before the attacks";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A cluster whose servers hold clients to short bounds, with a known key written.
async fn hostile_cluster() -> Cluster {
    cluster_with_bounds(HEADER_TIMEOUT_MS, IDLE_TIMEOUT_MS).await
}

/// A cluster whose servers give a head `header_ms` and an idle connection `idle_ms` (the
/// frontends; the others keep their default idle bound, above their clients' pool timeout).
async fn cluster_with_bounds(header_ms: u64, idle_ms: u64) -> Cluster {
    let header = ["--client-header-timeout-ms".to_owned(), header_ms.to_string()];
    let mut frontend_args = header.to_vec();
    frontend_args.extend(
        [
            ("--client-idle-timeout-ms", idle_ms),
            ("--client-body-stall-ms", BODY_STALL_MS),
            ("--client-body-min-bytes-per-s", 1024),
        ]
        .iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()]),
    );
    let config = ClusterConfig {
        frontend_args,
        storage_args: header.to_vec(),
        controller_args: header.to_vec(),
        ..ClusterConfig::default()
    };
    let cluster = Cluster::start(config).await;
    assert_eq!(cluster.set(0, KNOWN_KEY, Bytes::from_static(KNOWN_VALUE)).await.0, StatusCode::OK);
    cluster
}

/// No process panicked, and the known key still reads back exactly, from every frontend.
async fn assert_unharmed(cluster: &Cluster) {
    for process in std::iter::once(&cluster.controller).chain(&cluster.storage).chain(&cluster.frontends) {
        assert!(!process.log().contains("panicked"), "{} panicked:\n{}", process.name, process.log());
    }
    for f in 0..cluster.frontends.len() {
        assert_eq!(cluster.get(f, KNOWN_KEY).await, (StatusCode::OK, Bytes::from_static(KNOWN_VALUE)));
    }
}

/// One response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        format!("{}{}", self.head, String::from_utf8_lossy(&self.body))
    }
}

/// Reads the next final response (skipping `100 Continue`), or `None` if the server closed the
/// connection first. Panics if neither happens within `within`.
async fn read_answer(stream: &mut (impl AsyncReadExt + Unpin), within: Duration) -> Option<Answer> {
    let read = async {
        let mut buf = Vec::new();
        loop {
            let head_end = loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
                let mut chunk = [0; 16 << 10];
                match stream.read(&mut chunk).await {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return None,
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).expect("a status line");
            buf.drain(..head_end);
            if status == 100 {
                continue;
            }
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                })
                .map_or(0, |v| v.parse::<usize>().expect("a length"));
            while buf.len() < length {
                let mut chunk = [0; 16 << 10];
                match stream.read(&mut chunk).await {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            return Some(Answer { status, head, body: buf[..length.min(buf.len())].to_vec() });
        }
    };
    tokio::time::timeout(within, read).await.expect("neither an answer nor a close in time")
}

/// Whether the server closes the connection (after any answer) within `within`.
async fn closes_within(stream: &mut TcpStream, within: Duration) -> bool {
    let drain = async {
        let mut sink = [0; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    tokio::time::timeout(within, drain).await.is_ok()
}

/// Sends `request` on a fresh connection to `addr`; the answer, and whether the server then
/// closed the connection.
async fn exchange(addr: &str, request: &[u8]) -> (Option<Answer>, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // A server may refuse and close before reading everything.
    let _ = stream.write_all(request).await;
    let answer = read_answer(&mut stream, SLACK).await;
    (answer, closes_within(&mut stream, SLACK).await)
}

#[tokio::test]
async fn smuggling_material_is_refused_and_changes_nothing() {
    let cluster = hostile_cluster().await;
    let big_head = format!("GET /get/?key=known HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "p".repeat(1 << 20));
    let smuggled = "GET /set/?key=known&value=smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("Content-Length and chunked", format!("POST /set/?key=known HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"), 400, "both Content-Length and Transfer-Encoding"),
        ("chunked and Content-Length", format!("POST /set/?key=known HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n{smuggled}"), 400, "both Content-Length and Transfer-Encoding"),
        ("two Content-Lengths", format!("POST /set/?key=known HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 59\r\n\r\n{smuggled}"), 400, "more than one Content-Length"),
        ("two equal Content-Lengths", "POST /set/?key=known HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx".into(), 400, "more than one Content-Length"),
        ("obs-fold", format!("POST /set/?key=known HTTP/1.1\r\nX-A: a\r\n Content-Length: 59\r\n\r\n{smuggled}"), 400, "malformed request head"),
        ("NUL in a header value", "GET /get/?key=known HTTP/1.1\r\nX-A: a\0b\r\n\r\n".into(), 400, "malformed request head"),
        ("NUL in the target", "GET /get/?key=kn\0own HTTP/1.1\r\n\r\n".into(), 400, "malformed request head"),
        ("a space in a header name", "GET /get/?key=known HTTP/1.1\r\nX A: b\r\n\r\n".into(), 400, "malformed request head"),
        ("a bare CR", "GET /get/?key=known HTTP/1.1\rX-A: b\r\n\r\n".into(), 400, "malformed request head"),
        ("chunk size ffffffffffffffff", "POST /set/?key=known HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n".into(), 400, "chunk size"),
        ("chunk size overflowing", "POST /set/?key=known HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n".into(), 400, "overflows"),
        ("gzip, chunked", "POST /set/?key=known HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".into(), 501, "not supported"),
        ("chunked, chunked", "POST /set/?key=known HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".into(), 400, "more than once"),
        ("two chunked headers", "POST /set/?key=known HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), 400, "more than once"),
        ("gzip alone", "POST /set/?key=known HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nhello".into(), 400, "does not end in chunked"),
        ("a trailer field", "POST /set/?key=known HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-T: 1\r\n\r\n".into(), 400, "trailer"),
        ("a complete head over 1 MiB", big_head.clone(), 431, "longer than 1048576 bytes"),
        ("a head over 1 MiB never ending", format!("GET /get/?key={}", "k".repeat(1 << 20)), 431, "longer than"),
        ("an HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".into(), 400, "malformed request head"),
    ];
    for (name, request, status, message) in &cases {
        let (answer, closed) = exchange(cluster.frontend(0), request.as_bytes()).await;
        let answer = answer.unwrap_or_else(|| panic!("{name}: closed without an answer"));
        assert_eq!(answer.status, *status, "{name}: {}", answer.text());
        assert!(answer.text().contains(message), "{name}: {}", answer.text());
        assert!(closed, "{name}: the connection stays open after {}", answer.text());
    }
    // The same over-limit head arriving in many small pieces.
    let mut stream = TcpStream::connect(cluster.frontend(0)).await.unwrap();
    for piece in big_head.as_bytes().chunks(1000) {
        if stream.write_all(piece).await.is_err() {
            break; // refused before the end: fine
        }
    }
    assert_eq!(read_answer(&mut stream, SLACK).await.expect("an answer").status, 431);
    // A request after a smuggling attempt on the same connection is never answered.
    let (answer, _) = exchange(cluster.frontend(1), cases[0].1.as_bytes()).await;
    assert_eq!(answer.expect("an answer").status, 400);
    // Bare LF line endings are read as hyper reads them: accepted, the same request.
    let (answer, _) =
        exchange(cluster.frontend(0), b"GET /get/?key=known%20key HTTP/1.1\nConnection: close\n\n").await;
    let answer = answer.expect("an answer");
    assert_eq!((answer.status, answer.body.as_slice()), (200, KNOWN_VALUE), "{}", answer.text());
    for storage in &cluster.storage {
        let (answer, closed) = exchange(&storage.addr, cases[0].1.as_bytes()).await;
        assert_eq!((answer.map(|a| a.status), closed), (Some(400), true), "{}", storage.name);
    }
    assert_unharmed(&cluster).await;
}

/// Sends `bytes` one at a time, `every` apart, on the write half, until the server closes.
fn trickle(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    bytes: Vec<u8>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for byte in bytes {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// Connects to `addr`, sends `prefix` at once and then `slow` a byte every `every`: the answer
/// and how long it took.
async fn slow_client(addr: &str, prefix: &[u8], slow: &[u8], every: Duration) -> (Option<Answer>, Duration) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(prefix).await.unwrap();
    let started = Instant::now();
    let writing = trickle(writer, slow.to_vec(), every);
    let answer = read_answer(&mut reader, ms(60_000)).await;
    writing.abort();
    (answer, started.elapsed())
}

#[tokio::test]
async fn slow_heads_are_answered_408_by_every_server() {
    let cluster = hostile_cluster().await;
    let head_bound = ms(HEADER_TIMEOUT_MS) + SLACK;
    let slow_head = b"GET /get/?key=known%20key HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut targets = vec![("frontend", cluster.frontend(0).to_owned())];
    targets.push(("storage node", cluster.storage[0].addr.clone()));
    targets.push(("controller", cluster.controller.addr.clone()));
    for (name, addr) in &targets {
        let (answer, took) = slow_client(addr, b"", slow_head, ms(300)).await;
        let answer = answer.unwrap_or_else(|| panic!("{name}: closed without an answer"));
        assert_eq!(answer.status, 408, "{name}: {}", answer.text());
        assert!(took < head_bound, "{name}: a slow head held for {took:?}");
    }
    // A slow head after a request on the frontend's hyper path (HTTP/1.0 goes there).
    let stream = TcpStream::connect(cluster.frontend(0)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(b"GET /get/?key=known%20key HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
    assert_eq!(read_answer(&mut reader, SLACK).await.map(|a| a.status), Some(200));
    let (writing, started) = (trickle(writer, slow_head.to_vec(), ms(300)), Instant::now());
    let answer = read_answer(&mut reader, head_bound).await.expect("an answer");
    writing.abort();
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert!(started.elapsed() < head_bound, "a slow head held for {:?}", started.elapsed());
    assert_unharmed(&cluster).await;
}

#[tokio::test]
async fn slow_bodies_are_cut_off_and_slow_uploads_pass() {
    let cluster = hostile_cluster().await;
    // A byte every 300 ms never stalls a second, but is far below 1 KiB/s.
    let body = vec![b'b'; 100];
    let cases: [(&str, &[u8], u16, &str); 2] = [
        (
            "fast path",
            b"POST /set/?key=slow HTTP/1.1\r\nContent-Length: 100\r\n\r\n",
            408,
            "request body too slow",
        ),
        (
            "hyper",
            b"POST /set/?key=slow HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n",
            400,
            "request body too slow",
        ),
    ];
    for (name, head, status, message) in cases {
        let (answer, took) = slow_client(cluster.frontend(0), head, &body, ms(300)).await;
        let answer = answer.unwrap_or_else(|| panic!("{name}: closed without an answer"));
        assert_eq!(answer.status, status, "{name}: {}", answer.text());
        assert!(answer.text().contains(message), "{name}: {}", answer.text());
        // Allowed: the stall bound plus a second per KiB received (under 1 KiB here).
        assert!(took < ms(2 * BODY_STALL_MS) + SLACK, "{name}: a slow body held for {took:?}");
    }
    assert_eq!(cluster.get(0, b"slow").await.0, StatusCode::NOT_FOUND, "no partial value was stored");

    // A legitimate upload over a slow link, 1 KiB every 100 ms, passes on both paths.
    let value: Vec<u8> = (0..20 << 10).map(|i| (i % 251) as u8).collect();
    for head in [
        format!("POST /set/?key=upload HTTP/1.1\r\nContent-Length: {}\r\n\r\n", value.len()),
        format!("POST /set/?key=upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", value.len()),
    ] {
        let chunked = head.contains("chunked");
        let mut stream = TcpStream::connect(cluster.frontend(1)).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        for piece in value.chunks(1024) {
            stream.write_all(piece).await.unwrap();
            tokio::time::sleep(ms(100)).await;
        }
        if chunked {
            stream.write_all(b"\r\n0\r\n\r\n").await.unwrap();
        }
        let answer = read_answer(&mut stream, SLACK).await.expect("an answer");
        assert_eq!(answer.status, 200, "chunked: {chunked}: {}", answer.text());
        assert_eq!(cluster.get(0, b"upload").await, (StatusCode::OK, Bytes::from(value.clone())));
    }
    assert_unharmed(&cluster).await;
}

#[tokio::test]
async fn idle_connections_close_after_their_bound() {
    let cluster = hostile_cluster().await;
    // Before any request, and after one on each path.
    let mut idle = TcpStream::connect(cluster.frontend(0)).await.unwrap();
    let started = Instant::now();
    assert!(closes_within(&mut idle, ms(IDLE_TIMEOUT_MS) + SLACK).await, "an idle connection stays open");
    assert!(
        started.elapsed() >= ms(IDLE_TIMEOUT_MS) - ms(100),
        "closed before its bound: {:?}",
        started.elapsed()
    );
    for request in [
        &b"GET /get/?key=known%20key HTTP/1.1\r\n\r\n"[..],
        b"GET /get/?key=known%20key HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(cluster.frontend(0)).await.unwrap();
        stream.write_all(request).await.unwrap();
        assert_eq!(read_answer(&mut stream, SLACK).await.map(|a| a.status), Some(200));
        assert!(
            closes_within(&mut stream, ms(IDLE_TIMEOUT_MS) + SLACK).await,
            "a kept-alive connection stays open"
        );
    }
    assert_unharmed(&cluster).await;
}

#[tokio::test]
async fn clients_that_stop_reading_are_dropped() {
    let cluster = hostile_cluster().await;
    // Larger than what the sockets' buffers hold, so the server's writes stall.
    let value = Bytes::from(vec![b'v'; 48 << 20]);
    assert_eq!(cluster.set(0, b"big", value.clone()).await.0, StatusCode::OK);
    let requests: [&[u8]; 2] = [
        b"GET /get/?key=big HTTP/1.1\r\n\r\n",
        b"GET /get/?key=big HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ];
    for request in requests {
        let mut stream = TcpStream::connect(cluster.frontend(0)).await.unwrap();
        stream.write_all(request).await.unwrap();
        tokio::time::sleep(ms(BODY_STALL_MS) + SLACK).await;
        let mut received = Vec::new();
        let read = tokio::time::timeout(SLACK, stream.read_to_end(&mut received)).await;
        assert!(read.is_ok(), "the server still holds the connection");
        assert!(received.len() < value.len(), "{} bytes: the whole answer was buffered", received.len());
    }
    assert_unharmed(&cluster).await;
}

/// Every byte percent-encoded: the longest target a key can need.
fn escaped(key: &[u8]) -> String {
    key.iter().map(|b| format!("%{b:02X}")).collect()
}

/// The longest key accepted by default (`--max-key-bytes`): the storage engine's limit.
const LONGEST_STORABLE_KEY: usize = common::proto::MAX_KEY_BYTES;

#[tokio::test]
async fn the_longest_storable_key_of_any_bytes_works_through_the_public_port() {
    let cluster = hostile_cluster().await;
    let key: Vec<u8> =
        (0..LONGEST_STORABLE_KEY as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let target = escaped(&key);
    assert!(target.len() > 3 * 65_000, "far past hyper's 65,534-byte target limit");
    let request = |method: &str, path: &str, value: &[u8]| {
        let head = format!(
            "{method} {path}?key={target} HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            value.len()
        );
        [head.as_bytes(), value].concat()
    };
    for (i, value) in [b"small".to_vec(), vec![b'v'; 200_000]].into_iter().enumerate() {
        let (answer, _) = exchange(cluster.frontend(i % 2), &request("POST", "/set/", &value)).await;
        let answer = answer.expect("an answer");
        assert_eq!(answer.status, 200, "{}", answer.text());
        let (answer, _) = exchange(cluster.frontend((i + 1) % 2), &request("GET", "/get/", b"")).await;
        let answer = answer.expect("an answer");
        assert_eq!((answer.status, answer.body.len()), (200, value.len()), "{}", answer.head);
        assert!(answer.body == value);
    }
    let (answer, _) = exchange(cluster.frontend(0), &request("DELETE", "/delete/", b"")).await;
    assert_eq!(answer.map(|a| a.status), Some(200));
    let (answer, _) = exchange(cluster.frontend(1), &request("GET", "/get/", b"")).await;
    assert_eq!(answer.map(|a| a.status), Some(404));
    // One byte over the frontend's limit: 413, with a message.
    let over = format!("GET /get/?key={target}{} HTTP/1.1\r\nConnection: close\r\n\r\n", "%41".repeat(6));
    let (answer, _) = exchange(cluster.frontend(0), over.as_bytes()).await;
    let answer = answer.expect("an answer");
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert!(answer.text().contains("key is 65537 bytes; the limit is 65531"), "{}", answer.text());
    // Such a target cannot go to hyper: a chunked body is refused, with a message.
    let chunked = format!("POST /set/?key={target} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    let (answer, closed) = exchange(cluster.frontend(0), chunked.as_bytes()).await;
    let answer = answer.expect("an answer");
    assert!(answer.status == 414 && closed && answer.text().contains("Content-Length"), "{}", answer.text());
    assert_unharmed(&cluster).await;
}

/// The pid of the process listening on `addr` (`127.0.0.1:port`), from /proc.
fn pid_listening_on(addr: &str) -> u32 {
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let local = format!("0100007F:{port:04X}");
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let inode = tcp
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
        .map(|fields| fields[9].to_owned())
        .unwrap_or_else(|| panic!("nothing listens on {addr}"));
    let socket = format!("socket:[{inode}]");
    for process in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = process.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else { continue };
        if fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == socket))
        {
            return pid;
        }
    }
    panic!("no process holds {socket}");
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Opens `n` connections to `addr`, each sending `prefix`.
async fn open(addr: &str, n: usize, prefix: &[u8]) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(prefix).await.unwrap();
        streams.push(stream);
    }
    streams
}

#[tokio::test]
async fn a_thousand_idle_or_slow_connections_cost_bounded_memory() {
    const CONNECTIONS: usize = 1000;
    /// Allowed growth for a thousand connections: 48 KiB each.
    const BOUND_KIB: u64 = 48 * CONNECTIONS as u64;
    // Bounds long enough to open them all before any is closed.
    const BOUND_MS: u64 = 8000;
    let cluster = cluster_with_bounds(BOUND_MS, BOUND_MS).await;
    let pid = pid_listening_on(cluster.frontend(0));
    let settle = || tokio::time::sleep(ms(300));
    let before = rss_kib(pid);
    let idle = open(cluster.frontend(0), CONNECTIONS, b"").await;
    settle().await;
    let with_idle = rss_kib(pid);
    let slow =
        open(cluster.frontend(0), CONNECTIONS, b"GET /get/?key=known%20key HTTP/1.1\r\nHost: x\r\n").await;
    settle().await;
    let with_slow = rss_kib(pid);
    eprintln!(
        "frontend RSS: {before} KiB before; {with_idle} KiB with {CONNECTIONS} idle connections; \
         {with_slow} KiB with {CONNECTIONS} more sending a head slowly"
    );
    let (idle_cost, slow_cost) = (with_idle.saturating_sub(before), with_slow.saturating_sub(with_idle));
    assert!(idle_cost < BOUND_KIB, "{CONNECTIONS} idle connections cost {idle_cost} KiB");
    assert!(slow_cost < BOUND_KIB, "{CONNECTIONS} slow heads cost {slow_cost} KiB");
    // Meanwhile the frontend serves.
    assert_eq!(cluster.get(0, KNOWN_KEY).await.0, StatusCode::OK);
    // Every one is closed within its bound: slow heads answered 408, idle ones just closed.
    let started = Instant::now();
    let bound = ms(BOUND_MS) + SLACK;
    let answers = futures_util::future::join_all(
        slow.into_iter()
            .map(|mut stream| async move { read_answer(&mut stream, bound).await.map(|a| a.status) }),
    )
    .await;
    assert!(answers.iter().all(|status| *status == Some(408)), "{:?}", &answers[..5]);
    let closed = futures_util::future::join_all(
        idle.into_iter().map(|mut stream| async move { closes_within(&mut stream, bound).await }),
    )
    .await;
    assert!(closed.iter().all(|&closed| closed), "idle connections left open after {:?}", started.elapsed());
    settle().await;
    eprintln!("frontend RSS: {} KiB after they closed", rss_kib(pid));
    assert_unharmed(&cluster).await;
}
