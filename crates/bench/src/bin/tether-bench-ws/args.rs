//! Command-line flags. Hand-parsed: the crate has no argument parser and this needs no more.

use std::path::PathBuf;
use std::time::Duration;

use crate::BoxError;

const HELP: &str = "\
tether-bench-ws: live-monitoring benchmark of the `tether` binary (dashboard WebSocket).

Usage: tether-bench-ws [FLAGS]

  --tether PATH             the server binary [target/release/tether]
  --dashboards N,N          dashboard counts for latency, memory and ramp [1000,10000]
  --events K                session creations per latency round [20]
  --spacing-ms MS           time between two creations [200]
  --pairs P                 rounds without and with the stalled dashboard, alternating [2]
  --client-threads T        threads holding the dashboards, one actix System each [2]
  --handshakes H            WebSocket handshakes in flight during a ramp (all threads) [64]
  --settle-ms MS            pause before each measured health window [2000]
  --stall-backlog B         events the stalled dashboard must replay (so it blocks) [16000]
  --stall-queue Q           queue capacity for the extra run where the stalled one is dropped
                            (0: skip that run) [8]
  --health-dashboards N,N   dashboard counts for the health-tick cost [0,1,1000,10000]
  --health-interval-ms MS   health interval for that phase [250]
  --health-window-s S       measured quiet window per count [10]
  --health-sessions S       sessions in the database during that phase [0]
  --pg-events E             creations for the cross-instance run [200]
  --pg-spacing-ms MS        time between two of them [50]
  --health full|summary     which health_update the dashboards ask for (?health=) [full]
  --phases LIST             any of latency,drop,health,pg [latency,drop,health,pg]
  --pin                     run this process on CPU 0 and every server on CPU 1 (with `taskset`),
                            so that the server's figures are its own, not shared with the bench
  -h, --help                this text

PostgreSQL (phase pg) needs TETHER_TEST_POSTGRES_URL, an admin URL allowed to CREATE DATABASE;
without it the phase is skipped with a loud message. 10,000 dashboards need `ulimit -n` above
about 10,100 in the shell that starts the bench (the server inherits it).";

/// Which phases run.
#[derive(Clone, Copy, Debug)]
pub struct Phases {
    /// Steps 1–4: ramp, memory, latency with and without a stalled dashboard.
    pub latency: bool,
    /// Step 4b: a small queue, so the stalled dashboard is dropped.
    pub drop: bool,
    /// Step 5: health tick cost.
    pub health: bool,
    /// Step 7: cross-instance latency on PostgreSQL.
    pub pg: bool,
}

/// Every flag, parsed.
#[derive(Clone, Debug)]
pub struct Args {
    /// The `tether` binary.
    pub tether: PathBuf,
    /// Dashboard counts for steps 1–4.
    pub dashboards: Vec<usize>,
    /// Creations per latency round.
    pub events: usize,
    /// Time between two creations.
    pub spacing: Duration,
    /// Round pairs (without, with the stalled dashboard).
    pub pairs: usize,
    /// Client threads.
    pub client_threads: usize,
    /// Handshakes in flight during a ramp.
    pub handshakes: usize,
    /// Pause after a ramp.
    pub settle: Duration,
    /// Events seeded for the stalled dashboard's replay.
    pub stall_backlog: usize,
    /// Queue capacity of the drop run.
    pub stall_queue: usize,
    /// Dashboard counts for the health phase.
    pub health_dashboards: Vec<usize>,
    /// Health interval of that phase.
    pub health_interval: Duration,
    /// Quiet window per count.
    pub health_window: Duration,
    /// Sessions present during that phase.
    pub health_sessions: usize,
    /// Creations of the cross-instance run.
    pub pg_events: usize,
    /// Time between two of them.
    pub pg_spacing: Duration,
    /// Dashboards ask for `?health=summary` (counts-only health updates) instead of the full list.
    pub health_summary: bool,
    /// Which phases run.
    pub phases: Phases,
    /// The bench on CPU 0, the servers on CPU 1.
    pub pin: bool,
    /// The command line as given, for the report.
    pub command: String,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            tether: PathBuf::from("target/release/tether"),
            dashboards: vec![1000, 10_000],
            events: 20,
            spacing: Duration::from_millis(200),
            pairs: 2,
            client_threads: 2,
            handshakes: 64,
            settle: Duration::from_millis(2000),
            stall_backlog: 16_000,
            stall_queue: 8,
            health_dashboards: vec![0, 1, 1000, 10_000],
            health_interval: Duration::from_millis(250),
            health_window: Duration::from_secs(10),
            health_sessions: 0,
            pg_events: 200,
            pg_spacing: Duration::from_millis(50),
            health_summary: false,
            phases: Phases {
                latency: true,
                drop: true,
                health: true,
                pg: true,
            },
            pin: false,
            command: String::new(),
        }
    }
}

fn number(flag: &str, v: &str) -> Result<usize, BoxError> {
    v.replace('_', "")
        .parse()
        .map_err(|_| format!("{flag}: not a number: {v:?}").into())
}

fn list(flag: &str, v: &str) -> Result<Vec<usize>, BoxError> {
    v.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| number(flag, s.trim()))
        .collect()
}

fn millis(flag: &str, v: &str) -> Result<Duration, BoxError> {
    Ok(Duration::from_millis(number(flag, v)? as u64))
}

impl Args {
    /// Parses `std::env::args`; `None` after printing the help.
    ///
    /// # Errors
    /// An unknown flag, a missing or malformed value, or a value out of range.
    pub fn parse() -> Result<Option<Self>, BoxError> {
        let raw: Vec<String> = std::env::args().collect();
        let mut a = Args {
            command: raw.join(" "),
            ..Args::default()
        };
        let mut it = raw.into_iter().skip(1);
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            if flag == "-h" || flag == "--help" {
                println!("{HELP}");
                return Ok(None);
            }
            if flag == "--pin" {
                a.pin = true;
                continue;
            }
            let v = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .ok_or_else(|| format!("{flag} needs a value (see --help)"))?,
            };
            let f = flag.as_str();
            match f {
                "--tether" => a.tether = PathBuf::from(v),
                "--dashboards" => a.dashboards = list(f, &v)?,
                "--events" => a.events = number(f, &v)?,
                "--spacing-ms" => a.spacing = millis(f, &v)?,
                "--pairs" => a.pairs = number(f, &v)?,
                "--client-threads" => a.client_threads = number(f, &v)?,
                "--handshakes" => a.handshakes = number(f, &v)?,
                "--settle-ms" => a.settle = millis(f, &v)?,
                "--stall-backlog" => a.stall_backlog = number(f, &v)?,
                "--stall-queue" => a.stall_queue = number(f, &v)?,
                "--health-dashboards" => a.health_dashboards = list(f, &v)?,
                "--health-interval-ms" => a.health_interval = millis(f, &v)?,
                "--health-window-s" => {
                    a.health_window = Duration::from_secs(number(f, &v)? as u64);
                }
                "--health-sessions" => a.health_sessions = number(f, &v)?,
                "--pg-events" => a.pg_events = number(f, &v)?,
                "--pg-spacing-ms" => a.pg_spacing = millis(f, &v)?,
                "--health" => {
                    a.health_summary = match v.as_str() {
                        "full" => false,
                        "summary" => true,
                        _ => return Err(format!("{f}: {v:?} is not full or summary").into()),
                    };
                }
                "--phases" => {
                    let mut p = Phases {
                        latency: false,
                        drop: false,
                        health: false,
                        pg: false,
                    };
                    for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        match name {
                            "latency" => p.latency = true,
                            "drop" => p.drop = true,
                            "health" => p.health = true,
                            "pg" => p.pg = true,
                            other => {
                                return Err(format!("--phases: unknown phase {other:?}").into());
                            }
                        }
                    }
                    a.phases = p;
                }
                other => return Err(format!("unknown flag {other} (see --help)").into()),
            }
        }
        a.check()?;
        Ok(Some(a))
    }

    /// Bounds that keep every loop finite and the run on one machine.
    fn check(&self) -> Result<(), BoxError> {
        let limit = 50_000;
        if self
            .dashboards
            .iter()
            .chain(&self.health_dashboards)
            .any(|&n| n > limit)
        {
            return Err(format!("at most {limit} dashboards").into());
        }
        if self.events == 0 || self.events > 10_000 || self.pg_events > 10_000 {
            return Err("--events must be 1..=10000 and --pg-events at most 10000".into());
        }
        if !(1..=20).contains(&self.pairs) {
            return Err("--pairs must be 1..=20".into());
        }
        if !(1..=64).contains(&self.client_threads) || !(1..=4096).contains(&self.handshakes) {
            return Err("--client-threads must be 1..=64 and --handshakes 1..=4096".into());
        }
        if self.stall_backlog > 200_000 || self.health_sessions > 100_000 {
            return Err("--stall-backlog at most 200000, --health-sessions at most 100000".into());
        }
        if self.health_interval.is_zero() || self.health_window.is_zero() {
            return Err("--health-interval-ms and --health-window-s must be positive".into());
        }
        if self.health_window > Duration::from_secs(600) || self.spacing > Duration::from_secs(60) {
            return Err("--health-window-s at most 600, --spacing-ms at most 60000".into());
        }
        Ok(())
    }

    /// The largest dashboard count of steps 1–4.
    pub fn max_dashboards(&self) -> usize {
        self.dashboards.iter().copied().max().unwrap_or(0)
    }
}
