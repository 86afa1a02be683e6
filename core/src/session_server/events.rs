//! What the session server reports: events (some of them durable facts a
//! driver stores), the session record, the counters and the errors of its
//! operator calls.

use alloc::string::String;
use core::fmt;
use core::time::Duration;

use crate::names::{ImpersonationAttempt, RefusalReason};
use crate::time::Instant;
use crate::wire::{DecisionMode, DeviceId, EndReason, PublicKey, SessionId};

/// Something that happened. Variants marked *durable* are facts the driver
/// stores; replaying them (see [`crate::names::NameRegistry::from_bindings`]
/// and [`super::SessionServer::restore_session`]) rebuilds the server after a
/// restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// *Durable.* A name was bound to a key for the first time (TOFU), when
    /// the registration that bound it was confirmed.
    NameBound {
        /// The name.
        name: String,
        /// The key it now belongs to.
        key: PublicKey,
    },
    /// *Durable.* A one-time enrolment code enrolled `name` for `key`.
    EnrolCodeUsed {
        /// The name.
        name: String,
        /// The key enrolled for it.
        key: PublicKey,
        /// SHA-256 of the code spent.
        hash: [u8; 32],
    },
    /// A registration was confirmed and is now the name's live one (S702, 801/802).
    Registered {
        /// The name.
        name: String,
        /// The terminal's identity key.
        key: PublicKey,
        /// Its device ID (= channel number); the trigger server knows its UDP key.
        device_id: DeviceId,
        /// The device ID the terminal and the trigger server know it by (a
        /// keyed hash of `device_id`, in `RegisterAck` and the keepalives):
        /// what an operator's log puts next to the name.
        udp_device_id: DeviceId,
        /// Who judges requests aimed at it.
        mode: DecisionMode,
    },
    /// A registration was refused; the terminal got `Error{RegistrationRefused}`
    /// (or `Busy` when the server is full).
    RegistrationRefused {
        /// The name it asked for.
        name: String,
        /// The key its handshake proved.
        key: PublicKey,
        /// Why (for the operator only).
        reason: RegistrationRefusal,
    },
    /// A key claimed a name bound to another key: for the operator's log.
    ImpersonationAttempt(ImpersonationAttempt),
    /// A connection request was answered with the uniform deny (S511), at
    /// its deny time. The reason is for the operator only.
    RequestDenied {
        /// The requester's channel name.
        requester: String,
        /// The name it asked for.
        target: String,
        /// The requester's request ID.
        request_id: u32,
        /// Why.
        reason: DenyReason,
    },
    /// *Durable.* A binding's name registered (was confirmed) at `at`:
    /// its last-seen time, from which it expires
    /// ([`super::SessionConfig::binding_ttl`]).
    NameSeen {
        /// The name.
        name: String,
        /// When.
        at: Instant,
    },
    /// *Durable.* A binding expired unused: the name is free again.
    NameUnbound {
        /// The name.
        name: String,
        /// The key it was bound to.
        key: PublicKey,
    },
    /// *Durable.* A session started (S508-S510).
    SessionStarted(SessionStarted),
    /// *Durable.* A session's permitted duration was extended (S1602/S1603).
    SessionExtended(SessionExtended),
    /// *Durable.* The one record of a finished session (S1601/S1606); after
    /// it the session's Started/Extended facts need not be replayed.
    SessionRecord(SessionRecord),
    /// The secure link to the trigger server is (again) established.
    UpstreamEstablished,
    /// An end notification came after its session's record was written
    /// (a forced end recorded before a terminal reported): its counts and
    /// duration join the stored record.
    LateReport(LateReport),
    /// The operator forced a session to end (S1604), now: the end triggers
    /// are on their way. What carries the session's packets on the
    /// operator's side (its relay) stops now, whether or not the terminals
    /// heed their end triggers. Emitted at each `end_session` of a live
    /// session.
    ForcedEndStarted {
        /// The session.
        session_id: SessionId,
    },
    /// A forced end (S1604/S1605) is settled: each party confirmed it (its
    /// terminal acknowledged the end trigger or sent its end notification),
    /// or did not before the session's record. For the operator's `tryst end`.
    ForcedEndSettled(ForcedEnd),
    /// A request became a session: how long its set-up took, from the
    /// request's arrival to the session's start (for the operator's
    /// metrics; follows the session's `SessionStarted`).
    SessionSetUp {
        /// The session.
        session_id: SessionId,
        /// Arrival of the request to the start of the session.
        took: Duration,
    },
}

/// A durable fact: the driver stores it before it sends anything that
/// follows it ([`crate::machine::Output::Store`]). Replaying the stored facts
/// (see [`crate::names::NameRegistry::from_bindings`] and
/// [`super::SessionServer::restore_session`]) rebuilds the server after a
/// restart. Once stored, the driver may hand it to the app as the
/// [`SessionEvent`] of the same name (`SessionEvent::from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionFact {
    /// A name was bound to a key for the first time (TOFU), when the
    /// registration that bound it was confirmed.
    NameBound {
        /// The name.
        name: String,
        /// The key it now belongs to.
        key: PublicKey,
    },
    /// A one-time enrolment code was spent: `name` is enrolled for `key`
    /// (as the operator's enrolment would), and the code with this hash
    /// is used. Stored before the registration is acknowledged.
    EnrolCodeUsed {
        /// The name.
        name: String,
        /// The key enrolled for it.
        key: PublicKey,
        /// SHA-256 of the code spent.
        hash: [u8; 32],
    },
    /// A binding's name registered at `at` (its last-seen time).
    NameSeen {
        /// The name.
        name: String,
        /// When.
        at: Instant,
    },
    /// A binding expired unused; the name is free again.
    NameUnbound {
        /// The name.
        name: String,
        /// The key it was bound to.
        key: PublicKey,
    },
    /// A session started (S508-S510).
    SessionStarted(SessionStarted),
    /// A session's permitted duration was extended (S1602/S1603).
    SessionExtended(SessionExtended),
    /// The one record of a finished session (S1601/S1606); after it the
    /// session's Started/Extended facts need not be replayed.
    SessionRecord(SessionRecord),
    /// A side's end notification that came after the record: it adds its
    /// counts and duration to the stored record (a side already in the
    /// record is never overwritten).
    LateReport(LateReport),
}

impl From<SessionFact> for SessionEvent {
    fn from(fact: SessionFact) -> SessionEvent {
        match fact {
            SessionFact::NameBound { name, key } => SessionEvent::NameBound { name, key },
            SessionFact::EnrolCodeUsed { name, key, hash } => {
                SessionEvent::EnrolCodeUsed { name, key, hash }
            }
            SessionFact::NameSeen { name, at } => SessionEvent::NameSeen { name, at },
            SessionFact::NameUnbound { name, key } => SessionEvent::NameUnbound { name, key },
            SessionFact::SessionStarted(s) => SessionEvent::SessionStarted(s),
            SessionFact::SessionExtended(x) => SessionEvent::SessionExtended(x),
            SessionFact::SessionRecord(r) => SessionEvent::SessionRecord(r),
            SessionFact::LateReport(l) => SessionEvent::LateReport(l),
        }
    }
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegistrationRefusal {
    /// The name registry refused (bound to another key, not enrolled, full, weak key).
    Registry(RefusalReason),
    /// The `Register` names another identity than the handshake proved.
    IdentityMismatch,
    /// The server holds its maximum of channels (the terminal got `Busy`).
    ServerFull,
}

/// Why a connection request was denied (never told to the requester, S511).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// The requester's channel is unconfirmed or its name is not the `requester` field.
    BadRequester,
    /// The requester is over its connection request rate.
    RateLimited,
    /// No such name is bound.
    UnknownTarget,
    /// The name has no live registration.
    TargetOffline,
    /// The requester asked for itself.
    SelfTarget,
    /// The server's tables are full.
    Overloaded,
    /// The trigger server has no live address for the target.
    TriggerOffline,
    /// The target did not acknowledge the trigger.
    TriggerUnacknowledged,
    /// The target's permission list does not hold the requester's name (S505/S511).
    NotInList,
    /// The target answered deny (S1204).
    Refused,
    /// The target answered in the other mode than it registered with.
    WrongAnswerKind,
    /// Nothing decided the request in time.
    NoAnswer,
    /// The trigger server knows no address for one side (S605/S606).
    AddressMissing,
    /// The target's registration was replaced or expired during the decision.
    TargetGone,
}

/// *Durable.* A session started: everything needed to restore it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStarted {
    /// The session ID (S508).
    pub session_id: SessionId,
    /// The requester's (connecting terminal's) name.
    pub requester: String,
    /// The requester's identity key.
    pub requester_key: PublicKey,
    /// The target's (connected terminal's) name.
    pub target: String,
    /// The target's identity key.
    pub target_key: PublicKey,
    /// When the server started it (driver's clock; keep the origin across restarts).
    pub start: Instant,
    /// Permitted duration in seconds, counted from `start`.
    pub duration_secs: u32,
}

/// *Durable.* A session's permitted duration changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExtended {
    /// The session.
    pub session_id: SessionId,
    /// The whole permitted duration now, from the session's start.
    pub duration_secs: u32,
    /// Extensions granted so far, this one included.
    pub extensions: u32,
    /// When it was granted.
    pub at: Instant,
}

/// What one side said in its end notification (814/815).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideReport {
    /// Why it ended on that side.
    pub reason: EndReason,
    /// Payload bytes that side sent.
    pub bytes_sent: u64,
    /// Payload bytes that side received.
    pub bytes_received: u64,
    /// How long the session ran on that side.
    pub duration_ms: u64,
    /// When the server received the notification.
    pub received: Instant,
}

/// Why a session ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionEndReason {
    /// The transfer finished.
    Completed,
    /// The permitted duration ran out.
    DurationExpired,
    /// The operator ended it (S1604/S1605).
    Forced,
    /// A side reported that it lost its peer.
    PeerLost,
    /// A side's user cancelled.
    Cancelled,
    /// The peer path or handshake failed.
    Failed,
    /// No side sent an end notification before the permitted duration plus
    /// [`super::END_GRACE`] ran out: the server closed the record itself.
    ServerTimeout,
}

impl From<EndReason> for SessionEndReason {
    fn from(r: EndReason) -> Self {
        match r {
            EndReason::Completed => SessionEndReason::Completed,
            EndReason::DurationExpired => SessionEndReason::DurationExpired,
            EndReason::Forced => SessionEndReason::Forced,
            EndReason::PeerLost => SessionEndReason::PeerLost,
            EndReason::Cancelled => SessionEndReason::Cancelled,
            EndReason::Failed => SessionEndReason::Failed,
        }
    }
}

/// *Durable.* The accounting record of one session (S1606), written exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session.
    pub session_id: SessionId,
    /// The requester's name.
    pub requester: String,
    /// The target's name.
    pub target: String,
    /// When it started.
    pub start: Instant,
    /// When it ended, as the server knows it: the first end notification's
    /// arrival, else the forced end, else the end of the permitted duration.
    pub end: Instant,
    /// `end - start`.
    pub duration: Duration,
    /// The permitted duration at the end, in seconds.
    pub permitted_secs: u32,
    /// Extensions granted.
    pub extensions: u32,
    /// The requester's end notification, if it came.
    pub requester_side: Option<SideReport>,
    /// The target's end notification, if it came.
    pub target_side: Option<SideReport>,
    /// Why it ended: `Forced` after an operator end, else the first
    /// notification's reason, else `ServerTimeout`.
    pub reason: SessionEndReason,
}

impl SessionRecord {
    /// Bytes from requester to target: the larger of the two sides' counts.
    pub fn bytes_requester_to_target(&self) -> u64 {
        let sent = self.requester_side.map_or(0, |s| s.bytes_sent);
        let received = self.target_side.map_or(0, |s| s.bytes_received);
        sent.max(received)
    }

    /// Bytes from target to requester: the larger of the two sides' counts.
    pub fn bytes_target_to_requester(&self) -> u64 {
        let sent = self.target_side.map_or(0, |s| s.bytes_sent);
        let received = self.requester_side.map_or(0, |s| s.bytes_received);
        sent.max(received)
    }
}

/// A party of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Party {
    /// The requester (the connecting terminal).
    Requester,
    /// The target (the connected terminal).
    Target,
}

/// *Durable.* A side's end notification that came after its session's
/// record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateReport {
    /// The recorded session.
    pub session_id: SessionId,
    /// Which side it is from.
    pub party: Party,
    /// What the side said.
    pub report: SideReport,
}

/// What became of one party's end trigger in a forced end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndConfirmation {
    /// Its terminal acknowledged the end trigger, or sent its end notification.
    Confirmed,
    /// The trigger server had no live address for it.
    Offline,
    /// Its terminal never acknowledged the end trigger, each attempt resent
    /// by the trigger server ([`super::END_TRIGGER_ATTEMPTS`] attempts).
    Unacknowledged,
    /// It had no live registration, so no end trigger could be sent.
    NotRegistered,
    /// No answer came before the session was recorded.
    NoAnswer,
}

/// A settled forced end: how each party answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedEnd {
    /// The session.
    pub session_id: SessionId,
    /// The requester's name.
    pub requester: String,
    /// What became of the requester's end trigger.
    pub requester_end: EndConfirmation,
    /// The target's name.
    pub target: String,
    /// What became of the target's end trigger.
    pub target_end: EndConfirmation,
    /// From the (first) forced end to the settlement.
    pub waited: Duration,
}

/// Things the server ignored or dropped, for the operator's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Transmits dropped because the driver did not poll them in time.
    pub dropped_transmits: u64,
    /// Events dropped because the driver did not poll them in time.
    pub dropped_events: u64,
    /// Messages for a terminal whose channel or connection is gone.
    pub undeliverable: u64,
    /// Messages for the trigger server dropped from the full set-up queue.
    pub upstream_queue_dropped: u64,
    /// Messages on a connection the driver never opened (or that was closed).
    pub unknown_connection: u64,
    /// Bytes that did not decode, or a message type this server does not take there.
    pub ignored_messages: u64,
    /// Sealed records naming no known channel.
    pub unknown_channel: u64,
    /// Sealed records that did not open (forged, replayed, ...).
    pub open_failures: u64,
    /// Handshakes refused before or by the Noise layer.
    pub handshake_failures: u64,
    /// Handshakes refused by the per-source rate limit (answered `RetryLater`).
    pub registrations_rate_limited: u64,
    /// Registrations forgotten unconfirmed (expired or evicted).
    pub registrations_unconfirmed: u64,
    /// Channels removed because their stream closed and they were not heard again.
    pub channels_orphaned: u64,
    /// Name bindings removed because they went unused for the TTL.
    pub bindings_expired: u64,
    /// Connection requests dropped unanswered (requester over
    /// [`super::MAX_OUTSTANDING_PER_CHANNEL`]).
    pub requests_dropped: u64,
    /// Answers (results, lists, verdicts, notifications) that matched nothing pending.
    pub stale_answers: u64,
    /// Connections refused because the server holds its maximum.
    pub connections_refused: u64,
    /// Seal failures (nonces exhausted), and encoding failures that should not happen.
    pub seal_failures: u64,
    /// Registration tickets that did not check out (forged, expired, bad
    /// binder); the attempt fell back to the per-source limit.
    pub tickets_refused: u64,
    /// Ticketed handshakes whose proven key was not the ticket's (connection closed).
    pub ticket_key_mismatches: u64,
    /// Registrations refused by the per-identity limit (answered `RetryLater`).
    pub identity_rate_limited: u64,
    /// One-time enrolment codes spent (a key enrolled by its invite).
    pub enrol_codes_used: u64,
    /// Enrolment codes sent for an unbound name that matched no unspent,
    /// unexpired code for it (spent, expired, wrong, another name's).
    pub enrol_codes_refused: u64,
}

/// A live session as the operator sees it ([`super::SessionServer::live_sessions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    /// The session.
    pub session_id: SessionId,
    /// The requester's name.
    pub requester: String,
    /// The target's name.
    pub target: String,
    /// When it started.
    pub start: Instant,
    /// The permitted duration now, from `start`, in seconds.
    pub duration_secs: u32,
    /// Extensions granted so far.
    pub extensions: u32,
    /// The operator ended it; its record is awaited.
    pub forced: bool,
}

/// `release_name` named no bound name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnknownName;

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no such name is bound")
    }
}

impl core::error::Error for UnknownName {}

/// `end_session` named no live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnknownSession;

impl fmt::Display for UnknownSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no live session with that ID")
    }
}

impl core::error::Error for UnknownSession {}

/// Why a stored fact could not be restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestoreError {
    /// The event is not a `SessionStarted` or `SessionExtended`.
    NotASessionFact,
    /// A `SessionStarted` for a session the machine already holds.
    Duplicate,
    /// A `SessionExtended` for a session not (yet) restored.
    UnknownSession,
    /// The machine holds its maximum of sessions.
    Full,
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestoreError::NotASessionFact => "not a SessionStarted or SessionExtended fact",
            RestoreError::Duplicate => "session already restored",
            RestoreError::UnknownSession => "extension of a session not restored",
            RestoreError::Full => "session table full",
        })
    }
}

impl core::error::Error for RestoreError {}
