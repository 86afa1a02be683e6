//! The `terminal_ops` harness: one [`Endpoint`] (the terminal that ships:
//! the terminal and its peer sessions on one socket, seeded ChaCha8),
//! driven through the `Machine` contract by the simulator's one driver
//! (`tryst_tests::sim::driver::drive`), with a configuration from the input, a session server played with the real
//! Noise IK responder (accepting, refusing or answering nonsense to its
//! registrations, then sealing list requests, inquiries, address
//! notifications, extension answers and errors that name the terminal's
//! real request and session IDs), a trigger server played with correctly
//! tagged keepalive acks, triggers and end triggers, the app's calls
//! (connect, allow, disallow, answer, progress, finish), raw and
//! structure-aware garbage, replays and arbitrary clock moves.
//!
//! After every operation the harness drains the endpoint like a driver and
//! checks:
//! - `Output::Timeout` equals `poll_timeout()`, and no `Store` follows a
//!   `Transmit` (the driver asserts both);
//! - at most [`MAX_TERMINAL_QUEUED_TRANSMITS`] transmits and [`MAX_TERMINAL_QUEUED_EVENTS`]
//!   events come out of one operation;
//! - every transmit to the trigger server or upstream decodes; a datagram
//!   elsewhere is a peer packet of a session the harness notified; those
//!   to the trigger server
//!   are keepalives or trigger acks whose tags verify under the UDP key of
//!   the registration the terminal holds; the upstream stream carries
//!   handshake inits (valid for the session server's key, with a `Register`
//!   of the configured name, mode and identity) and records that open under
//!   the session server's end of the channel and decode;
//! - the terminal never runs more than [`MAX_SESSIONS`] sessions;
//! - after `handle_timeout(now)`, `poll_timeout()` is `None` or later than
//!   any time the terminal saw.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tryst_core::crypto::udp_auth;
use tryst_core::crypto::{Responder, SecureChannel, StaticKeypair};
use tryst_core::machine::Destination;
use tryst_core::peer::endpoint::{Endpoint, EndpointEvent, SessionIo, MAX_QUEUED_ENDPOINT_EVENTS};
use tryst_core::peer::packet::is_peer_packet;
use tryst_core::peer::session::PeerConfig;
use tryst_core::terminal::{
    JudgePolicy, TerminalConfig, TerminalEvent, MAX_SESSIONS, MAX_TERMINAL_QUEUED_EVENTS,
    MAX_TERMINAL_QUEUED_TRANSMITS,
};
use tryst_core::wire::{
    AddressNotification, DecisionMode, DeviceId, EndReason, ErrorCode, ErrorReply, ExtensionGrant,
    ExtensionRefusal, HandshakeReply, Message, Name, PermissionInquiry, PermissionListRequest,
    PublicKey, RegisterAck, Role, SessionId, SessionKey, UdpKey, Verdict, MAX_HANDSHAKE_LEN,
};

use tryst_core::time::Instant;
use tryst_tests::sim::driver::{drive, DriverOrder, Out};

use crate::fuzz_ops;
use crate::ops::{
    addr, encode, encode_plain, open, pick, push_bounded, read_input, seal, FuzzClock, TimeStep,
};

/// The trigger server's UDP address in the terminal's configuration.
pub const TS_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 3478));
/// Names of requesters and peers the harness uses.
pub const NAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];
/// The terminal's own name.
pub const OWN_NAME: &str = "home-camera";

/// The app's side of the endpoint's peer sessions: nothing to send; what
/// arrives is counted.
#[derive(Debug, Default)]
struct FuzzIo {
    received: u64,
}

impl SessionIo for FuzzIo {
    fn read_at(&mut self, _: &SessionId, _: u64, _: &mut [u8]) -> usize {
        0
    }
    fn stream_data(&mut self, _: &SessionId, _: u64, data: &[u8]) {
        self.received += data.len() as u64;
    }
    fn datagram(&mut self, _: &SessionId, data: &[u8]) {
        self.received += data.len() as u64;
    }
}

fuzz_ops! {
    /// The terminal's configuration, from the input.
    pub struct TermSetup {
        pub judge_by_app: bool,
        pub mode_judges: bool,
        pub keepalive_secs: u16,
        pub threshold_percent: u8,
        pub extension_secs: Option<u32>,
        pub connect_timeout_secs: u16,
        pub ask_timeout_secs: u16,
        /// Names (bits of `NAMES`) on the permission list at the start.
        pub allowed: u8,
    }
}

fuzz_ops! {
    /// Which counter the played trigger server puts in a tagged message.
    pub enum TsCounter {
        /// One more than the last it used.
        Next {},
        /// The last it used again (a replay with a fresh tag).
        Repeat {},
        /// Any value.
        Value { counter: u64 },
    }
}

fuzz_ops! {
    /// How the played session server answers a registration.
    pub enum RegAnswer<'a> {
        /// `RegisterAck` with a fresh device ID and UDP key.
        Accept {},
        /// `Error{RegistrationRefused}`.
        Refuse {},
        /// `Error{Busy}`.
        Busy {},
        /// Any message as the payload, on channel `channel`.
        Other { channel: u64, message: Message<'a> },
    }
}

fuzz_ops! {
    /// One thing that happens to the terminal.
    pub enum TermOp<'a> {
        /// The app starts the terminal.
        Start {},
        /// The session server answers the terminal's last handshake.
        Answer { answer: RegAnswer<'a> },
        /// The session server asks for the permission list.
        ListRequest { query_id: u32 },
        /// The session server asks about requester `NAMES[requester]`.
        Inquiry { query_id: u32, requester: u8 },
        /// The session server notifies a session: for one of the
        /// terminal's requests (`pick`) if `Connecting`.
        Notify { role: Role, pick: u8, session: u8, duration: u32, peer: u8 },
        /// The session server grants an extension.
        Grant { session: u8, duration: u32 },
        /// The session server refuses an extension.
        Refusal { session: u8 },
        /// The session server answers one of the terminal's requests with an error.
        Error { pick: u8, code: ErrorCode },
        /// The session server seals an arbitrary message.
        SsSend { message: Message<'a> },
        /// The session server seals arbitrary bytes.
        SsSendBytes { plain: &'a [u8] },
        /// The trigger server acknowledges one of the keepalives (`pick`).
        KeepaliveAck { pick: u8, interval: u16, observed: u8 },
        /// The trigger server triggers the terminal.
        Trigger { counter: TsCounter },
        /// The trigger server ends a session.
        EndTrigger { session: u8, counter: TsCounter },
        /// Something the harness sent before arrives again.
        Replay { back: u8 },
        /// Arbitrary bytes as a datagram from `from` (index 0: the trigger server).
        Datagram { from: u8, bytes: &'a [u8] },
        /// An arbitrary message as a datagram from `from`.
        DatagramMessage { from: u8, message: Message<'a> },
        /// Arbitrary bytes from the session server's stream.
        Upstream { bytes: &'a [u8] },
        /// An arbitrary message from the session server's stream.
        UpstreamMessage { message: Message<'a> },
        /// The stream to the session server is lost.
        UpstreamClosed {},
        /// The app asks for a peer.
        Connect { target: u8, duration: u32 },
        /// The app asks for a peer by any name (valid or not).
        ConnectName { target: &'a str },
        /// The app allows a name.
        Allow { name: u8 },
        /// The app allows any name (valid or not).
        AllowName { name: &'a str },
        /// The app disallows a name.
        Disallow { name: u8 },
        /// The app replaces the permission list.
        SetPermissions { mask: u8 },
        /// The app answers one of the open inquiries.
        AppAnswer { pick: u8, verdict: Verdict, query_id: Option<u32> },
        /// The peer channel reports progress on a session.
        Progress { session: u8, sent: u64, received: u64, active: bool },
        /// The app finishes a session.
        Finish { session: u8, reason: EndReason },
        /// The clock moves; `handle_timeout` runs.
        Time { step: TimeStep },
    }
}

/// What a run reached, for the seed corpus checks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TermSummary {
    /// Registrations accepted.
    pub registered: u32,
    /// Sessions that became ready.
    pub sessions: u32,
    /// Sessions that ended.
    pub ended: u32,
    /// Extension requests.
    pub extension_requests: u32,
    /// Trigger acks sent.
    pub trigger_acks: u32,
    /// Packets the endpoint's peer sessions sent.
    pub peer_packets: u32,
}

/// The played session server's view of one registration.
struct Registration {
    device: u64,
    channel: SecureChannel,
    udp_key: UdpKey,
}

struct Harness {
    t: Box<Endpoint<ChaCha8Rng>>,
    /// The app's side of the endpoint's peer sessions.
    io: FuzzIo,
    clock: FuzzClock,
    ss_kp: StaticKeypair,
    term_key: PublicKey,
    mode: DecisionMode,
    rng: ChaCha8Rng,
    /// Registrations by channel number.
    registrations: BTreeMap<u64, Registration>,
    next_device: u64,
    /// The channel number of the newest registration the harness accepted.
    current: Option<u64>,
    pending_init: Option<Vec<u8>>,
    /// Counter of the trigger server's triggers under the current key.
    trigger_counter: u64,
    keepalives: Vec<u64>,
    requests: Vec<u32>,
    inquiries: Vec<u32>,
    /// Datagrams and upstream messages sent, for replays.
    sent: Vec<(bool, Vec<u8>)>,
    summary: TermSummary,
}

/// Runs one input; returns what it reached.
pub fn run(data: &[u8]) -> TermSummary {
    let Some((setup, ops)) = read_input::<TermSetup, TermOp<'_>>(data) else {
        return TermSummary::default();
    };
    let mut h = Harness::new(&setup);
    for op in &ops {
        h.apply(op);
        h.settle();
    }
    h.summary
}

fn session(index: u8) -> SessionId {
    SessionId([index % 6; 16])
}

fn peer_name(index: u8) -> &'static str {
    NAMES[usize::from(index) % NAMES.len()]
}

impl Harness {
    fn new(setup: &TermSetup) -> Harness {
        let mut rng = ChaCha8Rng::seed_from_u64(0x7e);
        let ss_kp = StaticKeypair::generate(&mut rng);
        let term_kp = StaticKeypair::generate(&mut rng);
        let mut config =
            TerminalConfig::new(OWN_NAME, TS_ADDR, ss_kp.public_key()).expect("a valid name");
        config.mode = if setup.mode_judges {
            DecisionMode::TerminalJudges
        } else {
            DecisionMode::PermissionList
        };
        config.judge = if setup.judge_by_app {
            JudgePolicy::Ask
        } else {
            JudgePolicy::List
        };
        config.keepalive_interval = Duration::from_secs(u64::from(setup.keepalive_secs));
        config.extension_threshold_percent = setup.threshold_percent;
        config.extension_secs = setup.extension_secs;
        config.connect_timeout = Duration::from_secs(u64::from(setup.connect_timeout_secs));
        config.ask_timeout = Duration::from_secs(u64::from(setup.ask_timeout_secs));
        let mode = config.mode;
        let term_key = term_kp.public_key();
        let mut t = Box::new(Endpoint::new(
            config,
            term_kp,
            ChaCha8Rng::seed_from_u64(0x7e7e),
            ChaCha8Rng::seed_from_u64(0x9e9e),
            PeerConfig::default(),
        ));
        for (i, name) in NAMES.iter().enumerate() {
            if setup.allowed & (1 << i) != 0 {
                t.allow(name).expect("room and a valid name");
            }
        }
        Harness {
            t,
            io: FuzzIo::default(),
            clock: FuzzClock::default(),
            ss_kp,
            term_key,
            mode,
            rng,
            registrations: BTreeMap::new(),
            next_device: 0x1000,
            current: None,
            pending_init: None,
            trigger_counter: 0,
            keepalives: Vec::new(),
            requests: Vec::new(),
            inquiries: Vec::new(),
            sent: Vec::new(),
            summary: TermSummary::default(),
        }
    }

    fn apply(&mut self, op: &TermOp<'_>) {
        let now = self.clock.now;
        match op {
            TermOp::Start {} => self.t.start(now),
            TermOp::Answer { answer } => self.answer_registration(answer),
            TermOp::ListRequest { query_id } => self.ss_send(
                &PermissionListRequest {
                    query_id: *query_id,
                }
                .into(),
            ),
            TermOp::Inquiry {
                query_id,
                requester,
            } => self.ss_send(
                &PermissionInquiry {
                    query_id: *query_id,
                    requester: Name::new(peer_name(*requester)).expect("valid"),
                }
                .into(),
            ),
            TermOp::Notify {
                role,
                pick,
                session: s,
                duration,
                peer,
            } => {
                let request_id = match role {
                    Role::Connected => 0,
                    Role::Connecting => crate::ops::pick(*pick, self.requests.len())
                        .map_or(u32::from(*pick), |i| self.requests[i]),
                };
                let notification = AddressNotification {
                    request_id,
                    session_id: session(*s),
                    role: *role,
                    duration_secs: *duration,
                    session_key: SessionKey([*s; 32]),
                    peer_key: PublicKey([peer.wrapping_add(9); 32]),
                    peer_addr: addr(*peer),
                    peer_name: Name::new(peer_name(*peer)).expect("valid"),
                    relay: None,
                };
                self.ss_send(&notification.into());
            }
            TermOp::Grant {
                session: s,
                duration,
            } => self.ss_send(
                &ExtensionGrant {
                    session_id: session(*s),
                    duration_secs: *duration,
                }
                .into(),
            ),
            TermOp::Refusal { session: s } => self.ss_send(
                &ExtensionRefusal {
                    session_id: session(*s),
                }
                .into(),
            ),
            TermOp::Error { pick, code } => {
                let request_id = crate::ops::pick(*pick, self.requests.len())
                    .map_or(u32::from(*pick), |i| self.requests[i]);
                self.ss_send(
                    &ErrorReply {
                        request_id,
                        code: *code,
                    }
                    .into(),
                );
            }
            TermOp::SsSend { message } => {
                if let Some(plain) = encode_plain(message) {
                    self.ss_send_plain(&plain);
                }
            }
            TermOp::SsSendBytes { plain } => self.ss_send_plain(plain),
            TermOp::KeepaliveAck {
                pick,
                interval,
                observed,
            } => {
                let Some(key) = self.current_udp_key() else {
                    return;
                };
                let counter = crate::ops::pick(*pick, self.keepalives.len())
                    .map_or(u64::from(*pick), |i| self.keepalives[i]);
                let ack = udp_auth::seal_keepalive_ack(&key, counter, *interval, addr(*observed));
                self.datagram(TS_ADDR, &encode(&ack.into()).expect("fits"));
            }
            TermOp::Trigger { counter } => {
                let Some(key) = self.current_udp_key() else {
                    return;
                };
                let counter = self.trigger_counter(counter);
                let trigger = udp_auth::seal_trigger(&key, counter);
                self.datagram(TS_ADDR, &encode(&trigger.into()).expect("fits"));
            }
            TermOp::EndTrigger {
                session: s,
                counter,
            } => {
                let Some(key) = self.current_udp_key() else {
                    return;
                };
                let counter = self.trigger_counter(counter);
                let end = udp_auth::seal_end_trigger(&key, counter, session(*s));
                self.datagram(TS_ADDR, &encode(&end.into()).expect("fits"));
            }
            TermOp::Replay { back } => {
                let Some(i) = pick(*back, self.sent.len()) else {
                    return;
                };
                let (udp, bytes) = self.sent[i].clone();
                if udp {
                    self.udp_in(now, TS_ADDR, &bytes);
                } else {
                    self.t.handle_upstream(now, &bytes);
                }
            }
            TermOp::Datagram { from, bytes } => {
                self.udp_in(now, Self::source(*from), bytes);
            }
            TermOp::DatagramMessage { from, message } => {
                if let Some(bytes) = encode(message) {
                    self.udp_in(now, Self::source(*from), &bytes);
                }
            }
            TermOp::Upstream { bytes } => self.t.handle_upstream(now, bytes),
            TermOp::UpstreamMessage { message } => {
                if let Some(bytes) = encode(message) {
                    self.t.handle_upstream(now, &bytes);
                }
            }
            TermOp::UpstreamClosed {} => self.t.handle_upstream_closed(now),
            TermOp::Connect { target, duration } => {
                if let Ok(id) = self.t.connect(now, peer_name(*target), *duration) {
                    push_bounded(&mut self.requests, 16, id);
                }
            }
            TermOp::ConnectName { target } => {
                if let Ok(id) = self.t.connect(now, target, 0) {
                    push_bounded(&mut self.requests, 16, id);
                }
            }
            TermOp::Allow { name } => {
                let _ = self.t.allow(peer_name(*name));
            }
            TermOp::AllowName { name } => {
                let _ = self.t.allow(name);
            }
            TermOp::Disallow { name } => {
                let _ = self.t.disallow(peer_name(*name));
            }
            TermOp::SetPermissions { mask } => {
                let names: Vec<&str> = (0..NAMES.len())
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| NAMES[i])
                    .collect();
                self.t.set_permissions(&names).expect("few valid names");
            }
            TermOp::AppAnswer {
                pick,
                verdict,
                query_id,
            } => {
                let query = query_id.or_else(|| {
                    crate::ops::pick(*pick, self.inquiries.len()).map(|i| self.inquiries[i])
                });
                if let Some(query) = query {
                    let _ = self.t.answer(now, query, *verdict);
                }
            }
            TermOp::Progress {
                session: s,
                sent,
                received,
                active,
            } => {
                let _ = self
                    .t
                    .transfer_progress(&session(*s), *sent, *received, *active);
            }
            TermOp::Finish { session: s, reason } => {
                let _ = self.t.end_session(now, &session(*s), *reason);
            }
            TermOp::Time { step } => {
                self.clock.step(step, self.t.poll_timeout());
                self.t.handle_timeout(self.clock.now);
                self.clock.check_timeout("terminal", self.t.poll_timeout());
            }
        }
    }

    /// Index 0 is the trigger server; the others are strangers.
    /// A datagram arrives on the endpoint's socket (decrypted in place, so
    /// a copy).
    fn udp_in(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let mut datagram = bytes.to_vec();
        self.t.handle_udp(now, from, &mut datagram, &mut self.io);
    }

    fn source(from: u8) -> SocketAddr {
        if from.is_multiple_of(4) {
            TS_ADDR
        } else {
            addr(from)
        }
    }

    fn current_udp_key(&self) -> Option<UdpKey> {
        self.current
            .and_then(|d| self.registrations.get(&d))
            .map(|r| r.udp_key)
    }

    fn trigger_counter(&mut self, counter: &TsCounter) -> u64 {
        let value = match counter {
            TsCounter::Next {} => self.trigger_counter.saturating_add(1),
            TsCounter::Repeat {} => self.trigger_counter,
            TsCounter::Value { counter } => *counter,
        };
        self.trigger_counter = self.trigger_counter.max(value);
        value
    }

    fn datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.udp_in(self.clock.now, from, bytes);
        push_bounded(&mut self.sent, 32, (true, bytes.to_vec()));
    }

    fn answer_registration(&mut self, answer: &RegAnswer<'_>) {
        let Some(init) = self.pending_init.take() else {
            return;
        };
        let Ok(Message::HandshakeInit(init)) = Message::decode(&init) else {
            unreachable!("only handshake inits are kept");
        };
        let mut payload = vec![0u8; MAX_HANDSHAKE_LEN];
        let (responder, n) = Responder::accept(
            &mut self.rng,
            self.clock.now,
            &self.ss_kp,
            &init,
            &mut payload,
        )
        .unwrap_or_else(|e| panic!("the terminal's handshake is refused: {e}"));
        match Message::decode(&payload[..n]) {
            Ok(Message::Register(register)) => {
                assert_eq!(register.name.as_str(), OWN_NAME);
                assert_eq!(register.identity, self.term_key);
                assert_eq!(responder.initiator_key(), self.term_key);
                assert_eq!(register.mode, self.mode);
            }
            other => panic!("a registration carries {other:?}"),
        }
        let device = self.next_device;
        let udp_key = UdpKey([(device & 0xff) as u8; 32]);
        let (channel_number, reply_message): (u64, Message<'_>) = match answer {
            RegAnswer::Accept {} => (
                device,
                RegisterAck {
                    device_id: DeviceId(device),
                    udp_key,
                }
                .into(),
            ),
            RegAnswer::Refuse {} => (
                0,
                ErrorReply {
                    request_id: 0,
                    code: ErrorCode::RegistrationRefused,
                }
                .into(),
            ),
            RegAnswer::Busy {} => (
                0,
                ErrorReply {
                    request_id: 0,
                    code: ErrorCode::Busy,
                }
                .into(),
            ),
            RegAnswer::Other { channel, message } => (*channel, message.clone()),
        };
        let Some(reply_plain) = encode_plain(&reply_message) else {
            return;
        };
        let mut noise = vec![0u8; MAX_HANDSHAKE_LEN];
        let Ok((channel, m)) = responder.reply(channel_number, &reply_plain, &mut noise) else {
            return;
        };
        let reply = encode(
            &HandshakeReply {
                channel: channel_number,
                noise: &noise[..m],
            }
            .into(),
        )
        .expect("fits");
        let accepted = matches!(reply_message, Message::RegisterAck(_));
        if let Message::RegisterAck(ack) = reply_message {
            self.next_device += 1;
            self.registrations.insert(
                channel_number,
                Registration {
                    device: ack.device_id.0,
                    channel,
                    udp_key: ack.udp_key,
                },
            );
            self.current = Some(channel_number);
            self.trigger_counter = 0;
            self.keepalives.clear();
        }
        self.t.handle_upstream(self.clock.now, &reply);
        push_bounded(&mut self.sent, 32, (false, reply));
        if accepted {
            // As the real server does once the trigger server holds the key.
            self.ss_send(&Message::KeyReady(tryst_core::wire::KeyReady));
        }
    }

    fn ss_send(&mut self, message: &Message<'_>) {
        let plain = encode_plain(message).expect("the harness's messages fit");
        self.ss_send_plain(&plain);
    }

    fn ss_send_plain(&mut self, plain: &[u8]) {
        let Some(registration) = self.current.and_then(|d| self.registrations.get_mut(&d)) else {
            return;
        };
        let Some(bytes) = seal(&mut registration.channel, plain) else {
            return;
        };
        self.t.handle_upstream(self.clock.now, &bytes);
        push_bounded(&mut self.sent, 32, (false, bytes));
    }

    /// Drains the endpoint through the simulator's one driver (which checks
    /// that `Output::Timeout` equals `poll_timeout()` and that no `Store`
    /// follows a `Transmit`) and checks every output.
    fn settle(&mut self) {
        let mut outs = Vec::new();
        let _ = drive(
            &mut *self.t,
            self.clock.now,
            &mut self.io,
            DriverOrder::StoreFirst,
            &mut outs,
        );
        let (mut transmits, mut events) = (0, 0);
        for out in outs {
            match out {
                Out::Store(never) => match never {},
                Out::Close(c) => panic!("a terminal accepts no streams: {c:?}"),
                Out::Transmit(Destination::Udp(to), payload) if to != TS_ADDR => {
                    // Only the peer sessions send elsewhere.
                    assert!(
                        is_peer_packet(&payload),
                        "a datagram to {to} that is no peer packet"
                    );
                    self.summary.peer_packets += 1;
                }
                Out::Transmit(destination, payload) => {
                    transmits += 1;
                    let message = Message::decode(&payload).unwrap_or_else(|e| {
                        panic!("a transmit does not decode ({e}): {destination:?}")
                    });
                    match destination {
                        Destination::Udp(_) => self.check_datagram(&message),
                        Destination::Upstream => self.on_upstream(&payload, &message),
                        Destination::Connection(c) => {
                            panic!("a terminal accepts no streams: {c:?}")
                        }
                        // Only a peer packet goes to a relay stream; it
                        // never decodes as a message (checked above).
                        Destination::RelayStream(r) => {
                            panic!("a message on the relay stream to {r}")
                        }
                    }
                }
                Out::Event(EndpointEvent::Peer { .. }) => {}
                Out::Event(EndpointEvent::Terminal(event)) => {
                    events += 1;
                    match event {
                        TerminalEvent::Registered { .. } => self.summary.registered += 1,
                        TerminalEvent::SessionReady { .. } => self.summary.sessions += 1,
                        TerminalEvent::SessionEnded { .. } => self.summary.ended += 1,
                        TerminalEvent::ExtensionRequested { .. } => {
                            self.summary.extension_requests += 1
                        }
                        TerminalEvent::PermissionAsked { query_id, .. } => {
                            push_bounded(&mut self.inquiries, 8, query_id);
                        }
                        _ => {}
                    }
                }
            }
        }
        assert!(
            transmits <= MAX_TERMINAL_QUEUED_TRANSMITS,
            "{transmits} transmits from one input"
        );
        assert!(
            events <= MAX_TERMINAL_QUEUED_EVENTS.max(MAX_QUEUED_ENDPOINT_EVENTS),
            "{events} events from one input"
        );
        assert!(self.t.terminal().session_count() <= MAX_SESSIONS);
    }

    /// Whether `message` carries a tag under the UDP key of a registration
    /// the harness issued for its device.
    fn tagged_by_a_registration(&self, device: DeviceId, message: &Message<'_>) -> bool {
        self.registrations
            .values()
            .filter(|r| r.device == device.0)
            .any(|r| udp_auth::verify_message(&r.udp_key, message).is_ok())
    }

    fn check_datagram(&mut self, message: &Message<'_>) {
        match message {
            Message::Keepalive(k) => {
                assert!(
                    self.tagged_by_a_registration(k.device_id, message),
                    "a keepalive under no key of its device: {k:?}"
                );
                push_bounded(&mut self.keepalives, 8, k.counter);
            }
            Message::TriggerAck(a) => {
                assert!(
                    self.tagged_by_a_registration(a.device_id, message),
                    "a trigger ack under no key of its device: {a:?}"
                );
                self.summary.trigger_acks += 1;
            }
            other => panic!("the terminal sent {other:?} by UDP"),
        }
    }

    fn on_upstream(&mut self, bytes: &[u8], message: &Message<'_>) {
        match message {
            Message::HandshakeInit(_) => self.pending_init = Some(bytes.to_vec()),
            Message::Sealed(record) => {
                let Some(registration) = self.registrations.get_mut(&record.channel) else {
                    // A channel the harness never issued (an `Other` answer
                    // with a made-up number): nothing to open it with.
                    return;
                };
                let plain = open(&mut registration.channel, bytes)
                    .unwrap_or_else(|e| panic!("a record from the terminal fails to open: {e}"));
                match Message::decode(&plain) {
                    Ok(Message::ConnectionRequest(r)) => {
                        assert_eq!(r.requester.as_str(), OWN_NAME);
                    }
                    Ok(
                        Message::Poll(_)
                        | Message::PermissionList(_)
                        | Message::PermissionAnswer(_)
                        | Message::ExtensionRequest(_)
                        | Message::EndNotification(_),
                    ) => {}
                    other => panic!("the terminal sealed {other:?}"),
                }
            }
            other => panic!("the terminal sent {other:?} upstream"),
        }
    }
}
