//! Consistency levels for reads (`r=`) and writes (`w=`): how many of a partition's K replicas
//! must answer.
//!
//! Whatever the write level, a write is acknowledged only once every replica of its write set
//! that did not store it has been fenced out of reads (see `api`), so a read at any level sees
//! every acknowledged write. The write level says how many copies must exist before the
//! acknowledgement (durability); the read level how many replicas are compared (a read of one
//! replica is already fresh; `quorum` and `all` also repair replicas they find behind).

use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    One,
    Quorum,
    All,
}

impl Level {
    /// Replicas that must answer, out of `replication`.
    pub fn required(self, replication: usize) -> usize {
        match self {
            Level::One => 1,
            Level::Quorum => common::placement::write_quorum(replication),
            Level::All => replication,
        }
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "one" => Ok(Level::One),
            "quorum" => Ok(Level::Quorum),
            "all" => Ok(Level::All),
            _ => Err(format!("`{s}` is not a consistency level (one, quorum, all)")),
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::One => "one",
            Level::Quorum => "quorum",
            Level::All => "all",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_count_replicas() {
        let cases = [(1, [1, 1, 1]), (2, [1, 2, 2]), (3, [1, 2, 3]), (4, [1, 3, 4]), (5, [1, 3, 5])];
        for (k, [one, quorum, all]) in cases {
            assert_eq!(Level::One.required(k), one);
            assert_eq!(Level::Quorum.required(k), quorum, "K={k}");
            assert_eq!(Level::All.required(k), all);
        }
        assert_eq!("quorum".parse(), Ok(Level::Quorum));
        assert!("most".parse::<Level>().is_err());
        assert_eq!(Level::All.to_string(), "all");
    }
}
