//! The record store of one storage node, on disk: for each key, the winning [`Record`] of every
//! write the node has been sent.
//!
//! Records live in a fjall keyspace (an LSM tree with a write-ahead journal; large values go to
//! separate blob files). The stored key is the key's 4-byte hash prefix followed by the key, so
//! one partition's records are one contiguous range whatever the map's digit count. The stored
//! value is a 9-byte header (flags, timestamp) followed by the value bytes, or, for a value
//! that arrived large on its own request, by a reference to its value file (length, hash, file
//! id; see [`crate::value_files`]). A value file is removed only after the sync that made the
//! record replacing it durable, so no durable record ever names a missing file; files a crash
//! left unnamed are removed at open.
//!
//! Durability: every write reaches the operating system (`write(2)` on the journal) before
//! [`Store::apply`] returns, so a killed process loses nothing. Surviving a machine crash needs
//! an fsync: [`crate::durability`] batches the fsyncs of concurrent writers (group commit).
//! Memory is bounded by the block cache (`cache_bytes`); nothing is loaded whole at start.
//! When writes pause, the node's upkeep flushes the memtable ([`Store::flush_idle_memtable`]),
//! so reads stop searching it.
//!
//! Opening after an unclean stop replays the journal (bounded by the memtables), then serves at
//! once: the partition digests are rebuilt by one scan of a snapshot taken before the first
//! write, while writes go on ([`Store::open_deferred`], [`Store::rebuild_digests`]). Until the
//! scan ends, [`Store::digests`] says [`Rebuilding`], so nothing compares replicas by them.
//!
//! Tombstones are indexed by age in a second keyspace, in the same journal write as the
//! tombstone, so the ones old enough to reap are found without scanning the records
//! ([`reaping`]; when they may go is `crate::reaper`'s decision).
//!
//! Listing keys ([`Store::scan_keys`]) walks one partition's range in stored order and reads
//! keys only, never values; budgets on keys, bytes and records examined bound each call, and
//! the position it stopped at is a short byte string ([`separator`]) that stays meaningful
//! whatever the map's digit count, since it names a point in the (hash prefix, key) order.

use crate::digest::{self, Count, Digests, Fingerprint};
use crate::value_files::{FileId, FinishedValue, ValueFiles};
use bytes::Bytes;
use byteview::ByteView;
use common::partition::{self, Partition};
use common::version::Record;
use fjall::compaction::Leveled;
use fjall::{
    CompressionType, Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode, Slice,
};
use std::ops::{Bound, ControlFlow};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod reaping;
mod snapshot;

/// Independent locks that serialise read-compare-write per key without one global lock. Each
/// digest bucket maps to one of them ([`stripe_index`]), so holding a stripe holds every write
/// to its buckets (a bucket's rescan relies on it).
const WRITE_STRIPES: usize = 256;

/// The write lock of the keys whose hash prefix is `prefix`: that of their digest bucket.
fn stripe_index(prefix: u32) -> usize {
    crate::digest::bucket_of(prefix) % WRITE_STRIPES
}

const HEADER_BYTES: usize = 9;
const FLAG_TOMBSTONE: u8 = 1;
const FLAG_IN_FILE: u8 = 2;
/// A value file reference: length, hash, file id.
const FILE_REF_BYTES: usize = 8 + 16 + 8;
/// How often a read retries when the file it was about to read was replaced meanwhile.
const READ_RETRIES: usize = 3;

/// The digests are not whole yet: the scan after an unclean stop is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the partition digests are being rebuilt after an unclean stop; try again in a moment")]
pub struct Rebuilding;

/// The scan left to do after an unclean stop (see [`Store::rebuild_digests`]).
struct Rebuild {
    /// The records as they were at open, before any write.
    snapshot: fjall::Snapshot,
    /// The value files there were at open: those no record of the snapshot names were left
    /// by a crash (a later write creates files of its own).
    files: Vec<FileId>,
}

/// A storage engine failure: the data directory cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine error: {0}")]
    Engine(#[from] fjall::Error),
    #[error("corrupt record for key {key:?}: {reason}")]
    Corrupt { key: String, reason: &'static str },
    #[error("value file error: {0}")]
    ValueFile(#[from] std::io::Error),
}

/// What [`Store::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The record superseded what the store held (or it held nothing): it is now stored.
    Stored,
    /// The store already held this very record; nothing changed.
    AlreadyHeld,
    /// The store holds a different record, stamped `by`, that wins over this one; nothing
    /// changed. (The writer may stamp its write again above it: see `common::proto::NEWER`.)
    Superseded { by: u64 },
}

/// The records of one storage node.
pub struct Store {
    db: Database,
    records: Keyspace,
    stripes: Box<[Mutex<()>]>,
    /// Whole once `whole` says so; until then, the changes of the writes since open.
    digests: Digests,
    /// Where [`Store::settle_quiet`] goes on from.
    settle_cursor: std::sync::atomic::AtomicUsize,
    whole: tokio::sync::watch::Sender<bool>,
    rebuild: Mutex<Option<Rebuild>>,
    values: ValueFiles,
    /// Value files of replaced records, removed after the next sync.
    garbage: Mutex<Vec<FileId>>,
    /// Watchers of keys, woken when a record of their key is applied.
    pub watchers: Arc<crate::watch::Watchers>,
    /// The tombstones held, oldest first: see [`reaping`].
    tombstones: Keyspace,
    /// The store's directory.
    dir: std::path::PathBuf,
    /// Whether the last open restored the digests of a clean stop instead of scanning.
    pub opened_clean: bool,
    /// Engine writes that took [`STALL`] or longer.
    stalls: AtomicU64,
    /// Engine writes since open.
    writes: AtomicU64,
}

/// Counts the seconds a store has gone without a write (see [`Store::flush_idle_memtable`]).
#[derive(Debug, Default)]
pub struct Idle {
    writes: u64,
    quiet: u32,
}

impl Idle {
    /// One second passed and the store has made `writes` writes since open: whether writes
    /// have now paused for exactly `seconds` (true once per pause).
    pub fn tick(&mut self, writes: u64, seconds: u32) -> bool {
        if writes != self.writes {
            self.writes = writes;
            self.quiet = 0;
            return false;
        }
        self.quiet = self.quiet.saturating_add(1);
        self.quiet == seconds
    }
}

/// What [`Store::get_bounded`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bounded {
    Missing,
    Found(Record),
    /// A value longer than the bound (not read).
    TooLarge,
}

/// A record as [`Store::open_record`] finds it: whole, or with its value file open for
/// streaming (see [`crate::value_files::stream`]).
#[derive(Debug)]
pub enum Readable {
    Whole(Record),
    /// `hash`: the value's xxh3-128 (see `common::proto::VALUE_HASH`).
    InFile {
        timestamp: u64,
        length: u64,
        hash: u128,
        file: std::fs::File,
    },
}

impl Readable {
    pub fn timestamp(&self) -> u64 {
        match self {
            Readable::Whole(record) => record.timestamp,
            Readable::InFile { timestamp, .. } => *timestamp,
        }
    }
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
    /// False while the digests are rebuilt after an unclean stop (see [`Store::rebuild_digests`]).
    pub digests_whole: bool,
    /// Digest buckets that writes left unsettled (see `crate::digest`): anti-entropy leaves
    /// their partitions alone until the rescans settle them.
    pub unsettled_buckets: u64,
    /// The LSM tree of the records: its shape, its background work and where its reads went.
    pub lsm: LsmStats,
}

/// The records' LSM tree as the engine counts it, for finding where the time goes when the
/// data outgrows the cache (the counters count since the node started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LsmStats {
    /// Table files, and those in level 0 (flushed memtables not yet compacted: every point
    /// read checks each one's filter; the engine slows writes from 20 and halts them at 30).
    pub tables: u64,
    pub l0_tables: u64,
    /// Memtables full and waiting to be flushed (the engine halts writes at 4).
    pub sealed_memtables: u64,
    pub flushes_queued: u64,
    pub compactions_running: u64,
    pub compactions_done: u64,
    pub compaction_ms: u64,
    /// Blocks a read needed, by kind: found in the block cache, or read from the file.
    pub data_blocks: BlockLoads,
    pub index_blocks: BlockLoads,
    pub filter_blocks: BlockLoads,
    /// Filter checks of point reads as the engine counts them, and those that ruled a table
    /// out without reading it.
    pub filter_queries: u64,
    pub filter_skips: u64,
    /// Engine writes that took [`STALL`] or longer (the engine holds writers back while its
    /// flushes or level-0 compactions fall behind).
    pub write_stalls: u64,
}

/// How much of each value [`Store::compare_values`] reads at a time.
const COMPARE_CHUNK: usize = 1 << 20;

/// The order of two byte streams (as `<[u8]>::cmp` of their whole contents), read a chunk at a
/// time: memory stays within two chunks whatever their length.
fn compare_readers(
    mut a: impl std::io::Read,
    mut b: impl std::io::Read,
) -> std::io::Result<std::cmp::Ordering> {
    use std::cmp::Ordering;
    let (mut x, mut y) = (vec![0u8; COMPARE_CHUNK], vec![0u8; COMPARE_CHUNK]);
    // Bytes read and not yet compared: x[xs..xe], y[ys..ye].
    let (mut xs, mut xe, mut ys, mut ye) = (0, 0, 0, 0);
    loop {
        if xs == xe {
            (xs, xe) = (0, a.read(&mut x)?);
        }
        if ys == ye {
            (ys, ye) = (0, b.read(&mut y)?);
        }
        match (xs == xe, ys == ye) {
            (true, true) => return Ok(Ordering::Equal),
            (true, false) => return Ok(Ordering::Less),
            (false, true) => return Ok(Ordering::Greater),
            (false, false) => {}
        }
        let n = (xe - xs).min(ye - ys);
        match x[xs..xs + n].cmp(&y[ys..ys + n]) {
            Ordering::Equal => (xs, ys) = (xs + n, ys + n),
            unequal => return Ok(unequal),
        }
    }
}

/// The size the engine's compactions cut tables at (see [`Store::open`]).
const TABLE_BYTES: u64 = 16 << 20;

/// The fewest flush and compaction threads the engine gets (fjall's default is one per core, at
/// most 4). fjall 3.1 keeps its first worker free for flushes: when that worker takes a
/// compaction request it puts it back in the queue and takes the next message at once, so with
/// two workers it spins through the same request for as long as the other one compacts. With
/// one worker a flush can deadlock: the worker sends itself a message, blocking, into a queue
/// the writers may have filled. With three, the two that compact empty the queue between
/// them. Paired runs (`THREADS=1 bench/tune.sh`, 2 M keys, 16 MiB cache): with 3 workers
/// instead of 2, SETs 18.2–19.2k/s against 17.2–18.2k/s, SET p99 8.9–10.7 ms against
/// 11.1–12.7 ms, storage node 1's CPU in the SETs 9.8–9.9 s against 10.8–12.1 s (its
/// engine threads 1.9–2.1 s against 3.1–3.3 s).
const MIN_ENGINE_WORKERS: usize = 3;

/// An engine write this slow counts as a stall (an append to the journal takes microseconds).
pub const STALL: Duration = Duration::from_millis(10);

/// See [`LsmStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BlockLoads {
    pub cached: u64,
    pub read: u64,
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
    /// Opens (or creates) the store in `dir`, recovering anything a crash left in the journal,
    /// with its digests whole. Memory stays within about `cache_bytes` of block cache plus a
    /// few memtables of `memtable_bytes` (the active one and those being flushed).
    pub fn open(dir: &Path, cache_bytes: u64, memtable_bytes: u64) -> Result<Self, StoreError> {
        let store = Self::open_deferred(dir, cache_bytes, memtable_bytes)?;
        store.rebuild_digests()?;
        Ok(store)
    }

    /// [`Store::open`], leaving the scan that rebuilds the digests after an unclean stop to
    /// [`Store::rebuild_digests`], which may run while the store serves reads and writes. So a
    /// restart after a crash takes the journal's replay, not a scan of every record (3.2 s
    /// with 8 M records in `bench/scale.sh`).
    pub fn open_deferred(dir: &Path, cache_bytes: u64, memtable_bytes: u64) -> Result<Self, StoreError> {
        // No compression of values in the journal or the blob files: it ran on the write path
        // of every value of 4 KiB or more (LZ4 over a 24 MiB value took longer than writing it)
        // and on every read of a large value, and the values users store large are mostly
        // compressed already.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let db = Database::builder(dir)
            .cache_size(cache_bytes)
            .journal_compression(CompressionType::None)
            .worker_threads(cores.clamp(MIN_ENGINE_WORKERS, 4))
            .open()?;
        // Tables of 16 MiB instead of the engine's 64: each compaction writes and syncs less
        // at a time, and the journal fsyncs that wait behind it (fjall's flush holds the
        // journal lock through one) wait less. Paired runs (`bench/tune.sh`, 1 M keys, 16 MiB
        // cache, 4 rounds): SET maxima 87–109 ms against 132–157 ms, the same throughput. Like
        // every option here it is stored with the keyspace when it is created; a store made
        // before keeps its own.
        let records = db.keyspace("records", || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(memtable_bytes)
                .with_kv_separation(Some(KvSeparationOptions::default().compression(CompressionType::None)))
                .compaction_strategy(Arc::new(Leveled::default().with_table_target_size(TABLE_BYTES)))
        })?;
        let tombstones = db.keyspace("tombstones", KeyspaceCreateOptions::default)?;
        let index_built = tombstones.contains_key(reaping::INDEX_BUILT)?;
        let stripes = (0..WRITE_STRIPES).map(|_| Mutex::new(())).collect();
        let values = ValueFiles::open(&dir.join("values"))?;
        let store = Self {
            db,
            records,
            stripes,
            digests: Digests::default(),
            whole: tokio::sync::watch::Sender::new(false),
            rebuild: Mutex::new(None),
            values,
            garbage: Mutex::default(),
            watchers: Default::default(),
            tombstones,
            dir: dir.to_owned(),
            opened_clean: false,
            stalls: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            settle_cursor: Default::default(),
        };
        let mut store = store;
        if store.restore_snapshot(index_built)? {
            store.opened_clean = true;
            store.whole.send_replace(true);
            log::info!("digests restored from the last clean stop: no scan needed");
            return Ok(store);
        }
        let files = store.values.ids()?;
        if !index_built {
            // A data directory from before the tombstone index: indexed once, before any write.
            let started = Instant::now();
            let named = store.scan(store.records.iter(), &store.digests, true)?;
            store.tombstones.insert(reaping::INDEX_BUILT, [])?;
            store.digests.scan_complete();
            store.remove_unnamed(files, &named)?;
            store.whole.send_replace(true);
            log::info!("scanned every record at open in {:.1?} (tombstones indexed)", started.elapsed());
            return Ok(store);
        }
        let snapshot = store.db.snapshot();
        *store.rebuild.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(Rebuild { snapshot, files });
        Ok(store)
    }

    /// Rebuilds the digests after an unclean stop, if [`Store::open_deferred`] left that to do,
    /// and removes the value files a crash left unnamed: one scan of the records as they were
    /// at open. Writes since then have kept their changes in the digests (a write XORs out what
    /// it replaced and XORs in itself), so the scan's digests XORed into them give the whole.
    pub fn rebuild_digests(&self) -> Result<(), StoreError> {
        let Some(rebuild) = self.rebuild.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(());
        };
        let started = Instant::now();
        let scanned = Digests::default();
        let named = self.scan(fjall::Readable::iter(&rebuild.snapshot, &self.records), &scanned, false)?;
        drop(rebuild.snapshot);
        self.digests.absorb(&scanned);
        self.remove_unnamed(rebuild.files, &named)?;
        self.whole.send_replace(true);
        log::info!(
            "digests rebuilt by a scan of every record in {:.1?} (the last stop was not clean)",
            started.elapsed()
        );
        Ok(())
    }

    /// Seconds without a write after which a node flushes its memtable
    /// ([`Store::flush_idle_memtable`]).
    pub const IDLE_FLUSH_SECONDS: u32 = 5;

    /// Rescans the digest buckets that writes left unsettled and that have been quiet long
    /// enough since (see `crate::digest`), each under its write lock, until about `budget`
    /// records were read; returns how many buckets. Buckets are taken in turn from where the
    /// last call stopped, so none waits behind the others.
    pub fn settle_quiet(&self, budget: u64) -> Result<usize, StoreError> {
        let Ok(digests) = self.digests() else { return Ok(0) };
        if digests.unsettled_count() == 0 {
            return Ok(0);
        }
        let (mut spent, mut settled) = (0, 0);
        let mut bucket = self.settle_cursor.load(Ordering::Relaxed);
        for _ in 0..digest::BUCKET_COUNT {
            if spent >= budget {
                break;
            }
            if digests.quiet_enough(bucket) {
                spent += 1 + self.settle_buckets(digests, &[bucket])?;
                settled += 1;
            }
            bucket = (bucket + 1) % digest::BUCKET_COUNT;
        }
        self.settle_cursor.store(bucket, Ordering::Relaxed);
        Ok(settled)
    }

    /// Rescans every unsettled digest bucket now; returns how many.
    pub fn settle_all(&self) -> Result<usize, StoreError> {
        let Ok(digests) = self.digests() else { return Ok(0) };
        let buckets: Vec<usize> = digests.unsettled().collect();
        self.settle_buckets(digests, &buckets)?;
        Ok(buckets.len())
    }

    /// The rate [`Store::settle_quiet`] is meant to be called at: records rescanned per second
    /// per node. About 2.5% of a core here (the scan after a crash reads ~2 M records/s); a
    /// node holding 8 M records settles after a burst that touched them all within 3 minutes.
    /// Unbounded, the rescans after a 30 s SET burst over 2 M keys took the GETs that followed
    /// from 90k to 75k/s (`bench/tune.sh`): CPU, and blocks they pushed out of the cache.
    pub const SETTLE_RECORDS_PER_SECOND: u64 = 50_000;

    /// Rescans and settles `buckets`; returns how many records it read.
    fn settle_buckets(&self, digests: &Digests, buckets: &[usize]) -> Result<u64, StoreError> {
        let mut records = 0;
        for &bucket in buckets {
            // Every write to the bucket takes this lock: none runs between the scan and the
            // settle, so the count is exact.
            let _guard = self.stripes[bucket % WRITE_STRIPES].lock().unwrap_or_else(|p| p.into_inner());
            let mut count = Count::default();
            self.walk_partition(
                bucket as Partition,
                crate::digest::BUCKET_DIGITS,
                None,
                |_, key, stored| {
                    count.add(
                        stored.fingerprint(&key),
                        stored.timestamp(),
                        matches!(stored, Stored::InFile { .. }),
                    );
                    Ok(ControlFlow::Continue(()))
                },
            )?;
            records += u64::from(count.records);
            digests.settle(bucket, count);
        }
        Ok(records)
    }

    /// Settles at once the unsettled buckets of `partition` (in a map of `digits` digits), as a
    /// purge leaves them: empty, so the rescans cost nothing, and the digests say so now.
    fn settle_partition(&self, partition: Partition, digits: u8) -> Result<usize, StoreError> {
        let Ok(digests) = self.digests() else { return Ok(0) };
        if digits > digest::BUCKET_DIGITS {
            return Ok(0);
        }
        let per_partition = 1usize << (4 * (digest::BUCKET_DIGITS - digits) as usize);
        let first = partition as usize * per_partition;
        let buckets: Vec<usize> =
            (first..first + per_partition).filter(|&b| digests.is_unsettled(b)).collect();
        self.settle_buckets(digests, &buckets)?;
        Ok(buckets.len())
    }

    /// Runs `f` with every write lock held: no write is under way while it runs.
    fn with_writes_held<T>(&self, f: impl FnOnce() -> T) -> T {
        let _guards: Vec<_> =
            self.stripes.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner())).collect();
        f()
    }

    /// One pass over `records`: XORs every record's fingerprint into `digests`, indexes the
    /// tombstones if `index_tombstones`; the value files the records name.
    fn scan(
        &self,
        records: fjall::Iter,
        digests: &Digests,
        index_tombstones: bool,
    ) -> Result<std::collections::HashSet<FileId>, StoreError> {
        let mut named = std::collections::HashSet::new();
        for item in records {
            let (stored_key, raw) = item.into_inner()?;
            let key = &stored_key[4..];
            let stored = decode_stored(key, raw)?;
            let in_file = matches!(stored, Stored::InFile { .. });
            digests.scanned(
                partition::hash_prefix(key),
                stored.fingerprint(key),
                stored.timestamp(),
                in_file,
            );
            if let Stored::InFile { file, .. } = stored {
                named.insert(file.id);
            } else if index_tombstones && stored.is_tombstone() {
                self.tombstones.insert(reaping::index_key(stored.timestamp(), &stored_key), &*stored_key)?;
            }
        }
        Ok(named)
    }

    /// Removes the value files among `files` that no record in `named` names (left by a crash).
    fn remove_unnamed(
        &self,
        files: Vec<FileId>,
        named: &std::collections::HashSet<FileId>,
    ) -> Result<(), StoreError> {
        for id in files.into_iter().filter(|id| !named.contains(id)) {
            log::info!("removing value file {id:016x}: no record names it (left by a crash)");
            self.values.remove(id)?;
        }
        Ok(())
    }

    /// A new value file, for a large value arriving (see [`Store::apply_file`]).
    pub fn new_value_file(&self) -> std::io::Result<crate::value_files::ValueWriter> {
        self.values.create()
    }

    /// The per-partition digests of what this store holds, once they are whole.
    pub fn digests(&self) -> Result<&Digests, Rebuilding> {
        match *self.whole.borrow() {
            true => Ok(&self.digests),
            false => Err(Rebuilding),
        }
    }

    /// The digests, once [`Store::rebuild_digests`] has made them whole.
    pub async fn whole_digests(&self) -> &Digests {
        let mut whole = self.whole.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail.
        let _ = whole.wait_for(|whole| *whole).await;
        &self.digests
    }

    /// Keeps `record` for `key` if it supersedes the record held (see [`Record::supersedes`]).
    /// On return the write has reached the OS; call [`Store::sync`] to make it crash-proof.
    pub fn apply(&self, key: &[u8], record: &Record) -> Result<Applied, StoreError> {
        self.apply_stored(key, &Stored::Inline(record.clone()), || encode(record))
    }

    /// [`Store::apply`] for a record already in its stored form (see [`StoredValue`]): a large
    /// value read straight into it is not copied again before the journal write.
    pub fn apply_encoded(&self, key: &[u8], stored: StoredValue) -> Result<Applied, StoreError> {
        let raw = Slice::from(stored.0);
        let candidate = decode_stored(key, raw.clone())?;
        self.apply_stored(key, &candidate, || raw)
    }

    /// [`Store::apply`] for a value already in its own durable file (see
    /// [`crate::value_files`]): the record names the file if it is kept; otherwise the file
    /// is removed.
    pub fn apply_file(
        &self,
        key: &[u8],
        timestamp: u64,
        value: FinishedValue,
    ) -> Result<Applied, StoreError> {
        let file = FileRef { length: value.length, hash: value.hash, id: value.id };
        let candidate = Stored::InFile { timestamp, file };
        let applied = self.apply_stored(key, &candidate, || encode_file_ref(timestamp, &file))?;
        if applied == Applied::Stored {
            value.referenced();
        }
        Ok(applied)
    }

    fn apply_stored(
        &self,
        key: &[u8],
        candidate: &Stored,
        raw: impl FnOnce() -> Slice,
    ) -> Result<Applied, StoreError> {
        let prefix = partition::hash_prefix(key);
        let stored_key = stored_key(prefix, key);
        let _guard = self.stripes[stripe_index(prefix)].lock().unwrap_or_else(|p| p.into_inner());
        let held = match self.records.get(&stored_key)? {
            Some(raw) => Some(decode_stored(key, raw)?),
            None => None,
        };
        if let Some(held) = &held {
            if let Some(kept) = self.keeps(candidate, held)? {
                return Ok(kept);
            }
        }
        if candidate.is_tombstone() {
            // The record and its index entry in one journal write.
            let mut batch = self.db.batch();
            batch.insert(
                &self.tombstones,
                reaping::index_key(candidate.timestamp(), &stored_key),
                stored_key.clone(),
            );
            batch.insert(&self.records, stored_key, raw());
            self.timed_write(|| batch.commit())?;
        } else {
            self.timed_write(|| self.records.insert(stored_key, raw()))?;
        }
        if let Some(held) = &held {
            self.digests.toggle(prefix, held.fingerprint(key));
            self.discard_after_sync(held);
        }
        self.digests.toggle(prefix, candidate.fingerprint(key));
        self.digests.wrote(prefix, candidate.timestamp(), matches!(candidate, Stored::InFile { .. }));
        drop(_guard);
        self.watchers.changed(key);
        Ok(Applied::Stored)
    }

    /// What happens when `candidate` meets `held` (see `common::version::compare`): `None` if
    /// it supersedes it, else why the store keeps `held`. Values in files are read only to
    /// break a tie of timestamps, and then a chunk at a time (see [`Store::compare_values`]).
    fn keeps(&self, candidate: &Stored, held: &Stored) -> Result<Option<Applied>, StoreError> {
        let order = match candidate.timestamp().cmp(&held.timestamp()) {
            std::cmp::Ordering::Equal => self.compare_values(candidate, held)?,
            unequal => unequal,
        };
        Ok(match order {
            std::cmp::Ordering::Greater => None,
            std::cmp::Ordering::Equal => Some(Applied::AlreadyHeld),
            std::cmp::Ordering::Less => Some(Applied::Superseded { by: held.timestamp() }),
        })
    }

    /// Runs one write of the engine (the journal append and the memtable insert), timed: the
    /// engine makes the writer wait there when flushes and compactions fall behind.
    fn timed_write(&self, write: impl FnOnce() -> fjall::Result<()>) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = write();
        let elapsed = started.elapsed();
        self.writes.fetch_add(1, Ordering::Relaxed);
        crate::metrics::engine_write(elapsed);
        if elapsed >= STALL {
            self.stalls.fetch_add(1, Ordering::Relaxed);
        }
        Ok(result?)
    }

    /// The order of two records of the same timestamp, as `common::version::compare` gives it,
    /// in bounded memory: a tombstone is above a value, and values compare by their bytes,
    /// those in files read side by side [`COMPARE_CHUNK`] at a time (two files with the same
    /// length and hash hold the same value and are not read).
    fn compare_values(&self, a: &Stored, b: &Stored) -> Result<std::cmp::Ordering, StoreError> {
        use std::cmp::Ordering;
        match (a.is_tombstone(), b.is_tombstone()) {
            (true, true) => return Ok(Ordering::Equal),
            (true, false) => return Ok(Ordering::Greater),
            (false, true) => return Ok(Ordering::Less),
            (false, false) => {}
        }
        match (a, b) {
            (Stored::Inline(x), Stored::Inline(y)) => return Ok(common::version::compare(x, y)),
            (Stored::InFile { file: x, .. }, Stored::InFile { file: y, .. })
                if (x.length, x.hash) == (y.length, y.hash) =>
            {
                return Ok(Ordering::Equal)
            }
            _ => {}
        }
        let reader = |stored: &Stored| -> Result<Box<dyn std::io::Read>, StoreError> {
            Ok(match stored {
                Stored::Inline(record) => {
                    Box::new(std::io::Cursor::new(record.value.clone().unwrap_or_default()))
                }
                Stored::InFile { file, .. } => Box::new(self.values.open_value(file.id, file.length)?),
            })
        };
        Ok(compare_readers(reader(a)?, reader(b)?)?)
    }

    /// Queues the value file of a replaced record for removal once the replacement is durable.
    fn discard_after_sync(&self, replaced: &Stored) {
        if let Stored::InFile { file, .. } = replaced {
            self.garbage.lock().unwrap_or_else(|p| p.into_inner()).push(file.id);
        }
    }

    /// The whole record, its value read from its file if it has one.
    fn load(&self, stored: Stored) -> Result<Record, StoreError> {
        Ok(match stored {
            Stored::Inline(record) => record,
            Stored::InFile { timestamp, file } => {
                Record::value(timestamp, self.values.read(file.id, file.length)?)
            }
        })
    }

    /// [`Store::apply`] for many records at once: one journal write for all of them. Each
    /// record is compared with what the store holds (or with an earlier record of the same
    /// call for the same key), exactly as if applied one by one in order.
    pub fn apply_many(&self, writes: &[(&[u8], &Record)]) -> Result<Vec<Applied>, StoreError> {
        let prefixes: Vec<u32> = writes.iter().map(|(key, _)| partition::hash_prefix(key)).collect();
        let stripes: std::collections::BTreeSet<usize> =
            prefixes.iter().map(|&prefix| stripe_index(prefix)).collect();
        // Locked in ascending order, so two concurrent calls cannot deadlock.
        let _guards: Vec<_> =
            stripes.iter().map(|&i| self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())).collect();
        let mut batch = self.db.batch();
        let mut newest: std::collections::HashMap<&[u8], &Record> = std::collections::HashMap::new();
        let mut toggles = Vec::new();
        let mut replaced = Vec::new();
        let mut applied = Vec::with_capacity(writes.len());
        for (&(key, record), &prefix) in writes.iter().zip(&prefixes) {
            let stored_key = stored_key(prefix, key);
            let held = match newest.get(key) {
                Some(&earlier) => Some(Stored::Inline(earlier.clone())),
                // Newer than every record of its bucket: it replaces whatever is held, unread
                // (see `crate::digest`). At scale that read was a file read, more than half of
                // the write's cost (`bench/tune.sh`, 2 M keys: SET 20k/s with it, 35k without).
                None if self.digests.may_skip_read(prefix, record.timestamp) => {
                    self.digests.skipped_read(prefix);
                    None
                }
                None => match self.records.get(&stored_key)? {
                    Some(raw) => Some(decode_stored(key, raw)?),
                    None => None,
                },
            };
            let candidate = Stored::Inline(record.clone());
            if let Some(held) = &held {
                if let Some(kept) = self.keeps(&candidate, held)? {
                    applied.push(kept);
                    continue;
                }
            }
            if record.is_tombstone() {
                batch.insert(
                    &self.tombstones,
                    reaping::index_key(record.timestamp, &stored_key),
                    stored_key.clone(),
                );
            }
            batch.insert(&self.records, stored_key, encode(record));
            if let Some(held) = held {
                toggles.push((prefix, held.fingerprint(key)));
                // Only records read from the store can name a file (a batch's own are inline).
                if let Stored::InFile { .. } = held {
                    replaced.push(held);
                }
            }
            toggles.push((prefix, candidate.fingerprint(key)));
            self.digests.wrote(prefix, record.timestamp, false);
            newest.insert(key, record);
            applied.push(Applied::Stored);
        }
        self.timed_write(|| batch.commit())?;
        for (prefix, fingerprint) in toggles {
            self.digests.toggle(prefix, fingerprint);
        }
        for held in &replaced {
            self.discard_after_sync(held);
        }
        for key in newest.keys() {
            self.watchers.changed(key);
        }
        Ok(applied)
    }

    /// The record held for `key`, tombstones included.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        match self.get_bounded(key, usize::MAX)? {
            Bounded::Found(record) => Ok(Some(record)),
            Bounded::Missing => Ok(None),
            Bounded::TooLarge => unreachable!("no value is longer than usize::MAX"),
        }
    }

    /// [`Store::get`], unless the value is longer than `max_value` bytes.
    pub fn get_bounded(&self, key: &[u8], max_value: usize) -> Result<Bounded, StoreError> {
        let stored_key = stored_key(partition::hash_prefix(key), key);
        let mut attempt = 0;
        loop {
            let Some(raw) = self.records.get(&stored_key)? else { return Ok(Bounded::Missing) };
            let stored = decode_stored(key, raw)?;
            if stored.value_len() > max_value as u64 {
                return Ok(Bounded::TooLarge);
            }
            match self.load(stored) {
                Ok(record) => return Ok(Bounded::Found(record)),
                // Replaced (and its file removed) between the lookup and the read: look again.
                Err(StoreError::ValueFile(e))
                    if e.kind() == std::io::ErrorKind::NotFound && attempt < READ_RETRIES =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The record held for `key`, tombstones included, without reading a value kept in a value
    /// file: the file is opened instead, so memory does not grow with the value. (Values kept
    /// in the engine, inline or in its blob files, are under [`crate::value_files::VALUE_FILE_BYTES`]
    /// and read whole.)
    pub fn open_record(&self, key: &[u8]) -> Result<Option<Readable>, StoreError> {
        let stored_key = stored_key(partition::hash_prefix(key), key);
        let mut attempt = 0;
        loop {
            let Some(raw) = self.records.get(&stored_key)? else { return Ok(None) };
            let (timestamp, file) = match decode_stored(key, raw)? {
                Stored::Inline(record) => return Ok(Some(Readable::Whole(record))),
                Stored::InFile { timestamp, file } => (timestamp, file),
            };
            match self.values.open_value(file.id, file.length) {
                Ok(opened) => {
                    let (length, hash) = (file.length, file.hash);
                    return Ok(Some(Readable::InFile { timestamp, length, hash, file: opened }));
                }
                // Replaced (and its file removed) between the lookup and the open: look again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < READ_RETRIES => {
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
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
        self.for_each_stored_in_partition(partition, digits, |key, stored| {
            visit(key, self.load(stored)?);
            Ok(())
        })
    }

    /// [`Store::for_each_in_partition`] without reading value files.
    fn for_each_stored_in_partition(
        &self,
        partition: Partition,
        digits: u8,
        mut visit: impl FnMut(Bytes, Stored) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.walk_partition(partition, digits, None, |_, key, stored| {
            visit(key, stored)?;
            Ok(ControlFlow::Continue(()))
        })
    }

    /// Calls `visit` with every record of `partition` (in a map of `digits` hex digits) from
    /// the stored position `from` (inclusive, as [`separator`] names one) on, in stored order,
    /// with its stored key, until `visit` breaks. A value kept in a file is not read: see
    /// [`Held`] and [`Store::load_held`].
    pub fn for_each_held_in_partition(
        &self,
        partition: Partition,
        digits: u8,
        from: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], Bytes, Held) -> Result<ControlFlow<()>, StoreError>,
    ) -> Result<(), StoreError> {
        self.walk_partition(partition, digits, from, |stored_key, key, stored| {
            visit(stored_key, key, Held(stored))
        })
    }

    /// The whole record of `held`, its value read from its file if it has one.
    pub fn load_held(&self, held: Held) -> Result<Record, StoreError> {
        self.load(held.0)
    }

    fn walk_partition(
        &self,
        partition: Partition,
        digits: u8,
        from: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], Bytes, Stored) -> Result<ControlFlow<()>, StoreError>,
    ) -> Result<(), StoreError> {
        let (start, end) = partition::prefix_range(partition, digits);
        let start = start.to_be_bytes();
        let lower = from.filter(|from| *from > &start[..]).unwrap_or(&start[..]).to_vec();
        for item in self.records.range(lower..) {
            let (stored_key, raw) = item.into_inner()?;
            let prefix = u32::from_be_bytes(stored_key[..4].try_into().expect("4-byte prefix"));
            if prefix > end {
                break;
            }
            let key = Bytes::copy_from_slice(&stored_key[4..]);
            let stored = decode_stored(&key, raw)?;
            if visit(&stored_key, key, stored)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Removes every record of `partition` (in a map of `digits` hex digits): a partition this
    /// node no longer holds. Returns how many records went; their value files go after the
    /// next sync. Writes that arrive meanwhile are kept only if they come after the scan.
    pub fn purge_partition(&self, partition: Partition, digits: u8) -> Result<u64, StoreError> {
        let mut keys = Vec::new();
        self.for_each_stored_in_partition(partition, digits, |key, _| {
            keys.push(key);
            Ok(())
        })?;
        for key in &keys {
            let prefix = partition::hash_prefix(key);
            let stored_key = stored_key(prefix, key);
            let _guard = self.stripes[stripe_index(prefix)].lock().unwrap_or_else(|p| p.into_inner());
            if let Some(raw) = self.records.get(&stored_key)? {
                let held = decode_stored(key, raw)?;
                self.records.remove(stored_key)?;
                self.digests.toggle(prefix, held.fingerprint(key));
                self.discard_after_sync(&held);
            }
        }
        self.settle_partition(partition, digits)?;
        Ok(keys.len() as u64)
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

    /// The live keys of one partition that start with `scan.prefix`, in stored order (hash
    /// prefix, then key bytes), from the inclusive position `scan.from`, until a budget of
    /// [`KeyScan`] runs out or the partition ends. Tombstones are skipped. Values are never read:
    /// only the keys of the index, and for a key that matches the prefix the size of its
    /// record (a tombstone is exactly its header), so a value kept in a blob file or a value
    /// file costs nothing. Memory holds the keys returned, nothing else.
    ///
    /// The records are not read from one snapshot: a write applied during the scan may or may
    /// not be seen, as with any read that overlaps a write.
    pub fn scan_keys(&self, scan: &KeyScan<'_>) -> Result<ScannedKeys, StoreError> {
        let (start, end) = partition::prefix_range(scan.partition, scan.digits);
        let start = start.to_be_bytes();
        let lower = scan.from.filter(|from| *from > &start[..]).unwrap_or(&start[..]).to_vec();
        let upper = end.checked_add(1).map(u32::to_be_bytes);
        let mut found = ScannedKeys { keys: Vec::new(), next: None, scanned: 0, key_bytes: 0 };
        if upper.is_some_and(|upper| lower.as_slice() >= &upper[..]) {
            return Ok(found);
        }
        let upper = upper.map_or(Bound::Unbounded, |upper| Bound::Excluded(upper.to_vec()));
        let mut records = self.records.range((Bound::Included(lower), upper));
        let stopped_after = loop {
            let Some(item) = records.next() else { break None };
            let stored_key = item.key()?;
            found.scanned += 1;
            let key = &stored_key[4..];
            if key.starts_with(scan.prefix) && self.is_live(&stored_key)? {
                found.key_bytes += key.len();
                found.keys.push(Bytes::copy_from_slice(key));
            }
            if found.keys.len() >= scan.limit
                || found.key_bytes >= scan.max_bytes
                || found.scanned >= scan.max_scan
            {
                break Some(stored_key);
            }
        };
        if let Some(last) = stopped_after {
            if let Some(item) = records.next() {
                found.next = Some(separator(&last, &item.key()?));
            }
        }
        Ok(found)
    }

    /// Whether the record under `stored_key` is a live value, read without its value: a
    /// tombstone is exactly [`HEADER_BYTES`] long, so only a record of that size is read (an
    /// empty value has that size too).
    fn is_live(&self, stored_key: &[u8]) -> Result<bool, StoreError> {
        Ok(match self.records.size_of(stored_key)? {
            None => false,
            Some(size) if size as usize == HEADER_BYTES => {
                self.records.get(stored_key)?.is_some_and(|raw| raw[0] != FLAG_TOMBSTONE)
            }
            Some(_) => true,
        })
    }

    /// The versions of every record of `partition`, in key-hash order (values are not kept).
    pub fn versions(&self, partition: Partition, digits: u8) -> Result<Vec<VersionEntry>, StoreError> {
        self.versions_from(partition, digits, None)
    }

    /// [`Store::versions`] from the stored position `from` on (inclusive; see [`separator`]).
    pub fn versions_from(
        &self,
        partition: Partition,
        digits: u8,
        from: Option<&[u8]>,
    ) -> Result<Vec<VersionEntry>, StoreError> {
        let mut out = Vec::new();
        self.walk_partition(partition, digits, from, |_, key, stored| {
            out.push(stored.version(key));
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// Forces every write applied so far to stable storage (fsync of the journal), then
    /// removes the value files of records replaced before it began.
    pub fn sync(&self) -> Result<(), StoreError> {
        let replaced = std::mem::take(&mut *self.garbage.lock().unwrap_or_else(|p| p.into_inner()));
        if let Err(e) = self.db.persist(PersistMode::SyncData) {
            self.garbage.lock().unwrap_or_else(|p| p.into_inner()).extend(replaced);
            return Err(e.into());
        }
        for id in replaced {
            if let Err(e) = self.values.remove(id) {
                log::warn!("cannot remove replaced value file {id:016x}: {e}");
            }
        }
        Ok(())
    }

    /// Approximate number of records (fast; may count overwritten versions not yet compacted).
    pub fn approximate_len(&self) -> u64 {
        self.records.approximate_len() as u64
    }

    /// Disk space of the engine's files, if it can tell.
    pub fn disk_space(&self) -> Option<u64> {
        self.db.disk_space().ok()
    }

    /// Engine writes since open (see [`Idle`]).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Starts a flush of the records' memtable if the unflushed writes come to `min_bytes` or
    /// more; whether it did. For a store whose writes have paused ([`Idle`]): until the
    /// memtable fills, every read searches it (a skiplist of up to ~100,000 records, a cache
    /// miss per level), where a flushed table costs a filter check. GETs after a 30 s SET burst
    /// over 2 M keys measured 5–6% faster with it (`bench/tune.sh`, `docs/performance.md`).
    /// The floor keeps a trickle of writes from making many tiny tables, each merged with
    /// level 1 in turn.
    pub fn flush_idle_memtable(&self, min_bytes: u64) -> Result<bool, StoreError> {
        if self.db.write_buffer_size() < min_bytes.max(1) {
            return Ok(false);
        }
        Ok(self.records.rotate_memtable()?)
    }

    /// The engine's memory use against its bounds (cheap: no disk access).
    pub fn engine_stats(&self) -> EngineStats {
        EngineStats {
            cache_bytes: self.db.cache_size(),
            cache_capacity_bytes: self.db.cache_capacity(),
            write_buffer_bytes: self.db.write_buffer_size(),
            approximate_records: self.approximate_len(),
            digests_whole: *self.whole.borrow(),
            unsettled_buckets: self.digests().map_or(0, |d| d.unsettled_count() as u64),
            lsm: self.lsm_stats(),
        }
    }

    fn lsm_stats(&self) -> LsmStats {
        let m = self.records.metrics();
        let loads =
            |cached: usize, total: usize| BlockLoads { cached: cached as u64, read: (total - cached) as u64 };
        LsmStats {
            tables: self.records.table_count() as u64,
            l0_tables: self.records.l0_table_count() as u64,
            sealed_memtables: self.records.sealed_memtable_count() as u64,
            flushes_queued: self.db.outstanding_flushes() as u64,
            compactions_running: self.db.active_compactions() as u64,
            compactions_done: self.db.compactions_completed() as u64,
            compaction_ms: self.db.time_compacting().as_millis() as u64,
            data_blocks: loads(m.data_block_load_cached_count(), m.data_block_load_count()),
            index_blocks: loads(m.index_block_load_cached_count(), m.index_block_load_count()),
            filter_blocks: loads(m.filter_block_load_cached_count(), m.filter_block_load_count()),
            filter_queries: m.filter_queries() as u64,
            filter_skips: m.io_skipped_by_filter() as u64,
            write_stalls: self.stalls.load(Ordering::Relaxed),
        }
    }
}

/// What [`Store::scan_keys`] looks for, and when it stops. Each budget stops the scan after
/// the record that reached it, so a scan examines at least one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyScan<'a> {
    /// The partition scanned, in a map of `digits` hex digits.
    pub partition: Partition,
    pub digits: u8,
    /// Only keys that start with these bytes are returned (empty: every key).
    pub prefix: &'a [u8],
    /// Where to start, inclusive: a position in the order of stored keys (hash prefix, then
    /// key), such as a [`ScannedKeys::next`]; `None`: the partition's start. A position before
    /// the partition is its start; one after it finds nothing.
    pub from: Option<&'a [u8]>,
    /// The most keys returned.
    pub limit: usize,
    /// Stop once the keys returned add up to this many bytes.
    pub max_bytes: usize,
    /// The most records examined, whether they match, are live or not: a prefix that matches
    /// few keys cannot make one scan long.
    pub max_scan: usize,
}

/// What a [`KeyScan`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedKeys {
    /// Live keys with the prefix, in stored order.
    pub keys: Vec<Bytes>,
    /// Where to resume (inclusive) when a budget stopped the scan before the partition's end:
    /// a short position after every record examined and at or before the next record (see
    /// [`separator`]). `None`: the partition has no record left after those examined.
    pub next: Option<Vec<u8>>,
    /// Records examined.
    pub scanned: usize,
    /// Bytes of the keys returned.
    pub key_bytes: usize,
}

/// Gives the engine's worker threads (flushes and compactions, named `fjall:worker` and
/// started by `Database::open`) the `niceness` (0 to 19), so that they yield the cores to the
/// threads serving requests (see `--engine-niceness`). On Linux a thread's niceness is its own,
/// so the other threads keep theirs. Best effort: elsewhere, or if the threads cannot be found,
/// the engine runs at the normal priority; returns how many threads were given it.
pub fn set_engine_niceness(niceness: i32) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    let mut set = 0;
    for task in tasks.flatten() {
        let named = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<libc::id_t>().ok()) else {
            continue;
        };
        if named.trim_end() == "fjall:worker" && renice(tid, niceness) {
            set += 1;
        }
    }
    set
}

/// Gives the calling thread the `niceness` (see [`set_engine_niceness`]); whether it took.
pub fn set_thread_niceness(niceness: i32) -> bool {
    renice(0, niceness) // 0: the calling thread
}

fn renice(tid: libc::id_t, niceness: i32) -> bool {
    // SAFETY: setpriority has no memory effects; a failure leaves the thread as it was.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, niceness) == 0 }
}

/// The shortest byte string `s` with `last < s <= next`, for `last < next`: `next` up to the
/// first byte where the two differ. A position named this way is usually a few bytes long
/// whatever the keys' length, since neighbouring stored keys mostly differ within their
/// 4-byte hash prefix. For neighbours `last` and `next` of one store, resuming at `s` skips no
/// record that store holds; a record another replica holds between them is one this store
/// did not have when it scanned.
pub fn separator(last: &[u8], next: &[u8]) -> Vec<u8> {
    debug_assert!(last < next, "separator of keys out of order");
    let common = last.iter().zip(next).take_while(|(a, b)| a == b).count();
    next[..(common + 1).min(next.len())].to_vec()
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
    /// Room for a value of `length` bytes with `timestamp`; fill it through [`StoredValue::write_at`].
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

/// Where a value file is and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileRef {
    length: u64,
    /// [`digest::value_hash`] of the value.
    hash: u128,
    id: FileId,
}

/// A record as a partition walk finds it ([`Store::for_each_held_in_partition`]): a value
/// kept in a file is not read until [`Store::load_held`].
#[derive(Debug, Clone)]
pub struct Held(Stored);

impl Held {
    pub fn timestamp(&self) -> u64 {
        self.0.timestamp()
    }

    /// The value's length (0 for a tombstone).
    pub fn value_len(&self) -> u64 {
        self.0.value_len()
    }

    /// The record's version, as the diff protocol lists it (no value read).
    pub fn version(&self, key: Bytes) -> VersionEntry {
        self.0.version(key)
    }
}

/// A record as stored: whole, or with its value in a file not yet read.
#[derive(Debug, Clone)]
enum Stored {
    Inline(Record),
    InFile { timestamp: u64, file: FileRef },
}

impl Stored {
    fn is_tombstone(&self) -> bool {
        matches!(self, Stored::Inline(record) if record.is_tombstone())
    }

    fn timestamp(&self) -> u64 {
        match self {
            Stored::Inline(record) => record.timestamp,
            Stored::InFile { timestamp, .. } => *timestamp,
        }
    }

    fn value_len(&self) -> u64 {
        match self {
            Stored::Inline(record) => record.value.as_ref().map_or(0, |v| v.len() as u64),
            Stored::InFile { file, .. } => file.length,
        }
    }

    fn fingerprint(&self, key: &[u8]) -> Fingerprint {
        match self {
            Stored::Inline(record) => digest::fingerprint(key, record),
            Stored::InFile { timestamp, file } => digest::fingerprint_of(key, *timestamp, Some(file.hash)),
        }
    }

    fn version(&self, key: Bytes) -> VersionEntry {
        match self {
            Stored::Inline(record) => VersionEntry::of(key, record),
            Stored::InFile { timestamp, file } => VersionEntry {
                key,
                timestamp: *timestamp,
                tombstone: false,
                value_fingerprint: file.hash as u64,
            },
        }
    }
}

fn encode_file_ref(timestamp: u64, file: &FileRef) -> Slice {
    let mut raw = Vec::with_capacity(HEADER_BYTES + FILE_REF_BYTES);
    raw.push(FLAG_IN_FILE);
    raw.extend_from_slice(&timestamp.to_be_bytes());
    raw.extend_from_slice(&file.length.to_be_bytes());
    raw.extend_from_slice(&file.hash.to_be_bytes());
    raw.extend_from_slice(&file.id.to_be_bytes());
    raw.into()
}

/// The record stored as `raw`; an inline value shares `raw`'s buffer (no copy).
fn decode_stored(key: &[u8], raw: Slice) -> Result<Stored, StoreError> {
    let corrupt = |reason| StoreError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), reason };
    if raw.len() < HEADER_BYTES {
        return Err(corrupt("shorter than its header"));
    }
    let timestamp = u64::from_be_bytes(raw[1..HEADER_BYTES].try_into().expect("8 bytes"));
    match raw[0] {
        0 => Ok(Stored::Inline(Record::value(timestamp, Bytes::from_owner(raw).slice(HEADER_BYTES..)))),
        FLAG_TOMBSTONE if raw.len() == HEADER_BYTES => Ok(Stored::Inline(Record::tombstone(timestamp))),
        FLAG_TOMBSTONE => Err(corrupt("tombstone with a value")),
        FLAG_IN_FILE if raw.len() == HEADER_BYTES + FILE_REF_BYTES => {
            let field = |at: usize, len: usize| &raw[HEADER_BYTES + at..HEADER_BYTES + at + len];
            let file = FileRef {
                length: u64::from_be_bytes(field(0, 8).try_into().expect("8 bytes")),
                hash: u128::from_be_bytes(field(8, 16).try_into().expect("16 bytes")),
                id: u64::from_be_bytes(field(24, 8).try_into().expect("8 bytes")),
            };
            Ok(Stored::InFile { timestamp, file })
        }
        FLAG_IN_FILE => Err(corrupt("value file reference of the wrong length")),
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
    fn idle_says_once_per_pause_when_writes_stopped_long_enough() {
        let mut idle = Idle::default();
        // (writes since open, whether the pause is long enough now), one second apart.
        let table =
            [(5, false), (5, false), (5, true), (5, false), (5, false), (6, false), (6, false), (6, true)];
        for (second, (writes, expected)) in table.into_iter().enumerate() {
            assert_eq!(idle.tick(writes, 2), expected, "second {second}");
        }
    }

    #[test]
    fn an_idle_flush_empties_the_memtable_once_it_holds_enough() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        assert!(!store.flush_idle_memtable(0).unwrap(), "nothing written: nothing to flush");
        store.apply(b"k", &value(1, "v")).unwrap();
        assert_eq!(store.writes(), 1);
        assert!(!store.flush_idle_memtable(1 << 20).unwrap(), "less than the floor");
        assert!(store.flush_idle_memtable(0).unwrap());
        assert!(!store.flush_idle_memtable(0).unwrap(), "already flushed");
        assert_eq!(store.get(b"k").unwrap(), Some(value(1, "v")));
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
    fn the_engines_threads_yield_to_the_request_threads() {
        let dir = tempfile::tempdir().unwrap();
        let _store = Store::open(dir.path(), 8 << 20, 1 << 20).unwrap();
        // At least this store's workers (other tests' stores may be open in this process too).
        let found = set_engine_niceness(10);
        assert!(found >= MIN_ENGINE_WORKERS, "the engine's threads are found by name: {found}");
        let niceness = |stat: &str| -> i32 {
            // Fields after the command's closing parenthesis; niceness is field 19 of the line.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            rest.split(' ').nth(16).unwrap().parse().unwrap()
        };
        let mut engine = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            if comm.trim_end() == "fjall:worker" {
                engine.push(niceness(&stat));
            }
        }
        assert!(!engine.is_empty() && engine.iter().all(|&n| n == 10), "{engine:?}");
        let own = niceness(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
        assert!(own < 10, "this thread keeps its priority");
        let other = std::thread::spawn(move || {
            assert!(set_thread_niceness(12));
            niceness(&std::fs::read_to_string("/proc/thread-self/stat").unwrap())
        });
        assert_eq!(other.join().unwrap(), 12, "a thread can yield alone");
        assert_eq!(niceness(&std::fs::read_to_string("/proc/thread-self/stat").unwrap()), own);
    }

    #[test]
    fn the_engine_counts_its_tables_and_where_reads_found_their_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 8 << 20, 1 << 20).unwrap();
        let before = store.engine_stats().lsm;
        assert_eq!((before.tables, before.filter_queries), (0, 0), "{before:?}");
        for i in 0..2000u32 {
            store.apply(&i.to_be_bytes(), &value(1, "a value of some length")).unwrap();
        }
        store.compact().unwrap();
        for i in 0..2000u32 {
            assert!(store.get(&i.to_be_bytes()).unwrap().is_some());
        }
        assert!(store.get(b"never written").unwrap().is_none());
        let lsm = store.engine_stats().lsm;
        assert!(lsm.tables >= 1 && lsm.compactions_done >= 1, "{lsm:?}");
        assert_eq!(lsm.sealed_memtables, 0, "{lsm:?}");
        assert!(lsm.filter_queries >= lsm.filter_skips && lsm.filter_skips >= 1, "the absent key: {lsm:?}");
        let data = lsm.data_blocks;
        assert!(data.cached + data.read >= 2000 && data.cached > 0, "{lsm:?}");
        assert_eq!(lsm.write_stalls, 0, "{lsm:?}");
    }

    #[test]
    fn streams_compare_like_their_bytes_however_they_are_read() {
        /// Hands out at most `step` bytes per read, as a file or socket may.
        struct Trickle<'a>(&'a [u8], usize);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let long: Vec<u8> = (0..3 * COMPARE_CHUNK + 5).map(|i| (i % 251) as u8).collect();
        let mut longer_last = long.clone();
        *longer_last.last_mut().unwrap() += 1;
        let cases: [(&[u8], &[u8]); 6] = [
            (b"", b""),
            (b"", b"a"),
            (b"abc", b"abd"),
            (b"ab", b"abc"),
            (&long, &long),
            (&long, &longer_last),
        ];
        for (a, b) in cases {
            for (sa, sb) in [(1, 7), (3, COMPARE_CHUNK), (COMPARE_CHUNK, 5)] {
                let ordering = compare_readers(Trickle(a, sa), Trickle(b, sb)).unwrap();
                assert_eq!(ordering, a.cmp(b), "{} vs {} bytes, steps {sa}/{sb}", a.len(), b.len());
                assert_eq!(compare_readers(Trickle(b, sb), Trickle(a, sa)).unwrap(), b.cmp(a));
            }
        }
    }

    #[test]
    fn keeps_only_newer_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        assert_eq!(store.apply(b"k", &value(2, "b")).unwrap(), Applied::Stored);
        assert_eq!(store.apply(b"k", &value(1, "z")).unwrap(), Applied::Superseded { by: 2 });
        assert_eq!(store.apply(b"k", &value(2, "b")).unwrap(), Applied::AlreadyHeld, "replayed write");
        assert_eq!(store.apply(b"k", &value(2, "a")).unwrap(), Applied::Superseded { by: 2 }, "tie lost");
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
        assert_eq!(store.apply_encoded(b"k", older).unwrap(), Applied::Superseded { by: 7 });
        let reference = tempfile::tempdir().unwrap();
        let reference = Store::open(reference.path(), CACHE, MEMTABLE).unwrap();
        reference.apply(b"k", &value(7, "helloworld")).unwrap();
        assert_eq!(store.digests().unwrap().all(2), reference.digests().unwrap().all(2));
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
        let lost = |by| Superseded { by };
        assert_eq!(expected, [Stored, Stored, lost(5), Stored, lost(9), Stored, AlreadyHeld]);
        for key in [&b"a"[..], b"b", b"c", b"held"] {
            assert_eq!(many.get(key).unwrap(), one.get(key).unwrap());
        }
        assert_eq!(many.get(b"a").unwrap(), Some(value(7, "a7")));
        // New keys in a fresh store are newer than anything in their buckets: written without
        // a read, their partitions unsettled until a rescan.
        let unsettled = |p| many.digests().unwrap().partition(p, 2) == digest::UNSETTLED;
        assert!(unsettled(partition::of(b"a", 2)) && unsettled(partition::of(b"c", 2)));
        assert!(!unsettled(partition::of(b"held", 2)), "the write older than what was held read it");
        assert!(many.settle_all().unwrap() >= 2);
        assert_eq!(
            many.digests().unwrap().all(2),
            one.digests().unwrap().all(2),
            "digests follow batched writes"
        );
        assert_eq!(many.apply_many(&[]).unwrap(), []);
    }

    #[test]
    fn tombstones_hide_values_and_block_late_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        store.apply(b"k", &value(1, "a")).unwrap();
        assert_eq!(store.apply(b"k", &Record::tombstone(5)).unwrap(), Applied::Stored);
        assert_eq!(store.apply(b"k", &value(4, "late")).unwrap(), Applied::Superseded { by: 5 });
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
    fn separators_are_short_and_between_their_neighbours() {
        let cases: &[(&[u8], &[u8], &[u8])] = &[
            (b"\x12\x34\x56\x78key", b"\x12\x34\x56\x99other", b"\x12\x34\x56\x99"),
            (b"\x12\xff\xff\xffzz", b"\x13\x00\x00\x00a", b"\x13"),
            (b"\x00\x00\x00\x01abc", b"\x00\x00\x00\x01abd", b"\x00\x00\x00\x01abd"),
            (b"\x00\x00\x00\x01ab", b"\x00\x00\x00\x01abc", b"\x00\x00\x00\x01abc"),
            (b"\x00\x00\x00\x01ab", b"\x00\x00\x00\x01b", b"\x00\x00\x00\x01b"),
            (b"", b"\x00", b"\x00"),
        ];
        for &(last, next, expected) in cases {
            let between = separator(last, next);
            assert_eq!(between, expected, "{last:?} .. {next:?}");
            assert!(last < between.as_slice() && between.as_slice() <= next, "{last:?} .. {next:?}");
        }
    }

    /// Keys from `scan_keys` over every partition, resuming at each `next`, with `budgets`.
    fn list_all(store: &Store, digits: u8, prefix: &[u8], budgets: (usize, usize, usize)) -> Vec<Bytes> {
        let (limit, max_bytes, max_scan) = budgets;
        let mut keys = Vec::new();
        for partition in 0..partition::count(digits) {
            let mut from: Option<Vec<u8>> = None;
            loop {
                let scan =
                    KeyScan { partition, digits, prefix, from: from.as_deref(), limit, max_bytes, max_scan };
                let found = store.scan_keys(&scan).unwrap();
                assert!(found.keys.len() <= limit && found.scanned <= max_scan, "{budgets:?}");
                assert_eq!(found.key_bytes, found.keys.iter().map(Bytes::len).sum::<usize>());
                for key in &found.keys {
                    assert_eq!(partition::of(key, digits), partition, "a key outside its partition");
                }
                keys.extend(found.keys);
                match found.next {
                    Some(next) => {
                        assert!(from.as_ref().is_none_or(|from| next > *from), "no progress");
                        from = Some(next);
                    }
                    None => break,
                }
            }
        }
        keys
    }

    #[test]
    fn key_scans_list_each_live_key_with_the_prefix_once_whatever_the_budgets() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        let mut live = std::collections::BTreeSet::new();
        for i in 0..300u64 {
            let key = format!("p/{i}");
            store.apply(key.as_bytes(), &value(i + 1, "v")).unwrap();
            store.apply(format!("q/{i}").as_bytes(), &value(i + 1, "v")).unwrap();
            if i.is_multiple_of(7) {
                store.apply(key.as_bytes(), &Record::tombstone(1000)).unwrap();
            } else {
                live.insert(Bytes::from(key));
            }
        }
        // Binary keys; an empty value (the size of a tombstone); a value in a blob file and
        // one in a value file; a tombstone alone; and a key equal to the prefix.
        let odd: [&[u8]; 4] = [b"p/\x00\xff/%&\n", b"p/empty", b"p/blob", b"p/"];
        store.apply(odd[0], &value(1, "bin")).unwrap();
        store.apply(odd[1], &value(1, "")).unwrap();
        store.apply(odd[2], &Record::value(1, Bytes::from(vec![1u8; 256 << 10]))).unwrap();
        store.apply(odd[3], &value(1, "v")).unwrap();
        store.apply_file(b"p/file", 1, value_file(&store, &[2; 5000])).unwrap();
        store.apply(b"p/deleted", &Record::tombstone(5)).unwrap();
        live.extend(odd.iter().map(|k| Bytes::copy_from_slice(k)).chain([Bytes::from_static(b"p/file")]));
        let stored_order = |keys: &[Bytes]| {
            keys.windows(2).all(|w| {
                (partition::hash_prefix(&w[0]), &w[0][..]) < (partition::hash_prefix(&w[1]), &w[1][..])
            })
        };
        let unlimited = usize::MAX;
        let budgets = [
            (unlimited, unlimited, unlimited),
            (1, unlimited, unlimited),
            (7, unlimited, 5),
            (unlimited, 10, unlimited),
            (unlimited, unlimited, 1),
        ];
        for digits in [1u8, 2] {
            for budget in budgets {
                let keys = list_all(&store, digits, b"p/", budget);
                assert!(stored_order(&keys), "digits {digits} {budget:?}: not in stored order");
                let listed: std::collections::BTreeSet<Bytes> = keys.iter().cloned().collect();
                assert_eq!(listed.len(), keys.len(), "digits {digits} {budget:?}: a key twice");
                assert_eq!(listed, live, "digits {digits} {budget:?}");
            }
        }
        assert_eq!(list_all(&store, 1, b"", (50, unlimited, unlimited)).len(), live.len() + 300);
        assert!(list_all(&store, 1, b"nothing", (10, unlimited, 100)).is_empty());
    }

    #[test]
    fn a_key_scan_starts_where_it_is_told_and_stays_in_its_partition() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        for i in 0..200u64 {
            store.apply(format!("k{i}").as_bytes(), &value(i + 1, "v")).unwrap();
        }
        let scan = |partition, from: Option<&[u8]>| {
            let unlimited = usize::MAX;
            let scan = KeyScan {
                partition,
                digits: 1,
                prefix: b"",
                from,
                limit: unlimited,
                max_bytes: unlimited,
                max_scan: unlimited,
            };
            store.scan_keys(&scan).unwrap()
        };
        let whole = scan(5, None);
        assert!(whole.next.is_none() && whole.keys.len() == whole.scanned && !whole.keys.is_empty());
        assert_eq!(scan(5, Some(b"\x00")), whole, "a position before the partition is its start");
        assert_eq!(scan(5, Some(b"\x50")), whole, "a short position: the same as padded with zeros");
        assert!(scan(5, Some(b"\x60")).keys.is_empty(), "a position after the partition");
        assert!(scan(15, Some(b"\xff\xff\xff\xff\xff")).keys.is_empty(), "after the last partition");
        let second = &whole.keys[1];
        let mut position = partition::hash_prefix(second).to_be_bytes().to_vec();
        position.extend_from_slice(second);
        assert_eq!(scan(5, Some(&position)).keys, whole.keys[1..], "inclusive of its position");
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
        assert_eq!(a.digests().unwrap().all(2), b.digests().unwrap().all(2));
        a.apply(b"key-3", &Record::tombstone(100)).unwrap();
        assert_ne!(a.digests().unwrap().all(2), b.digests().unwrap().all(2));
        b.apply(b"key-3", &Record::tombstone(100)).unwrap();
        b.apply(b"key-3", &value(1, "late")).unwrap(); // superseded: no change
        assert_eq!(a.digests().unwrap().all(2), b.digests().unwrap().all(2));
        let before = a.digests().unwrap().all(2);
        drop(a);
        assert_eq!(Store::open(dir.path(), CACHE, MEMTABLE).unwrap().digests().unwrap().all(2), before);
        let versions = b.versions(partition::of(b"key-3", 2), 2).unwrap();
        let entry = versions.iter().find(|v| v.key.as_ref() == b"key-3").unwrap();
        assert_eq!((entry.timestamp, entry.tombstone), (100, true));
    }

    #[test]
    fn corrupt_records_are_reported_not_misread() {
        let raw = |bytes: &[u8]| Slice::from(bytes);
        let decode = |raw: Slice| match decode_stored(b"k", raw) {
            Ok(Stored::Inline(record)) => Ok(record),
            Ok(Stored::InFile { .. }) => panic!("not a file reference"),
            Err(e) => Err(e),
        };
        assert!(decode(raw(&[0, 1, 2])).is_err());
        assert!(decode(raw(&[9, 0, 0, 0, 0, 0, 0, 0, 1])).is_err());
        assert!(decode(raw(&[1, 0, 0, 0, 0, 0, 0, 0, 1, b'x'])).is_err());
        assert!(decode(raw(&[2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0])).is_err(), "a truncated file reference");
        let record = value(42, "payload");
        assert_eq!(decode(encode(&record)).unwrap(), record);
        assert_eq!(decode(encode(&Record::tombstone(7))).unwrap(), Record::tombstone(7));
        let file = FileRef { length: 5, hash: 0x0123_4567_89ab_cdef_0011_2233_4455_6677, id: 99 };
        match decode_stored(b"k", encode_file_ref(3, &file)).unwrap() {
            Stored::InFile { timestamp, file: decoded } => assert_eq!((timestamp, decoded), (3, file)),
            other => panic!("decoded as {other:?}"),
        }
    }

    /// `value` written to a value file of `store`, durable and not yet named by a record.
    fn value_file(store: &Store, value: &[u8]) -> FinishedValue {
        let mut writer = store.values.create().unwrap();
        writer.write(value).unwrap();
        writer.finish().unwrap()
    }

    #[test]
    fn a_value_in_its_own_file_reads_scans_and_fingerprints_like_an_inline_one() {
        let dir = tempfile::tempdir().unwrap();
        let (in_files, inline) = (dir.path().join("files"), dir.path().join("inline"));
        let (a, b) = (
            Store::open(&in_files, CACHE, MEMTABLE).unwrap(),
            Store::open(&inline, CACHE, MEMTABLE).unwrap(),
        );
        let big = Bytes::from(vec![5u8; 3 << 20]);
        assert_eq!(a.apply_file(b"big", 10, value_file(&a, &big)).unwrap(), Applied::Stored);
        assert_eq!(b.apply(b"big", &Record::value(10, big.clone())).unwrap(), Applied::Stored);
        assert_eq!(a.get(b"big").unwrap(), Some(Record::value(10, big.clone())));
        assert_eq!(a.get_bounded(b"big", 1 << 20).unwrap(), Bounded::TooLarge);
        assert_eq!(
            a.digests().unwrap().all(2),
            b.digests().unwrap().all(2),
            "the two forms must fingerprint alike"
        );
        let partition = partition::of(b"big", 2);
        assert_eq!(a.versions(partition, 2).unwrap(), b.versions(partition, 2).unwrap());
        assert_eq!(a.scan_partition(partition, 2).unwrap(), b.scan_partition(partition, 2).unwrap());
        drop(a);
        let a = Store::open(&in_files, CACHE, MEMTABLE).unwrap();
        assert_eq!(a.get(b"big").unwrap(), Some(Record::value(10, big)), "the record survives reopening");
        assert_eq!(
            a.digests().unwrap().all(2),
            b.digests().unwrap().all(2),
            "digests rebuilt at open without reading the file"
        );
    }

    #[test]
    fn a_write_newer_than_its_bucket_skips_the_read_and_an_older_one_still_loses() {
        let (dir, reference) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        let reference = Store::open(reference.path(), CACHE, MEMTABLE).unwrap();
        let p = partition::of(b"k", 2);
        let digest_of = |store: &Store| store.digests().unwrap().partition(p, 2);
        let batch =
            |store: &Store, record: Record| store.apply_many(&[(b"k".as_slice(), &record)]).unwrap()[0];
        assert_eq!(batch(&store, value(10, "first")), Applied::Stored);
        assert_eq!(batch(&store, value(20, "second")), Applied::Stored);
        assert_eq!(digest_of(&store), digest::UNSETTLED, "the second write replaced the first unread");
        // Older than the bucket's newest: read, compared, and refused as ever.
        assert_eq!(batch(&store, value(15, "late")), Applied::Superseded { by: 20 });
        assert_eq!(batch(&store, value(20, "second")), Applied::AlreadyHeld);
        assert_eq!(batch(&store, value(20, "the greater value")), Applied::Stored);
        assert_eq!(store.get(b"k").unwrap(), Some(value(20, "the greater value")));
        // A bucket written a moment ago is not quiet yet; a rescan settles it exactly.
        assert_eq!(store.settle_quiet(u64::MAX).unwrap(), 0);
        reference.apply(b"k", &value(20, "the greater value")).unwrap();
        assert_eq!(store.settle_all().unwrap(), 1);
        assert_eq!(digest_of(&store), digest_of(&reference));
        assert_ne!(digest_of(&store), digest::UNSETTLED);
        // Quiet for long enough, an unsettled bucket settles by itself.
        assert_eq!(batch(&store, Record::tombstone(30)), Applied::Stored);
        assert_eq!(digest_of(&store), digest::UNSETTLED);
        store.digests().unwrap().advance(10);
        assert_eq!(store.engine_stats().unsettled_buckets, 1);
        assert_eq!(store.settle_quiet(u64::MAX).unwrap(), 1);
        assert_eq!(store.engine_stats().unsettled_buckets, 0);
        reference.apply(b"k", &Record::tombstone(30)).unwrap();
        assert_eq!(digest_of(&store), digest_of(&reference));
    }

    #[test]
    fn a_purge_settles_the_buckets_it_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        for ts in [1, 2] {
            store.apply_many(&[(b"k".as_slice(), &value(ts, "v"))]).unwrap(); // the second unread
        }
        let p = partition::of(b"k", 2);
        assert_eq!(store.digests().unwrap().partition(p, 2), digest::UNSETTLED);
        assert_eq!(store.purge_partition(p, 2).unwrap(), 1);
        assert_eq!(store.digests().unwrap().partition(p, 2), 0, "nothing held, and it says so at once");
        assert_eq!(store.engine_stats().unsettled_buckets, 0);
    }

    #[test]
    fn until_the_digests_are_rebuilt_every_write_reads_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        store.apply(b"k", &value(5, "v")).unwrap();
        drop(store); // an unclean stop
        let store = Store::open_deferred(dir.path(), CACHE, MEMTABLE).unwrap();
        // The bucket's newest timestamp is unknown until the scan: this write must read what
        // it replaces, or the rebuilt digests would keep the replaced record's hash.
        store.apply_many(&[(b"k".as_slice(), &value(6, "w"))]).unwrap();
        store.rebuild_digests().unwrap();
        let p = partition::of(b"k", 2);
        assert_ne!(store.digests().unwrap().partition(p, 2), digest::UNSETTLED);
        drop(store);
        assert_eq!(scanned_digests(dir.path())[p as usize], {
            let reference = tempfile::tempdir().unwrap();
            let reference = Store::open(reference.path(), CACHE, MEMTABLE).unwrap();
            reference.apply(b"k", &value(6, "w")).unwrap();
            reference.digests().unwrap().partition(p, 2)
        });
    }

    #[test]
    fn a_replaced_value_file_is_removed_only_after_the_next_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        let files = |store: &Store| store.values.ids().unwrap().len();
        let older = value_file(&store, &[1; 5000]);
        store.apply_file(b"k", 10, older).unwrap();
        // A write that loses removes its own file at once: no record names it.
        assert_eq!(
            store.apply_file(b"k", 9, value_file(&store, &[2; 5000])).unwrap(),
            Applied::Superseded { by: 10 }
        );
        assert_eq!(files(&store), 1);
        // The winner replaces the file-backed record; its file stays until a sync covers it.
        store.apply(b"k", &value(11, "small")).unwrap();
        assert_eq!(files(&store), 1, "removed before the replacement was durable");
        store.sync().unwrap();
        assert_eq!(files(&store), 0);
        assert_eq!(store.get(b"k").unwrap(), Some(value(11, "small")));
        // Batches and tombstones replace file-backed records the same way.
        store.apply_file(b"k", 12, value_file(&store, &[3; 5000])).unwrap();
        store.apply_many(&[(b"k".as_slice(), &Record::tombstone(13))]).unwrap();
        assert_eq!(files(&store), 1);
        store.sync().unwrap();
        assert_eq!(files(&store), 0);
        assert_eq!(store.get(b"k").unwrap(), Some(Record::tombstone(13)));
    }

    #[test]
    fn equal_timestamps_compare_values_even_when_one_lives_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        store.apply_file(b"k", 10, value_file(&store, b"mmm")).unwrap();
        let lost = Applied::Superseded { by: 10 };
        assert_eq!(store.apply(b"k", &value(10, "aaa")).unwrap(), lost);
        assert_eq!(store.apply_file(b"k", 10, value_file(&store, b"bbb")).unwrap(), lost);
        assert_eq!(store.apply_file(b"k", 10, value_file(&store, b"mmm")).unwrap(), Applied::AlreadyHeld);
        assert_eq!(store.apply(b"k", &value(10, "zzz")).unwrap(), Applied::Stored);
        assert_eq!(store.apply_file(b"k", 10, value_file(&store, b"zzzz")).unwrap(), Applied::Stored);
        assert_eq!(store.get(b"k").unwrap(), Some(value(10, "zzzz")));
    }

    #[test]
    fn value_files_no_record_names_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        store.apply_file(b"kept", 1, value_file(&store, &[1; 100])).unwrap();
        // A crash between writing a file and recording it leaves the file unnamed.
        value_file(&store, &[2; 100]).referenced();
        assert_eq!(store.values.ids().unwrap().len(), 2);
        drop(store);
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        assert_eq!(store.values.ids().unwrap().len(), 1);
        assert_eq!(store.get(b"kept").unwrap(), Some(Record::value(1, Bytes::from(vec![1; 100]))));
    }

    /// The records' digests as a fresh open after an unclean stop computes them.
    fn scanned_digests(dir: &Path) -> Vec<Fingerprint> {
        let store = Store::open(dir, CACHE, MEMTABLE).unwrap();
        assert!(!store.opened_clean);
        store.digests().unwrap().all(2)
    }

    #[test]
    fn writes_while_the_digests_are_rebuilt_end_in_the_digests_of_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        for i in 0..2_000u64 {
            let record = if i % 7 == 0 { Record::tombstone(i + 1) } else { value(i + 1, "first") };
            store.apply(format!("key-{i}").as_bytes(), &record).unwrap();
        }
        store.apply_file(b"in-a-file", 1, value_file(&store, &[1; 100])).unwrap();
        value_file(&store, &[2; 100]).referenced(); // a crash left it unnamed
        drop(store); // no close: an unclean stop

        let store = Store::open_deferred(dir.path(), CACHE, MEMTABLE).unwrap();
        assert_eq!(store.digests().err(), Some(Rebuilding));
        assert!(!store.engine_stats().digests_whole);
        // Writes before and during the scan: new keys, newer and older versions, deletes, a
        // batch, a value file replaced and one added, a whole partition purged.
        let write = |round: u64| {
            for i in (0..2_400u64).step_by(3) {
                let key = format!("key-{i}");
                let record = match i % 4 {
                    0 => Record::tombstone(10 + round),
                    1 => value(10 + round, "newer"),
                    2 => value(1, "older"),
                    _ => value(i + 1, "first"),
                };
                store.apply(key.as_bytes(), &record).unwrap();
            }
            let batch: Vec<(Vec<u8>, Record)> =
                (0..50u64).map(|i| (format!("batch-{round}-{i}").into_bytes(), value(5, "b"))).collect();
            let writes: Vec<(&[u8], &Record)> = batch.iter().map(|(k, r)| (k.as_slice(), r)).collect();
            store.apply_many(&writes).unwrap();
        };
        write(0);
        std::thread::scope(|scope| {
            let rebuild = scope.spawn(|| store.rebuild_digests());
            for round in 1..4 {
                write(round);
            }
            store.apply_file(b"in-a-file", 20, value_file(&store, &[3; 100])).unwrap();
            store.apply_file(b"another-file", 20, value_file(&store, &[4; 100])).unwrap();
            store.purge_partition(partition::of(b"key-5", 2), 2).unwrap();
            rebuild.join().unwrap().unwrap();
        });
        // Batches after the rebuild's end may have skipped their reads (`crate::digest`).
        store.settle_all().unwrap();
        let rebuilt = store.digests().expect("whole after the rebuild").all(2);
        assert!(store.engine_stats().digests_whole);
        store.sync().unwrap(); // the replaced value file goes after the sync
        assert_eq!(store.values.ids().unwrap().len(), 2, "the unnamed and the replaced files are gone");
        drop(store);
        assert_eq!(rebuilt, scanned_digests(dir.path()));
    }

    #[test]
    fn a_stop_before_the_rebuild_ends_saves_no_digests() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        for i in 0..100u64 {
            store.apply(format!("key-{i}").as_bytes(), &value(i + 1, "v")).unwrap();
        }
        drop(store);
        let store = Store::open_deferred(dir.path(), CACHE, MEMTABLE).unwrap();
        store.apply(b"key-1", &value(50, "newer")).unwrap();
        store.close().unwrap();
        drop(store);
        // Saved, the partial digests (only the newer write's change) would be restored.
        let reopened = Store::open(dir.path(), CACHE, MEMTABLE).unwrap();
        assert!(!reopened.opened_clean, "digests saved before they were whole");
        let digests = reopened.digests().unwrap().all(2);
        drop(reopened);
        assert_eq!(digests, scanned_digests(dir.path()));
        assert_ne!(digests, vec![0; 256]);
    }
}
