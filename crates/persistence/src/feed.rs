//! The outbox read back: the domain's `EventFeed` port, wake-ups (in-process after each commit, and
//! on PostgreSQL a LISTEN connection that hears every instance's writes), pruning and the epoch.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use futures_util::StreamExt as _;
use tether_domain::{Error as DomainError, EventFeed, StoredEvent, Timestamp};
use tokio::sync::Notify;

use crate::db::{Database, Direct};
use crate::error::Error;
use crate::models::EventRow;
use crate::schema::{session_events, settings};

const PRUNED_THROUGH: &str = "events_pruned_through";
const EPOCH: &str = "events_epoch";

/// The channel every writer notifies (by trigger) and every instance listens on.
pub(crate) const CHANNEL: &str = "tether_events";

/// Shared by every clone of a `Database`.
#[derive(Debug)]
pub(crate) struct FeedState {
    notify: Notify,
    /// PostgreSQL URL for the listener; `None` on SQLite, where every writer is in this process.
    listen_url: Option<String>,
    listener: std::sync::Once,
    epoch: tokio::sync::OnceCell<String>,
}

impl FeedState {
    pub(crate) fn new(listen_url: Option<String>) -> Self {
        Self {
            notify: Notify::new(),
            listen_url,
            listener: std::sync::Once::new(),
            epoch: tokio::sync::OnceCell::new(),
        }
    }

    fn wake(&self) {
        // Wake every current waiter, and leave a permit for a waiter that is between reading and
        // waiting, so that no write goes unnoticed (a spurious wake-up costs one empty read).
        self.notify.notify_waiters();
        self.notify.notify_one();
    }
}

/// `url` with `application_name=tether-listener`, so operators (and tests) can tell the listening
/// connection apart in `pg_stat_activity`.
fn listener_url(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name=tether-listener")
}

/// Listens for NOTIFY until the database handle is gone. When the connection drops it reconnects with
/// a growing pause, and wakes the feed after each (re)connect so readers catch up by `seq` on whatever
/// was written meanwhile: nothing is lost, since the outbox, not the notification, carries the events.
async fn listen(state: Weak<FeedState>, url: String) {
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
    /// Tells this process's feed readers that events were committed.
    pub(crate) fn events_written(&self) {
        self.feed.wake();
    }

    fn ensure_listener(&self) {
        let Some(url) = self.feed.listen_url.clone() else {
            return;
        };
        let weak = Arc::downgrade(&self.feed);
        self.feed.listener.call_once(|| {
            tokio::spawn(listen(weak, listener_url(&url)));
        });
    }

    /// Ends every connection to this database whose `application_name` is `name` (on PostgreSQL; a
    /// no-op on SQLite). For operators and tests: `tether-listener` is the event listener, which
    /// reconnects and catches up by itself. Returns how many were ended.
    ///
    /// # Errors
    /// As for any statement.
    pub async fn terminate_backends(&self, name: &str) -> Result<u64, Error> {
        #[derive(QueryableByName)]
        struct Ended {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let crate::db::Pools::Postgres(pool) = &self.pools else {
            return Ok(0);
        };
        let work = async {
            let mut conn = pool.get().await.map_err(|e| Error::Pool(Box::new(e)))?;
            let rows: Vec<Ended> = diesel::sql_query(
                "SELECT count(pg_terminate_backend(pid))::BIGINT AS n FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name = $1",
            )
            .bind::<diesel::sql_types::Text, _>(name)
            .load(&mut *conn)
            .await?;
            Ok::<_, Error>(rows)
        };
        let ended = tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| Error::Timeout(self.timeout))??;
        Ok(unsigned(<[Ended]>::first(&ended).map(|e| e.n)))
    }

    async fn setting(&self, name: &'static str) -> Result<Option<String>, Error> {
        on_conn!(self, conn => {
            settings::table
                .find(name)
                .select(settings::value)
                .first::<String>(conn)
                .await
                .optional()?
        })
    }

    /// Removes outbox events older than `max_age` (relative to `now`) and all but the newest
    /// `max_count`, and records how far it pruned (a resume from before that is incomplete).
    /// Returns the number of events removed.
    ///
    /// # Errors
    /// As for any statement.
    pub async fn prune_events(
        &self,
        max_age: Duration,
        max_count: u64,
        now: Timestamp,
    ) -> Result<u64, Error> {
        let cutoff = now.minus(max_age).as_micros();
        let keep = i64::try_from(max_count).unwrap_or(i64::MAX);
        on_conn!(self, conn => {
            conn.transaction::<_, Error, _>(async |c| {
                let by_age: Option<i64> = session_events::table
                    .filter(session_events::at.lt(cutoff))
                    .select(diesel::dsl::max(session_events::seq))
                    .first(c)
                    .await?;
                let last: Option<i64> = session_events::table
                    .select(diesel::dsl::max(session_events::seq))
                    .first(c)
                    .await?;
                let by_count = last.map(|l| l - keep).filter(|t| *t > 0);
                let Some(through) = by_age.max(by_count) else {
                    return Ok(0);
                };
                let removed = diesel::delete(session_events::table.filter(session_events::seq.le(through)))
                    .execute(c)
                    .await?;
                let previous: Option<String> = settings::table
                    .find(PRUNED_THROUGH)
                    .select(settings::value)
                    .first(c)
                    .await
                    .optional()?;
                let previous = previous.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                let value = through.max(previous).to_string();
                diesel::insert_into(settings::table)
                    .values((settings::name.eq(PRUNED_THROUGH), settings::value.eq(&value)))
                    .on_conflict(settings::name)
                    .do_update()
                    .set(settings::value.eq(&value))
                    .execute(c)
                    .await?;
                Ok(removed as u64)
            })
            .await?
        })
    }
}

fn unsigned(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

/// The port, as callers see it: each database call detached on SQLite (see `Database::detached`).
#[async_trait]
impl EventFeed for Database {
    async fn events_after(&self, after: u64, limit: u32) -> Result<Vec<StoredEvent>, DomainError> {
        self.detached(|db| async move { db.events_after(after, limit).await })
            .await
    }

    async fn last_seq(&self) -> Result<u64, DomainError> {
        self.detached(|db| async move { db.last_seq().await }).await
    }

    async fn pruned_through(&self) -> Result<u64, DomainError> {
        self.detached(|db| async move { db.pruned_through().await })
            .await
    }

    async fn epoch(&self) -> Result<String, DomainError> {
        self.detached(|db| async move { db.epoch().await }).await
    }

    async fn wait_for_events(&self) {
        self.ensure_listener();
        self.feed.notify.notified().await;
    }
}

/// The statements themselves, run on the caller's task.
#[async_trait]
impl EventFeed for Direct {
    async fn events_after(&self, after: u64, limit: u32) -> Result<Vec<StoredEvent>, DomainError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows: Vec<EventRow> = on_conn!(self, conn => {
            session_events::table
                .filter(session_events::seq.gt(after))
                .order(session_events::seq.asc())
                .limit(i64::from(limit))
                .select(EventRow::as_select())
                .load(conn)
                .await?
        })?;
        Ok(rows
            .into_iter()
            .map(EventRow::into_stored)
            .collect::<Result<_, _>>()?)
    }

    async fn last_seq(&self) -> Result<u64, DomainError> {
        let last: Option<i64> = on_conn!(self, conn => {
            session_events::table
                .select(diesel::dsl::max(session_events::seq))
                .first(conn)
                .await?
        })?;
        // An outbox pruned empty still has a position.
        Ok(unsigned(last).max(self.pruned_through().await?))
    }

    async fn pruned_through(&self) -> Result<u64, DomainError> {
        let value = self.setting(PRUNED_THROUGH).await?;
        Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    async fn epoch(&self) -> Result<String, DomainError> {
        let epoch = self
            .feed
            .epoch
            .get_or_try_init(|| async {
                // Unique enough for "is this the same outbox": creation time and process.
                let candidate = format!(
                    "{:x}-{:x}",
                    tether_domain::Clock::now(&tether_domain::SystemClock).as_micros(),
                    std::process::id()
                );
                self.setting_or_insert(EPOCH, &candidate).await
            })
            .await?;
        Ok(epoch.clone())
    }

    async fn wait_for_events(&self) {
        // No database call: the same wake-up as `Database`'s.
        EventFeed::wait_for_events(&self.0).await;
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
