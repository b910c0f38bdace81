//! The wire shape of every WebSocket message: one JSON object with `type`, `seq`, `timestamp`, then
//! `session_id` (session events only) and `data`. Serde structs rather than `json!`, because
//! `serde_json::Value` sorts keys and the contract fixes their order.
//!
//! Messages are serialized to an `Arc<str>` once and that one allocation is shared by every
//! connection's queue.

use std::sync::Arc;

use serde::Serialize;
use tether_domain::{SessionView, StatusCounts, StoredEvent, Timestamp};

/// A serialized message, shared by every queue it is pushed to.
pub(crate) type Text = Arc<str>;

#[derive(Serialize)]
struct Envelope<'a, D> {
    #[serde(rename = "type")]
    kind: &'a str,
    seq: u64,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    data: D,
}

#[derive(Serialize)]
struct HealthData<'a> {
    /// Left out for connections that asked for the summary only.
    #[serde(skip_serializing_if = "Option::is_none")]
    sessions: Option<&'a [SessionView]>,
    status_breakdown: Breakdown,
    timestamp: String,
}

#[derive(Serialize)]
struct Breakdown {
    active: u64,
    idle: u64,
    disconnected: u64,
    total: u64,
}

#[derive(Serialize)]
struct ResumedData<'a> {
    recovered: bool,
    epoch: &'a str,
}

fn to_text<D: Serialize>(envelope: &Envelope<'_, D>) -> Result<Text, serde_json::Error> {
    serde_json::to_string(envelope).map(Text::from)
}

/// A session event as its message.
pub(crate) fn event(stored: &StoredEvent) -> Result<Text, serde_json::Error> {
    let e = &stored.event;
    to_text(&Envelope {
        kind: e.kind.as_str(),
        seq: stored.seq,
        timestamp: e.at.to_rfc3339(),
        session_id: Some(e.session_id.as_str()),
        data: e.data(),
    })
}

/// A `health_update`; `seq` is the last event delivered before it. Without `sessions`, the summary
/// that connections with [`HealthUpdates::Summary`](crate::HealthUpdates::Summary) get.
pub(crate) fn health(
    seq: u64,
    at: Timestamp,
    sessions: Option<&[SessionView]>,
    counts: StatusCounts,
) -> Result<Text, serde_json::Error> {
    let timestamp = at.to_rfc3339();
    to_text(&Envelope {
        kind: "health_update",
        seq,
        timestamp: timestamp.clone(),
        session_id: None,
        data: HealthData {
            sessions,
            status_breakdown: Breakdown {
                active: counts.active,
                idle: counts.idle,
                disconnected: counts.disconnected,
                total: counts
                    .active
                    .saturating_add(counts.idle)
                    .saturating_add(counts.disconnected),
            },
            timestamp,
        },
    })
}

/// The `resumed` message that ends a replay.
pub(crate) fn resumed(
    seq: u64,
    at: Timestamp,
    recovered: bool,
    epoch: &str,
) -> Result<Text, serde_json::Error> {
    to_text(&Envelope {
        kind: "resumed",
        seq,
        timestamp: at.to_rfc3339(),
        session_id: None,
        data: ResumedData { recovered, epoch },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_domain::{EventKind, SessionEvent, SessionId, SessionStatus, UpdateType};

    fn stored(kind: EventKind) -> StoredEvent {
        StoredEvent {
            seq: 7,
            event: SessionEvent {
                kind,
                session_id: SessionId::parse("s-1").unwrap(),
                at: Timestamp::from_secs(0),
                status: SessionStatus::Active,
                client_type: "cli".into(),
                reconnect_count: 2,
                reason: None,
            },
        }
    }

    #[test]
    fn event_keys_come_in_contract_order() {
        let text = event(&stored(EventKind::Updated(UpdateType::Activity))).unwrap();
        let keys: Vec<usize> = [
            "\"type\"",
            "\"seq\"",
            "\"timestamp\"",
            "\"session_id\"",
            "\"data\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.starts_with(
            r#"{"type":"session_updated","seq":7,"timestamp":"1970-01-01T00:00:00.000000Z","session_id":"s-1","data":{"#
        ));
    }

    #[test]
    fn health_and_resumed_have_no_session_id() {
        let counts = StatusCounts {
            active: 1,
            idle: 2,
            disconnected: 3,
        };
        let text = health(4, Timestamp::from_secs(0), Some(&[]), counts).unwrap();
        assert_eq!(
            &*text,
            r#"{"type":"health_update","seq":4,"timestamp":"1970-01-01T00:00:00.000000Z","data":{"sessions":[],"status_breakdown":{"active":1,"idle":2,"disconnected":3,"total":6},"timestamp":"1970-01-01T00:00:00.000000Z"}}"#
        );
        let text = health(4, Timestamp::from_secs(0), None, counts).unwrap();
        assert_eq!(
            &*text,
            r#"{"type":"health_update","seq":4,"timestamp":"1970-01-01T00:00:00.000000Z","data":{"status_breakdown":{"active":1,"idle":2,"disconnected":3,"total":6},"timestamp":"1970-01-01T00:00:00.000000Z"}}"#
        );
        let text = resumed(9, Timestamp::from_secs(0), true, "e").unwrap();
        assert_eq!(
            &*text,
            r#"{"type":"resumed","seq":9,"timestamp":"1970-01-01T00:00:00.000000Z","data":{"recovered":true,"epoch":"e"}}"#
        );
    }
}
