//! The frame header check and the body's accounting, polled by hand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Waker;

use actix_http::ws::CloseCode;

use super::*;

#[test]
fn declared_len_reads_every_header_form_once_it_has_arrived() {
    assert_eq!(declared_len(&[]), None);
    assert_eq!(declared_len(&[0x81]), None);
    assert_eq!(declared_len(&[0x81, 0x80 | 5]), Some(5));
    assert_eq!(declared_len(&[0x81, 0x80 | 126, 0x10]), None);
    assert_eq!(declared_len(&[0x81, 0x80 | 126, 0x10, 0x01]), Some(4097));
    let mut huge = vec![0x82, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes()[..7]);
    assert_eq!(declared_len(&huge), None, "one byte of the length missing");
    huge.push(0);
    assert_eq!(declared_len(&huge), Some(1 << 40));
}

struct Harness {
    all: Arc<AtomicUsize>,
    budget: Arc<Budget>,
    out: Outbound,
    body: Body,
}

fn harness() -> Harness {
    let all = Arc::new(AtomicUsize::new(0));
    let budget = Budget::new(all.clone(), 1 << 30);
    let (out, body) = outbound(budget.clone());
    Harness {
        all,
        budget,
        out,
        body,
    }
}

impl Harness {
    fn poll(&mut self) -> Poll<Option<Result<Bytes, io::Error>>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.body).poll_next(&mut cx)
    }

    /// Everything the body hands over until it has nothing (or ends).
    fn drain(&mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        while let Poll::Ready(Some(Ok(chunk))) = self.poll() {
            assert!(chunk.len() <= CHUNK);
            wire.extend_from_slice(&chunk);
        }
        wire
    }

    fn all(&self) -> usize {
        self.all.load(Ordering::Relaxed)
    }
}

#[test]
fn a_large_message_is_framed_sliced_and_counted_until_the_next_poll() {
    let mut h = harness();
    let text: Text = "x".repeat(100_000).into();
    h.budget.charge(text.len()); // as the pump does
    h.out.text(text, true);
    assert_eq!(h.all(), 100_000);
    let mut wire = Vec::new();
    loop {
        let Poll::Ready(Some(Ok(chunk))) = h.poll() else {
            break;
        };
        wire.extend_from_slice(&chunk);
        if wire.len() < 100_010 {
            assert_eq!(
                h.all(),
                100_000,
                "counted while any of it is being handed over"
            );
        }
    }
    // The poll after the last slice is actix-http asking for more: released.
    assert_eq!(h.all(), 0);
    assert_eq!(&wire[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x86, 0xa0]);
    assert_eq!(wire.len(), 100_010);
}

#[test]
fn the_connection_takes_more_only_when_the_body_has_room() {
    let mut h = harness();
    let room = |h: &Harness| {
        let mut cx = Context::from_waker(Waker::noop());
        std::pin::pin!(h.out.room()).poll(&mut cx).is_ready()
    };
    assert!(room(&h));
    let text: Text = "y".repeat(WINDOW).into();
    h.out.text(text, false);
    assert!(!room(&h), "a window's worth is waiting");
    h.drain();
    assert!(room(&h));
}

#[test]
fn pongs_coalesce_and_unstarted_frames_are_dropped_at_close() {
    let mut h = harness();
    for _ in 0..100 {
        h.out.pong(b"p");
    }
    assert_eq!(h.all(), 3, "one pong waits, not a hundred");
    h.out.text("a".repeat(200).into(), false);
    h.out.discard_unstarted();
    assert_eq!(h.all(), 0);
    h.out.close(Some(CloseReason {
        code: CloseCode::Again,
        description: Some("slow_consumer".into()),
    }));
    h.out.finish();
    let wire = h.drain();
    assert_eq!(&wire[..4], &[0x88, 15, 0x03, 0xf5]);
    assert!(
        matches!(h.poll(), Poll::Ready(None)),
        "ended after the close"
    );
    assert_eq!(h.all(), 0);
}

#[test]
fn an_abort_fails_the_body_and_frees_everything() {
    let mut h = harness();
    h.out.text("z".repeat(50_000).into(), false);
    assert!(matches!(h.poll(), Poll::Ready(Some(Ok(_)))));
    h.out.abort();
    assert_eq!(h.all(), 0);
    assert!(matches!(h.poll(), Poll::Ready(Some(Err(_)))));
    // Frames pushed after the end are not kept.
    h.out.text("late".into(), false);
    assert_eq!(h.all(), 0);
}

#[test]
fn dropping_the_body_frees_what_it_held_and_tells_the_connection() {
    let h = harness();
    h.out.text("q".repeat(30_000).into(), false);
    let Harness { all, out, body, .. } = h;
    drop(body);
    assert_eq!(all.load(Ordering::Relaxed), 0);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(
        std::pin::pin!(out.room()).poll(&mut cx),
        Poll::Ready(Err(Gone))
    ));
}
