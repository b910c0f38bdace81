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

use crate::db::Database;
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

#[async_trait]
impl SessionStore for Database {
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
