//! The core's file-transfer receiver (`TransferReceiver`) on arbitrary
//! input, in two modes chosen by the first byte:
//!
//! - even: the rest is a sequence of pieces (offset u16 BE, length u8,
//!   bytes) fed as stream data: no panic, every write lies inside the
//!   announced file, `hash_to` only grows and never passes bytes that were
//!   not written, and held bytes come back through replays;
//! - odd: a valid stream (a file of the rest's bytes) cut at and reordered
//!   by the rest's bytes, with duplicates: the same file and `Completed`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tryst_core::peer::transfer::{
    ReceivePhase, ReceiveStep, TransferHeader, TransferReceiver, MAX_HEADER_LEN, TRAILER_LEN,
};

/// A driver in memory.
#[derive(Default)]
struct Driver {
    file: Vec<u8>,
    written: Vec<bool>,
    held: Vec<(u64, Vec<u8>)>,
    hashed_to: u64,
}

impl Driver {
    fn feed(&mut self, rx: &mut TransferReceiver, offset: u64, data: &[u8]) {
        let step = rx.stream_data(offset, data);
        let mut replay = self.apply(rx, offset, data, step);
        while replay {
            replay = false;
            for (at, bytes) in std::mem::take(&mut self.held) {
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
            let size = rx.header().map_or(0, |h| h.size);
            // Pieces are small: a huge announced size is only checked, never allocated.
            let size = usize::try_from(size).unwrap_or(usize::MAX).min(1 << 20);
            self.file = vec![0; size];
            self.written = vec![false; size];
        }
        if step.hold {
            self.held.push((offset, data.to_vec()));
        }
        if let Some(w) = step.write {
            let size = rx
                .header()
                .map(|h| h.size)
                .expect("a write only after the header");
            let end = w.offset + w.bytes.len() as u64;
            assert!(end <= size, "write past the announced file");
            if let Some(slot) = self.file.get_mut(w.offset as usize..end as usize) {
                slot.copy_from_slice(w.bytes);
                self.written[w.offset as usize..end as usize].fill(true);
            }
        }
        if let Some(n) = step.hash_to {
            assert!(n >= self.hashed_to, "hash_to went back");
            if let Some(w) = self.written.get(..n as usize) {
                assert!(w.iter().all(|b| *b), "hash_to past unwritten bytes");
            }
            self.hashed_to = n;
        }
        step.replay
    }
}

fn digest_of(data: &[u8]) -> [u8; TRAILER_LEN] {
    let mut d = [0u8; TRAILER_LEN];
    for (i, b) in data.iter().enumerate() {
        d[i % TRAILER_LEN] = d[i % TRAILER_LEN].wrapping_mul(31).wrapping_add(*b);
    }
    d
}

fn arbitrary_pieces(data: &[u8]) {
    let mut rx = TransferReceiver::new();
    let mut driver = Driver::default();
    let mut rest = data;
    while let [a, b, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        driver.feed(&mut rx, u64::from(u16::from_be_bytes([*a, *b])), bytes);
        rest = next;
    }
    if rx.phase() == ReceivePhase::Checking {
        rx.digest(Ok(digest_of(&driver.file)));
    }
}

fn valid_stream(data: &[u8]) {
    let (plan, file) = data.split_at(data.len().min(64));
    let Ok(header) = TransferHeader::new("f.bin", file.len() as u64) else {
        return;
    };
    let mut stream = vec![0u8; MAX_HEADER_LEN];
    let Ok(n) = header.encode(&mut stream) else {
        return;
    };
    stream.truncate(n);
    stream.extend_from_slice(file);
    stream.extend_from_slice(&digest_of(file));
    let mut bounds: Vec<usize> = plan
        .iter()
        .map(|c| usize::from(*c) * stream.len() / 256)
        .collect();
    bounds.push(0);
    bounds.push(stream.len());
    bounds.sort_unstable();
    bounds.dedup();
    let mut pieces: Vec<(u64, &[u8])> = bounds
        .windows(2)
        .map(|w| (w[0] as u64, &stream[w[0]..w[1]]))
        .collect();
    for (i, o) in plan.iter().enumerate() {
        let len = pieces.len();
        pieces.swap(i % len, usize::from(*o) % len);
        if o % 7 == 0 {
            let copy = pieces[usize::from(*o) % len];
            pieces.push(copy);
        }
    }
    let mut rx = TransferReceiver::new();
    let mut driver = Driver::default();
    for (at, bytes) in pieces {
        driver.feed(&mut rx, at, bytes);
    }
    assert_eq!(rx.phase(), ReceivePhase::Checking);
    assert_eq!(driver.file, file);
    rx.digest(Ok(digest_of(&driver.file)));
    rx.stored();
    assert_eq!(rx.phase(), ReceivePhase::Completed);
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 1 => valid_stream(rest),
        Some((_, rest)) => arbitrary_pieces(rest),
        None => {}
    }
});
