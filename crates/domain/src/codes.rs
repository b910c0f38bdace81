//! The result codes of the reconnect contract. Their spelling is the wire contract: it comes from
//! `as_str()`, never from the Rust names, so renaming a variant cannot change what clients see.

use std::fmt;

/// Every outcome a reconnect (and the rest of the API) reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResultCode {
    /// The session was resumed.
    Reconnected,
    /// The token names another session than the one in the request.
    SessionIdMismatch,
    /// The token was signed by us but is not a reconnect token.
    InvalidTokenPurpose,
    /// No session has that id.
    SessionNotFound,
    /// The token is ours and for this session, but not its current token.
    TokenMismatch,
    /// The session has ended; it cannot be resumed or changed.
    SessionAlreadyDisconnected,
    /// The token's lifetime is over.
    TokenExpired,
    /// The token is malformed, wrongly signed, or otherwise not acceptable.
    InvalidToken,
    /// An unexpected failure; details are in the server log only.
    InternalError,
    /// An already-consumed token was presented again; the session's live token is revoked.
    TokenReused,
    /// The database did not answer in time.
    DatabaseUnavailable,
    /// Too many requests.
    RateLimited,
}

impl ResultCode {
    /// Every code, in contract order.
    pub const ALL: [ResultCode; 12] = [
        Self::Reconnected,
        Self::SessionIdMismatch,
        Self::InvalidTokenPurpose,
        Self::SessionNotFound,
        Self::TokenMismatch,
        Self::SessionAlreadyDisconnected,
        Self::TokenExpired,
        Self::InvalidToken,
        Self::InternalError,
        Self::TokenReused,
        Self::DatabaseUnavailable,
        Self::RateLimited,
    ];

    /// The exact wire string of this code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Reconnected => "reconnected",
            Self::SessionIdMismatch => "session_id_mismatch",
            Self::InvalidTokenPurpose => "invalid_token_purpose",
            Self::SessionNotFound => "session_not_found",
            Self::TokenMismatch => "token_mismatch",
            Self::SessionAlreadyDisconnected => "session_already_disconnected",
            Self::TokenExpired => "token_expired",
            Self::InvalidToken => "invalid_token",
            Self::InternalError => "internal_error",
            Self::TokenReused => "token_reused",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_are_the_contract() {
        let strings: Vec<_> = ResultCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            strings,
            [
                "reconnected",
                "session_id_mismatch",
                "invalid_token_purpose",
                "session_not_found",
                "token_mismatch",
                "session_already_disconnected",
                "token_expired",
                "invalid_token",
                "internal_error",
                "token_reused",
                "database_unavailable",
                "rate_limited",
            ]
        );
    }
}
