//! The operator's page at `/` and `/dashboard`: one HTML file, a script and a stylesheet, compiled
//! into the binary (nothing is fetched from anywhere at run time). The page itself holds no data: it
//! signs in with the API key the operator pastes, trades it for a WebSocket ticket, and reads the
//! dashboard stream and the REST API like any other client.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};

use crate::error::ApiError;

const INDEX: &str = include_str!("../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../assets/dashboard/app.js");
const STYLE: &str = include_str!("../assets/dashboard/app.css");

/// Only the page's own files and its own origin: a script injected through a session's data (ids,
/// client names and principals are shown, always as text) would have nowhere to load from or send to.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Mounts the page and its two assets (`GET` and `HEAD`; other methods answer 405 with `Allow`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    for path in ["/", "/dashboard", "/dashboard/"] {
        cfg.service(asset(path, INDEX, "text/html; charset=utf-8"));
    }
    cfg.service(asset(
        "/dashboard/app.js",
        SCRIPT,
        "text/javascript; charset=utf-8",
    ));
    cfg.service(asset(
        "/dashboard/app.css",
        STYLE,
        "text/css; charset=utf-8",
    ));
}

fn asset(
    path: &'static str,
    body: &'static str,
    content_type: &'static str,
) -> actix_web::Resource {
    web::resource(path)
        .app_data(crate::metrics::RoutePattern(path))
        .route(
            web::route()
                .guard(actix_web::guard::Any(actix_web::guard::Get()).or(actix_web::guard::Head()))
                .to(move || async move { serve(body, content_type) }),
        )
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(ApiError::MethodNotAllowed("GET, HEAD"))
        }))
}

fn serve(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(content_type)))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .insert_header((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .insert_header((
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .body(body)
}
