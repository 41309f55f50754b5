//! A Velour Fog storage node.
//!
//! A storage node keeps timestamp-versioned records (see `common::version`) and answers reads and
//! writes from frontends. It knows no other node but the controller: it registers there at start
//! (retrying until the controller is up, so any start order works) and repeats the registration
//! as a heartbeat, which also re-announces it to a restarted controller under the same id.

pub mod api;
pub mod membership;
pub mod store;

use anyhow::Context;
use common::placement::NodeId;
use common::shutdown::Shutdown;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use store::MemoryStore;
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
    /// Largest key accepted, in bytes.
    #[arg(long, env = "VF_MAX_KEY_BYTES", default_value_t = 64 * 1024)]
    pub max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    #[arg(long, env = "VF_MAX_VALUE_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub max_value_bytes: usize,
}

/// Size limits applied to every write.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

/// The state one storage node's request handlers share.
#[derive(Debug)]
pub struct Node {
    pub store: MemoryStore,
    pub limits: Limits,
    /// The id the controller gave this node, once it has registered.
    pub node_id: Mutex<Option<NodeId>>,
}

impl Node {
    /// One line for the health endpoint.
    pub fn describe(&self) -> String {
        match *self.node_id.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(id) => format!("ok: node {id}, {} records", self.store.len()),
            None => format!("ok: not registered yet, {} records", self.store.len()),
        }
    }
}

/// A bound storage node, ready to run.
pub struct Server {
    listener: TcpListener,
    advertise: String,
    controller: String,
    node: Arc<Node>,
}

impl Server {
    /// Validates `config` and binds the listening socket.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        common::addr::split(&config.controller).context("invalid CONTROLLER_HOST:PORT")?;
        let listen =
            common::addr::listen_addr(&config.advertise, config.listen).context("invalid OWN_HOST:PORT")?;
        let listener =
            TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        let advertise = common::addr::advertised(&config.advertise, listener.local_addr()?)?;
        let node = Arc::new(Node {
            store: MemoryStore::new(),
            limits: Limits { max_key_bytes: config.max_key_bytes, max_value_bytes: config.max_value_bytes },
            node_id: Mutex::new(None),
        });
        Ok(Self { listener, advertise, controller: config.controller, node })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        log::info!("storage node listening on {} (advertised as {})", self.local_addr()?, self.advertise);
        let heartbeat = tokio::spawn(membership::run(
            self.controller.clone(),
            self.advertise.clone(),
            self.node.clone(),
            shutdown.clone(),
        ));
        let node = self.node.clone();
        common::http::serve(self.listener, move |req| api::handle(node.clone(), req), shutdown).await;
        heartbeat.abort();
        log::info!("storage node stopped");
        Ok(())
    }
}
