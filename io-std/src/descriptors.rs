//! Open file descriptors, for both drivers' accept loops: what one does
//! when the process runs out (say so at WARN, at most every
//! [`DESCRIPTOR_WARN_EVERY`], and pause instead of spinning on the error).
//! Raising the limit at start is [`crate::role::raise_descriptor_limit`].

use std::time::{Duration, Instant};

/// Shortest time between two WARN lines about running out of descriptors.
pub const DESCRIPTOR_WARN_EVERY: Duration = Duration::from_secs(10);
/// How long an accept loop pauses after the process ran out of
/// descriptors (`EMFILE`/`ENFILE`), so it cannot spin on the error.
pub const DESCRIPTOR_PAUSE: Duration = Duration::from_millis(100);
/// How long it pauses after any other accept error.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Whether an accept error means the process or system is out of descriptors.
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
            || code == rustix::io::Errno::NFILE.raw_os_error()
    )
}

/// An accept loop's account of its failed accepts: logs them (descriptors
/// at WARN, rate-limited; others at DEBUG) and says how long to pause.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    warned: Option<Instant>,
    failed_since_warn: u64,
}

impl AcceptErrors {
    /// Counts and logs one failed accept; how long to pause before the next.
    pub fn failed(&mut self, e: &std::io::Error) -> Duration {
        if !out_of_descriptors(e) {
            tracing::debug!(error = %e, "accept failed");
            return ACCEPT_ERROR_PAUSE;
        }
        self.failed_since_warn += 1;
        let now = Instant::now();
        if self
            .warned
            .is_none_or(|at| now.duration_since(at) >= DESCRIPTOR_WARN_EVERY)
        {
            tracing::warn!(error = %e, failed = self.failed_since_warn, "out of file descriptors: not accepting streams for now");
            self.warned = Some(now);
            self.failed_since_warn = 0;
        }
        DESCRIPTOR_PAUSE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_pauses_longer_than_other_errors() {
        let mut errors = AcceptErrors::default();
        let emfile = std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        assert!(out_of_descriptors(&emfile));
        assert_eq!(errors.failed(&emfile), DESCRIPTOR_PAUSE);
        assert!(errors.warned.is_some());
        // Within the warning interval: counted, not logged again.
        assert_eq!(errors.failed(&emfile), DESCRIPTOR_PAUSE);
        assert_eq!(errors.failed_since_warn, 1);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!out_of_descriptors(&reset));
        assert_eq!(errors.failed(&reset), ACCEPT_ERROR_PAUSE);
    }
}
