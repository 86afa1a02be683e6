//! Two peer sessions (connecting and connected) fed arbitrary operation
//! sequences: deliveries, losses, duplicates and corruptions of what they
//! really send, raw and peer-framed garbage from any address, stream and
//! datagram sends, extensions, closes and clock moves in both directions.
//! Nothing may panic; stream bytes delivered are the sender's bytes at
//! those offsets; datagrams delivered are ones that were sent; after
//! `handle_timeout(now)` and draining, the next timer is later than `now`;
//! an ended session stays silent. See `tryst_fuzz::peer_session`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tryst_fuzz::peer_session::run(data);
});
