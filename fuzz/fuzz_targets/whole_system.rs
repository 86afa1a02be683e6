//! The whole system in the deterministic simulator of `tryst-tests`
//! (`tryst_tests::sim`): 2 to 5 terminals with arbitrary decision modes,
//! judge policies, permission lists and NATs, on a clean or lossy network,
//! fed an arbitrary list of requests, list edits, users' answers, transfer
//! progress, finishes, forced ends, stream and link breaks, loss changes,
//! power cuts, session server restarts and time steps, then run past every
//! deadline. As in the simulator's property test: a session starts, and an
//! address is notified, only for a request the target permitted in time;
//! every started session has exactly one record and no record lacks a
//! start; no machine asks to be woken in the past after `handle_timeout`;
//! nothing panics. See `tryst_fuzz::whole_system` for the harness.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tryst_fuzz::whole_system::run(data);
});
