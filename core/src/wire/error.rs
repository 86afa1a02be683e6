//! Typed errors of the codec: every way a byte string can be wrong has a name.

use core::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameError {
    /// A name has at least one byte.
    Empty,
    /// A name has at most [`super::MAX_NAME_LEN`] bytes.
    TooLong,
    /// A name is UTF-8.
    BadUtf8,
    /// Control characters are refused so that names cannot forge log lines.
    ControlCharacter,
}

/// Why a byte string is not a valid tryst message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended before the header or a field was complete.
    Truncated,
    /// The first two bytes are not [`super::MAGIC`]: foreign traffic.
    BadMagic,
    /// A version this implementation does not speak.
    UnsupportedVersion(u8),
    /// A message type that is not defined (or only reserved) in this version.
    UnknownType(u8),
    /// The header declares a body longer than [`super::MAX_BODY_LEN`].
    BodyTooLong(u16),
    /// Bytes remain after the message the header describes.
    TrailingBytes,
    /// A name field is not a valid name.
    BadName(NameError),
    /// An address family byte other than 4 or 6 (or 0 where an address is optional).
    BadAddressFamily(u8),
    /// A one-byte enumeration holds a value with no meaning.
    BadEnum {
        /// The field's name, as in PROTOCOL.md.
        field: &'static str,
        /// The value found.
        value: u8,
    },
    /// An envelope's opaque payload is shorter or longer than its bounds allow.
    BadPayloadLength(usize),
    /// A permission list declares more than [`super::MAX_PERMISSION_ENTRIES`] names.
    TooManyNames(u8),
    /// Padding that must be zero holds another byte: only one encoding of a
    /// message is valid, so a decoded message re-encodes to the same bytes.
    NonZeroPadding,
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The caller's buffer cannot hold the message.
    BufferTooSmall {
        /// Bytes the message needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// An envelope's opaque payload is outside the bounds a decoder accepts.
    PayloadOutOfBounds(usize),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "name is empty",
            NameError::TooLong => "name is longer than 64 bytes",
            NameError::BadUtf8 => "name is not UTF-8",
            NameError::ControlCharacter => "name contains a control character",
        })
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("message is truncated"),
            DecodeError::BadMagic => f.write_str("not a tryst message (bad magic)"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            DecodeError::UnknownType(t) => write!(f, "unknown message type 0x{t:02x}"),
            DecodeError::BodyTooLong(n) => write!(f, "declared body length {n} is too long"),
            DecodeError::TrailingBytes => f.write_str("trailing bytes after the message"),
            DecodeError::BadName(e) => write!(f, "bad name: {e}"),
            DecodeError::BadAddressFamily(v) => write!(f, "bad address family {v}"),
            DecodeError::BadEnum { field, value } => write!(f, "bad value {value} for {field}"),
            DecodeError::BadPayloadLength(n) => write!(f, "envelope payload of {n} bytes"),
            DecodeError::TooManyNames(n) => write!(f, "permission list of {n} names is too long"),
            DecodeError::NonZeroPadding => f.write_str("padding is not zero"),
        }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { needed, available } => {
                write!(f, "buffer of {available} bytes cannot hold {needed}")
            }
            EncodeError::PayloadOutOfBounds(n) => write!(f, "envelope payload of {n} bytes"),
        }
    }
}

impl core::error::Error for NameError {}
impl core::error::Error for DecodeError {}
impl core::error::Error for EncodeError {}

impl From<NameError> for DecodeError {
    fn from(e: NameError) -> Self {
        DecodeError::BadName(e)
    }
}
