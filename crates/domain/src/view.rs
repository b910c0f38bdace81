//! The public shape of a session, shared by every boundary that shows sessions (REST responses and the
//! WebSocket health summary). It carries nothing of the token state: no response ever holds a hash.

use serde::Serialize;
use serde_json::Value;

use crate::session::Session;

/// A session as clients see it, times in RFC 3339 UTC.
// With the `openapi` feature its schema (named `Session`) is derived from these fields; every field
// is always sent (null when empty), hence `required` on the options.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Session))]
pub struct SessionView {
    /// `session_id`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::session_id_schema))]
    pub session_id: String,
    /// `client_type`.
    pub client_type: String,
    /// `client_version`.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub client_version: Option<String>,
    /// `principal`.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub principal: Option<String>,
    /// `status`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::status_schema))]
    pub status: &'static str,
    /// `connected_at`.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub connected_at: String,
    /// `last_activity`.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub last_activity: String,
    /// `disconnected_at`.
    #[cfg_attr(feature = "openapi", schema(required = true, format = DateTime))]
    pub disconnected_at: Option<String>,
    /// `disconnect_reason`.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub disconnect_reason: Option<String>,
    /// `reconnect_count`.
    pub reconnect_count: u64,
    /// `metadata`.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Value,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        Self {
            session_id: s.id().to_string(),
            client_type: s.client_type().to_owned(),
            client_version: s.client_version().map(str::to_owned),
            principal: s.principal().map(str::to_owned),
            status: s.status().as_str(),
            connected_at: s.connected_at().to_rfc3339(),
            last_activity: s.last_activity().to_rfc3339(),
            disconnected_at: s.disconnected_at().map(|t| t.to_rfc3339()),
            disconnect_reason: s.disconnect_reason().map(|r| r.as_str().to_owned()),
            reconnect_count: s.reconnect_count(),
            metadata: Value::Object(s.metadata().as_map().clone()),
        }
    }
}
