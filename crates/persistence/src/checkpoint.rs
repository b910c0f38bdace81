//! SQLite's WAL checkpoints, off the commit path.
//!
//! In WAL mode a commit appends to the `-wal` file; a checkpoint copies those pages back into the
//! database file and, with `synchronous = NORMAL`, is the one step that waits for the disk (it syncs
//! both files). SQLite's default runs it inside whichever commit takes the WAL past 1,000 pages, while
//! that commit still holds the writer's turn: every writer queued behind it waits for two syncs (the
//! p99 of a reconnect at saturation doubled, 12.6 → 24.5 ms, `BENCHMARKS.md`). So every pooled
//! connection turns the automatic checkpoint off, and this task runs a `PASSIVE` checkpoint on a
//! connection of its own every [`INTERVAL`] that saw a write. A passive checkpoint never blocks the
//! writer nor the readers; it copies what no reader still needs, and the WAL starts over once it is
//! all copied. The WAL is therefore bounded by what is written in about one interval (plus whatever
//! an open read transaction pins, as with SQLite's own checkpoints).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool::managed::WeakPool;
use diesel::connection::SimpleConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::deadpool::Pool;

use crate::db::SqliteConn;

/// How often the WAL is checkpointed while writes come in. At ~5,000 reconnects/s a group commit
/// writes a few thousand pages a second, so the WAL stays around 1,000 pages, SQLite's own default.
pub(crate) const INTERVAL: Duration = Duration::from_millis(200);

/// Starts the checkpoints of the SQLite file behind `pool` on `runtime`. `wrote` is set by every
/// write; the task clears it before each checkpoint. It holds the pool only while checkpointing, so
/// it ends (and the pool closes, which checkpoints a last time and removes the WAL) once the last
/// `Database` using the pool is dropped.
pub(crate) fn start(
    runtime: &tokio::runtime::Handle,
    pool: &Pool<SqliteConn>,
    wrote: Arc<AtomicBool>,
) {
    runtime.spawn(run(pool.weak(), wrote));
}

async fn run(pool: WeakPool<AsyncDieselConnectionManager<SqliteConn>>, wrote: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        if !wrote.swap(false, Ordering::AcqRel) {
            continue;
        }
        if let Err(e) = checkpoint(&pool).await {
            // Retried at the next interval; until then the WAL only grows.
            wrote.store(true, Ordering::Release);
            tracing::warn!(error = %e, "the SQLite WAL checkpoint failed");
        }
    }
}

/// One passive checkpoint, on a pooled connection, in one call to the blocking pool.
async fn checkpoint(pool: &Pool<SqliteConn>) -> Result<(), crate::Error> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| crate::Error::Pool(Box::new(e)))?;
    conn.spawn_blocking(|c| c.batch_execute("PRAGMA wal_checkpoint(PASSIVE)"))
        .await?;
    Ok(())
}
