//! Command-line flags, parsed by hand with the shared helpers (`tether_bench::flags`).

use std::path::PathBuf;
use std::time::Duration;

use tether_bench::backend::Backends;
use tether_bench::flags::{self, Flags, within};

use crate::BoxError;

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
                "--sessions-per-worker" => args.sessions_per_worker = it.number(&flag)?,
                "--pool" => args.pool = it.number(&flag)?,
                "--duration" => args.duration = it.seconds(&flag)?,
                "--warmup" => args.warmup = it.seconds(&flag)?,
                "--rate" => args.rate = it.number(&flag)?,
                "--rate-duration" => args.rate_duration = it.seconds(&flag)?,
                "--sessions" => args.sessions = it.number(&flag)?,
                "--flood" => args.flood = it.number(&flag)?,
                "--flood-addresses" => args.flood_addresses = it.number(&flag)?,
                "--flood-connections" => args.flood_connections = it.number(&flag)?,
                "--no-server" => args.no_server = true,
                other => return Err(flags::unknown(other)),
            }
        }
        // Bounds that keep one run short and its memory small on a 2-core machine.
        within("--concurrency", args.concurrency, 1..=512)?;
        within("--sessions-per-worker", args.sessions_per_worker, 1..=64)?;
        within("--pool", args.pool, 1..=256)?;
        within("--rate", args.rate, 1..=100_000)?;
        if args.sessions > 1_000_000 {
            return Err("--sessions must be at most 1000000".into());
        }
        within("--flood-addresses", args.flood_addresses, 1..=250)?;
        within("--flood-connections", args.flood_connections, 1..=1024)?;
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
