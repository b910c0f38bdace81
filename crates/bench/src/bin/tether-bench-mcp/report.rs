//! What was measured on one backend, and the Markdown table of all of them.

use std::fmt::Write as _;

use tether_bench::backend::{BackendReport, Kind};
use tether_bench::table::{self, thousands};

use crate::args::Args;
use crate::client::{Conn, Op};
use crate::load::Tally;

/// Linux's shortest delayed-ACK timeout: an answer held back by Nagle's algorithm until the client
/// acknowledges the segment before it takes at least this long.
pub const STALL_MS: f64 = 40.0;

/// A closed-loop run with the CPU time spent around it.
#[derive(Debug)]
pub struct Measured {
    /// Counts and latencies.
    pub run: Tally,
    /// The server's on-CPU time over the run (its threads' schedstat), in seconds.
    pub server_cpu: f64,
    /// The load generator's own on-CPU time (schedstat), in seconds.
    pub bench_cpu: f64,
    /// The whole machine's busy time, in seconds (all cores): wall time × cores − idle.
    pub machine_cpu: f64,
    /// The same from the busy fields of `/proc/stat` (sampled per tick), in seconds.
    pub machine_ticks: f64,
}

impl Measured {
    /// Server CPU per successful request, in microseconds.
    pub fn cpu_per_request_us(&self) -> Option<f64> {
        (self.run.ok > 0).then(|| self.server_cpu * 1e6 / self.run.ok as f64)
    }
}

/// One-call-per-session phase on the second instance (restores, then warm calls).
#[derive(Debug)]
pub struct PerSession {
    /// Counts and latencies.
    pub run: Tally,
    /// The second instance's on-CPU time over the phase (its threads' schedstat), in seconds.
    pub server_cpu: f64,
    /// The whole machine's busy time over the phase, in seconds.
    pub machine_cpu: f64,
}

impl PerSession {
    /// Server CPU per successful call, in microseconds.
    pub fn cpu_per_call_us(&self) -> Option<f64> {
        (self.run.ok > 0).then(|| self.server_cpu * 1e6 / self.run.ok as f64)
    }
}

/// What happened to one `tether` process.
#[derive(Debug, Default)]
pub struct ProcessEnd {
    /// Panics counted on its stderr.
    pub panics: usize,
    /// Lines on its stderr (it logs at `warn`).
    pub stderr_lines: usize,
    /// How it ended after SIGTERM (`exit status: 0`), or what went wrong.
    pub exit: String,
}

/// Everything measured on one backend; `None` where that part did not run.
#[derive(Debug)]
pub struct Report {
    /// The backend.
    pub kind: Kind,
    /// Why it was not measured at all.
    pub skipped: Option<String>,
    /// The error that cut the measurement short.
    pub error: Option<String>,
    /// Opening the MCP sessions to be restored (initialize + initialized), on the first instance.
    pub handshakes: Option<Tally>,
    /// `tools/call session_info` in the closed loop.
    pub mcp: Option<Measured>,
    /// `GET /api/mcp/sessions/{id}` in the closed loop.
    pub rest_get: Option<Measured>,
    /// `POST /api/mcp/sessions/{id}/activity` in the closed loop.
    pub rest_activity: Option<Measured>,
    /// One client, one request at a time: per request kind and connection use.
    pub probes: Vec<(Op, Conn, Tally)>,
    /// How the second instance came to be.
    pub second: Option<&'static str>,
    /// First `tools/call` of each session on the second instance: the restore.
    pub restore: Option<PerSession>,
    /// The second call of each: warm.
    pub warm: Option<PerSession>,
    /// The second instance's RSS before and after the restores, in KiB.
    pub rss_restore: Option<(u64, u64)>,
    /// The first instance's end.
    pub first_end: Option<ProcessEnd>,
    /// The second instance's end.
    pub second_end: Option<ProcessEnd>,
    /// Heartbeats on one session, then spread over many.
    pub heartbeats: Vec<Heartbeats>,
}

/// One heartbeat run: MCP requests (each one activity) and the activity writes they cost.
#[derive(Debug)]
pub struct Heartbeats {
    /// Sessions the requests were spread over.
    pub sessions: usize,
    /// `touch` calls the server made during the run.
    pub writes: f64,
    /// The server's CPU time during the run, in seconds.
    pub server_cpu: f64,
    /// The requests.
    pub run: Tally,
}

/// The heartbeat runs of every backend, as a Markdown table (empty when none ran).
pub fn heartbeat_table(reports: &[Report]) -> String {
    let mut out = String::new();
    for r in reports {
        for h in &r.heartbeats {
            if out.is_empty() {
                out.push_str(
                    "| backend | sessions | heartbeats/s | p50 / p99 | activity writes | writes per \
                     heartbeat | server CPU per heartbeat | failed |\n|---|---|---|---|---|---|---|---|\n",
                );
            }
            let secs = h.run.elapsed.as_secs_f64();
            out.push_str(&format!(
                "| {} | {} | {:.0} | {:.2} / {:.2} ms | {} in {:.1} s ({:.1}/s) | {:.4} | {:.0} µs | {} |\n",
                r.kind.label(),
                h.sessions,
                h.run.throughput(),
                h.run.latency.pct_ms(50.0),
                h.run.latency.pct_ms(99.0),
                h.writes,
                secs,
                h.writes / secs.max(1e-9),
                h.writes / h.run.ok.max(1) as f64,
                h.server_cpu * 1e6 / h.run.ok.max(1) as f64,
                h.run.errors,
            ));
        }
    }
    out
}

impl BackendReport for Report {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            skipped: None,
            error: None,
            handshakes: None,
            mcp: None,
            rest_get: None,
            rest_activity: None,
            probes: Vec::new(),
            second: None,
            restore: None,
            warm: None,
            rss_restore: None,
            first_end: None,
            second_end: None,
            heartbeats: Vec::new(),
        }
    }

    fn skip(&mut self, why: String) {
        self.skipped = Some(why);
    }

    fn fail(&mut self, error: String) {
        self.error = Some(error);
    }
}

impl Report {
    /// Failed requests of every phase, with the 5xx among them.
    pub fn failures(&self) -> (u64, u64) {
        let tallies = [
            self.handshakes.as_ref(),
            self.mcp.as_ref().map(|m| &m.run),
            self.rest_get.as_ref().map(|m| &m.run),
            self.rest_activity.as_ref().map(|m| &m.run),
            self.restore.as_ref().map(|p| &p.run),
            self.warm.as_ref().map(|p| &p.run),
        ];
        tallies
            .into_iter()
            .flatten()
            .chain(self.probes.iter().map(|(_, _, t)| t))
            .fold((0, 0), |(e, s), t| (e + t.errors, s + t.server_errors))
    }

    fn probe(&self, op: Op, conn: Conn) -> Option<&Tally> {
        self.probes
            .iter()
            .find(|(o, c, _)| *o == op && *c == conn)
            .map(|(_, _, t)| t)
    }
}

fn p50_p99(t: &Tally) -> String {
    format!(
        "{:.2} / {:.2} ms",
        t.latency.pct_ms(50.0),
        t.latency.pct_ms(99.0)
    )
}

fn p50_p99_max(t: &Tally) -> String {
    format!(
        "{:.2} / {:.2} / {:.2} ms",
        t.latency.pct_ms(50.0),
        t.latency.pct_ms(99.0),
        t.latency.max_ms()
    )
}

fn rate_cell(m: &Measured) -> String {
    format!(
        "{} req/s ({} ok, {} failed)",
        thousands(m.run.throughput()),
        thousands(m.run.ok as f64),
        m.run.errors
    )
}

fn cpu_cell(m: Option<&Measured>) -> String {
    m.and_then(Measured::cpu_per_request_us)
        .map_or("-".into(), |us| format!("{} µs", thousands(us)))
}

fn busy_cell(m: &Measured) -> Option<String> {
    let wall = m.run.elapsed.as_secs_f64();
    (wall > 0.0).then(|| {
        format!(
            "{:.2} / {:.2} / {:.2} ({:.2}) of {} cores",
            m.server_cpu / wall,
            m.bench_cpu / wall,
            m.machine_cpu / wall,
            m.machine_ticks / wall,
            std::thread::available_parallelism().map_or(0, usize::from)
        )
    })
}

fn failures_cell(t: Option<&Tally>) -> String {
    match t {
        None => "-".into(),
        Some(t) if t.server_errors > 0 => format!("{} ({} 5xx)", t.errors, t.server_errors),
        Some(t) => t.errors.to_string(),
    }
}

fn end_cell(e: Option<&ProcessEnd>) -> String {
    e.map_or("-".into(), |e| {
        format!(
            "{} panics, {} stderr lines, {}",
            e.panics, e.stderr_lines, e.exit
        )
    })
}

/// The Markdown table: one row per measure, one column per backend.
pub fn table(args: &Args, reports: &[Report]) -> String {
    type Cell = Box<dyn Fn(&Report) -> Option<String>>;
    let c = args.concurrency;
    let n = args.restore_sessions;
    let rc = args.restore_concurrency;
    let at_once = if rc == 1 {
        "one at a time".to_owned()
    } else {
        format!("{rc} at a time")
    };
    let restore_conn = if args.restore_keep_alive {
        "kept-alive connections"
    } else {
        "a new connection per call"
    };
    let probes = args.probe_calls;
    let rows: Vec<(String, Cell)> = vec![
        (
            format!(
                "MCP sessions opened on the first instance (initialize + initialized), {} \
                 concurrent",
                c.min(n)
            ),
            Box::new(|r: &Report| {
                r.handshakes.as_ref().map(|t| {
                    format!(
                        "{} sessions/s (p50 / p99 / max {})",
                        thousands(t.throughput()),
                        p50_p99_max(t)
                    )
                })
            }),
        ),
        (
            format!("MCP `tools/call session_info`, {c} workers × own session, closed loop"),
            Box::new(|r: &Report| r.mcp.as_ref().map(rate_cell)),
        ),
        (
            "MCP latency p50 / p99 / max".into(),
            Box::new(|r: &Report| r.mcp.as_ref().map(|m| p50_p99_max(&m.run))),
        ),
        (
            format!("REST `GET /api/mcp/sessions/{{id}}`, {c} workers, same sessions"),
            Box::new(|r: &Report| r.rest_get.as_ref().map(rate_cell)),
        ),
        (
            "REST GET latency p50 / p99 / max".into(),
            Box::new(|r: &Report| r.rest_get.as_ref().map(|m| p50_p99_max(&m.run))),
        ),
        (
            format!(
                "answers taking ≥ {STALL_MS:.0} ms (the delayed-ACK timer): MCP / REST GET / \
                 REST activity"
            ),
            Box::new(|r: &Report| {
                r.mcp.as_ref()?;
                let share = |m: Option<&Measured>| {
                    m.map_or("-".into(), |m| {
                        format!("{:.1}%", m.run.latency.share_at_least_ms(STALL_MS) * 100.0)
                    })
                };
                Some(format!(
                    "{} / {} / {}",
                    share(r.mcp.as_ref()),
                    share(r.rest_get.as_ref()),
                    share(r.rest_activity.as_ref())
                ))
            }),
        ),
        (
            "MCP throughput as a share of REST GET".into(),
            Box::new(|r: &Report| {
                let mcp = r.mcp.as_ref()?.run.throughput();
                let get = r.rest_get.as_ref()?.run.throughput();
                (get > 0.0).then(|| format!("{:.1}%", mcp / get * 100.0))
            }),
        ),
        (
            format!("REST `POST /api/mcp/sessions/{{id}}/activity` (the write alone), {c} workers"),
            Box::new(|r: &Report| {
                r.rest_activity
                    .as_ref()
                    .map(|m| format!("{}; p50 / p99 / max {}", rate_cell(m), p50_p99_max(&m.run)))
            }),
        ),
        (
            "tether CPU per request (threads' schedstat): MCP / REST GET / REST activity".into(),
            Box::new(|r: &Report| {
                r.mcp.as_ref()?;
                Some(format!(
                    "{} / {} / {}",
                    cpu_cell(r.mcp.as_ref()),
                    cpu_cell(r.rest_get.as_ref()),
                    cpu_cell(r.rest_activity.as_ref())
                ))
            }),
        ),
        (
            "cores busy in the MCP loop: tether / load generator / whole machine (per-tick \
             count)"
                .into(),
            Box::new(|r: &Report| r.mcp.as_ref().and_then(busy_cell)),
        ),
        (
            "cores busy in the REST GET loop: tether / load generator / whole machine (per-tick \
             count)"
                .into(),
            Box::new(|r: &Report| r.rest_get.as_ref().and_then(busy_cell)),
        ),
        (
            "cores busy in the REST activity loop: tether / load generator / whole machine \
             (per-tick count)"
                .into(),
            Box::new(|r: &Report| r.rest_activity.as_ref().and_then(busy_cell)),
        ),
        (
            format!(
                "one client, {probes} requests one at a time on one kept-alive connection: MCP / \
                 REST GET p50 / p99"
            ),
            Box::new(|r: &Report| {
                let mcp = r.probe(Op::McpSessionInfo, Conn::KeepAlive)?;
                let get = r.probe(Op::RestGet, Conn::KeepAlive)?;
                Some(format!("{} / {}", p50_p99(mcp), p50_p99(get)))
            }),
        ),
        (
            "the same with a new connection per request: MCP / REST GET p50 / p99".into(),
            Box::new(|r: &Report| {
                let mcp = r.probe(Op::McpSessionInfo, Conn::New)?;
                let get = r.probe(Op::RestGet, Conn::New)?;
                Some(format!("{} / {}", p50_p99(mcp), p50_p99(get)))
            }),
        ),
        (
            "restore: the second instance".into(),
            Box::new(|r: &Report| r.second.map(str::to_owned)),
        ),
        (
            format!(
                "first `tools/call` of {} sessions there (restore), {at_once}, {restore_conn}: \
                 p50 / p99 / max",
                thousands(n as f64)
            ),
            Box::new(|r: &Report| {
                r.restore.as_ref().map(|p| {
                    format!(
                        "{} ({} ok)",
                        p50_p99_max(&p.run),
                        thousands(p.run.ok as f64)
                    )
                })
            }),
        ),
        (
            "second `tools/call` of each (warm): p50 / p99 / max".into(),
            Box::new(|r: &Report| {
                r.warm.as_ref().map(|p| {
                    format!(
                        "{} ({} ok)",
                        p50_p99_max(&p.run),
                        thousands(p.run.ok as f64)
                    )
                })
            }),
        ),
        (
            "restore cost: p50 / p99 of first minus second call".into(),
            Box::new(|r: &Report| {
                let a = &r.restore.as_ref()?.run.latency;
                let b = &r.warm.as_ref()?.run.latency;
                Some(format!(
                    "{:+.2} / {:+.2} ms",
                    a.pct_ms(50.0) - b.pct_ms(50.0),
                    a.pct_ms(99.0) - b.pct_ms(99.0)
                ))
            }),
        ),
        (
            "second instance's CPU per call (schedstat): restore / warm".into(),
            Box::new(|r: &Report| {
                let a = r.restore.as_ref()?.cpu_per_call_us()?;
                let b = r.warm.as_ref()?.cpu_per_call_us()?;
                Some(format!("{} / {} µs", thousands(a), thousands(b)))
            }),
        ),
        (
            "second instance's RSS before / after the restores".into(),
            Box::new(move |r: &Report| {
                let (before, after) = r.rss_restore?;
                let ok = r.restore.as_ref().map_or(0, |p| p.run.ok);
                let per = if ok > 0 {
                    format!(
                        " ({:.1} KiB per restored session)",
                        after.saturating_sub(before) as f64 / ok as f64
                    )
                } else {
                    String::new()
                };
                Some(format!(
                    "{:.1} / {:.1} MiB{per}",
                    before as f64 / 1024.0,
                    after as f64 / 1024.0
                ))
            }),
        ),
        (
            "failed requests: open / MCP / GET / activity / restore / warm".into(),
            Box::new(|r: &Report| {
                Some(format!(
                    "{} / {} / {} / {} / {} / {}",
                    failures_cell(r.handshakes.as_ref()),
                    failures_cell(r.mcp.as_ref().map(|m| &m.run)),
                    failures_cell(r.rest_get.as_ref().map(|m| &m.run)),
                    failures_cell(r.rest_activity.as_ref().map(|m| &m.run)),
                    failures_cell(r.restore.as_ref().map(|p| &p.run)),
                    failures_cell(r.warm.as_ref().map(|p| &p.run)),
                ))
            }),
        ),
        (
            "first instance: panics, stderr lines, exit after SIGTERM".into(),
            Box::new(|r: &Report| Some(end_cell(r.first_end.as_ref()))),
        ),
        (
            "second instance: panics, stderr lines, exit after SIGTERM".into(),
            Box::new(|r: &Report| Some(end_cell(r.second_end.as_ref()))),
        ),
    ];

    let mut head = vec!["measure".to_owned()];
    head.extend(reports.iter().map(|r| r.kind.label().to_owned()));
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, cell)| {
            let mut line = vec![name.clone()];
            line.extend(
                reports
                    .iter()
                    .map(|r| table::cell(r.skipped.as_deref(), || cell(r))),
            );
            line
        })
        .collect();
    let mut out = table::markdown(&head, &lines);
    for r in reports {
        if let Some(e) = &r.error {
            let _ = writeln!(out, "\n{} run failed: {e}", r.kind.label());
        }
        for (what, t) in [
            ("open", r.handshakes.as_ref()),
            ("MCP loop", r.mcp.as_ref().map(|m| &m.run)),
            ("REST GET loop", r.rest_get.as_ref().map(|m| &m.run)),
            (
                "REST activity loop",
                r.rest_activity.as_ref().map(|m| &m.run),
            ),
            ("restore", r.restore.as_ref().map(|p| &p.run)),
            ("warm", r.warm.as_ref().map(|p| &p.run)),
        ]
        .into_iter()
        .chain(r.probes.iter().map(|(op, _, t)| (op.label(), Some(t))))
        {
            if let Some(e) = t.and_then(|x| x.first_error.as_ref()) {
                let _ = writeln!(out, "\n{} {what}: first failure: {e}", r.kind.label());
            }
        }
    }
    out
}
