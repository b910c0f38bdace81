//! Tether's domain: the rules of an MCP client session's life, with no I/O.
//!
//! A session is `active`, becomes `idle` after `idle_after` without activity and `disconnected` after
//! `reap_after` (never shorter than the token lifetime) or when ended. A client that lost its
//! connection resumes with a single-use reconnect token: [`SessionManager::reconnect`] consumes it in
//! one atomic store operation and hands back a rotated one; presenting a consumed token again revokes
//! the live one and answers [`ResultCode::TokenReused`].
//!
//! The outside world comes in through four ports: [`SessionStore`], [`TokenAuthority`],
//! [`EventSink`] and [`Clock`]; a fifth, [`EventFeed`], reads the event outbox back for live monitoring.
//! `tether-persistence` and `tether-auth` implement the store, feed and authority; [`InMemoryStore`],
//! [`CollectingSink`] and [`ManualClock`] serve tests. An optional [`Observer`], given with
//! [`SessionManager::with_observer`], is told of outcomes (for metrics).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tether_domain::{
//!     CollectingSink, Error, InMemoryStore, ManualClock, Metadata, NewSession, NoTokens, Policy,
//!     SessionId, SessionManager, SessionStatus, Timestamp,
//! };
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_700_000_000)));
//! let events = Arc::new(CollectingSink::default());
//! let manager = SessionManager::new(
//!     Arc::new(InMemoryStore::new()),
//!     Arc::new(NoTokens::default()), // tether_auth::Authority in a real service
//!     events.clone(),
//!     clock.clone(),
//!     Policy::defaults(),
//! )?;
//!
//! let id = SessionId::parse("session-1")?;
//! manager
//!     .open(NewSession {
//!         session_id: id.clone(),
//!         client_type: "claude-desktop".into(),
//!         client_version: Some("1.2".into()),
//!         principal: None,
//!         metadata: Metadata::default(),
//!     })
//!     .await?;
//!
//! clock.advance(Duration::from_secs(6 * 60));
//! manager.sweep().await?;
//! assert_eq!(manager.get(&id).await?.status(), SessionStatus::Idle);
//!
//! manager.touch(&id).await?;
//! assert_eq!(manager.get(&id).await?.status(), SessionStatus::Active);
//! assert_eq!(events.kinds().len(), 3); // created, idle, activity
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```

pub mod adapter;
mod codes;
#[cfg(any(test, feature = "contract"))]
pub mod contract;
mod error;
mod events;
mod manager;
mod memory;
mod observer;
#[cfg(feature = "openapi")]
pub mod openapi;
mod policy;
mod ports;
mod session;
mod time;
mod view;

#[cfg(test)]
mod manager_tests;

pub use codes::ResultCode;
pub use error::{BoxError, Error, error_chain};
pub use events::{
    CollectingSink, EventKind, EventSink, NoEvents, SessionEvent, Sinks, StoredEvent, UpdateType,
};
pub use manager::{MAX_PAGE, Page, PresentedToken, Reconnected, SessionManager, SweepReport};
pub use memory::InMemoryStore;
pub use observer::Observer;
pub use policy::{MAX_GRACE, Policy};
pub use ports::{
    Change, Cursor, EventFeed, IssuedToken, ListQuery, NoTokens, PlainToken, Recorded,
    SessionDirectory, SessionStore, StatusCounts, TokenAuthority, VerifiedToken,
};
pub use session::{
    DisconnectReason, MAX_METADATA_BYTES, MAX_SESSION_ID_LEN, Metadata, NewSession, Session,
    SessionId, SessionParts, SessionStatus, TokenHash, TokenState,
};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
pub use view::SessionView;
