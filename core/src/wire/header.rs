//! The common header that starts every message.

use super::error::DecodeError;
use super::message::{MessageType, MAX_BODY_LEN};
use super::reader::Reader;

/// The two bytes every tryst message starts with: `"TY"`.
pub const MAGIC: [u8; 2] = *b"TY";
/// The protocol version this codec speaks.
pub const VERSION: u8 = 1;
/// Length of the common header: magic (2), version (1), type (1), body length (2).
pub const HEADER_LEN: usize = 6;

/// The checked common header of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the body is.
    pub message_type: MessageType,
    /// Length of the body that follows, at most [`MAX_BODY_LEN`].
    pub body_len: u16,
}

impl Header {
    /// Reads and checks the header at the start of `buf`, in the order magic,
    /// version, type, length, so foreign or future traffic is named as such.
    pub fn parse(buf: &[u8]) -> Result<Header, DecodeError> {
        check_magic_prefix(buf)?;
        let mut r = Reader::new(buf);
        let _magic = r.array::<2>()?;
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let type_byte = r.u8()?;
        let message_type =
            MessageType::from_wire(type_byte).ok_or(DecodeError::UnknownType(type_byte))?;
        let body_len = r.u16()?;
        if usize::from(body_len) > MAX_BODY_LEN {
            return Err(DecodeError::BodyTooLong(body_len));
        }
        Ok(Header {
            message_type,
            body_len,
        })
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
