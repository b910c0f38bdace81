//! MCP over the real binary: rmcp's own client for the stories a client lives through (initialize,
//! tools, restart, resume with a token), and raw HTTP where a client library would hide the wire
//! (another instance, bad input).

use std::collections::BTreeSet;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ServiceError, ServiceExt as _};
use serde_json::{Value, json};

use crate::support::{Db, KEY, Server, base_env};
use crate::ws::Dash;

type Client = RunningService<RoleClient, ClientConfig>;

const TOOLS: [&str; 5] = [
    "end_session",
    "get_reconnect_token",
    "open_session",
    "reconnect_session",
    "session_info",
];

fn mcp_url(server: &Server) -> String {
    server.base.replacen("/api/mcp", "/mcp", 1)
}

/// An rmcp client in its default (legacy, protocol-session) mode, never re-initializing behind our
/// back: a 404 must surface as an error here.
async fn connect(server: &Server, name: &str) -> Client {
    let config = StreamableHttpClientTransportConfig::with_uri(mcp_url(server))
        .auth_header(KEY)
        .reinit_on_expired_session(false);
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new(name, "1.2.3"),
    )
    .serve(StreamableHttpClientTransport::from_config(config))
    .await
    .expect("MCP initialize")
}

async fn call(
    client: &Client,
    tool: &'static str,
    args: Value,
) -> Result<CallToolResult, ServiceError> {
    let mut params = CallToolRequestParams::new(tool);
    if let Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    client.call_tool(params).await
}

/// A tool call that must succeed; its structured content.
async fn ok(client: &Client, tool: &'static str, args: Value) -> Value {
    let r = call(client, tool, args).await.expect("tools/call");
    assert_eq!(r.is_error, Some(false), "{tool}: {r:?}");
    r.structured_content.expect("structured content")
}

/// A tool call that must fail as a tool error; its result code.
async fn tool_error(client: &Client, tool: &'static str, args: Value) -> String {
    let r = call(client, tool, args).await.expect("tools/call");
    assert_eq!(r.is_error, Some(true), "{tool} should fail: {r:?}");
    let s = r.structured_content.expect("structured error");
    assert_eq!(s["success"], false);
    s["code"].as_str().unwrap().to_owned()
}

async fn session_count(server: &Server) -> usize {
    let (status, body) = server.get("/sessions?limit=500").await;
    assert_eq!(status, 200);
    body["sessions"].as_array().unwrap().len()
}

async fn lifecycle(server: &Server) {
    let mut dash = Dash::with_key(server, "").await;

    let a = connect(server, "rmcp-e2e").await;
    let tools = a.list_all_tools().await.unwrap();
    let names: BTreeSet<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, TOOLS.into_iter().collect());
    assert!(
        tools.iter().all(|t| t.output_schema.is_some()),
        "every tool has an output schema"
    );

    let info = ok(&a, "session_info", json!({})).await;
    let a_id = info["session_id"].as_str().unwrap().to_owned();
    assert_eq!(info["client_type"], "rmcp-e2e");
    assert_eq!(info["client_version"], "1.2.3");
    assert_eq!(info["status"], "active");
    assert_eq!(info["reconnect_count"], 0);

    // The REST API and the dashboards see it like any other session.
    let (status, rest) = server.get(&format!("/sessions/{a_id}")).await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["client_type"], "rmcp-e2e");
    let created = dash.next_of("session_created").await;
    assert_eq!(created["session_id"], a_id.as_str());
    assert_eq!(created["data"]["client_type"], "rmcp-e2e");

    // A client that lost its MCP session resumes the old one from a fresh one with the token.
    let token = ok(&a, "get_reconnect_token", json!({})).await;
    let token = token["reconnect_token"].as_str().unwrap().to_owned();
    let b = connect(server, "rmcp-e2e").await;
    let b_own = ok(&b, "session_info", json!({})).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resumed = ok(
        &b,
        "reconnect_session",
        json!({"session_id": a_id, "token": token}),
    )
    .await;
    assert_eq!(resumed["success"], true);
    assert_eq!(resumed["message"], "Session reconnected");
    assert_eq!(resumed["reconnect_count"], 1);
    let rotated = resumed["reconnect_token"].as_str().unwrap().to_owned();
    assert_ne!(rotated, token);
    let now = ok(&b, "session_info", json!({})).await;
    assert_eq!(
        now["session_id"],
        a_id.as_str(),
        "b is bound to the resumed session"
    );
    assert_eq!(now["reconnect_count"], 1);
    let (_, placeholder) = server.get(&format!("/sessions/{b_own}")).await;
    assert_eq!(placeholder["status"], "disconnected");
    assert_eq!(placeholder["disconnect_reason"], format!("resumed:{a_id}"));

    // Replaying the spent token is reuse: refused, and the live token is revoked too.
    let c = connect(server, "rmcp-e2e").await;
    let replay = json!({"session_id": a_id, "token": token});
    assert_eq!(
        tool_error(&c, "reconnect_session", replay).await,
        "token_reused"
    );
    let live = json!({"session_id": a_id, "token": rotated});
    assert_eq!(
        tool_error(&c, "reconnect_session", live).await,
        "token_reused"
    );
    assert_eq!(
        dash.next_of("token_reused").await["session_id"],
        a_id.as_str()
    );

    // Scoped: C can neither read nor mint for A without A's token.
    let scoped = json!({"session_id": a_id});
    assert_eq!(
        tool_error(&c, "session_info", scoped.clone()).await,
        "session_id_mismatch"
    );
    assert_eq!(
        tool_error(&c, "get_reconnect_token", scoped.clone()).await,
        "session_id_mismatch"
    );
    assert_eq!(
        tool_error(&c, "end_session", scoped).await,
        "session_id_mismatch"
    );
    let forged = json!({"session_id": a_id, "token": "not-a-token"});
    assert_eq!(
        tool_error(&c, "session_info", forged).await,
        "invalid_token"
    );
    let (_, a_row) = server.get(&format!("/sessions/{a_id}")).await;
    assert_eq!(a_row["status"], "active", "A untouched by C");

    // end_session ends the caller's session; its MCP session is over (404, no re-initialize).
    let ended = ok(&c, "end_session", json!({})).await;
    assert_eq!(ended["status"], "disconnected");
    assert_eq!(ended["disconnect_reason"], "client_closed");
    assert!(call(&c, "session_info", json!({})).await.is_err());

    for client in [a, b, c] {
        let _ = client.cancel().await;
    }
}

#[actix_rt::test]
async fn sqlite_mcp_lifecycle_with_rmcp_client() {
    let db = Db::sqlite();
    let server = Server::start(db.url());
    lifecycle(&server).await;
    drop(server);
    db.remove().await;
}

#[actix_rt::test]
async fn postgres_mcp_lifecycle_with_rmcp_client() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    let server = Server::start(db.url());
    lifecycle(&server).await;
    drop(server);
    db.remove().await;
}

/// The same client, the same `Mcp-Session-Id`, a new `tether` process: no 404, no new initialize.
async fn survives_restart(db: &Db) {
    let first = Server::start(db.url());
    let port = first
        .base
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let client = connect(&first, "restart-e2e").await;
    let before = ok(&client, "session_info", json!({})).await;
    assert!(first.terminate().success());

    let mut env = base_env(db.url());
    env.retain(|(k, _)| k != "TETHER_SERVER__BIND");
    env.push(("TETHER_SERVER__BIND".into(), format!("127.0.0.1:{port}")));
    let second = Server::start_with(&env);
    let after = ok(&client, "session_info", json!({})).await;
    assert_eq!(after["session_id"], before["session_id"]);
    assert_eq!(after["client_type"], "restart-e2e");
    assert_eq!(session_count(&second).await, 1, "no new session was opened");
    ok(&client, "get_reconnect_token", json!({})).await;
    let _ = client.cancel().await;
}

#[actix_rt::test]
async fn sqlite_mcp_session_survives_a_restart() {
    let db = Db::sqlite();
    survives_restart(&db).await;
    db.remove().await;
}

#[actix_rt::test]
async fn postgres_mcp_session_survives_a_restart() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    survives_restart(&db).await;
    db.remove().await;
}

/// One raw MCP request; the status, the `mcp-session-id` header and the JSON-RPC message (from a
/// JSON body or the last `data:` line of an event stream; Null when there is none).
async fn raw(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, Option<String>, Value) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish();
    let mut req = client
        .post(url)
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Accept", "application/json, text/event-stream"));
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut resp = req.send_body(body.to_owned()).await.unwrap();
    let status = resp.status().as_u16();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = resp.body().limit(1 << 20).await.unwrap();
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

const AUTH: (&str, &str) = ("Authorization", "Bearer e2e-api-key-0123456789");
const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw-e2e","version":"9"}}}"#;

fn tools_call(tool: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": args}})
        .to_string()
}

/// Initializes over raw HTTP; the MCP session id.
async fn raw_initialize(url: &str) -> String {
    let (status, sid, init) = raw(url, &[AUTH], INIT).await;
    assert_eq!(status, 200, "{init}");
    let sid = sid.expect("mcp-session-id");
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let (status, _, _) = raw(url, &[AUTH, ("Mcp-Session-Id", &sid)], note).await;
    assert_eq!(status, 202);
    sid
}

#[actix_rt::test]
async fn postgres_a_session_moves_between_instances() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    // Every request written: an end on one instance is then seen by the other at once (with the
    // default 1 s coalescing, within that second).
    let mut env = base_env(db.url());
    env.push((
        "TETHER_SESSIONS__ACTIVITY_WRITE_INTERVAL_MS".into(),
        "0".into(),
    ));
    let a = Server::start_with(&env);
    let b = Server::start_with(&env);
    let sid = raw_initialize(&mcp_url(&a)).await;
    let headers = [
        AUTH,
        ("Mcp-Session-Id", sid.as_str()),
        ("MCP-Protocol-Version", "2025-06-18"),
    ];
    let (status, _, reply) = raw(
        &mcp_url(&b),
        &headers,
        &tools_call("session_info", json!({})),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let info = &reply["result"]["structuredContent"];
    assert_eq!(info["session_id"], sid.as_str(), "{reply}");
    assert_eq!(info["client_type"], "raw-e2e");
    // And back: A still serves it, and B's activity is in the shared row.
    let (status, _, reply) = raw(
        &mcp_url(&a),
        &headers,
        &tools_call("session_info", json!({})),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["result"]["structuredContent"]["session_id"],
        sid.as_str()
    );
    // DELETE on B ends it for everyone.
    let del = awc::Client::default()
        .delete(mcp_url(&b))
        .insert_header(AUTH)
        .insert_header(("Mcp-Session-Id", sid.as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status().as_u16(), 204);
    let (_, row) = a.get(&format!("/sessions/{sid}")).await;
    assert_eq!(row["status"], "disconnected");
    assert_eq!(row["disconnect_reason"], "client_closed");
    let (status, _, _) = raw(
        &mcp_url(&a),
        &headers,
        &tools_call("session_info", json!({})),
    )
    .await;
    assert_eq!(status, 404);
    drop((a, b));
    db.remove().await;
}

#[actix_rt::test]
async fn bad_mcp_input_gets_the_protocols_answer_and_creates_nothing() {
    let db = Db::sqlite();
    let server = Server::start(db.url());
    let url = mcp_url(&server);
    // A REST session with a guessable id: MCP must not reach it by naming it.
    server.create("rest-only").await;
    let sid = raw_initialize(&url).await;
    assert_eq!(session_count(&server).await, 2);
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;

    // Unknown, malformed, and non-MCP session ids: 404, as the transport spec says.
    for bad in [
        "no-such-session",
        "../../etc",
        "rest-only",
        &"x".repeat(300),
    ] {
        let (status, _, _) = raw(&url, &[AUTH, ("Mcp-Session-Id", bad)], list).await;
        assert_eq!(status, 404, "session id {bad:?}");
    }
    // No key, a wrong key: 401 with a challenge; foreign Host or Origin: 403.
    let (status, _, body) = raw(&url, &[], INIT).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let (status, _, _) = raw(
        &url,
        &[("Authorization", "Bearer wrong-key-0123456789")],
        INIT,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = raw(&url, &[AUTH, ("Host", "evil.example")], INIT).await;
    assert_eq!(status, 403);
    let (status, _, _) = raw(&url, &[AUTH, ("Origin", "http://evil.example")], INIT).await;
    assert_eq!(status, 403);
    // Not JSON, and JSON that is not JSON-RPC: 400 with the JSON-RPC error codes.
    let (status, _, body) = raw(&url, &[AUTH], r#"{"jsonrpc":"2.0","id":1,"#).await;
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32700)),
        "{body}"
    );
    for junk in ["[1,2]", r#"{"hello":"world"}"#, "42"] {
        let (status, _, body) = raw(&url, &[AUTH], junk).await;
        assert_eq!(
            (status, body["error"]["code"].as_i64()),
            (400, Some(-32600)),
            "{junk}: {body}"
        );
    }
    // Tool calls with missing, mistyped or unknown arguments: tool errors (SEP-1303: the model can
    // correct them), an unknown tool: the protocol's invalid-params error.
    let in_session = [
        AUTH,
        ("Mcp-Session-Id", sid.as_str()),
        ("MCP-Protocol-Version", "2025-06-18"),
    ];
    for args in [
        json!({}),
        json!({"session_id": 5, "token": "x"}),
        json!({"session_id": "a", "token": "x", "extra": 1}),
    ] {
        let (status, _, reply) = raw(
            &url,
            &in_session,
            &tools_call("reconnect_session", args.clone()),
        )
        .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["result"]["isError"], true, "{args}: {reply}");
        let failure = &reply["result"]["structuredContent"];
        assert_eq!(failure["code"], "invalid_request", "{args}: {reply}");
    }
    let (_, _, reply) = raw(&url, &in_session, &tools_call("no_such_tool", json!({}))).await;
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    let (_, _, reply) = raw(
        &url,
        &in_session,
        &tools_call("open_session", json!({"metadata": {"mcp": 1}})),
    )
    .await;
    assert_eq!(
        reply["result"]["structuredContent"]["code"], "invalid_request",
        "{reply}"
    );
    // Without a protocol session (the 2026-07-28 way) a handle needs its token.
    let (_, _, reply) = raw(
        &url,
        &[AUTH],
        &tools_call("session_info", json!({"session_id": sid})),
    )
    .await;
    assert_ne!(
        reply["result"]["structuredContent"]["session_id"],
        sid.as_str(),
        "{reply}"
    );

    assert_eq!(session_count(&server).await, 2, "nothing was created");
    let (_, rest) = server.get("/sessions/rest-only").await;
    assert_eq!(rest["status"], "active");
    assert!(!server.stderr.lock().unwrap().contains("panicked"));
    drop(server);
    db.remove().await;
}

#[actix_rt::test]
async fn open_on_loopback_lets_local_clients_in_without_the_key() {
    let db = Db::sqlite();
    let mut env = base_env(db.url());
    env.push(("TETHER_MCP__OPEN_ON_LOOPBACK".into(), "true".into()));
    let server = Server::start_with(&env);
    let (status, sid, reply) = raw(&mcp_url(&server), &[], INIT).await;
    assert_eq!(status, 200, "{reply}");
    assert!(sid.is_some());
    // Only the MCP endpoint: the management API still needs the key.
    let (status, _) = server.call("GET", "/sessions", None, false).await;
    assert_eq!(status, 401);
    drop(server);
    db.remove().await;
}
