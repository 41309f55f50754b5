//! A Velour Fog frontend: the stateless public face of the cluster.
//!
//! A frontend hashes each key to its partition with the map it follows from the controller
//! (see [`routing`]), writes to the partition's live replicas in parallel and answers 200 once a
//! write quorum stored it and every live replica that did not was fenced out of reads, and reads
//! from one up replica, the same for every read of a partition so that the nodes read in
//! parallel and each caches what it serves (see [`affinity`]), falling back to the others (see
//! [`replica`], [`consistency`]).
//! Writes are stamped by a clock that never goes backwards on this frontend.
//! Any number of frontends can run behind any load balancer; they share nothing. Clients are
//! served by [`server`]: small requests directly, everything else through hyper.

pub mod affinity;
pub mod api;
pub mod batcher;
pub mod compare;
pub mod consistency;
pub mod fanout;
pub mod listing;
pub mod metrics;
pub mod replica;
pub mod rest;
pub mod routing;
pub mod server;
pub mod watch;

use anyhow::Context;
use common::http::Client;
use common::shutdown::Shutdown;
use common::version::Clock;
use replica::Replicas;
use routing::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Command line and environment configuration of a frontend.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "frontend",
    version,
    about = "Velour Fog frontend: serves /get/, /set/ and /delete/ for the whole cluster."
)]
pub struct Config {
    /// The controller, as HOST:PORT.
    #[arg(value_name = "CONTROLLER_HOST:PORT")]
    pub controller: String,
    /// Where clients reach this frontend, as HOST:PORT (port 0 picks a free port).
    #[arg(value_name = "OWN_HOST:PORT")]
    pub advertise: String,
    /// Socket address to listen on [default: 0.0.0.0 at the port of OWN_HOST:PORT].
    #[arg(long, env = "VF_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Largest key accepted, in bytes (at most 65,531: the storage engine's 64 KiB keys less
    /// a 4-byte prefix).
    #[arg(long, env = "VF_MAX_KEY_BYTES", default_value_t = common::proto::MAX_KEY_BYTES,
          value_parser = max_key_bytes)]
    pub max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    #[arg(long, env = "VF_MAX_VALUE_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub max_value_bytes: usize,
    /// Deadline of a call to a storage node, in milliseconds (large values get more time).
    #[arg(long, env = "VF_REPLICA_TIMEOUT_MS", default_value_t = 500)]
    pub replica_timeout_ms: u64,
    /// Default write level: replicas that must store a write (`one`, `quorum`, `all`).
    #[arg(long, env = "VF_WRITE_LEVEL", default_value = "quorum")]
    pub write_level: consistency::Level,
    /// Default read level: replicas read and compared (`one`, `quorum`, `all`).
    #[arg(long, env = "VF_READ_LEVEL", default_value = "one")]
    pub read_level: consistency::Level,
    /// Threads serving requests [default: one per core]. Where several nodes share a machine's
    /// cores (as under `./runlocal.sh`), fewer per node is faster: each spare thread adds
    /// handoffs between threads to every request.
    #[arg(long, env = "VF_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
    /// Writes are refused (503) while this frontend's clock is further than this from the
    /// controller's, in milliseconds (storage nodes refuse timestamps this far ahead of theirs).
    #[arg(long, env = "VF_MAX_CLOCK_SKEW_MS", default_value_t = 5000)]
    pub max_clock_skew_ms: u64,
    /// File holding the cluster secret that calls to the controller and storage nodes carry
    /// (see docs/security.md).
    #[arg(long, env = "VF_CLUSTER_SECRET_FILE", value_name = "PATH")]
    pub cluster_secret_file: Option<std::path::PathBuf>,
    /// How slowly clients may send heads and bodies, and how long idle connections stay open.
    #[command(flatten)]
    pub client: common::http::ClientTimeouts,
    /// Log level or filter, such as `debug` or `info,frontend=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info,fjall=warn,lsm_tree=warn")]
    pub log_level: String,
}

/// `--max-key-bytes`: 1 to [`common::proto::MAX_KEY_BYTES`].
fn max_key_bytes(text: &str) -> Result<usize, String> {
    let bytes: usize = text.parse().map_err(|_| format!("`{text}` is not a number of bytes"))?;
    let most = common::proto::MAX_KEY_BYTES;
    (1..=most)
        .contains(&bytes)
        .then_some(bytes)
        .ok_or_else(|| format!("must be 1 to {most} (the storage engine's limit)"))
}

/// Size limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

/// The state a frontend's request handlers share.
#[derive(Debug)]
pub struct Frontend {
    pub router: Arc<Router>,
    pub replicas: Replicas,
    pub clock: Clock,
    /// This frontend's clock against the controller's: writes are refused while past the bound.
    pub clock_check: Arc<common::skew::ClockCheck>,
    pub limits: Limits,
    pub controller: String,
    pub client: Client,
    pub write_level: consistency::Level,
    pub read_level: consistency::Level,
    /// Replicas that failed a read recently, tried last until then.
    pub suspects: Suspects,
}

/// Replicas that failed a read recently, with when each stops being suspected. Reads consult it
/// without taking its lock while nobody is suspected (the usual case).
#[derive(Debug, Default)]
pub struct Suspects {
    any: std::sync::atomic::AtomicBool,
    until: std::sync::Mutex<std::collections::HashMap<common::placement::NodeId, std::time::Instant>>,
}

impl Suspects {
    /// Moves the nodes suspected at `now` to the end of `nodes`, keeping the order otherwise.
    pub fn put_last(&self, nodes: &mut [common::placement::NodeId], now: std::time::Instant) {
        use std::sync::atomic::Ordering;
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        until.retain(|_, &mut until| until > now);
        if until.is_empty() {
            self.any.store(false, Ordering::Release);
        }
        nodes.sort_by_key(|n| until.contains_key(n));
    }

    /// Suspects `nodes` until `until`.
    pub fn add(&self, nodes: impl IntoIterator<Item = common::placement::NodeId>, until: std::time::Instant) {
        let mut map = self.until.lock().unwrap_or_else(|p| p.into_inner());
        for node in nodes {
            map.insert(node, until);
        }
        self.any.store(!map.is_empty(), std::sync::atomic::Ordering::Release);
    }
}

/// How long a replica that failed a read is tried last.
pub const SUSPICION: Duration = Duration::from_secs(2);
/// Deadline of a fence request (the controller answers once the node's lease has expired).
pub const FENCE_TIMEOUT: Duration = Duration::from_secs(10);

impl Frontend {
    /// `nodes`, replicas of `partition`, in the order its reads ask them (see [`affinity`]),
    /// recently failed ones last.
    pub fn read_order(
        &self,
        partition: common::partition::Partition,
        mut nodes: Vec<common::placement::NodeId>,
    ) -> Vec<common::placement::NodeId> {
        affinity::order(&mut nodes, partition);
        self.suspects.put_last(&mut nodes, std::time::Instant::now());
        nodes
    }

    /// Remembers the replicas that just failed, so the next reads try them last.
    pub fn suspect(&self, failures: &[replica::ReplicaFailure]) {
        self.suspects.add(failures.iter().map(|f| f.node), std::time::Instant::now() + SUSPICION);
    }

    /// Asks the controller to fence `node` out of reads; returns once it is, with the new map
    /// installed.
    pub async fn fence(
        &self,
        node: common::placement::NodeId,
        reason: String,
    ) -> Result<(), common::http::RpcError> {
        let url = format!("http://{}{}", self.controller, common::proto::FENCE_PATH);
        let request = common::proto::FenceRequest { node_id: node, reason };
        let answer = self.client.post_json(&url, &request, FENCE_TIMEOUT).await;
        metrics::fence(answer.is_ok());
        let map: common::placement::PartitionMap = answer?;
        self.router.install(map);
        Ok(())
    }

    /// Fetches a map newer than `epoch` if the controller has one; the routes to use now.
    pub async fn refresh_routes(&self, epoch: common::placement::Epoch) -> Arc<routing::Routes> {
        match common::mapwatch::poll(&self.client, &self.controller, epoch, None, Duration::ZERO).await {
            Ok(polled) => {
                if let Some(skew) = polled.skew_us {
                    self.clock_check.observe(skew, "this frontend");
                    metrics::clock_skew(skew);
                }
                if let Some(map) = polled.map {
                    self.router.install(map);
                }
            }
            Err(e) => log::warn!("cannot refresh the map from {}: {e}", self.controller),
        }
        self.router.current().expect("a map was installed before")
    }
}

/// A bound frontend, ready to run.
pub struct Server {
    listener: TcpListener,
    advertise: String,
    controller: String,
    frontend: Arc<Frontend>,
    rules: common::http::Rules,
}

impl Server {
    /// Validates `config` and binds the listening socket.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        common::addr::split(&config.controller).context("invalid CONTROLLER_HOST:PORT")?;
        let listen =
            common::addr::listen_addr(&config.advertise, config.listen).context("invalid OWN_HOST:PORT")?;
        anyhow::ensure!(config.replica_timeout_ms > 0, "--replica-timeout-ms must be positive");
        let listener =
            TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let advertise = common::addr::advertised(&config.advertise, listener.local_addr()?)?;
        let secret = common::auth::load(config.cluster_secret_file.as_deref(), "this frontend")?;
        common::telemetry::install();
        metrics::describe();
        let client = Client::with_secret(secret.as_ref());
        let frontend = Arc::new(Frontend {
            router: Arc::new(Router::default()),
            replicas: Replicas::new(client.clone(), Duration::from_millis(config.replica_timeout_ms)),
            clock: Clock::new(),
            clock_check: Arc::new(common::skew::ClockCheck::new(
                config.max_clock_skew_ms.saturating_mul(1000),
            )),
            limits: Limits { max_key_bytes: config.max_key_bytes, max_value_bytes: config.max_value_bytes },
            controller: config.controller.clone(),
            client,
            write_level: config.write_level,
            read_level: config.read_level,
            suspects: Default::default(),
        });
        let rules = common::http::Rules {
            timeouts: config.client,
            max_head_bytes: common::http::MAX_HEAD_BYTES,
            max_chunk_bytes: config.max_value_bytes as u64,
        };
        Ok(Self { listener, advertise, controller: config.controller, frontend, rules })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        log::info!("frontend listening on {} (advertised as {})", self.local_addr()?, self.advertise);
        let follower = routing::Follower {
            controller: self.controller.clone(),
            client: self.frontend.client.clone(),
            router: self.frontend.router.clone(),
            clock: self.frontend.clock_check.clone(),
        };
        let follower = tokio::spawn(routing::follow(follower, self.advertise.clone(), shutdown.clone()));
        server::serve(self.listener, self.frontend, self.rules, shutdown).await;
        follower.abort();
        log::info!("frontend stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Instant;

    #[test]
    fn worker_threads_are_optional_and_at_least_one() {
        let parse = |extra: &[&str]| Config::try_parse_from([&["frontend", "c:1", "f:2"], extra].concat());
        assert_eq!(parse(&[]).unwrap().worker_threads, None, "Tokio's default: one per core");
        assert_eq!(parse(&["--worker-threads", "1"]).unwrap().worker_threads, Some(1));
        let error = parse(&["--worker-threads", "0"]).unwrap_err().to_string();
        assert!(error.contains("--worker-threads") && error.contains("0 is not in 1..=1024"), "{error}");
    }

    #[test]
    fn keys_are_bounded_by_what_the_storage_engine_holds() {
        let parse = |extra: &[&str]| Config::try_parse_from([&["frontend", "c:1", "f:2"], extra].concat());
        assert_eq!(parse(&[]).unwrap().max_key_bytes, 65_531);
        assert_eq!(parse(&["--max-key-bytes", "100"]).unwrap().max_key_bytes, 100);
        for bad in ["65532", "0", "big"] {
            let error = parse(&["--max-key-bytes", bad]).unwrap_err().to_string();
            assert!(error.contains("--max-key-bytes"), "{error}");
        }
    }

    #[test]
    fn suspected_nodes_go_last_until_their_suspicion_ends() {
        let suspects = Suspects::default();
        let now = Instant::now();
        let mut nodes = vec![3, 1, 2];
        suspects.put_last(&mut nodes, now);
        assert_eq!(nodes, vec![3, 1, 2], "nobody suspected: order unchanged");

        suspects.add([3, 1], now + SUSPICION);
        let mut nodes = vec![3, 1, 2];
        suspects.put_last(&mut nodes, now);
        assert_eq!(nodes, vec![2, 3, 1], "suspects last, in their own order");

        // Once the suspicion has passed the order is the preferred one again, and the set is
        // emptied so that later reads skip the lock.
        let mut nodes = vec![3, 1, 2];
        suspects.put_last(&mut nodes, now + SUSPICION);
        assert_eq!(nodes, vec![3, 1, 2]);
        assert!(!suspects.any.load(std::sync::atomic::Ordering::Acquire));
        assert!(suspects.until.lock().unwrap().is_empty());
    }
}
