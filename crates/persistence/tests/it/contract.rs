//! The domain's store contract (`tether_domain::contract`) on SQLite and PostgreSQL: the SQL statements
//! must do exactly what the domain's rules and transitions say, and write the same events. The same
//! suite runs on the in-memory store in `tether-domain`'s own tests. Then what only a database has:
//! rows that outlive the process, and a server that is not there.

use std::sync::{Arc, Mutex};

use tether_domain::{
    Change, EventKind, Metadata, NewSession, Session, SessionId, SessionStore, Timestamp,
    TokenHash, UpdateType, contract,
};
use tether_persistence::Database;

use crate::support::{Connect as _, TestDb};

/// The databases handed out to the suite's cases, removed at the end.
#[derive(Clone, Default)]
struct Fresh(Arc<Mutex<Vec<TestDb>>>);

impl Fresh {
    async fn store(&self, db: TestDb) -> Arc<Database> {
        let store = Arc::new(db.connect().await);
        self.0.lock().unwrap().push(db);
        store
    }

    async fn remove(self) {
        let dbs = std::mem::take(&mut *self.0.lock().unwrap());
        for db in dbs {
            db.remove().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_the_store_contract() {
    let fresh = Fresh::default();
    contract::check_store_and_feed(|| {
        let fresh = fresh.clone();
        async move { fresh.store(TestDb::sqlite()).await }
    })
    .await;
    fresh.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_the_store_contract() {
    if crate::support::postgres_url().is_none() {
        return;
    }
    let fresh = Fresh::default();
    contract::check_store_and_feed(|| {
        let fresh = fresh.clone();
        async move {
            let db = TestDb::postgres().await.expect("checked above");
            fresh.store(db).await
        }
    })
    .await;
    fresh.remove().await;
}

const T0: i64 = 1_800_000_000_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_micros(T0 + secs * 1_000_000)
}

fn id(s: &str) -> SessionId {
    SessionId::parse(s).unwrap()
}

fn ch(secs: i64, event: EventKind) -> Change {
    Change {
        at: at(secs),
        event,
    }
}

fn session(sid: &str, opened: i64) -> Session {
    Session::open(
        NewSession {
            session_id: id(sid),
            client_type: "cli".into(),
            client_version: Some("2.0".into()),
            principal: Some("alice".into()),
            metadata: Metadata::parse(serde_json::json!({"region": "eu", "n": [1, 2]})).unwrap(),
        },
        at(opened),
    )
    .unwrap()
}

async fn rows_survive_a_restart(db: TestDb) {
    let first = db.connect().await;
    first
        .insert(&session("keep", 0), ch(0, EventKind::Created))
        .await
        .unwrap();
    first
        .set_token(
            &id("keep"),
            &TokenHash::from_bytes([7; 32]),
            at(900),
            ch(0, EventKind::Updated(UpdateType::TokenIssued)),
        )
        .await
        .unwrap();
    let secret = first
        .setting_or_insert("signing_secret", "one")
        .await
        .unwrap();
    drop(first);

    let second = db.connect().await; // migrations run again: must be a no-op
    let s = second.get(&id("keep")).await.unwrap().unwrap();
    assert_eq!(s.token().hash, Some(TokenHash::from_bytes([7; 32])));
    assert_eq!(s.metadata().as_map()["region"], "eu");
    assert_eq!(
        second
            .setting_or_insert("signing_secret", "two")
            .await
            .unwrap(),
        secret
    );
    assert_eq!(secret, "one");
    second.ping().await.unwrap();
    drop(second);
    db.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rows_survive_a_restart() {
    rows_survive_a_restart(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_survive_a_restart() {
    if let Some(db) = TestDb::postgres().await {
        rows_survive_a_restart(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_postgres_is_unavailable_quickly() {
    // Nothing listens on port 1: connect fails at once, and is reported as a connect error.
    let err = tether_persistence::Database::connect(
        "postgres://postgres@127.0.0.1:1/none",
        tether_persistence::Options::default(),
    )
    .await
    .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}
