//! What was measured on one backend, and the Markdown table of all of them.

use std::fmt::Write as _;

use tether_bench::backend::{BackendReport, Kind};
use tether_bench::table::{self, mib, thousands};

use crate::args::Args;
use crate::flood::Flood;
use crate::load::Open;
use crate::stats::Run;

/// Full path throughput must reach this share of the bare statement's.
pub const TARGET_SHARE: f64 = 0.70;
/// p99 at the fixed rate must stay below this, in milliseconds.
pub const TARGET_P99_MS: f64 = 10.0;
/// Server CPU per reconnect must stay below this, in microseconds.
pub const TARGET_CPU_US: f64 = 20.0;
/// Resident memory with the seeded sessions must stay below this, in KiB (30 MiB).
pub const TARGET_RSS_KIB: u64 = 30 * 1024;
/// A legitimate client's p99 during a garbage flood, over its p99 alone, must stay within this.
pub const TARGET_FLOOD_RATIO: f64 = 2.0;

/// Everything measured on one backend; `None` where that part did not run.
#[derive(Debug)]
pub struct Report {
    /// The backend.
    pub kind: Kind,
    /// Why it was not measured at all.
    pub skipped: Option<String>,
    /// The error that cut the measurement short.
    pub error: Option<String>,
    /// Sessions in the database and how they got there.
    pub sessions: Option<(usize, &'static str)>,
    /// Creating the sessions over HTTP.
    pub create: Option<Run>,
    /// The bare statement.
    pub bare: Option<Run>,
    /// The full path at saturation.
    pub saturation: Option<Run>,
    /// Server CPU time during the saturation run, in seconds, and the run's wall time.
    pub cpu: Option<(f64, f64)>,
    /// The load generator's own CPU time during the saturation run, in seconds.
    pub bench_cpu: Option<f64>,
    /// Busy CPU time of the whole machine during the saturation run, in seconds.
    pub machine_cpu: Option<f64>,
    /// Server CPU time during the open-loop run, in seconds.
    pub open_cpu: Option<f64>,
    /// The full path at a fixed rate.
    pub open: Option<Open>,
    /// Panics the server reported on stderr during the run.
    pub panics: Option<usize>,
    /// Server RSS right after start, in KiB.
    pub rss_start: Option<u64>,
    /// Server RSS after the sessions were created, in KiB.
    pub rss_created: Option<u64>,
    /// Server RSS and peak RSS after all the load, in KiB.
    pub rss_end: Option<(u64, u64)>,
    /// The legitimate client during a garbage flood, on a server with the shipped limits.
    pub flood: Option<Flood>,
}

impl BackendReport for Report {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            skipped: None,
            error: None,
            sessions: None,
            create: None,
            bare: None,
            saturation: None,
            cpu: None,
            bench_cpu: None,
            machine_cpu: None,
            open_cpu: None,
            open: None,
            panics: None,
            rss_start: None,
            rss_created: None,
            rss_end: None,
            flood: None,
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
    /// Server CPU per successful reconnect at saturation, in microseconds.
    pub fn cpu_per_reconnect_us(&self) -> Option<f64> {
        let (cpu, _) = self.cpu?;
        let ok = self.saturation.as_ref()?.ok;
        (ok > 0).then(|| cpu * 1e6 / ok as f64)
    }

    /// Whether every target that was measured passed (skipped backends count as passing).
    pub fn all_pass(&self, args: &Args) -> bool {
        self.error.is_none() && self.verdicts(args).iter().all(|v| *v != Some(false))
    }

    fn share(&self) -> Option<f64> {
        let bare = self.bare.as_ref()?.throughput();
        let full = self.saturation.as_ref()?.throughput();
        (bare > 0.0).then(|| full / bare)
    }

    fn open_pass(&self, args: &Args) -> Option<bool> {
        let o = self.open.as_ref()?;
        // A p99 over a run that fell behind or failed requests would flatter the server.
        let achieved = o.run.throughput();
        Some(
            o.run.latency.pct_ms(99.0) < TARGET_P99_MS
                && o.run.errors == 0
                && achieved >= 0.95 * f64::from(args.rate),
        )
    }

    fn flood_pass(&self) -> Option<bool> {
        let f = self.flood.as_ref()?;
        Some(
            f.ratio() <= TARGET_FLOOD_RATIO && f.flooded.run.errors == 0 && f.quiet.run.errors == 0,
        )
    }

    fn verdicts(&self, args: &Args) -> [Option<bool>; 5] {
        [
            self.flood_pass(),
            self.share().map(|s| s >= TARGET_SHARE),
            self.open_pass(args),
            self.cpu_per_reconnect_us().map(|us| us < TARGET_CPU_US),
            self.rss_created.map(|kib| kib < TARGET_RSS_KIB),
        ]
    }
}

fn verdict(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => " **PASS**",
        Some(false) => " **MISS**",
        None => "",
    }
}

fn lat(run: &Run) -> String {
    format!(
        "{:.2} / {:.2} ms",
        run.latency.pct_ms(50.0),
        run.latency.pct_ms(99.0)
    )
}

/// The Markdown table: one row per measure, one column per backend.
pub fn table(args: &Args, reports: &[Report]) -> String {
    type Cell = Box<dyn Fn(&Report) -> Option<String>>;
    let c = args.concurrency;
    let rows: Vec<(String, &str, Cell)> = vec![
        (
            "sessions in the database".into(),
            "",
            Box::new(|r: &Report| {
                r.sessions
                    .map(|(n, how)| format!("{} ({how})", thousands(n as f64)))
            }),
        ),
        (
            format!("bare `consume_token`, {c} workers, pool {}", args.pool),
            "the limit",
            Box::new(|r: &Report| {
                r.bare
                    .as_ref()
                    .map(|b| format!("{} ops/s (p50/p99 {})", thousands(b.throughput()), lat(b)))
            }),
        ),
        (
            format!("full reconnect over HTTP at saturation, {c} workers"),
            "≥ 70% of bare",
            Box::new(|r: &Report| {
                r.saturation.as_ref().map(|s| {
                    let share = r
                        .share()
                        .map(|x| {
                            format!(
                                " = {:.1}% of bare{}",
                                x * 100.0,
                                verdict(Some(x >= TARGET_SHARE))
                            )
                        })
                        .unwrap_or_default();
                    format!("{} req/s{share}", thousands(s.throughput()))
                })
            }),
        ),
        (
            "saturation latency p50 / p99".into(),
            "",
            Box::new(|r: &Report| r.saturation.as_ref().map(lat)),
        ),
        (
            format!(
                "open loop {} req/s for {:.0} s: achieved",
                thousands(f64::from(args.rate)),
                args.rate_duration.as_secs_f64()
            ),
            "",
            Box::new(|r: &Report| {
                r.open.as_ref().map(|o| {
                    format!(
                        "{} req/s ({} of {} answered)",
                        thousands(o.run.throughput()),
                        thousands(o.run.ok as f64),
                        thousands(o.scheduled as f64)
                    )
                })
            }),
        ),
        (
            "open loop latency p50 / p99 / max (from scheduled send)".into(),
            "p99 < 10 ms",
            {
                let args = args.clone();
                Box::new(move |r: &Report| {
                    r.open.as_ref().map(|o| {
                        format!(
                            "{:.2} / {:.2} / {:.2} ms{}",
                            o.run.latency.pct_ms(50.0),
                            o.run.latency.pct_ms(99.0),
                            o.run.latency.max_ms(),
                            verdict(r.open_pass(&args))
                        )
                    })
                })
            },
        ),
        (
            "tether CPU per reconnect (utime+stime at saturation)".into(),
            "< 20 µs",
            Box::new(|r: &Report| {
                r.cpu_per_reconnect_us().map(|us| {
                    let note = if r.kind == Kind::Sqlite {
                        " (includes SQLite)"
                    } else {
                        ""
                    };
                    format!(
                        "{} µs{note}{}",
                        thousands(us),
                        verdict(Some(us < TARGET_CPU_US))
                    )
                })
            }),
        ),
        (
            "tether CPU per reconnect at the fixed rate".into(),
            "",
            Box::new(|r: &Report| {
                let ok = r.open.as_ref()?.run.ok;
                let cpu = r.open_cpu?;
                (ok > 0).then(|| format!("{} µs", thousands(cpu * 1e6 / ok as f64)))
            }),
        ),
        (
            "CPU busy at saturation: tether / load generator / whole machine".into(),
            "",
            Box::new(|r: &Report| {
                let (cpu, wall) = r.cpu.filter(|(_, wall)| *wall > 0.0)?;
                let cores = |x: Option<f64>| x.map_or("-".into(), |b| format!("{:.2}", b / wall));
                Some(format!(
                    "{:.2} / {} / {} of {} cores",
                    cpu / wall,
                    cores(r.bench_cpu),
                    cores(r.machine_cpu),
                    std::thread::available_parallelism().map_or(0, usize::from)
                ))
            }),
        ),
        (
            "tether RSS after creating the sessions".into(),
            "< 30 MiB",
            Box::new(|r: &Report| {
                r.rss_created
                    .map(|k| format!("{}{}", mib(k), verdict(Some(k < TARGET_RSS_KIB))))
            }),
        ),
        (
            "tether RSS at start / after all load / peak".into(),
            "",
            Box::new(|r: &Report| {
                let (end, peak) = r.rss_end?;
                Some(format!(
                    "{} / {} / {}",
                    mib(r.rss_start?),
                    mib(end),
                    mib(peak)
                ))
            }),
        ),
        (
            "session creation over HTTP".into(),
            "",
            Box::new(|r: &Report| {
                r.create
                    .as_ref()
                    .map(|cr| format!("{} req/s (p50/p99 {})", thousands(cr.throughput()), lat(cr)))
            }),
        ),
        (
            "failed requests: create / saturation / open loop / bare".into(),
            "0",
            Box::new(|r: &Report| {
                let n = |x: Option<&Run>| x.map_or("-".to_string(), |r| r.errors.to_string());
                Some(format!(
                    "{} / {} / {} / {}",
                    n(r.create.as_ref()),
                    n(r.saturation.as_ref()),
                    n(r.open.as_ref().map(|o| &o.run)),
                    n(r.bare.as_ref())
                ))
            }),
        ),
        (
            "garbage flood (shipped limits): requests from addresses in s = req/s".into(),
            "",
            Box::new(|r: &Report| {
                r.flood.as_ref().map(|f| {
                    format!(
                        "{} from {} in {:.1} s = {} req/s",
                        thousands(f.sent as f64),
                        f.addresses,
                        f.elapsed.as_secs_f64(),
                        thousands(f.sent as f64 / f.elapsed.as_secs_f64().max(1e-9))
                    )
                })
            }),
        ),
        (
            "garbage flood: answers by status / unanswered".into(),
            "401 or 429",
            Box::new(|r: &Report| {
                r.flood.as_ref().map(|f| {
                    let by: Vec<String> = f
                        .statuses
                        .iter()
                        .map(|(s, n)| format!("{s}: {}", thousands(*n as f64)))
                        .collect();
                    format!("{} / {}", by.join(", "), f.unanswered)
                })
            }),
        ),
        (
            format!(
                "legitimate client ({} req/s) p50 / p99: alone → during the flood",
                crate::flood::LEGIT_RATE
            ),
            "p99 ≤ 2× alone",
            Box::new(|r: &Report| {
                r.flood.as_ref().map(|f| {
                    format!(
                        "{} → {} = {:.2}×{} ({} + {} errors)",
                        lat(&f.quiet.run),
                        lat(&f.flooded.run),
                        f.ratio(),
                        verdict(r.flood_pass()),
                        f.quiet.run.errors,
                        f.flooded.run.errors
                    )
                })
            }),
        ),
        (
            "tether RSS before / after the flood".into(),
            "",
            Box::new(|r: &Report| {
                r.flood
                    .as_ref()
                    .map(|f| format!("{} / {}", mib(f.rss.0), mib(f.rss.1)))
            }),
        ),
        (
            "tether panics (counted on its stderr)".into(),
            "0",
            Box::new(|r: &Report| r.panics.map(|n| n.to_string())),
        ),
    ];

    let mut head = vec!["measure".to_owned(), "target".to_owned()];
    head.extend(reports.iter().map(|r| r.kind.label().to_owned()));
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, target, cell)| {
            let mut line = vec![name.clone(), (*target).to_owned()];
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
        for (what, run) in [
            ("create", r.create.as_ref()),
            ("saturation", r.saturation.as_ref()),
            ("open loop", r.open.as_ref().map(|o| &o.run)),
            ("bare", r.bare.as_ref()),
            ("flood, alone", r.flood.as_ref().map(|f| &f.quiet.run)),
            ("flood, flooded", r.flood.as_ref().map(|f| &f.flooded.run)),
        ] {
            if let Some(e) = run.and_then(|x| x.first_error.as_ref()) {
                let _ = writeln!(out, "\n{} {what}: first failure: {e}", r.kind.label());
            }
        }
        if let Some(o) = &r.open {
            let _ = writeln!(
                out,
                "\n{}: open-loop requests started p50 {:.2} / p99 {:.2} / max {:.2} ms after their \
                 scheduled time (load-generator delay; included in the latencies above).",
                r.kind.label(),
                o.send_lag.pct_ms(50.0),
                o.send_lag.pct_ms(99.0),
                o.send_lag.max_ms()
            );
        }
    }
    out
}
