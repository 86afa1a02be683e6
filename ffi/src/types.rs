//! The C structs of the API: addresses, the configuration, the file
//! callbacks, outputs and events. Plain data, `#[repr(C)]`.

use core::ffi::{c_char, c_void};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tryst_core::peer::endpoint::EndpointEvent;
use tryst_core::peer::session::PeerEvent;
use tryst_core::terminal::{HandshakeFailure, ReregisterCause, TerminalEvent};

/// Address family value of an IPv4 [`TrystAddr`].
pub const TRYST_AF_INET: u8 = 4;
/// Address family value of an IPv6 [`TrystAddr`].
pub const TRYST_AF_INET6: u8 = 6;

/// End reason: the transfer finished.
pub const TRYST_REASON_COMPLETED: u8 = 1;
/// End reason: the permitted duration ran out.
pub const TRYST_REASON_DURATION_EXPIRED: u8 = 2;
/// End reason: the operator ended it.
pub const TRYST_REASON_FORCED: u8 = 3;
/// End reason: the peer stopped answering.
pub const TRYST_REASON_PEER_LOST: u8 = 4;
/// End reason: the local user cancelled.
pub const TRYST_REASON_CANCELLED: u8 = 5;
/// End reason: the peer path, handshake or transfer failed.
pub const TRYST_REASON_FAILED: u8 = 6;

/// Role: this side asked for the session (it starts the handshake).
pub const TRYST_ROLE_CONNECTING: u8 = 1;
/// Role: this side was asked for (it receives files).
pub const TRYST_ROLE_CONNECTED: u8 = 2;

/// An IP address and port.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrystAddr {
    /// [`TRYST_AF_INET`] or [`TRYST_AF_INET6`].
    pub family: u8,
    /// The address: the first 4 bytes for IPv4, all 16 for IPv6 (network order).
    pub ip: [u8; 16],
    /// The port (host order).
    pub port: u16,
}

impl TrystAddr {
    /// The Rust address; `None` for an unknown family.
    pub fn to_socket_addr(&self) -> Option<SocketAddr> {
        let ip = match self.family {
            TRYST_AF_INET => IpAddr::V4(Ipv4Addr::new(
                self.ip[0], self.ip[1], self.ip[2], self.ip[3],
            )),
            TRYST_AF_INET6 => IpAddr::V6(Ipv6Addr::from(self.ip)),
            _ => return None,
        };
        Some(SocketAddr::new(ip, self.port))
    }

    /// The C address of a Rust one.
    pub fn from_socket_addr(addr: SocketAddr) -> TrystAddr {
        let mut out = TrystAddr {
            port: addr.port(),
            ..TrystAddr::default()
        };
        match addr.ip() {
            IpAddr::V4(v4) => {
                out.family = TRYST_AF_INET;
                out.ip[..4].copy_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.family = TRYST_AF_INET6;
                out.ip = v6.octets();
            }
        }
        out
    }
}

/// A session ID (16 bytes), passed by value.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrystSessionId {
    /// Its bytes.
    pub bytes: [u8; 16],
}

/// How a terminal starts.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TrystConfig {
    /// Its name (not NUL-terminated), `name_len` bytes.
    pub name: *const c_char,
    /// Bytes of `name` (at most 64).
    pub name_len: usize,
    /// Its X25519 secret key (keep it: the name is bound to its public key).
    pub secret_key: [u8; 32],
    /// The session server's public key.
    pub server_key: [u8; 32],
    /// The trigger server's UDP address (keepalives go there).
    pub trigger_server: TrystAddr,
    /// 32 random bytes for the terminal's generator (ephemeral keys,
    /// nonces): from the platform's true random source, fresh every init.
    pub seed: [u8; 32],
    /// Seconds between keepalives; 0 for the default.
    pub keepalive_secs: u32,
    /// Nonzero: files sent by permitted peers are received through the
    /// [`TrystFileIo`] callbacks (all four needed); zero refuses them.
    pub accept_files: u8,
}

/// (May be null.) Reads `len` bytes at `offset` of a file into `buf`; how many (fewer
/// only at an error: the transfer then fails). `incoming` 0 is the file
/// this terminal sends on `session`, 1 the one it receives (read back to
/// hash bytes that arrived out of order).
pub type TrystReadFn = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        session: TrystSessionId,
        incoming: u8,
        offset: u64,
        buf: *mut u8,
        len: usize,
    ) -> usize,
>;

/// A peer announced a file (`name`, NUL-terminated, a plain file name the
/// core checked; `size` bytes): prepare to write it (a temporary name).
/// Nonzero refuses it (the session closes, failed).
pub type TrystBeginFn = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        session: TrystSessionId,
        name: *const c_char,
        size: u64,
    ) -> i32,
>;

/// Writes `len` received file bytes at `offset` (any order; never twice
/// below what was written in order). Nonzero fails the transfer.
pub type TrystWriteFn = Option<
    unsafe extern "C" fn(
        user: *mut c_void,
        session: TrystSessionId,
        offset: u64,
        data: *const u8,
        len: usize,
    ) -> i32,
>;

/// The received file is done: `keep` 1, its SHA-256 matched the sender's,
/// store it under its name (nonzero return: it could not be, the transfer
/// fails); `keep` 0, it failed or was cut: delete what was written.
pub type TrystEndFn =
    Option<unsafe extern "C" fn(user: *mut c_void, session: TrystSessionId, keep: u8) -> i32>;

/// The caller's file storage. Callbacks are called from inside the
/// `tryst_terminal_*` call that needs them, on its thread; they must not
/// call the terminal.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TrystFileIo {
    /// Given to every callback.
    pub user: *mut c_void,
    /// File bytes of a file sent or received.
    pub read: TrystReadFn,
    /// An incoming file was announced.
    pub begin: TrystBeginFn,
    /// Incoming file bytes.
    pub write: TrystWriteFn,
    /// An incoming file is over.
    pub end: TrystEndFn,
}

/// What [`crate::tryst_terminal_poll`] gave.
#[repr(u32)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TrystOutputKind {
    /// Nothing more now: call `tryst_terminal_handle_timeout` at
    /// `timeout_us` (if `has_timeout`), or when input arrives.
    #[default]
    Timeout = 0,
    /// Send the first `len` bytes of the buffer as a UDP datagram to `addr`.
    Udp = 1,
    /// Send the first `len` bytes on the TCP stream to the session server
    /// (connect it first if it is not up).
    Tcp = 2,
    /// `event` happened.
    Event = 3,
}

/// What happened (the `kind` of a [`TrystEvent`]; which fields are set is
/// said for each).
#[repr(u32)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TrystEventKind {
    /// No event.
    #[default]
    None = 0,
    /// Registered: `value` is the device ID.
    Registered = 1,
    /// The session server refused this name or key.
    RegistrationRefused = 2,
    /// Registering again: `code` 1 missed keepalive acks, 2 rekey,
    /// 3 stream lost, 4 server silent.
    Reregistering = 3,
    /// A keepalive was acknowledged: reachable, seen at `addr`.
    Online = 4,
    /// A requester asks to connect (`id` the query, `name`): answer it.
    PermissionAsked = 5,
    /// An inquiry was answered (`id`, `name`, `code` the verdict).
    PermissionAnswered = 6,
    /// A session is ready: `session`, `code` the role, `id` the request,
    /// `name` the peer, `key` its public key, `addr` its address, `value`
    /// its duration in seconds.
    SessionReady = 7,
    /// The request `id` was not permitted.
    ConnectFailed = 8,
    /// An extension of `value` seconds was asked for `session`.
    ExtensionRequested = 9,
    /// `session` now lasts `value` seconds.
    SessionExtended = 10,
    /// The extension of `session` was refused.
    ExtensionRefused = 11,
    /// `session` ended: `code` the reason, `value` bytes sent, `value2`
    /// bytes received, `value3` its duration in milliseconds.
    SessionEnded = 12,
    /// The direct path of `session` is up (peer at `addr`).
    PeerConnected = 13,
    /// The peer of `session` moved to `addr`.
    PeerPathChanged = 14,
    /// Everything sent on `session` was acknowledged (`value` bytes).
    PeerStreamAcked = 15,
    /// Everything the peer sent arrived (`value` bytes).
    PeerStreamReceived = 16,
    /// `value` stream bytes arrived in order.
    PeerStreamProgress = 17,
    /// The path MTU of `session` is `value`.
    PeerMtuChanged = 18,
    /// The direct path of `session` closed: `code` the reason, `flag` 1 if
    /// the peer closed it, `value` bytes sent, `value2` received.
    PeerEnded = 19,
    /// A file is coming on `session`: `name`, `value` its size.
    FileStarted = 20,
    /// The file on `session` was stored: `name`, `value` its size, `key`
    /// its SHA-256 (which matched the sender's).
    FileReceived = 21,
    /// The file on `session` was not kept: `code` why (1 bad header, 2
    /// past end, 3 too scattered, 4 too many early bytes, 5 checksum
    /// mismatch, 6 hash, 7 storage, 8 cut, 9 file bytes before the resume offer).
    FileFailed = 22,
    /// Ping `id` on `session` was answered in `value` microseconds (the
    /// round trip, the peer's ack delay subtracted). The C API starts no
    /// pings yet; the kind is reserved for the core's event.
    PeerPong = 23,
    /// Ping `id` on `session` got no answer in time.
    PeerPingLost = 24,
    /// A registration handshake failed (`id` the attempt, `value` the
    /// milliseconds until the next): `code` 1 the stream closed before a
    /// reply (nothing listens, or a wrong server key), 2 no reply in time,
    /// 3 refused or garbled, 4 the server key cannot start one, 5 rate
    /// limited by the server (`value` is the wait it asked for).
    HandshakeFailed = 25,
}

/// Bytes of [`TrystEvent::name`] (a file name of 255 bytes and its NUL).
pub const TRYST_EVENT_NAME_LEN: usize = 256;

/// One event. Unused fields are zero.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TrystEvent {
    /// What happened.
    pub kind: TrystEventKind,
    /// The session it is about.
    pub session: TrystSessionId,
    /// A request or inquiry ID.
    pub id: u32,
    /// A reason, role, verdict or cause.
    pub code: u8,
    /// A yes/no detail.
    pub flag: u8,
    /// A number (see the kind).
    pub value: u64,
    /// A second number.
    pub value2: u64,
    /// A third number.
    pub value3: u64,
    /// An address.
    pub addr: TrystAddr,
    /// A public key or digest.
    pub key: [u8; 32],
    /// A name, NUL-terminated.
    pub name: [c_char; TRYST_EVENT_NAME_LEN],
}

impl Default for TrystEvent {
    fn default() -> Self {
        TrystEvent {
            kind: TrystEventKind::None,
            session: TrystSessionId::default(),
            id: 0,
            code: 0,
            flag: 0,
            value: 0,
            value2: 0,
            value3: 0,
            addr: TrystAddr::default(),
            key: [0; 32],
            name: [0; TRYST_EVENT_NAME_LEN],
        }
    }
}

impl TrystEvent {
    /// An event of `kind` about `session`.
    pub(crate) fn about(kind: TrystEventKind, session: [u8; 16]) -> TrystEvent {
        TrystEvent {
            kind,
            session: TrystSessionId { bytes: session },
            ..TrystEvent::default()
        }
    }

    /// Copies `name` (cut to fit) and its NUL.
    pub(crate) fn set_name(&mut self, name: &str) {
        let n = name.len().min(TRYST_EVENT_NAME_LEN - 1);
        for (dst, src) in self.name.iter_mut().zip(&name.as_bytes()[..n]) {
            *dst = *src as c_char;
        }
        self.name[n] = 0;
    }

    /// The C event of a core event (the session key stays inside).
    pub(crate) fn from_endpoint(event: &EndpointEvent) -> TrystEvent {
        use TrystEventKind as K;
        let mut e = TrystEvent::default();
        match event {
            EndpointEvent::Terminal(t) => match t {
                TerminalEvent::Registered { device_id } => {
                    e.kind = K::Registered;
                    e.value = device_id.0;
                }
                TerminalEvent::RegistrationRefused => e.kind = K::RegistrationRefused,
                TerminalEvent::Reregistering { cause } => {
                    e.kind = K::Reregistering;
                    e.code = match cause {
                        ReregisterCause::MissedKeepaliveAcks => 1,
                        ReregisterCause::Rekey => 2,
                        ReregisterCause::UpstreamLost => 3,
                        ReregisterCause::SessionServerSilent => 4,
                    };
                }
                TerminalEvent::HandshakeFailed {
                    attempt,
                    cause,
                    retry_in,
                } => {
                    e.kind = K::HandshakeFailed;
                    e.id = *attempt;
                    e.code = match cause {
                        HandshakeFailure::StreamClosed => 1,
                        HandshakeFailure::NoReply => 2,
                        HandshakeFailure::Rejected => 3,
                        HandshakeFailure::BadServerKey => 4,
                        HandshakeFailure::RateLimited => 5,
                    };
                    e.value = u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX);
                }
                TerminalEvent::Online { observed } => {
                    e.kind = K::Online;
                    e.addr = TrystAddr::from_socket_addr(*observed);
                }
                TerminalEvent::PermissionAsked {
                    query_id,
                    requester,
                } => {
                    e.kind = K::PermissionAsked;
                    e.id = *query_id;
                    e.set_name(requester);
                }
                TerminalEvent::PermissionAnswered {
                    query_id,
                    requester,
                    verdict,
                } => {
                    e.kind = K::PermissionAnswered;
                    e.id = *query_id;
                    e.code = verdict.to_wire();
                    e.set_name(requester);
                }
                TerminalEvent::SessionReady {
                    session_id,
                    role,
                    request_id,
                    peer_name,
                    peer_key,
                    peer_addr,
                    duration_secs,
                    ..
                } => {
                    e = TrystEvent::about(K::SessionReady, session_id.0);
                    e.code = role.to_wire();
                    e.id = *request_id;
                    e.set_name(peer_name);
                    e.key = peer_key.0;
                    e.addr = TrystAddr::from_socket_addr(*peer_addr);
                    e.value = u64::from(*duration_secs);
                }
                TerminalEvent::ConnectFailed { request_id } => {
                    e.kind = K::ConnectFailed;
                    e.id = *request_id;
                }
                TerminalEvent::ExtensionRequested {
                    session_id,
                    extra_secs,
                } => {
                    e = TrystEvent::about(K::ExtensionRequested, session_id.0);
                    e.value = u64::from(*extra_secs);
                }
                TerminalEvent::SessionExtended {
                    session_id,
                    duration_secs,
                } => {
                    e = TrystEvent::about(K::SessionExtended, session_id.0);
                    e.value = u64::from(*duration_secs);
                }
                TerminalEvent::ExtensionRefused { session_id } => {
                    e = TrystEvent::about(K::ExtensionRefused, session_id.0);
                }
                TerminalEvent::SessionEnded {
                    session_id,
                    reason,
                    bytes_sent,
                    bytes_received,
                    duration_ms,
                } => {
                    e = TrystEvent::about(K::SessionEnded, session_id.0);
                    e.code = reason.to_wire();
                    e.value = *bytes_sent;
                    e.value2 = *bytes_received;
                    e.value3 = *duration_ms;
                }
            },
            EndpointEvent::Peer { session_id, event } => {
                e = TrystEvent::about(K::None, session_id.0);
                match event {
                    PeerEvent::Connected { peer_addr, .. } => {
                        e.kind = K::PeerConnected;
                        e.addr = TrystAddr::from_socket_addr(*peer_addr);
                    }
                    // The firmware terminal opens no relay stream
                    // (its transmits to it are dropped): nothing to say.
                    PeerEvent::RelayOverTcp { relay } => {
                        e.addr = TrystAddr::from_socket_addr(*relay);
                    }
                    PeerEvent::PathChanged { peer_addr, .. } => {
                        e.kind = K::PeerPathChanged;
                        e.addr = TrystAddr::from_socket_addr(*peer_addr);
                    }
                    PeerEvent::StreamAcked { len } => {
                        e.kind = K::PeerStreamAcked;
                        e.value = *len;
                    }
                    PeerEvent::StreamReceived { len } => {
                        e.kind = K::PeerStreamReceived;
                        e.value = *len;
                    }
                    PeerEvent::StreamProgress { contiguous } => {
                        e.kind = K::PeerStreamProgress;
                        e.value = *contiguous;
                    }
                    PeerEvent::MtuChanged { mtu } => {
                        e.kind = K::PeerMtuChanged;
                        e.value = *mtu as u64;
                    }
                    PeerEvent::Pong { id, rtt } => {
                        e.kind = K::PeerPong;
                        e.id = *id;
                        e.value = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
                    }
                    PeerEvent::PingLost { id } => {
                        e.kind = K::PeerPingLost;
                        e.id = *id;
                    }
                    PeerEvent::Ended {
                        reason,
                        by_peer,
                        bytes_sent,
                        bytes_received,
                    } => {
                        e.kind = K::PeerEnded;
                        e.code = reason.to_wire();
                        e.flag = u8::from(*by_peer);
                        e.value = *bytes_sent;
                        e.value2 = *bytes_received;
                    }
                }
            }
        }
        e
    }
}

/// One output of [`crate::tryst_terminal_poll`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TrystOutput {
    /// What it is.
    pub kind: TrystOutputKind,
    /// Bytes of the buffer to send (`Udp`, `Tcp`).
    pub len: usize,
    /// Where a datagram goes (`Udp`).
    pub addr: TrystAddr,
    /// Nonzero: `timeout_us` is set (`Timeout`).
    pub has_timeout: u8,
    /// When to call `tryst_terminal_handle_timeout` (`Timeout`).
    pub timeout_us: u64,
    /// The event (`Event`).
    pub event: TrystEvent,
}
