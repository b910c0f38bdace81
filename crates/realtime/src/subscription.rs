//! What the hub and a connection share: a consumer's registration (its queue, kill signal and byte
//! budget) and why it may be told to close. Kept apart so that a connection depends on this, not on
//! the hub that creates it.

use std::sync::Arc;

use actix_http::ws::CloseCode;
use tokio::sync::{mpsc, oneshot};

use crate::budget::Budget;
use crate::queue;

/// Rows read from the feed per query, by the pump and by a replay.
pub(crate) const PAGE: u32 = 500;

/// Why the pump tells a connection to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Kill {
    pub(crate) code: CloseCode,
    pub(crate) reason: &'static str,
}

impl Kill {
    /// It holds more bytes than its budget, or its queue overflowed.
    pub(crate) const SLOW_CONSUMER: Kill = Kill {
        code: CloseCode::Again,
        reason: "slow_consumer",
    };
    /// The hub is stopping.
    pub(crate) const SHUTDOWN: Kill = Kill {
        code: CloseCode::Away,
        reason: "server_shutdown",
    };
}

/// One registered consumer, as its owner sees it: what the pump pushes, and the kill signal.
/// Dropping it deregisters.
pub(crate) struct Subscription {
    /// The registry key.
    pub(crate) id: u64,
    /// The pump's `delivered` at registration: every later event (`seq > position`) goes to `queue`.
    pub(crate) position: u64,
    /// Serialized messages, in order.
    pub(crate) queue: queue::Receiver,
    /// Fires (once) when the pump removes this consumer.
    pub(crate) kill: oneshot::Receiver<Kill>,
    /// The bytes pushed to `queue` are charged here; the consumer releases them once sent.
    pub(crate) budget: Arc<Budget>,
    pub(crate) commands: mpsc::Sender<Command>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Best effort without awaiting: should the channel be full, the pump still drops the entry
        // at its next push, which finds the queue closed.
        let _ = self.commands.try_send(Command::Deregister { id: self.id });
    }
}

/// What a handle or a subscription asks of the pump.
pub(crate) enum Command {
    Register {
        queue: queue::Sender,
        kill: oneshot::Sender<Kill>,
        budget: Arc<Budget>,
        health: crate::HealthUpdates,
        reply: oneshot::Sender<(u64, u64)>,
    },
    Deregister {
        id: u64,
    },
}
