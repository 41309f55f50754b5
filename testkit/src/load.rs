//! A write-then-read load through real frontends: each writer sets a fresh key through one
//! frontend and reads it back at once through another, so a stale or lost acknowledged write
//! shows up the moment it happens. Shared by the fault and membership suites.

use crate::TestClient;
use bytes::Bytes;
use http::{Method, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The frontends a load talks to (cloned out of a cluster, so the test keeps `&mut` on it to
/// start and kill processes while the load runs).
#[derive(Debug, Clone)]
pub struct Frontends {
    pub client: TestClient,
    pub addrs: Vec<String>,
}

impl Frontends {
    /// Sets `key` through frontend `i` (value in the POST body).
    pub async fn set(&self, i: usize, key: &[u8], value: Bytes) -> (StatusCode, Bytes) {
        let path = format!("/set/?key={}", common::query::encode(key));
        let addr = &self.addrs[i % self.addrs.len()];
        self.client
            .call(Method::POST, addr, &path, value)
            .await
            .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, Bytes::from(e.to_string())))
    }

    /// Reads `key` through frontend `i`.
    pub async fn get(&self, i: usize, key: &[u8]) -> (StatusCode, Bytes) {
        let path = format!("/get/?key={}", common::query::encode(key));
        let addr = &self.addrs[i % self.addrs.len()];
        self.client
            .call(Method::GET, addr, &path, Bytes::new())
            .await
            .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, Bytes::from(e.to_string())))
    }
}

/// What a write-then-read load saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub writes: usize,
    pub write_failures: Vec<String>,
    pub write_latencies_us: Vec<u64>,
    /// Keys whose acknowledged value read back as something else (must stay empty).
    pub stale_reads: Vec<String>,
    pub acknowledged: Vec<(String, Bytes)>,
}

impl LoadReport {
    pub fn success_rate(&self) -> f64 {
        1.0 - self.write_failures.len() as f64 / self.writes.max(1) as f64
    }

    pub fn max_ms(&self) -> f64 {
        self.write_latencies_us.iter().max().copied().unwrap_or(0) as f64 / 1000.0
    }

    pub fn p99_ms(&mut self) -> f64 {
        self.write_latencies_us.sort_unstable();
        let i = (self.write_latencies_us.len() as f64 * 0.99) as usize;
        self.write_latencies_us
            .get(i.min(self.write_latencies_us.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    }

    /// Reads every acknowledged key back through `frontends`; returns the ones that did not
    /// answer their acknowledged value.
    pub async fn lost(&self, frontends: &Frontends) -> Vec<String> {
        let mut lost = Vec::new();
        for (i, (key, value)) in self.acknowledged.iter().enumerate() {
            let (status, got) = frontends.get(i, key.as_bytes()).await;
            if status != StatusCode::OK || got != *value {
                lost.push(format!("{key}: {status} {:?}", String::from_utf8_lossy(&got)));
            }
        }
        lost
    }
}

/// Runs `writers` loops of set-through-one-frontend then get-through-the-other until `stop`.
pub async fn write_then_read(frontends: Frontends, writers: usize, stop: Arc<AtomicBool>) -> LoadReport {
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (frontends, stop, report) = (frontends.clone(), stop.clone(), report.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("load-{w}-{i}");
                    let value = Bytes::from(format!("value {w} {i}"));
                    let started = Instant::now();
                    let (status, body) = frontends.set(w, key.as_bytes(), value.clone()).await;
                    let latency = started.elapsed().as_micros() as u64;
                    let acknowledged = status == StatusCode::OK;
                    let read =
                        if acknowledged { Some(frontends.get(w + 1, key.as_bytes()).await) } else { None };
                    let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
                    report.writes += 1;
                    report.write_latencies_us.push(latency);
                    if !acknowledged {
                        report
                            .write_failures
                            .push(format!("{status}: {}", String::from_utf8_lossy(&body).trim()));
                    }
                    if let Some((status, got)) = read {
                        if status != StatusCode::OK || got != value {
                            report
                                .stale_reads
                                .push(format!("{key}: {status} {:?}", String::from_utf8_lossy(&got)));
                        }
                        report.acknowledged.push((key, value));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("load task");
    }
    Arc::try_unwrap(report).expect("load tasks ended").into_inner().unwrap_or_else(|p| p.into_inner())
}
