//! The free-space floor: a node refuses writes before its disk is actually full.
//!
//! A full disk fails writes half-way (the journal cannot grow, a value file cannot be written)
//! and an engine that cannot flush or compact cannot free space either. So a node keeps a floor
//! of free space on its data directory's filesystem (`--min-free-disk-mib`, 0: none) and, below
//! it, refuses writes of values with 507 Insufficient Storage while it keeps serving reads,
//! digests and listings. Deletes (tombstones: a few bytes each, and how an operator frees space)
//! are accepted down to half the floor. A value whose length would take free space below the
//! floor is refused whole, before its body is read.
//!
//! The check is cheap: free space is read with `statvfs` every [`REFRESH_INTERVAL`] into an
//! estimate that every admitted write lowers by its size at once, so a burst of small writes
//! between two readings cannot overshoot by much; a large value ([`FRESH_READING_BYTES`] or
//! more) is admitted on a fresh reading. When the estimate says "refuse", the filesystem is read
//! again before the answer, so a refusal is always based on a fresh reading, and a node recovers
//! by itself as soon as space returns (deleted files, a grown filesystem, a compaction).
//!
//! Partitions moving to the node, catch-up pulls and anti-entropy pause while it refuses writes
//! ([`Disk::wait_for_room`]); they resume where they stopped once space returns.
//!
//! Deliberate simplification: the floor covers what the engine writes after a write is admitted
//! (flushing memtables, compaction, which briefly needs room for both the old and the new
//! tables), so it should be well above the memtable size (`--memtable-mib`); the default
//! ([`DEFAULT_MIN_FREE_MIB`]) is.

use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often free space is read from the filesystem.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// The default floor, in MiB: several memtables and a compaction's worth of room on a node with
/// the default engine settings, yet small enough for a laptop's or a CI runner's temp dir.
pub const DEFAULT_MIN_FREE_MIB: u64 = 256;
/// Values at least this large are admitted on a fresh reading (one `statvfs`, small beside
/// writing the value), so the engine's own writes since the last reading count too.
pub const FRESH_READING_BYTES: u64 = 64 * 1024;
/// Free space not known (the filesystem cannot be read): nothing is refused.
const UNKNOWN: u64 = u64::MAX;

/// A write to admit, by what it adds to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// A value of this many bytes (a length declared ahead, or the sum of a batch's values).
    Value(u64),
    /// A delete: a tombstone.
    Tombstone,
}

/// Why a write was refused: free space on the filesystem, the floor, and the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub free_bytes: u64,
    pub floor_bytes: u64,
    pub write: Write,
}

/// Whether `write` may go to a filesystem with `free` bytes free, under a floor of `floor`
/// bytes (0: no floor). Values must leave the floor free; deletes half of it.
pub fn admit(write: Write, free: u64, floor: u64) -> Result<(), Refusal> {
    let refused = Err(Refusal { free_bytes: free, floor_bytes: floor, write });
    match write {
        _ if floor == 0 || free == UNKNOWN => Ok(()),
        Write::Value(bytes) if free.saturating_sub(bytes) < floor => refused,
        Write::Tombstone if free < floor / 2 => refused,
        Write::Value(_) | Write::Tombstone => Ok(()),
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Refusal { free_bytes: free, floor_bytes: floor, write } = *self;
        let flag = format!("--min-free-disk-mib {}", floor >> 20);
        match write {
            Write::Tombstone => write!(
                f,
                "refuses deletes: {free} bytes free on its data directory's filesystem, below half its \
                 floor of {floor} bytes ({flag}); free space on that disk"
            ),
            Write::Value(bytes) if free >= floor => write!(
                f,
                "refuses writes: a {bytes}-byte value would leave {} of its {free} free bytes on its data \
                 directory's filesystem, below its floor of {floor} bytes ({flag})",
                free.saturating_sub(bytes)
            ),
            Write::Value(_) => write!(
                f,
                "refuses writes: {free} bytes free on its data directory's filesystem, below its floor of \
                 {floor} bytes ({flag}); reads are served, deletes accepted down to {} bytes free; \
                 writes resume by themselves once space is freed",
                floor / 2
            ),
        }
    }
}

/// What the node reports of its disk (in `/v1/stats` and its heartbeats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Used, free and total bytes of the data directory's filesystem (`None`: cannot be read).
    /// Free is what unprivileged users may still use (as `df` shows it), read at most
    /// [`REFRESH_INTERVAL`] ago less what was admitted since; used is total less free.
    pub used_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    /// `--min-free-disk-mib`, in bytes (0: none).
    pub floor_bytes: u64,
    /// Below the floor: writes of values are refused.
    pub refusing_writes: bool,
    /// Writes refused for want of space since the node started.
    pub writes_refused: u64,
}

/// The floor of one node and its view of the free space (see the module docs).
#[derive(Debug)]
pub struct Disk {
    dir: PathBuf,
    floor: u64,
    /// Free bytes at the last reading, less what was admitted since ([`UNKNOWN`] if unread).
    free: AtomicU64,
    total: AtomicU64,
    refused: AtomicU64,
    /// Refusing at the last reading (to log the changes only).
    refusing: AtomicBool,
}

impl Disk {
    /// The floor of `floor_bytes` on the filesystem holding `dir`, read once now.
    pub fn new(dir: PathBuf, floor_bytes: u64) -> Self {
        let disk = Disk {
            dir,
            floor: floor_bytes,
            free: AtomicU64::new(UNKNOWN),
            total: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
        };
        disk.refresh();
        disk
    }

    /// Reads the filesystem's free space; logs when the node starts or stops refusing writes.
    pub fn refresh(&self) {
        let (free, total) = crate::metrics::filesystem_space(&self.dir).unwrap_or((UNKNOWN, 0));
        self.free.store(free, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        let refusal = admit(Write::Value(0), free, self.floor).err();
        if self.refusing.swap(refusal.is_some(), Ordering::Relaxed) != refusal.is_some() {
            match refusal {
                Some(refusal) => log::warn!("disk almost full: this node {refusal}"),
                None => log::info!("disk has room again: {free} bytes free, writes accepted"),
            }
        }
    }

    /// Admits `write` or says why not (counting the refusal). The estimate is lowered by what
    /// is admitted; a refusal is always checked against a fresh reading first.
    pub fn check(&self, write: Write) -> Result<(), Refusal> {
        let large = matches!(write, Write::Value(bytes) if bytes >= FRESH_READING_BYTES);
        if large || admit(write, self.free.load(Ordering::Relaxed), self.floor).is_err() {
            self.refresh();
        }
        match admit(write, self.free.load(Ordering::Relaxed), self.floor) {
            Ok(()) => {
                let bytes = match write {
                    Write::Value(bytes) => bytes,
                    Write::Tombstone => 0,
                };
                let lower = |free: u64| (free != UNKNOWN).then(|| free.saturating_sub(bytes));
                let _ = self.free.fetch_update(Ordering::Relaxed, Ordering::Relaxed, lower);
                Ok(())
            }
            Err(refusal) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                crate::metrics::disk_floor_refusal();
                Err(refusal)
            }
        }
    }

    /// Whether writes of values are refused now (by the current estimate).
    pub fn refusing_writes(&self) -> bool {
        admit(Write::Value(0), self.free.load(Ordering::Relaxed), self.floor).is_err()
    }

    /// Returns once writes are accepted again (at once if they are): pulls wait here.
    pub async fn wait_for_room(&self, what: &str) {
        if !self.refusing_writes() {
            return;
        }
        log::info!("{what} paused: the disk is below its free-space floor");
        while self.refusing_writes() {
            tokio::time::sleep(REFRESH_INTERVAL).await;
        }
        log::info!("{what} resumed: the disk has room again");
    }

    /// The floor, in bytes (0: none).
    pub fn floor_bytes(&self) -> u64 {
        self.floor
    }

    pub fn report(&self) -> Report {
        let free = self.free.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        Report {
            used_bytes: (free != UNKNOWN).then(|| total.saturating_sub(free)),
            free_bytes: (free != UNKNOWN).then_some(free),
            total_bytes: (free != UNKNOWN).then_some(total),
            floor_bytes: self.floor,
            refusing_writes: self.refusing_writes(),
            writes_refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// What heartbeats tell the controller (`None` if the filesystem cannot be read).
    pub fn status(&self) -> Option<common::proto::DiskStatus> {
        let report = self.report();
        Some(common::proto::DiskStatus {
            free_bytes: report.free_bytes?,
            total_bytes: report.total_bytes?,
            floor_bytes: report.floor_bytes,
            refusing_writes: report.refusing_writes,
        })
    }

    /// Reads the free space every [`REFRESH_INTERVAL`] until `shutdown`.
    pub async fn run(self: std::sync::Arc<Self>, mut shutdown: common::shutdown::Shutdown) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REFRESH_INTERVAL) => self.refresh(),
                _ = shutdown.wait() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn values_keep_the_floor_free_and_deletes_half_of_it() {
        // The write, free bytes, the floor, whether it is admitted.
        let cases: &[(Write, u64, u64, bool)] = &[
            (Write::Value(0), 300 * MIB, 256 * MIB, true),
            (Write::Value(44 * MIB), 300 * MIB, 256 * MIB, true),
            (Write::Value(44 * MIB + 1), 300 * MIB, 256 * MIB, false),
            (Write::Value(0), 256 * MIB, 256 * MIB, true),
            (Write::Value(1), 256 * MIB, 256 * MIB, false),
            (Write::Value(0), 256 * MIB - 1, 256 * MIB, false),
            (Write::Value(u64::MAX), 300 * MIB, 256 * MIB, false),
            (Write::Tombstone, 255 * MIB, 256 * MIB, true),
            (Write::Tombstone, 128 * MIB, 256 * MIB, true),
            (Write::Tombstone, 128 * MIB - 1, 256 * MIB, false),
            (Write::Tombstone, 0, 256 * MIB, false),
            // No floor: everything goes, even onto a full disk (the engine then fails it).
            (Write::Value(10 * MIB), 0, 0, true),
            (Write::Tombstone, 0, 0, true),
            // Free space unknown (the filesystem cannot be read): nothing is refused.
            (Write::Value(10 * MIB), UNKNOWN, 256 * MIB, true),
        ];
        for &(write, free, floor, admitted) in cases {
            let decision = admit(write, free, floor);
            assert_eq!(decision.is_ok(), admitted, "{write:?} with {free} free over a {floor} floor");
            if let Err(refusal) = decision {
                assert_eq!(refusal, Refusal { free_bytes: free, floor_bytes: floor, write });
            }
        }
    }

    #[test]
    fn a_refusal_names_the_free_space_the_floor_and_the_flag() {
        let refusal = |write, free| Refusal { free_bytes: free, floor_bytes: 8 * MIB, write }.to_string();
        let full = refusal(Write::Value(10), 3 * MIB);
        assert!(full.contains("3145728 bytes free"), "{full}");
        assert!(full.contains("floor of 8388608 bytes (--min-free-disk-mib 8)"), "{full}");
        assert!(full.contains("deletes accepted down to 4194304 bytes free"), "{full}");
        let large = refusal(Write::Value(5 * MIB), 9 * MIB);
        assert!(
            large.contains("a 5242880-byte value would leave 4194304 of its 9437184 free bytes"),
            "{large}"
        );
        let delete = refusal(Write::Tombstone, MIB);
        assert!(delete.contains("refuses deletes: 1048576 bytes free"), "{delete}");
    }

    #[test]
    fn admitted_writes_lower_the_estimate_and_a_refusal_reads_the_disk_again() {
        let dir = tempfile::tempdir().unwrap();
        let (free, _) = crate::metrics::filesystem_space(dir.path()).unwrap();
        // A floor at half the free space: a small write fits, by the estimate.
        let disk = Disk::new(dir.path().to_path_buf(), free / 2);
        let before = disk.free.load(Ordering::Relaxed);
        assert!(disk.check(Write::Value(MIB)).is_ok());
        assert_eq!(disk.free.load(Ordering::Relaxed), before - MIB, "the estimate is lowered at once");
        assert!(!disk.refusing_writes());
        // Admitting far more than there is lowers the estimate below the floor; the next check
        // reads the disk again rather than refusing on the estimate alone.
        disk.free.store(disk.floor - 1, Ordering::Relaxed);
        assert!(disk.refusing_writes(), "by the estimate");
        assert!(disk.check(Write::Value(0)).is_ok(), "a fresh reading admits it");
        assert!(disk.check(Write::Value(u64::MAX)).is_err());
        assert_eq!(disk.report().writes_refused, 1);
        let unlimited = Disk::new(dir.path().to_path_buf(), 0);
        assert!(unlimited.check(Write::Value(u64::MAX)).is_ok());
    }
}
