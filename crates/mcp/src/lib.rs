//! Durable MCP sessions for servers built on the official Rust SDK, `rmcp`.
//!
//! With Tether's session registry behind rmcp's streamable HTTP transport, an MCP session id *is* a
//! Tether session id: the session is registered at `initialize` with the client's name and version,
//! every request counts as activity, HTTP `DELETE` ends it, and a session id this process has never
//! seen (after a restart, or created by another instance on the same database) is restored from the
//! registry instead of answering 404. The session tools (`session_info`, `get_reconnect_token`,
//! `reconnect_session`, `end_session`, `open_session`) let a client resume its session with a
//! single-use, rotating reconnect token, also on the 2026-07-28 protocol revision that has no
//! protocol sessions.
//!
//! Three pieces: [`McpSessions`] (the registry side, and rmcp's `session_store`),
//! [`DurableSessionManager`] (wraps rmcp's in-memory session manager), and [`SessionTools`] (a
//! tool router to merge into any server; [`TetherServer`] is a server with only those tools).
//! Pass in a [`tether_domain::SessionManager`] over the store of your choice: this crate knows no
//! database and no web framework.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use rmcp::transport::streamable_http_server::{
//!     StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
//! };
//! use tether_domain::{InMemoryStore, NoEvents, Policy, SessionManager, SystemClock};
//! use tether_mcp::{DurableSessionManager, McpSessions, SessionTools, TetherServer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The registry: any SessionStore (tether-persistence's SQLite/PostgreSQL in the binary).
//! let secret = tether_auth::Secret::new(vec![7u8; 32])?;
//! let tokens = tether_auth::Authority::new(
//!     tether_auth::Keyring::new(secret), "tether", "tether-reconnect",
//!     Duration::from_secs(15 * 60),
//! )?;
//! let manager = SessionManager::new(
//!     Arc::new(InMemoryStore::new()), Arc::new(tokens), Arc::new(NoEvents),
//!     Arc::new(SystemClock), Policy::defaults(),
//! )?;
//!
//! // Durable sessions and the tools, in rmcp's own streamable HTTP service.
//! let sessions = McpSessions::new(manager);
//! let tools = SessionTools::new(sessions.clone());
//! let mut config = StreamableHttpServerConfig::default();
//! config.session_store = Some(sessions.store());
//! let service = StreamableHttpService::new(
//!     move || Ok(TetherServer::new(&tools)),
//!     Arc::new(DurableSessionManager::new(LocalSessionManager::default(), sessions)),
//!     config,
//! );
//! # let _ = service;
//! # Ok(())
//! # }
//! ```
//!
//! A server with tools of its own merges the session tools into its router:
//! `let router: ToolRouter<MyServer> = MyServer::tool_router() + tools.router();`

mod error;
mod manager;
mod server;
mod sessions;
mod tools;

pub use error::Error;
pub use manager::DurableSessionManager;
pub use server::TetherServer;
pub use sessions::{MCP_METADATA_KEY, McpSessions, ProtocolSession};
pub use tools::{
    HandleArgs, OpenArgs, ReconnectArgs, Resumed, SessionInfo, SessionTools, TokenGrant,
};
