//! The one reliable byte stream each side sends: send state by offset (the
//! application keeps the bytes; lost ranges are re-read from it) and
//! receive state by ranges (delivered to the sink as they arrive, each byte
//! once), with flow control by a moving maximum offset.

use super::ranges::RangeSet;

/// Most distinct ranges of received stream bytes above the delivered prefix
/// (a frame that would need more is refused and retransmitted later).
pub const MAX_STREAM_RECV_RANGES: usize = 256;
/// Most distinct ranges of acknowledged stream bytes above the acked prefix
/// (past that, acks of the highest ranges are forgotten and those bytes
/// resent: safe, only wasteful).
pub const MAX_STREAM_ACKED_RANGES: usize = 64;
/// Most distinct ranges queued for retransmission (past that, neighbours
/// merge and a few acked bytes may be resent).
pub const MAX_RETRANSMIT_RANGES: usize = 64;
/// The stream window each side may assume before the peer's first MAX_DATA
/// (and the smallest receive window a transport accepts). More than the
/// initial congestion window sends in the first round trip, so it costs no
/// time: the first ACK carries the real limit.
pub const INITIAL_MAX_DATA: u64 = 64 << 10;

/// Why the local stream could not be finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamError {
    /// The final length is below bytes already made available or sent.
    BelowAvailable,
    /// The stream was already finished with another length.
    AlreadyFinished,
    /// Above 2^62 - 1.
    TooLong,
}

impl core::fmt::Display for StreamError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            StreamError::BelowAvailable => "final length below the bytes already available",
            StreamError::AlreadyFinished => "stream already finished with another length",
            StreamError::TooLong => "stream length above 2^62 - 1",
        })
    }
}

impl core::error::Error for StreamError {}

/// A chunk chosen to send: `[offset, offset + len)`, `retransmit` if it
/// comes from the loss queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// First byte.
    pub offset: u64,
    /// Bytes (may be 0 for a lone FIN).
    pub len: u64,
    /// Whether these bytes were sent before.
    pub retransmit: bool,
}

/// Send side of the local stream.
#[derive(Debug, Clone)]
pub struct SendStream {
    /// Bytes `[0, available)` can be read from the source.
    pub available: u64,
    /// The final length, once finished.
    pub fin: Option<u64>,
    /// Next never-sent offset.
    pub frontier: u64,
    /// The peer lets us send below this offset.
    pub limit: u64,
    /// Every byte below this was acknowledged.
    pub acked_prefix: u64,
    acked: RangeSet<MAX_STREAM_ACKED_RANGES>,
    retransmit: RangeSet<MAX_RETRANSMIT_RANGES>,
    /// The FIN must be (re)sent.
    pub fin_pending: bool,
    /// The FIN was acknowledged.
    pub fin_acked: bool,
    /// The "everything acked" event was raised.
    pub done_reported: bool,
}

impl Default for SendStream {
    fn default() -> Self {
        Self::new()
    }
}

impl SendStream {
    /// Nothing available yet.
    pub const fn new() -> Self {
        SendStream {
            available: 0,
            fin: None,
            frontier: 0,
            limit: INITIAL_MAX_DATA,
            acked_prefix: 0,
            acked: RangeSet::new(),
            retransmit: RangeSet::new(),
            fin_pending: false,
            fin_acked: false,
            done_reported: false,
        }
    }

    /// More bytes readable (monotonic; capped at the final length).
    pub fn extend(&mut self, available: u64) {
        let cap = self.fin.unwrap_or(super::frame::MAX_VARINT);
        self.available = self.available.max(available.min(cap));
    }

    /// Marks the final length.
    pub fn finish(&mut self, total: u64) -> Result<(), StreamError> {
        if total > super::frame::MAX_VARINT {
            return Err(StreamError::TooLong);
        }
        match self.fin {
            Some(f) if f == total => return Ok(()),
            Some(_) => return Err(StreamError::AlreadyFinished),
            None => {}
        }
        if total < self.available || total < self.frontier {
            return Err(StreamError::BelowAvailable);
        }
        self.fin = Some(total);
        self.fin_pending = true;
        Ok(())
    }

    /// The peer raised our limit.
    pub fn on_max_data(&mut self, max: u64) {
        self.limit = self.limit.max(max);
    }

    /// Whether something could be sent now (new bytes within the limit,
    /// queued retransmissions, or a FIN).
    pub fn has_sendable(&self) -> bool {
        !self.retransmit.is_empty()
            || self.frontier < self.available.min(self.limit)
            || (self.fin_pending && self.fin.is_some_and(|f| self.frontier >= f))
    }

    /// Whether new data is held back only by the peer's window.
    pub fn flow_blocked(&self) -> bool {
        self.frontier >= self.limit && self.available > self.limit
    }

    /// Chooses the next chunk of at most `room` bytes: lost bytes first
    /// (skipping any since acknowledged), then new bytes.
    pub fn next_chunk(&mut self, room: u64) -> Option<Chunk> {
        while let Some(r) = self.retransmit.first() {
            let start = r.start.max(self.acked_prefix);
            match self.acked.first_gap_in(start, r.end) {
                None => {
                    self.retransmit.pop_first();
                }
                Some(gap) => {
                    // Drop the acked part before the gap.
                    self.retransmit.remove(r.start, gap.start);
                    let len = (gap.end - gap.start).min(room);
                    if len == 0 {
                        return None;
                    }
                    return Some(Chunk {
                        offset: gap.start,
                        len,
                        retransmit: true,
                    });
                }
            }
        }
        let end = self.available.min(self.limit);
        if self.frontier < end && room > 0 {
            return Some(Chunk {
                offset: self.frontier,
                len: (end - self.frontier).min(room),
                retransmit: false,
            });
        }
        if self.fin_pending && self.fin.is_some_and(|f| self.frontier >= f) {
            return Some(Chunk {
                offset: self.frontier,
                len: 0,
                retransmit: false,
            });
        }
        None
    }

    /// `len` bytes of `chunk` were written into a packet; returns whether
    /// the frame carries FIN.
    pub fn on_written(&mut self, chunk: Chunk, len: u64) -> bool {
        let end = chunk.offset + len;
        if chunk.retransmit {
            self.retransmit.remove(chunk.offset, end);
        } else {
            self.frontier = self.frontier.max(end);
        }
        let fin = self.fin == Some(end) && !self.fin_acked;
        if fin {
            self.fin_pending = false;
        }
        fin
    }

    /// A packet with `[offset, offset + len)` (and `fin`) was acknowledged.
    pub fn on_acked(&mut self, offset: u64, len: u64, fin: bool) {
        if fin {
            self.fin_acked = true;
            self.fin_pending = false;
        }
        let end = offset + len;
        if end <= self.acked_prefix {
            return;
        }
        let start = offset.max(self.acked_prefix);
        if start == self.acked_prefix {
            self.acked_prefix = end;
            // Absorb acked ranges that now touch the prefix.
            while let Some(r) = self.acked.first() {
                if r.start > self.acked_prefix {
                    break;
                }
                self.acked_prefix = self.acked_prefix.max(r.end);
                self.acked.pop_first();
            }
        } else if self.acked.insert(start, end).is_err() {
            // Forget the highest acked range instead: those bytes are resent.
            if let Some(last) = self.acked.last() {
                if last.start > start {
                    self.acked.remove(last.start, last.end);
                    self.retransmit.insert_covering(last.start, last.end);
                    let _ = self.acked.insert(start, end);
                } else {
                    self.retransmit.insert_covering(start, end);
                }
            }
        }
    }

    /// A packet with `[offset, offset + len)` (and `fin`) was lost.
    pub fn on_lost(&mut self, offset: u64, len: u64, fin: bool) {
        if fin && !self.fin_acked {
            self.fin_pending = true;
        }
        let end = offset + len;
        let start = offset.max(self.acked_prefix);
        if start < end {
            self.retransmit.insert_covering(start, end);
        }
    }

    /// Whether every byte up to the FIN was acknowledged.
    pub fn all_acked(&self) -> Option<u64> {
        let fin = self.fin?;
        (self.fin_acked && self.acked_prefix >= fin).then_some(fin)
    }

    /// Bytes queued for retransmission (for stats/tests).
    pub fn retransmit_ranges(&self) -> usize {
        self.retransmit.len()
    }
}

/// What a received STREAM frame did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Received {
    /// New bytes delivered to the sink.
    pub new_bytes: u64,
    /// Whether the contiguous prefix grew.
    pub progressed: bool,
}

/// Receive side of the peer's stream.
#[derive(Debug, Clone)]
pub struct RecvStream {
    /// Every byte below this was delivered to the sink.
    pub delivered: u64,
    ranges: RangeSet<MAX_STREAM_RECV_RANGES>,
    /// The peer's final length, once known.
    pub fin: Option<u64>,
    /// The receive window (config).
    pub window: u64,
    /// The largest limit advertised so far.
    pub advertised: u64,
    /// The largest stream end received.
    pub highest: u64,
    /// The "stream complete" event was raised.
    pub done_reported: bool,
}

impl RecvStream {
    /// A stream with a receive window of `window` bytes.
    pub fn new(window: u64) -> Self {
        RecvStream {
            delivered: 0,
            ranges: RangeSet::new(),
            fin: None,
            window,
            advertised: INITIAL_MAX_DATA,
            highest: 0,
            done_reported: false,
        }
    }

    /// The offset the peer may send below, to advertise.
    pub fn max_data(&self) -> u64 {
        self.delivered
            .saturating_add(self.window)
            .max(self.advertised)
    }

    /// Whether `[offset, offset + len)` can be recorded: false when it would
    /// need one range more than [`MAX_STREAM_RECV_RANGES`] (the packet is
    /// then dropped unacknowledged and its data comes again later).
    pub fn has_room(&self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        let start = offset.max(self.delivered);
        !(start < end && start > self.delivered && !self.ranges.can_insert(start, end))
    }

    /// Checks a STREAM frame before anything is delivered (so a refused
    /// packet changes nothing): flow control and final size.
    pub fn check(&self, offset: u64, len: u64, fin: bool) -> Result<(), super::FrameError> {
        let end = offset.saturating_add(len);
        if end > self.max_data() {
            return Err(super::FrameError::FlowControl);
        }
        if let Some(f) = self.fin {
            if end > f || (fin && end != f) {
                return Err(super::FrameError::FinalSize);
            }
        } else if fin && end < self.highest {
            return Err(super::FrameError::FinalSize);
        }
        Ok(())
    }

    /// Takes a checked STREAM frame: hands each new byte range to `deliver`.
    pub fn receive(
        &mut self,
        offset: u64,
        data: &[u8],
        fin: bool,
        mut deliver: impl FnMut(u64, &[u8]),
    ) -> Received {
        let len = data.len() as u64;
        let end = offset + len;
        if fin {
            self.fin = Some(end);
        }
        self.highest = self.highest.max(end);
        let mut out = Received::default();
        let mut cursor = offset.max(self.delivered);
        // Deliver the parts not yet received, in order.
        while cursor < end {
            let gap = self.ranges.first_gap_in(cursor, end);
            let Some(gap) = gap else { break };
            let from = (gap.start - offset) as usize;
            let to = (gap.end - offset) as usize;
            deliver(gap.start, &data[from..to]);
            out.new_bytes += gap.end - gap.start;
            cursor = gap.end;
        }
        let start = offset.max(self.delivered);
        if start < end {
            if start == self.delivered {
                self.delivered = end;
                out.progressed = true;
            } else {
                // Checked beforehand; a failure here only forgets a range
                // (bytes would be delivered again: sinks tolerate overlap).
                let _ = self.ranges.insert(start, end);
            }
            while let Some(r) = self.ranges.first() {
                if r.start > self.delivered {
                    break;
                }
                self.delivered = self.delivered.max(r.end);
                self.ranges.pop_first();
                out.progressed = true;
            }
        }
        out
    }

    /// Whether every byte up to the FIN was delivered.
    pub fn complete(&self) -> Option<u64> {
        let fin = self.fin?;
        (self.delivered >= fin).then_some(fin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn lost_bytes_are_resent_before_new_ones() {
        let mut s = SendStream::new();
        s.extend(10_000);
        let c = s.next_chunk(1000).unwrap();
        assert_eq!((c.offset, c.len, c.retransmit), (0, 1000, false));
        s.on_written(c, 1000);
        let c2 = s.next_chunk(1000).unwrap();
        s.on_written(c2, 1000);
        s.on_lost(0, 1000, false);
        let c3 = s.next_chunk(600).unwrap();
        assert_eq!((c3.offset, c3.len, c3.retransmit), (0, 600, true));
        s.on_written(c3, 600);
        let c4 = s.next_chunk(1000).unwrap();
        assert_eq!((c4.offset, c4.len, c4.retransmit), (600, 400, true));
    }

    #[test]
    fn acked_bytes_are_not_retransmitted() {
        let mut s = SendStream::new();
        s.extend(3000);
        for _ in 0..3 {
            let c = s.next_chunk(1000).unwrap();
            s.on_written(c, 1000);
        }
        s.on_lost(1000, 1000, false);
        s.on_acked(1000, 1000, false); // a late ack of the "lost" packet
        assert_eq!(s.next_chunk(1000), None);
    }

    #[test]
    fn fin_is_acked_only_with_all_bytes() {
        let mut s = SendStream::new();
        s.extend(2000);
        s.finish(2000).unwrap();
        let c = s.next_chunk(1000).unwrap();
        assert!(!s.on_written(c, 1000));
        let c = s.next_chunk(1000).unwrap();
        assert!(s.on_written(c, 1000));
        s.on_acked(1000, 1000, true);
        assert_eq!(s.all_acked(), None);
        s.on_acked(0, 1000, false);
        assert_eq!(s.all_acked(), Some(2000));
    }

    #[test]
    fn finish_after_everything_sent_sends_a_lone_fin() {
        let mut s = SendStream::new();
        s.extend(100);
        let c = s.next_chunk(1000).unwrap();
        s.on_written(c, 100);
        s.finish(100).unwrap();
        let c = s.next_chunk(1000).unwrap();
        assert_eq!((c.offset, c.len), (100, 0));
        assert!(s.on_written(c, 0));
        assert_eq!(s.next_chunk(1000), None);
    }

    #[test]
    fn flow_control_limits_new_data() {
        let mut s = SendStream::new();
        s.extend(INITIAL_MAX_DATA + 5000);
        while let Some(c) = s.next_chunk(1 << 16) {
            s.on_written(c, c.len);
        }
        assert_eq!(s.frontier, INITIAL_MAX_DATA);
        assert!(s.flow_blocked());
        s.on_max_data(INITIAL_MAX_DATA + 1000);
        assert_eq!(s.next_chunk(1 << 16).unwrap().len, 1000);
    }

    #[test]
    fn receiver_delivers_each_byte_once_and_tracks_the_prefix() {
        let mut r = RecvStream::new(1 << 20);
        let data: Vec<u8> = (0..100u8).collect();
        let mut got = Vec::new();
        let res = r.receive(50, &data[50..80], false, |o, d| got.push((o, d.len())));
        assert!(!res.progressed);
        let res = r.receive(0, &data[0..60], false, |o, d| got.push((o, d.len())));
        assert!(res.progressed);
        assert_eq!(r.delivered, 80);
        let res = r.receive(40, &data[40..100], true, |o, d| got.push((o, d.len())));
        assert_eq!(res.new_bytes, 20);
        assert_eq!(got, [(50, 30), (0, 50), (80, 20)]);
        assert_eq!(r.complete(), Some(100));
    }

    #[test]
    fn receiver_refuses_data_past_its_window() {
        let r = RecvStream::new(1000);
        assert!(r.check(0, 100, false).is_ok());
        assert_eq!(
            r.check(INITIAL_MAX_DATA, 1, false),
            Err(crate::peer::transport::FrameError::FlowControl)
        );
    }

    #[test]
    fn receiver_refuses_a_changed_final_size() {
        let mut r = RecvStream::new(1 << 20);
        assert!(r.check(0, 10, true).is_ok());
        r.receive(0, &[0; 10], true, |_, _| {});
        assert!(r.check(5, 10, false).is_err());
        assert!(r.check(0, 5, true).is_err());
        assert!(r.check(0, 10, true).is_ok());
    }
}
