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
    /// 503 when too few replicas answered): the last failure (which names its frontend), and
    /// every frontend tried.
    #[error("{message}{}", Also(.message, .tried))]
    Unavailable { message: String, tried: Vec<String> },
    /// The call's deadline passed before any attempt succeeded; `last` is the last failure seen.
    #[error("no success within {}: {last}{}", Seconds(*.deadline), Also(.last, .tried))]
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

/// The frontends tried besides the one the message (`frontend: what happened`) names.
struct Also<'a>(&'a str, &'a [String]);

impl fmt::Display for Also<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Also(message, tried) = *self;
        let others: Vec<&str> =
            tried.iter().map(String::as_str).filter(|t| !message.starts_with(&format!("{t}: "))).collect();
        if others.is_empty() {
            return Ok(());
        }
        write!(f, " (also tried {})", others.join(", "))
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
                Error::Unavailable {
                    message: "http://b:2: 503 write not acknowledged".into(),
                    tried: tried.clone(),
                },
                "http://b:2: 503 write not acknowledged (also tried http://a:1)",
                true,
            ),
            (
                Error::Unavailable {
                    message: "http://a:1: cannot connect".into(),
                    tried: tried[..1].to_vec(),
                },
                "http://a:1: cannot connect",
                true,
            ),
            (
                Error::Timeout {
                    deadline: Duration::from_millis(1500),
                    last: "http://a:1: no answer".into(),
                    tried: tried.clone(),
                },
                "no success within 1.5 s: http://a:1: no answer (also tried http://b:2)",
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
