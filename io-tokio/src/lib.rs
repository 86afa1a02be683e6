//! Async (tokio) driver for the tryst protocol core; it will move bytes
//! between sockets, timers, storage and the core's state machines.
#![forbid(unsafe_code)]

pub use tryst_core as core;
