//! Fault tests for availability and repair, on real processes: a storage node killed, hung
//! (SIGSTOP) or away while writes happen. The invariant checked everywhere: a read through any
//! frontend after an acknowledged write returns that value, and nothing acknowledged is lost.

use bytes::Bytes;
use http::StatusCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::load::{self, LoadReport};
use testkit::{Cluster, ClusterConfig};

/// A fault injected into a cluster under the write-then-read load.
struct Fault<'a> {
    name: &'a str,
    writers: usize,
    /// How long the fault lasts before `heal` (if any) runs.
    hold: Duration,
    /// Load kept on after healing.
    settle: Duration,
    min_success: f64,
}

/// Runs the load, injects `inject` after 1.5 s, heals after `fault.hold`, and checks the
/// invariant (no read older than an acknowledged write) and the success rate.
async fn under_load(
    cluster: &Arc<Cluster>,
    fault: Fault<'_>,
    inject: impl FnOnce(&Cluster),
    heal: impl FnOnce(&Cluster),
) -> LoadReport {
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load::write_then_read(cluster.frontends_handle(), fault.writers, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    inject(cluster);
    tokio::time::sleep(fault.hold).await;
    heal(cluster);
    tokio::time::sleep(fault.settle).await;
    stop.store(true, Ordering::Relaxed);
    let mut report = load.await.unwrap();
    let p99 = report.p99_ms();
    eprintln!(
        "{} under load: {} writes, {:.2}% succeeded, p99 {p99:.0} ms, max {:.0} ms, {} stale reads",
        fault.name,
        report.writes,
        report.success_rate() * 100.0,
        report.max_ms(),
        report.stale_reads.len()
    );
    assert!(report.stale_reads.is_empty(), "reads older than acknowledged writes: {:?}", report.stale_reads);
    assert!(report.success_rate() >= fault.min_success, "failures: {:?}", report.write_failures);
    report
}

/// Every fault test runs each node with one worker thread, as `./runlocal.sh` does on a small
/// machine (the other suites run Tokio's default of one per core).
fn config() -> ClusterConfig {
    ClusterConfig {
        storage_args: ["--anti-entropy-ms", "1000", "--worker-threads", "1"].map(String::from).to_vec(),
        frontend_args: vec!["--worker-threads".into(), "1".into()],
        ..Default::default()
    }
}

fn namespace(cluster: &Cluster) -> &testkit::NetworkNamespace {
    cluster.partition.as_ref().expect("partitionable cluster")
}

/// Waits until storage node `i` (harness order) is in state `expected[i]` at the controller.
async fn wait_for_states(cluster: &Cluster, expected: &[&str], deadline: Duration) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let status = cluster.status().await;
        let members = status["storage"].as_array().unwrap();
        let states: Vec<String> = cluster
            .storage
            .iter()
            .map(|node| {
                let member = members.iter().find(|m| m["addr"] == node.addr.as_str());
                member.map_or("unregistered".to_owned(), |m| m["state"].as_str().unwrap().to_owned())
            })
            .collect();
        if states == expected {
            return status;
        }
        assert!(started.elapsed() < deadline, "states {states:?}, expected {expected:?}: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the three storage nodes' digests are equal; how long that took.
async fn wait_converged(cluster: &Cluster, deadline: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let digests: Vec<Bytes> =
            futures_util::future::join_all((0..3).map(|s| cluster.storage_digests(s))).await;
        // A partition some writes left unsettled (all 16 bytes 0xff, see `storage::digest`)
        // says nothing yet, even where every node says it.
        let settled = |d: &Bytes| d.chunks(16).all(|digest| digest != [0xff; 16]);
        if digests.iter().all(|d| *d == digests[0] && settled(d)) {
            return started.elapsed();
        }
        assert!(started.elapsed() < deadline, "replicas did not converge within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn verify_all_acknowledged(cluster: &Cluster, report: &LoadReport) {
    let lost = report.lost(&cluster.frontends_handle()).await;
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

#[tokio::test]
async fn killing_one_of_three_replicas_under_load_loses_nothing() {
    let cluster = Arc::new(Cluster::start(config()).await);
    let fault = Fault {
        name: "kill -9",
        writers: 8,
        hold: Duration::from_secs(5),
        settle: Duration::ZERO,
        min_success: 0.99,
    };
    let report = under_load(&cluster, fault, |c| c.storage[1].sigkill(), |_| {}).await;
    wait_for_states(&cluster, &["up", "down", "up"], Duration::from_secs(10)).await;
    verify_all_acknowledged(&cluster, &report).await;
}

#[tokio::test]
async fn a_hung_replica_costs_little_and_catches_up_after_sigcont() {
    let cluster = Arc::new(Cluster::start(config()).await);
    let fault = Fault {
        name: "SIGSTOP",
        writers: 4,
        hold: Duration::from_secs(8),
        settle: Duration::ZERO,
        min_success: 0.98,
    };
    let mut report = under_load(&cluster, fault, |c| c.storage[2].pause(), |_| {}).await;
    let p99 = report.p99_ms();
    assert!(p99 < 1000.0, "p99 write latency {p99} ms");
    cluster.storage[2].resume();
    let mut cluster = Arc::try_unwrap(cluster).ok().unwrap();
    cluster.wait_storage_up(Duration::from_secs(30)).await;
    // It caught up: alone, it serves every acknowledged write.
    cluster.storage[0].kill();
    cluster.storage[1].kill();
    verify_all_acknowledged(&cluster, &report).await;
}

#[tokio::test]
async fn a_node_that_was_away_catches_up_before_serving() {
    let mut cluster = Cluster::start(config()).await;
    cluster.storage[0].kill();
    let started = Instant::now();
    for i in 0..1000 {
        let key = format!("away-{i}");
        assert_eq!(cluster.set(i % 2, key.as_bytes(), format!("v{i}")).await.0, StatusCode::OK, "{key}");
    }
    for i in (0..1000).step_by(7) {
        assert_eq!(cluster.delete(i % 2, format!("away-{i}").as_bytes()).await.0, StatusCode::OK);
    }
    eprintln!("1000 writes and 143 deletes with one node away took {:.1?}", started.elapsed());
    cluster.storage[0].start();
    let back = Instant::now();
    cluster.wait_storage_up(Duration::from_secs(30)).await;
    let stats = cluster.storage_stats(0).await;
    eprintln!("caught up in {:.1?}: {}", back.elapsed(), stats["repair"]);
    cluster.storage[1].kill();
    cluster.storage[2].kill();
    for i in 0..1000 {
        let key = format!("away-{i}");
        let got = cluster.get(i % 2, key.as_bytes()).await;
        if i % 7 == 0 {
            assert_eq!(got.0, StatusCode::NOT_FOUND, "{key} was deleted");
        } else {
            assert_eq!(got, (StatusCode::OK, Bytes::from(format!("v{i}"))), "{key}");
        }
    }
}

#[tokio::test]
async fn a_node_restarted_after_kill_9_rebuilds_its_digests_while_it_serves_and_converges() {
    let mut cluster = Cluster::start(config()).await;
    for i in 0..3000 {
        assert_eq!(
            cluster.set(i % 2, format!("base-{i}").as_bytes(), format!("b{i}")).await.0,
            StatusCode::OK
        );
    }
    cluster.storage[0].kill();
    // Back within the controller's down_after: no catch-up, so anti-entropy alone must bring
    // what it missed, comparing the digests it rebuilt from its records.
    for i in 0..100 {
        assert_eq!(cluster.set(i % 2, format!("missed-{i}").as_bytes(), "m").await.0, StatusCode::OK);
    }
    cluster.storage[0].start();
    cluster.storage[0].wait_listening().await;
    for i in 0..300u64 {
        let status = cluster.storage_put(1, format!("stray-{i}").as_bytes(), 1_000_000 + i, "s".into()).await;
        assert_eq!(status, StatusCode::OK);
    }
    wait_converged(&cluster, Duration::from_secs(30)).await;
    let log = cluster.storage[0].log();
    assert!(log.contains("digests rebuilt by a scan of every record"), "{log}");
    assert_eq!(cluster.storage_stats(0).await["engine"]["digests_whole"], true);
    // Alone, it serves everything.
    cluster.storage[1].kill();
    cluster.storage[2].kill();
    for i in (0..3000).step_by(97) {
        assert_eq!(
            cluster.get(i % 2, format!("base-{i}").as_bytes()).await,
            (StatusCode::OK, Bytes::from(format!("b{i}")))
        );
    }
    for i in 0..100 {
        assert_eq!(
            cluster.get(i % 2, format!("missed-{i}").as_bytes()).await,
            (StatusCode::OK, Bytes::from("m"))
        );
    }
}

#[tokio::test]
async fn anti_entropy_converges_moving_little_more_than_the_difference() {
    let cluster = Cluster::start(config()).await;
    for i in 0..2000 {
        assert_eq!(
            cluster.set(i % 2, format!("base-{i}").as_bytes(), vec![b'b'; 200]).await.0,
            StatusCode::OK
        );
    }
    // 300 records reach only storage node 0 (as a partially failed write would leave them).
    let mut differing = 0;
    for i in 0..300u64 {
        let key = format!("stray-{i}");
        let value = vec![b's'; 1000];
        differing += key.len() + value.len();
        let status = cluster.storage_put(0, key.as_bytes(), 1_000_000 + i, Bytes::from(value)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let converged = wait_converged(&cluster, Duration::from_secs(30)).await;
    let mut moved = 0;
    for s in 0..3 {
        moved += cluster.storage_stats(s).await["repair"]["bytes_moved"].as_u64().unwrap();
    }
    // Two replicas lacked each stray record.
    let needed = 2 * differing as u64;
    eprintln!(
        "anti-entropy: converged in {converged:.1?}; {moved} bytes moved for {needed} bytes missing on replicas \
         (x{:.2}) out of ~{} bytes stored per replica",
        moved as f64 / needed as f64,
        2000 * 210 + differing
    );
    for s in 1..3 {
        let (status, timestamp, _) = cluster.storage_record(s, b"stray-7").await;
        assert_eq!((status, timestamp), (StatusCode::OK, Some(1_000_007)));
    }
    // Copying whole replicas would move ~2 x 720 KB; digests and diffs keep it near the difference.
    assert!(moved < 2 * needed, "{moved} bytes moved for {needed} missing");
}

#[tokio::test]
async fn status_shows_states_and_degraded_partitions() {
    let mut cluster = Cluster::start(config()).await;
    let status = wait_for_states(&cluster, &["up", "up", "up"], Duration::from_secs(5)).await;
    assert_eq!(status["partitions_degraded"].as_array().unwrap().len(), 0);
    cluster.storage[0].kill();
    let status = wait_for_states(&cluster, &["down", "up", "up"], Duration::from_secs(10)).await;
    let degraded = status["partitions_degraded"].as_array().unwrap();
    assert_eq!(degraded.len(), status["partitions"].as_u64().unwrap() as usize);
    cluster.storage[0].start();
    wait_for_states(&cluster, &["up", "up", "up"], Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_partitioned_replica_is_fenced_out_and_rejoins_when_the_network_heals() {
    if testkit::NetworkNamespace::create().is_none() {
        eprintln!("SKIPPED: network namespaces need root and iproute2; CI runs as root");
        return;
    }
    // The last storage node lives in its own network namespace: alive, but behind a link we cut.
    let cluster = Arc::new(Cluster::start(ClusterConfig { partitionable: true, ..config() }).await);
    let fault = Fault {
        name: "partition",
        writers: 4,
        hold: Duration::from_secs(6),
        settle: Duration::from_secs(3),
        min_success: 0.98,
    };
    let report = under_load(&cluster, fault, |c| namespace(c).cut(), |c| namespace(c).heal()).await;
    let mut cluster = Arc::try_unwrap(cluster).ok().unwrap();
    cluster.wait_storage_up(Duration::from_secs(30)).await;
    let isolated = cluster.storage.last().unwrap().log();
    assert!(isolated.contains("catching up"), "the isolated node rejoined through catch-up:\n{isolated}");
    // It caught up: alone, it serves every acknowledged write.
    cluster.storage[0].kill();
    cluster.storage[1].kill();
    verify_all_acknowledged(&cluster, &report).await;
}
