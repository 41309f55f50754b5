//! When to try again, where, and how long to wait: the pure part of failover.
//!
//! A call tries the frontends in a rotating order (each call starts one further along, so load
//! spreads over all of them), with frontends that failed recently moved to the end. The first
//! attempt on each frontend is immediate, since another frontend is an independent chance;
//! once every frontend has had its turn, each further attempt waits an exponentially growing
//! backoff. Attempts stop at [`Policy::retries`] retries or at the call's deadline, whichever
//! comes first. No jitter: callers that fail together are already spread over different
//! frontends by the rotation.

use std::time::Duration;

/// How a call retries. Every call is bounded: by the number of attempts and by its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Attempts after the first (0: never retry).
    pub retries: u32,
    /// The wait before the first attempt that goes back to a frontend already tried; doubled
    /// for each later one.
    pub backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// Longest wait for one attempt's answer (the response head, and for a buffered value its
    /// whole body), plus [`Policy::per_mib`] per MiB of value.
    pub attempt_timeout: Duration,
    /// Longest a whole call may take, retries and waits included, plus [`Policy::per_mib`] per
    /// MiB of value.
    pub deadline: Duration,
    /// Extra time allowed per MiB of a value sent or received (125 ms: 8 MiB/s at least).
    pub per_mib: Duration,
    /// How long a frontend that failed is tried after the others.
    pub suspicion: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            retries: 6,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(30),
            per_mib: Duration::from_millis(125),
            suspicion: Duration::from_secs(2),
        }
    }
}

impl Policy {
    /// The wait before attempt `attempt` (0 is the first) on a client with `frontends`
    /// frontends: none until every frontend has had one attempt, then `backoff`, doubling up to
    /// `max_backoff`.
    pub fn wait_before(&self, attempt: u32, frontends: usize) -> Duration {
        let frontends = u32::try_from(frontends).unwrap_or(u32::MAX).max(1);
        if attempt < frontends {
            return Duration::ZERO;
        }
        let doublings = (attempt - frontends).min(31);
        self.backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }

    /// The time a value of `bytes` adds to a timeout.
    pub fn allowance(&self, bytes: u64) -> Duration {
        let mib = bytes.div_ceil(1 << 20);
        self.per_mib.saturating_mul(u32::try_from(mib).unwrap_or(u32::MAX))
    }
}

/// The order in which one call tries the frontends: starting at `start` (mod the count) and
/// going round, with those for which `suspected(i)` holds moved to the end (in the same
/// rotation). Attempt `n` goes to `order[n % order.len()]`.
pub fn order(frontends: usize, start: usize, suspected: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..frontends).map(|i| (start + i) % frontends).collect();
    order.sort_by_key(|&i| suspected(i)); // stable: the rotation is kept within each group
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_only_once_every_frontend_had_a_turn_then_doubles_up_to_the_cap() {
        let policy = Policy {
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(300),
            ..Policy::default()
        };
        let ms = |attempt, frontends| policy.wait_before(attempt, frontends).as_millis();
        let cases = [
            // (attempt, frontends, wait in ms)
            (0, 1, 0),
            (1, 1, 50),
            (2, 1, 100),
            (3, 1, 200),
            (4, 1, 300),
            (40, 1, 300),
            (0, 3, 0),
            (1, 3, 0),
            (2, 3, 0),
            (3, 3, 50),
            (4, 3, 100),
            (0, 0, 0),
            (u32::MAX, 3, 300),
        ];
        for (attempt, frontends, expected) in cases {
            assert_eq!(ms(attempt, frontends), expected, "attempt {attempt} of {frontends} frontends");
        }
    }

    #[test]
    fn large_values_get_more_time() {
        let policy = Policy::default();
        let cases = [(0, 0), (1, 125), (1 << 20, 125), ((1 << 20) + 1, 250), (128 << 20, 16_000)];
        for (bytes, ms) in cases {
            assert_eq!(policy.allowance(bytes), Duration::from_millis(ms), "{bytes} bytes");
        }
        assert_eq!(policy.allowance(u64::MAX), Duration::from_millis(125) * u32::MAX);
    }

    #[test]
    fn rotates_and_tries_suspects_last() {
        let none = |_| false;
        let cases: [(usize, usize, &[usize], &[usize]); 6] = [
            (3, 0, &[], &[0, 1, 2]),
            (3, 1, &[], &[1, 2, 0]),
            (3, 5, &[], &[2, 0, 1]),
            (3, 1, &[2], &[1, 0, 2]),
            (3, 0, &[0, 1], &[2, 0, 1]),
            (3, 2, &[0, 1, 2], &[2, 0, 1]),
        ];
        for (frontends, start, suspects, expected) in cases {
            assert_eq!(
                order(frontends, start, |i| suspects.contains(&i)),
                expected,
                "start {start} suspects {suspects:?}"
            );
        }
        assert_eq!(order(1, 7, none), [0]);
        assert!(order(0, 3, none).is_empty());
    }
}
