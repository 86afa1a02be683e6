//! Arbitrary bytes into every entry point that reads untrusted input
//! (`Header::parse`, `frame_len`, `Message::decode`): none may panic, they
//! must agree with each other, and whatever decodes must re-encode to exactly
//! the input bytes (the encoding is canonical) and frame as one whole message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| tryst_fuzz::check_untrusted_bytes(input));
