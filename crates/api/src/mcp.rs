//! The MCP endpoint at `/mcp`: rmcp's streamable HTTP transport on actix-web (`rmcp-actix-web`),
//! with Tether's durable sessions and session tools (`tether-mcp`), behind the API key.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{Scope, web};
use rmcp_actix_web::transport::{CancellationToken, LocalSessionManager, StreamableHttpService};
use tether_domain::SessionManager;
use tether_mcp::{DurableSessionManager, McpSessions, SessionTools, TetherServer};

use crate::config::Settings;
use crate::error::ApiError;
use crate::state::{AppState, bearer};

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
            .wrap(from_fn(require_key))
    }
}

/// Who may call `/mcp` without the key.
struct McpAccess {
    open_on_loopback: bool,
}

/// The API key, checked before rmcp sees the request (rmcp-actix-web strips `Authorization`
/// before the tools, so nothing downstream can leak it).
async fn require_key(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let keyed = req
        .app_data::<web::Data<AppState>>()
        .zip(bearer(req.request()))
        .is_some_and(|(state, key)| state.api_key.matches(key));
    let open = req
        .app_data::<web::Data<McpAccess>>()
        .is_some_and(|a| a.open_on_loopback)
        && req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    if !(keyed || open) {
        return Err(ApiError::Unauthorized.into());
    }
    next.call(req).await
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
