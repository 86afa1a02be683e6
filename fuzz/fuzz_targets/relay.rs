//! The relay's bind decoder and machine on arbitrary bytes: no panic, no
//! forward to the sender or of a non-peer packet, bounded allocations. See
//! `tryst_fuzz::relay` for the harness.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tryst_fuzz::relay::run(data);
});
