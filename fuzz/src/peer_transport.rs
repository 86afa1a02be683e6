//! The `peer_transport` harness: the frame decoder and two
//! [`Transport`]s fed arbitrary operation sequences.
//!
//! - Any bytes into [`Frames`]: no panic; every ACK's ranges descend,
//!   never below 0, at most `1 + MAX_ACK_RANGES` of them; whatever decodes
//!   as STREAM/DATAGRAM/MAX_DATA/CLOSE writes back to the same bytes.
//! - Transport `a` sends a stream to `b` (and both send datagrams) through
//!   a pipe the input controls (deliver any queued packet, drop, duplicate,
//!   reorder), interleaved with raw and structured garbage packets with any
//!   packet number, clock moves, extends, finishes, datagrams and closes.
//!   Nothing may panic; `write_packet` stays within its buffer and
//!   `MAX_PAYLOAD_LEN`; `b` only receives the bytes `a`'s source holds;
//!   after `handle_timeout(now)` the next timer is later than `now` or
//!   there is a packet to send; events stay bounded.

use arbitrary::{Arbitrary, Unstructured};
use tryst_core::peer::transport::frame::{self, Frame, Frames, Writer, MAX_ACK_RANGES};
use tryst_core::peer::transport::{
    PeerSink, StreamSource, Transport, TransportConfig, TransportEvent, MAX_EVENTS, MAX_PAYLOAD_LEN,
};
use tryst_core::time::Instant;

/// Most packets waiting in the harness pipe.
const MAX_PIPE: usize = 64;
/// Most operations one input runs.
const MAX_OPS: usize = 512;

/// One structured frame, written with the transport's own encoders.
#[derive(Debug, Clone, Arbitrary)]
pub enum FuzzFrame {
    /// PADDING run.
    Padding(u8),
    /// PING.
    Ping,
    /// ACK of ranges `(gap, len)` below `largest`.
    Ack {
        /// Largest acknowledged.
        largest: u16,
        /// Delay field.
        delay: u32,
        /// Gaps and lengths.
        ranges: Vec<(u8, u8)>,
    },
    /// MAX_DATA.
    MaxData(u64),
    /// STREAM of `len` pattern bytes.
    Stream {
        /// Offset.
        offset: u32,
        /// Length.
        len: u16,
        /// FIN.
        fin: bool,
    },
    /// DATAGRAM.
    Datagram(Vec<u8>),
    /// ACK_FREQUENCY.
    AckFrequency(u64),
    /// CLOSE.
    Close {
        /// Reason.
        reason: u8,
        /// Bytes sent.
        sent: u64,
        /// Bytes received.
        received: u64,
    },
}

/// One operation.
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    /// Let `a` (or `b`) write packets into the pipe.
    Send {
        /// Which side.
        from_b: bool,
        /// How many at most.
        count: u8,
    },
    /// Deliver the queued packet at `index` (mod the queue), or drop or
    /// duplicate it.
    Pipe {
        /// Which packet.
        index: u8,
        /// 0 deliver, 1 drop, 2 deliver and keep a copy.
        action: u8,
    },
    /// Advance the clock and run both sides' timers.
    Advance {
        /// Microseconds (scaled ×16).
        micros: u16,
    },
    /// Jump to the earliest timer of both sides.
    NextTimer,
    /// Raw bytes to one side as a packet.
    Raw {
        /// Which side.
        to_b: bool,
        /// Packet number.
        pn: u64,
        /// Payload.
        payload: Vec<u8>,
    },
    /// Structured frames to one side as a packet.
    Frames {
        /// Which side.
        to_b: bool,
        /// Packet number.
        pn: u16,
        /// The frames.
        frames: Vec<FuzzFrame>,
    },
    /// More of `a`'s stream becomes available.
    Extend(u32),
    /// `a`'s stream ends.
    Finish(u32),
    /// A datagram from one side.
    Datagram {
        /// Which side.
        from_b: bool,
        /// Its length.
        len: u16,
    },
    /// One side closes.
    Close {
        /// Which side.
        b: bool,
        /// Reason.
        reason: u8,
    },
}

fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 9)) as u8
}

struct Source {
    len: u64,
}

impl StreamSource for Source {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> usize {
        let n = self.len.saturating_sub(offset).min(buf.len() as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(offset + i as u64);
        }
        n
    }
}

#[derive(Default)]
struct Sink {
    /// Whether only the genuine peer's packets reached it (then every byte
    /// must match the pattern).
    genuine_only: bool,
}

impl PeerSink for Sink {
    fn stream_data(&mut self, offset: u64, data: &[u8]) {
        if self.genuine_only {
            for (i, &b) in data.iter().enumerate() {
                assert_eq!(
                    b,
                    pattern(offset + i as u64),
                    "stream byte at {}",
                    offset + i as u64
                );
            }
        }
    }

    fn datagram(&mut self, _data: &[u8]) {}
}

struct Side {
    t: Transport,
    pn: u64,
    source: Source,
    sink: Sink,
    events: usize,
}

/// Checks the frame decoder on any bytes.
pub fn check_frames(data: &[u8]) {
    for frame in Frames::new(data) {
        let Ok(frame) = frame else { break };
        match frame {
            Frame::Ack(ack) => {
                let mut prev: Option<u64> = None;
                let mut n = 0;
                for (low, high) in ack.ranges() {
                    assert!(low <= high);
                    if let Some(p) = prev {
                        assert!(high + 1 < p, "ranges overlap or touch");
                    }
                    prev = Some(low);
                    n += 1;
                }
                assert!(n <= MAX_ACK_RANGES + 1);
                assert_eq!(ack.ranges().next().map(|r| r.1), Some(ack.largest));
            }
            Frame::Stream { offset, data, fin } => {
                let mut buf = vec![0u8; data.len() + 16];
                let mut w = Writer::new(&mut buf);
                if let Ok(len) = u16::try_from(data.len()) {
                    if frame::write_stream_header(&mut w, offset, len, fin).is_some() {
                        w.bytes(data).expect("room");
                        let n = w.len();
                        let back: Vec<_> = Frames::new(&buf[..n]).collect();
                        assert_eq!(back, [Ok(Frame::Stream { offset, data, fin })]);
                    }
                }
            }
            _ => {}
        }
    }
}

fn write_frames(frames: &[FuzzFrame], buf: &mut [u8]) -> usize {
    let mut w = Writer::new(buf);
    for f in frames {
        let ok = match f {
            FuzzFrame::Padding(n) => (0..=*n).try_for_each(|_| w.u8(frame::TYPE_PADDING)),
            FuzzFrame::Ping => w.u8(frame::TYPE_PING),
            FuzzFrame::Ack {
                largest,
                delay,
                ranges,
            } => (|| {
                w.u8(frame::TYPE_ACK)?;
                w.varint(u64::from(*largest))?;
                w.varint(u64::from(*delay))?;
                let count = ranges.len().min(MAX_ACK_RANGES + 2);
                w.varint(count as u64)?;
                w.varint(0)?;
                for (gap, len) in &ranges[..count] {
                    w.varint(u64::from(*gap))?;
                    w.varint(u64::from(*len))?;
                }
                Some(())
            })(),
            FuzzFrame::MaxData(v) => frame::write_max_data(&mut w, *v),
            FuzzFrame::Stream { offset, len, fin } => {
                let len = (*len).min(1400);
                let offset = u64::from(*offset);
                frame::write_stream_header(&mut w, offset, len, *fin).and_then(|_| {
                    let mut data = [0u8; 1400];
                    Source { len: u64::MAX }.read_at(offset, &mut data[..usize::from(len)]);
                    w.bytes(&data[..usize::from(len)])
                })
            }
            FuzzFrame::Datagram(d) => frame::write_datagram(&mut w, d),
            FuzzFrame::AckFrequency(v) => frame::write_ack_frequency(&mut w, *v),
            FuzzFrame::Close {
                reason,
                sent,
                received,
            } => frame::write_close(&mut w, *reason, *sent, *received),
        };
        if ok.is_none() {
            break;
        }
    }
    w.len()
}

fn drain(side: &mut Side) -> bool {
    let mut received = false;
    while let Some(e) = side.t.poll_event() {
        side.events += 1;
        received |= matches!(e, TransportEvent::StreamReceived { .. });
    }
    received
}

fn send(
    side: &mut Side,
    now: Instant,
    count: u8,
    pipe: &mut Vec<(bool, u64, Vec<u8>)>,
    to_b: bool,
) {
    let mut buf = [0u8; MAX_PAYLOAD_LEN + 64];
    for _ in 0..count {
        let size = side.t.max_payload();
        assert!(size <= MAX_PAYLOAD_LEN);
        match side
            .t
            .write_packet(now, side.pn, &mut buf[..size], &mut side.source)
        {
            Some(n) => {
                assert!(n <= size);
                if pipe.len() < MAX_PIPE {
                    pipe.push((to_b, side.pn, buf[..n].to_vec()));
                }
                side.pn += 1;
            }
            None => break,
        }
    }
}

fn timers(side: &mut Side, now: Instant, pipe: &mut Vec<(bool, u64, Vec<u8>)>, to_b: bool) -> bool {
    if side.t.poll_timeout().is_some_and(|t| t <= now) {
        side.t.handle_timeout(now);
        if let Some(t) = side.t.poll_timeout() {
            if t <= now {
                let mut buf = [0u8; MAX_PAYLOAD_LEN];
                let size = side.t.max_payload();
                let sent = side
                    .t
                    .write_packet(now, side.pn, &mut buf[..size], &mut side.source);
                let Some(n) = sent else {
                    panic!("timer {t:?} <= now {now:?} with nothing to send");
                };
                if pipe.len() < MAX_PIPE {
                    pipe.push((to_b, side.pn, buf[..n].to_vec()));
                }
                side.pn += 1;
            }
        }
    }
    drain(side)
}

/// What a run reached, for the harness's own tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TransportSummary {
    /// Packets delivered through the pipe.
    pub delivered: u64,
    /// Whether `b` reported the whole stream received.
    pub stream_received: bool,
}

/// Runs the frame decoder check on the input, then the input as operations.
pub fn run(data: &[u8]) -> TransportSummary {
    let mut summary = TransportSummary::default();
    check_frames(data);
    let mut u = Unstructured::new(data);
    let mut now = Instant::ZERO;
    let config = TransportConfig {
        initial_rtt: core::time::Duration::from_millis(10),
        receive_window: 1 << 16,
        ..TransportConfig::default()
    };
    let new_side = |len| Side {
        t: Transport::new(Instant::ZERO, config),
        pn: 0,
        source: Source { len },
        sink: Sink { genuine_only: true },
        events: 0,
    };
    let mut a = new_side(u64::MAX);
    let mut b = new_side(0);
    let mut pipe: Vec<(bool, u64, Vec<u8>)> = Vec::new();
    let mut tainted = false;
    for _ in 0..MAX_OPS {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        match op {
            Op::Send { from_b, count } => {
                if from_b {
                    send(&mut b, now, count, &mut pipe, false);
                } else {
                    send(&mut a, now, count, &mut pipe, true);
                }
            }
            Op::Pipe { index, action } => {
                if pipe.is_empty() {
                    continue;
                }
                let i = usize::from(index) % pipe.len();
                let (to_b, pn, payload) = if action % 3 == 2 {
                    pipe[i].clone()
                } else {
                    pipe.remove(i)
                };
                if action % 3 != 1 {
                    let side = if to_b { &mut b } else { &mut a };
                    let result = side.t.handle_packet(now, pn, &payload, &mut side.sink);
                    summary.delivered += 1;
                    // Between two genuine transports every packet is taken
                    // (garbage could have moved limits, so only then).
                    if !tainted {
                        result.expect("a transport's own packets are well-formed");
                    }
                }
            }
            Op::Advance { micros } => {
                now = now + core::time::Duration::from_micros(u64::from(micros) * 16);
                timers(&mut a, now, &mut pipe, true);
                summary.stream_received |= timers(&mut b, now, &mut pipe, false);
            }
            Op::NextTimer => {
                let next = [a.t.poll_timeout(), b.t.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                if let Some(t) = next {
                    now = now.max(t);
                    timers(&mut a, now, &mut pipe, true);
                    summary.stream_received |= timers(&mut b, now, &mut pipe, false);
                }
            }
            Op::Raw { to_b, pn, payload } => {
                let side = if to_b { &mut b } else { &mut a };
                side.sink.genuine_only = false;
                tainted = true;
                let _ = side.t.handle_packet(now, pn, &payload, &mut side.sink);
            }
            Op::Frames { to_b, pn, frames } => {
                let side = if to_b { &mut b } else { &mut a };
                side.sink.genuine_only = false;
                tainted = true;
                let mut buf = [0u8; 4096];
                let n = write_frames(&frames, &mut buf);
                let _ = side
                    .t
                    .handle_packet(now, u64::from(pn), &buf[..n], &mut side.sink);
            }
            Op::Extend(n) => a.t.stream_extend(u64::from(n)),
            Op::Finish(n) => {
                let _ = a.t.stream_finish(u64::from(n));
            }
            Op::Datagram { from_b, len } => {
                let side = if from_b { &mut b } else { &mut a };
                let data = vec![0x5a; usize::from(len) % 2048];
                let _ = side.t.send_datagram(&data);
            }
            Op::Close { b: on_b, reason } => {
                let side = if on_b { &mut b } else { &mut a };
                side.t.close(now, reason);
            }
        }
        drain(&mut a);
        summary.stream_received |= drain(&mut b);
        assert!(a.events <= MAX_OPS * (MAX_EVENTS + 1));
    }
    summary
}

/// A seed input: `a` extends and finishes a stream of `stream_len` bytes,
/// then `rounds` times both sides send up to 20 packets, the pipe delivers
/// them in order, and the clock jumps to the next timer. For the corpus
/// (`genuine_exchange_seed(20_000, 12)` gets the stream through in ~3 KB).
pub fn genuine_exchange_seed(stream_len: u32, rounds: usize) -> Vec<u8> {
    // Ops are read with `arbitrary`: a variant is a little-endian u32 `x`
    // mapped to `(x * variants) >> 32`.
    let variant =
        |i: u32, n: u32| ((u64::from(i) << 32).div_ceil(u64::from(n)) as u32).to_le_bytes();
    const OPS: u32 = 10;
    // Starts with two `Send { from_b: false, count: 0 }` (no-ops), which
    // the frame decoder reads as padding.
    let mut input = vec![0u8; 12];
    input.extend(variant(6, OPS)); // Extend
    input.extend(stream_len.to_le_bytes());
    input.extend(variant(7, OPS)); // Finish
    input.extend(stream_len.to_le_bytes());
    for _ in 0..rounds {
        for from_b in [0, 1] {
            input.extend(variant(0, OPS)); // Send
            input.extend([from_b, 20]);
            for _ in 0..20 {
                input.extend(variant(1, OPS)); // Pipe: deliver the first
                input.extend([0, 0]);
            }
        }
        input.extend(variant(3, OPS)); // NextTimer
    }
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random inputs through the whole harness: no check fires.
    #[test]
    fn random_inputs_pass_the_harness() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..1500usize {
            let input: Vec<u8> = (0..len % 700)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            run(&input);
        }
    }

    /// A genuine exchange gets the whole stream through.
    #[test]
    fn genuine_exchange_passes_the_harness() {
        let summary = run(&genuine_exchange_seed(100_000, 200));
        assert!(summary.stream_received, "{summary:?}");
        let summary = run(&genuine_exchange_seed(20_000, 12));
        assert!(summary.stream_received, "{summary:?}");
    }
}
