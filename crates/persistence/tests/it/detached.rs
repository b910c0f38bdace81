//! SQLite calls run detached (`Database::with_conn`): a caller on a current-thread runtime, as an
//! actix worker is, may give up on a call half-way without diesel-async's SQLite wrapper blocking,
//! and panicking, in its `Drop` on that runtime.

use std::time::Duration;

use diesel::Connection as _;
use diesel::connection::SimpleConnection as _;
use tether_domain::{
    Change, EventKind, Metadata, NewSession, Session, SessionId, SessionStore, Timestamp,
    UpdateType,
};

use crate::support::{Connect as _, TestDb};

#[test]
fn a_sqlite_call_given_up_on_a_current_thread_runtime_does_not_panic() {
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = TestDb::sqlite();
    let database = multi.block_on(db.connect());
    let id = SessionId::parse("held").unwrap();
    let at = Timestamp::from_secs(1_800_000_000);
    let session = Session::open(
        NewSession {
            session_id: id.clone(),
            client_type: "cli".into(),
            client_version: None,
            principal: None,
            metadata: Metadata::default(),
        },
        at,
    )
    .unwrap();
    let created = Change {
        at,
        event: EventKind::Created,
    };
    multi.block_on(database.insert(&session, created)).unwrap();

    // Another connection holds the write lock, so the next write waits inside SQLite (busy_timeout).
    let path = db.url().trim_start_matches("sqlite://").to_owned();
    let mut holder = diesel::SqliteConnection::establish(&path).unwrap();
    holder.batch_execute("BEGIN IMMEDIATE").unwrap();

    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let activity = Change {
        at,
        event: EventKind::Updated(UpdateType::Activity),
    };
    current.block_on(async {
        let given_up =
            tokio::time::timeout(Duration::from_millis(100), database.touch(&id, activity)).await;
        assert!(given_up.is_err(), "the write should still be waiting");
    });
    drop(current);

    // The lock released, the detached call finishes (or times out) on its own; the database works.
    holder.batch_execute("ROLLBACK").unwrap();
    multi.block_on(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        database.ping().await.unwrap();
        assert!(database.get(&id).await.unwrap().is_some());
    });
    drop(database);
    multi.block_on(db.remove());
}
