//! What stands between a client's connection and hyper: request framing checked before hyper
//! sees it, and bounds on how slowly a client may send.
//!
//! [`Guarded`] wraps a connection. It hands hyper a request head only once the whole head has
//! arrived and passed [`framing::parse_head`], and a chunked body's framing only once each
//! chunk-size line has passed [`framing::Chunked`]. So hyper never reads an ambiguous or oversized
//! head, and the guard always knows where each request ends (its rules agree with hyper's, see
//! `framing`). A refused head is answered by the guard itself once hyper has finished the
//! responses before it (hyper sees the connection end there); a body that breaks its framing or
//! its pace fails the request in progress (its handler sees a body error and answers 4xx), and the
//! connection closes.
//!
//! The time rules ([`ClientTimeouts`]) count only time spent waiting for the client while it owes
//! bytes, never time the server spends on its own work:
//! - a head must be complete within `header` of its first byte (else 408 and close);
//! - a connection with no request open and no byte of the next one is closed after `idle`;
//! - a body may stall at most `body_stall`, and must keep an average pace: once the server has
//!   waited T for a body, at least `(T − body_stall) × body_min_rate` bytes must have arrived.
//!   A 128 MiB upload at 8 KB/s (a 64 kbit/s link) passes; a byte every 10 s is cut after ~15 s;
//! - a response the client stops reading may stall at most `body_stall`.
//!
//! The guard keeps no buffer while a connection is idle.

use crate::framing::{self, Chunked, Parsed, Refusal, Step};
use bytes::{Buf, BytesMut};
use http::StatusCode;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How slowly a client may send, as every server's command line takes it.
#[derive(clap::Args, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// A request head must arrive completely within this many milliseconds of its first byte
    /// (else 408 and the connection closes).
    #[arg(long = "client-header-timeout-ms", value_name = "MS", env = "VF_CLIENT_HEADER_TIMEOUT_MS",
          default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_ms: u64,
    /// A keep-alive connection with no request in progress is closed after this many
    /// milliseconds.
    #[arg(long = "client-idle-timeout-ms", value_name = "MS", env = "VF_CLIENT_IDLE_TIMEOUT_MS",
          default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_ms: u64,
    /// A request body (or the reading of a response) may stall at most this many milliseconds;
    /// also the grace period before the minimum body rate applies.
    #[arg(long = "client-body-stall-ms", value_name = "MS", env = "VF_CLIENT_BODY_STALL_MS",
          default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_stall_ms: u64,
    /// After the grace period a request body must average at least this many bytes per second
    /// of waiting (large uploads over slow links pass; a trickle is cut).
    #[arg(long = "client-body-min-bytes-per-s", value_name = "BYTES", env = "VF_CLIENT_BODY_MIN_BYTES_PER_S",
          default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_min_bytes_per_s: u64,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        Self { header_ms: 15_000, idle_ms: 60_000, body_stall_ms: 15_000, body_min_bytes_per_s: 1024 }
    }
}

impl ClientTimeouts {
    pub fn header(&self) -> Duration {
        Duration::from_millis(self.header_ms)
    }

    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }

    pub fn body_stall(&self) -> Duration {
        Duration::from_millis(self.body_stall_ms)
    }

    /// How long in total the server may wait for a body of which `received` bytes arrived.
    pub fn body_allowance(&self, received: u64) -> Duration {
        self.body_stall() + Duration::from_secs_f64(received as f64 / self.body_min_bytes_per_s as f64)
    }
}

/// Everything a server enforces on its clients' connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub timeouts: ClientTimeouts,
    /// Longest request head, complete or not.
    pub max_head_bytes: usize,
    /// Longest chunk of a chunked body (a larger chunk size is refused at once).
    pub max_chunk_bytes: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            timeouts: ClientTimeouts::default(),
            max_head_bytes: crate::http::MAX_HEAD_BYTES,
            max_chunk_bytes: 1 << 30,
        }
    }
}

/// Time spent waiting for a client, over any number of waits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WaitClock {
    waited: Duration,
    since: Option<Instant>,
}

impl WaitClock {
    /// Starts counting (if not already).
    pub fn wait(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// Stops counting: bytes came, or the server has its own work to do.
    pub fn stop(&mut self, now: Instant) {
        if let Some(since) = self.since.take() {
            self.waited += now.saturating_duration_since(since);
        }
    }

    /// All the time waited, up to `now`.
    pub fn total(&self, now: Instant) -> Duration {
        self.waited + self.since.map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    /// When the current wait runs out: once `total` has been waited in all, or (if given) after
    /// `stall` of this wait alone. `None` while not waiting.
    pub fn deadline(&self, total: Duration, stall: Option<Duration>) -> Option<Instant> {
        let since = self.since?;
        let by_total = since + total.saturating_sub(self.waited);
        Some(stall.map_or(by_total, |stall| by_total.min(since + stall)))
    }
}

/// The requests of one connection that hyper is handling: from the call of the service until
/// the response was written. While any is open, the client owes the server nothing.
#[derive(Debug, Default)]
pub struct Exchanges {
    open: AtomicUsize,
    /// Woken when the last open exchange ends.
    waker: Mutex<Option<Waker>>,
}

impl Exchanges {
    /// Counts a request as open until the returned [`Exchange`] is dropped.
    pub fn begin(self: &Arc<Self>) -> Exchange {
        self.open.fetch_add(1, Ordering::AcqRel);
        Exchange(self.clone())
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Whether all exchanges are over; if not, `waker` is woken once they are.
    fn poll_closed(&self, waker: &Waker) -> bool {
        if self.open() == 0 {
            return true;
        }
        *self.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(waker.clone());
        self.open() == 0
    }
}

/// One open request; see [`Exchanges`].
#[derive(Debug)]
pub struct Exchange(Arc<Exchanges>);

impl Drop for Exchange {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(waker) = self.0.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
                waker.wake();
            }
        }
    }
}

/// A response body that keeps its request's [`Exchange`] open until hyper has written it.
#[derive(Debug)]
pub struct Tracked<B> {
    pub body: B,
    pub exchange: Exchange,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Where the client's side of the conversation stands.
#[derive(Debug)]
enum Phase {
    /// Between requests.
    Idle,
    /// Some bytes of a head have come.
    Head,
    /// This many bytes of a Content-Length body are still to come.
    Length(u64),
    Chunked(Chunked),
    /// A head was refused: hyper sees the end of the connection, then the guard answers.
    Refused(Refusal),
    /// Closed at a request boundary (idle timeout, or the client left).
    Closed,
    /// A body broke its framing or pace: hyper sees this error.
    Broken(io::ErrorKind, String),
}

/// Bytes asked for by one read of a head, and of a body.
const HEAD_READ_BYTES: usize = 4 << 10;
const BODY_READ_BYTES: usize = 16 << 10;

/// A client connection as hyper should see it; see the module docs.
#[derive(Debug)]
pub struct Guarded<S> {
    io: S,
    rules: Rules,
    exchanges: Arc<Exchanges>,
    /// Bytes read from the client, of which the first `ready` are checked and may go to hyper.
    buf: BytesMut,
    ready: usize,
    phase: Phase,
    /// Body bytes of the current request that passed.
    received: u64,
    /// How much of a head was found incomplete.
    head_checked: usize,
    clock: WaitClock,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_since: Option<Instant>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Guarded<S> {
    /// Guards `io`, of which `read` was already read (the start of a request head, or nothing).
    pub fn new(io: S, read: BytesMut, rules: Rules, exchanges: Arc<Exchanges>) -> Self {
        Self {
            io,
            rules,
            exchanges,
            buf: read,
            ready: 0,
            phase: Phase::Idle,
            received: 0,
            head_checked: 0,
            clock: WaitClock::default(),
            read_timer: None,
            write_since: None,
            write_timer: None,
        }
    }

    /// Ends the connection once hyper is done with it: answers a refused head, if any, then
    /// closes (after a broken body, without resetting the connection under hyper's answer).
    pub async fn finish(mut self) {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Refused(refusal) => refuse(&mut self.io, &refusal).await,
            Phase::Broken(..) => linger(&mut self.io).await,
            _ => {
                let _ = self.io.shutdown().await;
            }
        }
    }

    /// Checks buffered bytes past the ready ones; whether anything changed.
    fn examine(&mut self) -> bool {
        let next = &self.buf[self.ready..];
        let (passed, phase) = match &mut self.phase {
            Phase::Idle if next.is_empty() => return false,
            Phase::Idle => (0, Phase::Head),
            Phase::Head if !framing::worth_parsing(next, self.head_checked, self.rules.max_head_bytes) => {
                self.head_checked = next.len();
                return false;
            }
            Phase::Head => match framing::parse_head(next, self.rules.max_head_bytes) {
                Parsed::Partial => {
                    self.head_checked = next.len();
                    return false;
                }
                Parsed::Refused(refusal) => (0, Phase::Refused(refusal)),
                Parsed::Complete(head) => match admit(&head, &self.rules) {
                    Ok(phase) => (head.len, phase),
                    Err(refusal) => (0, Phase::Refused(refusal)),
                },
            },
            Phase::Length(_) | Phase::Chunked(_) if next.is_empty() => return false,
            Phase::Length(left) => {
                let n = (*left).min(next.len() as u64);
                self.received += n;
                *left -= n;
                if *left > 0 {
                    self.ready += n as usize;
                    return true;
                }
                (n as usize, Phase::Idle)
            }
            Phase::Chunked(chunked) => match chunked.step(next) {
                Step::NeedMore => return false,
                Step::Framing(n) => {
                    self.ready += n;
                    return true;
                }
                Step::Data(left) => {
                    let n = left.min(next.len() as u64);
                    chunked.passed(n);
                    self.received += n;
                    self.ready += n as usize;
                    return true;
                }
                Step::End(n) => (n, Phase::Idle),
                Step::Refused(refusal) => (0, Phase::Broken(io::ErrorKind::InvalidData, refusal.message)),
            },
            Phase::Refused(_) | Phase::Closed | Phase::Broken(..) => return false,
        };
        self.ready += passed;
        self.enter(phase);
        true
    }

    fn enter(&mut self, phase: Phase) {
        self.clock = WaitClock::default();
        self.received = 0;
        self.head_checked = 0;
        self.phase = phase;
    }

    /// Reads more from the client into the buffer: `Ok(false)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let len = self.buf.len();
        let want = match self.phase {
            Phase::Length(_) | Phase::Chunked(_) => BODY_READ_BYTES,
            _ => HEAD_READ_BYTES,
        };
        self.buf.resize(len + want, 0);
        let mut read = ReadBuf::new(&mut self.buf[len..]);
        let polled = Pin::new(&mut self.io).poll_read(cx, &mut read);
        let n = read.filled().len();
        self.buf.truncate(len + n);
        ready!(polled)?;
        self.clock.stop(Instant::now());
        Poll::Ready(Ok(n > 0))
    }

    /// While the client owes bytes and none come: `Ready` once it took too long (the phase then
    /// says what follows).
    fn poll_timeout(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let now = Instant::now();
        let timeouts = self.rules.timeouts;
        let owed = self.exchanges.open() == 0;
        let budget = match self.phase {
            Phase::Idle if owed => (timeouts.idle(), None),
            Phase::Head if owed => (timeouts.header(), None),
            Phase::Length(_) | Phase::Chunked(_) => {
                (timeouts.body_allowance(self.received), Some(timeouts.body_stall()))
            }
            _ => {
                // The server is answering: nothing is owed until it is done.
                self.clock.stop(now);
                if self.exchanges.poll_closed(cx.waker()) {
                    cx.waker().wake_by_ref(); // done meanwhile: look again
                }
                return Poll::Pending;
            }
        };
        self.clock.wait(now);
        let deadline = self.clock.deadline(budget.0, budget.1).expect("waiting");
        if deadline > now && !poll_sleep(&mut self.read_timer, deadline, cx) {
            return Poll::Pending;
        }
        let waited = self.clock.total(now);
        self.phase = match self.phase {
            Phase::Idle => Phase::Closed,
            Phase::Head => Phase::Refused(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("request head not complete within {} ms", timeouts.header_ms),
            )),
            _ => Phase::Broken(
                io::ErrorKind::TimedOut,
                format!(
                    "request body too slow: {} bytes after waiting {:?} (at most {} ms without a byte, \
                     and {} bytes/s after the first {} ms)",
                    self.received,
                    waited,
                    timeouts.body_stall_ms,
                    timeouts.body_min_bytes_per_s,
                    timeouts.body_stall_ms
                ),
            ),
        };
        Poll::Ready(())
    }
}

/// What a head hyper will handle leads to, or why it cannot go to hyper.
fn admit(head: &framing::Head<'_>, rules: &Rules) -> Result<Phase, Refusal> {
    if head.target.len() > framing::MAX_HYPER_TARGET_BYTES {
        return Err(Refusal::new(
            StatusCode::URI_TOO_LONG,
            format!("request target is longer than {} bytes", framing::MAX_HYPER_TARGET_BYTES),
        ));
    }
    if head.method == http::Method::CONNECT {
        return Err(Refusal::new(StatusCode::NOT_IMPLEMENTED, "CONNECT is not supported"));
    }
    Ok(match head.framing {
        framing::Framing::Empty => Phase::Idle,
        framing::Framing::Length(n) => Phase::Length(n),
        framing::Framing::Chunked => Phase::Chunked(Chunked::new(rules.max_chunk_bytes)),
    })
}

/// Polls the timer in `slot`, set to `deadline`; whether it fired.
fn poll_sleep(slot: &mut Option<Pin<Box<Sleep>>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    let timer = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    timer.as_mut().poll(cx).is_ready()
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready > 0 {
                let n = this.ready.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.ready -= n;
                if this.buf.is_empty() && matches!(this.phase, Phase::Idle) {
                    // An idle connection keeps no buffer.
                    this.buf = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.examine() {
                continue;
            }
            match &this.phase {
                // The end, at a request boundary: once hyper has answered everything before it.
                Phase::Refused(_) | Phase::Closed => {
                    return match this.exchanges.poll_closed(cx.waker()) {
                        true => Poll::Ready(Ok(())),
                        false => Poll::Pending,
                    };
                }
                Phase::Broken(kind, message) => {
                    return Poll::Ready(Err(io::Error::new(*kind, message.clone())))
                }
                _ => {}
            }
            match this.poll_fill(cx) {
                Poll::Ready(Ok(true)) => continue,
                Poll::Ready(Ok(false)) if matches!(this.phase, Phase::Idle | Phase::Head) => {
                    this.phase = Phase::Closed;
                }
                // The client left mid-body: hyper sees the body end early.
                Poll::Ready(Ok(false)) => return Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => ready!(this.poll_timeout(cx)),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, data);
        this.check_write(polled, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, data);
        this.check_write(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<S> Guarded<S> {
    /// A write that cannot proceed for `body_stall` (the client stopped reading) fails.
    fn check_write(
        &mut self,
        polled: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if polled.is_ready() {
            self.write_since = None;
            return polled;
        }
        let now = Instant::now();
        let deadline = *self.write_since.get_or_insert(now) + self.rules.timeouts.body_stall();
        if deadline > now && !poll_sleep(&mut self.write_timer, deadline, cx) {
            return Poll::Pending;
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {} ms", self.rules.timeouts.body_stall_ms),
        )))
    }
}

/// How long a refused client is given to read the answer before the connection is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read and discarded meanwhile.
const LINGER_BYTES: usize = 1 << 20;

/// Answers `refusal` with `connection: close`, then closes without resetting the connection
/// under the answer: the client's unread bytes are read and dropped for a moment first.
pub async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, refusal: &Refusal) {
    let status = refusal.status;
    let body = format!("{}\n", refusal.message);
    let response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    log::debug!("refused a request: {refusal}");
    let written = tokio::time::timeout(LINGER, io.write_all(response.as_bytes())).await;
    if matches!(written, Ok(Ok(()))) {
        linger(io).await;
    }
}

/// Closes our side, then reads and drops what the client still sends for a moment, so that
/// closing does not reset the connection before the client read our last answer.
pub async fn linger<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    let _ = tokio::time::timeout(LINGER, io.shutdown()).await;
    let mut sink = vec![0; 8 << 10];
    let (deadline, mut left) = (Instant::now() + LINGER, LINGER_BYTES);
    while left > 0 {
        match tokio::time::timeout_at(deadline, io.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    const TIMEOUTS: ClientTimeouts =
        ClientTimeouts { header_ms: 1000, idle_ms: 5000, body_stall_ms: 2000, body_min_bytes_per_s: 100 };
    const RULES: Rules = Rules { timeouts: TIMEOUTS, max_head_bytes: 1024, max_chunk_bytes: 1000 };

    #[test]
    fn waiting_counts_only_while_waiting() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut clock = WaitClock::default();
        assert_eq!(clock.deadline(s(10), None), None, "not waiting");
        clock.wait(t0);
        clock.wait(t0 + s(1)); // still the same wait
        assert_eq!(clock.deadline(s(10), Some(s(3))), Some(t0 + s(3)));
        clock.stop(t0 + s(2));
        // Ten seconds of the server's own work do not count.
        clock.wait(t0 + s(12));
        assert_eq!(clock.total(t0 + s(13)), s(3));
        assert_eq!(clock.deadline(s(10), None), Some(t0 + s(20)), "8 s of the 10 left");
        assert_eq!(clock.deadline(s(10), Some(s(3))), Some(t0 + s(15)), "the stall bound is per wait");
        assert_eq!(clock.deadline(s(1), None), Some(t0 + s(12)), "overdue: at once");
    }

    #[test]
    fn the_flags_default_to_the_documented_bounds_and_refuse_zero() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            client: ClientTimeouts,
        }
        let parse = |args: &[&str]| Cli::try_parse_from([&["server"], args].concat()).map(|cli| cli.client);
        assert_eq!(parse(&[]).unwrap(), ClientTimeouts::default());
        let set = parse(&["--client-header-timeout-ms", "5", "--client-body-min-bytes-per-s", "9"]).unwrap();
        assert_eq!((set.header_ms, set.body_min_bytes_per_s), (5, 9));
        for flag in ["--client-header-timeout-ms", "--client-idle-timeout-ms", "--client-body-stall-ms"] {
            let error = parse(&[flag, "0"]).unwrap_err().to_string();
            assert!(error.contains(flag) && error.contains("0 is not in 1.."), "{error}");
        }
    }

    #[test]
    fn a_body_earns_time_by_the_bytes_it_delivers() {
        let cases = [(0, 2000), (100, 3000), (1000, 12_000)];
        for (received, allowed_ms) in cases {
            assert_eq!(
                TIMEOUTS.body_allowance(received),
                Duration::from_millis(allowed_ms),
                "{received} bytes"
            );
        }
    }

    fn guarded(read: &[u8]) -> (DuplexStream, Guarded<DuplexStream>, Arc<Exchanges>) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let exchanges = Arc::new(Exchanges::default());
        (client, Guarded::new(server, BytesMut::from(read), RULES, exchanges.clone()), exchanges)
    }

    /// One read: what came, or the error.
    async fn read(guarded: &mut Guarded<DuplexStream>) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; 4096];
        let n = guarded.read(&mut buf).await?;
        Ok(buf[..n].to_vec())
    }

    /// Whether a read is still waiting after `after`.
    async fn still_waiting(guarded: &mut Guarded<DuplexStream>, after: Duration) -> bool {
        tokio::time::timeout(after, read(guarded)).await.is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn heads_go_through_whole_with_what_was_read_before() {
        let (mut client, mut guarded, _) = guarded(b"GET / HT");
        assert!(still_waiting(&mut guarded, Duration::from_millis(10)).await, "half a head is held back");
        client.write_all(b"TP/1.1\r\nContent-Length: 3\r\n\r\nab").await.unwrap();
        assert_eq!(read(&mut guarded).await.unwrap(), b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(read(&mut guarded).await.unwrap(), b"ab");
        client.write_all(b"cGET /next").await.unwrap();
        assert_eq!(read(&mut guarded).await.unwrap(), b"c", "the body, not the next head");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_is_refused_with_408_once_the_server_owes_nothing() {
        let (mut client, mut guarded, exchanges) = guarded(b"");
        let exchange = exchanges.begin();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(
            still_waiting(&mut guarded, Duration::from_secs(30)).await,
            "a request is still being answered"
        );
        drop(exchange);
        let started = Instant::now();
        assert_eq!(read(&mut guarded).await.unwrap(), b"", "hyper sees the end");
        assert_eq!(started.elapsed(), TIMEOUTS.header());
        guarded.finish().await;
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer}");
        assert!(answer.ends_with("request head not complete within 1000 ms\n"), "{answer}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_end_after_their_bound() {
        let (_client, mut guarded, _) = guarded(b"");
        let started = Instant::now();
        assert_eq!(read(&mut guarded).await.unwrap(), b"");
        assert_eq!(started.elapsed(), TIMEOUTS.idle());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_leaves_after_its_request_still_gets_the_answer() {
        let (mut client, mut guarded, exchanges) = guarded(b"");
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(read(&mut guarded).await.unwrap(), b"GET / HTTP/1.1\r\n\r\n");
        let exchange = exchanges.begin();
        client.shutdown().await.unwrap();
        // hyper would abort the answer on seeing the end now.
        assert!(still_waiting(&mut guarded, Duration::from_secs(60)).await);
        drop(exchange);
        assert_eq!(read(&mut guarded).await.unwrap(), b"");
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_must_keep_their_pace() {
        // (body bytes sent, pause between them in ms, whether the body is cut)
        let cases = [(20, 50, false), (20, 1500, true), (4, 2500, true)];
        for (bytes, pause_ms, cut) in cases {
            let (mut client, mut guarded, _exchanges) =
                guarded(b"POST / HTTP/1.1\r\nContent-Length: 20\r\n\r\n");
            read(&mut guarded).await.unwrap();
            let sender = tokio::spawn(async move {
                for _ in 0..bytes {
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                    if client.write_all(b"x").await.is_err() {
                        break;
                    }
                }
                client
            });
            let mut result = Ok(0);
            let mut body = 0;
            while body < 20 {
                result = read(&mut guarded).await.map(|b| b.len());
                match result {
                    Ok(n) if n > 0 => body += n,
                    _ => break,
                }
            }
            assert_eq!(result.is_err(), cut, "{bytes} bytes, {pause_ms} ms apart: {result:?}");
            if let Err(e) = result {
                assert_eq!(e.kind(), io::ErrorKind::TimedOut);
                assert!(e.to_string().contains("request body too slow"), "{e}");
            }
            sender.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn framing_errors_are_refused_before_hyper_sees_them() {
        let cases: [(&[u8], &str); 3] = [
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
                "over the 1000-byte body limit",
            ),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX", "not followed by CRLF"),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
                "more than one Content-Length",
            ),
        ];
        for (input, message) in cases {
            let (_client, mut guarded, _) = guarded(input);
            let mut passed = Vec::new();
            let error = loop {
                match read(&mut guarded).await {
                    Ok(bytes) if bytes.is_empty() => break None,
                    Ok(bytes) => passed.extend(bytes),
                    Err(e) => break Some(e.to_string()),
                }
            };
            let refused = match guarded.phase {
                Phase::Refused(refusal) => Some(refusal.message),
                _ => error,
            };
            assert!(refused.as_deref().is_some_and(|m| m.contains(message)), "{refused:?}");
            assert!(!passed.windows(3).any(|w| w == b"fff" || w == b"loX"), "hyper saw {passed:?}");
        }
    }
}
