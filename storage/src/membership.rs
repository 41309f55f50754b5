//! The node's link to the controller: registration repeated as a heartbeat, and the map.
//!
//! The first successful registration gives the node its id (saved before use); every later one
//! reports the id back, so a restarted controller relearns the same membership. Each answer
//! carries the node's state and, for an up node, a read lease counted from when the heartbeat
//! was sent. An answer saying "catching up" starts the catch-up (see `repair`).

use crate::Node;
use common::http::RpcError;
use common::placement::{Epoch, PartitionMap};
use common::proto::{self, StorageRegistered, StorageRegistration};
use common::shutdown::Shutdown;
use http::StatusCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a node heartbeats; several heartbeats fit in one lease.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);
/// How long one registration call may take.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(1);

/// Registers with `controller` and keeps heartbeating until `shutdown`.
pub async fn run(controller: String, advertise: String, node: Arc<Node>, mut shutdown: Shutdown) {
    let client = node.client.clone();
    let url = format!("http://{controller}{}", proto::STORAGE_REGISTER_PATH);
    let mut reachable = None;
    // The epoch of the controller's map, as its last answer said (`None`: not heard yet).
    let mut controller_epoch = None;
    loop {
        let registration = registration(&node, &advertise, controller_epoch);
        let known_id = registration.node_id;
        let sent_at = Instant::now();
        match client.post_json::<_, StorageRegistered>(&url, &registration, REGISTER_TIMEOUT).await {
            Ok(answer) => {
                controller_epoch = Some(answer.epoch.unwrap_or(0));
                if known_id != Some(answer.node_id) {
                    // Remember the id before using it, so a crash cannot make us a stranger.
                    if let Err(e) = node.identity.save(Some(answer.node_id)) {
                        log::error!("cannot save node id {}: {e}; retrying", answer.node_id);
                        reachable = None;
                        tokio::select! {
                            _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => continue,
                            _ = shutdown.wait() => return,
                        }
                    }
                    log::info!(
                        "registered with controller {controller} as node {} ({} of {} storage nodes)",
                        answer.node_id,
                        answer.registered,
                        answer.expected
                    );
                    *node.node_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(answer.node_id);
                } else if reachable == Some(false) {
                    log::info!("controller {controller} reachable again");
                }
                reachable = Some(true);
                let lease = Duration::from_millis(answer.lease_ms);
                if let Some(joined) = node.heard(answer.state, answer.joined, lease, sent_at) {
                    tokio::spawn(crate::repair::catch_up(
                        node.clone(),
                        client.clone(),
                        controller.clone(),
                        joined,
                    ));
                }
            }
            Err(RpcError::Status { status, message })
                if [
                    StatusCode::GONE,
                    StatusCode::CONFLICT,
                    StatusCode::FORBIDDEN,
                    StatusCode::UNAUTHORIZED,
                ]
                .contains(&status) =>
            {
                // Removed, pending approval, an identity the cluster does not know or that
                // this node cannot prove, or the wrong cluster secret: the operator has to
                // act; keep asking, say it once.
                if reachable != Some(false) {
                    log::error!("the controller refuses this node: {message}");
                }
                if status == StatusCode::GONE {
                    // Drained or re-replicated: what it holds lives on the other nodes now.
                    node.removed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                reachable = Some(false);
            }
            Err(e) => {
                controller_epoch = None;
                if reachable != Some(false) {
                    log::warn!("cannot register with controller {controller}: {e}; retrying every {HEARTBEAT_INTERVAL:?}");
                }
                reachable = Some(false);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
            _ = node.heartbeat_now.notified() => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// This node's registration: who it is, what it installed, how its moves go. Its map goes
/// along when the controller's is older (or unknown): a controller that lost its state adopts
/// the newest map offered.
fn registration(node: &Node, advertise: &str, controller_epoch: Option<Epoch>) -> StorageRegistration {
    let (map, joined) = {
        let view = node.view();
        (view.map.clone(), view.joined)
    };
    let map_epoch = map.as_ref().map(|m| m.epoch);
    let offer = map.filter(|m| controller_epoch.is_none_or(|e| e < m.epoch));
    StorageRegistration {
        addr: advertise.to_owned(),
        node_id: node.id(),
        token: Some(node.identity.token().to_owned()),
        zone: node.zone.clone(),
        map_epoch,
        map: offer.map(|m| PartitionMap::clone(&m)),
        transfers: node.moves.transfers(),
        synced: node.moves.synced(),
        joined,
        disk: node.disk.status(),
    }
}

/// Follows the controller's map until `shutdown`.
pub async fn follow_map(controller: String, node: Arc<Node>, mut shutdown: Shutdown) {
    let client = node.client.clone();
    loop {
        let epoch = node.view().map.as_ref().map_or(0, |m| m.epoch);
        let poll = common::mapwatch::poll(&client, &controller, epoch, None, common::mapwatch::WATCH_WAIT);
        let outcome = tokio::select! {
            outcome = poll => outcome,
            _ = shutdown.wait() => return,
        };
        match outcome {
            Ok(polled) => {
                if let Some(skew) = polled.skew_us {
                    node.clock.observe(skew, "this storage node");
                    crate::metrics::clock_skew(skew);
                }
                if let Some(map) = polled.map {
                    node.install_map(map);
                }
            }
            Err(_) => {
                // The heartbeat loop reports an unreachable controller; just retry.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.wait() => return,
                }
            }
        }
    }
}
