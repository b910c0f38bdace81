//! `tether-bench`: measures Tether's reconnect path on each database backend and prints a Markdown
//! table with the targets (`make bench`).
//!
//! Per backend, on a fresh database: start the real `tether` binary on 127.0.0.1, create the sessions
//! over HTTP (then read its RSS), run a closed loop of reconnects at saturation (throughput, latency,
//! and the server's CPU time per reconnect from `/proc`), run an open loop at a fixed rate (latency
//! from each request's scheduled time), stop the server with SIGTERM, and finally drive the bare
//! `Database::consume_token` statement with the same concurrency and pool size on the same database:
//! the limit the full path is compared with. Progress goes to stderr, the table to stdout.

mod args;
mod bare;
mod flood;
mod load;
mod report;
mod stats;

use std::rc::Rc;

// The server launcher, the fresh databases and the run over the backends live in the library,
// shared with `tether-bench-mcp`.
use tether_bench::backend::{self, Fresh, seed_direct, seeded_id};
use tether_bench::server::{self, Launch};
use tether_testkit::procfs::{self, Pid};

use args::Args;
use report::Report;

/// Errors of the bench: anything, with a message.
pub use tether_bench::BoxError;

/// The management key the bench starts the server with (local, throwaway).
const API_KEY: &str = "tether-bench-api-key-0123456789";
/// The signing secret the bench starts the server with (local, throwaway; at least 32 bytes).
const SECRET: &str = "tether-bench-signing-secret-0123456789abcdef";

fn main() -> Result<(), BoxError> {
    let Some(mut args) = Args::parse()? else {
        return Ok(());
    };
    if !args.no_server {
        args.tether = tether_bench::flags::tether_binary(
            &args.tether,
            ", or --no-server for the bare statement only",
        )?;
    }
    // Two threads: the machine has two cores, and the bare statement's workers only wait on I/O.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let reports = backend::each_backend(&rt, args.backends, "", |fresh, report: &mut Report| {
        measure_on(&rt, &args, fresh, report)
    });

    println!(
        "{} workers × {} sessions each, pool {}, saturation {:.0} s after {:.0} s warm-up, open \
         loop {} req/s for {:.0} s, {} sessions, load generator on one thread of the same \
         machine.\n",
        args.concurrency,
        args.sessions_per_worker,
        args.pool,
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
        args.rate,
        args.rate_duration.as_secs_f64(),
        args.sessions,
    );
    println!("{}", report::table(&args, &reports));
    if let Some(failed) = reports.iter().find(|r| r.error.is_some()) {
        return Err(format!("the {} run failed (see above)", failed.kind.label()).into());
    }
    let misses = reports.iter().filter(|r| !r.all_pass(&args)).count();
    eprintln!("{misses} backend(s) with a missed target");
    Ok(())
}

/// Everything on one backend, on the database [`backend::each_backend`] created for it.
fn measure_on(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    fresh: &Fresh,
    report: &mut Report,
) -> Result<(), BoxError> {
    let sessions = args.sessions.max(args.worker_sessions());
    if args.no_server {
        eprintln!("  seeding {sessions} sessions directly");
        let db = rt.block_on(fresh.connect(args.pool))?;
        rt.block_on(seed_direct(&db, sessions, args.concurrency))?;
        report.sessions = Some((sessions, "inserted through `Database`"));
    } else {
        http_phases(args, fresh, sessions, report)?;
        report.sessions = Some((sessions, "created over HTTP"));
        if args.flood > 0 {
            flood_phase(args, fresh, report)?;
        }
    }
    eprintln!(
        "  bare consume_token ({:.0} s)",
        args.duration.as_secs_f64()
    );
    let db = rt.block_on(fresh.connect(args.pool))?;
    let bare = rt.block_on(bare::run(&db, args))?;
    eprintln!("    {:.0} ops/s", bare.throughput());
    report.bare = Some(bare);
    drop(db);
    Ok(())
}

/// The server for this backend: shipped limits for the flood, none for the path measurements.
fn launch<'a>(args: &'a Args, fresh: &'a Fresh, shipped_limits: bool) -> Launch<'a> {
    Launch {
        pool: Some(args.pool),
        shipped_limits,
        ..Launch::new(&args.tether, &fresh.workdir, &fresh.url, API_KEY, SECRET)
    }
}

/// Starts the server, runs the HTTP phases, and stops it whatever happened.
fn http_phases(
    args: &Args,
    fresh: &Fresh,
    sessions: usize,
    report: &mut Report,
) -> Result<(), BoxError> {
    let ticks = procfs::clock_ticks();
    let server = launch(args, fresh, false).start()?;
    let pid = Pid::Of(server.pid());
    eprintln!("  tether pid {} at {}", server.pid(), server.base_url());
    report.rss_start = Some(procfs::memory_kib(pid)?.rss);

    let system = actix_rt::System::new();
    let result = system.block_on(async {
        let connections = args.worker_sessions().max(args.concurrency) + 8;
        let ctx = Rc::new(load::Ctx::new(server.base_url(), API_KEY, connections));

        eprintln!("  creating {sessions} sessions over HTTP");
        let ids: Vec<String> = (0..sessions).map(seeded_id).collect();
        let created = load::create_sessions(ctx.clone(), ids, args.concurrency).await;
        let failed = created.errors;
        let first = created.first_error.clone();
        report.create = Some(created);
        // A few failures are reported in the table; more would make the rest meaningless.
        if failed as usize * 100 > sessions {
            return Err(format!(
                "{failed} session creations failed: {}",
                first.unwrap_or_default()
            )
            .into());
        }
        report.rss_created = Some(procfs::memory_kib(pid)?.rss);

        let mut workers = Vec::with_capacity(args.concurrency);
        for w in 0..args.concurrency {
            let mut slots = Vec::with_capacity(args.sessions_per_worker);
            for k in 0..args.sessions_per_worker {
                slots.push(
                    ctx.slot(&seeded_id(w * args.sessions_per_worker + k))
                        .await?,
                );
            }
            workers.push(slots);
        }

        eprintln!(
            "  saturation ({:.0} s warm-up, {:.0} s measured)",
            args.warmup.as_secs_f64(),
            args.duration.as_secs_f64()
        );
        let (workers, _) = load::closed(ctx.clone(), workers, args.warmup).await;
        let cpu_before = procfs::cpu_time(pid, ticks)?;
        let own_before = procfs::cpu_time(Pid::This, ticks)?;
        let machine_before = procfs::machine_busy(ticks)?;
        let (workers, saturation) = load::closed(ctx.clone(), workers, args.duration).await;
        let cpu = procfs::cpu_time(pid, ticks)?.saturating_sub(cpu_before);
        let own = procfs::cpu_time(Pid::This, ticks)?.saturating_sub(own_before);
        let machine = procfs::machine_busy(ticks)?.saturating_sub(machine_before);
        report.bench_cpu = Some(own.as_secs_f64());
        report.machine_cpu = Some(machine.as_secs_f64());
        eprintln!("    {:.0} req/s", saturation.throughput());
        report.cpu = Some((cpu.as_secs_f64(), saturation.elapsed.as_secs_f64()));
        report.saturation = Some(saturation);

        eprintln!(
            "  open loop ({} req/s for {:.0} s)",
            args.rate,
            args.rate_duration.as_secs_f64()
        );
        let slots = workers.into_iter().flatten().collect();
        let cpu_before = procfs::cpu_time(pid, ticks)?;
        let open = load::open(ctx.clone(), slots, args.rate, args.rate_duration, || false).await;
        report.open_cpu = Some(
            procfs::cpu_time(pid, ticks)?
                .saturating_sub(cpu_before)
                .as_secs_f64(),
        );
        eprintln!("    p99 {:.2} ms", open.run.latency.pct_ms(99.0));
        report.open = Some(open);
        let memory = procfs::memory_kib(pid)?;
        report.rss_end = Some((memory.rss, memory.peak));
        Ok::<(), BoxError>(())
    });
    // Logging is at warn: anything on stderr (a warning, a panic) is worth seeing next to the numbers.
    let ended = server::finish(server, "");
    report.panics = Some(ended.panics);
    result?;
    let status = ended.status("the run")?;
    if !status.success() {
        // The numbers stand; an unclean exit on SIGTERM is the server's bug to look at.
        eprintln!("  warning: tether exited with {status} after SIGTERM");
    }
    Ok(())
}

/// A server with the shipped limits, a legitimate client, and a garbage flood (see [`flood`]).
fn flood_phase(args: &Args, fresh: &Fresh, report: &mut Report) -> Result<(), BoxError> {
    let server = launch(args, fresh, true).start()?;
    let pid = Pid::Of(server.pid());
    eprintln!("  tether pid {} (shipped limits)", server.pid());
    let shape = flood::Shape {
        requests: args.flood,
        connections: args.flood_connections,
        addresses: args.flood_addresses,
    };
    let result =
        actix_rt::System::new().block_on(flood::run(server.base_url(), API_KEY, shape, || {
            Ok(procfs::memory_kib(pid)?.rss)
        }));
    let ended = server::finish(server, "");
    let panics = ended.panics;
    report.flood = Some(result?);
    report.panics = Some(report.panics.unwrap_or(0) + panics);
    ended.status("the flood")?;
    Ok(())
}
