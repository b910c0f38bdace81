//! The one place where errors become HTTP. Codes of the contract keep their exact strings; failures
//! with no contract code get codes of the API's own (`invalid_request`, `unauthorized`,
//! `session_exists`, `payload_too_large`, `not_found`). Unknown causes are logged with their chain and
//! answered with an opaque 500.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use tether_domain::{Error as DomainError, ResultCode};

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A domain failure.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Input that cannot be parsed.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong API key.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// Body over the limit.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// A token was asked for a session that has ended (the legacy contract answers 400 here).
    #[error("session is not active")]
    NotActive,
    /// No such route.
    #[error("no such route")]
    NoRoute,
    /// A browser page from an origin that is not allowed.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// Over a rate limit: retry after this long, and the answer held back this long first.
    #[error("rate limited")]
    RateLimited(std::time::Duration, std::time::Duration),
    /// The body did not arrive within `server.body_timeout_ms`.
    #[error("request body timeout")]
    RequestTimeout,
    /// A method the route does not serve; the methods it does.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// A failed reconnect: whatever the cause, the contract's detail is `Reconnection failed: <code>`.
    #[error("reconnection failed: {0}")]
    ReconnectFailed(ResultCode),
}

impl ApiError {
    /// A refusal by a rate limit.
    pub fn limited(l: crate::ratelimit::Limited) -> Self {
        Self::RateLimited(l.retry_after, l.penalty)
    }

    /// A reconnect's failure in the contract's words (logging what the code alone would hide).
    pub fn reconnect(e: DomainError) -> Self {
        match &e {
            DomainError::Invalid { .. } | DomainError::Policy(_) | DomainError::AlreadyExists => {
                Self::Domain(e)
            }
            DomainError::Unavailable(_) => {
                tracing::warn!(error = %tether_domain::error_chain(&e), "reconnect: database unavailable");
                Self::ReconnectFailed(ResultCode::DatabaseUnavailable)
            }
            DomainError::Internal(_) => {
                tracing::error!(error = %tether_domain::error_chain(&e), "reconnect: internal error");
                Self::ReconnectFailed(ResultCode::InternalError)
            }
            other => Self::ReconnectFailed(other.code().unwrap_or(ResultCode::InternalError)),
        }
    }
}

/// How long the request middleware holds an answer back before sending it (a refusal of an address
/// over its budget).
#[derive(Clone, Copy, Debug)]
pub struct Penalty(pub std::time::Duration);

/// `{"success": false, "code", "detail"}`, in that order (a struct, since `json!` sorts keys).
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    success: bool,
    code: &'a str,
    detail: &'a str,
}

fn body(status: StatusCode, code: &str, detail: &str) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody {
        success: false,
        code,
        detail,
    })
}

/// The HTTP status of a contract result code.
pub fn status_of(code: ResultCode) -> StatusCode {
    match code {
        ResultCode::Reconnected => StatusCode::OK,
        ResultCode::SessionIdMismatch
        | ResultCode::InvalidTokenPurpose
        | ResultCode::TokenMismatch
        | ResultCode::TokenExpired
        | ResultCode::InvalidToken
        | ResultCode::TokenReused => StatusCode::UNAUTHORIZED,
        ResultCode::SessionNotFound => StatusCode::NOT_FOUND,
        ResultCode::SessionAlreadyDisconnected => StatusCode::CONFLICT,
        ResultCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        ResultCode::DatabaseUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ResultCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Domain(e) => match e {
                DomainError::Invalid { .. } | DomainError::Policy(_) => StatusCode::BAD_REQUEST,
                DomainError::AlreadyExists => StatusCode::CONFLICT,
                other => other
                    .code()
                    .map_or(StatusCode::INTERNAL_SERVER_ERROR, status_of),
            },
            Self::BadRequest(_) | Self::NotActive => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::ReconnectFailed(code) => status_of(*code),
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited(..) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut reply = self.reply();
        if reply.status() == StatusCode::UNAUTHORIZED {
            // RFC 9110 §15.5.2: a 401 names the scheme it wants (RFC 6750 §3 for bearer keys).
            reply.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tether\""),
            );
        }
        reply
    }
}

impl ApiError {
    /// The response before the headers every error carries.
    fn reply(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            Self::Domain(DomainError::Reconnect(code)) | Self::ReconnectFailed(code) => body(
                status,
                code.as_str(),
                &format!("Reconnection failed: {code}"),
            ),
            Self::Domain(e @ (DomainError::Invalid { .. } | DomainError::Policy(_))) => {
                body(status, "invalid_request", &e.to_string())
            }
            Self::Domain(DomainError::AlreadyExists) => body(
                status,
                "session_exists",
                "a session with this id already exists",
            ),
            Self::Domain(DomainError::NotFound) => body(
                status,
                ResultCode::SessionNotFound.as_str(),
                "Session not found",
            ),
            Self::Domain(DomainError::AlreadyDisconnected) | Self::NotActive => body(
                status,
                ResultCode::SessionAlreadyDisconnected.as_str(),
                "Session is already disconnected",
            ),
            Self::Domain(e @ DomainError::Unavailable(_)) => {
                tracing::warn!(error = %tether_domain::error_chain(e), "database unavailable");
                body(
                    status,
                    ResultCode::DatabaseUnavailable.as_str(),
                    "The database is unavailable; retry later",
                )
            }
            Self::Domain(e @ DomainError::Internal(_)) => {
                tracing::error!(error = %tether_domain::error_chain(e), "internal error");
                body(status, ResultCode::InternalError.as_str(), "Internal error")
            }
            Self::BadRequest(detail) => body(status, "invalid_request", detail),
            Self::Unauthorized => body(status, "unauthorized", "Missing or invalid API key"),
            Self::PayloadTooLarge(_) => body(status, "payload_too_large", &self.to_string()),
            Self::NoRoute => body(status, "not_found", "No such route"),
            Self::RateLimited(wait, penalty) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let secs = secs.max(1);
                let mut reply = body(
                    status,
                    ResultCode::RateLimited.as_str(),
                    &format!("Too many requests; retry after {secs} s"),
                );
                reply
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
                if !penalty.is_zero() {
                    reply.extensions_mut().insert(Penalty(*penalty));
                }
                reply
            }
            Self::RequestTimeout => body(
                status,
                "request_timeout",
                "The request body did not arrive in time (server.body_timeout_ms)",
            ),
            Self::MethodNotAllowed(allow) => {
                let mut reply = body(
                    status,
                    "method_not_allowed",
                    &format!("This route serves {allow}"),
                );
                if let Ok(value) = header::HeaderValue::from_str(allow) {
                    reply.headers_mut().insert(header::ALLOW, value);
                }
                reply
            }
            Self::OriginNotAllowed => body(
                status,
                "origin_not_allowed",
                "This Origin may not open the dashboard stream (see ws.allowed_origins)",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_contract_status() {
        let expect = [
            (ResultCode::Reconnected, 200),
            (ResultCode::SessionIdMismatch, 401),
            (ResultCode::InvalidTokenPurpose, 401),
            (ResultCode::SessionNotFound, 404),
            (ResultCode::TokenMismatch, 401),
            (ResultCode::SessionAlreadyDisconnected, 409),
            (ResultCode::TokenExpired, 401),
            (ResultCode::InvalidToken, 401),
            (ResultCode::InternalError, 500),
            (ResultCode::TokenReused, 401),
            (ResultCode::DatabaseUnavailable, 503),
            (ResultCode::RateLimited, 429),
        ];
        for (code, status) in expect {
            assert_eq!(status_of(code).as_u16(), status, "{code}");
        }
    }

    #[test]
    fn internals_never_reach_the_body() {
        let e = ApiError::Domain(DomainError::Internal("pg: relation secret_table".into()));
        let resp = e.error_response();
        assert_eq!(resp.status(), 500);
        let bytes = actix_web::body::to_bytes(resp.into_body());
        let bytes = block_on(bytes).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("secret_table"), "{text}");
        assert!(text.contains("internal_error"), "{text}");
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
