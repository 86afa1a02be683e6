//! The reference model of who may reach whom, and the invariants a whole
//! simulated run must keep. Shared by the property test
//! (`tests/sim_model.rs`) and the `whole_system` fuzz target, so both check
//! exactly the same thing.
//!
//! Invariants ([`check`]):
//! - a session starts only for a request its requester made, permitted by
//!   the target (its list, or its user's answer) at some time between the
//!   request and the start;
//! - an address notification (`SessionReady`) reaches only the two parties
//!   of a started session, each told the other (with the other's key), and
//!   the requester only for a request it made to that target;
//! - every started session has exactly one durable record, and no record
//!   lacks a start.

use std::collections::BTreeMap;

use tryst_core::terminal::JudgePolicy;
use tryst_core::time::Instant;
use tryst_core::wire::{DecisionMode, Role, SessionId};

use super::world::{Sim, TermId, TerminalSpec};

/// How a terminal judges requests aimed at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judge {
    /// First embodiment: the server searches the list.
    ServerSearchesList,
    /// Second embodiment, the terminal answers from its list.
    TerminalList,
    /// Second embodiment, the terminal's user answers.
    TerminalAsks,
}

impl Judge {
    /// A terminal spec named `name` that judges this way.
    pub fn spec(self, name: &str) -> TerminalSpec {
        match self {
            Judge::ServerSearchesList => TerminalSpec::new(name),
            Judge::TerminalList => TerminalSpec::new(name).mode(DecisionMode::TerminalJudges),
            Judge::TerminalAsks => TerminalSpec::new(name)
                .mode(DecisionMode::TerminalJudges)
                .judge(JudgePolicy::Ask),
        }
    }
}

/// What the apps did: permission changes, the users' answers, the requests.
#[derive(Debug, Default)]
pub struct Model {
    /// (target, requester) -> permission changes in time order.
    pub list: BTreeMap<(String, String), Vec<(Instant, bool)>>,
    /// (target, requester) -> times the user answered Permit.
    pub permits: BTreeMap<(String, String), Vec<Instant>>,
    /// (requester, request ID) -> (target name, sent at).
    pub requests: BTreeMap<(String, u32), (String, Instant)>,
    /// Each terminal's way of judging.
    pub judges: BTreeMap<String, Judge>,
}

impl Model {
    /// `target` permits (or no longer permits) `requester` from `at` on.
    pub fn set(&mut self, at: Instant, target: &str, requester: &str, permitted: bool) {
        self.list
            .entry((target.to_string(), requester.to_string()))
            .or_default()
            .push((at, permitted));
    }

    /// `target`'s user answered Permit to `requester` at `at`.
    pub fn permit_answered(&mut self, at: Instant, target: &str, requester: String) {
        self.permits
            .entry((target.to_string(), requester))
            .or_default()
            .push(at);
    }

    /// Whether `target` permitted `requester` at some time in `[from, to]`.
    pub fn permitted_during(
        &self,
        target: &str,
        requester: &str,
        from: Instant,
        to: Instant,
    ) -> bool {
        let key = (target.to_string(), requester.to_string());
        match self.judges.get(target) {
            Some(Judge::TerminalAsks) => self
                .permits
                .get(&key)
                .is_some_and(|v| v.iter().any(|t| *t >= from && *t <= to)),
            _ => {
                let Some(changes) = self.list.get(&key) else {
                    return false;
                };
                let at_start = changes
                    .iter()
                    .rev()
                    .find(|(t, _)| *t <= from)
                    .is_some_and(|(_, p)| *p);
                at_start || changes.iter().any(|(t, p)| *p && *t > from && *t <= to)
            }
        }
    }
}

/// The name of terminal `i` in model runs.
pub fn name(i: usize) -> String {
    format!("t{i}")
}

/// Sessions a terminal was told of and has not seen end.
pub fn live_sessions(sim: &Sim, t: TermId) -> Vec<SessionId> {
    let ended: Vec<SessionId> = sim.sessions_ended(t).into_iter().map(|(s, _)| s).collect();
    sim.sessions_ready(t)
        .into_iter()
        .map(|r| r.session_id)
        .filter(|s| !ended.contains(s))
        .collect()
}

/// Checks every invariant of the module docs over terminals `0..n`; the
/// first one broken, in words.
pub fn check(sim: &Sim, model: &Model, n: usize) -> Result<(), String> {
    let store = sim.store();
    let started: BTreeMap<[u8; 16], _> = store.started().map(|s| (s.session_id.0, s)).collect();
    for s in started.values() {
        let asked = model
            .requests
            .iter()
            .any(|((requester, _), (target, sent))| {
                *requester == s.requester
                    && *target == s.target
                    && *sent <= s.start
                    && model.permitted_during(&s.target, &s.requester, *sent, s.start)
            });
        if !asked {
            return Err(format!(
                "session {:?} of {} -> {} started without a permitted request",
                s.session_id, s.requester, s.target
            ));
        }
    }
    for t in 0..n {
        let me = name(t);
        for ready in sim.sessions_ready(t) {
            let Some(s) = started.get(&ready.session_id.0) else {
                return Err(format!(
                    "{me} told of a session that never started: {ready:?}"
                ));
            };
            let parties_right = match ready.role {
                Role::Connecting => {
                    let request = model.requests.get(&(me.clone(), ready.request_id));
                    s.requester == me
                        && s.target == ready.peer_name.as_str()
                        && request.is_some_and(|(target, _)| *target == s.target)
                }
                Role::Connected => s.target == me && s.requester == ready.peer_name.as_str(),
            };
            if !parties_right {
                return Err(format!(
                    "{me} notified of {} -> {} as {:?} (request {}) without being that party",
                    s.requester, s.target, ready.role, ready.request_id
                ));
            }
            let key_right = sim
                .terminal_named(&ready.peer_name)
                .is_some_and(|peer| sim.terminal(peer).key == ready.peer_key);
            if !key_right {
                return Err(format!(
                    "{me} was given a wrong key for {}",
                    ready.peer_name
                ));
            }
        }
    }
    for s in started.values() {
        let records = store.records_of(&s.session_id).len();
        if records != 1 {
            return Err(format!("{records} records of {:?}", s.session_id));
        }
    }
    if let Some(r) = store
        .records()
        .find(|r| !started.contains_key(&r.session_id.0))
    {
        return Err(format!("record without a start: {r:?}"));
    }
    Ok(())
}
