//! Versions: which of two writes to a key wins.
//!
//! Every write carries a timestamp in microseconds chosen by the frontend that accepted it. A
//! replica keeps a write only if it [`Record::supersedes`] what it holds. The order is total:
//! a later timestamp wins; at equal timestamps a tombstone beats a value (a delete racing a set
//! in the same microsecond deletes), and between two values the lexicographically greater bytes
//! win. Because the order is total, every replica ends on the same record whatever order the
//! writes arrive in, and applying a write twice changes nothing.

use bytes::Bytes;
use std::cmp::Ordering;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub type Timestamp = u64;

/// One versioned write to a key: a value, or a tombstone when the key was deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub timestamp: Timestamp,
    /// `None` is a tombstone.
    pub value: Option<Bytes>,
}

impl Record {
    pub fn value(timestamp: Timestamp, value: Bytes) -> Self {
        Self { timestamp, value: Some(value) }
    }

    pub fn tombstone(timestamp: Timestamp) -> Self {
        Self { timestamp, value: None }
    }

    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Whether a replica holding `other` must replace it with `self`.
    pub fn supersedes(&self, other: &Record) -> bool {
        compare(self, other) == Ordering::Greater
    }
}

/// The total order on records described in the module docs.
pub fn compare(a: &Record, b: &Record) -> Ordering {
    a.timestamp.cmp(&b.timestamp).then_with(|| match (&a.value, &b.value) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => x.as_ref().cmp(y.as_ref()),
    })
}

/// A clock that never goes backwards: each call returns `max(now, last + 1)`, so two writes
/// through one frontend always get increasing timestamps even if the wall clock steps back; and
/// [`Clock::next_above`] moves it past a timestamp seen from another writer.
#[derive(Debug, Default)]
pub struct Clock {
    last: AtomicU64,
}

impl Clock {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next timestamp, strictly greater than every earlier one from this clock.
    pub fn next(&self) -> Timestamp {
        self.next_after(now_micros())
    }

    /// The next timestamp that is also above `seen` (a timestamp another writer used): the
    /// clock moves past it for every later call too, like a Lamport clock.
    pub fn next_above(&self, seen: Timestamp) -> Timestamp {
        self.next_after(now_micros().max(seen.saturating_add(1)))
    }

    fn next_after(&self, now: Timestamp) -> Timestamp {
        let mut last = self.last.load(AtomicOrdering::Relaxed);
        loop {
            let candidate = now.max(last + 1);
            match self.last.compare_exchange_weak(
                last,
                candidate,
                AtomicOrdering::Relaxed,
                AtomicOrdering::Relaxed,
            ) {
                Ok(_) => return candidate,
                Err(actual) => last = actual,
            }
        }
    }
}

/// The wall clock in microseconds since the Unix epoch.
pub fn now_micros() -> Timestamp {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as Timestamp).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(ts: Timestamp, v: &'static str) -> Record {
        Record::value(ts, Bytes::from_static(v.as_bytes()))
    }

    #[test]
    fn later_timestamp_wins() {
        assert!(value(2, "a").supersedes(&value(1, "z")));
        assert!(!value(1, "z").supersedes(&value(2, "a")));
        assert!(Record::tombstone(2).supersedes(&value(1, "a")));
        assert!(value(3, "a").supersedes(&Record::tombstone(2)));
    }

    #[test]
    fn equal_timestamps_break_ties_by_value_then_tombstone() {
        assert!(value(5, "b").supersedes(&value(5, "a")));
        assert!(!value(5, "a").supersedes(&value(5, "b")));
        assert!(value(5, "ab").supersedes(&value(5, "a")));
        assert!(value(5, "a").supersedes(&value(5, "")));
        assert!(Record::tombstone(5).supersedes(&value(5, "zzz")));
        assert!(!value(5, "zzz").supersedes(&Record::tombstone(5)));
    }

    #[test]
    fn applying_the_same_record_twice_changes_nothing() {
        assert!(!value(5, "a").supersedes(&value(5, "a")));
        assert!(!Record::tombstone(5).supersedes(&Record::tombstone(5)));
    }

    #[test]
    fn order_is_total_and_every_arrival_order_converges() {
        let records = [
            value(1, "a"),
            value(1, "b"),
            value(2, ""),
            value(2, "a"),
            Record::tombstone(1),
            Record::tombstone(2),
            value(3, "\u{ff}"),
        ];
        // Antisymmetry and transitivity over every pair and triple.
        for a in &records {
            for b in &records {
                assert_eq!(compare(a, b), compare(b, a).reverse());
                for c in &records {
                    if compare(a, b).is_le() && compare(b, c).is_le() {
                        assert!(compare(a, c).is_le());
                    }
                }
            }
        }
        // Replaying the records in every rotation and in reverse ends on the same winner.
        let winner = |order: &mut dyn Iterator<Item = &Record>| {
            let mut held: Option<Record> = None;
            for r in order {
                if held.as_ref().is_none_or(|h| r.supersedes(h)) {
                    held = Some(r.clone());
                }
            }
            held.unwrap()
        };
        let expected = winner(&mut records.iter());
        assert_eq!(expected, value(3, "\u{ff}"));
        assert_eq!(winner(&mut records.iter().rev()), expected);
        for shift in 0..records.len() {
            assert_eq!(winner(&mut records.iter().cycle().skip(shift).take(records.len())), expected);
        }
    }

    #[test]
    fn clock_never_goes_backwards() {
        let clock = Clock::new();
        assert_eq!(clock.next_after(100), 100);
        assert_eq!(clock.next_after(100), 101);
        assert_eq!(clock.next_after(50), 102, "wall clock stepped back");
        assert_eq!(clock.next_after(500), 500);
        let a = clock.next();
        let b = clock.next();
        assert!(b > a);
        let ahead = now_micros() + 60_000_000;
        assert_eq!(clock.next_above(ahead), ahead + 1, "past a timestamp from a clock ahead");
        assert_eq!(clock.next(), ahead + 2, "and stays past it");
        assert!(clock.next_above(5) > ahead + 2, "never back for an older one");
    }
}
