//! Following the controller's partition map with a long poll, for frontends and storage nodes.
//! Every answer also carries the controller's clock ([`proto::NOW`]), so followers learn how far
//! their own clock is from it.

use crate::http::{Client, RpcError};
use crate::placement::{Epoch, PartitionMap};
use crate::proto;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::time::Duration;

/// How long the controller may hold a map long poll open.
pub const WATCH_WAIT: Duration = Duration::from_secs(30);

/// A long poll's answer.
#[derive(Debug)]
pub struct Polled {
    /// A newer map, or `None` if none appeared in time.
    pub map: Option<PartitionMap>,
    /// How far this process's clock was ahead of the controller's when the answer arrived, in
    /// microseconds (negative: behind), if the controller said its time. It overestimates by
    /// the answer's time on the wire.
    pub skew_us: Option<i64>,
}

/// Asks `controller` for a map newer than `newer_than`, waiting up to `wait` for one to appear.
pub async fn poll(
    client: &Client,
    controller: &str,
    newer_than: Epoch,
    frontend_id: Option<u64>,
    wait: Duration,
) -> Result<Polled, RpcError> {
    let mut url = format!(
        "http://{controller}{}?newer_than={newer_than}&wait_ms={}",
        proto::MAP_PATH,
        wait.as_millis()
    );
    if let Some(id) = frontend_id {
        url.push_str(&format!("&frontend_id={id}"));
    }
    let make = || Request::get(url.as_str()).body(Full::new(Bytes::new())).expect("valid request");
    let (parts, body) = client.send_collect(make, wait + Duration::from_secs(2)).await?;
    let received = crate::version::now_micros();
    let controller_now = parts.headers.get(proto::NOW).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let skew_us = controller_now.map(|now| received as i64 - now as i64);
    let map = match parts.status {
        StatusCode::NOT_MODIFIED => None,
        status if status.is_success() => Some(
            serde_json::from_slice(&body)
                .map_err(|e| RpcError::Protocol(format!("invalid map JSON: {e}")))?,
        ),
        status => {
            let message = String::from_utf8_lossy(&body).trim().to_owned();
            return Err(RpcError::Status { status, message });
        }
    };
    Ok(Polled { map, skew_us })
}
