//! Request and response bodies.
//!
//! A request body is empty, a buffer (cheap to send again: [`Bytes`] clones share memory), or
//! a caller's stream. The stream sits in a [`SharedStream`] that every attempt's body reads
//! from, so an attempt that failed before taking a single chunk (connection refused, say)
//! leaves it whole for the next frontend, and the client can tell whether any byte went out.
//! Once one chunk is taken the value cannot be sent again: the client does not keep a copy.
//!
//! A value read back as a stream ([`ValueStream`]) gives each chunk a deadline of its own, so
//! a frontend that stops sending half-way is noticed.

use crate::Error;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The most memory reserved up front for a value read whole, whatever length it declares.
const MAX_PREALLOCATION: u64 = 256 << 20;

/// A value's chunks, as a caller gives them.
pub type ChunkStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A caller's value stream, shared by the attempts of one call.
pub(crate) struct SharedStream {
    state: Mutex<StreamState>,
    /// The length the caller declared, sent as `content-length` (else the body is chunked).
    length: Option<u64>,
}

struct StreamState {
    chunks: ChunkStream,
    /// Bytes taken from the stream so far (handed to the connection).
    taken: u64,
    /// What went wrong with the source itself, kept to report it as such.
    failure: Option<io::Error>,
}

impl SharedStream {
    pub(crate) fn new(length: Option<u64>, chunks: ChunkStream) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new(StreamState { chunks, taken: 0, failure: None }), length })
    }

    /// Bytes taken so far: while 0, nothing was sent and the stream can go to another frontend.
    pub(crate) fn taken(&self) -> u64 {
        self.lock().taken
    }

    pub(crate) fn length(&self) -> Option<u64> {
        self.length
    }

    /// The source's own failure, if it failed (taken out: reported once).
    pub(crate) fn take_failure(&self) -> Option<io::Error> {
        self.lock().failure.take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn poll_chunk(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        let mut state = self.lock();
        loop {
            let fail = |state: &mut StreamState, e: io::Error| {
                let message = e.to_string();
                state.failure = Some(e);
                Poll::Ready(Some(Err(BoxError::from(message))))
            };
            match std::task::ready!(state.chunks.poll_next_unpin(cx)) {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => {
                    let taken = state.taken + chunk.len() as u64;
                    if self.length.is_some_and(|length| taken > length) {
                        let length = self.length.unwrap_or_default();
                        let e = io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("the value is longer than its declared {length} bytes"),
                        );
                        return fail(&mut state, e);
                    }
                    state.taken = taken;
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Some(Err(e)) => return fail(&mut state, e),
                None => match self.length {
                    Some(length) if state.taken < length => {
                        let e = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the value ended after {} of its declared {length} bytes", state.taken),
                        );
                        return fail(&mut state, e);
                    }
                    _ => return Poll::Ready(None),
                },
            }
        }
    }
}

/// The body of one attempt.
pub(crate) enum RequestBody {
    Empty,
    Full(Option<Bytes>),
    Stream(Arc<SharedStream>),
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Stream(shared) => {
                shared.poll_chunk(cx).map(|chunk| chunk.map(|c| c.map(Frame::data)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty | RequestBody::Full(None) => true,
            RequestBody::Full(Some(_)) => false,
            RequestBody::Stream(shared) => shared.length.is_some_and(|length| shared.taken() >= length),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty | RequestBody::Full(None) => SizeHint::with_exact(0),
            RequestBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            RequestBody::Stream(shared) => match shared.length {
                Some(length) => SizeHint::with_exact(length.saturating_sub(shared.taken())),
                None => SizeHint::default(),
            },
        }
    }
}

/// A value being read from a frontend, chunk by chunk, each within the client's attempt
/// timeout. A failure half-way is an error ([`Error::Transport`]), never a short value.
#[derive(Debug)]
pub struct ValueStream {
    body: Incoming,
    length: Option<u64>,
    frontend: String,
    idle: Duration,
}

impl ValueStream {
    pub(crate) fn new(body: Incoming, length: Option<u64>, frontend: String, idle: Duration) -> Self {
        Self { body, length, frontend, idle }
    }

    /// The value's length, if the frontend said it (it does for every stored value).
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// The frontend that is sending it.
    pub fn frontend(&self) -> &str {
        &self.frontend
    }

    /// The next chunk, or `None` at the end of the value.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            let frame = match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => {
                    return Err(self.broken(format!("no data for {:?} in the middle of the value", self.idle)))
                }
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(self.broken(common::http::error_chain(&e))),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                if !data.is_empty() {
                    return Ok(Some(data));
                }
            }
        }
    }

    /// The whole value in one buffer (a value that arrives in one chunk is not copied).
    pub async fn collect(mut self) -> Result<Bytes, Error> {
        let mut single: Option<Bytes> = None;
        let mut joined: Option<bytes::BytesMut> = None;
        while let Some(chunk) = self.chunk().await? {
            match (single.take(), &mut joined) {
                (None, None) => single = Some(chunk),
                (Some(first), None) => {
                    // Trust the declared length for the allocation only up to a bound.
                    let expected = self.length.unwrap_or(0).min(MAX_PREALLOCATION) as usize;
                    let mut buf = bytes::BytesMut::with_capacity(expected.max(first.len() + chunk.len()));
                    buf.extend_from_slice(&first);
                    buf.extend_from_slice(&chunk);
                    joined = Some(buf);
                }
                (_, Some(buf)) => buf.extend_from_slice(&chunk),
            }
        }
        Ok(match (single, joined) {
            (_, Some(buf)) => buf.freeze(),
            (Some(chunk), None) => chunk,
            (None, None) => Bytes::new(),
        })
    }

    /// The chunks as a [`Stream`].
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, Error>> + Send {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut stream = state?;
            match stream.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(stream))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    fn broken(&self, message: String) -> Error {
        Error::Transport { frontend: self.frontend.clone(), message }
    }
}
