//! The HTTP routes under `/api/mcp`. Handlers translate between the wire and the domain and nothing
//! more: rules live in `SessionManager`, and events are emitted there, never here.

use actix_web::{HttpRequest, HttpResponse, web};
use tether_domain::{
    DisconnectReason, Error as DomainError, ListQuery, Metadata, NewSession, ResultCode, SessionId,
    SessionStatus, SessionView,
};

use crate::dto::{self, SessionList};
use crate::error::ApiError;
use crate::metrics::{RoutePattern, RoutePrefix};
use crate::openapi as doc;
use crate::state::{AppState, Authorized};

/// Default page size of `GET /sessions`.
const DEFAULT_PAGE: u32 = 50;

/// Mounts every route. Each path is one resource: a method it does not serve answers 405 with
/// `Allow`, and `HEAD` works wherever `GET` does.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/mcp")
            .app_data(RoutePrefix("/api/mcp"))
            .service(resource("/health", "GET, HEAD").route(read().to(health)))
            .service(
                resource("/sessions", "GET, HEAD, POST")
                    .route(web::post().to(create))
                    .route(read().to(list)),
            )
            .service(
                resource("/sessions/{id}", "GET, HEAD, DELETE")
                    .route(read().to(get))
                    .route(web::delete().to(disconnect)),
            )
            .service(resource("/sessions/{id}/activity", "POST").route(web::post().to(activity)))
            .service(
                resource("/sessions/{id}/token", "GET, HEAD, POST")
                    .route(read().to(token))
                    .route(web::post().to(token)),
            )
            .service(resource("/sessions/{id}/reconnect", "POST").route(web::post().to(reconnect)))
            .service(resource("/ws/ticket", "POST").route(web::post().to(ws_ticket)))
            .service(resource("/ws/sessions", "GET").route(web::get().to(ws_sessions)))
            .configure(crate::openapi::configure),
    );
    // At the root, where Prometheus looks by default.
    cfg.service(resource("/metrics", "GET, HEAD").route(read().to(crate::metrics::scrape)));
}

/// A path whose other methods answer 405 naming the `allow`ed ones, labelled with its pattern in
/// the request metrics.
pub(crate) fn resource(path: &'static str, allow: &'static str) -> actix_web::Resource {
    web::resource(path)
        .app_data(RoutePattern(path))
        .default_service(web::to(move || async move {
            Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allow))
        }))
}

/// `GET`, and `HEAD` (actix sends the head without the body).
pub(crate) fn read() -> actix_web::Route {
    web::route().guard(actix_web::guard::Any(actix_web::guard::Get()).or(actix_web::guard::Head()))
}

/// Answer for any route that does not exist.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoRoute)
}

type Reply = Result<HttpResponse, ApiError>;

fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    Ok(SessionId::parse(raw)?)
}

/// Whether the service and its database are up.
#[utoipa::path(
    get,
    path = "/api/mcp/health",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Up; the database answers.", body = dto::Health),
        (status = 503, description = "The database does not answer: `status` is `degraded`.", body = dto::Health),
    )
)]
async fn health(state: web::Data<AppState>) -> HttpResponse {
    let backend = match state.db.backend() {
        tether_persistence::Backend::Sqlite => "sqlite",
        tether_persistence::Backend::Postgres => "postgres",
    };
    let (mut reply, status, database) = match state.db.ping().await {
        Ok(()) => (HttpResponse::Ok(), "ok", "ok"),
        Err(e) => {
            tracing::warn!(error = %tether_domain::error_chain(&e), "health check: database unavailable");
            (
                HttpResponse::ServiceUnavailable(),
                "degraded",
                "unavailable",
            )
        }
    };
    reply.json(dto::Health {
        status,
        database,
        backend,
        version: env!("CARGO_PKG_VERSION"),
        dashboards: state.hub.stats().connections,
    })
}

/// Opens a session (its id is generated when the body gives none).
#[utoipa::path(
    post,
    path = "/api/mcp/sessions",
    tag = "sessions",
    request_body = dto::CreateSession,
    responses(
        (status = 201, description = "The session, opened.", body = SessionView),
        (status = 400, response = doc::InvalidRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 408, response = doc::RequestTimeout),
        (status = 409, response = doc::SessionExists),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 429, response = doc::RateLimited),
        (status = 500, response = doc::InternalError),
        (status = 503, response = doc::DatabaseUnavailable),
    )
)]
async fn create(_: Authorized, state: web::Data<AppState>, body: web::Payload) -> Reply {
    state.limits.session().map_err(ApiError::limited)?;
    let body: dto::CreateSession = dto::require_json(body).await?;
    let session_id = match body.session_id {
        Some(raw) => SessionId::parse(&raw)?,
        None => SessionId::parse(&uuid::Uuid::new_v4().to_string())?,
    };
    let metadata = match body.metadata {
        None | Some(serde_json::Value::Null) => Metadata::default(),
        Some(value) => Metadata::parse(value)?,
    };
    let session = state
        .manager
        .open(NewSession {
            session_id,
            client_type: body.client_type,
            client_version: body.client_version,
            principal: body.principal,
            metadata,
        })
        .await?;
    Ok(HttpResponse::Created().json(SessionView::from(&session)))
}

/// Lists sessions, newest activity first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/mcp/sessions",
    tag = "sessions",
    params(dto::ListParams),
    responses(
        (status = 200, description = "A page; `next_cursor` is null on the last.", body = SessionList),
        (status = 400, response = doc::InvalidRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 429, response = doc::RateLimited),
        (status = 500, response = doc::InternalError),
        (status = 503, response = doc::DatabaseUnavailable),
    )
)]
async fn list(
    _: Authorized,
    state: web::Data<AppState>,
    query: web::Query<dto::ListParams>,
) -> Reply {
    let params = query.into_inner();
    let status = params
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(SessionStatus::parse)
        .transpose()?;
    let after = params
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(tether_domain::Cursor::decode)
        .transpose()?;
    let page = state
        .manager
        .list(ListQuery {
            status,
            limit: params.limit.unwrap_or(DEFAULT_PAGE),
            after,
        })
        .await?;
    Ok(HttpResponse::Ok().json(SessionList {
        sessions: page.sessions.iter().map(SessionView::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

/// Reads a session.
#[utoipa::path(
    get,
    path = "/api/mcp/sessions/{id}",
    tag = "sessions",
    params(dto::SessionPath),
    responses(
        (status = 200, description = "The session.", body = SessionView),
        (status = 400, response = doc::InvalidRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::SessionNotFound),
        (status = 429, response = doc::RateLimited),
        (status = 500, response = doc::InternalError),
        (status = 503, response = doc::DatabaseUnavailable),
    )
)]
async fn get(_: Authorized, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    let session = state.manager.get(&session_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(SessionView::from(&session)))
}

/// A heartbeat: records activity (an idle session becomes active).
#[utoipa::path(
    post,
    path = "/api/mcp/sessions/{id}/activity",
    tag = "sessions",
    params(dto::SessionPath),
    responses(
        (status = 200, description = "The session after the heartbeat.", body = SessionView),
        (status = 400, response = doc::InvalidRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::SessionNotFound),
        (status = 409, response = doc::AlreadyDisconnected),
        (status = 429, response = doc::RateLimited),
        (status = 500, response = doc::InternalError),
        (status = 503, response = doc::DatabaseUnavailable),
    )
)]
async fn activity(_: Authorized, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    let session = state.manager.touch(&session_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(SessionView::from(&session)))
}

/// Ends a session (`reason` defaults to `client_closed`; the prefix `resumed:` is reserved).
#[utoipa::path(
    delete,
    path = "/api/mcp/sessions/{id}",
    tag = "sessions",
    params(dto::SessionPath),
    request_body(content = Option<dto::Disconnect>, description = "Optional: an empty body ends the session as `client_closed`."),
    responses(
        (status = 200, description = "The ended session.", body = SessionView),
        (status = 400, response = doc::InvalidRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::SessionNotFound),
        (status = 408, response = doc::RequestTimeout),
        (status = 409, response = doc::AlreadyDisconnected),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 429, response = doc::RateLimited),
        (status = 500, response = doc::InternalError),
        (status = 503, response = doc::DatabaseUnavailable),
    )
)]
async fn disconnect(
    _: Authorized,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Payload,
) -> Reply {
    let id = session_id(&id)?;
    let body: dto::Disconnect = dto::read_json(body).await?.unwrap_or_default();
    let reason = match body.reason {
        Some(r) => DisconnectReason::parse(&r)?,
        None => DisconnectReason::client_closed(),
    };
    let session = state.manager.disconnect(&id, reason).await?;
    Ok(HttpResponse::Ok().json(SessionView::from(&session)))
}

/// Mints a reconnect token for the session, replacing any earlier one (`GET` and `POST` alike).
#[utoipa::path(
    method(get, post),
    path = "/api/mcp/sessions/{id}/token",
    tag = "sessions",
    params(dto::SessionPath),
    responses(
        (status = 200, description = "The token; the only answer besides a reconnect's that carries one.", body = dto::TokenIssued),
        (status = 400, response = doc::NotActive),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::SessionNotFound),
        (status = 429, response = doc::RateLimited),
        (status = 500, response = doc::InternalError),
        (status = 503, response = doc::DatabaseUnavailable),
    )
)]
async fn token(_: Authorized, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    let id = session_id(&id)?;
    state.limits.token().map_err(ApiError::limited)?;
    let issued = state.manager.issue_token(&id).await.map_err(|e| match e {
        // The legacy contract answers 400 when a token is asked for a session that is not active.
        DomainError::AlreadyDisconnected => ApiError::NotActive,
        other => other.into(),
    })?;
    Ok(HttpResponse::Ok().json(dto::TokenIssued {
        session_id: id.to_string(),
        reconnect_token: issued.token.expose().to_owned(),
        expires_in_minutes: state.expires_in_minutes,
    }))
}

/// No API key: the reconnect token is the credential.
#[utoipa::path(
    post,
    path = "/api/mcp/sessions/{id}/reconnect",
    tag = "reconnect",
    summary = "Resumes a session with its single-use reconnect token.",
    description = "Consumes the token and answers the next one. Presenting a consumed token again \
                   revokes the session's live token too (`token_reused`). An id no session can \
                   have is `session_not_found`, like an unknown one.",
    security(()),
    params(dto::SessionPath),
    request_body = dto::Reconnect,
    responses(
        (status = 200, description = "Resumed; `reconnect_token` replaces the one presented.", body = dto::Reconnected),
        (status = 400, response = doc::InvalidRequest),
        (status = 401, response = doc::ReconnectRefused),
        (status = 404, response = doc::SessionNotFound),
        (status = 408, response = doc::RequestTimeout),
        (status = 409, response = doc::AlreadyDisconnected),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 429, response = doc::RateLimited),
        (status = 500, response = doc::InternalError),
        (status = 503, response = doc::DatabaseUnavailable),
    )
)]
async fn reconnect(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Payload,
) -> Reply {
    // Before anything else: a flood of garbage reconnects costs one limiter check each.
    // Refusals made here, before the manager, are counted with its outcomes.
    let limited = |e| {
        state.metrics.reconnect_refused(ResultCode::RateLimited);
        ApiError::limited(e)
    };
    state
        .limits
        .reconnect_from(state.limits.client(&req))
        .map_err(limited)?;
    // No session can have a malformed id: that is `session_not_found`, like any unknown id.
    let id = SessionId::parse(&id).map_err(|_| {
        state.metrics.reconnect_refused(ResultCode::SessionNotFound);
        ApiError::ReconnectFailed(ResultCode::SessionNotFound)
    })?;
    let body: dto::Reconnect = dto::require_json(body).await?;
    let presented = state
        .manager
        .check_token(&id, &body.token)
        .map_err(ApiError::reconnect)?;
    state.limits.reconnect_of(id.as_str()).map_err(limited)?;
    let done = state
        .manager
        .reconnect_checked(&id, presented)
        .await
        .map_err(ApiError::reconnect)?;
    if done.repeated {
        tracing::info!(session_id = %id, "reconnect retried inside the grace window");
    }
    Ok(HttpResponse::Ok().json(dto::Reconnected {
        success: true,
        session_id: id.to_string(),
        message: "Session reconnected",
        reconnect_count: done.session.reconnect_count(),
        reconnect_token: done.token.token.expose().to_owned(),
        expires_in_minutes: state.expires_in_minutes,
    }))
}

/// A single-use ticket that lets a browser (which cannot set headers on a WebSocket) open the stream.
#[utoipa::path(
    post,
    path = "/api/mcp/ws/ticket",
    tag = "monitoring",
    responses(
        (status = 200, description = "The ticket, for `GET /ws/sessions?ticket=`.", body = dto::WsTicket),
        (status = 401, response = doc::Unauthorized),
        (status = 429, response = doc::RateLimited),
        (status = 500, response = doc::InternalError),
    )
)]
async fn ws_ticket(_: Authorized, state: web::Data<AppState>) -> Reply {
    state.limits.ticket().map_err(ApiError::limited)?;
    let ticket = state.tickets.mint().map_err(|e| match e {
        // A client limit, not a fault: with `limits.tickets_per_key` on it cannot be reached (the
        // rate times the ticket lifetime stays far below the cap); retry once tickets expire.
        tether_realtime::Error::TooManyTickets => {
            ApiError::RateLimited(state.ticket_ttl, std::time::Duration::ZERO)
        }
        other => ApiError::Domain(DomainError::Internal(Box::new(other))),
    })?;
    // Just minted: it lives the configured lifetime (no clock read here).
    Ok(HttpResponse::Ok().json(dto::WsTicket {
        ticket: ticket.as_str().to_owned(),
        expires_in_seconds: state.ticket_ttl.as_secs(),
    }))
}

/// The dashboard stream. Everything is checked before the upgrade, so a refusal is a plain 401/403
/// and never a 101: the Origin (browsers), then the API key or a ticket.
#[utoipa::path(
    get,
    path = "/api/mcp/ws/sessions",
    tag = "monitoring",
    summary = "The dashboards' live stream (a WebSocket upgrade).",
    description = "A WebSocket handshake (`Upgrade: websocket`); a plain request is refused with \
                   400. Every message is one JSON object: `type`, `seq`, `timestamp`, `data` (and \
                   `session_id` for session events). With `since` (or `Last-Event-ID`) the \
                   stream first replays the retained events after that `seq`, then sends \
                   `resumed`. A browser's `Origin` must be in `ws.allowed_origins`.",
    security(("api_key" = []), ("ticket" = [])),
    params(
        ("since" = Option<u64>, Query, description = "Resume after this `seq`."),
        ("Last-Event-ID" = Option<u64>, Header, description = "As `since`, when `since` is absent."),
        ("health" = Option<String>, Query, description = "`full` (the default: `health_update` lists \
            the newest sessions) or `summary` (counts only); anything else is refused with 400."),
    ),
    responses(
        (status = 101, description = "Switching protocols: the stream."),
        (status = 400, response = doc::InvalidRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 403, response = doc::OriginNotAllowed),
        (status = 429, response = doc::RateLimited),
    )
)]
async fn ws_sessions(req: HttpRequest, body: web::Payload, state: web::Data<AppState>) -> Reply {
    if !tether_realtime::origin_allowed(&req, &state.allowed_origins) {
        return Err(ApiError::OriginNotAllowed);
    }
    // Everything that can fail the upgrade is checked before a ticket is spent: a refused
    // handshake or resume point must leave the ticket redeemable.
    actix_http::ws::verify_handshake(req.head())
        .map_err(|e| ApiError::BadRequest(format!("not a WebSocket upgrade request: {e}")))?;
    let options =
        tether_realtime::connect_options(&req).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let client = state.limits.client(&req);
    state.limits.ws_connect(client).map_err(ApiError::limited)?;
    let ticket = web::Query::<dto::WsQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().ticket);
    match ticket {
        // A ticket is the browser's credential: a bad one counts as a failed attempt.
        Some(t) if crate::state::bearer(&req).is_none() => {
            state
                .limits
                .auth_allowed(client)
                .map_err(ApiError::limited)?;
            if !state.tickets.redeem(&t) {
                state
                    .limits
                    .auth_failed(client)
                    .map_err(ApiError::limited)?;
                return Err(ApiError::Unauthorized);
            }
        }
        _ => {
            crate::state::check_key(&req, &state)?;
        }
    }
    state
        .hub
        .connect_with(&req, body, options)
        .await
        .map_err(|e| ApiError::BadRequest(format!("not a WebSocket upgrade: {e}")))
}
