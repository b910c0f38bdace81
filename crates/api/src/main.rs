//! The `tether` binary: loads the settings, starts the service, prints where to look, serves until
//! SIGTERM/SIGINT.

mod config;
mod drain;
mod dto;
mod error;
mod limits;
mod logging;
mod mcp;
mod metrics;
mod openapi;
mod page;
mod ratelimit;
mod routes;
mod startup;
mod state;

use std::io::Write as _;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match config::Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tether: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(&settings.log.level);

    let app = match startup::Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("tether: {}", tether_domain::error_chain(&e));
            return ExitCode::from(1);
        }
    };
    let base = format!("http://{}/api/mcp", app.addr());
    // Printed, not logged: the generated key must reach the operator once and never a log store.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "tether listening on http://{}", app.addr());
    let _ = writeln!(
        out,
        "  dashboard: http://{}/ (paste the API key)",
        app.addr()
    );
    let _ = writeln!(out, "  API:    {base}/sessions");
    let _ = writeln!(out, "  health: {base}/health");
    let _ = writeln!(out, "  MCP:    http://{}/mcp", app.addr());
    let _ = writeln!(out, "  metrics: http://{}/metrics (API key)", app.addr());
    let _ = writeln!(out, "  API docs: {base}/docs");
    if let Some(key) = app.generated_api_key() {
        let _ = writeln!(
            out,
            "  API key (generated for this run, shown once; set MCP_API_KEY to choose one): {key}"
        );
    }
    let _ = out.flush();
    drop(out);

    match app.run_until_stopped().await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tether: server error: {e}");
            ExitCode::from(1)
        }
    }
}
