//! A cursor over a message body, built on nom's complete parsers, that turns
//! every shortfall into [`DecodeError::Truncated`] and every bad field into
//! its own typed error.

use core::net::SocketAddr;

use nom::bytes::complete::take;
use nom::number::complete::{be_u16, be_u32, be_u64, be_u8};
use nom::IResult;

use super::error::DecodeError;
use super::fields::{self, Name};

type NomResult<'a, T> = IResult<&'a [u8], T, nom::error::Error<&'a [u8]>>;

/// Reads fields front to back from a borrowed body.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Self {
        Reader { rest: body }
    }

    fn run<T>(&mut self, parsed: NomResult<'a, T>) -> Result<T, DecodeError> {
        let (rest, value) = parsed.map_err(|_| DecodeError::Truncated)?;
        self.rest = rest;
        Ok(value)
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.run(be_u8(self.rest))
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.run(be_u16(self.rest))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.run(be_u32(self.rest))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.run(be_u64(self.rest))
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.run(take(n)(self.rest))
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let slice = self.bytes(N)?;
        // `take(N)` returned exactly N bytes, so the conversion always succeeds.
        slice.try_into().map_err(|_| DecodeError::Truncated)
    }

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
