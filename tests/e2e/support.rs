//! Starting the real `tether` binary on a random port with a fresh database, and talking to it as a
//! client would. Starting, stopping and reading the process are the shared test kit's
//! (`tether_testkit::launch`, `tether_testkit::procfs`); this adds the settings and the client.

use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tether_testkit::launch::{self, Launch};
use tether_testkit::procfs::{self, Pid};

pub const KEY: &str = "e2e-api-key-0123456789";
pub const SECRET: &str = "e2e-signing-secret-0123456789-abcdefghij";

/// A fresh database per test, removed even when the test fails (the shared test kit).
pub use tether_testkit::TestDb as Db;

/// Longest wait for the exit after SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(30);
/// Longest wait for a line in the log ([`Server::wait_for_log`]).
const LOG_WAIT: Duration = Duration::from_secs(10);

/// A running `tether` process. Killed on drop if still running.
pub struct Server {
    process: launch::Server,
    pub base: String,
    /// Everything it has written to stderr so far (keeps filling).
    pub stderr: Arc<Mutex<String>>,
    client: awc::Client,
}

/// What `Server::start` takes besides the database URL.
pub fn base_env(db_url: &str) -> Vec<(String, String)> {
    [
        ("TETHER_SERVER__BIND", "127.0.0.1:0"),
        ("DATABASE_URL", db_url),
        ("MCP_API_KEY", KEY),
        ("MCP_SESSION_SECRET", SECRET),
        ("TETHER_LOG__LEVEL", "info"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// [`base_env`] for `db` plus `extra` settings.
pub fn env_with(db: &Db, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = base_env(db.url());
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

/// The binary with only the settings the test gives: nothing leaks in from the developer's shell.
fn launch(env: &[(String, String)]) -> Launch {
    Launch::new(env!("CARGO_BIN_EXE_tether")).envs(env.iter().cloned())
}

/// Runs the binary to completion (for start-up failures).
pub fn run_to_exit(env: &[(String, String)]) -> (Option<i32>, String) {
    let out = launch(env).command().output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Server {
    pub fn start(db_url: &str) -> Self {
        Self::start_with(&base_env(db_url))
    }

    pub fn start_with(env: &[(String, String)]) -> Self {
        let process = launch(env)
            .keep_stderr()
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = process
            .stderr_log()
            .expect("kept: started with keep_stderr");
        Self {
            base: format!("{}/api/mcp", process.base_url()),
            stderr,
            process,
            client: awc::Client::builder()
                .timeout(Duration::from_secs(20))
                .finish(),
        }
    }

    /// The process's resident memory, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        procfs::memory_kib(Pid::Of(self.process.pid())).unwrap().rss
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub fn terminate(self) -> ExitStatus {
        self.sigterm();
        self.wait()
    }

    /// Waits (bounded) until the server's log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        let found = self
            .process
            .wait_for_stderr(LOG_WAIT, |log| log.contains(needle))
            .await;
        assert!(found, "{needle:?} never appeared in the server log");
    }

    /// Waits (bounded by `within`) until the server's log contains `needle` at least `n` times.
    pub async fn wait_for_log_count(&self, needle: &str, n: usize, within: Duration) {
        let found = self
            .process
            .wait_for_stderr(within, |log| log.matches(needle).count() >= n)
            .await;
        if !found {
            let seen = self.stderr.lock().unwrap().matches(needle).count();
            panic!("{needle:?} appeared {seen} times, not {n}, within {within:?}");
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.process.sigterm().unwrap();
    }

    /// Waits (bounded) for the process to exit; kills it and fails if it does not.
    pub fn wait(mut self) -> ExitStatus {
        self.process
            .wait(STOP_WAIT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// One request; `auth` adds the API key. Returns the status and the JSON body (Null if none).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        auth: bool,
    ) -> (u16, Value) {
        let url = format!("{}{}", self.base, path);
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, url);
        if auth {
            req = req.insert_header(("Authorization", format!("Bearer {KEY}")));
        }
        let mut resp = match body {
            Some(b) => req
                .insert_header(("Content-Type", "application/json"))
                .send_body(b.to_owned())
                .await
                .unwrap(),
            None => req.send().await.unwrap(),
        };
        let status = resp.status().as_u16();
        let bytes = resp.body().limit(1 << 20).await.unwrap();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None, true).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("POST", path, Some(&body.to_string()), true).await
    }

    /// Creates a session and returns its id.
    pub async fn create(&self, id: &str) -> Value {
        let (status, body) = self
            .post(
                "/sessions",
                &serde_json::json!({"client_type": "e2e", "session_id": id}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Mints a token through the API.
    pub async fn mint(&self, id: &str) -> String {
        let (status, body) = self
            .call("POST", &format!("/sessions/{id}/token"), None, true)
            .await;
        assert_eq!(status, 200, "{body}");
        body["reconnect_token"].as_str().unwrap().to_owned()
    }

    pub async fn reconnect(&self, id: &str, token: &str) -> (u16, Value) {
        let body = serde_json::json!({ "token": token }).to_string();
        self.call(
            "POST",
            &format!("/sessions/{id}/reconnect"),
            Some(&body),
            false,
        )
        .await
    }
}

impl Drop for Server {
    /// A test that is done (or failed) has no use for a graceful stop.
    fn drop(&mut self) {
        self.process.kill();
    }
}

/// One answer: status, headers, body bytes.
pub struct Answer {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Status, headers and the body as text.
    pub fn into_parts(self) -> (u16, awc::http::header::HeaderMap, String) {
        let text = String::from_utf8_lossy(&self.body).into_owned();
        (self.status, self.headers, text)
    }
}

/// One request under `/api/mcp` with full control (method, raw body, with or without the key).
pub async fn send(
    server: &Server,
    method: awc::http::Method,
    path: &str,
    body: Option<&str>,
    auth: bool,
) -> Answer {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish();
    let mut req = client.request(method, format!("{}{path}", server.base));
    if auth {
        req = req.insert_header(("Authorization", format!("Bearer {KEY}")));
    }
    let mut resp = match body {
        Some(b) => req.send_body(b.to_owned()).await.unwrap(),
        None => req.send().await.unwrap(),
    };
    let body = resp.body().limit(4 << 20).await.unwrap().to_vec();
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body,
    }
}
