//! Test support shared by Tether's crates: a fresh database per test that is removed when the test
//! ends — also when it fails, since a panicking test never reaches its own cleanup —, the rule for
//! PostgreSQL tests (skipped loudly when `TETHER_TEST_POSTGRES_URL` is unset, a failure instead when
//! `CI` is set), the real `tether` binary as a child process ([`launch`]) and what `/proc` tells
//! about it ([`procfs`]). A dev-dependency everywhere but in the load generators, which are not
//! shipped either.
//!
//! ```
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! let db = tether_testkit::TestDb::sqlite();
//! assert!(db.url().starts_with("sqlite://"));
//! db.remove().await; // or just let it drop
//! # });
//! ```

pub mod launch;
pub mod procfs;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tether_persistence::admin;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `<prefix>_<pid>_<n>_<nanos>`.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The test PostgreSQL server's admin URL (`TETHER_TEST_POSTGRES_URL`). Unset: `None` with a loud
/// message, so the caller skips; unset in CI (`CI` set): a panic, since PostgreSQL tests may not be
/// skipped there.
///
/// # Panics
/// In CI without the variable.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("TETHER_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "TETHER_TEST_POSTGRES_URL must be set in CI: PostgreSQL tests may not be skipped"
            );
            eprintln!(
                "\n*** SKIPPING PostgreSQL test: TETHER_TEST_POSTGRES_URL is unset ***\n\
                 *** (e.g. postgres://postgres@127.0.0.1:5432/test)                 ***\n"
            );
            None
        }
    }
}

enum Kind {
    Sqlite {
        dir: PathBuf,
        url: String,
    },
    Postgres {
        admin: String,
        name: String,
        url: String,
    },
}

/// A database of its own for one test: an SQLite file in a fresh directory, or a PostgreSQL
/// database created for it. Removed by [`TestDb::remove`], or when dropped.
pub struct TestDb {
    kind: Kind,
    removed: bool,
}

impl TestDb {
    /// A fresh SQLite file (created by the first connection).
    ///
    /// # Panics
    /// When the temporary directory cannot be made.
    pub fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(unique("tether_test"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let url = format!("sqlite://{}", dir.join("tether.db").display());
        Self {
            kind: Kind::Sqlite { dir, url },
            removed: false,
        }
    }

    /// A fresh PostgreSQL database, or `None` (see [`postgres_admin_url`]).
    ///
    /// # Panics
    /// When the server refuses to create it.
    pub async fn postgres() -> Option<Self> {
        let admin = postgres_admin_url()?;
        let name = unique("tether_test");
        let url = admin::create_database(&admin, &name)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        Some(Self {
            kind: Kind::Postgres { admin, name, url },
            removed: false,
        })
    }

    /// Its URL, for `DATABASE_URL` or `Database::connect`.
    pub fn url(&self) -> &str {
        match &self.kind {
            Kind::Sqlite { url, .. } | Kind::Postgres { url, .. } => url,
        }
    }

    /// Removes it now, failing the test if that fails.
    ///
    /// # Panics
    /// When the PostgreSQL server refuses to drop it.
    pub async fn remove(mut self) {
        self.removed = true;
        match &self.kind {
            Kind::Sqlite { dir, .. } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Kind::Postgres { admin, name, .. } => {
                admin::drop_database(admin, name)
                    .await
                    .unwrap_or_else(|e| panic!("cannot drop test database {name}: {e}"));
            }
        }
    }
}

impl Drop for TestDb {
    /// The test ended without `remove` (it failed, or did not bother): remove it anyway, on a thread
    /// of its own (this may run inside an async test, where blocking the runtime is not allowed).
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        match &self.kind {
            Kind::Sqlite { dir, .. } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Kind::Postgres { admin, name, .. } => {
                let (admin, name) = (admin.clone(), name.clone());
                let dropped = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    rt.block_on(admin::drop_database(&admin, &name)).ok()
                })
                .join();
                if !matches!(dropped, Ok(Some(()))) {
                    eprintln!("tether-testkit: could not drop a test database");
                }
            }
        }
    }
}
