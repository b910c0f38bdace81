//! An in-memory `SessionStore`: the reference the SQL adapters are checked against, and a store for
//! embedders' tests. One mutex makes every operation atomic, as the database does for the adapters.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::Error;
use crate::ports::{ListQuery, SessionStore, StatusCounts};
use crate::session::{DisconnectReason, Session, SessionId, SessionStatus, TokenHash};
use crate::time::Timestamp;

/// Sessions in a map behind a mutex.
#[derive(Debug, Default)]
pub struct InMemoryStore(Mutex<BTreeMap<SessionId, Session>>);

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<SessionId, Session>) -> T) -> Result<T, Error> {
        let mut map = self
            .0
            .lock()
            .map_err(|_| Error::Internal("in-memory store poisoned".into()))?;
        Ok(f(&mut map))
    }

    fn update(
        &self,
        id: &SessionId,
        allowed: impl FnOnce(&Session) -> bool,
        change: impl FnOnce(&mut Session),
    ) -> Result<Option<Session>, Error> {
        self.with(|map| {
            let s = map.get_mut(id)?;
            if !allowed(s) {
                return None;
            }
            change(s);
            Some(s.clone())
        })
    }
}

#[async_trait]
impl SessionStore for InMemoryStore {
    async fn insert(&self, session: &Session) -> Result<(), Error> {
        self.with(|map| {
            if map.contains_key(session.id()) {
                return Err(Error::AlreadyExists);
            }
            map.insert(session.id().clone(), session.clone());
            Ok(())
        })?
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, Error> {
        self.with(|map| map.get(id).cloned())
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Session>, Error> {
        self.with(|map| {
            let mut rows: Vec<Session> = map
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
        self.with(|map| {
            let mut c = StatusCounts::default();
            for s in map.values() {
                match s.status() {
                    SessionStatus::Active => c.active += 1,
                    SessionStatus::Idle => c.idle += 1,
                    SessionStatus::Disconnected => c.disconnected += 1,
                }
            }
            c
        })
    }

    async fn touch(&self, id: &SessionId, at: Timestamp) -> Result<Option<Session>, Error> {
        self.update(id, |s| !s.is_disconnected(), |s| s.apply_touch(at))
    }

    async fn disconnect(
        &self,
        id: &SessionId,
        at: Timestamp,
        reason: &DisconnectReason,
    ) -> Result<Option<Session>, Error> {
        self.update(
            id,
            |s| !s.is_disconnected(),
            |s| s.apply_disconnect(at, reason.clone()),
        )
    }

    async fn set_token(
        &self,
        id: &SessionId,
        hash: &TokenHash,
        expires_at: Timestamp,
    ) -> Result<Option<Session>, Error> {
        self.update(
            id,
            |s| !s.is_disconnected(),
            |s| s.apply_new_token(*hash, expires_at),
        )
    }

    async fn consume_token(
        &self,
        id: &SessionId,
        presented: &TokenHash,
        next: &TokenHash,
        next_expires_at: Timestamp,
        at: Timestamp,
    ) -> Result<Option<Session>, Error> {
        self.update(
            id,
            |s| s.can_consume(presented, at),
            |s| s.apply_reconnect(*next, next_expires_at, at),
        )
    }

    async fn revoke_token(&self, id: &SessionId) -> Result<Option<Session>, Error> {
        self.update(id, |s| !s.is_disconnected(), Session::apply_revoke)
    }

    async fn mark_idle(
        &self,
        idle_before: Timestamp,
        at: Timestamp,
    ) -> Result<Vec<Session>, Error> {
        self.with(|map| {
            map.values_mut()
                .filter(|s| s.should_idle(idle_before))
                .map(|s| {
                    s.apply_idle(at);
                    s.clone()
                })
                .collect()
        })
    }

    async fn reap(
        &self,
        reap_before: Timestamp,
        at: Timestamp,
        reason: &DisconnectReason,
    ) -> Result<Vec<Session>, Error> {
        self.with(|map| {
            map.values_mut()
                .filter(|s| s.should_reap(reap_before))
                .map(|s| {
                    s.apply_disconnect(at, reason.clone());
                    s.clone()
                })
                .collect()
        })
    }
}
