//! Lifecycle events. They are made in one place, `SessionManager`, right after the transition that
//! they report has been stored; routes never make events.

use serde_json::{Value, json};

use crate::session::{Session, SessionId, SessionStatus};
use crate::time::Timestamp;

/// What kind of change a `session_updated` event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpdateType {
    /// A heartbeat.
    Activity,
    /// The sweep found it inactive.
    Idle,
    /// A successful reconnect.
    Reconnected,
    /// A reconnect token was minted.
    TokenIssued,
}

impl UpdateType {
    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Activity => "activity",
            Self::Idle => "idle",
            Self::Reconnected => "reconnected",
            Self::TokenIssued => "token_issued",
        }
    }
}

/// The kind of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `session_created`.
    Created,
    /// `session_updated`.
    Updated(UpdateType),
    /// `session_disconnected`.
    Disconnected,
    /// `token_reused`.
    TokenReused,
}

impl EventKind {
    /// The wire `type` of the message.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "session_created",
            Self::Updated(_) => "session_updated",
            Self::Disconnected => "session_disconnected",
            Self::TokenReused => "token_reused",
        }
    }
}

/// One lifecycle event, with a snapshot of what its `data` needs.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionEvent {
    /// What happened.
    pub kind: EventKind,
    /// To which session.
    pub session_id: SessionId,
    /// When.
    pub at: Timestamp,
    /// The session's state after the change.
    pub status: SessionStatus,
    /// The session's client type.
    pub client_type: String,
    /// The session's reconnect count after the change.
    pub reconnect_count: u64,
    /// The disconnect reason, for `session_disconnected`.
    pub reason: Option<String>,
}

impl SessionEvent {
    /// The event `kind` describing `session` as it is after the change.
    pub fn of(kind: EventKind, session: &Session, at: Timestamp) -> Self {
        Self {
            kind,
            session_id: session.id().clone(),
            at,
            status: session.status(),
            client_type: session.client_type().to_owned(),
            reconnect_count: session.reconnect_count(),
            reason: session.disconnect_reason().map(|r| r.as_str().to_owned()),
        }
    }

    /// The message's `data` object, as the WebSocket contract spells it.
    pub fn data(&self) -> Value {
        match self.kind {
            EventKind::Created => json!({
                "client_type": self.client_type,
                "status": self.status.as_str(),
            }),
            EventKind::Updated(update) => json!({
                "update_type": update.as_str(),
                "status": self.status.as_str(),
                "reconnect_count": self.reconnect_count,
            }),
            EventKind::Disconnected => json!({
                "reason": self.reason,
                "status": self.status.as_str(),
            }),
            EventKind::TokenReused => json!({}),
        }
    }
}

/// The event-sink port: where events go once their change is stored. Must not block: a sink that
/// fans out to slow consumers queues or drops per consumer, never waits.
pub trait EventSink: Send + Sync {
    /// Hands over one event.
    fn publish(&self, event: &SessionEvent);
}

/// A sink that drops everything, for embedders that do not watch events.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn publish(&self, _event: &SessionEvent) {}
}

/// A sink that keeps every event in memory, for tests.
#[derive(Debug, Default)]
pub struct CollectingSink(std::sync::Mutex<Vec<SessionEvent>>);

impl CollectingSink {
    /// Every event so far, oldest first.
    pub fn events(&self) -> Vec<SessionEvent> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Kinds of every event so far, oldest first.
    pub fn kinds(&self) -> Vec<EventKind> {
        self.events().iter().map(|e| e.kind).collect()
    }
}

impl EventSink for CollectingSink {
    fn publish(&self, event: &SessionEvent) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event.clone());
        }
    }
}
