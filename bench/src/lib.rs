//! `bench`: a load generator for Velour Fog, and for etcd's v2 HTTP API so that both are
//! measured by the same client in the same run. It keeps `--concurrency` requests in flight for
//! `--duration`, mixing reads and writes (`--read-ratio`) over `--keys` keys drawn uniformly or
//! from a Zipf distribution, and reports throughput and latency percentiles per operation.
//!
//! The measured hot loop keeps its own raw client ([`conn`]) by default, because the `client`
//! library distorts the measurement: side by side in one run (`bench/drivers.sh`: 1 frontend,
//! 3 storage nodes, K = 3, 50 connections, 100-byte values, two rounds, 2026-12-07) the library
//! drove 0.57x and 0.69x of the raw loop's GETs (76k and 75k against 133k and 108k ops/s, p99
//! 3.8-4.0 ms against 0.7-1.5 ms) and 0.85x and 0.93x of its SETs (17.1k and 15.7k against 20.1k
//! and 16.9k ops/s). Its pooled hyper client spends a task wakeup or two per request more on a
//! machine whose two cores the cluster shares. The library is used where it fits: parsing
//! `--frontends`, the preload (its retries ride out a busy moment) and `--verify`, and as a
//! measured driver of its own (`--driver client|both`).

pub mod conn;
pub mod histogram;
pub mod report;
pub mod workload;

use anyhow::Context;
use bytes::Bytes;
use conn::Conn;
use histogram::Histogram;
use rand::{Rng, SeedableRng};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use workload::{Distribution, KeyChooser};

/// Which HTTP API the targets speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/get/?key=K` and `POST /set/?key=K`.
    VelourFog,
    /// etcd's v2 keys API: `GET /v2/keys/K`, `PUT /v2/keys/K` with `value=V`.
    EtcdV2,
}

impl FromStr for Api {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "velourfog" => Ok(Api::VelourFog),
            "etcd-v2" => Ok(Api::EtcdV2),
            _ => Err(format!("`{s}` is not an API (velourfog, etcd-v2)")),
        }
    }
}

/// A duration such as `30s`, `500ms` or `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, ""), |i| s.split_at(i));
    let n: u64 = number.parse().map_err(|_| format!("`{s}` is not a duration such as 30s, 500ms or 2m"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m)")),
    };
    if duration.is_zero() {
        return Err("the duration must be positive".into());
    }
    Ok(duration)
}

fn parse_endpoint(s: &str) -> Result<client::Endpoint, String> {
    s.parse().map_err(|e: client::BadEndpoint| e.to_string())
}

/// Which client sends the measured requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// The bench's own lean HTTP/1.1 client ([`conn`]).
    Raw,
    /// The `client` library.
    Client,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Raw => "raw",
            Driver::Client => "client library",
        }
    }
}

/// `--driver`: one of the drivers, or both side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    One(Driver),
    Both,
}

impl FromStr for DriverChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "raw" => Ok(DriverChoice::One(Driver::Raw)),
            "client" => Ok(DriverChoice::One(Driver::Client)),
            "both" => Ok(DriverChoice::Both),
            _ => Err(format!("`{s}` is not a driver (raw, client, both)")),
        }
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{s}` is not a ratio between 0 and 1")),
    }
}

/// Command line of the benchmark tool.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "bench",
    version,
    about = "Load generator for Velour Fog (and etcd's v2 API, for comparison)."
)]
pub struct Config {
    /// The frontends (or etcd endpoints), comma-separated, each HOST:PORT or an http:// base
    /// URL; requests are spread across them.
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_endpoint)]
    pub frontends: Vec<client::Endpoint>,
    /// Who sends the requests: `raw`, the bench's own client (one connection per worker,
    /// requests written as prepared bytes); `client`, the `client` library (pooled, with
    /// failover and retries); or `both`, alternating halves of --duration each, reported side
    /// by side. Velour Fog's API only for `client` and `both`.
    #[arg(long, default_value = "raw")]
    pub driver: DriverChoice,
    /// After --preload, read every key back through the client library and fail if any
    /// value differs (Velour Fog's API only).
    #[arg(long, requires = "preload")]
    pub verify: bool,
    /// Which API the targets speak: velourfog or etcd-v2.
    #[arg(long, default_value = "velourfog")]
    pub api: Api,
    /// How long to run the measured load (e.g. 30s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Requests kept in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Fraction of operations that are reads (0 = all writes, 1 = all reads).
    #[arg(long, default_value = "0.9", value_parser = parse_ratio)]
    pub read_ratio: f64,
    /// Threads driving the load. One costs least per request when the client shares the
    /// machine with what it measures (`redis-benchmark` is single-threaded too); give a client
    /// with cores of its own more.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Key distribution: uniform, zipf (exponent 0.99) or zipf:EXPONENT.
    #[arg(long, default_value = "uniform")]
    pub distribution: Distribution,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Write every key once before measuring, so reads find values.
    #[arg(long)]
    pub preload: bool,
    /// After the measured load, delete every key once through the client library (Velour
    /// Fog's API only), and report how long it took.
    #[arg(long)]
    pub delete_all: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Write a latency plot (SVG) to this file.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    /// A label for the report (e.g. the system measured).
    #[arg(long, default_value = "velourfog")]
    pub label: String,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

impl Config {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.concurrency > 0, "--concurrency must be at least 1");
        anyhow::ensure!(self.keys > 0, "--keys must be at least 1");
        let velourfog_only = self.driver != DriverChoice::One(Driver::Raw) || self.verify || self.delete_all;
        anyhow::ensure!(
            self.api == Api::VelourFog || !velourfog_only,
            "--driver client|both, --verify and --delete-all use the client library, which speaks Velour Fog's API only"
        );
        Ok(())
    }
}

/// The operations measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Get,
    Set,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
        }
    }
}

/// What the load measured, per operation.
#[derive(Debug, Clone, Default)]
pub struct OpStats {
    pub latency_us: Histogram,
    pub errors: u64,
    /// Reads that found no value (not errors).
    pub misses: u64,
    pub first_error: Option<String>,
}

impl OpStats {
    fn merge(&mut self, other: &OpStats) {
        self.latency_us.merge(&other.latency_us);
        self.errors += other.errors;
        self.misses += other.misses;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub elapsed: Duration,
    pub get: OpStats,
    pub set: OpStats,
}

impl Outcome {
    /// Two runs as one: their times added, their operations together.
    pub fn merge(mut self, other: &Outcome) -> Outcome {
        self.elapsed += other.elapsed;
        self.get.merge(&other.get);
        self.set.merge(&other.set);
        self
    }
}

/// Where requests go and how they are spelled.
struct Target {
    api: Api,
    /// `host:port` and path prefix of each URL.
    endpoints: Vec<(String, String)>,
}

impl Target {
    fn new(api: Api, frontends: &[client::Endpoint]) -> Self {
        let endpoints = frontends.iter().map(|e| (e.authority().to_owned(), e.prefix().to_owned())).collect();
        Self { api, endpoints }
    }

    /// A connection to the endpoint worker `which` uses.
    fn connect(&self, which: usize) -> Conn {
        Conn::new(self.endpoints[which % self.endpoints.len()].0.clone())
    }

    /// The bytes of one request.
    fn request(&self, op: Op, which: usize, key: &str, value: &Bytes) -> Vec<u8> {
        let (addr, prefix) = &self.endpoints[which % self.endpoints.len()];
        let key = common::query::encode(key.as_bytes());
        let (line, content_type, body) = match (self.api, op) {
            (Api::VelourFog, Op::Get) => (format!("GET {prefix}/get/?key={key}"), None, None),
            (Api::VelourFog, Op::Set) => {
                (format!("POST {prefix}/set/?key={key}"), None, Some(value.to_vec()))
            }
            (Api::EtcdV2, Op::Get) => (format!("GET {prefix}/v2/keys/{key}"), None, None),
            (Api::EtcdV2, Op::Set) => {
                let form = format!("value={}", common::query::encode(value));
                (
                    format!("PUT {prefix}/v2/keys/{key}"),
                    Some("application/x-www-form-urlencoded"),
                    Some(form.into_bytes()),
                )
            }
        };
        let mut request = format!("{line} HTTP/1.1\r\nhost: {addr}\r\n");
        if let Some(content_type) = content_type {
            request.push_str(&format!("content-type: {content_type}\r\n"));
        }
        if let Some(body) = &body {
            request.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut request = request.into_bytes();
        request.extend_from_slice(body.as_deref().unwrap_or_default());
        request
    }

    /// Performs one operation on `conn`; `Ok(true)` if a read found a value or a write was
    /// stored.
    async fn perform(
        &self,
        conn: &mut Conn,
        op: Op,
        which: usize,
        key: &str,
        value: &Bytes,
    ) -> Result<bool, String> {
        let request = self.request(op, which, key, value);
        let response = tokio::time::timeout(Duration::from_secs(10), conn.send(&request))
            .await
            .map_err(|_| {
                conn.reset(); // the answer may still arrive: never read it as the next one's
                "no answer within 10 s".to_string()
            })?
            .map_err(|e| e.to_string())?;
        match response.status {
            200 | 201 => Ok(true),
            404 if op == Op::Get => Ok(false),
            status => Err(format!("{status}: {}", String::from_utf8_lossy(&response.body).trim())),
        }
    }
}

fn value_of(size: usize, seed: u64) -> Bytes {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Bytes::from((0..size).map(|_| rng.random_range(b'a'..=b'z')).collect::<Vec<u8>>())
}

/// What one worker sends its requests with.
enum Sender {
    Raw(Conn),
    Client(client::Client),
}

impl Sender {
    fn new(driver: Driver, target: &Target, library: &client::Client, worker: usize) -> Self {
        match driver {
            Driver::Raw => Sender::Raw(target.connect(worker)),
            Driver::Client => Sender::Client(library.clone()),
        }
    }

    /// Performs one operation; `Ok(true)` if a read found a value or a write was stored.
    async fn perform(
        &mut self,
        target: &Target,
        op: Op,
        worker: usize,
        key: &str,
        value: &Bytes,
    ) -> Result<bool, String> {
        match self {
            Sender::Raw(conn) => target.perform(conn, op, worker, key, value).await,
            Sender::Client(client) => match op {
                Op::Get => client.get(key).await.map(|v| v.is_some()).map_err(|e| e.to_string()),
                Op::Set => client.set(key, value.clone()).await.map(|()| true).map_err(|e| e.to_string()),
            },
        }
    }
}

/// The client library over the configured frontends (with its default failover policy).
pub fn library_client(config: &Config) -> client::Client {
    client::Client::new(config.frontends.iter().map(ToString::to_string)).expect("parsed frontends")
}

/// Writes every key once (with `concurrency` writers): through the client library for Velour
/// Fog (its retries make a preload ride out a busy moment), the raw client for etcd.
pub async fn preload(config: &Config) -> anyhow::Result<()> {
    let target = Arc::new(Target::new(config.api, &config.frontends));
    let library = library_client(config);
    let driver = if config.api == Api::VelourFog { Driver::Client } else { Driver::Raw };
    let next = Arc::new(AtomicU64::new(0));
    let value = value_of(config.value_size, 0);
    let tasks: Vec<_> = (0..config.concurrency)
        .map(|w| {
            let (target, next, value, keys) = (target.clone(), next.clone(), value.clone(), config.keys);
            let mut sender = Sender::new(driver, &target, &library, w);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= keys {
                        return Ok::<_, String>(());
                    }
                    sender.perform(&target, Op::Set, w, &workload::key_name(n), &value).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.context("preload task")?.map_err(|e| anyhow::anyhow!("preload failed: {e}"))?;
    }
    Ok(())
}

/// Deletes every key once through the client library, with `concurrency` deleters. Returns
/// how many keys were deleted.
pub async fn delete_all(config: &Config) -> anyhow::Result<u64> {
    let library = library_client(config);
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..config.concurrency)
        .map(|_| {
            let (library, next, keys) = (library.clone(), next.clone(), config.keys);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= keys {
                        return Ok::<_, String>(());
                    }
                    let key = workload::key_name(n);
                    library.delete(&key).await.map_err(|e| format!("deleting {key}: {e}"))?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.context("delete task")?.map_err(|e| anyhow::anyhow!("delete failed: {e}"))?;
    }
    Ok(config.keys)
}

/// Reads every preloaded key back through the client library; fails on the first few keys
/// whose value is missing or different. Returns how many keys were checked.
pub async fn verify(config: &Config) -> anyhow::Result<u64> {
    let library = library_client(config);
    let expected = value_of(config.value_size, 0);
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..config.concurrency)
        .map(|_| {
            let (library, expected, next, keys) =
                (library.clone(), expected.clone(), next.clone(), config.keys);
            tokio::spawn(async move {
                let mut wrong = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= keys || wrong.len() >= 5 {
                        return wrong;
                    }
                    let key = workload::key_name(n);
                    match library.get(&key).await {
                        Ok(Some(value)) if value == expected => {}
                        Ok(Some(value)) => {
                            wrong.push(format!("{key}: a different {}-byte value", value.len()))
                        }
                        Ok(None) => wrong.push(format!("{key}: missing")),
                        Err(e) => wrong.push(format!("{key}: {e}")),
                    }
                }
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for task in tasks {
        wrong.extend(task.await.context("verify task")?);
    }
    anyhow::ensure!(wrong.is_empty(), "verification failed: {}", wrong.join("; "));
    Ok(config.keys)
}

/// Runs the measured load for `duration` with `driver`.
pub async fn run(config: &Config, driver: Driver, duration: Duration) -> Outcome {
    let target = Arc::new(Target::new(config.api, &config.frontends));
    let library = library_client(config);
    let chooser = Arc::new(KeyChooser::new(&config.distribution, config.keys));
    let stop = Arc::new(AtomicBool::new(false));
    let done_ops = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..config.concurrency)
        .map(|w| {
            let (target, chooser, stop, done_ops) =
                (target.clone(), chooser.clone(), stop.clone(), done_ops.clone());
            let (read_ratio, value) = (config.read_ratio, value_of(config.value_size, w as u64 + 1));
            let mut sender = Sender::new(driver, &target, &library, w);
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64 * 7919 + 1);
                let (mut get, mut set) = (OpStats::default(), OpStats::default());
                while !stop.load(Ordering::Relaxed) {
                    let op = if rng.random::<f64>() < read_ratio { Op::Get } else { Op::Set };
                    let key = workload::key_name(chooser.next(&mut rng));
                    let began = Instant::now();
                    let result = sender.perform(&target, op, w, &key, &value).await;
                    let stats = if op == Op::Get { &mut get } else { &mut set };
                    stats.latency_us.record(began.elapsed().as_micros() as u64);
                    match result {
                        Ok(true) => {}
                        Ok(false) => stats.misses += 1,
                        Err(e) => {
                            stats.errors += 1;
                            stats.first_error.get_or_insert(e);
                        }
                    }
                    done_ops.fetch_add(1, Ordering::Relaxed);
                }
                (get, set)
            })
        })
        .collect();
    let progress = (!config.quiet).then(|| {
        let done_ops = done_ops.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = done_ops.load(Ordering::Relaxed);
                eprint!("\r{}", report::progress_line(started.elapsed(), duration, now - last));
                last = now;
            }
        })
    });
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    let mut outcome = Outcome { elapsed, get: OpStats::default(), set: OpStats::default() };
    for task in tasks {
        if let Ok((get, set)) = task.await {
            outcome.get.merge(&get);
            outcome.set.merge(&set);
        }
    }
    outcome
}

/// Both drivers side by side: alternating halves of `config.duration` each (raw, library,
/// raw, library), so that a slow moment of a shared machine falls on both alike.
pub async fn run_both(config: &Config) -> (Outcome, Outcome) {
    let half = config.duration / 2;
    let mut raw = run(config, Driver::Raw, half).await;
    let mut library = run(config, Driver::Client, half).await;
    raw = raw.merge(&run(config, Driver::Raw, half).await);
    library = library.merge(&run(config, Driver::Client, half).await);
    (raw, library)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn parses_a_full_command_line() {
        let config = Config::try_parse_from([
            "bench",
            "--frontends",
            "http://a:1,http://b:2",
            "--duration",
            "30s",
            "--concurrency",
            "50",
            "--read-ratio",
            "0.5",
            "--keys",
            "100",
            "--distribution",
            "zipf:1.1",
            "--value-size",
            "200",
            "--api",
            "etcd-v2",
            "--preload",
            "--threads",
            "2",
        ])
        .unwrap();
        let frontends: Vec<String> = config.frontends.iter().map(ToString::to_string).collect();
        assert_eq!(frontends, ["http://a:1", "http://b:2"]);
        assert_eq!((config.duration, config.concurrency, config.keys), (Duration::from_secs(30), 50, 100));
        assert_eq!((config.read_ratio, config.value_size, config.api), (0.5, 200, Api::EtcdV2));
        assert_eq!(config.distribution, Distribution::Zipf(1.1));
        assert!(config.preload);
        assert_eq!(config.threads, 2);
        config.validate().unwrap();
    }

    #[test]
    fn rejects_bad_arguments() {
        let parse = |args: &[&str]| Config::try_parse_from([&["bench"], args].concat());
        assert!(parse(&[]).is_err(), "frontends are required");
        assert!(parse(&["--frontends", "http://a:1", "--read-ratio", "1.5"]).is_err());
        assert!(parse(&["--frontends", "http://a:1", "--api", "redis"]).is_err());
        assert!(parse(&["--frontends", "http://a:1", "--duration", "soon"]).is_err());
        assert!(parse(&["--frontends", "http://a:1", "--threads", "0"]).is_err());
        assert_eq!(parse(&["--frontends", "http://a:1"]).unwrap().threads, 1, "one thread by default");
        assert!(parse(&["--frontends", "a"])
            .unwrap_err()
            .to_string()
            .contains("`a` is not a frontend address"));
        assert!(parse(&["--frontends", "https://a:1"]).is_err());
        assert!(parse(&["--frontends", "a:1", "--driver", "fastest"]).is_err());
        assert!(parse(&["--frontends", "a:1", "--verify"]).is_err(), "--verify needs --preload");
        let config = parse(&["--frontends", "a:1", "--api", "etcd-v2", "--driver", "both"]).unwrap();
        assert!(config.validate().unwrap_err().to_string().contains("speaks Velour Fog's API only"));
        let config = parse(&["--frontends", "a:1", "--driver", "both", "--preload", "--verify"]).unwrap();
        assert_eq!((config.driver, config.verify), (DriverChoice::Both, true));
        config.validate().unwrap();
        let config = parse(&["--frontends", "a:1", "--driver", "client"]).unwrap();
        assert_eq!(config.driver, DriverChoice::One(Driver::Client));
        let config = parse(&["--frontends", "http://a:1", "--concurrency", "0"]).unwrap();
        assert!(config.validate().is_err());
    }

    #[test]
    fn builds_requests_for_both_apis() {
        let value = Bytes::from_static(b"v&1");
        let text =
            |target: &Target, op, which| String::from_utf8(target.request(op, which, "k 1", &value)).unwrap();
        let ours =
            Target::new(Api::VelourFog, &["f:1".parse().unwrap(), "http://g:2/prefix/".parse().unwrap()]);
        assert_eq!(text(&ours, Op::Get, 0), "GET /get/?key=k%201 HTTP/1.1\r\nhost: f:1\r\n\r\n");
        assert_eq!(
            text(&ours, Op::Set, 3),
            "POST /prefix/set/?key=k%201 HTTP/1.1\r\nhost: g:2\r\ncontent-length: 3\r\n\r\nv&1"
        );
        let etcd = Target::new(Api::EtcdV2, &["http://e:2".parse().unwrap()]);
        assert_eq!(text(&etcd, Op::Get, 0), "GET /v2/keys/k%201 HTTP/1.1\r\nhost: e:2\r\n\r\n");
        assert_eq!(
            text(&etcd, Op::Set, 0),
            "PUT /v2/keys/k%201 HTTP/1.1\r\nhost: e:2\r\ncontent-type: application/x-www-form-urlencoded\r\n\
             content-length: 11\r\n\r\nvalue=v%261"
        );
    }
}
