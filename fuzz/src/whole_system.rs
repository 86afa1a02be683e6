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
use tryst_core::wire::{EndReason, SessionId, Verdict};
use tryst_tests::sim::model::{check, live_sessions, name, Judge, Model};
use tryst_tests::sim::nat::NatConfig;
use tryst_tests::sim::net::LinkConfig;
use tryst_tests::sim::world::{Placement, Sim, SimConfig};

use crate::fuzz_ops;
use crate::ops::read_input;

/// Longest duration a request asks for, and the server's bounds (short, so
/// the final run past every deadline stays cheap), as in the property test.
pub const MAX_ASKED_SECS: u32 = 240;
/// Longest total an extended session reaches.
pub const MAX_TOTAL_SECS: u64 = 480;
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

fuzz_ops! {
    /// One thing that happens in the world.
    pub enum WsOp {
        /// `from` asks for terminal `(from + to) % (n + 1)` (`n`: a name
        /// nobody has), then `settle_ms` pass.
        Connect { from: u8, to: u8, secs: u16, settle_ms: u16 },
        /// `who` permits terminal `name`.
        Allow { who: u8, name: u8 },
        /// `who` no longer permits terminal `name`.
        Disallow { who: u8, name: u8 },
        /// `who`'s user answers its oldest open inquiry.
        Answer { who: u8, permit: bool },
        /// `who` reports its first live session's transfer as running or not.
        Progress { who: u8, active: bool },
        /// `who` finishes its first live session.
        Finish { who: u8, reason: EndReason },
        /// The operator ends the `k`-th started session.
        ForceEnd { k: u8 },
        /// `who`'s stream to the session server breaks.
        BreakUpstream { who: u8 },
        /// The servers' link breaks.
        BreakServerLink {},
        /// The session server restarts from its store.
        RestartSessionServer {},
        /// `who`'s access link gets this loss and duplication (percent % 51)
        /// and jitter.
        SetLink { who: u8, loss_percent: u8, jitter_ms: u8 },
        /// `who` is switched off for good.
        PowerOff { who: u8 },
        /// Time passes.
        Wait { millis: u16 },
        /// A longer wait.
        WaitSecs { secs: u8 },
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
    // The users stop everything running, then the clock runs past every
    // deadline (the longest session, the grace, the records).
    for t in 0..n {
        for s in live_sessions(&sim, t) {
            let _ = sim.transfer_progress(t, &s, 0, 0, false);
        }
    }
    sim.run_for(Duration::from_secs(MAX_TOTAL_SECS + 120));
    if let Err(broken) = check(&sim, &model, n) {
        panic!("invariant broken: {broken}");
    }
    WsSummary {
        requests: u32::try_from(model.requests.len()).unwrap_or(u32::MAX),
        sessions: u32::try_from(sim.store().started().count()).unwrap_or(u32::MAX),
        records: u32::try_from(sim.store().records().count()).unwrap_or(u32::MAX),
        restarts: sim.stats().restarts,
    }
}

fn apply(sim: &mut Sim, model: &mut Model, n: usize, op: &WsOp) {
    let now = sim.now();
    let term = |who: u8| usize::from(who) % n;
    // A terminal switched off takes no more calls from its app.
    let off = |sim: &Sim, who: u8| sim.terminal(term(who)).powered_off;
    let who = match *op {
        WsOp::Connect { from: who, .. }
        | WsOp::Allow { who, .. }
        | WsOp::Disallow { who, .. }
        | WsOp::Answer { who, .. }
        | WsOp::Progress { who, .. }
        | WsOp::Finish { who, .. }
        | WsOp::BreakUpstream { who }
        | WsOp::PowerOff { who } => Some(who),
        _ => None,
    };
    if who.is_some_and(|who| off(sim, who)) {
        if let WsOp::Connect { settle_ms, .. } = *op {
            sim.run_for(Duration::from_millis(u64::from(settle_ms)));
        }
        return;
    }
    match *op {
        WsOp::Connect {
            from,
            to,
            secs,
            settle_ms,
        } => {
            let from = term(from);
            let to = (from + usize::from(to)) % (n + 1);
            let target = if to == n {
                "ghost".to_string()
            } else {
                name(to)
            };
            let secs = u32::from(secs) % (MAX_ASKED_SECS + 1);
            if let Ok(id) = sim.connect(from, &target, secs) {
                model.requests.insert((name(from), id), (target, now));
            }
            sim.run_for(Duration::from_millis(u64::from(settle_ms)));
        }
        WsOp::Allow { who, name: other } => {
            let (who, other) = (term(who), term(other));
            if sim.allow(who, &name(other)).is_ok() {
                model.set(now, &name(who), &name(other), true);
            }
        }
        WsOp::Disallow { who, name: other } => {
            let (who, other) = (term(who), term(other));
            sim.disallow(who, &name(other));
            model.set(now, &name(who), &name(other), false);
        }
        WsOp::Answer { who, permit } => {
            let who = term(who);
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
        WsOp::Progress { who, active } => {
            let who = term(who);
            if let Some(s) = live_sessions(sim, who).first() {
                let _ = sim.transfer_progress(who, s, 100, 100, active);
            }
        }
        WsOp::Finish { who, reason } => {
            let who = term(who);
            if let Some(s) = live_sessions(sim, who).first() {
                let _ = sim.finish_session(who, s, reason);
            }
        }
        WsOp::ForceEnd { k } => {
            let started: Vec<SessionId> = sim.store().started().map(|s| s.session_id).collect();
            if let Some(s) = started.get(usize::from(k)) {
                let _ = sim.end_session(s);
            }
        }
        WsOp::BreakUpstream { who } => {
            sim.break_upstream(term(who));
        }
        WsOp::BreakServerLink {} => {
            sim.break_server_link();
        }
        WsOp::RestartSessionServer {} => sim.restart_session_server(),
        WsOp::SetLink {
            who,
            loss_percent,
            jitter_ms,
        } => {
            let loss = f64::from(loss_percent % 51) / 100.0;
            let link = LinkConfig {
                latency: Duration::from_millis(10),
                jitter: Duration::from_millis(u64::from(jitter_ms)),
                loss,
                duplicate: loss,
                ..LinkConfig::clean()
            };
            let node = sim.terminal(term(who));
            match node.nat {
                Some(nat) => sim.net.set_nat_link(nat, link),
                None => {
                    let host = node.host;
                    sim.net.set_link(host, link);
                }
            }
        }
        WsOp::PowerOff { who } => sim.power_off(term(who)),
        WsOp::Wait { millis } => sim.run_for(Duration::from_millis(u64::from(millis))),
        WsOp::WaitSecs { secs } => sim.run_for(Duration::from_secs(u64::from(secs))),
    }
}
