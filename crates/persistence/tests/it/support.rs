//! Test databases from the shared test kit (removed even when a test fails), and a connection to
//! one with the default options.

use tether_persistence::{Database, Options};
pub use tether_testkit::{TestDb, postgres_admin_url as postgres_url};

/// Connecting a test database.
pub trait Connect {
    /// A migrated [`Database`] on it, with the default options.
    async fn connect(&self) -> Database;
}

impl Connect for TestDb {
    async fn connect(&self) -> Database {
        Database::connect(self.url(), Options::default())
            .await
            .unwrap()
    }
}
