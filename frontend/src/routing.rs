//! Routing: the partition map this frontend uses, and the task that keeps it current.
//!
//! The frontend registers with the controller (retrying until it is up, so any start order
//! works), installs the map it is given, then holds a long poll open for the next epoch. A newer
//! map replaces the old one at once; an older or equal one is ignored. While the controller is
//! unreachable the frontend keeps routing with the map it has.

use crate::batcher::NodeQueues;
use common::http::{Client, RpcError};
use common::placement::{NodeId, PartitionMap};
use common::proto::{self, FrontendRegistered, FrontendRegistration};
use common::shutdown::Shutdown;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// Pause between attempts to reach an unreachable controller.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Deadline of a registration call.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// A map with everything the request path needs precomputed.
#[derive(Debug)]
pub struct Routes {
    pub map: PartitionMap,
    /// `http://host:port/v1/record?key=` per node: append the escaped key to get a record URL.
    record_urls: HashMap<NodeId, String>,
    /// Each node's batch queues, looked up once per map on first use (see
    /// [`crate::batcher::Batchers`]), so that the request path takes no shared lock for them.
    queues: HashMap<NodeId, OnceLock<Arc<NodeQueues>>>,
}

impl Routes {
    pub fn new(map: PartitionMap) -> Self {
        let record_urls = map
            .members
            .iter()
            .map(|m| (m.id, format!("http://{}{}?key=", m.addr, proto::RECORD_PATH)))
            .collect();
        let queues = map.members.iter().map(|m| (m.id, OnceLock::new())).collect();
        Self { map, record_urls, queues }
    }

    /// The batch queues of `node`, from `lookup` the first time they are asked for; `None` if
    /// `node` is not in this map.
    pub fn queues(&self, node: NodeId, lookup: impl FnOnce() -> Arc<NodeQueues>) -> Option<&NodeQueues> {
        Some(self.queues.get(&node)?.get_or_init(lookup))
    }

    /// The record URL prefix of `node`.
    pub fn record_url(&self, node: NodeId) -> &str {
        self.record_urls.get(&node).map(String::as_str).unwrap_or("")
    }

    /// The `host:port` of `node`, for messages.
    pub fn addr(&self, node: NodeId) -> &str {
        self.map.member(node).map_or("?", |m| m.addr.as_str())
    }
}

/// The routes currently in use; empty until the first map arrives.
#[derive(Debug, Default)]
pub struct Router {
    current: RwLock<Option<Arc<Routes>>>,
}

impl Router {
    pub fn current(&self) -> Option<Arc<Routes>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Installs `map` if it is newer than the one in use; returns whether it did.
    pub fn install(&self, map: PartitionMap) -> bool {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|c| c.map.epoch >= map.epoch) {
            return false;
        }
        log::info!(
            "map epoch {} installed: {} partitions, {} storage nodes, {} replicas each",
            map.epoch,
            map.partition_count(),
            map.members.len(),
            map.replication
        );
        crate::metrics::map_epoch(map.epoch);
        *current = Some(Arc::new(Routes::new(map)));
        true
    }
}

/// What following the controller needs.
#[derive(Debug, Clone)]
pub struct Follower {
    pub controller: String,
    pub client: Client,
    pub router: Arc<Router>,
    /// Measured on every answer to the map long poll.
    pub clock: Arc<common::skew::ClockCheck>,
}

/// Registers with the controller and follows its map until `shutdown`.
pub async fn follow(follower: Follower, advertise: String, mut shutdown: Shutdown) {
    let controller = &follower.controller;
    let register_url = format!("http://{controller}{}", proto::FRONTEND_REGISTER_PATH);
    let mut warned = false;
    loop {
        let map_epoch = follower.router.current().map(|r| r.map.epoch);
        let registration = FrontendRegistration { addr: advertise.clone(), map_epoch };
        let session = register_and_watch(&follower, &register_url, &registration, &mut warned);
        let error = tokio::select! {
            e = session => e,
            _ = shutdown.wait() => return,
        };
        if !warned {
            log::warn!(
                "cannot reach the controller at {controller}: {error}; retrying every {RETRY_INTERVAL:?}"
            );
            warned = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY_INTERVAL) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Registers, installs the map the controller has, and follows newer maps until a call fails.
async fn register_and_watch(
    follower: &Follower,
    register_url: &str,
    registration: &FrontendRegistration,
    warned: &mut bool,
) -> RpcError {
    let answer: FrontendRegistered =
        match follower.client.post_json(register_url, registration, REGISTER_TIMEOUT).await {
            Ok(answer) => answer,
            Err(e) => return e,
        };
    if std::mem::take(warned) {
        log::info!("controller {} reachable again", follower.controller);
    }
    match answer.map {
        // Until the clock is measured, a map would let writes through stamped by a clock that
        // may be hours off; the first long poll answers at once with both, the skew first.
        Some(map) if follower.clock.measured() => {
            follower.router.install(map);
        }
        Some(_) => {}
        None => log::info!(
            "registered as frontend {}; waiting for the cluster to form ({} of {} storage nodes)",
            answer.frontend_id,
            answer.registered,
            answer.expected
        ),
    }
    watch(follower, answer.frontend_id).await
}

/// Long-polls for newer maps until a call fails. The first poll answers at once, so the clock
/// is measured as soon as the frontend starts.
async fn watch(follower: &Follower, frontend_id: u64) -> RpcError {
    let mut wait = Duration::ZERO;
    loop {
        let epoch = follower.router.current().map_or(0, |r| r.map.epoch);
        let client = &follower.client;
        match common::mapwatch::poll(client, &follower.controller, epoch, Some(frontend_id), wait).await {
            Ok(polled) => {
                if let Some(skew) = polled.skew_us {
                    follower.clock.observe(skew, "this frontend");
                    crate::metrics::clock_skew(skew);
                }
                if let Some(map) = polled.map {
                    follower.router.install(map);
                }
            }
            Err(e) => return e,
        }
        wait = common::mapwatch::WATCH_WAIT;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::placement::Member;

    fn map(epoch: u64) -> PartitionMap {
        let members = (1..=3).map(|id| Member::up(id, format!("s{id}:7000"))).collect();
        PartitionMap::build(epoch, members, 2).unwrap()
    }

    #[test]
    fn installs_only_newer_maps() {
        let router = Router::default();
        assert!(router.current().is_none());
        assert!(router.install(map(2)));
        assert!(!router.install(map(1)));
        assert!(!router.install(map(2)));
        assert_eq!(router.current().unwrap().map.epoch, 2);
        assert!(router.install(map(3)));
        let routes = router.current().unwrap();
        assert_eq!(routes.record_url(2), "http://s2:7000/v1/record?key=");
        assert_eq!(routes.addr(3), "s3:7000");
    }

    #[tokio::test]
    async fn a_map_looks_up_each_nodes_queues_once() {
        let routes = Routes::new(map(1));
        let lookups = std::sync::atomic::AtomicUsize::new(0);
        let start = || {
            lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let start = || crate::batcher::Batcher::start(Client::new(), "s1:7000", Duration::from_secs(1));
            Arc::new(NodeQueues { reads: start(), writes: start() })
        };
        let first: *const NodeQueues = routes.queues(1, start).unwrap();
        let again: *const NodeQueues = routes.queues(1, start).unwrap();
        assert_eq!(first, again);
        assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(routes.queues(9, start).is_none(), "a node outside the map has no queues");
        assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
