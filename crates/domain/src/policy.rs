//! The timing rules of a session's life, validated together so that no configuration can make the
//! reaper end sessions whose tokens are still valid (a defect of the service Tether replaces).

use std::time::Duration;

use crate::error::Error;

/// Longest allowed grace window for a lost reconnect response.
pub const MAX_GRACE: Duration = Duration::from_secs(30);

/// Default for [`Policy::activity_interval`].
pub const DEFAULT_ACTIVITY_INTERVAL: Duration = Duration::from_secs(1);

/// Idle, reap, token lifetime, grace and the heartbeat write interval, checked against each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    idle_after: Duration,
    reap_after: Duration,
    token_lifetime: Duration,
    grace: Duration,
    activity_interval: Duration,
}

impl Policy {
    /// The defaults of the design: idle after 5 min, reap after 30, tokens live 15, no grace.
    pub fn defaults() -> Self {
        Self {
            idle_after: Duration::from_secs(5 * 60),
            reap_after: Duration::from_secs(30 * 60),
            token_lifetime: Duration::from_secs(15 * 60),
            grace: Duration::ZERO,
            activity_interval: DEFAULT_ACTIVITY_INTERVAL,
        }
    }

    /// Validates a policy.
    ///
    /// # Errors
    /// [`Error::Policy`] when a duration is zero, `reap_after` is not longer than `idle_after`,
    /// `reap_after` is shorter than `token_lifetime`, or `grace` exceeds [`MAX_GRACE`].
    pub fn new(
        idle_after: Duration,
        reap_after: Duration,
        token_lifetime: Duration,
        grace: Duration,
    ) -> Result<Self, Error> {
        if idle_after.is_zero() || reap_after.is_zero() || token_lifetime.is_zero() {
            return Err(Error::Policy(
                "idle_after, reap_after and the token lifetime must be positive".into(),
            ));
        }
        if reap_after <= idle_after {
            return Err(Error::Policy(format!(
                "reap_after ({}s) must be longer than idle_after ({}s)",
                reap_after.as_secs(),
                idle_after.as_secs()
            )));
        }
        if reap_after < token_lifetime {
            return Err(Error::Policy(format!(
                "reap_after ({}s) must not be shorter than the token lifetime ({}s): sessions would \
                 end while their reconnect tokens are still valid",
                reap_after.as_secs(),
                token_lifetime.as_secs()
            )));
        }
        if grace > MAX_GRACE {
            return Err(Error::Policy(format!(
                "the reconnect grace window must be at most {}s",
                MAX_GRACE.as_secs()
            )));
        }
        Ok(Self {
            idle_after,
            reap_after,
            token_lifetime,
            grace,
            activity_interval: DEFAULT_ACTIVITY_INTERVAL.min(idle_after),
        })
    }

    /// The same policy with heartbeats written at most once per `interval` per session (see
    /// [`SessionManager::heartbeat`](crate::SessionManager::heartbeat)); zero writes every one.
    ///
    /// # Errors
    /// [`Error::Policy`] when `interval` is not shorter than `idle_after`: idle decisions would be
    /// off by more than the idle window itself.
    pub fn with_activity_interval(mut self, interval: Duration) -> Result<Self, Error> {
        if interval >= self.idle_after {
            return Err(Error::Policy(format!(
                "the activity write interval ({} ms) must be shorter than idle_after ({}s)",
                interval.as_millis(),
                self.idle_after.as_secs()
            )));
        }
        self.activity_interval = interval;
        Ok(self)
    }

    /// Inactivity after which an active session becomes idle.
    pub fn idle_after(&self) -> Duration {
        self.idle_after
    }
    /// Inactivity after which a session is ended.
    pub fn reap_after(&self) -> Duration {
        self.reap_after
    }
    /// How long a reconnect token lives.
    pub fn token_lifetime(&self) -> Duration {
        self.token_lifetime
    }
    /// Window in which the previous token may be retried idempotently (zero = off).
    pub fn grace(&self) -> Duration {
        self.grace
    }
    /// At most one heartbeat write per session per this interval.
    pub fn activity_interval(&self) -> Duration {
        self.activity_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 60;

    fn p(idle: u64, reap: u64, life: u64, grace: u64) -> Result<Policy, Error> {
        Policy::new(
            Duration::from_secs(idle),
            Duration::from_secs(reap),
            Duration::from_secs(life),
            Duration::from_secs(grace),
        )
    }

    #[test]
    fn defaults_are_valid() {
        let d = Policy::defaults();
        assert!(p(5 * M, 30 * M, 15 * M, 0).is_ok_and(|x| x == d));
    }

    #[test]
    fn reap_window_shorter_than_token_lifetime_is_refused() {
        // The legacy service reaped after 5 minutes while tokens lived 15.
        let err = p(M, 5 * M, 15 * M, 0).unwrap_err();
        assert!(
            matches!(err, Error::Policy(ref m) if m.contains("token lifetime")),
            "{err}"
        );
        assert!(p(M, 15 * M, 15 * M, 0).is_ok(), "equal is allowed");
    }

    #[test]
    fn other_bad_combinations_are_refused() {
        assert!(p(0, 30 * M, 15 * M, 0).is_err());
        assert!(p(30 * M, 30 * M, 15 * M, 0).is_err());
        assert!(p(5 * M, 30 * M, 0, 0).is_err());
        assert!(p(5 * M, 30 * M, 15 * M, 31).is_err());
        assert!(p(5 * M, 30 * M, 15 * M, 30).is_ok());
    }
}
