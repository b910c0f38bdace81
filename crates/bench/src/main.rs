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

// The server launcher and the fresh databases live in the library, shared with `tether-bench-mcp`.
use tether_bench::{backend, server};

use args::{Args, Backends};
use backend::{Fresh, Kind, POSTGRES_ENV, seed_direct, seeded_id};
use report::Report;
use server::{Launch, Server};

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
    if !args.no_server && !args.tether.is_file() {
        return Err(format!(
            "no tether binary at {} (build it with `cargo build --release -p tether-api`, or \
             pass --tether PATH, or --no-server for the bare statement only)",
            args.tether.display()
        )
        .into());
    }
    if !args.no_server {
        // The server runs in a temporary directory: a relative path would resolve from there.
        args.tether = std::fs::canonicalize(&args.tether)?;
    }
    // Two threads: the machine has two cores, and the bare statement's workers only wait on I/O.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let kinds: &[Kind] = match args.backends {
        Backends::Sqlite => &[Kind::Sqlite],
        Backends::Postgres => &[Kind::Postgres],
        Backends::Both => &[Kind::Sqlite, Kind::Postgres],
    };
    let admin_url = std::env::var(POSTGRES_ENV).ok().filter(|u| !u.is_empty());
    let mut reports = Vec::new();
    for &kind in kinds {
        if kind == Kind::Postgres && admin_url.is_none() {
            eprintln!(
                "\n!!!!!!!! {POSTGRES_ENV} is not set: SKIPPING the PostgreSQL backend !!!!!!!!\n\
                 !!!!!!!! set it to an admin URL, e.g. postgres://postgres@127.0.0.1:5432/test \
                 !!!!!!!!\n"
            );
            let mut r = Report::new(kind);
            r.skipped = Some(format!("{POSTGRES_ENV} unset"));
            reports.push(r);
            continue;
        }
        eprintln!("== {} ==", kind.label());
        reports.push(measure(&rt, &args, kind, admin_url.as_deref()));
    }

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

/// Everything on one backend, on a database created for it and removed afterwards.
fn measure(rt: &tokio::runtime::Runtime, args: &Args, kind: Kind, admin: Option<&str>) -> Report {
    let mut report = Report::new(kind);
    let fresh = match rt.block_on(Fresh::create(kind, admin)) {
        Ok(f) => f,
        Err(e) => {
            report.error = Some(format!("cannot create the database: {e}"));
            return report;
        }
    };
    if let Err(e) = measure_on(rt, args, &fresh, &mut report) {
        eprintln!("  failed: {e}");
        report.error = Some(e.to_string());
    }
    if let Err(e) = rt.block_on(fresh.destroy()) {
        eprintln!("  could not remove the bench database: {e}");
    }
    report
}

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

/// Starts the server, runs the HTTP phases, and stops it whatever happened.
fn http_phases(
    args: &Args,
    fresh: &Fresh,
    sessions: usize,
    report: &mut Report,
) -> Result<(), BoxError> {
    let ticks = server::clock_ticks();
    let server = Server::start(&Launch {
        exe: &args.tether,
        workdir: &fresh.workdir,
        database_url: &fresh.url,
        api_key: API_KEY,
        secret: SECRET,
        pool: args.pool,
        shipped_limits: false,
    })?;
    eprintln!("  tether pid {} at {}", server.pid(), server.base_url);
    report.rss_start = Some(server.memory_kib()?.0);

    let system = actix_rt::System::new();
    let result = system.block_on(async {
        let connections = args.worker_sessions().max(args.concurrency) + 8;
        let ctx = Rc::new(load::Ctx::new(&server.base_url, API_KEY, connections));

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
        report.rss_created = Some(server.memory_kib()?.0);

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
        let cpu_before = server.cpu_time(ticks)?;
        let own_before = server::cpu_time("self", ticks)?;
        let machine_before = server::machine_busy(ticks)?;
        let (workers, saturation) = load::closed(ctx.clone(), workers, args.duration).await;
        let cpu = server.cpu_time(ticks)?.saturating_sub(cpu_before);
        let own = server::cpu_time("self", ticks)?.saturating_sub(own_before);
        let machine = server::machine_busy(ticks)?.saturating_sub(machine_before);
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
        let cpu_before = server.cpu_time(ticks)?;
        let open = load::open(ctx.clone(), slots, args.rate, args.rate_duration, || false).await;
        report.open_cpu = Some(
            server
                .cpu_time(ticks)?
                .saturating_sub(cpu_before)
                .as_secs_f64(),
        );
        eprintln!("    p99 {:.2} ms", open.run.latency.pct_ms(99.0));
        report.open = Some(open);
        report.rss_end = Some(server.memory_kib()?);
        Ok::<(), BoxError>(())
    });
    let mut server = server;
    report.panics = Some(server.panics());
    let alive = server.alive();
    // Logging is at warn: anything on stderr (a warning, a panic) is worth seeing next to the numbers.
    let tail = server.stderr_tail();
    if !tail.is_empty() {
        eprintln!("  tether's last stderr lines:\n  {tail}");
    }
    let stopped = server.stop();
    result?;
    if !alive {
        return Err("tether exited during the run".into());
    }
    let status = stopped?;
    if !status.success() {
        // The numbers stand; an unclean exit on SIGTERM is the server's bug to look at.
        eprintln!("  warning: tether exited with {status} after SIGTERM");
    }
    Ok(())
}

/// A server with the shipped limits, a legitimate client, and a garbage flood (see [`flood`]).
fn flood_phase(args: &Args, fresh: &Fresh, report: &mut Report) -> Result<(), BoxError> {
    let server = Server::start(&Launch {
        exe: &args.tether,
        workdir: &fresh.workdir,
        database_url: &fresh.url,
        api_key: API_KEY,
        secret: SECRET,
        pool: args.pool,
        shipped_limits: true,
    })?;
    eprintln!("  tether pid {} (shipped limits)", server.pid());
    let shape = flood::Shape {
        requests: args.flood,
        connections: args.flood_connections,
        addresses: args.flood_addresses,
    };
    let result =
        actix_rt::System::new().block_on(flood::run(&server.base_url, API_KEY, shape, || {
            Ok(server.memory_kib()?.0)
        }));
    let mut server = server;
    let panics = server.panics();
    let alive = server.alive();
    let tail = server.stderr_tail();
    if !tail.is_empty() {
        eprintln!("  tether's last stderr lines:\n  {tail}");
    }
    let stopped = server.stop();
    report.flood = Some(result?);
    report.panics = Some(report.panics.unwrap_or(0) + panics);
    if !alive {
        return Err("tether exited during the flood".into());
    }
    stopped?;
    Ok(())
}
