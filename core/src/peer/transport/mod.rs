// API NOTE for helper A: as in the spec, plus:
// - `write_packet` refuses (None) a `pn` not greater than every pn it was
//   given before; number packets 0, 1, 2… and only advance when it returns Some.
// - `max_payload()` is the payload of the next packet, which can be a PMTU
//   probe larger than the current PMTU; size the buffer with it or with
//   `MAX_PAYLOAD_LEN` (a smaller buffer only postpones probes).
// - `TransportConfig::default()` has the spec's values; `Transport::mtu()`,
//   `is_closed()`, `max_datagram_len()` are extras.
// - `handle_packet` returns `Ok(())` for duplicates (already received pn)
//   and for packets it drops unacknowledged (see `TransportStats::packets_dropped`).
// - `stream_finish(len)` also makes `[0, len)` available (no extend needed).
// - A `Transport` is ~160 KB (the 4096-entry sent-packet ring): keep sessions
//   in a Box/static in drivers, not several by value on a thread stack.

//! The transport inside a peer Data packet: plaintext frames, no crypto,
//! no addresses.
//!
//! The session hands it each authenticated packet's number and plaintext
//! ([`Transport::handle_packet`]) and asks it for the next packet's payload
//! ([`Transport::write_packet`]). It provides one reliable byte stream each
//! way (the application keeps the bytes: [`StreamSource`] reads them by
//! offset, [`PeerSink`] receives them by offset) and unreliable datagrams,
//! with loss recovery and NewReno congestion control per RFC 9002, a pacer,
//! flow control, PMTU discovery (RFC 8899 style), keepalives and an idle
//! timer. The frame bytes are described in [`frame`].
//!
//! Sans-IO: time comes in as [`Instant`]; [`Transport::poll_timeout`] says
//! when to call [`Transport::handle_timeout`]; after `handle_timeout(now)`,
//! `poll_timeout()` is `None`, later than `now`, or `write_packet` has
//! something to send. No allocation: every bound is a named constant.

pub mod congestion;
pub mod datagram;
pub mod frame;
pub mod ping;
pub mod pmtu;
pub mod ranges;
pub mod recovery;
pub mod stream;

#[cfg(test)]
mod tests;

use core::time::Duration;

use heapless::Deque;

use crate::time::{Clock, Instant};

use congestion::{NewReno, Pacer};
use datagram::DatagramQueue;
pub use datagram::{DatagramError, MAX_APP_DATAGRAM_LEN, MAX_QUEUED_DATAGRAMS};
use frame::{Frame, Frames, Writer};
pub use frame::{FrameError, MAX_ACK_RANGES};
pub use ping::{PingError, MAX_PENDING_PINGS};
use ping::{PingOutcome, PingTable};
use pmtu::PmtuSearch;
use ranges::RangeSet;
pub use recovery::MAX_PACKETS_IN_FLIGHT;
use recovery::{
    RttEstimator, SentPacket, SentRing, MAX_ACK_DELAY, MAX_PACKET_THRESHOLD, MAX_PTO_BACKOFF,
    MAX_TIME_THRESHOLD_EIGHTHS, PACKET_THRESHOLD, RECENT_LOST, SENT_ACK_ELICITING,
    SENT_ACK_FREQUENCY, SENT_APP_LIMITED, SENT_FIN, SENT_IN_FLIGHT, SENT_MAX_DATA, SENT_MTU_PROBE,
    SENT_STREAM, TIME_THRESHOLD_EIGHTHS,
};
pub use stream::StreamError;
use stream::{RecvStream, SendStream};

/// Most ranges of received packet numbers remembered (for ACK frames); when
/// a new range would exceed it the lowest range is forgotten, and packets
/// below what is remembered are dropped (counted; the peer retransmits).
pub const MAX_RECV_RANGES: usize = 64;
/// Most events waiting for [`Transport::poll_event`] (progress is coalesced
/// separately; past this, new events are dropped and counted).
pub const MAX_EVENTS: usize = 16;
/// Ack-eliciting packets received before an ACK is sent at once, until the
/// peer asks for another number with ACK_FREQUENCY.
pub const ACK_ELICITING_THRESHOLD: u32 = 2;
/// Most ack-eliciting packets a sender asks the peer to take before it
/// acks (ACK_FREQUENCY): fewer ACK packets at high rates, while a window
/// of W packets still gets at least W / [`ACK_FREQUENCY_DIVISOR`] acks.
pub const MAX_ACK_THRESHOLD: u64 = 10;
/// The sender asks for an ack every cwnd / this many packets (at least
/// [`ACK_ELICITING_THRESHOLD`], at most [`MAX_ACK_THRESHOLD`]).
pub const ACK_FREQUENCY_DIVISOR: u64 = 4;
/// Probe packets sent when the probe timeout fires (RFC 9002 §6.2.4).
pub const PTO_PROBES: u8 = 2;
/// Times a CLOSE frame is sent (one probe timeout apart) before the close
/// completes.
pub const CLOSE_SENDS: u8 = 3;
/// Smallest UDP payload size the transport accepts as `base_mtu`.
pub const MIN_MTU: usize = 576;
/// Largest UDP payload size the transport uses (`max_mtu` is capped here).
pub const MAX_MTU: usize = 1472;
/// Largest outer overhead accepted in the config.
pub const MAX_OVERHEAD: usize = 128;
/// The largest payload `write_packet` ever writes.
pub const MAX_PAYLOAD_LEN: usize = MAX_MTU;

/// Default [`TransportConfig::initial_rtt`] (RFC 9002: 333 ms).
pub const DEFAULT_INITIAL_RTT: Duration = Duration::from_millis(333);
/// Default [`TransportConfig::receive_window`]: 16 MiB.
pub const DEFAULT_RECEIVE_WINDOW: u64 = 16 << 20;
/// Default [`TransportConfig::overhead`]: header 6 + channel 8 + pn 8 + tag 16.
pub const DEFAULT_OVERHEAD: usize = 38;
/// Default [`TransportConfig::base_mtu`].
pub const DEFAULT_BASE_MTU: usize = 1200;
/// Default [`TransportConfig::max_mtu`]: 1500 Ethernet - 48 IPv6/UDP.
pub const DEFAULT_MAX_MTU: usize = 1452;
/// Default [`TransportConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Default [`TransportConfig::keepalive_interval`].
pub const DEFAULT_PATH_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Reads stream data by offset: the sender's app keeps the bytes (a file, a
/// ring buffer), so the machine never copies or stores payload.
pub trait StreamSource {
    /// Fills `buf` with the stream's bytes at `offset`; returns how many
    /// (0 = not available yet).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> usize;
}

/// Receives what the peer sent: stream bytes by offset (possibly out of
/// order; the transport delivers each byte range at most once when it can,
/// but sinks must tolerate overlap) and whole datagrams.
pub trait PeerSink {
    /// Stream bytes at `offset`.
    fn stream_data(&mut self, offset: u64, data: &[u8]);
    /// One datagram.
    fn datagram(&mut self, data: &[u8]);
}

/// Tunables of a [`Transport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportConfig {
    /// RTT assumed before the first sample.
    pub initial_rtt: Duration,
    /// Flow control: how far past the delivered prefix the peer may send
    /// (at least `stream::INITIAL_MAX_DATA`).
    pub receive_window: u64,
    /// Bytes the outer packet adds around the payload.
    pub overhead: usize,
    /// UDP payload size always assumed to pass.
    pub base_mtu: usize,
    /// Largest UDP payload size probed.
    pub max_mtu: usize,
    /// No packet from the peer for this long → [`TransportEvent::PeerSilent`].
    pub idle_timeout: Duration,
    /// Send an ack-eliciting PING if nothing ack-eliciting was sent for this long.
    pub keepalive_interval: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            initial_rtt: DEFAULT_INITIAL_RTT,
            receive_window: DEFAULT_RECEIVE_WINDOW,
            overhead: DEFAULT_OVERHEAD,
            base_mtu: DEFAULT_BASE_MTU,
            max_mtu: DEFAULT_MAX_MTU,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keepalive_interval: DEFAULT_PATH_KEEPALIVE_INTERVAL,
        }
    }
}

impl TransportConfig {
    /// The config with every value brought into its accepted range.
    fn clamped(mut self) -> Self {
        self.overhead = self.overhead.min(MAX_OVERHEAD);
        self.base_mtu = self.base_mtu.clamp(MIN_MTU, MAX_MTU);
        self.max_mtu = self.max_mtu.clamp(self.base_mtu, MAX_MTU);
        self.receive_window = self
            .receive_window
            .clamp(stream::INITIAL_MAX_DATA, frame::MAX_VARINT / 2);
        self.initial_rtt = self.initial_rtt.max(Duration::from_micros(1));
        self.keepalive_interval = self.keepalive_interval.max(Duration::from_millis(1));
        self.idle_timeout = self.idle_timeout.max(Duration::from_millis(1));
        self
    }
}

/// What the transport tells the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportEvent {
    /// Every byte of the local stream up to its FIN was acknowledged.
    StreamAcked {
        /// The stream's length.
        len: u64,
    },
    /// The peer's stream is complete: every byte up to its FIN was delivered.
    StreamReceived {
        /// The stream's length.
        len: u64,
    },
    /// The delivered contiguous prefix of the peer's stream grew.
    StreamProgress {
        /// Bytes delivered from offset 0 without a gap.
        contiguous: u64,
    },
    /// The peer closed (its CLOSE frame arrived) or our close finished.
    Closed {
        /// Whether the peer's CLOSE ended it.
        by_peer: bool,
        /// The reason code (the peer's if `by_peer`, else ours).
        reason: u8,
        /// Bytes the peer says it sent (if `by_peer`; else what we received).
        peer_bytes_sent: u64,
        /// Bytes the peer says it received (if `by_peer`; else what it acknowledged).
        peer_bytes_received: u64,
    },
    /// Nothing heard from the peer for `idle_timeout`.
    PeerSilent,
    /// The path MTU changed (probe confirmed, or fell back).
    MtuChanged {
        /// The new UDP payload size.
        mtu: usize,
    },
    /// The packet carrying ping `id` ([`Transport::ping`]) was
    /// acknowledged: the round trip, the peer's ack delay subtracted.
    Pong {
        /// The ping.
        id: u32,
        /// The round trip.
        rtt: Duration,
    },
    /// Ping `id` got no answer within its timeout, or the transport closed
    /// before it did.
    PingLost {
        /// The ping.
        id: u32,
    },
}

/// Counters and current values, for progress, logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Packets written.
    pub packets_sent: u64,
    /// Packets taken (authenticated, not duplicate, well-formed).
    pub packets_received: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Packets ignored: duplicates, below the remembered range, or stream
    /// data too fragmented to record (`MAX_STREAM_RECV_RANGES`).
    pub packets_dropped: u64,
    /// Payloads with a frame error.
    pub frame_errors: u64,
    /// Bytes written including the outer overhead.
    pub bytes_sent: u64,
    /// Payload bytes taken.
    pub bytes_received: u64,
    /// New stream bytes sent (each offset once).
    pub stream_bytes_sent: u64,
    /// Stream bytes sent again after a loss.
    pub stream_bytes_retransmitted: u64,
    /// Stream bytes acknowledged as a contiguous prefix.
    pub stream_bytes_acked: u64,
    /// Stream bytes delivered to the sink (each offset once).
    pub stream_bytes_received: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagram bytes sent.
    pub datagram_bytes_sent: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Datagram bytes received.
    pub datagram_bytes_received: u64,
    /// Datagrams dropped from a full queue (or at close).
    pub datagrams_dropped: u64,
    /// Events dropped from a full queue.
    pub events_dropped: u64,
    /// Probe timeouts fired.
    pub pto_fired: u64,
    /// Congestion events (window reductions).
    pub congestion_events: u64,
    /// Persistent congestion collapses.
    pub persistent_congestion: u64,
    /// Packets declared lost and acknowledged after all (reordering).
    pub spurious_losses: u64,
    /// Current packet reordering threshold (3 until reordering is seen).
    pub packet_threshold: u64,
    /// Smoothed RTT.
    pub rtt: Duration,
    /// Minimum RTT.
    pub min_rtt: Duration,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Bytes in flight.
    pub bytes_in_flight: u64,
    /// Current path MTU (UDP payload size).
    pub mtu: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Closing {
        reason: u8,
        sends_left: u8,
        next: Instant,
    },
    Closed,
}

/// Reliable stream + datagrams + recovery inside the encrypted payload.
#[derive(Debug, Clone)]
pub struct Transport {
    config: TransportConfig,
    clock: Clock,
    state: State,

    // Receiving.
    received: RangeSet<MAX_RECV_RANGES>,
    recv_floor: u64,
    largest_received: Option<u64>,
    largest_received_at: Instant,
    ack_pending: bool,
    eliciting_unacked: u32,
    ack_threshold: u32,
    ack_threshold_pn: Option<u64>,
    ack_now: bool,
    ack_deadline: Option<Instant>,
    last_received: Instant,
    silent_reported: bool,

    // Sending.
    ring: SentRing,
    rtt: RttEstimator,
    cc: NewReno,
    pacer: Pacer,
    bytes_in_flight: u64,
    eliciting_in_flight: usize,
    largest_acked: Option<u64>,
    first_sample_at: Option<Instant>,
    packet_threshold: u64,
    time_eighths: u32,
    recent_lost: heapless::Vec<SentPacket, RECENT_LOST>,
    loss_time: Option<Instant>,
    pto_count: u32,
    pto_probes: u8,
    last_eliciting_sent: Instant,
    ping_pending: bool,
    max_data_urgent: bool,
    max_data_elicited: u64,
    ack_frequency_sent: u64,

    send: SendStream,
    recv: RecvStream,
    datagrams: DatagramQueue,
    pings: PingTable,
    pmtu: PmtuSearch,
    mtu: usize,

    events: Deque<TransportEvent, MAX_EVENTS>,
    progress: Option<u64>,
    stats: TransportStats,
}

/// What one ACK frame or loss pass changed, for congestion control.
#[derive(Default)]
struct LossBatch {
    lost: u64,
    largest_lost_sent: Option<Instant>,
    first_lost: Option<(u64, Instant)>,
    last_lost: Option<(u64, Instant)>,
    probe_lost: bool,
}

impl Transport {
    /// A transport at `now` (the handshake just completed).
    pub fn new(now: Instant, config: TransportConfig) -> Transport {
        let config = config.clamped();
        let mtu = config.base_mtu;
        let mut t = Transport {
            config,
            clock: Clock::default(),
            state: State::Open,
            received: RangeSet::new(),
            recv_floor: 0,
            largest_received: None,
            largest_received_at: now,
            ack_pending: false,
            eliciting_unacked: 0,
            ack_threshold: ACK_ELICITING_THRESHOLD,
            ack_threshold_pn: None,
            ack_now: false,
            ack_deadline: None,
            last_received: now,
            silent_reported: false,
            ring: SentRing::new(),
            rtt: RttEstimator::new(config.initial_rtt),
            cc: NewReno::new(mtu, MAX_PACKETS_IN_FLIGHT),
            pacer: Pacer::new(now),
            bytes_in_flight: 0,
            eliciting_in_flight: 0,
            largest_acked: None,
            first_sample_at: None,
            packet_threshold: PACKET_THRESHOLD,
            time_eighths: TIME_THRESHOLD_EIGHTHS,
            recent_lost: heapless::Vec::new(),
            loss_time: None,
            pto_count: 0,
            pto_probes: 0,
            last_eliciting_sent: now,
            ping_pending: false,
            max_data_urgent: false,
            max_data_elicited: stream::INITIAL_MAX_DATA,
            ack_frequency_sent: u64::from(ACK_ELICITING_THRESHOLD),
            send: SendStream::new(),
            recv: RecvStream::new(config.receive_window),
            datagrams: DatagramQueue::new(),
            pings: PingTable::default(),
            pmtu: PmtuSearch::new(mtu, config.max_mtu),
            mtu,
            events: Deque::new(),
            progress: None,
            stats: TransportStats::default(),
        };
        t.clock.observe(now);
        t.refresh_stats();
        t
    }

    /// The current path MTU (UDP payload size).
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// Whether the transport finished (closed by either side).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The payload size the next packet may use (PMTU - overhead; larger
    /// when a PMTU probe is due), so the session can size its buffer.
    pub fn max_payload(&self) -> usize {
        let probe = self
            .pmtu
            .probe_due(self.clock.latest())
            .filter(|_| self.state == State::Open)
            .unwrap_or(0);
        self.mtu.max(probe) - self.config.overhead
    }

    /// The most bytes one datagram may hold on the current path.
    pub fn max_datagram_len(&self) -> usize {
        (self.mtu - self.config.overhead - frame::DATAGRAM_HEADER_MAX).min(MAX_APP_DATAGRAM_LEN)
    }

    /// Counters and current values.
    pub fn stats(&self) -> &TransportStats {
        &self.stats
    }

    fn refresh_stats(&mut self) {
        self.stats.rtt = self.rtt.smoothed;
        self.stats.min_rtt = self.rtt.min;
        self.stats.cwnd = self.cc.cwnd;
        self.stats.bytes_in_flight = self.bytes_in_flight;
        self.stats.mtu = self.mtu;
        self.stats.packet_threshold = self.packet_threshold;
        self.stats.stream_bytes_acked = self.send.acked_prefix;
    }

    fn push_event(&mut self, event: TransportEvent) {
        push_event(&mut self.events, &mut self.stats, event);
    }

    /// Makes the next packet ack-eliciting (a PING frame if nothing else
    /// is), with no event: how a relayed session tries a direct path at
    /// once, since the peer acknowledges what arrives and so moves too.
    pub fn keepalive_now(&mut self) {
        self.ping_pending = true;
    }

    /// Sends a ping: the next packet is ack-eliciting (a PING frame if
    /// nothing else makes it so), and when it is acknowledged
    /// [`TransportEvent::Pong`] carries the round trip; with no
    /// acknowledgement within `timeout` (at least
    /// [`ping::MIN_PING_TIMEOUT`]), [`TransportEvent::PingLost`]. Returns
    /// the ping's id. See [`ping`] for why the ACK is the answer.
    pub fn ping(&mut self, now: Instant, timeout: Duration) -> Result<u32, PingError> {
        let now = self.clock.observe(now);
        if self.state != State::Open {
            return Err(PingError::NotConnected);
        }
        self.pings.start(now, timeout)
    }

    /// Reports every waiting ping as lost (the transport closes).
    fn fail_pings(&mut self) {
        let Transport {
            pings,
            events,
            stats,
            ..
        } = self;
        pings.fail_all(|o| push_event(events, stats, ping_event(o)));
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<TransportEvent> {
        if let Some(contiguous) = self.progress.take() {
            return Some(TransportEvent::StreamProgress { contiguous });
        }
        self.events.pop_front()
    }

    /// More bytes of the local stream are readable: `[0, available)` (monotonic).
    pub fn stream_extend(&mut self, available: u64) {
        self.send.extend(available);
    }

    /// The local stream ends at `total_len` (FIN); this also makes
    /// `[0, total_len)` available, as [`Transport::stream_extend`] would.
    pub fn stream_finish(&mut self, total_len: u64) -> Result<(), StreamError> {
        self.send.finish(total_len)?;
        self.send.extend(total_len);
        Ok(())
    }

    /// Queues one datagram (at most [`Transport::max_datagram_len`] bytes);
    /// when [`MAX_QUEUED_DATAGRAMS`] wait already, the oldest is dropped and
    /// counted. Datagrams go out before stream data, never retransmitted.
    pub fn send_datagram(&mut self, data: &[u8]) -> Result<(), DatagramError> {
        if self.state != State::Open {
            return Err(DatagramError::Closed);
        }
        let max = self.max_datagram_len();
        if data.len() > max {
            return Err(DatagramError::TooLarge { max });
        }
        if self.datagrams.push(data) {
            self.stats.datagrams_dropped += 1;
        }
        Ok(())
    }

    /// Asks the peer to stop: CLOSE (reason, bytes sent, bytes received) is
    /// sent [`CLOSE_SENDS`] times, then [`TransportEvent::Closed`].
    pub fn close(&mut self, now: Instant, reason: u8) {
        let now = self.clock.observe(now);
        if self.state != State::Open {
            return;
        }
        self.state = State::Closing {
            reason,
            sends_left: CLOSE_SENDS,
            next: now,
        };
        self.stats.datagrams_dropped += self.datagrams.clear() as u64;
        self.fail_pings();
    }

    fn bytes_sent_total(&self) -> u64 {
        self.send.frontier + self.stats.datagram_bytes_sent
    }

    fn bytes_received_total(&self) -> u64 {
        self.recv.delivered + self.stats.datagram_bytes_received
    }

    // ----- receiving -----

    /// An authenticated packet's plaintext. A frame error means a buggy peer
    /// (the packet authenticated): nothing of the packet is acknowledged and
    /// the session counts and ignores it.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        pn: u64,
        payload: &[u8],
        sink: &mut impl PeerSink,
    ) -> Result<(), FrameError> {
        let now = self.clock.observe(now);
        if self.state == State::Closed {
            return Ok(());
        }
        if pn < self.recv_floor || pn > frame::MAX_VARINT || self.received.contains(pn) {
            self.stats.packets_dropped += 1;
            return Ok(());
        }
        // First pass: validate everything before any effect.
        let Some(eliciting) = self.validate_frames(payload)? else {
            // Too fragmented to record: dropped unacknowledged, resent later.
            self.stats.packets_dropped += 1;
            return Ok(());
        };
        if !self.record_received(now, pn, payload.len(), eliciting) {
            self.stats.packets_dropped += 1;
            return Ok(());
        }
        // Second pass: act.
        let mut progressed = false;
        for frame in Frames::new(payload).flatten() {
            progressed |= self.apply_frame(now, pn, frame, sink);
        }
        self.after_received(progressed);
        Ok(())
    }

    /// The first pass over a packet's frames: every frame must read and be
    /// acceptable before any of them has an effect. Returns whether the
    /// packet is ack-eliciting, or `None` if its stream data has no room in
    /// the receive ranges (the packet is then dropped, unacknowledged).
    #[inline(always)]
    fn validate_frames(&mut self, payload: &[u8]) -> Result<Option<bool>, FrameError> {
        let mut any = false;
        let mut eliciting = false;
        let mut no_room = false;
        for frame in Frames::new(payload) {
            let frame = frame.inspect_err(|_| self.stats.frame_errors += 1)?;
            any = true;
            eliciting |= frame.is_ack_eliciting();
            match frame {
                Frame::Stream { offset, data, fin } => {
                    self.recv
                        .check(offset, data.len() as u64, fin)
                        .inspect_err(|_| self.stats.frame_errors += 1)?;
                    no_room |= !self.recv.has_room(offset, data.len() as u64);
                }
                Frame::Ack(ack) if ack.largest >= self.ring.next_pn() => {
                    self.stats.frame_errors += 1;
                    return Err(FrameError::BadAck);
                }
                _ => {}
            }
        }
        if !any {
            self.stats.frame_errors += 1;
            return Err(FrameError::Empty);
        }
        Ok((!no_room).then_some(eliciting))
    }

    /// Records a valid packet as received: its number (bounded; `false` if
    /// it falls below what the table still holds, so it is dropped), the
    /// counters, and when an acknowledgement is due.
    #[inline(always)]
    fn record_received(&mut self, now: Instant, pn: u64, len: usize, eliciting: bool) -> bool {
        if self.received.insert(pn, pn + 1).is_err() {
            let lowest = self.received.first().map_or(0, |r| r.start);
            if pn < lowest {
                return false;
            }
            if let Some(evicted) = self.received.evict_first() {
                self.recv_floor = evicted.end;
            }
            let _ = self.received.insert(pn, pn + 1);
        }
        self.stats.packets_received += 1;
        self.stats.bytes_received += len as u64;
        self.last_received = now;
        self.silent_reported = false;
        let in_order = match self.largest_received {
            None => pn == 0,
            Some(l) => pn == l + 1,
        };
        if self.largest_received.is_none_or(|l| pn > l) {
            self.largest_received = Some(pn);
            self.largest_received_at = now;
        }
        self.ack_pending = true;
        if eliciting {
            self.eliciting_unacked += 1;
            if self.eliciting_unacked >= self.ack_threshold || !in_order {
                self.ack_now = true;
            }
            if self.ack_deadline.is_none() {
                self.ack_deadline = Some(now + MAX_ACK_DELAY);
            }
        }
        true
    }

    /// The second pass: one validated frame's effect. Returns whether it
    /// moved the in-order stream forward.
    #[inline(always)]
    fn apply_frame(
        &mut self,
        now: Instant,
        pn: u64,
        frame: Frame<'_>,
        sink: &mut impl PeerSink,
    ) -> bool {
        match frame {
            Frame::Padding { .. } | Frame::Ping => {}
            Frame::Ack(ack) => self.on_ack_frame(now, &ack),
            Frame::MaxData(max) => self.send.on_max_data(max),
            Frame::AckFrequency(threshold) => {
                // The newest packet's request wins (packets reorder).
                if self.ack_threshold_pn.is_none_or(|p| pn > p) {
                    self.ack_threshold_pn = Some(pn);
                    self.ack_threshold = threshold.clamp(1, MAX_ACK_THRESHOLD) as u32;
                }
            }
            Frame::Stream { offset, data, fin } => {
                if self.state != State::Open {
                    return false;
                }
                let got = self.recv.receive(offset, data, fin, |o, d| {
                    sink.stream_data(o, d);
                });
                self.stats.stream_bytes_received += got.new_bytes;
                return got.progressed;
            }
            Frame::Datagram(data) => {
                if self.state != State::Open {
                    return false;
                }
                self.stats.datagrams_received += 1;
                self.stats.datagram_bytes_received += data.len() as u64;
                sink.datagram(data);
            }
            Frame::Close {
                reason,
                bytes_sent,
                bytes_received,
            } => {
                if self.state != State::Closed {
                    self.state = State::Closed;
                    self.fail_pings();
                    self.push_event(TransportEvent::Closed {
                        by_peer: true,
                        reason,
                        peer_bytes_sent: bytes_sent,
                        peer_bytes_received: bytes_received,
                    });
                }
            }
        }
        false
    }

    /// After a packet's frames: stream progress and completion, the flow
    /// control window, and the stats.
    #[inline(always)]
    fn after_received(&mut self, progressed: bool) {
        if progressed {
            self.progress = Some(self.recv.delivered);
        }
        if !self.recv.done_reported {
            if let Some(len) = self.recv.complete() {
                self.recv.done_reported = true;
                // The sender waits for this ack to finish: no delay.
                self.ack_now = true;
                self.push_event(TransportEvent::StreamReceived { len });
            }
        }
        if self.recv.max_data() >= self.max_data_elicited + self.recv.window / 4 {
            self.max_data_urgent = true;
        }
        self.check_stream_acked();
        self.refresh_stats();
    }

    fn check_stream_acked(&mut self) {
        if !self.send.done_reported {
            if let Some(len) = self.send.all_acked() {
                self.send.done_reported = true;
                self.push_event(TransportEvent::StreamAcked { len });
            }
        }
    }

    fn on_ack_frame(&mut self, now: Instant, ack: &frame::AckFrame<'_>) {
        let largest_newly = self.ring.get(ack.largest).copied();
        let prev_largest = self.largest_acked;
        let mut smallest_newly: Option<u64> = None;
        let mut any_eliciting = false;
        let mut mtu_up: Option<usize> = None;
        for (low, high) in ack.ranges() {
            let Transport {
                ring,
                cc,
                send,
                pmtu,
                bytes_in_flight,
                eliciting_in_flight,
                config,
                ..
            } = self;
            ring.remove_in(low, high, |p| {
                smallest_newly = Some(smallest_newly.map_or(p.pn, |s| s.min(p.pn)));
                if p.has(SENT_IN_FLIGHT) {
                    *bytes_in_flight = bytes_in_flight.saturating_sub(u64::from(p.size));
                }
                if p.has(SENT_ACK_ELICITING) {
                    *eliciting_in_flight = eliciting_in_flight.saturating_sub(1);
                    any_eliciting = true;
                }
                if p.has(SENT_MTU_PROBE) {
                    let size = usize::from(p.size);
                    if let Some(m) = pmtu.on_probe_acked(now, p.pn, size) {
                        mtu_up = Some(m);
                    }
                } else if p.has(SENT_IN_FLIGHT) {
                    cc.on_ack(p.sent_at(), u64::from(p.size), p.has(SENT_APP_LIMITED));
                }
                if p.has(SENT_STREAM) {
                    send.on_acked(p.offset, u64::from(p.len), p.has(SENT_FIN));
                }
                let _ = config;
                true
            });
        }
        if !self.recent_lost.is_empty() {
            self.detect_spurious(ack);
        }
        let ack_delay = Duration::from_micros(ack.ack_delay_us);
        for (low, high) in ack.ranges() {
            let Transport {
                pings,
                events,
                stats,
                ..
            } = self;
            pings.on_acked(now, low, high, ack_delay, |o| {
                push_event(events, stats, ping_event(o))
            });
        }
        if smallest_newly.is_none() {
            return;
        }
        if self.largest_acked.is_none_or(|l| ack.largest > l) {
            self.largest_acked = Some(ack.largest);
        }
        if let Some(p) = largest_newly {
            if any_eliciting {
                let latest = now - p.sent_at();
                self.rtt
                    .update(latest, Duration::from_micros(ack.ack_delay_us));
                if self.first_sample_at.is_none() {
                    self.first_sample_at = Some(now);
                }
            }
        }
        self.pto_count = 0;
        if let Some(mtu) = mtu_up {
            self.set_mtu(mtu);
        }
        let batch = self.detect_lost(now);
        self.on_losses(now, batch, prev_largest, smallest_newly);
    }

    /// Packets declared lost that this ACK acknowledges after all: the path
    /// reorders. Raises the packet threshold to the distance seen and the
    /// time threshold by 1/4 RTT, counts their stream bytes as acked, and
    /// undoes the window reduction if all its losses were spurious.
    /// Cost: [`RECENT_LOST`] × ranges, only while losses are remembered.
    fn detect_spurious(&mut self, ack: &frame::AckFrame<'_>) {
        let lowest = ack.ranges().last().map_or(0, |r| r.0);
        let mut i = 0;
        while let Some(&p) = self.recent_lost.get(i) {
            let acked = ack.ranges().any(|(lo, hi)| lo <= p.pn && p.pn <= hi);
            if !acked && p.pn >= lowest {
                i += 1;
                continue;
            }
            // Acked, or below what ACKs still report: forget it.
            self.recent_lost.remove(i);
            if !acked || p.has(SENT_MTU_PROBE) {
                continue;
            }
            self.stats.spurious_losses += 1;
            let distance = ack.largest.saturating_sub(p.pn) + 1;
            self.packet_threshold = self
                .packet_threshold
                .max(distance)
                .min(MAX_PACKET_THRESHOLD);
            self.time_eighths = (self.time_eighths + 2).min(MAX_TIME_THRESHOLD_EIGHTHS);
            if p.has(SENT_STREAM) {
                self.send
                    .on_acked(p.offset, u64::from(p.len), p.has(SENT_FIN));
            }
            if p.has(SENT_ACK_ELICITING) {
                self.cc.on_spurious_loss(p.sent_at());
            }
        }
    }

    fn set_mtu(&mut self, mtu: usize) {
        if mtu != self.mtu {
            self.mtu = mtu;
            self.cc.set_mds(mtu, MAX_PACKETS_IN_FLIGHT);
            self.push_event(TransportEvent::MtuChanged { mtu });
        }
    }

    /// Declares lost the outstanding packets below the largest acked that
    /// are 3 packets or 9/8 RTT older; sets the loss timer for the rest.
    fn detect_lost(&mut self, now: Instant) -> LossBatch {
        let mut batch = LossBatch::default();
        self.loss_time = None;
        let Some(largest) = self.largest_acked else {
            return batch;
        };
        let delay = self.rtt.loss_delay(self.time_eighths);
        let threshold = self.packet_threshold;
        let lost_before = now.saturating_sub(delay);
        let mut loss_time: Option<Instant> = None;
        let Transport {
            ring,
            send,
            pmtu,
            bytes_in_flight,
            eliciting_in_flight,
            max_data_urgent,
            ack_frequency_sent,
            recent_lost,
            stats,
            ..
        } = self;
        ring.remove_in(0, largest, |p| {
            let sent = p.sent_at();
            if p.pn + threshold <= largest || sent <= lost_before {
                if recent_lost.is_full() {
                    recent_lost.remove(0);
                }
                let _ = recent_lost.push(*p);
                if p.has(SENT_IN_FLIGHT) {
                    *bytes_in_flight = bytes_in_flight.saturating_sub(u64::from(p.size));
                }
                if p.has(SENT_ACK_ELICITING) {
                    *eliciting_in_flight = eliciting_in_flight.saturating_sub(1);
                }
                stats.packets_lost += 1;
                if p.has(SENT_STREAM) {
                    send.on_lost(p.offset, u64::from(p.len), p.has(SENT_FIN));
                }
                if p.has(SENT_MAX_DATA) {
                    *max_data_urgent = true;
                }
                if p.has(SENT_ACK_FREQUENCY) {
                    // Unknown whether it arrived: send the value again.
                    *ack_frequency_sent = 0;
                }
                if p.has(SENT_MTU_PROBE) {
                    pmtu.on_probe_lost(now, p.pn);
                    batch.probe_lost = true;
                } else if p.has(SENT_ACK_ELICITING) {
                    batch.lost += 1;
                    batch.largest_lost_sent =
                        Some(batch.largest_lost_sent.map_or(sent, |t| t.max(sent)));
                    if batch.first_lost.is_none() {
                        batch.first_lost = Some((p.pn, sent));
                    }
                    batch.last_lost = Some((p.pn, sent));
                }
                true
            } else {
                let at = sent + delay;
                loss_time = Some(loss_time.map_or(at, |t: Instant| t.min(at)));
                false
            }
        });
        self.loss_time = loss_time;
        batch
    }

    fn on_losses(
        &mut self,
        now: Instant,
        batch: LossBatch,
        prev_largest: Option<u64>,
        smallest_newly: Option<u64>,
    ) {
        let Some(sent) = batch.largest_lost_sent else {
            return;
        };
        self.stats.congestion_events += 1;
        self.cc
            .on_congestion_event(now, sent, u32::try_from(batch.lost).unwrap_or(u32::MAX));
        // Persistent congestion (RFC 9002 §7.6), with an RTT sample taken
        // before the first lost packet and no ack between the lost ones.
        if let (Some((first_pn, first_t)), Some((last_pn, last_t))) =
            (batch.first_lost, batch.last_lost)
        {
            let duration =
                (self.rtt.smoothed + (self.rtt.var * 4).max(recovery::GRANULARITY) + MAX_ACK_DELAY)
                    * 3;
            let no_ack_between = prev_largest.is_none_or(|l| l < first_pn)
                && smallest_newly.is_none_or(|s| s > last_pn);
            let sampled_before = self.first_sample_at.is_some_and(|t| t < first_t);
            if batch.lost >= 2 && no_ack_between && sampled_before && last_t - first_t > duration {
                self.stats.persistent_congestion += 1;
                self.cc.on_persistent_congestion();
                if let Some(mtu) = self.pmtu.on_black_hole(now) {
                    self.set_mtu(mtu);
                }
            }
        }
    }

    // ----- timers -----

    fn pto_deadline(&self) -> Option<Instant> {
        if self.eliciting_in_flight == 0 || self.pto_probes > 0 {
            return None;
        }
        let backoff = 1u32 << self.pto_count.min(MAX_PTO_BACKOFF);
        Some(self.last_eliciting_sent + self.rtt.pto_base() * backoff)
    }

    fn wants_eliciting(&self, now: Instant) -> bool {
        self.ping_pending
            || self.pings.unsent()
            || self.pto_probes > 0
            || self.max_data_urgent
            || !self.datagrams.is_empty()
            || self.send.has_sendable()
            || self.pmtu.probe_due(now).is_some()
    }

    fn cc_allows(&self, size: usize) -> bool {
        self.bytes_in_flight + size as u64 <= self.cc.cwnd
    }

    /// When the pacer lets a full packet out, if it is the only thing
    /// holding back data that is waiting.
    fn pacing_deadline(&self) -> Option<Instant> {
        let now = self.clock.latest();
        if !self.wants_eliciting(now)
            || !self.cc_allows(self.mtu)
            || !self.ring.can_track(self.ring.next_pn())
        {
            return None;
        }
        let mut pacer = self.pacer;
        let t = pacer.next_send(
            now,
            self.mtu as u64,
            self.cc.cwnd,
            self.rtt.smoothed,
            self.mtu as u64,
        );
        (t > now).then_some(t)
    }

    /// When to call [`Transport::handle_timeout`] next (loss timer, PTO,
    /// pacing, ack delay, keepalive, idle, close).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::Closing { next, .. } => Some(next),
            State::Open => {
                let mut t: Option<Instant> = None;
                let mut consider = |x: Option<Instant>| {
                    if let Some(x) = x {
                        t = Some(t.map_or(x, |t| t.min(x)));
                    }
                };
                consider(self.loss_time.or_else(|| self.pto_deadline()));
                consider(self.pings.next_deadline());
                if self.ack_pending && !self.ack_now {
                    consider(self.ack_deadline);
                }
                if !self.silent_reported {
                    consider(Some(self.last_received + self.config.idle_timeout));
                }
                if !self.ping_pending {
                    consider(Some(
                        self.last_eliciting_sent + self.config.keepalive_interval,
                    ));
                }
                // Once due, a restart is a probe waiting to be sent.
                let latest = self.clock.latest();
                consider(self.pmtu.restart_time().filter(|t| *t > latest));
                consider(self.pacing_deadline());
                t
            }
        }
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        match self.state {
            State::Closed => return,
            State::Closing {
                reason,
                sends_left,
                next,
            } => {
                if sends_left == 0 && now >= next {
                    self.state = State::Closed;
                    let event = TransportEvent::Closed {
                        by_peer: false,
                        reason,
                        peer_bytes_sent: self.bytes_received_total(),
                        peer_bytes_received: self.send.acked_prefix,
                    };
                    self.push_event(event);
                }
                return;
            }
            State::Open => {}
        }
        if self.loss_time.is_some_and(|t| t <= now) {
            let prev = self.largest_acked;
            let batch = self.detect_lost(now);
            self.on_losses(now, batch, prev, None);
        }
        if self.pto_deadline().is_some_and(|t| t <= now) {
            self.pto_count = (self.pto_count + 1).min(MAX_PTO_BACKOFF);
            self.pto_probes = PTO_PROBES;
            self.stats.pto_fired += 1;
        }
        if self.ack_pending && self.ack_deadline.is_some_and(|t| t <= now) {
            self.ack_now = true;
        }
        if !self.silent_reported && now >= self.last_received + self.config.idle_timeout {
            self.silent_reported = true;
            self.push_event(TransportEvent::PeerSilent);
        }
        if now >= self.last_eliciting_sent + self.config.keepalive_interval {
            self.ping_pending = true;
        }
        let Transport {
            pings,
            events,
            stats,
            ..
        } = self;
        pings.expire(now, |o| push_event(events, stats, ping_event(o)));
        self.refresh_stats();
    }

    // ----- sending -----

    /// Writes the frames of packet `pn` into `buf` (at most `buf.len()`
    /// bytes) and records it as sent; `None`: nothing to send now (see
    /// [`Transport::poll_timeout`]). Packet numbers must increase.
    #[must_use]
    pub fn write_packet(
        &mut self,
        now: Instant,
        pn: u64,
        buf: &mut [u8],
        source: &mut impl StreamSource,
    ) -> Option<usize> {
        let now = self.clock.observe(now);
        // Numbers must increase and fit an ACK frame's varint.
        if !self.ring.is_new(pn) || pn > frame::MAX_VARINT {
            return None;
        }
        let written = match self.state {
            State::Closed => None,
            State::Closing { .. } => self.write_close(now, pn, buf),
            State::Open => self.write_open(now, pn, buf, source),
        };
        self.refresh_stats();
        written
    }

    fn write_close(&mut self, now: Instant, pn: u64, buf: &mut [u8]) -> Option<usize> {
        let State::Closing {
            reason,
            sends_left,
            next,
        } = self.state
        else {
            return None;
        };
        if sends_left == 0 || now < next {
            return None;
        }
        let (sent, received) = (self.bytes_sent_total(), self.bytes_received_total());
        let cap = buf.len().min(self.mtu - self.config.overhead);
        // The attempt counts even if the buffer is too small for the frame,
        // so the close timer always moves on.
        self.state = State::Closing {
            reason,
            sends_left: sends_left - 1,
            next: now + self.rtt.pto_base(),
        };
        let mut w = Writer::new(&mut buf[..cap]);
        frame::write_close(&mut w, reason, sent, received)?;
        let n = w.len();
        self.ring.skip(pn);
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += (n + self.config.overhead) as u64;
        Some(n)
    }

    fn write_open(
        &mut self,
        now: Instant,
        pn: u64,
        buf: &mut [u8],
        source: &mut impl StreamSource,
    ) -> Option<usize> {
        let overhead = self.config.overhead;
        let cap = buf.len().min(self.mtu - overhead);
        let ack_due =
            self.ack_pending && (self.ack_now || self.ack_deadline.is_some_and(|t| t <= now));
        let can_track = self.ring.can_track(pn);
        let probing = self.pto_probes > 0;

        if can_track && self.wants_eliciting(now) {
            let mds = self.mtu as u64;
            let paced_ok = probing
                || (self.cc_allows(self.mtu)
                    && self
                        .pacer
                        .next_send(now, mds, self.cc.cwnd, self.rtt.smoothed, mds)
                        <= now);
            if paced_ok {
                // A PMTU probe, when due and it fits.
                if !probing {
                    if let Some(size) = self.pmtu.probe_due(now) {
                        let payload = size - overhead;
                        if payload <= buf.len() && self.cc_allows(size) {
                            return self.write_mtu_probe(now, pn, &mut buf[..payload], size);
                        }
                    }
                }
                if let Some(n) = self.write_eliciting(now, pn, &mut buf[..cap], source, probing) {
                    return Some(n);
                }
            }
        }
        if ack_due {
            let mut w = Writer::new(&mut buf[..cap]);
            self.write_ack_frames(now, &mut w);
            if w.is_empty() {
                return None;
            }
            let n = w.len();
            self.ring.skip(pn);
            self.stats.packets_sent += 1;
            self.stats.bytes_sent += (n + overhead) as u64;
            return Some(n);
        }
        None
    }

    /// ACK (and MAX_DATA alongside it) if anything is waiting to be acked.
    fn write_ack_frames(&mut self, now: Instant, w: &mut Writer<'_>) {
        if !self.ack_pending {
            return;
        }
        let delay = (now - self.largest_received_at).as_micros();
        let delay = u64::try_from(delay).unwrap_or(u64::MAX);
        if frame::write_ack(w, self.received.as_slice(), delay).is_some() {
            self.ack_pending = false;
            self.ack_now = false;
            self.ack_deadline = None;
            self.eliciting_unacked = 0;
            let _ = frame::write_max_data(w, self.recv.max_data());
        }
    }

    fn write_mtu_probe(
        &mut self,
        now: Instant,
        pn: u64,
        buf: &mut [u8],
        size: usize,
    ) -> Option<usize> {
        let mut w = Writer::new(buf);
        w.u8(frame::TYPE_PING)?;
        w.pad_to_end();
        let n = w.len();
        self.record_sent(
            now,
            SentPacket {
                pn,
                time_sent: now.as_micros(),
                size: size as u16,
                flags: SENT_ACK_ELICITING | SENT_IN_FLIGHT | SENT_MTU_PROBE,
                ..SentPacket::default()
            },
        );
        self.pmtu.on_probe_sent(pn);
        Some(n)
    }

    fn write_eliciting(
        &mut self,
        now: Instant,
        pn: u64,
        buf: &mut [u8],
        source: &mut impl StreamSource,
        probing: bool,
    ) -> Option<usize> {
        let mut w = Writer::new(buf);
        let mut flags = SENT_IN_FLIGHT;
        // A due ACK goes first; otherwise datagrams do (so a full-size
        // datagram is never starved by ACKs riding on every packet) and the
        // ACK takes the room left.
        let ack_due =
            self.ack_pending && (self.ack_now || self.ack_deadline.is_some_and(|t| t <= now));
        if ack_due {
            self.write_ack_frames(now, &mut w);
        }
        // Datagrams before the stream: they must not wait behind it.
        let mut eliciting = self.write_datagrams(&mut w);
        if !ack_due {
            self.write_ack_frames(now, &mut w);
        }
        if self.write_urgent_max_data(&mut w) {
            flags |= SENT_MAX_DATA;
            eliciting = true;
        }
        // ACK_FREQUENCY goes last, in an ack-eliciting packet only (so its
        // loss is noticed): keep room for it.
        let ack_frequency = self.desired_ack_threshold();
        let reserve = if ack_frequency != self.ack_frequency_sent {
            1 + frame::varint_len(ack_frequency)
        } else {
            0
        };
        let mut stream = None;
        if let Some((offset, len, fin)) = self.write_stream_chunk(&mut w, reserve, source) {
            flags |= SENT_STREAM;
            if fin {
                flags |= SENT_FIN;
            }
            stream = Some((offset, len));
            eliciting = true;
        }
        if !eliciting && (self.ping_pending || probing || self.pings.unsent()) {
            w.u8(frame::TYPE_PING)?;
            eliciting = true;
        }
        if eliciting && reserve > 0 && frame::write_ack_frequency(&mut w, ack_frequency).is_some() {
            self.ack_frequency_sent = ack_frequency;
            flags |= SENT_ACK_FREQUENCY;
        }
        if !eliciting {
            // Nothing could be written after all; an ACK alone is sent by
            // the caller only when it is due.
            if w.is_empty() {
                return None;
            }
            let n = w.len();
            self.ring.skip(pn);
            self.stats.packets_sent += 1;
            self.stats.bytes_sent += (n + self.config.overhead) as u64;
            return Some(n);
        }
        let n = w.len();
        let (offset, len) = stream.unwrap_or((0, 0));
        self.record_sent(
            now,
            SentPacket {
                pn,
                time_sent: now.as_micros(),
                offset,
                len,
                size: (n + self.config.overhead) as u16,
                flags: flags | SENT_ACK_ELICITING,
                outstanding: true,
            },
        );
        self.pings.on_sent(now, pn);
        if probing {
            self.pto_probes -= 1;
        }
        Some(n)
    }

    /// Writes the queued datagrams that fit, oldest first, and drops those
    /// that can never fit the path again. Returns whether any was written.
    #[inline(always)]
    fn write_datagrams(&mut self, w: &mut Writer<'_>) -> bool {
        let mut written = false;
        let max_datagram = self.max_datagram_len();
        while let Some(d) = self.datagrams.front() {
            let len = d.bytes().len();
            if len > max_datagram {
                // Queued before the path MTU fell back: it can never fit.
                self.datagrams.pop();
                self.stats.datagrams_dropped += 1;
                continue;
            }
            if frame::write_datagram(w, d.bytes()).is_none() {
                break;
            }
            self.stats.datagrams_sent += 1;
            self.stats.datagram_bytes_sent += len as u64;
            self.datagrams.pop();
            written = true;
        }
        written
    }

    /// Writes a MAX_DATA frame and a PING (so it is acknowledged) when the
    /// receive window grew enough to announce. Returns whether it did.
    #[inline(always)]
    fn write_urgent_max_data(&mut self, w: &mut Writer<'_>) -> bool {
        if !self.max_data_urgent {
            return false;
        }
        let max = self.recv.max_data();
        if frame::write_max_data(w, max).is_some() && w.u8(frame::TYPE_PING).is_some() {
            self.max_data_urgent = false;
            self.max_data_elicited = max;
            return true;
        }
        false
    }

    /// Writes the next stream chunk that fits the room left (keeping
    /// `reserve` bytes free), read from `source` straight into the packet.
    /// Returns its offset and length and whether it carries the FIN.
    #[inline(always)]
    fn write_stream_chunk(
        &mut self,
        w: &mut Writer<'_>,
        reserve: usize,
        source: &mut impl StreamSource,
    ) -> Option<(u64, u16, bool)> {
        if w.remaining() <= frame::STREAM_HEADER_MAX + reserve {
            return None;
        }
        let room =
            (w.remaining() - frame::STREAM_HEADER_MAX - reserve).min(frame::MAX_FRAME_DATA) as u64;
        let chunk = self.send.next_chunk(room)?;
        let hdr = frame::stream_header_len(chunk.offset);
        let len = chunk.len as usize;
        let tail = w.tail();
        let (head, body) = tail.split_at_mut(hdr);
        // Fill the chunk; a source may return fewer bytes per call
        // (0 = not available yet). Bounded: each call adds a byte.
        let mut n = 0;
        while n < len {
            let got = source
                .read_at(chunk.offset + n as u64, &mut body[n..len])
                .min(len - n);
            if got == 0 {
                break;
            }
            n += got;
        }
        if n == 0 && len != 0 {
            return None;
        }
        let fin = self.send.on_written(chunk, n as u64);
        let mut hw = Writer::new(head);
        frame::write_stream_header(&mut hw, chunk.offset, n as u16, fin)?;
        w.advance(hdr + n);
        if chunk.retransmit {
            self.stats.stream_bytes_retransmitted += n as u64;
        } else {
            self.stats.stream_bytes_sent += n as u64;
        }
        Some((chunk.offset, n as u16, fin))
    }

    /// How many ack-eliciting packets the peer may take before acking:
    /// a quarter of the window in packets, within
    /// [`ACK_ELICITING_THRESHOLD`]..=[`MAX_ACK_THRESHOLD`].
    fn desired_ack_threshold(&self) -> u64 {
        (self.cc.cwnd / self.mtu as u64 / ACK_FREQUENCY_DIVISOR)
            .clamp(u64::from(ACK_ELICITING_THRESHOLD), MAX_ACK_THRESHOLD)
    }

    fn record_sent(&mut self, now: Instant, mut packet: SentPacket) {
        let size = u64::from(packet.size);
        self.ping_pending = false;
        if self.bytes_in_flight + size < self.cc.cwnd / 2 && !self.wants_eliciting(now) {
            packet.flags |= SENT_APP_LIMITED;
        }
        self.ring.push(packet);
        self.bytes_in_flight += size;
        self.eliciting_in_flight += 1;
        self.pacer.on_sent(size);
        self.last_eliciting_sent = now;
        self.ping_pending = false;
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += size;
    }
}

/// Queues `event`, or counts it dropped when the queue is full.
fn push_event(
    events: &mut Deque<TransportEvent, MAX_EVENTS>,
    stats: &mut TransportStats,
    event: TransportEvent,
) {
    if events.push_back(event).is_err() {
        stats.events_dropped += 1;
    }
}

/// A ping's outcome as the event for the session.
fn ping_event(outcome: PingOutcome) -> TransportEvent {
    match outcome {
        PingOutcome::Answered { id, rtt } => TransportEvent::Pong { id, rtt },
        PingOutcome::Lost { id } => TransportEvent::PingLost { id },
    }
}
