//! The peer transport: arbitrary bytes into the frame decoder, then two
//! transports driven by arbitrary operation sequences (sends, a pipe that
//! delivers, drops, duplicates and reorders, raw and structured garbage
//! packets with any packet number, clock moves, stream extends and
//! finishes, datagrams, closes). Nothing may panic; packets stay within
//! their buffers; the genuine stream arrives byte-exact; after
//! `handle_timeout(now)` the next timer is later than `now` or a packet is
//! ready. See `tryst_fuzz::peer_transport` for the harness.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tryst_fuzz::peer_transport::run(data);
});
