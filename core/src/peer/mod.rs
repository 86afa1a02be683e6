//! The direct peer path between the two terminals of a session (S205-S207):
//! hole punching from the keepalive socket, the KKpsk0 handshake, and an
//! encrypted data channel that carries a reliable stream (files) and
//! unreliable datagrams (real-time audio).
//!
//! - [`packet`]: the outer packets (probe, handshake, data) on the UDP socket.
//! - [`handshake`]: the peer handshake (Noise `KKpsk0`) between the two
//!   terminals the session server introduced; it ends in a
//!   [`cipher::PacketCipher`].
//! - [`cipher`]: AES-256-GCM per data packet, in place, with a replay window
//!   and a key limit.
//! - [`session`]: [`session::PeerSession`], one session's machine: punching,
//!   handshake, path, duration, close; it owns a [`transport::Transport`].
//! - [`transport`]: everything inside the encrypted payload: frames,
//!   acknowledgements, loss recovery, congestion control, stream, datagrams.
//! - [`endpoint`]: [`endpoint::Endpoint`], a terminal and its peer sessions
//!   on one socket, the glue every driver needs.
//! - [`transfer`]: the file-transfer header and trailer carried on the stream,
//!   and the sender and receiver machines of a transfer.
//! - [`share`]: the share protocol on the stream: list and get requests to a
//!   terminal that shares a folder, its answers, and the stored-name receipt.
//!
//! Like every machine of the crate it is sans-IO and needs no allocator.

pub mod cipher;
pub mod endpoint;
pub mod handshake;
pub mod packet;
pub mod session;
pub mod share;
pub mod transfer;
pub mod transport;
