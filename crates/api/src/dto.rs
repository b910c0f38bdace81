//! Request and response bodies: the wire shapes of the HTTP contract, kept apart from the domain types
//! so that renaming a Rust item never changes what clients see.

use actix_web::web;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tether_domain::SessionView;

use crate::error::ApiError;

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 * 1024;

/// Reads a JSON body of at most [`MAX_BODY`] bytes. An empty body is `None`; anything else must parse,
/// unknown fields included in what is refused. Done by hand rather than with `web::Json` so that every
/// body error, the size limit included, answers in the contract's JSON error shape.
///
/// # Errors
/// [`ApiError::PayloadTooLarge`] over the limit, [`ApiError::RequestTimeout`] when the body did not
/// arrive within `server.body_timeout_ms`, [`ApiError::BadRequest`] for anything unparsable.
pub async fn read_json<T: DeserializeOwned>(payload: web::Payload) -> Result<Option<T>, ApiError> {
    let bytes = payload
        .to_bytes_limited(MAX_BODY)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(MAX_BODY))?
        .map_err(|e| {
            if crate::limits::is_body_timeout_error(&e) {
                ApiError::RequestTimeout
            } else {
                ApiError::BadRequest("could not read the request body".into())
            }
        })?;
    let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Ok(None);
    };
    // serde reads a struct from a JSON array too (`["t","1.0"]` would open a session): every body
    // of the contract is an object, and anything else is refused before serde sees it.
    if *first != b'{' {
        return Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
}

/// Like [`read_json`], for routes whose body is required.
///
/// # Errors
/// As [`read_json`], and [`ApiError::BadRequest`] for an empty body.
pub async fn require_json<T: DeserializeOwned>(payload: web::Payload) -> Result<T, ApiError> {
    read_json(payload)
        .await?
        .ok_or_else(|| ApiError::BadRequest("a JSON body is required".into()))
}

/// `POST /sessions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// Kind of client.
    pub client_type: String,
    /// Client version.
    #[serde(default)]
    pub client_version: Option<String>,
    /// Client-chosen id; generated when absent.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Owner.
    #[serde(default)]
    pub principal: Option<String>,
    /// JSON object.
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// `DELETE /sessions/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disconnect {
    /// Why; `client_closed` when absent.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /sessions/{id}/reconnect`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconnect {
    /// The reconnect token.
    pub token: String,
}

/// `GET /sessions` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Filter by state.
    pub status: Option<String>,
    /// Page size (default 50, at most 500).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /sessions` response.
#[derive(Debug, Serialize)]
pub struct SessionList {
    /// The page.
    pub sessions: Vec<SessionView>,
    /// Cursor of the next page, or null.
    pub next_cursor: Option<String>,
}

/// Token responses.
#[derive(Serialize)]
pub struct TokenIssued {
    /// Session.
    pub session_id: String,
    /// The token.
    pub reconnect_token: String,
    /// Its lifetime.
    pub expires_in_minutes: u64,
}

/// Successful reconnect.
#[derive(Serialize)]
pub struct Reconnected {
    /// Always true.
    pub success: bool,
    /// Session.
    pub session_id: String,
    /// "Session reconnected".
    pub message: &'static str,
    /// Count after this reconnect.
    pub reconnect_count: u64,
    /// The rotated token.
    pub reconnect_token: String,
    /// Its lifetime.
    pub expires_in_minutes: u64,
}

/// `GET /health`.
#[derive(Serialize)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: &'static str,
    /// `ok` or `unavailable`.
    pub database: &'static str,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Version of the binary.
    pub version: &'static str,
    /// Dashboards connected to this instance.
    pub dashboards: usize,
}

/// `POST /ws/ticket`.
#[derive(Serialize)]
pub struct WsTicket {
    /// Single-use ticket for `?ticket=`.
    pub ticket: String,
    /// Its lifetime.
    pub expires_in_seconds: u64,
}

/// The query of `GET /ws/sessions` (other parameters, such as `since`, are read by the hub).
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// A ticket from `POST /ws/ticket`.
    pub ticket: Option<String>,
}
