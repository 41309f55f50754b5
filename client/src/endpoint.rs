//! Frontend addresses as people write them: `host:port`, `http://host:port`, or an `http://`
//! base URL with a path prefix (a frontend behind a proxy at `http://lb/velourfog/`).
//!
//! Parsing is strict so that a typo is an error at start, not a connection refused later:
//! only plain `http://` (the frontends speak HTTP/1.1 without TLS), a port is required unless
//! the scheme is given (then 80), and no query or fragment.

use std::fmt;
use std::str::FromStr;

/// One frontend: where to connect and what to put before `/get/`, `/set/` and `/delete/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    authority: String,
    prefix: String,
}

/// A frontend address that does not parse; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a frontend address: {reason} (expected HOST:PORT or http://HOST:PORT)")]
pub struct BadEndpoint {
    pub input: String,
    pub reason: String,
}

impl Endpoint {
    /// `host:port`, as the TCP connection and the `Host` header use it.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The path before each endpoint's own (`""`, or such as `/velourfog`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The URL of `path_and_query` (which starts with `/`) on this frontend.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}{path_and_query}", self.authority, self.prefix)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

impl FromStr for Endpoint {
    type Err = BadEndpoint;

    fn from_str(input: &str) -> Result<Self, BadEndpoint> {
        let bad = |reason: &str| BadEndpoint { input: input.to_owned(), reason: reason.to_owned() };
        let trimmed = input.trim();
        let (rest, has_scheme) = match trimmed.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (rest, true),
            Some((scheme, _)) => return Err(bad(&format!("`{scheme}://` is not supported, only http://"))),
            None => (trimmed, false),
        };
        if rest.contains(['?', '#', ' ', '@']) {
            return Err(bad("it may not have a query, fragment, user or spaces"));
        }
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if !has_scheme && !path.is_empty() {
            return Err(bad("a path prefix needs the http:// scheme"));
        }
        let authority = match common::addr::split(authority) {
            Ok(_) => authority.to_owned(),
            // `http://host` means port 80; a bare `host` is more likely a forgotten port.
            Err(_) if has_scheme && !authority.is_empty() && !authority.ends_with(':') => {
                if authority.rsplit_once(':').is_some_and(|(_, port)| !port.contains(']')) {
                    return Err(bad("the port is not a number from 0 to 65535"));
                }
                format!("{authority}:80")
            }
            Err(_) => return Err(bad("no HOST:PORT")),
        };
        let prefix = path.trim_end_matches('/').to_owned();
        Ok(Self { authority, prefix })
    }
}

/// Parses a comma-separated list of frontends (`a:8000,http://b:8000`); spaces around the
/// commas are ignored. The list may not be empty.
pub fn parse_list(list: &str) -> Result<Vec<Endpoint>, BadEndpoint> {
    let endpoints =
        list.split(',').filter(|s| !s.trim().is_empty()).map(str::parse).collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Err(BadEndpoint { input: list.to_owned(), reason: "the list is empty".to_owned() });
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_people_write() {
        let cases = [
            ("127.0.0.1:8000", "127.0.0.1:8000", ""),
            ("http://127.0.0.1:8000", "127.0.0.1:8000", ""),
            ("http://127.0.0.1:8000/", "127.0.0.1:8000", ""),
            ("HTTP://fe.example:8001", "fe.example:8001", ""),
            ("  fe:8000 ", "fe:8000", ""),
            ("[::1]:8000", "[::1]:8000", ""),
            ("http://[::1]:8000", "[::1]:8000", ""),
            ("http://lb", "lb:80", ""),
            ("http://[::1]", "[::1]:80", ""),
            ("http://lb/velourfog/", "lb:80", "/velourfog"),
            ("http://lb:9000/a/b", "lb:9000", "/a/b"),
        ];
        for (input, authority, prefix) in cases {
            let endpoint: Endpoint = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((endpoint.authority(), endpoint.prefix()), (authority, prefix), "{input}");
        }
        let endpoint: Endpoint = "http://lb:9000/vf/".parse().unwrap();
        assert_eq!(endpoint.url("/get/?key=a"), "http://lb:9000/vf/get/?key=a");
        assert_eq!(endpoint.to_string(), "http://lb:9000/vf");
    }

    #[test]
    fn refuses_what_cannot_work_with_a_reason() {
        let cases = [
            ("fe", "no HOST:PORT"),
            ("fe:", "no HOST:PORT"),
            (":8000", "no HOST:PORT"),
            ("fe:99999", "no HOST:PORT"),
            ("http://fe:99999", "the port is not a number"),
            ("http://fe:http", "the port is not a number"),
            ("http://", "no HOST:PORT"),
            ("https://fe:8443", "`https://` is not supported"),
            ("fe:8000/prefix", "needs the http:// scheme"),
            ("http://fe:8000/?x=1", "may not have a query"),
            ("http://user@fe:8000", "may not have a query, fragment, user"),
            ("", "no HOST:PORT"),
        ];
        for (input, reason) in cases {
            let error = input.parse::<Endpoint>().expect_err(input).to_string();
            assert!(error.contains(reason), "{input}: {error}");
        }
    }

    #[test]
    fn parses_lists() {
        let list = parse_list("a:1, http://b:2/,c:3,").unwrap();
        assert_eq!(
            list.iter().map(Endpoint::to_string).collect::<Vec<_>>(),
            ["http://a:1", "http://b:2", "http://c:3"]
        );
        assert!(parse_list("").unwrap_err().to_string().contains("the list is empty"));
        assert!(parse_list(" , ").unwrap_err().to_string().contains("the list is empty"));
        assert!(parse_list("a:1,b").unwrap_err().to_string().contains("`b`"));
    }
}
