//! `tether-bench-ws`: measures Tether's live monitoring (the dashboard WebSocket) against the real
//! `tether` binary on 127.0.0.1 and prints a Markdown table with the targets.
//!
//! Each phase starts its own server(s) on a fresh database, and stops them (SIGTERM) and removes the
//! database afterwards:
//! - steps 1–4, per dashboard count N (SQLite): open N dashboards (handshake rate), read the
//!   server's RSS before and after (memory per idle dashboard), time K session creations to their
//!   arrival at every dashboard, then again with one extra dashboard that never reads;
//! - step 4 again at the largest N with a small `ws.queue_capacity`, so that the stalled dashboard
//!   is dropped during the round;
//! - step 5 (SQLite): the server's CPU per health tick at several N with a short interval;
//! - step 7 (PostgreSQL): two instances on one database, creations through A, a dashboard on B.
//!
//! The dashboards live on `--client-threads` threads (an actix System each); the controller (HTTP
//! calls, the stalled dashboard) on the main thread. Progress goes to stderr, the table to stdout.

mod args;
mod cross;
mod fleet;
mod health;
mod http;
mod latency;
mod report;
mod rounds;
mod seed;
mod server;

/// The shared latency samples, under the name the modules use.
use tether_bench::samples as stats;

use args::Args;
use fleet::Fleet;
use report::Report;
use server::{Launch, Server, TempDir};

/// Errors of the bench: anything, with a message. Not `Send`: everything runs on its own thread.
pub type BoxError = Box<dyn std::error::Error>;

/// The management key the servers run with (local, throwaway).
pub const API_KEY: &str = "tether-bench-ws-api-key-0123456789";
/// The signing secret they share (local, throwaway; at least 32 bytes).
pub const SECRET: &str = "tether-bench-ws-signing-secret-0123456789abcdef";
/// The PostgreSQL admin URL's environment variable.
const POSTGRES_ENV: &str = "TETHER_TEST_POSTGRES_URL";
/// File descriptors the bench needs beyond one per dashboard (stdio, pipes, HTTP, the runtime).
const FD_MARGIN: u64 = 200;
/// With `--pin`: where the bench runs, and where every server does.
const BENCH_CPU: usize = 0;
/// See [`BENCH_CPU`].
pub const SERVER_CPU: usize = 1;

fn main() -> Result<(), BoxError> {
    let Some(mut args) = Args::parse()? else {
        return Ok(());
    };
    args.tether = tether_bench::flags::tether_binary(&args.tether, "")?;
    let most = args
        .dashboards
        .iter()
        .chain(&args.health_dashboards)
        .copied()
        .max()
        .unwrap_or(0) as u64;
    if let Some(limit) = server::open_files_limit()
        && limit < most + FD_MARGIN
    {
        // Raising the limit from here would need `unsafe` (setrlimit): the shell does it instead,
        // and the servers inherit it.
        return Err(format!(
            "`ulimit -n` is {limit}, {most} dashboards need at least {}: run `ulimit -n 65536` first",
            most + FD_MARGIN
        )
        .into());
    }
    if args.pin {
        server::pin_this_process(BENCH_CPU)?;
    }
    eprintln!("machine: {}", server::machine());
    let fleet = Fleet::start(args.client_threads)?;
    let system = actix_rt::System::new();
    let report = system.block_on(run(&args, &fleet));
    drop(fleet);

    println!("Command: `{}`\n", args.command);
    println!("Machine: {}\n", server::machine());
    println!("{}", report.markdown(&args));
    println!("{}", notes(&args));
    Ok(())
}

/// Every phase in turn; a failed phase is reported and the next one still runs.
async fn run(args: &Args, fleet: &Fleet) -> Report {
    let mut report = Report::default();
    if args.phases.latency {
        for &n in &args.dashboards {
            eprintln!("== latency, memory, ramp: N = {n}");
            report
                .runs
                .push(latency::latency_run(args, fleet, n, None).await);
        }
    }
    if args.phases.drop && args.stall_queue > 0 && args.max_dashboards() > 0 {
        let n = args.max_dashboards();
        eprintln!(
            "== stalled dashboard dropped: N = {n}, queue capacity {}",
            args.stall_queue
        );
        report.drop_run = Some(latency::latency_run(args, fleet, n, Some(args.stall_queue)).await);
    }
    if args.phases.health {
        eprintln!("== health tick cost");
        let h = health::health(args, fleet).await.map_err(|e| e.to_string());
        if let Err(e) = &h {
            eprintln!("  failed: {e}");
        }
        report.health = Some(h);
    }
    if args.phases.pg {
        eprintln!("== cross-instance latency (PostgreSQL)");
        let c = match std::env::var(POSTGRES_ENV).ok().filter(|u| !u.is_empty()) {
            Some(admin_url) => cross::cross(args, fleet, &admin_url)
                .await
                .map_err(|e| e.to_string()),
            None => {
                eprintln!(
                    "\n!!!!!!!! {POSTGRES_ENV} is not set: SKIPPING the cross-instance run !!!!!!!!\n\
                     !!!!!!!! set it to an admin URL, e.g. postgres://postgres@127.0.0.1:5432/test\n"
                );
                Err(format!("{POSTGRES_ENV} unset"))
            }
        };
        if let Err(e) = &c {
            eprintln!("  failed: {e}");
        }
        report.cross = Some(c);
    }
    report
}

/// A server on a fresh SQLite database in `dir`, with extra settings.
pub fn sqlite_server(
    args: &Args,
    dir: &TempDir,
    env: Vec<(&'static str, String)>,
) -> Result<Server, BoxError> {
    let url = dir.sqlite_url();
    let server = Launch {
        env,
        cpu: args.pin.then_some(SERVER_CPU),
        ..Launch::new(&args.tether, dir.path(), &url, API_KEY, SECRET)
    }
    .start()?;
    eprintln!("  tether pid {} at {}", server.pid(), server.base_url());
    Ok(server)
}

/// The notes under the table: how it was measured and what shares the machine.
fn notes(args: &Args) -> String {
    let sharing = if args.pin {
        format!(
            "With `--pin` this process runs on CPU {BENCH_CPU} and every server on CPU \
             {SERVER_CPU} (`taskset`): the server's CPU figures and delivery times are its own, \
             though a loopback send still runs the receiver's side of TCP on the sender's CPU."
        )
    } else {
        "Client and server share the machine's cores, so every latency includes the client's own \
         scheduling and frame decoding, and the server never has the cores to itself."
            .to_owned()
    };
    format!(
        "Notes:\n\
         - One `tether` per phase on 127.0.0.1 (SQLite in a temporary directory; PostgreSQL for \
         step 7), started with `TETHER_LOG__LEVEL=warn`, stopped with SIGTERM.\n\
         - The dashboards run in this process on {threads} threads, each with its own actix System; \
         the controller (HTTP requests, the stalled dashboard) on the main thread. {sharing}\n\
         - Latency: from just before each creation's HTTP request to the decoding of its \
         `session_created` frame at each dashboard, over every (dashboard, event) pair. {pairs} \
         pairs of rounds of {k} creations {sp} ms apart, without and with the stalled dashboard in \
         alternating order (without/with, with/without, ...); each condition pools its rounds. The default 5 s health interval runs \
         meanwhile; each round starts right after a `health_update` has reached the dashboards, so \
         that all rounds meet the ticks at the same moments (with {k} × {sp} ms shorter than 5 s, \
         none falls inside a round). An event that does coincide with a tick waits behind it: the \
         tick's fan-out time is reported per N.\n\
         - Memory: server VmRSS before any dashboard, 1 s after the N-th connected (inside the 5 s \
         after a tick, so before any message reached the new ones, unless flagged), and after the \
         next `health_update` had reached them all; growth divided by N. The target is judged \
         on the last: every dashboard receives one every 5 s, and actix-http keeps the write buffer \
         a message grew (up to 128 KiB per connection), so that is what an idle dashboard holds. \
         The marginal figure leaves out the first min(N/10, 100) dashboards (one-time \
         allocations). The handshake rate is that of the ramp after those first ones.\n\
         - Stalled dashboard: connects with `since=0` to a database holding a backlog of {backlog} \
         events (written before the server started) and never reads, so its replay fills the TCP \
         buffers and the server's task for it blocks while the round runs.\n\
         - Health tick: CPU of the server over a {win} s window with no events and a {hi} ms health \
         interval, as utime+stime (resolution 1/CLK_TCK, usually 10 ms per window) and as the sum \
         of its threads' schedstat (ns); ticks counted from the `health_update` frames the \
         dashboards received. The cost per dashboard includes the server's share of the loopback \
         delivery to the client and the pings (one per dashboard per 20 s).\n",
        threads = args.client_threads,
        pairs = args.pairs,
        k = args.events,
        sp = args.spacing.as_millis(),
        backlog = args.stall_backlog,
        win = args.health_window.as_secs(),
        hi = args.health_interval.as_millis(),
    )
}
