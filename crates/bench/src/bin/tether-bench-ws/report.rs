//! What the phases measured, and the Markdown table with the targets.

use std::fmt::Write as _;

use crate::args::Args;
use crate::fleet::{Ramp, Status};
use crate::server::TcpQueues;
use crate::stats::Summary;

/// p99 at the largest dashboard count must stay below this (ms).
pub const P99_TARGET_MS: f64 = 100.0;
/// Resident memory per idle dashboard must stay below this (KiB).
pub const RSS_TARGET_KIB: f64 = 16.0;
/// A stalled dashboard may raise the others' p99 by less than this fraction.
pub const STALL_TARGET: f64 = 0.10;
/// Cross-instance p99 must stay below this (ms).
pub const CROSS_TARGET_MS: f64 = 50.0;
/// The tick cost per dashboard at the largest count may exceed the one at the next count by this
/// factor before the growth counts as more than linear (run-to-run noise is about ±20 %).
pub const LINEAR_SLACK: f64 = 1.5;

/// Server VmRSS (KiB) along the ramp.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    /// Before any dashboard.
    pub start: u64,
    /// After the warm-up dashboards.
    pub warm: u64,
    /// After all N, before any message was sent to them.
    pub connected: u64,
    /// Whether no `health_update` had come before `connected` was read.
    pub connected_clean: bool,
    /// After a `health_update` reached them all.
    pub after_tick: u64,
}

/// One latency round: every (dashboard, event) pair of one group of dashboards.
#[derive(Clone, Debug, Default)]
pub struct Round {
    /// Creations that answered 201.
    pub created: usize,
    /// Dashboards that should have received each event.
    pub receivers: usize,
    /// Latency from just before the request to the frame's arrival.
    pub latency: Summary,
    /// The first failed creation.
    pub create_error: Option<String>,
}

impl Round {
    /// Pairs that never arrived within the drain time.
    pub fn missing(&self) -> usize {
        (self.created * self.receivers).saturating_sub(self.latency.len())
    }
}

/// The same round with one extra dashboard that never reads.
#[derive(Clone, Debug, Default)]
pub struct Stall {
    /// The others' latencies meanwhile.
    pub round: Round,
    /// Events seeded for its replay, and their approximate size on the wire (a lower bound of what
    /// it was to receive).
    pub backlog: (usize, u64),
    /// TCP queues once its first replay had had time to block.
    pub queues: TcpQueues,
    /// Per round: the server's dashboard count with it connected, and after the round.
    pub counted: Vec<(u64, u64)>,
    /// The other dashboards after the round.
    pub others: Status,
}

/// Steps 1–4 at one dashboard count.
#[derive(Clone, Debug, Default)]
pub struct LatencyRun {
    /// Dashboards.
    pub n: usize,
    /// `ws.queue_capacity` (None: the default 256).
    pub queue: Option<usize>,
    /// Opening them.
    pub ramp: Option<Ramp>,
    /// Server RSS before and after (KiB).
    pub rss: Option<Rss>,
    /// Dashboards opened before the measured ramp.
    pub warm: usize,
    /// The server's dashboard count after the ramp.
    pub counted: Option<u64>,
    /// How long the `health_update` before the first round took from the first dashboard to the last.
    pub tick_spread: Option<std::time::Duration>,
    /// Events seeded for the stalled dashboard's replay, and their approximate size on the wire.
    pub backlog: (usize, u64),
    /// Latency without the stalled dashboard.
    pub baseline: Option<Round>,
    /// With it.
    pub stall: Option<Stall>,
    /// The most cores that processes other than the server and the bench used during a round.
    pub other_cores: f64,
    /// p99 (ms) of each round without, and with, the stalled dashboard: the spread among rounds of
    /// one condition is the noise the comparison must be read against.
    pub round_p99: (Vec<f64>, Vec<f64>),
    /// Stderr lines of the server (warnings and errors), and the last ones.
    pub server_log: (usize, Vec<String>),
    /// Whether the server exited with status 0 on SIGTERM, and how long that took.
    pub clean_exit: bool,
    /// See `clean_exit`.
    pub stop_time: std::time::Duration,
    /// What stopped the run early.
    pub error: Option<String>,
}

impl LatencyRun {
    /// RSS growth per dashboard in KiB, once a `health_update` has reached them.
    pub fn kib_per_dashboard(&self) -> Option<f64> {
        let r = self.rss?;
        (self.n > 0).then(|| r.after_tick.saturating_sub(r.start) as f64 / self.n as f64)
    }

    /// RSS growth per dashboard in KiB just after connecting, before any message.
    pub fn connected_kib(&self) -> Option<f64> {
        let r = self.rss?;
        (self.n > 0).then(|| r.connected.saturating_sub(r.start) as f64 / self.n as f64)
    }

    /// RSS growth per dashboard in KiB after a tick, leaving out the warm-up dashboards.
    pub fn marginal_kib(&self) -> Option<f64> {
        let r = self.rss?;
        let n = self.n.saturating_sub(self.warm);
        (n > 0).then(|| r.after_tick.saturating_sub(r.warm) as f64 / n as f64)
    }

    /// The largest relative p99 difference between two rounds of the same condition: the noise
    /// floor of the comparison.
    pub fn round_spread(&self) -> f64 {
        [&self.round_p99.0, &self.round_p99.1]
            .iter()
            .filter_map(|v| {
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(0.0, f64::max);
                (v.len() > 1 && lo > 0.0).then(|| (hi - lo) / lo)
            })
            .fold(0.0, f64::max)
    }

    /// Relative p99 change caused by the stalled dashboard.
    pub fn stall_change(&self) -> Option<f64> {
        let base = self.baseline.as_ref()?.latency.pct_ms(99.0);
        let stalled = self.stall.as_ref()?.round.latency.pct_ms(99.0);
        (base > 0.0).then(|| (stalled - base) / base)
    }
}

/// Step 5 at one dashboard count.
#[derive(Clone, Debug, Default)]
pub struct HealthPoint {
    /// Dashboards.
    pub n: usize,
    /// Server CPU seconds in the window (utime + stime).
    pub cpu: f64,
    /// The same from the threads' schedstat (finer).
    pub sched: f64,
    /// The window's length in seconds.
    pub window: f64,
    /// Ticks in the window: `health_update` frames received divided by `n` (nominal when `n` = 0).
    pub ticks: f64,
    /// CPU seconds of the bench itself in the window.
    pub bench_cpu: f64,
    /// Busy CPU seconds of the whole machine in the window.
    pub machine: f64,
    /// The server's dashboard count after the window, and the dashboards still open.
    pub counted: u64,
    /// Open dashboards on the client side.
    pub open: usize,
}

impl HealthPoint {
    /// Server CPU per tick in µs.
    pub fn per_tick_us(&self) -> f64 {
        if self.ticks > 0.0 {
            self.cpu / self.ticks * 1e6
        } else {
            0.0
        }
    }

    /// The same from schedstat.
    pub fn per_tick_sched_us(&self) -> f64 {
        if self.ticks > 0.0 {
            self.sched / self.ticks * 1e6
        } else {
            0.0
        }
    }
}

/// Step 7.
#[derive(Clone, Debug, Default)]
pub struct Cross {
    /// A dashboard on the instance that took the requests.
    pub local: Round,
    /// A dashboard on the other instance.
    pub remote: Round,
    /// Per event, B's arrival minus A's, in µs, sorted.
    pub lag_us: Vec<i64>,
}

/// Everything measured.
#[derive(Default)]
pub struct Report {
    /// Steps 1–4 per dashboard count.
    pub runs: Vec<LatencyRun>,
    /// Step 4 again with a small queue.
    pub drop_run: Option<LatencyRun>,
    /// Step 5.
    pub health: Option<Result<Vec<HealthPoint>, String>>,
    /// Step 7 (`Err` holds why it failed or was skipped).
    pub cross: Option<Result<Cross, String>>,
}

fn verdict(pass: bool) -> &'static str {
    if pass { "**PASS**" } else { "**MISS**" }
}

/// A count with thousands separators (the benches' shared way).
fn thousands(n: usize) -> String {
    tether_bench::table::thousands(n as f64)
}

fn kib(k: u64) -> String {
    if k >= 1024 {
        format!("{:.1} MiB", k as f64 / 1024.0)
    } else {
        format!("{k} KiB")
    }
}

fn list_ms(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.1}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn round_cell(r: &Round) -> String {
    let mut s = format!(
        "{} ({} pairs",
        r.latency.triple(),
        thousands(r.latency.len())
    );
    if r.missing() > 0 {
        let _ = write!(s, ", **{} missing**", thousands(r.missing()));
    }
    if let Some(e) = &r.create_error {
        let _ = write!(s, ", a creation failed: {e}");
    }
    s.push(')');
    s
}

impl Report {
    /// The run whose numbers the targets are judged on: the largest dashboard count.
    fn judged(&self) -> Option<&LatencyRun> {
        self.runs
            .iter()
            .filter(|r| r.error.is_none())
            .max_by_key(|r| r.n)
    }

    /// The Markdown table and the notes under it.
    pub fn markdown(&self, args: &Args) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "| step | measurement | result | target | verdict |");
        let _ = writeln!(t, "|---|---|---|---|---|");
        let judged_n = self.judged().map(|r| r.n);
        for r in &self.runs {
            self.latency_rows(&mut t, r, judged_n == Some(r.n));
        }
        if let Some(r) = &self.drop_run {
            self.latency_rows(&mut t, r, false);
        }
        self.health_rows(&mut t, args);
        match &self.cross {
            Some(Ok(c)) => {
                let _ = writeln!(
                    t,
                    "| 7 | cross-instance delivery, PostgreSQL: created on A, dashboard on B, p50 / p99 / max | {} | p99 < {CROSS_TARGET_MS:.0} ms | {} |",
                    round_cell(&c.remote),
                    verdict(
                        c.remote.missing() == 0 && c.remote.latency.pct_ms(99.0) < CROSS_TARGET_MS
                    )
                );
                let _ = writeln!(
                    t,
                    "| 7 | same events, dashboard on A (same instance), p50 / p99 / max | {} | — | — |",
                    round_cell(&c.local)
                );
                let pick = |p: f64| {
                    let idx = ((p / 100.0 * c.lag_us.len() as f64).ceil() as usize)
                        .clamp(1, c.lag_us.len().max(1))
                        - 1;
                    c.lag_us.get(idx).map_or(0.0, |&us| us as f64 / 1000.0)
                };
                let _ = writeln!(
                    t,
                    "| 7 | per event, arrival on B minus arrival on A: p50 / p99 / max | {:.2} / {:.2} / {:.2} ms ({} events) | — | — |",
                    pick(50.0),
                    pick(99.0),
                    pick(100.0),
                    c.lag_us.len()
                );
            }
            Some(Err(e)) => {
                let _ = writeln!(
                    t,
                    "| 7 | cross-instance delivery, PostgreSQL | not measured: {e} | p99 < {CROSS_TARGET_MS:.0} ms | **MISS** (not run) |"
                );
            }
            None => {}
        }
        t
    }

    fn latency_rows(&self, t: &mut String, r: &LatencyRun, judged: bool) {
        let n = thousands(r.n);
        let queue = r
            .queue
            .map_or_else(String::new, |q| format!(", queue capacity {q}"));
        if let Some(e) = &r.error {
            let _ = writeln!(
                t,
                "| 1–4 | N = {n}{queue} | **failed**: {e} | — | **MISS** |"
            );
        }
        if let Some(ramp) = &r.ramp {
            let s = ramp.handshakes.clone().summary();
            let mut cell = format!(
                "{:.0} handshakes/s ({} after the first {} in {:.2} s, {} in flight; handshake p50 / p99 {:.1} / {:.1} ms",
                ramp.rate(),
                thousands(ramp.ok),
                r.warm,
                ramp.wall.as_secs_f64(),
                ramp.in_flight,
                s.pct_ms(50.0),
                s.pct_ms(99.0)
            );
            if ramp.failed > 0 {
                let _ = write!(
                    cell,
                    "; **{} failed**: {}",
                    ramp.failed,
                    ramp.first_error.as_deref().unwrap_or("")
                );
            }
            cell.push(')');
            let _ = writeln!(
                t,
                "| 3 | handshakes accepted, N = {n}{queue} | {cell} | — | — |"
            );
        }
        if r.queue.is_none()
            && let (Some(rss), Some(per)) = (r.rss, r.kib_per_dashboard())
        {
            let target = if judged {
                format!("< {RSS_TARGET_KIB:.0} KiB")
            } else {
                "—".into()
            };
            let v = if judged {
                verdict(per < RSS_TARGET_KIB)
            } else {
                "—"
            };
            let _ = writeln!(
                t,
                "| 2 | RSS per idle dashboard, N = {n} | {per:.1} KiB once a `health_update` reached them (VmRSS {} → {}; marginal after the first {}: {:.1} KiB); {:.1} KiB just connected{} (→ {}) | {target} | {v} |",
                kib(rss.start),
                kib(rss.after_tick),
                r.warm,
                r.marginal_kib().unwrap_or(0.0),
                r.connected_kib().unwrap_or(0.0),
                if rss.connected_clean {
                    ", before any message"
                } else {
                    " (**a tick had already come**)"
                },
                kib(rss.connected)
            );
        }
        if let Some(b) = &r.baseline {
            let target = if judged {
                format!("p99 < {P99_TARGET_MS:.0} ms")
            } else {
                "—".into()
            };
            let v = if judged {
                verdict(b.missing() == 0 && b.latency.pct_ms(99.0) < P99_TARGET_MS)
            } else {
                "—"
            };
            let _ = writeln!(
                t,
                "| 1 | delivery latency, N = {n}{queue}, p50 / p99 / max | {}; other processes used at most {:.2} cores during a round | {target} | {v} |",
                round_cell(b),
                r.other_cores
            );
        }
        let (lines, tail) = &r.server_log;
        let log = match tail.last() {
            Some(last) => format!("**{lines} lines on stderr**, the last: `{last}`"),
            None => "nothing on stderr at `warn`".to_owned(),
        };
        let exit = if r.clean_exit {
            format!("exited 0 {:.1} s after SIGTERM", r.stop_time.as_secs_f64())
        } else {
            "**did not exit 0 on SIGTERM**".to_owned()
        };
        let _ = writeln!(
            t,
            "| — | server behaviour, N = {n}{queue} | {log}; {exit} | — | — |"
        );
        if let Some(spread) = r.tick_spread {
            let _ = writeln!(
                t,
                "| 1 | `health_update` fan-out (first → last dashboard), N = {n}{queue} | {:.1} ms | — | — |",
                spread.as_secs_f64() * 1e3
            );
        }
        if let (Some(s), Some(change)) = (&r.stall, r.stall_change()) {
            let dropped = s.counted.iter().filter(|(w, a)| a + 1 == *w).count();
            let counts = s
                .counted
                .iter()
                .map(|(w, a)| format!("{w} → {a}"))
                .collect::<Vec<_>>()
                .join(", ");
            let fate = format!(
                "the stalled one was dropped during {dropped} of {} rounds (server count {counts})",
                s.counted.len()
            );
            let mut others = String::new();
            if s.others.closed_by_server + s.others.lost > 0 {
                let _ = write!(
                    others,
                    "; **{} other dashboards closed** ({})",
                    s.others.closed_by_server + s.others.lost,
                    s.others.last_end.as_deref().unwrap_or("")
                );
            }
            let buffered = s.queues.server_send + s.queues.client_recv;
            let blocked = if s.backlog.1 > buffered + 64 * 1024 {
                "more than the TCP buffers held, so the server's task for it was blocked"
            } else {
                "**all of it fit in the TCP buffers: the server's task for it may not have blocked**"
            };
            let _ = writeln!(
                t,
                "| 4 | + 1 never-reading dashboard, N = {n}{queue}: others' p50 / p99 / max | {}; p99 {:+.1} % (per round: without {}, with {} ms; rounds of one condition differ by up to {:.0} %); {fate}; its backlog {} events ≈ {}, {blocked} (TCP queues: server send {}, client receive {}){others} | p99 change < {:.0} % | {} |",
                round_cell(&s.round),
                change * 100.0,
                list_ms(&r.round_p99.0),
                list_ms(&r.round_p99.1),
                r.round_spread() * 100.0,
                thousands(s.backlog.0),
                kib(s.backlog.1 / 1024),
                kib(s.queues.server_send / 1024),
                kib(s.queues.client_recv / 1024),
                STALL_TARGET * 100.0,
                verdict(change < STALL_TARGET && s.round.missing() == 0)
            );
        }
    }

    fn health_rows(&self, t: &mut String, args: &Args) {
        let points = match &self.health {
            None => return,
            Some(Err(e)) => {
                let _ = writeln!(
                    t,
                    "| 5 | health tick cost | **failed**: {e} | — | **MISS** |"
                );
                return;
            }
            Some(Ok(p)) => p,
        };
        let interval = args.health_interval.as_millis();
        let idle = points.iter().find(|p| p.n == 0);
        let one = points.iter().find(|p| p.n == 1);
        for p in points {
            let mut cell = if p.n == 0 {
                format!(
                    "{:.1} ms CPU in {:.1} s: no tick runs without dashboards; {:.0} µs per nominal tick (idle baseline)",
                    p.cpu * 1e3,
                    p.window,
                    p.cpu / (p.window / args.health_interval.as_secs_f64()) * 1e6
                )
            } else {
                let mut c = format!(
                    "{:.0} µs per tick (schedstat {:.0} µs; {:.0} ticks, {:.0} ms CPU in {:.1} s)",
                    p.per_tick_us(),
                    p.per_tick_sched_us(),
                    p.ticks,
                    p.cpu * 1e3,
                    p.window
                );
                if p.n > 1 {
                    let _ = write!(c, "; {:.2} µs per dashboard", p.per_tick_us() / p.n as f64);
                }
                c
            };
            let _ = write!(
                cell,
                "; bench {:.0} % of a core, machine {:.0} % of 2 cores",
                p.bench_cpu / p.window * 100.0,
                p.machine / p.window / 2.0 * 100.0
            );
            if p.counted as usize != p.n || p.open != p.n {
                let _ = write!(
                    cell,
                    "; **server counts {} dashboards, {} open**",
                    p.counted, p.open
                );
            }
            let _ = writeln!(
                t,
                "| 5 | health tick ({interval} ms interval), N = {} | {cell} | — | — |",
                thousands(p.n)
            );
        }
        // The verdict: the cost per tick and dashboard at the two largest counts. Linear growth
        // (one send per dashboard) keeps it constant; anything computed per dashboard that grows
        // with N would raise it. The N = 1 window estimates the summary itself, for scale only:
        // one 10 ms CPU tick more or less in that window moves it by 250 µs.
        let mut big: Vec<&HealthPoint> = points.iter().filter(|p| p.n > 1).collect();
        big.sort_by_key(|p| p.n);
        let (Some(prev), Some(top)) = (
            big.len().checked_sub(2).and_then(|i| big.get(i)),
            big.last(),
        ) else {
            let _ = writeln!(
                t,
                "| 5 | health tick growth | needs two counts above 1 | — | — |"
            );
            return;
        };
        let per = |p: &HealthPoint| p.per_tick_us() / p.n as f64;
        let ratio = if per(prev) > 0.0 {
            per(top) / per(prev)
        } else {
            f64::NAN
        };
        let slope = (top.per_tick_us() - prev.per_tick_us()) / (top.n - prev.n) as f64;
        let mut scale = String::new();
        if let Some(one) = one {
            let idle_tick = idle.map_or(0.0, |p| {
                p.cpu / (p.window / args.health_interval.as_secs_f64()) * 1e6
            });
            let _ = write!(
                scale,
                "; the summary itself (N = 1 minus idle) ≈ {:.0} µs per tick, computed once",
                one.per_tick_us() - idle_tick
            );
        }
        let _ = writeln!(
            t,
            "| 5 | health tick growth | per tick and dashboard {:.2} µs at N = {} vs {:.2} µs at N = {} (×{ratio:.2}); each added dashboard costs {slope:.2} µs per tick{scale} | cost per dashboard constant (×{LINEAR_SLACK} at most between the two largest N) | {} |",
            per(top),
            thousands(top.n),
            per(prev),
            thousands(prev.n),
            verdict(ratio <= LINEAR_SLACK)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(n: usize, cpu: f64) -> HealthPoint {
        HealthPoint {
            n,
            cpu,
            sched: cpu,
            window: 10.0,
            ticks: 40.0,
            counted: n as u64,
            open: n,
            ..HealthPoint::default()
        }
    }

    #[test]
    fn linear_tick_cost_passes_and_superlinear_misses() {
        let args = Args::default();
        let mut report = Report {
            health: Some(Ok(vec![
                point(0, 0.02),
                point(1, 0.03),
                point(1000, 0.6),
                point(10_000, 5.6),
            ])),
            ..Report::default()
        };
        let table = report.markdown(&args);
        assert!(table.contains("| 5 | health tick growth |"), "{table}");
        assert!(table.contains("**PASS**"), "{table}");
        report.health = Some(Ok(vec![
            point(1, 0.03),
            point(1000, 0.6),
            point(10_000, 12.0),
        ]));
        assert!(report.markdown(&args).contains("**MISS**"));
    }
}
