//! Property tests of the WebSocket handshake's parameters (issue 7 item 12, FUZZING.md):
//! `resume_point` (`?since=` and `Last-Event-ID`) and `origin_allowed`, each against a reference
//! written from its documentation, on requests built with `actix_web::test::TestRequest`.
//!
//! `PROPTEST_CASES` sets the number of cases per property (256 when unset); the long run is
//! `PROPTEST_CASES=1000000 cargo test --release -p tether-realtime --test props`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use actix_web::HttpRequest;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::test::TestRequest;
use proptest::prelude::*;
use proptest::sample::Index;
use tether_realtime::{Error, origin_allowed, resume_point};

/// The default config (so `PROPTEST_CASES` and the other `PROPTEST_*` variables apply), without
/// regression files: a failure found becomes a plain `#[test]` in this file instead.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
const ORIGIN: HeaderName = HeaderName::from_static("origin");

fn request(query: &str, headers: &[(HeaderName, HeaderValue)]) -> HttpRequest {
    let uri = if query.is_empty() {
        "/ws/sessions".to_owned()
    } else {
        format!("/ws/sessions?{query}")
    };
    headers
        .iter()
        .fold(TestRequest::get().uri(&uri), |r, h| {
            r.append_header(h.clone())
        })
        .to_http_request()
}

// ---------------------------------------------------------------------------------------------
// References, written from the documentation.

/// A sequence number: one or more ASCII digits whose value fits a `u64` (no sign, no spaces, no
/// percent-decoding).
fn seq(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.bytes().try_fold(0u64, |acc, b| {
        b.is_ascii_digit().then_some(())?;
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Header text as `HeaderValue::to_str` accepts it: visible ASCII, spaces and tabs.
fn header_text(value: &HeaderValue) -> Option<&str> {
    let ok = value
        .as_bytes()
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    ok.then(|| std::str::from_utf8(value.as_bytes()).unwrap())
}

/// `?since=` (the first parameter named exactly `since`, its raw value) if present, else the first
/// `Last-Event-ID` header with surrounding blanks removed, else none; `Err(())` when the chosen
/// value is not a sequence number.
fn resume_reference(query: &str, last_event_ids: &[HeaderValue]) -> Result<Option<u64>, ()> {
    let since = query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == "since");
    if let Some((_, value)) = since {
        return seq(value).map(Some).ok_or(());
    }
    match last_event_ids.first() {
        None => Ok(None),
        Some(v) => header_text(v)
            .and_then(|t| seq(t.trim_matches([' ', '\t'])))
            .map(Some)
            .ok_or(()),
    }
}

/// No `Origin` header: allowed (not a browser). Exactly one, as text, equal (ignoring ASCII case)
/// to a non-empty allowlist entry with its trailing `/` removed: allowed. Anything else: refused.
/// (The code strips every trailing `/` of an entry, not just one; the configuration refuses
/// entries that end in `/` at all, so the difference never reaches a running service.)
fn origin_reference(origins: &[HeaderValue], allowed: &[String]) -> bool {
    match origins {
        [] => true,
        [one] => header_text(one).is_some_and(|o| {
            allowed.iter().any(|a| {
                let a = a.trim_end_matches('/');
                !a.is_empty() && a.eq_ignore_ascii_case(o)
            })
        }),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies.

/// Characters a request target's query may hold as they are (no `#`, no space).
const QUERY_CHARS: &str = "[A-Za-z0-9._~!$'()*+,;=:@/?%-]";

/// Candidate sequence-number text: digits of every length (past `u64::MAX` too), the bounds, signs,
/// blanks, percent-escapes, and anything in the query alphabet.
fn seq_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[0-9]{1,22}",
        1 => Just(u64::MAX.to_string()),
        1 => Just((u128::from(u64::MAX) + 1).to_string()),
        1 => "0{0,30}[0-9]{0,20}",
        2 => "[+-]?[0-9]{0,5}[.eE_,]?[0-9]{0,5}",
        1 => "%3[0-9]{1,3}",
        2 => proptest::string::string_regex(&format!("{QUERY_CHARS}{{0,12}}")).unwrap(),
    ]
}

/// A query string: other parameters around zero or more `since`-like ones.
fn query() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        4 => Just("since".to_owned()),
        1 => prop::sample::select(vec!["Since", "SINCE", "sinceX", "xsince", "since%3D", "ticket"])
            .prop_map(str::to_owned),
        1 => "[A-Za-z0-9_]{0,8}",
    ];
    let pair = (name, prop::option::weighted(0.9, seq_text())).prop_map(|(k, v)| match v {
        Some(v) => format!("{k}={v}"),
        None => k,
    });
    proptest::collection::vec(pair, 0..4).prop_map(|pairs| pairs.join("&"))
}

/// Header values: sequence-number text with blanks around it, and arbitrary bytes (those
/// `HeaderValue` refuses, such as control characters, are dropped).
fn header_values() -> impl Strategy<Value = Vec<HeaderValue>> {
    let value = prop_oneof![
        3 => ("[ \t]{0,2}", seq_text(), "[ \t]{0,2}").prop_map(|(a, b, c)| format!("{a}{b}{c}").into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => proptest::collection::vec(prop_oneof![Just(b'7'), 0x80u8..=0xff], 0..200),
    ];
    proptest::collection::vec(value, 0..3).prop_map(|values| {
        values
            .iter()
            .filter_map(|v| HeaderValue::from_bytes(v).ok())
            .collect()
    })
}

fn origin_like() -> impl Strategy<Value = String> {
    "(http|https|HTTP|ws)://[a-z0-9.-]{0,12}(:[0-9]{1,5})?/?"
}

/// An Origin derived from an allowlist entry: as is, with letters' case flipped, with the entry's
/// slash dropped or one added, or with something appended or cut off.
fn derived_origin(entry: &str, how: u8, at: Index) -> String {
    match how {
        0 => entry.to_owned(),
        1 => entry
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if (i + at.index(7)).is_multiple_of(2) {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect(),
        2 => entry.trim_end_matches('/').to_owned(),
        3 => format!("{entry}/"),
        4 => format!("{}.evil.example", entry.trim_end_matches('/')),
        _ => entry[..at.index(entry.len() + 1)].to_owned(),
    }
}

/// An allowlist and the Origin headers of a request against it.
fn origin_case() -> impl Strategy<Value = (Vec<String>, Vec<HeaderValue>)> {
    let allowed = proptest::collection::vec(
        prop_oneof![8 => origin_like(), 1 => Just(String::new()), 1 => Just("/".to_owned())],
        0..4,
    );
    let picks = proptest::collection::vec((any::<Index>(), 0u8..6, any::<Index>()), 0..3);
    let others = proptest::collection::vec(
        prop_oneof![
            origin_like().prop_map(String::into_bytes),
            Just(b"null".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..30),
        ],
        0..2,
    );
    (allowed, picks, others, any::<bool>()).prop_map(|(allowed, picks, others, others_first)| {
        let mut origins: Vec<Vec<u8>> = picks
            .iter()
            .filter(|_| !allowed.is_empty())
            .map(|(which, how, at)| {
                derived_origin(&allowed[which.index(allowed.len())], *how, *at).into_bytes()
            })
            .collect();
        if others_first {
            origins.splice(0..0, others);
        } else {
            origins.extend(others);
        }
        let origins = origins
            .iter()
            .filter_map(|o| HeaderValue::from_bytes(o).ok())
            .collect();
        (allowed, origins)
    })
}

// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// `resume_point` answers what the reference answers; a refusal is `InvalidResumePoint`.
    #[test]
    fn resume_point_matches_the_reference(query in query(), ids in header_values()) {
        let headers: Vec<_> = ids.iter().map(|v| (LAST_EVENT_ID, v.clone())).collect();
        let req = request(&query, &headers);
        match (resume_point(&req), resume_reference(&query, &ids)) {
            (Ok(got), Ok(want)) => prop_assert_eq!(got, want),
            (Err(Error::InvalidResumePoint(_)), Err(())) => {}
            (got, want) => prop_assert!(false, "got {got:?}, want {want:?}"),
        }
    }

    /// A refused resume point is reported with at most 32 characters of the offending value, so a
    /// hostile header cannot fill the log line or the error body (a `Last-Event-ID` that is not
    /// text included: see `non_text_last_event_id_is_shown_whole`).
    #[test]
    fn resume_point_errors_are_short(query in query(), ids in header_values()) {
        let headers: Vec<_> = ids.iter().map(|v| (LAST_EVENT_ID, v.clone())).collect();
        if let Err(Error::InvalidResumePoint(shown)) = resume_point(&request(&query, &headers)) {
            prop_assert!(shown.chars().count() <= 32, "{} characters shown", shown.chars().count());
        }
    }

    /// `since` alone: accepted exactly when it is all ASCII digits and fits a `u64`, as that value.
    #[test]
    fn since_is_digits_that_fit(value in seq_text()) {
        let got = resume_point(&request(&format!("since={value}"), &[]));
        let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
        let fits = value.parse::<u128>().is_ok_and(|n| n <= u128::from(u64::MAX));
        match got {
            Ok(Some(n)) => {
                prop_assert!(digits && fits, "{value:?} accepted");
                prop_assert_eq!(n.to_string(), value.trim_start_matches('0').to_owned()
                    + if n == 0 { "0" } else { "" });
            }
            Ok(None) => prop_assert!(false, "since={value:?} ignored"),
            Err(_) => prop_assert!(!(digits && fits), "{value:?} refused"),
        }
    }

    /// `origin_allowed` answers what the reference answers.
    #[test]
    fn origin_matches_the_reference((allowed, origins) in origin_case()) {
        let headers: Vec<_> = origins.iter().map(|v| (ORIGIN, v.clone())).collect();
        let got = origin_allowed(&request("", &headers), &allowed);
        prop_assert_eq!(got, origin_reference(&origins, &allowed),
            "origins {:?} allowed {:?}", origins, allowed);
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions found by the properties above.

/// Found by `resume_point_errors_are_short` (minimal input: no query, `Last-Event-ID:
/// 777777777777777777777777777777\x80777`): a `Last-Event-ID` that is not text goes into
/// `InvalidResumePoint` whole (`String::from_utf8_lossy` of every byte) instead of through
/// `truncate`, so up to a whole header's worth of bytes is echoed into the log line and into the
/// 400 body. Fixed: that branch goes through `truncate` too.
#[test]
fn non_text_last_event_id_is_shown_whole() {
    for value in [
        b"777777777777777777777777777777\x80777".to_vec(),
        [b"1".as_slice(), &[0xff; 4000]].concat(),
    ] {
        let value = HeaderValue::from_bytes(&value).unwrap();
        match resume_point(&request("", &[(LAST_EVENT_ID, value)])) {
            Err(Error::InvalidResumePoint(shown)) => {
                assert!(
                    shown.chars().count() <= 32,
                    "{} characters",
                    shown.chars().count()
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
