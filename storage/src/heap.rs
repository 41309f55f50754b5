//! The process heap as the C allocator counts it: bytes in use and bytes freed but kept.
//!
//! A storage node's memory beyond the block cache is mostly memtables: many small skiplist
//! nodes, allocated while a memtable fills and all freed when it is flushed. The allocator keeps
//! freed memory for the next memtable rather than returning it, so RSS alone cannot tell memory
//! the node holds from memory it merely has not given back. `/v1/stats` reports both halves
//! (`bench/soak.sh` prints them beside RSS): under a sustained load the bytes in use stay flat
//! while the records grow, and the free pool rises and falls with the write buffers.
//!
//! Counting walks the allocator's free lists under each arena's lock (a millisecond or so on a
//! fragmented heap, during which allocations on other threads wait): for a stats endpoint, not
//! for a request path. On C libraries other than glibc, [`stats`] returns `None`.

/// The heap's bytes by state, as the allocator counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HeapStats {
    /// Allocated and not yet freed (heap chunks and large mmapped blocks).
    pub in_use_bytes: u64,
    /// Freed and kept by the allocator for reuse.
    pub free_bytes: u64,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn stats() -> Option<HeapStats> {
    // SAFETY: mallinfo2 takes no arguments, takes the allocator's own locks while it counts,
    // and returns a plain struct by value.
    let info = unsafe { libc::mallinfo2() };
    Some(HeapStats { in_use_bytes: (info.uordblks + info.hblkhd) as u64, free_bytes: info.fordblks as u64 })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn stats() -> Option<HeapStats> {
    None
}
