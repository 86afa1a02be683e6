//! The `peer_session` harness: two [`PeerSession`]s, A (connecting) and B
//! (connected), with real keys, and a network the fuzzer plays: every
//! datagram a session sends waits in a list until an operation delivers,
//! drops, duplicates or corrupts it. Garbage comes raw or framed as a peer
//! packet of the session's channel (so it reaches the handshake and data
//! parsers), from the peer's address or a stranger's.
//!
//! After every operation the harness drains both sessions like a driver
//! and checks:
//! - every transmit is a valid peer packet of the session's channel, at
//!   most [`MAX_DATAGRAM_LEN`] bytes;
//! - stream bytes a sink receives are the sender's bytes at those offsets
//!   (the source is a pure function of the offset), and never beyond what
//!   the sender made available;
//! - every datagram a sink receives is one the other side sent;
//! - after `handle_timeout(now)` and draining the transmits, `poll_timeout()`
//!   is `None` or later than `now`;
//! - once `Ended` came, a session sends nothing and raises no event.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tryst_core::crypto::StaticKeypair;
use tryst_core::peer::packet::{Packet, MAX_DATAGRAM_LEN};
use tryst_core::peer::session::{PeerConfig, PeerEvent, PeerSession, SessionParams};
use tryst_core::peer::transport::{PeerSink, StreamSource};
use tryst_core::wire::{EndReason, Role, SessionId, SessionKey};

use crate::fuzz_ops;
use crate::ops::{read_input, FuzzClock, TimeStep};

const A_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 5000));
const B_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 6000));
const STRANGER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 66), 666));
/// Most datagrams waiting in the played network; older ones are dropped.
const MAX_PENDING: usize = 256;

fuzz_ops! {
    /// The session parameters.
    pub struct PeerSessionSetup {
        pub seed: u64,
        pub duration_secs: u16,
        pub session: [u8; 16],
    }
}

fuzz_ops! {
    /// One thing that happens.
    pub enum PeerSessionOp<'a> {
        /// The pending datagram at `index` (mod the count) arrives.
        Deliver { index: u16 },
        /// Every pending datagram arrives, in order.
        DeliverAll {},
        /// The pending datagram at `index` is lost.
        Drop { index: u16 },
        /// The pending datagram at `index` arrives, and stays pending.
        Duplicate { index: u16 },
        /// A copy of the pending datagram at `index` with one byte changed arrives.
        Corrupt { index: u16, at: u16, xor: u8 },
        /// The pending datagram at `index` arrives from another address (NAT rebinding).
        Rebind { index: u16, port: u16 },
        /// Raw bytes arrive at a side.
        Raw { to_a: bool, from_peer: bool, bytes: &'a [u8] },
        /// A peer packet of type 0x80 + kind (mod 4) for the session's channel,
        /// with this body, arrives at a side.
        Framed { to_a: bool, kind: u8, body: &'a [u8] },
        /// The clock moves; both sessions get `handle_timeout`.
        Time { step: TimeStep },
        /// A side's stream grows by `bytes`.
        StreamMore { to_a: bool, bytes: u16 },
        /// A side finishes its stream where it is.
        Finish { to_a: bool },
        /// A side sends a datagram of `len` bytes.
        Datagram { to_a: bool, len: u16 },
        /// Both sides get an extension to `secs` in all.
        Extend { secs: u16 },
        /// A side closes.
        Close { to_a: bool, reason: u8 },
    }
}

/// The byte every stream has at `offset` (differs per side).
fn stream_byte(side_a: bool, offset: u64) -> u8 {
    let x = offset.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(side_a);
    (x >> 56) as u8
}

/// The source of one side: a pure function of the offset up to `available`.
struct Source {
    side_a: bool,
    available: u64,
}

impl StreamSource for Source {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> usize {
        let n = self.available.saturating_sub(offset).min(buf.len() as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = stream_byte(self.side_a, offset + i as u64);
        }
        n
    }
}

/// The sink of one side: checks what it gets against the other side.
struct Sink<'a> {
    /// Whether the sender is A.
    from_a: bool,
    /// How much the sender ever made available.
    sender_available: u64,
    /// Datagrams the sender queued (their first 8 bytes are a unique id).
    sent_datagrams: &'a BTreeSet<Vec<u8>>,
}

impl PeerSink for Sink<'_> {
    fn stream_data(&mut self, offset: u64, data: &[u8]) {
        let end = offset.checked_add(data.len() as u64).expect("no overflow");
        assert!(
            end <= self.sender_available,
            "stream bytes beyond what was sent"
        );
        for (i, b) in data.iter().enumerate() {
            assert_eq!(
                *b,
                stream_byte(self.from_a, offset + i as u64),
                "stream byte"
            );
        }
    }

    fn datagram(&mut self, data: &[u8]) {
        assert!(self.sent_datagrams.contains(data), "a datagram nobody sent");
    }
}

struct Side {
    session: PeerSession,
    source: Source,
    sent_datagrams: BTreeSet<Vec<u8>>,
    ended: bool,
    addr: SocketAddr,
}

struct Harness {
    a: Side,
    b: Side,
    clock: FuzzClock,
    rng: ChaCha8Rng,
    /// (to A, from, bytes)
    pending: Vec<(bool, SocketAddr, Vec<u8>)>,
    datagram_id: u64,
}

/// What a run reached, for corpus checks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PeerSessionSummary {
    /// Whether both sides connected at some point.
    pub connected: bool,
    /// Whether a side ended.
    pub ended: bool,
}

/// Runs one input; returns what it reached.
pub fn run(data: &[u8]) -> PeerSessionSummary {
    let Some((setup, ops)) = read_input::<PeerSessionSetup, PeerSessionOp<'_>>(data) else {
        return PeerSessionSummary::default();
    };
    let mut h = Harness::new(&setup);
    let mut summary = PeerSessionSummary::default();
    h.drain();
    for op in &ops {
        h.apply(op);
        h.drain();
        summary.connected |= h.a.session.is_connected() && h.b.session.is_connected();
    }
    summary.ended = h.a.ended || h.b.ended;
    summary
}

impl Harness {
    fn new(setup: &PeerSessionSetup) -> Harness {
        let mut rng = ChaCha8Rng::seed_from_u64(setup.seed);
        let ka = StaticKeypair::generate(&mut rng);
        let kb = StaticKeypair::generate(&mut rng);
        let clock = FuzzClock::default();
        let params = |role, peer_key, peer_addr| SessionParams {
            session_id: SessionId(setup.session),
            role,
            peer_key,
            peer_addr,
            session_key: SessionKey([0x4b; 32]),
            duration_secs: u32::from(setup.duration_secs),
            relay: None,
        };
        let a = PeerSession::new(
            clock.now,
            PeerConfig::default(),
            &ka,
            params(Role::Connecting, kb.public_key(), B_ADDR),
            &mut rng,
        );
        let b = PeerSession::new(
            clock.now,
            PeerConfig::default(),
            &kb,
            params(Role::Connected, ka.public_key(), A_ADDR),
            &mut rng,
        );
        let side = |session, side_a, addr| Side {
            session,
            source: Source {
                side_a,
                available: 0,
            },
            sent_datagrams: BTreeSet::new(),
            ended: false,
            addr,
        };
        Harness {
            a: side(a, true, A_ADDR),
            b: side(b, false, B_ADDR),
            clock,
            rng,
            pending: Vec::new(),
            datagram_id: 0,
        }
    }

    fn side(&mut self, a: bool) -> &mut Side {
        if a {
            &mut self.a
        } else {
            &mut self.b
        }
    }

    /// Hands `bytes` to a side.
    fn deliver(&mut self, to_a: bool, from: SocketAddr, bytes: &[u8]) {
        let now = self.clock.now;
        let mut bytes = bytes.to_vec();
        let (receiver, sender) = if to_a {
            (&mut self.a, &self.b)
        } else {
            (&mut self.b, &self.a)
        };
        let mut sink = Sink {
            from_a: !to_a,
            sender_available: sender.source.available,
            sent_datagrams: &sender.sent_datagrams,
        };
        receiver
            .session
            .handle_datagram(now, from, &mut bytes, &mut sink, &mut self.rng);
    }

    fn pick(&self, index: u16) -> Option<usize> {
        (!self.pending.is_empty()).then(|| usize::from(index) % self.pending.len())
    }

    fn apply(&mut self, op: &PeerSessionOp<'_>) {
        match *op {
            PeerSessionOp::Deliver { index } => {
                if let Some(i) = self.pick(index) {
                    let (to_a, from, bytes) = self.pending.remove(i);
                    self.deliver(to_a, from, &bytes);
                }
            }
            PeerSessionOp::DeliverAll {} => {
                for (to_a, from, bytes) in std::mem::take(&mut self.pending) {
                    self.deliver(to_a, from, &bytes);
                }
            }
            PeerSessionOp::Drop { index } => {
                if let Some(i) = self.pick(index) {
                    self.pending.remove(i);
                }
            }
            PeerSessionOp::Duplicate { index } => {
                if let Some(i) = self.pick(index) {
                    let (to_a, from, bytes) = self.pending[i].clone();
                    self.deliver(to_a, from, &bytes);
                }
            }
            PeerSessionOp::Corrupt { index, at, xor } => {
                if let Some(i) = self.pick(index) {
                    let (to_a, from, mut bytes) = self.pending[i].clone();
                    if !bytes.is_empty() {
                        let at = usize::from(at) % bytes.len();
                        bytes[at] ^= xor.max(1);
                    }
                    self.deliver(to_a, from, &bytes);
                }
            }
            PeerSessionOp::Rebind { index, port } => {
                if let Some(i) = self.pick(index) {
                    let (to_a, from, bytes) = self.pending.remove(i);
                    self.deliver(to_a, SocketAddr::new(from.ip(), port), &bytes);
                }
            }
            PeerSessionOp::Raw {
                to_a,
                from_peer,
                bytes,
            } => {
                let from = match (from_peer, to_a) {
                    (false, _) => STRANGER,
                    (true, true) => B_ADDR,
                    (true, false) => A_ADDR,
                };
                self.deliver(to_a, from, bytes);
            }
            PeerSessionOp::Framed { to_a, kind, body } => {
                let body = &body[..body.len().min(MAX_DATAGRAM_LEN)];
                let mut d = vec![b'T', b'Y', 1, 0x80 + kind % 4];
                d.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
                d.extend_from_slice(&self.a.session.channel().to_be_bytes());
                d.extend_from_slice(body);
                self.deliver(to_a, if to_a { B_ADDR } else { A_ADDR }, &d);
            }
            PeerSessionOp::Time { ref step } => {
                let next = [self.a.session.poll_timeout(), self.b.session.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                self.clock.step(step, next);
                let now = self.clock.now;
                for a in [true, false] {
                    let rng = &mut self.rng;
                    let side = if a { &mut self.a } else { &mut self.b };
                    side.session.handle_timeout(now, rng);
                }
                // Draining first: the contract allows a due transmit.
                self.drain();
                let next_a = self.a.session.poll_timeout();
                let next_b = self.b.session.poll_timeout();
                self.clock.check_timeout("peer session A", next_a);
                self.clock.check_timeout("peer session B", next_b);
            }
            PeerSessionOp::StreamMore { to_a, bytes } => {
                let side = self.side(to_a);
                side.source.available += u64::from(bytes);
                let available = side.source.available;
                side.session.stream_extend(available);
            }
            PeerSessionOp::Finish { to_a } => {
                let side = self.side(to_a);
                let available = side.source.available;
                let _ = side.session.stream_finish(available);
            }
            PeerSessionOp::Datagram { to_a, len } => {
                self.datagram_id += 1;
                let mut d = vec![0u8; usize::from(len).max(8)];
                d[..8].copy_from_slice(&self.datagram_id.to_be_bytes());
                let side = self.side(to_a);
                if side.session.send_datagram(&d).is_ok() {
                    side.sent_datagrams.insert(d);
                }
            }
            PeerSessionOp::Extend { secs } => {
                self.a.session.extend(u32::from(secs));
                self.b.session.extend(u32::from(secs));
            }
            PeerSessionOp::Close { to_a, reason } => {
                let reason = EndReason::from_wire(reason).unwrap_or(EndReason::Cancelled);
                let now = self.clock.now;
                self.side(to_a).session.close(now, reason);
            }
        }
    }

    /// Drains both sides' transmits into the played network and checks
    /// events.
    fn drain(&mut self) {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let now = self.clock.now;
        for a in [true, false] {
            let side = if a { &mut self.a } else { &mut self.b };
            let channel = side.session.channel();
            for _ in 0..100_000 {
                let Some((to, n)) = side.session.poll_transmit(now, &mut buf, &mut side.source)
                else {
                    break;
                };
                assert!(!side.ended, "an ended session sent a packet");
                assert!(n <= MAX_DATAGRAM_LEN);
                let packet = Packet::decode(&buf[..n]).expect("a valid peer packet");
                assert_eq!(packet.channel(), channel);
                if self.pending.len() >= MAX_PENDING {
                    self.pending.remove(0);
                }
                // Anything sent to an address other than the peer's is
                // delivered to the peer as if rebound (a hint or a path move).
                let _ = to;
                self.pending.push((!a, side.addr, buf[..n].to_vec()));
            }
            while let Some(event) = side.session.poll_event() {
                assert!(!side.ended, "an event after Ended: {event:?}");
                if matches!(event, PeerEvent::Ended { .. }) {
                    side.ended = true;
                    assert_eq!(side.session.poll_timeout(), None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::write_input;

    #[test]
    fn a_plain_run_connects_and_moves_data() {
        let setup = PeerSessionSetup {
            seed: 1,
            duration_secs: 60,
            session: [7; 16],
        };
        let ops = [
            PeerSessionOp::StreamMore {
                to_a: true,
                bytes: 5000,
            },
            PeerSessionOp::Finish { to_a: true },
            PeerSessionOp::DeliverAll {},
            PeerSessionOp::DeliverAll {},
            PeerSessionOp::Datagram {
                to_a: false,
                len: 40,
            },
            PeerSessionOp::DeliverAll {},
            PeerSessionOp::DeliverAll {},
            PeerSessionOp::DeliverAll {},
            PeerSessionOp::Close {
                to_a: true,
                reason: 1,
            },
            PeerSessionOp::DeliverAll {},
            PeerSessionOp::DeliverAll {},
        ];
        let summary = run(&write_input(&setup, &ops));
        assert!(summary.connected);
        assert!(summary.ended);
    }

    /// A cheap stand-in for the fuzzer on stable: random inputs, no panic.
    #[test]
    fn random_inputs_never_panic() {
        use rand_chacha::rand_core::RngCore;
        let runs: u64 = std::env::var("PEER_SESSION_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let seed: u64 = std::env::var("PEER_SESSION_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(7);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..runs {
            let mut data = vec![0u8; (rng.next_u32() % 2000) as usize];
            rng.fill_bytes(&mut data);
            let _ = run(&data);
        }
    }
}
