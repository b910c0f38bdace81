//! The crate's one error type: what rmcp's session hooks report when they fail.

use tether_domain::BoxError;

/// A failure of the durable session layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A use case of the session registry failed (database unavailable, invalid input, ...).
    #[error(transparent)]
    Session(#[from] tether_domain::Error),
    /// The wrapped in-memory session manager (rmcp's transport) failed.
    #[error("mcp transport: {0}")]
    Transport(#[source] BoxError),
}

impl Error {
    /// Wraps a failure of the inner rmcp session manager.
    pub(crate) fn transport(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Transport(Box::new(e))
    }
}
