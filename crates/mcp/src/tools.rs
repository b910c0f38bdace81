//! The session tools, as a router any rmcp server merges into its own.
//!
//! Who is calling: on the stateful path (protocol versions up to 2025-11-25) the request carries a
//! [`ProtocolSession`] and the tools act on the session it is bound to, never another. Clients of
//! the 2026-07-28 revision have no protocol session; they hold a handle from `open_session` and
//! pass `session_id` together with the session's *current reconnect token*, which is checked like a
//! reconnect (without consuming it). The handle alone is not a credential.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rmcp::ErrorData;
use rmcp::handler::server::router::tool::{ToolRoute, ToolRouter};
use rmcp::handler::server::tool::{ToolCallContext, parse_json_object};
use rmcp::model::{CallToolResponse, CallToolResult, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tether_domain::{
    DisconnectReason, Error as DomainError, Metadata, NewSession, ResultCode, Session, SessionId,
    SessionView,
};

use crate::sessions::{MCP_METADATA_KEY, McpSessions, ProtocolSession};

/// Arguments of `session_info`, `get_reconnect_token` and `end_session`: nothing inside a protocol
/// session; `session_id` and `token` without one.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HandleArgs {
    /// The session handle (from `open_session`). Inside a protocol session it may be left out; if
    /// given it must be the caller's own session.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The session's current reconnect token: the credential when there is no protocol session.
    #[serde(default)]
    pub token: Option<String>,
}

/// Arguments of `reconnect_session`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconnectArgs {
    /// The session to resume.
    pub session_id: String,
    /// Its single-use reconnect token.
    pub token: String,
}

/// Arguments of `open_session`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenArgs {
    /// Kind of client (default: the `clientInfo` name, else `mcp-client`).
    #[serde(default)]
    pub client_type: Option<String>,
    /// Its version.
    #[serde(default)]
    pub client_version: Option<String>,
    /// Who owns the session.
    #[serde(default)]
    pub principal: Option<String>,
    /// A JSON object of at most 16 KiB; the key `mcp` is reserved.
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
}

/// A session, as the REST API shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SessionInfo {
    /// Its id.
    pub session_id: String,
    /// Kind of client.
    pub client_type: String,
    /// Client version.
    pub client_version: Option<String>,
    /// Who owns the session, when known.
    pub principal: Option<String>,
    /// `active`, `idle` or `disconnected`.
    pub status: String,
    /// When it was opened (RFC 3339 UTC).
    pub connected_at: String,
    /// Last activity (RFC 3339 UTC).
    pub last_activity: String,
    /// When it ended.
    pub disconnected_at: Option<String>,
    /// Why it ended.
    pub disconnect_reason: Option<String>,
    /// Successful reconnects so far.
    pub reconnect_count: u64,
    /// Extra data.
    pub metadata: Map<String, Value>,
}

impl From<&Session> for SessionInfo {
    fn from(s: &Session) -> Self {
        let v = SessionView::from(s);
        Self {
            session_id: v.session_id,
            client_type: v.client_type,
            client_version: v.client_version,
            principal: v.principal,
            status: v.status.to_owned(),
            connected_at: v.connected_at,
            last_activity: v.last_activity,
            disconnected_at: v.disconnected_at,
            disconnect_reason: v.disconnect_reason,
            reconnect_count: v.reconnect_count,
            metadata: s.metadata().as_map().clone(),
        }
    }
}

/// A newly minted reconnect token (`get_reconnect_token`, `open_session`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct TokenGrant {
    /// The session it belongs to.
    pub session_id: String,
    /// The token; it replaces any earlier one.
    pub reconnect_token: String,
    /// Its lifetime.
    pub expires_in_minutes: u64,
    /// The session's status.
    pub status: String,
}

/// A successful `reconnect_session`, shaped like the REST reconnect answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Resumed {
    /// Always true.
    pub success: bool,
    /// The resumed session.
    pub session_id: String,
    /// `Session reconnected`.
    pub message: String,
    /// Successful reconnects so far, this one included.
    pub reconnect_count: u64,
    /// The rotated token: the one presented is spent.
    pub reconnect_token: String,
    /// Its lifetime.
    pub expires_in_minutes: u64,
}

/// A failed tool call: the result code of the contract and a human text. Sent as structured
/// content of a tool error (`isError: true`).
#[derive(Debug)]
struct ToolError {
    code: &'static str,
    detail: String,
}

impl ToolError {
    fn invalid(detail: impl Into<String>) -> Self {
        Self {
            code: "invalid_request",
            detail: detail.into(),
        }
    }

    /// The REST reconnect's wording: every failed reconnect says `Reconnection failed: <code>`.
    fn reconnect(e: DomainError) -> Self {
        let mut err = Self::from(e);
        if err.code != "invalid_request" {
            err.detail = format!("Reconnection failed: {}", err.code);
        }
        err
    }

    fn into_result(self) -> CallToolResult {
        CallToolResult::structured_error(json!({
            "success": false,
            "code": self.code,
            "detail": self.detail,
        }))
    }
}

impl From<DomainError> for ToolError {
    fn from(e: DomainError) -> Self {
        let (code, detail) = match &e {
            DomainError::Invalid { .. } => ("invalid_request", e.to_string()),
            DomainError::AlreadyExists => ("session_exists", "Session already exists".into()),
            DomainError::Reconnect(c) => {
                (c.as_str(), format!("Reconnection failed: {}", c.as_str()))
            }
            DomainError::NotFound
            | DomainError::AlreadyDisconnected
            | DomainError::Unavailable(_)
            | DomainError::Internal(_)
            | DomainError::Policy(_) => {
                let code = e.code().unwrap_or(ResultCode::InternalError);
                if code == ResultCode::InternalError {
                    tracing::error!(error = %tether_domain::error_chain(&e), "mcp tool failed");
                }
                let detail = match code {
                    ResultCode::SessionNotFound => "Session not found",
                    ResultCode::SessionAlreadyDisconnected => "Session already disconnected",
                    ResultCode::DatabaseUnavailable => "Database unavailable",
                    _ => "Internal error",
                };
                (code.as_str(), detail.to_owned())
            }
        };
        Self { code, detail }
    }
}

impl From<crate::Error> for ToolError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Session(e) => e.into(),
            crate::Error::Transport(_) => DomainError::Internal(Box::new(e)).into(),
        }
    }
}

/// What a tool knows of its caller, taken from the request before the tool runs.
#[derive(Clone, Debug, Default)]
struct Caller {
    /// The MCP protocol session, on the stateful path only.
    protocol: Option<String>,
    /// The `clientInfo` name of the peer, if it sent one.
    client_name: Option<String>,
}

impl Caller {
    fn of<S>(ctx: &ToolCallContext<'_, S>) -> Self {
        let rc = ctx.request_context();
        Self {
            protocol: rc
                .extensions
                .get::<ProtocolSession>()
                .map(|p| p.id().to_owned()),
            // The request's own `_meta` first (sessionless clients send their clientInfo there;
            // their peer info is rmcp's placeholder), then the session's handshake.
            client_name: rc
                .client_info()
                .map(|i| i.name)
                .filter(|n| !n.trim().is_empty() && n != "rmcp"),
        }
    }
}

type ToolFuture<O> = Pin<Box<dyn Future<Output = Result<O, ToolError>> + Send>>;

/// The session tools over durable MCP sessions. Cheap to clone.
#[derive(Clone)]
pub struct SessionTools {
    sessions: McpSessions,
}

impl SessionTools {
    /// The tools for the sessions of `sessions`.
    pub fn new(sessions: McpSessions) -> Self {
        Self { sessions }
    }

    /// The tools as a router for server type `S`, to merge into the server's own
    /// (`my_router + tools.router()`). The tools never touch `S`.
    pub fn router<S: Send + Sync + 'static>(&self) -> ToolRouter<S> {
        let mut router = ToolRouter::new();
        router.add_route(self.route(
            "session_info",
            "The calling session: id, status, reconnect count, times, client. Inside an MCP \
             session no arguments are needed; without one pass session_id and its current token.",
            true,
            |t, caller, args: HandleArgs| {
                Box::pin(async move { t.session_info(caller, args).await })
            },
        ));
        router.add_route(self.route(
            "get_reconnect_token",
            "Mint a single-use reconnect token for the calling session (it replaces any earlier \
             one). Keep it: after a lost connection or a new MCP session, reconnect_session \
             resumes this session with it.",
            false,
            |t, caller, args: HandleArgs| {
                Box::pin(async move { t.get_reconnect_token(caller, args).await })
            },
        ));
        router.add_route(self.route(
            "reconnect_session",
            "Resume a session with its reconnect token. The token is spent and the answer \
             carries the next one; presenting a spent token again revokes the session's tokens. \
             Inside an MCP session, that session acts on the resumed one from then on.",
            false,
            |t, caller, args: ReconnectArgs| {
                Box::pin(async move { t.reconnect_session(caller, args).await })
            },
        ));
        router.add_route(self.route(
            "end_session",
            "End the calling session (reason client_closed). It cannot be resumed afterwards.",
            false,
            |t, caller, args: HandleArgs| {
                Box::pin(async move { t.end_session(caller, args).await })
            },
        ));
        router.add_route(self.route(
            "open_session",
            "Open a new session and get its handle: session_id and a reconnect token. For clients \
             without protocol sessions (MCP 2026-07-28): pass both to the other tools.",
            false,
            |t, caller, args: OpenArgs| Box::pin(async move { t.open_session(caller, args).await }),
        ));
        router
    }

    /// One route: parse the arguments (a bad one is a tool error, as rmcp's own tools answer), run,
    /// and answer structured content matching the output schema, or a structured tool error.
    fn route<S, A, O, F>(
        &self,
        name: &'static str,
        description: &'static str,
        read_only: bool,
        run: F,
    ) -> ToolRoute<S>
    where
        S: Send + Sync + 'static,
        A: DeserializeOwned + JsonSchema + Send + 'static,
        O: Serialize + JsonSchema + 'static,
        F: Fn(SessionTools, Caller, A) -> ToolFuture<O> + Send + Sync + 'static,
    {
        let tool = Tool::new(name, description, Arc::new(Map::new()))
            .with_input_schema::<A>()
            .with_output_schema::<O>()
            .with_annotations(
                ToolAnnotations::new()
                    .read_only(read_only)
                    .destructive(name == "end_session")
                    .idempotent(read_only)
                    .open_world(false),
            );
        let tools = self.clone();
        let run = Arc::new(run);
        ToolRoute::new_dyn(tool, move |ctx: ToolCallContext<'_, S>| {
            let caller = Caller::of(&ctx);
            let args = ctx.arguments.clone().unwrap_or_default();
            let (tools, run) = (tools.clone(), run.clone());
            Box::pin(async move {
                // Bad arguments are a tool error the model can correct (as rmcp's own tools
                // answer), with the contract's shape.
                let args: A = match parse_json_object(args) {
                    Ok(args) => args,
                    Err(e) => {
                        let detail = format!("invalid arguments: {}", e.message);
                        return Ok(ToolError::invalid(detail).into_result().into());
                    }
                };
                let result = match run(tools, caller, args).await {
                    Ok(out) => match serde_json::to_value(out) {
                        Ok(v) => CallToolResult::structured(v),
                        Err(e) => ToolError::from(DomainError::Internal(Box::new(e))).into_result(),
                    },
                    Err(e) => e.into_result(),
                };
                Ok::<CallToolResponse, ErrorData>(result.into())
            })
        })
    }

    fn expires_in_minutes(&self) -> u64 {
        self.sessions.manager().policy().token_lifetime().as_secs() / 60
    }

    /// The session a call acts on: by token when one is given, else the caller's protocol session.
    async fn acting_on(&self, caller: &Caller, args: &HandleArgs) -> Result<Session, ToolError> {
        let manager = self.sessions.manager();
        if let Some(token) = &args.token {
            let raw = args
                .session_id
                .as_deref()
                .ok_or_else(|| ToolError::invalid("session_id is required with token"))?;
            let id = SessionId::parse(raw)?;
            manager.authorize(&id, token).await?;
            // A call by handle is activity of its session, as a request of a protocol session is.
            return Ok(manager.touch(&id).await?);
        }
        let Some(mcp) = &caller.protocol else {
            return Err(ToolError::invalid(
                "no MCP session on this connection: pass session_id and its current token \
                 (open_session returns both)",
            ));
        };
        let resolved = self
            .sessions
            .resolve(mcp)
            .await?
            .ok_or(DomainError::NotFound)?;
        if let Some(raw) = &args.session_id
            && raw != resolved.bound.id().as_str()
        {
            // Scoped: a session can never act on another without that one's token.
            return Err(DomainError::Reconnect(ResultCode::SessionIdMismatch).into());
        }
        Ok(resolved.bound)
    }

    async fn session_info(
        &self,
        caller: Caller,
        args: HandleArgs,
    ) -> Result<SessionInfo, ToolError> {
        Ok(SessionInfo::from(&self.acting_on(&caller, &args).await?))
    }

    async fn get_reconnect_token(
        &self,
        caller: Caller,
        args: HandleArgs,
    ) -> Result<TokenGrant, ToolError> {
        let session = self.acting_on(&caller, &args).await?;
        let issued = self.sessions.manager().issue_token(session.id()).await?;
        Ok(TokenGrant {
            session_id: session.id().to_string(),
            reconnect_token: issued.token.expose().to_owned(),
            expires_in_minutes: self.expires_in_minutes(),
            status: session.status().as_str().to_owned(),
        })
    }

    async fn reconnect_session(
        &self,
        caller: Caller,
        args: ReconnectArgs,
    ) -> Result<Resumed, ToolError> {
        let id = SessionId::parse(&args.session_id).map_err(ToolError::reconnect)?;
        if let Some(mcp) = &caller.protocol
            && let Some(r) = self.sessions.resolve(mcp).await?
            && r.bound.id() != r.own.id()
            && r.bound.id() != &id
        {
            // Checked before the token is spent: one MCP session resumes at most one other.
            return Err(ToolError::invalid(format!(
                "this MCP session already resumed session {}; open a new MCP session to resume \
                 another",
                r.bound.id()
            )));
        }
        let done = self
            .sessions
            .manager()
            .reconnect(&id, &args.token)
            .await
            .map_err(ToolError::reconnect)?;
        if let Some(mcp) = &caller.protocol {
            self.sessions.bind(mcp, &id).await?;
        }
        Ok(Resumed {
            success: true,
            session_id: id.to_string(),
            message: "Session reconnected".into(),
            reconnect_count: done.session.reconnect_count(),
            reconnect_token: done.token.token.expose().to_owned(),
            expires_in_minutes: self.expires_in_minutes(),
        })
    }

    async fn end_session(
        &self,
        caller: Caller,
        args: HandleArgs,
    ) -> Result<SessionInfo, ToolError> {
        let session = self.acting_on(&caller, &args).await?;
        let ended = self
            .sessions
            .manager()
            .disconnect(session.id(), DisconnectReason::client_closed())
            .await?;
        Ok(SessionInfo::from(&ended))
    }

    async fn open_session(&self, caller: Caller, args: OpenArgs) -> Result<TokenGrant, ToolError> {
        let metadata = args.metadata.unwrap_or_default();
        if metadata.contains_key(MCP_METADATA_KEY) {
            return Err(ToolError::invalid(format!(
                "invalid metadata: the key '{MCP_METADATA_KEY}' is reserved"
            )));
        }
        let client_type = args
            .client_type
            .or(caller.client_name)
            .unwrap_or_else(|| "mcp-client".to_owned());
        let manager = self.sessions.manager();
        let session = manager
            .open(NewSession {
                session_id: SessionId::parse(&uuid::Uuid::new_v4().to_string())?,
                client_type,
                client_version: args.client_version,
                principal: args.principal,
                metadata: Metadata::parse(Value::Object(metadata))?,
            })
            .await?;
        let issued = manager.issue_token(session.id()).await?;
        Ok(TokenGrant {
            session_id: session.id().to_string(),
            reconnect_token: issued.token.expose().to_owned(),
            expires_in_minutes: self.expires_in_minutes(),
            status: session.status().as_str().to_owned(),
        })
    }
}
