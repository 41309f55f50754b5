//! Waiting for a key to change, for the frontends' watches (`GET /v1/record?newer_than=T&
//! wait_ms=W`): a watcher registers interest in one key and is woken when a record of that key
//! is applied, by any path (client writes, batches, repair, catch-up, moves).
//!
//! Costs: nothing per write while nobody watches (one atomic load), one hash lookup per write
//! otherwise; one entry per watched key, shared by its watchers and removed with the last one,
//! so memory is bounded by the number of open watches. A woken watcher reads the record again
//! itself, so a wakeup is only a hint and a missed one cannot happen: a watcher registers
//! before it reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A watched key's wakeup and how many watch it.
type Watched = (Arc<Notify>, usize);

/// The keys being watched.
#[derive(Debug, Default)]
pub struct Watchers {
    watching: AtomicUsize,
    keys: Mutex<HashMap<Vec<u8>, Watched>>,
}

impl Watchers {
    /// Wakes every watcher of `key` (called after a record of `key` was applied).
    pub fn changed(&self, key: &[u8]) {
        if self.watching.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some((notify, _)) = self.keys.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            notify.notify_waiters();
        }
    }

    /// Starts watching `key` until the returned guard is dropped.
    pub fn watch(self: &Arc<Self>, key: &[u8]) -> Watch {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let entry = keys.entry(key.to_vec()).or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        self.watching.fetch_add(1, Ordering::AcqRel);
        Watch { watchers: self.clone(), key: key.to_vec(), notify: entry.0.clone() }
    }

    /// Keys watched now.
    pub fn keys(&self) -> usize {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// One watcher's registration: its key's [`Notify`].
#[derive(Debug)]
pub struct Watch {
    watchers: Arc<Watchers>,
    key: Vec<u8>,
    notify: Arc<Notify>,
}

impl Watch {
    /// Woken by the next change of the key. Create (and `enable`) it before reading the record,
    /// so a change between the read and the wait still wakes it.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut keys = self.watchers.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = keys.get_mut(&self.key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                keys.remove(&self.key);
            }
        }
        self.watchers.watching.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_wakes_the_watchers_of_its_key_only_and_entries_go_with_them() {
        let watchers = Arc::new(Watchers::default());
        let (a1, a2, b) = (watchers.watch(b"a"), watchers.watch(b"a"), watchers.watch(b"b"));
        assert_eq!(watchers.keys(), 2);
        {
            let (w1, w2, wb) = (a1.notify().notified(), a2.notify().notified(), b.notify().notified());
            tokio::pin!(w1, w2, wb);
            for w in [w1.as_mut(), w2.as_mut(), wb.as_mut()] {
                w.enable();
            }
            watchers.changed(b"a");
            watchers.changed(b"unwatched");
            w1.await;
            w2.await;
            let woken = tokio::time::timeout(std::time::Duration::from_millis(20), wb).await;
            assert!(woken.is_err(), "b did not change");
        }
        drop((a1, a2));
        assert_eq!(watchers.keys(), 1);
        drop(b);
        assert_eq!((watchers.keys(), watchers.watching.load(Ordering::Acquire)), (0, 0));
    }
}
