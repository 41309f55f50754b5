//! [`Admin`]: the controller's status and admin endpoints as typed calls.
//!
//! Each call is one HTTP request with a deadline of [`REQUEST_TIMEOUT`]. Failures are sorted
//! for the operator: the controller could not be reached (refused, timed out, connection
//! broken), it refused the change (its own message is kept), or it answered something that is
//! not the expected JSON.

use crate::Error;
use common::http::{Client, RpcError};
use common::proto::{
    AdminOutcome, ClusterStatus, NodeRequest, ReplicationRequest, ADMIN_NODE_ADD_PATH,
    ADMIN_NODE_REMOVE_PATH, ADMIN_REPLICATION_PATH, STATUS_PATH,
};
use std::time::Duration;

/// Deadline of every request to the controller, from sending it to reading the whole answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of one controller's admin API.
#[derive(Clone, Debug)]
pub struct Admin {
    client: Client,
    controller: String,
}

impl Admin {
    /// A client of the controller at `controller` (`host:port`), proving it knows `secret`.
    /// Must be called inside a Tokio runtime.
    pub fn new(controller: impl Into<String>, secret: Option<&common::auth::ClusterSecret>) -> Self {
        Self { client: Client::with_secret(secret), controller: controller.into() }
    }

    /// The controller's `host:port`.
    pub fn controller(&self) -> &str {
        &self.controller
    }

    /// `GET /v1/status`: members, pending nodes, partition health and moves.
    pub async fn status(&self) -> Result<ClusterStatus, Error> {
        let url = self.url(STATUS_PATH);
        log::debug!("GET {url}");
        match self.client.get_json(&url, REQUEST_TIMEOUT).await {
            Ok(Some(status)) => Ok(status),
            Ok(None) => {
                Err(self.error(RpcError::Protocol("304 Not Modified to a status request".to_owned())))
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// `POST /v1/admin/node/add`: admits the node waiting at `addr` (with `--join manual`).
    pub async fn add(&self, addr: &str) -> Result<AdminOutcome, Error> {
        self.post(ADMIN_NODE_ADD_PATH, &NodeRequest { node: addr.to_owned() }).await
    }

    /// `POST /v1/admin/node/remove`: starts moving the partitions of `node` (an id or a
    /// `host:port`) to the other nodes; it leaves the cluster once it holds none.
    pub async fn remove(&self, node: &str) -> Result<AdminOutcome, Error> {
        self.post(ADMIN_NODE_REMOVE_PATH, &NodeRequest { node: node.to_owned() }).await
    }

    /// `POST /v1/admin/replication`: moves every partition to `replication` replicas.
    pub async fn set_replication(&self, replication: usize) -> Result<AdminOutcome, Error> {
        self.post(ADMIN_REPLICATION_PATH, &ReplicationRequest { replication }).await
    }

    async fn post<Req: serde::Serialize>(&self, path: &str, body: &Req) -> Result<AdminOutcome, Error> {
        let url = self.url(path);
        log::debug!("POST {url}");
        self.client.post_json(&url, body, REQUEST_TIMEOUT).await.map_err(|e| self.error(e))
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.controller)
    }

    fn error(&self, e: RpcError) -> Error {
        let controller = self.controller.clone();
        match e {
            RpcError::Status { status, message } => Error::Refused { status: status.as_u16(), message },
            RpcError::Protocol(cause) => Error::Unexpected { controller, cause },
            e @ (RpcError::Timeout(_) | RpcError::Connect(_) | RpcError::Transport(_)) => {
                Error::Unreachable { controller, cause: e.to_string() }
            }
        }
    }
}
