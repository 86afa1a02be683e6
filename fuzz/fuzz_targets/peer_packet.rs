//! The peer path's outer packet codec and the file-transfer header on
//! arbitrary bytes: no panic; whatever decodes encodes back to the same
//! bytes; routing (`peek_channel`) and the data-header reader agree with
//! the decoder. See `tryst_fuzz::peer_packet` for the harness.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tryst_fuzz::peer_packet::run(data);
});
