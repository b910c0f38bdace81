//! Integration tests of `tether-persistence` against real databases: SQLite always, PostgreSQL when
//! `TETHER_TEST_POSTGRES_URL` is set (in CI it must be).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod contract;
mod detached;
mod observed;
mod outbox;
mod reconnect;
mod schema;
mod support;
