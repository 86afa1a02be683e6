//! The Noise IK control channel: arbitrary bytes into `Responder::accept`
//! and `Initiator::finish` (and the peer handshake's KKpsk0 accept and
//! finish) must never panic, and the real handshake messages with any byte
//! changed are refused; after a real handshake with fixed keys, records
//! sealed in both directions are delivered in any order, replayed, mutated,
//! cut short, moved to other channels or nonces, or forged:
//! `SecureChannel::open` never panics, accepts each genuine record at most
//! once exactly as a model of the replay window says, and never accepts a
//! modified record. See `tryst_fuzz::noise_channel` for the harness.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tryst_fuzz::noise_channel::run(data);
});
