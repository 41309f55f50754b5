//! The data commands: `get`, `set` and `delete`, through the frontends with the [`client`]
//! library (failover, retries and the `--timeout` deadline are its).
//!
//! Values are bytes: `get` writes exactly the stored bytes to standard output (no newline
//! added) as they arrive, and `set` takes them from the command line, from standard input
//! (`-`) or from a file (`--file`). A value read from a file, or from standard input
//! redirected from a file, is streamed with its length and never held in memory whole (and,
//! being a stream, is not retried once its first bytes went out); one from a pipe is read
//! into memory once (so that its length is known and it can be retried). A progress bar on
//! standard error follows transfers of [`PROGRESS_MIN_BYTES`] or more, only when standard
//! error is a terminal and never with `--json`.
//!
//! Keys are bytes too: as given on the command line (any bytes but NUL on Unix), or in hex
//! with `--hex-key`.

use crate::Error;
use bytes::Bytes;
use clap::Args;
use client::Level;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Transfers at least this large get a progress bar (on a terminal).
pub const PROGRESS_MIN_BYTES: u64 = 4 << 20;

/// Size of the pieces a value is read from a file or standard input in.
const READ_CHUNK: usize = 1 << 20;

/// The key of a data command.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct KeyArgs {
    /// The key: any bytes (quote it for the shell), or hex digits with --hex-key.
    #[arg(value_name = "KEY")]
    pub key: OsString,
    /// KEY is hex (`00ff41`), for keys a command line cannot carry (NUL bytes).
    #[arg(long)]
    pub hex_key: bool,
}

impl KeyArgs {
    /// The key's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, Error> {
        if self.hex_key {
            unhex(&self.key, "--hex-key")
        } else {
            Ok(self.key.as_bytes().to_vec())
        }
    }
}

/// The bytes that the hex digits of `text` (given with `flag`) name.
pub(crate) fn unhex(text: &std::ffi::OsStr, flag: &str) -> Result<Vec<u8>, Error> {
    let raw = text.as_bytes();
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    if !raw.len().is_multiple_of(2) {
        return Err(Error::Usage(format!(
            "{flag}: `{}` has an odd number of digits",
            text.to_string_lossy()
        )));
    }
    raw.chunks(2)
        .map(|pair| match (digit(pair[0]), digit(pair[1])) {
            (Some(hi), Some(lo)) => Ok(hi << 4 | lo),
            _ => Err(Error::Usage(format!("{flag}: `{}` is not hex", text.to_string_lossy()))),
        })
        .collect()
}

/// `velourfog get`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct GetArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// Replicas compared: one, quorum or all [default: the frontend's, normally one].
    #[arg(short = 'r', long, value_name = "LEVEL")]
    pub read_level: Option<Level>,
}

/// `velourfog set`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct SetArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// The value, as given (no newline added); `-` reads it from standard input.
    #[arg(value_name = "VALUE", required_unless_present = "file", conflicts_with = "file")]
    pub value: Option<OsString>,
    /// Read the value from this file (streamed, never held in memory whole).
    #[arg(short = 'f', long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Replicas that must store it: one, quorum or all [default: the frontend's, normally quorum].
    #[arg(short = 'w', long, value_name = "LEVEL")]
    pub write_level: Option<Level>,
}

/// `velourfog delete`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// Replicas that must store the deletion: one, quorum or all [default: the frontend's].
    #[arg(short = 'w', long, value_name = "LEVEL")]
    pub write_level: Option<Level>,
}

/// How a data command presents itself.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    /// Whether standard error is a terminal (progress bars go there).
    pub terminal: bool,
}

impl Output {
    /// Whether a transfer of `bytes` (unknown: `None`) gets a progress bar.
    pub fn shows_progress(&self, bytes: Option<u64>) -> bool {
        !self.json && self.terminal && bytes.is_some_and(|b| b >= PROGRESS_MIN_BYTES)
    }

    fn bar(&self, bytes: Option<u64>, verb: &str) -> ProgressBar {
        if !self.shows_progress(bytes) {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(bytes, ProgressDrawTarget::stderr());
        let template = "{msg} {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}";
        bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
        bar.set_message(verb.to_owned());
        bar
    }
}

/// `get`: the value to `out`, or [`Error::NotFound`].
pub async fn get(
    client: &client::Client,
    args: &GetArgs,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let key = args.key.bytes()?;
    let client = match args.read_level {
        Some(level) => client.with_read_level(level),
        None => client.clone(),
    };
    if output.json {
        return match client.get(&key).await? {
            Some(value) => write_json(out, &found(&key, Some(&value))),
            None => {
                write_json(out, &found(&key, None))?;
                Err(Error::NotFound)
            }
        };
    }
    let Some(mut value) = client.get_stream(&key).await? else { return Err(Error::NotFound) };
    let bar = output.bar(value.length(), "get");
    while let Some(chunk) = value.chunk().await? {
        out.write_all(&chunk)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    out.flush()?;
    Ok(())
}

/// `{"key": ..., "found": ..., "value": ...}`, each byte string as text if it is UTF-8, else
/// as hex under `key_hex` / `value_hex`.
fn found(key: &[u8], value: Option<&[u8]>) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    put_bytes(&mut object, "key", key);
    object.insert("found".into(), value.is_some().into());
    if let Some(value) = value {
        put_bytes(&mut object, "value", value);
    }
    object.into()
}

pub(crate) fn put_bytes(object: &mut serde_json::Map<String, serde_json::Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(name.to_owned(), text.into()),
        Err(_) => object.insert(format!("{name}_hex"), hex(bytes).into()),
    };
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `set`, from the argument, standard input or a file.
pub async fn set(
    client: &client::Client,
    args: &SetArgs,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let key = args.key.bytes()?;
    let client = match args.write_level {
        Some(level) => client.with_write_level(level),
        None => client.clone(),
    };
    let source = match (&args.file, &args.value) {
        (Some(path), _) => Some((open(path)?, path.display().to_string())),
        (None, Some(value)) if value == "-" => Some((stdin()?, "standard input".to_owned())),
        (None, Some(value)) => {
            client.set(&key, Bytes::copy_from_slice(value.as_bytes())).await?;
            None
        }
        (None, None) => return Err(Error::Usage("give VALUE, `-` or --file".to_owned())),
    };
    if let Some((file, name)) = source {
        match length_of(&file) {
            Some(length) => set_streamed(&client, &key, file, length, &name, output).await?,
            None => {
                let value = read_whole(file, &name, output)?;
                client.set(&key, value).await?;
            }
        }
    }
    acknowledge(out, output)
}

/// `delete`.
pub async fn delete(
    client: &client::Client,
    args: &DeleteArgs,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let key = args.key.bytes()?;
    match args.write_level {
        Some(level) => client.with_write_level(level).delete(&key).await?,
        None => client.delete(&key).await?,
    }
    acknowledge(out, output)
}

fn acknowledge(out: &mut dyn Write, output: Output) -> Result<(), Error> {
    if output.json {
        write_json(out, &serde_json::json!({ "ok": true }))
    } else {
        writeln!(out, "ok")?;
        Ok(())
    }
}

fn write_json(out: &mut dyn Write, value: &serde_json::Value) -> Result<(), Error> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

fn open(path: &Path) -> Result<std::fs::File, Error> {
    std::fs::File::open(path).map_err(|cause| Error::Input { what: path.display().to_string(), cause })
}

/// Standard input as a file (a copy of descriptor 0).
fn stdin() -> Result<std::fs::File, Error> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|cause| Error::Input { what: "standard input".to_owned(), cause })?;
    Ok(std::fs::File::from(fd))
}

/// The bytes left to read in `file`, if it is a regular file (not a pipe or terminal).
fn length_of(file: &std::fs::File) -> Option<u64> {
    use std::io::Seek;
    let metadata = file.metadata().ok().filter(std::fs::Metadata::is_file)?;
    let position = (&*file).stream_position().ok()?;
    Some(metadata.len().saturating_sub(position))
}

/// Streams `length` bytes of `file` as the value of `key`: a thread reads it in chunks of
/// [`READ_CHUNK`], a few chunks ahead of the upload.
async fn set_streamed(
    client: &client::Client,
    key: &[u8],
    mut file: std::fs::File,
    length: u64,
    name: &str,
    output: Output,
) -> Result<(), Error> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let reader = std::thread::spawn(move || loop {
        let mut chunk = Vec::with_capacity(READ_CHUNK);
        let read = match (&mut file).take(READ_CHUNK as u64).read_to_end(&mut chunk) {
            Ok(0) => return,
            Ok(_) => Ok(Bytes::from(chunk)),
            Err(e) => Err(e),
        };
        let failed = read.is_err();
        if sender.blocking_send(read).is_err() || failed {
            return; // the upload ended (or the file failed: nothing more to send)
        }
    });
    let bar = output.bar(Some(length), "set");
    let counter = bar.clone();
    let chunks = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    let chunks = futures_util::StreamExt::inspect(chunks, move |chunk| {
        if let Ok(chunk) = chunk {
            counter.inc(chunk.len() as u64);
        }
    });
    let result = client.set_stream(key, Some(length), chunks).await;
    bar.finish_and_clear();
    let _ = reader.join();
    result.map_err(|e| match e {
        client::Error::Source(cause) => Error::Input { what: name.to_owned(), cause },
        e => Error::Client(e),
    })
}

/// Reads all of `file` (a pipe, say), showing progress once it passes [`PROGRESS_MIN_BYTES`].
fn read_whole(mut file: std::fs::File, name: &str, output: Output) -> Result<Bytes, Error> {
    let mut value = Vec::new();
    let mut bar: Option<ProgressBar> = None;
    loop {
        let read = (&mut file).take(READ_CHUNK as u64).read_to_end(&mut value);
        if read.map_err(|cause| Error::Input { what: name.to_owned(), cause })? == 0 {
            break;
        }
        if bar.is_none() && output.shows_progress(Some(value.len() as u64)) {
            let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let template = "{msg} {spinner} {binary_bytes} {binary_bytes_per_sec}";
            spinner.set_style(ProgressStyle::with_template(template).expect("valid template"));
            spinner.set_message(format!("reading {name}"));
            bar = Some(spinner);
        }
        if let Some(bar) = &bar {
            bar.set_position(value.len() as u64);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(Bytes::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bytes_or_hex() {
        let key = |raw: &[u8], hex_key| KeyArgs { key: std::ffi::OsStr::from_bytes(raw).to_owned(), hex_key };
        type Expected = Result<&'static [u8], &'static str>;
        let cases: [(&[u8], bool, Expected); 7] = [
            (b"greeting", false, Ok(b"greeting")),
            (b"\xff\xfe a&b=c", false, Ok(b"\xff\xfe a&b=c")),
            (b"", false, Ok(b"")),
            (b"00ff41", true, Ok(b"\x00\xffA")),
            (b"00FF", true, Ok(b"\x00\xff")),
            (b"0", true, Err("odd number of digits")),
            (b"zz", true, Err("`zz` is not hex")),
        ];
        for (raw, hex_key, expected) in cases {
            match (key(raw, hex_key).bytes(), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{raw:?}"),
                (Err(got), Err(want)) => assert!(got.to_string().contains(want), "{raw:?}: {got}"),
                (got, want) => panic!("{raw:?}: {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn progress_only_on_a_terminal_for_large_transfers_and_never_with_json() {
        let big = Some(PROGRESS_MIN_BYTES);
        let cases = [
            (false, true, big, true),
            (false, true, Some(PROGRESS_MIN_BYTES - 1), false),
            (false, true, None, false),
            (true, true, big, false),
            (false, false, big, false),
            (true, false, big, false),
        ];
        for (json, terminal, bytes, shown) in cases {
            assert_eq!(
                Output { json, terminal }.shows_progress(bytes),
                shown,
                "json {json} terminal {terminal} {bytes:?}"
            );
        }
    }

    #[test]
    fn json_answers_carry_text_or_hex() {
        let cases = [
            (&b"k"[..], Some(&b"hello"[..]), r#"{"found":true,"key":"k","value":"hello"}"#),
            (b"\xff", Some(b"\x00\xfe"), r#"{"found":true,"key_hex":"ff","value_hex":"00fe"}"#),
            (b"k", Some(b""), r#"{"found":true,"key":"k","value":""}"#),
            (b"k", None, r#"{"found":false,"key":"k"}"#),
        ];
        for (key, value, expected) in cases {
            assert_eq!(found(key, value).to_string(), expected);
        }
    }

    #[test]
    fn a_regular_file_has_a_length_from_where_it_is_read() {
        use std::io::{Seek, SeekFrom};
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[7; 1000]).unwrap();
        file.seek(SeekFrom::Start(100)).unwrap();
        assert_eq!(length_of(&file), Some(900));
        let (reader, _writer) = std::io::pipe().unwrap();
        assert_eq!(length_of(&std::fs::File::from(std::os::fd::OwnedFd::from(reader))), None);
    }

    #[test]
    fn a_pipe_is_read_whole() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let data: Vec<u8> = (0..3 * READ_CHUNK + 17).map(|i| (i % 253) as u8).collect();
        let sent = data.clone();
        let writing = std::thread::spawn(move || writer.write_all(&sent));
        let file = std::fs::File::from(std::os::fd::OwnedFd::from(reader));
        let got = read_whole(file, "a pipe", Output { json: false, terminal: false }).unwrap();
        writing.join().unwrap().unwrap();
        assert_eq!(got, data);
    }
}
