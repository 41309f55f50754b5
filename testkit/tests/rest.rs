//! The REST API (`/kv/<key>`) end to end on a real cluster: any byte string as a key, versions
//! with ETag and 304, watches woken by writes through another frontend and surviving the death
//! of the replica they wait on.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use std::time::{Duration, Instant};
use testkit::{Cluster, ClusterConfig};

/// The answer to `method` on `http://addr{path}`: status, headers, body.
async fn call(
    cluster: &Cluster,
    method: Method,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (StatusCode, http::HeaderMap, Bytes) {
    let url = format!("http://{addr}{path}");
    let body = Bytes::copy_from_slice(body);
    let make = || {
        let mut request = Request::builder().method(method.clone()).uri(url.as_str());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(Full::new(body.clone())).unwrap()
    };
    let (parts, body) = cluster.client.inner.send_collect(make, Duration::from_secs(40)).await.unwrap();
    (parts.status, parts.headers, body)
}

fn path_of(key: &[u8]) -> String {
    format!("/kv/{}", common::query::encode(key))
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

#[tokio::test]
async fn any_byte_string_is_a_key_and_both_apis_share_the_keys() {
    let cluster = Cluster::start(ClusterConfig::default()).await;
    let (f0, f1) = (cluster.frontend(0).to_owned(), cluster.frontend(1).to_owned());
    let keys: Vec<Vec<u8>> = vec![
        b"a/b/c".to_vec(),
        b"%2F is not a slash".to_vec(),
        b"with space and +plus".to_vec(),
        vec![0xff, 0x00, 0x80, b'/', 0xfe],
        "ключ/🔑".as_bytes().to_vec(),
    ];
    for (i, key) in keys.iter().enumerate() {
        let value = format!("value {i}").into_bytes();
        let (status, headers, _) = call(&cluster, Method::PUT, &f0, &path_of(key), &[], &value).await;
        assert_eq!(status, StatusCode::OK, "{key:?}");
        let version = header(&headers, "vf-version").to_owned();
        assert_eq!(header(&headers, "etag"), format!("\"{version}\""));
        let (status, headers, got) = call(&cluster, Method::GET, &f1, &path_of(key), &[], b"").await;
        assert_eq!((status, got.as_ref()), (StatusCode::OK, value.as_slice()), "{key:?}");
        assert_eq!(header(&headers, "vf-version"), version, "a read answers the version written");
        // The original API sees the same key.
        assert_eq!(cluster.get(0, key).await, (StatusCode::OK, Bytes::from(value.clone())));
        let (status, headers, got) = call(&cluster, Method::HEAD, &f0, &path_of(key), &[], b"").await;
        assert_eq!((status, got.len()), (StatusCode::OK, 0));
        assert_eq!(header(&headers, "content-length"), value.len().to_string());
        let (status, ..) = call(&cluster, Method::DELETE, &f1, &path_of(key), &[], b"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(call(&cluster, Method::GET, &f0, &path_of(key), &[], b"").await.0, StatusCode::NOT_FOUND);
    }
    // Raw slashes and a literal plus in the path are part of the key.
    let (status, ..) = call(&cluster, Method::PUT, &f0, "/kv/dir/sub/file+1", &[], b"x").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cluster.get(1, b"dir/sub/file+1").await.1, Bytes::from_static(b"x"));
    // A large value streams through PUT.
    let big = vec![7u8; 3 << 20];
    assert_eq!(call(&cluster, Method::PUT, &f0, "/kv/big", &[], &big).await.0, StatusCode::OK);
    assert_eq!(call(&cluster, Method::GET, &f1, "/kv/big", &[], b"").await.2.len(), big.len());
}

#[tokio::test]
async fn bad_rest_requests_get_clear_errors() {
    let frontend_args = vec!["--max-key-bytes".to_owned(), "100".to_owned()];
    let cluster =
        Cluster::start(ClusterConfig { frontends: 1, frontend_args, ..ClusterConfig::default() }).await;
    let f0 = cluster.frontend(0).to_owned();
    let long = format!("/kv/{}", "k".repeat(101));
    let cases: &[(Method, &str, StatusCode, &str)] = &[
        (Method::GET, "/kv/bad%zzescape", StatusCode::BAD_REQUEST, "percent-escape"),
        (Method::POST, "/kv/k", StatusCode::METHOD_NOT_ALLOWED, "GET, HEAD, PUT, DELETE"),
        (Method::GET, "/kv/k?kye=1", StatusCode::BAD_REQUEST, "unknown parameter"),
        (Method::GET, "/kv/k?newer_than=5", StatusCode::BAD_REQUEST, "give `wait` too"),
        (Method::GET, "/kv/k?wait=forever", StatusCode::BAD_REQUEST, "duration"),
        (Method::GET, "/kv/k?wait=1s&newer_than=x", StatusCode::BAD_REQUEST, "version"),
        (Method::PUT, "/kv/k?w=most", StatusCode::BAD_REQUEST, "not a consistency level"),
        (Method::GET, long.as_str(), StatusCode::PAYLOAD_TOO_LARGE, "the limit is"),
    ];
    for (method, path, status, message) in cases {
        let (got, headers, body) = call(&cluster, method.clone(), &f0, path, &[], b"").await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(got, *status, "{method} {}: {body}", &path[..path.len().min(60)]);
        assert!(body.contains(message), "{body}");
        if got == StatusCode::METHOD_NOT_ALLOWED {
            assert_eq!(header(&headers, "allow"), "GET, HEAD, PUT, DELETE");
        }
    }
}

#[tokio::test]
async fn versions_make_conditional_reads_cheap() {
    let cluster = Cluster::start(ClusterConfig::default()).await;
    let f0 = cluster.frontend(0).to_owned();
    let (_, put, _) = call(&cluster, Method::PUT, &f0, "/kv/doc", &[], b"v1").await;
    let tag = header(&put, "etag").to_owned();
    for condition in [tag.as_str(), &format!("W/{tag}"), &format!("\"1\", {tag}"), "*"] {
        let (status, headers, body) =
            call(&cluster, Method::GET, &f0, "/kv/doc", &[("if-none-match", condition)], b"").await;
        assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0), "{condition}");
        assert_eq!(header(&headers, "etag"), tag);
    }
    let (_, second, _) = call(&cluster, Method::PUT, &f0, "/kv/doc", &[], b"v2").await;
    assert_ne!(header(&second, "etag"), tag);
    let (status, headers, body) =
        call(&cluster, Method::GET, &f0, "/kv/doc", &[("if-none-match", tag.as_str())], b"").await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"v2"[..]));
    assert_eq!(header(&headers, "etag"), header(&second, "etag"));
    // The original API's writes answer versions too.
    let (status, headers, _) = call(&cluster, Method::GET, &f0, "/set/?key=doc&value=v3", &[], b"").await;
    assert_eq!(status, StatusCode::OK);
    let (_, read, _) = call(&cluster, Method::GET, &f0, "/get/?key=doc", &[], b"").await;
    assert_eq!(header(&read, "vf-version"), header(&headers, "vf-version"));
}

/// The storage node holding a watch now, by its `velourfog_storage_watched_keys`.
async fn watching_node(cluster: &Cluster) -> Option<usize> {
    for (s, storage) in cluster.storage.iter().enumerate() {
        let Ok((_, body)) =
            testkit::TestClient::new().call(Method::GET, &storage.addr, "/metrics", Bytes::new()).await
        else {
            continue;
        };
        if String::from_utf8_lossy(&body).lines().any(|l| l == "velourfog_storage_watched_keys 1") {
            return Some(s);
        }
    }
    None
}

#[tokio::test]
async fn a_watch_wakes_on_a_write_through_another_frontend_and_survives_its_replica_dying() {
    let cluster = Cluster::start(ClusterConfig::default()).await;
    let (f0, f1) = (cluster.frontend(0).to_owned(), cluster.frontend(1).to_owned());
    let (_, put, _) = call(&cluster, Method::PUT, &f0, "/kv/watched", &[], b"v1").await;
    let version = header(&put, "vf-version").to_owned();

    // Nothing changes: 304 when the wait ends.
    let started = Instant::now();
    let path = format!("/kv/watched?wait=500ms&newer_than={version}");
    let (status, ..) = call(&cluster, Method::GET, &f0, &path, &[], b"").await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(started.elapsed() >= Duration::from_millis(450), "{:?}", started.elapsed());

    // A write through the other frontend wakes it.
    let path = format!("/kv/watched?wait=20s&newer_than={version}");
    let watcher = tokio::spawn({
        let cluster_path = path.clone();
        let client = cluster.client.clone();
        let f0 = f0.clone();
        async move {
            let answer = client.call(Method::GET, &f0, &cluster_path, Bytes::new()).await.unwrap();
            (answer, Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!watcher.is_finished(), "the watch waits");
    let (status, _, _) = call(&cluster, Method::PUT, &f1, "/kv/watched", &[], b"v2").await;
    let acknowledged = Instant::now();
    assert_eq!(status, StatusCode::OK);
    let ((status, body), answered) = watcher.await.unwrap();
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"v2"[..]));
    let delay = answered.saturating_duration_since(acknowledged);
    eprintln!("watch answered {delay:?} after the write's 200");
    assert!(delay < Duration::from_millis(100), "{delay:?}");

    // The replica holding the watch dies: the watch moves to another and still sees the write.
    let (_, read, _) = call(&cluster, Method::GET, &f0, "/kv/watched", &[], b"").await;
    let path = format!("/kv/watched?wait=30s&newer_than={}", header(&read, "vf-version"));
    let watcher = tokio::spawn({
        let client = cluster.client.clone();
        let f0 = f0.clone();
        async move { client.call(Method::GET, &f0, &path, Bytes::new()).await.unwrap() }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let holder = loop {
        if let Some(s) = watching_node(&cluster).await {
            break s;
        }
        assert!(Instant::now() < deadline, "no storage node holds the watch");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cluster.storage[holder].sigkill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, ..) = call(&cluster, Method::PUT, &f1, "/kv/watched", &[], b"v3").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), watcher).await.unwrap().unwrap();
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"v3"[..]), "the watch moved to a live replica");
}
