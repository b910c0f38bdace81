//! The official Python MCP client (`mcp` 2.3.0, `tests/mcp_interop`) against the real binary:
//! `interop.py` (protocol sessions, the 2026-07-28 handle mode, refused arguments) and the README's
//! `readme_snippet.py`, on SQLite and PostgreSQL.
//!
//! The Python is the venv `tests/mcp_interop/setup.sh` makes: `TETHER_TEST_PYTHON` if set, else
//! `${TETHER_MCP_VENV:-target/mcp-venv}/bin/python`. Without it the tests are skipped loudly; in CI
//! (`CI` set) they fail instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Db, KEY, Server};
use crate::tools::{self, Ran, drain, repo_root};

/// How long one script may run before it is killed.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The venv's python, or `None` (skip) outside CI when there is none.
fn python() -> Option<PathBuf> {
    tools::venv_tool(
        "TETHER_TEST_PYTHON",
        "TETHER_MCP_VENV",
        "target/mcp-venv",
        "bin/python",
        "tests/mcp_interop/setup.sh",
    )
}

/// Runs `tests/mcp_interop/<script>` with `python`, killed after `SCRIPT_TIMEOUT`.
fn run_script(python: &Path, script: &str, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let mut cmd = Command::new(python);
    cmd.arg(repo_root().join("tests/mcp_interop").join(script))
        .args(args)
        .envs(env.iter().copied());
    tools::run(cmd, SCRIPT_TIMEOUT)
}

/// `interop.py`, then the README snippet, against one fresh server.
async fn python_sdk(python: &Path, db: &Db) {
    let server = Server::start(db.url());
    let rest = server.base.clone();
    let mcp = rest.replace("/api/mcp", "/mcp");

    let ran = run_script(
        python,
        "interop.py",
        &["--url", &mcp, "--key", KEY, "--rest", &rest],
        &[],
    );
    println!("{}", ran.report("interop.py"));
    assert!(ran.succeeded(), "{}", ran.report("interop.py"));
    let last = ran.stdout.trim_end().lines().last().unwrap_or_default();
    let counts: Vec<&str> = last.split(' ').collect();
    assert!(
        matches!(counts[..], [n, "passed,", "0", "failed"] if n.parse::<u32>().is_ok_and(|n| n > 0)),
        "interop.py must close with `N passed, 0 failed`: {last:?}"
    );

    let ran = run_script(
        python,
        "readme_snippet.py",
        &[],
        &[("MCP_API_KEY", KEY), ("TETHER_MCP_URL", &mcp)],
    );
    println!("{}", ran.report("readme_snippet.py"));
    assert!(ran.succeeded(), "{}", ran.report("readme_snippet.py"));
    let id = ran
        .stdout
        .split("'session_id': '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no session_id printed:\n{}", ran.stdout));
    assert!(
        ran.stdout.contains("'reconnect_token': 'eyJ"),
        "no token printed:\n{}",
        ran.stdout
    );
    let (status, session) = server.get(&format!("/sessions/{id}")).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(
        session["status"], "active",
        "the snippet leaves its session open for the token: {session}"
    );

    let log = server.stderr.lock().unwrap().clone();
    assert!(
        !log.contains(KEY),
        "the API key reached the server log:\n{log}"
    );
    drop(server);
}

#[actix_rt::test]
async fn sqlite_mcp_python_sdk() {
    let Some(python) = python() else {
        return;
    };
    let db = Db::sqlite();
    python_sdk(&python, &db).await;
    db.remove().await;
}

#[actix_rt::test]
async fn postgres_mcp_python_sdk() {
    let Some(python) = python() else {
        return;
    };
    let Some(db) = Db::postgres().await else {
        return;
    };
    python_sdk(&python, &db).await;
    db.remove().await;
}

/// The README's promise: the Python client's next call after a restart of `tether` (same port, same
/// database) works on the same session, with no 404 and no new `initialize`.
async fn python_client_survives_restart(python: &Path, db: &Db) {
    use std::io::{BufRead as _, BufReader, Write as _};

    let first = Server::start(db.url());
    let mcp = first.base.replace("/api/mcp", "/mcp");
    let port = mcp
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/mcp")
        .to_owned();
    let mut cmd = Command::new(python);
    cmd.arg(repo_root().join("tests/mcp_interop/restart.py"))
        .args(["--url", &mcp, "--key", KEY]);
    let mut child = tools::loopback_only(&mut cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = drain(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next_line = || rx.recv_timeout(SCRIPT_TIMEOUT).unwrap_or_default();
    let before = next_line();
    let id = before
        .strip_prefix("before ")
        .unwrap_or_else(|| panic!("unexpected {before:?}"))
        .to_owned();

    assert!(first.terminate().success());
    let mut env = crate::support::base_env(db.url());
    env.retain(|(k, _)| k != "TETHER_SERVER__BIND");
    env.push(("TETHER_SERVER__BIND".into(), format!("127.0.0.1:{port}")));
    let second = Server::start_with(&env);
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();

    let after = next_line();
    let token = next_line();
    let _ = child.kill();
    let _ = child.wait();
    let err = stderr.join().unwrap();
    assert_eq!(after, format!("after {id}"), "stderr:\n{err}");
    assert_eq!(token, "token-ok", "stderr:\n{err}");
    let (_, list) = second.get("/sessions").await;
    assert_eq!(
        list["sessions"].as_array().unwrap().len(),
        1,
        "no second session: {list}"
    );
    drop(second);
}

#[actix_rt::test]
async fn sqlite_python_client_survives_a_restart() {
    let Some(python) = python() else {
        return;
    };
    let db = Db::sqlite();
    python_client_survives_restart(&python, &db).await;
    db.remove().await;
}

#[actix_rt::test]
async fn postgres_python_client_survives_a_restart() {
    let Some(python) = python() else {
        return;
    };
    let Some(db) = Db::postgres().await else {
        return;
    };
    python_client_survives_restart(&python, &db).await;
    db.remove().await;
}
