//! The `tether` process under test, as all three benches start it: the shared launcher
//! (`tether_testkit::launch`) with the settings of a measurement, and the end of a run (its panics,
//! its last stderr lines, SIGTERM).

use std::io;
use std::path::Path;
use std::process::ExitStatus;

pub use tether_testkit::launch::Server;

use crate::BoxError;

/// The settings a server is started with.
pub struct Launch<'a> {
    /// The binary (absolute: the server runs in `workdir`).
    pub exe: &'a Path,
    /// Working directory (a temporary one, so no stray file lands in the repository).
    pub workdir: &'a Path,
    /// `DATABASE_URL`.
    pub database_url: &'a str,
    /// `MCP_API_KEY`.
    pub api_key: &'a str,
    /// `MCP_SESSION_SECRET`.
    pub secret: &'a str,
    /// `TETHER_DATABASE__MAX_CONNECTIONS`; `None` keeps the server's default.
    pub pool: Option<usize>,
    /// Keep the shipped rate limits and per-address connection cap (a flood measurement) instead of
    /// turning them off (a path measurement).
    pub shipped_limits: bool,
    /// Further `TETHER_*` settings for this run (they win over the above).
    pub env: Vec<(&'static str, String)>,
    /// The CPU the server runs on (started through util-linux's `taskset`); `None` leaves it free.
    pub cpu: Option<usize>,
}

impl<'a> Launch<'a> {
    /// `exe` in `workdir` on `database_url`, with the server's pool size, no rate limits and no
    /// further settings; change what a run needs with `..Launch::new(..)`.
    pub fn new(
        exe: &'a Path,
        workdir: &'a Path,
        database_url: &'a str,
        api_key: &'a str,
        secret: &'a str,
    ) -> Self {
        Self {
            exe,
            workdir,
            database_url,
            api_key,
            secret,
            pool: None,
            shipped_limits: false,
            env: Vec::new(),
            cpu: None,
        }
    }

    /// Starts the server on `127.0.0.1:0` and waits for its ready line.
    ///
    /// # Errors
    /// When it cannot be spawned, exits, is not ready within a minute (with its last stderr lines),
    /// or announces an address other than 127.0.0.1.
    pub fn start(&self) -> io::Result<Server> {
        // taskset execs the binary: the process (and its pid) is the server's.
        let launch = match self.cpu {
            Some(cpu) => tether_testkit::launch::Launch::new("taskset")
                .arg("-c")
                .arg(cpu.to_string())
                .arg(self.exe.to_string_lossy()),
            None => tether_testkit::launch::Launch::new(self.exe),
        };
        let mut launch = launch
            .workdir(self.workdir)
            .env("TETHER_SERVER__BIND", "127.0.0.1:0")
            .env("TETHER_SERVER__SHUTDOWN_TIMEOUT_SECS", "5")
            .env("DATABASE_URL", self.database_url)
            .env("MCP_API_KEY", self.api_key)
            .env("MCP_SESSION_SECRET", self.secret)
            // At `info` every request is a log line: that would be measured too.
            .env("TETHER_LOG__LEVEL", "warn")
            // 10,000 dashboards from one address, each a connection (two descriptors).
            .env("TETHER_SERVER__MAX_CONNECTIONS", "30000");
        if let Some(pool) = self.pool {
            launch = launch.env("TETHER_DATABASE__MAX_CONNECTIONS", pool.to_string());
        }
        if !self.shipped_limits {
            // A load generator is one client on one address doing what rate limits and the
            // per-address connection cap exist to stop: measure the path, not the limits.
            launch = launch.envs(
                [
                    "TETHER_SERVER__MAX_CONNECTIONS_PER_IP",
                    "TETHER_LIMITS__RECONNECT_PER_SESSION",
                    "TETHER_LIMITS__RECONNECT_PER_ADDRESS",
                    "TETHER_LIMITS__TOKENS_PER_KEY",
                    "TETHER_LIMITS__SESSIONS_PER_KEY",
                    "TETHER_LIMITS__TICKETS_PER_KEY",
                    "TETHER_LIMITS__WS_CONNECTS_PER_ADDRESS",
                ]
                .map(|name| (name, "0")),
            );
        }
        let server = launch
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .start()?;
        if !server.base_url().starts_with("http://127.0.0.1:") {
            return Err(io::Error::other(format!(
                "tether announced {}, not an address on 127.0.0.1",
                server.base_url()
            )));
        }
        Ok(server)
    }
}

/// How a server's run ended.
#[derive(Debug)]
pub struct Ended {
    /// Panics it reported on stderr.
    pub panics: usize,
    /// Lines on its stderr (it logs at `warn`: any line is worth a look).
    pub stderr_lines: usize,
    /// Whether it was still running when the load was over.
    pub alive: bool,
    /// Its exit after SIGTERM, or why there was none.
    pub exit: io::Result<ExitStatus>,
}

impl Ended {
    /// The exit status, or an error when it exited during the run (`during`: "the run", "the
    /// flood") or did not stop on SIGTERM.
    ///
    /// # Errors
    /// As said.
    pub fn status(self, during: &str) -> Result<ExitStatus, BoxError> {
        if !self.alive {
            return Err(format!("tether exited during {during}").into());
        }
        Ok(self.exit?)
    }

    /// The exit in words, for a table: `exit status: 0`, or what went wrong.
    pub fn describe(&self) -> String {
        match (&self.exit, self.alive) {
            (Ok(status), false) => format!("exited during the run ({status})"),
            (Ok(status), true) => status.to_string(),
            (Err(e), _) => e.to_string(),
        }
    }
}

/// Ends a run: counts what the server said, shows its last stderr lines (prefixed by `which`, such
/// as `"first instance: "`), and stops it with SIGTERM.
pub fn finish(mut server: Server, which: &str) -> Ended {
    let panics = server.panics();
    let stderr_lines = server.stderr_lines();
    let alive = server.alive();
    let tail = server.stderr_tail();
    if !tail.is_empty() {
        eprintln!(
            "  {which}tether's last stderr lines:\n  {}",
            tail.join("\n  ")
        );
    }
    Ended {
        panics,
        stderr_lines,
        alive,
        exit: server.stop(),
    }
}
