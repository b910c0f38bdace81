//! The outbox beyond the store contract (which checks that every change writes its event, read back
//! in order, on every store): pruning; wake-ups, including across instances on PostgreSQL and after
//! the listening connection is killed.

use std::sync::Arc;
use std::time::Duration;

use tether_domain::{
    Change, EventFeed, EventKind, InMemoryStore, Metadata, NewSession, Session, SessionId,
    SessionStore, Timestamp,
};
use tether_persistence::Database;

use crate::support::{Connect as _, TestDb};

const T0: i64 = 1_800_000_000_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_micros(T0 + secs * 1_000_000)
}

fn ch(secs: i64, event: EventKind) -> Change {
    Change {
        at: at(secs),
        event,
    }
}

fn id(s: &str) -> SessionId {
    SessionId::parse(s).unwrap()
}

fn session(sid: &str) -> Session {
    Session::open(
        NewSession {
            session_id: id(sid),
            client_type: "cli".into(),
            client_version: None,
            principal: None,
            metadata: Metadata::default(),
        },
        at(0),
    )
    .unwrap()
}

/// Bounded wait for a wake-up: the test fails instead of hanging.
async fn woken<F: EventFeed + ?Sized>(feed: &F) {
    tokio::time::timeout(Duration::from_secs(10), feed.wait_for_events())
        .await
        .expect("no wake-up within 10 s");
}

async fn a_write_wakes_the_reader<S: SessionStore + EventFeed + 'static>(store: Arc<S>) {
    let reader = store.clone();
    let waiting = tokio::spawn(async move { woken(&*reader).await });
    tokio::task::yield_now().await;
    store
        .insert(&session("w"), ch(0, EventKind::Created))
        .await
        .unwrap();
    waiting.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_write_wakes_the_reader() {
    a_write_wakes_the_reader(Arc::new(InMemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_write_wakes_the_reader() {
    let db = TestDb::sqlite();
    a_write_wakes_the_reader(Arc::new(db.connect().await)).await;
    db.remove().await;
}

async fn pruning_by_count_and_age(db: Database) {
    for n in 0..10 {
        db.insert(&session(&format!("p{n}")), ch(n, EventKind::Created))
            .await
            .unwrap();
    }
    assert_eq!(db.pruned_through().await.unwrap(), 0);
    // Keep the newest 6.
    assert_eq!(
        db.prune_events(Duration::from_secs(1_000_000), 6, at(10))
            .await
            .unwrap(),
        4
    );
    let first = db.events_after(0, 100).await.unwrap();
    assert_eq!(first.len(), 6);
    assert_eq!(db.pruned_through().await.unwrap(), first[0].seq - 1);
    // Then everything older than 2 s at t=10: events at 0..=7 go.
    db.prune_events(Duration::from_secs(2), 100, at(10))
        .await
        .unwrap();
    let left = db.events_after(0, 100).await.unwrap();
    assert_eq!(
        left.iter().map(|e| e.event.at).collect::<Vec<_>>(),
        [at(8), at(9)]
    );
    let last = db.last_seq().await.unwrap();
    // Pruned empty, the position stays.
    db.prune_events(Duration::ZERO, 0, at(100)).await.unwrap();
    assert!(db.events_after(0, 100).await.unwrap().is_empty());
    assert_eq!(db.last_seq().await.unwrap(), last);
    assert_eq!(db.pruned_through().await.unwrap(), last);
    // New events continue after it.
    let r = db
        .insert(&session("after"), ch(101, EventKind::Created))
        .await
        .unwrap();
    assert!(r.event.seq > last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pruning_by_count_and_age() {
    let db = TestDb::sqlite();
    pruning_by_count_and_age(db.connect().await).await;
    db.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pruning_by_count_and_age() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    pruning_by_count_and_age(db.connect().await).await;
    db.remove().await;
}

/// Two `Database` handles are two instances: B hears A's writes through LISTEN/NOTIFY, and still
/// does after its listening connection is killed on the server side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_other_instances_hear_writes_even_after_the_listener_is_killed() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let a = db.connect().await;
    let b = Arc::new(db.connect().await);

    // First wait starts B's listener; its initial wake-up (catch-up after connecting) may come first.
    woken(&*b).await;
    let reader = b.clone();
    let waiting = tokio::spawn(async move { woken(&*reader).await });
    tokio::task::yield_now().await;
    a.insert(&session("x1"), ch(0, EventKind::Created))
        .await
        .unwrap();
    waiting.await.unwrap();

    // Kill the listener from the server side, then write: B reconnects and wakes, and the event is
    // in the outbox for it to read.
    let killed = a.terminate_backends("tether-listener").await.unwrap();
    assert_eq!(killed, 1);
    a.insert(&session("x2"), ch(1, EventKind::Created))
        .await
        .unwrap();
    woken(&*b).await;
    let kinds = b.events_after(0, 10).await.unwrap();
    assert_eq!(kinds.len(), 2);
    drop(b);
    drop(a);
    db.remove().await;
}
