//! Command-line flags, parsed by hand (one binary, a dozen flags: no parser crate needed).

use std::path::PathBuf;
use std::time::Duration;

use crate::BoxError;

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
    /// Concurrent workers in the closed-loop runs (bare statement and saturation alike).
    pub concurrency: usize,
    /// Sessions each worker owns and cycles through.
    pub sessions_per_worker: usize,
    /// Pool size of the server and of the bare-statement `Database`.
    pub pool: usize,
    /// Length of each measured closed-loop run.
    pub duration: Duration,
    /// Unmeasured run before each closed-loop run (connections, caches, JIT-free but still warm).
    pub warmup: Duration,
    /// Open-loop request rate, per second.
    pub rate: u32,
    /// Length of the open-loop run.
    pub rate_duration: Duration,
    /// Sessions in the database (created over HTTP before the measurements).
    pub sessions: usize,
    /// Garbage reconnects in the flood phase (0 skips it).
    pub flood: u64,
    /// Source addresses of the flood.
    pub flood_addresses: usize,
    /// Connections of the flood.
    pub flood_connections: usize,
    /// Skip the HTTP phases (no `tether` binary needed): seed the database directly, measure only the
    /// bare statement.
    pub no_server: bool,
}

const USAGE: &str = "\
tether-bench: load generator for Tether's reconnect path

USAGE: tether-bench [FLAGS]

  --tether PATH              the tether binary (default: `tether` beside this binary)
  --backend sqlite|postgres|both   (default both; PostgreSQL needs TETHER_TEST_POSTGRES_URL,
                             an admin URL such as postgres://postgres@127.0.0.1:5432/test)
  --concurrency N            closed-loop workers (default 32)
  --sessions-per-worker N    sessions each worker cycles through (default 4)
  --pool N                   database pool size, server and bare statement (default 16)
  --duration SECS            each measured closed-loop run (default 10)
  --warmup SECS              unmeasured run before each closed-loop run (default 1)
  --rate N                   open-loop requests per second (default 1000)
  --rate-duration SECS       open-loop run length (default 10)
  --sessions N               sessions in the database (default 10000)
  --flood N                  garbage reconnects sent while a legitimate client is measured, on a
                             server with the shipped limits (default 200000; 0 skips the phase)
  --flood-addresses N        loopback source addresses of the flood, 127.0.0.2 on (default 4)
  --flood-connections N      connections of the flood (default 64)
  --no-server                bare statement only, database seeded directly
  -h, --help                 this text
";

fn default_tether() -> PathBuf {
    // `make bench` runs target/release/tether-bench; the server is built into the same directory.
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
            sessions_per_worker: 4,
            pool: 16,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            rate: 1000,
            rate_duration: Duration::from_secs(10),
            sessions: 10_000,
            flood: 200_000,
            flood_addresses: 4,
            flood_connections: 64,
            no_server: false,
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
                "--sessions-per-worker" => args.sessions_per_worker = number(&flag, it.next())?,
                "--pool" => args.pool = number(&flag, it.next())?,
                "--duration" => args.duration = seconds(&flag, it.next())?,
                "--warmup" => args.warmup = seconds(&flag, it.next())?,
                "--rate" => args.rate = number(&flag, it.next())?,
                "--rate-duration" => args.rate_duration = seconds(&flag, it.next())?,
                "--sessions" => args.sessions = number(&flag, it.next())?,
                "--flood" => args.flood = number(&flag, it.next())?,
                "--flood-addresses" => args.flood_addresses = number(&flag, it.next())?,
                "--flood-connections" => args.flood_connections = number(&flag, it.next())?,
                "--no-server" => args.no_server = true,
                other => return Err(format!("unknown flag {other:?} (see --help)").into()),
            }
        }
        // Bounds that keep one run short and its memory small on a 2-core machine.
        if !(1..=512).contains(&args.concurrency) {
            return Err("--concurrency must be 1..=512".into());
        }
        if !(1..=64).contains(&args.sessions_per_worker) {
            return Err("--sessions-per-worker must be 1..=64".into());
        }
        if !(1..=256).contains(&args.pool) {
            return Err("--pool must be 1..=256".into());
        }
        if !(1..=100_000).contains(&args.rate) {
            return Err("--rate must be 1..=100000".into());
        }
        if args.sessions > 1_000_000 {
            return Err("--sessions must be at most 1000000".into());
        }
        if !(1..=250).contains(&args.flood_addresses) {
            return Err("--flood-addresses must be 1..=250".into());
        }
        if !(1..=1024).contains(&args.flood_connections) {
            return Err("--flood-connections must be 1..=1024".into());
        }
        if args.duration.is_zero() {
            return Err("--duration must be above 0".into());
        }
        Ok(Some(args))
    }

    /// Sessions that the closed-loop workers own, together.
    pub fn worker_sessions(&self) -> usize {
        self.concurrency * self.sessions_per_worker
    }
}
