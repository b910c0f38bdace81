//! The `tether` processes under test (start, wait for the ready line, stop with SIGTERM), their
//! temporary directories, and what `/proc` tells about them.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::BoxError;

/// What the server prints on stdout once it accepts connections.
const READY: &str = "tether listening on ";
/// Longest wait for the ready line (migrations of a fresh database included).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the exit after SIGTERM before the process is killed. Above the server's own
/// drain time (5 s, set below) plus the hub's 2 s close timeout.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Stderr lines kept for error messages.
const TAIL: usize = 20;

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

/// `<pid>_<unix seconds>`: unique per run, valid in a PostgreSQL database name.
pub fn run_tag() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{}_{secs}", std::process::id())
}

/// How to start one server.
pub struct Launch<'a> {
    /// The binary (absolute: the server runs in `workdir`).
    pub exe: &'a Path,
    /// Its working directory.
    pub workdir: &'a Path,
    /// `DATABASE_URL`.
    pub database_url: &'a str,
    /// `MCP_API_KEY`.
    pub api_key: &'a str,
    /// `MCP_SESSION_SECRET`.
    pub secret: &'a str,
    /// Further `TETHER_*` settings for this run.
    pub env: Vec<(&'static str, String)>,
}

/// A running `tether`. Dropping it stops it.
pub struct Server {
    child: Option<Child>,
    pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The listening port.
    pub port: u16,
    tail: Arc<Mutex<VecDeque<String>>>,
    stderr_lines: Arc<AtomicUsize>,
}

/// Reads a pipe to its end on a thread of its own, so the child never blocks on a full pipe.
fn drain<R: Read + Send + 'static>(pipe: R, on_line: impl Fn(String) + Send + 'static) {
    let _ = std::thread::Builder::new()
        .name("tether-drain".into())
        .spawn(move || {
            for line in BufReader::new(pipe).lines() {
                match line {
                    Ok(l) => on_line(l),
                    Err(_) => break,
                }
            }
        });
}

impl Server {
    /// Starts the server on `127.0.0.1:0` and waits for its ready line.
    ///
    /// # Errors
    /// When it cannot be spawned, exits, or is not ready within a minute (with its stderr tail).
    pub fn start(l: &Launch<'_>) -> Result<Self, BoxError> {
        let mut cmd = Command::new(l.exe);
        // Settings inherited from the caller's shell would change what is measured.
        for (name, _) in std::env::vars_os() {
            let n = name.to_string_lossy();
            if n.starts_with("TETHER_")
                || n.starts_with("MCP_")
                || n == "RUST_LOG"
                || n == "DATABASE_URL"
            {
                cmd.env_remove(&name);
            }
        }
        cmd.current_dir(l.workdir)
            .env("TETHER_SERVER__BIND", "127.0.0.1:0")
            .env("TETHER_SERVER__SHUTDOWN_TIMEOUT_SECS", "5")
            .env("DATABASE_URL", l.database_url)
            .env("MCP_API_KEY", l.api_key)
            .env("MCP_SESSION_SECRET", l.secret)
            // At `info` every request and event is a log line: that would be measured too.
            .env("TETHER_LOG__LEVEL", "warn")
            // 10,000 dashboards from one address, each a connection (two descriptors), and their
            // connects at full speed: what the caps and rate limits stop, not what is measured.
            .env("TETHER_SERVER__MAX_CONNECTIONS_PER_IP", "0")
            .env("TETHER_SERVER__MAX_CONNECTIONS", "30000")
            .env("TETHER_LIMITS__WS_CONNECTS_PER_ADDRESS", "0")
            .env("TETHER_LIMITS__SESSIONS_PER_KEY", "0")
            .env("TETHER_LIMITS__TICKETS_PER_KEY", "0")
            .envs(l.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", l.exe.display()))?;
        let pid = child.id();
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL)));
        let stderr_lines = Arc::new(AtomicUsize::new(0));
        if let Some(err) = child.stderr.take() {
            let (tail, count) = (tail.clone(), stderr_lines.clone());
            drain(err, move |line| {
                count.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut t) = tail.lock() {
                    if t.len() == TAIL {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            });
        }
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            // After the ready line nobody listens; the thread keeps draining regardless.
            drain(out, move |line| {
                let _ = tx.send(line);
            });
        }
        let mut server = Self {
            child: Some(child),
            pid,
            base: String::new(),
            port: 0,
            tail,
            stderr_lines,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(pos) = line.find(READY) {
                        server.base = line[pos + READY.len()..].trim().to_owned();
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(server.failure("printed no ready line within 60 s"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Stdout closed: it is exiting; give stderr a moment to arrive.
                    std::thread::sleep(Duration::from_millis(200));
                    return Err(server.failure("exited before it was ready"));
                }
            }
        }
        server.port = server
            .base
            .strip_prefix("http://127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| server.failure("announced an address that is not 127.0.0.1:PORT"))?;
        Ok(server)
    }

    fn failure(&self, what: &str) -> BoxError {
        format!(
            "tether {what}; its last stderr lines:\n  {}",
            self.stderr_tail().join("\n  ")
        )
        .into()
    }

    /// The last stderr lines (warnings and errors only: the log level is `warn`).
    pub fn stderr_tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Stderr lines so far.
    pub fn stderr_lines(&self) -> usize {
        self.stderr_lines.load(Ordering::Relaxed)
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `ws://127.0.0.1:PORT/api/mcp/ws/sessions`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/api/mcp/ws/sessions", self.port)
    }

    /// `VmRSS` in KiB.
    ///
    /// # Errors
    /// When `/proc/PID/status` cannot be read or lacks it.
    pub fn rss_kib(&self) -> Result<u64, BoxError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .ok_or("no VmRSS in /proc/PID/status")?;
        Ok(line
            .trim_start_matches("VmRSS:")
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?)
    }

    /// User plus system CPU time of the whole process so far, in clock ticks.
    ///
    /// # Errors
    /// When `/proc/PID/stat` cannot be read or parsed.
    pub fn cpu_ticks(&self) -> Result<u64, BoxError> {
        cpu_ticks(&self.pid.to_string())
    }

    /// On-CPU time of the process's live threads in ns (`/proc/PID/task/*/schedstat`): finer than
    /// [`cpu_ticks`](Self::cpu_ticks), but a thread that exits takes its time with it.
    ///
    /// # Errors
    /// When the task directory cannot be read.
    pub fn sched_ns(&self) -> Result<u64, BoxError> {
        let mut total = 0;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid))? {
            // A thread may exit between the listing and the read: it simply no longer counts.
            let Ok(stat) = std::fs::read_to_string(task?.path().join("schedstat")) else {
                continue;
            };
            total += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok(total)
    }

    /// SIGTERM, then waits for the exit; kills it after 20 s. Returns whether it exited by itself
    /// with status 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        // No signal crate: the `kill` utility sends SIGTERM to exactly this pid.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => break,
            }
        }
        eprintln!(
            "  tether {} did not exit within 20 s of SIGTERM; killing it",
            self.pid
        );
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100, Linux's value, if that fails).
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// utime + stime of process `pid` (a number, or `self`), all threads, in clock ticks.
///
/// # Errors
/// When `/proc/PID/stat` cannot be read or parsed.
pub fn cpu_ticks(pid: &str) -> Result<u64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("odd /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let utime: u64 = f.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = f.get(12).ok_or("no stime")?.parse()?;
    Ok(utime + stime)
}

/// Busy ticks of the whole machine so far (all cores, everything but idle and iowait), to see what
/// else ran during a measured window.
///
/// # Errors
/// When `/proc/stat` cannot be read or parsed.
pub fn machine_busy_ticks() -> Result<u64, BoxError> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("no cpu line")?;
    let t: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal (guest times are already in user/nice).
    Ok(t.iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum())
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
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
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
