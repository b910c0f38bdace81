//! Prometheus metrics at `GET /metrics`, in the OpenMetrics text format, through `prometheus-client`
//! (the Prometheus org's Rust client): never hand-formatted text.
//!
//! Where each number comes from, so that a scrape costs nothing on the request path:
//! - outcomes (sessions opened and ended, reconnects by result code, token reuse, tokens minted) are
//!   counters incremented by the domain's [`Observer`] port, called by `SessionManager`, so REST and
//!   MCP are counted alike;
//! - database calls are timed by `tether-persistence`'s [`CallObserver`], at the one place every
//!   call takes a connection;
//! - request latency is observed by the request middleware (`startup.rs`), labelled with the route
//!   *pattern*, never the raw path (one series per session id would grow without bound);
//! - the rest is read when scraped, from counters that already exist: the hub's
//!   [`HubStats`](tether_realtime::HubStats), the pool's
//!   [`PoolStatus`](tether_persistence::PoolStatus), and the sessions per state from the last `health_update` or, without
//!   dashboards, from one count query cached for `ws.health_interval_ms`.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tether_domain::{
    DisconnectReason, Error as DomainError, Observer, ResultCode, SessionManager, StatusCounts,
};
use tether_persistence::{CallObserver, CallOutcome, Database};
use tether_realtime::Hub;

use crate::error::ApiError;
use crate::state::AppState;

/// The content type of what `prometheus_client::encoding::text` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Request latency buckets, in seconds: from a cached answer to the longest database wait.
const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Database call buckets, in seconds: an SQLite read takes tens of microseconds, and no call
/// outlives `database.timeout_ms` (1.5 s by default).
const DB_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The disconnect reasons that get a series of their own; callers may give any text, so every other
/// reason is `other` (a label value per caller-chosen string would grow without bound).
const REASONS: [&str; 5] = ["client_closed", "idle_timeout", "admin", "resumed", "other"];

/// `reason`, as a bounded label value.
fn reason_label(reason: &DisconnectReason) -> &'static str {
    match reason.as_str() {
        DisconnectReason::CLIENT_CLOSED => "client_closed",
        DisconnectReason::IDLE_TIMEOUT => "idle_timeout",
        DisconnectReason::ADMIN => "admin",
        r if r.starts_with(DisconnectReason::RESUMED_PREFIX) => "resumed",
        _ => "other",
    }
}

/// `method`, as a bounded label value (actix accepts any token as a method).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DbErrorLabels {
    operation: &'static str,
    outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

fn db_histogram() -> Histogram {
    Histogram::new(DB_BUCKETS)
}

/// The pattern of the resource a request was routed to, kept as the resource's app data: with its
/// scope's [`RoutePrefix`], the `route` label. Read from the routed request, so labelling a request
/// costs no second route lookup (`HttpRequest::match_pattern` matches the path against the patterns
/// again: a tenth of a reconnect's CPU in the profile, see BENCHMARKS.md).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RoutePattern(pub(crate) &'static str);

/// The path of the scope its resources' [`RoutePattern`]s are relative to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RoutePrefix(pub(crate) &'static str);

/// The `route` label of a request that has been routed: its scope's prefix and its resource's
/// pattern, or `None` when no resource took it.
pub(crate) fn route_of(req: &HttpRequest) -> Option<String> {
    let pattern = req.app_data::<RoutePattern>()?.0;
    let prefix = req.app_data::<RoutePrefix>().map_or("", |p| p.0);
    Some(format!("{prefix}{pattern}"))
}

/// The counters the domain's [`Observer`] moves.
#[derive(Debug, Default)]
struct Outcomes {
    opened: Counter,
    ended: Family<ReasonLabel, Counter>,
    reconnects: Family<ResultLabel, Counter>,
    token_reused: Counter,
    tokens_minted: Counter,
}

impl Observer for Outcomes {
    fn session_opened(&self) {
        self.opened.inc();
    }

    fn session_ended(&self, reason: &DisconnectReason) {
        self.ended
            .get_or_create(&ReasonLabel {
                reason: reason_label(reason),
            })
            .inc();
    }

    fn reconnect(&self, result: ResultCode) {
        self.reconnects
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .inc();
    }

    fn token_reused(&self) {
        self.token_reused.inc();
    }

    fn token_issued(&self) {
        self.tokens_minted.inc();
    }
}

/// What `tether-persistence`'s [`CallObserver`] moves.
#[derive(Debug)]
struct DbCalls {
    duration: Histograms<OperationLabel>,
    errors: Family<DbErrorLabels, Counter>,
}

impl CallObserver for DbCalls {
    fn call(&self, operation: &'static str, elapsed: Duration, outcome: CallOutcome) {
        self.duration
            .get_or_create(&OperationLabel { operation })
            .observe(elapsed.as_secs_f64());
        // A refused duplicate is the caller's mistake (answered 409), not a database error.
        if matches!(outcome, CallOutcome::Unavailable | CallOutcome::Failed) {
            self.errors
                .get_or_create(&DbErrorLabels {
                    operation,
                    outcome: outcome.as_str(),
                })
                .inc();
        }
    }
}

/// What is read when scraped: the hub's and the pool's own counters, and the cached session counts.
#[derive(Debug, Default)]
struct Live {
    /// Set once at start, when the hub and the database exist.
    sources: OnceLock<(Hub, Database)>,
    counts: Mutex<Option<StatusCounts>>,
}

impl Live {
    fn set_counts(&self, counts: StatusCounts) {
        *self.counts.lock().unwrap_or_else(PoisonError::into_inner) = Some(counts);
    }
}

/// One unlabelled constant value.
fn single<M: prometheus_client::encoding::EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> Result<(), std::fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = *self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = counts {
            let mut family = encoder.encode_descriptor(
                "tether_sessions",
                "Sessions per state (stored ones; disconnected sessions stay until removed).",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (status, n) in [
                ("active", c.active),
                ("idle", c.idle),
                ("disconnected", c.disconnected),
            ] {
                let labels = [("status", status)];
                ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let Some((hub, db)) = self.sources.get() else {
            return Ok(());
        };
        let hub = hub.stats();
        single(
            &mut encoder,
            "tether_dashboards_connected",
            "Dashboard WebSocket connections open now.",
            ConstGauge::new(hub.connections as u64),
        )?;
        single(
            &mut encoder,
            "tether_dashboards_dropped_slow_consumer",
            "Dashboards closed with 1013 slow_consumer because they could not keep up.",
            ConstCounter::new(hub.slow_consumers),
        )?;
        single(
            &mut encoder,
            "tether_dashboard_replays",
            "Resuming dashboards (since=) whose replay ran to its resumed message.",
            ConstCounter::new(hub.replays),
        )?;
        single(
            &mut encoder,
            "tether_dashboard_replays_incomplete",
            "Replays answered recovered=false: missed events were pruned, or the position was \
             another outbox's.",
            ConstCounter::new(hub.incomplete_replays),
        )?;
        single(
            &mut encoder,
            "tether_dashboard_buffered_bytes",
            "Bytes held for dashboards and not yet written to their sockets, summed.",
            ConstGauge::new(hub.buffered_bytes as u64),
        )?;
        let pool = db.pool_status();
        single(
            &mut encoder,
            "tether_db_pool_connections_in_use",
            "Pooled database connections lent to a call now.",
            ConstGauge::new(pool.in_use as u64),
        )?;
        single(
            &mut encoder,
            "tether_db_pool_connections_open",
            "Pooled database connections open now.",
            ConstGauge::new(pool.open as u64),
        )?;
        single(
            &mut encoder,
            "tether_db_pool_connections_max",
            "The most pooled database connections (database.max_connections).",
            ConstGauge::new(pool.max as u64),
        )?;
        single(
            &mut encoder,
            "tether_db_pool_waiting_calls",
            "Database calls waiting for a pooled connection now.",
            ConstGauge::new(pool.waiting as u64),
        )
    }
}

/// The registry, and handles on what the rest of the service moves.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    open: bool,
    requests: Histograms<RequestLabels>,
    outcomes: Arc<Outcomes>,
    db_calls: Arc<DbCalls>,
    live: Arc<Live>,
    /// When the session counts were last queried; held across the query, so concurrent scrapes
    /// make one query between them.
    counted_at: tokio::sync::Mutex<Option<Instant>>,
    counts_max_age: Duration,
}

impl Metrics {
    /// Every metric, registered. `open`: `/metrics` needs no API key. Session counts are reused for
    /// `counts_max_age`.
    pub fn new(open: bool, counts_max_age: Duration) -> Self {
        // Help texts registered here end without a period: the encoder adds one.
        let mut registry = Registry::default();
        let outcomes = Arc::new(Outcomes::default());
        // Every bounded label value exists from the start at 0, so that the first increment of each
        // shows as one (a series that appears at 1 hides its first event from `increase`).
        for code in ResultCode::ALL {
            let _ = outcomes.reconnects.get_or_create(&ResultLabel {
                result: code.as_str(),
            });
        }
        for reason in REASONS {
            let _ = outcomes.ended.get_or_create(&ReasonLabel { reason });
        }
        registry.register(
            "tether_sessions_opened",
            "Sessions opened (REST and MCP)",
            outcomes.opened.clone(),
        );
        registry.register(
            "tether_sessions_ended",
            "Sessions ended, by reason: client_closed, idle_timeout (the sweep), admin, resumed \
             (an MCP session that resumed another), other (any other caller-given reason)",
            outcomes.ended.clone(),
        );
        registry.register(
            "tether_reconnects",
            "Reconnect attempts by result code (reconnected is a success), REST and MCP",
            outcomes.reconnects.clone(),
        );
        registry.register(
            "tether_token_reuse_detected",
            "Consumed reconnect tokens presented again; each revoked the session's live token",
            outcomes.token_reused.clone(),
        );
        registry.register(
            "tether_tokens_minted",
            "Reconnect tokens minted for a session (not counting rotations at reconnect)",
            outcomes.tokens_minted.clone(),
        );

        let requests: Histograms<RequestLabels> =
            Family::new_with_constructor(request_histogram as fn() -> Histogram);
        registry.register(
            "tether_http_request_duration_seconds",
            "Time to the response head, by method, route pattern and status",
            requests.clone(),
        );

        let db_calls = Arc::new(DbCalls {
            duration: Family::new_with_constructor(db_histogram as fn() -> Histogram),
            errors: Family::default(),
        });
        registry.register(
            "tether_db_call_duration_seconds",
            "Database calls by operation, pool wait included",
            db_calls.duration.clone(),
        );
        registry.register(
            "tether_db_call_errors",
            "Database calls that failed, by operation and outcome (unavailable or failed)",
            db_calls.errors.clone(),
        );

        let live = Arc::new(Live::default());
        registry.register_collector(Box::new(Arc::clone(&live)));
        Self {
            registry,
            open,
            requests,
            outcomes,
            db_calls,
            live,
            counted_at: tokio::sync::Mutex::new(None),
            counts_max_age,
        }
    }

    /// The observer to give `SessionManager::with_observer`.
    pub fn observer(&self) -> Arc<dyn Observer> {
        self.outcomes.clone()
    }

    /// The observer to give `Database::with_call_observer`.
    pub fn call_observer(&self) -> Arc<dyn CallObserver> {
        self.db_calls.clone()
    }

    /// Reads the hub's and the pool's counters at each scrape from now on.
    pub fn watch(&self, hub: Hub, db: Database) {
        // Set once at start; a second call would change nothing worth reporting.
        let _ = self.live.sources.set((hub, db));
    }

    /// A reconnect refused before it reached the manager (a rate limit, an id no session can
    /// have): counted with the manager's own outcomes.
    pub fn reconnect_refused(&self, code: ResultCode) {
        self.outcomes.reconnect(code);
    }

    /// One answered request. `route` is the matched pattern (`None`: no route matched).
    pub fn request(
        &self,
        method: &Method,
        route: Option<String>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                route: route.unwrap_or_else(|| "unmatched".to_owned()),
                status: status.as_u16(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Whether `/metrics` needs no API key.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Makes the session counts at most `counts_max_age` old: the hub's, when it read them that
    /// recently for dashboards, else one count query, which concurrent scrapes share. A failed
    /// query keeps the previous counts and is not retried before `counts_max_age`.
    async fn refresh_counts(&self, hub: &Hub, manager: &SessionManager) {
        if let Some(counts) = hub.recent_counts(self.counts_max_age) {
            self.live.set_counts(counts);
            return;
        }
        let mut counted_at = self.counted_at.lock().await;
        if counted_at.is_some_and(|at| at.elapsed() < self.counts_max_age) {
            return;
        }
        *counted_at = Some(Instant::now());
        match manager.counts().await {
            Ok(counts) => self.live.set_counts(counts),
            Err(e) => tracing::warn!(
                error = %tether_domain::error_chain(&e),
                "metrics: session counts could not be read; the previous ones are reported"
            ),
        }
    }

    /// The exposition text.
    fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `GET /metrics`: the API key unless `metrics.open`.
pub async fn scrape(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !state.metrics.is_open() {
        crate::state::check_key(&req, &state)?;
    }
    state
        .metrics
        .refresh_counts(&state.hub, &state.manager)
        .await;
    let text = state.metrics.render().map_err(|e| {
        ApiError::Domain(DomainError::Internal(
            format!("metrics could not be encoded: {e}").into(),
        ))
    })?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(text))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    /// The value of the sample line `series` (name with its labels, as written), if present.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
    }

    #[test]
    fn outcomes_are_exact_counters_and_bounded_series() {
        let m = Metrics::new(false, Duration::from_secs(5));
        let o = m.observer();
        let text = m.render().unwrap();
        assert_eq!(
            sample(&text, r#"tether_reconnects_total{result="token_reused"}"#),
            Some(0.0),
            "every result code is there from the start"
        );
        for _ in 0..3 {
            o.reconnect(ResultCode::Reconnected);
        }
        o.reconnect(ResultCode::TokenExpired);
        o.session_opened();
        o.session_ended(&DisconnectReason::parse("admin").unwrap());
        o.session_ended(&DisconnectReason::parse("bored").unwrap());
        o.session_ended(&DisconnectReason::parse("tired").unwrap());
        o.session_ended(&DisconnectReason::resumed_as(
            &tether_domain::SessionId::parse("x").unwrap(),
        ));
        o.token_reused();
        o.token_issued();
        let text = m.render().unwrap();
        for (series, want) in [
            (r#"tether_reconnects_total{result="reconnected"}"#, 3.0),
            (r#"tether_reconnects_total{result="token_expired"}"#, 1.0),
            ("tether_sessions_opened_total", 1.0),
            (r#"tether_sessions_ended_total{reason="admin"}"#, 1.0),
            (r#"tether_sessions_ended_total{reason="other"}"#, 2.0),
            (r#"tether_sessions_ended_total{reason="resumed"}"#, 1.0),
            ("tether_token_reuse_detected_total", 1.0),
            ("tether_tokens_minted_total", 1.0),
        ] {
            assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
        }
        assert!(
            !text.contains("bored"),
            "caller-chosen text is never a label"
        );
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
    }

    #[test]
    fn requests_are_labelled_by_pattern_and_bounded_method() {
        let m = Metrics::new(false, Duration::from_secs(5));
        let pattern = Some("/api/mcp/sessions/{id}".to_owned());
        let ms = Duration::from_millis(1);
        m.request(&Method::GET, pattern.clone(), StatusCode::OK, ms);
        m.request(&Method::GET, pattern, StatusCode::OK, ms);
        let odd = Method::from_bytes(b"FROBNICATE").unwrap();
        m.request(&odd, None, StatusCode::NOT_FOUND, ms);
        let text = m.render().unwrap();
        let count = |labels: &str| {
            sample(
                &text,
                &format!("tether_http_request_duration_seconds_count{{{labels}}}"),
            )
        };
        assert_eq!(
            count(r#"method="GET",route="/api/mcp/sessions/{id}",status="200""#),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            count(r#"method="other",route="unmatched",status="404""#),
            Some(1.0)
        );
    }

    #[test]
    fn database_errors_exclude_conflicts() {
        let m = Metrics::new(false, Duration::from_secs(5));
        let calls = m.call_observer();
        let ms = Duration::from_millis(1);
        calls.call("insert", ms, CallOutcome::Ok);
        calls.call("insert", ms, CallOutcome::Conflict);
        calls.call("get", ms, CallOutcome::Unavailable);
        let text = m.render().unwrap();
        assert_eq!(
            sample(
                &text,
                r#"tether_db_call_duration_seconds_count{operation="insert"}"#
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"tether_db_call_errors_total{operation="get",outcome="unavailable"}"#
            ),
            Some(1.0)
        );
        assert!(!text.contains(r#"outcome="conflict""#), "{text}");
    }

    #[test]
    fn session_counts_are_reported_once_known() {
        let m = Metrics::new(false, Duration::from_secs(5));
        assert!(!m.render().unwrap().contains("tether_sessions{"));
        m.live.set_counts(StatusCounts {
            active: 2,
            idle: 1,
            disconnected: 4,
        });
        let text = m.render().unwrap();
        assert_eq!(
            sample(&text, r#"tether_sessions{status="active"}"#),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, r#"tether_sessions{status="idle"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"tether_sessions{status="disconnected"}"#),
            Some(4.0)
        );
    }
}
