//! Async (tokio) driver for the tryst protocol core, and the `tryst` binary.
//!
//! Each role's state machine runs in one task that owns it and its sockets
//! ([`driver::run`], one loop for every role): the task feeds the machine
//! every datagram, stream message, timer and app command, then polls its
//! outputs until the next timeout, storing durable facts before anything
//! that acknowledges them leaves (the contract of `tryst_core::machine`).
//! No protocol logic lives here; the library does not depend on its CLI
//! (`cli`, used only by the binary).
#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod driver;
pub mod stream;

pub use tryst_core as core;
