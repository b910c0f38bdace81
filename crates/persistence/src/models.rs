//! Rows as stored, and their translation to and from the domain's `Session`.

use diesel::prelude::*;
use tether_domain::{
    DisconnectReason, Metadata, Session, SessionId, SessionParts, SessionStatus, Timestamp,
    TokenHash, TokenState,
};

use crate::error::Error;
use crate::schema::sessions;

/// A `sessions` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct SessionRow {
    pub session_id: String,
    pub client_type: String,
    pub client_version: Option<String>,
    pub principal: Option<String>,
    pub status: String,
    pub connected_at: i64,
    pub last_activity: i64,
    pub idle_since: Option<i64>,
    pub disconnected_at: Option<i64>,
    pub disconnect_reason: Option<String>,
    pub reconnect_count: i64,
    pub metadata: String,
    pub token_hash: Option<Vec<u8>>,
    pub token_expires_at: Option<i64>,
    pub prev_token_hash: Option<Vec<u8>>,
    pub token_rotated_at: Option<i64>,
}

fn ts(micros: i64) -> Timestamp {
    Timestamp::from_micros(micros)
}

fn hash(bytes: Option<Vec<u8>>) -> Result<Option<TokenHash>, Error> {
    bytes
        .map(|b| TokenHash::from_slice(&b).map_err(|_| Error::Corrupt("token hash length".into())))
        .transpose()
}

impl SessionRow {
    pub(crate) fn from_session(s: &Session) -> Self {
        let p = s.parts();
        Self {
            session_id: p.id.as_str().to_owned(),
            client_type: p.client_type.clone(),
            client_version: p.client_version.clone(),
            principal: p.principal.clone(),
            status: p.status.as_str().to_owned(),
            connected_at: p.connected_at.as_micros(),
            last_activity: p.last_activity.as_micros(),
            idle_since: p.idle_since.map(Timestamp::as_micros),
            disconnected_at: p.disconnected_at.map(Timestamp::as_micros),
            disconnect_reason: p.disconnect_reason.as_ref().map(|r| r.as_str().to_owned()),
            reconnect_count: i64::try_from(p.reconnect_count).unwrap_or(i64::MAX),
            metadata: p.metadata.to_json(),
            token_hash: p.token.hash.map(|h| h.as_bytes().to_vec()),
            token_expires_at: p.token.expires_at.map(Timestamp::as_micros),
            prev_token_hash: p.token.previous_hash.map(|h| h.as_bytes().to_vec()),
            token_rotated_at: p.token.rotated_at.map(Timestamp::as_micros),
        }
    }

    pub(crate) fn into_session(self) -> Result<Session, Error> {
        let corrupt = |what: &str| Error::Corrupt(format!("{what} of session {}", self.session_id));
        let metadata = serde_json::from_str(&self.metadata)
            .ok()
            .and_then(|v| Metadata::parse(v).ok())
            .ok_or_else(|| corrupt("metadata"))?;
        Ok(Session::from_parts(SessionParts {
            id: SessionId::parse(&self.session_id).map_err(|_| corrupt("id"))?,
            status: SessionStatus::parse(&self.status).map_err(|_| corrupt("status"))?,
            disconnect_reason: self
                .disconnect_reason
                .as_deref()
                .map(DisconnectReason::parse)
                .transpose()
                .map_err(|_| corrupt("disconnect reason"))?,
            reconnect_count: u64::try_from(self.reconnect_count)
                .map_err(|_| corrupt("reconnect count"))?,
            token: TokenState {
                hash: hash(self.token_hash)?,
                expires_at: self.token_expires_at.map(ts),
                previous_hash: hash(self.prev_token_hash)?,
                rotated_at: self.token_rotated_at.map(ts),
            },
            client_type: self.client_type,
            client_version: self.client_version,
            principal: self.principal,
            connected_at: ts(self.connected_at),
            last_activity: ts(self.last_activity),
            idle_since: self.idle_since.map(ts),
            disconnected_at: self.disconnected_at.map(ts),
            metadata,
        }))
    }
}
