//! The outcome of a measured run; the samples themselves are the shared `tether_bench::samples`.

use std::time::Duration;

pub use tether_bench::samples::{Samples as Latencies, Summary};

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
