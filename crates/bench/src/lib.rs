//! Shared pieces of Tether's load generators: `tether-bench` (the reconnect path),
//! `tether-bench-ws` (live monitoring) and `tether-bench-mcp` (the MCP endpoint).
//!
//! - [`samples`]: latency samples and their exact percentiles (all three);
//! - [`server`]: starting, observing and stopping the `tether` process (`tether-bench` and
//!   `tether-bench-mcp`);
//! - [`backend`]: a fresh SQLite file or PostgreSQL database per run (the same two).
//!
//! ```
//! use std::time::Duration;
//! use tether_bench::samples::Samples;
//!
//! let mut s = Samples::default();
//! s.push(Duration::from_millis(3));
//! assert_eq!(s.summary().pct_ms(99.0), 3.0);
//! ```

pub mod backend;
pub mod samples;
pub mod server;

/// Errors of the benches: anything, with a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
