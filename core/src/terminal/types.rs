//! The terminal's configuration, bounds, events, errors and counters.

use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use crate::wire::{
    DecisionMode, DeviceId, EndReason, Name, NameError, PublicKey, RelayAllocation, Role,
    SessionId, SessionKey, Verdict, ENROL_CODE_LEN, MAX_NAME_LEN, MAX_PERMISSION_ENTRIES,
};

/// Most names the permission list holds: as many as one `PermissionList` carries.
pub const MAX_PERMISSIONS: usize = MAX_PERMISSION_ENTRIES;
/// Most sessions a terminal runs at once; a notification beyond it is ended
/// at once with [`EndReason::Failed`] (counted in [`TerminalStats::sessions_refused`]).
pub const MAX_SESSIONS: usize = 4;
/// Most connection requests of this terminal awaiting an answer; `connect`
/// beyond it gives [`ConnectError::TooManyPendingRequests`].
pub const MAX_PENDING_REQUESTS: usize = 4;
/// Most permission inquiries waiting for the app's answer; an inquiry beyond
/// it is denied at once (counted in [`TerminalStats::inquiries_overflowed`]).
pub const MAX_PENDING_INQUIRIES: usize = 4;
/// Most transmits waiting for the driver; beyond it the oldest datagram is
/// dropped, a message to the session server only when all are such
/// (counted in [`TerminalStats::transmits_dropped`]).
pub const MAX_TERMINAL_QUEUED_TRANSMITS: usize = 8;
/// Most events waiting for the app; beyond it the oldest is dropped
/// (counted in [`TerminalStats::events_dropped`]).
pub const MAX_TERMINAL_QUEUED_EVENTS: usize = 16;

/// The keepalive interval bounds the terminal shares with the trigger
/// server (one definition, in [`crate::wire`]).
pub use crate::wire::{DEFAULT_KEEPALIVE_INTERVAL, MAX_KEEPALIVE_INTERVAL, MIN_KEEPALIVE_INTERVAL};
/// How long a keepalive waits for its ack before the terminal sends another.
pub const KEEPALIVE_ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a fresh registration waits for the session server's `KeyReady`
/// (the trigger server holds its key) before its first keepalive goes anyway
/// (a server that never sends one).
pub const KEY_READY_TIMEOUT: Duration = Duration::from_secs(3);
/// Keepalives in a row without an ack after which the terminal registers
/// again (a restarted trigger server is noticed within 6 x 2 s). Six, not
/// three: with 5% loss each way three misses in a row happen about once
/// per terminal-hour, six about once per century.
pub const MISSED_ACKS: u8 = 6;
/// First wait before a failed registration handshake is tried again; it
/// doubles with each failure up to [`MAX_REGISTRATION_BACKOFF`].
pub const REGISTRATION_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between registration attempts.
pub const MAX_REGISTRATION_BACKOFF: Duration = Duration::from_secs(60);
/// How long a connection request waits for its answer before it fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the app has to answer a permission inquiry (judge policy
/// [`JudgePolicy::Ask`]) before the terminal denies; below the session
/// server's 5 s decision timeout so the answer still counts.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(4);
/// Default share of the permitted duration, in percent, at which a session
/// whose transfer is still running asks for an extension (S1504).
pub const DEFAULT_EXTENSION_THRESHOLD_PERCENT: u8 = 70;

/// Most session servers a terminal knows ([`TerminalConfig::session_server_key`]
/// and up to this many minus one [`TerminalConfig::failover_server_keys`]).
pub const MAX_SESSION_SERVERS: usize = 8;
/// How long a terminal waits before it tries the next session server of
/// its list after a failed handshake (the whole list failed: the backoff).
pub const FAILOVER_DELAY: Duration = Duration::from_millis(200);

/// A device name owned by the terminal (validated as a wire [`Name`]).
pub type NameBuf = heapless::String<MAX_NAME_LEN>;

/// Copies a valid wire name into an owned one. Cannot fail: a [`Name`] is
/// at most [`MAX_NAME_LEN`] bytes, the capacity of a [`NameBuf`].
pub(crate) fn own(name: Name<'_>) -> NameBuf {
    let mut s = NameBuf::new();
    // A valid Name always fits; on the impossible failure the name is empty.
    let _ = s.push_str(name.as_str());
    s
}

/// Checks `s` as a device name and copies it.
pub(crate) fn name_buf(s: &str) -> Result<NameBuf, NameError> {
    Name::new(s).map(own)
}

/// Who decides, on this terminal, about a requester named in a
/// `PermissionInquiry` (decision mode [`DecisionMode::TerminalJudges`], S1203).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JudgePolicy {
    /// Answer from the terminal's own permission list at once.
    #[default]
    List,
    /// Ask the app ([`TerminalEvent::PermissionAsked`], then
    /// [`crate::terminal::Terminal::answer`]); no answer in [`ASK_TIMEOUT`] is a deny.
    Ask,
}

/// How a terminal is set up. Build it with [`TerminalConfig::new`] (which
/// checks the name), then adjust the public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalConfig {
    pub(super) name: NameBuf,
    /// Who judges requests aimed at this terminal, told to the session server.
    pub mode: DecisionMode,
    /// How this terminal judges a requester when the mode is `TerminalJudges`.
    pub judge: JudgePolicy,
    /// The trigger server's UDP address: keepalives go there, and only
    /// datagrams from it are read as triggers.
    pub trigger_server: SocketAddr,
    /// The session server's static public key (the Noise IK responder):
    /// the first server of the terminal's list.
    pub session_server_key: PublicKey,
    /// The keys of the other session servers of an operator's cluster, in
    /// the order they are tried after the first: a failed handshake (no
    /// stream, no reply, refused, rate-limited) moves to the next server,
    /// and the driver opens the stream to the address of the same index
    /// ([`crate::machine::Machine::upstream_choice`]). Empty by default.
    pub failover_server_keys: heapless::Vec<PublicKey, { MAX_SESSION_SERVERS - 1 }>,
    /// Keepalive interval until the trigger server's first ack (clamped to
    /// [`MIN_KEEPALIVE_INTERVAL`]..=[`MAX_KEEPALIVE_INTERVAL`]).
    pub keepalive_interval: Duration,
    /// Share of the permitted duration, in percent (1..=100), at which an
    /// active session asks for an extension.
    pub extension_threshold_percent: u8,
    /// Seconds more an extension asks for; `None` asks for the session's
    /// original duration again.
    pub extension_secs: Option<u32>,
    /// How long a connection request waits for its answer.
    pub connect_timeout: Duration,
    /// How long the app has to answer a permission inquiry.
    pub ask_timeout: Duration,
    /// The local address of the terminal's UDP socket, if the driver knows
    /// it (its bound address, with the address the host would send to the
    /// trigger server from when bound to an unspecified one). Told to the
    /// session server in the `Register` (encrypted) for the operator's NAT
    /// type guess only; `None` (the default) leaves the guess "unknown".
    pub local_udp: Option<SocketAddr>,
    /// An invite's one-time enrolment code: sent with every registration
    /// (an `EnrolRegister`) so that a closed server enrols this key for the
    /// name on first use; a server that already knows the key ignores it.
    pub enrol_code: Option<[u8; ENROL_CODE_LEN]>,
}

impl TerminalConfig {
    /// A configuration with every default: mode `PermissionList`, judge by
    /// list, 20 s keepalives, extension at 70% for the original duration.
    pub fn new(
        name: &str,
        trigger_server: SocketAddr,
        session_server_key: PublicKey,
    ) -> Result<TerminalConfig, NameError> {
        Ok(TerminalConfig {
            name: name_buf(name)?,
            mode: DecisionMode::PermissionList,
            judge: JudgePolicy::List,
            trigger_server,
            session_server_key,
            failover_server_keys: heapless::Vec::new(),
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            extension_threshold_percent: DEFAULT_EXTENSION_THRESHOLD_PERCENT,
            extension_secs: None,
            connect_timeout: CONNECT_TIMEOUT,
            ask_timeout: ASK_TIMEOUT,
            local_udp: None,
            enrol_code: None,
        })
    }

    /// The device name this terminal registers under.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Why the terminal dropped its registration and started a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReregisterCause {
    /// [`MISSED_ACKS`] keepalives in a row got no ack (the trigger server
    /// restarted, or the path is gone).
    MissedKeepaliveAcks,
    /// The control channel is old enough to be replaced (`needs_rekey`).
    Rekey,
    /// The stream to the session server was lost (it may have restarted).
    UpstreamLost,
    /// The session server seems to have forgotten the channel: a connection
    /// request got no answer at all.
    SessionServerSilent,
}

/// Why a registration handshake failed. The terminal retries after a
/// backoff either way; the cause lets an app say what is wrong (a one-shot
/// `connect` gives up with a message instead of waiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The stream to the session server closed before any reply: nothing
    /// listens at the address, or the server dropped the handshake (it was
    /// made to another key, or it is not a tryst server).
    StreamClosed,
    /// No reply within the handshake timeout.
    NoReply,
    /// The server answered busy, or with something that did not make sense.
    Rejected,
    /// The configured session server key cannot start a handshake (a weak
    /// key, such as all zeros).
    BadServerKey,
    /// The server refused the attempt by a rate limit (of this address or
    /// of this identity) and said when to try again (`RetryLater`, a hint in
    /// clear): the event's `retry_in` is that wait, bounded by
    /// [`crate::wire::MAX_RETRY_AFTER_SECS`] and at least the backoff.
    RateLimited,
}

/// What happened, for the app. Drained with
/// [`crate::terminal::Terminal::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalEvent {
    /// The session server accepted the registration (S702).
    Registered {
        /// The device ID the trigger server knows this terminal by.
        device_id: DeviceId,
    },
    /// The session server refused the name or the key; the terminal stops
    /// (no retry loop) until the app calls `start` again.
    RegistrationRefused,
    /// A registration handshake failed; the next follows in `retry_in`.
    HandshakeFailed {
        /// Handshakes in this series so far, this one included.
        attempt: u32,
        /// Why it failed.
        cause: HandshakeFailure,
        /// When the next one starts.
        retry_in: Duration,
    },
    /// The registration was dropped and a new handshake started.
    Reregistering {
        /// Why.
        cause: ReregisterCause,
    },
    /// The trigger server acknowledged a keepalive: the terminal is reachable
    /// at `observed`. Emitted on the first ack of a registration and when the
    /// observed address changes, not on every ack.
    Online {
        /// The public address the trigger server observes (the NAT's side).
        observed: SocketAddr,
    },
    /// Judge policy `Ask`: may `requester` connect? Answer with
    /// `answer(now, query_id, verdict)` within [`ASK_TIMEOUT`], else deny.
    PermissionAsked {
        /// The inquiry to answer.
        query_id: u32,
        /// Who asks.
        requester: NameBuf,
    },
    /// The terminal answered a permission inquiry (S1204), by list, by the
    /// app, or by timeout.
    PermissionAnswered {
        /// The inquiry.
        query_id: u32,
        /// Who asked.
        requester: NameBuf,
        /// The answer sent.
        verdict: Verdict,
    },
    /// A session is permitted: the peer's address, key and the session key
    /// (S509/S510, S705/S706). The peer channel starts from here.
    SessionReady {
        /// The session.
        session_id: SessionId,
        /// `Connecting` for the requester, `Connected` for the target.
        role: Role,
        /// The `connect` request this answers; 0 for the target.
        request_id: u32,
        /// The peer's name.
        peer_name: NameBuf,
        /// The peer's identity key.
        peer_key: PublicKey,
        /// The peer's address as the trigger server observed it.
        peer_addr: SocketAddr,
        /// The pre-shared key of the peer handshake.
        session_key: SessionKey,
        /// The permitted duration in seconds.
        duration_secs: u32,
        /// The relay to fall back on when punching fails, if the operator runs one.
        relay: Option<RelayAllocation>,
    },
    /// A connection request failed (S511). One event whatever the cause:
    /// denied, unknown, offline, or no answer in time.
    ConnectFailed {
        /// The request.
        request_id: u32,
    },
    /// The terminal asked for an extension (S1505).
    ExtensionRequested {
        /// The session.
        session_id: SessionId,
        /// Seconds more asked for.
        extra_secs: u32,
    },
    /// The session server granted an extension: the new whole duration (S1506/S1507).
    SessionExtended {
        /// The session.
        session_id: SessionId,
        /// The whole permitted duration now, from the session's start.
        duration_secs: u32,
    },
    /// The session server refused the extension; the deadline stands.
    ExtensionRefused {
        /// The session.
        session_id: SessionId,
    },
    /// A session ended and its end notification was sent (S707, S1508).
    SessionEnded {
        /// The session.
        session_id: SessionId,
        /// Why.
        reason: EndReason,
        /// Payload bytes this side sent, as last reported.
        bytes_sent: u64,
        /// Payload bytes this side received, as last reported.
        bytes_received: u64,
        /// How long the session ran on this side.
        duration_ms: u64,
    },
}

/// Why `connect` refused to send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// The target is not a valid device name.
    InvalidName(NameError),
    /// The terminal has no control channel yet (registering, or refused).
    NotRegistered,
    /// [`MAX_PENDING_REQUESTS`] requests await their answer already.
    TooManyPendingRequests,
    /// [`MAX_SESSIONS`] sessions run already.
    TooManySessions,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::InvalidName(e) => write!(f, "invalid target name: {e}"),
            ConnectError::NotRegistered => f.write_str("not registered with the session server"),
            ConnectError::TooManyPendingRequests => f.write_str("too many pending requests"),
            ConnectError::TooManySessions => f.write_str("too many sessions"),
        }
    }
}

impl core::error::Error for ConnectError {}

/// Why a permission list edit was refused; the list is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionError {
    /// Not a valid device name.
    InvalidName(NameError),
    /// The list holds [`MAX_PERMISSIONS`] names already.
    ListFull,
}

impl fmt::Display for PermissionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PermissionError::InvalidName(e) => write!(f, "invalid name: {e}"),
            PermissionError::ListFull => write!(f, "permission list full ({MAX_PERMISSIONS})"),
        }
    }
}

impl core::error::Error for PermissionError {}

/// No running session has this ID (it ended, or never started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownSession;

impl fmt::Display for UnknownSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown session")
    }
}

impl core::error::Error for UnknownSession {}

/// No permission inquiry with this ID awaits an answer (answered, timed
/// out, or never asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownQuery;

impl fmt::Display for UnknownQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown permission inquiry")
    }
}

impl core::error::Error for UnknownQuery {}

/// Counters of what the terminal ignored or dropped, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TerminalStats {
    /// Datagrams from addresses other than the trigger server (the peer
    /// channel will read them; today they are only counted).
    pub peer_datagrams: u64,
    /// Bytes of those datagrams.
    pub peer_bytes: u64,
    /// Datagrams from the trigger server that were ignored: undecodable,
    /// unexpected type, bad tag, replayed counter, stale ack, or no key yet.
    pub ignored_datagrams: u64,
    /// Upstream messages that were ignored: undecodable, not sealed, not
    /// opening, unexpected, or answering nothing pending.
    pub ignored_upstream: u64,
    /// Transmits dropped because the driver did not drain the queue.
    pub transmits_dropped: u64,
    /// Events dropped because the app did not drain the queue.
    pub events_dropped: u64,
    /// Messages for the session server that could not be sent: no channel
    /// at the time (re-registering) or it could not seal.
    pub unsent_upstream: u64,
    /// Keepalives sent.
    pub keepalives_sent: u64,
    /// Registration handshakes started.
    pub handshakes_started: u64,
    /// Session notifications ended at once because [`MAX_SESSIONS`] ran.
    pub sessions_refused: u64,
    /// Permission inquiries denied at once because [`MAX_PENDING_INQUIRIES`] waited.
    pub inquiries_overflowed: u64,
    /// Address notifications for a request that had already failed; the
    /// session is ended at once with reason `Cancelled`.
    pub late_notifications: u64,
}
