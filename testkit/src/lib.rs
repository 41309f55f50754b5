//! A harness that runs real Velour Fog clusters for integration and fault tests.
//!
//! [`Cluster::start`] builds the three binaries (once per test run, in the profile the tests
//! were built in), starts a controller, storage nodes and frontends on free loopback ports with
//! a temp dir per cluster, and waits until every frontend serves. Each process logs to its own
//! file; when a test panics the tail of every log is printed. Processes are killed on drop.
//! [`Process`] really signals the child: `kill` is SIGKILL, `pause` is SIGSTOP.

pub mod load;

use bytes::Bytes;
use common::http::{Client, RpcError};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a cluster may take to come up before a test fails.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// Deadline of one request a test makes.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

/// Path of a workspace binary, building the servers and the CLI the first time one is asked for.
pub fn binary(name: &str) -> PathBuf {
    static TARGET: OnceLock<PathBuf> = OnceLock::new();
    let dir = TARGET.get_or_init(|| {
        // Test executables live in target/<profile>/deps/.
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).args([
            "build",
            "-p",
            "controller",
            "-p",
            "storage",
            "-p",
            "frontend",
            "-p",
            "velourfog",
        ]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "building the cluster binaries failed");
        profile_dir
    });
    dir.join(name)
}

/// A loopback port that is free now and that this process has not handed out before. Ports are
/// drawn below Linux's ephemeral range (32768+), so the outgoing connections of the tests
/// themselves cannot take one between this call and the process that binds it; the kernel's
/// own choice (`bind(0)`) once returned the same port twice to two nodes of one cluster.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut state = seed | 1;
    for _ in 0..10_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = 20_000 + (state % 12_000) as u16;
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in 20000-31999");
}

/// One child process of the cluster.
pub struct Process {
    pub name: String,
    /// `127.0.0.1:port` it listens on.
    pub addr: String,
    program: PathBuf,
    args: Vec<String>,
    /// Extra environment variables (such as libfaketime's).
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    fn new(name: String, addr: String, program: PathBuf, args: Vec<String>, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        Self { name, addr, program, args, env: Vec::new(), log, child: None }
    }

    /// Starts (or restarts) the process; its output is appended to its log. A child killed
    /// with [`Process::sigkill`] is reaped first.
    pub fn start(&mut self) {
        if self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))) {
            self.child = None;
        }
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new().create(true).append(true).open(&self.log).expect("open log");
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,fjall=warn,lsm_tree=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().unwrap_or_else(|| panic!("{} is not running", self.name));
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "signal {signal} to {} failed", self.name);
    }

    /// SIGKILL: the process dies at once, with no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the process accepts TCP connections on its address.
    pub async fn wait_listening(&self) {
        let started = Instant::now();
        while tokio::net::TcpStream::connect(&self.addr).await.is_err() {
            assert!(
                started.elapsed() < START_DEADLINE,
                "{} not listening after {START_DEADLINE:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL without waiting, so several processes can be killed at the same instant; call
    /// [`Process::kill`] (or restart with [`Process::start`] after it) to reap the child.
    pub fn sigkill(&self) {
        self.signal(libc::SIGKILL);
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited with status 0.
    pub fn terminate(&mut self, deadline: Duration) -> bool {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.success();
            }
            if started.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: the process hangs, holding its sockets open.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Process::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self, bytes: u64) -> String {
        let Ok(mut file) = File::open(&self.log) else { return String::new() };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
        let mut tail = String::new();
        let _ = file.read_to_string(&mut tail);
        tail
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// In which order a cluster's processes start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOrder {
    ControllerFirst,
    /// Frontends, then storage nodes, then the controller.
    ControllerLast,
    /// Storage nodes, then the controller, then frontends.
    StorageFirst,
}

/// What cluster to start.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub storage: usize,
    pub frontends: usize,
    pub replication: usize,
    pub order: StartOrder,
    /// Extra flags for every frontend.
    pub frontend_args: Vec<String>,
    /// Extra flags for every storage node.
    pub storage_args: Vec<String>,
    /// Extra flags for the controller.
    pub controller_args: Vec<String>,
    /// How many of the storage nodes (the last ones) not to start; a test starts them itself.
    pub held_back_storage: usize,
    /// Where storage data directories go [default: the cluster's temp dir].
    pub data_root: Option<PathBuf>,
    /// Run the last storage node in its own network namespace, whose link a test can cut
    /// ([`Cluster::partition`]); every other process then uses the host end's address.
    pub partitionable: bool,
    /// Give every process a cluster secret (in the cluster's temp dir); [`Cluster::client`]
    /// carries it, [`TestClient::new`] does not.
    pub secret: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            storage: 3,
            frontends: 2,
            replication: 3,
            order: StartOrder::ControllerFirst,
            frontend_args: Vec::new(),
            storage_args: Vec::new(),
            controller_args: Vec::new(),
            held_back_storage: 0,
            data_root: None,
            partitionable: false,
            secret: true,
        }
    }
}

/// A running cluster of real processes.
pub struct Cluster {
    pub controller: Process,
    pub storage: Vec<Process>,
    pub frontends: Vec<Process>,
    pub client: TestClient,
    /// The namespace of the last storage node, with [`ClusterConfig::partitionable`].
    pub partition: Option<NetworkNamespace>,
    /// Holds every log and data directory; removed on drop.
    pub dir: tempfile::TempDir,
    /// Where storage data directories go.
    data_root: PathBuf,
    /// Flags every storage node started with.
    storage_args: Vec<String>,
    /// The cluster secret's file, if the cluster has one.
    secret_file: Option<PathBuf>,
}

impl Cluster {
    /// Starts a cluster and waits until every frontend serves.
    pub async fn start(config: ClusterConfig) -> Self {
        let cluster = Self::launch(config).await;
        cluster.wait_until_serving(START_DEADLINE).await;
        cluster
    }

    /// Starts a cluster's processes without waiting for it to serve.
    pub async fn launch(config: ClusterConfig) -> Self {
        let dir = tempfile::Builder::new().prefix("velourfog-test-").tempdir().expect("temp dir");
        let secret_file = config.secret.then(|| write_secret(dir.path()));
        let secret_args: Vec<String> = secret_file
            .iter()
            .flat_map(|path| ["--cluster-secret-file".to_owned(), path.display().to_string()])
            .collect();
        let partition = config.partitionable.then(|| NetworkNamespace::create().expect("network namespace"));
        let host_ip = partition.as_ref().map_or("127.0.0.1".to_owned(), |ns| ns.host_ip.clone());
        let controller_port = free_port();
        let controller_addr = format!("{host_ip}:{controller_port}");
        let controller = Process::new(
            "controller".into(),
            controller_addr.clone(),
            binary("controller"),
            vec![
                controller_port.to_string(),
                config.storage.to_string(),
                config.replication.to_string(),
                "--host".into(),
                host_ip.clone(),
                "--state-dir".into(),
                dir.path().join("controller").display().to_string(),
            ]
            .into_iter()
            .chain(config.controller_args.iter().cloned())
            .chain(secret_args.iter().cloned())
            .collect(),
            dir.path(),
        );
        let isolated = config.partitionable.then(|| config.storage - 1);
        let node = |kind: &str, i: usize, extra: &[String]| {
            let inside = kind == "storage" && Some(i) == isolated;
            let ip =
                if inside { partition.as_ref().expect("namespace").ns_ip.as_str() } else { host_ip.as_str() };
            let addr = format!("{ip}:{}", free_port());
            let mut args = vec![controller_addr.clone(), addr.clone(), "--listen".into(), addr.clone()];
            if kind == "storage" {
                let root = config.data_root.as_deref().unwrap_or(dir.path());
                args.extend(["--data-dir".into(), root.join(format!("storage{i}")).display().to_string()]);
            }
            args.extend(extra.iter().cloned());
            args.extend(secret_args.iter().cloned());
            if inside {
                let ns = partition.as_ref().expect("namespace");
                let mut wrapped =
                    vec!["netns".into(), "exec".into(), ns.name.clone(), binary(kind).display().to_string()];
                wrapped.extend(args);
                return Process::new(format!("{kind}{i}"), addr, PathBuf::from("ip"), wrapped, dir.path());
            }
            Process::new(format!("{kind}{i}"), addr, binary(kind), args, dir.path())
        };
        let storage = (0..config.storage).map(|i| node("storage", i, &config.storage_args)).collect();
        let frontends = (0..config.frontends).map(|i| node("frontend", i, &config.frontend_args)).collect();
        let data_root = config.data_root.clone().unwrap_or_else(|| dir.path().to_path_buf());
        let storage_args = config.storage_args.clone();
        let mut cluster = Self {
            controller,
            storage,
            frontends,
            client: TestClient::with_secret(secret_file.as_deref()),
            partition,
            dir,
            data_root,
            storage_args,
            secret_file,
        };
        let pause = Duration::from_millis(300);
        let started_storage = config.storage - config.held_back_storage.min(config.storage);
        let start_storage =
            |cluster: &mut Self| cluster.storage[..started_storage].iter_mut().for_each(Process::start);
        match config.order {
            StartOrder::ControllerFirst => {
                cluster.controller.start();
                start_storage(&mut cluster);
                cluster.frontends.iter_mut().for_each(Process::start);
            }
            StartOrder::ControllerLast => {
                cluster.frontends.iter_mut().for_each(Process::start);
                tokio::time::sleep(pause).await;
                start_storage(&mut cluster);
                tokio::time::sleep(pause).await;
                cluster.controller.start();
            }
            StartOrder::StorageFirst => {
                start_storage(&mut cluster);
                tokio::time::sleep(pause).await;
                cluster.controller.start();
                tokio::time::sleep(pause).await;
                cluster.frontends.iter_mut().for_each(Process::start);
            }
        }
        cluster
    }

    /// Waits until the controller and every running storage node accept connections (after a
    /// restart, frontends still serve with their map, so `wait_until_serving` alone says
    /// nothing about them).
    pub async fn wait_backends_listening(&mut self) {
        if self.controller.is_running() {
            self.controller.wait_listening().await;
        }
        for node in &mut self.storage {
            if node.is_running() {
                node.wait_listening().await;
            }
        }
    }

    /// Waits until the controller reports every storage node up and each of them serves reads
    /// (holds a lease): after restarts, nodes rejoin, catch up if they must, and get leases.
    pub async fn wait_storage_up(&mut self, deadline: Duration) {
        self.wait_backends_listening().await;
        let started = Instant::now();
        loop {
            let status = self.status().await;
            let all_up = status["storage"].as_array().is_some_and(|m| m.iter().all(|n| n["state"] == "up"));
            let mut serving = all_up;
            for s in 0..self.storage.len() {
                if self.storage[s].is_running() {
                    serving = serving && self.storage_stats(s).await["serving_reads"] == true;
                }
            }
            if serving {
                return;
            }
            assert!(
                started.elapsed() < deadline,
                "storage not all up and serving after {deadline:?}: {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The frontends, for a load that runs while the test starts and kills processes.
    pub fn frontends_handle(&self) -> load::Frontends {
        load::Frontends {
            client: self.client.clone(),
            addrs: self.frontends.iter().map(|f| f.addr.clone()).collect(),
        }
    }

    /// Starts one more frontend with extra environment variables `env`; returns its index.
    pub fn add_frontend(&mut self, env: &[(&str, &str)]) -> usize {
        let f = self.frontends.len();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut args = vec![self.controller.addr.clone(), addr.clone(), "--listen".into(), addr.clone()];
        args.extend(self.secret_args());
        let mut node = Process::new(format!("frontend{f}"), addr, binary("frontend"), args, self.dir.path());
        node.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        node.start();
        self.frontends.push(node);
        f
    }

    /// The cluster secret's file, if the cluster has one.
    pub fn secret_file(&self) -> Option<&Path> {
        self.secret_file.as_deref()
    }

    /// `--cluster-secret-file PATH`, if the cluster has a secret.
    fn secret_args(&self) -> Vec<String> {
        let path = self.secret_file.iter().map(|p| p.display().to_string());
        path.flat_map(|p| ["--cluster-secret-file".to_owned(), p]).collect()
    }

    /// The data directory of storage node `s`.
    pub fn storage_data_dir(&self, s: usize) -> PathBuf {
        self.data_root.join(format!("storage{s}"))
    }

    /// Starts one more storage node (with the cluster's storage flags and `extra`, and the
    /// cluster's secret unless `extra` names one); returns its index. A node that registers
    /// with a formed cluster joins it.
    pub fn add_storage(&mut self, extra: &[&str]) -> usize {
        let s = self.storage.len();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut args = vec![self.controller.addr.clone(), addr.clone(), "--listen".into(), addr.clone()];
        args.extend(["--data-dir".into(), self.storage_data_dir(s).display().to_string()]);
        args.extend(self.storage_args.iter().cloned());
        args.extend(extra.iter().map(|a| a.to_string()));
        if !extra.contains(&"--cluster-secret-file") {
            args.extend(self.secret_args());
        }
        let mut node = Process::new(format!("storage{s}"), addr, binary("storage"), args, self.dir.path());
        node.start();
        self.storage.push(node);
        s
    }

    /// POSTs `body` as JSON to the controller's `path`; the status and the answer's JSON (or
    /// its text as a JSON string).
    pub async fn admin(&self, path: &str, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
        let body = Bytes::from(serde_json::to_vec(&body).expect("JSON"));
        let (status, answer) = self
            .client
            .call(Method::POST, &self.controller.addr, path, body)
            .await
            .expect("controller admin call");
        let json = serde_json::from_slice(&answer)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&answer).into_owned()));
        (status, json)
    }

    /// Waits until the controller lists `members` storage nodes, every one up, and no move
    /// left; the last status. A controller that is restarting meanwhile is waited for.
    pub async fn wait_settled(&self, members: usize, deadline: Duration) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let status = self.try_status().await.unwrap_or_default();
            let settled = status["moves"].as_array().is_some_and(Vec::is_empty)
                && status["storage"]
                    .as_array()
                    .is_some_and(|m| m.len() == members && m.iter().all(|n| n["state"] == "up"));
            if settled {
                return status;
            }
            assert!(started.elapsed() < deadline, "not settled after {deadline:?}: {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every frontend's `/health` answers 200.
    pub async fn wait_until_serving(&self, deadline: Duration) {
        let started = Instant::now();
        for frontend in &self.frontends {
            loop {
                let health = self.client.call(Method::GET, &frontend.addr, "/health", Bytes::new()).await;
                if matches!(health, Ok((StatusCode::OK, _))) {
                    break;
                }
                assert!(
                    started.elapsed() < deadline,
                    "{} not serving after {deadline:?}: {health:?}",
                    frontend.name
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The controller's view of the cluster, or `None` if it does not answer.
    pub async fn try_status(&self) -> Option<serde_json::Value> {
        let answer = self
            .client
            .call(Method::GET, &self.controller.addr, common::proto::STATUS_PATH, Bytes::new())
            .await;
        match answer {
            Ok((StatusCode::OK, body)) => serde_json::from_slice(&body).ok(),
            _ => None,
        }
    }

    /// The controller's view of the cluster (`/v1/status`), as JSON.
    pub async fn status(&self) -> serde_json::Value {
        let (status, body) = self
            .client
            .call(Method::GET, &self.controller.addr, common::proto::STATUS_PATH, Bytes::new())
            .await
            .expect("controller status");
        assert_eq!(status, StatusCode::OK);
        serde_json::from_slice(&body).expect("status JSON")
    }

    /// Storage node `s`'s `/v1/stats`, as JSON.
    pub async fn storage_stats(&self, s: usize) -> serde_json::Value {
        let (status, body) = self
            .client
            .call(Method::GET, &self.storage[s].addr, "/v1/stats", Bytes::new())
            .await
            .expect("stats");
        assert_eq!(status, StatusCode::OK);
        serde_json::from_slice(&body).expect("stats JSON")
    }

    /// Storage node `s`'s partition digests for the current map (waiting while a node
    /// restarted after a crash rebuilds them: it answers 503 until then), 16 bytes each; a
    /// partition with recent writes that skipped their read is all 0xff until it settles.
    pub async fn storage_digests(&self, s: usize) -> Bytes {
        let partitions = self.status().await["partitions"].as_u64().expect("cluster formed");
        let digits = (partitions.trailing_zeros() / 4) as u8;
        let path = format!("{}?digits={digits}", common::proto::DIGESTS_PATH);
        let started = Instant::now();
        loop {
            let (status, body) = self
                .client
                .call(Method::GET, &self.storage[s].addr, &path, Bytes::new())
                .await
                .expect("digests");
            if status != StatusCode::SERVICE_UNAVAILABLE || started.elapsed() > START_DEADLINE {
                assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes a record straight to storage node `s`, bypassing the frontends (as a partially
    /// failed write leaves it); returns the node's status.
    pub async fn storage_put(&self, s: usize, key: &[u8], timestamp: u64, value: Bytes) -> StatusCode {
        let url = format!(
            "http://{}{}?key={}",
            self.storage[s].addr,
            common::proto::RECORD_PATH,
            common::query::encode(key)
        );
        let make = || {
            Request::put(url.as_str())
                .header(common::proto::TIMESTAMP, timestamp)
                .body(Full::new(value.clone()))
                .expect("request")
        };
        self.client.inner.send_collect(make, REQUEST_DEADLINE).await.expect("storage write").0.status
    }

    /// `host:port` of frontend `i`.
    pub fn frontend(&self, i: usize) -> &str {
        &self.frontends[i].addr
    }

    /// Sets `key` to `value` through frontend `i` (value in the POST body).
    pub async fn set(&self, i: usize, key: &[u8], value: impl Into<Bytes>) -> (StatusCode, Bytes) {
        let path = format!("/set/?key={}", common::query::encode(key));
        self.client.call(Method::POST, self.frontend(i), &path, value.into()).await.expect("set")
    }

    /// Reads `key` through frontend `i`.
    pub async fn get(&self, i: usize, key: &[u8]) -> (StatusCode, Bytes) {
        let path = format!("/get/?key={}", common::query::encode(key));
        self.client.call(Method::GET, self.frontend(i), &path, Bytes::new()).await.expect("get")
    }

    /// Deletes `key` through frontend `i`.
    pub async fn delete(&self, i: usize, key: &[u8]) -> (StatusCode, Bytes) {
        let path = format!("/delete/?key={}", common::query::encode(key));
        self.client.call(Method::DELETE, self.frontend(i), &path, Bytes::new()).await.expect("delete")
    }

    /// The record storage node `s` holds for `key`: status, timestamp header and body.
    pub async fn storage_record(&self, s: usize, key: &[u8]) -> (StatusCode, Option<u64>, Bytes) {
        let path = format!("{}?key={}", common::proto::RECORD_PATH, common::query::encode(key));
        let url = format!("http://{}{path}", self.storage[s].addr);
        let make = || Request::get(url.as_str()).body(Full::new(Bytes::new())).expect("request");
        let (parts, body) =
            self.client.inner.send_collect(make, REQUEST_DEADLINE).await.expect("storage read");
        let timestamp =
            parts.headers.get(common::proto::TIMESTAMP).and_then(|v| v.to_str().ok()?.parse().ok());
        (parts.status, timestamp, body)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("\n==== cluster logs ({}) ====", self.dir.path().display());
            for p in std::iter::once(&self.controller).chain(&self.storage).chain(&self.frontends) {
                eprintln!("---- {} ({}) ----\n{}", p.name, p.addr, p.log_tail(6000));
            }
        }
    }
}

/// Writes a fresh random cluster secret to `dir/cluster.secret` (mode 600); its path.
fn write_secret(dir: &Path) -> PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("cluster.secret");
    let secret: u128 = rand::random();
    let mut file =
        OpenOptions::new().create_new(true).write(true).mode(0o600).open(&path).expect("secret file");
    writeln!(file, "{secret:032x}").expect("write secret");
    path
}

/// An HTTP client for tests: any method, any path, raw status and body.
#[derive(Clone, Debug, Default)]
pub struct TestClient {
    pub inner: Client,
}

impl TestClient {
    /// A client that sends no credentials: a stranger to the cluster.
    pub fn new() -> Self {
        Self { inner: Client::new() }
    }

    /// A client carrying the secret in `secret_file`, if given: an operator or a node.
    pub fn with_secret(secret_file: Option<&Path>) -> Self {
        let secret =
            secret_file.map(|path| common::auth::ClusterSecret::from_file(path).expect("secret file"));
        Self { inner: Client::with_secret(secret.as_ref()) }
    }

    /// Sends `method` to `http://addr{path_and_query}` with `body`.
    pub async fn call(
        &self,
        method: Method,
        addr: &str,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), RpcError> {
        let url = format!("http://{addr}{path_and_query}");
        let make = || {
            Request::builder()
                .method(method.clone())
                .uri(url.as_str())
                .body(Full::new(body.clone()))
                .expect("request")
        };
        let (parts, body) = self.inner.send_collect(make, REQUEST_DEADLINE).await?;
        Ok((parts.status, body))
    }
}

/// A network namespace joined to this one by a veth pair: a test host whose link can be cut
/// while its processes keep running. Needs root and `ip` (iproute2); removed on drop.
pub struct NetworkNamespace {
    pub name: String,
    host_if: String,
    /// This end's address, and the namespace's.
    pub host_ip: String,
    pub ns_ip: String,
}

impl NetworkNamespace {
    /// `None` where namespaces cannot be made (not root, no iproute2).
    pub fn create() -> Option<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = (std::process::id() % 1000) * 10 + n % 10;
        let subnet = tag % 250 + 1;
        let ns = Self {
            name: format!("vfns{tag}"),
            host_if: format!("vfh{tag}"),
            host_ip: format!("10.213.{subnet}.1"),
            ns_ip: format!("10.213.{subnet}.2"),
        };
        let ns_if = format!("vfn{tag}");
        let (host_cidr, ns_cidr) = (format!("{}/30", ns.host_ip), format!("{}/30", ns.ns_ip));
        let (name, host_if) = (ns.name.clone(), ns.host_if.clone());
        let steps: [&[&str]; 7] = [
            &["netns", "add", &name],
            &["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if],
            &["link", "set", &ns_if, "netns", &name],
            &["addr", "add", &host_cidr, "dev", &host_if],
            &["link", "set", &host_if, "up"],
            &["-n", &name, "addr", "add", &ns_cidr, "dev", &ns_if],
            &["-n", &name, "link", "set", &ns_if, "up"],
        ];
        if !steps.iter().all(|step| ip(step)) {
            return None; // dropping `ns` removes whatever was made
        }
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]).then_some(ns)
    }

    /// Cuts the link: nothing reaches the namespace, nothing leaves it.
    pub fn cut(&self) {
        assert!(ip(&["link", "set", &self.host_if, "down"]), "cannot cut {}", self.host_if);
    }

    /// Restores the link.
    pub fn heal(&self) {
        assert!(ip(&["link", "set", &self.host_if, "up"]), "cannot heal {}", self.host_if);
    }
}

impl Drop for NetworkNamespace {
    fn drop(&mut self) {
        ip(&["link", "del", &self.host_if]);
        ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// A tmpfs of a few MiB, for tests of a full disk; unmounted on drop. Needs root.
pub struct TinyFilesystem(tempfile::TempDir);

impl TinyFilesystem {
    /// `None` where mounting is not permitted (not root): the caller says so and skips.
    pub fn mount(megabytes: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(Self(dir))
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for TinyFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}
