//! The cryptography of tryst, sans-IO: no socket, no clock, no OS
//! randomness. (The peer path's per-packet cipher and its KKpsk0 handshake
//! live with the peer path, in `peer::cipher` and
//! `peer::handshake`; they build on this module.)
//!
//! - [`channel`]: the secure control channel (Noise `IK`), terminal to session
//!   server and session server to trigger server, and the [`SecureChannel`]
//!   that carries every later message as a [`crate::wire::Sealed`] record.
//! - `noise` (crate-private): what every Noise handshake of the crate shares,
//!   the IK channel here and the peer path's KKpsk0 handshake: the [`StaticKeypair`], the guarded
//!   clatter calls, the one Noise `Split()` and the typed [`HandshakeError`].
//! - [`udp_auth`]: the AES-GCM tags of keepalives, triggers and their acks,
//!   and the [`udp_auth::ReplayGuard`] that refuses a replayed counter.
//! - [`ticket`]: the session server's registration tickets (AES-256-GCM
//!   under an HKDF-derived key) and their HMAC binders.
//! - `replay`: the sliding [`ReplayWindow`] of received nonces.
//!
//! Dependencies run one way: `channel` builds on `noise`, and nothing here
//! refers to the peer path.
//!
//! Everything works without an allocator. Randomness comes in as a
//! `R: RngCore + CryptoRng` from [`rand_core`] 0.6 (re-exported here, the
//! version the Noise crate uses); time comes in as [`crate::time::Instant`].
//! The Noise handshakes are those of the `clatter` crate; the transport is
//! plain AES-256-GCM over the keys of the Noise split, with explicit nonces.

pub mod channel;
pub(crate) mod noise;
mod replay;
pub mod ticket;
pub mod udp_auth;

pub use channel::{
    Initiator, OpenError, Responder, SealError, SecureChannel, REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
};
pub use noise::{
    is_low_order, HandshakeError, StaticKeypair, HANDSHAKE_TIMEOUT, MAX_HANDSHAKE_PAYLOAD,
};
pub use rand_core;
pub use replay::{ReplayError, ReplayWindow, REPLAY_WINDOW};
