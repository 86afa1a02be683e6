//! The whole system on the simulated network: one trigger server, one
//! session server and any number of terminals behind NATs, each terminal an
//! [`Endpoint`] (the terminal that ships: its registration, keepalives and
//! peer sessions on one socket), driven by a virtual clock through the
//! [`tryst_core::machine::Machine`] trait only.
//!
//! # The loop
//!
//! [`Sim::step`] takes the earliest of (the next network delivery, the
//! earliest machine timeout), moves the clock there, and feeds that one
//! input to its machine; network deliveries go first on a tie. After every
//! input (and every app or operator call) the machine is drained by the one
//! generic [`drive`] function, and [`Sim::act`] acts on what came out: a
//! fact is committed to the [`Store`], a close closes the stream, an event
//! is logged (and seen by the scripted app), a transmit is routed onto the
//! network by [`Sim::route`], the one routing function of every role. A
//! machine that, right after `handle_timeout(now)`, asks to be woken at or
//! before `now` fails the run (it would make a real driver spin).
//!
//! # Durability
//!
//! The session server's driver commits each fact when it comes out, before
//! the transmits after it ([`DriverOrder::StoreFirst`]). Each message the
//! session server sends a terminal is tagged with how many facts were
//! committed when it left; when the terminal acts on it, the simulator
//! checks that what it acknowledges was stored by then: a `SessionReady`
//! (an address notification) needs its `SessionStarted`, a
//! `SessionExtended` (an extension grant) its `SessionExtended` fact. A
//! breach panics, or, with [`SimConfig::durability_panics`] off, is kept in
//! [`Sim::violations`] (what the test of [`DriverOrder::AckBeforeStore`]
//! reads).
//!
//! # Transports
//!
//! - UDP: each terminal's one socket (registration keepalives, triggers and
//!   peer packets together), and the trigger server's.
//! - A terminal's `Destination::Upstream` is its stream to the session
//!   server, opened on first use and opened again after a break.
//! - The session server's `Destination::Upstream` is its stream to the
//!   trigger server; `Destination::Connection(id)` on either server is an
//!   accepted stream (the connection ID is the stream's number).
//! - `Output::Close(id)` closes that stream from the server side (the
//!   client learns it after the latency).
//!
//! # Seeds
//!
//! Every random choice comes from the seed: the network's generator, every
//! machine's generator and every key pair are derived from it in a fixed
//! order, so one seed and one script give one run.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tryst_core::crypto::StaticKeypair;
use tryst_core::machine::{ConnectionId, Destination, Input, Machine, Output};
use tryst_core::names::{NameRegistry, TrustMode};
use tryst_core::peer::endpoint::{Endpoint, EndpointEvent, SessionIo};
use tryst_core::peer::session::{PeerConfig, PeerEvent};
use tryst_core::session_server::{
    SessionConfig, SessionEvent, SessionFact, SessionRecord, SessionServer, SessionStarted,
};
use tryst_core::terminal::{
    ConnectError, JudgePolicy, PermissionError, Terminal, TerminalConfig, TerminalEvent,
    UnknownQuery, UnknownSession,
};
use tryst_core::time::Instant;
use tryst_core::trigger_server::{TriggerConfig, TriggerEvent, TriggerServer};
use tryst_core::wire::{DecisionMode, EndReason, Name, PublicKey, Role, SessionId, Verdict};

use super::driver::{drive, DriverOrder, Out};
use super::log::{EventLog, DEFAULT_LOG_LIMIT};
use super::nat::NatConfig;
use super::net::{Direction, HostId, LinkConfig, NatId, NetEvent, Network, StreamId};

/// The generator every simulated machine owns.
pub type SimRng = ChaCha8Rng;

/// A terminal of the simulation (index in creation order).
pub type TermId = usize;

/// The trigger server's public address (UDP and stream).
pub const TRIGGER_SERVER_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)), 7000);
/// The session server's public address (stream).
pub const SESSION_SERVER_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 20)), 7100);

/// Steps at one instant after which the run is taken to spin (a bug).
pub const MAX_STEPS_AT_ONE_INSTANT: u64 = 1_000_000;

/// How the simulated world is set up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The NAT in front of a terminal unless its spec says otherwise.
    pub terminal_nat: NatConfig,
    /// The access link of a terminal's NAT unless its spec says otherwise.
    pub terminal_link: LinkConfig,
    /// The servers' access links.
    pub server_link: LinkConfig,
    /// Events kept per machine log.
    pub log_limit: usize,
    /// Who may bind names at the session server.
    pub trust: TrustMode,
    /// The trigger server's configuration.
    pub trigger: TriggerConfig,
    /// The session server's configuration.
    pub session: SessionConfig,
    /// What runs each terminal.
    pub terminal_kind: TerminalKind,
    /// The peer sessions' configuration (endpoint terminals).
    pub peer: PeerConfig,
    /// How the session server's driver orders facts and transmits.
    pub order: DriverOrder,
    /// Whether a durability breach fails the run at once (else it is kept
    /// in [`Sim::violations`]).
    pub durability_panics: bool,
}

/// What runs a simulated terminal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TerminalKind {
    /// The [`Endpoint`] that ships: terminal plus peer sessions.
    #[default]
    Endpoint,
    /// The bare terminal component behind the same [`Machine`] contract
    /// ([`BareTerminal`]): no peer sessions, a few kB instead of the
    /// endpoint's session slots. For runs of many terminals that never
    /// use the direct path (the scale test).
    Bare,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            terminal_nat: NatConfig::home(),
            terminal_link: LinkConfig::clean(),
            server_link: LinkConfig::clean(),
            log_limit: DEFAULT_LOG_LIMIT,
            trust: TrustMode::TrustOnFirstUse,
            trigger: TriggerConfig::default(),
            session: SessionConfig::default(),
            terminal_kind: TerminalKind::Endpoint,
            peer: PeerConfig::default(),
            order: DriverOrder::StoreFirst,
            durability_panics: true,
        }
    }
}

impl SimConfig {
    /// A bad network on the terminals' side: `loss` loss and duplication,
    /// 40 ms jitter (reordering) on every terminal's link.
    pub fn lossy(loss: f64) -> SimConfig {
        SimConfig {
            terminal_link: LinkConfig::lossy(loss),
            ..SimConfig::default()
        }
    }
}

/// Where a terminal sits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Placement {
    /// Behind a NAT of its own with this behaviour.
    OwnNat(NatConfig),
    /// Behind an existing NAT (shared with other terminals).
    SharedNat(NatId),
    /// On the public internet, no NAT.
    Public,
}

/// One terminal to add: its name, decision mode, permission list, NAT.
#[derive(Debug, Clone)]
pub struct TerminalSpec {
    /// Device name.
    pub name: String,
    /// Who judges requests aimed at it.
    pub mode: DecisionMode,
    /// How it judges in mode `TerminalJudges`.
    pub judge: JudgePolicy,
    /// Its permission list at the start.
    pub permissions: Vec<String>,
    /// Where it sits; `None`: behind a NAT of its own as [`SimConfig::terminal_nat`].
    pub placement: Option<Placement>,
    /// Its access link; `None`: [`SimConfig::terminal_link`].
    pub link: Option<LinkConfig>,
    /// Whether to call `start` at once.
    pub start: bool,
    /// A change to its configuration (keepalive interval, threshold...).
    pub configure: Option<fn(&mut TerminalConfig)>,
}

impl TerminalSpec {
    /// A terminal named `name`: permission-list mode, empty list, own NAT,
    /// started at once.
    pub fn new(name: &str) -> TerminalSpec {
        TerminalSpec {
            name: name.to_string(),
            mode: DecisionMode::PermissionList,
            judge: JudgePolicy::List,
            permissions: Vec::new(),
            placement: None,
            link: None,
            start: true,
            configure: None,
        }
    }

    /// The same with this decision mode.
    pub fn mode(mut self, mode: DecisionMode) -> Self {
        self.mode = mode;
        self
    }

    /// The same with this judge policy.
    pub fn judge(mut self, judge: JudgePolicy) -> Self {
        self.judge = judge;
        self
    }

    /// The same, permitting these names.
    pub fn allow(mut self, names: &[&str]) -> Self {
        self.permissions.extend(names.iter().map(|s| s.to_string()));
        self
    }

    /// The same, placed so.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }

    /// The same with this access link.
    pub fn link(mut self, link: LinkConfig) -> Self {
        self.link = Some(link);
        self
    }

    /// The same, not started (call [`Sim::start`]).
    pub fn unstarted(mut self) -> Self {
        self.start = false;
        self
    }

    /// The same with its configuration changed by `f`.
    pub fn configure(mut self, f: fn(&mut TerminalConfig)) -> Self {
        self.configure = Some(f);
        self
    }
}

/// Which machine a timer or a host belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    /// The trigger server.
    TriggerServer,
    /// The session server.
    SessionServer,
    /// A terminal.
    Terminal(TermId),
}

impl Node {
    fn index(self) -> usize {
        match self {
            Node::TriggerServer => 0,
            Node::SessionServer => 1,
            Node::Terminal(t) => t + 2,
        }
    }

    fn from_index(i: usize) -> Node {
        match i {
            0 => Node::TriggerServer,
            1 => Node::SessionServer,
            t => Node::Terminal(t - 2),
        }
    }
}

// ----- the terminal's app -----------------------------------------------------

/// A terminal's app: the payload of its peer sessions (the endpoint's
/// [`SessionIo`]) and its script.
#[derive(Debug, Default)]
pub struct PeerApp {
    /// The file to send on the next session this terminal asked for; once
    /// the peer acknowledged all of it, the app ends the session with
    /// `Completed`.
    pub to_send: Option<Vec<u8>>,
    /// Outgoing stream bytes per session.
    pub outgoing: HashMap<SessionId, Vec<u8>>,
    /// Incoming stream bytes per session, placed by offset.
    pub incoming: HashMap<SessionId, Vec<u8>>,
    /// Datagrams received per session.
    pub datagrams: HashMap<SessionId, Vec<Vec<u8>>>,
    /// Sessions the app already ended.
    ended: Vec<SessionId>,
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

    fn datagram(&mut self, session: &SessionId, data: &[u8]) {
        self.datagrams
            .entry(*session)
            .or_default()
            .push(data.to_vec());
    }
}

// ----- what runs a terminal -----------------------------------------------------

/// The bare terminal component behind the [`Machine`] contract, with the
/// endpoint's event type: what [`TerminalKind::Bare`] runs. Events come
/// before transmits, as in the endpoint.
#[derive(Debug)]
pub struct BareTerminal {
    terminal: Terminal<SimRng>,
}

impl Machine for BareTerminal {
    type Fact = Infallible;
    type Event = EndpointEvent;
    type Io = dyn SessionIo + 'static;

    fn handle_input(&mut self, now: Instant, input: Input<'_>, _io: &mut Self::Io) {
        match input {
            Input::Datagram { from, bytes, .. } => self.terminal.handle_udp(now, from, bytes),
            Input::UpstreamMessage(bytes) => self.terminal.handle_upstream(now, bytes),
            Input::UpstreamClosed => self.terminal.handle_upstream_closed(now),
            Input::ConnectionOpened { .. }
            | Input::ConnectionMessage { .. }
            | Input::ConnectionClosed(_) => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.terminal.handle_timeout(now);
    }

    fn poll_output(
        &mut self,
        _now: Instant,
        buf: &mut [u8],
        _io: &mut Self::Io,
    ) -> Output<Infallible, EndpointEvent> {
        if let Some(event) = self.terminal.poll_event() {
            return Output::Event(EndpointEvent::Terminal(event));
        }
        while let Some(t) = self.terminal.poll_transmit() {
            if let Some(transmit) = t.write_into(buf) {
                return Output::Transmit(transmit);
            }
        }
        Output::Timeout(self.terminal.poll_timeout())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.terminal.poll_timeout()
    }
}

/// A simulated terminal's machine: the [`Endpoint`] that ships, or the
/// lighter [`BareTerminal`]; one [`Machine`] either way.
#[derive(Debug)]
pub enum TerminalMachine {
    /// Terminal plus peer sessions ([`TerminalKind::Endpoint`]).
    Endpoint(Box<Endpoint<SimRng>>),
    /// The terminal alone ([`TerminalKind::Bare`]).
    Bare(Box<BareTerminal>),
}

impl TerminalMachine {
    /// The terminal component (state, counters, permissions).
    pub fn terminal(&self) -> &Terminal<SimRng> {
        match self {
            TerminalMachine::Endpoint(e) => e.terminal(),
            TerminalMachine::Bare(b) => &b.terminal,
        }
    }

    /// The endpoint, if this terminal runs one.
    pub fn endpoint(&self) -> Option<&Endpoint<SimRng>> {
        match self {
            TerminalMachine::Endpoint(e) => Some(e),
            TerminalMachine::Bare(_) => None,
        }
    }

    fn start(&mut self, now: Instant) {
        match self {
            TerminalMachine::Endpoint(e) => e.start(now),
            TerminalMachine::Bare(b) => b.terminal.start(now),
        }
    }

    fn set_permissions(&mut self, names: &[&str]) -> Result<(), PermissionError> {
        match self {
            TerminalMachine::Endpoint(e) => e.set_permissions(names),
            TerminalMachine::Bare(b) => b.terminal.set_permissions(names),
        }
    }

    fn connect(&mut self, now: Instant, target: &str, secs: u32) -> Result<u32, ConnectError> {
        match self {
            TerminalMachine::Endpoint(e) => e.connect(now, target, secs),
            TerminalMachine::Bare(b) => b.terminal.connect(now, target, secs),
        }
    }

    fn allow(&mut self, name: &str) -> Result<(), PermissionError> {
        match self {
            TerminalMachine::Endpoint(e) => e.allow(name),
            TerminalMachine::Bare(b) => b.terminal.allow(name),
        }
    }

    fn disallow(&mut self, name: &str) -> bool {
        match self {
            TerminalMachine::Endpoint(e) => e.disallow(name),
            TerminalMachine::Bare(b) => b.terminal.disallow(name),
        }
    }

    fn answer(&mut self, now: Instant, query: u32, verdict: Verdict) -> Result<(), UnknownQuery> {
        match self {
            TerminalMachine::Endpoint(e) => e.answer(now, query, verdict),
            TerminalMachine::Bare(b) => b.terminal.answer(now, query, verdict),
        }
    }

    fn transfer_progress(
        &mut self,
        id: &SessionId,
        sent: u64,
        received: u64,
        active: bool,
    ) -> Result<(), UnknownSession> {
        match self {
            TerminalMachine::Endpoint(e) => e.transfer_progress(id, sent, received, active),
            TerminalMachine::Bare(b) => b.terminal.transfer_progress(id, sent, received, active),
        }
    }

    fn end_session(
        &mut self,
        now: Instant,
        id: &SessionId,
        reason: EndReason,
    ) -> Result<(), UnknownSession> {
        match self {
            TerminalMachine::Endpoint(e) => e.end_session(now, id, reason),
            TerminalMachine::Bare(b) => b.terminal.finish_session(now, id, reason),
        }
    }
}

impl Machine for TerminalMachine {
    type Fact = Infallible;
    type Event = EndpointEvent;
    type Io = dyn SessionIo + 'static;

    fn handle_input(&mut self, now: Instant, input: Input<'_>, io: &mut Self::Io) {
        match self {
            TerminalMachine::Endpoint(e) => Machine::handle_input(&mut **e, now, input, io),
            TerminalMachine::Bare(b) => b.handle_input(now, input, io),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self {
            TerminalMachine::Endpoint(e) => Machine::handle_timeout(&mut **e, now),
            TerminalMachine::Bare(b) => Machine::handle_timeout(&mut **b, now),
        }
    }

    fn poll_output(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        io: &mut Self::Io,
    ) -> Output<Infallible, EndpointEvent> {
        match self {
            TerminalMachine::Endpoint(e) => Machine::poll_output(&mut **e, now, buf, io),
            TerminalMachine::Bare(b) => b.poll_output(now, buf, io),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            TerminalMachine::Endpoint(e) => Machine::poll_timeout(&**e),
            TerminalMachine::Bare(b) => Machine::poll_timeout(&**b),
        }
    }
}

/// A simulated terminal and what its driver keeps.
#[derive(Debug)]
pub struct TerminalNode {
    /// The machine.
    pub machine: TerminalMachine,
    /// Its app (peer payload and script).
    pub app: PeerApp,
    /// Its name.
    pub name: String,
    /// Its identity key.
    pub key: PublicKey,
    /// Its host.
    pub host: HostId,
    /// The NAT in front of it, if any.
    pub nat: Option<NatId>,
    /// Its current stream to the session server.
    pub upstream: Option<StreamId>,
    /// What its terminal reported.
    pub log: EventLog<TerminalEvent>,
    /// What its peer sessions reported.
    pub peer_log: EventLog<(SessionId, PeerEvent)>,
    /// Switched off by the test: it gets no input and sends nothing.
    pub powered_off: bool,
}

impl TerminalNode {
    /// The terminal component of its machine.
    pub fn terminal(&self) -> &Terminal<SimRng> {
        self.machine.terminal()
    }
}

// ----- the durable store ----------------------------------------------------------

/// The durable store of the session server's facts (what a real driver
/// writes to disk), committed from `Output::Store`: NameBound,
/// SessionStarted, SessionExtended, SessionRecord, as the events they
/// become once stored.
#[derive(Debug, Clone, Default)]
pub struct Store {
    /// The facts in the order they were committed.
    pub facts: Vec<(Instant, SessionEvent)>,
}

/// The fact a stored event stands for (`None`: not a fact).
pub fn fact_of(event: &SessionEvent) -> Option<SessionFact> {
    Some(match event {
        SessionEvent::NameBound { name, key } => SessionFact::NameBound {
            name: name.clone(),
            key: *key,
        },
        SessionEvent::EnrolCodeUsed { name, key, hash } => SessionFact::EnrolCodeUsed {
            name: name.clone(),
            key: *key,
            hash: *hash,
        },
        SessionEvent::NameSeen { name, at } => SessionFact::NameSeen {
            name: name.clone(),
            at: *at,
        },
        SessionEvent::NameUnbound { name, key } => SessionFact::NameUnbound {
            name: name.clone(),
            key: *key,
        },
        SessionEvent::SessionStarted(s) => SessionFact::SessionStarted(s.clone()),
        SessionEvent::SessionExtended(x) => SessionFact::SessionExtended(*x),
        SessionEvent::SessionRecord(r) => SessionFact::SessionRecord(r.clone()),
        SessionEvent::LateReport(l) => SessionFact::LateReport(*l),
        _ => return None,
    })
}

impl Store {
    fn commit(&mut self, at: Instant, fact: SessionFact) -> SessionEvent {
        let event = SessionEvent::from(fact);
        self.facts.push((at, event.clone()));
        event
    }

    /// Every session start stored.
    pub fn started(&self) -> impl Iterator<Item = &SessionStarted> + '_ {
        self.facts.iter().filter_map(|(_, e)| match e {
            SessionEvent::SessionStarted(s) => Some(s),
            _ => None,
        })
    }

    /// Every session record stored.
    pub fn records(&self) -> impl Iterator<Item = &SessionRecord> + '_ {
        self.facts.iter().filter_map(|(_, e)| match e {
            SessionEvent::SessionRecord(r) => Some(r),
            _ => None,
        })
    }

    /// The records of one session (exactly one, once it ended).
    pub fn records_of(&self, id: &SessionId) -> Vec<&SessionRecord> {
        self.records().filter(|r| r.session_id == *id).collect()
    }

    /// The name bindings, to rebuild the registry.
    pub fn bindings(&self) -> Vec<(String, PublicKey)> {
        let mut bound: std::collections::BTreeMap<String, PublicKey> = Default::default();
        for (_, e) in &self.facts {
            match e {
                SessionEvent::NameBound { name, key } => {
                    bound.insert(name.clone(), *key);
                }
                SessionEvent::NameUnbound { name, key } if bound.get(name) == Some(key) => {
                    bound.remove(name);
                }
                _ => {}
            }
        }
        bound.into_iter().collect()
    }

    /// SessionStarted / SessionExtended facts of sessions with no record
    /// yet, in order: what a restarted server replays.
    pub fn live_session_facts(&self) -> Vec<SessionFact> {
        // SessionId is not Ord; its bytes are.
        let ended: std::collections::BTreeSet<[u8; 16]> =
            self.records().map(|r| r.session_id.0).collect();
        self.facts
            .iter()
            .filter(|(_, e)| match e {
                SessionEvent::SessionStarted(s) => !ended.contains(&s.session_id.0),
                SessionEvent::SessionExtended(x) => !ended.contains(&x.session_id.0),
                _ => false,
            })
            .filter_map(|(_, e)| fact_of(e))
            .collect()
    }

    /// Whether the first `committed` facts hold what `event` (a terminal's,
    /// caused by a message of the session server) acknowledges; `None` if
    /// it acknowledges no fact.
    fn acknowledges(&self, committed: usize, event: &TerminalEvent) -> Option<bool> {
        let stored = &self.facts[..committed.min(self.facts.len())];
        match event {
            TerminalEvent::SessionReady { session_id, .. } => Some(stored.iter().any(|(_, e)| {
                matches!(e, SessionEvent::SessionStarted(s) if s.session_id == *session_id)
            })),
            TerminalEvent::SessionExtended {
                session_id,
                duration_secs,
            } => Some(stored.iter().any(|(_, e)| {
                matches!(e, SessionEvent::SessionExtended(x)
                    if x.session_id == *session_id && x.duration_secs == *duration_secs)
            })),
            _ => None,
        }
    }
}

/// A message of the session server that acknowledged a fact before the
/// driver stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// When the terminal acted on it.
    pub at: Instant,
    /// The terminal.
    pub terminal: TermId,
    /// What the terminal made of it.
    pub event: TerminalEvent,
}

/// Counters of the driver itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Inputs fed to machines (deliveries and timeouts).
    pub steps: u64,
    /// `handle_timeout` calls.
    pub timeouts: u64,
    /// Transmits to a destination that machine has no way to reach
    /// (e.g. a terminal's `Connection`), dropped.
    pub misrouted: u64,
    /// Session server restarts.
    pub restarts: u64,
    /// Facts committed to the store.
    pub facts_stored: u64,
    /// Terminal events that acknowledge a fact, checked against the store.
    pub acks_checked: u64,
}

/// The simulated world.
pub struct Sim {
    seed: u64,
    now: Instant,
    config: SimConfig,
    /// The network (public so tests can inspect NATs and links).
    pub net: Network,
    rng: ChaCha8Rng,
    ts: TriggerServer<SimRng>,
    ts_key: PublicKey,
    ts_host: HostId,
    ts_log: EventLog<TriggerEvent>,
    ss: SessionServer<SimRng>,
    ss_keypair: StaticKeypair,
    ss_host: HostId,
    ss_upstream: Option<StreamId>,
    ss_log: EventLog<SessionEvent>,
    store: Store,
    /// Per stream from the session server to a terminal: how many facts
    /// were committed when each message in flight left.
    ack_marks: HashMap<StreamId, VecDeque<usize>>,
    violations: Vec<Violation>,
    terminals: Vec<TerminalNode>,
    by_host: BTreeMap<HostId, Node>,
    timer_at: Vec<Option<Instant>>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    stats: DriverStats,
    steps_at_now: u64,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("terminals", &self.terminals.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A world with both servers and no terminal, every random choice
    /// derived from `seed`.
    pub fn new(seed: u64, config: SimConfig) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut net = Network::new(rng.next_u64());
        let ts_host = net.add_public_host(TRIGGER_SERVER_ADDR, config.server_link);
        let ss_host = net.add_public_host(SESSION_SERVER_ADDR, config.server_link);
        let ts_keypair = StaticKeypair::generate(&mut rng);
        let ss_keypair = StaticKeypair::generate(&mut rng);
        let ts_key = ts_keypair.public_key();
        let ts = TriggerServer::new(
            config.trigger,
            ts_keypair,
            &[ss_keypair.public_key()],
            ChaCha8Rng::seed_from_u64(rng.next_u64()),
        );
        let ss = SessionServer::new(
            config.session,
            ss_keypair.clone(),
            ts_key,
            NameRegistry::new(config.trust),
            ChaCha8Rng::seed_from_u64(rng.next_u64()),
        );
        let mut by_host = BTreeMap::new();
        by_host.insert(ts_host, Node::TriggerServer);
        by_host.insert(ss_host, Node::SessionServer);
        let log_limit = config.log_limit;
        Sim {
            seed,
            now: Instant::ZERO,
            config,
            net,
            rng,
            ts,
            ts_key,
            ts_host,
            ts_log: EventLog::new(log_limit),
            ss,
            ss_keypair,
            ss_host,
            ss_upstream: None,
            ss_log: EventLog::new(log_limit),
            store: Store::default(),
            ack_marks: HashMap::new(),
            violations: Vec::new(),
            terminals: Vec::new(),
            by_host,
            timer_at: vec![None, None],
            timers: BinaryHeap::new(),
            stats: DriverStats::default(),
            steps_at_now: 0,
        }
    }

    // ----- set-up -------------------------------------------------------------

    /// Adds a terminal (and its NAT); starts it if the spec says so.
    pub fn add_terminal(&mut self, spec: TerminalSpec) -> TermId {
        let link = spec.link.unwrap_or(self.config.terminal_link);
        let placement = spec
            .placement
            .unwrap_or(Placement::OwnNat(self.config.terminal_nat));
        let (host, nat) = match placement {
            Placement::OwnNat(nat_config) => {
                let nat = self.net.add_nat(nat_config, link);
                (self.net.add_host_behind(nat), Some(nat))
            }
            Placement::SharedNat(nat) => (self.net.add_host_behind(nat), Some(nat)),
            Placement::Public => {
                let n = u32::try_from(self.terminals.len()).expect("too many terminals");
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 1)) + n);
                let addr = SocketAddr::new(IpAddr::V4(ip), super::net::TERMINAL_PORT);
                (self.net.add_public_host(addr, link), None)
            }
        };
        let keypair = StaticKeypair::generate(&mut self.rng);
        let key = keypair.public_key();
        let mut config = TerminalConfig::new(&spec.name, TRIGGER_SERVER_ADDR, self.ss_public_key())
            .expect("a valid terminal name");
        config.mode = spec.mode;
        config.judge = spec.judge;
        if let Some(f) = spec.configure {
            f(&mut config);
        }
        let terminal_rng = ChaCha8Rng::seed_from_u64(self.rng.next_u64());
        let mut machine = match self.config.terminal_kind {
            TerminalKind::Endpoint => TerminalMachine::Endpoint(Box::new(Endpoint::new(
                config,
                keypair,
                terminal_rng,
                ChaCha8Rng::seed_from_u64(self.rng.next_u64()),
                self.config.peer.clone(),
            ))),
            TerminalKind::Bare => TerminalMachine::Bare(Box::new(BareTerminal {
                terminal: Terminal::new(config, keypair, terminal_rng),
            })),
        };
        let names: Vec<&str> = spec.permissions.iter().map(String::as_str).collect();
        machine
            .set_permissions(&names)
            .expect("a valid permission list");
        let id = self.terminals.len();
        self.terminals.push(TerminalNode {
            machine,
            app: PeerApp::default(),
            name: spec.name,
            key,
            host,
            nat,
            upstream: None,
            log: EventLog::new(self.config.log_limit),
            peer_log: EventLog::new(self.config.log_limit),
            powered_off: false,
        });
        self.by_host.insert(host, Node::Terminal(id));
        self.timer_at.push(None);
        if spec.start {
            self.start(id);
        }
        id
    }

    /// Adds a NAT that several terminals can share ([`Placement::SharedNat`]).
    pub fn add_nat(&mut self, config: NatConfig, link: LinkConfig) -> NatId {
        self.net.add_nat(config, link)
    }

    /// The session server's static public key (what terminals are configured with).
    pub fn ss_public_key(&self) -> PublicKey {
        self.ss_keypair.public_key()
    }

    /// The trigger server's static public key.
    pub fn ts_public_key(&self) -> PublicKey {
        self.ts_key
    }

    // ----- the clock and the loop ------------------------------------------

    /// The seed of this run.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The virtual time as a duration since the start.
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(Instant::ZERO)
    }

    /// The driver's counters.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    fn peek_timer(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, node))) = self.timers.peek() {
            if self.timer_at[node] == Some(at) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    /// Feeds the one next input due at or before `until` to its machine;
    /// `false` if there is none (the clock is not moved then).
    pub fn step(&mut self, until: Instant) -> bool {
        let net_at = self.net.next_time();
        let timer_at = self.peek_timer();
        let (at, network_first) = match (net_at, timer_at) {
            (None, None) => return false,
            (Some(n), None) => (n, true),
            (None, Some(t)) => (t, false),
            (Some(n), Some(t)) => (n.min(t), n <= t),
        };
        if at > until {
            return false;
        }
        if at > self.now {
            self.now = at;
            self.steps_at_now = 0;
        }
        self.steps_at_now += 1;
        assert!(
            self.steps_at_now < MAX_STEPS_AT_ONE_INSTANT,
            "the run spins at {:?} (seed {})",
            self.now,
            self.seed
        );
        self.stats.steps += 1;
        if network_first {
            if let Some((_, event)) = self.net.pop_due(self.now) {
                self.deliver(event);
            }
        } else if let Some(Reverse((_, index))) = self.timers.pop() {
            self.timer_at[index] = None;
            self.fire_timeout(Node::from_index(index));
        }
        true
    }

    /// Runs every input due up to `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Instant) {
        while self.step(t) {}
        if t > self.now {
            self.now = t;
            self.steps_at_now = 0;
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Runs until `done` holds (checked after every input) or `limit` of
    /// virtual time passed; whether it holds.
    pub fn run_until_true(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(end) {
                break;
            }
        }
        if end > self.now {
            self.now = end;
            self.steps_at_now = 0;
        }
        done(self)
    }

    fn fire_timeout(&mut self, node: Node) {
        if self.is_off(node) {
            return;
        }
        let now = self.now;
        self.stats.timeouts += 1;
        match node {
            Node::TriggerServer => Machine::handle_timeout(&mut self.ts, now),
            Node::SessionServer => Machine::handle_timeout(&mut self.ss, now),
            Node::Terminal(t) => self.terminals[t].machine.handle_timeout(now),
        }
        let raw = self.drain(node);
        if let Some(t) = raw {
            assert!(
                t > now,
                "{node:?} asks to be woken at {t:?}, not after now {now:?}, right after \
                 handle_timeout(now) (seed {})",
                self.seed
            );
        }
    }

    fn is_off(&self, node: Node) -> bool {
        matches!(node, Node::Terminal(t) if self.terminals[t].powered_off)
    }

    /// Feeds one input to a machine and drains it.
    fn feed(&mut self, node: Node, input: Input<'_>) {
        if self.is_off(node) {
            return;
        }
        let now = self.now;
        match node {
            Node::TriggerServer => self.ts.handle_input(now, input, &mut ()),
            Node::SessionServer => self.ss.handle_input(now, input, &mut ()),
            Node::Terminal(t) => {
                let n = &mut self.terminals[t];
                n.machine.handle_input(now, input, &mut n.app);
            }
        }
        self.drain(node);
    }

    fn deliver(&mut self, event: NetEvent) {
        match event {
            NetEvent::Datagram {
                host,
                from,
                mut payload,
                ..
            } => {
                if let Some(node) = self.by_host.get(&host).copied() {
                    self.feed(
                        node,
                        Input::Datagram {
                            from,
                            local: None,
                            bytes: &mut payload,
                        },
                    );
                }
            }
            NetEvent::StreamOpened {
                stream,
                server,
                remote,
            } => {
                if let Some(node) = self.by_host.get(&server).copied() {
                    let conn = ConnectionId(stream);
                    self.feed(node, Input::ConnectionOpened { conn, remote });
                }
            }
            NetEvent::StreamMessage {
                stream,
                host,
                direction,
                payload,
            } => {
                let mark = match direction {
                    Direction::ToClient => self
                        .ack_marks
                        .get_mut(&stream)
                        .and_then(VecDeque::pop_front),
                    Direction::ToServer => None,
                };
                let conn = ConnectionId(stream);
                match (self.by_host.get(&host).copied(), direction) {
                    (
                        Some(node @ (Node::TriggerServer | Node::SessionServer)),
                        Direction::ToServer,
                    ) => {
                        self.feed(
                            node,
                            Input::ConnectionMessage {
                                conn,
                                bytes: &payload,
                            },
                        );
                    }
                    (Some(Node::SessionServer), Direction::ToClient)
                        if self.ss_upstream == Some(stream) =>
                    {
                        self.feed(Node::SessionServer, Input::UpstreamMessage(&payload));
                    }
                    (Some(Node::Terminal(t)), Direction::ToClient)
                        if self.terminals[t].upstream == Some(stream) =>
                    {
                        let seen = self.terminals[t].log.total();
                        self.feed(Node::Terminal(t), Input::UpstreamMessage(&payload));
                        if let Some(committed) = mark {
                            self.check_acks(t, seen, committed);
                        }
                    }
                    _ => {}
                }
            }
            NetEvent::StreamClosed {
                stream,
                host,
                direction,
            } => {
                let conn = ConnectionId(stream);
                match (self.by_host.get(&host).copied(), direction) {
                    (
                        Some(node @ (Node::TriggerServer | Node::SessionServer)),
                        Direction::ToServer,
                    ) => {
                        self.ack_marks.remove(&stream);
                        self.feed(node, Input::ConnectionClosed(conn));
                    }
                    (Some(Node::SessionServer), Direction::ToClient)
                        if self.ss_upstream == Some(stream) =>
                    {
                        self.ss_upstream = None;
                        self.feed(Node::SessionServer, Input::UpstreamClosed);
                    }
                    (Some(Node::Terminal(t)), Direction::ToClient)
                        if self.terminals[t].upstream == Some(stream) =>
                    {
                        self.terminals[t].upstream = None;
                        self.ack_marks.remove(&stream);
                        self.feed(Node::Terminal(t), Input::UpstreamClosed);
                    }
                    _ => {}
                }
            }
        }
    }

    /// The durability check: the terminal events logged since `seen` that
    /// acknowledge a fact must find it among the first `committed` facts
    /// of the store (those committed when the message left the server).
    fn check_acks(&mut self, t: TermId, seen: u64, committed: usize) {
        let log = &self.terminals[t].log;
        // Events beyond the log's limit are counted, not kept: skip those.
        let kept = log.events().len() as u64;
        let first = usize::try_from(seen.min(kept)).unwrap_or(usize::MAX);
        let mut breaches = Vec::new();
        let mut checked = 0;
        for (at, event) in log.events().iter().skip(first) {
            match self.store.acknowledges(committed, event) {
                Some(true) => checked += 1,
                Some(false) => {
                    checked += 1;
                    breaches.push(Violation {
                        at: *at,
                        terminal: t,
                        event: event.clone(),
                    });
                }
                None => {}
            }
        }
        self.stats.acks_checked += checked;
        for v in breaches {
            assert!(
                !self.config.durability_panics,
                "durability: terminal {t} acted on a message that acknowledges a fact the \
                 session server's driver had not stored when it left: {v:?} (seed {})",
                self.seed
            );
            self.violations.push(v);
        }
    }

    /// Drains one machine with [`drive`] and acts on what came out; returns
    /// the machine's raw timeout (the timer is set to it, clamped to now).
    fn drain(&mut self, node: Node) -> Option<Instant> {
        if self.is_off(node) {
            return None;
        }
        let now = self.now;
        let timeout = match node {
            Node::TriggerServer => {
                let mut outs = Vec::new();
                let at = drive(
                    &mut self.ts,
                    now,
                    &mut (),
                    DriverOrder::StoreFirst,
                    &mut outs,
                );
                for out in outs {
                    match out {
                        Out::Store(never) => match never {},
                        Out::Event(e) => self.ts_log.push(now, e),
                        Out::Close(conn) => self.close(conn),
                        Out::Transmit(to, bytes) => self.route(node, to, &bytes),
                    }
                }
                at
            }
            Node::SessionServer => {
                let mut outs = Vec::new();
                let at = drive(&mut self.ss, now, &mut (), self.config.order, &mut outs);
                for out in outs {
                    match out {
                        Out::Store(fact) => {
                            self.stats.facts_stored += 1;
                            let event = self.store.commit(now, fact);
                            self.ss_log.push(now, event);
                        }
                        Out::Event(e) => self.ss_log.push(now, e),
                        Out::Close(conn) => self.close(conn),
                        Out::Transmit(to, bytes) => self.route(node, to, &bytes),
                    }
                }
                at
            }
            Node::Terminal(t) => {
                // The app may act on an event (send its file, end the
                // session): drain again until it has nothing to do.
                let mut at;
                let mut rounds = 0;
                loop {
                    let mut outs = Vec::new();
                    let n = &mut self.terminals[t];
                    at = drive(
                        &mut n.machine,
                        now,
                        &mut n.app,
                        DriverOrder::StoreFirst,
                        &mut outs,
                    );
                    let mut acted = false;
                    for out in outs {
                        match out {
                            Out::Store(never) => match never {},
                            Out::Event(e) => acted |= self.app_event(t, e),
                            Out::Close(_) => self.stats.misrouted += 1,
                            Out::Transmit(to, bytes) => self.route(node, to, &bytes),
                        }
                    }
                    rounds += 1;
                    if !acted || rounds > 8 {
                        break;
                    }
                }
                at
            }
        };
        // A timer already due (after a non-timeout input) fires at once.
        self.set_timer(node, timeout.map(|t| t.max(now)));
        timeout
    }

    /// The scripted app of terminal `t` hears `event`; whether it called
    /// the machine (which then needs another drain).
    fn app_event(&mut self, t: TermId, event: EndpointEvent) -> bool {
        let now = self.now;
        let node = &mut self.terminals[t];
        match event {
            EndpointEvent::Terminal(e) => {
                let mut acted = false;
                if let TerminalEvent::SessionReady {
                    session_id,
                    role: Role::Connecting,
                    ..
                } = &e
                {
                    if let (Some(file), TerminalMachine::Endpoint(ep)) =
                        (node.app.to_send.take(), &mut node.machine)
                    {
                        let len = file.len() as u64;
                        node.app.outgoing.insert(*session_id, file);
                        let _ = ep.stream_extend(session_id, len);
                        let _ = ep.stream_finish(session_id, len);
                        acted = true;
                    }
                }
                node.log.push(now, e);
                acted
            }
            EndpointEvent::Peer { session_id, event } => {
                let mut acted = false;
                if matches!(event, PeerEvent::StreamAcked { .. })
                    && node.app.outgoing.contains_key(&session_id)
                    && !node.app.ended.contains(&session_id)
                {
                    node.app.ended.push(session_id);
                    let _ = node
                        .machine
                        .end_session(now, &session_id, EndReason::Completed);
                    acted = true;
                }
                node.peer_log.push(now, (session_id, event));
                acted
            }
        }
    }

    fn set_timer(&mut self, node: Node, at: Option<Instant>) {
        let i = node.index();
        if self.timer_at[i] == at {
            return;
        }
        self.timer_at[i] = at;
        if let Some(at) = at {
            self.timers.push(Reverse((at, i)));
        }
    }

    /// A server closes an accepted stream (the client learns it later).
    fn close(&mut self, conn: ConnectionId) {
        self.ack_marks.remove(&conn.0);
        self.net.close_stream(self.now, conn.0, Direction::ToClient);
    }

    /// Where a transmit of `node` goes on the network: the one routing
    /// function of every role.
    fn route(&mut self, node: Node, destination: Destination, payload: &[u8]) {
        let now = self.now;
        match (node, destination) {
            (Node::TriggerServer, Destination::Udp(to)) => {
                self.net.send_datagram(now, self.ts_host, to, payload);
            }
            (Node::Terminal(t), Destination::Udp(to)) => {
                let host = self.terminals[t].host;
                self.net.send_datagram(now, host, to, payload);
            }
            (Node::TriggerServer, Destination::Connection(conn)) => {
                let _ = self
                    .net
                    .stream_send(now, conn.0, Direction::ToClient, payload);
            }
            (Node::SessionServer, Destination::Connection(conn)) => {
                if self
                    .net
                    .stream_send(now, conn.0, Direction::ToClient, payload)
                {
                    // What the store held when this message left.
                    let committed = self.store.facts.len();
                    self.ack_marks
                        .entry(conn.0)
                        .or_default()
                        .push_back(committed);
                }
            }
            (Node::SessionServer, Destination::Upstream) => {
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
            (Node::Terminal(t), Destination::Upstream) => {
                let host = self.terminals[t].host;
                let stream = match self.terminals[t].upstream {
                    Some(s) if self.net.stream_open(s, Direction::ToServer) => s,
                    _ => {
                        let s = self.net.open_stream(now, host, self.ss_host);
                        self.terminals[t].upstream = Some(s);
                        s
                    }
                };
                let _ = self
                    .net
                    .stream_send(now, stream, Direction::ToServer, payload);
            }
            _ => self.stats.misrouted += 1,
        }
    }

    // ----- app and operator scripting ---------------------------------------

    /// Runs an app call on terminal `t`, then drains it.
    fn app_call<T>(&mut self, t: TermId, f: impl FnOnce(&mut TerminalMachine, Instant) -> T) -> T {
        let now = self.now;
        let r = f(&mut self.terminals[t].machine, now);
        self.drain(Node::Terminal(t));
        r
    }

    /// The app starts the terminal (registration, S702).
    pub fn start(&mut self, t: TermId) {
        self.app_call(t, |m, now| m.start(now));
    }

    /// The app asks for a session with `target` (S203/S204).
    pub fn connect(
        &mut self,
        t: TermId,
        target: &str,
        duration_secs: u32,
    ) -> Result<u32, ConnectError> {
        self.app_call(t, |m, now| m.connect(now, target, duration_secs))
    }

    /// The app permits `name` (applies to the next request).
    pub fn allow(&mut self, t: TermId, name: &str) -> Result<(), PermissionError> {
        self.app_call(t, |m, _| m.allow(name))
    }

    /// The app no longer permits `name`; whether it was in the list.
    pub fn disallow(&mut self, t: TermId, name: &str) -> bool {
        self.app_call(t, |m, _| m.disallow(name))
    }

    /// The app answers a permission inquiry (judge policy `Ask`).
    pub fn answer(
        &mut self,
        t: TermId,
        query_id: u32,
        verdict: Verdict,
    ) -> Result<(), UnknownQuery> {
        self.app_call(t, |m, now| m.answer(now, query_id, verdict))
    }

    /// The app reports progress of a session's transfer (for payload that
    /// does not go through the peer channel).
    pub fn transfer_progress(
        &mut self,
        t: TermId,
        session_id: &SessionId,
        bytes_sent: u64,
        bytes_received: u64,
        active: bool,
    ) -> Result<(), UnknownSession> {
        self.app_call(t, |m, _| {
            m.transfer_progress(session_id, bytes_sent, bytes_received, active)
        })
    }

    /// The app ends a session (transfer done, cancelled...).
    pub fn finish_session(
        &mut self,
        t: TermId,
        session_id: &SessionId,
        reason: EndReason,
    ) -> Result<(), UnknownSession> {
        self.app_call(t, |m, now| m.end_session(now, session_id, reason))
    }

    /// The app sends one real-time datagram on a session (an endpoint
    /// terminal's; `false` if it was not queued).
    pub fn send_datagram(&mut self, t: TermId, session_id: &SessionId, data: &[u8]) -> bool {
        self.app_call(t, |m, _| match m {
            TerminalMachine::Endpoint(e) => {
                matches!(e.send_datagram(session_id, data), Ok(Ok(())))
            }
            TerminalMachine::Bare(_) => false,
        })
    }

    /// The app holds a session open (an endpoint terminal's, S1504).
    pub fn hold_open(&mut self, t: TermId, session_id: &SessionId, held: bool) -> bool {
        self.app_call(t, |m, _| match m {
            TerminalMachine::Endpoint(e) => e.hold_open(session_id, held).is_ok(),
            TerminalMachine::Bare(_) => false,
        })
    }

    /// The operator ends a session (S1604).
    pub fn end_session(
        &mut self,
        session_id: &SessionId,
    ) -> Result<(), tryst_core::session_server::UnknownSession> {
        let now = self.now;
        let r = self.ss.end_session(now, *session_id);
        self.drain(Node::SessionServer);
        r
    }

    /// Breaks a terminal's stream to the session server (both ends closed
    /// now, in-flight messages lost); `false` if it had none open.
    pub fn break_upstream(&mut self, t: TermId) -> bool {
        let Some(stream) = self.terminals[t].upstream.take() else {
            return false;
        };
        self.ack_marks.remove(&stream);
        let accepted = self.net.stream_accepted(stream);
        let known_to_server = self.net.break_stream(stream).is_some() && accepted;
        self.feed(Node::Terminal(t), Input::UpstreamClosed);
        if known_to_server {
            self.feed(
                Node::SessionServer,
                Input::ConnectionClosed(ConnectionId(stream)),
            );
        }
        true
    }

    /// Breaks the session server's link to the trigger server.
    pub fn break_server_link(&mut self) -> bool {
        let Some(stream) = self.ss_upstream.take() else {
            return false;
        };
        let accepted = self.net.stream_accepted(stream);
        let known = self.net.break_stream(stream).is_some() && accepted;
        self.feed(Node::SessionServer, Input::UpstreamClosed);
        if known {
            self.feed(
                Node::TriggerServer,
                Input::ConnectionClosed(ConnectionId(stream)),
            );
        }
        true
    }

    /// Switches a terminal off for good (power cut, app killed): it gets no
    /// more input and its stream breaks (the session server sees the close).
    pub fn power_off(&mut self, t: TermId) {
        self.terminals[t].powered_off = true;
        self.net.set_down(self.terminals[t].host, true);
        self.timer_at[Node::Terminal(t).index()] = None;
        if let Some(stream) = self.terminals[t].upstream.take() {
            self.ack_marks.remove(&stream);
            let known = self.net.stream_accepted(stream);
            if self.net.break_stream(stream).is_some() && known {
                self.feed(
                    Node::SessionServer,
                    Input::ConnectionClosed(ConnectionId(stream)),
                );
            }
        }
    }

    /// Kills the session server and starts a fresh one from the durable
    /// store (name bindings, live sessions), as a real driver would after a
    /// crash: what was not committed is lost. Every stream to or from it
    /// breaks; registrations are lost (terminals register again).
    pub fn restart_session_server(&mut self) {
        self.stats.restarts += 1;
        // Break every stream of the old server.
        let streams: Vec<(TermId, StreamId)> = self
            .terminals
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.upstream.map(|s| (i, s)))
            .collect();
        for (t, s) in streams {
            let _ = self.net.break_stream(s);
            self.ack_marks.remove(&s);
            self.terminals[t].upstream = None;
            self.feed(Node::Terminal(t), Input::UpstreamClosed);
        }
        if let Some(s) = self.ss_upstream.take() {
            let known = self.net.stream_accepted(s);
            if self.net.break_stream(s).is_some() && known {
                self.feed(
                    Node::TriggerServer,
                    Input::ConnectionClosed(ConnectionId(s)),
                );
            }
        }
        let bindings = self.store.bindings();
        let registry = NameRegistry::from_bindings(
            self.config.trust,
            bindings
                .iter()
                .filter_map(|(n, k)| Name::new(n).ok().map(|n| (n, *k))),
        )
        .expect("stored bindings replay");
        let mut ss = SessionServer::new(
            self.config.session,
            self.ss_keypair.clone(),
            self.ts_key,
            registry,
            ChaCha8Rng::seed_from_u64(self.rng.next_u64()),
        );
        for fact in self.store.live_session_facts() {
            ss.restore_session(&fact).expect("a stored fact restores");
        }
        self.ss = ss;
        self.timer_at[Node::SessionServer.index()] = None;
        self.drain(Node::SessionServer);
    }

    // ----- inspection ------------------------------------------------------

    /// Number of terminals.
    pub fn terminal_count(&self) -> usize {
        self.terminals.len()
    }

    /// A terminal and its driver state.
    pub fn terminal(&self, t: TermId) -> &TerminalNode {
        &self.terminals[t]
    }

    /// A terminal's app (what its peer sessions sent and got).
    pub fn app(&self, t: TermId) -> &PeerApp {
        &self.terminals[t].app
    }

    /// A terminal's app, to script it (e.g. set [`PeerApp::to_send`]).
    pub fn app_mut(&mut self, t: TermId) -> &mut PeerApp {
        &mut self.terminals[t].app
    }

    /// A terminal's event log.
    pub fn terminal_log(&self, t: TermId) -> &EventLog<TerminalEvent> {
        &self.terminals[t].log
    }

    /// A terminal's peer events, with their time.
    pub fn peer_events(&self, t: TermId) -> Vec<(Instant, PeerEvent)> {
        self.terminals[t]
            .peer_log
            .events()
            .iter()
            .map(|(at, (_, e))| (*at, *e))
            .collect()
    }

    /// The terminal named `name`, if any.
    pub fn terminal_named(&self, name: &str) -> Option<TermId> {
        self.terminals.iter().position(|n| n.name == name)
    }

    /// The trigger server.
    pub fn trigger_server(&self) -> &TriggerServer<SimRng> {
        &self.ts
    }

    /// The trigger server's event log.
    pub fn ts_log(&self) -> &EventLog<TriggerEvent> {
        &self.ts_log
    }

    /// The session server.
    pub fn session_server(&self) -> &SessionServer<SimRng> {
        &self.ss
    }

    /// The session server's event log (since the start, across restarts),
    /// stored facts included.
    pub fn ss_log(&self) -> &EventLog<SessionEvent> {
        &self.ss_log
    }

    /// The durable store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The durability breaches seen (only kept when
    /// [`SimConfig::durability_panics`] is off; else the first panics).
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Whether the terminal is registered and the trigger server holds a
    /// live address for it.
    pub fn is_online(&self, t: TermId) -> bool {
        let m = self.terminals[t].terminal();
        m.is_registered()
            && m.device_id()
                .is_some_and(|d| self.ts.live_address(d).is_some())
    }

    /// The address the trigger server holds for the terminal, if any.
    pub fn observed_by_trigger_server(&self, t: TermId) -> Option<SocketAddr> {
        self.terminals[t]
            .terminal()
            .device_id()
            .and_then(|d| self.ts.live_address(d))
    }

    /// The terminal's current public address towards the trigger server (its
    /// NAT's live mapping), if any.
    pub fn nat_mapping(&self, t: TermId) -> Option<SocketAddr> {
        self.net
            .public_addr_of(self.now, self.terminals[t].host, TRIGGER_SERVER_ADDR)
    }

    /// Runs until every terminal that is not powered off is online, or
    /// `limit` passes; whether they are. Checked once per simulated second
    /// (cheap with many terminals).
    pub fn run_until_all_online(&mut self, limit: Duration) -> bool {
        let end = self.now + limit;
        let mut next = 0;
        loop {
            // Terminals before `next` were online at the last check; a
            // terminal that drops out again is caught by the final pass.
            while next < self.terminals.len()
                && (self.terminals[next].powered_off || self.is_online(next))
            {
                next += 1;
            }
            if next == self.terminals.len() {
                let all = (0..self.terminals.len())
                    .all(|t| self.terminals[t].powered_off || self.is_online(t));
                if all {
                    return true;
                }
                next = 0;
            }
            if self.now >= end {
                return false;
            }
            let step_end = (self.now + Duration::from_secs(1)).min(end);
            self.run_until(step_end);
        }
    }

    /// The SessionReady events of a terminal.
    pub fn sessions_ready(&self, t: TermId) -> Vec<ReadySession> {
        self.terminals[t]
            .log
            .iter()
            .filter_map(|e| match e {
                TerminalEvent::SessionReady {
                    session_id,
                    role,
                    request_id,
                    peer_name,
                    peer_key,
                    peer_addr,
                    duration_secs,
                    ..
                } => Some(ReadySession {
                    session_id: *session_id,
                    role: *role,
                    request_id: *request_id,
                    peer_name: peer_name.to_string(),
                    peer_key: *peer_key,
                    peer_addr: *peer_addr,
                    duration_secs: *duration_secs,
                }),
                _ => None,
            })
            .collect()
    }

    /// The permission inquiries (judge policy `Ask`) a terminal's user has
    /// not answered yet, oldest first: (query ID, requester). Read from its
    /// log: a registration drops every open inquiry (query IDs are only
    /// unique per channel, so a new channel may reuse one), a later ask with
    /// the same ID replaces the earlier, an answer (or the terminal's
    /// timeout deny) closes it.
    pub fn open_inquiries(&self, t: TermId) -> Vec<(u32, String)> {
        let mut open: Vec<(u32, String)> = Vec::new();
        for e in self.terminals[t].log.iter() {
            match e {
                TerminalEvent::Registered { .. } | TerminalEvent::Reregistering { .. } => {
                    open.clear();
                }
                TerminalEvent::PermissionAsked {
                    query_id,
                    requester,
                } => {
                    open.retain(|(q, _)| q != query_id);
                    open.push((*query_id, requester.to_string()));
                }
                TerminalEvent::PermissionAnswered { query_id, .. } => {
                    open.retain(|(q, _)| q != query_id);
                }
                _ => {}
            }
        }
        open
    }

    /// The request IDs for which a terminal got `ConnectFailed`.
    pub fn connect_failures(&self, t: TermId) -> Vec<u32> {
        self.terminals[t]
            .log
            .iter()
            .filter_map(|e| match e {
                TerminalEvent::ConnectFailed { request_id } => Some(*request_id),
                _ => None,
            })
            .collect()
    }

    /// The `SessionEnded` events of a terminal: (session, reason).
    pub fn sessions_ended(&self, t: TermId) -> Vec<(SessionId, EndReason)> {
        self.terminals[t]
            .log
            .iter()
            .filter_map(|e| match e {
                TerminalEvent::SessionEnded {
                    session_id, reason, ..
                } => Some((*session_id, *reason)),
                _ => None,
            })
            .collect()
    }
}

/// A terminal's `SessionReady` event, without the key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadySession {
    /// The session.
    pub session_id: SessionId,
    /// Which side this terminal is.
    pub role: tryst_core::wire::Role,
    /// The request it answers (0 for the target).
    pub request_id: u32,
    /// The peer's name.
    pub peer_name: String,
    /// The peer's identity key.
    pub peer_key: PublicKey,
    /// The peer's address as the trigger server observed it.
    pub peer_addr: SocketAddr,
    /// The permitted duration.
    pub duration_secs: u32,
}
