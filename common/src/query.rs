//! Query strings, decoded strictly and byte-exactly.
//!
//! Keys and values travel in query strings percent-encoded, and may be any byte string: not
//! necessarily UTF-8, and free to contain `&`, `=`, `?` or `+` once escaped. Decoding follows
//! `application/x-www-form-urlencoded` (`+` is a space, `%XX` is a byte) but, unlike most
//! decoders, it never guesses: a `%` not followed by two hex digits is an error, so a client bug
//! surfaces as a 400 instead of a silently different key.

use std::borrow::Cow;

/// What is wrong with a query string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error(
        "malformed percent-escape {escape:?} in parameter `{name}` (expected % followed by two hex digits)"
    )]
    BadEscape { name: String, escape: String },
    #[error("parameter `{0}` is given more than once")]
    Duplicate(String),
    #[error("parameter `{0}` must be a number")]
    NotANumber(String),
}

/// One decoded `name=value` pair; borrowed from the query string when nothing needed decoding.
type Param<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// The parameters of one query string, in order, decoded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Query<'a> {
    params: Vec<Param<'a>>,
}

impl<'a> Query<'a> {
    /// Parses `raw` (the part of the URI after `?`, or `""`). A parameter without `=` has an
    /// empty value; empty segments (`a=1&&b=2`) are ignored. Names must be unique.
    pub fn parse(raw: &'a str) -> Result<Self, QueryError> {
        let mut params: Vec<Param<'a>> = Vec::new();
        for segment in raw.split('&').filter(|s| !s.is_empty()) {
            let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
            let name_decoded = decode(name.as_bytes())
                .map_err(|escape| QueryError::BadEscape { name: name.to_owned(), escape })?;
            let value = decode(value.as_bytes()).map_err(|escape| QueryError::BadEscape {
                name: String::from_utf8_lossy(&name_decoded).into_owned(),
                escape,
            })?;
            if params.iter().any(|(n, _)| *n == name_decoded) {
                return Err(QueryError::Duplicate(String::from_utf8_lossy(&name_decoded).into_owned()));
            }
            params.push((name_decoded, value));
        }
        Ok(Self { params })
    }

    /// The decoded value of parameter `name`, if present.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.params.iter().find(|(n, _)| n.as_ref() == name.as_bytes()).map(|(_, v)| v.as_ref())
    }

    /// Parameter `name` parsed as a number (or anything `FromStr`), if present.
    pub fn parsed<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, QueryError> {
        self.get(name)
            .map(|raw| {
                std::str::from_utf8(raw)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| QueryError::NotANumber(name.to_owned()))
            })
            .transpose()
    }

    /// Names of the parameters present, for error messages about unknown ones.
    pub fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.params.iter().map(|(n, _)| String::from_utf8_lossy(n).into_owned())
    }
}

/// Decodes `+` and `%XX` in a query string; borrows when there is nothing to decode. On a
/// malformed escape, returns the offending text.
pub fn decode(input: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    decode_with(input, true)
}

/// Decodes `%XX` in a URL path (where `+` is itself), as [`decode`] does otherwise.
pub fn decode_path(input: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    decode_with(input, false)
}

fn decode_with(input: &[u8], plus_is_space: bool) -> Result<Cow<'_, [u8]>, String> {
    if !input.iter().any(|&b| b == b'%' || (plus_is_space && b == b'+')) {
        return Ok(Cow::Borrowed(input));
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = input.get(i + 1).and_then(|&c| hex_value(c));
                let lo = input.get(i + 2).and_then(|&c| hex_value(c));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => {
                        let end = (i + 3).min(input.len());
                        return Err(String::from_utf8_lossy(&input[i..end]).into_owned());
                    }
                }
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(Cow::Owned(out))
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Every byte but RFC 3986's unreserved characters.
const ESCAPED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Appends `bytes` to `out` percent-encoded (by the `percent-encoding` crate): every byte except
/// RFC 3986 unreserved characters becomes `%XX`, so the result is safe anywhere in a query
/// string. (Decoding stays hand-written above: the crate's decoder passes malformed escapes
/// through and keeps `+`, where a query must refuse the one and read the other as a space.)
pub fn encode_into(bytes: &[u8], out: &mut String) {
    use std::fmt::Write;
    out.reserve(bytes.len());
    write!(out, "{}", percent_encoding::percent_encode(bytes, ESCAPED)).expect("writing to a String");
}

/// `bytes` percent-encoded, see [`encode_into`].
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    encode_into(bytes, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_plus() {
        assert_eq!(decode(b"plain").unwrap().as_ref(), b"plain");
        assert_eq!(decode(b"a+b").unwrap().as_ref(), b"a b");
        assert_eq!(decode(b"%26%3D%3F%2B").unwrap().as_ref(), b"&=?+");
        assert_eq!(decode(b"%00%ff%FE").unwrap().as_ref(), &[0u8, 0xff, 0xfe]);
        assert_eq!(decode(b"%C3%A9t%C3%A9").unwrap().as_ref(), "été".as_bytes());
        assert_eq!(decode(b"").unwrap().as_ref(), b"");
    }

    #[test]
    fn paths_keep_plus_and_decode_escapes() {
        assert_eq!(decode_path(b"a+b%2Fc%20d").unwrap().as_ref(), b"a+b/c d");
        assert!(matches!(decode_path(b"a+b/c").unwrap(), Cow::Borrowed(_)));
        assert_eq!(decode_path(b"%zz").unwrap_err(), "%zz");
    }

    #[test]
    fn rejects_malformed_escapes() {
        assert_eq!(decode(b"a%zz").unwrap_err(), "%zz");
        assert_eq!(decode(b"a%4").unwrap_err(), "%4");
        assert_eq!(decode(b"%").unwrap_err(), "%");
        assert_eq!(decode(b"%g0").unwrap_err(), "%g0");
    }

    #[test]
    fn encode_then_decode_is_identity_for_every_byte() {
        let all: Vec<u8> = (0..=255u8).chain([b'&', b'=', b'?', b'+', b' ']).collect();
        let encoded = encode(&all);
        assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
        assert_eq!(decode(encoded.as_bytes()).unwrap().as_ref(), all.as_slice());
        assert_eq!(encode(b"a-b.c_d~e f/%\xff"), "a-b.c_d~e%20f%2F%25%FF", "unreserved kept, hex upper case");
    }

    #[test]
    fn parses_parameters() {
        let q = Query::parse("key=a%26b&value=x+y&flag").unwrap();
        assert_eq!(q.get("key"), Some(&b"a&b"[..]));
        assert_eq!(q.get("value"), Some(&b"x y"[..]));
        assert_eq!(q.get("flag"), Some(&b""[..]));
        assert_eq!(q.get("missing"), None);
        assert_eq!(q.names().collect::<Vec<_>>(), ["key", "value", "flag"]);
        assert_eq!(Query::parse("").unwrap(), Query::default());
        assert_eq!(Query::parse("&&key=1&").unwrap().get("key"), Some(&b"1"[..]));
        assert_eq!(Query::parse("key=a=b").unwrap().get("key"), Some(&b"a=b"[..]));
    }

    #[test]
    fn parses_numbers() {
        let q = Query::parse("n=42&bad=4x2").unwrap();
        assert_eq!(q.parsed::<u64>("n"), Ok(Some(42)));
        assert_eq!(q.parsed::<u64>("missing"), Ok(None));
        assert_eq!(q.parsed::<u64>("bad"), Err(QueryError::NotANumber("bad".into())));
    }

    #[test]
    fn rejects_duplicates_and_bad_escapes() {
        assert_eq!(Query::parse("key=a&key=b"), Err(QueryError::Duplicate("key".into())));
        assert_eq!(
            Query::parse("key=%zz"),
            Err(QueryError::BadEscape { name: "key".into(), escape: "%zz".into() })
        );
    }
}
