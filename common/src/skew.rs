//! How far a process's clock is from the controller's, as measured on each map long poll
//! (see [`crate::mapwatch::Polled::skew_us`]), against the bound the cluster tolerates.
//!
//! Frontends stamp writes with their clock, so a frontend past the bound refuses writes (503,
//! naming the skew) until its clock is fixed; storage nodes, which judge timestamps by their
//! clock, log it. The measurement overestimates by the answer's time on the wire (well under
//! a millisecond on a LAN) and is at most one long poll old (`mapwatch::WATCH_WAIT`).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// The last measured skew and the bound it is judged by.
#[derive(Debug)]
pub struct ClockCheck {
    bound_us: u64,
    /// Microseconds this clock is ahead of the controller's (negative: behind).
    skew_us: AtomicI64,
    measured: AtomicBool,
    /// Whether the last measurement was past the bound (logged on each change).
    past: AtomicBool,
}

impl ClockCheck {
    /// A check allowing `bound_us` microseconds either way.
    pub fn new(bound_us: u64) -> Self {
        Self {
            bound_us,
            skew_us: AtomicI64::new(0),
            measured: AtomicBool::new(false),
            past: AtomicBool::new(false),
        }
    }

    /// Takes in a measurement; `process` names this process in the log.
    pub fn observe(&self, skew_us: i64, process: &str) {
        self.skew_us.store(skew_us, Ordering::Relaxed);
        self.measured.store(true, Ordering::Relaxed);
        let past = skew_us.unsigned_abs() > self.bound_us;
        if self.past.swap(past, Ordering::Relaxed) != past {
            match past {
                true => log::error!("{process}: {}", self.describe(skew_us)),
                false => log::info!(
                    "{process}: clock back within {} of the controller's",
                    ms(self.bound_us as i64)
                ),
            }
        }
    }

    /// Whether any measurement has come in yet.
    pub fn measured(&self) -> bool {
        self.measured.load(Ordering::Relaxed)
    }

    /// Why writes stamped by this clock must be refused, if they must.
    pub fn refusal(&self) -> Option<String> {
        let skew = self.skew_us.load(Ordering::Relaxed);
        (self.measured.load(Ordering::Relaxed) && skew.unsigned_abs() > self.bound_us)
            .then(|| self.describe(skew))
    }

    fn describe(&self, skew: i64) -> String {
        let direction = if skew > 0 { "ahead of" } else { "behind" };
        format!(
            "this clock is {} {direction} the controller's, past the {} the cluster allows \
             (--max-clock-skew-ms); fix its time (NTP)",
            ms(skew.abs()),
            ms(self.bound_us as i64)
        )
    }
}

fn ms(us: i64) -> String {
    format!("{:.1} s", us as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_measured_skew_past_the_bound_refuses() {
        let check = ClockCheck::new(5_000_000);
        assert_eq!(check.refusal(), None, "nothing measured yet");
        for (skew, refused) in
            [(4_999_999, false), (-5_000_000, false), (5_000_001, true), (-3_600_000_000, true)]
        {
            check.observe(skew, "test");
            assert_eq!(check.refusal().is_some(), refused, "{skew}");
        }
        let message = check.refusal().unwrap();
        assert!(message.contains("3600.0 s behind") && message.contains("5.0 s"), "{message}");
        check.observe(7_200_000_000, "test");
        assert!(check.refusal().unwrap().contains("7200.0 s ahead of"));
        check.observe(1_000, "test");
        assert_eq!(check.refusal(), None, "back within the bound");
    }
}
