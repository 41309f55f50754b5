//! One call: attempts on frontends in turn until one answers, the retries run out or the
//! deadline passes (the rules are in the crate docs and [`crate::retry`]).

use crate::body::{RequestBody, SharedStream};
use crate::{Client, Error};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

/// What a call sends.
pub(crate) enum Payload {
    Empty,
    Bytes(Bytes),
    Stream(Arc<SharedStream>),
}

impl Payload {
    fn body(&self) -> RequestBody {
        match self {
            Payload::Empty => RequestBody::Empty,
            Payload::Bytes(bytes) => RequestBody::Full(Some(bytes.clone())),
            Payload::Stream(shared) => RequestBody::Stream(shared.clone()),
        }
    }

    /// Bytes to send, as far as known in advance.
    fn size(&self) -> u64 {
        match self {
            Payload::Empty => 0,
            Payload::Bytes(bytes) => bytes.len() as u64,
            Payload::Stream(shared) => shared.length().unwrap_or(0),
        }
    }

    /// Whether another attempt can send it whole.
    fn resendable(&self) -> bool {
        match self {
            Payload::Stream(shared) => shared.taken() == 0,
            _ => true,
        }
    }
}

/// A frontend's answer that the operation interprets: a 2xx, or a 404 (which may mean a
/// missing key, or a server that is not a frontend).
pub(crate) struct Reply {
    pub frontend: String,
    pub status: StatusCode,
    /// The declared `content-length`.
    pub length: Option<u64>,
    pub body: Incoming,
    /// When reading the whole body must be done by.
    pub body_deadline: Instant,
}

impl Reply {
    /// The body in one buffer, within the reply's deadline; a body that breaks or is late is
    /// a failure worth retrying.
    pub async fn collect(self) -> Result<Bytes, Failure> {
        match tokio::time::timeout_at(self.body_deadline, self.body.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) => {
                Err(Failure::transport(format!("the answer broke off: {}", common::http::error_chain(&e))))
            }
            Err(_) => Err(Failure::transport("the answer did not arrive in time".to_owned())),
        }
    }

    /// A 404 that is not a missing key: the server is not a Velour Fog frontend (or the path
    /// prefix is wrong).
    pub async fn not_a_frontend(self) -> Failure {
        let frontend = self.frontend.clone();
        let message = message_of(self.body, self.body_deadline).await;
        Failure::Stop(Error::Unexpected { frontend, status: 404, message })
    }
}

/// How an attempt failed.
pub(crate) enum Failure {
    /// Worth another attempt (elsewhere): why, and whether the frontend answered (a 5xx) or
    /// the transport failed.
    Retry { message: String, answered: bool },
    /// The call's answer.
    Stop(Error),
}

impl Failure {
    pub fn transport(message: String) -> Self {
        Failure::Retry { message, answered: false }
    }
}

/// What the call saw of its failed attempts.
struct Attempts {
    tried: Vec<String>,
    last: String,
    last_frontend: String,
    answered: bool,
}

impl Client {
    /// Runs one call: `method` on `path_and_query` with `payload`, on frontends in turn, until
    /// `finish` makes something of an answer or fails for good.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        method: Method,
        path_and_query: &str,
        payload: Payload,
        finish: F,
    ) -> Result<T, Error>
    where
        F: Fn(Reply) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let shared = &self.shared;
        shared.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.attempts(method, path_and_query, payload, finish).await;
        if result.is_err() {
            shared.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn attempts<T, F, Fut>(
        &self,
        method: Method,
        path_and_query: &str,
        payload: Payload,
        finish: F,
    ) -> Result<T, Error>
    where
        F: Fn(Reply) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let (shared, policy) = (&self.shared, self.shared.policy);
        let allowance = policy.allowance(payload.size());
        let total = policy.deadline.saturating_add(allowance);
        let deadline = Instant::now() + total;
        let order = self.order();
        let mut seen = Attempts {
            tried: Vec::new(),
            last: String::new(),
            last_frontend: String::new(),
            answered: false,
        };
        for attempt in 0..=policy.retries {
            if attempt > 0 {
                if !payload.resendable() {
                    return Err(unsendable(seen));
                }
                let wait = policy.wait_before(attempt, order.len());
                if Instant::now() + wait >= deadline {
                    break;
                }
                tokio::time::sleep(wait).await;
                shared.retries.fetch_add(1, Ordering::Relaxed);
            }
            let i = order[attempt as usize % order.len()];
            let name = &shared.names[i];
            if !seen.tried.contains(name) {
                seen.tried.push(name.clone());
            }
            let attempt_deadline =
                deadline.min(Instant::now() + policy.attempt_timeout.saturating_add(allowance));
            let answer =
                self.attempt(i, method.clone(), path_and_query, &payload, attempt_deadline, &finish).await;
            if let Payload::Stream(stream) = &payload {
                if let Some(e) = stream.take_failure() {
                    return Err(Error::Source(e));
                }
            }
            match answer {
                Ok(value) => {
                    self.trust(i);
                    return Ok(value);
                }
                Err(Failure::Stop(e)) => return Err(e),
                Err(Failure::Retry { message, answered }) => {
                    log::debug!(
                        "attempt {} of {method} {} on {name} failed: {message}",
                        attempt + 1,
                        short(path_and_query)
                    );
                    self.suspect(i);
                    (seen.last, seen.last_frontend, seen.answered) =
                        (format!("{name}: {message}"), name.clone(), answered);
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout { deadline: total, last: seen.last, tried: seen.tried });
        }
        Err(Error::Unavailable { message: seen.last, tried: seen.tried })
    }

    /// One attempt on frontend `i`, all of it (answer and, for `finish`, body) by `deadline`.
    async fn attempt<T, F, Fut>(
        &self,
        i: usize,
        method: Method,
        path_and_query: &str,
        payload: &Payload,
        deadline: Instant,
        finish: &F,
    ) -> Result<T, Failure>
    where
        F: Fn(Reply) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let frontend = self.shared.names[i].clone();
        let mut request = Request::builder().method(method).uri(self.shared.frontends[i].url(path_and_query));
        if !matches!(payload, Payload::Empty) {
            request = request.header(header::CONTENT_TYPE, "application/octet-stream");
        }
        // The one way to fail here is a URI the `http` crate refuses: over 65,534 bytes.
        let request = request.body(payload.body()).map_err(|e| {
            Failure::Stop(Error::BadRequest(format!(
                "cannot send this request: {e} (the escaped key is too long)"
            )))
        })?;
        let started = Instant::now();
        let response = match tokio::time::timeout_at(deadline, self.shared.pool.request(request)).await {
            Err(_) => {
                return Err(Failure::transport(format!(
                    "no answer within {:.1} s",
                    seconds(started, deadline)
                )))
            }
            Ok(Err(e)) if e.is_connect() => {
                return Err(Failure::transport(format!("cannot connect: {}", causes(&e))))
            }
            Ok(Err(e)) => return Err(Failure::transport(format!("connection failed: {}", causes(&e)))),
            Ok(Ok(response)) => response,
        };
        let (parts, body) = response.into_parts();
        let status = parts.status;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            let length =
                parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
            // A large value gets its allowance on top of the attempt's deadline.
            let body_deadline = deadline + self.shared.policy.allowance(length.unwrap_or(0));
            return finish(Reply { frontend, status, length, body, body_deadline }).await;
        }
        let message = message_of(body, deadline).await;
        Err(match status.as_u16() {
            500..=599 => Failure::Retry { message: format!("{} {message}", status.as_u16()), answered: true },
            400..=499 if message.is_empty() => Failure::Stop(Error::BadRequest(status.to_string())),
            400..=499 => Failure::Stop(Error::BadRequest(message)),
            code => Failure::Stop(Error::Unexpected { frontend, status: code, message }),
        })
    }

    /// The order in which this call tries the frontends.
    fn order(&self) -> Vec<usize> {
        let shared = &self.shared;
        let start = shared.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        crate::retry::order(shared.frontends.len(), start, |i| {
            shared.suspect_until[i].load(Ordering::Relaxed) > now
        })
    }

    fn suspect(&self, i: usize) {
        let until = self.now_ms() + self.shared.policy.suspicion.as_millis() as u64;
        self.shared.suspect_until[i].store(until, Ordering::Relaxed);
    }

    fn trust(&self, i: usize) {
        let suspect = &self.shared.suspect_until[i];
        if suspect.load(Ordering::Relaxed) != 0 {
            suspect.store(0, Ordering::Relaxed);
        }
    }

    /// Milliseconds since the client was built (never 0 once a call ran, so 0 means trusted).
    fn now_ms(&self) -> u64 {
        self.shared.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// The error of a streamed set that failed after its first chunk went out.
fn unsendable(seen: Attempts) -> Error {
    let note = "not retried: part of the streamed value was already sent";
    if seen.answered {
        Error::Unavailable { message: format!("{} ({note})", seen.last), tried: seen.tried }
    } else {
        let message = seen.last.strip_prefix(&format!("{}: ", seen.last_frontend)).unwrap_or(&seen.last);
        Error::Transport { frontend: seen.last_frontend.clone(), message: format!("{message} ({note})") }
    }
}

/// The start of an error answer's body, as one trimmed line.
async fn message_of(mut body: Incoming, deadline: Instant) -> String {
    let mut text = Vec::new();
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                text.extend_from_slice(&data[..data.len().min(crate::MAX_MESSAGE_BYTES - text.len())]);
                if text.len() >= crate::MAX_MESSAGE_BYTES {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, read).await;
    String::from_utf8_lossy(&text).trim().replace('\n', " ")
}

/// What went wrong below hyper's own wrapper ("client error (Connect)"), on one line.
fn causes(e: &hyper_util::client::legacy::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => common::http::error_chain(cause),
        None => e.to_string(),
    }
}

fn seconds(started: Instant, deadline: Instant) -> f64 {
    deadline.saturating_duration_since(started).as_secs_f64()
}

/// A path for a log line: keys can be 64 KiB.
fn short(path_and_query: &str) -> &str {
    let end = path_and_query.char_indices().nth(80).map_or(path_and_query.len(), |(i, _)| i);
    &path_and_query[..end]
}
