//! The frames inside a peer Data packet's plaintext, and their bytes.
//!
//! A payload is a sequence of frames, each starting with a one-byte type.
//! Integers are QUIC variable-length integers (RFC 9000 §16): the top two
//! bits of the first byte give the length (1, 2, 4 or 8 bytes), the rest is
//! the value, big-endian, at most 2^62 - 1. The byte layout is documented in
//! `PROTOCOL.md` ("Peer frames").
//!
//! | type        | name     | fields                                                  |
//! |-------------|----------|---------------------------------------------------------|
//! | `0x00`      | PADDING  | none (a run of zero bytes is one padding frame)         |
//! | `0x01`      | PING     | none; ack-eliciting                                     |
//! | `0x02`      | ACK      | largest, ack delay (µs), range count, first range, (gap, range)* |
//! | `0x04`      | MAX_DATA | maximum stream offset the peer may send up to           |
//! | `0x08/0x09` | STREAM   | offset, length, data; `0x09` marks the final byte (FIN) |
//! | `0x0a`      | DATAGRAM | length, data                                            |
//! | `0x0c`      | CLOSE    | reason (1 byte), bytes sent, bytes received             |
//! | `0x0e`      | ACK_FREQUENCY | ack-eliciting packets the receiver may take before it must ack |

use core::fmt;

use crate::wire::{Reader, Truncated};

/// The largest value a variable-length integer carries (2^62 - 1).
pub const MAX_VARINT: u64 = (1 << 62) - 1;
/// Most ACK ranges (after the first) one ACK frame carries or accepts.
pub const MAX_ACK_RANGES: usize = 32;

/// Frame type byte: PADDING.
pub const TYPE_PADDING: u8 = 0x00;
/// Frame type byte: PING.
pub const TYPE_PING: u8 = 0x01;
/// Frame type byte: ACK.
pub const TYPE_ACK: u8 = 0x02;
/// Frame type byte: MAX_DATA.
pub const TYPE_MAX_DATA: u8 = 0x04;
/// Frame type byte: STREAM without FIN.
pub const TYPE_STREAM: u8 = 0x08;
/// Frame type byte: STREAM whose last byte is the stream's last (FIN).
pub const TYPE_STREAM_FIN: u8 = 0x09;
/// Frame type byte: DATAGRAM.
pub const TYPE_DATAGRAM: u8 = 0x0a;
/// Frame type byte: CLOSE.
pub const TYPE_CLOSE: u8 = 0x0c;
/// Frame type byte: ACK_FREQUENCY.
pub const TYPE_ACK_FREQUENCY: u8 = 0x0e;

/// The bytes a STREAM frame adds before its data at most (type, 8-byte
/// offset, 2-byte length).
pub const STREAM_HEADER_MAX: usize = 1 + 8 + 2;
/// The bytes a DATAGRAM frame adds before its data at most (type, 2-byte length).
pub const DATAGRAM_HEADER_MAX: usize = 1 + 2;
/// Most bytes a STREAM or DATAGRAM frame's data may hold (the length is
/// always written in two bytes).
pub const MAX_FRAME_DATA: usize = 16383;

/// Why a payload's frames could not be read or used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The payload ended inside a frame.
    Truncated,
    /// A frame type this version does not know.
    UnknownType(u8),
    /// An ACK frame with more than [`MAX_ACK_RANGES`] ranges, or ranges
    /// below packet number 0.
    BadAck,
    /// A STREAM frame whose end is beyond 2^62 - 1.
    StreamTooLong,
    /// STREAM data beyond the receive window this side advertised.
    FlowControl,
    /// A FIN disagreeing with an earlier FIN or with data already received.
    FinalSize,
    /// A payload without any frame.
    Empty,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Truncated => f.write_str("frame truncated"),
            FrameError::UnknownType(t) => write!(f, "unknown frame type {t:#04x}"),
            FrameError::BadAck => f.write_str("malformed ACK frame"),
            FrameError::StreamTooLong => f.write_str("stream frame beyond 2^62"),
            FrameError::FlowControl => f.write_str("stream data beyond the receive window"),
            FrameError::FinalSize => f.write_str("stream final size changed"),
            FrameError::Empty => f.write_str("packet without frames"),
        }
    }
}

impl core::error::Error for FrameError {}

impl From<Truncated> for FrameError {
    fn from(_: Truncated) -> Self {
        FrameError::Truncated
    }
}

/// The encoded length of `v` as a varint (values above [`MAX_VARINT`] are
/// never written).
pub const fn varint_len(v: u64) -> usize {
    if v < 1 << 6 {
        1
    } else if v < 1 << 14 {
        2
    } else if v < 1 << 30 {
        4
    } else {
        8
    }
}

/// A cursor writing into a caller buffer; every write checks the room.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// Writes from the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.pos
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Bytes still free.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Appends one byte.
    pub fn u8(&mut self, b: u8) -> Option<()> {
        *self.buf.get_mut(self.pos)? = b;
        self.pos += 1;
        Some(())
    }

    /// Appends `bytes`.
    pub fn bytes(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(bytes.len())?;
        self.buf.get_mut(self.pos..end)?.copy_from_slice(bytes);
        self.pos = end;
        Some(())
    }

    /// Appends `v` as a varint in its shortest form (clamped to [`MAX_VARINT`]).
    pub fn varint(&mut self, v: u64) -> Option<()> {
        let v = v.min(MAX_VARINT);
        match varint_len(v) {
            1 => self.u8(v as u8),
            2 => self.bytes(&((v as u16) | 0x4000).to_be_bytes()),
            4 => self.bytes(&((v as u32) | 0x8000_0000).to_be_bytes()),
            _ => self.bytes(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
        }
    }

    /// Appends `v` (at most [`MAX_FRAME_DATA`]) as a two-byte varint.
    pub fn varint2(&mut self, v: u16) -> Option<()> {
        if usize::from(v) > MAX_FRAME_DATA {
            return None;
        }
        self.bytes(&(v | 0x4000).to_be_bytes())
    }

    /// The unwritten tail, to fill in place (then [`Writer::advance`]).
    pub fn tail(&mut self) -> &mut [u8] {
        &mut self.buf[self.pos..]
    }

    /// Marks `n` bytes of the tail as written (clamped to the room).
    pub fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }

    /// Fills the rest with zero bytes (one PADDING frame).
    pub fn pad_to_end(&mut self) {
        self.buf[self.pos..].fill(TYPE_PADDING);
        self.pos = self.buf.len();
    }
}

/// One decoded frame, borrowing its data from the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Zero bytes, `len` of them.
    Padding {
        /// How many padding bytes.
        len: usize,
    },
    /// Asks for an acknowledgement; carries nothing.
    Ping,
    /// Acknowledges packet numbers.
    Ack(AckFrame<'a>),
    /// The peer may send stream bytes below this offset.
    MaxData(u64),
    /// Stream bytes at an offset.
    Stream {
        /// Offset of the first byte.
        offset: u64,
        /// The bytes.
        data: &'a [u8],
        /// Whether `offset + data.len()` is the stream's final size.
        fin: bool,
    },
    /// One unreliable datagram.
    Datagram(&'a [u8]),
    /// The sender asks to be acknowledged after this many ack-eliciting
    /// packets (out-of-order arrivals are still acknowledged at once).
    AckFrequency(u64),
    /// The sender closes the connection.
    Close {
        /// Application reason code.
        reason: u8,
        /// Bytes the sender sent (stream and datagrams).
        bytes_sent: u64,
        /// Bytes the sender received (stream and datagrams).
        bytes_received: u64,
    },
}

impl Frame<'_> {
    /// Whether a packet holding this frame must be acknowledged.
    pub fn is_ack_eliciting(&self) -> bool {
        !matches!(
            self,
            Frame::Padding { .. }
                | Frame::Ack(_)
                | Frame::MaxData(_)
                | Frame::AckFrequency(_)
                | Frame::Close { .. }
        )
    }
}

/// A validated ACK frame; iterate its ranges with [`AckFrame::ranges`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckFrame<'a> {
    /// The largest packet number acknowledged.
    pub largest: u64,
    /// Microseconds the sender held the ack after receiving `largest`.
    pub ack_delay_us: u64,
    first_range: u64,
    range_count: usize,
    ranges: &'a [u8],
}

impl<'a> AckFrame<'a> {
    /// The acknowledged packet numbers as inclusive `(low, high)` pairs,
    /// highest first.
    pub fn ranges(&self) -> AckRanges<'a> {
        AckRanges {
            next: Some((self.largest - self.first_range, self.largest)),
            remaining: self.range_count,
            reader: Reader::new(self.ranges),
        }
    }
}

/// Iterator over an [`AckFrame`]'s ranges (validated when the frame was read).
#[derive(Debug, Clone)]
pub struct AckRanges<'a> {
    next: Option<(u64, u64)>,
    remaining: usize,
    reader: Reader<'a>,
}

impl Iterator for AckRanges<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let current = self.next.take()?;
        if self.remaining > 0 {
            self.remaining -= 1;
            self.next = next_ack_range(&mut self.reader, current.0).ok();
        }
        Some(current)
    }
}

/// Reads one (gap, length) pair below the range starting at `low`.
fn next_ack_range(reader: &mut Reader<'_>, low: u64) -> Result<(u64, u64), FrameError> {
    let gap = reader.varint()?;
    let len = reader.varint()?;
    let high = low
        .checked_sub(gap)
        .and_then(|v| v.checked_sub(2))
        .ok_or(FrameError::BadAck)?;
    let new_low = high.checked_sub(len).ok_or(FrameError::BadAck)?;
    Ok((new_low, high))
}

/// Iterates the frames of a payload; stops at the first error.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    reader: Reader<'a>,
    failed: bool,
}

impl<'a> Frames<'a> {
    /// The frames of `payload`.
    pub fn new(payload: &'a [u8]) -> Self {
        Frames {
            reader: Reader::new(payload),
            failed: false,
        }
    }

    fn read(&mut self) -> Result<Frame<'a>, FrameError> {
        let r = &mut self.reader;
        let ty = r.u8()?;
        match ty {
            TYPE_PADDING => {
                let rest = r.rest();
                let zeros = rest.iter().take_while(|&&b| b == 0).count();
                r.bytes(zeros)?;
                Ok(Frame::Padding { len: zeros + 1 })
            }
            TYPE_PING => Ok(Frame::Ping),
            TYPE_ACK => {
                let largest = r.varint()?;
                let ack_delay_us = r.varint()?;
                let count = r.varint()?;
                let first_range = r.varint()?;
                if count > MAX_ACK_RANGES as u64 || first_range > largest {
                    return Err(FrameError::BadAck);
                }
                let range_count = count as usize;
                // Validate every range now so iteration cannot fail later.
                let start = r.rest();
                let mut low = largest - first_range;
                for _ in 0..range_count {
                    low = next_ack_range(r, low)?.0;
                }
                let used = start.len() - r.rest().len();
                Ok(Frame::Ack(AckFrame {
                    largest,
                    ack_delay_us,
                    first_range,
                    range_count,
                    ranges: &start[..used],
                }))
            }
            TYPE_MAX_DATA => Ok(Frame::MaxData(r.varint()?)),
            TYPE_STREAM | TYPE_STREAM_FIN => {
                let offset = r.varint()?;
                let len = r.varint()?;
                let len = usize::try_from(len).map_err(|_| FrameError::Truncated)?;
                let data = r.bytes(len)?;
                if offset.saturating_add(len as u64) > MAX_VARINT {
                    return Err(FrameError::StreamTooLong);
                }
                Ok(Frame::Stream {
                    offset,
                    data,
                    fin: ty == TYPE_STREAM_FIN,
                })
            }
            TYPE_DATAGRAM => {
                let len = r.varint()?;
                let len = usize::try_from(len).map_err(|_| FrameError::Truncated)?;
                Ok(Frame::Datagram(r.bytes(len)?))
            }
            TYPE_ACK_FREQUENCY => Ok(Frame::AckFrequency(r.varint()?)),
            TYPE_CLOSE => {
                let reason = r.u8()?;
                let bytes_sent = r.varint()?;
                let bytes_received = r.varint()?;
                Ok(Frame::Close {
                    reason,
                    bytes_sent,
                    bytes_received,
                })
            }
            other => Err(FrameError::UnknownType(other)),
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.reader.is_empty() {
            return None;
        }
        let result = self.read();
        self.failed = result.is_err();
        Some(result)
    }
}

/// Writes an ACK frame for `ranges` (ascending, disjoint, as a
/// [`super::ranges::RangeSet`] holds them), highest first, as many ranges as
/// fit (at most 1 + [`MAX_ACK_RANGES`]). Returns the lowest packet number
/// acknowledged, or `None` (nothing written) if there is nothing to ack or
/// not even the first range fits.
pub fn write_ack(
    w: &mut Writer<'_>,
    ranges: &[super::ranges::Range],
    ack_delay_us: u64,
) -> Option<u64> {
    let (&top, below) = ranges.split_last()?;
    let largest = top.end.checked_sub(1)?;
    let first_range = largest - top.start;
    // Count the ranges that fit: header first.
    let header = 1
        + varint_len(largest)
        + varint_len(ack_delay_us.min(MAX_VARINT))
        + 1
        + varint_len(first_range);
    if header > w.remaining() {
        return None;
    }
    let mut room = w.remaining() - header;
    let mut count = 0usize;
    let mut low = top.start;
    for r in below.iter().rev().take(MAX_ACK_RANGES) {
        let gap = low - r.end - 1;
        let len = r.end - 1 - r.start;
        let need = varint_len(gap) + varint_len(len);
        if need > room {
            break;
        }
        room -= need;
        count += 1;
        low = r.start;
    }
    w.u8(TYPE_ACK)?;
    w.varint(largest)?;
    w.varint(ack_delay_us)?;
    w.varint(count as u64)?;
    w.varint(first_range)?;
    let mut low = top.start;
    for r in below.iter().rev().take(count) {
        w.varint(low - r.end - 1)?;
        w.varint(r.end - 1 - r.start)?;
        low = r.start;
    }
    Some(low)
}

/// Writes a MAX_DATA frame.
pub fn write_max_data(w: &mut Writer<'_>, max: u64) -> Option<()> {
    if 1 + varint_len(max) > w.remaining() {
        return None;
    }
    w.u8(TYPE_MAX_DATA)?;
    w.varint(max)
}

/// Writes a DATAGRAM frame holding `data` (at most [`MAX_FRAME_DATA`] bytes).
pub fn write_datagram(w: &mut Writer<'_>, data: &[u8]) -> Option<()> {
    let len = u16::try_from(data.len()).ok()?;
    if DATAGRAM_HEADER_MAX + data.len() > w.remaining() {
        return None;
    }
    w.u8(TYPE_DATAGRAM)?;
    w.varint2(len)?;
    w.bytes(data)
}

/// Writes an ACK_FREQUENCY frame.
pub fn write_ack_frequency(w: &mut Writer<'_>, threshold: u64) -> Option<()> {
    if 1 + varint_len(threshold) > w.remaining() {
        return None;
    }
    w.u8(TYPE_ACK_FREQUENCY)?;
    w.varint(threshold)
}

/// Writes a CLOSE frame.
pub fn write_close(
    w: &mut Writer<'_>,
    reason: u8,
    bytes_sent: u64,
    bytes_received: u64,
) -> Option<()> {
    if 2 + varint_len(bytes_sent) + varint_len(bytes_received) > w.remaining() {
        return None;
    }
    w.u8(TYPE_CLOSE)?;
    w.u8(reason)?;
    w.varint(bytes_sent)?;
    w.varint(bytes_received)
}

/// The header length of a STREAM frame at `offset` (data length in 2 bytes).
pub const fn stream_header_len(offset: u64) -> usize {
    1 + varint_len(offset) + 2
}

/// Writes a STREAM frame header for `len` bytes at `offset`; the caller
/// then writes the data (the header's length must match what follows).
pub fn write_stream_header(w: &mut Writer<'_>, offset: u64, len: u16, fin: bool) -> Option<()> {
    if stream_header_len(offset) > w.remaining() {
        return None;
    }
    w.u8(if fin { TYPE_STREAM_FIN } else { TYPE_STREAM })?;
    w.varint(offset)?;
    w.varint2(len)
}

#[cfg(test)]
mod tests {
    use super::super::ranges::RangeSet;
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    #[test]
    fn varints_roundtrip_in_all_four_lengths() {
        for v in [0, 63, 64, 16383, 16384, (1 << 30) - 1, 1 << 30, MAX_VARINT] {
            let mut buf = [0u8; 8];
            let mut w = Writer::new(&mut buf);
            w.varint(v).unwrap();
            let n = w.len();
            assert_eq!(n, varint_len(v));
            assert_eq!(Reader::new(&buf[..n]).varint(), Ok(v));
        }
    }

    #[test]
    fn ack_frame_roundtrips_its_ranges() {
        let mut set = RangeSet::<8>::new();
        for (s, e) in [(0, 3), (5, 6), (10, 20)] {
            set.insert(s, e).unwrap();
        }
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        assert_eq!(write_ack(&mut w, set.as_slice(), 1000), Some(0));
        let n = w.len();
        let frames: Vec<_> = Frames::new(&buf[..n]).collect();
        let Ok(Frame::Ack(ack)) = &frames[0] else {
            panic!("{frames:?}")
        };
        assert_eq!(ack.largest, 19);
        assert_eq!(ack.ack_delay_us, 1000);
        let got: Vec<_> = ack.ranges().collect();
        assert_eq!(got, [(10, 19), (5, 5), (0, 2)]);
    }

    #[test]
    fn ack_frame_bytes_match_the_protocol_example() {
        let mut set = RangeSet::<8>::new();
        for (s, e) in [(0, 3), (5, 6), (10, 20)] {
            set.insert(s, e).unwrap();
        }
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        write_ack(&mut w, set.as_slice(), 1000).unwrap();
        let n = w.len();
        assert_eq!(
            &buf[..n],
            &[0x02, 0x13, 0x43, 0xe8, 0x02, 0x09, 0x03, 0x00, 0x01, 0x02]
        );
    }

    #[test]
    fn ack_below_zero_is_rejected() {
        // largest 1, first range 1, one more range with gap 0: would go below 0.
        let bytes = [TYPE_ACK, 1, 0, 1, 1, 0, 0];
        assert_eq!(Frames::new(&bytes).next(), Some(Err(FrameError::BadAck)));
    }

    #[test]
    fn truncated_stream_frame_is_an_error() {
        let bytes = [TYPE_STREAM, 0, 5, 1, 2];
        assert_eq!(Frames::new(&bytes).next(), Some(Err(FrameError::Truncated)));
    }

    #[test]
    fn unknown_type_is_an_error() {
        assert_eq!(
            Frames::new(&[0x3f]).next(),
            Some(Err(FrameError::UnknownType(0x3f)))
        );
    }

    #[test]
    fn padding_run_is_one_frame() {
        let bytes = [TYPE_PING, 0, 0, 0, 0];
        let frames: Vec<_> = Frames::new(&bytes).collect();
        assert_eq!(frames, [Ok(Frame::Ping), Ok(Frame::Padding { len: 4 })]);
    }

    proptest! {
        #![proptest_config(proptest_config!(512, "core-peer-transport.txt"))]

        /// Any bytes: the frame iterator ends without panicking, and every
        /// ACK frame's ranges are descending and non-negative.
        #[test]
        fn any_payload_decodes_or_errors(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for frame in Frames::new(&bytes) {
                if let Ok(Frame::Ack(ack)) = frame {
                    let mut prev: Option<u64> = None;
                    let mut n = 0;
                    for (lo, hi) in ack.ranges() {
                        prop_assert!(lo <= hi);
                        if let Some(p) = prev { prop_assert!(hi + 1 < p); }
                        prev = Some(lo);
                        n += 1;
                    }
                    prop_assert!(n <= MAX_ACK_RANGES + 1);
                }
            }
        }

        /// An ACK written from any set of packet numbers reads back as a
        /// subset holding the highest ranges, in any buffer size.
        #[test]
        fn ack_frames_acknowledge_only_received_numbers(
            pns in proptest::collection::vec(0u64..5000, 1..300),
            delay in 0u64..1_000_000,
            room in 8usize..200,
        ) {
            let mut set = RangeSet::<64>::new();
            for pn in pns {
                let _ = set.insert(pn, pn + 1);
            }
            let mut buf = std::vec![0u8; room];
            let mut w = Writer::new(&mut buf);
            let Some(lowest) = write_ack(&mut w, set.as_slice(), delay) else {
                return Ok(());
            };
            let n = w.len();
            let frames: Vec<_> = Frames::new(&buf[..n]).collect();
            prop_assert_eq!(frames.len(), 1);
            let Ok(Frame::Ack(ack)) = &frames[0] else { panic!("{frames:?}") };
            prop_assert_eq!(ack.largest, set.last().unwrap().end - 1);
            prop_assert_eq!(ack.ack_delay_us, delay);
            let mut covered = 0u64;
            for (lo, hi) in ack.ranges() {
                for pn in lo..=hi {
                    prop_assert!(set.contains(pn));
                }
                covered += hi - lo + 1;
                prop_assert!(lo >= lowest);
            }
            // Everything from `lowest` up is acknowledged.
            let expected: u64 = set
                .as_slice()
                .iter()
                .filter(|r| r.start >= lowest)
                .map(|r| r.end - r.start)
                .sum();
            prop_assert_eq!(covered, expected);
        }

        /// Stream, datagram, max-data and close frames read back as written.
        #[test]
        fn written_frames_read_back(offset in 0u64..MAX_VARINT - 2000, data in proptest::collection::vec(any::<u8>(), 0..1000),
                                    fin: bool, max in 0..MAX_VARINT, reason: u8, a in 0..MAX_VARINT, b in 0..MAX_VARINT) {
            let mut buf = [0u8; 2200];
            let mut w = Writer::new(&mut buf);
            write_stream_header(&mut w, offset, data.len() as u16, fin).unwrap();
            w.bytes(&data).unwrap();
            write_datagram(&mut w, &data).unwrap();
            write_max_data(&mut w, max).unwrap();
            write_ack_frequency(&mut w, max).unwrap();
            write_close(&mut w, reason, a, b).unwrap();
            let n = w.len();
            let frames: Vec<_> = Frames::new(&buf[..n]).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(frames, std::vec![
                Frame::Stream { offset, data: &data, fin },
                Frame::Datagram(&data),
                Frame::MaxData(max),
                Frame::AckFrequency(max),
                Frame::Close { reason, bytes_sent: a, bytes_received: b },
            ]);
        }
    }
}
