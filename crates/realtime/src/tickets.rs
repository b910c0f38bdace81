//! Single-use, short-lived tickets that let a browser open the WebSocket: a browser cannot set an
//! `Authorization` header on a WebSocket, so a page that holds the API key's session trades it
//! (`POST /ws/ticket`) for a ticket and puts that in `?ticket=`.
//!
//! Kept in memory: a ticket is redeemable only on the instance that minted it (behind a load balancer,
//! the mint and the upgrade must reach the same instance, or the balancer must be sticky). Memory is
//! bounded: expired tickets are pruned at every mint and at most a fixed number may be outstanding.
//!
//! A ticket is 32 random bytes in hex. The first 16 select the entry (a map key); the last 16 are
//! compared in constant time, so the lookup's timing says nothing about the secret half.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tether_domain::{Clock, Timestamp};

use crate::error::Error;

/// Default cap on outstanding tickets.
pub const MAX_OUTSTANDING_TICKETS: usize = 10_000;

const SELECTOR: usize = 16;
const VERIFIER: usize = 16;
const TICKET_BYTES: usize = SELECTOR + VERIFIER;

/// A freshly minted ticket. Its `Debug` is redacted: it is a credential until redeemed or expired.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    text: String,
    expires_at: Timestamp,
}

impl Ticket {
    /// The ticket text (64 lowercase hex characters), for the one response that carries it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// When it stops being redeemable.
    pub fn expires_at(&self) -> Timestamp {
        self.expires_at
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("text", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

struct Outstanding {
    verifier: [u8; VERIFIER],
    expires_at: Timestamp,
}

/// The ticket office of one instance.
pub struct Tickets {
    clock: Arc<dyn Clock>,
    ttl: Duration,
    limit: usize,
    outstanding: Mutex<HashMap<[u8; SELECTOR], Outstanding>>,
}

impl fmt::Debug for Tickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tickets")
            .field("ttl", &self.ttl)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Tickets {
    /// A ticket office whose tickets live `ttl`, with at most [`MAX_OUTSTANDING_TICKETS`] outstanding.
    pub fn new(clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        Self::with_limit(clock, ttl, MAX_OUTSTANDING_TICKETS)
    }

    /// The same with another cap on outstanding tickets.
    pub fn with_limit(clock: Arc<dyn Clock>, ttl: Duration, limit: usize) -> Self {
        Self {
            clock,
            ttl,
            limit,
            outstanding: Mutex::new(HashMap::new()),
        }
    }

    /// Mints a ticket valid for the configured lifetime.
    ///
    /// # Errors
    /// [`Error::TooManyTickets`] when the cap is reached (after pruning expired ones),
    /// [`Error::Random`] if the system's random generator fails.
    pub fn mint(&self) -> Result<Ticket, Error> {
        let mut bytes = [0u8; TICKET_BYTES];
        getrandom::fill(&mut bytes).map_err(Error::Random)?;
        let (selector, verifier) = split(&bytes);
        let now = self.clock.now();
        let expires_at = now.plus(self.ttl);
        let mut outstanding = self.lock();
        outstanding.retain(|_, t| t.expires_at > now);
        if outstanding.len() >= self.limit {
            return Err(Error::TooManyTickets);
        }
        outstanding.insert(
            selector,
            Outstanding {
                verifier,
                expires_at,
            },
        );
        Ok(Ticket {
            text: hex(&bytes),
            expires_at,
        })
    }

    /// True exactly once for a ticket this office minted, and only before it expires.
    pub fn redeem(&self, ticket: &str) -> bool {
        let Some(bytes) = unhex(ticket) else {
            return false;
        };
        let (selector, verifier) = split(&bytes);
        let now = self.clock.now();
        let mut outstanding = self.lock();
        let Some(entry) = outstanding.get(&selector) else {
            return false;
        };
        if !ct_eq(&entry.verifier, &verifier) {
            // Left in place: a wrong guess must not burn someone else's ticket.
            return false;
        }
        let live = entry.expires_at > now;
        outstanding.remove(&selector);
        live
    }

    /// Tickets minted and neither redeemed nor pruned yet.
    pub fn outstanding(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; SELECTOR], Outstanding>> {
        // The map is valid after any panic (each operation is one insert or remove), so poisoning
        // is ignored rather than turned into an outage.
        self.outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn split(bytes: &[u8; TICKET_BYTES]) -> ([u8; SELECTOR], [u8; VERIFIER]) {
    let mut selector = [0u8; SELECTOR];
    let mut verifier = [0u8; VERIFIER];
    selector.copy_from_slice(&bytes[..SELECTOR]);
    verifier.copy_from_slice(&bytes[SELECTOR..]);
    (selector, verifier)
}

/// Compares without an early exit, so the time taken does not depend on where the first difference is.
fn ct_eq(a: &[u8; VERIFIER], b: &[u8; VERIFIER]) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.ct_eq(b))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

fn unhex(text: &str) -> Option<[u8; TICKET_BYTES]> {
    let text = text.as_bytes();
    if text.len() != TICKET_BYTES * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; TICKET_BYTES];
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_domain::ManualClock;

    fn office(ttl: u64) -> (Arc<ManualClock>, Tickets) {
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_000)));
        let tickets = Tickets::new(clock.clone(), Duration::from_secs(ttl));
        (clock, tickets)
    }

    #[test]
    fn redeems_once() {
        let (_, tickets) = office(30);
        let t = tickets.mint().unwrap();
        assert_eq!(t.as_str().len(), 64);
        assert!(t.as_str().bytes().all(|b| HEX.contains(&b)));
        assert_eq!(t.expires_at(), Timestamp::from_secs(1_030));
        assert!(tickets.redeem(t.as_str()));
        assert!(!tickets.redeem(t.as_str()));
        assert_eq!(tickets.outstanding(), 0);
    }

    #[test]
    fn expired_tickets_are_refused_and_pruned() {
        let (clock, tickets) = office(30);
        let t = tickets.mint().unwrap();
        clock.advance(Duration::from_secs(30));
        assert!(!tickets.redeem(t.as_str()), "expired at exactly ttl");

        let old = tickets.mint().unwrap();
        clock.advance(Duration::from_secs(31));
        let _new = tickets.mint().unwrap();
        assert_eq!(tickets.outstanding(), 1, "the expired one was pruned");
        assert!(!tickets.redeem(old.as_str()));
    }

    #[test]
    fn unknown_malformed_and_forged_tickets_are_refused() {
        let (_, tickets) = office(30);
        let t = tickets.mint().unwrap();
        assert!(!tickets.redeem(""));
        assert!(!tickets.redeem("zz"));
        assert!(!tickets.redeem(&"0".repeat(64)));
        assert!(!tickets.redeem(&t.as_str().to_uppercase()));
        // Right selector, wrong verifier: refused, and the real ticket survives the attempt.
        let mut forged = t.as_str()[..32].to_owned();
        forged.push_str(&"0".repeat(32));
        assert!(!tickets.redeem(&forged));
        assert!(tickets.redeem(t.as_str()));
    }

    #[test]
    fn outstanding_tickets_are_capped() {
        let clock = Arc::new(ManualClock::new(Timestamp::from_secs(0)));
        let tickets = Tickets::with_limit(clock.clone(), Duration::from_secs(30), 2);
        let a = tickets.mint().unwrap();
        tickets.mint().unwrap();
        assert!(matches!(tickets.mint(), Err(Error::TooManyTickets)));
        assert!(tickets.redeem(a.as_str()));
        tickets.mint().unwrap();
        clock.advance(Duration::from_secs(31));
        tickets.mint().unwrap();
        assert_eq!(tickets.outstanding(), 1);
    }

    #[test]
    fn debug_is_redacted() {
        let (_, tickets) = office(30);
        let t = tickets.mint().unwrap();
        let shown = format!("{t:?}");
        assert!(!shown.contains(t.as_str()), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn hex_round_trips() {
        let bytes: [u8; TICKET_BYTES] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
    }
}
