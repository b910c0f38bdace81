//! One WebSocket dashboard: replay (when resuming), then its queue out, pings, and the few frames a
//! dashboard may send in. Runs on the actix worker that accepted it (the message stream is not `Send`).
//!
//! Awaiting a send here stalls only this connection; the hub keeps filling its bounded queue and, when
//! that overflows, fires the kill signal, which every await in this file also watches.

use std::future::Future;
use std::time::Duration;

use actix_ws::{CloseCode, CloseReason, Item, Message, MessageStream, ProtocolError, Session};
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};

use crate::error::{Error, chain};
use crate::hub::{Hub, Kill, PAGE, Subscription};
use crate::message;

/// How long a connection keeps trying to send its close frame to a client that may not read.
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

/// Serves one upgraded connection until it ends, then deregisters it (by dropping the subscription).
pub(crate) async fn run(
    hub: Hub,
    mut session: Session,
    stream: MessageStream,
    subscription: Result<Subscription, Error>,
    since: Option<u64>,
) {
    let mut sub = match subscription {
        Ok(sub) => sub,
        Err(_) => {
            finish(session, End::killed(Ok(Kill::SHUTDOWN))).await;
            return;
        }
    };
    let replayed = match since {
        Some(since) => replay(&hub, &mut session, &mut sub, since).await,
        None => Ok(()),
    };
    let end = match replayed {
        Ok(()) => serve(&hub, &mut session, stream, &mut sub).await,
        Err(end) => end,
    };
    finish(session, end).await;
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

/// Sends one text message, watching the kill signal while the client is slow to take it.
async fn send(
    session: &mut Session,
    kill: &mut oneshot::Receiver<Kill>,
    text: &str,
) -> Result<(), End> {
    // `text` is the hub's shared serialization; the frame encoder copies the payload into its own
    // buffer anyway, so the copy into a `ByteString` here costs nothing extra of note.
    unless_killed(kill, session.text(text))
        .await?
        .map_err(|_| End::Gone)
}

/// Sends the events in `(since, position]` from the outbox, then `resumed`. Events after `position`
/// are already in the queue (the pump pushes everything after the registration position), so
/// together the client sees each retained event exactly once.
async fn replay(
    hub: &Hub,
    session: &mut Session,
    sub: &mut Subscription,
    since: u64,
) -> Result<(), End> {
    let position = sub.position;
    let feed = hub.feed();
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
            send(session, &mut sub.kill, &text).await?;
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
    let text = message::resumed(
        last.unwrap_or(position),
        hub.clock().now(),
        recovered,
        &epoch,
    )
    .map_err(|e| {
        tracing::error!(error = %e, "could not serialize a resumed message");
        End::Close(CloseCode::Error, "replay_failed")
    })?;
    send(session, &mut sub.kill, &text).await
}

/// The live phase: queue out, frames in, heartbeat.
async fn serve(
    hub: &Hub,
    session: &mut Session,
    mut stream: MessageStream,
    sub: &mut Subscription,
) -> End {
    let config = *hub.config();
    let ping = config.ping_interval;
    let mut heartbeat = interval_at(Instant::now() + ping, ping);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Pings sent since the last pong (or ping) from the client: at a tick with two of them
    // unanswered, the client is taken for dead ("two missed pongs").
    let mut unanswered: u32 = 0;
    // Bytes of the fragmented message being received: each frame is capped by the codec, and this
    // caps the message they add up to, without buffering it.
    let mut fragmented: usize = 0;

    loop {
        tokio::select! {
            biased;
            k = &mut sub.kill => return End::killed(k),
            text = sub.queue.recv() => match text {
                Some(text) => {
                    if let Err(end) = send(session, &mut sub.kill, &text).await {
                        return end;
                    }
                }
                None => return End::killed(Ok(Kill::SHUTDOWN)),
            },
            frame = stream.recv() => {
                let message = match frame {
                    None => return End::Gone,
                    Some(Ok(message)) => message,
                    Some(Err(ProtocolError::Overflow)) => {
                        return End::Close(CloseCode::Size, "message_too_big");
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "closing a dashboard after a protocol error");
                        return End::Close(CloseCode::Protocol, "protocol_error");
                    }
                };
                match message {
                    Message::Ping(payload) => {
                        unanswered = 0;
                        match unless_killed(&mut sub.kill, session.pong(&payload)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return End::Gone,
                            Err(end) => return end,
                        }
                    }
                    Message::Pong(_) => unanswered = 0,
                    Message::Close(reason) => return End::Answer(reason),
                    Message::Continuation(item) => {
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
                    // Dashboards have nothing to say: ignored, never buffered.
                    Message::Text(_) | Message::Binary(_) | Message::Nop => {}
                }
            }
            _ = heartbeat.tick() => {
                if unanswered >= 2 {
                    return End::Close(CloseCode::Policy, "heartbeat_timeout");
                }
                unanswered += 1;
                match unless_killed(&mut sub.kill, session.ping(b"")).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return End::Gone,
                    Err(end) => return end,
                }
            }
        }
    }
}

/// Says goodbye if there is anyone to say it to, without waiting on a client that does not read.
async fn finish(session: Session, end: End) {
    let reason = match end {
        End::Close(code, description) => Some(CloseReason {
            code,
            description: Some(description.to_owned()),
        }),
        End::Answer(reason) => reason.map(|r| CloseReason {
            code: r.code,
            description: None,
        }),
        End::Gone => return,
    };
    if timeout(CLOSE_TIMEOUT, session.close(reason)).await.is_err() {
        tracing::debug!("a dashboard did not take its close frame in time");
    }
}
