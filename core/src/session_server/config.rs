//! The session server's policies and bounds: named defaults and the
//! [`SessionConfig`] that overrides them.

use core::time::Duration;

use crate::ratelimit::{Limit, DEFAULT_TRACKED_KEYS};

/// Delay of the uniform deny: every connection request that does not succeed
/// gets its `Error{NotPermitted}` exactly this long after it arrived, never
/// earlier, so the timing of the answer tells nothing (S511).
pub const DENY_DELAY: Duration = Duration::from_secs(5);
/// How long a request may take to be decided (trigger, permission list or
/// verdict, addresses); a request still undecided then is denied.
pub const DECISION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after the first end notification the server waits for the other
/// side's before it writes the session record (S1601/S1606).
pub const END_GRACE: Duration = Duration::from_secs(10);
/// End triggers sent to a party of a forced end before its terminal counts
/// as not confirming (each one the trigger server resends itself).
pub const END_TRIGGER_ATTEMPTS: u8 = 3;
/// Recorded sessions remembered for their late end notifications.
pub const MAX_RECENT_RECORDS: usize = 1024;
/// How long after its record a session still takes a late end notification.
pub const LATE_REPORT_WINDOW: Duration = Duration::from_secs(600);
/// Permitted duration of a session whose request asks for 0 seconds (S508).
pub const DEFAULT_DURATION: Duration = Duration::from_secs(600);
/// Longest duration one request is granted (S508).
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Longest total a session may be extended to (S1602/S1603).
pub const MAX_TOTAL_DURATION: Duration = Duration::from_secs(7200);
/// How long a registration may stay unconfirmed (no sealed record from the
/// terminal yet) before it is forgotten.
pub const REGISTRATION_CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a channel outlives the stream it was last heard on: unless it
/// is heard on another stream by then, it is removed (and its UDP key
/// revoked), so dead registrations do not pile up.
pub const CHANNEL_ORPHAN_GRACE: Duration = Duration::from_secs(10);
/// The binding TTL a trust-on-first-use deployment should use unless it
/// says otherwise: a name unregistered for half a year is free again.
pub const DEFAULT_BINDING_TTL: Duration = Duration::from_secs(180 * 24 * 3600);
/// How stale a binding's last-seen time may be before a registration
/// stores it again: one write per name and hour at most, however often it
/// registers.
pub const BINDING_SEEN_RESOLUTION: Duration = Duration::from_secs(3600);
/// Most bindings one timer run removes (the next run follows at once):
/// after a long downtime, expiry never stalls the server.
pub const MAX_EXPIRIES_PER_RUN: usize = 256;
/// First wait before the link to the trigger server is tried again after a
/// failed or lost handshake; doubles on each failure.
pub const UPSTREAM_RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two handshakes on the link to the trigger server.
pub const UPSTREAM_RETRY_MAX: Duration = Duration::from_secs(60);
/// Most transmits waiting for the driver; beyond, the oldest is dropped (counted).
pub const MAX_SESSION_QUEUED_TRANSMITS: usize = 4096;
/// Most events waiting for the driver; beyond, the oldest is dropped (counted).
pub const MAX_SESSION_QUEUED_EVENTS: usize = 4096;
/// Most messages for the trigger server held while its link is being set up;
/// beyond, the oldest is dropped (counted).
pub const MAX_UPSTREAM_QUEUE: usize = 1024;
/// Most requests (pending or waiting for their deny) one terminal may have
/// outstanding; a request beyond is dropped unanswered (counted). The count
/// depends only on the requester's own behaviour, so it leaks nothing.
pub const MAX_OUTSTANDING_PER_CHANNEL: u32 = 32;
/// Default bound on terminal channels (live and pending registrations).
pub const DEFAULT_MAX_CHANNELS: usize = 100_000;
/// Default bound on registrations awaiting confirmation; beyond, the oldest
/// pending one is forgotten.
pub const DEFAULT_MAX_PENDING_REGISTRATIONS: usize = 4096;
/// Default bound on connection requests being decided.
pub const DEFAULT_MAX_PENDING_REQUESTS: usize = 4096;
/// Default bound on the requests pending for one target: a burst beyond
/// it pushes out the newest request of whoever holds the most of them.
pub const DEFAULT_MAX_PENDING_PER_TARGET: usize = 64;
/// How long a trigger or a permission list request in flight to a target
/// is shared by the requests that arrive meanwhile; after it, the next
/// request sends a fresh one (a target that never answers is not waited
/// on forever).
pub const COALESCE_WINDOW: Duration = Duration::from_secs(1);
/// Default bound on live sessions.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;
/// Default bound on open terminal streams.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Keys tracked by each of the server's rate limiters (per source, per requester).
pub const RATE_LIMIT_TRACKED_KEYS: usize = DEFAULT_TRACKED_KEYS;

/// Whether extension requests are granted (third embodiment, S1602).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExtensionPolicy {
    /// Grant while the session's total stays within
    /// [`SessionConfig::max_total_duration`].
    #[default]
    UpToTotal,
    /// Refuse every extension.
    Never,
}

/// Bounds on the server's tables and queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionLimits {
    /// Terminal channels, live and pending ([`DEFAULT_MAX_CHANNELS`]).
    pub max_channels: usize,
    /// Registrations awaiting confirmation ([`DEFAULT_MAX_PENDING_REGISTRATIONS`]).
    pub max_pending_registrations: usize,
    /// Requests being decided ([`DEFAULT_MAX_PENDING_REQUESTS`]); when
    /// full, the requester holding the most gives up its newest.
    pub max_pending_requests: usize,
    /// Requests being decided for one target ([`DEFAULT_MAX_PENDING_PER_TARGET`]).
    pub max_pending_per_target: usize,
    /// Live sessions ([`DEFAULT_MAX_SESSIONS`]).
    pub max_sessions: usize,
    /// Open terminal streams ([`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Messages held for the trigger server while its link is down ([`MAX_UPSTREAM_QUEUE`]).
    pub max_upstream_queue: usize,
    /// Transmits held for the driver ([`MAX_SESSION_QUEUED_TRANSMITS`]).
    pub max_queued_transmits: usize,
    /// Events held for the driver ([`MAX_SESSION_QUEUED_EVENTS`]).
    pub max_queued_events: usize,
    /// Bounds on terminal streams: first-message and idle deadlines, the
    /// per-source cap ([`crate::conn_guard::StreamBounds::default`]).
    pub streams: crate::conn_guard::StreamBounds,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_channels: DEFAULT_MAX_CHANNELS,
            max_pending_registrations: DEFAULT_MAX_PENDING_REGISTRATIONS,
            max_pending_requests: DEFAULT_MAX_PENDING_REQUESTS,
            max_pending_per_target: DEFAULT_MAX_PENDING_PER_TARGET,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_upstream_queue: MAX_UPSTREAM_QUEUE,
            max_queued_transmits: MAX_SESSION_QUEUED_TRANSMITS,
            max_queued_events: MAX_SESSION_QUEUED_EVENTS,
            streams: crate::conn_guard::StreamBounds::default(),
        }
    }
}

/// How long a stream answered `RetryLater` stays open before the server
/// closes it, so that the answer leaves first (the terminal closes it at once).
pub const RETRY_LATER_LINGER: Duration = Duration::from_secs(2);

/// The rate limits of the session server: what one source or one proven
/// identity may spend. Every bucket starts full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimits {
    /// Registrations per source address (an IPv4 address or an IPv6 /64),
    /// charged before any public-key work to attempts without a valid
    /// ticket ([`crate::ratelimit::REGISTRATIONS`]).
    pub registrations_per_source: Limit,
    /// Registrations per identity, charged once the handshake proved it (or
    /// a valid ticket names it) ([`super::IDENTITY_REGISTRATIONS`]).
    pub registrations_per_identity: Limit,
    /// Connection requests per registered requester
    /// ([`crate::ratelimit::CONNECTION_REQUESTS`]); over it, the uniform deny.
    pub requests_per_identity: Limit,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            registrations_per_source: crate::ratelimit::REGISTRATIONS,
            registrations_per_identity: super::IDENTITY_REGISTRATIONS,
            requests_per_identity: crate::ratelimit::CONNECTION_REQUESTS,
        }
    }
}

/// The session server's policies. Durations are whole seconds on the wire;
/// sub-second parts are dropped and zero durations are taken as one second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionConfig {
    /// Longest duration one request is granted ([`MAX_DURATION`]).
    pub max_duration: Duration,
    /// Duration granted when a request asks for 0 ([`DEFAULT_DURATION`]).
    pub default_duration: Duration,
    /// Longest total an extended session may reach ([`MAX_TOTAL_DURATION`]).
    pub max_total_duration: Duration,
    /// Whether extensions are granted.
    pub extension_policy: ExtensionPolicy,
    /// When the uniform deny is sent after a request arrived ([`DENY_DELAY`]).
    pub deny_delay: Duration,
    /// How long a request may take to be decided ([`DECISION_TIMEOUT`]); taken
    /// as at most `deny_delay`, so that every failure is answered at the same time.
    pub decision_timeout: Duration,
    /// Wait for the second end notification ([`END_GRACE`]).
    pub end_grace: Duration,
    /// Bounds on tables and queues.
    pub limits: SessionLimits,
    /// What one source or one identity may spend.
    pub rates: RateLimits,
    /// How long a name binding may go without a confirmed registration
    /// before it is removed (the name is free again); `None`: never. Only
    /// bindings the server saw registered at least once expire.
    pub binding_ttl: Option<Duration>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_duration: MAX_DURATION,
            default_duration: DEFAULT_DURATION,
            max_total_duration: MAX_TOTAL_DURATION,
            extension_policy: ExtensionPolicy::default(),
            deny_delay: DENY_DELAY,
            decision_timeout: DECISION_TIMEOUT,
            end_grace: END_GRACE,
            limits: SessionLimits::default(),
            rates: RateLimits::default(),
            binding_ttl: None,
        }
    }
}

/// Whole seconds of `d` as a wire duration, at least 1.
pub(super) fn whole_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1)
}

impl SessionConfig {
    /// The duration a request asking for `requested` seconds is granted (S508):
    /// `min(requested or default, max_duration)`.
    pub fn granted_duration_secs(&self, requested: u32) -> u32 {
        let asked = if requested == 0 {
            whole_secs(self.default_duration)
        } else {
            requested
        };
        asked.min(whole_secs(self.max_duration))
    }

    /// The decision deadline after `deny_delay` is taken into account.
    pub(super) fn effective_decision_timeout(&self) -> Duration {
        self.decision_timeout.min(self.deny_delay)
    }
}
