//! Logging set-up: one line per event on stderr, with one correction. actix-http answers a request
//! it cannot parse (400) or whose head is too large (431) by itself and logs it at ERROR as a
//! "stream error": a client's mistake reported as the server's fault. Those events are replaced by
//! one INFO line of our own; every other event passes unchanged.

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// The target actix-http logs its parse failures under.
const DISPATCHER: &str = "actix_http::h1::dispatcher";

/// Installs the subscriber: `RUST_LOG`, else `level`.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(ClientErrors)
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
}

/// Turns actix-http's request-parse errors into client-error lines.
struct ClientErrors;

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

/// The parse failure an actix-http event reports, if it is one.
fn parse_failure(event: &Event<'_>) -> Option<String> {
    if event.metadata().target() != DISPATCHER {
        return None;
    }
    let mut message = Message::default();
    event.record(&mut message);
    message
        .0
        .strip_prefix("stream error: request parse error: ")
        .map(str::to_owned)
}

impl<S: Subscriber> Layer<S> for ClientErrors {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let Some(reason) = parse_failure(event) else {
            return true;
        };
        tracing::info!(target: "tether::http", %reason, "malformed request refused by the HTTP parser");
        false
    }
}
