//! The HTTP client the benches load the server with.

use std::time::Duration;

/// Per-request timeout: far above any healthy latency, short enough to keep a run bounded.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idle pooled connection is kept: below actix-web's 5 s server keep-alive, so the
/// client never reuses a connection the server is closing between two phases.
const KEEP_ALIVE: Duration = Duration::from_secs(3);

/// A client holding up to `connections` connections, with [`REQUEST_TIMEOUT`] per request and no
/// redirects followed.
pub fn client(connections: usize) -> awc::Client {
    let connector = awc::Connector::new()
        .limit(connections)
        .conn_keep_alive(KEEP_ALIVE);
    awc::Client::builder()
        .connector(connector)
        .timeout(REQUEST_TIMEOUT)
        .disable_redirects()
        .finish()
}
