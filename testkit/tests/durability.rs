//! Crash tests: nothing acknowledged is lost when every process is killed with SIGKILL, and the
//! cluster keeps serving while the controller is down.

use bytes::Bytes;
use futures_util::future::join_all;
use http::StatusCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::{Cluster, ClusterConfig, Process, TinyFilesystem};

fn value_of(i: usize) -> Bytes {
    Bytes::from(format!("value-{i}-{}", "x".repeat(i % 300)))
}

/// A 2 MiB value, different for each `i`: large enough to go to a value file of its own.
fn large_value_of(i: u8) -> Bytes {
    Bytes::from((0..2u32 << 20).map(|n| (n % 251) as u8 ^ i).collect::<Vec<u8>>())
}

/// Value files on every storage node's disk.
fn value_files(cluster: &Cluster) -> usize {
    (0..cluster.storage.len())
        .map(|s| {
            let dir = cluster.dir.path().join(format!("storage{s}/db/values"));
            std::fs::read_dir(dir).map_or(0, |entries| entries.count())
        })
        .sum()
}

async fn restart_everything(cluster: &mut Cluster) {
    cluster.controller.start();
    cluster.storage.iter_mut().for_each(Process::start);
    cluster.wait_storage_up(testkit::START_DEADLINE).await;
    cluster.wait_until_serving(testkit::START_DEADLINE).await;
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_of_every_node_and_the_controller() {
    let mut cluster =
        Cluster::start(ClusterConfig { storage: 3, replication: 2, ..Default::default() }).await;
    const KEYS: usize = 2000;
    {
        let c = &cluster;
        let writes = (0..16).map(|w| async move {
            for i in (w..KEYS).step_by(16) {
                assert_eq!(c.set(i % 2, format!("k{i}").as_bytes(), value_of(i)).await.0, StatusCode::OK);
            }
        });
        join_all(writes).await;
    }
    for i in (0..KEYS).step_by(10) {
        assert_eq!(cluster.delete(0, format!("k{i}").as_bytes()).await.0, StatusCode::OK);
    }
    // Large values live in files of their own: kept, replaced by a small value, deleted, and
    // replaced by another large value. Replaced files must go, kept ones must survive.
    for i in 0..4 {
        assert_eq!(cluster.set(0, format!("big{i}").as_bytes(), large_value_of(i)).await.0, StatusCode::OK);
    }
    assert_eq!(cluster.set(1, b"big1", "small now").await.0, StatusCode::OK);
    assert_eq!(cluster.delete(0, b"big2").await.0, StatusCode::OK);
    assert_eq!(cluster.set(1, b"big3", large_value_of(9)).await.0, StatusCode::OK);
    let epoch_before = cluster.status().await["epoch"].clone();
    cluster.controller.kill();
    cluster.storage.iter_mut().for_each(Process::kill);
    restart_everything(&mut cluster).await;
    let status = cluster.status().await;
    assert_eq!(status["epoch"], epoch_before, "restarted controller resumes the same epoch");
    assert_eq!(cluster.get(1, b"big0").await, (StatusCode::OK, large_value_of(0)));
    assert_eq!(cluster.get(0, b"big1").await, (StatusCode::OK, Bytes::from_static(b"small now")));
    assert_eq!(cluster.get(1, b"big2").await.0, StatusCode::NOT_FOUND);
    assert_eq!(cluster.get(0, b"big3").await, (StatusCode::OK, large_value_of(9)));
    assert_eq!(value_files(&cluster), 2 * 2, "two live large values on two replicas each, nothing else");
    let c = &cluster;
    let reads = (0..16).map(|r| async move {
        for i in (r..KEYS).step_by(16) {
            let got = c.get((i + 1) % 2, format!("k{i}").as_bytes()).await;
            if i % 10 == 0 {
                assert_eq!(got.0, StatusCode::NOT_FOUND, "k{i} was deleted");
            } else {
                assert_eq!(got, (StatusCode::OK, value_of(i)), "k{i}");
            }
        }
    });
    join_all(reads).await;
}

#[tokio::test]
async fn writes_acknowledged_under_load_survive_killing_all_storage_nodes_mid_load() {
    let cluster = Cluster::start(ClusterConfig::default()).await;
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let cluster = Arc::new(tokio::sync::RwLock::new(cluster));
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let (cluster, acknowledged, stop) = (cluster.clone(), acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}-{i}");
                    let status = cluster.read().await.set(w % 2, key.as_bytes(), value_of(i)).await.0;
                    if status == StatusCode::OK {
                        acknowledged.lock().unwrap().push((key, value_of(i)));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Kill every storage node at the same instant, with writes in flight.
    cluster.read().await.storage.iter().for_each(Process::sigkill);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let mut cluster = Arc::try_unwrap(cluster).ok().expect("writers done").into_inner();
    cluster.storage.iter_mut().for_each(Process::start);
    cluster.wait_storage_up(testkit::START_DEADLINE).await;
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 100, "only {} writes acknowledged before the kill", acknowledged.len());
    for (key, value) in &acknowledged {
        assert_eq!(cluster.get(0, key.as_bytes()).await, (StatusCode::OK, value.clone()), "{key}");
    }
}

#[tokio::test]
async fn the_cluster_serves_without_its_controller_and_resumes_when_it_returns() {
    let mut cluster = Cluster::start(ClusterConfig::default()).await;
    assert_eq!(cluster.set(0, b"before", "1").await.0, StatusCode::OK);
    let epoch = cluster.status().await["epoch"].clone();
    cluster.controller.kill();
    for i in 0..300 {
        let key = format!("while-down-{i}");
        assert_eq!(cluster.set(i % 2, key.as_bytes(), "v").await.0, StatusCode::OK, "{key}");
        assert_eq!(cluster.get((i + 1) % 2, key.as_bytes()).await.0, StatusCode::OK, "{key}");
    }
    assert_eq!(cluster.get(1, b"before").await.1, Bytes::from_static(b"1"));
    cluster.controller.start();
    cluster.controller.wait_listening().await;
    // Every storage node heartbeats and every frontend re-registers by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = cluster.status().await;
        let fresh = |list: &serde_json::Value| {
            list.as_array().unwrap().iter().all(|m| m["last_seen_ms"].as_u64().unwrap() < 1500)
        };
        if status["epoch"] == epoch
            && status["frontends"].as_array().unwrap().len() == 2
            && status["storage"].as_array().unwrap().len() == 3
            && fresh(&status["storage"])
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "cluster not whole again: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cluster.set(0, b"after", "2").await.0, StatusCode::OK);
    assert_eq!(cluster.get(1, b"after").await.1, Bytes::from_static(b"2"));
}

#[tokio::test]
async fn a_restarted_storage_node_is_the_same_member_with_its_data() {
    let mut cluster = Cluster::start(ClusterConfig::default()).await;
    assert_eq!(cluster.set(0, b"k", "kept").await.0, StatusCode::OK);
    let members_before = cluster.status().await["storage"].clone();
    cluster.storage[1].kill();
    cluster.storage[1].start();
    cluster.wait_storage_up(testkit::START_DEADLINE).await;
    cluster.storage[0].kill();
    cluster.storage[2].kill();
    // Only the restarted node is up: it must answer from its own disk.
    assert_eq!(cluster.get(0, b"k").await, (StatusCode::OK, Bytes::from_static(b"kept")));
    cluster.storage[0].start();
    cluster.storage[2].start();
    cluster.wait_backends_listening().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let members_after = cluster.status().await["storage"].clone();
    let ids = |m: &serde_json::Value| {
        m.as_array().unwrap().iter().map(|n| (n["node_id"].clone(), n["addr"].clone())).collect::<Vec<_>>()
    };
    assert_eq!(ids(&members_after), ids(&members_before));
}

/// Runs a storage node that must refuse to start; returns what it printed.
fn refused_start(data_dir: &std::path::Path) -> String {
    let port = testkit::free_port();
    let output = std::process::Command::new(testkit::binary("storage"))
        .args(["127.0.0.1:1", &format!("127.0.0.1:{port}"), "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run storage");
    assert!(!output.status.success(), "storage started on an unusable data directory");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn an_unusable_data_directory_is_a_clear_error_at_start() {
    let scratch = tempfile::tempdir().unwrap();
    // A regular file where the directory should be.
    let file = scratch.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let message = refused_start(&file);
    assert!(message.contains("cannot create data directory"), "{message}");
    // A corrupt identity file is not silently replaced by a new identity.
    let corrupt = scratch.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::write(corrupt.join("node.json"), b"{\"node_id\": oops").unwrap();
    let message = refused_start(&corrupt);
    assert!(message.contains("node.json is corrupt"), "{message}");
    // Two nodes never share a directory.
    let cluster =
        Cluster::start(ClusterConfig { storage: 1, replication: 1, frontends: 1, ..Default::default() })
            .await;
    let message = refused_start(&cluster.dir.path().join("storage0"));
    assert!(message.contains("in use by another process"), "{message}");
}

#[tokio::test]
async fn a_full_disk_fails_writes_loudly_and_keeps_what_was_acknowledged() {
    let Some(disk) = TinyFilesystem::mount(6) else {
        eprintln!("SKIPPED: mounting a tmpfs needs root; this test runs in CI, which is root");
        return;
    };
    let cluster = Cluster::start(ClusterConfig {
        storage: 1,
        replication: 1,
        frontends: 1,
        data_root: Some(disk.path().to_path_buf()),
        // No free-space floor: this is what a disk that really fills up does (the floor is
        // tested in tests/disk.rs).
        storage_args: vec!["--min-free-disk-mib".into(), "0".into()],
        ..Default::default()
    })
    .await;
    // Incompressible, so the engine's compression cannot stretch the disk.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let value: Bytes = (0..(256 << 10))
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into();
    let mut acknowledged = Vec::new();
    let refusal = loop {
        let key = format!("fill-{}", acknowledged.len());
        let (status, body) = cluster.set(0, key.as_bytes(), value.clone()).await;
        if status != StatusCode::OK {
            break (status, String::from_utf8_lossy(&body).into_owned());
        }
        acknowledged.push(key);
        assert!(acknowledged.len() < 200, "a 6 MiB disk took {} writes of 256 KiB", acknowledged.len());
    };
    eprintln!("full disk answered {}: {}", refusal.0, refusal.1.trim());
    assert_eq!(refusal.0, StatusCode::SERVICE_UNAVAILABLE, "{}", refusal.1);
    assert!(refusal.1.contains("500"), "the replica's 500 is reported: {}", refusal.1);
    assert!(!acknowledged.is_empty(), "the disk was full before the first write");
    // The node did not crash, and every acknowledged write is intact.
    assert!(cluster.storage[0].log().contains("request failed"), "the failure is logged");
    for key in &acknowledged {
        assert_eq!(cluster.get(0, key.as_bytes()).await, (StatusCode::OK, value.clone()), "{key}");
    }
    drop(cluster);
    drop(disk);
}
