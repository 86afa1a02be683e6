//! The `noise_channel` harness: one real Noise IK handshake with fixed keys
//! and a seeded generator (a terminal initiator, a server responder), then
//! operations the fuzzer picks:
//! - arbitrary bytes into [`Responder::accept`] and [`Initiator::finish`]
//!   (and the peer handshake's [`PeerResponder::accept`] and
//!   [`PeerInitiator::finish_packets`], the path the peer session runs): no panic; the real init or reply with any
//!   one byte changed is refused; a refused reply leaves the initiator able
//!   to finish with the real one;
//! - records sealed in either direction, delivered in any order, any number
//!   of times, mutated (one byte, truncated, moved to another channel or
//!   nonce) or forged from arbitrary fields: [`SecureChannel::open`] never
//!   panics, accepts each genuine record at most once (exactly as a model of
//!   the replay window says: `Replayed` for a nonce accepted before,
//!   `TooOld` past [`REPLAY_WINDOW`], else the original plaintext), never
//!   accepts a modified record, and refusals leave the window as it was.

use std::collections::BTreeSet;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tryst_core::crypto::{
    Initiator, OpenError, Responder, SecureChannel, StaticKeypair, REPLAY_WINDOW,
};
use tryst_core::peer::handshake::{PeerInitiator, PeerParams, PeerResponder};
use tryst_core::wire::{
    HandshakeInit, HandshakeReply, Message, Sealed, SessionId, SessionKey, MAX_HANDSHAKE_LEN,
    MAX_PLAIN_MESSAGE_LEN,
};

use crate::fuzz_ops;
use crate::ops::{encode, read_input, seal, T0};

/// The channel number the responder gives the channel.
pub const CHANNEL: u64 = 0x0102_0304_0506_0708;
/// The most records one `SealMany` seals (past the replay window).
pub const MAX_SEAL_MANY: u16 = 3000;

fuzz_ops! {
    /// What the handshake carries.
    pub struct NoiseSetup {
        /// Length of the first message's payload (bounded by the longest plain message).
        pub init_payload: u16,
        /// Length of the reply's payload.
        pub reply_payload: u16,
    }
}

fuzz_ops! {
    /// One thing that happens to the handshake or the channel.
    pub enum NoiseOp<'a> {
        /// Arbitrary bytes as a first message to the responder.
        ForgedInit { noise: &'a [u8] },
        /// The real first message with one byte changed.
        MutatedInit { pos: u16, xor: u8 },
        /// Arbitrary bytes as the reply to the initiator.
        ForgedReply { channel: u64, noise: &'a [u8] },
        /// The real reply with one byte changed.
        MutatedReply { pos: u16, xor: u8 },
        /// The real reply: the initiator finishes (again: refused).
        Complete {},
        /// Arbitrary bytes into the peer handshake (KKpsk0), either side.
        PeerGarbage { as_reply: bool, noise: &'a [u8] },
        /// A record of `len` bytes of `fill`, sealed by one side.
        Seal { from_server: bool, len: u16, fill: u8 },
        /// `count` empty records sealed by one side (to move past the window).
        SealMany { from_server: bool, count: u16 },
        /// A sealed record delivered (again) to the other side.
        Deliver { from_server: bool, pick: u16 },
        /// A sealed record with one byte changed.
        Mutate { from_server: bool, pick: u16, pos: u16, xor: u8 },
        /// A sealed record with its sealed part cut short (header fixed).
        Truncate { from_server: bool, pick: u16, cut: u16 },
        /// A sealed record moved to another channel number.
        Rechannel { from_server: bool, pick: u16, channel: u64 },
        /// A sealed record moved to another nonce.
        Renonce { from_server: bool, pick: u16, nonce: u64 },
        /// A record from arbitrary fields (the real channel number if `None`).
        Forged { from_server: bool, channel: Option<u64>, nonce: u64, sealed: &'a [u8] },
    }
}

/// What a run reached, for the seed corpus checks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NoiseSummary {
    /// Whether the initiator finished.
    pub completed: bool,
    /// Genuine records accepted.
    pub accepted: u32,
    /// Genuine records refused as replays.
    pub replayed: u32,
    /// Genuine records refused as too old.
    pub too_old: u32,
}

/// One sealed record, as it went on the wire.
struct Record {
    nonce: u64,
    bytes: Vec<u8>,
    plain: Vec<u8>,
}

/// One direction of the channel: what was sealed, and the receiver's model.
#[derive(Default)]
struct Direction {
    records: Vec<Record>,
    accepted: BTreeSet<u64>,
    newest: Option<u64>,
}

struct Harness {
    rng: ChaCha8Rng,
    server_kp: StaticKeypair,
    term_kp: StaticKeypair,
    init: Vec<u8>,
    reply: Vec<u8>,
    initiator: Initiator,
    server: SecureChannel,
    term: Option<SecureChannel>,
    /// Terminal to server, server to terminal.
    up: Direction,
    down: Direction,
    summary: NoiseSummary,
}

/// Runs one input; returns what it reached.
pub fn run(data: &[u8]) -> NoiseSummary {
    let Some((setup, ops)) = read_input::<NoiseSetup, NoiseOp<'_>>(data) else {
        return NoiseSummary::default();
    };
    let mut h = Harness::new(&setup);
    for op in &ops {
        h.apply(op);
    }
    h.summary
}

fn flip(bytes: &[u8], pos: u16, xor: u8) -> Vec<u8> {
    let mut changed = bytes.to_vec();
    if !changed.is_empty() {
        let i = usize::from(pos) % changed.len();
        changed[i] ^= xor.max(1);
    }
    changed
}

impl Harness {
    fn new(setup: &NoiseSetup) -> Harness {
        let mut rng = ChaCha8Rng::seed_from_u64(0xc4a7);
        let server_kp = StaticKeypair::generate(&mut rng);
        let term_kp = StaticKeypair::generate(&mut rng);
        let init_payload = vec![0x11; usize::from(setup.init_payload) % MAX_PLAIN_MESSAGE_LEN];
        let reply_payload = vec![0x22; usize::from(setup.reply_payload) % MAX_PLAIN_MESSAGE_LEN];
        let mut noise = vec![0u8; MAX_HANDSHAKE_LEN];
        let (initiator, n) = Initiator::start(
            &mut rng,
            T0,
            &term_kp,
            &server_kp.public_key(),
            &init_payload,
            &mut noise,
        )
        .expect("a payload within the bound");
        let init = noise[..n].to_vec();
        let mut payload = vec![0u8; MAX_HANDSHAKE_LEN];
        let (responder, pn) = Responder::accept(
            &mut rng,
            T0,
            &server_kp,
            &HandshakeInit { noise: &init },
            &mut payload,
        )
        .expect("the real first message");
        assert_eq!(&payload[..pn], &init_payload[..]);
        assert_eq!(responder.initiator_key(), term_kp.public_key());
        let mut noise = vec![0u8; MAX_HANDSHAKE_LEN];
        let (server, m) = responder
            .reply(CHANNEL, &reply_payload, &mut noise)
            .expect("room for the reply");
        let reply = noise[..m].to_vec();
        Harness {
            rng,
            server_kp,
            term_kp,
            init,
            reply,
            initiator,
            server,
            term: None,
            up: Direction::default(),
            down: Direction::default(),
            summary: NoiseSummary::default(),
        }
    }

    fn accept(&mut self, noise: &[u8]) -> bool {
        let mut payload = vec![0u8; MAX_HANDSHAKE_LEN];
        Responder::accept(
            &mut self.rng,
            T0,
            &self.server_kp,
            &HandshakeInit { noise },
            &mut payload,
        )
        .is_ok()
    }

    fn finish(&mut self, channel: u64, noise: &[u8]) -> Option<SecureChannel> {
        let mut payload = vec![0u8; MAX_HANDSHAKE_LEN];
        self.initiator
            .finish(T0, &HandshakeReply { channel, noise }, &mut payload)
            .ok()
            .map(|(channel, _)| channel)
    }

    fn apply(&mut self, op: &NoiseOp<'_>) {
        match op {
            NoiseOp::ForgedInit { noise } => {
                // The real first message could be found by the fuzzer (the
                // keys and generator are fixed): only the absence of a panic
                // is checked.
                let _ = self.accept(noise);
            }
            NoiseOp::MutatedInit { pos, xor } => {
                let changed = flip(&self.init, *pos, *xor);
                assert!(
                    !self.accept(&changed),
                    "a changed first message was accepted"
                );
            }
            NoiseOp::ForgedReply { channel, noise } => {
                if let Some(channel) = self.finish(*channel, noise) {
                    // Only the real reply finishes (with any channel number).
                    assert_eq!(*noise, &self.reply[..], "a forged reply finished");
                    self.completed(channel);
                }
            }
            NoiseOp::MutatedReply { pos, xor } => {
                let changed = flip(&self.reply, *pos, *xor);
                assert!(
                    self.finish(CHANNEL, &changed).is_none(),
                    "a changed reply finished the handshake"
                );
            }
            NoiseOp::Complete {} => {
                let reply = self.reply.clone();
                match self.finish(CHANNEL, &reply) {
                    Some(channel) => {
                        assert!(self.term.is_none(), "one reply finished twice");
                        self.completed(channel);
                    }
                    None => assert!(self.term.is_some(), "the real reply was refused"),
                }
            }
            NoiseOp::PeerGarbage { as_reply, noise } => self.peer_garbage(*as_reply, noise),
            NoiseOp::Seal {
                from_server,
                len,
                fill,
            } => {
                let plain = vec![*fill; usize::from(*len) % (MAX_PLAIN_MESSAGE_LEN + 1)];
                self.seal(*from_server, plain);
            }
            NoiseOp::SealMany { from_server, count } => {
                for _ in 0..count % (MAX_SEAL_MANY + 1) {
                    if !self.seal(*from_server, Vec::new()) {
                        break;
                    }
                }
            }
            NoiseOp::Deliver { from_server, pick } => {
                if let Some(i) = self.pick_record(*from_server, *pick) {
                    self.deliver_genuine(*from_server, i);
                }
            }
            NoiseOp::Mutate {
                from_server,
                pick,
                pos,
                xor,
            } => {
                if let Some(i) = self.pick_record(*from_server, *pick) {
                    let changed = flip(&self.direction(*from_server).records[i].bytes, *pos, *xor);
                    self.deliver_modified(*from_server, &changed);
                }
            }
            NoiseOp::Truncate {
                from_server,
                pick,
                cut,
            } => {
                let Some(i) = self.pick_record(*from_server, *pick) else {
                    return;
                };
                let bytes = self.direction(*from_server).records[i].bytes.clone();
                let Ok(Message::Sealed(record)) = Message::decode(&bytes) else {
                    unreachable!("a sealed record decodes");
                };
                let keep = record.sealed.len() - (usize::from(*cut) % record.sealed.len()).max(1);
                let shorter = Sealed {
                    sealed: &record.sealed[..keep],
                    ..record
                };
                let mut out = vec![0u8; MAX_PLAIN_MESSAGE_LEN];
                let result = self
                    .receiver(*from_server)
                    .map(|ch| ch.open(&shorter, &mut out));
                assert!(
                    !matches!(result, Some(Ok(_))),
                    "a record cut short was accepted"
                );
            }
            NoiseOp::Rechannel {
                from_server,
                pick,
                channel,
            } => {
                if *channel == CHANNEL {
                    return;
                }
                self.deliver_rewritten(*from_server, *pick, |r| Sealed {
                    channel: *channel,
                    ..r
                });
            }
            NoiseOp::Renonce {
                from_server,
                pick,
                nonce,
            } => self.deliver_rewritten(*from_server, *pick, |r| {
                if r.nonce == *nonce {
                    // Not a modification: make it one.
                    Sealed {
                        nonce: nonce.wrapping_add(1),
                        ..r
                    }
                } else {
                    Sealed { nonce: *nonce, ..r }
                }
            }),
            NoiseOp::Forged {
                from_server,
                channel,
                nonce,
                sealed,
            } => {
                let record = Sealed {
                    channel: channel.unwrap_or(CHANNEL),
                    nonce: *nonce,
                    sealed,
                };
                // A forged record that happens to equal a genuine one (the
                // keys are fixed, so the fuzzer could find one) counts as that
                // genuine record; anything else must be refused.
                let genuine = encode(&record.into()).and_then(|bytes| {
                    self.direction(*from_server)
                        .records
                        .iter()
                        .position(|r| r.bytes == bytes)
                });
                match genuine {
                    Some(i) => self.deliver_genuine(*from_server, i),
                    None => {
                        let mut out = vec![0u8; MAX_PLAIN_MESSAGE_LEN];
                        let result = self
                            .receiver(*from_server)
                            .map(|ch| ch.open(&record, &mut out));
                        assert!(
                            !matches!(result, Some(Ok(_))),
                            "a forged record was accepted: {record:?}"
                        );
                    }
                }
            }
        }
    }

    fn completed(&mut self, channel: SecureChannel) {
        assert_eq!(channel.handshake_hash(), self.server.handshake_hash());
        assert_eq!(channel.channel(), CHANNEL);
        assert!(channel.peer_confirmed(), "the reply proves the responder");
        self.term = Some(channel);
        self.summary.completed = true;
    }

    fn peer_garbage(&mut self, as_reply: bool, noise: &[u8]) {
        let session_id = SessionId([0x5e; 16]);
        let session_key = SessionKey([0x4b; 32]);
        let mut out = vec![0u8; MAX_HANDSHAKE_LEN];
        if as_reply {
            let params = PeerParams {
                local: &self.term_kp,
                peer_key: self.server_kp.public_key(),
                session_id,
                session_key: &session_key,
            };
            let Ok((mut initiator, _)) =
                PeerInitiator::start(&mut self.rng, T0, &params, b"peer", &mut out)
            else {
                panic!("a peer handshake with valid keys starts");
            };
            let _ = initiator.finish_packets(noise, &mut out);
        } else {
            let params = PeerParams {
                local: &self.server_kp,
                peer_key: self.term_kp.public_key(),
                session_id,
                session_key: &session_key,
            };
            let _ = PeerResponder::accept(&mut self.rng, T0, &params, noise, &mut out);
        }
    }

    fn direction(&self, from_server: bool) -> &Direction {
        if from_server {
            &self.down
        } else {
            &self.up
        }
    }

    fn sender(&mut self, from_server: bool) -> Option<&mut SecureChannel> {
        if from_server {
            Some(&mut self.server)
        } else {
            self.term.as_mut()
        }
    }

    fn receiver(&mut self, from_server: bool) -> Option<&mut SecureChannel> {
        self.sender(!from_server)
    }

    fn pick_record(&self, from_server: bool, pick: u16) -> Option<usize> {
        let len = self.direction(from_server).records.len();
        (len > 0).then(|| usize::from(pick) % len)
    }

    /// Seals `plain` from one side; whether it could.
    fn seal(&mut self, from_server: bool, plain: Vec<u8>) -> bool {
        let Some(channel) = self.sender(from_server) else {
            return false;
        };
        let nonce = channel.next_nonce();
        let Some(bytes) = seal(channel, &plain) else {
            return false;
        };
        assert_eq!(channel.next_nonce(), nonce + 1);
        let direction = if from_server {
            &mut self.down
        } else {
            &mut self.up
        };
        assert_eq!(
            direction.records.len() as u64,
            nonce,
            "nonces count up from 0"
        );
        direction.records.push(Record {
            nonce,
            bytes,
            plain,
        });
        true
    }

    /// Delivers genuine record `i` and checks the result against the model.
    fn deliver_genuine(&mut self, from_server: bool, i: usize) {
        let (nonce, bytes, plain) = {
            let r = &self.direction(from_server).records[i];
            (r.nonce, r.bytes.clone(), r.plain.clone())
        };
        let d = self.direction(from_server);
        // The window's order: too old first, then already seen.
        let expected = if d
            .newest
            .is_some_and(|n| n > nonce && n - nonce >= REPLAY_WINDOW)
        {
            Err(OpenError::TooOld)
        } else if d.accepted.contains(&nonce) {
            Err(OpenError::Replayed)
        } else {
            Ok(plain)
        };
        let Some(receiver) = self.receiver(from_server) else {
            return;
        };
        let result = crate::ops::open(receiver, &bytes);
        assert_eq!(result, expected, "record with nonce {nonce}");
        match result {
            Ok(_) => {
                let d = if from_server {
                    &mut self.down
                } else {
                    &mut self.up
                };
                d.accepted.insert(nonce);
                d.newest = Some(d.newest.map_or(nonce, |n| n.max(nonce)));
                self.summary.accepted += 1;
                if !from_server {
                    assert!(self.server.peer_confirmed());
                }
            }
            Err(OpenError::Replayed) => self.summary.replayed += 1,
            Err(_) => self.summary.too_old += 1,
        }
    }

    /// Delivers a changed record: it must be refused.
    fn deliver_modified(&mut self, from_server: bool, bytes: &[u8]) {
        let genuine = self
            .direction(from_server)
            .records
            .iter()
            .position(|r| r.bytes == bytes);
        if let Some(i) = genuine {
            // The change made another genuine record (impossible but harmless).
            self.deliver_genuine(from_server, i);
            return;
        }
        if let Some(receiver) = self.receiver(from_server) {
            let result = crate::ops::open(receiver, bytes);
            assert!(result.is_err(), "a modified record was accepted");
        }
    }

    fn deliver_rewritten(
        &mut self,
        from_server: bool,
        pick: u16,
        rewrite: impl FnOnce(Sealed<'_>) -> Sealed<'_>,
    ) {
        let Some(i) = self.pick_record(from_server, pick) else {
            return;
        };
        let bytes = self.direction(from_server).records[i].bytes.clone();
        let Ok(Message::Sealed(record)) = Message::decode(&bytes) else {
            unreachable!("a sealed record decodes");
        };
        let changed = encode(&rewrite(record).into()).expect("same sizes");
        self.deliver_modified(from_server, &changed);
    }
}
