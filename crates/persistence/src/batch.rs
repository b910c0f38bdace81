//! Group commit of reconnects.
//!
//! A reconnect is one small statement, and on PostgreSQL most of its cost is per statement, not per
//! row: the wake-up of a backend process, a snapshot, executor start-up, a commit record and its WAL
//! flush, and a round trip each way. On SQLite, whose one writer takes writes in turn, the turn,
//! BEGIN and COMMIT, and their hand-offs to the blocking pool are per transaction. Reconnects that
//! arrive while another group is being written therefore wait, and go together: on PostgreSQL as one
//! statement and one commit, the same compare-and-swap and outbox row per session for every session
//! of the group at once ([`ConsumeMany`]); on SQLite as one transaction holding each member's
//! portable statement and outbox row in turn, run as one call on the writer's blocking connection. Under load groups grow by themselves (whatever queued
//! during the previous group); a lone reconnect goes at once, as the one-row statement it always was.
//!
//! What stays as it was, one reconnect at a time:
//! - each is committed, as durably as before (PostgreSQL's `synchronous_commit` is untouched),
//!   before it is answered;
//! - two reconnects of one session never share a statement: the second waits for the next group,
//!   so it sees the first one's effect exactly as it would have one statement later (a token
//!   presented twice is consumed once, and the second is then judged reuse);
//! - a caller that stopped waiting (its timeout, a client that hung up) before its group was formed
//!   is left out, so a reconnect answered with an error did not consume its token (one that gives up
//!   while its group is being written may still have been committed, as before);
//! - a statement that fails for a reason other than the database being away (a deadlock with a
//!   sweep, say) is retried one reconnect at a time, so one row cannot fail the others.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Binary, Nullable, Text, Untyped};
use diesel::{QueryResult, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use tether_domain::{Change, Recorded, SessionId, Timestamp, TokenHash};
use tokio::sync::{mpsc, oneshot};

use crate::conn::{Conn, Connections};
use crate::db::Backend;
use crate::error::Error;
use crate::feed::FeedState;
use crate::models::SessionRow;
use crate::postgres;
use crate::store::{consume_on_sqlite, recorded};

/// Most reconnects in one statement. Past a few dozen the per-row work dominates and a bigger group
/// only makes its members wait longer.
const MAX_GROUP: usize = 64;

/// Groups being written at once on PostgreSQL. Two keep both cores of a small machine busy: one group
/// executes while the other waits for its WAL flush. A session is never in two of them (the second
/// waits), so groups never wait on each other's row locks. On SQLite, one: it has one writer.
const IN_FLIGHT: usize = 2;

/// Reconnects waiting to be grouped. When full, callers wait to enqueue (within their timeout).
const QUEUE: usize = 4096;

/// A consumed token: the changed session and its event, as stored.
pub(crate) type Consumed = Option<Recorded>;

/// One reconnect's compare-and-swap, waiting for its group.
#[derive(Clone)]
pub(crate) struct Consume {
    /// The session.
    pub(crate) id: SessionId,
    /// The hash of the token presented.
    pub(crate) presented: TokenHash,
    /// The hash of the token that replaces it.
    pub(crate) next: TokenHash,
    /// When the new token expires.
    pub(crate) next_expires_at: Timestamp,
    /// The time and kind of the change.
    pub(crate) change: Change,
}

struct Waiting {
    consume: Consume,
    reply: oneshot::Sender<Result<Consumed, Error>>,
}

/// The handle every clone of a PostgreSQL `Database` shares: it enqueues reconnects for the task
/// that groups and writes them, which ends when the last handle is gone.
#[derive(Clone)]
pub(crate) struct Batcher {
    queue: mpsc::Sender<Waiting>,
}

impl Batcher {
    /// Starts the grouping task on the runtime of `conns`.
    pub(crate) fn start(conns: Connections, feed: Arc<FeedState>) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        conns.runtime().clone().spawn(run(waiting, conns, feed));
        Self { queue }
    }

    /// Consumes the token as the next group's statement does, once that statement has committed.
    pub(crate) async fn consume(&self, consume: Consume) -> Result<Consumed, Error> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Waiting { consume, reply })
            .await
            .map_err(|_| Error::Task("the reconnect group task has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Task("the reconnect group task dropped a reconnect".into()))?
    }
}

/// Forms groups and writes them, at most [`IN_FLIGHT`] at a time (one on SQLite), until every
/// handle is gone.
async fn run(mut queue: mpsc::Receiver<Waiting>, conns: Connections, feed: Arc<FeedState>) {
    // Reconnects that could not join a group yet (their session is in a group being written, or
    // the group was full), in arrival order, ahead of anything still in the queue.
    let mut held: VecDeque<Waiting> = VecDeque::new();
    // Sessions in the groups being written: each group sends its own back when it is done.
    let mut busy: HashSet<SessionId> = HashSet::new();
    let (done, mut finished) = mpsc::unbounded_channel::<Vec<SessionId>>();
    let mut in_flight = 0;
    let most = match conns.backend() {
        Backend::Postgres => IN_FLIGHT,
        Backend::Sqlite => 1,
    };
    let mut open = true;
    loop {
        while in_flight < most {
            while held.len() < 2 * MAX_GROUP {
                match queue.try_recv() {
                    Ok(w) => held.push_back(w),
                    Err(_) => break,
                }
            }
            let group = next_group(&mut held, &busy);
            if group.is_empty() {
                break;
            }
            let ids: Vec<SessionId> = group.iter().map(|w| w.consume.id.clone()).collect();
            busy.extend(ids.iter().cloned());
            in_flight += 1;
            let (conns, feed, done) = (conns.clone(), Arc::clone(&feed), done.clone());
            tokio::spawn(async move {
                write(&conns, &feed, group).await;
                let _ = done.send(ids);
            });
        }
        tokio::select! {
            Some(ids) = finished.recv(), if in_flight > 0 => {
                in_flight -= 1;
                for id in &ids {
                    busy.remove(id);
                }
            }
            w = queue.recv(), if open && in_flight < most => match w {
                Some(w) => held.push_back(w),
                None => open = false,
            },
            // Every handle is gone and nothing is being written: nobody is left to answer.
            else => return,
        }
    }
}

/// Takes from `held` the next group: at most [`MAX_GROUP`], one per session and none of the `busy`
/// ones, callers still waiting; the rest stay in `held`, in order.
fn next_group(held: &mut VecDeque<Waiting>, busy: &HashSet<SessionId>) -> Vec<Waiting> {
    let mut group = Vec::new();
    let mut sessions = HashSet::new();
    let mut rest = VecDeque::new();
    for w in held.drain(..) {
        if w.reply.is_closed() {
            continue;
        }
        if group.len() < MAX_GROUP
            && !busy.contains(&w.consume.id)
            && sessions.insert(w.consume.id.clone())
        {
            group.push(w);
        } else {
            rest.push_back(w);
        }
    }
    *held = rest;
    group
}

/// Writes `group` as one statement (one transaction on SQLite) and answers each member.
async fn write(conns: &Connections, feed: &Arc<FeedState>, group: Vec<Waiting>) {
    let (consumes, replies): (Vec<_>, Vec<_>) =
        group.into_iter().map(|w| (w.consume, w.reply)).unzip();
    let consumes = Arc::new(consumes);
    match run_group(conns, Arc::clone(&consumes)).await {
        Ok(results) => {
            if results.iter().any(Option::is_some) {
                feed.committed();
            }
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(e) if e.is_unavailable() || replies.len() == 1 => {
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(Error::Shared(Arc::clone(&e))));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, size = replies.len(), "a reconnect group failed; writing its members one by one");
            for (consume, reply) in consumes.iter().zip(replies) {
                let result = run_group(conns, Arc::new(vec![consume.clone()]))
                    .await
                    .map(|mut r| r.pop().flatten());
                if matches!(result, Ok(Some(_))) {
                    feed.committed();
                }
                let _ = reply.send(result);
            }
        }
    }
}

/// Runs `group` through the pool (on SQLite, as the writer): for each member, in order, what its
/// compare-and-swap recorded, or `None` when its token could not be consumed.
async fn run_group(conns: &Connections, group: Arc<Vec<Consume>>) -> Result<Vec<Consumed>, Error> {
    conns
        .call("consume_group", true, move |conn| {
            Box::pin(async move {
                match conn {
                    Conn::Postgres(c) => {
                        let rows = consume_all(c, &group).await?;
                        rows.into_iter()
                            .zip(group.iter())
                            .map(|(row, g)| {
                                row.map(|(row, seq)| recorded(row.into_session()?, seq, g.change))
                                    .transpose()
                            })
                            .collect()
                    }
                    // The whole transaction in one blocking call; the writer's turn once per group.
                    Conn::Sqlite(c) => {
                        c.spawn_blocking(move |c| Ok(consume_on_sqlite(c, &group)))
                            .await?
                    }
                }
            })
        })
        .await
}

/// Runs the compare-and-swap of every member of `group` in one statement: for each member, in
/// order, its changed row and `seq`, or `None` when its token could not be consumed. A group of one
/// runs the one-row statement (`postgres.rs`): [`ConsumeMany`] over one element would do the same,
/// but costs PostgreSQL nearly twice the CPU (885–980 against 505–515 µs per reconnect, one client
/// at a time, `reconnect-cpu.sh BINARY 2000 1`), and a lone reconnect is what a quiet instance
/// serves.
async fn consume_all(
    c: &mut AsyncPgConnection,
    group: &[Consume],
) -> Result<Vec<Option<(SessionRow, i64)>>, Error> {
    if let [one] = group {
        let consumed = postgres::consume_token(
            c,
            &one.id,
            &one.presented,
            &one.next,
            one.next_expires_at,
            one.change,
        )
        .await?;
        return Ok(vec![consumed]);
    }
    let statement = ConsumeMany {
        ids: group.iter().map(|g| g.id.as_str()).collect(),
        presented: group
            .iter()
            .map(|g| g.presented.as_bytes().as_slice())
            .collect(),
        next: group.iter().map(|g| g.next.as_bytes().as_slice()).collect(),
        next_expires_at: group
            .iter()
            .map(|g| g.next_expires_at.as_micros())
            .collect(),
        at: group.iter().map(|g| g.change.at.as_micros()).collect(),
        kinds: group.iter().map(|g| g.change.event.as_str()).collect(),
        update_types: group
            .iter()
            .map(|g| g.change.event.update_type().map(|u| u.as_str()))
            .collect(),
    };
    let rows: Vec<GroupRow> = statement.load(c).await?;
    let mut by_id: HashMap<String, (SessionRow, i64)> = rows
        .into_iter()
        .map(|r| (r.session.session_id.clone(), (r.session, r.seq)))
        .collect();
    Ok(group.iter().map(|g| by_id.remove(g.id.as_str())).collect())
}

/// A changed row with the `seq` of its outbox row.
#[derive(QueryableByName)]
struct GroupRow {
    #[diesel(embed)]
    session: SessionRow,
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

/// The reconnect statement (`postgres.rs`) for many sessions at once: the members arrive as arrays,
/// row `i` of each array being member `i`, joined to their rows through the primary key. The `WHERE`
/// is `Session::can_consume` and the `SET` `Session::apply_reconnect`, per member.
struct ConsumeMany<'a> {
    ids: Vec<&'a str>,
    presented: Vec<&'a [u8]>,
    next: Vec<&'a [u8]>,
    next_expires_at: Vec<i64>,
    at: Vec<i64>,
    kinds: Vec<&'a str>,
    update_types: Vec<Option<&'a str>>,
}

/// [`ConsumeMany`]'s identity in the statement cache.
struct ConsumeManyId;

impl QueryId for ConsumeMany<'_> {
    type QueryId = ConsumeManyId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for ConsumeMany<'_> {
    type SqlType = Untyped;
}

impl QueryFragment<Pg> for ConsumeMany<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH i AS (SELECT * FROM unnest(");
        out.push_bind_param::<Array<Text>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Binary>, _>(&self.presented)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Binary>, _>(&self.next)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.next_expires_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.kinds)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.update_types)?;
        out.push_sql(
            ") AS i (id, presented, next, next_expires_at, at, kind, update_type)), \
             s AS (UPDATE sessions SET \
                 prev_token_hash = sessions.token_hash, token_hash = i.next, \
                 token_expires_at = i.next_expires_at, token_rotated_at = i.at, \
                 reconnect_count = sessions.reconnect_count + 1, status = 'active', \
                 last_activity = i.at, idle_since = NULL \
             FROM i \
             WHERE sessions.session_id = i.id AND sessions.status <> 'disconnected' \
                 AND sessions.token_hash = i.presented AND sessions.token_expires_at > i.at \
             RETURNING sessions.*, i.kind AS event_kind, i.update_type AS event_update_type), \
             e AS (INSERT INTO session_events \
                 (session_id, kind, update_type, at, status, client_type, reconnect_count, reason) \
                 SELECT session_id, event_kind, event_update_type, last_activity, status, \
                     client_type, reconnect_count, disconnect_reason FROM s \
                 RETURNING seq, session_id) \
             SELECT s.*, e.seq FROM s JOIN e ON e.session_id = s.session_id",
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_domain::{
        DisconnectReason, EventFeed as _, EventKind, Metadata, NewSession, Session,
        SessionStore as _, UpdateType,
    };

    fn consume(id: &str, presented: u8, next: u8, at: Timestamp) -> Consume {
        Consume {
            id: SessionId::parse(id).unwrap(),
            presented: TokenHash::from_bytes([presented; 32]),
            next: TokenHash::from_bytes([next; 32]),
            next_expires_at: Timestamp::from_secs(1_700_001_000),
            change: Change {
                at,
                event: EventKind::Updated(UpdateType::Reconnected),
            },
        }
    }

    /// The group statement, run directly (grouping itself depends on timing): each member is
    /// consumed exactly as the one-row statement would consume it alone, and its outbox row is its
    /// own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_group_statement_judges_each_member_alone() {
        let Some(test_db) = tether_testkit::TestDb::postgres().await else {
            return;
        };
        let db = crate::Database::connect(test_db.url(), crate::Options::default())
            .await
            .unwrap();
        let at = Timestamp::from_secs(1_700_000_000);
        for (i, name) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            let id = SessionId::parse(name).unwrap();
            let session = Session::open(
                NewSession {
                    session_id: id.clone(),
                    client_type: "cli".into(),
                    client_version: None,
                    principal: None,
                    metadata: Metadata::default(),
                },
                at,
            )
            .unwrap();
            let created = Change {
                at,
                event: EventKind::Created,
            };
            db.insert(&session, created).await.unwrap();
            let issued = Change {
                at,
                event: EventKind::Updated(UpdateType::TokenIssued),
            };
            let live = TokenHash::from_bytes([u8::try_from(i).unwrap() + 1; 32]);
            let expires = Timestamp::from_secs(1_700_000_900);
            db.set_token(&id, &live, expires, issued).await.unwrap();
        }
        let ended = Change {
            at,
            event: EventKind::Disconnected,
        };
        let reason = DisconnectReason::parse(DisconnectReason::CLIENT_CLOSED).unwrap();
        let d = SessionId::parse("d").unwrap();
        db.disconnect(&d, &reason, ended).await.unwrap();
        let before = db.last_seq().await.unwrap();

        let later = Timestamp::from_secs(1_700_000_010);
        let expired = Timestamp::from_secs(1_700_000_901);
        let group = vec![
            consume("a", 1, 11, later),   // its live token: consumed
            consume("b", 2, 12, expired), // its live token, expired
            consume("c", 3, 13, later),   // consumed
            consume("d", 4, 14, later),   // ended
            consume("e", 9, 15, later),   // not its token
            consume("ghost", 6, 16, later),
        ];
        let out = db
            .conns
            .call("test", true, move |conn| {
                Box::pin(async move {
                    let Conn::Postgres(c) = conn else {
                        unreachable!("a PostgreSQL database")
                    };
                    consume_all(c, &group).await
                })
            })
            .await
            .unwrap();
        let consumed: Vec<bool> = out.iter().map(Option::is_some).collect();
        assert_eq!(consumed, [true, false, true, false, false, false]);
        for ((row, seq), (presented, next)) in out.iter().flatten().zip([(1u8, 11u8), (3, 13)]) {
            assert_eq!(row.reconnect_count, 1);
            assert_eq!(row.status, "active");
            assert_eq!(row.last_activity, later.as_micros());
            assert_eq!(row.token_rotated_at, Some(later.as_micros()));
            assert_eq!(row.token_hash.as_deref(), Some(&[next; 32][..]));
            assert_eq!(row.prev_token_hash.as_deref(), Some(&[presented; 32][..]));
            assert!(u64::try_from(*seq).unwrap() > before);
        }
        let events = db.events_after(before, 100).await.unwrap();
        let mut seen: Vec<(u64, String)> = events
            .iter()
            .map(|e| (e.seq, e.event.session_id.to_string()))
            .collect();
        seen.sort();
        let mut want: Vec<(u64, String)> = out
            .iter()
            .flatten()
            .map(|(row, seq)| (u64::try_from(*seq).unwrap(), row.session_id.clone()))
            .collect();
        want.sort();
        assert_eq!(seen, want, "one outbox row per consumed member, its own");
        assert!(
            events
                .iter()
                .all(|e| e.event.kind == EventKind::Updated(UpdateType::Reconnected))
        );
        drop(db);
        test_db.remove().await;
    }

    fn waiting(id: &str) -> (Waiting, oneshot::Receiver<Result<Consumed, Error>>) {
        let (reply, rx) = oneshot::channel();
        let consume = Consume {
            id: SessionId::parse(id).unwrap(),
            presented: TokenHash::from_bytes([1; 32]),
            next: TokenHash::from_bytes([2; 32]),
            next_expires_at: Timestamp::from_micros(10),
            change: Change {
                at: Timestamp::from_micros(5),
                event: EventKind::Updated(UpdateType::Reconnected),
            },
        };
        (Waiting { consume, reply }, rx)
    }

    fn ids(group: &[Waiting]) -> Vec<&str> {
        group.iter().map(|w| w.consume.id.as_str()).collect()
    }

    #[test]
    fn a_session_is_in_a_group_once_and_order_is_kept() {
        let (a1, _ra1) = waiting("a");
        let (b, _rb) = waiting("b");
        let (a2, _ra2) = waiting("a");
        let (c, _rc) = waiting("c");
        let mut held = VecDeque::from([a1, b, a2, c]);
        let group = next_group(&mut held, &HashSet::new());
        assert_eq!(ids(&group), ["a", "b", "c"]);
        assert_eq!(ids(held.make_contiguous()), ["a"], "the second `a` waits");
        let group = next_group(&mut held, &HashSet::new());
        assert_eq!(ids(&group), ["a"]);
        assert!(held.is_empty());
    }

    #[test]
    fn sessions_being_written_wait_for_the_next_group() {
        let (a, _ra) = waiting("a");
        let (b, _rb) = waiting("b");
        let mut held = VecDeque::from([a, b]);
        let busy = HashSet::from([SessionId::parse("a").unwrap()]);
        assert_eq!(ids(&next_group(&mut held, &busy)), ["b"]);
        assert_eq!(ids(held.make_contiguous()), ["a"]);
    }

    #[test]
    fn callers_that_stopped_waiting_are_left_out() {
        let (a, ra) = waiting("a");
        let (b, _rb) = waiting("b");
        drop(ra);
        let mut held = VecDeque::from([a, b]);
        assert_eq!(ids(&next_group(&mut held, &HashSet::new())), ["b"]);
    }

    #[test]
    fn groups_are_bounded() {
        // The receivers are kept: a member whose caller is gone would be left out.
        let (mut held, _callers): (VecDeque<Waiting>, Vec<_>) = (0..MAX_GROUP + 3)
            .map(|i| waiting(&format!("s{i}")))
            .unzip();
        assert_eq!(next_group(&mut held, &HashSet::new()).len(), MAX_GROUP);
        assert_eq!(held.len(), 3);
    }
}
