//! An in-memory `SessionStore` and `EventFeed`, a store for embedders' tests. Its conditions and changes
//! are the domain's rules and transitions themselves (`Session::can_consume`, `apply_reconnect`, ...);
//! like the SQL adapters it is held to them by the contract suite (`crate::contract`). One mutex makes every operation atomic (the change and its outbox
//! row together), as a database transaction does for the adapters.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;

use crate::error::Error;
use crate::events::{SessionEvent, StoredEvent};
use crate::ports::{Change, EventFeed, ListQuery, Recorded, SessionStore, StatusCounts};
use crate::session::{DisconnectReason, Session, SessionId, SessionStatus, TokenHash};
use crate::time::Timestamp;

#[derive(Debug, Default)]
struct Inner {
    sessions: BTreeMap<SessionId, Session>,
    outbox: Vec<StoredEvent>,
    last_seq: u64,
    pruned_through: u64,
}

impl Inner {
    fn record(&mut self, session: Session, change: Change) -> Recorded {
        self.last_seq += 1;
        let event = StoredEvent {
            seq: self.last_seq,
            event: SessionEvent::of(change.event, &session, change.at),
        };
        self.outbox.push(event.clone());
        Recorded { session, event }
    }
}

/// Wakes every waiter whenever the outbox grows, and leaves a permit for the next waiter so that a
/// write between a reader's last read and its next wait is not missed (the SQL adapters behave the
/// same). Std only: the domain has no async runtime.
#[derive(Debug, Default)]
struct Notifier {
    generation: AtomicU64,
    permit: std::sync::atomic::AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Notifier {
    fn notify(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.permit.store(true, Ordering::SeqCst);
        let wakers = self
            .wakers
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        wakers.into_iter().for_each(Waker::wake);
    }
}

struct Wait<'a> {
    notifier: &'a Notifier,
    seen: Option<u64>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let n = self.notifier;
        let seen = match self.seen {
            Some(seen) => seen,
            None => {
                if n.permit.swap(false, Ordering::SeqCst) {
                    return Poll::Ready(());
                }
                let now = n.generation.load(Ordering::SeqCst);
                self.seen = Some(now);
                now
            }
        };
        if n.generation.load(Ordering::SeqCst) != seen {
            n.permit.store(false, Ordering::SeqCst);
            return Poll::Ready(());
        }
        if let Ok(mut w) = n.wakers.lock() {
            w.push(cx.waker().clone());
        }
        // Re-check: a notify between the load and the push would otherwise be missed.
        if n.generation.load(Ordering::SeqCst) != seen {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Sessions and their outbox in memory, behind a mutex.
#[derive(Debug, Default)]
pub struct InMemoryStore {
    inner: Mutex<Inner>,
    notifier: Notifier,
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Result<T, Error> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| Error::Internal("in-memory store poisoned".into()))?;
        Ok(f(&mut inner))
    }

    /// Runs a change and, if it recorded anything, wakes the feed's waiters.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Inner) -> T,
        wrote: impl Fn(&T) -> bool,
    ) -> Result<T, Error> {
        let out = self.with(f)?;
        if wrote(&out) {
            self.notifier.notify();
        }
        Ok(out)
    }

    fn update(
        &self,
        id: &SessionId,
        allowed: impl FnOnce(&Session) -> bool,
        apply: impl FnOnce(&mut Session),
        change: Change,
    ) -> Result<Option<Recorded>, Error> {
        self.write(
            |inner| {
                let s = inner.sessions.get_mut(id)?;
                if !allowed(s) {
                    return None;
                }
                apply(s);
                let after = s.clone();
                Some(inner.record(after, change))
            },
            Option::is_some,
        )
    }

    fn update_all(
        &self,
        selected: impl Fn(&Session) -> bool,
        apply: impl Fn(&mut Session),
        change: Change,
    ) -> Result<Vec<Recorded>, Error> {
        self.write(
            |inner| {
                let changed: Vec<Session> = inner
                    .sessions
                    .values_mut()
                    .filter(|s| selected(s))
                    .map(|s| {
                        apply(s);
                        s.clone()
                    })
                    .collect();
                changed
                    .into_iter()
                    .map(|s| inner.record(s, change))
                    .collect()
            },
            |v: &Vec<Recorded>| !v.is_empty(),
        )
    }

    /// Drops outbox events with `seq <= through` (what the SQL adapters' pruning does by age and count).
    ///
    /// # Errors
    /// Only if the store's mutex was poisoned.
    pub fn prune_through(&self, through: u64) -> Result<(), Error> {
        self.with(|inner| {
            inner.outbox.retain(|e| e.seq > through);
            inner.pruned_through = inner.pruned_through.max(through.min(inner.last_seq));
        })
    }
}

#[async_trait]
impl SessionStore for InMemoryStore {
    async fn insert(&self, session: &Session, change: Change) -> Result<Recorded, Error> {
        self.write(
            |inner| {
                if inner.sessions.contains_key(session.id()) {
                    return Err(Error::AlreadyExists);
                }
                inner.sessions.insert(session.id().clone(), session.clone());
                Ok(inner.record(session.clone(), change))
            },
            Result::is_ok,
        )?
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, Error> {
        self.with(|inner| inner.sessions.get(id).cloned())
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Session>, Error> {
        self.with(|inner| {
            let mut rows: Vec<Session> = inner
                .sessions
                .values()
                .filter(|s| query.status.is_none_or(|st| s.status() == st))
                .filter(|s| {
                    query.after.as_ref().is_none_or(|c| {
                        (s.last_activity(), s.id()) < (c.last_activity, &c.session_id)
                    })
                })
                .cloned()
                .collect();
            rows.sort_by(|a, b| (b.last_activity(), b.id()).cmp(&(a.last_activity(), a.id())));
            rows.truncate(query.limit as usize);
            rows
        })
    }

    async fn counts(&self) -> Result<StatusCounts, Error> {
        self.with(|inner| {
            let mut c = StatusCounts::default();
            for s in inner.sessions.values() {
                match s.status() {
                    SessionStatus::Active => c.active += 1,
                    SessionStatus::Idle => c.idle += 1,
                    SessionStatus::Disconnected => c.disconnected += 1,
                }
            }
            c
        })
    }

    async fn touch(&self, id: &SessionId, change: Change) -> Result<Option<Recorded>, Error> {
        self.update(
            id,
            |s| !s.is_disconnected(),
            |s| s.apply_touch(change.at),
            change,
        )
    }

    async fn disconnect(
        &self,
        id: &SessionId,
        reason: &DisconnectReason,
        change: Change,
    ) -> Result<Option<Recorded>, Error> {
        self.update(
            id,
            |s| !s.is_disconnected(),
            |s| s.apply_disconnect(change.at, reason.clone()),
            change,
        )
    }

    async fn set_token(
        &self,
        id: &SessionId,
        hash: &TokenHash,
        expires_at: Timestamp,
        change: Change,
    ) -> Result<Option<Recorded>, Error> {
        self.update(
            id,
            |s| !s.is_disconnected(),
            |s| s.apply_new_token(*hash, expires_at),
            change,
        )
    }

    async fn consume_token(
        &self,
        id: &SessionId,
        presented: &TokenHash,
        next: &TokenHash,
        next_expires_at: Timestamp,
        change: Change,
    ) -> Result<Option<Recorded>, Error> {
        self.update(
            id,
            |s| s.can_consume(presented, change.at),
            |s| s.apply_reconnect(*next, next_expires_at, change.at),
            change,
        )
    }

    async fn revoke_token(
        &self,
        id: &SessionId,
        change: Change,
    ) -> Result<Option<Recorded>, Error> {
        self.update(id, |s| !s.is_disconnected(), Session::apply_revoke, change)
    }

    async fn mark_idle(
        &self,
        idle_before: Timestamp,
        change: Change,
    ) -> Result<Vec<Recorded>, Error> {
        self.update_all(
            |s| s.should_idle(idle_before),
            |s| s.apply_idle(change.at),
            change,
        )
    }

    async fn reap(
        &self,
        reap_before: Timestamp,
        reason: &DisconnectReason,
        change: Change,
    ) -> Result<Vec<Recorded>, Error> {
        self.update_all(
            |s| s.should_reap(reap_before),
            |s| s.apply_disconnect(change.at, reason.clone()),
            change,
        )
    }
}

#[async_trait]
impl EventFeed for InMemoryStore {
    async fn events_after(&self, after: u64, limit: u32) -> Result<Vec<StoredEvent>, Error> {
        self.with(|inner| {
            inner
                .outbox
                .iter()
                .filter(|e| e.seq > after)
                .take(limit as usize)
                .cloned()
                .collect()
        })
    }

    async fn last_seq(&self) -> Result<u64, Error> {
        self.with(|inner| inner.last_seq)
    }

    async fn pruned_through(&self) -> Result<u64, Error> {
        self.with(|inner| inner.pruned_through)
    }

    async fn epoch(&self) -> Result<String, Error> {
        // One store, one lineage: its address is unique for its lifetime.
        Ok(format!("memory-{:p}", self as *const Self))
    }

    async fn wait_for_events(&self) {
        Wait {
            notifier: &self.notifier,
            seen: None,
        }
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use crate::session::{Metadata, NewSession};

    fn session(id: &str) -> Session {
        Session::open(
            NewSession {
                session_id: SessionId::parse(id).unwrap(),
                client_type: "t".into(),
                client_version: None,
                principal: None,
                metadata: Metadata::default(),
            },
            Timestamp::from_secs(1),
        )
        .unwrap()
    }

    fn created() -> Change {
        Change {
            at: Timestamp::from_secs(1),
            event: EventKind::Created,
        }
    }

    /// The in-memory store keeps the store contract (the same suite the SQL adapters run).
    #[tokio::test]
    async fn keeps_the_store_contract() {
        crate::contract::check_store_and_feed(|| async {
            std::sync::Arc::new(InMemoryStore::new())
        })
        .await;
        // And through a trait object, as an embedder holding `Arc<dyn SessionStore>` would run it.
        crate::contract::check_store(|| async {
            std::sync::Arc::new(InMemoryStore::new()) as std::sync::Arc<dyn SessionStore>
        })
        .await;
    }

    #[tokio::test]
    async fn outbox_numbers_events_and_wakes_waiters() {
        let store = std::sync::Arc::new(InMemoryStore::new());
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.wait_for_events().await })
        };
        tokio::task::yield_now().await;
        let r = store.insert(&session("a"), created()).await.unwrap();
        assert_eq!(r.event.seq, 1);
        waiter.await.unwrap();
        store.insert(&session("b"), created()).await.unwrap();
        assert!(store.insert(&session("b"), created()).await.is_err());
        assert_eq!(
            store.last_seq().await.unwrap(),
            2,
            "a refused insert records nothing"
        );
        let seqs: Vec<u64> = store
            .events_after(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [1, 2]);
        store.prune_through(1).unwrap();
        assert_eq!(store.pruned_through().await.unwrap(), 1);
        assert_eq!(store.events_after(0, 10).await.unwrap().len(), 1);
    }
}
