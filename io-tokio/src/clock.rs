//! The driver's clock, shared with the blocking driver
//! ([`tryst_std::drive::DriverClock`]), and its deadlines as tokio's.

pub use tryst_std::drive::DriverClock;

/// When to wake for `at` (a machine's `poll_timeout`), as tokio's instant.
pub fn tokio_deadline(
    clock: &DriverClock,
    at: Option<tryst_core::time::Instant>,
) -> tokio::time::Instant {
    tokio::time::Instant::from_std(clock.deadline(at))
}
