//! The fast path, and hyper behind `common::guard`, checked against hyper alone on the same
//! bytes: random bytes, and valid requests mutated with the usual smuggling material (both
//! Content-Length and chunked, obs-fold, bare LF, NUL, spaces in names, duplicate headers, huge
//! numbers).
//!
//! - Every request the fast path answers itself, hyper alone reads identically (method, path,
//!   query, body bytes) and in the same order. So whenever hyper refuses a request the fast path
//!   refuses it or hands it over, and the two never disagree about where a request ends.
//! - Hyper behind the guard reads exactly the requests the guard's own framing finds (so the
//!   guard's checks apply to every request hyper reads), and hyper alone reads them too (the
//!   guard only ever refuses more).
//!
//! `VF_FUZZ_CASES=100000 cargo test -p frontend hyper_agreement` runs more cases than the
//! default 256.

use super::*;
use common::guard::Rules;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMITS: Limits = Limits { max_key_bytes: 64 << 10, max_value_bytes: 1 << 20 };

const RULES: Rules = Rules {
    timeouts: common::guard::ClientTimeouts {
        header_ms: 15_000,
        idle_ms: 60_000,
        body_stall_ms: 15_000,
        body_min_bytes_per_s: 1024,
    },
    max_head_bytes: common::http::MAX_HEAD_BYTES,
    max_chunk_bytes: 1 << 20,
};

/// One request as a server read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    /// The body, or `None` if it could not be read.
    body: Option<Vec<u8>>,
}

/// The requests the fast path answers itself from `input`, in order, until it stops.
fn fast_path(input: &[u8]) -> Vec<Seen> {
    let (mut at, mut seen) = (0, Vec::new());
    while let Head::Small(request) = parse_head(&input[at..], &LIMITS) {
        let end = at + request.head_len + request.body_len;
        if end > input.len() {
            break;
        }
        let (path, query) = request.path_and_query();
        seen.push(Seen {
            method: request.method.to_string(),
            path: path.to_owned(),
            query: query.map(str::to_owned),
            body: Some(input[at + request.head_len..end].to_vec()),
        });
        at = end;
        if !request.keep_alive {
            break;
        }
    }
    seen
}

/// The requests the guard lets through to hyper from `input`, by its own framing rules: a body
/// that is cut short or refused reads as `None`, and ends the connection.
fn guard_view(input: &[u8], rules: &Rules) -> Vec<Seen> {
    let (mut at, mut seen) = (0, Vec::new());
    while let Parsed::Complete(head) = framing::parse_head(&input[at..], rules.max_head_bytes) {
        if head.target.len() > framing::MAX_HYPER_TARGET_BYTES || head.method == Method::CONNECT {
            break;
        }
        at += head.len;
        let body = match head.framing {
            Framing::Empty => Some(Vec::new()),
            Framing::Length(n) => input.get(at..at + n as usize).map(<[u8]>::to_vec),
            Framing::Chunked => dechunk(input, &mut at, rules.max_chunk_bytes),
        };
        let uri: http::Uri = head.target.parse().expect("the guard checked it");
        seen.push(Seen {
            method: head.method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            body: body.clone(),
        });
        match body {
            Some(body) if head.keep_alive => {
                at += if head.framing == Framing::Chunked { 0 } else { body.len() }
            }
            _ => break,
        }
    }
    seen
}

/// Decodes the chunked body at `input[*at..]`, moving `at` past it.
fn dechunk(input: &[u8], at: &mut usize, max_chunk_bytes: u64) -> Option<Vec<u8>> {
    let (mut chunked, mut data) = (framing::Chunked::new(max_chunk_bytes), Vec::new());
    loop {
        match chunked.step(&input[*at..]) {
            framing::Step::Framing(n) => *at += n,
            framing::Step::Data(n) => {
                let n = (n as usize).min(input.len() - *at);
                if n == 0 {
                    return None;
                }
                data.extend_from_slice(&input[*at..*at + n]);
                chunked.passed(n as u64);
                *at += n;
            }
            framing::Step::End(n) => {
                *at += n;
                return Some(data);
            }
            framing::Step::NeedMore | framing::Step::Refused(_) => return None,
        }
    }
}

async fn record(seen: Arc<Mutex<Vec<Seen>>>, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.ok().map(|body| body.to_bytes().to_vec());
    let (path, query) = (parts.uri.path().to_owned(), parts.uri.query().map(str::to_owned));
    seen.lock().unwrap().push(Seen { method: parts.method.to_string(), path, query, body });
    common::http::text(StatusCode::OK, "ok")
}

/// Writes `input`, ends the stream, and reads every answer while `server` runs.
async fn exchange(input: &[u8], mut client: tokio::io::DuplexStream, server: impl std::future::Future) {
    let client_side = async {
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let mut answers = Vec::new();
        let _ = client.read_to_end(&mut answers).await;
    };
    let both = async { tokio::join!(client_side, server) };
    tokio::time::timeout(std::time::Duration::from_secs(10), both).await.expect("the server hung");
}

/// The requests hyper alone reads from `input`.
async fn hyper_alone(input: &[u8]) -> Vec<Seen> {
    let (client, server) = tokio::io::duplex(1 << 20);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let service = hyper::service::service_fn(move |request| {
        let recorder = recorder.clone();
        async move { Ok::<_, std::convert::Infallible>(record(recorder, request).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Half-close: the end of the input does not abort the requests before it.
    builder.half_close(true).max_buf_size(common::http::MAX_HEAD_BYTES + (64 << 10));
    exchange(input, client, builder.serve_connection(TokioIo::new(server), service)).await;
    Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
}

/// The requests hyper reads from `input` behind the guard.
async fn behind_guard(input: &[u8]) -> Vec<Seen> {
    let (client, server) = tokio::io::duplex(1 << 20);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let handler = move |request| record(recorder.clone(), request);
    let (_trigger, shutdown) = common::shutdown::channel();
    exchange(
        input,
        client,
        common::http::serve_connection(server, BytesMut::new(), handler, shutdown, RULES),
    )
    .await;
    let seen = seen.lock().unwrap().clone();
    seen
}

const VALID: &[&str] = &[
    "GET /get/?key=a HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST /set/?key=k HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    "POST /set/?key=k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "DELETE /delete/?key=k HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
    "GET /get/?key=a%20b&r=all HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "POST /set/?key=k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
];

/// Header lines, inserted where a line starts.
const HEADERS: &[&str] = &[
    "Content-Length: 5\r\n",
    "Content-Length: 0\r\n",
    "Content-Length: 2\r\n",
    "Content-Length: 5, 5\r\n",
    "Content-Length: +5\r\n",
    "Content-Length: 99999999999999999999\r\n",
    "Content-Length : 5\r\n",
    "Content Length: 5\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Transfer-Encoding: gzip, chunked\r\n",
    "Transfer-Encoding: chunked, chunked\r\n",
    "Transfer-Encoding:\tchunked\r\n",
    "Transfer-Encoding: gzip\r\n",
    "Transfer-Encoding: xchunked\r\n",
    "Expect: 100-continue\r\n",
    "Connection: close\r\n",
    "Connection: upgrade\r\nUpgrade: h2c\r\n",
    "Host: x\r\n",
    "X A: b\r\n",
    " folded\r\n",
    "\tfolded\r\n",
    "X: a\0b\r\n",
    "X: a\rb\r\n",
    "X: a\n",
    "\r\n",
    "\n",
];

/// Bytes inserted anywhere, or written over what is there.
const BYTES: &[&str] = &[
    "\r\n",
    "\n",
    "\r",
    "\0",
    " ",
    "\t",
    ":",
    ",",
    "\r\n ",
    "\r\n\r\n",
    "%",
    "#",
    "?",
    "ffffffffffffffff",
    "10000000000000000",
    "0\r\n\r\n",
    "5\r\nhello\r\n",
    "3;ext=1\r\nabc\r\n",
    "0\r\nTrailer: x\r\n\r\n",
    "HTTP/1.0",
    "HTTP/1.1",
    "-1",
    "+5",
    "1e3",
    "\u{e9}",
    "\x7f",
    "GET",
    "HEAD",
    "CONNECT",
    "5",
    "0",
];

#[derive(Debug, Clone)]
enum Edit {
    /// A header line inserted at the start of the n-th line.
    Line(prop::sample::Index, &'static str),
    Insert(prop::sample::Index, &'static str),
    Overwrite(prop::sample::Index, &'static str),
    Delete(prop::sample::Index, usize),
}

impl Edit {
    fn apply(&self, bytes: &mut Vec<u8>) {
        let at = |index: &prop::sample::Index| index.index(bytes.len() + 1);
        match self {
            Edit::Line(line, header) => {
                let starts: Vec<usize> =
                    (0..bytes.len()).filter(|&i| bytes[i] == b'\n').map(|i| i + 1).collect();
                let start = starts.get(line.index(starts.len().max(1))).copied().unwrap_or(0);
                bytes.splice(start..start, header.bytes());
            }
            Edit::Insert(index, material) => drop(bytes.splice(at(index)..at(index), material.bytes())),
            Edit::Overwrite(index, material) => {
                let start = at(index);
                bytes.splice(start..(start + material.len()).min(bytes.len()), material.bytes());
            }
            Edit::Delete(index, n) => {
                let start = at(index);
                bytes.drain(start..(start + n).min(bytes.len()));
            }
        }
    }
}

/// A few valid requests in a row, edited with smuggling material.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let index = any::<prop::sample::Index>;
    let edit = prop_oneof![
        3 => (index(), prop::sample::select(HEADERS)).prop_map(|(i, h)| Edit::Line(i, h)),
        1 => (index(), prop::sample::select(BYTES)).prop_map(|(i, m)| Edit::Insert(i, m)),
        1 => (index(), prop::sample::select(BYTES)).prop_map(|(i, m)| Edit::Overwrite(i, m)),
        1 => (index(), 1..4usize).prop_map(|(i, n)| Edit::Delete(i, n)),
    ];
    let requests = prop::collection::vec(prop::sample::select(VALID), 1..4);
    (requests, prop::collection::vec(edit, 0..4)).prop_map(|(requests, edits)| {
        let mut bytes = requests.concat().into_bytes();
        edits.iter().for_each(|edit| edit.apply(&mut bytes));
        bytes
    })
}

fn inputs() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![1 => prop::collection::vec(any::<u8>(), 0..200), 6 => mutated()]
}

fn config() -> ProptestConfig {
    let cases = std::env::var("VF_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_fast_path_answers_only_what_hyper_reads_the_same_way(input in inputs()) {
        let fast = fast_path(&input);
        let hyper = runtime().block_on(hyper_alone(&input));
        prop_assert!(hyper.len() >= fast.len(), "fast path answered {fast:?}, hyper read {hyper:?}");
        prop_assert_eq!(&hyper[..fast.len()], &fast[..]);
    }

    #[test]
    fn hyper_behind_the_guard_reads_what_the_guard_framed(input in inputs()) {
        let (guarded, alone) = runtime().block_on(async { (behind_guard(&input).await, hyper_alone(&input).await) });
        prop_assert_eq!(&guarded, &guard_view(&input, &RULES), "hyper and the guard disagree");
        prop_assert!(alone.len() >= guarded.len(), "behind the guard {guarded:?}, alone {alone:?}");
        for (guarded, alone) in guarded.iter().zip(&alone) {
            prop_assert_eq!((&guarded.method, &guarded.path, &guarded.query), (&alone.method, &alone.path, &alone.query));
            // A body the guard cut (framing hyper would have let pass) reads as an error.
            if guarded.body.is_some() {
                prop_assert_eq!(&guarded.body, &alone.body);
            }
        }
    }
}

/// The cases that matter most, always run.
#[test]
fn classic_smuggling_attempts_are_never_answered_differently() {
    let runtime = runtime();
    let cases: &[&[u8]] = &[
        b"POST /set/?key=k HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /get/?key=x HTTP/1.1\r\n\r\n",
        b"POST /set/?key=k HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\nGET /get/?key=x HTTP/1.1\r\n\r\n",
        b"POST /set/?key=k HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhelloxGET /get/?key=x HTTP/1.1\r\n\r\n",
        b"POST /set/?key=k HTTP/1.1\r\nX: a\r\n Content-Length: 5\r\n\r\nhello",
        b"POST /set/?key=k HTTP/1.1\nContent-Length: 5\n\nhelloGET /get/?key=x HTTP/1.1\n\n",
        b"POST /set/?key=k HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /set/?key=k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nhello",
        b"GET /get/?key=a\0b HTTP/1.1\r\n\r\n",
        b"GET /get/?key=a HTTP/1.1\r\nX: a\0b\r\n\r\n",
    ];
    for &input in cases {
        let fast = fast_path(input);
        let (guarded, alone) =
            runtime.block_on(async { (behind_guard(input).await, hyper_alone(input).await) });
        assert!(
            alone.starts_with(&fast),
            "{:?}: fast {fast:?}, hyper {alone:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(guarded, guard_view(input, &RULES), "{:?}", String::from_utf8_lossy(input));
        let same_heads =
            guarded.iter().zip(&alone).all(|(g, a)| (&g.method, &g.path) == (&a.method, &a.path));
        assert!(alone.len() >= guarded.len() && same_heads, "{guarded:?} vs {alone:?}");
    }
}
