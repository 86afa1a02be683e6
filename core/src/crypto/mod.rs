//! The cryptography of tryst, sans-IO: no socket, no clock, no OS randomness.
//!
//! - [`channel`]: the secure control channel (Noise `IK`), terminal to session
//!   server and session server to trigger server, and the [`SecureChannel`]
//!   that carries every later message as a [`crate::wire::Sealed`] record.
//! - [`peer`]: the peer handshake (Noise `KKpsk0`) between two terminals that
//!   the session server introduced; it ends in the same [`SecureChannel`].
//! - [`udp_auth`]: the AES-GCM tags of keepalives, triggers and their acks,
//!   and the [`udp_auth::ReplayGuard`] that refuses a replayed counter.
//!
//! Everything works without an allocator. Randomness comes in as a
//! `R: RngCore + CryptoRng` from [`rand_core`] 0.6 (re-exported here, the
//! version the Noise crate uses); time comes in as [`crate::time::Instant`].
//! The Noise handshakes are those of the `clatter` crate; the transport is
//! plain AES-256-GCM over the keys of the Noise split, with explicit nonces.

pub mod channel;
mod noise;
pub mod peer;
mod replay;
pub mod udp_auth;

pub use channel::{
    Initiator, OpenError, Responder, SealError, SecureChannel, HANDSHAKE_TIMEOUT,
    REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME,
};
pub use noise::{is_low_order, HandshakeError, StaticKeypair, MAX_HANDSHAKE_PAYLOAD};
pub use rand_core;
pub use replay::{ReplayError, ReplayWindow, REPLAY_WINDOW};
