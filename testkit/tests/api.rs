//! The public API end to end on a real cluster: what a user sees for good and bad input.

use bytes::Bytes;
use http::{Method, StatusCode};
use testkit::{Cluster, ClusterConfig};

async fn call(cluster: &Cluster, method: Method, path: &str, body: &'static [u8]) -> (StatusCode, String) {
    let (status, body) =
        cluster.client.call(method, cluster.frontend(0), path, Bytes::from_static(body)).await.expect("call");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn set_get_overwrite_delete_across_frontends() {
    let cluster = Cluster::start(ClusterConfig::default()).await;
    assert_eq!(cluster.get(1, b"greeting").await.0, StatusCode::NOT_FOUND);
    let (status, body) = call(&cluster, Method::GET, "/set/?key=greeting&value=hello", b"").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    // Exactly the stored bytes, no newline added, from the other frontend.
    assert_eq!(cluster.get(1, b"greeting").await, (StatusCode::OK, Bytes::from_static(b"hello")));
    assert_eq!(cluster.set(1, b"greeting", "bonjour").await.0, StatusCode::OK);
    assert_eq!(cluster.get(0, b"greeting").await.1, Bytes::from_static(b"bonjour"));
    let (status, _) = call(&cluster, Method::GET, "/delete/?key=greeting", b"").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&cluster, Method::GET, "/get/?key=greeting", b"").await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, "key not found\n"));
    assert_eq!(cluster.get(1, b"greeting").await.0, StatusCode::NOT_FOUND);
    // A deleted key can be written again; HTTP DELETE works too.
    assert_eq!(cluster.set(0, b"greeting", "again").await.0, StatusCode::OK);
    assert_eq!(cluster.get(1, b"greeting").await.1, Bytes::from_static(b"again"));
    assert_eq!(cluster.delete(1, b"greeting").await.0, StatusCode::OK);
    assert_eq!(cluster.get(0, b"greeting").await.0, StatusCode::NOT_FOUND);
    // Deleting a key that never existed is fine and leaves it missing.
    assert_eq!(cluster.delete(0, b"never-set").await.0, StatusCode::OK);
    assert_eq!(cluster.get(0, b"never-set").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn any_byte_string_is_a_key_or_value() {
    let cluster = Cluster::start(ClusterConfig::default()).await;
    let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let keys: Vec<Vec<u8>> = vec![
        b"a&b=c?d".to_vec(),
        b"with space and +plus".to_vec(),
        "ключ-été-鍵-🔑".as_bytes().to_vec(),
        vec![0, 1, 2, 255, 254, b'%', b'#'],
        b"".to_vec(),
        b"/slashes/and\\back".to_vec(),
    ];
    for (i, key) in keys.iter().enumerate() {
        let value = [&binary[..i * 100], key.as_slice()].concat();
        assert_eq!(cluster.set(i % 2, key, value.clone()).await.0, StatusCode::OK, "key {key:?}");
        assert_eq!(cluster.get((i + 1) % 2, key).await, (StatusCode::OK, Bytes::from(value)), "key {key:?}");
    }
    // The empty value is a value, not a missing key.
    assert_eq!(cluster.set(0, b"empty", Bytes::new()).await.0, StatusCode::OK);
    assert_eq!(cluster.get(1, b"empty").await, (StatusCode::OK, Bytes::new()));
    let (status, _) = call(&cluster, Method::GET, "/set/?key=empty2&value=", b"").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cluster.get(1, b"empty2").await, (StatusCode::OK, Bytes::new()));
    // Escapes in query-string values decode exactly; `+` is a space.
    let (status, _) = call(&cluster, Method::GET, "/set/?key=q&value=%26%3D%3F+%2B%00%FF", b"").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cluster.get(0, b"q").await.1, Bytes::from_static(b"&=? +\0\xff"));
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let cluster = Cluster::start(ClusterConfig {
        frontend_args: vec!["--max-key-bytes".into(), "16".into(), "--max-value-bytes".into(), "64".into()],
        ..ClusterConfig::default()
    })
    .await;
    assert_eq!(cluster.set(0, b"k", "original").await.0, StatusCode::OK);
    let cases: &[(Method, &str, &[u8], StatusCode, &str)] = &[
        (Method::GET, "/get/", b"", StatusCode::BAD_REQUEST, "missing parameter `key`"),
        (Method::GET, "/get/?value=x", b"", StatusCode::BAD_REQUEST, "unknown parameter `value`"),
        (Method::GET, "/set/?key=k", b"", StatusCode::BAD_REQUEST, "missing parameter `value`"),
        (Method::GET, "/set/?value=v", b"", StatusCode::BAD_REQUEST, "missing parameter `key`"),
        (Method::GET, "/set/?key=k&value=%zz", b"", StatusCode::BAD_REQUEST, "malformed percent-escape"),
        (Method::GET, "/get/?key=%4", b"", StatusCode::BAD_REQUEST, "malformed percent-escape"),
        (Method::GET, "/set/?key=k&kye=v", b"", StatusCode::BAD_REQUEST, "unknown parameter `kye`"),
        (Method::GET, "/set/?key=k&key=j&value=v", b"", StatusCode::BAD_REQUEST, "more than once"),
        (Method::POST, "/set/?key=k&value=v", b"body", StatusCode::BAD_REQUEST, "both"),
        (Method::GET, "/nowhere", b"", StatusCode::NOT_FOUND, "no such endpoint"),
        (Method::GET, "/", b"", StatusCode::NOT_FOUND, "no such endpoint"),
        (Method::GET, "/v1/record?key=k", b"", StatusCode::NOT_FOUND, "no such endpoint"),
        (Method::PUT, "/set/?key=k&value=v", b"", StatusCode::METHOD_NOT_ALLOWED, "allowed: GET, POST"),
        (Method::POST, "/get/?key=k", b"", StatusCode::METHOD_NOT_ALLOWED, "allowed: GET"),
        (Method::PATCH, "/delete/?key=k", b"", StatusCode::METHOD_NOT_ALLOWED, "allowed: GET, POST, DELETE"),
        (Method::GET, "/get/?key=0123456789abcdefX", b"", StatusCode::PAYLOAD_TOO_LARGE, "limit is 16"),
        (
            Method::GET,
            "/set/?key=0123456789abcdefX&value=v",
            b"",
            StatusCode::PAYLOAD_TOO_LARGE,
            "limit is 16",
        ),
        (
            Method::POST,
            "/set/?key=k",
            &[b'x'; 65],
            StatusCode::PAYLOAD_TOO_LARGE,
            "value is 65 bytes; the limit is 64",
        ),
    ];
    for (method, path, body, status, message) in cases {
        let (got, text) = cluster
            .client
            .call(method.clone(), cluster.frontend(0), path, Bytes::from_static(body))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&text);
        assert_eq!(got, *status, "{method} {path}: {text}");
        assert!(text.contains(message), "{method} {path}: expected {message:?} in {text:?}");
        assert_eq!(text.matches('\n').count(), 1, "one-line message: {text:?}");
    }
    let too_long = format!("/set/?key=k&value={}", "v".repeat(65));
    let (status, _) = call(&cluster, Method::GET, Box::leak(too_long.into_boxed_str()), b"").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Exactly at the limits is fine.
    assert_eq!(cluster.set(0, b"0123456789abcdef", vec![7u8; 64]).await.0, StatusCode::OK);
    // None of the rejected writes touched the key.
    assert_eq!(cluster.get(1, b"k").await, (StatusCode::OK, Bytes::from_static(b"original")));
}

#[tokio::test]
async fn large_values_round_trip_byte_exact() {
    // One worker thread per process, as `./runlocal.sh` runs them on a small machine: a large
    // write's blocking sections must hand the node's only worker on, not stall it.
    let one_worker = vec!["--worker-threads".to_owned(), "1".to_owned()];
    let cluster = Cluster::start(ClusterConfig {
        storage_args: one_worker.clone(),
        frontend_args: one_worker,
        ..ClusterConfig::default()
    })
    .await;
    let mut value = vec![0u8; 24 << 20];
    let mut state = 0x9e3779b97f4a7c15u64;
    for chunk in value.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let value = Bytes::from(value);
    assert_eq!(cluster.set(0, b"photo", value.clone()).await.0, StatusCode::OK);
    for frontend in 0..2 {
        let (status, body) = cluster.get(frontend, b"photo").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), value.len());
        assert!(body == value, "24 MiB value differs after the round trip");
    }
}

/// Large values are forwarded to the replicas while they arrive. A client that goes away
/// mid-upload leaves nothing behind on any replica, and a replica that is dead when the value
/// arrives is handled as for any write: the others store it and the dead one is fenced.
#[tokio::test]
async fn streamed_large_writes_abort_cleanly_and_survive_a_dead_replica() {
    use tokio::io::AsyncWriteExt;
    let mut cluster = Cluster::start(ClusterConfig::default()).await;
    let value = Bytes::from((0..4u32 << 20).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>());

    // The client sends half of a 4 MiB body and disconnects.
    let mut socket = tokio::net::TcpStream::connect(cluster.frontend(0)).await.unwrap();
    let head = format!("POST /set/?key=cut HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n", value.len());
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&value[..value.len() / 2]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(socket);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for s in 0..3 {
        let (status, _, _) = cluster.storage_record(s, b"cut").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "storage {s} kept part of an aborted upload");
    }
    assert_eq!(cluster.get(1, b"cut").await.0, StatusCode::NOT_FOUND);
    for s in 0..3 {
        let values = cluster.dir.path().join(format!("storage{s}/db/values"));
        let left = std::fs::read_dir(&values).map_or(0, |entries| entries.count());
        assert_eq!(left, 0, "storage {s} kept the file of an aborted upload in {}", values.display());
    }

    // A whole one while every replica is alive, then one with a replica killed beforehand.
    assert_eq!(cluster.set(0, b"whole", value.clone()).await.0, StatusCode::OK);
    cluster.storage[2].kill();
    let (status, text) = cluster.set(1, b"degraded", value.clone()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&text));
    assert!(
        cluster.frontends[1].log().contains("streamed write of 4194304 bytes failed on a replica"),
        "the dead replica's failure was not seen (it is fenced; the value is not sent again)"
    );
    for (frontend, key) in [(0, &b"whole"[..]), (1, b"whole"), (0, b"degraded"), (1, b"degraded")] {
        let (status, body) = cluster.get(frontend, key).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body == value, "{} differs after the round trip", String::from_utf8_lossy(key));
    }
}

#[tokio::test]
async fn frontend_answers_503_until_the_cluster_forms() {
    let mut cluster =
        Cluster::launch(ClusterConfig { held_back_storage: 1, ..ClusterConfig::default() }).await;
    let started = std::time::Instant::now();
    let (status, text) = loop {
        match cluster.client.call(Method::GET, cluster.frontend(0), "/get/?key=k", Bytes::new()).await {
            Ok(answer) => break answer,
            Err(_) if started.elapsed() < testkit::START_DEADLINE => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("frontend never answered: {e}"),
        }
    };
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&text).contains("no partition map yet"), "{text:?}");
    // Still 503 well after every started node registered: the cluster waits for the third.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(cluster.set(1, b"k", "v").await.0, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = call(&cluster, Method::GET, "/health", b"").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    cluster.storage[2].start();
    cluster.wait_until_serving(testkit::START_DEADLINE).await;
    assert_eq!(cluster.set(1, b"k", "v").await.0, StatusCode::OK);
    assert_eq!(cluster.get(0, b"k").await, (StatusCode::OK, Bytes::from_static(b"v")));
}

#[tokio::test]
async fn sigterm_stops_every_process_cleanly() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cluster = Cluster::start(ClusterConfig::default()).await;
    assert_eq!(cluster.set(0, b"k", "v").await.0, StatusCode::OK);
    // A client keeps an idle keep-alive connection open: shutdown closes it, and does not wait.
    let mut idle = tokio::net::TcpStream::connect(cluster.frontend(0)).await.unwrap();
    idle.write_all(b"GET /get/?key=k HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = [0u8; 256];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(answer[..n].ends_with(b"\r\n\r\nv"), "{:?}", String::from_utf8_lossy(&answer[..n]));
    let deadline = std::time::Duration::from_secs(10);
    let started = std::time::Instant::now();
    for frontend in &mut cluster.frontends {
        assert!(frontend.terminate(deadline), "{} did not exit 0 on SIGTERM", frontend.name);
    }
    assert!(started.elapsed() < common::http::SHUTDOWN_GRACE, "an idle connection held up shutdown");
    assert_eq!(idle.read(&mut answer).await.unwrap(), 0, "the idle connection was closed");
    for node in &mut cluster.storage {
        assert!(node.terminate(deadline), "{} did not exit 0 on SIGTERM", node.name);
    }
    assert!(cluster.controller.terminate(deadline), "controller did not exit 0 on SIGTERM");
}

/// Sends `request` on a fresh connection to frontend 0 and reads until the server closes it.
async fn raw_exchange(cluster: &Cluster, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(cluster.frontend(0)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the frontend closes the connection after `connection: close`")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The frontend reads small requests itself and hands a connection to hyper at its first
/// request that is not small; clients see one HTTP/1.1 server either way.
#[tokio::test]
async fn one_connection_pipelines_small_requests_then_falls_back_for_the_rest() {
    let cluster = Cluster::start(ClusterConfig::default()).await;
    let answer = raw_exchange(
        &cluster,
        b"POST /set/?key=p1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none\
GET /get/?key=p1 HTTP/1.1\r\nHost: x\r\n\r\n\
GET /get/?key=missing HTTP/1.1\r\nHost: x\r\n\r\n\
POST /set/?key=p2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n\
GET /get/?key=p2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let statuses: Vec<&str> =
        answer.match_indices("HTTP/1.1 ").map(|(i, _)| &answer[i + 9..i + 12]).collect();
    assert_eq!(statuses, ["200", "200", "404", "200", "200"], "{answer}");
    let bodies = ["ok\n", "\r\n\r\none", "key not found\n", "ok\n", "\r\n\r\ntwo"];
    let mut at = 0;
    for body in bodies {
        at +=
            answer[at..].find(body).unwrap_or_else(|| panic!("{body:?} missing or out of order in {answer}"));
    }
    assert_eq!(answer.to_ascii_lowercase().matches("\r\ndate: ").count(), 5, "{answer}");

    // `connection: close` on a small request: one answer, then the connection ends.
    let answer = raw_exchange(&cluster, b"GET /get/?key=p1 HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\none"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    // HTTP/1.0, HEAD and oversized heads are hyper's.
    let answer = raw_exchange(&cluster, b"GET /get/?key=p1 HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n") && answer.ends_with("one"), "{answer}");
    let answer = raw_exchange(&cluster, b"HEAD /get/?key=p1 HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 405 ") && answer.ends_with("\r\n\r\n"), "{answer}");
    let long = format!("GET /get/?key={} HTTP/1.1\r\n\r\n", "k".repeat(2 << 20));
    let answer = raw_exchange(&cluster, long.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = Cluster::start(ClusterConfig::default()).await;
    let mut stream = tokio::net::TcpStream::connect(cluster.frontend(0)).await.unwrap();
    let head = b"POST /set/?key=p3 HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n";
    stream.write_all(head).await.unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_exact(&mut interim))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"three").await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert_eq!(cluster.get(1, b"p3").await, (StatusCode::OK, Bytes::from_static(b"three")));
}

#[tokio::test]
async fn a_write_stamped_far_in_the_future_is_refused_and_pins_nothing() {
    // The pinned-key attack: a record stamped u64::MAX would win over every later write.
    let cluster = Cluster::start(ClusterConfig::default()).await;
    let status = cluster.storage_put(0, b"pinned", u64::MAX, Bytes::from_static(b"forever")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let an_hour_ahead = common::version::now_micros() + 3_600_000_000;
    let status = cluster.storage_put(1, b"pinned", an_hour_ahead, Bytes::from_static(b"later")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, record_ts, _) = cluster.storage_record(0, b"pinned").await;
    assert_eq!((status, record_ts), (StatusCode::NOT_FOUND, None), "nothing stored");
    assert_eq!(cluster.set(0, b"pinned", "now").await.0, StatusCode::OK);
    assert_eq!(cluster.get(1, b"pinned").await, (StatusCode::OK, Bytes::from_static(b"now")));
    // A little ahead (within --max-clock-skew-ms) is fine: clocks are never exact.
    let status =
        cluster.storage_put(2, b"near", common::version::now_micros() + 1_000_000, Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn storage_endpoints_answer_405_with_allow_for_other_methods() {
    let cluster = Cluster::start(ClusterConfig { frontends: 1, ..Default::default() }).await;
    for (path, allow) in [("/v1/batch", "POST"), ("/v1/record", "GET, HEAD, PUT"), ("/v1/diff", "POST")] {
        let url = format!("http://{}{path}", cluster.storage[0].addr);
        let make = || {
            http::Request::delete(url.as_str())
                .body(http_body_util::Full::new(Bytes::new()))
                .expect("request")
        };
        let (parts, _) = cluster.client.inner.send_collect(make, testkit::REQUEST_DEADLINE).await.unwrap();
        assert_eq!(parts.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(parts.headers[http::header::ALLOW], allow, "{path}");
    }
}

#[tokio::test]
async fn keys_too_long_to_escape_into_a_url_work_end_to_end() {
    // A key of 30,000 spaces arrives as 30,000 `+` (a 30 KB URL) but escapes to 90 KB for the
    // storage node's URL, past a URL's 64 KiB: it travels in a header instead. Before, the
    // frontend panicked building the request and the client saw a dropped connection.
    let cluster = Cluster::start(ClusterConfig::default()).await;
    let raw = "+".repeat(30_000);
    for (i, value) in [Bytes::from_static(b"small"), Bytes::from(vec![b'v'; 200_000])].into_iter().enumerate()
    {
        let path = format!("/set/?key={raw}");
        let (status, body) =
            cluster.client.call(Method::POST, cluster.frontend(i % 2), &path, value.clone()).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let (status, got) = cluster
            .client
            .call(Method::GET, cluster.frontend((i + 1) % 2), &format!("/get/?key={raw}"), Bytes::new())
            .await
            .unwrap();
        assert_eq!((status, got), (StatusCode::OK, value));
    }
    let (status, _) = cluster
        .client
        .call(Method::DELETE, cluster.frontend(1), &format!("/delete/?key={raw}"), Bytes::new())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, _) = cluster
        .client
        .call(Method::GET, cluster.frontend(0), &format!("/get/?key={raw}"), Bytes::new())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    for node in cluster.storage.iter().chain(&cluster.frontends) {
        assert!(!node.log().contains("panicked"), "{} panicked", node.name);
    }
}
