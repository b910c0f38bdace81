//! The outbox read back: the domain's `EventFeed` port, wake-ups (in-process after each commit, and
//! on PostgreSQL from the LISTEN connection in `postgres.rs`), pruning and the epoch.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tether_domain::{Error as DomainError, EventFeed, StoredEvent, Timestamp};
use tokio::sync::Notify;

use crate::conn::Conn;
use crate::db::{Database, setting};
use crate::error::Error;
use crate::models::EventRow;
use crate::postgres;
use crate::schema::{session_events, settings};

const PRUNED_THROUGH: &str = "events_pruned_through";
const EPOCH: &str = "events_epoch";

/// Shared by every clone of a `Database`.
#[derive(Debug)]
pub(crate) struct FeedState {
    notify: Notify,
    /// PostgreSQL URL for the listener and the notifier; `None` on SQLite, where every writer is in
    /// this process.
    listen_url: Option<String>,
    listener: std::sync::Once,
    /// A permit means "committed since the last NOTIFY": the notifier sends one per permit, so
    /// commits made while a NOTIFY is in flight share the next one.
    pending_notify: Notify,
    notifier: std::sync::Once,
    epoch: tokio::sync::OnceCell<String>,
}

impl FeedState {
    pub(crate) fn new(listen_url: Option<String>) -> Self {
        Self {
            notify: Notify::new(),
            listen_url,
            listener: std::sync::Once::new(),
            pending_notify: Notify::new(),
            notifier: std::sync::Once::new(),
            epoch: tokio::sync::OnceCell::new(),
        }
    }

    /// Tells this process's feed readers that events were committed.
    pub(crate) fn wake(&self) {
        // Wake every current waiter, and leave a permit for a waiter that is between reading and
        // waiting, so that no write goes unnoticed (a spurious wake-up costs one empty read).
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    /// Events were committed here: wake this process's readers, and (on PostgreSQL) have the
    /// notifier tell the other instances, after the commit and off its path.
    pub(crate) fn committed(self: &Arc<Self>) {
        self.wake();
        let Some(url) = &self.listen_url else {
            return;
        };
        self.notifier.call_once(|| {
            tokio::spawn(postgres::notifier(
                Arc::downgrade(self),
                postgres::notifier_url(url),
            ));
        });
        self.pending_notify.notify_one();
    }

    /// Resolves when a commit is waiting to be announced.
    pub(crate) async fn pending_notify(&self) {
        self.pending_notify.notified().await;
    }
}

fn unsigned(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

/// How far pruning has gone (0 when it never ran).
async fn pruned_through(conn: Conn<'_>) -> Result<u64, Error> {
    let value = setting(conn, PRUNED_THROUGH).await?;
    Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
}

impl Database {
    fn ensure_listener(&self) {
        let Some(url) = self.feed.listen_url.clone() else {
            return;
        };
        let weak = Arc::downgrade(&self.feed);
        self.feed.listener.call_once(|| {
            tokio::spawn(postgres::listen(weak, postgres::listener_url(&url)));
        });
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
        self.with_write_conn("prune_events", move |conn| {
            Box::pin(conn.transaction(move |mut conn| {
                Box::pin(async move {
                    let (by_age, last): (Option<i64>, Option<i64>) =
                        on_conn!(conn.reborrow(), |c| {
                            let by_age = session_events::table
                                .filter(session_events::at.lt(cutoff))
                                .select(diesel::dsl::max(session_events::seq))
                                .first(c)
                                .await?;
                            let last = session_events::table
                                .select(diesel::dsl::max(session_events::seq))
                                .first(c)
                                .await?;
                            Ok::<_, Error>((by_age, last))
                        })?;
                    let by_count = last.map(|l| l - keep).filter(|t| *t > 0);
                    let Some(through) = by_age.max(by_count) else {
                        return Ok(0);
                    };
                    let previous =
                        i64::try_from(pruned_through(conn.reborrow()).await?).unwrap_or(i64::MAX);
                    let value = through.max(previous).to_string();
                    let removed = on_conn!(conn, |c| {
                        let removed = diesel::delete(
                            session_events::table.filter(session_events::seq.le(through)),
                        )
                        .execute(c)
                        .await?;
                        diesel::insert_into(settings::table)
                            .values((
                                settings::name.eq(PRUNED_THROUGH),
                                settings::value.eq(&value),
                            ))
                            .on_conflict(settings::name)
                            .do_update()
                            .set(settings::value.eq(&value))
                            .execute(c)
                            .await?;
                        Ok::<_, Error>(removed)
                    })?;
                    Ok(removed as u64)
                })
            }))
        })
        .await
    }
}

#[async_trait]
impl EventFeed for Database {
    async fn events_after(&self, after: u64, limit: u32) -> Result<Vec<StoredEvent>, DomainError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows: Vec<EventRow> = self
            .with_conn("events_after", move |conn| {
                Box::pin(async move {
                    Ok(on_conn!(conn, |c| {
                        session_events::table
                            .filter(session_events::seq.gt(after))
                            .order(session_events::seq.asc())
                            .limit(i64::from(limit))
                            .select(EventRow::as_select())
                            .load(c)
                            .await
                    })?)
                })
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(EventRow::into_stored)
            .collect::<Result<_, _>>()?)
    }

    async fn last_seq(&self) -> Result<u64, DomainError> {
        Ok(self
            .with_conn("last_seq", |mut conn| {
                Box::pin(async move {
                    let last: Option<i64> = on_conn!(conn.reborrow(), |c| {
                        session_events::table
                            .select(diesel::dsl::max(session_events::seq))
                            .first(c)
                            .await
                    })?;
                    // An outbox pruned empty still has a position.
                    Ok(unsigned(last).max(pruned_through(conn).await?))
                })
            })
            .await?)
    }

    async fn pruned_through(&self) -> Result<u64, DomainError> {
        Ok(self
            .with_conn("pruned_through", |conn| Box::pin(pruned_through(conn)))
            .await?)
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
        self.ensure_listener();
        self.feed.notify.notified().await;
    }
}
