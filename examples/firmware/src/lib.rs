//! The no_std proof of `tryst-core`: a static library, as firmware would
//! link it, with no `std`, no allocator and its own panic handler. Its one
//! entry point decodes a message and encodes an answer, so the codec's
//! decoder and encoder are really linked, not optimised away.
//!
//! Built by CI: `cargo build --release --manifest-path examples/firmware/Cargo.toml`.
#![no_std]

use core::panic::PanicInfo;

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
