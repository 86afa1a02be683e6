//! A world around one session server: terminals played with the real
//! crypto (Noise IK initiator + sealed records) and a scripted fake trigger
//! server on the upstream link, all on a virtual clock.

use std::collections::BTreeSet;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::super::*;
use crate::crypto::{Initiator, Responder, SecureChannel, StaticKeypair};
use crate::machine::{ConnectionId, Destination, Output};
use crate::names::{NameRegistry, TrustMode};
use crate::time::Instant;
use crate::wire::{
    AddressInquiry, AddressReply, ConnectionRequest, DecisionMode, EndNotification, EndReason,
    EndTriggerRequest, ErrorCode, ExtensionRequest, HandshakeInit, KeyInstall, KeyRevoke, Message,
    Name, NameSeq, PermissionAnswer, PermissionList, Poll, PublicKey, Register, RegistrationTicket,
    SessionId, TriggerOutcome, TriggerRequest, TriggerResult, UdpKey, Verdict,
};

/// Start of the virtual clock (not zero, so "time going back" has room).
pub const T0: Instant = Instant::from_micros(1_000_000_000);
/// The channel number the fake trigger server gives the server's link.
pub const TS_CHANNEL: u64 = 0x7500_0001;

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub fn enc(m: &Message<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; m.encoded_len()];
    let n = m.encode(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// One played terminal.
pub struct Term {
    pub name: String,
    pub kp: StaticKeypair,
    pub mode: DecisionMode,
    pub conn: ConnectionId,
    /// Where its UDP socket is (what the fake trigger server reports).
    pub addr: SocketAddr,
    /// Whether the fake trigger server knows its address.
    pub online: bool,
    /// The local UDP address its `Register` says (`None` by default).
    pub local: Option<SocketAddr>,
    pub channel: Option<SecureChannel>,
    pub device: Option<u64>,
    pub udp_key: Option<UdpKey>,
    pub initiator: Option<Initiator>,
    /// The last HandshakeInit it sent (to replay in tests).
    pub last_init: Vec<u8>,
    /// The code of an Error received in a handshake reply.
    pub refused: Option<ErrorCode>,
    /// The wait of the last `RetryLater` it got, in seconds.
    pub retry_later: Option<u16>,
    /// Plaintexts of the sealed records it received, with the time and the
    /// length of the record on the wire.
    pub inbox: Vec<(Instant, Vec<u8>, usize)>,
    /// Query IDs it answered already.
    pub answered: BTreeSet<u32>,
    /// Records and replies it could not open.
    pub bad_records: usize,
    /// The wire length of the last handshake reply it got.
    pub reply_len: Option<usize>,
    /// The last registration ticket it received (kept out of `inbox`).
    pub ticket: Option<RegistrationTicket>,
    /// `KeyReady` records it received (kept out of `inbox`).
    pub key_ready: usize,
    /// The channel number of its last `HandshakeReply`.
    pub channel_no: Option<u64>,
    /// An invite's enrolment code, sent in an `EnrolRegister`.
    pub enrol_code: Option<[u8; crate::wire::ENROL_CODE_LEN]>,
}

/// The scripted trigger server.
pub struct FakeTs {
    pub kp: StaticKeypair,
    pub channel: Option<SecureChannel>,
    /// The channel before the last handshake (records sealed before the
    /// server saw the reply still arrive on it).
    pub previous: Option<SecureChannel>,
    pub accepting: bool,
    pub handshakes: usize,
    pub inbox: Vec<(Instant, Vec<u8>)>,
    pub answered: BTreeSet<u32>,
}

pub struct World {
    pub ss: SessionServer<ChaCha20Rng>,
    pub ss_key: PublicKey,
    pub rng: ChaCha20Rng,
    pub now: Instant,
    pub ts: FakeTs,
    pub terms: Vec<Term>,
    pub events: Vec<(Instant, SessionEvent)>,
    /// The durable facts in the order they came out: the driver's store.
    pub facts: Vec<SessionFact>,
    /// Streams the server closed.
    pub closed: Vec<ConnectionId>,
    /// Terminals present their last ticket when they register again.
    pub use_tickets: bool,
    next_conn: u64,
}

impl World {
    pub fn new(config: SessionConfig) -> World {
        World::with_registry(config, NameRegistry::new(TrustMode::TrustOnFirstUse), 1)
    }

    pub fn with_registry(config: SessionConfig, registry: NameRegistry, seed: u64) -> World {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ss_kp = StaticKeypair::generate(&mut rng);
        let ts_kp = StaticKeypair::generate(&mut rng);
        World::with_keys(config, registry, seed, ss_kp, ts_kp)
    }

    /// A world whose server uses these keys (for a restart with the same identity).
    pub fn with_keys(
        config: SessionConfig,
        registry: NameRegistry,
        seed: u64,
        ss_kp: StaticKeypair,
        ts_kp: StaticKeypair,
    ) -> World {
        let rng = ChaCha20Rng::seed_from_u64(seed.wrapping_add(1000));
        let ss_key = ss_kp.public_key();
        let ss = SessionServer::new(
            config,
            ss_kp,
            ts_kp.public_key(),
            registry,
            ChaCha20Rng::seed_from_u64(seed.wrapping_add(2000)),
        );
        World {
            ss,
            ss_key,
            rng,
            now: T0,
            ts: FakeTs {
                kp: ts_kp,
                channel: None,
                previous: None,
                accepting: true,
                handshakes: 0,
                inbox: Vec::new(),
                answered: BTreeSet::new(),
            },
            terms: Vec::new(),
            events: Vec::new(),
            facts: Vec::new(),
            closed: Vec::new(),
            use_tickets: true,
            next_conn: 1,
        }
    }

    // ---------------------------------------------------------------- driving

    /// Polls the server until [`Output::Timeout`], as a driver does: facts
    /// are "stored" (and logged as events), closes kept, events logged; the
    /// transmits are returned, each checked to come after every fact.
    pub fn take_transmits(&mut self) -> Vec<(Destination, Vec<u8>)> {
        let mut buf = [0u8; crate::machine::MAX_TRANSMIT_LEN];
        let mut out = Vec::new();
        loop {
            match self.ss.poll_output(&mut buf) {
                Output::Store(fact) => {
                    self.facts.push(fact.clone());
                    self.events.push((self.now, SessionEvent::from(fact)));
                }
                Output::Close(conn) => self.closed.push(conn),
                Output::Event(e) => self.events.push((self.now, e)),
                Output::Transmit(t) => out.push((t.destination, buf[..t.len].to_vec())),
                Output::Timeout(at) => {
                    assert_eq!(at, self.ss.poll_timeout());
                    return out;
                }
            }
        }
    }

    /// Drains the server's outputs, delivering each transmit, until quiet.
    pub fn pump(&mut self) {
        loop {
            let mut to_upstream: Vec<Vec<u8>> = Vec::new();
            let before = (self.events.len(), self.closed.len());
            let transmits = self.take_transmits();
            let any = !transmits.is_empty() || before != (self.events.len(), self.closed.len());
            for (destination, payload) in transmits {
                match destination {
                    Destination::Upstream => {
                        if let Some(reply) = self.ts_receive(&payload) {
                            to_upstream.push(reply);
                        }
                    }
                    Destination::Connection(conn) => self.term_receive(conn, &payload),
                    Destination::Udp(_) | Destination::RelayStream(_) => {
                        panic!("the session server sends no UDP")
                    }
                }
            }
            for bytes in to_upstream {
                self.ss.handle_upstream(self.now, &bytes);
            }
            if !any {
                return;
            }
        }
    }

    /// Moves the clock to `t`, running every timer on the way at its time.
    pub fn run_until(&mut self, t: Instant) {
        while let Some(next) = self.ss.poll_timeout() {
            if next > t {
                break;
            }
            self.now = next.max(self.now);
            self.ss.handle_timeout(self.now);
            self.pump();
            if let Some(after) = self.ss.poll_timeout() {
                assert!(
                    after > self.now,
                    "poll_timeout in the past after handle_timeout"
                );
            }
        }
        self.now = t.max(self.now);
        self.ss.handle_timeout(self.now);
        self.pump();
    }

    pub fn advance(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    pub fn events_since(&self, start: usize) -> Vec<SessionEvent> {
        self.events[start..]
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    pub fn records(&self) -> Vec<SessionRecord> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                SessionEvent::SessionRecord(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn started(&self) -> Vec<SessionStarted> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                SessionEvent::SessionStarted(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn denials(&self) -> Vec<(u32, DenyReason)> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                SessionEvent::RequestDenied {
                    request_id, reason, ..
                } => Some((*request_id, *reason)),
                _ => None,
            })
            .collect()
    }

    // -------------------------------------------------------------- terminals

    /// A terminal with a fresh key and an open stream to the server.
    pub fn add_term(&mut self, name: &str, mode: DecisionMode) -> usize {
        let kp = StaticKeypair::generate(&mut self.rng);
        let i = self.terms.len();
        let addr = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, (i % 250) as u8 + 1)),
            40000 + i as u16,
        );
        self.add_term_with(name, mode, kp, addr)
    }

    pub fn add_term_with(
        &mut self,
        name: &str,
        mode: DecisionMode,
        kp: StaticKeypair,
        addr: SocketAddr,
    ) -> usize {
        let conn = ConnectionId(self.next_conn);
        self.next_conn += 1;
        self.ss.handle_connection_opened(self.now, conn, addr);
        self.pump();
        self.terms.push(Term {
            name: name.to_string(),
            kp,
            mode,
            conn,
            addr,
            online: true,
            local: None,
            channel: None,
            device: None,
            udp_key: None,
            initiator: None,
            last_init: Vec::new(),
            refused: None,
            retry_later: None,
            inbox: Vec::new(),
            answered: BTreeSet::new(),
            bad_records: 0,
            reply_len: None,
            ticket: None,
            key_ready: 0,
            channel_no: None,
            enrol_code: None,
        });
        self.terms.len() - 1
    }

    /// Opens a new stream for terminal `i` (its old one is left as it is).
    pub fn reconnect(&mut self, i: usize) {
        let conn = ConnectionId(self.next_conn);
        self.next_conn += 1;
        self.terms[i].conn = conn;
        let addr = self.terms[i].addr;
        self.ss.handle_connection_opened(self.now, conn, addr);
        self.pump();
    }

    /// Sends terminal `i`'s HandshakeInit with its Register.
    pub fn start_registration(&mut self, i: usize) {
        let term = &self.terms[i];
        let name = Name::new(&term.name).unwrap();
        let plain = Register {
            mode: term.mode,
            identity: term.kp.public_key(),
            name,
            local: term.local,
        };
        let register = match term.enrol_code {
            Some(code) => enc(&Message::EnrolRegister(crate::wire::EnrolRegister {
                register: plain,
                code,
            })),
            None => enc(&Message::Register(plain)),
        };
        let mut out = vec![0u8; 4096];
        let (init, n) = Initiator::start(
            &mut self.rng,
            self.now,
            &term.kp,
            &self.ss_key,
            &register,
            &mut out,
        )
        .unwrap();
        let noise = &out[..n];
        let bytes = match &term.ticket {
            Some(t) if self.use_tickets => enc(&Message::TicketedHandshakeInit(
                crate::wire::TicketedHandshakeInit {
                    ticket: t.ticket,
                    binder: crate::crypto::ticket::binder_of(&t.secret, noise),
                    noise,
                },
            )),
            _ => enc(&Message::HandshakeInit(HandshakeInit { noise })),
        };
        let conn = term.conn;
        let term = &mut self.terms[i];
        term.initiator = Some(init);
        term.last_init = bytes.clone();
        self.ss.handle_stream(self.now, conn, &bytes);
        self.pump();
    }

    /// Registers terminal `i` and confirms with a sealed Poll.
    pub fn register(&mut self, i: usize) {
        self.start_registration(i);
        assert!(
            self.terms[i].channel.is_some(),
            "{} got no RegisterAck",
            self.terms[i].name
        );
        self.send(i, &Message::Poll(Poll));
    }

    /// Adds and registers a terminal.
    pub fn term(&mut self, name: &str, mode: DecisionMode) -> usize {
        let i = self.add_term(name, mode);
        self.register(i);
        i
    }

    /// Seals `m` on terminal `i`'s channel and sends it on its stream.
    pub fn send(&mut self, i: usize, m: &Message<'_>) {
        let bytes = self.seal(i, m);
        let conn = self.terms[i].conn;
        self.ss.handle_stream(self.now, conn, &bytes);
        self.pump();
    }

    pub fn seal(&mut self, i: usize, m: &Message<'_>) -> Vec<u8> {
        let plain = enc(m);
        let mut out = vec![0u8; plain.len() + 64];
        let ch = self.terms[i].channel.as_mut().expect("registered");
        let n = ch.seal(&plain, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn term_receive(&mut self, conn: ConnectionId, bytes: &[u8]) {
        let now = self.now;
        let Some(term) = self.terms.iter_mut().find(|t| t.conn == conn) else {
            return;
        };
        match Message::decode(bytes).unwrap() {
            Message::HandshakeReply(reply) => {
                term.reply_len = Some(bytes.len());
                let Some(init) = term.initiator.as_mut() else {
                    return;
                };
                let mut payload = vec![0u8; 4096];
                let Ok((ch, n)) = init.finish(now, &reply, &mut payload) else {
                    term.bad_records += 1;
                    return;
                };
                term.initiator = None;
                match Message::decode(&payload[..n]).unwrap() {
                    Message::RegisterAck(ack) => {
                        // The UDP device ID is not the stream's channel number.
                        assert_ne!(ack.device_id.0, reply.channel);
                        term.channel_no = Some(reply.channel);
                        term.device = Some(ack.device_id.0);
                        term.udp_key = Some(ack.udp_key);
                        term.channel = Some(ch);
                    }
                    Message::Error(e) => term.refused = Some(e.code),
                    other => panic!("unexpected handshake payload {other:?}"),
                }
            }
            Message::Sealed(record) => {
                // A record on a channel the terminal already replaced does
                // not open: a real terminal drops it too.
                let mut plain = vec![0u8; 4200];
                match term.channel.as_mut().map(|ch| ch.open(&record, &mut plain)) {
                    Some(Ok(n)) => {
                        plain.truncate(n);
                        match Message::decode(&plain) {
                            Ok(Message::RegistrationTicket(t)) => term.ticket = Some(t),
                            Ok(Message::KeyReady(_)) => term.key_ready += 1,
                            _ => term.inbox.push((now, plain, bytes.len())),
                        }
                    }
                    _ => term.bad_records += 1,
                }
            }
            Message::RetryLater(r) => term.retry_later = Some(r.retry_after_secs),
            other => panic!("unexpected message to a terminal: {other:?}"),
        }
    }

    pub fn device(&self, i: usize) -> u64 {
        self.terms[i].device.unwrap()
    }

    pub fn term_by_device(&self, device: u64) -> Option<usize> {
        self.terms.iter().position(|t| t.device == Some(device))
    }

    /// Decoded messages terminal `i` received, with their time.
    pub fn received(&self, i: usize) -> Vec<(Instant, Message<'_>)> {
        self.terms[i]
            .inbox
            .iter()
            .map(|(t, p, _)| (*t, Message::decode(p).unwrap()))
            .collect()
    }

    /// Errors terminal `i` received: (time, plaintext bytes, record length).
    pub fn errors(&self, i: usize) -> Vec<(Instant, Vec<u8>, usize)> {
        self.terms[i]
            .inbox
            .iter()
            .filter(|(_, p, _)| matches!(Message::decode(p), Ok(Message::Error(_))))
            .cloned()
            .collect()
    }

    pub fn connect(&mut self, i: usize, target: &str, request_id: u32, duration: u32) {
        let requester = self.terms[i].name.clone();
        self.connect_as(i, &requester, target, request_id, duration);
    }

    pub fn connect_as(
        &mut self,
        i: usize,
        requester: &str,
        target: &str,
        request_id: u32,
        duration: u32,
    ) {
        let m = Message::ConnectionRequest(ConnectionRequest {
            request_id,
            duration_secs: duration,
            requester: Name::new(requester).unwrap(),
            target: Name::new(target).unwrap(),
        });
        self.send(i, &m);
    }

    /// Terminal `i` answers every permission list request with `names`.
    pub fn answer_lists(&mut self, i: usize, names: &[&str]) {
        let queries: Vec<u32> = self
            .received(i)
            .iter()
            .filter_map(|(_, m)| match m {
                Message::PermissionListRequest(q) => Some(q.query_id),
                _ => None,
            })
            .collect();
        let names: Vec<Name<'_>> = names.iter().map(|n| Name::new(n).unwrap()).collect();
        for q in queries {
            if self.terms[i].answered.insert(q) {
                let m = Message::PermissionList(PermissionList {
                    query_id: q,
                    names: NameSeq::from_slice(&names).unwrap(),
                });
                self.send(i, &m);
            }
        }
    }

    /// Terminal `i` answers every permission inquiry with `verdict`; returns
    /// the requester names it was asked about.
    pub fn answer_inquiries(&mut self, i: usize, verdict: Verdict) -> Vec<String> {
        let queries: Vec<(u32, String)> = self
            .received(i)
            .iter()
            .filter_map(|(_, m)| match m {
                Message::PermissionInquiry(q) => {
                    Some((q.query_id, q.requester.as_str().to_string()))
                }
                _ => None,
            })
            .collect();
        let mut asked = Vec::new();
        for (q, requester) in queries {
            if self.terms[i].answered.insert(q) {
                asked.push(requester);
                self.send(
                    i,
                    &Message::PermissionAnswer(PermissionAnswer {
                        query_id: q,
                        verdict,
                    }),
                );
            }
        }
        asked
    }

    pub fn end_notification(&mut self, i: usize, id: SessionId, reason: EndReason, sent: u64) {
        self.send(
            i,
            &Message::EndNotification(EndNotification {
                session_id: id,
                reason,
                bytes_sent: sent,
                bytes_received: sent / 2,
                duration_ms: 1234,
            }),
        );
    }

    pub fn extend(&mut self, i: usize, id: SessionId, extra: u32) {
        self.send(
            i,
            &Message::ExtensionRequest(ExtensionRequest {
                session_id: id,
                extra_secs: extra,
            }),
        );
    }

    // --------------------------------------------------------- trigger server

    /// The fake trigger server reads one message on its link.
    fn ts_receive(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        match Message::decode(bytes).unwrap() {
            Message::HandshakeInit(init) => {
                if !self.ts.accepting {
                    return None;
                }
                let mut payload = vec![0u8; 4096];
                let (resp, n) =
                    Responder::accept(&mut self.rng, self.now, &self.ts.kp, &init, &mut payload)
                        .unwrap();
                assert!(
                    matches!(Message::decode(&payload[..n]), Ok(Message::Poll(_))),
                    "the server's HandshakeInit carries Poll"
                );
                let poll = enc(&Message::Poll(Poll));
                let mut out = vec![0u8; 256];
                let (ch, m) = resp.reply(TS_CHANNEL, &poll, &mut out).unwrap();
                self.ts.previous = self.ts.channel.replace(ch);
                self.ts.handshakes += 1;
                Some(enc(&Message::HandshakeReply(crate::wire::HandshakeReply {
                    channel: TS_CHANNEL,
                    noise: &out[..m],
                })))
            }
            Message::Sealed(record) => {
                let mut plain = vec![0u8; 4200];
                let n = match self
                    .ts
                    .channel
                    .as_mut()
                    .map(|c| c.open(&record, &mut plain))
                {
                    Some(Ok(n)) => n,
                    _ => self
                        .ts
                        .previous
                        .as_mut()
                        .expect("sealed before handshake")
                        .open(&record, &mut plain)
                        .expect("a record the trigger server can open"),
                };
                plain.truncate(n);
                self.ts.inbox.push((self.now, plain));
                None
            }
            other => panic!("unexpected message to the trigger server: {other:?}"),
        }
    }

    /// Messages the trigger server received, decoded.
    pub fn ts_received(&self) -> Vec<Message<'_>> {
        self.ts
            .inbox
            .iter()
            .map(|(_, p)| Message::decode(p).unwrap())
            .collect()
    }

    pub fn ts_triggers(&self) -> Vec<TriggerRequest> {
        self.ts_received()
            .into_iter()
            .filter_map(|m| match m {
                Message::TriggerRequest(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    pub fn ts_inquiries(&self) -> Vec<AddressInquiry> {
        self.ts_received()
            .into_iter()
            .filter_map(|m| match m {
                Message::AddressInquiry(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    pub fn ts_installs(&self) -> Vec<KeyInstall> {
        self.ts_received()
            .into_iter()
            .filter_map(|m| match m {
                Message::KeyInstall(k) => Some(k),
                _ => None,
            })
            .collect()
    }

    pub fn ts_revokes(&self) -> Vec<KeyRevoke> {
        self.ts_received()
            .into_iter()
            .filter_map(|m| match m {
                Message::KeyRevoke(k) => Some(k),
                _ => None,
            })
            .collect()
    }

    pub fn ts_end_triggers(&self) -> Vec<EndTriggerRequest> {
        self.ts_received()
            .into_iter()
            .filter_map(|m| match m {
                Message::EndTriggerRequest(k) => Some(k),
                _ => None,
            })
            .collect()
    }

    /// The fake trigger server sends `m` on its link.
    pub fn ts_send(&mut self, m: &Message<'_>) {
        let plain = enc(m);
        let mut out = vec![0u8; plain.len() + 64];
        let ch = self.ts.channel.as_mut().expect("link up");
        let n = ch.seal(&plain, &mut out).unwrap();
        out.truncate(n);
        self.ss.handle_upstream(self.now, &out);
        self.pump();
    }

    /// Answers every new trigger with `outcome`; a delivered trigger makes
    /// the target poll (S703/S1202), as a real terminal would.
    pub fn ts_answer_triggers(&mut self, outcome: TriggerOutcome) {
        for t in self.ts_triggers() {
            if !self.ts.answered.insert(t.op_id) {
                continue;
            }
            self.ts_send(&Message::TriggerResult(TriggerResult {
                op_id: t.op_id,
                outcome,
            }));
            if outcome == TriggerOutcome::Delivered {
                if let Some(i) = self.term_by_device(t.device_id.0) {
                    self.send(i, &Message::Poll(Poll));
                }
            }
        }
    }

    /// Answers every new address inquiry with the addresses of the online
    /// terminals it names.
    pub fn ts_answer_addresses(&mut self) {
        for a in self.ts_inquiries() {
            if !self.ts.answered.insert(a.op_id) {
                continue;
            }
            let addr_of = |w: &World, d: u64| {
                w.term_by_device(d)
                    .filter(|&i| w.terms[i].online)
                    .map(|i| w.terms[i].addr)
            };
            let reply = AddressReply {
                op_id: a.op_id,
                first: addr_of(self, a.first.0),
                second: addr_of(self, a.second.0),
            };
            self.ts_send(&Message::AddressReply(reply));
        }
    }

    /// The whole permitted flow in list mode: `req` asks for `tgt`, which
    /// lists it. Returns the session ID.
    pub fn establish(
        &mut self,
        req: usize,
        tgt: usize,
        request_id: u32,
        duration: u32,
    ) -> SessionId {
        let before = self.started().len();
        let target = self.terms[tgt].name.clone();
        let requester = self.terms[req].name.clone();
        self.connect(req, &target, request_id, duration);
        self.ts_answer_triggers(TriggerOutcome::Delivered);
        match self.terms[tgt].mode {
            DecisionMode::PermissionList => self.answer_lists(tgt, &[&requester]),
            DecisionMode::TerminalJudges => {
                self.answer_inquiries(tgt, Verdict::Permit);
            }
        }
        self.ts_answer_addresses();
        let started = self.started();
        assert_eq!(started.len(), before + 1, "session did not start");
        started[before].session_id
    }
}
