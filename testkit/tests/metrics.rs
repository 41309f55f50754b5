//! Metrics on real processes: every node's `/metrics` is open, passes `promtool check metrics`
//! (Debian's `prometheus` package; the tests say SKIPPED without it), counts what happened, and
//! a real Prometheus scrapes every node of a cluster with all targets up.

use bytes::Bytes;
use http::{Method, StatusCode};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{Cluster, ClusterConfig, TestClient};

fn missing(tool: &str) -> bool {
    let missing = Command::new(tool).arg("--version").output().is_err();
    if missing {
        eprintln!("SKIPPED: {tool} missing (apt-get install prometheus)");
    }
    missing
}

/// `GET /metrics` of `addr`, without the cluster secret.
async fn scrape(addr: &str) -> String {
    let (status, body) = TestClient::new().call(Method::GET, addr, "/metrics", Bytes::new()).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{addr}");
    String::from_utf8(body.to_vec()).unwrap()
}

/// The value of the series `series` (name and labels exactly as exposed) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// What `promtool check metrics` says about `text` (empty: nothing to complain about).
fn promtool(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() || !said.is_empty(), "promtool failed silently");
    if output.status.success() {
        String::new()
    } else {
        said
    }
}

#[tokio::test]
async fn every_node_serves_prometheus_metrics_that_promtool_accepts() {
    if missing("promtool") {
        return;
    }
    let cluster = Cluster::start(ClusterConfig::default()).await;
    for i in 0..20u32 {
        assert_eq!(cluster.set(0, format!("k{i}").as_bytes(), "v").await.0, StatusCode::OK);
        assert_eq!(cluster.get(1, format!("k{i}").as_bytes()).await.0, StatusCode::OK);
    }
    assert_eq!(cluster.get(0, b"missing").await.0, StatusCode::NOT_FOUND);
    let (status, _) =
        cluster.client.call(Method::GET, cluster.frontend(0), "/get/?kye=typo", Bytes::new()).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let controller = scrape(&cluster.controller.addr).await;
    assert_eq!(promtool(&controller), "", "{controller}");
    assert_eq!(value(&controller, r#"velourfog_controller_members{state="up"}"#), Some(3.0), "{controller}");
    assert_eq!(value(&controller, r#"velourfog_controller_members{state="down"}"#), Some(0.0));
    assert_eq!(value(&controller, "velourfog_controller_partitions_degraded"), Some(0.0));
    let partitions = cluster.status().await["partitions"].as_f64().unwrap();
    assert_eq!(
        value(&controller, r#"velourfog_controller_partitions{health="write_quorum"}"#),
        Some(partitions)
    );

    let (mut writes, mut read_batches) = (0.0, 0.0);
    for storage in &cluster.storage {
        let text = scrape(&storage.addr).await;
        assert_eq!(promtool(&text), "", "{text}");
        writes += value(&text, "velourfog_storage_writes_total").unwrap_or(0.0);
        assert!(value(&text, "velourfog_storage_fsync_duration_seconds_count").unwrap() > 0.0, "{text}");
        let write_batches = r#"velourfog_storage_batch_duration_seconds_count{kind="write"}"#;
        assert!(value(&text, write_batches).unwrap() > 0.0, "every replica took writes: {text}");
        read_batches +=
            value(&text, r#"velourfog_storage_batch_duration_seconds_count{kind="read"}"#).unwrap_or(0.0);
        assert!(value(&text, "velourfog_storage_disk_free_bytes").unwrap() > 0.0);
        assert_eq!(value(&text, "velourfog_storage_serving_reads"), Some(1.0));
    }
    assert!(writes >= 40.0, "20 writes reached at least 2 replicas each: {writes}");
    assert!(read_batches >= 1.0, "the reads went in batches: {read_batches}");

    let frontend = scrape(cluster.frontend(0)).await;
    assert_eq!(promtool(&frontend), "", "{frontend}");
    assert_eq!(value(&frontend, r#"velourfog_frontend_requests_total{op="set",status="200"}"#), Some(20.0));
    assert_eq!(
        value(&frontend, r#"velourfog_frontend_requests_total{op="get",status="404"}"#),
        Some(1.0),
        "{frontend}"
    );
    assert_eq!(
        value(&frontend, r#"velourfog_frontend_request_duration_seconds_count{op="set"}"#),
        Some(20.0)
    );
    let other = scrape(cluster.frontend(1)).await;
    assert_eq!(value(&other, r#"velourfog_frontend_requests_total{op="get",status="200"}"#), Some(20.0));
    assert_eq!(value(&frontend, r#"velourfog_frontend_requests_total{op="get",status="400"}"#), Some(1.0));
    assert!(frontend.contains("velourfog_frontend_replica_calls_total{node="), "{frontend}");
    let write_batches = r#"velourfog_frontend_batch_duration_seconds_count{kind="write"}"#;
    assert!(value(&frontend, write_batches).unwrap() >= 40.0, "20 writes to 2 replicas or more: {frontend}");
    let read_batches = r#"velourfog_frontend_batch_duration_seconds_count{kind="read"}"#;
    assert!(value(&other, read_batches).unwrap() >= 20.0, "20 reads in turn: {other}");
    assert!(value(&frontend, "velourfog_frontend_map_epoch").unwrap() >= 1.0);
}

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_every_node_with_all_targets_up() {
    if missing("prometheus") {
        return;
    }
    let cluster = Cluster::start(ClusterConfig::default()).await;
    let targets: Vec<String> = std::iter::once(&cluster.controller)
        .chain(&cluster.storage)
        .chain(&cluster.frontends)
        .map(|p| format!("'{}'", p.addr))
        .collect();
    let config = cluster.dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: velourfog\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", testkit::free_port());
    let log = std::fs::File::create(cluster.dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", cluster.dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let client = TestClient::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let up = loop {
        assert!(Instant::now() < deadline, "targets never all up");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok((StatusCode::OK, body)) =
            client.call(Method::GET, &addr, "/api/v1/targets", Bytes::new()).await
        else {
            continue;
        };
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let active = answer["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
        if active.len() == targets.len() && active.iter().all(|t| t["health"] == "up") {
            break active.len();
        }
    };
    assert_eq!(up, 6, "controller, 3 storage nodes, 2 frontends");
    let query = "/api/v1/query?query=velourfog_controller_members%7Bstate%3D%22up%22%7D";
    let (_, body) = client.call(Method::GET, &addr, query, Bytes::new()).await.unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["data"]["result"][0]["value"][1], "3", "{answer}");
}
