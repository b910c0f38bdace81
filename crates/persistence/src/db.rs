//! Connecting: URL parsing, pools with timeouts, SQLite pragmas, migrations; the `settings` table.

use std::time::Duration;

use deadpool::Runtime;
use diesel::connection::SimpleConnection;
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::AsyncPgConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::conn::{Conn, Connections, Pools};
use crate::error::Error;
use crate::schema::settings;

/// SQLite through diesel-async's wrapper (each statement runs on tokio's blocking pool).
pub(crate) type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// An arbitrary constant: the advisory lock that serializes migrations when several instances start
/// against one PostgreSQL database at once.
const MIGRATION_LOCK: i64 = 0x7e7e_0001;

/// Which database a [`Database`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file (one instance).
    Sqlite,
    /// A PostgreSQL server (any number of instances).
    Postgres,
}

/// Connection settings.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Most pooled connections.
    pub max_connections: usize,
    /// Longest wait for any one database call, pool wait included. Past it the call fails as
    /// unavailable instead of hanging on a frozen server.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_connections: 16,
            timeout: Duration::from_millis(1500),
        }
    }
}

/// A migrated database with its connection pool; implements the domain's `SessionStore` and
/// `EventFeed`.
#[derive(Clone)]
pub struct Database {
    /// The only way to a connection (see `Database::with_conn`).
    pub(crate) conns: Connections,
    pub(crate) feed: std::sync::Arc<crate::feed::FeedState>,
    /// On PostgreSQL, the group commit of reconnects (`batch.rs`), started at the first one.
    pub(crate) group: std::sync::Arc<std::sync::OnceLock<crate::batch::Batcher>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: show only the backend.
        f.debug_struct("Database")
            .field("backend", &self.backend())
            .field("timeout", &self.conns.timeout())
            .finish()
    }
}

#[derive(Debug)]
enum Target {
    Sqlite(String),
    Postgres(String),
}

fn parse_url(url: &str) -> Result<Target, Error> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Target::Postgres(url.to_owned()));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| Error::Url(redact(url)))?;
    // Each pooled connection would get its own empty in-memory database.
    if path.is_empty() || path.contains(":memory:") || path.contains("mode=memory") {
        return Err(Error::Url(
            "an in-memory SQLite database cannot be shared by a pool; name a file".into(),
        ));
    }
    Ok(Target::Sqlite(path.to_owned()))
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

/// Every SQLite connection's settings. The automatic checkpoint is off because it would run inside a
/// commit, holding the writer's turn: `checkpoint.rs` runs it beside the writer instead.
fn sqlite_pragmas(timeout: Duration) -> String {
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; \
         PRAGMA busy_timeout = {};",
        timeout.as_millis()
    )
}

/// The pool of the SQLite file at `path`, each connection set up with [`sqlite_pragmas`].
pub(crate) fn sqlite_pool(path: String, options: Options) -> Result<Pool<SqliteConn>, Error> {
    let mut cfg = ManagerConfig::<SqliteConn>::default();
    let pragmas = sqlite_pragmas(options.timeout);
    cfg.custom_setup = Box::new(move |path| {
        let pragmas = pragmas.clone();
        let path = path.to_owned();
        Box::pin(async move {
            let mut conn = <SqliteConn as AsyncConnection>::establish(&path).await?;
            conn.batch_execute(&pragmas)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    // The statement itself is the check: a broken SQLite file fails the next statement.
    cfg.recycling_method = RecyclingMethod::Fast;
    let mgr = AsyncDieselConnectionManager::new_with_config(path, cfg);
    build_pool(mgr, options)
}

fn boxed<E: std::error::Error + Send + Sync + 'static>(e: E) -> tether_domain::BoxError {
    Box::new(e)
}

impl Database {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`), runs pending migrations and builds the
    /// pool. Call it on a multi-threaded tokio runtime: SQLite statements run there.
    ///
    /// # Errors
    /// [`Error::Url`] for an unsupported URL, [`Error::Connect`]/[`Error::Migrate`] when the database
    /// cannot be reached or migrated.
    pub async fn connect(url: &str, options: Options) -> Result<Self, Error> {
        let target = parse_url(url)?;
        migrate(&target, options.timeout).await?;
        let listen_url = match &target {
            Target::Sqlite(_) => None,
            Target::Postgres(url) => Some(url.clone()),
        };
        let pools = match target {
            Target::Sqlite(path) => Pools::Sqlite(sqlite_pool(path, options)?),
            Target::Postgres(url) => {
                let mut cfg = ManagerConfig::<AsyncPgConnection>::default();
                // A closed connection is caught by `is_broken`; a frozen server by the call timeout.
                // `Verified` would add a round trip to every checkout.
                cfg.recycling_method = RecyclingMethod::Fast;
                let mgr = AsyncDieselConnectionManager::new_with_config(url, cfg);
                Pools::Postgres(build_pool(mgr, options)?)
            }
        };
        Ok(Self {
            conns: Connections::new(pools, options.timeout),
            feed: std::sync::Arc::new(crate::feed::FeedState::new(listen_url)),
            group: std::sync::Arc::default(),
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.conns.backend()
    }

    /// One trivial statement: whether the database answers now.
    ///
    /// # Errors
    /// As for any statement.
    pub async fn ping(&self) -> Result<(), Error> {
        self.with_conn("ping", |conn| {
            Box::pin(async move { Ok(on_conn!(conn, |c| c.batch_execute("SELECT 1").await)?) })
        })
        .await
    }

    /// The value of setting `name`, storing `candidate` first if it has none. Every instance on one
    /// database gets the same value, whichever wrote it first.
    ///
    /// # Errors
    /// As for any statement.
    pub async fn setting_or_insert(&self, name: &str, candidate: &str) -> Result<String, Error> {
        use diesel_async::RunQueryDsl;
        let (name, candidate) = (name.to_owned(), candidate.to_owned());
        self.with_write_conn("setting", move |mut conn| {
            Box::pin(async move {
                on_conn!(conn.reborrow(), |c| {
                    diesel::insert_into(settings::table)
                        .values((settings::name.eq(&name), settings::value.eq(&candidate)))
                        .on_conflict_do_nothing()
                        .execute(c)
                        .await
                })?;
                setting(conn, &name)
                    .await?
                    .ok_or_else(|| Error::Corrupt(format!("setting {name} vanished")))
            })
        })
        .await
    }
}

/// The value of setting `name`, if any.
pub(crate) async fn setting(conn: Conn<'_>, name: &str) -> Result<Option<String>, Error> {
    use diesel_async::RunQueryDsl;
    Ok(on_conn!(conn, |c| {
        settings::table
            .find(name)
            .select(settings::value)
            .first::<String>(c)
            .await
            .optional()
    })?)
}

fn build_pool<C>(mgr: AsyncDieselConnectionManager<C>, options: Options) -> Result<Pool<C>, Error>
where
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager,
{
    Pool::builder(mgr)
        .max_size(options.max_connections.max(1))
        .wait_timeout(Some(options.timeout))
        .create_timeout(Some(options.timeout))
        .recycle_timeout(Some(options.timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| Error::Pool(boxed(e)))
}

/// Runs migrations on a thread of its own: diesel's harness is synchronous, and the async wrapper
/// must not block a runtime thread (it panics on a current-thread runtime).
async fn migrate(target: &Target, timeout: Duration) -> Result<(), Error> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let target = match target {
        Target::Sqlite(p) => Target::Sqlite(p.clone()),
        Target::Postgres(u) => Target::Postgres(u.clone()),
    };
    std::thread::Builder::new()
        .name("tether-migrate".into())
        .spawn(move || {
            let _ = tx.send(migrate_blocking(&target, timeout));
        })
        .map_err(|e| Error::Migrate(boxed(e)))?;
    rx.await
        .map_err(|_| Error::Migrate("migration thread ended without an answer".into()))?
}

fn migrate_blocking(target: &Target, timeout: Duration) -> Result<(), Error> {
    match target {
        Target::Sqlite(path) => {
            let mut conn =
                SqliteConnection::establish(path).map_err(|e| Error::Connect(boxed(e)))?;
            conn.batch_execute(&sqlite_pragmas(timeout))?;
            conn.run_pending_migrations(SQLITE_MIGRATIONS)
                .map_err(Error::Migrate)?;
        }
        Target::Postgres(url) => {
            let mut conn =
                <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(url)
                    .map_err(|e| Error::Connect(boxed(e)))?;
            SimpleConnection::batch_execute(
                &mut conn,
                &format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"),
            )?;
            let result = conn
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|_| ())
                .map_err(Error::Migrate);
            SimpleConnection::batch_execute(
                &mut conn,
                &format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"),
            )?;
            result?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(
            matches!(parse_url("sqlite://tether.db"), Ok(Target::Sqlite(p)) if p == "tether.db")
        );
        assert!(
            matches!(parse_url("sqlite:///tmp/x.db"), Ok(Target::Sqlite(p)) if p == "/tmp/x.db")
        );
        assert!(matches!(
            parse_url("postgres://u@h/db"),
            Ok(Target::Postgres(_))
        ));
        assert!(matches!(
            parse_url("postgresql://u@h/db"),
            Ok(Target::Postgres(_))
        ));
        assert!(matches!(parse_url("sqlite://:memory:"), Err(Error::Url(_))));
        assert!(matches!(parse_url("mysql://x"), Err(Error::Url(_))));
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://***@h/db");
        let msg = parse_url("mysql://u:secret@h/db").unwrap_err().to_string();
        assert!(!msg.contains("secret"), "{msg}");
    }
}
