//! The `SessionStore` port on SQL. Each state change is a single `UPDATE ... WHERE <rule> RETURNING`,
//! the SQL twin of the `Session::can_*`/`should_*` rules and `apply_*` transitions in the domain; the
//! contract suite in `tests/` runs the same cases here and on the in-memory store.

use async_trait::async_trait;
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::RunQueryDsl;
use tether_domain::{
    DisconnectReason, Error as DomainError, ListQuery, Session, SessionId, SessionStatus,
    SessionStore, StatusCounts, Timestamp, TokenHash,
};

use crate::db::Database;
use crate::error::Error;
use crate::models::SessionRow;
use crate::schema::sessions::{self, dsl as s};

const DISCONNECTED: &str = "disconnected";

fn one(row: Option<SessionRow>) -> Result<Option<Session>, DomainError> {
    Ok(row.map(SessionRow::into_session).transpose()?)
}

fn many(rows: Vec<SessionRow>) -> Result<Vec<Session>, DomainError> {
    Ok(rows
        .into_iter()
        .map(SessionRow::into_session)
        .collect::<Result<_, _>>()?)
}

#[async_trait]
impl SessionStore for Database {
    async fn insert(&self, session: &Session) -> Result<(), DomainError> {
        let row = SessionRow::from_session(session);
        let result = on_conn!(self, conn => {
            diesel::insert_into(sessions::table).values(&row).execute(conn).await
        })?;
        match result {
            Ok(_) => Ok(()),
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                Err(DomainError::AlreadyExists)
            }
            Err(e) => Err(Error::Query(e).into()),
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
        many(rows)
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

    async fn touch(&self, id: &SessionId, at: Timestamp) -> Result<Option<Session>, DomainError> {
        let row = on_conn!(self, conn => {
            diesel::update(sessions::table.find(id.as_str()).filter(s::status.ne(DISCONNECTED)))
                .set((
                    s::status.eq(SessionStatus::Active.as_str()),
                    s::last_activity.eq(at.as_micros()),
                    s::idle_since.eq(None::<i64>),
                ))
                .returning(SessionRow::as_returning())
                .get_result(conn)
                .await
                .optional()?
        })?;
        one(row)
    }

    async fn disconnect(
        &self,
        id: &SessionId,
        at: Timestamp,
        reason: &DisconnectReason,
    ) -> Result<Option<Session>, DomainError> {
        let row = on_conn!(self, conn => {
            diesel::update(sessions::table.find(id.as_str()).filter(s::status.ne(DISCONNECTED)))
                .set((
                    s::status.eq(DISCONNECTED),
                    s::disconnected_at.eq(at.as_micros()),
                    s::disconnect_reason.eq(reason.as_str()),
                    s::idle_since.eq(None::<i64>),
                    s::token_hash.eq(None::<Vec<u8>>),
                    s::token_expires_at.eq(None::<i64>),
                ))
                .returning(SessionRow::as_returning())
                .get_result(conn)
                .await
                .optional()?
        })?;
        one(row)
    }

    async fn set_token(
        &self,
        id: &SessionId,
        hash: &TokenHash,
        expires_at: Timestamp,
    ) -> Result<Option<Session>, DomainError> {
        let row = on_conn!(self, conn => {
            diesel::update(sessions::table.find(id.as_str()).filter(s::status.ne(DISCONNECTED)))
                .set((
                    s::token_hash.eq(hash.as_bytes().as_slice()),
                    s::token_expires_at.eq(expires_at.as_micros()),
                ))
                .returning(SessionRow::as_returning())
                .get_result(conn)
                .await
                .optional()?
        })?;
        one(row)
    }

    async fn consume_token(
        &self,
        id: &SessionId,
        presented: &TokenHash,
        next: &TokenHash,
        next_expires_at: Timestamp,
        at: Timestamp,
    ) -> Result<Option<Session>, DomainError> {
        let now = at.as_micros();
        // The compare-and-swap: only the row whose live hash is the presented one changes, so of N
        // concurrent attempts with one token exactly one gets a row back. `prev_token_hash` takes the
        // pre-update `token_hash` (SET expressions read the old row on both backends).
        let row = on_conn!(self, conn => {
            diesel::update(
                sessions::table
                    .find(id.as_str())
                    .filter(s::status.ne(DISCONNECTED))
                    .filter(s::token_hash.eq(presented.as_bytes().as_slice()))
                    .filter(s::token_expires_at.gt(now)),
            )
            .set((
                s::prev_token_hash.eq(s::token_hash),
                s::token_hash.eq(next.as_bytes().as_slice()),
                s::token_expires_at.eq(next_expires_at.as_micros()),
                s::token_rotated_at.eq(now),
                s::reconnect_count.eq(s::reconnect_count + 1),
                s::status.eq(SessionStatus::Active.as_str()),
                s::last_activity.eq(now),
                s::idle_since.eq(None::<i64>),
            ))
            .returning(SessionRow::as_returning())
            .get_result(conn)
            .await
            .optional()?
        })?;
        one(row)
    }

    async fn revoke_token(&self, id: &SessionId) -> Result<Option<Session>, DomainError> {
        let row = on_conn!(self, conn => {
            diesel::update(sessions::table.find(id.as_str()).filter(s::status.ne(DISCONNECTED)))
                .set((
                    s::token_hash.eq(None::<Vec<u8>>),
                    s::token_expires_at.eq(None::<i64>),
                ))
                .returning(SessionRow::as_returning())
                .get_result(conn)
                .await
                .optional()?
        })?;
        one(row)
    }

    async fn mark_idle(
        &self,
        idle_before: Timestamp,
        at: Timestamp,
    ) -> Result<Vec<Session>, DomainError> {
        let rows = on_conn!(self, conn => {
            diesel::update(
                sessions::table
                    .filter(s::status.eq(SessionStatus::Active.as_str()))
                    .filter(s::last_activity.le(idle_before.as_micros())),
            )
            .set((
                s::status.eq(SessionStatus::Idle.as_str()),
                s::idle_since.eq(at.as_micros()),
            ))
            .returning(SessionRow::as_returning())
            .get_results(conn)
            .await?
        })?;
        many(rows)
    }

    async fn reap(
        &self,
        reap_before: Timestamp,
        at: Timestamp,
        reason: &DisconnectReason,
    ) -> Result<Vec<Session>, DomainError> {
        let rows = on_conn!(self, conn => {
            diesel::update(
                sessions::table
                    .filter(s::status.ne(DISCONNECTED))
                    .filter(s::last_activity.le(reap_before.as_micros())),
            )
            .set((
                s::status.eq(DISCONNECTED),
                s::disconnected_at.eq(at.as_micros()),
                s::disconnect_reason.eq(reason.as_str()),
                s::idle_since.eq(None::<i64>),
                s::token_hash.eq(None::<Vec<u8>>),
                s::token_expires_at.eq(None::<i64>),
            ))
            .returning(SessionRow::as_returning())
            .get_results(conn)
            .await?
        })?;
        many(rows)
    }
}
