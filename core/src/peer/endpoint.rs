//! The endpoint: one terminal and its peer sessions on one UDP socket, and
//! the glue between them that every driver needs, so drivers stay thin.
//!
//! - A [`TerminalEvent::SessionReady`] starts a [`PeerSession`] (up to
//!   [`MAX_SESSIONS`]; beyond that the session is ended at once, `Failed`).
//! - Datagrams are routed: from the trigger server to the terminal; peer
//!   packets (types `0x80..=0x8F`) to the session whose channel they name;
//!   anything else to the terminal, which counts it.
//! - After every input the endpoint reports each session's byte counts and
//!   whether its transfer is active to the terminal
//!   ([`Terminal::transfer_progress`], which decides the extension request
//!   at the threshold, S1504), applies granted extensions
//!   ([`TerminalEvent::SessionExtended`] → [`PeerSession::extend`]) and
//!   forced ends ([`TerminalEvent::SessionEnded`] while the peer session
//!   runs → [`PeerSession::close`] with the terminal's reason), and when a
//!   peer session ends, ends the terminal's session with its reason and
//!   final byte counts ([`Terminal::finish_session`], the end notification).
//!
//! The app reads and writes each session's payload through one
//! [`SessionIo`], told which session every call is for.

use core::net::SocketAddr;

use heapless::Deque;
use rand_core::{CryptoRng, RngCore};

use super::packet::{is_peer_packet, peek_channel, MAX_DATAGRAM_LEN};
use super::session::{PeerConfig, PeerEvent, PeerSession, SessionParams};
use super::transport::{PeerSink, StreamSource};
use crate::crypto::StaticKeypair;
use crate::machine::Destination;
use crate::terminal::{Terminal, TerminalConfig, TerminalEvent, MAX_SESSIONS};
use crate::time::{Clock, Instant};
use crate::wire::{EndReason, SessionId, MAX_MESSAGE_LEN};

/// Most events waiting for the app; beyond it the oldest is dropped
/// (counted in [`EndpointStats::events_dropped`]).
pub const MAX_QUEUED_ENDPOINT_EVENTS: usize = 32;
/// Size of the buffer [`Endpoint::poll_transmit`] needs: the largest
/// terminal message or peer datagram.
pub const ENDPOINT_BUF_LEN: usize = if MAX_MESSAGE_LEN > MAX_DATAGRAM_LEN {
    MAX_MESSAGE_LEN
} else {
    MAX_DATAGRAM_LEN
};

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

/// One message to send; its bytes are the first `len` of the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a transmit that is not sent is lost"]
pub struct EndpointTransmit {
    /// Where it goes: a UDP address, or the stream to the session server.
    pub destination: Destination,
    /// How many bytes of the buffer to send.
    pub len: usize,
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
        }
    }

    /// Starts registering (see [`Terminal::start`]).
    pub fn start(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        self.terminal.start(now);
        self.pump(now);
    }

    /// The terminal, for what the endpoint does not wrap (state, permissions).
    pub fn terminal(&self) -> &Terminal<R> {
        &self.terminal
    }

    /// The terminal, mutably: `connect`, `answer`, permission edits. Events
    /// such calls cause are picked up at the next input or [`Self::pump`].
    pub fn terminal_mut(&mut self) -> &mut Terminal<R> {
        &mut self.terminal
    }

    /// A running peer session, for its stream and datagrams.
    pub fn session(&self, id: &SessionId) -> Option<&PeerSession> {
        self.slots
            .iter()
            .flatten()
            .find(|s| s.id == *id)
            .map(|s| &s.session)
    }

    /// A running peer session, mutably (`stream_extend`, `stream_finish`,
    /// `send_datagram`).
    pub fn session_mut(&mut self, id: &SessionId) -> Option<&mut PeerSession> {
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

    /// Ends a session from the app (transfer done, cancelled): the peer
    /// session closes, then the terminal sends the end notification.
    pub fn close_session(&mut self, now: Instant, id: &SessionId, reason: EndReason) {
        let now = self.clock.observe(now);
        if let Some(session) = self.session_mut(id) {
            session.close(now, reason);
        }
        self.pump(now);
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
        io: &mut impl SessionIo,
    ) {
        let now = self.clock.observe(now);
        if from != self.terminal.config().trigger_server && is_peer_packet(datagram) {
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
        self.pump(now);
    }

    /// One whole message arrived from the session server.
    pub fn handle_upstream(&mut self, now: Instant, message: &[u8]) {
        let now = self.clock.observe(now);
        self.terminal.handle_upstream(now, message);
        self.pump(now);
    }

    /// The stream to the session server was lost.
    pub fn handle_upstream_closed(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        self.terminal.handle_upstream_closed(now);
        self.pump(now);
    }

    /// Runs every timer due at `now`, the terminal's and each session's.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        if self.terminal.poll_timeout().is_some_and(|t| t <= now) {
            self.terminal.handle_timeout(now);
        }
        for slot in self.slots.iter_mut().flatten() {
            if slot.session.poll_timeout().is_some_and(|t| t <= now) {
                slot.session.handle_timeout(now, &mut self.rng);
            }
        }
        self.pump(now);
    }

    // ----- output ------------------------------------------------------------

    /// Writes the next message into `buf` ([`ENDPOINT_BUF_LEN`] bytes holds
    /// any): the terminal's first, then the sessions' in turn.
    #[must_use]
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        io: &mut impl SessionIo,
    ) -> Option<EndpointTransmit> {
        let now = self.clock.observe(now);
        while let Some(t) = self.terminal.poll_transmit() {
            let len = t.payload.len();
            if let Some(out) = buf.get_mut(..len) {
                out.copy_from_slice(&t.payload);
                return Some(EndpointTransmit {
                    destination: t.destination,
                    len,
                });
            }
            self.stats.transmits_dropped += 1;
        }
        let mut found = None;
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
                found = Some(EndpointTransmit {
                    destination: Destination::Udp(to),
                    len,
                });
                break;
            }
        }
        // Sending may have ended a session (key spent) or raised events.
        self.pump(now);
        found
    }

    /// The next event for the app, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<EndpointEvent> {
        self.events.pop_front()
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

    /// Moves events between the terminal and the sessions; called after
    /// every input. Call it after using [`Self::terminal_mut`] or
    /// [`Self::session_mut`] to pick up what those calls caused.
    pub fn pump(&mut self, now: Instant) {
        let now = self.clock.observe(now);
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
                ..
            } => {
                let params = SessionParams {
                    session_id,
                    role,
                    peer_key,
                    peer_addr,
                    session_key,
                    duration_secs,
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
        let active = slot.session.transfer_active();
        let report = (sent, received, active && ended.is_none());
        let terminal_ended = slot.terminal_ended;
        if report != slot.reported && !terminal_ended {
            slot.reported = report;
            let _ = self
                .terminal
                .transfer_progress(&id, sent, received, report.2);
        }
        if let Some((reason, sent, received)) = ended {
            self.slots[i] = None;
            if !terminal_ended {
                let _ = self.terminal.transfer_progress(&id, sent, received, false);
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

#[cfg(test)]
mod tests;
