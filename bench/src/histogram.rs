//! The latency histogram: `hdrhistogram` (HdrHistogram, three significant digits: any
//! percentile within 0.1% of the true value, in constant memory; histograms from many tasks
//! merge by adding counts), behind the few methods the reports use. It replaced a hand-written
//! log-bucket histogram of the same design.

/// Microsecond latencies.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram(hdrhistogram::Histogram<u64>);

impl Default for Histogram {
    fn default() -> Self {
        Self(hdrhistogram::Histogram::new(3).expect("3 significant digits is a valid precision"))
    }
}

impl Histogram {
    /// Records `value` (the histogram grows to hold it); a value beyond any it can grow to is
    /// recorded as its largest.
    pub fn record(&mut self, value: u64) {
        if self.0.record(value).is_err() {
            self.0.saturating_record(value);
        }
    }

    pub fn merge(&mut self, other: &Histogram) {
        // Auto-resizing histograms take any other's values.
        self.0.add(&other.0).expect("auto-resizing histograms merge");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn max(&self) -> u64 {
        self.0.max()
    }

    pub fn mean(&self) -> f64 {
        self.0.mean()
    }

    /// The value at quantile `q` (0.0..=1.0), never above the maximum seen; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q.clamp(0.0, 1.0)).min(self.0.max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::default();
        for v in 0..64 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.0), 0);
        assert_eq!(h.quantile(0.5), 31);
        assert_eq!(h.quantile(1.0), 63);
        assert_eq!(h.count(), 64);
        assert_eq!(h.mean(), 31.5);
    }

    #[test]
    fn percentiles_stay_within_the_precision() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, exact) in [(0.5, 50_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - exact).abs() / exact < 0.001, "q={q}: {got} vs {exact}");
        }
        assert_eq!(h.quantile(1.0), h.max());
        assert!((h.max() as f64 - 100_000.0).abs() / 100_000.0 < 0.001);
        h.record(u64::MAX);
        assert_eq!(h.count(), 100_001, "even an absurd value is counted");
    }

    #[test]
    fn merging_adds_counts() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        (0..10).for_each(|v| a.record(v * 10));
        (0..10).for_each(|v| b.record(1000 + v));
        a.merge(&b);
        assert_eq!(a.count(), 20);
        assert_eq!(a.max(), 1009);
        assert_eq!(a.quantile(0.5), 90);
        assert!(a.quantile(0.95) >= 1008);
    }

    #[test]
    fn an_empty_histogram_reports_zero() {
        let h = Histogram::default();
        assert_eq!((h.quantile(0.99), h.max(), h.count(), h.mean()), (0, 0, 0, 0.0));
    }
}
