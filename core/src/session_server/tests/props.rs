//! Property tests: arbitrary bytes never panic the server, and random
//! operation sequences keep the driver contract and the one-record rule.

use std::collections::BTreeMap;
use std::vec;
use std::vec::Vec;

use core::time::Duration;

use proptest::prelude::*;

use super::super::*;
use super::harness::*;
use crate::machine::ConnectionId;
use crate::time::Instant;
use crate::wire::{
    vectors, DecisionMode, EndReason, Message, Poll, SessionId, TriggerOutcome, Verdict,
};

/// Terminal names of the random worlds.
const NAMES: [&str; 4] = ["term1", "term3", "camera", "phone"];

/// Checks the driver contract right after a `handle_timeout(now)`.
fn check_timeout(w: &World) {
    if let Some(t) = w.ss.poll_timeout() {
        assert!(t > w.ss.clock.latest(), "poll_timeout {t:?} not after now");
    }
}

fn genuine_vectors() -> Vec<&'static [u8]> {
    vec![
        &vectors::REGISTER[..],
        &vectors::POLL[..],
        &vectors::CONNECTION_REQUEST[..],
        &vectors::PERMISSION_LIST[..],
        &vectors::PERMISSION_ANSWER[..],
        &vectors::TRIGGER_RESULT[..],
        &vectors::ADDRESS_REPLY[..],
        &vectors::EXTENSION_REQUEST[..],
        &vectors::END_NOTIFICATION[..],
        &vectors::HANDSHAKE_INIT[..],
        &vectors::HANDSHAKE_REPLY[..],
        &vectors::SEALED[..],
    ]
}

#[derive(Debug, Clone)]
enum Input {
    /// Raw bytes on a terminal stream (0..4) or, for 4, the upstream link.
    Raw {
        to: u8,
        bytes: Vec<u8>,
    },
    /// A test vector with one byte changed.
    Mutated {
        to: u8,
        which: usize,
        pos: usize,
        byte: u8,
    },
    /// A genuine terminal's sealed record of a test vector, one byte flipped or not.
    Sealed {
        from: u8,
        which: usize,
        flip: Option<(usize, u8)>,
    },
    /// Time passes or goes back.
    Time {
        forward: bool,
        ms: u32,
    },
    /// Streams open and close.
    Close(u8),
    Open(u8),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        (0u8..5, proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(to, bytes)| Input::Raw { to, bytes }),
        (0u8..5, 0usize..12, 0usize..200, any::<u8>()).prop_map(|(to, which, pos, byte)| {
            Input::Mutated {
                to,
                which,
                pos,
                byte,
            }
        }),
        (
            0u8..2,
            0usize..12,
            proptest::option::of((0usize..200, 1u8..=255))
        )
            .prop_map(|(from, which, flip)| Input::Sealed { from, which, flip }),
        (any::<bool>(), 0u32..20_000).prop_map(|(forward, ms)| Input::Time { forward, ms }),
        (0u8..4).prop_map(Input::Close),
        (0u8..4).prop_map(Input::Open),
    ]
}

proptest! {
    #![proptest_config(proptest_config!(64, "core-session_server.txt"))]

    #[test]
    fn arbitrary_stream_messages_never_panic(inputs in proptest::collection::vec(input(), 1..40)) {
        let mut w = World::new(SessionConfig::default());
        let a = w.term("term1", DecisionMode::PermissionList);
        let b = w.term("term3", DecisionMode::TerminalJudges);
        let vectors = genuine_vectors();
        let conn_of = |i: u8| ConnectionId(u64::from(i) + 1);
        for input in inputs {
            match input {
                Input::Raw { to, bytes } => {
                    if to == 4 {
                        w.ss.handle_upstream(w.now, &bytes);
                    } else {
                        w.ss.handle_stream(w.now, conn_of(to), &bytes);
                    }
                }
                Input::Mutated { to, which, pos, byte } => {
                    let mut bytes = vectors[which % vectors.len()].to_vec();
                    let at = pos % bytes.len();
                    bytes[at] = byte;
                    if to == 4 {
                        w.ss.handle_upstream(w.now, &bytes);
                    } else {
                        w.ss.handle_stream(w.now, conn_of(to), &bytes);
                    }
                }
                Input::Sealed { from, which, flip } => {
                    let i = if from == 0 { a } else { b };
                    let plain = vectors[which % vectors.len()];
                    // Seal the raw vector bytes, valid message or not.
                    let mut out = std::vec![0u8; plain.len() + 64];
                    let ch = w.terms[i].channel.as_mut().unwrap();
                    let n = ch.seal(plain, &mut out).unwrap();
                    out.truncate(n);
                    if let Some((pos, x)) = flip {
                        let at = pos % out.len();
                        out[at] ^= x;
                    }
                    let conn = w.terms[i].conn;
                    w.ss.handle_stream(w.now, conn, &out);
                }
                Input::Time { forward, ms } => {
                    let d = Duration::from_millis(u64::from(ms));
                    w.now = if forward { w.now + d } else { w.now.saturating_sub(d) };
                    w.ss.handle_timeout(w.now);
                    check_timeout(&w);
                }
                Input::Close(i) => w.ss.handle_connection_closed(w.now, conn_of(i)),
                Input::Open(i) => w.ss.handle_connection_opened(
                    w.now,
                    conn_of(i),
                    core::net::SocketAddr::from(([192, 0, 2, i], 1000)),
                ),
            }
            w.pump();
        }
        // Whatever happened, the server still ends by its timers.
        w.run_until(w.now + Duration::from_secs(3 * 3600));
        check_timeout(&w);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Register(u8),
    Request {
        from: u8,
        to: u8,
        duration: u32,
        as_other: bool,
    },
    Poll(u8),
    AnswerList {
        who: u8,
        permit: bool,
    },
    AnswerVerdict {
        who: u8,
        permit: bool,
    },
    Triggers(u8),
    Addresses,
    Offline(u8),
    Extend {
        who: u8,
        extra: u32,
    },
    End {
        who: u8,
        reason: u8,
    },
    EndSession(u8),
    Advance(u32),
    Back(u32),
    Close(u8),
    Reconnect(u8),
    UpstreamClosed,
    TsAccepting(bool),
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0u8..4;
    prop_oneof![
        2 => t.clone().prop_map(Op::Register),
        4 => (t.clone(), t.clone(), 0u32..5000, proptest::bool::weighted(0.1))
            .prop_map(|(from, to, duration, as_other)| Op::Request { from, to, duration, as_other }),
        1 => t.clone().prop_map(Op::Poll),
        2 => (t.clone(), proptest::bool::weighted(0.7)).prop_map(|(who, permit)| Op::AnswerList { who, permit }),
        2 => (t.clone(), proptest::bool::weighted(0.7)).prop_map(|(who, permit)| Op::AnswerVerdict { who, permit }),
        3 => (0u8..3).prop_map(Op::Triggers),
        3 => Just(Op::Addresses),
        1 => t.clone().prop_map(Op::Offline),
        2 => (t.clone(), 0u32..8000).prop_map(|(who, extra)| Op::Extend { who, extra }),
        2 => (t.clone(), 1u8..=6).prop_map(|(who, reason)| Op::End { who, reason }),
        1 => any::<u8>().prop_map(Op::EndSession),
        4 => (0u32..700_000).prop_map(Op::Advance),
        1 => (0u32..60_000).prop_map(Op::Back),
        1 => t.clone().prop_map(Op::Close),
        1 => t.clone().prop_map(Op::Reconnect),
        1 => Just(Op::UpstreamClosed),
        1 => any::<bool>().prop_map(Op::TsAccepting),
    ]
}

/// The sessions a terminal was told about.
fn sessions_of(w: &World, i: usize) -> Vec<SessionId> {
    w.received(i)
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::AddressNotification(n) => Some(n.session_id),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(proptest_config!(48, "core-session_server.txt"))]

    #[test]
    fn poll_timeout_is_never_in_the_past_after_handle_timeout(
        ops in proptest::collection::vec(op(), 1..60),
        modes in proptest::collection::vec(any::<bool>(), 4),
    ) {
        let mut w = World::new(SessionConfig::default());
        for (k, name) in NAMES.iter().enumerate() {
            let mode = if modes[k] { DecisionMode::PermissionList } else { DecisionMode::TerminalJudges };
            w.add_term(name, mode);
        }
        let registered = |w: &World, i: usize| w.terms[i].channel.is_some();
        let mut next_request = 1u32;
        for op in ops {
            match op {
                Op::Register(i) => {
                    w.register_or_not(usize::from(i));
                }
                Op::Request { from, to, duration, as_other } => {
                    let (f, t) = (usize::from(from), usize::from(to));
                    if registered(&w, f) {
                        let requester = NAMES[if as_other { (f + 1) % 4 } else { f }];
                        w.connect_as(f, requester, NAMES[t], next_request, duration);
                        next_request += 1;
                    }
                }
                Op::Poll(i) => {
                    if registered(&w, usize::from(i)) {
                        w.send(usize::from(i), &Message::Poll(Poll));
                    }
                }
                Op::AnswerList { who, permit } => {
                    let i = usize::from(who);
                    if registered(&w, i) {
                        let names: Vec<&str> = if permit { NAMES.to_vec() } else { Vec::new() };
                        w.answer_lists(i, &names);
                    }
                }
                Op::AnswerVerdict { who, permit } => {
                    let i = usize::from(who);
                    if registered(&w, i) {
                        let v = if permit { Verdict::Permit } else { Verdict::Deny };
                        w.answer_inquiries(i, v);
                    }
                }
                Op::Triggers(o) => {
                    if w.ts.channel.is_some() {
                        let outcome = [TriggerOutcome::Delivered, TriggerOutcome::Offline, TriggerOutcome::Unacknowledged][usize::from(o)];
                        w.ts_answer_triggers(outcome);
                    }
                }
                Op::Addresses => {
                    if w.ts.channel.is_some() {
                        w.ts_answer_addresses();
                    }
                }
                Op::Offline(i) => {
                    let i = usize::from(i);
                    w.terms[i].online = !w.terms[i].online;
                }
                Op::Extend { who, extra } => {
                    let i = usize::from(who);
                    if let Some(&id) = sessions_of(&w, i).last() {
                        w.extend(i, id, extra);
                    }
                }
                Op::End { who, reason } => {
                    let i = usize::from(who);
                    if let Some(&id) = sessions_of(&w, i).last() {
                        w.end_notification(i, id, EndReason::from_wire(reason).unwrap(), 100);
                    }
                }
                Op::EndSession(k) => {
                    let started = w.started();
                    if !started.is_empty() {
                        let id = started[usize::from(k) % started.len()].session_id;
                        let _ = w.ss.end_session(w.now, id);
                        w.pump();
                    }
                }
                Op::Advance(ms) => w.advance(Duration::from_millis(u64::from(ms))),
                Op::Back(ms) => {
                    let earlier = w.now.saturating_sub(Duration::from_millis(u64::from(ms)));
                    w.ss.handle_timeout(earlier);
                    w.pump();
                }
                Op::Close(i) => {
                    let conn = w.terms[usize::from(i)].conn;
                    w.ss.handle_connection_closed(w.now, conn);
                }
                Op::Reconnect(i) => w.reconnect(usize::from(i)),
                Op::UpstreamClosed => {
                    w.ss.handle_upstream_closed(w.now);
                    w.pump();
                }
                Op::TsAccepting(on) => w.ts.accepting = on,
            }
            w.ss.handle_timeout(w.now);
            w.pump();
            check_timeout(&w);
            // Never more than one record per session.
            let mut seen = BTreeMap::new();
            for r in w.records() {
                prop_assert!(seen.insert(r.session_id.0, ()).is_none(), "two records for one session");
            }
        }
        // Run everything out: every started session has exactly one record.
        let end: Instant = w.now + Duration::from_secs(4 * 3600);
        w.run_until(end);
        check_timeout(&w);
        let records = w.records();
        let started = w.started();
        prop_assert_eq!(records.len(), started.len());
        for s in &started {
            prop_assert_eq!(records.iter().filter(|r| r.session_id == s.session_id).count(), 1);
        }
        prop_assert_eq!(w.ss.session_count(), 0);
        prop_assert_eq!(w.ss.pending_request_count(), 0);
        prop_assert_eq!(w.ss.scheduled_denial_count(), 0);
    }
}

impl World {
    /// Registers terminal `i` if the server answers (it may be rate limited
    /// or refused; then nothing happens).
    pub fn register_or_not(&mut self, i: usize) {
        self.start_registration(i);
        if self.terms[i].initiator.is_none() && self.terms[i].channel.is_some() {
            self.send(i, &Message::Poll(Poll));
        }
    }
}
