//! rmcp's `SessionManager` hook, wrapped: the in-memory session workers stay rmcp's (by default its
//! `LocalSessionManager`), while whether a session exists, is alive and was active is Tether's.

use rmcp::model::{ClientJsonRpcMessage, ClientRequest, GetExtensions, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::EventStore;
use rmcp::transport::streamable_http_server::session::{
    RestoreOutcome, ServerSseMessage, SessionId as McpSessionId, SessionManager as RmcpSessions,
    SessionRestoreMarker,
};
use std::sync::Arc;

use crate::error::Error;
use crate::sessions::{McpSessions, ProtocolSession};

/// An rmcp session manager whose sessions are Tether sessions.
///
/// - `initialize` registers the Tether session (id = MCP session id, `client_type` and
///   `client_version` from `clientInfo`); if that fails the handshake fails.
/// - every request of a session counts as activity, and a session that has ended (its client's
///   `end_session`, the REST API, the reaper) is over: rmcp answers 404.
/// - closing an in-memory worker (shutdown, keep-alive expiry) does **not** end the Tether session:
///   the next request restores it (with [`McpSessions::store`] as rmcp's `session_store`). Only an
///   HTTP `DELETE` ends it.
/// - requests on the stateful path carry a [`ProtocolSession`] extension, which the tools trust
///   to know who is calling.
pub struct DurableSessionManager<M> {
    inner: M,
    sessions: McpSessions,
}

impl<M> DurableSessionManager<M> {
    /// Wraps `inner` (e.g. `LocalSessionManager::default()`).
    pub fn new(inner: M, sessions: McpSessions) -> Self {
        Self { inner, sessions }
    }
}

fn is_restore(message: &ClientJsonRpcMessage) -> bool {
    match message {
        ClientJsonRpcMessage::Request(r) => r
            .request
            .extensions()
            .get::<SessionRestoreMarker>()
            .is_some(),
        ClientJsonRpcMessage::Notification(n) => n
            .notification
            .extensions()
            .get::<SessionRestoreMarker>()
            .is_some(),
        _ => false,
    }
}

impl<M: RmcpSessions> RmcpSessions for DurableSessionManager<M>
where
    M::Error: Sync,
{
    type Error = Error;
    type Transport = M::Transport;

    async fn create_session(&self) -> Result<(McpSessionId, Self::Transport), Error> {
        self.inner.create_session().await.map_err(Error::transport)
    }

    async fn initialize_session(
        &self,
        id: &McpSessionId,
        mut message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Error> {
        if !is_restore(&message)
            && let ClientJsonRpcMessage::Request(r) = &message
            && let ClientRequest::InitializeRequest(init) = &r.request
            && let Err(e) = self.sessions.open(id, &init.params).await
        {
            // No Tether session, no MCP session: drop the worker rmcp just created.
            let _ = self.inner.close_session(id).await;
            return Err(e);
        }
        message.insert_extension(ProtocolSession(id.to_string()));
        self.inner
            .initialize_session(id, message)
            .await
            .map_err(Error::transport)
    }

    async fn has_session(&self, id: &McpSessionId) -> Result<bool, Error> {
        if !self.inner.has_session(id).await.map_err(Error::transport)? {
            return Ok(false);
        }
        if self.sessions.touch(id).await? {
            return Ok(true);
        }
        // Ended elsewhere: free the worker; rmcp then asks the store, which says it is gone (404).
        let _ = self.inner.close_session(id).await;
        Ok(false)
    }

    async fn close_session(&self, id: &McpSessionId) -> Result<(), Error> {
        self.inner.close_session(id).await.map_err(Error::transport)
    }

    async fn create_stream(
        &self,
        id: &McpSessionId,
        mut message: ClientJsonRpcMessage,
    ) -> Result<impl futures_core::Stream<Item = ServerSseMessage> + Send + Sync + 'static, Error>
    {
        message.insert_extension(ProtocolSession(id.to_string()));
        self.inner
            .create_stream(id, message)
            .await
            .map_err(Error::transport)
    }

    async fn accept_message(
        &self,
        id: &McpSessionId,
        mut message: ClientJsonRpcMessage,
    ) -> Result<(), Error> {
        message.insert_extension(ProtocolSession(id.to_string()));
        self.inner
            .accept_message(id, message)
            .await
            .map_err(Error::transport)
    }

    async fn create_standalone_stream(
        &self,
        id: &McpSessionId,
    ) -> Result<impl futures_core::Stream<Item = ServerSseMessage> + Send + Sync + 'static, Error>
    {
        self.inner
            .create_standalone_stream(id)
            .await
            .map_err(Error::transport)
    }

    async fn resume(
        &self,
        id: &McpSessionId,
        last_event_id: String,
    ) -> Result<impl futures_core::Stream<Item = ServerSseMessage> + Send + Sync + 'static, Error>
    {
        self.inner
            .resume(id, last_event_id)
            .await
            .map_err(Error::transport)
    }

    async fn restore_session(
        &self,
        id: McpSessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Error> {
        self.inner
            .restore_session(id)
            .await
            .map_err(Error::transport)
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.inner.event_store()
    }
}
