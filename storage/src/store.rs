//! The record store of one storage node: for each key, the winning [`Record`] of every write the
//! node has been sent.
//!
//! Records are kept ordered by the key's hash prefix, so one partition's records form one
//! contiguous range whatever the map's digit count. The store holds data in memory only; a
//! restarted node starts empty.

use bytes::Bytes;
use common::partition::{self, Partition};
use common::version::Record;
use std::collections::BTreeMap;
use std::sync::RwLock;

/// Records ordered by `(hash prefix, key)`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: RwLock<BTreeMap<(u32, Bytes), Record>>,
}

/// What [`MemoryStore::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The record superseded what the store held (or it held nothing): it is now stored.
    Stored,
    /// The store already held this record or a newer one; nothing changed.
    Superseded,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `record` for `key` if it supersedes the record held (see [`Record::supersedes`]).
    pub fn apply(&self, key: &[u8], record: Record) -> Applied {
        let index = (partition::hash_prefix(key), Bytes::copy_from_slice(key));
        let mut records = self.records.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        match records.get_mut(&index) {
            Some(held) if !record.supersedes(held) => Applied::Superseded,
            Some(held) => {
                *held = record;
                Applied::Stored
            }
            None => {
                records.insert(index, record);
                Applied::Stored
            }
        }
    }

    /// The record held for `key`, tombstones included.
    pub fn get(&self, key: &[u8]) -> Option<Record> {
        let index = (partition::hash_prefix(key), Bytes::copy_from_slice(key));
        let records = self.records.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        records.get(&index).cloned()
    }

    /// Every record of `partition` (in a map of `digits` hex digits), in key-hash order.
    pub fn scan_partition(&self, partition: Partition, digits: u8) -> Vec<(Bytes, Record)> {
        let (start, end) = partition::prefix_range(partition, digits);
        let records = self.records.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        records
            .range((start, Bytes::new())..)
            .take_while(|((prefix, _), _)| *prefix <= end)
            .map(|((_, key), record)| (key.clone(), record.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.records.read().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(ts: u64, v: &'static str) -> Record {
        Record::value(ts, Bytes::from_static(v.as_bytes()))
    }

    #[test]
    fn keeps_only_newer_records() {
        let store = MemoryStore::new();
        assert_eq!(store.apply(b"k", value(2, "b")), Applied::Stored);
        assert_eq!(store.apply(b"k", value(1, "z")), Applied::Superseded);
        assert_eq!(store.apply(b"k", value(2, "b")), Applied::Superseded, "replayed write");
        assert_eq!(store.get(b"k"), Some(value(2, "b")));
        assert_eq!(store.apply(b"k", value(2, "c")), Applied::Stored, "tie: greater value wins");
        assert_eq!(store.get(b"k"), Some(value(2, "c")));
        assert_eq!(store.get(b"other"), None);
    }

    #[test]
    fn tombstones_hide_values_and_block_late_writes() {
        let store = MemoryStore::new();
        store.apply(b"k", value(1, "a"));
        assert_eq!(store.apply(b"k", Record::tombstone(5)), Applied::Stored);
        assert_eq!(store.apply(b"k", value(4, "late")), Applied::Superseded);
        assert_eq!(store.get(b"k"), Some(Record::tombstone(5)));
        assert_eq!(store.apply(b"k", value(6, "again")), Applied::Stored);
        assert_eq!(store.get(b"k"), Some(value(6, "again")));
    }

    #[test]
    fn scans_exactly_one_partition() {
        let store = MemoryStore::new();
        let keys: Vec<String> = (0..500).map(|i| format!("key-{i}")).collect();
        for (i, key) in keys.iter().enumerate() {
            store.apply(key.as_bytes(), value(i as u64 + 1, "v"));
        }
        assert_eq!(store.len(), 500);
        for digits in [1u8, 2] {
            let mut seen = 0;
            for p in 0..partition::count(digits) {
                let scanned = store.scan_partition(p, digits);
                for (key, _) in &scanned {
                    assert_eq!(partition::of(key, digits), p);
                }
                seen += scanned.len();
            }
            assert_eq!(seen, 500, "digits {digits}: every record in exactly one partition");
        }
    }
}
