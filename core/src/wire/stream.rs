//! Reassembly of messages from a byte stream (the TCP control connection),
//! in a fixed buffer: a peer that sends garbage or a huge length costs at
//! most [`MAX_MESSAGE_LEN`] bytes and gets a typed error at once.

use super::error::DecodeError;
use super::header::{frame_len, HEADER_LEN};
use super::message::MAX_MESSAGE_LEN;

/// Collects stream bytes until one whole message is in.
///
/// Feed it with [`FrameBuffer::push`] in a loop until the input is empty;
/// each call returns a complete message when one is ready. After an error
/// the stream is not tryst traffic (or is desynchronised) and should be
/// closed; the buffer stays in the error state.
#[derive(Clone)]
pub struct FrameBuffer {
    buf: [u8; MAX_MESSAGE_LEN],
    filled: usize,
    /// Set when the last call handed out a complete message.
    delivered: bool,
    failed: Option<DecodeError>,
}

impl Default for FrameBuffer {
    fn default() -> Self {
        FrameBuffer {
            buf: [0; MAX_MESSAGE_LEN],
            filled: 0,
            delivered: false,
            failed: None,
        }
    }
}

impl core::fmt::Debug for FrameBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrameBuffer")
            .field("filled", &self.filled)
            .field("failed", &self.failed)
            .finish()
    }
}

impl FrameBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes bytes from the front of `input`, never past the end of the
    /// current message, and returns that message once it is complete.
    /// `input` is advanced past what was taken.
    pub fn push(&mut self, input: &mut &[u8]) -> Result<Option<&[u8]>, DecodeError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.delivered {
            self.filled = 0;
            self.delivered = false;
        }
        // Fill the header, learn the length from it, then fill the rest.
        loop {
            let want = match self.wanted() {
                Ok(n) => n,
                Err(e) => return Err(self.fail(e)),
            };
            if self.filled == want && self.filled >= HEADER_LEN {
                self.delivered = true;
                return Ok(Some(&self.buf[..self.filled]));
            }
            if input.is_empty() {
                return Ok(None);
            }
            let take = (want - self.filled).min(input.len());
            self.buf[self.filled..self.filled + take].copy_from_slice(&input[..take]);
            self.filled += take;
            *input = &input[take..];
        }
    }

    /// Bytes held of a message not yet complete.
    pub fn pending(&self) -> usize {
        if self.delivered {
            0
        } else {
            self.filled
        }
    }

    /// How many bytes the current message needs in all, as far as known.
    fn wanted(&self) -> Result<usize, DecodeError> {
        match frame_len(&self.buf[..self.filled])? {
            Some(n) => Ok(n),
            None => Ok(HEADER_LEN),
        }
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.failed = Some(e);
        e
    }
}

#[cfg(test)]
mod tests {
    use super::super::{vectors, Message};
    use super::*;
    use std::vec::Vec;

    fn all_vectors_back_to_back() -> Vec<u8> {
        vectors::ALL
            .iter()
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    }

    fn collect(stream: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, DecodeError> {
        let mut fb = FrameBuffer::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk.max(1)) {
            let mut input = piece;
            while !input.is_empty() {
                if let Some(frame) = fb.push(&mut input)? {
                    out.push(frame.to_vec());
                }
            }
        }
        assert_eq!(fb.pending(), 0, "no half message left over");
        Ok(out)
    }

    #[test]
    fn messages_split_anywhere_come_out_whole_and_in_order() {
        let stream = all_vectors_back_to_back();
        for chunk in [1, 2, 5, 6, 7, 64, 4096, stream.len()] {
            let frames = collect(&stream, chunk).unwrap();
            assert_eq!(frames.len(), vectors::ALL.len(), "chunk {chunk}");
            for (frame, (_, expected)) in frames.iter().zip(vectors::ALL) {
                assert_eq!(frame.as_slice(), *expected);
                assert!(Message::decode(frame).is_ok());
            }
        }
    }

    #[test]
    fn foreign_bytes_fail_at_the_first_byte_and_stay_failed() {
        let mut fb = FrameBuffer::new();
        let mut input: &[u8] = b"GET / HTTP/1.1\r\n";
        assert_eq!(fb.push(&mut input), Err(DecodeError::BadMagic));
        let mut more: &[u8] = &vectors::POLL;
        assert_eq!(fb.push(&mut more), Err(DecodeError::BadMagic));
    }

    #[test]
    fn a_huge_declared_length_fails_without_buffering() {
        let mut fb = FrameBuffer::new();
        let mut input: &[u8] = &[b'T', b'Y', 1, 0x62, 0xff, 0xff, 0, 0, 0];
        assert_eq!(fb.push(&mut input), Err(DecodeError::BodyTooLong(0xffff)));
    }
}
