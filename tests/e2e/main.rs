//! End-to-end tests: the real `tether` binary on a random port with a fresh database, driven over HTTP
//! as a client would. Each story runs on SQLite, and on PostgreSQL when `TETHER_TEST_POSTGRES_URL` is
//! set (in CI it must be).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod abuse;
mod browser;
mod hardening;
mod mcp;
mod mcp_python;
mod metrics;
mod openapi;
mod outage;
mod support;
mod tools;
mod ws;

use std::time::Duration;

use serde_json::{Value, json};
use tether_auth::{Authority, Keyring, Secret};
use tether_domain::{Clock as _, SessionId, SystemClock, Timestamp, TokenAuthority as _};

use support::{Db, SECRET, Server};

/// Mints a token the way the server would, at `at`: to make tokens a client cannot get from the API
/// (already expired, or for a session that does not exist).
fn forge(session: &str, at: Timestamp) -> String {
    let authority = Authority::new(
        Keyring::new(Secret::new(SECRET.as_bytes().to_vec()).unwrap()),
        "tether",
        "tether-reconnect",
        Duration::from_secs(15 * 60),
    )
    .unwrap();
    authority
        .mint(&SessionId::parse(session).unwrap(), at)
        .unwrap()
        .token
        .expose()
        .to_owned()
}

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or_default()
}

async fn reconnect_story(server: &Server) {
    let created = server.create("story").await;
    assert_eq!(created["status"], "active");
    assert_eq!(created["reconnect_count"], 0);
    for field in ["token_hash", "reconnect_token_hash", "token"] {
        assert!(
            created.get(field).is_none(),
            "no token data in a session: {created}"
        );
    }

    let first = server.mint("story").await;
    let (status, r1) = server.reconnect("story", &first).await;
    assert_eq!(status, 200, "{r1}");
    assert_eq!(r1["success"], true);
    assert_eq!(r1["session_id"], "story");
    assert_eq!(r1["message"], "Session reconnected");
    assert_eq!(r1["reconnect_count"], 1);
    assert_eq!(r1["expires_in_minutes"], 15);
    let second = r1["reconnect_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);

    let (status, r2) = server.reconnect("story", &second).await;
    assert_eq!(status, 200, "{r2}");
    assert_eq!(r2["reconnect_count"], 2);
    let live = r2["reconnect_token"].as_str().unwrap().to_owned();

    // Replaying the first token: reuse, and the live token is revoked with it.
    let (status, body) = server.reconnect("story", &first).await;
    assert_eq!((status, code(&body)), (401, "token_reused"), "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(body["detail"], "Reconnection failed: token_reused");
    let (status, body) = server.reconnect("story", &live).await;
    assert_eq!(status, 401, "the live token must no longer work: {body}");
    let (_, session) = server.get("/sessions/story").await;
    assert_eq!(session["reconnect_count"], 2);

    // A token that expired a second ago.
    let past = SystemClock.now().minus(Duration::from_secs(15 * 60 + 1));
    let (status, body) = server.reconnect("story", &forge("story", past)).await;
    assert_eq!((status, code(&body)), (401, "token_expired"), "{body}");

    // Another session's token.
    server.create("other").await;
    let others = server.mint("other").await;
    let (status, body) = server.reconnect("story", &others).await;
    assert_eq!(
        (status, code(&body)),
        (401, "session_id_mismatch"),
        "{body}"
    );

    // Garbage.
    let (status, body) = server.reconnect("story", "not-a-token").await;
    assert_eq!((status, code(&body)), (401, "invalid_token"), "{body}");

    // Ended sessions cannot be resumed.
    let fresh = server.mint("other").await;
    let (status, _) = server
        .call(
            "DELETE",
            "/sessions/other",
            Some(r#"{"reason":"admin"}"#),
            true,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server.reconnect("other", &fresh).await;
    assert_eq!(
        (status, code(&body)),
        (409, "session_already_disconnected"),
        "{body}"
    );

    // A well-signed token for a session that does not exist.
    let (status, body) = server
        .reconnect("ghost", &forge("ghost", SystemClock.now()))
        .await;
    assert_eq!((status, code(&body)), (404, "session_not_found"), "{body}");

    // Management calls need the API key; reconnect does not but needs a well-formed body.
    let (status, body) = server.call("GET", "/sessions", None, false).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");
    let (status, body) = server
        .call(
            "POST",
            "/sessions/story/reconnect",
            Some("{not json"),
            false,
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    let (status, body) = server
        .call("POST", "/sessions", Some("{not json"), true)
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");

    // Nothing secret ever reached the log.
    let log = server.stderr.lock().unwrap().clone();
    for secret in [
        first.as_str(),
        second.as_str(),
        live.as_str(),
        SECRET,
        support::KEY,
    ] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

async fn management_routes(server: &Server) {
    let (status, health) = server.call("GET", "/health", None, false).await;
    assert_eq!(status, 200);
    assert_eq!(
        (health["status"].as_str(), health["database"].as_str()),
        (Some("ok"), Some("ok"))
    );

    let (status, s) = server
        .post(
            "/sessions",
            &json!({"client_type": "ide", "client_version": "1.4", "principal": "alice",
                     "metadata": {"team": "core"}}),
        )
        .await;
    assert_eq!(status, 201, "{s}");
    let generated = s["session_id"].as_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36, "a UUID when the client gives no id");
    assert_eq!(s["metadata"]["team"], "core");
    assert_eq!(s["principal"], "alice");
    assert!(s["connected_at"].as_str().unwrap().ends_with('Z'));

    for id in ["m1", "m2", "m3"] {
        server.create(id).await;
    }
    let (status, body) = server
        .post(
            "/sessions",
            &json!({"client_type": "x", "session_id": "m1"}),
        )
        .await;
    assert_eq!((status, code(&body)), (409, "session_exists"), "{body}");
    let (status, body) = server
        .post(
            "/sessions",
            &json!({"client_type": "x", "session_id": "bad id"}),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    let (status, body) = server
        .post("/sessions", &json!({"client_type": "x", "extra": 1}))
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    let big = json!({"client_type": "x".repeat(70 * 1024)}).to_string();
    let (status, body) = server.call("POST", "/sessions", Some(&big), true).await;
    assert_eq!((status, code(&body)), (413, "payload_too_large"), "{body}");

    // Activity: newest first in the list.
    let (status, touched) = server
        .call("POST", "/sessions/m1/activity", None, true)
        .await;
    assert_eq!(status, 200, "{touched}");
    let (status, page) = server.get("/sessions?limit=2").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m1", "m3"]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = server
        .get(&format!("/sessions?limit=10&cursor={cursor}"))
        .await;
    let rest: Vec<&str> = rest["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["m2", generated.as_str()]);
    let (status, body) = server.get("/sessions?limit=0").await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    let (status, body) = server.get("/sessions?colour=red").await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");

    // GET and POST both mint; a new token replaces the old one.
    let (status, t1) = server.get("/sessions/m2/token").await;
    assert_eq!(status, 200, "{t1}");
    assert_eq!(t1["expires_in_minutes"], 15);
    let t2 = server.mint("m2").await;
    let (status, body) = server
        .reconnect("m2", t1["reconnect_token"].as_str().unwrap())
        .await;
    assert_eq!((status, code(&body)), (401, "token_mismatch"), "{body}");
    assert_eq!(server.reconnect("m2", &t2).await.0, 200);

    // Ending: reason recorded, second end is a conflict, no token for an ended session.
    let (status, ended) = server.call("DELETE", "/sessions/m3", None, true).await;
    assert_eq!(status, 200);
    assert_eq!(ended["status"], "disconnected");
    assert_eq!(ended["disconnect_reason"], "client_closed");
    assert!(ended["disconnected_at"].is_string());
    let (status, body) = server.call("DELETE", "/sessions/m3", None, true).await;
    assert_eq!((status, code(&body)), (409, "session_already_disconnected"));
    let (status, body) = server.call("POST", "/sessions/m3/token", None, true).await;
    assert_eq!(
        (status, code(&body)),
        (400, "session_already_disconnected"),
        "{body}"
    );
    let (status, _) = server
        .call("POST", "/sessions/m3/activity", None, true)
        .await;
    assert_eq!(status, 409);
    let (status, page) = server.get("/sessions?status=disconnected").await;
    assert_eq!(status, 200);
    assert_eq!(page["sessions"].as_array().unwrap().len(), 1);

    let (status, body) = server.get("/sessions/nope").await;
    assert_eq!((status, code(&body)), (404, "session_not_found"));
    let (status, body) = server
        .call("POST", "/sessions/nope/token", None, true)
        .await;
    assert_eq!((status, code(&body)), (404, "session_not_found"));
    let (status, body) = server.get("/no/such/route").await;
    assert_eq!((status, code(&body)), (404, "not_found"));
}

#[actix_rt::test]
async fn sqlite_reconnect_story() {
    let db = Db::sqlite();
    let server = Server::start(db.url());
    reconnect_story(&server).await;
    drop(server);
    db.remove().await;
}

#[actix_rt::test]
async fn postgres_reconnect_story() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    let server = Server::start(db.url());
    reconnect_story(&server).await;
    drop(server);
    db.remove().await;
}

#[actix_rt::test]
async fn sqlite_management_routes() {
    let db = Db::sqlite();
    let server = Server::start(db.url());
    management_routes(&server).await;
    drop(server);
    db.remove().await;
}

#[actix_rt::test]
async fn postgres_management_routes() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    let server = Server::start(db.url());
    management_routes(&server).await;
    drop(server);
    db.remove().await;
}

/// Without MCP_SESSION_SECRET, the secret generated by the first start is kept in the database: a token
/// minted before a restart (or by another instance) still works after it.
async fn generated_secret_is_shared(db: &Db) {
    let env: Vec<_> = support::base_env(db.url())
        .into_iter()
        .filter(|(k, _)| k != "MCP_SESSION_SECRET")
        .collect();
    let first = Server::start_with(&env);
    first.create("kept").await;
    let token = first.mint("kept").await;
    let second = Server::start_with(&env);
    let (status, body) = second.reconnect("kept", &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(first.terminate().code(), Some(0));
    assert_eq!(second.terminate().code(), Some(0));
}

#[actix_rt::test]
async fn sqlite_generated_secret_survives_restart() {
    let db = Db::sqlite();
    generated_secret_is_shared(&db).await;
    db.remove().await;
}

#[actix_rt::test]
async fn postgres_generated_secret_is_shared_by_instances() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    generated_secret_is_shared(&db).await;
    db.remove().await;
}

#[actix_rt::test]
async fn sigterm_exits_zero_and_rows_survive() {
    let db = Db::sqlite();
    let server = Server::start(db.url());
    server.create("durable").await;
    assert_eq!(server.terminate().code(), Some(0));
    let again = Server::start(db.url());
    let (status, body) = again.get("/sessions/durable").await;
    assert_eq!(status, 200, "{body}");
    drop(again);
    db.remove().await;
}

#[test]
fn a_bad_setting_stops_the_start_with_one_line_naming_it() {
    let db = Db::sqlite();
    let mut env = support::base_env(db.url());
    env.retain(|(k, _)| k != "MCP_SESSION_SECRET");
    env.push(("MCP_SESSION_SECRET".into(), "too-short".into()));
    let (code, stderr) = support::run_to_exit(&env);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("MCP_SESSION_SECRET"), "{stderr}");
    assert!(
        !stderr.contains("too-short"),
        "the value itself is not echoed: {stderr}"
    );

    let mut env = support::base_env(db.url());
    env.push(("TETHER_SESSIONS__IDLE_AFTER_SECS".into(), "30".into()));
    env.push(("TETHER_SESSIONS__REAP_AFTER_SECS".into(), "60".into()));
    let (code, stderr) = support::run_to_exit(&env);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("sessions.reap_after_secs"), "{stderr}");
    assert!(stderr.contains("token lifetime"), "{stderr}");
    drop(db);
}
