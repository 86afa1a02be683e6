//! The session management server (seed: session management server 4 / 1404)
//! as a sans-IO state machine (needs the `alloc` feature).
//!
//! It holds `device ID <-> device name`, registers terminals over a Noise IK
//! control channel (S702, 801/802), takes connection requests (FIG. 3, 805),
//! has the trigger server wake the target (S503, 806), searches the target's
//! permission list (first embodiment, S503-S506) or asks for its verdict
//! (second embodiment, S1201-S1204, S1101), asks the trigger server for both
//! addresses (S507, 809/810), starts the session (S508) and notifies both
//! sides with the other's address (S509/S510, 811/812). Every failure gives
//! the requester the same `Error{NotPermitted}` at the same time after its
//! request (S511). It grants extensions (S1602/S1603), ends sessions for the
//! operator through the trigger server (S1604/S1605) and writes exactly one
//! record per session (S1601/S1606, 814/815).
//!
//! # Inputs and outputs
//!
//! Terminals reach it over streams the driver accepted: the driver calls
//! [`SessionServer::handle_connection_opened`], then
//! [`SessionServer::handle_stream`] with each whole message, then
//! [`SessionServer::handle_connection_closed`]. Its own link to the trigger
//! server is [`Destination::Upstream`]: the driver connects it when a
//! transmit for it appears, feeds what comes back to
//! [`SessionServer::handle_upstream`] and reports a loss with
//! [`SessionServer::handle_upstream_closed`] (or all of these as
//! [`Input`]s through [`Machine::handle_input`]). The driver contract is
//! that of [`crate::machine`]: after each input, poll
//! [`SessionServer::poll_output`] until [`Output::Timeout`]; every
//! [`SessionFact`] comes out as [`Output::Store`] before any transmit, and
//! the driver stores it before it sends the next one.
//!
//! A terminal's channel (numbered by its device ID) outlives streams: the
//! server answers on the connection it last heard the channel on, and drops
//! (and counts) a message whose connection is gone; timeouts handle the rest.
//!
//! # Durable facts and restarts
//!
//! The [`SessionFact`]s (a name bound, a session started, extended,
//! recorded) are the facts to store; they sit in their own queue, which
//! never drops one, and reach the app as the [`SessionEvent`] of the same
//! name once stored. After a restart the driver builds the
//! [`NameRegistry`] from the bindings and replays, with
//! [`SessionServer::restore_session`], every started session that has no
//! record yet: it still ends by its notifications or its timer and still
//! gets exactly one record. The driver's clock must keep its origin across
//! restarts (e.g. microseconds of wall-clock time). Registrations (channels,
//! device IDs, UDP keys) are not durable: terminals register again, noticing
//! when their requests fail or their stream is closed.
//!
//! # Bounds
//!
//! Every table and queue is bounded by a named constant or a
//! [`SessionLimits`] value; timers live in one ordered index, so
//! [`SessionServer::poll_timeout`] is a lookup of its first entry whatever
//! the number of terminals.

mod config;
mod enrol;
mod events;
mod expiry;
mod peer;
mod registration;
mod requests;
mod sessions;
mod tickets;
mod upstream;

#[cfg(test)]
mod tests;

pub use config::*;
pub use enrol::{enrol_code_hash, EnrolCode, EnrolCodeError, ENROL_CODE_HASH_LEN, MAX_ENROL_CODES};
pub use events::*;
pub use peer::{
    PeerBody, PeerDecodeError, PeerMessage, MAX_FORWARDED, MAX_PEER_MESSAGE_LEN, PEER_VERSION,
};
pub use tickets::IDENTITY_REGISTRATIONS;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use core::net::SocketAddr;

use rand_core::{CryptoRng, RngCore};

use crate::conn_guard::ConnGuard;
use crate::crypto::StaticKeypair;
use crate::machine::{ConnectionId, Destination, Input, Machine, Output, OwnedTransmit};
use crate::names::NameRegistry;
use crate::ratelimit::{RateLimiter, SourceKey};
use crate::time::{Clock, Instant};
use crate::wire::{Message, PublicKey, Sealed, SessionId, MAX_PLAIN_MESSAGE_LEN};

use registration::Registrations;
use requests::Requests;
use sessions::Session;
use upstream::Upstream;

/// Plaintext buffer for a message the server sends to a terminal (the
/// longest, an address notification with an IPv6 address and a 64-byte
/// name, is 179 bytes).
const OUT_PLAIN_LEN: usize = 256;
/// Output buffer for a sealed record of such a message.
const OUT_SEALED_LEN: usize = OUT_PLAIN_LEN + crate::crypto::channel::SEALED_OVERHEAD;

/// What a timer is for; ordered so that the index is deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The handshake to the trigger server expires.
    UpstreamHandshake,
    /// Try the link to the trigger server again.
    UpstreamRetry,
    /// A registration still unconfirmed is forgotten.
    PendingRegistration(u64),
    /// A request's decision deadline.
    Request(u64),
    /// A denial's send time.
    Denial(u64),
    /// A session's record deadline.
    Session([u8; 16]),
    /// A channel whose stream closed is removed.
    ChannelOrphaned(u64),
    /// Unused bindings expire.
    BindingExpiry,
}

/// Every armed timer, ordered by deadline. Each owner keeps the deadline it
/// armed, so re-arming removes the old entry in O(log n).
#[derive(Debug, Default)]
struct Timers {
    index: BTreeSet<(Instant, Timer)>,
}

impl Timers {
    /// Arms `timer` at `at`, replacing the deadline kept in `slot`.
    fn arm(&mut self, timer: Timer, slot: &mut Option<Instant>, at: Instant) {
        if let Some(old) = slot.take() {
            self.index.remove(&(old, timer));
        }
        self.index.insert((at, timer));
        *slot = Some(at);
    }

    /// Disarms `timer` if `slot` holds a deadline.
    fn disarm(&mut self, timer: Timer, slot: &mut Option<Instant>) {
        if let Some(old) = slot.take() {
            self.index.remove(&(old, timer));
        }
    }

    /// The earliest deadline.
    fn next(&self) -> Option<Instant> {
        self.index.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest timer due at `now`.
    fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.index.first() {
            Some(&(at, timer)) if at <= now => {
                self.index.remove(&(at, timer));
                Some(timer)
            }
            _ => None,
        }
    }
}

/// The bounded output queues and the counters.
#[derive(Debug)]
struct Outputs {
    /// Durable facts: never dropped, always out before any transmit.
    facts: VecDeque<SessionFact>,
    /// Facts emitted so far (peer messages leave after those before them).
    facts_total: u64,
    /// Accepted streams to close.
    closes: VecDeque<ConnectionId>,
    transmits: VecDeque<OwnedTransmit>,
    events: VecDeque<SessionEvent>,
    max_transmits: usize,
    max_events: usize,
    counters: SessionCounters,
}

impl Outputs {
    fn fact(&mut self, f: SessionFact) {
        self.facts_total += 1;
        self.facts.push_back(f);
    }

    fn close(&mut self, conn: ConnectionId) {
        // Bounded by the connections the driver opened; a repeat is harmless.
        if !self.closes.contains(&conn) {
            self.closes.push_back(conn);
        }
    }

    fn transmit(&mut self, t: OwnedTransmit) {
        if self.transmits.len() >= self.max_transmits.max(1) {
            self.transmits.pop_front();
            self.counters.dropped_transmits += 1;
        }
        self.transmits.push_back(t);
    }

    fn transmit_message(&mut self, destination: Destination, message: &Message<'_>) {
        match OwnedTransmit::new(destination, message) {
            Some(t) => self.transmit(t),
            None => self.counters.seal_failures += 1,
        }
    }

    fn event(&mut self, e: SessionEvent) {
        if self.events.len() >= self.max_events.max(1) {
            self.events.pop_front();
            self.counters.dropped_events += 1;
        }
        self.events.push_back(e);
    }
}

/// The session management server. See the [module](self) documentation.
pub struct SessionServer<R> {
    config: SessionConfig,
    keypair: StaticKeypair,
    trigger_server_key: PublicKey,
    registry: NameRegistry,
    rng: R,
    clock: Clock,
    out: Outputs,
    timers: Timers,
    /// Open terminal streams and their remote addresses.
    conns: BTreeMap<ConnectionId, SocketAddr>,
    /// Their deadlines and per-source counts ([`SessionLimits::streams`]).
    guard: ConnGuard,
    reg: Registrations,
    /// Bindings' last-seen times, for their expiry.
    seen: expiry::Seen,
    upstream: Upstream,
    requests: Requests,
    sessions: BTreeMap<[u8; 16], Session>,
    /// End triggers in flight: operation ID -> (session, party).
    end_ops: BTreeMap<u32, ([u8; 16], events::Party)>,
    /// Recorded sessions that still take late end notifications.
    recent: sessions::RecentRecords,
    registration_limiter: Box<RateLimiter<SourceKey, RATE_LIMIT_TRACKED_KEYS>>,
    /// Registration tickets and the per-identity registration bucket.
    tickets: tickets::Tickets,
    /// The operator's unspent one-time enrolment codes.
    enrol: enrol::EnrolCodes,
    /// The UDP device IDs of the channels.
    udp_ids: tickets::UdpIds,
    request_limiter: Box<RateLimiter<PublicKey, RATE_LIMIT_TRACKED_KEYS>>,
    next_op: u32,
    /// The relay whose allocations this server hands out, if any.
    relay: Option<crate::relay::RelayIssuer>,
    /// Route requests for targets registered at other servers.
    peers: bool,
    /// Messages for other servers, each after the facts emitted before it.
    peer_out: VecDeque<(u64, PeerMessage)>,
    /// Requests handed to the cluster, by their number.
    forwarded: BTreeMap<u64, peer::Forwarded>,
    /// Sessions other servers own with a party here.
    remote_sessions: BTreeMap<[u8; 16], peer::RemoteSession>,
    /// Their IDs, oldest first (the table's bound).
    remote_order: VecDeque<[u8; 16]>,
}

impl<R> core::fmt::Debug for SessionServer<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SessionServer")
            .field("channels", &self.reg.channels.len())
            .field("connections", &self.conns.len())
            .field("stream_guard", &self.guard.counters())
            .field("pending_requests", &self.requests.pending.len())
            .field("sessions", &self.sessions.len())
            .field("counters", &self.out.counters)
            .finish_non_exhaustive()
    }
}

impl<R: RngCore + CryptoRng> SessionServer<R> {
    /// Hands every permitted session an allocation on this relay (in both
    /// address notifications), or none (`None`, the default).
    pub fn set_relay(&mut self, relay: Option<crate::relay::RelayIssuer>) {
        self.relay = relay;
    }

    /// A server with this policy, its own long-term key pair, the trigger
    /// server's public key (it is the Noise initiator of that link), the
    /// name bindings (fresh, or rebuilt from stored `NameBound` facts) and
    /// its random generator.
    pub fn new(
        config: SessionConfig,
        keypair: StaticKeypair,
        trigger_server_key: PublicKey,
        registry: NameRegistry,
        mut rng: R,
    ) -> Self {
        let rates = config.rates;
        let registration_limiter =
            RateLimiter::boxed(rates.registrations_per_source, rng.next_u64());
        let request_limiter = RateLimiter::boxed(rates.requests_per_identity, rng.next_u64());
        let tickets = tickets::Tickets::new(&keypair, rates.registrations_per_identity, &mut rng);
        let udp_ids = tickets::UdpIds::new(&keypair);
        SessionServer {
            out: Outputs {
                facts: VecDeque::new(),
                facts_total: 0,
                closes: VecDeque::new(),
                transmits: VecDeque::new(),
                events: VecDeque::new(),
                max_transmits: config.limits.max_queued_transmits,
                max_events: config.limits.max_queued_events,
                counters: SessionCounters::default(),
            },
            config,
            keypair,
            trigger_server_key,
            registry,
            rng,
            clock: Clock::default(),
            timers: Timers::default(),
            conns: BTreeMap::new(),
            guard: ConnGuard::new(config.limits.streams, config.limits.max_connections),
            reg: Registrations::default(),
            seen: expiry::Seen::default(),
            upstream: Upstream::default(),
            requests: Requests::default(),
            sessions: BTreeMap::new(),
            end_ops: BTreeMap::new(),
            recent: sessions::RecentRecords::default(),
            relay: None,
            peers: false,
            peer_out: VecDeque::new(),
            forwarded: BTreeMap::new(),
            remote_sessions: BTreeMap::new(),
            remote_order: VecDeque::new(),
            registration_limiter,
            tickets,
            enrol: enrol::EnrolCodes::default(),
            udp_ids,
            request_limiter,
            next_op: 0,
        }
    }

    /// The driver accepted a terminal stream from `remote`.
    pub fn handle_connection_opened(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        remote: SocketAddr,
    ) {
        self.begin(now);
        if !self.conns.contains_key(&conn) && self.conns.len() >= self.config.limits.max_connections
        {
            self.out.counters.connections_refused += 1;
            self.out.close(conn);
            return;
        }
        // A source beyond its stream cap is refused before anything else.
        if self.guard.open(now, conn, remote).is_err() {
            self.out.counters.connections_refused += 1;
            self.out.close(conn);
            return;
        }
        self.conns.insert(conn, remote);
    }

    /// One whole message arrived on a terminal stream: a `HandshakeInit`
    /// (registration) or a `Sealed` record on a channel. Anything else, and
    /// anything that does not check out, is ignored (and counted).
    pub fn handle_stream(&mut self, now: Instant, conn: ConnectionId, message: &[u8]) {
        let now = self.begin(now);
        let Some(&remote) = self.conns.get(&conn) else {
            self.out.counters.unknown_connection += 1;
            return;
        };
        self.guard.heard(now, conn);
        match Message::decode(message) {
            Ok(Message::HandshakeInit(init)) => {
                self.on_handshake_init(now, conn, remote, &init, None)
            }
            Ok(Message::TicketedHandshakeInit(ticketed)) => {
                self.on_handshake_init(now, conn, remote, &ticketed.init(), Some(&ticketed))
            }
            Ok(Message::Sealed(record)) => self.on_sealed(now, conn, &record),
            _ => self.out.counters.ignored_messages += 1,
        }
    }

    /// The driver saw a terminal stream close.
    pub fn handle_connection_closed(&mut self, now: Instant, conn: ConnectionId) {
        let now = self.begin(now);
        self.conns.remove(&conn);
        self.guard.close(conn);
        self.channels_lost_connection(now, conn);
    }

    /// One whole message arrived on the link to the trigger server.
    pub fn handle_upstream(&mut self, now: Instant, message: &[u8]) {
        let now = self.begin(now);
        match Message::decode(message) {
            Ok(Message::HandshakeReply(reply)) => self.on_upstream_reply(now, &reply),
            Ok(Message::Sealed(record)) => self.on_upstream_sealed(now, &record),
            _ => self.out.counters.ignored_messages += 1,
        }
    }

    /// The link to the trigger server was lost. Both sides keep their state;
    /// the server handshakes again when it next has something to send.
    pub fn handle_upstream_closed(&mut self, now: Instant) {
        let now = self.begin(now);
        self.upstream_lost(now);
    }

    /// The operator frees `name` (in any of its spellings), whose key was
    /// lost or retired: the binding goes (a `NameUnbound` fact, stored
    /// before anything that follows), and a live registration of it ends
    /// (its UDP key is revoked), so the next key to register the name (or
    /// the one the operator enrols) gets it. The key it was bound to.
    pub fn release_name(&mut self, now: Instant, name: &str) -> Result<PublicKey, UnknownName> {
        self.begin(now);
        let name = crate::names::canonical(name).map_err(|_| UnknownName)?;
        let wire = crate::wire::Name::new(&name).map_err(|_| UnknownName)?;
        let key = self.registry.unbind(wire).ok_or(UnknownName)?;
        self.seen.remove(&name);
        if let Some(device) = self.reg.live.get(&name).copied() {
            self.end_channel(device);
        }
        self.out.fact(SessionFact::NameUnbound { name, key });
        Ok(key)
    }

    /// The operator ends a live session (S1604): an `EndTriggerRequest` for
    /// each party goes to the trigger server (S1605); the record follows the
    /// end notifications (or [`SessionConfig::end_grace`] without them).
    pub fn end_session(
        &mut self,
        now: Instant,
        session_id: SessionId,
    ) -> Result<(), UnknownSession> {
        let now = self.begin(now);
        self.force_end(now, session_id)
    }

    /// Runs every timer due at `now`. Afterwards [`Self::poll_timeout`] is
    /// `None` or later than `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.begin(now);
    }

    /// The next output (see [`Machine::poll_output`]): stored facts first,
    /// then closes, events and transmits.
    pub fn poll_output(&mut self, buf: &mut [u8]) -> Output<SessionFact, SessionEvent> {
        if let Some(fact) = self.out.facts.pop_front() {
            return Output::Store(fact);
        }
        if let Some(conn) = self.out.closes.pop_front() {
            self.guard.close(conn);
            // The driver reports no close of a stream the server closed:
            // its channels are orphaned here.
            let now = self.clock.latest();
            self.channels_lost_connection(now, conn);
            return Output::Close(conn);
        }
        if let Some(event) = self.out.events.pop_front() {
            return Output::Event(event);
        }
        while let Some(t) = self.out.transmits.pop_front() {
            match t.write_into(buf) {
                Some(transmit) => return Output::Transmit(transmit),
                None => self.out.counters.dropped_transmits += 1,
            }
        }
        Output::Timeout(self.poll_timeout())
    }

    /// When to call [`Self::handle_timeout`] next; `None` if no timer is armed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next(), self.guard.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What the server ignored or dropped so far.
    pub fn counters(&self) -> SessionCounters {
        self.out.counters
    }

    /// Streams the stream guard refused or closed so far.
    pub fn stream_guard_counters(&self) -> crate::conn_guard::GuardCounters {
        self.guard.counters()
    }

    /// The name bindings.
    pub fn registry(&self) -> &NameRegistry {
        &self.registry
    }

    /// The name bindings, for the operator to enroll or unbind names at run
    /// time (persist what you change). Unbinding a name does not end its
    /// live registration; it ends when the terminal registers again.
    pub fn registry_mut(&mut self) -> &mut NameRegistry {
        &mut self.registry
    }

    /// The device ID of `name`'s live (confirmed) registration, in any of
    /// the name's spellings ([`crate::names::canonical`]).
    pub fn live_device(&self, name: &str) -> Option<crate::wire::DeviceId> {
        let name = crate::names::canonical(name).ok()?;
        self.reg.live.get(&name).map(|&d| crate::wire::DeviceId(d))
    }

    /// The names with a live (confirmed) registration and their device
    /// IDs, in name order: the operator's list of live terminals.
    pub fn live_terminals(&self) -> impl Iterator<Item = (&str, crate::wire::DeviceId)> + '_ {
        self.reg
            .live
            .iter()
            .map(|(name, &d)| (name.as_str(), crate::wire::DeviceId(d)))
    }

    /// The device ID the trigger server and the keepalives know the
    /// terminal of channel `device` by (a keyed hash of the channel number,
    /// so the two flows do not link; for the operator's status, which
    /// joins the two).
    pub fn udp_device_id(&self, device: crate::wire::DeviceId) -> crate::wire::DeviceId {
        self.udp_ids.of(device.0)
    }

    /// Terminal channels held, live and pending.
    pub fn channel_count(&self) -> usize {
        self.reg.channels.len()
    }

    /// Connection requests being decided.
    pub fn pending_request_count(&self) -> usize {
        self.requests.pending.len()
    }

    /// Uniform denials waiting for their deny time.
    pub fn scheduled_denial_count(&self) -> usize {
        self.requests.denial_count()
    }

    /// Live sessions (started, not yet recorded).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Whether the secure link to the trigger server is established.
    pub fn upstream_established(&self) -> bool {
        self.upstream.is_up()
    }

    /// Clamps `now` and runs every timer due; every input starts here, so a
    /// late driver never lets an overdue request be decided.
    fn begin(&mut self, now: Instant) -> Instant {
        let now = self.clock.observe(now);
        while let Some(timer) = self.timers.pop_due(now) {
            self.fire(now, timer);
        }
        // Streams that sent no first message in time, or carry no channel.
        while let Some(conn) = self.guard.pop_expired(now) {
            self.conns.remove(&conn);
            self.out.close(conn);
        }
        now
    }

    /// Runs one due timer (already removed from the index).
    fn fire(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::UpstreamHandshake => self.upstream_handshake_expired(now),
            Timer::UpstreamRetry => self.upstream_retry(now),
            Timer::PendingRegistration(device) => self.pending_registration_expired(device),
            Timer::Request(key) => self.request_deadline(now, key),
            Timer::Denial(key) => self.denial_due(key),
            Timer::Session(id) => self.session_deadline(now, id),
            Timer::ChannelOrphaned(device) => self.orphan_expired(device),
            Timer::BindingExpiry => self.bindings_expired(now),
        }
    }

    /// A sealed record from a terminal: open it on its channel, confirm a
    /// pending registration, then act on the plain message.
    fn on_sealed(&mut self, now: Instant, conn: ConnectionId, record: &Sealed<'_>) {
        let device = record.channel;
        let Some(channel) = self.reg.channels.get_mut(&device) else {
            self.out.counters.unknown_channel += 1;
            return;
        };
        let mut plain = [0u8; MAX_PLAIN_MESSAGE_LEN];
        let n = match channel.secure.open(record, &mut plain) {
            Ok(n) => n,
            Err(_) => {
                self.out.counters.open_failures += 1;
                return;
            }
        };
        let live = channel.live;
        self.channel_heard_on(now, device, conn);
        if !live {
            self.confirm_registration(now, device);
            if !self.reg.channels.contains_key(&device) {
                return;
            }
        }
        let Some(bytes) = plain.get(..n) else {
            return;
        };
        match Message::decode(bytes) {
            Ok(Message::Poll(_)) => self.on_poll(now, device),
            Ok(Message::ConnectionRequest(req)) => self.on_connection_request(now, device, &req),
            Ok(Message::PermissionList(list)) => self.on_permission_list(now, device, &list),
            Ok(Message::PermissionAnswer(answer)) => {
                self.on_permission_answer(now, device, &answer)
            }
            Ok(m @ Message::ExtensionRequest(req)) => {
                if !self.pass_to_owner(device, &req.session_id, &m, false) {
                    self.on_extension_request(now, peer::Sender::Device(device), &req)
                }
            }
            Ok(m @ Message::EndNotification(note)) => {
                if !self.pass_to_owner(device, &note.session_id, &m, true) {
                    self.on_end_notification(now, peer::Sender::Device(device), &note)
                }
            }
            _ => self.out.counters.ignored_messages += 1,
        }
    }

    /// Seals `message` on `device`'s channel and sends it on the connection
    /// the channel was last heard on; dropped (counted) if either is gone.
    fn send_to_device(&mut self, device: u64, message: &Message<'_>) {
        let Some(channel) = self.reg.channels.get_mut(&device) else {
            self.out.counters.undeliverable += 1;
            return;
        };
        let Some(conn) = channel.conn.filter(|c| self.conns.contains_key(c)) else {
            self.out.counters.undeliverable += 1;
            return;
        };
        let mut plain = [0u8; OUT_PLAIN_LEN];
        let Ok(n) = message.encode(&mut plain) else {
            self.out.counters.seal_failures += 1;
            return;
        };
        let mut sealed = [0u8; OUT_SEALED_LEN];
        let Ok(m) = channel
            .secure
            .seal(plain.get(..n).unwrap_or_default(), &mut sealed)
        else {
            self.out.counters.seal_failures += 1;
            return;
        };
        match OwnedTransmit::from_bytes(
            Destination::Connection(conn),
            sealed.get(..m).unwrap_or_default(),
        ) {
            Some(t) => self.out.transmit(t),
            None => self.out.counters.seal_failures += 1,
        }
    }

    /// Sends `message` to the live registration of `name`, if any.
    fn send_to_name(&mut self, name: &str, message: &Message<'_>) {
        match self.reg.live.get(name) {
            Some(&device) => self.send_to_device(device, message),
            None => self.out.counters.undeliverable += 1,
        }
    }

    /// A fresh nonzero operation ID for the trigger server.
    fn fresh_op(&mut self) -> u32 {
        self.next_op = self.next_op.wrapping_add(1).max(1);
        self.next_op
    }
}

impl<R: RngCore + CryptoRng> Machine for SessionServer<R> {
    type Fact = SessionFact;
    type Event = SessionEvent;
    type Io = ();

    fn handle_input(&mut self, now: Instant, input: Input<'_>, _io: &mut ()) {
        match input {
            Input::ConnectionOpened { conn, remote } => {
                self.handle_connection_opened(now, conn, remote)
            }
            Input::ConnectionMessage { conn, bytes } => self.handle_stream(now, conn, bytes),
            Input::ConnectionClosed(conn) => self.handle_connection_closed(now, conn),
            Input::UpstreamMessage(bytes) => self.handle_upstream(now, bytes),
            Input::UpstreamClosed => self.handle_upstream_closed(now),
            // The session server has no UDP socket.
            Input::Datagram { .. } => {
                self.begin(now);
                self.out.counters.ignored_messages += 1;
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        SessionServer::handle_timeout(self, now);
    }

    fn poll_output(
        &mut self,
        _now: Instant,
        buf: &mut [u8],
        _io: &mut (),
    ) -> Output<SessionFact, SessionEvent> {
        SessionServer::poll_output(self, buf)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        SessionServer::poll_timeout(self)
    }
}
