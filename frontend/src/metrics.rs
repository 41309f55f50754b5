//! The frontend's metrics (see `common::telemetry` for the conventions): what clients asked
//! and got, how the replicas answered, how full the batches were, fences, the map epoch and the
//! clock. Requests are counted in `api::answer`, which both the frontend's own HTTP server and
//! hyper's call, so every request is counted once whichever server parsed it.

use common::http::RpcError;
use common::placement::NodeId;
use http::StatusCode;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

const REQUESTS: &str = "velourfog_frontend_requests_total";
const REQUEST_SECONDS: &str = "velourfog_frontend_request_duration_seconds";
const REPLICA_CALLS: &str = "velourfog_frontend_replica_calls_total";
const BATCH_OPERATIONS: &str = "velourfog_frontend_batch_operations";
const BATCH_SECONDS: &str = "velourfog_frontend_batch_duration_seconds";
const FENCES: &str = "velourfog_frontend_fences_total";
const RESTAMPS: &str = "velourfog_frontend_restamps_total";
const MAP_EPOCH: &str = "velourfog_frontend_map_epoch";
const CLOCK_SKEW: &str = "velourfog_frontend_clock_skew_seconds";

/// Gives every metric its help text and unit (called once at start).
pub fn describe() {
    describe_counter!(REQUESTS, Unit::Count, "Client requests answered, by operation and status code.");
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Time from a request's arrival to its answer's head, by operation."
    );
    describe_counter!(
        REPLICA_CALLS,
        Unit::Count,
        "Reads and writes sent to storage nodes, by node, operation and outcome."
    );
    describe_histogram!(
        BATCH_OPERATIONS,
        Unit::Count,
        "Operations per batch sent to a storage node, by kind."
    );
    describe_histogram!(
        BATCH_SECONDS,
        Unit::Seconds,
        "Time from sending a batch to a storage node to its decoded answer (or failure), by kind."
    );
    describe_counter!(
        FENCES,
        Unit::Count,
        "Replicas this frontend asked the controller to fence, by result."
    );
    describe_counter!(RESTAMPS, Unit::Count, "Writes stamped again above a newer write a replica held.");
    describe_gauge!(MAP_EPOCH, "Epoch of the partition map this frontend routes by.");
    describe_gauge!(CLOCK_SKEW, Unit::Seconds, "How far this frontend's clock is ahead of the controller's.");
}

/// The operation a public request is: the same label for both APIs (`/get/` and `GET /kv/K`
/// are `get`), and `watch` and `list` for the REST API's own.
pub fn operation(method: &http::Method, path: &str, query: Option<&str>) -> &'static str {
    match path {
        "/get/" | "/get" => "get",
        "/set/" | "/set" => "set",
        "/delete/" | "/delete" => "delete",
        "/health" => "health",
        "/metrics" => "metrics",
        "/kv/" | "/kv" => "list",
        path if path.starts_with("/kv/") => match *method {
            http::Method::GET if query.is_some_and(|q| q.split('&').any(|p| p.starts_with("wait="))) => {
                "watch"
            }
            http::Method::GET => "get",
            http::Method::HEAD => "head",
            http::Method::PUT => "set",
            http::Method::DELETE => "delete",
            _ => "other",
        },
        _ => "other",
    }
}

/// One answered client request.
pub fn request(op: &'static str, status: StatusCode, elapsed: Duration) {
    counter!(REQUESTS, "op" => op, "status" => status_label(status)).increment(1);
    histogram!(REQUEST_SECONDS, "op" => op).record(elapsed.as_secs_f64());
}

/// The label of a status code the API answers with (without allocating per request).
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        304 => "304",
        400 => "400",
        404 => "404",
        405 => "405",
        413 => "413",
        414 => "414",
        431 => "431",
        500 => "500",
        501 => "501",
        503 => "503",
        507 => "507",
        code if (400..500).contains(&code) => "4xx",
        code if code >= 500 => "5xx",
        _ => "other",
    }
}

/// One call to storage node `node`: `op` is `read` or `write`; `result` its outcome.
pub fn replica_call(node: NodeId, op: &'static str, result: Result<&'static str, &RpcError>) {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(RpcError::Timeout(_)) => "timeout",
        Err(RpcError::Connect(_)) => "connect_failed",
        Err(RpcError::Transport(_)) => "transport_failed",
        Err(RpcError::Protocol(_)) => "protocol_error",
        Err(RpcError::Status { status, .. }) => match status.as_u16() {
            409 => "stale_epoch",
            422 => "clock_refused",
            503 => "not_serving",
            507 => "disk_full",
            _ => "error",
        },
    };
    counter!(REPLICA_CALLS, "node" => node_label(node), "op" => op, "outcome" => outcome).increment(1);
}

/// One batch of `ops` operations of `kind` (`read` or `write`), answered (or failed) after
/// `elapsed`.
pub fn batch(kind: &'static str, ops: usize, elapsed: Duration) {
    histogram!(BATCH_OPERATIONS, "kind" => kind).record(ops as f64);
    histogram!(BATCH_SECONDS, "kind" => kind).record(elapsed.as_secs_f64());
}

pub fn fence(fenced: bool) {
    counter!(FENCES, "result" => if fenced { "fenced" } else { "failed" }).increment(1);
}

pub fn restamp() {
    counter!(RESTAMPS).increment(1);
}

pub fn map_epoch(epoch: u64) {
    gauge!(MAP_EPOCH).set(epoch as f64);
}

pub fn clock_skew(skew_us: i64) {
    gauge!(CLOCK_SKEW).set(skew_us as f64 / 1e6);
}

/// The `node` label of a node id, made once per node: the labels of the few nodes a cluster
/// has ever had are kept for the process's life, so a call allocates nothing.
fn node_label(node: NodeId) -> &'static str {
    static LABELS: RwLock<Option<HashMap<NodeId, &'static str>>> = RwLock::new(None);
    if let Some(label) = LABELS.read().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|m| m.get(&node))
    {
        return label;
    }
    let mut labels = LABELS.write().unwrap_or_else(|p| p.into_inner());
    labels
        .get_or_insert_with(HashMap::new)
        .entry(node)
        .or_insert_with(|| Box::leak(node.to_string().into_boxed_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_few_and_fixed() {
        let get = |path| operation(&http::Method::GET, path, None);
        assert_eq!(
            ["/get/", "/set", "/delete/", "/health", "/metrics", "/v1/record", "/kv/", "/kv/k"].map(get),
            ["get", "set", "delete", "health", "metrics", "other", "list", "get"]
        );
        let rest = [
            (http::Method::PUT, None, "set"),
            (http::Method::DELETE, None, "delete"),
            (http::Method::HEAD, None, "head"),
            (http::Method::GET, Some("newer_than=1&wait=5s"), "watch"),
            (http::Method::POST, None, "other"),
        ];
        for (method, query, op) in rest {
            assert_eq!(operation(&method, "/kv/a/b", query), op);
        }
        let statuses = [200, 404, 418, 503, 502, 302].map(|s| status_label(StatusCode::from_u16(s).unwrap()));
        assert_eq!(statuses, ["200", "404", "4xx", "503", "5xx", "other"]);
        assert_eq!(node_label(7), "7");
        assert!(std::ptr::eq(node_label(7), node_label(7)), "made once");
    }
}
