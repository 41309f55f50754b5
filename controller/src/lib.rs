//! The Velour Fog controller: the one process that knows the whole cluster.
//!
//! It admits storage nodes and frontends, forms the cluster once the expected number of storage
//! nodes has registered, owns the partition map and pushes every new map to the frontends. The
//! push rides on a long poll each frontend keeps open (`GET /v1/map?newer_than=E`), answered the
//! moment a newer map exists; so a frontend needs no port of its own for the controller, and one
//! that missed a push (or started late) gets the current map as soon as it asks.

pub mod api;
pub mod cluster;

use anyhow::Context;
use bytes::Bytes;
use cluster::Cluster;
use common::placement::{Epoch, PartitionMap};
use common::shutdown::Shutdown;
use std::net::{IpAddr, SocketAddr};
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
    /// How many storage nodes form the cluster.
    #[arg(value_name = "NUM_STORAGE")]
    pub num_storage: usize,
    /// How many storage nodes hold each partition (K).
    #[arg(value_name = "REDUNDANCY")]
    pub redundancy: usize,
    /// Address to listen on.
    #[arg(long, env = "VF_LISTEN_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
}

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
    published: watch::Sender<Option<Arc<PublishedMap>>>,
    /// Fires when the controller stops, so open long polls end at once.
    pub shutdown: Shutdown,
}

impl Controller {
    pub fn new(cluster: Cluster, shutdown: Shutdown) -> Self {
        Self { cluster: Mutex::new(cluster), published: watch::Sender::new(None), shutdown }
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
}

impl Server {
    /// Validates `config` and binds the listening socket.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        let cluster = Cluster::new(config.num_storage, config.redundancy)
            .context("invalid NUM_STORAGE / REDUNDANCY")?;
        let addr = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        log::info!(
            "controller waiting for {} storage nodes, {} replicas per partition",
            config.num_storage,
            config.redundancy
        );
        Ok(Self { listener, cluster })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        log::info!("controller listening on {}", self.local_addr()?);
        let controller = Arc::new(Controller::new(self.cluster, shutdown.clone()));
        common::http::serve(self.listener, move |req| api::handle(controller.clone(), req), shutdown).await;
        log::info!("controller stopped");
        Ok(())
    }
}
