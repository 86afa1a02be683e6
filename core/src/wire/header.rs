//! The common header that starts every message: the control messages and
//! the peer packets alike.

use super::error::DecodeError;
use super::message::{MessageType, MAX_BODY_LEN};
use super::reader::Reader;

/// The two bytes every tryst message starts with: `"TY"`.
pub const MAGIC: [u8; 2] = *b"TY";
/// The protocol version this codec speaks.
pub const VERSION: u8 = 1;
/// Length of the common header: magic (2), version (1), type (1), body length (2).
pub const HEADER_LEN: usize = 6;

/// The types a codec reads from the header's type byte: the control
/// messages' [`MessageType`] (the default) or the peer path's
/// `PacketType` (`peer::packet`).
pub trait HeaderType: Copy {
    /// Longest body a header of this codec may declare.
    const MAX_BODY_LEN: usize;

    /// The type a byte stands for, if this codec knows it.
    fn from_type_byte(byte: u8) -> Option<Self>;
}

impl HeaderType for MessageType {
    const MAX_BODY_LEN: usize = MAX_BODY_LEN;

    fn from_type_byte(byte: u8) -> Option<Self> {
        MessageType::from_wire(byte)
    }
}

/// The checked common header of a message (or, as `Header<PacketType>`, of
/// a peer packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<T = MessageType> {
    /// What the body is.
    pub message_type: T,
    /// Length of the body that follows, at most `T::MAX_BODY_LEN`
    /// ([`MAX_BODY_LEN`] for a control message).
    pub body_len: u16,
}

impl Header {
    /// Reads and checks a control message's header at the start of `buf`,
    /// in the order magic, version, type, length, so foreign or future
    /// traffic is named as such.
    pub fn parse(buf: &[u8]) -> Result<Header, DecodeError> {
        Header::read(buf)
    }
}

impl<T: HeaderType> Header<T> {
    /// Reads and checks the header at the start of `buf` (as
    /// [`Header::parse`]) for the codec of `T`; an unknown type byte is
    /// [`DecodeError::UnknownType`].
    #[inline]
    pub fn read(buf: &[u8]) -> Result<Header<T>, DecodeError> {
        // The fast path of every valid header (each peer packet comes this
        // way): six bytes at fixed offsets, one check each.
        if let Some(h) = buf.first_chunk::<HEADER_LEN>() {
            if h[..2] == MAGIC && h[2] == VERSION {
                if let Some(message_type) = T::from_type_byte(h[3]) {
                    let body_len = u16::from_be_bytes([h[4], h[5]]);
                    if usize::from(body_len) <= T::MAX_BODY_LEN {
                        return Ok(Header {
                            message_type,
                            body_len,
                        });
                    }
                }
            }
        }
        Self::read_checked(buf)
    }

    /// [`Self::read`] field by field, naming what is wrong first.
    #[cold]
    fn read_checked(buf: &[u8]) -> Result<Header<T>, DecodeError> {
        check_magic_prefix(buf)?;
        let mut r = Reader::new(buf);
        let _magic = r.array::<2>()?;
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let type_byte = r.u8()?;
        let message_type =
            T::from_type_byte(type_byte).ok_or(DecodeError::UnknownType(type_byte))?;
        let body_len = r.u16()?;
        if usize::from(body_len) > T::MAX_BODY_LEN {
            return Err(DecodeError::BodyTooLong(body_len));
        }
        Ok(Header {
            message_type,
            body_len,
        })
    }

    /// Reads the header of a buffer that holds exactly one message (a
    /// datagram, a framed message) and returns it with the body: a shorter
    /// buffer than the header declares is [`DecodeError::Truncated`], a
    /// longer one [`DecodeError::TrailingBytes`]. The body is borrowed.
    #[inline]
    pub fn split(buf: &[u8]) -> Result<(Header<T>, &[u8]), DecodeError> {
        let header = Header::<T>::read(buf)?;
        let body = buf.get(HEADER_LEN..).ok_or(DecodeError::Truncated)?;
        let body_len = usize::from(header.body_len);
        if body.len() < body_len {
            return Err(DecodeError::Truncated);
        }
        if body.len() > body_len {
            return Err(DecodeError::TrailingBytes);
        }
        Ok((header, body))
    }

    /// Length of the whole message this header starts.
    pub fn message_len(&self) -> usize {
        HEADER_LEN + usize::from(self.body_len)
    }
}

/// Rejects foreign traffic as soon as one byte is in.
fn check_magic_prefix(buf: &[u8]) -> Result<(), DecodeError> {
    let n = buf.len().min(MAGIC.len());
    if buf[..n] == MAGIC[..n] {
        Ok(())
    } else {
        Err(DecodeError::BadMagic)
    }
}

/// For stream transports: how long the message at the start of `buf` is.
///
/// `Ok(None)` means more bytes are needed to know; `Ok(Some(n))` means the
/// first message is `n` bytes long (it may not all be there yet); an error
/// means the stream is not tryst traffic and should be dropped. A driver
/// therefore never buffers more than [`super::MAX_MESSAGE_LEN`] bytes.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < HEADER_LEN {
        check_magic_prefix(buf)?;
        return Ok(None);
    }
    Header::parse(buf).map(|h| Some(h.message_len()))
}
