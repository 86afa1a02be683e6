//! WARN lines for what a server refuses (failed handshakes, rate-limit
//! drops, forged keepalives), themselves rate-limited: the first refusal
//! is told at once, later ones in one summary line per [`DROP_REPORT_PERIOD`]
//! at most, with how many of each kind since the last line. A flood costs
//! the log one line per period, and a quiet server logs nothing.
//!
//! The counts are the machine's own counters ([`tryst_core::session_server::SessionCounters`],
//! [`tryst_core::trigger_server::TriggerStats`]), read after each drain of
//! the loop; a summary that is due while no input arrives is asked for
//! through the role's app deadline ([`DropReport::deadline`]).

use std::time::Duration;

use tryst_core::time::Instant;

/// The least time between two WARN lines of one report.
pub const DROP_REPORT_PERIOD: Duration = Duration::from_secs(10);

/// The counters of `N` kinds of refusal, and when they were last told.
#[derive(Debug, Clone)]
pub struct DropReport<const N: usize> {
    /// The counters' values when last told.
    told: [u64; N],
    /// The latest values seen.
    seen: [u64; N],
    /// When the last line was written; `None` before the first.
    last_line: Option<Instant>,
}

impl<const N: usize> Default for DropReport<N> {
    fn default() -> Self {
        DropReport {
            told: [0; N],
            seen: [0; N],
            last_line: None,
        }
    }
}

impl<const N: usize> DropReport<N> {
    /// The counters are `counts` at `now`: the increase of each since the
    /// last line, when a line is due (something rose, and the first time or
    /// a period after the last line). A counter that went down (a restarted
    /// machine) starts again from its new value.
    pub fn observe(&mut self, now: Instant, counts: [u64; N]) -> Option<[u64; N]> {
        for (told, now_count) in self.told.iter_mut().zip(counts) {
            if now_count < *told {
                *told = now_count;
            }
        }
        self.seen = counts;
        if !self.pending() {
            return None;
        }
        let due = self
            .last_line
            .is_none_or(|at| now.saturating_duration_since(at) >= DROP_REPORT_PERIOD);
        if !due {
            return None;
        }
        let mut rise = [0u64; N];
        for ((r, told), seen) in rise.iter_mut().zip(&mut self.told).zip(counts) {
            *r = seen - *told;
            *told = seen;
        }
        self.last_line = Some(now);
        Some(rise)
    }

    /// When the loop should call [`Self::observe`] again without input: a
    /// period after the last line while a rise is held back.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.pending() {
            return None;
        }
        self.last_line
            .map(|at| at.saturating_add(DROP_REPORT_PERIOD))
    }

    /// Whether some counter rose since the last line.
    fn pending(&self) -> bool {
        self.seen.iter().zip(&self.told).any(|(s, t)| s > t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Instant {
        Instant::ZERO.saturating_add(Duration::from_secs(secs))
    }

    #[test]
    fn the_first_refusal_is_told_at_once_and_a_flood_once_per_period() {
        let mut r = DropReport::<2>::default();
        assert_eq!(r.observe(at(1), [0, 0]), None, "nothing refused");
        assert_eq!(r.observe(at(2), [1, 0]), Some([1, 0]));
        // A flood within the period: held back, with a deadline for it.
        for n in 2..1000 {
            assert_eq!(r.observe(at(3), [n, 5]), None);
        }
        assert_eq!(r.deadline(), Some(at(12)));
        assert_eq!(r.observe(at(11), [999, 5]), None);
        assert_eq!(r.observe(at(12), [999, 5]), Some([998, 5]));
        // Told: nothing pending, no deadline, no line.
        assert_eq!(r.deadline(), None);
        assert_eq!(r.observe(at(40), [999, 5]), None);
        // Quiet for longer than a period: the next refusal is told at once.
        assert_eq!(r.observe(at(41), [999, 6]), Some([0, 1]));
    }

    #[test]
    fn a_counter_that_goes_down_never_underflows() {
        let mut r = DropReport::<1>::default();
        assert_eq!(r.observe(at(0), [10]), Some([10]));
        assert_eq!(r.observe(at(20), [3]), None);
        assert_eq!(r.observe(at(40), [4]), Some([1]));
        assert_eq!(r.observe(at(0), [u64::MAX]), None, "time going back");
    }
}
