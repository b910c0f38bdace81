//! `SessionManager`: the use cases. Each one takes its time from the clock, performs one atomic store
//! operation, and on success emits the event that reports it (a refused reconnect reads the row
//! once more to say why). This is the only place events are made.

use std::sync::Arc;

use crate::codes::ResultCode;
use crate::error::Error;
use crate::events::{EventKind, EventSink, UpdateType};
use crate::observer::{NoObserver, Observer};
use crate::policy::Policy;
use crate::ports::{
    Change, Cursor, IssuedToken, ListQuery, Recorded, SessionStore, StatusCounts, TokenAuthority,
    VerifiedToken,
};
use crate::session::{DisconnectReason, NewSession, Session, SessionId};
use crate::time::{Clock, Timestamp};

/// Largest page `list` returns.
pub const MAX_PAGE: u32 = 500;

/// One page of sessions.
#[derive(Clone, Debug)]
pub struct Page {
    /// The sessions, newest activity first.
    pub sessions: Vec<Session>,
    /// Where the next page starts, if there is one.
    pub next_cursor: Option<Cursor>,
}

/// A reconnect token that passed [`SessionManager::check_token`] for one session: only that call
/// makes one, so [`SessionManager::reconnect_checked`] never sees an unverified token.
#[derive(Debug)]
pub struct PresentedToken(VerifiedToken);

/// The outcome of a successful reconnect.
#[derive(Clone, Debug)]
pub struct Reconnected {
    /// The session after the reconnect.
    pub session: Session,
    /// The rotated token that replaces the consumed one.
    pub token: IssuedToken,
    /// True when this was a retry inside the grace window that repeated an earlier success.
    pub repeated: bool,
}

/// What one sweep did.
#[derive(Clone, Debug, Default)]
pub struct SweepReport {
    /// Sessions that became idle.
    pub idled: usize,
    /// Sessions that were ended.
    pub reaped: usize,
}

/// Sessions whose heartbeat was written (or is being written) recently, and when: the coalescing of
/// [`SessionManager::heartbeat`]. A cache only: losing it costs one write per session.
#[derive(Default)]
struct Heartbeats {
    written: std::collections::HashMap<SessionId, Timestamp>,
    /// Entries older than the interval are dropped when the map reaches this size, which then
    /// becomes twice what is left: a prune costs O(n) only once per n insertions, however many
    /// sessions heartbeat within one interval.
    prune_at: usize,
}

/// The least size at which the heartbeat map is pruned.
const HEARTBEAT_PRUNE_AT: usize = 4096;

/// The session use cases, over the four ports.
#[derive(Clone)]
pub struct SessionManager {
    store: Arc<dyn SessionStore>,
    tokens: Arc<dyn TokenAuthority>,
    events: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    policy: Policy,
    heartbeats: Arc<std::sync::Mutex<Heartbeats>>,
    observer: Arc<dyn Observer>,
}

impl SessionManager {
    /// Wires the manager.
    ///
    /// # Errors
    /// [`Error::Policy`] when the token authority's lifetime differs from the policy's, since the reap
    /// rule was checked against the policy's.
    pub fn new(
        store: Arc<dyn SessionStore>,
        tokens: Arc<dyn TokenAuthority>,
        events: Arc<dyn EventSink>,
        clock: Arc<dyn Clock>,
        policy: Policy,
    ) -> Result<Self, Error> {
        if tokens.lifetime() != policy.token_lifetime() {
            return Err(Error::Policy(
                "the token authority's lifetime differs from the policy's token lifetime".into(),
            ));
        }
        Ok(Self {
            store,
            tokens,
            events,
            clock,
            policy,
            heartbeats: Arc::default(),
            observer: Arc::new(NoObserver),
        })
    }

    /// The same manager, telling `observer` of each outcome (by default nobody is told). Set it
    /// before cloning the manager: clones made earlier keep the previous observer.
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// The timing rules in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Tells the sink of a committed change and hands back the session.
    fn emit(&self, recorded: Recorded) -> Session {
        self.events.publish(&recorded.event);
        recorded.session
    }

    fn change(&self, event: EventKind) -> Change {
        Change {
            at: self.clock.now(),
            event,
        }
    }

    /// Why a conditional change found nothing to change.
    async fn explain_miss(&self, id: &SessionId) -> Error {
        match self.store.get(id).await {
            Ok(None) => Error::NotFound,
            Ok(Some(s)) if s.is_disconnected() => Error::AlreadyDisconnected,
            // The conditional change missed although the row is live now: it changed between the
            // two statements. Rare enough to report as an internal error (logged with its cause)
            // rather than guess which rule failed.
            Ok(Some(_)) => Error::Internal("session changed concurrently".into()),
            Err(e) => e,
        }
    }

    /// Opens a session.
    ///
    /// # Errors
    /// [`Error::Invalid`] for bad fields, [`Error::AlreadyExists`] for a taken id, store errors.
    pub async fn open(&self, new: NewSession) -> Result<Session, Error> {
        let change = self.change(EventKind::Created);
        let session = Session::open(new, change.at)?;
        let recorded = self.store.insert(&session, change).await?;
        self.observer.session_opened();
        Ok(self.emit(recorded))
    }

    /// Reads a session.
    ///
    /// # Errors
    /// [`Error::NotFound`], store errors.
    pub async fn get(&self, id: &SessionId) -> Result<Session, Error> {
        self.store.get(id).await?.ok_or(Error::NotFound)
    }

    /// Lists sessions, newest activity first.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `limit` is 0 or above [`MAX_PAGE`], store errors.
    pub async fn list(&self, mut query: ListQuery) -> Result<Page, Error> {
        if query.limit == 0 || query.limit > MAX_PAGE {
            return Err(Error::invalid(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        let limit = query.limit as usize;
        // One extra row tells whether another page exists without a count query.
        query.limit += 1;
        let mut sessions = self.store.list(&query).await?;
        let next_cursor = if sessions.len() > limit {
            sessions.truncate(limit);
            sessions.last().map(Cursor::after)
        } else {
            None
        };
        Ok(Page {
            sessions,
            next_cursor,
        })
    }

    /// Counts sessions per state.
    ///
    /// # Errors
    /// Store errors.
    pub async fn counts(&self) -> Result<StatusCounts, Error> {
        self.store.counts().await
    }

    /// Records activity: `idle` → `active`.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::AlreadyDisconnected`], store errors.
    pub async fn touch(&self, id: &SessionId) -> Result<Session, Error> {
        let change = self.change(EventKind::Updated(UpdateType::Activity));
        match self.store.touch(id, change).await? {
            Some(recorded) => Ok(self.emit(recorded)),
            None => Err(self.explain_miss(id).await),
        }
    }

    /// Records activity, writing it at most once per [`Policy::activity_interval`] per session: a
    /// heartbeat within the interval of the last written one is acknowledged without a store call
    /// (every MCP request is a heartbeat). `last_activity`, and so the idle and reap decisions, lag
    /// by at most the interval. `Ok(false)` when the session has ended or does not exist; an end
    /// made through another manager (another instance) is noticed within the interval.
    ///
    /// # Errors
    /// Store errors.
    pub async fn heartbeat(&self, id: &SessionId) -> Result<bool, Error> {
        let now = self.clock.now();
        let interval = self.policy.activity_interval();
        // Claimed before the write, so that heartbeats arriving while it is in flight (a client's
        // concurrent requests) are acknowledged without writing too.
        let claimed = match self.heartbeats.lock() {
            Ok(mut h) => {
                let recent = h
                    .written
                    .get(id)
                    .is_some_and(|last| now >= *last && now.since(*last) < interval);
                if !recent {
                    if h.written.len() >= h.prune_at.max(HEARTBEAT_PRUNE_AT) {
                        h.written.retain(|_, last| now.since(*last) < interval);
                        h.prune_at = 2 * h.written.len();
                    }
                    h.written.insert(id.clone(), now);
                }
                !recent
            }
            Err(_) => true,
        };
        if !claimed {
            return Ok(true);
        }
        match self.touch(id).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound | Error::AlreadyDisconnected) => {
                self.forget_heartbeat(id);
                Ok(false)
            }
            Err(e) => {
                // Not written: the next heartbeat tries again.
                if let Ok(mut h) = self.heartbeats.lock()
                    && h.written.get(id) == Some(&now)
                {
                    h.written.remove(id);
                }
                Err(e)
            }
        }
    }

    fn forget_heartbeat(&self, id: &SessionId) {
        if let Ok(mut h) = self.heartbeats.lock() {
            h.written.remove(id);
        }
    }

    /// Ends a session.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::AlreadyDisconnected`], store errors.
    pub async fn disconnect(
        &self,
        id: &SessionId,
        reason: DisconnectReason,
    ) -> Result<Session, Error> {
        // Its heartbeats are not live any more, whatever the outcome below.
        self.forget_heartbeat(id);
        let change = self.change(EventKind::Disconnected);
        match self.store.disconnect(id, &reason, change).await? {
            Some(recorded) => {
                self.observer.session_ended(&reason);
                Ok(self.emit(recorded))
            }
            None => Err(self.explain_miss(id).await),
        }
    }

    /// Mints a reconnect token for a live session, replacing any previous one.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::AlreadyDisconnected`], store errors.
    pub async fn issue_token(&self, id: &SessionId) -> Result<IssuedToken, Error> {
        let change = self.change(EventKind::Updated(UpdateType::TokenIssued));
        let issued = self.tokens.mint(id, change.at)?;
        match self
            .store
            .set_token(id, &issued.hash, issued.expires_at, change)
            .await?
        {
            Some(recorded) => {
                self.observer.token_issued();
                self.emit(recorded);
                Ok(issued)
            }
            None => Err(self.explain_miss(id).await),
        }
    }

    /// Resumes a session with its single-use reconnect token, rotating the token: [`check_token`]
    /// then [`reconnect_checked`].
    ///
    /// [`check_token`]: Self::check_token
    /// [`reconnect_checked`]: Self::reconnect_checked
    ///
    /// # Errors
    /// [`Error::Reconnect`] with the result code, [`Error::NotFound`] as `session_not_found`, store
    /// errors.
    pub async fn reconnect(&self, id: &SessionId, token: &str) -> Result<Reconnected, Error> {
        let presented = self.check_token(id, token)?;
        self.reconnect_checked(id, presented).await
    }

    /// The half of a reconnect that needs no store: the token's signature, expiry, purpose and
    /// audience, and that it was issued for `id`. A caller that rations reconnects per session
    /// (a rate limit) counts only attempts that pass this, so garbage aimed at a session's id cannot
    /// spend that session's budget and lock its real client out.
    ///
    /// # Errors
    /// [`Error::Reconnect`] with `invalid_token`, `token_expired` or `session_id_mismatch`.
    pub fn check_token(&self, id: &SessionId, token: &str) -> Result<PresentedToken, Error> {
        let checked = self.verify_for(id, token);
        // A refusal here ends the attempt: counted now. A token that passes is counted by
        // `reconnect_checked`, so each attempt is counted once.
        if let Err(e) = &checked {
            self.observe_reconnect(Err(e));
        }
        checked
    }

    fn verify_for(&self, id: &SessionId, token: &str) -> Result<PresentedToken, Error> {
        let verified = self.tokens.verify(token, self.clock.now())?;
        if verified.session_id != id.as_str() {
            return Err(Error::Reconnect(ResultCode::SessionIdMismatch));
        }
        Ok(PresentedToken(verified))
    }

    /// Tells the observer how a reconnect attempt ended. Errors without a contract code (none that
    /// a reconnect can produce) are not counted rather than counted as something they are not.
    fn observe_reconnect(&self, outcome: Result<(), &Error>) {
        let code = match outcome {
            Ok(()) => Some(ResultCode::Reconnected),
            Err(e) => e.code(),
        };
        if let Some(code) = code {
            self.observer.reconnect(code);
        }
    }

    /// Consumes a token that [`check_token`](Self::check_token) accepted for `id`, rotating it.
    ///
    /// # Errors
    /// [`Error::Reconnect`] with the result code, [`Error::NotFound`] as `session_not_found`, store
    /// errors.
    pub async fn reconnect_checked(
        &self,
        id: &SessionId,
        presented: PresentedToken,
    ) -> Result<Reconnected, Error> {
        let outcome = self.consume(id, presented).await;
        self.observe_reconnect(outcome.as_ref().map(|_| ()));
        outcome
    }

    /// The store half of a reconnect: the compare-and-swap, and why it missed.
    async fn consume(
        &self,
        id: &SessionId,
        presented: PresentedToken,
    ) -> Result<Reconnected, Error> {
        let presented = presented.0;
        if presented.session_id != id.as_str() {
            return Err(Error::Reconnect(ResultCode::SessionIdMismatch));
        }
        let change = self.change(EventKind::Updated(UpdateType::Reconnected));
        let next = self.tokens.rotate(&presented, change.at)?;
        if let Some(recorded) = self
            .store
            .consume_token(id, &presented.hash, &next.hash, next.expires_at, change)
            .await?
        {
            return Ok(Reconnected {
                session: self.emit(recorded),
                token: next,
                repeated: false,
            });
        }
        self.diagnose_failed_consume(id, &presented).await
    }

    /// Checks that `token` is the live reconnect token of session `id`, without consuming it: the
    /// credential of callers that hold a session handle but no connection of their own (MCP clients
    /// of the sessionless protocol revision). The same rules as a reconnect decide, with the same
    /// codes, and presenting an already-consumed token is reuse: the live token is revoked and
    /// `token_reused` emitted. A retry with the previous token inside the grace window is refused
    /// as `token_mismatch` without revoking (the client is expected to repeat its reconnect).
    ///
    /// # Errors
    /// [`Error::Reconnect`] with the result code, [`Error::NotFound`], store errors.
    pub async fn authorize(&self, id: &SessionId, token: &str) -> Result<Session, Error> {
        let now = self.clock.now();
        let presented = self.tokens.verify(token, now)?;
        if presented.session_id != id.as_str() {
            return Err(Error::Reconnect(ResultCode::SessionIdMismatch));
        }
        let session = self.get(id).await?;
        if session.can_consume(&presented.hash, now) {
            return Ok(session);
        }
        let is_previous = session
            .token()
            .previous_hash
            .is_some_and(|h| h.ct_eq(&presented.hash));
        if is_previous && self.in_grace(&session, now) {
            return Err(Error::Reconnect(ResultCode::TokenMismatch));
        }
        Err(self.refuse(&session, &presented).await)
    }

    /// The compare-and-swap found nothing: work out which rule failed, and handle reuse.
    async fn diagnose_failed_consume(
        &self,
        id: &SessionId,
        presented: &VerifiedToken,
    ) -> Result<Reconnected, Error> {
        let now = self.clock.now();
        let session = self.store.get(id).await?.ok_or(Error::NotFound)?;
        let is_previous = session
            .token()
            .previous_hash
            .is_some_and(|h| h.ct_eq(&presented.hash));
        if !session.is_disconnected()
            && is_previous
            && let Some(repeat) = self.grace_repeat(&session, presented, now)?
        {
            return Ok(repeat);
        }
        Err(self.refuse(&session, presented).await)
    }

    /// Why `presented` is not a usable token of `session`: ended, expired, reuse of a consumed
    /// token (which revokes the live one and emits `token_reused`), or a superseded one.
    async fn refuse(&self, session: &Session, presented: &VerifiedToken) -> Error {
        if session.is_disconnected() {
            return Error::Reconnect(ResultCode::SessionAlreadyDisconnected);
        }
        let state = session.token();
        if state.hash.is_some_and(|h| h.ct_eq(&presented.hash)) {
            // The live token, refused only because its stored expiry has passed.
            return Error::Reconnect(ResultCode::TokenExpired);
        }
        let is_previous = state
            .previous_hash
            .is_some_and(|h| h.ct_eq(&presented.hash));
        // A token of ours for this session, issued no later than the last rotation and not live, has
        // been consumed (or superseded) already: presenting it again is reuse (RFC 9700 §4.14.2).
        let predates_rotation = state.rotated_at.is_some_and(|r| presented.issued_at <= r);
        if is_previous || predates_rotation {
            let change = self.change(EventKind::TokenReused);
            match self.store.revoke_token(session.id(), change).await {
                Ok(Some(recorded)) => {
                    self.emit(recorded);
                }
                Ok(None) => {}
                Err(e) => return e,
            }
            self.observer.token_reused();
            return Error::Reconnect(ResultCode::TokenReused);
        }
        Error::Reconnect(ResultCode::TokenMismatch)
    }

    /// Whether `now` is inside the grace window after the session's last rotation.
    fn in_grace(&self, session: &Session, now: Timestamp) -> bool {
        let grace = self.policy.grace();
        session
            .token()
            .rotated_at
            .is_some_and(|r| !grace.is_zero() && now >= r && now.since(r) <= grace)
    }

    /// Inside the grace window, a retry with the immediately previous token gets the very token its
    /// lost response carried, re-derived, provided that token is still the live one.
    fn grace_repeat(
        &self,
        session: &Session,
        presented: &VerifiedToken,
        now: Timestamp,
    ) -> Result<Option<Reconnected>, Error> {
        let (Some(rotated_at), Some(live)) = (session.token().rotated_at, session.token().hash)
        else {
            return Ok(None);
        };
        if !self.in_grace(session, now) {
            return Ok(None);
        }
        let again = self.tokens.rotate(presented, rotated_at)?;
        if !again.hash.ct_eq(&live) {
            return Ok(None);
        }
        Ok(Some(Reconnected {
            session: session.clone(),
            token: again,
            repeated: true,
        }))
    }

    /// Moves inactive sessions to `idle`, and ends those inactive for `reap_after`.
    ///
    /// # Errors
    /// Store errors (what was done before the error stays done and reported).
    pub async fn sweep(&self) -> Result<SweepReport, Error> {
        let reap = self.change(EventKind::Disconnected);
        let reaped_rows = self
            .store
            .reap(
                reap.at.minus(self.policy.reap_after()),
                &DisconnectReason::idle_timeout(),
                reap,
            )
            .await?;
        let reaped = reaped_rows.len();
        let reason = DisconnectReason::idle_timeout();
        for r in reaped_rows {
            self.observer.session_ended(&reason);
            self.emit(r);
        }
        let idle = Change {
            at: reap.at,
            event: EventKind::Updated(UpdateType::Idle),
        };
        let idled_rows = self
            .store
            .mark_idle(idle.at.minus(self.policy.idle_after()), idle)
            .await?;
        let idled = idled_rows.len();
        for r in idled_rows {
            self.emit(r);
        }
        Ok(SweepReport { idled, reaped })
    }
}
