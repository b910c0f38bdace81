//! The crate's one error type. It names what went wrong, never an HTTP status: `api` maps it.

/// Everything that can go wrong in `tether-realtime`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value the hub cannot run with.
    #[error("invalid realtime setting {0}: must be greater than zero")]
    InvalidConfig(&'static str),
    /// [`Hub::start`](crate::Hub::start) was called outside a tokio runtime.
    #[error("the hub must be started inside a tokio runtime")]
    NoRuntime,
    /// The event feed (the outbox) could not be read.
    #[error("the event feed failed")]
    Feed(#[source] tether_domain::Error),
    /// The hub's task has stopped (after [`Hub::shutdown`](crate::Hub::shutdown)).
    #[error("the event hub has stopped")]
    HubStopped,
    /// `since` or `Last-Event-ID` is not a sequence number.
    #[error("invalid resume point {0:?}: expected a non-negative integer")]
    InvalidResumePoint(String),
    /// `health` is neither `full` nor `summary`.
    #[error("invalid health mode {0:?}: expected full or summary")]
    InvalidHealthMode(String),
    /// Too many tickets are outstanding; minting resumes as they expire or are redeemed.
    #[error("too many outstanding WebSocket tickets")]
    TooManyTickets,
    /// The operating system's random generator failed.
    #[error("the system random generator failed: {0}")]
    Random(getrandom::Error),
}

pub(crate) use tether_domain::error_chain as chain;
