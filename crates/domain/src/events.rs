//! Lifecycle events. They are made in one place, `SessionManager`, right after the transition that
//! they report has been stored; routes never make events.

use serde_json::{Value, json};

use crate::error::Error;
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
    /// Every update type.
    pub const ALL: [UpdateType; 4] = [
        Self::Activity,
        Self::Idle,
        Self::Reconnected,
        Self::TokenIssued,
    ];

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

    /// The `update_type` of a `session_updated` event.
    pub const fn update_type(self) -> Option<UpdateType> {
        match self {
            Self::Updated(u) => Some(u),
            _ => None,
        }
    }

    /// Reads back what [`EventKind::as_str`] and [`EventKind::update_type`] wrote (for stored events).
    ///
    /// # Errors
    /// [`Error::Internal`] for an unknown combination (a corrupt row).
    pub fn parse(kind: &str, update_type: Option<&str>) -> Result<Self, Error> {
        let bad = || Error::Internal(format!("unknown event kind {kind:?}/{update_type:?}").into());
        match (kind, update_type) {
            ("session_created", None) => Ok(Self::Created),
            ("session_disconnected", None) => Ok(Self::Disconnected),
            ("token_reused", None) => Ok(Self::TokenReused),
            ("session_updated", Some(u)) => UpdateType::ALL
                .into_iter()
                .find(|t| t.as_str() == u)
                .map(Self::Updated)
                .ok_or_else(bad),
            _ => Err(bad()),
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

/// An event as recorded in the outbox, in the same transaction as its change. `seq` is its id there:
/// increasing, and the position a dashboard resumes from.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Position in the outbox.
    pub seq: u64,
    /// The event.
    pub event: SessionEvent,
}

/// The event-sink port: told of each event right after its change (and outbox row) committed, in this
/// process. Must not block: a sink that fans out to slow consumers queues or drops per consumer.
pub trait EventSink: Send + Sync {
    /// Hands over one committed event.
    fn publish(&self, event: &StoredEvent);
}

/// A sink that drops everything, for embedders that do not watch events.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn publish(&self, _event: &StoredEvent) {}
}

/// A sink that keeps every event in memory, for tests.
#[derive(Debug, Default)]
pub struct CollectingSink(std::sync::Mutex<Vec<StoredEvent>>);

impl CollectingSink {
    /// Every event so far, oldest first.
    pub fn events(&self) -> Vec<StoredEvent> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Kinds of every event so far, oldest first.
    pub fn kinds(&self) -> Vec<EventKind> {
        self.events().iter().map(|e| e.event.kind).collect()
    }
}

impl EventSink for CollectingSink {
    fn publish(&self, event: &StoredEvent) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event.clone());
        }
    }
}

/// Fans one event out to several sinks (say, a log and a WebSocket hub).
pub struct Sinks(pub Vec<std::sync::Arc<dyn EventSink>>);

impl EventSink for Sinks {
    fn publish(&self, event: &StoredEvent) {
        for sink in &self.0 {
            sink.publish(event);
        }
    }
}
