//! Cross-server connection requests: two servers, each in its world, the
//! peer messages carried between them by hand (the drivers' transport).

use std::vec;
use std::vec::Vec;

use super::super::*;
use super::harness::*;
use crate::names::{NameRegistry, TrustMode};
use crate::wire::{DecisionMode, EndReason, Message, Name, Role, TriggerOutcome};

/// Two servers routing to each other: `home` registered at A, `phone` at
/// B, each binding known to both (as the shared store makes it).
fn cluster() -> (World, World, usize, usize) {
    let tofu = || NameRegistry::new(TrustMode::TrustOnFirstUse);
    let mut a = World::with_registry(SessionConfig::default(), tofu(), 1);
    let mut b = World::with_registry(SessionConfig::default(), tofu(), 2);
    a.ss.set_peers(true);
    b.ss.set_peers(true);
    let home = a.term("home", DecisionMode::PermissionList);
    let phone = b.term("phone", DecisionMode::PermissionList);
    let home_key = a.terms[home].kp.public_key();
    let phone_key = b.terms[phone].kp.public_key();
    b.ss.registry_mut()
        .enroll(Name::new("home").unwrap(), home_key)
        .unwrap();
    a.ss.registry_mut()
        .enroll(Name::new("phone").unwrap(), phone_key)
        .unwrap();
    (a, b, home, phone)
}

/// Hands every queued peer message of `from` to `to`; how many, and the
/// fact count each had to wait for.
fn shuttle(from: &mut World, to: &mut World) -> Vec<u64> {
    let mut after = Vec::new();
    while let Some((n, m)) = from.ss.poll_peer() {
        after.push(n);
        let bytes = m.encode().unwrap();
        let m = PeerMessage::decode(&bytes).unwrap();
        to.ss.handle_peer(to.now, &m);
        to.pump();
    }
    after
}

#[test]
fn cross_server_request_is_decided_and_recorded_at_the_targets_server() {
    let (mut a, mut b, home, phone) = cluster();
    b.connect(phone, "home", 7, 60);
    // B locates its requester, then asks the cluster.
    assert_eq!(b.ts_triggers().len(), 0);
    b.ts_answer_addresses();
    assert_eq!(shuttle(&mut b, &mut a).len(), 1);
    // A runs the seed's flow for its target: trigger, list, address.
    assert_eq!(a.ts_triggers().len(), 1);
    a.ts_answer_triggers(TriggerOutcome::Delivered);
    a.answer_lists(home, &["phone"]);
    a.ts_answer_addresses();
    let started = a.started();
    assert_eq!(started.len(), 1);
    let id = started[0].session_id;
    assert!(a.received(home).iter().any(|(_, m)| matches!(
        m,
        Message::AddressNotification(n) if n.role == Role::Connected && n.session_id == id
    )));
    // The grant leaves only after A's SessionStarted is stored.
    let grant_after = shuttle(&mut a, &mut b);
    assert_eq!(grant_after.len(), 1);
    let n = usize::try_from(grant_after[0]).unwrap();
    assert!(matches!(a.facts[n - 1], SessionFact::SessionStarted(_)));
    // B's requester hears it under its own request ID; no denial follows.
    assert!(b.received(phone).iter().any(|(_, m)| matches!(
        m,
        Message::AddressNotification(n)
            if n.role == Role::Connecting && n.session_id == id && n.request_id == 7
    )));
    b.advance(secs(30));
    a.advance(secs(1));
    assert!(b.denials().is_empty(), "{:?}", b.denials());
    assert!(b.started().is_empty(), "B owns nothing");
    // Both ends reach A (the requester's through B): one record, at A.
    a.end_notification(home, id, EndReason::Completed, 10);
    b.end_notification(phone, id, EndReason::Completed, 10);
    assert_eq!(shuttle(&mut b, &mut a).len(), 1);
    let records = a.records();
    assert_eq!(records.len(), 1);
    assert!(b.records().is_empty());
}

#[test]
fn an_unanswered_cross_server_request_is_denied_like_any_other_at_its_deny_time() {
    let (a, mut b, _home, phone) = cluster();
    b.connect(phone, "home", 8, 60);
    let asked = b.now;
    b.ts_answer_addresses();
    // Nobody answers (the target's server died): the uniform denial.
    while b.ss.poll_peer().is_some() {}
    b.advance(secs(30));
    assert_eq!(b.denials(), vec![(8, DenyReason::NoAnswer)]);
    let errors = b.errors(phone);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, asked + SessionConfig::default().deny_delay);
    // The same bytes as a lone server's denial of an offline target.
    let mut lone = World::new(SessionConfig::default());
    let t = lone.term("phone", DecisionMode::PermissionList);
    let home_key = a.terms[0].kp.public_key();
    lone.ss
        .registry_mut()
        .enroll(Name::new("home").unwrap(), home_key)
        .unwrap();
    lone.connect(t, "home", 8, 60);
    lone.advance(secs(30));
    assert_eq!(lone.denials(), vec![(8, DenyReason::TargetOffline)]);
    assert_eq!(lone.errors(t)[0].1, errors[0].1);
    assert_eq!(lone.errors(t)[0].2, errors[0].2);
}
