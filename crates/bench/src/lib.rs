//! Shared pieces of Tether's load generators: `tether-bench` (the reconnect path),
//! `tether-bench-ws` (live monitoring) and `tether-bench-mcp` (the MCP endpoint).
//!
//! - [`samples`]: latency samples and their exact percentiles (all three);
//! - [`server`]: the `tether` process with a measurement's settings (all three), and the end of its
//!   run (the same two); starting and stopping the process and reading `/proc` are
//!   `tether_testkit`'s, shared with the end-to-end tests;
//! - [`backend`]: a fresh SQLite file or PostgreSQL database per run, and the run over the chosen
//!   backends (`tether-bench` and `tether-bench-mcp`);
//! - [`flags`]: their command-line flags (the same two; `tether-bench-ws` has a syntax of its own
//!   and shares only the check of the `tether` binary);
//! - [`table`]: Markdown tables (the same two) and numbers with thousands separators (all three);
//! - [`http`]: the HTTP client they load the server with (all three).
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
pub mod flags;
pub mod http;
pub mod samples;
pub mod server;
pub mod table;

/// Errors of the benches: anything, with a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
