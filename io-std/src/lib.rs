//! Blocking std-thread driver for the tryst protocol core.
#![forbid(unsafe_code)]

pub use tryst_core as core;

pub mod keyfile;
pub mod transfer;
