//! Real WebSocket dashboards (awc) against an actix-web server on 127.0.0.1:0, over the in-memory store
//! shared as session store and event feed, a real `SessionManager` and the hub as its event sink.
//! Nothing sleeps to wait for an event: every wait is for an expected frame, bounded by a timeout.

// `allow-unwrap-in-tests` covers `#[test]` functions only, not the helpers they share.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use actix_http::ws::Item;
use awc::ws::{CloseCode, Frame, Message};
use serde_json::Value;
use support::{Dashboard, World, world};
use tether_domain::{DisconnectReason, EventFeed, Metadata, NewSession, SessionId};
use tether_realtime::RealtimeConfig;

impl World {
    async fn open(&self, id: &str) {
        self.manager
            .open(NewSession {
                session_id: SessionId::parse(id).unwrap(),
                client_type: "claude-desktop".into(),
                client_version: Some("1.2".into()),
                principal: None,
                metadata: Metadata::default(),
            })
            .await
            .unwrap();
    }

    async fn touch(&self, id: &str) {
        self.manager
            .touch(&SessionId::parse(id).unwrap())
            .await
            .unwrap();
    }

    async fn end(&self, id: &str) {
        self.manager
            .disconnect(
                &SessionId::parse(id).unwrap(),
                DisconnectReason::client_closed(),
            )
            .await
            .unwrap();
    }

    async fn dial(&self, query: &str) -> Dashboard {
        Dashboard::dial(&format!("{}{query}", self.url), &[], true).await
    }
}

fn seq(msg: &Value) -> u64 {
    msg["seq"].as_u64().unwrap()
}

#[actix_rt::test]
async fn each_event_type_arrives_in_order_with_its_fields() {
    let w = world(RealtimeConfig::default()).await;
    let mut d = w.dial("").await;

    w.open("s-1").await;
    w.touch("s-1").await;
    w.clock.advance(Duration::from_secs(6 * 60));
    w.manager.sweep().await.unwrap();
    w.end("s-1").await;

    let created = d.next_event().await;
    assert_eq!(created["type"], "session_created");
    assert_eq!(created["seq"], 1);
    assert_eq!(created["session_id"], "s-1");
    assert_eq!(created["timestamp"], "2026-11-25T08:26:58.000000Z");
    assert_eq!(
        created["data"],
        serde_json::json!({"client_type": "claude-desktop", "status": "active"})
    );

    let activity = d.next_event().await;
    assert_eq!(activity["type"], "session_updated");
    assert_eq!(activity["seq"], 2);
    assert_eq!(
        activity["data"],
        serde_json::json!({"update_type": "activity", "status": "active", "reconnect_count": 0})
    );

    let idle = d.next_event().await;
    assert_eq!(idle["type"], "session_updated");
    assert_eq!(idle["seq"], 3);
    assert_eq!(idle["timestamp"], "2026-11-25T08:32:58.000000Z");
    assert_eq!(
        idle["data"],
        serde_json::json!({"update_type": "idle", "status": "idle", "reconnect_count": 0})
    );

    let ended = d.next_event().await;
    assert_eq!(ended["type"], "session_disconnected");
    assert_eq!(ended["seq"], 4);
    assert_eq!(ended["session_id"], "s-1");
    assert_eq!(
        ended["data"],
        serde_json::json!({"reason": "client_closed", "status": "disconnected"})
    );
    for msg in [&created, &activity, &idle, &ended] {
        let keys: Vec<&str> = msg
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 5, "{msg}");
    }
    w.stop().await;
}

#[actix_rt::test]
async fn message_keys_come_in_contract_order_on_the_wire() {
    let w = world(RealtimeConfig::default()).await;
    let mut d = w.dial("").await;
    w.open("s-1").await;
    let Frame::Text(raw) = d.frame().await else {
        panic!("expected text")
    };
    let raw = std::str::from_utf8(&raw).unwrap();
    assert!(
        raw.starts_with(r#"{"type":"session_created","seq":1,"timestamp":""#),
        "{raw}"
    );
    let at = |k: &str| raw.find(&format!("\"{k}\":")).unwrap();
    assert!(at("timestamp") < at("session_id") && at("session_id") < at("data"));
    w.stop().await;
}

#[actix_rt::test]
async fn two_dashboards_see_the_same_sequence() {
    let w = world(RealtimeConfig::default()).await;
    let mut a = w.dial("").await;
    let mut b = w.dial("").await;
    assert_eq!(
        w.hub.stats().connections,
        2,
        "registered before the upgrade answered"
    );

    for i in 0..10 {
        w.open(&format!("s-{i}")).await;
    }
    w.touch("s-3").await;
    w.end("s-7").await;

    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for _ in 0..12 {
        seen_a.push(a.next_event().await);
        seen_b.push(b.next_event().await);
    }
    assert_eq!(seen_a, seen_b);
    let seqs: Vec<u64> = seen_a.iter().map(seq).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    w.stop().await;
}

#[actix_rt::test]
async fn resume_after_a_disconnect_gets_exactly_the_missed_events() {
    let w = world(RealtimeConfig::default()).await;
    let mut first = w.dial("").await;
    w.open("a").await;
    w.open("b").await;
    assert_eq!(seq(&first.next_event().await), 1);
    assert_eq!(seq(&first.next_event().await), 2);
    first.send(Message::Close(None)).await;
    assert!(
        matches!(first.frame().await, Frame::Close(_)),
        "the close is answered"
    );

    // Missed while away.
    w.touch("a").await;
    w.end("b").await;

    let mut back = w.dial("?since=2").await;
    let m3 = back.next_event().await;
    assert_eq!(
        (m3["type"].as_str(), seq(&m3)),
        (Some("session_updated"), 3)
    );
    let m4 = back.next_event().await;
    assert_eq!(
        (m4["type"].as_str(), seq(&m4)),
        (Some("session_disconnected"), 4)
    );
    let resumed = back.next_event().await;
    assert_eq!(resumed["type"], "resumed");
    assert_eq!(seq(&resumed), 4, "the last replayed seq");
    assert_eq!(resumed["data"]["recovered"], true);
    assert_eq!(resumed["data"]["epoch"], w.store.epoch().await.unwrap());
    assert!(resumed.get("session_id").is_none());

    // Live from here, once each.
    w.open("c").await;
    assert_eq!(seq(&back.next_event().await), 5);

    // The same through the Last-Event-ID header.
    let mut via_header = Dashboard::dial(&w.url, &[("Last-Event-ID", "3")], true).await;
    let seqs = [
        seq(&via_header.next_event().await),
        seq(&via_header.next_event().await),
    ];
    assert_eq!(seqs, [4, 5]);
    let resumed = via_header.next_event().await;
    assert_eq!(
        (resumed["type"].as_str(), seq(&resumed)),
        (Some("resumed"), 5)
    );

    // Nothing is repeated after the resumed message.
    w.open("d").await;
    assert_eq!(seq(&back.next_event().await), 6);
    assert_eq!(seq(&via_header.next_event().await), 6);
    w.stop().await;
}

#[actix_rt::test]
async fn resume_racing_live_writes_loses_and_repeats_nothing() {
    const N: u64 = 300;
    let w = Arc::new(world(RealtimeConfig::default()).await);
    for i in 0..20 {
        w.open(&format!("early-{i}")).await;
    }
    // Keep writing while the dashboard registers and replays.
    let writer = {
        let w = w.clone();
        actix_rt::spawn(async move {
            for i in 20..N {
                w.open(&format!("s-{i}")).await;
                tokio::task::yield_now().await;
            }
        })
    };
    let mut d = w.dial("?since=0").await;
    let mut seqs = Vec::new();
    let mut resumed = Vec::new();
    while seqs.last() != Some(&N) {
        let msg = d.next_event().await;
        if msg["type"] == "resumed" {
            assert_eq!(msg["data"]["recovered"], true);
            resumed.push(seqs.len());
        } else {
            seqs.push(seq(&msg));
        }
    }
    writer.await.unwrap();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>());
    assert_eq!(resumed.len(), 1, "exactly one resumed message");
    let w = Arc::into_inner(w).unwrap();
    w.stop().await;
}

#[actix_rt::test]
async fn resume_is_not_recovered_past_pruning_or_from_another_outbox() {
    let w = world(RealtimeConfig::default()).await;
    for id in ["a", "b", "c"] {
        w.open(id).await;
    }
    w.store.prune_through(2).unwrap();

    let mut d = w.dial("?since=1").await;
    assert_eq!(
        seq(&d.next_event().await),
        3,
        "what is retained is still sent"
    );
    let resumed = d.next_event().await;
    assert_eq!(resumed["type"], "resumed");
    assert_eq!(resumed["data"]["recovered"], false);
    assert_eq!(seq(&resumed), 3);

    // Exactly at the pruning point: nothing was lost.
    let mut d = w.dial("?since=2").await;
    assert_eq!(seq(&d.next_event().await), 3);
    assert_eq!(d.next_event().await["data"]["recovered"], true);

    // A client ahead of this outbox came from another one.
    let mut ahead = w.dial("?since=999").await;
    let resumed = ahead.next_event().await;
    assert_eq!(resumed["type"], "resumed");
    assert_eq!(resumed["data"]["recovered"], false);
    assert_eq!(
        seq(&resumed),
        3,
        "the hub's position, to resume from next time"
    );
    // Counted before `resumed` is sent: three replays, two of them incomplete.
    let stats = w.hub.stats();
    assert_eq!((stats.replays, stats.incomplete_replays), (3, 2));
    w.stop().await;
}

#[actix_rt::test]
async fn health_update_has_the_breakdown_and_the_last_event_seq() {
    let w = world(RealtimeConfig {
        health_interval: Duration::from_millis(200),
        ..RealtimeConfig::default()
    })
    .await;
    // No summary yet, so no counts to reuse.
    assert_eq!(w.hub.recent_counts(Duration::from_secs(3600)), None);
    let mut d = w.dial("").await;
    w.open("a").await;
    w.clock.advance(Duration::from_secs(1));
    w.open("b").await;
    w.clock.advance(Duration::from_secs(1));
    w.open("c").await;
    w.end("b").await;
    w.clock.advance(Duration::from_secs(1));
    w.touch("a").await;
    let mut last = 0;
    while last < 5 {
        last = seq(&d.next_event().await);
    }
    let health = loop {
        let msg = d.next().await;
        if msg["type"] == "health_update" {
            break msg;
        }
    };
    assert_eq!(seq(&health), 5, "the seq of the last event before it");
    assert!(health.get("session_id").is_none());
    let data = &health["data"];
    assert_eq!(
        data["status_breakdown"],
        serde_json::json!({"active": 2, "idle": 0, "disconnected": 1, "total": 3})
    );
    assert_eq!(data["timestamp"], health["timestamp"]);
    // The same counts, kept for a metrics scrape (stored before the summary is sent).
    assert_eq!(
        w.hub.recent_counts(Duration::from_secs(3600)),
        Some(tether_domain::StatusCounts {
            active: 2,
            idle: 0,
            disconnected: 1
        })
    );
    let sessions = data["sessions"].as_array().unwrap();
    let ids: Vec<&str> = sessions
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "c", "b"], "newest activity first");
    let b = &sessions[2];
    assert_eq!(b["status"], "disconnected");
    assert_eq!(b["disconnect_reason"], "client_closed");
    assert_eq!(b["client_version"], "1.2");
    assert!(b.get("reconnect_token_hash").is_none() && b.get("token").is_none());
    w.stop().await;
}

#[actix_rt::test]
async fn oversized_inbound_frames_close_with_1009_and_small_ones_are_ignored() {
    let w = world(RealtimeConfig::default()).await;
    let mut d = w.dial("").await;
    d.send(Message::Text("hello".into())).await;
    d.send(Message::Binary(vec![0u8; 4096].into())).await;
    w.open("a").await;
    assert_eq!(seq(&d.next_event().await), 1, "still served");

    d.send(Message::Text("x".repeat(4097).into())).await;
    let (code, reason) = d.close_frame().await;
    assert_eq!(code, CloseCode::Size);
    assert_eq!(u16::from(code), 1009);
    assert_eq!(reason.as_deref(), Some("message_too_big"));

    // Fragments that are each small enough but add up to too much are refused the same way.
    let mut fragmented = w.dial("").await;
    fragmented
        .send(Message::Continuation(Item::FirstText(
            vec![b'x'; 3000].into(),
        )))
        .await;
    fragmented
        .send(Message::Continuation(Item::Continue(
            vec![b'x'; 3000].into(),
        )))
        .await;
    assert_eq!(fragmented.close_frame().await.0, CloseCode::Size);
    w.stop().await;
}

#[actix_rt::test]
async fn unanswered_pings_close_the_connection_and_answered_ones_do_not() {
    let w = world(RealtimeConfig {
        // Generous enough that a loaded machine answers in time; the silent client still closes
        // within a second (at the third tick).
        ping_interval: Duration::from_millis(200),
        ..RealtimeConfig::default()
    })
    .await;
    let mut silent = Dashboard::dial(&w.url, &[], false).await;
    let mut alive = Dashboard::dial(&w.url, &[], true).await;

    let (code, reason) = silent.close_frame().await;
    assert_eq!(code, CloseCode::Policy);
    assert_eq!(reason.as_deref(), Some("heartbeat_timeout"));

    // Meanwhile the answering one has been pinged several times and is still served.
    let mut pings = 0;
    while pings < 4 {
        match alive.frame().await {
            Frame::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    w.open("a").await;
    assert_eq!(seq(&alive.next_event().await), 1);
    w.stop().await;
}

#[actix_rt::test]
async fn shutdown_closes_dashboards_with_1001() {
    let w = world(RealtimeConfig::default()).await;
    let mut d = w.dial("").await;
    w.hub.shutdown().await;
    let (code, reason) = d.close_frame().await;
    assert_eq!(code, CloseCode::Away);
    assert_eq!(reason.as_deref(), Some("server_shutdown"));

    // A connection to a stopped hub is upgraded and closed the same way.
    let mut late = w.dial("").await;
    assert_eq!(late.close_frame().await.0, CloseCode::Away);
    w.stop().await;
}

#[actix_rt::test]
async fn a_plain_request_is_not_upgraded() {
    let w = world(RealtimeConfig::default()).await;
    let response = awc::Client::new().get(&w.url).send().await.unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    assert_eq!(w.hub.stats().connections, 0);
    w.stop().await;
}
