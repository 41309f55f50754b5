//! The record store of one storage node, on disk: for each key, the winning [`Record`] of every
//! write the node has been sent.
//!
//! Records live in a fjall keyspace (an LSM tree with a write-ahead journal; large values go to
//! separate blob files). The stored key is the key's 4-byte hash prefix followed by the key, so
//! one partition's records are one contiguous range whatever the map's digit count. The stored
//! value is a 9-byte header (flags, timestamp) followed by the value bytes.
//!
//! Durability: every write reaches the operating system (`write(2)` on the journal) before
//! [`Store::apply`] returns, so a killed process loses nothing. Surviving a machine crash needs
//! an fsync: [`crate::durability`] batches the fsyncs of concurrent writers (group commit).
//! Memory is bounded by the block cache (`cache_bytes`); nothing is loaded whole at start.

use crate::digest::{self, Digests};
use bytes::Bytes;
use byteview::ByteView;
use common::partition::{self, Partition};
use common::version::Record;
use fjall::{
    CompressionType, Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode, Slice,
};
use std::path::Path;
use std::sync::Mutex;

/// Independent locks that serialise read-compare-write per key without one global lock.
const WRITE_STRIPES: usize = 256;
const HEADER_BYTES: usize = 9;
const FLAG_TOMBSTONE: u8 = 1;

/// A storage engine failure: the data directory cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine error: {0}")]
    Engine(#[from] fjall::Error),
    #[error("corrupt record for key {key:?}: {reason}")]
    Corrupt { key: String, reason: &'static str },
}

/// What [`Store::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The record superseded what the store held (or it held nothing): it is now stored.
    Stored,
    /// The store already held this record or a newer one; nothing changed.
    Superseded,
}

/// The records of one storage node.
pub struct Store {
    db: Database,
    records: Keyspace,
    stripes: Box<[Mutex<()>]>,
    digests: Digests,
}

/// The engine's memory use against its configured bounds, for `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct EngineStats {
    /// Block cache in use.
    pub cache_bytes: u64,
    /// The block cache's bound (`--cache-mib`).
    pub cache_capacity_bytes: u64,
    /// Memtables not yet flushed (the active one and sealed ones).
    pub write_buffer_bytes: u64,
    /// See [`Store::approximate_len`].
    pub approximate_records: u64,
}

/// One record's version as the diff protocol lists it: enough to tell which replica is newer
/// without moving the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionEntry {
    pub key: Bytes,
    pub timestamp: u64,
    pub tombstone: bool,
    /// [`digest::value_fingerprint`] of the value.
    pub value_fingerprint: u64,
}

impl VersionEntry {
    pub fn of(key: Bytes, record: &Record) -> Self {
        Self {
            key,
            timestamp: record.timestamp,
            tombstone: record.is_tombstone(),
            value_fingerprint: digest::value_fingerprint(record.value.as_deref()),
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, recovering anything a crash left in the journal.
    /// Memory stays within about `cache_bytes` of block cache plus a few memtables of
    /// `memtable_bytes` (the active one and those being flushed).
    pub fn open(dir: &Path, cache_bytes: u64, memtable_bytes: u64) -> Result<Self, StoreError> {
        // No compression of values in the journal or the blob files: it ran on the write path
        // of every value of 4 KiB or more (LZ4 over a 24 MiB value took longer than writing it)
        // and on every read of a large value, and the values users store large are mostly
        // compressed already.
        let db = Database::builder(dir)
            .cache_size(cache_bytes)
            .journal_compression(CompressionType::None)
            .open()?;
        let records = db.keyspace("records", || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(memtable_bytes)
                .with_kv_separation(Some(KvSeparationOptions::default().compression(CompressionType::None)))
        })?;
        let stripes = (0..WRITE_STRIPES).map(|_| Mutex::new(())).collect();
        let store = Self { db, records, stripes, digests: Digests::default() };
        for item in store.records.iter() {
            let (stored_key, raw) = item.into_inner()?;
            let key = &stored_key[4..];
            let record = decode(key, raw)?;
            store.digests.toggle(partition::hash_prefix(key), digest::fingerprint(key, &record));
        }
        Ok(store)
    }

    /// The per-partition digests of what this store holds.
    pub fn digests(&self) -> &Digests {
        &self.digests
    }

    /// Keeps `record` for `key` if it supersedes the record held (see [`Record::supersedes`]).
    /// On return the write has reached the OS; call [`Store::sync`] to make it crash-proof.
    pub fn apply(&self, key: &[u8], record: &Record) -> Result<Applied, StoreError> {
        self.apply_stored(key, record, encode)
    }

    /// [`Store::apply`] for a record already in its stored form (see [`StoredValue`]): a large
    /// value read straight into it is not copied again before the journal write.
    pub fn apply_encoded(&self, key: &[u8], stored: StoredValue) -> Result<Applied, StoreError> {
        let raw = Slice::from(stored.0);
        let record = decode(key, raw.clone())?;
        self.apply_stored(key, &record, |_| raw)
    }

    fn apply_stored(
        &self,
        key: &[u8],
        record: &Record,
        stored: impl FnOnce(&Record) -> Slice,
    ) -> Result<Applied, StoreError> {
        let prefix = partition::hash_prefix(key);
        let stored_key = stored_key(prefix, key);
        let _guard = self.stripes[prefix as usize % WRITE_STRIPES].lock().unwrap_or_else(|p| p.into_inner());
        let held = match self.records.get(&stored_key)? {
            Some(raw) => Some(decode(key, raw)?),
            None => None,
        };
        if held.as_ref().is_some_and(|held| !record.supersedes(held)) {
            return Ok(Applied::Superseded);
        }
        self.records.insert(stored_key, stored(record))?;
        if let Some(held) = &held {
            self.digests.toggle(prefix, digest::fingerprint(key, held));
        }
        self.digests.toggle(prefix, digest::fingerprint(key, record));
        Ok(Applied::Stored)
    }

    /// [`Store::apply`] for many records at once: one journal write for all of them. Each
    /// record is compared with what the store holds (or with an earlier record of the same
    /// call for the same key), exactly as if applied one by one in order.
    pub fn apply_many(&self, writes: &[(&[u8], &Record)]) -> Result<Vec<Applied>, StoreError> {
        let prefixes: Vec<u32> = writes.iter().map(|(key, _)| partition::hash_prefix(key)).collect();
        let stripes: std::collections::BTreeSet<usize> =
            prefixes.iter().map(|prefix| *prefix as usize % WRITE_STRIPES).collect();
        // Locked in ascending order, so two concurrent calls cannot deadlock.
        let _guards: Vec<_> =
            stripes.iter().map(|&i| self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())).collect();
        let mut batch = self.db.batch();
        let mut newest: std::collections::HashMap<&[u8], &Record> = std::collections::HashMap::new();
        let mut toggles = Vec::new();
        let mut applied = Vec::with_capacity(writes.len());
        for (&(key, record), &prefix) in writes.iter().zip(&prefixes) {
            let stored_key = stored_key(prefix, key);
            let held = match newest.get(key) {
                Some(&earlier) => Some(earlier.clone()),
                None => match self.records.get(&stored_key)? {
                    Some(raw) => Some(decode(key, raw)?),
                    None => None,
                },
            };
            if held.as_ref().is_some_and(|held| !record.supersedes(held)) {
                applied.push(Applied::Superseded);
                continue;
            }
            batch.insert(&self.records, stored_key, encode(record));
            if let Some(held) = &held {
                toggles.push((prefix, digest::fingerprint(key, held)));
            }
            toggles.push((prefix, digest::fingerprint(key, record)));
            newest.insert(key, record);
            applied.push(Applied::Stored);
        }
        batch.commit()?;
        for (prefix, fingerprint) in toggles {
            self.digests.toggle(prefix, fingerprint);
        }
        Ok(applied)
    }

    /// The record held for `key`, tombstones included.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let stored_key = stored_key(partition::hash_prefix(key), key);
        match self.records.get(&stored_key)? {
            Some(raw) => Ok(Some(decode(key, raw)?)),
            None => Ok(None),
        }
    }

    /// Calls `visit` with every record of `partition` (in a map of `digits` hex digits), in
    /// key-hash order, one at a time, from a consistent snapshot: memory does not grow with the
    /// partition.
    pub fn for_each_in_partition(
        &self,
        partition: Partition,
        digits: u8,
        mut visit: impl FnMut(Bytes, Record),
    ) -> Result<(), StoreError> {
        let (start, end) = partition::prefix_range(partition, digits);
        let lower = start.to_be_bytes().to_vec();
        for item in self.records.range(lower..) {
            let (stored_key, raw) = item.into_inner()?;
            let prefix = u32::from_be_bytes(stored_key[..4].try_into().expect("4-byte prefix"));
            if prefix > end {
                break;
            }
            let key = Bytes::copy_from_slice(&stored_key[4..]);
            let record = decode(&key, raw)?;
            visit(key, record);
        }
        Ok(())
    }

    /// Every record of `partition`, collected: for small partitions and tests.
    pub fn scan_partition(
        &self,
        partition: Partition,
        digits: u8,
    ) -> Result<Vec<(Bytes, Record)>, StoreError> {
        let mut out = Vec::new();
        self.for_each_in_partition(partition, digits, |key, record| out.push((key, record)))?;
        Ok(out)
    }

    /// The versions of every record of `partition`, in key-hash order (values are not kept).
    pub fn versions(&self, partition: Partition, digits: u8) -> Result<Vec<VersionEntry>, StoreError> {
        let mut out = Vec::new();
        self.for_each_in_partition(partition, digits, |key, record| {
            out.push(VersionEntry::of(key, &record))
        })?;
        Ok(out)
    }

    /// Forces every write applied so far to stable storage (fsync of the journal).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// Approximate number of records (fast; may count overwritten versions not yet compacted).
    pub fn approximate_len(&self) -> u64 {
        self.records.approximate_len() as u64
    }

    /// The engine's memory use against its bounds (cheap: no disk access).
    pub fn engine_stats(&self) -> EngineStats {
        EngineStats {
            cache_bytes: self.db.cache_size(),
            cache_capacity_bytes: self.db.cache_capacity(),
            write_buffer_bytes: self.db.write_buffer_size(),
            approximate_records: self.approximate_len(),
        }
    }
}

fn stored_key(prefix: u32, key: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(4 + key.len());
    stored.extend_from_slice(&prefix.to_be_bytes());
    stored.extend_from_slice(key);
    stored
}

/// A live value's record in its stored form, allocated at its final size so that the value can
/// be written into it as it arrives (one copy from the network buffers, none after).
pub struct StoredValue(ByteView);

impl StoredValue {
    /// Room for a value of `length` bytes with `timestamp`; fill it through [`StoredValue::value_mut`].
    pub fn with_length(timestamp: u64, length: usize) -> Self {
        let mut view = ByteView::with_size(HEADER_BYTES + length);
        {
            let mut raw = view.get_mut().expect("a new view has one owner");
            raw[0] = 0;
            raw[1..HEADER_BYTES].copy_from_slice(&timestamp.to_be_bytes());
        }
        Self(view)
    }

    /// Copies `bytes` into the value at `offset`. Panics if they do not fit.
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) {
        let mut raw = self.0.get_mut().expect("only this value holds the view");
        raw[HEADER_BYTES + offset..HEADER_BYTES + offset + bytes.len()].copy_from_slice(bytes);
    }

    /// The value's length.
    pub fn len(&self) -> usize {
        self.0.len() - HEADER_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The stored form of `record`, built in the engine's own buffer type (one copy of the value).
fn encode(record: &Record) -> Slice {
    let mut header = [0; HEADER_BYTES];
    header[0] = if record.is_tombstone() { FLAG_TOMBSTONE } else { 0 };
    header[1..].copy_from_slice(&record.timestamp.to_be_bytes());
    ByteView::fused(&header, record.value.as_deref().unwrap_or_default()).into()
}

/// The record stored as `raw`; the value shares `raw`'s buffer (no copy).
fn decode(key: &[u8], raw: Slice) -> Result<Record, StoreError> {
    let corrupt = |reason| StoreError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason };
    if raw.len() < HEADER_BYTES {
        return Err(corrupt("shorter than its header"));
    }
    let timestamp = u64::from_be_bytes(raw[1..HEADER_BYTES].try_into().expect("8 bytes"));
    match raw[0] {
        0 => Ok(Record::value(timestamp, Bytes::from_owner(raw).slice(HEADER_BYTES..))),
        FLAG_TOMBSTONE if raw.len() == HEADER_BYTES => Ok(Record::tombstone(timestamp)),
        FLAG_TOMBSTONE => Err(corrupt("tombstone with a value")),
        _ => Err(corrupt("unknown flags")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CACHE: u64 = 8 << 20;
    const MEMTABLE: u64 = 4 << 20;

    fn value(ts: u64, v: &'static str) -> Record {
        Record::value(ts, Bytes::from_static(v.as_bytes()))
    }

    #[test]
    fn values_reach_the_journal_uncompressed() {
        // LZ4 (the engine's default above 4 KiB) would journal this compressible value in a
        // few KiB, and cost tens of milliseconds on a large incompressible one.
        fn allocated_bytes(dir: &Path) -> u64 {
            use std::os::unix::fs::MetadataExt;
            std::fs::read_dir(dir)
                .unwrap()
                .map(|entry| {
                    let entry = entry.unwrap();
                    let metadata = entry.metadata().unwrap();
                    if metadata.is_dir() {
                        allocated_bytes(&entry.path())
                    } else {
                        metadata.blocks() * 512
                    }
                })
                .sum()
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        let before = allocated_bytes(dir.path());
        let value = Bytes::from(vec![0u8; 1 << 20]);
        store.apply(b"zeros", &Record::value(1, value.clone())).unwrap();
        // Journals are sparse files preallocated by size: count the blocks written.
        let grew = allocated_bytes(dir.path()) - before;
        assert!(grew >= 1 << 20, "the data directory grew by {grew} bytes for a 1 MiB value");
        assert_eq!(store.get(b"zeros").unwrap(), Some(Record::value(1, value)));
    }

    #[test]
    fn keeps_only_newer_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        assert_eq!(store.apply(b"k", &value(2, "b")).unwrap(), Applied::Stored);
        assert_eq!(store.apply(b"k", &value(1, "z")).unwrap(), Applied::Superseded);
        assert_eq!(store.apply(b"k", &value(2, "b")).unwrap(), Applied::Superseded, "replayed write");
        assert_eq!(store.get(b"k").unwrap(), Some(value(2, "b")));
        assert_eq!(store.apply(b"k", &value(2, "c")).unwrap(), Applied::Stored, "tie: greater value wins");
        assert_eq!(store.get(b"k").unwrap(), Some(value(2, "c")));
        assert_eq!(store.get(b"other").unwrap(), None);
    }

    #[test]
    fn a_value_written_into_its_stored_form_is_applied_like_any_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        let mut stored = StoredValue::with_length(7, 10);
        assert_eq!(stored.len(), 10);
        stored.write_at(0, b"hello");
        stored.write_at(5, b"world");
        assert_eq!(store.apply_encoded(b"k", stored).unwrap(), Applied::Stored);
        assert_eq!(store.get(b"k").unwrap(), Some(value(7, "helloworld")));
        let older = StoredValue::with_length(6, 0);
        assert_eq!(store.apply_encoded(b"k", older).unwrap(), Applied::Superseded);
        let reference = tempfile::tempdir().unwrap();
        let reference = Store::open(reference.path(), CACHE, MEMTABLE).unwrap();
        reference.apply(b"k", &value(7, "helloworld")).unwrap();
        assert_eq!(store.digests().all(2), reference.digests().all(2));
    }

    #[test]
    fn applying_many_at_once_equals_applying_them_in_order() {
        let writes: Vec<(&[u8], Record)> = vec![
            (b"a", value(5, "a5")),
            (b"b", value(1, "b1")),
            (b"a", value(3, "older than a5")), // superseded by an earlier write of the same call
            (b"a", value(7, "a7")),
            (b"held", value(1, "older than held")), // superseded by what the store held
            (b"c", Record::tombstone(2)),
            (b"b", value(1, "b1")), // a replay of an earlier write of the same call
        ];
        let (one, many) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (one, many) = (
            Store::open(one.path(), CACHE, MEMTABLE).unwrap(),
            Store::open(many.path(), CACHE, MEMTABLE).unwrap(),
        );
        for store in [&one, &many] {
            store.apply(b"held", &value(9, "held")).unwrap();
        }
        let expected: Vec<Applied> =
            writes.iter().map(|(key, record)| one.apply(key, record).unwrap()).collect();
        let pairs: Vec<(&[u8], &Record)> = writes.iter().map(|(key, record)| (*key, record)).collect();
        assert_eq!(many.apply_many(&pairs).unwrap(), expected);
        use Applied::*;
        assert_eq!(expected, [Stored, Stored, Superseded, Stored, Superseded, Stored, Superseded]);
        for key in [&b"a"[..], b"b", b"c", b"held"] {
            assert_eq!(many.get(key).unwrap(), one.get(key).unwrap());
        }
        assert_eq!(many.get(b"a").unwrap(), Some(value(7, "a7")));
        assert_eq!(many.digests().all(2), one.digests().all(2), "digests follow batched writes");
        assert_eq!(many.apply_many(&[]).unwrap(), []);
    }

    #[test]
    fn tombstones_hide_values_and_block_late_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        store.apply(b"k", &value(1, "a")).unwrap();
        assert_eq!(store.apply(b"k", &Record::tombstone(5)).unwrap(), Applied::Stored);
        assert_eq!(store.apply(b"k", &value(4, "late")).unwrap(), Applied::Superseded);
        assert_eq!(store.get(b"k").unwrap(), Some(Record::tombstone(5)));
        assert_eq!(store.apply(b"k", &value(6, "again")).unwrap(), Applied::Stored);
        assert_eq!(store.get(b"k").unwrap(), Some(value(6, "again")));
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let big = Bytes::from(vec![7u8; 3 << 20]);
        {
            let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
            store.apply(b"small", &value(1, "v")).unwrap();
            store.apply(b"big", &Record::value(2, big.clone())).unwrap();
            store.apply(b"gone", &Record::tombstone(3)).unwrap();
            store.sync().unwrap();
        }
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        assert_eq!(store.get(b"small").unwrap(), Some(value(1, "v")));
        assert_eq!(store.get(b"big").unwrap(), Some(Record::value(2, big)));
        assert_eq!(store.get(b"gone").unwrap(), Some(Record::tombstone(3)));
    }

    #[test]
    fn scans_exactly_one_partition() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        for i in 0..500u64 {
            store.apply(format!("key-{i}").as_bytes(), &value(i + 1, "v")).unwrap();
        }
        for digits in [1u8, 2] {
            let mut seen = 0;
            for p in 0..partition::count(digits) {
                let scanned = store.scan_partition(p, digits).unwrap();
                for (key, record) in &scanned {
                    assert_eq!(partition::of(key, digits), p);
                    assert_eq!(record.value.as_deref(), Some(&b"v"[..]));
                }
                seen += scanned.len();
            }
            assert_eq!(seen, 500, "digits {digits}: every record in exactly one partition");
        }
    }

    #[test]
    fn digests_follow_writes_and_are_rebuilt_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let (a, b) = (
            Store::open(dir.path(), CACHE, MEMTABLE).unwrap(),
            Store::open(other.path(), CACHE, MEMTABLE).unwrap(),
        );
        for i in 0..50u64 {
            let key = format!("key-{i}");
            a.apply(key.as_bytes(), &value(i + 1, "old")).unwrap();
            b.apply(key.as_bytes(), &value(i + 1, "old")).unwrap();
        }
        assert_eq!(a.digests().all(2), b.digests().all(2));
        a.apply(b"key-3", &Record::tombstone(100)).unwrap();
        assert_ne!(a.digests().all(2), b.digests().all(2));
        b.apply(b"key-3", &Record::tombstone(100)).unwrap();
        b.apply(b"key-3", &value(1, "late")).unwrap(); // superseded: no change
        assert_eq!(a.digests().all(2), b.digests().all(2));
        let before = a.digests().all(2);
        drop(a);
        assert_eq!(Store::open(dir.path(), CACHE, MEMTABLE).unwrap().digests().all(2), before);
        let versions = b.versions(partition::of(b"key-3", 2), 2).unwrap();
        let entry = versions.iter().find(|v| v.key.as_ref() == b"key-3").unwrap();
        assert_eq!((entry.timestamp, entry.tombstone), (100, true));
    }

    #[test]
    fn corrupt_records_are_reported_not_misread() {
        let raw = |bytes: &[u8]| Slice::from(bytes);
        assert!(decode(b"k", raw(&[0, 1, 2])).is_err());
        assert!(decode(b"k", raw(&[9, 0, 0, 0, 0, 0, 0, 0, 1])).is_err());
        assert!(decode(b"k", raw(&[1, 0, 0, 0, 0, 0, 0, 0, 1, b'x'])).is_err());
        let record = value(42, "payload");
        assert_eq!(decode(b"k", encode(&record)).unwrap(), record);
        assert_eq!(decode(b"k", encode(&Record::tombstone(7))).unwrap(), Record::tombstone(7));
    }
}
