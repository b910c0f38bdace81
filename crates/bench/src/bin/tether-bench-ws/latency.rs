//! Steps 1–4 at one dashboard count, on a server of its own: the backlog for the stalled
//! dashboard, the ramp (handshake rate), memory per dashboard, and the latency rounds without and
//! with a dashboard that never reads.

use std::time::{Duration, Instant};

use crate::args::Args;
use crate::fleet::{self, Fleet};
use crate::http::Api;
use crate::report::{LatencyRun, Rss, Stall};
use crate::rounds::{Raw, event_maxima, round, single};
use tether_testkit::procfs::{self, Pid};

use crate::server::{self, Server, TempDir};
use crate::{API_KEY, BoxError, seed, sqlite_server};

/// How long the stalled dashboard's replay gets to fill the pipes before the round.
const STALL_FILL: Duration = Duration::from_secs(1);
/// Longest wait for a `health_update` before a round (the server's default interval is 5 s).
const TICK_WAIT: Duration = Duration::from_secs(7);
/// Pause after a ramp before RSS is read (short: the next tick must not have come yet).
const CONNECTED_SETTLE: Duration = Duration::from_secs(1);
/// Pause after a tick has reached every dashboard before RSS is read again.
const TICK_SETTLE: Duration = Duration::from_millis(500);
/// Dashboards opened before the measured ramp (at most a tenth of N).
const WARM_DASHBOARDS: usize = 100;
/// Sessions created after the stall backlog, so that `health_update` lists ordinary ones.
const PAD_SESSIONS: usize = 50;

/// Steps 1–4 at `n` dashboards on a server of its own.
pub async fn latency_run(args: &Args, fleet: &Fleet, n: usize, queue: Option<usize>) -> LatencyRun {
    let mut run = LatencyRun {
        n,
        queue,
        ..LatencyRun::default()
    };
    let label = match queue {
        Some(q) => format!("n{n}-q{q}"),
        None => format!("n{n}"),
    };
    let dir = match TempDir::new(&label) {
        Ok(d) => d,
        Err(e) => {
            run.error = Some(e.to_string());
            return run;
        }
    };
    if let Err(e) = seed_backlog(args, &dir, &mut run) {
        run.error = Some(e.to_string());
        return run;
    }
    let env = queue
        .map(|q| vec![("TETHER_WS__QUEUE_CAPACITY", q.to_string())])
        .unwrap_or_default();
    let mut server = match sqlite_server(args, &dir, env) {
        Ok(s) => s,
        Err(e) => {
            run.error = Some(e.to_string());
            return run;
        }
    };
    if let Err(e) = latency_steps(args, fleet, &server, &label, &mut run).await {
        eprintln!("  failed: {e}");
        run.error = Some(e.to_string());
    }
    if let Err(e) = fleet.close_all().await {
        eprintln!("  could not close the dashboards: {e}");
    }
    let stopping = Instant::now();
    run.clean_exit = server::stop(&mut server);
    run.stop_time = stopping.elapsed();
    run.server_log = (server.stderr_lines(), server.stderr_tail());
    run
}

/// Writes the stalled dashboard's backlog into the database before its server starts, so that no
/// dashboard receives it live. Ids and client types of the longest allowed length (128): fewer rows
/// for the same bytes. Then ordinary sessions, so that `health_update` lists those.
fn seed_backlog(args: &Args, dir: &TempDir, run: &mut LatencyRun) -> Result<(), BoxError> {
    if args.stall_backlog == 0 {
        return Ok(());
    }
    let ids: Vec<String> = (0..args.stall_backlog)
        .map(|i| format!("stall-{i:06}-{}", "x".repeat(115)))
        .collect();
    let client_type = format!("stall-backlog-{}", "y".repeat(114));
    let bytes: u64 = ids
        .iter()
        .enumerate()
        .map(|(i, id)| event_bytes(i + 1, id, &client_type))
        .sum();
    let t = Instant::now();
    eprintln!("  seeding {} backlog sessions", ids.len());
    let count = ids.len();
    seed::sessions(&dir.sqlite_url(), ids, &client_type)?;
    let pad = (0..PAD_SESSIONS).map(|i| format!("pad-{i}")).collect();
    seed::sessions(&dir.sqlite_url(), pad, "bench")?;
    eprintln!("    {:.1} s", t.elapsed().as_secs_f64());
    run.backlog = (count + PAD_SESSIONS, bytes);
    Ok(())
}

async fn latency_steps(
    args: &Args,
    fleet: &Fleet,
    server: &Server,
    label: &str,
    run: &mut LatencyRun,
) -> Result<(), BoxError> {
    let api = Api::new(server.base_url(), API_KEY);
    let ws = server::ws_url(server, args.health_summary);
    let rss_kib = || procfs::memory_kib(Pid::Of(server.pid())).map(|m| m.rss);
    let n = run.n;
    let start = rss_kib()?;
    // A few dashboards first: what the very first connections allocate once (worker buffers,
    // allocator arenas) is then outside the marginal figure, which counts only the rest. Their
    // first tick also starts a 5 s stretch without one, in which the rest connect, so that the
    // "just connected" reading sees no message at all.
    let warm = (n / 10).clamp(1, WARM_DASHBOARDS).min(n);
    expect_all(
        fleet
            .connect(&ws, API_KEY, 0, warm, args.handshakes)
            .await?,
    )?;
    fleet.after_tick(warm, TICK_WAIT).await;
    let frames = fleet.health_frames();
    let before = rss_kib()?;
    eprintln!(
        "  opening {} more dashboards ({} handshakes in flight)",
        n - warm,
        args.handshakes
    );
    let ramp = fleet
        .connect(&ws, API_KEY, 0, n - warm, args.handshakes)
        .await?;
    eprintln!(
        "    {} ok, {} failed in {:.2} s: {:.0}/s",
        ramp.ok,
        ramp.failed,
        ramp.wall.as_secs_f64(),
        ramp.rate()
    );
    run.ramp = Some(expect_all(ramp)?);
    tokio::time::sleep(CONNECTED_SETTLE).await;
    let connected = rss_kib()?;
    let clean = fleet.health_frames() == frames;
    run.counted = Some(api.dashboards().await?);
    // Every dashboard gets a `health_update` every 5 s, and actix-http keeps a connection's grown
    // write buffer (up to 128 KiB): an idle dashboard's memory is what it holds after one.
    run.tick_spread = fleet.after_tick(n, TICK_WAIT).await;
    tokio::time::sleep(TICK_SETTLE).await;
    let after = rss_kib()?;
    run.rss = Some(Rss {
        start,
        warm: before,
        connected,
        connected_clean: clean,
        after_tick: after,
    });
    run.warm = warm;
    eprintln!(
        "    RSS {start} → {before} → {connected} → {after} KiB (start, warm, connected{}, after a \
         tick); server counts {:?} dashboards",
        if clean { "" } else { " but a tick had come" },
        run.counted
    );

    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(0))
        .timeout(Duration::from_secs(15))
        .finish();
    let stage = Stage {
        args,
        fleet,
        server,
        api: &api,
        client: &client,
        ws: &ws,
        n,
        label,
    };
    let (mut base, mut stalled) = (Raw::default(), Raw::default());
    let (mut counted, mut queues) = (Vec::new(), None);
    // Rounds alternate without/with, then with/without, and so on: drift over the run (and
    // whatever else the machine does) falls on both sides of the comparison alike.
    for pair in 0..args.pairs {
        eprintln!(
            "  pair {}/{}: {} creations {} ms apart per round",
            pair + 1,
            args.pairs,
            args.events,
            args.spacing.as_millis()
        );
        let order = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for stall in order {
            let r = stage.round(pair, stall, run).await?;
            if stall {
                run.round_p99.1.push(r.p99);
                counted.extend(r.counted);
                queues = queues.or(r.queues);
                stalled.add(r.raw);
            } else {
                run.round_p99.0.push(r.p99);
                base.add(r.raw);
            }
        }
    }
    run.baseline = Some(base.finish());
    run.stall = Some(Stall {
        round: stalled.finish(),
        backlog: run.backlog,
        queues: queues.unwrap_or_default(),
        counted,
        others: fleet.status().await?,
    });
    Ok(())
}

/// What every latency round of one server needs.
struct Stage<'a> {
    args: &'a Args,
    fleet: &'a Fleet,
    server: &'a Server,
    api: &'a Api,
    /// For the stalled dashboard (on this thread, so that nothing ever polls its socket).
    client: &'a awc::Client,
    ws: &'a str,
    n: usize,
    label: &'a str,
}

/// One measured round.
struct Measured {
    raw: Raw,
    p99: f64,
    /// With the stalled dashboard: the server's count with it, and after the round.
    counted: Option<(u64, u64)>,
    /// With the stalled dashboard: the TCP queues once its replay had had time to block.
    queues: Option<server::TcpQueues>,
}

impl Stage<'_> {
    /// A round started right after a tick; with `stall`, an extra dashboard that never reads is
    /// connected first and dropped after the round.
    async fn round(
        &self,
        pair: usize,
        stall: bool,
        run: &mut LatencyRun,
    ) -> Result<Measured, BoxError> {
        let mut stalled = None;
        let (mut queues, mut with) = (None, None);
        if stall {
            // `since=0` makes the server replay the whole backlog to it: its socket fills at once
            // and the server's task for it blocks, which is the state the others must not notice.
            let (_response, socket) = self
                .client
                .ws(format!(
                    "{}{}since=0",
                    self.ws,
                    if self.ws.contains('?') { '&' } else { '?' }
                ))
                .bearer_auth(API_KEY)
                .connect()
                .await
                .map_err(|e| format!("stalled dashboard: {e}"))?;
            stalled = Some(socket);
            tokio::time::sleep(STALL_FILL).await;
            queues = Some(server::tcp_queues(self.server.port())?);
            with = Some(self.api.dashboards().await?);
        }
        self.fleet.after_tick(self.n, TICK_WAIT).await;
        let kind = if stall { "stall" } else { "base" };
        let tag = format!("{}-{kind}{pair}", self.label);
        let probe = Probe::start(self.server)?;
        let groups = [(0, self.n)];
        let raw = single(
            round(
                self.api,
                self.fleet,
                &tag,
                self.args.events,
                self.args.spacing,
                &groups,
            )
            .await?,
        );
        let cores = probe.cores(self.server)?;
        run.other_cores = run.other_cores.max(cores.2);
        let counted = match with {
            Some(w) => Some((w, self.api.dashboards().await?)),
            None => None,
        };
        // Only now: the socket was never read.
        drop(stalled);
        let summary = raw.samples.clone().summary();
        eprintln!(
            "    {}: {}; cores used: server {:.2}, bench {:.2}, others {:.2}{}",
            if stall { "with   " } else { "without" },
            summary.triple(),
            cores.0,
            cores.1,
            cores.2,
            counted.map_or_else(String::new, |(w, a)| format!("; server counts {w} → {a}"))
        );
        eprintln!("      per-event max (ms): {}", event_maxima(&raw));
        if stall {
            wait_for_count(self.api, self.n as u64).await?;
        }
        Ok(Measured {
            p99: summary.pct_ms(99.0),
            raw,
            counted,
            queues,
        })
    }
}

/// Waits (up to 5 s) until the server counts `n` dashboards: a dropped socket's server side
/// ends only once the server notices.
async fn wait_for_count(api: &Api, n: u64) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = api.dashboards().await?;
        if now == n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the server still counts {now} dashboards, expected {n}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU readings at the start of a stretch of time, to tell afterwards what ran besides the server
/// and the bench.
struct Probe {
    server: u64,
    bench: u64,
    machine: u64,
    at: Instant,
}

impl Probe {
    fn start(server: &Server) -> Result<Self, BoxError> {
        Ok(Self {
            server: procfs::cpu_ticks(Pid::Of(server.pid()))?,
            bench: procfs::cpu_ticks(Pid::This)?,
            machine: procfs::machine_busy_ticks()?,
            at: Instant::now(),
        })
    }

    /// Cores, on average, used by (the server, the bench, everything else) since the start.
    fn cores(&self, server: &Server) -> Result<(f64, f64, f64), BoxError> {
        let tick = procfs::clock_ticks() as f64;
        let wall = self.at.elapsed().as_secs_f64().max(1e-3);
        let busy = |now: u64, then: u64| now.saturating_sub(then) as f64 / tick / wall;
        let s = busy(procfs::cpu_ticks(Pid::Of(server.pid()))?, self.server);
        let b = busy(procfs::cpu_ticks(Pid::This)?, self.bench);
        let m = busy(procfs::machine_busy_ticks()?, self.machine);
        Ok((s, b, (m - s - b).max(0.0)))
    }
}

/// The ramp, or an error when a handshake failed.
fn expect_all(ramp: fleet::Ramp) -> Result<fleet::Ramp, BoxError> {
    if ramp.failed > 0 {
        return Err(format!(
            "{} handshakes failed: {}",
            ramp.failed,
            ramp.first_error.as_deref().unwrap_or("")
        )
        .into());
    }
    Ok(ramp)
}

/// Approximate bytes on the wire of the `session_created` message for `id` (frame header included).
fn event_bytes(seq: usize, id: &str, client_type: &str) -> u64 {
    let text = format!(
        r#"{{"type":"session_created","seq":{seq},"timestamp":"2026-01-01T00:00:00.000000Z","session_id":"{id}","data":{{"client_type":"{client_type}","status":"active"}}}}"#
    );
    text.len() as u64 + 4
}
