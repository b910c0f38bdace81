//! The one application state, registered once with `web::Data`, and the API-key check.

use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use tether_domain::SessionManager;
use tether_persistence::Database;
use tether_realtime::{Hub, Tickets};

use crate::error::ApiError;
use crate::ratelimit::RateLimits;

/// Everything the handlers need.
pub struct AppState {
    /// The use cases.
    pub manager: SessionManager,
    /// For the health check.
    pub db: Database,
    /// The management API key.
    pub api_key: ApiKey,
    /// Token lifetime in minutes, as the responses report it.
    pub expires_in_minutes: u64,
    /// The dashboards' hub.
    pub hub: Hub,
    /// Single-use WebSocket tickets for browsers.
    pub tickets: Tickets,
    /// Origins allowed to open the dashboard WebSocket.
    pub allowed_origins: Vec<String>,
    /// Rate limits.
    pub limits: RateLimits,
    /// Lifetime of a WebSocket ticket.
    pub ticket_ttl: std::time::Duration,
    /// What `/metrics` reports.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// The management API key; its `Debug` is redacted.
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: String) -> Self {
        Self(key)
    }

    /// Whether `presented` is this key, compared in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Proof that the request carried the API key. Put it first among a handler's arguments so that an
/// unauthenticated request is refused before its body is read.
pub struct Authorized;

/// The bearer credential of a request, if any.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequest for Authorized {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::Unauthorized));
        };
        ready(check_key(req, state))
    }
}

/// The API key of `req`, with the failed-attempt budget of its client address: an address that spent
/// it is refused (429) even with the right key until the budget refills.
///
/// # Errors
/// [`ApiError::RateLimited`], [`ApiError::Unauthorized`].
pub fn check_key(req: &HttpRequest, state: &AppState) -> Result<Authorized, ApiError> {
    let client = state.limits.client(req);
    state
        .limits
        .auth_allowed(client)
        .map_err(ApiError::limited)?;
    if bearer(req).is_some_and(|key| state.api_key.matches(key)) {
        return Ok(Authorized);
    }
    state
        .limits
        .auth_failed(client)
        .map_err(ApiError::limited)?;
    Err(ApiError::Unauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_matching_is_exact() {
        let k = ApiKey::new("0123456789abcdef".into());
        assert!(k.matches("0123456789abcdef"));
        assert!(!k.matches("0123456789abcdeF"));
        assert!(!k.matches("0123456789abcde"));
        assert!(!k.matches(""));
        assert_eq!(format!("{k:?}"), "ApiKey(<redacted>)");
    }
}
