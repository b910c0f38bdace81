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
use std::sync::atomic::Ordering;
use std::time::Duration;

use deadpool::managed::WeakPool;
use diesel::connection::SimpleConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::deadpool::Pool;

use crate::conn::SqliteWriter;
use crate::db::SqliteConn;

/// How often the WAL is checkpointed while writes come in. At ~5,000 reconnects/s a group commit
/// writes a few thousand pages a second, so the WAL stays around 1,000 pages, SQLite's own default.
pub(crate) const INTERVAL: Duration = Duration::from_millis(200);

/// Starts the checkpoints of the SQLite file behind `pool` on `runtime`, after the writes that
/// `writer` records. The task holds the pool only while checkpointing, so it ends (and the pool
/// closes, which checkpoints a last time and removes the WAL) once the last `Database` using the
/// pool is dropped.
pub(crate) fn start(
    runtime: &tokio::runtime::Handle,
    pool: &Pool<SqliteConn>,
    writer: Arc<SqliteWriter>,
) {
    runtime.spawn(run(pool.weak(), writer));
}

async fn run(pool: WeakPool<AsyncDieselConnectionManager<SqliteConn>>, writer: Arc<SqliteWriter>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        checkpoint_if_written(&pool, &writer).await;
    }
}

/// One passive checkpoint if `writer` wrote since the last one.
async fn checkpoint_if_written(pool: &Pool<SqliteConn>, writer: &SqliteWriter) {
    if !writer.wrote.swap(false, Ordering::AcqRel) {
        return;
    }
    if let Err(e) = checkpoint(pool).await {
        // Retried at the next interval; until then the WAL only grows.
        writer.wrote.store(true, Ordering::Release);
        tracing::warn!(error = %e, "the SQLite WAL checkpoint failed");
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

#[cfg(test)]
mod tests {
    //! On a pool of its own (no task started), so that nothing but the test checkpoints.

    use std::path::{Path, PathBuf};

    use diesel::sql_types::BigInt;
    use diesel::{Connection as _, QueryableByName, RunQueryDsl as _, SqliteConnection};
    use diesel_async::SimpleAsyncConnection as _;

    use super::*;
    use crate::Options;
    use crate::conn::SqliteWriter;

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    /// Rows of `settings` in the database file alone, read from a copy of it without its WAL: what
    /// checkpoints have copied there.
    fn rows_in_file(file: &Path) -> i64 {
        let copy = file.with_file_name("copy.db");
        let _ = std::fs::remove_file(copy.with_extension("db-wal"));
        std::fs::copy(file, &copy).unwrap();
        let mut c = SqliteConnection::establish(copy.to_str().unwrap()).unwrap();
        let rows: Vec<Count> = diesel::sql_query("SELECT count(*) AS n FROM settings")
            .load(&mut c)
            .unwrap();
        rows[0].n
    }

    async fn write(pool: &Pool<SqliteConn>, name: &str) {
        let sql = format!("INSERT INTO settings (name, value) VALUES ('{name}', 'v')");
        pool.get().await.unwrap().batch_execute(&sql).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_reaches_the_database_file_at_the_next_checkpoint_only() {
        let db = tether_testkit::TestDb::sqlite();
        let file = PathBuf::from(db.url().strip_prefix("sqlite://").unwrap());
        // Migrated (creates `settings`), then closed: the task it started ends with its pool.
        drop(
            crate::Database::connect(db.url(), Options::default())
                .await
                .unwrap(),
        );
        let pool = crate::db::sqlite_pool(file.display().to_string(), Options::default()).unwrap();
        let writer = SqliteWriter::new();

        write(&pool, "first").await;
        // Far below the 1,000 WAL pages at which SQLite's automatic checkpoint, which every pooled
        // connection turns off, would have copied it; and nothing recorded a write yet.
        checkpoint_if_written(&pool, &writer).await;
        assert_eq!(
            rows_in_file(&file),
            0,
            "checkpointed without a recorded write"
        );

        writer.wrote.store(true, Ordering::Release);
        checkpoint_if_written(&pool, &writer).await;
        assert_eq!(rows_in_file(&file), 1);
        assert!(
            !writer.wrote.load(Ordering::Acquire),
            "the write is cleared once checkpointed"
        );

        // And again after an idle round.
        checkpoint_if_written(&pool, &writer).await;
        write(&pool, "second").await;
        writer.wrote.store(true, Ordering::Release);
        checkpoint_if_written(&pool, &writer).await;
        assert_eq!(rows_in_file(&file), 2);
        drop(pool);
        db.remove().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_task_does_not_keep_the_pool_open() {
        let db = tether_testkit::TestDb::sqlite();
        let file = PathBuf::from(db.url().strip_prefix("sqlite://").unwrap());
        drop(
            crate::Database::connect(db.url(), Options::default())
                .await
                .unwrap(),
        );
        let pool = crate::db::sqlite_pool(file.display().to_string(), Options::default()).unwrap();
        let task = tokio::spawn(run(pool.weak(), Arc::new(SqliteWriter::new())));
        write(&pool, "one").await;
        let wal = file.with_extension("db-wal");
        assert!(wal.exists(), "WAL mode keeps a -wal file while connected");

        drop(pool);
        // The task ends by itself at its next tick, holding nothing: closing the last connection
        // checkpoints and removes the WAL.
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the task ended")
            .unwrap();
        assert!(!wal.exists(), "the WAL outlived the pool");
        db.remove().await;
    }
}
