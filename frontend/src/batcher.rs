//! Coalescing of small record operations bound for one storage node.
//!
//! Each storage node gets two queues, one for reads and one for writes (so a read never waits
//! behind a write batch's fsync). A queue's task takes everything waiting, up to
//! `common::batch::MAX_OPS`, sends it as one `POST /v1/batch`, and while that batch is out the
//! next one gathers: one batch in flight per queue. There is no timer: an idle queue sends a
//! lone operation at once, so batching only appears under load, exactly where per-request costs
//! dominate. (Two batches in flight per queue measured worse: smaller batches, and for writes
//! about one more fsync per node for every batch, at the same latency.)

use bytes::Bytes;
use common::batch::{self, Op, Outcome};
use common::http::{Client, RpcError};
use common::proto;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<Result<Outcome, RpcError>>;

/// The queue of one kind of operation for one storage node.
#[derive(Debug, Clone)]
pub struct Batcher {
    queue: mpsc::UnboundedSender<(Op, Reply)>,
}

impl Batcher {
    /// Starts the queue's task, sending to `addr` with `timeout` per batch.
    pub fn start(client: Client, addr: &str, timeout: Duration) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        let url = format!("http://{addr}{}", proto::BATCH_PATH);
        tokio::spawn(run(client, url, timeout, pending));
        Self { queue }
    }

    /// Performs `op` as part of the next batch.
    pub async fn call(&self, op: Op) -> Result<Outcome, RpcError> {
        let (reply, outcome) = oneshot::channel();
        self.queue.send((op, reply)).map_err(|_| RpcError::Transport("batch queue closed".into()))?;
        outcome.await.map_err(|_| RpcError::Transport("batch dropped".into()))?
    }
}

async fn run(
    client: Client,
    url: String,
    timeout: Duration,
    mut pending: mpsc::UnboundedReceiver<(Op, Reply)>,
) {
    while let Some(first) = pending.recv().await {
        let mut batch = vec![first];
        while batch.len() < batch::MAX_OPS {
            match pending.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<Op>, Vec<Reply>) = batch.into_iter().unzip();
        match send(&client, &url, &ops, timeout).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(duplicate(&error)));
                }
            }
        }
    }
}

async fn send(client: &Client, url: &str, ops: &[Op], timeout: Duration) -> Result<Vec<Outcome>, RpcError> {
    let body = batch::encode_ops(ops);
    let make = || Request::post(url).body(Full::new(body.clone())).expect("valid request");
    let (parts, answer) = client.send_collect(make, timeout).await?;
    if parts.status != StatusCode::OK {
        let message = String::from_utf8_lossy(&answer).trim().to_owned();
        return Err(RpcError::Status { status: parts.status, message });
    }
    let outcomes = batch::decode_outcomes(answer).map_err(|e| RpcError::Protocol(e.to_string()))?;
    if outcomes.len() != ops.len() {
        return Err(RpcError::Protocol(format!("{} outcomes for {} operations", outcomes.len(), ops.len())));
    }
    Ok(outcomes)
}

/// The same failure, for every operation of a failed batch.
fn duplicate(error: &RpcError) -> RpcError {
    match error {
        RpcError::Timeout(d) => RpcError::Timeout(*d),
        RpcError::Connect(m) => RpcError::Connect(m.clone()),
        RpcError::Transport(m) => RpcError::Transport(m.clone()),
        RpcError::Status { status, message } => {
            RpcError::Status { status: *status, message: message.clone() }
        }
        RpcError::Protocol(m) => RpcError::Protocol(m.clone()),
    }
}

/// The two queues of one storage node: reads and writes (so a read never waits behind a write
/// batch's durability wait).
#[derive(Debug)]
pub struct NodeQueues {
    pub reads: Batcher,
    pub writes: Batcher,
}

/// The queues of every storage node a frontend talks to, by address: they outlive map changes,
/// so a node keeps its queues (and their connections) across epochs.
#[derive(Debug, Default)]
pub struct Batchers {
    by_addr: std::sync::Mutex<std::collections::HashMap<String, Arc<NodeQueues>>>,
}

impl Batchers {
    /// The queues of `addr`, started on first use.
    pub fn of(&self, client: &Client, addr: &str, timeout: Duration) -> Arc<NodeQueues> {
        let mut by_addr = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        by_addr
            .entry(addr.to_owned())
            .or_insert_with(|| {
                Arc::new(NodeQueues {
                    reads: Batcher::start(client.clone(), addr, timeout),
                    writes: Batcher::start(client.clone(), addr, timeout),
                })
            })
            .clone()
    }
}

/// A key or value small enough to travel in a batch.
pub fn fits(key: &[u8], value: Option<&Bytes>) -> bool {
    key.len() <= 4096 && value.is_none_or(|v| v.len() <= batch::MAX_VALUE_BYTES)
}
