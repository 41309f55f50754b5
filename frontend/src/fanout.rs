//! One large value forwarded to several replicas while it arrives, in bounded memory, at the
//! pace of a write quorum of them.
//!
//! Each replica has a lane: the chunks forwarded to it that its request has not taken yet (they
//! are shared `Bytes`, so a chunk waiting on three lanes is held once). The forwarder reads the
//! client's next chunk only when [`decide`] says so:
//! - a lane may lag by up to [`MAX_LAG_BYTES`]; while the `keep_up` fastest lanes (the write
//!   quorum) are within it, the client is not held back by the others;
//! - when fewer than `keep_up` lanes are within it, the forwarder waits: the quorum is slower
//!   than the client, and the client is slowed (TCP backpressure) rather than buffered;
//! - a lane beyond the quorum that exceeds the bound is waited for too, but only from a budget
//!   of [`LAGGARD_PATIENCE`] per request (a healthy replica's hiccup costs a short wait); once
//!   the budget is spent, a laggard is cut off: its request fails, the write is acknowledged
//!   without it if the quorum stores it, and the replica is fenced and repaired like any replica
//!   that missed a write.
//!
//! So the frontend holds at most about [`MAX_LAG_BYTES`] plus one chunk per request, whatever
//! the value's size. A replica that takes nothing for a while although chunks wait for it is
//! failed by [`watchdog`], which also bounds how long a replica may take to answer once it has
//! the whole body: a dead or hung replica costs a bounded delay.

use bytes::Bytes;
use common::http::{BoxError, RpcError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

/// How far a lane may fall behind the client's stream before it holds the forwarder back.
pub const MAX_LAG_BYTES: u64 = 4 << 20;
/// How long, in all, one request waits for replicas beyond its quorum that lag more than
/// [`MAX_LAG_BYTES`] before cutting them off.
pub const LAGGARD_PATIENCE: Duration = Duration::from_secs(1);
/// How often waits re-examine the lanes (each take also wakes the forwarder at once).
const TICK: Duration = Duration::from_millis(50);

/// What the forwarder does once the lanes are as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Forward the client's next chunk.
    Read,
    /// Wait: fewer than `keep_up` lanes are within the bound (backpressure on the client).
    AwaitQuorum,
    /// Wait for lanes beyond the quorum, out of the patience budget.
    AwaitLaggards,
}

/// Which lanes to cut off, and what to do then, given each live lane's lag (`None`: the lane's
/// request has ended) and whether patience is left. Pure: see the module doc for the rules.
pub fn decide(lags: &[Option<u64>], keep_up: usize, patient: bool) -> (Vec<usize>, Then) {
    let over: Vec<usize> =
        (0..lags.len()).filter(|&i| lags[i].is_some_and(|lag| lag > MAX_LAG_BYTES)).collect();
    if over.is_empty() {
        return (Vec::new(), Then::Read);
    }
    let within = lags.iter().flatten().count() - over.len();
    match (within >= keep_up, patient) {
        (false, _) => (Vec::new(), Then::AwaitQuorum),
        (true, true) => (Vec::new(), Then::AwaitLaggards),
        (true, false) => (over, Then::Read),
    }
}

/// One replica's progress through the value.
#[derive(Debug)]
pub struct Lane {
    length: u64,
    sent: AtomicU64,
    taken: AtomicU64,
    last_take: Mutex<Instant>,
    /// Set when the lane's body is dropped (its request ended).
    closed: AtomicBool,
    /// Why the forwarder cut the lane off, if it did.
    cut: Mutex<Option<String>>,
    /// Wakes the forwarder (shared by every lane of a value).
    wake: Arc<Notify>,
}

impl Lane {
    fn lag(&self) -> u64 {
        self.sent.load(Ordering::Acquire).saturating_sub(self.taken.load(Ordering::Acquire))
    }

    /// Why the lane was cut off, if it was.
    pub fn cut_reason(&self) -> Option<String> {
        self.cut.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A request body fed by the forwarder through a lane: exactly `length` bytes, or an error.
pub struct LaneBody {
    chunks: mpsc::UnboundedReceiver<Result<Bytes, BoxError>>,
    remaining: u64,
    lane: Arc<Lane>,
}

impl LaneBody {
    pub fn lane(&self) -> Arc<Lane> {
        self.lane.clone()
    }
}

impl Drop for LaneBody {
    fn drop(&mut self) {
        self.lane.closed.store(true, Ordering::Release);
        self.lane.wake.notify_one();
    }
}

impl hyper::body::Body for LaneBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let received = std::task::ready!(self.chunks.poll_recv(cx));
        let frame = common::http::next_frame(&mut self.remaining, received);
        if let Some(chunk) = frame.as_ref().ok().and_then(|f| f.data_ref()) {
            self.lane.taken.fetch_add(chunk.len() as u64, Ordering::AcqRel);
            *self.lane.last_take.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            self.lane.wake.notify_one();
        }
        std::task::Poll::Ready(Some(frame))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

/// The forwarding side of a value's lanes.
pub struct Fanout {
    lanes: Vec<Arc<Lane>>,
    senders: Vec<Option<mpsc::UnboundedSender<Result<Bytes, BoxError>>>>,
    wake: Arc<Notify>,
    keep_up: usize,
    patience: Duration,
}

impl Fanout {
    /// Lanes for `replicas` requests of a `length`-byte value, `keep_up` of which pace it.
    pub fn new(replicas: usize, length: u64, keep_up: usize) -> (Self, Vec<LaneBody>) {
        let wake = Arc::new(Notify::new());
        let (mut lanes, mut senders, mut bodies) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..replicas {
            let lane = Arc::new(Lane {
                length,
                sent: AtomicU64::new(0),
                taken: AtomicU64::new(0),
                last_take: Mutex::new(Instant::now()),
                closed: AtomicBool::new(false),
                cut: Mutex::new(None),
                wake: wake.clone(),
            });
            let (sender, chunks) = mpsc::unbounded_channel();
            bodies.push(LaneBody { chunks, remaining: length, lane: lane.clone() });
            lanes.push(lane);
            senders.push(Some(sender));
        }
        let fanout = Self { lanes, senders, wake, keep_up: keep_up.max(1), patience: LAGGARD_PATIENCE };
        (fanout, bodies)
    }

    /// Forwards every chunk of `chunks` to every live lane, paced as the module doc says. `Err`
    /// if `chunks` failed (every lane then fails too). Stops early, failing the lanes still
    /// live, once fewer than `keep_up` remain (the write cannot succeed).
    pub async fn forward<E: std::fmt::Display>(
        &mut self,
        chunks: impl futures_util::Stream<Item = Result<Bytes, E>>,
    ) -> Result<(), String> {
        use futures_util::StreamExt;
        let mut chunks = std::pin::pin!(chunks);
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    let why = format!("the client's body failed: {e}");
                    self.fail_all(&why);
                    return Err(why);
                }
            };
            for (lane, slot) in self.lanes.iter().zip(&mut self.senders) {
                let Some(sender) = slot else { continue };
                if lane.closed.load(Ordering::Acquire) || sender.send(Ok(chunk.clone())).is_err() {
                    *slot = None;
                    continue;
                }
                lane.sent.fetch_add(chunk.len() as u64, Ordering::AcqRel);
            }
            if self.live() < self.keep_up {
                self.fail_all("the write lost its quorum");
                return Ok(());
            }
            self.pace().await;
        }
        Ok(())
    }

    fn live(&self) -> usize {
        self.senders.iter().flatten().count()
    }

    fn fail_all(&mut self, why: &str) {
        for sender in self.senders.iter_mut().filter_map(Option::take) {
            let _ = sender.send(Err(why.to_owned().into()));
        }
    }

    /// Waits until [`decide`] says to read on, cutting off the lanes it names.
    async fn pace(&mut self) {
        loop {
            let woken = self.wake.notified();
            let lags: Vec<Option<u64>> = self
                .lanes
                .iter()
                .zip(&self.senders)
                .map(|(lane, sender)| {
                    (sender.is_some() && !lane.closed.load(Ordering::Acquire)).then(|| lane.lag())
                })
                .collect();
            let (cut, then) = decide(&lags, self.keep_up, !self.patience.is_zero());
            for i in cut {
                let why = format!(
                    "cut off from the write: it lagged more than {MAX_LAG_BYTES} bytes behind the \
                     write quorum for longer than {LAGGARD_PATIENCE:?}"
                );
                log::warn!("replica lane {i}: {why}");
                *self.lanes[i].cut.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                if let Some(sender) = self.senders[i].take() {
                    let _ = sender.send(Err(why.into()));
                }
            }
            let started = tokio::time::Instant::now();
            match then {
                Then::Read => return,
                Then::AwaitQuorum => {
                    let _ = tokio::time::timeout(TICK, woken).await;
                }
                Then::AwaitLaggards => {
                    let _ = tokio::time::timeout(TICK.min(self.patience), woken).await;
                    self.patience = self.patience.saturating_sub(started.elapsed());
                }
            }
        }
    }
}

/// Fails (never returns otherwise) once `lane`'s replica takes nothing for `stall` although
/// chunks wait for it, or has not answered within `answer_within` of taking the whole body.
/// Meant to race the replica's request.
pub async fn watchdog(lane: &Lane, stall: Duration, answer_within: Duration) -> RpcError {
    loop {
        tokio::time::sleep(TICK).await;
        if lane.taken.load(Ordering::Acquire) == lane.length {
            tokio::time::sleep(answer_within).await;
            return RpcError::Timeout(answer_within);
        }
        let idle = lane.last_take.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
        if lane.lag() > 0 && idle >= stall {
            return RpcError::Transport(format!("took none of the value for {stall:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVER: u64 = MAX_LAG_BYTES + 1;

    #[test]
    fn the_quorum_paces_and_laggards_are_waited_for_then_cut() {
        /// Lags, keep_up, patience left, expected cuts and next step.
        type Case = (&'static [Option<u64>], usize, bool, &'static [usize], Then);
        let cases: &[Case] = &[
            (&[Some(0), Some(0), Some(0)], 2, true, &[], Then::Read),
            (&[Some(MAX_LAG_BYTES), Some(0), Some(0)], 2, false, &[], Then::Read),
            // One replica beyond the quorum lags: waited for while patience lasts, then cut.
            (&[Some(OVER), Some(0), Some(5)], 2, true, &[], Then::AwaitLaggards),
            (&[Some(OVER), Some(0), Some(5)], 2, false, &[0], Then::Read),
            // The quorum itself lags: the client waits, whatever the patience.
            (&[Some(OVER), Some(OVER), Some(0)], 2, false, &[], Then::AwaitQuorum),
            (&[Some(OVER), None, Some(0)], 2, true, &[], Then::AwaitQuorum),
            (&[Some(OVER), Some(OVER), Some(0)], 1, false, &[0, 1], Then::Read),
            (&[Some(OVER), Some(0), Some(0)], 3, false, &[], Then::AwaitQuorum),
            // Ended lanes do not count, lagging or not.
            (&[None, Some(0), Some(0)], 2, true, &[], Then::Read),
            (&[None, None, None], 2, true, &[], Then::Read),
        ];
        for &(lags, keep_up, patient, cut, then) in cases {
            assert_eq!(decide(lags, keep_up, patient), (cut.to_vec(), then), "{lags:?} keep_up {keep_up}");
        }
    }

    async fn drain(mut body: LaneBody, pause: Duration) -> Result<u64, BoxError> {
        use http_body_util::BodyExt;
        let mut total = 0;
        while let Some(frame) = body.frame().await {
            total += frame?.into_data().map_or(0, |d| d.len() as u64);
            if pause.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(pause).await;
            }
        }
        Ok(total)
    }

    #[tokio::test]
    async fn a_slow_lane_beyond_the_quorum_is_cut_and_memory_stays_bounded() {
        let chunk = Bytes::from(vec![7u8; 64 << 10]);
        let length = 256 * chunk.len() as u64; // 16 MiB, four times the lag bound
        let (mut fanout, bodies) = Fanout::new(3, length, 2);
        let lanes: Vec<Arc<Lane>> = bodies.iter().map(LaneBody::lane).collect();
        let mut bodies = bodies.into_iter();
        let fast = [bodies.next().unwrap(), bodies.next().unwrap()];
        let slow = bodies.next().unwrap();
        let chunks = futures_util::stream::iter(
            (0..length / chunk.len() as u64).map(|_| Ok::<_, String>(chunk.clone())),
        );
        let max_lag = Arc::new(AtomicU64::new(0));
        let watch = {
            let (lanes, max_lag) = (lanes.clone(), max_lag.clone());
            async move {
                loop {
                    let lag = lanes
                        .iter()
                        .filter(|l| !l.closed.load(Ordering::Acquire) && l.cut_reason().is_none())
                        .map(|l| l.lag())
                        .max()
                        .unwrap_or(0);
                    max_lag.fetch_max(lag, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        let [a, b] = fast;
        let run = async {
            tokio::join!(
                fanout.forward(chunks),
                drain(a, Duration::ZERO),
                drain(b, Duration::ZERO),
                drain(slow, Duration::from_millis(20)),
            )
        };
        let (forwarded, a, b, slow) = tokio::select! {
            done = run => done,
            _ = watch => unreachable!(),
        };
        assert_eq!(forwarded, Ok(()));
        assert_eq!((a.unwrap(), b.unwrap()), (length, length));
        assert!(slow.unwrap_err().to_string().contains("cut off"));
        assert!(lanes[2].cut_reason().is_some());
        assert!(max_lag.load(Ordering::Relaxed) <= MAX_LAG_BYTES + chunk.len() as u64);
    }
}
