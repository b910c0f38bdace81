//! Property tests of `Authority::verify` (issue 7 item 12, FUZZING.md): arbitrary text, mutations of
//! valid tokens by someone without the key, and tokens re-signed by someone with it, each checked
//! against what the contract says must come back.
//!
//! `PROPTEST_CASES` sets the number of cases per property (256 when unset); the long run is
//! `PROPTEST_CASES=1000000 cargo test --release -p tether-auth --test props`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};
use sha2::Sha256;
use tether_auth::{Authority, Keyring, MAX_TOKEN_LEN, Secret, SigningKey, hash_token};
use tether_domain::{
    Clock, Error, ResultCode, SessionId, SystemClock, Timestamp, TokenAuthority, VerifiedToken,
};

const ISS: &str = "tether";
const AUD: &str = "tether-reconnect";
const LIFETIME: Duration = Duration::from_secs(900);

/// The default config (so `PROPTEST_CASES` and the other `PROPTEST_*` variables apply), without
/// regression files: a failure found becomes a plain `#[test]` in this file instead.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn secret(fill: u8) -> Secret {
    Secret::new([fill; 32]).unwrap()
}

fn kid_of(s: &Secret) -> String {
    SigningKey::new(s.clone()).kid().to_owned()
}

/// One authority for every case: signs with secret 1, still verifies secret 2 (retired, valid for a
/// day) and no longer secret 3 (retired, expired). Secret 4 is in no ring.
struct Fixture {
    auth: Authority,
    kids: [String; 4],
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let now = SystemClock.now();
    let ring = Keyring::new(secret(1))
        .with_retired(secret(2), now.plus(Duration::from_secs(86_400)))
        .unwrap()
        .with_retired(secret(3), now.minus(Duration::from_secs(1)))
        .unwrap();
    Fixture {
        auth: Authority::new(ring, ISS, AUD, LIFETIME).unwrap(),
        kids: [1, 2, 3, 4].map(|n| kid_of(&secret(n))),
    }
});

fn auth() -> &'static Authority {
    &FIXTURE.auth
}

/// What `verify` answered, with any error other than a reconnect code failing the test (the
/// contract has nothing else for a presented token).
fn outcome(result: Result<VerifiedToken, Error>) -> Result<VerifiedToken, ResultCode> {
    match result {
        Ok(v) => Ok(v),
        Err(Error::Reconnect(code)) => Err(code),
        Err(other) => panic!("verify answered something other than a result code: {other:?}"),
    }
}

/// The three codes `verify` is documented to answer.
fn documented(code: ResultCode) -> bool {
    matches!(
        code,
        ResultCode::InvalidToken | ResultCode::TokenExpired | ResultCode::InvalidTokenPurpose
    )
}

fn hmac(key: &Secret, message: &str) -> String {
    let bytes = (0..key.to_hex().len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&key.to_hex()[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    let mut mac = Hmac::<Sha256>::new_from_slice(&bytes).unwrap();
    mac.update(message.as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

fn encode_json(value: &Value) -> String {
    B64.encode(serde_json::to_vec(value).unwrap())
}

fn decode_json(segment: &str) -> Option<Map<String, Value>> {
    serde_json::from_slice(&B64.decode(segment).ok()?).ok()
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn valid_id() -> impl Strategy<Value = SessionId> {
    "[A-Za-z0-9._:-]{1,128}".prop_map(|s| match s.as_str() {
        "." | ".." => SessionId::parse(&format!("{s}x")).unwrap(),
        _ => SessionId::parse(&s).unwrap(),
    })
}

/// Text a client could send: anything, three-segment shapes in and around the base64url alphabet,
/// and text around the 4 KiB cap.
fn token_like() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        3 => "[A-Za-z0-9_-]{0,60}(\\.[A-Za-z0-9_=+/ -]{0,60}){0,4}",
        1 => "eyJ[A-Za-z0-9_-]{0,80}\\.eyJ[A-Za-z0-9_-]{0,120}\\.[A-Za-z0-9_-]{43}",
        1 => (MAX_TOKEN_LEN - 4..MAX_TOKEN_LEN + 4).prop_map(|n| {
            let mut s = "A".repeat(n);
            s.replace_range(10..11, ".");
            s.replace_range(20..21, ".");
            s
        }),
    ]
}

/// JSON scalars and small containers, the values a forged header or claim might hold.
fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
    ]
}

/// A value for a header field or claim. Times are kept relative to the verifying instant and
/// resolved when the case runs, so that a long run keeps probing the expiry boundary.
#[derive(Clone, Debug)]
enum Val {
    Json(Value),
    /// `now + offset`, as an integer.
    Secs(i64),
    /// `now + offset + 0.5`, as a float.
    SecsFloat(i64),
    /// `now + offset`, as text.
    SecsText(i64),
}

impl Val {
    fn at(&self, now: i64) -> Value {
        match self {
            Val::Json(v) => v.clone(),
            Val::Secs(d) => Value::from(now + d),
            Val::SecsFloat(d) => Value::from((now + d) as f64 + 0.5),
            Val::SecsText(d) => Value::from((now + d).to_string()),
        }
    }
}

/// One edit of a header or claims object: set a key to a value, or remove it.
#[derive(Clone, Debug)]
struct Edit {
    key: &'static str,
    value: Option<Val>,
}

impl Edit {
    fn apply(&self, map: &mut Map<String, Value>, now: i64) {
        match &self.value {
            Some(v) => {
                map.insert(self.key.to_owned(), v.at(now));
            }
            None => {
                map.remove(self.key);
            }
        }
    }
}

fn header_edit() -> impl Strategy<Value = Edit> {
    let name = |key: &'static str| {
        move |value: Option<Value>| Edit {
            key,
            value: value.map(Val::Json),
        }
    };
    let kids = FIXTURE.kids.clone();
    let alg = prop_oneof![
        3 => prop::sample::select(vec![
            "HS256", "HS384", "HS512", "none", "None", "hs256", "RS256", "ES256", "PS256", "EdDSA",
        ])
        .prop_map(Value::from),
        1 => json_leaf(),
    ];
    let kid = prop_oneof![
        3 => prop::sample::select(kids.to_vec()).prop_map(Value::from),
        1 => json_leaf(),
    ];
    let typ = prop_oneof![
        prop::sample::select(vec!["JWT", "jwt", "at+jwt"]).prop_map(Value::from),
        json_leaf(),
    ];
    prop_oneof![
        prop::option::weighted(0.9, alg).prop_map(name("alg")),
        prop::option::weighted(0.8, kid).prop_map(name("kid")),
        prop::option::of(typ).prop_map(name("typ")),
        prop::option::of(json_leaf()).prop_map(name("x-extra")),
    ]
}

/// Offsets in seconds from the verifying instant, dense around 0 where expiry is decided.
fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        -3i64..=3,
        -2_000i64..2_000,
        any::<i32>().prop_map(i64::from)
    ]
}

/// Claim values: the right one, near misses, wrong types.
fn claim_edit() -> impl Strategy<Value = Edit> {
    let name = |key: &'static str| move |value| Edit { key, value };
    let json = |s: BoxedStrategy<Value>| s.prop_map(Val::Json);
    let string = move || {
        json(
            prop_oneof![
                "[A-Za-z0-9._:-]{0,40}".prop_map(Value::from),
                any::<String>().prop_map(Value::from),
                json_leaf(),
            ]
            .boxed(),
        )
    };
    let time = move || {
        prop_oneof![
            4 => offset().prop_map(Val::Secs),
            1 => Just(Val::Json(Value::from(0))),
            1 => Just(Val::Json(Value::from(i64::MAX))),
            1 => Just(Val::Json(Value::from(i64::MAX as u64 + 1))),
            1 => Just(Val::Json(Value::from(u64::MAX))),
            1 => offset().prop_map(Val::SecsFloat),
            1 => offset().prop_map(Val::SecsText),
            1 => json_leaf().prop_map(Val::Json),
        ]
    };
    let who = move |right: &'static str| {
        json(
            prop_oneof![
                3 => Just(Value::from(right)),
                1 => Just(json!([right])),
                1 => Just(json!([right, "someone-else"])),
                1 => Just(json!(["someone-else"])),
                1 => Just(json!([right, 1])),
                1 => Just(Value::from(right.to_uppercase())),
                2 => json_leaf(),
            ]
            .boxed(),
        )
    };
    let purpose = json(
        prop_oneof![
            2 => Just(Value::from("session_reconnect")),
            1 => Just(Value::from("password_reset")),
            1 => Just(Value::from("session_reconnect ")),
            1 => json_leaf(),
        ]
        .boxed(),
    );
    prop_oneof![
        prop::option::weighted(0.9, string()).prop_map(name("session_id")),
        prop::option::weighted(0.9, string()).prop_map(name("jti")),
        prop::option::weighted(0.9, time()).prop_map(name("iat")),
        prop::option::weighted(0.9, time()).prop_map(name("exp")),
        prop::option::weighted(0.9, time()).prop_map(name("nbf")),
        prop::option::weighted(0.9, purpose).prop_map(name("purpose")),
        prop::option::weighted(0.9, who(ISS)).prop_map(name("iss")),
        prop::option::weighted(0.9, who(AUD)).prop_map(name("aud")),
        prop::option::of(json(json_leaf().boxed())).prop_map(name("sub")),
        prop::option::of(json(json_leaf().boxed())).prop_map(name("x-extra")),
    ]
}

/// An edit by someone without the key: byte-level damage, segment surgery, other spellings of the
/// same bytes, and header or claim changes that keep the original signature.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
    Append(String),
    SwapSegments(usize, usize),
    DropSegment(usize),
    RepeatSegment(usize),
    /// Segment `i` of the other session's valid token instead of this one's.
    SpliceOther(usize),
    Pad(usize, &'static str),
    StandardAlphabet(usize),
    /// Sets unused low bits in the last character of a segment.
    TrailingBits(usize, u8),
    Whitespace(Index, char),
    /// The segment's bytes in padded standard base64.
    StandardPadded(usize),
    Header(Edit),
    Claim(Edit),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use Mutation::*;
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| SetByte(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Insert(i, b)),
        any::<Index>().prop_map(Delete),
        any::<Index>().prop_map(Truncate),
        prop_oneof![
            Just(".".to_owned()),
            "[A-Za-z0-9_.=-]{1,8}",
            any::<String>()
        ]
        .prop_map(Append),
        (0usize..3, 0usize..3).prop_map(|(a, b)| SwapSegments(a, b)),
        (0usize..3).prop_map(DropSegment),
        (0usize..3).prop_map(RepeatSegment),
        (0usize..3).prop_map(SpliceOther),
        (0usize..3, prop::sample::select(vec!["=", "==", "==="])).prop_map(|(i, p)| Pad(i, p)),
        (0usize..3).prop_map(StandardAlphabet),
        (0usize..3, 1u8..4).prop_map(|(i, b)| TrailingBits(i, b)),
        (
            any::<Index>(),
            prop::sample::select(vec![' ', '\n', '\t', '\r', '\u{a0}'])
        )
            .prop_map(|(i, c)| Whitespace(i, c)),
        (0usize..3).prop_map(StandardPadded),
        header_edit().prop_map(Header),
        claim_edit().prop_map(Claim),
    ]
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl Mutation {
    fn apply(&self, token: &str, other: &str, now: i64) -> String {
        use Mutation::*;
        let mut bytes = token.as_bytes().to_vec();
        let mut segments: Vec<String> = token.split('.').map(str::to_owned).collect();
        let n = segments.len();
        let seg = |i: usize| i % n;
        match self {
            FlipBit(i, b) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] ^= 1 << b;
            }
            SetByte(i, b) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
            Delete(i) if !bytes.is_empty() => {
                bytes.remove(i.index(bytes.len()));
            }
            Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            Append(s) => bytes.extend_from_slice(s.as_bytes()),
            Whitespace(i, c) => {
                let at = i.index(bytes.len() + 1);
                let mut buf = [0u8; 4];
                bytes.splice(at..at, c.encode_utf8(&mut buf).bytes());
            }
            FlipBit(..) | SetByte(..) | Delete(_) => {}
            SwapSegments(a, b) => {
                segments.swap(seg(*a), seg(*b));
                return segments.join(".");
            }
            DropSegment(i) => {
                segments.remove(seg(*i));
                return segments.join(".");
            }
            RepeatSegment(i) => {
                let s = segments[seg(*i)].clone();
                segments.insert(seg(*i), s);
                return segments.join(".");
            }
            SpliceOther(i) => {
                if let Some(s) = other.split('.').nth(*i) {
                    let i = seg(*i);
                    segments[i] = s.to_owned();
                }
                return segments.join(".");
            }
            Pad(i, p) => {
                segments[seg(*i)].push_str(p);
                return segments.join(".");
            }
            StandardAlphabet(i) => {
                let s = &mut segments[seg(*i)];
                *s = s.replace('-', "+").replace('_', "/");
                return segments.join(".");
            }
            TrailingBits(i, bits) => {
                let s = &mut segments[seg(*i)];
                // 2 or 4 unused low bits when the length is 3 or 2 mod 4; none otherwise.
                let unused: u8 = match s.len() % 4 {
                    2 => 0b1111,
                    3 => 0b11,
                    _ => 0,
                };
                if let Some(last) = s.pop() {
                    let value = ALPHABET.iter().position(|&c| char::from(c) == last);
                    let c = match value {
                        Some(v) => char::from(ALPHABET[v | usize::from(bits & unused)]),
                        None => last,
                    };
                    s.push(c);
                }
                return segments.join(".");
            }
            StandardPadded(i) => {
                let s = &mut segments[seg(*i)];
                if let Ok(raw) = B64.decode(&*s) {
                    *s = STANDARD.encode(raw);
                }
                return segments.join(".");
            }
            Header(edit) | Claim(edit) => {
                let i = usize::from(matches!(self, Claim(_)));
                if let Some(mut map) = segments.get(i).and_then(|s| decode_json(s)) {
                    edit.apply(&mut map, now);
                    segments[i] = encode_json(&Value::Object(map));
                }
                return segments.join(".");
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// The model of a token signed by a key holder.

/// What `verify` must answer for a token `len` bytes long with `header` and `claims`, signed
/// HS256 with secret `signer` (1 active, 2 retired and valid, 3 retired and expired, 4 unknown),
/// verified at `now` (a few minutes after the `wall` clock, which the JWT library also checks).
///
/// Written from the documentation of `Authority` and of the JWT library's validation: the header
/// and key first, then the claims the token type requires, the library's `exp`/`iss`/`aud`
/// checks, and the authority's own clock, range and purpose checks.
fn expected(
    header: &Map<String, Value>,
    claims: &Map<String, Value>,
    len: usize,
    signer: u8,
    wall: i64,
    now: i64,
) -> Result<(String, String), ResultCode> {
    use ResultCode::{InvalidToken, InvalidTokenPurpose, TokenExpired};
    if len > MAX_TOKEN_LEN {
        return Err(InvalidToken);
    }
    // Header: parses (typ a string or null), alg exactly HS256, kid names a usable key, and that
    // key signed it.
    let typ_ok = matches!(
        header.get("typ"),
        None | Some(Value::Null | Value::String(_))
    );
    let alg_ok = header.get("alg") == Some(&Value::from("HS256"));
    let kid = header.get("kid").and_then(Value::as_str);
    let kid_ok = match header.get("kid") {
        None | Some(Value::Null | Value::String(_)) => true,
        Some(_) => false,
    };
    let usable = [&FIXTURE.kids[0], &FIXTURE.kids[1]];
    let key_ok = kid.is_some_and(|k| usable.iter().any(|u| *u == k))
        && kid == Some(FIXTURE.kids[usize::from(signer) - 1].as_str());
    if !(typ_ok && kid_ok && alg_ok && key_ok) {
        return Err(InvalidToken);
    }
    // The claims the token type requires, with exact types.
    let string = |k: &str| claims.get(k).and_then(Value::as_str);
    let integer = |k: &str| claims.get(k).and_then(Value::as_u64);
    let (Some(session_id), Some(jti), Some(purpose), Some(iat), Some(exp)) = (
        string("session_id"),
        string("jti"),
        string("purpose"),
        integer("iat"),
        integer("exp"),
    ) else {
        return Err(InvalidToken);
    };
    // The library reads `sub` and `nbf` too, though we set neither: `sub` an array or object, or
    // `nbf` a non-empty array or object, fails that read (found by this property; it fails closed).
    let container = |v: Option<&Value>, empty_ok: bool| match v {
        Some(Value::Array(a)) => !(empty_ok && a.is_empty()),
        Some(Value::Object(o)) => !(empty_ok && o.is_empty()),
        _ => false,
    };
    if container(claims.get("sub"), false) || container(claims.get("nbf"), true) {
        return Err(InvalidToken);
    }
    // `iss` and `aud`: a string, or an array of strings, naming us.
    let names = |k: &str, right: &str| match claims.get(k) {
        Some(Value::String(s)) => Some(s == right),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Some(items.iter().any(|v| v == right))
        }
        _ => None,
    };
    let (Some(iss_ok), Some(aud_ok)) = (names("iss", ISS), names("aud", AUD)) else {
        return Err(InvalidToken); // missing or unparsable: a required claim absent
    };
    if exp < u64::try_from(wall).unwrap() {
        return Err(TokenExpired);
    }
    if !iss_ok || !aud_ok {
        return Err(InvalidToken);
    }
    let Ok(exp) = i64::try_from(exp) else {
        return Err(InvalidToken);
    };
    if exp <= now {
        return Err(TokenExpired);
    }
    if i64::try_from(iat).is_err() {
        return Err(InvalidToken);
    }
    if purpose != "session_reconnect" {
        return Err(InvalidTokenPurpose);
    }
    Ok((session_id.to_owned(), jti.to_owned()))
}

/// The wall clock, and the verifying instant 300 s after it: the library decides expiry by the wall
/// clock only for tokens already expired then, so every boundary case is decided by the authority's
/// own check against `now`, with no race against the clock ticking.
fn clocks() -> (Timestamp, Timestamp) {
    let wall = SystemClock.now();
    (wall, wall.plus(Duration::from_secs(300)))
}

// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Arbitrary text is refused with `invalid_token`, never verified, never a panic.
    #[test]
    fn arbitrary_text_is_invalid(text in token_like()) {
        let (_, now) = clocks();
        prop_assert_eq!(outcome(auth().verify(&text, now)).err(), Some(ResultCode::InvalidToken));
    }

    /// A minted token verifies to the same session, jti, hash and times until the instant it
    /// expires, and its rotation verifies to the same session under a new jti.
    #[test]
    fn minted_tokens_round_trip(id in valid_id(), age in 0u64..900) {
        let (wall, now) = clocks();
        let at = wall.minus(Duration::from_secs(age));
        let issued = auth().mint(&id, at).unwrap();
        let token = issued.token.expose();
        let v = outcome(auth().verify(token, wall)).unwrap();
        prop_assert_eq!(v.session_id.as_str(), id.as_str());
        prop_assert!(v.hash.ct_eq(&issued.hash) && v.hash.ct_eq(&hash_token(token)));
        prop_assert_eq!(v.issued_at, issued.issued_at);
        prop_assert_eq!(v.expires_at, issued.expires_at);
        prop_assert_eq!(v.expires_at, Timestamp::from_secs(at.as_secs()).plus(LIFETIME));
        let last = issued.expires_at.minus(Duration::from_micros(1));
        prop_assert!(auth().verify(token, last.max(wall)).is_ok());
        prop_assert_eq!(
            outcome(auth().verify(token, issued.expires_at)).err(),
            Some(ResultCode::TokenExpired)
        );

        let rotated = auth().rotate(&v, now).unwrap();
        prop_assert_eq!(&auth().rotate(&v, now).unwrap().token, &rotated.token);
        let r = outcome(auth().verify(rotated.token.expose(), now)).unwrap();
        prop_assert_eq!(r.session_id.as_str(), id.as_str());
        prop_assert_ne!(r.jti, v.jti);
    }

    /// A valid token changed by someone without the key is refused with `invalid_token`: the only
    /// text that verifies is a token exactly as minted, and then as the session it was minted for.
    #[test]
    fn mutated_tokens_never_verify(
        a in valid_id(),
        b in valid_id(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let (_, now) = clocks();
        let ta = auth().mint(&a, now).unwrap().token.expose().to_owned();
        let tb = auth().mint(&b, now).unwrap().token.expose().to_owned();
        let mutated = mutations.iter().fold(ta.clone(), |t, m| m.apply(&t, &tb, now.as_secs()));
        match outcome(auth().verify(&mutated, now)) {
            Ok(v) if mutated == ta => prop_assert_eq!(v.session_id.as_str(), a.as_str()),
            Ok(v) if mutated == tb => prop_assert_eq!(v.session_id.as_str(), b.as_str()),
            Ok(v) => prop_assert!(false, "{mutated:?} verified as {}", v.session_id),
            Err(code) => {
                prop_assert!(mutated != ta && mutated != tb, "the token itself was refused");
                prop_assert_eq!(code, ResultCode::InvalidToken);
            }
        }
    }

    /// A token re-signed by a key holder with any header and claims gets exactly the answer the
    /// model gives, and is accepted only with every claim right.
    #[test]
    fn resigned_tokens_follow_the_rules(
        id in valid_id(),
        header_edits in proptest::collection::vec(header_edit(), 0..3),
        claim_edits in proptest::collection::vec(claim_edit(), 0..4),
        signer in prop_oneof![6 => Just(1u8), 2 => Just(2u8), 1 => Just(3u8), 1 => Just(4u8)],
    ) {
        let (wall, now) = clocks();
        let mut header = Map::new();
        header.insert("alg".into(), "HS256".into());
        header.insert("typ".into(), "JWT".into());
        header.insert("kid".into(), FIXTURE.kids[usize::from(signer) - 1].clone().into());
        header_edits.iter().for_each(|e| e.apply(&mut header, now.as_secs()));
        let mut claims = Map::new();
        for (k, v) in [
            ("session_id", Value::from(id.as_str())),
            ("iat", Value::from(now.as_secs() - 10)),
            ("exp", Value::from(now.as_secs() - 10 + 900)),
            ("jti", Value::from("0123456789abcdef0123456789abcdef")),
            ("purpose", Value::from("session_reconnect")),
            ("iss", Value::from(ISS)),
            ("aud", Value::from(AUD)),
        ] {
            claims.insert(k.into(), v);
        }
        claim_edits.iter().for_each(|e| e.apply(&mut claims, now.as_secs()));
        let message = format!(
            "{}.{}",
            encode_json(&Value::Object(header.clone())),
            encode_json(&Value::Object(claims.clone()))
        );
        let token = format!("{message}.{}", hmac(&secret(signer), &message));
        let want = expected(&header, &claims, token.len(), signer, wall.as_secs(), now.as_secs());
        let got = outcome(auth().verify(&token, now));
        if let Err(code) = &got {
            prop_assert!(documented(*code));
        }
        let got = got.map(|v| (v.session_id, v.jti));
        prop_assert_eq!(got, want, "header {:?} claims {:?}", header, claims);
    }
}
