//! The driver's clock: the core's [`Instant`] as microseconds since the
//! driver started, read from tokio's monotonic clock.

use std::time::Duration;

use tryst_core::time::Instant;

/// Maps tokio's clock to the core's microsecond [`Instant`] and back.
#[derive(Debug, Clone, Copy)]
pub struct DriverClock {
    origin: tokio::time::Instant,
}

impl Default for DriverClock {
    fn default() -> Self {
        DriverClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl DriverClock {
    /// The current time, for a `handle_*` call.
    pub fn now(&self) -> Instant {
        let micros = self.origin.elapsed().as_micros();
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// When to wake for a machine's `poll_timeout`; far away for `None`.
    pub fn deadline(&self, at: Option<Instant>) -> tokio::time::Instant {
        match at {
            Some(at) => self.origin + Duration::from_micros(at.as_micros()),
            // A day is "never" for a loop that also wakes on every input.
            None => tokio::time::Instant::now() + Duration::from_secs(86_400),
        }
    }
}
