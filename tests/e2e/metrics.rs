//! `GET /metrics` against the real binary: the API key unless `metrics.open`, the OpenMetrics text of
//! `prometheus-client`, and counters that move by exactly what happened. The exposition is parsed
//! (name, labels, value), never searched as text.

use std::collections::BTreeMap;

use tether_domain::{Clock as _, SystemClock};

use crate::support::{self, Db, KEY, Server};
use crate::ws::Dash;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One sample line: its name, its labels and its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition.
#[derive(Debug)]
struct Exposition(Vec<Sample>);

/// `k="v",k2="v2"` (with `\"`, `\\` and `\n` escapes in values).
fn parse_labels(mut rest: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("a label is k=\"v\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("an unterminated label value") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("an escape").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

impl Exposition {
    fn parse(text: &str) -> Self {
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics ends with # EOF:\n{text}"
        );
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("`series value`");
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (
                        name,
                        parse_labels(labels.strip_suffix('}').expect("labels end with }")),
                    ),
                    None => (series, BTreeMap::new()),
                };
                Sample {
                    name: name.to_owned(),
                    labels,
                    value: value.parse().expect("a number"),
                }
            })
            .collect();
        Self(samples)
    }

    /// The sample `name` with exactly `labels`, if present.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// As [`find`](Self::find), 0 when absent (a labelled series appears at its first event).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    /// Every value the label `label` takes among samples whose name starts with `prefix`.
    fn label_values(&self, prefix: &str, label: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|s| s.name.starts_with(prefix))
            .filter_map(|s| s.labels.get(label).cloned())
            .collect()
    }
}

/// `GET /metrics` with `key` (if any): the status, the content type and the body.
async fn fetch(server: &Server, key: Option<&str>) -> (u16, String, String) {
    let root = server.base.trim_end_matches("/api/mcp");
    let mut req = awc::Client::default().get(format!("{root}/metrics"));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let mut resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.body().limit(4 << 20).await.unwrap();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

/// A successful scrape, parsed.
async fn scrape(server: &Server) -> Exposition {
    let (status, content_type, body) = fetch(server, Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, CONTENT_TYPE);
    Exposition::parse(&body)
}

/// How much each series moved between two scrapes.
struct Delta<'a>(&'a Exposition, &'a Exposition);

impl Delta<'_> {
    fn of(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.1.get(name, labels) - self.0.get(name, labels)
    }
}

const RECONNECTS: &str = "tether_reconnects_total";
const REQUEST_COUNT: &str = "tether_http_request_duration_seconds_count";
const RECONNECT_ROUTE: &str = "/api/mcp/sessions/{id}/reconnect";

async fn metrics_story(db: &Db) {
    let server = Server::start_with(&support::env_with(db, &[]));

    // Behind the API key: none, or a wrong one, is 401.
    assert_eq!(fetch(&server, None).await.0, 401);
    assert_eq!(fetch(&server, Some("not-the-key-0123456789")).await.0, 401);
    let before = scrape(&server).await;
    assert_eq!(
        before.find(RECONNECTS, &[("result", "reconnected")]),
        Some(0.0),
        "every result code is a series from the start"
    );

    // Opened, minted, and N reconnects in a row, each with the token the previous one returned.
    const N: usize = 7;
    server.create("metered").await;
    let first = server.mint("metered").await;
    let mut token = first.clone();
    for _ in 0..N {
        let (status, body) = server.reconnect("metered", &token).await;
        assert_eq!(status, 200, "{body}");
        token = body["reconnect_token"].as_str().unwrap().to_owned();
    }
    // Refusals, each with its code: garbage, a token for a session that does not exist, and a
    // consumed token (reuse, which also revokes the live one).
    let (status, _) = server.reconnect("metered", "not.a.token").await;
    assert_eq!(status, 401);
    let ghost = crate::forge("ghost", SystemClock.now());
    let (status, _) = server.reconnect("ghost", &ghost).await;
    assert_eq!(status, 404);
    let (status, body) = server.reconnect("metered", &first).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("token_reused")));

    // Ends, by reason: given, defaulted, and caller-chosen text (counted as `other`).
    let end = |id: &'static str, body: Option<&'static str>| {
        let server = &server;
        async move {
            let (status, body) = server
                .call("DELETE", &format!("/sessions/{id}"), body, true)
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    end("metered", Some(r#"{"reason": "admin"}"#)).await;
    server.create("closed").await;
    end("closed", None).await;
    server.create("bored").await;
    end("bored", Some(r#"{"reason": "went-home"}"#)).await;

    // A dashboard connected (registered before its upgrade answer), then two resumes: one
    // complete, one from a position this outbox never had.
    let _live = Dash::with_key(&server, "").await;
    let mut resumed = Dash::with_key(&server, "since=0").await;
    assert_eq!(resumed.next_of("resumed").await["data"]["recovered"], true);
    let mut lost = Dash::with_key(&server, "since=999999").await;
    assert_eq!(lost.next_of("resumed").await["data"]["recovered"], false);

    let after = scrape(&server).await;
    let moved = Delta(&before, &after);
    let n = N as f64;
    assert_eq!(moved.of(RECONNECTS, &[("result", "reconnected")]), n);
    assert_eq!(moved.of(RECONNECTS, &[("result", "invalid_token")]), 1.0);
    assert_eq!(
        moved.of(RECONNECTS, &[("result", "session_not_found")]),
        1.0
    );
    assert_eq!(moved.of(RECONNECTS, &[("result", "token_reused")]), 1.0);
    assert_eq!(moved.of("tether_token_reuse_detected_total", &[]), 1.0);
    assert_eq!(moved.of("tether_tokens_minted_total", &[]), 1.0);
    assert_eq!(moved.of("tether_sessions_opened_total", &[]), 3.0);
    for (reason, count) in [("admin", 1.0), ("client_closed", 1.0), ("other", 1.0)] {
        assert_eq!(
            moved.of("tether_sessions_ended_total", &[("reason", reason)]),
            count,
            "{reason}"
        );
    }
    assert_eq!(
        after.label_values("tether_sessions_ended", "reason").len(),
        5,
        "caller-chosen reasons never become series"
    );

    // Requests: by route pattern, never the path with its id.
    let reconnected = [
        ("method", "POST"),
        ("route", RECONNECT_ROUTE),
        ("status", "200"),
    ];
    assert_eq!(moved.of(REQUEST_COUNT, &reconnected), n);
    assert_eq!(
        moved.of(
            REQUEST_COUNT,
            &[
                ("method", "POST"),
                ("route", RECONNECT_ROUTE),
                ("status", "401")
            ]
        ),
        2.0
    );
    let routes = after.label_values("tether_http_request_duration_seconds", "route");
    assert!(routes.iter().any(|r| r == "/metrics"), "{routes:?}");
    assert!(
        routes
            .iter()
            .all(|r| !r.contains("metered") && !r.contains("ghost")),
        "{routes:?}"
    );
    assert_eq!(
        after.find(
            "tether_http_request_duration_seconds_bucket",
            &[
                ("method", "POST"),
                ("route", RECONNECT_ROUTE),
                ("status", "200"),
                ("le", "+Inf")
            ]
        ),
        after.find(REQUEST_COUNT, &reconnected),
        "the +Inf bucket holds every observation"
    );

    // Dashboards, read from the hub when scraped.
    assert_eq!(after.get("tether_dashboards_connected", &[]), 3.0);
    assert_eq!(moved.of("tether_dashboard_replays_total", &[]), 2.0);
    assert_eq!(
        moved.of("tether_dashboard_replays_incomplete_total", &[]),
        1.0
    );
    assert_eq!(
        after.get("tether_dashboards_dropped_slow_consumer_total", &[]),
        0.0
    );

    // The database: each reconnect's compare-and-swap timed, nothing failed, the pool as set.
    let consumed = moved.of(
        "tether_db_call_duration_seconds_count",
        &[("operation", "consume_token")],
    );
    assert!(consumed >= n, "{consumed}");
    let errors: f64 = after
        .0
        .iter()
        .filter(|s| s.name == "tether_db_call_errors_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(errors, 0.0);
    assert_eq!(after.get("tether_db_pool_connections_max", &[]), 16.0);
    let in_use = after.get("tether_db_pool_connections_in_use", &[]);
    let open = after.get("tether_db_pool_connections_open", &[]);
    assert!(
        (1.0..=16.0).contains(&open) && in_use <= open,
        "{in_use} of {open}"
    );

    // Sessions per state come from the database (one cached count): a second instance on the same
    // database reports them on its first scrape.
    let other = Server::start_with(&support::env_with(db, &[]));
    let counts = scrape(&other).await;
    for (status, count) in [("active", 0.0), ("idle", 0.0), ("disconnected", 3.0)] {
        assert_eq!(
            counts.find("tether_sessions", &[("status", status)]),
            Some(count),
            "{status}"
        );
    }
    drop(other);
    drop(server);
}

#[actix_rt::test]
async fn sqlite_metrics_count_exactly() {
    let db = Db::sqlite();
    metrics_story(&db).await;
    db.remove().await;
}

#[actix_rt::test]
async fn postgres_metrics_count_exactly() {
    let Some(db) = Db::postgres().await else {
        return;
    };
    metrics_story(&db).await;
    db.remove().await;
}

/// `metrics.open` lets anyone scrape; refusals made before the manager (a rate limit) are counted
/// with the other reconnect outcomes.
#[actix_rt::test]
async fn open_metrics_need_no_key_and_count_rate_limited_reconnects() {
    let db = Db::sqlite();
    let server = Server::start_with(&support::env_with(
        &db,
        &[
            ("TETHER_METRICS__OPEN", "true"),
            ("TETHER_LIMITS__RECONNECT_PER_SESSION", "1"),
        ],
    ));
    let (status, content_type, body) = fetch(&server, None).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, CONTENT_TYPE),
        "{body}"
    );
    let before = Exposition::parse(&body);

    server.create("limited").await;
    let token = server.mint("limited").await;
    let (status, body) = server.reconnect("limited", &token).await;
    assert_eq!(status, 200, "{body}");
    let next = body["reconnect_token"].as_str().unwrap().to_owned();
    let (status, body) = server.reconnect("limited", &next).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")));

    let (_, _, body) = fetch(&server, None).await;
    let after = Exposition::parse(&body);
    let moved = Delta(&before, &after);
    assert_eq!(moved.of(RECONNECTS, &[("result", "reconnected")]), 1.0);
    assert_eq!(moved.of(RECONNECTS, &[("result", "rate_limited")]), 1.0);
    drop(server);
    db.remove().await;
}
