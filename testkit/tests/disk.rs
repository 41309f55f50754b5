//! The free-space floor (`storage --min-free-disk-mib`): a node on a small tmpfs refuses writes
//! with 507 before the disk is full, keeps serving reads and deletes, and takes writes again by
//! itself once space returns. Needs root (to mount the tmpfs), like the full-disk test in
//! `durability.rs`; prints timings with `--nocapture`.

use bytes::Bytes;
use http::{Method, StatusCode};
use std::time::{Duration, Instant};
use testkit::{Cluster, ClusterConfig, TestClient, TinyFilesystem};

const MIB: usize = 1 << 20;
/// The tmpfs, the file that takes part of it, and the floor, in MiB: about 20 MiB of writes
/// fit before the floor, so it is reached in seconds.
const DISK_MIB: u32 = 56;
const FILLER_MIB: usize = 16;
const FLOOR_MIB: usize = 12;
/// The sizes written in turn: batched (small), single requests, and value files streamed by
/// the frontend.
const SIZES: [usize; 3] = [16 << 10, 256 << 10, 3 * MIB / 2];

/// `len` incompressible bytes, different for each `seed`, so the engine cannot stretch the disk.
fn value(seed: u64, len: usize) -> Bytes {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Writes values of every size in turn until even the smallest is refused; returns what was
/// acknowledged and the first and last refusals' messages. Any other failure fails the test.
async fn fill_until_refused(cluster: &Cluster) -> (Vec<(String, Bytes)>, String, String) {
    let mut acknowledged = Vec::new();
    let mut first_refusal = None;
    for i in 0.. {
        let size = SIZES[i % SIZES.len()];
        let (key, value) = (format!("fill-{i}"), value(i as u64, size));
        let (status, body) = cluster.set(0, key.as_bytes(), value.clone()).await;
        let message = String::from_utf8_lossy(&body).trim().to_owned();
        match status {
            StatusCode::OK => acknowledged.push((key, value)),
            StatusCode::INSUFFICIENT_STORAGE => {
                let first = first_refusal.get_or_insert_with(|| message.clone()).clone();
                if size == SIZES[0] {
                    return (acknowledged, first, message);
                }
            }
            other => panic!("set {key} of {size} bytes answered {other}, not 200 or 507: {message}"),
        }
        assert!(i < 2000, "{i} writes and no refusal from a {DISK_MIB} MiB disk");
    }
    unreachable!()
}

/// The storage node's disk section of `/v1/stats`.
async fn disk_stats(cluster: &Cluster) -> serde_json::Value {
    cluster.storage_stats(0).await["disk"].clone()
}

/// Waits until the controller's status reports the node `refusing` writes (or not), as its
/// heartbeats say; how long that took.
async fn wait_reported_refusing(cluster: &Cluster, refusing: bool) -> Duration {
    let started = Instant::now();
    loop {
        let status = cluster.status().await;
        if status["storage"][0]["disk"]["refusing_writes"] == refusing {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "status never said {refusing}: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks that the node says it refuses writes: in `/v1/stats` and in `/metrics`.
async fn refusal_is_reported(cluster: &Cluster) {
    let refusing = disk_stats(cluster).await;
    eprintln!("refusing: {refusing}");
    assert_eq!(refusing["refusing_writes"], true);
    assert!(refusing["writes_refused"].as_u64().unwrap() >= 1, "{refusing}");
    assert!(refusing["free_bytes"].as_u64().unwrap() >= (FLOOR_MIB * MIB / 2) as u64, "{refusing}");
    let scrape =
        TestClient::new().call(Method::GET, &cluster.storage[0].addr, "/metrics", Bytes::new()).await;
    let metrics = String::from_utf8_lossy(&scrape.expect("metrics").1).into_owned();
    for expected in [
        "velourfog_storage_writes_refused_total{reason=\"disk_floor\"}",
        "velourfog_storage_disk_floor_bytes",
    ] {
        assert!(metrics.contains(expected), "/metrics has {expected}");
    }
}

/// Sets a key until the node takes it (space was just freed): how long that took. Nothing
/// is restarted; any answer but 200 or 507 fails the test.
async fn wait_writes_accepted(cluster: &Cluster) -> Duration {
    let freed = Instant::now();
    loop {
        let (status, body) = cluster.set(0, b"after", value(2, SIZES[1])).await;
        match status {
            StatusCode::OK => return freed.elapsed(),
            StatusCode::INSUFFICIENT_STORAGE => {}
            other => panic!("set after freeing space answered {other}: {}", String::from_utf8_lossy(&body)),
        }
        assert!(freed.elapsed() < Duration::from_secs(10), "writes still refused 10 s after freeing space");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn below_the_free_space_floor_writes_are_refused_reads_go_on_and_writes_resume_by_themselves() {
    let Some(disk) = TinyFilesystem::mount(DISK_MIB) else {
        eprintln!("SKIPPED: mounting a tmpfs needs root; this test runs in CI, which is root");
        return;
    };
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![1u8; FILLER_MIB * MIB]).unwrap();
    let flags = ["--min-free-disk-mib", &FLOOR_MIB.to_string(), "--memtable-mib", "2", "--cache-mib", "8"];
    let cluster = Cluster::start(ClusterConfig {
        storage: 1,
        replication: 1,
        frontends: 1,
        data_root: Some(disk.path().to_path_buf()),
        storage_args: flags.iter().map(|f| f.to_string()).collect(),
        ..Default::default()
    })
    .await;
    let before = disk_stats(&cluster).await;
    eprintln!("before: {before}");
    assert_eq!(before["floor_bytes"], (FLOOR_MIB * MIB) as u64);
    assert_eq!(before["refusing_writes"], false);

    let started = Instant::now();
    let (mut acknowledged, first, refusal) = fill_until_refused(&cluster).await;
    let bytes: usize = acknowledged.iter().map(|(_, v)| v.len()).sum();
    eprintln!(
        "floor reached in {:.2?}: {} sets ({:.1} MiB) acknowledged\nfirst refusal: {first}\nlast refusal: {refusal}",
        started.elapsed(),
        acknowledged.len(),
        bytes as f64 / MIB as f64
    );
    assert!(acknowledged.len() > 5, "the floor was reached almost at once: {refusal}");
    for expected in ["insufficient storage on node 1 (", "node 1 refuses writes", "--min-free-disk-mib 12"] {
        assert!(first.contains(expected), "the 507 says {expected:?}: {first}");
        assert!(refusal.contains(expected), "the 507 says {expected:?}: {refusal}");
    }
    assert!(
        refusal.contains("bytes free on its data directory's filesystem, below its floor of 12582912 bytes")
    );
    refusal_is_reported(&cluster).await;
    let controller_sees = wait_reported_refusing(&cluster, true).await;
    eprintln!("the controller's status shows the node refusing writes after {controller_sees:.2?}");

    // While refusing: every acknowledged set reads back exactly; deletes are accepted.
    let reads = Instant::now();
    for (key, value) in &acknowledged {
        assert_eq!(cluster.get(0, key.as_bytes()).await, (StatusCode::OK, value.clone()), "{key}");
    }
    eprintln!("{} reads while refusing writes, all 200, in {:.2?}", acknowledged.len(), reads.elapsed());
    for (key, _) in acknowledged.drain(..2) {
        assert_eq!(cluster.delete(0, key.as_bytes()).await.0, StatusCode::OK, "delete {key} while refusing");
        assert_eq!(cluster.get(0, key.as_bytes()).await.0, StatusCode::NOT_FOUND, "{key} deleted");
    }
    let (status, body) = cluster.set(0, b"still-refused", value(1, SIZES[0])).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{}", String::from_utf8_lossy(&body));

    std::fs::remove_file(&filler).unwrap();
    let recovered = wait_writes_accepted(&cluster).await;
    eprintln!("{FILLER_MIB} MiB freed: writes accepted again after {recovered:.2?}");
    for i in 0..SIZES.len() * 2 {
        let (key, value) = (format!("again-{i}"), value(10_000 + i as u64, SIZES[i % SIZES.len()]));
        assert_eq!(cluster.set(0, key.as_bytes(), value.clone()).await.0, StatusCode::OK, "{key}");
        acknowledged.push((key, value));
    }
    for (key, value) in &acknowledged {
        assert_eq!(cluster.get(0, key.as_bytes()).await, (StatusCode::OK, value.clone()), "{key}");
    }
    let controller_sees = wait_reported_refusing(&cluster, false).await;
    eprintln!("the controller's status shows the node taking writes after {controller_sees:.2?}");
    let after = disk_stats(&cluster).await;
    eprintln!("after: {after}");
    assert_eq!(after["refusing_writes"], false);
    drop(cluster);
    drop(disk);
}

#[tokio::test]
async fn replicas_on_a_full_disk_answer_507_naming_the_nodes_and_take_writes_again() {
    let Some(disk) = TinyFilesystem::mount(DISK_MIB + 16) else {
        eprintln!("SKIPPED: mounting a tmpfs needs root; this test runs in CI, which is root");
        return;
    };
    // Three replicas of every write on one filesystem: they reach the floor together.
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![1u8; FILLER_MIB * MIB]).unwrap();
    let flags = ["--min-free-disk-mib", &FLOOR_MIB.to_string(), "--memtable-mib", "2", "--cache-mib", "8"];
    let cluster = Cluster::start(ClusterConfig {
        storage: 3,
        replication: 3,
        frontends: 1,
        data_root: Some(disk.path().to_path_buf()),
        storage_args: flags.iter().map(|f| f.to_string()).collect(),
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let (mut acknowledged, _, refusal) = fill_until_refused(&cluster).await;
    eprintln!(
        "3 replicas: floor reached in {:.2?} after {} sets\nrefusal: {refusal}",
        started.elapsed(),
        acknowledged.len()
    );
    assert!(refusal.starts_with("insufficient storage on node "), "{refusal}");
    let named = refusal.split(": write not acknowledged").next().unwrap_or_default();
    assert!(named.matches(", node ").count() >= 1, "a quorum's worth of full nodes named: {refusal}");
    for (key, value) in &acknowledged {
        assert_eq!(cluster.get(0, key.as_bytes()).await, (StatusCode::OK, value.clone()), "{key}");
    }
    for (key, _) in acknowledged.drain(..2) {
        assert_eq!(cluster.delete(0, key.as_bytes()).await.0, StatusCode::OK, "delete {key} while refusing");
    }
    std::fs::remove_file(&filler).unwrap();
    let recovered = wait_writes_accepted(&cluster).await;
    eprintln!("3 replicas: {FILLER_MIB} MiB freed, writes accepted again after {recovered:.2?}");
    for (key, value) in &acknowledged {
        assert_eq!(cluster.get(0, key.as_bytes()).await, (StatusCode::OK, value.clone()), "{key}");
    }
    // Refused writes fence nobody (a replica that missed an acknowledged write would be).
    let states: Vec<String> = cluster.status().await["storage"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| format!("node {}: {}", m["node_id"], m["state"]))
        .collect();
    eprintln!("3 replicas afterwards: {}", states.join(", "));
    drop(cluster);
    drop(disk);
}
