//! The session server fed arbitrary operation sequences (quinn-proto
//! style): terminals that register with real Noise IK handshakes (under
//! their own or another's name, honest or not), confirm, ask for peers,
//! answer list requests and inquiries, extend and end sessions, all as
//! sealed records; a trigger server played on the upstream link; the
//! operator's forced ends, unbinds and restarts from the stored facts;
//! replays, raw and structured garbage, stream churn and clock moves of any
//! size in both directions. Nothing may panic; every transmit decodes and
//! opens under its channel; a session starts (and an address is notified)
//! only for a pair the target permitted; every started session gets exactly
//! one record once the clock has run long enough; replayed records are
//! refused; queues and tables stay within their limits; after
//! `handle_timeout(now)` the next timer is later than `now`. See
//! `tryst_fuzz::session_server` for the harness.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tryst_fuzz::session_server::run(data);
});
