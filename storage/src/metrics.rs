//! The storage node's metrics (see `common::telemetry` for the conventions). Writes, reads and
//! fsyncs are counted where they happen; the engine's memory and disk, the record count, the
//! repair counters and the node's view are read when `/metrics` is scraped, so they cost
//! nothing in between.

use crate::Node;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use std::sync::atomic::Ordering;
use std::time::Duration;

const WRITES: &str = "velourfog_storage_writes_total";
const READS: &str = "velourfog_storage_reads_total";
const FSYNC_SECONDS: &str = "velourfog_storage_fsync_duration_seconds";
const ENGINE_WRITE_SECONDS: &str = "velourfog_storage_engine_write_duration_seconds";
const FSYNC_WRITES: &str = "velourfog_storage_fsync_writes";
const BATCH_SECONDS: &str = "velourfog_storage_batch_duration_seconds";
const TRANSFER_BYTES: &str = "velourfog_storage_transfer_bytes_total";
const WRITES_REFUSED: &str = "velourfog_storage_writes_refused_total";
const TOMBSTONES_REAPED: &str = "velourfog_storage_tombstones_reaped_total";

/// Gives every metric its help text and unit (called once at start).
pub fn describe() {
    describe_disk_floor();
    describe_counter!(WRITES, Unit::Count, "Record writes applied or found already superseded.");
    describe_counter!(READS, Unit::Count, "Record reads served.");
    describe_histogram!(FSYNC_SECONDS, Unit::Seconds, "Time one fsync of the store took.");
    describe_histogram!(
        BATCH_SECONDS,
        Unit::Seconds,
        "Time from a batch request's arrival to its answer (writes: applied and durable), by kind."
    );
    describe_histogram!(
        ENGINE_WRITE_SECONDS,
        Unit::Seconds,
        "Time one write of the engine took (journal append and memtable insert, with any time the engine held it back)."
    );
    describe_histogram!(FSYNC_WRITES, Unit::Count, "Write batches made durable by one fsync (group commit).");
    describe_counter!(TRANSFER_BYTES, Unit::Bytes, "Bytes pulled for partitions moving to this node.");
    describe_counter!(
        TOMBSTONES_REAPED,
        Unit::Count,
        "Tombstones of deleted keys removed once every replica held them."
    );
    describe_gauge!("velourfog_storage_cache_bytes", Unit::Bytes, "Block cache in use.");
    describe_gauge!(
        "velourfog_storage_cache_capacity_bytes",
        Unit::Bytes,
        "Block cache bound (--cache-mib)."
    );
    describe_gauge!("velourfog_storage_write_buffer_bytes", Unit::Bytes, "Unflushed memtables.");
    describe_gauge!(
        "velourfog_storage_digest_unsettled_buckets",
        Unit::Count,
        "Digest buckets written without reading what the writes replaced, not yet rescanned (anti-entropy skips their partitions)."
    );
    describe_gauge!("velourfog_storage_lsm_tables", Unit::Count, "Table files of the records' LSM tree.");
    describe_gauge!(
        "velourfog_storage_lsm_level0_tables",
        Unit::Count,
        "Level-0 tables (the engine slows writes from 20 and halts them at 30)."
    );
    describe_gauge!(
        "velourfog_storage_lsm_sealed_memtables",
        Unit::Count,
        "Full memtables waiting to be flushed (the engine halts writes at 4)."
    );
    describe_gauge!("velourfog_storage_lsm_compactions_running", Unit::Count, "Compactions running.");
    describe_counter!("velourfog_storage_lsm_compactions_total", Unit::Count, "Compactions finished.");
    describe_counter!(
        "velourfog_storage_lsm_compaction_seconds_total",
        Unit::Seconds,
        "Time spent compacting (whole seconds)."
    );
    describe_counter!(
        "velourfog_storage_lsm_block_loads_total",
        Unit::Count,
        "Blocks reads needed, by kind (data, index, filter) and whether the block cache had them or the file was read."
    );
    describe_counter!(
        "velourfog_storage_lsm_filter_queries_total",
        Unit::Count,
        "Filter checks of point reads."
    );
    describe_counter!(
        "velourfog_storage_lsm_filter_skips_total",
        Unit::Count,
        "Filter checks that ruled a table out without reading it."
    );
    describe_counter!(
        "velourfog_storage_lsm_write_stalls_total",
        Unit::Count,
        "Engine writes that took 10 ms or longer (held back while flushes or compactions fell behind)."
    );
    describe_gauge!(
        "velourfog_storage_engine_disk_bytes",
        Unit::Bytes,
        "Disk space of the storage engine's files."
    );
    describe_gauge!(
        "velourfog_storage_disk_free_bytes",
        Unit::Bytes,
        "Free space on the data directory's filesystem."
    );
    describe_gauge!(
        "velourfog_storage_disk_total_bytes",
        Unit::Bytes,
        "Size of the data directory's filesystem."
    );
    describe_gauge!(
        "velourfog_storage_records",
        Unit::Count,
        "Records held (approximate: tombstones included)."
    );
    describe_counter!(
        "velourfog_storage_repair_bytes_total",
        Unit::Bytes,
        "Bytes exchanged with peers for repair."
    );
    describe_counter!(
        "velourfog_storage_repair_records_total",
        Unit::Count,
        "Records pulled by repair that superseded ours."
    );
    describe_gauge!("velourfog_storage_map_epoch", "Epoch of the newest partition map installed.");
    describe_gauge!(
        "velourfog_storage_watched_keys",
        Unit::Count,
        "Keys with a watch held open on this node."
    );
    describe_gauge!(
        "velourfog_storage_serving_reads",
        "1 while the node holds a read lease and may serve reads."
    );
    describe_gauge!(
        "velourfog_storage_clock_skew_seconds",
        Unit::Seconds,
        "How far this node's clock is ahead of the controller's."
    );
}

/// The free-space floor's metrics (see `crate::disk`).
fn describe_disk_floor() {
    describe_gauge!(
        "velourfog_storage_disk_floor_bytes",
        Unit::Bytes,
        "Free space below which writes are refused (--min-free-disk-mib; 0: none)."
    );
    describe_gauge!(
        "velourfog_storage_refusing_writes",
        "1 while free disk space is below the floor and writes of values are refused."
    );
    describe_counter!(
        WRITES_REFUSED,
        Unit::Count,
        "Writes refused before touching the store, by reason (disk_floor: free space below the floor)."
    );
    // Present from the start, so that a rate over it is defined before the first refusal.
    counter!(WRITES_REFUSED, "reason" => "disk_floor").increment(0);
}

pub fn writes(count: usize) {
    counter!(WRITES).increment(count as u64);
}

pub fn reads(count: usize) {
    counter!(READS).increment(count as u64);
}

/// One fsync that took `elapsed` and made `batches` waiting write batches durable.
/// One `POST /v1/batch` of `kind` (`read`, or `write` if any write was applied) answered
/// after `elapsed`.
pub fn batch(kind: &'static str, elapsed: Duration) {
    histogram!(BATCH_SECONDS, "kind" => kind).record(elapsed.as_secs_f64());
}

pub fn fsync(elapsed: Duration, batches: u64) {
    histogram!(FSYNC_SECONDS).record(elapsed.as_secs_f64());
    histogram!(FSYNC_WRITES).record(batches as f64);
}

/// One write of the engine (journal append and memtable insert) that took `elapsed`,
/// including any time the engine held it back (see `crate::store::STALL`).
pub fn engine_write(elapsed: Duration) {
    histogram!(ENGINE_WRITE_SECONDS).record(elapsed.as_secs_f64());
}

/// One write refused because free disk space is below the floor (see `crate::disk`).
pub fn disk_floor_refusal() {
    counter!(WRITES_REFUSED, "reason" => "disk_floor").increment(1);
}

pub fn tombstones_reaped(count: u64) {
    counter!(TOMBSTONES_REAPED).increment(count);
}

pub fn transferred(bytes: u64) {
    counter!(TRANSFER_BYTES).increment(bytes);
}

pub fn clock_skew(skew_us: i64) {
    gauge!("velourfog_storage_clock_skew_seconds").set(skew_us as f64 / 1e6);
}

/// Updates the gauges read at scrape time.
pub fn refresh(node: &Node) {
    let engine = node.store.engine_stats();
    gauge!("velourfog_storage_cache_bytes").set(engine.cache_bytes as f64);
    gauge!("velourfog_storage_cache_capacity_bytes").set(engine.cache_capacity_bytes as f64);
    gauge!("velourfog_storage_write_buffer_bytes").set(engine.write_buffer_bytes as f64);
    gauge!("velourfog_storage_records").set(engine.approximate_records as f64);
    gauge!("velourfog_storage_digest_unsettled_buckets").set(engine.unsettled_buckets as f64);
    let lsm = engine.lsm;
    gauge!("velourfog_storage_lsm_tables").set(lsm.tables as f64);
    gauge!("velourfog_storage_lsm_level0_tables").set(lsm.l0_tables as f64);
    gauge!("velourfog_storage_lsm_sealed_memtables").set(lsm.sealed_memtables as f64);
    gauge!("velourfog_storage_lsm_compactions_running").set(lsm.compactions_running as f64);
    counter!("velourfog_storage_lsm_compactions_total").absolute(lsm.compactions_done);
    counter!("velourfog_storage_lsm_compaction_seconds_total").absolute(lsm.compaction_ms / 1000);
    for (kind, loads) in
        [("data", lsm.data_blocks), ("index", lsm.index_blocks), ("filter", lsm.filter_blocks)]
    {
        counter!("velourfog_storage_lsm_block_loads_total", "kind" => kind, "from" => "cache")
            .absolute(loads.cached);
        counter!("velourfog_storage_lsm_block_loads_total", "kind" => kind, "from" => "file")
            .absolute(loads.read);
    }
    counter!("velourfog_storage_lsm_filter_queries_total").absolute(lsm.filter_queries);
    counter!("velourfog_storage_lsm_filter_skips_total").absolute(lsm.filter_skips);
    counter!("velourfog_storage_lsm_write_stalls_total").absolute(lsm.write_stalls);
    if let Some(bytes) = node.store.disk_space() {
        gauge!("velourfog_storage_engine_disk_bytes").set(bytes as f64);
    }
    if let Some((free, total)) = filesystem_space(&node.data_dir) {
        gauge!("velourfog_storage_disk_free_bytes").set(free as f64);
        gauge!("velourfog_storage_disk_total_bytes").set(total as f64);
    }
    gauge!("velourfog_storage_disk_floor_bytes").set(node.disk.floor_bytes() as f64);
    gauge!("velourfog_storage_refusing_writes").set(if node.disk.refusing_writes() { 1.0 } else { 0.0 });
    counter!("velourfog_storage_repair_bytes_total")
        .absolute(node.repair.bytes_moved.load(Ordering::Relaxed));
    counter!("velourfog_storage_repair_records_total")
        .absolute(node.repair.records_pulled.load(Ordering::Relaxed));
    let serving = node.read_permission().is_ok();
    let epoch = node.view().map.as_ref().map_or(0, |m| m.epoch);
    gauge!("velourfog_storage_map_epoch").set(epoch as f64);
    gauge!("velourfog_storage_watched_keys").set(node.store.watchers.keys() as f64);
    gauge!("velourfog_storage_serving_reads").set(if serving { 1.0 } else { 0.0 });
}

/// Free (to unprivileged users) and total bytes of the filesystem holding `path`.
pub fn filesystem_space(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed statvfs for the kernel to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize as u64;
    Some((stat.f_bavail as u64 * block, stat.f_blocks as u64 * block))
}

#[cfg(test)]
mod tests {
    #[test]
    fn filesystem_space_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let (free, total) = super::filesystem_space(dir.path()).unwrap();
        assert!(total > 0 && free <= total, "{free} of {total}");
        assert_eq!(super::filesystem_space(&dir.path().join("missing")), None);
    }
}
