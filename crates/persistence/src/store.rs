//! The `SessionStore` port on SQL. Each state change is one transaction: a single
//! `UPDATE ... WHERE <rule> RETURNING` plus the event's outbox row. The `WHERE` clauses are the SQL
//! twins of the domain's rules (`Session::is_disconnected`, `can_consume`, `should_idle`,
//! `should_reap`) and the changesets of its `apply_*` transitions; the domain's contract suite
//! (`tether_domain::contract`, run in `tests/it/contract.rs`) holds both backends to the rules.

use std::sync::Arc;

use async_trait::async_trait;
use diesel::dsl::{Filter, Find, NotEq, count_star};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::QueryFragment;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::{Sqlite, SqliteConnection};
use diesel_async::RunQueryDsl;
use tether_domain::{
    Change, DisconnectReason, Error as DomainError, ListQuery, Recorded, Session, SessionEvent,
    SessionId, SessionStatus, SessionStore, StatusCounts, StoredEvent, Timestamp, TokenHash,
};

use crate::batch::{Batcher, Consume, Consumed};
use crate::conn::{Conn, Work};
use crate::db::Database;
use crate::error::Error;
use crate::models::{NewEventRow, SessionRow};
use crate::schema::session_events;
use crate::schema::sessions::{self, dsl as s};

const ACTIVE: &str = SessionStatus::Active.as_str();
const IDLE: &str = SessionStatus::Idle.as_str();
const DISCONNECTED: &str = SessionStatus::Disconnected.as_str();

/// The row of session `id`, if it has not ended (`!Session::is_disconnected`).
fn live(id: &str) -> Filter<Find<sessions::table, &str>, NotEq<s::status, &'static str>> {
    sessions::table.find(id).filter(s::status.ne(DISCONNECTED))
}

/// `Session::apply_touch`: activity at `at`, back to active.
#[derive(AsChangeset)]
#[diesel(table_name = sessions, treat_none_as_null = true)]
struct Touched {
    status: &'static str,
    last_activity: i64,
    idle_since: Option<i64>,
}

impl Touched {
    fn at(at: Timestamp) -> Self {
        Self {
            status: ACTIVE,
            last_activity: at.as_micros(),
            idle_since: None,
        }
    }
}

/// `Session::apply_disconnect`: the end of a session, whether asked for (`disconnect`) or swept
/// (`reap`).
#[derive(AsChangeset)]
#[diesel(table_name = sessions, treat_none_as_null = true)]
struct Ended {
    status: &'static str,
    disconnected_at: i64,
    disconnect_reason: String,
    idle_since: Option<i64>,
    token_hash: Option<Vec<u8>>,
    token_expires_at: Option<i64>,
}

impl Ended {
    fn at(at: Timestamp, reason: &DisconnectReason) -> Self {
        Self {
            status: DISCONNECTED,
            disconnected_at: at.as_micros(),
            disconnect_reason: reason.as_str().to_owned(),
            idle_since: None,
            token_hash: None,
            token_expires_at: None,
        }
    }
}

/// `Session::apply_new_token` (with `Some`) and `Session::apply_revoke` (with `None`).
#[derive(AsChangeset)]
#[diesel(table_name = sessions, treat_none_as_null = true)]
struct LiveToken {
    token_hash: Option<Vec<u8>>,
    token_expires_at: Option<i64>,
}

/// `Session::apply_idle`.
#[derive(AsChangeset)]
#[diesel(table_name = sessions)]
struct Idled {
    status: &'static str,
    idle_since: i64,
}

/// A changed session with its event, made by the domain from the session after the change, stored
/// in the outbox at `seq`.
pub(crate) fn recorded(session: Session, seq: i64, change: Change) -> Result<Recorded, Error> {
    let event = SessionEvent::of(change.event, &session, change.at);
    stored(session, event, seq)
}

/// `session` with `event`, which the outbox stored as `seq`.
fn stored(session: Session, event: SessionEvent, seq: i64) -> Result<Recorded, Error> {
    let seq = u64::try_from(seq).map_err(|_| Error::Corrupt("negative seq".into()))?;
    Ok(Recorded {
        session,
        event: StoredEvent { seq, event },
    })
}

/// Inside a transaction: the outbox row of each changed row.
async fn record(
    mut conn: Conn<'_>,
    rows: Vec<SessionRow>,
    change: Change,
) -> Result<Vec<Recorded>, Error> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let session = row.into_session()?;
        let event = SessionEvent::of(change.event, &session, change.at);
        let seq = on_conn!(conn.reborrow(), |c| {
            diesel::insert_into(session_events::table)
                .values(NewEventRow::from_event(&event))
                .returning(session_events::seq)
                .get_result(c)
                .await
        })?;
        out.push(stored(session, event, seq)?);
    }
    Ok(out)
}

/// In one transaction: `update` (returning the rows it changed) and their outbox rows.
async fn change_in(
    conn: Conn<'_>,
    change: Change,
    update: impl Work<Vec<SessionRow>>,
) -> Result<Vec<Recorded>, Error> {
    conn.transaction(move |mut c| {
        Box::pin(async move {
            let rows = update(c.reborrow()).await?;
            record(c, rows, change).await
        })
    })
    .await
}

/// The reconnects of `group`, in order, as one transaction of SQLite's writer: for each, what its
/// compare-and-swap recorded, or `None` when its token could not be consumed. Runs on the blocking
/// connection itself, so that the whole group is one hand-off to the blocking pool rather than two per
/// statement (diesel-async's SQLite wrapper sends each statement there and back on its own).
/// PostgreSQL runs the same change as one statement for the whole group (`batch.rs`).
pub(crate) fn consume_on_sqlite(
    c: &mut SqliteConnection,
    group: &[Consume],
) -> Result<Vec<Consumed>, Error> {
    // IMMEDIATE: the write lock is taken at BEGIN, so the transaction never has to upgrade a read
    // lock (which SQLite refuses at once when another writer committed in between).
    c.immediate_transaction(|c| group.iter().map(|g| blocking::consume(c, g)).collect())
}

/// The statements that run on SQLite's synchronous connection (diesel's blocking API).
mod blocking {
    use diesel::RunQueryDsl;

    use super::*;

    /// The reconnect's compare-and-swap in portable SQL, and its outbox row. The `WHERE` is
    /// `Session::can_consume`: only the row whose live hash is the presented one changes, so of N
    /// attempts with one token exactly one gets a row back. The `SET` is `Session::apply_reconnect`;
    /// `prev_token_hash` takes the pre-update `token_hash` (SET expressions read the old row).
    pub(super) fn consume(c: &mut SqliteConnection, g: &Consume) -> Result<Consumed, Error> {
        let now = g.change.at.as_micros();
        let Some(row) = diesel::update(live(g.id.as_str()))
            .filter(s::token_hash.eq(g.presented.as_bytes().as_slice()))
            .filter(s::token_expires_at.gt(now))
            .set((
                s::prev_token_hash.eq(s::token_hash),
                s::token_hash.eq(g.next.as_bytes().as_slice()),
                s::token_expires_at.eq(g.next_expires_at.as_micros()),
                s::token_rotated_at.eq(now),
                s::reconnect_count.eq(s::reconnect_count + 1),
                Touched::at(g.change.at),
            ))
            .returning(SessionRow::as_returning())
            .get_result(c)
            .optional()?
        else {
            return Ok(None);
        };
        let session = row.into_session()?;
        let event = SessionEvent::of(g.change.event, &session, g.change.at);
        let seq = diesel::insert_into(session_events::table)
            .values(NewEventRow::from_event(&event))
            .returning(session_events::seq)
            .get_result(c)?;
        stored(session, event, seq).map(Some)
    }
}

impl Database {
    /// Runs `work`, a state change that returns what it recorded, then wakes this process's feed
    /// readers if it recorded anything (inside the call, so a caller that went away cannot lose the
    /// wake-up).
    async fn recording(
        &self,
        operation: &'static str,
        work: impl Work<Vec<Recorded>>,
    ) -> Result<Vec<Recorded>, Error> {
        let feed = self.feed.clone();
        self.with_write_conn(operation, move |conn| {
            Box::pin(async move {
                let out = work(conn).await?;
                if !out.is_empty() {
                    feed.committed();
                }
                Ok(out)
            })
        })
        .await
    }

    /// The common state change: `update` and its outbox rows in one transaction.
    async fn change(
        &self,
        operation: &'static str,
        change: Change,
        update: impl Work<Vec<SessionRow>>,
    ) -> Result<Vec<Recorded>, Error> {
        self.recording(operation, move |conn| {
            Box::pin(change_in(conn, change, update))
        })
        .await
    }

    /// The change of one live session (`!Session::is_disconnected`) that `set` makes.
    async fn change_live<V>(
        &self,
        operation: &'static str,
        id: &SessionId,
        change: Change,
        set: V,
    ) -> Result<Option<Recorded>, DomainError>
    where
        V: AsChangeset<Target = sessions::table> + Send + 'static,
        V::Changeset: QueryFragment<Sqlite> + QueryFragment<Pg> + Send,
    {
        let id = id.clone();
        let changed = self.change(operation, change, move |conn| {
            Box::pin(async move {
                Ok(on_conn!(conn, |c| {
                    diesel::update(live(id.as_str()))
                        .set(set)
                        .returning(SessionRow::as_returning())
                        .get_results(c)
                        .await
                })?)
            })
        });
        Ok(changed.await?.pop())
    }
}

#[async_trait]
impl SessionStore for Database {
    async fn insert(&self, session: &Session, change: Change) -> Result<Recorded, DomainError> {
        let row = SessionRow::from_session(session);
        let inserted = self
            .change("insert", change, move |conn| {
                Box::pin(async move {
                    let row = on_conn!(conn, |c| {
                        diesel::insert_into(sessions::table)
                            .values(&row)
                            .returning(SessionRow::as_returning())
                            .get_result(c)
                            .await
                    })?;
                    Ok(vec![row])
                })
            })
            .await;
        match inserted.map(|mut v| v.pop()) {
            Ok(Some(recorded)) => Ok(recorded),
            Ok(None) => Err(Error::Corrupt("insert returned no row".into()).into()),
            Err(Error::Query(DieselError::DatabaseError(
                DatabaseErrorKind::UniqueViolation,
                _,
            ))) => Err(DomainError::AlreadyExists),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, DomainError> {
        let id = id.clone();
        let row = self
            .with_conn("get", move |conn| {
                Box::pin(async move {
                    Ok(on_conn!(conn, |c| {
                        sessions::table
                            .find(id.as_str())
                            .select(SessionRow::as_select())
                            .first(c)
                            .await
                            .optional()
                    })?)
                })
            })
            .await?;
        Ok(row.map(SessionRow::into_session).transpose()?)
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Session>, DomainError> {
        let query = query.clone();
        let rows = self
            .with_conn("list", move |conn| {
                Box::pin(async move {
                    Ok(on_conn!(conn, |c| {
                        let mut q = sessions::table.select(SessionRow::as_select()).into_boxed();
                        if let Some(status) = query.status {
                            q = q.filter(s::status.eq(status.as_str()));
                        }
                        if let Some(after) = &query.after {
                            let at = after.last_activity.as_micros();
                            q = q.filter(
                                s::last_activity.lt(at).or(s::last_activity
                                    .eq(at)
                                    .and(s::session_id.lt(after.session_id.as_str()))),
                            );
                        }
                        q.order((s::last_activity.desc(), s::session_id.desc()))
                            .limit(i64::from(query.limit))
                            .load(c)
                            .await
                    })?)
                })
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(SessionRow::into_session)
            .collect::<Result<_, _>>()?)
    }

    async fn counts(&self) -> Result<StatusCounts, DomainError> {
        let rows: Vec<(String, i64)> = self
            .with_conn("counts", |conn| {
                Box::pin(async move {
                    Ok(on_conn!(conn, |c| {
                        sessions::table
                            .group_by(s::status)
                            .select((s::status, count_star()))
                            .load(c)
                            .await
                    })?)
                })
            })
            .await?;
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
        self.change_live("touch", id, change, Touched::at(change.at))
            .await
    }

    async fn disconnect(
        &self,
        id: &SessionId,
        reason: &DisconnectReason,
        change: Change,
    ) -> Result<Option<Recorded>, DomainError> {
        self.change_live("disconnect", id, change, Ended::at(change.at, reason))
            .await
    }

    async fn set_token(
        &self,
        id: &SessionId,
        hash: &TokenHash,
        expires_at: Timestamp,
        change: Change,
    ) -> Result<Option<Recorded>, DomainError> {
        let token = LiveToken {
            token_hash: Some(hash.as_bytes().to_vec()),
            token_expires_at: Some(expires_at.as_micros()),
        };
        self.change_live("set_token", id, change, token).await
    }

    async fn consume_token(
        &self,
        id: &SessionId,
        presented: &TokenHash,
        next: &TokenHash,
        next_expires_at: Timestamp,
        change: Change,
    ) -> Result<Option<Recorded>, DomainError> {
        // Grouped with the reconnects that arrive meanwhile: one statement (one transaction on
        // SQLite) and one commit for all of them (batch.rs).
        let consume = Consume {
            id: id.clone(),
            presented: *presented,
            next: *next,
            next_expires_at,
            change,
        };
        let group = self
            .group
            .get_or_init(|| Batcher::start(self.conns.clone(), Arc::clone(&self.feed)));
        Ok(self
            .conns
            .observed("consume_token", group.consume(consume))
            .await?)
    }

    async fn revoke_token(
        &self,
        id: &SessionId,
        change: Change,
    ) -> Result<Option<Recorded>, DomainError> {
        let revoked = LiveToken {
            token_hash: None,
            token_expires_at: None,
        };
        self.change_live("revoke_token", id, change, revoked).await
    }

    async fn mark_idle(
        &self,
        idle_before: Timestamp,
        change: Change,
    ) -> Result<Vec<Recorded>, DomainError> {
        let idled = Idled {
            status: IDLE,
            idle_since: change.at.as_micros(),
        };
        let out = self
            .change("mark_idle", change, move |conn| {
                Box::pin(async move {
                    // `Session::should_idle`.
                    Ok(on_conn!(conn, |c| {
                        diesel::update(sessions::table)
                            .filter(s::status.eq(ACTIVE))
                            .filter(s::last_activity.le(idle_before.as_micros()))
                            .set(idled)
                            .returning(SessionRow::as_returning())
                            .get_results(c)
                            .await
                    })?)
                })
            })
            .await?;
        Ok(out)
    }

    async fn reap(
        &self,
        reap_before: Timestamp,
        reason: &DisconnectReason,
        change: Change,
    ) -> Result<Vec<Recorded>, DomainError> {
        let ended = Ended::at(change.at, reason);
        let out = self
            .change("reap", change, move |conn| {
                Box::pin(async move {
                    // `Session::should_reap`.
                    Ok(on_conn!(conn, |c| {
                        diesel::update(sessions::table)
                            .filter(s::status.ne(DISCONNECTED))
                            .filter(s::last_activity.le(reap_before.as_micros()))
                            .set(ended)
                            .returning(SessionRow::as_returning())
                            .get_results(c)
                            .await
                    })?)
                })
            })
            .await?;
        Ok(out)
    }
}
