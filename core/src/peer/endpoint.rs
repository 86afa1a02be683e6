//! The endpoint: one terminal and its peer sessions on one UDP socket, and
//! the glue between them that every driver needs, so drivers stay thin.
//!
//! - A [`TerminalEvent::SessionReady`] starts a [`PeerSession`] (up to
//!   [`MAX_SESSIONS`]; beyond that the session is ended at once, `Failed`).
//! - Datagrams are routed: from the trigger server to the terminal; peer
//!   packets (types `0x80..=0x8F`) to the session whose channel they name;
//!   anything else to the terminal, which counts it.
//! - After every input the endpoint reports each session's byte counts and
//!   whether it is in use to the terminal (a stream running, datagrams
//!   sent or received within [`LIVE_ACTIVE_WINDOW`], or the app holding it
//!   open, [`Endpoint::hold_open`])
//!   ([`Terminal::transfer_progress`], which decides the extension request
//!   at the threshold, S1504), applies granted extensions
//!   ([`TerminalEvent::SessionExtended`] → [`PeerSession::extend`]) and
//!   forced ends ([`TerminalEvent::SessionEnded`] while the peer session
//!   runs → [`PeerSession::close`] with the terminal's reason), and when a
//!   peer session ends, ends the terminal's session with its reason and
//!   final byte counts ([`Terminal::finish_session`], the end notification).
//!
//! The app reads and writes each session's payload through one
//! [`SessionIo`], told which session every call is for. The endpoint is the
//! terminal's [`Machine`]: drivers run it like the servers, and every app
//! call (`connect`, `end_session`, `stream_finish`...) is picked up by the
//! next [`Endpoint::poll_output`].

use core::convert::Infallible;
use core::net::SocketAddr;

use heapless::Deque;
use rand_core::{CryptoRng, RngCore};

use super::packet::{is_peer_packet, peek_channel};
use super::session::{PeerConfig, PeerEvent, PeerSession, SendError, SessionParams};
use super::transport::{PeerSink, PingError, StreamError, StreamSource};
use crate::crypto::StaticKeypair;
use crate::machine::{Destination, Input, Machine, Output, Transmit, MAX_TRANSMIT_LEN};
use crate::terminal::{
    ConnectError, PermissionError, Terminal, TerminalConfig, TerminalEvent, UnknownQuery,
    UnknownSession, MAX_SESSIONS,
};
use crate::time::{Clock, Instant};
use crate::wire::{EndReason, SessionId, Verdict};

/// Most events waiting for the app; beyond it the oldest is dropped
/// (counted in [`EndpointStats::events_dropped`]).
pub const MAX_QUEUED_ENDPOINT_EVENTS: usize = 32;
/// Size of the buffer [`Endpoint::poll_output`] needs: the largest
/// terminal message or peer datagram.
pub const ENDPOINT_BUF_LEN: usize = MAX_TRANSMIT_LEN;
/// How long after its last datagram (sent or received) a session still
/// counts as in use: a live stream that flowed this recently is extended
/// at the threshold (S1504).
pub const LIVE_ACTIVE_WINDOW: core::time::Duration = core::time::Duration::from_secs(5);

/// The app's side of every session's payload: stream bytes to send (read by
/// offset, so the endpoint never copies or stores them) and what arrived.
pub trait SessionIo {
    /// Fills `buf` with the local stream's bytes at `offset`; returns how many.
    fn read_at(&mut self, session: &SessionId, offset: u64, buf: &mut [u8]) -> usize;
    /// Stream bytes of the peer at `offset` (possibly out of order or twice).
    fn stream_data(&mut self, session: &SessionId, offset: u64, data: &[u8]);
    /// A datagram of the peer.
    fn datagram(&mut self, session: &SessionId, data: &[u8]);
}

/// [`SessionIo`] seen as one session's source and sink.
struct Bound<'a, I: ?Sized> {
    io: &'a mut I,
    session: SessionId,
}

impl<I: SessionIo + ?Sized> StreamSource for Bound<'_, I> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> usize {
        self.io.read_at(&self.session, offset, buf)
    }
}

impl<I: SessionIo + ?Sized> PeerSink for Bound<'_, I> {
    fn stream_data(&mut self, offset: u64, data: &[u8]) {
        self.io.stream_data(&self.session, offset, data);
    }
    fn datagram(&mut self, data: &[u8]) {
        self.io.datagram(&self.session, data);
    }
}

/// What happened, for the app.
#[derive(Debug, Clone, PartialEq, Eq)]
// A session-ready event carries the relay allocation (~70 bytes); events
// are moved a few times per session, never per packet.
#[allow(clippy::large_enum_variant)]
pub enum EndpointEvent {
    /// The terminal's event (registration, sessions, permissions...).
    Terminal(TerminalEvent),
    /// A peer session's event.
    Peer {
        /// The session.
        session_id: SessionId,
        /// What happened on it.
        event: PeerEvent,
    },
}

/// Counters of the endpoint's routing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Peer packets for a channel no running session has.
    pub unrouted: u64,
    /// Peer sessions started.
    pub sessions_started: u64,
    /// Notifications beyond [`MAX_SESSIONS`], ended at once.
    pub sessions_refused: u64,
    /// Events dropped because the app did not drain them.
    pub events_dropped: u64,
    /// Terminal messages dropped because the caller's buffer was too small.
    pub transmits_dropped: u64,
}

/// One running peer session and what the terminal last heard about it.
struct Slot {
    id: SessionId,
    session: PeerSession,
    /// (bytes sent, bytes received, active) as last reported.
    reported: (u64, u64, bool),
    /// The terminal already ended its side (forced end or its own deadline).
    terminal_ended: bool,
    /// The app reports this session's counts itself
    /// ([`Endpoint::transfer_progress`]): the channel's never replace them.
    app_reports: bool,
    /// Datagrams sent and received when last looked at.
    datagrams_seen: u64,
    /// When that count last grew.
    last_datagram: Option<Instant>,
    /// The app holds the session open ([`Endpoint::hold_open`]): in use.
    held: bool,
}

/// A terminal and up to [`MAX_SESSIONS`] peer sessions on one socket.
pub struct Endpoint<R> {
    terminal: Terminal<R>,
    keypair: StaticKeypair,
    peer_config: PeerConfig,
    rng: R,
    clock: Clock,
    slots: [Option<Slot>; MAX_SESSIONS],
    /// Where the next transmit search starts (round robin).
    next_slot: usize,
    events: Deque<EndpointEvent, MAX_QUEUED_ENDPOINT_EVENTS>,
    stats: EndpointStats,
    /// An input or app call may have left events to move between the
    /// terminal and the sessions: the next poll pumps first.
    dirty: bool,
}

impl<R> core::fmt::Debug for Endpoint<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Endpoint")
            .field("terminal", &self.terminal)
            .field("sessions", &self.slots.iter().flatten().count())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<R: RngCore + CryptoRng> Endpoint<R> {
    /// An endpoint for a terminal with this configuration and identity.
    /// `terminal_rng` goes to the terminal, `peer_rng` makes the peer
    /// sessions' ephemeral keys. Nothing happens until [`Self::start`].
    pub fn new(
        config: TerminalConfig,
        keypair: StaticKeypair,
        terminal_rng: R,
        peer_rng: R,
        peer_config: PeerConfig,
    ) -> Endpoint<R> {
        Endpoint {
            terminal: Terminal::new(config, keypair.clone(), terminal_rng),
            keypair,
            peer_config,
            rng: peer_rng,
            clock: Clock::default(),
            slots: Default::default(),
            next_slot: 0,
            events: Deque::new(),
            stats: EndpointStats::default(),
            dirty: false,
        }
    }

    /// Starts registering (see [`Terminal::start`]).
    pub fn start(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        self.terminal.start(now);
        self.dirty = true;
    }

    /// The terminal, for what the endpoint does not wrap (state, permissions).
    pub fn terminal(&self) -> &Terminal<R> {
        &self.terminal
    }

    /// A running peer session, for its state and statistics.
    pub fn session(&self, id: &SessionId) -> Option<&PeerSession> {
        self.slots
            .iter()
            .flatten()
            .find(|s| s.id == *id)
            .map(|s| &s.session)
    }

    fn session_mut(&mut self, id: &SessionId) -> Option<&mut PeerSession> {
        self.dirty = true;
        self.slots
            .iter_mut()
            .flatten()
            .find(|s| s.id == *id)
            .map(|s| &mut s.session)
    }

    /// The ids of the running peer sessions.
    pub fn session_ids(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.slots.iter().flatten().map(|s| s.id)
    }

    // ----- app calls (picked up by the next poll) ------------------------------

    /// Asks for a session with `target` (S203/S204); see [`Terminal::connect`].
    pub fn connect(
        &mut self,
        now: Instant,
        target: &str,
        duration_secs: u32,
    ) -> Result<u32, ConnectError> {
        let now = self.clock.observe(now);
        self.dirty = true;
        self.terminal.connect(now, target, duration_secs)
    }

    /// The app's verdict on a permission inquiry (S1203/S1204).
    pub fn answer(
        &mut self,
        now: Instant,
        query_id: u32,
        verdict: Verdict,
    ) -> Result<(), UnknownQuery> {
        let now = self.clock.observe(now);
        self.dirty = true;
        self.terminal.answer(now, query_id, verdict)
    }

    /// Replaces the permission list L; it applies to the next request.
    pub fn set_permissions(&mut self, names: &[&str]) -> Result<(), PermissionError> {
        self.dirty = true;
        self.terminal.set_permissions(names)
    }

    /// Adds `name` to the permission list.
    pub fn allow(&mut self, name: &str) -> Result<(), PermissionError> {
        self.dirty = true;
        self.terminal.allow(name)
    }

    /// Removes `name` from the permission list; whether it was there.
    pub fn disallow(&mut self, name: &str) -> bool {
        self.dirty = true;
        self.terminal.disallow(name)
    }

    /// Reports a session's payload counts for a session whose payload does
    /// not go through the peer channel (otherwise the channel reports its
    /// own). Once the app reports a session's counts, they are the ones its
    /// end notification carries.
    pub fn transfer_progress(
        &mut self,
        id: &SessionId,
        bytes_sent: u64,
        bytes_received: u64,
        active: bool,
    ) -> Result<(), UnknownSession> {
        self.dirty = true;
        if let Some(slot) = self.slots.iter_mut().flatten().find(|s| s.id == *id) {
            slot.app_reports = true;
        }
        self.terminal
            .transfer_progress(id, bytes_sent, bytes_received, active)
    }

    /// Ends a session from the app (transfer done, cancelled, failed): a
    /// running peer session closes first (CLOSE to the peer, then the end
    /// notification with its byte counts); a session without one sends its
    /// end notification at once (S1508, 814/815).
    pub fn end_session(
        &mut self,
        now: Instant,
        id: &SessionId,
        reason: EndReason,
    ) -> Result<(), UnknownSession> {
        let now = self.clock.observe(now);
        match self.session_mut(id) {
            Some(session) => {
                session.close(now, reason);
                Ok(())
            }
            None => self.terminal.finish_session(now, id, reason),
        }
    }

    /// Marks a session as held open by the app (`tryst connect --live`):
    /// while held it counts as in use, and is extended at the threshold
    /// like a running transfer (S1504).
    pub fn hold_open(&mut self, id: &SessionId, held: bool) -> Result<(), UnknownSession> {
        let slot = self
            .slots
            .iter_mut()
            .flatten()
            .find(|s| s.id == *id)
            .ok_or(UnknownSession)?;
        slot.held = held;
        self.dirty = true;
        Ok(())
    }

    /// Makes the local stream's bytes up to `available` sendable.
    pub fn stream_extend(&mut self, id: &SessionId, available: u64) -> Result<(), UnknownSession> {
        self.session_mut(id)
            .ok_or(UnknownSession)
            .map(|s| s.stream_extend(available))
    }

    /// The local stream is `total_len` bytes long; all of it is sendable.
    pub fn stream_finish(
        &mut self,
        id: &SessionId,
        total_len: u64,
    ) -> Result<Result<(), StreamError>, UnknownSession> {
        self.session_mut(id)
            .ok_or(UnknownSession)
            .map(|s| s.stream_finish(total_len))
    }

    /// Pings a session's peer over its data channel
    /// ([`PeerSession::ping`]): the answer comes as
    /// [`PeerEvent::Pong`] or [`PeerEvent::PingLost`] with the returned id.
    pub fn ping(
        &mut self,
        now: Instant,
        id: &SessionId,
        timeout: core::time::Duration,
    ) -> Result<Result<u32, PingError>, UnknownSession> {
        let now = self.clock.observe(now);
        self.session_mut(id)
            .ok_or(UnknownSession)
            .map(|s| s.ping(now, timeout))
    }

    /// Queues a real-time datagram on a session (never retransmitted).
    pub fn send_datagram(
        &mut self,
        id: &SessionId,
        data: &[u8],
    ) -> Result<Result<(), SendError>, UnknownSession> {
        self.session_mut(id)
            .ok_or(UnknownSession)
            .map(|s| s.send_datagram(data))
    }

    /// Counters of the routing.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    // ----- input -------------------------------------------------------------

    /// A datagram arrived on the socket from `from`; peer data packets are
    /// decrypted in place in `datagram`.
    pub fn handle_udp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
        io: &mut (impl SessionIo + ?Sized),
    ) {
        let now = self.clock.observe(now);
        self.dirty = true;
        if from != self.terminal.trigger_server() && is_peer_packet(datagram) {
            let channel = peek_channel(datagram).map(|(_, c)| c);
            let slot = self
                .slots
                .iter_mut()
                .flatten()
                .find(|s| Some(s.session.channel()) == channel);
            match slot {
                Some(slot) => {
                    let mut bound = Bound {
                        io,
                        session: slot.id,
                    };
                    slot.session
                        .handle_datagram(now, from, datagram, &mut bound, &mut self.rng);
                }
                None => self.stats.unrouted += 1,
            }
        } else {
            self.terminal.handle_udp(now, from, datagram);
        }
    }

    /// One whole message arrived from the session server.
    pub fn handle_upstream(&mut self, now: Instant, message: &[u8]) {
        let now = self.clock.observe(now);
        self.terminal.handle_upstream(now, message);
        self.dirty = true;
    }

    /// The stream to the session server was lost.
    pub fn handle_upstream_closed(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        self.terminal.handle_upstream_closed(now);
        self.dirty = true;
    }

    /// Runs every timer due at `now`, the terminal's and each session's.
    /// Whether each session is in use is brought up to `now` first (a live
    /// stream that stopped a while ago no longer counts at the threshold).
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        self.pump(now);
        if self.terminal.poll_timeout().is_some_and(|t| t <= now) {
            self.terminal.handle_timeout(now);
        }
        for slot in self.slots.iter_mut().flatten() {
            if slot.session.poll_timeout().is_some_and(|t| t <= now) {
                slot.session.handle_timeout(now, &mut self.rng);
            }
        }
        self.dirty = true;
    }

    // ----- output ------------------------------------------------------------

    /// The next output (see [`Machine::poll_output`]): events first, then
    /// the terminal's messages, then the sessions' packets in turn, written
    /// into `buf` ([`ENDPOINT_BUF_LEN`] bytes holds any). The endpoint
    /// stores no durable facts.
    pub fn poll_output(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        io: &mut (impl SessionIo + ?Sized),
    ) -> Output<Infallible, EndpointEvent> {
        let now = self.clock.observe(now);
        // The second round pumps unconditionally: polling the sessions may
        // have changed them (a spent key ends one) without a transmit.
        for round in 0..2 {
            if self.dirty || round == 1 {
                self.dirty = false;
                self.pump(now);
            }
            if let Some(event) = self.events.pop_front() {
                return Output::Event(event);
            }
            while let Some(t) = self.terminal.poll_transmit() {
                match t.write_into(buf) {
                    Some(transmit) => return Output::Transmit(transmit),
                    None => self.stats.transmits_dropped += 1,
                }
            }
            for k in 0..MAX_SESSIONS {
                let i = (self.next_slot + k) % MAX_SESSIONS;
                let Some(slot) = &mut self.slots[i] else {
                    continue;
                };
                let mut bound = Bound {
                    io: &mut *io,
                    session: slot.id,
                };
                if let Some((to, len)) = slot.session.poll_transmit(now, buf, &mut bound) {
                    self.next_slot = (i + 1) % MAX_SESSIONS;
                    // Sending may have ended a session (key spent) or raised events.
                    self.dirty = true;
                    if slot.session.relay_over_tcp() == Some(to) {
                        // To the relay over TCP: the same packet, framed.
                        match frame_in_place(buf, len) {
                            Some(len) => {
                                return Output::Transmit(Transmit {
                                    destination: Destination::RelayStream(to),
                                    local: None,
                                    len,
                                })
                            }
                            None => {
                                self.stats.transmits_dropped += 1;
                                continue;
                            }
                        }
                    }
                    return Output::Transmit(Transmit {
                        destination: Destination::Udp(to),
                        local: None,
                        len,
                    });
                }
            }
        }
        Output::Timeout(self.poll_timeout())
    }

    /// When [`Self::handle_timeout`] should next run.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|s| s.session.poll_timeout())
            .chain(self.terminal.poll_timeout())
            .min()
    }

    // ----- glue --------------------------------------------------------------

    /// Moves events between the terminal and the sessions; the first poll
    /// after an input or app call does it.
    fn pump(&mut self, now: Instant) {
        // Two rounds: a session's end feeds the terminal, whose event may
        // concern another session; each round only drains queues.
        for _ in 0..2 {
            while let Some(event) = self.terminal.poll_event() {
                self.on_terminal_event(now, &event);
                self.emit(EndpointEvent::Terminal(event));
            }
            for i in 0..MAX_SESSIONS {
                self.pump_slot(now, i);
            }
        }
    }

    fn on_terminal_event(&mut self, now: Instant, event: &TerminalEvent) {
        match *event {
            TerminalEvent::SessionReady {
                session_id,
                role,
                peer_key,
                peer_addr,
                session_key,
                duration_secs,
                relay,
                ..
            } => {
                let params = SessionParams {
                    session_id,
                    role,
                    peer_key,
                    peer_addr,
                    session_key,
                    duration_secs,
                    relay,
                };
                let Some(free) = self.slots.iter_mut().find(|s| s.is_none()) else {
                    self.stats.sessions_refused += 1;
                    let _ = self
                        .terminal
                        .finish_session(now, &session_id, EndReason::Failed);
                    return;
                };
                *free = Some(Slot {
                    id: session_id,
                    session: PeerSession::new(
                        now,
                        self.peer_config.clone(),
                        &self.keypair,
                        params,
                        &mut self.rng,
                    ),
                    reported: (0, 0, false),
                    terminal_ended: false,
                    app_reports: false,
                    datagrams_seen: 0,
                    last_datagram: None,
                    held: false,
                });
                self.stats.sessions_started += 1;
            }
            TerminalEvent::SessionExtended {
                session_id,
                duration_secs,
            } => {
                if let Some(session) = self.session_mut(&session_id) {
                    session.extend(duration_secs);
                }
            }
            TerminalEvent::SessionEnded {
                session_id, reason, ..
            } => {
                // Ended by the terminal (forced end, its deadline, refusal):
                // close the peer session; its end is not reported again.
                if let Some(slot) = self.slots.iter_mut().flatten().find(|s| s.id == session_id) {
                    slot.terminal_ended = true;
                    slot.session.close(now, reason);
                }
            }
            _ => {}
        }
    }

    fn pump_slot(&mut self, now: Instant, i: usize) {
        let Some(slot) = &mut self.slots[i] else {
            return;
        };
        let id = slot.id;
        let mut ended = None;
        let mut forwarded: heapless::Vec<PeerEvent, 32> = heapless::Vec::new();
        while let Some(event) = slot.session.poll_event() {
            if let PeerEvent::Ended {
                reason,
                bytes_sent,
                bytes_received,
                ..
            } = event
            {
                ended = Some((reason, bytes_sent, bytes_received));
            }
            if forwarded.push(event).is_err() {
                self.stats.events_dropped += 1;
            }
        }
        let (sent, received) = slot.session.bytes();
        let datagrams = slot
            .session
            .transport_stats()
            .map_or(0, |s| s.datagrams_sent.saturating_add(s.datagrams_received));
        if datagrams != slot.datagrams_seen {
            slot.datagrams_seen = datagrams;
            slot.last_datagram = Some(now);
        }
        let live = slot
            .last_datagram
            .is_some_and(|at| now < at.saturating_add(LIVE_ACTIVE_WINDOW));
        let active = slot.session.transfer_active() || live || slot.held;
        let report = (sent, received, active && ended.is_none());
        let terminal_ended = slot.terminal_ended;
        let app_reports = slot.app_reports;
        if report != slot.reported && !terminal_ended && !app_reports {
            slot.reported = report;
            let _ = self
                .terminal
                .transfer_progress(&id, sent, received, report.2);
        }
        if let Some((reason, sent, received)) = ended {
            self.slots[i] = None;
            if !terminal_ended {
                if !app_reports {
                    let _ = self.terminal.transfer_progress(&id, sent, received, false);
                }
                let _ = self.terminal.finish_session(now, &id, reason);
            }
        }
        for event in forwarded {
            self.emit(EndpointEvent::Peer {
                session_id: id,
                event,
            });
        }
    }

    fn emit(&mut self, event: EndpointEvent) {
        if self.events.is_full() {
            let _ = self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        // Room was made above.
        let _ = self.events.push_back(event);
    }
}

/// Turns the packet in `buf[..len]` into one relay frame in place (its
/// length before it); the frame's length, or `None` if `buf` is too short.
fn frame_in_place(buf: &mut [u8], len: usize) -> Option<usize> {
    use crate::relay::framing::{MAX_RELAY_FRAME_LEN, RELAY_FRAME_HEADER_LEN};
    let total = len + RELAY_FRAME_HEADER_LEN;
    if len == 0 || len > MAX_RELAY_FRAME_LEN || buf.len() < total {
        return None;
    }
    buf.copy_within(..len, RELAY_FRAME_HEADER_LEN);
    // At most MAX_RELAY_FRAME_LEN: fits a u16.
    buf[..RELAY_FRAME_HEADER_LEN].copy_from_slice(&(len as u16).to_be_bytes());
    Some(total)
}

impl<R: RngCore + CryptoRng> Machine for Endpoint<R> {
    type Fact = Infallible;
    type Event = EndpointEvent;
    type Io = dyn SessionIo + 'static;

    fn handle_input(&mut self, now: Instant, input: Input<'_>, io: &mut Self::Io) {
        match input {
            Input::Datagram { from, bytes, .. } => self.handle_udp(now, from, bytes, io),
            Input::UpstreamMessage(bytes) => self.handle_upstream(now, bytes),
            Input::UpstreamClosed => self.handle_upstream_closed(now),
            // A terminal accepts no streams.
            Input::ConnectionOpened { .. }
            | Input::ConnectionMessage { .. }
            | Input::ConnectionClosed(_) => {
                self.clock.observe(now);
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        Endpoint::handle_timeout(self, now);
    }

    fn poll_output(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        io: &mut Self::Io,
    ) -> Output<Infallible, EndpointEvent> {
        Endpoint::poll_output(self, now, buf, io)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Endpoint::poll_timeout(self)
    }

    fn upstream_choice(&self) -> usize {
        self.terminal.upstream_choice()
    }
}

#[cfg(test)]
mod tests;
