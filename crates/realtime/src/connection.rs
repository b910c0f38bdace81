//! One WebSocket dashboard: replay (when resuming), then its queue out, pings, and the few frames a
//! dashboard may send in. Runs on the actix worker that accepted it (the body and the payload are
//! not `Send`).
//!
//! Output goes through [`Outbound`]: a message is taken from the queue only when the response body
//! has room, so a client that does not read leaves its messages in the queue, where the pump counts
//! them against the connection's byte budget and, past it, fires the kill signal, which every await
//! in this file also watches.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_http::ws::{CloseCode, CloseReason, Frame, Item, ProtocolError};
use socket2::Socket;
use tether_domain::{Clock, EventFeed};
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout_at};

use crate::config::RealtimeConfig;
use crate::error::{Error, chain};
use crate::message::{self, Text};
use crate::queue;
use crate::socket;
use crate::subscription::{Kill, PAGE, Subscription};
use crate::wire::{Gone, Inbound, Outbound};

/// How long a closing connection may take to go: its close frame written and the connection
/// dropped by actix-http (which, after the body ends, waits up to its `client_disconnect_timeout`,
/// 1 s by default, for the client to close first). Past it the socket is reset: a client that does
/// not read would otherwise hold it, and its buffers, until it leaves.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How the connection ends.
enum End {
    /// We close, with this code and reason.
    Close(CloseCode, &'static str),
    /// The client closed: answer its close frame.
    Answer(Option<CloseReason>),
    /// The socket is gone; nothing can be sent.
    Gone,
}

impl End {
    fn killed(kill: Result<Kill, oneshot::error::RecvError>) -> Self {
        // A dropped sender means the pump has ended without a word: treat it as a shutdown.
        let kill = kill.unwrap_or(Kill::SHUTDOWN);
        End::Close(kill.code, kill.reason)
    }
}

impl From<Gone> for End {
    fn from(_: Gone) -> Self {
        End::Gone
    }
}

/// What a connection needs besides its own channels: the feed to replay from, the clock for its
/// messages' times, the limits, and where its replay is counted.
pub(crate) struct Context {
    pub(crate) feed: Arc<dyn EventFeed>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: RealtimeConfig,
    pub(crate) replays: Arc<Replays>,
}

/// Replays that reached their `resumed` message, and those of them that were incomplete
/// ([`HubStats`](crate::HubStats)).
#[derive(Debug, Default)]
pub(crate) struct Replays {
    pub(crate) done: AtomicU64,
    pub(crate) incomplete: AtomicU64,
}

/// Serves one upgraded connection until it ends, deregisters it, and closes it.
pub(crate) async fn run(
    hub: Context,
    out: Outbound,
    mut inbound: Inbound,
    socket: Option<Socket>,
    subscription: Result<Subscription, Error>,
    since: Option<u64>,
) {
    let end = match subscription {
        Err(_) => End::killed(Ok(Kill::SHUTDOWN)),
        Ok(mut sub) => {
            let replayed = match since {
                Some(since) => replay(&hub, &out, &mut sub, since).await,
                None => Ok(()),
            };
            let end = match replayed {
                Ok(()) => serve(&hub, &out, &mut inbound, &mut sub).await,
                Err(end) => end,
            };
            unsubscribe(sub);
            end
        }
    };
    finish(&out, &mut inbound, socket, end).await;
}

/// Deregisters at once and frees what the queue still holds, before the close (which may take up
/// to [`CLOSE_TIMEOUT`]).
fn unsubscribe(mut sub: Subscription) {
    // Closed first, so the pump's later pushes fail (and it takes their bytes back itself).
    sub.queue.close();
    while let Some(text) = sub.queue.try_recv() {
        sub.budget.release(text.len());
    }
    drop(sub);
}

/// Runs `fut` unless the pump's kill signal fires first.
async fn unless_killed<F: Future>(
    kill: &mut oneshot::Receiver<Kill>,
    fut: F,
) -> Result<F::Output, End> {
    tokio::select! {
        biased;
        k = kill => Err(End::killed(k)),
        out = fut => Ok(out),
    }
}

/// Sends one of the connection's own messages once the body has room, watching the kill signal.
async fn send(out: &Outbound, kill: &mut oneshot::Receiver<Kill>, text: Text) -> Result<(), End> {
    unless_killed(kill, out.room()).await??;
    out.text(text, false);
    Ok(())
}

/// Sends the events in `(since, position]` from the outbox, then `resumed`. Events after `position`
/// are already in the queue (the pump pushes everything after the registration position), so
/// together the client sees each retained event exactly once.
async fn replay(
    hub: &Context,
    out: &Outbound,
    sub: &mut Subscription,
    since: u64,
) -> Result<(), End> {
    let position = sub.position;
    let feed = &hub.feed;
    let failed = |e: tether_domain::Error| {
        tracing::warn!(error = %chain(&e), since, "replay failed: the event feed could not be read");
        End::Close(CloseCode::Error, "replay_failed")
    };
    let mut cursor = since;
    let mut last = None;
    while cursor < position {
        let page = unless_killed(&mut sub.kill, feed.events_after(cursor, PAGE))
            .await?
            .map_err(failed)?;
        let Some(tail) = page.last().map(|e| e.seq) else {
            break;
        };
        for event in page.iter().take_while(|e| e.seq <= position) {
            let text = message::event(event).map_err(|e| {
                tracing::error!(seq = event.seq, error = %e, "could not serialize an event");
                End::Close(CloseCode::Error, "replay_failed")
            })?;
            send(out, &mut sub.kill, text).await?;
            last = Some(event.seq);
        }
        if page.len() < PAGE as usize {
            break;
        }
        cursor = tail;
    }
    let pruned = unless_killed(&mut sub.kill, feed.pruned_through())
        .await?
        .map_err(failed)?;
    let epoch = unless_killed(&mut sub.kill, feed.epoch())
        .await?
        .map_err(failed)?;
    // Complete when nothing after `since` was pruned and `since` is a position of this outbox (a
    // client ahead of us came from another database or epoch).
    let recovered = since >= pruned && since <= position;
    hub.replays.done.fetch_add(1, Ordering::Relaxed);
    if !recovered {
        hub.replays.incomplete.fetch_add(1, Ordering::Relaxed);
    }
    let text = message::resumed(last.unwrap_or(position), hub.clock.now(), recovered, &epoch)
        .map_err(|e| {
            tracing::error!(error = %e, "could not serialize a resumed message");
            End::Close(CloseCode::Error, "replay_failed")
        })?;
    send(out, &mut sub.kill, text).await
}

/// The next message from the queue, taken only once the body has room for it.
async fn next_message(out: &Outbound, queue: &mut queue::Receiver) -> Result<Option<Text>, Gone> {
    out.room().await?;
    Ok(queue.recv().await)
}

/// The live phase: queue out, frames in, heartbeat.
async fn serve(
    hub: &Context,
    out: &Outbound,
    inbound: &mut Inbound,
    sub: &mut Subscription,
) -> End {
    let config = hub.config;
    let ping = config.ping_interval;
    let mut heartbeat = interval_at(Instant::now() + ping, ping);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Pings sent since the last pong (or ping) from the client: at a tick with two of them
    // unanswered, the client is taken for dead ("two missed pongs").
    let mut unanswered: u32 = 0;
    // Bytes of the fragmented message being received: each frame is capped by `Inbound`, and this
    // caps the message they add up to, without buffering it.
    let mut fragmented: usize = 0;

    loop {
        tokio::select! {
            biased;
            k = &mut sub.kill => return End::killed(k),
            text = next_message(out, &mut sub.queue) => match text {
                // Charged by the pump when it pushed it.
                Ok(Some(text)) => out.text(text, true),
                Ok(None) => return End::killed(Ok(Kill::SHUTDOWN)),
                Err(Gone) => return End::Gone,
            },
            frame = inbound.next() => {
                let frame = match frame {
                    None => return End::Gone,
                    Some(Ok(frame)) => frame,
                    Some(Err(ProtocolError::Overflow)) => {
                        return End::Close(CloseCode::Size, "message_too_big");
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "closing a dashboard after a protocol error");
                        return End::Close(CloseCode::Protocol, "protocol_error");
                    }
                };
                match frame {
                    Frame::Ping(payload) => {
                        unanswered = 0;
                        out.pong(&payload);
                    }
                    Frame::Pong(_) => unanswered = 0,
                    Frame::Close(reason) => return End::Answer(reason),
                    Frame::Continuation(item) => {
                        let (len, last) = match &item {
                            Item::FirstText(b) | Item::FirstBinary(b) => {
                                fragmented = 0;
                                (b.len(), false)
                            }
                            Item::Continue(b) => (b.len(), false),
                            Item::Last(b) => (b.len(), true),
                        };
                        fragmented = fragmented.saturating_add(len);
                        if fragmented > config.max_frame {
                            return End::Close(CloseCode::Size, "message_too_big");
                        }
                        if last {
                            fragmented = 0;
                        }
                    }
                    // Text must be UTF-8 (what actix-ws, used before, refused the same way).
                    Frame::Text(bytes) if std::str::from_utf8(&bytes).is_err() => {
                        return End::Close(CloseCode::Protocol, "protocol_error");
                    }
                    // Dashboards have nothing to say: ignored, never kept.
                    Frame::Text(_) | Frame::Binary(_) => {}
                }
            }
            _ = heartbeat.tick() => {
                if unanswered >= 2 {
                    return End::Close(CloseCode::Policy, "heartbeat_timeout");
                }
                unanswered += 1;
                out.ping();
            }
        }
    }
}

/// Says goodbye if there is anyone to say it to, and makes sure the connection goes within
/// [`CLOSE_TIMEOUT`] even when the client reads nothing.
async fn finish(out: &Outbound, inbound: &mut Inbound, socket: Option<Socket>, end: End) {
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    // Messages not yet begun are dropped now, with their bytes; one partly sent is completed, or
    // the client could not find the close frame after it.
    out.discard_unstarted();
    match end {
        End::Close(code, description) => out.close(Some(CloseReason {
            code,
            description: Some(description.to_owned()),
        })),
        End::Answer(reason) => out.close(reason.map(|r| CloseReason {
            code: r.code,
            description: None,
        })),
        End::Gone => {}
    }
    // The body ends after the close frame; actix-http then writes it, waits a little for the client
    // to close (reading and dropping whatever it sends) and drops the connection, which ends
    // `inbound`. Not waiting for the client's own close frame here is what actix-ws did too.
    out.finish();
    let gone = async {
        inbound.drain().await;
        out.released().await;
    };
    if timeout_at(deadline, gone).await.is_err() {
        tracing::debug!("resetting a dashboard connection that did not close in time");
        // From the body if actix-http still polls it; from the socket if its buffer is full, which
        // is when it does not.
        out.abort();
        if let Some(socket) = socket {
            socket::reset(socket);
        }
    }
}
