//! The trigger server driven through its public inputs with bytes built by
//! the codec and the crypto APIs: a harness plays the session server (the
//! Noise IK initiator of the link) and the terminals (sealed keepalives and
//! trigger acks).

use super::*;
use crate::crypto::udp_auth;
use crate::crypto::{Initiator, SecureChannel, StaticKeypair, HANDSHAKE_TIMEOUT};
use crate::wire::{
    EndTrigger, EndTriggerRequest, KeepaliveAck, MessageType, Trigger, TriggerRequest,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::vec;
use std::vec::Vec;

const T0: Instant = Instant::from_micros(1_000_000_000);
const SS_CONN: ConnectionId = ConnectionId(1);
const SESSION: SessionId = SessionId([0x5e; 16]);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn encode(m: &Message<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; m.encoded_len()];
    let n = m.encode(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// What the session server read from the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FromTs {
    Result(TriggerResult),
    Address(AddressReply),
    Other(MessageType),
}

/// A terminal behind a NAT: its device ID, UDP key, last keepalive counter
/// and the public address its NAT gives it.
#[derive(Debug, Clone)]
struct Term {
    id: DeviceId,
    key: UdpKey,
    counter: u64,
    nat: SocketAddr,
}

impl Term {
    fn new(id: u64, nat: &str) -> Term {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&id.to_be_bytes());
        key[31] = 0x77;
        Term {
            id: DeviceId(id),
            key: UdpKey(key),
            counter: 0,
            nat: addr(nat),
        }
    }

    /// The next keepalive's bytes.
    fn keepalive(&mut self) -> Vec<u8> {
        self.counter += 1;
        encode(&udp_auth::seal_keepalive(&self.key, self.id, self.counter).into())
    }

    fn ack(&self, counter: u64) -> Vec<u8> {
        encode(&udp_auth::seal_trigger_ack(&self.key, self.id, counter).into())
    }
}

/// The trigger server, a session server linked to it on [`SS_CONN`], a
/// virtual clock, and everything the server sent, sorted.
struct Harness {
    ts: TriggerServer<ChaCha20Rng>,
    now: Instant,
    rng: ChaCha20Rng,
    ss_key: StaticKeypair,
    ss: Option<SecureChannel>,
    conn: ConnectionId,
    udp: Vec<(SocketAddr, Vec<u8>)>,
    /// The local address each of `udp` leaves from.
    udp_local: Vec<Option<IpAddr>>,
    replies: Vec<FromTs>,
    other_streams: Vec<(ConnectionId, Vec<u8>)>,
    events: Vec<TriggerEvent>,
    /// Streams the server closed.
    closed: Vec<ConnectionId>,
}

impl Harness {
    fn new(config: TriggerConfig) -> Harness {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let ts_key = StaticKeypair::generate(&mut rng);
        let ss_key = StaticKeypair::generate(&mut rng);
        let ts = TriggerServer::new(
            config,
            ts_key,
            &[ss_key.public_key()],
            ChaCha20Rng::seed_from_u64(8),
        );
        Harness {
            ts,
            now: T0,
            rng,
            ss_key,
            ss: None,
            conn: SS_CONN,
            udp: Vec::new(),
            udp_local: Vec::new(),
            replies: Vec::new(),
            other_streams: Vec::new(),
            events: Vec::new(),
            closed: Vec::new(),
        }
    }

    /// A harness whose session server is linked on [`SS_CONN`].
    fn linked(config: TriggerConfig) -> Harness {
        let mut h = Harness::new(config);
        h.ts.handle_connection_opened(h.now, SS_CONN, addr("10.0.0.2:40000"));
        let key = h.ss_key.clone();
        h.ss = Some(h.handshake(SS_CONN, &key, &encode(&Poll.into())).unwrap());
        h.drain();
        h.take_events();
        h
    }

    /// Plays the initiator's side of a link handshake on `conn` with `key`
    /// and the given payload; the channel if the server answered.
    fn handshake(
        &mut self,
        conn: ConnectionId,
        key: &StaticKeypair,
        payload: &[u8],
    ) -> Option<SecureChannel> {
        let mut noise = [0u8; 512];
        let ts_public = self.ts.public_key();
        let (mut init, n) = Initiator::start(
            &mut self.rng,
            self.now,
            key,
            &ts_public,
            payload,
            &mut noise,
        )
        .unwrap();
        let msg = encode(&HandshakeInit { noise: &noise[..n] }.into());
        self.ts.handle_stream(self.now, conn, &msg);
        let mut channel = None;
        for t in self.poll_all() {
            if t.destination != Destination::Connection(conn) {
                self.sort(t);
                continue;
            }
            let Ok(Message::HandshakeReply(reply)) = Message::decode(&t.payload) else {
                panic!("not a handshake reply");
            };
            let mut p = [0u8; 64];
            // Only a clock at the very end of time expires the initiator at once.
            let Ok((ch, pn)) = init.finish(self.now, &reply, &mut p) else {
                assert!(self.now >= Instant::MAX.saturating_sub(HANDSHAKE_TIMEOUT));
                continue;
            };
            assert_eq!(Message::decode(&p[..pn]), Ok(Message::Poll(Poll)));
            channel = Some(ch);
        }
        channel
    }

    /// Polls until [`Output::Timeout`] (which must agree with
    /// `poll_timeout`): events and closes logged, transmits returned.
    fn poll_all(&mut self) -> Vec<OwnedTransmit> {
        let mut buf = [0u8; crate::machine::MAX_TRANSMIT_LEN];
        let mut out = Vec::new();
        loop {
            match self.ts.poll_output(&mut buf) {
                Output::Store(never) => match never {},
                Output::Close(conn) => self.closed.push(conn),
                Output::Event(e) => self.events.push(e),
                Output::Transmit(t) => out.push(
                    OwnedTransmit::from_bytes(t.destination, &buf[..t.len])
                        .expect("fits")
                        .from_local(t.local),
                ),
                Output::Timeout(at) => {
                    assert_eq!(at, self.ts.poll_timeout());
                    return out;
                }
            }
        }
    }

    fn sort(&mut self, t: OwnedTransmit) {
        match t.destination {
            Destination::Udp(a) => {
                self.udp.push((a, t.payload.to_vec()));
                self.udp_local.push(t.local);
            }
            Destination::Connection(c) if c == self.conn && self.ss.is_some() => {
                let Ok(Message::Sealed(record)) = Message::decode(&t.payload) else {
                    panic!("plain message on the link");
                };
                let mut plain = [0u8; 128];
                let ss = self.ss.as_mut().unwrap();
                let n = ss.open(&record, &mut plain).unwrap();
                self.replies
                    .push(match Message::decode(&plain[..n]).unwrap() {
                        Message::TriggerResult(r) => FromTs::Result(r),
                        Message::AddressReply(r) => FromTs::Address(r),
                        other => FromTs::Other(other.message_type()),
                    });
            }
            Destination::Connection(c) => self.other_streams.push((c, t.payload.to_vec())),
            Destination::Upstream | Destination::RelayStream(_) => {
                panic!("the trigger server has no upstream")
            }
        }
    }

    /// Collects every transmit and event, as a driver would.
    fn drain(&mut self) {
        for t in self.poll_all() {
            self.sort(t);
        }
    }

    /// The session server sends `m`, sealed, on its connection.
    fn ss_send(&mut self, m: Message<'_>) {
        let bytes = self.seal(&m);
        self.ts.handle_stream(self.now, self.conn, &bytes);
        self.drain();
    }

    fn seal(&mut self, m: &Message<'_>) -> Vec<u8> {
        let plain = encode(m);
        let mut out = vec![0u8; plain.len() + SEALED_OVERHEAD];
        let n = self.ss.as_mut().unwrap().seal(&plain, &mut out).unwrap();
        out.truncate(n);
        out
    }

    /// Installs `term`'s key and takes the trigger server's acknowledgement
    /// (absent when the install was refused).
    fn install(&mut self, term: &Term) {
        self.ss_send(
            KeyInstall {
                device_id: term.id,
                udp_key: term.key,
                local: None,
            }
            .into(),
        );
        self.replies
            .retain(|r| !matches!(r, FromTs::Other(MessageType::KeyInstallAck)));
    }

    /// [`Self::install`] with the local UDP address the terminal's
    /// `Register` named.
    fn install_with_local(&mut self, term: &Term, local: Option<SocketAddr>) {
        self.ss_send(
            KeyInstall {
                device_id: term.id,
                udp_key: term.key,
                local,
            }
            .into(),
        );
        self.replies
            .retain(|r| !matches!(r, FromTs::Other(MessageType::KeyInstallAck)));
    }

    /// The trigger server's NAT type guess for `term`.
    fn nat_guess(&self, term: &Term) -> Option<NatGuess> {
        self.ts
            .devices()
            .find(|d| d.device_id == term.id)
            .map(|d| d.nat)
    }

    fn trigger(&mut self, op_id: u32, term: &Term) {
        self.ss_send(
            TriggerRequest {
                op_id,
                device_id: term.id,
            }
            .into(),
        );
    }

    fn inquire(&mut self, op_id: u32, first: DeviceId, second: DeviceId) -> AddressReply {
        self.ss_send(
            AddressInquiry {
                op_id,
                first,
                second,
            }
            .into(),
        );
        match self.replies.pop() {
            Some(FromTs::Address(r)) => r,
            other => panic!("expected an address reply, got {other:?}"),
        }
    }

    fn udp_in(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.ts.handle_udp(self.now, from, bytes);
        self.drain();
    }

    /// The terminal sends its next keepalive from its NAT address.
    fn keepalive(&mut self, term: &mut Term) {
        let bytes = term.keepalive();
        self.udp_in(term.nat, &bytes);
    }

    /// Moves the clock by `d`, waking the server at every deadline on the
    /// way, as a driver would.
    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(at) = self.ts.poll_timeout() {
            if at > target {
                break;
            }
            self.now = self.now.max(at);
            self.ts.handle_timeout(self.now);
            self.drain();
            assert!(self.ts.poll_timeout().is_none_or(|t| t > self.now));
        }
        self.now = target;
        self.ts.handle_timeout(target);
        self.drain();
    }

    fn take_udp(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.udp_local.clear();
        core::mem::take(&mut self.udp)
    }

    /// The local addresses the datagrams since the last take leave from.
    fn take_udp_local(&mut self) -> Vec<Option<IpAddr>> {
        self.udp.clear();
        core::mem::take(&mut self.udp_local)
    }

    fn take_replies(&mut self) -> Vec<FromTs> {
        core::mem::take(&mut self.replies)
    }

    fn take_events(&mut self) -> Vec<TriggerEvent> {
        core::mem::take(&mut self.events)
    }
}

fn decode_ack(bytes: &[u8]) -> KeepaliveAck {
    match Message::decode(bytes) {
        Ok(Message::KeepaliveAck(a)) => a,
        other => panic!("not a keepalive ack: {other:?}"),
    }
}

fn decode_trigger(bytes: &[u8]) -> Trigger {
    match Message::decode(bytes) {
        Ok(Message::Trigger(t)) => t,
        other => panic!("not a trigger: {other:?}"),
    }
}

fn result(op_id: u32, outcome: TriggerOutcome) -> FromTs {
    FromTs::Result(TriggerResult { op_id, outcome })
}

/// A linked harness with one installed terminal that has kept alive once.
fn with_live_terminal(config: TriggerConfig) -> (Harness, Term) {
    let mut h = Harness::linked(config);
    let mut term = Term::new(0x0102_0304_0506_0708, "203.0.113.7:40001");
    h.install(&term);
    h.keepalive(&mut term);
    h.take_udp();
    h.take_events();
    (h, term)
}

#[test]
fn s701_keepalive_registers_the_observed_address_not_a_claimed_one() {
    let mut h = Harness::linked(TriggerConfig::default());
    // The terminal's own socket is 192.168.1.10:5000; its NAT maps it to
    // 203.0.113.7:40001. Nothing in the keepalive names either address.
    let mut term = Term::new(42, "203.0.113.7:40001");
    h.install(&term);
    assert_eq!(
        h.take_events(),
        [TriggerEvent::KeyInstalled { device_id: term.id }]
    );
    assert_eq!(h.ts.live_address(term.id), None);
    h.keepalive(&mut term);
    assert_eq!(h.ts.live_address(term.id), Some(term.nat));
    assert_eq!(
        h.take_events(),
        [TriggerEvent::AddressChanged {
            device_id: term.id,
            addr: term.nat
        }]
    );
    let reply = h.inquire(1, term.id, term.id);
    assert_eq!(reply.first, Some(term.nat));
    // The same terminal behind a NAT that rebinds: the new observed address wins.
    term.nat = addr("203.0.113.7:40777");
    h.keepalive(&mut term);
    assert_eq!(h.ts.live_address(term.id), Some(term.nat));
    assert_eq!(
        h.take_events(),
        [TriggerEvent::AddressChanged {
            device_id: term.id,
            addr: term.nat
        }]
    );
    // A keepalive from the same address again is no change.
    h.keepalive(&mut term);
    assert!(h.take_events().is_empty());
}

#[test]
fn keepalive_ack_echoes_counter_observed_address_and_interval() {
    let config = TriggerConfig {
        keepalive_interval: secs(25),
        ..TriggerConfig::default()
    };
    let mut h = Harness::linked(config);
    let mut term = Term::new(9, "198.51.100.20:6000");
    h.install(&term);
    term.counter = 41;
    h.keepalive(&mut term);
    let udp = h.take_udp();
    assert_eq!(udp.len(), 1);
    let (to, bytes) = &udp[0];
    assert_eq!(*to, term.nat, "the ack goes to the observed source address");
    let ack = decode_ack(bytes);
    assert_eq!(ack.counter, 42);
    assert_eq!(ack.interval_secs, 25);
    assert_eq!(ack.observed, term.nat);
    assert_eq!(udp_auth::verify(&term.key, &ack), Ok(()));
    assert_eq!(h.ts.stats().keepalives_accepted, 1);
}

#[test]
fn unknown_device_keepalive_gets_no_reply_and_no_state() {
    let mut h = Harness::linked(TriggerConfig::default());
    let mut known = Term::new(1, "203.0.113.1:1000");
    h.install(&known);
    h.keepalive(&mut known);
    h.take_udp();
    h.take_events();
    let timers_before = h.ts.timers.len();
    let timeout_before = h.ts.poll_timeout();
    let mut stranger = Term::new(2, "198.51.100.66:9999");
    for _ in 0..100 {
        h.keepalive(&mut stranger);
    }
    assert!(h.take_udp().is_empty(), "no reply");
    assert!(h.take_events().is_empty());
    assert_eq!(h.ts.device_count(), 1);
    assert!(!h.ts.devices.contains_key(&stranger.id));
    assert_eq!(h.ts.timers.len(), timers_before);
    assert_eq!(h.ts.poll_timeout(), timeout_before);
    assert_eq!(h.ts.stats().unknown_device, 100);
    // A fresh server (as after a restart) holds no keys: it is silent too.
    let mut fresh = Harness::new(TriggerConfig::default());
    fresh.keepalive(&mut known);
    assert!(fresh.take_udp().is_empty());
    assert_eq!(fresh.ts.poll_timeout(), None);
}

#[test]
fn replayed_keepalive_cannot_move_the_address() {
    let (mut h, mut term) = with_live_terminal(TriggerConfig::default());
    let old = term.keepalive();
    h.udp_in(term.nat, &old);
    let latest = term.keepalive();
    h.udp_in(term.nat, &latest);
    h.take_udp();
    h.take_events();
    let attacker = addr("192.0.2.66:6666");
    h.advance(secs(3));
    h.udp_in(attacker, &old);
    h.udp_in(attacker, &latest);
    assert_eq!(h.ts.live_address(term.id), Some(term.nat));
    assert!(h.take_udp().is_empty(), "no ack to the attacker");
    assert!(h.take_events().is_empty());
    assert_eq!(h.ts.stats().keepalives_replayed, 2);
    // The terminal's next keepalive still works.
    h.keepalive(&mut term);
    assert_eq!(h.take_udp().len(), 1);
}

#[test]
fn forged_keepalive_tag_is_ignored() {
    let (mut h, mut term) = with_live_terminal(TriggerConfig::default());
    let attacker = addr("192.0.2.66:6666");
    // Right device, wrong key, a counter far ahead.
    let mut forger = term.clone();
    forger.key = UdpKey([0x42; 32]);
    forger.counter = u64::MAX - 1;
    let forged = forger.keepalive();
    h.udp_in(attacker, &forged);
    // The real next keepalive with one tag bit flipped.
    let mut flipped = term.clone().keepalive();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    h.udp_in(attacker, &flipped);
    assert_eq!(h.ts.stats().keepalives_forged, 2);
    assert_eq!(h.ts.live_address(term.id), Some(term.nat));
    assert!(h.take_udp().is_empty());
    assert!(h.take_events().is_empty());
    // The forgeries did not move the replay guard.
    h.keepalive(&mut term);
    assert_eq!(h.take_udp().len(), 1);
}

#[test]
fn keepalive_flood_is_rate_limited() {
    let mut h = Harness::linked(TriggerConfig::default());
    let mut term = Term::new(5, "203.0.113.5:5000");
    h.install(&term);
    for _ in 0..20 {
        h.keepalive(&mut term);
    }
    // KEEPALIVES: a burst of 4.
    assert_eq!(h.take_udp().len(), 4);
    assert_eq!(h.ts.stats().keepalives_rate_limited, 16);
    // One more token after 5 s.
    h.advance(secs(5));
    for _ in 0..3 {
        h.keepalive(&mut term);
    }
    assert_eq!(h.take_udp().len(), 1);
    // A flood of forgeries naming the device spends none of its tokens.
    h.advance(secs(60));
    let attacker = addr("192.0.2.66:6666");
    let mut forger = term.clone();
    forger.key = UdpKey([1; 32]);
    for _ in 0..1000 {
        let bytes = forger.keepalive();
        h.udp_in(attacker, &bytes);
    }
    assert!(h.take_udp().is_empty());
    h.keepalive(&mut term);
    assert_eq!(h.take_udp().len(), 1, "the real device is still heard");
}

#[test]
fn address_expires_after_missed_keepalives() {
    let (mut h, mut term) = with_live_terminal(TriggerConfig::default());
    // 3 × 20 s + 5 s.
    assert_eq!(h.ts.poll_timeout(), Some(T0 + secs(65)));
    h.advance(secs(65) - Duration::from_micros(1));
    assert_eq!(h.ts.live_address(term.id), Some(term.nat));
    assert!(h.take_events().is_empty());
    h.advance(Duration::from_micros(1));
    assert_eq!(h.ts.live_address(term.id), None);
    assert_eq!(
        h.take_events(),
        [TriggerEvent::AddressExpired { device_id: term.id }]
    );
    assert_eq!(h.ts.poll_timeout(), None);
    // The key stays: the next keepalive makes the device live again.
    h.keepalive(&mut term);
    assert_eq!(h.ts.live_address(term.id), Some(term.nat));
    // A keepalive within the lifetime pushes the expiry back.
    h.advance(secs(60));
    h.keepalive(&mut term);
    h.advance(secs(60));
    assert_eq!(h.ts.live_address(term.id), Some(term.nat));
    assert_eq!(h.ts.timers.len(), 1, "one expiry entry per live address");
}

#[test]
fn answers_and_triggers_leave_from_the_local_address_the_keepalive_arrived_at() {
    // A trigger server on 0.0.0.0 of a host with two addresses: a terminal
    // behind a NAT keeps alive to one of them, and its NAT only lets in
    // what comes back from that one.
    let mut h = Harness::linked(TriggerConfig::default());
    let mut term = Term::new(0x0a0b, "203.0.113.7:40001");
    h.install(&term);
    let first: IpAddr = "192.0.2.10".parse().unwrap();
    let second: IpAddr = "192.0.2.20".parse().unwrap();
    let bytes = term.keepalive();
    h.ts.handle_udp_at(h.now, term.nat, Some(first), &bytes);
    h.drain();
    assert_eq!(h.take_udp_local(), [Some(first)], "the ack");
    h.trigger(1, &term);
    assert_eq!(h.take_udp_local(), [Some(first)], "the trigger");
    h.advance(secs(1));
    assert_eq!(h.take_udp_local(), [Some(first)], "its resend");
    // The terminal now keeps alive to the other address: everything follows.
    let bytes = term.keepalive();
    h.ts.handle_udp_at(h.now, term.nat, Some(second), &bytes);
    h.drain();
    assert_eq!(h.take_udp_local(), [Some(second)], "the next ack");
    h.advance(secs(1));
    assert_eq!(h.take_udp_local(), [Some(second)], "the next resend");
    // A driver that does not know (a socket bound to one address) says None.
    let bytes = term.keepalive();
    h.udp_in(term.nat, &bytes);
    assert_eq!(h.take_udp_local(), [None]);
}

#[test]
fn s603_trigger_is_sent_to_the_observed_address() {
    let (mut h, term) = with_live_terminal(TriggerConfig::default());
    h.trigger(3, &term);
    let udp = h.take_udp();
    assert_eq!(udp.len(), 1);
    assert_eq!(udp[0].0, term.nat);
    let trigger = decode_trigger(&udp[0].1);
    assert_eq!(trigger.counter, 1, "trigger counters start at 1 per key");
    // The terminal accepts it with its replay guard and key.
    let mut guard = ReplayGuard::new();
    assert_eq!(guard.accept(&term.key, &trigger), Ok(()));
    assert!(h.take_replies().is_empty(), "the result waits for the ack");
    assert_eq!(h.ts.pending_triggers(), 1);
}

#[test]
fn trigger_is_resent_until_acknowledged_then_reported_delivered() {
    let (mut h, term) = with_live_terminal(TriggerConfig::default());
    h.trigger(3, &term);
    assert_eq!(decode_trigger(&h.take_udp()[0].1).counter, 1);
    h.advance(secs(1));
    let udp = h.take_udp();
    assert_eq!(udp.len(), 1);
    let second = decode_trigger(&udp[0].1);
    assert_eq!(second.counter, 2, "a resend is a new message");
    assert_eq!(udp[0].0, term.nat);
    h.udp_in(addr("198.51.100.1:1"), &term.ack(2));
    assert_eq!(h.take_replies(), [result(3, TriggerOutcome::Delivered)]);
    assert!(h.take_events().contains(&TriggerEvent::TriggerDelivered {
        op_id: 3,
        device_id: term.id
    }));
    assert_eq!(h.ts.pending_triggers(), 0);
    // No more sends, and only the address expiry is left on the clock.
    h.advance(secs(5));
    assert!(h.take_udp().is_empty());
    assert!(h.take_replies().is_empty());
    assert_eq!(h.ts.timers.len(), 1);
    // An ack of an earlier send of a pending trigger counts as well.
    h.trigger(4, &term);
    h.advance(secs(1));
    assert_eq!(h.take_udp().len(), 2);
    h.udp_in(term.nat, &term.ack(3));
    assert_eq!(h.take_replies(), [result(4, TriggerOutcome::Delivered)]);
}

#[test]
fn unacknowledged_trigger_is_reported_after_three_sends() {
    let (mut h, term) = with_live_terminal(TriggerConfig::default());
    h.trigger(8, &term);
    for _ in 0..2 {
        h.advance(secs(1));
        assert!(h.take_replies().is_empty());
    }
    let counters: Vec<u64> = h
        .take_udp()
        .iter()
        .map(|(to, b)| {
            assert_eq!(*to, term.nat);
            decode_trigger(b).counter
        })
        .collect();
    assert_eq!(counters, [1, 2, 3]);
    h.advance(secs(1) - Duration::from_micros(1));
    assert!(h.take_replies().is_empty());
    h.advance(Duration::from_micros(1));
    assert_eq!(
        h.take_replies(),
        [result(8, TriggerOutcome::Unacknowledged)]
    );
    assert!(h
        .take_events()
        .contains(&TriggerEvent::TriggerUnacknowledged {
            op_id: 8,
            device_id: term.id
        }));
    h.advance(secs(10));
    assert!(h.take_udp().is_empty());
    // A late ack changes nothing.
    h.udp_in(term.nat, &term.ack(3));
    assert!(h.take_replies().is_empty());
}

#[test]
fn s603_offline_device_trigger_reports_offline() {
    let mut h = Harness::linked(TriggerConfig::default());
    let mut quiet = Term::new(1, "203.0.113.1:1000");
    h.install(&quiet);
    let unknown = Term::new(2, "203.0.113.2:1000");
    h.trigger(1, &quiet);
    h.trigger(2, &unknown);
    h.keepalive(&mut quiet);
    h.advance(secs(66));
    h.trigger(3, &quiet);
    assert!(
        h.udp
            .iter()
            .all(|(_, b)| Message::decode(b).unwrap().message_type() == MessageType::KeepaliveAck),
        "no trigger goes out"
    );
    assert_eq!(
        h.take_replies(),
        [
            result(1, TriggerOutcome::Offline),
            result(2, TriggerOutcome::Offline),
            result(3, TriggerOutcome::Offline),
        ]
    );
    assert!(h.take_events().contains(&TriggerEvent::Offline {
        op_id: 2,
        device_id: unknown.id
    }));
    assert_eq!(h.ts.pending_triggers(), 0);
}

#[test]
fn forged_or_replayed_trigger_ack_is_ignored() {
    let (mut h, term) = with_live_terminal(TriggerConfig::default());
    h.trigger(5, &term);
    h.take_udp();
    let attacker = addr("192.0.2.66:6666");
    // Forged: the right counter under another key.
    let mut forger = term.clone();
    forger.key = UdpKey([9; 32]);
    h.udp_in(attacker, &forger.ack(1));
    // A valid tag for a counter never sent.
    h.udp_in(attacker, &term.ack(99));
    // A valid ack under another device ID.
    let mut other = term.clone();
    other.id = DeviceId(12345);
    h.udp_in(attacker, &other.ack(1));
    assert!(h.take_replies().is_empty());
    assert_eq!(h.ts.pending_triggers(), 1);
    assert_eq!(h.ts.stats().trigger_acks_ignored, 2);
    assert_eq!(h.ts.stats().unknown_device, 1);
    // The genuine ack, then its replay.
    let ack = term.ack(1);
    h.udp_in(term.nat, &ack);
    h.udp_in(attacker, &ack);
    assert_eq!(h.take_replies(), [result(5, TriggerOutcome::Delivered)]);
    // A replay of the old ack cannot answer a new trigger.
    h.trigger(6, &term);
    h.udp_in(attacker, &ack);
    assert!(h.take_replies().is_empty());
    assert_eq!(h.ts.pending_triggers(), 1);
    assert!(
        h.udp.iter().all(|(to, _)| *to == term.nat),
        "nothing to the attacker"
    );
}

#[test]
fn s604_s606_address_inquiry_returns_only_live_addresses() {
    let mut h = Harness::linked(TriggerConfig::default());
    let mut live = Term::new(10, "203.0.113.10:1000");
    let never = Term::new(11, "203.0.113.11:1000");
    let mut expired = Term::new(12, "203.0.113.12:1000");
    let unknown = DeviceId(13);
    for t in [&live, &never, &expired] {
        h.install(t);
    }
    h.keepalive(&mut expired);
    h.advance(secs(50));
    h.keepalive(&mut live);
    h.advance(secs(16));
    let r = h.inquire(5, live.id, never.id);
    assert_eq!(
        r,
        AddressReply {
            op_id: 5,
            first: Some(live.nat),
            second: None
        }
    );
    let r = h.inquire(6, expired.id, live.id);
    assert_eq!((r.op_id, r.first, r.second), (6, None, Some(live.nat)));
    let r = h.inquire(7, unknown, unknown);
    assert_eq!((r.first, r.second), (None, None));
    // Past the deadline but before handle_timeout ran: still not live.
    let mut h2 = Harness::linked(TriggerConfig::default());
    let mut t = Term::new(20, "203.0.113.20:1000");
    h2.install(&t);
    h2.keepalive(&mut t);
    h2.now = h2.now + secs(65);
    let r = h2.inquire(1, t.id, t.id);
    assert_eq!((r.first, r.second), (None, None));
}

#[test]
fn s1605_end_trigger_carries_the_session_id() {
    let (mut h, term) = with_live_terminal(TriggerConfig::default());
    h.trigger(1, &term);
    h.udp_in(term.nat, &term.ack(1));
    h.take_udp();
    h.take_replies();
    h.ss_send(
        EndTriggerRequest {
            op_id: 4,
            device_id: term.id,
            session_id: SESSION,
        }
        .into(),
    );
    let udp = h.take_udp();
    assert_eq!(udp.len(), 1);
    assert_eq!(udp[0].0, term.nat);
    let end: EndTrigger = match Message::decode(&udp[0].1) {
        Ok(Message::EndTrigger(e)) => e,
        other => panic!("not an end trigger: {other:?}"),
    };
    assert_eq!(end.session_id, SESSION);
    assert_eq!(end.counter, 2, "end triggers share the trigger counter");
    assert_eq!(udp_auth::verify(&term.key, &end), Ok(()));
    // Resent like a trigger, then acknowledged.
    h.advance(secs(1));
    let resent = h.take_udp();
    assert!(matches!(
        Message::decode(&resent[0].1),
        Ok(Message::EndTrigger(EndTrigger {
            counter: 3,
            session_id: SESSION,
            ..
        }))
    ));
    h.udp_in(term.nat, &term.ack(3));
    assert_eq!(h.take_replies(), [result(4, TriggerOutcome::Delivered)]);
}

#[test]
fn key_revoke_forgets_the_device() {
    let (mut h, mut term) = with_live_terminal(TriggerConfig::default());
    h.trigger(1, &term);
    h.take_udp();
    h.ss_send(KeyRevoke { device_id: term.id }.into());
    assert_eq!(h.ts.device_count(), 0);
    assert_eq!(h.ts.live_address(term.id), None);
    assert_eq!(h.ts.pending_triggers(), 0);
    assert_eq!(h.ts.poll_timeout(), None, "no timer left behind");
    assert_eq!(h.take_replies(), [result(1, TriggerOutcome::Offline)]);
    let events = h.take_events();
    assert!(events.contains(&TriggerEvent::KeyRevoked { device_id: term.id }));
    h.keepalive(&mut term);
    assert!(h.take_udp().is_empty(), "a revoked device is a stranger");
    h.udp_in(term.nat, &term.ack(1));
    assert!(h.take_replies().is_empty());
    // Revoking again is counted, not an error.
    h.ss_send(KeyRevoke { device_id: term.id }.into());
    assert_eq!(h.ts.stats().key_revokes_unknown, 1);
    assert!(h.take_events().is_empty());
}

#[test]
fn key_install_is_idempotent_and_bounded() {
    let config = TriggerConfig {
        max_devices: 2,
        ..TriggerConfig::default()
    };
    let mut h = Harness::linked(config);
    let mut a = Term::new(1, "203.0.113.1:1");
    let b = Term::new(2, "203.0.113.2:1");
    let c = Term::new(3, "203.0.113.3:1");
    h.install(&a);
    h.keepalive(&mut a);
    h.trigger(1, &a);
    // The same key again: nothing restarts (counters never repeat under a key).
    h.install(&a);
    assert_eq!(h.ts.stats().key_installs_repeated, 1);
    assert_eq!(h.ts.live_address(a.id), Some(a.nat));
    h.advance(secs(1));
    let counters: Vec<u64> = h
        .take_udp()
        .iter()
        .filter_map(|(_, b)| match Message::decode(b) {
            Ok(Message::Trigger(t)) => Some(t.counter),
            _ => None,
        })
        .collect();
    assert_eq!(counters, [1, 2]);
    h.install(&b);
    h.install(&c);
    assert_eq!(h.ts.device_count(), 2);
    assert!(h
        .take_events()
        .contains(&TriggerEvent::KeyInstallRefused { device_id: c.id }));
    assert_eq!(h.ts.stats().key_installs_refused, 1);
}

#[test]
fn session_server_link_refuses_unknown_keys() {
    let mut h = Harness::linked(TriggerConfig::default());
    h.take_events();
    let stranger = StaticKeypair::generate(&mut h.rng);
    let conn = ConnectionId(2);
    h.ts.handle_connection_opened(h.now, conn, addr("192.0.2.9:5555"));
    let poll = encode(&Poll.into());
    assert!(h.handshake(conn, &stranger, &poll).is_none(), "no reply");
    h.drain();
    assert_eq!(
        h.take_events(),
        [TriggerEvent::LinkRefused {
            conn,
            key: stranger.public_key()
        }]
    );
    assert_eq!(h.ts.stats().links_refused, 1);
    // The server forgot the stream and asked the driver to close it.
    assert_eq!(h.closed, [conn]);
    h.ts.handle_connection_opened(h.now, conn, addr("192.0.2.9:5555"));
    // The allowed key with a payload that is not a Poll: no link either.
    let key = h.ss_key.clone();
    let bad = encode(
        &KeyRevoke {
            device_id: DeviceId(1),
        }
        .into(),
    );
    assert!(h.handshake(conn, &key, &bad).is_none());
    assert_eq!(h.ts.stats().handshakes_failed, 1);
    assert!(h.other_streams.is_empty());
    // Then the allowed key properly: linked.
    assert!(h.handshake(conn, &key, &poll).is_some());
    h.drain();
    assert_eq!(
        h.take_events(),
        [TriggerEvent::SessionServerLinked {
            key: key.public_key()
        }]
    );
}

#[test]
fn sealed_messages_before_the_handshake_are_ignored() {
    let mut h = Harness::linked(TriggerConfig::default());
    let term = Term::new(77, "203.0.113.77:1");
    let install = h.seal(
        &KeyInstall {
            device_id: term.id,
            udp_key: term.key,
            local: None,
        }
        .into(),
    );
    // A record on a connection that never shook hands.
    let conn = ConnectionId(2);
    h.ts.handle_connection_opened(h.now, conn, addr("192.0.2.9:5555"));
    h.ts.handle_stream(h.now, conn, &install);
    // On a connection the server never heard of.
    h.ts.handle_stream(h.now, ConnectionId(99), &install);
    // A plain (unsealed) message on the linked connection.
    let plain = encode(
        &KeyInstall {
            device_id: term.id,
            udp_key: term.key,
            local: None,
        }
        .into(),
    );
    h.ts.handle_stream(h.now, SS_CONN, &plain);
    h.drain();
    assert_eq!(h.ts.device_count(), 0);
    assert_eq!(h.ts.stats().sealed_before_handshake, 1);
    assert_eq!(h.ts.stats().stream_ignored, 2);
    assert!(h.take_udp().is_empty() && h.other_streams.is_empty());
    // The same record where it belongs works once; its replay does not.
    h.ts.handle_stream(h.now, SS_CONN, &install);
    h.ts.handle_stream(h.now, SS_CONN, &install);
    h.drain();
    assert_eq!(h.ts.device_count(), 1);
    assert_eq!(h.ts.stats().records_refused, 1);
    assert_eq!(
        h.take_replies(),
        [FromTs::Other(MessageType::KeyInstallAck)],
        "one install, one acknowledgement"
    );
    // Messages for other machines are counted and ignored.
    h.ss_send(Message::TriggerResult(TriggerResult {
        op_id: 1,
        outcome: TriggerOutcome::Delivered,
    }));
    assert_eq!(h.ts.stats().not_for_trigger_server, 1);
    assert!(h.take_replies().is_empty());
}

#[test]
fn results_follow_the_session_server_to_its_new_connection() {
    let (mut h, term) = with_live_terminal(TriggerConfig::default());
    h.trigger(9, &term);
    h.ts.handle_connection_closed(h.now, SS_CONN);
    let conn = ConnectionId(5);
    h.ts.handle_connection_opened(h.now, conn, addr("10.0.0.2:40001"));
    let key = h.ss_key.clone();
    let poll = encode(&Poll.into());
    h.ss = h.handshake(conn, &key, &poll);
    h.conn = conn;
    // The session server speaks on the new link (e.g. another request).
    h.inquire(1, term.id, term.id);
    h.udp_in(term.nat, &term.ack(1));
    assert_eq!(h.take_replies(), [result(9, TriggerOutcome::Delivered)]);
}

#[test]
fn time_going_back_is_clamped() {
    let (mut h, mut term) = with_live_terminal(TriggerConfig::default());
    let deadline = h.ts.poll_timeout().unwrap();
    assert_eq!(deadline, T0 + secs(65));
    h.advance(secs(30));
    // The driver's clock jumps back far: nothing fires, nothing moves back.
    h.ts.handle_timeout(Instant::ZERO);
    assert_eq!(h.ts.poll_timeout(), Some(deadline));
    assert!(h.ts.poll_timeout().unwrap() > T0);
    // A keepalive stamped in the past counts as now (T0 + 30 s).
    h.now = T0;
    h.keepalive(&mut term);
    assert_eq!(h.ts.poll_timeout(), Some(T0 + secs(30) + secs(65)));
    // A trigger requested "in the past" is resent 1 s after the latest time.
    h.trigger(1, &term);
    h.take_udp();
    assert_eq!(h.ts.pending_triggers(), 1);
    h.ts.handle_timeout(T0 + secs(30) + Duration::from_millis(999));
    h.drain();
    assert!(h.take_udp().is_empty());
    h.ts.handle_timeout(T0 + secs(31));
    h.drain();
    assert_eq!(h.take_udp().len(), 1);
    // The far end of time saturates instead of overflowing: an address
    // seen 2 s before the end lives until the end; the trigger's resend
    // times all saturate to the end, and one handle_timeout finishes it.
    h.ts.handle_timeout(Instant::MAX.saturating_sub(secs(3)));
    h.drain();
    h.take_replies();
    h.now = Instant::MAX.saturating_sub(secs(2));
    h.keepalive(&mut term);
    assert_eq!(h.ts.live_address(term.id), Some(term.nat));
    h.trigger(2, &term);
    h.ts.handle_timeout(Instant::MAX);
    h.drain();
    assert_eq!(h.ts.poll_timeout(), None);
    assert_eq!(h.ts.live_address(term.id), None);
    assert!(h
        .take_replies()
        .contains(&result(2, TriggerOutcome::Unacknowledged)));
}

#[test]
fn output_queues_are_bounded_when_the_driver_does_not_poll() {
    let mut h = Harness::linked(TriggerConfig {
        keepalive_limit: Limit::one_every(1, Duration::ZERO),
        ..TriggerConfig::default()
    });
    let mut term = Term::new(1, "203.0.113.1:1");
    h.install(&term);
    for i in 0..(MAX_TRIGGER_QUEUED_TRANSMITS + 10) {
        let bytes = term.keepalive();
        // A new address each time, so each also makes an event.
        let from = SocketAddr::new(term.nat.ip(), (i % 60_000) as u16 + 1);
        h.ts.handle_udp(h.now, from, &bytes);
    }
    assert_eq!(h.ts.transmits.len(), MAX_TRIGGER_QUEUED_TRANSMITS);
    assert_eq!(h.ts.stats().transmits_dropped, 10);
    for _ in 0..MAX_TRIGGER_QUEUED_EVENTS {
        let bytes = term.keepalive();
        h.ts.handle_udp(h.now, addr("203.0.113.1:2"), &bytes);
        h.ts.handle_udp(h.now, addr("203.0.113.1:3"), &term.keepalive());
    }
    assert_eq!(h.ts.events.len(), MAX_TRIGGER_QUEUED_EVENTS);
    assert!(h.ts.stats().events_dropped > 0);
}

#[test]
fn ten_thousand_devices_keep_alive_for_ten_minutes_in_bounded_memory() {
    const DEVICES: u64 = 10_000;
    let mut h = Harness::linked(TriggerConfig::default());
    let mut terms: Vec<Term> = (1..=DEVICES)
        .map(|i| {
            let ip = core::net::Ipv4Addr::from(0xc633_0000u32 + i as u32);
            let mut t = Term::new(i, "0.0.0.0:1");
            t.nat = SocketAddr::new(ip.into(), 40_000 + (i % 1000) as u16);
            t
        })
        .collect();
    for t in &terms {
        h.install(t);
    }
    h.take_events();
    assert_eq!(h.ts.device_count(), DEVICES as usize);
    // Every device keeps alive every 20 s, spread evenly over the interval;
    // the last 100 devices stop after 5 minutes. Every simulated second a
    // few triggers are requested.
    let interval_ms = 20_000u64;
    let step_ms = 100u64;
    let total_ms = 10 * 60 * 1000u64;
    let mut op_id = 0u32;
    let mut t_ms = 0u64;
    let mut max_timers = 0;
    while t_ms < total_ms {
        let next = t_ms + step_ms;
        h.advance(Duration::from_millis(step_ms));
        for (i, term) in terms.iter_mut().enumerate() {
            let phase = (i as u64 * interval_ms) / DEVICES;
            // Keepalive times: phase, phase + interval, ... within [t_ms, next).
            let due = (phase + interval_ms - t_ms % interval_ms) % interval_ms < step_ms;
            let stopped = i as u64 >= DEVICES - 100 && t_ms >= total_ms / 2;
            if due && !stopped {
                let bytes = term.keepalive();
                h.ts.handle_udp(h.now, term.nat, &bytes);
            }
        }
        if t_ms.is_multiple_of(1000) {
            op_id += 1;
            let target = &terms[(op_id as usize * 37) % terms.len()];
            h.trigger(op_id, &target.clone());
        }
        // Acks are not decoded here (they are checked elsewhere); only counted.
        h.drain();
        h.udp.clear();
        max_timers = max_timers.max(h.ts.timers.len());
        assert!(h.ts.transmits.is_empty());
        t_ms = next;
    }
    h.advance(secs(5));
    assert_eq!(h.ts.device_count(), DEVICES as usize);
    assert!(h.ts.pending_triggers() <= MAX_PENDING_PER_DEVICE * 10);
    // One expiry entry per live address plus one per pending trigger.
    assert!(max_timers <= DEVICES as usize + 10, "{max_timers} timers");
    let live = terms
        .iter()
        .filter(|t| h.ts.live_address(t.id).is_some())
        .count();
    assert_eq!(live, DEVICES as usize - 100, "the silent devices expired");
    assert_eq!(h.ts.timers.len(), live + h.ts.pending_triggers());
    let expired = h
        .events
        .iter()
        .filter(|e| matches!(e, TriggerEvent::AddressExpired { .. }))
        .count();
    assert_eq!(expired, 100);
    assert_eq!(h.ts.stats().keepalives_rate_limited, 0);
    assert_eq!(h.ts.stats().transmits_dropped, 0);
    let results = h
        .replies
        .iter()
        .filter(|r| matches!(r, FromTs::Result(_)))
        .count();
    assert_eq!(results, op_id as usize, "every trigger got one result");
    assert!(h.ts.stats().keepalives_accepted >= 290_000);
}

mod random {
    //! Random operation sequences and random bytes against the machine.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Keepalive { dev: u8, from: u8 },
        ReplayKeepalive { dev: u8, from: u8 },
        ForgedKeepalive { dev: u8, from: u8, counter: u64 },
        Ack { dev: u8, back: u8 },
        ForgedAck { dev: u8, counter: u64 },
        Trigger { dev: u8 },
        EndTrigger { dev: u8 },
        Inquiry { a: u8, b: u8 },
        Install { dev: u8 },
        Revoke { dev: u8 },
        Step { micros: u64 },
        Back { micros: u64 },
        NearTheEndOfTime,
        Garbage { udp: bool, bytes: Vec<u8> },
        Reconnect,
    }

    fn op() -> impl Strategy<Value = Op> {
        let dev = 0u8..6;
        prop_oneof![
            4 => (dev.clone(), 0u8..4).prop_map(|(dev, from)| Op::Keepalive { dev, from }),
            1 => (dev.clone(), 0u8..4).prop_map(|(dev, from)| Op::ReplayKeepalive { dev, from }),
            1 => (dev.clone(), 0u8..4, any::<u64>())
                .prop_map(|(dev, from, counter)| Op::ForgedKeepalive { dev, from, counter }),
            3 => (dev.clone(), 0u8..4).prop_map(|(dev, back)| Op::Ack { dev, back }),
            1 => (dev.clone(), 0u64..8).prop_map(|(dev, counter)| Op::ForgedAck { dev, counter }),
            3 => dev.clone().prop_map(|dev| Op::Trigger { dev }),
            1 => dev.clone().prop_map(|dev| Op::EndTrigger { dev }),
            1 => (dev.clone(), dev.clone()).prop_map(|(a, b)| Op::Inquiry { a, b }),
            1 => dev.clone().prop_map(|dev| Op::Install { dev }),
            1 => dev.prop_map(|dev| Op::Revoke { dev }),
            4 => prop_oneof![0u64..2_000_000, 0u64..200_000_000]
                .prop_map(|micros| Op::Step { micros }),
            1 => (0u64..100_000_000).prop_map(|micros| Op::Back { micros }),
            1 => Just(Op::NearTheEndOfTime),
            1 => (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64))
                .prop_map(|(udp, bytes)| Op::Garbage { udp, bytes }),
            1 => Just(Op::Reconnect),
        ]
    }

    fn sources() -> [SocketAddr; 4] {
        [
            addr("203.0.113.1:1000"),
            addr("203.0.113.1:2000"),
            addr("[2001:db8::1]:3000"),
            addr("192.0.2.66:6666"),
        ]
    }

    /// Checks the driver contract right after a `handle_timeout(now)`.
    fn check_timeout(h: &Harness, now: Instant) -> Result<(), TestCaseError> {
        let latest = h.ts.clock.latest();
        prop_assert!(latest >= now);
        if let Some(t) = h.ts.poll_timeout() {
            prop_assert!(t > latest, "poll_timeout {t:?} not after {latest:?}");
        }
        Ok(())
    }

    fn check_bounds(h: &Harness) -> Result<(), TestCaseError> {
        let pending: usize = h.ts.devices.values().map(|d| d.pending.len()).sum();
        prop_assert_eq!(pending, h.ts.pending_triggers());
        let live = h.ts.devices.values().filter(|d| d.addr.is_some()).count();
        prop_assert_eq!(h.ts.timers.len(), live + pending);
        prop_assert!(h.ts.transmits.len() <= MAX_TRIGGER_QUEUED_TRANSMITS);
        prop_assert!(h.ts.events.len() <= MAX_TRIGGER_QUEUED_EVENTS);
        prop_assert!(h.ts.conns.len() <= MAX_CONNECTIONS);
        for d in h.ts.devices.values() {
            prop_assert!(d.pending.len() <= MAX_PENDING_PER_DEVICE);
        }
        Ok(())
    }

    /// The trigger counters each device's key verifies, in the order sent.
    fn triggers_for(udp: &[(SocketAddr, Vec<u8>)], term: &Term) -> Vec<u64> {
        udp.iter()
            .filter_map(|(_, b)| match Message::decode(b) {
                Ok(Message::Trigger(t)) if udp_auth::verify(&term.key, &t).is_ok() => {
                    Some(t.counter)
                }
                Ok(Message::EndTrigger(t)) if udp_auth::verify(&term.key, &t).is_ok() => {
                    Some(t.counter)
                }
                _ => None,
            })
            .collect()
    }

    proptest! {
        #![proptest_config(proptest_config!(64, "core-trigger_server.txt"))]

        #[test]
        fn poll_timeout_is_never_in_the_past_after_handle_timeout(
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            let mut h = Harness::linked(TriggerConfig {
                max_devices: 4,
                ..TriggerConfig::default()
            });
            let mut terms: Vec<Term> = (0..6u64)
                .map(|i| Term::new(100 + i, "203.0.113.1:1000"))
                .collect();
            let mut last_keepalive: Vec<Option<Vec<u8>>> = vec![None; terms.len()];
            let mut requested = Vec::new();
            let mut reconnected = false;
            let mut op_id = 0u32;
            let mut next_conn = 10u64;
            for op in ops {
                match op {
                    Op::Keepalive { dev, from } => {
                        let t = &mut terms[dev as usize];
                        let bytes = t.keepalive();
                        let before = h.udp.len();
                        h.udp_in(sources()[from as usize], &bytes);
                        // Only an accepted keepalive can be replayed.
                        if h.udp.len() > before {
                            last_keepalive[dev as usize] = Some(bytes);
                        }
                    }
                    Op::ReplayKeepalive { dev, from } => {
                        if let Some(bytes) = last_keepalive[dev as usize].clone() {
                            let udp_before = h.udp.len();
                            h.udp_in(sources()[from as usize], &bytes);
                            prop_assert_eq!(h.udp.len(), udp_before, "a replay draws no reply");
                        }
                    }
                    Op::ForgedKeepalive { dev, from, counter } => {
                        let mut forger = terms[dev as usize].clone();
                        forger.key = UdpKey([0xee; 32]);
                        forger.counter = counter.saturating_sub(1);
                        let bytes = forger.keepalive();
                        let udp_before = h.udp.len();
                        h.udp_in(sources()[from as usize], &bytes);
                        prop_assert_eq!(h.udp.len(), udp_before, "a forgery draws no reply");
                    }
                    Op::Ack { dev, back } => {
                        let t = &terms[dev as usize];
                        let sent = triggers_for(&h.udp, t);
                        if let Some(&c) = sent.iter().rev().nth(back as usize) {
                            h.udp_in(t.nat, &t.ack(c));
                        }
                    }
                    Op::ForgedAck { dev, counter } => {
                        let mut forger = terms[dev as usize].clone();
                        forger.key = UdpKey([0xee; 32]);
                        let replies_before = h.replies.len();
                        h.udp_in(forger.nat, &forger.ack(counter));
                        prop_assert_eq!(h.replies.len(), replies_before);
                    }
                    Op::Trigger { dev } => {
                        if h.ss.is_none() {
                            continue;
                        }
                        op_id += 1;
                        requested.push(op_id);
                        let t = terms[dev as usize].clone();
                        h.trigger(op_id, &t);
                    }
                    Op::EndTrigger { dev } => {
                        if h.ss.is_none() {
                            continue;
                        }
                        op_id += 1;
                        requested.push(op_id);
                        h.ss_send(EndTriggerRequest {
                            op_id,
                            device_id: terms[dev as usize].id,
                            session_id: SESSION,
                        }.into());
                    }
                    Op::Inquiry { a, b } => {
                        if h.ss.is_none() {
                            continue;
                        }
                        op_id += 1;
                        let r = h.inquire(op_id, terms[a as usize].id, terms[b as usize].id);
                        prop_assert_eq!(r.op_id, op_id);
                        // Only live addresses, and only addresses keepalives came from.
                        for a in [r.first, r.second].into_iter().flatten() {
                            prop_assert!(sources().contains(&a));
                        }
                    }
                    Op::Install { dev } => {
                        if h.ss.is_none() {
                            continue;
                        }
                        let t = terms[dev as usize].clone();
                        h.install(&t);
                    }
                    Op::Revoke { dev } => {
                        if h.ss.is_none() {
                            continue;
                        }
                        h.ss_send(KeyRevoke { device_id: terms[dev as usize].id }.into());
                        // A later install is a new registration: a new key.
                        let t = &mut terms[dev as usize];
                        t.key.0[0] = t.key.0[0].wrapping_add(1);
                        t.counter = 0;
                    }
                    Op::Step { micros } => {
                        h.now = h.now + Duration::from_micros(micros);
                        h.ts.handle_timeout(h.now);
                        check_timeout(&h, h.now)?;
                        h.drain();
                    }
                    Op::Back { micros } => {
                        let back = h.now.saturating_sub(Duration::from_micros(micros));
                        h.ts.handle_timeout(back);
                        check_timeout(&h, back)?;
                        h.drain();
                    }
                    Op::NearTheEndOfTime => {
                        h.now = Instant::MAX.saturating_sub(Duration::from_secs(2));
                        h.ts.handle_timeout(h.now);
                        check_timeout(&h, h.now)?;
                        h.drain();
                    }
                    Op::Garbage { udp, bytes } => {
                        if udp {
                            let before = h.udp.len();
                            h.udp_in(sources()[0], &bytes);
                            prop_assert_eq!(h.udp.len(), before);
                        } else {
                            h.ts.handle_stream(h.now, h.conn, &bytes);
                            h.drain();
                        }
                    }
                    Op::Reconnect => {
                        reconnected = true;
                        h.ts.handle_connection_closed(h.now, h.conn);
                        let conn = ConnectionId(next_conn);
                        next_conn += 1;
                        h.ts.handle_connection_opened(h.now, conn, addr("10.0.0.2:40000"));
                        let key = h.ss_key.clone();
                        let poll = encode(&Poll.into());
                        h.ss = h.handshake(conn, &key, &poll);
                        prop_assert!(
                            h.ss.is_some()
                                || h.ts.stats().handshakes_rate_limited > 0
                                || h.now >= Instant::MAX.saturating_sub(HANDSHAKE_TIMEOUT)
                        );
                        h.conn = conn;
                        if h.ss.is_some() {
                            // Say something, so results find the new link.
                            h.ss_send(Message::Poll(Poll));
                        }
                    }
                }
                check_bounds(&h)?;
            }
            // Let every pending trigger finish.
            let end = h.now + Duration::from_secs(60);
            h.advance(end - h.now);
            check_timeout(&h, h.now)?;
            prop_assert_eq!(h.ts.pending_triggers(), 0);
            let mut answered: Vec<u32> = h
                .replies
                .iter()
                .filter_map(|r| match r {
                    FromTs::Result(r) => Some(r.op_id),
                    _ => None,
                })
                .collect();
            answered.sort_unstable();
            let mut unique = answered.clone();
            unique.dedup();
            prop_assert_eq!(&unique, &answered, "one result per request at most");
            if !reconnected {
                prop_assert_eq!(answered, requested, "exactly one result per request");
            }
        }

        #[test]
        fn arbitrary_datagrams_and_stream_messages_never_panic(
            datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..40),
            streams in proptest::collection::vec((0u8..3, proptest::collection::vec(any::<u8>(), 0..300)), 0..40),
            plaintexts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..20),
            flips in proptest::collection::vec((any::<usize>(), 0u8..8), 0..20),
        ) {
            let (mut h, mut term) = with_live_terminal(TriggerConfig::default());
            let unlinked = ConnectionId(2);
            h.ts.handle_connection_opened(h.now, unlinked, addr("192.0.2.1:1"));
            h.trigger(1, &term);
            h.take_udp();
            // Random datagrams, and valid ones with one bit flipped.
            let mut inputs = datagrams.clone();
            for &(pos, bit) in &flips {
                let mut k = term.clone().keepalive();
                let i = pos % k.len();
                k[i] ^= 1 << bit;
                inputs.push(k);
                let mut a = term.ack(1);
                let i = pos % a.len();
                a[i] ^= 1 << bit;
                inputs.push(a);
            }
            for d in &inputs {
                h.udp_in(addr("192.0.2.66:6666"), d);
            }
            prop_assert!(h.take_udp().is_empty(), "no UDP reply to unauthenticated bytes");
            prop_assert_eq!(h.ts.pending_triggers(), 1, "no forged ack was taken");
            // Random stream messages on the link, an unlinked and an unknown connection.
            for (which, bytes) in &streams {
                let conn = [SS_CONN, unlinked, ConnectionId(99)][*which as usize];
                h.ts.handle_stream(h.now, conn, bytes);
                h.drain();
            }
            // Random plaintexts sealed by the real session server.
            for p in &plaintexts {
                let mut out = vec![0u8; p.len() + SEALED_OVERHEAD];
                let n = h.ss.as_mut().unwrap().seal(p, &mut out).unwrap();
                h.ts.handle_stream(h.now, SS_CONN, &out[..n]);
                h.drain();
            }
            h.advance(Duration::from_secs(100));
            check_bounds(&h)?;
            h.take_udp();
            // The machine still works.
            h.keepalive(&mut term);
            prop_assert_eq!(h.take_udp().len(), 1);
        }
    }
}

// ---- Issue 12 (abuse-streams): stream bounds on the link listener ----

#[test]
fn a_link_stream_that_never_sends_a_message_is_closed_at_the_first_message_bound() {
    let mut h = Harness::linked(TriggerConfig::default());
    let silent = ConnectionId(99);
    h.ts.handle_connection_opened(h.now, silent, addr("10.0.0.9:40000"));
    h.advance(crate::conn_guard::FIRST_MESSAGE_TIMEOUT - secs(1));
    assert!(h.closed.is_empty(), "closed before the bound");
    h.advance(secs(1));
    assert_eq!(h.closed, vec![silent]);
}

#[test]
fn an_established_link_outlives_the_idle_bound_and_an_unlinked_stream_does_not() {
    let mut h = Harness::linked(TriggerConfig::default());
    let junk = ConnectionId(98);
    h.ts.handle_connection_opened(h.now, junk, addr("10.0.0.9:40001"));
    h.ts.handle_stream(h.now, junk, &encode(&Poll.into()));
    h.advance(crate::conn_guard::IDLE_STREAM_TIMEOUT + secs(1));
    assert_eq!(h.closed, vec![junk], "only the stream without a link");
    h.advance(crate::conn_guard::IDLE_STREAM_TIMEOUT * 10);
    assert_eq!(h.closed, vec![junk], "the link stays");
}

#[test]
fn key_install_is_acknowledged_before_the_first_keepalive_so_its_replay_is_refused() {
    let mut h = Harness::linked(TriggerConfig::default());
    let mut term = Term::new(61, "203.0.113.61:40001");
    let install: Message<'_> = KeyInstall {
        device_id: term.id,
        udp_key: term.key,
        local: None,
    }
    .into();
    h.ss_send(install.clone());
    // The session server hears that the key is in (and only then lets the
    // terminal start its keepalives).
    assert_eq!(
        h.take_replies(),
        [FromTs::Other(MessageType::KeyInstallAck)]
    );
    // So the first keepalive is accepted, not dropped...
    let first = term.keepalive();
    h.udp_in(term.nat, &first);
    assert_eq!(h.ts.live_address(term.id), Some(term.nat));
    // ...and a copy replayed later from an on-path attacker's socket is
    // refused: the stored address stays the terminal's.
    h.advance(secs(3));
    h.take_udp();
    let attacker = addr("198.51.100.66:6666");
    h.udp_in(attacker, &first);
    assert_eq!(h.ts.live_address(term.id), Some(term.nat));
    assert!(h.take_udp().is_empty(), "no ack to the attacker");
    // A repeated install (a re-sent KeyInstall) is acknowledged again.
    h.ss_send(install);
    assert_eq!(
        h.take_replies(),
        [FromTs::Other(MessageType::KeyInstallAck)]
    );
}

// ---- NAT type guess ----

#[test]
fn nat_guess_compares_the_local_address_with_the_observed_one() {
    let guess = |local: Option<&str>, observed: Option<&str>| {
        NatGuess::from_addresses(local.map(addr), observed.map(addr))
    };
    // Nothing translated: a public address.
    assert_eq!(
        guess(Some("203.0.113.7:40001"), Some("203.0.113.7:40001")),
        NatGuess::Public
    );
    assert_eq!(
        guess(Some("[2001:db8::7]:40001"), Some("[2001:db8::7]:40001")),
        NatGuess::Public
    );
    // A server on a dual-stack socket sees IPv4 as mapped IPv6.
    assert_eq!(
        guess(
            Some("203.0.113.7:40001"),
            Some("[::ffff:203.0.113.7]:40001")
        ),
        NatGuess::Public
    );
    // The address translated, the port kept.
    assert_eq!(
        guess(Some("192.168.1.2:40001"), Some("203.0.113.7:40001")),
        NatGuess::PortPreserved
    );
    // The port rewritten (with or without the address).
    assert_eq!(
        guess(Some("192.168.1.2:40001"), Some("203.0.113.7:61234")),
        NatGuess::PortRewritten
    );
    assert_eq!(
        guess(Some("203.0.113.7:40001"), Some("203.0.113.7:61234")),
        NatGuess::PortRewritten
    );
    // An unspecified local IP: a rewritten port still shows, a kept one
    // cannot tell public from NAT.
    assert_eq!(
        guess(Some("0.0.0.0:40001"), Some("203.0.113.7:61234")),
        NatGuess::PortRewritten
    );
    assert_eq!(
        guess(Some("0.0.0.0:40001"), Some("203.0.113.7:40001")),
        NatGuess::Unknown
    );
    // Not enough to tell.
    assert_eq!(guess(None, Some("203.0.113.7:40001")), NatGuess::Unknown);
    assert_eq!(guess(Some("192.168.1.2:40001"), None), NatGuess::Unknown);
    assert_eq!(
        guess(Some("192.168.1.2:0"), Some("203.0.113.7:40001")),
        NatGuess::Unknown
    );
    // Every guess has its own label; "unknown" is the unknown one's.
    let labels: BTreeSet<&str> = NatGuess::ALL.iter().map(|g| g.label()).collect();
    assert_eq!(labels.len(), NatGuess::ALL.len());
    assert_eq!(NatGuess::Unknown.label(), "unknown");
    assert_eq!(NatGuess::Public.label(), "none (public address)");
}

#[test]
fn nat_guess_public_when_keepalives_come_from_the_terminals_own_address() {
    let mut h = Harness::linked(TriggerConfig::default());
    let mut term = Term::new(90, "203.0.113.90:40001");
    h.install_with_local(&term, Some(term.nat));
    // Installed, no keepalive yet: nothing observed, nothing to tell.
    assert_eq!(h.nat_guess(&term), Some(NatGuess::Unknown));
    h.keepalive(&mut term);
    assert_eq!(h.nat_guess(&term), Some(NatGuess::Public));
}

#[test]
fn nat_guess_port_preserved_behind_a_nat_that_keeps_the_port() {
    let mut h = Harness::linked(TriggerConfig::default());
    let mut term = Term::new(91, "203.0.113.91:40001");
    h.install_with_local(&term, Some(addr("192.168.1.2:40001")));
    h.keepalive(&mut term);
    assert_eq!(h.nat_guess(&term), Some(NatGuess::PortPreserved));
}

#[test]
fn nat_guess_port_rewritten_follows_the_latest_observed_address() {
    let mut h = Harness::linked(TriggerConfig::default());
    let mut term = Term::new(92, "203.0.113.92:40001");
    h.install_with_local(&term, Some(addr("192.168.1.2:40001")));
    h.keepalive(&mut term);
    assert_eq!(h.nat_guess(&term), Some(NatGuess::PortPreserved));
    // The NAT lost the mapping and made a new one on another port.
    term.nat = addr("203.0.113.92:55555");
    h.keepalive(&mut term);
    assert_eq!(h.nat_guess(&term), Some(NatGuess::PortRewritten));
}

#[test]
fn nat_guess_is_unknown_without_a_local_address_or_once_the_address_expired() {
    let mut h = Harness::linked(TriggerConfig::default());
    let mut silent = Term::new(93, "203.0.113.93:40001");
    h.install(&silent);
    h.keepalive(&mut silent);
    assert_eq!(h.nat_guess(&silent), Some(NatGuess::Unknown));
    let mut term = Term::new(94, "203.0.113.94:40001");
    h.install_with_local(&term, Some(term.nat));
    h.keepalive(&mut term);
    assert_eq!(h.nat_guess(&term), Some(NatGuess::Public));
    h.advance(h.ts.config().address_lifetime() + secs(1));
    assert_eq!(h.ts.live_address(term.id), None);
    assert_eq!(h.nat_guess(&term), Some(NatGuess::Unknown));
}

#[test]
fn nat_guess_changes_nothing_the_terminal_is_sent() {
    // The same keepalives with and without a local address get the same
    // acks to the same address: the guess is only reported.
    let run = |local: Option<SocketAddr>| {
        let mut h = Harness::linked(TriggerConfig::default());
        let mut term = Term::new(95, "203.0.113.95:40001");
        h.install_with_local(&term, local);
        h.keepalive(&mut term);
        h.trigger(1, &term);
        h.take_udp()
    };
    let with = run(Some(addr("192.168.1.2:1")));
    assert!(!with.is_empty());
    assert_eq!(with, run(None));
}

// ---- netcheck probes ----

fn probe(term: &Term, counter: u64, delay_secs: u16) -> Vec<u8> {
    encode(&udp_auth::seal_nat_probe(&term.key, term.id, counter, delay_secs).into())
}

fn decode_probe_answer(bytes: &[u8]) -> crate::wire::NatProbeAnswer {
    match Message::decode(bytes) {
        Ok(Message::NatProbeAnswer(a)) => a,
        other => panic!("not a probe answer: {other:?}"),
    }
}

#[test]
fn netcheck_probe_is_answered_at_once_with_observed_address_and_probe_port() {
    let (mut h, term) = with_live_terminal(TriggerConfig {
        probe_port: Some(7403),
        ..TriggerConfig::default()
    });
    let from = addr("203.0.113.7:50000");
    h.udp_in(from, &probe(&term, 1, 0));
    let udp = h.take_udp();
    assert_eq!(udp.len(), 1);
    assert_eq!(udp[0].0, from);
    let answer = decode_probe_answer(&udp[0].1);
    assert_eq!(
        (
            answer.counter,
            answer.delay_secs,
            answer.probe_port,
            answer.observed
        ),
        (1, 0, 7403, from)
    );
    assert_eq!(udp_auth::verify(&term.key, &answer), Ok(()));
    // The probe did not touch the keepalive address.
    assert_eq!(h.ts.live_address(term.id), Some(term.nat));
}

#[test]
fn netcheck_delayed_probe_is_answered_only_after_its_delay() {
    let (mut h, term) = with_live_terminal(TriggerConfig::default());
    let from = addr("203.0.113.7:50001");
    h.udp_in(from, &probe(&term, 1, 10));
    assert!(h.take_udp().is_empty());
    assert_eq!(h.ts.delayed_probe_answers(), 1);
    h.advance(secs(9));
    assert!(h.take_udp().is_empty());
    h.advance(secs(1));
    let udp = h.take_udp();
    assert_eq!(udp.len(), 1, "{udp:?}");
    let answer = decode_probe_answer(&udp[0].1);
    assert_eq!(
        (answer.delay_secs, answer.probe_port, answer.observed),
        (10, 0, from)
    );
    assert_eq!(h.ts.delayed_probe_answers(), 0);
}

#[test]
fn netcheck_probe_forged_replayed_or_unknown_gets_no_answer_and_no_state() {
    let (mut h, term) = with_live_terminal(TriggerConfig::default());
    let from = addr("203.0.113.7:50002");
    // Unknown device.
    let stranger = Term::new(99, "198.51.100.1:1");
    h.udp_in(from, &probe(&stranger, 1, 30));
    // Forged tag.
    let mut forged = probe(&term, 1, 30);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    h.udp_in(from, &forged);
    assert!(h.take_udp().is_empty());
    assert_eq!(h.ts.delayed_probe_answers(), 0);
    // An authentic one, then its replay.
    h.udp_in(from, &probe(&term, 1, 0));
    assert_eq!(h.take_udp().len(), 1);
    h.udp_in(from, &probe(&term, 1, 0));
    assert!(h.take_udp().is_empty());
    assert_eq!(h.ts.stats().nat_probes_refused, 3);
    assert_eq!(h.ts.stats().nat_probes_answered, 1);
}

#[test]
fn netcheck_delayed_answers_are_bounded_per_device_and_clamped() {
    let (mut h, term) = with_live_terminal(TriggerConfig::default());
    let from = addr("203.0.113.7:50003");
    for counter in 1..=(MAX_DELAYED_PROBES_PER_DEVICE as u64 + 4) {
        h.udp_in(from, &probe(&term, counter, u16::MAX));
    }
    assert_eq!(h.ts.delayed_probe_answers(), MAX_DELAYED_PROBES_PER_DEVICE);
    assert_eq!(h.ts.stats().nat_probes_refused, 4);
    // Held no longer than the clamp.
    h.advance(secs(u64::from(MAX_NAT_PROBE_DELAY_SECS)));
    let udp = h.take_udp();
    assert_eq!(udp.len(), MAX_DELAYED_PROBES_PER_DEVICE);
    assert!(udp
        .iter()
        .all(|(_, b)| decode_probe_answer(b).delay_secs == MAX_NAT_PROBE_DELAY_SECS));
}

#[test]
fn netcheck_delayed_answers_go_with_a_revoked_key() {
    let (mut h, term) = with_live_terminal(TriggerConfig::default());
    h.udp_in(addr("203.0.113.7:50004"), &probe(&term, 1, 20));
    assert_eq!(h.ts.delayed_probe_answers(), 1);
    h.ss_send(KeyRevoke { device_id: term.id }.into());
    assert_eq!(h.ts.delayed_probe_answers(), 0);
    h.advance(secs(30));
    assert!(h.take_udp().is_empty());
}

#[test]
fn netcheck_probes_are_rate_limited_per_device() {
    let (mut h, term) = with_live_terminal(TriggerConfig::default());
    let from = addr("203.0.113.7:50005");
    for counter in 1..=100 {
        h.udp_in(from, &probe(&term, counter, 0));
    }
    assert_eq!(h.take_udp().len(), NAT_PROBES.capacity() as usize);
}
