//! A fresh database per backend: an SQLite file in a temporary directory, or a PostgreSQL database
//! created for the run and dropped after it; and the run over the chosen backends that `tether-bench`
//! and `tether-bench-mcp` share ([`each_backend`]).

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

/// Which database backends to measure (`--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backends {
    /// SQLite only.
    Sqlite,
    /// PostgreSQL only.
    Postgres,
    /// Both, SQLite first.
    Both,
}

impl Backends {
    /// `sqlite`, `postgres` or `both`.
    ///
    /// # Errors
    /// Anything else, or nothing.
    pub fn parse(value: Option<&str>) -> Result<Self, BoxError> {
        match value {
            Some("sqlite") => Ok(Self::Sqlite),
            Some("postgres") => Ok(Self::Postgres),
            Some("both") => Ok(Self::Both),
            other => Err(format!("--backend: {other:?} is not sqlite, postgres or both").into()),
        }
    }

    /// The backends, in the order they are measured.
    pub fn kinds(self) -> &'static [Kind] {
        match self {
            Self::Sqlite => &[Kind::Sqlite],
            Self::Postgres => &[Kind::Postgres],
            Self::Both => &[Kind::Sqlite, Kind::Postgres],
        }
    }
}

/// What a bench measured on one backend, as far as [`each_backend`] fills it in.
pub trait BackendReport {
    /// Nothing measured yet on `kind`.
    fn new(kind: Kind) -> Self;
    /// The backend was not measured at all, and why.
    fn skip(&mut self, why: String);
    /// The error that cut the measurement short.
    fn fail(&mut self, error: String);
}

/// Measures each of `backends` in turn, each on a database made for it and removed afterwards; the
/// PostgreSQL backend is skipped loudly without an admin URL in [`POSTGRES_ENV`]. `heading` goes
/// before the backend's name in the progress line (`== {heading}SQLite ==`). A failure is written to
/// the backend's report and the next backend still runs.
pub fn each_backend<R: BackendReport>(
    rt: &tokio::runtime::Runtime,
    backends: Backends,
    heading: &str,
    mut measure: impl FnMut(&Fresh, &mut R) -> Result<(), BoxError>,
) -> Vec<R> {
    let admin_url = std::env::var(POSTGRES_ENV).ok().filter(|u| !u.is_empty());
    let mut reports = Vec::new();
    for &kind in backends.kinds() {
        let mut report = R::new(kind);
        if kind == Kind::Postgres && admin_url.is_none() {
            eprintln!(
                "\n!!!!!!!! {POSTGRES_ENV} is not set: SKIPPING the PostgreSQL backend !!!!!!!!\n\
                 !!!!!!!! set it to an admin URL, e.g. postgres://postgres@127.0.0.1:5432/test \
                 !!!!!!!!\n"
            );
            report.skip(format!("{POSTGRES_ENV} unset"));
            reports.push(report);
            continue;
        }
        eprintln!("== {heading}{} ==", kind.label());
        match rt.block_on(Fresh::create(kind, admin_url.as_deref())) {
            Ok(fresh) => {
                if let Err(e) = measure(&fresh, &mut report) {
                    eprintln!("  failed: {e}");
                    report.fail(e.to_string());
                }
                if let Err(e) = rt.block_on(fresh.destroy()) {
                    eprintln!("  could not remove the bench database: {e}");
                }
            }
            Err(e) => report.fail(format!("cannot create the database: {e}")),
        }
        reports.push(report);
    }
    reports
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

/// `<pid>_<unix seconds>`: unique per run, valid in a PostgreSQL database name.
pub fn run_tag() -> String {
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
