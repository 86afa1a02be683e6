//! Connection requests (FIG. 3, 805) and their decision: trigger the target
//! (S503, 806), ask for its permission list (S503-S506) or its verdict
//! (S1201-S1204, S1101), ask for both addresses (S507, 809/810), and start
//! the session (S508-S510). Every failure, whatever its reason, is answered
//! with the same `Error{request_id, NotPermitted}` exactly
//! [`SessionConfig::deny_delay`](super::SessionConfig::deny_delay) after
//! the request arrived (S511).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use rand_core::{CryptoRng, RngCore};

use super::peer::{Forwarded, PeerBody, RemoteRequester, REMOTE_REQUESTER};
use super::sessions::Session;
use super::upstream::UpMsg;
use super::{
    DenyReason, SessionEvent, SessionFact, SessionServer, SessionStarted, Timer, COALESCE_WINDOW,
};
use crate::time::Instant;
use crate::wire::{
    AddressInquiry, AddressNotification, AddressReply, ConnectionRequest, DecisionMode, DeviceId,
    ErrorCode, ErrorReply, Message, Name, PermissionAnswer, PermissionInquiry, PermissionList,
    PermissionListRequest, PublicKey, Role, SessionId, SessionKey, TriggerOutcome, TriggerRequest,
    TriggerResult, Verdict,
};

/// Attempts at drawing an unused session ID.
const SESSION_ID_ATTEMPTS: usize = 8;

/// Where a request stands. Requests aimed at one target share what is in
/// flight to it (see [`TargetWork`]): the stage names the shared operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the target's `Poll` after trigger `op` (or a failed result).
    AwaitingPoll { op: u32 },
    /// Waiting for the answer to query `query_id` (a permission list request
    /// or an inquiry about this requester).
    Querying { query_id: u32 },
    /// Address inquiry `op` sent.
    Locating { op: u32 },
}

/// A request being decided.
pub(super) struct PendingRequest {
    requester: u64,
    requester_name: String,
    requester_key: PublicKey,
    request_id: u32,
    target: u64,
    target_name: String,
    target_key: PublicKey,
    mode: DecisionMode,
    duration_secs: u32,
    deny_at: Instant,
    /// When the request arrived (the set-up time starts here).
    received: Instant,
    stage: Stage,
    timer: Option<Instant>,
    /// A requester registered at another server.
    remote: Option<RemoteRequester>,
}

/// A uniform deny waiting for its time.
pub(super) struct Denial {
    channel: u64,
    request_id: u32,
    requester: String,
    target: String,
    reason: DenyReason,
    pub(super) timer: Option<Instant>,
}

/// What is in flight to one target on behalf of every request aimed at it:
/// however many requests wait, the target gets at most one trigger and one
/// permission list request per [`COALESCE_WINDOW`], and one inquiry per
/// requester name, so a burst of requests never floods its stream or the
/// link to the trigger server.
#[derive(Default)]
struct TargetWork {
    /// The trigger in flight, and when it was sent.
    trigger: Option<(u32, Instant)>,
    /// The permission list request in flight, and when it was sent.
    list: Option<(u32, Instant)>,
    /// Inquiries in flight, by requester name, and when each was sent.
    inquiries: BTreeMap<String, (u32, Instant)>,
    /// Requests pending for this target.
    pending: usize,
}

/// What a query ID asks of a target.
enum Query {
    /// Its permission list.
    List { target: u64 },
    /// Its verdict on one requester name.
    Inquiry { target: u64, requester: String },
}

/// What a trigger-server operation ID is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    /// A trigger shared by the requests aimed at `target`.
    Trigger { target: u64 },
    /// The address inquiry of request `key`.
    Locate { key: u64 },
    /// The requester's address for forwarded request `fwd`.
    Forward { fwd: u64 },
}

/// The request tables.
#[derive(Default)]
pub(super) struct Requests {
    /// Requests being decided, by internal key.
    pub pending: BTreeMap<u64, PendingRequest>,
    /// (target device, key): the requests aimed at each device.
    by_target: BTreeSet<(u64, u64)>,
    /// (requester device, key): the pending requests of each requester.
    by_requester: BTreeSet<(u64, u64)>,
    /// Pending requests per requester device.
    pending_of: BTreeMap<u64, usize>,
    /// (pending count, requester): the heaviest requester is the last.
    heaviest: BTreeSet<(usize, u64)>,
    /// What is in flight to each target with pending requests.
    targets: BTreeMap<u64, TargetWork>,
    /// Query ID -> what it asks.
    queries: BTreeMap<u32, Query>,
    /// Trigger server operation ID -> what it is for.
    ops: BTreeMap<u32, Operation>,
    /// (target, trigger op) of every trigger whose result is awaited.
    trigger_ops: BTreeSet<(u64, u32)>,
    /// (target, query ID) of every query whose answer is awaited.
    target_queries: BTreeSet<(u64, u32)>,
    /// Denials waiting for their time, by key.
    pub(super) denials: BTreeMap<u64, Denial>,
    next_key: u64,
    next_query: u32,
}

impl Requests {
    pub(super) fn fresh_key(&mut self) -> u64 {
        self.next_key = self.next_key.wrapping_add(1);
        self.next_key
    }

    fn fresh_query(&mut self) -> u32 {
        loop {
            self.next_query = self.next_query.wrapping_add(1).max(1);
            if !self.queries.contains_key(&self.next_query) {
                return self.next_query;
            }
        }
    }

    /// Notes a query sent to `target`.
    fn add_query(&mut self, query_id: u32, query: Query) {
        let target = match &query {
            Query::List { target } | Query::Inquiry { target, .. } => *target,
        };
        self.target_queries.insert((target, query_id));
        self.queries.insert(query_id, query);
    }

    /// A trigger's result came (or no longer matters).
    fn end_trigger(&mut self, target: u64, op: u32) {
        self.ops.remove(&op);
        self.trigger_ops.remove(&(target, op));
    }

    /// Whether a trigger-server operation is still wanted (a queued one
    /// whose requests were all decided is not sent).
    pub(super) fn wants_operation(&self, op: u32) -> bool {
        self.ops.contains_key(&op)
    }

    /// Denials waiting for their time.
    pub(super) fn denial_count(&self) -> usize {
        self.denials.len()
    }

    /// Pending requests of `requester`.
    fn pending_count(&self, requester: u64) -> usize {
        self.pending_of.get(&requester).copied().unwrap_or(0)
    }

    /// Counts a pending request of `requester` in or out.
    fn recount(&mut self, requester: u64, up: bool) {
        let old = self.pending_count(requester);
        let new = if up { old + 1 } else { old.saturating_sub(1) };
        self.heaviest.remove(&(old, requester));
        if new == 0 {
            self.pending_of.remove(&requester);
        } else {
            self.pending_of.insert(requester, new);
            self.heaviest.insert((new, requester));
        }
    }

    /// The newest pending request of the requester holding the most, if it
    /// holds more than `than` (plus the one it would take).
    fn evictable_globally(&self, than: usize) -> Option<u64> {
        let &(count, heavy) = self.heaviest.last()?;
        if count <= than + 1 {
            return None;
        }
        self.by_requester
            .range((heavy, 0)..=(heavy, u64::MAX))
            .next_back()
            .map(|&(_, key)| key)
    }

    /// The newest pending request, at `target`, of the requester holding
    /// the most there, if it holds more than `requester` does (plus one).
    fn evictable_at(&self, target: u64, requester: u64) -> Option<u64> {
        let mut counts: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
        for &(_, key) in self.by_target.range((target, 0)..=(target, u64::MAX)) {
            if let Some(r) = self.pending.get(&key) {
                let entry = counts.entry(r.requester).or_insert((0, key));
                entry.0 += 1;
                entry.1 = entry.1.max(key);
            }
        }
        let mine = counts.get(&requester).map_or(0, |c| c.0);
        let (_, &(count, newest)) = counts.iter().max_by_key(|(_, c)| c.0)?;
        (count > mine + 1).then_some(newest)
    }

    /// The pending requests aimed at `target` now at `stage`.
    fn at_stage(&self, target: u64, stage: Stage) -> Vec<u64> {
        self.by_target
            .range((target, 0)..=(target, u64::MAX))
            .map(|&(_, key)| key)
            .filter(|key| self.pending.get(key).is_some_and(|r| r.stage == stage))
            .collect()
    }
}

/// Whether something sent at `sent` may still be shared at `now`.
fn fresh(sent: Instant, now: Instant) -> bool {
    now < sent + COALESCE_WINDOW
}

impl<R: RngCore + CryptoRng> SessionServer<R> {
    /// A `ConnectionRequest` opened on `device`'s channel (805).
    pub(super) fn on_connection_request(
        &mut self,
        now: Instant,
        device: u64,
        req: &ConnectionRequest<'_>,
    ) {
        let deny_at = now + self.config.deny_delay;
        let Some(channel) = self.reg.channels.get_mut(&device) else {
            return;
        };
        if channel.outstanding >= super::MAX_OUTSTANDING_PER_CHANNEL {
            self.out.counters.requests_dropped += 1;
            return;
        }
        channel.outstanding += 1;
        let requester_name = channel.name.clone();
        let requester_key = channel.key;
        // Names are compared in their canonical form (the channel's is).
        let target_canonical = crate::names::canonical(req.target.as_str()).ok();
        let well_formed = channel.live
            && !channel.decoy
            && crate::names::canonical(req.requester.as_str()).is_ok_and(|r| r == requester_name);
        let deny = |reason| Denial {
            channel: device,
            request_id: req.request_id,
            requester: requester_name.clone(),
            target: req.target.as_str().to_string(),
            reason,
            timer: None,
        };
        if !well_formed {
            self.schedule_denial(now, deny_at, deny(DenyReason::BadRequester));
            return;
        }
        let Some(target_name) = target_canonical else {
            self.schedule_denial(now, deny_at, deny(DenyReason::UnknownTarget));
            return;
        };
        if self.request_limiter.check(now, &requester_key).is_err() {
            self.schedule_denial(now, deny_at, deny(DenyReason::RateLimited));
            return;
        }
        let Some(target_key) = self.registry.key_of(req.target) else {
            self.schedule_denial(now, deny_at, deny(DenyReason::UnknownTarget));
            return;
        };
        if target_name == requester_name {
            self.schedule_denial(now, deny_at, deny(DenyReason::SelfTarget));
            return;
        }
        let target = self.reg.live.get(&target_name).copied();
        let Some((target, mode)) =
            target.and_then(|t| self.reg.channels.get(&t).map(|c| (t, c.mode)))
        else {
            // Perhaps registered at another server of the cluster; the
            // requester hears the same denial at the same time if not.
            let forwarded = Forwarded {
                requester: device,
                requester_name: requester_name.clone(),
                requester_key,
                request_id: req.request_id,
                target: target_name,
                duration_secs: self.config.granted_duration_secs(req.duration_secs),
                denial: 0,
            };
            if !self.forward_request(now, deny_at, forwarded, deny(DenyReason::NoAnswer)) {
                self.schedule_denial(now, deny_at, deny(DenyReason::TargetOffline));
            }
            return;
        };
        if !self.make_room_for_request(now, device, target) {
            self.schedule_denial(now, deny_at, deny(DenyReason::Overloaded));
            return;
        }
        let pending = PendingRequest {
            requester: device,
            requester_name,
            requester_key,
            request_id: req.request_id,
            target,
            target_name,
            target_key,
            mode,
            duration_secs: self.config.granted_duration_secs(req.duration_secs),
            deny_at,
            received: now,
            stage: Stage::AwaitingPoll { op: 0 },
            timer: None,
            remote: None,
        };
        self.admit_request(now, pending);
    }

    /// A request whose target is live here: its decision timer, its first
    /// stage (joining what is in flight to the target), its table entries.
    fn admit_request(&mut self, now: Instant, mut pending: PendingRequest) {
        let (device, target) = (pending.requester, pending.target);
        let key = self.requests.fresh_key();
        let decide_by = now + self.config.effective_decision_timeout();
        self.timers
            .arm(Timer::Request(key), &mut pending.timer, decide_by);
        pending.stage = self.join_or_trigger(now, &pending);
        self.requests.pending.insert(key, pending);
        self.requests.by_target.insert((target, key));
        self.requests.by_requester.insert((device, key));
        self.requests.recount(device, true);
        self.requests.targets.entry(target).or_default().pending += 1;
    }

    /// A request from a requester at another server (its server located
    /// it): decided here if the target is live here, ignored otherwise
    /// (another server may hold it; the requester's server denies).
    pub(super) fn on_peer_request(
        &mut self,
        now: Instant,
        remote: RemoteRequester,
        requester_name: &str,
        requester_key: PublicKey,
        target_name: &str,
        duration_secs: u32,
    ) {
        let Some(target) = self.reg.live.get(target_name).copied() else {
            return;
        };
        let Some(mode) = self.reg.channels.get(&target).map(|c| c.mode) else {
            return;
        };
        let (Ok(requester), Ok(target_wire)) = (Name::new(requester_name), Name::new(target_name))
        else {
            return;
        };
        // The requester's binding, as this server holds it, must agree.
        if self
            .registry
            .key_of(requester)
            .is_some_and(|k| k != requester_key)
            || requester_name == target_name
        {
            self.out.counters.ignored_messages += 1;
            return;
        }
        let Some(target_key) = self.registry.key_of(target_wire) else {
            return;
        };
        if !self.make_room_for_request(now, REMOTE_REQUESTER, target) {
            return;
        }
        let pending = PendingRequest {
            requester: REMOTE_REQUESTER,
            requester_name: requester_name.to_string(),
            requester_key,
            request_id: 0,
            target,
            target_name: target_name.to_string(),
            target_key,
            mode,
            duration_secs: self.config.granted_duration_secs(duration_secs),
            deny_at: now + self.config.deny_delay,
            received: now,
            stage: Stage::AwaitingPoll { op: 0 },
            timer: None,
            remote: Some(remote),
        };
        self.admit_request(now, pending);
    }

    /// Asks the trigger server for the address of `device`, the requester
    /// of forwarded request `fwd`.
    pub(super) fn locate_for_forward(&mut self, now: Instant, fwd: u64, device: u64) {
        let op = self.fresh_op();
        self.requests.ops.insert(op, Operation::Forward { fwd });
        self.send_upstream(
            now,
            UpMsg::Address(AddressInquiry {
                op_id: op,
                first: DeviceId(device),
                second: DeviceId(device),
            }),
        );
    }

    /// Room for one more pending request of `requester` aimed at `target`:
    /// when the target's share or the whole table is full, the requester
    /// holding the most slots gives up its newest one (denied at its deny
    /// time, like any other failure), unless that is this requester itself.
    /// So a flood from one requester only ever pushes out its own requests.
    fn make_room_for_request(&mut self, now: Instant, requester: u64, target: u64) -> bool {
        let at_target = self.requests.targets.get(&target).map_or(0, |w| w.pending);
        if at_target >= self.config.limits.max_pending_per_target.max(1) {
            match self.requests.evictable_at(target, requester) {
                Some(key) => self.fail_request(now, key, DenyReason::Overloaded),
                None => return false,
            }
        }
        if self.requests.pending.len() >= self.config.limits.max_pending_requests.max(1) {
            let mine = self.requests.pending_count(requester);
            match self.requests.evictable_globally(mine) {
                Some(key) => self.fail_request(now, key, DenyReason::Overloaded),
                None => return false,
            }
        }
        true
    }

    /// The stage a new request starts at: it joins what is in flight to its
    /// target (a query that will decide it, or a trigger), or a new trigger
    /// is sent for it.
    fn join_or_trigger(&mut self, now: Instant, req: &PendingRequest) -> Stage {
        let work = self.requests.targets.entry(req.target).or_default();
        let query = match req.mode {
            DecisionMode::PermissionList => work.list,
            DecisionMode::TerminalJudges => work.inquiries.get(&req.requester_name).copied(),
        };
        if let Some((query_id, _)) = query.filter(|&(_, sent)| fresh(sent, now)) {
            return Stage::Querying { query_id };
        }
        if let Some((op, _)) = work.trigger.filter(|&(_, sent)| fresh(sent, now)) {
            return Stage::AwaitingPoll { op };
        }
        let op = self.fresh_op();
        if let Some(work) = self.requests.targets.get_mut(&req.target) {
            // A stale trigger's requests still take its result.
            work.trigger = Some((op, now));
        }
        self.requests
            .ops
            .insert(op, Operation::Trigger { target: req.target });
        self.requests.trigger_ops.insert((req.target, op));
        self.send_upstream(
            now,
            UpMsg::Trigger(TriggerRequest {
                op_id: op,
                device_id: DeviceId(req.target),
            }),
        );
        Stage::AwaitingPoll { op }
    }

    /// Queues a uniform deny for `deny_at` (or sends it if that is now).
    /// Denials have no table-wide bound of their own: each holds one of
    /// its requester's [`super::MAX_OUTSTANDING_PER_CHANNEL`] slots, so
    /// their number is charged to registered identities, and no load ever
    /// turns one into silence.
    fn schedule_denial(&mut self, now: Instant, deny_at: Instant, denial: Denial) {
        self.schedule_denial_keyed(now, deny_at, denial);
    }

    /// [`Self::schedule_denial`]; the armed denial's key (`None`: sent now).
    pub(super) fn schedule_denial_keyed(
        &mut self,
        now: Instant,
        deny_at: Instant,
        mut denial: Denial,
    ) -> Option<u64> {
        if deny_at <= now {
            self.send_denial(denial);
            return None;
        }
        let key = self.requests.fresh_key();
        self.timers
            .arm(Timer::Denial(key), &mut denial.timer, deny_at);
        self.requests.denials.insert(key, denial);
        Some(key)
    }

    /// A denial's time came.
    pub(super) fn denial_due(&mut self, key: u64) {
        if let Some(denial) = self.requests.denials.remove(&key) {
            self.forget_forwarded(key);
            self.send_denial(denial);
        }
    }

    /// Sends the uniform `Error{request_id, NotPermitted}`: the same bytes
    /// whatever the reason.
    fn send_denial(&mut self, denial: Denial) {
        self.release_outstanding(denial.channel);
        self.send_to_device(
            denial.channel,
            &Message::Error(ErrorReply {
                request_id: denial.request_id,
                code: ErrorCode::NotPermitted,
            }),
        );
        self.out.event(SessionEvent::RequestDenied {
            requester: denial.requester,
            target: denial.target,
            request_id: denial.request_id,
            reason: denial.reason,
        });
    }

    /// One fewer request outstanding on `channel`.
    pub(super) fn release_outstanding(&mut self, channel: u64) {
        if let Some(c) = self.reg.channels.get_mut(&channel) {
            c.outstanding = c.outstanding.saturating_sub(1);
        }
    }

    /// Takes a request out of every table; what was in flight for its
    /// target alone is no longer wanted.
    fn take_request(&mut self, key: u64) -> Option<PendingRequest> {
        let mut req = self.requests.pending.remove(&key)?;
        self.timers.disarm(Timer::Request(key), &mut req.timer);
        self.requests.by_target.remove(&(req.target, key));
        self.requests.by_requester.remove(&(req.requester, key));
        self.requests.recount(req.requester, false);
        if let Stage::Locating { op } = req.stage {
            self.requests.ops.remove(&op);
        }
        let idle = match self.requests.targets.get_mut(&req.target) {
            Some(work) => {
                work.pending = work.pending.saturating_sub(1);
                work.pending == 0
            }
            None => false,
        };
        if idle {
            self.forget_target_work(req.target);
        }
        Some(req)
    }

    /// No request waits on `target` any more: its trigger, list request and
    /// inquiries are no longer wanted (late answers are stale).
    fn forget_target_work(&mut self, target: u64) {
        let Some(work) = self.requests.targets.remove(&target) else {
            return;
        };
        drop(work);
        let triggers: Vec<(u64, u32)> = self
            .requests
            .trigger_ops
            .range((target, 0)..=(target, u32::MAX))
            .copied()
            .collect();
        for (_, op) in triggers {
            self.requests.end_trigger(target, op);
        }
        let queries: Vec<(u64, u32)> = self
            .requests
            .target_queries
            .range((target, 0)..=(target, u32::MAX))
            .copied()
            .collect();
        for pair in queries {
            self.requests.target_queries.remove(&pair);
            self.requests.queries.remove(&pair.1);
        }
    }

    /// The request failed: its deny goes out at its deny time.
    fn fail_request(&mut self, now: Instant, key: u64, reason: DenyReason) {
        let Some(req) = self.take_request(key) else {
            return;
        };
        let denial = Denial {
            channel: req.requester,
            request_id: req.request_id,
            requester: req.requester_name,
            target: req.target_name,
            reason,
            timer: None,
        };
        self.schedule_denial(now, req.deny_at, denial);
    }

    /// Fails every request in `keys`.
    fn fail_all(&mut self, now: Instant, keys: Vec<u64>, reason: DenyReason) {
        for key in keys {
            self.fail_request(now, key, reason);
        }
    }

    /// The decision deadline passed with the request undecided.
    pub(super) fn request_deadline(&mut self, now: Instant, key: u64) {
        if let Some(req) = self.requests.pending.get_mut(&key) {
            req.timer = None;
        }
        self.fail_request(now, key, DenyReason::NoAnswer);
    }

    /// The target's channel went away: its requests fail.
    pub(super) fn fail_requests_aimed_at(&mut self, device: u64) {
        let keys: Vec<u64> = self
            .requests
            .by_target
            .range((device, 0)..=(device, u64::MAX))
            .map(|&(_, k)| k)
            .collect();
        let now = self.clock.latest();
        self.fail_all(now, keys, DenyReason::TargetGone);
    }

    /// The trigger server says what became of a trigger.
    pub(super) fn on_trigger_result(&mut self, now: Instant, result: &TriggerResult) {
        if self.is_end_trigger(result.op_id) {
            self.on_end_trigger_result(now, result.op_id, result.outcome);
            return;
        }
        let Some(&Operation::Trigger { target }) = self.requests.ops.get(&result.op_id) else {
            self.out.counters.stale_answers += 1;
            return;
        };
        self.requests.end_trigger(target, result.op_id);
        let reason = match result.outcome {
            // The target's Poll does the rest.
            TriggerOutcome::Delivered => return,
            TriggerOutcome::Offline => DenyReason::TriggerOffline,
            TriggerOutcome::Unacknowledged => DenyReason::TriggerUnacknowledged,
        };
        if let Some(work) = self.requests.targets.get_mut(&target) {
            if work.trigger.is_some_and(|(op, _)| op == result.op_id) {
                work.trigger = None;
            }
        }
        let waiting = self
            .requests
            .at_stage(target, Stage::AwaitingPoll { op: result.op_id });
        self.fail_all(now, waiting, reason);
    }

    /// A `Poll` from `device`: ask it about every request waiting for it,
    /// once for all of them (S503 permission list request), or once per
    /// requester name (S1202 inquiry).
    pub(super) fn on_poll(&mut self, now: Instant, device: u64) {
        let waiting: Vec<u64> = self
            .requests
            .by_target
            .range((device, 0)..=(device, u64::MAX))
            .map(|&(_, k)| k)
            .filter(|k| {
                self.requests
                    .pending
                    .get(k)
                    .is_some_and(|r| matches!(r.stage, Stage::AwaitingPoll { .. }))
            })
            .collect();
        if waiting.is_empty() {
            return;
        }
        if let Some(work) = self.requests.targets.get_mut(&device) {
            if let Some((op, _)) = work.trigger.take() {
                // Awake: a late result of this trigger changes nothing.
                self.requests.end_trigger(device, op);
            }
        }
        for key in waiting {
            let Some((mode, requester)) = self
                .requests
                .pending
                .get(&key)
                .map(|r| (r.mode, r.requester_name.clone()))
            else {
                continue;
            };
            let query_id = match mode {
                DecisionMode::PermissionList => self.list_query(now, device),
                DecisionMode::TerminalJudges => self.inquiry(now, device, &requester),
            };
            if let (Some(query_id), Some(req)) = (query_id, self.requests.pending.get_mut(&key)) {
                req.stage = Stage::Querying { query_id };
            }
        }
    }

    /// The permission list request in flight to `target`, or a new one.
    fn list_query(&mut self, now: Instant, target: u64) -> Option<u32> {
        let work = self.requests.targets.get(&target)?;
        if let Some((query_id, _)) = work.list.filter(|&(_, sent)| fresh(sent, now)) {
            return Some(query_id);
        }
        let query_id = self.requests.fresh_query();
        let work = self.requests.targets.get_mut(&target)?;
        // A stale list request's requests still take its answer.
        work.list = Some((query_id, now));
        self.requests.add_query(query_id, Query::List { target });
        self.send_to_device(
            target,
            &Message::PermissionListRequest(PermissionListRequest { query_id }),
        );
        Some(query_id)
    }

    /// The inquiry about `requester` in flight to `target`, or a new one.
    fn inquiry(&mut self, now: Instant, target: u64, requester: &str) -> Option<u32> {
        let name = Name::new(requester).ok()?;
        let work = self.requests.targets.get_mut(&target)?;
        if let Some(&(query_id, sent)) = work.inquiries.get(requester) {
            if fresh(sent, now) {
                return Some(query_id);
            }
        }
        let query_id = self.requests.fresh_query();
        let work = self.requests.targets.get_mut(&target)?;
        work.inquiries
            .insert(requester.to_string(), (query_id, now));
        self.requests.add_query(
            query_id,
            Query::Inquiry {
                target,
                requester: requester.to_string(),
            },
        );
        self.send_to_device(
            target,
            &Message::PermissionInquiry(PermissionInquiry {
                query_id,
                requester: name,
            }),
        );
        Some(query_id)
    }

    /// The requests that query `query_id`, answered by `device`, decides,
    /// and what it asked; `None` (counted) for a stale or foreign answer.
    fn answered_query(&mut self, device: u64, query_id: u32) -> Option<(Vec<u64>, bool)> {
        let is_list = match self.requests.queries.get(&query_id) {
            Some(Query::List { target }) if *target == device => true,
            Some(Query::Inquiry { target, .. }) if *target == device => false,
            _ => {
                self.out.counters.stale_answers += 1;
                return None;
            }
        };
        let query = self.requests.queries.remove(&query_id);
        self.requests.target_queries.remove(&(device, query_id));
        if let Some(work) = self.requests.targets.get_mut(&device) {
            match query {
                Some(Query::List { .. }) if work.list.is_some_and(|(q, _)| q == query_id) => {
                    work.list = None;
                }
                Some(Query::Inquiry { requester, .. })
                    if work
                        .inquiries
                        .get(&requester)
                        .is_some_and(|&(q, _)| q == query_id) =>
                {
                    work.inquiries.remove(&requester);
                }
                _ => {}
            }
        }
        let keys = self.requests.at_stage(device, Stage::Querying { query_id });
        Some((keys, is_list))
    }

    /// The target's permission list (S704, 808): search it for each
    /// waiting requester's name (S505).
    pub(super) fn on_permission_list(
        &mut self,
        now: Instant,
        device: u64,
        list: &PermissionList<'_>,
    ) {
        let Some((keys, is_list)) = self.answered_query(device, list.query_id) else {
            return;
        };
        if !is_list {
            self.fail_all(now, keys, DenyReason::WrongAnswerKind);
            return;
        }
        for key in keys {
            let listed = self.requests.pending.get(&key).is_some_and(|r| {
                list.names.iter().any(|entry| {
                    crate::names::canonical(entry.as_str())
                        .is_ok_and(|entry| entry == r.requester_name)
                })
            });
            if listed {
                self.locate(now, key);
            } else {
                self.fail_request(now, key, DenyReason::NotInList);
            }
        }
    }

    /// The target's verdict on one requester (S1203/S1204, S1101), for
    /// each of its waiting requests.
    pub(super) fn on_permission_answer(
        &mut self,
        now: Instant,
        device: u64,
        answer: &PermissionAnswer,
    ) {
        let Some((keys, is_list)) = self.answered_query(device, answer.query_id) else {
            return;
        };
        if is_list {
            self.fail_all(now, keys, DenyReason::WrongAnswerKind);
            return;
        }
        match answer.verdict {
            Verdict::Permit => {
                for key in keys {
                    self.locate(now, key);
                }
            }
            Verdict::Deny => self.fail_all(now, keys, DenyReason::Refused),
        }
    }

    /// Permitted: ask the trigger server for both addresses (S507, 809).
    fn locate(&mut self, now: Instant, key: u64) {
        let op = self.fresh_op();
        let Some(req) = self.requests.pending.get_mut(&key) else {
            return;
        };
        req.stage = Stage::Locating { op };
        // A remote requester's address came with its request.
        let first = if req.remote.is_some() {
            req.target
        } else {
            req.requester
        };
        let inquiry = AddressInquiry {
            op_id: op,
            first: DeviceId(first),
            second: DeviceId(req.target),
        };
        self.requests.ops.insert(op, Operation::Locate { key });
        self.send_upstream(now, UpMsg::Address(inquiry));
    }

    /// The addresses (S605/S606, 810): both present starts the session.
    pub(super) fn on_address_reply(&mut self, now: Instant, reply: &AddressReply) {
        if let Some(&Operation::Forward { fwd }) = self.requests.ops.get(&reply.op_id) {
            self.requests.ops.remove(&reply.op_id);
            self.forward_located(fwd, reply.first);
            return;
        }
        let key = match self.requests.ops.get(&reply.op_id) {
            Some(&Operation::Locate { key })
                if self
                    .requests
                    .pending
                    .get(&key)
                    .is_some_and(|r| r.stage == Stage::Locating { op: reply.op_id }) =>
            {
                key
            }
            _ => {
                self.out.counters.stale_answers += 1;
                return;
            }
        };
        let remote_addr = self
            .requests
            .pending
            .get(&key)
            .and_then(|r| r.remote)
            .map(|r| r.addr);
        match (remote_addr.or(reply.first), reply.second) {
            (Some(requester_addr), Some(target_addr)) => {
                self.start_session(now, key, requester_addr, target_addr)
            }
            _ => self.fail_request(now, key, DenyReason::AddressMissing),
        }
    }

    /// S508-S510: a fresh session ID, key and bounded duration; each side is
    /// told the other's address, name and key.
    fn start_session(
        &mut self,
        now: Instant,
        key: u64,
        requester_addr: core::net::SocketAddr,
        target_addr: core::net::SocketAddr,
    ) {
        if self.sessions.len() >= self.config.limits.max_sessions {
            self.fail_request(now, key, DenyReason::Overloaded);
            return;
        }
        let mut id = [0u8; 16];
        let fresh = (0..SESSION_ID_ATTEMPTS).any(|_| {
            self.rng.fill_bytes(&mut id);
            !self.sessions.contains_key(&id)
        });
        if !fresh {
            self.fail_request(now, key, DenyReason::Overloaded);
            return;
        }
        let Some(req) = self.take_request(key) else {
            return;
        };
        if req.remote.is_none() {
            self.release_outstanding(req.requester);
        }
        let mut session_key = SessionKey([0; 32]);
        self.rng.fill_bytes(&mut session_key.0);
        let session_id = SessionId(id);
        let started = SessionStarted {
            session_id,
            requester: req.requester_name.clone(),
            requester_key: req.requester_key,
            target: req.target_name.clone(),
            target_key: req.target_key,
            start: now,
            duration_secs: req.duration_secs,
        };
        let mut session = Session::from_started(&started);
        session.remote = req.remote.map(|r| (super::Party::Requester, r.server));
        self.insert_session(session, id);
        self.out.fact(SessionFact::SessionStarted(started));
        self.out.event(SessionEvent::SessionSetUp {
            session_id,
            took: now.saturating_duration_since(req.received),
        });
        let max_total = self.config.max_total_duration;
        let relay_for = |role| {
            self.relay
                .as_ref()
                .map(|r| r.allocation(now, session_id, role, req.duration_secs, max_total))
        };
        let (target_relay, requester_relay) =
            (relay_for(Role::Connected), relay_for(Role::Connecting));
        if let Ok(requester_name) = Name::new(&req.requester_name) {
            // S509: the target learns the requester's address.
            self.send_to_device(
                req.target,
                &Message::AddressNotification(AddressNotification {
                    request_id: 0,
                    session_id,
                    role: Role::Connected,
                    duration_secs: req.duration_secs,
                    session_key,
                    peer_key: req.requester_key,
                    peer_addr: requester_addr,
                    peer_name: requester_name,
                    relay: target_relay,
                }),
            );
        }
        if let Ok(target_name) = Name::new(&req.target_name) {
            // S510: the requester learns the target's address (through
            // its server if it is registered at another).
            let notification = Message::AddressNotification(AddressNotification {
                request_id: req.request_id,
                session_id,
                role: Role::Connecting,
                duration_secs: req.duration_secs,
                session_key,
                peer_key: req.target_key,
                peer_addr: target_addr,
                peer_name: target_name,
                relay: requester_relay,
            });
            match req.remote {
                Some(remote) => {
                    if let Some(notification) = self.plain(&notification) {
                        self.send_peer(
                            Some(remote.server),
                            PeerBody::Granted {
                                fwd: remote.fwd,
                                notification,
                            },
                        );
                    }
                }
                None => self.send_to_device(req.requester, &notification),
            }
        }
    }
}
