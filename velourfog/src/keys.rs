//! `velourfog keys [PREFIX]`: every key that starts with PREFIX (every key without one), one per
//! line, through the [`client`] library's listing: page by page (`--page-size` keys per request),
//! following the cursor until the last page, each page written as it arrives, so memory holds
//! one page whatever the number of keys. `--timeout` bounds each page's request.
//!
//! Keys come in the cluster's order: by partition, then by the key's SHA-1, not sorted (pipe
//! through `sort` for that). Three formats, one line per key:
//! - by default the key's raw bytes, then a newline, like `ls`: what a shell loop reads, but a
//!   key holding a newline byte spans two lines;
//! - `--escaped`: percent-encoded as in the HTTP API (`user%2Falice`), one line per key whatever
//!   bytes it holds, ready for `curl "…/get/?key=$k"`;
//! - `--json`: one object per line, `{"key":"…"}`, or `{"key_hex":"…"}` for a key that is not
//!   UTF-8, as `get --json` writes keys.

use crate::Error;
use clap::Args;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

/// `velourfog keys`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct KeysArgs {
    /// Only keys that start with PREFIX (bytes as given, or hex with --hex-prefix); without
    /// it, every key.
    #[arg(value_name = "PREFIX")]
    pub prefix: Option<OsString>,
    /// PREFIX is hex (`00ff`), for prefixes a command line cannot carry.
    #[arg(long, requires = "prefix")]
    pub hex_prefix: bool,
    /// Print each key percent-encoded, as the HTTP API writes keys: one line per key whatever
    /// bytes it holds.
    #[arg(long)]
    pub escaped: bool,
    /// Keys asked for per request (1 to 10000).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub page_size: u16,
}

/// How keys are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Raw,
    Escaped,
    Json,
}

impl Format {
    /// The format `--json` and `--escaped` ask for.
    pub fn of(json: bool, escaped: bool) -> Result<Self, Error> {
        match (json, escaped) {
            (true, true) => Err(Error::Usage("--escaped and --json are two formats: choose one".to_owned())),
            (true, false) => Ok(Format::Json),
            (false, true) => Ok(Format::Escaped),
            (false, false) => Ok(Format::Raw),
        }
    }
}

/// Appends `key` as one line of `format` to `out`.
pub fn line(key: &[u8], format: Format, out: &mut Vec<u8>) {
    match format {
        Format::Raw => out.extend_from_slice(key),
        Format::Escaped => out.extend_from_slice(common::query::encode(key).as_bytes()),
        Format::Json => {
            let mut object = serde_json::Map::new();
            crate::data::put_bytes(&mut object, "key", key);
            serde_json::to_writer(&mut *out, &object).expect("writing JSON to a Vec");
        }
    }
    out.push(b'\n');
}

/// `keys`: every key with the prefix to `out`, a page at a time.
pub async fn keys(
    client: &client::Client,
    args: &KeysArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    use futures_util::TryStreamExt;
    let format = Format::of(json, args.escaped)?;
    let prefix = match &args.prefix {
        None => Vec::new(),
        Some(prefix) if args.hex_prefix => crate::data::unhex(prefix, "--hex-prefix")?,
        Some(prefix) => prefix.as_bytes().to_vec(),
    };
    let mut pages = std::pin::pin!(client.pages(&prefix, Some(usize::from(args.page_size))));
    let mut text = Vec::new();
    while let Some(page) = pages.try_next().await? {
        text.clear();
        for key in &page.keys {
            line(key, format, &mut text);
        }
        out.write_all(&text)?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_writes_one_line_per_key() {
        let cases: &[(&[u8], Format, &[u8])] = &[
            (b"user/alice", Format::Raw, b"user/alice\n"),
            (b"a\nb", Format::Raw, b"a\nb\n"),
            (b"user/alice", Format::Escaped, b"user%2Falice\n"),
            (b"a\nb \xff", Format::Escaped, b"a%0Ab%20%FF\n"),
            (b"", Format::Escaped, b"\n"),
            (b"caf\xc3\xa9 \"q\"", Format::Json, "{\"key\":\"café \\\"q\\\"\"}\n".as_bytes()),
            (b"\x00\xff", Format::Json, b"{\"key_hex\":\"00ff\"}\n"),
        ];
        for &(key, format, expected) in cases {
            let mut out = Vec::new();
            line(key, format, &mut out);
            assert_eq!(out, expected, "{key:?} {format:?}");
        }
    }

    #[test]
    fn one_format_at_a_time() {
        assert_eq!(Format::of(false, false).unwrap(), Format::Raw);
        assert_eq!(Format::of(false, true).unwrap(), Format::Escaped);
        assert_eq!(Format::of(true, false).unwrap(), Format::Json);
        assert!(Format::of(true, true).unwrap_err().to_string().contains("choose one"));
    }
}
