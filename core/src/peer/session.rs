//! One peer session: the machine that takes a terminal's `SessionReady`
//! (peer address, peer key, session key, duration, role) to a working
//! encrypted path and back to an end, sans-IO.
//!
//! # Life of a session
//! 1. **Punching.** Both sides start at once, from the same UDP socket that
//!    carries the keepalives, so the notified address is the peer's live
//!    NAT mapping. Every [`PeerConfig::punch_interval`] (the first at once)
//!    the connecting side ([`crate::peer::handshake::initiates`]) sends its
//!    `HandshakeInit` and the connected side a `Probe`, to the notified
//!    address and to the source of the last probe heard for this channel
//!    (a hint only: probes are unauthenticated). Each side's first packet
//!    opens its own NAT for the other; later ones pass.
//! 2. **Handshake.** The init is the same bytes every time (one ephemeral
//!    key), so the connected side answers the first valid init with a reply
//!    it caches, and answers a repeated init (lost reply) with the cached
//!    bytes, without new state, within a budget (a replayed init must not
//!    make this side a reflector): at most [`MAX_CACHED_REPLY_RESENDS`]
//!    repeats per session, no two within [`CACHED_REPLY_MIN_INTERVAL`], at
//!    most [`MAX_CACHED_REPLY_RESENDS_ELSEWHERE`] of them to a source other
//!    than the first init's (NAT rebinding), and none once an authenticated
//!    data packet proved that the initiator has the keys. Any other init
//!    after that, forged or replayed from another handshake, is ignored. No handshake within [`PeerConfig::punch_window`]: the
//!    session ends with [`EndReason::Failed`].
//! 3. **Data.** Both sides then hold a [`PacketCipher`] and a
//!    [`Transport`]; every packet is a `Data` packet whose plaintext is the
//!    transport's frames. The destination moves only to the source of an
//!    authenticated data packet with a packet number above any seen before
//!    (the WireGuard roaming rule), so a replayed packet cannot move it.
//! 4. **End.** At `start + duration` the session closes itself (both peers
//!    enforce it); [`PeerSession::extend`] moves the deadline.
//!    [`PeerSession::close`] sends the transport's CLOSE (reason, bytes) and
//!    ends when it is acknowledged or after [`PeerConfig::close_timeout`];
//!    a CLOSE from the peer ends it too, with the peer's reason. A peer
//!    silent for the transport's idle timeout ends it with
//!    [`EndReason::PeerLost`]. The last event is always [`PeerEvent::Ended`]
//!    with this side's byte counts; afterwards the session is inert.
//!
//! # Use
//! A component of [`super::endpoint::Endpoint`], which drives it: after
//! each `handle_*`, it drains [`PeerSession::poll_transmit`] until `None`,
//! then [`PeerSession::poll_event`], then asks [`PeerSession::poll_timeout`]
//! (benchmarks and the transport tests drive one directly the same way).

use core::net::SocketAddr;
use core::time::Duration;

use heapless::{Deque, Vec};
use rand_core::{CryptoRng, RngCore};

use super::cipher::{OpenError, PacketCipher};
use super::packet::{
    Packet, DATA_HEADER_LEN, DATA_OVERHEAD, MAX_DATAGRAM_LEN, MAX_HANDSHAKE_PACKET_LEN,
    MAX_PEER_HANDSHAKE_PAYLOAD, PROBE_LEN,
};
use super::transport::{
    DatagramError, PeerSink, PingError, StreamError, StreamSource, Transport, TransportConfig,
    TransportEvent, TransportStats,
};
use crate::crypto::{HandshakeError, StaticKeypair};
use crate::peer::handshake::{channel_id, initiates, PeerInitiator, PeerParams, PeerResponder};
use crate::relay::{encode_bind_raw, RELAY_BIND_LEN};
use crate::time::{Clock, Instant};
use crate::wire::{EndReason, PublicKey, RelayAllocation, Role, SessionId, SessionKey};

/// Most events waiting for the app; beyond it the oldest is dropped
/// (counted in [`PeerStats::events_dropped`]). Progress events are merged.
pub const MAX_QUEUED_PEER_EVENTS: usize = 16;
/// Default time punching has to succeed before the relay is tried too.
pub const DEFAULT_RELAY_AFTER: Duration = Duration::from_millis(1500);
/// Default time, after the relay is first tried, within which the
/// connecting side must hear anything of its session (directly or through
/// the relay over UDP) before it carries its relay packets over TCP
/// instead ([`PeerSession::relay_over_tcp`]): its network drops UDP.
pub const DEFAULT_RELAY_TCP_AFTER: Duration = Duration::from_millis(2500);
/// Default interval of the probes a relayed session sends on the direct
/// path, so that it moves there once a hole opens.
pub const DEFAULT_DIRECT_RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// Most addresses punched at once: the notified one and one hint.
pub const MAX_PUNCH_TARGETS: usize = 2;
/// Default interval between punch packets (probes or inits).
pub const DEFAULT_PUNCH_INTERVAL: Duration = Duration::from_millis(50);
/// Default time within which the handshake must complete.
pub const DEFAULT_PUNCH_WINDOW: Duration = Duration::from_secs(10);
/// Default time a close waits for the peer's acknowledgement.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Shortest punch interval a session accepts (a smaller one is raised to it).
pub const MIN_PUNCH_INTERVAL: Duration = Duration::from_millis(5);
/// Most times the connected side re-sends its cached handshake reply to a
/// repeated init, per session: enough for a lossy path (the initiator
/// re-sends its init every punch interval until the reply arrives), small
/// enough that a replayed init draws almost nothing (no amplification).
pub const MAX_CACHED_REPLY_RESENDS: u8 = 8;
/// Of [`MAX_CACHED_REPLY_RESENDS`], most to a source other than the one the
/// first init came from: the initiator's NAT may rebind between two inits,
/// but a replay from a third address gets at most this many replies.
pub const MAX_CACHED_REPLY_RESENDS_ELSEWHERE: u8 = 2;
/// Shortest time between two re-sends of the cached reply (an init that
/// comes sooner gets nothing): the initiator repeats at its punch interval,
/// a replaying attacker as fast as it likes.
pub const CACHED_REPLY_MIN_INTERVAL: Duration = Duration::from_millis(20);
/// Shortest close timeout a session accepts (a smaller one is raised to it),
/// so a close always leaves the CLOSE frame a chance to go out.
pub const MIN_CLOSE_TIMEOUT: Duration = Duration::from_millis(1);

/// How a peer session behaves.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Interval between punch packets (probes or inits); the first goes at once.
    pub punch_interval: Duration,
    /// Time within which the handshake must complete, from the start.
    pub punch_window: Duration,
    /// Time a close waits for the peer's acknowledgement before it ends anyway.
    pub close_timeout: Duration,
    /// The transport inside the data packets.
    pub transport: TransportConfig,
    /// Time punching has to succeed before the relay (if the session has
    /// one) is tried too; from then on both paths are tried at once.
    pub relay_after: Duration,
    /// Interval of the direct probes of a relayed session.
    pub direct_retry_interval: Duration,
    /// Time after [`Self::relay_after`] within which the connecting side
    /// must hear anything of its session, or it reaches the relay over TCP.
    pub relay_tcp_after: Duration,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            punch_interval: DEFAULT_PUNCH_INTERVAL,
            punch_window: DEFAULT_PUNCH_WINDOW,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            transport: TransportConfig::default(),
            relay_after: DEFAULT_RELAY_AFTER,
            direct_retry_interval: DEFAULT_DIRECT_RETRY_INTERVAL,
            relay_tcp_after: DEFAULT_RELAY_TCP_AFTER,
        }
    }
}

/// What a terminal's `SessionReady` says about a session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionParams {
    /// The session.
    pub session_id: SessionId,
    /// This side's role: `Connecting` initiates the handshake.
    pub role: Role,
    /// The peer's identity key.
    pub peer_key: PublicKey,
    /// The peer's address as the trigger server observed it.
    pub peer_addr: SocketAddr,
    /// The pre-shared key of the handshake.
    pub session_key: SessionKey,
    /// The permitted duration in seconds, from the start.
    pub duration_secs: u32,
    /// The operator's relay for this session, if any: used when punching
    /// has not succeeded within [`PeerConfig::relay_after`].
    pub relay: Option<RelayAllocation>,
}

impl core::fmt::Debug for SessionParams {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SessionParams")
            .field("session_id", &self.session_id)
            .field("role", &self.role)
            .field("peer_key", &self.peer_key)
            .field("peer_addr", &self.peer_addr)
            .field("duration_secs", &self.duration_secs)
            .field("relay", &self.relay.map(|r| r.addr))
            .finish_non_exhaustive()
    }
}

/// What happened on a session, for the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// The handshake completed: the data channel is up.
    Connected {
        /// Where this side sends from now on.
        peer_addr: SocketAddr,
        /// Whether that is the operator's relay (punching did not get
        /// through in time) rather than the peer itself.
        relayed: bool,
    },
    /// Nothing of the session was heard in time, directly or through the
    /// relay over UDP: from now on this side's relay packets go to the
    /// relay over TCP ([`PeerSession::relay_over_tcp`]); the driver opens
    /// that stream.
    RelayOverTcp {
        /// The relay.
        relay: SocketAddr,
    },
    /// The peer's address changed (an authenticated, newer packet came from
    /// elsewhere: NAT rebinding or roaming, or the move between the relay
    /// and a direct path).
    PathChanged {
        /// The new address.
        peer_addr: SocketAddr,
        /// Whether the new address is the relay.
        relayed: bool,
    },
    /// Every byte of the local stream up to its end was acknowledged.
    StreamAcked {
        /// The stream's length.
        len: u64,
    },
    /// The peer's stream is complete: every byte up to its end was delivered.
    StreamReceived {
        /// The stream's length.
        len: u64,
    },
    /// The delivered contiguous prefix of the peer's stream grew.
    StreamProgress {
        /// Bytes delivered in order from the start.
        contiguous: u64,
    },
    /// The path MTU changed.
    MtuChanged {
        /// The UDP payload size now used.
        mtu: usize,
    },
    /// Ping `id` ([`PeerSession::ping`]) was answered: its packet was
    /// acknowledged.
    Pong {
        /// The ping.
        id: u32,
        /// The round trip, the peer's ack delay subtracted.
        rtt: Duration,
    },
    /// Ping `id` got no answer within its timeout (or the path closed first).
    PingLost {
        /// The ping.
        id: u32,
    },
    /// The session ended; nothing more will happen on it.
    Ended {
        /// Why: this side's reason, or the peer's if it closed first.
        reason: EndReason,
        /// Whether the peer closed it.
        by_peer: bool,
        /// Stream and datagram payload bytes this side sent.
        bytes_sent: u64,
        /// Stream and datagram payload bytes this side received.
        bytes_received: u64,
    },
}

/// Why a datagram could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The data channel is not up (still punching, or ended).
    NotConnected,
    /// The transport refused it.
    Datagram(DatagramError),
}

impl core::fmt::Display for SendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SendError::NotConnected => f.write_str("peer channel not connected"),
            SendError::Datagram(e) => write!(f, "datagram refused: {e:?}"),
        }
    }
}

impl core::error::Error for SendError {}

/// Counters of what the session sent, received, ignored and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Probes sent.
    pub probes_sent: u64,
    /// Probes received for this channel.
    pub probes_received: u64,
    /// Handshake inits sent (retransmissions included).
    pub inits_sent: u64,
    /// Handshake replies sent (cached repeats included).
    pub replies_sent: u64,
    /// Repeated inits that got no cached reply: over the re-send budget,
    /// too soon after the last, or after the handshake was confirmed.
    pub replies_suppressed: u64,
    /// Handshake messages that failed (wrong key, forged, malformed).
    pub handshake_failures: u64,
    /// Handshake messages ignored: a second different init, a reply on the
    /// wrong side or after the handshake.
    pub handshake_ignored: u64,
    /// Data packets sent.
    pub data_sent: u64,
    /// Data packets that authenticated.
    pub data_received: u64,
    /// Data packets that failed authentication.
    pub dropped_forged: u64,
    /// Data packets refused as replays (or too old for the window).
    pub dropped_replayed: u64,
    /// Data packets that came before the keys (the reply was still in flight).
    pub dropped_early: u64,
    /// Datagrams that were not valid peer packets, or for another channel.
    pub dropped_malformed: u64,
    /// Authenticated packets whose frames were malformed (a buggy peer).
    pub frame_errors: u64,
    /// Events dropped because the app did not drain them.
    pub events_dropped: u64,
    /// Times the destination moved to a new address.
    pub path_changes: u64,
    /// Relay bind packets sent.
    pub relay_binds_sent: u64,
    /// Times the relay packets moved to TCP (0 or 1).
    pub relay_tcp_fallbacks: u64,
    /// Data packets sent on a direct path while the session was relayed
    /// (each after a direct probe came; the first that arrives moves both
    /// sides to the direct path).
    pub direct_trials: u64,
    /// Whether the session ended because its packet key was spent
    /// ([`super::cipher::MAX_PACKETS_PER_KEY`]); its reason is `Failed`.
    pub key_exhausted: bool,
}

/// The connecting side's handshake in flight.
struct Initiating {
    initiator: PeerInitiator,
    packet: [u8; MAX_HANDSHAKE_PACKET_LEN],
    len: usize,
}

/// The connected side's answer, cached for repeated inits, and the budget
/// of its re-sends.
struct CachedReply {
    init: [u8; MAX_HANDSHAKE_PACKET_LEN],
    init_len: usize,
    reply: [u8; MAX_HANDSHAKE_PACKET_LEN],
    reply_len: usize,
    /// Where the first init came from.
    first_from: SocketAddr,
    /// When the reply last went (first answer or re-send).
    last_sent: Instant,
    /// Re-sends so far, and how many of them went elsewhere than `first_from`.
    resends: u8,
    resends_elsewhere: u8,
    /// An authenticated data packet came: the initiator has the reply, no
    /// re-send is ever needed again.
    confirmed: bool,
}

impl CachedReply {
    /// Whether a repeated init from `from` at `now` may draw the cached
    /// reply again; if so, the re-send is charged to the budget.
    fn take_resend(&mut self, now: Instant, from: SocketAddr) -> bool {
        let elsewhere = from != self.first_from;
        let allowed = !self.confirmed
            && self.resends < MAX_CACHED_REPLY_RESENDS
            && (!elsewhere || self.resends_elsewhere < MAX_CACHED_REPLY_RESENDS_ELSEWHERE)
            && now - self.last_sent >= CACHED_REPLY_MIN_INTERVAL;
        if allowed {
            self.resends += 1;
            self.resends_elsewhere += u8::from(elsewhere);
            self.last_sent = now;
        }
        allowed
    }
}

/// The data channel once the handshake is done.
struct Link {
    cipher: PacketCipher,
    transport: Transport,
    /// Where data packets go.
    path: SocketAddr,
}

/// One peer session's machine. No allocator: sized by constants.
pub struct PeerSession {
    config: PeerConfig,
    local: StaticKeypair,
    params: SessionParams,
    channel: u64,
    clock: Clock,
    start: Instant,
    deadline: Instant,
    /// Punching: `Some` until the handshake is done.
    next_punch: Option<Instant>,
    punch_deadline: Instant,
    targets: Vec<SocketAddr, MAX_PUNCH_TARGETS>,
    /// Bit `i`: a punch packet to `targets[i]` is due.
    punch_due: u8,
    /// The relay's address and this side's bind packet, if the session has one.
    relay: Option<(SocketAddr, [u8; RELAY_BIND_LEN])>,
    /// When the relay starts being tried (while punching).
    relay_at: Instant,
    /// Relay packets due: bit 0 the bind, bit 1 a punch packet.
    relay_due: u8,
    /// Whether relay packets go over TCP (the network drops UDP).
    relay_tcp: bool,
    /// Whether any packet of this session's channel arrived.
    heard: bool,
    /// While relayed: when the next direct probes go.
    next_direct: Option<Instant>,
    /// While relayed: a direct source that sent a probe, where the next
    /// data packet goes as a trial.
    trial_to: Option<SocketAddr>,
    probe_seq: u32,
    initiating: Option<Initiating>,
    /// When the first init went, and whether it was the only one (Karn).
    first_init_at: Option<Instant>,
    cached_reply: Option<CachedReply>,
    reply_to: Option<SocketAddr>,
    link: Option<Link>,
    /// Stream state the app gave before the link was up.
    stream_available: u64,
    stream_final: Option<u64>,
    /// Whether the peer's stream was received completely.
    peer_stream_done: bool,
    /// A close in progress: its reason and when it ends anyway.
    closing: Option<(EndReason, Instant)>,
    ended: bool,
    events: Deque<PeerEvent, MAX_QUEUED_PEER_EVENTS>,
    stats: PeerStats,
}

impl core::fmt::Debug for PeerSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PeerSession")
            .field("session_id", &self.params.session_id)
            .field("role", &self.params.role)
            .field("connected", &self.link.is_some())
            .field("closing", &self.closing)
            .field("ended", &self.ended)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The earlier of two optional times, where [`Instant::MAX`] is "never".
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    let (a, b) = (
        a.filter(|&t| t != Instant::MAX),
        b.filter(|&t| t != Instant::MAX),
    );
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl PeerSession {
    /// Starts a session from a terminal's `SessionReady`: punching begins at
    /// once (the first packet is due now), and the connecting side writes its
    /// handshake init. A peer key of small order cannot complete any
    /// handshake; such a session ends at the punch window with `Failed`.
    pub fn new(
        now: Instant,
        config: PeerConfig,
        local: &StaticKeypair,
        params: SessionParams,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> PeerSession {
        let mut clock = Clock::default();
        let now = clock.observe(now);
        let mut config = config;
        config.punch_interval = config.punch_interval.max(MIN_PUNCH_INTERVAL);
        config.close_timeout = config.close_timeout.max(MIN_CLOSE_TIMEOUT);
        let channel = channel_id(&params.session_id);
        let mut targets = Vec::new();
        // Capacity is at least one.
        let _ = targets.push(params.peer_addr);
        let relay = params.relay.as_ref().and_then(|r: &RelayAllocation| {
            let mut bind = [0u8; RELAY_BIND_LEN];
            encode_bind_raw(channel, &r.token, &mut bind).map(|_| (r.addr, bind))
        });
        let mut session = PeerSession {
            relay,
            relay_at: now + config.relay_after,
            relay_due: 0,
            relay_tcp: false,
            heard: false,
            next_direct: None,
            trial_to: None,
            deadline: now + Duration::from_secs(u64::from(params.duration_secs)),
            next_punch: Some(now + config.punch_interval),
            punch_deadline: now + config.punch_window,
            targets,
            punch_due: 1,
            probe_seq: 0,
            initiating: None,
            first_init_at: None,
            cached_reply: None,
            reply_to: None,
            link: None,
            stream_available: 0,
            stream_final: None,
            peer_stream_done: false,
            closing: None,
            ended: false,
            events: Deque::new(),
            stats: PeerStats::default(),
            local: local.clone(),
            channel,
            clock,
            start: now,
            params,
            config,
        };
        if initiates(session.params.role) {
            session.start_initiator(now, rng);
        }
        session
    }

    fn peer_params(&self) -> PeerParams<'_> {
        PeerParams {
            local: &self.local,
            peer_key: self.params.peer_key,
            session_id: self.params.session_id,
            session_key: &self.params.session_key,
        }
    }

    fn start_initiator(&mut self, now: Instant, rng: &mut (impl RngCore + CryptoRng)) {
        let mut noise = [0u8; MAX_HANDSHAKE_PACKET_LEN];
        let started = PeerInitiator::start(rng, now, &self.peer_params(), &[], &mut noise);
        let Ok((initiator, n)) = started else {
            // A weak peer key: nothing can succeed; the punch window ends it.
            self.stats.handshake_failures += 1;
            return;
        };
        let mut packet = [0u8; MAX_HANDSHAKE_PACKET_LEN];
        let encoded = Packet::HandshakeInit {
            channel: self.channel,
            noise: &noise[..n],
        }
        .encode(&mut packet);
        if let Ok(len) = encoded {
            self.initiating = Some(Initiating {
                initiator,
                packet,
                len,
            });
        }
    }

    // ----- accessors ---------------------------------------------------------

    /// The session this machine runs.
    pub fn session_id(&self) -> &SessionId {
        &self.params.session_id
    }

    /// The channel number every packet of this session carries.
    pub fn channel(&self) -> u64 {
        self.channel
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.params.role
    }

    /// Whether the data channel is up (and the session not ended).
    pub fn is_connected(&self) -> bool {
        self.link.is_some() && !self.ended
    }

    /// Whether the session ended ([`PeerEvent::Ended`] was emitted).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Whether data packets go through the relay now.
    pub fn is_relayed(&self) -> bool {
        match (&self.link, &self.relay) {
            (Some(link), Some((relay, _))) => link.path == *relay,
            _ => false,
        }
    }

    /// The relay, when this side reaches it over TCP: every packet
    /// [`Self::poll_transmit`] addresses to it goes on that stream (each
    /// framed, [`crate::relay::framing`]), and what the stream brings is a
    /// datagram from it.
    pub fn relay_over_tcp(&self) -> Option<SocketAddr> {
        self.relay.filter(|_| self.relay_tcp).map(|(r, _)| r)
    }

    /// Where data packets go now (the notified address before the handshake).
    pub fn peer_addr(&self) -> SocketAddr {
        self.link
            .as_ref()
            .map_or(self.params.peer_addr, |link| link.path)
    }

    /// When the permitted duration runs out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The session's counters.
    pub fn stats(&self) -> &PeerStats {
        &self.stats
    }

    /// The transport's counters, once the data channel is up.
    pub fn transport_stats(&self) -> Option<&TransportStats> {
        self.link.as_ref().map(|link| link.transport.stats())
    }

    /// Payload bytes sent and received so far (0 before the data channel).
    pub fn bytes(&self) -> (u64, u64) {
        self.transport_stats().map_or((0, 0), |s| {
            (
                s.stream_bytes_sent.saturating_add(s.datagram_bytes_sent),
                s.stream_bytes_received
                    .saturating_add(s.datagram_bytes_received),
            )
        })
    }

    /// Whether the local stream still has bytes not yet acknowledged (or was
    /// never finished): the transfer is active.
    pub fn stream_active(&self) -> bool {
        match self.stream_final {
            None => self.stream_available > 0,
            Some(len) => self
                .transport_stats()
                .is_none_or(|s| s.stream_bytes_acked < len),
        }
    }

    /// Whether a transfer runs: the local stream is not yet all
    /// acknowledged, or the peer's stream started and is not complete. The
    /// terminal asks for an extension at its threshold only then (S1504).
    /// Datagrams do not count here (a peer that sent one is not "sending a
    /// stream" forever after): the endpoint counts recent ones itself.
    pub fn transfer_active(&self) -> bool {
        let stream_received = self
            .transport_stats()
            .map_or(0, |s| s.stream_bytes_received);
        let receiving = stream_received > 0 && !self.peer_stream_done;
        self.stream_active() || receiving
    }

    // ----- app input ---------------------------------------------------------

    /// The session server granted more time: `duration_secs` is the whole
    /// permitted duration from the start. Ignored once closing.
    pub fn extend(&mut self, duration_secs: u32) {
        if self.closing.is_some() || self.ended {
            return;
        }
        self.params.duration_secs = duration_secs;
        self.deadline = self.start + Duration::from_secs(u64::from(duration_secs));
    }

    /// Ends the session for `reason` (forced end, transfer done, app): the
    /// transport's CLOSE goes to the peer, and [`PeerEvent::Ended`] follows
    /// when it is acknowledged or after the close timeout. Before the data
    /// channel is up, it ends at once. A second close changes nothing.
    pub fn close(&mut self, now: Instant, reason: EndReason) {
        let now = self.clock.observe(now);
        if self.closing.is_some() || self.ended {
            return;
        }
        match &mut self.link {
            Some(link) => {
                link.transport.close(now, reason.to_wire());
                self.closing = Some((reason, now + self.config.close_timeout));
                self.next_punch = None;
                self.drain_transport_events();
            }
            None => self.end(reason, false),
        }
    }

    /// More bytes of the local stream are readable from the source: `[0, available)`.
    pub fn stream_extend(&mut self, available: u64) {
        self.stream_available = self.stream_available.max(available);
        if let Some(link) = &mut self.link {
            link.transport.stream_extend(available);
        }
    }

    /// The local stream is `total_len` bytes long (its end). Before the data
    /// channel is up it is kept and given to the transport later.
    pub fn stream_finish(&mut self, total_len: u64) -> Result<(), StreamError> {
        if let Some(link) = &mut self.link {
            link.transport.stream_finish(total_len)?;
        }
        self.stream_available = self.stream_available.max(total_len);
        self.stream_final = Some(total_len);
        Ok(())
    }

    /// Queues one unreliable datagram (real-time data); it goes before
    /// stream data and is never retransmitted.
    pub fn send_datagram(&mut self, data: &[u8]) -> Result<(), SendError> {
        match &mut self.link {
            Some(link) if !self.ended && self.closing.is_none() => link
                .transport
                .send_datagram(data)
                .map_err(SendError::Datagram),
            _ => Err(SendError::NotConnected),
        }
    }

    /// Measures the round trip over the data channel: the next packet is
    /// ack-eliciting and its acknowledgement, the peer's reported ack delay
    /// subtracted, comes back as [`PeerEvent::Pong`] with the returned id;
    /// none within `timeout` is [`PeerEvent::PingLost`]. The receiving side
    /// needs nothing beyond its transport (see
    /// [`super::transport::ping`] for why the ACK is the answer rather than
    /// an echo). Refused before the data channel is up, while closing and
    /// once ended.
    pub fn ping(&mut self, now: Instant, timeout: Duration) -> Result<u32, PingError> {
        let now = self.clock.observe(now);
        match &mut self.link {
            Some(link) if !self.ended && self.closing.is_none() => {
                link.transport.ping(now, timeout)
            }
            _ => Err(PingError::NotConnected),
        }
    }

    /// The largest datagram [`Self::send_datagram`] takes now, if connected.
    pub fn max_datagram(&self) -> Option<usize> {
        self.link
            .as_ref()
            .map(|link| link.transport.max_datagram_len())
    }

    // ----- network input -----------------------------------------------------

    /// A datagram arrived from `from`. Peer packets for this session's
    /// channel are read (data packets are decrypted in place in `datagram`);
    /// anything else is counted and ignored.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
        sink: &mut impl PeerSink,
        rng: &mut (impl RngCore + CryptoRng),
    ) {
        let now = self.clock.observe(now);
        if self.ended {
            return;
        }
        let packet = match Packet::decode(datagram) {
            Ok(p) if p.channel() == self.channel => p,
            _ => {
                self.stats.dropped_malformed += 1;
                return;
            }
        };
        self.heard = true;
        match packet {
            Packet::Probe { .. } => self.on_probe(from),
            Packet::HandshakeInit { noise, .. } => {
                let mut init = [0u8; MAX_HANDSHAKE_PACKET_LEN];
                let len = datagram.len().min(MAX_HANDSHAKE_PACKET_LEN);
                init[..len].copy_from_slice(&datagram[..len]);
                let noise_len = noise.len();
                self.on_init(now, from, &init[..len], noise_len, rng);
            }
            Packet::HandshakeReply { noise, .. } => {
                let mut copy = [0u8; MAX_HANDSHAKE_PACKET_LEN];
                let n = noise.len().min(MAX_HANDSHAKE_PACKET_LEN);
                copy[..n].copy_from_slice(&noise[..n]);
                self.on_reply(now, from, &copy[..n]);
            }
            Packet::Data { .. } => self.on_data(now, from, datagram, sink),
        }
    }

    fn on_probe(&mut self, from: SocketAddr) {
        self.stats.probes_received += 1;
        if self.is_relayed() && self.relay.is_some_and(|(r, _)| r != from) {
            // A direct packet came: try the direct path with the next data
            // packet (probes are unauthenticated, so only a data packet the
            // peer authenticates moves a path).
            self.trial_to = Some(from);
            if let Some(link) = &mut self.link {
                link.transport.keepalive_now();
            }
            return;
        }
        if self.next_punch.is_none()
            || self.targets.contains(&from)
            || self.relay.is_some_and(|(r, _)| r == from)
        {
            return;
        }
        // Remember the newest hint in the second slot.
        if self.targets.len() < MAX_PUNCH_TARGETS {
            let _ = self.targets.push(from);
        } else if let Some(slot) = self.targets.last_mut() {
            *slot = from;
        }
    }

    fn on_init(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &[u8],
        noise_len: usize,
        rng: &mut (impl RngCore + CryptoRng),
    ) {
        if !self.takes_new_init(now, from, packet) {
            return;
        }
        let noise = &packet[packet.len() - noise_len..];
        let Some((cipher, reply, reply_len)) = self.answer_init(now, noise, rng) else {
            self.stats.handshake_failures += 1;
            return;
        };
        let mut init = [0u8; MAX_HANDSHAKE_PACKET_LEN];
        init[..packet.len()].copy_from_slice(packet);
        self.cached_reply = Some(CachedReply {
            init,
            init_len: packet.len(),
            reply,
            reply_len,
            first_from: from,
            last_sent: now,
            resends: 0,
            resends_elsewhere: 0,
            confirmed: false,
        });
        self.reply_to = Some(from);
        self.connect(now, cipher, from, None);
    }

    /// Whether a handshake init (the whole `packet`) from `from` should be
    /// answered with a new handshake: not on the initiating side, not while
    /// closing, and not once a reply is cached (a repeat of the same init
    /// gets the cached reply again, to `from`, within the re-send budget;
    /// any other is ignored).
    fn takes_new_init(&mut self, now: Instant, from: SocketAddr, packet: &[u8]) -> bool {
        if initiates(self.params.role) {
            self.stats.handshake_ignored += 1;
            return false;
        }
        if let Some(cached) = &mut self.cached_reply {
            if cached.init[..cached.init_len] == *packet {
                // A repeat (the reply was lost, or a replay): the same
                // reply, no new state, if the budget allows.
                if cached.take_resend(now, from) {
                    self.reply_to = Some(from);
                } else {
                    self.stats.replies_suppressed += 1;
                }
            } else {
                self.stats.handshake_ignored += 1;
            }
            return false;
        }
        self.closing.is_none()
    }

    /// The responder's half of the handshake: reads the init's Noise
    /// message and writes the reply packet. Returns the packet cipher and
    /// the encoded reply, or `None` if the handshake failed.
    fn answer_init(
        &self,
        now: Instant,
        noise: &[u8],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Option<(PacketCipher, [u8; MAX_HANDSHAKE_PACKET_LEN], usize)> {
        let mut payload = [0u8; MAX_PEER_HANDSHAKE_PAYLOAD];
        let (responder, _) =
            PeerResponder::accept(rng, now, &self.peer_params(), noise, &mut payload).ok()?;
        let mut noise_out = [0u8; MAX_HANDSHAKE_PACKET_LEN];
        let (cipher, n) = responder.reply_packets(&[], &mut noise_out).ok()?;
        let mut reply = [0u8; MAX_HANDSHAKE_PACKET_LEN];
        let reply_len = Packet::HandshakeReply {
            channel: self.channel,
            noise: &noise_out[..n],
        }
        .encode(&mut reply)
        .ok()?;
        Some((cipher, reply, reply_len))
    }

    fn on_reply(&mut self, now: Instant, from: SocketAddr, noise: &[u8]) {
        let Some(initiating) = &mut self.initiating else {
            self.stats.handshake_ignored += 1;
            return;
        };
        let mut payload = [0u8; MAX_PEER_HANDSHAKE_PAYLOAD];
        match initiating.initiator.finish_packets(noise, &mut payload) {
            Ok((cipher, _)) => {
                self.initiating = None;
                // Karn: an RTT sample only if exactly one init went.
                let rtt = match (self.first_init_at, self.stats.inits_sent) {
                    (Some(at), 1) => Some(now - at),
                    _ => None,
                };
                self.connect(now, cipher, from, rtt);
            }
            Err(HandshakeError::AlreadyFinished) => self.stats.handshake_ignored += 1,
            Err(_) => self.stats.handshake_failures += 1,
        }
    }

    /// The handshake is done: start the transport, stop punching.
    fn connect(
        &mut self,
        now: Instant,
        cipher: PacketCipher,
        path: SocketAddr,
        rtt: Option<Duration>,
    ) {
        let mut config = self.config.transport;
        if let Some(rtt) = rtt.filter(|r| !r.is_zero()) {
            config.initial_rtt = rtt;
        }
        // Built in place: the transport is large (see `MAX_PACKETS_IN_FLIGHT`).
        let link = self.link.insert(Link {
            cipher,
            transport: Transport::new(now, config),
            path,
        });
        if self.stream_available > 0 {
            link.transport.stream_extend(self.stream_available);
        }
        if let Some(len) = self.stream_final {
            // Validated against the same rule when the app gave it.
            let _ = link.transport.stream_finish(len);
        }
        self.next_punch = None;
        self.punch_due = 0;
        self.relay_due = 0;
        if self.is_relayed() {
            self.next_direct = Some(now);
        }
        let relayed = self.is_relayed();
        self.emit(PeerEvent::Connected {
            peer_addr: path,
            relayed,
        });
    }

    fn on_data(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
        sink: &mut impl PeerSink,
    ) {
        let Some(link) = &mut self.link else {
            self.stats.dropped_early += 1;
            return;
        };
        let newest_before = link.cipher.newest_received();
        let (pn, plaintext) = match link.cipher.open_in_place(datagram) {
            Ok(opened) => opened,
            Err(OpenError::Replayed | OpenError::TooOld) => {
                self.stats.dropped_replayed += 1;
                return;
            }
            Err(OpenError::Forged | OpenError::IntegrityLimit) => {
                self.stats.dropped_forged += 1;
                return;
            }
            Err(_) => {
                self.stats.dropped_malformed += 1;
                return;
            }
        };
        self.stats.data_received += 1;
        if let Some(cached) = &mut self.cached_reply {
            cached.confirmed = true;
        }
        if from != link.path && newest_before.is_none_or(|n| pn > n) {
            link.path = from;
            self.stats.path_changes += 1;
            let relayed = self.is_relayed();
            self.emit(PeerEvent::PathChanged {
                peer_addr: from,
                relayed,
            });
            self.next_direct = if relayed { Some(now) } else { None };
            if !self.is_relayed() {
                self.trial_to = None;
            }
        }
        let Some(link) = &mut self.link else {
            return;
        };
        if link
            .transport
            .handle_packet(now, pn, plaintext, sink)
            .is_err()
        {
            self.stats.frame_errors += 1;
        }
        self.drain_transport_events();
    }

    // ----- timers ------------------------------------------------------------

    /// Runs every timer due at `now`: punch packets, the punch window, the
    /// duration, the close timeout and the transport's timers. Afterwards
    /// [`Self::poll_timeout`] is `None` or later than `now`, or a packet is
    /// due ([`Self::poll_transmit`]).
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut (impl RngCore + CryptoRng)) {
        // Reserved for key updates; nothing random happens on a timer today.
        let _ = rng;
        let now = self.clock.observe(now);
        if self.ended {
            return;
        }
        if let Some(at) = self.next_punch {
            if self.link.is_none() && now >= self.punch_deadline {
                self.end(EndReason::Failed, false);
                return;
            }
            if now >= at {
                self.punch_due = (1u8 << self.targets.len()) - 1;
                if self.relay.is_some() && now >= self.relay_at {
                    self.relay_due = 0b11;
                }
                self.maybe_relay_over_tcp(now);
                let next = at + self.config.punch_interval;
                self.next_punch = Some(if next <= now {
                    now + self.config.punch_interval
                } else {
                    next
                });
            }
        }
        if let Some(at) = self.next_direct.filter(|&at| now >= at) {
            if self.is_relayed() && self.closing.is_none() {
                self.punch_due = (1u8 << self.targets.len()) - 1;
                // And bind again: the relay follows this side's NAT
                // rebinding (or undoes a replayed bind from elsewhere).
                self.relay_due |= 1;
                let next = at + self.config.direct_retry_interval;
                self.next_direct = Some(if next <= now {
                    now + self.config.direct_retry_interval
                } else {
                    next
                });
            } else {
                self.next_direct = None;
            }
        }
        if let Some((reason, at)) = self.closing {
            if now >= at {
                self.end(reason, false);
                return;
            }
        } else if now >= self.deadline {
            self.close(now, EndReason::DurationExpired);
            if self.ended {
                return;
            }
        }
        if let Some(link) = &mut self.link {
            link.transport.handle_timeout(now);
            self.drain_transport_events();
        }
    }

    /// The connecting side (a phone on a network that drops UDP; the
    /// connected side is reached by UDP triggers, so it has UDP) that has
    /// heard nothing of its session by `relay_at + relay_tcp_after` moves
    /// its relay packets to TCP, for good.
    fn maybe_relay_over_tcp(&mut self, now: Instant) {
        let due = self.relay_at.saturating_add(self.config.relay_tcp_after);
        if self.relay_tcp
            || self.heard
            || self.link.is_some()
            || !initiates(self.params.role)
            || now < due
        {
            return;
        }
        let Some((relay, _)) = self.relay else {
            return;
        };
        self.relay_tcp = true;
        self.relay_due = 0b11;
        self.stats.relay_tcp_fallbacks += 1;
        self.emit(PeerEvent::RelayOverTcp { relay });
    }

    // ----- output ------------------------------------------------------------

    /// Writes the next datagram into `buf` (at least [`MAX_DATAGRAM_LEN`]
    /// bytes for full-size packets) and returns its destination and length.
    /// Handshake packets first, then the transport's next packet (stream
    /// bytes are read from `source` at their offsets).
    #[must_use]
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        source: &mut impl StreamSource,
    ) -> Option<(SocketAddr, usize)> {
        let now = self.clock.observe(now);
        if self.ended {
            return None;
        }
        if let Some(to) = self.reply_to {
            if let Some(cached) = &self.cached_reply {
                let n = cached.reply_len;
                if let Some(out) = buf.get_mut(..n) {
                    out.copy_from_slice(&cached.reply[..n]);
                    self.reply_to = None;
                    self.stats.replies_sent += 1;
                    return Some((to, n));
                }
            }
            self.reply_to = None;
        }
        if self.relay_due & 1 != 0 {
            self.relay_due &= !1;
            if let Some((relay, bind)) = &self.relay {
                if let Some(out) = buf.get_mut(..RELAY_BIND_LEN) {
                    out.copy_from_slice(bind);
                    self.stats.relay_binds_sent += 1;
                    return Some((*relay, RELAY_BIND_LEN));
                }
            }
        }
        if self.punch_due != 0 {
            if let Some(sent) = self.punch(now, buf) {
                return Some(sent);
            }
        }
        if self.relay_due & 2 != 0 {
            self.relay_due &= !2;
            if let Some(relay) = self.relay.map(|(r, _)| r) {
                if let Some((_, n)) = self.punch_packet(now, buf) {
                    return Some((relay, n));
                }
            }
        }
        self.transmit_data(now, buf, source)
    }

    /// The next punch packet, to the lowest target that is due.
    fn punch(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        let index = self.punch_due.trailing_zeros() as usize;
        self.punch_due &= !(1u8 << index);
        let to = *self.targets.get(index)?;
        if self.link.is_some() {
            if self.relay.is_some_and(|(r, _)| r == to) {
                return None;
            }
            // Relayed: a probe on the direct path.
            return self.probe_packet(buf).map(|n| (to, n));
        }
        self.punch_packet(now, buf).map(|(_, n)| (to, n))
    }

    /// A probe into `buf`.
    fn probe_packet(&mut self, buf: &mut [u8]) -> Option<usize> {
        let out = buf.get_mut(..PROBE_LEN)?;
        let seq = self.probe_seq;
        self.probe_seq = self.probe_seq.wrapping_add(1);
        let n = Packet::Probe {
            channel: self.channel,
            seq,
        }
        .encode(out)
        .ok()?;
        self.stats.probes_sent += 1;
        Some(n)
    }

    /// This side's punch packet (its init, or a probe) into `buf`; the
    /// address is a placeholder the caller replaces.
    fn punch_packet(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        let to = self.params.peer_addr;
        if let Some(initiating) = &self.initiating {
            let out = buf.get_mut(..initiating.len)?;
            out.copy_from_slice(&initiating.packet[..initiating.len]);
            self.stats.inits_sent += 1;
            self.first_init_at.get_or_insert(now);
            return Some((to, initiating.len));
        }
        if initiates(self.params.role) {
            // No init (weak key): nothing useful to send.
            return None;
        }
        self.probe_packet(buf).map(|n| (to, n))
    }

    fn transmit_data(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        source: &mut impl StreamSource,
    ) -> Option<(SocketAddr, usize)> {
        let link = self.link.as_mut()?;
        if link.cipher.is_exhausted() {
            self.stats.key_exhausted = true;
            self.end(EndReason::Failed, false);
            return None;
        }
        let room = buf
            .len()
            .min(MAX_DATAGRAM_LEN)
            .checked_sub(DATA_OVERHEAD)?
            .min(link.transport.max_payload());
        let pn = link.cipher.next_packet_number();
        let payload = buf.get_mut(DATA_HEADER_LEN..DATA_HEADER_LEN + room)?;
        let written = link.transport.write_packet(now, pn, payload, source);
        let mut path = link.path;
        if written.is_some() {
            if let Some(trial) = self.trial_to.take() {
                path = trial;
                self.stats.direct_trials += 1;
            }
        }
        let sent = match written {
            None => None,
            Some(n) => match link.cipher.seal_in_place(pn, buf, n) {
                Ok(len) => Some(len),
                Err(_) => {
                    // Cannot happen (the room and the key limit were
                    // checked); the transport recorded the packet as sent,
                    // so the session could not go on.
                    self.end(EndReason::Failed, false);
                    return None;
                }
            },
        };
        self.drain_transport_events();
        let len = sent?;
        self.stats.data_sent += 1;
        Some((path, len))
    }

    /// The next event for the app, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] should next run; `None` once ended.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        let mut t = earliest(self.next_punch, self.next_direct);
        if self.link.is_none() {
            t = earliest(t, Some(self.punch_deadline));
        }
        t = earliest(t, Some(self.closing.map_or(self.deadline, |(_, at)| at)));
        if let Some(link) = &self.link {
            t = earliest(t, link.transport.poll_timeout());
        }
        // A time that saturated at the end of the clock means "never".
        t.filter(|&t| t != Instant::MAX)
    }

    // ----- internals ---------------------------------------------------------

    fn drain_transport_events(&mut self) {
        while let Some(event) = self.link.as_mut().and_then(|l| l.transport.poll_event()) {
            match event {
                TransportEvent::StreamAcked { len } => self.emit(PeerEvent::StreamAcked { len }),
                TransportEvent::StreamReceived { len } => {
                    self.peer_stream_done = true;
                    self.emit(PeerEvent::StreamReceived { len })
                }
                TransportEvent::StreamProgress { contiguous } => {
                    self.emit(PeerEvent::StreamProgress { contiguous })
                }
                TransportEvent::MtuChanged { mtu } => self.emit(PeerEvent::MtuChanged { mtu }),
                TransportEvent::Pong { id, rtt } => self.emit(PeerEvent::Pong { id, rtt }),
                TransportEvent::PingLost { id } => self.emit(PeerEvent::PingLost { id }),
                TransportEvent::PeerSilent => {
                    let reason = self.closing.map_or(EndReason::PeerLost, |(r, _)| r);
                    self.end(reason, false);
                }
                TransportEvent::Closed {
                    by_peer, reason, ..
                } => {
                    if by_peer {
                        let reason = EndReason::from_wire(reason).unwrap_or(EndReason::Failed);
                        self.end(reason, true);
                    } else {
                        let reason = self.closing.map_or(EndReason::Failed, |(r, _)| r);
                        self.end(reason, false);
                    }
                }
            }
            if self.ended {
                return;
            }
        }
    }

    fn end(&mut self, reason: EndReason, by_peer: bool) {
        if self.ended {
            return;
        }
        let (bytes_sent, bytes_received) = self.bytes();
        self.ended = true;
        self.next_punch = None;
        self.punch_due = 0;
        self.reply_to = None;
        self.emit(PeerEvent::Ended {
            reason,
            by_peer,
            bytes_sent,
            bytes_received,
        });
    }

    fn emit(&mut self, event: PeerEvent) {
        if let (PeerEvent::StreamProgress { .. }, Some(PeerEvent::StreamProgress { contiguous })) =
            (&event, self.events.back_mut())
        {
            if let PeerEvent::StreamProgress { contiguous: newer } = event {
                *contiguous = newer;
            }
            return;
        }
        if self.events.is_full() {
            let _ = self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        // Room was made above.
        let _ = self.events.push_back(event);
    }
}

#[cfg(test)]
mod tests;
