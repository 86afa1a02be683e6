//! What every role's state machine shares: where a datagram or record goes
//! ([`Destination`]), one outgoing message ([`Transmit`]), and the driver
//! contract.
//!
//! # The driver contract
//!
//! A machine never touches a socket, a clock or a random source. After every
//! input (`handle_*(now, ..)` or `handle_timeout(now)`) the driver drains
//! `poll_transmit()` until `None`, then `poll_event()` until `None`, then
//! asks `poll_timeout()` when to call `handle_timeout` next. After
//! `handle_timeout(now)`, `poll_timeout()` is `None` or later than `now`, so
//! a driver that follows the contract cannot spin. Output queues are bounded
//! by named constants; a driver that does not poll loses the oldest
//! transmits (counted), never memory.

use core::net::SocketAddr;

use crate::wire::{Message, MAX_MESSAGE_LEN};

/// A stream (TCP connection) that a machine accepted, numbered by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ConnectionId(pub u64);

/// Where a transmit goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A datagram from the machine's UDP socket to this address.
    Udp(SocketAddr),
    /// A message on a stream the machine accepted (a server's client).
    Connection(ConnectionId),
    /// A message on the one stream the machine opens itself: a terminal's
    /// link to the session server, the session server's link to the
    /// trigger server. The driver connects it when needed.
    Upstream,
}

/// The bytes of one encoded message, at most [`MAX_MESSAGE_LEN`].
pub type Payload = heapless::Vec<u8, MAX_MESSAGE_LEN>;

/// One message to send.
#[derive(Clone, PartialEq, Eq)]
#[must_use = "a transmit that is not sent is lost"]
pub struct Transmit {
    /// Where it goes.
    pub destination: Destination,
    /// The encoded message: one datagram, or one record on a stream.
    pub payload: Payload,
}

impl Transmit {
    /// Encodes `message` for `destination`; `None` only if it does not fit
    /// [`MAX_MESSAGE_LEN`], which no valid message exceeds.
    pub fn new(destination: Destination, message: &Message<'_>) -> Option<Transmit> {
        let mut payload = Payload::new();
        payload.resize_default(message.encoded_len()).ok()?;
        let n = message.encode(&mut payload).ok()?;
        payload.truncate(n);
        Some(Transmit {
            destination,
            payload,
        })
    }

    /// Wraps already-encoded bytes (e.g. a sealed record); `None` if too long.
    pub fn from_bytes(destination: Destination, bytes: &[u8]) -> Option<Transmit> {
        Some(Transmit {
            destination,
            payload: Payload::from_slice(bytes).ok()?,
        })
    }
}

impl core::fmt::Debug for Transmit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Transmit")
            .field("destination", &self.destination)
            .field("len", &self.payload.len())
            .finish()
    }
}
