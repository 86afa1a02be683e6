//! The relay's machine: the allocations it keeps, what it forwards, and its
//! limits, sans-IO.
//!
//! A relay is a forwarder: its answer to a datagram is at most that same
//! datagram, to another address. So instead of writing transmits into a
//! buffer, [`Relay::handle_datagram`] returns where the driver should send
//! the bytes it just received, unchanged (no copy, and never more bytes out
//! than in). Ended allocations come out of [`Relay::poll_event`] with their
//! byte counts, for the session record; [`Relay::poll_timeout`] and
//! [`Relay::handle_timeout`] end allocations at their deadline.
//!
//! # Limits
//! - Only a bind with a valid, unexpired token makes state, and at most
//!   [`RelayConfig::max_allocations`] allocations exist at once.
//! - An allocation lasts the token's duration from its first bind (plus
//!   [`RelayConfig::grace`] for the peers' closing exchange), is moved by
//!   [`Relay::extend`] and ended at once by [`Relay::end_session`] (the
//!   session server's forced end); an ended session cannot bind again
//!   while its tokens are valid.
//! - Per allocation: a byte budget ([`RelayConfig::max_bytes_per_session`],
//!   which ends it) and a byte rate ([`RelayConfig::bytes_per_second`]),
//!   and an idle timeout.
//! - The rate shapes rather than polices: a packet over it waits in the
//!   session's own queue (at most [`RelayConfig::queue_bytes`], and all
//!   sessions' queues together at most [`RelayConfig::max_queued_bytes`])
//!   and leaves, once, when the rate allows ([`Relay::poll_release`]); only
//!   what overflows the queue is dropped. A policer that dropped every
//!   packet over the rate made a fast sender lose a burst per round trip
//!   and resend most of the file (1.65x its bytes crossed the relay in the
//!   simulator); a queue delays it instead, the sender's round trip grows
//!   and its window settles, as behind any bottleneck router. The queue
//!   sends nothing a peer did not send, at the same rate: no amplification,
//!   no more than the session's rate.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use super::queue::ForwardQueue;
use super::{decode_bind, is_bind, RelayKey, RelayToken};
use crate::machine::{Destination, Input, Machine, Output, Transmit};
use crate::peer::packet::Packet;
use crate::time::{Clock, Instant};
use crate::wire::{Role, SessionId};

/// Default most allocations at once.
pub const DEFAULT_MAX_ALLOCATIONS: usize = 1024;
/// Default byte budget of one session (both directions): 4 GiB.
pub const DEFAULT_MAX_BYTES_PER_SESSION: u64 = 4 << 30;
/// Default byte rate of one session (both directions): 12.5 MB/s (100 Mbit/s).
pub const DEFAULT_BYTES_PER_SECOND: u64 = 12_500_000;
/// Default burst of one session's byte rate.
pub const DEFAULT_BURST_BYTES: u64 = 1 << 20;
/// Default most bytes one session's packets wait over the rate, per
/// direction: 2 MiB (168 ms at the default rate). With the 1 MiB burst it
/// holds what a peer's window reaches on a fast path before its round trip
/// grows (256 KiB dropped a burst per round trip in the simulator, and the
/// sender resent 65% of the file).
pub const DEFAULT_QUEUE_BYTES: u64 = 2 << 20;
/// Default most bytes all sessions' packets wait at once: 64 MiB.
pub const DEFAULT_MAX_QUEUED_BYTES: u64 = 64 << 20;
/// Default idle time after which an allocation ends.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time past the permitted duration the relay still forwards (the
/// peers' CLOSE and its acknowledgement).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// Most ended sessions remembered (so their tokens cannot bind again), as a
/// multiple of the allocation capacity.
pub const TOMBSTONES_PER_ALLOCATION: usize = 2;

/// The relay's settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The key shared with the session server.
    pub key: RelayKey,
    /// Unix seconds at the driver's [`Instant::ZERO`], to check token expiry.
    pub unix_at_zero: u64,
    /// Most allocations at once.
    pub max_allocations: usize,
    /// Byte budget of one session, both directions.
    pub max_bytes_per_session: u64,
    /// Byte rate of one session, both directions.
    pub bytes_per_second: u64,
    /// Burst of that rate.
    pub burst_bytes: u64,
    /// Most bytes of one session's packets waiting over the rate, per
    /// direction (0: drop every packet over it).
    pub queue_bytes: u64,
    /// Most bytes waiting over the rate in all sessions together, the
    /// queues' memory bound.
    pub max_queued_bytes: u64,
    /// An allocation with nothing forwarded for this long ends.
    pub idle_timeout: Duration,
    /// Forwarding past the permitted duration.
    pub grace: Duration,
}

impl RelayConfig {
    /// The defaults, with the given key and clock origin.
    pub fn new(key: RelayKey, unix_at_zero: u64) -> RelayConfig {
        RelayConfig {
            key,
            unix_at_zero,
            max_allocations: DEFAULT_MAX_ALLOCATIONS,
            max_bytes_per_session: DEFAULT_MAX_BYTES_PER_SESSION,
            bytes_per_second: DEFAULT_BYTES_PER_SECOND,
            burst_bytes: DEFAULT_BURST_BYTES,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            grace: DEFAULT_GRACE,
        }
    }
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum RelayEndReason {
    /// The permitted duration (with its extensions) ran out.
    Expired,
    /// The session server ended the session.
    Ended,
    /// The session's byte budget was used up.
    ByteLimit,
    /// Nothing was forwarded for the idle timeout.
    Idle,
}

/// What the relay reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEvent {
    /// A session's first valid bind made an allocation.
    Allocated {
        /// The session.
        session_id: SessionId,
    },
    /// An allocation ended; its byte counts go into the session record.
    Ended {
        /// The session.
        session_id: SessionId,
        /// Why.
        reason: RelayEndReason,
        /// Bytes forwarded from the connecting side (requester).
        from_requester: u64,
        /// Bytes forwarded from the connected side (target).
        from_target: u64,
    },
}

/// Counters for the operator's log and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Valid binds taken.
    pub binds: u64,
    /// Binds refused: bad token, expired, ended session, or no capacity.
    pub binds_refused: u64,
    /// Packets forwarded.
    pub forwarded: u64,
    /// Bytes forwarded.
    pub forwarded_bytes: u64,
    /// Packets dropped: not a peer packet, no allocation, unbound sender
    /// or peer, over the rate.
    pub dropped: u64,
    /// Of those, dropped for the rate (their session's queue was full).
    pub rate_limited: u64,
    /// Packets that waited in their session's queue over the rate (and
    /// left later: counted in `forwarded` then).
    pub queued: u64,
}

#[derive(Debug)]
struct Allocation {
    session_id: SessionId,
    /// Bound address per side: `[connecting, connected]`.
    sides: [Option<SocketAddr>; 2],
    bytes: [u64; 2],
    /// When the first bind came, and the permitted duration from it.
    bound_at: Instant,
    granted_secs: u32,
    deadline: Instant,
    last_active: Instant,
    not_after: u32,
    /// Byte bucket: tokens and when it was last filled.
    allowance: u64,
    filled: Instant,
    /// Packets waiting for the rate, oldest first: the side they go to and
    /// their bytes.
    held: VecDeque<(usize, Vec<u8>)>,
    /// Bytes in `held`, by the side they come from: each direction has
    /// its own share, so one side's flood never drops the other's
    /// acknowledgements.
    held_from: [u64; 2],
    /// Bytes in `held`.
    held_bytes: u64,
}

impl Allocation {
    /// Refills the byte bucket up to `now`.
    fn refill(&mut self, now: Instant, rate: u64, burst: u64) {
        let elapsed = now.saturating_duration_since(self.filled);
        let refill = (elapsed.as_micros() as u64).saturating_mul(rate) / 1_000_000;
        if refill > 0 {
            self.allowance = self.allowance.saturating_add(refill).min(burst);
            self.filled = now;
        }
    }

    /// When the oldest waiting packet may leave, if one waits.
    fn release_at(&self, rate: u64) -> Option<Instant> {
        let (_, head) = self.held.front()?;
        let missing = (head.len() as u64).saturating_sub(self.allowance);
        let wait_us = missing.saturating_mul(1_000_000).div_ceil(rate.max(1));
        Some(self.filled.saturating_add(Duration::from_micros(wait_us)))
    }
}

fn side(role: Role) -> usize {
    match role {
        Role::Connecting => 0,
        Role::Connected => 1,
    }
}

/// The relay machine. Deterministic; no random source needed.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    clock: Clock,
    /// By channel number (the first 8 bytes of the session ID).
    allocations: BTreeMap<u64, Allocation>,
    /// Ended sessions' channels and their tokens' `not_after`.
    ended: BTreeMap<u64, u32>,
    events: VecDeque<RelayEvent>,
    stats: RelayStats,
    /// Channels whose queue holds packets.
    backlogged: BTreeSet<u64>,
    /// Bytes waiting in all queues.
    held_bytes: u64,
    /// The forwards the datagram inputs since the last poll asked for, in
    /// order (the [`Machine`] form copies them out in `poll_output`).
    pending: ForwardQueue,
}

impl Relay {
    /// A relay with no allocations.
    pub fn new(config: RelayConfig) -> Relay {
        Relay {
            config,
            clock: Clock::default(),
            allocations: BTreeMap::new(),
            ended: BTreeMap::new(),
            events: VecDeque::new(),
            stats: RelayStats::default(),
            backlogged: BTreeSet::new(),
            held_bytes: 0,
            pending: ForwardQueue::new(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// Allocations now.
    pub fn allocations(&self) -> usize {
        self.allocations.len()
    }

    /// Whether a session has an allocation now.
    pub fn has_allocation(&self, session_id: &SessionId) -> bool {
        self.allocations
            .get(&crate::peer::handshake::channel_id(session_id))
            .is_some_and(|a| a.session_id == *session_id)
    }

    fn unix_secs(&self, now: Instant) -> u64 {
        self.config.unix_at_zero + now.saturating_duration_since(Instant::ZERO).as_secs()
    }

    /// A datagram arrived from `from`. Returns where to send the same bytes
    /// now (`None`: nothing now, and no answer: dropped, or waiting in its
    /// session's queue for [`Self::poll_release`]).
    #[must_use]
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Option<SocketAddr> {
        let now = self.clock.observe(now);
        if is_bind(datagram) {
            self.on_bind(now, from, datagram);
            return None;
        }
        let queued = self.stats.queued;
        let forwarded = self.forward(now, from, datagram);
        if forwarded.is_none() && self.stats.queued == queued {
            self.stats.dropped += 1;
        }
        forwarded
    }

    fn on_bind(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let unix = self.unix_secs(now);
        let Ok(token) = decode_bind(datagram, &self.config.key, unix) else {
            self.stats.binds_refused += 1;
            return;
        };
        let channel = token.channel();
        if self.ended.contains_key(&channel) {
            self.stats.binds_refused += 1;
            return;
        }
        if let Some(a) = self.allocations.get_mut(&channel) {
            if a.session_id != token.session_id {
                self.stats.binds_refused += 1;
                return;
            }
            // One address is never both sides: that would reflect a
            // side's packets back to itself.
            if a.sides[1 - side(token.role)] == Some(from) {
                self.stats.binds_refused += 1;
                return;
            }
            a.sides[side(token.role)] = Some(from);
            self.stats.binds += 1;
            return;
        }
        if self.allocations.len() >= self.config.max_allocations {
            self.stats.binds_refused += 1;
            return;
        }
        self.allocate(now, from, &token);
    }

    fn allocate(&mut self, now: Instant, from: SocketAddr, token: &RelayToken) {
        let mut sides = [None, None];
        sides[side(token.role)] = Some(from);
        let deadline = now
            .saturating_add(Duration::from_secs(u64::from(token.duration_secs)))
            .saturating_add(self.config.grace);
        self.allocations.insert(
            token.channel(),
            Allocation {
                session_id: token.session_id,
                sides,
                bytes: [0, 0],
                bound_at: now,
                granted_secs: token.duration_secs,
                deadline,
                last_active: now,
                not_after: token.not_after,
                allowance: self.config.burst_bytes,
                filled: now,
                held: VecDeque::new(),
                held_from: [0, 0],
                held_bytes: 0,
            },
        );
        self.stats.binds += 1;
        self.events.push_back(RelayEvent::Allocated {
            session_id: token.session_id,
        });
    }

    fn forward(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Option<SocketAddr> {
        let channel = Packet::decode(datagram).ok()?.channel();
        let a = self.allocations.get_mut(&channel)?;
        if now >= a.deadline {
            return None;
        }
        let from_side = a.sides.iter().position(|s| *s == Some(from))?;
        let to = a.sides[1 - from_side]?;
        let len = datagram.len() as u64;
        let total = a.bytes[0] + a.bytes[1] + a.held_bytes + len;
        if total > self.config.max_bytes_per_session {
            self.end_channel(channel, RelayEndReason::ByteLimit);
            return None;
        }
        a.refill(now, self.config.bytes_per_second, self.config.burst_bytes);
        a.last_active = now;
        if a.held.is_empty() && a.allowance >= len {
            a.allowance -= len;
            a.bytes[from_side] += len;
            self.stats.forwarded += 1;
            self.stats.forwarded_bytes += len;
            return Some(to);
        }
        // Over the rate (or behind packets that are): wait in the
        // session's queue if it and the relay's have room, else drop.
        let fits = a.held_from[from_side] + len <= self.config.queue_bytes
            && self.held_bytes + len <= self.config.max_queued_bytes
            && len <= self.config.burst_bytes
            && self.config.bytes_per_second > 0;
        if !fits {
            self.stats.rate_limited += 1;
            return None;
        }
        a.held.push_back((1 - from_side, datagram.to_vec()));
        a.held_bytes += len;
        a.held_from[from_side] += len;
        self.held_bytes += len;
        self.backlogged.insert(channel);
        self.stats.queued += 1;
        None
    }

    /// A packet that waited for its session's rate and may leave now:
    /// copied into `buf`, with where it goes. Call until `None` after
    /// every input and timeout; [`Self::poll_timeout`] says when the next
    /// one is due.
    pub fn poll_release(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        let now = self.clock.observe(now);
        let rate = self.config.bytes_per_second;
        let burst = self.config.burst_bytes;
        let channels: Vec<u64> = self.backlogged.iter().copied().collect();
        for channel in channels {
            let Some(a) = self.allocations.get_mut(&channel) else {
                self.backlogged.remove(&channel);
                continue;
            };
            a.refill(now, rate, burst);
            let Some((to_side, head)) = a.held.front() else {
                self.backlogged.remove(&channel);
                continue;
            };
            let len = head.len() as u64;
            if a.allowance < len {
                continue;
            }
            let to_side = *to_side;
            let Some((_, bytes)) = a.held.pop_front() else {
                continue;
            };
            a.held_bytes -= len;
            a.held_from[1 - to_side] -= len;
            self.held_bytes -= len;
            if a.held.is_empty() {
                self.backlogged.remove(&channel);
            }
            let (Some(to), Some(out)) = (a.sides[to_side], buf.get_mut(..bytes.len())) else {
                continue;
            };
            out.copy_from_slice(&bytes);
            a.allowance -= len;
            a.bytes[1 - to_side] += len;
            self.stats.forwarded += 1;
            self.stats.forwarded_bytes += len;
            return Some((to, bytes.len()));
        }
        None
    }

    /// Bytes waiting over the rate, in all sessions.
    pub fn queued_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// The session server extended the session: its whole permitted
    /// duration is now `duration_secs`, from the start (as
    /// `SessionExtended` says). The deadline only moves later; unknown
    /// sessions are ignored.
    pub fn extend(&mut self, session_id: &SessionId, duration_secs: u32) {
        let channel = crate::peer::handshake::channel_id(session_id);
        let grace = self.config.grace;
        if let Some(a) = self.allocations.get_mut(&channel) {
            if a.session_id == *session_id && duration_secs > a.granted_secs {
                let added = duration_secs - a.granted_secs;
                a.granted_secs = duration_secs;
                a.deadline = a
                    .bound_at
                    .saturating_add(Duration::from_secs(u64::from(duration_secs)))
                    .saturating_add(grace);
                a.not_after = a.not_after.saturating_add(added);
            }
        }
    }

    /// The session server ended the session: its allocation ends now and
    /// its tokens bind nothing any more.
    pub fn end_session(&mut self, session_id: &SessionId) {
        let channel = crate::peer::handshake::channel_id(session_id);
        if self
            .allocations
            .get(&channel)
            .is_some_and(|a| a.session_id == *session_id)
        {
            self.end_channel(channel, RelayEndReason::Ended);
        }
    }

    fn end_channel(&mut self, channel: u64, reason: RelayEndReason) {
        let Some(a) = self.allocations.remove(&channel) else {
            return;
        };
        self.held_bytes -= a.held_bytes;
        self.backlogged.remove(&channel);
        let cap = self
            .config
            .max_allocations
            .saturating_mul(TOMBSTONES_PER_ALLOCATION)
            .max(1);
        if self.ended.len() >= cap {
            // Forget the tombstone that expires first.
            if let Some((&oldest, _)) = self.ended.iter().min_by_key(|(_, &t)| t) {
                self.ended.remove(&oldest);
            }
        }
        self.ended.insert(channel, a.not_after);
        self.events.push_back(RelayEvent::Ended {
            session_id: a.session_id,
            reason,
            from_requester: a.bytes[0],
            from_target: a.bytes[1],
        });
    }

    /// Ends the allocations whose deadline or idle timeout is due, and
    /// forgets tombstones whose tokens have expired.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        let idle = self.config.idle_timeout;
        let due: alloc::vec::Vec<(u64, RelayEndReason)> = self
            .allocations
            .iter()
            .filter_map(|(&c, a)| {
                if now >= a.deadline {
                    Some((c, RelayEndReason::Expired))
                } else if now >= a.last_active.saturating_add(idle) {
                    Some((c, RelayEndReason::Idle))
                } else {
                    None
                }
            })
            .collect();
        for (channel, reason) in due {
            self.end_channel(channel, reason);
        }
        let unix = self.unix_secs(now);
        self.ended
            .retain(|_, not_after| u64::from(*not_after) >= unix);
    }

    /// When [`Self::handle_timeout`] should next run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.config.idle_timeout;
        let ends = self
            .allocations
            .values()
            .map(|a| a.deadline.min(a.last_active.saturating_add(idle)));
        let rate = self.config.bytes_per_second;
        let releases = self
            .backlogged
            .iter()
            .filter_map(|c| self.allocations.get(c))
            .filter_map(|a| a.release_at(rate));
        ends.chain(releases).min()
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }
}

/// The relay in the driver contract every role shares: a datagram in, at
/// most one transmit out (the same bytes, from the local address the
/// datagram came to); no facts, no streams.
impl Machine for Relay {
    type Fact = core::convert::Infallible;
    type Event = RelayEvent;
    type Io = ();

    fn handle_input(&mut self, now: Instant, input: Input<'_>, _io: &mut ()) {
        match input {
            Input::Datagram { from, local, bytes } => {
                if let Some(to) = self.handle_datagram(now, from, bytes) {
                    let _ = self.pending.push(Destination::Udp(to), local, &[bytes]);
                }
            }
            // The relay takes no streams.
            _ => {
                self.clock.observe(now);
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        Relay::handle_timeout(self, now);
    }

    fn poll_output(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        _io: &mut (),
    ) -> Output<core::convert::Infallible, RelayEvent> {
        if let Some(event) = self.events.pop_front() {
            return Output::Event(event);
        }
        if let Some(transmit) = self.pending.pop(buf) {
            return Output::Transmit(transmit);
        }
        if let Some((to, len)) = self.poll_release(now, buf) {
            return Output::Transmit(Transmit {
                destination: Destination::Udp(to),
                local: None,
                len,
            });
        }
        Output::Timeout(Relay::poll_timeout(self))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Relay::poll_timeout(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::packet::Packet;
    use crate::relay::{encode_bind, RELAY_BIND_LEN, RELAY_KEY_LEN};
    use std::vec::Vec;

    const A: &str = "192.0.2.1:4000";
    const B: &str = "198.51.100.2:5000";
    const EVIL: &str = "203.0.113.9:666";
    const SID: SessionId = SessionId([9; 16]);
    const UNIX0: u64 = 1_000_000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn key() -> RelayKey {
        RelayKey([1; RELAY_KEY_LEN])
    }

    fn bind(session_id: SessionId, role: Role, duration: u32) -> [u8; RELAY_BIND_LEN] {
        let token = RelayToken::mint(&key(), session_id, role, (UNIX0 + 100) as u32, duration);
        let mut buf = [0u8; RELAY_BIND_LEN];
        let _ = encode_bind(&token, &mut buf);
        buf
    }

    fn probe(session_id: &SessionId) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let n = Packet::Probe {
            channel: crate::peer::handshake::channel_id(session_id),
            seq: 1,
        }
        .encode(&mut buf)
        .unwrap();
        buf[..n].to_vec()
    }

    fn relay() -> Relay {
        Relay::new(RelayConfig::new(key(), UNIX0))
    }

    fn t(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    fn bound(r: &mut Relay, duration: u32) {
        assert_eq!(
            r.handle_datagram(t(0), addr(A), &bind(SID, Role::Connecting, duration)),
            None
        );
        assert_eq!(
            r.handle_datagram(t(0), addr(B), &bind(SID, Role::Connected, duration)),
            None
        );
    }

    #[test]
    fn relay_forwards_peer_packets_between_the_bound_sides_unchanged() {
        let mut r = relay();
        bound(&mut r, 60);
        let p = probe(&SID);
        assert_eq!(r.handle_datagram(t(1), addr(A), &p), Some(addr(B)));
        assert_eq!(r.handle_datagram(t(1), addr(B), &p), Some(addr(A)));
        assert_eq!(r.stats().forwarded_bytes, 2 * p.len() as u64);
        assert!(
            matches!(r.poll_event(), Some(RelayEvent::Allocated { session_id }) if session_id == SID)
        );
    }

    #[test]
    fn relay_without_a_valid_allocation_keeps_no_state_and_answers_nothing() {
        let mut r = relay();
        // A forged token, a token under another key, and bare peer packets.
        let mut forged = bind(SID, Role::Connecting, 60);
        forged[RELAY_BIND_LEN - 1] ^= 1;
        assert_eq!(r.handle_datagram(t(0), addr(EVIL), &forged), None);
        let other = RelayToken::mint(&RelayKey([2; 32]), SID, Role::Connecting, u32::MAX, 60);
        let mut buf = [0u8; RELAY_BIND_LEN];
        let _ = encode_bind(&other, &mut buf);
        assert_eq!(r.handle_datagram(t(0), addr(EVIL), &buf), None);
        assert_eq!(r.handle_datagram(t(0), addr(EVIL), &probe(&SID)), None);
        assert_eq!(r.handle_datagram(t(0), addr(EVIL), b"garbage"), None);
        assert_eq!(r.allocations(), 0);
        assert_eq!(r.poll_event(), None);
        assert_eq!(r.stats().binds_refused, 2);
    }

    #[test]
    fn relay_refuses_an_expired_token() {
        let mut r = relay();
        // not_after is UNIX0 + 100: at 101 s it binds nothing.
        assert_eq!(
            r.handle_datagram(t(101_000), addr(A), &bind(SID, Role::Connecting, 60)),
            None
        );
        assert_eq!(r.allocations(), 0);
    }

    #[test]
    fn relay_forwards_nothing_from_a_stranger_or_to_an_unbound_side() {
        let mut r = relay();
        let _ = r.handle_datagram(t(0), addr(A), &bind(SID, Role::Connecting, 60));
        // B is not bound yet: nothing to forward to.
        assert_eq!(r.handle_datagram(t(1), addr(A), &probe(&SID)), None);
        let _ = r.handle_datagram(t(0), addr(B), &bind(SID, Role::Connected, 60));
        // A stranger who knows the channel gets nothing through.
        assert_eq!(r.handle_datagram(t(1), addr(EVIL), &probe(&SID)), None);
        // Another channel from a bound address: no allocation.
        assert_eq!(
            r.handle_datagram(t(1), addr(A), &probe(&SessionId([5; 16]))),
            None
        );
    }

    #[test]
    fn relay_never_binds_one_address_as_both_sides() {
        let mut r = relay();
        let _ = r.handle_datagram(t(0), addr(A), &bind(SID, Role::Connecting, 60));
        // The other side's token from the same address is refused: the relay
        // would otherwise send A's packets back to A.
        let _ = r.handle_datagram(t(0), addr(A), &bind(SID, Role::Connected, 60));
        assert_eq!(r.stats().binds_refused, 1);
        assert_eq!(r.handle_datagram(t(1), addr(A), &probe(&SID)), None);
        // The real other side still binds.
        let _ = r.handle_datagram(t(2), addr(B), &bind(SID, Role::Connected, 60));
        assert_eq!(
            r.handle_datagram(t(3), addr(A), &probe(&SID)),
            Some(addr(B))
        );
    }

    #[test]
    fn relay_enforces_the_duration_and_an_extension() {
        let mut r = relay();
        bound(&mut r, 10);
        let p = probe(&SID);
        // Duration 10 s plus 5 s grace.
        assert_eq!(r.handle_datagram(t(14_000), addr(A), &p), Some(addr(B)));
        r.extend(&SID, 20);
        // A stale, shorter total moves nothing.
        r.extend(&SID, 15);
        assert_eq!(r.handle_datagram(t(24_000), addr(A), &p), Some(addr(B)));
        assert_eq!(r.poll_timeout(), Some(t(25_000)));
        r.handle_timeout(t(25_000));
        assert_eq!(r.handle_datagram(t(25_000), addr(A), &p), None);
        let _ = r.poll_event();
        assert!(matches!(
            r.poll_event(),
            Some(RelayEvent::Ended { reason: RelayEndReason::Expired, from_requester, .. })
                if from_requester == 2 * p.len() as u64
        ));
        // The ended session's tokens cannot make a new allocation.
        let _ = r.handle_datagram(t(26_000), addr(A), &bind(SID, Role::Connecting, 10));
        assert_eq!(r.allocations(), 0);
    }

    #[test]
    fn relay_forced_end_stops_forwarding_and_reports_bytes() {
        let mut r = relay();
        bound(&mut r, 60);
        let p = probe(&SID);
        assert!(r.handle_datagram(t(1), addr(B), &p).is_some());
        r.end_session(&SID);
        assert_eq!(r.handle_datagram(t(2), addr(B), &p), None);
        let _ = r.poll_event();
        assert_eq!(
            r.poll_event(),
            Some(RelayEvent::Ended {
                session_id: SID,
                reason: RelayEndReason::Ended,
                from_requester: 0,
                from_target: p.len() as u64,
            })
        );
        let _ = r.handle_datagram(t(3), addr(B), &bind(SID, Role::Connected, 60));
        assert!(!r.has_allocation(&SID));
    }

    #[test]
    fn relay_capacity_bounds_allocations() {
        let mut config = RelayConfig::new(key(), UNIX0);
        config.max_allocations = 1;
        let mut r = Relay::new(config);
        let _ = r.handle_datagram(t(0), addr(A), &bind(SID, Role::Connecting, 60));
        let _ = r.handle_datagram(
            t(0),
            addr(A),
            &bind(SessionId([4; 16]), Role::Connecting, 60),
        );
        assert_eq!(r.allocations(), 1);
        assert!(!r.has_allocation(&SessionId([4; 16])));
    }

    #[test]
    fn relay_byte_rate_drops_and_byte_budget_ends() {
        let mut config = RelayConfig::new(key(), UNIX0);
        let p = probe(&SID);
        let len = p.len() as u64;
        config.burst_bytes = 2 * len;
        config.bytes_per_second = len; // one probe a second
        config.max_bytes_per_session = 4 * len;
        config.queue_bytes = 0; // a policer: over the rate is dropped
        let mut r = Relay::new(config);
        bound(&mut r, 60);
        assert!(r.handle_datagram(t(0), addr(A), &p).is_some());
        assert!(r.handle_datagram(t(0), addr(A), &p).is_some());
        assert_eq!(r.handle_datagram(t(0), addr(A), &p), None);
        assert_eq!(r.stats().rate_limited, 1);
        assert!(r.handle_datagram(t(1_000), addr(A), &p).is_some());
        assert!(r.handle_datagram(t(2_000), addr(A), &p).is_some());
        // The fifth would pass the budget of four: the allocation ends.
        assert_eq!(r.handle_datagram(t(3_000), addr(A), &p), None);
        assert!(!r.has_allocation(&SID));
    }

    #[test]
    fn relay_queues_over_the_rate_and_releases_at_the_rate_in_order() {
        let mut config = RelayConfig::new(key(), UNIX0);
        let p = probe(&SID);
        let len = p.len() as u64;
        config.burst_bytes = len;
        config.bytes_per_second = len * 1000; // one probe a millisecond
        config.queue_bytes = 3 * len;
        let mut r = Relay::new(config);
        bound(&mut r, 60);
        // The burst passes at once; the next three wait; the fifth
        // overflows the session's queue and is dropped.
        assert_eq!(r.handle_datagram(t(0), addr(A), &p), Some(addr(B)));
        for _ in 0..3 {
            assert_eq!(r.handle_datagram(t(0), addr(A), &p), None);
        }
        assert_eq!(r.handle_datagram(t(0), addr(A), &p), None);
        let s = *r.stats();
        assert_eq!((s.queued, s.rate_limited, s.dropped), (3, 1, 1));
        assert_eq!(r.queued_bytes(), 3 * len);
        let mut buf = [0u8; crate::machine::MAX_TRANSMIT_LEN];
        // Nothing leaves before the rate allows; the timer says when.
        assert_eq!(r.poll_release(t(0), &mut buf), None);
        assert_eq!(r.poll_timeout(), Some(t(1)));
        // One a millisecond, each once, the same bytes.
        for ms in 1..=3 {
            assert_eq!(r.poll_release(t(ms), &mut buf), Some((addr(B), p.len())));
            assert_eq!(&buf[..p.len()], &p[..]);
            assert_eq!(r.poll_release(t(ms), &mut buf), None);
        }
        assert_eq!(r.queued_bytes(), 0);
        assert_eq!(r.stats().forwarded, 4);
        assert_eq!(r.stats().forwarded_bytes, 4 * len);
        // Never more than the rate: 4 probes in 3 ms with a 1-probe burst.
    }

    #[test]
    fn relay_queue_is_bounded_in_all_and_freed_at_the_end() {
        let mut config = RelayConfig::new(key(), UNIX0);
        let p = probe(&SID);
        let other = SessionId([3; 16]);
        let q = probe(&other);
        let len = p.len() as u64;
        config.burst_bytes = len;
        config.bytes_per_second = len;
        config.queue_bytes = 4 * len;
        config.max_queued_bytes = 2 * len;
        let mut r = Relay::new(config);
        bound(&mut r, 60);
        let _ = r.handle_datagram(
            t(0),
            addr("192.0.2.7:1"),
            &bind(other, Role::Connecting, 60),
        );
        let _ = r.handle_datagram(t(0), addr("192.0.2.7:2"), &bind(other, Role::Connected, 60));
        // Each session's burst passes; then one session's flood fills the
        // relay's queue memory and no more is kept...
        assert!(r.handle_datagram(t(0), addr(A), &p).is_some());
        assert!(r.handle_datagram(t(0), addr("192.0.2.7:1"), &q).is_some());
        for _ in 0..5 {
            let _ = r.handle_datagram(t(0), addr(A), &p);
        }
        assert_eq!(r.queued_bytes(), 2 * len);
        assert_eq!(r.stats().rate_limited, 3);
        // ...but the other session's own rate still passes when it is due.
        assert!(r
            .handle_datagram(t(1_000), addr("192.0.2.7:1"), &q)
            .is_some());
        // A forced end frees its queue.
        r.end_session(&SID);
        assert_eq!(r.queued_bytes(), 0);
        let mut buf = [0u8; crate::machine::MAX_TRANSMIT_LEN];
        assert_eq!(r.poll_release(t(5_000), &mut buf), None);
    }

    #[test]
    fn relay_as_a_machine_transmits_the_same_bytes_and_nothing_for_a_bind() {
        let mut r = relay();
        let mut buf = [0u8; crate::machine::MAX_TRANSMIT_LEN];
        let mut feed = |r: &mut Relay, from: &str, bytes: &[u8]| {
            let mut bytes = bytes.to_vec();
            let input = Input::Datagram {
                from: addr(from),
                local: None,
                bytes: &mut bytes,
            };
            Machine::handle_input(r, t(0), input, &mut ());
            let mut out = Vec::new();
            loop {
                match Machine::poll_output(r, t(0), &mut buf, &mut ()) {
                    Output::Transmit(tx) => out.push((tx.destination, buf[..tx.len].to_vec())),
                    Output::Timeout(_) => return out,
                    _ => {}
                }
            }
        };
        assert!(feed(&mut r, A, &bind(SID, Role::Connecting, 60)).is_empty());
        assert!(feed(&mut r, B, &bind(SID, Role::Connected, 60)).is_empty());
        let p = probe(&SID);
        assert_eq!(
            feed(&mut r, A, &p),
            std::vec![(Destination::Udp(addr(B)), p.clone())]
        );
        assert!(feed(&mut r, EVIL, &p).is_empty());
    }

    #[test]
    fn relay_rebind_follows_a_new_address_and_idle_ends() {
        let mut r = relay();
        bound(&mut r, 600);
        let moved = addr("192.0.2.1:4001");
        let _ = r.handle_datagram(t(10), moved, &bind(SID, Role::Connecting, 600));
        assert_eq!(r.handle_datagram(t(11), addr(B), &probe(&SID)), Some(moved));
        r.handle_timeout(t(11 + 60_000));
        assert!(!r.has_allocation(&SID));
    }
}
