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

use super::sessions::Session;
use super::upstream::UpMsg;
use super::{DenyReason, SessionEvent, SessionFact, SessionServer, SessionStarted, Timer};
use crate::time::Instant;
use crate::wire::{
    AddressInquiry, AddressNotification, AddressReply, ConnectionRequest, DecisionMode, DeviceId,
    ErrorCode, ErrorReply, Message, Name, PermissionAnswer, PermissionInquiry, PermissionList,
    PermissionListRequest, PublicKey, Role, SessionId, SessionKey, TriggerOutcome, TriggerRequest,
    TriggerResult, Verdict,
};

/// Attempts at drawing an unused session ID.
const SESSION_ID_ATTEMPTS: usize = 8;

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Trigger requested; waiting for the target's `Poll` (or a failed result).
    AwaitingPoll { op: u32 },
    /// Permission list request or inquiry sent.
    Querying { query_id: u32 },
    /// Address inquiry sent.
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
    stage: Stage,
    timer: Option<Instant>,
}

/// A uniform deny waiting for its time.
pub(super) struct Denial {
    channel: u64,
    request_id: u32,
    requester: String,
    target: String,
    reason: DenyReason,
    /// Took a pending slot first (bounded by the pending limit, not the denial one).
    from_pending: bool,
    timer: Option<Instant>,
}

/// The request tables.
#[derive(Default)]
pub(super) struct Requests {
    /// Requests being decided, by internal key.
    pub pending: BTreeMap<u64, PendingRequest>,
    /// (target device, key): the requests aimed at each device.
    by_target: BTreeSet<(u64, u64)>,
    /// Query ID -> request key.
    queries: BTreeMap<u32, u64>,
    /// Trigger server operation ID -> request key.
    pub ops: BTreeMap<u32, u64>,
    /// Denials waiting for their time, by key.
    denials: BTreeMap<u64, Denial>,
    /// Denials that never had a pending slot.
    pub(super) immediate_denials: usize,
    next_key: u64,
    next_query: u32,
}

impl Requests {
    fn fresh_key(&mut self) -> u64 {
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
        let well_formed = channel.live && req.requester.as_str() == requester_name;
        let deny = |reason| Denial {
            channel: device,
            request_id: req.request_id,
            requester: requester_name.clone(),
            target: req.target.as_str().to_string(),
            reason,
            from_pending: false,
            timer: None,
        };
        if !well_formed {
            self.schedule_denial(now, deny_at, deny(DenyReason::BadRequester));
            return;
        }
        if self.request_limiter.check(now, &requester_key).is_err() {
            self.schedule_denial(now, deny_at, deny(DenyReason::RateLimited));
            return;
        }
        let Some(target_key) = self.registry.key_of(req.target) else {
            self.schedule_denial(now, deny_at, deny(DenyReason::UnknownTarget));
            return;
        };
        if req.target.as_str() == requester_name {
            self.schedule_denial(now, deny_at, deny(DenyReason::SelfTarget));
            return;
        }
        let target = self.reg.live.get(req.target.as_str()).copied();
        let Some((target, mode)) =
            target.and_then(|t| self.reg.channels.get(&t).map(|c| (t, c.mode)))
        else {
            self.schedule_denial(now, deny_at, deny(DenyReason::TargetOffline));
            return;
        };
        if self.requests.pending.len() >= self.config.limits.max_pending_requests {
            self.schedule_denial(now, deny_at, deny(DenyReason::Overloaded));
            return;
        }
        let key = self.requests.fresh_key();
        let op = self.fresh_op();
        let mut pending = PendingRequest {
            requester: device,
            requester_name,
            requester_key,
            request_id: req.request_id,
            target,
            target_name: req.target.as_str().to_string(),
            target_key,
            mode,
            duration_secs: self.config.granted_duration_secs(req.duration_secs),
            deny_at,
            stage: Stage::AwaitingPoll { op },
            timer: None,
        };
        let decide_by = now + self.config.effective_decision_timeout();
        self.timers
            .arm(Timer::Request(key), &mut pending.timer, decide_by);
        self.requests.pending.insert(key, pending);
        self.requests.by_target.insert((target, key));
        self.requests.ops.insert(op, key);
        self.send_upstream(
            now,
            UpMsg::Trigger(TriggerRequest {
                op_id: op,
                device_id: DeviceId(target),
            }),
        );
    }

    /// Queues a uniform deny for `deny_at` (or sends it if that is now).
    fn schedule_denial(&mut self, now: Instant, deny_at: Instant, mut denial: Denial) {
        if !denial.from_pending {
            if self.requests.immediate_denials >= self.config.limits.max_scheduled_denials {
                self.out.counters.requests_dropped += 1;
                self.release_outstanding(denial.channel);
                return;
            }
            self.requests.immediate_denials += 1;
        }
        if deny_at <= now {
            self.send_denial(denial);
            return;
        }
        let key = self.requests.fresh_key();
        self.timers
            .arm(Timer::Denial(key), &mut denial.timer, deny_at);
        self.requests.denials.insert(key, denial);
    }

    /// A denial's time came.
    pub(super) fn denial_due(&mut self, key: u64) {
        if let Some(denial) = self.requests.denials.remove(&key) {
            self.send_denial(denial);
        }
    }

    /// Sends the uniform `Error{request_id, NotPermitted}`: the same bytes
    /// whatever the reason.
    fn send_denial(&mut self, denial: Denial) {
        if !denial.from_pending {
            self.requests.immediate_denials = self.requests.immediate_denials.saturating_sub(1);
        }
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
    fn release_outstanding(&mut self, channel: u64) {
        if let Some(c) = self.reg.channels.get_mut(&channel) {
            c.outstanding = c.outstanding.saturating_sub(1);
        }
    }

    /// Takes a request out of every table.
    fn take_request(&mut self, key: u64) -> Option<PendingRequest> {
        let mut req = self.requests.pending.remove(&key)?;
        self.timers.disarm(Timer::Request(key), &mut req.timer);
        self.requests.by_target.remove(&(req.target, key));
        match req.stage {
            Stage::AwaitingPoll { op } | Stage::Locating { op } => {
                self.requests.ops.remove(&op);
            }
            Stage::Querying { query_id } => {
                self.requests.queries.remove(&query_id);
            }
        }
        Some(req)
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
            from_pending: true,
            timer: None,
        };
        self.schedule_denial(now, req.deny_at, denial);
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
        for key in keys {
            self.fail_request(now, key, DenyReason::TargetGone);
        }
    }

    /// The request that trigger-server operation `op` answers, if it is still
    /// at `stage`; otherwise the answer is stale (counted) and `None`.
    fn request_at(&mut self, stage: Stage, op: u32) -> Option<u64> {
        let key = self.requests.ops.get(&op).copied();
        let current = key.and_then(|k| self.requests.pending.get(&k).map(|r| r.stage));
        if current != Some(stage) {
            self.out.counters.stale_answers += 1;
            return None;
        }
        key
    }

    /// The trigger server says what became of a trigger.
    pub(super) fn on_trigger_result(&mut self, now: Instant, result: &TriggerResult) {
        let Some(key) = self.request_at(Stage::AwaitingPoll { op: result.op_id }, result.op_id)
        else {
            return;
        };
        match result.outcome {
            // The target's Poll does the rest.
            TriggerOutcome::Delivered => {}
            TriggerOutcome::Offline => self.fail_request(now, key, DenyReason::TriggerOffline),
            TriggerOutcome::Unacknowledged => {
                self.fail_request(now, key, DenyReason::TriggerUnacknowledged)
            }
        }
    }

    /// A `Poll` from `device`: ask it about every request waiting for it
    /// (S503 permission list request, or S1202 inquiry).
    pub(super) fn on_poll(&mut self, _now: Instant, device: u64) {
        let keys: Vec<u64> = self
            .requests
            .by_target
            .range((device, 0)..=(device, u64::MAX))
            .map(|&(_, k)| k)
            .collect();
        for key in keys {
            let query_id = self.requests.fresh_query();
            let Some(req) = self.requests.pending.get_mut(&key) else {
                continue;
            };
            let Stage::AwaitingPoll { op } = req.stage else {
                continue;
            };
            req.stage = Stage::Querying { query_id };
            self.requests.ops.remove(&op);
            self.requests.queries.insert(query_id, key);
            let mode = req.mode;
            let requester = req.requester_name.clone();
            match mode {
                DecisionMode::PermissionList => self.send_to_device(
                    device,
                    &Message::PermissionListRequest(PermissionListRequest { query_id }),
                ),
                DecisionMode::TerminalJudges => {
                    let Ok(name) = Name::new(&requester) else {
                        continue;
                    };
                    self.send_to_device(
                        device,
                        &Message::PermissionInquiry(PermissionInquiry {
                            query_id,
                            requester: name,
                        }),
                    );
                }
            }
        }
    }

    /// The request a query answer from `device` belongs to, if it matches.
    fn queried_request(&mut self, device: u64, query_id: u32) -> Option<(u64, DecisionMode)> {
        let key = self.requests.queries.get(&query_id).copied();
        let found = key.and_then(|k| self.requests.pending.get(&k).map(|r| (k, r)));
        match found {
            Some((k, r)) if r.target == device && r.stage == Stage::Querying { query_id } => {
                Some((k, r.mode))
            }
            _ => {
                self.out.counters.stale_answers += 1;
                None
            }
        }
    }

    /// The target's permission list (S704, 808): search it for the
    /// requester's name (S505).
    pub(super) fn on_permission_list(
        &mut self,
        now: Instant,
        device: u64,
        list: &PermissionList<'_>,
    ) {
        let Some((key, mode)) = self.queried_request(device, list.query_id) else {
            return;
        };
        if mode != DecisionMode::PermissionList {
            self.fail_request(now, key, DenyReason::WrongAnswerKind);
            return;
        }
        let listed = self
            .requests
            .pending
            .get(&key)
            .is_some_and(|r| list.names.contains(&r.requester_name));
        if listed {
            self.locate(now, key);
        } else {
            self.fail_request(now, key, DenyReason::NotInList);
        }
    }

    /// The target's verdict (S1203/S1204, S1101).
    pub(super) fn on_permission_answer(
        &mut self,
        now: Instant,
        device: u64,
        answer: &PermissionAnswer,
    ) {
        let Some((key, mode)) = self.queried_request(device, answer.query_id) else {
            return;
        };
        if mode != DecisionMode::TerminalJudges {
            self.fail_request(now, key, DenyReason::WrongAnswerKind);
            return;
        }
        match answer.verdict {
            Verdict::Permit => self.locate(now, key),
            Verdict::Deny => self.fail_request(now, key, DenyReason::Refused),
        }
    }

    /// Permitted: ask the trigger server for both addresses (S507, 809).
    fn locate(&mut self, now: Instant, key: u64) {
        let op = self.fresh_op();
        let Some(req) = self.requests.pending.get_mut(&key) else {
            return;
        };
        if let Stage::Querying { query_id } = req.stage {
            self.requests.queries.remove(&query_id);
        }
        req.stage = Stage::Locating { op };
        let inquiry = AddressInquiry {
            op_id: op,
            first: DeviceId(req.requester),
            second: DeviceId(req.target),
        };
        self.requests.ops.insert(op, key);
        self.send_upstream(now, UpMsg::Address(inquiry));
    }

    /// The addresses (S605/S606, 810): both present starts the session.
    pub(super) fn on_address_reply(&mut self, now: Instant, reply: &AddressReply) {
        let Some(key) = self.request_at(Stage::Locating { op: reply.op_id }, reply.op_id) else {
            return;
        };
        match (reply.first, reply.second) {
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
        self.release_outstanding(req.requester);
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
        self.insert_session(Session::from_started(&started), id);
        self.out.fact(SessionFact::SessionStarted(started));
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
                }),
            );
        }
        if let Ok(target_name) = Name::new(&req.target_name) {
            // S510: the requester learns the target's address.
            self.send_to_device(
                req.requester,
                &Message::AddressNotification(AddressNotification {
                    request_id: req.request_id,
                    session_id,
                    role: Role::Connecting,
                    duration_secs: req.duration_secs,
                    session_key,
                    peer_key: req.target_key,
                    peer_addr: target_addr,
                    peer_name: target_name,
                }),
            );
        }
    }
}
