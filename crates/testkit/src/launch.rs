//! The real `tether` binary as a child process: started with a clean environment, ready once it
//! prints its listening line, its stderr drained on a thread of its own (a child writing to a full
//! pipe would stall), and stopped with SIGTERM and a bounded wait. The end-to-end tests and the load
//! generators all start it through here, so they agree on what a clean start is.
//!
//! ```no_run
//! use tether_testkit::launch::Launch;
//!
//! let mut server = Launch::new("target/release/tether")
//!     .env("TETHER_SERVER__BIND", "127.0.0.1:0")
//!     .env("DATABASE_URL", "sqlite:///tmp/example/tether.db")
//!     .start()?;
//! println!("{} (pid {})", server.base_url(), server.pid());
//! let status = server.stop()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The line the binary prints on stdout once it accepts connections (`crates/api/src/main.rs`),
/// followed by `http://ADDR:PORT`.
pub const READY: &str = "tether listening on ";
/// Longest wait for the ready line: migrations of a fresh database included.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the exit after SIGTERM: above the server's own drain budget plus the hub's close
/// timeout in every setting the tests and benches use.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for the rest of stderr once stdout closed before the ready line: the process is
/// exiting, and its last words are the reason.
const LAST_WORDS: Duration = Duration::from_secs(5);
/// Stderr lines kept for error messages.
const TAIL: usize = 40;

/// Whether `name` is a setting the binary reads, or one that changes how it behaves: none of them
/// may leak in from the caller's shell. `RUST_BACKTRACE` would make a panic load the debug info
/// (over 100 MiB of RSS) and skew memory figures.
fn inherited_setting(name: &str) -> bool {
    name.starts_with("TETHER_")
        || name.starts_with("MCP_")
        || matches!(
            name,
            "DATABASE_URL" | "RUST_LOG" | "RUST_BACKTRACE" | "RUST_LIB_BACKTRACE"
        )
}

/// How to start the binary: which one, where, and with which settings.
#[derive(Clone, Debug)]
pub struct Launch {
    exe: PathBuf,
    args: Vec<String>,
    workdir: Option<PathBuf>,
    env: Vec<(String, String)>,
    keep_stderr: bool,
    stop_timeout: Duration,
}

impl Launch {
    /// The binary at `exe`, with no settings yet.
    pub fn new(exe: impl Into<PathBuf>) -> Self {
        Self {
            exe: exe.into(),
            args: Vec::new(),
            workdir: None,
            env: Vec::new(),
            keep_stderr: false,
            stop_timeout: STOP_TIMEOUT,
        }
    }

    /// One command-line argument (the binary needs none; a stand-in for it may).
    #[must_use]
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// One setting; a later one of the same name wins.
    #[must_use]
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Several settings, in order.
    #[must_use]
    pub fn envs<K, V>(mut self, pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.env
            .extend(pairs.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Runs it in `dir` (a relative `exe` then resolves from there).
    #[must_use]
    pub fn workdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// Keeps all of stderr, for [`Server::stderr_log`] and [`Server::wait_for_stderr`]; without it
    /// only the last lines are kept (a load generator must not grow with the server's log).
    #[must_use]
    pub fn keep_stderr(mut self) -> Self {
        self.keep_stderr = true;
        self
    }

    /// How long [`Server::stop`] waits after SIGTERM before it kills (default 20 s).
    #[must_use]
    pub fn stop_timeout(mut self, within: Duration) -> Self {
        self.stop_timeout = within;
        self
    }

    /// The command, environment cleaned and set, for a caller that runs it to completion itself.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.args);
        for (name, _) in std::env::vars_os() {
            if inherited_setting(&name.to_string_lossy()) {
                cmd.env_remove(&name);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.workdir {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Starts it and waits (at most a minute) for its ready line.
    ///
    /// # Errors
    /// When it cannot be spawned, exits first, or is not ready in time; the message holds its last
    /// stderr lines. The process is killed before the error is returned.
    pub fn start(&self) -> io::Result<Server> {
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start {}: {e}", self.exe.display()),
                )
            })?;
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let mut server = Server {
            pid: child.id(),
            child: Some(child),
            base_url: String::new(),
            port: 0,
            stderr: Arc::new(Stderr::new(self.keep_stderr)),
            stop_timeout: self.stop_timeout,
        };
        let (stderr_done, stderr_ended) = mpsc::channel::<()>();
        let (lines_tx, lines) = mpsc::channel();
        let drained = (|| {
            if let Some(pipe) = err {
                let sink = server.stderr.clone();
                drain(pipe, "tether-stderr", move |line| {
                    // Dropped with the closure when the pipe ends: that is the signal.
                    let _alive = &stderr_done;
                    sink.push(line);
                })?;
            }
            if let Some(pipe) = out {
                // After the ready line nobody listens; the thread keeps draining regardless.
                drain(pipe, "tether-stdout", move |line| {
                    let _ = lines_tx.send(line);
                })?;
            }
            Ok::<(), io::Error>(())
        })();
        if let Err(e) = drained {
            return Err(server.fail(&format!("could not have its output read ({e})")));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let url = loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(pos) = line.find(READY) {
                        break line[pos + READY.len()..].trim().to_owned();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(server.fail("printed no ready line within 60 s"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Stdout closed: it is exiting. Its reason is on stderr, still arriving.
                    let _ = stderr_ended.recv_timeout(LAST_WORDS);
                    return Err(server.fail("exited before it was ready"));
                }
            }
        };
        let Some(port) = url.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) else {
            return Err(server.fail(&format!("announced an address without a port: {url:?}")));
        };
        server.base_url = url;
        server.port = port;
        Ok(server)
    }
}

/// What the server wrote to stderr: counts, the last lines, and everything if asked for.
struct Stderr {
    lines: AtomicUsize,
    panics: AtomicUsize,
    tail: Mutex<VecDeque<String>>,
    all: Option<Arc<Mutex<String>>>,
    /// Rings after every line, for [`Server::wait_for_stderr`].
    bell: Notify,
}

impl Stderr {
    fn new(keep_all: bool) -> Self {
        Self {
            lines: AtomicUsize::new(0),
            panics: AtomicUsize::new(0),
            tail: Mutex::new(VecDeque::with_capacity(TAIL)),
            all: keep_all.then(|| Arc::new(Mutex::new(String::new()))),
            bell: Notify::new(),
        }
    }

    fn push(&self, line: String) {
        self.lines.fetch_add(1, Ordering::Relaxed);
        if line.contains("panicked at") {
            self.panics.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(all) = &self.all {
            let mut all = all.lock().unwrap_or_else(PoisonError::into_inner);
            all.push_str(&line);
            all.push('\n');
        }
        let mut tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        if tail.len() == TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
        drop(tail);
        self.bell.notify_waiters();
    }

    fn tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Everything kept so far, or the last lines when not everything is.
    fn check<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match &self.all {
            Some(all) => f(&all.lock().unwrap_or_else(PoisonError::into_inner)),
            None => f(&self.tail().join("\n")),
        }
    }
}

/// Reads `pipe` line by line until it closes. Bytes that are not UTF-8 are replaced, never a reason
/// to stop reading: a child blocked on a full pipe would look like a hung server.
fn drain<R: Read + Send + 'static>(
    pipe: R,
    name: &str,
    on_line: impl Fn(String) + Send + 'static,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        on_line(line.trim_end_matches(['\n', '\r']).to_owned());
                    }
                }
            }
        })
        .map(|_| ())
}

/// A running `tether`. Dropping it stops it (SIGTERM, then a kill after the stop timeout).
pub struct Server {
    /// `None` once it has been waited for.
    child: Option<Child>,
    pid: u32,
    base_url: String,
    port: u16,
    stderr: Arc<Stderr>,
    stop_timeout: Duration,
}

impl Server {
    /// `http://ADDR:PORT`, as announced.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Panics it has reported on stderr so far.
    pub fn panics(&self) -> usize {
        self.stderr.panics.load(Ordering::Relaxed)
    }

    /// Lines it has written to stderr so far.
    pub fn stderr_lines(&self) -> usize {
        self.stderr.lines.load(Ordering::Relaxed)
    }

    /// Its last stderr lines (up to 40), oldest first.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr.tail()
    }

    /// All of its stderr so far, a shared handle that keeps filling; `None` unless started with
    /// [`Launch::keep_stderr`].
    pub fn stderr_log(&self) -> Option<Arc<Mutex<String>>> {
        self.stderr.all.clone()
    }

    /// Waits until `done` holds for its stderr (all of it with [`Launch::keep_stderr`], else the
    /// last lines), checked after every line. `false` if it did not within `within`.
    pub async fn wait_for_stderr(
        &self,
        within: Duration,
        mut done: impl FnMut(&str) -> bool,
    ) -> bool {
        let found = async {
            loop {
                // Registered before the check, so a line written in between still rings it.
                let bell = self.stderr.bell.notified();
                if self.stderr.check(&mut done) {
                    return;
                }
                bell.await;
            }
        };
        tokio::time::timeout(within, found).await.is_ok()
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends SIGTERM.
    ///
    /// # Errors
    /// When the signal cannot be sent (the process is gone).
    pub fn sigterm(&self) -> io::Result<()> {
        signal(self.pid, "-TERM")
    }

    /// Waits at most `within` for the exit; kills it if it has not exited by then.
    ///
    /// # Errors
    /// When it had to be killed (`TimedOut`), was already waited for, or cannot be waited for.
    pub fn wait(&mut self, within: Duration) -> io::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(io::Error::other("tether was already waited for"));
        };
        let (tx, rx) = mpsc::channel();
        // `Child::wait` has no timeout: a thread blocks on it while this one keeps the clock.
        std::thread::Builder::new()
            .name("tether-wait".into())
            .spawn(move || {
                let _ = tx.send(child.wait());
            })?;
        match rx.recv_timeout(within) {
            Ok(status) => status,
            Err(_) => {
                let _ = signal(self.pid, "-KILL");
                let _ = rx.recv_timeout(LAST_WORDS);
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "tether did not exit within {} s of SIGTERM; killed it",
                        within.as_secs_f64()
                    ),
                ))
            }
        }
    }

    /// Stops it: SIGTERM, then [`Self::wait`] with the stop timeout. A process that has already
    /// exited only has its status collected.
    ///
    /// # Errors
    /// As [`Self::wait`], and when it was already stopped.
    pub fn stop(&mut self) -> io::Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(io::Error::other("tether was already stopped"));
        };
        if let Some(status) = child.try_wait()? {
            self.child = None;
            return Ok(status);
        }
        // Gone between the two calls: the wait collects its status.
        let _ = self.sigterm();
        self.wait(self.stop_timeout)
    }

    /// Kills it at once (SIGKILL) and collects its status; nothing if it was already waited for.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn fail(&mut self, what: &str) -> io::Error {
        self.kill();
        io::Error::other(format!(
            "tether {what}; its last stderr lines:\n  {}",
            self.stderr_tail().join("\n  ")
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// Sends `signal` (`-TERM`, `-KILL`) to `pid` with the `kill` utility: no signal crate, and no
/// `unsafe`, for one signal to one process.
fn signal(pid: u32, signal: &str) -> io::Result<()> {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("kill {signal} {pid}: {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_of_the_shell_are_not_inherited() {
        for name in [
            "TETHER_SERVER__BIND",
            "MCP_API_KEY",
            "DATABASE_URL",
            "RUST_LOG",
            "RUST_BACKTRACE",
            "RUST_LIB_BACKTRACE",
        ] {
            assert!(inherited_setting(name), "{name}");
        }
        for name in ["PATH", "HOME", "TMPDIR", "CI"] {
            assert!(!inherited_setting(name), "{name}");
        }
    }

    #[test]
    fn the_tail_keeps_the_last_lines_and_counts_panics() {
        let stderr = Stderr::new(false);
        for i in 0..(TAIL + 5) {
            stderr.push(format!("line {i}"));
        }
        stderr.push("thread 'x' panicked at src/main.rs:1:1".into());
        assert_eq!(stderr.lines.load(Ordering::Relaxed), TAIL + 6);
        assert_eq!(stderr.panics.load(Ordering::Relaxed), 1);
        let tail = stderr.tail();
        assert_eq!(tail.len(), TAIL);
        assert_eq!(tail[0], "line 6");
        assert!(stderr.check(|log| log.ends_with("panicked at src/main.rs:1:1")));
    }
}
