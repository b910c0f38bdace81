//! A test database goes away even when its test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use tether_testkit::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_is_dropped_when_its_test_panics() {
    let Some(admin) = tether_testkit::postgres_admin_url() else {
        return;
    };
    let db = TestDb::postgres().await.unwrap();
    let name = db.url().rsplit('/').next().unwrap().to_owned();
    // The test "fails" while holding the database: unwinding drops it.
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _held = db;
        panic!("a failing test");
    }));
    assert!(failed.is_err());
    // Creating it again succeeds only if it is gone.
    tether_persistence::admin::create_database(&admin, &name)
        .await
        .expect("the database was left behind");
    tether_persistence::admin::drop_database(&admin, &name)
        .await
        .unwrap();
}

#[test]
fn an_sqlite_directory_is_removed_on_drop() {
    let db = TestDb::sqlite();
    let dir = std::path::PathBuf::from(db.url().trim_start_matches("sqlite://"))
        .parent()
        .unwrap()
        .to_owned();
    assert!(dir.exists());
    drop(db);
    assert!(!dir.exists());
}
