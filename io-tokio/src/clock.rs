//! The driver's clock: the core's [`Instant`] as microseconds since an
//! origin, read from tokio's monotonic clock.
//!
//! The default origin is the driver's start. A server whose durable facts
//! carry times ([`DriverClock::wall`]) counts from the Unix epoch instead,
//! so the times it stored before a restart still mean the same thing after.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tryst_core::time::Instant;

/// Maps tokio's clock to the core's microsecond [`Instant`] and back.
#[derive(Debug, Clone, Copy)]
pub struct DriverClock {
    origin: tokio::time::Instant,
    /// The core time at `origin`, in microseconds.
    offset_micros: u64,
}

impl Default for DriverClock {
    fn default() -> Self {
        DriverClock {
            origin: tokio::time::Instant::now(),
            offset_micros: 0,
        }
    }
}

impl DriverClock {
    /// A clock whose `Instant`s are microseconds since the Unix epoch (read
    /// once from the system clock, then advanced by the monotonic clock).
    pub fn wall() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        DriverClock {
            origin: tokio::time::Instant::now(),
            offset_micros: u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// The current time, for a `handle_*` call.
    pub fn now(&self) -> Instant {
        let micros = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        Instant::from_micros(self.offset_micros.saturating_add(micros))
    }

    /// When to wake for a machine's `poll_timeout`; far away for `None`.
    pub fn deadline(&self, at: Option<Instant>) -> tokio::time::Instant {
        match at {
            Some(at) => {
                let after =
                    Duration::from_micros(at.as_micros().saturating_sub(self.offset_micros));
                self.origin
                    .checked_add(after)
                    .map_or_else(never, |d| d.min(never()))
            }
            None => never(),
        }
    }
}

/// A day from now: "never" for a loop that also wakes on every input.
fn never() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}
