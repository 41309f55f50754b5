//! Coalescing of small record operations bound for one storage node.
//!
//! Each storage node gets two queues, one for reads and one for writes (so a read never waits
//! behind a write batch's fsync). A queue's task takes everything waiting, up to
//! `common::batch::MAX_OPS`, sends it as one `POST /v1/batch`, and while that batch is out the
//! next one gathers: one batch in flight per queue. Before it takes what is waiting, the task
//! lets the runtime's other ready tasks run, so that callers woken together join the same batch.
//! There is no timer: an idle queue sends a lone operation at once, so batching only appears
//! under load, exactly where per-request costs dominate. (Two batches in flight per queue
//! measured worse: smaller batches, and for writes about one more fsync per node for every
//! batch, at the same latency.)

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
        // Let the other ready tasks run first. The runtime runs a task woken by another right
        // after it (tokio's LIFO slot), so without this a burst of requests read from many
        // connections would send its first operation alone and the rest in the next batch, one
        // round trip later; with it they enqueue first and all go now.
        tokio::task::yield_now().await;
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
    let kind = if matches!(ops.first(), Some(Op::Put { .. })) { "write" } else { "read" };
    let started = std::time::Instant::now();
    let result = exchange(client, url, ops, timeout).await;
    crate::metrics::batch(kind, ops.len(), started.elapsed());
    result
}

/// One batch request and its decoded answer.
async fn exchange(
    client: &Client,
    url: &str,
    ops: &[Op],
    timeout: Duration,
) -> Result<Vec<Outcome>, RpcError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use common::version::Record;
    use std::sync::Mutex;
    use tokio::sync::Notify;

    /// A storage node that answers each read with the key as the value, records the size of
    /// every batch and how many were open at once, and holds its first answer until `release`.
    #[derive(Default)]
    struct FakeNode {
        batch_sizes: Mutex<Vec<usize>>,
        open: std::sync::atomic::AtomicUsize,
        most_open: std::sync::atomic::AtomicUsize,
        first_arrived: Notify,
        release: Notify,
    }

    /// Serves `node` on a free port until the returned trigger is dropped.
    async fn start_fake_node(node: Arc<FakeNode>) -> (String, common::shutdown::Trigger) {
        use std::sync::atomic::Ordering::SeqCst;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (trigger, shutdown) = common::shutdown::channel();
        let handler = move |req: http::Request<hyper::body::Incoming>| {
            let node = node.clone();
            async move {
                let open = node.open.fetch_add(1, SeqCst) + 1;
                node.most_open.fetch_max(open, SeqCst);
                let body = common::http::read_body(req.into_body(), 1 << 20).await.unwrap();
                let ops = batch::decode_ops(body).unwrap();
                let first = {
                    let mut sizes = node.batch_sizes.lock().unwrap();
                    sizes.push(ops.len());
                    sizes.len() == 1
                };
                if first {
                    node.first_arrived.notify_one();
                    node.release.notified().await;
                }
                let outcomes: Vec<Outcome> = ops
                    .iter()
                    .map(|op| match op {
                        Op::Get { key, .. } => Outcome::Found(Record::value(1, key.clone())),
                        Op::Put { .. } => Outcome::Stored,
                    })
                    .collect();
                node.open.fetch_sub(1, SeqCst);
                http::Response::new(common::http::full(batch::encode_outcomes(&outcomes)))
            }
        };
        tokio::spawn(common::http::serve(listener, handler, shutdown));
        (addr, trigger)
    }

    fn read(key: &str) -> Op {
        Op::Get { key: Bytes::from(key.to_owned()), leased: true }
    }

    #[tokio::test]
    async fn operations_arriving_while_a_batch_is_out_travel_together_in_the_next() {
        let node = Arc::new(FakeNode::default());
        let (addr, _serving) = start_fake_node(node.clone()).await;
        let batcher = Batcher::start(Client::new(), &addr, Duration::from_secs(5));

        let lone = tokio::spawn({
            let batcher = batcher.clone();
            async move { batcher.call(read("k0")).await }
        });
        node.first_arrived.notified().await;
        let queued: Vec<_> = (1..=5)
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.call(read(&format!("k{i}"))).await })
            })
            .collect();
        // Let the five callers enqueue while the first batch is still unanswered.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*node.batch_sizes.lock().unwrap(), [1], "nothing more is sent while a batch is out");
        node.release.notify_one();

        let found = |i: usize, outcome: Result<Outcome, RpcError>| match outcome.unwrap() {
            Outcome::Found(record) => assert_eq!(record.value.as_deref(), Some(format!("k{i}").as_bytes())),
            other => panic!("k{i}: {other:?}"),
        };
        found(0, lone.await.unwrap());
        for (i, caller) in queued.into_iter().enumerate() {
            found(i + 1, caller.await.unwrap());
        }
        assert_eq!(*node.batch_sizes.lock().unwrap(), [1, 5], "the waiting five went as one batch");
        assert_eq!(node.most_open.load(std::sync::atomic::Ordering::SeqCst), 1, "one batch in flight");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn operations_enqueued_in_one_scheduler_turn_travel_together() {
        let node = Arc::new(FakeNode::default());
        node.release.notify_one(); // the first batch is answered at once
        let (addr, _serving) = start_fake_node(node.clone()).await;
        let batcher = Batcher::start(Client::new(), &addr, Duration::from_secs(5));
        // Give the queue's task time to start waiting for work.
        tokio::time::sleep(Duration::from_millis(20)).await;
        // One task on the worker starts five callers, as a burst of requests read from five
        // connections would: each enqueues an operation and waits.
        let callers = tokio::spawn(async move {
            (0..5)
                .map(|i| {
                    let batcher = batcher.clone();
                    tokio::spawn(async move { batcher.call(read(&format!("k{i}"))).await })
                })
                .collect::<Vec<_>>()
        });
        for caller in callers.await.unwrap() {
            assert!(matches!(caller.await.unwrap(), Ok(Outcome::Found(_))));
        }
        assert_eq!(*node.batch_sizes.lock().unwrap(), [5], "one batch, not the first caller alone");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_operation_in_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener); // nothing listens there any more
        let batcher = Batcher::start(Client::new(), &addr, Duration::from_secs(5));
        let calls = (0..3).map(|i| batcher.call(read(&format!("k{i}"))));
        for outcome in futures_util::future::join_all(calls).await {
            assert!(matches!(outcome, Err(RpcError::Connect(_))), "{outcome:?}");
        }
    }
}
