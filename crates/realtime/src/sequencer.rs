//! Delivery strictly in `seq` order, across holes in the outbox.
//!
//! On PostgreSQL an outbox id is taken when a transaction inserts its row, not when it commits: a
//! reader can see id 8 before id 7 commits, and an aborted transaction leaves id 7 unused forever.
//! Delivering 8 at once would make 7 undeliverable (clients resume *after* the last seq they saw), so
//! the hub holds back everything past a hole until it fills or has been open for `gap_timeout`, and
//! then skips it. Pure logic (time is passed in) so it is tested without a runtime or a database.

use std::time::Duration;

use tether_domain::StoredEvent;
use tokio::time::Instant;

/// A hole right after `delivered`, and when it was first seen.
#[derive(Clone, Copy, Debug)]
struct Gap {
    expected: u64,
    since: Instant,
}

/// What one page of the feed allows to deliver now.
#[derive(Debug, Default)]
pub(crate) struct Admitted {
    /// Events to deliver, in order.
    pub(crate) ready: Vec<StoredEvent>,
    /// True when a hole stopped the page: reading on would return the same rows.
    pub(crate) blocked: bool,
}

/// The delivery position and the hole (if any) right after it.
#[derive(Debug)]
pub(crate) struct Sequencer {
    delivered: u64,
    gap: Option<Gap>,
    gap_timeout: Duration,
}

impl Sequencer {
    /// Starts after `delivered`.
    pub(crate) fn new(delivered: u64, gap_timeout: Duration) -> Self {
        Self {
            delivered,
            gap: None,
            gap_timeout,
        }
    }

    /// The last seq delivered (or skipped).
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// When the open hole, if any, will be skipped: the pump re-reads the feed then.
    pub(crate) fn gap_deadline(&self) -> Option<Instant> {
        self.gap.map(|g| g.since + self.gap_timeout)
    }

    /// Takes a page read with `events_after(self.delivered(), ..)`, oldest first.
    pub(crate) fn admit(&mut self, page: Vec<StoredEvent>, now: Instant) -> Admitted {
        let mut out = Admitted::default();
        if page.is_empty() {
            // Nothing beyond the position: no hole to wait for (a later row will reopen it).
            self.gap = None;
            return out;
        }
        for event in page {
            if event.seq <= self.delivered {
                continue;
            }
            let expected = self.delivered.saturating_add(1);
            if event.seq != expected && !self.may_skip(expected, now) {
                out.blocked = true;
                break;
            }
            if event.seq != expected {
                tracing::warn!(
                    from = expected,
                    to = event.seq - 1,
                    waited_ms = u64::try_from(self.gap_timeout.as_millis()).unwrap_or(u64::MAX),
                    "skipping a hole in the event outbox seq; those events will not reach live dashboards"
                );
            }
            self.delivered = event.seq;
            self.gap = None;
            out.ready.push(event);
        }
        out
    }

    /// Moves the position to `through` when it is ahead: those seqs were pruned from the outbox and
    /// can never be delivered. Returns whether the position moved.
    pub(crate) fn skip_through(&mut self, through: u64) -> bool {
        if through <= self.delivered {
            return false;
        }
        tracing::warn!(
            from = self.delivered + 1,
            to = through,
            "events were pruned from the outbox before live dashboards got them"
        );
        self.delivered = through;
        self.gap = None;
        true
    }

    /// Whether the hole starting at `expected` has been open long enough; opens it if new.
    fn may_skip(&mut self, expected: u64, now: Instant) -> bool {
        match self.gap {
            Some(g) if g.expected == expected => {
                now.saturating_duration_since(g.since) >= self.gap_timeout
            }
            _ => {
                self.gap = Some(Gap {
                    expected,
                    since: now,
                });
                self.gap_timeout.is_zero()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_domain::{EventKind, SessionEvent, SessionId, SessionStatus, Timestamp};

    fn ev(seq: u64) -> StoredEvent {
        StoredEvent {
            seq,
            event: SessionEvent {
                kind: EventKind::Created,
                session_id: SessionId::parse("s").unwrap(),
                at: Timestamp::from_secs(0),
                status: SessionStatus::Active,
                client_type: "t".into(),
                reconnect_count: 0,
                reason: None,
            },
        }
    }

    fn seqs(a: &Admitted) -> Vec<u64> {
        a.ready.iter().map(|e| e.seq).collect()
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[test]
    fn delivers_consecutive_events_and_ignores_old_ones() {
        let mut s = Sequencer::new(3, TIMEOUT);
        let a = s.admit(vec![ev(2), ev(3), ev(4), ev(5)], Instant::now());
        assert_eq!(seqs(&a), [4, 5]);
        assert!(!a.blocked);
        assert_eq!(s.delivered(), 5);
        assert_eq!(s.gap_deadline(), None);
    }

    #[test]
    fn holds_back_past_a_hole_until_it_fills() {
        let t0 = Instant::now();
        let mut s = Sequencer::new(1, TIMEOUT);
        let a = s.admit(vec![ev(2), ev(4), ev(5)], t0);
        assert_eq!(seqs(&a), [2]);
        assert!(a.blocked);
        assert_eq!(s.gap_deadline(), Some(t0 + TIMEOUT));
        // Still open a bit later: nothing more.
        let a = s.admit(vec![ev(4), ev(5)], t0 + Duration::from_secs(1));
        assert!(seqs(&a).is_empty() && a.blocked);
        assert_eq!(
            s.gap_deadline(),
            Some(t0 + TIMEOUT),
            "the hole keeps its first sighting"
        );
        // The late transaction commits.
        let a = s.admit(vec![ev(3), ev(4), ev(5)], t0 + Duration::from_secs(2));
        assert_eq!(seqs(&a), [3, 4, 5]);
        assert_eq!(s.gap_deadline(), None);
    }

    #[test]
    fn skips_a_hole_after_the_timeout() {
        let t0 = Instant::now();
        let mut s = Sequencer::new(0, TIMEOUT);
        assert!(s.admit(vec![ev(3)], t0).blocked);
        let a = s.admit(vec![ev(3), ev(4)], t0 + TIMEOUT);
        assert_eq!(seqs(&a), [3, 4]);
        assert_eq!(s.delivered(), 4);
        // A second hole is timed on its own.
        let a = s.admit(vec![ev(6)], t0 + TIMEOUT);
        assert!(a.blocked);
        assert_eq!(s.gap_deadline(), Some(t0 + TIMEOUT + TIMEOUT));
    }

    #[test]
    fn a_pruned_hole_is_skipped_at_once() {
        let t0 = Instant::now();
        let mut s = Sequencer::new(0, TIMEOUT);
        assert!(s.admit(vec![ev(3), ev(4)], t0).blocked);
        assert!(!s.skip_through(0), "not ahead: no move");
        assert!(s.skip_through(2));
        assert_eq!(s.gap_deadline(), None);
        assert_eq!(seqs(&s.admit(vec![ev(3), ev(4)], t0)), [3, 4]);
        assert!(!s.skip_through(3), "never backwards");
        assert_eq!(s.delivered(), 4);
    }

    #[test]
    fn an_empty_page_closes_the_hole_and_zero_timeout_never_waits() {
        let t0 = Instant::now();
        let mut s = Sequencer::new(0, TIMEOUT);
        assert!(s.admit(vec![ev(2)], t0).blocked);
        assert!(s.admit(Vec::new(), t0).ready.is_empty());
        assert_eq!(s.gap_deadline(), None);

        let mut s = Sequencer::new(0, Duration::ZERO);
        assert_eq!(seqs(&s.admit(vec![ev(2), ev(9)], t0)), [2, 9]);
    }
}
