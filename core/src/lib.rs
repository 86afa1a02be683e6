//! Sans-IO protocol core of tryst.
//!
//! tryst lets a device behind a home NAT be reached directly by another device
//! only when it has said yes, while an operator's servers broker the meeting.
//! This crate holds everything that does not touch a socket, a clock, a thread
//! or a random source: today the wire codec ([`wire`]); the role state
//! machines build on it.
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

pub mod crypto;
pub mod identity;
pub mod machine;
#[cfg(feature = "alloc")]
pub mod names;
pub mod peer;
pub mod ratelimit;
#[cfg(feature = "alloc")]
pub mod session_server;
pub mod terminal;
pub mod time;
#[cfg(feature = "alloc")]
pub mod trigger_server;
pub mod wire;
