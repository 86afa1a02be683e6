//! Time as the core sees it: a point on the caller's monotonic clock, in
//! microseconds. The core never reads a clock; drivers pass `now` in.
//!
//! Arithmetic saturates, so a clock that goes back (or a driver passing an
//! older `now`) gives a zero duration, never a panic.

use core::time::Duration;

/// A point in time, in microseconds since an origin the driver chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Instant(u64);

impl Instant {
    /// The origin of the driver's clock.
    pub const ZERO: Instant = Instant(0);
    /// The latest representable time, used as "never".
    pub const MAX: Instant = Instant(u64::MAX);

    /// A time this many microseconds after the origin.
    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    /// Microseconds since the origin.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this is; zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// This time plus `d`, stopping at [`Instant::MAX`].
    pub fn saturating_add(self, d: Duration) -> Instant {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(micros))
    }

    /// This time minus `d`, stopping at [`Instant::ZERO`].
    pub fn saturating_sub(self, d: Duration) -> Instant {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_sub(micros))
    }
}

impl core::ops::Add<Duration> for Instant {
    type Output = Instant;
    /// Saturating, like [`Instant::saturating_add`].
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl core::ops::Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating, like [`Instant::saturating_duration_since`].
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// Keeps the latest `now` a machine has seen, so that time going back is
/// clamped to the last value instead of moving timers backwards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    latest: Instant,
}

impl Clock {
    /// Records `now` and returns it, or the latest earlier value if `now` went back.
    pub fn observe(&mut self, now: Instant) -> Instant {
        if now > self.latest {
            self.latest = now;
        }
        self.latest
    }

    /// The latest time observed.
    pub fn latest(&self) -> Instant {
        self.latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_going_back_is_clamped() {
        let mut clock = Clock::default();
        assert_eq!(
            clock.observe(Instant::from_micros(10)),
            Instant::from_micros(10)
        );
        assert_eq!(
            clock.observe(Instant::from_micros(3)),
            Instant::from_micros(10)
        );
        let earlier = Instant::from_micros(3);
        assert_eq!(earlier - Instant::from_micros(10), Duration::ZERO);
    }

    #[test]
    fn arithmetic_saturates_at_the_ends() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(
            Instant::ZERO.saturating_sub(Duration::from_secs(1)),
            Instant::ZERO
        );
        assert_eq!(Instant::ZERO + Duration::MAX, Instant::MAX);
    }
}
