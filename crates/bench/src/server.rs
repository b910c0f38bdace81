//! The `tether` process under test: start it, wait for its ready line, read its CPU time and memory
//! from `/proc`, stop it with SIGTERM.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::BoxError;

/// What the server prints on stdout once it accepts connections.
const READY: &str = "tether listening on ";
/// Longest wait for the ready line (migrations on a fresh database included).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the process to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of stderr kept for error messages.
const TAIL: usize = 40;

/// A running `tether` process. Dropping it stops it.
pub struct Server {
    child: Option<Child>,
    pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    panics: Arc<AtomicUsize>,
    stderr_lines: Arc<AtomicUsize>,
}

/// The settings the server is started with.
pub struct Launch<'a> {
    /// The binary.
    pub exe: &'a Path,
    /// Working directory (a temporary one, so no stray file lands in the repository).
    pub workdir: &'a Path,
    /// `DATABASE_URL`.
    pub database_url: &'a str,
    /// `MCP_API_KEY`.
    pub api_key: &'a str,
    /// `MCP_SESSION_SECRET`.
    pub secret: &'a str,
    /// `TETHER_DATABASE__MAX_CONNECTIONS`.
    pub pool: usize,
    /// Keep the shipped rate limits and per-address connection cap (a flood measurement) instead of
    /// turning them off (a path measurement).
    pub shipped_limits: bool,
}

/// Reads lines until the pipe closes, so that the child never blocks on a full pipe.
fn drain<R: Read + Send + 'static>(pipe: R, on_line: impl Fn(String) + Send + 'static) {
    let _ = std::thread::Builder::new()
        .name("tether-bench-drain".into())
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
    /// When it cannot be spawned, exits, or does not get ready within a minute (with its last
    /// stderr lines).
    pub fn start(l: &Launch<'_>) -> Result<Self, BoxError> {
        let mut cmd = Command::new(l.exe);
        // Settings inherited from the caller's shell would change what is measured.
        for (name, _) in std::env::vars_os() {
            let n = name.to_string_lossy();
            // RUST_BACKTRACE from a developer's shell would make a panic load the debug info
            // (over 100 MiB of RSS) and skew the memory figures.
            if n.starts_with("TETHER_")
                || n.starts_with("MCP_")
                || n == "RUST_LOG"
                || n == "RUST_BACKTRACE"
                || n == "RUST_LIB_BACKTRACE"
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
            .env("TETHER_DATABASE__MAX_CONNECTIONS", l.pool.to_string())
            // Logging at info would add a line per request to what is measured.
            .env("TETHER_LOG__LEVEL", "warn")
            .env("TETHER_SERVER__MAX_CONNECTIONS", "30000");
        if !l.shipped_limits {
            // A load generator is one client on one address doing what rate limits and the
            // per-address connection cap exist to stop: measure the path, not the limits.
            for name in [
                "TETHER_SERVER__MAX_CONNECTIONS_PER_IP",
                "TETHER_LIMITS__RECONNECT_PER_SESSION",
                "TETHER_LIMITS__RECONNECT_PER_ADDRESS",
                "TETHER_LIMITS__TOKENS_PER_KEY",
                "TETHER_LIMITS__SESSIONS_PER_KEY",
                "TETHER_LIMITS__TICKETS_PER_KEY",
                "TETHER_LIMITS__WS_CONNECTS_PER_ADDRESS",
            ] {
                cmd.env(name, "0");
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", l.exe.display()))?;
        let pid = child.id();
        let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL)));
        let panics = Arc::new(AtomicUsize::new(0));
        let stderr_lines = Arc::new(AtomicUsize::new(0));
        if let Some(err) = child.stderr.take() {
            let tail = stderr_tail.clone();
            let panics = panics.clone();
            let lines = stderr_lines.clone();
            drain(err, move |line| {
                lines.fetch_add(1, Ordering::Relaxed);
                if line.contains("panicked at") {
                    panics.fetch_add(1, Ordering::Relaxed);
                }
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
            drain(out, move |line| {
                // After the ready line nobody listens; the thread keeps draining regardless.
                let _ = tx.send(line);
            });
        }
        let mut server = Self {
            child: Some(child),
            pid,
            base_url: String::new(),
            stderr_tail,
            panics,
            stderr_lines,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(pos) = line.find(READY) {
                        server.base_url = line[pos + READY.len()..].trim().to_owned();
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(server.failure("did not print its ready line within 60 s"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is exiting; give stderr a moment to arrive.
                    std::thread::sleep(Duration::from_millis(200));
                    return Err(server.failure("exited before it was ready"));
                }
            }
        }
        if !server.base_url.starts_with("http://127.0.0.1:") {
            return Err(server.failure("announced an address that is not 127.0.0.1"));
        }
        Ok(server)
    }

    fn failure(&self, what: &str) -> BoxError {
        format!(
            "tether {what}; its last stderr lines:\n  {}",
            self.stderr_tail()
        )
        .into()
    }

    /// How many panics the server has reported on stderr so far.
    pub fn panics(&self) -> usize {
        self.panics.load(Ordering::Relaxed)
    }

    /// How many lines the server has written to stderr so far (it logs at `warn`: any line is
    /// worth a look).
    pub fn stderr_lines(&self) -> usize {
        self.stderr_lines.load(Ordering::Relaxed)
    }

    /// The server's last stderr lines, indented, for error messages.
    pub fn stderr_tail(&self) -> String {
        self.stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n  "))
            .unwrap_or_default()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// User plus system CPU time of the whole process (all threads) so far.
    ///
    /// # Errors
    /// When `/proc/PID/stat` cannot be read or parsed.
    pub fn cpu_time(&self, ticks_per_sec: u64) -> Result<Duration, BoxError> {
        cpu_time(&self.pid.to_string(), ticks_per_sec)
    }

    /// On-CPU time of the process's live threads (`/proc/PID/task/*/schedstat`, nanoseconds).
    /// Finer than [`Self::cpu_time`], which the kernel samples once per tick and may charge a whole
    /// tick to a thread that woke up on it; a thread that exits in between no longer counts.
    ///
    /// # Errors
    /// When `/proc/PID/task` cannot be read.
    pub fn sched_time(&self) -> Result<Duration, BoxError> {
        sched_time(&self.pid.to_string())
    }

    /// `VmRSS` and `VmHWM` (peak) in KiB.
    ///
    /// # Errors
    /// When `/proc/PID/status` cannot be read or lacks them.
    pub fn memory_kib(&self) -> Result<(u64, u64), BoxError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let field = |name: &str| -> Result<u64, BoxError> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .ok_or_else(|| format!("no {name} in /proc/PID/status"))?;
            Ok(line
                .trim_start_matches(name)
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()?)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends SIGTERM and waits for the exit; kills it if it has not exited after 15 s.
    ///
    /// # Errors
    /// When it had to be killed or could not be waited for.
    pub fn stop(mut self) -> Result<ExitStatus, BoxError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<ExitStatus, BoxError> {
        let Some(mut child) = self.child.take() else {
            return Err("already stopped".into());
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Ok(status);
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
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err("tether did not exit within 15 s of SIGTERM; killed it".into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop_inner();
        }
    }
}

/// Clock ticks per second for `/proc` CPU times (`getconf CLK_TCK`, 100 on Linux if that fails).
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

/// User plus system CPU time so far of process `pid` (a number, or `self`), all threads.
///
/// # Errors
/// When `/proc/PID/stat` cannot be read or parsed.
pub fn cpu_time(pid: &str, ticks_per_sec: u64) -> Result<Duration, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("unexpected /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; `rest` starts at field 3.
    let utime: u64 = fields.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = fields.get(12).ok_or("no stime")?.parse()?;
    let ticks = utime + stime;
    Ok(Duration::from_secs_f64(ticks as f64 / ticks_per_sec as f64))
}

/// On-CPU time so far of the live threads of process `pid` (a number, or `self`), summed from
/// `/proc/PID/task/*/schedstat` (nanoseconds).
///
/// # Errors
/// When `/proc/PID/task` cannot be read.
pub fn sched_time(pid: &str) -> Result<Duration, BoxError> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread may exit between the listing and the read: it simply no longer counts.
        let Ok(stat) = std::fs::read_to_string(task?.path().join("schedstat")) else {
            continue;
        };
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(Duration::from_nanos(ns))
}

/// Idle plus I/O-wait time of the whole machine so far (all cores), from `/proc/stat`. With a
/// tickless kernel the idle time is measured exactly, while the busy fields of
/// [`machine_busy`] are sampled once per tick and miss work done between two ticks (such as work
/// that a timer starts right after a tick): wall time × cores − this is the busy time to trust.
///
/// # Errors
/// When `/proc/stat` cannot be read or parsed.
pub fn machine_idle(ticks_per_sec: u64) -> Result<Duration, BoxError> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("no cpu line in /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(5)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait
    let idle = ticks.get(3).ok_or("no idle field")? + ticks.get(4).ok_or("no iowait field")?;
    Ok(Duration::from_secs_f64(idle as f64 / ticks_per_sec as f64))
}

/// Busy CPU time of the whole machine so far (all cores; everything but idle and I/O wait), from
/// `/proc/stat`: with the server's and the generator's own time it tells what the rest (the
/// database, or anything else running) took.
///
/// # Errors
/// When `/proc/stat` cannot be read or parsed.
pub fn machine_busy(ticks_per_sec: u64) -> Result<Duration, BoxError> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("no cpu line in /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already inside user/nice]
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Ok(Duration::from_secs_f64(busy as f64 / ticks_per_sec as f64))
}
