//! The outer packets of the peer path: what travels in each UDP datagram
//! between the two terminals, on the same socket as the keepalives.
//!
//! Every packet starts with the common 6-byte header of every tryst message
//! (`"TY"`, version 1, type, u16 body length, big-endian), then the 8-byte
//! channel number ([`crate::peer::handshake::channel_id`] of the session), so a
//! terminal routes a packet to its session by channel before any crypto:
//!
//! | type | packet | body after the channel |
//! |---|---|---|
//! | `0x80` | [`Packet::Probe`] | `seq: u32`: opens NAT mappings, carries nothing secret |
//! | `0x81` | [`Packet::HandshakeInit`] | KKpsk0 message 1 |
//! | `0x82` | [`Packet::HandshakeReply`] | KKpsk0 message 2 |
//! | `0x83` | [`Packet::Data`] | `packet_number: u64`, ciphertext and 16-byte tag |
//!
//! The header's body length covers everything after the header, and must
//! match the datagram exactly. A data packet's first [`DATA_HEADER_LEN`]
//! bytes (header, channel, packet number) are the AES-GCM associated data.
//!
//! The codec is separate from [`crate::wire::Message`] (whose decoder
//! refuses these types as unknown) but shares its header check
//! ([`crate::wire::Header`], here over [`PacketType`]) and its byte cursor,
//! and returns a typed [`PacketError`]. Decoding borrows from the datagram;
//! encoding writes into the caller's buffer. Nothing allocates.

use core::fmt;

use crate::crypto::noise::DH_LEN;
use crate::wire::{
    DecodeError, Header, HeaderType, Reader, Truncated, HEADER_LEN, MAGIC, TAG_LEN, VERSION,
};

/// Length of the channel number that follows the header.
pub const CHANNEL_LEN: usize = 8;
/// Length of a data packet's packet number.
pub const PACKET_NUMBER_LEN: usize = 8;
/// Length of a probe's sequence number.
pub const PROBE_SEQ_LEN: usize = 4;
/// Bytes before a data packet's ciphertext: header, channel and packet
/// number. They are its associated data.
pub const DATA_HEADER_LEN: usize = HEADER_LEN + CHANNEL_LEN + PACKET_NUMBER_LEN;
/// Bytes a data packet adds to its plaintext: [`DATA_HEADER_LEN`] and the tag.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN;
/// Length of a whole probe.
pub const PROBE_LEN: usize = HEADER_LEN + CHANNEL_LEN + PROBE_SEQ_LEN;
/// Longest payload a peer handshake message carries (the session sends none
/// today; the room is for a small proposal such as a first path MTU).
pub const MAX_PEER_HANDSHAKE_PAYLOAD: usize = 16;
/// Shortest Noise message of a handshake packet: `e` and a tag (the
/// [`crate::peer::handshake::MESSAGE_OVERHEAD`] of either KKpsk0 message).
pub const MIN_HANDSHAKE_NOISE_LEN: usize = DH_LEN + TAG_LEN;
/// Longest Noise message of a handshake packet.
pub const MAX_HANDSHAKE_NOISE_LEN: usize = MIN_HANDSHAKE_NOISE_LEN + MAX_PEER_HANDSHAKE_PAYLOAD;
/// Longest handshake packet.
pub const MAX_HANDSHAKE_PACKET_LEN: usize = HEADER_LEN + CHANNEL_LEN + MAX_HANDSHAKE_NOISE_LEN;
/// Longest peer datagram this codec reads or writes: the UDP payload of one
/// 1500-byte Ethernet frame over IPv4 (1500 - 20 - 8). A driver's receive
/// buffer of this size holds any packet a peer may send.
pub const MAX_DATAGRAM_LEN: usize = 1472;
/// Longest sealed part (ciphertext and tag) of a data packet.
pub const MAX_DATA_SEALED_LEN: usize = MAX_DATAGRAM_LEN - DATA_HEADER_LEN;

/// The type bytes of the peer path (the reserved range `0x80..=0x8F`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Unauthenticated NAT-opening probe.
    Probe = 0x80,
    /// KKpsk0 message 1, connecting side to connected side.
    HandshakeInit = 0x81,
    /// KKpsk0 message 2, connected side to connecting side.
    HandshakeReply = 0x82,
    /// An encrypted transport packet.
    Data = 0x83,
}

impl PacketType {
    /// The type a byte stands for, if it is a peer packet type of this version.
    pub fn from_wire(byte: u8) -> Option<PacketType> {
        match byte {
            0x80 => Some(PacketType::Probe),
            0x81 => Some(PacketType::HandshakeInit),
            0x82 => Some(PacketType::HandshakeReply),
            0x83 => Some(PacketType::Data),
            _ => None,
        }
    }

    /// The byte that stands for this type.
    pub fn to_wire(self) -> u8 {
        self as u8
    }
}

/// Why a datagram is not a valid peer packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// Shorter than the header and channel, or than its header declares.
    Truncated,
    /// The first two bytes are not `"TY"`: foreign traffic.
    BadMagic,
    /// A version this implementation does not speak.
    UnsupportedVersion(u8),
    /// A type outside the peer packets of this version (`0x80..=0x83`).
    NotPeerPacket(u8),
    /// Bytes remain after the body the header declares.
    TrailingBytes,
    /// The body's length is wrong for its type (probe not 12 bytes,
    /// handshake or sealed part out of bounds).
    BadLength(usize),
    /// The caller's buffer cannot hold the packet.
    BufferTooSmall {
        /// Bytes the packet needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PacketError::Truncated => f.write_str("peer packet is truncated"),
            PacketError::BadMagic => f.write_str("not a tryst packet (bad magic)"),
            PacketError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            PacketError::NotPeerPacket(t) => write!(f, "type 0x{t:02x} is not a peer packet"),
            PacketError::TrailingBytes => f.write_str("bytes after the declared body"),
            PacketError::BadLength(n) => write!(f, "body part of {n} bytes out of bounds"),
            PacketError::BufferTooSmall { needed, available } => {
                write!(f, "buffer of {available} bytes cannot hold {needed}")
            }
        }
    }
}

impl core::error::Error for PacketError {}

impl From<Truncated> for PacketError {
    fn from(_: Truncated) -> Self {
        PacketError::Truncated
    }
}

impl PacketError {
    /// The peer codec's name for an error of the common header check.
    fn of_header(e: DecodeError) -> PacketError {
        match e {
            DecodeError::BadMagic => PacketError::BadMagic,
            DecodeError::UnsupportedVersion(v) => PacketError::UnsupportedVersion(v),
            DecodeError::UnknownType(t) => PacketError::NotPeerPacket(t),
            DecodeError::TrailingBytes => PacketError::TrailingBytes,
            DecodeError::BodyTooLong(n) => PacketError::BadLength(usize::from(n)),
            // The header check gives no other error.
            _ => PacketError::Truncated,
        }
    }
}

impl HeaderType for PacketType {
    /// No bound in the header: each type bounds its own body.
    const MAX_BODY_LEN: usize = u16::MAX as usize;

    fn from_type_byte(byte: u8) -> Option<Self> {
        PacketType::from_wire(byte)
    }
}

/// One decoded peer packet, borrowing from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// NAT-opening probe: only "something for this channel came from here".
    Probe {
        /// The session's channel.
        channel: u64,
        /// The sender's probe counter (for logs; not trusted).
        seq: u32,
    },
    /// The first handshake message.
    HandshakeInit {
        /// The session's channel.
        channel: u64,
        /// The Noise message, [`MIN_HANDSHAKE_NOISE_LEN`]..=[`MAX_HANDSHAKE_NOISE_LEN`] bytes.
        noise: &'a [u8],
    },
    /// The second handshake message.
    HandshakeReply {
        /// The session's channel.
        channel: u64,
        /// The Noise message, [`MIN_HANDSHAKE_NOISE_LEN`]..=[`MAX_HANDSHAKE_NOISE_LEN`] bytes.
        noise: &'a [u8],
    },
    /// An encrypted transport packet.
    Data {
        /// The session's channel.
        channel: u64,
        /// The packet number: the nonce, never reused under one key.
        packet_number: u64,
        /// Ciphertext and tag, [`TAG_LEN`]..=[`MAX_DATA_SEALED_LEN`] bytes.
        sealed: &'a [u8],
    },
}

/// Whether `datagram` looks like a peer packet (magic, version and a type
/// of `0x80..=0x8F`), for a terminal that must tell peer traffic from the
/// trigger server's. Says nothing about validity.
pub fn is_peer_packet(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN
        && datagram[..2] == MAGIC
        && datagram[2] == VERSION
        && (0x80..=0x8F).contains(&datagram[3])
}

/// The type and channel of a peer packet, for routing it to its session
/// before decoding the rest; `None` if the datagram is not a valid peer packet.
pub fn peek_channel(datagram: &[u8]) -> Option<(PacketType, u64)> {
    let packet = Packet::decode(datagram).ok()?;
    Some((packet.packet_type(), packet.channel()))
}

impl<'a> Packet<'a> {
    /// Decodes one datagram. Any bytes give a packet or a typed error.
    pub fn decode(datagram: &'a [u8]) -> Result<Packet<'a>, PacketError> {
        let (header, body) =
            Header::<PacketType>::split(datagram).map_err(PacketError::of_header)?;
        let mut r = Reader::new(body);
        let channel = r.u64()?;
        match header.message_type {
            PacketType::Probe => {
                if r.rest().len() != PROBE_SEQ_LEN {
                    return Err(PacketError::BadLength(r.rest().len()));
                }
                Ok(Packet::Probe {
                    channel,
                    seq: r.u32()?,
                })
            }
            ty @ (PacketType::HandshakeInit | PacketType::HandshakeReply) => {
                let noise = r.rest();
                if !(MIN_HANDSHAKE_NOISE_LEN..=MAX_HANDSHAKE_NOISE_LEN).contains(&noise.len()) {
                    return Err(PacketError::BadLength(noise.len()));
                }
                Ok(if ty == PacketType::HandshakeInit {
                    Packet::HandshakeInit { channel, noise }
                } else {
                    Packet::HandshakeReply { channel, noise }
                })
            }
            PacketType::Data => {
                let packet_number = r.u64()?;
                let sealed = r.rest();
                if !(TAG_LEN..=MAX_DATA_SEALED_LEN).contains(&sealed.len()) {
                    return Err(PacketError::BadLength(sealed.len()));
                }
                Ok(Packet::Data {
                    channel,
                    packet_number,
                    sealed,
                })
            }
        }
    }

    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Probe { .. } => PacketType::Probe,
            Packet::HandshakeInit { .. } => PacketType::HandshakeInit,
            Packet::HandshakeReply { .. } => PacketType::HandshakeReply,
            Packet::Data { .. } => PacketType::Data,
        }
    }

    /// The channel the packet names.
    pub fn channel(&self) -> u64 {
        match *self {
            Packet::Probe { channel, .. }
            | Packet::HandshakeInit { channel, .. }
            | Packet::HandshakeReply { channel, .. }
            | Packet::Data { channel, .. } => channel,
        }
    }

    /// Whether the fields are within the bounds [`Packet::decode`] accepts
    /// (only the borrowed parts can be out of bounds).
    pub fn within_bounds(&self) -> bool {
        match self {
            Packet::Probe { .. } => true,
            Packet::HandshakeInit { noise, .. } | Packet::HandshakeReply { noise, .. } => {
                (MIN_HANDSHAKE_NOISE_LEN..=MAX_HANDSHAKE_NOISE_LEN).contains(&noise.len())
            }
            Packet::Data { sealed, .. } => (TAG_LEN..=MAX_DATA_SEALED_LEN).contains(&sealed.len()),
        }
    }

    /// Length of the encoded packet.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + CHANNEL_LEN
            + match self {
                Packet::Probe { .. } => PROBE_SEQ_LEN,
                Packet::HandshakeInit { noise, .. } | Packet::HandshakeReply { noise, .. } => {
                    noise.len()
                }
                Packet::Data { sealed, .. } => PACKET_NUMBER_LEN + sealed.len(),
            }
    }

    /// Writes the packet into `out` and returns its length. Fields out of
    /// the decoder's bounds give [`PacketError::BadLength`], so whatever is
    /// encoded decodes back to the same packet.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, PacketError> {
        if !self.within_bounds() {
            let len = match self {
                Packet::HandshakeInit { noise, .. } | Packet::HandshakeReply { noise, .. } => {
                    noise.len()
                }
                Packet::Data { sealed, .. } => sealed.len(),
                Packet::Probe { .. } => 0,
            };
            return Err(PacketError::BadLength(len));
        }
        let len = self.encoded_len();
        let available = out.len();
        let Some(out) = out.get_mut(..len) else {
            return Err(PacketError::BufferTooSmall {
                needed: len,
                available,
            });
        };
        write_header(out, self.packet_type(), len - HEADER_LEN, self.channel());
        let rest = &mut out[HEADER_LEN + CHANNEL_LEN..];
        match self {
            Packet::Probe { seq, .. } => rest.copy_from_slice(&seq.to_be_bytes()),
            Packet::HandshakeInit { noise, .. } | Packet::HandshakeReply { noise, .. } => {
                rest.copy_from_slice(noise)
            }
            Packet::Data {
                packet_number,
                sealed,
                ..
            } => {
                rest[..PACKET_NUMBER_LEN].copy_from_slice(&packet_number.to_be_bytes());
                rest[PACKET_NUMBER_LEN..].copy_from_slice(sealed);
            }
        }
        Ok(len)
    }
}

/// Writes header and channel into the first 14 bytes of `out` (which the
/// caller sized). `body_len` is at most [`MAX_DATAGRAM_LEN`], so it fits a u16.
fn write_header(out: &mut [u8], ty: PacketType, body_len: usize, channel: u64) {
    out[..2].copy_from_slice(&MAGIC);
    out[2] = VERSION;
    out[3] = ty.to_wire();
    let body_len = u16::try_from(body_len).unwrap_or(u16::MAX);
    out[4..6].copy_from_slice(&body_len.to_be_bytes());
    out[HEADER_LEN..HEADER_LEN + CHANNEL_LEN].copy_from_slice(&channel.to_be_bytes());
}

/// The associated data of a data packet whose sealed part (ciphertext and
/// tag) is `sealed_len` bytes: its first [`DATA_HEADER_LEN`] bytes.
pub fn data_header(channel: u64, packet_number: u64, sealed_len: usize) -> [u8; DATA_HEADER_LEN] {
    let mut h = [0u8; DATA_HEADER_LEN];
    write_header(
        &mut h,
        PacketType::Data,
        CHANNEL_LEN + PACKET_NUMBER_LEN + sealed_len,
        channel,
    );
    h[HEADER_LEN + CHANNEL_LEN..].copy_from_slice(&packet_number.to_be_bytes());
    h
}

/// A data packet's fixed fields, read without borrowing the sealed part, so
/// the caller can then decrypt the datagram in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// The session's channel.
    pub channel: u64,
    /// The packet number.
    pub packet_number: u64,
    /// Length of the sealed part (ciphertext and tag) after the header.
    pub sealed_len: usize,
}

impl DataHeader {
    /// Reads a data packet's fixed fields; errors as [`Packet::decode`], and
    /// [`PacketError::NotPeerPacket`] for any other peer packet type.
    pub fn parse(datagram: &[u8]) -> Result<DataHeader, PacketError> {
        match Packet::decode(datagram)? {
            Packet::Data {
                channel,
                packet_number,
                sealed,
            } => Ok(DataHeader {
                channel,
                packet_number,
                sealed_len: sealed.len(),
            }),
            other => Err(PacketError::NotPeerPacket(other.packet_type().to_wire())),
        }
    }

    /// Length of the whole packet.
    pub fn packet_len(&self) -> usize {
        DATA_HEADER_LEN + self.sealed_len
    }
}

/// Fixed test vectors: one encoded example of every peer packet, the bytes
/// the peer packet section of PROTOCOL.md shows. Noise and ciphertext bytes
/// are placeholders (`e7`, `a9`): real ones look random.
pub mod vectors {
    /// A probe: channel 0x5e5e5e5e5e5e5e5e, seq 7.
    pub static PROBE: [u8; 18] = [
        0x54, 0x59, 0x01, 0x80, 0x00, 0x0c, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x00,
        0x00, 0x00, 0x07,
    ];

    /// A handshake init: channel 0x0102030405060708, 48 noise bytes (e7).
    pub static HANDSHAKE_INIT: [u8; 62] = [
        0x54, 0x59, 0x01, 0x81, 0x00, 0x38, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0xe7,
        0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7,
        0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7,
        0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7,
        0xe7, 0xe7,
    ];

    /// A handshake reply: channel 0x0102030405060708, 48 noise bytes (e7).
    pub static HANDSHAKE_REPLY: [u8; 62] = [
        0x54, 0x59, 0x01, 0x82, 0x00, 0x38, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0xe7,
        0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7,
        0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7,
        0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7,
        0xe7, 0xe7,
    ];

    /// A data packet: channel 0x0102030405060708, packet number 0x2a,
    /// 4 bytes of ciphertext (a9) and a 16-byte tag (e7).
    pub static DATA: [u8; 42] = [
        0x54, 0x59, 0x01, 0x83, 0x00, 0x24, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0xa9, 0xa9, 0xa9, 0xa9, 0xe7, 0xe7, 0xe7, 0xe7,
        0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7, 0xe7,
    ];

    /// Every vector with its name, as PROTOCOL.md marks it.
    pub static ALL: [(&str, &[u8]); 4] = [
        ("PEER_PROBE", &PROBE),
        ("PEER_HANDSHAKE_INIT", &HANDSHAKE_INIT),
        ("PEER_HANDSHAKE_REPLY", &HANDSHAKE_REPLY),
        ("PEER_DATA", &DATA),
    ];
}

#[cfg(test)]
mod tests {
    use super::vectors::*;
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(wire: &[u8], expected: Packet<'_>) {
        let decoded = Packet::decode(wire).unwrap();
        assert_eq!(decoded, expected);
        let mut out = [0u8; MAX_DATAGRAM_LEN];
        let n = decoded.encode(&mut out).unwrap();
        assert_eq!(&out[..n], wire);
        assert_eq!(decoded.encoded_len(), wire.len());
        assert!(is_peer_packet(wire));
        assert_eq!(
            peek_channel(wire),
            Some((expected.packet_type(), expected.channel()))
        );
    }

    #[test]
    fn probe_vector_decodes_and_encodes() {
        roundtrip(
            &PROBE,
            Packet::Probe {
                channel: 0x5e5e_5e5e_5e5e_5e5e,
                seq: 7,
            },
        );
        assert_eq!(PROBE.len(), PROBE_LEN);
    }

    #[test]
    fn handshake_vectors_decode_and_encode() {
        roundtrip(
            &HANDSHAKE_INIT,
            Packet::HandshakeInit {
                channel: 0x0102_0304_0506_0708,
                noise: &[0xe7; 48],
            },
        );
        roundtrip(
            &HANDSHAKE_REPLY,
            Packet::HandshakeReply {
                channel: 0x0102_0304_0506_0708,
                noise: &[0xe7; 48],
            },
        );
    }

    #[test]
    fn data_vector_decodes_and_its_header_is_the_aad() {
        let mut sealed = [0xe7u8; 20];
        sealed[..4].fill(0xa9);
        roundtrip(
            &DATA,
            Packet::Data {
                channel: 0x0102_0304_0506_0708,
                packet_number: 0x2a,
                sealed: &sealed,
            },
        );
        assert_eq!(data_header(0x0102_0304_0506_0708, 0x2a, 20), DATA[..22]);
        assert_eq!(
            DataHeader::parse(&DATA),
            Ok(DataHeader {
                channel: 0x0102_0304_0506_0708,
                packet_number: 0x2a,
                sealed_len: 20
            })
        );
    }

    #[test]
    fn errors_are_named_in_header_order() {
        assert_eq!(Packet::decode(b"XY"), Err(PacketError::BadMagic));
        assert_eq!(Packet::decode(b"T"), Err(PacketError::Truncated));
        assert_eq!(Packet::decode(b""), Err(PacketError::Truncated));
        let mut p = PROBE;
        p[2] = 2;
        assert_eq!(Packet::decode(&p), Err(PacketError::UnsupportedVersion(2)));
        p = PROBE;
        p[3] = 0x62;
        assert_eq!(Packet::decode(&p), Err(PacketError::NotPeerPacket(0x62)));
        assert!(!is_peer_packet(&p));
        p[3] = 0x84;
        assert_eq!(Packet::decode(&p), Err(PacketError::NotPeerPacket(0x84)));
        assert!(is_peer_packet(&p), "reserved range, later versions");
        assert_eq!(Packet::decode(&PROBE[..17]), Err(PacketError::Truncated));
        let mut long = [0u8; 19];
        long[..18].copy_from_slice(&PROBE);
        assert_eq!(Packet::decode(&long), Err(PacketError::TrailingBytes));
        // A probe whose declared body is 13 bytes.
        long[5] = 13;
        assert_eq!(Packet::decode(&long), Err(PacketError::BadLength(5)));
    }

    #[test]
    fn data_with_less_than_a_tag_is_refused() {
        let mut short = [0u8; 37];
        short.copy_from_slice(&DATA[..37]);
        short[5] = 31;
        assert_eq!(Packet::decode(&short), Err(PacketError::BadLength(15)));
    }

    #[test]
    fn handshake_of_the_wrong_size_is_refused() {
        let mut small = [0u8; 61];
        small.copy_from_slice(&HANDSHAKE_INIT[..61]);
        small[5] = 0x37;
        assert_eq!(Packet::decode(&small), Err(PacketError::BadLength(47)));
    }

    #[test]
    fn encode_refuses_small_buffers_and_out_of_bound_fields() {
        let p = Packet::Probe { channel: 1, seq: 2 };
        let mut out = [0u8; 17];
        assert_eq!(
            p.encode(&mut out),
            Err(PacketError::BufferTooSmall {
                needed: 18,
                available: 17
            })
        );
        let big = [0u8; MAX_DATA_SEALED_LEN + 1];
        let d = Packet::Data {
            channel: 1,
            packet_number: 2,
            sealed: &big,
        };
        let mut out = [0u8; 2000];
        assert_eq!(
            d.encode(&mut out),
            Err(PacketError::BadLength(MAX_DATA_SEALED_LEN + 1))
        );
    }

    fn packet_strategy() -> impl Strategy<Value = (u8, u64, u64, std::vec::Vec<u8>)> {
        (
            0u8..4,
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..MAX_DATA_SEALED_LEN + 1),
        )
    }

    proptest! {
        #![proptest_config(proptest_config!(256, "core-peer-packet.txt"))]

        #[test]
        fn every_valid_packet_round_trips((kind, channel, n, bytes) in packet_strategy()) {
            let noise_len = MIN_HANDSHAKE_NOISE_LEN + bytes.len() % (MAX_PEER_HANDSHAKE_PAYLOAD + 1);
            let mut noise = std::vec![0u8; noise_len];
            for (i, b) in noise.iter_mut().enumerate() {
                *b = bytes.get(i).copied().unwrap_or(0x11);
            }
            let mut sealed = bytes.clone();
            sealed.resize(sealed.len().max(TAG_LEN), 0x22);
            let packet = match kind {
                0 => Packet::Probe { channel, seq: n as u32 },
                1 => Packet::HandshakeInit { channel, noise: &noise },
                2 => Packet::HandshakeReply { channel, noise: &noise },
                _ => Packet::Data { channel, packet_number: n, sealed: &sealed },
            };
            let mut out = [0u8; MAX_DATAGRAM_LEN];
            let len = packet.encode(&mut out).unwrap();
            prop_assert!(len <= MAX_DATAGRAM_LEN);
            prop_assert_eq!(Packet::decode(&out[..len]), Ok(packet));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            if let Ok(p) = Packet::decode(&bytes) {
                let mut out = [0u8; MAX_DATAGRAM_LEN];
                let n = p.encode(&mut out).unwrap();
                prop_assert_eq!(&out[..n], &bytes[..]);
            }
            let _ = DataHeader::parse(&bytes);
            let _ = peek_channel(&bytes);
        }

        #[test]
        fn header_prefixed_garbage_never_panics(
            ty in 0x80u8..0x90,
            body in proptest::collection::vec(any::<u8>(), 0..1500),
        ) {
            let mut d = std::vec![0x54, 0x59, 0x01, ty];
            d.extend_from_slice(&(body.len() as u16).to_be_bytes());
            d.extend_from_slice(&body);
            if let Ok(p) = Packet::decode(&d) {
                let mut out = [0u8; MAX_DATAGRAM_LEN];
                let n = p.encode(&mut out).unwrap();
                prop_assert_eq!(&out[..n], &d[..]);
            }
        }
    }
}
