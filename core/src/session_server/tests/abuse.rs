//! Issue 12: what a burst of requests, a full budget, a flood of
//! registrations or a dead stream does to the session server.

use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use super::harness::*;
use super::*;
use crate::wire::{DecisionMode, ErrorCode, Message, TriggerOutcome, Verdict};
use DecisionMode::{PermissionList as ListMode, TerminalJudges as JudgeMode};

/// `n` registered requesters named `R0`, `R1`, ...
fn requesters(w: &mut World, n: usize) -> Vec<usize> {
    (0..n).map(|i| w.term(&format!("R{i}"), ListMode)).collect()
}

fn count_received(w: &World, i: usize, pick: impl Fn(&Message<'_>) -> bool) -> usize {
    w.received(i).iter().filter(|(_, m)| pick(m)).count()
}

#[test]
fn s503_burst_for_one_target_sends_one_trigger_and_one_list_request() {
    let mut w = World::new(SessionConfig::default());
    let target = w.term("term1", ListMode);
    let rs = requesters(&mut w, 30);
    for (n, &r) in rs.iter().enumerate() {
        for k in 0..3 {
            w.connect(r, "term1", (n * 10 + k) as u32 + 1, 0);
        }
    }
    assert_eq!(w.ss.pending_request_count(), 64, "the target's share");
    assert_eq!(w.ts_triggers().len(), 1, "one trigger for the whole burst");
    w.ts_answer_triggers(TriggerOutcome::Delivered);
    assert_eq!(
        count_received(&w, target, |m| matches!(
            m,
            Message::PermissionListRequest(_)
        )),
        1,
        "one permission list request for the whole burst"
    );
    w.answer_lists(target, &["r0"]);
    w.ts_answer_addresses();
    let started = w.started();
    assert!(!started.is_empty(), "R0 was permitted");
    assert!(started.iter().all(|s| s.requester == "r0"));
    w.advance(secs(6));
    let denied = w.denials().len();
    assert_eq!(
        denied + started.len(),
        90,
        "every other request got the uniform deny"
    );
}

#[test]
fn s1202_burst_in_judge_mode_asks_once_per_requester_name() {
    let mut w = World::new(SessionConfig::default());
    let target = w.term("term1", JudgeMode);
    let rs = requesters(&mut w, 5);
    for (n, &r) in rs.iter().enumerate() {
        for k in 0..4 {
            w.connect(r, "term1", (n * 10 + k) as u32 + 1, 0);
        }
    }
    w.ts_answer_triggers(TriggerOutcome::Delivered);
    let asked = w.answer_inquiries(target, Verdict::Deny);
    assert_eq!(asked.len(), 5, "one inquiry per requester: {asked:?}");
    w.advance(secs(6));
    assert_eq!(w.denials().len(), 20);
}

#[test]
fn flood_from_one_requester_never_takes_another_requesters_slot_at_a_target() {
    let mut config = SessionConfig::default();
    config.limits.max_pending_per_target = 8;
    let mut w = World::new(config);
    let target = w.term("term1", ListMode);
    let flooder = w.term("FLOOD", ListMode);
    let friend = w.term("friend", ListMode);
    for id in 1..=20 {
        w.connect(flooder, "term1", id, 0);
    }
    assert_eq!(w.ss.pending_request_count(), 8);
    w.connect(friend, "term1", 100, 0);
    assert_eq!(w.ss.pending_request_count(), 8, "the flooder gave way");
    w.ts_answer_triggers(TriggerOutcome::Delivered);
    w.answer_lists(target, &["friend"]);
    w.ts_answer_addresses();
    let started = w.started();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].requester, "friend");
}

#[test]
fn flood_across_targets_never_takes_another_requesters_slot_in_the_table() {
    let mut config = SessionConfig::default();
    config.limits.max_pending_requests = 8;
    let mut w = World::new(config);
    let targets: Vec<usize> = (0..4).map(|i| w.term(&format!("T{i}"), ListMode)).collect();
    let flooder = w.term("FLOOD", ListMode);
    let friend = w.term("friend", ListMode);
    for id in 1..=20u32 {
        w.connect(flooder, &format!("T{}", id % 4), id, 0);
    }
    assert_eq!(w.ss.pending_request_count(), 8);
    w.connect(friend, "T0", 100, 0);
    w.ts_answer_triggers(TriggerOutcome::Delivered);
    w.answer_lists(targets[0], &["friend"]);
    w.ts_answer_addresses();
    assert!(w.started().iter().any(|s| s.requester == "friend"));
}

#[test]
fn full_budget_answers_unknown_and_existing_names_alike() {
    let mut config = SessionConfig::default();
    config.limits.max_pending_requests = 2;
    let mut w = World::new(config);
    w.term("term1", ListMode);
    let rs = requesters(&mut w, 3);
    // Two requesters fill the table with requests that stay pending.
    w.connect(rs[0], "term1", 1, 0);
    w.connect(rs[1], "term1", 2, 0);
    let start = w.now;
    // The third asks for an existing name (table full) and an unknown one.
    w.connect(rs[2], "term1", 3, 0);
    w.connect(rs[2], "NOBODY", 4, 0);
    w.advance(secs(6));
    let errors = w.errors(rs[2]);
    assert_eq!(errors.len(), 2, "both answered");
    assert!(errors.iter().all(|(at, _, _)| *at == start + DENY_DELAY));
    assert_eq!(errors[0].1.len(), errors[1].1.len());
    assert_eq!(errors[0].2, errors[1].2, "the same bytes on the wire");
}

#[test]
fn channel_whose_stream_closed_is_removed_after_the_grace() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let device = w.device(t1);
    let conn = w.terms[t1].conn;
    w.ss.handle_connection_closed(w.now, conn);
    w.pump();
    w.advance(CHANNEL_ORPHAN_GRACE - secs(1));
    assert_eq!(w.ss.channel_count(), 1, "kept through the grace");
    w.advance(secs(2));
    assert_eq!(w.ss.channel_count(), 0);
    assert_eq!(w.ss.live_device("term1"), None);
    assert!(w.ts_revokes().iter().any(|r| r.device_id.0 == device));
    assert_eq!(w.ss.counters().channels_orphaned, 1);
}

#[test]
fn owner_re_registration_fits_at_the_channel_cap() {
    let mut config = SessionConfig::default();
    config.limits.max_channels = 2;
    let mut w = World::new(config);
    let t1 = w.term("term1", ListMode);
    w.term("term2", ListMode);
    let stranger = w.add_term("term3", ListMode);
    w.start_registration(stranger);
    assert_eq!(w.terms[stranger].refused, Some(ErrorCode::Busy));
    // The owner of TERM1 comes back on a new stream: it fits.
    w.reconnect(t1);
    w.register(t1);
    assert!(w.terms[t1].channel.is_some());
    assert_eq!(
        w.ss.live_device("term1"),
        w.terms[t1].channel_no.map(crate::wire::DeviceId)
    );
}

#[test]
fn decoys_make_way_for_an_owner_at_the_cap() {
    let mut config = SessionConfig::default();
    config.limits.max_channels = 2;
    let mut w = World::new(config);
    w.term("term1", ListMode);
    let t2 = w.term("term2", ListMode);
    // TERM2's stream is gone and its channel with it.
    let conn = w.terms[t2].conn;
    w.ss.handle_connection_closed(w.now, conn);
    w.advance(CHANNEL_ORPHAN_GRACE + secs(1));
    // An impostor's decoy takes the free place.
    let impostor = w.add_term("term1", ListMode);
    w.register(impostor);
    assert_eq!(w.ss.channel_count(), 2);
    // TERM2's owner still gets in.
    w.reconnect(t2);
    w.register(t2);
    assert_eq!(
        w.ss.live_device("term2"),
        w.terms[t2].channel_no.map(crate::wire::DeviceId)
    );
}

fn with_ttl(ttl: core::time::Duration) -> SessionConfig {
    SessionConfig {
        binding_ttl: Some(ttl),
        ..SessionConfig::default()
    }
}

fn unbound(w: &World, name: &str) -> bool {
    w.facts
        .iter()
        .any(|f| matches!(f, SessionFact::NameUnbound { name: n, .. } if n == name))
}

#[test]
fn unused_binding_expires_after_the_ttl_and_the_name_is_free_again() {
    let ttl = secs(3600);
    let mut w = World::new(with_ttl(ttl));
    let t1 = w.term("term1", ListMode);
    let conn = w.terms[t1].conn;
    w.ss.handle_connection_closed(w.now, conn);
    w.advance(ttl - secs(60));
    assert!(!unbound(&w, "term1"), "expired before its TTL");
    w.advance(secs(120));
    assert!(unbound(&w, "term1"));
    assert_eq!(w.ss.registry().key_of(Name::new("term1").unwrap()), None);
    assert_eq!(w.ss.counters().bindings_expired, 1);
    // Another key may take it now.
    let newcomer = w.term("term1", ListMode);
    assert_eq!(
        w.ss.registry().key_of(Name::new("term1").unwrap()),
        Some(w.terms[newcomer].kp.public_key())
    );
}

#[test]
fn live_binding_never_expires_and_its_seen_time_is_stored_again() {
    let ttl = secs(3600);
    let mut w = World::new(with_ttl(ttl));
    let t1 = w.term("term1", ListMode);
    w.advance(ttl * 3);
    assert!(!unbound(&w, "term1"));
    assert_eq!(
        w.ss.registry().key_of(Name::new("term1").unwrap()),
        Some(w.terms[t1].kp.public_key())
    );
    let seen = w
        .facts
        .iter()
        .filter(|f| matches!(f, SessionFact::NameSeen { .. }))
        .count();
    assert!(seen >= 3, "seen {seen} times");
}

#[test]
fn registrations_store_the_seen_time_at_most_once_per_resolution() {
    let mut w = World::new(with_ttl(secs(24 * 3600)));
    let t1 = w.term("term1", ListMode);
    for _ in 0..5 {
        w.advance(secs(60));
        w.reconnect(t1);
        w.register(t1);
    }
    let seen = |w: &World| {
        w.facts
            .iter()
            .filter(|f| matches!(f, SessionFact::NameSeen { .. }))
            .count()
    };
    assert_eq!(seen(&w), 1, "one write for six registrations in minutes");
    w.advance(BINDING_SEEN_RESOLUTION);
    w.reconnect(t1);
    w.register(t1);
    assert_eq!(seen(&w), 2);
}

#[test]
fn without_a_ttl_bindings_never_expire() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let conn = w.terms[t1].conn;
    w.ss.handle_connection_closed(w.now, conn);
    w.advance(secs(400 * 24 * 3600));
    assert!(!unbound(&w, "term1"));
    assert!(w
        .ss
        .registry()
        .key_of(Name::new("term1").unwrap())
        .is_some());
}

#[test]
fn restored_seen_times_expire_after_a_restart() {
    let ttl = secs(3600);
    let mut first = World::new(with_ttl(ttl));
    first.term("term1", ListMode);
    let bindings: Vec<(String, crate::wire::PublicKey)> = first
        .ss
        .registry()
        .bindings()
        .map(|(n, k)| (n.as_str().to_string(), k))
        .collect();
    let seen: Vec<SessionFact> = first
        .facts
        .iter()
        .filter(|f| matches!(f, SessionFact::NameSeen { .. }))
        .cloned()
        .collect();
    let registry = crate::names::NameRegistry::from_bindings(
        crate::names::TrustMode::TrustOnFirstUse,
        bindings.iter().map(|(n, k)| (Name::new(n).unwrap(), *k)),
    )
    .unwrap();
    let mut w = World::with_registry(with_ttl(ttl), registry, 5);
    w.now = first.now;
    for fact in &seen {
        w.ss.restore_session(fact).unwrap();
    }
    w.advance(ttl + secs(1));
    assert!(unbound(&w, "term1"));
}

#[test]
fn channel_on_a_stream_the_server_closed_is_removed_after_the_grace() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    // The same stream floods handshakes until the server closes it.
    let conn = w.terms[t1].conn;
    let init = w.terms[t1].last_init.clone();
    for _ in 0..2 * crate::session_server::IDENTITY_REGISTRATIONS.capacity() {
        w.ss.handle_stream(w.now, conn, &init);
        w.pump();
    }
    // Over the identity's limit: told to retry later, then closed.
    assert!(w.terms[t1].retry_later.is_some());
    w.advance(crate::session_server::RETRY_LATER_LINGER);
    assert!(w.closed.contains(&conn), "the flooding stream was closed");
    w.advance(CHANNEL_ORPHAN_GRACE + secs(1));
    assert_eq!(w.ss.live_device("term1"), None);
    // The live channel and the pending ones the replays opened.
    assert!(w.ss.counters().channels_orphaned >= 1);
    assert_eq!(w.ss.channel_count(), 0);
}

#[test]
fn binding_expiry_at_the_end_of_the_clock_never_spins() {
    let ttl = secs(3600);
    let mut w = World::new(with_ttl(ttl));
    w.now = Instant::from_micros(u64::MAX - 10);
    w.term("term1", ListMode);
    w.advance(secs(1));
    // A live name refreshed at the end of time is not due again forever.
    let facts = w.facts.len();
    w.advance(secs(1));
    assert_eq!(w.facts.len(), facts, "no facts pile up");
}
