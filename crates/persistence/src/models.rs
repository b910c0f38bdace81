//! Rows as stored, and their translation to and from the domain's `Session`.

use diesel::prelude::*;
use tether_domain::{
    DisconnectReason, EventKind, Metadata, Session, SessionEvent, SessionId, SessionParts,
    SessionStatus, StoredEvent, Timestamp, TokenHash, TokenState, UpdateType,
};

use crate::error::Error;
use crate::schema::{session_events, sessions};

/// A `sessions` row.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
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
        Ok(tether_domain::adapter::restore(SessionParts {
            id: SessionId::parse(&self.session_id).map_err(|_| corrupt("id"))?,
            status: SessionStatus::parse(&self.status).map_err(|_| corrupt("status"))?,
            disconnect_reason: self
                .disconnect_reason
                .as_deref()
                .map(DisconnectReason::from_stored)
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

/// A `session_events` row to insert (the id is the database's).
#[derive(Debug, Insertable)]
#[diesel(table_name = session_events)]
pub(crate) struct NewEventRow<'a> {
    pub session_id: &'a str,
    pub kind: &'static str,
    pub update_type: Option<&'static str>,
    pub at: i64,
    pub status: &'static str,
    pub client_type: &'a str,
    pub reconnect_count: i64,
    pub reason: Option<&'a str>,
}

impl<'a> NewEventRow<'a> {
    pub(crate) fn from_event(e: &'a SessionEvent) -> Self {
        Self {
            session_id: e.session_id.as_str(),
            kind: e.kind.as_str(),
            update_type: e.kind.update_type().map(UpdateType::as_str),
            at: e.at.as_micros(),
            status: e.status.as_str(),
            client_type: &e.client_type,
            reconnect_count: i64::try_from(e.reconnect_count).unwrap_or(i64::MAX),
            reason: e.reason.as_deref(),
        }
    }
}

/// A `session_events` row as read.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = session_events)]
#[diesel(check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct EventRow {
    pub seq: i64,
    pub session_id: String,
    pub kind: String,
    pub update_type: Option<String>,
    pub at: i64,
    pub status: String,
    pub client_type: String,
    pub reconnect_count: i64,
    pub reason: Option<String>,
}

impl EventRow {
    pub(crate) fn into_stored(self) -> Result<StoredEvent, Error> {
        let corrupt = |what: &str| Error::Corrupt(format!("{what} of event {}", self.seq));
        Ok(StoredEvent {
            seq: u64::try_from(self.seq).map_err(|_| corrupt("seq"))?,
            event: SessionEvent {
                kind: EventKind::parse(&self.kind, self.update_type.as_deref())
                    .map_err(|_| corrupt("kind"))?,
                session_id: SessionId::parse(&self.session_id)
                    .map_err(|_| corrupt("session id"))?,
                at: ts(self.at),
                status: SessionStatus::parse(&self.status).map_err(|_| corrupt("status"))?,
                client_type: self.client_type,
                reconnect_count: u64::try_from(self.reconnect_count)
                    .map_err(|_| corrupt("reconnect count"))?,
                reason: self.reason,
            },
        })
    }
}
