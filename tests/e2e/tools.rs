//! The programs users run that some tests drive the binary with (the Python MCP SDK, Playwright,
//! Schemathesis), each from a venv that `tests/pyvenv.sh` makes: finding them (skipped loudly
//! without them, a failure in CI), and running them on loopback with a time limit.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// `program` (e.g. `bin/python`) in the venv `setup` makes: `$<explicit_var>` if set, else
/// `${<venv_var>:-<default_venv>}/<program>`. `None` (skip, loudly) outside CI when it is missing,
/// a failure in CI.
pub fn venv_tool(
    explicit_var: &str,
    venv_var: &str,
    default_venv: &str,
    program: &str,
    setup: &str,
) -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os(explicit_var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(explicit);
        assert!(
            path.is_file(),
            "{explicit_var}={} does not exist",
            path.display()
        );
        return Some(path);
    }
    let venv = std::env::var_os(venv_var)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(default_venv), PathBuf::from);
    let path = repo_root().join(venv).join(program);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no {} at {}: run {setup} (or set {explicit_var}); these tests may not be skipped in CI",
        program,
        path.display()
    );
    eprintln!(
        "\n*** SKIPPING a test that needs {}: run {setup} ***\n",
        path.display()
    );
    None
}

/// `cmd` talks to a server on loopback: no proxy from the developer's shell may get in between.
pub fn loopback_only(cmd: &mut Command) -> &mut Command {
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        cmd.env_remove(var).env_remove(var.to_lowercase());
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
}

/// Reads `pipe` to its end on a thread of its own.
pub fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// What a program did: `None` status when it was killed for running past its limit.
pub struct Ran {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    limit: Duration,
}

impl Ran {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// How it ended and what it printed, for a failure message.
    pub fn report(&self, what: &str) -> String {
        let status = self.status.map_or_else(
            || format!("killed after {} s", self.limit.as_secs()),
            |s| s.to_string(),
        );
        format!(
            "{what}: {status}\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` (no stdin) to its end, killed after `limit`.
pub fn run(mut cmd: Command, limit: Duration) -> Ran {
    loopback_only(&mut cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ran {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        limit,
    }
}
