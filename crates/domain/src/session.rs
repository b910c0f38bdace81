//! A session and the values it is made of. Every value type validates in its constructor, so a
//! `Session` that exists is a session that obeys the rules.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::Error;
use crate::time::Timestamp;

/// Longest accepted session id.
pub const MAX_SESSION_ID_LEN: usize = 128;
/// Largest accepted metadata object, serialized as JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// A session's id: 1–128 characters of `[A-Za-z0-9._:-]`, and not `.` or `..` (clients that
/// normalise URL paths could never reach those).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    /// Validates `raw` as a session id.
    ///
    /// # Errors
    /// [`Error::Invalid`] when it is empty, too long, `.` or `..`, or has a character outside
    /// `[A-Za-z0-9._:-]`.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        if raw == "." || raw == ".." {
            return Err(Error::invalid(
                "session_id",
                "must not be '.' or '..' (path segments)",
            ));
        }
        if raw.is_empty() || raw.len() > MAX_SESSION_ID_LEN {
            return Err(Error::invalid("session_id", "must be 1-128 characters"));
        }
        let ok = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if !ok {
            return Err(Error::invalid(
                "session_id",
                "may contain only A-Z, a-z, 0-9, '.', '_', ':' and '-'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    /// Seen recently.
    Active,
    /// No activity for `idle_after`; still resumable.
    Idle,
    /// Ended; final.
    Disconnected,
}

impl SessionStatus {
    /// The wire and storage spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Idle => "idle",
            Self::Disconnected => "disconnected",
        }
    }

    /// Parses the wire spelling.
    ///
    /// # Errors
    /// [`Error::Invalid`] for anything but `active`, `idle` or `disconnected`.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        match raw {
            "active" => Ok(Self::Active),
            "idle" => Ok(Self::Idle),
            "disconnected" => Ok(Self::Disconnected),
            _ => Err(Error::invalid(
                "status",
                "must be one of active, idle, disconnected",
            )),
        }
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a session ended: a short label such as `client_closed` or `idle_timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisconnectReason(String);

impl DisconnectReason {
    /// The client ended the session.
    pub const CLIENT_CLOSED: &'static str = "client_closed";
    /// The sweep ended it after `reap_after` without activity.
    pub const IDLE_TIMEOUT: &'static str = "idle_timeout";
    /// An operator ended it.
    pub const ADMIN: &'static str = "admin";
    /// Prefix of the reason recorded when a session's client resumed another session instead (see
    /// [`DisconnectReason::resumed_as`]). Reserved: callers cannot supply it.
    pub const RESUMED_PREFIX: &'static str = "resumed:";

    /// Validates a caller-supplied reason: 1–128 characters, no control characters, not starting
    /// with the reserved [`DisconnectReason::RESUMED_PREFIX`].
    ///
    /// # Errors
    /// [`Error::Invalid`] when empty, too long, containing control characters, or reserved.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let len = raw.chars().count();
        if len == 0 || len > 128 || raw.chars().any(char::is_control) {
            return Err(Error::invalid(
                "reason",
                "must be 1-128 characters without control characters",
            ));
        }
        if raw.starts_with(Self::RESUMED_PREFIX) {
            // A forged `resumed:<id>` would bind an MCP connection to another session.
            return Err(Error::invalid(
                "reason",
                "may not start with 'resumed:' (reserved)",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// Reads a reason back from storage, where only reasons that were valid when written exist
    /// (including the reserved `resumed:` ones this type made itself).
    ///
    /// # Errors
    /// [`Error::Invalid`] when empty or containing control characters (a corrupt row).
    pub fn from_stored(raw: &str) -> Result<Self, Error> {
        if raw.is_empty() || raw.chars().any(char::is_control) {
            return Err(Error::invalid("reason", "stored reason is corrupt"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The reason recorded for a session whose client resumed `target` instead: a client that
    /// opened a fresh session only to resume an older one with its reconnect token. The text is
    /// `resumed:<target id>`, so the binding survives restarts with the row itself.
    pub fn resumed_as(target: &SessionId) -> Self {
        Self(format!("{}{target}", Self::RESUMED_PREFIX))
    }

    /// The session this one was resumed as, when the reason is [`DisconnectReason::resumed_as`].
    pub fn resumed_target(&self) -> Option<SessionId> {
        let id = self.0.strip_prefix(Self::RESUMED_PREFIX)?;
        SessionId::parse(id).ok()
    }

    /// The reason used when a client ends its own session without giving one.
    pub fn client_closed() -> Self {
        Self(Self::CLIENT_CLOSED.to_owned())
    }

    /// The reason the sweep records.
    pub fn idle_timeout() -> Self {
        Self(Self::IDLE_TIMEOUT.to_owned())
    }

    /// The reason as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free-form JSON object attached to a session, at most [`MAX_METADATA_BYTES`] serialized.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata(Map<String, Value>);

impl Metadata {
    /// Validates a JSON value as metadata.
    ///
    /// # Errors
    /// [`Error::Invalid`] when it is not an object or is too large.
    pub fn parse(value: Value) -> Result<Self, Error> {
        let Value::Object(map) = value else {
            return Err(Error::invalid("metadata", "must be a JSON object"));
        };
        let size = serde_json::to_vec(&map)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_METADATA_BYTES {
            return Err(Error::invalid(
                "metadata",
                format!("must be at most {MAX_METADATA_BYTES} bytes as JSON"),
            ));
        }
        Ok(Self(map))
    }

    /// The object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The object as JSON text (for storage).
    pub fn to_json(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }
}

/// SHA-256 of a reconnect token. The only form in which a token is ever stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Wraps 32 digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads 32 bytes as stored.
    ///
    /// # Errors
    /// [`Error::Internal`] when the slice is not 32 bytes long (a corrupt row).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| Error::Internal("stored token hash is not 32 bytes".into()))
    }

    /// The digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Compares in time independent of where the first difference is.
    pub fn ct_eq(&self, other: &TokenHash) -> bool {
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not a secret, but logs have no use for it either.
        f.write_str("TokenHash(<redacted>)")
    }
}

/// The reconnect-token state kept with a session.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenState {
    /// Hash of the live token, if any.
    pub hash: Option<TokenHash>,
    /// When the live token stops being accepted.
    pub expires_at: Option<Timestamp>,
    /// Hash of the token consumed by the last successful reconnect.
    pub previous_hash: Option<TokenHash>,
    /// When that reconnect happened.
    pub rotated_at: Option<Timestamp>,
}

/// What a caller supplies to open a session.
#[derive(Clone, Debug)]
pub struct NewSession {
    /// The id (generated by the caller when the client gave none).
    pub session_id: SessionId,
    /// Kind of MCP client, e.g. `claude-desktop`.
    pub client_type: String,
    /// Its version.
    pub client_version: Option<String>,
    /// Who owns the session.
    pub principal: Option<String>,
    /// Extra data.
    pub metadata: Metadata,
}

/// All fields of a session, for adapters that store and restore it.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionParts {
    /// The session's id (also its MCP session id when it was opened over MCP).
    pub id: SessionId,
    /// Kind of client.
    pub client_type: String,
    /// Client version.
    pub client_version: Option<String>,
    /// Who owns it (the authenticated principal), when known.
    pub principal: Option<String>,
    /// Current state.
    pub status: SessionStatus,
    /// When it was opened.
    pub connected_at: Timestamp,
    /// Last activity (heartbeat, reconnect).
    pub last_activity: Timestamp,
    /// When it last became idle (`None` unless idle).
    pub idle_since: Option<Timestamp>,
    /// When it ended.
    pub disconnected_at: Option<Timestamp>,
    /// Why it ended.
    pub disconnect_reason: Option<DisconnectReason>,
    /// Successful reconnects so far.
    pub reconnect_count: u64,
    /// Extra data.
    pub metadata: Metadata,
    /// Reconnect-token state.
    pub token: TokenState,
}

/// A session as stored. Read-only: state changes go through the store's atomic operations, whose
/// conditions are the `can_*` rules below.
#[derive(Clone, Debug, PartialEq)]
pub struct Session(SessionParts);

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), Error> {
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters without control characters"),
        ));
    }
    Ok(())
}

impl Session {
    /// A new, active session opened at `now`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `client_type` is empty or any text field is too long.
    pub fn open(new: NewSession, now: Timestamp) -> Result<Self, Error> {
        if new.client_type.trim().is_empty() {
            return Err(Error::invalid("client_type", "must not be empty"));
        }
        check_text("client_type", &new.client_type, 128)?;
        if let Some(v) = &new.client_version {
            check_text("client_version", v, 64)?;
        }
        if let Some(p) = &new.principal {
            check_text("principal", p, 256)?;
        }
        Ok(Self(SessionParts {
            id: new.session_id,
            client_type: new.client_type,
            client_version: new.client_version,
            principal: new.principal,
            status: SessionStatus::Active,
            connected_at: now,
            last_activity: now,
            idle_since: None,
            disconnected_at: None,
            disconnect_reason: None,
            reconnect_count: 0,
            metadata: new.metadata,
            token: TokenState::default(),
        }))
    }

    /// Rebuilds a session from stored parts, unchecked: for store adapters, through
    /// [`adapter::restore`](crate::adapter::restore).
    pub(crate) fn from_parts(parts: SessionParts) -> Self {
        Self(parts)
    }

    /// All fields.
    pub fn parts(&self) -> &SessionParts {
        &self.0
    }

    /// The session's id.
    pub fn id(&self) -> &SessionId {
        &self.0.id
    }
    /// Kind of client.
    pub fn client_type(&self) -> &str {
        &self.0.client_type
    }
    /// Client version.
    pub fn client_version(&self) -> Option<&str> {
        self.0.client_version.as_deref()
    }
    /// Who owns it, when known.
    pub fn principal(&self) -> Option<&str> {
        self.0.principal.as_deref()
    }
    /// Current state.
    pub fn status(&self) -> SessionStatus {
        self.0.status
    }
    /// When it was opened.
    pub fn connected_at(&self) -> Timestamp {
        self.0.connected_at
    }
    /// Last activity.
    pub fn last_activity(&self) -> Timestamp {
        self.0.last_activity
    }
    /// When it became idle, while idle.
    pub fn idle_since(&self) -> Option<Timestamp> {
        self.0.idle_since
    }
    /// When it ended.
    pub fn disconnected_at(&self) -> Option<Timestamp> {
        self.0.disconnected_at
    }
    /// Why it ended.
    pub fn disconnect_reason(&self) -> Option<&DisconnectReason> {
        self.0.disconnect_reason.as_ref()
    }
    /// Successful reconnects.
    pub fn reconnect_count(&self) -> u64 {
        self.0.reconnect_count
    }
    /// Extra data.
    pub fn metadata(&self) -> &Metadata {
        &self.0.metadata
    }
    /// Reconnect-token state (never to be shown to anyone).
    pub fn token(&self) -> &TokenState {
        &self.0.token
    }

    /// How long the session lasted, once it has ended.
    pub fn duration(&self) -> Option<Duration> {
        self.0
            .disconnected_at
            .map(|end| end.since(self.0.connected_at))
    }

    /// Whether the session has ended.
    pub fn is_disconnected(&self) -> bool {
        self.0.status == SessionStatus::Disconnected
    }

    /// Rule: a token can be consumed when the session is not ended, the presented hash is the live one
    /// and the live token has not expired at `now`.
    pub fn can_consume(&self, presented: &TokenHash, now: Timestamp) -> bool {
        !self.is_disconnected()
            && self.0.token.hash.is_some_and(|h| h.ct_eq(presented))
            && self.0.token.expires_at.is_some_and(|exp| exp > now)
    }

    /// Rule: an active session with no activity since `idle_before` becomes idle.
    pub fn should_idle(&self, idle_before: Timestamp) -> bool {
        self.0.status == SessionStatus::Active && self.0.last_activity <= idle_before
    }

    /// Rule: a live session with no activity since `reap_before` is ended.
    pub fn should_reap(&self, reap_before: Timestamp) -> bool {
        !self.is_disconnected() && self.0.last_activity <= reap_before
    }

    // The transitions below are what the store's atomic statements do; the in-memory store applies
    // them directly and the SQL adapters mirror them (the shared contract suite proves they agree).

    /// Activity at `now`: back to `active`.
    pub(crate) fn apply_touch(&mut self, now: Timestamp) {
        self.0.status = SessionStatus::Active;
        self.0.last_activity = now;
        self.0.idle_since = None;
    }

    /// Ends the session.
    pub(crate) fn apply_disconnect(&mut self, now: Timestamp, reason: DisconnectReason) {
        self.0.status = SessionStatus::Disconnected;
        self.0.disconnected_at = Some(now);
        self.0.disconnect_reason = Some(reason);
        self.0.idle_since = None;
        self.0.token.hash = None;
        self.0.token.expires_at = None;
    }

    /// A freshly minted token replaces the live one.
    pub(crate) fn apply_new_token(&mut self, hash: TokenHash, expires_at: Timestamp) {
        self.0.token.hash = Some(hash);
        self.0.token.expires_at = Some(expires_at);
    }

    /// A successful reconnect: consume, rotate, count, reactivate.
    pub(crate) fn apply_reconnect(
        &mut self,
        next: TokenHash,
        next_expires: Timestamp,
        now: Timestamp,
    ) {
        self.0.token.previous_hash = self.0.token.hash.take();
        self.0.token.hash = Some(next);
        self.0.token.expires_at = Some(next_expires);
        self.0.token.rotated_at = Some(now);
        self.0.reconnect_count += 1;
        self.apply_touch(now);
    }

    /// Reuse detected: the live token stops working.
    pub(crate) fn apply_revoke(&mut self) {
        self.0.token.hash = None;
        self.0.token.expires_at = None;
    }

    /// The sweep found it inactive.
    pub(crate) fn apply_idle(&mut self, now: Timestamp) {
        self.0.status = SessionStatus::Idle;
        self.0.idle_since = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_rules() {
        assert!(SessionId::parse("a").is_ok());
        assert!(SessionId::parse("Abc-1.2_3:x").is_ok());
        assert!(SessionId::parse(&"x".repeat(128)).is_ok());
        assert!(SessionId::parse(&"x".repeat(129)).is_err());
        assert!(SessionId::parse("").is_err());
        assert!(SessionId::parse("a b").is_err());
        assert!(SessionId::parse("a/b").is_err());
        assert!(SessionId::parse("é").is_err());
        // Path segments that URL-normalising clients would never send as ids.
        assert!(SessionId::parse(".").is_err());
        assert!(SessionId::parse("..").is_err());
        assert!(SessionId::parse("...").is_ok());
        assert!(SessionId::parse(".a").is_ok());
    }

    #[test]
    fn status_round_trips() {
        for s in [
            SessionStatus::Active,
            SessionStatus::Idle,
            SessionStatus::Disconnected,
        ] {
            assert_eq!(SessionStatus::parse(s.as_str()).ok(), Some(s));
        }
        assert!(SessionStatus::parse("Active").is_err());
    }

    #[test]
    fn metadata_must_be_a_bounded_object() {
        assert!(Metadata::parse(serde_json::json!({"a": 1})).is_ok());
        assert!(Metadata::parse(serde_json::json!([1])).is_err());
        let big = "x".repeat(MAX_METADATA_BYTES);
        assert!(Metadata::parse(serde_json::json!({ "a": big })).is_err());
    }

    #[test]
    fn reasons_and_texts_are_bounded() {
        assert!(DisconnectReason::parse("client_closed").is_ok());
        assert!(DisconnectReason::parse("").is_err());
        assert!(DisconnectReason::parse("a\nb").is_err());
        assert!(DisconnectReason::parse(&"r".repeat(129)).is_err());
        let new = |ct: &str| NewSession {
            session_id: SessionId::parse("s").unwrap(),
            client_type: ct.into(),
            client_version: None,
            principal: None,
            metadata: Metadata::default(),
        };
        assert!(Session::open(new("cli"), Timestamp::from_secs(1)).is_ok());
        assert!(Session::open(new(" "), Timestamp::from_secs(1)).is_err());
        assert!(Session::open(new(&"c".repeat(129)), Timestamp::from_secs(1)).is_err());
    }

    #[test]
    fn token_hash_compares_and_redacts() {
        let a = TokenHash::from_bytes([1; 32]);
        let mut other = [1; 32];
        other[31] = 2;
        assert!(a.ct_eq(&TokenHash::from_bytes([1; 32])));
        assert!(!a.ct_eq(&TokenHash::from_bytes(other)));
        assert_eq!(format!("{a:?}"), "TokenHash(<redacted>)");
        assert!(TokenHash::from_slice(&[0; 31]).is_err());
    }
}
