//! The `tether` processes under test (the shared launcher, `tether_bench::server`), their
//! temporary directories, and what `/proc` tells about the connections and the machine.

use std::path::{Path, PathBuf};

pub use tether_bench::backend::run_tag;
pub use tether_bench::server::{Launch, Server};

use crate::BoxError;

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `tether-bench-ws-<pid>-<secs>-<label>`.
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn new(label: &str) -> Result<Self, BoxError> {
        let dir = std::env::temp_dir().join(format!("tether-bench-ws-{}-{label}", run_tag()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `sqlite:///abs/path/bench.db` inside it.
    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}", self.0.join("bench.db").display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `ws://127.0.0.1:PORT/api/mcp/ws/sessions` of `server`, with `?health=summary` when `summary`.
pub fn ws_url(server: &Server, summary: bool) -> String {
    let query = if summary { "?health=summary" } else { "" };
    format!(
        "ws://127.0.0.1:{}/api/mcp/ws/sessions{query}",
        server.port()
    )
}

/// SIGTERM, then waits for the exit (it is killed after 20 s). Whether it exited by itself with
/// status 0.
pub fn stop(server: &mut Server) -> bool {
    match server.stop() {
        Ok(status) => status.success(),
        Err(e) => {
            eprintln!("  tether {}: {e}", server.pid());
            false
        }
    }
}

/// Queued bytes on the TCP connections of `port`, from `/proc/net/tcp`: the largest unsent or
/// unacknowledged send queue on the server's side, and the largest unread receive queue on the
/// clients' side. A never-reading client shows as a full pair.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpQueues {
    /// Largest `tx_queue` of a socket whose local port is `port` (the server's end).
    pub server_send: u64,
    /// Largest `rx_queue` of a socket whose remote port is `port` (a client's end).
    pub client_recv: u64,
}

/// Reads [`TcpQueues`] for `port`.
///
/// # Errors
/// When `/proc/net/tcp` cannot be read.
pub fn tcp_queues(port: u16) -> Result<TcpQueues, BoxError> {
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    let port_of = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let mut q = TcpQueues::default();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(queues)) = (f.get(1), f.get(2), f.get(4)) else {
            continue;
        };
        let Some((tx, rx)) = queues.split_once(':') else {
            continue;
        };
        let tx = u64::from_str_radix(tx, 16).unwrap_or(0);
        let rx = u64::from_str_radix(rx, 16).unwrap_or(0);
        if port_of(local) == Some(port) {
            q.server_send = q.server_send.max(tx);
        }
        if port_of(remote) == Some(port) {
            q.client_recv = q.client_recv.max(rx);
        }
    }
    Ok(q)
}

/// The soft limit on open files of this process (inherited by the servers it starts).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Moves this process (every thread it has now, and so every thread it starts later) to `cpu`, with
/// util-linux's `taskset` (setting the affinity directly would need `unsafe`).
///
/// # Errors
/// When `taskset` cannot be run or refuses.
pub fn pin_this_process(cpu: usize) -> Result<(), BoxError> {
    let status = std::process::Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run taskset (util-linux) for --pin: {e}"))?;
    if !status.success() {
        return Err(format!("taskset could not move this process to CPU {cpu}: {status}").into());
    }
    Ok(())
}

/// CPU model, core count and memory, for the report's header.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // The machine's, not this process's (which `--pin` narrows to one).
    let cores = std::fs::read_to_string("/proc/cpuinfo").map_or(0, |c| {
        c.lines().filter(|l| l.starts_with("processor")).count()
    });
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or_else(
            || "?".into(),
            |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0),
        );
    format!("{model}, {cores} cores, {mem} RAM")
}
