//! Registration with the controller, repeated as a heartbeat.
//!
//! The first successful registration gives the node its id; every later one reports the id back,
//! so a controller that restarted without its state learns the same membership again.

use crate::Node;
use common::http::Client;
use common::proto::{self, StorageRegistered, StorageRegistration};
use common::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;

/// How often a node re-registers with the controller.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How long one registration call may take.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// Registers with `controller` and keeps heartbeating until `shutdown`.
pub async fn run(controller: String, advertise: String, node: Arc<Node>, mut shutdown: Shutdown) {
    let client = Client::new();
    let url = format!("http://{controller}{}", proto::STORAGE_REGISTER_PATH);
    let mut reachable = None;
    loop {
        let known_id = *node.node_id.lock().unwrap_or_else(|p| p.into_inner());
        let registration = StorageRegistration { addr: advertise.clone(), node_id: known_id };
        match client.post_json::<_, StorageRegistered>(&url, &registration, REGISTER_TIMEOUT).await {
            Ok(answer) => {
                if known_id != Some(answer.node_id) {
                    // Remember the id before using it, so a crash cannot make us a stranger.
                    if let Err(e) = node.identity.save(answer.node_id) {
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
            }
            Err(e) => {
                if reachable != Some(false) {
                    log::warn!("cannot register with controller {controller}: {e}; retrying every {HEARTBEAT_INTERVAL:?}");
                }
                reachable = Some(false);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
            _ = shutdown.wait() => return,
        }
    }
}
