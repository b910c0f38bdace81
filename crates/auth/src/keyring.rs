//! The set of keys an authority signs and verifies with.

use tether_domain::Timestamp;

use crate::error::Error;
use crate::secret::{Secret, SigningKey};

/// One active key that signs, plus retired keys that only verify until their tokens have expired.
///
/// Keeping retired keys lets a secret be replaced without cutting off clients that hold a token
/// signed with the old one. Keys are found only by `kid`, and only in this table: the `kid` of a
/// presented token is never used for anything else.
#[derive(Clone, Debug)]
pub struct Keyring {
    active: SigningKey,
    retired: Vec<RetiredKey>,
}

#[derive(Clone, Debug)]
struct RetiredKey {
    key: SigningKey,
    valid_until: Timestamp,
}

impl Keyring {
    /// A keyring that signs and verifies with `active` only.
    pub fn new(active: Secret) -> Self {
        Self {
            active: SigningKey::new(active),
            retired: Vec::new(),
        }
    }

    /// Adds a retired key that still verifies tokens until `valid_until` (exclusive). Pass the time it
    /// was retired plus the token lifetime: after that no token it signed can still be valid.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when a key with the same secret is already in the ring (the kid
    /// would be ambiguous).
    pub fn with_retired(mut self, secret: Secret, valid_until: Timestamp) -> Result<Self, Error> {
        let key = SigningKey::new(secret);
        if self.keys().any(|k| k.kid() == key.kid()) {
            return Err(Error::InvalidConfig(format!(
                "key {} is in the keyring twice",
                key.kid()
            )));
        }
        self.retired.push(RetiredKey { key, valid_until });
        Ok(self)
    }

    /// The key new tokens are signed with.
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// The retired keys with the instant each stops verifying.
    pub fn retired(&self) -> impl Iterator<Item = (&SigningKey, Timestamp)> {
        self.retired.iter().map(|r| (&r.key, r.valid_until))
    }

    /// The key named `kid` that may verify a token at `now`: the active one, or a retired one whose
    /// `valid_until` is still ahead.
    pub fn find(&self, kid: &str, now: Timestamp) -> Option<&SigningKey> {
        if self.active.kid() == kid {
            return Some(&self.active);
        }
        self.retired
            .iter()
            .find(|r| r.key.kid() == kid && r.valid_until > now)
            .map(|r| &r.key)
    }

    fn keys(&self) -> impl Iterator<Item = &SigningKey> {
        std::iter::once(&self.active).chain(self.retired.iter().map(|r| &r.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_the_same_key_twice() {
        let a = Secret::new([1u8; 32]).unwrap();
        let b = Secret::new([2u8; 32]).unwrap();
        let t = Timestamp::from_secs(10);
        assert!(matches!(
            Keyring::new(a.clone()).with_retired(a.clone(), t),
            Err(Error::InvalidConfig(_))
        ));
        let ring = Keyring::new(a).with_retired(b.clone(), t).unwrap();
        assert!(matches!(
            ring.with_retired(b, t),
            Err(Error::InvalidConfig(_))
        ));
    }
}
