//! Two endpoints with a harness that plays the session server (Noise IK
//! responder, sealed records) and the trigger server (keepalive acks, end
//! triggers), and a direct network between the terminals' sockets.

use super::*;
use crate::crypto::{udp_auth, Responder, SecureChannel};
use crate::wire::{
    AddressNotification, DeviceId, EndNotification, ExtensionGrant, HandshakeReply, Message, Name,
    RegisterAck, Role, SessionKey, UdpKey, MAX_HANDSHAKE_LEN, MAX_PLAIN_MESSAGE_LEN,
};
use core::net::{IpAddr, Ipv4Addr};
use core::time::Duration;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::boxed::Box;
use std::collections::BTreeMap;
use std::vec::Vec;

const TS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 3478);
const ADDR: [SocketAddr; 2] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 40000),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 40000),
];
const SESSION: SessionId = SessionId([0x77; 16]);
const KEY: SessionKey = SessionKey([0x4b; 32]);
const NAMES: [&str; 2] = ["TERM1", "TERM3"];

fn encode(m: &Message<'_>) -> Vec<u8> {
    let mut out = std::vec![0u8; m.encoded_len()];
    let n = m.encode(&mut out).expect("fits");
    out.truncate(n);
    out
}

/// The app side: a stream to send, and what arrived, per session.
#[derive(Default)]
struct Io {
    outgoing: Vec<u8>,
    incoming: BTreeMap<u64, u8>,
    datagrams: Vec<Vec<u8>>,
}

impl SessionIo for Io {
    fn read_at(&mut self, session: &SessionId, offset: u64, buf: &mut [u8]) -> usize {
        assert_eq!(*session, SESSION);
        let Some(rest) = self.outgoing.get(offset as usize..) else {
            return 0;
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        n
    }
    fn stream_data(&mut self, session: &SessionId, offset: u64, data: &[u8]) {
        assert_eq!(*session, SESSION);
        for (i, b) in data.iter().enumerate() {
            self.incoming.insert(offset + i as u64, *b);
        }
    }
    fn datagram(&mut self, session: &SessionId, data: &[u8]) {
        assert_eq!(*session, SESSION);
        self.datagrams.push(data.to_vec());
    }
}

struct Node {
    e: Endpoint<ChaCha20Rng>,
    io: Io,
    ss: Option<SecureChannel>,
    udp_key: UdpKey,
    trigger_counter: u64,
    events: Vec<EndpointEvent>,
    /// Plain records the session server opened from this terminal.
    upstream: Vec<Vec<u8>>,
}

struct World {
    now: Instant,
    ss_key: StaticKeypair,
    ss_rng: ChaCha20Rng,
    nodes: [Node; 2],
    /// Datagrams in flight: (arrival, to node, from, bytes).
    flights: Vec<(Instant, usize, SocketAddr, Vec<u8>)>,
}

impl World {
    fn new(seed: u64) -> Box<World> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ss_key = StaticKeypair::generate(&mut rng);
        let node = |i: usize, rng: &mut ChaCha20Rng| {
            let config = TerminalConfig::new(NAMES[i], TS_ADDR, ss_key.public_key()).unwrap();
            let keypair = StaticKeypair::generate(rng);
            Node {
                e: Endpoint::new(
                    config,
                    keypair,
                    ChaCha20Rng::seed_from_u64(seed + 10 + i as u64),
                    ChaCha20Rng::seed_from_u64(seed + 20 + i as u64),
                    PeerConfig::default(),
                ),
                io: Io::default(),
                ss: None,
                udp_key: UdpKey([i as u8 + 1; 32]),
                trigger_counter: 0,
                events: Vec::new(),
                upstream: Vec::new(),
            }
        };
        let nodes = [node(0, &mut rng), node(1, &mut rng)];
        let mut w = Box::new(World {
            now: Instant::from_micros(1_000_000),
            ss_key,
            ss_rng: rng,
            nodes,
            flights: Vec::new(),
        });
        for i in 0..2 {
            let now = w.now;
            w.nodes[i].e.start(now);
            w.drain(i);
        }
        w.run_for(Duration::from_millis(100));
        assert!(w.nodes.iter().all(|n| n.e.terminal().is_registered()));
        w
    }

    /// Drains node `i`: the session server's and trigger server's parts
    /// answer at once; peer datagrams fly for 10 ms.
    fn drain(&mut self, i: usize) {
        let mut buf = [0u8; ENDPOINT_BUF_LEN];
        loop {
            let now = self.now;
            let node = &mut self.nodes[i];
            let t = match node.e.poll_output(now, &mut buf, &mut node.io) {
                Output::Transmit(t) => t,
                Output::Event(e) => {
                    node.events.push(e);
                    continue;
                }
                Output::Store(never) => match never {},
                Output::Close(_) => panic!("a terminal accepts no streams"),
                Output::Timeout(at) => {
                    assert_eq!(at, node.e.poll_timeout());
                    break;
                }
            };
            let bytes = buf[..t.len].to_vec();
            match t.destination {
                Destination::Upstream => self.session_server_receives(i, &bytes),
                Destination::Udp(to) if to == TS_ADDR => {
                    if let Ok(Message::Keepalive(k)) = Message::decode(&bytes) {
                        let key = self.nodes[i].udp_key;
                        let ack = udp_auth::seal_keepalive_ack(&key, k.counter, 20, ADDR[i]);
                        let ack = encode(&ack.into());
                        let node = &mut self.nodes[i];
                        node.e
                            .handle_udp(now, TS_ADDR, &mut ack.clone(), &mut node.io);
                    }
                }
                Destination::Udp(to) => {
                    let target = ADDR.iter().position(|a| *a == to).expect("a known peer");
                    self.flights
                        .push((now + Duration::from_millis(10), target, ADDR[i], bytes));
                }
                Destination::Connection(_) | Destination::RelayStream(_) => {
                    panic!("no accepted streams, no relay")
                }
            }
        }
    }

    fn session_server_receives(&mut self, i: usize, bytes: &[u8]) {
        match Message::decode(bytes) {
            Ok(Message::HandshakeInit(init)) => {
                let mut payload = [0u8; MAX_PLAIN_MESSAGE_LEN];
                let (responder, _) = Responder::accept(
                    &mut self.ss_rng,
                    self.now,
                    &self.ss_key,
                    &init,
                    &mut payload,
                )
                .unwrap();
                let ack: Message<'_> = RegisterAck {
                    device_id: DeviceId(100 + i as u64),
                    udp_key: self.nodes[i].udp_key,
                }
                .into();
                let mut noise = [0u8; MAX_HANDSHAKE_LEN];
                let channel = 100 + i as u64;
                let (secure, m) = responder.reply(channel, &encode(&ack), &mut noise).unwrap();
                self.nodes[i].ss = Some(secure);
                let reply = encode(&Message::HandshakeReply(HandshakeReply {
                    channel,
                    noise: &noise[..m],
                }));
                let now = self.now;
                self.nodes[i].e.handle_upstream(now, &reply);
            }
            Ok(Message::Sealed(record)) => {
                let mut plain = [0u8; MAX_PLAIN_MESSAGE_LEN];
                let ss = self.nodes[i].ss.as_mut().expect("a channel");
                let n = ss.open(&record, &mut plain).unwrap();
                self.nodes[i].upstream.push(plain[..n].to_vec());
            }
            other => panic!("unexpected upstream {other:?}"),
        }
    }

    /// The session server seals `m` to node `i`.
    fn ss_send(&mut self, i: usize, m: Message<'_>) {
        let mut out = [0u8; crate::wire::MAX_MESSAGE_LEN];
        let n = self.nodes[i]
            .ss
            .as_mut()
            .expect("a channel")
            .seal(&encode(&m), &mut out)
            .unwrap();
        let now = self.now;
        self.nodes[i].e.handle_upstream(now, &out[..n]);
        self.drain(i);
    }

    /// Node 1 (TERM3) asks for TERM1; the session server permits at once.
    fn start_session(&mut self, duration_secs: u32) {
        let now = self.now;
        let request_id = self.nodes[1].e.connect(now, "TERM1", duration_secs);
        let request_id = request_id.expect("registered");
        self.drain(1);
        let keys = [
            self.nodes[0].e.terminal().public_key(),
            self.nodes[1].e.terminal().public_key(),
        ];
        for (i, role, rid) in [(0, Role::Connected, 0), (1, Role::Connecting, request_id)] {
            let other = 1 - i;
            self.ss_send(
                i,
                AddressNotification {
                    request_id: rid,
                    session_id: SESSION,
                    role,
                    duration_secs,
                    session_key: KEY,
                    peer_key: keys[other],
                    peer_addr: ADDR[other],
                    peer_name: Name::new(NAMES[other]).unwrap(),
                    relay: None,
                }
                .into(),
            );
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        for _ in 0..1_000_000 {
            let next_flight = self.flights.iter().map(|f| f.0).min();
            let next_timer = self.nodes.iter().filter_map(|n| n.e.poll_timeout()).min();
            let next = [next_flight, next_timer].into_iter().flatten().min();
            let Some(next) = next.filter(|&t| t <= until) else {
                break;
            };
            self.now = self.now.max(next);
            let now = self.now;
            if let Some(k) = self.flights.iter().position(|f| f.0 <= now) {
                let (_, to, from, mut bytes) = self.flights.swap_remove(k);
                let node = &mut self.nodes[to];
                node.e.handle_udp(now, from, &mut bytes, &mut node.io);
                self.drain(to);
                continue;
            }
            for i in 0..2 {
                if self.nodes[i].e.poll_timeout().is_some_and(|t| t <= now) {
                    self.nodes[i].e.handle_timeout(now);
                }
                self.drain(i);
            }
        }
        self.now = self.now.max(until);
        for i in 0..2 {
            self.drain(i);
        }
    }

    fn peer_events(&self, i: usize) -> Vec<PeerEvent> {
        self.nodes[i]
            .events
            .iter()
            .filter_map(|e| match e {
                EndpointEvent::Peer { event, .. } => Some(*event),
                _ => None,
            })
            .collect()
    }

    fn end_notifications(&self, i: usize) -> Vec<EndNotification> {
        self.nodes[i]
            .upstream
            .iter()
            .filter_map(|r| match Message::decode(r) {
                Ok(Message::EndNotification(n)) => Some(n),
                _ => None,
            })
            .collect()
    }
}

fn big_stack(f: impl FnOnce() + Send + 'static) {
    let handle = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(f)
        .expect("spawn a test thread");
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn s705_session_ready_starts_a_peer_session_on_both_sides() {
    big_stack(|| {
        let mut w = World::new(1);
        w.start_session(60);
        w.run_for(Duration::from_millis(300));
        for i in 0..2 {
            assert!(
                w.peer_events(i).iter().any(
                    |e| matches!(e, PeerEvent::Connected { peer_addr, .. } if *peer_addr == ADDR[1 - i])
                ),
                "node {i} connected"
            );
            assert!(w.nodes[i]
                .e
                .session(&SESSION)
                .is_some_and(|s| s.is_connected()));
            assert_eq!(w.nodes[i].e.stats().sessions_started, 1);
        }
    });
}

#[test]
fn s707_finished_transfer_sends_end_notifications_with_byte_counts() {
    big_stack(|| {
        let mut w = World::new(2);
        w.start_session(60);
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        w.nodes[1].io.outgoing = data.clone();
        let e = &mut w.nodes[1].e;
        e.stream_extend(&SESSION, data.len() as u64)
            .expect("a session");
        e.stream_finish(&SESSION, data.len() as u64)
            .expect("a session")
            .unwrap();
        w.run_for(Duration::from_secs(2));
        let got: Vec<u8> = w.nodes[0].io.incoming.values().copied().collect();
        assert!(got == data, "the stream arrived");
        let now = w.now;
        w.nodes[1]
            .e
            .end_session(now, &SESSION, EndReason::Completed)
            .expect("a session");
        w.drain(1);
        w.run_for(Duration::from_secs(2));
        for i in 0..2 {
            let ends = w.end_notifications(i);
            assert_eq!(ends.len(), 1, "node {i}: one end notification");
            assert_eq!(ends[0].reason, EndReason::Completed);
            assert_eq!(ends[0].session_id, SESSION);
            assert!(w.nodes[i].e.session(&SESSION).is_none(), "slot freed");
            assert_eq!(w.nodes[i].e.terminal().session_count(), 0);
        }
        assert!(w.end_notifications(1)[0].bytes_sent >= data.len() as u64);
        assert!(w.end_notifications(0)[0].bytes_received >= data.len() as u64);
    });
}

#[test]
fn s1604_forced_end_closes_the_peer_session_on_both_sides() {
    big_stack(|| {
        let mut w = World::new(3);
        w.start_session(60);
        w.run_for(Duration::from_millis(300));
        // The operator ends the session: an end trigger reaches TERM1.
        w.nodes[0].trigger_counter += 1;
        let key = w.nodes[0].udp_key;
        let end = udp_auth::seal_end_trigger(&key, w.nodes[0].trigger_counter, SESSION);
        let mut bytes = encode(&end.into());
        let now = w.now;
        let node = &mut w.nodes[0];
        node.e.handle_udp(now, TS_ADDR, &mut bytes, &mut node.io);
        w.drain(0);
        w.run_for(Duration::from_secs(2));
        assert_eq!(w.end_notifications(0)[0].reason, EndReason::Forced);
        // The peer learns it on the path and ends with the same reason.
        let ended = w.peer_events(1).into_iter().find_map(|e| match e {
            PeerEvent::Ended {
                reason, by_peer, ..
            } => Some((reason, by_peer)),
            _ => None,
        });
        assert_eq!(ended, Some((EndReason::Forced, true)));
        assert_eq!(w.end_notifications(1)[0].reason, EndReason::Forced);
        assert_eq!(w.end_notifications(0).len(), 1, "reported once");
    });
}

#[test]
fn s1507_extension_grant_moves_the_peer_deadline() {
    big_stack(|| {
        let mut w = World::new(4);
        w.start_session(5);
        w.run_for(Duration::from_millis(300));
        let before = w.nodes[0].e.session(&SESSION).expect("running").deadline();
        for i in 0..2 {
            w.ss_send(
                i,
                ExtensionGrant {
                    session_id: SESSION,
                    duration_secs: 30,
                }
                .into(),
            );
        }
        let after = w.nodes[0].e.session(&SESSION).expect("running").deadline();
        assert_eq!(after - before, Duration::from_secs(25));
        w.run_for(Duration::from_secs(10));
        assert!(w.nodes[0]
            .e
            .session(&SESSION)
            .is_some_and(|s| s.is_connected()));
    });
}

#[test]
fn duration_end_is_reported_once_per_side() {
    big_stack(|| {
        let mut w = World::new(5);
        w.start_session(2);
        w.run_for(Duration::from_secs(8));
        for i in 0..2 {
            let ends = w.end_notifications(i);
            assert_eq!(ends.len(), 1, "node {i}");
            assert_eq!(ends[0].reason, EndReason::DurationExpired);
            assert!(w.nodes[i].e.session(&SESSION).is_none());
        }
    });
}

#[test]
fn peer_packet_for_an_unknown_channel_is_counted() {
    big_stack(|| {
        let mut w = World::new(6);
        let mut probe = [0u8; 18];
        let n = crate::peer::packet::Packet::Probe {
            channel: 42,
            seq: 0,
        }
        .encode(&mut probe)
        .unwrap();
        let now = w.now;
        let node = &mut w.nodes[0];
        node.e
            .handle_udp(now, ADDR[1], &mut probe[..n], &mut node.io);
        assert_eq!(w.nodes[0].e.stats().unrouted, 1);
    });
}
