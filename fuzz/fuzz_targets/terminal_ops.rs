//! The terminal that ships (an `Endpoint`: terminal plus peer sessions,
//! driven through the `Machine` contract) fed arbitrary operation sequences (quinn-proto style): a
//! session server played with real Noise IK replies (accept, refuse, busy,
//! nonsense) and sealed list requests, inquiries, notifications, extension
//! answers and errors naming the terminal's real request IDs; a trigger
//! server played with correctly tagged keepalive acks, triggers and end
//! triggers with any counter; the app's calls; replays, raw and structured
//! garbage from any address, lost streams, and clock moves of any size in
//! both directions. Nothing may panic; every terminal transmit decodes; datagrams
//! other than peer packets go only to the trigger server under the registration's UDP key; records
//! open under the session server's end of the channel; queues stay within
//! their bounds; after `handle_timeout(now)` the next timer is later than
//! `now`. See `tryst_fuzz::terminal` for the harness.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tryst_fuzz::terminal::run(data);
});
