//! Where every database call starts: [`Database::with_conn`] takes a connection from the backend's
//! pool under the call timeout and runs the call's work with it, on SQLite as a task of the
//! multi-threaded runtime. A query body reaches the database only through it, so what it guarantees
//! holds for every call by construction; so does its report to a [`CallObserver`] (metrics).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures_util::future::BoxFuture;

use crate::checkpoint;
use crate::db::{Backend, Database, SqliteConn};
use crate::error::Error;

/// The pool of whichever backend `connect` found.
#[derive(Clone)]
pub(crate) enum Pools {
    /// An SQLite file.
    Sqlite(Pool<SqliteConn>),
    /// A PostgreSQL server.
    Postgres(Pool<AsyncPgConnection>),
}

/// How a database call ended, as a [`CallObserver`] is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// It succeeded.
    Ok,
    /// The database refused it by a uniqueness rule (a session id already taken): the caller's
    /// mistake, answered as such, not a fault of the database.
    Conflict,
    /// The database was away: no connection in time, the call timeout, a dropped connection.
    Unavailable,
    /// Anything else (a bug, a corrupt row, a failed task).
    Failed,
}

impl CallOutcome {
    /// How `result` counts.
    fn of<T>(result: &Result<T, Error>) -> Self {
        use diesel::result::{DatabaseErrorKind, Error as D};
        match result {
            Ok(_) => Self::Ok,
            Err(Error::Query(D::DatabaseError(DatabaseErrorKind::UniqueViolation, _))) => {
                Self::Conflict
            }
            Err(e) if e.is_unavailable() => Self::Unavailable,
            Err(_) => Self::Failed,
        }
    }

    /// A short name, for a metric's label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Conflict => "conflict",
            Self::Unavailable => "unavailable",
            Self::Failed => "failed",
        }
    }
}

/// Told of every database call made through the pool (what the service's metrics count). Called
/// on the call's own task right after it ends: implementations must not block.
pub trait CallObserver: Send + Sync {
    /// `operation` (the store method, such as `consume_token` or `events_after`) took `elapsed`,
    /// pool wait included, and ended as `outcome`.
    fn call(&self, operation: &'static str, elapsed: Duration, outcome: CallOutcome);
}

/// How many pooled connections exist and are lent out, read without touching the database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// The most the pool opens ([`Options::max_connections`](crate::Options::max_connections)).
    pub max: usize,
    /// Connections open now (the pool opens them on demand).
    pub open: usize,
    /// Connections lent to a call now.
    pub in_use: usize,
    /// Calls waiting for a connection now.
    pub waiting: usize,
}

impl From<deadpool::Status> for PoolStatus {
    fn from(s: deadpool::Status) -> Self {
        Self {
            max: s.max_size,
            open: s.size,
            in_use: s.size.saturating_sub(s.available),
            waiting: s.waiting,
        }
    }
}

/// The pool, how long a call may take, where SQLite calls run, and who is told of each call. Its
/// fields are private to this module: [`Database::with_conn`] is the only way to a connection.
#[derive(Clone)]
pub(crate) struct Connections {
    pools: Pools,
    timeout: Duration,
    /// The runtime `connect` ran on, where SQLite calls run.
    runtime: tokio::runtime::Handle,
    observer: Option<Arc<dyn CallObserver>>,
    /// SQLite writes one transaction at a time. Writers queue here, in order, instead of in
    /// SQLite's busy handler, which sleeps up to 100 ms between retries (the ~110 ms p99 at
    /// saturation), and two deferred transactions that both read then write can each hold what the
    /// other needs (SQLITE_BUSY at once, no retry). Readers do not take it: WAL lets them run beside
    /// the writer.
    sqlite_writer: Arc<SqliteWriter>,
}

/// SQLite's one writer: whose turn it is, and whether it wrote since the last checkpoint.
pub(crate) struct SqliteWriter {
    turn: tokio::sync::Semaphore,
    /// Set by every write, cleared by the checkpoint task (`checkpoint.rs`).
    pub(crate) wrote: AtomicBool,
}

impl SqliteWriter {
    /// Nobody's turn taken, nothing written.
    pub(crate) fn new() -> Self {
        Self {
            turn: tokio::sync::Semaphore::new(1),
            wrote: AtomicBool::new(false),
        }
    }
}

impl Connections {
    /// Calls on `pools` bounded by `timeout`; SQLite calls will run on the current runtime.
    /// On SQLite, also starts the WAL checkpoints (`checkpoint.rs`).
    pub(crate) fn new(pools: Pools, timeout: Duration) -> Self {
        let runtime = tokio::runtime::Handle::current();
        let sqlite_writer = Arc::new(SqliteWriter::new());
        if let Pools::Sqlite(pool) = &pools {
            checkpoint::start(&runtime, pool, Arc::clone(&sqlite_writer));
        }
        Self {
            pools,
            timeout,
            runtime,
            observer: None,
            sqlite_writer,
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self.pools {
            Pools::Sqlite(_) => Backend::Sqlite,
            Pools::Postgres(_) => Backend::Postgres,
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The runtime `connect` ran on, where background tasks of the database run.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }
}

/// A connection of either backend, lent to one call's work.
pub(crate) enum Conn<'a> {
    /// SQLite, through diesel-async's blocking wrapper.
    Sqlite(&'a mut SqliteConn),
    /// PostgreSQL.
    Postgres(&'a mut AsyncPgConnection),
}

/// The work of one call: given a connection, a future borrowing it. `'static` because on SQLite it
/// may outlive its caller (see [`Database::with_conn`]).
pub(crate) trait Work<T>:
    for<'c> FnOnce(Conn<'c>) -> BoxFuture<'c, Result<T, Error>> + Send + 'static
{
}

impl<T, W> Work<T> for W where
    W: for<'c> FnOnce(Conn<'c>) -> BoxFuture<'c, Result<T, Error>> + Send + 'static
{
}

/// Runs `$body` with `$c` bound to the connection inside `$conn` (a [`Conn`]), whichever backend it
/// is: the body is compiled once per connection type. The crate's one macro, and why it exists: a
/// diesel statement is type-checked against one backend, so one query text serving both needs either
/// a copy per backend (this) or generic functions whose bounds spell out each statement's full type.
macro_rules! on_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::conn::Conn::Sqlite($c) => $body,
            $crate::conn::Conn::Postgres($c) => $body,
        }
    };
}

impl<'a> From<&'a mut SqliteConn> for Conn<'a> {
    fn from(c: &'a mut SqliteConn) -> Self {
        Self::Sqlite(c)
    }
}

impl<'a> From<&'a mut AsyncPgConnection> for Conn<'a> {
    fn from(c: &'a mut AsyncPgConnection) -> Self {
        Self::Postgres(c)
    }
}

impl Conn<'_> {
    /// The same connection, lent again (for a body that runs several statements).
    pub(crate) fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
        }
    }

    /// Runs `work` in a transaction: committed when it returns `Ok`, rolled back otherwise.
    pub(crate) async fn transaction<T, W>(self, work: W) -> Result<T, Error>
    where
        T: Send,
        W: for<'c> FnOnce(Conn<'c>) -> BoxFuture<'c, Result<T, Error>> + Send,
    {
        on_conn!(self, |c| {
            c.transaction(async move |c| work(Conn::from(c)).await)
                .await
        })
    }
}

/// `work`, failing as unavailable when it takes longer than `limit`, and reported to `observer`.
async fn bounded<T>(
    limit: Duration,
    observed: Option<(&'static str, Arc<dyn CallObserver>)>,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let started = Instant::now();
    let result = tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Err(Error::Timeout(limit)));
    if let Some((operation, observer)) = observed {
        observer.call(operation, started.elapsed(), CallOutcome::of(&result));
    }
    result
}

impl Database {
    /// The same database, telling `observer` of every call from now on (clones made earlier keep
    /// the previous observer, so set it before handing the database out).
    #[must_use]
    pub fn with_call_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.conns.observer = Some(observer);
        self
    }

    /// The pool's occupancy now. Reads counters only: no connection is taken.
    pub fn pool_status(&self) -> PoolStatus {
        match &self.conns.pools {
            Pools::Sqlite(pool) => pool.status().into(),
            Pools::Postgres(pool) => pool.status().into(),
        }
    }

    /// Runs `work` with a pooled connection, the whole call (pool wait included) bounded by
    /// [`Options::timeout`](crate::Options::timeout).
    ///
    /// On SQLite the call runs as a task of the multi-threaded runtime that `connect` ran on, and the
    /// caller only awaits it. diesel-async's SQLite wrapper, when its future is dropped before the
    /// blocking statement finished (a timeout, a client that hung up), waits for the statement with
    /// `block_in_place`, which panics on a current-thread runtime such as an actix worker's. Run here,
    /// that drop happens on a multi-threaded worker (the timeout is inside the task), and a caller
    /// that goes away merely detaches the call. PostgreSQL's driver is cancel-safe, so its calls run
    /// on the caller's task.
    ///
    /// `operation` names the call for the [`CallObserver`]: told on the task that runs the call, so
    /// a detached SQLite call is still reported, and a cancelled PostgreSQL one is not.
    pub(crate) async fn with_conn<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl Work<T>,
    ) -> Result<T, Error> {
        self.call(operation, false, work).await
    }

    /// [`with_conn`](Self::with_conn) for a call that writes: on SQLite it first waits its turn
    /// among the writers (within the same timeout), so that SQLite itself never has two.
    pub(crate) async fn with_write_conn<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl Work<T>,
    ) -> Result<T, Error> {
        self.call(operation, true, work).await
    }

    async fn call<T: Send + 'static>(
        &self,
        operation: &'static str,
        writes: bool,
        work: impl Work<T>,
    ) -> Result<T, Error> {
        self.conns.call(operation, writes, work).await
    }
}

impl Connections {
    /// `work` bounded by the call timeout and reported as `operation`, for a call whose statement
    /// runs elsewhere (a reconnect waiting for its group commit, see `batch.rs`).
    pub(crate) async fn observed<T>(
        &self,
        operation: &'static str,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let observed = self.observer.clone().map(|o| (operation, o));
        bounded(self.timeout, observed, work).await
    }

    /// What [`Database::with_conn`] and [`Database::with_write_conn`] do.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        operation: &'static str,
        writes: bool,
        work: impl Work<T>,
    ) -> Result<T, Error> {
        let limit = self.timeout;
        let observed = self.observer.clone().map(|o| (operation, o));
        match &self.pools {
            Pools::Sqlite(pool) => {
                let pool = pool.clone();
                let writer = writes.then(|| Arc::clone(&self.sqlite_writer));
                let task = self.runtime.spawn(bounded(limit, observed, async move {
                    // Held until the work is done, transaction committed included.
                    let _turn = match &writer {
                        Some(w) => Some(w.turn.acquire().await.map_err(|_| {
                            Error::Task("the SQLite writer queue is closed".into())
                        })?),
                        None => None,
                    };
                    let mut conn = pool.get().await.map_err(|e| Error::Pool(Box::new(e)))?;
                    let result = work(Conn::Sqlite(&mut conn)).await;
                    if let Some(w) = &writer {
                        w.wrote.store(true, Ordering::Release);
                    }
                    result
                }));
                task.await.map_err(|e| Error::Task(e.to_string()))?
            }
            Pools::Postgres(pool) => {
                bounded(limit, observed, async move {
                    let mut conn = pool.get().await.map_err(|e| Error::Pool(Box::new(e)))?;
                    work(Conn::Postgres(&mut conn)).await
                })
                .await
            }
        }
    }
}
