//! One contract suite for the `SessionStore` port, run against the in-memory reference store, SQLite
//! and PostgreSQL: the SQL statements must behave exactly like the domain's rules.

use std::sync::Arc;
use std::time::Duration;

use tether_domain::{
    Change, Cursor, DisconnectReason, Error, EventKind, InMemoryStore, ListQuery, Metadata,
    NewSession, Session, SessionId, SessionStatus, SessionStore, Timestamp, TokenHash, UpdateType,
};

use crate::support::TestDb;

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

const CREATED: EventKind = EventKind::Created;
const ACTIVITY: EventKind = EventKind::Updated(UpdateType::Activity);
const IDLE: EventKind = EventKind::Updated(UpdateType::Idle);
const ISSUED: EventKind = EventKind::Updated(UpdateType::TokenIssued);
const RECONNECTED: EventKind = EventKind::Updated(UpdateType::Reconnected);
const ENDED: EventKind = EventKind::Disconnected;
const REUSED: EventKind = EventKind::TokenReused;

fn h(n: u8) -> TokenHash {
    TokenHash::from_bytes([n; 32])
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

async fn insert_get_and_duplicates(store: Arc<dyn SessionStore>) {
    let s = session("a", 0);
    store.insert(&s, ch(0, CREATED)).await.unwrap();
    assert_eq!(store.get(&id("a")).await.unwrap(), Some(s.clone()));
    assert!(matches!(
        store.insert(&s, ch(0, CREATED)).await,
        Err(Error::AlreadyExists)
    ));
    assert_eq!(store.get(&id("missing")).await.unwrap(), None);
}

async fn touch_and_disconnect(store: Arc<dyn SessionStore>) {
    store
        .insert(&session("a", 0), ch(0, CREATED))
        .await
        .unwrap();
    store
        .set_token(&id("a"), &h(1), at(900), ch(0, ISSUED))
        .await
        .unwrap();
    assert_eq!(
        store.mark_idle(at(10), ch(10, IDLE)).await.unwrap().len(),
        1
    );
    let s = store
        .touch(&id("a"), ch(20, ACTIVITY))
        .await
        .unwrap()
        .unwrap()
        .session;
    assert_eq!(s.status(), SessionStatus::Active);
    assert_eq!(s.last_activity(), at(20));
    assert_eq!(s.idle_since(), None);
    assert!(
        store
            .touch(&id("zz"), ch(20, ACTIVITY))
            .await
            .unwrap()
            .is_none()
    );

    let reason = DisconnectReason::parse("client_closed").unwrap();
    let s = store
        .disconnect(&id("a"), &reason, ch(30, ENDED))
        .await
        .unwrap()
        .unwrap()
        .session;
    assert_eq!(s.status(), SessionStatus::Disconnected);
    assert_eq!(s.disconnected_at(), Some(at(30)));
    assert_eq!(s.disconnect_reason(), Some(&reason));
    assert_eq!(s.duration(), Some(Duration::from_secs(30)));
    assert!(
        s.token().hash.is_none(),
        "an ended session keeps no live token"
    );
    assert!(
        store
            .disconnect(&id("a"), &reason, ch(31, ENDED))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .touch(&id("a"), ch(32, ACTIVITY))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .set_token(&id("a"), &h(2), at(999), ch(0, ISSUED))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.get(&id("a")).await.unwrap().unwrap(), s);
}

async fn consume_is_a_compare_and_swap(store: Arc<dyn SessionStore>) {
    store
        .insert(&session("a", 0), ch(0, CREATED))
        .await
        .unwrap();
    store
        .set_token(&id("a"), &h(1), at(900), ch(0, ISSUED))
        .await
        .unwrap();
    store.mark_idle(at(5), ch(5, IDLE)).await.unwrap();

    assert!(
        store
            .consume_token(&id("a"), &h(9), &h(2), at(1900), ch(10, RECONNECTED))
            .await
            .unwrap()
            .is_none(),
        "wrong hash"
    );
    assert!(
        store
            .consume_token(&id("a"), &h(1), &h(2), at(1900), ch(900, RECONNECTED))
            .await
            .unwrap()
            .is_none(),
        "expired at exactly exp"
    );

    let s = store
        .consume_token(&id("a"), &h(1), &h(2), at(1900), ch(10, RECONNECTED))
        .await
        .unwrap()
        .unwrap()
        .session;
    assert_eq!(s.reconnect_count(), 1);
    assert_eq!(s.status(), SessionStatus::Active, "idle -> active");
    assert_eq!(s.last_activity(), at(10));
    assert_eq!(s.token().hash, Some(h(2)));
    assert_eq!(s.token().expires_at, Some(at(1900)));
    assert_eq!(s.token().previous_hash, Some(h(1)));
    assert_eq!(s.token().rotated_at, Some(at(10)));
    assert!(
        store
            .consume_token(&id("a"), &h(1), &h(3), at(1900), ch(11, RECONNECTED))
            .await
            .unwrap()
            .is_none(),
        "single use"
    );

    let s = store
        .revoke_token(&id("a"), ch(12, REUSED))
        .await
        .unwrap()
        .unwrap()
        .session;
    assert_eq!(s.token().hash, None);
    assert_eq!(
        s.token().previous_hash,
        Some(h(1)),
        "kept, so replays stay recognisable"
    );
    assert!(
        store
            .consume_token(&id("a"), &h(2), &h(3), at(1900), ch(12, RECONNECTED))
            .await
            .unwrap()
            .is_none(),
        "revoked"
    );
    assert_eq!(
        store
            .get(&id("a"))
            .await
            .unwrap()
            .unwrap()
            .reconnect_count(),
        1
    );
}

async fn concurrent_consumes_give_one_winner(store: Arc<dyn SessionStore>) {
    store
        .insert(&session("a", 0), ch(0, CREATED))
        .await
        .unwrap();
    store
        .set_token(&id("a"), &h(1), at(900), ch(0, ISSUED))
        .await
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let mut set = tokio::task::JoinSet::new();
    for n in 0..64u8 {
        let store = store.clone();
        let barrier = barrier.clone();
        set.spawn(async move {
            barrier.wait().await;
            store
                .consume_token(&id("a"), &h(1), &h(100 + n), at(1900), ch(10, RECONNECTED))
                .await
        });
    }
    let results = set.join_all().await;
    let winners: Vec<tether_domain::Recorded> =
        results.into_iter().filter_map(|r| r.unwrap()).collect();
    assert_eq!(winners.len(), 1);
    let row = store.get(&id("a")).await.unwrap().unwrap();
    assert_eq!(row.reconnect_count(), 1);
    assert_eq!(row.token().hash, winners[0].session.token().hash);
}

async fn sweep_thresholds(store: Arc<dyn SessionStore>) {
    store
        .insert(&session("old", 0), ch(0, CREATED))
        .await
        .unwrap();
    store
        .insert(&session("mid", 100), ch(100, CREATED))
        .await
        .unwrap();
    store
        .insert(&session("new", 200), ch(200, CREATED))
        .await
        .unwrap();
    store
        .set_token(&id("old"), &h(1), at(5000), ch(0, ISSUED))
        .await
        .unwrap();
    let reason = DisconnectReason::idle_timeout();

    let reaped = store.reap(at(0), &reason, ch(300, ENDED)).await.unwrap();
    assert_eq!(
        reaped
            .iter()
            .map(|r| r.session.id().as_str())
            .collect::<Vec<_>>(),
        ["old"],
        "boundary is inclusive"
    );
    assert_eq!(reaped[0].session.disconnect_reason(), Some(&reason));
    assert!(reaped[0].session.token().hash.is_none());

    let idled = store.mark_idle(at(100), ch(300, IDLE)).await.unwrap();
    assert_eq!(
        idled
            .iter()
            .map(|r| r.session.id().as_str())
            .collect::<Vec<_>>(),
        ["mid"]
    );
    assert_eq!(idled[0].session.idle_since(), Some(at(300)));
    assert!(
        store
            .mark_idle(at(100), ch(301, IDLE))
            .await
            .unwrap()
            .is_empty(),
        "already idle"
    );

    let reaped = store.reap(at(150), &reason, ch(400, ENDED)).await.unwrap();
    assert_eq!(reaped.len(), 1, "idle sessions are reaped too");
    assert!(
        store
            .reap(at(10_000), &reason, ch(10_000, ENDED))
            .await
            .unwrap()
            .iter()
            .all(|r| r.session.id().as_str() == "new")
    );
    let c = store.counts().await.unwrap();
    assert_eq!((c.active, c.idle, c.disconnected), (0, 0, 3));
}

async fn list_order_paging_and_counts(store: Arc<dyn SessionStore>) {
    for (n, opened) in [("a", 0), ("b", 5), ("c", 5), ("d", 9)] {
        store
            .insert(&session(n, opened), ch(opened, CREATED))
            .await
            .unwrap();
    }
    store
        .disconnect(&id("d"), &DisconnectReason::client_closed(), ch(10, ENDED))
        .await
        .unwrap();
    let q = |status, limit, after| ListQuery {
        status,
        limit,
        after,
    };
    let ids = |v: Vec<Session>| v.iter().map(|s| s.id().to_string()).collect::<Vec<_>>();

    assert_eq!(
        ids(store.list(&q(None, 10, None)).await.unwrap()),
        ["d", "c", "b", "a"]
    );
    let first = store.list(&q(None, 2, None)).await.unwrap();
    assert_eq!(ids(first.clone()), ["d", "c"]);
    let rest = store
        .list(&q(None, 10, Some(Cursor::after(&first[1]))))
        .await
        .unwrap();
    assert_eq!(ids(rest), ["b", "a"], "ties on activity are split by id");
    assert_eq!(
        ids(store
            .list(&q(Some(SessionStatus::Active), 10, None))
            .await
            .unwrap()),
        ["c", "b", "a"]
    );
    let c = store.counts().await.unwrap();
    assert_eq!((c.active, c.idle, c.disconnected), (3, 0, 1));
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(Arc::new(InMemoryStore::new())).await;
                }
            )*
        }
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = TestDb::sqlite();
                    super::$case(Arc::new(db.connect().await)).await;
                    db.remove().await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = TestDb::postgres().await else { return };
                    super::$case(Arc::new(db.connect().await)).await;
                    db.remove().await;
                }
            )*
        }
    };
}

contract!(
    insert_get_and_duplicates,
    touch_and_disconnect,
    consume_is_a_compare_and_swap,
    concurrent_consumes_give_one_winner,
    sweep_thresholds,
    list_order_paging_and_counts,
);

async fn rows_survive_a_restart(db: TestDb) {
    let first = db.connect().await;
    first
        .insert(&session("keep", 0), ch(0, CREATED))
        .await
        .unwrap();
    first
        .set_token(&id("keep"), &h(7), at(900), ch(0, ISSUED))
        .await
        .unwrap();
    let secret = first
        .setting_or_insert("signing_secret", "one")
        .await
        .unwrap();
    drop(first);

    let second = db.connect().await; // migrations run again: must be a no-op
    let s = second.get(&id("keep")).await.unwrap().unwrap();
    assert_eq!(s.token().hash, Some(h(7)));
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
