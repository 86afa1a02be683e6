//! Congestion control: NewReno as RFC 9002 §7 specifies it, and a pacer.
//!
//! NewReno: slow start doubles the window each round trip until the first
//! loss; a loss of a packet sent after the current recovery period started
//! halves the window (ssthresh = cwnd / 2) and starts a new period; in
//! congestion avoidance the window grows by one datagram per window acked;
//! persistent congestion (every packet lost over a long enough span)
//! collapses it to the minimum.
//!
//! Pacer: a token bucket refilled at 1.25 · cwnd / srtt, holding what the
//! window sends in [`PACING_GRANULARITY`] (at least [`PACING_BURST`], at
//! most [`MAX_PACING_BURST`] datagrams), so packets leave spread over the
//! round trip, in bursts large enough for GSO batching and for a driver
//! whose timers fire a millisecond late (tokio's granularity), as
//! quinn-proto's pacer does.

use core::time::Duration;

use crate::time::Instant;

/// Initial window in datagrams (RFC 9002 §7.2: 10).
pub const INITIAL_WINDOW_PACKETS: u64 = 10;
/// Minimum window in datagrams (RFC 9002 §7.2: 2).
pub const MIN_WINDOW_PACKETS: u64 = 2;
/// Fewest datagrams the pacer lets out back to back.
pub const PACING_BURST: u64 = 10;
/// Most datagrams the pacer lets out back to back, however fast the path.
pub const MAX_PACING_BURST: u64 = 256;
/// How much of the window's sending time one burst may hold: twice the
/// millisecond timer granularity of common drivers, so a late timer costs
/// no throughput.
pub const PACING_GRANULARITY: Duration = Duration::from_millis(2);
/// Pacing rate numerator over cwnd / srtt (rate = 5/4 · cwnd / srtt).
const PACING_GAIN_NUM: u128 = 5;
/// Pacing rate denominator.
const PACING_GAIN_DEN: u128 = 4;

/// NewReno congestion controller state, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct NewReno {
    /// Congestion window.
    pub cwnd: u64,
    /// Slow start threshold (`u64::MAX` until the first loss).
    pub ssthresh: u64,
    /// Bytes acked in congestion avoidance not yet turned into window growth.
    acked_in_avoidance: u64,
    /// Packets sent before this time belong to the current recovery period.
    recovery_start: Option<Instant>,
    /// Datagram size the window is counted in.
    mds: u64,
    /// Largest window allowed (ring capacity × datagram size).
    max_cwnd: u64,
    /// Window and threshold before the current recovery period, to undo it
    /// if every loss that caused it turns out spurious.
    undo: Option<(u64, u64)>,
    /// Losses counted in the current recovery period.
    period_losses: u32,
    /// Of those, found spurious (acknowledged after all).
    period_spurious: u32,
}

impl NewReno {
    /// A controller for datagrams of `mds` bytes, capped at `max_packets` of them.
    pub fn new(mds: usize, max_packets: usize) -> Self {
        let mds = mds as u64;
        NewReno {
            cwnd: INITIAL_WINDOW_PACKETS * mds,
            ssthresh: u64::MAX,
            acked_in_avoidance: 0,
            recovery_start: None,
            mds,
            max_cwnd: max_packets as u64 * mds,
            undo: None,
            period_losses: 0,
            period_spurious: 0,
        }
    }

    /// The minimum window.
    pub fn min_window(&self) -> u64 {
        MIN_WINDOW_PACKETS * self.mds
    }

    /// The datagram size changed (PMTU): windows are kept in bytes, bounds move.
    pub fn set_mds(&mut self, mds: usize, max_packets: usize) {
        self.mds = mds as u64;
        self.max_cwnd = max_packets as u64 * self.mds;
        self.cwnd = self.cwnd.clamp(self.min_window(), self.max_cwnd);
    }

    /// Whether we are in a recovery period for a packet sent at `sent`.
    fn in_recovery(&self, sent: Instant) -> bool {
        self.recovery_start.is_some_and(|start| sent <= start)
    }

    /// `bytes` of a packet sent at `sent` were acknowledged.
    /// `app_limited`: the window was not the limit when it was sent, so
    /// the ack says nothing about a larger window.
    pub fn on_ack(&mut self, sent: Instant, bytes: u64, app_limited: bool) {
        if self.in_recovery(sent) || app_limited {
            return;
        }
        if self.cwnd < self.ssthresh {
            self.cwnd = self.cwnd.saturating_add(bytes);
        } else {
            self.acked_in_avoidance += bytes;
            if self.acked_in_avoidance >= self.cwnd {
                self.acked_in_avoidance -= self.cwnd;
                self.cwnd = self.cwnd.saturating_add(self.mds);
            }
        }
        self.cwnd = self.cwnd.min(self.max_cwnd);
    }

    /// A packet sent at `sent` was lost (at time `now`): a congestion event
    /// unless the current recovery period already covers it.
    pub fn on_congestion_event(&mut self, now: Instant, sent: Instant, losses: u32) {
        if self.in_recovery(sent) {
            self.period_losses = self.period_losses.saturating_add(losses);
            return;
        }
        self.undo = Some((self.cwnd, self.ssthresh));
        self.period_losses = losses;
        self.period_spurious = 0;
        self.recovery_start = Some(now);
        self.cwnd = (self.cwnd / 2).max(self.min_window());
        self.ssthresh = self.cwnd;
        self.acked_in_avoidance = 0;
    }

    /// Every packet over a persistent-congestion span was lost: back to the
    /// minimum window (RFC 9002 §7.6). Not undone by spurious losses.
    pub fn on_persistent_congestion(&mut self) {
        self.cwnd = self.min_window();
        self.acked_in_avoidance = 0;
        self.undo = None;
    }

    /// A packet sent at `sent` and declared lost was acknowledged after all.
    /// When every loss of the current recovery period was spurious, the
    /// window reduction is undone (the period stays, so the same reordering
    /// does not cut again). Returns whether it was undone.
    pub fn on_spurious_loss(&mut self, sent: Instant) -> bool {
        if !self.in_recovery(sent) {
            return false;
        }
        self.period_spurious = self.period_spurious.saturating_add(1);
        if self.period_spurious < self.period_losses {
            return false;
        }
        match self.undo.take() {
            Some((cwnd, ssthresh)) => {
                self.cwnd = self.cwnd.max(cwnd).min(self.max_cwnd);
                self.ssthresh = ssthresh;
                true
            }
            None => false,
        }
    }
}

/// Token-bucket pacer.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    tokens: u64,
    last: Instant,
}

impl Pacer {
    /// A full bucket at `now`.
    pub fn new(now: Instant) -> Self {
        Pacer {
            tokens: u64::MAX,
            last: now,
        }
    }

    /// The bucket's size: what the window sends in [`PACING_GRANULARITY`],
    /// between [`PACING_BURST`] and [`MAX_PACING_BURST`] datagrams, never
    /// more than the window.
    fn capacity(cwnd: u64, srtt: Duration, mds: u64) -> u64 {
        let srtt_us = srtt.as_micros().max(1);
        let per_granularity = u128::from(cwnd) * PACING_GRANULARITY.as_micros() / srtt_us;
        let per_granularity = u64::try_from(per_granularity).unwrap_or(u64::MAX);
        per_granularity
            .clamp(PACING_BURST * mds, MAX_PACING_BURST * mds)
            .min(cwnd)
            .max(mds)
    }

    fn refill(&mut self, now: Instant, cwnd: u64, srtt: Duration, mds: u64) {
        let cap = Self::capacity(cwnd, srtt, mds);
        let elapsed = (now - self.last).as_micros();
        let srtt_us = srtt.as_micros().max(1);
        let add = elapsed * PACING_GAIN_NUM * u128::from(cwnd) / (PACING_GAIN_DEN * srtt_us);
        let add = u64::try_from(add).unwrap_or(u64::MAX);
        self.tokens = self.tokens.saturating_add(add).min(cap);
        self.last = now;
    }

    /// When a packet of `size` bytes may leave (`now` or later).
    pub fn next_send(
        &mut self,
        now: Instant,
        size: u64,
        cwnd: u64,
        srtt: Duration,
        mds: u64,
    ) -> Instant {
        self.refill(now, cwnd, srtt, mds);
        let size = size.min(Self::capacity(cwnd, srtt, mds));
        if self.tokens >= size {
            return now;
        }
        let missing = u128::from(size - self.tokens);
        let srtt_us = srtt.as_micros().max(1);
        let rate_den = PACING_GAIN_NUM * u128::from(cwnd.max(1));
        // ceil(missing · 4 · srtt / (5 · cwnd)) microseconds.
        let wait = (missing * PACING_GAIN_DEN * srtt_us).div_ceil(rate_den);
        now.saturating_add(Duration::from_micros(
            u64::try_from(wait).unwrap_or(u64::MAX),
        ))
    }

    /// A packet of `size` bytes left.
    pub fn on_sent(&mut self, size: u64) {
        self.tokens = self.tokens.saturating_sub(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MDS: usize = 1200;

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    #[test]
    fn slow_start_grows_by_bytes_acked() {
        let mut cc = NewReno::new(MDS, 4096);
        let start = cc.cwnd;
        cc.on_ack(at(1), 1200, false);
        assert_eq!(cc.cwnd, start + 1200);
    }

    #[test]
    fn loss_halves_the_window_once_per_recovery_period() {
        let mut cc = NewReno::new(MDS, 4096);
        cc.cwnd = 100_000;
        cc.on_congestion_event(at(10), at(5), 1);
        assert_eq!(cc.cwnd, 50_000);
        assert_eq!(cc.ssthresh, 50_000);
        // Another loss of a packet sent before the period began: no change.
        cc.on_congestion_event(at(11), at(9), 1);
        assert_eq!(cc.cwnd, 50_000);
        // Acks of packets sent in the period do not grow it.
        cc.on_ack(at(8), 1200, false);
        assert_eq!(cc.cwnd, 50_000);
        // A loss of a packet sent after it began: halves again.
        cc.on_congestion_event(at(20), at(12), 1);
        assert_eq!(cc.cwnd, 25_000);
    }

    #[test]
    fn congestion_avoidance_adds_one_datagram_per_window() {
        let mut cc = NewReno::new(MDS, 4096);
        cc.cwnd = 12_000;
        cc.ssthresh = 12_000;
        for _ in 0..10 {
            cc.on_ack(at(1), 1200, false);
        }
        assert_eq!(cc.cwnd, 13_200);
    }

    #[test]
    fn spurious_losses_undo_the_reduction() {
        let mut cc = NewReno::new(MDS, 4096);
        cc.cwnd = 100_000;
        cc.on_congestion_event(at(10), at(5), 2);
        assert_eq!(cc.cwnd, 50_000);
        assert!(!cc.on_spurious_loss(at(5)));
        assert!(cc.on_spurious_loss(at(6)));
        assert_eq!(cc.cwnd, 100_000);
        assert_eq!(cc.ssthresh, u64::MAX);
    }

    #[test]
    fn persistent_congestion_collapses_to_minimum() {
        let mut cc = NewReno::new(MDS, 4096);
        cc.on_persistent_congestion();
        assert_eq!(cc.cwnd, 2 * 1200);
    }

    #[test]
    fn pacer_allows_a_burst_then_spreads_packets() {
        let mut pacer = Pacer::new(at(0));
        let cwnd = 120_000;
        let srtt = Duration::from_millis(100);
        for _ in 0..PACING_BURST {
            assert_eq!(pacer.next_send(at(0), 1200, cwnd, srtt, 1200), at(0));
            pacer.on_sent(1200);
        }
        let next = pacer.next_send(at(0), 1200, cwnd, srtt, 1200);
        // rate = 1.25 · 120000 / 0.1 s = 1.5 MB/s → 1200 bytes in 800 µs.
        assert_eq!(next, Instant::from_micros(800));
        assert_eq!(pacer.next_send(next, 1200, cwnd, srtt, 1200), next);
    }

    #[test]
    fn pacer_burst_covers_the_timer_granularity_on_a_fast_path() {
        // A loopback-like path: 100 µs round trip, 1 MB window. A burst of
        // 10 packets per late 1 ms timer would cap it at 12 MB/s; the
        // bucket holds what the window sends in 2 ms, up to 256 packets.
        let mut pacer = Pacer::new(at(0));
        let cwnd = 1_000_000;
        let srtt = Duration::from_micros(100);
        for _ in 0..MAX_PACING_BURST {
            assert_eq!(pacer.next_send(at(0), 1200, cwnd, srtt, 1200), at(0));
            pacer.on_sent(1200);
        }
        assert!(pacer.next_send(at(0), 1200, cwnd, srtt, 1200) > at(0));
        // Never more than the window, however short the round trip.
        assert_eq!(Pacer::capacity(24_000, srtt, 1200), 24_000);
    }
}
