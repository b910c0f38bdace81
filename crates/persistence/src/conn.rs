//! Where every database call starts: [`Database::with_conn`] takes a connection from the backend's
//! pool under the call timeout and runs the call's work with it, on SQLite as a task of the
//! multi-threaded runtime. A query body reaches the database only through it, so what it guarantees
//! holds for every call by construction.

use std::future::Future;
use std::time::Duration;

use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures_util::future::BoxFuture;

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

/// The pool, how long a call may take, and where SQLite calls run. Its fields are private to this
/// module: [`Database::with_conn`] is the only way to a connection.
#[derive(Clone)]
pub(crate) struct Connections {
    pools: Pools,
    timeout: Duration,
    /// The runtime `connect` ran on, where SQLite calls run.
    runtime: tokio::runtime::Handle,
}

impl Connections {
    /// Calls on `pools` bounded by `timeout`; SQLite calls will run on the current runtime.
    pub(crate) fn new(pools: Pools, timeout: Duration) -> Self {
        Self {
            pools,
            timeout,
            runtime: tokio::runtime::Handle::current(),
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

/// `work`, failing as unavailable when it takes longer than `limit`.
async fn bounded<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Err(Error::Timeout(limit)))
}

impl Database {
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
    pub(crate) async fn with_conn<T: Send + 'static>(
        &self,
        work: impl Work<T>,
    ) -> Result<T, Error> {
        let limit = self.conns.timeout;
        match &self.conns.pools {
            Pools::Sqlite(pool) => {
                let pool = pool.clone();
                let task = self.conns.runtime.spawn(bounded(limit, async move {
                    let mut conn = pool.get().await.map_err(|e| Error::Pool(Box::new(e)))?;
                    work(Conn::Sqlite(&mut conn)).await
                }));
                task.await.map_err(|e| Error::Task(e.to_string()))?
            }
            Pools::Postgres(pool) => {
                bounded(limit, async move {
                    let mut conn = pool.get().await.map_err(|e| Error::Pool(Box::new(e)))?;
                    work(Conn::Postgres(&mut conn)).await
                })
                .await
            }
        }
    }
}
