//! A ready-made MCP server whose tools are the session tools: what the `tether` binary serves at
//! `/mcp`. Embedders with their own server merge [`SessionTools::router`] instead.

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use crate::tools::SessionTools;

/// An MCP server offering the session tools and nothing else.
#[derive(Clone)]
pub struct TetherServer {
    router: ToolRouter<TetherServer>,
}

impl TetherServer {
    /// A server with `tools`.
    pub fn new(tools: &SessionTools) -> Self {
        Self {
            router: tools.router(),
        }
    }
}

impl ServerHandler for TetherServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("tether", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Durable MCP sessions. Call get_reconnect_token and keep the token: if this \
                 session is lost (network drop, new connection), reconnect_session resumes it. \
                 Without protocol sessions, open_session returns a session_id and token to pass \
                 to every tool.",
            )
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.router
            .call(ToolCallContext::new(self, request, context))
            .await
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.router.list_all()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.router.get(name).cloned()
    }
}
