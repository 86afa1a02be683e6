//! The terminal driven by real bytes: a small harness plays the session
//! server (Noise IK responder and its `SecureChannel`) and the trigger server
//! (the `udp_auth` seal functions) around one terminal on a virtual clock.

use super::*;

use core::net::{Ipv4Addr, SocketAddrV4};
use std::vec;
use std::vec::Vec;

use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::crypto::{Responder, SecureChannel, StaticKeypair};
use crate::wire::{
    AddressNotification, ConnectionRequest, DecisionMode, EndNotification, ErrorCode, ErrorReply,
    ExtensionGrant, ExtensionRefusal, ExtensionRequest, HandshakeReply, Keepalive, Message,
    NameError, PermissionAnswer, PermissionInquiry, PermissionList, PermissionListRequest,
    RegisterAck, Role, SessionId, SessionKey, Tag, TriggerAck, UdpKey,
};

const TS_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 3478));
const OBSERVED: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), 40001));
const PEER_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 9), 50000));
const T0: Instant = Instant::from_micros(1_000_000);
const SESSION: SessionId = SessionId([0x5e; 16]);
const SESSION_KEY: SessionKey = SessionKey([0x4b; 32]);
const PEER_KEY: PublicKey = PublicKey([0x11; 32]);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn name(s: &'static str) -> Name<'static> {
    Name::new(s).unwrap()
}

fn buf(s: &str) -> NameBuf {
    NameBuf::try_from(s).unwrap()
}

fn encode(m: &Message<'_>) -> Vec<u8> {
    let mut out = std::vec![0u8; m.encoded_len()];
    let n = m.encode(&mut out).unwrap();
    out.truncate(n);
    out
}

/// One terminal, the session server's and trigger server's ends, a clock.
struct Harness {
    t: Terminal<ChaCha20Rng>,
    ss_key: StaticKeypair,
    ss_rng: ChaCha20Rng,
    /// The session server's end of the current control channel.
    ss: Option<SecureChannel>,
    /// Registrations the session server accepted so far.
    registrations: u64,
    device_id: DeviceId,
    udp_key: UdpKey,
    /// The trigger server's trigger counter under the current key.
    trigger_counter: u64,
    now: Instant,
    udp: Vec<(SocketAddr, Vec<u8>)>,
    upstream: Vec<Vec<u8>>,
    events: Vec<TerminalEvent>,
    /// The trigger server acknowledges every keepalive at once (and the
    /// keepalives are not kept in `udp`), so long runs stay registered.
    auto_ack: bool,
    /// The session server sends `KeyReady` right after accepting (as the
    /// real one does once the trigger server acknowledged the key).
    key_ready_on_register: bool,
    /// The records a registration sent after its Poll (end notifications
    /// sent again).
    resent: Vec<Vec<u8>>,
    /// The enrolment code of the last registration (an `EnrolRegister`).
    last_code: Option<[u8; ENROL_CODE_LEN]>,
}

impl Harness {
    fn with(seed: u64, configure: impl FnOnce(&mut TerminalConfig)) -> Harness {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ss_key = StaticKeypair::generate(&mut rng);
        let term_key = StaticKeypair::generate(&mut rng);
        let mut config = TerminalConfig::new("TERM1", TS_ADDR, ss_key.public_key()).unwrap();
        config.local_udp = Some("192.168.1.2:40000".parse().unwrap());
        configure(&mut config);
        Harness {
            t: Terminal::new(config, term_key, ChaCha20Rng::seed_from_u64(seed ^ 0x7e57)),
            ss_key,
            ss_rng: rng,
            ss: None,
            registrations: 0,
            device_id: DeviceId(0),
            udp_key: UdpKey([0; 32]),
            trigger_counter: 0,
            now: T0,
            udp: Vec::new(),
            upstream: Vec::new(),
            events: Vec::new(),
            auto_ack: false,
            key_ready_on_register: true,
            resent: Vec::new(),
            last_code: None,
        }
    }

    fn new(seed: u64) -> Harness {
        Harness::with(seed, |_| {})
    }

    /// A terminal registered, its first keepalive acknowledged, queues empty.
    fn registered(seed: u64, configure: impl FnOnce(&mut TerminalConfig)) -> Harness {
        let mut h = Harness::with(seed, configure);
        h.t.start(h.now);
        h.drain();
        h.ss_handshake(true);
        let ka = h.keepalives();
        assert_eq!(ka.len(), 1);
        h.ack_keepalive(ka[0].counter, 20);
        h.clear();
        h.auto_ack = true;
        h
    }

    fn drain(&mut self) {
        let mut acks = Vec::new();
        while let Some(tx) = self.t.poll_transmit() {
            match tx.destination {
                Destination::Udp(to) => {
                    if let (true, Ok(Message::Keepalive(k))) =
                        (self.auto_ack, Message::decode(&tx.payload))
                    {
                        // Acknowledged by the trigger server it went to.
                        acks.push((
                            to,
                            udp_auth::seal_keepalive_ack(&self.udp_key, k.counter, 20, OBSERVED),
                        ));
                        continue;
                    }
                    self.udp.push((to, tx.payload.to_vec()));
                }
                Destination::Upstream => self.upstream.push(tx.payload.to_vec()),
                Destination::Connection(c) => panic!("a terminal has no accepted streams: {c:?}"),
                Destination::RelayStream(r) => {
                    panic!("the terminal alone opens no relay stream: {r}")
                }
            }
        }
        for (from, ack) in acks {
            self.t.handle_udp(self.now, from, &encode(&ack.into()));
        }
        while let Some(event) = self.t.poll_event() {
            self.events.push(event);
        }
    }

    fn clear(&mut self) {
        self.drain();
        self.udp.clear();
        self.upstream.clear();
        self.events.clear();
    }

    fn take_events(&mut self) -> Vec<TerminalEvent> {
        self.drain();
        core::mem::take(&mut self.events)
    }

    fn take_udp(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.drain();
        core::mem::take(&mut self.udp)
    }

    fn take_upstream(&mut self) -> Vec<Vec<u8>> {
        self.drain();
        core::mem::take(&mut self.upstream)
    }

    /// Keepalives sent since the last look, all to the trigger server.
    fn keepalives(&mut self) -> Vec<Keepalive> {
        self.take_udp()
            .into_iter()
            .map(|(to, bytes)| {
                assert_eq!(to, TS_ADDR);
                match Message::decode(&bytes).unwrap() {
                    Message::Keepalive(k) => k,
                    other => panic!("expected a keepalive, got {other:?}"),
                }
            })
            .collect()
    }

    /// Trigger acks sent since the last look, each checked under the key.
    fn trigger_acks(&mut self) -> Vec<TriggerAck> {
        self.take_udp()
            .into_iter()
            .map(|(to, bytes)| {
                assert_eq!(to, TS_ADDR);
                match Message::decode(&bytes).unwrap() {
                    Message::TriggerAck(a) => {
                        udp_auth::verify(&self.udp_key, &a).unwrap();
                        a
                    }
                    other => panic!("expected a trigger ack, got {other:?}"),
                }
            })
            .collect()
    }

    /// The session server opens every record sent to it since the last look.
    fn ss_receive(&mut self) -> Vec<Vec<u8>> {
        let raw = self.take_upstream();
        let ss = self.ss.as_mut().expect("no channel at the session server");
        raw.iter()
            .map(|bytes| {
                let Ok(Message::Sealed(record)) = Message::decode(bytes) else {
                    panic!("expected a sealed record");
                };
                let mut plain = [0u8; MAX_PLAIN_MESSAGE_LEN];
                let n = ss.open(&record, &mut plain).unwrap();
                plain[..n].to_vec()
            })
            .collect()
    }

    /// The one record sent to the session server since the last look.
    fn ss_receive_one(&mut self) -> Vec<u8> {
        let mut records = self.ss_receive();
        assert_eq!(records.len(), 1, "expected exactly one record");
        records.pop().unwrap()
    }

    /// The session server answers the pending handshake: accepts (a fresh
    /// device ID and UDP key) or refuses the registration.
    fn ss_handshake(&mut self, accept: bool) {
        let raw = self.take_upstream();
        assert_eq!(raw.len(), 1, "expected one handshake message");
        let Ok(Message::HandshakeInit(init)) = Message::decode(&raw[0]) else {
            panic!("expected a handshake init");
        };
        let mut payload = [0u8; MAX_PLAIN_MESSAGE_LEN];
        let (responder, n) = Responder::accept(
            &mut self.ss_rng,
            self.now,
            &self.ss_key,
            &init,
            &mut payload,
        )
        .unwrap();
        let (register, code) = match Message::decode(&payload[..n]) {
            Ok(Message::Register(register)) => (register, None),
            Ok(Message::EnrolRegister(enrol)) => (enrol.register, Some(enrol.code)),
            _ => panic!("expected a Register payload"),
        };
        self.last_code = code;
        assert_eq!(register.identity, responder.initiator_key());
        assert_eq!(register.identity, self.t.public_key());
        assert_eq!(register.name.as_str(), self.t.config().name());
        assert_eq!(register.mode, self.t.config().mode);
        // The local UDP address the driver gave, for the NAT type guess.
        assert_eq!(register.local, self.t.config().local_udp);
        let answer: Message<'static> = if accept {
            self.registrations += 1;
            self.device_id = DeviceId(0x1000 + self.registrations);
            self.udp_key = UdpKey([self.registrations as u8; 32]);
            self.trigger_counter = 0;
            RegisterAck {
                device_id: self.device_id,
                udp_key: self.udp_key,
            }
            .into()
        } else {
            ErrorReply {
                request_id: 0,
                code: ErrorCode::RegistrationRefused,
            }
            .into()
        };
        let channel = if accept { self.device_id.0 } else { 0 };
        let mut noise = [0u8; MAX_HANDSHAKE_LEN];
        let (secure, m) = responder
            .reply(channel, &encode(&answer), &mut noise)
            .unwrap();
        let reply = encode(&Message::HandshakeReply(HandshakeReply {
            channel,
            noise: &noise[..m],
        }));
        if accept {
            self.ss = Some(secure);
        }
        self.t.handle_upstream(self.now, &reply);
        self.drain();
        if accept {
            // S702: the terminal confirms the channel at once with a Poll;
            // the end notifications it sends again follow it.
            let mut records = self.ss_receive();
            assert!(!records.is_empty(), "expected a Poll");
            let poll = records.remove(0);
            assert_eq!(Message::decode(&poll).unwrap(), Message::Poll(Poll));
            self.resent = records;
            assert!(self.ss.as_ref().unwrap().peer_confirmed());
            // The trigger server acknowledged the key: keepalives may start.
            if self.key_ready_on_register {
                self.ss_send(crate::wire::KeyReady.into());
            }
        }
    }

    /// The session server seals `m` to the terminal.
    fn ss_send(&mut self, m: Message<'_>) {
        let ss = self.ss.as_mut().expect("no channel");
        let mut out = [0u8; MAX_MESSAGE_LEN];
        let n = ss.seal(&encode(&m), &mut out).unwrap();
        self.t.handle_upstream(self.now, &out[..n]);
        self.drain();
    }

    /// A datagram from the trigger server's address.
    fn ts_send(&mut self, m: Message<'_>) {
        self.t.handle_udp(self.now, TS_ADDR, &encode(&m));
        self.drain();
    }

    fn ack_keepalive(&mut self, counter: u64, interval_secs: u16) {
        let ack = udp_auth::seal_keepalive_ack(&self.udp_key, counter, interval_secs, OBSERVED);
        self.ts_send(ack.into());
    }

    fn trigger(&mut self) {
        self.trigger_counter += 1;
        let trigger = udp_auth::seal_trigger(&self.udp_key, self.trigger_counter);
        self.ts_send(trigger.into());
    }

    fn end_trigger(&mut self, session_id: SessionId) {
        self.trigger_counter += 1;
        let end = udp_auth::seal_end_trigger(&self.udp_key, self.trigger_counter, session_id);
        self.ts_send(end.into());
    }

    fn notify(&mut self, role: Role, request_id: u32, session_id: SessionId, duration_secs: u32) {
        self.ss_send(
            AddressNotification {
                request_id,
                session_id,
                role,
                duration_secs,
                session_key: SESSION_KEY,
                peer_key: PEER_KEY,
                peer_addr: PEER_ADDR,
                peer_name: name("TERM3"),
                relay: None,
            }
            .into(),
        );
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.t.handle_timeout(self.now);
        self.drain();
        if let Some(next) = self.t.poll_timeout() {
            assert!(next > self.now, "timer {next:?} not after {:?}", self.now);
        }
    }

    /// Runs every timer up to `self.now + d`, waking at each one.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(next) = self.t.poll_timeout() {
            if next > end {
                break;
            }
            let step = next - self.now;
            self.advance(step);
        }
        let rest = end - self.now;
        self.advance(rest);
    }
}

/// The plaintext `bytes` decoded (test helper; the bytes outlive the message).
fn plain(bytes: &[u8]) -> Message<'_> {
    Message::decode(bytes).unwrap()
}

fn list_names(bytes: &[u8]) -> Vec<std::string::String> {
    match plain(bytes) {
        Message::PermissionList(PermissionList { names, .. }) => {
            names.iter().map(|n| n.as_str().into()).collect()
        }
        other => panic!("expected a permission list, got {other:?}"),
    }
}

#[test]
fn s701_s702_terminal_registers_and_starts_keepalives() {
    let mut h = Harness::new(1);
    assert_eq!(h.t.poll_timeout(), None, "idle until started");
    h.t.start(h.now);
    h.drain();
    // The handshake times out if unanswered.
    assert_eq!(h.t.poll_timeout(), Some(h.now + HANDSHAKE_TIMEOUT_FOR_TEST));
    h.ss_handshake(true);
    assert!(h.t.is_registered());
    assert_eq!(h.t.device_id(), Some(h.device_id));
    assert_eq!(
        h.take_events(),
        [TerminalEvent::Registered {
            device_id: h.device_id
        }]
    );
    // S701: the first keepalive goes at once, counter 1, tagged.
    let ka = h.keepalives();
    assert_eq!(ka.len(), 1);
    assert_eq!(ka[0].device_id, h.device_id);
    assert_eq!(ka[0].counter, 1);
    udp_auth::verify(&h.udp_key, &ka[0]).unwrap();
    // Its ack tells the observed address: the terminal is online.
    h.ack_keepalive(1, 20);
    assert_eq!(
        h.take_events(),
        [TerminalEvent::Online { observed: OBSERVED }]
    );
    assert_eq!(h.t.observed_addr(), Some(OBSERVED));
    assert_eq!(h.t.poll_timeout(), Some(h.now + DEFAULT_KEEPALIVE_INTERVAL));
    // The next ones follow every 20 s with increasing counters; the same
    // address again is no new event.
    for counter in 2..5 {
        h.run_for(DEFAULT_KEEPALIVE_INTERVAL);
        let ka = h.keepalives();
        assert_eq!(ka.len(), 1);
        assert_eq!(ka[0].counter, counter);
        h.ack_keepalive(counter, 20);
    }
    assert_eq!(h.take_events(), []);
    assert_eq!(h.t.stats().keepalives_sent, 4);
}

/// The handshake timeout of the control channel.
const HANDSHAKE_TIMEOUT_FOR_TEST: Duration = crate::crypto::HANDSHAKE_TIMEOUT;

#[test]
fn register_names_the_local_udp_address_the_driver_gave_or_none() {
    // The harness's session server checks the Register's `local` against
    // the config: a given address, and none when the driver knows none.
    for local in [Some("10.0.0.5:4242".parse().unwrap()), None] {
        let mut h = Harness::with(3, |c| c.local_udp = local);
        h.t.start(h.now);
        h.drain();
        h.ss_handshake(true);
        assert!(h.t.is_registered());
        assert_eq!(h.t.config().local_udp, local);
    }
}

#[test]
fn an_enrol_code_goes_with_every_registration_and_a_refusal_stops() {
    let h = Harness::registered(5, |c| c.enrol_code = Some([0x3c; ENROL_CODE_LEN]));
    assert_eq!(h.last_code, Some([0x3c; ENROL_CODE_LEN]));
    assert!(h.t.is_registered());
    // Without a code, a plain Register.
    let h = Harness::registered(5, |_| {});
    assert_eq!(h.last_code, None);
    // A refused code: the terminal stops, as for any refusal.
    let mut h = Harness::with(6, |c| c.enrol_code = Some([0x3c; ENROL_CODE_LEN]));
    h.t.start(h.now);
    h.drain();
    h.ss_handshake(false);
    assert_eq!(h.last_code, Some([0x3c; ENROL_CODE_LEN]));
    assert_eq!(h.take_events(), [TerminalEvent::RegistrationRefused]);
    h.advance(secs(60));
    assert!(h.take_upstream().is_empty(), "no retry after a refusal");
}

#[test]
fn registration_is_retried_with_backoff() {
    let mut h = Harness::new(2);
    h.t.start(h.now);
    let mut inits = h.take_upstream();
    assert_eq!(inits.len(), 1);
    // Unanswered: after the timeout, wait 1 s, 2 s, 4 s ... then a fresh handshake.
    for wait in [1, 2, 4, 8, 16, 32, 60, 60] {
        h.advance(HANDSHAKE_TIMEOUT_FOR_TEST);
        assert_eq!(h.take_upstream(), Vec::<Vec<u8>>::new());
        h.advance(secs(wait) - Duration::from_micros(1));
        assert_eq!(h.take_upstream(), Vec::<Vec<u8>>::new());
        h.advance(Duration::from_micros(1));
        let next = h.take_upstream();
        assert_eq!(next.len(), 1, "retry after {wait} s");
        assert_ne!(next, inits, "a fresh handshake each time");
        inits = next;
    }
    // A lost stream fails the handshake in flight at once.
    let mut h = Harness::new(2);
    h.t.start(h.now);
    h.clear();
    h.t.handle_upstream_closed(h.now);
    h.advance(secs(1));
    assert_eq!(
        h.take_upstream().len(),
        1,
        "retried 1 s after a lost stream"
    );
    assert_eq!(h.t.stats().handshakes_started, 2);
}

#[test]
fn several_session_servers_a_failed_handshake_moves_to_the_next_soon_and_wraps_with_the_backoff() {
    // The harness's server is the second of the list; the first is one
    // whose key nobody holds (down, or refusing the handshake).
    let mut h = Harness::with(9, |c| {
        let serving = c.session_server_key;
        c.session_server_key =
            StaticKeypair::generate(&mut ChaCha20Rng::seed_from_u64(99)).public_key();
        c.failover_server_keys.push(serving).unwrap();
    });
    h.t.start(h.now);
    assert_eq!(h.t.upstream_choice(), 0);
    h.clear();
    // The first is down: the second is tried after the short failover delay.
    h.t.handle_upstream_closed(h.now);
    assert_eq!(
        h.take_events(),
        [TerminalEvent::HandshakeFailed {
            attempt: 1,
            cause: HandshakeFailure::StreamClosed,
            retry_in: FAILOVER_DELAY,
        }]
    );
    assert_eq!(h.t.upstream_choice(), 1);
    h.advance(FAILOVER_DELAY);
    // Under the second server's key: it accepts.
    h.ss_handshake(true);
    assert!(h.t.is_registered());
    assert_eq!(
        h.t.upstream_choice(),
        1,
        "stays with the server it registered with"
    );
    h.clear();
    // That server dies: the terminal registers again there first, and
    // once that fails, back at the first after the backoff (the whole
    // list failed).
    h.t.handle_upstream_closed(h.now);
    h.clear();
    assert_eq!(h.t.upstream_choice(), 1);
    h.t.handle_upstream_closed(h.now);
    let events = h.take_events();
    assert!(
        matches!(
            events.as_slice(),
            [TerminalEvent::HandshakeFailed { retry_in, .. }] if *retry_in > FAILOVER_DELAY
        ),
        "{events:?}"
    );
    assert_eq!(h.t.upstream_choice(), 0);
}

#[test]
fn one_session_server_stays_the_choice_whatever_fails() {
    let mut h = Harness::new(3);
    h.t.start(h.now);
    h.clear();
    h.t.handle_upstream_closed(h.now);
    h.advance(secs(1));
    h.advance(HANDSHAKE_TIMEOUT_FOR_TEST);
    assert_eq!(h.t.upstream_choice(), 0);
    assert_eq!(h.t.stats().handshakes_started, 2);
}

#[test]
fn a_failed_handshake_is_an_event_that_says_why_and_when_the_next_goes() {
    // Unanswered: no reply, the next in 1 s; then the stream closes on the
    // second: closed, the next in 2 s.
    let mut h = Harness::new(2);
    h.t.start(h.now);
    h.clear();
    h.advance(HANDSHAKE_TIMEOUT_FOR_TEST);
    assert_eq!(
        h.take_events(),
        [TerminalEvent::HandshakeFailed {
            attempt: 1,
            cause: HandshakeFailure::NoReply,
            retry_in: secs(1),
        }]
    );
    h.advance(secs(1));
    assert_eq!(h.take_upstream().len(), 1, "the second handshake");
    h.t.handle_upstream_closed(h.now);
    assert_eq!(
        h.take_events(),
        [TerminalEvent::HandshakeFailed {
            attempt: 2,
            cause: HandshakeFailure::StreamClosed,
            retry_in: secs(2),
        }]
    );
    // A close while waiting for the retry is no second failure.
    h.t.handle_upstream_closed(h.now);
    assert_eq!(h.take_events(), []);
}

#[test]
fn a_rate_limited_registration_waits_what_the_server_asked_within_a_bound() {
    let retry_later = |secs: u16| {
        let mut buf = [0u8; 16];
        let n = Message::RetryLater(crate::wire::RetryLater {
            retry_after_secs: secs,
        })
        .encode(&mut buf)
        .unwrap();
        buf[..n].to_vec()
    };
    let mut h = Harness::new(2);
    h.t.start(h.now);
    h.clear();
    h.t.handle_upstream(h.now, &retry_later(8));
    assert_eq!(
        h.take_events(),
        [TerminalEvent::HandshakeFailed {
            attempt: 1,
            cause: HandshakeFailure::RateLimited,
            retry_in: secs(8),
        }]
    );
    // The close that follows is no second failure; nothing goes early.
    h.t.handle_upstream_closed(h.now);
    assert_eq!(h.take_events(), []);
    h.advance(secs(7));
    assert!(h.take_upstream().is_empty(), "a handshake before the 8 s");
    h.advance(secs(1));
    assert_eq!(h.take_upstream().len(), 1, "the next handshake at 8 s");
    // A hint of 18 hours is taken as the bound; one of 0 as the backoff.
    h.t.handle_upstream(h.now, &retry_later(u16::MAX));
    let events = h.take_events();
    assert!(
        matches!(events.as_slice(), [TerminalEvent::HandshakeFailed { retry_in, .. }]
            if *retry_in == secs(u64::from(crate::wire::MAX_RETRY_AFTER_SECS))),
        "{events:?}"
    );
    h.advance(secs(u64::from(crate::wire::MAX_RETRY_AFTER_SECS)));
    assert_eq!(h.take_upstream().len(), 1);
    h.t.handle_upstream(h.now, &retry_later(0));
    let events = h.take_events();
    assert!(
        matches!(events.as_slice(), [TerminalEvent::HandshakeFailed { attempt: 3, retry_in, .. }]
            if *retry_in == secs(4)),
        "{events:?}"
    );
}

#[test]
fn a_retry_later_outside_a_handshake_is_ignored() {
    let mut h = Harness::registered(3, |_| {});
    h.clear();
    let mut buf = [0u8; 16];
    let n = Message::RetryLater(crate::wire::RetryLater {
        retry_after_secs: 30,
    })
    .encode(&mut buf)
    .unwrap();
    h.t.handle_upstream(h.now, &buf[..n]);
    assert!(h.t.is_registered(), "a message in clear moved nothing");
    assert_eq!(h.take_events(), []);
}

#[test]
fn keepalive_interval_follows_the_trigger_server_and_is_clamped() {
    let mut h = Harness::registered(3, |_| {});
    h.auto_ack = false;
    assert_eq!(h.t.keepalive_interval(), Some(secs(20)));
    for (asked, used) in [
        (25u16, 25u64),
        (1, 5),
        (0, 5),
        (1000, 300),
        (300, 300),
        (5, 5),
    ] {
        h.run_for(h.t.poll_timeout().unwrap() - h.now);
        let ka = h.keepalives();
        assert_eq!(ka.len(), 1);
        h.ack_keepalive(ka[0].counter, asked);
        assert_eq!(h.t.keepalive_interval(), Some(secs(used)));
        assert_eq!(h.t.poll_timeout(), Some(h.now + secs(used)));
    }
    // A forged ack (another key) changes nothing.
    h.run_for(secs(5));
    let ka = h.keepalives();
    let forged = udp_auth::seal_keepalive_ack(&UdpKey([0xee; 32]), ka[0].counter, 60, OBSERVED);
    h.ts_send(forged.into());
    assert_eq!(h.t.keepalive_interval(), Some(secs(5)));
    assert_eq!(h.t.stats().ignored_datagrams, 1);
    // Nor does an ack of an older counter.
    h.ack_keepalive(ka[0].counter - 1, 60);
    assert_eq!(h.t.keepalive_interval(), Some(secs(5)));
    assert_eq!(h.t.stats().ignored_datagrams, 2);
}

#[test]
fn missed_keepalive_acks_trigger_re_registration() {
    let mut h = Harness::registered(4, |_| {});
    h.auto_ack = false;
    let old_device = h.device_id;
    h.run_for(secs(20));
    assert_eq!(h.keepalives()[0].counter, 2);
    // No ack within 2 s: another keepalive, new counter, until the last miss.
    for counter in 3..=u64::from(MISSED_ACKS) + 1 {
        h.run_for(KEEPALIVE_ACK_TIMEOUT);
        assert_eq!(h.keepalives()[0].counter, counter);
    }
    assert_eq!(h.take_upstream(), Vec::<Vec<u8>>::new());
    assert!(h.t.is_registered());
    // The last miss in a row: register again.
    h.run_for(KEEPALIVE_ACK_TIMEOUT);
    assert_eq!(
        h.take_events(),
        [TerminalEvent::Reregistering {
            cause: ReregisterCause::MissedKeepaliveAcks
        }]
    );
    assert!(!h.t.is_registered());
    assert_eq!(h.take_udp(), []);
    h.ss_handshake(true);
    assert_ne!(h.device_id, old_device);
    // Counters start at 1 again under the new key.
    let ka = h.keepalives();
    assert_eq!((ka[0].device_id, ka[0].counter), (h.device_id, 1));
    udp_auth::verify(&h.udp_key, &ka[0]).unwrap();
}

#[test]
fn one_missed_ack_is_forgiven_by_the_next_ack() {
    let mut h = Harness::registered(5, |_| {});
    h.auto_ack = false;
    h.run_for(secs(20));
    h.run_for(KEEPALIVE_ACK_TIMEOUT);
    let ka = h.keepalives();
    assert_eq!(ka.len(), 2);
    h.ack_keepalive(ka[1].counter, 20);
    for _ in 0..2 {
        h.run_for(secs(20));
        h.run_for(KEEPALIVE_ACK_TIMEOUT);
        let ka = h.keepalives();
        h.ack_keepalive(ka.last().unwrap().counter, 20);
    }
    assert!(h.t.is_registered());
}

#[test]
fn s703_trigger_makes_the_terminal_poll_the_session_server() {
    let mut h = Harness::registered(6, |_| {});
    h.trigger();
    let acks = h.trigger_acks();
    assert_eq!(acks.len(), 1);
    assert_eq!((acks[0].device_id, acks[0].counter), (h.device_id, 1));
    assert_eq!(plain(&h.ss_receive_one()), Message::Poll(Poll));
    // The trigger server's resend (new counter) is acknowledged again.
    h.trigger();
    assert_eq!(h.trigger_acks()[0].counter, 2);
    assert_eq!(plain(&h.ss_receive_one()), Message::Poll(Poll));
}

#[test]
fn replayed_or_forged_trigger_is_ignored() {
    let mut h = Harness::registered(7, |_| {});
    let first = udp_auth::seal_trigger(&h.udp_key, 5);
    h.ts_send(first.into());
    assert_eq!(h.trigger_acks().len(), 1);
    h.ss_receive_one();
    // Replayed, older, forged tag, other key: nothing sent.
    h.ts_send(first.into());
    h.ts_send(udp_auth::seal_trigger(&h.udp_key, 4).into());
    let mut forged = udp_auth::seal_trigger(&h.udp_key, 6);
    forged.tag = Tag([0xaa; 16]);
    h.ts_send(forged.into());
    h.ts_send(udp_auth::seal_trigger(&UdpKey([0xee; 32]), 7).into());
    let end = udp_auth::seal_end_trigger(&UdpKey([0xee; 32]), 8, SESSION);
    h.ts_send(end.into());
    assert_eq!(h.take_udp(), []);
    assert_eq!(h.take_upstream(), Vec::<Vec<u8>>::new());
    assert_eq!(h.t.stats().ignored_datagrams, 5);
    // The forgeries did not move the replay guard.
    h.ts_send(udp_auth::seal_trigger(&h.udp_key, 6).into());
    assert_eq!(h.trigger_acks()[0].counter, 6);
}

#[test]
fn trigger_from_another_address_is_ignored() {
    let mut h = Harness::registered(8, |_| {});
    let trigger = encode(&udp_auth::seal_trigger(&h.udp_key, 1).into());
    h.t.handle_udp(h.now, PEER_ADDR, &trigger);
    let other_port = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 3479));
    h.t.handle_udp(h.now, other_port, &trigger);
    assert_eq!(h.take_udp(), []);
    assert_eq!(h.take_upstream(), Vec::<Vec<u8>>::new());
    assert_eq!(h.t.stats().peer_datagrams, 2);
    assert_eq!(h.t.stats().peer_bytes, 2 * trigger.len() as u64);
    // The same bytes from the trigger server still count (unused counter).
    h.t.handle_udp(h.now, TS_ADDR, &trigger);
    assert_eq!(h.trigger_acks().len(), 1);
}

#[test]
fn s704_permission_list_request_is_answered_with_the_current_list() {
    let mut h = Harness::registered(9, |_| {});
    h.t.allow("TERM3").unwrap();
    h.t.allow("phone-of-anna").unwrap();
    h.t.allow("TERM3").unwrap();
    h.ss_send(PermissionListRequest { query_id: 9 }.into());
    let record = h.ss_receive_one();
    let Message::PermissionList(list) = plain(&record) else {
        panic!("expected a permission list");
    };
    assert_eq!(list.query_id, 9);
    assert_eq!(list_names(&record), ["TERM3", "phone-of-anna"]);
}

#[test]
fn permission_list_edit_applies_to_the_next_request() {
    let mut h = Harness::registered(10, |_| {});
    h.ss_send(PermissionListRequest { query_id: 1 }.into());
    assert_eq!(list_names(&h.ss_receive_one()), Vec::<&str>::new());
    h.t.allow("alice").unwrap();
    h.ss_send(PermissionListRequest { query_id: 2 }.into());
    assert_eq!(list_names(&h.ss_receive_one()), ["alice"]);
    assert!(h.t.disallow("alice"));
    assert!(!h.t.disallow("alice"));
    h.t.allow("bob").unwrap();
    h.ss_send(PermissionListRequest { query_id: 3 }.into());
    assert_eq!(list_names(&h.ss_receive_one()), ["bob"]);
    h.t.set_permissions(&["carol", "dave", "carol"]).unwrap();
    assert_eq!(h.t.permissions().collect::<Vec<_>>(), ["carol", "dave"]);
    // A bad name leaves the list as it was.
    assert_eq!(
        h.t.set_permissions(&["erin", "bad\nname"]),
        Err(PermissionError::InvalidName(NameError::ControlCharacter))
    );
    h.ss_send(PermissionListRequest { query_id: 4 }.into());
    assert_eq!(list_names(&h.ss_receive_one()), ["carol", "dave"]);
}

#[test]
fn s1203_s1204_judge_by_list_answers_permit_or_deny() {
    let mut h = Harness::registered(11, |c| {
        c.mode = DecisionMode::TerminalJudges;
        c.judge = JudgePolicy::List;
    });
    h.t.allow("TERM3").unwrap();
    for (query_id, requester, verdict) in [
        (10, "TERM3", Verdict::Permit),
        (11, "mallory", Verdict::Deny),
    ] {
        h.ss_send(
            PermissionInquiry {
                query_id,
                requester: Name::new(requester).unwrap(),
            }
            .into(),
        );
        assert_eq!(
            plain(&h.ss_receive_one()),
            PermissionAnswer { query_id, verdict }.into()
        );
        assert_eq!(
            h.take_events(),
            [TerminalEvent::PermissionAnswered {
                query_id,
                requester: buf(requester),
                verdict
            }]
        );
    }
    // The list is read per inquiry.
    h.t.disallow("TERM3");
    h.ss_send(
        PermissionInquiry {
            query_id: 12,
            requester: name("TERM3"),
        }
        .into(),
    );
    assert_eq!(
        plain(&h.ss_receive_one()),
        PermissionAnswer {
            query_id: 12,
            verdict: Verdict::Deny
        }
        .into()
    );
}

#[test]
fn judge_by_asking_the_app_times_out_to_deny() {
    let mut h = Harness::registered(12, |c| {
        c.mode = DecisionMode::TerminalJudges;
        c.judge = JudgePolicy::Ask;
    });
    // The app answers in time.
    h.ss_send(
        PermissionInquiry {
            query_id: 1,
            requester: name("TERM3"),
        }
        .into(),
    );
    assert_eq!(
        h.take_events(),
        [TerminalEvent::PermissionAsked {
            query_id: 1,
            requester: buf("TERM3")
        }]
    );
    assert_eq!(h.take_upstream(), Vec::<Vec<u8>>::new());
    h.run_for(secs(3));
    h.t.answer(h.now, 1, Verdict::Permit).unwrap();
    assert_eq!(
        plain(&h.ss_receive_one()),
        PermissionAnswer {
            query_id: 1,
            verdict: Verdict::Permit
        }
        .into()
    );
    assert_eq!(h.t.answer(h.now, 1, Verdict::Permit), Err(UnknownQuery));
    h.clear();
    // The app says nothing: deny after 4 s, not before.
    h.ss_send(
        PermissionInquiry {
            query_id: 2,
            requester: name("TERM3"),
        }
        .into(),
    );
    h.run_for(ASK_TIMEOUT - Duration::from_micros(1));
    assert_eq!(h.ss_receive(), Vec::<Vec<u8>>::new());
    h.run_for(Duration::from_micros(1));
    assert_eq!(
        plain(&h.ss_receive_one()),
        PermissionAnswer {
            query_id: 2,
            verdict: Verdict::Deny
        }
        .into()
    );
    assert_eq!(h.t.answer(h.now, 2, Verdict::Permit), Err(UnknownQuery));
    assert!(h
        .take_events()
        .contains(&TerminalEvent::PermissionAnswered {
            query_id: 2,
            requester: buf("TERM3"),
            verdict: Verdict::Deny
        }));
}

#[test]
fn s204_connect_sends_a_connection_request_with_own_name() {
    let mut h = Harness::new(13);
    assert_eq!(
        h.t.connect(h.now, "TERM1", 600),
        Err(ConnectError::NotRegistered)
    );
    let mut h = Harness::registered(13, |c| {
        *c = TerminalConfig::new("TERM3", c.trigger_server, c.session_server_key).unwrap();
    });
    let id = h.t.connect(h.now, "TERM1", 600).unwrap();
    assert_ne!(id, 0);
    assert_eq!(
        plain(&h.ss_receive_one()),
        ConnectionRequest {
            request_id: id,
            duration_secs: 600,
            requester: name("TERM3"),
            target: name("TERM1"),
        }
        .into()
    );
    let other = h.t.connect(h.now, "TERM1", 0).unwrap();
    assert_ne!(other, id, "a fresh ID per request");
    assert_eq!(
        h.t.connect(h.now, "", 600),
        Err(ConnectError::InvalidName(NameError::Empty))
    );
}

#[test]
fn s511_not_permitted_and_timeout_give_the_same_connect_failed_event() {
    let mut h = Harness::registered(14, |_| {});
    let denied = h.t.connect(h.now, "TERM9", 600).unwrap();
    let unanswered = h.t.connect(h.now, "TERM8", 600).unwrap();
    h.clear();
    h.run_for(secs(5));
    h.ss_send(
        ErrorReply {
            request_id: denied,
            code: ErrorCode::NotPermitted,
        }
        .into(),
    );
    assert_eq!(
        h.take_events(),
        [TerminalEvent::ConnectFailed { request_id: denied }]
    );
    // A second error for the same request is ignored: one event per request.
    h.ss_send(
        ErrorReply {
            request_id: denied,
            code: ErrorCode::NotPermitted,
        }
        .into(),
    );
    assert_eq!(h.take_events(), []);
    // The other one times out at 15 s, with the same event.
    h.run_for(CONNECT_TIMEOUT - secs(5) - Duration::from_micros(1));
    assert!(!h
        .take_events()
        .iter()
        .any(|e| matches!(e, TerminalEvent::ConnectFailed { .. })));
    h.run_for(Duration::from_micros(1));
    let events = h.take_events();
    let failed: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, TerminalEvent::ConnectFailed { .. }))
        .collect();
    assert_eq!(
        failed,
        [&TerminalEvent::ConnectFailed {
            request_id: unanswered
        }]
    );
    // A session server that answered a later request is alive: no re-registration.
    assert!(h.t.is_registered());
}

#[test]
fn a_request_with_no_answer_at_all_means_the_session_server_forgot_the_channel() {
    let mut h = Harness::registered(15, |_| {});
    let id = h.t.connect(h.now, "TERM9", 600).unwrap();
    h.clear();
    h.run_for(CONNECT_TIMEOUT);
    assert_eq!(
        h.take_events(),
        [
            TerminalEvent::ConnectFailed { request_id: id },
            TerminalEvent::Reregistering {
                cause: ReregisterCause::SessionServerSilent
            }
        ]
    );
    h.ss_handshake(true);
    assert!(h.t.is_registered());
}

#[test]
fn lost_stream_makes_the_terminal_register_again() {
    let mut h = Harness::registered(16, |_| {});
    let old_device = h.device_id;
    let id = h.t.connect(h.now, "TERM3", 60).unwrap();
    h.notify(Role::Connected, 0, SESSION, 600);
    h.clear();
    // The session server restarted (or the network failed): the stream is gone.
    h.t.handle_upstream_closed(h.now);
    assert!(!h.t.is_registered());
    assert_eq!(
        h.take_events(),
        [
            TerminalEvent::Reregistering {
                cause: ReregisterCause::UpstreamLost
            },
            // Its answer would have come on the lost stream.
            TerminalEvent::ConnectFailed { request_id: id },
        ]
    );
    h.ss_handshake(true);
    assert_ne!(h.device_id, old_device);
    // The running session is untouched and still ends on the new channel.
    assert_eq!(h.t.session_count(), 1);
    h.t.finish_session(h.now, &SESSION, EndReason::Completed)
        .unwrap();
    let Message::EndNotification(end) = plain(&h.ss_receive_one()) else {
        panic!("expected an end notification");
    };
    assert_eq!(end.session_id, SESSION);
}

#[test]
fn s1508_an_end_notification_lost_with_its_channel_is_sent_again_on_the_next() {
    let mut h = Harness::registered(16, |_| {});
    h.notify(Role::Connected, 0, SESSION, 600);
    h.clear();
    // The stream is gone, and the session ends before a new channel is up
    // (a forced end, a duration cut): its notification cannot go.
    h.t.handle_upstream_closed(h.now);
    h.t.finish_session(h.now, &SESSION, EndReason::Forced)
        .unwrap();
    h.drain();
    h.ss_handshake(true);
    let resent: Vec<_> = h.resent.iter().map(|r| plain(r)).collect();
    assert!(
        matches!(resent.as_slice(), [Message::EndNotification(n)]
            if n.session_id == SESSION && n.reason == EndReason::Forced),
        "{resent:?}"
    );
    // Once only: the next registration sends nothing again.
    h.t.handle_upstream_closed(h.now);
    h.drain();
    h.ss_handshake(true);
    assert!(h.resent.is_empty());
    // One that ended longer ago than the server's memory is not sent.
    let mut h = Harness::registered(17, |_| {});
    h.notify(Role::Connected, 0, SESSION, 6000);
    h.t.handle_upstream_closed(h.now);
    h.t.finish_session(h.now, &SESSION, EndReason::Completed)
        .unwrap();
    h.clear();
    h.advance(crate::terminal::END_RESEND_WINDOW + secs(1));
    h.take_upstream();
    h.t.handle_upstream_closed(h.now);
    // The next attempt after the backoff.
    for _ in 0..120 {
        h.advance(secs(1));
        h.drain();
        if !h.upstream.is_empty() {
            break;
        }
    }
    h.ss_handshake(true);
    assert!(h.resent.is_empty());
}

#[test]
fn s705_s706_address_notification_makes_the_session_ready() {
    let mut h = Harness::registered(17, |_| {});
    // The target (terminal 1): request ID 0, role connected.
    h.notify(Role::Connected, 0, SESSION, 600);
    assert_eq!(
        h.take_events(),
        [TerminalEvent::SessionReady {
            session_id: SESSION,
            role: Role::Connected,
            request_id: 0,
            peer_name: buf("TERM3"),
            relay: None,
            peer_key: PEER_KEY,
            peer_addr: PEER_ADDR,
            session_key: SESSION_KEY,
            duration_secs: 600,
        }]
    );
    assert_eq!(h.t.session_deadline(&SESSION), Some(h.now + secs(600)));
    // A duplicate notification changes nothing.
    h.notify(Role::Connected, 0, SESSION, 900);
    assert_eq!(h.take_events(), []);
    assert_eq!(h.t.session_deadline(&SESSION), Some(h.now + secs(600)));
    // The requester (terminal 3): its own request ID, role connecting.
    let id = h.t.connect(h.now, "TERM3", 300).unwrap();
    h.clear();
    let second = SessionId([2; 16]);
    h.notify(Role::Connecting, id, second, 300);
    let events = h.take_events();
    assert!(matches!(
        events.as_slice(),
        [TerminalEvent::SessionReady { request_id, role: Role::Connecting, duration_secs: 300, .. }]
            if *request_id == id
    ));
    assert_eq!(h.t.session_count(), 2);
    // A notification for a request that already failed is ended at once.
    let late = SessionId([3; 16]);
    h.notify(Role::Connecting, 0xdead, late, 300);
    assert_eq!(h.take_events(), []);
    assert_eq!(
        plain(&h.ss_receive_one()),
        EndNotification {
            session_id: late,
            reason: EndReason::Cancelled,
            bytes_sent: 0,
            bytes_received: 0,
            duration_ms: 0
        }
        .into()
    );
    assert_eq!(h.t.stats().late_notifications, 1);
}

#[test]
fn s1504_s1505_extension_is_requested_at_70_percent_only_while_active() {
    let mut h = Harness::registered(18, |_| {});
    let idle = SessionId([1; 16]);
    let busy = SessionId([2; 16]);
    h.notify(Role::Connected, 0, idle, 100);
    h.notify(Role::Connected, 0, busy, 100);
    h.clear();
    h.t.transfer_progress(&idle, 10, 10, false).unwrap();
    h.t.transfer_progress(&busy, 10, 10, true).unwrap();
    h.run_for(secs(70) - Duration::from_micros(1));
    assert_eq!(h.ss_receive(), Vec::<Vec<u8>>::new());
    h.run_for(Duration::from_micros(1));
    // Only the active transfer asks, for the original duration again.
    assert_eq!(
        plain(&h.ss_receive_one()),
        ExtensionRequest {
            session_id: busy,
            extra_secs: 100
        }
        .into()
    );
    assert!(h
        .take_events()
        .contains(&TerminalEvent::ExtensionRequested {
            session_id: busy,
            extra_secs: 100
        }));
    // Once per threshold.
    h.run_for(secs(20));
    assert_eq!(h.ss_receive(), Vec::<Vec<u8>>::new());
    assert_eq!(
        h.t.transfer_progress(&SessionId([9; 16]), 0, 0, true),
        Err(UnknownSession)
    );
}

#[test]
fn extension_threshold_and_amount_are_configurable() {
    let mut h = Harness::registered(19, |c| {
        c.extension_threshold_percent = 50;
        c.extension_secs = Some(30);
    });
    h.notify(Role::Connected, 0, SESSION, 100);
    h.t.transfer_progress(&SESSION, 1, 1, true).unwrap();
    h.clear();
    h.run_for(secs(50));
    assert_eq!(
        plain(&h.ss_receive_one()),
        ExtensionRequest {
            session_id: SESSION,
            extra_secs: 30
        }
        .into()
    );
}

#[test]
fn s1506_s1507_granted_extension_moves_the_deadline() {
    let mut h = Harness::registered(20, |_| {});
    let start = h.now;
    h.notify(Role::Connected, 0, SESSION, 100);
    h.t.transfer_progress(&SESSION, 1, 1, true).unwrap();
    h.clear();
    h.run_for(secs(70));
    h.ss_receive_one();
    h.clear();
    h.ss_send(
        ExtensionGrant {
            session_id: SESSION,
            duration_secs: 200,
        }
        .into(),
    );
    assert_eq!(
        h.take_events(),
        [TerminalEvent::SessionExtended {
            session_id: SESSION,
            duration_secs: 200
        }]
    );
    assert_eq!(h.t.session_deadline(&SESSION), Some(start + secs(200)));
    // No end at the old deadline; the threshold is re-armed at 70% of 200 s.
    h.run_for(secs(69));
    assert_eq!(h.t.session_count(), 1);
    assert_eq!(h.ss_receive(), Vec::<Vec<u8>>::new());
    h.run_for(secs(1));
    assert_eq!(
        plain(&h.ss_receive_one()),
        ExtensionRequest {
            session_id: SESSION,
            extra_secs: 100
        }
        .into()
    );
    // A refusal keeps the deadline.
    h.ss_send(
        ExtensionRefusal {
            session_id: SESSION,
        }
        .into(),
    );
    assert!(h.take_events().contains(&TerminalEvent::ExtensionRefused {
        session_id: SESSION
    }));
    assert_eq!(h.t.session_deadline(&SESSION), Some(start + secs(200)));
}

#[test]
fn s707_session_ends_at_the_permitted_duration() {
    let mut h = Harness::registered(21, |_| {});
    h.notify(Role::Connected, 0, SESSION, 60);
    h.t.transfer_progress(&SESSION, 5, 6, false).unwrap();
    h.clear();
    h.run_for(secs(60) - Duration::from_micros(1));
    assert_eq!(h.t.session_count(), 1);
    h.run_for(Duration::from_micros(1));
    assert_eq!(h.t.session_count(), 0);
    assert_eq!(
        plain(&h.ss_receive_one()),
        EndNotification {
            session_id: SESSION,
            reason: EndReason::DurationExpired,
            bytes_sent: 5,
            bytes_received: 6,
            duration_ms: 60_000
        }
        .into()
    );
    assert!(h.take_events().contains(&TerminalEvent::SessionEnded {
        session_id: SESSION,
        reason: EndReason::DurationExpired,
        bytes_sent: 5,
        bytes_received: 6,
        duration_ms: 60_000
    }));
}

#[test]
fn s1502_end_trigger_forces_the_session_to_end() {
    let mut h = Harness::registered(22, |_| {});
    h.notify(Role::Connected, 0, SESSION, 600);
    h.clear();
    h.run_for(secs(30));
    h.clear();
    h.end_trigger(SESSION);
    let acks = h.trigger_acks();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].counter, h.trigger_counter);
    let Message::EndNotification(end) = plain(&h.ss_receive_one()) else {
        panic!("expected an end notification");
    };
    assert_eq!((end.session_id, end.reason), (SESSION, EndReason::Forced));
    assert_eq!(end.duration_ms, 30_000);
    assert_eq!(h.t.session_count(), 0);
    // The trigger server's resend (new counter) is acknowledged; nothing else.
    h.end_trigger(SESSION);
    assert_eq!(h.trigger_acks().len(), 1);
    assert_eq!(h.take_upstream(), Vec::<Vec<u8>>::new());
}

#[test]
fn s1606_a_woken_terminal_fed_every_end_trigger_resend_at_once_still_reports_its_end() {
    let mut h = Harness::registered(24, |_| {});
    h.notify(Role::Connected, 0, SESSION, 600);
    h.clear();
    h.run_for(secs(10));
    h.clear();
    // Frozen through the forced end, the terminal wakes to every resend of
    // the trigger server's end triggers (more than its transmit queue
    // holds) and the driver feeds the whole batch before draining.
    let resends = MAX_TERMINAL_QUEUED_TRANSMITS + 4;
    for _ in 0..resends {
        h.trigger_counter += 1;
        let end = udp_auth::seal_end_trigger(&h.udp_key, h.trigger_counter, SESSION);
        h.t.handle_udp(h.now, TS_ADDR, &encode(&end.into()));
    }
    let Message::EndNotification(end) = plain(&h.ss_receive_one()) else {
        panic!("expected the end notification");
    };
    assert_eq!((end.session_id, end.reason), (SESSION, EndReason::Forced));
    // Acks gave way for it, and the drops are counted.
    assert_eq!(h.t.stats().transmits_dropped, 5);
    assert_eq!(h.trigger_acks().len(), MAX_TERMINAL_QUEUED_TRANSMITS - 1);
}

#[test]
fn s1508_end_notification_reports_bytes_and_duration() {
    let mut h = Harness::registered(23, |_| {});
    h.notify(Role::Connected, 0, SESSION, 600);
    h.clear();
    h.run_for(Duration::from_millis(12_500));
    h.t.transfer_progress(&SESSION, 1_048_576, 2048, false)
        .unwrap();
    h.t.finish_session(h.now, &SESSION, EndReason::Completed)
        .unwrap();
    assert_eq!(
        plain(&h.ss_receive_one()),
        EndNotification {
            session_id: SESSION,
            reason: EndReason::Completed,
            bytes_sent: 1_048_576,
            bytes_received: 2048,
            duration_ms: 12_500
        }
        .into()
    );
    assert_eq!(
        h.take_events(),
        [TerminalEvent::SessionEnded {
            session_id: SESSION,
            reason: EndReason::Completed,
            bytes_sent: 1_048_576,
            bytes_received: 2048,
            duration_ms: 12_500
        }]
    );
    assert_eq!(
        h.t.finish_session(h.now, &SESSION, EndReason::Completed),
        Err(UnknownSession)
    );
}

#[test]
fn registration_refused_stops_without_retrying() {
    let mut h = Harness::new(24);
    h.t.start(h.now);
    h.drain();
    h.ss_handshake(false);
    assert_eq!(h.take_events(), [TerminalEvent::RegistrationRefused]);
    assert!(!h.t.is_registered());
    assert_eq!(h.t.poll_timeout(), None);
    h.advance(secs(3600));
    assert_eq!(h.take_upstream(), Vec::<Vec<u8>>::new());
    assert_eq!(h.take_udp(), []);
    // Only the app starts it again.
    h.t.start(h.now);
    assert_eq!(h.take_upstream().len(), 1);
}

#[test]
fn bounded_tables_refuse_overflow_with_typed_errors() {
    let mut h = Harness::registered(25, |c| {
        c.mode = DecisionMode::TerminalJudges;
        c.judge = JudgePolicy::Ask;
    });
    // Permission list.
    for i in 0..MAX_PERMISSIONS {
        h.t.allow(&std::format!("name-{i}")).unwrap();
    }
    assert_eq!(h.t.allow("one-more"), Err(PermissionError::ListFull));
    assert_eq!(h.t.allow("name-3"), Ok(()), "already there");
    let too_long = "x".repeat(65);
    assert_eq!(
        h.t.allow(&too_long),
        Err(PermissionError::InvalidName(NameError::TooLong))
    );
    // A full list still fits one record.
    h.ss_send(PermissionListRequest { query_id: 1 }.into());
    assert_eq!(list_names(&h.ss_receive_one()).len(), MAX_PERMISSIONS);
    // Pending requests.
    let ids: Vec<u32> = (0..MAX_PENDING_REQUESTS)
        .map(|_| h.t.connect(h.now, "TERM3", 60).unwrap())
        .collect();
    assert_eq!(
        h.t.connect(h.now, "TERM3", 60),
        Err(ConnectError::TooManyPendingRequests)
    );
    h.clear();
    // Sessions: the notifications beyond the table end at once.
    for i in 0..MAX_SESSIONS {
        h.notify(Role::Connected, 0, SessionId([i as u8 + 1; 16]), 600);
    }
    h.clear();
    assert_eq!(
        h.t.connect(h.now, "TERM3", 60),
        Err(ConnectError::TooManyPendingRequests)
    );
    let extra = SessionId([0xff; 16]);
    h.notify(Role::Connecting, ids[0], extra, 600);
    let Message::EndNotification(end) = plain(&h.ss_receive_one()) else {
        panic!("expected an end notification");
    };
    assert_eq!((end.session_id, end.reason), (extra, EndReason::Failed));
    assert_eq!(
        h.take_events(),
        [TerminalEvent::ConnectFailed { request_id: ids[0] }]
    );
    assert_eq!(h.t.stats().sessions_refused, 1);
    assert_eq!(
        h.t.connect(h.now, "TERM3", 60),
        Err(ConnectError::TooManySessions)
    );
    // Inquiries waiting for the app: the one beyond is denied at once.
    for q in 0..MAX_PENDING_INQUIRIES as u32 {
        h.ss_send(
            PermissionInquiry {
                query_id: q,
                requester: name("TERM3"),
            }
            .into(),
        );
    }
    assert_eq!(h.ss_receive(), Vec::<Vec<u8>>::new());
    h.ss_send(
        PermissionInquiry {
            query_id: 99,
            requester: name("TERM3"),
        }
        .into(),
    );
    assert_eq!(
        plain(&h.ss_receive_one()),
        PermissionAnswer {
            query_id: 99,
            verdict: Verdict::Deny
        }
        .into()
    );
    assert_eq!(h.t.stats().inquiries_overflowed, 1);
    // Output queues: a driver that never polls loses the oldest, counted.
    h.clear();
    for counter in 1..=(MAX_TERMINAL_QUEUED_TRANSMITS as u64 + 3) {
        let trigger = udp_auth::seal_trigger(&h.udp_key, 100 + counter);
        h.t.handle_udp(h.now, TS_ADDR, &encode(&trigger.into()));
    }
    // Each trigger queued an ack and a poll.
    let queued = 2 * (MAX_TERMINAL_QUEUED_TRANSMITS as u64 + 3);
    assert_eq!(
        h.t.stats().transmits_dropped,
        queued - MAX_TERMINAL_QUEUED_TRANSMITS as u64
    );
    for i in 0..(MAX_TERMINAL_QUEUED_EVENTS + 2) {
        h.t.allow("x").ok();
        h.t.disallow(&std::format!("name-{i}"));
    }
    for q in 200..(200 + MAX_TERMINAL_QUEUED_EVENTS as u32 + 5) {
        let inquiry = PermissionInquiry {
            query_id: q,
            requester: name("TERM3"),
        };
        let ss = h.ss.as_mut().unwrap();
        let mut out = [0u8; MAX_MESSAGE_LEN];
        let n = ss.seal(&encode(&inquiry.into()), &mut out).unwrap();
        h.t.handle_upstream(h.now, &out[..n]);
    }
    assert!(h.t.stats().events_dropped > 0);
    let mut events = 0;
    while h.t.poll_event().is_some() {
        events += 1;
    }
    assert_eq!(events, MAX_TERMINAL_QUEUED_EVENTS);
}

#[test]
fn sealed_records_before_registration_and_plain_messages_upstream_are_ignored() {
    let mut h = Harness::registered(26, |_| {});
    // A plain (unsealed) request on the stream is not trusted.
    let plain_request = encode(&PermissionListRequest { query_id: 1 }.into());
    h.t.handle_upstream(h.now, &plain_request);
    assert_eq!(h.take_upstream(), Vec::<Vec<u8>>::new());
    assert_eq!(h.t.stats().ignored_upstream, 1);
    // A stray handshake reply when none is awaited.
    let reply = encode(&Message::HandshakeReply(HandshakeReply {
        channel: 1,
        noise: &[0u8; 48],
    }));
    h.t.handle_upstream(h.now, &reply);
    assert_eq!(h.t.stats().ignored_upstream, 2);
    assert!(h.t.is_registered());
}

// ----- property tests ------------------------------------------------------

/// One step of a random interaction.
#[derive(Debug, Clone)]
enum Op {
    /// Time moves on by this many milliseconds.
    Advance(u32),
    /// The driver's clock goes back by this many milliseconds.
    Back(u32),
    /// A random datagram, from the trigger server's address or another.
    Udp(bool, Vec<u8>),
    /// Random bytes on the stream.
    Upstream(Vec<u8>),
    /// Random plaintext sealed by the session server.
    SealedRaw(Vec<u8>),
    /// A well-formed message from the session server: kind, two numbers, a small index.
    Sealed(u8, u32, u32, u8),
    /// A genuine trigger (counter offset from the last) or end trigger.
    Trigger(bool, u8, u8),
    /// A keepalive ack for the last counter plus an offset.
    KeepaliveAck(u8, u16),
    /// The session server answers the last handshake (accept or refuse).
    Handshake(bool),
    UpstreamClosed,
    Start,
    Connect(u8, u32),
    Allow(u8),
    Disallow(u8),
    Answer(u32, bool),
    Progress(u8, u64, u64, bool),
    Finish(u8, u8),
    /// The driver drains the queues (often), or not.
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..80);
    prop_oneof![
        4 => (0u32..30_000).prop_map(Op::Advance),
        1 => (0u32..30_000).prop_map(Op::Back),
        2 => (any::<bool>(), bytes.clone()).prop_map(|(ts, b)| Op::Udp(ts, b)),
        1 => bytes.clone().prop_map(Op::Upstream),
        1 => bytes.prop_map(Op::SealedRaw),
        4 => (0u8..8, 0u32..6, 0u32..1000, 0u8..6).prop_map(|(k, a, b, i)| Op::Sealed(k, a, b, i)),
        2 => (any::<bool>(), 0u8..3, 0u8..6).prop_map(|(e, d, i)| Op::Trigger(e, d, i)),
        2 => (0u8..3, any::<u16>()).prop_map(|(d, i)| Op::KeepaliveAck(d, i)),
        3 => (0u8..4).prop_map(|n| Op::Handshake(n != 0)),
        1 => Just(Op::UpstreamClosed),
        1 => Just(Op::Start),
        2 => (0u8..4, 0u32..200).prop_map(|(n, d)| Op::Connect(n, d)),
        1 => (0u8..4).prop_map(Op::Allow),
        1 => (0u8..4).prop_map(Op::Disallow),
        1 => (0u32..6, any::<bool>()).prop_map(|(q, v)| Op::Answer(q, v)),
        2 => (0u8..6, any::<u64>(), any::<u64>(), any::<bool>())
            .prop_map(|(i, s, r, a)| Op::Progress(i, s, r, a)),
        1 => (0u8..6, 1u8..7).prop_map(|(i, r)| Op::Finish(i, r)),
        6 => Just(Op::Drain),
    ]
}

const NAMES: [&str; 4] = ["TERM1", "TERM3", "phone", "x\u{7}bad"];

fn session_id(i: u8) -> SessionId {
    SessionId([i; 16])
}

/// The random driver: the harness plus what it needs to answer sensibly.
struct Fuzz {
    h: Harness,
    /// The latest time the terminal has seen.
    latest: Instant,
    last_request: u32,
    last_handshake: Option<Vec<u8>>,
    /// The counter of the last keepalive the driver saw go out.
    last_keepalive: u64,
}

impl Fuzz {
    fn new(seed: u64, ask: bool) -> Fuzz {
        let h = Harness::with(seed, |c| {
            if ask {
                c.mode = DecisionMode::TerminalJudges;
                c.judge = JudgePolicy::Ask;
            }
        });
        let latest = h.now;
        Fuzz {
            h,
            latest,
            last_request: 0,
            last_handshake: None,
            last_keepalive: 0,
        }
    }

    /// Drains as a driver would, keeping the last handshake and keepalive
    /// counter for the servers.
    fn drain(&mut self) {
        while let Some(tx) = self.h.t.poll_transmit() {
            match Message::decode(&tx.payload) {
                Ok(Message::HandshakeInit(_)) => self.last_handshake = Some(tx.payload.to_vec()),
                Ok(Message::Keepalive(k)) => self.last_keepalive = k.counter,
                _ => {}
            }
        }
        while self.h.t.poll_event().is_some() {}
    }

    fn ss_send_quiet(&mut self, m: Message<'_>) {
        if let Some(ss) = self.h.ss.as_mut() {
            let mut out = [0u8; MAX_MESSAGE_LEN];
            if let Ok(n) = ss.seal(&encode(&m), &mut out) {
                self.h.t.handle_upstream(self.h.now, &out[..n]);
            }
        }
    }

    fn step(&mut self, op: Op) {
        let h = &mut self.h;
        match op {
            Op::Advance(ms) => h.now = h.now + Duration::from_millis(u64::from(ms)),
            Op::Back(ms) => h.now = h.now.saturating_sub(Duration::from_millis(u64::from(ms))),
            Op::Udp(from_ts, bytes) => {
                let from = if from_ts { TS_ADDR } else { PEER_ADDR };
                h.t.handle_udp(h.now, from, &bytes);
            }
            Op::Upstream(bytes) => h.t.handle_upstream(h.now, &bytes),
            Op::SealedRaw(bytes) => {
                if let Some(ss) = h.ss.as_mut() {
                    let mut out = [0u8; MAX_MESSAGE_LEN];
                    if let Ok(n) = ss.seal(&bytes, &mut out) {
                        h.t.handle_upstream(h.now, &out[..n]);
                    }
                }
            }
            Op::Sealed(kind, a, b, i) => {
                let request_id = if a == 0 { self.last_request } else { a };
                let m: Message<'static> = match kind {
                    0 => PermissionListRequest { query_id: a }.into(),
                    1 => PermissionInquiry {
                        query_id: a,
                        requester: name(NAMES[usize::from(i) % 3]),
                    }
                    .into(),
                    2 | 3 => AddressNotification {
                        request_id: if kind == 2 { request_id } else { 0 },
                        session_id: session_id(i),
                        role: if kind == 2 {
                            Role::Connecting
                        } else {
                            Role::Connected
                        },
                        duration_secs: b,
                        session_key: SESSION_KEY,
                        peer_key: PEER_KEY,
                        peer_addr: PEER_ADDR,
                        peer_name: name("TERM3"),
                        relay: None,
                    }
                    .into(),
                    4 => ExtensionGrant {
                        session_id: session_id(i),
                        duration_secs: b,
                    }
                    .into(),
                    5 => ExtensionRefusal {
                        session_id: session_id(i),
                    }
                    .into(),
                    6 => ErrorReply {
                        request_id,
                        code: ErrorCode::NotPermitted,
                    }
                    .into(),
                    _ => Message::Poll(Poll),
                };
                self.ss_send_quiet(m);
            }
            Op::Trigger(end, skip, i) => {
                h.trigger_counter = h.trigger_counter.wrapping_add(u64::from(skip));
                let c = h.trigger_counter;
                let m: Message<'static> = if end {
                    udp_auth::seal_end_trigger(&h.udp_key, c, session_id(i)).into()
                } else {
                    udp_auth::seal_trigger(&h.udp_key, c).into()
                };
                h.t.handle_udp(h.now, TS_ADDR, &encode(&m));
            }
            Op::KeepaliveAck(back, interval) => {
                let counter = self.last_keepalive.saturating_sub(u64::from(back));
                let ack = udp_auth::seal_keepalive_ack(&h.udp_key, counter, interval, OBSERVED);
                h.t.handle_udp(h.now, TS_ADDR, &encode(&ack.into()));
            }
            Op::Handshake(accept) => self.handshake(accept),
            Op::UpstreamClosed => h.t.handle_upstream_closed(h.now),
            Op::Start => h.t.start(h.now),
            Op::Connect(n, d) => {
                if let Ok(id) = h.t.connect(h.now, NAMES[usize::from(n)], d) {
                    self.last_request = id;
                }
            }
            Op::Allow(n) => {
                let _ = h.t.allow(NAMES[usize::from(n)]);
            }
            Op::Disallow(n) => {
                let _ = h.t.disallow(NAMES[usize::from(n)]);
            }
            Op::Answer(q, permit) => {
                let verdict = if permit {
                    Verdict::Permit
                } else {
                    Verdict::Deny
                };
                let _ = h.t.answer(h.now, q, verdict);
            }
            Op::Progress(i, s, r, a) => {
                let _ = h.t.transfer_progress(&session_id(i), s, r, a);
            }
            Op::Finish(i, r) => {
                let reason = EndReason::from_wire(r).unwrap_or(EndReason::Completed);
                let _ = h.t.finish_session(h.now, &session_id(i), reason);
            }
            Op::Drain => {}
        }
        self.latest = self.latest.max(self.h.now);
    }

    /// The session server answers the last handshake seen, if any; it keeps
    /// the channel only if the terminal took the answer.
    fn handshake(&mut self, accept: bool) {
        let Some(init_bytes) = self.last_handshake.take() else {
            return;
        };
        let h = &mut self.h;
        let Ok(Message::HandshakeInit(init)) = Message::decode(&init_bytes) else {
            return;
        };
        let mut payload = [0u8; MAX_PLAIN_MESSAGE_LEN];
        let Ok((responder, _)) =
            Responder::accept(&mut h.ss_rng, h.now, &h.ss_key, &init, &mut payload)
        else {
            return;
        };
        h.registrations += 1;
        let device_id = DeviceId(0x1000 + h.registrations);
        let udp_key = UdpKey([h.registrations as u8; 32]);
        let answer: Message<'static> = if accept {
            RegisterAck { device_id, udp_key }.into()
        } else {
            ErrorReply {
                request_id: 0,
                code: ErrorCode::RegistrationRefused,
            }
            .into()
        };
        let mut noise = [0u8; MAX_HANDSHAKE_LEN];
        let Ok((secure, m)) = responder.reply(device_id.0, &encode(&answer), &mut noise) else {
            return;
        };
        let reply = encode(&Message::HandshakeReply(HandshakeReply {
            channel: device_id.0,
            noise: &noise[..m],
        }));
        h.t.handle_upstream(h.now, &reply);
        if accept && h.t.device_id() == Some(device_id) {
            h.ss = Some(secure);
            h.device_id = device_id;
            h.udp_key = udp_key;
            h.trigger_counter = 0;
        }
    }
}

proptest! {
    #![proptest_config(proptest_config!(64, "core-terminal.txt"))]

    #[test]
    fn arbitrary_datagrams_and_upstream_messages_never_panic(
        seed in any::<u64>(),
        ask in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut f = Fuzz::new(seed, ask);
        f.h.t.start(f.h.now);
        f.drain();
        f.step(Op::Handshake(true));
        for op in ops {
            let drain = matches!(op, Op::Drain);
            f.step(op);
            if drain {
                f.drain();
            }
            // Bounded however the driver behaves.
            prop_assert!(f.h.t.session_count() <= MAX_SESSIONS);
            prop_assert!(f.h.t.permissions().count() <= MAX_PERMISSIONS);
        }
        f.drain();
    }

    #[test]
    fn poll_timeout_is_never_in_the_past_after_handle_timeout(
        seed in any::<u64>(),
        ask in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut f = Fuzz::new(seed, ask);
        f.h.t.start(f.h.now);
        f.drain();
        f.step(Op::Handshake(true));
        for op in ops {
            f.step(op);
            f.h.t.handle_timeout(f.h.now);
            if let Some(next) = f.h.t.poll_timeout() {
                prop_assert!(next > f.latest, "timer {:?} not after {:?}", next, f.latest);
            }
            f.drain();
        }
    }
}

#[test]
fn terminal_state_has_a_fixed_footprint() {
    // No allocator: the whole machine, queues included, is one value
    // (about 46 KiB, most of it the transmit queue), whatever the input.
    assert!(core::mem::size_of::<Terminal<ChaCha20Rng>>() <= 64 * 1024);
}

#[test]
fn terminal_presents_its_ticket_with_a_binder_when_it_registers_again() {
    let mut h = Harness::registered(31, |_| {});
    let ticket = crate::wire::RegistrationTicket {
        ticket: [0x7c; crate::wire::TICKET_LEN],
        secret: [0x5b; crate::wire::TICKET_SECRET_LEN],
    };
    h.ss_send(ticket.into());
    h.clear();
    h.t.handle_upstream_closed(h.now);
    let raw = h.take_upstream();
    assert_eq!(raw.len(), 1);
    let Ok(Message::TicketedHandshakeInit(init)) = Message::decode(&raw[0]) else {
        panic!("expected a ticketed handshake init");
    };
    assert_eq!(init.ticket, ticket.ticket);
    assert_eq!(
        init.binder,
        crate::crypto::ticket::binder_of(&ticket.secret, init.noise)
    );
    // The Noise bytes inside are a real handshake for the session server.
    let mut payload = [0u8; MAX_PLAIN_MESSAGE_LEN];
    let accepted = Responder::accept(&mut h.ss_rng, h.now, &h.ss_key, &init.init(), &mut payload);
    assert!(accepted.is_ok());
}

#[test]
fn terminal_without_a_ticket_sends_a_plain_handshake_init() {
    let mut h = Harness::registered(32, |_| {});
    h.clear();
    h.t.handle_upstream_closed(h.now);
    let raw = h.take_upstream();
    assert!(matches!(
        Message::decode(&raw[0]),
        Ok(Message::HandshakeInit(_))
    ));
}

/// A terminal registered by a session server that has not sent `KeyReady`.
fn registered_without_key_ready(seed: u64) -> Harness {
    let mut h = Harness::new(seed);
    h.key_ready_on_register = false;
    h.t.start(h.now);
    h.drain();
    h.ss_handshake(true);
    h
}

#[test]
fn first_keepalive_waits_for_key_ready_then_goes_at_once() {
    let mut h = registered_without_key_ready(33);
    // Registered, but no keepalive yet: the trigger server may not hold the key.
    assert!(h.t.is_registered());
    h.advance(secs(1));
    assert!(h.keepalives().is_empty(), "a keepalive before KeyReady");
    h.ss_send(crate::wire::KeyReady.into());
    let first = h.keepalives();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].counter, 1);
    // A second KeyReady starts nothing new.
    h.ss_send(crate::wire::KeyReady.into());
    assert!(h.keepalives().is_empty());
}

#[test]
fn first_keepalive_goes_after_the_key_ready_timeout_without_one() {
    let mut h = registered_without_key_ready(34);
    h.advance(KEY_READY_TIMEOUT - secs(1));
    assert!(h.keepalives().is_empty());
    h.advance(secs(1));
    assert_eq!(h.keepalives().len(), 1, "the fallback keepalive");
}

/// A second trigger server (a shard) of the sharded tests.
const SHARD_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), 3478));

/// The datagrams sent since the last look, with where each went.
fn keepalives_to(h: &mut Harness) -> Vec<(SocketAddr, Keepalive)> {
    h.take_udp()
        .into_iter()
        .map(|(to, bytes)| match Message::decode(&bytes).unwrap() {
            Message::Keepalive(k) => (to, k),
            other => panic!("expected a keepalive, got {other:?}"),
        })
        .collect()
}

#[test]
fn shard_assignment_moves_keepalives_and_triggers_to_the_named_trigger_server() {
    let mut h = Harness::registered(40, |_| {});
    h.auto_ack = false;
    assert_eq!(h.t.trigger_server(), TS_ADDR);
    let before = h.t.stats().keepalives_sent;
    h.ss_send(
        crate::wire::TriggerAssignment {
            trigger: SHARD_ADDR,
        }
        .into(),
    );
    assert_eq!(h.t.trigger_server(), SHARD_ADDR);
    // Keepalives had started: the new shard hears one at once.
    let ka = keepalives_to(&mut h);
    assert_eq!(ka.len(), 1);
    assert_eq!(ka[0].0, SHARD_ADDR);
    assert_eq!(h.t.stats().keepalives_sent, before + 1);
    // Its ack counts, and brings the terminal online again.
    let ack = udp_auth::seal_keepalive_ack(&h.udp_key, ka[0].1.counter, 20, OBSERVED);
    h.t.handle_udp(h.now, SHARD_ADDR, &encode(&ack.into()));
    assert_eq!(
        h.take_events(),
        [TerminalEvent::Online { observed: OBSERVED }]
    );
    // A trigger from the old trigger server is now foreign traffic; the
    // shard's is answered, to the shard.
    let trigger = encode(&udp_auth::seal_trigger(&h.udp_key, 1).into());
    h.t.handle_udp(h.now, TS_ADDR, &trigger);
    assert_eq!(h.take_udp(), []);
    assert_eq!(h.take_upstream(), Vec::<Vec<u8>>::new());
    h.t.handle_udp(h.now, SHARD_ADDR, &trigger);
    let sent = h.take_udp();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, SHARD_ADDR);
    assert!(matches!(
        Message::decode(&sent[0].1),
        Ok(Message::TriggerAck(_))
    ));
    assert_eq!(plain(&h.ss_receive_one()), Message::Poll(Poll));
    // The regular schedule goes on to the shard.
    h.run_for(secs(20));
    assert!(keepalives_to(&mut h)
        .iter()
        .all(|(to, _)| *to == SHARD_ADDR));
    // The same assignment again sends nothing.
    h.ss_send(
        crate::wire::TriggerAssignment {
            trigger: SHARD_ADDR,
        }
        .into(),
    );
    assert_eq!(h.take_udp(), []);
}

#[test]
fn shard_assignment_before_key_ready_waits_for_it() {
    let mut h = registered_without_key_ready(41);
    h.ss_send(
        crate::wire::TriggerAssignment {
            trigger: SHARD_ADDR,
        }
        .into(),
    );
    assert_eq!(h.take_udp(), [], "no keepalive before KeyReady");
    h.ss_send(crate::wire::KeyReady.into());
    let ka = keepalives_to(&mut h);
    assert_eq!(ka.len(), 1);
    assert_eq!((ka[0].0, ka[0].1.counter), (SHARD_ADDR, 1));
}

#[test]
fn shard_assignment_lasts_one_registration() {
    let mut h = Harness::registered(42, |_| {});
    h.ss_send(
        crate::wire::TriggerAssignment {
            trigger: SHARD_ADDR,
        }
        .into(),
    );
    h.clear();
    // The shard died: three keepalives go unanswered, the terminal
    // registers again and keeps alive where it was configured until the
    // new registration names a shard.
    h.auto_ack = false;
    h.run_for(secs(20));
    for _ in 0..MISSED_ACKS {
        h.run_for(KEEPALIVE_ACK_TIMEOUT);
    }
    assert!(!h.t.is_registered());
    assert_eq!(h.t.trigger_server(), TS_ADDR);
    h.take_udp();
    h.ss_handshake(true);
    let ka = keepalives_to(&mut h);
    assert_eq!(ka[0].0, TS_ADDR);
}

#[test]
fn shard_assignment_outside_a_registration_is_ignored() {
    let mut h = Harness::registered(43, |_| {});
    h.t.handle_upstream_closed(h.now);
    h.clear();
    // A record cannot even be opened without the channel: counted, no move.
    let ignored = h.t.stats().ignored_upstream;
    let mut out = [0u8; MAX_MESSAGE_LEN];
    let bytes = encode(
        &crate::wire::TriggerAssignment {
            trigger: SHARD_ADDR,
        }
        .into(),
    );
    let n = h.ss.as_mut().unwrap().seal(&bytes, &mut out).unwrap();
    h.t.handle_upstream(h.now, &out[..n]);
    assert_eq!(h.t.trigger_server(), TS_ADDR);
    assert_eq!(h.t.stats().ignored_upstream, ignored + 1);
}
