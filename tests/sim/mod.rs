//! A deterministic simulator of the whole tryst system: many terminals,
//! both servers, NAT boxes and lossy links, on a virtual clock.
//!
//! - [`world`]: the [`world::Sim`] that owns the three kinds of machines,
//!   drives them by the driver contract, and scripts the apps and the
//!   operator; [`world::Store`] is the session server's durable store.
//! - [`net`]: hosts, links, streams and the event queue; [`nat`]: NAT boxes.
//! - [`peer`]: two peer sessions behind NATs with a driver, for the direct path;
//!   [`peer_world`]: both servers and endpoint terminals with the direct path.
//! - [`log`]: bounded per-machine event logs.
//! - [`model`]: the reference model of who may reach whom, and the run invariants.
//! - [`seed`]: seeds, and printing the seed of a failing run.
//!
//! One seed drives every random choice (the network's and each machine's
//! generator, every key pair), so a seed reproduces a run bit for bit.

pub mod log;
pub mod model;
pub mod nat;
pub mod net;
pub mod peer;
pub mod peer_world;
pub mod seed;
pub mod world;
