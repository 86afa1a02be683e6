//! The relay's TCP framing: the very packets a peer sends the relay over
//! UDP (a [`super::RELAY_BIND_TYPE`] bind, the peer packets
//! `0x80..=0x83`), each preceded by its length as a 2-byte big-endian
//! integer, for a network that drops all UDP.
//!
//! [`RelayFrameBuffer`] reassembles frames from a byte stream, sans-IO: it
//! holds at most one frame ([`MAX_RELAY_FRAME_LEN`] bytes, fixed, no
//! allocation), and a length of zero or over the maximum is a typed error
//! that ends the stream (TCP gives no way to resynchronise).
//! [`encode_frame`] writes one.

use core::fmt;

use crate::peer::packet::MAX_DATAGRAM_LEN;

/// Bytes of a frame's length prefix.
pub const RELAY_FRAME_HEADER_LEN: usize = 2;
/// The longest packet one frame carries: a peer datagram's maximum.
pub const MAX_RELAY_FRAME_LEN: usize = MAX_DATAGRAM_LEN;

/// Why a byte stream is not a sequence of relay frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayFrameError {
    /// A frame declared a length of zero.
    Empty,
    /// A frame declared more than [`MAX_RELAY_FRAME_LEN`] bytes.
    TooLong(u16),
}

impl fmt::Display for RelayFrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayFrameError::Empty => f.write_str("relay frame of length zero"),
            RelayFrameError::TooLong(n) => write!(
                f,
                "relay frame of {n} bytes (at most {MAX_RELAY_FRAME_LEN})"
            ),
        }
    }
}

/// Writes `packet` as one frame into `out`: its length, then its bytes.
/// `None` if the packet is empty or longer than [`MAX_RELAY_FRAME_LEN`],
/// or `out` is shorter than the frame.
pub fn encode_frame(packet: &[u8], out: &mut [u8]) -> Option<usize> {
    if packet.is_empty() || packet.len() > MAX_RELAY_FRAME_LEN {
        return None;
    }
    let total = RELAY_FRAME_HEADER_LEN + packet.len();
    let out = out.get_mut(..total)?;
    // At most MAX_RELAY_FRAME_LEN: fits a u16.
    out[..RELAY_FRAME_HEADER_LEN].copy_from_slice(&(packet.len() as u16).to_be_bytes());
    out[RELAY_FRAME_HEADER_LEN..].copy_from_slice(packet);
    Some(total)
}

/// Reassembles relay frames from a byte stream: one frame at a time, in a
/// fixed buffer. Once it has failed it stays failed.
pub struct RelayFrameBuffer {
    header: [u8; RELAY_FRAME_HEADER_LEN],
    header_filled: usize,
    buf: [u8; MAX_RELAY_FRAME_LEN],
    filled: usize,
    /// Set when the last call handed out a complete frame.
    delivered: bool,
    failed: Option<RelayFrameError>,
}

impl Default for RelayFrameBuffer {
    fn default() -> Self {
        RelayFrameBuffer {
            header: [0; RELAY_FRAME_HEADER_LEN],
            header_filled: 0,
            buf: [0; MAX_RELAY_FRAME_LEN],
            filled: 0,
            delivered: false,
            failed: None,
        }
    }
}

impl fmt::Debug for RelayFrameBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayFrameBuffer")
            .field("pending", &self.pending())
            .field("failed", &self.failed)
            .finish()
    }
}

impl RelayFrameBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes bytes from the front of `input`, never past the end of the
    /// current frame, and returns that frame's packet once it is complete
    /// (valid until the next call). `input` is advanced past what was
    /// taken; call again while it is not empty.
    pub fn push(&mut self, input: &mut &[u8]) -> Result<Option<&[u8]>, RelayFrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.delivered {
            self.header_filled = 0;
            self.filled = 0;
            self.delivered = false;
        }
        while self.header_filled < RELAY_FRAME_HEADER_LEN {
            let Some((&b, rest)) = input.split_first() else {
                return Ok(None);
            };
            self.header[self.header_filled] = b;
            self.header_filled += 1;
            *input = rest;
        }
        let declared = u16::from_be_bytes(self.header);
        let want = usize::from(declared);
        if want == 0 {
            self.failed = Some(RelayFrameError::Empty);
            return Err(RelayFrameError::Empty);
        }
        if want > MAX_RELAY_FRAME_LEN {
            self.failed = Some(RelayFrameError::TooLong(declared));
            return Err(RelayFrameError::TooLong(declared));
        }
        let take = (want - self.filled).min(input.len());
        self.buf[self.filled..self.filled + take].copy_from_slice(&input[..take]);
        self.filled += take;
        *input = &input[take..];
        if self.filled == want {
            self.delivered = true;
            return Ok(Some(&self.buf[..want]));
        }
        Ok(None)
    }

    /// Bytes held of a frame not yet complete (its prefix included).
    pub fn pending(&self) -> usize {
        if self.delivered {
            0
        } else {
            self.header_filled + self.filled
        }
    }
}

/// Fixed test vectors (PROTOCOL.md shows them byte for byte).
pub mod vectors {
    /// The peer probe vector ([`crate::peer::packet::vectors::PROBE`]) as
    /// one relay frame.
    pub static FRAMED_PROBE: [u8; 20] = [
        0x00, 0x12, 0x54, 0x59, 0x01, 0x80, 0x00, 0x0c, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e, 0x5e,
        0x5e, 0x00, 0x00, 0x00, 0x07,
    ];

    /// Every vector with its name, as PROTOCOL.md marks it.
    pub static ALL: [(&str, &[u8]); 1] = [("RELAY_FRAMED_PROBE", &FRAMED_PROBE)];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::packet::vectors::PROBE;
    use std::vec::Vec;

    fn frames_of(stream: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, RelayFrameError> {
        let mut fb = RelayFrameBuffer::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            let mut input = piece;
            while !input.is_empty() {
                if let Some(p) = fb.push(&mut input)? {
                    out.push(p.to_vec());
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn relay_frame_vector_is_the_probe_with_its_length() {
        let mut out = [0u8; 64];
        let n = encode_frame(&PROBE, &mut out).unwrap();
        assert_eq!(&out[..n], &vectors::FRAMED_PROBE[..]);
        assert_eq!(frames_of(&out[..n], 1), Ok(std::vec![PROBE.to_vec()]));
    }

    #[test]
    fn relay_frames_reassemble_at_every_chunk_size() {
        let mut stream = Vec::new();
        let mut out = [0u8; MAX_RELAY_FRAME_LEN + 2];
        let packets: Vec<Vec<u8>> = (1..=40u16)
            .map(|i| {
                (0..usize::from(i) * 37 % MAX_RELAY_FRAME_LEN + 1)
                    .map(|b| b as u8)
                    .collect()
            })
            .chain([std::vec![9u8; MAX_RELAY_FRAME_LEN]])
            .collect();
        for p in &packets {
            let n = encode_frame(p, &mut out).unwrap();
            stream.extend_from_slice(&out[..n]);
        }
        for chunk in [1, 2, 3, 7, 1000, stream.len()] {
            assert_eq!(frames_of(&stream, chunk).as_ref(), Ok(&packets), "{chunk}");
        }
    }

    #[test]
    fn relay_frame_of_zero_or_too_long_fails_for_good() {
        let mut fb = RelayFrameBuffer::new();
        let mut input: &[u8] = &[0, 0, 1];
        assert_eq!(fb.push(&mut input), Err(RelayFrameError::Empty));
        let mut more: &[u8] = &vectors::FRAMED_PROBE;
        assert_eq!(fb.push(&mut more), Err(RelayFrameError::Empty));
        let too = (MAX_RELAY_FRAME_LEN as u16 + 1).to_be_bytes();
        let mut fb = RelayFrameBuffer::new();
        let mut input: &[u8] = &too;
        assert_eq!(
            fb.push(&mut input),
            Err(RelayFrameError::TooLong(MAX_RELAY_FRAME_LEN as u16 + 1))
        );
        assert!(encode_frame(&[], &mut [0u8; 4]).is_none());
        assert!(encode_frame(&[0u8; MAX_RELAY_FRAME_LEN + 1], &mut [0u8; 2000]).is_none());
        assert!(encode_frame(&PROBE, &mut [0u8; 19]).is_none());
    }

    #[test]
    fn relay_frame_buffer_holds_only_the_partial_frame() {
        let mut fb = RelayFrameBuffer::new();
        let mut input: &[u8] = &vectors::FRAMED_PROBE[..5];
        assert_eq!(fb.push(&mut input), Ok(None));
        assert_eq!(fb.pending(), 5);
        let mut rest: &[u8] = &vectors::FRAMED_PROBE[5..];
        assert_eq!(fb.push(&mut rest), Ok(Some(&PROBE[..])));
        assert_eq!(fb.pending(), 0);
    }
}
