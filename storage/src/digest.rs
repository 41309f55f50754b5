//! Partition digests: a 128-bit fingerprint of everything a node holds in each partition, kept
//! up to date on every write, so comparing two replicas of a partition costs 16 bytes, not a scan.
//!
//! A partition's digest is the XOR of the hashes of its records (key, timestamp, tombstone flag
//! and value). XOR makes it order-independent and updatable in O(1): replacing a record XORs the
//! old hash out and the new one in. Digests are kept for 65,536 buckets (the first 4 hex digits
//! of the key hash); a partition of a map with `digits <= 4` is the XOR of its buckets. They live
//! in memory (about 2.5 MiB with the state below); a node that stopped cleanly saved them and restores them at start, any
//! other start rebuilds them by one scan while it serves (see `crate::store`).
//!
//! **Writes that skip the read.** Each bucket also knows the newest timestamp of any record it
//! holds. A write newer than that cannot be superseded by the record it replaces, so the store
//! may apply it without reading that record first (at scale that read is a file read: it cost
//! more than half of a write, see `docs/performance.md`). Such a write XORs its own hash in but
//! cannot XOR out the one it replaced, so it marks its bucket *unsettled*, and the partitions
//! that contain an unsettled bucket report [`UNSETTLED`] instead of a digest, which never agrees
//! with anything ([`agree`]): anti-entropy leaves them alone as it does partitions under
//! writes, and a catch-up syncs them. Once a bucket has been quiet for a while
//! ([`Digests::quiet_enough`], 10–60 s), the store rescans it (its records are contiguous on
//! disk) and settles it with the exact digest; a purge settles the buckets it emptied at once. Buckets whose newest timestamp is not known yet (before the
//! scan after an unclean stop) or that may hold a value in a file of its own (whose replacement
//! must remove the file) always read first.

use common::partition::{self, Partition};
use common::version::Record;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::Instant;
use xxhash_rust::xxh3::{self, Xxh3};

/// Hex digits of the finest digest granularity.
pub const BUCKET_DIGITS: u8 = 4;
const BUCKETS: usize = 1 << (4 * BUCKET_DIGITS as usize);

/// A 128-bit record hash.
pub type Fingerprint = u128;

/// Seed of [`value_hash`].
pub const VALUE_SEED: u64 = 0x5646_5f76_616c_7565;

/// The 128-bit hash of a value. Records fingerprint their value through it, so a record whose
/// value lives in a file (which keeps this hash beside it) fingerprints without reading it.
pub fn value_hash(value: &[u8]) -> u128 {
    xxh3::xxh3_128_with_seed(value, VALUE_SEED)
}

/// The hash of one record. Deterministic across nodes running the same build. XXH3 runs at
/// memory speed, so a 24 MiB value costs milliseconds here, not tens of them.
pub fn fingerprint(key: &[u8], record: &Record) -> Fingerprint {
    fingerprint_of(key, record.timestamp, record.value.as_deref().map(value_hash))
}

/// [`fingerprint`] from a record's parts: `value_hash` is `None` for a tombstone.
pub fn fingerprint_of(key: &[u8], timestamp: u64, value_hash: Option<u128>) -> Fingerprint {
    let mut h = Xxh3::with_seed(0x5646_5f64_6967_6573);
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(&timestamp.to_le_bytes());
    match value_hash {
        Some(value_hash) => {
            h.update(&[1]);
            h.update(&value_hash.to_le_bytes());
        }
        None => h.update(&[0]),
    }
    h.digest128()
}

/// Hash of a value alone, for version lists in the diff protocol.
pub fn value_fingerprint(value: Option<&[u8]>) -> u64 {
    value.map_or(0, |value| value_hash(value) as u64)
}

/// What a partition that holds an unsettled bucket reports instead of its digest (see the module
/// docs). A real digest equal to it would take 2^128 tries to find.
pub const UNSETTLED: Fingerprint = u128::MAX;

/// Whether two digests of the same range say the same records: equal, and both settled.
pub fn agree(a: Fingerprint, b: Fingerprint) -> bool {
    a == b && a != UNSETTLED
}

/// The bucket's digest lacks the hashes of records that writes replaced without reading them.
const DIRTY: u8 = 1;
/// The bucket's newest timestamp is not known yet: every write reads first.
const UNKNOWN: u8 = 2;
/// The bucket may hold a record whose value lives in a file: every write reads first.
const FILES: u8 = 4;

/// One bucket: its digest, the newest timestamp of its records (an upper bound), its state,
/// when a write last skipped a read in it, and its records at the last count.
struct Bucket {
    digest: [AtomicU64; 2],
    newest: AtomicU64,
    flags: AtomicU8,
    touched: AtomicU32,
    records: AtomicU32,
}

impl Default for Bucket {
    fn default() -> Self {
        Self {
            digest: Default::default(),
            newest: AtomicU64::new(0),
            flags: AtomicU8::new(UNKNOWN),
            touched: AtomicU32::new(0),
            records: AtomicU32::new(0),
        }
    }
}

/// Bytes per bucket in [`Digests::to_bytes`]: digest, newest timestamp, records, flags.
const SAVED_BUCKET_BYTES: usize = 16 + 8 + 4 + 1;

/// The bucket of a key whose hash prefix is `prefix`.
pub fn bucket_of(prefix: u32) -> usize {
    partition::of_prefix(prefix, BUCKET_DIGITS) as usize
}

/// How many buckets there are.
pub const BUCKET_COUNT: usize = BUCKETS;

/// The digests of one node's records, per bucket.
pub struct Digests {
    buckets: Box<[Bucket]>,
    /// The origin of [`Bucket::touched`], in seconds.
    base: Instant,
    /// Seconds added to that clock ([`Digests::advance`]).
    advanced: AtomicU32,
    /// How many buckets are unsettled, so that the rescans can skip looking at every bucket
    /// when none is (a look at all of them costs ~3 ms of CPU: 0.9 s for 300 passes).
    unsettled: AtomicUsize,
}

impl std::fmt::Debug for Digests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Digests").finish_non_exhaustive()
    }
}

impl Default for Digests {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| Bucket::default()).collect(),
            base: Instant::now(),
            advanced: AtomicU32::new(0),
            unsettled: AtomicUsize::new(0),
        }
    }
}

/// A bucket's exact state, counted by a scan of its records (see [`Digests::settle`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub digest: Fingerprint,
    pub newest: u64,
    pub records: u32,
    pub files: bool,
}

impl Count {
    /// Counts one record.
    pub fn add(&mut self, fingerprint: Fingerprint, timestamp: u64, in_file: bool) {
        self.digest ^= fingerprint;
        self.newest = self.newest.max(timestamp);
        self.records = self.records.saturating_add(1);
        self.files |= in_file;
    }
}

impl Digests {
    /// XORs `hash` into the bucket of the key whose hash prefix is `prefix` (adding and removing
    /// a record are the same operation).
    pub fn toggle(&self, prefix: u32, hash: Fingerprint) {
        let bucket = &self.buckets[bucket_of(prefix)];
        bucket.digest[0].fetch_xor((hash >> 64) as u64, Ordering::SeqCst);
        bucket.digest[1].fetch_xor(hash as u64, Ordering::SeqCst);
    }

    /// Counts one record found by a scan of every record (at open, or the rebuild after an
    /// unclean stop): its hash, timestamp, and whether its value is in a file.
    pub fn scanned(&self, prefix: u32, hash: Fingerprint, timestamp: u64, in_file: bool) {
        self.toggle(prefix, hash);
        let bucket = &self.buckets[bucket_of(prefix)];
        bucket.newest.fetch_max(timestamp, Ordering::SeqCst);
        bucket.records.fetch_add(1, Ordering::Relaxed);
        if in_file {
            bucket.flags.fetch_or(FILES, Ordering::SeqCst);
        }
    }

    /// After a scan of every record into these digests: every bucket's newest timestamp is known.
    pub fn scan_complete(&self) {
        for bucket in self.buckets.iter() {
            bucket.flags.fetch_and(!UNKNOWN, Ordering::SeqCst);
        }
    }

    /// Whether a write of `timestamp` to the bucket of `prefix` may skip reading the record it
    /// replaces: the bucket's newest timestamp is known, below `timestamp`, and no record of it
    /// keeps its value in a file. Call it under the bucket's write lock, and if it says yes,
    /// [`Digests::skipped_read`] before the write.
    pub fn may_skip_read(&self, prefix: u32, timestamp: u64) -> bool {
        let bucket = &self.buckets[bucket_of(prefix)];
        bucket.flags.load(Ordering::SeqCst) & (UNKNOWN | FILES) == 0
            && timestamp > bucket.newest.load(Ordering::SeqCst)
    }

    /// A write to the bucket of `prefix` is about to replace a record without reading it: the
    /// bucket is unsettled from now until [`Digests::settle`].
    pub fn skipped_read(&self, prefix: u32) {
        let bucket = &self.buckets[bucket_of(prefix)];
        if bucket.flags.fetch_or(DIRTY, Ordering::SeqCst) & DIRTY == 0 {
            self.unsettled.fetch_add(1, Ordering::SeqCst);
        }
        bucket.touched.store(self.seconds(), Ordering::Relaxed);
    }

    /// A record of `timestamp` was written to the bucket of `prefix` (`in_file`: its value
    /// lives in a file).
    pub fn wrote(&self, prefix: u32, timestamp: u64, in_file: bool) {
        let bucket = &self.buckets[bucket_of(prefix)];
        bucket.newest.fetch_max(timestamp, Ordering::SeqCst);
        if in_file {
            bucket.flags.fetch_or(FILES, Ordering::SeqCst);
        }
    }

    /// Whether `bucket` is unsettled and has had no write that skipped a read for long enough
    /// to be worth a rescan: 10 s, plus 0.1 s for every record it held at its last count (a
    /// bucket of 120 records waits 22 s), up to 60 s. Under a steady load a bucket does not
    /// settle (at 25k writes/s over 65,536 buckets one waits 2.6 s for its next write on
    /// average), so a node rescans each bucket once after a burst of writes, not one per write:
    /// a wait of 2 s measured 0.3–0.45 of a core per node in rescans under a 2 M-key SET load.
    pub fn quiet_enough(&self, bucket: usize) -> bool {
        let b = &self.buckets[bucket];
        if b.flags.load(Ordering::SeqCst) & DIRTY == 0 {
            return false;
        }
        let wait = (10 + b.records.load(Ordering::Relaxed) / 10).min(60);
        self.seconds().saturating_sub(b.touched.load(Ordering::Relaxed)) >= wait
    }

    /// Moves the clock of [`Digests::quiet_enough`] on by `seconds` (for tests).
    #[cfg(test)]
    pub fn advance(&self, seconds: u32) {
        self.advanced.fetch_add(seconds, Ordering::Relaxed);
    }

    /// Whether `bucket` is unsettled.
    pub fn is_unsettled(&self, bucket: usize) -> bool {
        self.buckets[bucket].flags.load(Ordering::SeqCst) & DIRTY != 0
    }

    /// The buckets that are unsettled.
    pub fn unsettled(&self) -> impl Iterator<Item = usize> + '_ {
        (0..BUCKETS).filter(|&b| self.is_unsettled(b))
    }

    /// How many buckets are unsettled.
    pub fn unsettled_count(&self) -> usize {
        self.unsettled.load(Ordering::SeqCst)
    }

    /// Sets `bucket` to what a scan of its records counted, made under its write lock (so no
    /// write runs between the scan and this): settled, unless the scan found a value in a file.
    pub fn settle(&self, bucket: usize, count: Count) {
        let b = &self.buckets[bucket];
        b.digest[0].store((count.digest >> 64) as u64, Ordering::SeqCst);
        b.digest[1].store(count.digest as u64, Ordering::SeqCst);
        b.newest.store(count.newest, Ordering::SeqCst);
        b.records.store(count.records, Ordering::Relaxed);
        // Last: a reader that sees the bucket settled reads the digest stored above.
        if b.flags.swap(if count.files { FILES } else { 0 }, Ordering::SeqCst) & DIRTY != 0 {
            self.unsettled.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// XORs every bucket of `other` (a scan of every record made while writes went on, see
    /// `Store::rebuild_digests`) into this one's, which the writes since kept up to date.
    pub fn absorb(&self, other: &Digests) {
        for (bucket, theirs) in self.buckets.iter().zip(other.buckets.iter()) {
            bucket.digest[0].fetch_xor(theirs.digest[0].load(Ordering::SeqCst), Ordering::SeqCst);
            bucket.digest[1].fetch_xor(theirs.digest[1].load(Ordering::SeqCst), Ordering::SeqCst);
            bucket.newest.fetch_max(theirs.newest.load(Ordering::SeqCst), Ordering::SeqCst);
            bucket.records.store(theirs.records.load(Ordering::Relaxed), Ordering::Relaxed);
            bucket.flags.fetch_or(theirs.flags.load(Ordering::SeqCst) & FILES, Ordering::SeqCst);
            bucket.flags.fetch_and(!UNKNOWN, Ordering::SeqCst);
        }
    }

    /// The digest of `partition` in a map of `digits` hex digits (at most [`BUCKET_DIGITS`]),
    /// or [`UNSETTLED`] if any of its buckets is.
    pub fn partition(&self, partition: Partition, digits: u8) -> Fingerprint {
        assert!(digits <= BUCKET_DIGITS, "digests cover maps of up to {BUCKET_DIGITS} digits");
        let per_partition = 1usize << (4 * (BUCKET_DIGITS - digits) as usize);
        let start = partition as usize * per_partition;
        let mut digest = 0;
        for b in &self.buckets[start..start + per_partition] {
            // The state before and after the digest: a write that skipped a read marks the
            // bucket before it changes the digest, and a settle stores the digest before it
            // clears the mark, so a digest read between two clean states is a settled one.
            let before = b.flags.load(Ordering::SeqCst);
            let hash = u128::from(b.digest[0].load(Ordering::SeqCst)) << 64
                | u128::from(b.digest[1].load(Ordering::SeqCst));
            if (before | b.flags.load(Ordering::SeqCst)) & DIRTY != 0 {
                return UNSETTLED;
            }
            digest ^= hash;
        }
        digest
    }

    /// Every partition's digest, in partition order.
    pub fn all(&self, digits: u8) -> Vec<Fingerprint> {
        (0..partition::count(digits)).map(|p| self.partition(p, digits)).collect()
    }
    /// The digests of the parts of `partition` (in a map of `digits` digits) in a map of
    /// `finer` digits (`digits <= finer <= BUCKET_DIGITS`), in order.
    pub fn within(&self, partition: Partition, digits: u8, finer: u8) -> Vec<Fingerprint> {
        assert!(digits <= finer, "a partition's parts are finer than it");
        let parts = 1u32 << (4 * (finer - digits) as u32);
        (partition * parts..(partition + 1) * parts).map(|p| self.partition(p, finer)).collect()
    }

    /// Every bucket's state in bucket order, [`SAVED_BUCKET_BYTES`] each (for a snapshot). Call
    /// it with every bucket's write lock held, so no bucket is between two states.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BUCKETS * SAVED_BUCKET_BYTES);
        for b in self.buckets.iter() {
            out.extend_from_slice(&b.digest[0].load(Ordering::SeqCst).to_be_bytes());
            out.extend_from_slice(&b.digest[1].load(Ordering::SeqCst).to_be_bytes());
            out.extend_from_slice(&b.newest.load(Ordering::SeqCst).to_be_bytes());
            out.extend_from_slice(&b.records.load(Ordering::Relaxed).to_be_bytes());
            out.push(b.flags.load(Ordering::SeqCst));
        }
        out
    }

    /// Sets every bucket from [`Digests::to_bytes`]'s output; `false` (and nothing changed) if
    /// `bytes` is not that long.
    pub fn restore(&self, bytes: &[u8]) -> bool {
        if bytes.len() != BUCKETS * SAVED_BUCKET_BYTES {
            return false;
        }
        let u64_at = |raw: &[u8], at: usize| u64::from_be_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
        for (b, raw) in self.buckets.iter().zip(bytes.chunks_exact(SAVED_BUCKET_BYTES)) {
            b.digest[0].store(u64_at(raw, 0), Ordering::SeqCst);
            b.digest[1].store(u64_at(raw, 8), Ordering::SeqCst);
            b.newest.store(u64_at(raw, 16), Ordering::SeqCst);
            b.records.store(u32::from_be_bytes(raw[24..28].try_into().expect("4 bytes")), Ordering::Relaxed);
            b.touched.store(0, Ordering::Relaxed);
            b.flags.store(raw[28] & (DIRTY | FILES), Ordering::SeqCst);
        }
        self.unsettled.store(self.unsettled().count(), Ordering::SeqCst);
        true
    }

    /// Seconds since these digests were made (the clock of [`Bucket::touched`]).
    fn seconds(&self) -> u32 {
        let elapsed = u32::try_from(self.base.elapsed().as_secs()).unwrap_or(u32::MAX);
        elapsed.saturating_add(self.advanced.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn digests_are_order_independent_and_reversible() {
        let a = Digests::default();
        let b = Digests::default();
        let records: Vec<(String, Record)> =
            (0..100u64).map(|i| (format!("k{i}"), Record::value(i, Bytes::from(format!("v{i}"))))).collect();
        for (key, record) in &records {
            a.toggle(partition::hash_prefix(key.as_bytes()), fingerprint(key.as_bytes(), record));
        }
        for (key, record) in records.iter().rev() {
            b.toggle(partition::hash_prefix(key.as_bytes()), fingerprint(key.as_bytes(), record));
        }
        assert_eq!(a.all(2), b.all(2));
        // Changing one record changes exactly its partition's digest.
        let (key, old) = &records[7];
        let new = Record::tombstone(old.timestamp + 1);
        let prefix = partition::hash_prefix(key.as_bytes());
        b.toggle(prefix, fingerprint(key.as_bytes(), old));
        b.toggle(prefix, fingerprint(key.as_bytes(), &new));
        let changed: Vec<u32> = (0..256).filter(|&p| a.partition(p, 2) != b.partition(p, 2)).collect();
        assert_eq!(changed, [partition::of(key.as_bytes(), 2)]);
        // Coarser partitions are XORs of finer ones.
        let p1 = partition::of(key.as_bytes(), 1);
        let fine: u128 = (p1 * 16..p1 * 16 + 16).fold(0, |acc, p| acc ^ b.partition(p, 2));
        assert_eq!(b.partition(p1, 1), fine);
    }

    #[test]
    fn a_bucket_lets_writes_skip_the_read_only_when_that_is_safe() {
        let digests = Digests::default();
        let prefix = partition::hash_prefix(b"k");
        let p = partition::of(b"k", 2);
        // Before a scan counted the records, nothing is known.
        assert!(!digests.may_skip_read(prefix, 100));
        digests.scan_complete();
        assert!(digests.may_skip_read(prefix, 1));
        digests.wrote(prefix, 10, false);
        assert!(!digests.may_skip_read(prefix, 10), "equal timestamps compare values: read");
        assert!(digests.may_skip_read(prefix, 11));
        // A write that skips its read unsettles the partition, and only its partition.
        let hash = fingerprint(b"k", &Record::value(11, Bytes::from_static(b"v")));
        digests.skipped_read(prefix);
        digests.toggle(prefix, hash);
        digests.wrote(prefix, 11, false);
        assert_eq!(digests.partition(p, 2), UNSETTLED);
        assert_eq!(digests.partition(partition::of(b"k", 1), 1), UNSETTLED);
        assert_eq!(digests.partition((p + 1) % 256, 2), 0);
        assert_eq!(digests.unsettled().collect::<Vec<_>>(), [bucket_of(prefix)]);
        digests.skipped_read(prefix);
        assert_eq!(digests.unsettled_count(), 1, "a bucket counts once however often it is unsettled");
        assert!(!digests.quiet_enough(bucket_of(prefix)), "written this second");
        digests.advance(9);
        assert!(!digests.quiet_enough(bucket_of(prefix)), "quiet for 9 s");
        digests.advance(1);
        assert!(digests.quiet_enough(bucket_of(prefix)), "quiet for 10 s");
        // Saved and restored, it stays unsettled with its newest timestamp.
        let copy = Digests::default();
        assert!(copy.restore(&digests.to_bytes()));
        assert_eq!(copy.partition(p, 2), UNSETTLED);
        assert_eq!(copy.unsettled_count(), 1);
        assert!(!copy.may_skip_read(prefix, 11) && copy.may_skip_read(prefix, 12));
        assert!(!copy.restore(&digests.to_bytes()[1..]));
        // A rescan settles it; a value in a file makes every later write read first.
        let mut count = Count::default();
        count.add(hash, 11, false);
        digests.settle(bucket_of(prefix), count);
        assert_eq!(digests.partition(p, 2), hash);
        assert_eq!(digests.unsettled().count(), 0);
        assert_eq!(digests.unsettled_count(), 0);
        digests.settle(bucket_of(prefix), count);
        assert_eq!(digests.unsettled_count(), 0, "settling a settled bucket counts nothing");
        digests.wrote(prefix, 12, true);
        assert!(!digests.may_skip_read(prefix, 100));
        // Unsettled digests agree with nothing, not even each other.
        assert!(agree(hash, hash) && !agree(hash, 0) && !agree(UNSETTLED, UNSETTLED));
    }

    #[test]
    fn record_fingerprints_see_every_field() {
        let base = Record::value(5, Bytes::from_static(b"v"));
        let fp = fingerprint(b"k", &base);
        assert_ne!(fp, fingerprint(b"j", &base));
        assert_ne!(fp, fingerprint(b"k", &Record::value(6, Bytes::from_static(b"v"))));
        assert_ne!(fp, fingerprint(b"k", &Record::value(5, Bytes::from_static(b"w"))));
        assert_ne!(fp, fingerprint(b"k", &Record::tombstone(5)));
        assert_ne!(
            fingerprint(b"k", &Record::value(5, Bytes::new())),
            fingerprint(b"k", &Record::tombstone(5))
        );
        // Where the key ends and the value begins is part of the hash.
        assert_ne!(
            fingerprint(b"ab", &Record::value(5, Bytes::from_static(b"c"))),
            fingerprint(b"a", &Record::value(5, Bytes::from_static(b"bc")))
        );
    }
}
