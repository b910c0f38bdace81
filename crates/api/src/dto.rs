//! Request bodies and the answers particular to a route: wire shapes kept apart from the domain
//! types, so that renaming a Rust item never changes what clients see. The session itself
//! (`SessionView`) and the event data are the domain's: one shape shared by REST, the dashboards'
//! WebSocket and the MCP tools, spelled out field by field there.

use actix_web::web;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tether_domain::SessionView;
use utoipa::{IntoParams, ToSchema};

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
    parse_json(&bytes)
}

/// The parsing half of [`read_json`], on a body already read.
///
/// # Errors
/// [`ApiError::BadRequest`] for anything but an empty body or a JSON object of type `T`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<Option<T>, ApiError> {
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
    serde_json::from_slice(bytes)
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
// The bounds in `schema(...)` are the domain's (`Session::open`, `SessionId::parse`,
// `Metadata::parse`): they describe, the domain decides.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// Kind of client.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub client_type: String,
    /// Client version.
    #[serde(default)]
    #[schema(max_length = 64, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub client_version: Option<String>,
    /// Client-chosen id; generated when absent.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^(?!\.\.?$)[A-Za-z0-9._:-]+$"
    )]
    pub session_id: Option<String>,
    /// Who owns the session, when known.
    #[serde(default)]
    #[schema(max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub principal: Option<String>,
    /// JSON object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// `DELETE /sessions/{id}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Disconnect {
    /// Why; `client_closed` when absent.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^(?!resumed:)[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub reason: Option<String>,
}

/// `POST /sessions/{id}/reconnect`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reconnect {
    /// The reconnect token.
    pub token: String,
}

/// The path of the routes under `/sessions/{id}`, for their description (the handlers read the id
/// as a `web::Path<String>` and parse it themselves).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[expect(
    dead_code,
    reason = "described, never built: only its `IntoParams` is used"
)]
pub struct SessionPath {
    /// The session's id: 1-128 characters of `[A-Za-z0-9._:-]`, not `.` or `..`.
    #[param(schema_with = tether_domain::openapi::session_id_schema)]
    pub id: String,
}

/// `GET /sessions` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Filter by state.
    #[param(schema_with = crate::openapi::status_filter, required = false)]
    pub status: Option<String>,
    /// Page size (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /sessions` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    /// The page.
    pub sessions: Vec<SessionView>,
    /// Cursor of the next page, or null.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Token responses.
#[derive(Serialize, ToSchema)]
pub struct TokenIssued {
    /// The session the token belongs to.
    #[schema(schema_with = tether_domain::openapi::session_id_schema)]
    pub session_id: String,
    /// The reconnect token (the only response that carries it).
    pub reconnect_token: String,
    /// Its lifetime.
    pub expires_in_minutes: u64,
}

/// Successful reconnect.
#[derive(Serialize, ToSchema)]
pub struct Reconnected {
    /// Always true.
    #[schema(schema_with = crate::openapi::always_true)]
    pub success: bool,
    /// The session the token belongs to.
    #[schema(schema_with = tether_domain::openapi::session_id_schema)]
    pub session_id: String,
    /// "Session reconnected".
    #[schema(schema_with = crate::openapi::reconnected_message)]
    pub message: &'static str,
    /// Count after this reconnect.
    pub reconnect_count: u64,
    /// The rotated token.
    pub reconnect_token: String,
    /// Its lifetime.
    pub expires_in_minutes: u64,
}

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    #[schema(schema_with = crate::openapi::health_status)]
    pub status: &'static str,
    /// `ok` or `unavailable`.
    #[schema(schema_with = crate::openapi::health_database)]
    pub database: &'static str,
    /// `sqlite` or `postgres`.
    #[schema(schema_with = crate::openapi::health_backend)]
    pub backend: &'static str,
    /// Version of the binary.
    pub version: &'static str,
    /// Dashboards connected to this instance.
    pub dashboards: usize,
}

/// `POST /ws/ticket`.
#[derive(Serialize, ToSchema)]
pub struct WsTicket {
    /// Single-use ticket for `?ticket=`.
    pub ticket: String,
    /// Its lifetime.
    pub expires_in_seconds: u64,
}

/// The query of `GET /ws/sessions` (the others, `since` and `health`, are read by the hub's
/// `connect_options`).
#[derive(Debug, Deserialize)]
pub struct WsQuery {
    /// A ticket from `POST /ws/ticket`.
    pub ticket: Option<String>,
}

/// Property tests of the request bodies (issue 7 item 12, FUZZING.md). `PROPTEST_CASES` sets the
/// number of cases (256 when unset); the long run is
/// `PROPTEST_CASES=1000000 cargo test --release -p tether-api --bin tether dto::props`.
#[cfg(test)]
mod props {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Whether `v` is absent, null or a string (an `Option<String>` field).
    fn opt_string(v: Option<&Value>) -> bool {
        matches!(v, None | Some(Value::Null | Value::String(_)))
    }

    /// Which body types the reference says an object makes: known fields only, of the right types.
    /// Order: `CreateSession`, `Disconnect`, `Reconnect`, `ListParams`.
    fn reference(map: &Map<String, Value>) -> [bool; 4] {
        let only = |keys: &[&str]| map.keys().all(|k| keys.contains(&k.as_str()));
        let limit_ok = match map.get("limit") {
            None | Some(Value::Null) => true,
            Some(v) => v.as_u64().is_some_and(|n| u32::try_from(n).is_ok()),
        };
        [
            only(&[
                "client_type",
                "client_version",
                "session_id",
                "principal",
                "metadata",
            ]) && map.get("client_type").is_some_and(Value::is_string)
                && ["client_version", "session_id", "principal"]
                    .iter()
                    .all(|k| opt_string(map.get(*k))),
            only(&["reason"]) && opt_string(map.get("reason")),
            only(&["token"]) && map.get("token").is_some_and(Value::is_string),
            only(&["status", "limit", "cursor"])
                && opt_string(map.get("status"))
                && opt_string(map.get("cursor"))
                && limit_ok,
        ]
    }

    /// What each body type makes of `bytes`: `Some(true)` a body, `Some(false)` refused as a bad
    /// request, `None` an empty body.
    fn parsed(bytes: &[u8]) -> [Option<bool>; 4] {
        fn one<T: DeserializeOwned>(bytes: &[u8]) -> Option<bool> {
            match parse_json::<T>(bytes) {
                Ok(Some(_)) => Some(true),
                Ok(None) => None,
                Err(ApiError::BadRequest(_)) => Some(false),
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
        [
            one::<CreateSession>(bytes),
            one::<Disconnect>(bytes),
            one::<Reconnect>(bytes),
            one::<ListParams>(bytes),
        ]
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (0u64..=u64::from(u32::MAX) + 1).prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ]
    }

    /// JSON of any shape; objects mostly with the bodies' own field names.
    fn json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            4 => prop::sample::select(vec![
                "client_type", "client_version", "session_id", "principal", "metadata", "reason",
                "token", "status", "limit", "cursor",
            ])
            .prop_map(str::to_owned),
            1 => any::<String>(),
        ];
        leaf().prop_recursive(3, 32, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec((key.clone(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(config())]

        /// Any JSON value, with any blank space around it: every body type accepts exactly what the
        /// reference accepts, and never anything but an object.
        #[test]
        fn bodies_match_the_reference(value in json(), pad in "[ \t\r\n]{0,3}") {
            let bytes = format!("{pad}{value}{pad}").into_bytes();
            let want = match &value {
                Value::Object(map) => reference(map).map(Some),
                _ => [Some(false); 4],
            };
            prop_assert_eq!(parsed(&bytes), want, "{}", value);
        }

        /// Any bytes at all: no panic; blank is no body; a body is accepted only when it is a JSON
        /// object.
        #[test]
        fn any_bytes_are_handled(
            prefix in prop_oneof![Just(Vec::new()), Just(b"{".to_vec()), Just(b" {\"".to_vec())],
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let bytes = [prefix, bytes].concat();
            let blank = bytes.iter().all(u8::is_ascii_whitespace);
            let object = serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| v.is_object());
            for got in parsed(&bytes) {
                match got {
                    None => prop_assert!(blank),
                    Some(true) => prop_assert!(object),
                    Some(false) => prop_assert!(!blank),
                }
            }
        }

        /// The list and WebSocket query strings: any text parses or is refused, never a panic, and
        /// a `limit` is taken only as a `u32`.
        #[test]
        fn queries_never_panic(query in "[A-Za-z0-9_=&%+.-]{0,40}", limit in any::<i128>()) {
            let _ = web::Query::<ListParams>::from_query(&query);
            let _ = web::Query::<WsQuery>::from_query(&query);
            let q = web::Query::<ListParams>::from_query(&format!("limit={limit}"));
            prop_assert_eq!(q.is_ok(), u32::try_from(limit).is_ok());
        }
    }
}
