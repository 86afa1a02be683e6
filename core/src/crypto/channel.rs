//! The secure control channel: `Noise_IK_25519_AESGCM_SHA256`, terminal to
//! session server and session server to trigger server.
//!
//! The initiator knows the responder's static public key in advance. Its
//! first message (in a [`crate::wire::HandshakeInit`]) carries its own
//! static key, encrypted, and a first plain tryst message (e.g. a
//! `Register`) as payload. The responder learns who is calling from
//! [`Responder::initiator_key`], decides, picks a channel number and answers
//! (in a [`crate::wire::HandshakeReply`]) with a payload of its own (e.g. a
//! `RegisterAck`). Both ends then hold a [`SecureChannel`]: one AES-256-GCM
//! key per direction from the Noise split, explicit nonces, and a replay
//! window, so every later message costs no public-key operation.
//!
//! A first message can be replayed by anyone who saw it (IK has no
//! freshness for the responder until the initiator sends a record); the
//! responder learns that the initiator is live from
//! [`SecureChannel::peer_confirmed`].
//!
//! The channel number in the reply is not covered by the handshake; it is
//! covered by every record (it is part of the records' associated data), so
//! a reply whose number was altered yields records the responder refuses.

use core::fmt;
use core::time::Duration;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use clatter::handshakepattern::noise_ik;
use clatter::traits::Handshaker;
use rand_core::{CryptoRng, RngCore};

pub use super::noise::HANDSHAKE_TIMEOUT;
use super::noise::{self, fresh_keypair, HandshakeError, Hs, PendingInitiator, StaticKeypair};
use super::replay::{ReplayError, ReplayWindow};
use crate::time::Instant;
use crate::wire::{
    HandshakeInit, HandshakeReply, MessageType, PublicKey, Sealed, HEADER_LEN, MAGIC,
    MAX_HANDSHAKE_LEN, MAX_MESSAGE_LEN, MAX_PLAIN_MESSAGE_LEN, MAX_SEALED_LEN, NOISE_IK_OVERHEAD,
    TAG_LEN, VERSION,
};

/// The Noise protocol of the control channel.
pub const CONTROL_PROTOCOL_NAME: &str = "Noise_IK_25519_AESGCM_SHA256";
/// The Noise prologue of the control channel: binds the handshake to this
/// protocol version, so a handshake of another version cannot be replayed into it.
pub const PROLOGUE: &[u8] = b"tryst channel v1";
/// Bytes the first IK message adds to its payload: `e` (32), encrypted `s`
/// (32 + 16) and the payload's tag (16).
pub const INIT_OVERHEAD: usize = 32 + 48 + TAG_LEN;
/// Bytes the IK reply adds to its payload: `e` (32) and the payload's tag (16).
pub const REPLY_OVERHEAD: usize = 32 + TAG_LEN;
/// Age after which a channel should be replaced by a fresh handshake
/// (see [`SecureChannel::needs_rekey`]); the caller's clock enforces it.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(60 * 60);
/// A sender seals at most this many records on one channel; then
/// [`SecureChannel::seal`] refuses and a new handshake is needed. Far below
/// 2^64 - 1, the nonce Noise reserves.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// Bytes a sealed record message adds to its plaintext: header (6), channel
/// (8), nonce (8) and tag (16).
pub const SEALED_OVERHEAD: usize = HEADER_LEN + 8 + 8 + TAG_LEN;
/// The associated data of a record: header, channel and nonce.
const AAD_LEN: usize = HEADER_LEN + 8 + 8;

// The handshake and record envelopes around the longest plain message fit
// the codec's bounds, which stay far below clatter's 65535-byte limit.
const _: () = assert!(INIT_OVERHEAD == NOISE_IK_OVERHEAD);
const _: () = assert!(INIT_OVERHEAD + MAX_PLAIN_MESSAGE_LEN <= MAX_HANDSHAKE_LEN);
const _: () = assert!(REPLY_OVERHEAD + MAX_PLAIN_MESSAGE_LEN <= MAX_HANDSHAKE_LEN);
const _: () = assert!(SEALED_OVERHEAD + MAX_PLAIN_MESSAGE_LEN <= MAX_MESSAGE_LEN);
const _: () = assert!(MAX_MESSAGE_LEN <= 65535);

/// A Noise handshake state for the IK pattern with a fresh ephemeral key.
fn ik_state<R: RngCore + CryptoRng>(
    rng: &mut R,
    initiator: bool,
    local: &StaticKeypair,
    remote: Option<[u8; 32]>,
) -> Result<Hs, HandshakeError> {
    let e = fresh_keypair(rng);
    Ok(Hs::new(
        noise_ik(),
        PROLOGUE,
        initiator,
        Some(local.0.clone()),
        Some(e),
        remote,
        None,
    )?)
}

/// The calling side of a control channel, between its first message and the reply.
/// Not `Clone`: two channels from one handshake would reuse nonces.
pub struct Initiator {
    pending: PendingInitiator,
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("started", &self.pending.started())
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Starts a handshake with the responder whose static key is `responder`,
    /// writing the Noise message for a [`HandshakeInit`] into `out`
    /// ([`INIT_OVERHEAD`] + `payload.len()` bytes) and returning its length.
    pub fn start<R: RngCore + CryptoRng>(
        rng: &mut R,
        now: Instant,
        local: &StaticKeypair,
        responder: &PublicKey,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(Initiator, usize), HandshakeError> {
        if noise::is_low_order(&responder.0) {
            return Err(HandshakeError::WeakKey);
        }
        let hs = ik_state(rng, true, local, Some(responder.0))?;
        let (pending, n) = PendingInitiator::start(hs, now, payload, out)?;
        Ok((Initiator { pending }, n))
    }

    /// When the first message was written.
    pub fn started(&self) -> Instant {
        self.pending.started()
    }

    /// When the handshake expires: [`HANDSHAKE_TIMEOUT`] after the start.
    pub fn deadline(&self) -> Instant {
        self.pending.deadline()
    }

    /// Whether the reply is overdue; the caller then starts again or gives up.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.pending.is_expired(now)
    }

    /// Reads the responder's reply, writes its payload into `payload_out` and
    /// returns the channel and the payload length. A reply that fails leaves
    /// this initiator as it was, so a forged reply cannot stop the real one.
    pub fn finish(
        &mut self,
        now: Instant,
        reply: &HandshakeReply<'_>,
        payload_out: &mut [u8],
    ) -> Result<(SecureChannel, usize), HandshakeError> {
        self.pending.finish(now, reply.noise, payload_out, |hs| {
            SecureChannel::from_handshake(hs, reply.channel, now)
        })
    }
}

/// The answering side of a control channel, after reading the first message.
/// Check [`Self::initiator_key`] before calling [`Self::reply`]. Not `Clone`,
/// for the same reason as [`Initiator`].
pub struct Responder {
    hs: Hs,
    initiator_key: PublicKey,
    received: Instant,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("initiator_key", &self.initiator_key)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// Reads a first message, writes its payload into `payload_out` and
    /// returns the responder state and the payload length.
    pub fn accept<R: RngCore + CryptoRng>(
        rng: &mut R,
        now: Instant,
        local: &StaticKeypair,
        init: &HandshakeInit<'_>,
        payload_out: &mut [u8],
    ) -> Result<(Responder, usize), HandshakeError> {
        let mut hs = ik_state(rng, false, local, None)?;
        let n = noise::read_message(&mut hs, init.noise, payload_out)?;
        let initiator_key = hs
            .get_remote_static()
            .map(PublicKey)
            .ok_or(HandshakeError::Internal)?;
        if noise::is_low_order(&initiator_key.0) {
            return Err(HandshakeError::WeakKey);
        }
        Ok((
            Responder {
                hs,
                initiator_key,
                received: now,
            },
            n,
        ))
    }

    /// The initiator's static public key, proven by the handshake: its identity.
    pub fn initiator_key(&self) -> PublicKey {
        self.initiator_key
    }

    /// Writes the reply for a [`HandshakeReply`] with number `channel` into
    /// `out` ([`REPLY_OVERHEAD`] + `payload.len()` bytes) and returns the
    /// channel and the reply's length.
    pub fn reply(
        mut self,
        channel: u64,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(SecureChannel, usize), HandshakeError> {
        let n = noise::write_message(&mut self.hs, payload, out)?;
        let secure = SecureChannel::from_handshake(self.hs, channel, self.received)?;
        Ok((secure, n))
    }
}

/// Why a record could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// The plaintext is longer than [`MAX_PLAIN_MESSAGE_LEN`].
    PlaintextTooLong {
        /// Bytes offered.
        len: usize,
    },
    /// The output buffer cannot hold the record.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// [`REKEY_AFTER_MESSAGES`] records were sealed: a new handshake is needed.
    NoncesExhausted,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::PlaintextTooLong { len } => write!(f, "plaintext of {len} bytes too long"),
            SealError::BufferTooSmall { needed, available } => {
                write!(f, "buffer of {available} bytes cannot hold {needed}")
            }
            SealError::NoncesExhausted => f.write_str("channel nonces exhausted; rekey"),
        }
    }
}

impl core::error::Error for SealError {}

/// Why a record was refused. Nothing about the channel changes on refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The record names another channel.
    WrongChannel {
        /// The channel the record names.
        channel: u64,
    },
    /// The sealed part is shorter than a tag or longer than [`MAX_SEALED_LEN`].
    BadLength(usize),
    /// The nonce is [`REKEY_AFTER_MESSAGES`] or more, which no sender uses.
    NonceOutOfRange,
    /// This nonce was already accepted.
    Replayed,
    /// The nonce lies [`super::REPLAY_WINDOW`] or more behind the newest.
    TooOld,
    /// The tag did not verify: forged, altered, or sealed under another key.
    Forged,
    /// The output buffer cannot hold the plaintext.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::WrongChannel { channel } => write!(f, "record for channel {channel}"),
            OpenError::BadLength(n) => write!(f, "sealed part of {n} bytes"),
            OpenError::NonceOutOfRange => f.write_str("nonce out of range"),
            OpenError::Replayed => f.write_str("replayed record"),
            OpenError::TooOld => f.write_str("record older than the replay window"),
            OpenError::Forged => f.write_str("record failed authentication"),
            OpenError::BufferTooSmall { needed, available } => {
                write!(f, "buffer of {available} bytes cannot hold {needed}")
            }
        }
    }
}

impl core::error::Error for OpenError {}

impl From<ReplayError> for OpenError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Replayed => OpenError::Replayed,
            ReplayError::TooOld => OpenError::TooOld,
        }
    }
}

/// An established channel: a key and a nonce counter to send, a key and a
/// replay window to receive. Keys are wiped when it is dropped. Not `Clone`:
/// a copy would seal under nonces the original also uses.
pub struct SecureChannel {
    channel: u64,
    send: Aes256Gcm,
    recv: Aes256Gcm,
    handshake_hash: [u8; 32],
    next_send: u64,
    window: ReplayWindow,
    established: Instant,
    peer_confirmed: bool,
}

impl fmt::Debug for SecureChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureChannel")
            .field("channel", &self.channel)
            .field("next_send", &self.next_send)
            .field("newest_received", &self.window.newest())
            .field("established", &self.established)
            .field("peer_confirmed", &self.peer_confirmed)
            .finish_non_exhaustive()
    }
}

/// The Noise nonce: 4 zero bytes, then the counter as u64 big-endian.
fn record_nonce(counter: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n.into()
}

/// The first bytes of a sealed record message, which are its associated data.
fn record_aad(channel: u64, nonce: u64, sealed_len: usize) -> [u8; AAD_LEN] {
    let mut aad = [0u8; AAD_LEN];
    aad[..2].copy_from_slice(&MAGIC);
    aad[2] = VERSION;
    aad[3] = MessageType::Sealed.to_wire();
    // Callers bound sealed_len by MAX_SEALED_LEN, so the body fits in u16.
    let body_len = (16 + sealed_len) as u16;
    aad[4..6].copy_from_slice(&body_len.to_be_bytes());
    aad[6..14].copy_from_slice(&channel.to_be_bytes());
    aad[14..22].copy_from_slice(&nonce.to_be_bytes());
    aad
}

impl SecureChannel {
    /// Splits a finished handshake into the two directions' keys.
    pub(crate) fn from_handshake(
        hs: Hs,
        channel: u64,
        now: Instant,
    ) -> Result<SecureChannel, HandshakeError> {
        let initiator = hs.is_initiator();
        let (send, recv, handshake_hash) = noise::split_keys(hs, |key| Aes256Gcm::new(key.into()))?;
        Ok(SecureChannel {
            channel,
            send,
            recv,
            handshake_hash,
            next_send: 0,
            window: ReplayWindow::new(),
            established: now,
            // The reply proves the responder to the initiator; the responder
            // waits for a record.
            peer_confirmed: initiator,
        })
    }

    /// The channel number every record carries.
    pub fn channel(&self) -> u64 {
        self.channel
    }

    /// The Noise handshake hash: the same on both ends, unique to this handshake.
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.handshake_hash
    }

    /// When the handshake completed on this side.
    pub fn established(&self) -> Instant {
        self.established
    }

    /// The nonce the next sealed record will carry.
    pub fn next_nonce(&self) -> u64 {
        self.next_send
    }

    /// Whether the other end has proven it holds the keys: always for an
    /// initiator, and for a responder once a record from the initiator opened.
    pub fn peer_confirmed(&self) -> bool {
        self.peer_confirmed
    }

    /// Whether a new handshake is due: the channel is [`REKEY_AFTER_TIME`]
    /// old or has used most of its nonces.
    pub fn needs_rekey(&self, now: Instant) -> bool {
        now - self.established >= REKEY_AFTER_TIME
            || self.next_send >= REKEY_AFTER_MESSAGES - REKEY_AFTER_MESSAGES / 16
    }

    /// Seals `plaintext` (one encoded plain message) under the next nonce and
    /// writes the whole `Sealed` message, header included, into `out`.
    /// Returns its length: [`SEALED_OVERHEAD`] + `plaintext.len()`.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, SealError> {
        if plaintext.len() > MAX_PLAIN_MESSAGE_LEN {
            return Err(SealError::PlaintextTooLong {
                len: plaintext.len(),
            });
        }
        let needed = SEALED_OVERHEAD + plaintext.len();
        let Some(out) = out.get_mut(..needed) else {
            return Err(SealError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        };
        let nonce = self.next_send;
        if nonce >= REKEY_AFTER_MESSAGES {
            return Err(SealError::NoncesExhausted);
        }
        let aad = record_aad(self.channel, nonce, plaintext.len() + TAG_LEN);
        let (head, rest) = out.split_at_mut(AAD_LEN);
        head.copy_from_slice(&aad);
        let (body, tag_out) = rest.split_at_mut(plaintext.len());
        body.copy_from_slice(plaintext);
        let tag = self
            .send
            .encrypt_in_place_detached(&record_nonce(nonce), &aad, body)
            // Only for inputs of gigabytes, which the length check excludes.
            .map_err(|_| SealError::PlaintextTooLong {
                len: plaintext.len(),
            })?;
        tag_out.copy_from_slice(&tag);
        self.next_send = nonce + 1;
        Ok(needed)
    }

    /// Opens a received record into `out` and returns the plaintext length.
    /// The replay window moves only if the record authenticates.
    pub fn open(&mut self, record: &Sealed<'_>, out: &mut [u8]) -> Result<usize, OpenError> {
        if record.channel != self.channel {
            return Err(OpenError::WrongChannel {
                channel: record.channel,
            });
        }
        let sealed_len = record.sealed.len();
        if !(TAG_LEN..=MAX_SEALED_LEN).contains(&sealed_len) {
            return Err(OpenError::BadLength(sealed_len));
        }
        if record.nonce >= REKEY_AFTER_MESSAGES {
            return Err(OpenError::NonceOutOfRange);
        }
        self.window.check(record.nonce)?;
        let (ciphertext, tag) = record.sealed.split_at(sealed_len - TAG_LEN);
        let Some(body) = out.get_mut(..ciphertext.len()) else {
            return Err(OpenError::BufferTooSmall {
                needed: ciphertext.len(),
                available: out.len(),
            });
        };
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| OpenError::Forged)?;
        body.copy_from_slice(ciphertext);
        let aad = record_aad(self.channel, record.nonce, sealed_len);
        self.recv
            .decrypt_in_place_detached(&record_nonce(record.nonce), &aad, body, &tag.into())
            .map_err(|_| OpenError::Forged)?;
        self.window.update(record.nonce);
        self.peer_confirmed = true;
        Ok(ciphertext.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::REPLAY_WINDOW;
    use crate::wire::Message;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use std::vec::Vec;

    const T0: Instant = Instant::from_micros(1_000_000);
    const CHANNEL: u64 = 0x0102_0304_0506_0708;

    struct Pair {
        term: SecureChannel,
        server: SecureChannel,
        /// Every handshake byte on the wire, for the determinism test.
        wire: Vec<u8>,
    }

    fn keys(seed: u64) -> (ChaCha20Rng, StaticKeypair, StaticKeypair) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let server = StaticKeypair::generate(&mut rng);
        let term = StaticKeypair::generate(&mut rng);
        (rng, server, term)
    }

    fn handshake(seed: u64) -> Pair {
        let (mut rng, server_kp, term_kp) = keys(seed);
        let mut m1 = [0u8; 512];
        let (mut init, n1) = Initiator::start(
            &mut rng,
            T0,
            &term_kp,
            &server_kp.public_key(),
            b"register",
            &mut m1,
        )
        .unwrap();
        assert_eq!(n1, INIT_OVERHEAD + 8);
        let mut p = [0u8; 512];
        let init_msg = HandshakeInit { noise: &m1[..n1] };
        let (resp, pn) = Responder::accept(&mut rng, T0, &server_kp, &init_msg, &mut p).unwrap();
        assert_eq!(&p[..pn], b"register");
        assert_eq!(resp.initiator_key(), term_kp.public_key());
        let mut m2 = [0u8; 512];
        let (server, n2) = resp.reply(CHANNEL, b"ack", &mut m2).unwrap();
        assert_eq!(n2, REPLY_OVERHEAD + 3);
        let reply = HandshakeReply {
            channel: CHANNEL,
            noise: &m2[..n2],
        };
        let (term, pn) = init.finish(T0, &reply, &mut p).unwrap();
        assert_eq!(&p[..pn], b"ack");
        let mut wire = m1[..n1].to_vec();
        wire.extend_from_slice(&m2[..n2]);
        Pair { term, server, wire }
    }

    /// Seals `text` and returns the whole encoded `Sealed` message.
    fn seal(ch: &mut SecureChannel, text: &[u8]) -> Vec<u8> {
        let mut out = [0u8; 256];
        let n = ch.seal(text, &mut out).unwrap();
        out[..n].to_vec()
    }

    /// Decodes `bytes` and opens them, as a driver would.
    fn open(ch: &mut SecureChannel, bytes: &[u8]) -> Result<Vec<u8>, OpenError> {
        let Ok(Message::Sealed(record)) = Message::decode(bytes) else {
            // Not decodable as a record: refused before any cryptography.
            return Err(OpenError::BadLength(bytes.len()));
        };
        let mut out = [0u8; 256];
        let n = ch.open(&record, &mut out)?;
        Ok(out[..n].to_vec())
    }

    #[test]
    fn handshake_gives_both_ends_the_same_hash_and_crossed_keys() {
        let mut pair = handshake(1);
        assert_eq!(pair.term.handshake_hash(), pair.server.handshake_hash());
        assert_eq!(pair.term.channel(), CHANNEL);
        let to_server = seal(&mut pair.term, b"hello server");
        assert_eq!(open(&mut pair.server, &to_server).unwrap(), b"hello server");
        let to_term = seal(&mut pair.server, b"hello terminal");
        assert_eq!(open(&mut pair.term, &to_term).unwrap(), b"hello terminal");
        // A record does not open in the direction it was sealed for.
        let again = seal(&mut pair.term, b"x");
        let mut loopback = handshake(1).term;
        assert_eq!(open(&mut loopback, &again), Err(OpenError::Forged));
    }

    #[test]
    fn sealed_output_is_a_wire_sealed_message_with_the_next_nonce() {
        let mut pair = handshake(2);
        for expected_nonce in 0..3 {
            let bytes = seal(&mut pair.term, b"payload");
            assert_eq!(bytes.len(), SEALED_OVERHEAD + 7);
            let Ok(Message::Sealed(record)) = Message::decode(&bytes) else {
                panic!("not a sealed message");
            };
            assert_eq!(record.channel, CHANNEL);
            assert_eq!(record.nonce, expected_nonce);
            assert_eq!(record.sealed.len(), 7 + TAG_LEN);
        }
        assert_eq!(pair.term.next_nonce(), 3);
    }

    #[test]
    fn responder_is_confirmed_only_after_a_record_from_the_initiator() {
        let mut pair = handshake(3);
        assert!(pair.term.peer_confirmed());
        assert!(!pair.server.peer_confirmed());
        let r = seal(&mut pair.term, b"first");
        open(&mut pair.server, &r).unwrap();
        assert!(pair.server.peer_confirmed());
    }

    #[test]
    fn replayed_record_is_refused() {
        let mut pair = handshake(4);
        let r = seal(&mut pair.term, b"once");
        assert!(open(&mut pair.server, &r).is_ok());
        assert_eq!(open(&mut pair.server, &r), Err(OpenError::Replayed));
    }

    #[test]
    fn reordered_records_within_the_window_are_accepted_once() {
        let mut pair = handshake(5);
        let records: Vec<Vec<u8>> = (0..50u8).map(|i| seal(&mut pair.term, &[i])).collect();
        // Deliver in a scrambled order, each twice.
        let order: Vec<usize> = (0..50).map(|i| (i * 17 + 3) % 50).collect();
        for &i in &order {
            assert_eq!(open(&mut pair.server, &records[i]).unwrap(), [i as u8]);
            assert_eq!(
                open(&mut pair.server, &records[i]),
                Err(OpenError::Replayed)
            );
        }
    }

    #[test]
    fn record_older_than_the_window_is_refused() {
        let mut pair = handshake(6);
        let old = seal(&mut pair.term, b"old");
        for _ in 0..REPLAY_WINDOW - 1 {
            pair.term.seal(b"", &mut [0u8; 64]).unwrap();
        }
        let newest = seal(&mut pair.term, b"new");
        open(&mut pair.server, &newest).unwrap();
        assert_eq!(open(&mut pair.server, &old), Err(OpenError::TooOld));
    }

    #[test]
    fn bit_flip_anywhere_in_a_sealed_record_is_refused() {
        let mut pair = handshake(7);
        let record = seal(&mut pair.term, b"a 24-byte control record");
        for pos in 0..record.len() {
            for bit in 0..8 {
                let mut bad = record.clone();
                bad[pos] ^= 1 << bit;
                assert!(
                    open(&mut pair.server, &bad).is_err(),
                    "flip of bit {bit} of byte {pos} accepted"
                );
            }
        }
        // The refusals left the window untouched: the original still opens.
        assert!(open(&mut pair.server, &record).is_ok());
    }

    #[test]
    fn record_moved_to_another_channel_is_refused() {
        let mut pair = handshake(8);
        let mut record = seal(&mut pair.term, b"for channel A");
        record[6..14].copy_from_slice(&(CHANNEL + 1).to_be_bytes());
        assert_eq!(
            open(&mut pair.server, &record),
            Err(OpenError::WrongChannel {
                channel: CHANNEL + 1
            })
        );
        // Even a receiver holding the same keys under the other number
        // refuses it: the channel number is authenticated.
        pair.server.channel = CHANNEL + 1;
        assert_eq!(open(&mut pair.server, &record), Err(OpenError::Forged));
    }

    #[test]
    fn forged_tag_is_refused() {
        let mut pair = handshake(9);
        let mut record = seal(&mut pair.term, b"genuine");
        let len = record.len();
        record[len - TAG_LEN..].copy_from_slice(&[0x42; TAG_LEN]);
        assert_eq!(open(&mut pair.server, &record), Err(OpenError::Forged));
    }

    #[test]
    fn record_under_another_channels_key_is_refused() {
        let mut a = handshake(10);
        let mut b = handshake(11);
        let from_b = seal(&mut b.term, b"from another channel");
        assert_eq!(open(&mut a.server, &from_b), Err(OpenError::Forged));
    }

    #[test]
    fn same_seed_gives_byte_identical_handshake_messages() {
        let (first, second, other) = (handshake(12), handshake(12), handshake(13));
        assert_eq!(first.wire, second.wire);
        assert_eq!(first.term.handshake_hash(), second.term.handshake_hash());
        assert_ne!(first.wire, other.wire);
    }

    #[test]
    fn initiator_with_the_wrong_server_key_is_refused() {
        let (mut rng, server_kp, term_kp) = keys(14);
        let impostor = StaticKeypair::generate(&mut rng);
        let mut m1 = [0u8; 256];
        let (_, n1) =
            Initiator::start(&mut rng, T0, &term_kp, &impostor.public_key(), b"", &mut m1).unwrap();
        let init = HandshakeInit { noise: &m1[..n1] };
        let r = Responder::accept(&mut rng, T0, &server_kp, &init, &mut [0u8; 64]);
        assert_eq!(r.unwrap_err(), HandshakeError::AuthenticationFailed);
    }

    #[test]
    fn bit_flip_in_a_handshake_init_is_refused() {
        let (mut rng, server_kp, term_kp) = keys(15);
        let mut m1 = [0u8; 256];
        let (_, n1) = Initiator::start(
            &mut rng,
            T0,
            &term_kp,
            &server_kp.public_key(),
            b"register",
            &mut m1,
        )
        .unwrap();
        for pos in 0..n1 {
            let mut bad = m1;
            bad[pos] ^= 0x01;
            let init = HandshakeInit { noise: &bad[..n1] };
            let r = Responder::accept(&mut rng, T0, &server_kp, &init, &mut [0u8; 64]);
            assert!(r.is_err(), "flip in byte {pos} accepted");
        }
    }

    #[test]
    fn forged_reply_leaves_the_initiator_able_to_finish() {
        let (mut rng, server_kp, term_kp) = keys(16);
        let mut m1 = [0u8; 256];
        let (mut init, n1) = Initiator::start(
            &mut rng,
            T0,
            &term_kp,
            &server_kp.public_key(),
            b"",
            &mut m1,
        )
        .unwrap();
        let msg = HandshakeInit { noise: &m1[..n1] };
        let (resp, _) = Responder::accept(&mut rng, T0, &server_kp, &msg, &mut [0u8; 8]).unwrap();
        let mut m2 = [0u8; 256];
        let (_, n2) = resp.reply(CHANNEL, b"", &mut m2).unwrap();
        let mut forged = m2;
        forged[n2 - 1] ^= 0x80;
        let p = &mut [0u8; 8];
        let bad = HandshakeReply {
            channel: CHANNEL,
            noise: &forged[..n2],
        };
        assert_eq!(
            init.finish(T0, &bad, p).unwrap_err(),
            HandshakeError::AuthenticationFailed
        );
        let good = HandshakeReply {
            channel: CHANNEL,
            noise: &m2[..n2],
        };
        assert!(init.finish(T0, &good, p).is_ok());
        // Spent: the same reply cannot make a second channel with the same keys.
        assert_eq!(
            init.finish(T0, &good, p).unwrap_err(),
            HandshakeError::AlreadyFinished
        );
    }

    #[test]
    fn handshake_expires_after_the_timeout() {
        let (mut rng, server_kp, term_kp) = keys(17);
        let mut m1 = [0u8; 256];
        let (mut init, n1) = Initiator::start(
            &mut rng,
            T0,
            &term_kp,
            &server_kp.public_key(),
            b"",
            &mut m1,
        )
        .unwrap();
        let late = T0 + HANDSHAKE_TIMEOUT;
        assert!(!init.is_expired(late.saturating_sub(Duration::from_micros(1))));
        assert!(init.is_expired(late));
        assert_eq!(init.deadline(), late);
        let msg = HandshakeInit { noise: &m1[..n1] };
        let (resp, _) = Responder::accept(&mut rng, T0, &server_kp, &msg, &mut [0u8; 8]).unwrap();
        let mut m2 = [0u8; 256];
        let (_, n2) = resp.reply(CHANNEL, b"", &mut m2).unwrap();
        let reply = HandshakeReply {
            channel: CHANNEL,
            noise: &m2[..n2],
        };
        let r = init.finish(late, &reply, &mut [0u8; 8]);
        assert_eq!(r.unwrap_err(), HandshakeError::Expired);
    }

    #[test]
    fn oversized_and_truncated_inputs_are_refused_without_panicking() {
        let (mut rng, server_kp, term_kp) = keys(18);
        let big = std::vec![0x55u8; 70_000];
        let mut out = std::vec![0u8; 80_000];
        let r = Initiator::start(
            &mut rng,
            T0,
            &term_kp,
            &server_kp.public_key(),
            &big,
            &mut out,
        );
        assert!(matches!(r, Err(HandshakeError::PayloadTooLong { .. })));
        let huge = HandshakeInit { noise: &big };
        let r = Responder::accept(&mut rng, T0, &server_kp, &huge, &mut out);
        assert!(matches!(r, Err(HandshakeError::MessageTooLong { .. })));
        let short = HandshakeInit {
            noise: &big[..NOISE_IK_OVERHEAD - 1],
        };
        let r = Responder::accept(&mut rng, T0, &server_kp, &short, &mut out);
        assert!(matches!(r, Err(HandshakeError::MessageTooShort { .. })));
        let r = Initiator::start(
            &mut rng,
            T0,
            &term_kp,
            &server_kp.public_key(),
            b"abc",
            &mut [0u8; 10],
        );
        assert!(matches!(r, Err(HandshakeError::BufferTooSmall { .. })));
        let mut pair = handshake(18);
        let r = pair.term.seal(&big, &mut out);
        assert!(matches!(r, Err(SealError::PlaintextTooLong { .. })));
        let r = pair.term.seal(b"abc", &mut [0u8; SEALED_OVERHEAD + 2]);
        assert!(matches!(r, Err(SealError::BufferTooSmall { .. })));
        let long = Sealed {
            channel: CHANNEL,
            nonce: 0,
            sealed: &big,
        };
        assert_eq!(
            pair.server.open(&long, &mut out),
            Err(OpenError::BadLength(big.len()))
        );
        let tiny = Sealed {
            channel: CHANNEL,
            nonce: 0,
            sealed: &big[..TAG_LEN - 1],
        };
        assert!(matches!(
            pair.server.open(&tiny, &mut out),
            Err(OpenError::BadLength(_))
        ));
    }

    #[test]
    fn protocol_name_is_the_one_clatter_runs() {
        assert_eq!(Hs::build_name(&noise_ik()).as_str(), CONTROL_PROTOCOL_NAME);
    }

    #[test]
    fn low_order_keys_are_refused() {
        let (mut rng, server_kp, term_kp) = keys(19);
        let r = Initiator::start(
            &mut rng,
            T0,
            &term_kp,
            &PublicKey([0; 32]),
            b"",
            &mut [0u8; 256],
        );
        assert_eq!(r.unwrap_err(), HandshakeError::WeakKey);
        // An initiator whose ephemeral key is replaced by a low-order point.
        let mut m1 = [0u8; 256];
        let (_, n1) = Initiator::start(
            &mut rng,
            T0,
            &term_kp,
            &server_kp.public_key(),
            b"",
            &mut m1,
        )
        .unwrap();
        m1[..32].copy_from_slice(&[0; 32]);
        let init = HandshakeInit { noise: &m1[..n1] };
        let r = Responder::accept(&mut rng, T0, &server_kp, &init, &mut [0u8; 8]);
        assert_eq!(r.unwrap_err(), HandshakeError::WeakKey);
    }

    #[test]
    fn sender_refuses_to_pass_the_nonce_limit_and_asks_for_rekey() {
        let mut pair = handshake(20);
        assert!(!pair.term.needs_rekey(T0));
        assert!(pair.term.needs_rekey(T0 + REKEY_AFTER_TIME));
        pair.term.next_send = REKEY_AFTER_MESSAGES - 1;
        assert!(pair.term.needs_rekey(T0));
        assert!(pair.term.seal(b"last", &mut [0u8; 64]).is_ok());
        assert_eq!(
            pair.term.seal(b"one too many", &mut [0u8; 64]),
            Err(SealError::NoncesExhausted)
        );
        let forged = Sealed {
            channel: CHANNEL,
            nonce: REKEY_AFTER_MESSAGES,
            sealed: &[0u8; TAG_LEN],
        };
        assert_eq!(
            pair.server.open(&forged, &mut [0u8; 8]),
            Err(OpenError::NonceOutOfRange)
        );
    }
}
