//! The cases of the store contract. Each runs on a fresh, empty store; every port call goes through
//! the checker (`Checked`), which holds it to the domain's rules, and the cases add what the rules
//! alone do not say: boundaries, ordering, single use under concurrency.

use std::time::Duration;

use super::{Checked, join_all, must};
use crate::error::Error;
use crate::events::{EventKind, UpdateType};
use crate::ports::{Change, Cursor, ListQuery, Recorded, SessionStore};
use crate::session::{
    DisconnectReason, Metadata, NewSession, Session, SessionId, SessionStatus, TokenHash,
};
use crate::time::Timestamp;

const T0: i64 = 1_800_000_000_000_000;

const CREATED: EventKind = EventKind::Created;
const ACTIVITY: EventKind = EventKind::Updated(UpdateType::Activity);
const IDLE: EventKind = EventKind::Updated(UpdateType::Idle);
const ISSUED: EventKind = EventKind::Updated(UpdateType::TokenIssued);
const RECONNECTED: EventKind = EventKind::Updated(UpdateType::Reconnected);
const ENDED: EventKind = EventKind::Disconnected;
const REUSED: EventKind = EventKind::TokenReused;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_micros(T0 + secs * 1_000_000)
}

fn id(s: &str) -> SessionId {
    match SessionId::parse(s) {
        Ok(id) => id,
        Err(e) => panic!("test id {s:?}: {e}"),
    }
}

fn ch(secs: i64, event: EventKind) -> Change {
    Change {
        at: at(secs),
        event,
    }
}

fn h(n: u8) -> TokenHash {
    TokenHash::from_bytes([n; 32])
}

fn session(sid: &str, opened: i64) -> Session {
    let metadata = match Metadata::parse(serde_json::json!({"region": "eu", "n": [1, 2]})) {
        Ok(m) => m,
        Err(e) => panic!("test metadata: {e}"),
    };
    let new = NewSession {
        session_id: id(sid),
        client_type: "cli".into(),
        client_version: Some("2.0".into()),
        principal: Some("alice".into()),
        metadata,
    };
    match Session::open(new, at(opened)) {
        Ok(s) => s,
        Err(e) => panic!("test session: {e}"),
    }
}

/// A change the case expects to succeed.
fn done(recorded: Option<Recorded>, what: &str) -> Session {
    match recorded {
        Some(r) => r.session,
        None => panic!("{what}: refused"),
    }
}

async fn insert<S: SessionStore + ?Sized>(t: &Checked<'_, S>, sid: &str, opened: i64) {
    must(
        t.insert(&session(sid, opened), ch(opened, CREATED)).await,
        "insert",
    );
}

fn ids(sessions: &[Session]) -> Vec<&str> {
    sessions.iter().map(|s| s.id().as_str()).collect()
}

fn changed_ids(recorded: &[Recorded]) -> Vec<&str> {
    let mut ids: Vec<&str> = recorded.iter().map(|r| r.session.id().as_str()).collect();
    ids.sort_unstable();
    ids
}

pub(super) async fn insert_get_and_duplicates<S: SessionStore + ?Sized>(t: &Checked<'_, S>) {
    let s = session("a", 0);
    must(t.insert(&s, ch(0, CREATED)).await, "insert");
    assert_eq!(t.get(&id("a")).await, Some(s.clone()));
    assert!(matches!(
        t.insert(&s, ch(0, CREATED)).await,
        Err(Error::AlreadyExists)
    ));
    assert_eq!(t.get(&id("missing")).await, None);
}

pub(super) async fn touch_and_disconnect<S: SessionStore + ?Sized>(t: &Checked<'_, S>) {
    insert(t, "a", 0).await;
    t.set_token(&id("a"), &h(1), at(900), ch(0, ISSUED)).await;
    assert_eq!(t.mark_idle(at(10), ch(10, IDLE)).await.len(), 1);
    let s = done(t.touch(&id("a"), ch(20, ACTIVITY)).await, "touch");
    assert_eq!(s.status(), SessionStatus::Active);
    assert_eq!(s.last_activity(), at(20));
    assert_eq!(s.idle_since(), None);
    assert!(t.touch(&id("zz"), ch(20, ACTIVITY)).await.is_none());

    let reason = DisconnectReason::client_closed();
    let s = done(
        t.disconnect(&id("a"), &reason, ch(30, ENDED)).await,
        "disconnect",
    );
    assert_eq!(s.status(), SessionStatus::Disconnected);
    assert_eq!(s.disconnected_at(), Some(at(30)));
    assert_eq!(s.disconnect_reason(), Some(&reason));
    assert_eq!(s.duration(), Some(Duration::from_secs(30)));
    assert!(
        s.token().hash.is_none(),
        "an ended session keeps no live token"
    );
    assert!(
        t.disconnect(&id("a"), &reason, ch(31, ENDED))
            .await
            .is_none()
    );
    assert!(t.touch(&id("a"), ch(32, ACTIVITY)).await.is_none());
    assert!(
        t.set_token(&id("a"), &h(2), at(999), ch(0, ISSUED))
            .await
            .is_none()
    );
    assert!(t.revoke_token(&id("a"), ch(33, REUSED)).await.is_none());
    assert_eq!(t.get(&id("a")).await, Some(s));
}

pub(super) async fn consume_is_a_compare_and_swap<S: SessionStore + ?Sized>(t: &Checked<'_, S>) {
    insert(t, "a", 0).await;
    t.set_token(&id("a"), &h(1), at(900), ch(0, ISSUED)).await;
    t.mark_idle(at(5), ch(5, IDLE)).await;

    assert!(
        t.consume_token(&id("a"), &h(9), &h(2), at(1900), ch(10, RECONNECTED))
            .await
            .is_none(),
        "wrong hash"
    );
    assert!(
        t.consume_token(&id("a"), &h(1), &h(2), at(1900), ch(900, RECONNECTED))
            .await
            .is_none(),
        "expired at exactly exp"
    );
    assert!(
        t.consume_token(&id("zz"), &h(1), &h(2), at(1900), ch(10, RECONNECTED))
            .await
            .is_none(),
        "no such session"
    );

    let s = done(
        t.consume_token(&id("a"), &h(1), &h(2), at(1900), ch(10, RECONNECTED))
            .await,
        "consume",
    );
    assert_eq!(s.reconnect_count(), 1);
    assert_eq!(s.status(), SessionStatus::Active, "idle -> active");
    assert_eq!(s.last_activity(), at(10));
    assert_eq!(s.idle_since(), None);
    assert_eq!(s.token().hash, Some(h(2)));
    assert_eq!(s.token().expires_at, Some(at(1900)));
    assert_eq!(s.token().previous_hash, Some(h(1)));
    assert_eq!(s.token().rotated_at, Some(at(10)));
    assert!(
        t.consume_token(&id("a"), &h(1), &h(3), at(1900), ch(11, RECONNECTED))
            .await
            .is_none(),
        "single use"
    );

    let s = done(t.revoke_token(&id("a"), ch(12, REUSED)).await, "revoke");
    assert_eq!(s.token().hash, None);
    assert_eq!(
        s.token().previous_hash,
        Some(h(1)),
        "kept, so replays stay recognisable"
    );
    assert!(
        t.consume_token(&id("a"), &h(2), &h(3), at(1900), ch(12, RECONNECTED))
            .await
            .is_none(),
        "revoked"
    );
    assert_eq!(t.get(&id("a")).await.map(|s| s.reconnect_count()), Some(1));

    // An ended session's token is dead, even one minted before the end.
    insert(t, "b", 20).await;
    t.set_token(&id("b"), &h(4), at(900), ch(20, ISSUED)).await;
    t.disconnect(&id("b"), &DisconnectReason::client_closed(), ch(21, ENDED))
        .await;
    assert!(
        t.consume_token(&id("b"), &h(4), &h(5), at(1900), ch(22, RECONNECTED))
            .await
            .is_none(),
        "ended"
    );
}

/// 64 reconnects with one token at once: exactly one wins, and the row is that one's rotation.
pub(super) async fn concurrent_consumes_give_one_winner<S: SessionStore + ?Sized>(
    t: &Checked<'_, S>,
) {
    insert(t, "a", 0).await;
    t.set_token(&id("a"), &h(1), at(900), ch(0, ISSUED)).await;
    let before = match t.get(&id("a")).await {
        Some(s) => s,
        None => panic!("inserted session missing"),
    };
    let position = match t.feed {
        Some(feed) => Some(must(feed.last_seq().await, "last_seq")),
        None => None,
    };

    let sid = id("a");
    let (presented, change) = (h(1), ch(10, RECONNECTED));
    let nexts: Vec<TokenHash> = (0..64u8).map(|n| h(100 + n)).collect();
    let calls = nexts
        .iter()
        .map(|next| {
            t.store
                .consume_token(&sid, &presented, next, at(1900), change)
        })
        .collect();
    let winners: Vec<Recorded> = join_all(calls)
        .await
        .into_iter()
        .filter_map(|r| must(r, "consume_token"))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one reconnect wins");

    let winner = &winners[0];
    let mut want = before;
    assert!(want.can_consume(&presented, change.at));
    let next = match winner.session.token().hash {
        Some(next) => next,
        None => panic!("the winner has no live token"),
    };
    want.apply_reconnect(next, at(1900), change.at);
    assert_eq!(winner.session, want, "the winner's row is its rotation");
    assert_eq!(t.get(&id("a")).await, Some(want));
    if let (Some(feed), Some(position)) = (t.feed, position) {
        let events = must(feed.events_after(position, 100).await, "events_after");
        assert_eq!(
            events,
            std::slice::from_ref(&winner.event),
            "one event, the winner's"
        );
    }
}

pub(super) async fn sweep_thresholds<S: SessionStore + ?Sized>(t: &Checked<'_, S>) {
    insert(t, "old", 0).await;
    insert(t, "mid", 100).await;
    insert(t, "new", 200).await;
    t.set_token(&id("old"), &h(1), at(5000), ch(0, ISSUED))
        .await;
    let reason = DisconnectReason::idle_timeout();

    let reaped = t.reap(at(0), &reason, ch(300, ENDED)).await;
    assert_eq!(changed_ids(&reaped), ["old"], "boundary is inclusive");
    assert_eq!(reaped[0].session.disconnect_reason(), Some(&reason));
    assert!(reaped[0].session.token().hash.is_none());

    let idled = t.mark_idle(at(100), ch(300, IDLE)).await;
    assert_eq!(changed_ids(&idled), ["mid"]);
    assert_eq!(idled[0].session.idle_since(), Some(at(300)));
    assert!(
        t.mark_idle(at(100), ch(301, IDLE)).await.is_empty(),
        "already idle"
    );

    let reaped = t.reap(at(150), &reason, ch(400, ENDED)).await;
    assert_eq!(
        changed_ids(&reaped),
        ["mid"],
        "idle sessions are reaped too"
    );
    let reaped = t.reap(at(10_000), &reason, ch(10_000, ENDED)).await;
    assert_eq!(changed_ids(&reaped), ["new"]);
    assert!(
        t.reap(at(10_000), &reason, ch(10_001, ENDED))
            .await
            .is_empty(),
        "ended sessions are not reaped again"
    );
    let c = t.counts().await;
    assert_eq!((c.active, c.idle, c.disconnected), (0, 0, 3));
}

pub(super) async fn list_order_paging_and_counts<S: SessionStore + ?Sized>(t: &Checked<'_, S>) {
    for (n, opened) in [("a", 0), ("b", 5), ("c", 5), ("d", 9)] {
        insert(t, n, opened).await;
    }
    t.disconnect(&id("d"), &DisconnectReason::client_closed(), ch(10, ENDED))
        .await;
    let q = |status, limit, after| ListQuery {
        status,
        limit,
        after,
    };

    assert_eq!(ids(&t.list(&q(None, 10, None)).await), ["d", "c", "b", "a"]);
    let first = t.list(&q(None, 2, None)).await;
    assert_eq!(ids(&first), ["d", "c"]);
    let rest = t.list(&q(None, 10, Some(Cursor::after(&first[1])))).await;
    assert_eq!(ids(&rest), ["b", "a"], "ties on activity are split by id");
    assert_eq!(
        ids(&t.list(&q(Some(SessionStatus::Active), 10, None)).await),
        ["c", "b", "a"]
    );
    assert!(
        t.list(&q(Some(SessionStatus::Idle), 10, None))
            .await
            .is_empty()
    );
    let c = t.counts().await;
    assert_eq!((c.active, c.idle, c.disconnected), (3, 0, 1));
}

/// Every change writes one event, in order; refused changes write none; the feed pages and keeps its
/// epoch.
pub(super) async fn each_change_is_recorded_in_order<S: SessionStore + ?Sized>(t: &Checked<'_, S>) {
    let Some(feed) = t.feed else {
        panic!("a feed case needs the store's EventFeed");
    };
    let mut seqs = vec![];
    let r = must(t.insert(&session("a", 0), ch(0, CREATED)).await, "insert");
    seqs.push(r.event.seq);
    let changes = [
        t.set_token(&id("a"), &h(1), at(900), ch(1, ISSUED)).await,
        t.touch(&id("a"), ch(2, ACTIVITY)).await,
        t.consume_token(&id("a"), &h(1), &h(2), at(900), ch(3, RECONNECTED))
            .await,
        t.revoke_token(&id("a"), ch(4, REUSED)).await,
        t.disconnect(&id("a"), &DisconnectReason::client_closed(), ch(5, ENDED))
            .await,
    ];
    for (n, r) in changes.into_iter().enumerate() {
        match r {
            Some(r) => seqs.push(r.event.seq),
            None => panic!("change {n} refused"),
        }
    }
    // Refused changes record nothing (the checker also compares the outbox position).
    assert!(t.touch(&id("a"), ch(6, ACTIVITY)).await.is_none());
    assert!(t.insert(&session("a", 0), ch(6, CREATED)).await.is_err());

    let events = must(feed.events_after(0, 100).await, "events_after");
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let kinds: Vec<EventKind> = events.iter().map(|e| e.event.kind).collect();
    assert_eq!(
        kinds,
        [CREATED, ISSUED, ACTIVITY, RECONNECTED, REUSED, ENDED]
    );
    assert_eq!(
        events[3].event.reconnect_count, 1,
        "the event shows the row after the change"
    );
    let last = &events[5];
    assert_eq!(last.event.status, SessionStatus::Disconnected);
    assert_eq!(last.event.reason.as_deref(), Some("client_closed"));
    assert_eq!(last.event.at, at(5));
    assert_eq!(last.event.client_type, "cli");
    assert_eq!(must(feed.last_seq().await, "last_seq"), seqs[5]);
    assert_eq!(
        must(feed.events_after(seqs[3], 2).await, "events_after").len(),
        2,
        "paged"
    );
    assert_eq!(
        must(feed.epoch().await, "epoch"),
        must(feed.epoch().await, "epoch")
    );
}
