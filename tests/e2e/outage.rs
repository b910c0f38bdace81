//! The database going away: a TCP proxy between `tether` and PostgreSQL that the test can freeze (hold
//! every byte, as a stopped-with-SIGSTOP server would) or take down (close every connection and refuse
//! new ones, as a stopped server would). Requests must answer 503 `database_unavailable` within 2 s,
//! and the service must recover by itself when the database returns.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::{self, Db, Server};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pass,
    Freeze,
    Down,
}

struct Proxy {
    addr: std::net::SocketAddr,
    mode: watch::Sender<Mode>,
}

/// Waits while frozen; false when the proxy is down.
async fn open(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Pass => return true,
            Mode::Down => return false,
            Mode::Freeze => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

async fn down(mode: &mut watch::Receiver<Mode>) {
    while *mode.borrow_and_update() != Mode::Down {
        if mode.changed().await.is_err() {
            return;
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut watcher = mode.clone();
        let n = tokio::select! {
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            () = down(&mut watcher) => return,
        };
        if !open(&mut mode).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    /// Runs on a thread and runtime of its own: the test's runtime blocks while it waits for the
    /// server to start, and the server's first act is to connect through the proxy.
    fn start(upstream: String) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(Mode::Pass);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // The thread ends with the test process.
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                while let Ok((inbound, _)) = listener.accept().await {
                    let mut mode = rx.clone();
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        if !open(&mut mode).await {
                            return;
                        }
                        let Ok(outbound) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let (ir, iw) = inbound.into_split();
                        let (or, ow) = outbound.into_split();
                        tokio::join!(pump(ir, ow, mode.clone()), pump(or, iw, mode));
                    });
                }
            })
        });
        Self { addr, mode: tx }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// `url` with its host:port replaced by `addr`.
fn through(url: &str, addr: std::net::SocketAddr) -> (String, String) {
    let start = url.find("://").unwrap() + 3;
    let end = url[start..].find('/').map_or(url.len(), |i| i + start);
    let authority = &url[start..end];
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let hostport = if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:5432")
    };
    (
        format!("{}{userinfo}{addr}{}", &url[..start], &url[end..]),
        hostport,
    )
}

async fn expect_unavailable_quickly(server: &Server) {
    let started = Instant::now();
    let (status, body) = server.get("/sessions/outage").await;
    let took = started.elapsed();
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("database_unavailable")),
        "{body}\nserver log:\n{}",
        server.stderr.lock().unwrap()
    );
    // A deadline of the contract, not a speed measurement: the timeout is 1 s, the promise 2 s.
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    let (status, health) = server.call("GET", "/health", None, false).await;
    assert_eq!(
        (status, health["status"].as_str()),
        (503, Some("degraded")),
        "{health}"
    );
}

async fn expect_recovery(server: &Server) {
    // A pooled connection the outage closed fails once more before the pool replaces it, so a few
    // real requests (no pause between them), bounded, until one succeeds.
    for _ in 0..20 {
        let (status, _) = server.get("/sessions/outage").await;
        if status == 200 {
            return;
        }
    }
    panic!("the service did not recover after the database returned");
}

#[actix_rt::test]
async fn postgres_frozen_or_stopped_answers_503_quickly_and_recovers() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    let (_, upstream) = through(db.url(), "127.0.0.1:1".parse().unwrap());
    let proxy = Proxy::start(upstream);
    let (proxied, _) = through(db.url(), proxy.addr);
    let mut env = support::base_env(&proxied);
    env.push(("TETHER_DATABASE__TIMEOUT_MS".into(), "1000".into()));
    let server = Server::start_with(&env);
    server.create("outage").await;

    proxy.set(Mode::Freeze);
    expect_unavailable_quickly(&server).await;
    proxy.set(Mode::Pass);
    expect_recovery(&server).await;

    proxy.set(Mode::Down);
    expect_unavailable_quickly(&server).await;
    proxy.set(Mode::Pass);
    expect_recovery(&server).await;

    let (status, body) = server.get("/sessions/outage").await;
    assert_eq!((status, body["session_id"].as_str()), (200, Some("outage")));
    drop(server);
    db.remove().await;
}

/// SIGTERM while a request is in flight: the request still gets its answer, then the process exits 0.
/// The database is frozen so that the request stays in flight; the server's debug log says when it has
/// started.
#[actix_rt::test]
async fn postgres_sigterm_lets_an_in_flight_request_finish() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    let (_, upstream) = through(db.url(), "127.0.0.1:1".parse().unwrap());
    let proxy = Proxy::start(upstream);
    let (proxied, _) = through(db.url(), proxy.addr);
    let mut env = support::base_env(&proxied);
    env.push(("TETHER_DATABASE__TIMEOUT_MS".into(), "1000".into()));
    env.push((
        "TETHER_LOG__LEVEL".into(),
        "info,tether::startup=debug".into(),
    ));
    let server = Server::start_with(&env);
    server.create("draining").await;

    proxy.set(Mode::Freeze);
    let url = format!("{}/sessions/draining", server.base);
    let in_flight = actix_rt::spawn(async move {
        let mut resp = awc::Client::new()
            .get(url)
            .bearer_auth(support::KEY)
            .send()
            .await
            .map_err(|e| format!("the in-flight request was cut off: {e:?}"))?;
        let body = resp.body().await.map_err(|e| format!("{e:?}"))?;
        Ok::<_, String>((resp.status().as_u16(), body))
    });
    server
        .wait_for_log("request started method=GET path=/api/mcp/sessions/draining")
        .await;
    server.sigterm();
    let (status, body) = match in_flight.await.unwrap() {
        Ok(answer) => answer,
        Err(e) => {
            let log = server.stderr.clone();
            let exit = server.wait();
            panic!("{e}\nexit: {exit:?}\nserver log:\n{}", log.lock().unwrap());
        }
    };
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert_eq!(server.wait().code(), Some(0));
    proxy.set(Mode::Pass);
    db.remove().await;
}
