//! Batched record operations between a frontend and a storage node: many small reads or writes
//! in one request (`POST /v1/batch`), answered by one response with an outcome per operation,
//! in order. Batching amortises the per-request cost (syscalls, wakeups, HTTP framing) that
//! otherwise dominates small operations, and a batch of writes shares one durability wait.
//!
//! Wire format (integers big-endian). Request: repeated operations, each `u8 kind, u32 key_len,
//! key`, then for a read `u8 leased`; for a write `u64 timestamp, u8 tombstone, u64 epoch (0:
//! none), u32 value_len, value`. Response: repeated outcomes, each `u8 kind` then, for `Found`,
//! `u64 timestamp, u8 tombstone, u32 value_len, value`; for `StaleEpoch`, `u64 needed`; for
//! `Superseded`, `u64 by`; for `NotServing`, `Failed`, `FutureTimestamp`, `DiskFull`,
//! `u32 len, message`. `DiskFull` (kind 10) is newer than the others: a frontend of an older
//! version decodes a batch holding one as malformed, which it treats as a failed replica call.

use crate::placement::Epoch;
use crate::version::Record;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Values above this size never travel in a batch: they stream on their own requests.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most operations in one batch.
pub const MAX_OPS: usize = 256;

/// One operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read the record of `key`; `leased`: only if the node may serve reads.
    Get { key: Bytes, leased: bool },
    /// Keep `record` for `key` if it is newer; `epoch`: the map epoch it was routed by.
    Put { key: Bytes, record: Record, epoch: Option<Epoch> },
}

/// What became of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A write is durable (it superseded the held record, or the node held this very record).
    Stored,
    /// The node holds a different record, stamped `by`, that wins over the write (durable too);
    /// the write changed nothing.
    Superseded { by: u64 },
    /// A read found this record (a tombstone included).
    Found(Record),
    /// A read found nothing.
    Missing,
    /// A read found a value too large for a batch: read it on its own.
    TooLarge,
    /// A write was routed by a map older than `needed`.
    StaleEpoch { needed: Epoch },
    /// A leased read on a node that may not serve reads, and why.
    NotServing(String),
    /// The operation failed on the node, and why.
    Failed(String),
    /// A write whose timestamp is further ahead of the node's clock than it accepts, or
    /// further behind than its tombstone grace (the writer's clock is wrong, or the write was
    /// held up on the way): refused, nothing stored.
    FutureTimestamp(String),
    /// A write refused because the node's free disk space is below its floor (the node's
    /// message names it, the free space and the floor): nothing stored; the node is alive.
    DiskFull(String),
}

/// A malformed batch.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed batch: {0}")]
pub struct BatchError(pub &'static str);

const GET: u8 = 1;
const PUT: u8 = 2;
const STORED: u8 = 1;
const FOUND: u8 = 2;
const MISSING: u8 = 3;
const TOO_LARGE: u8 = 4;
const STALE: u8 = 5;
const NOT_SERVING: u8 = 6;
const FAILED: u8 = 7;
const FUTURE: u8 = 8;
const SUPERSEDED: u8 = 9;
const DISK_FULL: u8 = 10;

fn need(buf: &Bytes, n: usize, what: &'static str) -> Result<(), BatchError> {
    if buf.remaining() < n {
        return Err(BatchError(what));
    }
    Ok(())
}

fn take(buf: &mut Bytes, len_bytes: usize, what: &'static str) -> Result<Bytes, BatchError> {
    need(buf, len_bytes, what)?;
    let len = if len_bytes == 4 { buf.get_u32() as usize } else { buf.get_u64() as usize };
    need(buf, len, what)?;
    Ok(buf.split_to(len))
}

pub fn encode_ops(ops: &[Op]) -> Bytes {
    let mut out = BytesMut::new();
    for op in ops {
        match op {
            Op::Get { key, leased } => {
                out.reserve(key.len() + 6);
                out.put_u8(GET);
                out.put_u32(key.len() as u32);
                out.put_slice(key);
                out.put_u8(u8::from(*leased));
            }
            Op::Put { key, record, epoch } => {
                let value = record.value.as_deref().unwrap_or_default();
                out.reserve(key.len() + value.len() + 30);
                out.put_u8(PUT);
                out.put_u32(key.len() as u32);
                out.put_slice(key);
                out.put_u64(record.timestamp);
                out.put_u8(u8::from(record.is_tombstone()));
                out.put_u64(epoch.unwrap_or(0));
                out.put_u32(value.len() as u32);
                out.put_slice(value);
            }
        }
    }
    out.freeze()
}

/// Decodes a request; keys and values are slices of `buf` (no copy).
pub fn decode_ops(mut buf: Bytes) -> Result<Vec<Op>, BatchError> {
    let mut ops = Vec::new();
    while buf.has_remaining() {
        let kind = buf.get_u8();
        let key = take(&mut buf, 4, "truncated key")?;
        match kind {
            GET => {
                need(&buf, 1, "truncated read")?;
                ops.push(Op::Get { key, leased: buf.get_u8() == 1 });
            }
            PUT => {
                need(&buf, 17, "truncated write")?;
                let timestamp = buf.get_u64();
                let tombstone = buf.get_u8() == 1;
                let epoch = Some(buf.get_u64()).filter(|&e| e != 0);
                let value = take(&mut buf, 4, "truncated value")?;
                let record = match tombstone {
                    true if !value.is_empty() => return Err(BatchError("a tombstone carries no value")),
                    true => Record::tombstone(timestamp),
                    false => Record::value(timestamp, value),
                };
                ops.push(Op::Put { key, record, epoch });
            }
            _ => return Err(BatchError("unknown operation")),
        }
        if ops.len() > MAX_OPS {
            return Err(BatchError("too many operations"));
        }
    }
    Ok(ops)
}

pub fn encode_outcomes(outcomes: &[Outcome]) -> Bytes {
    let mut out = BytesMut::new();
    let text = |out: &mut BytesMut, kind: u8, message: &str| {
        out.put_u8(kind);
        out.put_u32(message.len() as u32);
        out.put_slice(message.as_bytes());
    };
    for outcome in outcomes {
        match outcome {
            Outcome::Stored => out.put_u8(STORED),
            Outcome::Missing => out.put_u8(MISSING),
            Outcome::TooLarge => out.put_u8(TOO_LARGE),
            Outcome::Found(record) => {
                let value = record.value.as_deref().unwrap_or_default();
                out.reserve(value.len() + 14);
                out.put_u8(FOUND);
                out.put_u64(record.timestamp);
                out.put_u8(u8::from(record.is_tombstone()));
                out.put_u32(value.len() as u32);
                out.put_slice(value);
            }
            Outcome::StaleEpoch { needed } => {
                out.put_u8(STALE);
                out.put_u64(*needed);
            }
            Outcome::Superseded { by } => {
                out.put_u8(SUPERSEDED);
                out.put_u64(*by);
            }
            Outcome::NotServing(why) => text(&mut out, NOT_SERVING, why),
            Outcome::Failed(why) => text(&mut out, FAILED, why),
            Outcome::FutureTimestamp(why) => text(&mut out, FUTURE, why),
            Outcome::DiskFull(why) => text(&mut out, DISK_FULL, why),
        }
    }
    out.freeze()
}

pub fn decode_outcomes(mut buf: Bytes) -> Result<Vec<Outcome>, BatchError> {
    let mut outcomes = Vec::new();
    let text =
        |buf: &mut Bytes| take(buf, 4, "truncated message").map(|m| String::from_utf8_lossy(&m).into_owned());
    while buf.has_remaining() {
        outcomes.push(match buf.get_u8() {
            STORED => Outcome::Stored,
            MISSING => Outcome::Missing,
            TOO_LARGE => Outcome::TooLarge,
            FOUND => {
                need(&buf, 9, "truncated record")?;
                let timestamp = buf.get_u64();
                let tombstone = buf.get_u8() == 1;
                let value = take(&mut buf, 4, "truncated value")?;
                Outcome::Found(if tombstone {
                    Record::tombstone(timestamp)
                } else {
                    Record::value(timestamp, value)
                })
            }
            STALE => {
                need(&buf, 8, "truncated epoch")?;
                Outcome::StaleEpoch { needed: buf.get_u64() }
            }
            SUPERSEDED => {
                need(&buf, 8, "truncated timestamp")?;
                Outcome::Superseded { by: buf.get_u64() }
            }
            NOT_SERVING => Outcome::NotServing(text(&mut buf)?),
            FAILED => Outcome::Failed(text(&mut buf)?),
            FUTURE => Outcome::FutureTimestamp(text(&mut buf)?),
            DISK_FULL => Outcome::DiskFull(text(&mut buf)?),
            _ => return Err(BatchError("unknown outcome")),
        });
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_and_outcomes_round_trip() {
        let ops = vec![
            Op::Get { key: Bytes::from_static(b"k"), leased: true },
            Op::Get { key: Bytes::new(), leased: false },
            Op::Put {
                key: Bytes::from_static(b"w"),
                record: Record::value(7, Bytes::from_static(b"v")),
                epoch: Some(3),
            },
            Op::Put { key: Bytes::from_static(b"d"), record: Record::tombstone(9), epoch: None },
        ];
        assert_eq!(decode_ops(encode_ops(&ops)).unwrap(), ops);
        let outcomes = vec![
            Outcome::Stored,
            Outcome::Found(Record::value(1, Bytes::from_static(b"x"))),
            Outcome::Found(Record::tombstone(2)),
            Outcome::Missing,
            Outcome::TooLarge,
            Outcome::StaleEpoch { needed: 5 },
            Outcome::NotServing("no lease".into()),
            Outcome::Failed("disk full".into()),
            Outcome::FutureTimestamp("an hour ahead".into()),
            Outcome::Superseded { by: u64::MAX },
            Outcome::DiskFull("node 2 refuses writes".into()),
        ];
        assert_eq!(decode_outcomes(encode_outcomes(&outcomes)).unwrap(), outcomes);
    }

    #[test]
    fn malformed_batches_are_rejected() {
        let good = encode_ops(&[Op::Put {
            key: Bytes::from_static(b"k"),
            record: Record::value(1, Bytes::from_static(b"value")),
            epoch: None,
        }]);
        for cut in 1..good.len() {
            assert!(decode_ops(good.slice(..cut)).is_err(), "truncated at {cut}");
        }
        assert_eq!(decode_ops(Bytes::from_static(&[9, 0, 0, 0, 0])), Err(BatchError("unknown operation")));
        let many: Vec<Op> = (0..=MAX_OPS).map(|_| Op::Get { key: Bytes::new(), leased: false }).collect();
        assert_eq!(decode_ops(encode_ops(&many)), Err(BatchError("too many operations")));
        let good = encode_outcomes(&[Outcome::Found(Record::value(1, Bytes::from_static(b"v")))]);
        assert!(decode_outcomes(good.slice(..good.len() - 1)).is_err());
    }
}
