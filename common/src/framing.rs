//! Strict HTTP/1.1 request framing: where a request head ends, whether it is acceptable, how its
//! body is delimited, and where a chunked body ends. Pure functions over byte slices; the servers
//! (`crate::guard`, the frontend's fast path) move the bytes.
//!
//! What it guarantees:
//! - **Same boundaries as hyper.** Heads are parsed by the same `httparse` (default settings,
//!   100 header slots) that hyper uses, and a head is accepted only if hyper would accept it too
//!   and give its body the same length. Every rule below only *refuses* more; it never reads a
//!   length differently, so a request can never end at one place for us and at another for hyper
//!   (request smuggling).
//! - **No ambiguous framing.** Refused with 400: both Content-Length and Transfer-Encoding; more
//!   than one Content-Length (even equal ones); a Content-Length that is not plain digits;
//!   `chunked` applied twice or not last; Transfer-Encoding in HTTP/1.0. Refused with 501: any
//!   other transfer coding (`gzip, chunked`): the body would otherwise be stored still encoded.
//! - **Bounded heads, whichever way they arrive.** A head longer than the limit is refused (431)
//!   whether it is still incomplete or arrived complete in one read.
//! - **Chunked bodies checked as they pass.** A chunk size of more than 16 hex digits or above
//!   the body limit is refused at once (400) instead of waiting for that many bytes. Framing
//!   lines must end in CRLF (as hyper demands); chunk extensions are limited; trailer fields are
//!   refused (deliberately stricter than hyper, which would decode them).
//!
//! Bare LF line endings in the head are accepted, as hyper (and RFC 9112 §2.2) accepts them:
//! both read the same bytes with the same parser, so they agree on where the head ends. Obs-fold
//! (continuation lines), NUL and other control bytes, and spaces in header names are refused by
//! that parser.

use http::{Method, StatusCode};

/// Most headers a request may carry; hyper's default, so both refuse the same heads (431).
pub const MAX_HEADERS: usize = 100;

/// Longest request target hyper accepts (longer: 414). The frontend's fast path carries longer
/// ones itself; everything else refuses them.
pub const MAX_HYPER_TARGET_BYTES: usize = (u16::MAX - 1) as usize;

/// Longest chunk-size line (size, extensions, CRLF).
const MAX_CHUNK_LINE_BYTES: usize = 1024;

/// Most bytes of chunk extensions in one body (hyper allows 16 KiB).
const MAX_CHUNK_EXTENSION_BYTES: usize = 4096;

/// Why a request was refused: the status to answer and a message saying what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

/// How a request's body is delimited.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    #[default]
    Empty,
    /// Exactly this many bytes (Content-Length).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// An acceptable request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head<'a> {
    pub method: Method,
    /// The request target as sent (still percent-encoded).
    pub target: &'a str,
    /// Whether it is HTTP/1.1 (otherwise HTTP/1.0).
    pub http11: bool,
    /// Bytes of the head, blank line included.
    pub len: usize,
    pub framing: Framing,
    /// Whether the connection stays open after this request.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// An `Upgrade` header or `Connection: upgrade`.
    pub upgrade: bool,
    /// The `If-None-Match` header's value, if the request has one.
    pub if_none_match: Option<&'a [u8]>,
}

/// What the bytes at the start of a buffer are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// The start of a head; more bytes are needed.
    Partial,
    Complete(Head<'a>),
    Refused(Refusal),
}

/// Parses the request head at the start of `buf`, refusing it if it is malformed, ambiguous or
/// longer than `max_head_bytes` (even when complete).
pub fn parse_head(buf: &[u8], max_head_bytes: usize) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_head_bytes => len,
        Ok(httparse::Status::Partial) if buf.len() <= max_head_bytes => return Parsed::Partial,
        Ok(_) => {
            return Parsed::Refused(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("request head is longer than {max_head_bytes} bytes"),
            ))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refused(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("more than {MAX_HEADERS} header fields"),
            ))
        }
        Err(e) => return Parsed::Refused(Refusal::bad(format!("malformed request head: {e}"))),
    };
    let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
        return Parsed::Refused(Refusal::bad("malformed request line"));
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Refused(Refusal::bad("invalid method"));
    };
    if let Err(refusal) = check_target(target) {
        return Parsed::Refused(refusal);
    }
    match read_fields(request.headers, version == 1) {
        Ok(fields) => Parsed::Complete(Head {
            method,
            target,
            http11: version == 1,
            len,
            framing: fields.framing,
            keep_alive: fields.keep_alive,
            expect_continue: fields.expect_continue,
            upgrade: fields.upgrade,
            if_none_match: fields.if_none_match,
        }),
        Err(refusal) => Parsed::Refused(refusal),
    }
}

/// Whether a head found incomplete in `buf[..checked]` may be complete in `buf`: whether the
/// bytes since (and the three before them) hold a blank line, or the limit is passed. Readers
/// skip parsing otherwise, so a head that trickles in costs linear time, not quadratic.
pub fn worth_parsing(buf: &[u8], checked: usize, max_head_bytes: usize) -> bool {
    let new = &buf[checked.saturating_sub(3).min(buf.len())..];
    checked == 0
        || buf.len() > max_head_bytes
        || new.windows(2).any(|w| w == b"\n\n")
        || new.windows(3).any(|w| w == b"\n\r\n")
}

/// A target hyper can carry must parse as a URI, as hyper parses it; a longer one (which only the
/// frontend's fast path carries) must be origin-form in printable ASCII, without a fragment.
fn check_target(target: &str) -> Result<(), Refusal> {
    if target.len() <= MAX_HYPER_TARGET_BYTES {
        return http::Uri::try_from(target)
            .map(drop)
            .map_err(|e| Refusal::bad(format!("invalid request target: {e}")));
    }
    let printable = target.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'#');
    if target.starts_with('/') && printable {
        Ok(())
    } else {
        Err(Refusal::bad("invalid request target: a long target must be a path and query in printable ASCII"))
    }
}

/// What the header fields of a head say about framing and the connection.
#[derive(Debug, Default)]
struct Fields<'a> {
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
    if_none_match: Option<&'a [u8]>,
}

fn read_fields<'a>(headers: &[httparse::Header<'a>], http11: bool) -> Result<Fields<'a>, Refusal> {
    let mut length = None;
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut fields = Fields::default();
    let (mut close, mut keep_alive) = (false, false);
    for header in headers {
        // httparse has trimmed the value's surrounding whitespace.
        let (name, value) = (header.name, header.value);
        if name.eq_ignore_ascii_case("content-length") {
            if length.is_some() {
                return Err(Refusal::bad("more than one Content-Length"));
            }
            length = Some(parse_length(value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings.extend(value.split(|&b| b == b',').map(<[u8]>::trim_ascii));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                fields.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            fields.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("upgrade") {
            fields.upgrade = true;
        } else if name.eq_ignore_ascii_case("if-none-match") {
            fields.if_none_match = Some(value);
        }
    }
    // hyper: a `close` anywhere wins; HTTP/1.0 stays open only if asked to.
    fields.keep_alive = !close && (http11 || keep_alive);
    let chunked = if codings.is_empty() { false } else { check_codings(&codings, http11)? };
    fields.framing = match (length, chunked) {
        (Some(_), true) => return Err(Refusal::bad("both Content-Length and Transfer-Encoding")),
        (Some(0), false) | (None, false) => Framing::Empty,
        (Some(length), false) => Framing::Length(length),
        (None, true) => Framing::Chunked,
    };
    Ok(fields)
}

/// Content-Length: digits only (no sign, no list), small enough for every parser.
fn parse_length(value: &[u8]) -> Result<u64, Refusal> {
    let digits = !value.is_empty() && value.len() <= 18 && value.iter().all(u8::is_ascii_digit);
    let length = digits.then(|| std::str::from_utf8(value).ok()?.parse().ok()).flatten();
    length.ok_or_else(|| Refusal::bad(format!("invalid Content-Length {:?}", String::from_utf8_lossy(value))))
}

/// Transfer codings: exactly `chunked` is accepted; `chunked` twice or not last is malformed
/// (400); anything else before it is a coding this server does not implement (501).
fn check_codings(codings: &[&[u8]], http11: bool) -> Result<bool, Refusal> {
    let shown = || codings.iter().map(|c| String::from_utf8_lossy(c)).collect::<Vec<_>>().join(", ");
    if !http11 {
        return Err(Refusal::bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    let is_chunked = |c: &&[u8]| c.eq_ignore_ascii_case(b"chunked");
    let is_token =
        |c: &&[u8]| !c.is_empty() && c.iter().all(|&b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !codings.iter().all(is_token) {
        return Err(Refusal::bad(format!("malformed Transfer-Encoding {:?}", shown())));
    }
    match codings.iter().filter(|c| is_chunked(c)).count() {
        1 if is_chunked(&codings[codings.len() - 1]) && codings.len() == 1 => Ok(true),
        1 if is_chunked(&codings[codings.len() - 1]) => Err(Refusal::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("transfer coding {:?} is not supported (only chunked is)", shown()),
        )),
        0 | 1 => Err(Refusal::bad(format!("Transfer-Encoding {:?} does not end in chunked", shown()))),
        _ => Err(Refusal::bad(format!("Transfer-Encoding {:?} applies chunked more than once", shown()))),
    }
}

/// Where a chunked body stands, as its bytes pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    state: ChunkState,
    extension_bytes: usize,
    max_chunk_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    SizeLine,
    Data(u64),
    DataEnd,
    LastLineEnd,
    Done,
}

/// The next piece of a chunked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// More bytes are needed to tell.
    NeedMore,
    /// This many framing bytes are valid.
    Framing(usize),
    /// Up to this many bytes of chunk data follow; report what passed with [`Chunked::passed`].
    Data(u64),
    /// The body ends after this many more framing bytes.
    End(usize),
    Refused(Refusal),
}

impl Chunked {
    /// A chunked body whose chunks may each be up to `max_chunk_bytes` long.
    pub fn new(max_chunk_bytes: u64) -> Self {
        Self { state: ChunkState::SizeLine, extension_bytes: 0, max_chunk_bytes }
    }

    /// Looks at the body bytes that come next.
    pub fn step(&mut self, next: &[u8]) -> Step {
        match self.state {
            ChunkState::SizeLine => self.size_line(next),
            ChunkState::Data(remaining) => Step::Data(remaining),
            ChunkState::DataEnd | ChunkState::LastLineEnd => {
                let last = self.state == ChunkState::LastLineEnd;
                match next {
                    [] | [b'\r'] => Step::NeedMore,
                    [b'\r', b'\n', ..] if last => {
                        self.state = ChunkState::Done;
                        Step::End(2)
                    }
                    [b'\r', b'\n', ..] => {
                        self.state = ChunkState::SizeLine;
                        Step::Framing(2)
                    }
                    _ if last => Step::Refused(Refusal::bad("trailer fields are not accepted")),
                    _ => Step::Refused(Refusal::bad("chunk data not followed by CRLF")),
                }
            }
            ChunkState::Done => Step::End(0),
        }
    }

    /// Records that `n` bytes of chunk data passed.
    pub fn passed(&mut self, n: u64) {
        if let ChunkState::Data(remaining) = self.state {
            let remaining = remaining.saturating_sub(n);
            self.state = if remaining == 0 { ChunkState::DataEnd } else { ChunkState::Data(remaining) };
        }
    }

    /// `1*HEXDIG *(SP / HTAB) [";" extension] CRLF`: a subset of what hyper reads as the same size.
    fn size_line(&mut self, next: &[u8]) -> Step {
        let Some(end) = next.iter().take(MAX_CHUNK_LINE_BYTES).position(|&b| b == b'\n') else {
            return if next.len() >= MAX_CHUNK_LINE_BYTES {
                Step::Refused(Refusal::bad("chunk size line too long"))
            } else {
                Step::NeedMore
            };
        };
        let Some(line) = next[..end].strip_suffix(b"\r") else {
            return Step::Refused(Refusal::bad("chunk size line not ended by CRLF"));
        };
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let (size, rest) = line.split_at(digits);
        let rest = &rest[rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count()..];
        let extension_ok = match rest.split_first() {
            None => true,
            Some((b';', extension)) => {
                self.extension_bytes += extension.len();
                extension.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
            }
            Some(_) => false,
        };
        if digits == 0 || !extension_ok {
            return Step::Refused(Refusal::bad(format!(
                "malformed chunk size line {:?}",
                String::from_utf8_lossy(line)
            )));
        }
        if self.extension_bytes > MAX_CHUNK_EXTENSION_BYTES {
            return Step::Refused(Refusal::bad("too many chunk extension bytes"));
        }
        let shown = String::from_utf8_lossy(size);
        let size = match u64::from_str_radix(&shown, 16) {
            Ok(size) if digits <= 16 => size,
            _ => return Step::Refused(Refusal::bad(format!("chunk size {shown} overflows"))),
        };
        if size > self.max_chunk_bytes {
            return Step::Refused(Refusal::bad(format!(
                "chunk size 0x{shown} ({size} bytes) is over the {}-byte body limit",
                self.max_chunk_bytes
            )));
        }
        self.state = if size == 0 { ChunkState::LastLineEnd } else { ChunkState::Data(size) };
        Step::Framing(end + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    fn refused(head: &[u8]) -> StatusCode {
        match parse_head(head, LIMIT) {
            Parsed::Refused(refusal) => refusal.status,
            other => panic!("{:?} was not refused: {other:?}", String::from_utf8_lossy(head)),
        }
    }

    #[test]
    fn acceptable_heads_and_their_framing() {
        let cases: &[(&[u8], Framing, bool)] = &[
            (b"GET /get/?key=a HTTP/1.1\r\nHost: x\r\n\r\n", Framing::Empty, true),
            (b"GET /get/?key=a HTTP/1.1\nHost: x\n\n", Framing::Empty, true),
            (b"\r\nGET / HTTP/1.1\r\n\r\n", Framing::Empty, true),
            (b"POST /set/ HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", Framing::Length(5), true),
            (b"POST /set/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n", Framing::Empty, true),
            (b"POST /set/ HTTP/1.1\r\ntransfer-encoding:  Chunked \r\n\r\n", Framing::Chunked, true),
            (b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n", Framing::Empty, false),
            (b"GET / HTTP/1.0\r\n\r\n", Framing::Empty, false),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", Framing::Empty, true),
        ];
        for &(bytes, framing, keep_alive) in cases {
            let Parsed::Complete(head) = parse_head(bytes, LIMIT) else {
                panic!("{:?} not accepted", String::from_utf8_lossy(bytes));
            };
            assert_eq!(
                (head.framing, head.keep_alive),
                (framing, keep_alive),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn ambiguous_or_malformed_heads_are_refused() {
        let bad = StatusCode::BAD_REQUEST;
        let cases: &[(&[u8], StatusCode)] = &[
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", bad),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", bad),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", bad),
            (b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", bad),
            (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", bad),
            (b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", bad),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", StatusCode::NOT_IMPLEMENTED),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                StatusCode::NOT_IMPLEMENTED,
            ),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", bad),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", bad),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", bad),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", bad),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", bad),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: ,chunked\r\n\r\n", bad),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", bad),
            (b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", bad),
            (b"GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n", bad),
            (b"GET /a\0b HTTP/1.1\r\n\r\n", bad),
            (b"GET / HTTP/1.1\r\nX A: b\r\n\r\n", bad),
            (b"GET / HTTP/1.1\r\nX-A : b\r\n\r\n", bad),
            (b"GET / HTTP/1.1\rX-A: b\r\n\r\n", bad),
            (b"GET / HTTP/2.0\r\n\r\n", bad),
            (b"GET /\xff HTTP/1.1\r\n\r\n", bad),
        ];
        for &(bytes, status) in cases {
            assert_eq!(refused(bytes), status, "{:?}", String::from_utf8_lossy(bytes));
        }
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(refused(many.as_bytes()), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn the_head_limit_holds_complete_or_not() {
        let limit = 64;
        let complete_over = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "p".repeat(limit));
        let partial_over = format!("GET / HTTP/1.1\r\nX-Pad: {}", "p".repeat(limit));
        let line_over = format!("GET /{} HTTP/1.1\r\n\r\n", "p".repeat(limit));
        let cases = [
            (complete_over.as_str(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            (partial_over.as_str(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            (line_over.as_str(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        ];
        for (bytes, status) in cases {
            let Parsed::Refused(refusal) = parse_head(bytes.as_bytes(), limit) else { panic!("{bytes}") };
            assert_eq!(refusal.status, status, "{bytes}");
        }
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nX-Pad: p", limit), Parsed::Partial);
    }

    #[test]
    fn heads_are_parsed_again_only_once_they_may_have_ended() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let cases = [(0, 5, true), (5, 20, false), (20, head.len(), true), (27, head.len(), true)];
        for (checked, len, worth) in cases {
            assert_eq!(worth_parsing(&head[..len], checked, LIMIT), worth, "checked {checked}, now {len}");
        }
        assert!(worth_parsing(b"GET / HTTP/1.1\n\n", 16, LIMIT), "bare LF");
        assert!(worth_parsing(b"GET /aaaa", 5, 8), "past the limit");
    }

    #[test]
    fn long_targets_are_origin_form_printable_ascii() {
        let long = |target: &str| format!("GET {target} HTTP/1.1\r\n\r\n");
        let pad = "a".repeat(MAX_HYPER_TARGET_BYTES);
        assert!(matches!(
            parse_head(long(&format!("/get/?key={pad}")).as_bytes(), LIMIT),
            Parsed::Complete(_)
        ));
        for bad in [format!("/get/?key={pad}#frag"), format!("http://x/{pad}"), format!("/{pad}\u{e9}")] {
            assert_eq!(refused(long(&bad).as_bytes()), StatusCode::BAD_REQUEST);
        }
    }

    /// Runs `body` through a chunked parser: the data, or the refusal.
    fn dechunk(body: &[u8], max_chunk: u64) -> Result<(Vec<u8>, usize), Refusal> {
        let mut chunked = Chunked::new(max_chunk);
        let (mut at, mut data) = (0, Vec::new());
        loop {
            match chunked.step(&body[at..]) {
                Step::NeedMore => return Err(Refusal::bad("incomplete")),
                Step::Framing(n) => at += n,
                Step::Data(n) => {
                    let n = (n as usize).min(body.len() - at);
                    if n == 0 {
                        return Err(Refusal::bad("incomplete"));
                    }
                    data.extend_from_slice(&body[at..at + n]);
                    chunked.passed(n as u64);
                    at += n;
                }
                Step::End(n) => return Ok((data, at + n)),
                Step::Refused(refusal) => return Err(refusal),
            }
        }
    }

    #[test]
    fn chunked_bodies_end_where_their_framing_says() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"5\r\nhello\r\n0\r\n\r\nNEXT", b"hello"),
            (b"2;name=value\r\nab\r\n1 \t; x\r\nc\r\n0\r\n\r\n", b"abc"),
            (b"0000A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"0\r\n\r\n", b""),
        ];
        for &(body, data) in cases {
            let (decoded, end) = dechunk(body, 100).unwrap_or_else(|e| panic!("{body:?}: {e}"));
            assert_eq!(decoded, data);
            assert_eq!(&body[end..], if body.ends_with(b"NEXT") { b"NEXT".as_slice() } else { b"" });
        }
    }

    #[test]
    fn chunked_framing_errors_are_refused_at_once() {
        let cases: &[&[u8]] = &[
            b"ffffffffffffffff\r\n",
            b"10000000000000000\r\n",
            b"65\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5;\0\r\nhello\r\n0\r\n\r\n",
            b"0\r\nX-Trailer: a\r\n\r\n",
            b"-1\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
        ];
        for &body in cases {
            let refusal = dechunk(body, 100).expect_err(&String::from_utf8_lossy(body));
            assert_eq!(
                refusal.status,
                StatusCode::BAD_REQUEST,
                "{:?}: {refusal}",
                String::from_utf8_lossy(body)
            );
        }
        let line = [b"1;".as_slice(), &[b'e'; MAX_CHUNK_LINE_BYTES], b"\r\n"].concat();
        assert!(dechunk(&line, 100).is_err(), "an endless chunk size line");
    }
}
