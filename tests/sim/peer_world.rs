//! The whole system with the direct path: both servers (real machines) and
//! terminals run as [`Endpoint`]s (terminal plus peer sessions on one
//! socket), on the simulated network with NATs. A smaller driver than
//! [`super::world::Sim`], which runs bare terminals: here every terminal's
//! socket carries keepalives, triggers and peer packets together, and the
//! endpoint's glue (progress, extension, forced end, end notifications) is
//! what is under test.
//!
//! The app of a terminal can be scripted to send a file when a session it
//! asked for is ready, and to close the session with `Completed` when the
//! peer acknowledged it all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tryst_core::crypto::StaticKeypair;
use tryst_core::machine::{ConnectionId, Destination, Transmit};
use tryst_core::names::{NameRegistry, TrustMode};
use tryst_core::peer::endpoint::{Endpoint, EndpointEvent, SessionIo, ENDPOINT_BUF_LEN};
use tryst_core::peer::session::{PeerConfig, PeerEvent};
use tryst_core::session_server::{SessionConfig, SessionEvent, SessionRecord, SessionServer};
use tryst_core::terminal::{TerminalConfig, TerminalEvent};
use tryst_core::time::Instant;
use tryst_core::trigger_server::{TriggerConfig, TriggerServer};
use tryst_core::wire::{EndReason, PublicKey, Role, SessionId};

use super::nat::NatConfig;
use super::net::{Direction, HostId, LinkConfig, NetEvent, Network, StreamId};
use super::world::{SimRng, SESSION_SERVER_ADDR, TRIGGER_SERVER_ADDR};

/// What a terminal's app sends and got, per session.
#[derive(Debug, Default)]
pub struct PeerApp {
    /// The file to send on the next session this terminal asked for.
    pub to_send: Option<Vec<u8>>,
    /// Outgoing stream bytes per session.
    pub outgoing: HashMap<SessionId, Vec<u8>>,
    /// Incoming stream bytes per session, placed by offset.
    pub incoming: HashMap<SessionId, Vec<u8>>,
}

impl SessionIo for PeerApp {
    fn read_at(&mut self, session: &SessionId, offset: u64, buf: &mut [u8]) -> usize {
        let Some(data) = self.outgoing.get(session) else {
            return 0;
        };
        let Some(rest) = usize::try_from(offset).ok().and_then(|o| data.get(o..)) else {
            return 0;
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        n
    }

    fn stream_data(&mut self, session: &SessionId, offset: u64, data: &[u8]) {
        let incoming = self.incoming.entry(*session).or_default();
        let start = usize::try_from(offset).expect("offsets fit in memory");
        if incoming.len() < start + data.len() {
            incoming.resize(start + data.len(), 0);
        }
        incoming[start..start + data.len()].copy_from_slice(data);
    }

    fn datagram(&mut self, _: &SessionId, _: &[u8]) {}
}

/// One terminal as an endpoint, with its app and what it reported.
pub struct EndpointNode {
    /// The endpoint.
    pub endpoint: Endpoint<SimRng>,
    /// Its name.
    pub name: String,
    /// Its host.
    pub host: HostId,
    /// Its stream to the session server.
    pub upstream: Option<StreamId>,
    /// The app.
    pub app: PeerApp,
    /// Every event, with its time.
    pub events: Vec<(Instant, EndpointEvent)>,
}

/// Which machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Ts,
    Ss,
    Term(usize),
}

/// Both servers and endpoint terminals on the simulated network.
pub struct PeerWorld {
    /// The network.
    pub net: Network,
    /// The virtual clock.
    pub now: Instant,
    rng: ChaCha8Rng,
    ts: TriggerServer<SimRng>,
    ts_host: HostId,
    /// The session server.
    pub ss: SessionServer<SimRng>,
    ss_key: PublicKey,
    ss_host: HostId,
    ss_upstream: Option<StreamId>,
    /// Every session server event, with its time.
    pub ss_events: Vec<(Instant, SessionEvent)>,
    /// The terminals.
    pub terms: Vec<EndpointNode>,
}

impl PeerWorld {
    /// Both servers with `session` as the session server's configuration.
    pub fn new(seed: u64, session: SessionConfig) -> PeerWorld {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut net = Network::new(rng.next_u64());
        let ts_host = net.add_public_host(TRIGGER_SERVER_ADDR, LinkConfig::clean());
        let ss_host = net.add_public_host(SESSION_SERVER_ADDR, LinkConfig::clean());
        let ts_keypair = StaticKeypair::generate(&mut rng);
        let ss_keypair = StaticKeypair::generate(&mut rng);
        let ts_key = ts_keypair.public_key();
        let ss_key = ss_keypair.public_key();
        let ts = TriggerServer::new(
            TriggerConfig::default(),
            ts_keypair,
            &[ss_keypair.public_key()],
            ChaCha8Rng::seed_from_u64(rng.next_u64()),
        );
        let ss = SessionServer::new(
            session,
            ss_keypair,
            ts_key,
            NameRegistry::new(TrustMode::TrustOnFirstUse),
            ChaCha8Rng::seed_from_u64(rng.next_u64()),
        );
        PeerWorld {
            net,
            now: Instant::from_micros(1_000_000),
            rng,
            ts,
            ts_host,
            ss,
            ss_key,
            ss_host,
            ss_upstream: None,
            ss_events: Vec::new(),
            terms: Vec::new(),
        }
    }

    /// Adds a terminal behind its own home NAT with uplink `link`, allowing
    /// `allow`, and starts it.
    pub fn add_terminal(&mut self, name: &str, allow: &[&str], link: LinkConfig) -> usize {
        let nat = self.net.add_nat(NatConfig::home(), link);
        let host = self.net.add_host_behind(nat);
        let keypair = StaticKeypair::generate(&mut self.rng);
        let config =
            TerminalConfig::new(name, TRIGGER_SERVER_ADDR, self.ss_key).expect("a valid name");
        let mut endpoint = Endpoint::new(
            config,
            keypair,
            ChaCha8Rng::seed_from_u64(self.rng.next_u64()),
            ChaCha8Rng::seed_from_u64(self.rng.next_u64()),
            PeerConfig::default(),
        );
        endpoint
            .terminal_mut()
            .set_permissions(allow)
            .expect("a valid list");
        let now = self.now;
        endpoint.start(now);
        self.terms.push(EndpointNode {
            endpoint,
            name: name.to_string(),
            host,
            upstream: None,
            app: PeerApp::default(),
            events: Vec::new(),
        });
        let t = self.terms.len() - 1;
        self.drain(Node::Term(t));
        t
    }

    fn next_time(&self) -> Option<Instant> {
        let timers = [self.ts.poll_timeout(), self.ss.poll_timeout()]
            .into_iter()
            .chain(self.terms.iter().map(|t| t.endpoint.poll_timeout()))
            .flatten();
        timers.chain(self.net.next_time()).min()
    }

    /// Runs until `until` or until `done` holds; whether it holds.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&PeerWorld) -> bool) -> bool {
        let until = self.now + limit;
        let mut at_same_instant = 0u64;
        loop {
            if done(self) {
                return true;
            }
            let Some(next) = self.next_time().filter(|&t| t <= until) else {
                break;
            };
            if next > self.now {
                self.now = next;
                at_same_instant = 0;
            }
            at_same_instant += 1;
            assert!(
                at_same_instant < 1_000_000,
                "the run spins at {:?}",
                self.now
            );
            let now = self.now;
            if self.net.next_time().is_some_and(|t| t <= now) {
                if let Some((_, event)) = self.net.pop_due(now) {
                    self.deliver(event);
                }
                continue;
            }
            if self.ts.poll_timeout().is_some_and(|t| t <= now) {
                self.ts.handle_timeout(now);
                self.drain(Node::Ts);
            }
            if self.ss.poll_timeout().is_some_and(|t| t <= now) {
                self.ss.handle_timeout(now);
                self.drain(Node::Ss);
            }
            for t in 0..self.terms.len() {
                if self.terms[t]
                    .endpoint
                    .poll_timeout()
                    .is_some_and(|x| x <= now)
                {
                    self.terms[t].endpoint.handle_timeout(now);
                    self.drain(Node::Term(t));
                }
            }
        }
        if until > self.now {
            self.now = until;
        }
        done(self)
    }

    fn deliver(&mut self, event: NetEvent) {
        let now = self.now;
        let term_of = |w: &PeerWorld, host: HostId| w.terms.iter().position(|t| t.host == host);
        match event {
            NetEvent::Datagram {
                host,
                from,
                mut payload,
                ..
            } => {
                if host == self.ts_host {
                    self.ts.handle_udp(now, from, &payload);
                    self.drain(Node::Ts);
                } else if let Some(t) = term_of(self, host) {
                    let node = &mut self.terms[t];
                    node.endpoint
                        .handle_udp(now, from, &mut payload, &mut node.app);
                    self.drain(Node::Term(t));
                }
            }
            NetEvent::StreamOpened {
                stream,
                server,
                remote,
            } => {
                let conn = ConnectionId(stream);
                if server == self.ts_host {
                    self.ts.handle_connection_opened(now, conn, remote);
                    self.drain(Node::Ts);
                } else if server == self.ss_host {
                    self.ss.handle_connection_opened(now, conn, remote);
                    self.drain(Node::Ss);
                }
            }
            NetEvent::StreamMessage {
                stream,
                host,
                direction,
                payload,
            } => {
                let conn = ConnectionId(stream);
                if host == self.ts_host && direction == Direction::ToServer {
                    self.ts.handle_stream(now, conn, &payload);
                    self.drain(Node::Ts);
                } else if host == self.ss_host && direction == Direction::ToServer {
                    self.ss.handle_stream(now, conn, &payload);
                    self.drain(Node::Ss);
                } else if host == self.ss_host && self.ss_upstream == Some(stream) {
                    self.ss.handle_upstream(now, &payload);
                    self.drain(Node::Ss);
                } else if let Some(t) = term_of(self, host) {
                    if self.terms[t].upstream == Some(stream) {
                        self.terms[t].endpoint.handle_upstream(now, &payload);
                        self.drain(Node::Term(t));
                    }
                }
            }
            NetEvent::StreamClosed {
                stream,
                host,
                direction,
            } => {
                let conn = ConnectionId(stream);
                if host == self.ts_host && direction == Direction::ToServer {
                    self.ts.handle_connection_closed(now, conn);
                    self.drain(Node::Ts);
                } else if host == self.ss_host && direction == Direction::ToServer {
                    self.ss.handle_connection_closed(now, conn);
                    self.drain(Node::Ss);
                } else if host == self.ss_host && self.ss_upstream == Some(stream) {
                    self.ss_upstream = None;
                    self.ss.handle_upstream_closed(now);
                    self.drain(Node::Ss);
                } else if let Some(t) = term_of(self, host) {
                    if self.terms[t].upstream == Some(stream) {
                        self.terms[t].upstream = None;
                        self.terms[t].endpoint.handle_upstream_closed(now);
                        self.drain(Node::Term(t));
                    }
                }
            }
        }
    }

    fn drain(&mut self, node: Node) {
        let now = self.now;
        match node {
            Node::Ts => {
                while let Some(t) = self.ts.poll_transmit() {
                    self.route_server(self.ts_host, t);
                }
                while self.ts.poll_event().is_some() {}
            }
            Node::Ss => {
                while let Some(t) = self.ss.poll_transmit() {
                    self.route_server(self.ss_host, t);
                }
                while let Some(e) = self.ss.poll_event() {
                    if let SessionEvent::CloseConnection(conn) = e {
                        self.net.close_stream(now, conn.0, Direction::ToClient);
                    }
                    self.ss_events.push((now, e));
                }
            }
            Node::Term(t) => {
                let mut buf = vec![0u8; ENDPOINT_BUF_LEN];
                // Events first may make the app queue a stream.
                for _ in 0..2 {
                    self.app_events(t);
                    loop {
                        let node = &mut self.terms[t];
                        let Some(tx) = node.endpoint.poll_transmit(now, &mut buf, &mut node.app)
                        else {
                            break;
                        };
                        let bytes = &buf[..tx.len];
                        match tx.destination {
                            Destination::Udp(to) => {
                                let host = self.terms[t].host;
                                self.net.send_datagram(now, host, to, bytes);
                            }
                            Destination::Upstream => {
                                let host = self.terms[t].host;
                                let stream = match self.terms[t].upstream {
                                    Some(s) if self.net.stream_open(s, Direction::ToServer) => s,
                                    _ => {
                                        let s = self.net.open_stream(now, host, self.ss_host);
                                        self.terms[t].upstream = Some(s);
                                        s
                                    }
                                };
                                let _ =
                                    self.net
                                        .stream_send(now, stream, Direction::ToServer, bytes);
                            }
                            Destination::Connection(_) => {}
                        }
                    }
                }
                self.app_events(t);
            }
        }
    }

    /// The scripted app: sends its file on a session it asked for, and
    /// closes it with `Completed` once the peer acknowledged it all.
    fn app_events(&mut self, t: usize) {
        let now = self.now;
        let node = &mut self.terms[t];
        while let Some(event) = node.endpoint.poll_event() {
            match &event {
                EndpointEvent::Terminal(TerminalEvent::SessionReady {
                    session_id,
                    role: Role::Connecting,
                    ..
                }) => {
                    if let Some(file) = node.app.to_send.take() {
                        let len = file.len() as u64;
                        node.app.outgoing.insert(*session_id, file);
                        if let Some(s) = node.endpoint.session_mut(session_id) {
                            s.stream_extend(len);
                            let _ = s.stream_finish(len);
                        }
                    }
                }
                EndpointEvent::Peer {
                    session_id,
                    event: PeerEvent::StreamAcked { .. },
                } => {
                    node.endpoint
                        .close_session(now, session_id, EndReason::Completed);
                }
                _ => {}
            }
            node.events.push((now, event));
        }
    }

    fn route_server(&mut self, host: HostId, t: Transmit) {
        let now = self.now;
        let payload = t.payload.as_slice();
        match t.destination {
            Destination::Udp(to) => self.net.send_datagram(now, host, to, payload),
            Destination::Connection(conn) => {
                let _ = self
                    .net
                    .stream_send(now, conn.0, Direction::ToClient, payload);
            }
            Destination::Upstream => {
                let stream = match self.ss_upstream {
                    Some(s) if self.net.stream_open(s, Direction::ToServer) => s,
                    _ => {
                        let s = self.net.open_stream(now, self.ss_host, self.ts_host);
                        self.ss_upstream = Some(s);
                        s
                    }
                };
                let _ = self
                    .net
                    .stream_send(now, stream, Direction::ToServer, payload);
            }
        }
    }

    /// Whether every terminal is registered and knows its public address.
    pub fn all_online(&self) -> bool {
        self.terms.iter().all(|t| {
            t.endpoint.terminal().is_registered() && t.endpoint.terminal().observed_addr().is_some()
        })
    }

    /// The session server's final records.
    pub fn records(&self) -> Vec<&SessionRecord> {
        self.ss_events
            .iter()
            .filter_map(|(_, e)| match e {
                SessionEvent::SessionRecord(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// The peer events of terminal `t`.
    pub fn peer_events(&self, t: usize) -> Vec<(Instant, PeerEvent)> {
        self.terms[t]
            .events
            .iter()
            .filter_map(|(at, e)| match e {
                EndpointEvent::Peer { event, .. } => Some((*at, *event)),
                _ => None,
            })
            .collect()
    }

    /// The terminal events of terminal `t`.
    pub fn terminal_events(&self, t: usize) -> Vec<(Instant, TerminalEvent)> {
        self.terms[t]
            .events
            .iter()
            .filter_map(|(at, e)| match e {
                EndpointEvent::Terminal(event) => Some((*at, event.clone())),
                _ => None,
            })
            .collect()
    }

    /// The session IDs terminal `t` was told of.
    pub fn sessions_of(&self, t: usize) -> Vec<SessionId> {
        self.terminal_events(t)
            .into_iter()
            .filter_map(|(_, e)| match e {
                TerminalEvent::SessionReady { session_id, .. } => Some(session_id),
                _ => None,
            })
            .collect()
    }

    /// Asks, from terminal `from`, for a session with `target`.
    pub fn connect(&mut self, from: usize, target: &str, duration_secs: u32) -> u32 {
        let now = self.now;
        let id = self.terms[from]
            .endpoint
            .terminal_mut()
            .connect(now, target, duration_secs)
            .expect("registered");
        self.terms[from].endpoint.pump(now);
        self.drain(Node::Term(from));
        id
    }

    /// The operator ends a session (S1604).
    pub fn operator_end(&mut self, session_id: SessionId) {
        let now = self.now;
        self.ss
            .end_session(now, session_id)
            .expect("a running session");
        self.drain(Node::Ss);
    }

    /// A terminal's public address as the trigger server would see it.
    pub fn public_addr(&self, t: usize) -> Option<SocketAddr> {
        self.net
            .public_addr_of(self.now, self.terms[t].host, TRIGGER_SERVER_ADDR)
    }
}
