//! Who the cluster trusts, tried as an attacker would, on real processes: the cluster secret
//! on every internal and admin endpoint, identity tokens on registrations, heartbeats and
//! catch-up reports, and a frontend that never passes a client's headers on.

use bytes::Bytes;
use common::proto;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use std::time::{Duration, Instant};
use testkit::{Cluster, ClusterConfig, TestClient};

/// `json` as a request body.
fn json(value: serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(&value).unwrap())
}

/// A client holding a secret that is not the cluster's.
fn wrong_secret(cluster: &Cluster) -> TestClient {
    let path = cluster.dir.path().join("wrong.secret");
    std::fs::write(&path, "not-the-cluster-secret-at-all\n").unwrap();
    TestClient::with_secret(Some(&path))
}

/// Every node-to-node and admin endpoint, with a body that would change something if accepted.
fn attacks(cluster: &Cluster) -> Vec<(Method, String, String, Bytes)> {
    let controller = cluster.controller.addr.clone();
    let storage = cluster.storage[0].addr.clone();
    let victim = 1;
    let pin = format!("{}?key=known", proto::RECORD_PATH);
    vec![
        (
            Method::POST,
            controller.clone(),
            proto::STORAGE_REGISTER_PATH.into(),
            json(serde_json::json!({"addr": "127.0.0.1:9", "node_id": victim})),
        ),
        (
            Method::POST,
            controller.clone(),
            proto::FRONTEND_REGISTER_PATH.into(),
            json(serde_json::json!({"addr": "127.0.0.1:9"})),
        ),
        (Method::GET, controller.clone(), format!("{}?newer_than=0", proto::MAP_PATH), Bytes::new()),
        (
            Method::POST,
            controller.clone(),
            proto::FENCE_PATH.into(),
            json(serde_json::json!({"node_id": victim, "reason": "forged"})),
        ),
        (
            Method::POST,
            controller.clone(),
            proto::CAUGHT_UP_PATH.into(),
            json(serde_json::json!({"node_id": victim, "joined": 1})),
        ),
        (
            Method::POST,
            controller.clone(),
            proto::ADMIN_NODE_ADD_PATH.into(),
            json(serde_json::json!({"node": "127.0.0.1:9"})),
        ),
        (
            Method::POST,
            controller.clone(),
            proto::ADMIN_NODE_REMOVE_PATH.into(),
            json(serde_json::json!({"node": "1"})),
        ),
        (
            Method::POST,
            controller,
            proto::ADMIN_REPLICATION_PATH.into(),
            json(serde_json::json!({"replication": 1})),
        ),
        (Method::GET, storage.clone(), pin.clone(), Bytes::new()),
        (Method::PUT, storage.clone(), pin, Bytes::from_static(b"pinned")),
        (
            Method::POST,
            storage.clone(),
            proto::BATCH_PATH.into(),
            Bytes::from_static(b"\x01\x00\x00\x00\x05known\x00"),
        ),
        (Method::GET, storage.clone(), format!("{}?digits=1", proto::DIGESTS_PATH), Bytes::new()),
        (Method::POST, storage, proto::DIFF_PATH.into(), Bytes::new()),
    ]
}

#[tokio::test]
async fn without_the_secret_internal_and_admin_endpoints_answer_401_and_change_nothing() {
    let cluster = Cluster::start(ClusterConfig::default()).await;
    assert_eq!(cluster.set(0, b"known", "original").await.0, StatusCode::OK);
    let before = cluster.status().await;
    for (who, client) in [("no secret", TestClient::new()), ("a wrong secret", wrong_secret(&cluster))] {
        for (method, addr, path, body) in attacks(&cluster) {
            let (status, answer) = client.call(method.clone(), &addr, &path, body).await.unwrap();
            let answer = String::from_utf8_lossy(&answer);
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with {who}: {answer}");
            assert!(answer.contains("cluster secret"), "{answer}");
        }
    }
    // Nothing changed: same members, states and epoch; the key reads as written.
    let after = cluster.status().await;
    assert_eq!(after["epoch"], before["epoch"], "{after}");
    let members = |status: &serde_json::Value| {
        let members = status["storage"].as_array().unwrap().iter();
        members.map(|m| (m["node_id"].clone(), m["addr"].clone(), m["state"].clone())).collect::<Vec<_>>()
    };
    assert_eq!(members(&after), members(&before));
    assert!(after["frontends"].as_array().unwrap().iter().all(|f| f["addr"] != "127.0.0.1:9"), "{after}");
    assert_eq!(cluster.get(1, b"known").await, (StatusCode::OK, Bytes::from_static(b"original")));
    assert_eq!(cluster.set(1, b"known", "later").await.0, StatusCode::OK);
    assert_eq!(cluster.get(0, b"known").await.1, Bytes::from_static(b"later"), "no key was pinned");
    // Read-only operator endpoints stay open.
    let stranger = TestClient::new();
    for (addr, path) in [
        (&cluster.controller.addr, "/health"),
        (&cluster.controller.addr, proto::STATUS_PATH),
        (&cluster.storage[0].addr, "/health"),
        (&cluster.storage[0].addr, "/v1/stats"),
    ] {
        let (status, _) = stranger.call(Method::GET, addr, path, Bytes::new()).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{path} is open");
    }
    // The operator's client, holding the secret, is let in.
    let (status, _) = cluster
        .client
        .call(
            Method::GET,
            &cluster.controller.addr,
            &format!("{}?newer_than=0", proto::MAP_PATH),
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
}

/// The node id of storage process `s`, from the controller's status.
async fn node_id(cluster: &Cluster, s: usize) -> u64 {
    let status = cluster.status().await;
    let member = status["storage"].as_array().unwrap().iter().find(|m| m["addr"] == cluster.storage[s].addr);
    member.and_then(|m| m["node_id"].as_u64()).expect("member")
}

async fn member_state(cluster: &Cluster, id: u64) -> (String, String) {
    let status = cluster.status().await;
    let member = status["storage"].as_array().unwrap().iter().find(|m| m["node_id"] == id).cloned().unwrap();
    (member["addr"].as_str().unwrap().to_owned(), member["state"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn inside_the_trust_boundary_nobody_can_claim_another_nodes_identity() {
    let cluster = Cluster::start(ClusterConfig { frontends: 1, ..ClusterConfig::default() }).await;
    let controller = cluster.controller.addr.clone();
    let register = |body: serde_json::Value| {
        cluster.client.call(Method::POST, &controller, proto::STORAGE_REGISTER_PATH, json(body))
    };
    let victim = node_id(&cluster, 0).await;
    let (victim_addr, _) = member_state(&cluster, victim).await;
    // Claiming its id from another address, without its token or with a made-up one.
    for token in [serde_json::Value::Null, serde_json::json!("00000000000000000000000000000000")] {
        let (status, answer) =
            register(serde_json::json!({"addr": "127.0.0.1:9", "node_id": victim, "token": token}))
                .await
                .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{}", String::from_utf8_lossy(&answer));
    }
    // Registering with no identity from its address while it lives.
    let (status, answer) = register(serde_json::json!({"addr": victim_addr})).await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(member_state(&cluster, victim).await, (victim_addr.clone(), "up".to_owned()));

    // A paused node cannot be made up again by forged heartbeats or catch-up reports.
    let paused = node_id(&cluster, 2).await;
    cluster.storage[2].pause();
    let deadline = Instant::now() + Duration::from_secs(15);
    while member_state(&cluster, paused).await.1 != "down" {
        assert!(Instant::now() < deadline, "node {paused} never marked down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let addr = cluster.storage[2].addr.clone();
    for _ in 0..5 {
        let (status, _) = register(serde_json::json!({"addr": addr, "node_id": paused})).await.unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        let report = serde_json::json!({"node_id": paused, "joined": cluster.status().await["epoch"]});
        let (status, _) = cluster
            .client
            .call(Method::POST, &controller, proto::CAUGHT_UP_PATH, json(report))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    assert_eq!(member_state(&cluster, paused).await.1, "down");
    // The real node, resumed, proves itself and comes back.
    cluster.storage[2].resume();
    let deadline = Instant::now() + Duration::from_secs(20);
    while member_state(&cluster, paused).await.1 != "up" {
        assert!(Instant::now() < deadline, "node {paused} never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_frontend_never_passes_a_clients_headers_on() {
    let cluster = Cluster::start(ClusterConfig { frontends: 1, ..ClusterConfig::default() }).await;
    let secret = std::fs::read_to_string(cluster.secret_file().unwrap()).unwrap();
    let url = format!("http://{}/set/?key=pinned&value=first", cluster.frontend(0));
    let make = || {
        Request::post(url.as_str())
            .header(proto::TIMESTAMP, u64::MAX)
            .header(proto::TOMBSTONE, "1")
            .header(proto::EPOCH, "1")
            .header(proto::KEY, "other")
            .header(http::header::AUTHORIZATION, format!("Bearer {}", secret.trim()))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let (parts, _) = TestClient::new().inner.send_collect(make, Duration::from_secs(5)).await.unwrap();
    assert_eq!(parts.status, StatusCode::OK);
    let (_, timestamp, value) = cluster.storage_record(0, b"pinned").await;
    let now = common::version::now_micros();
    assert!(timestamp.unwrap() <= now, "the frontend stamped the write itself");
    assert_eq!(value, Bytes::from_static(b"first"));
    assert_eq!(cluster.storage_record(0, b"other").await.0, StatusCode::NOT_FOUND);
    assert_eq!(cluster.set(0, b"pinned", "second").await.0, StatusCode::OK);
    assert_eq!(cluster.get(0, b"pinned").await.1, Bytes::from_static(b"second"));
}

#[tokio::test]
async fn even_with_the_secret_a_timestamp_far_ahead_cannot_pin_a_key() {
    let cluster = Cluster::start(ClusterConfig { frontends: 1, ..ClusterConfig::default() }).await;
    assert_eq!(cluster.set(0, b"k", "v1").await.0, StatusCode::OK);
    for s in 0..3 {
        let status = cluster.storage_put(s, b"k", u64::MAX, Bytes::from_static(b"pinned")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_eq!(cluster.set(0, b"k", "v2").await.0, StatusCode::OK);
    assert_eq!(cluster.get(0, b"k").await.1, Bytes::from_static(b"v2"));
}

#[tokio::test]
async fn without_a_secret_the_cluster_works_and_every_process_warns_once() {
    let cluster = Cluster::start(ClusterConfig { secret: false, ..ClusterConfig::default() }).await;
    assert_eq!(cluster.set(0, b"k", "v").await.0, StatusCode::OK);
    assert_eq!(cluster.get(1, b"k").await.1, Bytes::from_static(b"v"));
    let (status, _) = TestClient::new()
        .call(
            Method::GET,
            &cluster.controller.addr,
            &format!("{}?newer_than=0", proto::MAP_PATH),
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "open without a secret, as designed");
    for process in std::iter::once(&cluster.controller).chain(&cluster.storage).chain(&cluster.frontends) {
        let warnings = process.log().matches("without a cluster secret").count();
        assert_eq!(warnings, 1, "{}: {}", process.name, process.log());
    }
}

#[tokio::test]
async fn a_node_with_the_wrong_secret_cannot_join() {
    let mut cluster = Cluster::start(ClusterConfig { frontends: 1, ..ClusterConfig::default() }).await;
    let wrong = cluster.dir.path().join("wrong.secret");
    std::fs::write(&wrong, "not-the-cluster-secret-at-all\n").unwrap();
    let s = cluster.add_storage(&["--cluster-secret-file", wrong.to_str().unwrap()]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = cluster.status().await;
    let addrs: Vec<&str> =
        status["storage"].as_array().unwrap().iter().filter_map(|m| m["addr"].as_str()).collect();
    assert!(!addrs.contains(&cluster.storage[s].addr.as_str()), "{status}");
    assert!(cluster.storage[s].log().contains("cluster secret"), "{}", cluster.storage[s].log());
}
