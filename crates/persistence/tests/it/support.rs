//! Test databases: a fresh SQLite file or a fresh PostgreSQL database per test, removed afterwards.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tether_persistence::{Database, Options, admin};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name for this process and call.
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

/// The admin URL of the test PostgreSQL server. In CI its absence fails the test; elsewhere the test
/// is skipped with a loud message.
pub fn postgres_url() -> Option<String> {
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

/// A database of one backend that lives as long as the test.
pub enum TestDb {
    /// A file in a temporary directory.
    Sqlite {
        dir: std::path::PathBuf,
        url: String,
    },
    /// A database created for this test.
    Postgres {
        admin: String,
        name: String,
        url: String,
    },
}

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = std::env::temp_dir().join(unique("tether_test"));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("tether.db").display());
        Self::Sqlite { dir, url }
    }

    pub async fn postgres() -> Option<Self> {
        let admin = postgres_url()?;
        let name = unique("tether_test");
        let url = admin::create_database(&admin, &name).await.unwrap();
        Some(Self::Postgres { admin, name, url })
    }

    pub fn url(&self) -> &str {
        match self {
            Self::Sqlite { url, .. } | Self::Postgres { url, .. } => url,
        }
    }

    pub async fn connect(&self) -> Database {
        Database::connect(self.url(), Options::default())
            .await
            .unwrap()
    }

    pub async fn remove(self) {
        match self {
            Self::Sqlite { dir, .. } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Self::Postgres { admin, name, .. } => {
                admin::drop_database(&admin, &name).await.unwrap();
            }
        }
    }
}
