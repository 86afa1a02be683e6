//! Loss recovery state (RFC 9002 §5-6): the RTT estimator and the ring of
//! sent packets.
//!
//! Packets are numbered by the session, one after another, so the ring is
//! indexed by `pn % MAX_PACKETS_IN_FLIGHT`: finding a packet is O(1), an
//! ACK costs time proportional to the packets it newly acknowledges, and
//! loss detection only walks the few outstanding packets below the largest
//! acknowledged (everything older was acked or declared lost already).

use core::time::Duration;

use crate::time::Instant;

/// Most packets tracked as sent and not yet acknowledged or lost; also caps
/// the congestion window (a power of two: the ring is indexed by `pn % N`).
pub const MAX_PACKETS_IN_FLIGHT: usize = 4096;
/// Packets sent after an unacknowledged one before it counts as lost
/// (RFC 9002 kPacketThreshold).
pub const PACKET_THRESHOLD: u64 = 3;
/// Largest packet threshold reordering can raise it to (a loss is then
/// found by the time threshold instead).
pub const MAX_PACKET_THRESHOLD: u64 = 256;
/// Time threshold in eighths of an RTT (RFC 9002 kTimeThreshold 9/8).
pub const TIME_THRESHOLD_EIGHTHS: u32 = 9;
/// Largest time threshold reordering can raise it to, in eighths (2 RTT).
pub const MAX_TIME_THRESHOLD_EIGHTHS: u32 = 16;
/// Packets declared lost that are remembered, to notice when one is acked
/// after all (spurious loss: reordering, not congestion).
pub const RECENT_LOST: usize = 32;
/// Timer granularity (RFC 9002 kGranularity).
pub const GRANULARITY: Duration = Duration::from_millis(1);
/// The longest this side delays an acknowledgement, and the longest it
/// assumes the peer does (both sides use the same constant).
pub const MAX_ACK_DELAY: Duration = Duration::from_millis(25);
/// Most doublings of the probe timeout (backoff stops growing after this).
pub const MAX_PTO_BACKOFF: u32 = 10;

/// The RTT estimator of RFC 9002 §5.
#[derive(Debug, Clone, Copy)]
pub struct RttEstimator {
    /// Latest sample.
    pub latest: Duration,
    /// Smoothed RTT.
    pub smoothed: Duration,
    /// RTT variation.
    pub var: Duration,
    /// Minimum RTT seen.
    pub min: Duration,
    /// Whether a real sample was taken (else the values are the initial guess).
    pub sampled: bool,
}

impl RttEstimator {
    /// The estimator before any sample: `initial` as RFC 9002 §6.2.2 says.
    pub fn new(initial: Duration) -> Self {
        RttEstimator {
            latest: initial,
            smoothed: initial,
            var: initial / 2,
            min: initial,
            sampled: false,
        }
    }

    /// Takes a sample: `latest` measured, the peer reported `ack_delay`.
    pub fn update(&mut self, latest: Duration, ack_delay: Duration) {
        self.latest = latest;
        if !self.sampled {
            self.sampled = true;
            self.min = latest;
            self.smoothed = latest;
            self.var = latest / 2;
            return;
        }
        self.min = self.min.min(latest);
        let ack_delay = ack_delay.min(MAX_ACK_DELAY);
        let adjusted = if latest >= self.min + ack_delay {
            latest - ack_delay
        } else {
            latest
        };
        let diff = self.smoothed.abs_diff(adjusted);
        self.var = (self.var * 3 + diff) / 4;
        self.smoothed = (self.smoothed * 7 + adjusted) / 8;
    }

    /// The probe timeout before backoff: srtt + max(4·rttvar, granularity) + max_ack_delay.
    pub fn pto_base(&self) -> Duration {
        self.smoothed + (self.var * 4).max(GRANULARITY) + MAX_ACK_DELAY
    }

    /// How long after sending a packet counts as lost once a later one is
    /// acked: `eighths`/8 · max(srtt, latest) (9/8 unless reordering was
    /// seen), at least the granularity.
    pub fn loss_delay(&self, eighths: u32) -> Duration {
        (self.smoothed.max(self.latest) * eighths / 8).max(GRANULARITY)
    }
}

/// Flag: the packet must be acknowledged.
pub const SENT_ACK_ELICITING: u8 = 1;
/// Flag: the packet counts towards bytes in flight.
pub const SENT_IN_FLIGHT: u8 = 2;
/// Flag: the packet is a PMTU probe (its loss is not congestion).
pub const SENT_MTU_PROBE: u8 = 4;
/// Flag: the packet carries a STREAM frame (`offset`, `len`).
pub const SENT_STREAM: u8 = 8;
/// Flag: the STREAM frame has FIN.
pub const SENT_FIN: u8 = 16;
/// Flag: the packet carries a MAX_DATA frame that must be resent if lost.
pub const SENT_MAX_DATA: u8 = 32;
/// Flag: when it was sent, the window was not the limit (nothing more was
/// waiting and less than half the window was in flight): its ack does not
/// grow the window (RFC 9002 §7.8).
pub const SENT_APP_LIMITED: u8 = 64;
/// Flag: the packet carries an ACK_FREQUENCY frame (resent if lost).
pub const SENT_ACK_FREQUENCY: u8 = 128;

/// What the ring remembers of one sent packet.
#[derive(Debug, Clone, Copy, Default)]
pub struct SentPacket {
    /// Packet number.
    pub pn: u64,
    /// When it was sent (µs).
    pub time_sent: u64,
    /// Stream offset of its STREAM frame (if [`SENT_STREAM`]).
    pub offset: u64,
    /// Stream bytes in its STREAM frame.
    pub len: u16,
    /// Its size on the wire (payload + overhead), for bytes in flight.
    pub size: u16,
    /// `SENT_*` flags.
    pub flags: u8,
    /// Whether it is still waiting for an ack or a loss verdict.
    pub outstanding: bool,
}

impl SentPacket {
    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// When it was sent.
    pub fn sent_at(&self) -> Instant {
        Instant::from_micros(self.time_sent)
    }
}

/// The ring of sent, tracked packets.
#[derive(Clone)]
pub struct SentRing {
    slots: [SentPacket; MAX_PACKETS_IN_FLIGHT],
    /// No outstanding packet has a number below this.
    oldest: u64,
    /// One past the largest packet number sent (tracked or not).
    next: u64,
    /// Outstanding packets.
    count: usize,
}

impl core::fmt::Debug for SentRing {
    /// The bounds and count only (the slots would print thousands of lines).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SentRing")
            .field("oldest", &self.oldest)
            .field("next", &self.next)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl Default for SentRing {
    fn default() -> Self {
        Self::new()
    }
}

impl SentRing {
    /// An empty ring.
    pub const fn new() -> Self {
        SentRing {
            slots: [SentPacket {
                pn: 0,
                time_sent: 0,
                offset: 0,
                len: 0,
                size: 0,
                flags: 0,
                outstanding: false,
            }; MAX_PACKETS_IN_FLIGHT],
            oldest: 0,
            next: 0,
            count: 0,
        }
    }

    fn index(pn: u64) -> usize {
        (pn % MAX_PACKETS_IN_FLIGHT as u64) as usize
    }

    /// Outstanding packets.
    pub fn count(&self) -> usize {
        self.count
    }

    /// One past the largest packet number sent.
    pub fn next_pn(&self) -> u64 {
        self.next
    }

    /// The lowest packet number that may still be outstanding.
    pub fn oldest(&self) -> u64 {
        self.oldest
    }

    /// Whether packet `pn` may be sent and tracked now: it is new and its
    /// slot is free.
    pub fn can_track(&self, pn: u64) -> bool {
        pn >= self.next && !self.slots[Self::index(pn)].outstanding
    }

    /// Whether `pn` may be sent untracked (it is new).
    pub fn is_new(&self, pn: u64) -> bool {
        pn >= self.next
    }

    /// Records a packet number as used without tracking it (ack-only packets).
    pub fn skip(&mut self, pn: u64) {
        if pn >= self.next {
            self.next = pn + 1;
            if self.count == 0 {
                self.oldest = self.next;
            }
        }
    }

    /// Tracks `packet` (caller checked [`SentRing::can_track`]).
    pub fn push(&mut self, packet: SentPacket) {
        let slot = &mut self.slots[Self::index(packet.pn)];
        if slot.outstanding {
            return;
        }
        *slot = packet;
        slot.outstanding = true;
        if self.count == 0 {
            self.oldest = packet.pn;
        }
        self.count += 1;
        self.next = packet.pn + 1;
    }

    /// The outstanding packet `pn`, if any.
    pub fn get(&self, pn: u64) -> Option<&SentPacket> {
        let slot = &self.slots[Self::index(pn)];
        (slot.outstanding && slot.pn == pn).then_some(slot)
    }

    /// Removes and returns the outstanding packet `pn`, if any.
    pub fn take(&mut self, pn: u64) -> Option<SentPacket> {
        let slot = &mut self.slots[Self::index(pn)];
        if !(slot.outstanding && slot.pn == pn) {
            return None;
        }
        slot.outstanding = false;
        self.count -= 1;
        let taken = *slot;
        self.advance_oldest();
        Some(taken)
    }

    /// Moves `oldest` past packets that are no longer outstanding; bounded
    /// by the ring size (each number is passed once in order).
    fn advance_oldest(&mut self) {
        if self.count == 0 {
            self.oldest = self.next;
            return;
        }
        for _ in 0..MAX_PACKETS_IN_FLIGHT {
            if self.oldest >= self.next || self.get(self.oldest).is_some() {
                return;
            }
            self.oldest += 1;
        }
    }

    /// Visits the outstanding packets numbered in `[low, high]` (inclusive),
    /// in increasing order when the numbers are dense, limited to what was
    /// sent; removes those for which `f` returns true. Cost: proportional to
    /// the numbers between `max(low, oldest)` and `min(high, next - 1)`, at
    /// most the ring size.
    pub fn remove_in(&mut self, low: u64, high: u64, mut f: impl FnMut(&SentPacket) -> bool) {
        let low = low.max(self.oldest);
        let high = high.min(self.next.saturating_sub(1));
        if low > high || self.next == 0 {
            return;
        }
        let mut removed = 0;
        if high - low < MAX_PACKETS_IN_FLIGHT as u64 {
            for pn in low..=high {
                let slot = &mut self.slots[Self::index(pn)];
                if slot.outstanding && slot.pn == pn && f(slot) {
                    slot.outstanding = false;
                    removed += 1;
                }
            }
        } else {
            // Numbers were skipped: scan the slots instead (unordered).
            for slot in self.slots.iter_mut() {
                if slot.outstanding && slot.pn >= low && slot.pn <= high && f(slot) {
                    slot.outstanding = false;
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            self.count -= removed;
            self.advance_oldest();
        }
    }

    /// The oldest outstanding packet (for PTO retransmission choice).
    pub fn oldest_outstanding(&self) -> Option<&SentPacket> {
        if self.count == 0 {
            return None;
        }
        self.get(self.oldest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn packet(pn: u64) -> SentPacket {
        SentPacket {
            pn,
            time_sent: pn * 10,
            size: 1200,
            flags: SENT_ACK_ELICITING | SENT_IN_FLIGHT,
            ..SentPacket::default()
        }
    }

    #[test]
    fn first_sample_sets_srtt_and_half_variance() {
        let mut rtt = RttEstimator::new(Duration::from_millis(333));
        rtt.update(Duration::from_millis(100), Duration::ZERO);
        assert_eq!(rtt.smoothed, Duration::from_millis(100));
        assert_eq!(rtt.var, Duration::from_millis(50));
        rtt.update(Duration::from_millis(200), Duration::from_millis(10));
        // adjusted = 190; srtt = (700 + 190)/8
        assert_eq!(rtt.smoothed, Duration::from_micros(111_250));
    }

    #[test]
    fn ring_takes_only_outstanding_packets_and_advances_oldest() {
        let mut ring = SentRing::new();
        for pn in 0..5 {
            assert!(ring.can_track(pn));
            ring.push(packet(pn));
        }
        ring.skip(5);
        assert_eq!(ring.count(), 5);
        assert!(ring.take(1).is_some());
        assert!(ring.take(1).is_none());
        assert_eq!(ring.oldest(), 0);
        assert!(ring.take(0).is_some());
        assert_eq!(ring.oldest(), 2);
        let mut seen = Vec::new();
        ring.remove_in(0, u64::MAX, |p| {
            seen.push(p.pn);
            p.pn == 3
        });
        assert_eq!(seen, [2, 3, 4]);
        assert_eq!(ring.count(), 2);
        assert!(ring.get(3).is_none());
    }

    #[test]
    fn full_ring_refuses_a_packet_whose_slot_is_taken() {
        let mut ring = SentRing::new();
        for pn in 0..MAX_PACKETS_IN_FLIGHT as u64 {
            ring.push(packet(pn));
        }
        let next = MAX_PACKETS_IN_FLIGHT as u64;
        assert!(!ring.can_track(next));
        ring.take(0);
        assert!(ring.can_track(next));
        assert!(!ring.can_track(3));
    }
}
