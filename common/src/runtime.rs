//! The Tokio runtime a server process runs on, sized by its `--worker-threads` option.
//!
//! Without the option a process gets one worker thread per core (Tokio's default, which
//! `TOKIO_WORKER_THREADS` overrides). That is right for a process with a machine to itself. When
//! several Velour Fog processes share the cores (`./runlocal.sh`, or a frontend beside storage
//! nodes), fewer workers per process is faster: every request already hops from process to
//! process, and spare workers in each add handoffs of their own (a futex wake and a context
//! switch for each task moved between them). docs/performance.md has the measurements.
//!
//! The runtime is always multi-threaded, even with one worker, so that
//! `tokio::task::block_in_place` (used around large blocking writes) keeps working.

use std::io;
use tokio::runtime::{Builder, Runtime};

/// Builds the process's runtime: `worker_threads` workers, or Tokio's default if `None`.
pub fn build(worker_threads: Option<u16>) -> io::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    builder.enable_all();
    if let Some(workers) = worker_threads {
        builder.worker_threads(usize::from(workers.max(1)));
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_has_the_workers_asked_for() {
        assert_eq!(build(Some(1)).unwrap().metrics().num_workers(), 1);
        assert_eq!(build(Some(3)).unwrap().metrics().num_workers(), 3);
        assert!(build(None).unwrap().metrics().num_workers() >= 1);
    }

    #[test]
    fn one_worker_hands_its_tasks_on_while_a_task_blocks() {
        let runtime = build(Some(1)).unwrap();
        let received = runtime.block_on(async {
            let (tx, rx) = std::sync::mpsc::channel();
            // Blocks the only worker until the other task has run: that task can run only if
            // block_in_place handed the worker's tasks to another thread.
            let blocking = tokio::spawn(async move {
                tokio::task::block_in_place(|| rx.recv_timeout(std::time::Duration::from_secs(5)))
            });
            let sender = tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                tx.send(42).unwrap();
            });
            sender.await.unwrap();
            blocking.await.unwrap()
        });
        assert_eq!(received, Ok(42));
    }
}
