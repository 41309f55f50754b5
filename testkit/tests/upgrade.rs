//! A rolling restart, as an upgrade does it, under a write-then-read load through the client
//! library over every frontend: each storage node in turn is stopped gracefully (SIGTERM) and
//! started again, and the next waits until the controller shows it up and serving reads; then
//! the controller; then each frontend. No request may fail, and every acknowledged write must
//! read back.

use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::{Cluster, ClusterConfig, Process};

/// How long a graceful stop may take (in-flight requests get `common::http::SHUTDOWN_GRACE`).
const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// How long a restarted process may take to be back in service.
const BACK_DEADLINE: Duration = Duration::from_secs(60);
/// Load run between two restarts, so that every restart meets requests in flight.
const BETWEEN: Duration = Duration::from_secs(1);
/// How long the cluster must look settled before the next restart: longer than a read lease
/// (1.5 s) and the fence that follows a failed write, so a node fenced after its restart
/// shows as down or catching up within it.
const STEADY: Duration = Duration::from_secs(3);

/// What the load saw.
#[derive(Default)]
struct Report {
    writes: usize,
    /// Failed calls, and reads that did not return the value just acknowledged.
    errors: Vec<String>,
    acknowledged: Vec<(String, Bytes)>,
}

/// `writers` loops of set-then-get through `client` until `stop`.
async fn write_then_read(client: client::Client, writers: usize, stop: Arc<AtomicBool>) -> Report {
    let report = Arc::new(Mutex::new(Report::default()));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (client, stop, report) = (client.clone(), stop.clone(), report.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (key, value) = (format!("upgrade-{w}-{i}"), Bytes::from(format!("value {w} {i}")));
                    let outcome = match client.set(&key, value.clone()).await {
                        Err(e) => Err(format!("set {key}: {e}")),
                        Ok(()) => match client.get(&key).await {
                            Ok(Some(got)) if got == value => Ok(()),
                            other => Err(format!("get {key} right after its set: {other:?}")),
                        },
                    };
                    let mut report = report.lock().unwrap();
                    report.writes += 1;
                    match outcome {
                        Ok(()) => report.acknowledged.push((key, value)),
                        Err(e) => report.errors.push(format!("{:.1} s: {e}", started_s())),
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("load task");
    }
    Arc::try_unwrap(report).ok().expect("load tasks ended").into_inner().unwrap()
}

/// Seconds since the test began, to line errors up with the restart log.
fn started_s() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// SIGTERM, then start again; the stop must be clean (exit 0).
fn restart(process: &mut Process) {
    let name = process.name.clone();
    eprintln!("{:.1} s: stopping {name}", started_s());
    let clean = tokio::task::block_in_place(|| process.terminate(STOP_DEADLINE));
    assert!(clean, "{name} did not exit 0 within {STOP_DEADLINE:?} of SIGTERM");
    process.start();
    eprintln!("{:.1} s: {name} started again", started_s());
}

/// Waits until the controller shows every storage node up and each serves reads, without a
/// new map epoch, for [`STEADY`]; logs each change of the epoch and the nodes' states.
async fn wait_steady(cluster: &Cluster) {
    let started = Instant::now();
    let mut last_view = String::new();
    let mut steady_since: Option<(Instant, u64)> = None;
    loop {
        let status = cluster.try_status().await.unwrap_or_default();
        let epoch = status["epoch"].as_u64().unwrap_or(0);
        let members = status["storage"].as_array().cloned().unwrap_or_default();
        let states: Vec<String> =
            members.iter().map(|m| format!("{}:{}", m["node_id"], m["state"])).collect();
        let mut serving = !members.is_empty() && members.iter().all(|m| m["state"] == "up");
        for node in &cluster.storage {
            serving = serving && serves_reads(cluster, &node.addr).await;
        }
        let view = format!("epoch {epoch}, {}, serving reads: {serving}", states.join(" "));
        if view != last_view {
            eprintln!("{:.1} s:   {view}", started_s());
            last_view = view;
        }
        steady_since = match steady_since {
            Some((since, at)) if serving && at == epoch => Some((since, at)),
            _ if serving => Some((Instant::now(), epoch)),
            _ => None,
        };
        if steady_since.is_some_and(|(since, _)| since.elapsed() >= STEADY) {
            return;
        }
        assert!(started.elapsed() < BACK_DEADLINE, "not steady after {BACK_DEADLINE:?}: {last_view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the storage node at `addr` answers that it serves reads (holds a lease).
async fn serves_reads(cluster: &Cluster, addr: &str) -> bool {
    match cluster.client.call(http::Method::GET, addr, "/v1/stats", Bytes::new()).await {
        Ok((status, body)) if status.is_success() => serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|stats| stats["serving_reads"] == true),
        _ => false,
    }
}

/// Waits until the controller answers its status again.
async fn wait_controller(cluster: &Cluster) {
    let started = Instant::now();
    while cluster.try_status().await.is_none() {
        assert!(started.elapsed() < BACK_DEADLINE, "the controller is not back after {BACK_DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_request_and_loses_no_write() {
    started_s();
    let mut cluster = Cluster::start(ClusterConfig::default()).await;
    wait_steady(&cluster).await;
    let addrs: Vec<String> = cluster.frontends.iter().map(|f| f.addr.clone()).collect();
    let client = client::Client::new(&addrs).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(write_then_read(client.clone(), 4, stop.clone()));
    tokio::time::sleep(BETWEEN).await;

    for s in 0..cluster.storage.len() {
        restart(&mut cluster.storage[s]);
        wait_steady(&cluster).await;
        eprintln!("{:.1} s: storage{s} is up and serving reads ({:?})", started_s(), client.stats());
        tokio::time::sleep(BETWEEN).await;
    }
    restart(&mut cluster.controller);
    wait_controller(&cluster).await;
    wait_steady(&cluster).await;
    eprintln!("{:.1} s: the controller is back, every node up ({:?})", started_s(), client.stats());
    tokio::time::sleep(BETWEEN).await;
    for f in 0..cluster.frontends.len() {
        restart(&mut cluster.frontends[f]);
        cluster.wait_until_serving(BACK_DEADLINE).await;
        eprintln!("{:.1} s: frontend{f} serves again ({:?})", started_s(), client.stats());
        tokio::time::sleep(BETWEEN).await;
    }

    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    let mut lost = Vec::new();
    for (key, value) in &report.acknowledged {
        match client.get(key).await {
            Ok(Some(got)) if got == *value => {}
            other => lost.push(format!("{key}: {other:?}")),
        }
    }
    let stats = client.stats();
    eprintln!(
        "rolling restart of 3 storage nodes, the controller and 2 frontends: {} writes, {} errors, \
         {} retries by the client, {} of {} acknowledged writes read back wrong",
        report.writes,
        report.errors.len(),
        stats.retries,
        lost.len(),
        report.acknowledged.len()
    );
    assert!(report.errors.is_empty(), "requests failed: {:#?}", report.errors);
    assert!(lost.is_empty(), "acknowledged writes read back wrong: {lost:?}");
    assert!(report.writes > 100, "the load hardly ran: {} writes", report.writes);
}
