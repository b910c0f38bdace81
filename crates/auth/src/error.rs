//! The crate's own error type: configuration and signing failures. Verification failures are not
//! here: they are reconnect outcomes, reported as [`tether_domain::Error::Reconnect`] directly.

/// A boxed cause, kept for the log chain without making a dependency's error type part of our API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong while building keys and authorities, or while signing.
///
/// No variant carries secret material, so every one is safe to log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The secret is shorter than [`crate::Secret::MIN_LEN`] bytes.
    #[error("secret is too short: at least {min} bytes are required", min = crate::Secret::MIN_LEN)]
    WeakSecret,
    /// A stored secret is not hexadecimal text.
    #[error("secret is not valid hex")]
    SecretEncoding,
    /// The system random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
    /// A setting breaks a rule (empty issuer, zero lifetime, duplicate key, ...).
    #[error("invalid token configuration: {0}")]
    InvalidConfig(String),
    /// An instant that cannot be a token's `iat` or `exp` (before 1970, or too far ahead).
    #[error("time out of range for a token")]
    TimeOutOfRange,
    /// The JWT library failed to sign.
    #[error("signing failed")]
    Signing(#[source] BoxError),
}

impl From<Error> for tether_domain::Error {
    /// Everything here is the server's own fault (bad configuration, broken RNG or signer), never the
    /// client's, so it surfaces as `internal_error` with the cause kept for the log.
    fn from(e: Error) -> Self {
        Self::Internal(Box::new(e))
    }
}
