//! Partition digests: a 128-bit fingerprint of everything a node holds in each partition, kept
//! up to date on every write, so comparing two replicas of a partition costs 16 bytes, not a scan.
//!
//! A partition's digest is the XOR of the hashes of its records (key, timestamp, tombstone flag
//! and value). XOR makes it order-independent and updatable in O(1): replacing a record XORs the
//! old hash out and the new one in. Digests are kept for 65,536 buckets (the first 4 hex digits
//! of the key hash); a partition of a map with `digits <= 4` is the XOR of its buckets. They live
//! in memory (1 MiB); a node that stopped cleanly saved them and restores them at start, any
//! other start rebuilds them by one scan while it serves (see `crate::store`).

use common::partition::{self, Partition};
use common::version::Record;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The digests of one node's records, per bucket.
pub struct Digests {
    buckets: Box<[[AtomicU64; 2]]>,
}

impl std::fmt::Debug for Digests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Digests").finish_non_exhaustive()
    }
}

impl Default for Digests {
    fn default() -> Self {
        Self { buckets: (0..BUCKETS).map(|_| [AtomicU64::new(0), AtomicU64::new(0)]).collect() }
    }
}

impl Digests {
    /// XORs `hash` into the bucket of the key whose hash prefix is `prefix` (adding and removing
    /// a record are the same operation).
    pub fn toggle(&self, prefix: u32, hash: Fingerprint) {
        let bucket = &self.buckets[partition::of_prefix(prefix, BUCKET_DIGITS) as usize];
        bucket[0].fetch_xor((hash >> 64) as u64, Ordering::Relaxed);
        bucket[1].fetch_xor(hash as u64, Ordering::Relaxed);
    }

    /// XORs every bucket of `other` into this one's.
    pub fn absorb(&self, other: &Digests) {
        for (bucket, theirs) in self.buckets.iter().zip(other.buckets.iter()) {
            bucket[0].fetch_xor(theirs[0].load(Ordering::Relaxed), Ordering::Relaxed);
            bucket[1].fetch_xor(theirs[1].load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// The digest of `partition` in a map of `digits` hex digits (at most [`BUCKET_DIGITS`]).
    pub fn partition(&self, partition: Partition, digits: u8) -> Fingerprint {
        assert!(digits <= BUCKET_DIGITS, "digests cover maps of up to {BUCKET_DIGITS} digits");
        let per_partition = 1usize << (4 * (BUCKET_DIGITS - digits) as usize);
        let start = partition as usize * per_partition;
        self.buckets[start..start + per_partition].iter().fold(0, |acc, b| {
            acc ^ (u128::from(b[0].load(Ordering::Relaxed)) << 64 | u128::from(b[1].load(Ordering::Relaxed)))
        })
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

    /// Every bucket's digest, 16 bytes each in bucket order (for a snapshot).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BUCKETS * 16);
        for bucket in self.buckets.iter() {
            out.extend_from_slice(&bucket[0].load(Ordering::Relaxed).to_be_bytes());
            out.extend_from_slice(&bucket[1].load(Ordering::Relaxed).to_be_bytes());
        }
        out
    }

    /// Sets every bucket from [`Digests::to_bytes`]'s output; `false` (and nothing changed) if
    /// `bytes` is not that long.
    pub fn restore(&self, bytes: &[u8]) -> bool {
        if bytes.len() != BUCKETS * 16 {
            return false;
        }
        for (bucket, raw) in self.buckets.iter().zip(bytes.chunks_exact(16)) {
            bucket[0].store(u64::from_be_bytes(raw[..8].try_into().expect("8 bytes")), Ordering::Relaxed);
            bucket[1].store(u64::from_be_bytes(raw[8..].try_into().expect("8 bytes")), Ordering::Relaxed);
        }
        true
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
