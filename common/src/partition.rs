//! Partition math: which partition a key belongs to.
//!
//! A key's partition is the number formed by the first `digits` hex digits of SHA-1 of the raw key
//! bytes, so a cluster has `16^digits` partitions. Because the partition is a prefix of the hash,
//! storage nodes keep records ordered by [`hash_prefix`] and every partition is one contiguous
//! range, whatever `digits` the cluster uses.

use sha1::{Digest, Sha1};

/// A partition number, `0..count(digits)`.
pub type Partition = u32;

/// The most hex digits a map may use: 16^6 = 16.7M partitions is far beyond any useful spread.
pub const MAX_DIGITS: u8 = 6;

/// SHA-1 of the raw key bytes.
pub fn hash(key: &[u8]) -> [u8; 20] {
    Sha1::digest(key).into()
}

/// The first four bytes of the key's hash, big-endian: the sort prefix of a stored record and the
/// source of its partition number for any `digits <= 8`.
pub fn hash_prefix(key: &[u8]) -> u32 {
    let digest = hash(key);
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The partition of a key whose [`hash_prefix`] is `prefix`.
pub fn of_prefix(prefix: u32, digits: u8) -> Partition {
    debug_assert!((1..=MAX_DIGITS).contains(&digits));
    prefix >> (32 - 4 * u32::from(digits))
}

/// The partition of `key` in a map with `digits` hex digits.
pub fn of(key: &[u8], digits: u8) -> Partition {
    of_prefix(hash_prefix(key), digits)
}

/// How many partitions a map with `digits` hex digits has.
pub fn count(digits: u8) -> u32 {
    1 << (4 * u32::from(digits))
}

/// The range of hash prefixes that fall into `partition`: `start..=end`.
pub fn prefix_range(partition: Partition, digits: u8) -> (u32, u32) {
    let shift = 32 - 4 * u32::from(digits);
    let start = partition << shift;
    let span = (1u64 << shift) - 1;
    (start, start + span as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hashes_match_known_sha1_vectors() {
        assert_eq!(hex(&hash(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(hex(&hash(b"foo")), "0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33");
    }

    #[test]
    fn partition_is_the_first_hex_digits_of_the_hash() {
        // "foo" -> 0beec7..., "" -> da39a3...
        let cases: &[(&[u8], u8, Partition)] = &[
            (b"foo", 1, 0x0),
            (b"foo", 2, 0x0b),
            (b"foo", 3, 0x0be),
            (b"foo", 6, 0x0beec7),
            (b"", 1, 0xd),
            (b"", 2, 0xda),
            (b"", 3, 0xda3),
            (b"", 6, 0xda39a3),
        ];
        for &(key, digits, expected) in cases {
            assert_eq!(of(key, digits), expected, "key {key:?} digits {digits}");
        }
    }

    #[test]
    fn partitions_cover_their_range() {
        for digits in 1..=MAX_DIGITS {
            assert_eq!(count(digits), 16u32.pow(u32::from(digits)));
            let last = count(digits) - 1;
            assert_eq!(prefix_range(0, digits).0, 0);
            assert_eq!(prefix_range(last, digits).1, u32::MAX);
            let (start, end) = prefix_range(5, digits);
            assert_eq!(of_prefix(start, digits), 5);
            assert_eq!(of_prefix(end, digits), 5);
            assert_eq!(of_prefix(end.wrapping_add(1), digits), 6);
        }
    }
}
