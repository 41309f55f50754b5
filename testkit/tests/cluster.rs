//! Cluster behaviour on real processes: concurrency, convergence, start order, failed replicas,
//! a node that flushes its memtable when writes pause.

use bytes::Bytes;
use futures_util::future::join_all;
use http::{Method, StatusCode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::{Cluster, ClusterConfig, StartOrder};

#[tokio::test]
async fn thousands_of_keys_written_concurrently_read_back() {
    let cluster =
        Arc::new(Cluster::start(ClusterConfig { storage: 4, replication: 2, ..Default::default() }).await);
    const KEYS: usize = 4000;
    const WRITERS: usize = 64;
    let writers = (0..WRITERS).map(|w| {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            for i in (w..KEYS).step_by(WRITERS) {
                let key = format!("key-{i}");
                let (status, body) = cluster.set(i % 2, key.as_bytes(), format!("value-{i}")).await;
                assert_eq!(status, StatusCode::OK, "set {key}: {body:?}");
            }
        })
    });
    for writer in join_all(writers).await {
        writer.expect("writer task");
    }
    let readers = (0..WRITERS).map(|r| {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            for i in (r..KEYS).step_by(WRITERS) {
                let key = format!("key-{i}");
                let expected = Bytes::from(format!("value-{i}"));
                assert_eq!(
                    cluster.get((i + 1) % 2, key.as_bytes()).await,
                    (StatusCode::OK, expected),
                    "{key}"
                );
            }
        })
    });
    for reader in join_all(readers).await {
        reader.expect("reader task");
    }
}

#[tokio::test]
async fn concurrent_writers_to_one_key_converge_on_every_replica() {
    let cluster = Arc::new(Cluster::start(ClusterConfig::default()).await);
    const WRITERS: usize = 16;
    const WRITES: usize = 40;
    let writers = (0..WRITERS).map(|w| {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            for i in 0..WRITES {
                let status = if (w + i) % 7 == 0 {
                    cluster.delete(w % 2, b"contended").await.0
                } else {
                    cluster.set(w % 2, b"contended", format!("writer {w} write {i}")).await.0
                };
                assert_eq!(status, StatusCode::OK);
            }
        })
    });
    for writer in join_all(writers).await {
        writer.expect("writer task");
    }
    // K = 3 of 3 nodes: every node holds the key, and all must hold the identical record.
    let first = cluster.storage_record(0, b"contended").await;
    assert_eq!(first.0, StatusCode::OK);
    for s in 1..3 {
        assert_eq!(cluster.storage_record(s, b"contended").await, first, "storage node {s} diverged");
    }
    // Both frontends agree with the replicas.
    for f in 0..2 {
        let (status, body) = cluster.get(f, b"contended").await;
        if first.2.is_empty() && status == StatusCode::NOT_FOUND {
            continue; // the winner was a delete
        }
        assert_eq!((status, body), (StatusCode::OK, first.2.clone()));
    }
}

#[tokio::test]
async fn any_start_order_forms_a_working_cluster() {
    for order in [StartOrder::ControllerLast, StartOrder::StorageFirst, StartOrder::ControllerFirst] {
        let cluster = Cluster::start(ClusterConfig { order, ..Default::default() }).await;
        assert_eq!(cluster.set(0, b"order", format!("{order:?}")).await.0, StatusCode::OK, "{order:?}");
        assert_eq!(cluster.get(1, b"order").await.1, Bytes::from(format!("{order:?}")), "{order:?}");
    }
}

async fn set_with(
    cluster: &Cluster,
    frontend: usize,
    key: &str,
    value: &str,
    params: &str,
) -> (StatusCode, String) {
    let path = format!("/set/?key={key}&value={value}{params}");
    let (status, body) =
        cluster.client.call(Method::GET, cluster.frontend(frontend), &path, Bytes::new()).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_dead_replica_fails_w_all_writes_but_quorum_writes_and_reads_go_on() {
    let mut cluster = Cluster::start(ClusterConfig::default()).await;
    for i in 0..20 {
        assert_eq!(cluster.set(0, format!("k{i}").as_bytes(), "before").await.0, StatusCode::OK);
    }
    cluster.storage[1].kill();
    // w=all needs every replica, and says how many acknowledged and which node failed.
    let (status, message) = set_with(&cluster, 0, "k0", "after", "&w=all").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{message}");
    assert!(message.contains("2 of 3 replicas") && message.contains("w=all needs 3"), "{message}");
    assert!(message.contains(&cluster.storage[1].addr), "names the failed node: {message}");
    // The default (quorum) write succeeds once the dead node is fenced out of reads.
    let (status, message) = set_with(&cluster, 0, "k0", "after", "").await;
    assert_eq!(status, StatusCode::OK, "{message}");
    // Every read succeeds and sees the acknowledged write.
    for i in 0..20 {
        let expected = if i == 0 { "after" } else { "before" };
        let (status, body) = cluster.get(i % 2, format!("k{i}").as_bytes()).await;
        assert_eq!((status, body), (StatusCode::OK, Bytes::from(expected)), "k{i}");
    }
    // w=quorum needs 2 of 3: with a second replica gone it fails, naming the level.
    cluster.storage[0].kill();
    let (status, message) = set_with(&cluster, 1, "k1", "lonely", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{message}");
    assert!(message.contains("w=quorum needs 2"), "{message}");
    // w=one still works, and the last replica serves reads.
    let (status, message) = set_with(&cluster, 1, "k1", "lonely", "&w=one").await;
    assert_eq!(status, StatusCode::OK, "{message}");
    assert_eq!(cluster.get(0, b"k1").await, (StatusCode::OK, Bytes::from_static(b"lonely")));
    // With every replica gone, reads fail with 503 naming the partition.
    cluster.storage[2].kill();
    let (status, body) = cluster.get(0, b"k3").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("partition"), "{body:?}");
}

#[tokio::test]
async fn a_hung_replica_costs_a_bounded_delay() {
    let cluster = Cluster::start(ClusterConfig {
        frontend_args: vec!["--replica-timeout-ms".into(), "300".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(cluster.set(0, b"k", "v").await.0, StatusCode::OK);
    cluster.storage[2].pause();
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(cluster.get(0, b"k").await, (StatusCode::OK, Bytes::from_static(b"v")));
    }
    // At most one timeout per read (plus slack for a loaded machine), never a stall.
    assert!(started.elapsed() < Duration::from_secs(10), "reads took {:?}", started.elapsed());
    let started = Instant::now();
    assert_eq!(set_with(&cluster, 1, "k", "w", "&w=all").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(5), "write took {:?}", started.elapsed());
    // A quorum write waits for the fence (at most a lease), then succeeds.
    let started = Instant::now();
    assert_eq!(set_with(&cluster, 1, "k", "x", "").await.0, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(5), "write took {:?}", started.elapsed());
    cluster.storage[2].resume();
    assert_eq!(cluster.get(0, b"k").await, (StatusCode::OK, Bytes::from_static(b"x")));
}

#[tokio::test]
async fn a_node_whose_writes_pause_flushes_its_memtable_and_keeps_serving_it() {
    let cluster = Cluster::start(ClusterConfig {
        storage: 1,
        replication: 1,
        frontends: 1,
        storage_args: vec!["--memtable-mib".into(), "1".into()],
        ..Default::default()
    })
    .await;
    // 400 KiB: more than the quarter of the 1 MiB memtable an idle flush needs, too little to
    // fill it.
    for i in 0..40 {
        let (status, body) =
            cluster.set(0, format!("k{i}").as_bytes(), vec![b'a' + (i % 26) as u8; 10 << 10]).await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
    }
    let unflushed =
        |stats: serde_json::Value| stats["engine"]["write_buffer_bytes"].as_u64().expect("a number");
    assert!(unflushed(cluster.storage_stats(0).await) >= 400 << 10);
    // Flushed once the writes have paused for 5 s (checked once a second). What stays is the
    // engine's own bookkeeping, a few dozen bytes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while unflushed(cluster.storage_stats(0).await) > 4 << 10 {
        assert!(Instant::now() < deadline, "the memtable of an idle node was not flushed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for i in 0..40 {
        let (status, body) = cluster.get(0, format!("k{i}").as_bytes()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, vec![b'a' + (i % 26) as u8; 10 << 10]);
    }
}
