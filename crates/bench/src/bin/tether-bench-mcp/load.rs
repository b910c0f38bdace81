//! The request patterns: opening MCP sessions, the closed loop, and one call per session (the
//! restore phase). All on the one actix-rt thread of the caller, like `tether-bench`'s generator.

use std::rc::Rc;
use std::time::{Duration, Instant};

use tether_bench::samples::{Samples, Summary};

use crate::client::{Client, Failure, Op};

/// Pause after a failed request in the closed loop, so that a server that fails fast does not turn
/// the loop into a flood of errors.
const AFTER_FAILURE: Duration = Duration::from_millis(10);

/// The outcome of one measured run.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Requests answered as expected.
    pub ok: u64,
    /// Requests that were not (each counted once).
    pub errors: u64,
    /// Of the errors, those the server answered with a 5xx status.
    pub server_errors: u64,
    /// Wall time from the start of the run to its last answer.
    pub elapsed: Duration,
    /// Latency of the successful requests.
    pub latency: Summary,
    /// The first failure, to show what went wrong.
    pub first_error: Option<String>,
}

impl Tally {
    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }
}

/// One worker's share of a run, merged into a [`Tally`] at the end.
struct Part {
    ok: u64,
    errors: u64,
    server_errors: u64,
    first_error: Option<String>,
    samples: Samples,
}

impl Part {
    fn new(capacity: usize) -> Self {
        Self {
            ok: 0,
            errors: 0,
            server_errors: 0,
            first_error: None,
            samples: Samples::with_capacity(capacity),
        }
    }

    fn record(&mut self, outcome: &Result<(), Failure>, took: Duration) {
        match outcome {
            Ok(()) => {
                self.ok += 1;
                self.samples.push(took);
            }
            Err(f) => self.fail(f),
        }
    }

    fn fail(&mut self, f: &Failure) {
        self.errors += 1;
        if f.is_server_error() {
            self.server_errors += 1;
        }
        self.first_error.get_or_insert_with(|| f.message.clone());
    }
}

/// Joins the workers' parts (and whatever else each returned) into one tally.
async fn merge<T>(
    tasks: Vec<actix_rt::task::JoinHandle<(Part, T)>>,
    start: Instant,
) -> (Tally, Vec<T>) {
    let mut tally = Tally::default();
    let mut samples = Samples::default();
    let mut extra = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok((part, x)) => {
                tally.ok += part.ok;
                tally.errors += part.errors;
                tally.server_errors += part.server_errors;
                if tally.first_error.is_none() {
                    tally.first_error = part.first_error;
                }
                samples.extend(part.samples);
                extra.push(x);
            }
            Err(e) => {
                tally.errors += 1;
                tally
                    .first_error
                    .get_or_insert(format!("worker failed: {e}"));
            }
        }
    }
    tally.elapsed = start.elapsed();
    tally.latency = samples.summary();
    (tally, extra)
}

/// Opens `n` MCP sessions (`initialize` + `notifications/initialized`), `concurrency` at a time.
/// The ids of those that opened, in order, and the handshakes' tally (latency of both requests
/// together).
pub async fn open_sessions(
    client: Rc<Client>,
    n: usize,
    concurrency: usize,
    client_name: &'static str,
) -> (Vec<String>, Tally) {
    let start = Instant::now();
    let concurrency = concurrency.clamp(1, n.max(1));
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let client = client.clone();
        tasks.push(actix_rt::spawn(async move {
            let mut part = Part::new(n / concurrency + 1);
            let mut ids = Vec::new();
            for i in (w..n).step_by(concurrency) {
                let sent = Instant::now();
                match client.open_mcp_session(client_name).await {
                    Ok(sid) => {
                        part.record(&Ok(()), sent.elapsed());
                        ids.push((i, sid));
                    }
                    Err(f) => part.fail(&f),
                }
            }
            (part, ids)
        }));
    }
    let (tally, ids) = merge(tasks, start).await;
    let mut ids: Vec<(usize, String)> = ids.into_iter().flatten().collect();
    ids.sort_unstable_by_key(|(i, _)| *i);
    (ids.into_iter().map(|(_, sid)| sid).collect(), tally)
}

/// Closed loop: one worker per session in `sids`, each sending its next `op` as soon as the
/// previous one has answered, for `duration`. `ids` numbers the JSON-RPC requests across runs.
pub async fn closed(
    client: Rc<Client>,
    op: Op,
    sids: &[String],
    duration: Duration,
    ids: &mut u64,
) -> Tally {
    closed_over(client, op, sids, sids.len(), duration, ids).await
}

/// [`closed`] with `workers` workers spread over `sids`: worker `w`'s `n`-th request goes to
/// `sids[(w + n * workers) % sids.len()]`, so every session gets its share.
pub async fn closed_over(
    client: Rc<Client>,
    op: Op,
    sids: &[String],
    workers: usize,
    duration: Duration,
    ids: &mut u64,
) -> Tally {
    let start = Instant::now();
    let until = start + duration;
    // A cap far above what 2 cores reach: bounded by count as well as time.
    let max_ops = (duration.as_secs_f64() * 100_000.0) as u64 + 1;
    let first_id = *ids;
    // JSON-RPC ids unique across workers: several may share a session.
    *ids += max_ops * workers as u64;
    let all: Rc<Vec<String>> = Rc::new(sids.to_vec());
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let client = client.clone();
        let all = all.clone();
        tasks.push(actix_rt::spawn(async move {
            let mut part = Part::new(4096);
            let mut n = 0u64;
            while n < max_ops && Instant::now() < until {
                let sid = &all[(w + n as usize * workers) % all.len()];
                n += 1;
                let sent = Instant::now();
                let id = first_id + (n - 1) * workers as u64 + w as u64 + 1;
                let outcome = client.op(op, sid, id).await;
                part.record(&outcome, sent.elapsed());
                if outcome.is_err() {
                    actix_rt::time::sleep(AFTER_FAILURE).await;
                }
            }
            (part, ())
        }));
    }
    merge(tasks, start).await.0
}

/// One `tools/call session_info` per session in `sids` (JSON-RPC id `id`), `concurrency` at a
/// time, in order.
pub async fn once_each(client: Rc<Client>, sids: &[String], concurrency: usize, id: u64) -> Tally {
    let start = Instant::now();
    let sids: Rc<Vec<String>> = Rc::new(sids.to_vec());
    let concurrency = concurrency.clamp(1, sids.len().max(1));
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let client = client.clone();
        let sids = sids.clone();
        tasks.push(actix_rt::spawn(async move {
            let mut part = Part::new(sids.len() / concurrency + 1);
            for sid in sids.iter().skip(w).step_by(concurrency) {
                let sent = Instant::now();
                let outcome = client.session_info(sid, id).await;
                part.record(&outcome, sent.elapsed());
            }
            (part, ())
        }));
    }
    merge(tasks, start).await.0
}

/// One client, one request at a time: `n` times `op` on session `sid`. `ids` numbers the JSON-RPC
/// requests across runs.
pub async fn sequential(client: &Client, op: Op, sid: &str, n: usize, ids: &mut u64) -> Tally {
    let start = Instant::now();
    let mut part = Part::new(n);
    for _ in 0..n {
        *ids += 1;
        let sent = Instant::now();
        let outcome = client.op(op, sid, *ids).await;
        part.record(&outcome, sent.elapsed());
    }
    Tally {
        ok: part.ok,
        errors: part.errors,
        server_errors: part.server_errors,
        elapsed: start.elapsed(),
        latency: part.samples.summary(),
        first_error: part.first_error,
    }
}
