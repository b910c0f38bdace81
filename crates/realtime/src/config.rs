//! The hub's tunables. Plain values: the `api` crate reads its configuration file and fills this in, so
//! this crate never sees a file or an environment variable.

use std::time::Duration;

use crate::error::Error;

/// How the hub and its WebSocket connections behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealtimeConfig {
    /// Messages a connection may have waiting before it counts as a slow consumer and is closed with
    /// 1013 `slow_consumer`. A count, not a size: [`max_buffered_bytes`](Self::max_buffered_bytes)
    /// is what bounds the memory one dashboard can hold.
    pub queue_capacity: usize,
    /// Period of `health_update` messages.
    pub health_interval: Duration,
    /// Period of server pings; a connection with no pong for two periods is closed.
    pub ping_interval: Duration,
    /// Largest inbound frame, in bytes; a larger one closes the connection with 1009.
    pub max_frame: usize,
    /// Bytes of messages one connection may hold, from the moment the hub hands a message over until
    /// it has been written towards the socket (its queue, its response body, actix-http's buffer
    /// but for at most about 48 KiB); past it the connection is closed with 1013 `slow_consumer`
    /// and its buffers are freed. A connection that holds nothing still takes one message larger
    /// than this. The kernel's socket buffers come on top (bounded by the system's `tcp_wmem`).
    pub max_buffered_bytes: usize,
    /// Period of an unprompted re-read of the feed: the safety net should a wake-up be lost.
    pub poll_interval: Duration,
    /// How long a hole in the outbox's `seq` (an id taken by a transaction that has not committed, or
    /// never will) holds back delivery before it is skipped.
    pub gap_timeout: Duration,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 256,
            health_interval: Duration::from_secs(5),
            ping_interval: Duration::from_secs(20),
            max_frame: 4096,
            max_buffered_bytes: 4 * 1024 * 1024,
            poll_interval: Duration::from_secs(1),
            gap_timeout: Duration::from_secs(5),
        }
    }
}

impl RealtimeConfig {
    /// Checks the values that the runtime would otherwise panic on (a zero-capacity channel, a zero
    /// period).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first offending field.
    pub fn validate(&self) -> Result<(), Error> {
        let zero = [
            ("queue_capacity", self.queue_capacity == 0),
            ("health_interval", self.health_interval.is_zero()),
            ("ping_interval", self.ping_interval.is_zero()),
            ("max_frame", self.max_frame == 0),
            ("max_buffered_bytes", self.max_buffered_bytes == 0),
            ("poll_interval", self.poll_interval.is_zero()),
        ];
        match zero.into_iter().find(|(_, bad)| *bad) {
            Some((field, _)) => Err(Error::InvalidConfig(field)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let c = RealtimeConfig::default();
        assert_eq!(c.queue_capacity, 256);
        assert_eq!(c.max_frame, 4096);
        assert_eq!(c.max_buffered_bytes, 4 << 20);
        assert_eq!(c.ping_interval, Duration::from_secs(20));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn zero_values_are_refused_by_name() {
        let c = RealtimeConfig {
            queue_capacity: 0,
            ..RealtimeConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(Error::InvalidConfig("queue_capacity"))
        ));
        let c = RealtimeConfig {
            poll_interval: Duration::ZERO,
            ..RealtimeConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(Error::InvalidConfig("poll_interval"))
        ));
    }
}
