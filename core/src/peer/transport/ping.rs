//! Round-trip pings on the peer path (`tryst ping`): the app asks for one,
//! the transport sends it as an ack-eliciting packet (a PING frame unless
//! the packet carries other ack-eliciting frames anyway) and reports the
//! round trip when that packet is acknowledged.
//!
//! # Why the ACK, not a dedicated echo
//! Every transport already acknowledges every ack-eliciting packet, and
//! its ACK frame says how long the peer held the acknowledgement (the ack
//! delay, in microseconds). The round trip is then
//! `ack arrival - packet sent - ack delay`: exact to the peer's clock
//! granularity, with no new frame, no byte on the wire changed, and no
//! change on the receiving side, so a ping reaches any peer that runs the
//! transport, old or new. A dedicated echo would cost a frame type, a
//! protocol change on both sides, and an answer path a peer could be made
//! to reflect with. The cost of the ACK: the peer may hold it up to its
//! [`super::recovery::MAX_ACK_DELAY`], so the answer comes that much later
//! in wall time, though the reported round trip excludes it.
//!
//! When the ping's packet is not the largest the ACK acknowledges (another
//! packet went after it before the ACK was written), the ack delay refers
//! to that later packet, which the peer received no earlier: the delay
//! subtracted is then at most what the ping's packet waited, and the round
//! trip reported is an upper bound. A ping whose packet is not
//! acknowledged within its timeout is reported lost (its PING frame is
//! never retransmitted, as an ICMP echo is not); so is every ping still
//! waiting when the transport closes.

use core::time::Duration;

use heapless::Vec;

use crate::time::Instant;

/// Most pings waiting for their answer at once ([`super::Transport::ping`]
/// refuses more with [`PingError::TooMany`]).
pub const MAX_PENDING_PINGS: usize = 8;
/// Shortest timeout a ping takes (a smaller one is raised to it).
pub const MIN_PING_TIMEOUT: Duration = Duration::from_millis(1);

/// Why a ping was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingError {
    /// The data channel is not up (still punching, closing, or ended).
    NotConnected,
    /// [`MAX_PENDING_PINGS`] are waiting for their answer already.
    TooMany,
}

impl core::fmt::Display for PingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PingError::NotConnected => f.write_str("peer channel not connected"),
            PingError::TooMany => f.write_str("too many pings waiting for an answer"),
        }
    }
}

impl core::error::Error for PingError {}

/// One ping waiting for its answer.
#[derive(Debug, Clone, Copy)]
struct Pending {
    id: u32,
    /// The packet that carries it, once written.
    pn: Option<u64>,
    /// When that packet was written.
    sent_at: Instant,
    /// When it counts as lost.
    deadline: Instant,
}

/// What became of a ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingOutcome {
    /// Its packet was acknowledged: the round trip, the peer's ack delay
    /// subtracted.
    Answered {
        /// The ping.
        id: u32,
        /// The round trip.
        rtt: Duration,
    },
    /// No acknowledgement within its timeout, or the transport closed.
    Lost {
        /// The ping.
        id: u32,
    },
}

/// The pings waiting for their answer. Bounded by [`MAX_PENDING_PINGS`].
#[derive(Debug, Clone, Default)]
pub struct PingTable {
    pending: Vec<Pending, MAX_PENDING_PINGS>,
    next_id: u32,
}

impl PingTable {
    /// Registers a ping at `now` that is lost after `timeout`; its id.
    pub fn start(&mut self, now: Instant, timeout: Duration) -> Result<u32, PingError> {
        let id = self.next_id;
        let ping = Pending {
            id,
            pn: None,
            sent_at: now,
            deadline: now + timeout.max(MIN_PING_TIMEOUT),
        };
        self.pending.push(ping).map_err(|_| PingError::TooMany)?;
        self.next_id = self.next_id.wrapping_add(1);
        Ok(id)
    }

    /// Whether a ping waits for a packet to carry it.
    pub fn unsent(&self) -> bool {
        self.pending.iter().any(|p| p.pn.is_none())
    }

    /// Packet `pn`, ack-eliciting, was written at `now`: it carries every
    /// ping not yet sent.
    pub fn on_sent(&mut self, now: Instant, pn: u64) {
        for p in self.pending.iter_mut().filter(|p| p.pn.is_none()) {
            p.pn = Some(pn);
            p.sent_at = now;
        }
    }

    /// An ACK at `now` acknowledged packets `low..=high` with `ack_delay`
    /// (reported by the peer for the ACK's largest): each ping carried in
    /// that range is answered through `report`.
    pub fn on_acked(
        &mut self,
        now: Instant,
        low: u64,
        high: u64,
        ack_delay: Duration,
        mut report: impl FnMut(PingOutcome),
    ) {
        self.pending.retain(|p| {
            if !p.pn.is_some_and(|pn| (low..=high).contains(&pn)) {
                return true;
            }
            let latest = now - p.sent_at;
            // A delay above the sample itself is nonsense: not subtracted.
            let rtt = latest.checked_sub(ack_delay).unwrap_or(latest);
            report(PingOutcome::Answered { id: p.id, rtt });
            false
        });
    }

    /// Reports as lost every ping whose timeout passed at `now`.
    pub fn expire(&mut self, now: Instant, mut report: impl FnMut(PingOutcome)) {
        self.pending.retain(|p| {
            if now >= p.deadline {
                report(PingOutcome::Lost { id: p.id });
                false
            } else {
                true
            }
        });
    }

    /// Reports every waiting ping as lost (the transport closed).
    pub fn fail_all(&mut self, mut report: impl FnMut(PingOutcome)) {
        for p in self.pending.iter() {
            report(PingOutcome::Lost { id: p.id });
        }
        self.pending.clear();
    }

    /// When the next waiting ping times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.deadline).min()
    }
}
