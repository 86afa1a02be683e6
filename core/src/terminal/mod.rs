//! The terminal: one state machine that plays both of the seed's terminal
//! roles, the connected terminal 1 (registers, keeps its NAT mapping alive,
//! answers triggers with its permission list or its verdict, S701-S707,
//! S1201-S1204) and the connecting terminal 3 (asks for a peer by name,
//! S201-S207), plus the terminal side of the third embodiment (extension at
//! a threshold of the permitted duration, forced end, end notification,
//! S1502-S1508).
//!
//! It is a component: the terminal that drivers run is the
//! [`crate::peer::endpoint::Endpoint`], which owns one of these beside its
//! peer sessions and is the terminal's [`crate::machine::Machine`]. The
//! endpoint feeds it datagrams from the terminal's one UDP socket
//! ([`Terminal::handle_udp`]), whole messages from its stream to the session
//! server ([`Terminal::handle_upstream`]) and timeouts, and takes its
//! messages ([`Terminal::poll_transmit`]) and events
//! ([`Terminal::poll_event`]) into its own outputs. It needs no allocator: every
//! table is a fixed-capacity [`heapless`] collection bounded by a named
//! constant ([`MAX_SESSIONS`], [`MAX_PENDING_REQUESTS`], ...), and an
//! overflow is a typed error or a counted drop ([`TerminalStats`]).
//!
//! # Life of a terminal
//! 1. [`Terminal::start`]: a Noise IK handshake to the session server whose
//!    first message carries `Register{mode, identity, name}` (S702). No
//!    reply within the handshake timeout, or a lost stream: try again after
//!    1 s, 2 s, 4 s, ... up to 60 s. `RegisterAck`: the terminal keeps the
//!    device ID, the UDP key and the channel, sends a sealed `Poll` at once
//!    (which confirms the channel to the server) and starts keepalives when
//!    the server's sealed `KeyReady` says the trigger server holds the key
//!    (or after [`KEY_READY_TIMEOUT`] without it). A sealed
//!    `RegistrationTicket` is kept in memory and presented on the next
//!    handshakes, which then skip the server's per-source limit.
//!    A refusal is reported and the terminal stops.
//! 2. Keepalives (S701) go to the trigger server every interval (20 s until
//!    the server's ack says otherwise, clamped to 5..=300 s); an ack is due
//!    within 2 s, else another keepalive (new counter) goes; after
//!    [`MISSED_ACKS`] in a row the terminal registers again. A sealed
//!    `TriggerAssignment` (a sharded server) names the trigger server of
//!    this registration: keepalives go there instead of the configured one
//!    ([`Terminal::trigger_server`]), at once if they had started.
//! 3. A `Trigger` (S703) from the trigger server's address, with a fresh
//!    counter and a valid tag, is acknowledged and answered by a sealed
//!    `Poll` to the session server, which then asks for the permission list
//!    (S704) or about one requester (S1202-S1204).
//! 4. [`Terminal::connect`] (S204) sends a `ConnectionRequest`; the answer
//!    is an `AddressNotification` (a session) or one
//!    [`TerminalEvent::ConnectFailed`] whatever went wrong.
//! 5. A session (S705/S706) runs until the app finishes it, its deadline
//!    (S707), or an `EndTrigger` (S1502); at the threshold of its duration an
//!    active transfer asks for more time (S1504-S1507). Every end sends an
//!    `EndNotification` (S1508).
//!
//! # Re-registration
//! Registrations are not durable at the session server. The terminal
//! registers again (a fresh handshake, a new device ID) when keepalive acks
//! stop, when the channel is due for a re-key, and when the session server
//! may have forgotten the channel: the stream to it was lost (a restarting
//! server closes every stream; a terminal cannot tell that from a network
//! fault, and one handshake per lost stream is cheap, as streams are long
//! lived), or a connection request got no answer at all within
//! [`CONNECT_TIMEOUT`] (the server answers every request within its 5 s
//! decision delay; silence means it does not know the channel).
//! Running sessions are not touched: they live on the peer path. Pending
//! requests fail ([`TerminalEvent::ConnectFailed`]) and pending inquiries are
//! dropped, since their answers would come on the old channel.

mod types;

#[cfg(test)]
mod tests;

pub use types::*;

use core::net::SocketAddr;
use core::time::Duration;

use heapless::{Deque, Vec};
use rand_core::{CryptoRng, RngCore};

use crate::crypto::ticket::binder_of;
use crate::crypto::{udp_auth, Initiator, SecureChannel, StaticKeypair, REKEY_AFTER_TIME};
use crate::machine::{Destination, OwnedTransmit, Payload};
use crate::time::{Clock, Instant};
use crate::wire::{
    AddressNotification, ConnectionRequest, DeviceId, EndNotification, EndReason, EndTrigger,
    EnrolRegister, ErrorCode, ErrorReply, ExtensionRequest, HandshakeInit, HandshakeReply,
    KeepaliveAck, Message, Name, NameSeq, PermissionAnswer, PermissionInquiry, PermissionList,
    Poll, PublicKey, Register, RegistrationTicket, RetryLater, Role, Sealed, SessionId,
    TicketedHandshakeInit, Trigger, UdpKey, Verdict, ENROL_CODE_LEN, MAX_HANDSHAKE_LEN,
    MAX_MESSAGE_LEN, MAX_PLAIN_MESSAGE_LEN, MAX_RETRY_AFTER_SECS,
};

/// Rounds of timer processing in one `handle_timeout`; each round can only
/// remove timers or move them past `now`, so two suffice; the bound is a
/// safety net against a loop.
const TIMER_ROUNDS: usize = 16;

/// Bytes of the largest `Register` message: header, mode, key, a 64-byte
/// name, an IPv6 local address (and an `EnrolRegister`'s code).
const REGISTER_BUF_LEN: usize = 6 + 1 + 32 + 1 + 64 + 19 + ENROL_CODE_LEN;

/// What a registered terminal holds: the fruit of one `RegisterAck`.
struct Registered {
    device_id: DeviceId,
    udp_key: UdpKey,
    channel: SecureChannel,
    /// Triggers and end triggers share one counter sequence.
    triggers: udp_auth::ReplayGuard,
    keepalive: Keepalives,
    /// The address the trigger server last reported.
    observed: Option<SocketAddr>,
    /// The trigger server this registration keeps alive with: the
    /// configured one until a `TriggerAssignment` names its shard.
    trigger: SocketAddr,
}

/// The keepalive schedule of one registration.
struct Keepalives {
    /// Counter of the next keepalive; 1 for the first of a registration.
    next_counter: u64,
    /// The counter of the last keepalive sent, while its ack is awaited.
    awaiting: Option<u64>,
    /// When the last keepalive went.
    last_sent_at: Instant,
    /// When the next regular keepalive is due.
    next_send: Instant,
    /// When the awaited ack is overdue.
    ack_deadline: Option<Instant>,
    /// Keepalives in a row that got no ack.
    missed: u8,
    /// The interval in force.
    interval: Duration,
}

/// Where the terminal stands with the session server.
// Without an allocator there is no Box to shrink the registered variant; the
// terminal holds exactly one Phase, so the padding costs one variant's size.
#[allow(clippy::large_enum_variant)]
enum Phase {
    /// Not started.
    Idle,
    /// A handshake is in flight; `attempt` counts handshakes in this series.
    Handshaking { initiator: Initiator, attempt: u32 },
    /// Waiting before the next handshake.
    Backoff { retry_at: Instant, attempt: u32 },
    /// Registered: a control channel and keepalives.
    Registered(Registered),
    /// The server refused the registration; stopped until `start`.
    Refused,
}

/// A `connect` awaiting its answer.
struct PendingConnect {
    request_id: u32,
    /// `records_opened` when the request went.
    records_at_send: u64,
    deadline: Instant,
}

/// A permission inquiry awaiting the app's answer.
struct PendingInquiry {
    query_id: u32,
    requester: NameBuf,
    deadline: Instant,
}

/// A running session, as the terminal's timers see it.
struct Session {
    id: SessionId,
    start: Instant,
    /// The duration of the notification, the default extension ask.
    original_secs: u32,
    deadline: Instant,
    /// When the threshold check is due; `None` once done until the next grant.
    extension_at: Option<Instant>,
    active: bool,
    bytes_sent: u64,
    bytes_received: u64,
}

/// The terminal state machine (seed terminals 1 and 3 in one type).
pub struct Terminal<R> {
    config: TerminalConfig,
    keypair: StaticKeypair,
    rng: R,
    clock: Clock,
    phase: Phase,
    /// Records from the session server opened so far (a registration counts
    /// as one): tells whether the server said anything since a request.
    records_opened: u64,
    permissions: Vec<NameBuf, MAX_PERMISSIONS>,
    connects: Vec<PendingConnect, MAX_PENDING_REQUESTS>,
    inquiries: Vec<PendingInquiry, MAX_PENDING_INQUIRIES>,
    sessions: Vec<Session, MAX_SESSIONS>,
    transmits: Deque<OwnedTransmit, MAX_TERMINAL_QUEUED_TRANSMITS>,
    events: Deque<TerminalEvent, MAX_TERMINAL_QUEUED_EVENTS>,
    stats: TerminalStats,
    /// The session server's last registration ticket, presented on the next
    /// handshakes (kept in memory only: a restart starts without one).
    ticket: Option<RegistrationTicket>,
    /// The end notifications of the last sessions that ended, and when: sent
    /// again on the next registration's channel, since one sent on a channel
    /// that was lost (or while there was none) never arrived. The server
    /// takes a second copy as a no-op.
    recent_ends: Vec<(Instant, EndNotification), MAX_RECENT_ENDS>,
    /// Which session server of the list the next handshake goes to (0: the
    /// first, [`TerminalConfig::session_server_key`]).
    upstream: usize,
}

/// Most end notifications kept to send again after a re-registration.
pub const MAX_RECENT_ENDS: usize = 8;
/// How long an end notification is sent again after a re-registration (the
/// session server joins a late one to its record for 10 minutes).
pub const END_RESEND_WINDOW: Duration = Duration::from_secs(600);

impl<R> core::fmt::Debug for Terminal<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Terminal")
            .field("name", &self.config.name())
            .field("registered", &matches!(self.phase, Phase::Registered(_)))
            .field("sessions", &self.sessions.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// `start + d`, where a sum that saturates means "never".
fn after(start: Instant, d: Duration) -> Instant {
    start.saturating_add(d)
}

/// A timer that is set and not "never" ([`Instant::MAX`]).
fn live(t: Option<Instant>) -> Option<Instant> {
    t.filter(|&t| t != Instant::MAX)
}

/// The earlier of two optional times.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (live(a), live(b)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether a timer is due at `now`.
fn due(t: Option<Instant>, now: Instant) -> bool {
    live(t).is_some_and(|t| t <= now)
}

/// The wait after failed attempt number `attempt` (1-based): 1 s, 2 s, 4 s, ... 60 s.
fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    REGISTRATION_BACKOFF
        .saturating_mul(1u32 << doublings)
        .min(MAX_REGISTRATION_BACKOFF)
}

/// A keepalive interval the terminal accepts: clamped to 5..=300 s.
fn clamp_interval(d: Duration) -> Duration {
    d.clamp(MIN_KEEPALIVE_INTERVAL, MAX_KEEPALIVE_INTERVAL)
}

/// When the extension check of a session of `duration_secs` falls.
fn threshold_point(start: Instant, duration_secs: u32, percent: u8) -> Instant {
    let percent = u128::from(percent.clamp(1, 100));
    let micros = u128::from(duration_secs) * 1_000_000 * percent / 100;
    after(
        start,
        Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX)),
    )
}

/// Milliseconds in `d`, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Keepalives {
    fn new(interval: Duration, now: Instant) -> Keepalives {
        Keepalives {
            next_counter: 1,
            awaiting: None,
            last_sent_at: now,
            next_send: now,
            ack_deadline: None,
            missed: 0,
            interval: clamp_interval(interval),
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        earliest(Some(self.next_send), self.ack_deadline)
    }
}

impl Session {
    fn set_duration(&mut self, duration_secs: u32, percent: u8) {
        self.deadline = after(self.start, Duration::from_secs(u64::from(duration_secs)));
        self.extension_at = Some(threshold_point(self.start, duration_secs, percent));
    }

    fn next_timer(&self) -> Option<Instant> {
        earliest(Some(self.deadline), self.extension_at)
    }
}

impl<R: RngCore + CryptoRng> Terminal<R> {
    /// A terminal with this configuration and identity; it does nothing
    /// until [`Self::start`]. The permission list starts empty.
    pub fn new(config: TerminalConfig, keypair: StaticKeypair, rng: R) -> Terminal<R> {
        Terminal {
            config,
            keypair,
            rng,
            clock: Clock::default(),
            phase: Phase::Idle,
            records_opened: 0,
            permissions: Vec::new(),
            connects: Vec::new(),
            inquiries: Vec::new(),
            sessions: Vec::new(),
            transmits: Deque::new(),
            events: Deque::new(),
            stats: TerminalStats::default(),
            ticket: None,
            recent_ends: Vec::new(),
            upstream: 0,
        }
    }

    /// Starts registering with the session server (S702). Does nothing if
    /// the terminal is already registering or registered; after a refusal it
    /// tries again.
    pub fn start(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        if matches!(self.phase, Phase::Idle | Phase::Refused) {
            self.begin_handshake(now, 1);
        }
    }

    /// Which session server of its list the terminal registers with now,
    /// or tries next (0: the first): the driver's upstream stream goes to
    /// the address of this index.
    pub fn upstream_choice(&self) -> usize {
        self.upstream
    }

    /// The trigger server the terminal keeps alive with and takes triggers
    /// from: the one its registration's `TriggerAssignment` named (a
    /// sharded server), else the configured one.
    pub fn trigger_server(&self) -> SocketAddr {
        match &self.phase {
            Phase::Registered(reg) => reg.trigger,
            _ => self.config.trigger_server,
        }
    }

    /// How many session servers the terminal knows.
    fn server_count(&self) -> usize {
        1 + self.config.failover_server_keys.len()
    }

    /// The static key of the session server the next handshake goes to.
    fn server_key(&self) -> PublicKey {
        match self.upstream.checked_sub(1) {
            Some(i) => self
                .config
                .failover_server_keys
                .get(i)
                .copied()
                .unwrap_or(self.config.session_server_key),
            None => self.config.session_server_key,
        }
    }

    /// The configuration the terminal runs with.
    pub fn config(&self) -> &TerminalConfig {
        &self.config
    }

    /// This terminal's identity: its static public key.
    pub fn public_key(&self) -> PublicKey {
        self.keypair.public_key()
    }

    /// Whether the terminal holds a control channel and a device ID.
    pub fn is_registered(&self) -> bool {
        matches!(self.phase, Phase::Registered(_))
    }

    /// The device ID of the current registration.
    pub fn device_id(&self) -> Option<DeviceId> {
        match &self.phase {
            Phase::Registered(reg) => Some(reg.device_id),
            _ => None,
        }
    }

    /// The current registration's device ID and UDP key, for `tryst
    /// netcheck` in the same process (its probes are tagged under this key).
    pub fn udp_credentials(&self) -> Option<(DeviceId, UdpKey)> {
        match &self.phase {
            Phase::Registered(reg) => Some((reg.device_id, reg.udp_key)),
            _ => None,
        }
    }

    /// The public address the trigger server last reported for this terminal.
    pub fn observed_addr(&self) -> Option<SocketAddr> {
        match &self.phase {
            Phase::Registered(reg) => reg.observed,
            _ => None,
        }
    }

    /// The keepalive interval in force, once registered.
    pub fn keepalive_interval(&self) -> Option<Duration> {
        match &self.phase {
            Phase::Registered(reg) => Some(reg.keepalive.interval),
            _ => None,
        }
    }

    /// The deadline of a running session (start plus permitted duration).
    pub fn session_deadline(&self, session_id: &SessionId) -> Option<Instant> {
        self.session(session_id).map(|s| s.deadline)
    }

    /// How many sessions run.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Counters of what was ignored or dropped.
    pub fn stats(&self) -> &TerminalStats {
        &self.stats
    }

    // ----- permission list -------------------------------------------------

    /// The permission list L, in the order names were allowed.
    pub fn permissions(&self) -> impl Iterator<Item = &str> + '_ {
        self.permissions.iter().map(|n| n.as_str())
    }

    /// Whether `name` is on the permission list.
    ///
    /// Names compare byte for byte here (the terminal has no allocator):
    /// the session server sends every requester name in its canonical
    /// form (`names::canonical`, NFKC and case folding), so a list must
    /// hold canonical names; the std layer stores them so.
    pub fn is_allowed(&self, name: &str) -> bool {
        self.permissions.iter().any(|n| n.as_str() == name)
    }

    /// Adds `name` to the permission list (no effect if it is there). Read
    /// when a request comes, so it applies to the next one.
    pub fn allow(&mut self, name: &str) -> Result<(), PermissionError> {
        let name = name_buf(name).map_err(PermissionError::InvalidName)?;
        if self.is_allowed(&name) {
            return Ok(());
        }
        self.permissions
            .push(name)
            .map_err(|_| PermissionError::ListFull)
    }

    /// Removes `name` from the permission list; whether it was there.
    pub fn disallow(&mut self, name: &str) -> bool {
        let before = self.permissions.len();
        self.permissions.retain(|n| n.as_str() != name);
        self.permissions.len() != before
    }

    /// Replaces the whole permission list (duplicates kept once). On error
    /// the list is unchanged.
    pub fn set_permissions(&mut self, names: &[&str]) -> Result<(), PermissionError> {
        let mut list: Vec<NameBuf, MAX_PERMISSIONS> = Vec::new();
        for name in names {
            let name = name_buf(name).map_err(PermissionError::InvalidName)?;
            if !list.contains(&name) {
                list.push(name).map_err(|_| PermissionError::ListFull)?;
            }
        }
        self.permissions = list;
        Ok(())
    }

    // ----- app calls ---------------------------------------------------------

    /// Asks the session server for a session with `target` (S203/S204):
    /// sends a `ConnectionRequest` with a fresh request ID and this
    /// terminal's own name, and returns the ID. The answer is a
    /// [`TerminalEvent::SessionReady`] or [`TerminalEvent::ConnectFailed`]
    /// with that ID. `duration_secs` 0 asks for the server's default.
    pub fn connect(
        &mut self,
        now: Instant,
        target: &str,
        duration_secs: u32,
    ) -> Result<u32, ConnectError> {
        let now = self.clock.observe(now);
        let target = Name::new(target).map_err(ConnectError::InvalidName)?;
        if !self.is_registered() {
            return Err(ConnectError::NotRegistered);
        }
        if self.connects.is_full() {
            return Err(ConnectError::TooManyPendingRequests);
        }
        if self.sessions.is_full() {
            return Err(ConnectError::TooManySessions);
        }
        let request_id = self.fresh_request_id();
        let own_name = self.config.name.clone();
        let requester = Name::new(&own_name).map_err(ConnectError::InvalidName)?;
        let request = ConnectionRequest {
            request_id,
            duration_secs,
            requester,
            target,
        };
        if !self.send_sealed(&request.into()) {
            return Err(ConnectError::NotRegistered);
        }
        let pending = PendingConnect {
            request_id,
            records_at_send: self.records_opened,
            deadline: after(now, self.config.connect_timeout),
        };
        // Checked for room above.
        let _ = self.connects.push(pending);
        Ok(request_id)
    }

    /// The app's verdict on a [`TerminalEvent::PermissionAsked`] inquiry
    /// (S1203/S1204): sends the `PermissionAnswer`.
    pub fn answer(
        &mut self,
        now: Instant,
        query_id: u32,
        verdict: Verdict,
    ) -> Result<(), UnknownQuery> {
        let _ = self.clock.observe(now);
        let index = self
            .inquiries
            .iter()
            .position(|q| q.query_id == query_id)
            .ok_or(UnknownQuery)?;
        let inquiry = self.inquiries.swap_remove(index);
        self.send_answer(query_id, inquiry.requester, verdict);
        Ok(())
    }

    /// What the peer channel reports about a session: total payload bytes
    /// sent and received so far, and whether the transfer is still running
    /// (which decides the extension request at the threshold, S1504).
    pub fn transfer_progress(
        &mut self,
        session_id: &SessionId,
        bytes_sent: u64,
        bytes_received: u64,
        active: bool,
    ) -> Result<(), UnknownSession> {
        let session = self
            .sessions
            .iter_mut()
            .find(|s| s.id == *session_id)
            .ok_or(UnknownSession)?;
        session.bytes_sent = bytes_sent;
        session.bytes_received = bytes_received;
        session.active = active;
        Ok(())
    }

    /// Ends a session for `reason` (transfer done, cancelled, peer lost...):
    /// sends the `EndNotification` with the last reported byte counts and
    /// the time it ran (S1508), and emits [`TerminalEvent::SessionEnded`].
    pub fn finish_session(
        &mut self,
        now: Instant,
        session_id: &SessionId,
        reason: EndReason,
    ) -> Result<(), UnknownSession> {
        let now = self.clock.observe(now);
        let index = self
            .sessions
            .iter()
            .position(|s| s.id == *session_id)
            .ok_or(UnknownSession)?;
        self.end_session(now, index, reason);
        Ok(())
    }

    // ----- network input -----------------------------------------------------

    /// A datagram arrived on the terminal's UDP socket from `from`. Only the
    /// trigger server's address is read (keepalive acks, triggers, end
    /// triggers); anything else is left to the peer channel and counted.
    pub fn handle_udp(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let now = self.clock.observe(now);
        if from != self.trigger_server() {
            self.stats.peer_datagrams = self.stats.peer_datagrams.saturating_add(1);
            let len = u64::try_from(datagram.len()).unwrap_or(u64::MAX);
            self.stats.peer_bytes = self.stats.peer_bytes.saturating_add(len);
            return;
        }
        let handled = match Message::decode(datagram) {
            Ok(Message::KeepaliveAck(ack)) => self.on_keepalive_ack(&ack),
            Ok(Message::Trigger(trigger)) => self.on_trigger(&trigger),
            Ok(Message::EndTrigger(end)) => self.on_end_trigger(now, &end),
            _ => false,
        };
        if !handled {
            self.stats.ignored_datagrams = self.stats.ignored_datagrams.saturating_add(1);
        }
    }

    /// One whole message arrived on the stream to the session server.
    pub fn handle_upstream(&mut self, now: Instant, message: &[u8]) {
        let now = self.clock.observe(now);
        let handled = match Message::decode(message) {
            Ok(Message::HandshakeReply(reply)) => self.on_handshake_reply(now, &reply),
            Ok(Message::RetryLater(retry)) => self.on_retry_later(now, retry),
            Ok(Message::Sealed(record)) => self.on_sealed(now, &record),
            _ => false,
        };
        if !handled {
            self.ignore_upstream();
        }
    }

    /// The stream to the session server was lost. A handshake in flight has
    /// failed (the next one follows the backoff); a registered terminal
    /// registers again, since the server may have restarted and forgotten
    /// its channel (answers to pending requests are lost with the stream
    /// anyway, so they fail now).
    pub fn handle_upstream_closed(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        match &self.phase {
            Phase::Handshaking { attempt, .. } => {
                let attempt = *attempt;
                self.handshake_failed(now, attempt, HandshakeFailure::StreamClosed);
            }
            Phase::Registered(_) => self.reregister(now, ReregisterCause::UpstreamLost),
            Phase::Idle | Phase::Backoff { .. } | Phase::Refused => {}
        }
    }

    /// Runs every timer due at `now`. Afterwards [`Self::poll_timeout`] is
    /// `None` or later than `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        for _ in 0..TIMER_ROUNDS {
            if self.next_timer().is_none_or(|t| t > now) {
                break;
            }
            self.run_phase_timers(now);
            self.run_request_timers(now);
            self.run_session_timers(now);
        }
    }

    // ----- output ------------------------------------------------------------

    /// The next message to send, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<OwnedTransmit> {
        self.transmits.pop_front()
    }

    /// The next event for the app, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<TerminalEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] should next run; `None` if no timer is set.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer()
    }

    // ----- internals: queues -------------------------------------------------

    /// Queues a transmit. When the queue is full a datagram gives way (the
    /// oldest queued, or else this one): a lost keepalive or trigger ack is
    /// sent again by its schedule or its sender, while a message to the
    /// session server has no resend. A driver that feeds a whole batch of
    /// datagrams before draining (a frozen terminal wakes to every resend
    /// of an end trigger) thus keeps the end notification they caused.
    fn push_transmit(&mut self, transmit: OwnedTransmit) {
        if self.transmits.is_full() {
            self.stats.transmits_dropped = self.stats.transmits_dropped.saturating_add(1);
            let datagram = |t: &OwnedTransmit| matches!(t.destination, Destination::Udp(_));
            match self.transmits.iter().position(datagram) {
                Some(index) => {
                    // Rotate the queue once, leaving that one out.
                    for i in 0..self.transmits.len() {
                        if let Some(t) = self.transmits.pop_front() {
                            if i != index {
                                let _ = self.transmits.push_back(t);
                            }
                        }
                    }
                }
                None if datagram(&transmit) => return,
                None => {
                    let _ = self.transmits.pop_front();
                }
            }
        }
        // Room was made above.
        let _ = self.transmits.push_back(transmit);
    }

    fn emit(&mut self, event: TerminalEvent) {
        if self.events.is_full() {
            let _ = self.events.pop_front();
            self.stats.events_dropped = self.stats.events_dropped.saturating_add(1);
        }
        // Room was made above.
        let _ = self.events.push_back(event);
    }

    fn ignore_upstream(&mut self) {
        self.stats.ignored_upstream = self.stats.ignored_upstream.saturating_add(1);
    }

    fn count_unsent(&mut self) {
        self.stats.unsent_upstream = self.stats.unsent_upstream.saturating_add(1);
    }

    /// Sends a datagram to the trigger server.
    fn send_udp(&mut self, message: &Message<'_>) {
        let destination = Destination::Udp(self.trigger_server());
        if let Some(transmit) = OwnedTransmit::new(destination, message) {
            self.push_transmit(transmit);
        }
    }

    /// Seals `message` on the control channel and queues it for the
    /// session server; `false` (counted) if there is no channel.
    fn send_sealed(&mut self, message: &Message<'_>) -> bool {
        let Phase::Registered(reg) = &mut self.phase else {
            self.count_unsent();
            return false;
        };
        let mut plain = [0u8; MAX_PLAIN_MESSAGE_LEN];
        let Ok(len) = message.encode(&mut plain) else {
            self.count_unsent();
            return false;
        };
        let mut payload = Payload::new();
        if payload.resize_default(MAX_MESSAGE_LEN).is_err() {
            self.count_unsent();
            return false;
        }
        let Some(plain) = plain.get(..len) else {
            self.count_unsent();
            return false;
        };
        match reg.channel.seal(plain, &mut payload) {
            Ok(n) => payload.truncate(n),
            Err(_) => {
                self.count_unsent();
                return false;
            }
        }
        self.push_transmit(OwnedTransmit {
            destination: Destination::Upstream,
            local: None,
            payload,
        });
        true
    }

    // ----- internals: registration -------------------------------------------

    /// Starts handshake number `attempt` of a series.
    fn begin_handshake(&mut self, now: Instant, attempt: u32) {
        let mut register = [0u8; REGISTER_BUF_LEN];
        let mut noise = [0u8; MAX_HANDSHAKE_LEN];
        let own_name = self.config.name.clone();
        let started = Name::new(&own_name).ok().and_then(|name| {
            let fields = Register {
                mode: self.config.mode,
                identity: self.keypair.public_key(),
                name,
                local: self.config.local_udp,
            };
            let message = match self.config.enrol_code {
                Some(code) => Message::EnrolRegister(EnrolRegister {
                    register: fields,
                    code,
                }),
                None => Message::Register(fields),
            };
            let len = message.encode(&mut register).ok()?;
            let payload = register.get(..len)?;
            let server_key = self.server_key();
            let (initiator, n) = Initiator::start(
                &mut self.rng,
                now,
                &self.keypair,
                &server_key,
                payload,
                &mut noise,
            )
            .ok()?;
            let noise = noise.get(..n)?;
            let transmit = match &self.ticket {
                Some(t) => OwnedTransmit::new(
                    Destination::Upstream,
                    &Message::TicketedHandshakeInit(TicketedHandshakeInit {
                        ticket: t.ticket,
                        binder: binder_of(&t.secret, noise),
                        noise,
                    }),
                )?,
                None => OwnedTransmit::new(
                    Destination::Upstream,
                    &Message::HandshakeInit(HandshakeInit { noise }),
                )?,
            };
            Some((initiator, transmit))
        });
        self.stats.handshakes_started = self.stats.handshakes_started.saturating_add(1);
        match started {
            Some((initiator, transmit)) => {
                self.push_transmit(transmit);
                self.phase = Phase::Handshaking { initiator, attempt };
            }
            // Only a weak session server key gets here: retry slowly.
            None => self.handshake_failed(now, attempt, HandshakeFailure::BadServerKey),
        }
    }

    /// Handshake `attempt` failed: wait, then try again.
    fn handshake_failed(&mut self, now: Instant, attempt: u32, cause: HandshakeFailure) {
        self.handshake_failed_for(now, attempt, cause, backoff(attempt));
    }

    /// A `RetryLater` in clear while a handshake is in flight: the attempt
    /// failed, and the next waits what the server asked (bounded; never
    /// less than the backoff). Only the waiting is taken from it: the
    /// in-flight handshake would be answered by nothing else anyway.
    fn on_retry_later(&mut self, now: Instant, retry: RetryLater) -> bool {
        let Phase::Handshaking { attempt, .. } = &self.phase else {
            return false;
        };
        let attempt = *attempt;
        let asked =
            Duration::from_secs(u64::from(retry.retry_after_secs.min(MAX_RETRY_AFTER_SECS)));
        let wait = asked.max(backoff(attempt));
        self.handshake_failed_for(now, attempt, HandshakeFailure::RateLimited, wait);
        true
    }

    fn handshake_failed_for(
        &mut self,
        now: Instant,
        attempt: u32,
        cause: HandshakeFailure,
        retry_in: Duration,
    ) {
        // Several servers: the next one, soon while the list lasts (the
        // backoff once it starts again at the first). A ticket is only
        // good for the server that issued it.
        let mut retry_in = retry_in;
        if self.server_count() > 1 {
            self.upstream = (self.upstream + 1) % self.server_count();
            self.ticket = None;
            if self.upstream != 0 {
                retry_in = FAILOVER_DELAY;
            }
        }
        self.phase = Phase::Backoff {
            retry_at: after(now, retry_in),
            attempt,
        };
        self.emit(TerminalEvent::HandshakeFailed {
            attempt,
            cause,
            retry_in,
        });
    }

    fn on_handshake_reply(&mut self, now: Instant, reply: &HandshakeReply<'_>) -> bool {
        let Phase::Handshaking { initiator, attempt } = &mut self.phase else {
            return false;
        };
        let attempt = *attempt;
        let mut payload = [0u8; MAX_PLAIN_MESSAGE_LEN];
        // A reply that fails leaves the initiator waiting for the real one.
        let Ok((channel, len)) = initiator.finish(now, reply, &mut payload) else {
            return false;
        };
        let answer = payload.get(..len).map(Message::decode);
        match answer {
            Some(Ok(Message::RegisterAck(ack))) => {
                self.registered(now, ack.device_id, ack.udp_key, channel);
            }
            Some(Ok(Message::Error(ErrorReply {
                code: ErrorCode::RegistrationRefused,
                ..
            }))) => {
                self.phase = Phase::Refused;
                self.emit(TerminalEvent::RegistrationRefused);
            }
            // Busy, or an answer that makes no sense: try again later.
            _ => self.handshake_failed(now, attempt, HandshakeFailure::Rejected),
        }
        true
    }

    fn registered(
        &mut self,
        now: Instant,
        device_id: DeviceId,
        udp_key: UdpKey,
        channel: SecureChannel,
    ) {
        self.phase = Phase::Registered(Registered {
            device_id,
            udp_key,
            channel,
            triggers: udp_auth::ReplayGuard::new(),
            keepalive: Keepalives::new(self.config.keepalive_interval, now),
            observed: None,
            trigger: self.config.trigger_server,
        });
        self.records_opened = self.records_opened.wrapping_add(1);
        self.emit(TerminalEvent::Registered { device_id });
        // Confirms the channel to the server, which only then installs the key.
        let _ = self.send_sealed(&Message::Poll(Poll));
        // Ends that may have been lost with the old channel, or sent while
        // there was none: again on this one (the server ignores a copy).
        let recent = core::mem::take(&mut self.recent_ends);
        for (at, note) in recent {
            if now.saturating_duration_since(at) <= END_RESEND_WINDOW {
                let _ = self.send_sealed(&note.into());
            }
        }
        // The first keepalive waits for `KeyReady` (the trigger server holds
        // the key: it is not dropped, so a copy cannot be replayed later),
        // or goes at this deadline anyway.
        if let Phase::Registered(reg) = &mut self.phase {
            reg.keepalive.next_send = after(now, KEY_READY_TIMEOUT);
        }
    }

    /// The session server says the trigger server holds the key: the first
    /// keepalive goes now (once; later ones follow the schedule).
    fn on_key_ready(&mut self, now: Instant) -> bool {
        let Phase::Registered(reg) = &self.phase else {
            return false;
        };
        if reg.keepalive.next_counter == 1 {
            self.send_keepalive(now);
        }
        true
    }

    /// The session server names this registration's trigger server (its
    /// shard). If keepalives had started (a move after the old shard died),
    /// one goes to the new shard at once, so it learns the address now and
    /// not an interval later; the missed count starts over with it.
    fn on_trigger_assignment(&mut self, now: Instant, trigger: SocketAddr) -> bool {
        let Phase::Registered(reg) = &mut self.phase else {
            return false;
        };
        if reg.trigger == trigger {
            return true;
        }
        reg.trigger = trigger;
        // Whatever the old shard would have said is no longer awaited.
        reg.observed = None;
        let ka = &mut reg.keepalive;
        ka.missed = 0;
        if ka.next_counter > 1 {
            self.send_keepalive(now);
        }
        true
    }

    /// Drops the registration and starts a fresh handshake series.
    fn reregister(&mut self, now: Instant, cause: ReregisterCause) {
        self.emit(TerminalEvent::Reregistering { cause });
        // Their answers would come on the old channel, which is gone.
        while let Some(pending) = self.connects.pop() {
            self.emit(TerminalEvent::ConnectFailed {
                request_id: pending.request_id,
            });
        }
        self.inquiries.clear();
        self.begin_handshake(now, 1);
    }

    // ----- internals: keepalives and triggers ----------------------------------

    fn send_keepalive(&mut self, now: Instant) {
        let Phase::Registered(reg) = &mut self.phase else {
            return;
        };
        let ka = &mut reg.keepalive;
        let counter = ka.next_counter;
        ka.next_counter = counter.saturating_add(1);
        ka.awaiting = Some(counter);
        ka.last_sent_at = now;
        ka.next_send = after(now, ka.interval);
        ka.ack_deadline = Some(after(now, KEEPALIVE_ACK_TIMEOUT));
        let keepalive = udp_auth::seal_keepalive(&reg.udp_key, reg.device_id, counter);
        self.stats.keepalives_sent = self.stats.keepalives_sent.saturating_add(1);
        self.send_udp(&keepalive.into());
    }

    fn on_keepalive_ack(&mut self, ack: &KeepaliveAck) -> bool {
        let Phase::Registered(reg) = &mut self.phase else {
            return false;
        };
        // Only the ack of the last keepalive sent, once, with a valid tag.
        if reg.keepalive.awaiting != Some(ack.counter)
            || udp_auth::verify(&reg.udp_key, ack).is_err()
        {
            return false;
        }
        let ka = &mut reg.keepalive;
        ka.awaiting = None;
        ka.ack_deadline = None;
        ka.missed = 0;
        ka.interval = clamp_interval(Duration::from_secs(u64::from(ack.interval_secs)));
        ka.next_send = after(ka.last_sent_at, ka.interval);
        let changed = reg.observed != Some(ack.observed);
        reg.observed = Some(ack.observed);
        if changed {
            self.emit(TerminalEvent::Online {
                observed: ack.observed,
            });
        }
        true
    }

    /// Checks a trigger or end trigger and acknowledges it; whether it was new and genuine.
    fn accept_trigger<M: udp_auth::UdpMessage>(&mut self, message: &M) -> bool {
        let Phase::Registered(reg) = &mut self.phase else {
            return false;
        };
        if reg.triggers.accept(&reg.udp_key, message).is_err() {
            return false;
        }
        let ack = udp_auth::seal_trigger_ack(&reg.udp_key, reg.device_id, message.counter());
        self.send_udp(&ack.into());
        true
    }

    fn on_trigger(&mut self, trigger: &Trigger) -> bool {
        if !self.accept_trigger(trigger) {
            return false;
        }
        // S703: "you called; what do you want?"
        let _ = self.send_sealed(&Message::Poll(Poll));
        true
    }

    fn on_end_trigger(&mut self, now: Instant, end: &EndTrigger) -> bool {
        if !self.accept_trigger(end) {
            return false;
        }
        // S1502: an unknown session (already ended) still gets its ack.
        if let Some(index) = self.sessions.iter().position(|s| s.id == end.session_id) {
            self.end_session(now, index, EndReason::Forced);
        }
        true
    }

    // ----- internals: the session server's messages ----------------------------

    fn on_sealed(&mut self, now: Instant, record: &Sealed<'_>) -> bool {
        let Phase::Registered(reg) = &mut self.phase else {
            return false;
        };
        let mut plain = [0u8; MAX_PLAIN_MESSAGE_LEN];
        let Ok(len) = reg.channel.open(record, &mut plain) else {
            return false;
        };
        self.records_opened = self.records_opened.wrapping_add(1);
        let Some(Ok(message)) = plain.get(..len).map(Message::decode) else {
            return false;
        };
        match message {
            Message::PermissionListRequest(q) => {
                self.send_permission_list(q.query_id);
                true
            }
            Message::PermissionInquiry(q) => {
                self.on_inquiry(now, &q);
                true
            }
            Message::AddressNotification(n) => self.on_notification(now, &n),
            Message::ExtensionGrant(g) => {
                let percent = self.config.extension_threshold_percent;
                let Some(session) = self.session_mut(&g.session_id) else {
                    return false;
                };
                session.set_duration(g.duration_secs, percent);
                self.emit(TerminalEvent::SessionExtended {
                    session_id: g.session_id,
                    duration_secs: g.duration_secs,
                });
                true
            }
            Message::ExtensionRefusal(r) => {
                if self.session(&r.session_id).is_none() {
                    return false;
                }
                self.emit(TerminalEvent::ExtensionRefused {
                    session_id: r.session_id,
                });
                true
            }
            Message::Error(e) => self.on_error(&e),
            Message::KeyReady(_) => self.on_key_ready(now),
            Message::TriggerAssignment(a) => self.on_trigger_assignment(now, a.trigger),
            Message::RegistrationTicket(t) => {
                self.ticket = Some(t);
                true
            }
            _ => false,
        }
    }

    /// S704: the permission list as it is now.
    fn send_permission_list(&mut self, query_id: u32) {
        let list = self.permissions.clone();
        let mut names: Vec<Name<'_>, MAX_PERMISSIONS> = Vec::new();
        for name in &list {
            if let Ok(name) = Name::new(name) {
                // Same capacity as the list.
                let _ = names.push(name);
            }
        }
        let names = NameSeq::from_slice(&names).unwrap_or(NameSeq::empty());
        let _ = self.send_sealed(&PermissionList { query_id, names }.into());
    }

    /// S1203: judge a requester by the list, or ask the app.
    fn on_inquiry(&mut self, now: Instant, inquiry: &PermissionInquiry<'_>) {
        let requester = own(inquiry.requester);
        match self.config.judge {
            JudgePolicy::List => {
                let verdict = if self.is_allowed(&requester) {
                    Verdict::Permit
                } else {
                    Verdict::Deny
                };
                self.send_answer(inquiry.query_id, requester, verdict);
            }
            JudgePolicy::Ask => {
                if self
                    .inquiries
                    .iter()
                    .any(|q| q.query_id == inquiry.query_id)
                {
                    return;
                }
                let pending = PendingInquiry {
                    query_id: inquiry.query_id,
                    requester: requester.clone(),
                    deadline: after(now, self.config.ask_timeout),
                };
                if self.inquiries.push(pending).is_err() {
                    self.stats.inquiries_overflowed =
                        self.stats.inquiries_overflowed.saturating_add(1);
                    self.send_answer(inquiry.query_id, requester, Verdict::Deny);
                    return;
                }
                self.emit(TerminalEvent::PermissionAsked {
                    query_id: inquiry.query_id,
                    requester,
                });
            }
        }
    }

    /// S1204: the verdict to the session server, and the event.
    fn send_answer(&mut self, query_id: u32, requester: NameBuf, verdict: Verdict) {
        let _ = self.send_sealed(&PermissionAnswer { query_id, verdict }.into());
        self.emit(TerminalEvent::PermissionAnswered {
            query_id,
            requester,
            verdict,
        });
    }

    /// S705/S706 (and S205 for the requester): a session is permitted.
    fn on_notification(&mut self, now: Instant, n: &AddressNotification<'_>) -> bool {
        if self.session(&n.session_id).is_some() {
            return false;
        }
        let request_id = match n.role {
            Role::Connected => 0,
            Role::Connecting => {
                let Some(index) = self
                    .connects
                    .iter()
                    .position(|c| c.request_id == n.request_id)
                else {
                    // The request failed already here: end the session at once.
                    self.stats.late_notifications = self.stats.late_notifications.saturating_add(1);
                    self.send_end_notification(n.session_id, EndReason::Cancelled, 0, 0, 0);
                    return true;
                };
                self.connects.swap_remove(index).request_id
            }
        };
        let mut session = Session {
            id: n.session_id,
            start: now,
            original_secs: n.duration_secs,
            deadline: now,
            extension_at: None,
            active: false,
            bytes_sent: 0,
            bytes_received: 0,
        };
        session.set_duration(n.duration_secs, self.config.extension_threshold_percent);
        if self.sessions.push(session).is_err() {
            self.stats.sessions_refused = self.stats.sessions_refused.saturating_add(1);
            self.send_end_notification(n.session_id, EndReason::Failed, 0, 0, 0);
            if n.role == Role::Connecting {
                self.emit(TerminalEvent::ConnectFailed { request_id });
            }
            return true;
        }
        self.emit(TerminalEvent::SessionReady {
            session_id: n.session_id,
            role: n.role,
            request_id,
            peer_name: own(n.peer_name),
            peer_key: n.peer_key,
            peer_addr: n.peer_addr,
            session_key: n.session_key,
            duration_secs: n.duration_secs,
            relay: n.relay,
        });
        true
    }

    /// S511: the one failure answer to a connection request.
    fn on_error(&mut self, error: &ErrorReply) -> bool {
        let Some(index) = self
            .connects
            .iter()
            .position(|c| c.request_id == error.request_id)
        else {
            return false;
        };
        let pending = self.connects.swap_remove(index);
        self.emit(TerminalEvent::ConnectFailed {
            request_id: pending.request_id,
        });
        true
    }

    // ----- internals: sessions -----------------------------------------------

    fn session(&self, id: &SessionId) -> Option<&Session> {
        self.sessions.iter().find(|s| s.id == *id)
    }

    fn session_mut(&mut self, id: &SessionId) -> Option<&mut Session> {
        self.sessions.iter_mut().find(|s| s.id == *id)
    }

    /// Ends the session at `index` (from a `position` on the table).
    fn end_session(&mut self, now: Instant, index: usize, reason: EndReason) {
        if index >= self.sessions.len() {
            return;
        }
        let session = self.sessions.swap_remove(index);
        let duration_ms = millis(now - session.start);
        let note = EndNotification {
            session_id: session.id,
            reason,
            bytes_sent: session.bytes_sent,
            bytes_received: session.bytes_received,
            duration_ms,
        };
        if self.recent_ends.is_full() {
            self.recent_ends.remove(0);
        }
        let _ = self.recent_ends.push((now, note));
        let _ = self.send_sealed(&note.into());
        self.emit(TerminalEvent::SessionEnded {
            session_id: session.id,
            reason,
            bytes_sent: session.bytes_sent,
            bytes_received: session.bytes_received,
            duration_ms,
        });
    }

    fn send_end_notification(
        &mut self,
        session_id: SessionId,
        reason: EndReason,
        bytes_sent: u64,
        bytes_received: u64,
        duration_ms: u64,
    ) {
        let _ = self.send_sealed(
            &EndNotification {
                session_id,
                reason,
                bytes_sent,
                bytes_received,
                duration_ms,
            }
            .into(),
        );
    }

    // ----- internals: timers -------------------------------------------------

    fn next_timer(&self) -> Option<Instant> {
        let mut next = match &self.phase {
            Phase::Idle | Phase::Refused => None,
            Phase::Handshaking { initiator, .. } => live(Some(initiator.deadline())),
            Phase::Backoff { retry_at, .. } => live(Some(*retry_at)),
            Phase::Registered(reg) => earliest(
                reg.keepalive.next_timer(),
                Some(after(reg.channel.established(), REKEY_AFTER_TIME)),
            ),
        };
        for c in &self.connects {
            next = earliest(next, Some(c.deadline));
        }
        for q in &self.inquiries {
            next = earliest(next, Some(q.deadline));
        }
        for s in &self.sessions {
            next = earliest(next, s.next_timer());
        }
        next
    }

    fn run_phase_timers(&mut self, now: Instant) {
        match &self.phase {
            Phase::Idle | Phase::Refused => {}
            Phase::Handshaking { initiator, attempt } => {
                if initiator.is_expired(now) {
                    let attempt = *attempt;
                    self.handshake_failed(now, attempt, HandshakeFailure::NoReply);
                }
            }
            Phase::Backoff { retry_at, attempt } => {
                if due(Some(*retry_at), now) {
                    let attempt = attempt.saturating_add(1);
                    self.begin_handshake(now, attempt);
                }
            }
            Phase::Registered(reg) => {
                if reg.channel.needs_rekey(now) {
                    self.reregister(now, ReregisterCause::Rekey);
                } else if due(reg.keepalive.ack_deadline, now) {
                    self.keepalive_missed(now);
                } else if due(Some(reg.keepalive.next_send), now) {
                    self.send_keepalive(now);
                }
            }
        }
    }

    /// The awaited keepalive ack is overdue: send another, or register again.
    fn keepalive_missed(&mut self, now: Instant) {
        let Phase::Registered(reg) = &mut self.phase else {
            return;
        };
        let ka = &mut reg.keepalive;
        ka.awaiting = None;
        ka.ack_deadline = None;
        ka.missed = ka.missed.saturating_add(1);
        if ka.missed >= MISSED_ACKS {
            self.reregister(now, ReregisterCause::MissedKeepaliveAcks);
        } else {
            self.send_keepalive(now);
        }
    }

    fn run_request_timers(&mut self, now: Instant) {
        let mut silent = false;
        while let Some(index) = self
            .connects
            .iter()
            .position(|c| due(Some(c.deadline), now))
        {
            let pending = self.connects.swap_remove(index);
            // The server answers every request within its decision delay:
            // no record at all since this one went means it lost the channel.
            silent |= self.records_opened == pending.records_at_send;
            self.emit(TerminalEvent::ConnectFailed {
                request_id: pending.request_id,
            });
        }
        while let Some(index) = self
            .inquiries
            .iter()
            .position(|q| due(Some(q.deadline), now))
        {
            let inquiry = self.inquiries.swap_remove(index);
            self.send_answer(inquiry.query_id, inquiry.requester, Verdict::Deny);
        }
        if silent && self.is_registered() {
            self.reregister(now, ReregisterCause::SessionServerSilent);
        }
    }

    fn run_session_timers(&mut self, now: Instant) {
        while let Some(index) = self
            .sessions
            .iter()
            .position(|s| due(Some(s.deadline), now))
        {
            self.end_session(now, index, EndReason::DurationExpired);
        }
        let extra = self.config.extension_secs;
        let mut requests: Vec<(SessionId, u32), MAX_SESSIONS> = Vec::new();
        for session in self.sessions.iter_mut() {
            if due(session.extension_at, now) {
                session.extension_at = None;
                if session.active {
                    // One per session: the capacity is the table's.
                    let _ = requests.push((session.id, extra.unwrap_or(session.original_secs)));
                }
            }
        }
        for (session_id, extra_secs) in requests {
            let _ = self.send_sealed(
                &ExtensionRequest {
                    session_id,
                    extra_secs,
                }
                .into(),
            );
            self.emit(TerminalEvent::ExtensionRequested {
                session_id,
                extra_secs,
            });
        }
    }

    /// A request ID that is not 0 (the target's notifications carry 0) and
    /// not pending.
    fn fresh_request_id(&mut self) -> u32 {
        let in_use = |id: u32, connects: &[PendingConnect]| {
            id == 0 || connects.iter().any(|c| c.request_id == id)
        };
        for _ in 0..8 {
            let id = self.rng.next_u32();
            if !in_use(id, &self.connects) {
                return id;
            }
        }
        // A generator stuck on few values: the first free ID (there are at
        // most MAX_PENDING_REQUESTS in use).
        (1..=u32::MAX)
            .find(|&id| !in_use(id, &self.connects))
            .unwrap_or(1)
    }
}
