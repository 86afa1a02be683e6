//! The send side of a transfer: which stream bytes are which (header, file,
//! trailer), how many of them the session may have now, and when it next
//! needs a wake-up for that.
//!
//! The driver owns the file and its hash: it reads file bytes when asked
//! ([`FileRead`]), hashes the prefix the machine says was read
//! ([`TransferSender::hash_target`]), and reports the digest or why there
//! is none ([`TransferSender::hashed`]). After every input it polls
//! ([`TransferSender::poll`]) until `None` and applies each [`SendStep`] to
//! the session, and arms a timer for [`TransferSender::poll_timeout`].
//!
//! A resumable sender (its header is version 2) offers only its header
//! until the receiver said where to start ([`TransferSender::resume_at`],
//! from the receiver's share `Resume` message): then the stream's file
//! part is `[offset, size)` of the file, and the trailer is still the
//! SHA-256 of the whole file (the driver hashes the skipped prefix too:
//! [`TransferSender::hash_target`] covers it).

use core::time::Duration;

use super::{HashFailure, TransferHeader, MAX_HEADER_LEN, TRAILER_LEN};
use crate::time::Instant;

/// How often, about, a rate-limited send makes more of its file available:
/// each step releases this long's worth of bytes at the rate.
pub const RATE_STEP: Duration = Duration::from_millis(20);

/// Microseconds in a second, for rate arithmetic.
const MICROS_PER_SEC: u128 = 1_000_000;

/// Where the file's bytes come from: the driver reads `buf.len()` bytes (or
/// fewer) of the file at `offset` and says how many.
pub trait FileRead {
    /// Fills `buf` with file bytes at `offset`; how many (0: none can be read).
    fn read_file_at(&mut self, offset: u64, buf: &mut [u8]) -> usize;
}

/// What the session must be told about the local stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum SendStep {
    /// Stream bytes `[0, n)` are readable (`stream_extend(n)`).
    Extend(u64),
    /// The whole stream, `n` bytes, is readable: its end (`stream_finish(n)`).
    Finish(u64),
    /// The file could not be hashed (it shrank, a read failed): the trailer
    /// is never offered and the session must end ([`super::session_end`]
    /// says `Failed`).
    Fail(HashFailure),
}

/// One file being sent on a session's stream.
#[derive(Debug, Clone)]
pub struct TransferSender {
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    size: u64,
    /// Bytes a second; `None` as fast as the path allows.
    rate: Option<u64>,
    /// When the throttled send started (the data channel came up).
    started: Option<Instant>,
    /// File bytes `[0, frontier)` were read at least once.
    frontier: u64,
    /// The file offset the stream's file part starts at; `None` while a
    /// resumable sender waits for the receiver's word.
    start: Option<u64>,
    digest: Option<[u8; TRAILER_LEN]>,
    failure: Option<HashFailure>,
    /// Stream bytes made available so far.
    available: u64,
    /// The whole stream was made available, or the failure reported.
    finished: bool,
}

impl TransferSender {
    /// A sender of the file `header` announces, at most `rate` bytes a
    /// second (a rate of 0 counts as 1).
    pub fn new(header: &TransferHeader, rate: Option<u64>) -> TransferSender {
        let mut bytes = [0u8; MAX_HEADER_LEN];
        // A header always fits MAX_HEADER_LEN.
        let header_len = header.encode(&mut bytes).unwrap_or(0);
        TransferSender {
            header: bytes,
            header_len,
            size: header.size,
            rate: rate.map(|r| r.max(1)),
            started: None,
            frontier: 0,
            start: if header.is_resumable() { None } else { Some(0) },
            digest: None,
            failure: None,
            available: 0,
            finished: false,
        }
    }

    /// Sets the rate (before [`TransferSender::start`]; later it applies
    /// from the start as if it had always been this).
    pub fn set_rate(&mut self, rate: Option<u64>) {
        self.rate = rate.map(|r| r.max(1));
    }

    /// The data channel is up: a throttled send's clock starts (the first
    /// call counts).
    pub fn start(&mut self, now: Instant) {
        self.started.get_or_insert(now);
    }

    /// The file's size.
    pub fn file_size(&self) -> u64 {
        self.size
    }

    /// Length of the encoded header.
    pub fn header_len(&self) -> u64 {
        self.header_len as u64
    }

    /// The receiver's word: the file's bytes start at `offset` (what it
    /// already holds and verified). Taken once, and only by a resumable
    /// sender that waits for it; an offset past the file's end (no honest
    /// receiver sends one) counts as 0. What it took: the start offset, or
    /// `None` when it was not waiting.
    pub fn resume_at(&mut self, offset: u64) -> Option<u64> {
        if self.start.is_some() {
            return None;
        }
        let start = if offset > self.size { 0 } else { offset };
        self.start = Some(start);
        self.frontier = self.frontier.max(start);
        Some(start)
    }

    /// Whether this resumable sender still waits for the receiver's word.
    pub fn awaiting_offer(&self) -> bool {
        self.start.is_none()
    }

    /// The file offset the stream's file bytes start at (0 unless
    /// resumed); `None` while it waits for the receiver's word.
    pub fn start_offset(&self) -> Option<u64> {
        self.start
    }

    /// File bytes the stream carries (the part not skipped).
    fn carried(&self) -> u64 {
        self.size - self.start.unwrap_or(0)
    }

    /// The stream's whole length: header, file (from the start offset), trailer.
    pub fn stream_len(&self) -> u64 {
        self.header_len() + self.carried() + TRAILER_LEN as u64
    }

    /// The file offset reached once the first `stream_bytes` of the
    /// stream crossed (the start offset of a resumed send included).
    pub fn file_bytes_in(&self, stream_bytes: u64) -> u64 {
        self.start.unwrap_or(0)
            + stream_bytes
                .saturating_sub(self.header_len())
                .min(self.carried())
    }

    /// The stream bytes readable now: all of them once the digest is
    /// known, the header and the file before (only the header while a
    /// resumable sender waits for the receiver's word).
    pub fn readable_len(&self) -> u64 {
        if self.start.is_none() {
            self.header_len()
        } else if self.digest.is_some() {
            self.stream_len()
        } else {
            self.header_len() + self.carried()
        }
    }

    /// File bytes `[0, n)` were read at least once, or skipped because the
    /// receiver holds them, and may be hashed (a retransmission re-reads
    /// old offsets: this only grows).
    pub fn hash_target(&self) -> u64 {
        self.frontier
    }

    /// The driver's hash of the whole file: its digest, or why there is none.
    pub fn hashed(&mut self, result: Result<[u8; TRAILER_LEN], HashFailure>) {
        if self.digest.is_some() || self.failure.is_some() {
            return;
        }
        match result {
            Ok(digest) => self.digest = Some(digest),
            Err(failure) => self.failure = Some(failure),
        }
    }

    /// The digest, once the driver gave it.
    pub fn digest(&self) -> Option<[u8; TRAILER_LEN]> {
        self.digest
    }

    /// Why the file could not be hashed, if it could not.
    pub fn failure(&self) -> Option<HashFailure> {
        self.failure
    }

    /// Fills `buf` with the stream's bytes at `offset`, file bytes read
    /// through `file`; how many (0 past the end, or at the trailer while
    /// the digest is not known).
    pub fn read<F: FileRead + ?Sized>(
        &mut self,
        offset: u64,
        buf: &mut [u8],
        file: &mut F,
    ) -> usize {
        let header_len = self.header_len();
        let data_end = header_len + self.carried();
        let start = self.start.unwrap_or(0);
        let total = if self.start.is_some() {
            self.stream_len()
        } else {
            header_len
        };
        let mut done = 0;
        let mut at = offset;
        while done < buf.len() && at < total {
            let out = &mut buf[done..];
            let n = if at < header_len {
                copy_from(&self.header[..self.header_len], at, out)
            } else if at < data_end {
                let want = usize::try_from(data_end - at).map_or(out.len(), |w| w.min(out.len()));
                let n = file
                    .read_file_at(start + at - header_len, &mut out[..want])
                    .min(want);
                let end = start + at - header_len + n as u64;
                self.frontier = self.frontier.max(end);
                n
            } else {
                match &self.digest {
                    Some(digest) => copy_from(digest, at - data_end, out),
                    None => 0,
                }
            };
            if n == 0 {
                break;
            }
            done += n;
            at += n as u64;
        }
        done
    }

    /// Stream bytes the rate allows at `now` (all without a rate; none
    /// before the start with one).
    /// Stream bytes one [`RATE_STEP`] of `rate` releases (at least 1).
    fn step_bytes(rate: u64) -> u64 {
        u64::try_from(u128::from(rate) * RATE_STEP.as_micros() / MICROS_PER_SEC)
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// What the rate allows by `now`, in whole steps: bytes are released
    /// once per [`RATE_STEP`], never in slivers, so a driver polling at
    /// every turn of its loop finds nothing new between two deadlines.
    fn allowed(&self, now: Instant) -> u64 {
        match (self.rate, self.started) {
            (None, _) => u64::MAX,
            (Some(rate), Some(started)) => {
                let micros = u128::from(now.saturating_duration_since(started).as_micros() as u64);
                let bytes =
                    u64::try_from(u128::from(rate) * micros / MICROS_PER_SEC).unwrap_or(u64::MAX);
                let step = Self::step_bytes(rate);
                bytes / step * step
            }
            (Some(_), None) => 0,
        }
    }

    /// What the session must be told now; call until `None` after every
    /// input (a read, the digest, the start, a timeout).
    pub fn poll(&mut self, now: Instant) -> Option<SendStep> {
        if self.finished {
            return None;
        }
        if let Some(failure) = self.failure {
            self.finished = true;
            return Some(SendStep::Fail(failure));
        }
        let total = self.stream_len();
        let next = self
            .allowed(now)
            .min(self.readable_len())
            .max(self.available);
        if next >= total {
            self.available = total;
            self.finished = true;
            return Some(SendStep::Finish(total));
        }
        if next > self.available {
            self.available = next;
            return Some(SendStep::Extend(next));
        }
        None
    }

    /// When a throttled send next makes more bytes available (`None`: no
    /// timer needed; the start or the digest is what it waits for).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (Some(rate), Some(started)) = (self.rate, self.started) else {
            return None;
        };
        if self.finished || self.failure.is_some() {
            return None;
        }
        let step = Self::step_bytes(rate);
        // The next whole step past what is available, if the hash lets it out.
        let next_step = (self.available / step)
            .saturating_add(1)
            .saturating_mul(step);
        if next_step.min(self.readable_len()) <= self.available {
            return None;
        }
        // The first microsecond at which `allowed` reaches that step.
        let micros = (u128::from(next_step) * MICROS_PER_SEC).div_ceil(u128::from(rate));
        Some(started.saturating_add(Duration::from_micros(
            u64::try_from(micros).unwrap_or(u64::MAX),
        )))
    }
}

/// Copies `src[at..]` into `out`; how many bytes.
fn copy_from(src: &[u8], at: u64, out: &mut [u8]) -> usize {
    let Some(rest) = usize::try_from(at).ok().and_then(|at| src.get(at..)) else {
        return 0;
    };
    let n = rest.len().min(out.len());
    out[..n].copy_from_slice(&rest[..n]);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in memory.
    struct Bytes<'a>(&'a [u8]);

    impl FileRead for Bytes<'_> {
        fn read_file_at(&mut self, offset: u64, buf: &mut [u8]) -> usize {
            copy_from(self.0, offset, buf)
        }
    }

    fn at(ms: u64) -> Instant {
        Instant::from_micros(ms * 1000)
    }

    fn sender(size: u64, rate: Option<u64>) -> TransferSender {
        TransferSender::new(&TransferHeader::new("f.bin", size).unwrap(), rate)
    }

    #[test]
    fn the_stream_is_header_then_file_then_trailer() {
        let data: std::vec::Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut s = sender(1000, None);
        let mut file = Bytes(&data);
        let mut out = std::vec![0u8; 2000];
        let n = s.read(0, &mut out, &mut file);
        let hl = s.header_len() as usize;
        assert_eq!(
            n,
            hl + 1000,
            "the trailer is not readable before the digest"
        );
        assert_eq!(&out[hl..n], &data[..]);
        assert_eq!(s.hash_target(), 1000);
        s.hashed(Ok([7; TRAILER_LEN]));
        let n = s.read(0, &mut out, &mut file);
        assert_eq!(n as u64, s.stream_len());
        assert_eq!(&out[hl + 1000..n], &[7; TRAILER_LEN]);
        // A read at an odd offset inside the trailer.
        assert_eq!(s.read(s.stream_len() - 5, &mut out, &mut file), 5);
        assert_eq!(s.read(s.stream_len(), &mut out, &mut file), 0);
    }

    #[test]
    fn the_trailer_is_not_offered_before_hashing_is_done() {
        let mut s = sender(100, None);
        let hl = s.header_len();
        assert_eq!(s.poll(at(0)), Some(SendStep::Extend(hl + 100)));
        assert_eq!(s.poll(at(0)), None);
        let mut buf = [0u8; TRAILER_LEN];
        assert_eq!(s.read(hl + 100, &mut buf, &mut Bytes(&[1; 100])), 0);
        s.hashed(Ok([9; TRAILER_LEN]));
        assert_eq!(s.poll(at(0)), Some(SendStep::Finish(hl + 100 + 32)));
        assert_eq!(s.poll(at(1)), None);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn retransmitted_reads_do_not_move_the_hash_target_back() {
        let data = [3u8; 5000];
        let mut s = sender(5000, None);
        let hl = s.header_len();
        let mut buf = [0u8; 1200];
        assert_eq!(s.read(hl + 3000, &mut buf, &mut Bytes(&data)), 1200);
        assert_eq!(s.hash_target(), 4200);
        assert_eq!(s.read(hl, &mut buf, &mut Bytes(&data)), 1200);
        assert_eq!(s.hash_target(), 4200);
    }

    #[test]
    fn a_file_that_could_not_be_hashed_fails_once_and_never_gets_a_trailer() {
        let mut s = sender(100, None);
        let _ = s.poll(at(0));
        s.hashed(Err(HashFailure::Truncated));
        // A late digest changes nothing.
        s.hashed(Ok([0; TRAILER_LEN]));
        assert_eq!(s.poll(at(1)), Some(SendStep::Fail(HashFailure::Truncated)));
        assert_eq!(s.poll(at(2)), None);
        let mut buf = [0u8; 64];
        assert_eq!(
            s.read(s.header_len() + 100, &mut buf, &mut Bytes(&[0; 100])),
            0
        );
        assert_eq!(
            super::super::session_end(Some(&s), None, false),
            Some(crate::wire::EndReason::Failed)
        );
    }

    #[test]
    fn a_sender_alone_waits_for_the_receivers_close() {
        let mut s = sender(10, None);
        s.hashed(Ok([0; TRAILER_LEN]));
        assert!(matches!(s.poll(at(0)), Some(SendStep::Finish(_))));
        assert_eq!(super::super::session_end(Some(&s), None, false), None);
    }

    #[test]
    fn an_empty_file_is_header_and_trailer() {
        let mut s = sender(0, None);
        let hl = s.header_len();
        assert_eq!(s.poll(at(0)), Some(SendStep::Extend(hl)));
        s.hashed(Ok([1; TRAILER_LEN]));
        assert_eq!(s.poll(at(0)), Some(SendStep::Finish(hl + 32)));
    }

    #[test]
    fn throttling_follows_the_virtual_clock() {
        // 100 KB/s: 2000 bytes per 20 ms step.
        let mut s = sender(1_000_000, Some(100_000));
        // Nothing before the data channel is up, and no timer.
        assert_eq!(s.poll(at(5)), None);
        assert_eq!(s.poll_timeout(), None);
        s.start(at(10));
        assert_eq!(s.poll(at(10)), None);
        // The first step is due 20 ms after the start, to the microsecond.
        assert_eq!(s.poll_timeout(), Some(at(30)));
        // Bytes come in whole steps: none a microsecond early (a driver
        // that polls at every turn finds nothing between two deadlines).
        assert_eq!(s.poll(Instant::from_micros(29_999)), None);
        assert_eq!(s.poll_timeout(), Some(at(30)));
        assert_eq!(s.poll(at(30)), Some(SendStep::Extend(2000)));
        assert_eq!(s.poll(at(30)), None);
        assert_eq!(s.poll(at(49)), None);
        assert_eq!(s.poll_timeout(), Some(at(50)));
        // A late wake-up releases everything the rate allowed meanwhile.
        assert_eq!(s.poll(at(1010)), Some(SendStep::Extend(100_000)));
        assert_eq!(s.poll_timeout(), Some(at(1030)));
        // Time going back releases nothing and takes nothing back.
        assert_eq!(s.poll(at(500)), None);
        // Polling at each deadline always makes progress (no spin).
        let mut now = at(1010);
        for _ in 0..100 {
            let due = s.poll_timeout().unwrap();
            assert!(due > now);
            now = due;
            assert!(matches!(s.poll(now), Some(SendStep::Extend(_))));
        }
    }

    #[test]
    fn a_throttled_send_that_reaches_the_unhashed_end_waits_for_the_digest() {
        let mut s = sender(1000, Some(1_000_000));
        s.start(at(0));
        let hl = s.header_len();
        assert_eq!(s.poll(at(1000)), Some(SendStep::Extend(hl + 1000)));
        // Waiting for the hash: no timer, the digest wakes it.
        assert_eq!(s.poll_timeout(), None);
        s.hashed(Ok([2; TRAILER_LEN]));
        assert_eq!(s.poll(at(1000)), Some(SendStep::Finish(hl + 1032)));
        assert_eq!(s.poll_timeout(), None);
    }
}
