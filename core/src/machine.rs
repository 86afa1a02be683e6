//! The driver contract every role shares: what goes in ([`Input`]), what
//! comes out ([`Output`]), and the one trait that ties them together
//! ([`Machine`]), implemented by the trigger server, the session server and
//! the terminal's [`Endpoint`](crate::peer::endpoint::Endpoint).
//!
//! # The contract
//!
//! A machine never touches a socket, a clock or a random source (its
//! generator is given once, at construction). A driver feeds it inputs with
//! [`Machine::handle_input`] and [`Machine::handle_timeout`], and after every
//! input calls [`Machine::poll_output`] until it returns
//! [`Output::Timeout`]. The machine decides the order of what comes out:
//!
//! 1. [`Output::Store`]: a durable fact (a name binding, a session record).
//!    Every pending fact comes out before any transmit, so **a driver that
//!    commits the facts it has taken before it sends the next
//!    [`Output::Transmit`] never acknowledges what it has not stored**.
//!    Facts are never dropped: they wait, however long the driver takes.
//! 2. [`Output::Close`]: close an accepted stream now, dropping what is
//!    queued for it.
//! 3. [`Output::Event`]: something for the app or the operator's log.
//! 4. [`Output::Transmit`]: one message, written into the caller's buffer
//!    (so the terminal's bulk path copies nothing).
//! 5. [`Output::Timeout`]: nothing more for now; call
//!    [`Machine::handle_timeout`] at that instant (or only on input, when
//!    `None`). After `handle_timeout(now)` the next timeout is `None` or
//!    later than `now`, so a driver that follows the contract cannot spin.
//!
//! A call that changes a machine outside `handle_*` (a terminal's
//! `connect`, an operator's `end_session`) needs nothing else: the next
//! `poll_output` picks up what it caused. Time that goes back is clamped.
//!
//! ```
//! # use tryst_core::machine::{Machine, Output, Input, Destination, MAX_TRANSMIT_LEN};
//! # use tryst_core::time::Instant;
//! # fn commit<F>(_: &mut Vec<F>) {}
//! # fn send(_: Destination, _: &[u8]) {}
//! # fn close(_: tryst_core::machine::ConnectionId) {}
//! /// One turn of a driver: an input, then everything it caused.
//! fn turn<M: Machine<Io = ()>>(m: &mut M, now: Instant, input: Input<'_>) -> Option<Instant> {
//!     m.handle_input(now, input, &mut ());
//!     let mut buf = [0u8; MAX_TRANSMIT_LEN];
//!     let mut facts = Vec::new();
//!     loop {
//!         match m.poll_output(now, &mut buf, &mut ()) {
//!             Output::Store(fact) => facts.push(fact),
//!             Output::Close(conn) => close(conn),
//!             Output::Event(_event) => { /* to the app */ }
//!             Output::Transmit(t) => {
//!                 commit(&mut facts); // stored before anything that acknowledges it
//!                 send(t.destination, &buf[..t.len]);
//!             }
//!             Output::Timeout(at) => {
//!                 commit(&mut facts);
//!                 return at; // sleep until then, or until the next input
//!             }
//!         }
//!     }
//! }
//! ```

use core::net::{IpAddr, SocketAddr};

use crate::peer::packet::MAX_DATAGRAM_LEN;
use crate::time::Instant;
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
    /// A relay frame ([`crate::relay::framing`]: the length, then a peer
    /// packet) on the stream the machine opens to this relay over TCP, on
    /// a network that drops UDP. The driver connects it when needed (and
    /// again after it is lost), reassembles what comes back with
    /// [`crate::relay::framing::RelayFrameBuffer`] and hands each packet
    /// in as an [`Input::Datagram`] from this address; when its queue is
    /// full it drops the frame (the peers' transport resends).
    RelayStream(SocketAddr),
}

/// The largest transmit of any role: a caller's buffer of this size holds
/// every [`Output::Transmit`].
pub const MAX_TRANSMIT_LEN: usize = if MAX_MESSAGE_LEN > MAX_DATAGRAM_LEN {
    MAX_MESSAGE_LEN
} else {
    MAX_DATAGRAM_LEN
};

// A relay frame (a peer datagram and its 2-byte length) fits a transmit.
const _: () = assert!(MAX_TRANSMIT_LEN >= MAX_DATAGRAM_LEN + 2);

/// One message to send: its bytes are the first `len` bytes of the buffer
/// the caller gave [`Machine::poll_output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a transmit that is not sent is lost"]
pub struct Transmit {
    /// Where it goes.
    pub destination: Destination,
    /// The local address a datagram must leave from (the one its peer
    /// last sent to); `None` lets the system choose. Streams ignore it.
    pub local: Option<IpAddr>,
    /// How many bytes of the caller's buffer to send.
    pub len: usize,
}

/// What a machine hands its driver, in the order of the [module](self) docs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "every output must be acted on: a fact stored, a transmit sent, a close done"]
pub enum Output<F, E> {
    /// Store this durable fact before sending the next transmit.
    Store(F),
    /// Close this accepted stream now, dropping what is queued for it.
    Close(ConnectionId),
    /// Something for the app.
    Event(E),
    /// Send the first `len` bytes of the caller's buffer.
    Transmit(Transmit),
    /// Nothing more now: call [`Machine::handle_timeout`] at this instant,
    /// or only on the next input when `None`.
    Timeout(Option<Instant>),
}

/// One input from the driver.
#[derive(Debug)]
pub enum Input<'a> {
    /// A datagram arrived on the machine's UDP socket. A terminal decrypts
    /// peer packets in place, hence `mut`.
    Datagram {
        /// Its source address, as observed.
        from: SocketAddr,
        /// The local address it arrived at, when the driver knows it
        /// (`IP_PKTINFO`/`IPV6_PKTINFO` on a socket bound to an unspecified
        /// address): an answer must leave from that address, or the
        /// sender's NAT, which saw the request go to it, drops the answer.
        local: Option<IpAddr>,
        /// Its bytes.
        bytes: &'a mut [u8],
    },
    /// The driver accepted a stream from `remote` and numbered it `conn`.
    ConnectionOpened {
        /// The driver's number for it.
        conn: ConnectionId,
        /// Its remote address.
        remote: SocketAddr,
    },
    /// One whole message arrived on an accepted stream.
    ConnectionMessage {
        /// The stream.
        conn: ConnectionId,
        /// The message.
        bytes: &'a [u8],
    },
    /// An accepted stream ended (or the driver gave up on it).
    ConnectionClosed(ConnectionId),
    /// One whole message arrived on the machine's own upstream stream.
    UpstreamMessage(&'a [u8]),
    /// The upstream stream was lost (or could not be opened).
    UpstreamClosed,
}

/// A role's state machine as every driver runs it. See the [module](self)
/// docs for the order of outputs and the drain rule.
pub trait Machine {
    /// Durable facts, stored by the driver before what acknowledges them
    /// is sent. [`core::convert::Infallible`] for a role that has none.
    type Fact: core::fmt::Debug;
    /// What the app or the operator's log hears.
    type Event: core::fmt::Debug;
    /// The app's side of payloads the machine moves without storing them
    /// (a terminal's file streams); `()` for the servers.
    type Io: ?Sized;

    /// Feeds one input.
    fn handle_input(&mut self, now: Instant, input: Input<'_>, io: &mut Self::Io);

    /// Does the work due at `now`.
    fn handle_timeout(&mut self, now: Instant);

    /// The next output; call until [`Output::Timeout`] after every input.
    /// A [`Output::Transmit`] is written into `buf`, which must hold
    /// [`MAX_TRANSMIT_LEN`] bytes (a shorter one drops what does not fit,
    /// counted).
    fn poll_output(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        io: &mut Self::Io,
    ) -> Output<Self::Fact, Self::Event>;

    /// When [`Self::handle_timeout`] should next run; the same instant
    /// [`Output::Timeout`] gives.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Which of the driver's upstream addresses `Destination::Upstream`
    /// goes to (0: the first, and the only one of most roles). A terminal
    /// that knows several session servers moves on after a failed
    /// handshake; a driver whose live upstream stream goes elsewhere closes
    /// it and opens one to the address of this index.
    fn upstream_choice(&self) -> usize {
        0
    }
}

/// The bytes of one encoded message queued inside a machine, at most
/// [`MAX_MESSAGE_LEN`].
pub type Payload = heapless::Vec<u8, MAX_MESSAGE_LEN>;

/// A message a server or terminal component queued, owning its bytes; the
/// machine copies it into the caller's buffer as an [`Output::Transmit`].
#[derive(Clone, PartialEq, Eq)]
pub struct OwnedTransmit {
    /// Where it goes.
    pub destination: Destination,
    /// The local address a datagram must leave from ([`Transmit::local`]).
    pub local: Option<IpAddr>,
    /// The encoded message: one datagram, or one record on a stream.
    pub payload: Payload,
}

impl OwnedTransmit {
    /// Encodes `message` for `destination`; `None` only if it does not fit
    /// [`MAX_MESSAGE_LEN`], which no valid message exceeds.
    pub fn new(destination: Destination, message: &Message<'_>) -> Option<OwnedTransmit> {
        let mut payload = Payload::new();
        payload.resize_default(message.encoded_len()).ok()?;
        let n = message.encode(&mut payload).ok()?;
        payload.truncate(n);
        Some(OwnedTransmit {
            destination,
            local: None,
            payload,
        })
    }

    /// Wraps already-encoded bytes (e.g. a sealed record); `None` if too long.
    pub fn from_bytes(destination: Destination, bytes: &[u8]) -> Option<OwnedTransmit> {
        Some(OwnedTransmit {
            destination,
            local: None,
            payload: Payload::from_slice(bytes).ok()?,
        })
    }

    /// The same transmit, leaving from `local` ([`Transmit::local`]).
    #[must_use]
    pub fn from_local(mut self, local: Option<IpAddr>) -> OwnedTransmit {
        self.local = local;
        self
    }

    /// Copies the bytes into `buf`: the [`Transmit`] that describes them,
    /// or `None` if `buf` is too short.
    pub fn write_into(&self, buf: &mut [u8]) -> Option<Transmit> {
        let len = self.payload.len();
        buf.get_mut(..len)?.copy_from_slice(&self.payload);
        Some(Transmit {
            destination: self.destination,
            local: self.local,
            len,
        })
    }
}

impl core::fmt::Debug for OwnedTransmit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OwnedTransmit")
            .field("destination", &self.destination)
            .field("local", &self.local)
            .field("len", &self.payload.len())
            .finish()
    }
}
