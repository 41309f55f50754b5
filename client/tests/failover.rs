//! The client against fake frontends in this process: a tiny in-memory frontend that can be
//! told to answer a status instead, and raw sockets that refuse, hang or break off. Each test
//! checks what the caller sees and which frontend was asked what.

use bytes::Bytes;
use client::{Client, Error, Level};
use http::{Method, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a fake frontend does with each request.
#[derive(Clone, Debug)]
enum Behaviour {
    /// Serves the API from the shared store.
    Serve,
    /// Answers this status and message to everything (after reading the whole body).
    Answer(StatusCode, &'static str),
    /// Answers 503 to the first `n` requests, then serves.
    FailFirst(usize),
}

/// A store shared by fake frontends, as a cluster is.
type Store = Arc<Mutex<HashMap<Vec<u8>, Bytes>>>;

/// One fake frontend: its address and the `METHOD path?query` of every request it got.
struct Fake {
    addr: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn fake(behaviour: Behaviour, store: Store) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let (trigger, shutdown) = common::shutdown::channel();
    std::mem::forget(trigger); // serve until the test's runtime ends
    let handler = move |req: http::Request<hyper::body::Incoming>| {
        let (seen, store, behaviour) = (seen.clone(), store.clone(), behaviour.clone());
        async move {
            let (parts, body) = req.into_parts();
            let line = format!("{} {}", parts.method, parts.uri);
            let count = {
                let mut seen = seen.lock().unwrap();
                seen.push(line);
                seen.len()
            };
            let body = common::http::read_body(body, 256 << 20).await.unwrap_or_default();
            match behaviour {
                Behaviour::Answer(status, message) => common::http::text(status, message),
                Behaviour::FailFirst(n) if count <= n => {
                    common::http::text(StatusCode::SERVICE_UNAVAILABLE, "cluster not ready")
                }
                _ => serve(&store, &parts.method, &parts.uri, body),
            }
        }
    };
    tokio::spawn(common::http::serve(listener, handler, shutdown));
    Fake { addr, requests }
}

/// The API, from `store`.
fn serve(store: &Store, method: &Method, uri: &http::Uri, body: Bytes) -> http::Response<common::http::Body> {
    let query = common::query::Query::parse(uri.query().unwrap_or("")).unwrap();
    let key = query.get("key").unwrap().to_vec();
    let mut store = store.lock().unwrap();
    match (method.as_str(), uri.path()) {
        ("GET", "/get/") => match store.get(&key) {
            Some(value) => http::Response::new(common::http::full(value.clone())),
            None => common::http::text(StatusCode::NOT_FOUND, "key not found"),
        },
        ("POST", "/set/") => {
            store.insert(key, body);
            common::http::text(StatusCode::OK, "ok")
        }
        ("DELETE", "/delete/") => {
            store.remove(&key);
            common::http::text(StatusCode::OK, "ok")
        }
        _ => common::http::text(StatusCode::NOT_FOUND, format!("no such endpoint: {}", uri.path())),
    }
}

/// A socket fault instead of a frontend.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Nothing listens: connections are refused.
    Dead,
    /// Accepts, reads the request, closes without a word.
    Hangup,
    /// Accepts and never answers.
    Silent,
    /// Answers 200 with a declared length of 100 and closes after 10 bytes.
    BrokenBody,
}

async fn faulty(fault: Fault) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    if let Fault::Dead = fault {
        return addr; // the listener is dropped here
    }
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 4096];
            let _ = socket.read(&mut head).await;
            match fault {
                Fault::Silent => held.push(socket),
                Fault::BrokenBody => {
                    let _ =
                        socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789").await;
                }
                Fault::Dead | Fault::Hangup => {}
            }
        }
    });
    addr
}

/// A client of `addrs` with quick timeouts and backoffs, so that a test ends soon.
fn client(addrs: &[&str], retries: u32) -> Client {
    Client::builder(addrs)
        .unwrap()
        .retries(retries)
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .attempt_timeout(Duration::from_millis(300))
        .deadline(Duration::from_secs(10))
        .build()
}

#[tokio::test]
async fn every_operation_fails_over_past_a_bad_frontend() {
    let store = Store::default();
    let good = fake(Behaviour::Serve, store.clone()).await;
    let bad_answer = |status, message| async move {
        fake(Behaviour::Answer(status, message), Store::default()).await.addr
    };
    let cases = [
        ("connection refused", faulty(Fault::Dead).await),
        ("connection closed unanswered", faulty(Fault::Hangup).await),
        ("no answer in time", faulty(Fault::Silent).await),
        ("503", bad_answer(StatusCode::SERVICE_UNAVAILABLE, "too few replicas").await),
        ("500", bad_answer(StatusCode::INTERNAL_SERVER_ERROR, "storage engine error").await),
        ("502 from a proxy", bad_answer(StatusCode::BAD_GATEWAY, "bad gateway").await),
    ];
    for (case, bad) in cases {
        // A fresh client starts at its first frontend: the bad one.
        let client = client(&[&bad, &good.addr], 3);
        let key = format!("key {case}");
        client.set(&key, "v").await.unwrap_or_else(|e| panic!("{case}: set: {e}"));
        assert_eq!(client.get(&key).await.unwrap().as_deref(), Some(&b"v"[..]), "{case}");
        client.delete(&key).await.unwrap_or_else(|e| panic!("{case}: delete: {e}"));
        assert_eq!(client.get(&key).await.unwrap(), None, "{case}");
        let stats = client.stats();
        assert_eq!((stats.calls, stats.failures), (4, 0), "{case}");
        // Only the first call met the bad frontend; the rest tried it last, and never needed to.
        assert_eq!(stats.retries, 1, "{case}");
    }
}

#[tokio::test]
async fn a_get_whose_answer_breaks_off_is_retried_elsewhere() {
    let store = Store::default();
    store.lock().unwrap().insert(b"k".to_vec(), Bytes::from_static(b"the whole value"));
    let good = fake(Behaviour::Serve, store).await;
    let broken = faulty(Fault::BrokenBody).await;
    let client = client(&[&broken, &good.addr], 1);
    assert_eq!(client.get("k").await.unwrap().as_deref(), Some(&b"the whole value"[..]));
    assert_eq!(client.stats().retries, 1);
}

#[tokio::test]
async fn retries_are_bounded_by_their_count() {
    for retries in [0, 1, 2, 5] {
        let a = fake(Behaviour::Answer(StatusCode::SERVICE_UNAVAILABLE, "no quorum"), Store::default()).await;
        let b = fake(Behaviour::Answer(StatusCode::SERVICE_UNAVAILABLE, "no quorum"), Store::default()).await;
        let client = client(&[&a.addr, &b.addr], retries);
        let error = client.set("k", "v").await.unwrap_err();
        let attempts = a.requests().len() + b.requests().len();
        assert_eq!(attempts, retries as usize + 1, "retries {retries}");
        match error {
            Error::Unavailable { message, tried } => {
                assert!(message.ends_with("503 no quorum"), "{message}");
                let expected = if retries == 0 { 1 } else { 2 };
                assert_eq!(tried.len(), expected, "{tried:?}");
            }
            other => panic!("retries {retries}: {other:?}"),
        }
        assert_eq!(client.stats().failures, 1);
    }
}

#[tokio::test]
async fn the_deadline_bounds_a_call_whatever_the_retries() {
    let silent = faulty(Fault::Silent).await;
    let client = Client::builder([&silent])
        .unwrap()
        .retries(1_000)
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .attempt_timeout(Duration::from_millis(50))
        .deadline(Duration::from_millis(300))
        .build();
    match client.get("k").await.unwrap_err() {
        Error::Timeout { last, tried, .. } => {
            assert!(last.contains("no answer within"), "{last}");
            assert_eq!(tried, [format!("http://{silent}")]);
        }
        other => panic!("{other:?}"),
    }
    assert!(client.stats().retries < 1_000);
}

#[tokio::test]
async fn answers_map_to_errors_and_client_errors_are_not_retried() {
    type Check = fn(&Result<Option<Bytes>, Error>) -> bool;
    let cases: [(StatusCode, &'static str, Check, usize); 6] = [
        (
            StatusCode::BAD_REQUEST,
            "missing parameter `key`",
            |r| matches!(r, Err(Error::BadRequest(m)) if m == "missing parameter `key`"),
            1,
        ),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "key is 70000 bytes",
            |r| matches!(r, Err(Error::BadRequest(m)) if m.contains("70000")),
            1,
        ),
        (StatusCode::NOT_FOUND, "key not found", |r| matches!(r, Ok(None)), 1),
        (
            StatusCode::NOT_FOUND,
            "no such endpoint: /x/get/",
            |r| matches!(r, Err(Error::Unexpected { status: 404, .. })),
            1,
        ),
        (
            StatusCode::MOVED_PERMANENTLY,
            "elsewhere",
            |r| matches!(r, Err(Error::Unexpected { status: 301, .. })),
            1,
        ),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster not ready",
            |r| matches!(r, Err(Error::Unavailable { .. })),
            3,
        ),
    ];
    for (status, message, check, attempts) in cases {
        let frontend = fake(Behaviour::Answer(status, message), Store::default()).await;
        let client = client(&[&frontend.addr], 2);
        let result = client.get("k").await;
        assert!(check(&result), "{status} {message}: {result:?}");
        assert_eq!(frontend.requests().len(), attempts, "{status} {message}");
    }
    // Writes: a 404 is never "not found".
    let frontend =
        fake(Behaviour::Answer(StatusCode::NOT_FOUND, "no such endpoint: /set/"), Store::default()).await;
    let error = client(&[&frontend.addr], 2).set("k", "v").await.unwrap_err();
    assert!(
        matches!(&error, Error::Unexpected { status: 404, message, .. } if message.contains("no such endpoint")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_cluster_that_recovers_within_the_retries_costs_no_error() {
    let frontend = fake(Behaviour::FailFirst(3), Store::default()).await;
    let client = client(&[&frontend.addr], 3);
    client.set("k", "v").await.unwrap();
    assert_eq!(client.stats().retries, 3);
}

#[tokio::test]
async fn binary_keys_values_and_levels_travel_exactly() {
    let frontend = fake(Behaviour::Serve, Store::default()).await;
    let client = client(&[&frontend.addr], 0);
    let key: Vec<u8> = (0..=255u8).chain(*b"&=?+ %").collect();
    let value: Vec<u8> = (0..=255u8).rev().cycle().take(100_000).collect();
    client.with_write_level(Level::All).set(&key, value.clone()).await.unwrap();
    let got = client.with_read_level(Level::Quorum).get(&key).await.unwrap();
    assert_eq!(got.as_deref(), Some(value.as_slice()));
    client.with_write_level(Level::One).delete(&key).await.unwrap();
    client.get(&key).await.unwrap();
    let encoded = common::query::encode(&key);
    assert_eq!(
        frontend.requests(),
        [
            format!("POST /set/?key={encoded}&w=all"),
            format!("GET /get/?key={encoded}&r=quorum"),
            format!("DELETE /delete/?key={encoded}&w=one"),
            format!("GET /get/?key={encoded}"),
        ]
    );
}

#[tokio::test]
async fn a_path_prefix_is_kept() {
    let frontend = fake(Behaviour::Answer(StatusCode::NOT_FOUND, "key not found"), Store::default()).await;
    let client = client(&[&format!("http://{}/velourfog/", frontend.addr)], 0);
    assert_eq!(client.get("k").await.unwrap(), None);
    assert_eq!(frontend.requests(), ["GET /velourfog/get/?key=k"]);
}

/// A stream of `chunks` chunks of `size` bytes each, byte `i` of the whole being `i % 251`.
fn chunks(chunks: usize, size: usize) -> (Vec<u8>, impl futures_util::Stream<Item = std::io::Result<Bytes>>) {
    let whole: Vec<u8> = (0..chunks * size).map(|i| (i % 251) as u8).collect();
    let parts: Vec<std::io::Result<Bytes>> =
        whole.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    (whole, futures_util::stream::iter(parts))
}

#[tokio::test]
async fn a_streamed_set_goes_elsewhere_only_while_nothing_was_sent() {
    // Refused: nothing was sent, so the next frontend gets the whole stream.
    let store = Store::default();
    let good = fake(Behaviour::Serve, store.clone()).await;
    let dead = faulty(Fault::Dead).await;
    let (whole, stream) = chunks(40, 64 << 10);
    client(&[&dead, &good.addr], 3).set_stream("big", Some(whole.len() as u64), stream).await.unwrap();
    assert_eq!(store.lock().unwrap()[&b"big"[..]], whole);

    // Answered 503 after reading the body: the value is gone, so the call fails and the other
    // frontend is never asked.
    let busy =
        fake(Behaviour::Answer(StatusCode::SERVICE_UNAVAILABLE, "too few replicas"), store.clone()).await;
    let other = fake(Behaviour::Serve, store.clone()).await;
    let (whole, stream) = chunks(40, 64 << 10);
    let error = client(&[&busy.addr, &other.addr], 3)
        .set_stream("big2", Some(whole.len() as u64), stream)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Unavailable { message, .. } if message.contains("not retried")),
        "{error:?}"
    );
    assert_eq!((busy.requests().len(), other.requests().len()), (1, 0));

    // Unknown length: sent chunked, stored the same.
    let (whole, stream) = chunks(3, 1000);
    client(&[&good.addr], 0).set_stream("chunked", None, stream).await.unwrap();
    assert_eq!(store.lock().unwrap()[&b"chunked"[..]], whole);
}

#[tokio::test]
async fn a_failing_or_miscounted_source_is_reported_as_such() {
    let frontend = fake(Behaviour::Serve, Store::default()).await;
    let client = client(&[&frontend.addr], 3);
    let abc = || Ok(Bytes::from_static(b"abc"));
    type Chunks = Vec<std::io::Result<Bytes>>;
    let cases: [(Option<u64>, Chunks, &str); 4] = [
        (Some(10), vec![abc(), Err(std::io::Error::other("disk on fire"))], "disk on fire"),
        (None, vec![abc(), Err(std::io::Error::other("disk on fire"))], "disk on fire"),
        (Some(10), vec![abc()], "ended after 3 of its declared 10 bytes"),
        (Some(2), vec![abc()], "longer than its declared 2 bytes"),
    ];
    for (length, parts, reason) in cases {
        let error = client.set_stream("k", length, futures_util::stream::iter(parts)).await.unwrap_err();
        assert!(
            matches!(&error, Error::Source(e) if e.to_string().contains(reason)),
            "{length:?}: {error:?}"
        );
    }
    assert_eq!(client.stats().retries, 0, "a source's failure is not the frontend's");
}

#[tokio::test]
async fn large_values_stream_back_chunk_by_chunk() {
    let store = Store::default();
    let frontend = fake(Behaviour::Serve, store.clone()).await;
    let client = client(&[&frontend.addr], 0);
    let (whole, stream) = chunks(64, 64 << 10);
    client.set_stream("big", Some(whole.len() as u64), stream).await.unwrap();
    let mut value = client.get_stream("big").await.unwrap().expect("stored");
    assert_eq!(value.length(), Some(whole.len() as u64));
    let mut got = Vec::new();
    while let Some(chunk) = value.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, whole);
    assert!(client.get_stream("missing").await.unwrap().is_none());
    let value = client.get_stream("big").await.unwrap().expect("stored");
    assert_eq!(value.collect().await.unwrap(), whole);
}

#[test]
fn bad_frontend_lists_are_refused_before_any_call() {
    let cases: [(&[&str], &str); 3] = [
        (&[], "no frontend given"),
        (&["127.0.0.1"], "`127.0.0.1` is not a frontend address"),
        (&["https://fe:443"], "only http://"),
    ];
    for (list, reason) in cases {
        let error = Client::new(list).unwrap_err().to_string();
        assert!(error.contains(reason), "{list:?}: {error}");
    }
}
