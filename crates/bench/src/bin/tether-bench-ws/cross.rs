//! Step 7: delivery across two instances on one fresh PostgreSQL database.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tether_persistence::admin;

use crate::args::Args;
use crate::fleet::Fleet;
use crate::http::Api;
use crate::report::Cross;
use crate::rounds::round;
use crate::server::{self, Launch, TempDir};
use crate::{API_KEY, BoxError, SECRET};

/// Step 7: two instances on one fresh PostgreSQL database.
pub async fn cross(args: &Args, fleet: &Fleet, admin_url: &str) -> Result<Cross, BoxError> {
    let name = format!("tether_bench_ws_{}", server::run_tag());
    let url = admin::create_database(admin_url, &name).await?;
    let dir = TempDir::new("pg")?;
    let result = cross_on(args, fleet, &url, dir.path()).await;
    if let Err(e) = fleet.close_all().await {
        eprintln!("  could not close the dashboards: {e}");
    }
    if let Err(e) = admin::drop_database(admin_url, &name).await {
        eprintln!("  could not drop the bench database {name}: {e}");
    }
    result
}

async fn cross_on(
    args: &Args,
    fleet: &Fleet,
    url: &str,
    workdir: &Path,
) -> Result<Cross, BoxError> {
    let launch = Launch {
        cpu: args.pin.then_some(crate::SERVER_CPU),
        ..Launch::new(&args.tether, workdir, url, API_KEY, SECRET)
    };
    // One after the other: the second finds the schema migrated (concurrent starts are safe too,
    // but are not what is measured here).
    let mut a = launch.start()?;
    let mut b = launch.start()?;
    eprintln!(
        "  A: pid {} at {}; B: pid {} at {}",
        a.pid(),
        a.base_url(),
        b.pid(),
        b.base_url()
    );
    let api = Api::new(a.base_url(), API_KEY);
    for (group, server) in [(0u8, &a), (1u8, &b)] {
        let ramp = fleet
            .connect(&server::ws_url(server, false), API_KEY, group, 1, 1)
            .await?;
        if ramp.ok != 1 {
            return Err(format!("dashboard: {}", ramp.first_error.unwrap_or_default()).into());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!(
        "  {} creations through A, {} ms apart",
        args.pg_events,
        args.pg_spacing.as_millis()
    );
    let mut rounds = round(
        &api,
        fleet,
        "pg",
        args.pg_events,
        args.pg_spacing,
        &[(0, 1), (1, 1)],
    )
    .await?
    .into_iter();
    let local = rounds.next().unwrap_or_default();
    let remote = rounds.next().unwrap_or_default();
    // Per event, how much later B had it than A: the cost of the NOTIFY path itself.
    let on_a: HashMap<u32, Instant> = local.arrivals.iter().copied().collect();
    let mut lag_us: Vec<i64> = remote
        .arrivals
        .iter()
        .filter_map(|(e, b)| {
            let a = on_a.get(e)?;
            Some(if b >= a {
                b.duration_since(*a).as_micros() as i64
            } else {
                -(a.duration_since(*b).as_micros() as i64)
            })
        })
        .collect();
    lag_us.sort_unstable();
    let (local, remote) = (local.finish(), remote.finish());
    eprintln!(
        "    on A {}; on B {}",
        local.latency.triple(),
        remote.latency.triple()
    );
    fleet.close_all().await?;
    server::stop(&mut a);
    server::stop(&mut b);
    Ok(Cross {
        local,
        remote,
        lag_us,
    })
}
