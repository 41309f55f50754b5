//! The operator's dashboard: a static page (`GET /` or `/dashboard`, [`PAGE`]) that polls
//! `GET /v1/dashboard` every two seconds, and the collector behind that JSON.
//!
//! Every [`SCRAPE_INTERVAL`] the collector reads the `/metrics` of every storage node and
//! frontend the controller knows (open endpoints, each call bounded by `SCRAPE_TIMEOUT`) and
//! keeps, for the last [`WINDOW`] points, the cluster's request rates by operation and its
//! latency quantiles, computed from the frontends' own counters and histogram buckets (deltas
//! between scrapes, so a restarted frontend's reset counters count from zero, never negative);
//! and, per storage node, its records, disk and write rate. Memory is bounded by the window.
//! The parsing and the arithmetic are plain functions, tested without I/O.

use crate::Controller;
use common::http::Client;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The page: one HTML file with its CSS and a little vanilla JavaScript, no build step, no CDN.
pub const PAGE: &str = include_str!("dashboard.html");

pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(2);
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);
/// Points kept: ten minutes at one per scrape.
pub const WINDOW: usize = 300;

/// The operations whose rates and latencies the dashboard draws.
const OPERATIONS: [&str; 3] = ["get", "set", "delete"];

/// The samples of one `/metrics` answer that the dashboard uses, by series (name and labels as
/// exposed, such as `velourfog_frontend_requests_total{op="get",status="200"}`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Scrape(HashMap<String, f64>);

impl Scrape {
    /// Parses the Prometheus text format, keeping the series whose names start with one of
    /// `prefixes`; comments and malformed lines are skipped.
    pub fn parse(text: &str, prefixes: &[&str]) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && prefixes.iter().any(|p| line.starts_with(p)))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            });
        Self(samples.collect())
    }

    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// The sum of every series named `name` whose labels include `label`.
    fn sum(&self, name: &str, label: &str) -> f64 {
        let matches = |series: &String| {
            series.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') && rest.contains(label))
        };
        self.0.iter().filter(|(s, _)| matches(s)).map(|(_, v)| v).sum()
    }

    /// The cumulative buckets (upper bound, count) of histogram `name` for operation `op`.
    fn buckets(&self, name: &str, op: &str) -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{");
        let op = format!("op=\"{op}\"");
        let mut buckets: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter(|(s, _)| s.starts_with(&prefix) && s.contains(&op))
            .filter_map(|(s, v)| {
                let le = s.split("le=\"").nth(1)?.split('"').next()?;
                let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((bound, *v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

/// The quantile `q` of a cumulative histogram (Prometheus's `histogram_quantile`: linear
/// within the bucket that holds it); `None` without observations.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let within = if count > lower.1 { (rank - lower.1) / (count - lower.1) } else { 0.0 };
            return Some(lower.0 + (bound - lower.0) * within);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

/// `current - previous` for cumulative values, never negative (a restarted process starts its
/// counters again from zero: its whole current value is new).
fn delta(current: f64, previous: Option<f64>) -> f64 {
    match previous {
        Some(previous) if current >= previous => current - previous,
        _ => current,
    }
}

/// One point of the cluster-wide series.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// Unix seconds.
    pub t: u64,
    /// Requests per second answered by all frontends, by operation.
    pub rates: BTreeMap<&'static str, f64>,
    /// Median and 99th percentile latency over all frontends' gets and sets, in milliseconds.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// What the dashboard shows of one storage node.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct NodeStats {
    pub records: f64,
    pub engine_disk_bytes: f64,
    pub disk_free_bytes: f64,
    pub disk_total_bytes: f64,
    pub writes_per_s: f64,
}

/// The collected history.
#[derive(Debug, Default)]
pub struct History {
    points: VecDeque<Point>,
    nodes: BTreeMap<String, NodeStats>,
    previous: HashMap<String, Scrape>,
}

impl History {
    /// Takes in one round of scrapes (by address; a node that did not answer is absent) taken
    /// `elapsed` after the last round, at Unix second `t`.
    pub fn record(
        &mut self,
        t: u64,
        elapsed: Duration,
        frontends: &[(String, Scrape)],
        storage: &[(String, Scrape)],
    ) {
        let seconds = elapsed.as_secs_f64().max(0.001);
        let mut rates = BTreeMap::new();
        let mut merged: Vec<(f64, f64)> = Vec::new();
        for (addr, scrape) in frontends {
            let previous = self.previous.get(addr);
            for op in OPERATIONS {
                let name = "velourfog_frontend_requests_total";
                let label = format!("op=\"{op}\"");
                let new = delta(scrape.sum(name, &label), previous.map(|p| p.sum(name, &label)));
                *rates.entry(op).or_insert(0.0) += new / seconds;
            }
            for op in ["get", "set"] {
                let name = "velourfog_frontend_request_duration_seconds";
                let before = previous.map(|p| p.buckets(name, op)).unwrap_or_default();
                for (i, &(bound, count)) in scrape.buckets(name, op).iter().enumerate() {
                    let new = delta(count, before.get(i).filter(|b| b.0 == bound).map(|b| b.1));
                    match merged.iter_mut().find(|(b, _)| *b == bound) {
                        Some(slot) => slot.1 += new,
                        None => merged.push((bound, new)),
                    }
                }
            }
        }
        merged.sort_by(|a, b| a.0.total_cmp(&b.0));
        let ms = |q| quantile(&merged, q).map(|s| s * 1000.0);
        self.points.push_back(Point { t, rates, p50_ms: ms(0.5), p99_ms: ms(0.99) });
        while self.points.len() > WINDOW {
            self.points.pop_front();
        }
        self.nodes.clear();
        for (addr, scrape) in storage {
            let writes = "velourfog_storage_writes_total";
            let previous = self.previous.get(addr).map(|p| p.get(writes));
            let stats = NodeStats {
                records: scrape.get("velourfog_storage_records"),
                engine_disk_bytes: scrape.get("velourfog_storage_engine_disk_bytes"),
                disk_free_bytes: scrape.get("velourfog_storage_disk_free_bytes"),
                disk_total_bytes: scrape.get("velourfog_storage_disk_total_bytes"),
                writes_per_s: delta(scrape.get(writes), previous) / seconds,
            };
            self.nodes.insert(addr.clone(), stats);
        }
        self.previous = frontends.iter().chain(storage).cloned().collect();
    }
}

/// The answer to `GET /v1/dashboard`.
#[derive(Debug, Serialize)]
pub struct Dashboard<'a> {
    pub status: common::proto::ClusterStatus,
    /// Per storage node address.
    pub nodes: &'a BTreeMap<String, NodeStats>,
    pub series: Vec<&'a Point>,
}

/// The collector's shared state.
#[derive(Debug, Default)]
pub struct Collector {
    history: Mutex<History>,
}

impl Collector {
    /// The dashboard's JSON for `status`.
    pub fn answer(&self, status: common::proto::ClusterStatus) -> Vec<u8> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let dashboard = Dashboard { status, nodes: &history.nodes, series: history.points.iter().collect() };
        serde_json::to_vec(&dashboard).expect("the dashboard encodes")
    }
}

/// Scrapes every node every [`SCRAPE_INTERVAL`] until `shutdown`.
pub async fn collect(controller: Arc<Controller>, mut shutdown: common::shutdown::Shutdown) {
    let client = Client::new();
    let mut last = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SCRAPE_INTERVAL) => {}
            _ = shutdown.wait() => return,
        }
        let status = controller.cluster().status(std::time::Instant::now());
        let storage: Vec<String> = status.storage.iter().map(|m| m.addr.clone()).collect();
        let frontends: Vec<String> = status.frontends.iter().map(|f| f.addr.clone()).collect();
        let (frontends, storage) = tokio::join!(
            scrape_all(&client, &frontends, "velourfog_frontend_"),
            scrape_all(&client, &storage, "velourfog_storage_")
        );
        let now = std::time::Instant::now();
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut history = controller.collector.history.lock().unwrap_or_else(|p| p.into_inner());
        history.record(t, now - last, &frontends, &storage);
        last = now;
    }
}

async fn scrape_all(client: &Client, addrs: &[String], prefix: &str) -> Vec<(String, Scrape)> {
    let scrapes = addrs.iter().map(|addr| async move {
        let url = format!("http://{addr}/metrics");
        let make = || http::Request::get(url.as_str()).body(Default::default()).expect("valid request");
        match client.send_collect(make, SCRAPE_TIMEOUT).await {
            Ok((parts, body)) if parts.status.is_success() => {
                Some((addr.clone(), Scrape::parse(&String::from_utf8_lossy(&body), &[prefix])))
            }
            _ => None,
        }
    });
    futures_util::future::join_all(scrapes).await.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRONTEND: &str = r#"# HELP velourfog_frontend_requests_total Client requests answered.
# TYPE velourfog_frontend_requests_total counter
velourfog_frontend_requests_total{op="get",status="200"} 90
velourfog_frontend_requests_total{op="get",status="404"} 10
velourfog_frontend_requests_total{op="set",status="200"} 40
velourfog_frontend_request_duration_seconds_bucket{op="get",le="0.001"} 50
velourfog_frontend_request_duration_seconds_bucket{op="get",le="0.01"} 100
velourfog_frontend_request_duration_seconds_bucket{op="get",le="+Inf"} 100
velourfog_frontend_request_duration_seconds_bucket{op="set",le="0.001"} 0
velourfog_frontend_request_duration_seconds_bucket{op="set",le="0.01"} 40
velourfog_frontend_request_duration_seconds_bucket{op="set",le="+Inf"} 40
velourfog_storage_records 3
not a sample line
"#;

    #[test]
    fn scrapes_keep_the_series_asked_for() {
        let scrape = Scrape::parse(FRONTEND, &["velourfog_frontend_"]);
        assert_eq!(scrape.get(r#"velourfog_frontend_requests_total{op="get",status="404"}"#), 10.0);
        assert_eq!(scrape.sum("velourfog_frontend_requests_total", "op=\"get\""), 100.0);
        assert_eq!(scrape.get("velourfog_storage_records"), 0.0, "another prefix");
        let buckets = scrape.buckets("velourfog_frontend_request_duration_seconds", "get");
        assert_eq!(buckets, [(0.001, 50.0), (0.01, 100.0), (f64::INFINITY, 100.0)]);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let buckets = [(0.001, 50.0), (0.01, 100.0), (f64::INFINITY, 100.0)];
        let cases = [(0.5, Some(0.001)), (0.25, Some(0.0005)), (0.75, Some(0.0055)), (1.0, Some(0.01))];
        for (q, expected) in cases {
            let got = quantile(&buckets, q).unwrap();
            assert!((got - expected.unwrap()).abs() < 1e-12, "q={q}: {got}");
        }
        assert_eq!(quantile(&[(0.001, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(
            quantile(&[(0.001, 0.0), (f64::INFINITY, 4.0)], 0.99),
            Some(0.001),
            "beyond the last bound"
        );
    }

    #[test]
    fn rates_come_from_deltas_and_survive_restarts() {
        let mut history = History::default();
        let first = Scrape::parse(FRONTEND, &["velourfog_frontend_"]);
        let later = FRONTEND.replace("} 90", "} 190").replace(r#"le="0.01"} 100"#, r#"le="0.01"} 200"#);
        let later = later.replace(r#"le="+Inf"} 100"#, r#"le="+Inf"} 200"#);
        let later = Scrape::parse(&later, &["velourfog_frontend_"]);
        history.record(1, Duration::from_secs(2), &[("f:1".into(), first.clone())], &[]);
        history.record(3, Duration::from_secs(2), &[("f:1".into(), later)], &[]);
        let point = history.points.back().unwrap();
        assert_eq!(point.rates["get"], 50.0, "100 more gets in 2 s");
        assert_eq!(point.rates["set"], 0.0);
        // The 100 new gets all took between 1 and 10 ms.
        let p50 = point.p50_ms.unwrap();
        assert!(p50 > 1.0 && p50 < 10.0, "{p50}");
        // The frontend restarted: its counters start again; what it shows is all new.
        history.record(5, Duration::from_secs(2), &[("f:1".into(), first)], &[]);
        assert_eq!(history.points.back().unwrap().rates["get"], 50.0);
        for t in 0..WINDOW as u64 + 10 {
            history.record(t, Duration::from_secs(2), &[], &[]);
        }
        assert_eq!(history.points.len(), WINDOW, "bounded");
    }

    #[test]
    fn storage_nodes_report_records_disk_and_write_rates() {
        let mut history = History::default();
        let scrape = |writes: u32| {
            let text = format!(
                "velourfog_storage_records 7\nvelourfog_storage_disk_free_bytes 100\nvelourfog_storage_writes_total {writes}\n"
            );
            Scrape::parse(&text, &["velourfog_storage_"])
        };
        history.record(1, Duration::from_secs(2), &[], &[("s:1".into(), scrape(10))]);
        history.record(3, Duration::from_secs(2), &[], &[("s:1".into(), scrape(30))]);
        let node = &history.nodes["s:1"];
        assert_eq!((node.records, node.disk_free_bytes, node.writes_per_s), (7.0, 100.0, 10.0));
    }
}
