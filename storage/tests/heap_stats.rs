//! `storage::heap` against the real allocator, in a process of its own (the counters are
//! process-wide, so no other test may allocate beside it).

#![cfg(all(target_os = "linux", target_env = "gnu"))]

use storage::heap;

#[test]
fn freed_memory_moves_from_in_use_to_free() {
    const BLOCKS: usize = 200_000; // ~40 MiB of 200-byte blocks, like memtable nodes
    let mut blocks: Vec<Option<Vec<u8>>> = (0..BLOCKS).map(|i| Some(vec![i as u8; 200])).collect();
    let filled = heap::stats().expect("glibc reports heap stats");
    assert!(filled.in_use_bytes >= (BLOCKS * 200) as u64, "{filled:?}");

    // Free all but the first and last blocks: the last one pins the top of the heap, so the
    // allocator keeps what was freed instead of returning it.
    for block in &mut blocks[1..BLOCKS - 1] {
        *block = None;
    }
    let freed = heap::stats().unwrap();
    assert!(freed.in_use_bytes + (30 << 20) <= filled.in_use_bytes, "{filled:?} then {freed:?}");
    assert!(freed.free_bytes >= filled.free_bytes + (30 << 20), "{filled:?} then {freed:?}");
    assert_eq!(blocks[BLOCKS - 1].as_ref().map(|b| b[0]), Some((BLOCKS - 1) as u8));
}
