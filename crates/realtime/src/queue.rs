//! A connection's queue: the messages the pump pushes to it, in order, at most `capacity` of them.
//!
//! tokio's bounded `mpsc` did this before, but it allocates its channel (with a semaphore) and a
//! first block of 32 slots when it is created, about 1 KiB per connection before any message: 10 MiB
//! at 10,000 dashboards, a sixteenth of the 16 KiB a dashboard may hold. Here the shared state is
//! one small allocation, and the buffer grows only with what is queued and is given back after a
//! burst. One sender (the pump's registry entry), one receiver (the connection).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use futures_util::task::AtomicWaker;

use crate::message::Text;

/// Messages a queue keeps room for once drained: enough for the usual few in flight, so that a
/// steady stream does not reallocate, small enough that an idle dashboard holds almost nothing.
const KEPT: usize = 4;

/// Why a push was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `capacity` messages are waiting.
    Full,
    /// The receiver has closed the queue or is gone.
    Closed,
}

struct State {
    items: VecDeque<Text>,
    capacity: usize,
    /// The receiver closed the queue (or was dropped): pushes are refused.
    closed: bool,
    /// The sender was dropped: once drained, the receiver gets `None`.
    sender_gone: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The receiver's task, woken by a push and by the sender's drop.
    waker: AtomicWaker,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing is left half-done under the lock: a panic elsewhere leaves the state usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The pump's end.
pub(crate) struct Sender(Arc<Shared>);

/// The connection's end.
pub(crate) struct Receiver(Arc<Shared>);

/// A queue of at most `capacity` messages.
pub(crate) fn queue(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            capacity,
            closed: false,
            sender_gone: false,
        }),
        waker: AtomicWaker::new(),
    });
    (Sender(Arc::clone(&shared)), Receiver(shared))
}

impl Sender {
    /// Queues `text` without waiting.
    pub(crate) fn try_send(&self, text: Text) -> Result<(), Refused> {
        {
            let mut state = self.0.lock();
            if state.closed {
                return Err(Refused::Closed);
            }
            if state.items.len() >= state.capacity {
                return Err(Refused::Full);
            }
            state.items.push_back(text);
        }
        self.0.waker.wake();
        Ok(())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.lock().sender_gone = true;
        self.0.waker.wake();
    }
}

impl Receiver {
    /// The next message; `None` once the sender is gone and everything it queued was taken.
    /// Cancel-safe: a message is taken only when this resolves.
    pub(crate) async fn recv(&mut self) -> Option<Text> {
        poll_fn(|cx| {
            // Registered before looking, so that a push after the look wakes this task.
            self.0.waker.register(cx.waker());
            let mut state = self.0.lock();
            match take(&mut state) {
                Some(text) => Poll::Ready(Some(text)),
                None if state.sender_gone => Poll::Ready(None),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// The next message if one is waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Text> {
        take(&mut self.0.lock())
    }

    /// Refuses further pushes; what is already queued can still be taken.
    pub(crate) fn close(&mut self) {
        self.0.lock().closed = true;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.close();
    }
}

/// Pops the oldest message, giving the buffer back once a burst has drained.
fn take(state: &mut State) -> Option<Text> {
    let text = state.items.pop_front()?;
    if state.items.is_empty() && state.items.capacity() > KEPT {
        state.items.shrink_to(KEPT);
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn text(s: &str) -> Text {
        Arc::from(s)
    }

    #[tokio::test]
    async fn messages_come_out_in_order_up_to_the_capacity() {
        let (tx, mut rx) = queue(2);
        tx.try_send(text("a")).unwrap();
        tx.try_send(text("b")).unwrap();
        assert_eq!(tx.try_send(text("c")), Err(Refused::Full));
        assert_eq!(rx.recv().await.as_deref(), Some("a"));
        tx.try_send(text("c")).unwrap();
        assert_eq!(rx.recv().await.as_deref(), Some("b"));
        assert_eq!(rx.try_recv().as_deref(), Some("c"));
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_push_and_by_the_senders_drop() {
        let (tx, mut rx) = queue(8);
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await;
            let end = rx.recv().await;
            (first, end)
        });
        tokio::task::yield_now().await;
        tx.try_send(text("a")).unwrap();
        drop(tx);
        let (first, end) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!((first.as_deref(), end), (Some("a"), None));
    }

    #[tokio::test]
    async fn what_was_queued_before_the_sender_went_is_still_received() {
        let (tx, mut rx) = queue(8);
        tx.try_send(text("a")).unwrap();
        drop(tx);
        assert_eq!(rx.recv().await.as_deref(), Some("a"));
        assert_eq!(rx.recv().await, None);
    }

    #[test]
    fn a_closed_queue_refuses_pushes_but_keeps_what_it_holds() {
        let (tx, mut rx) = queue(8);
        tx.try_send(text("a")).unwrap();
        rx.close();
        assert_eq!(tx.try_send(text("b")), Err(Refused::Closed));
        assert_eq!(rx.try_recv().as_deref(), Some("a"));
        drop(rx);
        let (tx, rx) = queue(8);
        drop(rx);
        assert_eq!(tx.try_send(text("b")), Err(Refused::Closed));
    }

    #[test]
    fn the_buffer_is_given_back_once_a_burst_has_drained() {
        let (tx, mut rx) = queue(256);
        for _ in 0..200 {
            tx.try_send(text("x")).unwrap();
        }
        assert!(rx.0.lock().items.capacity() >= 200);
        while rx.try_recv().is_some() {}
        assert!(rx.0.lock().items.capacity() <= KEPT);
    }
}
