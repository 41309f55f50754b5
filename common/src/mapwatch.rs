//! Following the controller's partition map with a long poll, for frontends and storage nodes.

use crate::http::{Client, RpcError};
use crate::placement::{Epoch, PartitionMap};
use crate::proto;
use std::time::Duration;

/// How long the controller may hold a map long poll open.
pub const WATCH_WAIT: Duration = Duration::from_secs(30);

/// Asks `controller` for a map newer than `newer_than`, waiting up to `wait` for one to appear.
/// `Ok(None)` means none appeared in time.
pub async fn poll(
    client: &Client,
    controller: &str,
    newer_than: Epoch,
    frontend_id: Option<u64>,
    wait: Duration,
) -> Result<Option<PartitionMap>, RpcError> {
    let mut url = format!(
        "http://{controller}{}?newer_than={newer_than}&wait_ms={}",
        proto::MAP_PATH,
        wait.as_millis()
    );
    if let Some(id) = frontend_id {
        url.push_str(&format!("&frontend_id={id}"));
    }
    client.get_json::<PartitionMap>(&url, wait + Duration::from_secs(2)).await
}
