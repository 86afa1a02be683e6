//! Envelopes: the Noise handshake of a secure channel and the sealed records
//! that carry every later message on it (see PROTOCOL.md, "Secure channels").
//! The codec only frames their bytes; the cryptography lives elsewhere.

use super::put::Put;

use super::error::{DecodeError, EncodeError};
use super::fields::TAG_LEN;
use super::message::{Body, MAX_BODY_LEN, MAX_PLAIN_MESSAGE_LEN};
use super::reader::Reader;
use super::registration::{TICKET_BINDER_LEN, TICKET_LEN};

/// Bytes a Noise IK first message adds to its payload: ephemeral key (32),
/// encrypted static key (32 + 16) and the payload's tag (16).
pub const NOISE_IK_OVERHEAD: usize = 32 + 48 + TAG_LEN;
/// Longest Noise message a handshake envelope carries: the IK first message
/// around the longest plain message.
pub const MAX_HANDSHAKE_LEN: usize = NOISE_IK_OVERHEAD + MAX_PLAIN_MESSAGE_LEN;
/// Longest sealed record: the longest plain message and its tag.
pub const MAX_SEALED_LEN: usize = MAX_PLAIN_MESSAGE_LEN + TAG_LEN;

/// Reads the opaque rest of a body, checking it lies within `min..=max`.
fn opaque<'a>(r: &mut Reader<'a>, min: usize, max: usize) -> Result<&'a [u8], DecodeError> {
    let rest = r.rest();
    if rest.len() < min || rest.len() > max {
        return Err(DecodeError::BadPayloadLength(rest.len()));
    }
    Ok(r.bytes(rest.len())?)
}

/// Refuses to encode an opaque payload the decoder would refuse.
fn check_opaque(payload: &[u8], min: usize, max: usize) -> Result<(), EncodeError> {
    if (min..=max).contains(&payload.len()) {
        Ok(())
    } else {
        Err(EncodeError::PayloadOutOfBounds(payload.len()))
    }
}

/// Initiator -> responder: the first Noise handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct HandshakeInit<'a> {
    /// The Noise message, [`NOISE_IK_OVERHEAD`]..=[`MAX_HANDSHAKE_LEN`] bytes.
    pub noise: &'a [u8],
}

impl<'a> Body<'a> for HandshakeInit<'a> {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(HandshakeInit {
            noise: opaque(r, 1, MAX_HANDSHAKE_LEN)?,
        })
    }
    fn check(&self) -> Result<(), EncodeError> {
        check_opaque(self.noise, 1, MAX_HANDSHAKE_LEN)
    }
    fn body_len(&self) -> usize {
        self.noise.len()
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_slice(self.noise);
    }
}

/// Longest Noise message a [`TicketedHandshakeInit`] carries: what fits in
/// [`MAX_BODY_LEN`] after the ticket and binder.
pub const MAX_TICKETED_NOISE_LEN: usize = MAX_BODY_LEN - TICKET_LEN - TICKET_BINDER_LEN;

/// Initiator -> session server: a [`HandshakeInit`] with a registration
/// ticket in clear before the Noise bytes, and a binder that proves the
/// sender holds the ticket's secret (so a copied ticket is useless on other
/// Noise bytes). The server checks both before any public-key work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct TicketedHandshakeInit<'a> {
    /// The ticket of a `RegistrationTicket`, as received.
    pub ticket: [u8; TICKET_LEN],
    /// HMAC-SHA-256 of `noise` under the ticket's secret.
    pub binder: [u8; TICKET_BINDER_LEN],
    /// The Noise message, 1..=[`MAX_TICKETED_NOISE_LEN`] bytes.
    pub noise: &'a [u8],
}

impl<'a> TicketedHandshakeInit<'a> {
    /// The plain handshake init inside.
    pub fn init(&self) -> HandshakeInit<'a> {
        HandshakeInit { noise: self.noise }
    }
}

impl<'a> Body<'a> for TicketedHandshakeInit<'a> {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(TicketedHandshakeInit {
            ticket: r.array()?,
            binder: r.array()?,
            noise: opaque(r, 1, MAX_TICKETED_NOISE_LEN)?,
        })
    }
    fn check(&self) -> Result<(), EncodeError> {
        check_opaque(self.noise, 1, MAX_TICKETED_NOISE_LEN)
    }
    fn body_len(&self) -> usize {
        TICKET_LEN + TICKET_BINDER_LEN + self.noise.len()
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_slice(&self.ticket);
        b.put_slice(&self.binder);
        b.put_slice(self.noise);
    }
}

/// Responder -> initiator: the channel number it assigned and the second
/// Noise handshake message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct HandshakeReply<'a> {
    /// Names the channel in every sealed record that follows.
    pub channel: u64,
    /// The Noise message, 1..=[`MAX_HANDSHAKE_LEN`] bytes.
    pub noise: &'a [u8],
}

impl<'a> Body<'a> for HandshakeReply<'a> {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(HandshakeReply {
            channel: r.u64()?,
            noise: opaque(r, 1, MAX_HANDSHAKE_LEN)?,
        })
    }
    fn check(&self) -> Result<(), EncodeError> {
        check_opaque(self.noise, 1, MAX_HANDSHAKE_LEN)
    }
    fn body_len(&self) -> usize {
        8 + self.noise.len()
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u64(self.channel);
        b.put_slice(self.noise);
    }
}

/// Either direction, after the handshake: one message encrypted under the
/// channel's key for that direction, with its explicit nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Sealed<'a> {
    /// The channel, as assigned in [`HandshakeReply`].
    pub channel: u64,
    /// Strictly unique per direction of the channel; the receiver keeps a replay window.
    pub nonce: u64,
    /// Ciphertext and tag, [`TAG_LEN`]..=[`MAX_SEALED_LEN`] bytes.
    pub sealed: &'a [u8],
}

impl<'a> Body<'a> for Sealed<'a> {
    fn parse(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Ok(Sealed {
            channel: r.u64()?,
            nonce: r.u64()?,
            sealed: opaque(r, TAG_LEN, MAX_SEALED_LEN)?,
        })
    }
    fn check(&self) -> Result<(), EncodeError> {
        check_opaque(self.sealed, TAG_LEN, MAX_SEALED_LEN)
    }
    fn body_len(&self) -> usize {
        8 + 8 + self.sealed.len()
    }
    fn emit<B: Put>(&self, b: &mut B) {
        b.put_u64(self.channel);
        b.put_u64(self.nonce);
        b.put_slice(self.sealed);
    }
}
