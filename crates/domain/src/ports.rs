//! The ports: what the domain needs from the outside, as traits that adapters implement.
//!
//! The store is reached through `Arc<dyn SessionStore>` (with `async_trait`, since native async trait
//! methods are not object-safe): it keeps type parameters out of the manager and every route, and a
//! boxed future per database call costs nothing next to the call itself.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Error;
use crate::events::{EventKind, StoredEvent};
use crate::session::{DisconnectReason, Session, SessionId, SessionStatus, TokenHash};
use crate::time::Timestamp;

/// Position after which a list page starts: the last row of the previous page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// That row's `last_activity`.
    pub last_activity: Timestamp,
    /// That row's id (ties on `last_activity` are broken by id, descending).
    pub session_id: SessionId,
}

impl Cursor {
    /// The cursor pointing after `session`.
    pub fn after(session: &Session) -> Self {
        Self {
            last_activity: session.last_activity(),
            session_id: session.id().clone(),
        }
    }

    /// The opaque text handed to clients: `<micros>:<id>` (URL-safe as it is).
    pub fn encode(&self) -> String {
        format!("{}:{}", self.last_activity.as_micros(), self.session_id)
    }

    /// Reads a cursor produced by [`Cursor::encode`].
    ///
    /// # Errors
    /// [`Error::Invalid`] when it is not one.
    pub fn decode(raw: &str) -> Result<Self, Error> {
        let bad = || Error::invalid("cursor", "is not a cursor returned by this service");
        let (micros, id) = raw.split_once(':').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        Ok(Self {
            last_activity: Timestamp::from_micros(micros),
            session_id: SessionId::parse(id).map_err(|_| bad())?,
        })
    }
}

/// A list request: newest activity first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    /// Only sessions in this state.
    pub status: Option<SessionStatus>,
    /// At most this many rows.
    pub limit: u32,
    /// Start after this row.
    pub after: Option<Cursor>,
}

/// How many sessions are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Active sessions.
    pub active: u64,
    /// Idle sessions.
    pub idle: u64,
    /// Ended sessions still stored.
    pub disconnected: u64,
}

/// What a state change records besides itself: when it happened and which event reports it. The
/// store writes the event to its outbox in the same transaction as the change, built by
/// [`SessionEvent::of`](crate::SessionEvent::of) from the row as it is after the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// When the change happens.
    pub at: Timestamp,
    /// The event that reports it.
    pub event: EventKind,
}

/// A committed change: the session after it, and its event with the event's outbox position.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// The session after the change.
    pub session: Session,
    /// The event, as stored.
    pub event: StoredEvent,
}

/// The session-store port. Every state change is one atomic operation whose conditions are the
/// `Session::can_*`/`should_*` rules, and which appends the change's event to the outbox in the same
/// transaction. Each returns what it recorded, or `None` when the conditions did not hold (the caller
/// then reads the row to say why).
///
/// Errors: [`Error::Unavailable`] when the database does not answer in time, [`Error::AlreadyExists`]
/// from `insert` for a taken id, [`Error::Internal`] for anything else.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session.
    async fn insert(&self, session: &Session, change: Change) -> Result<Recorded, Error>;
    /// Reads one session.
    async fn get(&self, id: &SessionId) -> Result<Option<Session>, Error>;
    /// Reads a page, newest `last_activity` first, then id descending.
    async fn list(&self, query: &ListQuery) -> Result<Vec<Session>, Error>;
    /// Counts sessions per state.
    async fn counts(&self) -> Result<StatusCounts, Error>;
    /// Activity at `change.at`, unless ended.
    async fn touch(&self, id: &SessionId, change: Change) -> Result<Option<Recorded>, Error>;
    /// Ends the session, unless already ended.
    async fn disconnect(
        &self,
        id: &SessionId,
        reason: &DisconnectReason,
        change: Change,
    ) -> Result<Option<Recorded>, Error>;
    /// Replaces the live token, unless ended.
    async fn set_token(
        &self,
        id: &SessionId,
        hash: &TokenHash,
        expires_at: Timestamp,
        change: Change,
    ) -> Result<Option<Recorded>, Error>;
    /// The compare-and-swap of a reconnect: when `Session::can_consume(presented, change.at)` holds,
    /// rotate to `next`, count one reconnect and reactivate, atomically.
    async fn consume_token(
        &self,
        id: &SessionId,
        presented: &TokenHash,
        next: &TokenHash,
        next_expires_at: Timestamp,
        change: Change,
    ) -> Result<Option<Recorded>, Error>;
    /// Revokes the live token (reuse detected), unless ended.
    async fn revoke_token(&self, id: &SessionId, change: Change)
    -> Result<Option<Recorded>, Error>;
    /// Makes idle every active session with no activity since `idle_before`.
    async fn mark_idle(
        &self,
        idle_before: Timestamp,
        change: Change,
    ) -> Result<Vec<Recorded>, Error>;
    /// Ends every live session with no activity since `reap_before`.
    async fn reap(
        &self,
        reap_before: Timestamp,
        reason: &DisconnectReason,
        change: Change,
    ) -> Result<Vec<Recorded>, Error>;
}

/// The read side of the registry that a live summary needs (the dashboards' `health_update`): the
/// newest sessions and the count per state, and nothing that changes anything. Every
/// [`SessionStore`] is one.
#[async_trait]
pub trait SessionDirectory: Send + Sync {
    /// Up to `limit` sessions, newest activity first.
    async fn newest(&self, limit: u32) -> Result<Vec<Session>, Error>;
    /// Sessions per state.
    async fn count_by_status(&self) -> Result<StatusCounts, Error>;
}

#[async_trait]
impl<T: SessionStore + ?Sized> SessionDirectory for T {
    async fn newest(&self, limit: u32) -> Result<Vec<Session>, Error> {
        self.list(&ListQuery {
            status: None,
            limit,
            after: None,
        })
        .await
    }

    async fn count_by_status(&self) -> Result<StatusCounts, Error> {
        self.counts().await
    }
}

/// The event-feed port: the outbox read back, for fan-out to dashboards and for resuming a stream.
/// `realtime` reads events only through it, so it never depends on `persistence`.
#[async_trait]
pub trait EventFeed: Send + Sync {
    /// Retained events with `seq > after`, oldest first, at most `limit`.
    async fn events_after(&self, after: u64, limit: u32) -> Result<Vec<StoredEvent>, Error>;
    /// The highest `seq` written so far (0 when none).
    async fn last_seq(&self) -> Result<u64, Error>;
    /// The highest `seq` removed by pruning (0 when none): a resume from `since` is complete exactly
    /// when `since >= pruned_through()`.
    async fn pruned_through(&self) -> Result<u64, Error>;
    /// Identifies this outbox: a `seq` from another epoch (another database, or a reset one) means
    /// nothing here.
    async fn epoch(&self) -> Result<String, Error>;
    /// Resolves when new events may have been written (here or, on a shared database, by another
    /// instance). May resolve spuriously; callers re-read from their last `seq` and wait again.
    async fn wait_for_events(&self);
}

/// A reconnect token in plain text. Exists only between minting and the response; never stored,
/// never logged (its `Debug` is redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct PlainToken(String);

impl PlainToken {
    /// Wraps token text.
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// The token text, for the one response that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PlainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainToken(<redacted>)")
    }
}

/// A newly minted or rotated token with what the store keeps of it.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// The token for the client.
    pub token: PlainToken,
    /// Its hash, for the store.
    pub hash: TokenHash,
    /// Its `iat`.
    pub issued_at: Timestamp,
    /// Its `exp`.
    pub expires_at: Timestamp,
}

/// A token whose signature, expiry, purpose and audience have been checked.
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    /// The `session_id` claim (not yet compared with the request).
    pub session_id: String,
    /// The `jti` claim.
    pub jti: String,
    /// The `iat` claim.
    pub issued_at: Timestamp,
    /// The `exp` claim.
    pub expires_at: Timestamp,
    /// Hash of the token as presented.
    pub hash: TokenHash,
}

/// The token-authority port: mints and checks reconnect tokens. CPU only, hence synchronous.
pub trait TokenAuthority: Send + Sync {
    /// How long minted tokens live.
    fn lifetime(&self) -> Duration;

    /// A fresh token for `session`, issued at `now`.
    ///
    /// # Errors
    /// [`Error::Internal`] if signing fails.
    fn mint(&self, session: &SessionId, now: Timestamp) -> Result<IssuedToken, Error>;

    /// The token that replaces `consumed` at `at`. Deterministic: the same inputs give the same token,
    /// which is how a retry inside the grace window gets the response it lost without the server
    /// keeping any plaintext token.
    ///
    /// # Errors
    /// [`Error::Internal`] if signing fails.
    fn rotate(&self, consumed: &VerifiedToken, at: Timestamp) -> Result<IssuedToken, Error>;

    /// Checks a presented token at `now`.
    ///
    /// # Errors
    /// [`Error::Reconnect`] with exactly one of `invalid_token`, `token_expired`,
    /// `invalid_token_purpose`.
    fn verify(&self, token: &str, now: Timestamp) -> Result<VerifiedToken, Error>;
}

/// A token authority that issues nothing: for embedders and tests that use the registry without
/// reconnect tokens (a hub's reader, a test of session states). `mint` and `rotate` fail as
/// internal errors; `verify` refuses every token as `invalid_token`.
#[derive(Clone, Copy, Debug)]
pub struct NoTokens {
    lifetime: Duration,
}

impl NoTokens {
    /// One whose (unused) token lifetime is `lifetime`: the manager checks it against its policy.
    pub fn with_lifetime(lifetime: Duration) -> Self {
        Self { lifetime }
    }
}

impl Default for NoTokens {
    /// The default policy's token lifetime (15 minutes).
    fn default() -> Self {
        Self::with_lifetime(crate::policy::Policy::defaults().token_lifetime())
    }
}

impl TokenAuthority for NoTokens {
    fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn mint(&self, _: &SessionId, _: Timestamp) -> Result<IssuedToken, Error> {
        Err(Error::Internal(
            "this service issues no reconnect tokens".into(),
        ))
    }

    fn rotate(&self, _: &VerifiedToken, _: Timestamp) -> Result<IssuedToken, Error> {
        Err(Error::Internal(
            "this service issues no reconnect tokens".into(),
        ))
    }

    fn verify(&self, _: &str, _: Timestamp) -> Result<VerifiedToken, Error> {
        Err(Error::Reconnect(crate::codes::ResultCode::InvalidToken))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_junk() {
        let c = Cursor {
            last_activity: Timestamp::from_micros(42),
            session_id: SessionId::parse("a:b").unwrap(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert!(Cursor::decode("x:y").is_err());
        assert!(Cursor::decode("12").is_err());
        assert!(Cursor::decode("12:a b").is_err());
    }

    #[test]
    fn plain_token_is_redacted() {
        let t = PlainToken::new("secret".into());
        assert_eq!(format!("{t:?}"), "PlainToken(<redacted>)");
    }
}
