//! The `session_server_ops` harness: one [`SessionServer`] (seeded ChaCha8),
//! a few terminals played with the real Noise IK initiator (registration
//! under their own or another's name, honest or lying about their identity)
//! and sealed records of every set-up and session-life message, a trigger
//! server played on the upstream link (handshake, trigger results, address
//! replies; automatically or step by step), the operator's calls (forced
//! end, unbinding a name, a restart from the stored facts), raw and
//! structure-aware garbage, replays, stream churn and arbitrary clock moves.
//!
//! After every machine input the harness drains it through the simulator's
//! one driver (`tryst_tests::sim::driver::drive`, the `Machine` contract)
//! and checks:
//! - `Output::Timeout` equals `poll_timeout()`; no `Store` comes after a
//!   `Transmit` in one drain (every fact is stored before what acknowledges
//!   it leaves); the stored facts are what a restart replays;
//! - one drain holds at most the configured transmit and event bounds;
//! - every transmit decodes; nothing goes by UDP; the upstream handshake
//!   is a valid Noise IK first message for the trigger server's key with a
//!   `Poll`; every sealed record opens under the peer's end of its channel
//!   (when the harness holds it) and decodes to a message that side takes;
//! - a session starts, and an address notification reaches a terminal,
//!   only for a pair whose target put the requester on its permission list
//!   or answered `Permit` for it;
//! - every session record belongs to a started session and comes once; at
//!   the end of a run the clock jumps far ahead, and then every started
//!   session has exactly one record and no session is left;
//! - a record the server accepted once is refused when replayed;
//! - after `handle_timeout(now)`, `poll_timeout()` is `None` or later than
//!   any time the machine saw; the tables stay within their limits.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tryst_core::crypto::{Initiator, Responder, SecureChannel, StaticKeypair};
use tryst_core::machine::{ConnectionId, Destination};
use tryst_core::names::{NameRegistry, TrustMode};
use tryst_core::ratelimit::Limit;
use tryst_core::session_server::{
    ExtensionPolicy, RateLimits, SessionConfig, SessionCounters, SessionEvent, SessionLimits,
    SessionServer,
};
use tryst_core::time::Instant;
use tryst_core::wire::{
    AddressInquiry, AddressReply, ConnectionRequest, DecisionMode, EndNotification, EndReason,
    ExtensionRequest, HandshakeInit, HandshakeReply, Message, Name, NameSeq, PermissionAnswer,
    PermissionList, Poll, PublicKey, Register, Role, SessionId, TriggerOutcome, TriggerRequest,
    TriggerResult, Verdict, MAX_HANDSHAKE_LEN,
};
use tryst_tests::sim::driver::{drive, DriverOrder, Out};
use tryst_tests::sim::world::fact_of;

use crate::fuzz_ops;
use crate::ops::{
    addr, encode, encode_plain, open, pick, push_bounded, read_input, seal, FuzzClock, TimeStep,
};

/// The names the played terminals register under (terminal `i` owns `NAMES[i]`).
pub const NAMES: [&str; 5] = ["alice", "bob", "carol", "dave", "eve"];
/// Terminals the harness plays.
pub const TERMS: u8 = NAMES.len() as u8;
/// How far the clock jumps at the end of a run: longer than any session,
/// its grace and every request deadline.
const FINAL_JUMP: Duration = Duration::from_secs(400 * 24 * 3600);

fuzz_ops! {
    /// The server's policy and bounds, and how the trigger server is played.
    pub struct SsSetup {
        /// Closed registry: names 0..=3 enrolled for their own keys, `eve` not.
        pub closed: bool,
        /// The trigger server answers link handshakes at once.
        pub auto_link: bool,
        /// The trigger server answers triggers `Delivered` at once and the
        /// target polls.
        pub auto_trigger: bool,
        /// The trigger server answers address inquiries at once.
        pub auto_address: bool,
        /// Refuse every extension.
        pub never_extend: bool,
        pub deny_delay_secs: u8,
        pub decision_timeout_secs: u8,
        pub end_grace_secs: u8,
        pub max_duration_secs: u16,
        pub default_duration_secs: u16,
        pub max_total_secs: u16,
        /// Each table and queue bound: 0 is the default, else the value.
        pub limits: [u8; 9],
    }
}

fuzz_ops! {
    /// One thing that happens to the session server.
    pub enum SsOp<'a> {
        /// Terminal `term` registers as `NAMES[name]` in `mode`, naming its
        /// own key (`honest`) or another's; `confirm` sends the sealed `Poll`.
        Register { term: u8, name: u8, mode: DecisionMode, honest: bool, confirm: bool },
        /// Terminal `term` confirms its newest channel with a sealed `Poll`.
        Confirm { term: u8 },
        /// Terminal `term` asks for `NAMES[target]` (as `NAMES[as_name]` if given).
        Connect { term: u8, target: u8, request_id: u32, duration: u32, as_name: Option<u8> },
        /// Terminal `term` answers one of its list requests with the names in `mask`.
        AnswerList { term: u8, pick: u8, mask: u8 },
        /// Terminal `term` answers one of its inquiries.
        AnswerInquiry { term: u8, pick: u8, verdict: Verdict },
        /// Terminal `term` sends the end notification of one of its sessions.
        End { term: u8, pick: u8, reason: EndReason, bytes: u64 },
        /// Terminal `term` asks to extend one of its sessions.
        Extend { term: u8, pick: u8, extra: u32 },
        /// Terminal `term` seals an arbitrary message.
        Send { term: u8, message: Message<'a> },
        /// Terminal `term` seals arbitrary bytes.
        SendBytes { term: u8, plain: &'a [u8] },
        /// A record a terminal sent before is sent again.
        ReplayRecord { back: u8 },
        /// Terminal `term`'s last handshake is replayed on `onto`'s stream.
        ReplayInit { term: u8, onto: u8 },
        /// Terminal `term` opens a new stream (its old one stays open).
        Reconnect { term: u8 },
        /// Terminal `term`'s stream closes.
        CloseConn { term: u8 },
        /// Arbitrary bytes on stream `conn` (terminal `conn / 16`'s streams).
        Stream { conn: u8, bytes: &'a [u8] },
        /// An arbitrary message on stream `conn`.
        StreamMessage { conn: u8, message: Message<'a> },
        /// The trigger server answers the last link handshake.
        TsHandshake {},
        /// The trigger server answers one pending trigger; a delivered
        /// trigger makes the target poll if `poll`.
        TsResult { pick: u8, outcome: TriggerOutcome, poll: bool },
        /// The trigger server answers one pending address inquiry, with or
        /// without each address.
        TsAddresses { pick: u8, first: bool, second: bool },
        /// The trigger server seals an arbitrary message.
        TsSend { message: Message<'a> },
        /// A record the trigger server sent before is sent again.
        TsReplay { back: u8 },
        /// Arbitrary bytes from the trigger server.
        TsRaw { bytes: &'a [u8] },
        /// An arbitrary message from the trigger server.
        TsRawMessage { message: Message<'a> },
        /// The link to the trigger server is lost.
        UpstreamClosed {},
        /// The operator ends one of the started sessions (or a made-up one).
        EndSession { pick: u8 },
        /// The operator unbinds `NAMES[name]`.
        Unbind { name: u8 },
        /// The server restarts from its stored facts.
        Restart {},
        /// The clock moves; `handle_timeout` runs.
        Time { step: TimeStep },
    }
}

/// What a run reached, for the seed corpus checks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SsSummary {
    /// Registrations the terminals saw accepted.
    pub registered: u32,
    /// Sessions started.
    pub sessions: u32,
    /// Session records written.
    pub records: u32,
    /// Extensions granted.
    pub extensions: u32,
    /// Uniform denials sent.
    pub denials: u32,
}

/// A query a terminal received: its ID and, for an inquiry, the requester.
#[derive(Debug, Clone)]
struct Query {
    id: u32,
    requester: Option<String>,
}

struct Term {
    kp: StaticKeypair,
    addr: SocketAddr,
    conn: Option<ConnectionId>,
    next_conn: u64,
    initiator: Option<(Initiator, String)>,
    last_init: Option<Vec<u8>>,
    /// Channels by device ID (newest last), the name each registered and
    /// the stream's channel number (not the device ID).
    channels: Vec<(u64, SecureChannel, String, u64)>,
    queries: Vec<Query>,
    sessions: Vec<SessionId>,
}

struct FakeTs {
    kp: StaticKeypair,
    channels: Vec<(u64, SecureChannel)>,
    next_channel: u64,
    pending_init: Option<Vec<u8>>,
    triggers: Vec<TriggerRequest>,
    inquiries: Vec<AddressInquiry>,
    sent: Vec<Vec<u8>>,
}

struct Sent {
    conn: ConnectionId,
    bytes: Vec<u8>,
    accepted: bool,
}

struct Harness {
    ss: SessionServer<ChaCha8Rng>,
    ss_kp: StaticKeypair,
    config: SessionConfig,
    mode: TrustMode,
    setup: SsSetup,
    clock: FuzzClock,
    rng: ChaCha8Rng,
    restarts: u64,
    terms: Vec<Term>,
    ts: FakeTs,
    /// (target, requester) pairs a target permitted; requester "*" for a
    /// `Permit` to an inquiry the harness never saw.
    permitted: BTreeSet<(String, String)>,
    /// Started sessions and how many records each got; stored facts.
    started: BTreeMap<[u8; 16], u32>,
    facts: Vec<SessionEvent>,
    records: Vec<Sent>,
    summary: SsSummary,
}

/// Runs one input; returns what it reached.
pub fn run(data: &[u8]) -> SsSummary {
    let Some((setup, ops)) = read_input::<SsSetup, SsOp<'_>>(data) else {
        return SsSummary::default();
    };
    let mut h = Harness::new(setup);
    for op in &ops {
        h.apply(op);
        h.settle();
    }
    h.finish();
    h.summary
}

fn limit(value: u8, default: usize) -> usize {
    if value == 0 {
        default
    } else {
        usize::from(value)
    }
}

fn config_of(setup: &SsSetup) -> SessionConfig {
    let d = SessionLimits::default();
    let l = &setup.limits;
    SessionConfig {
        max_duration: Duration::from_secs(u64::from(setup.max_duration_secs)),
        default_duration: Duration::from_secs(u64::from(setup.default_duration_secs)),
        max_total_duration: Duration::from_secs(u64::from(setup.max_total_secs)),
        extension_policy: if setup.never_extend {
            ExtensionPolicy::Never
        } else {
            ExtensionPolicy::UpToTotal
        },
        deny_delay: Duration::from_secs(u64::from(setup.deny_delay_secs)),
        decision_timeout: Duration::from_secs(u64::from(setup.decision_timeout_secs)),
        end_grace: Duration::from_secs(u64::from(setup.end_grace_secs)),
        limits: SessionLimits {
            max_channels: limit(l[0], d.max_channels),
            max_pending_registrations: limit(l[1], d.max_pending_registrations),
            max_pending_requests: limit(l[2], d.max_pending_requests),
            max_pending_per_target: limit(l[3], d.max_pending_per_target),
            max_sessions: limit(l[4], d.max_sessions),
            max_connections: limit(l[5], d.max_connections),
            max_upstream_queue: limit(l[6], d.max_upstream_queue),
            max_queued_transmits: limit(l[7], d.max_queued_transmits),
            max_queued_events: limit(l[8], d.max_queued_events),
            streams: d.streams,
        },
        // Tight registration limits in half the runs, so that `RetryLater`
        // and its lingering stream are reached (no new setup field).
        rates: if setup.end_grace_secs % 2 == 1 {
            RateLimits {
                registrations_per_source: Limit::one_every(2, Duration::from_secs(3)),
                registrations_per_identity: Limit::one_every(2, Duration::from_secs(5)),
                requests_per_identity: Limit::one_every(3, Duration::from_secs(1)),
            }
        } else {
            RateLimits::default()
        },
        // Binding expiry on in half the runs, with a short TTL (no new
        // setup field, so the seed corpus keeps its meaning).
        binding_ttl: (setup.decision_timeout_secs % 2 == 1)
            .then(|| Duration::from_secs(u64::from(setup.max_duration_secs).max(1))),
    }
}

fn name(index: u8) -> &'static str {
    NAMES[usize::from(index % TERMS)]
}

fn refusals(c: &SessionCounters) -> u64 {
    c.open_failures + c.unknown_channel + c.unknown_connection
}

fn upstream_refusals(c: &SessionCounters) -> u64 {
    c.open_failures + c.unknown_channel
}

impl Harness {
    fn new(setup: SsSetup) -> Harness {
        let mut rng = ChaCha8Rng::seed_from_u64(0x55);
        let ss_kp = StaticKeypair::generate(&mut rng);
        let ts_kp = StaticKeypair::generate(&mut rng);
        let terms: Vec<Term> = (0..TERMS)
            .map(|i| Term {
                kp: StaticKeypair::generate(&mut rng),
                addr: addr(i),
                conn: None,
                next_conn: 0,
                initiator: None,
                last_init: None,
                channels: Vec::new(),
                queries: Vec::new(),
                sessions: Vec::new(),
            })
            .collect();
        let mode = if setup.closed {
            TrustMode::Closed
        } else {
            TrustMode::TrustOnFirstUse
        };
        let mut registry = NameRegistry::new(mode);
        if setup.closed {
            for (i, term) in terms.iter().enumerate().take(4) {
                registry
                    .enroll(Name::new(NAMES[i]).expect("valid"), term.kp.public_key())
                    .expect("room for four names");
            }
        }
        let config = config_of(&setup);
        let ss = SessionServer::new(
            config,
            ss_kp.clone(),
            ts_kp.public_key(),
            registry,
            ChaCha8Rng::seed_from_u64(0x5e55),
        );
        Harness {
            ss,
            ss_kp,
            config,
            mode,
            setup,
            clock: FuzzClock::default(),
            rng,
            restarts: 0,
            terms,
            ts: FakeTs {
                kp: ts_kp,
                channels: Vec::new(),
                next_channel: 0x7500_0000,
                pending_init: None,
                triggers: Vec::new(),
                inquiries: Vec::new(),
                sent: Vec::new(),
            },
            permitted: BTreeSet::new(),
            started: BTreeMap::new(),
            facts: Vec::new(),
            records: Vec::new(),
            summary: SsSummary::default(),
        }
    }

    fn now(&self) -> Instant {
        self.clock.now
    }

    fn term(&mut self, term: u8) -> &mut Term {
        &mut self.terms[usize::from(term % TERMS)]
    }

    /// The stream `conn` of the input's numbering: terminal `conn / 16`'s.
    fn conn_id(conn: u8) -> ConnectionId {
        ConnectionId(u64::from(conn / 16) * 1000 + u64::from(conn % 16))
    }

    /// Terminal `term`'s current stream, opened if it has none.
    fn ensure_conn(&mut self, term: u8) -> ConnectionId {
        let t = term % TERMS;
        if let Some(conn) = self.terms[usize::from(t)].conn {
            return conn;
        }
        self.reconnect(t)
    }

    fn reconnect(&mut self, term: u8) -> ConnectionId {
        let t = term % TERMS;
        let now = self.now();
        let term = &mut self.terms[usize::from(t)];
        let conn = ConnectionId(u64::from(t) * 1000 + term.next_conn % 1000);
        term.next_conn += 1;
        term.conn = Some(conn);
        let remote = term.addr;
        self.ss.handle_connection_opened(now, conn, remote);
        conn
    }

    fn apply(&mut self, op: &SsOp<'_>) {
        let now = self.now();
        match op {
            SsOp::Register {
                term,
                name: n,
                mode,
                honest,
                confirm,
            } => {
                self.register(*term, name(*n), *mode, *honest);
                if *confirm {
                    self.settle();
                    self.send(*term, &Poll.into());
                }
            }
            SsOp::Confirm { term } => self.send(*term, &Poll.into()),
            SsOp::Connect {
                term,
                target,
                request_id,
                duration,
                as_name,
            } => {
                let own = self.term(*term).channels.last().map(|c| c.2.clone());
                let requester = match (as_name, own) {
                    (Some(n), _) => name(*n).to_string(),
                    (None, Some(own)) => own,
                    (None, None) => name(*term).to_string(),
                };
                let request = ConnectionRequest {
                    request_id: *request_id,
                    duration_secs: *duration,
                    requester: Name::new(&requester).expect("a listed name"),
                    target: Name::new(name(*target)).expect("a listed name"),
                };
                self.send(*term, &request.into());
            }
            SsOp::AnswerList { term, pick, mask } => {
                let t = self.term(*term);
                let lists: Vec<u32> = t
                    .queries
                    .iter()
                    .filter(|q| q.requester.is_none())
                    .map(|q| q.id)
                    .collect();
                let Some(i) = crate::ops::pick(*pick, lists.len()) else {
                    return;
                };
                let names: Vec<Name<'_>> = (0..TERMS)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| Name::new(name(i)).expect("valid"))
                    .collect();
                let list = PermissionList {
                    query_id: lists[i],
                    names: NameSeq::from_slice(&names).expect("few names"),
                };
                self.send(*term, &list.into());
            }
            SsOp::AnswerInquiry {
                term,
                pick,
                verdict,
            } => {
                let t = self.term(*term);
                let inquiries: Vec<u32> = t
                    .queries
                    .iter()
                    .filter(|q| q.requester.is_some())
                    .map(|q| q.id)
                    .collect();
                let Some(i) = crate::ops::pick(*pick, inquiries.len()) else {
                    return;
                };
                let answer = PermissionAnswer {
                    query_id: inquiries[i],
                    verdict: *verdict,
                };
                self.send(*term, &answer.into());
            }
            SsOp::End {
                term,
                pick,
                reason,
                bytes,
            } => {
                let session_id = self.session_of(*term, *pick);
                let note = EndNotification {
                    session_id,
                    reason: *reason,
                    bytes_sent: *bytes,
                    bytes_received: bytes / 2,
                    duration_ms: bytes % 100_000,
                };
                self.send(*term, &note.into());
            }
            SsOp::Extend { term, pick, extra } => {
                let session_id = self.session_of(*term, *pick);
                let request = ExtensionRequest {
                    session_id,
                    extra_secs: *extra,
                };
                self.send(*term, &request.into());
            }
            SsOp::Send { term, message } => {
                if let Some(plain) = encode_plain(message) {
                    self.send_plain(*term, &plain);
                }
            }
            SsOp::SendBytes { term, plain } => self.send_plain(*term, plain),
            SsOp::ReplayRecord { back } => {
                let Some(i) = pick(*back, self.records.len()) else {
                    return;
                };
                let (conn, bytes, accepted) = {
                    let r = &self.records[i];
                    (r.conn, r.bytes.clone(), r.accepted)
                };
                let before = refusals(&self.ss.counters());
                self.ss.handle_stream(now, conn, &bytes);
                if accepted {
                    assert_eq!(
                        refusals(&self.ss.counters()),
                        before + 1,
                        "a terminal's record accepted once was not refused when replayed"
                    );
                }
            }
            SsOp::ReplayInit { term, onto } => {
                let Some(init) = self.term(*term).last_init.clone() else {
                    return;
                };
                let conn = self.ensure_conn(*onto);
                self.ss.handle_stream(now, conn, &init);
            }
            SsOp::Reconnect { term } => {
                self.reconnect(*term);
            }
            SsOp::CloseConn { term } => {
                if let Some(conn) = self.term(*term).conn.take() {
                    self.ss.handle_connection_closed(now, conn);
                }
            }
            SsOp::Stream { conn, bytes } => self.ss.handle_stream(now, Self::conn_id(*conn), bytes),
            SsOp::StreamMessage { conn, message } => {
                if let Some(bytes) = encode(message) {
                    self.ss.handle_stream(now, Self::conn_id(*conn), &bytes);
                }
            }
            SsOp::TsHandshake {} => self.ts_handshake(),
            SsOp::TsResult {
                pick,
                outcome,
                poll,
            } => {
                let Some(i) = crate::ops::pick(*pick, self.ts.triggers.len()) else {
                    return;
                };
                let trigger = self.ts.triggers.remove(i);
                self.ts_answer_trigger(trigger, *outcome, *poll);
            }
            SsOp::TsAddresses {
                pick,
                first,
                second,
            } => {
                let Some(i) = crate::ops::pick(*pick, self.ts.inquiries.len()) else {
                    return;
                };
                let inquiry = self.ts.inquiries.remove(i);
                self.ts_answer_inquiry(inquiry, *first, *second);
            }
            SsOp::TsSend { message } => {
                if let Some(plain) = encode_plain(message) {
                    self.ts_send_plain(&plain);
                }
            }
            SsOp::TsReplay { back } => {
                let Some(i) = pick(*back, self.ts.sent.len()) else {
                    return;
                };
                let bytes = self.ts.sent[i].clone();
                let before = upstream_refusals(&self.ss.counters());
                self.ss.handle_upstream(now, &bytes);
                assert_eq!(
                    upstream_refusals(&self.ss.counters()),
                    before + 1,
                    "a trigger server record was accepted twice"
                );
            }
            SsOp::TsRaw { bytes } => self.ss.handle_upstream(now, bytes),
            SsOp::TsRawMessage { message } => {
                if let Some(bytes) = encode(message) {
                    self.ss.handle_upstream(now, &bytes);
                }
            }
            SsOp::UpstreamClosed {} => self.ss.handle_upstream_closed(now),
            SsOp::EndSession { pick } => {
                let ids: Vec<[u8; 16]> = self.started.keys().copied().collect();
                let id = crate::ops::pick(*pick, ids.len())
                    .filter(|_| *pick < 200)
                    .map_or(SessionId([*pick; 16]), |i| SessionId(ids[i]));
                let _ = self.ss.end_session(now, id);
            }
            SsOp::Unbind { name: n } => {
                let _ = self
                    .ss
                    .registry_mut()
                    .unbind(Name::new(name(*n)).expect("valid"));
            }
            SsOp::Restart {} => self.restart(),
            SsOp::Time { step } => {
                self.clock.step(step, self.ss.poll_timeout());
                self.ss.handle_timeout(self.clock.now);
                self.clock
                    .check_timeout("session server", self.ss.poll_timeout());
            }
        }
    }

    fn session_of(&mut self, term: u8, pick: u8) -> SessionId {
        let sessions = &self.term(term).sessions;
        crate::ops::pick(pick, sessions.len()).map_or(SessionId([pick; 16]), |i| sessions[i])
    }

    fn register(&mut self, term: u8, name: &str, mode: DecisionMode, honest: bool) {
        let t = term % TERMS;
        let conn = self.ensure_conn(t);
        let identity = if honest {
            self.terms[usize::from(t)].kp.public_key()
        } else {
            self.terms[usize::from((t + 1) % TERMS)].kp.public_key()
        };
        let register = encode_plain(
            &Register {
                mode,
                identity,
                name: Name::new(name).expect("a listed name"),
                local: None,
            }
            .into(),
        )
        .expect("a Register encodes");
        let mut noise = vec![0u8; MAX_HANDSHAKE_LEN];
        let ss_key = self.ss_kp.public_key();
        let now = self.now();
        let term = &mut self.terms[usize::from(t)];
        let (initiator, n) =
            Initiator::start(&mut self.rng, now, &term.kp, &ss_key, &register, &mut noise)
                .expect("a valid key and payload");
        let init = encode(&HandshakeInit { noise: &noise[..n] }.into()).expect("fits");
        term.initiator = Some((initiator, name.to_string()));
        term.last_init = Some(init.clone());
        self.ss.handle_stream(now, conn, &init);
    }

    /// Seals `message` on terminal `term`'s newest channel.
    fn send(&mut self, term: u8, message: &Message<'_>) {
        let plain = encode_plain(message).expect("the harness's messages fit");
        self.send_plain(term, &plain);
    }

    fn send_plain(&mut self, term: u8, plain: &[u8]) {
        let t = term % TERMS;
        let conn = self.ensure_conn(t);
        let now = self.now();
        let term = &mut self.terms[usize::from(t)];
        let Some((_, channel, own_name, _)) = term.channels.last_mut() else {
            return;
        };
        let own_name = own_name.clone();
        let Some(bytes) = seal(channel, plain) else {
            return;
        };
        // What a target says about requesters, for the permission check.
        match Message::decode(plain) {
            Ok(Message::PermissionList(list)) => {
                for n in list.names.iter() {
                    self.permitted
                        .insert((own_name.clone(), n.as_str().to_string()));
                }
            }
            Ok(Message::PermissionAnswer(PermissionAnswer {
                query_id,
                verdict: Verdict::Permit,
            })) => {
                let requester = term
                    .queries
                    .iter()
                    .find(|q| q.id == query_id && q.requester.is_some())
                    .and_then(|q| q.requester.clone())
                    .unwrap_or_else(|| "*".to_string());
                self.permitted.insert((own_name, requester));
            }
            _ => {}
        }
        let before = refusals(&self.ss.counters());
        self.ss.handle_stream(now, conn, &bytes);
        let accepted = refusals(&self.ss.counters()) == before;
        push_bounded(
            &mut self.records,
            64,
            Sent {
                conn,
                bytes,
                accepted,
            },
        );
    }

    fn is_permitted(&self, target: &str, requester: &str) -> bool {
        self.permitted
            .contains(&(target.to_string(), requester.to_string()))
            || self
                .permitted
                .contains(&(target.to_string(), "*".to_string()))
    }

    // ---- the trigger server ----

    fn ts_handshake(&mut self) {
        let Some(init) = self.ts.pending_init.take() else {
            return;
        };
        let Ok(Message::HandshakeInit(init)) = Message::decode(&init) else {
            unreachable!("only handshake inits are kept");
        };
        let mut payload = vec![0u8; MAX_HANDSHAKE_LEN];
        let (responder, n) = Responder::accept(
            &mut self.rng,
            self.clock.now,
            &self.ts.kp,
            &init,
            &mut payload,
        )
        .unwrap_or_else(|e| panic!("the server's link handshake is refused: {e}"));
        assert_eq!(
            Message::decode(&payload[..n]),
            Ok(Message::Poll(Poll)),
            "the link handshake carries Poll"
        );
        let number = self.ts.next_channel;
        self.ts.next_channel += 1;
        let poll = encode(&Poll.into()).expect("Poll encodes");
        let mut noise = vec![0u8; MAX_HANDSHAKE_LEN];
        let (channel, m) = responder
            .reply(number, &poll, &mut noise)
            .expect("room for the reply");
        push_bounded(&mut self.ts.channels, 4, (number, channel));
        let reply = encode(
            &HandshakeReply {
                channel: number,
                noise: &noise[..m],
            }
            .into(),
        )
        .expect("fits");
        self.ss.handle_upstream(self.clock.now, &reply);
    }

    fn ts_send_plain(&mut self, plain: &[u8]) {
        let Some((_, channel)) = self.ts.channels.last_mut() else {
            return;
        };
        let Some(bytes) = seal(channel, plain) else {
            return;
        };
        let before = upstream_refusals(&self.ss.counters());
        self.ss.handle_upstream(self.clock.now, &bytes);
        if upstream_refusals(&self.ss.counters()) == before {
            push_bounded(&mut self.ts.sent, 32, bytes);
        }
    }

    fn ts_answer_trigger(&mut self, trigger: TriggerRequest, outcome: TriggerOutcome, poll: bool) {
        let result = encode_plain(
            &TriggerResult {
                op_id: trigger.op_id,
                outcome,
            }
            .into(),
        )
        .expect("fits");
        self.ts_send_plain(&result);
        if outcome == TriggerOutcome::Delivered && poll {
            if let Some(t) = self.term_of_device(trigger.device_id.0) {
                self.send_on_device(t, trigger.device_id.0, &Poll.into());
            }
        }
    }

    fn ts_answer_inquiry(&mut self, inquiry: AddressInquiry, first: bool, second: bool) {
        let addr_of = |h: &Harness, device: u64| {
            h.term_of_device(device)
                .map(|t| h.terms[usize::from(t)].addr)
        };
        let reply = AddressReply {
            op_id: inquiry.op_id,
            first: addr_of(self, inquiry.first.0).filter(|_| first),
            second: addr_of(self, inquiry.second.0).filter(|_| second),
        };
        let plain = encode_plain(&reply.into()).expect("fits");
        self.ts_send_plain(&plain);
    }

    fn term_of_device(&self, device: u64) -> Option<u8> {
        (0..TERMS).find(|&t| {
            self.terms[usize::from(t)]
                .channels
                .iter()
                .any(|c| c.0 == device)
        })
    }

    /// Seals `message` on terminal `t`'s channel of `device` (a triggered
    /// terminal answers on the registration that was triggered).
    fn send_on_device(&mut self, t: u8, device: u64, message: &Message<'_>) {
        let conn = self.ensure_conn(t);
        let now = self.now();
        let plain = encode_plain(message).expect("fits");
        let term = &mut self.terms[usize::from(t)];
        let Some((_, channel, _, _)) = term.channels.iter_mut().find(|c| c.0 == device) else {
            return;
        };
        if let Some(bytes) = seal(channel, &plain) {
            self.ss.handle_stream(now, conn, &bytes);
        }
    }

    // ---- the operator ----

    /// A new machine from the stored facts, as a driver restarts it: the
    /// bindings, and every started session without a record (with its
    /// extensions). Channels are not durable: the terminals' are dropped.
    fn restart(&mut self) {
        self.restarts += 1;
        let bindings: Vec<(String, PublicKey)> = self
            .ss
            .registry()
            .bindings()
            .map(|(n, k)| (n.as_str().to_string(), k))
            .collect();
        let registry = NameRegistry::from_bindings(
            self.mode,
            bindings
                .iter()
                .map(|(n, k)| (Name::new(n).expect("a bound name is valid"), *k)),
        )
        .expect("the bindings fit a fresh registry");
        let mut ss = SessionServer::new(
            self.config,
            self.ss_kp.clone(),
            self.ts.kp.public_key(),
            registry,
            ChaCha8Rng::seed_from_u64(0x5e55 + self.restarts),
        );
        let open: BTreeSet<[u8; 16]> = self
            .started
            .iter()
            .filter(|(_, records)| **records == 0)
            .map(|(id, _)| *id)
            .collect();
        for fact in &self.facts {
            let id = match fact {
                SessionEvent::SessionStarted(s) => s.session_id.0,
                SessionEvent::SessionExtended(e) => e.session_id.0,
                _ => continue,
            };
            if open.contains(&id) {
                let restored = match fact_of(fact) {
                    Some(fact) => ss.restore_session(&fact),
                    None => continue,
                };
                // Facts are never dropped: every stored fact restores.
                assert!(
                    restored.is_ok(),
                    "a stored fact does not restore: {restored:?}"
                );
            }
        }
        self.ss = ss;
        // The new machine's clock starts over: it has seen no time yet.
        self.clock.latest = Instant::ZERO;
        for term in &mut self.terms {
            term.conn = None;
            term.initiator = None;
            term.channels.clear();
            term.queries.clear();
        }
        self.ts.pending_init = None;
        self.ts.triggers.clear();
        self.ts.inquiries.clear();
    }

    // ---- outputs ----

    /// Drains the machine, lets the played peers react (within a bound),
    /// and checks every output.
    fn settle(&mut self) {
        for _ in 0..16 {
            if !self.drain() {
                break;
            }
            let mut reacted = false;
            if self.setup.auto_link && self.ts.pending_init.is_some() {
                self.ts_handshake();
                reacted = true;
            }
            if self.setup.auto_trigger {
                for trigger in std::mem::take(&mut self.ts.triggers) {
                    self.ts_answer_trigger(trigger, TriggerOutcome::Delivered, true);
                    reacted = true;
                }
            }
            if self.setup.auto_address {
                for inquiry in std::mem::take(&mut self.ts.inquiries) {
                    self.ts_answer_inquiry(inquiry, true, true);
                    reacted = true;
                }
            }
            if !reacted {
                break;
            }
        }
        self.drain();
    }

    /// Drains the machine once through the simulator's one driver (which
    /// checks that `Output::Timeout` equals `poll_timeout()` and that no
    /// `Store` follows a `Transmit`); acts on every output in order (facts
    /// stored, and checked, before the transmits after them); whether
    /// there were any.
    fn drain(&mut self) -> bool {
        let limits = self.config.limits;
        let now = self.clock.now;
        let mut outs = Vec::new();
        let _ = drive(
            &mut self.ss,
            now,
            &mut (),
            DriverOrder::StoreFirst,
            &mut outs,
        );
        let (mut transmits, mut events) = (0, 0);
        let any = !outs.is_empty();
        for out in outs {
            match out {
                Out::Store(fact) => self.on_event(SessionEvent::from(fact)),
                Out::Close(conn) => self.on_close(conn),
                Out::Event(event) => {
                    events += 1;
                    self.on_event(event);
                }
                Out::Transmit(destination, payload) => {
                    transmits += 1;
                    let message = Message::decode(&payload).unwrap_or_else(|e| {
                        panic!("a transmit does not decode ({e}): {destination:?}")
                    });
                    match destination {
                        Destination::Upstream => self.ts_receive(&payload, &message),
                        Destination::Connection(conn) => {
                            self.term_receive(conn, &payload, &message)
                        }
                        Destination::Udp(to) | Destination::RelayStream(to) => {
                            panic!("the session server sent a datagram to {to}")
                        }
                    }
                }
            }
        }
        assert!(
            transmits <= limits.max_queued_transmits.max(1),
            "{transmits} transmits in one drain"
        );
        assert!(
            events <= limits.max_queued_events.max(1),
            "{events} events in one drain"
        );
        assert!(self.ss.channel_count() <= limits.max_channels);
        assert!(self.ss.session_count() <= limits.max_sessions);
        assert!(self.ss.pending_request_count() <= limits.max_pending_requests);
        any
    }

    /// The server closed an accepted stream: the terminal on it lost it
    /// (its next message opens a new one).
    fn on_close(&mut self, conn: ConnectionId) {
        for term in &mut self.terms {
            if term.conn == Some(conn) {
                term.conn = None;
            }
        }
    }

    fn on_event(&mut self, event: SessionEvent) {
        match &event {
            SessionEvent::SessionStarted(s) => {
                assert!(
                    self.is_permitted(&s.target, &s.requester),
                    "session {s:?} started without the target's permission"
                );
                assert!(
                    self.started.insert(s.session_id.0, 0).is_none(),
                    "a session ID started twice"
                );
                self.summary.sessions += 1;
                self.facts.push(event);
            }
            SessionEvent::SessionExtended(_) => {
                self.summary.extensions += 1;
                self.facts.push(event);
            }
            SessionEvent::SessionRecord(r) => {
                // Facts are never dropped (the contract), whatever the
                // event queue bound: every record has its start.
                let Some(records) = self.started.get_mut(&r.session_id.0) else {
                    panic!("a record for a session never started: {r:?}");
                };
                *records += 1;
                assert_eq!(*records, 1, "a second record for {r:?}");
                assert!(r.end >= r.start && r.duration == r.end - r.start);
                self.summary.records += 1;
            }
            SessionEvent::RequestDenied { .. } => self.summary.denials += 1,
            _ => {}
        }
    }

    fn ts_receive(&mut self, bytes: &[u8], message: &Message<'_>) {
        match message {
            Message::HandshakeInit(_) => self.ts.pending_init = Some(bytes.to_vec()),
            Message::Sealed(record) => {
                let Some((_, channel)) = self
                    .ts
                    .channels
                    .iter_mut()
                    .find(|(n, _)| *n == record.channel)
                else {
                    return;
                };
                let plain = open(channel, bytes)
                    .unwrap_or_else(|e| panic!("a record to the trigger server fails: {e}"));
                match Message::decode(&plain) {
                    Ok(Message::TriggerRequest(t)) => push_bounded(&mut self.ts.triggers, 16, t),
                    Ok(Message::AddressInquiry(a)) => push_bounded(&mut self.ts.inquiries, 16, a),
                    Ok(
                        Message::EndTriggerRequest(_)
                        | Message::KeyInstall(_)
                        | Message::KeyRevoke(_),
                    ) => {}
                    other => panic!("the server sealed {other:?} to the trigger server"),
                }
            }
            other => panic!("the server sent {other:?} upstream"),
        }
    }

    fn term_receive(&mut self, conn: ConnectionId, bytes: &[u8], message: &Message<'_>) {
        let now = self.now();
        let t = conn.0 / 1000;
        assert!(t < u64::from(TERMS), "a transmit to a stream never opened");
        let t = t as usize;
        match message {
            // Rate limited: told in clear when to retry, within the bound.
            Message::RetryLater(r) => assert!(
                (1..=tryst_core::wire::MAX_RETRY_AFTER_SECS).contains(&r.retry_after_secs),
                "RetryLater of {} s",
                r.retry_after_secs
            ),
            Message::HandshakeReply(reply) => {
                let term = &mut self.terms[t];
                let Some((initiator, registered_name)) = term.initiator.as_mut() else {
                    return;
                };
                let mut payload = vec![0u8; MAX_HANDSHAKE_LEN];
                // A reply to a replayed handshake does not finish ours.
                let Ok((channel, n)) = initiator.finish(now, reply, &mut payload) else {
                    return;
                };
                let registered_name = registered_name.clone();
                term.initiator = None;
                match Message::decode(&payload[..n]) {
                    Ok(Message::RegisterAck(ack)) => {
                        // The UDP device ID is not the stream's channel number.
                        assert_ne!(ack.device_id.0, reply.channel);
                        push_bounded(
                            &mut term.channels,
                            3,
                            (ack.device_id.0, channel, registered_name, reply.channel),
                        );
                        self.summary.registered += 1;
                    }
                    Ok(Message::Error(_)) => {}
                    other => panic!("a handshake reply carries {other:?}"),
                }
            }
            Message::Sealed(record) => {
                let term = &mut self.terms[t];
                let Some((_, channel, own_name, _)) =
                    term.channels.iter_mut().find(|c| c.3 == record.channel)
                else {
                    return;
                };
                let own_name = own_name.clone();
                let plain = open(channel, bytes)
                    .unwrap_or_else(|e| panic!("a record to a terminal fails to open: {e}"));
                let message = Message::decode(&plain)
                    .unwrap_or_else(|e| panic!("a sealed plaintext does not decode: {e}"));
                match message {
                    Message::PermissionListRequest(q) => push_bounded(
                        &mut term.queries,
                        16,
                        Query {
                            id: q.query_id,
                            requester: None,
                        },
                    ),
                    Message::PermissionInquiry(q) => push_bounded(
                        &mut term.queries,
                        16,
                        Query {
                            id: q.query_id,
                            requester: Some(q.requester.as_str().to_string()),
                        },
                    ),
                    Message::AddressNotification(n) => {
                        let peer = n.peer_name.as_str();
                        let allowed = match n.role {
                            Role::Connected => self.is_permitted(&own_name, peer),
                            Role::Connecting => self.is_permitted(peer, &own_name),
                        };
                        assert!(allowed, "{own_name} was told of {peer} without permission");
                        let term = &mut self.terms[t];
                        push_bounded(&mut term.sessions, 8, n.session_id);
                    }
                    Message::Error(_)
                    | Message::ExtensionGrant(_)
                    | Message::ExtensionRefusal(_)
                    | Message::RegistrationTicket(_)
                    | Message::KeyReady(_)
                    | Message::TriggerAssignment(_) => {}
                    other => panic!("the server sealed {other:?} to a terminal"),
                }
            }
            other => panic!("the server sent {other:?} to a terminal"),
        }
    }

    /// The clock jumps past every deadline: every started session must
    /// then have exactly one record.
    fn finish(&mut self) {
        self.clock.forward(FINAL_JUMP);
        self.ss.handle_timeout(self.clock.now);
        self.clock
            .check_timeout("session server", self.ss.poll_timeout());
        self.setup.auto_link = false;
        self.setup.auto_trigger = false;
        self.setup.auto_address = false;
        self.settle();
        for (id, records) in &self.started {
            assert_eq!(*records, 1, "session {id:02x?} has {records} records");
        }
        assert_eq!(
            self.ss.session_count(),
            0,
            "sessions outlive every deadline"
        );
    }
}
