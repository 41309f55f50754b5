//! The storage engine choice, measured: fjall against redb on the storage node's workload.
//! Run: `cargo bench -p storage --bench engines`. Both engines get the same keys (hash prefix +
//! key, as the store lays them out), the same 9-byte-header values, and the same operations:
//!
//! - versioned writes: read the held record, then write, in groups of 1 and of 100 writes per
//!   durable commit (fsync), which is what group commit turns concurrent writers into;
//! - point reads of random keys;
//! - one partition's range scan (1/16 of the keys);
//! - a 128 MiB value written durably and read back.

use redb::ReadableTable;
use std::path::Path;
use std::time::Instant;

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("records");
const KEYS: usize = 20_000;

trait Engine {
    fn name(&self) -> &'static str;
    /// Applies `items` (read, then write each), then makes them durable in one commit.
    fn write_group(&self, items: &[(Vec<u8>, Vec<u8>)]);
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    fn scan_count(&self, start: &[u8], end: &[u8]) -> usize;
}

struct Fjall {
    db: fjall::Database,
    records: fjall::Keyspace,
}

impl Fjall {
    fn open(dir: &Path) -> Self {
        let db = fjall::Database::builder(dir).cache_size(64 << 20).open().unwrap();
        let records = db
            .keyspace("records", || {
                fjall::KeyspaceCreateOptions::default()
                    .with_kv_separation(Some(fjall::KvSeparationOptions::default()))
            })
            .unwrap();
        Self { db, records }
    }
}

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall 3"
    }
    fn write_group(&self, items: &[(Vec<u8>, Vec<u8>)]) {
        for (key, value) in items {
            let _held = self.records.get(key).unwrap();
            self.records.insert(key, value).unwrap();
        }
        self.db.persist(fjall::PersistMode::SyncData).unwrap();
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.records.get(key).unwrap().map(|v| v.to_vec())
    }
    fn scan_count(&self, start: &[u8], end: &[u8]) -> usize {
        self.records.range(start.to_vec()..end.to_vec()).fold(0, |count, item| {
            std::hint::black_box(item.into_inner().unwrap().1.len());
            count + 1
        })
    }
}

struct Redb {
    db: redb::Database,
}

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb 4"
    }
    fn write_group(&self, items: &[(Vec<u8>, Vec<u8>)]) {
        let tx = self.db.begin_write().unwrap();
        {
            let mut table = tx.open_table(TABLE).unwrap();
            for (key, value) in items {
                let _held = table.get(key.as_slice()).unwrap().map(|v| v.value().len());
                table.insert(key.as_slice(), value.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap(); // Durability::Immediate: fsync on commit
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read().unwrap();
        let table = tx.open_table(TABLE).unwrap();
        table.get(key).unwrap().map(|v| v.value().to_vec())
    }
    fn scan_count(&self, start: &[u8], end: &[u8]) -> usize {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read().unwrap();
        let table = tx.open_table(TABLE).unwrap();
        // Read every value, as fjall's iterator does.
        table
            .range(start..end)
            .unwrap()
            .inspect(|item| {
                std::hint::black_box(item.as_ref().unwrap().1.value().len());
            })
            .count()
    }
}

fn stored_key(i: usize) -> Vec<u8> {
    let key = format!("key-{i}");
    let mut stored = common::partition::hash_prefix(key.as_bytes()).to_be_bytes().to_vec();
    stored.extend_from_slice(key.as_bytes());
    stored
}

fn versioned(value_len: usize, timestamp: u64) -> Vec<u8> {
    let mut raw = vec![0u8];
    raw.extend_from_slice(&timestamp.to_be_bytes());
    raw.resize(9 + value_len, b'v');
    raw
}

fn rate(count: usize, started: Instant) -> String {
    format!("{:>10.0}/s", count as f64 / started.elapsed().as_secs_f64())
}

fn run(engine: &dyn Engine) {
    let name = engine.name();
    // Versioned writes, 1 per fsync (what a lone writer costs).
    let started = Instant::now();
    for i in 0..300 {
        engine.write_group(&[(stored_key(i), versioned(100, 1))]);
    }
    println!("{name:<8} writes, 1 per fsync      {}", rate(300, started));
    // Versioned writes, 100 per fsync (group commit under concurrency).
    let started = Instant::now();
    for group in (0..KEYS).collect::<Vec<_>>().chunks(100) {
        let items: Vec<_> = group.iter().map(|&i| (stored_key(i), versioned(100, 2))).collect();
        engine.write_group(&items);
    }
    println!("{name:<8} writes, 100 per fsync    {}", rate(KEYS, started));
    // Point reads of random keys.
    let mut state = 0x2545F4914F6CDD1Du64;
    let started = Instant::now();
    for _ in 0..KEYS {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        assert!(engine.get(&stored_key(state as usize % KEYS)).is_some());
    }
    println!("{name:<8} point reads              {}", rate(KEYS, started));
    // One partition of 16: hash prefixes 0x30000000..0x40000000.
    let started = Instant::now();
    let mut scanned = 0;
    for _ in 0..20 {
        scanned += engine.scan_count(&0x3000_0000u32.to_be_bytes(), &0x4000_0000u32.to_be_bytes());
    }
    println!(
        "{name:<8} partition scan           {} records ({} per scan)",
        rate(scanned, started),
        scanned / 20
    );
    // A 128 MiB value, durably written and read back.
    let big = versioned(128 << 20, 3);
    let started = Instant::now();
    engine.write_group(&[(b"big".to_vec(), big.clone())]);
    let write = started.elapsed();
    let started = Instant::now();
    assert_eq!(engine.get(b"big").map(|v| v.len()), Some(big.len()));
    println!(
        "{name:<8} 128 MiB value            write {:.2} s, read {:.2} s",
        write.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    println!("storage engines on the node's workload ({KEYS} keys, 100-byte values, fsync on)");
    let dir = tempfile::tempdir().unwrap();
    run(&Fjall::open(&dir.path().join("fjall")));
    let dir = tempfile::tempdir().unwrap();
    run(&Redb { db: redb::Database::create(dir.path().join("redb")).unwrap() });
}
