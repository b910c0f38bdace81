//! What only PostgreSQL has: the reconnect as one statement, the LISTEN connection that hears every
//! instance's writes, and ending other connections by name.

use std::sync::Weak;
use std::time::Duration;

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Binary, Nullable, Text, Untyped};
use diesel::{QueryResult, QueryableByName};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::StreamExt as _;
use tether_domain::{Change, SessionId, Timestamp, TokenHash};

use crate::conn::Conn;
use crate::db::{Backend, Database};
use crate::error::Error;
use crate::feed::FeedState;
use crate::models::SessionRow;

/// The channel every writer notifies (by trigger) and every instance listens on.
pub(crate) const CHANNEL: &str = "tether_events";

/// The reconnect as ONE statement: the compare-and-swap and the outbox row in a data-modifying CTE,
/// so the hot path costs one round trip instead of four (BEGIN, UPDATE, INSERT, COMMIT). The `WHERE`
/// is `Session::can_consume`, the `SET` `Session::apply_reconnect`; the event columns are taken from
/// the updated row as `SessionEvent::of` takes them (status, client type, reconnect count, reason).
/// The contract suite reads the event back from the outbox and holds it to the domain's.
///
/// A named prepared statement, kept in the connection's statement cache: `diesel::sql_query` marks
/// itself unsafe to cache, which cost every reconnect a second round trip (parse and describe) and
/// PostgreSQL a fresh parse and plan of the CTE (see BENCHMARKS.md, "Where a reconnect's CPU goes").
struct Consume<'a> {
    next: &'a [u8],
    next_expires_at: i64,
    at: i64,
    id: &'a str,
    presented: &'a [u8],
    kind: &'a str,
    update_type: Option<&'a str>,
}

/// [`Consume`]'s identity in the statement cache.
struct ConsumeId;

impl QueryId for Consume<'_> {
    type QueryId = ConsumeId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for Consume<'_> {
    type SqlType = Untyped;
}

impl QueryFragment<Pg> for Consume<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH s AS (UPDATE sessions SET prev_token_hash = token_hash, token_hash = ");
        out.push_bind_param::<Binary, _>(&self.next)?;
        out.push_sql(", token_expires_at = ");
        out.push_bind_param::<BigInt, _>(&self.next_expires_at)?;
        out.push_sql(", token_rotated_at = ");
        out.push_bind_param::<BigInt, _>(&self.at)?;
        out.push_sql(
            ", reconnect_count = reconnect_count + 1, status = 'active', last_activity = ",
        );
        out.push_bind_param::<BigInt, _>(&self.at)?;
        out.push_sql(", idle_since = NULL WHERE session_id = ");
        out.push_bind_param::<Text, _>(&self.id)?;
        out.push_sql(" AND status <> 'disconnected' AND token_hash = ");
        out.push_bind_param::<Binary, _>(&self.presented)?;
        out.push_sql(" AND token_expires_at > ");
        out.push_bind_param::<BigInt, _>(&self.at)?;
        out.push_sql(
            " RETURNING *), e AS (INSERT INTO session_events \
             (session_id, kind, update_type, at, status, client_type, reconnect_count, reason) \
             SELECT session_id, ",
        );
        out.push_bind_param::<Text, _>(&self.kind)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.update_type)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.at)?;
        out.push_sql(
            ", status, client_type, reconnect_count, disconnect_reason FROM s RETURNING seq) \
             SELECT s.*, e.seq FROM s, e",
        );
        Ok(())
    }
}

/// A changed row with the `seq` of its outbox row.
#[derive(QueryableByName)]
struct RowWithSeq {
    // Not named `row`: the derive's own variable has that name.
    #[diesel(embed)]
    session: SessionRow,
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

/// Runs [`Consume`]: the changed row and its event's `seq`, or `None` when the token could not be
/// consumed.
pub(crate) async fn consume_token(
    c: &mut AsyncPgConnection,
    id: &SessionId,
    presented: &TokenHash,
    next: &TokenHash,
    next_expires_at: Timestamp,
    change: Change,
) -> Result<Option<(SessionRow, i64)>, Error> {
    let statement = Consume {
        next: next.as_bytes().as_slice(),
        next_expires_at: next_expires_at.as_micros(),
        at: change.at.as_micros(),
        id: id.as_str(),
        presented: presented.as_bytes().as_slice(),
        kind: change.event.as_str(),
        update_type: change.event.update_type().map(|u| u.as_str()),
    };
    let rows: Vec<RowWithSeq> = statement.load(c).await?;
    Ok(rows.into_iter().next().map(|r| (r.session, r.seq)))
}

/// `url` with `application_name=tether-listener`, so operators (and tests) can tell the listening
/// connection apart in `pg_stat_activity`.
pub(crate) fn listener_url(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name=tether-listener")
}

/// `url` with `application_name=tether-notifier` (see [`notifier`]).
pub(crate) fn notifier_url(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name=tether-notifier")
}

/// Least time between two NOTIFYs of one instance. Each NOTIFY is a transaction of its own, with
/// its commit record, WAL flush and the global notify lock, and wakes every listening instance:
/// sent once per round trip under load it cost PostgreSQL about as much as the reconnects it
/// announced. Spaced, an instance sends at most 100 a second, and a commit waits at most this long
/// (plus a round trip) to be announced to the other instances.
pub(crate) const NOTIFY_SPACING: Duration = Duration::from_millis(10);

/// Sends `NOTIFY tether_events` after this instance's commits, from a connection of its own, until
/// the database handle is gone. One NOTIFY per pending permit, at most one per [`NOTIFY_SPACING`]:
/// commits made while one is in flight or spaced share the next, and no writing transaction ever
/// takes PostgreSQL's notify lock. A lost notification costs latency only: readers re-read the
/// outbox every second.
pub(crate) async fn notifier(state: Weak<FeedState>, url: String) {
    let mut pause = Duration::from_millis(100);
    loop {
        match AsyncPgConnection::establish(&url).await {
            Ok(mut conn) => {
                pause = Duration::from_millis(100);
                loop {
                    let Some(s) = state.upgrade() else { return };
                    let pending = async move { s.pending_notify().await };
                    // Wakes once a second anyway, to notice a dropped database handle.
                    if tokio::time::timeout(Duration::from_secs(1), pending)
                        .await
                        .is_err()
                    {
                        continue;
                    }
                    if let Err(e) = conn.batch_execute(&format!("NOTIFY {CHANNEL}")).await {
                        tracing::warn!(error = %e, "NOTIFY failed; reconnecting the notifier");
                        break;
                    }
                    // Commits made meanwhile share the next NOTIFY.
                    tokio::time::sleep(NOTIFY_SPACING).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "event notifier cannot connect; retrying"),
        }
        if state.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Listens for NOTIFY until the database handle is gone. When the connection drops it reconnects with
/// a growing pause, and wakes the feed after each (re)connect so readers catch up by `seq` on whatever
/// was written meanwhile: nothing is lost, since the outbox, not the notification, carries the events.
pub(crate) async fn listen(state: Weak<FeedState>, url: String) {
    let mut pause = Duration::from_millis(100);
    loop {
        match AsyncPgConnection::establish(&url).await {
            Ok(mut conn) => match conn.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                Ok(()) => {
                    pause = Duration::from_millis(100);
                    let Some(s) = state.upgrade() else { return };
                    s.wake();
                    drop(s);
                    let mut stream = std::pin::pin!(conn.notifications_stream());
                    while let Some(item) = stream.next().await {
                        let Some(s) = state.upgrade() else { return };
                        if item.is_err() {
                            break;
                        }
                        s.wake();
                    }
                    tracing::warn!("event listener connection lost; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "LISTEN failed; retrying"),
            },
            Err(e) => tracing::warn!(error = %e, "event listener cannot connect; retrying"),
        }
        if state.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

impl Database {
    /// Ends every connection to this database whose `application_name` is `name` (on PostgreSQL; a
    /// no-op on SQLite). For operators and tests: `tether-listener` is the event listener, which
    /// reconnects and catches up by itself. Returns how many were ended.
    ///
    /// # Errors
    /// As for any statement.
    pub async fn terminate_backends(&self, name: &str) -> Result<u64, Error> {
        #[derive(QueryableByName)]
        struct Ended {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        if self.backend() != Backend::Postgres {
            return Ok(0);
        }
        let name = name.to_owned();
        self.with_conn("terminate_backends", move |conn| {
            Box::pin(async move {
                let Conn::Postgres(c) = conn else {
                    return Ok(0);
                };
                let ended: Vec<Ended> = diesel::sql_query(
                    "SELECT count(pg_terminate_backend(pid))::BIGINT AS n FROM pg_stat_activity \
                     WHERE datname = current_database() AND application_name = $1",
                )
                .bind::<Text, _>(&name)
                .load(c)
                .await?;
                Ok(ended
                    .into_iter()
                    .next()
                    .and_then(|e| u64::try_from(e.n).ok())
                    .unwrap_or(0))
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_is_named() {
        assert_eq!(
            listener_url("postgres://u@h/db"),
            "postgres://u@h/db?application_name=tether-listener"
        );
        assert_eq!(
            listener_url("postgres://u@h/db?sslmode=disable"),
            "postgres://u@h/db?sslmode=disable&application_name=tether-listener"
        );
    }
}
