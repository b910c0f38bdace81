//! Wiring: the only place that names concrete adapters. `build` binds the listener (port 0 works) and
//! returns the server without running it, so the caller learns the port first.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::{Server, Service};
use actix_web::http::header::{CACHE_CONTROL, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use actix_web::{App, HttpServer, web};
use tether_auth::{Authority, Keyring, Secret};
use tether_domain::{
    Clock, EventFeed, EventSink, SessionManager, Sinks, StoredEvent, SystemClock, TokenAuthority,
};
use tether_persistence::{Database, Options};
use tether_realtime::{Hub, RealtimeConfig, Tickets};

use crate::config::Settings;
use crate::drain::InFlight;
use crate::error::{ApiError, Penalty};
use crate::limits::ConnectionCap;
use crate::mcp::McpEndpoint;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimits;
use crate::routes;
use crate::state::{ApiKey, AppState};

/// Name under which a generated signing secret is kept in the database.
const SECRET_SETTING: &str = "reconnect_signing_secret";

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting that breaks a rule found only when combined with others.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The database.
    #[error("database: {0}")]
    Database(#[from] tether_persistence::Error),
    /// The signing keys.
    #[error("signing keys: {0}")]
    Keys(#[from] tether_auth::Error),
    /// The dashboards' hub.
    #[error("live monitoring: {0}")]
    Realtime(#[from] tether_realtime::Error),
    /// The listener.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Logs each lifecycle event as one line (the hub, the other sink, fans events out to dashboards).
struct LogEvents;

impl EventSink for LogEvents {
    fn publish(&self, stored: &StoredEvent) {
        let event = &stored.event;
        tracing::info!(
            target: "tether::events",
            seq = stored.seq,
            r#type = event.kind.as_str(),
            session_id = %event.session_id,
            status = event.status.as_str(),
            data = %event.data(),
            "session event"
        );
    }
}

/// A started service.
pub struct Application {
    server: Server,
    addr: SocketAddr,
    generated_api_key: Option<String>,
    sweeper: tokio::task::JoinHandle<()>,
    hub: Hub,
    inflight: InFlight,
    drain_timeout: Duration,
    mcp_cancel: rmcp_actix_web::transport::CancellationToken,
}

fn realtime_config(settings: &Settings) -> RealtimeConfig {
    RealtimeConfig {
        queue_capacity: settings.ws.queue_capacity,
        max_buffered_bytes: settings.ws.max_buffered_bytes,
        health_interval: Duration::from_millis(settings.ws.health_interval_ms),
        ping_interval: Duration::from_secs(settings.ws.ping_interval_secs),
        ..RealtimeConfig::default()
    }
}

/// The configured origins, or the service's own: what a page served from this address would send.
fn allowed_origins(settings: &Settings, addr: SocketAddr) -> Vec<String> {
    let configured: Vec<String> = settings.origins().map(str::to_owned).collect();
    if !configured.is_empty() {
        return configured;
    }
    let mut own = vec![format!("http://{addr}")];
    if addr.ip().is_loopback() {
        own.push(format!("http://localhost:{}", addr.port()));
    }
    own
}

fn random_hex(bytes: usize) -> Result<String, StartError> {
    Ok(Secret::generate()
        .map_err(StartError::Keys)?
        .to_hex()
        .chars()
        .take(bytes * 2)
        .collect())
}

async fn signing_secret(settings: &Settings, db: &Database) -> Result<Secret, StartError> {
    if !settings.auth.secret.is_empty() {
        return Ok(Secret::new(settings.auth.secret.as_bytes().to_vec())?);
    }
    // Stored once, shared by every instance and restart on this database: a per-process random
    // secret (the legacy behaviour) makes instances reject each other's tokens.
    let candidate = Secret::generate()?.to_hex();
    let stored = db.setting_or_insert(SECRET_SETTING, &candidate).await?;
    Ok(Secret::from_hex(&stored)?)
}

impl Application {
    /// Connects, migrates, wires the manager and binds the listener.
    ///
    /// # Errors
    /// [`StartError`] with the reason, for one line on stderr.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        // Session counts are reused for as long as a dashboard's summary is.
        let metrics = Arc::new(Metrics::new(
            settings.metrics.open,
            Duration::from_millis(settings.ws.health_interval_ms),
        ));
        let db = Database::connect(
            &settings.database.url,
            Options {
                max_connections: settings.database.max_connections,
                timeout: Duration::from_millis(settings.database.timeout_ms),
            },
        )
        .await?
        .with_call_observer(metrics.call_observer());

        let lifetime = settings.token_lifetime();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut keyring = Keyring::new(signing_secret(&settings, &db).await?);
        for retired in settings.retired_secrets() {
            keyring = keyring.with_retired(
                Secret::new(retired.as_bytes().to_vec())?,
                clock.now().plus(lifetime),
            )?;
        }
        let authority: Arc<dyn TokenAuthority> = Arc::new(Authority::new(
            keyring,
            settings.auth.issuer.clone(),
            settings.auth.audience.clone(),
            lifetime,
        )?);
        let policy = settings
            .policy()
            .map_err(|e| StartError::Config(e.to_string()))?;
        let config_error = |e: tether_domain::Error| StartError::Config(e.to_string());

        // The hub reads the outbox, and the store for its health summary (the newest sessions and
        // the counts); the one manager tells it of each commit through its sink.
        let feed: Arc<dyn EventFeed> = Arc::new(db.clone());
        let hub = Hub::start(
            feed,
            Arc::new(db.clone()),
            clock.clone(),
            realtime_config(&settings),
        )
        .await?;
        let sinks = Sinks(vec![Arc::new(LogEvents), Arc::new(hub.clone())]);
        let manager = SessionManager::new(
            Arc::new(db.clone()),
            authority,
            Arc::new(sinks),
            clock.clone(),
            policy,
        )
        .map_err(config_error)?
        .with_observer(metrics.observer());
        metrics.watch(hub.clone(), db.clone());

        let (api_key, generated_api_key) = if settings.auth.api_key.is_empty() {
            let key = random_hex(24)?;
            (ApiKey::new(key.clone()), Some(key))
        } else {
            (ApiKey::new(settings.auth.api_key.clone()), None)
        };

        let listener =
            TcpListener::bind(&settings.server.bind).map_err(|source| StartError::Bind {
                addr: settings.server.bind.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: settings.server.bind.clone(),
            source,
        })?;

        let origins = allowed_origins(&settings, addr);
        let mcp_origins: Vec<String> = settings.mcp_origins().map(str::to_owned).collect();
        let mcp_cancel = rmcp_actix_web::transport::CancellationToken::new();
        let mcp = McpEndpoint::new(
            manager.clone(),
            &settings,
            addr,
            if mcp_origins.is_empty() {
                origins.clone()
            } else {
                mcp_origins
            },
            mcp_cancel.clone(),
        );

        let limits = RateLimits::new(&settings.limits);
        let state = web::Data::new(AppState {
            manager: manager.clone(),
            db: db.clone(),
            api_key,
            expires_in_minutes: settings.auth.token_expiry_minutes,
            hub: hub.clone(),
            tickets: Tickets::new(clock, Duration::from_secs(settings.ws.ticket_ttl_secs)),
            allowed_origins: origins,
            limits: limits.clone(),
            ticket_ttl: Duration::from_secs(settings.ws.ticket_ttl_secs),
            metrics: metrics.clone(),
        });

        let inflight = InFlight::default();
        let counted = inflight.clone();
        let body_timeout = Duration::from_millis(settings.server.body_timeout_ms);
        let cap = ConnectionCap::new(settings.server.max_connections_per_ip);
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        };
        let server = HttpServer::new(move || {
            let counted = counted.clone();
            let metrics = metrics.clone();
            App::new()
                .app_data(state.clone())
                .app_data(web::QueryConfig::default().error_handler(|e, _| {
                    ApiError::BadRequest(format!("bad query string: {e}")).into()
                }))
                .wrap_fn(move |mut req, srv| {
                    let in_flight = counted.enter();
                    let metrics = metrics.clone();
                    crate::limits::body_deadline(
                        &mut req,
                        tokio::time::Instant::now() + body_timeout,
                    );
                    let started = Instant::now();
                    let method = req.method().clone();
                    // The path only: the query string may carry a WebSocket ticket.
                    let path = req.path().to_owned();
                    tracing::debug!(%method, %path, "request started");
                    let fut = srv.call(req);
                    async move {
                        let res = fut.await;
                        drop(in_flight);
                        // An error a service returns instead of a response (an extractor's or a
                        // scope's refusal, e.g. /mcp's 401) is answered with the response it
                        // renders to, given the same headers, log line and metrics as any other.
                        let mut answer = match res {
                            Ok(res) => Answer::Response(res),
                            Err(e) => Answer::Error(e.error_response(), e),
                        };
                        // A refusal of an address over its budget waits first: the in-flight
                        // guard is gone, so shutdown never waits for it.
                        let penalty = answer.response().extensions().get::<Penalty>().map(|p| p.0);
                        if let Some(p) = penalty {
                            tokio::time::sleep(p).await;
                        }
                        // Responses carry tokens, tickets and session data: never cached, never
                        // sniffed into another type.
                        let headers = answer.headers_mut();
                        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
                        // The route's pattern, never the raw path (one series per session id).
                        // An error returned instead of a response carries no request: unmatched.
                        let route = match &answer {
                            Answer::Response(res) => crate::metrics::route_of(res.request()),
                            Answer::Error(..) => None,
                        };
                        let status = answer.response().status();
                        let elapsed = started.elapsed();
                        metrics.request(&method, route, status, elapsed);
                        tracing::info!(
                            %method,
                            %path,
                            status = status.as_u16(),
                            micros = elapsed.as_micros() as u64,
                            "request"
                        );
                        match answer {
                            Answer::Response(res) => Ok(res),
                            Answer::Error(resp, e) => {
                                Err(actix_web::error::InternalError::from_response(e, resp).into())
                            }
                        }
                    }
                })
                .service(mcp.clone().scope())
                .configure(routes::configure)
                .configure(crate::page::configure)
                .default_service(web::to(routes::not_found))
        })
        // Before `listen`: actix takes the hook when it builds the listener's service.
        .on_connect(move |conn, ext| {
            // Admitted connections keep a handle on their socket, so that a dashboard whose client
            // stops reading can be reset (actix-http stops polling it once its buffer is full).
            if cap.on_connect(conn, ext) {
                tether_realtime::on_connect(conn, ext);
            }
        })
        .listen(listener)
        .map_err(|source| StartError::Bind {
            addr: addr.to_string(),
            source,
        })?
        // Signals are ours (see drain.rs); actix's own stop then only has idle connections to close.
        .workers(workers)
        // actix counts connections per worker: the total, split.
        .max_connections(settings.server.max_connections.div_ceil(workers))
        .client_request_timeout(Duration::from_millis(settings.server.header_timeout_ms))
        .keep_alive(match settings.server.keep_alive_secs {
            0 => actix_web::http::KeepAlive::Disabled,
            secs => actix_web::http::KeepAlive::Timeout(Duration::from_secs(secs)),
        })
        .disable_signals()
        // The drain in `run` is the grace period (within `server.shutdown_timeout_secs`); a second
        // one here doubled the time SIGTERM could take.
        .shutdown_timeout(0);
        let server = server.run();

        let sweeper = tokio::spawn(sweep_forever(manager, db, limits, settings.clone()));

        Ok(Self {
            server,
            addr,
            generated_api_key,
            sweeper,
            hub,
            inflight,
            drain_timeout: Duration::from_secs(settings.server.shutdown_timeout_secs),
            mcp_cancel,
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API key generated at start, if none was configured: to be printed once.
    pub fn generated_api_key(&self) -> Option<&str> {
        self.generated_api_key.as_deref()
    }

    /// Serves until SIGTERM/SIGINT, then drains in-flight requests and stops the sweep.
    ///
    /// # Errors
    /// The server's I/O error.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.run(crate::drain::stop_signal()).await
    }

    /// Serves until `stop` resolves; then accepts no new connection, waits (at most
    /// `server.shutdown_timeout_secs`) for the requests in flight to finish, stops the workers, the
    /// sweep and the dashboards' hub.
    ///
    /// # Errors
    /// The server's I/O error.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let result = tokio::select! {
            done = &mut server => done,
            () = stop => {
                // `server.shutdown_timeout_secs` is the whole budget, from the signal to the exit.
                let deadline = tokio::time::Instant::now() + self.drain_timeout;
                handle.pause().await;
                let waiting = self.inflight.count();
                tracing::info!(in_flight = waiting, "stopping: no new connections; draining");
                if tokio::time::timeout_at(deadline, self.inflight.drained()).await.is_err() {
                    tracing::warn!(in_flight = self.inflight.count(), "drain timed out");
                }
                // Ends MCP event streams and dashboards, which would otherwise hold their
                // connections open; the sessions stay in the database and are restored by the next
                // request.
                self.mcp_cancel.cancel();
                if tokio::time::timeout_at(deadline, self.hub.shutdown()).await.is_err() {
                    tracing::warn!("the dashboards' hub did not stop within the budget");
                }
                // What is left are idle connections: actix's own grace is 0 (set in `build`), so
                // this returns at once instead of adding another `shutdown_timeout_secs`.
                handle.stop(true).await;
                server.await
            }
        };
        self.sweeper.abort();
        self.hub.shutdown().await;
        result.unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Runs the idle/reap sweep and the outbox pruning every `sessions.sweep_interval_secs`. Errors are
/// logged and the next tick tries again: a database outage must not end the sweeper.
async fn sweep_forever(
    manager: SessionManager,
    db: Database,
    limits: RateLimits,
    settings: Settings,
) {
    let every = Duration::from_secs(settings.sessions.sweep_interval_secs);
    let retention = Duration::from_secs(settings.events.retention_secs);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        limits.prune();
        match manager.sweep().await {
            Ok(r) if r.idled + r.reaped > 0 => {
                tracing::info!(idled = r.idled, reaped = r.reaped, "sweep");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %tether_domain::error_chain(&e), "sweep failed; retrying next tick")
            }
        }
        let now = SystemClock.now();
        match db
            .prune_events(retention, settings.events.retention_count, now)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "outbox pruned"),
            Err(e) => {
                tracing::warn!(error = %tether_domain::error_chain(&e), "outbox pruning failed; retrying next tick");
            }
        }
    }
}

/// What a request came to: a response, or the response an error renders to.
enum Answer {
    Response(actix_web::dev::ServiceResponse),
    Error(actix_web::HttpResponse, actix_web::Error),
}

impl Answer {
    fn response(&self) -> &actix_web::HttpResponse {
        match self {
            Self::Response(r) => r.response(),
            Self::Error(r, _) => r,
        }
    }

    fn headers_mut(&mut self) -> &mut actix_web::http::header::HeaderMap {
        match self {
            Self::Response(r) => r.headers_mut(),
            Self::Error(r, _) => r.headers_mut(),
        }
    }
}
