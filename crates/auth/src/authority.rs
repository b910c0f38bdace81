//! The token authority: mints, rotates and verifies reconnect tokens.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tether_domain::{
    IssuedToken, PlainToken, ResultCode, SessionId, Timestamp, TokenAuthority, TokenHash,
    VerifiedToken,
};

use crate::error::Error;
use crate::keyring::Keyring;
use crate::secret::SigningKey;

/// The `purpose` claim of a reconnect token: a token signed with the same key for anything else is
/// refused with `invalid_token_purpose`.
pub const PURPOSE: &str = "session_reconnect";

/// Longest token `verify` looks at. Ours are a few hundred bytes; refusing larger input before any
/// parsing caps the work an anonymous caller can cause.
pub const MAX_TOKEN_LEN: usize = 4096;

/// SHA-256 of the token text: what the store keeps instead of the token.
///
/// Hashes the exact string, so two spellings of one token hash differently; `verify` therefore
/// accepts only the canonical spelling.
pub fn hash_token(token: &str) -> TokenHash {
    TokenHash::from_bytes(Sha256::digest(token.as_bytes()).into())
}

/// Claims as written. Field order is fixed, so the same values always serialize to the same bytes
/// (which `rotate`'s determinism relies on).
#[derive(Serialize)]
struct OutgoingClaims<'a> {
    session_id: &'a str,
    iat: u64,
    exp: u64,
    jti: &'a str,
    purpose: &'a str,
    iss: &'a str,
    aud: &'a str,
}

/// Claims as read. Plain `u64` times, so a string or fractional `exp` fails to deserialize instead of
/// being coerced, and every claim is required.
#[derive(Deserialize)]
struct IncomingClaims {
    session_id: String,
    iat: u64,
    exp: u64,
    jti: String,
    purpose: String,
}

/// Mints and checks HS256 reconnect tokens; the `tether-auth` implementation of
/// [`TokenAuthority`].
#[derive(Clone, Debug)]
pub struct Authority {
    keyring: Keyring,
    issuer: String,
    audience: String,
    lifetime: Duration,
    validation: Validation,
}

impl Authority {
    /// Longest accepted token lifetime; far beyond any sensible reconnect window, it keeps `exp`
    /// arithmetic clear of overflow.
    pub const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

    /// An authority that signs with `keyring`'s active key and writes and demands `issuer` and
    /// `audience` in the `iss` and `aud` claims.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `issuer` or `audience` is empty, or `lifetime` is not a whole
    /// number of seconds between 1 s and [`Authority::MAX_LIFETIME`] (JWT times are whole seconds,
    /// so anything finer could not be honoured).
    pub fn new(
        keyring: Keyring,
        issuer: impl Into<String>,
        audience: impl Into<String>,
        lifetime: Duration,
    ) -> Result<Self, Error> {
        let issuer = issuer.into();
        let audience = audience.into();
        if issuer.is_empty() {
            return Err(Error::InvalidConfig("issuer must not be empty".into()));
        }
        if audience.is_empty() {
            return Err(Error::InvalidConfig("audience must not be empty".into()));
        }
        if lifetime.is_zero() || lifetime.subsec_nanos() != 0 || lifetime > Self::MAX_LIFETIME {
            return Err(Error::InvalidConfig(
                "lifetime must be a whole number of seconds, at least 1 s and at most 366 days"
                    .into(),
            ));
        }

        let mut validation = Validation::new(Algorithm::HS256);
        // The default 60 s leeway would accept tokens that have already expired.
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = false;
        validation.validate_aud = true;
        // The library ignores "iat" here; `IncomingClaims` makes it required instead.
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&audience]);

        Ok(Self {
            keyring,
            issuer,
            audience,
            lifetime,
            validation,
        })
    }

    /// The keys in use.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The `iss` claim written and required.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `aud` claim written and required.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Signs a token with the active key; `iat` is `at` in whole seconds.
    fn issue(&self, session_id: &str, jti: &str, at: Timestamp) -> Result<IssuedToken, Error> {
        let iat_secs = at.as_secs();
        let exp_secs = i64::try_from(self.lifetime.as_secs())
            .ok()
            .and_then(|life| iat_secs.checked_add(life))
            .ok_or(Error::TimeOutOfRange)?;
        let iat = u64::try_from(iat_secs).map_err(|_| Error::TimeOutOfRange)?;
        let exp = u64::try_from(exp_secs).map_err(|_| Error::TimeOutOfRange)?;

        let key = self.keyring.active();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid().to_owned());
        let claims = OutgoingClaims {
            session_id,
            iat,
            exp,
            jti,
            purpose: PURPOSE,
            iss: &self.issuer,
            aud: &self.audience,
        };
        let token = jsonwebtoken::encode(&header, &claims, key.encoding())
            .map_err(|e| Error::Signing(Box::new(e)))?;
        Ok(IssuedToken {
            hash: hash_token(&token),
            token: PlainToken::new(token),
            issued_at: Timestamp::from_secs(iat_secs),
            expires_at: Timestamp::from_secs(exp_secs),
        })
    }

    /// The checks of [`TokenAuthority::verify`], with the result code as the error.
    fn check(&self, token: &str, now: Timestamp) -> Result<VerifiedToken, ResultCode> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(ResultCode::InvalidToken);
        }
        // The store finds tokens by the hash of their exact text: a second spelling of a consumed
        // token must not verify, or it would look like a fresh token and dodge reuse detection.
        if !is_canonical(token) {
            return Err(ResultCode::InvalidToken);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| ResultCode::InvalidToken)?;
        if header.alg != Algorithm::HS256 {
            return Err(ResultCode::InvalidToken);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keyring.find(kid, now))
            .ok_or(ResultCode::InvalidToken)?;
        let claims = decode(token, key, &self.validation)?;

        // The library checked `exp` against the wall clock; the injected clock decides too, so that
        // callers (and tests) moving their own clock see tokens expire.
        let expires_secs = i64::try_from(claims.exp).map_err(|_| ResultCode::InvalidToken)?;
        if expires_secs <= now.as_secs() {
            return Err(ResultCode::TokenExpired);
        }
        let issued_secs = i64::try_from(claims.iat).map_err(|_| ResultCode::InvalidToken)?;
        if claims.purpose != PURPOSE {
            return Err(ResultCode::InvalidTokenPurpose);
        }
        Ok(VerifiedToken {
            session_id: claims.session_id,
            jti: claims.jti,
            issued_at: Timestamp::from_secs(issued_secs),
            expires_at: Timestamp::from_secs(expires_secs),
            hash: hash_token(token),
        })
    }
}

fn decode(
    token: &str,
    key: &SigningKey,
    validation: &Validation,
) -> Result<IncomingClaims, ResultCode> {
    jsonwebtoken::decode::<IncomingClaims>(token, key.decoding(), validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => ResultCode::TokenExpired,
            // Bad signature, issuer, audience, algorithm, missing or malformed claims, bad base64
            // or JSON: all the same to the client, and detail would only help an attacker.
            _ => ResultCode::InvalidToken,
        })
}

/// Whether `token` is three base64url segments in their one canonical spelling: URL-safe alphabet, no
/// padding, zero trailing bits. Checked by decoding and re-encoding, which leaves no variant out.
fn is_canonical(token: &str) -> bool {
    let mut segments = 0;
    for segment in token.split('.') {
        segments += 1;
        if segments > 3 {
            return false;
        }
        match URL_SAFE_NO_PAD.decode(segment) {
            Ok(bytes) if URL_SAFE_NO_PAD.encode(&bytes) == segment => {}
            _ => return false,
        }
    }
    segments == 3
}

/// The `jti` of the token that replaces the one with `consumed_jti`: a keyed digest, so it is
/// reproducible by any instance holding the active secret and unpredictable to anyone else.
fn rotated_jti(key: &SigningKey, consumed_jti: &str) -> Result<String, Error> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.secret().as_bytes())
        .map_err(|e| Error::Signing(Box::new(e)))?;
    mac.update(b"tether-rotate:");
    mac.update(consumed_jti.as_bytes());
    let digest = mac.finalize().into_bytes();
    Ok(URL_SAFE_NO_PAD.encode(&digest[..16]))
}

/// A random UUID v4 in its 32-hex-digit form. Built from `getrandom` directly so that a failing RNG is
/// an error rather than the panic `Uuid::new_v4` would raise.
fn random_jti() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
    Ok(uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .simple()
        .to_string())
}

impl TokenAuthority for Authority {
    fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn mint(
        &self,
        session: &SessionId,
        now: Timestamp,
    ) -> Result<IssuedToken, tether_domain::Error> {
        let jti = random_jti()?;
        Ok(self.issue(session.as_str(), &jti, now)?)
    }

    fn rotate(
        &self,
        consumed: &VerifiedToken,
        at: Timestamp,
    ) -> Result<IssuedToken, tether_domain::Error> {
        let jti = rotated_jti(self.keyring.active(), &consumed.jti)?;
        Ok(self.issue(&consumed.session_id, &jti, at)?)
    }

    /// Accepts a token only when it is unexpired both at `now` and at the wall clock (the JWT
    /// library always checks the latter), signed with a key of the ring valid at `now`, and in its
    /// canonical spelling.
    fn verify(&self, token: &str, now: Timestamp) -> Result<VerifiedToken, tether_domain::Error> {
        self.check(token, now)
            .map_err(tether_domain::Error::Reconnect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_spelling_only() {
        assert!(is_canonical("e30.e30.AAAA"));
        assert!(is_canonical("AA.AA."));
        assert!(!is_canonical("e30.e30"));
        assert!(!is_canonical("e30.e30.AAAA.AAAA"));
        // Padding, standard alphabet, stray bits after the last byte, whitespace.
        assert!(!is_canonical("AA==.AA.AA"));
        assert!(!is_canonical("A+.AA.AA"));
        assert!(!is_canonical("AB.AA.AA"));
        assert!(!is_canonical("AA.AA.AA "));
    }

    #[test]
    fn random_jti_is_a_simple_uuid_v4() {
        let jti = random_jti().unwrap();
        assert_eq!(jti.len(), 32);
        assert_eq!(&jti[12..13], "4");
        assert_ne!(jti, random_jti().unwrap());
    }
}
