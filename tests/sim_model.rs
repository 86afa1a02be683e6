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
use tryst_core::wire::EndReason;
use tryst_tests::sim::model::{name, Judge, Model};
use tryst_tests::sim::ops::{apply, finish, WorldOp, MAX_ASKED_SECS, MAX_TOTAL_SECS};
use tryst_tests::sim::seed::STACK_SIZE;
use tryst_tests::sim::world::{Sim, SimConfig};

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    lossy: bool,
    judges: Vec<Judge>,
    /// lists[t][r]: whether t permits r at the start.
    lists: Vec<Vec<bool>>,
    ops: Vec<WorldOp>,
}

fn judge() -> impl Strategy<Value = Judge> {
    prop_oneof![
        Just(Judge::ServerSearchesList),
        Just(Judge::TerminalList),
        Just(Judge::TerminalAsks)
    ]
}

/// The shared operations ([`WorldOp`]) as a proptest strategy: the kinds
/// and weights this test always drew (no link changes or power cuts),
/// every index in range.
fn op(n: usize) -> impl Strategy<Value = WorldOp> {
    let t = 0..n as u8;
    let reasons = [
        EndReason::Completed,
        EndReason::Cancelled,
        EndReason::PeerLost,
    ];
    prop_oneof![
        8 => (t.clone(), 1..=n as u8, 1..=MAX_ASKED_SECS as u16, 0u16..3000).prop_map(
            |(from, to, secs, settle_ms)| WorldOp::Connect { from, to, secs, settle_ms }
        ),
        2 => (t.clone(), t.clone()).prop_map(|(who, name)| WorldOp::Allow { who, name }),
        2 => (t.clone(), t.clone()).prop_map(|(who, name)| WorldOp::Disallow { who, name }),
        5 => (t.clone(), prop::bool::weighted(0.7))
            .prop_map(|(who, permit)| WorldOp::Answer { who, permit }),
        2 => (t.clone(), any::<bool>()).prop_map(|(who, active)| WorldOp::Progress { who, active }),
        2 => (t.clone(), 0usize..3)
            .prop_map(move |(who, r)| WorldOp::Finish { who, reason: reasons[r] }),
        1 => (0u8..8).prop_map(|k| WorldOp::ForceEnd { k }),
        1 => t.prop_map(|who| WorldOp::BreakUpstream { who }),
        1 => Just(WorldOp::BreakServerLink {}),
        1 => Just(WorldOp::RestartSessionServer {}),
        6 => (0u16..30_000).prop_map(|millis| WorldOp::Wait { millis }),
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
    let checked = finish(&mut sim, &model, n);
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
    checked.map_err(TestCaseError::fail)
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
