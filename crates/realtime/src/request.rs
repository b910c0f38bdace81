//! What the handshake request says about the stream: where to resume from, and whether a browser
//! page from this origin may open it. `api` calls these before [`Hub::connect`](crate::Hub::connect)
//! and maps a failure to its status.

use actix_web::HttpRequest;
use actix_web::http::header::{HeaderName, ORIGIN};

use crate::error::Error;

/// The `Last-Event-ID` header: the resume point of clients that reuse EventSource conventions.
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// The `seq` to resume after: `?since=<seq>`, else the `Last-Event-ID` header, else none. The query
/// wins when both are present (it is what the client's code chose for this connection).
///
/// # Errors
/// [`Error::InvalidResumePoint`] when the chosen value is not a non-negative integer.
pub fn resume_point(req: &HttpRequest) -> Result<Option<u64>, Error> {
    let from_query = req
        .query_string()
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == "since")
        .map(|(_, value)| value);
    if let Some(value) = from_query {
        return parse(value).map(Some);
    }
    match req.headers().get(LAST_EVENT_ID) {
        None => Ok(None),
        Some(value) => {
            let text = value.to_str().map_err(|_| {
                Error::InvalidResumePoint(truncate(&String::from_utf8_lossy(value.as_bytes())))
            })?;
            parse(text.trim()).map(Some)
        }
    }
}

fn parse(value: &str) -> Result<u64, Error> {
    // Digits only: `u64::from_str` would also take a leading `+`.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::InvalidResumePoint(truncate(value)));
    }
    value
        .parse()
        .map_err(|_| Error::InvalidResumePoint(truncate(value)))
}

/// Keeps a hostile value from filling the log line that reports it.
fn truncate(value: &str) -> String {
    value.chars().take(32).collect()
}

/// Whether the handshake's `Origin` allows the upgrade: true without an `Origin` header (not a
/// browser, so cross-site WebSocket hijacking does not apply), or when it equals one of `allowed`
/// exactly (`scheme://host[:port]`, compared case-insensitively; a trailing `/` in an allowlist entry
/// is ignored). Several `Origin` headers, or one that is not text, are refused.
pub fn origin_allowed(req: &HttpRequest, allowed: &[String]) -> bool {
    let mut origins = req.headers().get_all(ORIGIN);
    let Some(origin) = origins.next() else {
        return true;
    };
    if origins.next().is_some() {
        return false;
    }
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    allowed
        .iter()
        .map(|a| a.trim_end_matches('/'))
        .any(|a| !a.is_empty() && a.eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn req(uri: &str, last_event_id: Option<&str>) -> HttpRequest {
        let mut r = TestRequest::get().uri(uri);
        if let Some(v) = last_event_id {
            r = r.insert_header(("Last-Event-ID", v));
        }
        r.to_http_request()
    }

    #[test]
    fn resume_point_from_query_header_or_neither() {
        assert_eq!(resume_point(&req("/ws", None)).unwrap(), None);
        assert_eq!(resume_point(&req("/ws?since=42", None)).unwrap(), Some(42));
        assert_eq!(
            resume_point(&req("/ws?ticket=ab&since=0", None)).unwrap(),
            Some(0)
        );
        assert_eq!(resume_point(&req("/ws", Some("17"))).unwrap(), Some(17));
        assert_eq!(resume_point(&req("/ws", Some(" 17 "))).unwrap(), Some(17));
        // The query wins over the header.
        assert_eq!(
            resume_point(&req("/ws?since=5", Some("17"))).unwrap(),
            Some(5)
        );
        // Other parameters that merely contain the word are not it.
        assert_eq!(resume_point(&req("/ws?sinceX=5", None)).unwrap(), None);
    }

    #[test]
    fn resume_point_refuses_garbage() {
        for uri in [
            "/ws?since=abc",
            "/ws?since=",
            "/ws?since",
            "/ws?since=-1",
            "/ws?since=%2B1",
            "/ws?since=1.5",
            "/ws?since=99999999999999999999999",
        ] {
            assert!(
                matches!(
                    resume_point(&req(uri, None)),
                    Err(Error::InvalidResumePoint(_))
                ),
                "{uri}"
            );
        }
        assert!(resume_point(&req("/ws", Some("x"))).is_err());
        assert!(resume_point(&req("/ws", Some("+3"))).is_err());
        // A bad query is an error even when the header would do.
        assert!(resume_point(&req("/ws?since=x", Some("3"))).is_err());
    }

    fn with_origins(origins: &[&str]) -> HttpRequest {
        let mut r = TestRequest::get().uri("/ws");
        for o in origins {
            r = r.append_header(("Origin", *o));
        }
        r.to_http_request()
    }

    #[test]
    fn origin_rules() {
        let allowed = vec![
            "http://127.0.0.1:8181".to_owned(),
            "https://Dash.Example.com/".to_owned(),
        ];
        assert!(origin_allowed(&with_origins(&[]), &allowed), "no Origin");
        assert!(origin_allowed(
            &with_origins(&["http://127.0.0.1:8181"]),
            &allowed
        ));
        assert!(
            origin_allowed(&with_origins(&["HTTPS://dash.example.com"]), &allowed),
            "case-insensitive, trailing slash of the entry ignored"
        );
        for bad in [
            "http://127.0.0.1:8182",
            "https://127.0.0.1:8181",
            "http://127.0.0.1",
            "http://127.0.0.1:8181.evil.com",
            "https://dash.example.com.evil.com",
            "null",
            "",
        ] {
            assert!(!origin_allowed(&with_origins(&[bad]), &allowed), "{bad}");
        }
        assert!(!origin_allowed(
            &with_origins(&["http://127.0.0.1:8181", "http://127.0.0.1:8181"]),
            &allowed
        ));
        assert!(!origin_allowed(
            &with_origins(&["http://127.0.0.1:8181"]),
            &[]
        ));
    }
}

/// Which `health_update` a dashboard gets: `?health=full` (the default, the contract's shape with
/// the newest sessions listed) or `?health=summary` (the same message without `sessions`: a few
/// hundred bytes instead of up to ~15 KB every tick, for dashboards that keep their own list, such as
/// the operator's page).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HealthUpdates {
    /// With the newest sessions (up to 50).
    #[default]
    Full,
    /// Counts only.
    Summary,
}

/// What a dashboard asks for at its handshake, read before anything is spent on it (a ticket):
/// [`resume_point`] and `?health=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The `seq` to resume after.
    pub since: Option<u64>,
    /// Which health updates.
    pub health: HealthUpdates,
}

/// The client's [`ConnectOptions`].
///
/// # Errors
/// [`Error::InvalidResumePoint`] (see [`resume_point`]), [`Error::InvalidHealthMode`] when `health`
/// is neither `full` nor `summary`.
pub fn connect_options(req: &HttpRequest) -> Result<ConnectOptions, Error> {
    let since = resume_point(req)?;
    let health = match req
        .query_string()
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == "health")
        .map(|(_, value)| value)
    {
        None | Some("full") => HealthUpdates::Full,
        Some("summary") => HealthUpdates::Summary,
        Some(other) => return Err(Error::InvalidHealthMode(truncate(other))),
    };
    Ok(ConnectOptions { since, health })
}
