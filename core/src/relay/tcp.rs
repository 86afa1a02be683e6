//! The relay over TCP: [`RelayFront`] puts the relay machine
//! ([`super::server::Relay`]) behind both a UDP socket and a TCP listener,
//! so a peer on a network that drops all UDP still reaches its session.
//!
//! A TCP connection carries the very packets a peer sends over UDP, each a
//! frame of [`super::framing`] (the driver reassembles them with
//! [`super::framing::RelayFrameBuffer`] and hands each packet in as an
//! [`Input::ConnectionMessage`]). Inside, a connection stands for one
//! address the relay machine forwards to and from: an address in the IPv6
//! discard-only prefix `100::/64` (RFC 6666) whose low 64 bits are the
//! connection's number, with port 0. No real datagram comes from there
//! (any that claims to is dropped), so the allocations, byte counts,
//! rates, durations and forced ends are the relay machine's own, the same
//! for both transports; only the framing differs. A packet forwarded to a
//! connection leaves framed.
//!
//! # Limits
//! - At most [`TcpLimits::max_connections`] connections, and at most
//!   [`TcpLimits::max_per_ip`] from one IP address: one host's flood of
//!   connections cannot take the others' slots. A connection over either
//!   cap is closed at once.
//! - A connection's first packet must be a valid bind, within
//!   [`TcpLimits::bind_timeout`] of its opening; anything else (a bad or
//!   refused bind, a peer packet before a bind, a bind for another
//!   session later) closes it. Until then it holds only its entry here.
//! - A connection whose allocation ends (duration, forced end, byte
//!   budget, idle) is closed.

use alloc::collections::{BTreeMap, VecDeque};
use core::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use core::time::Duration;

use super::framing::{encode_frame, RELAY_FRAME_HEADER_LEN};
use super::queue::ForwardQueue;
use super::server::{Relay, RelayConfig, RelayEvent};
use super::{is_bind, RELAY_BIND_LEN};
use crate::machine::{ConnectionId, Destination, Input, Machine, Output};
use crate::peer::packet::MAX_DATAGRAM_LEN;
use crate::time::{Clock, Instant};
use crate::wire::{SessionId, SESSION_ID_LEN};

/// Default most TCP connections at once.
pub const DEFAULT_MAX_TCP_CONNECTIONS: usize = 256;
/// Default most TCP connections from one IP address.
pub const DEFAULT_MAX_TCP_PER_IP: usize = 8;
/// Default time a TCP connection has to send a valid bind.
pub const DEFAULT_TCP_BIND_TIMEOUT: Duration = Duration::from_secs(5);
/// Most UDP sides whose local address is remembered (to answer from it).
const MAX_REMEMBERED_LOCALS: usize = 4096;

/// The relay's TCP limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Most connections at once.
    pub max_connections: usize,
    /// Most connections from one IP address.
    pub max_per_ip: usize,
    /// A connection without a valid bind this long after opening closes.
    pub bind_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: DEFAULT_MAX_TCP_CONNECTIONS,
            max_per_ip: DEFAULT_MAX_TCP_PER_IP,
            bind_timeout: DEFAULT_TCP_BIND_TIMEOUT,
        }
    }
}

/// TCP counters for the operator's log and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Connections taken.
    pub accepted: u64,
    /// Connections closed at once: over the cap or the per-IP cap.
    pub refused: u64,
    /// Connections closed for a missing, bad or refused bind.
    pub closed_unbound: u64,
    /// Connections closed because their allocation ended.
    pub closed_ended: u64,
    /// Datagrams dropped that claimed a connection's internal address.
    pub spoofed: u64,
}

#[derive(Debug)]
struct Conn {
    remote: SocketAddr,
    opened: Instant,
    /// The session its bind named, once one was taken.
    bound: Option<SessionId>,
}

/// The first 64 bits of the internal addresses: `100::/64` (RFC 6666).
const DISCARD_PREFIX: u64 = 0x0100_0000_0000_0000;

/// The internal address that stands for connection `conn`.
pub fn stream_addr(conn: ConnectionId) -> SocketAddr {
    let bits = (u128::from(DISCARD_PREFIX) << 64) | u128::from(conn.0);
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(bits), 0, 0, 0))
}

/// The connection an internal address stands for, if it is one.
pub fn stream_of(addr: SocketAddr) -> Option<ConnectionId> {
    match addr {
        SocketAddr::V6(v6) if v6.port() == 0 => {
            let bits = u128::from(*v6.ip());
            ((bits >> 64) as u64 == DISCARD_PREFIX).then_some(ConnectionId(bits as u64))
        }
        _ => None,
    }
}

/// The relay behind a UDP socket and a TCP listener. See the
/// [module](self) docs.
#[derive(Debug)]
pub struct RelayFront {
    relay: Relay,
    limits: TcpLimits,
    clock: Clock,
    conns: BTreeMap<ConnectionId, Conn>,
    /// The local address each bound UDP side last sent to.
    locals: BTreeMap<SocketAddr, IpAddr>,
    closes: VecDeque<ConnectionId>,
    events: VecDeque<RelayEvent>,
    tcp: TcpStats,
    /// The transmits the inputs since the last poll asked for, in order
    /// (a driver feeds a whole receive batch before it polls).
    pending: ForwardQueue,
}

impl RelayFront {
    /// A relay with no allocations and no connections.
    pub fn new(config: RelayConfig, limits: TcpLimits) -> RelayFront {
        RelayFront {
            relay: Relay::new(config),
            limits,
            clock: Clock::default(),
            conns: BTreeMap::new(),
            locals: BTreeMap::new(),
            closes: VecDeque::new(),
            events: VecDeque::new(),
            tcp: TcpStats::default(),
            pending: ForwardQueue::new(),
        }
    }

    /// The relay machine inside (allocations, counters, extensions, ends).
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// The session server ended the session (forced end or record): its
    /// allocation ends now, its connections close, and the end's event (with
    /// the byte counts for the record) is ready at the next `poll_output`.
    pub fn end_session(&mut self, session_id: &SessionId) {
        self.relay.end_session(session_id);
        self.take_events();
    }

    /// The session server extended the session to `duration_secs` in all
    /// (see [`Relay::extend`]).
    pub fn extend(&mut self, session_id: &SessionId, duration_secs: u32) {
        self.relay.extend(session_id, duration_secs);
        self.take_events();
    }

    /// TCP counters so far.
    pub fn tcp_stats(&self) -> &TcpStats {
        &self.tcp
    }

    /// TCP connections now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    fn close(&mut self, conn: ConnectionId) {
        if self.conns.remove(&conn).is_some() {
            self.pending.forget(Destination::Connection(conn));
            self.closes.push_back(conn);
        }
    }

    fn on_opened(&mut self, now: Instant, conn: ConnectionId, remote: SocketAddr) {
        let from_ip = self
            .conns
            .values()
            .filter(|c| c.remote.ip() == remote.ip())
            .count();
        if self.conns.len() >= self.limits.max_connections
            || from_ip >= self.limits.max_per_ip
            || self.conns.contains_key(&conn)
        {
            self.tcp.refused += 1;
            self.closes.push_back(conn);
            return;
        }
        self.tcp.accepted += 1;
        self.conns.insert(
            conn,
            Conn {
                remote,
                opened: now,
                bound: None,
            },
        );
    }

    fn on_message(&mut self, now: Instant, conn: ConnectionId, bytes: &[u8]) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let bound = c.bound;
        let from = stream_addr(conn);
        if is_bind(bytes) {
            let session = bind_session(bytes);
            let before = self.relay.stats().binds;
            let _ = self.relay.handle_datagram(now, from, bytes);
            let taken = self.relay.stats().binds > before;
            // A connection carries one session: a bind for another ends it.
            if !taken || session.is_none() || bound.is_some_and(|s| Some(s) != session) {
                self.tcp.closed_unbound += 1;
                self.close(conn);
                return;
            }
            if let Some(c) = self.conns.get_mut(&conn) {
                c.bound = session;
            }
            return;
        }
        if bound.is_none() {
            self.tcp.closed_unbound += 1;
            self.close(conn);
            return;
        }
        if let Some(to) = self.relay.handle_datagram(now, from, bytes) {
            self.queue_forward(to, bytes, None);
        }
    }

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, local: Option<IpAddr>, bytes: &[u8]) {
        if stream_of(from).is_some() {
            self.tcp.spoofed += 1;
            return;
        }
        let before = self.relay.stats().binds;
        let to = self.relay.handle_datagram(now, from, bytes);
        if self.relay.stats().binds > before {
            self.remember_local(from, local);
        }
        if let Some(to) = to {
            if stream_of(to).is_some() {
                // Only a bound side's packets are forwarded.
                self.remember_local(from, local);
            }
            self.queue_forward(to, bytes, Some(local));
        }
    }

    fn remember_local(&mut self, from: SocketAddr, local: Option<IpAddr>) {
        let Some(local) = local else {
            return;
        };
        if self.locals.len() >= MAX_REMEMBERED_LOCALS && !self.locals.contains_key(&from) {
            self.locals.pop_first();
        }
        self.locals.insert(from, local);
    }

    /// Queues `bytes` for `to`: framed for a connection; from `arrival`
    /// (the local address the packet came to) for a UDP side when given,
    /// else from the one that side last sent to.
    fn queue_forward(&mut self, to: SocketAddr, bytes: &[u8], arrival: Option<Option<IpAddr>>) {
        match stream_of(to) {
            Some(conn) => {
                if !self.conns.contains_key(&conn) {
                    return;
                }
                // Peer packets are at most MAX_DATAGRAM_LEN: this fits.
                let mut frame = [0u8; MAX_DATAGRAM_LEN + RELAY_FRAME_HEADER_LEN];
                let Some(n) = encode_frame(bytes, &mut frame) else {
                    return;
                };
                let _ = self
                    .pending
                    .push(Destination::Connection(conn), None, &[&frame[..n]]);
            }
            None => {
                let local = arrival.unwrap_or_else(|| self.locals.get(&to).copied());
                let _ = self.pending.push(Destination::Udp(to), local, &[bytes]);
            }
        }
    }

    /// Moves the relay machine's events out, closing the connections of
    /// allocations that ended.
    fn take_events(&mut self) {
        while let Some(event) = self.relay.poll_event() {
            if let RelayEvent::Ended { session_id, .. } = event {
                let done: alloc::vec::Vec<ConnectionId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.bound == Some(session_id))
                    .map(|(&id, _)| id)
                    .collect();
                for conn in done {
                    self.tcp.closed_ended += 1;
                    self.close(conn);
                }
            }
            self.events.push_back(event);
        }
    }

    fn next_bind_deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter(|c| c.bound.is_none())
            .map(|c| c.opened.saturating_add(self.limits.bind_timeout))
            .min()
    }
}

/// The session a bind packet names (not checked: the relay checks it).
fn bind_session(bytes: &[u8]) -> Option<SessionId> {
    let id = bytes.get(14..14 + SESSION_ID_LEN)?;
    if bytes.len() != RELAY_BIND_LEN {
        return None;
    }
    let mut session = [0u8; SESSION_ID_LEN];
    session.copy_from_slice(id);
    Some(SessionId(session))
}

/// The relay in the driver contract: datagrams and accepted connections
/// in; at most one transmit (the same packet, framed for a connection),
/// closes and events out; no facts.
impl Machine for RelayFront {
    type Fact = core::convert::Infallible;
    type Event = RelayEvent;
    type Io = ();

    fn handle_input(&mut self, now: Instant, input: Input<'_>, _io: &mut ()) {
        let now = self.clock.observe(now);
        match input {
            Input::Datagram { from, local, bytes } => self.on_datagram(now, from, local, bytes),
            Input::ConnectionOpened { conn, remote } => self.on_opened(now, conn, remote),
            Input::ConnectionMessage { conn, bytes } => self.on_message(now, conn, bytes),
            Input::ConnectionClosed(conn) => {
                self.conns.remove(&conn);
                self.pending.forget(Destination::Connection(conn));
            }
            Input::UpstreamMessage(_) | Input::UpstreamClosed => {}
        }
        self.take_events();
    }

    fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        self.relay.handle_timeout(now);
        let bind_timeout = self.limits.bind_timeout;
        let late: alloc::vec::Vec<ConnectionId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.bound.is_none() && now >= c.opened.saturating_add(bind_timeout))
            .map(|(&id, _)| id)
            .collect();
        for conn in late {
            self.tcp.closed_unbound += 1;
            self.close(conn);
        }
        self.take_events();
    }

    fn poll_output(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        _io: &mut (),
    ) -> Output<core::convert::Infallible, RelayEvent> {
        if let Some(conn) = self.closes.pop_front() {
            return Output::Close(conn);
        }
        if let Some(event) = self.events.pop_front() {
            return Output::Event(event);
        }
        if let Some(transmit) = self.pending.pop(buf) {
            return Output::Transmit(transmit);
        }
        // The packets that waited for their session's rate and may leave.
        let mut packet = [0u8; MAX_DATAGRAM_LEN];
        while let Some((to, len)) = self.relay.poll_release(now, &mut packet) {
            self.queue_forward(to, &packet[..len], None);
            if let Some(transmit) = self.pending.pop(buf) {
                return Output::Transmit(transmit);
            }
        }
        Output::Timeout(Machine::poll_timeout(self))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match (self.relay.poll_timeout(), self.next_bind_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::packet::Packet;
    use crate::relay::framing::RelayFrameBuffer;
    use crate::relay::{encode_bind, RelayKey, RelayToken, RELAY_KEY_LEN};
    use crate::wire::Role;
    use std::vec::Vec;

    const HOME: &str = "198.51.100.2:5000";
    const PHONE_IP: &str = "192.0.2.1:40000";
    const SID: SessionId = SessionId([9; 16]);
    const UNIX0: u64 = 1_000_000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn key() -> RelayKey {
        RelayKey([1; RELAY_KEY_LEN])
    }

    fn bind(session_id: SessionId, role: Role) -> Vec<u8> {
        let token = RelayToken::mint(&key(), session_id, role, (UNIX0 + 100) as u32, 60);
        let mut buf = [0u8; RELAY_BIND_LEN];
        let _ = encode_bind(&token, &mut buf);
        buf.to_vec()
    }

    fn probe(session_id: &SessionId, seq: u32) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let n = Packet::Probe {
            channel: crate::peer::handshake::channel_id(session_id),
            seq,
        }
        .encode(&mut buf)
        .unwrap();
        buf[..n].to_vec()
    }

    fn front(limits: TcpLimits) -> RelayFront {
        RelayFront::new(RelayConfig::new(key(), UNIX0), limits)
    }

    fn t(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    /// What one input caused: closes, and transmits with their bytes.
    #[derive(Debug, Default, PartialEq)]
    struct Out {
        closes: Vec<ConnectionId>,
        sent: Vec<(Destination, Vec<u8>)>,
    }

    fn feed(r: &mut RelayFront, now: Instant, input: Input<'_>) -> Out {
        Machine::handle_input(r, now, input, &mut ());
        drain(r, now)
    }

    fn drain(r: &mut RelayFront, now: Instant) -> Out {
        let mut buf = [0u8; crate::machine::MAX_TRANSMIT_LEN];
        let mut out = Out::default();
        loop {
            match Machine::poll_output(r, now, &mut buf, &mut ()) {
                Output::Close(c) => out.closes.push(c),
                Output::Transmit(tx) => out.sent.push((tx.destination, buf[..tx.len].to_vec())),
                Output::Timeout(_) => return out,
                _ => {}
            }
        }
    }

    fn udp(r: &mut RelayFront, now: Instant, from: &str, bytes: &[u8]) -> Out {
        let mut bytes = bytes.to_vec();
        feed(
            r,
            now,
            Input::Datagram {
                from: addr(from),
                local: Some("203.0.113.1".parse().unwrap()),
                bytes: &mut bytes,
            },
        )
    }

    fn open(r: &mut RelayFront, now: Instant, conn: u64, remote: &str) -> Out {
        feed(
            r,
            now,
            Input::ConnectionOpened {
                conn: ConnectionId(conn),
                remote: addr(remote),
            },
        )
    }

    fn tcp(r: &mut RelayFront, now: Instant, conn: u64, bytes: &[u8]) -> Out {
        feed(
            r,
            now,
            Input::ConnectionMessage {
                conn: ConnectionId(conn),
                bytes,
            },
        )
    }

    fn unframe(frame: &[u8]) -> Vec<u8> {
        let mut fb = RelayFrameBuffer::new();
        let mut input = frame;
        let packet = fb.push(&mut input).unwrap().unwrap().to_vec();
        assert!(input.is_empty());
        packet
    }

    #[test]
    fn relay_tcp_side_and_udp_side_forward_to_each_other() {
        let mut r = front(TcpLimits::default());
        assert_eq!(open(&mut r, t(0), 1, PHONE_IP), Out::default());
        assert_eq!(
            tcp(&mut r, t(0), 1, &bind(SID, Role::Connecting)),
            Out::default()
        );
        assert!(udp(&mut r, t(0), HOME, &bind(SID, Role::Connected))
            .sent
            .is_empty());
        // Phone (TCP) to home (UDP): the same bytes, from the local address
        // the home sent to.
        let p = probe(&SID, 1);
        let out = tcp(&mut r, t(1), 1, &p);
        assert_eq!(
            out.sent,
            std::vec![(Destination::Udp(addr(HOME)), p.clone())]
        );
        assert!(r.pending.is_empty());
        // Home (UDP) to phone (TCP): framed.
        let q = probe(&SID, 2);
        let out = udp(&mut r, t(2), HOME, &q);
        assert_eq!(out.sent.len(), 1);
        assert_eq!(out.sent[0].0, Destination::Connection(ConnectionId(1)));
        assert_eq!(unframe(&out.sent[0].1), q);
        // Both directions are the relay machine's counts.
        assert_eq!(
            r.relay().stats().forwarded_bytes,
            (p.len() + q.len()) as u64
        );
    }

    /// A datagram from the home side in, not polled (one of a batch).
    fn put(r: &mut RelayFront, now: Instant, packet: &[u8]) {
        let mut bytes = packet.to_vec();
        let input = Input::Datagram {
            from: addr(HOME),
            local: None,
            bytes: &mut bytes,
        };
        Machine::handle_input(r, now, input, &mut ());
    }

    #[test]
    fn relay_forwards_every_packet_of_a_receive_batch_polled_once() {
        // A driver feeds a whole recvmmsg/GRO batch, then polls: every
        // packet of it leaves, in order (a single output slot kept only
        // the last one and dropped the rest, counted as forwarded).
        let mut r = front(TcpLimits::default());
        let _ = open(&mut r, t(0), 1, PHONE_IP);
        let _ = tcp(&mut r, t(0), 1, &bind(SID, Role::Connecting));
        let _ = udp(&mut r, t(0), HOME, &bind(SID, Role::Connected));
        let packets: Vec<Vec<u8>> = (1..=40).map(|seq| probe(&SID, seq)).collect();
        for p in &packets {
            put(&mut r, t(1), p);
        }
        let out = drain(&mut r, t(1));
        let sent: Vec<Vec<u8>> = out.sent.iter().map(|(_, f)| unframe(f)).collect();
        assert_eq!(sent, packets);
        assert!(out
            .sent
            .iter()
            .all(|(d, _)| *d == Destination::Connection(ConnectionId(1))));
        // A connection that closes takes its waiting forwards with it.
        for p in &packets[..3] {
            put(&mut r, t(2), p);
        }
        Machine::handle_input(
            &mut r,
            t(2),
            Input::ConnectionClosed(ConnectionId(1)),
            &mut (),
        );
        assert_eq!(drain(&mut r, t(2)), Out::default());
    }

    #[test]
    fn relay_tcp_answers_from_the_local_address_the_udp_side_used() {
        let mut r = front(TcpLimits::default());
        let _ = open(&mut r, t(0), 1, PHONE_IP);
        let _ = tcp(&mut r, t(0), 1, &bind(SID, Role::Connecting));
        let _ = udp(&mut r, t(0), HOME, &bind(SID, Role::Connected));
        Machine::handle_input(
            &mut r,
            t(1),
            Input::ConnectionMessage {
                conn: ConnectionId(1),
                bytes: &probe(&SID, 1),
            },
            &mut (),
        );
        let mut buf = [0u8; crate::machine::MAX_TRANSMIT_LEN];
        match Machine::poll_output(&mut r, t(1), &mut buf, &mut ()) {
            Output::Transmit(tx) => assert_eq!(tx.local, Some("203.0.113.1".parse().unwrap())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn relay_tcp_without_a_valid_bind_is_closed_and_keeps_nothing() {
        let mut r = front(TcpLimits::default());
        // A peer packet before any bind.
        let _ = open(&mut r, t(0), 1, PHONE_IP);
        let out = tcp(&mut r, t(0), 1, &probe(&SID, 1));
        assert_eq!(out.closes, std::vec![ConnectionId(1)]);
        // A forged bind.
        let _ = open(&mut r, t(0), 2, PHONE_IP);
        let mut forged = bind(SID, Role::Connecting);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            tcp(&mut r, t(0), 2, &forged).closes,
            std::vec![ConnectionId(2)]
        );
        // Silence: closed at the bind timeout, not before.
        let _ = open(&mut r, t(0), 3, PHONE_IP);
        assert_eq!(Machine::poll_timeout(&r), Some(t(5_000)));
        Machine::handle_timeout(&mut r, t(4_999));
        assert!(drain(&mut r, t(4_999)).closes.is_empty());
        Machine::handle_timeout(&mut r, t(5_000));
        assert_eq!(drain(&mut r, t(5_000)).closes, std::vec![ConnectionId(3)]);
        assert_eq!(r.connections(), 0);
        assert_eq!(r.relay().allocations(), 0);
        assert_eq!(r.tcp_stats().closed_unbound, 3);
        assert_eq!(Machine::poll_timeout(&r), None);
    }

    #[test]
    fn relay_tcp_caps_connections_overall_and_per_ip() {
        let mut r = front(TcpLimits {
            max_connections: 3,
            max_per_ip: 2,
            bind_timeout: DEFAULT_TCP_BIND_TIMEOUT,
        });
        assert!(open(&mut r, t(0), 1, "192.0.2.1:1").closes.is_empty());
        assert!(open(&mut r, t(0), 2, "192.0.2.1:2").closes.is_empty());
        // The flooding host's third is refused; another host still gets in.
        assert_eq!(
            open(&mut r, t(0), 3, "192.0.2.1:3").closes,
            std::vec![ConnectionId(3)]
        );
        assert!(open(&mut r, t(0), 4, "192.0.2.7:1").closes.is_empty());
        // The relay is full now.
        assert_eq!(
            open(&mut r, t(0), 5, "192.0.2.8:1").closes,
            std::vec![ConnectionId(5)]
        );
        assert_eq!(r.tcp_stats().refused, 2);
        // A closed connection frees its slot.
        let _ = feed(&mut r, t(0), Input::ConnectionClosed(ConnectionId(1)));
        assert!(open(&mut r, t(0), 6, "192.0.2.1:4").closes.is_empty());
    }

    #[test]
    fn relay_tcp_forced_end_closes_the_connection() {
        let mut r = front(TcpLimits::default());
        let _ = open(&mut r, t(0), 1, PHONE_IP);
        let _ = tcp(&mut r, t(0), 1, &bind(SID, Role::Connecting));
        let _ = udp(&mut r, t(0), HOME, &bind(SID, Role::Connected));
        r.end_session(&SID);
        // Closed at once, before any timeout runs.
        let out = drain(&mut r, t(1));
        assert_eq!(out.closes, std::vec![ConnectionId(1)]);
        assert_eq!(r.tcp_stats().closed_ended, 1);
        // Nothing reaches the closed connection.
        assert!(udp(&mut r, t(2), HOME, &probe(&SID, 3)).sent.is_empty());
    }

    #[test]
    fn relay_tcp_bind_for_another_session_closes_the_connection() {
        let mut r = front(TcpLimits::default());
        let _ = open(&mut r, t(0), 1, PHONE_IP);
        let _ = tcp(&mut r, t(0), 1, &bind(SID, Role::Connecting));
        let other = SessionId([4; 16]);
        assert_eq!(
            tcp(&mut r, t(0), 1, &bind(other, Role::Connecting)).closes,
            std::vec![ConnectionId(1)]
        );
    }

    #[test]
    fn relay_drops_datagrams_that_claim_a_connections_address() {
        let mut r = front(TcpLimits::default());
        let _ = open(&mut r, t(0), 1, PHONE_IP);
        let _ = tcp(&mut r, t(0), 1, &bind(SID, Role::Connecting));
        let _ = udp(&mut r, t(0), HOME, &bind(SID, Role::Connected));
        let mut p = probe(&SID, 1);
        let out = feed(
            &mut r,
            t(1),
            Input::Datagram {
                from: stream_addr(ConnectionId(1)),
                local: None,
                bytes: &mut p,
            },
        );
        assert_eq!(out, Out::default());
        assert_eq!(r.tcp_stats().spoofed, 1);
    }

    #[test]
    fn relay_stream_addresses_round_trip_and_real_ones_are_not_streams() {
        for id in [0, 1, u64::MAX] {
            assert_eq!(
                stream_of(stream_addr(ConnectionId(id))),
                Some(ConnectionId(id))
            );
        }
        assert_eq!(stream_of(addr(HOME)), None);
        assert_eq!(stream_of(addr("[100::1]:5")), None);
        assert_eq!(stream_of(addr("[2001:db8::1]:0")), None);
    }
}
