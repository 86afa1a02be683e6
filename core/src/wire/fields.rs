//! Field types shared by several message families: names, identifiers, keys,
//! one-byte enumerations and socket addresses.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::put::Put;

use super::error::{DecodeError, NameError};

/// Longest device name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 64;
/// Length of an X25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of a session ID.
pub const SESSION_ID_LEN: usize = 16;
/// Length of an AES-256 session key (seed S508).
pub const SESSION_KEY_LEN: usize = 32;
/// Length of the per-terminal AES-256 key for authenticated UDP.
pub const UDP_KEY_LEN: usize = 32;
/// Length of an AES-GCM authentication tag.
pub const TAG_LEN: usize = 16;
/// Length of a relay allocation token (see `crate::relay::RelayToken`):
/// session ID, role, `not_after` and duration (u32 each), a 16-byte tag.
pub const RELAY_TOKEN_LEN: usize = SESSION_ID_LEN + 1 + 4 + 4 + 16;

/// A relay allocation in an address notification: the relay's address and
/// the token this side binds with. The terminal treats the token as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RelayAllocation {
    /// The relay's UDP address.
    pub addr: core::net::SocketAddr,
    /// The token, as the relay reads it.
    pub token: [u8; RELAY_TOKEN_LEN],
}

/// A device name (seed: "device name", e.g. `TERM1`): 1..=64 bytes of UTF-8
/// without control characters, borrowed from wherever it was read.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name<'a>(&'a str);

impl<'a> Name<'a> {
    /// Checks `s` and wraps it; the only way to make a `Name`.
    pub fn new(s: &'a str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if s.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter);
        }
        Ok(Name(s))
    }

    /// Checks raw bytes (UTF-8 first) and wraps them.
    pub fn from_bytes(b: &'a [u8]) -> Result<Self, NameError> {
        // Length first, so an oversized input is never scanned.
        if b.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        Name::new(core::str::from_utf8(b).map_err(|_| NameError::BadUtf8)?)
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// Bytes this name takes on the wire (length byte included).
    pub(crate) fn wire_len(&self) -> usize {
        1 + self.0.len()
    }

    pub(crate) fn emit<B: Put>(&self, b: &mut B) {
        // Cannot truncate: the constructor bounds the length to 64.
        b.put_u8(self.0.len() as u8);
        b.put_slice(self.0.as_bytes());
    }
}

impl fmt::Debug for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Name<'a> {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        // Names the fuzzer invents are kept when valid; otherwise one of a few
        // fixed ones, so structure-aware targets never stall on bad names.
        const FALLBACK: [&str; 4] = ["TERM1", "TERM3", "kitchen-camera", "téléphone"];
        let s: &'a str = u.arbitrary()?;
        Ok(Name::new(s).unwrap_or_else(|_| Name(FALLBACK[s.len() % FALLBACK.len()])))
    }
}

/// Defines a fixed-size byte-array newtype.
macro_rules! byte_array {
    ($(#[$doc:meta])* $name:ident, $len:expr, redact = $redact:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        pub struct $name(pub [u8; $len]);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if $redact {
                    // Secrets never reach a log through Debug.
                    return f.write_str(concat!(stringify!($name), "(<redacted>)"));
                }
                f.write_str(concat!(stringify!($name), "("))?;
                for byte in &self.0 {
                    write!(f, "{byte:02x}")?;
                }
                f.write_str(")")
            }
        }
    };
}

byte_array!(
    /// A terminal's or server's long-term X25519 public key: its identity.
    PublicKey, PUBLIC_KEY_LEN, redact = false
);
byte_array!(
    /// A session ID, unique per session (seed FIG. 4A, 401).
    SessionId, SESSION_ID_LEN, redact = false
);
byte_array!(
    /// The session key the session server issues (seed S508, FIG. 4A 403).
    SessionKey, SESSION_KEY_LEN, redact = true
);
byte_array!(
    /// The per-terminal key that authenticates keepalives and triggers.
    UdpKey, UDP_KEY_LEN, redact = true
);
byte_array!(
    /// An AES-GCM authentication tag.
    Tag, TAG_LEN, redact = false
);

/// A terminal's device ID (seed: "device ID"): an opaque number the session
/// server assigns at registration and the trigger server keys its table by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct DeviceId(pub u64);

/// Defines a one-byte enumeration with a checked conversion from the wire.
macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident, $field:literal { $($(#[$vdoc:meta])* $variant:ident = $value:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        #[repr(u8)]
        pub enum $name {
            $($(#[$vdoc])* $variant = $value,)+
        }

        impl $name {
            /// The byte that stands for this value on the wire.
            pub fn to_wire(self) -> u8 {
                self as u8
            }

            /// The value a wire byte stands for.
            pub fn from_wire(value: u8) -> Result<Self, DecodeError> {
                match value {
                    $($value => Ok($name::$variant),)+
                    _ => Err(DecodeError::BadEnum { field: $field, value }),
                }
            }
        }
    };
}

wire_enum!(
    /// Who judges a connection request aimed at this terminal.
    DecisionMode, "mode" {
        /// First embodiment: the server fetches the permission list and searches it (S503-S506).
        PermissionList = 1,
        /// Second embodiment: the terminal is told the requester's name and answers (S1201-S1204).
        TerminalJudges = 2,
    }
);

wire_enum!(
    /// Which side of a session an address notification is for (seed FIG. 4A / 4B).
    Role, "role" {
        /// The requester (seed: connecting terminal 3); it starts the peer handshake.
        Connecting = 1,
        /// The target (seed: connected terminal 1).
        Connected = 2,
    }
);

wire_enum!(
    /// A terminal's answer to a permission inquiry (S1203/S1204).
    Verdict, "verdict" {
        /// The requester may not connect.
        Deny = 0,
        /// The requester may connect.
        Permit = 1,
    }
);

wire_enum!(
    /// Why a session ended (seed 814/815, S1601).
    EndReason, "reason" {
        /// The transfer finished (S207, S707).
        Completed = 1,
        /// The permitted duration ran out.
        DurationExpired = 2,
        /// The operator ended it through the trigger server (S1604/S1605).
        Forced = 3,
        /// The peer stopped answering.
        PeerLost = 4,
        /// The local user cancelled.
        Cancelled = 5,
        /// The peer path or handshake failed.
        Failed = 6,
    }
);

wire_enum!(
    /// What an error reply says. `NotPermitted` is the one uniform answer to a
    /// connection request that does not succeed, whatever the reason (S511).
    ErrorCode, "code" {
        /// Unknown, offline, refused, unanswered or rate limited: all the same.
        NotPermitted = 1,
        /// Registration refused (name bound to another key, or key not enrolled).
        RegistrationRefused = 2,
        /// The request was not understood.
        BadRequest = 3,
        /// The server is over capacity; try later.
        Busy = 4,
    }
);

wire_enum!(
    /// What became of a trigger the session server asked for.
    TriggerOutcome, "outcome" {
        /// No live address is known for the device.
        Offline = 0,
        /// The terminal acknowledged the trigger.
        Delivered = 1,
        /// Sent, but no acknowledgement arrived within the retries.
        Unacknowledged = 2,
    }
);

/// Bytes an address takes on the wire.
pub(crate) fn addr_wire_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    }
}

/// Bytes an optional address takes on the wire.
pub(crate) fn opt_addr_wire_len(addr: &Option<SocketAddr>) -> usize {
    addr.as_ref().map_or(1, addr_wire_len)
}

/// Writes an address. IPv6 flow info and scope ID are not carried (a scope
/// means nothing on another host); they decode as zero.
pub(crate) fn emit_addr<B: Put>(addr: &SocketAddr, b: &mut B) {
    match addr {
        SocketAddr::V4(a) => {
            b.put_u8(4);
            b.put_slice(&a.ip().octets());
            b.put_u16(a.port());
        }
        SocketAddr::V6(a) => {
            b.put_u8(6);
            b.put_slice(&a.ip().octets());
            b.put_u16(a.port());
        }
    }
}

/// Writes an optional address (family 0 for none).
pub(crate) fn emit_opt_addr<B: Put>(addr: &Option<SocketAddr>, b: &mut B) {
    match addr {
        Some(a) => emit_addr(a, b),
        None => b.put_u8(0),
    }
}

/// Builds an address from its wire parts.
pub(crate) fn v4(octets: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(octets), port))
}

/// Builds an address from its wire parts.
pub(crate) fn v6(octets: [u8; 16], port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(octets), port, 0, 0))
}
