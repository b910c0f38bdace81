//! Command-line flags, parsed by hand like the other two benches.

use std::path::PathBuf;
use std::time::Duration;

use tether_bench::BoxError;

/// Which database backends to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backends {
    /// SQLite only.
    Sqlite,
    /// PostgreSQL only.
    Postgres,
    /// Both, SQLite first.
    Both,
}

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
  -h, --help                 this text
";

fn default_tether() -> PathBuf {
    // `make bench` runs target/release/tether-bench-mcp; the server is built into the same directory.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("tether")))
        .unwrap_or_else(|| PathBuf::from("target/release/tether"))
}

fn number<T: std::str::FromStr>(flag: &str, value: Option<String>) -> Result<T, BoxError> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value
        .parse()
        .map_err(|_| format!("{flag}: {value:?} is not a valid number").into())
}

fn seconds(flag: &str, value: Option<String>) -> Result<Duration, BoxError> {
    let secs: f64 = number(flag, value)?;
    if !(0.0..=600.0).contains(&secs) {
        return Err(format!("{flag}: must be between 0 and 600 seconds").into());
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Args {
    /// Parses the process arguments. `Ok(None)` means help was asked for (and printed).
    ///
    /// # Errors
    /// A message naming the bad flag.
    pub fn parse() -> Result<Option<Self>, BoxError> {
        let mut args = Self {
            tether: default_tether(),
            backends: Backends::Both,
            concurrency: 32,
            pool: 16,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            restore_sessions: 1000,
            restore_concurrency: 1,
            no_activity: false,
            probe_calls: 100,
            restore_keep_alive: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "-h" | "--help" => {
                    print!("{USAGE}");
                    return Ok(None);
                }
                "--tether" => {
                    args.tether = PathBuf::from(it.next().ok_or("--tether needs a path")?);
                }
                "--backend" => {
                    args.backends = match it.next().as_deref() {
                        Some("sqlite") => Backends::Sqlite,
                        Some("postgres") => Backends::Postgres,
                        Some("both") => Backends::Both,
                        other => {
                            return Err(format!(
                                "--backend: {other:?} is not sqlite, postgres or both"
                            )
                            .into());
                        }
                    };
                }
                "--concurrency" => args.concurrency = number(&flag, it.next())?,
                "--pool" => args.pool = number(&flag, it.next())?,
                "--duration" => args.duration = seconds(&flag, it.next())?,
                "--warmup" => args.warmup = seconds(&flag, it.next())?,
                "--restore-sessions" => args.restore_sessions = number(&flag, it.next())?,
                "--restore-concurrency" => args.restore_concurrency = number(&flag, it.next())?,
                "--no-activity" => args.no_activity = true,
                "--probe-calls" => args.probe_calls = number(&flag, it.next())?,
                "--restore-keep-alive" => args.restore_keep_alive = true,
                other => return Err(format!("unknown flag {other:?} (see --help)").into()),
            }
        }
        // Bounds that keep one run short and its memory small on a 2-core machine.
        if !(1..=512).contains(&args.concurrency) {
            return Err("--concurrency must be 1..=512".into());
        }
        if !(1..=256).contains(&args.pool) {
            return Err("--pool must be 1..=256".into());
        }
        if !(1..=100_000).contains(&args.restore_sessions) {
            return Err("--restore-sessions must be 1..=100000".into());
        }
        if !(1..=512).contains(&args.restore_concurrency) {
            return Err("--restore-concurrency must be 1..=512".into());
        }
        if args.probe_calls > 10_000 {
            return Err("--probe-calls must be at most 10000".into());
        }
        if args.duration.is_zero() {
            return Err("--duration must be above 0".into());
        }
        Ok(Some(args))
    }
}
