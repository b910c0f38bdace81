//! The physical limit: `Database::consume_token` alone, the database work of a reconnect (the
//! compare-and-swap `UPDATE ... RETURNING` plus its outbox event), with no HTTP, JSON, JWT or hashing
//! around it.

use std::time::{Duration, Instant};

use tether_domain::{
    Change, Clock, EventKind, SessionId, SessionStore, SystemClock, Timestamp, TokenHash,
    UpdateType,
};
use tether_persistence::Database;

use crate::BoxError;
use crate::args::Args;
use crate::backend::{created, new_session};
use crate::stats::{Latencies, Run};

/// Token lifetime written with each rotation: the server's default, far beyond any run.
const LIFETIME: Duration = Duration::from_secs(15 * 60);

/// A session owned by one worker, with the step of its hash chain.
struct Slot {
    id: SessionId,
    worker: u32,
    index: u32,
    step: u64,
}

/// The live hash of step `step` of session (`worker`, `index`). Distinct for every triple and free to
/// compute, so the loop measures the statement and not SHA-256 (the server's hashing belongs to the
/// full path).
fn chain_hash(worker: u32, index: u32, step: u64) -> TokenHash {
    let mut b = [0xB7u8; 32];
    b[..8].copy_from_slice(&step.to_le_bytes());
    b[8..12].copy_from_slice(&worker.to_le_bytes());
    b[12..16].copy_from_slice(&index.to_le_bytes());
    TokenHash::from_bytes(b)
}

/// The change a reconnect records (its outbox event is written in the same transaction).
fn reconnected(at: Timestamp) -> Change {
    Change {
        at,
        event: EventKind::Updated(UpdateType::Reconnected),
    }
}

/// The change a minted token records.
fn token_issued(at: Timestamp) -> Change {
    Change {
        at,
        event: EventKind::Updated(UpdateType::TokenIssued),
    }
}

impl Slot {
    fn live(&self) -> TokenHash {
        chain_hash(self.worker, self.index, self.step)
    }
    fn next(&self) -> TokenHash {
        chain_hash(self.worker, self.index, self.step + 1)
    }
}

/// Creates the workers' sessions (named `bare-W-K`, beside the seeded ones) with their first token,
/// then runs a warm-up and a measured closed loop of `args.concurrency` workers.
///
/// # Errors
/// When the sessions cannot be created; failures inside the loop are counted, not returned.
pub async fn run(db: &Database, args: &Args) -> Result<Run, BoxError> {
    let mut workers = Vec::with_capacity(args.concurrency);
    let now = SystemClock.now();
    let expires = now.plus(LIFETIME);
    for w in 0..args.concurrency {
        let mut slots = Vec::with_capacity(args.sessions_per_worker);
        for k in 0..args.sessions_per_worker {
            let slot = Slot {
                id: SessionId::parse(&format!("bare-{w}-{k}"))?,
                worker: u32::try_from(w)?,
                index: u32::try_from(k)?,
                step: 0,
            };
            db.insert(&new_session(slot.id.as_str())?, created(now))
                .await?;
            db.set_token(&slot.id, &slot.live(), expires, token_issued(now))
                .await?;
            slots.push(slot);
        }
        workers.push(slots);
    }
    let (workers, _) = round(db, workers, args.warmup).await?;
    let (_, run) = round(db, workers, args.duration).await?;
    Ok(run)
}

/// Per-worker outcome.
struct Tally {
    ok: u64,
    errors: u64,
    latency: Latencies,
    first_error: Option<String>,
}

/// One closed-loop round of `duration`: each worker chains its own sessions' tokens in turn.
async fn round(
    db: &Database,
    workers: Vec<Vec<Slot>>,
    duration: Duration,
) -> Result<(Vec<Vec<Slot>>, Run), BoxError> {
    let start = Instant::now();
    let until = start + duration;
    // A cap far above what 2 cores reach, so that the loop is bounded by count as well as time.
    let max_ops = (duration.as_secs_f64() * 200_000.0) as u64 + 1;
    let mut tasks = Vec::with_capacity(workers.len());
    for mut slots in workers {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = Tally {
                ok: 0,
                errors: 0,
                latency: Latencies::with_capacity(4096),
                first_error: None,
            };
            let mut i = 0usize;
            let mut ops = 0u64;
            while ops < max_ops && Instant::now() < until && !slots.is_empty() {
                let n = slots.len();
                let slot = &mut slots[i % n];
                i += 1;
                ops += 1;
                let sent = Instant::now();
                let now = SystemClock.now();
                let result = db
                    .consume_token(
                        &slot.id,
                        &slot.live(),
                        &slot.next(),
                        now.plus(LIFETIME),
                        reconnected(now),
                    )
                    .await;
                match result {
                    Ok(Some(_)) => {
                        slot.step += 1;
                        t.ok += 1;
                        t.latency.push(sent.elapsed());
                    }
                    other => {
                        t.errors += 1;
                        if t.first_error.is_none() {
                            t.first_error = Some(match other {
                                Err(e) => format!("consume_token: {e}"),
                                _ => "consume_token matched no row".into(),
                            });
                        }
                        // Whether a timed-out statement applied is unknown: put the chain back on a
                        // known hash so the next attempt can succeed.
                        slot.step += 1;
                        let now = SystemClock.now();
                        let _ = db
                            .set_token(
                                &slot.id,
                                &slot.live(),
                                now.plus(LIFETIME),
                                token_issued(now),
                            )
                            .await;
                    }
                }
            }
            (slots, t)
        }));
    }
    let mut back = Vec::with_capacity(tasks.len());
    let mut run = Run::default();
    let mut latency = Latencies::default();
    for task in tasks {
        let (slots, t) = task.await?;
        back.push(slots);
        run.ok += t.ok;
        run.errors += t.errors;
        latency.extend(t.latency);
        if run.first_error.is_none() {
            run.first_error = t.first_error;
        }
    }
    run.elapsed = start.elapsed();
    run.latency = latency.summary();
    Ok((back, run))
}
