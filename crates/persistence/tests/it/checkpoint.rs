//! SQLite's WAL checkpoints run beside the writer, not inside its commits (`checkpoint.rs`): what a
//! commit appended to the WAL reaches the database file by itself, and the last `Database` dropped
//! closes the file (which removes the WAL), so the checkpoint task does not keep the pool alive.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diesel::sql_types::BigInt;
use diesel::{Connection as _, QueryableByName, RunQueryDsl as _, SqliteConnection};
use tether_domain::{
    Change, EventKind, Metadata, NewSession, Session, SessionId, SessionStore, Timestamp,
};

use crate::support::{Connect as _, TestDb};

/// How long a checkpoint may take to happen; far above its interval (200 ms) on a busy machine.
const PATIENCE: Duration = Duration::from_secs(20);

fn file_of(db: &TestDb) -> PathBuf {
    PathBuf::from(db.url().strip_prefix("sqlite://").unwrap())
}

fn session(id: &str) -> Session {
    Session::open(
        NewSession {
            session_id: SessionId::parse(id).unwrap(),
            client_type: "cli".into(),
            client_version: None,
            principal: None,
            metadata: Metadata::default(),
        },
        Timestamp::from_secs(1_800_000_000),
    )
    .unwrap()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Sessions in the database file alone, read from a copy of it without its WAL: what checkpoints
/// have copied there. `None` while the copy cannot be read (taken in the middle of a checkpoint).
fn sessions_in_file(file: &Path, scratch: &Path) -> Option<i64> {
    let _ = std::fs::remove_file(scratch.with_extension("db-wal"));
    std::fs::copy(file, scratch).ok()?;
    let mut c = SqliteConnection::establish(scratch.to_str()?).ok()?;
    let rows: Vec<Count> = diesel::sql_query("SELECT count(*) AS n FROM sessions")
        .load(&mut c)
        .ok()?;
    rows.first().map(|r| r.n)
}

/// Waits until `done` holds, for at most [`PATIENCE`].
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_reach_the_database_file_through_the_checkpoint_task() {
    let db = TestDb::sqlite();
    let database = db.connect().await;
    let file = file_of(&db);
    let scratch = file.with_file_name("copy.db");
    let created = Change {
        at: Timestamp::from_secs(1_800_000_000),
        event: EventKind::Created,
    };

    // One small commit: far below the 1,000 WAL pages at which SQLite's own automatic checkpoint,
    // which every connection turns off, would have copied it.
    database.insert(&session("first"), created).await.unwrap();
    eventually("the first session in the database file", || {
        sessions_in_file(&file, &scratch) == Some(1)
    })
    .await;

    // And again after the task has been idle.
    database.insert(&session("second"), created).await.unwrap();
    eventually("the second session in the database file", || {
        sessions_in_file(&file, &scratch) == Some(2)
    })
    .await;

    let wal = file.with_extension("db-wal");
    assert!(wal.exists(), "WAL mode keeps a -wal file while connected");
    drop(database);
    // Closing the last connection checkpoints and removes the WAL: nothing holds the pool.
    eventually("the WAL removed once the database is dropped", || {
        !wal.exists()
    })
    .await;
    db.remove().await;
}
