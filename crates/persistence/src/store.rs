//! The `SessionStore` port on SQL. Each state change is one transaction: a single
//! `UPDATE ... WHERE <rule> RETURNING` (the SQL twin of the `Session::can_*`/`should_*` rules and
//! `apply_*` transitions in the domain) plus the event's outbox row. The contract suite in `tests/`
//! runs the same cases here and on the in-memory store.

use async_trait::async_trait;
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, RunQueryDsl};
use tether_domain::{
    Change, DisconnectReason, Error as DomainError, ListQuery, Recorded, Session, SessionEvent,
    SessionId, SessionStatus, SessionStore, StatusCounts, StoredEvent, Timestamp, TokenHash,
};

use crate::db::{Database, Direct};
use crate::error::Error;
use crate::models::{NewEventRow, SessionRow};
use crate::schema::session_events;
use crate::schema::sessions::{self, dsl as s};

const DISCONNECTED: &str = "disconnected";

/// Inside a transaction on `$conn`: turns the changed `$row` into the domain session, appends its
/// event (made by the domain from the row after the change) to the outbox and yields the `Recorded`.
macro_rules! record {
    ($conn:ident, $row:expr, $change:expr) => {{
        let session = $row.into_session()?;
        let event = SessionEvent::of($change.event, &session, $change.at);
        let seq: i64 = diesel::insert_into(session_events::table)
            .values(NewEventRow::from_event(&event))
            .returning(session_events::seq)
            .get_result($conn)
            .await?;
        Recorded {
            session,
            event: StoredEvent {
                seq: u64::try_from(seq).map_err(|_| Error::Corrupt("negative seq".into()))?,
                event,
            },
        }
    }};
}

/// One conditional `UPDATE ... RETURNING` of one session plus its outbox row, in a transaction.
macro_rules! update_one {
    ($db:expr, $id:expr, $filter:expr, $set:expr, $change:expr) => {{
        let change = $change;
        let out = on_conn!($db, conn => {
            conn.transaction::<_, Error, _>(async |c| {
                let row = diesel::update(sessions::table.find($id.as_str()).filter($filter))
                    .set($set)
                    .returning(SessionRow::as_returning())
                    .get_result(c)
                    .await
                    .optional()?;
                Ok(match row {
                    Some(row) => Some(record!(c, row, change)),
                    None => None,
                })
            })
            .await?
        })?;
        if out.is_some() {
            $db.events_written();
        }
        Ok(out)
    }};
}

/// Like `update_one!` for every row the filter selects (the sweep).
macro_rules! update_all {
    ($db:expr, $filter:expr, $set:expr, $change:expr) => {{
        let change = $change;
        let out = on_conn!($db, conn => {
            conn.transaction::<_, Error, _>(async |c| {
                let rows = diesel::update(sessions::table.filter($filter))
                    .set($set)
                    .returning(SessionRow::as_returning())
                    .get_results(c)
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    out.push(record!(c, row, change));
                }
                Ok(out)
            })
            .await?
        })?;
        if !out.is_empty() {
            $db.events_written();
        }
        Ok(out)
    }};
}

fn one(row: Option<SessionRow>) -> Result<Option<Session>, DomainError> {
    Ok(row.map(SessionRow::into_session).transpose()?)
}

/// The port, as callers see it: each call detached on SQLite (see `Database::detached`), with its
/// arguments owned so that the detached task may outlive the caller.
#[async_trait]
impl SessionStore for Database {
    async fn insert(&self, session: &Session, change: Change) -> Result<Recorded, DomainError> {
        let session = session.clone();
        self.detached(|db| async move { db.insert(&session, change).await })
            .await
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, DomainError> {
        let id = id.clone();
        self.detached(|db| async move { db.get(&id).await }).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Session>, DomainError> {
        let query = query.clone();
        self.detached(|db| async move { db.list(&query).await })
            .await
    }

    async fn counts(&self) -> Result<StatusCounts, DomainError> {
        self.detached(|db| async move { db.counts().await }).await
    }

    async fn touch(&self, id: &SessionId, change: Change) -> Result<Option<Recorded>, DomainError> {
        let id = id.clone();
        self.detached(|db| async move { db.touch(&id, change).await })
            .await
    }

    async fn disconnect(
        &self,
        id: &SessionId,
        reason: &DisconnectReason,
        change: Change,
    ) -> Result<Option<Recorded>, DomainError> {
        let (id, reason) = (id.clone(), reason.clone());
        self.detached(|db| async move { db.disconnect(&id, &reason, change).await })
            .await
    }

    async fn set_token(
        &self,
        id: &SessionId,
        hash: &TokenHash,
        expires_at: Timestamp,
        change: Change,
    ) -> Result<Option<Recorded>, DomainError> {
        let (id, hash) = (id.clone(), *hash);
        self.detached(|db| async move { db.set_token(&id, &hash, expires_at, change).await })
            .await
    }

    async fn consume_token(
        &self,
        id: &SessionId,
        presented: &TokenHash,
        next: &TokenHash,
        next_expires_at: Timestamp,
        change: Change,
    ) -> Result<Option<Recorded>, DomainError> {
        let (id, presented, next) = (id.clone(), *presented, *next);
        self.detached(|db| async move {
            db.consume_token(&id, &presented, &next, next_expires_at, change)
                .await
        })
        .await
    }

    async fn revoke_token(
        &self,
        id: &SessionId,
        change: Change,
    ) -> Result<Option<Recorded>, DomainError> {
        let id = id.clone();
        self.detached(|db| async move { db.revoke_token(&id, change).await })
            .await
    }

    async fn mark_idle(
        &self,
        idle_before: Timestamp,
        change: Change,
    ) -> Result<Vec<Recorded>, DomainError> {
        self.detached(|db| async move { db.mark_idle(idle_before, change).await })
            .await
    }

    async fn reap(
        &self,
        reap_before: Timestamp,
        reason: &DisconnectReason,
        change: Change,
    ) -> Result<Vec<Recorded>, DomainError> {
        let reason = reason.clone();
        self.detached(|db| async move { db.reap(reap_before, &reason, change).await })
            .await
    }
}

/// The statements themselves, run on the caller's task.
#[async_trait]
impl SessionStore for Direct {
    async fn insert(&self, session: &Session, change: Change) -> Result<Recorded, DomainError> {
        let row = SessionRow::from_session(session);
        let result = on_conn!(self, conn => {
            conn.transaction::<_, Error, _>(async |c| {
                let inserted: SessionRow = diesel::insert_into(sessions::table)
                    .values(&row)
                    .returning(SessionRow::as_returning())
                    .get_result(c)
                    .await?;
                Ok(record!(c, inserted, change))
            })
            .await
        })?;
        match result {
            Ok(recorded) => {
                self.events_written();
                Ok(recorded)
            }
            Err(Error::Query(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _,
            ))) => Err(DomainError::AlreadyExists),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, DomainError> {
        let row = on_conn!(self, conn => {
            sessions::table
                .find(id.as_str())
                .select(SessionRow::as_select())
                .first(conn)
                .await
                .optional()?
        })?;
        one(row)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Session>, DomainError> {
        let rows = on_conn!(self, conn => {
            let mut q = sessions::table.select(SessionRow::as_select()).into_boxed();
            if let Some(status) = query.status {
                q = q.filter(s::status.eq(status.as_str()));
            }
            if let Some(c) = &query.after {
                let at = c.last_activity.as_micros();
                q = q.filter(
                    s::last_activity
                        .lt(at)
                        .or(s::last_activity.eq(at).and(s::session_id.lt(c.session_id.as_str()))),
                );
            }
            q.order((s::last_activity.desc(), s::session_id.desc()))
                .limit(i64::from(query.limit))
                .load(conn)
                .await?
        })?;
        Ok(rows
            .into_iter()
            .map(SessionRow::into_session)
            .collect::<Result<_, _>>()?)
    }

    async fn counts(&self) -> Result<StatusCounts, DomainError> {
        let rows: Vec<(String, i64)> = on_conn!(self, conn => {
            sessions::table
                .group_by(s::status)
                .select((s::status, count_star()))
                .load(conn)
                .await?
        })?;
        let mut counts = StatusCounts::default();
        for (status, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            match SessionStatus::parse(&status) {
                Ok(SessionStatus::Active) => counts.active = n,
                Ok(SessionStatus::Idle) => counts.idle = n,
                Ok(SessionStatus::Disconnected) => counts.disconnected = n,
                Err(_) => return Err(Error::Corrupt(format!("status {status:?}")).into()),
            }
        }
        Ok(counts)
    }

    async fn touch(&self, id: &SessionId, change: Change) -> Result<Option<Recorded>, DomainError> {
        update_one!(
            self,
            id,
            s::status.ne(DISCONNECTED),
            (
                s::status.eq(SessionStatus::Active.as_str()),
                s::last_activity.eq(change.at.as_micros()),
                s::idle_since.eq(None::<i64>),
            ),
            change
        )
    }

    async fn disconnect(
        &self,
        id: &SessionId,
        reason: &DisconnectReason,
        change: Change,
    ) -> Result<Option<Recorded>, DomainError> {
        update_one!(
            self,
            id,
            s::status.ne(DISCONNECTED),
            (
                s::status.eq(DISCONNECTED),
                s::disconnected_at.eq(change.at.as_micros()),
                s::disconnect_reason.eq(reason.as_str()),
                s::idle_since.eq(None::<i64>),
                s::token_hash.eq(None::<Vec<u8>>),
                s::token_expires_at.eq(None::<i64>),
            ),
            change
        )
    }

    async fn set_token(
        &self,
        id: &SessionId,
        hash: &TokenHash,
        expires_at: Timestamp,
        change: Change,
    ) -> Result<Option<Recorded>, DomainError> {
        update_one!(
            self,
            id,
            s::status.ne(DISCONNECTED),
            (
                s::token_hash.eq(hash.as_bytes().as_slice()),
                s::token_expires_at.eq(expires_at.as_micros()),
            ),
            change
        )
    }

    async fn consume_token(
        &self,
        id: &SessionId,
        presented: &TokenHash,
        next: &TokenHash,
        next_expires_at: Timestamp,
        change: Change,
    ) -> Result<Option<Recorded>, DomainError> {
        let now = change.at.as_micros();
        if let crate::db::Pools::Postgres(_) = &self.pools {
            return self
                .consume_token_pg(id, presented, next, next_expires_at, change)
                .await;
        }
        // The compare-and-swap: only the row whose live hash is the presented one changes, so of N
        // concurrent attempts with one token exactly one gets a row back. `prev_token_hash` takes the
        // pre-update `token_hash` (SET expressions read the old row on both backends).
        update_one!(
            self,
            id,
            s::status
                .ne(DISCONNECTED)
                .and(s::token_hash.eq(presented.as_bytes().as_slice()))
                .and(s::token_expires_at.gt(now)),
            (
                s::prev_token_hash.eq(s::token_hash),
                s::token_hash.eq(next.as_bytes().as_slice()),
                s::token_expires_at.eq(next_expires_at.as_micros()),
                s::token_rotated_at.eq(now),
                s::reconnect_count.eq(s::reconnect_count + 1),
                s::status.eq(SessionStatus::Active.as_str()),
                s::last_activity.eq(now),
                s::idle_since.eq(None::<i64>),
            ),
            change
        )
    }

    async fn revoke_token(
        &self,
        id: &SessionId,
        change: Change,
    ) -> Result<Option<Recorded>, DomainError> {
        update_one!(
            self,
            id,
            s::status.ne(DISCONNECTED),
            (
                s::token_hash.eq(None::<Vec<u8>>),
                s::token_expires_at.eq(None::<i64>),
            ),
            change
        )
    }

    async fn mark_idle(
        &self,
        idle_before: Timestamp,
        change: Change,
    ) -> Result<Vec<Recorded>, DomainError> {
        update_all!(
            self,
            s::status
                .eq(SessionStatus::Active.as_str())
                .and(s::last_activity.le(idle_before.as_micros())),
            (
                s::status.eq(SessionStatus::Idle.as_str()),
                s::idle_since.eq(change.at.as_micros()),
            ),
            change
        )
    }

    async fn reap(
        &self,
        reap_before: Timestamp,
        reason: &DisconnectReason,
        change: Change,
    ) -> Result<Vec<Recorded>, DomainError> {
        update_all!(
            self,
            s::status
                .ne(DISCONNECTED)
                .and(s::last_activity.le(reap_before.as_micros())),
            (
                s::status.eq(DISCONNECTED),
                s::disconnected_at.eq(change.at.as_micros()),
                s::disconnect_reason.eq(reason.as_str()),
                s::idle_since.eq(None::<i64>),
                s::token_hash.eq(None::<Vec<u8>>),
                s::token_expires_at.eq(None::<i64>),
            ),
            change
        )
    }
}

/// A changed row with the `seq` of its outbox row, from the single-statement PostgreSQL reconnect.
#[derive(QueryableByName)]
struct RowWithSeq {
    // Not named `row`: the derive's own variable has that name.
    #[diesel(embed)]
    session: SessionRow,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    seq: i64,
}

/// The reconnect on PostgreSQL as ONE statement: the compare-and-swap and the outbox row in a
/// data-modifying CTE, so the hot path costs one round trip instead of four (BEGIN, UPDATE, INSERT,
/// COMMIT). The event columns are taken from the updated row exactly as `SessionEvent::of` takes them
/// (status, client type, reconnect count, reason); the contract suite checks both paths agree.
const CONSUME_PG: &str = "\
WITH s AS (
    UPDATE sessions SET
        prev_token_hash = token_hash, token_hash = $1, token_expires_at = $2, token_rotated_at = $3,
        reconnect_count = reconnect_count + 1, status = 'active', last_activity = $3, idle_since = NULL
    WHERE session_id = $4 AND status <> 'disconnected' AND token_hash = $5 AND token_expires_at > $3
    RETURNING *
), e AS (
    INSERT INTO session_events (session_id, kind, update_type, at, status, client_type, reconnect_count, reason)
    SELECT session_id, $6, $7, $3, status, client_type, reconnect_count, disconnect_reason FROM s
    RETURNING seq
)
SELECT s.*, e.seq FROM s, e";

impl Database {
    async fn consume_token_pg(
        &self,
        id: &SessionId,
        presented: &TokenHash,
        next: &TokenHash,
        next_expires_at: Timestamp,
        change: Change,
    ) -> Result<Option<Recorded>, DomainError> {
        use diesel::sql_types::{BigInt, Binary, Nullable, Text};
        let crate::db::Pools::Postgres(pool) = &self.pools else {
            return Err(Error::Corrupt("consume_token_pg on another backend".into()).into());
        };
        let work = async {
            let mut conn = pool.get().await.map_err(|e| Error::Pool(Box::new(e)))?;
            let rows: Vec<RowWithSeq> = diesel::sql_query(CONSUME_PG)
                .bind::<Binary, _>(next.as_bytes().as_slice())
                .bind::<BigInt, _>(next_expires_at.as_micros())
                .bind::<BigInt, _>(change.at.as_micros())
                .bind::<Text, _>(id.as_str())
                .bind::<Binary, _>(presented.as_bytes().as_slice())
                .bind::<Text, _>(change.event.as_str())
                .bind::<Nullable<Text>, _>(change.event.update_type().map(|u| u.as_str()))
                .load(&mut *conn)
                .await?;
            Ok::<_, Error>(rows)
        };
        let rows = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| Error::Timeout(self.timeout))??;
        let Some(RowWithSeq { session, seq }) = rows.into_iter().next() else {
            return Ok(None);
        };
        let session = session.into_session()?;
        let event = SessionEvent::of(change.event, &session, change.at);
        self.events_written();
        Ok(Some(Recorded {
            session,
            event: StoredEvent {
                seq: u64::try_from(seq).map_err(|_| Error::Corrupt("negative seq".into()))?,
                event,
            },
        }))
    }
}
