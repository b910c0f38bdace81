//! Tether's session store on SQLite (the default: one file, WAL mode, no server) and PostgreSQL
//! (pooled, any number of instances), through diesel-async.
//!
//! [`Database`] implements the domain's [`SessionStore`](tether_domain::SessionStore) and
//! [`EventFeed`](tether_domain::EventFeed). Every state change is one `UPDATE ... WHERE <rule>
//! RETURNING *` plus its event's row in the `session_events` outbox, in one transaction: a reconnect
//! consumes its token with a compare-and-swap on the token hash, and counters are incremented by the
//! database, never read and written back. On PostgreSQL a trigger NOTIFYs every instance of new
//! events; each instance LISTENs on a connection of its own and reconnects by itself. Each call is
//! bounded by [`Options::timeout`], so a frozen database yields `Unavailable` instead of a hung
//! request. Migrations for both backends are embedded and run by [`Database::connect`].
//!
//! The modules: `conn` (every call's entry point, `Database::with_conn`, and the one macro that
//! compiles a query body for both backends), `db` (connecting, pools, migrations, settings), `store`
//! (`SessionStore`: the rules as SQL), `feed` (`EventFeed`, wake-ups, pruning), `postgres` (what only
//! PostgreSQL has: the one-statement reconnect, LISTEN, ending connections), `batch` (group commit
//! of reconnects), `checkpoint` (SQLite's WAL checkpoints, off the commit path), `models` and `schema`
//! (rows and tables), `admin` (creating and dropping databases). The store contract that both
//! backends must keep is `tether_domain::contract`, run in `tests/it/contract.rs`.
//!
//! ```
//! use tether_domain::{
//!     Change, EventFeed, EventKind, Metadata, NewSession, Session, SessionId, SessionStore, Timestamp,
//! };
//! use tether_persistence::{Database, Options};
//!
//! # let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! let dir = std::env::temp_dir().join(format!("tether-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let url = format!("sqlite://{}", dir.join("doc.db").display());
//! let db = Database::connect(&url, Options::default()).await?;
//!
//! let id = SessionId::parse("doc-1")?;
//! let at = Timestamp::from_secs(1_700_000_000);
//! let session = Session::open(
//!     NewSession {
//!         session_id: id.clone(),
//!         client_type: "cli".into(),
//!         client_version: None,
//!         principal: None,
//!         metadata: Metadata::default(),
//!     },
//!     at,
//! )?;
//! // The change and its event, in one transaction.
//! let recorded = db.insert(&session, Change { at, event: EventKind::Created }).await?;
//! assert_eq!(db.get(&id).await?, Some(session));
//! assert_eq!(db.events_after(0, 10).await?[0].seq, recorded.event.seq);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), tether_domain::Error>(())
//! # }).unwrap();
//! ```

// First: its macro, `on_conn!`, serves the modules below.
#[macro_use]
mod conn;

pub mod admin;
mod batch;
mod checkpoint;
mod db;
mod error;
mod feed;
mod models;
mod postgres;
mod schema;
mod store;

pub use conn::{CallObserver, CallOutcome, PoolStatus};
pub use db::{Backend, Database, Options};
pub use error::Error;
