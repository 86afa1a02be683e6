//! The no_std proof of `tryst-core`: a static library, as firmware would
//! link it, with no `std`, no allocator and its own panic handler. One
//! entry point decodes a message and encodes an answer, so the codec's
//! decoder and encoder are really linked, not optimised away; the other
//! runs the direct path's transport (frames, acknowledgements, recovery,
//! congestion control) on a packet, so the peer code is linked too.
//!
//! Built by CI: `cargo build --release --manifest-path examples/firmware/Cargo.toml`.
#![no_std]

use core::panic::PanicInfo;

use tryst_core::peer::transport::{PeerSink, StreamSource, Transport, TransportConfig};
use tryst_core::time::Instant;
use tryst_core::wire::{Message, Poll};

/// Firmware has nowhere to report a panic to and nothing to unwind: stop here.
#[panic_handler]
fn halt_on_panic(_info: &PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// Decodes the message in `input[..input_len]` and, if it is valid, writes
/// an answer into `output[..output_len]` (today: a `Poll`, the smallest
/// message, standing for whatever the firmware would reply).
///
/// Returns the number of bytes written, `-1` if the input is not a valid
/// tryst message, or `-2` if the answer does not fit in `output`.
///
/// # Safety
///
/// `input` must point to `input_len` readable bytes and `output` to
/// `output_len` writable bytes, and the two regions must not overlap.
#[no_mangle]
pub unsafe extern "C" fn tryst_firmware_answer(
    input: *const u8,
    input_len: usize,
    output: *mut u8,
    output_len: usize,
) -> isize {
    // SAFETY: the caller guarantees both regions, as documented above.
    let (input, output) = unsafe {
        (
            core::slice::from_raw_parts(input, input_len),
            core::slice::from_raw_parts_mut(output, output_len),
        )
    };
    answer(input, output)
}

fn answer(input: &[u8], output: &mut [u8]) -> isize {
    let Ok(request) = Message::decode(input) else {
        return -1;
    };
    // Echo a valid request back re-encoded when it fits, else answer a Poll;
    // both paths keep every body encoder of the codec in the library.
    let reply = if request.encoded_len() <= output.len() {
        request
    } else {
        Message::Poll(Poll)
    };
    match reply.encode(output) {
        Ok(written) => written as isize,
        Err(_) => -2,
    }
}

/// Feeds the decrypted payload `input[..input_len]` of peer packet number 0,
/// received at time `now_micros`, to a fresh transport, then writes the
/// transport's next packet (its acknowledgement) into `output[..output_len]`.
///
/// Returns the bytes written, `0` if there was nothing to send, or `-1` if
/// the payload is not a valid frame sequence.
///
/// # Safety
///
/// As [`tryst_firmware_answer`]: valid, non-overlapping regions.
#[no_mangle]
pub unsafe extern "C" fn tryst_firmware_peer_packet(
    now_micros: u64,
    input: *const u8,
    input_len: usize,
    output: *mut u8,
    output_len: usize,
) -> isize {
    // SAFETY: the caller guarantees both regions, as documented above.
    let (input, output) = unsafe {
        (
            core::slice::from_raw_parts(input, input_len),
            core::slice::from_raw_parts_mut(output, output_len),
        )
    };
    peer_packet(Instant::from_micros(now_micros), input, output)
}

/// A sink that counts what arrives (firmware would write it to flash).
struct Counting(u64);

impl PeerSink for Counting {
    fn stream_data(&mut self, _offset: u64, data: &[u8]) {
        self.0 += data.len() as u64;
    }
    fn datagram(&mut self, data: &[u8]) {
        self.0 += data.len() as u64;
    }
}

/// A source with nothing to send: the firmware only receives here.
struct Nothing;

impl StreamSource for Nothing {
    fn read_at(&mut self, _offset: u64, _buf: &mut [u8]) -> usize {
        0
    }
}

fn peer_packet(now: Instant, input: &[u8], output: &mut [u8]) -> isize {
    let mut transport = Transport::new(now, TransportConfig::default());
    let mut sink = Counting(0);
    if transport.handle_packet(now, 0, input, &mut sink).is_err() {
        return -1;
    }
    match transport.write_packet(now, 0, output, &mut Nothing) {
        Some(written) => written as isize,
        None => 0,
    }
}
