//! When a write counts as durable: group commit of fsyncs.
//!
//! With [`SyncPolicy::Always`] (the default) a write is acknowledged only after an fsync that
//! started after the write reached the OS. One syncer thread runs the fsyncs back to back; every
//! writer that arrived while one fsync ran is covered by the next, so N concurrent writers share
//! about one fsync instead of paying N. With [`SyncPolicy::Interval`] writes are acknowledged
//! once they reach the OS (a killed process loses nothing) and the syncer fsyncs on a timer: a
//! machine crash or power loss can lose the acknowledged writes of the last interval.
//!
//! A failed fsync leaves the file in an unknown state, so it is final: every later write fails
//! with the error, and the node keeps serving reads.

use crate::store::Store;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How writes are made durable before they are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync before acknowledging (group commit).
    Always,
    /// Acknowledge on write to the OS; fsync at least this often.
    Interval(Duration),
}

impl FromStr for SyncPolicy {
    type Err = String;

    /// `always`, or an interval in humantime's syntax (`100ms`, `1s`, `1s 500ms`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "always" {
            return Ok(SyncPolicy::Always);
        }
        match humantime::parse_duration(s) {
            Ok(interval) if interval.is_zero() => Err("the sync interval must be positive".into()),
            Ok(interval) => Ok(SyncPolicy::Interval(interval)),
            Err(e) => Err(format!("`{s}` is neither `always` nor an interval such as `100ms` or `1s` ({e})")),
        }
    }
}

/// The sync failure that made the node refuse writes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("data could not be made durable (fsync failed: {0}); this node refuses writes until restarted")]
pub struct SyncFailed(Arc<str>);

#[derive(Debug, Clone, Default)]
struct Progress {
    synced: u64,
    failure: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct Pending {
    requested: u64,
    stop: bool,
    /// The syncer is waiting for work and must be woken; while it is busy it picks up new
    /// tickets by itself, so writers need not wake it (a wakeup per write cost more CPU than
    /// the write).
    idle: bool,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

/// The syncer of one store; dropping it stops the thread after a last fsync.
#[derive(Debug)]
pub struct Durability {
    policy: SyncPolicy,
    shared: Arc<Shared>,
    progress: watch::Receiver<Progress>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Durability {
    /// Starts the syncer thread for `store`.
    pub fn start(store: Arc<Store>, policy: SyncPolicy) -> Self {
        let shared = Arc::new(Shared { pending: Mutex::default(), wake: Condvar::new() });
        let (report, progress) = watch::channel(Progress::default());
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("syncer".into())
                .spawn(move || sync_loop(&store, policy, &shared, &report))
                .expect("spawn syncer thread")
        };
        Self { policy, shared, progress, thread: Some(thread) }
    }

    pub fn policy(&self) -> SyncPolicy {
        self.policy
    }

    /// Waits until every write applied before this call is durable under the policy.
    pub async fn wait_durable(&self) -> Result<(), SyncFailed> {
        let (ticket, wake) = {
            let mut pending = self.shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.requested += 1;
            (pending.requested, std::mem::take(&mut pending.idle))
        };
        if wake {
            self.shared.wake.notify_one();
        }
        let mut progress = self.progress.clone();
        if self.policy == SyncPolicy::Always {
            let _ = progress.wait_for(|p| p.synced >= ticket || p.failure.is_some()).await;
        }
        let failure = progress.borrow().failure.clone();
        failure.map_or(Ok(()), |error| Err(SyncFailed(error)))
    }

    /// The failure that stopped writes, if any.
    pub fn failure(&self) -> Option<SyncFailed> {
        self.progress.borrow().failure.clone().map(SyncFailed)
    }
}

impl Drop for Durability {
    fn drop(&mut self) {
        self.shared.pending.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sync_loop(store: &Store, policy: SyncPolicy, shared: &Shared, report: &watch::Sender<Progress>) {
    let mut synced = 0u64;
    loop {
        let (target, stop) = {
            let mut pending = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            match policy {
                SyncPolicy::Always => {
                    while pending.requested == synced && !pending.stop {
                        pending.idle = true;
                        pending = shared.wake.wait(pending).unwrap_or_else(|p| p.into_inner());
                    }
                    pending.idle = false;
                }
                SyncPolicy::Interval(every) => {
                    if !pending.stop {
                        pending =
                            shared.wake.wait_timeout(pending, every).unwrap_or_else(|p| p.into_inner()).0;
                    }
                }
            }
            (pending.requested, pending.stop)
        };
        if target > synced {
            let started = std::time::Instant::now();
            let result = store.sync();
            crate::metrics::fsync(started.elapsed(), target - synced);
            if let Err(e) = result {
                let error: Arc<str> = Arc::from(common::http::error_chain(&e));
                log::error!("fsync failed, refusing further writes: {error}");
                report.send_modify(|p| p.failure = Some(error));
                return;
            }
            synced = target;
            report.send_modify(|p| p.synced = synced);
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use common::version::Record;

    #[test]
    fn parses_policies() {
        assert_eq!("always".parse(), Ok(SyncPolicy::Always));
        assert_eq!("100ms".parse(), Ok(SyncPolicy::Interval(Duration::from_millis(100))));
        assert_eq!("2s".parse(), Ok(SyncPolicy::Interval(Duration::from_secs(2))));
        assert_eq!("1s 500ms".parse(), Ok(SyncPolicy::Interval(Duration::from_millis(1500))));
        assert!("0ms".parse::<SyncPolicy>().unwrap_err().contains("positive"));
        assert!("never".parse::<SyncPolicy>().is_err());
        assert!("fastms".parse::<SyncPolicy>().is_err());
        assert!("100".parse::<SyncPolicy>().is_err(), "a unit is required");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_fsyncs_and_all_become_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 8 << 20, 4 << 20).unwrap());
        let durability = Arc::new(Durability::start(store.clone(), SyncPolicy::Always));
        let writers = (0..32).map(|w| {
            let (store, durability) = (store.clone(), durability.clone());
            tokio::spawn(async move {
                for i in 0..20u64 {
                    let key = format!("w{w}-{i}");
                    store.apply(key.as_bytes(), &Record::value(i + 1, Bytes::from_static(b"v"))).unwrap();
                    durability.wait_durable().await.unwrap();
                }
            })
        });
        for writer in futures_util::future::join_all(writers).await {
            writer.unwrap();
        }
        let synced = durability.progress.borrow().synced;
        assert_eq!(synced, 640, "every ticket covered");
        assert!(durability.failure().is_none());
    }

    #[tokio::test]
    async fn interval_policy_acknowledges_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 8 << 20, 4 << 20).unwrap());
        let durability = Durability::start(store.clone(), SyncPolicy::Interval(Duration::from_secs(3600)));
        store.apply(b"k", &Record::tombstone(1)).unwrap();
        durability.wait_durable().await.unwrap();
        assert_eq!(durability.progress.borrow().synced, 0, "nothing synced yet, and no wait");
        drop(durability); // a last fsync on the way out
        drop(store);
        let reopened = Store::open(dir.path(), 8 << 20, 4 << 20).unwrap();
        assert_eq!(reopened.get(b"k").unwrap(), Some(Record::tombstone(1)));
    }
}
