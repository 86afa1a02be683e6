//! The packet cipher of the peer path: AES-256-GCM per data packet, in
//! place in the caller's buffer, over the two keys of the KKpsk0 split.
//!
//! - Nonce: 4 zero bytes, then the packet number (u64 big-endian), as Noise
//!   builds nonces. The sender numbers packets 0, 1, 2, ... and the cipher
//!   refuses to seal a number twice, so a nonce is never reused.
//! - Associated data: the packet's first [`DATA_HEADER_LEN`] bytes (header,
//!   channel, packet number), so none of them can be altered.
//! - Replay: a WireGuard-style sliding window ([`ReplayWindow`], width
//!   [`REPLAY_WINDOW`]) is checked before decryption and moves only after
//!   the tag verified, so a forged packet never moves it.
//! - Key limit: at most [`MAX_PACKETS_PER_KEY`] packets are sealed under one
//!   key (the AES-GCM confidentiality limit of RFC 9001 §6.6); past it
//!   [`SealError::KeyExhausted`] and the session ends. A receiver that saw
//!   [`MAX_FORGED_PER_KEY`] packets fail authentication refuses every later
//!   one (the integrity limit, far below RFC 9001's 2^52). Key update is
//!   later work: a session is bounded in time anyway.
//! - Backend: the `aes-gcm` crate (pure Rust, no allocator, any target), or
//!   with the `ring` feature *ring*'s AES-256-GCM (assembly with AES-NI,
//!   VAES and carry-less multiply: ~3.8x faster per core on this box,
//!   `tryst-bench aead`). Same algorithm, same bytes on the wire: the two
//!   interoperate (`ring_and_aes_gcm_seal_the_same_bytes`). The std driver
//!   turns `ring` on; firmware keeps the portable default.

use core::fmt;

use super::packet::{data_header, DataHeader, PacketError, DATA_HEADER_LEN, MAX_DATAGRAM_LEN};
#[cfg(doc)]
use crate::crypto::REPLAY_WINDOW;
use crate::crypto::{ReplayError, ReplayWindow};
use crate::wire::TAG_LEN;

/// Most packets sealed under one key: 2^23, the AES-GCM confidentiality
/// limit of RFC 9001 §6.6 for full-size packets.
pub const MAX_PACKETS_PER_KEY: u64 = 1 << 23;
/// Most packets that may fail authentication under one key before the
/// receiver refuses everything (integrity limit; RFC 9001 allows 2^52).
pub const MAX_FORGED_PER_KEY: u64 = 1 << 36;
/// Longest plaintext of one data packet.
pub const MAX_PLAINTEXT_LEN: usize = MAX_DATAGRAM_LEN - DATA_HEADER_LEN - TAG_LEN;

/// Why a packet could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// [`MAX_PACKETS_PER_KEY`] packets were sealed: the key is spent.
    KeyExhausted,
    /// The packet number is not above every number sealed before.
    PacketNumberReused {
        /// The number offered.
        packet_number: u64,
    },
    /// The payload is longer than [`MAX_PLAINTEXT_LEN`].
    PayloadTooLong {
        /// Bytes offered.
        len: usize,
    },
    /// The buffer cannot hold header, payload and tag.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealError::KeyExhausted => f.write_str("packet key exhausted"),
            SealError::PacketNumberReused { packet_number } => {
                write!(f, "packet number {packet_number} already used")
            }
            SealError::PayloadTooLong { len } => write!(f, "payload of {len} bytes too long"),
            SealError::BufferTooSmall { needed, available } => {
                write!(f, "buffer of {available} bytes cannot hold {needed}")
            }
        }
    }
}

impl core::error::Error for SealError {}

/// Why a received data packet was refused. The cipher's state does not
/// change on refusal, except the count of forged packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Not a well-formed data packet.
    Malformed(PacketError),
    /// The packet names another channel.
    WrongChannel {
        /// The channel it names.
        channel: u64,
    },
    /// The packet number is [`MAX_PACKETS_PER_KEY`] or more, which no sender uses.
    PacketNumberOutOfRange,
    /// This packet number was already accepted.
    Replayed,
    /// The packet number lies [`REPLAY_WINDOW`] or more behind the newest.
    TooOld,
    /// The tag did not verify: forged, altered, or another key.
    Forged,
    /// [`MAX_FORGED_PER_KEY`] packets failed already: the key is retired.
    IntegrityLimit,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Malformed(e) => write!(f, "malformed data packet: {e}"),
            OpenError::WrongChannel { channel } => write!(f, "packet for channel {channel}"),
            OpenError::PacketNumberOutOfRange => f.write_str("packet number out of range"),
            OpenError::Replayed => f.write_str("replayed packet"),
            OpenError::TooOld => f.write_str("packet older than the replay window"),
            OpenError::Forged => f.write_str("packet failed authentication"),
            OpenError::IntegrityLimit => f.write_str("too many forged packets under this key"),
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

/// The nonce of packet `pn`: 4 zero bytes, then `pn` big-endian.
fn nonce(pn: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&pn.to_be_bytes());
    n
}

/// One direction's AES-256-GCM key, on the backend the build chose.
pub(crate) struct PacketKey(backend::Key);

impl PacketKey {
    /// The key from its 32 bytes.
    pub(crate) fn new(key: &[u8; 32]) -> PacketKey {
        PacketKey(backend::Key::new(key))
    }

    /// Encrypts `body` in place; the tag.
    fn seal(&self, pn: u64, aad: &[u8], body: &mut [u8]) -> Option<[u8; TAG_LEN]> {
        self.0.seal(&nonce(pn), aad, body)
    }

    /// Decrypts `body_and_tag[..len - TAG_LEN]` in place if the tag verifies.
    fn open(&self, pn: u64, aad: &[u8], body_and_tag: &mut [u8]) -> bool {
        self.0.open(&nonce(pn), aad, body_and_tag)
    }
}

/// The portable backend: RustCrypto's `aes-gcm` (key schedules wiped on drop).
#[cfg(any(not(feature = "ring"), test))]
mod portable {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use aes_gcm::Aes256Gcm;

    use crate::wire::TAG_LEN;

    pub(crate) struct Key(Aes256Gcm);

    impl Key {
        pub(crate) fn new(key: &[u8; 32]) -> Key {
            Key(Aes256Gcm::new(key.into()))
        }

        pub(crate) fn seal(
            &self,
            nonce: &[u8; 12],
            aad: &[u8],
            body: &mut [u8],
        ) -> Option<[u8; TAG_LEN]> {
            let tag = self
                .0
                .encrypt_in_place_detached(nonce.into(), aad, body)
                .ok()?;
            Some(tag.into())
        }

        pub(crate) fn open(&self, nonce: &[u8; 12], aad: &[u8], body_and_tag: &mut [u8]) -> bool {
            let Some(split) = body_and_tag.len().checked_sub(TAG_LEN) else {
                return false;
            };
            let (body, tag) = body_and_tag.split_at_mut(split);
            let tag: &[u8] = tag;
            self.0
                .decrypt_in_place_detached(nonce.into(), aad, body, tag.into())
                .is_ok()
        }
    }
}

/// The fast backend: *ring*'s AES-256-GCM.
#[cfg(feature = "ring")]
mod fast {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

    use crate::wire::TAG_LEN;

    pub(crate) struct Key(LessSafeKey);

    impl Key {
        pub(crate) fn new(key: &[u8; 32]) -> Key {
            // A 32-byte key is what AES-256-GCM takes, so this cannot fail;
            // ring still returns a Result, so match instead of unwrapping.
            match UnboundKey::new(&AES_256_GCM, key) {
                Ok(unbound) => Key(LessSafeKey::new(unbound)),
                Err(_) => unreachable_key(),
            }
        }

        pub(crate) fn seal(
            &self,
            nonce: &[u8; 12],
            aad: &[u8],
            body: &mut [u8],
        ) -> Option<[u8; TAG_LEN]> {
            let tag = self
                .0
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(*nonce),
                    Aad::from(aad),
                    body,
                )
                .ok()?;
            tag.as_ref().try_into().ok()
        }

        pub(crate) fn open(&self, nonce: &[u8; 12], aad: &[u8], body_and_tag: &mut [u8]) -> bool {
            self.0
                .open_in_place(
                    Nonce::assume_unique_for_key(*nonce),
                    Aad::from(aad),
                    body_and_tag,
                )
                .is_ok()
        }
    }

    /// ring refused a 32-byte AES-256 key: impossible by its contract.
    #[cold]
    fn unreachable_key() -> ! {
        panic!("ring refused a 32-byte AES-256-GCM key")
    }
}

#[cfg(not(feature = "ring"))]
use portable as backend;

#[cfg(feature = "ring")]
use fast as backend;

/// Both directions' keys of one peer session, the send counter and the
/// receive window. Made only by a finished KKpsk0 handshake
/// ([`crate::peer::handshake::PeerInitiator::finish_packets`],
/// [`crate::peer::handshake::PeerResponder::reply_packets`]). Not `Clone`: a
/// copy would seal under packet numbers the original also uses. The AES key
/// schedules are wiped when it is dropped (`aes-gcm`'s `zeroize` feature).
pub struct PacketCipher {
    channel: u64,
    send: PacketKey,
    recv: PacketKey,
    handshake_hash: [u8; 32],
    next_pn: u64,
    window: ReplayWindow,
    forged: u64,
}

impl fmt::Debug for PacketCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketCipher")
            .field("channel", &self.channel)
            .field("next_pn", &self.next_pn)
            .field("newest_received", &self.window.newest())
            .field("forged", &self.forged)
            .finish_non_exhaustive()
    }
}

impl PacketCipher {
    /// A cipher over the split's keys, oriented for this side.
    pub(crate) fn new(
        channel: u64,
        send: PacketKey,
        recv: PacketKey,
        handshake_hash: [u8; 32],
    ) -> PacketCipher {
        PacketCipher {
            channel,
            send,
            recv,
            handshake_hash,
            next_pn: 0,
            window: ReplayWindow::new(),
            forged: 0,
        }
    }

    /// The channel every packet names.
    pub fn channel(&self) -> u64 {
        self.channel
    }

    /// The Noise handshake hash: equal on both sides, unique to the handshake.
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.handshake_hash
    }

    /// The packet number the next sealed packet must carry at least.
    pub fn next_packet_number(&self) -> u64 {
        self.next_pn
    }

    /// Whether no further packet can be sealed ([`MAX_PACKETS_PER_KEY`] reached).
    pub fn is_exhausted(&self) -> bool {
        self.next_pn >= MAX_PACKETS_PER_KEY
    }

    /// The newest packet number accepted so far.
    pub fn newest_received(&self) -> Option<u64> {
        self.window.newest()
    }

    /// Packets that failed authentication under this key.
    pub fn forged_count(&self) -> u64 {
        self.forged
    }

    /// Seals packet `pn` in place: `buf[DATA_HEADER_LEN..][..payload_len]`
    /// holds the plaintext; the header is written before it and the tag
    /// after it. Returns the packet's length (`DATA_OVERHEAD + payload_len`).
    pub fn seal_in_place(
        &mut self,
        pn: u64,
        buf: &mut [u8],
        payload_len: usize,
    ) -> Result<usize, SealError> {
        if pn >= MAX_PACKETS_PER_KEY || self.is_exhausted() {
            return Err(SealError::KeyExhausted);
        }
        if pn < self.next_pn {
            return Err(SealError::PacketNumberReused { packet_number: pn });
        }
        if payload_len > MAX_PLAINTEXT_LEN {
            return Err(SealError::PayloadTooLong { len: payload_len });
        }
        let needed = DATA_HEADER_LEN + payload_len + TAG_LEN;
        let available = buf.len();
        let Some(packet) = buf.get_mut(..needed) else {
            return Err(SealError::BufferTooSmall { needed, available });
        };
        let aad = data_header(self.channel, pn, payload_len + TAG_LEN);
        let (head, rest) = packet.split_at_mut(DATA_HEADER_LEN);
        head.copy_from_slice(&aad);
        let (body, tag_out) = rest.split_at_mut(payload_len);
        let tag = self
            .send
            .seal(pn, &aad, body)
            // Only for gigabyte inputs, which the length check excludes.
            .ok_or(SealError::PayloadTooLong { len: payload_len })?;
        tag_out.copy_from_slice(&tag);
        self.next_pn = pn + 1;
        Ok(needed)
    }

    /// Opens a received data packet in place and returns its packet number
    /// and plaintext (a part of `datagram`). Checks, in order: form, channel,
    /// packet number range, replay window, tag; the window moves only after
    /// the tag verified. On error the datagram's bytes are unspecified.
    pub fn open_in_place<'d>(
        &mut self,
        datagram: &'d mut [u8],
    ) -> Result<(u64, &'d [u8]), OpenError> {
        let header = DataHeader::parse(datagram).map_err(OpenError::Malformed)?;
        if header.channel != self.channel {
            return Err(OpenError::WrongChannel {
                channel: header.channel,
            });
        }
        if self.forged >= MAX_FORGED_PER_KEY {
            return Err(OpenError::IntegrityLimit);
        }
        let pn = header.packet_number;
        if pn >= MAX_PACKETS_PER_KEY {
            return Err(OpenError::PacketNumberOutOfRange);
        }
        self.window.check(pn)?;
        let Some(packet) = datagram.get_mut(..header.packet_len()) else {
            // DataHeader::parse checked the length; unreachable in practice.
            return Err(OpenError::Malformed(PacketError::Truncated));
        };
        let (head, rest) = packet.split_at_mut(DATA_HEADER_LEN);
        if rest.len() < TAG_LEN {
            return Err(OpenError::Malformed(PacketError::Truncated));
        }
        if !self.recv.open(pn, head, rest) {
            self.forged = self.forged.saturating_add(1);
            return Err(OpenError::Forged);
        }
        self.window.update(pn);
        let body_len = rest.len() - TAG_LEN;
        Ok((pn, &rest[..body_len]))
    }
}

/// A pair of ciphers as a finished handshake would give, for unit tests.
#[cfg(test)]
pub(crate) fn test_pair(channel: u64, seed: u8) -> (PacketCipher, PacketCipher) {
    let k1 = [seed; 32];
    let k2 = [seed ^ 0xff; 32];
    let a = PacketCipher::new(
        channel,
        PacketKey::new(&k1),
        PacketKey::new(&k2),
        [seed; 32],
    );
    let b = PacketCipher::new(
        channel,
        PacketKey::new(&k2),
        PacketKey::new(&k1),
        [seed; 32],
    );
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::REPLAY_WINDOW;
    use crate::peer::packet::{Packet, DATA_OVERHEAD};

    const CHANNEL: u64 = 0x5e5e_5e5e_5e5e_5e5e;

    fn seal(c: &mut PacketCipher, pn: u64, payload: &[u8]) -> std::vec::Vec<u8> {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        buf[DATA_HEADER_LEN..DATA_HEADER_LEN + payload.len()].copy_from_slice(payload);
        let n = c.seal_in_place(pn, &mut buf, payload.len()).unwrap();
        buf[..n].to_vec()
    }

    /// Both backends are AES-256-GCM with the same nonce and associated
    /// data: a packet sealed by one opens with the other, byte for byte,
    /// and a flipped bit fails in both.
    #[test]
    fn ring_and_aes_gcm_seal_the_same_bytes() {
        let key = [0x42; 32];
        let portable = super::portable::Key::new(&key);
        let chosen = PacketKey::new(&key);
        let aad = [7u8; DATA_HEADER_LEN];
        for len in [0usize, 1, 15, 16, 17, 1200, MAX_PLAINTEXT_LEN] {
            let plain: std::vec::Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut a = plain.clone();
            let tag_a = portable.seal(&nonce(9), &aad, &mut a).unwrap();
            let mut b = plain.clone();
            let tag_b = chosen.seal(9, &aad, &mut b).unwrap();
            assert_eq!((&a, tag_a), (&b, tag_b), "len {len}");
            let mut sealed = [a, tag_a.to_vec()].concat();
            assert!(chosen.open(9, &aad, &mut sealed));
            assert_eq!(&sealed[..len], &plain[..]);
            let mut sealed = [b, tag_b.to_vec()].concat();
            sealed[0] ^= 1;
            assert!(!portable.open(&nonce(9), &aad, &mut sealed));
            assert!(!chosen.open(9, &aad, &mut sealed));
        }
    }

    #[test]
    fn sealed_packet_opens_in_place_on_the_other_side() {
        let (mut a, mut b) = test_pair(CHANNEL, 1);
        let mut p = seal(&mut a, 0, b"picture bytes");
        assert_eq!(p.len(), DATA_OVERHEAD + 13);
        assert!(matches!(
            Packet::decode(&p),
            Ok(Packet::Data {
                packet_number: 0,
                ..
            })
        ));
        assert_ne!(&p[DATA_HEADER_LEN..DATA_HEADER_LEN + 13], b"picture bytes");
        let (pn, plain) = b.open_in_place(&mut p).unwrap();
        assert_eq!((pn, plain), (0, &b"picture bytes"[..]));
        // And the other way, with an empty payload.
        let mut q = seal(&mut b, 0, b"");
        assert_eq!(a.open_in_place(&mut q).unwrap(), (0, &b""[..]));
    }

    #[test]
    fn forged_data_packet_is_refused_and_does_not_move_the_window() {
        let (mut a, mut b) = test_pair(CHANNEL, 2);
        let good = seal(&mut a, 5, b"hello");
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            let r = b.open_in_place(&mut bad);
            assert!(r.is_err(), "byte {i} altered yet accepted");
        }
        assert_eq!(b.newest_received(), None);
        assert!(b.forged_count() > 0);
        let mut ok = good.clone();
        assert!(b.open_in_place(&mut ok).is_ok());
    }

    #[test]
    fn replayed_data_packet_is_refused() {
        let (mut a, mut b) = test_pair(CHANNEL, 3);
        let p = seal(&mut a, 0, b"once");
        assert!(b.open_in_place(&mut p.clone()).is_ok());
        assert_eq!(b.open_in_place(&mut p.clone()), Err(OpenError::Replayed));
    }

    #[test]
    fn packet_for_another_channel_is_refused() {
        let (mut a, _) = test_pair(CHANNEL, 4);
        let (_, mut other) = test_pair(CHANNEL + 1, 4);
        let mut p = seal(&mut a, 0, b"x");
        assert_eq!(
            other.open_in_place(&mut p),
            Err(OpenError::WrongChannel { channel: CHANNEL })
        );
    }

    #[test]
    fn packet_under_another_key_is_forged() {
        let (mut a, _) = test_pair(CHANNEL, 5);
        let (_, mut b) = test_pair(CHANNEL, 6);
        let mut p = seal(&mut a, 0, b"x");
        assert_eq!(b.open_in_place(&mut p), Err(OpenError::Forged));
    }

    #[test]
    fn packet_too_old_for_the_window_is_refused() {
        let (mut a, mut b) = test_pair(CHANNEL, 7);
        let old = seal(&mut a, 1, b"old");
        let new = seal(&mut a, 1 + REPLAY_WINDOW, b"new");
        assert!(b.open_in_place(&mut new.clone()).is_ok());
        assert_eq!(b.open_in_place(&mut old.clone()), Err(OpenError::TooOld));
    }

    #[test]
    fn reordered_packets_inside_the_window_are_accepted_once() {
        let (mut a, mut b) = test_pair(CHANNEL, 8);
        let packets: std::vec::Vec<_> = (0..10).map(|i| seal(&mut a, i, &[i as u8])).collect();
        for i in [3, 1, 9, 0, 2, 8, 4, 7, 6, 5] {
            let mut p = packets[i].clone();
            let (pn, plain) = b.open_in_place(&mut p).unwrap();
            assert_eq!((pn, plain), (i as u64, &[i as u8][..]));
        }
        for p in &packets {
            assert_eq!(b.open_in_place(&mut p.clone()), Err(OpenError::Replayed));
        }
    }

    #[test]
    fn a_packet_number_is_never_sealed_twice() {
        let (mut a, _) = test_pair(CHANNEL, 9);
        let _ = seal(&mut a, 4, b"x");
        let mut buf = [0u8; 64];
        assert_eq!(
            a.seal_in_place(4, &mut buf, 1),
            Err(SealError::PacketNumberReused { packet_number: 4 })
        );
        assert_eq!(
            a.seal_in_place(2, &mut buf, 1),
            Err(SealError::PacketNumberReused { packet_number: 2 })
        );
        assert_eq!(a.next_packet_number(), 5);
    }

    #[test]
    fn key_limit_stops_sealing_and_opening() {
        let (mut a, mut b) = test_pair(CHANNEL, 10);
        let last = seal(&mut a, MAX_PACKETS_PER_KEY - 1, b"last");
        assert!(a.is_exhausted());
        let mut buf = [0u8; 64];
        assert_eq!(
            a.seal_in_place(MAX_PACKETS_PER_KEY, &mut buf, 1),
            Err(SealError::KeyExhausted)
        );
        assert!(b.open_in_place(&mut last.clone()).is_ok());
        // A packet number past the limit is refused before any crypto.
        let mut beyond = last.clone();
        beyond[DATA_HEADER_LEN - 8..DATA_HEADER_LEN]
            .copy_from_slice(&MAX_PACKETS_PER_KEY.to_be_bytes());
        assert_eq!(
            b.open_in_place(&mut beyond),
            Err(OpenError::PacketNumberOutOfRange)
        );
    }

    #[test]
    fn seal_refuses_small_buffers_and_long_payloads() {
        let (mut a, _) = test_pair(CHANNEL, 11);
        let mut small = [0u8; DATA_OVERHEAD + 3];
        assert_eq!(
            a.seal_in_place(0, &mut small, 4),
            Err(SealError::BufferTooSmall {
                needed: DATA_OVERHEAD + 4,
                available: DATA_OVERHEAD + 3
            })
        );
        let mut big = [0u8; 2000];
        assert_eq!(
            a.seal_in_place(0, &mut big, MAX_PLAINTEXT_LEN + 1),
            Err(SealError::PayloadTooLong {
                len: MAX_PLAINTEXT_LEN + 1
            })
        );
        assert_eq!(a.next_packet_number(), 0);
    }

    #[test]
    fn a_full_size_packet_is_max_datagram_len() {
        let (mut a, mut b) = test_pair(CHANNEL, 12);
        let payload = [0x42u8; MAX_PLAINTEXT_LEN];
        let mut p = seal(&mut a, 0, &payload);
        assert_eq!(p.len(), MAX_DATAGRAM_LEN);
        assert_eq!(b.open_in_place(&mut p).unwrap().1, &payload[..]);
    }

    #[test]
    fn malformed_datagrams_are_typed_errors() {
        let (_, mut b) = test_pair(CHANNEL, 13);
        let mut junk = [0u8; 40];
        assert_eq!(
            b.open_in_place(&mut junk),
            Err(OpenError::Malformed(PacketError::BadMagic))
        );
        let mut empty = [];
        assert!(b.open_in_place(&mut empty).is_err());
    }
}
