//! The contract of the store ports, as a test suite any store can run: `tether-persistence` runs it on
//! SQLite and PostgreSQL, this crate on [`InMemoryStore`](crate::InMemoryStore), and an embedder's own
//! store can run it the same way.
//!
//! The reference is the domain's rules, not another store. Every port call of the suite goes through
//! a checker that reads the session (or, for the sweep, every session) first, decides with
//! [`Session::can_consume`], [`Session::should_idle`], [`Session::should_reap`] or
//! [`Session::is_disconnected`] whether the change may happen, applies the matching `Session::apply_*`
//! transition to its copy, and asserts that the store returned exactly that session with the event
//! [`SessionEvent::of`](crate::SessionEvent::of) makes of it, that a read afterwards agrees, and that a
//! refused change changed and recorded nothing. With a feed ([`check_store_and_feed`]), every event is
//! also read back from the outbox, so a store that writes its outbox row in SQL of its own (the
//! PostgreSQL reconnect does) is held to the same event.
//!
//! Behind the cargo feature `contract`, with no dependency of its own (its concurrency is a `join_all`
//! of a few lines, not an async runtime): the service never runs it, so its builds carry none of it.
//! A store's tests enable it with `tether-domain = { ..., features = ["contract"] }` under
//! `[dev-dependencies]`. A violation panics, naming the case.
//!
//! ```
//! use std::sync::Arc;
//! use tether_domain::{InMemoryStore, contract};
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! // Each case gets a fresh, empty store from the factory.
//! contract::check_store_and_feed(|| async { Arc::new(InMemoryStore::new()) }).await;
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use crate::error::Error;
use crate::events::SessionEvent;
use crate::ports::{Change, EventFeed, ListQuery, Recorded, SessionStore, StatusCounts};
use crate::session::{DisconnectReason, Session, SessionId, SessionStatus, TokenHash};
use crate::time::Timestamp;

#[path = "contract_cases.rs"]
mod cases;

/// Runs every case of the `SessionStore` contract, each on a fresh store from `fresh`.
///
/// # Panics
/// At the first violation, with the name of the case (printed to stderr) and what differed.
pub async fn check_store<S, F, Fut>(mut fresh: F)
where
    S: SessionStore + ?Sized,
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<S>>,
{
    for case in Case::STORE {
        let store = fresh().await;
        case.run(&Checked {
            store: &*store,
            feed: None,
        })
        .await;
    }
}

/// Runs every case of the `SessionStore` contract with each event also read back through the
/// store's `EventFeed`, then the cases of the feed itself; each case on a fresh store from `fresh`.
///
/// # Panics
/// At the first violation, with the name of the case (printed to stderr) and what differed.
pub async fn check_store_and_feed<S, F, Fut>(mut fresh: F)
where
    S: SessionStore + EventFeed,
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<S>>,
{
    for case in Case::STORE.into_iter().chain(Case::FEED) {
        let store = fresh().await;
        case.run(&Checked {
            store: &*store,
            feed: Some(&*store),
        })
        .await;
    }
}

/// The cases, by name.
#[derive(Clone, Copy, Debug)]
enum Case {
    InsertGetAndDuplicates,
    TouchAndDisconnect,
    ConsumeIsACompareAndSwap,
    ConcurrentConsumesGiveOneWinner,
    SweepThresholds,
    ListOrderPagingAndCounts,
    EachChangeIsRecordedInOrder,
}

impl Case {
    const STORE: [Case; 6] = [
        Case::InsertGetAndDuplicates,
        Case::TouchAndDisconnect,
        Case::ConsumeIsACompareAndSwap,
        Case::ConcurrentConsumesGiveOneWinner,
        Case::SweepThresholds,
        Case::ListOrderPagingAndCounts,
    ];
    const FEED: [Case; 1] = [Case::EachChangeIsRecordedInOrder];

    async fn run<S: SessionStore + ?Sized>(self, t: &Checked<'_, S>) {
        let _named = Named(self);
        match self {
            Case::InsertGetAndDuplicates => cases::insert_get_and_duplicates(t).await,
            Case::TouchAndDisconnect => cases::touch_and_disconnect(t).await,
            Case::ConsumeIsACompareAndSwap => cases::consume_is_a_compare_and_swap(t).await,
            Case::ConcurrentConsumesGiveOneWinner => {
                cases::concurrent_consumes_give_one_winner(t).await;
            }
            Case::SweepThresholds => cases::sweep_thresholds(t).await,
            Case::ListOrderPagingAndCounts => cases::list_order_paging_and_counts(t).await,
            Case::EachChangeIsRecordedInOrder => cases::each_change_is_recorded_in_order(t).await,
        }
    }
}

/// Names the case that was running when a check panicked.
struct Named(Case);

impl Drop for Named {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("store contract: case {:?} failed", self.0);
        }
    }
}

/// The value of a port call the case expects to succeed.
fn must<T>(result: Result<T, Error>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what}: the store failed: {e:?}"),
    }
}

/// Every session, by id (the contract's stores are small).
fn by_id(mut sessions: Vec<Session>) -> Vec<Session> {
    sessions.sort_by(|a, b| a.id().cmp(b.id()));
    sessions
}

/// A port call, not yet started (the checker reads the state before it).
type Call<'f, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'f>>;

/// A store under test, every call judged against the domain's rules.
pub(crate) struct Checked<'a, S: ?Sized> {
    pub(crate) store: &'a S,
    pub(crate) feed: Option<&'a dyn EventFeed>,
}

impl<S: SessionStore + ?Sized> Checked<'_, S> {
    pub(crate) async fn get(&self, id: &SessionId) -> Option<Session> {
        must(self.store.get(id).await, "get")
    }

    /// Every session, by id.
    pub(crate) async fn all(&self) -> Vec<Session> {
        let query = ListQuery {
            status: None,
            limit: 10_000,
            after: None,
        };
        by_id(must(self.store.list(&query).await, "list"))
    }

    pub(crate) async fn list(&self, query: &ListQuery) -> Vec<Session> {
        must(self.store.list(query).await, "list")
    }

    /// `counts`, checked against the sessions themselves.
    pub(crate) async fn counts(&self) -> StatusCounts {
        let counts = must(self.store.counts().await, "counts");
        let mut want = StatusCounts::default();
        for s in self.all().await {
            match s.status() {
                SessionStatus::Active => want.active += 1,
                SessionStatus::Idle => want.idle += 1,
                SessionStatus::Disconnected => want.disconnected += 1,
            }
        }
        assert_eq!(counts, want, "counts disagree with the sessions stored");
        counts
    }

    /// The outbox position before a call, when there is a feed.
    async fn position(&self) -> Option<u64> {
        match self.feed {
            Some(feed) => Some(must(feed.last_seq().await, "last_seq")),
            None => None,
        }
    }

    /// A recorded change carries the event the domain makes of the session after it, and (with a
    /// feed) the outbox holds exactly that event at that position.
    async fn check_event(&self, op: &str, recorded: &Recorded, change: Change) {
        assert_eq!(
            recorded.event.event,
            SessionEvent::of(change.event, &recorded.session, change.at),
            "{op}: the event does not describe the session after the change"
        );
        if let Some(feed) = self.feed {
            let seq = recorded.event.seq;
            let read = must(
                feed.events_after(seq.saturating_sub(1), 1).await,
                "events_after",
            );
            assert_eq!(
                read,
                std::slice::from_ref(&recorded.event),
                "{op}: the outbox does not hold the returned event at its seq"
            );
        }
    }

    /// Nothing was recorded since `position`.
    async fn check_nothing_recorded(&self, op: &str, position: Option<u64>) {
        if let (Some(feed), Some(before)) = (self.feed, position) {
            let after = must(feed.last_seq().await, "last_seq");
            assert_eq!(after, before, "{op}: a refused change recorded an event");
        }
    }

    pub(crate) async fn insert(
        &self,
        session: &Session,
        change: Change,
    ) -> Result<Recorded, Error> {
        let before = self.get(session.id()).await;
        let position = self.position().await;
        let got = self.store.insert(session, change).await;
        match (&before, &got) {
            (Some(_), Err(Error::AlreadyExists)) => {
                assert_eq!(
                    self.get(session.id()).await,
                    before,
                    "insert: a refused insert changed the row"
                );
                self.check_nothing_recorded("insert", position).await;
            }
            (Some(_), other) => panic!("insert of a taken id: want AlreadyExists, got {other:?}"),
            (None, Ok(recorded)) => {
                assert_eq!(&recorded.session, session, "insert: stored another session");
                self.check_event("insert", recorded, change).await;
                assert_eq!(
                    self.get(session.id()).await.as_ref(),
                    Some(session),
                    "insert: a read afterwards differs"
                );
            }
            (None, Err(e)) => panic!("insert of a new id failed: {e:?}"),
        }
        got
    }

    /// One change of one session: `allowed` is the domain's rule, `apply` its transition.
    async fn one<'f>(
        &self,
        op: &str,
        id: &SessionId,
        allowed: impl FnOnce(&Session) -> bool,
        apply: impl FnOnce(&mut Session),
        change: Change,
        call: impl FnOnce() -> Call<'f, Option<Recorded>>,
    ) -> Option<Recorded> {
        let before = self.get(id).await;
        let position = self.position().await;
        let got = must(call().await, op);
        let want = before.clone().filter(|s| allowed(s)).map(|mut s| {
            apply(&mut s);
            s
        });
        match (&want, &got) {
            (None, None) => {
                assert_eq!(
                    self.get(id).await,
                    before,
                    "{op}: a refused change changed the row"
                );
                self.check_nothing_recorded(op, position).await;
            }
            (Some(want), Some(recorded)) => {
                assert_eq!(
                    &recorded.session, want,
                    "{op}: the store's change differs from the domain's transition"
                );
                self.check_event(op, recorded, change).await;
                assert_eq!(
                    self.get(id).await.as_ref(),
                    Some(want),
                    "{op}: a read afterwards differs from what the change returned"
                );
            }
            (None, Some(recorded)) => panic!(
                "{op}: the domain's rule refuses this change but the store made it: {recorded:?}"
            ),
            (Some(want), None) => panic!(
                "{op}: the domain's rule allows this change but the store refused it (want {want:?})"
            ),
        }
        got
    }

    /// One change of every session that `selected` picks (the sweep).
    async fn all_of<'f>(
        &self,
        op: &str,
        selected: impl Fn(&Session) -> bool,
        apply: impl Fn(&mut Session),
        change: Change,
        call: impl FnOnce() -> Call<'f, Vec<Recorded>>,
    ) -> Vec<Recorded> {
        let before = self.all().await;
        let position = self.position().await;
        let got = must(call().await, op);
        let after: Vec<Session> = before
            .iter()
            .cloned()
            .map(|mut s| {
                if selected(&s) {
                    apply(&mut s);
                }
                s
            })
            .collect();
        let want: Vec<&Session> = after
            .iter()
            .zip(&before)
            .filter(|(_, b)| selected(b))
            .map(|(a, _)| a)
            .collect();
        let changed = by_id(got.iter().map(|r| r.session.clone()).collect());
        assert_eq!(
            changed.iter().collect::<Vec<_>>(),
            want,
            "{op}: the store changed other sessions than the domain's rule selects, or differently"
        );
        for recorded in &got {
            self.check_event(op, recorded, change).await;
        }
        let mut seqs: Vec<u64> = got.iter().map(|r| r.event.seq).collect();
        seqs.dedup();
        assert_eq!(seqs.len(), got.len(), "{op}: two events share a seq");
        if got.is_empty() {
            self.check_nothing_recorded(op, position).await;
        }
        assert_eq!(
            self.all().await,
            after,
            "{op}: a read afterwards differs from the domain's transitions"
        );
        got
    }

    pub(crate) async fn touch(&self, id: &SessionId, change: Change) -> Option<Recorded> {
        let call = || self.store.touch(id, change);
        self.one(
            "touch",
            id,
            |s| !s.is_disconnected(),
            |s| s.apply_touch(change.at),
            change,
            call,
        )
        .await
    }

    pub(crate) async fn disconnect(
        &self,
        id: &SessionId,
        reason: &DisconnectReason,
        change: Change,
    ) -> Option<Recorded> {
        let call = || self.store.disconnect(id, reason, change);
        self.one(
            "disconnect",
            id,
            |s| !s.is_disconnected(),
            |s| s.apply_disconnect(change.at, reason.clone()),
            change,
            call,
        )
        .await
    }

    pub(crate) async fn set_token(
        &self,
        id: &SessionId,
        hash: &TokenHash,
        expires_at: Timestamp,
        change: Change,
    ) -> Option<Recorded> {
        let call = || self.store.set_token(id, hash, expires_at, change);
        self.one(
            "set_token",
            id,
            |s| !s.is_disconnected(),
            |s| s.apply_new_token(*hash, expires_at),
            change,
            call,
        )
        .await
    }

    pub(crate) async fn consume_token(
        &self,
        id: &SessionId,
        presented: &TokenHash,
        next: &TokenHash,
        next_expires_at: Timestamp,
        change: Change,
    ) -> Option<Recorded> {
        let call = || {
            self.store
                .consume_token(id, presented, next, next_expires_at, change)
        };
        self.one(
            "consume_token",
            id,
            |s| s.can_consume(presented, change.at),
            |s| s.apply_reconnect(*next, next_expires_at, change.at),
            change,
            call,
        )
        .await
    }

    pub(crate) async fn revoke_token(&self, id: &SessionId, change: Change) -> Option<Recorded> {
        let call = || self.store.revoke_token(id, change);
        self.one(
            "revoke_token",
            id,
            |s| !s.is_disconnected(),
            Session::apply_revoke,
            change,
            call,
        )
        .await
    }

    pub(crate) async fn mark_idle(&self, idle_before: Timestamp, change: Change) -> Vec<Recorded> {
        let call = || self.store.mark_idle(idle_before, change);
        self.all_of(
            "mark_idle",
            |s| s.should_idle(idle_before),
            |s| s.apply_idle(change.at),
            change,
            call,
        )
        .await
    }

    pub(crate) async fn reap(
        &self,
        reap_before: Timestamp,
        reason: &DisconnectReason,
        change: Change,
    ) -> Vec<Recorded> {
        let call = || self.store.reap(reap_before, reason, change);
        self.all_of(
            "reap",
            |s| s.should_reap(reap_before),
            |s| s.apply_disconnect(change.at, reason.clone()),
            change,
            call,
        )
        .await
    }
}

/// Awaits every future, polling them in turn on the caller's task: real concurrency for a store that
/// does I/O (each call waits on its own connection), with no async runtime (the domain has none).
pub(crate) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, out) in futures.iter_mut().zip(done.iter_mut()) {
            if out.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *out = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::InMemoryStore;

    /// The in-memory store with the classic SQL slip: idle only strictly before the threshold
    /// (`<` for `<=`).
    struct OffByOne(InMemoryStore);

    #[async_trait]
    impl SessionStore for OffByOne {
        async fn insert(&self, session: &Session, change: Change) -> Result<Recorded, Error> {
            self.0.insert(session, change).await
        }
        async fn get(&self, id: &SessionId) -> Result<Option<Session>, Error> {
            self.0.get(id).await
        }
        async fn list(&self, query: &ListQuery) -> Result<Vec<Session>, Error> {
            self.0.list(query).await
        }
        async fn counts(&self) -> Result<StatusCounts, Error> {
            self.0.counts().await
        }
        async fn touch(&self, id: &SessionId, change: Change) -> Result<Option<Recorded>, Error> {
            self.0.touch(id, change).await
        }
        async fn disconnect(
            &self,
            id: &SessionId,
            reason: &DisconnectReason,
            change: Change,
        ) -> Result<Option<Recorded>, Error> {
            self.0.disconnect(id, reason, change).await
        }
        async fn set_token(
            &self,
            id: &SessionId,
            hash: &TokenHash,
            expires_at: Timestamp,
            change: Change,
        ) -> Result<Option<Recorded>, Error> {
            self.0.set_token(id, hash, expires_at, change).await
        }
        async fn consume_token(
            &self,
            id: &SessionId,
            presented: &TokenHash,
            next: &TokenHash,
            next_expires_at: Timestamp,
            change: Change,
        ) -> Result<Option<Recorded>, Error> {
            self.0
                .consume_token(id, presented, next, next_expires_at, change)
                .await
        }
        async fn revoke_token(
            &self,
            id: &SessionId,
            change: Change,
        ) -> Result<Option<Recorded>, Error> {
            self.0.revoke_token(id, change).await
        }
        async fn mark_idle(
            &self,
            idle_before: Timestamp,
            change: Change,
        ) -> Result<Vec<Recorded>, Error> {
            let strictly_before = Timestamp::from_micros(idle_before.as_micros() - 1);
            self.0.mark_idle(strictly_before, change).await
        }
        async fn reap(
            &self,
            reap_before: Timestamp,
            reason: &DisconnectReason,
            change: Change,
        ) -> Result<Vec<Recorded>, Error> {
            self.0.reap(reap_before, reason, change).await
        }
    }

    #[tokio::test]
    #[should_panic(expected = "mark_idle: the store changed other sessions")]
    async fn a_store_that_breaks_a_rule_fails_the_suite() {
        check_store(|| async { Arc::new(OffByOne(InMemoryStore::new())) }).await;
    }
}
