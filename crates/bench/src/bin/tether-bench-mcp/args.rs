//! Command-line flags, parsed by hand with the shared helpers (`tether_bench::flags`).

use std::path::PathBuf;
use std::time::Duration;

use tether_bench::BoxError;
use tether_bench::backend::Backends;
use tether_bench::flags::{self, Flags, within};

/// Everything the run needs to know.
#[derive(Clone, Debug)]
pub struct Args {
    /// The `tether` binary.
    pub tether: PathBuf,
    /// Backends to measure.
    pub backends: Backends,
    /// Closed-loop workers, each on its own MCP session.
    pub concurrency: usize,
    /// Pool size of the server.
    pub pool: usize,
    /// Length of each measured closed-loop run.
    pub duration: Duration,
    /// Unmeasured run before each closed-loop run.
    pub warmup: Duration,
    /// Sessions created on the first instance and restored on the second.
    pub restore_sessions: usize,
    /// Restores (first calls) in flight at once on the second instance.
    pub restore_concurrency: usize,
    /// Skip the REST `POST /sessions/{id}/activity` loop.
    pub no_activity: bool,
    /// Requests of each one-at-a-time latency probe.
    pub probe_calls: usize,
    /// Restore phase over kept-alive connections instead of a new connection per call.
    pub restore_keep_alive: bool,
    /// MCP sessions the heartbeat phase spreads its requests over (0 skips the phase).
    pub heartbeat_sessions: usize,
}

const USAGE: &str = "\
tether-bench-mcp: load generator for Tether's MCP endpoint (/mcp, tools/call session_info)

USAGE: tether-bench-mcp [FLAGS]

  --tether PATH              the tether binary (default: `tether` beside this binary)
  --backend sqlite|postgres|both   (default both; PostgreSQL needs TETHER_TEST_POSTGRES_URL,
                             an admin URL such as postgres://postgres@127.0.0.1:5432/test)
  --concurrency N            closed-loop workers, one MCP session each (default 32)
  --pool N                   the server's database pool size (default 16)
  --duration SECS            each measured closed-loop run (default 10)
  --warmup SECS              unmeasured run before each closed-loop run (default 1)
  --restore-sessions N       sessions restored on the second instance (default 1000)
  --restore-concurrency N    restores in flight at once (default 1: the unloaded cost)
  --no-activity              skip the REST POST /sessions/{id}/activity loop
  --probe-calls N            one-at-a-time requests per latency probe (default 100; 0 skips)
  --restore-keep-alive       restore phase on kept-alive connections (default: a new
                             connection per call, see BENCHMARKS.md)
  --heartbeat-sessions N     heartbeats (MCP requests, each activity) on one session, then
                             spread over N sessions, with the activity writes they cost
                             (default 10000; 0 skips)
  -h, --help                 this text
";

impl Args {
    /// Parses the process arguments. `Ok(None)` means help was asked for (and printed).
    ///
    /// # Errors
    /// A message naming the bad flag.
    pub fn parse() -> Result<Option<Self>, BoxError> {
        let mut args = Self {
            tether: flags::default_tether(),
            backends: Backends::Both,
            concurrency: 32,
            pool: 16,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            restore_sessions: 1000,
            restore_concurrency: 1,
            no_activity: false,
            heartbeat_sessions: 10_000,
            probe_calls: 100,
            restore_keep_alive: false,
        };
        let mut it = Flags::from_env();
        while let Some(flag) = it.next_flag() {
            match flag.as_str() {
                "-h" | "--help" => {
                    print!("{USAGE}");
                    return Ok(None);
                }
                "--tether" => args.tether = it.path(&flag)?,
                "--backend" => args.backends = it.backends()?,
                "--concurrency" => args.concurrency = it.number(&flag)?,
                "--pool" => args.pool = it.number(&flag)?,
                "--duration" => args.duration = it.seconds(&flag)?,
                "--warmup" => args.warmup = it.seconds(&flag)?,
                "--restore-sessions" => args.restore_sessions = it.number(&flag)?,
                "--restore-concurrency" => args.restore_concurrency = it.number(&flag)?,
                "--no-activity" => args.no_activity = true,
                "--probe-calls" => args.probe_calls = it.number(&flag)?,
                "--restore-keep-alive" => args.restore_keep_alive = true,
                "--heartbeat-sessions" => args.heartbeat_sessions = it.number(&flag)?,
                other => return Err(flags::unknown(other)),
            }
        }
        // Bounds that keep one run short and its memory small on a 2-core machine.
        within("--concurrency", args.concurrency, 1..=512)?;
        within("--pool", args.pool, 1..=256)?;
        within("--restore-sessions", args.restore_sessions, 1..=100_000)?;
        within("--restore-concurrency", args.restore_concurrency, 1..=512)?;
        within("--heartbeat-sessions", args.heartbeat_sessions, 0..=100_000)?;
        if args.probe_calls > 10_000 {
            return Err("--probe-calls must be at most 10000".into());
        }
        if args.duration.is_zero() {
            return Err("--duration must be above 0".into());
        }
        Ok(Some(args))
    }
}
