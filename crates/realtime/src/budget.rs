//! The bytes one connection holds, counted from the moment a message is handed to it (by the pump, or
//! by the connection itself: replay, pings, pongs, the close frame) until actix-http has taken it
//! towards the socket. Shared by three parties on up to two threads: the pump charges it and decides,
//! the connection task charges its own frames and releases what it drops, the response body releases
//! what it hands over.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One connection's count, and its share of the hub-wide total.
#[derive(Debug)]
pub(crate) struct Budget {
    held: AtomicUsize,
    /// Every connection's bytes together ([`HubStats::buffered_bytes`](crate::HubStats)).
    all: Arc<AtomicUsize>,
    max: usize,
}

impl Budget {
    pub(crate) fn new(all: Arc<AtomicUsize>, max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            held: AtomicUsize::new(0),
            all,
            max,
        })
    }

    /// Bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether `bytes` more may be handed over. A connection that holds nothing takes one message of
    /// any size: otherwise a single message larger than the budget (a `health_update` with many
    /// large metadata) would close every dashboard at once.
    pub(crate) fn admits(&self, bytes: usize) -> bool {
        let held = self.held();
        held == 0 || held.saturating_add(bytes) <= self.max
    }

    pub(crate) fn charge(&self, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::Relaxed);
        self.all.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Gives back bytes charged earlier; every charge is released exactly once, or by `Drop`.
    pub(crate) fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.held.fetch_sub(bytes, Ordering::Relaxed);
        self.all.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        // Whatever the parties did not release explicitly, once none of them can charge any more.
        self.all.fetch_sub(*self.held.get_mut(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_count_towards_the_total_until_released_or_dropped() {
        let all = Arc::new(AtomicUsize::new(0));
        let a = Budget::new(all.clone(), 100);
        let b = Budget::new(all.clone(), 100);
        a.charge(60);
        b.charge(10);
        assert_eq!(all.load(Ordering::Relaxed), 70);
        assert!(a.admits(40));
        assert!(!a.admits(41));
        a.release(60);
        assert_eq!((a.held(), all.load(Ordering::Relaxed)), (0, 10));
        // Holding nothing, any one message is admitted.
        assert!(a.admits(1000));
        drop(b);
        assert_eq!(all.load(Ordering::Relaxed), 0);
    }
}
