//! The std layer every tryst driver shares (blocking, no async runtime):
//! key files ([`keyfile`]) and the servers' durable store ([`store`]).
#![forbid(unsafe_code)]

pub use tryst_core as core;

pub mod keyfile;
pub mod store;
