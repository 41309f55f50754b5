//! Watching a key (`GET /kv/<key>?wait=30s&newer_than=V`): the request is held until the key
//! has a version newer than `V`, then answered like a GET, or answered 304 when the wait ends.
//!
//! The frontend holds no state beyond the open request: it asks one replica that may serve the
//! key's reads to hold the request itself (`GET /v1/record` with `newer_than` and `wait_ms`;
//! the storage node is woken by the write, it does not poll), and when that replica fails or
//! stops serving the key (it died, was fenced, the partition moved) it asks the next one for
//! the time left. A watch may skip versions: it answers with the version the replica holds
//! when it looks, which may be newer than the first change after `V`. Memory per watch: one
//! task and one waiter entry on one storage node.

use crate::api::ApiError;
use crate::replica::{Found, ReplicaFailure};
use crate::Frontend;
use common::placement::NodeId;
use std::time::Duration;
use tokio::time::Instant;

/// Longest wait a watch may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// Pause before asking again when no replica answered, so a cluster without a serving replica
/// is not asked in a tight loop.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Waits up to `wait` for `key` to have a version newer than `newer_than`: `Some` with what a
/// replica then holds (a value, or a tombstone if the key was deleted), `None` if the wait ended
/// first. 503 only if no replica could be asked until the end.
pub async fn watch(
    frontend: &Frontend,
    key: &[u8],
    newer_than: u64,
    wait: Duration,
) -> Result<Option<Found>, ApiError> {
    let deadline = Instant::now() + wait.min(MAX_WAIT);
    let mut failures: Vec<ReplicaFailure> = Vec::new();
    loop {
        let routes = frontend.router.current().ok_or(ApiError::NoMap)?;
        let partition = common::partition::of(key, routes.map.digits);
        let readable: Vec<NodeId> = routes.map.read_set(partition).collect();
        for node in frontend.read_order(partition, readable) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match frontend.replicas.watch_one(&routes, node, key, newer_than, left).await {
                Ok(found) => return Ok(found),
                Err(error) => {
                    let failure = ReplicaFailure { node, addr: routes.addr(node).to_owned(), error };
                    log::debug!("watch on a replica ended, watching on the next: {failure}");
                    failures.push(failure);
                }
            }
        }
        frontend.suspect(&failures);
        if Instant::now() + RETRY_PAUSE >= deadline {
            let tried = failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            return Err(ApiError::Unavailable(format!(
                "no replica of partition {partition} could hold the watch: {tried}"
            )));
        }
        failures.clear();
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Parses `wait=` (such as `30s` or `500ms`): at most [`MAX_WAIT`].
pub fn parse_wait(raw: &[u8]) -> Result<Duration, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "`wait` must be a duration such as 30s or 500ms, at most {}s",
            MAX_WAIT.as_secs()
        ))
    };
    let text = std::str::from_utf8(raw).map_err(|_| bad())?;
    let wait = humantime::parse_duration(text).map_err(|_| bad())?;
    (wait <= MAX_WAIT).then_some(wait).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_durations_within_the_bound() {
        assert_eq!(parse_wait(b"30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_wait(b"250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_wait(b"5m").unwrap(), MAX_WAIT);
        for bad in [&b"6m"[..], b"30", b"soon", b"\xff"] {
            assert!(parse_wait(bad).is_err(), "{bad:?}");
        }
    }
}
