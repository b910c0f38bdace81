//! The outcome-observer port: told what the use cases decided, for counting (metrics). The manager is
//! the one place that knows an outcome with its reason (a reconnect's result code, a reuse detected
//! while refusing, an end and why), whichever front end called it (REST or MCP), so it reports
//! there; the adapter that counts knows nothing of sessions.

use crate::codes::ResultCode;
use crate::session::DisconnectReason;

/// Told of each outcome right after it is decided (and, for a change, stored). Every method has a
/// do-nothing default, so an observer implements only what it counts. Called on the request path:
/// implementations must not block (an atomic increment is the expected cost).
pub trait Observer: Send + Sync {
    /// A session was opened.
    fn session_opened(&self) {}

    /// A session was ended, by a caller or by the sweep (`idle_timeout`).
    fn session_ended(&self, _reason: &DisconnectReason) {}

    /// A reconnect attempt was answered with `result`: [`ResultCode::Reconnected`] for a success
    /// (a repeat inside the grace window included), else the refusal's code. Called exactly once per
    /// attempt that reached the manager, whether it stopped at
    /// [`check_token`](crate::SessionManager::check_token) or went on to the store.
    fn reconnect(&self, _result: ResultCode) {}

    /// A consumed reconnect token was presented again (by a reconnect or an
    /// [`authorize`](crate::SessionManager::authorize)); the live token was revoked.
    fn token_reused(&self) {}

    /// A reconnect token was minted for a session (rotations at reconnect are not counted here).
    fn token_issued(&self) {}
}

/// The default observer: counts nothing.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct NoObserver;

impl Observer for NoObserver {}
