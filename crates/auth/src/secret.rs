//! Secrets and the signing keys made from them.

use std::fmt;

use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Error;

/// An HMAC signing secret. Its `Debug` and `Display` are redacted so that it cannot leak through a log
/// line or a panic message; the only ways out are [`Secret::to_hex`] (for storing it) and signing.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The shortest accepted secret: HS256 keys shorter than the hash output weaken it (RFC 7518
    /// §3.2).
    pub const MIN_LEN: usize = 32;

    /// Wraps secret bytes, for example the bytes of `MCP_SESSION_SECRET`.
    ///
    /// # Errors
    /// [`Error::WeakSecret`] when shorter than [`Secret::MIN_LEN`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, Error> {
        let bytes = bytes.into();
        if bytes.len() < Self::MIN_LEN {
            return Err(Error::WeakSecret);
        }
        Ok(Self(bytes))
    }

    /// A fresh secret of [`Secret::MIN_LEN`] random bytes from the operating system.
    ///
    /// # Errors
    /// [`Error::Random`] when the system random number generator fails.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = vec![0u8; Self::MIN_LEN];
        getrandom::fill(&mut bytes).map_err(|e| Error::Random(e.to_string()))?;
        Ok(Self(bytes))
    }

    /// Reads a secret written by [`Secret::to_hex`] (either case is accepted).
    ///
    /// # Errors
    /// [`Error::SecretEncoding`] when `hex` is not hexadecimal, [`Error::WeakSecret`] when it decodes
    /// to fewer than [`Secret::MIN_LEN`] bytes.
    pub fn from_hex(hex: &str) -> Result<Self, Error> {
        let hex = hex.as_bytes();
        if !hex.len().is_multiple_of(2) {
            return Err(Error::SecretEncoding);
        }
        let bytes = hex
            .chunks_exact(2)
            .map(|pair| Some(hex_value(pair[0])? << 4 | hex_value(pair[1])?))
            .collect::<Option<Vec<u8>>>()
            .ok_or(Error::SecretEncoding)?;
        Self::new(bytes)
    }

    /// The secret as lowercase hex, for storing a generated secret as text. The result is exactly as
    /// sensitive as the secret.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq for Secret {
    /// Constant time, so comparing secrets leaks nothing about where they differ.
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A secret with its key id (`kid`), ready to sign and verify.
///
/// The `kid` is derived from the secret, so every instance configured with the same secret names it
/// the same way without coordinating; it is a one-way digest and reveals nothing usable about the
/// secret.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    secret: Secret,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl SigningKey {
    /// The key for `secret`; its kid is the first 8 bytes of SHA-256(`"tether-kid:"` ‖ secret) in
    /// lowercase hex.
    pub fn new(secret: Secret) -> Self {
        let digest = Sha256::new()
            .chain_update(b"tether-kid:")
            .chain_update(secret.as_bytes())
            .finalize();
        let kid = to_hex(&digest[..8]);
        Self {
            kid,
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            secret,
        }
    }

    /// The key id written in the `kid` header of tokens this key signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The secret this key was made from.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        let s = Secret::new((0u8..40).collect::<Vec<_>>()).unwrap();
        let hex = s.to_hex();
        assert_eq!(hex.len(), 80);
        assert_eq!(&hex[..6], "000102");
        assert_eq!(Secret::from_hex(&hex).unwrap(), s);
        assert_eq!(Secret::from_hex(&hex.to_uppercase()).unwrap(), s);
        assert!(matches!(
            Secret::from_hex(&hex[..79]),
            Err(Error::SecretEncoding)
        ));
        let bad = format!("zz{}", &hex[2..]);
        assert!(matches!(Secret::from_hex(&bad), Err(Error::SecretEncoding)));
        // Multi-byte characters are not hex digits, whatever their byte length.
        assert!(matches!(
            Secret::from_hex(&"é".repeat(32)),
            Err(Error::SecretEncoding)
        ));
    }

    #[test]
    fn generated_secrets_are_long_enough_and_differ() {
        let a = Secret::generate().unwrap();
        let b = Secret::generate().unwrap();
        assert_eq!(a.as_bytes().len(), Secret::MIN_LEN);
        assert_ne!(a, b);
    }
}
