//! Membership changes on real processes, under a write-then-read load through two frontends:
//! nodes join, are drained, die and are removed, come back with a wiped disk, and the joining
//! node, a source node and the controller are killed in the middle of a move. Everywhere: no
//! acknowledged write lost, no read older than an acknowledged write (see docs/membership.md).

use bytes::Bytes;
use http::StatusCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::load::{self, LoadReport};
use testkit::{Cluster, ClusterConfig};

/// How long a test waits for moves to finish.
const SETTLE: Duration = Duration::from_secs(90);

/// One worker thread per node, as `./runlocal.sh` runs them on a small machine.
fn config(storage: usize) -> ClusterConfig {
    ClusterConfig {
        storage,
        storage_args: ["--anti-entropy-ms", "1000", "--worker-threads", "1"].map(String::from).to_vec(),
        frontend_args: vec!["--worker-threads".into(), "1".into()],
        ..Default::default()
    }
}

/// A load running in the background.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<LoadReport>,
    frontends: load::Frontends,
}

impl Load {
    fn start(cluster: &Cluster, writers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let frontends = cluster.frontends_handle();
        let task = tokio::spawn(load::write_then_read(frontends.clone(), writers, stop.clone()));
        Self { stop, task, frontends }
    }

    /// Stops the load and checks the invariants: no stale read, nothing lost, `min_success`.
    async fn finish(self, name: &str, min_success: f64) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = self.task.await.expect("load");
        let lost = report.lost(&self.frontends).await;
        let p99 = report.p99_ms();
        eprintln!(
            "{name}: {} writes, {:.2}% succeeded, p99 {p99:.0} ms, max {:.0} ms, {} stale reads, {} of {} acknowledged lost",
            report.writes,
            report.success_rate() * 100.0,
            report.max_ms(),
            report.stale_reads.len(),
            lost.len(),
            report.acknowledged.len()
        );
        assert!(report.stale_reads.is_empty(), "stale reads: {:?}", report.stale_reads);
        assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
        assert!(report.success_rate() >= min_success, "failures: {:?}", report.write_failures);
        report
    }
}

/// Partitions per storage member, and the mean.
fn partitions_per_node(status: &serde_json::Value) -> (Vec<u64>, f64) {
    let loads: Vec<u64> =
        status["storage"].as_array().unwrap().iter().map(|m| m["partitions"].as_u64().unwrap()).collect();
    let mean = loads.iter().sum::<u64>() as f64 / loads.len() as f64;
    (loads, mean)
}

fn assert_balanced(status: &serde_json::Value) {
    let (loads, mean) = partitions_per_node(status);
    assert!(
        loads.iter().all(|&l| (l as f64 - mean).abs() <= mean * 0.1),
        "unbalanced: {loads:?} (mean {mean:.1})"
    );
}

/// Writes `count` keys `prefix-i` with values of about `size` bytes through the frontends, 16 at
/// a time; all must succeed.
async fn write_keys_sized(
    cluster: &Cluster,
    prefix: &str,
    count: usize,
    size: usize,
) -> Vec<(String, Bytes)> {
    let frontends = cluster.frontends_handle();
    let written: Vec<(String, Bytes)> = (0..count)
        .map(|i| (format!("{prefix}-{i}"), Bytes::from(format!("{prefix} value {i} {}", "x".repeat(size)))))
        .collect();
    for chunk in written.chunks(16) {
        let sets = chunk.iter().enumerate().map(|(i, (key, value))| {
            let frontends = frontends.clone();
            async move { (key, frontends.set(i, key.as_bytes(), value.clone()).await) }
        });
        for (key, (status, body)) in futures_util::future::join_all(sets).await {
            assert_eq!(status, StatusCode::OK, "{key}: {body:?}");
        }
    }
    written
}

async fn write_keys(cluster: &Cluster, prefix: &str, count: usize) -> Vec<(String, Bytes)> {
    write_keys_sized(cluster, prefix, count, 200).await
}

async fn assert_all_read_back(cluster: &Cluster, written: &[(String, Bytes)]) {
    for (i, (key, value)) in written.iter().enumerate() {
        assert_eq!(cluster.get(i % 2, key.as_bytes()).await, (StatusCode::OK, value.clone()), "{key}");
    }
}

/// The member id of storage process `s`, as the controller lists it.
async fn member_id(cluster: &Cluster, s: usize) -> u64 {
    let status = cluster.status().await;
    let members = status["storage"].as_array().unwrap();
    let member =
        members.iter().find(|m| m["addr"] == cluster.storage[s].addr.as_str() && m["leaving"] == false);
    member.unwrap_or_else(|| panic!("storage{s} is not a member: {status}"))["node_id"].as_u64().unwrap()
}

/// Waits until the controller reports a move copying.
async fn wait_copying(cluster: &Cluster, deadline: Duration) {
    let started = Instant::now();
    loop {
        let status = cluster.status().await;
        if status["moves"].as_array().unwrap().iter().any(|m| m["phase"] == "copying") {
            return;
        }
        assert!(started.elapsed() < deadline, "no move started: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn growing_from_3_to_4_to_6_nodes_under_load_loses_nothing_and_balances() {
    let mut cluster = Cluster::start(config(3)).await;
    let load = Load::start(&cluster, 8);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    cluster.add_storage(&[]);
    let status = cluster.wait_settled(4, SETTLE).await;
    eprintln!("3 -> 4 settled in {:.1?}: {:?}", started.elapsed(), partitions_per_node(&status).0);
    assert_balanced(&status);
    let started = Instant::now();
    cluster.add_storage(&[]);
    cluster.add_storage(&[]);
    let status = cluster.wait_settled(6, SETTLE).await;
    eprintln!("4 -> 6 settled in {:.1?}: {:?}", started.elapsed(), partitions_per_node(&status).0);
    assert_balanced(&status);
    assert_eq!(status["storage"].as_array().unwrap().len(), 6);
    let report = load.finish("grow 3 -> 4 -> 6", 0.99).await;
    // Every replica in the final map holds what it serves: read a sample straight from each.
    for s in 0..cluster.storage.len() {
        let stats = cluster.storage_stats(s).await;
        eprintln!("storage{s}: about {} records", stats["engine"]["approximate_records"]);
    }
    assert!(report.acknowledged.len() > 100);
}

#[tokio::test]
async fn draining_a_live_node_then_killing_it_loses_nothing() {
    let cluster = Cluster::start(config(4)).await;
    let load = Load::start(&cluster, 6);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let id = member_id(&cluster, 3).await;
    let (status, answer) = cluster
        .admin(common::proto::ADMIN_NODE_REMOVE_PATH, serde_json::json!({"node": id.to_string()}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let settled = cluster.wait_settled(3, SETTLE).await;
    let members = settled["storage"].as_array().unwrap();
    assert!(members.iter().all(|m| m["node_id"] != id), "node {id} still a member: {settled}");
    assert_balanced(&settled);
    // Its data went once the others held it: every partition digest is zero (nothing held).
    let digests = drained_digests(&cluster, 3).await;
    assert!(digests.iter().all(|&b| b == 0), "the drained node still holds records");
    cluster.storage[3].sigkill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.finish("drain, then kill -9", 0.99).await;
    // Removing it again: unknown now.
    let (status, _) = cluster
        .admin(common::proto::ADMIN_NODE_REMOVE_PATH, serde_json::json!({"node": id.to_string()}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Storage node `s`'s partition digests, once they stop changing (its purge runs in the
/// background after the move commits).
async fn drained_digests(cluster: &Cluster, s: usize) -> Bytes {
    let started = Instant::now();
    loop {
        let digests = cluster.storage_digests(s).await;
        if digests.iter().all(|&b| b == 0) || started.elapsed() > Duration::from_secs(10) {
            return digests;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn with_manual_joins_a_new_node_waits_until_an_operator_adds_it() {
    let mut cluster = Cluster::start(ClusterConfig {
        controller_args: vec!["--join".into(), "manual".into()],
        ..config(3)
    })
    .await;
    let written = write_keys(&cluster, "manual", 100).await;
    let s = cluster.add_storage(&["--zone", "room-b"]);
    let addr = cluster.storage[s].addr.clone();
    let started = Instant::now();
    loop {
        let status = cluster.status().await;
        if status["pending"].as_array().unwrap().iter().any(|p| p["addr"] == addr.as_str()) {
            assert_eq!(status["storage"].as_array().unwrap().len(), 3, "a pending node is no member");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{addr} never pending: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, answer) =
        cluster.admin(common::proto::ADMIN_NODE_ADD_PATH, serde_json::json!({"node": "127.0.0.1:1"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, answer) =
        cluster.admin(common::proto::ADMIN_NODE_ADD_PATH, serde_json::json!({"node": addr})).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let settled = cluster.wait_settled(4, SETTLE).await;
    let member = settled["storage"].as_array().unwrap().iter().find(|m| m["addr"] == addr.as_str()).cloned();
    assert_eq!(member.expect("added")["zone"], "room-b");
    assert_balanced(&settled);
    assert_all_read_back(&cluster, &written).await;
}

#[tokio::test]
async fn a_dead_node_removed_is_re_replicated_so_the_last_survivor_holds_everything() {
    let cluster = Cluster::start(config(4)).await;
    let written = write_keys(&cluster, "survive", 300).await;
    cluster.storage[1].sigkill();
    let id = member_id(&cluster, 1).await;
    let (status, answer) = cluster
        .admin(common::proto::ADMIN_NODE_REMOVE_PATH, serde_json::json!({"node": cluster.storage[1].addr}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let settled = cluster.wait_settled(3, SETTLE).await;
    assert!(settled["storage"].as_array().unwrap().iter().all(|m| m["node_id"] != id), "{settled}");
    assert!(settled["partitions_degraded"].as_array().unwrap().is_empty(), "{settled}");
    // K = 3 on the 3 survivors: each holds everything. Kill two; the last serves it all.
    cluster.storage[0].sigkill();
    cluster.storage[2].sigkill();
    assert_all_read_back(&cluster, &written).await;
}

#[tokio::test]
async fn a_node_restarted_with_a_wiped_disk_never_answers_404_for_acknowledged_keys() {
    let mut cluster = Cluster::start(config(3)).await;
    let written = write_keys(&cluster, "wiped", 300).await;
    cluster.storage[1].kill();
    std::fs::remove_dir_all(cluster.storage_data_dir(1)).unwrap();
    cluster.storage[1].start();
    // Read everything at once and for a while: the newcomer at the old address must not serve.
    let started = Instant::now();
    let mut reads = 0;
    while started.elapsed() < Duration::from_secs(4) {
        for (i, (key, value)) in written.iter().enumerate().step_by(7) {
            let got = cluster.get(i % 2, key.as_bytes()).await;
            assert_eq!(got, (StatusCode::OK, value.clone()), "{key} after {:.1?}", started.elapsed());
            reads += 1;
        }
    }
    let settled = cluster.wait_settled(3, SETTLE).await;
    eprintln!("wiped-disk restart: {reads} reads, none stale; settled: {}", settled["storage"]);
    assert_eq!(
        settled["storage"].as_array().unwrap().len(),
        3,
        "the old member left, the newcomer took its place"
    );
    assert_all_read_back(&cluster, &written).await;
    // The newcomer holds everything now: with the other two dead it serves every key.
    cluster.storage[0].sigkill();
    cluster.storage[2].sigkill();
    assert_all_read_back(&cluster, &written).await;
}

/// Writes a data set big enough that a move at 1 MiB/s takes seconds, starts a 4th node, runs
/// `fault` while a partition is copying, then checks everything settles with nothing lost.
async fn fault_mid_move(name: &str, fault: impl AsyncFnOnce(&mut Cluster)) {
    let mut cluster = Cluster::start(ClusterConfig {
        storage_args: ["--anti-entropy-ms", "1000", "--worker-threads", "1", "--rebalance-mib-per-s", "1"]
            .map(String::from)
            .to_vec(),
        ..config(3)
    })
    .await;
    // About 6 MB: the newcomer's three quarters take seconds to pull at 1 MiB/s.
    let written = write_keys_sized(&cluster, name, 3000, 2000).await;
    let load = Load::start(&cluster, 4);
    cluster.add_storage(&[]);
    wait_copying(&cluster, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let moves = cluster.status().await["moves"].as_array().unwrap().len();
    assert!(moves > 0, "the fault must come while partitions move");
    fault(&mut cluster).await;
    let status = cluster.wait_settled(4, SETTLE).await;
    assert_balanced(&status);
    load.finish(name, 0.95).await;
    assert_all_read_back(&cluster, &written).await;
}

#[tokio::test]
async fn killing_the_joining_node_mid_move_resumes_the_move() {
    fault_mid_move("kill the joining node", async |cluster: &mut Cluster| {
        cluster.storage[3].kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.storage[3].start();
    })
    .await;
}

#[tokio::test]
async fn killing_a_source_node_mid_move_loses_nothing() {
    fault_mid_move("kill a source node", async |cluster: &mut Cluster| {
        cluster.storage[0].kill();
        tokio::time::sleep(Duration::from_secs(4)).await;
        cluster.storage[0].start();
    })
    .await;
}

#[tokio::test]
async fn killing_the_controller_mid_move_resumes_the_move() {
    fault_mid_move("kill the controller", async |cluster: &mut Cluster| {
        cluster.controller.kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.controller.start();
    })
    .await;
}

#[tokio::test]
async fn deleting_the_controller_state_mid_move_loses_nothing() {
    fault_mid_move("lose the controller's state", async |cluster: &mut Cluster| {
        cluster.controller.kill();
        std::fs::remove_dir_all(cluster.dir.path().join("controller")).unwrap();
        cluster.controller.start();
    })
    .await;
}

#[tokio::test]
async fn replication_can_be_changed_on_a_running_cluster() {
    let cluster = Cluster::start(config(4)).await;
    let written = write_keys(&cluster, "k-change", 200).await;
    for k in [2, 4, 3] {
        let (status, answer) =
            cluster.admin(common::proto::ADMIN_REPLICATION_PATH, serde_json::json!({"replication": k})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let settled = cluster.wait_settled(4, SETTLE).await;
        assert_eq!(settled["replication"], k);
        let (loads, _) = partitions_per_node(&settled);
        assert_eq!(loads.iter().sum::<u64>(), settled["partitions"].as_u64().unwrap() * k);
        assert_all_read_back(&cluster, &written).await;
    }
    let (status, answer) =
        cluster.admin(common::proto::ADMIN_REPLICATION_PATH, serde_json::json!({"replication": 5})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
}

/// Runs the real `velourfog` binary against the cluster's controller; its exit code and output.
fn velourfog(cluster: &Cluster, args: &[&str]) -> (i32, String) {
    let mut command = std::process::Command::new(testkit::binary("velourfog"));
    if let Some(secret) = cluster.secret_file() {
        command.env("VF_CLUSTER_SECRET_FILE", secret);
    }
    let output =
        command.env("VF_CONTROLLER", &cluster.controller.addr).args(args).output().expect("run velourfog");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn the_cli_shows_the_cluster_and_drains_a_node_until_it_has_left() {
    let mut cluster = Cluster::start(config(3)).await;
    let written = write_keys(&cluster, "cli", 200).await;
    cluster.add_storage(&[]);
    cluster.wait_settled(4, SETTLE).await;
    let (code, json) = velourfog(&cluster, &["--json", "status"]);
    assert_eq!(code, 0, "{json}");
    let status: serde_json::Value = serde_json::from_str(json.trim()).expect("status JSON");
    assert_eq!(status["storage"].as_array().unwrap().len(), 4);
    let (code, text) = velourfog(&cluster, &["status"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&cluster.storage[3].addr), "{text}");
    let leaving = cluster.storage[0].addr.clone();
    let (code, text) = velourfog(&cluster, &["node", "remove", &leaving, "--wait"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("has left the cluster"), "{text}");
    let status = cluster.status().await;
    assert!(status["storage"].as_array().unwrap().iter().all(|m| m["addr"] != leaving.as_str()), "{status}");
    cluster.storage[0].sigkill();
    assert_all_read_back(&cluster, &written).await;
    // Bad requests get the controller's message and exit 1.
    let (code, text) = velourfog(&cluster, &["replication", "set", "9"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("replication must be between 1 and the 3 storage nodes"), "{text}");
}

#[tokio::test]
async fn growing_past_what_16_partitions_balance_splits_them_in_place() {
    // K = 2: 16 partitions balance 3 to 5 nodes within 10%, not 6 (32 slots: 6 vs 5.3).
    let mut cluster = Cluster::start(ClusterConfig { replication: 2, ..config(3) }).await;
    let written = write_keys(&cluster, "split", 300).await;
    let load = Load::start(&cluster, 4);
    for _ in 0..3 {
        cluster.add_storage(&[]);
    }
    let settled = cluster.wait_settled(6, SETTLE).await;
    assert_eq!(settled["partitions"], 256, "{settled}");
    assert_balanced(&settled);
    load.finish("split while growing 3 -> 6 at K = 2", 0.99).await;
    assert_all_read_back(&cluster, &written).await;
}
