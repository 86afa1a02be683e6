//! Session-life bodies (extension request, grant and refusal, end
//! notification) and the error reply: the first byte picks the type, the rest
//! becomes its body behind a valid header. Same properties as `decode_any`:
//! no panic, and a decoded message re-encodes to exactly the framed input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tryst_core::wire::Family;

fuzz_target!(|input: &[u8]| tryst_fuzz::check_family_body(Family::SessionLife, input));
