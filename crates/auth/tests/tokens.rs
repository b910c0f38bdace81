//! Reconnect tokens through the public API: each test presents one kind of token and checks the
//! exact result code. Hand-made tokens are built with jsonwebtoken and base64 directly.

// `allow-unwrap-in-tests` covers `#[test]` functions only, not the helpers they share; a panic is
// the right failure everywhere in this file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tether_auth::{Authority, Error as AuthError, Keyring, Secret, SigningKey, hash_token};
use tether_domain::{
    Clock, Error, PlainToken, ResultCode, SessionId, SystemClock, Timestamp, TokenAuthority,
    VerifiedToken,
};

const ISS: &str = "tether";
const AUD: &str = "tether-reconnect";
const LIFETIME: Duration = Duration::from_secs(900);

fn secret(fill: u8) -> Secret {
    Secret::new([fill; 32]).unwrap()
}

fn kid_of(s: &Secret) -> String {
    SigningKey::new(s.clone()).kid().to_owned()
}

fn authority_with(ring: Keyring) -> Authority {
    Authority::new(ring, ISS, AUD, LIFETIME).unwrap()
}

fn authority() -> Authority {
    authority_with(Keyring::new(secret(1)))
}

fn session() -> SessionId {
    SessionId::parse("session-1").unwrap()
}

fn now() -> Timestamp {
    SystemClock.now()
}

/// The result code of a failed verification (panics on success or on any other error).
fn code(result: Result<VerifiedToken, Error>) -> ResultCode {
    match result {
        Err(Error::Reconnect(code)) => code,
        Err(other) => panic!("expected a reconnect code, got {other:?}"),
        Ok(v) => panic!("expected a refusal, token for {} verified", v.session_id),
    }
}

/// Claims exactly as `Authority::mint` writes them, valid for 900 s from now.
fn good_claims() -> Value {
    let iat = now().as_secs();
    json!({
        "session_id": "session-1",
        "iat": iat,
        "exp": iat + 900,
        "jti": "0123456789abcdef0123456789abcdef",
        "purpose": "session_reconnect",
        "iss": ISS,
        "aud": AUD,
    })
}

/// A token signed by jsonwebtoken itself with `alg` and `kid` in the header.
fn encode(alg: Algorithm, kid: Option<String>, claims: &Value, key: &Secret) -> String {
    let mut header = Header::new(alg);
    header.kid = kid;
    let key = EncodingKey::from_secret(&hex_bytes(&key.to_hex()));
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// A token with any header at all, signed HMAC-SHA256 with `key` (or unsigned when `None`).
fn raw_token(header: &Value, claims: &Value, key: Option<&Secret>) -> String {
    let message = format!(
        "{}.{}",
        B64.encode(serde_json::to_vec(header).unwrap()),
        B64.encode(serde_json::to_vec(claims).unwrap())
    );
    let signature = match key {
        Some(key) => {
            let mut mac = Hmac::<Sha256>::new_from_slice(&hex_bytes(&key.to_hex())).unwrap();
            mac.update(message.as_bytes());
            B64.encode(mac.finalize().into_bytes())
        }
        None => String::new(),
    };
    format!("{message}.{signature}")
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn payload_json(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap()
}

#[test]
fn valid_token_round_trips() {
    let auth = authority();
    let at = now();
    let issued = auth.mint(&session(), at).unwrap();
    let token = issued.token.expose();

    assert_eq!(auth.lifetime(), LIFETIME);
    assert_eq!(issued.issued_at, Timestamp::from_secs(at.as_secs()));
    assert_eq!(issued.expires_at, issued.issued_at.plus(LIFETIME));
    assert!(issued.hash.ct_eq(&hash_token(token)));

    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(header.kid, Some(kid_of(&secret(1))));
    let claims = payload_json(token);
    assert_eq!(claims["purpose"], "session_reconnect");
    assert_eq!(claims["iss"], ISS);
    assert_eq!(claims["aud"], AUD);
    assert_eq!(claims["iat"], at.as_secs());
    assert_eq!(claims["exp"], at.as_secs() + 900);

    let verified = auth.verify(token, now()).unwrap();
    assert_eq!(verified.session_id, "session-1");
    assert_eq!(verified.jti, claims["jti"].as_str().unwrap());
    assert_eq!(verified.jti.len(), 32);
    assert!(verified.jti.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(verified.issued_at, issued.issued_at);
    assert_eq!(verified.expires_at, issued.expires_at);
    assert!(verified.hash.ct_eq(&issued.hash));

    // Two mints never share a jti, hence never a hash.
    let again = auth.mint(&session(), at).unwrap();
    assert_ne!(again.token, issued.token);
}

#[test]
fn hand_built_token_with_good_claims_verifies() {
    // The control for every forged token below: the helpers alone make nothing invalid.
    let s = secret(1);
    let auth = authority();
    let by_library = encode(Algorithm::HS256, Some(kid_of(&s)), &good_claims(), &s);
    assert_eq!(
        auth.verify(&by_library, now()).unwrap().session_id,
        "session-1"
    );
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid_of(&s)});
    let by_hand = raw_token(&header, &good_claims(), Some(&s));
    assert_eq!(
        auth.verify(&by_hand, now()).unwrap().session_id,
        "session-1"
    );
}

#[test]
fn expired_by_one_second() {
    let auth = authority();
    let wall = now();
    let issued = auth
        .mint(&session(), wall.minus(LIFETIME + Duration::from_secs(1)))
        .unwrap();
    assert_eq!(issued.expires_at.as_secs(), wall.as_secs() - 1);
    assert_eq!(
        code(auth.verify(issued.token.expose(), now())),
        ResultCode::TokenExpired
    );
}

#[test]
fn expiry_follows_the_injected_clock() {
    // The library only knows the wall clock; a caller's clock that has moved on must count too.
    let auth = authority();
    let issued = auth.mint(&session(), now()).unwrap();
    let token = issued.token.expose();
    let last_second = issued.expires_at.minus(Duration::from_secs(1));
    assert!(auth.verify(token, last_second).is_ok());
    assert_eq!(
        code(auth.verify(token, issued.expires_at)),
        ResultCode::TokenExpired
    );
}

#[test]
fn alg_none_is_refused() {
    let s = secret(1);
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid_of(&s)});
    let token = raw_token(&header, &good_claims(), None);
    assert!(token.ends_with('.'));
    assert_eq!(
        code(authority().verify(&token, now())),
        ResultCode::InvalidToken
    );
}

#[test]
fn other_algorithms_are_refused() {
    let s = secret(1);
    let auth = authority();
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = encode(alg, Some(kid_of(&s)), &good_claims(), &s);
        assert_eq!(code(auth.verify(&token, now())), ResultCode::InvalidToken);
    }
    // An asymmetric algorithm named in the header over a valid HS256 signature.
    for alg in ["RS256", "ES256", "EdDSA"] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": kid_of(&s)});
        let token = raw_token(&header, &good_claims(), Some(&s));
        assert_eq!(code(auth.verify(&token, now())), ResultCode::InvalidToken);
    }
}

#[test]
fn altered_payload_is_refused() {
    let auth = authority();
    let issued = auth.mint(&session(), now()).unwrap();
    let token = issued.token.expose();
    let mut claims = payload_json(token);
    claims["session_id"] = json!("session-2");
    let parts: Vec<&str> = token.split('.').collect();
    let altered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    assert_eq!(code(auth.verify(&altered, now())), ResultCode::InvalidToken);
}

#[test]
fn other_secret_with_forged_kid_is_refused() {
    let kid = kid_of(&secret(1));
    let token = encode(Algorithm::HS256, Some(kid), &good_claims(), &secret(2));
    assert_eq!(
        code(authority().verify(&token, now())),
        ResultCode::InvalidToken
    );
}

#[test]
fn missing_exp_is_refused() {
    let s = secret(1);
    let mut claims = good_claims();
    claims.as_object_mut().unwrap().remove("exp");
    let token = encode(Algorithm::HS256, Some(kid_of(&s)), &claims, &s);
    assert_eq!(
        code(authority().verify(&token, now())),
        ResultCode::InvalidToken
    );
}

#[test]
fn exp_as_a_string_is_refused() {
    let s = secret(1);
    let mut claims = good_claims();
    claims["exp"] = json!((now().as_secs() + 900).to_string());
    let token = encode(Algorithm::HS256, Some(kid_of(&s)), &claims, &s);
    assert_eq!(
        code(authority().verify(&token, now())),
        ResultCode::InvalidToken
    );
}

#[test]
fn wrong_purpose_is_refused() {
    let s = secret(1);
    let mut claims = good_claims();
    claims["purpose"] = json!("password_reset");
    let token = encode(Algorithm::HS256, Some(kid_of(&s)), &claims, &s);
    assert_eq!(
        code(authority().verify(&token, now())),
        ResultCode::InvalidTokenPurpose
    );
}

#[test]
fn wrong_issuer_is_refused() {
    let s = secret(1);
    let mut claims = good_claims();
    claims["iss"] = json!("someone-else");
    let token = encode(Algorithm::HS256, Some(kid_of(&s)), &claims, &s);
    assert_eq!(
        code(authority().verify(&token, now())),
        ResultCode::InvalidToken
    );
}

#[test]
fn wrong_audience_is_refused() {
    let s = secret(1);
    let mut claims = good_claims();
    claims["aud"] = json!("another-service");
    let token = encode(Algorithm::HS256, Some(kid_of(&s)), &claims, &s);
    assert_eq!(
        code(authority().verify(&token, now())),
        ResultCode::InvalidToken
    );
}

#[test]
fn unknown_kid_is_refused() {
    // Correctly signed with the active secret: only the kid is wrong.
    let s = secret(1);
    let token = encode(
        Algorithm::HS256,
        Some("0000000000000000".into()),
        &good_claims(),
        &s,
    );
    assert_eq!(
        code(authority().verify(&token, now())),
        ResultCode::InvalidToken
    );
}

#[test]
fn missing_kid_is_refused() {
    let s = secret(1);
    let token = encode(Algorithm::HS256, None, &good_claims(), &s);
    assert_eq!(
        code(authority().verify(&token, now())),
        ResultCode::InvalidToken
    );
}

#[test]
fn retired_key_verifies_until_valid_until() {
    let old = authority_with(Keyring::new(secret(2)));
    let token = old.mint(&session(), now()).unwrap().token;
    let valid_until = now().plus(Duration::from_secs(60));
    let ring = Keyring::new(secret(1))
        .with_retired(secret(2), valid_until)
        .unwrap();
    let auth = authority_with(ring);

    assert!(auth.verify(token.expose(), now()).is_ok());
    assert!(
        auth.verify(token.expose(), valid_until.minus(Duration::from_micros(1)))
            .is_ok()
    );
    assert_eq!(
        code(auth.verify(token.expose(), valid_until)),
        ResultCode::InvalidToken
    );
    // New tokens are signed with the active key, not the retired one.
    let fresh = auth.mint(&session(), now()).unwrap();
    let header = jsonwebtoken::decode_header(fresh.token.expose()).unwrap();
    assert_eq!(header.kid, Some(kid_of(&secret(1))));
}

#[test]
fn non_canonical_spellings_are_refused() {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let auth = authority();
    let issued = auth.mint(&session(), now()).unwrap();
    let token = issued.token.expose();
    assert!(auth.verify(token, now()).is_ok());

    let segments: Vec<&str> = token.split('.').collect();
    let mut variants = vec![
        format!("{token}="),
        format!("{token}=="),
        format!("{token}\n"),
    ];
    for (i, segment) in segments.iter().enumerate() {
        // A segment whose length is not a multiple of 4 ends in a character with unused low bits;
        // setting one spells the same bytes differently.
        if segment.len() % 4 == 0 {
            continue;
        }
        let last = *segment.as_bytes().last().unwrap();
        let value = ALPHABET.iter().position(|&c| c == last).unwrap();
        let twin = char::from(ALPHABET[value | 1]);
        let mut parts: Vec<String> = segments.iter().map(|s| (*s).to_owned()).collect();
        parts[i].pop();
        parts[i].push(twin);
        let variant = parts.join(".");
        // It really is the same bytes, spelled differently.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::GeneralPurposeConfig::new()
                .with_encode_padding(false)
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        assert_eq!(
            lenient.decode(&parts[i]).unwrap(),
            B64.decode(segment).unwrap()
        );
        variants.push(variant);
    }
    // The HS256 signature is 32 bytes, 43 characters: it always has a trailing-bits twin.
    assert_eq!(segments[2].len(), 43);
    assert!(variants.len() >= 4);

    for variant in &variants {
        assert_ne!(variant, token);
        assert_eq!(code(auth.verify(variant, now())), ResultCode::InvalidToken);
    }
}

#[test]
fn garbage_is_refused() {
    let auth = authority();
    for garbage in [
        "garbage",
        "a.b.c",
        "..",
        "...",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "\u{0}\u{ff}.é.💥",
    ] {
        assert_eq!(code(auth.verify(garbage, now())), ResultCode::InvalidToken);
    }
}

#[test]
fn empty_token_is_refused() {
    assert_eq!(
        code(authority().verify("", now())),
        ResultCode::InvalidToken
    );
}

#[test]
fn token_over_4_kib_is_refused() {
    let s = secret(1);
    let auth = authority();
    let with_pad = |len: usize| {
        let mut claims = good_claims();
        claims["pad"] = json!("x".repeat(len));
        encode(Algorithm::HS256, Some(kid_of(&s)), &claims, &s)
    };
    // Extra claims alone are fine: only the length refuses the big one.
    assert!(auth.verify(&with_pad(100), now()).is_ok());
    let big = with_pad(4000);
    assert!(big.len() > 4096);
    assert_eq!(code(auth.verify(&big, now())), ResultCode::InvalidToken);
}

#[test]
fn secrets_under_32_bytes_are_refused() {
    assert!(matches!(
        Secret::new(Vec::new()),
        Err(AuthError::WeakSecret)
    ));
    assert!(matches!(Secret::new([7u8; 31]), Err(AuthError::WeakSecret)));
    assert!(matches!(
        Secret::new("short but sincere"),
        Err(AuthError::WeakSecret)
    ));
    assert!(matches!(
        Secret::from_hex(&"ab".repeat(31)),
        Err(AuthError::WeakSecret)
    ));
    assert!(Secret::new([7u8; 32]).is_ok());
    let generated = Secret::generate().unwrap();
    assert_eq!(Secret::from_hex(&generated.to_hex()).unwrap(), generated);
}

#[test]
fn authority_settings_are_checked() {
    let bad = |issuer: &str, audience: &str, lifetime: Duration| {
        matches!(
            Authority::new(Keyring::new(secret(1)), issuer, audience, lifetime),
            Err(AuthError::InvalidConfig(_))
        )
    };
    assert!(bad("", AUD, LIFETIME));
    assert!(bad(ISS, "", LIFETIME));
    assert!(bad(ISS, AUD, Duration::ZERO));
    assert!(bad(ISS, AUD, Duration::from_millis(1500)));
    assert!(bad(
        ISS,
        AUD,
        Authority::MAX_LIFETIME + Duration::from_secs(1)
    ));
    assert!(!bad(ISS, AUD, Duration::from_secs(1)));
}

#[test]
fn rotate_is_deterministic() {
    let auth = authority();
    let issued = auth.mint(&session(), now()).unwrap();
    let consumed = auth.verify(issued.token.expose(), now()).unwrap();
    let at = now();

    let a = auth.rotate(&consumed, at).unwrap();
    // Same second, other microsecond, and another instance with the same secret: same token.
    let b = auth
        .rotate(&consumed, at.plus(Duration::from_micros(1)))
        .unwrap();
    let c = authority().rotate(&consumed, at).unwrap();
    for other in [&b, &c] {
        assert_eq!(other.token, a.token);
        assert!(other.hash.ct_eq(&a.hash));
        assert_eq!(other.issued_at, a.issued_at);
        assert_eq!(other.expires_at, a.expires_at);
    }
    assert!(a.hash.ct_eq(&hash_token(a.token.expose())));
    assert_eq!(a.issued_at, Timestamp::from_secs(at.as_secs()));
    assert_eq!(a.expires_at, a.issued_at.plus(LIFETIME));

    let next_second = auth
        .rotate(&consumed, at.plus(Duration::from_secs(1)))
        .unwrap();
    assert_ne!(next_second.token, a.token);
    assert!(!next_second.hash.ct_eq(&a.hash));

    let rotated = auth.verify(a.token.expose(), now()).unwrap();
    assert_eq!(rotated.session_id, consumed.session_id);
    assert_ne!(rotated.jti, consumed.jti);
    assert_eq!(rotated.jti.len(), 22); // 16 bytes in unpadded base64url
    assert!(rotated.hash.ct_eq(&a.hash));
    assert_ne!(a.token, issued.token);
}

#[test]
fn kid_is_deterministic_from_the_secret() {
    let s = secret(1);
    let kid = kid_of(&s);
    assert_eq!(kid, kid_of(&Secret::from_hex(&s.to_hex()).unwrap()));
    assert_eq!(kid.len(), 16);
    assert!(
        kid.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let digest = Sha256::new()
        .chain_update(b"tether-kid:")
        .chain_update([1u8; 32])
        .finalize();
    let expected: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(kid, expected);
    assert_ne!(kid, kid_of(&secret(2)));
}

#[test]
fn debug_output_never_shows_secrets() {
    let text = "a secret long enough to be used!";
    let s = Secret::new(text).unwrap();
    let ring = Keyring::new(s.clone())
        .with_retired(secret(2), now())
        .unwrap();
    let auth = authority_with(ring.clone());
    let issued = auth.mint(&session(), now()).unwrap();
    let token = issued.token.expose().to_owned();

    let printed = [
        format!("{s:?}"),
        format!("{s}"),
        format!("{:?}", SigningKey::new(s.clone())),
        format!("{ring:?}"),
        format!("{auth:?}"),
        format!("{:?}", issued.token),
        format!("{issued:?}"),
        format!("{:?}", PlainToken::new(token.clone())),
    ];
    let secret_hex = s.to_hex();
    let secret_bytes = format!("{:?}", text.as_bytes());
    for p in &printed {
        for leak in [text, secret_hex.as_str(), secret_bytes.as_str(), &token] {
            assert!(!p.contains(leak), "{p} shows {leak}");
        }
        // Not even a fragment of the raw bytes' list form.
        assert!(!p.contains("97, 32, 115"), "{p}");
    }
    assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
}
