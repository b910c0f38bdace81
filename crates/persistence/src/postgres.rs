//! What only PostgreSQL has: the reconnect as one statement, the LISTEN connection that hears every
//! instance's writes, and ending other connections by name.

use std::sync::Weak;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Binary, Nullable, Text};
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
const CONSUME: &str = "\
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

/// A changed row with the `seq` of its outbox row.
#[derive(QueryableByName)]
struct RowWithSeq {
    // Not named `row`: the derive's own variable has that name.
    #[diesel(embed)]
    session: SessionRow,
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

/// Runs [`CONSUME`]: the changed row and its event's `seq`, or `None` when the token could not be
/// consumed.
pub(crate) async fn consume_token(
    c: &mut AsyncPgConnection,
    id: &SessionId,
    presented: &TokenHash,
    next: &TokenHash,
    next_expires_at: Timestamp,
    change: Change,
) -> Result<Option<(SessionRow, i64)>, Error> {
    let rows: Vec<RowWithSeq> = diesel::sql_query(CONSUME)
        .bind::<Binary, _>(next.as_bytes().as_slice())
        .bind::<BigInt, _>(next_expires_at.as_micros())
        .bind::<BigInt, _>(change.at.as_micros())
        .bind::<Text, _>(id.as_str())
        .bind::<Binary, _>(presented.as_bytes().as_slice())
        .bind::<Text, _>(change.event.as_str())
        .bind::<Nullable<Text>, _>(change.event.update_type().map(|u| u.as_str()))
        .load(c)
        .await?;
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

/// Sends `NOTIFY tether_events` after this instance's commits, from a connection of its own, until
/// the database handle is gone. One NOTIFY per pending permit: commits made while one is in flight
/// share the next, so under load an instance sends about one per round trip instead of one per
/// commit, and no writing transaction ever takes PostgreSQL's notify lock. A lost notification
/// costs latency only: readers re-read the outbox every second.
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
