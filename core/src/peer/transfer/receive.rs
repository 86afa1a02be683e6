//! The receive side of a transfer: stream bytes by offset (in any order,
//! possibly twice) in; file writes, hashing points and the verdict out.
//!
//! The driver owns the file, its write batching and its hash. For each
//! [`TransferReceiver::stream_data`] it applies the [`ReceiveStep`] in the
//! order of its fields:
//! 1. `accepted`: the header arrived ([`TransferReceiver::header`]): create
//!    the file;
//! 2. `hold`: the bytes came before the header could be read: keep a copy
//!    of them (offset and bytes) for a replay;
//! 3. `write`: write these bytes (a slice of the input) at this file offset;
//! 4. `hash_to`: file bytes `[0, n)` are final: make sure they are on disk,
//!    then let the hash read them;
//! 5. `replay`: give every kept copy back to `stream_data` (and keep again
//!    those whose step says `hold`).
//!
//! Once every byte arrived the phase is [`ReceivePhase::Checking`]; the
//! driver reports the digest of the file's bytes
//! ([`TransferReceiver::digest`]), stores the file when it matched
//! ([`ReceivePhase::Verified`], then [`TransferReceiver::stored`]), and
//! closes the session as [`super::session_end`] says.
//!
//! A resumable header (version 2) is followed by nothing until this side
//! said where the file's bytes start: the driver looks for a partial file
//! of the same transfer, verifies it, and calls
//! [`TransferReceiver::start_at`] with the length it holds (0 for none),
//! then tells the sender that offset (the share `Resume` message). File
//! bytes before that are a protocol error ([`ReceiveFailure::BeforeOffer`]).

use core::fmt;

use super::{
    HashFailure, TransferError, TransferHeader, HEADER_FIXED_LEN, MAX_HEADER_LEN, TRAILER_LEN,
};
use crate::peer::transport::ranges::RangeSet;

/// Most stream bytes the driver is asked to keep while the header has not
/// arrived (data that overtook it); a peer that sends more is cut off.
/// The transport's receive window bounds what can overtake in practice.
pub const MAX_EARLY_BYTES: usize = 32 * 1024 * 1024;
/// Most separate received ranges tracked past the contiguous prefix (the
/// transport delivers each byte once, within its own range bound); a peer
/// whose data is scattered wider is cut off.
pub const MAX_RANGES: usize = 512;
/// The contiguous prefix is handed to hashing (`hash_to`) each time it
/// grew this much, when it jumps over ranges already written, and at the
/// end: the driver may batch in-order writes up to this size.
pub const HASH_STEP: u64 = 256 * 1024;
/// Bytes of the header that give its length: magic, version, name length.
const HEADER_LEN_KNOWN: usize = 4;
/// Every trailer byte received.
const TRAILER_COMPLETE: u32 = u32::MAX;

/// Why a transfer failed; nothing is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveFailure {
    /// The header is malformed or names a file that is not plain.
    BadHeader(TransferError),
    /// The peer sent bytes past the end it announced.
    PastEnd,
    /// The peer's data is scattered over more than [`MAX_RANGES`] ranges.
    TooScattered,
    /// More than [`MAX_EARLY_BYTES`] arrived before the header.
    TooManyEarlyBytes,
    /// The file's SHA-256 does not match the sender's trailer.
    ChecksumMismatch,
    /// The driver could not hash the received bytes.
    Hash(HashFailure),
    /// The driver could not write or store the file.
    Storage,
    /// The transfer was cut before it finished (the session ended).
    Cut,
    /// A resumable sender sent file bytes before this side said where to
    /// start.
    BeforeOffer,
}

impl fmt::Display for ReceiveFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiveFailure::BadHeader(TransferError::BadName) => f.write_str("refused file name"),
            ReceiveFailure::BadHeader(
                e @ (TransferError::NameTooLong { .. } | TransferError::FormatCharacter(_)),
            ) => write!(f, "refused file name: {e}"),
            ReceiveFailure::BadHeader(e) => write!(f, "malformed transfer header: {e}"),
            ReceiveFailure::PastEnd => f.write_str("the peer sent data past the announced file"),
            ReceiveFailure::TooScattered => f.write_str("the peer's data is scattered too widely"),
            ReceiveFailure::TooManyEarlyBytes => {
                f.write_str("too much data arrived before the transfer header")
            }
            ReceiveFailure::ChecksumMismatch => {
                f.write_str("checksum mismatch: the file was not kept")
            }
            ReceiveFailure::Hash(e) => write!(f, "{e}"),
            ReceiveFailure::Storage => f.write_str("the file could not be written or stored"),
            ReceiveFailure::Cut => f.write_str("the transfer was cut"),
            ReceiveFailure::BeforeOffer => {
                f.write_str("the peer sent file bytes before it was told where to start")
            }
        }
    }
}

impl core::error::Error for ReceiveFailure {}

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceivePhase {
    /// Waiting for the header.
    AwaitingHeader,
    /// Receiving the file.
    Receiving,
    /// Every byte and the trailer arrived: waiting for the driver's digest.
    Checking,
    /// The digest matched: the driver stores the file.
    Verified,
    /// Stored and checked: close `Completed`.
    Completed,
    /// Failed: close `Failed`; nothing is kept.
    Failed(ReceiveFailure),
}

/// File bytes to write: `bytes` at file offset `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write<'a> {
    /// File offset of the first byte.
    pub offset: u64,
    /// The bytes, a slice of the input.
    pub bytes: &'a [u8],
    /// They extend the contiguous prefix (a driver may batch them);
    /// otherwise they land past a gap.
    pub in_order: bool,
}

/// What one input asks of the driver, applied in field order (see the
/// module's documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct ReceiveStep<'a> {
    /// The header arrived and was accepted.
    pub accepted: bool,
    /// Keep a copy of the input (offset and bytes) for a replay.
    pub hold: bool,
    /// Bytes to write.
    pub write: Option<Write<'a>>,
    /// File bytes `[0, n)` are final: on disk, then hashed.
    pub hash_to: Option<u64>,
    /// Give every kept copy back.
    pub replay: bool,
}

/// One file being received from a session's stream.
#[derive(Debug, Clone)]
pub struct TransferReceiver {
    phase: ReceivePhase,
    /// The stream's first bytes while the header is incomplete.
    prefix: [u8; MAX_HEADER_LEN],
    have: usize,
    /// Bytes the driver keeps for a replay.
    held: usize,
    header: Option<TransferHeader>,
    header_len: u64,
    size: u64,
    /// The file offset the stream's file bytes start at; `None` while a
    /// resumable transfer waits for [`TransferReceiver::start_at`].
    start: Option<u64>,
    /// File bytes `[0, contiguous)` arrived; never written again.
    contiguous: u64,
    /// The last `hash_to` given.
    hash_mark: u64,
    /// Received file ranges past `contiguous`.
    ranges: RangeSet<MAX_RANGES>,
    trailer: [u8; TRAILER_LEN],
    /// Bit i: trailer byte i arrived.
    trailer_have: u32,
    /// Highest stream offset seen + 1.
    received: u64,
}

impl Default for TransferReceiver {
    fn default() -> Self {
        TransferReceiver::new()
    }
}

impl TransferReceiver {
    /// A receiver waiting for a header.
    pub const fn new() -> TransferReceiver {
        TransferReceiver {
            phase: ReceivePhase::AwaitingHeader,
            prefix: [0; MAX_HEADER_LEN],
            have: 0,
            held: 0,
            header: None,
            header_len: 0,
            size: 0,
            start: None,
            contiguous: 0,
            hash_mark: 0,
            ranges: RangeSet::new(),
            trailer: [0; TRAILER_LEN],
            trailer_have: 0,
            received: 0,
        }
    }

    /// Where the transfer stands.
    pub fn phase(&self) -> ReceivePhase {
        self.phase
    }

    /// The accepted header (name and size), once it arrived.
    pub fn header(&self) -> Option<&TransferHeader> {
        self.header.as_ref()
    }

    /// File bytes received in order (the contiguous prefix, a resumed
    /// transfer's start included).
    pub fn contiguous(&self) -> u64 {
        self.contiguous
    }

    /// Whether a resumable transfer waits for [`TransferReceiver::start_at`].
    pub fn needs_offer(&self) -> bool {
        self.phase == ReceivePhase::Receiving && self.start.is_none()
    }

    /// The file offset the stream's file bytes start at, once known.
    pub fn start(&self) -> Option<u64> {
        self.start
    }

    /// This side's word on a resumable transfer: file bytes `[0, offset)`
    /// are in place already (verified by the driver), and the stream's
    /// file bytes start there. Taken once, while [`Self::needs_offer`]; an
    /// offset past the end counts as the end. The offset taken.
    pub fn start_at(&mut self, offset: u64) -> Option<u64> {
        if !self.needs_offer() {
            return None;
        }
        let offset = offset.min(self.size);
        self.start = Some(offset);
        self.contiguous = offset;
        self.hash_mark = offset;
        Some(offset)
    }

    /// Stream bytes seen (the highest offset reached).
    pub fn stream_bytes(&self) -> u64 {
        self.received
    }

    /// The sender's digest, once every trailer byte arrived.
    pub fn trailer(&self) -> Option<[u8; TRAILER_LEN]> {
        (self.trailer_have == TRAILER_COMPLETE).then_some(self.trailer)
    }

    /// Whether the transfer is over (stored or failed).
    pub fn is_done(&self) -> bool {
        matches!(
            self.phase,
            ReceivePhase::Completed | ReceivePhase::Failed(_)
        )
    }

    /// Fails the transfer (the driver could not write, the session ended);
    /// a transfer already over stays as it is.
    pub fn fail(&mut self, why: ReceiveFailure) {
        if !self.is_done() {
            self.phase = ReceivePhase::Failed(why);
            self.ranges.clear();
        }
    }

    /// The session ended before the transfer did.
    pub fn abort(&mut self) {
        self.fail(ReceiveFailure::Cut);
    }

    /// The driver's hash of the file's bytes. A failure fails the transfer
    /// at any time; a digest counts once every byte arrived.
    pub fn digest(&mut self, result: Result<[u8; TRAILER_LEN], HashFailure>) {
        match (result, self.phase) {
            (Err(e), _) => self.fail(ReceiveFailure::Hash(e)),
            (Ok(digest), ReceivePhase::Checking) => {
                if digest == self.trailer {
                    self.phase = ReceivePhase::Verified;
                } else {
                    self.fail(ReceiveFailure::ChecksumMismatch);
                }
            }
            (Ok(_), _) => {}
        }
    }

    /// The driver stored the verified file under its final name.
    pub fn stored(&mut self) {
        if self.phase == ReceivePhase::Verified {
            self.phase = ReceivePhase::Completed;
        }
    }

    /// Stream bytes at `offset`.
    pub fn stream_data<'a>(&mut self, offset: u64, data: &'a [u8]) -> ReceiveStep<'a> {
        let mut step = ReceiveStep::default();
        if data.is_empty()
            || !matches!(
                self.phase,
                ReceivePhase::AwaitingHeader | ReceivePhase::Receiving
            )
        {
            return step;
        }
        self.received = self.received.max(offset.saturating_add(data.len() as u64));
        if self.phase == ReceivePhase::AwaitingHeader {
            self.take_early(offset, data, &mut step);
        } else {
            self.take_body(offset, data, &mut step);
        }
        step
    }

    /// Bytes needed to know the whole header (given `have` of them).
    fn header_need(&self) -> usize {
        if self.have < HEADER_LEN_KNOWN {
            HEADER_LEN_KNOWN
        } else {
            let extra = if self.prefix[2] == super::TRANSFER_VERSION_RESUMABLE {
                super::RESUMABLE_EXTRA_LEN
            } else {
                0
            };
            HEADER_FIXED_LEN + usize::from(self.prefix[HEADER_LEN_KNOWN - 1]) + extra
        }
    }

    /// Before the header: grow the prefix (only as far as the header
    /// goes), ask the driver to hold what overtook it.
    fn take_early<'a>(&mut self, offset: u64, data: &'a [u8], step: &mut ReceiveStep<'a>) {
        let have = self.have as u64;
        let end = offset.saturating_add(data.len() as u64);
        if end <= have {
            return;
        }
        if offset > have {
            self.held = self.held.saturating_add(data.len());
            if self.held > MAX_EARLY_BYTES {
                self.fail(ReceiveFailure::TooManyEarlyBytes);
            } else {
                step.hold = true;
            }
            return;
        }
        // `offset <= have < end`: the input continues the prefix.
        let mut at = (have - offset) as usize;
        loop {
            let need = self.header_need();
            if self.have >= need || at >= data.len() {
                break;
            }
            let n = (need - self.have).min(data.len() - at);
            self.prefix[self.have..self.have + n].copy_from_slice(&data[at..at + n]);
            self.have += n;
            at += n;
        }
        let header = match TransferHeader::decode(&self.prefix[..self.have]) {
            Err(e) => {
                self.fail(ReceiveFailure::BadHeader(e));
                return;
            }
            Ok(None) => {
                // Kept copies may continue the prefix now.
                if self.held > 0 {
                    self.held = 0;
                    step.replay = true;
                }
                return;
            }
            Ok(Some((header, _))) => header,
        };
        self.header_len = header.data_offset();
        self.size = header.size;
        self.start = if header.is_resumable() { None } else { Some(0) };
        self.header = Some(header);
        self.phase = ReceivePhase::Receiving;
        step.accepted = true;
        if self.held > 0 {
            self.held = 0;
            step.replay = true;
        }
        let rest_offset = offset + at as u64;
        self.take_body(rest_offset, &data[at..], step);
    }

    /// After the header: file bytes and trailer bytes.
    fn take_body<'a>(&mut self, offset: u64, data: &'a [u8], step: &mut ReceiveStep<'a>) {
        let data_start = self.header_len;
        let end = offset.saturating_add(data.len() as u64);
        let Some(start) = self.start else {
            if end > data_start {
                self.fail(ReceiveFailure::BeforeOffer);
            }
            return;
        };
        let data_end = data_start + (self.size - start);
        if end > data_end + TRAILER_LEN as u64 {
            self.fail(ReceiveFailure::PastEnd);
            return;
        }
        // The part inside the file's bytes, past the contiguous prefix.
        let lo = offset.max(data_start + (self.contiguous - start));
        let hi = end.min(data_end);
        if lo < hi {
            let bytes = &data[(lo - offset) as usize..(hi - offset) as usize];
            let (file_lo, file_hi) = (start + (lo - data_start), start + (hi - data_start));
            if file_lo > self.contiguous {
                if self.ranges.insert(file_lo, file_hi).is_err() {
                    self.fail(ReceiveFailure::TooScattered);
                    return;
                }
                step.write = Some(Write {
                    offset: file_lo,
                    bytes,
                    in_order: false,
                });
            } else {
                step.write = Some(Write {
                    offset: file_lo,
                    bytes,
                    in_order: true,
                });
                self.contiguous = file_hi;
                // Ranges already written that the prefix now reaches join it.
                let mut jumped = false;
                while let Some(range) = self.ranges.first() {
                    if range.start > self.contiguous {
                        break;
                    }
                    let _ = self.ranges.pop_first();
                    self.contiguous = self.contiguous.max(range.end);
                    jumped = true;
                }
                if jumped
                    || self.contiguous - self.hash_mark >= HASH_STEP
                    || self.contiguous >= self.size
                {
                    self.hash_mark = self.contiguous;
                    step.hash_to = Some(self.contiguous);
                }
            }
        }
        // The part inside the trailer.
        let lo = offset.max(data_end);
        if lo < end {
            for (i, b) in data[(lo - offset) as usize..].iter().enumerate() {
                let at = (lo - data_end) as usize + i;
                if let Some(slot) = self.trailer.get_mut(at) {
                    *slot = *b;
                    self.trailer_have |= 1 << at;
                }
            }
        }
        if self.contiguous >= self.size && self.trailer_have == TRAILER_COMPLETE {
            self.phase = ReceivePhase::Checking;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{session_end, TransferSender};
    use super::*;
    use crate::wire::EndReason;
    use proptest::prelude::*;
    use std::vec::Vec;

    /// The stream of a file `name` with `data` and `trailer`.
    fn stream(name: &str, data: &[u8], trailer: [u8; TRAILER_LEN]) -> Vec<u8> {
        let header = TransferHeader::new(name, data.len() as u64).unwrap();
        let mut out = std::vec![0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut out).unwrap();
        out.truncate(n);
        out.extend_from_slice(data);
        out.extend_from_slice(&trailer);
        out
    }

    /// A toy digest for tests (the driver's is SHA-256).
    fn digest_of(data: &[u8]) -> [u8; TRAILER_LEN] {
        let mut d = [0u8; TRAILER_LEN];
        for (i, b) in data.iter().enumerate() {
            d[i % TRAILER_LEN] = d[i % TRAILER_LEN].wrapping_mul(31).wrapping_add(*b);
        }
        d
    }

    /// A driver in memory: the file, kept copies, the hash target.
    #[derive(Default)]
    struct Driver {
        file: Vec<u8>,
        written: Vec<bool>,
        held: Vec<(u64, Vec<u8>)>,
        hashed_to: u64,
        accepted: usize,
        /// Bytes written below the hash target after it was given (must never happen).
        rewrites: usize,
    }

    impl Driver {
        fn feed(&mut self, rx: &mut TransferReceiver, offset: u64, data: &[u8]) {
            let step = rx.stream_data(offset, data);
            let mut replay = self.apply(rx, offset, data, step);
            while replay {
                replay = false;
                for (at, bytes) in core::mem::take(&mut self.held) {
                    let step = rx.stream_data(at, &bytes);
                    replay |= self.apply(rx, at, &bytes, step);
                }
            }
        }

        fn apply(
            &mut self,
            rx: &TransferReceiver,
            offset: u64,
            data: &[u8],
            step: ReceiveStep<'_>,
        ) -> bool {
            if step.accepted {
                self.accepted += 1;
                let size = rx.header().unwrap().size as usize;
                self.file = std::vec![0; size];
                self.written = std::vec![false; size];
            }
            if step.hold {
                self.held.push((offset, data.to_vec()));
            }
            if let Some(w) = step.write {
                let at = w.offset as usize;
                if w.offset < self.hashed_to {
                    self.rewrites += 1;
                }
                self.file[at..at + w.bytes.len()].copy_from_slice(w.bytes);
                self.written[at..at + w.bytes.len()].fill(true);
            }
            if let Some(n) = step.hash_to {
                assert!(n >= self.hashed_to, "the hash target only grows");
                assert!(
                    self.written[..n as usize].iter().all(|w| *w),
                    "hash_to past unwritten bytes"
                );
                self.hashed_to = n;
            }
            step.replay
        }

        /// Hashes (once every byte arrived) and stores.
        fn finish(&mut self, rx: &mut TransferReceiver) {
            if rx.phase() == ReceivePhase::Checking {
                assert_eq!(self.hashed_to, self.file.len() as u64);
                rx.digest(Ok(digest_of(&self.file)));
                if rx.phase() == ReceivePhase::Verified {
                    rx.stored();
                }
            }
        }
    }

    fn chunks(stream: &[u8], size: usize) -> Vec<(u64, &[u8])> {
        stream
            .chunks(size)
            .enumerate()
            .map(|(i, c)| ((i * size) as u64, c))
            .collect()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    fn receive(pieces: &[(u64, &[u8])]) -> (TransferReceiver, Driver) {
        let mut rx = TransferReceiver::new();
        let mut driver = Driver::default();
        for (at, c) in pieces {
            driver.feed(&mut rx, *at, c);
        }
        driver.finish(&mut rx);
        (rx, driver)
    }

    #[test]
    fn in_order_chunks_are_written_and_completed() {
        let data = pattern(700_000);
        let s = stream("f.bin", &data, digest_of(&data));
        let (rx, d) = receive(&chunks(&s, 1300));
        assert_eq!(rx.phase(), ReceivePhase::Completed);
        assert_eq!(d.file, data);
        assert_eq!(d.accepted, 1);
        assert_eq!(rx.header().unwrap().name(), "f.bin");
        assert_eq!(
            session_end(None, Some(&rx), false),
            Some(EndReason::Completed)
        );
    }

    #[test]
    fn in_order_writes_are_slices_of_the_input_and_hashing_comes_in_steps() {
        let data = pattern(3 * HASH_STEP as usize + 10);
        let s = stream("f.bin", &data, digest_of(&data));
        let mut rx = TransferReceiver::new();
        let mut marks = Vec::new();
        for (at, c) in chunks(&s, 1000) {
            let step = rx.stream_data(at, c);
            if let Some(w) = step.write {
                assert!(w.in_order);
                // The very bytes of the input.
                assert!(c.as_ptr_range().contains(&w.bytes.as_ptr()));
            }
            marks.extend(step.hash_to);
        }
        assert_eq!(marks.len(), 3, "{marks:?}");
        for pair in marks.windows(2) {
            assert!(pair[1] - pair[0] >= HASH_STEP || pair[1] == data.len() as u64);
        }
        assert_eq!(marks.last(), Some(&(data.len() as u64)));
        assert_eq!(rx.phase(), ReceivePhase::Checking);
    }

    #[test]
    fn out_of_order_chunks_with_the_header_last_are_held_and_replayed() {
        let data = pattern(100_000);
        let s = stream("f.bin", &data, digest_of(&data));
        let mut pieces = chunks(&s, 977);
        pieces.reverse();
        let (rx, d) = receive(&pieces);
        assert_eq!(rx.phase(), ReceivePhase::Completed);
        assert_eq!(d.file, data);
        assert_eq!(d.rewrites, 0);
    }

    #[test]
    fn a_header_split_around_held_bytes_still_completes() {
        let data = pattern(5000);
        let s = stream("photo.jpg", &data, digest_of(&data));
        // [0,2), then [10, end) (held: the header is incomplete), then [2,10).
        let (rx, d) = receive(&[(0, &s[..2]), (10, &s[10..]), (2, &s[2..10])]);
        assert_eq!(rx.phase(), ReceivePhase::Completed);
        assert_eq!(d.file, data);
    }

    #[test]
    fn duplicated_chunks_change_nothing() {
        let data = pattern(50_000);
        let s = stream("f.bin", &data, digest_of(&data));
        let pieces = chunks(&s, 1200);
        let twice: Vec<(u64, &[u8])> = pieces.iter().flat_map(|p| [*p, *p]).collect();
        let (rx, d) = receive(&twice);
        assert_eq!(rx.phase(), ReceivePhase::Completed);
        assert_eq!(d.file, data);
        assert_eq!(d.rewrites, 0);
    }

    #[test]
    fn bytes_below_the_contiguous_prefix_are_never_written_again() {
        let data = pattern(50_000);
        let s = stream("f.bin", &data, digest_of(&data));
        let mut rx = TransferReceiver::new();
        let _ = rx.stream_data(0, &s[..20_000]);
        let mut overlap = s[19_900..20_100].to_vec();
        overlap[..100].fill(0xee);
        let step = rx.stream_data(19_900, &overlap);
        let w = step.write.unwrap();
        assert_eq!(w.offset, 20_000 - rx.header().unwrap().data_offset());
        assert_eq!(w.bytes, &s[20_000..20_100]);
    }

    #[test]
    fn data_past_the_announced_end_fails() {
        let data = pattern(100);
        let mut s = stream("f.bin", &data, digest_of(&data));
        s.extend_from_slice(&[0; 10]);
        let (rx, _) = receive(&[(0, &s)]);
        assert_eq!(rx.phase(), ReceivePhase::Failed(ReceiveFailure::PastEnd));
        let (rx, _) = receive(&[(0, &s[..50]), (10_000, &[0; 10])]);
        assert_eq!(rx.phase(), ReceivePhase::Failed(ReceiveFailure::PastEnd));
        assert_eq!(session_end(None, Some(&rx), false), Some(EndReason::Failed));
    }

    #[test]
    fn a_bad_header_fails() {
        let (rx, _) = receive(&[(0, b"XXXXXXXXXXXXXXXXXXXXXXXX")]);
        assert_eq!(
            rx.phase(),
            ReceivePhase::Failed(ReceiveFailure::BadHeader(TransferError::BadMagic))
        );
        let mut evil = b"TF\x01\x02..".to_vec();
        evil.extend_from_slice(&1u64.to_be_bytes());
        let (rx, _) = receive(&[(0, &evil)]);
        assert_eq!(
            rx.phase(),
            ReceivePhase::Failed(ReceiveFailure::BadHeader(TransferError::BadName))
        );
        // Bad magic is seen on the first byte.
        let mut rx = TransferReceiver::new();
        let _ = rx.stream_data(0, b"Q");
        assert!(matches!(rx.phase(), ReceivePhase::Failed(_)));
    }

    #[test]
    fn a_checksum_mismatch_fails() {
        let data = pattern(5000);
        let mut wrong = digest_of(&data);
        wrong[31] ^= 1;
        let s = stream("f.bin", &data, wrong);
        let (rx, _) = receive(&chunks(&s, 1000));
        assert_eq!(
            rx.phase(),
            ReceivePhase::Failed(ReceiveFailure::ChecksumMismatch)
        );
        assert_eq!(session_end(None, Some(&rx), false), Some(EndReason::Failed));
    }

    #[test]
    fn a_hash_failure_fails_at_any_time() {
        let data = pattern(5000);
        let s = stream("f.bin", &data, digest_of(&data));
        let mut rx = TransferReceiver::new();
        let _ = rx.stream_data(0, &s[..100]);
        rx.digest(Err(HashFailure::Unreadable));
        assert_eq!(
            rx.phase(),
            ReceivePhase::Failed(ReceiveFailure::Hash(HashFailure::Unreadable))
        );
    }

    #[test]
    fn an_empty_file_completes() {
        let s = stream("empty.txt", &[], digest_of(&[]));
        let mut rx = TransferReceiver::new();
        let step = rx.stream_data(0, &s);
        assert!(step.accepted);
        assert_eq!(step.write, None);
        assert_eq!(rx.phase(), ReceivePhase::Checking);
        rx.digest(Ok(digest_of(&[])));
        assert_eq!(rx.phase(), ReceivePhase::Verified);
        assert_eq!(
            session_end(None, Some(&rx), false),
            None,
            "not before it is stored"
        );
        rx.stored();
        assert_eq!(
            session_end(None, Some(&rx), false),
            Some(EndReason::Completed)
        );
    }

    #[test]
    fn too_many_early_bytes_fail() {
        let mut rx = TransferReceiver::new();
        let chunk = std::vec![0u8; 1 << 20];
        for i in 0..32u64 {
            assert!(rx.stream_data(1000 + i * (1 << 20), &chunk).hold);
        }
        let step = rx.stream_data(1000 + 32 * (1 << 20), &chunk);
        assert!(!step.hold);
        assert_eq!(
            rx.phase(),
            ReceivePhase::Failed(ReceiveFailure::TooManyEarlyBytes)
        );
    }

    #[test]
    fn too_many_ranges_fail() {
        let data = pattern(10 * MAX_RANGES + 100);
        let s = stream("f.bin", &data, digest_of(&data));
        let mut rx = TransferReceiver::new();
        let hl = 17;
        let _ = rx.stream_data(0, &s[..hl + 1]);
        // Every other byte: a new range each.
        for i in 0..MAX_RANGES as u64 {
            let at = hl as u64 + 3 + 2 * i;
            let _ = rx.stream_data(at, &s[at as usize..at as usize + 1]);
        }
        assert_eq!(rx.phase(), ReceivePhase::Receiving);
        let at = hl as u64 + 3 + 2 * MAX_RANGES as u64;
        let _ = rx.stream_data(at, &s[at as usize..at as usize + 1]);
        assert_eq!(
            rx.phase(),
            ReceivePhase::Failed(ReceiveFailure::TooScattered)
        );
    }

    #[test]
    fn an_aborted_transfer_fails_and_a_finished_one_stays() {
        let mut rx = TransferReceiver::new();
        let _ = rx.stream_data(0, b"TF\x01");
        rx.abort();
        assert_eq!(rx.phase(), ReceivePhase::Failed(ReceiveFailure::Cut));
        let s = stream("x", &[1], digest_of(&[1]));
        let (mut rx, _) = receive(&[(0, &s)]);
        rx.abort();
        assert_eq!(rx.phase(), ReceivePhase::Completed);
    }

    #[test]
    fn stray_bytes_without_a_receiver_close_the_session_failed() {
        assert_eq!(session_end(None, None, true), Some(EndReason::Failed));
        assert_eq!(session_end(None, None, false), None);
    }

    #[test]
    fn a_sender_and_a_receiver_agree_through_a_lossy_reordering_path() {
        let data = pattern(40_000);
        let header = TransferHeader::new("f.bin", data.len() as u64).unwrap();
        let mut tx = TransferSender::new(&header, None);
        tx.hashed(Ok(digest_of(&data)));
        struct Mem<'a>(&'a [u8]);
        impl super::super::FileRead for Mem<'_> {
            fn read_file_at(&mut self, offset: u64, buf: &mut [u8]) -> usize {
                let rest = &self.0[offset as usize..];
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                n
            }
        }
        let mut packets = Vec::new();
        let mut at = 0;
        let mut buf = [0u8; 1200];
        while at < tx.stream_len() {
            let n = tx.read(at, &mut buf, &mut Mem(&data));
            packets.push((at, buf[..n].to_vec()));
            at += n as u64;
        }
        // Every third packet late, every fifth twice.
        let (late, mut order): (Vec<_>, Vec<_>) =
            packets.iter().enumerate().partition(|(i, _)| i % 3 == 1);
        order.extend(late);
        order.extend(packets.iter().enumerate().filter(|(i, _)| i % 5 == 0));
        let pieces: Vec<(u64, &[u8])> = order
            .iter()
            .map(|(_, (at, p))| (*at, p.as_slice()))
            .collect();
        let (rx, d) = receive(&pieces);
        assert_eq!(rx.phase(), ReceivePhase::Completed);
        assert_eq!(d.file, data);
    }

    /// A file in memory, for the sender.
    struct Mem<'a>(&'a [u8]);

    impl super::super::FileRead for Mem<'_> {
        fn read_file_at(&mut self, offset: u64, buf: &mut [u8]) -> usize {
            let rest = &self.0[offset as usize..];
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            n
        }
    }

    /// Moves stream bytes from `tx` to `rx` in 1200-byte packets until the
    /// receiver's contiguous file prefix reaches `cut` (or the stream ends);
    /// the stream bytes moved.
    fn pump(
        tx: &mut TransferSender,
        rx: &mut TransferReceiver,
        d: &mut Driver,
        data: &[u8],
        from: u64,
        cut: u64,
    ) -> u64 {
        let mut at = from;
        let mut buf = [0u8; 1200];
        let mut moved = 0;
        while rx.contiguous() < cut || rx.header().is_none() {
            let n = tx.read(at, &mut buf, &mut Mem(data));
            if n == 0 {
                break;
            }
            d.feed(rx, at, &buf[..n]);
            at += n as u64;
            moved += n as u64;
        }
        moved
    }

    #[test]
    fn a_cut_resumable_transfer_resumes_from_the_offset_the_receiver_holds() {
        let data = pattern(300_000);
        let header = TransferHeader::new("f.bin", data.len() as u64)
            .unwrap()
            .resumable(7);
        // The first attempt: the header alone until the receiver's word.
        let mut tx = TransferSender::new(&header, None);
        let mut rx = TransferReceiver::new();
        let mut d = Driver::default();
        let hl = tx.header_len();
        assert_eq!(tx.readable_len(), hl);
        assert_eq!(pump(&mut tx, &mut rx, &mut d, &data, 0, 0), hl);
        assert!(rx.needs_offer());
        assert_eq!(rx.start_at(0), Some(0));
        assert_eq!(tx.resume_at(0), Some(0));
        // Cut after 120 000 file bytes.
        pump(&mut tx, &mut rx, &mut d, &data, hl, 120_000);
        rx.abort();
        let held = rx.contiguous();
        assert!(held >= 120_000 && held < data.len() as u64);
        let partial = d.file[..held as usize].to_vec();
        assert_eq!(partial, data[..held as usize]);

        // The second attempt starts where the receiver's partial ends.
        let mut tx = TransferSender::new(&header, None);
        tx.hashed(Ok(digest_of(&data)));
        let mut rx = TransferReceiver::new();
        let mut d = Driver::default();
        pump(&mut tx, &mut rx, &mut d, &data, 0, 0);
        d.file[..held as usize].copy_from_slice(&partial);
        d.written[..held as usize].fill(true);
        d.hashed_to = held;
        assert_eq!(rx.start_at(held), Some(held));
        assert_eq!(tx.resume_at(held), Some(held));
        assert_eq!(tx.file_bytes_in(hl), held);
        let moved = pump(&mut tx, &mut rx, &mut d, &data, hl, u64::MAX);
        d.finish(&mut rx);
        assert_eq!(rx.phase(), ReceivePhase::Completed);
        assert_eq!(d.file, data);
        assert_eq!(d.rewrites, 0);
        // Only the rest crossed: the file's tail and the trailer.
        assert_eq!(moved, data.len() as u64 - held + TRAILER_LEN as u64);
        assert_eq!(tx.stream_len(), hl + moved);
    }

    #[test]
    fn a_tampered_partial_is_not_resumed_and_the_file_still_arrives_whole() {
        let data = pattern(100_000);
        let header = TransferHeader::new("f.bin", data.len() as u64)
            .unwrap()
            .resumable(7);
        let mut tx = TransferSender::new(&header, None);
        tx.hashed(Ok(digest_of(&data)));
        let mut rx = TransferReceiver::new();
        let mut d = Driver::default();
        pump(&mut tx, &mut rx, &mut d, &data, 0, 0);
        // The driver's partial holds 40 000 bytes, one of them changed on
        // disk: its prefix hash no longer checks, so it offers 0.
        let mut tampered = data[..40_000].to_vec();
        tampered[1234] ^= 0x55;
        d.file[..40_000].copy_from_slice(&tampered);
        assert_eq!(rx.start_at(0), Some(0));
        assert_eq!(tx.resume_at(0), Some(0));
        let hl = tx.header_len();
        let moved = pump(&mut tx, &mut rx, &mut d, &data, hl, u64::MAX);
        d.finish(&mut rx);
        assert_eq!(rx.phase(), ReceivePhase::Completed);
        assert_eq!(d.file, data, "every byte was sent again and overwritten");
        assert_eq!(moved, data.len() as u64 + TRAILER_LEN as u64);
    }

    #[test]
    fn file_bytes_before_the_receivers_word_fail_and_a_version_1_header_needs_none() {
        let data = pattern(5000);
        let header = TransferHeader::new("f.bin", 5000).unwrap().resumable(1);
        let mut out = std::vec![0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut out).unwrap();
        out.truncate(n);
        out.extend_from_slice(&data[..100]);
        let (rx, _) = receive(&[(0, &out)]);
        assert_eq!(
            rx.phase(),
            ReceivePhase::Failed(ReceiveFailure::BeforeOffer)
        );
        // A version 1 stream never waits for an offer.
        let s = stream("f.bin", &data, digest_of(&data));
        let mut rx = TransferReceiver::new();
        let _ = rx.stream_data(0, &s[..30]);
        assert!(!rx.needs_offer());
        assert_eq!(rx.start_at(10), None);
        // An offer past the end counts as the end; a sender told an
        // offset past its file starts from 0.
        let mut rx = TransferReceiver::new();
        let _ = rx.stream_data(0, &out[..n]);
        assert_eq!(rx.start_at(9999), Some(5000));
        let mut tx = TransferSender::new(&header, None);
        assert_eq!(tx.resume_at(9999), Some(0));
        assert_eq!(tx.resume_at(10), None, "taken once");
    }

    proptest! {
        #![proptest_config(proptest_config!(64, "core-peer-transfer-receive.txt"))]

        /// Any split, reorder and duplication of a valid stream gives the
        /// same file and `Completed`, never a rewrite below the hashed
        /// prefix, and never `hash_to` past unwritten bytes.
        #[test]
        fn any_split_reorder_or_duplication_completes(
            len in 0usize..20_000,
            cuts in proptest::collection::vec(any::<u16>(), 0..40),
            order in proptest::collection::vec(any::<u32>(), 0..80),
            dups in proptest::collection::vec(any::<u16>(), 0..10),
        ) {
            let data = pattern(len);
            let s = stream("f.bin", &data, digest_of(&data));
            let mut bounds: Vec<usize> = cuts.iter().map(|c| usize::from(*c) % s.len()).collect();
            bounds.push(0);
            bounds.push(s.len());
            bounds.sort_unstable();
            bounds.dedup();
            let mut pieces: Vec<(u64, &[u8])> = bounds
                .windows(2)
                .map(|w| (w[0] as u64, &s[w[0]..w[1]]))
                .collect();
            for (i, o) in order.iter().enumerate() {
                let n = pieces.len();
                pieces.swap(i % n, *o as usize % n);
            }
            let copies: Vec<(u64, &[u8])> = dups.iter().map(|d| pieces[usize::from(*d) % pieces.len()]).collect();
            for (i, c) in copies.into_iter().enumerate() {
                let at = (i * 7) % (pieces.len() + 1);
                pieces.insert(at, c);
            }
            let (rx, d) = receive(&pieces);
            prop_assert_eq!(rx.phase(), ReceivePhase::Completed);
            prop_assert_eq!(&d.file, &data);
            prop_assert_eq!(d.rewrites, 0);
        }

        /// Arbitrary input never panics and never asks to write outside the
        /// announced file.
        #[test]
        fn arbitrary_input_never_panics(
            pieces in proptest::collection::vec((0u64..400, proptest::collection::vec(any::<u8>(), 1..64)), 0..20),
        ) {
            let mut rx = TransferReceiver::new();
            for (at, bytes) in &pieces {
                let step = rx.stream_data(*at, bytes);
                if let (Some(w), Some(h)) = (step.write, rx.header()) {
                    prop_assert!(w.offset + w.bytes.len() as u64 <= h.size);
                }
            }
        }
    }
}
