//! Reads that compare replicas (`r=quorum`, `r=all`, and reads while no replica holds a read
//! lease), in memory bounded whatever the values' size.
//!
//! Every replica is asked; once enough answered, the newest record wins (the order of
//! `common::version::compare`: the later timestamp; at equal timestamps a tombstone, then the
//! greater value) and the replicas found behind are sent it (read repair, by the caller).
//!
//! Values up to `replica::BUFFERED_READ_BYTES` arrive whole and compare as records. Larger ones
//! stay streams that nothing reads while the answers are ranked: timestamps decide, and at equal
//! timestamps the hash a replica keeps of a value in a file (`vf-value-hash`) tells equal
//! values apart without reading them. Only different values stamped alike (two writers in the
//! same microsecond) must be read to be ordered: [`compare_bodies`] reads two of them side by
//! side, a frame at a time. The winner's own stream is the answer.

use bytes::Bytes;
use common::http::Body;
use common::version::Record;
use http_body_util::BodyExt;
use std::cmp::Ordering;
use std::time::Duration;

/// One replica's answer to a compared read.
pub enum Answer {
    Missing,
    /// A tombstone, or a value that arrived whole.
    Whole(Record),
    /// A value still streaming from the replica; `hash`: the replica's hash of it, if given.
    Streaming {
        timestamp: u64,
        length: u64,
        hash: Option<u128>,
        body: Body,
    },
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Missing => write!(f, "Missing"),
            Answer::Whole(record) => write!(f, "Whole({record:?})"),
            Answer::Streaming { timestamp, length, hash, .. } => {
                write!(f, "Streaming {{ timestamp: {timestamp}, length: {length}, hash: {hash:x?} }}")
            }
        }
    }
}

impl Answer {
    /// The timestamp and length of a value (`None`: a tombstone or nothing).
    pub fn value_version(&self) -> Option<(u64, u64)> {
        match self {
            Answer::Streaming { timestamp, length, .. } => Some((*timestamp, *length)),
            Answer::Whole(Record { timestamp, value: Some(value) }) => Some((*timestamp, value.len() as u64)),
            _ => None,
        }
    }

    /// What decides first: nothing below anything, then the timestamp, then a tombstone above a
    /// value of the same timestamp.
    fn rank(&self) -> Option<(u64, bool)> {
        match self {
            Answer::Missing => None,
            Answer::Whole(record) => Some((record.timestamp, record.is_tombstone())),
            Answer::Streaming { timestamp, .. } => Some((*timestamp, false)),
        }
    }
}

/// The order of two answers where it can be told without reading a streaming value; `None`
/// when only their bytes can tell (two values of the same timestamp, at least one streaming,
/// not known to be the same value).
pub fn order(a: &Answer, b: &Answer) -> Option<Ordering> {
    let by_rank = a.rank().cmp(&b.rank());
    if by_rank != Ordering::Equal {
        return Some(by_rank);
    }
    match (a, b) {
        (Answer::Whole(x), Answer::Whole(y)) => Some(common::version::compare(x, y)),
        (
            Answer::Streaming { length: la, hash: Some(ha), .. },
            Answer::Streaming { length: lb, hash: Some(hb), .. },
        ) if la == lb && ha == hb => Some(Ordering::Equal),
        (Answer::Streaming { .. }, _) | (_, Answer::Streaming { .. }) => None,
        // Equal ranks of anything else: both missing.
        _ => Some(Ordering::Equal),
    }
}

/// The newest of `answers` (its index), and for each answer whether it holds the same record
/// (`false`: it is behind). `decided(i, j)` gives the order of a pair [`order`] cannot tell,
/// read from their bytes: it is asked at most once per pair, and only about values stamped
/// alike.
pub fn resolve(answers: &[Answer], mut decided: impl FnMut(usize, usize) -> Ordering) -> (usize, Vec<bool>) {
    let mut best = 0;
    let mut pairs: Vec<((usize, usize), Ordering)> = Vec::new();
    let mut cmp = |i: usize, j: usize, pairs: &mut Vec<((usize, usize), Ordering)>| match order(
        &answers[i],
        &answers[j],
    ) {
        Some(ordering) => ordering,
        None => {
            let ordering = decided(i, j);
            pairs.push(((i, j), ordering));
            ordering
        }
    };
    for i in 1..answers.len() {
        if cmp(best, i, &mut pairs) == Ordering::Less {
            best = i;
        }
    }
    let same = (0..answers.len())
        .map(|i| {
            if i == best {
                return true;
            }
            let known = pairs.iter().find_map(|&((a, b), ordering)| match (a, b) {
                _ if (a, b) == (i, best) || (a, b) == (best, i) => Some(ordering == Ordering::Equal),
                _ => None,
            });
            known.unwrap_or_else(|| cmp(i, best, &mut pairs) == Ordering::Equal)
        })
        .collect();
    (best, same)
}

/// The order of two values by their bytes (as `<[u8]>::cmp`), read side by side a frame at a
/// time: memory stays within two frames whatever their length. `Err` if either stream fails
/// or stalls longer than `stall` before it ends.
pub async fn compare_bodies(a: Body, b: Body, stall: Duration) -> Result<Ordering, String> {
    let (mut a, mut b) = (Side::new(a), Side::new(b));
    loop {
        let (x, y) = (a.pending(stall).await?, b.pending(stall).await?);
        match (x.is_empty(), y.is_empty()) {
            (true, true) => return Ok(Ordering::Equal),
            (true, false) => return Ok(Ordering::Less),
            (false, true) => return Ok(Ordering::Greater),
            (false, false) => {}
        }
        let n = x.len().min(y.len());
        match x[..n].cmp(&y[..n]) {
            Ordering::Equal => {
                a.consume(n);
                b.consume(n);
            }
            unequal => return Ok(unequal),
        }
    }
}

/// One stream of [`compare_bodies`]: the part of its last frame not compared yet.
struct Side {
    body: Body,
    frame: Bytes,
    ended: bool,
}

impl Side {
    fn new(body: Body) -> Self {
        Self { body, frame: Bytes::new(), ended: false }
    }

    /// The bytes not compared yet (empty: the stream ended).
    async fn pending(&mut self, stall: Duration) -> Result<Bytes, String> {
        while self.frame.is_empty() && !self.ended {
            match tokio::time::timeout(stall, self.body.frame()).await {
                Err(_) => return Err(format!("a replica sent nothing for {stall:?}")),
                Ok(None) => self.ended = true,
                Ok(Some(Err(e))) => return Err(e.to_string()),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.frame = data;
                    }
                }
            }
        }
        Ok(self.frame.clone())
    }

    fn consume(&mut self, n: usize) {
        let _ = self.frame.split_to(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::http as h;

    fn whole(ts: u64, value: &'static str) -> Answer {
        Answer::Whole(Record::value(ts, Bytes::from_static(value.as_bytes())))
    }

    fn streaming(ts: u64, length: u64, hash: Option<u128>) -> Answer {
        Answer::Streaming { timestamp: ts, length, hash, body: h::empty() }
    }

    #[test]
    fn answers_are_ordered_without_reading_streams_whenever_their_versions_tell() {
        use Ordering::*;
        let tombstone = |ts| Answer::Whole(Record::tombstone(ts));
        let table: Vec<(Answer, Answer, Option<Ordering>)> = vec![
            (Answer::Missing, Answer::Missing, Some(Equal)),
            (Answer::Missing, streaming(1, 5 << 20, Some(7)), Some(Less)),
            (streaming(2, 5 << 20, None), whole(1, "z"), Some(Greater)),
            (streaming(2, 5 << 20, Some(7)), streaming(3, 5 << 20, Some(7)), Some(Less)),
            (tombstone(3), streaming(3, 5 << 20, Some(7)), Some(Greater)),
            (tombstone(3), tombstone(3), Some(Equal)),
            (whole(3, "a"), whole(3, "b"), Some(Less)),
            (whole(3, "b"), whole(3, "b"), Some(Equal)),
            // The same timestamp and hash: the same value, unread.
            (streaming(3, 5 << 20, Some(7)), streaming(3, 5 << 20, Some(7)), Some(Equal)),
            // Only the bytes can tell.
            (streaming(3, 5 << 20, Some(7)), streaming(3, 5 << 20, Some(8)), None),
            (streaming(3, 5 << 20, Some(7)), streaming(3, 6 << 20, Some(7)), None),
            (streaming(3, 5 << 20, None), streaming(3, 5 << 20, None), None),
            (whole(3, "b"), streaming(3, 5 << 20, Some(7)), None),
        ];
        for (i, (a, b, expected)) in table.iter().enumerate() {
            assert_eq!(order(a, b), *expected, "row {i}: {a:?} vs {b:?}");
            assert_eq!(order(b, a), expected.map(Ordering::reverse), "row {i} reversed");
        }
    }

    #[test]
    fn the_newest_wins_and_only_undecided_pairs_of_its_timestamp_are_read() {
        let answers = [
            streaming(3, 5 << 20, Some(7)),
            whole(2, "old"),
            streaming(3, 5 << 20, Some(7)),
            Answer::Missing,
        ];
        let (winner, same) = resolve(&answers, |i, j| panic!("{i} and {j} need no reading"));
        assert_eq!((winner, same), (0, vec![true, false, true, false]));

        // Two values stamped alike: their bytes decide, once per pair.
        let answers = [streaming(3, 5 << 20, Some(7)), streaming(3, 5 << 20, Some(8)), whole(1, "x")];
        let mut asked = Vec::new();
        let (winner, same) = resolve(&answers, |i, j| {
            asked.push((i, j));
            if (i, j) == (0, 1) {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        });
        assert_eq!((winner, same), (1, vec![false, true, false]));
        assert_eq!(asked, [(0, 1)], "the pair was read once");
    }

    #[tokio::test]
    async fn bodies_compare_like_their_bytes_however_they_are_cut() {
        let body = |pieces: &[&'static str]| -> Body {
            let (sender, body) =
                h::channel_body(pieces.iter().map(|p| p.len() as u64).sum(), pieces.len().max(1));
            let pieces: Vec<Bytes> = pieces.iter().map(|p| Bytes::from_static(p.as_bytes())).collect();
            tokio::spawn(async move {
                for piece in pieces {
                    if sender.send(Ok(piece)).await.is_err() {
                        return;
                    }
                }
            });
            body.boxed_unsync()
        };
        let stall = Duration::from_secs(5);
        let table: [(&[&'static str], &[&'static str], Ordering); 6] = [
            (&["abc", "def"], &["a", "bcdef"], Ordering::Equal),
            (&["abc", "deg"], &["abcd", "ef"], Ordering::Greater),
            (&["ab"], &["a", "b", "c"], Ordering::Less),
            (&[], &[], Ordering::Equal),
            (&[], &["x"], Ordering::Less),
            (&["b"], &["a", "zzzz"], Ordering::Greater),
        ];
        for (i, (a, b, expected)) in table.into_iter().enumerate() {
            assert_eq!(compare_bodies(body(a), body(b), stall).await, Ok(expected), "row {i}");
        }
        let (_silent, stalled) = h::channel_body(3, 1);
        let stalled = compare_bodies(body(&["abc"]), stalled.boxed_unsync(), Duration::from_millis(50)).await;
        assert!(stalled.unwrap_err().contains("sent nothing"));
    }
}
