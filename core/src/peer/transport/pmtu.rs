//! Path MTU discovery in the manner of RFC 8899 (DPLPMTUD): start at the
//! base size every path carries, probe larger sizes with PING + PADDING
//! packets, and move up only when a probe is acknowledged.
//!
//! Candidates are tried largest first (`max_mtu`, then the fixed list
//! below it): on the common paths (Ethernet, loopback) the first probe
//! succeeds within one round trip. A candidate whose probe is lost
//! [`MAX_PROBES`] times is abandoned for the next smaller one; when none is
//! left the search ends at the last confirmed size, and starts again after
//! [`PMTU_RAISE_INTERVAL`] if that is below the maximum. A probe's loss is
//! not a congestion signal. Persistent congestion while above the base size is
//! taken as a black hole: back to the base size, and the search starts over
//! after [`PMTU_BLACK_HOLE_RETRY`].

use core::time::Duration;

use crate::time::Instant;

/// UDP payload sizes tried below `max_mtu`, largest first.
pub const MTU_CANDIDATES: [usize; 3] = [1400, 1350, 1280];
/// Probes of one candidate that may be lost before it is abandoned.
pub const MAX_PROBES: u8 = 3;
/// How long after a search ended (below the maximum) a new one starts
/// (RFC 8899 PMTU_RAISE_TIMER, 600 s).
pub const PMTU_RAISE_INTERVAL: Duration = Duration::from_secs(600);
/// How long after a fall back to the base size (suspected black hole) the
/// search starts again: persistent congestion on a lossy path is not always
/// an MTU problem, and a real black hole fails the probes again anyway.
pub const PMTU_BLACK_HOLE_RETRY: Duration = Duration::from_secs(1);

/// The PMTU search state.
#[derive(Debug, Clone, Copy)]
pub struct PmtuSearch {
    /// Confirmed UDP payload size.
    pub current: usize,
    base: usize,
    max: usize,
    /// Index of the candidate being probed: 0 = `max`, i = `MTU_CANDIDATES[i-1]`.
    candidate: usize,
    attempts: u8,
    in_flight: Option<u64>,
    /// When the next search starts, if the search is idle.
    restart_at: Option<Instant>,
}

impl PmtuSearch {
    /// A search from `base` up to `max` (a search with `max <= base` is done).
    pub fn new(base: usize, max: usize) -> Self {
        let mut s = PmtuSearch {
            current: base,
            base,
            max,
            candidate: 0,
            attempts: 0,
            in_flight: None,
            restart_at: None,
        };
        s.skip_useless();
        s
    }

    fn size_of(&self, index: usize) -> Option<usize> {
        match index {
            0 => Some(self.max),
            i => MTU_CANDIDATES.get(i - 1).copied(),
        }
    }

    /// Moves past candidates that are not above the current size or above
    /// the maximum.
    fn skip_useless(&mut self) {
        while let Some(size) = self.size_of(self.candidate) {
            if size > self.current && size <= self.max {
                return;
            }
            self.candidate += 1;
        }
    }

    /// The size to probe now, if a probe should be sent.
    pub fn probe_due(&self, now: Instant) -> Option<usize> {
        if self.in_flight.is_some() {
            return None;
        }
        if let Some(at) = self.restart_at {
            if now < at {
                return None;
            }
        }
        self.size_of(self.candidate)
    }

    /// When the search restarts (a timer), if it is waiting.
    pub fn restart_time(&self) -> Option<Instant> {
        self.restart_at
            .filter(|_| self.size_of(self.candidate).is_some())
    }

    /// A probe went out as packet `pn`.
    pub fn on_probe_sent(&mut self, pn: u64) {
        self.in_flight = Some(pn);
        self.restart_at = None;
    }

    /// The search ended: below the maximum, it starts again after
    /// [`PMTU_RAISE_INTERVAL`] (the path may have changed).
    fn search_ended(&mut self, now: Instant) {
        self.attempts = 0;
        if self.current >= self.max {
            self.candidate = MTU_CANDIDATES.len() + 1;
            return;
        }
        self.candidate = 0;
        self.skip_useless();
        self.restart_at = Some(now + PMTU_RAISE_INTERVAL);
    }

    /// Packet `pn`, a probe of `size`, was acknowledged at `now`: returns
    /// the new MTU if it grew.
    pub fn on_probe_acked(&mut self, now: Instant, pn: u64, size: usize) -> Option<usize> {
        if self.in_flight == Some(pn) {
            self.in_flight = None;
        }
        if size <= self.current {
            return None;
        }
        self.current = size;
        // Larger candidates were already tried (largest first): done.
        self.search_ended(now);
        Some(size)
    }

    /// Packet `pn`, a probe, was found lost at `now`.
    pub fn on_probe_lost(&mut self, now: Instant, pn: u64) {
        if self.in_flight == Some(pn) {
            self.in_flight = None;
        }
        self.attempts += 1;
        if self.attempts >= MAX_PROBES {
            self.attempts = 0;
            self.candidate += 1;
            self.skip_useless();
            if self.size_of(self.candidate).is_none() {
                self.search_ended(now);
            }
        }
    }

    /// Persistent congestion above the base size: fall back to the base
    /// and search again later. Returns the new MTU if it changed.
    pub fn on_black_hole(&mut self, now: Instant) -> Option<usize> {
        if self.current <= self.base {
            return None;
        }
        self.current = self.base;
        self.candidate = 0;
        self.attempts = 0;
        self.in_flight = None;
        self.skip_useless();
        self.restart_at = Some(now + PMTU_BLACK_HOLE_RETRY);
        Some(self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_acked_probe_ends_the_search() {
        let mut p = PmtuSearch::new(1200, 1452);
        assert_eq!(p.probe_due(Instant::ZERO), Some(1452));
        p.on_probe_sent(7);
        assert_eq!(p.probe_due(Instant::ZERO), None);
        assert_eq!(p.on_probe_acked(Instant::ZERO, 7, 1452), Some(1452));
        assert_eq!(p.probe_due(Instant::ZERO), None);
    }

    #[test]
    fn three_losses_move_to_the_next_candidate() {
        let mut p = PmtuSearch::new(1200, 1452);
        for pn in 0..3 {
            assert_eq!(p.probe_due(Instant::ZERO), Some(1452));
            p.on_probe_sent(pn);
            p.on_probe_lost(Instant::ZERO, pn);
        }
        assert_eq!(p.probe_due(Instant::ZERO), Some(1400));
    }

    #[test]
    fn all_candidates_lost_stays_at_base_and_searches_again_later() {
        let mut p = PmtuSearch::new(1200, 1452);
        let mut pn = 0;
        while p.probe_due(Instant::ZERO).is_some() {
            p.on_probe_sent(pn);
            p.on_probe_lost(Instant::ZERO, pn);
            pn += 1;
        }
        assert_eq!(pn, 12);
        assert_eq!(p.current, 1200);
        let later = Instant::ZERO + PMTU_RAISE_INTERVAL;
        assert_eq!(p.restart_time(), Some(later));
        assert_eq!(p.probe_due(later), Some(1452));
    }

    #[test]
    fn a_smaller_confirmed_size_searches_up_again_later() {
        let mut p = PmtuSearch::new(1200, 1452);
        let mut pn = 0;
        for _ in 0..6 {
            p.on_probe_sent(pn);
            p.on_probe_lost(Instant::ZERO, pn);
            pn += 1;
        }
        assert_eq!(p.probe_due(Instant::ZERO), Some(1350));
        p.on_probe_sent(pn);
        assert_eq!(p.on_probe_acked(Instant::ZERO, pn, 1350), Some(1350));
        assert_eq!(p.probe_due(Instant::ZERO), None);
        assert_eq!(p.probe_due(Instant::ZERO + PMTU_RAISE_INTERVAL), Some(1452));
    }

    #[test]
    fn black_hole_falls_back_and_restarts_later() {
        let mut p = PmtuSearch::new(1200, 1452);
        p.on_probe_sent(0);
        p.on_probe_acked(Instant::ZERO, 0, 1452);
        assert_eq!(p.on_black_hole(Instant::ZERO), Some(1200));
        assert_eq!(p.probe_due(Instant::ZERO), None);
        assert_eq!(
            p.probe_due(Instant::ZERO + PMTU_BLACK_HOLE_RETRY),
            Some(1452)
        );
    }
}
