//! Shared pieces of Tether's two load generators, `tether-bench` (the reconnect path) and
//! `tether-bench-ws` (live monitoring).
//!
//! ```
//! use std::time::Duration;
//! use tether_bench::samples::Samples;
//!
//! let mut s = Samples::default();
//! s.push(Duration::from_millis(3));
//! assert_eq!(s.summary().pct_ms(99.0), 3.0);
//! ```

pub mod samples;
