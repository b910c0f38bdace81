//! The domain's one error type. Adapters translate their own failures into it; only `api` maps it to
//! HTTP.

use crate::codes::ResultCode;

/// A boxed cause from an adapter, kept for the log chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in a use case.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that breaks a rule (an id with bad characters, metadata too large, ...).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No session has that id.
    #[error("session not found")]
    NotFound,
    /// A session with that id already exists.
    #[error("session already exists")]
    AlreadyExists,
    /// The session has ended.
    #[error("session already disconnected")]
    AlreadyDisconnected,
    /// A reconnect attempt failed with this code.
    #[error("reconnection failed: {0}")]
    Reconnect(ResultCode),
    /// A configuration that breaks a rule (for example a reap window shorter than the token lifetime).
    #[error("invalid policy: {0}")]
    Policy(String),
    /// The store could not be reached in time.
    #[error("database unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything unexpected.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl Error {
    /// The result code this error is reported as, when the contract has one for it (bad input and
    /// duplicate ids have none: the API gives them codes of its own).
    pub fn code(&self) -> Option<ResultCode> {
        match self {
            Self::Invalid { .. } | Self::Policy(_) | Self::AlreadyExists => None,
            Self::NotFound => Some(ResultCode::SessionNotFound),
            Self::AlreadyDisconnected => Some(ResultCode::SessionAlreadyDisconnected),
            Self::Reconnect(code) => Some(*code),
            Self::Unavailable(_) => Some(ResultCode::DatabaseUnavailable),
            Self::Internal(_) => Some(ResultCode::InternalError),
        }
    }

    /// Shorthand for an [`Error::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// An error with its causes on one line, `a: b: c`, so that a log line keeps the whole chain.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
