//! Seed inputs of the operation-sequence targets, written as operation lists
//! (see [`crate::ops`] for the byte layout). [`all`] checks each seed: it
//! reads back as the operations it was written from, and running it through
//! its harness reaches what the seed is for (a link, a session, a record,
//! a replay refused...), so a seed that silently stopped reaching deep
//! states fails the `write_seed_corpus` example and the CI corpus step.

use std::fmt::Debug;

use arbitrary::Arbitrary;
use tryst_core::wire::{DecisionMode, EndReason, ErrorCode, Role, TriggerOutcome, Verdict};

use crate::noise_channel::{self as noise, NoiseOp, NoiseSetup};
use crate::ops::{read_input, write_input, SeedEncode, TimeStep};
use crate::peer_session::{self as peer, PeerSessionOp, PeerSessionSetup};
use crate::session_server::{self as ss, SsOp, SsSetup};
use crate::terminal::{self as term, RegAnswer, TermOp, TermSetup, TsCounter};
use crate::trigger_server::{self as ts, Counter, TsOp, TsSetup};
use crate::udp_auth::{self as udp, UdpKind, UdpOp, UdpSetup};
use crate::whole_system::{self as ws, WsOp, WsSetup};

/// One seed: its target, its file name and its bytes.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The fuzz target it is for.
    pub target: &'static str,
    /// The file name under `fuzz/corpus/<target>/`.
    pub name: &'static str,
    /// The input.
    pub bytes: Vec<u8>,
}

/// Encodes `setup` and `ops`, checks that they read back unchanged, and
/// that `reached` holds for what `run` reports about the seed.
fn seed<S, O, R: Debug>(
    target: &'static str,
    name: &'static str,
    setup: S,
    ops: Vec<O>,
    run: fn(&[u8]) -> R,
    reached: impl Fn(&R) -> bool,
) -> Seed
where
    S: SeedEncode + PartialEq + Debug + for<'b> Arbitrary<'b>,
    O: SeedEncode + ReadBack,
{
    let bytes = write_input(&setup, &ops);
    assert!(
        O::reads_back(&bytes, &ops),
        "{target}/{name}: the seed does not read back as its operations; \
         has `arbitrary`'s encoding changed?"
    );
    let (read_setup, _) = read_input::<S, NoOp>(&bytes).expect("the setup reads back");
    assert_eq!(read_setup, setup, "{target}/{name}: setup");
    let summary = run(&bytes);
    assert!(
        reached(&summary),
        "{target}/{name} no longer reaches what it is for: {summary:?}"
    );
    Seed {
        target,
        name,
        bytes,
    }
}

/// An operation that reads nothing, to read a setup alone.
#[derive(Debug)]
struct NoOp;

impl<'a> Arbitrary<'a> for NoOp {
    fn arbitrary(_: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Err(arbitrary::Error::NotEnoughData)
    }
}

/// Reads a seed's operations back and compares them (the operation types
/// borrow from the input, so each implements this with its own lifetime).
pub trait ReadBack: Sized {
    /// Whether `bytes` reads back as `ops` after its setup.
    fn reads_back(bytes: &[u8], ops: &[Self]) -> bool;
}

macro_rules! read_back {
    ($setup:ty, $op:ident) => {
        impl ReadBack for $op<'_> {
            fn reads_back(bytes: &[u8], ops: &[Self]) -> bool {
                read_input::<$setup, $op<'_>>(bytes)
                    .is_some_and(|(_, read)| read.len() == ops.len() && read[..] == ops[..])
            }
        }
    };
}
read_back!(TsSetup, TsOp);
read_back!(SsSetup, SsOp);
read_back!(TermSetup, TermOp);
read_back!(NoiseSetup, NoiseOp);
read_back!(UdpSetup, UdpOp);
read_back!(PeerSessionSetup, PeerSessionOp);

impl ReadBack for WsOp {
    fn reads_back(bytes: &[u8], ops: &[Self]) -> bool {
        read_input::<WsSetup, WsOp>(bytes)
            .is_some_and(|(_, read)| read.len() == ops.len() && read[..] == ops[..])
    }
}

/// Every seed of every operation-sequence target.
pub fn all() -> Vec<Seed> {
    let mut seeds = trigger_server();
    seeds.extend(session_server());
    seeds.extend(terminal());
    seeds.extend(noise_channel());
    seeds.extend(udp_auth());
    seeds.extend(whole_system());
    seeds.extend(peer_session());
    seeds.push(Seed {
        target: "peer_transport",
        name: "genuine_exchange",
        bytes: crate::peer_transport::genuine_exchange_seed(20_000, 12),
    });
    seeds
}

// ---------------------------------------------------------------- peer session

fn peer_session() -> Vec<Seed> {
    use PeerSessionOp::*;
    let t = "peer_session";
    let setup = PeerSessionSetup {
        seed: 7,
        duration_secs: 60,
        session: [0x5e; 16],
    };
    let mut transfer = vec![StreamMore {
        to_a: true,
        bytes: 20_000,
    }];
    transfer.push(Finish { to_a: true });
    transfer.push(Datagram {
        to_a: false,
        len: 100,
    });
    for _ in 0..24 {
        transfer.push(DeliverAll {});
        transfer.push(Time {
            step: TimeStep::Millis { millis: 20 },
        });
    }
    let mut closed = transfer.clone();
    closed.push(Close {
        to_a: false,
        reason: 0,
    });
    for _ in 0..8 {
        closed.push(DeliverAll {});
        closed.push(Time { step: next_timer() });
    }
    let mut lossy = vec![StreamMore {
        to_a: false,
        bytes: 9_000,
    }];
    for i in 0..16u16 {
        lossy.push(Drop { index: i % 3 });
        lossy.push(Duplicate { index: 1 });
        lossy.push(DeliverAll {});
        lossy.push(Time { step: next_timer() });
    }
    vec![
        seed(t, "transfer", setup.clone(), transfer, peer::run, |r| {
            r.connected
        }),
        seed(
            t,
            "transfer_then_close",
            setup.clone(),
            closed,
            peer::run,
            |r| r.connected && r.ended,
        ),
        seed(t, "lossy_transfer", setup, lossy, peer::run, |r| {
            r.connected
        }),
    ]
}

fn next_timer() -> TimeStep {
    TimeStep::NextTimer {}
}

// ---------------------------------------------------------------- trigger server

fn ts_setup(max_devices: u8) -> TsSetup {
    TsSetup {
        keepalive_interval_secs: 20,
        trigger_resend_millis: 1000,
        trigger_sends: 3,
        max_devices,
        max_pending_triggers: 15,
    }
}

fn trigger_server() -> Vec<Seed> {
    use TsOp::*;
    let t = "trigger_server_ops";
    let next = || Counter::Next {};
    let linked = |conn: u8| vec![OpenConn { conn, from: 7 }, Handshake { conn, player: 0 }];
    let mut delivered = linked(0);
    delivered.extend([
        Install {
            conn: 0,
            term: 0,
            rekey: false,
        },
        Install {
            conn: 0,
            term: 1,
            rekey: false,
        },
        Keepalive {
            term: 0,
            from: 0,
            counter: next(),
        },
        Keepalive {
            term: 1,
            from: 1,
            counter: next(),
        },
        Trigger {
            conn: 0,
            term: 0,
            op_id: 1,
            end: false,
        },
        TriggerAck {
            term: 0,
            from: 0,
            pick: 0,
        },
        Inquire {
            conn: 0,
            first: 0,
            second: 1,
            op_id: 2,
        },
        Trigger {
            conn: 0,
            term: 1,
            op_id: 3,
            end: true,
        },
        Time { step: next_timer() },
        Time { step: next_timer() },
        Time { step: next_timer() },
        Time {
            step: TimeStep::Secs { secs: 100 },
        },
        Inquire {
            conn: 0,
            first: 0,
            second: 1,
            op_id: 4,
        },
    ]);

    let refused = vec![
        OpenConn { conn: 1, from: 7 },
        Handshake { conn: 1, player: 2 },
        // The refused link was closed (Output::Close): the session server
        // connects again.
        OpenConn { conn: 1, from: 7 },
        Handshake { conn: 1, player: 1 },
        Install {
            conn: 1,
            term: 2,
            rekey: false,
        },
        Keepalive {
            term: 2,
            from: 3,
            counter: next(),
        },
        ReplayRecord { back: 0 },
        ReplayDatagram { back: 0, from: 4 },
        Keepalive {
            term: 2,
            from: 3,
            counter: Counter::Repeat {},
        },
        Keepalive {
            term: 2,
            from: 6,
            counter: next(),
        },
        Revoke { conn: 1, term: 2 },
        Keepalive {
            term: 2,
            from: 3,
            counter: next(),
        },
        Install {
            conn: 1,
            term: 2,
            rekey: true,
        },
        Keepalive {
            term: 2,
            from: 3,
            counter: next(),
        },
    ];

    let mut unacknowledged = linked(0);
    unacknowledged.extend([
        Install {
            conn: 0,
            term: 0,
            rekey: false,
        },
        Keepalive {
            term: 0,
            from: 0,
            counter: next(),
        },
        Trigger {
            conn: 0,
            term: 0,
            op_id: 10,
            end: false,
        },
        Time { step: next_timer() },
        Time { step: next_timer() },
        Time { step: next_timer() },
        Time { step: next_timer() },
        Trigger {
            conn: 0,
            term: 3,
            op_id: 11,
            end: false,
        },
        Trigger {
            conn: 0,
            term: 0,
            op_id: 12,
            end: true,
        },
        Time { step: next_timer() },
    ]);

    let mut churn = linked(0);
    churn.extend([
        Install {
            conn: 0,
            term: 0,
            rekey: false,
        },
        Keepalive {
            term: 0,
            from: 2,
            counter: next(),
        },
        OpenConn { conn: 2, from: 7 },
        Handshake { conn: 2, player: 0 },
        Trigger {
            conn: 0,
            term: 0,
            op_id: 21,
            end: false,
        },
        // Heard last on connection 2: the result goes there once 0 closes.
        Inquire {
            conn: 2,
            first: 0,
            second: 0,
            op_id: 20,
        },
        CloseConn { conn: 0 },
        TriggerAck {
            term: 0,
            from: 2,
            pick: 0,
        },
        Handshake { conn: 2, player: 1 },
        Trigger {
            conn: 2,
            term: 0,
            op_id: 22,
            end: false,
        },
        OpenConn { conn: 2, from: 5 },
        Time { step: next_timer() },
    ]);

    let mut extremes = linked(0);
    extremes.extend([
        Install {
            conn: 0,
            term: 0,
            rekey: false,
        },
        Keepalive {
            term: 0,
            from: 0,
            counter: next(),
        },
        Trigger {
            conn: 0,
            term: 0,
            op_id: 30,
            end: false,
        },
        Time {
            step: TimeStep::Micros { micros: u64::MAX },
        },
        Keepalive {
            term: 0,
            from: 0,
            counter: next(),
        },
        Trigger {
            conn: 0,
            term: 0,
            op_id: 31,
            end: false,
        },
        Time {
            step: TimeStep::Back { micros: u64::MAX },
        },
        Time {
            step: TimeStep::Set { micros: 0 },
        },
        Keepalive {
            term: 0,
            from: 1,
            counter: Counter::Value { counter: u64::MAX },
        },
        Time { step: next_timer() },
    ]);

    let mut full = linked(3);
    for term in 0..4 {
        full.push(Install {
            conn: 3,
            term,
            rekey: false,
        });
        full.push(Keepalive {
            term,
            from: term,
            counter: next(),
        });
    }
    for op_id in 0..10 {
        full.push(Trigger {
            conn: 3,
            term: 0,
            op_id,
            end: op_id % 2 == 1,
        });
    }
    full.extend((0..4).map(|_| Time { step: next_timer() }));

    vec![
        seed(
            t,
            "trigger_delivered",
            ts_setup(7),
            delivered,
            ts::run,
            |s| s.links == 1 && s.keepalive_acks >= 2 && s.triggers >= 2 && s.results >= 4,
        ),
        seed(
            t,
            "refused_link_and_replays",
            ts_setup(7),
            refused,
            ts::run,
            |s| s.links == 1 && s.keepalive_acks >= 3,
        ),
        seed(
            t,
            "unacknowledged_and_offline",
            ts_setup(7),
            unacknowledged,
            ts::run,
            |s| s.triggers >= 3 && s.results >= 3,
        ),
        seed(t, "connection_churn", ts_setup(7), churn, ts::run, |s| {
            s.links >= 2 && s.results >= 2
        }),
        seed(t, "clock_extremes", ts_setup(7), extremes, ts::run, |s| {
            s.links == 1 && s.triggers >= 1
        }),
        seed(t, "full_tables", ts_setup(1), full, ts::run, |s| {
            s.keepalive_acks >= 2 && s.results >= 10
        }),
    ]
}

// ---------------------------------------------------------------- session server

fn ss_setup(auto: bool, closed: bool) -> SsSetup {
    SsSetup {
        closed,
        auto_link: auto,
        auto_trigger: auto,
        auto_address: auto,
        never_extend: false,
        deny_delay_secs: 5,
        decision_timeout_secs: 5,
        end_grace_secs: 10,
        max_duration_secs: 3600,
        default_duration_secs: 600,
        max_total_secs: 7200,
        limits: [0; 9],
    }
}

fn register(term: u8, mode: DecisionMode) -> SsOp<'static> {
    SsOp::Register {
        term,
        name: term,
        mode,
        honest: true,
        confirm: true,
    }
}

fn session_server() -> Vec<Seed> {
    use DecisionMode::{PermissionList as List, TerminalJudges as Judges};
    use SsOp::*;
    let t = "session_server_ops";
    let connect = |term: u8, target: u8, request_id: u32| Connect {
        term,
        target,
        request_id,
        duration: 60,
        as_name: None,
    };
    let ended = |term: u8| End {
        term,
        pick: 0,
        reason: EndReason::Completed,
        bytes: 1000,
    };
    let list_session = vec![
        register(0, List),
        register(1, List),
        connect(1, 0, 7),
        AnswerList {
            term: 0,
            pick: 0,
            mask: 0b10,
        },
        ended(0),
        ended(1),
        Time {
            step: TimeStep::Secs { secs: 20 },
        },
    ];

    let judged = vec![
        register(0, Judges),
        register(1, List),
        connect(1, 0, 8),
        AnswerInquiry {
            term: 0,
            pick: 0,
            verdict: Verdict::Permit,
        },
        Extend {
            term: 1,
            pick: 0,
            extra: 600,
        },
        Extend {
            term: 0,
            pick: 0,
            extra: 600,
        },
        EndSession { pick: 0 },
        Time { step: next_timer() },
        Time {
            step: TimeStep::Secs { secs: 30 },
        },
    ];

    let manual = vec![
        register(0, List),
        register(1, List),
        TsHandshake {},
        connect(1, 0, 9),
        TsResult {
            pick: 0,
            outcome: TriggerOutcome::Delivered,
            poll: true,
        },
        AnswerList {
            term: 0,
            pick: 0,
            mask: 0b11,
        },
        TsAddresses {
            pick: 0,
            first: true,
            second: true,
        },
        Time {
            step: TimeStep::Secs { secs: 4000 },
        },
    ];

    let denials = vec![
        register(0, List),
        connect(0, 3, 1),
        connect(0, 0, 2),
        register(1, List),
        connect(1, 0, 3),
        AnswerList {
            term: 0,
            pick: 0,
            mask: 0,
        },
        Connect {
            term: 1,
            target: 0,
            request_id: 4,
            duration: 0,
            as_name: Some(2),
        },
        Time {
            step: TimeStep::Secs { secs: 6 },
        },
    ];

    let impersonation = vec![
        register(4, List),
        Register {
            term: 1,
            name: 0,
            mode: List,
            honest: true,
            confirm: true,
        },
        Register {
            term: 0,
            name: 0,
            mode: List,
            honest: false,
            confirm: false,
        },
        register(0, List),
        Unbind { name: 0 },
        Register {
            term: 2,
            name: 0,
            mode: List,
            honest: true,
            confirm: true,
        },
        register(2, Judges),
    ];

    let mut restart = list_session[..4].to_vec();
    restart.extend([
        Restart {},
        register(0, List),
        register(1, List),
        ended(0),
        Time {
            step: TimeStep::Secs { secs: 30 },
        },
    ]);

    let replays = vec![
        register(0, List),
        ReplayRecord { back: 0 },
        ReplayInit { term: 0, onto: 1 },
        Reconnect { term: 0 },
        Confirm { term: 0 },
        register(1, List),
        connect(1, 0, 5),
        TsResult {
            pick: 0,
            outcome: TriggerOutcome::Offline,
            poll: false,
        },
        TsReplay { back: 0 },
        UpstreamClosed {},
        connect(1, 0, 6),
        CloseConn { term: 1 },
        Time { step: next_timer() },
        Time {
            step: TimeStep::Micros { micros: u64::MAX },
        },
    ];

    vec![
        seed(
            t,
            "list_mode_session",
            ss_setup(true, false),
            list_session,
            ss::run,
            |s| s.registered == 2 && s.sessions == 1 && s.records == 1,
        ),
        seed(
            t,
            "judge_mode_extend_and_force",
            ss_setup(true, false),
            judged,
            ss::run,
            |s| s.sessions == 1 && s.extensions == 1 && s.records == 1,
        ),
        seed(
            t,
            "manual_trigger_server",
            ss_setup(false, false),
            manual,
            ss::run,
            |s| s.sessions == 1 && s.records == 1,
        ),
        seed(t, "denials", ss_setup(true, false), denials, ss::run, |s| {
            s.denials >= 4 && s.sessions == 0
        }),
        seed(
            t,
            "impersonation_closed",
            ss_setup(true, true),
            impersonation,
            ss::run,
            |s| s.registered >= 1,
        ),
        seed(
            t,
            "restart_mid_session",
            ss_setup(true, false),
            restart,
            ss::run,
            |s| s.sessions == 1 && s.records == 1 && s.registered == 4,
        ),
        seed(
            t,
            "replays_and_lost_links",
            ss_setup(false, false),
            replays,
            ss::run,
            |s| s.registered >= 2 && s.denials >= 1,
        ),
    ]
}

// ---------------------------------------------------------------- terminal

fn term_setup(judge_by_app: bool, mode_judges: bool) -> TermSetup {
    TermSetup {
        judge_by_app,
        mode_judges,
        keepalive_secs: 300,
        threshold_percent: 70,
        extension_secs: None,
        connect_timeout_secs: 15,
        ask_timeout_secs: 4,
        allowed: 0b0010,
    }
}

fn terminal() -> Vec<Seed> {
    use TermOp::*;
    let t = "terminal_ops";
    let accept = || Answer {
        answer: RegAnswer::Accept {},
    };
    let next = || TsCounter::Next {};
    let connect = vec![
        Start {},
        accept(),
        KeepaliveAck {
            pick: 0,
            interval: 300,
            observed: 1,
        },
        Trigger { counter: next() },
        ListRequest { query_id: 5 },
        Connect {
            target: 1,
            duration: 60,
        },
        Notify {
            role: Role::Connecting,
            pick: 0,
            session: 1,
            duration: 60,
            peer: 1,
        },
        Progress {
            session: 1,
            sent: 100,
            received: 50,
            active: true,
        },
        Time {
            step: TimeStep::Secs { secs: 43 },
        },
        Grant {
            session: 1,
            duration: 120,
        },
        Finish {
            session: 1,
            reason: EndReason::Completed,
        },
        Time { step: next_timer() },
    ];

    let judged = vec![
        Start {},
        accept(),
        Inquiry {
            query_id: 9,
            requester: 0,
        },
        AppAnswer {
            pick: 0,
            verdict: Verdict::Permit,
            query_id: None,
        },
        Inquiry {
            query_id: 10,
            requester: 2,
        },
        Time {
            step: TimeStep::Secs { secs: 5 },
        },
        Notify {
            role: Role::Connected,
            pick: 0,
            session: 2,
            duration: 30,
            peer: 0,
        },
        EndTrigger {
            session: 2,
            counter: next(),
        },
        Trigger {
            counter: TsCounter::Repeat {},
        },
        Time { step: next_timer() },
    ];

    let refused = vec![
        Start {},
        Answer {
            answer: RegAnswer::Refuse {},
        },
        Start {},
        Answer {
            answer: RegAnswer::Busy {},
        },
        Time { step: next_timer() },
        Time { step: next_timer() },
        accept(),
        UpstreamClosed {},
        Time { step: next_timer() },
        accept(),
    ];

    let mut silent = vec![
        Start {},
        accept(),
        Connect {
            target: 0,
            duration: 0,
        },
    ];
    silent.extend((0..6).map(|_| Time { step: next_timer() }));
    silent.extend([
        accept(),
        Connect {
            target: 2,
            duration: 0,
        },
        Error {
            pick: 0,
            code: ErrorCode::NotPermitted,
        },
    ]);

    let mut sessions = vec![Start {}, accept()];
    for session in 0..6 {
        sessions.push(Notify {
            role: Role::Connected,
            pick: 0,
            session,
            duration: 10 + u32::from(session),
            peer: session,
        });
    }
    sessions.extend([
        Refusal { session: 0 },
        Time {
            step: TimeStep::Secs { secs: 11 },
        },
        Time { step: next_timer() },
        Time { step: next_timer() },
    ]);

    let garbage = vec![
        Start {},
        accept(),
        KeepaliveAck {
            pick: 0,
            interval: 1000,
            observed: 6,
        },
        Replay { back: 0 },
        Replay { back: 1 },
        Trigger {
            counter: TsCounter::Value { counter: 5 },
        },
        Trigger {
            counter: TsCounter::Value { counter: 3 },
        },
        EndTrigger {
            session: 0,
            counter: TsCounter::Value { counter: u64::MAX },
        },
        SetPermissions { mask: 0b1111 },
        Disallow { name: 1 },
        Allow { name: 3 },
        ListRequest { query_id: 1 },
        Time {
            step: TimeStep::Micros { micros: u64::MAX },
        },
        Time {
            step: TimeStep::Back { micros: 5 },
        },
        Start {},
    ];

    vec![
        seed(
            t,
            "list_mode_connect_and_extend",
            term_setup(false, false),
            connect,
            term::run,
            |s| {
                s.registered == 1
                    && s.sessions == 1
                    && s.extension_requests == 1
                    && s.ended == 1
                    && s.trigger_acks == 1
            },
        ),
        seed(
            t,
            "judge_by_app_and_end_trigger",
            term_setup(true, true),
            judged,
            term::run,
            |s| s.sessions == 1 && s.ended == 1,
        ),
        seed(
            t,
            "refused_busy_and_backoff",
            term_setup(false, false),
            refused,
            term::run,
            |s| s.registered >= 1,
        ),
        seed(
            t,
            "missed_acks_and_silence",
            term_setup(false, false),
            silent,
            term::run,
            |s| s.registered == 2,
        ),
        seed(
            t,
            "too_many_sessions",
            term_setup(false, false),
            sessions,
            term::run,
            |s| s.sessions >= 4 && s.ended >= 4,
        ),
        seed(
            t,
            "replays_and_extremes",
            term_setup(false, false),
            garbage,
            term::run,
            |s| s.registered == 1 && s.trigger_acks >= 1,
        ),
    ]
}

// ---------------------------------------------------------------- crypto

fn noise_channel() -> Vec<Seed> {
    use NoiseOp::*;
    let t = "noise_channel";
    let setup = || NoiseSetup {
        init_payload: 40,
        reply_payload: 40,
    };
    let exchange = vec![
        Complete {},
        Seal {
            from_server: false,
            len: 20,
            fill: 1,
        },
        Seal {
            from_server: true,
            len: 30,
            fill: 2,
        },
        Deliver {
            from_server: false,
            pick: 0,
        },
        Deliver {
            from_server: true,
            pick: 0,
        },
        Deliver {
            from_server: false,
            pick: 0,
        },
        Seal {
            from_server: false,
            len: 1,
            fill: 3,
        },
        Seal {
            from_server: false,
            len: 2,
            fill: 4,
        },
        Seal {
            from_server: false,
            len: 3,
            fill: 5,
        },
        Deliver {
            from_server: false,
            pick: 3,
        },
        Deliver {
            from_server: false,
            pick: 1,
        },
        Deliver {
            from_server: false,
            pick: 2,
        },
    ];

    let mutations = vec![
        MutatedInit { pos: 40, xor: 1 },
        MutatedReply { pos: 10, xor: 1 },
        Complete {},
        Seal {
            from_server: false,
            len: 24,
            fill: 7,
        },
        Mutate {
            from_server: false,
            pick: 0,
            pos: 30,
            xor: 1,
        },
        Truncate {
            from_server: false,
            pick: 0,
            cut: 1,
        },
        Rechannel {
            from_server: false,
            pick: 0,
            channel: 5,
        },
        Renonce {
            from_server: false,
            pick: 0,
            nonce: 9,
        },
        Deliver {
            from_server: false,
            pick: 0,
        },
        Complete {},
    ];

    let window = vec![
        Complete {},
        Seal {
            from_server: true,
            len: 1,
            fill: 1,
        },
        SealMany {
            from_server: true,
            count: 2100,
        },
        Deliver {
            from_server: true,
            pick: 2100,
        },
        Deliver {
            from_server: true,
            pick: 0,
        },
        Deliver {
            from_server: true,
            pick: 60,
        },
        Deliver {
            from_server: true,
            pick: 60,
        },
    ];

    vec![
        seed(
            t,
            "exchange_and_reorder",
            setup(),
            exchange,
            noise::run,
            |s| s.completed && s.accepted == 5 && s.replayed == 1,
        ),
        seed(t, "mutations", setup(), mutations, noise::run, |s| {
            s.completed && s.accepted == 1
        }),
        seed(t, "replay_window", setup(), window, noise::run, |s| {
            s.accepted == 2 && s.too_old == 1 && s.replayed == 1
        }),
    ]
}

fn udp_auth() -> Vec<Seed> {
    use UdpOp::*;
    let t = "udp_auth";
    let setup = || UdpSetup { key: [0x77; 32] };
    let kinds = [
        UdpKind::Keepalive {
            device: 0x0102_0304_0506_0708,
            counter: 41,
        },
        UdpKind::KeepaliveAck {
            counter: 41,
            interval: 20,
            v6: false,
            ip: [203, 0, 113, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            port: 40_000,
        },
        UdpKind::KeepaliveAck {
            counter: 42,
            interval: 20,
            v6: true,
            ip: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
            port: 40_000,
        },
        UdpKind::Trigger { counter: 9 },
        UdpKind::EndTrigger {
            counter: 10,
            session: [0x5e; 16],
        },
        UdpKind::TriggerAck {
            device: 0x0102_0304_0506_0708,
            counter: 9,
        },
    ];
    let tamper: Vec<UdpOp<'_>> = kinds
        .iter()
        .flat_map(|kind| {
            [0x01, 0x80].map(|xor| Tamper {
                kind: kind.clone(),
                xor,
            })
        })
        .collect();
    let guard = vec![
        Guard {
            counter: 5,
            genuine: true,
        },
        Guard {
            counter: 5,
            genuine: true,
        },
        Guard {
            counter: 4,
            genuine: true,
        },
        Guard {
            counter: 6,
            genuine: false,
        },
        GuardCheck { counter: 6 },
        Guard {
            counter: 6,
            genuine: true,
        },
        GuardCheck { counter: 6 },
        Guard {
            counter: u64::MAX,
            genuine: true,
        },
        Guard {
            counter: u64::MAX,
            genuine: true,
        },
    ];
    vec![
        seed(t, "tamper_every_type", setup(), tamper, udp::run, |s| {
            s.tampered == 12
        }),
        seed(t, "replay_guard", setup(), guard, udp::run, |s| {
            s.guard_accepted == 3 && s.guard_replayed == 3
        }),
    ]
}

// ---------------------------------------------------------------- whole system

fn whole_system() -> Vec<Seed> {
    use WsOp::*;
    let t = "whole_system";
    let permitted = vec![
        Connect {
            from: 1,
            to: 2,
            secs: 60,
            settle_ms: 3000,
        },
        Progress {
            who: 1,
            active: true,
        },
        Wait { millis: 5000 },
        Finish {
            who: 0,
            reason: EndReason::Completed,
        },
        WaitSecs { secs: 20 },
    ];
    let judged = vec![
        Connect {
            from: 1,
            to: 2,
            secs: 30,
            settle_ms: 1000,
        },
        Connect {
            from: 1,
            to: 3,
            secs: 30,
            settle_ms: 2000,
        },
        Answer {
            who: 0,
            permit: true,
        },
        Wait { millis: 3000 },
        Connect {
            from: 2,
            to: 2,
            secs: 30,
            settle_ms: 2000,
        },
        Answer {
            who: 0,
            permit: false,
        },
        ForceEnd { k: 0 },
        WaitSecs { secs: 30 },
    ];
    let churn = vec![
        Connect {
            from: 0,
            to: 1,
            secs: 120,
            settle_ms: 2000,
        },
        BreakUpstream { who: 1 },
        BreakServerLink {},
        RestartSessionServer {},
        WaitSecs { secs: 5 },
        Connect {
            from: 2,
            to: 1,
            secs: 60,
            settle_ms: 3000,
        },
        Disallow { who: 3, name: 2 },
        Allow { who: 3, name: 2 },
        SetLink {
            who: 3,
            loss_percent: 30,
            jitter_ms: 40,
        },
        PowerOff { who: 1 },
        WaitSecs { secs: 60 },
        Finish {
            who: 0,
            reason: EndReason::Cancelled,
        },
    ];
    vec![
        seed(
            t,
            "list_permitted_session",
            WsSetup {
                seed: 1,
                terminals: 0,
                judges: [0; 5],
                lists: [0b10, 0b01, 0, 0, 0],
                placements: [0; 5],
                loss_percent: 0,
            },
            permitted,
            ws::run,
            |s| s.requests == 1 && s.sessions == 1 && s.records == 1,
        ),
        seed(
            t,
            "judged_by_users_on_a_lossy_network",
            WsSetup {
                seed: 2,
                terminals: 1,
                judges: [2, 1, 0, 0, 0],
                lists: [0, 0b001, 0b010, 0, 0],
                placements: [0, 1, 2, 0, 0],
                loss_percent: 10,
            },
            judged,
            ws::run,
            |s| s.requests >= 2 && s.sessions >= 1 && s.records == s.sessions,
        ),
        seed(
            t,
            "restarts_breaks_and_power_cuts",
            WsSetup {
                seed: 3,
                terminals: 2,
                judges: [0, 1, 0, 1, 0],
                lists: [0b1111; 5],
                placements: [3, 0, 1, 2, 0],
                loss_percent: 0,
            },
            churn,
            ws::run,
            |s| s.restarts == 1 && s.sessions >= 1 && s.records == s.sessions,
        ),
    ]
}
