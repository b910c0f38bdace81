//! One `tether` seen over HTTP: MCP over raw streamable HTTP (`/mcp`) and the REST reads it is
//! compared with (`/api/mcp/sessions/{id}`). Every answer is checked, not only its status.
//!
//! awc's client is not `Send`: everything here runs on the main thread's actix-rt System.

use awc::http::StatusCode;
use serde_json::Value;

/// The protocol version the bench speaks (`initialize`, then the `MCP-Protocol-Version` header).
pub const PROTOCOL_VERSION: &str = "2025-06-18";
/// Largest answer read (a `session_info` answer is about 1 KiB).
const MAX_BODY: usize = 1 << 20;
/// Characters of an unexpected answer kept in an error message.
const SHOWN: usize = 300;

/// A request that did not get the expected answer.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// What went wrong, with the start of the answer.
    pub message: String,
}

impl Failure {
    fn transport(what: &str, e: impl std::fmt::Display) -> Self {
        Self {
            status: None,
            message: format!("{what}: {e}"),
        }
    }

    fn answer(what: &str, status: StatusCode, body: &[u8], why: &str) -> Self {
        let text = String::from_utf8_lossy(body);
        let shown: String = text.chars().take(SHOWN).collect();
        Self {
            status: Some(status.as_u16()),
            message: format!("{what}: {status}: {why}: {shown}"),
        }
    }

    /// Whether the server answered 5xx.
    pub fn is_server_error(&self) -> bool {
        self.status.is_some_and(|s| s >= 500)
    }
}

/// A client for one server.
pub struct Client {
    http: awc::Client,
    mcp: String,
    api: String,
    metrics: String,
    auth: String,
    fresh: bool,
}

/// How a client uses its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conn {
    /// Kept alive and reused, as HTTP clients do (and the other benches).
    KeepAlive,
    /// A new connection for every request (`Connection: close`): what a request costs without
    /// what the server's segments meet on a connection that is already open.
    New,
}

/// Which request a closed-loop worker sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `tools/call session_info` on `/mcp`, inside the worker's MCP session.
    McpSessionInfo,
    /// `GET /api/mcp/sessions/{id}`: the same session read over REST.
    RestGet,
    /// `POST /api/mcp/sessions/{id}/activity`: the activity write alone over REST.
    RestActivity,
}

impl Op {
    /// Name for the progress log.
    pub fn label(self) -> &'static str {
        match self {
            Op::McpSessionInfo => "MCP tools/call session_info",
            Op::RestGet => "REST GET /api/mcp/sessions/{id}",
            Op::RestActivity => "REST POST /api/mcp/sessions/{id}/activity",
        }
    }
}

impl Client {
    /// A client for `base_url` (`http://127.0.0.1:PORT`) holding up to `connections` connections.
    pub fn new(base_url: &str, key: &str, connections: usize, conn: Conn) -> Self {
        Self {
            http: tether_bench::http::client(connections),
            mcp: format!("{base_url}/mcp"),
            api: format!("{base_url}/api/mcp"),
            metrics: format!("{base_url}/metrics"),
            auth: format!("Bearer {key}"),
            fresh: conn == Conn::New,
        }
    }

    fn request(&self, req: awc::ClientRequest) -> awc::ClientRequest {
        let req = req.insert_header(("Authorization", self.auth.as_str()));
        if self.fresh { req.force_close() } else { req }
    }

    /// The value of `series` (a metric's name with its labels, as `/metrics` prints them), 0 when
    /// absent (a counter not moved yet).
    pub async fn metric(&self, series: &str) -> Result<f64, Failure> {
        let mut resp = self
            .request(self.http.get(&self.metrics))
            .send()
            .await
            .map_err(|e| Failure::transport("GET /metrics", e))?;
        let body = resp
            .body()
            .limit(MAX_BODY)
            .await
            .map_err(|e| Failure::transport("GET /metrics: body", e))?;
        let text = String::from_utf8_lossy(&body);
        Ok(text
            .lines()
            .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .find_map(|v| v.split(' ').next()?.parse().ok())
            .unwrap_or(0.0))
    }

    /// POSTs a JSON-RPC message to `/mcp` (inside session `sid` when given); status, the
    /// `mcp-session-id` header and the body.
    async fn mcp_post(
        &self,
        sid: Option<&str>,
        body: String,
    ) -> Result<(StatusCode, Option<String>, Vec<u8>), Failure> {
        let mut req = self
            .request(self.http.post(&self.mcp))
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("Accept", "application/json, text/event-stream"));
        if let Some(sid) = sid {
            req = req
                .insert_header(("Mcp-Session-Id", sid))
                .insert_header(("MCP-Protocol-Version", PROTOCOL_VERSION));
        }
        let mut resp = req
            .send_body(body)
            .await
            .map_err(|e| Failure::transport("POST /mcp", e))?;
        let header = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Reading the whole body (the event stream ends after the answer) returns the connection
        // to the pool.
        let bytes = resp
            .body()
            .limit(MAX_BODY)
            .await
            .map_err(|e| Failure::transport("POST /mcp: body", e))?;
        Ok((resp.status(), header, bytes.to_vec()))
    }

    /// `initialize` then `notifications/initialized`: a new MCP session, whose id is returned.
    pub async fn open_mcp_session(&self, client_name: &str) -> Result<String, Failure> {
        let init = serde_json::json!({
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": { "name": client_name, "version": "1" },
            },
        })
        .to_string();
        let (status, sid, body) = self.mcp_post(None, init).await?;
        let what = "initialize";
        if status != StatusCode::OK {
            return Err(Failure::answer(what, status, &body, "not 200"));
        }
        let Some(sid) = sid else {
            return Err(Failure::answer(what, status, &body, "no mcp-session-id"));
        };
        match jsonrpc_message(&body) {
            Some(m) if m.get("result").is_some() => {}
            _ => return Err(Failure::answer(what, status, &body, "no result")),
        }
        let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_owned();
        let (status, _, body) = self.mcp_post(Some(&sid), note).await?;
        if status != StatusCode::ACCEPTED {
            return Err(Failure::answer(
                "notifications/initialized",
                status,
                &body,
                "not 202",
            ));
        }
        Ok(sid)
    }

    /// `tools/call session_info` with JSON-RPC id `id` inside MCP session `sid`; the answer must
    /// be a successful result about that very session.
    pub async fn session_info(&self, sid: &str, id: u64) -> Result<(), Failure> {
        let call = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "tools/call",
            "params": { "name": "session_info", "arguments": {} },
        })
        .to_string();
        let (status, _, body) = self.mcp_post(Some(sid), call).await?;
        let what = "tools/call session_info";
        if status != StatusCode::OK {
            return Err(Failure::answer(what, status, &body, "not 200"));
        }
        let Some(m) = jsonrpc_message(&body) else {
            return Err(Failure::answer(what, status, &body, "no JSON-RPC message"));
        };
        if m.get("id").and_then(Value::as_u64) != Some(id) {
            return Err(Failure::answer(what, status, &body, "another id"));
        }
        let result = &m["result"];
        if result.get("isError").and_then(Value::as_bool) != Some(false) {
            return Err(Failure::answer(
                what,
                status,
                &body,
                "not a successful result",
            ));
        }
        if result["structuredContent"]["session_id"].as_str() != Some(sid) {
            return Err(Failure::answer(what, status, &body, "another session"));
        }
        Ok(())
    }

    /// `GET /api/mcp/sessions/{sid}` (or `POST .../activity`); the answer must be that session.
    pub async fn rest(&self, op: Op, sid: &str) -> Result<(), Failure> {
        let (req, what) = match op {
            Op::RestActivity => (
                self.http
                    .post(format!("{}/sessions/{sid}/activity", self.api)),
                "POST /api/mcp/sessions/{id}/activity",
            ),
            _ => (
                self.http.get(format!("{}/sessions/{sid}", self.api)),
                "GET /api/mcp/sessions/{id}",
            ),
        };
        let mut resp = self
            .request(req)
            .send()
            .await
            .map_err(|e| Failure::transport(what, e))?;
        let body = resp
            .body()
            .limit(MAX_BODY)
            .await
            .map_err(|e| Failure::transport(what, e))?;
        let status = resp.status();
        if status != StatusCode::OK {
            return Err(Failure::answer(what, status, &body, "not 200"));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| Failure::answer(what, status, &body, "not JSON"))?;
        if v["session_id"].as_str() != Some(sid) {
            return Err(Failure::answer(what, status, &body, "another session"));
        }
        Ok(())
    }

    /// One request of a closed-loop worker; `id` is the JSON-RPC id for MCP.
    pub async fn op(&self, op: Op, sid: &str, id: u64) -> Result<(), Failure> {
        match op {
            Op::McpSessionInfo => self.session_info(sid, id).await,
            Op::RestGet | Op::RestActivity => self.rest(op, sid).await,
        }
    }
}

/// The JSON-RPC message of an answer: the whole body when it is JSON, else the last `data:` line
/// of an event stream that holds one.
pub fn jsonrpc_message(body: &[u8]) -> Option<Value> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Some(v);
    }
    let text = std::str::from_utf8(body).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("jsonrpc").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_from_json_or_event_stream() {
        let json = br#"{"jsonrpc":"2.0","id":3,"result":{}}"#;
        assert_eq!(
            jsonrpc_message(json).and_then(|m| m["id"].as_u64()),
            Some(3)
        );
        let sse = b"id: 0\ndata: \n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{}}\n\n";
        assert_eq!(jsonrpc_message(sse).and_then(|m| m["id"].as_u64()), Some(4));
        assert!(jsonrpc_message(b"data: nope\n").is_none());
    }
}
