//! Rate limits: the contract's 429 `rate_limited` with `Retry-After`. GCRA limiters from `governor`,
//! keyed by client address, session or API key, each configurable in `[limits]` (requests per
//! minute, with a burst of the same size; 0 turns a limit off).
//!
//! Memory stays bounded: the sweep prunes keys whose budget is full again (`retain_recent`), and a
//! limiter that still holds [`MAX_KEYS`] keys refuses new work rather than grow (a flood of distinct
//! keys is itself the attack). The per-session limiter is consulted only after the per-address one
//! let the request through, so one address cannot mint session keys faster than its own budget.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::LimitSettings;

/// Most keys one limiter tracks.
pub const MAX_KEYS: usize = 100_000;

/// governor's keyed limiter on a `DashMap`, with clock `C`.
type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One keyed limit (or none, when configured 0).
pub struct Limit<K: Hash + Eq + Clone, C: Clock = MonotonicClock> {
    limiter: Option<Keyed<K, C>>,
    clock: C,
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> Limit<K, C> {
    /// `per_minute` requests a minute per key, in bursts of up to as many; 0 = unlimited.
    pub fn per_minute(per_minute: u32, clock: C) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|n| {
            RateLimiter::new(
                Quota::per_minute(n).allow_burst(n),
                DashMapStateStore::default(),
                clock.clone(),
            )
        });
        Self { limiter, clock }
    }

    /// Takes one unit of `key`'s budget; `Err(retry_after)` when there is none left.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.len() >= MAX_KEYS {
            limiter.retain_recent();
            if limiter.len() >= MAX_KEYS {
                tracing::warn!(
                    keys = MAX_KEYS,
                    "rate limiter full: refusing until it drains"
                );
                return Err(Duration::from_secs(1));
            }
        }
        limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets keys whose budget is full again.
    pub fn prune(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys tracked now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, RateLimiter::len)
    }
}

/// Every limit of the service. Cheap to clone.
#[derive(Clone)]
pub struct RateLimits(Arc<Limits>);

struct Limits {
    reconnect_per_session: Limit<String>,
    reconnect_per_address: Limit<IpAddr>,
    failed_auth_per_address: Limit<IpAddr>,
    /// Addresses that spent their failed-auth budget, until when: refused even with the right key,
    /// or the budget would only change the answer to a guess, not stop the guessing.
    locked_out: Mutex<HashMap<IpAddr, Instant>>,
    tokens_per_key: Limit<()>,
    tickets_per_key: Limit<()>,
    ws_connects_per_address: Limit<IpAddr>,
    sessions_per_key: Limit<()>,
    trusted_proxies: Vec<IpAddr>,
    penalty: Duration,
}

/// What a limited request is answered: 429 with `Retry-After: retry_after`, held back for
/// `penalty` first.
#[derive(Debug, Clone, Copy)]
pub struct Limited {
    /// When the budget allows again.
    pub retry_after: Duration,
    /// How long the answer is held back (zero: at once).
    pub penalty: Duration,
}

impl Limited {
    /// A refusal answered at once.
    pub fn now(retry_after: Duration) -> Self {
        Self {
            retry_after,
            penalty: Duration::ZERO,
        }
    }
}

fn check<K: Hash + Eq + Clone>(limit: &Limit<K>, key: &K) -> Result<(), Limited> {
    limit.check(key).map_err(Limited::now)
}

impl RateLimits {
    /// The limits of `[limits]`.
    pub fn new(settings: &LimitSettings) -> Self {
        let trusted_proxies = settings
            .trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        Self(Arc::new(Limits {
            reconnect_per_session: Limit::per_minute(
                settings.reconnect_per_session,
                MonotonicClock,
            ),
            reconnect_per_address: Limit::per_minute(
                settings.reconnect_per_address,
                MonotonicClock,
            ),
            failed_auth_per_address: Limit::per_minute(
                settings.failed_auth_per_address,
                MonotonicClock,
            ),
            locked_out: Mutex::default(),
            tokens_per_key: Limit::per_minute(settings.tokens_per_key, MonotonicClock),
            tickets_per_key: Limit::per_minute(settings.tickets_per_key, MonotonicClock),
            ws_connects_per_address: Limit::per_minute(
                settings.ws_connects_per_address,
                MonotonicClock,
            ),
            sessions_per_key: Limit::per_minute(settings.sessions_per_key, MonotonicClock),
            trusted_proxies,
            penalty: Duration::from_millis(settings.penalty_ms),
        }))
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the nearest address in
    /// `X-Forwarded-For` that is not one (a client can prepend anything, so the list is read from
    /// the right).
    pub fn client(&self, req: &HttpRequest) -> IpAddr {
        let peer = req
            .peer_addr()
            .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        if !self.0.trusted_proxies.contains(&peer) {
            return peer;
        }
        req.headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map_while(|s| s.trim().parse::<IpAddr>().ok())
            .find(|ip| !self.0.trusted_proxies.contains(ip))
            .unwrap_or(peer)
    }

    /// A refusal of an address that is over its budget: held back until the budget allows one more
    /// request, at most for the penalty. A flood over the connections the per-address cap allows
    /// then waits for its answers instead of taking the CPU the other clients need (tether-bench's
    /// flood: the flood's rate halves and a legitimate client's p99 stays within 2× its quiet one).
    fn penalized(&self, retry_after: Duration) -> Limited {
        Limited {
            retry_after,
            penalty: self.0.penalty.min(retry_after),
        }
    }

    /// A reconnect attempt from `client`, whatever it carries.
    pub fn reconnect_from(&self, client: IpAddr) -> Result<(), Limited> {
        self.0
            .reconnect_per_address
            .check(&client)
            .map_err(|wait| self.penalized(wait))
    }

    /// A reconnect attempt for `session` with a token that verified as issued for it. Garbage does
    /// not count here: anyone can aim it at a session's id, and it must not lock the real client out.
    pub fn reconnect_of(&self, session: &str) -> Result<(), Limited> {
        check(&self.0.reconnect_per_session, &session.to_owned())
    }

    /// Refuses an address that spent its failed-auth budget, whatever it presents now.
    pub fn auth_allowed(&self, client: IpAddr) -> Result<(), Limited> {
        let mut locked = self
            .0
            .locked_out
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match locked.get(&client) {
            Some(until) if *until > now => Err(self.penalized(*until - now)),
            Some(_) => {
                locked.remove(&client);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed credential from `client`; `Err` once its budget is spent (it is then locked
    /// out until the budget allows again).
    pub fn auth_failed(&self, client: IpAddr) -> Result<(), Limited> {
        let Err(wait) = self.0.failed_auth_per_address.check(&client) else {
            return Ok(());
        };
        let mut locked = self
            .0
            .locked_out
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if locked.len() >= MAX_KEYS {
            locked.retain(|_, until| *until > now);
        }
        if locked.len() < MAX_KEYS {
            locked.insert(client, now + wait);
        }
        Err(self.penalized(wait))
    }

    /// A token mint (per API key; there is one key).
    pub fn token(&self) -> Result<(), Limited> {
        check(&self.0.tokens_per_key, &())
    }

    /// A WebSocket ticket (per API key).
    pub fn ticket(&self) -> Result<(), Limited> {
        check(&self.0.tickets_per_key, &())
    }

    /// A dashboard connection attempt from `client`.
    pub fn ws_connect(&self, client: IpAddr) -> Result<(), Limited> {
        self.0
            .ws_connects_per_address
            .check(&client)
            .map_err(|wait| self.penalized(wait))
    }

    /// A session creation (per API key).
    pub fn session(&self) -> Result<(), Limited> {
        check(&self.0.sessions_per_key, &())
    }

    /// Forgets what no longer limits anyone (run by the sweep).
    pub fn prune(&self) {
        let l = &self.0;
        l.reconnect_per_session.prune();
        l.reconnect_per_address.prune();
        l.failed_auth_per_address.prune();
        l.tokens_per_key.prune();
        l.tickets_per_key.prune();
        l.ws_connects_per_address.prune();
        l.sessions_per_key.prune();
        let now = Instant::now();
        l.locked_out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_for_refill() {
        let clock = FakeRelativeClock::default();
        let limit: Limit<u8, _> = Limit::per_minute(3, clock.clone());
        for _ in 0..3 {
            assert!(limit.check(&1).is_ok());
        }
        let wait = limit.check(&1).unwrap_err();
        assert_eq!(
            wait,
            Duration::from_secs(20),
            "one unit refills every 60/3 s"
        );
        assert!(limit.check(&2).is_ok(), "keys are independent");
        clock.advance(Duration::from_secs(20));
        assert!(limit.check(&1).is_ok());
        assert!(limit.check(&1).is_err());
    }

    #[test]
    fn zero_means_unlimited_and_pruning_forgets_idle_keys() {
        let clock = FakeRelativeClock::default();
        let off: Limit<u8, _> = Limit::per_minute(0, clock.clone());
        for _ in 0..1000 {
            assert!(off.check(&1).is_ok());
        }
        let limit: Limit<u32, _> = Limit::per_minute(10, clock.clone());
        for k in 0..500 {
            limit.check(&k).unwrap();
        }
        assert_eq!(limit.len(), 500);
        clock.advance(Duration::from_secs(60));
        limit.prune();
        assert_eq!(limit.len(), 0, "full budgets are forgotten");
    }
}
