//! `tether-bench-mcp`: measures Tether's MCP endpoint (`/mcp`, streamable HTTP) against the real
//! `tether` binary on 127.0.0.1, next to the same read over REST, and prints a Markdown table
//! (`make bench`).
//!
//! Per backend, on a fresh database (the shared `tether_bench::backend`), with the shared launcher
//! (`tether_bench::server`):
//! 1. start `tether` (the first instance) and open `--concurrency` MCP sessions for the loops plus
//!    `--restore-sessions` more to be restored later (`initialize` + `notifications/initialized`);
//! 2. closed loop, one worker per MCP session: `tools/call session_info` (warm-up, then measured);
//! 3. the same loop with `GET /api/mcp/sessions/{id}` over REST on the same sessions, then with
//!    `POST /api/mcp/sessions/{id}/activity` (the activity write an MCP request also makes);
//! 4. a second instance that has never seen the restore sessions: on PostgreSQL another `tether`
//!    on the same database beside the first, on SQLite the first stopped and started again on
//!    the same file. There, each restore session's first `tools/call` (restore), then the second
//!    (warm).
//!
//! Progress goes to stderr, the table to stdout.

mod args;
mod client;
mod load;
mod report;

use std::rc::Rc;
use std::time::{Duration, Instant};

use tether_bench::BoxError;
use tether_bench::backend::{self, Fresh, Kind};
use tether_bench::server::{self, Launch, Server};
use tether_testkit::procfs::{self, Pid};

use args::Args;
use client::{Client, Conn, Op};
use report::{Heartbeats, Measured, PerSession, ProcessEnd, Report};

/// The management key the bench starts the servers with (local, throwaway).
const API_KEY: &str = "tether-bench-mcp-api-key-0123456789";
/// The signing secret they share (local, throwaway; at least 32 bytes).
const SECRET: &str = "tether-bench-mcp-signing-secret-0123456789abcdef";
/// Handshakes in flight while opening the sessions to restore.
const OPEN_CONCURRENCY: usize = 32;

fn main() -> Result<(), BoxError> {
    let Some(mut args) = Args::parse()? else {
        return Ok(());
    };
    args.tether = tether_bench::flags::tether_binary(&args.tether, "")?;
    // For the database helper (create/drop); the HTTP load runs on one actix-rt thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reports = backend::each_backend(&rt, args.backends, "MCP: ", |fresh, report| {
        measure_on(&args, fresh, report)
    });

    println!(
        "{c} workers each on its own MCP session, pool {pool}, each closed loop {d} s after {w} s \
         warm-up; restore of {n} sessions, {rc} in flight, {rconn}; load generator on one thread \
         of the same machine.\n",
        c = args.concurrency,
        pool = args.pool,
        d = args.duration.as_secs_f64(),
        w = args.warmup.as_secs_f64(),
        n = args.restore_sessions,
        rc = args.restore_concurrency,
        rconn = if args.restore_keep_alive {
            "kept-alive connections"
        } else {
            "a new connection per call"
        },
    );
    println!("{}", report::table(&args, &reports));
    let beats = report::heartbeat_table(&reports);
    if !beats.is_empty() {
        println!(
            "Heartbeats: MCP `tools/call session_info` requests (each one activity of its \
             session) from {} workers, {} s per run; activity writes are the server's `touch` \
             calls (/metrics).\n\n{beats}",
            args.concurrency,
            args.duration.as_secs_f64()
        );
    }
    for r in &reports {
        let (failed, server_errors) = r.failures();
        if failed > 0 {
            eprintln!(
                "{}: {failed} failed requests, {server_errors} of them 5xx (the first failures are under the table)",
                r.kind.label()
            );
        }
    }
    if let Some(failed) = reports.iter().find(|r| r.error.is_some()) {
        return Err(format!("the {} run failed (see above)", failed.kind.label()).into());
    }
    Ok(())
}

fn start(args: &Args, fresh: &Fresh, which: &str) -> Result<Server, BoxError> {
    let server = Launch {
        pool: Some(args.pool),
        ..Launch::new(&args.tether, &fresh.workdir, &fresh.url, API_KEY, SECRET)
    }
    .start()?;
    eprintln!(
        "  {which} instance: tether pid {} at {}",
        server.pid(),
        server.base_url()
    );
    Ok(server)
}

/// Stops a server (SIGTERM) and says how it went; its last stderr lines go to stderr if any.
fn finish(server: Server, which: &str) -> ProcessEnd {
    let ended = server::finish(server, &format!("{which} instance: "));
    ProcessEnd {
        panics: ended.panics,
        stderr_lines: ended.stderr_lines,
        exit: ended.describe(),
    }
}

/// Everything on one backend, on the database [`backend::each_backend`] created for it.
fn measure_on(args: &Args, fresh: &Fresh, report: &mut Report) -> Result<(), BoxError> {
    let system = actix_rt::System::new();
    let first = start(args, fresh, "first")?;
    let phases = system.block_on(first_phases(args, &first, report));
    let restore_sids = match phases {
        Ok(sids) => sids,
        Err(e) => {
            report.first_end = Some(finish(first, "first"));
            return Err(e);
        }
    };

    let (second, first) = match report.kind {
        Kind::Postgres => {
            report.second = Some("another tether on the same database, the first still running");
            (start(args, fresh, "second"), Some(first))
        }
        Kind::Sqlite => {
            report.second = Some("the same tether restarted on the same file");
            report.first_end = Some(finish(first, "first"));
            (start(args, fresh, "second"), None)
        }
    };
    let result = match second {
        Ok(second) => {
            let r = system.block_on(restore_phases(args, &second, &restore_sids, report));
            report.second_end = Some(finish(second, "second"));
            r
        }
        Err(e) => Err(e),
    };
    if let Some(first) = first {
        report.first_end = Some(finish(first, "first"));
    }
    result
}

/// Opens the sessions and runs the closed loops on the first instance; returns the ids of the
/// sessions to restore.
async fn first_phases(
    args: &Args,
    server: &Server,
    report: &mut Report,
) -> Result<Vec<String>, BoxError> {
    let client = Rc::new(Client::new(
        server.base_url(),
        API_KEY,
        args.concurrency.max(OPEN_CONCURRENCY) + 8,
        Conn::KeepAlive,
    ));
    eprintln!("  opening {} MCP sessions for the loops", args.concurrency);
    let (loop_sids, opened) = load::open_sessions(
        client.clone(),
        args.concurrency,
        args.concurrency,
        "bench-loop",
    )
    .await;
    if loop_sids.len() < args.concurrency {
        return Err(format!(
            "{} of {} MCP sessions failed to open: {}",
            opened.errors,
            args.concurrency,
            opened.first_error.unwrap_or_default()
        )
        .into());
    }
    eprintln!(
        "  opening {} MCP sessions to restore later",
        args.restore_sessions
    );
    let (restore_sids, opened) = load::open_sessions(
        client.clone(),
        args.restore_sessions,
        OPEN_CONCURRENCY,
        "bench-restore",
    )
    .await;
    eprintln!(
        "    {:.0} sessions/s, {} failed",
        opened.throughput(),
        opened.errors
    );
    let failed = opened.errors;
    let first_error = opened.first_error.clone();
    report.handshakes = Some(opened);
    if failed as usize * 100 > args.restore_sessions {
        return Err(format!(
            "{failed} MCP sessions failed to open: {}",
            first_error.unwrap_or_default()
        )
        .into());
    }

    let mut ids = 2u64;
    let mut ops = vec![Op::McpSessionInfo, Op::RestGet];
    if !args.no_activity {
        ops.push(Op::RestActivity);
    }
    for op in ops {
        eprintln!(
            "  {} ({} s warm-up, {} s measured)",
            op.label(),
            args.warmup.as_secs_f64(),
            args.duration.as_secs_f64()
        );
        let m = closed_loop(args, server, client.clone(), op, &loop_sids, &mut ids).await?;
        eprintln!(
            "    {:.0} req/s, p50 / p99 {:.2} / {:.2} ms, {} failed",
            m.run.throughput(),
            m.run.latency.pct_ms(50.0),
            m.run.latency.pct_ms(99.0),
            m.run.errors
        );
        match op {
            Op::McpSessionInfo => report.mcp = Some(m),
            Op::RestGet => report.rest_get = Some(m),
            Op::RestActivity => report.rest_activity = Some(m),
        }
    }

    if args.heartbeat_sessions > 0 {
        report.heartbeats = heartbeats(args, server, client.clone(), &loop_sids, &mut ids).await?;
    }

    if args.probe_calls > 0 {
        let fresh = Client::new(server.base_url(), API_KEY, 4, Conn::New);
        let sid = &loop_sids[0];
        for op in [Op::McpSessionInfo, Op::RestGet] {
            for (conn, c) in [(Conn::KeepAlive, client.as_ref()), (Conn::New, &fresh)] {
                eprintln!(
                    "  one at a time: {} x {}, {}",
                    args.probe_calls,
                    op.label(),
                    conn_label(conn)
                );
                let t = load::sequential(c, op, sid, args.probe_calls, &mut ids).await;
                eprintln!(
                    "    p50 / p99 {:.2} / {:.2} ms, {} failed",
                    t.latency.pct_ms(50.0),
                    t.latency.pct_ms(99.0),
                    t.errors
                );
                report.probes.push((op, conn, t));
            }
        }
    }
    Ok(restore_sids)
}

/// The activity writes the server has made (`touch` calls through its pool).
const TOUCHES: &str = r#"tether_db_call_duration_seconds_count{operation="touch"}"#;

/// Heartbeats: MCP requests (each one activity of its session) from the loop's workers, first all
/// on one session, then spread over `--heartbeat-sessions` sessions, with the activity writes the
/// server made meanwhile (it writes at most one per session per `activity_write_interval_ms`).
async fn heartbeats(
    args: &Args,
    server: &Server,
    client: Rc<Client>,
    loop_sids: &[String],
    ids: &mut u64,
) -> Result<Vec<Heartbeats>, BoxError> {
    let mut out = Vec::new();
    let one = vec![loop_sids[0].clone()];
    eprintln!(
        "  heartbeats: {} workers on 1 session ({} s)",
        args.concurrency,
        args.duration.as_secs_f64()
    );
    out.push(heartbeat_run(args, server, client.clone(), &one, ids).await?);
    eprintln!(
        "  opening {} MCP sessions for heartbeats",
        args.heartbeat_sessions
    );
    let (many, opened) = load::open_sessions(
        client.clone(),
        args.heartbeat_sessions,
        OPEN_CONCURRENCY,
        "bench-heartbeat",
    )
    .await;
    if many.len() < args.heartbeat_sessions {
        return Err(format!(
            "{} of {} MCP sessions failed to open: {}",
            opened.errors,
            args.heartbeat_sessions,
            opened.first_error.unwrap_or_default()
        )
        .into());
    }
    eprintln!(
        "  heartbeats: {} workers over {} sessions ({} s)",
        args.concurrency,
        many.len(),
        args.duration.as_secs_f64()
    );
    out.push(heartbeat_run(args, server, client, &many, ids).await?);
    Ok(out)
}

async fn heartbeat_run(
    args: &Args,
    server: &Server,
    client: Rc<Client>,
    sids: &[String],
    ids: &mut u64,
) -> Result<Heartbeats, BoxError> {
    let before = client.metric(TOUCHES).await.map_err(|f| f.message)?;
    let pid = Pid::Of(server.pid());
    let ticks = procfs::clock_ticks();
    let cpu = procfs::cpu_time(pid, ticks)?;
    let run = load::closed_over(
        client.clone(),
        Op::McpSessionInfo,
        sids,
        args.concurrency,
        args.duration,
        ids,
    )
    .await;
    let cpu = procfs::cpu_time(pid, ticks)?.saturating_sub(cpu);
    let after = client.metric(TOUCHES).await.map_err(|f| f.message)?;
    let h = Heartbeats {
        sessions: sids.len(),
        writes: after - before,
        server_cpu: cpu.as_secs_f64(),
        run,
    };
    eprintln!(
        "    {:.0} heartbeats/s, {} writes ({:.4} per heartbeat), p99 {:.2} ms, {} failed",
        h.run.throughput(),
        h.writes,
        h.writes / h.run.ok.max(1) as f64,
        h.run.latency.pct_ms(99.0),
        h.run.errors
    );
    Ok(h)
}

fn conn_label(conn: Conn) -> &'static str {
    match conn {
        Conn::KeepAlive => "one kept-alive connection",
        Conn::New => "a new connection per request",
    }
}

/// One closed loop: warm-up, then the measured run with the CPU times around it.
async fn closed_loop(
    args: &Args,
    server: &Server,
    client: Rc<Client>,
    op: Op,
    sids: &[String],
    ids: &mut u64,
) -> Result<Measured, BoxError> {
    let ticks = procfs::clock_ticks();
    let pid = Pid::Of(server.pid());
    if !args.warmup.is_zero() {
        load::closed(client.clone(), op, sids, args.warmup, ids).await;
    }
    let sched = procfs::sched_time(pid)?;
    let own = procfs::sched_time(Pid::This)?;
    let idle = procfs::machine_idle(ticks)?;
    let machine = procfs::machine_busy(ticks)?;
    let started = Instant::now();
    let run = load::closed(client, op, sids, args.duration, ids).await;
    let wall = started.elapsed();
    Ok(Measured {
        server_cpu: procfs::sched_time(pid)?.saturating_sub(sched).as_secs_f64(),
        bench_cpu: procfs::sched_time(Pid::This)?
            .saturating_sub(own)
            .as_secs_f64(),
        machine_ticks: procfs::machine_busy(ticks)?
            .saturating_sub(machine)
            .as_secs_f64(),
        machine_cpu: busy_since(wall, idle, ticks)?,
        run,
    })
}

/// The whole machine's busy time over the last `wall`, from its idle time (measured exactly on a
/// tickless kernel), in seconds.
fn busy_since(wall: Duration, idle_before: Duration, ticks: u64) -> Result<f64, BoxError> {
    let idle = procfs::machine_idle(ticks)?.saturating_sub(idle_before);
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    Ok((wall.as_secs_f64() * cores - idle.as_secs_f64()).max(0.0))
}

/// On the instance that has never seen `sids`: the first call of each (restore), then the second.
async fn restore_phases(
    args: &Args,
    server: &Server,
    sids: &[String],
    report: &mut Report,
) -> Result<(), BoxError> {
    let conn = if args.restore_keep_alive {
        Conn::KeepAlive
    } else {
        Conn::New
    };
    let client = Rc::new(Client::new(
        server.base_url(),
        API_KEY,
        args.restore_concurrency + 8,
        conn,
    ));
    // Let the new process settle (its first database connections, the listener) before timing.
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    let pid = Pid::Of(server.pid());
    let rss_before = procfs::memory_kib(pid)?.rss;
    for (first_call, id) in [(true, 2u64), (false, 3u64)] {
        eprintln!(
            "  {} tools/call of {} sessions on the second instance, {} in flight",
            if first_call {
                "first (restore)"
            } else {
                "second (warm)"
            },
            sids.len(),
            args.restore_concurrency
        );
        let ticks = procfs::clock_ticks();
        let sched = procfs::sched_time(pid)?;
        let idle = procfs::machine_idle(ticks)?;
        let started = Instant::now();
        let run = load::once_each(client.clone(), sids, args.restore_concurrency, id).await;
        let p = PerSession {
            server_cpu: procfs::sched_time(pid)?.saturating_sub(sched).as_secs_f64(),
            machine_cpu: busy_since(started.elapsed(), idle, ticks)?,
            run,
        };
        eprintln!(
            "    p50 / p99 {:.2} / {:.2} ms, {} failed, machine busy {:.2} cores",
            p.run.latency.pct_ms(50.0),
            p.run.latency.pct_ms(99.0),
            p.run.errors,
            p.machine_cpu / p.run.elapsed.as_secs_f64().max(1e-9)
        );
        if first_call {
            report.rss_restore = Some((rss_before, procfs::memory_kib(pid)?.rss));
            report.restore = Some(p);
        } else {
            report.warm = Some(p);
        }
    }
    Ok(())
}
