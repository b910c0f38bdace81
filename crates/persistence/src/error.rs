//! The persistence crate's one error type. Driver errors stop here: callers see either this type or,
//! through the port, the domain's `Unavailable`/`Internal`.

use std::time::Duration;

use tether_domain::BoxError;

/// What can go wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL names no supported backend.
    #[error("unsupported database URL (expected sqlite://PATH or postgres://...): {0}")]
    Url(String),
    /// The database could not be reached.
    #[error("could not connect to the database")]
    Connect(#[source] BoxError),
    /// Migrations failed.
    #[error("database migrations failed")]
    Migrate(#[source] BoxError),
    /// No answer in time.
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
    /// No connection could be had from the pool.
    #[error("no database connection available")]
    Pool(#[source] BoxError),
    /// A statement failed.
    #[error("database statement failed")]
    Query(#[from] diesel::result::Error),
    /// A database task ended abnormally.
    #[error("database task failed: {0}")]
    Task(String),
    /// A stored row breaks the domain's rules.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The failure of a statement that served several calls at once (a group commit), told to
    /// each of them.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
}

impl Error {
    /// Whether this is the database being away rather than a bug or bad data.
    pub fn is_unavailable(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error as D};
        match self {
            Self::Connect(_) | Self::Timeout(_) | Self::Pool(_) => true,
            Self::Query(D::DatabaseError(DatabaseErrorKind::ClosedConnection, _)) => true,
            // The async PostgreSQL driver reports a dropped connection as an unknown error whose
            // message says so; SQLite answers "database is locked" when another writer held the lock
            // for longer than busy_timeout; a server shutting down terminates its connections. All
            // are the database being away, not a fault of ours.
            Self::Query(D::DatabaseError(_, info)) => {
                let m = info.message();
                [
                    "connection closed",
                    "locked",
                    "terminating connection",
                    "connection reset",
                ]
                .iter()
                .any(|s| m.contains(s))
            }
            Self::Query(D::BrokenTransactionManager) => true,
            Self::Shared(e) => e.is_unavailable(),
            _ => false,
        }
    }
}

impl From<Error> for tether_domain::Error {
    fn from(e: Error) -> Self {
        if e.is_unavailable() {
            Self::Unavailable(Box::new(e))
        } else {
            Self::Internal(Box::new(e))
        }
    }
}
