//! Tether's live monitoring: dashboards subscribe over WebSocket and see sessions appear, change and
//! end in real time, plus a periodic health summary, and resume the stream without losing events.
//!
//! - [`Hub`]: one task (the pump) reads the event outbox through the [`EventFeed`](tether_domain::EventFeed) port, strictly in
//!   `seq` order, and pushes each message, serialized once, into every connection's bounded queue. It
//!   never waits for a dashboard; one that cannot keep up (more than
//!   [`max_buffered_bytes`](RealtimeConfig::max_buffered_bytes) not yet written to its socket) is
//!   closed with 1013 `slow_consumer`, and its buffers are freed. The hub
//!   is also the writing [`SessionManager`](tether_domain::SessionManager)'s [`EventSink`](tether_domain::EventSink): a local commit
//!   wakes it, and the feed's own wake-up (PostgreSQL `NOTIFY`) brings other instances' events.
//! - [`Hub::connect`]: the WebSocket itself (on actix-http's codec), with replay from `since`, pings,
//!   and a cap on inbound frames, checked against the length a frame declares. Authentication is the
//!   caller's job, done before the upgrade.
//! - [`on_connect`]: for the server's `on_connect` hook, so that the socket of a dashboard that does
//!   not read can be reset instead of held until the client leaves.
//! - [`resume_point`], [`origin_allowed`], [`Tickets`]: what the `api` crate checks at the handshake.
//!
//! This crate knows neither HTTP status codes nor configuration files: `api` maps [`Error`] and fills
//! [`RealtimeConfig`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
//! use tether_domain::{Clock, InMemoryStore, NoTokens, Policy, SessionManager, SystemClock};
//! use tether_realtime::{Hub, RealtimeConfig, origin_allowed, resume_point};
//!
//! async fn dashboard(
//!     req: HttpRequest,
//!     body: web::Payload,
//!     hub: web::Data<Hub>,
//! ) -> actix_web::Result<HttpResponse> {
//!     // The api authenticates (API key or ticket) and answers 401/403/400 itself.
//!     if !origin_allowed(&req, &["http://127.0.0.1:8181".to_owned()]) {
//!         return Ok(HttpResponse::Forbidden().finish());
//!     }
//!     let Ok(since) = resume_point(&req) else {
//!         return Ok(HttpResponse::BadRequest().finish());
//!     };
//!     hub.connect(&req, body, since).await
//! }
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let store = Arc::new(InMemoryStore::new()); // tether_persistence in the service
//!     let clock: Arc<dyn Clock> = Arc::new(SystemClock);
//!     // The hub reads the outbox, and the store (for health_update's newest sessions and counts) ...
//!     let hub = Hub::start(store.clone(), store.clone(), clock.clone(), RealtimeConfig::default())
//!         .await?;
//!     // ... and the manager that writes wakes it after each commit.
//!     let _manager = SessionManager::new(
//!         store, Arc::new(NoTokens::default()), Arc::new(hub.clone()), clock, Policy::defaults(),
//!     )?;
//!
//!     let data = web::Data::new(hub.clone());
//!     HttpServer::new(move || {
//!         App::new()
//!             .app_data(data.clone())
//!             .route("/api/mcp/ws/sessions", web::get().to(dashboard))
//!     })
//!     .on_connect(tether_realtime::on_connect)
//!     .bind(("127.0.0.1", 8181))?
//!     .run()
//!     .await?;
//!     hub.shutdown().await;
//!     Ok(())
//! }
//! ```

mod budget;
mod config;
mod connection;
mod error;
mod hub;
mod message;
mod queue;
mod request;
mod sequencer;
mod socket;
mod subscription;
mod tickets;
mod wire;

pub use config::RealtimeConfig;
pub use error::Error;
pub use hub::{Hub, HubStats};
pub use request::{ConnectOptions, HealthUpdates, connect_options, origin_allowed, resume_point};
pub use socket::on_connect;
pub use tickets::{MAX_OUTSTANDING_TICKETS, Ticket, Tickets};
