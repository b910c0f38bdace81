//! Starting the real `tether` binary on a random port with a fresh database, and talking to it as a
//! client would.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

pub const KEY: &str = "e2e-api-key-0123456789";
pub const SECRET: &str = "e2e-signing-secret-0123456789-abcdefghij";

/// A fresh database per test, removed even when the test fails (the shared test kit).
pub use tether_testkit::TestDb as Db;

/// A running `tether` process. Killed on drop if still running.
pub struct Server {
    /// `None` once `wait` has taken it.
    child: Option<Child>,
    pid: u32,
    pub base: String,
    pub stderr: Arc<Mutex<String>>,
    /// Rings whenever the server writes to stderr.
    log_bell: Arc<tokio::sync::Notify>,
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

fn command(env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
    // Only what the test says: nothing leaks in from the developer's shell.
    for (k, _) in std::env::vars() {
        if k.starts_with("TETHER_")
            || k.starts_with("MCP_")
            || k == "DATABASE_URL"
            || k == "RUST_LOG"
        {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Runs the binary to completion (for start-up failures).
pub fn run_to_exit(env: &[(String, String)]) -> (Option<i32>, String) {
    let out = command(env).output().unwrap();
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
        let mut child = command(env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let log_bell = Arc::new(tokio::sync::Notify::new());
        let bell = log_bell.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
                bell.notify_waiters();
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("tether listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("tether did not start; stderr:\n{}", stderr.lock().unwrap());
            }
        };
        Self {
            pid: child.id(),
            child: Some(child),
            base: format!("{url}/api/mcp"),
            stderr,
            log_bell,
            client: awc::Client::builder()
                .timeout(Duration::from_secs(20))
                .finish(),
        }
    }

    /// The process's resident memory, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub fn terminate(self) -> ExitStatus {
        self.sigterm();
        self.wait()
    }

    /// Waits (bounded) until the server's log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        let found = async {
            loop {
                let bell = self.log_bell.notified();
                if self.stderr.lock().unwrap().contains(needle) {
                    return;
                }
                bell.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), found)
            .await
            .unwrap_or_else(|_| panic!("{needle:?} never appeared in the server log"));
    }

    /// Waits (bounded by `within`) until the server's log contains `needle` at least `n` times.
    pub async fn wait_for_log_count(&self, needle: &str, n: usize, within: Duration) {
        let found = async {
            loop {
                let bell = self.log_bell.notified();
                if self.stderr.lock().unwrap().matches(needle).count() >= n {
                    return;
                }
                bell.await;
            }
        };
        tokio::time::timeout(within, found)
            .await
            .unwrap_or_else(|_| {
                let seen = self.stderr.lock().unwrap().matches(needle).count();
                panic!("{needle:?} appeared {seen} times, not {n}, within {within:?}")
            });
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(mut self) -> ExitStatus {
        let pid = self.pid;
        let (tx, rx) = mpsc::channel();
        // The child moves to a thread that blocks on it; `Drop` has nothing left to kill.
        let mut child = self.child.take().unwrap();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(status) => status.unwrap(),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("tether did not stop within 30 s of SIGTERM");
            }
        }
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
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
