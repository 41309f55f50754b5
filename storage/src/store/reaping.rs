//! The store's side of reaping tombstones: an index of the tombstones it holds, oldest first,
//! and removing one only while it is exactly the record held.
//!
//! The index is a keyspace of entries keyed `timestamp (8 bytes, big-endian) ++ XXH3-128 of
//! the stored key` (so an entry's key stays short whatever the record's key: a stored key may be
//! as long as the engine allows) with the stored key as value, written in the same journal
//! write as the tombstone, so finding the tombstones
//! old enough to reap costs what they are, not what the store holds. An entry is not removed
//! when its tombstone is superseded; a scan that reaches it finds it stale and removes it then.
//! When (and whether) a tombstone may go is decided elsewhere (`crate::reaper`); this module
//! only guarantees that [`Store::reap`] removes nothing but the exact tombstone it is given,
//! under the same per-key lock as every write, so a write racing it is never lost.

use super::{decode_stored, partition, stripe_index, Store, StoreError};
use bytes::Bytes;
use std::ops::Bound;

/// What a store holds for a key.
enum Held {
    Nothing,
    Tombstone(u64),
    Value,
}

/// The index's marker that every tombstone of the store is in it (a prefix of every entry
/// stamped 0, so it sorts before every entry). Data directories from before the index get it
/// at their first open.
pub(super) const INDEX_BUILT: &[u8] = &[0];
const TIMESTAMP_BYTES: usize = 8;

/// The key of the index entry of the tombstone stamped `timestamp` stored under `stored_key`.
pub(super) fn index_key(timestamp: u64, stored_key: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(TIMESTAMP_BYTES + 16);
    entry.extend_from_slice(&timestamp.to_be_bytes());
    entry.extend_from_slice(&xxhash_rust::xxh3::xxh3_128(stored_key).to_be_bytes());
    entry
}

/// What [`Store::reapable`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReapScan {
    /// Tombstones held, as (key, timestamp), oldest first.
    pub found: Vec<(Bytes, u64)>,
    /// Where the next scan continues (exclusive); `None`: no entry is left before the bound,
    /// so the next scan starts from the oldest again.
    pub next: Option<Vec<u8>>,
    /// Index entries whose tombstone was superseded or removed, dropped from the index.
    pub stale: usize,
}

/// What [`Store::reap`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Reaped {
    /// For each tombstone given, whether the store now holds nothing for its key.
    pub gone: Vec<bool>,
    /// How many tombstones it removed.
    pub removed: usize,
}

impl Store {
    /// The tombstones stamped before `before`, from the index entry after `after` (`None`: the
    /// oldest), examining at most `budget` entries.
    pub fn reapable(&self, before: u64, after: Option<&[u8]>, budget: usize) -> Result<ReapScan, StoreError> {
        let lower = Bound::Excluded(after.unwrap_or(INDEX_BUILT).to_vec());
        let upper = Bound::Excluded(before.to_be_bytes().to_vec());
        let mut scan = ReapScan::default();
        let mut examined = 0;
        for item in self.tombstones.range((lower, upper)) {
            let (entry, stored_key) = item.into_inner()?;
            examined += 1;
            let timestamp = u64::from_be_bytes(entry[..TIMESTAMP_BYTES].try_into().expect("8 bytes"));
            let stored_key = &stored_key[..];
            let key = Bytes::copy_from_slice(stored_key.get(4..).unwrap_or_default());
            let _guard = self.stripe_of(&key);
            if stored_key.len() >= 4 && self.is_tombstone(&key, stored_key, timestamp)? {
                scan.found.push((key, timestamp));
            } else {
                self.tombstones.remove(entry.to_vec())?;
                scan.stale += 1;
            }
            if examined == budget {
                scan.next = Some(entry.to_vec());
                break;
            }
        }
        Ok(scan)
    }

    /// Whether this store holds, for `key`, the tombstone stamped `timestamp` or nothing at
    /// all: no older value of the key that repair could spread.
    pub fn holds_tombstone_or_nothing(&self, key: &[u8], timestamp: u64) -> Result<bool, StoreError> {
        let stored_key = super::stored_key(partition::hash_prefix(key), key);
        Ok(match self.held(key, &stored_key)? {
            Held::Nothing => true,
            Held::Tombstone(held) => held == timestamp,
            Held::Value => false,
        })
    }

    /// Removes each (key, timestamp) tombstone that is exactly what the store holds for its
    /// key, in one journal write.
    pub fn reap(&self, tombstones: &[(Bytes, u64)]) -> Result<Reaped, StoreError> {
        let stripes: std::collections::BTreeSet<usize> =
            tombstones.iter().map(|(key, _)| stripe_index(partition::hash_prefix(key))).collect();
        // Locked in ascending order, as writes lock them, so they cannot deadlock.
        let _guards: Vec<_> =
            stripes.iter().map(|&i| self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())).collect();
        let mut batch = self.db.batch();
        let mut removed = std::collections::HashSet::new();
        let mut gone = Vec::with_capacity(tombstones.len());
        for (key, timestamp) in tombstones {
            let prefix = partition::hash_prefix(key);
            let stored_key = super::stored_key(prefix, key);
            let now_gone = match self.held(key, &stored_key)? {
                Held::Nothing => true,
                Held::Tombstone(held) if held == *timestamp => {
                    // A key listed twice is removed (and its digest changed) once.
                    if removed.insert(key.clone()) {
                        batch.remove(&self.records, stored_key.clone());
                        batch.remove(&self.tombstones, index_key(held, &stored_key));
                        let record = common::version::Record::tombstone(held);
                        self.digests.toggle(prefix, crate::digest::fingerprint(key, &record));
                    }
                    true
                }
                Held::Tombstone(_) | Held::Value => removed.contains(key),
            };
            gone.push(now_gone);
        }
        batch.commit()?;
        Ok(Reaped { removed: removed.len(), gone })
    }

    /// Rewrites the records into one sorted run, dropping what removals and overwrites left
    /// behind: after reaping many tombstones, their space comes back now instead of whenever
    /// later writes compact that part of the tree. Blocks; takes about as long as writing the
    /// store's data once. (`rotate_memtable_and_wait` and `major_compact` are hidden from
    /// fjall's docs but public and used by its own tests; Cargo.lock pins the version.)
    pub fn compact(&self) -> Result<(), StoreError> {
        for keyspace in [&self.records, &self.tombstones] {
            // The removals are still in the write buffer: flushed first, or the compaction
            // would not see them (measured: without it nothing came back).
            keyspace.rotate_memtable_and_wait()?;
            keyspace.major_compact()?;
        }
        Ok(())
    }

    /// What the store holds under `stored_key`, without reading a value file.
    fn held(&self, key: &[u8], stored_key: &[u8]) -> Result<Held, StoreError> {
        Ok(match self.records.get(stored_key)? {
            None => Held::Nothing,
            Some(raw) => match decode_stored(key, raw)? {
                held if held.is_tombstone() => Held::Tombstone(held.timestamp()),
                _ => Held::Value,
            },
        })
    }

    fn is_tombstone(&self, key: &[u8], stored_key: &[u8], timestamp: u64) -> Result<bool, StoreError> {
        Ok(matches!(self.held(key, stored_key)?, Held::Tombstone(held) if held == timestamp))
    }

    fn stripe_of(&self, key: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        let stripe = stripe_index(partition::hash_prefix(key));
        self.stripes[stripe].lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::version::Record;

    fn open(dir: &std::path::Path) -> Store {
        Store::open(dir, 8 << 20, 1 << 20).unwrap()
    }

    fn keys(scan: &ReapScan) -> Vec<(&[u8], u64)> {
        scan.found.iter().map(|(key, ts)| (key.as_ref(), *ts)).collect()
    }

    #[test]
    fn the_index_finds_the_tombstones_older_than_a_bound_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.apply(b"a", &Record::tombstone(30)).unwrap();
        store.apply(b"b", &Record::value(10, "v".into())).unwrap();
        store.apply_many(&[(b"c", &Record::tombstone(20)), (b"d", &Record::tombstone(50))]).unwrap();
        let scan = store.reapable(40, None, 100).unwrap();
        assert_eq!(keys(&scan), vec![(&b"c"[..], 20), (&b"a"[..], 30)]);
        assert_eq!((scan.next, scan.stale), (None, 0));
        // A budget stops the scan; the next one continues after it.
        let first = store.reapable(100, None, 1).unwrap();
        assert_eq!(keys(&first), vec![(&b"c"[..], 20)]);
        let rest = store.reapable(100, first.next.as_deref(), 100).unwrap();
        assert_eq!(keys(&rest), vec![(&b"a"[..], 30), (&b"d"[..], 50)]);
    }

    #[test]
    fn the_longest_keys_are_indexed_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let key = vec![0xA5; common::proto::MAX_KEY_BYTES];
        store.apply(&key, &Record::tombstone(4)).unwrap();
        store.apply_many(&[(&key[1..], &Record::tombstone(6))]).unwrap();
        let scan = store.reapable(100, None, 100).unwrap();
        assert_eq!(keys(&scan), vec![(&key[..], 4), (&key[1..], 6)]);
        assert_eq!(store.reap(&scan.found).unwrap().removed, 2);
        assert_eq!(store.get(&key).unwrap(), None);
    }

    #[test]
    fn superseded_tombstones_leave_the_index_when_a_scan_reaches_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.apply(b"k", &Record::tombstone(5)).unwrap();
        store.apply(b"k", &Record::value(6, "back".into())).unwrap();
        store.apply(b"j", &Record::tombstone(7)).unwrap();
        store.apply(b"j", &Record::tombstone(8)).unwrap();
        let scan = store.reapable(100, None, 100).unwrap();
        assert_eq!(keys(&scan), vec![(&b"j"[..], 8)]);
        assert_eq!(scan.stale, 2);
        assert_eq!(store.reapable(100, None, 100).unwrap().stale, 0, "stale entries were removed");
    }

    #[test]
    fn reaping_removes_only_the_exact_tombstone_and_restores_the_digest_of_nothing() {
        let (dir, empty) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (store, reference) = (open(dir.path()), open(empty.path()));
        store.apply(b"gone", &Record::tombstone(5)).unwrap();
        store.apply(b"newer", &Record::tombstone(9)).unwrap();
        store.apply(b"live", &Record::value(5, "v".into())).unwrap();
        reference.apply(b"newer", &Record::tombstone(9)).unwrap();
        reference.apply(b"live", &Record::value(5, "v".into())).unwrap();
        assert!(store.holds_tombstone_or_nothing(b"gone", 5).unwrap());
        assert!(store.holds_tombstone_or_nothing(b"never", 5).unwrap());
        assert!(!store.holds_tombstone_or_nothing(b"newer", 5).unwrap());
        assert!(!store.holds_tombstone_or_nothing(b"live", 5).unwrap());
        let asked: Vec<(Bytes, u64)> = [("gone", 5), ("gone", 5), ("newer", 5), ("live", 5), ("never", 5)]
            .iter()
            .map(|(k, ts)| (Bytes::from_static(k.as_bytes()), *ts))
            .collect();
        let reaped = store.reap(&asked).unwrap();
        assert_eq!(reaped, Reaped { gone: vec![true, true, false, false, true], removed: 1 });
        assert_eq!(store.get(b"gone").unwrap(), None);
        assert_eq!(store.get(b"newer").unwrap(), Some(Record::tombstone(9)));
        assert_eq!(
            store.digests().unwrap().all(1),
            reference.digests().unwrap().all(1),
            "reaped once, digest as if never written"
        );
        assert_eq!(keys(&store.reapable(100, None, 100).unwrap()), vec![(&b"newer"[..], 9)]);
    }

    #[test]
    fn the_index_survives_reopening_and_is_built_for_stores_from_before_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            store.apply(b"old", &Record::tombstone(3)).unwrap();
            // As a store from before the index would be: the tombstone without its entry.
            store
                .tombstones
                .remove(index_key(3, &super::super::stored_key(partition::hash_prefix(b"old"), b"old")))
                .unwrap();
            store.tombstones.remove(INDEX_BUILT).unwrap();
            assert!(store.reapable(100, None, 100).unwrap().found.is_empty());
        }
        let store = open(dir.path());
        assert_eq!(keys(&store.reapable(100, None, 100).unwrap()), vec![(&b"old"[..], 3)]);
        drop(store);
        assert_eq!(keys(&open(dir.path()).reapable(100, None, 100).unwrap()), vec![(&b"old"[..], 3)]);
    }
}
