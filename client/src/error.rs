//! What a call can fail with. A missing key is not among them: [`crate::Client::get`] answers
//! `Ok(None)`.
//!
//! The variants follow what the caller can do: fix the request ([`Error::BadRequest`]), try
//! again later or elsewhere ([`Error::Unavailable`], [`Error::Timeout`]), or look at a
//! streamed transfer that broke half-way and could not be retried ([`Error::Transport`],
//! [`Error::Source`]).

use std::fmt;
use std::time::Duration;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A frontend refused the request as malformed or too large (a 4xx): the frontend's
    /// one-line message. Never retried, since every frontend would say the same.
    #[error("{0}")]
    BadRequest(String),
    /// Every attempt failed (connection refused or broken, no answer in time, or a 5xx such as
    /// 503 when too few replicas answered): the last failure, and the frontends tried.
    #[error("{message} (tried {})", Tried(.tried))]
    Unavailable { message: String, tried: Vec<String> },
    /// The call's deadline passed before any attempt succeeded; `last` is the last failure seen.
    #[error("no success within {}: {last} (tried {})", Seconds(*.deadline), Tried(.tried))]
    Timeout { deadline: Duration, last: String, tried: Vec<String> },
    /// A streamed transfer broke after its first bytes went out (a set) or came in (a get), so
    /// it could not be retried: the frontend and what happened. A streamed set may or may not
    /// have been stored.
    #[error("{frontend}: {message}")]
    Transport { frontend: String, message: String },
    /// The value's own source (the stream or reader given to a streamed set) failed, or gave
    /// a different number of bytes than its declared length.
    #[error("cannot read the value: {0}")]
    Source(std::io::Error),
    /// A frontend answered something that is not the Velour Fog API (a redirect, or a 404
    /// that is not "key not found"): the frontend, the status and its message.
    #[error("unexpected answer from {frontend}: {status} {message}")]
    Unexpected { frontend: String, status: u16, message: String },
}

impl Error {
    /// Whether trying the same call again later might succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. } | Error::Transport { .. })
    }
}

/// The frontends tried, for messages.
struct Tried<'a>(&'a [String]);

impl fmt::Display for Tried<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no frontend");
        }
        f.write_str(&self.0.join(", "))
    }
}

struct Seconds(Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} s", self.0.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_name_the_frontends() {
        let tried = vec!["http://a:1".to_owned(), "http://b:2".to_owned()];
        let cases = [
            (
                Error::BadRequest("key is 70000 bytes; the limit is 65536".into()),
                "key is 70000 bytes; the limit is 65536",
                false,
            ),
            (
                Error::Unavailable { message: "503 write not acknowledged".into(), tried: tried.clone() },
                "503 write not acknowledged (tried http://a:1, http://b:2)",
                true,
            ),
            (
                Error::Timeout {
                    deadline: Duration::from_millis(1500),
                    last: "no answer".into(),
                    tried: vec![],
                },
                "no success within 1.5 s: no answer (tried no frontend)",
                true,
            ),
            (
                Error::Transport { frontend: "http://a:1".into(), message: "connection reset".into() },
                "http://a:1: connection reset",
                true,
            ),
            (
                Error::Source(std::io::Error::other("disk on fire")),
                "cannot read the value: disk on fire",
                false,
            ),
            (
                Error::Unexpected {
                    frontend: "http://a:1".into(),
                    status: 404,
                    message: "no such endpoint".into(),
                },
                "unexpected answer from http://a:1: 404 no such endpoint",
                false,
            ),
        ];
        for (error, text, transient) in cases {
            assert_eq!(error.to_string(), text);
            assert_eq!(error.is_transient(), transient, "{text}");
        }
    }
}
