//! The reconnect use case through `SessionManager` with the real token authority, on SQLite and
//! PostgreSQL: the guarantees that only hold if the SQL compare-and-swap is really atomic.

use std::sync::Arc;
use std::time::Duration;

use tether_auth::{Authority, Keyring, Secret};
use tether_domain::{
    CollectingSink, Error, EventKind, ManualClock, Metadata, NewSession, Policy, ResultCode,
    SessionId, SessionManager,
};
use tether_persistence::Database;

use crate::support::{Connect as _, TestDb};

const LIFETIME: Duration = Duration::from_secs(15 * 60);

fn manager(
    db: Database,
    grace: Duration,
) -> (SessionManager, Arc<ManualClock>, Arc<CollectingSink>) {
    // The authority also checks expiry against the wall clock, so the fake clock starts there.
    let clock = Arc::new(ManualClock::at_wall_time());
    let events = Arc::new(CollectingSink::default());
    let authority = Authority::new(
        Keyring::new(Secret::new(vec![7u8; 32]).unwrap()),
        "tether",
        "tether-reconnect",
        LIFETIME,
    )
    .unwrap();
    let policy = Policy::new(
        Duration::from_secs(300),
        Duration::from_secs(1800),
        LIFETIME,
        grace,
    )
    .unwrap();
    let m = SessionManager::new(
        Arc::new(db),
        Arc::new(authority),
        events.clone(),
        clock.clone(),
        policy,
    )
    .unwrap();
    (m, clock, events)
}

async fn open(m: &SessionManager, id: &str) -> SessionId {
    let id = SessionId::parse(id).unwrap();
    m.open(NewSession {
        session_id: id.clone(),
        client_type: "cli".into(),
        client_version: None,
        principal: None,
        metadata: Metadata::default(),
    })
    .await
    .unwrap();
    id
}

async fn concurrent_reconnects_one_success(db: Database) {
    let (m, _, events) = manager(db, Duration::ZERO);
    let id = open(&m, "race").await;
    let token = m.issue_token(&id).await.unwrap().token.expose().to_owned();
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (m, id, token, barrier) = (m.clone(), id.clone(), token.clone(), barrier.clone());
        set.spawn(async move {
            barrier.wait().await;
            m.reconnect(&id, &token).await
        });
    }
    let results = set.join_all().await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let reused = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Reconnect(ResultCode::TokenReused))))
        .count();
    assert_eq!(
        (ok, reused),
        (1, 63),
        "{:?}",
        results
            .iter()
            .filter(|r| r.is_err())
            .take(3)
            .collect::<Vec<_>>()
    );
    assert_eq!(m.get(&id).await.unwrap().reconnect_count(), 1);
    let kinds = events.kinds();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::Updated(tether_domain::UpdateType::Reconnected))
            .count(),
        1
    );
    assert!(kinds.contains(&EventKind::TokenReused));
}

/// Many sessions reconnecting at once (on PostgreSQL they share group commits), eight of them
/// twice with the same token: each session is reconnected exactly once, and each second attempt is
/// reuse, as if they had come one at a time.
async fn many_sessions_at_once(db: Database) {
    let (m, _, events) = manager(db, Duration::ZERO);
    let mut live = Vec::new();
    for i in 0..24 {
        let id = open(&m, &format!("many-{i}")).await;
        let token = m.issue_token(&id).await.unwrap().token.expose().to_owned();
        live.push((id, token));
    }
    let attempts: Vec<_> = live.iter().chain(live.iter().take(8)).cloned().collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(attempts.len()));
    let mut set = tokio::task::JoinSet::new();
    for (id, token) in attempts {
        let (m, barrier) = (m.clone(), barrier.clone());
        set.spawn(async move {
            barrier.wait().await;
            let result = m.reconnect(&id, &token).await;
            (id, result)
        });
    }
    let results = set.join_all().await;
    for (i, (id, _)) in live.iter().enumerate() {
        let mine: Vec<_> = results.iter().filter(|(r, _)| r == id).collect();
        let ok = mine.iter().filter(|(_, r)| r.is_ok()).count();
        let reused = mine
            .iter()
            .filter(|(_, r)| matches!(r, Err(Error::Reconnect(ResultCode::TokenReused))))
            .count();
        let twice = i < 8;
        assert_eq!((ok, reused), (1, usize::from(twice)), "{id}: {mine:?}");
        let session = m.get(id).await.unwrap();
        assert_eq!(session.reconnect_count(), 1, "{id}");
        assert_eq!(session.token().hash.is_none(), twice, "{id}: reuse revokes");
    }
    let kinds = events.kinds();
    let reconnected = EventKind::Updated(tether_domain::UpdateType::Reconnected);
    assert_eq!(kinds.iter().filter(|k| **k == reconnected).count(), 24);
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::TokenReused)
            .count(),
        8
    );
}

async fn reuse_outside_grace_revokes_the_live_token(db: Database) {
    let (m, clock, _) = manager(db, Duration::from_secs(5));
    let id = open(&m, "reuse").await;
    let first = m.issue_token(&id).await.unwrap().token.expose().to_owned();
    let done = m.reconnect(&id, &first).await.unwrap();
    let live = done.token.token.expose().to_owned();

    // Inside the window: the same answer again, not counted.
    clock.advance(Duration::from_secs(5));
    let again = m.reconnect(&id, &first).await.unwrap();
    assert!(again.repeated);
    assert_eq!(again.token.token.expose(), live);
    assert_eq!(again.session.reconnect_count(), 1);

    // Outside it: reuse, and the live token dies with it.
    clock.advance(Duration::from_secs(1));
    assert!(matches!(
        m.reconnect(&id, &first).await,
        Err(Error::Reconnect(ResultCode::TokenReused))
    ));
    assert!(matches!(
        m.reconnect(&id, &live).await,
        Err(Error::Reconnect(ResultCode::TokenReused))
    ));
    assert!(m.get(&id).await.unwrap().token().hash.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_reconnects_one_success() {
    let db = TestDb::sqlite();
    concurrent_reconnects_one_success(db.connect().await).await;
    db.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_reconnects_one_success() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    concurrent_reconnects_one_success(db.connect().await).await;
    db.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_many_sessions_at_once() {
    let db = TestDb::sqlite();
    many_sessions_at_once(db.connect().await).await;
    db.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_many_sessions_at_once() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    many_sessions_at_once(db.connect().await).await;
    db.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reuse_outside_grace_revokes_the_live_token() {
    let db = TestDb::sqlite();
    reuse_outside_grace_revokes_the_live_token(db.connect().await).await;
    db.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reuse_outside_grace_revokes_the_live_token() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    reuse_outside_grace_revokes_the_live_token(db.connect().await).await;
    db.remove().await;
}
