//! The Velour Fog controller: the one process that knows the whole cluster.
//!
//! It admits storage nodes and frontends, forms the cluster once the expected number of storage
//! nodes has registered, then grows, shrinks and re-replicates it as nodes join and operators
//! remove them (see [`cluster`] and `docs/membership.md`), owns the partition map and pushes
//! every new map to the frontends and storage nodes. The
//! push rides on a long poll each frontend keeps open (`GET /v1/map?newer_than=E`), answered the
//! moment a newer map exists; so a frontend needs no port of its own for the controller, and one
//! that missed a push (or started late) gets the current map as soon as it asks.
//!
//! Membership, the map and the planned layout are saved atomically to `cluster.json` in the
//! state directory before any change is announced, so a restarted controller resumes the same
//! cluster at the same epoch, moves included, without anyone re-registering. One whose state
//! directory was lost adopts the newest map its storage nodes hold before it changes anything. While it is down, frontends keep routing with the map
//! they have and storage nodes keep serving; both reconnect by themselves.

pub mod api;
pub mod cluster;
pub mod dashboard;
pub mod metrics;

use anyhow::Context;
use bytes::Bytes;
use cluster::{Cluster, Policy, Timing};
use common::placement::{Epoch, PartitionMap};
use common::shutdown::Shutdown;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Command line and environment configuration of the controller.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "controller",
    version,
    about = "Velour Fog controller: admits storage nodes and frontends, owns the partition map."
)]
pub struct Config {
    /// Port to listen on (0 picks a free port).
    #[arg(value_name = "PORT")]
    pub port: u16,
    /// How many storage nodes form the cluster at first (later nodes join it; a restarted
    /// controller resumes the cluster as it has become).
    #[arg(value_name = "NUM_STORAGE")]
    pub num_storage: usize,
    /// How many storage nodes hold each partition (K) when the cluster forms (change it later
    /// with `velourfog replication set`).
    #[arg(value_name = "REDUNDANCY")]
    pub redundancy: usize,
    /// How storage nodes that register with a formed cluster join: `auto` (at once) or `manual`
    /// (they wait as pending until `velourfog node add ADDR`).
    #[arg(long, env = "VF_JOIN", default_value = "auto")]
    pub join: common::proto::JoinPolicy,
    /// Partitions moved at the same time when nodes join or leave.
    #[arg(long, env = "VF_MOVES_AT_ONCE", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub moves_at_once: u16,
    /// Address to listen on.
    #[arg(long, env = "VF_LISTEN_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// How long after a heartbeat an up storage node may serve reads, in milliseconds.
    #[arg(long, env = "VF_LEASE_MS", default_value_t = 1500)]
    pub lease_ms: u64,
    /// Silence after which a storage node is marked down, in milliseconds (must exceed the
    /// lease by at least 250 ms).
    #[arg(long, env = "VF_DOWN_AFTER_MS", default_value_t = 3000)]
    pub down_after_ms: u64,
    /// Where the cluster state is kept [default: ./velourfog-data/controller-PORT].
    #[arg(long, env = "VF_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// File holding the cluster secret that node-to-node and admin calls must carry (see
    /// docs/security.md); without one every endpoint is open.
    #[arg(long, env = "VF_CLUSTER_SECRET_FILE", value_name = "PATH")]
    pub cluster_secret_file: Option<PathBuf>,
    /// How slowly clients may send heads and bodies, and how long idle connections stay open.
    #[command(flatten)]
    pub client: common::http::ClientTimeouts,
    /// Log level or filter, such as `debug` or `info,frontend=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info,fjall=warn,lsm_tree=warn")]
    pub log_level: String,
}

const STATE_FILE: &str = "cluster.json";

/// A map as published to watchers: its epoch and its JSON, encoded once.
#[derive(Debug)]
pub struct PublishedMap {
    pub epoch: Epoch,
    pub json: Bytes,
}

/// The controller's shared state.
#[derive(Debug)]
pub struct Controller {
    cluster: Mutex<Cluster>,
    state_file: PathBuf,
    published: watch::Sender<Option<Arc<PublishedMap>>>,
    /// Who may call the endpoints that are not open to all.
    pub gate: common::auth::Gate,
    /// The dashboard's history of the nodes' metrics.
    pub collector: dashboard::Collector,
    /// Fires when the controller stops, so open long polls end at once.
    pub shutdown: Shutdown,
}

impl Controller {
    pub fn new(cluster: Cluster, state_file: PathBuf, gate: common::auth::Gate, shutdown: Shutdown) -> Self {
        let published = watch::Sender::new(None);
        let collector = dashboard::Collector::default();
        Self { cluster: Mutex::new(cluster), state_file, published, gate, collector, shutdown }
    }

    /// Saves `cluster` atomically to the state file, before any change is announced or acted
    /// on. A controller that cannot save exits: a decision it announced but could not keep (a
    /// node fenced out, say) must never be undone by a restart.
    pub fn save(&self, cluster: &Cluster) {
        let json = serde_json::to_vec_pretty(&cluster.saved()).expect("state encodes");
        if let Err(e) = tokio::task::block_in_place(|| common::atomic_file::write(&self.state_file, &json)) {
            log::error!("cannot save the cluster state to {}: {e}; exiting", self.state_file.display());
            std::process::exit(1);
        }
    }

    pub fn cluster(&self) -> MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pushes `map` to every frontend watching, and to every one that asks later.
    pub fn publish(&self, map: Arc<PartitionMap>) {
        let json = Bytes::from(serde_json::to_vec(&*map).expect("maps encode"));
        let watching = self.published.receiver_count();
        self.published.send_replace(Some(Arc::new(PublishedMap { epoch: map.epoch, json })));
        log::info!("map epoch {} pushed to {watching} watching frontends", map.epoch);
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<PublishedMap>>> {
        self.published.subscribe()
    }
}

/// A bound controller, ready to run.
pub struct Server {
    listener: TcpListener,
    cluster: Cluster,
    state_file: PathBuf,
    gate: common::auth::Gate,
    /// What clients' connections are held to.
    rules: common::http::Rules,
    /// Held for the controller's lifetime: one controller per state directory.
    _lock: std::fs::File,
}

impl Server {
    /// Validates `config` and binds the listening socket.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        let timing = Timing {
            lease: std::time::Duration::from_millis(config.lease_ms),
            margin: std::time::Duration::from_millis(250),
            down_after: std::time::Duration::from_millis(config.down_after_ms),
        };
        anyhow::ensure!(
            timing.down_after >= timing.lease + timing.margin,
            "--down-after-ms ({}) must be at least --lease-ms ({}) + 250",
            config.down_after_ms,
            config.lease_ms
        );
        let policy = Policy { join: config.join, moves_at_once: usize::from(config.moves_at_once) };
        let secret = common::auth::load(config.cluster_secret_file.as_deref(), "the controller")?;
        common::telemetry::install();
        metrics::describe();
        common::placement::choose_digits(config.num_storage, config.redundancy)
            .context("invalid NUM_STORAGE / REDUNDANCY")?;
        let state_dir = config
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("velourfog-data").join(format!("controller-{}", config.port)));
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
        let lock = common::atomic_file::lock_dir(&state_dir)
            .with_context(|| format!("cannot lock state directory {}", state_dir.display()))?;
        let state_file = state_dir.join(STATE_FILE);
        let now = std::time::Instant::now();
        let cluster = match load(&state_file)? {
            None => {
                // Nodes may hold a cluster this controller lost: collect their maps first.
                let adopt = Some((timing.down_after, now));
                Cluster::new(config.num_storage, config.redundancy, timing, policy, adopt)?
            }
            Some(saved) => {
                let mut cluster = Cluster::restore(saved, timing, policy, now);
                cluster.resize_unformed(config.num_storage, config.redundancy)?;
                if cluster.map().is_some() && cluster.replication() != config.redundancy {
                    log::warn!(
                        "the cluster keeps {} replicas per partition (REDUNDANCY {} applies only when a cluster \
                         forms; change it with `velourfog replication set`)",
                        cluster.replication(),
                        config.redundancy
                    );
                }
                log::info!(
                    "resumed cluster from {}: {} storage nodes, map epoch {}",
                    state_file.display(),
                    cluster.saved().members.len(),
                    cluster.epoch().map_or("none yet".to_owned(), |e| e.to_string())
                );
                cluster
            }
        };
        let addr = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        log::info!(
            "controller waiting for {} storage nodes, {} replicas per partition",
            config.num_storage,
            config.redundancy
        );
        let rules = common::http::Rules { timeouts: config.client, ..Default::default() };
        let gate = common::auth::Gate::new(secret);
        Ok(Self { listener, cluster, state_file, gate, rules, _lock: lock })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        log::info!("controller listening on {}", self.local_addr()?);
        let map = self.cluster.map().cloned();
        let controller =
            Arc::new(Controller::new(self.cluster, self.state_file, self.gate, shutdown.clone()));
        if let Some(map) = map {
            controller.publish(map);
        }
        let housekeeping = tokio::spawn(housekeeping(controller.clone(), shutdown.clone()));
        let collector = tokio::spawn(dashboard::collect(controller.clone(), shutdown.clone()));
        let handler = move |req| api::handle(controller.clone(), req);
        common::http::serve_with(self.listener, handler, shutdown, self.rules).await;
        housekeeping.abort();
        collector.abort();
        log::info!("controller stopped");
        Ok(())
    }
}

/// How often the controller looks for silent storage nodes and moves partitions a step on.
pub const LIVENESS_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

async fn housekeeping(controller: Arc<Controller>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LIVENESS_CHECK_INTERVAL) => {}
            _ = shutdown.wait() => return,
        }
        let new_map = {
            let mut cluster = controller.cluster();
            let new_map = cluster.step(std::time::Instant::now());
            if new_map.is_some() {
                controller.save(&cluster);
            }
            new_map
        };
        if let Some(map) = new_map {
            controller.publish(map);
        }
    }
}

/// Reads the saved cluster, if any. A file that does not parse stops the controller: starting
/// afresh would hand out new ids and a new map over nodes that hold data.
fn load(path: &Path) -> anyhow::Result<Option<cluster::SavedCluster>> {
    let Some(bytes) =
        common::atomic_file::read(path).with_context(|| format!("cannot read {}", path.display()))?
    else {
        return Ok(None);
    };
    let saved = serde_json::from_slice(&bytes).with_context(|| {
        format!("{} is corrupt; restore it or start with a fresh --state-dir", path.display())
    })?;
    Ok(Some(saved))
}
