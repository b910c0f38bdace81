//! The launcher against a stand-in for `tether`: a shell script that prints the ready line, writes
//! to stderr, and answers SIGTERM (or does not). The real binary is started by the end-to-end tests.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::ErrorKind;
use std::time::Duration;

use tether_testkit::launch::Launch;
use tether_testkit::procfs::{self, Pid};

/// Bound of any wait for something the script does at once.
const WAIT: Duration = Duration::from_secs(10);

/// The idle loop of a stand-in server: `wait` returns as soon as a trapped signal arrives.
const IDLE: &str = "while :; do sleep 1 & wait $!; done";

fn script(body: &str) -> Launch {
    Launch::new("/bin/sh").arg("-c").arg(body)
}

#[tokio::test]
async fn a_server_is_ready_at_its_line_and_stops_on_sigterm() {
    let mut server = script(&format!(
        "trap 'echo stopping >&2; exit 0' TERM
         echo \"given=$GIVEN\" >&2
         echo \"thread 'main' panicked at src/main.rs:1:1\" >&2
         echo 'tether listening on http://127.0.0.1:4321'
         {IDLE}"
    ))
    .env("GIVEN", "yes")
    .keep_stderr()
    .start()
    .unwrap();
    assert_eq!(server.base_url(), "http://127.0.0.1:4321");
    assert_eq!(server.port(), 4321);
    assert!(server.alive());
    assert!(procfs::memory_kib(Pid::Of(server.pid())).unwrap().rss > 0);
    assert!(
        server
            .wait_for_stderr(WAIT, |log| log.contains("panicked at"))
            .await
    );
    assert_eq!(server.panics(), 1);
    assert_eq!(server.stderr_tail()[0], "given=yes");

    let status = server.stop().unwrap();
    assert!(status.success(), "{status}");
    assert!(!server.alive());
    // Its last words may still be in the pipe when the exit is seen: wait for the reader.
    assert!(
        server
            .wait_for_stderr(WAIT, |log| log.contains("stopping"))
            .await
    );
    assert!(server.stop().is_err(), "stopped once");
}

#[test]
fn a_server_that_exits_first_is_an_error_with_its_last_words() {
    let Err(e) = script("echo 'tether: MCP_SESSION_SECRET is too short' >&2; exit 2").start()
    else {
        panic!("started");
    };
    let e = e.to_string();
    assert!(e.contains("exited before it was ready"), "{e}");
    assert!(e.contains("MCP_SESSION_SECRET is too short"), "{e}");
}

#[test]
fn a_server_deaf_to_sigterm_is_killed_after_the_stop_timeout() {
    let mut server = script(&format!(
        "trap '' TERM
         echo 'tether listening on http://127.0.0.1:4322'
         {IDLE}"
    ))
    .stop_timeout(Duration::from_millis(300))
    .start()
    .unwrap();
    let e = server.stop().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(!server.alive());
}
