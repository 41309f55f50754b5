//! Durable write throughput of one storage node's store: 100-byte values written by 1, 16 and 64
//! concurrent writers, under each `--sync` policy. Each write is acknowledged exactly as the node
//! acknowledges it: applied, then `wait_durable`. Run: `cargo bench -p storage --bench
//! durable_writes` (`VF_BENCH_SECS` sets the seconds per case, default 3).

use bytes::Bytes;
use common::version::Record;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::durability::{Durability, SyncPolicy};
use storage::store::Store;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds = std::env::var("VF_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3u64);
    let duration = Duration::from_secs(seconds);
    println!(
        "durable writes of 100-byte values, {seconds} s per case, store on {}",
        std::env::temp_dir().display()
    );
    println!(
        "{:<8} {:>8} {:>12} {:>10} {:>10} {:>10}",
        "sync", "writers", "writes/s", "p50 µs", "p99 µs", "max µs"
    );
    for (label, policy) in
        [("always", SyncPolicy::Always), ("100ms", SyncPolicy::Interval(Duration::from_millis(100)))]
    {
        for writers in [1usize, 16, 64] {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = Arc::new(Store::open(dir.path(), 64 << 20, 16 << 20).expect("open store"));
            let durability = Arc::new(Durability::start(store.clone(), policy));
            let deadline = Instant::now() + duration;
            let tasks = (0..writers).map(|w| {
                let (store, durability) = (store.clone(), durability.clone());
                tokio::spawn(async move {
                    let value = Bytes::from(vec![b'v'; 100]);
                    let mut latencies = Vec::new();
                    let mut i = 0u64;
                    while Instant::now() < deadline {
                        let started = Instant::now();
                        let key = format!("writer-{w}-key-{i}");
                        let record = Record::value(i + 1, value.clone());
                        tokio::task::block_in_place(|| store.apply(key.as_bytes(), &record)).expect("apply");
                        durability.wait_durable().await.expect("durable");
                        latencies.push(started.elapsed().as_micros() as u64);
                        i += 1;
                    }
                    latencies
                })
            });
            let mut latencies: Vec<u64> = Vec::new();
            for task in futures_util::future::join_all(tasks).await {
                latencies.extend(task.expect("writer"));
            }
            latencies.sort_unstable();
            let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
            println!(
                "{label:<8} {writers:>8} {:>12.0} {:>10} {:>10} {:>10}",
                latencies.len() as f64 / duration.as_secs_f64(),
                at(0.50),
                at(0.99),
                latencies.last().copied().unwrap_or(0)
            );
        }
    }
}
