//! The trigger server fed arbitrary operation sequences (quinn-proto style):
//! correctly tagged keepalives and trigger acks from a few terminals and
//! addresses, real Noise IK link handshakes and sealed requests (key
//! installs and revokes, triggers, end triggers, address inquiries) from
//! allowed and refused session servers, replays, raw and structured garbage
//! on UDP and streams, connection churn, and clock moves of any size in
//! both directions. Nothing may panic; every transmit decodes; UDP replies
//! go only to addresses that proved an authentic keepalive and carry tags
//! under installed keys; sealed results open under the link's keys;
//! replayed records are refused; queues and tables stay within their
//! bounds; after `handle_timeout(now)` the next timer is later than `now`.
//! See `tryst_fuzz::trigger_server` for the harness.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tryst_fuzz::trigger_server::run(data);
});
