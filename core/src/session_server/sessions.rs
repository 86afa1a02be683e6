//! Session life (third embodiment): extensions (S1602/S1603), the
//! operator's forced end (S1604/S1605), end notifications (814/815, S1601)
//! and the one record per session (S1606), also across a restart.
//!
//! A session is addressed by its parties' names, not device IDs: terminals
//! re-register (new device ID) during long sessions and after a server
//! restart, and their name stays bound to the same key.
//!
//! Extension policy: a request is granted while the new total stays within
//! [`SessionConfig::max_total_duration`](super::SessionConfig); the new total
//! goes to both sides, which must agree on the deadline. Both sides reach
//! their extension threshold at about the same time and may both ask: a
//! request arriving while the session still has at least the asked-for
//! time left is answered with the current total and extends nothing, so
//! two requests for one need give one extension.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;

use rand_core::{CryptoRng, RngCore};

use super::peer::{PeerBody, Sender};
use super::upstream::UpMsg;
use super::{
    whole_secs, EndConfirmation, ExtensionPolicy, ForcedEnd, LateReport, LiveSession, Party,
    RestoreError, SessionEndReason, SessionEvent, SessionExtended, SessionFact, SessionRecord,
    SessionServer, SessionStarted, SideReport, Timer, UnknownSession, END_TRIGGER_ATTEMPTS,
    LATE_REPORT_WINDOW, MAX_RECENT_RECORDS,
};
use crate::time::Instant;
use crate::wire::{
    DeviceId, EndNotification, EndTriggerRequest, ExtensionGrant, ExtensionRefusal,
    ExtensionRequest, Message, PublicKey, SessionId, TriggerOutcome,
};
use core::time::Duration;

/// A live session.
pub(super) struct Session {
    requester: String,
    requester_key: PublicKey,
    target: String,
    target_key: PublicKey,
    start: Instant,
    duration_secs: u32,
    extensions: u32,
    requester_side: Option<SideReport>,
    target_side: Option<SideReport>,
    forced_at: Option<Instant>,
    /// Each party's end trigger: `None` while its answer is awaited
    /// (requester, target).
    end: [Option<EndConfirmation>; 2],
    /// End triggers sent to each party since the last forced end.
    end_attempts: [u8; 2],
    /// The forced end's settlement was reported.
    settled: bool,
    timer: Option<Instant>,
    /// The party registered at another server, and that server.
    pub(super) remote: Option<(Party, PublicKey)>,
}

/// Which party a channel is.
type Side = Party;

/// The slot of `side` in a per-party pair.
fn slot(side: Side) -> usize {
    match side {
        Party::Requester => 0,
        Party::Target => 1,
    }
}

/// A recorded session that still takes its late end notifications.
pub(super) struct Recent {
    requester: String,
    requester_key: PublicKey,
    target: String,
    target_key: PublicKey,
    /// Which sides' notifications the record (or a late report) holds.
    reported: [bool; 2],
    recorded: Instant,
}

/// The recorded sessions that still take late end notifications, oldest
/// first, at most [`MAX_RECENT_RECORDS`].
#[derive(Default)]
pub(super) struct RecentRecords {
    by_id: BTreeMap<[u8; 16], Recent>,
    order: VecDeque<[u8; 16]>,
}

impl RecentRecords {
    /// Forgets the records older than [`LATE_REPORT_WINDOW`] at `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(id) = self.order.front().copied() {
            let old = self
                .by_id
                .get(&id)
                .is_none_or(|r| now - r.recorded >= LATE_REPORT_WINDOW);
            if !old && self.order.len() <= MAX_RECENT_RECORDS {
                break;
            }
            self.order.pop_front();
            self.by_id.remove(&id);
        }
    }

    fn insert(&mut self, now: Instant, id: [u8; 16], recent: Recent) {
        if self.by_id.insert(id, recent).is_none() {
            self.order.push_back(id);
        }
        self.expire(now);
    }
}

impl Session {
    pub(super) fn from_started(s: &SessionStarted) -> Session {
        Session {
            requester: s.requester.clone(),
            requester_key: s.requester_key,
            target: s.target.clone(),
            target_key: s.target_key,
            start: s.start,
            duration_secs: s.duration_secs,
            extensions: 0,
            requester_side: None,
            target_side: None,
            forced_at: None,
            end: [None; 2],
            end_attempts: [0; 2],
            settled: true,
            timer: None,
            remote: None,
        }
    }

    /// The name of `side`.
    fn name_of(&self, side: Side) -> &String {
        match side {
            Party::Requester => &self.requester,
            Party::Target => &self.target,
        }
    }

    /// The forced end's settlement, once every party has answered (or,
    /// with `now_or_never`, whatever is known: the rest did not answer).
    fn settlement(&self, id: [u8; 16], now: Instant, now_or_never: bool) -> Option<ForcedEnd> {
        let forced = self.forced_at?;
        if self.settled || (!now_or_never && self.end.iter().any(Option::is_none)) {
            return None;
        }
        let [r, t] = self.end.map(|e| e.unwrap_or(EndConfirmation::NoAnswer));
        Some(ForcedEnd {
            session_id: SessionId(id),
            requester: self.requester.clone(),
            requester_end: r,
            target: self.target.clone(),
            target_end: t,
            waited: now - forced,
        })
    }

    /// When the permitted duration ends.
    fn permitted_end(&self) -> Instant {
        self.start + Duration::from_secs(u64::from(self.duration_secs))
    }

    /// The earliest end notification.
    fn first_report(&self) -> Option<SideReport> {
        match (self.requester_side, self.target_side) {
            (Some(r), Some(t)) if t.received < r.received => Some(t),
            (Some(r), _) => Some(r),
            (None, t) => t,
        }
    }

    /// When the record is due: `end_grace` after the first notification,
    /// else after a forced end, else after the permitted duration.
    fn record_deadline(&self, grace: Duration) -> Instant {
        if let Some(first) = self.first_report() {
            return first.received + grace;
        }
        let natural = self.permitted_end() + grace;
        match self.forced_at {
            Some(forced) => natural.min(forced + grace),
            None => natural,
        }
    }

    /// Which side `name`/`key` is, if any.
    fn side_of(&self, name: &str, key: &PublicKey) -> Option<Side> {
        if name == self.requester && *key == self.requester_key {
            Some(Party::Requester)
        } else if name == self.target && *key == self.target_key {
            Some(Party::Target)
        } else {
            None
        }
    }

    /// Whether the session is ending (a side ended, or the operator ended it).
    fn ending(&self) -> bool {
        self.forced_at.is_some() || self.requester_side.is_some() || self.target_side.is_some()
    }
}

impl<R: RngCore + CryptoRng> SessionServer<R> {
    /// The live sessions (started, not yet recorded), for the operator's
    /// status page and `tryst status`.
    pub fn live_sessions(&self) -> impl Iterator<Item = LiveSession> + '_ {
        self.sessions.iter().map(|(id, s)| LiveSession {
            session_id: SessionId(*id),
            requester: s.requester.clone(),
            target: s.target.clone(),
            start: s.start,
            duration_secs: s.duration_secs,
            extensions: s.extensions,
            forced: s.forced_at.is_some(),
        })
    }

    /// Holds `session` and arms its record deadline.
    pub(super) fn insert_session(&mut self, mut session: Session, id: [u8; 16]) {
        let at = session.record_deadline(self.config.end_grace);
        self.timers.arm(Timer::Session(id), &mut session.timer, at);
        self.sessions.insert(id, session);
    }

    /// Re-arms a session's record deadline after a change.
    fn rearm_session(&mut self, id: [u8; 16]) {
        let grace = self.config.end_grace;
        if let Some(session) = self.sessions.get_mut(&id) {
            let at = session.record_deadline(grace);
            self.timers.arm(Timer::Session(id), &mut session.timer, at);
        }
    }

    /// The session `from` is a party of, and which party: a local channel,
    /// or a party its server says is registered there (the session's
    /// remote party, whose server is noted if a restart lost it).
    fn party(&mut self, from: Sender<'_>, id: &SessionId) -> Option<Side> {
        let side = match from {
            Sender::Device(device) => self.reg.channels.get(&device).and_then(|channel| {
                self.sessions
                    .get(&id.0)
                    .and_then(|s| s.side_of(&channel.name, &channel.key))
            }),
            Sender::Peer { server, name, key } => self.sessions.get_mut(&id.0).and_then(|s| {
                let side = s.side_of(name, &key)?;
                match s.remote {
                    Some(remote) if remote == (side, server) => Some(side),
                    None if !self.reg.live.contains_key(name) => {
                        s.remote = Some((side, server));
                        Some(side)
                    }
                    _ => None,
                }
            }),
        };
        if side.is_none() {
            self.out.counters.stale_answers += 1;
        }
        side
    }

    /// Sends `message` to `to`: its channel here, or through its server.
    fn reply_to(&mut self, to: Sender<'_>, message: &Message<'_>) {
        match to {
            Sender::Device(device) => self.send_to_device(device, message),
            Sender::Peer { server, name, .. } => self.deliver_remote(server, name, message),
        }
    }

    /// Sends `message` to `name`, a party registered at `server`.
    fn deliver_remote(&mut self, server: PublicKey, name: &str, message: &Message<'_>) {
        if let Some(message) = self.plain(message) {
            self.send_peer(
                Some(server),
                PeerBody::Deliver {
                    name: name.into(),
                    message,
                },
            );
        }
    }

    /// Sends `message` to `side` of session `id`, wherever it is registered.
    fn send_to_party(&mut self, id: [u8; 16], side: Side, message: &Message<'_>) {
        let Some(session) = self.sessions.get(&id) else {
            return;
        };
        let name = session.name_of(side).clone();
        match session.remote {
            Some((remote, server)) if remote == side => self.deliver_remote(server, &name, message),
            _ => self.send_to_name(&name, message),
        }
    }

    /// An `ExtensionRequest` from a party (S1505 -> S1602/S1603).
    pub(super) fn on_extension_request(
        &mut self,
        now: Instant,
        device: Sender<'_>,
        req: &ExtensionRequest,
    ) {
        if self.party(device, &req.session_id).is_none() {
            return;
        }
        let policy = self.config.extension_policy;
        let max_total = whole_secs(self.config.max_total_duration);
        let Some(session) = self.sessions.get_mut(&req.session_id.0) else {
            return;
        };
        let remaining = session.permitted_end() - now;
        let asked = Duration::from_secs(u64::from(req.extra_secs));
        let new_total = session.duration_secs.saturating_add(req.extra_secs);
        let refuse = session.ending() || policy == ExtensionPolicy::Never;
        if !refuse && remaining >= asked {
            // Already has what it asks for (the other side's request was
            // granted first): tell it the current total, extend nothing.
            let total = session.duration_secs;
            self.reply_to(
                device,
                &Message::ExtensionGrant(ExtensionGrant {
                    session_id: req.session_id,
                    duration_secs: total,
                }),
            );
            return;
        }
        if refuse || new_total > max_total {
            self.reply_to(
                device,
                &Message::ExtensionRefusal(ExtensionRefusal {
                    session_id: req.session_id,
                }),
            );
            return;
        }
        session.duration_secs = new_total;
        session.extensions += 1;
        let extended = SessionExtended {
            session_id: req.session_id,
            duration_secs: new_total,
            extensions: session.extensions,
            at: now,
        };
        self.rearm_session(req.session_id.0);
        self.out.fact(SessionFact::SessionExtended(extended));
        let grant = Message::ExtensionGrant(ExtensionGrant {
            session_id: req.session_id,
            duration_secs: new_total,
        });
        self.send_to_party(req.session_id.0, Party::Requester, &grant);
        self.send_to_party(req.session_id.0, Party::Target, &grant);
    }

    /// An `EndNotification` from a party (814/815, S1601).
    pub(super) fn on_end_notification(
        &mut self,
        now: Instant,
        device: Sender<'_>,
        note: &EndNotification,
    ) {
        let report = SideReport {
            reason: note.reason,
            bytes_sent: note.bytes_sent,
            bytes_received: note.bytes_received,
            duration_ms: note.duration_ms,
            received: now,
        };
        if !self.sessions.contains_key(&note.session_id.0) {
            match device {
                Sender::Device(device) => {
                    self.on_late_notification(now, device, note.session_id, report)
                }
                // A remote party's late report is not kept.
                Sender::Peer { .. } => self.out.counters.stale_answers += 1,
            }
            return;
        }
        let Some(side) = self.party(device, &note.session_id) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&note.session_id.0) else {
            return;
        };
        let report_slot = match side {
            Party::Requester => &mut session.requester_side,
            Party::Target => &mut session.target_side,
        };
        if report_slot.is_some() {
            self.out.counters.stale_answers += 1;
            return;
        }
        *report_slot = Some(report);
        if session.forced_at.is_some() {
            // Its terminal ended: the forced end is confirmed on that side.
            session.end[slot(side)] = Some(EndConfirmation::Confirmed);
            self.settle_if_answered(now, note.session_id.0);
        }
        let Some(session) = self.sessions.get(&note.session_id.0) else {
            return;
        };
        if session.requester_side.is_some() && session.target_side.is_some() {
            self.record_session(now, note.session_id.0);
        } else {
            self.rearm_session(note.session_id.0);
        }
    }

    /// A notification for a session no longer live: if it was recorded
    /// lately and the side's report is missing, it joins the record.
    fn on_late_notification(
        &mut self,
        now: Instant,
        device: u64,
        id: SessionId,
        report: SideReport,
    ) {
        self.recent.expire(now);
        let side = self.reg.channels.get(&device).and_then(|channel| {
            let recent = self.recent.by_id.get(&id.0)?;
            if channel.name == recent.requester && channel.key == recent.requester_key {
                Some(Party::Requester)
            } else if channel.name == recent.target && channel.key == recent.target_key {
                Some(Party::Target)
            } else {
                None
            }
        });
        let Some(recent) = side.and_then(|_| self.recent.by_id.get_mut(&id.0)) else {
            self.out.counters.stale_answers += 1;
            return;
        };
        let Some(party) = side else {
            return;
        };
        if core::mem::replace(&mut recent.reported[slot(party)], true) {
            self.out.counters.stale_answers += 1;
            return;
        }
        self.out.fact(SessionFact::LateReport(LateReport {
            session_id: id,
            party,
            report,
        }));
    }

    /// The operator ends a session (S1604): an end trigger for each party
    /// through the trigger server (S1605), whose results say whether each
    /// terminal confirmed ([`SessionEvent::ForcedEndSettled`]). Calling it
    /// again sends them again to the parties that have not confirmed.
    pub(super) fn force_end(&mut self, now: Instant, id: SessionId) -> Result<(), UnknownSession> {
        let session = self.sessions.get_mut(&id.0).ok_or(UnknownSession)?;
        session.forced_at.get_or_insert(now);
        session.settled = false;
        self.out
            .event(SessionEvent::ForcedEndStarted { session_id: id });
        self.rearm_session(id.0);
        for side in [Party::Requester, Party::Target] {
            let Some(session) = self.sessions.get_mut(&id.0) else {
                break;
            };
            let reported = match side {
                Party::Requester => session.requester_side.is_some(),
                Party::Target => session.target_side.is_some(),
            };
            if reported {
                // Its terminal already ended and said so.
                session.end[slot(side)] = Some(EndConfirmation::Confirmed);
            }
            if session.end[slot(side)] == Some(EndConfirmation::Confirmed) {
                continue;
            }
            session.end_attempts[slot(side)] = 0;
            self.send_end_trigger(now, id, side);
        }
        self.settle_if_answered(now, id.0);
        Ok(())
    }

    /// Sends (again) the end trigger of `side` to its live registration.
    fn send_end_trigger(&mut self, now: Instant, id: SessionId, side: Side) {
        let Some(session) = self.sessions.get_mut(&id.0) else {
            return;
        };
        if let Some((remote, server)) = session.remote.filter(|&(remote, _)| remote == side) {
            // Its server end-triggers it; its end notification confirms.
            session.end[slot(remote)] = None;
            let name = session.name_of(side).clone();
            self.send_peer(
                Some(server),
                PeerBody::EndTrigger {
                    session_id: id,
                    name,
                },
            );
            return;
        }
        let Some(&device) = self.reg.live.get(session.name_of(side)) else {
            session.end[slot(side)] = Some(EndConfirmation::NotRegistered);
            self.out.counters.undeliverable += 1;
            return;
        };
        session.end[slot(side)] = None;
        // A superseded attempt's result no longer counts.
        self.end_ops.retain(|_, pending| *pending != (id.0, side));
        session.end_attempts[slot(side)] = session.end_attempts[slot(side)].saturating_add(1);
        let op = self.fresh_op();
        self.end_ops.insert(op, (id.0, side));
        self.send_upstream(
            now,
            UpMsg::EndTrigger(EndTriggerRequest {
                op_id: op,
                device_id: DeviceId(device),
                session_id: id,
            }),
        );
    }

    /// Whether trigger-server operation `op` is an end trigger.
    pub(super) fn is_end_trigger(&self, op: u32) -> bool {
        self.end_ops.contains_key(&op)
    }

    /// The trigger server says what became of an end trigger: delivered
    /// (the terminal acknowledged it) confirms; an unacknowledged one is
    /// sent again up to [`END_TRIGGER_ATTEMPTS`] times.
    pub(super) fn on_end_trigger_result(&mut self, now: Instant, op: u32, outcome: TriggerOutcome) {
        let Some((id, side)) = self.end_ops.remove(&op) else {
            self.out.counters.stale_answers += 1;
            return;
        };
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if session.end[slot(side)].is_some() {
            // Confirmed by its notification meanwhile, or a superseded attempt.
            return;
        }
        let answer = match outcome {
            TriggerOutcome::Delivered => EndConfirmation::Confirmed,
            TriggerOutcome::Offline => EndConfirmation::Offline,
            TriggerOutcome::Unacknowledged => {
                if session.end_attempts[slot(side)] < END_TRIGGER_ATTEMPTS {
                    self.send_end_trigger(now, SessionId(id), side);
                    self.settle_if_answered(now, id);
                    return;
                }
                EndConfirmation::Unacknowledged
            }
        };
        session.end[slot(side)] = Some(answer);
        self.settle_if_answered(now, id);
    }

    /// Reports the forced end of `id` once both parties have answered.
    fn settle_if_answered(&mut self, now: Instant, id: [u8; 16]) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if let Some(settled) = session.settlement(id, now, false) {
            session.settled = true;
            self.out.event(SessionEvent::ForcedEndSettled(settled));
        }
    }

    /// A session's record deadline passed.
    pub(super) fn session_deadline(&mut self, now: Instant, id: [u8; 16]) {
        if let Some(session) = self.sessions.get_mut(&id) {
            session.timer = None;
        }
        self.record_session(now, id);
    }

    /// Writes the one record of a session and forgets it.
    fn record_session(&mut self, now: Instant, id: [u8; 16]) {
        let Some(mut session) = self.sessions.remove(&id) else {
            return;
        };
        self.timers.disarm(Timer::Session(id), &mut session.timer);
        self.end_ops.retain(|_, (session_id, _)| *session_id != id);
        if let Some(settled) = session.settlement(id, now, true) {
            self.out.event(SessionEvent::ForcedEndSettled(settled));
        }
        self.recent.insert(
            now,
            id,
            Recent {
                requester: session.requester.clone(),
                requester_key: session.requester_key,
                target: session.target.clone(),
                target_key: session.target_key,
                reported: [
                    session.requester_side.is_some(),
                    session.target_side.is_some(),
                ],
                recorded: now,
            },
        );
        let first = session.first_report();
        let end = match (first, session.forced_at) {
            (Some(report), _) => report.received,
            (None, Some(forced)) => forced,
            (None, None) => session.permitted_end().min(now),
        };
        let reason = match (session.forced_at, first) {
            (Some(_), _) => SessionEndReason::Forced,
            (None, Some(report)) => report.reason.into(),
            (None, None) => SessionEndReason::ServerTimeout,
        };
        let end = end.max(session.start);
        self.out.fact(SessionFact::SessionRecord(SessionRecord {
            session_id: SessionId(id),
            requester: session.requester,
            target: session.target,
            start: session.start,
            end,
            duration: end - session.start,
            permitted_secs: session.duration_secs,
            extensions: session.extensions,
            requester_side: session.requester_side,
            target_side: session.target_side,
            reason,
        }));
    }

    /// Replays a stored `SessionStarted` or `SessionExtended` fact (or a
    /// binding's `NameSeen`, from which it expires) into this (fresh) machine. Replay them in the order they were emitted, and only
    /// for sessions without a stored `SessionRecord`. A restored session
    /// ends by its notifications or timer and gets exactly one record; one
    /// whose deadline already passed is recorded at the next input.
    pub fn restore_session(&mut self, fact: &SessionFact) -> Result<(), RestoreError> {
        match fact {
            SessionFact::SessionStarted(started) => {
                let id = started.session_id.0;
                if self.sessions.contains_key(&id) {
                    return Err(RestoreError::Duplicate);
                }
                if self.sessions.len() >= self.config.limits.max_sessions {
                    return Err(RestoreError::Full);
                }
                self.insert_session(Session::from_started(started), id);
                Ok(())
            }
            SessionFact::SessionExtended(extended) => {
                let id = extended.session_id.0;
                let session = self
                    .sessions
                    .get_mut(&id)
                    .ok_or(RestoreError::UnknownSession)?;
                session.duration_secs = extended.duration_secs;
                session.extensions = extended.extensions;
                self.rearm_session(id);
                Ok(())
            }
            SessionFact::NameSeen { name, at } => {
                self.restore_binding_seen(name, *at);
                Ok(())
            }
            _ => Err(RestoreError::NotASessionFact),
        }
    }
}
