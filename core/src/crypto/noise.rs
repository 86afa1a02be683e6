//! What the IK channel and the KKpsk0 peer handshake share: the key pair
//! type, the clatter handshake type with its guards, and the typed errors.
//!
//! clatter panics on a Noise message longer than 65535 bytes and on a read
//! or write in the wrong state; every call here checks lengths and state
//! first, so no input can reach those panics.

use core::fmt;

use clatter::bytearray::SensitiveByteArray;
use clatter::crypto::cipher::AesGcm;
use clatter::crypto::dh::X25519;
use clatter::crypto::hash::Sha256;
use clatter::error::{CipherError, HandshakeError as ClatterError};
use clatter::traits::{Dh, Handshaker};
use clatter::{KeyPair, NqHandshakeCore};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

use core::time::Duration;

use crate::time::Instant;
use crate::wire::{PublicKey, MAX_PLAIN_MESSAGE_LEN, PUBLIC_KEY_LEN};

/// Longest payload a handshake message carries: one plain tryst message.
pub const MAX_HANDSHAKE_PAYLOAD: usize = MAX_PLAIN_MESSAGE_LEN;

/// How long an initiator waits for the reply before it gives up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Length of an X25519 key in a Noise message.
pub(crate) const DH_LEN: usize = 32;

/// A clatter key pair: public key and zeroize-on-drop secret.
pub(crate) type Keypair = KeyPair<[u8; 32], SensitiveByteArray<[u8; 32]>>;

/// The handshake state: 25519, AES-GCM, SHA-256, inline (no heap).
pub(crate) type Hs = NqHandshakeCore<X25519, AesGcm, Sha256, NoRng>;

/// clatter builds its RNG with `Default` and cannot take an instance. tryst
/// always passes the ephemeral key in (made from the caller's RNG), which is
/// clatter's only use of its RNG, so this one is never called.
#[derive(Default, Clone)]
pub(crate) struct NoRng;

impl RngCore for NoRng {
    fn next_u32(&mut self) -> u32 {
        unreachable!("tryst passes every ephemeral key to clatter")
    }
    fn next_u64(&mut self) -> u64 {
        unreachable!("tryst passes every ephemeral key to clatter")
    }
    fn fill_bytes(&mut self, _: &mut [u8]) {
        unreachable!("tryst passes every ephemeral key to clatter")
    }
    fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), rand_core::Error> {
        unreachable!("tryst passes every ephemeral key to clatter")
    }
}

impl CryptoRng for NoRng {}

/// Why a handshake step failed. After any error the step's state is gone
/// (or, for an initiator reading a reply, left as it was before the call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The payload is longer than [`MAX_HANDSHAKE_PAYLOAD`].
    PayloadTooLong {
        /// Bytes offered.
        len: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// The output buffer cannot hold the message or payload.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// The Noise message is shorter than this step's fixed part.
    MessageTooShort {
        /// Bytes received.
        len: usize,
        /// Least acceptable length.
        min: usize,
    },
    /// The Noise message is longer than the fixed part plus the longest payload.
    MessageTooLong {
        /// Bytes received.
        len: usize,
        /// Greatest acceptable length.
        max: usize,
    },
    /// A public key (static or ephemeral) is a point of small order, which
    /// would make a Diffie-Hellman result predictable.
    WeakKey,
    /// The message did not decrypt: wrong static key, wrong pre-shared key,
    /// wrong prologue (session) or altered bytes.
    AuthenticationFailed,
    /// The initiator's [`HANDSHAKE_TIMEOUT`] passed before the reply came.
    Expired,
    /// The initiator already finished; a second reply is ignored.
    AlreadyFinished,
    /// The Noise library reported an error tryst does not expect (a bug).
    Internal,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::PayloadTooLong { len, max } => {
                write!(f, "handshake payload of {len} bytes exceeds {max}")
            }
            HandshakeError::BufferTooSmall { needed, available } => {
                write!(f, "buffer of {available} bytes cannot hold {needed}")
            }
            HandshakeError::MessageTooShort { len, min } => {
                write!(f, "handshake message of {len} bytes is shorter than {min}")
            }
            HandshakeError::MessageTooLong { len, max } => {
                write!(f, "handshake message of {len} bytes is longer than {max}")
            }
            HandshakeError::WeakKey => f.write_str("public key of small order"),
            HandshakeError::AuthenticationFailed => f.write_str("handshake authentication failed"),
            HandshakeError::Expired => f.write_str("handshake timed out"),
            HandshakeError::AlreadyFinished => f.write_str("handshake already finished"),
            HandshakeError::Internal => f.write_str("internal Noise error"),
        }
    }
}

impl core::error::Error for HandshakeError {}

impl From<ClatterError> for HandshakeError {
    fn from(e: ClatterError) -> Self {
        match e {
            ClatterError::Cipher(CipherError::Decrypt) => HandshakeError::AuthenticationFailed,
            _ => HandshakeError::Internal,
        }
    }
}

/// A long-term X25519 key pair: the identity of a terminal or a server.
/// The secret is wiped from memory when the value (or any clone) is dropped,
/// and `Debug` shows only the public key.
#[derive(Clone)]
pub struct StaticKeypair(pub(crate) Keypair);

impl StaticKeypair {
    /// The key pair of a 32-byte X25519 secret (as stored in a key file).
    pub fn from_secret(mut secret: [u8; 32]) -> Self {
        let sk = SensitiveByteArray::new(secret);
        secret.zeroize();
        StaticKeypair(KeyPair::new(X25519::pubkey(&sk), sk))
    }

    /// A fresh key pair from the injected random generator.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        StaticKeypair(fresh_keypair(rng))
    }

    /// The public key: the identity others know this holder by.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.public)
    }

    /// The secret, for writing a key file; never log it.
    pub fn secret_bytes(&self) -> &[u8; 32] {
        &self.0.secret
    }
}

impl fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("public", &self.public_key())
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A key pair from 32 random bytes (X25519 clamps them when used).
pub(crate) fn fresh_keypair<R: RngCore + CryptoRng>(rng: &mut R) -> Keypair {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let sk = SensitiveByteArray::new(secret);
    secret.zeroize();
    KeyPair::new(X25519::pubkey(&sk), sk)
}

/// The X25519 points of small order, as libsodium lists them: 0, 1, the two
/// points of order 8, p-1, p and p+1. The top bit is ignored (X25519 masks it).
const LOW_ORDER: [[u8; 32]; 7] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    p_plus(0xec),
    p_plus(0xed),
    p_plus(0xee),
];

/// Little-endian 2^255 - 19 - 0xed + `low`: p-1, p and p+1 for 0xec..=0xee.
const fn p_plus(low: u8) -> [u8; 32] {
    let mut k = [0xff; 32];
    k[0] = low;
    k[31] = 0x7f;
    k
}

/// Whether an X25519 public key is a point of small order: a Diffie-Hellman
/// with it gives a result anyone can predict, so tryst refuses such keys.
pub fn is_low_order(key: &[u8; PUBLIC_KEY_LEN]) -> bool {
    LOW_ORDER.iter().any(|bad| {
        let head_equal = key[..31] == bad[..31];
        head_equal && (key[31] & 0x7f) == bad[31]
    })
}

/// A finished handshake's transport keys, oriented for this side: `make`
/// turns each 32-byte key into a cipher; returns (send, receive,
/// handshake hash). One place for the Noise `Split()`, so the control
/// channels and the peer path cannot orient their keys differently.
pub(crate) fn split_keys<T>(
    hs: Hs,
    make: impl Fn(&[u8; 32]) -> T,
) -> Result<(T, T, [u8; 32]), HandshakeError> {
    let initiator = hs.is_initiator();
    let transport = hs.finalize()?;
    let mut handshake_hash = [0u8; 32];
    handshake_hash.copy_from_slice(&transport.get_handshake_hash()[..]);
    let ciphers = transport.take();
    let (i2r, _) = ciphers.initiator_to_responder.take();
    let (r2i, _) = ciphers.responder_to_initiator.take();
    let (i2r, r2i) = (make(&i2r), make(&r2i));
    let (send, recv) = if initiator { (i2r, r2i) } else { (r2i, i2r) };
    Ok((send, recv, handshake_hash))
}

/// Writes the next handshake message after checking every length clatter
/// would otherwise panic on.
pub(crate) fn write_message(
    hs: &mut Hs,
    payload: &[u8],
    out: &mut [u8],
) -> Result<usize, HandshakeError> {
    if payload.len() > MAX_HANDSHAKE_PAYLOAD {
        return Err(HandshakeError::PayloadTooLong {
            len: payload.len(),
            max: MAX_HANDSHAKE_PAYLOAD,
        });
    }
    if !hs.is_write_turn() {
        return Err(HandshakeError::Internal);
    }
    let overhead = hs.get_next_message_overhead()?;
    let needed = overhead + payload.len();
    if out.len() < needed {
        return Err(HandshakeError::BufferTooSmall {
            needed,
            available: out.len(),
        });
    }
    Ok(hs.write_message(payload, out)?)
}

/// Reads the next handshake message after checking lengths, state and the
/// sender's ephemeral key (every tryst handshake message starts with it).
pub(crate) fn read_message(
    hs: &mut Hs,
    message: &[u8],
    payload_out: &mut [u8],
) -> Result<usize, HandshakeError> {
    if hs.is_write_turn() || hs.is_finished() {
        return Err(HandshakeError::Internal);
    }
    let overhead = hs.get_next_message_overhead()?;
    let max = overhead + MAX_HANDSHAKE_PAYLOAD;
    if message.len() < overhead {
        return Err(HandshakeError::MessageTooShort {
            len: message.len(),
            min: overhead,
        });
    }
    if message.len() > max {
        return Err(HandshakeError::MessageTooLong {
            len: message.len(),
            max,
        });
    }
    let payload_len = message.len() - overhead;
    if payload_out.len() < payload_len {
        return Err(HandshakeError::BufferTooSmall {
            needed: payload_len,
            available: payload_out.len(),
        });
    }
    let ephemeral: Option<&[u8; DH_LEN]> = message.first_chunk();
    if ephemeral.is_none_or(is_low_order) {
        return Err(HandshakeError::WeakKey);
    }
    Ok(hs.read_message(message, payload_out)?)
}

/// The half of an initiator that both handshakes share: the state after the
/// first message, its start time, and the rule that a reply is tried on a
/// copy, so a forged reply cannot destroy the handshake.
pub(crate) struct PendingInitiator {
    hs: Hs,
    started: Instant,
    finished: bool,
}

impl PendingInitiator {
    /// Writes the first message of `hs` (fresh, initiator side).
    pub(crate) fn start(
        mut hs: Hs,
        now: Instant,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(Self, usize), HandshakeError> {
        let n = write_message(&mut hs, payload, out)?;
        Ok((
            PendingInitiator {
                hs,
                started: now,
                finished: false,
            },
            n,
        ))
    }

    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.started + HANDSHAKE_TIMEOUT
    }

    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        now >= self.deadline()
    }

    /// Reads the reply unless [`HANDSHAKE_TIMEOUT`] passed; on success the
    /// handshake is spent and `split` turns the finished state into what
    /// the caller keeps (a channel or a packet cipher).
    pub(crate) fn finish<T>(
        &mut self,
        now: Instant,
        message: &[u8],
        payload_out: &mut [u8],
        split: impl FnOnce(Hs) -> Result<T, HandshakeError>,
    ) -> Result<(T, usize), HandshakeError> {
        if self.finished {
            return Err(HandshakeError::AlreadyFinished);
        }
        if self.is_expired(now) {
            return Err(HandshakeError::Expired);
        }
        self.complete(message, payload_out, split)
    }

    /// Reads the reply like [`Self::finish`] but with no expiry check (the
    /// caller bounds the handshake itself). A reply that fails leaves this
    /// state as it was; a second good reply gives
    /// [`HandshakeError::AlreadyFinished`].
    pub(crate) fn complete<T>(
        &mut self,
        message: &[u8],
        payload_out: &mut [u8],
        split: impl FnOnce(Hs) -> Result<T, HandshakeError>,
    ) -> Result<(T, usize), HandshakeError> {
        if self.finished {
            return Err(HandshakeError::AlreadyFinished);
        }
        // clatter poisons a handshake on a failed read: try on a copy.
        let mut hs = self.hs.clone();
        let n = read_message(&mut hs, message, payload_out)?;
        let done = split(hs)?;
        self.finished = true;
        Ok((done, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_low_order_point_gives_an_all_zero_shared_secret() {
        let secret = SensitiveByteArray::new([0x5a; 32]);
        for point in LOW_ORDER {
            for high_bit in [0, 0x80] {
                let mut p = point;
                p[31] |= high_bit;
                assert!(is_low_order(&p));
                let shared = X25519::dh(&secret, &p).map(|s| *s);
                assert!(matches!(shared, Ok(s) if s == [0; 32]), "{p:02x?}");
            }
        }
    }

    #[test]
    fn an_ordinary_public_key_is_not_low_order() {
        let kp = StaticKeypair::from_secret([7; 32]);
        assert!(!is_low_order(&kp.public_key().0));
    }

    #[test]
    fn keypair_debug_never_shows_the_secret() {
        let kp = StaticKeypair::from_secret([0xab; 32]);
        let shown = std::format!("{kp:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains("abab"));
    }

    #[test]
    fn keypair_from_its_own_secret_has_the_same_public_key() {
        let kp = StaticKeypair::from_secret([3; 32]);
        let again = StaticKeypair::from_secret(*kp.secret_bytes());
        assert_eq!(kp.public_key(), again.public_key());
    }
}
