//! Durable sessions through rmcp's own streamable HTTP service (no web framework, as an embedder
//! runs it): an in-memory registry, a real token authority, and a "process" being a fresh
//! `LocalSessionManager` in front of the same registry.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use tether_domain::{
    CollectingSink, DisconnectReason, EventKind, InMemoryStore, ManualClock, Policy, SessionId,
    SessionManager, SessionStatus, UpdateType,
};
use tether_mcp::{DurableSessionManager, McpSessions, SessionTools, TetherServer};

type Service = StreamableHttpService<TetherServer, DurableSessionManager<LocalSessionManager>>;

struct World {
    sessions: McpSessions,
    events: Arc<CollectingSink>,
    clock: Arc<ManualClock>,
}

fn world() -> World {
    world_with(Policy::defaults())
}

fn world_with(policy: Policy) -> World {
    let secret = tether_auth::Secret::new(vec![9u8; 32]).unwrap();
    let tokens = tether_auth::Authority::new(
        tether_auth::Keyring::new(secret),
        "tether",
        "tether-reconnect",
        Duration::from_secs(15 * 60),
    )
    .unwrap();
    let events = Arc::new(CollectingSink::default());
    let clock = Arc::new(ManualClock::at_wall_time());
    let manager = SessionManager::new(
        Arc::new(InMemoryStore::new()),
        Arc::new(tokens),
        events.clone(),
        clock.clone(),
        policy,
    )
    .unwrap();
    World {
        sessions: McpSessions::new(manager),
        events,
        clock,
    }
}

/// One "process": its own in-memory session table, the shared registry behind it.
fn process(w: &World) -> Service {
    let tools = SessionTools::new(w.sessions.clone());
    let mut config = StreamableHttpServerConfig::default();
    config.session_store = Some(w.sessions.store());
    StreamableHttpService::new(
        move || Ok(TetherServer::new(&tools)),
        Arc::new(DurableSessionManager::new(
            LocalSessionManager::default(),
            w.sessions.clone(),
        )),
        config,
    )
}

/// One request; the status, the `mcp-session-id` header and the last JSON-RPC message of the body.
async fn send(
    svc: &Service,
    method: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, Option<String>, Value) {
    let mut req = http::Request::builder()
        .method(method)
        .uri("http://127.0.0.1/mcp")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let resp = svc.handle(req.body(Full::new(body)).unwrap()).await;
    let status = resp.status().as_u16();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    let message = serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .rev()
            .filter_map(|l| l.strip_prefix("data:"))
            .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .unwrap_or(Value::Null)
    });
    (status, sid, message)
}

async fn initialize(svc: &Service, client: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": client, "version": "4.5"}}});
    let (status, sid, reply) = send(svc, "POST", &[], init).await;
    assert_eq!(status, 200, "{reply}");
    let sid = sid.unwrap();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, _) = send(svc, "POST", &[("mcp-session-id", &sid)], note).await;
    assert_eq!(status, 202);
    sid
}

async fn tool(svc: &Service, sid: &str, name: &str, args: Value) -> (u16, Value) {
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": name, "arguments": args}});
    let headers = [
        ("mcp-session-id", sid),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let (status, _, reply) = send(svc, "POST", &headers, call).await;
    (status, reply)
}

fn activity_writes(w: &World) -> usize {
    w.events
        .kinds()
        .into_iter()
        .filter(|k| *k == EventKind::Updated(UpdateType::Activity))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_registers_the_client_and_every_request_is_activity() {
    let w = world_with(
        Policy::defaults()
            .with_activity_interval(std::time::Duration::ZERO)
            .unwrap(),
    );
    let svc = process(&w);
    let sid = initialize(&svc, "claude-code").await;
    let session = w
        .sessions
        .manager()
        .get(&SessionId::parse(&sid).unwrap())
        .await
        .unwrap();
    assert_eq!(session.client_type(), "claude-code");
    assert_eq!(session.client_version(), Some("4.5"));
    assert!(
        session
            .metadata()
            .as_map()
            .contains_key(tether_mcp::MCP_METADATA_KEY)
    );

    let (status, reply) = tool(&svc, &sid, "session_info", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        reply["result"]["structuredContent"]["session_id"],
        sid.as_str()
    );
    assert_eq!(
        activity_writes(&w),
        2,
        "the notification and the call each count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_is_written_once_per_interval() {
    let w = world();
    let svc = process(&w);
    let sid = initialize(&svc, "cli").await;
    for _ in 0..20 {
        assert_eq!(tool(&svc, &sid, "session_info", json!({})).await.0, 200);
    }
    assert_eq!(
        activity_writes(&w),
        1,
        "21 requests inside one second: one write"
    );
    w.clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(tool(&svc, &sid, "session_info", json!({})).await.0, 200);
    assert_eq!(activity_writes(&w), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_process_restores_the_session_instead_of_404() {
    let w = world();
    let first = process(&w);
    let sid = initialize(&first, "cursor").await;
    drop(first);

    let second = process(&w);
    let (status, reply) = tool(&second, &sid, "session_info", json!({})).await;
    assert_eq!(status, 200, "{reply}");
    let info = &reply["result"]["structuredContent"];
    assert_eq!(info["session_id"], sid.as_str());
    assert_eq!(info["client_type"], "cursor");
    let (status, _) = tool(&second, &sid, "get_reconnect_token", json!({})).await;
    assert_eq!(status, 200, "served from memory after the restore");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_ends_the_session_and_an_ended_session_is_gone_everywhere() {
    let w = world();
    let a = process(&w);
    let b = process(&w);
    let sid = initialize(&a, "cli").await;
    let (status, _, _) = send(&a, "DELETE", &[("mcp-session-id", &sid)], Value::Null).await;
    assert!((200..300).contains(&status), "{status}");
    let session = w
        .sessions
        .manager()
        .get(&SessionId::parse(&sid).unwrap())
        .await
        .unwrap();
    assert_eq!(session.status(), SessionStatus::Disconnected);
    assert_eq!(
        session.disconnect_reason().unwrap().as_str(),
        "client_closed"
    );
    assert_eq!(tool(&a, &sid, "session_info", json!({})).await.0, 404);
    assert_eq!(tool(&b, &sid, "session_info", json!({})).await.0, 404);

    // Ended by someone else (an operator over REST): the live worker notices on the next request.
    let other = initialize(&a, "cli").await;
    let id = SessionId::parse(&other).unwrap();
    w.sessions
        .manager()
        .disconnect(&id, DisconnectReason::parse("admin").unwrap())
        .await
        .unwrap();
    assert_eq!(tool(&a, &other, "session_info", json!({})).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_binding_survives_a_new_process() {
    let w = world();
    let a = process(&w);
    let old = initialize(&a, "cli").await;
    let (_, grant) = tool(&a, &old, "get_reconnect_token", json!({})).await;
    let token = grant["result"]["structuredContent"]["reconnect_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let fresh = initialize(&a, "cli").await;
    let (_, resumed) = tool(
        &a,
        &fresh,
        "reconnect_session",
        json!({"session_id": old, "token": token}),
    )
    .await;
    assert_eq!(
        resumed["result"]["structuredContent"]["reconnect_count"], 1,
        "{resumed}"
    );

    // A new process knows nothing in memory; the row of `fresh` says it resumed `old`.
    let b = process(&w);
    let (status, info) = tool(&b, &fresh, "session_info", json!({})).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        info["result"]["structuredContent"]["session_id"],
        old.as_str()
    );
    // Resuming yet another session from the same MCP session is refused before any token is spent.
    let third = initialize(&b, "cli").await;
    let (_, t3) = tool(&b, &third, "get_reconnect_token", json!({})).await;
    let t3 = t3["result"]["structuredContent"]["reconnect_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, refused) = tool(
        &b,
        &fresh,
        "reconnect_session",
        json!({"session_id": third, "token": t3}),
    )
    .await;
    assert_eq!(
        refused["result"]["structuredContent"]["code"], "invalid_request",
        "{refused}"
    );
    let (_, ok) = tool(
        &b,
        &third,
        "reconnect_session",
        json!({"session_id": third, "token": t3}),
    )
    .await;
    assert_eq!(
        ok["result"]["isError"], false,
        "t3 was not spent by the refusal: {ok}"
    );
}
