//! The share protocol's decoder and message reader (`tryst_core::peer::share`)
//! on arbitrary input, in two modes chosen by the first byte:
//!
//! - even: the rest is one message: what decodes re-encodes to the same
//!   bytes, and a reader fed the rest backwards in 7-byte pieces (each
//!   twice) reads the same message or refuses it, never panics;
//! - odd: the rest is a sequence of pieces (offset u16 BE, length u8,
//!   bytes) fed to a reader: no panic, and a complete message decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tryst_core::peer::share::{MessageReader, ShareMessage, MAX_SHARE_MESSAGE_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut reader = Box::new(MessageReader::new());
    if mode % 2 == 0 {
        let decoded = ShareMessage::decode(rest);
        if let Ok(Some((message, len))) = decoded {
            let mut out = vec![0u8; MAX_SHARE_MESSAGE_LEN];
            let n = message.encode(&mut out).expect("a decoded message encodes");
            assert_eq!(&out[..n], &rest[..len]);
        }
        let pieces: Vec<(usize, &[u8])> = rest
            .chunks(7)
            .enumerate()
            .map(|(i, c)| (i * 7, c))
            .collect();
        let mut complete = false;
        for (at, piece) in pieces.iter().rev().chain(pieces.iter()) {
            match reader.stream_data(*at as u64, piece) {
                Ok(done) => complete |= done,
                Err(_) => return,
            }
        }
        if complete {
            let read = reader.message().expect("a complete message");
            if let (Ok(read), Ok(Some((whole, _)))) = (read, decoded) {
                assert_eq!(read, whole);
            }
        }
    } else {
        let mut at = rest;
        while let [hi, lo, len, tail @ ..] = at {
            let len = usize::from(*len).min(tail.len());
            let offset = u64::from(u16::from_be_bytes([*hi, *lo]));
            if reader.stream_data(offset, &tail[..len]) == Ok(true) {
                assert!(reader.message().is_some());
            }
            at = &tail[len..];
        }
        let _ = reader.message();
    }
});
