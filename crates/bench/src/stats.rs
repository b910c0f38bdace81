//! Latency samples and their percentiles.

use std::time::Duration;

/// Latency samples in microseconds. Every request is kept (a run is bounded in time, so at most a few
/// hundred thousand), which makes the percentiles exact instead of bucketed.
#[derive(Clone, Debug, Default)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    /// Room for `n` samples.
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// Records one sample.
    pub fn push(&mut self, d: Duration) {
        self.0
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    /// Adds another set of samples.
    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// Sorts the samples once, for the percentile queries.
    pub fn summary(mut self) -> Summary {
        self.0.sort_unstable();
        Summary(self.0)
    }
}

/// Sorted samples.
#[derive(Clone, Debug, Default)]
pub struct Summary(Vec<u32>);

impl Summary {
    /// The nearest-rank percentile `p` (0..=100), in milliseconds; 0 when there are no samples.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let rank = (p / 100.0 * self.0.len() as f64).ceil() as usize;
        let idx = rank.clamp(1, self.0.len()) - 1;
        f64::from(self.0[idx]) / 1000.0
    }

    /// The largest sample, in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.0.last().map_or(0.0, |&us| f64::from(us) / 1000.0)
    }
}

/// The outcome of one measured run.
#[derive(Clone, Debug, Default)]
pub struct Run {
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed (each also counted nowhere else).
    pub errors: u64,
    /// Wall time from the start of the run until its last operation ended.
    pub elapsed: Duration,
    /// Latency of the successful operations.
    pub latency: Summary,
    /// The first failure, to show what went wrong.
    pub first_error: Option<String>,
}

impl Run {
    /// Successful operations per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut l = Latencies::default();
        for us in (1..=100).rev() {
            l.push(Duration::from_micros(us * 1000));
        }
        let s = l.summary();
        assert!((s.percentile_ms(50.0) - 50.0).abs() < 1e-9);
        assert!((s.percentile_ms(99.0) - 99.0).abs() < 1e-9);
        assert!((s.max_ms() - 100.0).abs() < 1e-9);
        assert!(Summary::default().percentile_ms(99.0).abs() < 1e-9);
    }
}
