//! Latency samples and their exact (nearest-rank) percentiles, shared by both benchmarks.

use std::time::Duration;

/// Samples in microseconds, kept whole: a run holds at most a few hundred thousand.
#[derive(Clone, Debug, Default)]
pub struct Samples(Vec<u32>);

impl Samples {
    /// Room for `n` samples.
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// Records one sample (saturating at `u32::MAX` µs, about 71 minutes).
    pub fn push(&mut self, d: Duration) {
        self.0
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    /// Adds another set of samples.
    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// Sorts once for the percentile queries.
    pub fn summary(mut self) -> Summary {
        self.0.sort_unstable();
        Summary(self.0)
    }
}

/// Sorted samples.
#[derive(Clone, Debug, Default)]
pub struct Summary(Vec<u32>);

impl Summary {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The nearest-rank percentile `p` (0..=100) in milliseconds; 0 without samples.
    pub fn pct_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let rank = (p / 100.0 * self.0.len() as f64).ceil() as usize;
        let idx = rank.clamp(1, self.0.len()) - 1;
        f64::from(self.0[idx]) / 1000.0
    }

    /// The share (0..=1) of samples at or above `ms` milliseconds; 0 without samples.
    pub fn share_at_least_ms(&self, ms: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let us = (ms * 1000.0).ceil().clamp(0.0, f64::from(u32::MAX)) as u32;
        let below = self.0.partition_point(|&x| x < us);
        (self.0.len() - below) as f64 / self.0.len() as f64
    }

    /// The largest sample in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.0.last().map_or(0.0, |&us| f64::from(us) / 1000.0)
    }

    /// `p50 / p99 / max` in milliseconds, for the table.
    pub fn triple(&self) -> String {
        format!(
            "{:.1} / {:.1} / {:.1} ms",
            self.pct_ms(50.0),
            self.pct_ms(99.0),
            self.max_ms()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut s = Samples::default();
        for ms in (1..=100).rev() {
            s.push(Duration::from_millis(ms));
        }
        let s = s.summary();
        assert!((s.pct_ms(50.0) - 50.0).abs() < 1e-9);
        assert!((s.pct_ms(99.0) - 99.0).abs() < 1e-9);
        assert!((s.max_ms() - 100.0).abs() < 1e-9);
        assert!(Summary::default().pct_ms(99.0).abs() < 1e-9);
        assert!((s.share_at_least_ms(91.0) - 0.10).abs() < 1e-9);
        assert!((s.share_at_least_ms(0.0) - 1.0).abs() < 1e-9);
        assert!(s.share_at_least_ms(101.0).abs() < 1e-9);
        assert!(Summary::default().share_at_least_ms(1.0).abs() < 1e-9);
    }
}
