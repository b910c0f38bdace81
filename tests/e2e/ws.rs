//! Live monitoring end to end: real WebSocket clients against the real binary. Every wait is for a
//! message, bounded; nothing sleeps to let an event happen.

use std::time::Duration;

use awc::ws::{CloseCode, Frame, Message};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};

use crate::support::{Db, KEY, Server};

const BOUND: Duration = Duration::from_secs(15);

type Socket = actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>;

/// One dashboard connection.
pub struct Dash {
    socket: Socket,
}

/// How a dashboard authenticates.
pub enum Auth<'a> {
    Key(&'a str),
    Ticket(&'a str),
    None,
}

impl Dash {
    /// Opens the stream; `Err(status)` when the server refused the upgrade.
    pub async fn open(
        server: &Server,
        query: &str,
        auth: Auth<'_>,
        origin: Option<&str>,
    ) -> Result<Self, u16> {
        let ws_base = server.base.replacen("http://", "ws://", 1);
        let mut url = format!("{ws_base}/ws/sessions");
        let mut params = vec![];
        if let Auth::Ticket(t) = auth {
            params.push(format!("ticket={t}"));
        }
        if !query.is_empty() {
            params.push(query.to_owned());
        }
        if !params.is_empty() {
            url = format!("{url}?{}", params.join("&"));
        }
        let mut req = awc::Client::builder()
            .timeout(BOUND)
            .finish()
            .ws(url)
            .max_frame_size(64 * 1024 * 1024);
        if let Auth::Key(k) = auth {
            req = req.bearer_auth(k);
        }
        if let Some(o) = origin {
            req = req.origin(o);
        }
        match req.connect().await {
            Ok((resp, socket)) => {
                assert_eq!(resp.status().as_u16(), 101);
                Ok(Self { socket })
            }
            Err(awc::error::WsClientError::InvalidResponseStatus(status)) => Err(status.as_u16()),
            Err(e) => panic!("WebSocket connect failed: {e}"),
        }
    }

    pub async fn with_key(server: &Server, query: &str) -> Self {
        Self::open(server, query, Auth::Key(KEY), None)
            .await
            .unwrap()
    }

    /// The next frame that is not a ping (pings are answered), within the bound.
    async fn frame(&mut self) -> Frame {
        loop {
            let frame = tokio::time::timeout(BOUND, self.socket.next())
                .await
                .expect("no frame within the bound")
                .expect("stream ended")
                .expect("bad frame");
            match frame {
                Frame::Ping(p) => self.socket.send(Message::Pong(p)).await.unwrap(),
                Frame::Pong(_) => {}
                other => return other,
            }
        }
    }

    /// The next JSON message.
    pub async fn message(&mut self) -> Value {
        match self.frame().await {
            Frame::Text(bytes) => serde_json::from_slice(&bytes).unwrap(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// The next message that is not a health update.
    pub async fn event(&mut self) -> Value {
        loop {
            let m = self.message().await;
            if m["type"] != "health_update" {
                return m;
            }
        }
    }

    /// The next message of `kind`, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let m = self.message().await;
            if m["type"] == kind {
                return m;
            }
        }
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        loop {
            match tokio::time::timeout(BOUND, self.socket.next())
                .await
                .expect("not closed within the bound")
            {
                None => return None,
                Some(Ok(Frame::Close(reason))) => {
                    return reason.map(|r| (u16::from(r.code), r.description.unwrap_or_default()));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) => return None,
            }
        }
    }

    pub async fn send_text(&mut self, text: String) {
        self.socket.send(Message::Text(text.into())).await.unwrap();
    }
}

fn seq(m: &Value) -> u64 {
    m["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {m}"))
}

/// Every kind of event, as a client causes them, seen by two dashboards alike.
async fn every_event_reaches_every_dashboard(server: &Server) {
    let mut a = Dash::with_key(server, "").await;
    let mut b = Dash::with_key(server, "").await;

    server.create("live").await;
    server
        .call("POST", "/sessions/live/activity", None, true)
        .await;
    let first = server.mint("live").await;
    let (_, r) = server.reconnect("live", &first).await;
    assert_eq!(r["reconnect_count"], 1);
    let (status, _) = server.reconnect("live", &first).await;
    assert_eq!(status, 401);
    server
        .call(
            "DELETE",
            "/sessions/live",
            Some(r#"{"reason":"admin"}"#),
            true,
        )
        .await;

    let mut seen_a = vec![];
    for _ in 0..6 {
        seen_a.push(a.event().await);
    }
    let types: Vec<&str> = seen_a.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "session_created",
            "session_updated",
            "session_updated",
            "session_updated",
            "token_reused",
            "session_disconnected"
        ]
    );
    for m in &seen_a {
        assert_eq!(m["session_id"], "live", "{m}");
        assert!(m["timestamp"].as_str().unwrap().ends_with('Z'), "{m}");
        let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 5, "type, seq, timestamp, session_id, data: {m}");
    }
    assert!(
        seen_a.windows(2).all(|w| seq(&w[0]) < seq(&w[1])),
        "increasing seq"
    );
    assert_eq!(
        seen_a[0]["data"],
        json!({"client_type": "e2e", "status": "active"})
    );
    assert_eq!(
        seen_a[1]["data"],
        json!({"update_type": "activity", "status": "active", "reconnect_count": 0})
    );
    assert_eq!(seen_a[2]["data"]["update_type"], "token_issued");
    assert_eq!(
        seen_a[3]["data"],
        json!({"update_type": "reconnected", "status": "active", "reconnect_count": 1})
    );
    assert_eq!(seen_a[4]["data"], json!({}));
    assert_eq!(
        seen_a[5]["data"],
        json!({"reason": "admin", "status": "disconnected"})
    );

    let mut seen_b = vec![];
    for _ in 0..6 {
        seen_b.push(b.event().await);
    }
    assert_eq!(seen_a, seen_b, "two dashboards see the same sequence");
}

#[actix_rt::test]
async fn sqlite_every_event_reaches_every_dashboard() {
    let db = Db::sqlite();
    let server = Server::start(db.url());
    every_event_reaches_every_dashboard(&server).await;
    drop(server);
    db.remove().await;
}

#[actix_rt::test]
async fn postgres_every_event_reaches_every_dashboard() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    let server = Server::start(db.url());
    every_event_reaches_every_dashboard(&server).await;
    drop(server);
    db.remove().await;
}

#[actix_rt::test]
async fn idle_and_health_updates_arrive() {
    let db = Db::sqlite();
    let server = Server::start_with(&crate::support::env_with(
        &db,
        &[
            ("TETHER_SESSIONS__IDLE_AFTER_SECS", "1"),
            ("TETHER_SESSIONS__SWEEP_INTERVAL_SECS", "1"),
            ("TETHER_WS__HEALTH_INTERVAL_MS", "200"),
        ],
    ));
    let mut dash = Dash::with_key(&server, "").await;
    server.create("sleepy").await;
    let created = dash.next_of("session_created").await;
    let idle = dash.event().await;
    assert_eq!(idle["type"], "session_updated");
    assert_eq!(idle["data"]["update_type"], "idle");
    assert_eq!(idle["data"]["status"], "idle");
    assert!(seq(&idle) > seq(&created));

    let health = dash.next_of("health_update").await;
    assert_eq!(
        seq(&health),
        seq(&idle),
        "a health update carries the last event's seq"
    );
    let data = &health["data"];
    assert_eq!(
        data["status_breakdown"],
        json!({"active": 0, "idle": 1, "disconnected": 0, "total": 1})
    );
    assert_eq!(data["sessions"][0]["session_id"], "sleepy");
    assert!(data["sessions"][0].get("token_hash").is_none());
    assert!(data["timestamp"].is_string());

    // `?health=summary`: the same update without the list, beside a dashboard that keeps it; a mode
    // that does not exist is refused before the upgrade.
    let mut summary = Dash::with_key(&server, "health=summary").await;
    let short = summary.next_of("health_update").await;
    assert!(short["data"].get("sessions").is_none(), "{short}");
    assert_eq!(short["data"]["status_breakdown"], data["status_breakdown"]);
    let full = dash.next_of("health_update").await;
    assert_eq!(full["data"]["sessions"][0]["session_id"], "sleepy");
    let refused = Dash::open(&server, "health=everything", Auth::Key(KEY), None).await;
    assert_eq!(refused.err(), Some(400));
    drop(summary);
    drop(dash);
    drop(server);
    db.remove().await;
}

async fn resume_loses_and_repeats_nothing(server: &Server) {
    let mut dash = Dash::with_key(server, "").await;
    server.create("r1").await;
    server.create("r2").await;
    let _ = dash.event().await;
    let last = seq(&dash.event().await);
    drop(dash);

    // Missed while away.
    for id in ["r3", "r4", "r5"] {
        server.create(id).await;
    }
    let mut back = Dash::with_key(server, &format!("since={last}")).await;
    let mut replayed = vec![];
    loop {
        let m = back.event().await;
        if m["type"] == "resumed" {
            assert_eq!(m["data"]["recovered"], true, "{m}");
            assert!(m["data"]["epoch"].is_string());
            assert_eq!(seq(&m), seq(replayed.last().unwrap()));
            break;
        }
        replayed.push(m);
    }
    let ids: Vec<&str> = replayed
        .iter()
        .map(|m| m["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r3", "r4", "r5"]);
    // And live again, with nothing repeated.
    server.create("r6").await;
    let live = back.event().await;
    assert_eq!(live["session_id"], "r6");
    assert!(seq(&live) > seq(replayed.last().unwrap()));

    // Last-Event-ID works the same.
    let from = seq(&replayed[0]);
    let mut again = Dash::open(server, "", Auth::Key(KEY), None).await.unwrap();
    drop(again.socket.close().await);
    let ws_base = server.base.replacen("http://", "ws://", 1);
    let (_, socket) = awc::Client::new()
        .ws(format!("{ws_base}/ws/sessions"))
        .bearer_auth(KEY)
        .header("Last-Event-ID", from.to_string())
        .connect()
        .await
        .unwrap();
    again = Dash { socket };
    let first = again.event().await;
    assert_eq!(first["session_id"], "r4");
}

#[actix_rt::test]
async fn sqlite_resume_loses_and_repeats_nothing() {
    let db = Db::sqlite();
    let server = Server::start(db.url());
    resume_loses_and_repeats_nothing(&server).await;
    drop(server);
    db.remove().await;
}

#[actix_rt::test]
async fn postgres_resume_loses_and_repeats_nothing() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    let server = Server::start(db.url());
    resume_loses_and_repeats_nothing(&server).await;
    drop(server);
    db.remove().await;
}

#[actix_rt::test]
async fn resume_after_pruning_is_not_recovered() {
    let db = Db::sqlite();
    let server = Server::start_with(&crate::support::env_with(
        &db,
        &[
            ("TETHER_EVENTS__RETENTION_COUNT", "2"),
            ("TETHER_SESSIONS__SWEEP_INTERVAL_SECS", "1"),
        ],
    ));
    for n in 0..6 {
        server.create(&format!("p{n}")).await;
    }
    // Pruning runs with the sweep; its log line says when it has removed events.
    server.wait_for_log("outbox pruned").await;
    let mut dash = Dash::with_key(&server, "since=0").await;
    let resumed = dash.next_of("resumed").await;
    assert_eq!(resumed["data"]["recovered"], false, "{resumed}");
    drop(dash);
    drop(server);
    db.remove().await;
}

#[actix_rt::test]
async fn refused_before_the_upgrade() {
    let db = Db::sqlite();
    let server = Server::start(db.url());
    assert_eq!(
        Dash::open(&server, "", Auth::None, None).await.err(),
        Some(401)
    );
    assert_eq!(
        Dash::open(&server, "", Auth::Key("wrong-key-0123456789"), None)
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        Dash::open(&server, "", Auth::Ticket("made-up"), None)
            .await
            .err(),
        Some(401)
    );

    let (status, t) = server.call("POST", "/ws/ticket", None, true).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["expires_in_seconds"], 30);
    let ticket = t["ticket"].as_str().unwrap().to_owned();
    let (status, _) = server.call("POST", "/ws/ticket", None, false).await;
    assert_eq!(status, 401, "minting a ticket needs the API key");

    // A plain GET (no upgrade) is refused without spending the ticket.
    let (status, body) = server
        .call("GET", &format!("/ws/sessions?ticket={ticket}"), None, false)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );

    // A browser: its own origin and a ticket.
    let own = server.base.trim_end_matches("/api/mcp").to_owned();
    let dash = Dash::open(&server, "", Auth::Ticket(&ticket), Some(&own)).await;
    assert!(dash.is_ok(), "{:?}", dash.err());
    assert_eq!(
        Dash::open(&server, "", Auth::Ticket(&ticket), Some(&own))
            .await
            .err(),
        Some(401),
        "a ticket works once"
    );

    let (_, t) = server.call("POST", "/ws/ticket", None, true).await;
    let ticket = t["ticket"].as_str().unwrap().to_owned();
    assert_eq!(
        Dash::open(
            &server,
            "",
            Auth::Ticket(&ticket),
            Some("https://evil.example")
        )
        .await
        .err(),
        Some(403)
    );
    assert_eq!(
        Dash::open(&server, "", Auth::Key(KEY), Some("https://evil.example"))
            .await
            .err(),
        Some(403)
    );
    drop(server);
    db.remove().await;
}

#[actix_rt::test]
async fn oversized_inbound_frames_are_refused() {
    let db = Db::sqlite();
    let server = Server::start(db.url());
    let mut dash = Dash::with_key(&server, "").await;
    dash.send_text("x".repeat(5000)).await;
    let closed = dash.closed().await;
    assert_eq!(closed.map(|c| c.0), Some(u16::from(CloseCode::Size)));
    drop(server);
    db.remove().await;
}

/// A dashboard that stops reading is closed with 1013 while another keeps receiving.
#[actix_rt::test]
async fn a_stalled_dashboard_is_closed_and_the_others_keep_up() {
    let db = Db::sqlite();
    let server = Server::start_with(&crate::support::env_with(
        &db,
        &[
            ("TETHER_WS__HEALTH_INTERVAL_MS", "50"),
            ("TETHER_WS__QUEUE_CAPACITY", "4"),
        ],
    ));
    // Big health updates fill the stalled client's socket buffers quickly.
    let metadata = json!({ "blob": "m".repeat(15_000) });
    for n in 0..50 {
        let (status, _) = server
            .post("/sessions", &json!({"client_type": "e2e", "session_id": format!("big{n}"), "metadata": metadata}))
            .await;
        assert_eq!(status, 201);
    }
    let mut stalled = Dash::with_key(&server, "").await;
    let mut reader = Dash::with_key(&server, "").await;

    // Keep the reader reading until the server has dropped the stalled one (health reports it).
    let mut dropped = false;
    for _ in 0..600 {
        let _ = reader.message().await;
        let (_, health) = server.call("GET", "/health", None, false).await;
        if health["dashboards"] == 1 {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the stalled dashboard was never dropped");
    assert_eq!(
        stalled.closed().await,
        Some((1013, "slow_consumer".to_owned()))
    );

    server.create("after").await;
    let m = reader.next_of("session_created").await;
    assert_eq!(
        m["session_id"], "after",
        "the other dashboard keeps receiving"
    );
    drop(server);
    db.remove().await;
}

/// Two instances on one PostgreSQL database: a change made through one reaches a dashboard on the
/// other, and still does, without loss, after the other's listening connection is killed.
#[actix_rt::test]
async fn postgres_events_cross_instances_and_survive_a_killed_listener() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    let one = Server::start(db.url());
    let two = Server::start(db.url());
    let mut dash = Dash::with_key(&two, "").await;

    one.create("from-one").await;
    let m = dash.event().await;
    assert_eq!(
        (m["type"].as_str(), m["session_id"].as_str()),
        (Some("session_created"), Some("from-one"))
    );

    let admin =
        tether_persistence::Database::connect(db.url(), tether_persistence::Options::default())
            .await
            .unwrap();
    let killed = admin.terminate_backends("tether-listener").await.unwrap();
    assert!(killed >= 1, "the listeners were found and killed");
    let ids: Vec<String> = (0..5).map(|n| format!("after-kill-{n}")).collect();
    for id in &ids {
        one.create(id).await;
    }
    let mut got = vec![];
    while got.len() < ids.len() {
        let m = dash.event().await;
        got.push(m["session_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, ids, "every event, in order, none twice");
    drop(admin);
    drop(dash);
    drop(one);
    drop(two);
    db.remove().await;
}
