//! A Velour Fog storage node.
//!
//! A storage node keeps timestamp-versioned records (see `common::version`) on disk and answers
//! reads and writes from frontends; a write is acknowledged only once it is durable under the
//! node's sync policy ([`durability`]). It knows no other node but the controller: it registers
//! there at start (retrying until the controller is up, so any start order works) and repeats
//! the registration as a heartbeat. The id the controller gives it is kept in the data directory
//! ([`identity`]), so a restarted node rejoins as the same member with its data.

pub mod api;
pub mod digest;
pub mod disk;
pub mod durability;
pub mod heap;
pub mod identity;
pub mod membership;
pub mod metrics;
pub mod moves;
pub mod reaper;
pub mod receive;
pub mod repair;
pub mod store;
pub mod value_files;
pub mod watch;

use anyhow::Context;
use common::placement::{Epoch, NodeId, NodeState, PartitionMap};
use common::shutdown::Shutdown;
use durability::{Durability, SyncPolicy};
use identity::IdentityFile;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};
use store::Store;
use tokio::net::TcpListener;

/// Command line and environment configuration of a storage node.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "storage",
    version,
    about = "Velour Fog storage node: keeps versioned records for the partitions the controller assigns it."
)]
pub struct Config {
    /// The controller, as HOST:PORT.
    #[arg(value_name = "CONTROLLER_HOST:PORT")]
    pub controller: String,
    /// Where frontends reach this node, as HOST:PORT (port 0 picks a free port).
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
    /// Data directory [default: ./velourfog-data/storage-HOST-PORT, one per node].
    #[arg(long, env = "VF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// When writes are fsynced: `always` (before every acknowledgement, group-committed), or an
    /// interval such as `100ms` (acknowledge on write to the OS; a machine crash can lose the
    /// last interval of acknowledged writes, a process crash loses nothing).
    #[arg(long, env = "VF_SYNC", default_value = "always")]
    pub sync: SyncPolicy,
    /// Free space to keep on the data directory's filesystem, in MiB: below it the node refuses
    /// writes of values with 507 (reads go on; deletes are accepted down to half of it) and
    /// takes them again by itself once space returns. The default leaves room for the engine's
    /// flushes and compactions yet fits a laptop's or a CI runner's temp dir; 0: no floor.
    #[arg(long, env = "VF_MIN_FREE_DISK_MIB", default_value_t = disk::DEFAULT_MIN_FREE_MIB)]
    pub min_free_disk_mib: u64,
    /// Milliseconds between anti-entropy passes (digest comparison with every peer).
    #[arg(long, env = "VF_ANTI_ENTROPY_MS", default_value_t = 10_000)]
    pub anti_entropy_ms: u64,
    /// Block cache of the storage engine, in MiB: the bound on memory used for cached data.
    #[arg(long, env = "VF_CACHE_MIB", default_value_t = 64)]
    pub cache_mib: u64,
    /// Size of one in-memory write buffer (memtable), in MiB: with the cache, the bound on
    /// the storage engine's memory.
    #[arg(long, env = "VF_MEMTABLE_MIB", default_value_t = 16)]
    pub memtable_mib: u64,
    /// Niceness (0 to 19) of the storage engine's background threads, which flush memtables
    /// and compact tables: they yield the cores to the threads serving requests. Where the
    /// cores are shared (2 cores, 3 storage nodes, a frontend and the load), 10 cut SET p99
    /// by a third at the same throughput (see `bench/tune.sh`); 0: the same as the rest.
    #[arg(long, env = "VF_ENGINE_NICENESS", default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=19))]
    pub engine_niceness: u8,
    /// Threads serving requests [default: one per core]. Where several nodes share a machine's
    /// cores (as under `./runlocal.sh`), fewer per node is faster: each spare thread adds
    /// handoffs between threads to every request.
    #[arg(long, env = "VF_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
    /// This node's failure domain (a rack, a room): the replicas of a partition go to distinct
    /// zones whenever the cluster has at least K zones.
    #[arg(long, env = "VF_ZONE")]
    pub zone: Option<String>,
    /// Bandwidth for pulling partitions that move to this node, in MiB/s (the foreground
    /// traffic keeps the rest).
    #[arg(long, env = "VF_REBALANCE_MIB_PER_S", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub rebalance_mib_per_s: u64,
    /// Writes stamped further ahead of this node's clock than this are refused (a writer with a
    /// broken clock would otherwise pin keys until the clocks catch up), in milliseconds.
    #[arg(long, env = "VF_MAX_CLOCK_SKEW_MS", default_value_t = 5000)]
    pub max_clock_skew_ms: u64,
    /// How long a deleted key's tombstone is kept at least (`10m`, `1h`): after it, and once
    /// every replica of its partition holds it, it is removed. Writes stamped further behind
    /// this node's clock than this are refused, so none older than a removed tombstone can
    /// arrive; it must exceed `--max-clock-skew-ms` by a margin (see docs/failure-handling.md).
    #[arg(long, env = "VF_TOMBSTONE_GRACE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub tombstone_grace: Duration,
    /// File holding the cluster secret that node-to-node calls must carry (see
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

/// `--max-key-bytes`: 1 to [`common::proto::MAX_KEY_BYTES`].
fn max_key_bytes(text: &str) -> Result<usize, String> {
    let bytes: usize = text.parse().map_err(|_| format!("`{text}` is not a number of bytes"))?;
    let most = common::proto::MAX_KEY_BYTES;
    (1..=most)
        .contains(&bytes)
        .then_some(bytes)
        .ok_or_else(|| format!("must be 1 to {most} (the storage engine's limit)"))
}

/// Limits applied to every write.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// How far ahead of this node's clock a write's timestamp may be, in microseconds.
    pub max_clock_skew_us: u64,
    /// How long tombstones are kept at least, in microseconds; also how far behind this node's
    /// clock a frontend's write may be stamped (see `crate::reaper`).
    pub tombstone_grace_us: u64,
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Limits {
            max_key_bytes: config.max_key_bytes,
            max_value_bytes: config.max_value_bytes,
            max_clock_skew_us: config.max_clock_skew_ms.saturating_mul(1000),
            tombstone_grace_us: config.tombstone_grace.as_micros() as u64,
        }
    }
}

impl Limits {
    /// Why a write stamped `timestamp` is refused, if it is: too far in the future, or, unless
    /// it is a `repair` (which carries a record as it was stamped long ago), so far in the past
    /// that a tombstone newer than it may have been reaped already.
    pub fn refused_timestamp(&self, timestamp: u64, repair: bool) -> Option<String> {
        let now = common::version::now_micros();
        let ahead = timestamp.saturating_sub(now);
        let behind = now.saturating_sub(timestamp);
        if ahead > self.max_clock_skew_us {
            Some(format!(
                "timestamp {timestamp} is {:.1} s ahead of this node's clock (the bound is --max-clock-skew-ms {}): \
                 the writer's clock (or this node's) is wrong",
                ahead as f64 / 1e6,
                self.max_clock_skew_us / 1000
            ))
        } else if !repair && behind > self.tombstone_grace_us {
            Some(format!(
                "timestamp {timestamp} is {:.1} s behind this node's clock, past the --tombstone-grace of {:.0} s: \
                 the writer's clock (or this node's) is wrong, or the write was held up on the way",
                behind as f64 / 1e6,
                self.tombstone_grace_us as f64 / 1e6
            ))
        } else {
            None
        }
    }
}

/// What the node knows of the cluster: the newest map it has seen, its own state, its lease.
#[derive(Debug, Default)]
pub struct View {
    pub map: Option<Arc<PartitionMap>>,
    pub state: Option<NodeState>,
    pub joined: Epoch,
    /// Reads may be served until then (granted by the controller's heartbeat answers).
    pub lease_until: Option<Instant>,
}

impl View {
    /// If a write of `key` routed by map `epoch` is stale, the partition and the epoch it needs:
    /// its partition's write set changed since (see `PartitionMap::min_write_epoch`), or this
    /// node (`me`) no longer holds the partition and the writer's map is older than ours.
    pub fn stale_write(
        &self,
        key: &[u8],
        epoch: Option<Epoch>,
        me: Option<NodeId>,
    ) -> Option<(common::partition::Partition, Epoch)> {
        let (given, map) = (epoch?, self.map.as_ref()?);
        let partition = common::partition::of(key, map.digits);
        let needed = map.min_write_epoch(partition);
        if given < needed {
            return Some((partition, needed));
        }
        let moved_away = me.is_some_and(|me| !map.holds(me, partition));
        (moved_away && given < map.epoch).then_some((partition, map.epoch))
    }

    /// Why this node (`me`) may not serve a leased read of `key`, if it may not: it is not one
    /// of the partition's replicas in its map (the partition is moving to it and has not
    /// committed, or has moved away). Frontends then ask another replica.
    pub fn not_serving(&self, key: &[u8], me: Option<NodeId>) -> Option<String> {
        let (Some(map), Some(me)) = (self.map.as_ref(), me) else {
            return Some("this node has no map or id yet".into());
        };
        let partition = common::partition::of(key, map.digits);
        (!map.replicas_of(partition).contains(&me))
            .then(|| format!("not a replica of partition {partition} in map epoch {}", map.epoch))
    }
}

/// The state one storage node's request handlers share.
#[derive(Debug)]
pub struct Node {
    pub store: Arc<Store>,
    pub durability: Durability,
    pub limits: Limits,
    pub identity: IdentityFile,
    /// The id the controller gave this node, once it has registered.
    pub node_id: Mutex<Option<NodeId>>,
    /// Writes hold it shared while they check their epoch and apply; installing a map takes it
    /// exclusively, so once a map is installed no write routed by an older one is in flight.
    pub view: RwLock<View>,
    pub repair: repair::RepairStats,
    /// Wakes the heartbeat loop early (after catching up, to get a lease at once).
    pub heartbeat_now: tokio::sync::Notify,
    /// This node's failure domain.
    pub zone: Option<String>,
    /// Partitions moving to this node: what it pulled, how far it got.
    pub moves: moves::Moves,
    /// The newest map installed, kept in the data directory (see [`Node::install_map`]).
    pub map_file: Mutex<identity::MapFile>,
    /// The controller said this node was removed from the cluster (its data lives on the
    /// others now, so it may drop all of it).
    pub removed: std::sync::atomic::AtomicBool,
    /// Who may call the endpoints that are not open to all.
    pub gate: common::auth::Gate,
    /// The client for calls to the controller and to peers (carrying the cluster secret).
    pub client: common::http::Client,
    /// This node's clock against the controller's (logged when past the skew bound).
    pub clock: common::skew::ClockCheck,
    /// Where the node keeps its data.
    pub data_dir: PathBuf,
    /// The free-space floor of the data directory's filesystem.
    pub disk: Arc<disk::Disk>,
}

impl Node {
    /// The view, shared. Never call this (or a method that does: `state`, `map_and_id`,
    /// `read_permission`) while holding a guard from it: a waiting writer (a heartbeat answer,
    /// a new map) blocks the second read lock, and the thread deadlocks with itself.
    pub fn view(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    fn view_mut(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn id(&self) -> Option<NodeId> {
        *self.node_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node's state as the controller last told it (down until it has heard).
    pub fn state(&self) -> NodeState {
        self.view().state.unwrap_or(NodeState::Down)
    }

    pub fn map_and_id(&self) -> Option<(Arc<PartitionMap>, NodeId)> {
        Some((self.view().map.clone()?, self.id()?))
    }

    /// Installs `map` if it is newer than the one held. It is saved in the data directory
    /// first, so a restarted node knows what it held and a controller that lost its state can
    /// adopt it; a map that cannot be saved is still used (logged).
    pub fn install_map(&self, map: PartitionMap) {
        let mut file = self.map_file.lock().unwrap_or_else(|p| p.into_inner());
        if self.view().map.as_ref().is_some_and(|held| held.epoch >= map.epoch) {
            return;
        }
        if let Err(e) = file.save(&map) {
            log::error!("cannot save map epoch {} in the data directory: {e}", map.epoch);
        }
        let mut view = self.view_mut();
        log::info!("map epoch {} installed", map.epoch);
        view.map = Some(Arc::new(map));
        // Tell the controller at once (a move waits for nodes to install its map), and look
        // for partitions to pull.
        self.heartbeat_now.notify_one();
        self.moves.wake.notify_one();
    }

    /// Records what a heartbeat answer said; returns the epoch to catch up from if the node
    /// has just learned it must catch up.
    pub fn heard(&self, state: NodeState, joined: Epoch, lease: Duration, sent_at: Instant) -> Option<Epoch> {
        let mut view = self.view_mut();
        if view.joined != joined {
            self.moves.forget_synced();
        }
        let newly_catching_up = state == NodeState::CatchingUp
            && (view.state != Some(NodeState::CatchingUp) || view.joined != joined);
        if view.state != Some(state) {
            log::info!("controller says this node is {state:?}");
        }
        view.state = Some(state);
        view.joined = joined;
        view.lease_until = (state == NodeState::Up && !lease.is_zero()).then(|| sent_at + lease);
        newly_catching_up.then_some(joined)
    }

    /// A node on a fresh store in `dir`, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(dir: &std::path::Path) -> Self {
        let store = Arc::new(Store::open(dir, 8 << 20, 4 << 20).expect("store"));
        Node {
            durability: Durability::start(store.clone(), SyncPolicy::Always),
            store,
            limits: Limits {
                max_key_bytes: 1024,
                max_value_bytes: 1 << 20,
                max_clock_skew_us: 5_000_000,
                tombstone_grace_us: 600_000_000,
            },
            identity: IdentityFile::open(dir).expect("identity").0,
            node_id: Mutex::new(Some(1)),
            view: RwLock::new(View::default()),
            repair: repair::RepairStats::default(),
            heartbeat_now: tokio::sync::Notify::new(),
            zone: None,
            moves: moves::Moves::new(64 << 20),
            map_file: Mutex::new(identity::MapFile::new(dir)),
            removed: Default::default(),
            gate: Default::default(),
            client: common::http::Client::new(),
            clock: common::skew::ClockCheck::new(5_000_000),
            data_dir: dir.to_path_buf(),
            disk: Arc::new(disk::Disk::new(dir.to_path_buf(), 0)),
        }
    }

    /// Whether the node may answer client reads now, and if not, why.
    pub fn read_permission(&self) -> Result<(), String> {
        let view = self.view();
        match (view.state, view.lease_until) {
            (Some(NodeState::Up), Some(until)) if Instant::now() < until => Ok(()),
            (Some(NodeState::Up), _) => Err("no valid lease from the controller".into()),
            (Some(state), _) => Err(format!("this node is {state:?}")),
            (None, _) => Err("this node has not heard from the controller yet".into()),
        }
    }

    /// One line for the health endpoint.
    pub fn describe(&self) -> String {
        let id = match *self.node_id.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(id) => format!("node {id}"),
            None => "not registered yet".to_owned(),
        };
        format!("ok: {id}, about {} records", self.store.approximate_len())
    }
}

/// A bound storage node, ready to run.
pub struct Server {
    listener: TcpListener,
    advertise: String,
    controller: String,
    node: Arc<Node>,
    anti_entropy_interval: Duration,
    /// `--engine-niceness`, for the upkeep thread too (digest rebuild and rescans, idle flushes).
    engine_niceness: i32,
    /// `--memtable-mib`, in bytes: an idle flush needs a quarter of it (see `upkeep`).
    memtable_bytes: u64,
    /// What clients' connections are held to.
    rules: common::http::Rules,
    /// Held for the node's lifetime: no other process may open the same data directory.
    _lock: std::fs::File,
}

impl Server {
    /// Validates `config` and binds the listening socket.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        common::addr::split(&config.controller).context("invalid CONTROLLER_HOST:PORT")?;
        let skew = Duration::from_millis(config.max_clock_skew_ms);
        anyhow::ensure!(
            config.tombstone_grace > 2 * skew,
            "--tombstone-grace ({:?}) must be more than twice --max-clock-skew-ms ({skew:?}): writes from a frontend \
             whose clock is behind within the bound would be refused",
            config.tombstone_grace
        );
        let listen =
            common::addr::listen_addr(&config.advertise, config.listen).context("invalid OWN_HOST:PORT")?;
        let listener =
            TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let advertise = common::addr::advertised(&config.advertise, listener.local_addr()?)?;
        let data_dir = config.data_dir.clone().unwrap_or_else(|| {
            let (host, port) = common::addr::split(&advertise).expect("validated above");
            PathBuf::from("velourfog-data").join(format!("storage-{host}-{port}"))
        });
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let lock = common::atomic_file::lock_dir(&data_dir)
            .with_context(|| format!("cannot lock data directory {}", data_dir.display()))?;
        let secret = common::auth::load(config.cluster_secret_file.as_deref(), "this storage node")?;
        common::telemetry::install();
        metrics::describe();
        let (identity, node_id) = IdentityFile::open(&data_dir)?;
        let map_file = identity::MapFile::new(&data_dir);
        let map = map_file.load()?;
        let store = Arc::new(
            Store::open_deferred(
                &data_dir.join("db"),
                config.cache_mib << 20,
                config.memtable_mib.max(1) << 20,
            )
            .with_context(|| format!("cannot open the store in {}", data_dir.display()))?,
        );
        if config.engine_niceness > 0 && store::set_engine_niceness(config.engine_niceness.into()) == 0 {
            log::warn!("the storage engine's threads were not found: flushes and compactions run at the normal priority");
        }
        log::info!(
            "data directory {} opened ({}, sync {:?}, about {} records)",
            data_dir.display(),
            node_id.map_or("new node".to_owned(), |id| format!("node {id}")),
            config.sync,
            store.approximate_len()
        );
        let node = Arc::new(Node {
            durability: Durability::start(store.clone(), config.sync),
            store,
            limits: Limits::from(&config),
            identity,
            node_id: Mutex::new(node_id),
            view: RwLock::new(View::default()),
            repair: repair::RepairStats::default(),
            heartbeat_now: tokio::sync::Notify::new(),
            zone: config.zone.clone(),
            moves: moves::Moves::new(config.rebalance_mib_per_s << 20),
            map_file: Mutex::new(map_file),
            removed: Default::default(),
            client: common::http::Client::with_secret(secret.as_ref()),
            gate: common::auth::Gate::new(secret),
            clock: common::skew::ClockCheck::new(config.max_clock_skew_ms.saturating_mul(1000)),
            disk: Arc::new(disk::Disk::new(
                data_dir.clone(),
                config.min_free_disk_mib.saturating_mul(1 << 20),
            )),
            data_dir: data_dir.clone(),
        });
        if let Some(map) = map {
            // Known before the controller answers: what this node held, and the map to offer
            // a controller that lost its state.
            node.view.write().unwrap_or_else(|p| p.into_inner()).map = Some(Arc::new(map));
        }
        Ok(Self {
            listener,
            advertise,
            controller: config.controller,
            node,
            anti_entropy_interval: Duration::from_millis(config.anti_entropy_ms.max(1)),
            engine_niceness: config.engine_niceness.into(),
            memtable_bytes: config.memtable_mib.max(1) << 20,
            rules: common::http::Rules {
                timeouts: config.client,
                max_head_bytes: common::http::MAX_HEAD_BYTES,
                max_chunk_bytes: config.max_value_bytes as u64,
            },
            _lock: lock,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        log::info!("storage node listening on {} (advertised as {})", self.local_addr()?, self.advertise);
        // After an unclean stop, the digests are rebuilt while the node serves (see `store`);
        // then, every second, the digest buckets that writes left unsettled are rescanned once
        // quiet (see `digest`), and the memtable is flushed when writes pause (see `upkeep`).
        // At the engine's niceness: the requests come first.
        let store = self.node.store.clone();
        let (niceness, memtable_bytes) = (self.engine_niceness, self.memtable_bytes);
        let stop = shutdown.clone();
        std::thread::Builder::new().name("upkeep".into()).spawn(move || {
            if niceness > 0 {
                store::set_thread_niceness(niceness);
            }
            if let Err(e) = store.rebuild_digests() {
                // As an open that cannot read its records: the node must not go on.
                log::error!("cannot rebuild the digests: {e}; stopping");
                std::process::exit(1);
            }
            upkeep(&store, memtable_bytes, &stop);
        })?;
        let heartbeat = tokio::spawn(membership::run(
            self.controller.clone(),
            self.advertise.clone(),
            self.node.clone(),
            shutdown.clone(),
        ));
        let map_follower = tokio::spawn(membership::follow_map(
            self.controller.clone(),
            self.node.clone(),
            shutdown.clone(),
        ));
        let moves = tokio::spawn(moves::run(self.node.clone(), self.node.client.clone(), shutdown.clone()));
        let anti_entropy = tokio::spawn(repair::anti_entropy(
            self.node.clone(),
            self.node.client.clone(),
            self.anti_entropy_interval,
            shutdown.clone(),
        ));
        let reaper = tokio::spawn(reaper::run(
            self.node.clone(),
            self.node.client.clone(),
            reaper::interval_for(Duration::from_micros(self.node.limits.tombstone_grace_us)),
            shutdown.clone(),
        ));
        let disk = tokio::spawn(self.node.disk.clone().run(shutdown.clone()));
        let node = self.node.clone();
        let handler = move |req| api::handle(node.clone(), req);
        common::http::serve_with(self.listener, handler, shutdown, self.rules).await;
        let tasks = [heartbeat, map_follower, anti_entropy, reaper, moves, disk];
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await; // stopped: no more writes from repair, moves or reaping
        }
        // Saved so the next start need not scan every record (see `store`).
        match tokio::task::block_in_place(|| self.node.store.close()) {
            Ok(()) => log::info!("storage node stopped cleanly"),
            Err(e) => log::warn!("storage node stopped, but its store could not be closed cleanly: {e}"),
        }
        Ok(())
    }
}

/// Until `shutdown`, once a second: rescans the digest buckets that writes left unsettled once
/// they have been quiet long enough (see `crate::digest`), at most
/// [`store::Store::SETTLE_RECORDS_PER_SECOND`] records each second, and flushes the memtable
/// when writes have paused for [`store::Store::IDLE_FLUSH_SECONDS`] and it holds at least a
/// quarter of `memtable_bytes` (see [`store::Store::flush_idle_memtable`]). Once a second, not
/// more often: each rescan pass looks at every bucket, and at ten passes a second that alone
/// took 0.9 s of CPU per node in 30 s of SETs (`THREADS=1 bench/tune.sh`). A pass while no
/// bucket is unsettled looks at none.
fn upkeep(store: &store::Store, memtable_bytes: u64, shutdown: &Shutdown) {
    let mut idle = store::Idle::default();
    while !shutdown.is_triggered() {
        std::thread::sleep(Duration::from_secs(1));
        if idle.tick(store.writes(), store::Store::IDLE_FLUSH_SECONDS) {
            match store.flush_idle_memtable(memtable_bytes / 4) {
                Ok(true) => log::debug!("writes paused: memtable flushed"),
                Ok(false) => {}
                Err(e) => log::warn!("cannot flush the memtable while writes pause: {e}"),
            }
        }
        match store.settle_quiet(store::Store::SETTLE_RECORDS_PER_SECOND) {
            Ok(0) => {}
            Ok(settled) => log::debug!("digests: {settled} buckets settled by a rescan"),
            Err(e) => log::warn!("digests: cannot rescan unsettled buckets: {e}"),
        }
    }
}
