//! The std layer every tryst driver shares (blocking, no async runtime):
//! key files ([`keyfile`]), the servers' durable store ([`store`]), and
//! the files of a transfer ([`transfer`]: the source read by offset, the
//! receive folder, the hasher thread) around the core's transfer machines.
#![forbid(unsafe_code)]

pub use tryst_core as core;

pub mod cli;
pub mod datadir;
pub mod drive;
pub mod keyfile;
pub mod store;
pub mod transfer;
