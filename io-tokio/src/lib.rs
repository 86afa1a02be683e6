//! Async (tokio) driver for the tryst protocol core.
//!
//! Each role's state machine runs in one task that owns it and its sockets:
//! the task feeds the machine every datagram, stream message, timer and app
//! command, then drains `poll_transmit`, `poll_event` and `poll_timeout`
//! (the contract of `tryst_core::machine`). No protocol logic lives here.
#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod demo;
pub mod driver;
pub mod session;
pub mod stream;
pub mod terminal;
pub mod trigger;

pub use tryst_core as core;
