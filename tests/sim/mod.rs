//! A deterministic simulator of the whole tryst system: many terminals,
//! both servers, NAT boxes and lossy links, on a virtual clock.
//!
//! - [`world`]: the one world, [`world::Sim`]: the real trigger server,
//!   session server and terminals as [`tryst_core::peer::endpoint::Endpoint`]s
//!   (what ships), driven through the `Machine` trait by [`driver::drive`],
//!   with one routing function, the scripted apps and the operator;
//!   [`world::Store`] is the session server's durable store, and the
//!   world checks that nothing acknowledges a fact before it is stored.
//! - [`driver`]: the one generic "drive this machine until Timeout"
//!   function, and the (deliberately wrong) [`driver::DriverOrder`] modes.
//! - [`net`]: hosts, links, streams and the event queue; [`nat`]: NAT boxes.
//! - [`peer`]: two bare peer sessions behind NATs (the component below the
//!   endpoint), for the direct path's transport tests.
//! - [`ops`]: the whole-system operations, declared once for the property
//!   test and the `whole_system` fuzz target, and the one `apply` of them.
//! - [`log`]: bounded per-machine event logs.
//! - [`model`]: the reference model of who may reach whom, and the run invariants.
//! - [`seed`]: seeds, and printing the seed of a failing run.
//!
//! One seed drives every random choice (the network's and each machine's
//! generator, every key pair), so a seed reproduces a run bit for bit.

pub mod driver;
pub mod log;
pub mod model;
pub mod nat;
pub mod net;
pub mod ops;
pub mod peer;
pub mod seed;
pub mod world;
