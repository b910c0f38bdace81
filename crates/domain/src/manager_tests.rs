//! Rules of `SessionManager`, over the in-memory store, a fake token authority and a fake clock.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::*;

const LIFETIME: Duration = Duration::from_secs(15 * 60);

/// Tokens as readable text: `sid|jti|iat|exp|purpose`. Not secure in any way, and need not be: the
/// real authority is tested in `tether-auth`; here only the manager's use of the port matters.
struct FakeAuthority;

fn fake_hash(token: &str) -> TokenHash {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = DefaultHasher::new();
        (i, token).hash(&mut h);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    TokenHash::from_bytes(out)
}

impl FakeAuthority {
    fn make(&self, sid: &str, jti: &str, iat: Timestamp, purpose: &str) -> IssuedToken {
        let exp = Timestamp::from_secs(iat.as_secs()).plus(LIFETIME);
        let token = format!("{sid}|{jti}|{}|{}|{purpose}", iat.as_secs(), exp.as_secs());
        IssuedToken {
            hash: fake_hash(&token),
            token: PlainToken::new(token),
            issued_at: Timestamp::from_secs(iat.as_secs()),
            expires_at: exp,
        }
    }
}

impl TokenAuthority for FakeAuthority {
    fn lifetime(&self) -> Duration {
        LIFETIME
    }
    fn mint(&self, session: &SessionId, now: Timestamp) -> Result<IssuedToken, Error> {
        let jti = format!("m{}", now.as_micros());
        Ok(self.make(session.as_str(), &jti, now, "session_reconnect"))
    }
    fn rotate(&self, consumed: &VerifiedToken, at: Timestamp) -> Result<IssuedToken, Error> {
        let jti = format!("r{}", consumed.jti);
        Ok(self.make(&consumed.session_id, &jti, at, "session_reconnect"))
    }
    fn verify(&self, token: &str, now: Timestamp) -> Result<VerifiedToken, Error> {
        let bad = || Error::Reconnect(ResultCode::InvalidToken);
        let parts: Vec<&str> = token.split('|').collect();
        let [sid, jti, iat, exp, purpose] = parts[..] else {
            return Err(bad());
        };
        let iat: i64 = iat.parse().map_err(|_| bad())?;
        let exp: i64 = exp.parse().map_err(|_| bad())?;
        if exp <= now.as_secs() {
            return Err(Error::Reconnect(ResultCode::TokenExpired));
        }
        if purpose != "session_reconnect" {
            return Err(Error::Reconnect(ResultCode::InvalidTokenPurpose));
        }
        Ok(VerifiedToken {
            session_id: sid.into(),
            jti: jti.into(),
            issued_at: Timestamp::from_secs(iat),
            expires_at: Timestamp::from_secs(exp),
            hash: fake_hash(token),
        })
    }
}

struct World {
    manager: SessionManager,
    clock: Arc<ManualClock>,
    events: Arc<CollectingSink>,
}

fn world_with(policy: Policy) -> World {
    let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_800_000_000)));
    let events = Arc::new(CollectingSink::default());
    let manager = SessionManager::new(
        Arc::new(InMemoryStore::new()),
        Arc::new(FakeAuthority),
        events.clone(),
        clock.clone(),
        policy,
    )
    .unwrap();
    World {
        manager,
        clock,
        events,
    }
}

fn world() -> World {
    world_with(Policy::defaults())
}

fn id(s: &str) -> SessionId {
    SessionId::parse(s).unwrap()
}

fn new_session(sid: &str) -> NewSession {
    NewSession {
        session_id: id(sid),
        client_type: "cli".into(),
        client_version: Some("1.0".into()),
        principal: Some("alice".into()),
        metadata: Metadata::default(),
    }
}

fn code(r: Result<impl std::fmt::Debug, Error>) -> ResultCode {
    match r {
        Err(e) => e.code().unwrap_or(ResultCode::InternalError),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn open_emits_created_and_refuses_duplicates() {
    let w = world();
    let s = w.manager.open(new_session("a")).await.unwrap();
    assert_eq!(s.status(), SessionStatus::Active);
    assert_eq!(s.connected_at(), w.clock.now());
    assert_eq!(w.events.kinds(), [EventKind::Created]);
    let e = w.manager.open(new_session("a")).await.unwrap_err();
    assert!(matches!(e, Error::AlreadyExists));
    assert_eq!(w.events.kinds().len(), 1, "no event for a refused open");
    assert!(matches!(
        w.manager.get(&id("zzz")).await,
        Err(Error::NotFound)
    ));
}

#[tokio::test]
async fn sweep_idles_then_reaps_with_times_and_reason() {
    let w = world();
    w.manager.open(new_session("a")).await.unwrap();
    let opened = w.clock.now();

    w.clock.advance(5 * MINUTE - SECOND);
    assert_eq!(w.manager.sweep().await.unwrap().idled, 0);

    w.clock.advance(SECOND);
    let report = w.manager.sweep().await.unwrap();
    assert_eq!((report.idled, report.reaped), (1, 0));
    let s = w.manager.get(&id("a")).await.unwrap();
    assert_eq!(s.status(), SessionStatus::Idle);
    assert_eq!(s.idle_since(), Some(w.clock.now()));

    w.clock.advance(25 * MINUTE);
    let report = w.manager.sweep().await.unwrap();
    assert_eq!((report.idled, report.reaped), (0, 1));
    let s = w.manager.get(&id("a")).await.unwrap();
    assert_eq!(s.status(), SessionStatus::Disconnected);
    assert_eq!(s.disconnect_reason().unwrap().as_str(), "idle_timeout");
    assert_eq!(s.disconnected_at(), Some(w.clock.now()));
    assert_eq!(s.duration(), Some(30 * MINUTE));
    assert_eq!(s.disconnected_at().unwrap().since(opened), 30 * MINUTE);
    assert_eq!(
        w.events.kinds(),
        [
            EventKind::Created,
            EventKind::Updated(UpdateType::Idle),
            EventKind::Disconnected
        ]
    );
    // Final: nothing more happens to it.
    w.clock.advance(60 * MINUTE);
    assert_eq!(w.manager.sweep().await.unwrap().reaped, 0);
}

#[tokio::test]
async fn activity_makes_idle_active_and_refuses_ended_sessions() {
    let w = world();
    w.manager.open(new_session("a")).await.unwrap();
    w.clock.advance(6 * MINUTE);
    w.manager.sweep().await.unwrap();
    let s = w.manager.touch(&id("a")).await.unwrap();
    assert_eq!(s.status(), SessionStatus::Active);
    assert_eq!(s.last_activity(), w.clock.now());
    assert_eq!(s.idle_since(), None);
    assert_eq!(
        w.events.kinds().last(),
        Some(&EventKind::Updated(UpdateType::Activity))
    );

    let reason = DisconnectReason::parse("admin").unwrap();
    let s = w.manager.disconnect(&id("a"), reason).await.unwrap();
    assert_eq!(s.status(), SessionStatus::Disconnected);
    assert_eq!(s.disconnect_reason().unwrap().as_str(), "admin");
    assert_eq!(
        w.events.events().last().unwrap().event.reason.as_deref(),
        Some("admin")
    );
    assert!(matches!(
        w.manager.touch(&id("a")).await,
        Err(Error::AlreadyDisconnected)
    ));
    assert!(matches!(
        w.manager
            .disconnect(&id("a"), DisconnectReason::client_closed())
            .await,
        Err(Error::AlreadyDisconnected)
    ));
    assert!(matches!(
        w.manager.touch(&id("nope")).await,
        Err(Error::NotFound)
    ));
}

#[tokio::test]
async fn reconnect_consumes_rotates_and_counts() {
    let w = world();
    w.manager.open(new_session("a")).await.unwrap();
    let t1 = w.manager.issue_token(&id("a")).await.unwrap();
    assert_eq!(
        w.events.kinds().last(),
        Some(&EventKind::Updated(UpdateType::TokenIssued))
    );
    w.clock.advance(SECOND);
    let r1 = w
        .manager
        .reconnect(&id("a"), t1.token.expose())
        .await
        .unwrap();
    assert_eq!(r1.session.reconnect_count(), 1);
    assert!(!r1.repeated);
    assert_ne!(r1.token.token, t1.token);
    assert_eq!(
        w.events.kinds().last(),
        Some(&EventKind::Updated(UpdateType::Reconnected))
    );
    w.clock.advance(SECOND);
    let r2 = w
        .manager
        .reconnect(&id("a"), r1.token.token.expose())
        .await
        .unwrap();
    assert_eq!(r2.session.reconnect_count(), 2);
}

#[tokio::test]
async fn replaying_a_consumed_token_is_reuse_and_revokes_the_live_one() {
    let w = world();
    w.manager.open(new_session("a")).await.unwrap();
    let t1 = w.manager.issue_token(&id("a")).await.unwrap();
    let r1 = w
        .manager
        .reconnect(&id("a"), t1.token.expose())
        .await
        .unwrap();
    assert_eq!(
        code(w.manager.reconnect(&id("a"), t1.token.expose()).await),
        ResultCode::TokenReused
    );
    assert_eq!(w.events.kinds().last(), Some(&EventKind::TokenReused));
    // The live token was revoked: the legitimate holder must start over.
    assert_eq!(
        code(w.manager.reconnect(&id("a"), r1.token.token.expose()).await),
        ResultCode::TokenReused
    );
    assert_eq!(w.manager.get(&id("a")).await.unwrap().reconnect_count(), 1);
    assert!(
        w.manager
            .get(&id("a"))
            .await
            .unwrap()
            .token()
            .hash
            .is_none()
    );
}

#[tokio::test]
async fn a_token_two_rotations_old_is_reuse_too() {
    let w = world();
    w.manager.open(new_session("a")).await.unwrap();
    let t1 = w.manager.issue_token(&id("a")).await.unwrap();
    w.clock.advance(SECOND);
    let r1 = w
        .manager
        .reconnect(&id("a"), t1.token.expose())
        .await
        .unwrap();
    w.clock.advance(SECOND);
    w.manager
        .reconnect(&id("a"), r1.token.token.expose())
        .await
        .unwrap();
    assert_eq!(
        code(w.manager.reconnect(&id("a"), t1.token.expose()).await),
        ResultCode::TokenReused
    );
}

#[tokio::test]
async fn concurrent_reconnects_with_one_token_give_one_success() {
    let w = world();
    w.manager.open(new_session("a")).await.unwrap();
    let t = w.manager.issue_token(&id("a")).await.unwrap();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let m = w.manager.clone();
        let tok = t.token.expose().to_owned();
        set.spawn(async move { m.reconnect(&id("a"), &tok).await });
    }
    let results = set.join_all().await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let reused = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Reconnect(ResultCode::TokenReused))))
        .count();
    assert_eq!((ok, reused), (1, 15));
    assert_eq!(w.manager.get(&id("a")).await.unwrap().reconnect_count(), 1);
}

#[tokio::test]
async fn reconnect_from_idle_makes_it_active() {
    let w = world();
    w.manager.open(new_session("a")).await.unwrap();
    let t = w.manager.issue_token(&id("a")).await.unwrap();
    w.clock.advance(6 * MINUTE);
    w.manager.sweep().await.unwrap();
    assert_eq!(
        w.manager.get(&id("a")).await.unwrap().status(),
        SessionStatus::Idle
    );
    let r = w
        .manager
        .reconnect(&id("a"), t.token.expose())
        .await
        .unwrap();
    assert_eq!(r.session.status(), SessionStatus::Active);
    assert_eq!(r.session.last_activity(), w.clock.now());
}

/// The two halves of a reconnect: a checked token is bound to its session, and checking touches no
/// store (so a caller can ration per session between them).
#[tokio::test]
async fn checked_tokens_are_bound_to_their_session() {
    let w = world();
    w.manager.open(new_session("a")).await.unwrap();
    w.manager.open(new_session("b")).await.unwrap();
    let ta = w.manager.issue_token(&id("a")).await.unwrap();
    assert!(matches!(
        w.manager.check_token(&id("a"), "garbage"),
        Err(Error::Reconnect(ResultCode::InvalidToken))
    ));
    let presented = w.manager.check_token(&id("a"), ta.token.expose()).unwrap();
    // Handed to another session's reconnect it is refused, and the token stays live.
    assert_eq!(
        code(w.manager.reconnect_checked(&id("b"), presented).await),
        ResultCode::SessionIdMismatch
    );
    let presented = w.manager.check_token(&id("a"), ta.token.expose()).unwrap();
    let r = w
        .manager
        .reconnect_checked(&id("a"), presented)
        .await
        .unwrap();
    assert_eq!(r.session.reconnect_count(), 1);
}

#[tokio::test]
async fn reconnect_failures_each_have_their_code() {
    let w = world();
    w.manager.open(new_session("a")).await.unwrap();
    w.manager.open(new_session("b")).await.unwrap();
    let ta = w.manager.issue_token(&id("a")).await.unwrap();

    // Another session's token.
    assert_eq!(
        code(w.manager.reconnect(&id("b"), ta.token.expose()).await),
        ResultCode::SessionIdMismatch
    );
    // Garbage and a wrong purpose.
    assert_eq!(
        code(w.manager.reconnect(&id("a"), "garbage").await),
        ResultCode::InvalidToken
    );
    let odd = FakeAuthority.make("a", "x", w.clock.now(), "other");
    assert_eq!(
        code(w.manager.reconnect(&id("a"), odd.token.expose()).await),
        ResultCode::InvalidTokenPurpose
    );
    // A well-formed token for a session that does not exist.
    let ghost = FakeAuthority.mint(&id("ghost"), w.clock.now()).unwrap();
    assert_eq!(
        code(
            w.manager
                .reconnect(&id("ghost"), ghost.token.expose())
                .await
        ),
        ResultCode::SessionNotFound
    );
    // Superseded by a newer mint: not the live token, never consumed.
    w.clock.advance(SECOND);
    let ta2 = w.manager.issue_token(&id("a")).await.unwrap();
    assert_eq!(
        code(w.manager.reconnect(&id("a"), ta.token.expose()).await),
        ResultCode::TokenMismatch
    );
    // Expired by one second.
    w.clock.advance(LIFETIME);
    assert_eq!(
        code(w.manager.reconnect(&id("a"), ta2.token.expose()).await),
        ResultCode::TokenExpired
    );
    // Ended sessions cannot be resumed.
    let tb = w.manager.issue_token(&id("b")).await.unwrap();
    w.manager
        .disconnect(&id("b"), DisconnectReason::client_closed())
        .await
        .unwrap();
    assert_eq!(
        code(w.manager.reconnect(&id("b"), tb.token.expose()).await),
        ResultCode::SessionAlreadyDisconnected
    );
}

#[tokio::test]
async fn token_issue_needs_a_live_session() {
    let w = world();
    assert!(matches!(
        w.manager.issue_token(&id("x")).await,
        Err(Error::NotFound)
    ));
    w.manager.open(new_session("x")).await.unwrap();
    w.manager
        .disconnect(&id("x"), DisconnectReason::client_closed())
        .await
        .unwrap();
    assert!(matches!(
        w.manager.issue_token(&id("x")).await,
        Err(Error::AlreadyDisconnected)
    ));
}

fn grace_world(grace: Duration) -> World {
    world_with(Policy::new(5 * MINUTE, 30 * MINUTE, LIFETIME, grace).unwrap())
}

#[tokio::test]
async fn inside_the_grace_window_a_retry_repeats_the_same_answer() {
    let w = grace_world(10 * SECOND);
    w.manager.open(new_session("a")).await.unwrap();
    let t = w.manager.issue_token(&id("a")).await.unwrap();
    let first = w
        .manager
        .reconnect(&id("a"), t.token.expose())
        .await
        .unwrap();
    let events_before = w.events.kinds().len();
    w.clock.advance(10 * SECOND);
    let again = w
        .manager
        .reconnect(&id("a"), t.token.expose())
        .await
        .unwrap();
    assert!(again.repeated);
    assert_eq!(
        again.token.token, first.token.token,
        "the lost response's token"
    );
    assert_eq!(again.session.reconnect_count(), 1, "not counted twice");
    assert_eq!(w.events.kinds().len(), events_before, "no second event");
    // And that token still works as the live one.
    let next = w
        .manager
        .reconnect(&id("a"), again.token.token.expose())
        .await
        .unwrap();
    assert_eq!(next.session.reconnect_count(), 2);
}

#[tokio::test]
async fn after_the_grace_window_the_previous_token_is_reuse() {
    let w = grace_world(10 * SECOND);
    w.manager.open(new_session("a")).await.unwrap();
    let t = w.manager.issue_token(&id("a")).await.unwrap();
    w.manager
        .reconnect(&id("a"), t.token.expose())
        .await
        .unwrap();
    w.clock.advance(11 * SECOND);
    assert_eq!(
        code(w.manager.reconnect(&id("a"), t.token.expose()).await),
        ResultCode::TokenReused
    );
}

#[tokio::test]
async fn grace_does_not_cover_a_token_older_than_the_previous_one() {
    let w = grace_world(10 * SECOND);
    w.manager.open(new_session("a")).await.unwrap();
    let t1 = w.manager.issue_token(&id("a")).await.unwrap();
    w.clock.advance(SECOND);
    let r1 = w
        .manager
        .reconnect(&id("a"), t1.token.expose())
        .await
        .unwrap();
    w.clock.advance(SECOND);
    w.manager
        .reconnect(&id("a"), r1.token.token.expose())
        .await
        .unwrap();
    assert_eq!(
        code(w.manager.reconnect(&id("a"), t1.token.expose()).await),
        ResultCode::TokenReused
    );
}

#[tokio::test]
async fn grace_ends_when_a_new_token_was_minted_since() {
    let w = grace_world(10 * SECOND);
    w.manager.open(new_session("a")).await.unwrap();
    let t = w.manager.issue_token(&id("a")).await.unwrap();
    w.manager
        .reconnect(&id("a"), t.token.expose())
        .await
        .unwrap();
    w.clock.advance(SECOND);
    w.manager.issue_token(&id("a")).await.unwrap();
    assert_eq!(
        code(w.manager.reconnect(&id("a"), t.token.expose()).await),
        ResultCode::TokenReused
    );
}

#[tokio::test]
async fn list_pages_newest_activity_first_and_filters() {
    let w = world();
    for n in 0..5 {
        w.manager.open(new_session(&format!("s{n}"))).await.unwrap();
        w.clock.advance(SECOND);
    }
    w.manager
        .disconnect(&id("s3"), DisconnectReason::client_closed())
        .await
        .unwrap();
    let q = |after, status| ListQuery {
        status,
        limit: 2,
        after,
    };
    let mut seen = vec![];
    let mut after = None;
    loop {
        let page = w.manager.list(q(after, None)).await.unwrap();
        seen.extend(page.sessions.iter().map(|s| s.id().to_string()));
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ["s4", "s3", "s2", "s1", "s0"]);
    let active = w
        .manager
        .list(ListQuery {
            status: Some(SessionStatus::Disconnected),
            limit: 10,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(active.sessions.len(), 1);
    assert!(active.next_cursor.is_none());
    assert!(matches!(
        w.manager.list(q(None, None).with_limit(0)).await,
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        w.manager.list(q(None, None).with_limit(MAX_PAGE + 1)).await,
        Err(Error::Invalid { .. })
    ));
    let c = w.manager.counts().await.unwrap();
    assert_eq!((c.active, c.idle, c.disconnected), (4, 0, 1));
}

trait WithLimit {
    fn with_limit(self, limit: u32) -> Self;
}
impl WithLimit for ListQuery {
    fn with_limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }
}

#[test]
fn manager_refuses_a_lifetime_that_differs_from_the_policy() {
    let policy = Policy::new(MINUTE, 60 * MINUTE, 30 * MINUTE, Duration::ZERO).unwrap();
    let r = SessionManager::new(
        Arc::new(InMemoryStore::new()),
        Arc::new(FakeAuthority),
        Arc::new(NoEvents),
        Arc::new(SystemClock),
        policy,
    );
    assert!(matches!(r, Err(Error::Policy(_))));
}

/// A store whose database is gone.
struct DownStore;

#[async_trait::async_trait]
impl SessionStore for DownStore {
    async fn insert(&self, _: &Session, _: Change) -> Result<Recorded, Error> {
        Err(Error::Unavailable("down".into()))
    }
    async fn get(&self, _: &SessionId) -> Result<Option<Session>, Error> {
        Err(Error::Unavailable("down".into()))
    }
    async fn list(&self, _: &ListQuery) -> Result<Vec<Session>, Error> {
        Err(Error::Unavailable("down".into()))
    }
    async fn counts(&self) -> Result<StatusCounts, Error> {
        Err(Error::Unavailable("down".into()))
    }
    async fn touch(&self, _: &SessionId, _: Change) -> Result<Option<Recorded>, Error> {
        Err(Error::Unavailable("down".into()))
    }
    async fn disconnect(
        &self,
        _: &SessionId,
        _: &DisconnectReason,
        _: Change,
    ) -> Result<Option<Recorded>, Error> {
        Err(Error::Unavailable("down".into()))
    }
    async fn set_token(
        &self,
        _: &SessionId,
        _: &TokenHash,
        _: Timestamp,
        _: Change,
    ) -> Result<Option<Recorded>, Error> {
        Err(Error::Unavailable("down".into()))
    }
    async fn consume_token(
        &self,
        _: &SessionId,
        _: &TokenHash,
        _: &TokenHash,
        _: Timestamp,
        _: Change,
    ) -> Result<Option<Recorded>, Error> {
        Err(Error::Unavailable("down".into()))
    }
    async fn revoke_token(&self, _: &SessionId, _: Change) -> Result<Option<Recorded>, Error> {
        Err(Error::Unavailable("down".into()))
    }
    async fn mark_idle(&self, _: Timestamp, _: Change) -> Result<Vec<Recorded>, Error> {
        Err(Error::Unavailable("down".into()))
    }
    async fn reap(
        &self,
        _: Timestamp,
        _: &DisconnectReason,
        _: Change,
    ) -> Result<Vec<Recorded>, Error> {
        Err(Error::Unavailable("down".into()))
    }
}

#[tokio::test]
async fn a_down_store_is_database_unavailable_and_emits_nothing() {
    let events = Arc::new(CollectingSink::default());
    let m = SessionManager::new(
        Arc::new(DownStore),
        Arc::new(FakeAuthority),
        events.clone(),
        Arc::new(SystemClock),
        Policy::defaults(),
    )
    .unwrap();
    let tok = FakeAuthority.mint(&id("a"), SystemClock.now()).unwrap();
    assert_eq!(
        code(m.reconnect(&id("a"), tok.token.expose()).await),
        ResultCode::DatabaseUnavailable
    );
    assert_eq!(
        code(m.open(new_session("a")).await),
        ResultCode::DatabaseUnavailable
    );
    assert!(events.events().is_empty());
}

#[tokio::test]
async fn each_committed_event_reaches_the_sink_with_its_outbox_seq() {
    let store = Arc::new(InMemoryStore::new());
    let events = Arc::new(CollectingSink::default());
    let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_800_000_000)));
    let m = SessionManager::new(
        store.clone(),
        Arc::new(FakeAuthority),
        events.clone(),
        clock,
        Policy::defaults(),
    )
    .unwrap();
    m.open(new_session("a")).await.unwrap();
    let t = m.issue_token(&id("a")).await.unwrap();
    m.reconnect(&id("a"), t.token.expose()).await.unwrap();
    m.touch(&id("nope")).await.unwrap_err();
    let published = events.events();
    let stored = store.events_after(0, 100).await.unwrap();
    assert_eq!(
        published, stored,
        "the sink sees exactly the outbox, in order"
    );
    assert_eq!(
        published.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(published[2].event.reconnect_count, 1);
}

#[tokio::test]
async fn authorize_accepts_only_the_live_token_and_consumes_nothing() {
    let w = world();
    w.manager.open(new_session("a")).await.unwrap();
    w.manager.open(new_session("b")).await.unwrap();
    let t = w.manager.issue_token(&id("a")).await.unwrap();
    let events = w.events.kinds().len();
    for _ in 0..3 {
        let s = w
            .manager
            .authorize(&id("a"), t.token.expose())
            .await
            .unwrap();
        assert_eq!(s.id(), &id("a"));
    }
    assert_eq!(w.events.kinds().len(), events, "a check emits nothing");
    assert_eq!(
        code(w.manager.authorize(&id("b"), t.token.expose()).await),
        ResultCode::SessionIdMismatch
    );
    assert_eq!(
        code(w.manager.authorize(&id("a"), "junk").await),
        ResultCode::InvalidToken
    );
    // Still consumable by a reconnect, exactly once.
    let r = w
        .manager
        .reconnect(&id("a"), t.token.expose())
        .await
        .unwrap();
    assert_eq!(r.session.reconnect_count(), 1);
    w.manager
        .authorize(&id("a"), r.token.token.expose())
        .await
        .unwrap();
}

#[tokio::test]
async fn authorize_with_a_consumed_token_is_reuse_and_revokes() {
    let w = world();
    w.manager.open(new_session("a")).await.unwrap();
    let t = w.manager.issue_token(&id("a")).await.unwrap();
    w.clock.advance(SECOND);
    let r = w
        .manager
        .reconnect(&id("a"), t.token.expose())
        .await
        .unwrap();
    assert_eq!(
        code(w.manager.authorize(&id("a"), t.token.expose()).await),
        ResultCode::TokenReused
    );
    assert_eq!(w.events.kinds().last(), Some(&EventKind::TokenReused));
    assert_eq!(
        code(w.manager.authorize(&id("a"), r.token.token.expose()).await),
        ResultCode::TokenReused,
        "the live token was revoked"
    );
}

#[tokio::test]
async fn authorize_refuses_superseded_expired_and_ended() {
    let w = world();
    w.manager.open(new_session("a")).await.unwrap();
    let old = w.manager.issue_token(&id("a")).await.unwrap();
    w.clock.advance(SECOND);
    let live = w.manager.issue_token(&id("a")).await.unwrap();
    assert_eq!(
        code(w.manager.authorize(&id("a"), old.token.expose()).await),
        ResultCode::TokenMismatch
    );
    w.manager
        .authorize(&id("a"), live.token.expose())
        .await
        .unwrap();
    w.clock.advance(LIFETIME);
    assert_eq!(
        code(w.manager.authorize(&id("a"), live.token.expose()).await),
        ResultCode::TokenExpired
    );
    let fresh = w.manager.issue_token(&id("a")).await.unwrap();
    w.manager
        .disconnect(&id("a"), DisconnectReason::client_closed())
        .await
        .unwrap();
    assert_eq!(
        code(w.manager.authorize(&id("a"), fresh.token.expose()).await),
        ResultCode::SessionAlreadyDisconnected
    );
    assert_eq!(
        code(
            w.manager
                .authorize(&id("gone"), "gone|j|1|9999999999|session_reconnect")
                .await
        ),
        ResultCode::SessionNotFound
    );
}

#[tokio::test]
async fn inside_the_grace_window_authorize_with_the_previous_token_does_not_revoke() {
    let w = grace_world(10 * SECOND);
    w.manager.open(new_session("a")).await.unwrap();
    let t = w.manager.issue_token(&id("a")).await.unwrap();
    let r = w
        .manager
        .reconnect(&id("a"), t.token.expose())
        .await
        .unwrap();
    assert_eq!(
        code(w.manager.authorize(&id("a"), t.token.expose()).await),
        ResultCode::TokenMismatch
    );
    w.manager
        .authorize(&id("a"), r.token.token.expose())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_resumed_session_records_its_target_and_the_prefix_is_reserved() {
    let w = world();
    w.manager.open(new_session("fresh")).await.unwrap();
    let reason = DisconnectReason::resumed_as(&id("old"));
    assert_eq!(reason.as_str(), "resumed:old");
    let s = w.manager.disconnect(&id("fresh"), reason).await.unwrap();
    let target = s
        .disconnect_reason()
        .and_then(DisconnectReason::resumed_target);
    assert_eq!(target, Some(id("old")));
    assert!(
        DisconnectReason::parse("resumed:old").is_err(),
        "callers cannot forge it"
    );
    assert_eq!(DisconnectReason::client_closed().resumed_target(), None);
    let stored = DisconnectReason::from_stored("resumed:old").unwrap();
    assert_eq!(stored.resumed_target(), Some(id("old")));
}

#[tokio::test]
async fn heartbeats_are_written_at_most_once_per_interval() {
    let w = world();
    w.manager.open(new_session("a")).await.unwrap();
    let writes = || {
        w.events
            .kinds()
            .iter()
            .filter(|k| **k == EventKind::Updated(UpdateType::Activity))
            .count()
    };
    assert!(w.manager.heartbeat(&id("a")).await.unwrap());
    assert_eq!(writes(), 1);
    for _ in 0..100 {
        w.clock.advance(Duration::from_millis(9));
        assert!(w.manager.heartbeat(&id("a")).await.unwrap());
    }
    assert_eq!(writes(), 1, "900 ms of heartbeats: one write");
    w.clock.advance(Duration::from_millis(100));
    assert!(w.manager.heartbeat(&id("a")).await.unwrap());
    assert_eq!(
        writes(),
        2,
        "past the 1 s interval: the next one is written"
    );
    assert_eq!(
        w.manager.get(&id("a")).await.unwrap().last_activity(),
        w.clock.now()
    );
}

/// The in-memory store, whose `touch` says when it starts and then waits to be let through.
struct GatedTouch {
    inner: InMemoryStore,
    touches: std::sync::atomic::AtomicUsize,
    entered: tokio::sync::Notify,
    gate: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl SessionStore for GatedTouch {
    async fn insert(&self, s: &Session, c: Change) -> Result<Recorded, Error> {
        self.inner.insert(s, c).await
    }
    async fn get(&self, id: &SessionId) -> Result<Option<Session>, Error> {
        self.inner.get(id).await
    }
    async fn list(&self, q: &ListQuery) -> Result<Vec<Session>, Error> {
        self.inner.list(q).await
    }
    async fn counts(&self) -> Result<StatusCounts, Error> {
        self.inner.counts().await
    }
    async fn touch(&self, id: &SessionId, c: Change) -> Result<Option<Recorded>, Error> {
        self.touches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.entered.notify_one();
        let _pass = self.gate.acquire().await;
        self.inner.touch(id, c).await
    }
    async fn disconnect(
        &self,
        id: &SessionId,
        r: &DisconnectReason,
        c: Change,
    ) -> Result<Option<Recorded>, Error> {
        self.inner.disconnect(id, r, c).await
    }
    async fn set_token(
        &self,
        id: &SessionId,
        h: &TokenHash,
        e: Timestamp,
        c: Change,
    ) -> Result<Option<Recorded>, Error> {
        self.inner.set_token(id, h, e, c).await
    }
    async fn consume_token(
        &self,
        id: &SessionId,
        p: &TokenHash,
        n: &TokenHash,
        e: Timestamp,
        c: Change,
    ) -> Result<Option<Recorded>, Error> {
        self.inner.consume_token(id, p, n, e, c).await
    }
    async fn revoke_token(&self, id: &SessionId, c: Change) -> Result<Option<Recorded>, Error> {
        self.inner.revoke_token(id, c).await
    }
    async fn mark_idle(&self, t: Timestamp, c: Change) -> Result<Vec<Recorded>, Error> {
        self.inner.mark_idle(t, c).await
    }
    async fn reap(
        &self,
        t: Timestamp,
        r: &DisconnectReason,
        c: Change,
    ) -> Result<Vec<Recorded>, Error> {
        self.inner.reap(t, r, c).await
    }
}

#[tokio::test]
async fn heartbeats_during_the_write_do_not_write_again() {
    let store = Arc::new(GatedTouch {
        inner: InMemoryStore::new(),
        touches: 0.into(),
        entered: tokio::sync::Notify::new(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_800_000_000)));
    let m = SessionManager::new(
        store.clone(),
        Arc::new(FakeAuthority),
        Arc::new(NoEvents),
        clock.clone(),
        Policy::defaults(),
    )
    .unwrap();
    m.open(new_session("a")).await.unwrap();
    let first = tokio::spawn({
        let m = m.clone();
        async move { m.heartbeat(&id("a")).await }
    });
    store.entered.notified().await;
    // The first one's write is in flight: these are acknowledged without writing.
    for _ in 0..10 {
        clock.advance(Duration::from_millis(10));
        // Bounded only so that a regression fails instead of hanging on the closed gate.
        let beat = tokio::time::timeout(Duration::from_secs(10), m.heartbeat(&id("a")))
            .await
            .expect("acknowledged without waiting for the write in flight");
        assert!(beat.unwrap());
    }
    store.gate.add_permits(100);
    assert!(first.await.unwrap().unwrap());
    assert_eq!(store.touches.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_heartbeat_write_is_tried_again_by_the_next() {
    let w = world_with(Policy::defaults());
    let m = SessionManager::new(
        Arc::new(DownStore),
        Arc::new(FakeAuthority),
        Arc::new(NoEvents),
        w.clock.clone(),
        Policy::defaults(),
    )
    .unwrap();
    assert!(m.heartbeat(&id("a")).await.is_err());
    assert!(
        m.heartbeat(&id("a")).await.is_err(),
        "not written: not coalesced with the failed one"
    );
}

#[tokio::test]
async fn a_heartbeat_for_an_ended_or_unknown_session_is_false() {
    let w = world();
    w.manager.open(new_session("a")).await.unwrap();
    assert!(w.manager.heartbeat(&id("a")).await.unwrap());
    w.manager
        .disconnect(&id("a"), DisconnectReason::client_closed())
        .await
        .unwrap();
    assert!(
        !w.manager.heartbeat(&id("a")).await.unwrap(),
        "ended through this manager: known at once, not after the interval"
    );
    assert!(!w.manager.heartbeat(&id("nope")).await.unwrap());
}

#[test]
fn the_activity_interval_must_be_shorter_than_idle_after() {
    let p = Policy::defaults();
    assert_eq!(p.activity_interval(), Duration::from_secs(1));
    assert!(p.with_activity_interval(Duration::ZERO).is_ok());
    assert!(p.with_activity_interval(5 * MINUTE).is_err());
}

/// Remembers what it was told, as `name` or `name:detail` lines.
#[derive(Default)]
struct Recording(std::sync::Mutex<Vec<String>>);

impl Recording {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    fn note(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

impl Observer for Recording {
    fn session_opened(&self) {
        self.note("opened".into());
    }
    fn session_ended(&self, reason: &DisconnectReason) {
        self.note(format!("ended:{}", reason.as_str()));
    }
    fn reconnect(&self, result: ResultCode) {
        self.note(format!("reconnect:{result}"));
    }
    fn token_reused(&self) {
        self.note("token_reused".into());
    }
    fn token_issued(&self) {
        self.note("token_issued".into());
    }
}

fn observed_world(policy: Policy) -> (World, Arc<Recording>) {
    let mut w = world_with(policy);
    let seen = Arc::new(Recording::default());
    w.manager = w.manager.with_observer(seen.clone());
    (w, seen)
}

#[tokio::test]
async fn the_observer_is_told_each_outcome_once() {
    let (w, seen) = observed_world(Policy::defaults());
    w.manager.open(new_session("a")).await.unwrap();
    // A refused open is no opening.
    w.manager.open(new_session("a")).await.unwrap_err();
    assert_eq!(seen.take(), ["opened"]);

    // Three reconnects in a row: three successes, each counted once (check, then consume).
    let mut token = w.manager.issue_token(&id("a")).await.unwrap().token;
    let first = token.clone();
    for _ in 0..3 {
        w.clock.advance(SECOND);
        token = w
            .manager
            .reconnect(&id("a"), token.expose())
            .await
            .unwrap()
            .token
            .token;
    }
    assert_eq!(
        seen.take(),
        [
            "token_issued",
            "reconnect:reconnected",
            "reconnect:reconnected",
            "reconnect:reconnected"
        ]
    );

    // The two halves called separately (as the REST route does) count once per attempt too: a
    // refusal at the check, and a success after it.
    w.manager.check_token(&id("a"), "garbage").unwrap_err();
    let presented = w.manager.check_token(&id("a"), token.expose()).unwrap();
    assert_eq!(
        seen.take(),
        ["reconnect:invalid_token"],
        "a pass is not yet an outcome"
    );
    w.manager
        .reconnect_checked(&id("a"), presented)
        .await
        .unwrap();
    assert_eq!(seen.take(), ["reconnect:reconnected"]);

    // Replaying a consumed token: one reuse detected, one refused attempt with its code.
    assert_eq!(
        code(w.manager.reconnect(&id("a"), first.expose()).await),
        ResultCode::TokenReused
    );
    assert_eq!(seen.take(), ["token_reused", "reconnect:token_reused"]);
    // Reuse found by `authorize` (not a reconnect) is counted as reuse only.
    assert_eq!(
        code(w.manager.authorize(&id("a"), first.expose()).await),
        ResultCode::TokenReused
    );
    assert_eq!(seen.take(), ["token_reused"]);

    // Store-side refusals carry their codes.
    let ghost = FakeAuthority.mint(&id("ghost"), w.clock.now()).unwrap();
    w.manager
        .reconnect(&id("ghost"), ghost.token.expose())
        .await
        .unwrap_err();
    assert_eq!(seen.take(), ["reconnect:session_not_found"]);

    // Ends, with their reasons: by a caller (a refused second end is none), and by the sweep.
    let admin = DisconnectReason::parse("admin").unwrap();
    w.manager.disconnect(&id("a"), admin.clone()).await.unwrap();
    w.manager.disconnect(&id("a"), admin).await.unwrap_err();
    w.manager.open(new_session("b")).await.unwrap();
    w.clock.advance(30 * MINUTE);
    assert_eq!(w.manager.sweep().await.unwrap().reaped, 1);
    assert_eq!(seen.take(), ["ended:admin", "opened", "ended:idle_timeout"]);
}

#[tokio::test]
async fn a_repeat_inside_the_grace_window_is_a_success_for_the_observer() {
    let (w, seen) =
        observed_world(Policy::new(5 * MINUTE, 30 * MINUTE, LIFETIME, 10 * SECOND).unwrap());
    w.manager.open(new_session("a")).await.unwrap();
    let t = w.manager.issue_token(&id("a")).await.unwrap();
    w.manager
        .reconnect(&id("a"), t.token.expose())
        .await
        .unwrap();
    let again = w
        .manager
        .reconnect(&id("a"), t.token.expose())
        .await
        .unwrap();
    assert!(again.repeated);
    assert_eq!(
        seen.take(),
        [
            "opened",
            "token_issued",
            "reconnect:reconnected",
            "reconnect:reconnected"
        ]
    );
}

#[test]
fn the_default_observer_is_silent() {
    // Every method has a default: an observer may implement none of them.
    struct Nothing;
    impl Observer for Nothing {}
    let o: &dyn Observer = &Nothing;
    o.session_opened();
    o.session_ended(&DisconnectReason::client_closed());
    o.reconnect(ResultCode::Reconnected);
    o.token_reused();
    o.token_issued();
}
