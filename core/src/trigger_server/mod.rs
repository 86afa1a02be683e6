//! The trigger server (seed: trigger server 5) as a sans-IO state machine
//! (needs the `alloc` feature).
//!
//! It keeps one table, `device ID -> observed public UDP address`, fed by
//! the terminals' keepalives (S701, 803/804), and serves the session server
//! over one secure link: it installs and revokes the terminals' UDP keys,
//! sends triggers and end triggers by UDP (S603, 807, S1605) and answers
//! address inquiries (S604-S606, 809/810).
//!
//! # Terminals (UDP)
//! - A [`Keepalive`] from a device ID the table does
//!   not hold is dropped with no reply and no state: a restarted trigger
//!   server (which holds no keys) is silent, and terminals re-register.
//! - For a known device, the counter must be newer than the last accepted
//!   and the tag must verify under the device's UDP key
//!   ([`ReplayGuard::accept`]); only then does the per-device rate limit
//!   ([`TriggerConfig::keepalive_limit`]) spend a token. The address recorded
//!   is the datagram's *observed* source address; nothing in a keepalive
//!   claims one. The reply, a [`KeepaliveAck`](crate::wire::KeepaliveAck),
//!   goes to that same address.
//! - For the operator only, each device's [`NatGuess`] compares the
//!   terminal's own local UDP address (from its `KeyInstall`) with that
//!   observed address ([`TriggerServer::devices`]); it changes nothing sent.
//! - A [`NatProbe`] (`tryst netcheck`) is checked the same way, under a
//!   replay guard and a rate limit ([`TriggerConfig::nat_probe_limit`]) of
//!   its own, and answered with a [`NatProbeAnswer`](crate::wire::NatProbeAnswer)
//!   to its observed source, at once or after the delay it asks for (at most
//!   [`MAX_NAT_PROBE_DELAY_SECS`]). A delayed answer is state: at most
//!   [`MAX_DELAYED_PROBES_PER_DEVICE`] per device and
//!   [`TriggerConfig::max_delayed_probes`] in all, each charged to the
//!   device whose tag verified; beyond, the probe is dropped. The answer
//!   names the probe port ([`TriggerConfig::probe_port`]), where the
//!   driver's stateless [`probe_port`] echo answers.
//! - An address expires [`MISSED_KEEPALIVES`] intervals plus
//!   [`ADDRESS_GRACE`] after the last valid keepalive; the key stays until
//!   the session server revokes it.
//! - A trigger or end trigger is sent to the live address with a fresh
//!   counter, resent every [`TriggerConfig::trigger_resend`] (a new counter
//!   each time) until [`TriggerConfig::trigger_sends`] sends were made; an
//!   authentic [`TriggerAck`] for any counter sent
//!   for a still pending trigger makes it `Delivered`, otherwise it ends
//!   `Unacknowledged` one resend interval after the last send. A device with
//!   no live address is `Offline` at once.
//!
//! ## No amplification
//! The only UDP replies the trigger server ever sends are the `KeepaliveAck`
//! and the `NatProbeAnswer`, each sent only after the message's counter was
//! found fresh and its tag verified under the key of a device the session
//! server installed. (The probe port's echo, [`probe_port`], is
//! unauthenticated but never longer than what it answers.) An
//! unauthenticated datagram therefore gets no reply and creates no state (no
//! table entry, no rate-limit bucket, no timer): it only moves a counter in
//! [`TriggerStats`]. Triggers go only to addresses that authenticated
//! keepalives proved, and only when the session server asks.
//!
//! Ordering note: the design (flows, "Keepalive") puts the per-device rate
//! limit before the tag check. Here it comes after: a limit charged before
//! the tag lets anyone who has seen a device ID (it travels in the clear)
//! drain that device's bucket with forged packets and make its real
//! keepalives drop, so its address would expire. Verifying first costs one
//! AES-GCM tag per forged packet and no state; the limit still bounds what
//! an authentic device can make the server send.
//!
//! # The session server link (stream)
//! The session server is the Noise IK initiator ([`crate::crypto::Initiator`]);
//! on an accepted stream the trigger server answers as the responder. It
//! accepts only initiators whose static key is in `allowed_session_servers`
//! (others get no reply, a [`TriggerEvent::LinkRefused`] and the stream is
//! closed: [`Output::Close`]); the first
//! message's payload must be an encoded `Poll`, and the reply carries an
//! encoded `Poll`. Handshakes are rate-limited per source
//! ([`LINK_HANDSHAKES`]) before any public-key work. After the handshake every
//! message must be a `Sealed` record of that channel; a plain message, a
//! record before the handshake or one that fails to open is ignored
//! (counted). A new handshake on a linked connection replaces its channel
//! (re-keying). Results of triggers go back on the connection the request
//! came from, or, if that one closed, on the connection the same session
//! server was last heard on (a record from it opened there; a replayed
//! handshake alone never redirects results).
//!
//! # Bounds
//! Devices: [`TriggerConfig::max_devices`]; pending triggers:
//! [`MAX_PENDING_PER_DEVICE`] per device and
//! [`TriggerConfig::max_pending_triggers`] in all; connections:
//! [`MAX_CONNECTIONS`]; output queues: [`MAX_TRIGGER_QUEUED_TRANSMITS`] and
//! [`MAX_TRIGGER_QUEUED_EVENTS`] (the oldest entry is dropped and counted). Timers
//! live in one ordered index holding exactly one entry per live address,
//! one per pending trigger and one per delayed probe answer
//! ([`MAX_DELAYED_PROBES_PER_DEVICE`], [`TriggerConfig::max_delayed_probes`]), so [`TriggerServer::poll_timeout`] is one lookup
//! whatever the number of devices.
//!
//! # Driver contract
//! That of [`crate::machine`] ([`Machine`]): after every input, poll
//! [`TriggerServer::poll_output`] until [`Output::Timeout`], and call
//! [`TriggerServer::handle_timeout`] then. The trigger server stores no
//! durable facts (its table is soft state, rebuilt by keepalives); a link
//! it refuses comes out as [`Output::Close`]. Time going back is clamped
//! ([`Clock::observe`]).

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::convert::Infallible;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use rand_core::{CryptoRng, RngCore};

use crate::crypto::channel::{REPLY_OVERHEAD, SEALED_OVERHEAD};
use crate::crypto::udp_auth::{self, AuthError, ReplayGuard};
use crate::crypto::{Responder, SecureChannel, StaticKeypair, MAX_HANDSHAKE_PAYLOAD};
use crate::machine::{ConnectionId, Destination, Input, Machine, Output, OwnedTransmit};
use crate::ratelimit::{Limit, RateLimiter, SourceKey, TokenBucket, KEEPALIVES};
use crate::time::{Clock, Instant};
use crate::wire::{
    AddressInquiry, AddressReply, DeviceId, HandshakeInit, HandshakeReply, Keepalive, KeyInstall,
    KeyInstallAck, KeyRevoke, Message, NatProbe, Poll, PublicKey, Sealed, SessionId, TriggerAck,
    TriggerOutcome, TriggerResult, UdpKey, MAX_NAT_PROBE_DELAY_SECS, MAX_PLAIN_MESSAGE_LEN,
};

pub mod probe_port;
#[cfg(test)]
mod tests;

/// The keepalive interval bounds the server shares with the terminals (one
/// definition, in [`crate::wire`]).
pub use crate::wire::{DEFAULT_KEEPALIVE_INTERVAL, MAX_KEEPALIVE_INTERVAL, MIN_KEEPALIVE_INTERVAL};
/// Keepalive intervals without a valid keepalive before an address expires.
pub const MISSED_KEEPALIVES: u32 = 3;
/// Slack added to `MISSED_KEEPALIVES * interval` before an address expires.
pub const ADDRESS_GRACE: Duration = Duration::from_secs(5);
/// Default bound of the device table.
pub const DEFAULT_MAX_DEVICES: usize = 1_000_000;
/// Default time between two sends of one trigger.
pub const TRIGGER_RESEND: Duration = Duration::from_secs(1);
/// Shortest resend time a config may set (a zero resend would spin).
pub const MIN_TRIGGER_RESEND: Duration = Duration::from_millis(10);
/// Longest resend time a config may set.
pub const MAX_TRIGGER_RESEND: Duration = Duration::from_secs(60);
/// Default number of sends of one trigger before it is unacknowledged.
pub const TRIGGER_SENDS: u8 = 3;
/// The most sends of one trigger a config may set.
pub const MAX_TRIGGER_SENDS: usize = 8;
/// The most triggers pending for one device at once; beyond, a request is
/// answered `Unacknowledged` at once.
pub const MAX_PENDING_PER_DEVICE: usize = 8;
/// Default bound on triggers pending over all devices.
pub const DEFAULT_MAX_PENDING_TRIGGERS: usize = 65_536;
/// The most stream connections tracked at once; a new one beyond evicts the
/// oldest connection without a link (or, if every one is linked, the oldest).
pub const MAX_CONNECTIONS: usize = 64;
/// The most transmits queued for the driver; beyond, the oldest is dropped.
pub const MAX_TRIGGER_QUEUED_TRANSMITS: usize = 1024;
/// The most events queued for the driver; beyond, the oldest is dropped.
pub const MAX_TRIGGER_QUEUED_EVENTS: usize = 4096;
/// Link handshakes per source (IPv4 address or IPv6 /64), checked before any
/// public-key work: a burst of 8, then one per second.
pub const LINK_HANDSHAKES: Limit = Limit::one_every(8, Duration::from_secs(1));
/// Authentic netcheck probes per device: a burst of 32 (one netcheck run),
/// then one per second.
pub const NAT_PROBES: Limit = Limit::one_every(32, Duration::from_secs(1));
/// The most delayed probe answers held for one device; beyond, a delayed
/// probe is dropped.
pub const MAX_DELAYED_PROBES_PER_DEVICE: usize = 16;
/// Default bound on delayed probe answers held over all devices.
pub const DEFAULT_MAX_DELAYED_PROBES: usize = 65_536;
/// Sources whose link handshakes are tracked by the rate limiter.
const TRACKED_LINK_SOURCES: usize = 64;
/// Room for one plain message between the servers (the largest is a
/// `KeyInstall` with an IPv6 local address, 65 bytes; the largest the
/// trigger server sends, an `AddressReply` with two IPv6 addresses, 48).
const INTERSERVER_PLAIN_LEN: usize = 80;

/// How the trigger server behaves; [`Default`] gives the documented values.
/// Out-of-range values are clamped by [`TriggerServer::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerConfig {
    /// The keepalive interval told to terminals in every ack; whole seconds,
    /// clamped to [`MIN_KEEPALIVE_INTERVAL`]..=[`MAX_KEEPALIVE_INTERVAL`].
    pub keepalive_interval: Duration,
    /// The most devices (installed keys) held; a `KeyInstall` beyond is refused.
    pub max_devices: usize,
    /// Time between two sends of a trigger, clamped to
    /// [`MIN_TRIGGER_RESEND`]..=[`MAX_TRIGGER_RESEND`].
    pub trigger_resend: Duration,
    /// Sends of one trigger before it is unacknowledged, clamped to
    /// `1..=`[`MAX_TRIGGER_SENDS`].
    pub trigger_sends: u8,
    /// The most triggers pending over all devices.
    pub max_pending_triggers: usize,
    /// Authentic keepalives allowed per device.
    pub keepalive_limit: Limit,
    /// Bounds on accepted streams: first-message and idle (no established
    /// link) deadlines, the per-source cap
    /// ([`crate::conn_guard::StreamBounds::default`]).
    pub streams: crate::conn_guard::StreamBounds,
    /// The port of the driver's probe socket ([`probe_port`]) on the same
    /// host, told in every [`NatProbeAnswer`](crate::wire::NatProbeAnswer);
    /// `None`: no probe port.
    pub probe_port: Option<u16>,
    /// Authentic netcheck probes allowed per device.
    pub nat_probe_limit: Limit,
    /// The most delayed probe answers held over all devices.
    pub max_delayed_probes: usize,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig {
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            max_devices: DEFAULT_MAX_DEVICES,
            trigger_resend: TRIGGER_RESEND,
            trigger_sends: TRIGGER_SENDS,
            max_pending_triggers: DEFAULT_MAX_PENDING_TRIGGERS,
            keepalive_limit: KEEPALIVES,
            streams: crate::conn_guard::StreamBounds::default(),
            probe_port: None,
            nat_probe_limit: NAT_PROBES,
            max_delayed_probes: DEFAULT_MAX_DELAYED_PROBES,
        }
    }
}

impl TriggerConfig {
    /// This config with every value brought into its allowed range.
    fn normalized(mut self) -> Self {
        let secs = self.keepalive_interval.as_secs().clamp(
            MIN_KEEPALIVE_INTERVAL.as_secs(),
            MAX_KEEPALIVE_INTERVAL.as_secs(),
        );
        self.keepalive_interval = Duration::from_secs(secs);
        self.trigger_resend = self
            .trigger_resend
            .clamp(MIN_TRIGGER_RESEND, MAX_TRIGGER_RESEND);
        self.trigger_sends = self.trigger_sends.clamp(1, MAX_TRIGGER_SENDS as u8);
        self
    }

    /// How long an address lives after a valid keepalive.
    pub fn address_lifetime(&self) -> Duration {
        self.keepalive_interval
            .saturating_mul(MISSED_KEEPALIVES)
            .saturating_add(ADDRESS_GRACE)
    }
}

/// Something that happened, for the operator's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerEvent {
    /// A device's observed address is new or changed (a valid keepalive).
    AddressChanged {
        /// The device.
        device_id: DeviceId,
        /// Its observed address.
        addr: SocketAddr,
    },
    /// No valid keepalive came in time: the device is offline.
    AddressExpired {
        /// The device.
        device_id: DeviceId,
    },
    /// The session server installed a device's UDP key.
    KeyInstalled {
        /// The device.
        device_id: DeviceId,
    },
    /// The table is full ([`TriggerConfig::max_devices`]): a key was not installed.
    KeyInstallRefused {
        /// The device.
        device_id: DeviceId,
    },
    /// The session server revoked a device's key: the device is forgotten.
    KeyRevoked {
        /// The device.
        device_id: DeviceId,
    },
    /// A session server completed the link handshake.
    SessionServerLinked {
        /// Its static public key.
        key: PublicKey,
    },
    /// A link handshake from a key not in `allowed_session_servers`; the
    /// driver may close that connection.
    LinkRefused {
        /// The connection it came on, which the server closes.
        conn: ConnectionId,
        /// The initiator's static public key.
        key: PublicKey,
    },
    /// A trigger or end trigger was acknowledged by the terminal.
    TriggerDelivered {
        /// The session server's operation.
        op_id: u32,
        /// The device.
        device_id: DeviceId,
    },
    /// A trigger or end trigger got no acknowledgement (or could not be queued).
    TriggerUnacknowledged {
        /// The session server's operation.
        op_id: u32,
        /// The device.
        device_id: DeviceId,
    },
    /// A trigger or end trigger for a device with no live address (or no key).
    Offline {
        /// The session server's operation.
        op_id: u32,
        /// The device.
        device_id: DeviceId,
    },
}

/// One device of the trigger server's table ([`TriggerServer::devices`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceView {
    /// The device.
    pub device_id: DeviceId,
    /// Its observed address, while live.
    pub addr: Option<SocketAddr>,
    /// When its last valid keepalive came (`None`: none yet).
    pub last_keepalive: Option<Instant>,
    /// What the trigger server guesses of the NAT in front of it.
    pub nat: NatGuess,
}

/// The trigger server's guess at the NAT in front of a terminal, for the
/// operator only (`tryst status`, the status page, metrics): it never
/// changes what the servers do.
///
/// # How it is decided
/// From two observations of one UDP socket, both authenticated: the
/// socket's local address as the terminal itself knows it (its
/// `Register`, inside the Noise handshake, passed on by the session server
/// in the `KeyInstall`) and the source address its keepalives arrive from
/// (each one's tag verified). Equal: nothing translated the packets, the
/// terminal has a public address. The address differs but the port is
/// kept: a NAT that preserves ports. The port differs: a NAT (or firewall)
/// that rewrites ports.
///
/// # Why no more than that
/// This is the smallest design that is correct with what the servers see:
/// the terminal sends UDP to one server address only (keepalives and
/// trigger acks, both to the trigger server's one socket), so whether the
/// NAT's mapping depends on the destination (endpoint-dependent,
/// "symmetric", where direct punching is unlikely) cannot be observed; that
/// needs the mapping seen from two server addresses, a second socket and
/// more traffic. A NAT that rewrites ports often maps per destination too
/// (Linux `masquerade random` does), but not always (many carrier-grade
/// NATs rewrite ports into a fixed block and are endpoint-independent), so
/// [`NatGuess::PortRewritten`] claims no more than the rewrite. The local
/// address travels only encrypted, so no on-path observer learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NatGuess {
    /// Not enough to tell: no live observed address, or the terminal did
    /// not say its local address (or said one with an unspecified IP and
    /// the same port as observed: public and port-preserving look alike).
    Unknown,
    /// The keepalives come from the terminal's own local address: no NAT.
    Public,
    /// The address was translated and the source port kept.
    PortPreserved,
    /// The source port was rewritten (the address too, usually).
    PortRewritten,
}

impl NatGuess {
    /// Every guess, in the order the operator's views list them.
    pub const ALL: [NatGuess; 4] = [
        NatGuess::Unknown,
        NatGuess::Public,
        NatGuess::PortPreserved,
        NatGuess::PortRewritten,
    ];

    /// The guess from a terminal's local address (`local`, its own claim)
    /// and the address its keepalives are observed from (`observed`). IPv4
    /// addresses mapped into IPv6 (a server on a dual-stack socket) compare
    /// as IPv4.
    pub fn from_addresses(local: Option<SocketAddr>, observed: Option<SocketAddr>) -> NatGuess {
        let (Some(local), Some(observed)) = (local, observed) else {
            return NatGuess::Unknown;
        };
        if local.port() == 0 {
            return NatGuess::Unknown;
        }
        if local.port() != observed.port() {
            return NatGuess::PortRewritten;
        }
        let local_ip = local.ip().to_canonical();
        if local_ip.is_unspecified() {
            NatGuess::Unknown
        } else if local_ip == observed.ip().to_canonical() {
            NatGuess::Public
        } else {
            NatGuess::PortPreserved
        }
    }

    /// What the operator reads.
    pub fn label(self) -> &'static str {
        match self {
            NatGuess::Unknown => "unknown",
            NatGuess::Public => "none (public address)",
            NatGuess::PortPreserved => "NAT, port preserved",
            NatGuess::PortRewritten => "NAT, port rewritten",
        }
    }
}

/// Counters of everything dropped or refused, and of the work done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TriggerStats {
    /// Datagrams that did not decode as a tryst message.
    pub datagrams_undecodable: u64,
    /// Datagrams that decoded but are not for the trigger server.
    pub datagrams_unexpected: u64,
    /// Keepalives or trigger acks naming a device the table does not hold.
    pub unknown_device: u64,
    /// Keepalives whose tag did not verify.
    pub keepalives_forged: u64,
    /// Keepalives whose counter was not newer than the last accepted.
    pub keepalives_replayed: u64,
    /// Authentic keepalives over the per-device limit.
    pub keepalives_rate_limited: u64,
    /// Keepalives accepted and acknowledged.
    pub keepalives_accepted: u64,
    /// Trigger acks for nothing pending, for a counter not sent, or forged.
    pub trigger_acks_ignored: u64,
    /// Trigger and end trigger datagrams sent (first sends and resends).
    pub triggers_sent: u64,
    /// Resends skipped because the address had expired meanwhile.
    pub resends_skipped: u64,
    /// Trigger requests refused at once because too many were pending.
    pub triggers_refused: u64,
    /// Key installs refused because the table was full.
    pub key_installs_refused: u64,
    /// Key installs repeating a key already installed for the device.
    pub key_installs_repeated: u64,
    /// Key revokes for a device the table does not hold.
    pub key_revokes_unknown: u64,
    /// Stream messages on unknown connections, undecodable, or plain messages
    /// where a record was expected.
    pub stream_ignored: u64,
    /// Sealed records on a connection without a completed handshake.
    pub sealed_before_handshake: u64,
    /// Sealed records that did not open (forged, replayed, other channel).
    pub records_refused: u64,
    /// Opened messages that are not for the trigger server.
    pub not_for_trigger_server: u64,
    /// Link handshakes that failed (bad Noise message or payload).
    pub handshakes_failed: u64,
    /// Link handshakes dropped by the per-source limit.
    pub handshakes_rate_limited: u64,
    /// Link handshakes from keys not allowed.
    pub links_refused: u64,
    /// Results or replies with no linked connection to go to.
    pub results_undeliverable: u64,
    /// Connections evicted to make room for a new one.
    pub connections_evicted: u64,
    /// Netcheck probes answered (at once or after their delay).
    pub nat_probes_answered: u64,
    /// Netcheck probes refused: unknown device, forged, replayed, over the
    /// rate limit, or no room for a delayed answer.
    pub nat_probes_refused: u64,
    /// Transmits dropped because the driver did not poll.
    pub transmits_dropped: u64,
    /// Events dropped because the driver did not poll.
    pub events_dropped: u64,
}

/// What a pending trigger asks the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Contact the session server (S603).
    Trigger,
    /// End this session (S1605).
    End(SessionId),
}

/// Who asked for a trigger: where its result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Origin {
    conn: ConnectionId,
    key: PublicKey,
}

/// A trigger sent and not yet answered.
#[derive(Debug, Clone)]
struct Pending {
    /// Unique over the machine's life: names its timer.
    seq: u64,
    op_id: u32,
    origin: Origin,
    kind: Kind,
    /// Counters sent for it, any of which an ack may name.
    sent: heapless::Vec<u64, MAX_TRIGGER_SENDS>,
    /// Sends made or skipped so far.
    attempts: u8,
    /// When its timer fires (next resend or the verdict).
    next: Instant,
}

/// One installed device.
#[derive(Debug, Clone)]
struct Device {
    key: UdpKey,
    keepalives: ReplayGuard,
    limit: TokenBucket,
    /// The observed address, while live.
    addr: Option<SocketAddr>,
    /// The local address its last valid keepalive arrived at, if the driver
    /// knows it: its acks and triggers leave from there.
    local: Option<IpAddr>,
    /// The terminal's own local UDP address, as its `KeyInstall` said.
    terminal_local: Option<SocketAddr>,
    /// When the last valid keepalive came.
    last_seen: Instant,
    /// The counter of the next trigger or end trigger; starts at 1.
    next_counter: u64,
    pending: Vec<Pending>,
    /// Netcheck probes: their own counters and limit.
    probes: ReplayGuard,
    probe_limit: TokenBucket,
    /// Probe answers waiting for their delay.
    delayed: Vec<DelayedAnswer>,
}

/// A netcheck probe's answer, held until its delay has passed.
#[derive(Debug, Clone, Copy)]
struct DelayedAnswer {
    /// Names its timer.
    seq: u64,
    /// When it is sent.
    at: Instant,
    /// The probe's counter and delay, echoed.
    counter: u64,
    delay_secs: u16,
    /// The probe's observed source, and the local address it arrived at.
    to: SocketAddr,
    local: Option<IpAddr>,
}

impl Device {
    fn live_addr(&self, now: Instant, lifetime: Duration) -> Option<SocketAddr> {
        self.addr.filter(|_| now < self.last_seen + lifetime)
    }
}

/// What a timer entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// The device's address expires.
    Expiry,
    /// The pending trigger with this sequence number is due.
    Resend(u64),
    /// The delayed probe answer with this sequence number is due.
    ProbeAnswer(u64),
}

/// A timer: when, for which device, what.
type TimerKey = (Instant, DeviceId, TimerKind);

/// The established side of a link.
struct Link {
    key: PublicKey,
    channel: SecureChannel,
}

/// One accepted stream.
struct Conn {
    remote: SocketAddr,
    opened: Instant,
    link: Option<Link>,
}

/// The trigger server state machine. See the [module](self) docs.
pub struct TriggerServer<R> {
    config: TriggerConfig,
    keypair: StaticKeypair,
    allowed: Vec<PublicKey>,
    rng: R,
    clock: Clock,
    devices: BTreeMap<DeviceId, Device>,
    timers: BTreeSet<TimerKey>,
    pending_total: usize,
    /// Delayed probe answers held over all devices.
    delayed_total: usize,
    next_seq: u64,
    conns: BTreeMap<ConnectionId, Conn>,
    /// Their deadlines and per-source counts ([`TriggerConfig::streams`]).
    guard: crate::conn_guard::ConnGuard,
    /// For each linked session server (by key bytes), the connection it was
    /// last heard on.
    last_heard: BTreeMap<[u8; 32], ConnectionId>,
    handshake_limit: RateLimiter<SourceKey, TRACKED_LINK_SOURCES>,
    transmits: VecDeque<OwnedTransmit>,
    /// Accepted streams to close, in order.
    closes: VecDeque<ConnectionId>,
    events: VecDeque<TriggerEvent>,
    stats: TriggerStats,
}

impl<R> core::fmt::Debug for TriggerServer<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TriggerServer")
            .field("public_key", &self.keypair.public_key())
            .field("devices", &self.devices.len())
            .field("timers", &self.timers.len())
            .field("pending", &self.pending_total)
            .field("connections", &self.conns.len())
            .field("stream_guard", &self.guard.counters())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<R: RngCore + CryptoRng> TriggerServer<R> {
    /// A trigger server with an empty table, answering link handshakes from
    /// the session servers whose static keys are `allowed_session_servers`.
    pub fn new(
        config: TriggerConfig,
        keypair: StaticKeypair,
        allowed_session_servers: &[PublicKey],
        mut rng: R,
    ) -> Self {
        let seed = rng.next_u64();
        let guard = crate::conn_guard::ConnGuard::new(config.streams, MAX_CONNECTIONS);
        TriggerServer {
            config: config.normalized(),
            keypair,
            allowed: allowed_session_servers.to_vec(),
            rng,
            clock: Clock::default(),
            devices: BTreeMap::new(),
            timers: BTreeSet::new(),
            pending_total: 0,
            delayed_total: 0,
            next_seq: 0,
            conns: BTreeMap::new(),
            guard,
            last_heard: BTreeMap::new(),
            handshake_limit: RateLimiter::with_seed(LINK_HANDSHAKES, seed),
            transmits: VecDeque::new(),
            closes: VecDeque::new(),
            events: VecDeque::new(),
            stats: TriggerStats::default(),
        }
    }

    /// The config in force (after clamping).
    pub fn config(&self) -> &TriggerConfig {
        &self.config
    }

    /// The server's static public key, which session servers are configured with.
    pub fn public_key(&self) -> PublicKey {
        self.keypair.public_key()
    }

    /// Streams the stream guard refused or closed so far.
    pub fn stream_guard_counters(&self) -> crate::conn_guard::GuardCounters {
        self.guard.counters()
    }

    /// Counters of drops, refusals and work done.
    pub fn stats(&self) -> &TriggerStats {
        &self.stats
    }

    /// Devices whose key is installed.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Triggers and end triggers waiting for an ack or their verdict.
    pub fn pending_triggers(&self) -> usize {
        self.pending_total
    }

    /// Every device whose key is installed, as the operator sees it: its
    /// live observed address and when its last valid keepalive came.
    pub fn devices(&self) -> impl Iterator<Item = DeviceView> + '_ {
        let lifetime = self.config.address_lifetime();
        let now = self.clock.latest();
        self.devices.iter().map(move |(&device_id, d)| DeviceView {
            device_id,
            addr: d.live_addr(now, lifetime),
            last_keepalive: d.addr.map(|_| d.last_seen),
            nat: NatGuess::from_addresses(d.terminal_local, d.live_addr(now, lifetime)),
        })
    }

    /// The device's live observed address at the latest time seen, if any.
    pub fn live_address(&self, device_id: DeviceId) -> Option<SocketAddr> {
        let lifetime = self.config.address_lifetime();
        self.devices
            .get(&device_id)
            .and_then(|d| d.live_addr(self.clock.latest(), lifetime))
    }

    /// A datagram arrived on the UDP socket from `from`.
    pub fn handle_udp(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.handle_udp_at(now, from, None, datagram);
    }

    /// [`Self::handle_udp`] for a datagram that arrived at local address
    /// `local` (a server on an unspecified address of a host with several):
    /// what answers it, and the device's later triggers, leave from there.
    pub fn handle_udp_at(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local: Option<IpAddr>,
        datagram: &[u8],
    ) {
        let now = self.clock.observe(now);
        match Message::decode(datagram) {
            Ok(Message::Keepalive(k)) => self.on_keepalive(now, from, local, &k),
            Ok(Message::TriggerAck(a)) => self.on_trigger_ack(&a),
            Ok(Message::NatProbe(p)) => self.on_nat_probe(now, from, local, &p),
            Ok(_) => self.stats.datagrams_unexpected += 1,
            Err(_) => self.stats.datagrams_undecodable += 1,
        }
    }

    /// The driver accepted a stream from `remote`, numbered `conn`.
    pub fn handle_connection_opened(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        remote: SocketAddr,
    ) {
        let now = self.clock.observe(now);
        if self.conns.remove(&conn).is_none() && self.conns.len() >= MAX_CONNECTIONS {
            self.evict_connection();
        }
        self.forget_last_heard(conn);
        if self.guard.open(now, conn, remote).is_err() {
            self.close_stream(conn);
            return;
        }
        self.conns.insert(
            conn,
            Conn {
                remote,
                opened: now,
                link: None,
            },
        );
    }

    /// One whole message arrived on stream `conn`.
    pub fn handle_stream(&mut self, now: Instant, conn: ConnectionId, message: &[u8]) {
        let now = self.clock.observe(now);
        if !self.conns.contains_key(&conn) {
            self.stats.stream_ignored += 1;
            return;
        }
        self.guard.heard(now, conn);
        match Message::decode(message) {
            Ok(Message::HandshakeInit(init)) => self.on_handshake(now, conn, &init),
            Ok(Message::Sealed(record)) => self.on_record(now, conn, &record),
            Ok(_) | Err(_) => self.stats.stream_ignored += 1,
        }
    }

    /// Stream `conn` closed; its link (if any) is gone.
    pub fn handle_connection_closed(&mut self, now: Instant, conn: ConnectionId) {
        self.clock.observe(now);
        self.conns.remove(&conn);
        self.guard.close(conn);
        self.forget_last_heard(conn);
    }

    /// Does all work due at `now`: expires addresses, resends triggers and
    /// gives verdicts. Afterwards [`Self::poll_timeout`] is `None` or later than `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        while let Some(&(at, device_id, kind)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, device_id, kind));
            match kind {
                TimerKind::Expiry => self.expire(now, device_id),
                TimerKind::Resend(seq) => self.resend(now, device_id, seq),
                TimerKind::ProbeAnswer(seq) => self.send_delayed_answer(device_id, seq),
            }
        }
        // Streams that sent no first message in time, or never linked.
        while let Some(conn) = self.guard.pop_expired(now) {
            self.conns.remove(&conn);
            self.forget_last_heard(conn);
            self.close_stream(conn);
        }
    }

    /// When [`Self::handle_timeout`] should next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = self.timers.first().map(|&(at, _, _)| at);
        match (timers, self.guard.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- terminals (UDP) ----

    fn on_keepalive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local: Option<IpAddr>,
        k: &Keepalive,
    ) {
        let lifetime = self.config.address_lifetime();
        let Some(device) = self.devices.get_mut(&k.device_id) else {
            self.stats.unknown_device += 1;
            return;
        };
        match device.keepalives.accept(&device.key, k) {
            Ok(()) => {}
            Err(AuthError::Replayed(_)) => {
                self.stats.keepalives_replayed += 1;
                return;
            }
            Err(_) => {
                self.stats.keepalives_forged += 1;
                return;
            }
        }
        if device.limit.check(now).is_err() {
            self.stats.keepalives_rate_limited += 1;
            return;
        }
        let changed = device.addr != Some(from);
        if device.addr.is_some() {
            self.timers
                .remove(&(device.last_seen + lifetime, k.device_id, TimerKind::Expiry));
        }
        device.addr = Some(from);
        device.local = local;
        device.last_seen = now;
        self.timers
            .insert((now + lifetime, k.device_id, TimerKind::Expiry));
        let interval = u16::try_from(self.config.keepalive_interval.as_secs()).unwrap_or(u16::MAX);
        let ack = udp_auth::seal_keepalive_ack(&device.key, k.counter, interval, from);
        self.stats.keepalives_accepted += 1;
        self.transmit_from(Destination::Udp(from), local, &ack.into());
        if changed {
            self.event(TriggerEvent::AddressChanged {
                device_id: k.device_id,
                addr: from,
            });
        }
    }

    /// A netcheck probe: verified, limited, then answered now or held.
    fn on_nat_probe(
        &mut self,
        now: Instant,
        from: SocketAddr,
        local: Option<IpAddr>,
        p: &NatProbe,
    ) {
        let probe_port = self.config.probe_port.unwrap_or(0);
        let room = self.delayed_total < self.config.max_delayed_probes;
        let Some(device) = self.devices.get_mut(&p.device_id) else {
            self.stats.unknown_device += 1;
            self.stats.nat_probes_refused += 1;
            return;
        };
        // Counter and tag first (no state moves for a forged probe), then
        // the limit, charged to the device whose tag verified.
        if device.probes.accept(&device.key, p).is_err() || device.probe_limit.check(now).is_err() {
            self.stats.nat_probes_refused += 1;
            return;
        }
        let delay_secs = p.delay_secs.min(MAX_NAT_PROBE_DELAY_SECS);
        if delay_secs == 0 {
            let answer =
                udp_auth::seal_nat_probe_answer(&device.key, p.counter, 0, probe_port, from);
            self.stats.nat_probes_answered += 1;
            self.transmit_from(Destination::Udp(from), local, &answer.into());
            return;
        }
        if !room || device.delayed.len() >= MAX_DELAYED_PROBES_PER_DEVICE {
            self.stats.nat_probes_refused += 1;
            return;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let at = now + Duration::from_secs(u64::from(delay_secs));
        device.delayed.push(DelayedAnswer {
            seq,
            at,
            counter: p.counter,
            delay_secs,
            to: from,
            local,
        });
        self.delayed_total += 1;
        self.timers
            .insert((at, p.device_id, TimerKind::ProbeAnswer(seq)));
    }

    /// A delayed probe answer's time came: send it.
    fn send_delayed_answer(&mut self, device_id: DeviceId, seq: u64) {
        let probe_port = self.config.probe_port.unwrap_or(0);
        let Some(device) = self.devices.get_mut(&device_id) else {
            return;
        };
        let Some(index) = device.delayed.iter().position(|d| d.seq == seq) else {
            return;
        };
        let d = device.delayed.remove(index);
        self.delayed_total = self.delayed_total.saturating_sub(1);
        let answer =
            udp_auth::seal_nat_probe_answer(&device.key, d.counter, d.delay_secs, probe_port, d.to);
        self.stats.nat_probes_answered += 1;
        self.transmit_from(Destination::Udp(d.to), d.local, &answer.into());
    }

    /// Delayed probe answers held now, over all devices.
    pub fn delayed_probe_answers(&self) -> usize {
        self.delayed_total
    }

    fn on_trigger_ack(&mut self, ack: &TriggerAck) {
        let Some(device) = self.devices.get_mut(&ack.device_id) else {
            self.stats.unknown_device += 1;
            return;
        };
        // Cheap checks first: only a counter sent for a pending trigger can
        // be worth a tag check.
        let Some(index) = device
            .pending
            .iter()
            .position(|p| p.sent.contains(&ack.counter))
        else {
            self.stats.trigger_acks_ignored += 1;
            return;
        };
        if udp_auth::verify(&device.key, ack).is_err() {
            self.stats.trigger_acks_ignored += 1;
            return;
        }
        let pending = device.pending.remove(index);
        self.timers
            .remove(&(pending.next, ack.device_id, TimerKind::Resend(pending.seq)));
        self.pending_total = self.pending_total.saturating_sub(1);
        self.finish(ack.device_id, &pending, TriggerOutcome::Delivered);
    }

    fn expire(&mut self, now: Instant, device_id: DeviceId) {
        let lifetime = self.config.address_lifetime();
        let Some(device) = self.devices.get_mut(&device_id) else {
            return;
        };
        if device.addr.is_some() && device.live_addr(now, lifetime).is_none() {
            device.addr = None;
            self.event(TriggerEvent::AddressExpired { device_id });
        }
    }

    /// A pending trigger's timer fired: send again, or give the verdict.
    fn resend(&mut self, now: Instant, device_id: DeviceId, seq: u64) {
        let lifetime = self.config.address_lifetime();
        let (resend, sends) = (self.config.trigger_resend, self.config.trigger_sends);
        let Some(device) = self.devices.get_mut(&device_id) else {
            return;
        };
        let Some(index) = device.pending.iter().position(|p| p.seq == seq) else {
            return;
        };
        let attempts = device.pending.get(index).map_or(u8::MAX, |p| p.attempts);
        if attempts >= sends {
            let pending = device.pending.remove(index);
            self.pending_total = self.pending_total.saturating_sub(1);
            self.finish(device_id, &pending, TriggerOutcome::Unacknowledged);
            return;
        }
        let kind = device.pending.get(index).map(|p| p.kind);
        let local = device.local;
        let message = match (device.live_addr(now, lifetime), kind) {
            (Some(addr), Some(kind)) => next_trigger(device, kind).map(|m| (addr, m)),
            _ => None,
        };
        let Some(pending) = device.pending.get_mut(index) else {
            return;
        };
        pending.attempts = pending.attempts.saturating_add(1);
        pending.next = now + resend;
        self.timers
            .insert((pending.next, device_id, TimerKind::Resend(seq)));
        match message {
            Some((addr, (counter, message))) => {
                let _ = pending.sent.push(counter);
                self.stats.triggers_sent += 1;
                self.transmit_from(Destination::Udp(addr), local, &message);
            }
            None => self.stats.resends_skipped += 1,
        }
    }

    // ---- the session server link ----

    fn on_handshake(&mut self, now: Instant, conn: ConnectionId, init: &HandshakeInit<'_>) {
        let Some(remote) = self.conns.get(&conn).map(|c| c.remote) else {
            return;
        };
        if self
            .handshake_limit
            .check(now, &SourceKey::from_addr(&remote))
            .is_err()
        {
            self.stats.handshakes_rate_limited += 1;
            return;
        }
        let mut payload = [0u8; MAX_HANDSHAKE_PAYLOAD];
        let Ok((responder, n)) =
            Responder::accept(&mut self.rng, now, &self.keypair, init, &mut payload)
        else {
            self.stats.handshakes_failed += 1;
            return;
        };
        let key = responder.initiator_key();
        if !self.allowed.contains(&key) {
            self.stats.links_refused += 1;
            self.event(TriggerEvent::LinkRefused { conn, key });
            self.conns.remove(&conn);
            self.forget_last_heard(conn);
            if self.closes.len() < MAX_CONNECTIONS {
                self.closes.push_back(conn);
            }
            return;
        }
        if !matches!(
            payload.get(..n).map(Message::decode),
            Some(Ok(Message::Poll(_)))
        ) {
            self.stats.handshakes_failed += 1;
            return;
        }
        let channel_number = loop {
            let n = self.rng.next_u64();
            if n != 0 {
                break n;
            }
        };
        let mut hello = [0u8; INTERSERVER_PLAIN_LEN];
        let Ok(hello_len) = Message::Poll(Poll).encode(&mut hello) else {
            return;
        };
        let mut noise = [0u8; INTERSERVER_PLAIN_LEN + REPLY_OVERHEAD];
        let Ok((channel, noise_len)) = responder.reply(
            channel_number,
            hello.get(..hello_len).unwrap_or_default(),
            &mut noise,
        ) else {
            self.stats.handshakes_failed += 1;
            return;
        };
        let reply = Message::HandshakeReply(HandshakeReply {
            channel: channel_number,
            noise: noise.get(..noise_len).unwrap_or_default(),
        });
        if let Some(c) = self.conns.get_mut(&conn) {
            if c.link.replace(Link { key, channel }).is_none() {
                self.guard.attach(conn);
            }
        }
        self.transmit(Destination::Connection(conn), &reply);
        self.event(TriggerEvent::SessionServerLinked { key });
    }

    fn on_record(&mut self, now: Instant, conn: ConnectionId, record: &Sealed<'_>) {
        let Some(link) = self.conns.get_mut(&conn).and_then(|c| c.link.as_mut()) else {
            self.stats.sealed_before_handshake += 1;
            return;
        };
        let mut plain = [0u8; MAX_PLAIN_MESSAGE_LEN];
        let Ok(n) = link.channel.open(record, &mut plain) else {
            self.stats.records_refused += 1;
            return;
        };
        let origin = Origin {
            conn,
            key: link.key,
        };
        self.last_heard.insert(origin.key.0, conn);
        let Some(Ok(message)) = plain.get(..n).map(Message::decode) else {
            self.stats.not_for_trigger_server += 1;
            return;
        };
        match message {
            Message::KeyInstall(m) => self.key_install(now, origin, &m),
            Message::KeyRevoke(m) => self.key_revoke(&m),
            Message::TriggerRequest(m) => {
                self.start_trigger(now, origin, m.op_id, m.device_id, Kind::Trigger)
            }
            Message::EndTriggerRequest(m) => {
                self.start_trigger(now, origin, m.op_id, m.device_id, Kind::End(m.session_id))
            }
            Message::AddressInquiry(m) => self.address_inquiry(now, origin, &m),
            // The session server's "hello": nothing to do.
            Message::Poll(_) => {}
            _ => self.stats.not_for_trigger_server += 1,
        }
    }

    /// Installs a device's key and acknowledges it to the session server
    /// (which then lets the terminal start its keepalives: none arrives
    /// before the key, so none is dropped and none can be replayed later).
    fn key_install(&mut self, now: Instant, origin: Origin, m: &KeyInstall) {
        let ack = KeyInstallAck {
            device_id: m.device_id,
        };
        if let Some(existing) = self.devices.get_mut(&m.device_id) {
            if existing.key == m.udp_key {
                // Counters must never start again under one key.
                existing.terminal_local = m.local;
                self.stats.key_installs_repeated += 1;
                self.send_to_session_server(origin, &ack.into());
                return;
            }
            // A new key for the same number: a new registration; start afresh.
            self.remove_device(m.device_id);
        } else if self.devices.len() >= self.config.max_devices {
            self.stats.key_installs_refused += 1;
            self.event(TriggerEvent::KeyInstallRefused {
                device_id: m.device_id,
            });
            return;
        }
        self.devices.insert(
            m.device_id,
            Device {
                local: None,
                terminal_local: m.local,
                key: m.udp_key,
                keepalives: ReplayGuard::new(),
                limit: TokenBucket::new(self.config.keepalive_limit),
                addr: None,
                last_seen: now,
                next_counter: 1,
                pending: Vec::new(),
                probes: ReplayGuard::new(),
                probe_limit: TokenBucket::new(self.config.nat_probe_limit),
                delayed: Vec::new(),
            },
        );
        self.event(TriggerEvent::KeyInstalled {
            device_id: m.device_id,
        });
        self.send_to_session_server(origin, &ack.into());
    }

    fn key_revoke(&mut self, m: &KeyRevoke) {
        if self.remove_device(m.device_id) {
            self.event(TriggerEvent::KeyRevoked {
                device_id: m.device_id,
            });
        } else {
            self.stats.key_revokes_unknown += 1;
        }
    }

    /// Forgets a device, its timers and its pending triggers (answered
    /// `Offline`: there is no device to reach any more).
    fn remove_device(&mut self, device_id: DeviceId) -> bool {
        let lifetime = self.config.address_lifetime();
        let Some(device) = self.devices.remove(&device_id) else {
            return false;
        };
        if device.addr.is_some() {
            self.timers
                .remove(&(device.last_seen + lifetime, device_id, TimerKind::Expiry));
        }
        for d in &device.delayed {
            self.timers
                .remove(&(d.at, device_id, TimerKind::ProbeAnswer(d.seq)));
            self.delayed_total = self.delayed_total.saturating_sub(1);
        }
        for pending in &device.pending {
            self.timers
                .remove(&(pending.next, device_id, TimerKind::Resend(pending.seq)));
            self.pending_total = self.pending_total.saturating_sub(1);
            self.finish(device_id, pending, TriggerOutcome::Offline);
        }
        true
    }

    fn start_trigger(
        &mut self,
        now: Instant,
        origin: Origin,
        op_id: u32,
        device_id: DeviceId,
        kind: Kind,
    ) {
        let lifetime = self.config.address_lifetime();
        let resend = self.config.trigger_resend;
        let seq = self.next_seq;
        let under_total = self.pending_total < self.config.max_pending_triggers;
        let mut pending = Pending {
            seq,
            op_id,
            origin,
            kind,
            sent: heapless::Vec::new(),
            attempts: 1,
            next: now + resend,
        };
        let Some(device) = self.devices.get_mut(&device_id) else {
            self.finish(device_id, &pending, TriggerOutcome::Offline);
            return;
        };
        let Some(addr) = device.live_addr(now, lifetime) else {
            self.finish(device_id, &pending, TriggerOutcome::Offline);
            return;
        };
        let local = device.local;
        if !under_total || device.pending.len() >= MAX_PENDING_PER_DEVICE {
            self.stats.triggers_refused += 1;
            self.finish(device_id, &pending, TriggerOutcome::Unacknowledged);
            return;
        }
        let message = next_trigger(device, kind);
        if let Some((counter, _)) = message {
            let _ = pending.sent.push(counter);
        }
        self.next_seq = self.next_seq.wrapping_add(1);
        self.timers
            .insert((pending.next, device_id, TimerKind::Resend(seq)));
        device.pending.push(pending);
        self.pending_total += 1;
        match message {
            Some((_, message)) => {
                self.stats.triggers_sent += 1;
                self.transmit_from(Destination::Udp(addr), local, &message);
            }
            None => self.stats.resends_skipped += 1,
        }
    }

    fn address_inquiry(&mut self, now: Instant, origin: Origin, m: &AddressInquiry) {
        let lifetime = self.config.address_lifetime();
        let live = |id: DeviceId| {
            self.devices
                .get(&id)
                .and_then(|d| d.live_addr(now, lifetime))
        };
        let reply = AddressReply {
            op_id: m.op_id,
            first: live(m.first),
            second: live(m.second),
        };
        self.send_to_session_server(origin, &reply.into());
    }

    /// Reports a trigger's outcome to the session server and the log.
    fn finish(&mut self, device_id: DeviceId, pending: &Pending, outcome: TriggerOutcome) {
        let op_id = pending.op_id;
        let result = TriggerResult { op_id, outcome };
        self.send_to_session_server(pending.origin, &result.into());
        self.event(match outcome {
            TriggerOutcome::Delivered => TriggerEvent::TriggerDelivered { op_id, device_id },
            TriggerOutcome::Unacknowledged => {
                TriggerEvent::TriggerUnacknowledged { op_id, device_id }
            }
            TriggerOutcome::Offline => TriggerEvent::Offline { op_id, device_id },
        });
    }

    /// Seals `message` to the session server that is `origin`: on its
    /// connection if still linked to it, else where it was last heard.
    fn send_to_session_server(&mut self, origin: Origin, message: &Message<'_>) {
        let linked_to = |c: &Conn| c.link.as_ref().is_some_and(|l| l.key == origin.key);
        let conn = if self.conns.get(&origin.conn).is_some_and(linked_to) {
            Some(origin.conn)
        } else {
            self.last_heard
                .get(&origin.key.0)
                .copied()
                .filter(|c| self.conns.get(c).is_some_and(linked_to))
        };
        let Some(link) = conn
            .and_then(|c| self.conns.get_mut(&c))
            .and_then(|c| c.link.as_mut())
        else {
            self.stats.results_undeliverable += 1;
            return;
        };
        let mut plain = [0u8; INTERSERVER_PLAIN_LEN];
        let mut out = [0u8; INTERSERVER_PLAIN_LEN + SEALED_OVERHEAD];
        let sealed = message
            .encode(&mut plain)
            .ok()
            .and_then(|n| plain.get(..n))
            .and_then(|p| link.channel.seal(p, &mut out).ok())
            .and_then(|n| out.get(..n));
        let transmit = match (conn, sealed) {
            (Some(c), Some(bytes)) => OwnedTransmit::from_bytes(Destination::Connection(c), bytes),
            _ => None,
        };
        match transmit {
            Some(t) => self.push_transmit(t),
            None => self.stats.results_undeliverable += 1,
        }
    }

    fn evict_connection(&mut self) {
        let oldest = |linked: bool| {
            self.conns
                .iter()
                .filter(|(_, c)| c.link.is_some() == linked)
                .min_by_key(|(id, c)| (c.opened, **id))
                .map(|(id, _)| *id)
        };
        if let Some(victim) = oldest(false).or_else(|| oldest(true)) {
            self.conns.remove(&victim);
            self.guard.close(victim);
            self.close_stream(victim);
            self.forget_last_heard(victim);
            self.stats.connections_evicted += 1;
        }
    }

    /// Queues a close of `conn` (once; bounded by the streams tracked).
    fn close_stream(&mut self, conn: ConnectionId) {
        if !self.closes.contains(&conn) {
            self.closes.push_back(conn);
        }
    }

    fn forget_last_heard(&mut self, conn: ConnectionId) {
        self.last_heard.retain(|_, c| *c != conn);
    }

    // ---- output ----

    /// The next output (see [`Machine::poll_output`]).
    pub fn poll_output(&mut self, buf: &mut [u8]) -> Output<Infallible, TriggerEvent> {
        if let Some(conn) = self.closes.pop_front() {
            self.guard.close(conn);
            return Output::Close(conn);
        }
        if let Some(event) = self.events.pop_front() {
            return Output::Event(event);
        }
        while let Some(t) = self.transmits.pop_front() {
            match t.write_into(buf) {
                Some(transmit) => return Output::Transmit(transmit),
                None => self.stats.transmits_dropped += 1,
            }
        }
        Output::Timeout(self.poll_timeout())
    }

    fn transmit(&mut self, destination: Destination, message: &Message<'_>) {
        self.transmit_from(destination, None, message);
    }

    /// A transmit that leaves from `local` ([`Transmit::local`](crate::machine::Transmit::local)).
    fn transmit_from(
        &mut self,
        destination: Destination,
        local: Option<IpAddr>,
        message: &Message<'_>,
    ) {
        if let Some(t) = OwnedTransmit::new(destination, message) {
            self.push_transmit(t.from_local(local));
        }
    }

    fn push_transmit(&mut self, t: OwnedTransmit) {
        if self.transmits.len() >= MAX_TRIGGER_QUEUED_TRANSMITS {
            self.transmits.pop_front();
            self.stats.transmits_dropped += 1;
        }
        self.transmits.push_back(t);
    }

    fn event(&mut self, e: TriggerEvent) {
        if self.events.len() >= MAX_TRIGGER_QUEUED_EVENTS {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(e);
    }
}

/// Takes the device's next trigger counter and builds the sealed message of
/// `kind` with it; `None` once the counters are spent (2^64 sends: never).
fn next_trigger(device: &mut Device, kind: Kind) -> Option<(u64, Message<'static>)> {
    let counter = device.next_counter;
    device.next_counter = counter.checked_add(1)?;
    let message = match kind {
        Kind::Trigger => udp_auth::seal_trigger(&device.key, counter).into(),
        Kind::End(session_id) => {
            udp_auth::seal_end_trigger(&device.key, counter, session_id).into()
        }
    };
    Some((counter, message))
}

impl<R: RngCore + CryptoRng> Machine for TriggerServer<R> {
    type Fact = Infallible;
    type Event = TriggerEvent;
    type Io = ();

    fn handle_input(&mut self, now: Instant, input: Input<'_>, _io: &mut ()) {
        match input {
            Input::Datagram { from, local, bytes } => self.handle_udp_at(now, from, local, bytes),
            Input::ConnectionOpened { conn, remote } => {
                self.handle_connection_opened(now, conn, remote)
            }
            Input::ConnectionMessage { conn, bytes } => self.handle_stream(now, conn, bytes),
            Input::ConnectionClosed(conn) => self.handle_connection_closed(now, conn),
            // The trigger server opens no stream of its own.
            Input::UpstreamMessage(_) | Input::UpstreamClosed => {
                self.clock.observe(now);
                self.stats.stream_ignored += 1;
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        TriggerServer::handle_timeout(self, now);
    }

    fn poll_output(
        &mut self,
        _now: Instant,
        buf: &mut [u8],
        _io: &mut (),
    ) -> Output<Infallible, TriggerEvent> {
        TriggerServer::poll_output(self, buf)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        TriggerServer::poll_timeout(self)
    }
}
