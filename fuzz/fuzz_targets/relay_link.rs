//! The relay link's codec and both its ends on arbitrary bytes: no panic,
//! canonical decoding, nothing for a forged handshake. See
//! `tryst_fuzz::relay_link` for the harness.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tryst_fuzz::relay_link::run(data);
});
