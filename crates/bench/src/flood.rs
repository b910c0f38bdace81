//! A legitimate client's reconnect latency, quiet and during a flood of garbage reconnects (issue 7
//! item 11), against a server that runs the shipped rate limits and connection caps.
//!
//! The legitimate client reconnects its own sessions from 127.0.0.1 in an open loop at a fixed rate,
//! first alone, then while a second thread, from other loopback addresses (127.0.0.2 on), sends
//! JWT-shaped reconnects with bad signatures aimed at random session ids as fast as the server
//! answers them. The flood runs on its own thread and actix system so that the client's event loop
//! never waits behind it; both share the machine's two cores with the server, which a real attacker
//! on another machine would not.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use awc::http::header::CONTENT_TYPE;

use crate::BoxError;
use crate::load::{self, Ctx, Open};

/// Legitimate sessions per phase: at the default rate each reconnects 15 times a minute, well inside
/// the shipped per-session limit (60).
const LEGIT_SESSIONS: usize = 200;
/// The legitimate client's rate, per second.
pub const LEGIT_RATE: u32 = 50;
/// Length of the quiet phase.
const QUIET: Duration = Duration::from_secs(10);
/// The flooded phase ends with the flood, or after this at the latest.
const FLOOD_CAP: Duration = Duration::from_secs(180);

/// What the flood phase measured.
#[derive(Debug, Default)]
pub struct Flood {
    /// The legitimate client alone.
    pub quiet: Open,
    /// The legitimate client during the flood.
    pub flooded: Open,
    /// Garbage requests answered, by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Garbage requests that got no answer (connection refused or reset by the caps).
    pub unanswered: u64,
    /// Garbage requests sent.
    pub sent: u64,
    /// From the first garbage request to the last answer.
    pub elapsed: Duration,
    /// Source addresses of the flood.
    pub addresses: usize,
    /// Server RSS before and after the flood, in KiB.
    pub rss: (u64, u64),
}

impl Flood {
    /// p99 during the flood over p99 alone.
    pub fn ratio(&self) -> f64 {
        let quiet = self.quiet.run.latency.pct_ms(99.0);
        if quiet > 0.0 {
            self.flooded.run.latency.pct_ms(99.0) / quiet
        } else {
            f64::NAN
        }
    }
}

/// The flood's shape.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Garbage requests in all.
    pub requests: u64,
    /// Connections, spread over the addresses.
    pub connections: usize,
    /// Source addresses, 127.0.0.2 on.
    pub addresses: usize,
}

/// Runs both phases against the server at `base_url`; `rss` reads the server's resident memory.
///
/// # Errors
/// When the legitimate client cannot set up its sessions or the flood thread fails.
pub async fn run(
    base_url: &str,
    api_key: &str,
    shape: Shape,
    rss: impl Fn() -> Result<u64, BoxError>,
) -> Result<Flood, BoxError> {
    let ctx = Rc::new(Ctx::new(base_url, api_key, 64));
    let ids: Vec<String> = (0..2 * LEGIT_SESSIONS)
        .map(|i| format!("legit-{i:05}"))
        .collect();
    let created = load::create_sessions(ctx.clone(), ids.clone(), 16).await;
    if created.errors > 0 {
        return Err(format!(
            "legitimate sessions: {} creations failed: {}",
            created.errors,
            created.first_error.unwrap_or_default()
        )
        .into());
    }
    let mut slots = Vec::with_capacity(ids.len());
    for id in &ids {
        slots.push(ctx.slot(id).await?);
    }
    let flooded_slots = slots.split_off(LEGIT_SESSIONS);

    eprintln!(
        "  flood: legitimate client alone ({LEGIT_RATE} req/s for {:.0} s)",
        QUIET.as_secs_f64()
    );
    let quiet = load::open(ctx.clone(), slots, LEGIT_RATE, QUIET, || false).await;
    eprintln!("    p99 {:.2} ms", quiet.run.latency.pct_ms(99.0));

    eprintln!(
        "  flood: {} garbage reconnects from {} addresses over {} connections",
        shape.requests, shape.addresses, shape.connections
    );
    let rss_before = rss()?;
    let done = Arc::new(AtomicBool::new(false));
    let flood = {
        let (base, done) = (base_url.to_owned(), done.clone());
        std::thread::Builder::new()
            .name("tether-bench-flood".into())
            .spawn(move || {
                let tally = actix_rt::System::new().block_on(garbage(&base, shape));
                done.store(true, Ordering::Release);
                tally
            })?
    };
    let flooded = load::open(ctx, flooded_slots, LEGIT_RATE, FLOOD_CAP, || {
        done.load(Ordering::Acquire)
    })
    .await;
    let tally = flood.join().map_err(|_| "the flood thread panicked")?;
    eprintln!(
        "    p99 {:.2} ms; flood {:.0} req/s",
        flooded.run.latency.pct_ms(99.0),
        tally.sent as f64 / tally.elapsed.as_secs_f64().max(1e-9)
    );
    Ok(Flood {
        quiet,
        flooded,
        statuses: tally.statuses,
        unanswered: tally.unanswered,
        sent: tally.sent,
        elapsed: tally.elapsed,
        addresses: shape.addresses,
        rss: (rss_before, rss()?),
    })
}

/// What the flood thread counted.
struct Tally {
    statuses: BTreeMap<u16, u64>,
    unanswered: u64,
    sent: u64,
    elapsed: Duration,
}

/// A reconnect token as an attacker would forge one: a well-formed HS256 JWT whose signature is
/// wrong, so the server does the whole check (decode and HMAC) before refusing it.
fn forged(n: u64) -> String {
    // {"alg":"HS256","typ":"JWT"}
    const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
    format!(
        "{HEADER}.eyJzZXNzaW9uX2lkIjoi{n:016x}.{:043x}",
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
}

/// Sends `shape.requests` garbage reconnects, `shape.connections` at a time.
async fn garbage(base_url: &str, shape: Shape) -> Tally {
    let per_address = shape.connections.div_ceil(shape.addresses.max(1));
    let remaining = Rc::new(Cell::new(shape.requests));
    let tally = Rc::new(RefCell::new(Tally {
        statuses: BTreeMap::new(),
        unanswered: 0,
        sent: 0,
        elapsed: Duration::ZERO,
    }));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(shape.connections);
    for a in 0..shape.addresses.max(1) {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (a % 250) as u8));
        let client = awc::Client::builder()
            .connector(
                awc::Connector::new()
                    .local_address(source)
                    .limit(per_address)
                    .conn_keep_alive(Duration::from_secs(3)),
            )
            .timeout(Duration::from_secs(10))
            .finish();
        for _ in 0..per_address {
            let (client, remaining, tally) = (client.clone(), remaining.clone(), tally.clone());
            let api = format!("{base_url}/api/mcp");
            tasks.push(actix_rt::spawn(async move {
                loop {
                    let n = remaining.get();
                    if n == 0 {
                        break;
                    }
                    remaining.set(n - 1);
                    let url = format!("{api}/sessions/flood-{:04}/reconnect", n % 10_000);
                    let body = format!(r#"{{"token":"{}"}}"#, forged(n));
                    let answer = client
                        .post(url)
                        .insert_header((CONTENT_TYPE, "application/json"))
                        .send_body(body)
                        .await;
                    let status = match answer {
                        Ok(mut resp) => {
                            // Reading the body returns the connection to the pool.
                            let _ = resp.body().await;
                            Some(resp.status().as_u16())
                        }
                        Err(_) => None,
                    };
                    let mut t = tally.borrow_mut();
                    t.sent += 1;
                    match status {
                        Some(s) => *t.statuses.entry(s).or_default() += 1,
                        None => t.unanswered += 1,
                    }
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut out = tally.replace(Tally {
        statuses: BTreeMap::new(),
        unanswered: 0,
        sent: 0,
        elapsed: Duration::ZERO,
    });
    out.elapsed = start.elapsed();
    out
}
