//! The `trigger_server_ops` harness: one [`TriggerServer`] (seeded
//! ChaCha8), a few session servers played with the real Noise IK initiator
//! on a few stream connections (two with allowed keys, one not), and a few
//! terminals that send correctly tagged keepalives and trigger acks from a
//! few addresses, next to raw and structure-aware garbage, stream churn and
//! arbitrary clock moves.
//!
//! After every operation the harness drains the machine through the
//! simulator's one driver (`tryst_tests::sim::driver::drive`, the `Machine`
//! contract) and checks:
//! - `Output::Timeout` equals `poll_timeout()`; the machine closes only a
//!   connection whose link it refused in the same drain (`LinkRefused`),
//!   and the harness then drops that link;
//! - at most [`MAX_TRIGGER_QUEUED_TRANSMITS`] transmits and [`MAX_TRIGGER_QUEUED_EVENTS`]
//!   events come out of one operation;
//! - every transmit decodes; nothing goes upstream; a UDP datagram is a
//!   keepalive ack, trigger or end trigger whose tag verifies under a key
//!   the harness installed, and it goes only to an address that delivered
//!   an authentic keepalive (no reply to unauthenticated traffic); an ack
//!   names as observed the address it goes to;
//! - every sealed record on a connection opens under the harness's end of
//!   that connection's link (unless the harness could not finish that
//!   handshake) and decodes to a `TriggerResult` or an `AddressReply`;
//! - a record the server accepted once is refused when replayed;
//! - after `handle_timeout(now)`, `poll_timeout()` is `None` or later than
//!   any time the machine saw; the device and pending-trigger counts stay
//!   within the configured bounds;
//! - an `AddressChanged` event names an address that proved a keepalive.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tryst_core::crypto::udp_auth;
use tryst_core::crypto::{Initiator, SecureChannel, StaticKeypair};
use tryst_core::machine::{ConnectionId, Destination};
use tryst_core::trigger_server::{
    TriggerConfig, TriggerEvent, TriggerServer, TriggerStats, MAX_TRIGGER_QUEUED_EVENTS,
    MAX_TRIGGER_QUEUED_TRANSMITS,
};
use tryst_core::wire::{
    AddressInquiry, DeviceId, EndTriggerRequest, HandshakeInit, KeyInstall, KeyRevoke, Message,
    Poll, SessionId, TriggerRequest, UdpKey, MAX_HANDSHAKE_LEN, MAX_PLAIN_MESSAGE_LEN,
};
use tryst_tests::sim::driver::{drive, DriverOrder, Out};

use crate::fuzz_ops;
use crate::ops::{
    addr, encode, encode_plain, open, pick, push_bounded, read_input, seal, FuzzClock, TimeStep,
};

/// Session servers the harness plays: 0 and 1 are allowed, 2 is not.
pub const PLAYERS: u8 = 3;
/// Stream connections the harness uses.
pub const CONNS: u8 = 4;
/// Terminals the harness plays.
pub const TERMS: u8 = 4;

fuzz_ops! {
    /// The trigger server's configuration, from the input (clamped by the machine).
    pub struct TsSetup {
        pub keepalive_interval_secs: u16,
        pub trigger_resend_millis: u16,
        pub trigger_sends: u8,
        /// 1 + this % 8 devices.
        pub max_devices: u8,
        /// 1 + this % 16 pending triggers.
        pub max_pending_triggers: u8,
    }
}

fuzz_ops! {
    /// Which counter a played terminal puts in a correctly tagged message.
    pub enum Counter {
        /// One more than the last it used.
        Next {},
        /// The last it used again (a replay with a fresh tag).
        Repeat {},
        /// Any value.
        Value { counter: u64 },
    }
}

fuzz_ops! {
    /// One thing that happens to the trigger server.
    pub enum TsOp<'a> {
        /// Terminal `term` sends a correctly tagged keepalive from address `from`.
        Keepalive { term: u8, from: u8, counter: Counter },
        /// Terminal `term` acknowledges one of the triggers it received
        /// (`pick`), correctly tagged; with no trigger seen, counter `pick`.
        TriggerAck { term: u8, from: u8, pick: u8 },
        /// Session server `player` runs a link handshake on connection `conn`.
        Handshake { conn: u8, player: u8 },
        /// The link on `conn` installs terminal `term`'s key (a new key if `rekey`).
        Install { conn: u8, term: u8, rekey: bool },
        /// The link on `conn` revokes terminal `term`.
        Revoke { conn: u8, term: u8 },
        /// The link on `conn` asks for a trigger (or an end trigger) to `term`.
        Trigger { conn: u8, term: u8, op_id: u32, end: bool },
        /// The link on `conn` asks for the addresses of two terminals.
        Inquire { conn: u8, first: u8, second: u8, op_id: u32 },
        /// The link on `conn` seals an arbitrary message.
        Sealed { conn: u8, message: Message<'a> },
        /// The link on `conn` seals arbitrary bytes.
        SealedBytes { conn: u8, plain: &'a [u8] },
        /// A record the harness sent before is sent again on its connection.
        ReplayRecord { back: u8 },
        /// A datagram the harness sent before is sent again, from `from`.
        ReplayDatagram { back: u8, from: u8 },
        /// The driver accepts connection `conn` from address `from`.
        OpenConn { conn: u8, from: u8 },
        /// Connection `conn` closes.
        CloseConn { conn: u8 },
        /// Arbitrary bytes as a datagram from `from`.
        Datagram { from: u8, bytes: &'a [u8] },
        /// An arbitrary message as a datagram from `from`.
        DatagramMessage { from: u8, message: Message<'a> },
        /// Arbitrary bytes as a stream message on `conn`.
        Stream { conn: u8, bytes: &'a [u8] },
        /// An arbitrary message as a stream message on `conn`.
        StreamMessage { conn: u8, message: Message<'a> },
        /// The clock moves; `handle_timeout` runs.
        Time { step: TimeStep },
    }
}

/// What a run reached, for the seed corpus checks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TsSummary {
    /// Link handshakes the harness completed.
    pub links: u32,
    /// Keepalives acknowledged.
    pub keepalive_acks: u32,
    /// Triggers and end triggers the terminals received.
    pub triggers: u32,
    /// Trigger results and address replies the session servers opened.
    pub results: u32,
}

struct Link {
    channel: Option<SecureChannel>,
    pending: Option<Initiator>,
    /// The harness failed to finish a handshake the server completed: the
    /// server's end of this connection is unknown to the harness.
    desynced: bool,
}

struct Term {
    id: DeviceId,
    generation: u8,
    last_counter: u64,
    triggers: Vec<u64>,
}

impl Term {
    fn key(index: u8, generation: u8) -> UdpKey {
        let mut key = [0x5a; 32];
        key[0] = index;
        key[1] = generation;
        UdpKey(key)
    }
}

struct Record {
    conn: u8,
    bytes: Vec<u8>,
    accepted: bool,
}

struct Harness {
    ts: TriggerServer<ChaCha8Rng>,
    clock: FuzzClock,
    rng: ChaCha8Rng,
    players: Vec<StaticKeypair>,
    links: BTreeMap<u8, Link>,
    terms: Vec<Term>,
    /// Every key the harness ever installed, by device.
    keys: BTreeMap<u64, BTreeSet<[u8; 32]>>,
    /// Addresses that delivered an authentic keepalive.
    proven: BTreeSet<SocketAddr>,
    /// Links refused and not closed yet.
    refused: BTreeSet<ConnectionId>,
    /// Closes the server accounted for otherwise (evictions, the stream
    /// guard's refusals and deadlines) as of the last settle.
    other_closes: u64,
    records: Vec<Record>,
    datagrams: Vec<Vec<u8>>,
    summary: TsSummary,
}

/// Runs one input; returns what it reached.
pub fn run(data: &[u8]) -> TsSummary {
    let Some((setup, ops)) = read_input::<TsSetup, TsOp<'_>>(data) else {
        return TsSummary::default();
    };
    let mut h = Harness::new(&setup);
    for op in &ops {
        h.apply(op);
        h.settle();
    }
    h.summary
}

fn conn_id(conn: u8) -> ConnectionId {
    ConnectionId(u64::from(conn % CONNS))
}

fn refusals(stats: &TriggerStats) -> u64 {
    stats.records_refused + stats.stream_ignored + stats.sealed_before_handshake
}

impl Harness {
    fn new(setup: &TsSetup) -> Harness {
        let mut rng = ChaCha8Rng::seed_from_u64(0x7a1c);
        let ts_key = StaticKeypair::generate(&mut rng);
        let players: Vec<StaticKeypair> = (0..PLAYERS)
            .map(|_| StaticKeypair::generate(&mut rng))
            .collect();
        let config = TriggerConfig {
            keepalive_interval: Duration::from_secs(u64::from(setup.keepalive_interval_secs)),
            trigger_resend: Duration::from_millis(u64::from(setup.trigger_resend_millis)),
            trigger_sends: setup.trigger_sends,
            max_devices: 1 + usize::from(setup.max_devices % 8),
            max_pending_triggers: 1 + usize::from(setup.max_pending_triggers % 16),
            ..TriggerConfig::default()
        };
        let allowed = [players[0].public_key(), players[1].public_key()];
        let ts = TriggerServer::new(config, ts_key, &allowed, ChaCha8Rng::seed_from_u64(0x75));
        let terms = (0..TERMS)
            .map(|i| Term {
                id: DeviceId(0x7000 + u64::from(i)),
                generation: 0,
                last_counter: 0,
                triggers: Vec::new(),
            })
            .collect();
        Harness {
            ts,
            clock: FuzzClock::default(),
            rng,
            players,
            links: BTreeMap::new(),
            terms,
            keys: BTreeMap::new(),
            proven: BTreeSet::new(),
            refused: BTreeSet::new(),
            other_closes: 0,
            records: Vec::new(),
            datagrams: Vec::new(),
            summary: TsSummary::default(),
        }
    }

    fn term_key(&self, term: u8) -> UdpKey {
        let t = term % TERMS;
        Term::key(t, self.terms[usize::from(t)].generation)
    }

    fn apply(&mut self, op: &TsOp<'_>) {
        let now = self.clock.now;
        match op {
            TsOp::Keepalive {
                term,
                from,
                counter,
            } => {
                let key = self.term_key(*term);
                let t = &mut self.terms[usize::from(term % TERMS)];
                let value = match counter {
                    Counter::Next {} => t.last_counter.saturating_add(1),
                    Counter::Repeat {} => t.last_counter,
                    Counter::Value { counter } => *counter,
                };
                t.last_counter = t.last_counter.max(value);
                let keepalive = udp_auth::seal_keepalive(&key, t.id, value);
                let bytes = encode(&keepalive.into()).expect("a keepalive encodes");
                self.deliver_datagram(addr(*from), &bytes);
                push_bounded(&mut self.datagrams, 32, bytes);
            }
            TsOp::TriggerAck { term, from, pick } => {
                let key = self.term_key(*term);
                let t = &self.terms[usize::from(term % TERMS)];
                let counter = crate::ops::pick(*pick, t.triggers.len())
                    .map_or(u64::from(*pick), |i| t.triggers[i]);
                let ack = udp_auth::seal_trigger_ack(&key, t.id, counter);
                let bytes = encode(&ack.into()).expect("an ack encodes");
                self.deliver_datagram(addr(*from), &bytes);
                push_bounded(&mut self.datagrams, 32, bytes);
            }
            TsOp::Handshake { conn, player } => self.handshake(*conn, *player),
            TsOp::Install { conn, term, rekey } => {
                let t = term % TERMS;
                if *rekey {
                    let term = &mut self.terms[usize::from(t)];
                    term.generation = term.generation.wrapping_add(1);
                    term.last_counter = 0;
                }
                let udp_key = self.term_key(t);
                let device_id = self.terms[usize::from(t)].id;
                self.send_sealed(
                    *conn,
                    &KeyInstall {
                        device_id,
                        udp_key,
                        local: None,
                    }
                    .into(),
                );
            }
            TsOp::Revoke { conn, term } => {
                let device_id = self.terms[usize::from(term % TERMS)].id;
                self.send_sealed(*conn, &KeyRevoke { device_id }.into());
            }
            TsOp::Trigger {
                conn,
                term,
                op_id,
                end,
            } => {
                let device_id = self.terms[usize::from(term % TERMS)].id;
                let message: Message<'_> = if *end {
                    EndTriggerRequest {
                        op_id: *op_id,
                        device_id,
                        session_id: SessionId([*term; 16]),
                    }
                    .into()
                } else {
                    TriggerRequest {
                        op_id: *op_id,
                        device_id,
                    }
                    .into()
                };
                self.send_sealed(*conn, &message);
            }
            TsOp::Inquire {
                conn,
                first,
                second,
                op_id,
            } => {
                let inquiry = AddressInquiry {
                    op_id: *op_id,
                    first: self.terms[usize::from(first % TERMS)].id,
                    second: self.terms[usize::from(second % TERMS)].id,
                };
                self.send_sealed(*conn, &inquiry.into());
            }
            TsOp::Sealed { conn, message } => {
                if let Some(plain) = encode_plain(message) {
                    self.send_sealed_bytes(*conn, &plain);
                }
            }
            TsOp::SealedBytes { conn, plain } => self.send_sealed_bytes(*conn, plain),
            TsOp::ReplayRecord { back } => {
                let Some(i) = pick(*back, self.records.len()) else {
                    return;
                };
                let record = &self.records[i];
                let (conn, bytes, accepted) = (record.conn, record.bytes.clone(), record.accepted);
                let before = refusals(self.ts.stats());
                self.ts.handle_stream(now, conn_id(conn), &bytes);
                if accepted {
                    assert_eq!(
                        refusals(self.ts.stats()),
                        before + 1,
                        "a record accepted once was not refused when replayed"
                    );
                }
            }
            TsOp::ReplayDatagram { back, from } => {
                if let Some(i) = pick(*back, self.datagrams.len()) {
                    let bytes = self.datagrams[i].clone();
                    self.deliver_datagram(addr(*from), &bytes);
                }
            }
            TsOp::OpenConn { conn, from } => {
                let c = conn % CONNS;
                self.ts
                    .handle_connection_opened(now, conn_id(c), addr(*from));
                self.links.remove(&c);
            }
            TsOp::CloseConn { conn } => {
                let c = conn % CONNS;
                self.ts.handle_connection_closed(now, conn_id(c));
                self.links.remove(&c);
            }
            TsOp::Datagram { from, bytes } => self.deliver_datagram(addr(*from), bytes),
            TsOp::DatagramMessage { from, message } => {
                if let Some(bytes) = encode(message) {
                    self.deliver_datagram(addr(*from), &bytes);
                }
            }
            TsOp::Stream { conn, bytes } => self.ts.handle_stream(now, conn_id(*conn), bytes),
            TsOp::StreamMessage { conn, message } => {
                if let Some(bytes) = encode(message) {
                    self.ts.handle_stream(now, conn_id(*conn), &bytes);
                }
            }
            TsOp::Time { step } => {
                self.clock.step(step, self.ts.poll_timeout());
                self.ts.handle_timeout(self.clock.now);
                self.clock
                    .check_timeout("trigger server", self.ts.poll_timeout());
            }
        }
    }

    /// Delivers a datagram, noting an authentic keepalive's source address.
    fn deliver_datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        if let Ok(Message::Keepalive(k)) = Message::decode(bytes) {
            let authentic = self.keys.get(&k.device_id.0).is_some_and(|keys| {
                keys.iter()
                    .any(|key| udp_auth::verify(&UdpKey(*key), &k).is_ok())
            });
            if authentic {
                self.proven.insert(from);
            }
        }
        self.ts.handle_udp(self.clock.now, from, bytes);
    }

    fn handshake(&mut self, conn: u8, player: u8) {
        let c = conn % CONNS;
        let p = player % PLAYERS;
        let payload = encode(&Poll.into()).expect("Poll encodes");
        let mut noise = vec![0u8; MAX_HANDSHAKE_LEN];
        let ts_key = self.ts.public_key();
        let Ok((initiator, n)) = Initiator::start(
            &mut self.rng,
            self.clock.now,
            &self.players[usize::from(p)],
            &ts_key,
            &payload,
            &mut noise,
        ) else {
            return;
        };
        let init = encode(&HandshakeInit { noise: &noise[..n] }.into()).expect("fits");
        let link = self.links.entry(c).or_insert(Link {
            channel: None,
            pending: None,
            desynced: false,
        });
        link.pending = Some(initiator);
        self.ts.handle_stream(self.clock.now, conn_id(c), &init);
    }

    fn send_sealed(&mut self, conn: u8, message: &Message<'_>) {
        let plain = encode_plain(message).expect("interserver messages are small");
        self.send_sealed_bytes(conn, &plain);
    }

    fn send_sealed_bytes(&mut self, conn: u8, plain: &[u8]) {
        let c = conn % CONNS;
        let Some(channel) = self.links.get_mut(&c).and_then(|l| l.channel.as_mut()) else {
            return;
        };
        let Some(bytes) = seal(channel, plain) else {
            return;
        };
        // Every key a link may install (by the `Install` operation or by an
        // arbitrary sealed message) counts as installed.
        let sealed_plain = &plain[..plain.len().min(MAX_PLAIN_MESSAGE_LEN)];
        if let Ok(Message::KeyInstall(install)) = Message::decode(sealed_plain) {
            self.keys
                .entry(install.device_id.0)
                .or_default()
                .insert(install.udp_key.0);
        }
        let before = refusals(self.ts.stats());
        self.ts.handle_stream(self.clock.now, conn_id(c), &bytes);
        let accepted = refusals(self.ts.stats()) == before;
        push_bounded(
            &mut self.records,
            64,
            Record {
                conn: c,
                bytes,
                accepted,
            },
        );
    }

    /// Closes the server counted that are not link refusals.
    fn other_closes_so_far(&self) -> u64 {
        let g = self.ts.stream_guard_counters();
        self.ts.stats().connections_evicted
            + g.refused_per_source
            + g.refused_table_full
            + g.closed_no_first_message
            + g.closed_idle
    }

    /// Drains the machine as a driver would and checks every output.
    fn settle(&mut self) {
        let mut outs = Vec::new();
        let _ = drive(
            &mut self.ts,
            self.clock.now,
            &mut (),
            DriverOrder::StoreFirst,
            &mut outs,
        );
        let (mut transmits, mut events) = (0, 0);
        let mut closed = Vec::new();
        for out in outs {
            match out {
                Out::Store(never) => match never {},
                Out::Close(conn) => closed.push(conn),
                Out::Transmit(destination, payload) => {
                    transmits += 1;
                    let message = Message::decode(&payload).unwrap_or_else(|e| {
                        panic!("a transmit does not decode ({e}): {destination:?}")
                    });
                    match destination {
                        Destination::Udp(to) => self.check_datagram(to, &message),
                        Destination::Connection(conn) => {
                            let c = u8::try_from(conn.0).expect("the harness uses few connections");
                            self.on_stream_transmit(c, &payload, &message);
                        }
                        Destination::Upstream | Destination::RelayStream(_) => {
                            panic!("the trigger server has no upstream")
                        }
                    }
                }
                Out::Event(event) => {
                    events += 1;
                    match event {
                        TriggerEvent::AddressChanged { addr, .. } => assert!(
                            self.proven.contains(&addr),
                            "address {addr} recorded without an authentic keepalive from it"
                        ),
                        TriggerEvent::LinkRefused { conn, .. } => {
                            self.refused.insert(conn);
                        }
                        _ => {}
                    }
                }
            }
        }
        // A stream is closed only when its link was refused (its event in
        // the same drain), or for a reason the server counted: an eviction,
        // or the stream guard (over its source's cap, no first message in
        // time, no link for too long). The driver closes the socket, so the
        // harness's link is gone.
        let other_closes = self.other_closes_so_far();
        let mut unexplained = 0;
        for conn in closed {
            if !self.refused.remove(&conn) {
                unexplained += 1;
            }
            if let Ok(c) = u8::try_from(conn.0) {
                self.links.remove(&c);
            }
        }
        assert!(
            unexplained <= other_closes - self.other_closes,
            "{unexplained} streams closed that were neither refused nor counted"
        );
        self.other_closes = other_closes;
        assert!(
            transmits <= MAX_TRIGGER_QUEUED_TRANSMITS,
            "{transmits} transmits from one input"
        );
        assert!(
            events <= MAX_TRIGGER_QUEUED_EVENTS,
            "{events} events from one input"
        );
        let config = self.ts.config();
        assert!(self.ts.device_count() <= config.max_devices);
        assert!(self.ts.pending_triggers() <= config.max_pending_triggers);
    }

    fn check_datagram(&mut self, to: SocketAddr, message: &Message<'_>) {
        assert!(
            self.proven.contains(&to),
            "a datagram to {to}, which never proved a keepalive: {message:?}"
        );
        let verifies = |keys: &BTreeMap<u64, BTreeSet<[u8; 32]>>| -> Option<u64> {
            keys.iter().find_map(|(device, keys)| {
                keys.iter()
                    .any(|key| udp_auth::verify_message(&UdpKey(*key), message).is_ok())
                    .then_some(*device)
            })
        };
        let device = verifies(&self.keys).unwrap_or_else(|| {
            panic!("a datagram whose tag verifies under no installed key: {message:?}")
        });
        match message {
            Message::KeepaliveAck(ack) => {
                assert_eq!(
                    ack.observed, to,
                    "an ack tells another address than its own"
                );
                self.summary.keepalive_acks += 1;
            }
            Message::Trigger(_) | Message::EndTrigger(_) => {
                let counter = match message {
                    Message::Trigger(t) => t.counter,
                    Message::EndTrigger(t) => t.counter,
                    _ => unreachable!(),
                };
                if let Some(term) = self.terms.iter_mut().find(|t| t.id.0 == device) {
                    push_bounded(&mut term.triggers, 16, counter);
                }
                self.summary.triggers += 1;
            }
            other => panic!("the trigger server sent {other:?} by UDP"),
        }
    }

    fn on_stream_transmit(&mut self, c: u8, bytes: &[u8], message: &Message<'_>) {
        let now = self.clock.now;
        let Some(link) = self.links.get_mut(&c) else {
            // The harness never linked this connection; only replayed
            // handshakes of another connection could be answered here.
            assert!(matches!(message, Message::HandshakeReply(_)));
            return;
        };
        match message {
            Message::HandshakeReply(reply) => {
                let Some(mut initiator) = link.pending.take() else {
                    link.desynced = true;
                    return;
                };
                let mut payload = vec![0u8; MAX_HANDSHAKE_LEN];
                match initiator.finish(now, reply, &mut payload) {
                    Ok((channel, n)) => {
                        assert_eq!(Message::decode(&payload[..n]), Ok(Message::Poll(Poll)));
                        link.channel = Some(channel);
                        link.desynced = false;
                        self.summary.links += 1;
                    }
                    Err(_) => {
                        // Only the end of time expires a handshake at once.
                        link.channel = None;
                        link.desynced = true;
                    }
                }
            }
            Message::Sealed(_) => {
                if link.desynced {
                    return;
                }
                let channel = link
                    .channel
                    .as_mut()
                    .expect("a record on a connection with no link");
                let plain = open(channel, bytes)
                    .unwrap_or_else(|e| panic!("a record from the server does not open: {e}"));
                match Message::decode(&plain) {
                    Ok(Message::TriggerResult(_) | Message::AddressReply(_)) => {
                        self.summary.results += 1;
                    }
                    // The acknowledgement of a key the session server installed.
                    Ok(Message::KeyInstallAck(_)) => {}
                    other => panic!("the server sealed {other:?}"),
                }
            }
            other => panic!("the server sent {other:?} on a stream"),
        }
    }
}
