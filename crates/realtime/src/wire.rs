//! The WebSocket on actix-http directly: frames in ([`Inbound`]), frames out ([`Outbound`] and the
//! response [`Body`] it feeds).
//!
//! actix-ws is not used because it cannot bound what a connection holds: `Session::text` queues into
//! a channel of 32 messages that the response body empties completely at every poll, encoding all of
//! it into one buffer, so a client that reads slowly makes the server hold 32 copies of the largest
//! message plus actix-http's buffer, and nothing tells the sender when its bytes have left. Its
//! inbound codec also buffers a whole frame before comparing its length with the limit.
//!
//! Here the body hands actix-http one slice of at most [`CHUNK`] bytes per poll, and actix-http polls
//! it only while its own write buffer holds less than 32 KiB: a poll is the proof that what was
//! handed before has (all but those 32 KiB) gone to the socket. Every frame is charged to the
//! connection's [`Budget`] from the moment it is handed over until that proof, and the connection
//! takes the next message from its queue only when the body is nearly empty ([`WINDOW`]). Messages
//! larger than a chunk are not copied: the body slices the hub's shared serialization.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::mem;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use actix_codec::Decoder;
use actix_http::ws::{CloseReason, Codec, Frame, OpCode, Parser, ProtocolError};
use actix_web::body::{BodySize, MessageBody};
use actix_web::web::{self, Bytes, BytesMut};
use futures_util::StreamExt;

use crate::budget::Budget;
use crate::message::Text;

/// Bytes of frames the body may have waiting before the connection stops taking messages from its
/// queue (which holds them without copying, and which the pump measures against the budget).
const WINDOW: usize = 64 * 1024;
/// Most bytes handed to actix-http per poll. actix-http stops polling once its write buffer holds
/// 32 KiB, so at most 32 KiB + one chunk of a connection's output is there, uncounted.
const CHUNK: usize = 16 * 1024;

/// Frames from the client, decoded one at a time. A frame whose header declares more than
/// `max_frame` bytes is refused from the header, before any of its payload is kept.
pub(crate) struct Inbound {
    payload: web::Payload,
    buf: BytesMut,
    codec: Codec,
    max_frame: u64,
    /// After a protocol error or an oversized frame: what follows cannot be parsed.
    broken: bool,
    /// The stream has ended: the client closed its side, or actix-http let go of the connection.
    ended: bool,
}

impl Inbound {
    pub(crate) fn new(payload: web::Payload, max_frame: usize) -> Inbound {
        Inbound {
            payload,
            buf: BytesMut::new(),
            codec: Codec::new().max_size(max_frame),
            max_frame: u64::try_from(max_frame).unwrap_or(u64::MAX),
            broken: false,
            ended: false,
        }
    }

    /// Whether frames can still come.
    pub(crate) fn readable(&self) -> bool {
        !self.broken && !self.ended
    }

    /// The next frame, or an error (after which nothing more is parsed); `None` once the stream has
    /// ended. Cancel-safe: bytes read are kept until parsed.
    pub(crate) async fn next(&mut self) -> Option<Result<Frame, ProtocolError>> {
        if !self.readable() {
            return None;
        }
        loop {
            match self.decode() {
                Ok(Some(frame)) => return Some(Ok(frame)),
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    self.buf = BytesMut::new();
                    return Some(Err(e));
                }
            }
            match self.payload.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(_)) | None => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    fn decode(&mut self) -> Result<Option<Frame>, ProtocolError> {
        // actix-http's parser compares the length with its limit only once the whole frame is
        // buffered, so a frame declaring 2^40 bytes would be buffered for as long as the client
        // keeps sending. The header alone decides here.
        if declared_len(&self.buf).is_some_and(|len| len > self.max_frame) {
            return Err(ProtocolError::Overflow);
        }
        self.codec.decode(&mut self.buf)
    }

    /// Reads and drops whatever comes until the stream ends, which it does when actix-http drops
    /// the connection (or the client closes its side).
    pub(crate) async fn drain(&mut self) {
        self.buf = BytesMut::new();
        while !self.ended {
            match self.payload.next().await {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => self.ended = true,
            }
        }
    }
}

/// The payload length declared by the frame header at the start of `buf`, once that much of the
/// header has arrived (RFC 6455 §5.2).
fn declared_len(buf: &[u8]) -> Option<u64> {
    let len = *buf.get(1)? & 0x7f;
    match len {
        126 => {
            let b = buf.get(2..4)?;
            Some(u64::from(u16::from_be_bytes([b[0], b[1]])))
        }
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            Some(u64::from_be_bytes(b))
        }
        n => Some(u64::from(n)),
    }
}

/// The response body is gone: actix-http has dropped it, and the connection with it.
#[derive(Debug)]
pub(crate) struct Gone;

/// The connection's side of the output: what to send, and when it has room for more.
pub(crate) struct Outbound(Rc<RefCell<State>>);

/// actix-http's side: the WebSocket response body.
pub(crate) struct Body(Rc<RefCell<State>>);

/// The two ends of one connection's output, charging `budget`.
pub(crate) fn outbound(budget: Arc<Budget>) -> (Outbound, Body) {
    let state = Rc::new(RefCell::new(State {
        frames: VecDeque::new(),
        waiting: 0,
        handed: 0,
        ending: Ending::Open,
        dropped: false,
        body_waker: None,
        task_waker: None,
        budget,
    }));
    (Outbound(Rc::clone(&state)), Body(state))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    Open,
    /// End the body once the frames already queued are out.
    Finish,
    /// Fail the body at its next poll, so that actix-http drops the connection without flushing.
    Abort,
}

/// An encoded frame: `head` (the header, or the whole frame when small), then `payload`.
struct Out {
    head: Bytes,
    payload: Bytes,
    /// Bytes charged to the budget for it.
    charge: usize,
    /// Some of it has been handed over: it must be completed, or the client loses the framing.
    started: bool,
    pong: bool,
}

struct State {
    frames: VecDeque<Out>,
    /// Charges of `frames`.
    waiting: usize,
    /// Charges of frames handed over completely since the body's last poll: actix-http may still
    /// hold them in its buffer until it polls again.
    handed: usize,
    ending: Ending,
    /// The body was dropped: nothing more can be sent.
    dropped: bool,
    body_waker: Option<Waker>,
    task_waker: Option<Waker>,
    budget: Arc<Budget>,
}

impl State {
    /// The next slice to hand to actix-http.
    fn next_chunk(&mut self) -> Option<Bytes> {
        let front = self.frames.front_mut()?;
        front.started = true;
        let chunk = if front.head.is_empty() {
            let n = front.payload.len().min(CHUNK);
            front.payload.split_to(n)
        } else {
            mem::take(&mut front.head)
        };
        if front.head.is_empty()
            && front.payload.is_empty()
            && let Some(done) = self.frames.pop_front()
        {
            self.waiting -= done.charge;
            self.handed += done.charge;
        }
        Some(chunk)
    }

    fn release_all(&mut self) {
        let held = mem::take(&mut self.waiting) + mem::take(&mut self.handed);
        self.frames.clear();
        self.budget.release(held);
    }
}

/// A text frame for `text`, whose bytes are already charged.
fn text_frame(text: Text) -> Out {
    let len = text.len();
    let mut head = BytesMut::with_capacity(10 + len.min(CHUNK));
    head.extend_from_slice(&[0x80 | u8::from(OpCode::Text)]);
    if len < 126 {
        head.extend_from_slice(&[len as u8]);
    } else if let Ok(len) = u16::try_from(len) {
        head.extend_from_slice(&[126]);
        head.extend_from_slice(&len.to_be_bytes());
    } else {
        head.extend_from_slice(&[127]);
        head.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let payload = if len <= CHUNK {
        // Small: one copy, one chunk.
        head.extend_from_slice(text.as_bytes());
        Bytes::new()
    } else {
        // Large: sliced out of the hub's serialization, which every connection shares.
        Bytes::from_owner(Shared(text))
    };
    Out {
        head: head.freeze(),
        payload,
        charge: len,
        started: false,
        pong: false,
    }
}

/// A control frame (ping, pong, close): small, encoded whole.
fn control_frame(encode: impl FnOnce(&mut BytesMut), pong: bool) -> Out {
    let mut frame = BytesMut::new();
    encode(&mut frame);
    let charge = frame.len();
    Out {
        head: frame.freeze(),
        payload: Bytes::new(),
        charge,
        started: false,
        pong,
    }
}

struct Shared(Text);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Outbound {
    /// Resolves when the body can take another message, or fails once it is gone.
    pub(crate) async fn room(&self) -> Result<(), Gone> {
        poll_fn(|cx| {
            let mut s = self.0.borrow_mut();
            if s.dropped {
                Poll::Ready(Err(Gone))
            } else if s.waiting < WINDOW {
                Poll::Ready(Ok(()))
            } else {
                s.task_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Resolves once actix-http has dropped the body: it has taken (or abandoned) everything.
    pub(crate) async fn released(&self) {
        poll_fn(|cx| {
            let mut s = self.0.borrow_mut();
            if s.dropped {
                Poll::Ready(())
            } else {
                s.task_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }

    /// Queues a message (`charged`: the pump has charged it already; the connection's own messages
    /// are charged here).
    pub(crate) fn text(&self, text: Text, charged: bool) {
        if !charged {
            self.0.borrow().budget.charge(text.len());
        }
        self.push(text_frame(text));
    }

    pub(crate) fn ping(&self) {
        self.control(control_frame(
            |dst| Parser::write_message(dst, b"", OpCode::Ping, true, false),
            false,
        ));
    }

    /// Answers a ping. A pong still waiting is replaced rather than joined by another (RFC 6455
    /// §5.5.3 allows answering only the latest ping), so a client that floods pings and reads
    /// nothing queues at most one pong.
    pub(crate) fn pong(&self, payload: &[u8]) {
        {
            let mut s = self.0.borrow_mut();
            if let Some(i) = s.frames.iter().position(|f| f.pong && !f.started)
                && let Some(old) = s.frames.remove(i)
            {
                s.waiting -= old.charge;
                s.budget.release(old.charge);
            }
        }
        self.control(control_frame(
            |dst| Parser::write_message(dst, payload, OpCode::Pong, true, false),
            true,
        ));
    }

    pub(crate) fn close(&self, reason: Option<CloseReason>) {
        self.control(control_frame(
            |dst| Parser::write_close(dst, reason, false),
            false,
        ));
    }

    fn control(&self, frame: Out) {
        self.0.borrow().budget.charge(frame.charge);
        self.push(frame);
    }

    /// Queues a frame already charged.
    fn push(&self, frame: Out) {
        let waker = {
            let mut s = self.0.borrow_mut();
            if s.dropped || s.ending != Ending::Open {
                s.budget.release(frame.charge);
                return;
            }
            s.waiting += frame.charge;
            s.frames.push_back(frame);
            s.body_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Drops the frames not yet begun, and their bytes, at once.
    pub(crate) fn discard_unstarted(&self) {
        let mut s = self.0.borrow_mut();
        let mut freed = 0;
        s.frames.retain(|f| {
            if !f.started {
                freed += f.charge;
            }
            f.started
        });
        s.waiting -= freed;
        s.budget.release(freed);
    }

    /// Ends the body after the frames queued so far.
    pub(crate) fn finish(&self) {
        self.end(Ending::Finish);
    }

    /// Fails the body at its next poll and frees everything it holds.
    pub(crate) fn abort(&self) {
        self.0.borrow_mut().release_all();
        self.end(Ending::Abort);
    }

    fn end(&self, ending: Ending) {
        let waker = {
            let mut s = self.0.borrow_mut();
            if s.ending != Ending::Abort {
                s.ending = ending;
            }
            s.body_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl MessageBody for Body {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let mut s = self.0.borrow_mut();
        // Polled again: actix-http's buffer is below its limit, so what was handed before is (all
        // but that buffer) in the socket.
        let handed = mem::take(&mut s.handed);
        s.budget.release(handed);
        let out = match s.ending {
            Ending::Abort => Poll::Ready(Some(Err(io::Error::other(
                "dashboard connection aborted: the client does not read",
            )))),
            _ => match s.next_chunk() {
                Some(chunk) => Poll::Ready(Some(Ok(chunk))),
                None if s.ending == Ending::Finish => Poll::Ready(None),
                None => {
                    s.body_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            },
        };
        let waker = if s.waiting < WINDOW {
            s.task_waker.take()
        } else {
            None
        };
        drop(s);
        if let Some(waker) = waker {
            waker.wake();
        }
        out
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.0.borrow_mut();
            s.dropped = true;
            s.release_all();
            s.task_waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
