//! Step 5: the server's CPU per health tick at several dashboard counts.

use std::time::Instant;

use crate::args::Args;
use crate::fleet::Fleet;
use crate::http::Api;
use crate::report::HealthPoint;
use tether_testkit::procfs::{self, Pid};

use crate::server::{self, Server, TempDir};
use crate::{API_KEY, BoxError, sqlite_server};

/// Creations in flight while seeding over HTTP.
const SEED_CONCURRENCY: usize = 16;

/// Step 5: server CPU per health tick at each count of `--health-dashboards`, on one server whose
/// dashboards are added between the windows.
pub async fn health(args: &Args, fleet: &Fleet) -> Result<Vec<HealthPoint>, BoxError> {
    let dir = TempDir::new("health")?;
    let env = vec![(
        "TETHER_WS__HEALTH_INTERVAL_MS",
        args.health_interval.as_millis().to_string(),
    )];
    let mut server = sqlite_server(args, &dir, env)?;
    let result = health_windows(args, fleet, &mut server).await;
    if let Err(e) = fleet.close_all().await {
        eprintln!("  could not close the dashboards: {e}");
    }
    server::stop(&mut server);
    result
}

async fn health_windows(
    args: &Args,
    fleet: &Fleet,
    server: &mut Server,
) -> Result<Vec<HealthPoint>, BoxError> {
    let api = Api::new(server.base_url(), API_KEY);
    let ws = server::ws_url(server, args.health_summary);
    let pid = Pid::Of(server.pid());
    let ticks_per_s = procfs::clock_ticks() as f64;
    if args.health_sessions > 0 {
        let ids = (0..args.health_sessions)
            .map(|i| format!("h-{i}"))
            .collect();
        api.seed(ids, "bench", SEED_CONCURRENCY).await?;
    }
    let mut counts = args.health_dashboards.clone();
    counts.sort_unstable();
    counts.dedup();
    let mut connected = 0;
    let mut points = Vec::new();
    for n in counts {
        if n > connected {
            let ramp = fleet
                .connect(&ws, API_KEY, 0, n - connected, args.handshakes)
                .await?;
            if ramp.failed > 0 {
                return Err(format!(
                    "{} handshakes failed: {}",
                    ramp.failed,
                    ramp.first_error.unwrap_or_default()
                )
                .into());
            }
            connected = n;
        }
        tokio::time::sleep(args.settle).await;
        let cpu0 = procfs::cpu_ticks(pid)?;
        let sched0 = procfs::sched_time(pid)?;
        let own0 = procfs::cpu_ticks(Pid::This)?;
        let machine0 = procfs::machine_busy_ticks()?;
        let frames0 = fleet.health_frames();
        let t0 = Instant::now();
        tokio::time::sleep(args.health_window).await;
        let cpu = (procfs::cpu_ticks(pid)?.saturating_sub(cpu0)) as f64 / ticks_per_s;
        let sched = procfs::sched_time(pid)?.saturating_sub(sched0).as_nanos() as f64 / 1e9;
        let own = (procfs::cpu_ticks(Pid::This)?.saturating_sub(own0)) as f64 / ticks_per_s;
        let machine = (procfs::machine_busy_ticks()?.saturating_sub(machine0)) as f64 / ticks_per_s;
        let frames = fleet.health_frames().saturating_sub(frames0) as f64;
        let window = t0.elapsed().as_secs_f64();
        let ticks = if n > 0 {
            frames / n as f64
        } else {
            window / args.health_interval.as_secs_f64()
        };
        let point = HealthPoint {
            n,
            cpu,
            sched,
            window,
            ticks,
            bench_cpu: own,
            machine,
            counted: api.dashboards().await?,
            open: fleet.status().await?.open,
        };
        eprintln!(
            "  N = {n}: {:.1} ms CPU in {window:.1} s, {ticks:.0} ticks, {:.0} µs per tick",
            cpu * 1e3,
            point.per_tick_us()
        );
        points.push(point);
    }
    Ok(points)
}
