//! Step-named tests of the peer session: two machines on a virtual clock
//! with a tiny in-memory network (latency, optional loss by a script).

use super::*;
use crate::crypto::StaticKeypair;
use crate::wire::SESSION_ID_LEN;
use core::net::{IpAddr, Ipv4Addr};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::VecDeque;
use std::vec::Vec as StdVec;

const A_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 5000);
const B_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), 6000);
const SESSION: SessionId = SessionId([0x5e; SESSION_ID_LEN]);
const KEY: SessionKey = SessionKey([0x4b; 32]);
const LATENCY: Duration = Duration::from_millis(10);

/// Runs `f` on a thread with a large stack: a session holds its transport
/// inline (about 160 KB), and unoptimised builds copy it between frames.
fn big_stack(f: impl FnOnce() + Send + 'static) {
    let handle = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(f)
        .expect("spawn a test thread");
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A stream source over a byte vector; `available` bounds what it gives.
#[derive(Default)]
struct Source(StdVec<u8>);

impl StreamSource for Source {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> usize {
        let Ok(offset) = usize::try_from(offset) else {
            return 0;
        };
        let Some(rest) = self.0.get(offset..) else {
            return 0;
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        n
    }
}

/// A sink that places stream bytes at their offsets and keeps datagrams.
#[derive(Default)]
struct Sink {
    stream: StdVec<u8>,
    datagrams: StdVec<StdVec<u8>>,
}

impl PeerSink for Sink {
    fn stream_data(&mut self, offset: u64, data: &[u8]) {
        let start = offset as usize;
        if self.stream.len() < start + data.len() {
            self.stream.resize(start + data.len(), 0);
        }
        self.stream[start..start + data.len()].copy_from_slice(data);
    }
    fn datagram(&mut self, data: &[u8]) {
        self.datagrams.push(data.to_vec());
    }
}

struct Side {
    session: PeerSession,
    addr: SocketAddr,
    source: Source,
    sink: Sink,
    events: StdVec<PeerEvent>,
}

/// One datagram in flight.
struct Flight {
    at: Instant,
    to_a: bool,
    from: SocketAddr,
    bytes: StdVec<u8>,
}

struct Pair {
    now: Instant,
    rng: ChaCha20Rng,
    a: Side,
    b: Side,
    flights: VecDeque<Flight>,
    /// Every datagram sent, by direction (true: to A).
    log: StdVec<(bool, StdVec<u8>)>,
    /// Drops the next datagrams for which this returns true.
    drop: fn(to_a: bool, bytes: &[u8]) -> bool,
}

fn keep(_: bool, _: &[u8]) -> bool {
    false
}

fn params(role: Role, peer_key: PublicKey, peer_addr: SocketAddr, secs: u32) -> SessionParams {
    SessionParams {
        session_id: SESSION,
        role,
        peer_key,
        peer_addr,
        session_key: KEY,
        duration_secs: secs,
        relay: None,
    }
}

impl Pair {
    /// A (connecting, initiator) and B (connected) with this config.
    fn new(seed: u64, config: PeerConfig, secs: u32) -> Pair {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ka = StaticKeypair::generate(&mut rng);
        let kb = StaticKeypair::generate(&mut rng);
        let now = Instant::from_micros(1_000_000);
        let a = PeerSession::new(
            now,
            config.clone(),
            &ka,
            params(Role::Connecting, kb.public_key(), B_ADDR, secs),
            &mut rng,
        );
        let b = PeerSession::new(
            now,
            config,
            &kb,
            params(Role::Connected, ka.public_key(), A_ADDR, secs),
            &mut rng,
        );
        let side = |session, addr| Side {
            session,
            addr,
            source: Source::default(),
            sink: Sink::default(),
            events: StdVec::new(),
        };
        Pair {
            now,
            rng,
            a: side(a, A_ADDR),
            b: side(b, B_ADDR),
            flights: VecDeque::new(),
            log: StdVec::new(),
            drop: keep,
        }
    }

    fn side(&mut self, to_a: bool) -> &mut Side {
        if to_a {
            &mut self.a
        } else {
            &mut self.b
        }
    }

    /// Drains both sides' transmits and events.
    fn flush(&mut self) {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        for from_a in [true, false] {
            loop {
                let now = self.now;
                let side = self.side(from_a);
                let Some((to, n)) = side.session.poll_transmit(now, &mut buf, &mut side.source)
                else {
                    break;
                };
                let from = side.addr;
                let to_a = !from_a;
                assert_eq!(to, if to_a { A_ADDR } else { B_ADDR }, "destination");
                self.log.push((to_a, buf[..n].to_vec()));
                if (self.drop)(to_a, &buf[..n]) {
                    continue;
                }
                self.flights.push_back(Flight {
                    at: now + LATENCY,
                    to_a,
                    from,
                    bytes: buf[..n].to_vec(),
                });
            }
            let side = self.side(from_a);
            while let Some(e) = side.session.poll_event() {
                side.events.push(e);
            }
        }
    }

    /// Delivers a datagram now to one side (as if from `from`).
    fn deliver(&mut self, to_a: bool, from: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        let mut bytes = bytes.to_vec();
        let (side, rng) = if to_a {
            (&mut self.a, &mut self.rng)
        } else {
            (&mut self.b, &mut self.rng)
        };
        side.session
            .handle_datagram(now, from, &mut bytes, &mut side.sink, rng);
        self.flush();
    }

    /// Runs the clock forward to `until`, delivering and timing out.
    fn run_until(&mut self, until: Instant) {
        self.flush();
        for _ in 0..1_000_000 {
            let next_flight = self.flights.iter().map(|f| f.at).min();
            let next_timer = earliest(self.a.session.poll_timeout(), self.b.session.poll_timeout());
            let Some(next) = earliest(next_flight, next_timer) else {
                break;
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if let Some(i) = self.flights.iter().position(|f| f.at <= self.now) {
                let f = self.flights.remove(i).expect("index is valid");
                self.deliver(f.to_a, f.from, &f.bytes);
                continue;
            }
            let now = self.now;
            let mut fired = [false; 2];
            for (k, to_a) in [true, false].into_iter().enumerate() {
                let (side, rng) = if to_a {
                    (&mut self.a, &mut self.rng)
                } else {
                    (&mut self.b, &mut self.rng)
                };
                if side.session.poll_timeout().is_some_and(|t| t <= now) {
                    side.session.handle_timeout(now, rng);
                    fired[k] = true;
                }
            }
            // The contract: after handle_timeout and draining the
            // transmits, poll_timeout is None or later than now.
            self.flush();
            for (k, side) in [&self.a, &self.b].into_iter().enumerate() {
                let after = side.session.poll_timeout();
                assert!(
                    !fired[k] || after.is_none_or(|t| t > now),
                    "poll_timeout {after:?} not past {now:?} after handle_timeout"
                );
            }
        }
        self.now = self.now.max(until);
        self.flush();
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn connected(&self) -> bool {
        self.a.session.is_connected() && self.b.session.is_connected()
    }
}

fn ended(events: &[PeerEvent]) -> Option<(EndReason, bool, u64, u64)> {
    events.iter().find_map(|e| match *e {
        PeerEvent::Ended {
            reason,
            by_peer,
            bytes_sent,
            bytes_received,
        } => Some((reason, by_peer, bytes_sent, bytes_received)),
        _ => None,
    })
}

fn test_data(len: usize) -> StdVec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn s205_connecting_side_sends_its_init_and_connected_side_a_probe_at_once() {
    big_stack(|| {
        let mut p = Pair::new(1, PeerConfig::default(), 60);
        p.drop = |_, _| true;
        p.flush();
        let to_b: StdVec<_> = p.log.iter().filter(|(to_a, _)| !to_a).collect();
        let to_a: StdVec<_> = p.log.iter().filter(|(to_a, _)| *to_a).collect();
        assert_eq!(to_b.len(), 1);
        assert!(matches!(
            Packet::decode(&to_b[0].1),
            Ok(Packet::HandshakeInit { .. })
        ));
        assert_eq!(to_a.len(), 1);
        assert!(matches!(
            Packet::decode(&to_a[0].1),
            Ok(Packet::Probe { .. })
        ));
    });
}

#[test]
fn s206_both_sides_punch_and_complete_the_handshake() {
    big_stack(|| {
        let mut p = Pair::new(2, PeerConfig::default(), 60);
        p.run_for(Duration::from_millis(200));
        assert!(p.connected());
        assert!(p.a.events.contains(&PeerEvent::Connected {
            peer_addr: B_ADDR,
            relayed: false
        }));
        assert!(p.b.events.contains(&PeerEvent::Connected {
            peer_addr: A_ADDR,
            relayed: false
        }));
        // Punching stopped: no more probes or inits after the handshake.
        let before = p.log.len();
        p.run_for(Duration::from_millis(500));
        let handshake_after = p.log[before..]
            .iter()
            .filter(|(_, b)| !matches!(Packet::decode(b), Ok(Packet::Data { .. })))
            .count();
        assert_eq!(handshake_after, 0);
    });
}

#[test]
fn inits_are_retransmitted_while_the_peer_is_unreachable() {
    big_stack(|| {
        let mut p = Pair::new(3, PeerConfig::default(), 60);
        // Everything to B is lost for the first 300 ms (its NAT is closed).
        p.drop = |to_a, _| !to_a;
        p.run_for(Duration::from_millis(300));
        assert!(!p.connected());
        assert!(p.a.session.stats().inits_sent >= 5);
        p.drop = keep;
        p.run_for(Duration::from_millis(200));
        assert!(p.connected());
    });
}

#[test]
fn repeated_init_gets_the_cached_reply_without_new_state() {
    big_stack(|| {
        let mut p = Pair::new(4, PeerConfig::default(), 60);
        // Lose every reply: A keeps sending the same init.
        p.drop = |to_a, b| to_a && matches!(Packet::decode(b), Ok(Packet::HandshakeReply { .. }));
        p.run_for(Duration::from_millis(300));
        assert!(p.b.session.is_connected());
        assert!(!p.a.session.is_connected());
        let inits: StdVec<_> = p
            .log
            .iter()
            .filter(|(to_a, b)| {
                !to_a && matches!(Packet::decode(b), Ok(Packet::HandshakeInit { .. }))
            })
            .map(|(_, b)| b.clone())
            .collect();
        assert!(inits.len() >= 3);
        assert!(inits.iter().all(|i| *i == inits[0]), "one init, same bytes");
        let replies: StdVec<_> = p
            .log
            .iter()
            .filter(|(_, b)| matches!(Packet::decode(b), Ok(Packet::HandshakeReply { .. })))
            .map(|(_, b)| b.clone())
            .collect();
        assert!(replies.len() >= 3);
        assert!(replies.iter().all(|r| *r == replies[0]), "cached reply");
        assert_eq!(p.b.session.stats().handshake_failures, 0);
        let connected =
            p.b.events
                .iter()
                .filter(|e| matches!(e, PeerEvent::Connected { .. }))
                .count();
        assert_eq!(connected, 1);
        p.drop = keep;
        p.run_for(Duration::from_millis(200));
        assert!(p.connected());
    });
}

#[test]
fn init_from_a_new_address_is_answered_there() {
    big_stack(|| {
        let mut p = Pair::new(5, PeerConfig::default(), 60);
        p.drop = |_, _| true;
        p.flush();
        let init = p.log.iter().find(|(to_a, _)| !to_a).map(|(_, b)| b.clone());
        let init = init.expect("an init");
        // The init arrives from a rebound NAT port.
        let rebound = SocketAddr::new(A_ADDR.ip(), 5001);
        p.log.clear();
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let mut bytes = init.clone();
        p.b.session
            .handle_datagram(p.now, rebound, &mut bytes, &mut p.b.sink, &mut p.rng);
        let sent = p.b.session.poll_transmit(p.now, &mut buf, &mut p.b.source);
        let (to, n) = sent.expect("a reply");
        assert_eq!(to, rebound);
        assert!(matches!(
            Packet::decode(&buf[..n]),
            Ok(Packet::HandshakeReply { .. })
        ));
        assert_eq!(p.b.session.peer_addr(), rebound);
    });
}

#[test]
fn forged_init_gets_no_state() {
    big_stack(|| {
        let mut p = Pair::new(6, PeerConfig::default(), 60);
        p.drop = |_, _| true;
        p.flush();
        let mut init = p
            .log
            .iter()
            .find(|(to_a, _)| !to_a)
            .map(|(_, b)| b.clone())
            .expect("an init");
        let last = init.len() - 1;
        init[last] ^= 1;
        p.deliver(false, A_ADDR, &init);
        assert!(!p.b.session.is_connected());
        assert_eq!(p.b.session.stats().handshake_failures, 1);
        // An init of an impostor (another key pair) fails too.
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        let impostor = StaticKeypair::generate(&mut rng);
        let b_key = p.b.session.local.public_key();
        let mut fake = PeerSession::new(
            p.now,
            PeerConfig::default(),
            &impostor,
            params(Role::Connecting, b_key, B_ADDR, 60),
            &mut rng,
        );
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let (_, n) = fake
            .poll_transmit(p.now, &mut buf, &mut Source::default())
            .expect("init");
        p.deliver(false, A_ADDR, &buf[..n]);
        assert!(!p.b.session.is_connected());
        assert_eq!(p.b.session.stats().handshake_failures, 2);
    });
}

#[test]
fn a_second_different_init_after_the_handshake_is_ignored() {
    big_stack(|| {
        let mut p = Pair::new(7, PeerConfig::default(), 60);
        p.run_for(Duration::from_millis(200));
        assert!(p.connected());
        let b_key = p.b.session.local.public_key();
        let a_local = p.a.session.local.clone();
        let mut rng = ChaCha20Rng::seed_from_u64(98);
        let mut again = PeerSession::new(
            p.now,
            PeerConfig::default(),
            &a_local,
            params(Role::Connecting, b_key, B_ADDR, 60),
            &mut rng,
        );
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let (_, n) = again
            .poll_transmit(p.now, &mut buf, &mut Source::default())
            .expect("init");
        let before = p.log.len();
        p.deliver(false, A_ADDR, &buf[..n]);
        assert_eq!(p.b.session.stats().handshake_ignored, 1);
        assert_eq!(p.log.len(), before, "no reply to it");
    });
}

#[test]
fn no_handshake_within_the_punch_window_ends_failed() {
    big_stack(|| {
        let mut p = Pair::new(8, PeerConfig::default(), 60);
        p.drop = |_, _| true;
        p.run_for(DEFAULT_PUNCH_WINDOW + Duration::from_millis(100));
        assert_eq!(ended(&p.a.events), Some((EndReason::Failed, false, 0, 0)));
        assert_eq!(ended(&p.b.events), Some((EndReason::Failed, false, 0, 0)));
        assert_eq!(p.a.session.poll_timeout(), None);
        // Probes at the punch interval: about 200 in 10 s.
        let probes = p.b.session.stats().probes_sent;
        assert!((190..=202).contains(&probes), "{probes} probes");
    });
}

#[test]
fn s207_stream_transfer_arrives_intact() {
    big_stack(|| {
        let mut p = Pair::new(9, PeerConfig::default(), 600);
        let data = test_data(300_000);
        p.a.source.0 = data.clone();
        p.a.session.stream_extend(data.len() as u64);
        p.a.session.stream_finish(data.len() as u64).unwrap();
        p.run_for(Duration::from_secs(5));
        assert_eq!(p.b.sink.stream.len(), data.len());
        assert!(p.b.sink.stream == data, "stream bytes differ");
        assert!(p.b.events.contains(&PeerEvent::StreamReceived {
            len: data.len() as u64
        }));
        assert!(p.a.events.contains(&PeerEvent::StreamAcked {
            len: data.len() as u64
        }));
        assert!(!p.a.session.stream_active());
    });
}

#[test]
fn datagrams_arrive_both_ways() {
    big_stack(|| {
        let mut p = Pair::new(10, PeerConfig::default(), 600);
        p.run_for(Duration::from_millis(200));
        assert_eq!(
            p.a.session.send_datagram(b"hello"),
            Ok(()),
            "a connected side takes datagrams"
        );
        p.b.session.send_datagram(b"audio").unwrap();
        p.run_for(Duration::from_millis(100));
        assert_eq!(p.b.sink.datagrams, std::vec![b"hello".to_vec()]);
        assert_eq!(p.a.sink.datagrams, std::vec![b"audio".to_vec()]);
    });
}

#[test]
fn datagram_before_the_handshake_is_refused() {
    big_stack(|| {
        let mut p = Pair::new(11, PeerConfig::default(), 600);
        assert_eq!(
            p.a.session.send_datagram(b"early"),
            Err(SendError::NotConnected)
        );
    });
}

/// Connects, sends a datagram from A to B and returns the data packet's bytes.
fn one_data_packet(p: &mut Pair) -> StdVec<u8> {
    p.run_for(Duration::from_millis(200));
    assert!(p.connected());
    let before = p.log.len();
    p.a.session.send_datagram(b"once").unwrap();
    p.run_for(Duration::from_millis(50));
    p.log[before..]
        .iter()
        .find(|(to_a, b)| !to_a && matches!(Packet::decode(b), Ok(Packet::Data { .. })))
        .map(|(_, b)| b.clone())
        .expect("a data packet to B")
}

#[test]
fn replayed_data_packet_is_dropped() {
    big_stack(|| {
        let mut p = Pair::new(12, PeerConfig::default(), 600);
        let packet = one_data_packet(&mut p);
        assert_eq!(p.b.sink.datagrams.len(), 1);
        p.deliver(false, A_ADDR, &packet);
        assert_eq!(p.b.sink.datagrams.len(), 1, "the replay delivered nothing");
        assert_eq!(p.b.session.stats().dropped_replayed, 1);
    });
}

#[test]
fn forged_data_packet_is_dropped() {
    big_stack(|| {
        let mut p = Pair::new(13, PeerConfig::default(), 600);
        let mut packet = one_data_packet(&mut p);
        // Same packet number region moved forward, body altered.
        packet[DATA_HEADER_LEN] ^= 0x55;
        let pn_at = DATA_HEADER_LEN - 8;
        packet[pn_at + 7] = packet[pn_at + 7].wrapping_add(100);
        let before = p.b.session.peer_addr();
        let attacker = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66)), 666);
        p.deliver(false, attacker, &packet);
        assert_eq!(p.b.session.stats().dropped_forged, 1);
        assert_eq!(p.b.sink.datagrams.len(), 1);
        assert_eq!(p.b.session.peer_addr(), before, "the path did not move");
    });
}

#[test]
fn replayed_packet_from_elsewhere_does_not_move_the_path() {
    big_stack(|| {
        let mut p = Pair::new(14, PeerConfig::default(), 600);
        let packet = one_data_packet(&mut p);
        let attacker = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66)), 666);
        p.deliver(false, attacker, &packet);
        assert_eq!(p.b.session.peer_addr(), A_ADDR);
    });
}

#[test]
fn newer_authenticated_packet_from_a_new_address_moves_the_path() {
    big_stack(|| {
        let mut p = Pair::new(15, PeerConfig::default(), 600);
        p.run_for(Duration::from_millis(200));
        let before = p.log.len();
        p.a.session.send_datagram(b"moved").unwrap();
        p.drop = |to_a, _| !to_a;
        p.run_for(Duration::from_millis(5));
        p.drop = keep;
        let packet = p.log[before..]
            .iter()
            .find(|(to_a, _)| !to_a)
            .map(|(_, b)| b.clone())
            .expect("a packet to B");
        let rebound = SocketAddr::new(A_ADDR.ip(), 5999);
        p.b.session.handle_datagram(
            p.now,
            rebound,
            &mut packet.clone(),
            &mut p.b.sink,
            &mut p.rng,
        );
        assert_eq!(p.b.session.peer_addr(), rebound);
        let mut events = StdVec::new();
        while let Some(e) = p.b.session.poll_event() {
            events.push(e);
        }
        assert!(events.contains(&PeerEvent::PathChanged {
            peer_addr: rebound,
            relayed: false
        }));
    });
}

#[test]
fn duration_deadline_ends_both_sides() {
    big_stack(|| {
        let mut p = Pair::new(16, PeerConfig::default(), 2);
        p.run_for(Duration::from_secs(6));
        let (reason, _, _, _) = ended(&p.a.events).expect("A ended");
        assert_eq!(reason, EndReason::DurationExpired);
        let (reason, _, _, _) = ended(&p.b.events).expect("B ended");
        assert_eq!(reason, EndReason::DurationExpired);
    });
}

#[test]
fn extend_moves_the_deadline() {
    big_stack(|| {
        let mut p = Pair::new(17, PeerConfig::default(), 2);
        p.run_for(Duration::from_secs(1));
        p.a.session.extend(10);
        p.b.session.extend(10);
        p.run_for(Duration::from_secs(5));
        assert!(ended(&p.a.events).is_none());
        assert!(p.connected());
        p.run_for(Duration::from_secs(10));
        assert_eq!(
            ended(&p.a.events).map(|e| e.0),
            Some(EndReason::DurationExpired)
        );
    });
}

#[test]
fn close_reaches_the_peer_and_both_end_with_byte_counts() {
    big_stack(|| {
        let mut p = Pair::new(18, PeerConfig::default(), 600);
        let data = test_data(20_000);
        p.a.source.0 = data.clone();
        p.a.session.stream_extend(data.len() as u64);
        p.a.session.stream_finish(data.len() as u64).unwrap();
        p.run_for(Duration::from_secs(2));
        assert!(p.b.sink.stream == data);
        let now = p.now;
        p.a.session.close(now, EndReason::Completed);
        p.run_for(Duration::from_secs(4));
        let (reason, by_peer, sent, _) = ended(&p.a.events).expect("A ended");
        assert_eq!((reason, by_peer), (EndReason::Completed, false));
        assert!(sent >= data.len() as u64, "A sent {sent}");
        let (reason, by_peer, _, received) = ended(&p.b.events).expect("B ended");
        assert_eq!((reason, by_peer), (EndReason::Completed, true));
        assert!(received >= data.len() as u64, "B received {received}");
        assert_eq!(p.a.session.poll_timeout(), None);
        assert_eq!(p.b.session.poll_timeout(), None);
    });
}

#[test]
fn close_before_the_handshake_ends_at_once() {
    big_stack(|| {
        let mut p = Pair::new(19, PeerConfig::default(), 600);
        let now = p.now;
        p.a.session.close(now, EndReason::Cancelled);
        p.flush();
        assert_eq!(
            ended(&p.a.events),
            Some((EndReason::Cancelled, false, 0, 0))
        );
    });
}

#[test]
fn silent_peer_ends_the_session_peer_lost() {
    big_stack(|| {
        let mut p = Pair::new(20, PeerConfig::default(), 600);
        p.run_for(Duration::from_millis(200));
        assert!(p.connected());
        p.drop = |_, _| true;
        p.run_for(Duration::from_secs(40));
        assert_eq!(ended(&p.a.events).map(|e| e.0), Some(EndReason::PeerLost));
        assert_eq!(ended(&p.b.events).map(|e| e.0), Some(EndReason::PeerLost));
    });
}

#[test]
fn ended_session_is_inert() {
    big_stack(|| {
        let mut p = Pair::new(21, PeerConfig::default(), 600);
        let now = p.now;
        p.a.session.close(now, EndReason::Cancelled);
        p.flush();
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        assert!(p
            .a
            .session
            .poll_transmit(p.now, &mut buf, &mut Source::default())
            .is_none());
        let mut junk = [0x54u8; 30];
        p.a.session
            .handle_datagram(p.now, B_ADDR, &mut junk, &mut Sink::default(), &mut p.rng);
        assert!(p.a.session.poll_event().is_none());
    });
}

#[test]
fn time_going_back_is_clamped() {
    big_stack(|| {
        let mut p = Pair::new(22, PeerConfig::default(), 600);
        p.run_for(Duration::from_millis(200));
        let earlier = Instant::from_micros(10);
        p.a.session.handle_timeout(earlier, &mut p.rng);
        let t = p.a.session.poll_timeout();
        assert!(t.is_none_or(|t| t > earlier));
        p.run_for(Duration::from_millis(200));
        assert!(p.connected());
    });
}

#[test]
fn the_end_of_the_clock_does_not_make_a_driver_spin() {
    big_stack(|| {
        // Found by the peer_session fuzz target: a connected side whose clock
        // jumps to the end of time closes, and its close deadline saturates.
        let mut p = Pair::new(23, PeerConfig::default(), 600);
        p.run_for(Duration::from_millis(200));
        assert!(p.connected());
        for side in [&mut p.a, &mut p.b] {
            side.session.handle_timeout(Instant::MAX, &mut p.rng);
            let mut buf = [0u8; MAX_DATAGRAM_LEN];
            while side
                .session
                .poll_transmit(Instant::MAX, &mut buf, &mut side.source)
                .is_some()
            {}
            let next = side.session.poll_timeout();
            assert!(next.is_none_or(|t| t > Instant::MAX), "{next:?}");
        }
    });
}

mod props {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;

    /// Any datagrams, to either side, at any time, never panic, and a good
    /// handshake still completes afterwards. (A runner on a big stack, not
    /// the `proptest!` macro: see [`big_stack`].)
    #[test]
    fn arbitrary_datagrams_never_panic() {
        big_stack(|| {
            let strategy = proptest::collection::vec(
                (
                    any::<bool>(),
                    0u8..5,
                    proptest::collection::vec(any::<u8>(), 0..200),
                    0u64..50_000,
                ),
                0..40,
            );
            let mut runner = TestRunner::new(proptest_config!(64, "core-peer-session.txt"));
            let result = runner.run(&strategy, |inputs| {
                let mut p = Pair::new(30, PeerConfig::default(), 600);
                p.drop = |_, _| true;
                for (to_a, kind, body, wait) in inputs {
                    p.now = p.now + Duration::from_micros(wait);
                    let mut d = body.clone();
                    if kind < 4 {
                        // A peer packet of a real type and channel, garbage after.
                        let mut head = std::vec![0x54, 0x59, 0x01, 0x80 + kind];
                        let len = (8 + body.len()) as u16;
                        head.extend_from_slice(&len.to_be_bytes());
                        head.extend_from_slice(&p.a.session.channel().to_be_bytes());
                        head.extend_from_slice(&body);
                        d = head;
                    }
                    p.deliver(to_a, if to_a { B_ADDR } else { A_ADDR }, &d);
                    let now = p.now;
                    p.a.session.handle_timeout(now, &mut p.rng);
                    p.b.session.handle_timeout(now, &mut p.rng);
                }
                p.drop = keep;
                p.run_for(Duration::from_millis(300));
                prop_assert!(p.connected() || p.a.session.is_ended());
                Ok(())
            });
            if let Err(e) = result {
                panic!("{e}");
            }
        });
    }
}

/// The first init A sends (every packet is lost, so B has seen nothing).
fn first_init(p: &mut Pair) -> StdVec<u8> {
    p.drop = |_, _| true;
    p.flush();
    let init = p.log.iter().find(|(to_a, _)| !to_a).map(|(_, b)| b.clone());
    p.log.clear();
    init.expect("an init")
}

/// Gives B `copies` of `init` from `from`, `spacing` apart on the clock,
/// draining B's transmits after each; returns the handshake replies B sent
/// to `from`.
fn replay_init_to_b(
    p: &mut Pair,
    init: &[u8],
    from: SocketAddr,
    copies: usize,
    spacing: Duration,
) -> usize {
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    let mut replies = 0;
    for _ in 0..copies {
        p.now = p.now + spacing;
        let mut bytes = init.to_vec();
        p.b.session
            .handle_datagram(p.now, from, &mut bytes, &mut p.b.sink, &mut p.rng);
        while let Some((to, n)) = p.b.session.poll_transmit(p.now, &mut buf, &mut p.b.source) {
            let reply = matches!(Packet::decode(&buf[..n]), Ok(Packet::HandshakeReply { .. }));
            replies += usize::from(reply && to == from);
        }
    }
    replies
}

#[test]
fn replayed_init_from_a_third_address_draws_at_most_the_elsewhere_budget() {
    big_stack(|| {
        let mut p = Pair::new(40, PeerConfig::default(), 60);
        let init = first_init(&mut p);
        assert_eq!(
            replay_init_to_b(&mut p, &init, A_ADDR, 1, Duration::ZERO),
            1
        );
        let third = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 4444);
        let replies = replay_init_to_b(&mut p, &init, third, 250, Duration::from_millis(30));
        assert_eq!(replies, usize::from(MAX_CACHED_REPLY_RESENDS_ELSEWHERE));
        assert!(p.b.session.stats().replies_suppressed >= 240);
        // The path stays where the first init came from.
        assert_eq!(p.b.session.peer_addr(), A_ADDR);
    });
}

#[test]
fn replayed_init_draws_at_most_the_session_budget_from_the_first_source() {
    big_stack(|| {
        let mut p = Pair::new(41, PeerConfig::default(), 60);
        let init = first_init(&mut p);
        let replies = replay_init_to_b(&mut p, &init, A_ADDR, 250, Duration::from_millis(30));
        assert_eq!(replies, 1 + usize::from(MAX_CACHED_REPLY_RESENDS));
    });
}

#[test]
fn burst_of_repeated_inits_is_answered_once_per_interval() {
    big_stack(|| {
        let mut p = Pair::new(42, PeerConfig::default(), 60);
        let init = first_init(&mut p);
        // The first answer, then 100 copies within one interval: none.
        assert_eq!(
            replay_init_to_b(&mut p, &init, A_ADDR, 1, Duration::ZERO),
            1
        );
        let burst = replay_init_to_b(&mut p, &init, A_ADDR, 100, Duration::from_micros(100));
        assert_eq!(burst, 0);
        p.now = p.now + CACHED_REPLY_MIN_INTERVAL;
        assert_eq!(
            replay_init_to_b(&mut p, &init, A_ADDR, 1, Duration::ZERO),
            1
        );
    });
}

#[test]
fn lost_reply_still_reaches_a_rebound_initiator() {
    big_stack(|| {
        let mut p = Pair::new(43, PeerConfig::default(), 60);
        let init = first_init(&mut p);
        // The first reply is lost; A's NAT rebinds; its next init is answered there.
        assert_eq!(
            replay_init_to_b(&mut p, &init, A_ADDR, 1, Duration::ZERO),
            1
        );
        let rebound = SocketAddr::new(A_ADDR.ip(), 5001);
        let again = replay_init_to_b(&mut p, &init, rebound, 1, DEFAULT_PUNCH_INTERVAL);
        assert_eq!(again, 1);
    });
}

#[test]
fn no_cached_reply_once_the_initiator_proved_it_has_the_keys() {
    big_stack(|| {
        let mut p = Pair::new(44, PeerConfig::default(), 60);
        p.a.source = Source(test_data(100));
        p.a.session.stream_extend(100);
        p.run_for(Duration::from_millis(300));
        assert!(p.connected());
        assert!(p.b.session.stats().data_received > 0);
        let init = p
            .log
            .iter()
            .find(|(to_a, b)| {
                !to_a && matches!(Packet::decode(b), Ok(Packet::HandshakeInit { .. }))
            })
            .map(|(_, b)| b.clone())
            .expect("an init");
        let replies = replay_init_to_b(&mut p, &init, A_ADDR, 20, Duration::from_millis(30));
        assert_eq!(replies, 0);
    });
}

/// The pongs and lost pings among `events`.
fn ping_outcomes(events: &[PeerEvent]) -> StdVec<PeerEvent> {
    events
        .iter()
        .filter(|e| matches!(e, PeerEvent::Pong { .. } | PeerEvent::PingLost { .. }))
        .copied()
        .collect()
}

fn drop_to_b(to_a: bool, _: &[u8]) -> bool {
    !to_a
}

#[test]
fn ping_measures_the_round_trip_of_the_simulated_path() {
    big_stack(|| {
        let mut p = Pair::new(40, PeerConfig::default(), 600);
        p.run_for(Duration::from_millis(200));
        assert!(p.connected());
        let now = p.now;
        let id = p.a.session.ping(now, Duration::from_secs(1)).expect("sent");
        p.run_for(Duration::from_millis(500));
        // The peer held its ACK up to its ack delay; that is subtracted.
        assert_eq!(
            ping_outcomes(&p.a.events),
            [PeerEvent::Pong {
                id,
                rtt: LATENCY * 2
            }]
        );
        // A second ping has its own id and its own answer.
        let now = p.now;
        let second = p.a.session.ping(now, Duration::from_secs(1)).expect("sent");
        assert_ne!(second, id);
        p.run_for(Duration::from_millis(500));
        assert_eq!(ping_outcomes(&p.a.events).len(), 2);
        assert!(ping_outcomes(&p.b.events).is_empty(), "B pinged nothing");
    });
}

#[test]
fn lost_ping_times_out_and_is_reported_lost() {
    big_stack(|| {
        let mut p = Pair::new(41, PeerConfig::default(), 600);
        p.run_for(Duration::from_millis(200));
        assert!(p.connected());
        p.drop = drop_to_b;
        let asked = p.now;
        let timeout = Duration::from_millis(300);
        let id = p.a.session.ping(asked, timeout).expect("sent");
        p.run_until(asked + (timeout - Duration::from_millis(1)));
        assert!(ping_outcomes(&p.a.events).is_empty(), "not lost yet");
        p.run_until(asked + timeout);
        assert_eq!(ping_outcomes(&p.a.events), [PeerEvent::PingLost { id }]);
        // The path heals: the next ping is answered, the lost one stays lost.
        p.drop = keep;
        let now = p.now;
        let next = p.a.session.ping(now, timeout).expect("sent");
        p.run_for(Duration::from_millis(200));
        assert!(matches!(
            ping_outcomes(&p.a.events)[..],
            [PeerEvent::PingLost { .. }, PeerEvent::Pong { id: n, .. }] if n == next
        ));
    });
}

#[test]
fn pings_before_the_handshake_and_after_close_are_refused_without_panic() {
    big_stack(|| {
        let mut p = Pair::new(42, PeerConfig::default(), 600);
        let now = p.now;
        assert_eq!(
            p.a.session.ping(now, Duration::from_secs(1)),
            Err(PingError::NotConnected)
        );
        p.run_for(Duration::from_millis(200));
        let now = p.now;
        p.drop = drop_to_b;
        let waiting = p.a.session.ping(now, Duration::from_secs(1)).expect("sent");
        p.run_for(Duration::from_millis(5));
        p.drop = keep;
        let now = p.now;
        p.a.session.close(now, EndReason::Completed);
        p.flush();
        // The waiting ping is lost at the close, before the end.
        assert_eq!(
            ping_outcomes(&p.a.events),
            [PeerEvent::PingLost { id: waiting }]
        );
        assert_eq!(
            p.a.session.ping(now, Duration::from_secs(1)),
            Err(PingError::NotConnected)
        );
        p.run_for(Duration::from_secs(4));
        assert!(p.a.session.is_ended() && p.b.session.is_ended());
        let now = p.now;
        for _ in 0..100 {
            assert_eq!(
                p.a.session.ping(now, Duration::ZERO),
                Err(PingError::NotConnected)
            );
            assert_eq!(
                p.b.session.ping(now, Duration::MAX),
                Err(PingError::NotConnected)
            );
        }
        assert_eq!(p.a.session.poll_timeout(), None);
        assert_eq!(ping_outcomes(&p.a.events).len(), 1);
    });
}

// ----- the relay over TCP (issue 15, item 2: UDP blocked) ------------------

const RELAY_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9)), 7402);

/// A lone session of `role` holding a relay allocation; it hears nothing
/// (its network drops every datagram) unless `hear_at` says when a probe
/// of its channel arrives. Returns it after 5 s, with its events.
fn lone_session_with_relay(role: Role, hear_at: Option<u64>) -> (PeerSession, StdVec<PeerEvent>) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let me = StaticKeypair::generate(&mut rng);
    let peer = StaticKeypair::generate(&mut rng);
    let start = Instant::from_micros(1_000_000);
    let mut p = params(role, peer.public_key(), B_ADDR, 60);
    p.relay = Some(RelayAllocation {
        addr: RELAY_ADDR,
        token: [3; crate::wire::RELAY_TOKEN_LEN],
    });
    let mut s = PeerSession::new(start, PeerConfig::default(), &me, p, &mut rng);
    let mut events = StdVec::new();
    let mut source = Source::default();
    let mut sink = Sink::default();
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    for ms in (0..=5_000u64).step_by(10) {
        let now = start + Duration::from_millis(ms);
        if hear_at == Some(ms) {
            let mut probe = [0u8; 64];
            let n = Packet::Probe {
                channel: s.channel(),
                seq: 1,
            }
            .encode(&mut probe)
            .unwrap();
            s.handle_datagram(now, B_ADDR, &mut probe[..n], &mut sink, &mut rng);
        }
        if s.poll_timeout().is_some_and(|t| t <= now) {
            s.handle_timeout(now, &mut rng);
        }
        while s.poll_transmit(now, &mut buf, &mut source).is_some() {}
        while let Some(e) = s.poll_event() {
            events.push(e);
        }
    }
    (s, events)
}

#[test]
fn relay_over_tcp_connecting_side_that_hears_nothing_moves_its_relay_packets_to_tcp() {
    let (s, events) = lone_session_with_relay(Role::Connecting, None);
    // relay_after (1.5 s) + relay_tcp_after (2.5 s) = 4 s: by 5 s it moved.
    assert_eq!(s.relay_over_tcp(), Some(RELAY_ADDR));
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == PeerEvent::RelayOverTcp { relay: RELAY_ADDR })
            .count(),
        1
    );
    assert_eq!(s.stats().relay_tcp_fallbacks, 1);
    // And it still binds and punches through the relay (now over TCP).
    assert!(s.stats().relay_binds_sent >= 2);
}

#[test]
fn relay_over_tcp_not_for_the_connected_side_nor_a_side_that_heard_its_peer() {
    // The connected side is woken by UDP triggers: it keeps UDP.
    let (s, events) = lone_session_with_relay(Role::Connected, None);
    assert_eq!(s.relay_over_tcp(), None);
    assert!(!events
        .iter()
        .any(|e| matches!(e, PeerEvent::RelayOverTcp { .. })));
    // A connecting side that heard its peer (at 3 s) has UDP.
    let (s, _) = lone_session_with_relay(Role::Connecting, Some(3_000));
    assert_eq!(s.relay_over_tcp(), None);
}

#[test]
fn relay_over_tcp_once_moved_stays_on_tcp() {
    let (s, _) = lone_session_with_relay(Role::Connecting, Some(4_500));
    // Heard only at 4.5 s: it had moved at 4 s already, and stays on TCP.
    assert_eq!(s.relay_over_tcp(), Some(RELAY_ADDR));
}
