//! A fresh database per backend: an SQLite file in a temporary directory, or a PostgreSQL database
//! created for the run and dropped after it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tether_domain::{
    Change, Clock, EventKind, Metadata, NewSession, Session, SessionId, SessionStore, SystemClock,
    Timestamp,
};
use tether_persistence::{Database, Options, admin};

use crate::BoxError;

/// The environment variable holding a PostgreSQL admin URL (one allowed to `CREATE DATABASE`).
pub const POSTGRES_ENV: &str = "TETHER_TEST_POSTGRES_URL";

/// Per-call timeout for the bench's own `Database`: the server's default, so that both see the
/// same pool behaviour.
pub const DB_TIMEOUT: Duration = Duration::from_millis(1500);

/// A database backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl Kind {
    /// Name for the table.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Sqlite => "SQLite",
            Kind::Postgres => "PostgreSQL",
        }
    }
}

/// A database made for this run.
pub struct Fresh {
    /// Its URL (may hold a password: never printed).
    pub url: String,
    /// A directory the server may use as its working directory.
    pub workdir: PathBuf,
    /// The PostgreSQL admin URL and database name to drop at the end.
    postgres: Option<(String, String)>,
}

fn run_tag() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{}_{secs}", std::process::id())
}

impl Fresh {
    /// Creates an empty database of `kind`. For PostgreSQL, `admin_url` is the server to create it on.
    ///
    /// # Errors
    /// When the directory or the database cannot be created.
    pub async fn create(kind: Kind, admin_url: Option<&str>) -> Result<Self, BoxError> {
        let tag = run_tag();
        let workdir = std::env::temp_dir().join(format!("tether-bench-{tag}-{}", kind.label()));
        std::fs::create_dir_all(&workdir)?;
        match kind {
            Kind::Sqlite => Ok(Self {
                // An absolute path: `sqlite:///tmp/...`.
                url: format!("sqlite://{}", workdir.join("bench.db").display()),
                workdir,
                postgres: None,
            }),
            Kind::Postgres => {
                let admin_url = admin_url.ok_or("no PostgreSQL admin URL")?.to_owned();
                let name = format!("tether_bench_{tag}");
                let url = admin::create_database(&admin_url, &name).await?;
                Ok(Self {
                    url,
                    workdir,
                    postgres: Some((admin_url, name)),
                })
            }
        }
    }

    /// Removes the database (and the working directory).
    ///
    /// # Errors
    /// When PostgreSQL refuses the drop.
    pub async fn destroy(self) -> Result<(), BoxError> {
        let _ = std::fs::remove_dir_all(&self.workdir);
        if let Some((admin_url, name)) = &self.postgres {
            admin::drop_database(admin_url, name).await?;
        }
        Ok(())
    }

    /// Connects with the pool size the server uses.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated.
    pub async fn connect(&self, pool: usize) -> Result<Database, BoxError> {
        Ok(Database::connect(
            &self.url,
            Options {
                max_connections: pool,
                timeout: DB_TIMEOUT,
            },
        )
        .await?)
    }
}

/// Id of the `i`-th seeded session; the HTTP seeding uses the same names.
pub fn seeded_id(i: usize) -> String {
    format!("b-{i}")
}

/// Inserts sessions `b-0..b-{n}` directly through `Database`, `concurrency` at a time (used when no
/// server runs, so that the bare statement still meets a table of the usual size).
///
/// # Errors
/// The first insert that fails.
pub async fn seed_direct(db: &Database, n: usize, concurrency: usize) -> Result<(), BoxError> {
    let db = Arc::new(db.clone());
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(concurrency) {
                let session = new_session(&seeded_id(i))?;
                db.insert(&session, created(session.connected_at())).await?;
            }
            Ok::<(), BoxError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// A fresh active session named `id`, opened now, as the server would create it.
///
/// # Errors
/// When `id` is not a valid session id.
pub fn new_session(id: &str) -> Result<Session, BoxError> {
    Ok(Session::open(
        NewSession {
            session_id: SessionId::parse(id)?,
            client_type: "bench".into(),
            client_version: None,
            principal: None,
            metadata: Metadata::default(),
        },
        SystemClock.now(),
    )?)
}

/// The change a session creation records.
pub fn created(at: Timestamp) -> Change {
    Change {
        at,
        event: EventKind::Created,
    }
}
