//! Reaping tombstones through real processes: a deleted key's tombstone is removed once every
//! replica holds it and the grace period has passed, never while a replica that missed the
//! delete is away, and the key never comes back; a write stamped further behind than the
//! grace period is refused.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use std::time::{Duration, Instant};
use testkit::{Cluster, ClusterConfig};

const GRACE_MS: u64 = 2000;
const KEYS: usize = 60;
const DELETED: usize = 40;

fn config() -> ClusterConfig {
    let grace = format!("{GRACE_MS}ms");
    ClusterConfig {
        storage_args: ["--tombstone-grace", &grace, "--max-clock-skew-ms", "500", "--anti-entropy-ms", "300"]
            .map(String::from)
            .to_vec(),
        ..ClusterConfig::default()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("reaped-{i}").into_bytes()
}

/// Tombstones storage node `s` has reaped.
async fn reaped(cluster: &Cluster, s: usize) -> u64 {
    cluster.storage_stats(s).await["repair"]["tombstones_reaped"].as_u64().expect("tombstones_reaped")
}

/// What storage node `s` holds for key `i`: `None` for nothing, else (tombstone?, timestamp).
async fn held(cluster: &Cluster, s: usize, i: usize) -> Option<bool> {
    let (status, _, body) = cluster.storage_record(s, &key(i)).await;
    match status {
        StatusCode::NOT_FOUND => None,
        StatusCode::OK => Some(body.is_empty()),
        other => panic!("storage node {s} answered {other} for key {i}"),
    }
}

async fn wait_state(cluster: &Cluster, s: usize, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = cluster.storage[s].addr.as_str();
    loop {
        let status = cluster.status().await;
        let member = status["storage"].as_array().unwrap().iter().find(|m| m["addr"] == addr).cloned();
        if member.is_some_and(|m| m["state"] == state) {
            return;
        }
        assert!(Instant::now() < deadline, "node at {addr} never {state}: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_never_comes_back_even_from_a_replica_that_was_away() {
    let mut cluster = Cluster::start(config()).await;
    for i in 0..KEYS {
        assert_eq!(cluster.set(0, &key(i), format!("value-{i}")).await.0, StatusCode::OK);
    }
    // Node 3 holds every key, then dies and misses the deletes.
    cluster.storage[2].kill();
    wait_state(&cluster, 2, "down").await;
    for i in 0..DELETED {
        assert_eq!(cluster.delete(1, &key(i)).await.0, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(3 * GRACE_MS)).await;
    for s in 0..2 {
        assert_eq!(reaped(&cluster, s).await, 0, "node {} reaped while a replica was away", s + 1);
        assert_eq!(held(&cluster, s, 0).await, Some(true), "node {} lost its tombstone", s + 1);
    }
    // Back with the deleted values: it catches up, then every replica drops the tombstones.
    let back = Instant::now();
    cluster.storage[2].start();
    wait_state(&cluster, 2, "up").await;
    let caught_up = back.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    'reaping: loop {
        assert!(Instant::now() < deadline, "tombstones not reaped on every replica within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
        for s in 0..3 {
            for i in 0..DELETED {
                if held(&cluster, s, i).await.is_some() {
                    continue 'reaping;
                }
            }
        }
        break;
    }
    eprintln!(
        "node 3 up {caught_up:?} after restarting; every tombstone gone {:?} after it; reaped per node: {} {} {}",
        back.elapsed(),
        reaped(&cluster, 0).await,
        reaped(&cluster, 1).await,
        reaped(&cluster, 2).await
    );
    // Several anti-entropy passes later nothing came back, on any replica or through any read.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    for s in 0..3 {
        assert!(reaped(&cluster, s).await >= 1, "node {} reaped nothing", s + 1);
        for i in 0..DELETED {
            assert_eq!(held(&cluster, s, i).await, None, "key {i} came back on node {}", s + 1);
        }
        for i in DELETED..KEYS {
            assert_eq!(held(&cluster, s, i).await, Some(false), "live key {i} lost on node {}", s + 1);
        }
    }
    for i in 0..KEYS {
        let path = format!("/get/?key={}&r=all", common::query::encode(&key(i)));
        let (status, body) =
            cluster.client.call(Method::GET, cluster.frontend(i % 2), &path, Bytes::new()).await.unwrap();
        if i < DELETED {
            assert_eq!(status, StatusCode::NOT_FOUND, "deleted key {i}: {body:?}");
        } else {
            assert_eq!((status, body), (StatusCode::OK, Bytes::from(format!("value-{i}"))));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_stamped_further_behind_than_the_grace_period_is_refused() {
    let cluster = Cluster::start(ClusterConfig { frontends: 1, ..config() }).await;
    let epoch = cluster.status().await["epoch"].as_u64().expect("epoch");
    let url = format!("http://{}{}?key=late", cluster.storage[0].addr, common::proto::RECORD_PATH);
    let now = common::version::now_micros();
    let put = |behind_ms: u64, epoch: Option<u64>| {
        let url = url.clone();
        let client = cluster.client.inner.clone();
        async move {
            let make = || {
                let mut request =
                    Request::put(url.as_str()).header(common::proto::TIMESTAMP, now - behind_ms * 1000);
                if let Some(epoch) = epoch {
                    request = request.header(common::proto::EPOCH, epoch);
                }
                request.body(Full::new(Bytes::from_static(b"late"))).expect("request")
            };
            let (parts, body) =
                client.send_collect(make, Duration::from_secs(5)).await.expect("storage answers");
            (parts.status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, message) = put(GRACE_MS + 1000, Some(epoch)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{message}");
    assert!(
        message.contains("behind this node's clock") && message.contains("--tombstone-grace"),
        "{message}"
    );
    assert_eq!(cluster.storage_record(0, b"late").await.0, StatusCode::NOT_FOUND, "nothing stored");
    // Within the grace period it is taken; so is a repair (no epoch), which carries old records.
    assert_eq!(put(GRACE_MS / 2, Some(epoch)).await.0, StatusCode::OK);
    assert_eq!(put(GRACE_MS * 10, None).await.0, StatusCode::OK);
}
