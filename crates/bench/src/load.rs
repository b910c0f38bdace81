//! The full reconnect path over HTTP against the real server: session creation, a closed loop at
//! saturation and an open loop at a fixed rate.
//!
//! Everything here runs on one actix-rt thread (awc's client is not `Send`): on a 2-core machine the
//! load generator then takes at most one core from the server, and usually much less.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use awc::http::header::CONTENT_TYPE;
use serde_json::Value;

use crate::stats::{Latencies, Run, Summary};

use tether_bench::http::REQUEST_TIMEOUT;

/// The HTTP client and what every request needs.
pub struct Ctx {
    client: awc::Client,
    api: String,
    key: String,
}

impl Ctx {
    /// A client for `base_url` (`http://127.0.0.1:PORT`) holding up to `connections` connections.
    pub fn new(base_url: &str, key: &str, connections: usize) -> Self {
        Self {
            client: tether_bench::http::client(connections),
            api: format!("{base_url}/api/mcp"),
            key: key.to_owned(),
        }
    }

    /// POSTs `body` (JSON, or nothing), with the API key when `auth`; returns status and body.
    async fn post(
        &self,
        url: &str,
        body: Option<String>,
        auth: bool,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let mut req = self.client.post(url);
        if auth {
            req = req.bearer_auth(&self.key);
        }
        let sent = match body {
            Some(b) => req
                .insert_header((CONTENT_TYPE, "application/json"))
                .send_body(b),
            None => req.send(),
        };
        let mut resp = sent.await.map_err(|e| format!("POST {url}: {e}"))?;
        // Reading the whole body returns the connection to the pool.
        let bytes = resp
            .body()
            .await
            .map_err(|e| format!("POST {url}: body: {e}"))?;
        Ok((resp.status(), bytes.to_vec()))
    }

    /// Creates session `id`.
    async fn create(&self, id: &str) -> Result<(), String> {
        let body = serde_json::json!({ "client_type": "bench", "session_id": id }).to_string();
        let url = format!("{}/sessions", self.api);
        match self.post(&url, Some(body), true).await? {
            (StatusCode::CREATED, _) => Ok(()),
            (status, b) => Err(format!(
                "create {id}: {status} {}",
                String::from_utf8_lossy(&b)
            )),
        }
    }

    /// Mints a reconnect token for `id` (replacing any live one).
    async fn mint(&self, id: &str) -> Result<String, String> {
        let url = format!("{}/sessions/{id}/token", self.api);
        match self.post(&url, None, true).await? {
            (StatusCode::OK, b) => token_of(&b),
            (status, b) => Err(format!(
                "token {id}: {status} {}",
                String::from_utf8_lossy(&b)
            )),
        }
    }

    /// One reconnect with the slot's token; on success the slot holds the rotated token.
    async fn reconnect(&self, slot: &mut Slot) -> Result<(), String> {
        let body = serde_json::json!({ "token": slot.token }).to_string();
        match self.post(&slot.url, Some(body), false).await? {
            (StatusCode::OK, b) => {
                slot.token = token_of(&b)?;
                Ok(())
            }
            (status, b) => Err(format!(
                "reconnect {}: {status} {}",
                slot.id,
                String::from_utf8_lossy(&b)
            )),
        }
    }

    /// A slot for session `id` with a freshly minted token.
    pub async fn slot(&self, id: &str) -> Result<Slot, String> {
        let token = match self.mint(id).await {
            Ok(t) => t,
            // Its creation may have been one of the reported failures: try once more.
            Err(_) => {
                let _ = self.create(id).await;
                self.mint(id).await?
            }
        };
        Ok(Slot {
            id: id.to_owned(),
            url: format!("{}/sessions/{id}/reconnect", self.api),
            token,
        })
    }

    /// After a failed reconnect the slot's token state is unknown (maybe consumed, maybe revoked as
    /// reused): start its chain again from a minted token. `false` when even that fails.
    async fn recover(&self, slot: &mut Slot) -> bool {
        match self.mint(&slot.id).await {
            Ok(t) => {
                slot.token = t;
                true
            }
            Err(_) => false,
        }
    }
}

fn token_of(body: &[u8]) -> Result<String, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("response is not JSON: {e}"))?;
    v.get("reconnect_token")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "response has no reconnect_token".into())
}

/// A session a worker owns, with the one token that is live for it.
pub struct Slot {
    id: String,
    url: String,
    token: String,
}

/// Creates `ids` over HTTP, `concurrency` at a time.
pub async fn create_sessions(ctx: Rc<Ctx>, ids: Vec<String>, concurrency: usize) -> Run {
    let start = Instant::now();
    let ids = Rc::new(ids);
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let ctx = ctx.clone();
        let ids = ids.clone();
        tasks.push(actix_rt::spawn(async move {
            let mut run = Run::default();
            let mut lat = Latencies::with_capacity(ids.len() / concurrency + 1);
            for id in ids.iter().skip(w).step_by(concurrency) {
                let sent = Instant::now();
                match ctx.create(id).await {
                    Ok(()) => {
                        run.ok += 1;
                        lat.push(sent.elapsed());
                    }
                    Err(e) => {
                        run.errors += 1;
                        run.first_error.get_or_insert(e);
                    }
                }
            }
            (run, lat)
        }));
    }
    merge(tasks, start).await.1
}

/// Joins per-worker results into one run, returning the workers' slots.
async fn merge<T>(
    tasks: Vec<actix_rt::task::JoinHandle<(T, Latencies)>>,
    start: Instant,
) -> (Vec<T>, Run)
where
    T: HasRun,
{
    let mut out = Vec::with_capacity(tasks.len());
    let mut run = Run::default();
    let mut lat = Latencies::default();
    for t in tasks {
        match t.await {
            Ok((mut part, l)) => {
                let r = part.take_run();
                run.ok += r.ok;
                run.errors += r.errors;
                if run.first_error.is_none() {
                    run.first_error = r.first_error;
                }
                lat.extend(l);
                out.push(part);
            }
            Err(e) => {
                run.errors += 1;
                run.first_error.get_or_insert(format!("worker failed: {e}"));
            }
        }
    }
    run.elapsed = start.elapsed();
    run.latency = lat.summary();
    (out, run)
}

/// A worker's result that carries a [`Run`] to merge.
trait HasRun {
    fn take_run(&mut self) -> Run;
}

impl HasRun for Run {
    fn take_run(&mut self) -> Run {
        std::mem::take(self)
    }
}

/// A worker's slots and its counts.
struct Worker {
    slots: Vec<Slot>,
    run: Run,
}

impl HasRun for Worker {
    fn take_run(&mut self) -> Run {
        std::mem::take(&mut self.run)
    }
}

/// Closed loop: each worker sends its next reconnect as soon as the previous one has answered,
/// cycling through its own sessions, for `duration`.
pub async fn closed(
    ctx: Rc<Ctx>,
    workers: Vec<Vec<Slot>>,
    duration: Duration,
) -> (Vec<Vec<Slot>>, Run) {
    let start = Instant::now();
    let until = start + duration;
    // A cap far above what 2 cores reach: bounded by count as well as time.
    let max_ops = (duration.as_secs_f64() * 100_000.0) as u64 + 1;
    let mut tasks = Vec::with_capacity(workers.len());
    for mut slots in workers {
        let ctx = ctx.clone();
        tasks.push(actix_rt::spawn(async move {
            let mut run = Run::default();
            let mut lat = Latencies::with_capacity(4096);
            let mut i = 0usize;
            let mut ops = 0u64;
            while ops < max_ops && Instant::now() < until && !slots.is_empty() {
                let idx = i % slots.len();
                i += 1;
                ops += 1;
                let sent = Instant::now();
                match ctx.reconnect(&mut slots[idx]).await {
                    Ok(()) => {
                        run.ok += 1;
                        lat.push(sent.elapsed());
                    }
                    Err(e) => {
                        run.errors += 1;
                        run.first_error.get_or_insert(e);
                        if !ctx.recover(&mut slots[idx]).await {
                            slots.swap_remove(idx);
                        }
                    }
                }
            }
            (Worker { slots, run }, lat)
        }));
    }
    let (workers, run) = merge(tasks, start).await;
    (workers.into_iter().map(|w| w.slots).collect(), run)
}

/// The outcome of an open-loop run.
#[derive(Debug, Default)]
pub struct Open {
    /// Requests scheduled.
    pub scheduled: u64,
    /// Counts, latencies (from the scheduled send time) and the time to the last answer.
    pub run: Run,
    /// Delay between each scheduled send time and the moment its request task started (timer
    /// granularity, a busy load-generator thread, or no free session): the load generator's share of
    /// the latencies, which include it.
    pub send_lag: Summary,
}

/// Open loop: one reconnect every `1/rate` s for `duration`, whatever the answers do. Latency is
/// measured from each request's scheduled time, so a stall shows up in every request it delays
/// (no coordinated omission). A request needs a session whose previous reconnect has answered; with
/// many sessions one is nearly always free, and waiting for one counts in the latency. `stop` ends
/// the schedule early (checked before each send).
pub async fn open(
    ctx: Rc<Ctx>,
    slots: Vec<Slot>,
    rate: u32,
    duration: Duration,
    stop: impl Fn() -> bool,
) -> Open {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let total = (duration.as_secs_f64() * f64::from(rate)).round() as u64;
    let owned = slots.len();
    let free = Rc::new(RefCell::new(VecDeque::from(slots)));
    let returned = Rc::new(tokio::sync::Notify::new());
    let tally = Rc::new(RefCell::new(OpenTally {
        run: Run::default(),
        latency: Latencies::with_capacity(usize::try_from(total).unwrap_or(0)),
        lag: Latencies::with_capacity(usize::try_from(total).unwrap_or(0)),
        last_answer: None,
        lost: 0,
    }));
    let mut out = Open {
        scheduled: total,
        ..Open::default()
    };
    let t0 = Instant::now() + Duration::from_millis(20);
    for i in 0..total {
        if stop() {
            out.scheduled = i;
            break;
        }
        let at = t0 + interval.mul_f64(i as f64);
        actix_rt::time::sleep_until(at.into()).await;
        // Wait (bounded) for a session whose last reconnect has answered.
        let slot = loop {
            if let Some(s) = free.borrow_mut().pop_front() {
                break Some(s);
            }
            if at.elapsed() > REQUEST_TIMEOUT
                || actix_rt::time::timeout(REQUEST_TIMEOUT, returned.notified())
                    .await
                    .is_err()
            {
                break None;
            }
        };
        let Some(mut slot) = slot else {
            let mut t = tally.borrow_mut();
            t.run.errors += 1;
            t.run
                .first_error
                .get_or_insert_with(|| "no free session for 10 s; open loop stopped".into());
            break;
        };
        let (ctx, free, returned, tally) =
            (ctx.clone(), free.clone(), returned.clone(), tally.clone());
        actix_rt::spawn(async move {
            let lag = at.elapsed();
            let outcome = ctx.reconnect(&mut slot).await;
            let latency = at.elapsed();
            let keep = match outcome {
                Ok(()) => {
                    let mut t = tally.borrow_mut();
                    t.run.ok += 1;
                    t.latency.push(latency);
                    true
                }
                Err(e) => {
                    {
                        let mut t = tally.borrow_mut();
                        t.run.errors += 1;
                        t.run.first_error.get_or_insert(e);
                    }
                    ctx.recover(&mut slot).await
                }
            };
            let mut t = tally.borrow_mut();
            t.last_answer = Some(Instant::now());
            t.lag.push(lag);
            if keep {
                free.borrow_mut().push_back(slot);
            } else {
                // A session whose chain cannot be restarted is never handed out again.
                t.lost += 1;
            }
            returned.notify_one();
        });
    }
    // Let the requests in flight answer (bounded).
    let deadline = Instant::now() + REQUEST_TIMEOUT * 2;
    while free.borrow().len() + tally.borrow().lost < owned && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    let mut t = tally.borrow_mut();
    let mut run = std::mem::take(&mut t.run);
    run.elapsed = t
        .last_answer
        .map_or(Duration::ZERO, |last| last.saturating_duration_since(t0));
    run.latency = std::mem::take(&mut t.latency).summary();
    out.run = run;
    out.send_lag = std::mem::take(&mut t.lag).summary();
    out
}

/// What the open loop's request tasks report back.
struct OpenTally {
    run: Run,
    latency: Latencies,
    lag: Latencies,
    last_answer: Option<Instant>,
    lost: usize,
}
