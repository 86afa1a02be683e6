//! Random operation sequences on the whole simulated system, checked
//! against a simple reference model of who may reach whom.
//!
//! Each case registers 2..=5 terminals with random decision modes, judge
//! policies and permission lists, then applies random operations (requests,
//! list edits, the app's answers, transfer progress, finishes, forced ends,
//! stream breaks, session-server restarts, time steps) on a clean or a lossy
//! network, and finally runs the clock past every possible deadline.
//!
//! Invariants:
//! - an address notification (`SessionReady`) reaches only the two parties
//!   of a started session, each told the other, and only if the target
//!   permitted the requester (its list, or its user's answer) at some time
//!   between the request and the session's start;
//! - every started session has exactly one durable record at the end, and
//!   no record lacks a start;
//! - no machine asks to be woken in the past right after `handle_timeout`
//!   (asserted by the simulator on every timeout);
//! - nothing panics.
//!
//! Cases: `PROPTEST_CASES` (default 24 here, so the debug suite stays quick;
//! the report runs thousands in release). Failures are kept in
//! `proptest-regressions/sim_model.txt` at the repository root.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use tryst_core::session_server::SessionConfig;
use tryst_core::time::Instant;
use tryst_core::wire::{EndReason, SessionId, Verdict};
use tryst_tests::sim::model::{check, live_sessions, name, Judge, Model};
use tryst_tests::sim::seed::STACK_SIZE;
use tryst_tests::sim::world::{Sim, SimConfig};

/// Longest duration a request asks for, and the server's bounds in the model
/// runs (short, so the final run to every deadline stays cheap).
const MAX_ASKED_SECS: u32 = 240;
const MAX_TOTAL_SECS: u64 = 480;

#[derive(Debug, Clone)]
enum Op {
    /// `from` asks for terminal `(from + to) % (n + 1)` (`n`: a name nobody
    /// has; never itself), then `settle_ms` pass (so that an inquiry can
    /// reach a user who answers).
    Connect {
        from: usize,
        to: usize,
        secs: u32,
        settle_ms: u32,
    },
    /// `who` permits terminal `name`.
    Allow { who: usize, name: usize },
    /// `who` no longer permits terminal `name`.
    Disallow { who: usize, name: usize },
    /// `who`'s user answers its oldest open inquiry.
    Answer { who: usize, permit: bool },
    /// `who` reports its first session's transfer as running or not.
    Progress { who: usize, active: bool },
    /// `who` finishes its first live session.
    Finish { who: usize, reason: u8 },
    /// The operator ends the `k`-th started session.
    ForceEnd { k: usize },
    /// `who`'s stream to the session server breaks.
    BreakUpstream { who: usize },
    /// The servers' link breaks.
    BreakServerLink,
    /// The session server restarts from its store.
    RestartSessionServer,
    /// Time passes.
    Wait { millis: u32 },
}

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    lossy: bool,
    judges: Vec<Judge>,
    /// lists[t][r]: whether t permits r at the start.
    lists: Vec<Vec<bool>>,
    ops: Vec<Op>,
}

fn judge() -> impl Strategy<Value = Judge> {
    prop_oneof![
        Just(Judge::ServerSearchesList),
        Just(Judge::TerminalList),
        Just(Judge::TerminalAsks)
    ]
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..n, 1..=n, 1..=MAX_ASKED_SECS, 0u32..3000).prop_map(|(from, to, secs, settle_ms)| {
            Op::Connect { from, to, secs, settle_ms }
        }),
        2 => (0..n, 0..n).prop_map(|(who, name)| Op::Allow { who, name }),
        2 => (0..n, 0..n).prop_map(|(who, name)| Op::Disallow { who, name }),
        5 => (0..n, prop::bool::weighted(0.7)).prop_map(|(who, permit)| Op::Answer { who, permit }),
        2 => (0..n, any::<bool>()).prop_map(|(who, active)| Op::Progress { who, active }),
        2 => (0..n, 0u8..3).prop_map(|(who, reason)| Op::Finish { who, reason }),
        1 => (0usize..8).prop_map(|k| Op::ForceEnd { k }),
        1 => (0..n).prop_map(|who| Op::BreakUpstream { who }),
        1 => Just(Op::BreakServerLink),
        1 => Just(Op::RestartSessionServer),
        6 => (0u32..30_000).prop_map(|millis| Op::Wait { millis }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (2usize..=5).prop_flat_map(|n| {
        (
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec(judge(), n),
            proptest::collection::vec(proptest::collection::vec(prop::bool::weighted(0.6), n), n),
            proptest::collection::vec(op(n), 1..40),
        )
            .prop_map(|(seed, lossy, judges, lists, ops)| Case {
                seed,
                lossy,
                judges,
                lists,
                ops,
            })
    })
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let n = case.judges.len();
    let mut config = if case.lossy {
        SimConfig::lossy(0.1)
    } else {
        SimConfig::default()
    };
    config.session = SessionConfig {
        max_duration: Duration::from_secs(u64::from(MAX_ASKED_SECS)),
        max_total_duration: Duration::from_secs(MAX_TOTAL_SECS),
        ..SessionConfig::default()
    };
    let mut sim = Sim::new(case.seed, config);
    let mut model = Model::default();
    for (t, judge) in case.judges.iter().enumerate() {
        let allowed: Vec<String> = (0..n).filter(|&r| case.lists[t][r]).map(name).collect();
        let refs: Vec<&str> = allowed.iter().map(String::as_str).collect();
        let spec = judge.spec(&name(t));
        sim.add_terminal(spec.allow(&refs));
        model.judges.insert(name(t), *judge);
        for r in &allowed {
            model.set(Instant::ZERO, &name(t), r, true);
        }
    }
    sim.run_until_all_online(Duration::from_secs(60));

    for op in &case.ops {
        apply(&mut sim, &mut model, n, op);
    }
    // The users stop everything running, then the clock runs past every
    // deadline (the longest session, the grace, the records).
    for t in 0..n {
        for s in live_sessions(&sim, t) {
            let _ = sim.transfer_progress(t, &s, 0, 0, false);
        }
    }
    sim.run_for(Duration::from_secs(MAX_TOTAL_SECS + 120));
    if std::env::var_os("TRYST_SIM_VERBOSE").is_some() {
        eprintln!(
            "{} terminals, {} ops, {} requests, {} sessions, {} restarts, lossy {}",
            n,
            case.ops.len(),
            model.requests.len(),
            sim.store().started().count(),
            sim.stats().restarts,
            case.lossy
        );
        let reasons: Vec<_> = sim
            .ss_log()
            .iter()
            .filter_map(|e| match e {
                tryst_core::session_server::SessionEvent::RequestDenied { reason, .. } => {
                    Some(*reason)
                }
                _ => None,
            })
            .collect();
        eprintln!("  denied: {reasons:?}");
    }
    check(&sim, &model, n).map_err(TestCaseError::fail)
}

fn apply(sim: &mut Sim, model: &mut Model, n: usize, op: &Op) {
    let now = sim.now();
    match *op {
        Op::Connect {
            from,
            to,
            secs,
            settle_ms,
        } => {
            let to = (from + to) % (n + 1);
            let target = if to == n {
                "ghost".to_string()
            } else {
                name(to)
            };
            if let Ok(id) = sim.connect(from, &target, secs) {
                model.requests.insert((name(from), id), (target, now));
            }
            sim.run_for(Duration::from_millis(u64::from(settle_ms)));
        }
        Op::Allow { who, name: other } => {
            if sim.allow(who, &name(other)).is_ok() {
                model.set(now, &name(who), &name(other), true);
            }
        }
        Op::Disallow { who, name: other } => {
            sim.disallow(who, &name(other));
            model.set(now, &name(who), &name(other), false);
        }
        Op::Answer { who, permit } => {
            let open = sim.open_inquiries(who).into_iter().next();
            if let Some((query, requester)) = open {
                let verdict = if permit {
                    Verdict::Permit
                } else {
                    Verdict::Deny
                };
                if sim.answer(who, query, verdict).is_ok() && permit {
                    model.permit_answered(now, &name(who), requester);
                }
            }
        }
        Op::Progress { who, active } => {
            if let Some(s) = live_sessions(sim, who).first() {
                let _ = sim.transfer_progress(who, s, 100, 100, active);
            }
        }
        Op::Finish { who, reason } => {
            if let Some(s) = live_sessions(sim, who).first() {
                let reason = [
                    EndReason::Completed,
                    EndReason::Cancelled,
                    EndReason::PeerLost,
                ][usize::from(reason)];
                let _ = sim.finish_session(who, s, reason);
            }
        }
        Op::ForceEnd { k } => {
            let started: Vec<SessionId> = sim.store().started().map(|s| s.session_id).collect();
            if let Some(s) = started.get(k) {
                let _ = sim.end_session(s);
            }
        }
        Op::BreakUpstream { who } => {
            sim.break_upstream(who);
        }
        Op::BreakServerLink => {
            sim.break_server_link();
        }
        Op::RestartSessionServer => sim.restart_session_server(),
        Op::Wait { millis } => sim.run_for(Duration::from_millis(u64::from(millis))),
    }
}

proptest! {
    #![proptest_config(Config {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(24),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../proptest-regressions/sim_model.txt"),
        ))),
        ..Config::default()
    })]

    #[test]
    fn random_operations_keep_addresses_private_and_records_exact(case in case()) {
        // On a thread with a large stack: endpoint terminals hold their
        // peer session slots inline.
        let result = std::thread::Builder::new()
            .stack_size(STACK_SIZE)
            .spawn(move || run_case(&case))
            .expect("spawn a test thread")
            .join();
        match result {
            Ok(r) => r?,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
