//! The operator's page: served by the binary with its assets (plain HTTP), and used in a real headless
//! Chromium (`tests/browser/dashboard.py`, Playwright for Python driving Debian's `chromium`).
//!
//! The browser test needs the venv `tests/browser/setup.sh` makes (`TETHER_BROWSER_VENV`, default
//! `target/browser-venv`) and `chromium` (`TETHER_CHROMIUM`, default `/usr/bin/chromium`). Without
//! them it is skipped loudly; in CI (`CI` set) it fails instead. Screenshots are written to
//! `target/test-artifacts/`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Db, KEY, Server};
use crate::tools::{self, drain, repo_root};

/// How long the whole browser script may take between two of its lines.
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

/// The page and its assets, with the headers that keep it to itself; `HEAD` works, other methods
/// answer 405 with `Allow`.
#[actix_rt::test]
async fn the_page_is_served_from_the_binary() {
    let db = Db::sqlite();
    let server = Server::start(db.url());
    let root = server.base.trim_end_matches("/api/mcp").to_owned();
    let client = awc::Client::default();
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let mut res = client.get(format!("{root}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let header = |name: &str| {
            res.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        assert!(
            header("content-security-policy").contains("default-src 'none'"),
            "{path}"
        );
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        let body = res.body().await.unwrap();
        assert!(!body.is_empty(), "{path}");
        let head = client.head(format!("{root}{path}")).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
    }
    let page = client
        .get(format!("{root}/"))
        .send()
        .await
        .unwrap()
        .body()
        .await
        .unwrap();
    let page = String::from_utf8_lossy(&page);
    // Everything it loads is its own: no CDN, nothing fetched from elsewhere.
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    let post = client.post(format!("{root}/")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers().get("allow").unwrap(), "GET, HEAD");
    drop(server);
    db.remove().await;
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("TETHER_CHROMIUM")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no chromium at {}: run tests/browser/setup.sh (or set TETHER_CHROMIUM); the browser test \
         may not be skipped in CI",
        path.display()
    );
    eprintln!(
        "\n*** SKIPPING the browser test: no chromium at {} (run tests/browser/setup.sh) ***\n",
        path.display()
    );
    None
}

/// The whole page in Chromium, with a restart of tether in the middle (same port, same database).
#[actix_rt::test]
async fn the_page_in_chromium() {
    let Some(python) = tools::venv_tool(
        "TETHER_TEST_PYTHON",
        "TETHER_BROWSER_VENV",
        "target/browser-venv",
        "bin/python",
        "tests/browser/setup.sh",
    ) else {
        return;
    };
    let Some(chromium) = chromium() else {
        return;
    };
    let db = Db::sqlite();
    let mut env = crate::support::base_env(db.url());
    // Health updates often enough that the page shows its breakdown within the test's patience.
    env.push(("TETHER_WS__HEALTH_INTERVAL_MS".into(), "500".into()));
    let first = Server::start_with(&env);
    let root = first.base.trim_end_matches("/api/mcp").to_owned();
    let port = root.rsplit(':').next().unwrap().to_owned();
    let artifacts = repo_root().join("target/test-artifacts");

    let mut cmd = Command::new(&python);
    cmd.arg(repo_root().join("tests/browser/dashboard.py"))
        .args(["--base", &root, "--key", KEY, "--artifacts"])
        .arg(&artifacts)
        .arg("--chromium")
        .arg(&chromium)
        // Playwright must use the given executable and never look for (or fetch) a browser build.
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
    let mut child = tools::loopback_only(&mut cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stderr = drain(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut first = Some(first);
    let mut second = None;
    let status = loop {
        let line = match rx.recv_timeout(STEP_TIMEOUT) {
            Ok(line) => line,
            // Its stdout closed: it is exiting.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break child.wait().ok(),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        };
        match line.as_str() {
            "restart" => assert!(first.take().unwrap().terminate().success()),
            "down" => {
                let mut env = env.clone();
                env.retain(|(k, _)| k != "TETHER_SERVER__BIND");
                env.push(("TETHER_SERVER__BIND".into(), format!("127.0.0.1:{port}")));
                let server = Server::start_with(&env);
                // A change while the page is still away: it must come with the replay.
                server.create("browser-gap").await;
                second = Some(server);
                child.stdin.as_mut().unwrap().write_all(b"back\n").unwrap();
            }
            _ => {}
        }
        seen.push(line);
    };
    let err = stderr.join().unwrap();
    let report = format!("--- stdout\n{}\n--- stderr\n{err}", seen.join("\n"));
    println!("{report}");
    assert!(
        status.is_some_and(|s| s.success()),
        "dashboard.py failed ({status:?}):\n{report}"
    );
    assert!(artifacts.join("dashboard.png").is_file());
    drop(second);
    db.remove().await;
}
