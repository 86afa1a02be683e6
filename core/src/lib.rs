//! Sans-IO protocol core of tryst.
//!
//! tryst lets a device behind a home NAT be reached directly by another device
//! only when it has said yes, while an operator's servers broker the meeting.
//! This crate holds everything that does not touch a socket, a clock, a thread
//! or a random source; the drivers (`tryst-tokio`, `tryst-std`, firmware) feed
//! it bytes and time and carry out what it asks.
//!
//! # Layout
//!
//! The codec and the primitives, which the machines build on:
//!
//! - [`wire`]: the control messages on the wire: the common 6-byte header
//!   ([`wire::Header`], shared with the peer packets), every message type,
//!   the byte cursor every codec of the crate reads with, and the test
//!   vectors `PROTOCOL.md` shows.
//! - [`crypto`]: the Noise `IK` control channel ([`crypto::SecureChannel`]),
//!   the shared Noise handshake helpers, and the tags of the authenticated
//!   UDP messages ([`crypto::udp_auth`]).
//! - [`identity`]: long-term key pairs and their text form.
//! - [`time`]: the caller's monotonic clock as an integer [`time::Instant`].
//! - [`ratelimit`]: token buckets in bounded memory.
//! - `names` (feature `alloc`): the session server's name bindings.
//!
//! The role state machines. Every role a driver runs implements the one
//! contract of [`machine`] ([`machine::Machine`]: inputs in with
//! `handle_input` / `handle_timeout`, then `poll_output` until
//! [`machine::Output::Timeout`]; a durable fact comes out as
//! [`machine::Output::Store`] before any transmit that acknowledges it; its
//! docs show a whole driver loop):
//!
//! - `trigger_server` (feature `alloc`): NAT mappings, triggers, address inquiries.
//! - `session_server` (feature `alloc`): permission, session keys, durations, the
//!   session log (its durable facts: `session_server::SessionFact`).
//! - [`peer::endpoint::Endpoint`]: the terminal that ships: the control-plane
//!   component [`terminal`] (registration, keepalives, permission, sessions)
//!   and its peer sessions on one socket.
//! - [`peer`]: the direct path between two terminals: the peer packets, the
//!   KKpsk0 handshake ([`peer::handshake`]), the per-packet cipher, the
//!   reliable stream and datagram transport, and the application protocol
//!   on it ([`peer::transfer`]: the file sender and receiver machines).
//!
//! Dependencies run one way, from the machines down to the codec: `wire`
//! depends on nothing else of the crate, `crypto` only on `wire` and
//! `time`; the machines (the peer path among them) build on those, and
//! neither `wire` nor `crypto` refers to a machine.
//!
//! The crate is `#![no_std]` and the codec needs no allocator: every size
//! bound is a named constant and every collection is a fixed-capacity
//! [`heapless`] one, so attacker input can never make it allocate or overflow.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Unit tests and the `arbitrary` derive (a fuzzing-only feature) need `std`.
#[cfg(any(test, feature = "arbitrary"))]
extern crate std;

// Server-side tables that own their strings (the name registry).
#[cfg(feature = "alloc")]
extern crate alloc;

/// proptest settings for the core's unit tests: `cases` cases, and failing
/// seeds kept in `proptest-regressions/FILE` at the repository root, where
/// every later run replays them.
#[cfg(test)]
macro_rules! proptest_config {
    ($cases:expr, $file:literal) => {
        proptest::test_runner::Config {
            cases: $cases,
            failure_persistence: Some(std::boxed::Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../proptest-regressions/",
                    $file
                )),
            )),
            ..proptest::test_runner::Config::default()
        }
    };
}

#[cfg(feature = "alloc")]
pub mod conn_guard;
pub mod crypto;
pub mod identity;
pub mod machine;
#[cfg(feature = "alloc")]
pub mod names;
pub mod netcheck;
pub mod peer;
pub mod ratelimit;
pub mod relay;
#[cfg(feature = "alloc")]
pub mod session_server;
pub mod shard;
pub mod terminal;
pub mod time;
#[cfg(feature = "alloc")]
pub mod trigger_server;
pub mod wire;
