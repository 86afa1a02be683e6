//! The std layer every tryst driver shares (blocking, no async runtime):
//! the loop contract ([`drive`]) and the blocking driver that runs it
//! ([`driver`]), the roles with their commands, events and handles
//! ([`role`]: terminal, session server, trigger server), the batched UDP
//! socket both drivers use ([`udp`]), descriptor limits ([`descriptors`]),
//! key files ([`keyfile`]), the servers' durable store ([`store`]), and the
//! files of a transfer ([`transfer`]: the source read by offset, the
//! receive folder, the hasher thread) around the core's transfer machines.
#![forbid(unsafe_code)]

/// The channel crate of the roles' commands and events, for apps that name
/// its types.
pub use flume;
pub use tryst_core as core;

pub mod cli;
pub mod datadir;
pub mod descriptors;
pub mod drive;
pub mod driver;
pub mod keyfile;
pub mod netcheck;
pub mod observe;
pub mod role;
pub mod store;
#[cfg(any(test, feature = "test-support"))]
pub mod testkit;
pub mod transfer;
pub mod udp;
