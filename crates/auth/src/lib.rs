//! Reconnect tokens for Tether: short-lived HS256 JWTs that let an MCP client resume its session.
//!
//! [`Authority`] implements the domain's [`TokenAuthority`](tether_domain::TokenAuthority) port. It
//! mints tokens, rotates a consumed token into its deterministic successor, and verifies presented
//! tokens into exactly one reconnect result code (`invalid_token`, `token_expired` or
//! `invalid_token_purpose`). Stores keep only [`hash_token`] of a token, never the token.
//!
//! Keys come from a [`Keyring`]: one active [`Secret`] (at least 32 bytes) that signs, plus retired
//! secrets that keep verifying until their tokens have expired. Key ids are derived from the
//! secrets, so every instance configured alike agrees on them.
//!
//! Nothing here does I/O or needs the rest of Tether beyond `tether-domain`'s types, so another
//! service can mint and verify the same tokens with this crate alone.
//!
//! ```
//! use std::time::Duration;
//! use tether_auth::{Authority, Keyring, Secret};
//! use tether_domain::{Clock, Error, ResultCode, SessionId, SystemClock, TokenAuthority};
//!
//! let secret = Secret::new(*b"an example secret, 32 bytes long")?;
//! let authority = Authority::new(
//!     Keyring::new(secret),
//!     "tether",
//!     "tether-reconnect",
//!     Duration::from_secs(15 * 60),
//! )?;
//!
//! let session = SessionId::parse("session-1")?;
//! let now = SystemClock.now();
//! let issued = authority.mint(&session, now)?;
//!
//! let verified = authority.verify(issued.token.expose(), now)?;
//! assert_eq!(verified.session_id, "session-1");
//! assert!(verified.hash.ct_eq(&issued.hash));
//!
//! assert!(matches!(
//!     authority.verify("not.a.token", now),
//!     Err(Error::Reconnect(ResultCode::InvalidToken))
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod authority;
mod error;
mod keyring;
mod secret;

pub use authority::{Authority, MAX_TOKEN_LEN, PURPOSE, hash_token};
pub use error::{BoxError, Error};
pub use keyring::Keyring;
pub use secret::{Secret, SigningKey};
