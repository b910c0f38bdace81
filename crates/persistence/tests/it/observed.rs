//! Every call through the pool is reported to the database's `CallObserver` with its operation and
//! outcome, and the pool's occupancy is readable without a query.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::Connection as _;
use diesel::connection::SimpleConnection as _;
use tether_domain::{
    Change, EventFeed as _, EventKind, Metadata, NewSession, Session, SessionId, SessionStore,
    Timestamp, UpdateType,
};
use tether_persistence::{CallObserver, CallOutcome, Database, Options};

use crate::support::TestDb;

#[derive(Default)]
struct Calls(Mutex<Vec<(&'static str, CallOutcome)>>);

impl Calls {
    fn take(&self) -> Vec<(&'static str, CallOutcome)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl CallObserver for Calls {
    fn call(&self, operation: &'static str, _elapsed: Duration, outcome: CallOutcome) {
        self.0.lock().unwrap().push((operation, outcome));
    }
}

fn session(id: &SessionId, at: Timestamp) -> Session {
    Session::open(
        NewSession {
            session_id: id.clone(),
            client_type: "cli".into(),
            client_version: None,
            principal: None,
            metadata: Metadata::default(),
        },
        at,
    )
    .unwrap()
}

async fn calls_are_reported(url: &str) {
    let calls = Arc::new(Calls::default());
    let options = Options {
        max_connections: 3,
        ..Options::default()
    };
    let db = Database::connect(url, options)
        .await
        .unwrap()
        .with_call_observer(calls.clone());
    let id = SessionId::parse("observed").unwrap();
    let at = Timestamp::from_secs(1_800_000_000);
    let created = Change {
        at,
        event: EventKind::Created,
    };
    db.insert(&session(&id, at), created).await.unwrap();
    // A taken id is the caller's mistake, not a database failure.
    db.insert(&session(&id, at), created).await.unwrap_err();
    db.get(&id).await.unwrap();
    db.last_seq().await.unwrap();
    assert_eq!(
        calls.take(),
        [
            ("insert", CallOutcome::Ok),
            ("insert", CallOutcome::Conflict),
            ("get", CallOutcome::Ok),
            ("last_seq", CallOutcome::Ok),
        ]
    );
    let pool = db.pool_status();
    assert_eq!((pool.max, pool.in_use, pool.waiting), (3, 0, 0), "{pool:?}");
    assert!((1..=3).contains(&pool.open), "{pool:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_calls_are_reported() {
    let db = TestDb::sqlite();
    calls_are_reported(db.url()).await;
    db.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_calls_are_reported() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    calls_are_reported(db.url()).await;
    db.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_times_out_is_reported_unavailable() {
    let test_db = TestDb::sqlite();
    let calls = Arc::new(Calls::default());
    let options = Options {
        timeout: Duration::from_millis(200),
        ..Options::default()
    };
    let db = Database::connect(test_db.url(), options)
        .await
        .unwrap()
        .with_call_observer(calls.clone());
    let id = SessionId::parse("locked").unwrap();
    let at = Timestamp::from_secs(1_800_000_000);
    let created = Change {
        at,
        event: EventKind::Created,
    };
    db.insert(&session(&id, at), created).await.unwrap();
    // Another connection holds the write lock: the next write cannot finish within the timeout.
    let path = test_db.url().trim_start_matches("sqlite://").to_owned();
    let mut holder = diesel::SqliteConnection::establish(&path).unwrap();
    holder.batch_execute("BEGIN IMMEDIATE").unwrap();
    let activity = Change {
        at,
        event: EventKind::Updated(UpdateType::Activity),
    };
    db.touch(&id, activity).await.unwrap_err();
    holder.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        calls.take(),
        [
            ("insert", CallOutcome::Ok),
            ("touch", CallOutcome::Unavailable)
        ]
    );
    drop(db);
    test_db.remove().await;
}
