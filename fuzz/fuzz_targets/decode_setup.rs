//! Connection set-up bodies (connection request, permission list request,
//! list, inquiry and answer, address notification): the first byte picks the
//! type, the rest becomes its body behind a valid header, so every input
//! reaches the set-up parsers (names, name lists, addresses). Same properties
//! as `decode_any`: no panic, and a decoded message re-encodes to exactly the
//! framed input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tryst_core::wire::Family;

fuzz_target!(|input: &[u8]| tryst_fuzz::check_family_body(Family::Setup, input));
