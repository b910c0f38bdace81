//! The MCP endpoint at `/mcp`: rmcp's streamable HTTP transport on actix-web (`rmcp-actix-web`),
//! with Tether's durable sessions and session tools (`tether-mcp`), behind the API key.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpMessage as _, HttpResponse, Scope, web};
use futures_util::StreamExt as _;
use rmcp_actix_web::transport::{CancellationToken, LocalSessionManager, StreamableHttpService};
use tether_domain::SessionManager;
use tether_mcp::{DurableSessionManager, McpSessions, SessionTools, TetherServer};

use crate::config::Settings;
use crate::error::ApiError;
use crate::state::{AppState, check_key};

/// Largest MCP request body, as for the REST API.
const MAX_BODY: usize = 64 * 1024;

/// The service shared by every worker (one in-memory session table per process).
#[derive(Clone)]
pub struct McpEndpoint {
    service: StreamableHttpService<TetherServer, DurableSessionManager<LocalSessionManager>>,
    open_on_loopback: bool,
}

impl McpEndpoint {
    /// Builds the endpoint. `cancel` ends every open stream and session worker at shutdown (the
    /// Tether sessions stay: the next request, here or on another instance, restores them).
    pub fn new(
        manager: SessionManager,
        settings: &Settings,
        addr: SocketAddr,
        allowed_origins: Vec<String>,
        cancel: CancellationToken,
    ) -> Self {
        let sessions = McpSessions::new(manager);
        let tools = SessionTools::new(sessions.clone());
        let service = StreamableHttpService::builder()
            .service_factory(Arc::new(move || Ok(TetherServer::new(&tools))))
            .session_manager(Arc::new(DurableSessionManager::new(
                LocalSessionManager::default(),
                sessions.clone(),
            )))
            .session_store(sessions.store())
            .stateful_mode(true)
            .json_response(true)
            .max_request_body_bytes(MAX_BODY)
            .allowed_hosts(allowed_hosts(settings, addr))
            .allowed_origins(allowed_origins)
            .cancellation_token(cancel)
            .build();
        Self {
            service,
            open_on_loopback: settings.mcp.open_on_loopback,
        }
    }

    /// The `/mcp` scope for one worker (clone the endpoint for each).
    pub fn scope(
        self,
    ) -> Scope<
        impl actix_web::dev::ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<impl MessageBody>,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        let open_on_loopback = self.open_on_loopback;
        self.service
            .scope_with_path("/mcp")
            .app_data(web::Data::new(McpAccess { open_on_loopback }))
            // rmcp's resources are not ours to label: the endpoint is one route.
            .app_data(crate::metrics::RoutePattern("/mcp"))
            .wrap(from_fn(require_key))
    }
}

/// Who may call `/mcp` without the key.
struct McpAccess {
    open_on_loopback: bool,
}

/// The API key, checked before rmcp sees the request (rmcp-actix-web strips `Authorization`
/// before the tools, so nothing downstream can leak it); then the body is held to JSON-RPC.
async fn require_key(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<BoxBody>>, actix_web::Error> {
    let open = req
        .app_data::<web::Data<McpAccess>>()
        .is_some_and(|a| a.open_on_loopback)
        && req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    if !open {
        // Answered as a response rather than returned as an error, so that it keeps its request
        // (and with it the route label of the request metrics).
        let refused = match req.app_data::<web::Data<AppState>>() {
            None => Some(ApiError::Unauthorized),
            Some(state) => check_key(req.request(), state).err(),
        };
        if let Some(e) = refused {
            let reply = actix_web::ResponseError::error_response(&e);
            return Ok(req.into_response(reply).map_into_right_body());
        }
    }
    let json_post = req.method() == Method::POST
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
    if json_post {
        let body = match read_body(&mut req).await {
            Ok(body) => body,
            Err(reply) => return Ok(req.into_response(reply).map_into_right_body()),
        };
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            let reply = jsonrpc_error(
                StatusCode::BAD_REQUEST,
                -32700,
                &format!("Parse error: {e}"),
            );
            return Ok(req.into_response(reply).map_into_right_body());
        }
        req.set_payload(Payload::from(body));
    }
    let is_delete = req.method() == Method::DELETE;
    let mut res = next.call(req).await?;
    // rmcp answers a session DELETE with 202; the work is done (the session has ended), and
    // clients such as the Python SDK expect 200 or 204.
    if is_delete && res.status() == StatusCode::ACCEPTED {
        *res.response_mut().status_mut() = StatusCode::NO_CONTENT;
    }
    // rmcp answers 415 when a JSON body is not a JSON-RPC message; the transport spec names 400
    // (with a JSON-RPC error and no id) for input the server cannot accept.
    if json_post && res.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        let reply = jsonrpc_error(
            StatusCode::BAD_REQUEST,
            -32600,
            "Invalid Request: the body is not a JSON-RPC message",
        );
        return Ok(res.into_response(reply).map_into_right_body());
    }
    Ok(res.map_into_boxed_body().map_into_left_body())
}

/// The whole body, at most [`MAX_BODY`] bytes (413 beyond).
async fn read_body(req: &mut ServiceRequest) -> Result<web::Bytes, HttpResponse> {
    let mut payload = req.take_payload();
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            if crate::limits::is_body_timeout(&e) {
                jsonrpc_error(
                    StatusCode::REQUEST_TIMEOUT,
                    -32600,
                    "Invalid Request: the body did not arrive in time",
                )
            } else {
                jsonrpc_error(
                    StatusCode::BAD_REQUEST,
                    -32700,
                    &format!("Parse error: {e}"),
                )
            }
        })?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(jsonrpc_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                -32600,
                &format!("Invalid Request: the body exceeds {MAX_BODY} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A JSON-RPC error response without an id (the request could not be read).
fn jsonrpc_error(status: StatusCode, code: i64, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": code, "message": message },
    }))
}

/// DNS-rebinding protection: the configured hosts, or the loopback names plus the bound address.
fn allowed_hosts(settings: &Settings, addr: SocketAddr) -> Vec<String> {
    let configured: Vec<String> = settings.mcp_hosts().map(str::to_owned).collect();
    if !configured.is_empty() {
        return configured;
    }
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|h| (*h).to_owned())
        .collect();
    let ip = addr.ip();
    if !ip.is_loopback() && !ip.is_unspecified() {
        hosts.push(ip.to_string());
    }
    hosts
}
