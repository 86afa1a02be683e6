//! The `whole_system` harness: the deterministic simulator of the
//! `tryst-tests` crate ([`tryst_tests::sim::world::Sim`]) with 2 to 5
//! terminals whose decision modes, judge policies, permission lists and
//! NATs come from the input, then an arbitrary list of operations
//! (requests, list edits, the users' answers, transfer progress, finishes,
//! forced ends, stream breaks, link loss changes, power cuts, session
//! server restarts, time steps), and finally the clock run past every
//! deadline. The checks are those of the simulator's property test
//! (`tests/sim_model.rs`), against the same reference model:
//! - a session starts only for a request its requester made, permitted by
//!   the target (its list, or its user's answer) at some time between the
//!   request and the start;
//! - an address notification reaches only the two parties of a started
//!   session, each told the other (with the other's key), and the
//!   requester only for a request it made to that target;
//! - every started session has exactly one durable record at the end, and
//!   no record lacks a start;
//! - nothing panics, and no machine asks to be woken in the past after
//!   `handle_timeout` (the simulator asserts it on every timeout).

use std::time::Duration;

use tryst_core::session_server::SessionConfig;
use tryst_core::time::Instant;
use tryst_tests::sim::model::{name, Judge, Model};
use tryst_tests::sim::nat::NatConfig;
use tryst_tests::sim::ops::{apply, finish};
use tryst_tests::sim::world::{Placement, Sim, SimConfig};

use crate::fuzz_ops;
use crate::ops::{read_input, SeedEncode, SeedWriter};

pub use tryst_tests::sim::ops::{MAX_ASKED_SECS, MAX_TOTAL_SECS};
/// Most operations one input runs (each may run the clock for a while).
pub const MAX_WORLD_OPS: usize = 48;

fuzz_ops! {
    /// The world: terminals, their judges, lists and NATs, the network.
    pub struct WsSetup {
        /// The simulator's seed (its network's and machines' generators).
        pub seed: u8,
        /// 2 + this % 4 terminals.
        pub terminals: u8,
        /// Per terminal: 0 the server searches its list, 1 it judges from its
        /// list, 2 its user answers.
        pub judges: [u8; 5],
        /// Per terminal: the terminals it permits at the start (bits).
        pub lists: [u8; 5],
        /// Per terminal: 0 home NAT, 1 symmetric NAT, 2 public, 3 home NAT
        /// with a 120 s timeout.
        pub placements: [u8; 5],
        /// Loss and duplication on the terminals' links, in percent (% 31).
        pub loss_percent: u8,
    }
}

/// One thing that happens in the world: the simulator's shared operation
/// ([`WorldOp`], declared once in `tryst_tests::sim::ops` for this target
/// and the property test), read with its `arbitrary` derive. The seeds
/// write it with the [`SeedEncode`] below, variant by variant in
/// declaration order.
pub use tryst_tests::sim::ops::WorldOp as WsOp;

impl SeedEncode for WsOp {
    fn encode(&self, w: &mut SeedWriter) {
        const VARIANTS: usize = 14;
        match self {
            WsOp::Connect {
                from,
                to,
                secs,
                settle_ms,
            } => {
                w.variant(0, VARIANTS);
                from.encode(w);
                to.encode(w);
                secs.encode(w);
                settle_ms.encode(w);
            }
            WsOp::Allow { who, name } => {
                w.variant(1, VARIANTS);
                who.encode(w);
                name.encode(w);
            }
            WsOp::Disallow { who, name } => {
                w.variant(2, VARIANTS);
                who.encode(w);
                name.encode(w);
            }
            WsOp::Answer { who, permit } => {
                w.variant(3, VARIANTS);
                who.encode(w);
                permit.encode(w);
            }
            WsOp::Progress { who, active } => {
                w.variant(4, VARIANTS);
                who.encode(w);
                active.encode(w);
            }
            WsOp::Finish { who, reason } => {
                w.variant(5, VARIANTS);
                who.encode(w);
                reason.encode(w);
            }
            WsOp::ForceEnd { k } => {
                w.variant(6, VARIANTS);
                k.encode(w);
            }
            WsOp::BreakUpstream { who } => {
                w.variant(7, VARIANTS);
                who.encode(w);
            }
            WsOp::BreakServerLink {} => w.variant(8, VARIANTS),
            WsOp::RestartSessionServer {} => w.variant(9, VARIANTS),
            WsOp::SetLink {
                who,
                loss_percent,
                jitter_ms,
            } => {
                w.variant(10, VARIANTS);
                who.encode(w);
                loss_percent.encode(w);
                jitter_ms.encode(w);
            }
            WsOp::PowerOff { who } => {
                w.variant(11, VARIANTS);
                who.encode(w);
            }
            WsOp::Wait { millis } => {
                w.variant(12, VARIANTS);
                millis.encode(w);
            }
            WsOp::WaitSecs { secs } => {
                w.variant(13, VARIANTS);
                secs.encode(w);
            }
        }
    }
}

/// What a run reached, for the seed corpus checks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WsSummary {
    /// Requests the terminals made.
    pub requests: u32,
    /// Sessions started.
    pub sessions: u32,
    /// Session records.
    pub records: u32,
    /// Session server restarts.
    pub restarts: u64,
}

/// Runs one input; returns what it reached.
pub fn run(data: &[u8]) -> WsSummary {
    let Some((setup, mut ops)) = read_input::<WsSetup, WsOp>(data) else {
        return WsSummary::default();
    };
    ops.truncate(MAX_WORLD_OPS);
    let n = 2 + usize::from(setup.terminals % 4);
    let loss = f64::from(setup.loss_percent % 31) / 100.0;
    let mut config = if loss > 0.0 {
        SimConfig::lossy(loss)
    } else {
        SimConfig::default()
    };
    config.session = SessionConfig {
        max_duration: Duration::from_secs(u64::from(MAX_ASKED_SECS)),
        max_total_duration: Duration::from_secs(MAX_TOTAL_SECS),
        ..SessionConfig::default()
    };
    let mut sim = Sim::new(u64::from(setup.seed), config);
    let mut model = Model::default();
    for t in 0..n {
        let judge = match setup.judges[t] % 3 {
            0 => Judge::ServerSearchesList,
            1 => Judge::TerminalList,
            _ => Judge::TerminalAsks,
        };
        let allowed: Vec<String> = (0..n)
            .filter(|&r| setup.lists[t] & (1 << r) != 0)
            .map(name)
            .collect();
        let refs: Vec<&str> = allowed.iter().map(String::as_str).collect();
        let spec = judge.spec(&name(t));
        let placement = match setup.placements[t] % 4 {
            0 => Placement::OwnNat(NatConfig::home()),
            1 => Placement::OwnNat(NatConfig::symmetric()),
            2 => Placement::Public,
            _ => Placement::OwnNat(NatConfig::home().with_timeout(Duration::from_secs(120))),
        };
        sim.add_terminal(spec.allow(&refs).placement(placement));
        model.judges.insert(name(t), judge);
        for r in &allowed {
            model.set(Instant::ZERO, &name(t), r, true);
        }
    }
    sim.run_until_all_online(Duration::from_secs(60));

    for op in &ops {
        apply(&mut sim, &mut model, n, op);
    }
    if let Err(broken) = finish(&mut sim, &model, n) {
        panic!("invariant broken: {broken}");
    }
    WsSummary {
        requests: u32::try_from(model.requests.len()).unwrap_or(u32::MAX),
        sessions: u32::try_from(sim.store().started().count()).unwrap_or(u32::MAX),
        records: u32::try_from(sim.store().records().count()).unwrap_or(u32::MAX),
        restarts: sim.stats().restarts,
    }
}
