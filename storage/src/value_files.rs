//! Large values in files of their own, written with direct I/O while they arrive.
//!
//! Why: through the engine, a 24 MiB value is copied into the page cache for the journal,
//! fsynced, and later written again into a blob file at flush. On these machines a buffered
//! 24 MiB write plus its fsync took ~120 ms and a direct (`O_DIRECT`) write plus `fdatasync`
//! ~35 ms, and direct writes of 1 MiB chunks overlap with the upload itself. So a value of
//! [`VALUE_FILE_BYTES`] or more that arrives on its own request goes to a file, chunk by chunk,
//! and the engine stores a small reference to it (see `crate::store`).
//!
//! Guarantees: [`ValueWriter::finish`] returns only once the file's data, its length and its
//! directory entry are on stable storage, so a record that names a file never outlives it. A
//! writer or finished value that is dropped before a record names it removes its file. Files
//! no durable record names are removed by the store (after the sync that made their
//! replacement durable, or at open for files a crash left behind).
//!
//! Where the filesystem refuses direct I/O (tmpfs), files are written through the page cache
//! with the same guarantees.
//!
//! Reads stream: [`ValueFiles::open_value`] opens a value's file and [`stream`] reads it
//! [`READ_CHUNK_BYTES`] at a time on a blocking thread, as fast as the reader takes the chunks,
//! so a read holds at most [`READ_AHEAD_CHUNKS`] + 1 chunks in memory whatever the value's size.

use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::Xxh3;

/// Values of at least this many bytes that arrive on their own request go to a value file.
pub const VALUE_FILE_BYTES: usize = 1 << 20;
/// Size of one read of a value file being streamed.
pub const READ_CHUNK_BYTES: usize = 1 << 20;
/// Chunks read ahead of the reader of a value file.
pub const READ_AHEAD_CHUNKS: usize = 1;
/// Size of one direct write (and of the writer's buffer).
const CHUNK_BYTES: usize = 1 << 20;
/// Alignment of direct I/O buffers, offsets and lengths.
const ALIGN: usize = 4096;
const SUFFIX: &str = ".value";

/// A value file's name: a random 64-bit number.
pub type FileId = u64;

/// The directory of value files.
#[derive(Debug)]
pub struct ValueFiles {
    dir: PathBuf,
}

impl ValueFiles {
    /// Opens (or creates, durably) the directory `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(Self { dir: dir.to_owned() })
    }

    fn path(&self, id: FileId) -> PathBuf {
        self.dir.join(format!("{id:016x}{SUFFIX}"))
    }

    /// A new, empty value file.
    pub fn create(&self) -> io::Result<ValueWriter> {
        loop {
            let id: FileId = rand::random();
            let path = self.path(id);
            let open = |direct: bool| {
                let mut options = OpenOptions::new();
                options.write(true).create_new(true);
                if direct {
                    options.custom_flags(libc::O_DIRECT);
                }
                options.open(&path)
            };
            let (file, direct) = match open(true) {
                Ok(file) => (file, true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(false)?, false),
                Err(e) => return Err(e),
            };
            let mut buffer = vec![0; CHUNK_BYTES + ALIGN];
            let start = buffer.as_ptr().align_offset(ALIGN);
            buffer.truncate(start + CHUNK_BYTES);
            return Ok(ValueWriter {
                file: Some(file),
                unfinished: Some(Unreferenced { path, dir: self.dir.clone(), id, armed: true }),
                direct,
                buffer,
                start,
                filled: 0,
                length: 0,
                hasher: Xxh3::with_seed(crate::digest::VALUE_SEED),
            });
        }
    }

    /// The value in file `id`, which must be `length` bytes long.
    pub fn read(&self, id: FileId, length: u64) -> io::Result<Bytes> {
        let value = std::fs::read(self.path(id))?;
        if value.len() as u64 != length {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("value file {id:016x} holds {} bytes, its record says {length}", value.len()),
            ));
        }
        Ok(Bytes::from(value))
    }

    /// File `id` opened for reading, which must be `length` bytes long (see [`stream`]).
    pub fn open_value(&self, id: FileId, length: u64) -> io::Result<File> {
        let file = File::open(self.path(id))?;
        let held = file.metadata()?.len();
        if held != length {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("value file {id:016x} holds {held} bytes, its record says {length}"),
            ));
        }
        Ok(file)
    }

    /// Removes file `id` (gone already is fine).
    pub fn remove(&self, id: FileId) -> io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every value file in the directory.
    pub fn ids(&self) -> io::Result<Vec<FileId>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let parsed = name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| u64::from_str_radix(n, 16).ok());
            if let Some(id) = parsed {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

/// A file no record names yet: removed when dropped.
#[derive(Debug)]
struct Unreferenced {
    path: PathBuf,
    dir: PathBuf,
    id: FileId,
    /// Cleared once a record names the file.
    armed: bool,
}

impl Drop for Unreferenced {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                log::warn!("cannot remove unused value file {}: {e}", self.path.display());
            }
        }
    }
}

/// A value file being written. Dropping it before [`ValueWriter::finish`] removes the file.
pub struct ValueWriter {
    file: Option<File>,
    unfinished: Option<Unreferenced>,
    direct: bool,
    /// `CHUNK_BYTES` from `start` on are aligned for direct I/O.
    buffer: Vec<u8>,
    start: usize,
    filled: usize,
    length: u64,
    hasher: Xxh3,
}

impl std::fmt::Debug for ValueWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueWriter").field("file", &self.unfinished).field("length", &self.length).finish()
    }
}

impl ValueWriter {
    /// Appends `bytes`, writing every full chunk (blocking: call from a thread that may block).
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.length += bytes.len() as u64;
        while !bytes.is_empty() {
            let n = bytes.len().min(CHUNK_BYTES - self.filled);
            self.buffer[self.start + self.filled..self.start + self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == CHUNK_BYTES {
                self.flush_chunk(CHUNK_BYTES)?;
            }
        }
        Ok(())
    }

    /// Whether appending `bytes` more bytes writes to disk (fills the buffer).
    pub fn fills_chunk(&self, bytes: usize) -> bool {
        self.filled + bytes >= CHUNK_BYTES
    }

    /// Bytes appended so far.
    pub fn len(&self) -> u64 {
        self.length
    }

    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    fn flush_chunk(&mut self, bytes: usize) -> io::Result<()> {
        let file = self.file.as_mut().expect("open until finished");
        file.write_all(&self.buffer[self.start..self.start + bytes])?;
        self.filled = 0;
        Ok(())
    }

    /// Writes what is left and makes the file durable (data, length, directory entry).
    pub fn finish(mut self) -> io::Result<FinishedValue> {
        if self.filled > 0 {
            // Direct writes must be whole blocks: pad the last one, then cut the file back.
            let bytes = if self.direct { self.filled.div_ceil(ALIGN) * ALIGN } else { self.filled };
            self.buffer[self.start + self.filled..self.start + bytes].fill(0);
            self.flush_chunk(bytes)?;
        }
        let file = self.file.take().expect("open until finished");
        file.set_len(self.length)?;
        file.sync_data()?;
        let unreferenced = self.unfinished.take().expect("unfinished until now");
        File::open(&unreferenced.dir)?.sync_all()?;
        Ok(FinishedValue {
            id: unreferenced.id,
            length: self.length,
            hash: self.hasher.digest128(),
            unreferenced: Some(unreferenced),
        })
    }
}

/// A durable value file no record names yet. Dropping it removes the file; the store calls
/// [`FinishedValue::referenced`] once a record names it.
#[derive(Debug)]
pub struct FinishedValue {
    pub id: FileId,
    pub length: u64,
    /// [`crate::digest::value_hash`] of the value.
    pub hash: u128,
    unreferenced: Option<Unreferenced>,
}

impl FinishedValue {
    /// A record names the file now: it must outlive this handle.
    pub fn referenced(mut self) {
        if let Some(unreferenced) = &mut self.unreferenced {
            unreferenced.armed = false;
        }
    }
}

/// A body of the `length` bytes of `file` (from [`ValueFiles::open_value`]), read in chunks on a
/// blocking thread as the body is drained; the thread stops when the body is dropped.
///
/// The file may be replaced meanwhile: a newer record's sync removes it (see
/// [`crate::store`]), but an open descriptor keeps an unlinked file's data readable on Linux
/// (and every POSIX system) until it is closed, so a read that began still serves the whole
/// value it found, and the space is freed when it ends.
pub fn stream(mut file: File, length: u64) -> common::http::ChannelBody {
    use std::io::Read;
    let (sender, body) = common::http::channel_body(length, READ_AHEAD_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut left = length;
        while left > 0 {
            let mut chunk = vec![0; READ_CHUNK_BYTES.min(left as usize)];
            let read = file
                .read_exact(&mut chunk)
                .map(|()| Bytes::from(chunk))
                .map_err(|e| common::http::BoxError::from(format!("value file read failed: {e}")));
            let failed = read.is_err();
            if let Err(e) = &read {
                log::error!("{e}");
            }
            left -= read.as_ref().map_or(0, |c| c.len() as u64);
            // An error means the reader went away: nothing more to do.
            if sender.blocking_send(read).is_err() || failed {
                return;
            }
        }
    });
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(length: usize) -> Vec<u8> {
        (0..length).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    #[test]
    fn a_value_written_in_uneven_pieces_reads_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let files = ValueFiles::open(&dir.path().join("values")).unwrap();
        for length in [0, 1, ALIGN - 1, ALIGN, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 12345] {
            let value = pattern(length);
            let mut writer = files.create().unwrap();
            for piece in value.chunks(65_537) {
                writer.write(piece).unwrap();
            }
            let finished = writer.finish().unwrap();
            assert_eq!(finished.length, length as u64);
            assert_eq!(finished.hash, crate::digest::value_hash(&value));
            let id = finished.id;
            finished.referenced();
            assert_eq!(files.read(id, length as u64).unwrap(), value, "length {length}");
            assert!(files.read(id, length as u64 + 1).is_err(), "a length mismatch is an error");
            assert!(files.open_value(id, length as u64 + 1).is_err(), "a length mismatch is an error");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_streamed_file_reads_whole_even_once_unlinked() {
        use http_body_util::BodyExt;
        let dir = tempfile::tempdir().unwrap();
        let files = ValueFiles::open(dir.path()).unwrap();
        let value = pattern(3 * READ_CHUNK_BYTES + 777);
        let mut writer = files.create().unwrap();
        writer.write(&value).unwrap();
        let finished = writer.finish().unwrap();
        let (id, length) = (finished.id, finished.length);
        finished.referenced();
        let body = stream(files.open_value(id, length).unwrap(), length);
        files.remove(id).unwrap(); // replaced and removed while the read goes on
        assert_eq!(body.collect().await.unwrap().to_bytes(), value);
    }

    #[test]
    fn files_no_record_names_are_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let files = ValueFiles::open(dir.path()).unwrap();
        let mut abandoned = files.create().unwrap();
        abandoned.write(&pattern(CHUNK_BYTES + 10)).unwrap();
        assert_eq!(files.ids().unwrap().len(), 1);
        drop(abandoned); // an upload cut off midway
        assert!(files.ids().unwrap().is_empty());

        let mut writer = files.create().unwrap();
        writer.write(b"value").unwrap();
        drop(writer.finish().unwrap()); // durable, but no record came to name it
        assert!(files.ids().unwrap().is_empty());

        let mut writer = files.create().unwrap();
        writer.write(b"value").unwrap();
        let finished = writer.finish().unwrap();
        let id = finished.id;
        finished.referenced();
        assert_eq!(files.ids().unwrap(), vec![id]);
        files.remove(id).unwrap();
        files.remove(id).unwrap(); // already gone is fine
        assert!(files.ids().unwrap().is_empty());
    }
}
