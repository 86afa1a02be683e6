//! The Prometheus metrics of the servers and of the terminal daemon
//! (`--metrics ADDR`), with the `prometheus-client` crate: one registry a
//! process, its families named `tryst_*` in base units (`_seconds`), the
//! counters ending in `_total`.
//!
//! Where the values come from: the events the roles already hand out
//! (registrations, set-ups, ends, extensions), counted where the server
//! logs them (one atomic add per event, never per packet); the core's own
//! counters and tables (failed handshakes, rate-limit hits, keepalives,
//! live terminals and sessions), read at scrape time from a snapshot the
//! roles answer in their loops ([`ServerMetrics::observe_session`],
//! [`ServerMetrics::observe_trigger`]); the journal's write times.

use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tryst_core::relay::server::RelayEvent;
use tryst_core::session_server::{DenyReason, RegistrationRefusal, SessionEvent};
use tryst_core::terminal::TerminalEvent;
use tryst_core::trigger_server::NatGuess;
use tryst_core::wire::EndReason;

use crate::role::session_server::SessionSnapshot;
use crate::role::trigger_server::TriggerSnapshot;
use crate::store::reason_name;

/// The label set of every family: static names and values.
pub type Labels = Vec<(&'static str, &'static str)>;

/// The `nat` label of `tryst_terminals`: a guess as a label value.
pub fn nat_name(guess: NatGuess) -> &'static str {
    match guess {
        NatGuess::Unknown => "unknown",
        NatGuess::Public => "public",
        NatGuess::PortPreserved => "port_preserved",
        NatGuess::PortRewritten => "port_rewritten",
    }
}

/// The path every session starts on (punching): the `path` label of the
/// session counters at a session's start.
pub const PATH_DIRECT: &str = "direct";
/// The `path` label of a session the relay took on (its first bind made
/// an allocation): it fell back from punching to the relay.
pub const PATH_RELAYED: &str = "relayed";

/// The metrics of a server process (any of `server`, `session-server`,
/// `trigger-server`; a role that does not run leaves its families at 0).
#[derive(Debug)]
pub struct ServerMetrics {
    registry: Registry,
    registrations: Family<Labels, Counter>,
    setups: Family<Labels, Counter>,
    setup_seconds: Histogram,
    sessions_started: Family<Labels, Counter>,
    sessions_ended: Family<Labels, Counter>,
    extensions: Counter,
    impersonations: Counter,
    store_write_seconds: Histogram,
    terminals_live: Gauge,
    sessions_live: Gauge,
    channels: Gauge,
    pending_requests: Gauge,
    trigger_devices: Gauge,
    terminals_by_nat: Family<Labels, Gauge>,
    keepalives: Counter,
    keepalives_refused: Family<Labels, Counter>,
    rate_limited: Family<Labels, Counter>,
    handshake_failures: Family<Labels, Counter>,
    triggers_sent: Counter,
}

/// Latency buckets from 1 ms to about 16 s.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Store-write buckets from 100 µs to about 1.6 s.
fn store_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

/// Sets a counter to `value`, a total the core keeps (scrape time only).
fn set_total(counter: &Counter, value: u64) {
    counter.inner().store(value, Ordering::Relaxed);
}

/// Sets a gauge to a count.
fn set_count(gauge: &Gauge, value: usize) {
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics::new()
    }
}

impl ServerMetrics {
    /// Every family registered, all at zero.
    pub fn new() -> ServerMetrics {
        let mut registry = Registry::default();
        let m = ServerMetrics {
            registrations: Family::default(),
            setups: Family::default(),
            setup_seconds: latency_buckets(),
            sessions_started: Family::default(),
            sessions_ended: Family::default(),
            extensions: Counter::default(),
            impersonations: Counter::default(),
            store_write_seconds: store_buckets(),
            terminals_live: Gauge::default(),
            sessions_live: Gauge::default(),
            channels: Gauge::default(),
            pending_requests: Gauge::default(),
            trigger_devices: Gauge::default(),
            terminals_by_nat: Family::default(),
            keepalives: Counter::default(),
            keepalives_refused: Family::default(),
            rate_limited: Family::default(),
            handshake_failures: Family::default(),
            triggers_sent: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "tryst_registrations",
            "Terminal registrations by outcome (accepted, refused_registry, identity_mismatch, server_full)",
            m.registrations.clone(),
        );
        registry.register(
            "tryst_setups",
            "Connection requests by outcome: started, or the deny reason (for the operator only)",
            m.setups.clone(),
        );
        registry.register_with_unit(
            "tryst_setup_duration",
            "From a request's arrival to its session's start",
            Unit::Seconds,
            m.setup_seconds.clone(),
        );
        registry.register(
            "tryst_sessions_started",
            "Sessions started, by path (direct: every session, as each starts punching; relayed: those the relay took on)",
            m.sessions_started.clone(),
        );
        registry.register(
            "tryst_sessions_ended",
            "Sessions recorded, by end reason (forced: the operator ended it)",
            m.sessions_ended.clone(),
        );
        registry.register(
            "tryst_session_extensions",
            "Session extensions granted",
            m.extensions.clone(),
        );
        registry.register(
            "tryst_impersonation_attempts",
            "Registrations claiming a name bound to another key",
            m.impersonations.clone(),
        );
        registry.register_with_unit(
            "tryst_store_write_duration",
            "One durable batch written and committed to the store",
            Unit::Seconds,
            m.store_write_seconds.clone(),
        );
        registry.register(
            "tryst_terminals_live",
            "Names with a live (confirmed) registration",
            m.terminals_live.clone(),
        );
        registry.register(
            "tryst_sessions_live",
            "Sessions started and not yet recorded",
            m.sessions_live.clone(),
        );
        registry.register(
            "tryst_channels",
            "Terminal channels held, live and pending",
            m.channels.clone(),
        );
        registry.register(
            "tryst_pending_requests",
            "Connection requests being decided",
            m.pending_requests.clone(),
        );
        registry.register(
            "tryst_trigger_devices",
            "Devices whose UDP key the trigger server holds",
            m.trigger_devices.clone(),
        );
        registry.register(
            "tryst_terminals",
            "Devices with a live observed address, by the trigger server's NAT type guess (unknown, public, port_preserved, port_rewritten)",
            m.terminals_by_nat.clone(),
        );
        registry.register(
            "tryst_keepalives",
            "Keepalives accepted and acknowledged by the trigger server",
            m.keepalives.clone(),
        );
        registry.register(
            "tryst_keepalives_refused",
            "Keepalives dropped, by reason (forged, replayed, unknown_device)",
            m.keepalives_refused.clone(),
        );
        registry.register(
            "tryst_rate_limited",
            "Rate-limit hits, by what was limited (registration, identity, request, keepalive, link_handshake)",
            m.rate_limited.clone(),
        );
        registry.register(
            "tryst_handshake_failures",
            "Noise handshakes refused, by role (session, trigger)",
            m.handshake_failures.clone(),
        );
        registry.register(
            "tryst_triggers_sent",
            "Trigger and end trigger datagrams sent (first sends and resends)",
            m.triggers_sent.clone(),
        );
        ServerMetrics { registry, ..m }
    }

    /// Counts one relay event (a session the relay took on).
    pub fn observe_relay_event(&self, event: &RelayEvent) {
        if let RelayEvent::Allocated { .. } = event {
            self.count(&self.sessions_started, "path", PATH_RELAYED);
        }
    }

    /// Counts what a session server event says.
    pub fn observe_session_event(&self, event: &SessionEvent) {
        match event {
            SessionEvent::Registered { .. } => {
                self.count(&self.registrations, "outcome", "accepted")
            }
            SessionEvent::RegistrationRefused { reason, .. } => {
                let outcome = match reason {
                    RegistrationRefusal::Registry(_) => "refused_registry",
                    RegistrationRefusal::IdentityMismatch => "identity_mismatch",
                    RegistrationRefusal::ServerFull => "server_full",
                };
                self.count(&self.registrations, "outcome", outcome);
            }
            SessionEvent::ImpersonationAttempt(_) => {
                self.impersonations.inc();
            }
            SessionEvent::RequestDenied { reason, .. } => {
                self.count(&self.setups, "outcome", deny_name(*reason));
            }
            SessionEvent::SessionStarted(_) => {
                self.count(&self.setups, "outcome", "started");
                self.count(&self.sessions_started, "path", PATH_DIRECT);
            }
            SessionEvent::SessionSetUp { took, .. } => {
                self.setup_seconds.observe(took.as_secs_f64());
            }
            SessionEvent::SessionExtended(_) => {
                self.extensions.inc();
            }
            SessionEvent::SessionRecord(r) => {
                self.count(&self.sessions_ended, "reason", reason_name(r.reason));
            }
            SessionEvent::NameBound { .. }
            | SessionEvent::EnrolCodeUsed { .. }
            | SessionEvent::NameSeen { .. }
            | SessionEvent::NameUnbound { .. }
            | SessionEvent::LateReport(_)
            | SessionEvent::ForcedEndSettled(_)
            | SessionEvent::ForcedEndStarted { .. }
            | SessionEvent::UpstreamEstablished => {}
        }
    }

    fn count(&self, family: &Family<Labels, Counter>, key: &'static str, value: &'static str) {
        family.get_or_create(&vec![(key, value)]).inc();
    }

    fn set(
        &self,
        family: &Family<Labels, Counter>,
        key: &'static str,
        value: &'static str,
        n: u64,
    ) {
        set_total(&family.get_or_create(&vec![(key, value)]), n);
    }

    /// One durable batch took `took` to write.
    pub fn observe_store_write(&self, took: Duration) {
        self.store_write_seconds.observe(took.as_secs_f64());
    }

    /// The session server's tables and counters, at scrape time.
    pub fn observe_session(&self, s: &SessionSnapshot) {
        set_count(&self.terminals_live, s.terminals.len());
        set_count(&self.sessions_live, s.sessions.len());
        set_count(&self.channels, s.channels);
        set_count(&self.pending_requests, s.pending_requests);
        let c = &s.counters;
        self.set(
            &self.rate_limited,
            "what",
            "registration",
            c.registrations_rate_limited,
        );
        self.set(
            &self.rate_limited,
            "what",
            "identity",
            c.identity_rate_limited,
        );
        self.set(
            &self.handshake_failures,
            "role",
            "session",
            c.handshake_failures,
        );
    }

    /// The trigger server's table and counters, at scrape time.
    pub fn observe_trigger(&self, t: &TriggerSnapshot) {
        set_count(&self.trigger_devices, t.devices.len());
        for guess in NatGuess::ALL {
            let live = t
                .devices
                .iter()
                .filter(|d| d.addr.is_some() && d.nat == guess)
                .count();
            set_count(
                &self
                    .terminals_by_nat
                    .get_or_create(&vec![("nat", nat_name(guess))]),
                live,
            );
        }
        let s = &t.stats;
        set_total(&self.keepalives, s.keepalives_accepted);
        set_total(&self.triggers_sent, s.triggers_sent);
        self.set(
            &self.keepalives_refused,
            "reason",
            "forged",
            s.keepalives_forged,
        );
        self.set(
            &self.keepalives_refused,
            "reason",
            "replayed",
            s.keepalives_replayed,
        );
        self.set(
            &self.keepalives_refused,
            "reason",
            "unknown_device",
            s.unknown_device,
        );
        self.set(
            &self.rate_limited,
            "what",
            "keepalive",
            s.keepalives_rate_limited,
        );
        self.set(
            &self.rate_limited,
            "what",
            "link_handshake",
            s.handshakes_rate_limited,
        );
        self.set(
            &self.handshake_failures,
            "role",
            "trigger",
            s.handshakes_failed,
        );
    }

    /// A request denied for its rate is a rate-limit hit too: read from
    /// the set-up outcomes, so it is counted once.
    fn sync_request_limit(&self) {
        let n = self
            .setups
            .get_or_create(&vec![("outcome", deny_name(DenyReason::RateLimited))])
            .get();
        self.set(&self.rate_limited, "what", "request", n);
    }

    /// The exposition text (`text/plain; version=0.0.4` with OpenMetrics names).
    pub fn encode(&self) -> String {
        self.sync_request_limit();
        encode_registry(&self.registry)
    }
}

/// The registry as exposition text.
fn encode_registry(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, registry);
    out
}

/// The content type of [`ServerMetrics::encode`] and [`TerminalMetrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A deny reason as a label value.
pub fn deny_name(reason: DenyReason) -> &'static str {
    match reason {
        DenyReason::BadRequester => "bad_requester",
        DenyReason::RateLimited => "rate_limited",
        DenyReason::UnknownTarget => "unknown_target",
        DenyReason::TargetOffline => "target_offline",
        DenyReason::SelfTarget => "self_target",
        DenyReason::Overloaded => "overloaded",
        DenyReason::TriggerOffline => "trigger_offline",
        DenyReason::TriggerUnacknowledged => "trigger_unacknowledged",
        DenyReason::NotInList => "not_in_list",
        DenyReason::Refused => "refused",
        DenyReason::WrongAnswerKind => "wrong_answer_kind",
        DenyReason::NoAnswer => "no_answer",
        DenyReason::AddressMissing => "address_missing",
        DenyReason::TargetGone => "target_gone",
    }
}

/// An end reason as a label value.
fn end_name(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Completed => "completed",
        EndReason::DurationExpired => "duration_expired",
        EndReason::Forced => "forced",
        EndReason::PeerLost => "peer_lost",
        EndReason::Cancelled => "cancelled",
        EndReason::Failed => "failed",
    }
}

/// The metrics of a terminal daemon, from its events.
#[derive(Debug)]
pub struct TerminalMetrics {
    registry: Registry,
    registrations: Family<Labels, Counter>,
    online: Gauge,
    sessions_started: Family<Labels, Counter>,
    sessions_ended: Family<Labels, Counter>,
    sessions_live: Gauge,
    permission_answers: Family<Labels, Counter>,
    extensions: Counter,
    connect_failures: Counter,
}

impl Default for TerminalMetrics {
    fn default() -> Self {
        TerminalMetrics::new()
    }
}

impl TerminalMetrics {
    /// Every family registered, all at zero.
    pub fn new() -> TerminalMetrics {
        let mut registry = Registry::default();
        let m = TerminalMetrics {
            registry: Registry::default(),
            registrations: Family::default(),
            online: Gauge::default(),
            sessions_started: Family::default(),
            sessions_ended: Family::default(),
            sessions_live: Gauge::default(),
            permission_answers: Family::default(),
            extensions: Counter::default(),
            connect_failures: Counter::default(),
        };
        registry.register(
            "tryst_terminal_registrations",
            "This terminal's registrations by outcome (accepted, refused)",
            m.registrations.clone(),
        );
        registry.register(
            "tryst_terminal_online",
            "1 while the trigger server acknowledges this terminal's keepalives",
            m.online.clone(),
        );
        registry.register(
            "tryst_terminal_sessions_started",
            "Sessions this terminal was told of, by role (connecting, connected) and path",
            m.sessions_started.clone(),
        );
        registry.register(
            "tryst_terminal_sessions_ended",
            "Sessions ended on this terminal, by reason",
            m.sessions_ended.clone(),
        );
        registry.register(
            "tryst_terminal_sessions_live",
            "Sessions live on this terminal",
            m.sessions_live.clone(),
        );
        registry.register(
            "tryst_terminal_permission_answers",
            "Permission questions this terminal answered, by verdict",
            m.permission_answers.clone(),
        );
        registry.register(
            "tryst_terminal_extensions",
            "Session extensions this terminal was granted",
            m.extensions.clone(),
        );
        registry.register(
            "tryst_terminal_connect_failures",
            "Connection requests of this terminal that did not become a session",
            m.connect_failures.clone(),
        );
        TerminalMetrics { registry, ..m }
    }

    /// Counts one terminal event.
    pub fn observe(&self, event: &TerminalEvent) {
        let one = |family: &Family<Labels, Counter>, labels: Labels| {
            family.get_or_create(&labels).inc();
        };
        match event {
            TerminalEvent::Registered { .. } => {
                one(&self.registrations, vec![("outcome", "accepted")]);
            }
            TerminalEvent::RegistrationRefused => {
                one(&self.registrations, vec![("outcome", "refused")]);
                self.online.set(0);
            }
            TerminalEvent::Reregistering { .. } => {
                self.online.set(0);
            }
            TerminalEvent::HandshakeFailed { .. } => {
                one(&self.registrations, vec![("outcome", "handshake_failed")]);
            }
            TerminalEvent::Online { .. } => {
                self.online.set(1);
            }
            TerminalEvent::PermissionAnswered { verdict, .. } => {
                let v = match verdict {
                    tryst_core::wire::Verdict::Permit => "permit",
                    tryst_core::wire::Verdict::Deny => "deny",
                };
                one(&self.permission_answers, vec![("verdict", v)]);
            }
            TerminalEvent::SessionReady { role, .. } => {
                let r = match role {
                    tryst_core::wire::Role::Connecting => "connecting",
                    tryst_core::wire::Role::Connected => "connected",
                };
                one(
                    &self.sessions_started,
                    vec![("role", r), ("path", PATH_DIRECT)],
                );
                self.sessions_live.inc();
            }
            TerminalEvent::ConnectFailed { .. } => {
                self.connect_failures.inc();
            }
            TerminalEvent::SessionExtended { .. } => {
                self.extensions.inc();
            }
            TerminalEvent::SessionEnded { reason, .. } => {
                one(&self.sessions_ended, vec![("reason", end_name(*reason))]);
                self.sessions_live.dec();
            }
            _ => {}
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        encode_registry(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tryst_core::wire::SessionId;

    #[test]
    fn sessions_started_counts_a_relay_allocation_under_relayed() {
        let m = ServerMetrics::new();
        m.observe_relay_event(&RelayEvent::Allocated {
            session_id: SessionId([1; 16]),
        });
        // An ended allocation is no new start.
        m.observe_relay_event(&RelayEvent::Ended {
            session_id: SessionId([1; 16]),
            reason: tryst_core::relay::server::RelayEndReason::Ended,
            from_requester: 10,
            from_target: 20,
        });
        let text = m.encode();
        assert!(
            text.contains("tryst_sessions_started_total{path=\"relayed\"} 1"),
            "{text}"
        );
    }
}
