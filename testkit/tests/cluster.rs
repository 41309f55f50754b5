//! Cluster behaviour on real processes: concurrency, convergence, start order, failed replicas.

use bytes::Bytes;
use futures_util::future::join_all;
use http::StatusCode;
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

#[tokio::test]
async fn a_dead_replica_fails_writes_with_503_and_reads_fall_back() {
    let mut cluster = Cluster::start(ClusterConfig::default()).await;
    for i in 0..20 {
        assert_eq!(cluster.set(0, format!("k{i}").as_bytes(), "before").await.0, StatusCode::OK);
    }
    cluster.storage[1].kill();
    // K = 3 of 3: every write needs the dead node, and says how many replicas acknowledged.
    let (status, body) = cluster.set(0, b"k0", "after").await;
    let message = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{message}");
    assert!(message.contains("2 of 3 replicas"), "{message}");
    assert!(message.contains(&cluster.storage[1].addr), "names the failed node: {message}");
    // Every read still succeeds: a read that picks the dead node moves on to the next replica.
    for i in 0..20 {
        let (status, _) = cluster.get(i % 2, format!("k{i}").as_bytes()).await;
        assert_eq!(status, StatusCode::OK, "k{i}");
    }
    // With every replica gone, reads fail with 503 naming the partition.
    cluster.storage[0].kill();
    cluster.storage[2].kill();
    let (status, body) = cluster.get(0, b"k3").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("no replica of partition"));
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
    assert_eq!(cluster.set(1, b"k", "w").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(5), "write took {:?}", started.elapsed());
    cluster.storage[2].resume();
    assert_eq!(cluster.set(1, b"k", "x").await.0, StatusCode::OK);
}
