//! The whole-system operations, declared once for the property test
//! (`tests/sim_model.rs`, which builds a proptest `Strategy` of them) and
//! the `whole_system` fuzz target (`fuzz/src/whole_system.rs`, which reads
//! them with `arbitrary`: the derive is behind this crate's `arbitrary`
//! feature), with the one [`apply`] that plays an operation on a [`Sim`]
//! and its reference [`Model`], and the one [`finish`] that runs the clock
//! past every deadline and checks the run.
//!
//! Fields are small integers taken modulo what they index (a terminal, a
//! started session), so any value is valid and a fuzzer's bytes stay short.

use std::time::Duration;

use tryst_core::wire::{EndReason, SessionId, Verdict};

use super::model::{check, live_sessions, name, Model};
use super::net::LinkConfig;
use super::world::Sim;

/// Longest duration a request asks for, and the server's bounds in these
/// runs (short, so the final run past every deadline stays cheap).
pub const MAX_ASKED_SECS: u32 = 240;
/// Longest total an extended session reaches.
pub const MAX_TOTAL_SECS: u64 = 480;

/// One thing that happens in the world. Terminal indices are taken modulo
/// the number of terminals `n`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum WorldOp {
    /// `from` asks for terminal `(from + to) % (n + 1)` (`n`: a name
    /// nobody has), for `secs % (MAX_ASKED_SECS + 1)` seconds, then
    /// `settle_ms` pass (so that an inquiry can reach a user who answers).
    Connect {
        /// The requester.
        from: u8,
        /// The target, relative to the requester.
        to: u8,
        /// The duration asked for.
        secs: u16,
        /// Time that passes after.
        settle_ms: u16,
    },
    /// `who` permits terminal `name`.
    Allow {
        /// The terminal whose list changes.
        who: u8,
        /// The terminal it permits.
        name: u8,
    },
    /// `who` no longer permits terminal `name`.
    Disallow {
        /// The terminal whose list changes.
        who: u8,
        /// The terminal it no longer permits.
        name: u8,
    },
    /// `who`'s user answers its oldest open inquiry.
    Answer {
        /// The terminal.
        who: u8,
        /// Permit (else deny).
        permit: bool,
    },
    /// `who` reports its first live session's transfer as running or not.
    Progress {
        /// The terminal.
        who: u8,
        /// Whether the transfer runs.
        active: bool,
    },
    /// `who` finishes its first live session.
    Finish {
        /// The terminal.
        who: u8,
        /// Why.
        reason: EndReason,
    },
    /// The operator ends the `k`-th started session.
    ForceEnd {
        /// Which started session.
        k: u8,
    },
    /// `who`'s stream to the session server breaks.
    BreakUpstream {
        /// The terminal.
        who: u8,
    },
    /// The servers' link breaks.
    BreakServerLink {},
    /// The session server restarts from its store.
    RestartSessionServer {},
    /// `who`'s access link gets this loss and duplication (percent % 51)
    /// and jitter.
    SetLink {
        /// The terminal.
        who: u8,
        /// Loss and duplication, percent.
        loss_percent: u8,
        /// Jitter, milliseconds.
        jitter_ms: u8,
    },
    /// `who` is switched off for good.
    PowerOff {
        /// The terminal.
        who: u8,
    },
    /// Time passes.
    Wait {
        /// How long, milliseconds.
        millis: u16,
    },
    /// A longer wait.
    WaitSecs {
        /// How long, seconds.
        secs: u8,
    },
}

/// Plays `op` on a world of `n` terminals and records in `model` what the
/// reference model needs (requests, permissions over time).
pub fn apply(sim: &mut Sim, model: &mut Model, n: usize, op: &WorldOp) {
    let now = sim.now();
    let term = |who: u8| usize::from(who) % n;
    // A terminal switched off takes no more calls from its app.
    let off = |sim: &Sim, who: u8| sim.terminal(term(who)).powered_off;
    let who = match *op {
        WorldOp::Connect { from: who, .. }
        | WorldOp::Allow { who, .. }
        | WorldOp::Disallow { who, .. }
        | WorldOp::Answer { who, .. }
        | WorldOp::Progress { who, .. }
        | WorldOp::Finish { who, .. }
        | WorldOp::BreakUpstream { who }
        | WorldOp::PowerOff { who } => Some(who),
        _ => None,
    };
    if who.is_some_and(|who| off(sim, who)) {
        if let WorldOp::Connect { settle_ms, .. } = *op {
            sim.run_for(Duration::from_millis(u64::from(settle_ms)));
        }
        return;
    }
    match *op {
        WorldOp::Connect {
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
        WorldOp::Allow { who, name: other } => {
            let (who, other) = (term(who), term(other));
            if sim.allow(who, &name(other)).is_ok() {
                model.set(now, &name(who), &name(other), true);
            }
        }
        WorldOp::Disallow { who, name: other } => {
            let (who, other) = (term(who), term(other));
            sim.disallow(who, &name(other));
            model.set(now, &name(who), &name(other), false);
        }
        WorldOp::Answer { who, permit } => {
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
        WorldOp::Progress { who, active } => {
            let who = term(who);
            if let Some(s) = live_sessions(sim, who).first() {
                let _ = sim.transfer_progress(who, s, 100, 100, active);
            }
        }
        WorldOp::Finish { who, reason } => {
            let who = term(who);
            if let Some(s) = live_sessions(sim, who).first() {
                let _ = sim.finish_session(who, s, reason);
            }
        }
        WorldOp::ForceEnd { k } => {
            let started: Vec<SessionId> = sim.store().started().map(|s| s.session_id).collect();
            if let Some(s) = started.get(usize::from(k)) {
                let _ = sim.end_session(s);
            }
        }
        WorldOp::BreakUpstream { who } => {
            sim.break_upstream(term(who));
        }
        WorldOp::BreakServerLink {} => {
            sim.break_server_link();
        }
        WorldOp::RestartSessionServer {} => sim.restart_session_server(),
        WorldOp::SetLink {
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
        WorldOp::PowerOff { who } => sim.power_off(term(who)),
        WorldOp::Wait { millis } => sim.run_for(Duration::from_millis(u64::from(millis))),
        WorldOp::WaitSecs { secs } => sim.run_for(Duration::from_secs(u64::from(secs))),
    }
}

/// The end of a run: the users stop every transfer, the clock runs past
/// every deadline (the longest session, the grace, the records), then the
/// run is checked against the model ([`check`]).
pub fn finish(sim: &mut Sim, model: &Model, n: usize) -> Result<(), String> {
    for t in 0..n {
        if sim.terminal(t).powered_off {
            continue;
        }
        for s in live_sessions(sim, t) {
            let _ = sim.transfer_progress(t, &s, 0, 0, false);
        }
    }
    sim.run_for(Duration::from_secs(MAX_TOTAL_SECS + 120));
    check(sim, model, n)
}
