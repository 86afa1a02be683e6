//! The one byte cursor of every codec in the crate: the control messages
//! (this module), the peer packets (`peer::packet`) and the frames
//! inside them (`peer::transport::frame`).
//!
//! It borrows its input and never copies it: a field is read by splitting
//! the slice, and a borrowed field (`bytes`, `rest`) points into the input.
//! (It was built on nom's complete parsers until the peer path's frames
//! came to read through it too: nom's parsers cost that path about 5% more
//! instructions per packet under callgrind, so the slice methods, which
//! compile to one bounds check and one load, replaced them.)
//! Every shortfall is the one error [`Truncated`], which each codec turns
//! into its own typed error with `?` (a `From` impl); the fields only the
//! control messages have (names, addresses) give [`DecodeError`] directly.

use core::net::SocketAddr;

use super::error::DecodeError;
use super::fields::{self, Name};

/// The input ended inside a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Truncated;

impl From<Truncated> for DecodeError {
    fn from(_: Truncated) -> Self {
        DecodeError::Truncated
    }
}

/// Reads fields front to back from borrowed bytes; integers are big-endian.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { rest: buf }
    }

    /// The bytes not read yet.
    #[inline]
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Whether every byte was read.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, Truncated> {
        let (&b, rest) = self.rest.split_first().ok_or(Truncated)?;
        self.rest = rest;
        Ok(b)
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, Truncated> {
        self.array().map(u16::from_be_bytes)
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, Truncated> {
        self.array().map(u32::from_be_bytes)
    }

    #[inline]
    pub(crate) fn u64(&mut self) -> Result<u64, Truncated> {
        self.array().map(u64::from_be_bytes)
    }

    /// The next `n` bytes, borrowed.
    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        let (head, rest) = self.rest.split_at_checked(n).ok_or(Truncated)?;
        self.rest = rest;
        Ok(head)
    }

    /// The next `N` bytes, as an array.
    #[inline]
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let (head, rest) = self.rest.split_first_chunk::<N>().ok_or(Truncated)?;
        self.rest = rest;
        Ok(*head)
    }

    /// A QUIC variable-length integer (RFC 9000 §16), any of its four
    /// forms: the top two bits of the first byte give the length (1, 2, 4
    /// or 8 bytes), the rest is the value, big-endian.
    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64, Truncated> {
        let first = *self.rest.first().ok_or(Truncated)?;
        let len = 1usize << (first >> 6);
        let bytes = self.bytes(len)?;
        let mut v = u64::from(first & 0x3f);
        for &b in &bytes[1..] {
            v = (v << 8) | u64::from(b);
        }
        Ok(v)
    }

    /// A name: a length byte, then that many bytes of a valid name.
    pub(crate) fn name(&mut self) -> Result<Name<'a>, DecodeError> {
        let len = self.u8()?;
        let raw = self.bytes(usize::from(len))?;
        Ok(Name::from_bytes(raw)?)
    }

    pub(crate) fn addr(&mut self) -> Result<SocketAddr, DecodeError> {
        match self.opt_addr()? {
            Some(a) => Ok(a),
            None => Err(DecodeError::BadAddressFamily(0)),
        }
    }

    pub(crate) fn opt_addr(&mut self) -> Result<Option<SocketAddr>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            4 => {
                let ip = self.array::<4>()?;
                let port = self.u16()?;
                Ok(Some(fields::v4(ip, port)))
            }
            6 => {
                let ip = self.array::<16>()?;
                let port = self.u16()?;
                Ok(Some(fields::v6(ip, port)))
            }
            other => Err(DecodeError::BadAddressFamily(other)),
        }
    }

    /// Succeeds only if every byte was read.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_front_to_back_and_borrow_the_input() {
        let buf = [1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 5, 6, 7];
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(2));
        assert_eq!(r.u32(), Ok(3));
        assert_eq!(r.u64(), Ok(4));
        let two = r.bytes(2).unwrap();
        assert!(core::ptr::eq(two, &buf[15..17]));
        assert_eq!(r.array::<1>(), Ok([7]));
        assert!(r.is_empty());
        assert_eq!(r.u8(), Err(Truncated));
    }

    #[test]
    fn a_short_read_consumes_nothing() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u32(), Err(Truncated));
        assert_eq!(r.bytes(4), Err(Truncated));
        assert_eq!(r.rest(), &[1, 2, 3]);
        assert_eq!(r.varint(), Ok(1));
        assert_eq!(Reader::new(&[0x40]).varint(), Err(Truncated));
    }
}
