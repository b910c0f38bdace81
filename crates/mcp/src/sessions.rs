//! How an MCP protocol session maps onto a Tether session, through the registry alone.
//!
//! At `initialize` the MCP session id *is* a new Tether session's id, marked as an MCP session by
//! the `mcp` key of its metadata (protocol version and client capabilities, what a restore needs to
//! replay the handshake). A fresh MCP session that resumes an older Tether session with its token
//! is from then on *bound* to that session, and its own session ends with the reason
//! `resumed:<target>`: the binding lives in the row, so it survives restarts and is seen by every
//! instance. Nothing here is the only copy of anything; the map below only saves a read.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rmcp::model::{ClientCapabilities, Implementation, InitializeRequestParams, ProtocolVersion};
use rmcp::transport::streamable_http_server::session::{
    SessionState, SessionStore, SessionStoreError,
};
use serde_json::{Map, Value, json};
use tether_domain::{
    DisconnectReason, Error as DomainError, Metadata, NewSession, Session, SessionId,
    SessionManager,
};

use crate::error::Error;

/// Metadata key that marks a Tether session as an MCP protocol session and keeps what a restore
/// needs. Reserved: `open_session` refuses metadata that carries it.
pub const MCP_METADATA_KEY: &str = "mcp";

/// Proof, in a request's extensions, that it arrived inside MCP protocol session `0`. Only
/// [`DurableSessionManager`](crate::DurableSessionManager) inserts it, and only on the stateful
/// path, so a sessionless request cannot claim a session by sending an `Mcp-Session-Id` header.
#[derive(Clone, Debug)]
pub struct ProtocolSession(pub(crate) String);

impl ProtocolSession {
    /// The MCP session id.
    pub fn id(&self) -> &str {
        &self.0
    }
}

/// An MCP session's own row and the live session it is bound to (the same row unless it resumed
/// another).
pub(crate) struct Resolved {
    pub own: Session,
    pub bound: Session,
}

/// The durable side of MCP sessions, over a Tether [`SessionManager`]. Cheap to clone.
#[derive(Clone)]
pub struct McpSessions {
    manager: SessionManager,
    /// MCP session id → the session it resumed. Only non-identity bindings; a cache of what the
    /// `resumed:` reasons in the store say.
    resumed: Arc<RwLock<HashMap<String, SessionId>>>,
}

impl McpSessions {
    /// Durable MCP sessions over `manager` (whose store is the source of truth).
    pub fn new(manager: SessionManager) -> Self {
        Self {
            manager,
            resumed: Arc::default(),
        }
    }

    /// The session use cases.
    pub fn manager(&self) -> &SessionManager {
        &self.manager
    }

    /// The adapter rmcp's streamable HTTP server takes as its `session_store`: it restores a
    /// session id unknown to this process from the registry instead of answering 404.
    pub fn store(&self) -> Arc<dyn SessionStore> {
        Arc::new(Store(self.clone()))
    }

    fn cached(&self, mcp_id: &str) -> Option<SessionId> {
        self.resumed
            .read()
            .ok()
            .and_then(|m| m.get(mcp_id).cloned())
    }

    fn remember(&self, mcp_id: &str, target: SessionId) {
        if let Ok(mut m) = self.resumed.write() {
            m.insert(mcp_id.to_owned(), target);
        }
    }

    pub(crate) fn forget(&self, mcp_id: &str) {
        if let Ok(mut m) = self.resumed.write() {
            m.remove(mcp_id);
        }
    }

    /// Registers the Tether session of a new MCP session, from the client's `initialize`.
    pub(crate) async fn open(
        &self,
        mcp_id: &str,
        params: &InitializeRequestParams,
    ) -> Result<Session, Error> {
        let client = &params.client_info;
        let client_type = if client.name.trim().is_empty() {
            "mcp-client".to_owned()
        } else {
            client.name.clone()
        };
        let client_version = (!client.version.is_empty()).then(|| client.version.clone());
        let session = self
            .manager
            .open(NewSession {
                session_id: SessionId::parse(mcp_id)?,
                client_type,
                client_version,
                principal: None,
                metadata: handshake_metadata(params),
            })
            .await?;
        Ok(session)
    }

    /// The MCP session's own row and the live session it is bound to; `None` when it is not an
    /// MCP session, unknown, or ended.
    pub(crate) async fn resolve(&self, mcp_id: &str) -> Result<Option<Resolved>, Error> {
        let Ok(own_id) = SessionId::parse(mcp_id) else {
            return Ok(None);
        };
        let Some(own) = found(self.manager.get(&own_id).await)? else {
            return Ok(None);
        };
        if !own.metadata().as_map().contains_key(MCP_METADATA_KEY) {
            return Ok(None);
        }
        if !own.is_disconnected() {
            return Ok(Some(Resolved {
                bound: own.clone(),
                own,
            }));
        }
        let target = self.cached(mcp_id).or_else(|| {
            own.disconnect_reason()
                .and_then(DisconnectReason::resumed_target)
        });
        let Some(target) = target else {
            return Ok(None);
        };
        match found(self.manager.get(&target).await)? {
            Some(bound) if !bound.is_disconnected() => {
                self.remember(mcp_id, target);
                Ok(Some(Resolved { own, bound }))
            }
            _ => {
                self.forget(mcp_id);
                Ok(None)
            }
        }
    }

    /// The id of the session an MCP session acts on: its own, or the one it resumed.
    pub(crate) fn bound_id(&self, mcp_id: &str) -> Option<SessionId> {
        self.cached(mcp_id)
            .or_else(|| SessionId::parse(mcp_id).ok())
    }

    /// Records activity on the session `mcp_id` acts on (a heartbeat: written at most once per
    /// `Policy::activity_interval`). `false` when that session has ended or is unknown: the MCP
    /// session is over.
    pub(crate) async fn touch(&self, mcp_id: &str) -> Result<bool, Error> {
        let Some(id) = self.bound_id(mcp_id) else {
            return Ok(false);
        };
        if self.manager.heartbeat(&id).await? {
            return Ok(true);
        }
        // Its own row may have ended because it resumed another session (after a restart the map
        // is empty): the store says which.
        match self.resolve(mcp_id).await? {
            Some(r) if r.bound.id() != &id => self.touch_resolved(&r).await,
            _ => {
                self.forget(mcp_id);
                Ok(false)
            }
        }
    }

    async fn touch_resolved(&self, r: &Resolved) -> Result<bool, Error> {
        Ok(self.manager.heartbeat(r.bound.id()).await?)
    }

    /// Binds MCP session `mcp_id` to `target`, which its client has just resumed with a token. Its
    /// own session, a placeholder from the fresh `initialize`, ends as `resumed:<target>`.
    pub(crate) async fn bind(&self, mcp_id: &str, target: &SessionId) -> Result<(), Error> {
        let own = SessionId::parse(mcp_id)?;
        if &own == target {
            return Ok(());
        }
        self.remember(mcp_id, target.clone());
        match self
            .manager
            .disconnect(&own, DisconnectReason::resumed_as(target))
            .await
        {
            Ok(_) | Err(DomainError::AlreadyDisconnected | DomainError::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Ends the session `mcp_id` acts on (`client_closed`): the client sent HTTP `DELETE`.
    pub(crate) async fn end(&self, mcp_id: &str) -> Result<(), Error> {
        let resolved = self.resolve(mcp_id).await?;
        self.forget(mcp_id);
        let Some(r) = resolved else {
            return Ok(());
        };
        match self
            .manager
            .disconnect(r.bound.id(), DisconnectReason::client_closed())
            .await
        {
            Ok(_) | Err(DomainError::AlreadyDisconnected | DomainError::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// `Ok(None)` for a missing session, other errors as they are.
fn found(r: Result<Session, DomainError>) -> Result<Option<Session>, Error> {
    match r {
        Ok(s) => Ok(Some(s)),
        Err(DomainError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What a restore needs to replay the handshake: the protocol version and the client's
/// capabilities (dropped if they would not fit the metadata bound).
fn handshake_metadata(params: &InitializeRequestParams) -> Metadata {
    let version = serde_json::to_value(&params.protocol_version).unwrap_or(Value::Null);
    let capabilities = serde_json::to_value(&params.capabilities).unwrap_or(Value::Null);
    let full =
        json!({ MCP_METADATA_KEY: { "protocol_version": version, "capabilities": capabilities } });
    Metadata::parse(full).unwrap_or_else(|_| {
        let mut map = Map::new();
        map.insert(
            MCP_METADATA_KEY.into(),
            json!({ "protocol_version": version }),
        );
        Metadata::parse(Value::Object(map)).unwrap_or_default()
    })
}

/// The `initialize` to replay for a restored session, rebuilt from its row.
fn replayed_handshake(own: &Session) -> InitializeRequestParams {
    let mcp = own.metadata().as_map().get(MCP_METADATA_KEY);
    let capabilities: ClientCapabilities = mcp
        .and_then(|m| m.get("capabilities"))
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default();
    let version: Option<ProtocolVersion> = mcp
        .and_then(|m| m.get("protocol_version"))
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let params = InitializeRequestParams::new(
        capabilities,
        Implementation::new(own.client_type(), own.client_version().unwrap_or_default()),
    );
    match version {
        Some(v) => params.with_protocol_version(v),
        None => params,
    }
}

/// rmcp's `SessionStore` over the registry.
struct Store(McpSessions);

#[async_trait::async_trait]
impl SessionStore for Store {
    /// A live MCP session (or one bound to a live session) is restored; its request counts as
    /// activity like any other.
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        let Some(r) = self.0.resolve(session_id).await? else {
            return Ok(None);
        };
        if !self.0.touch_resolved(&r).await? {
            return Ok(None);
        }
        Ok(Some(SessionState::new(replayed_handshake(&r.own))))
    }

    /// Nothing to do: the session was registered when its `initialize` was accepted, where a
    /// failure can still refuse the handshake (rmcp only logs a failed `store`).
    async fn store(&self, _: &str, _: &SessionState) -> Result<(), SessionStoreError> {
        Ok(())
    }

    /// HTTP `DELETE` of the MCP session: the client ends it.
    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        Ok(self.0.end(session_id).await?)
    }
}
