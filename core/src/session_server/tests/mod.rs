//! Flow tests of the session server, named after the seed steps, driven by
//! bytes built with the codec and crypto APIs (see [`harness`]).

mod abuse;
mod enrol;
mod forced;
mod harness;
mod peer;
mod props;
mod streams;
mod tickets;

use std::string::ToString;
use std::vec;
use std::vec::Vec;

use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use harness::*;

use super::*;
use crate::crypto::StaticKeypair;
use crate::machine::ConnectionId;
use crate::names::{NameRegistry, TrustMode};
use crate::time::Instant;
use crate::wire::{
    AddressNotification, DecisionMode, EndReason, ErrorCode, ErrorReply, Message, Name, Role,
    SessionId, TriggerOutcome, Verdict,
};

use DecisionMode::{PermissionList as ListMode, TerminalJudges as JudgeMode};

fn notifications(w: &World, i: usize) -> Vec<(Instant, AddressNotification<'_>)> {
    w.received(i)
        .into_iter()
        .filter_map(|(t, m)| match m {
            Message::AddressNotification(n) => Some((t, n)),
            _ => None,
        })
        .collect()
}

/// One microsecond before `t`.
fn just_before(t: Instant) -> Instant {
    t.saturating_sub(core::time::Duration::from_micros(1))
}

fn count<T>(v: &[T], f: impl Fn(&T) -> bool) -> usize {
    v.iter().filter(|x| f(x)).count()
}

// ------------------------------------------------------------ registration

#[test]
fn registration_passes_the_terminals_local_udp_address_on_in_its_key_install() {
    // The local address a terminal's Register names (for the operator's
    // NAT type guess) reaches the trigger server with its key, and only
    // that terminal's.
    let mut w = World::new(SessionConfig::default());
    let t1 = w.add_term("term1", ListMode);
    let t2 = w.add_term("term2", ListMode);
    let local: SocketAddr = "192.168.1.2:40000".parse().unwrap();
    w.terms[t1].local = Some(local);
    w.register(t1);
    w.register(t2);
    let installs = w.ts_installs();
    assert_eq!(installs.len(), 2);
    let of = |i: usize| {
        installs
            .iter()
            .find(|k| k.device_id.0 == w.device(i))
            .map(|k| k.local)
    };
    assert_eq!(of(t1), Some(Some(local)));
    assert_eq!(of(t2), Some(None));
}

#[test]
fn s702_registration_binds_name_to_key_and_returns_device_id_and_udp_key() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.add_term("term1", ListMode);
    w.start_registration(t1);
    let device = w.device(t1);
    let udp_key = w.terms[t1].udp_key.unwrap();
    assert_ne!(device, 0);
    // Pending until the terminal proves it holds the keys: nothing is live
    // and nothing is installed at the trigger server yet.
    assert_eq!(w.ss.live_device("term1"), None);
    assert!(w.ts_installs().is_empty());
    assert!(!w
        .events
        .iter()
        .any(|(_, e)| matches!(e, SessionEvent::Registered { .. })));

    w.send(t1, &Message::Poll(crate::wire::Poll));
    let key = w.terms[t1].kp.public_key();
    assert_eq!(
        w.ss.live_device("term1"),
        w.terms[t1].channel_no.map(crate::wire::DeviceId)
    );
    assert_eq!(
        w.ss.registry().key_of(Name::new("term1").unwrap()),
        Some(key)
    );
    let installs = w.ts_installs();
    assert_eq!(installs.len(), 1);
    assert_eq!(installs[0].device_id.0, device);
    assert_eq!(installs[0].udp_key, udp_key);
    let events = w.events_since(0);
    let bound = events
        .iter()
        .position(|e| {
            *e == SessionEvent::NameBound {
                name: "term1".into(),
                key,
            }
        })
        .expect("NameBound");
    let registered = events
        .iter()
        .position(|e| {
            matches!(e, SessionEvent::Registered {
                name,
                key: k,
                // The server's own number for the channel (the stream's).
                device_id,
                udp_device_id,
                mode: ListMode,
            } if name == "term1" && *k == key
                && *device_id == crate::wire::DeviceId(w.terms[t1].channel_no.unwrap())
                && udp_device_id != device_id)
        })
        .expect("Registered");
    assert!(bound < registered);

    // The same key registering again: a new device, the old one revoked,
    // and no second NameBound.
    w.reconnect(t1);
    w.register(t1);
    let second = w.device(t1);
    assert_ne!(second, device);
    assert_eq!(
        w.ss.live_device("term1"),
        w.terms[t1].channel_no.map(crate::wire::DeviceId)
    );
    assert_eq!(w.ts_revokes().len(), 1);
    assert_eq!(w.ts_revokes()[0].device_id.0, device);
    assert_eq!(w.ts_installs().len(), 2);
    assert_eq!(
        count(&w.events_since(0), |e| matches!(
            e,
            SessionEvent::NameBound { .. }
        )),
        1
    );
    assert_eq!(w.ss.channel_count(), 1, "the old channel is dropped");
}

#[test]
fn s702_second_key_for_a_bound_name_gets_a_decoy_and_is_reported() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let live = w.ss.live_device("term1");
    let impostor = w.add_term("term1", ListMode);
    w.register(impostor);
    // Answered like any registration: the impostor cannot tell.
    assert_eq!(w.terms[impostor].refused, None);
    assert!(w.terms[impostor].channel.is_some());
    let presented = w.terms[impostor].kp.public_key();
    let events = w.events_since(0);
    assert!(events.iter().any(|e| matches!(
        e,
        SessionEvent::ImpersonationAttempt(a) if a.name == "term1" && a.presented_key == presented
    )));
    // Reachable over UDP like any terminal (its key is installed) ...
    assert_eq!(w.ts_installs().len(), 2);
    // ... but never the name's: the owner stays live and bound.
    assert_eq!(w.ss.live_device("term1"), live);
    assert_eq!(
        w.ss.registry().key_of(Name::new("term1").unwrap()),
        Some(w.terms[t1].kp.public_key())
    );
    assert!(
        !w.facts
            .iter()
            .any(|f| matches!(f, SessionFact::NameBound { key, .. } if *key == presented)),
        "a decoy binds nothing"
    );
    // A request aimed at the name reaches the owner; the decoy's own
    // requests get the uniform deny.
    let t3 = w.term("term3", ListMode);
    w.connect(t3, "term1", 1, 0);
    w.ts_answer_triggers(TriggerOutcome::Delivered);
    assert!(w
        .received(t1)
        .iter()
        .any(|(_, m)| matches!(m, Message::PermissionListRequest(_))));
    assert!(!w
        .received(impostor)
        .iter()
        .any(|(_, m)| matches!(m, Message::PermissionListRequest(_))));
    w.connect(impostor, "term3", 9, 0);
    w.advance(secs(6));
    assert!(w.denials().contains(&(9, DenyReason::BadRequester)));
}

#[test]
fn s702_registration_answer_does_not_depend_on_whether_the_name_is_bound() {
    let mut w = World::new(SessionConfig::default());
    w.term("term1", ListMode);
    let answer = |w: &mut World, name: &str| {
        let i = w.add_term(name, ListMode);
        w.start_registration(i);
        (
            w.terms[i].reply_len,
            w.terms[i].refused,
            w.terms[i].channel.is_some(),
        )
    };
    let bound = answer(&mut w, "term1");
    let free = answer(&mut w, "term2");
    assert_eq!(bound, free, "a bound and a free name answer alike");
    assert_eq!(bound.1, None);
}

#[test]
fn closed_registry_gives_no_decoy_only_the_same_refusal() {
    let mut registry = NameRegistry::new(TrustMode::Closed);
    let mut rng =
        <rand_chacha::ChaCha20Rng as rand_chacha::rand_core::SeedableRng>::seed_from_u64(9);
    let owner = StaticKeypair::generate(&mut rng);
    registry
        .enroll(Name::new("term1").unwrap(), owner.public_key())
        .unwrap();
    let mut w = World::with_registry(SessionConfig::default(), registry, 3);
    let stranger = w.add_term("term1", ListMode);
    w.start_registration(stranger);
    assert_eq!(
        w.terms[stranger].refused,
        Some(ErrorCode::RegistrationRefused)
    );
    assert_eq!(w.ss.channel_count(), 0, "no channel is kept for a refusal");
}

#[test]
fn closed_registry_refuses_unenrolled_names_with_the_same_answer() {
    let mut registry = NameRegistry::new(TrustMode::Closed);
    let mut rng =
        <rand_chacha::ChaCha20Rng as rand_chacha::rand_core::SeedableRng>::seed_from_u64(9);
    let enrolled = StaticKeypair::generate(&mut rng);
    registry
        .enroll(Name::new("camera").unwrap(), enrolled.public_key())
        .unwrap();
    let mut w = World::with_registry(SessionConfig::default(), registry, 3);
    let cam = w.add_term_with(
        "camera",
        ListMode,
        enrolled,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 9),
    );
    w.register(cam);
    let stranger = w.add_term("stranger", ListMode);
    w.start_registration(stranger);
    assert_eq!(
        w.terms[stranger].refused,
        Some(ErrorCode::RegistrationRefused)
    );
    assert!(w.ss.live_device("camera").is_some());
    // Enrolled names are no new bindings.
    assert!(!w
        .events_since(0)
        .iter()
        .any(|e| matches!(e, SessionEvent::NameBound { .. })));
}

#[test]
fn replayed_handshake_init_cannot_replace_a_live_registration() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let live = w.ss.live_device("term1").unwrap();
    let replay = w.terms[t1].last_init.clone();
    // An attacker replays the captured handshake from its own stream.
    let attacker = ConnectionId(9_999);
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 66)), 6666);
    w.ss.handle_connection_opened(w.now, attacker, addr);
    w.ss.handle_stream(w.now, attacker, &replay);
    // It gets a reply and a ticket it cannot read, and a pending channel it cannot confirm.
    let mut replies = 0;
    for (destination, _) in w.take_transmits() {
        assert_eq!(
            destination,
            crate::machine::Destination::Connection(attacker)
        );
        replies += 1;
    }
    assert_eq!(replies, 2);
    w.pump();
    assert_eq!(w.ss.channel_count(), 2);
    assert_eq!(w.ss.live_device("term1"), Some(live));
    assert!(w.ts_revokes().is_empty());
    assert_eq!(w.ts_installs().len(), 1);
    // The live registration keeps working.
    let t3 = w.term("term3", ListMode);
    w.connect(t3, "term1", 1, 0);
    assert_eq!(w.ts_triggers().last().unwrap().device_id.0, w.device(t1));
    assert_eq!(w.terms[t1].channel_no, Some(live.0));
    // The pending one expires unconfirmed.
    w.advance(REGISTRATION_CONFIRM_TIMEOUT + secs(1));
    assert_eq!(w.ss.channel_count(), 2, "TERM1 and TERM3 only");
    assert_eq!(w.ss.live_device("term1"), Some(live));
    assert_eq!(w.ss.counters().registrations_unconfirmed, 1);
    assert!(w
        .ss
        .registry()
        .key_of(Name::new("term1").unwrap())
        .is_some());
}

#[test]
fn unconfirmed_new_binding_is_released_when_it_expires() {
    let mut w = World::new(SessionConfig::default());
    let t = w.add_term("lonely", ListMode);
    w.start_registration(t);
    assert!(w
        .ss
        .registry()
        .key_of(Name::new("lonely").unwrap())
        .is_some());
    w.advance(REGISTRATION_CONFIRM_TIMEOUT);
    assert_eq!(w.ss.channel_count(), 0);
    assert_eq!(w.ss.registry().key_of(Name::new("lonely").unwrap()), None);
    assert!(!w
        .events_since(0)
        .iter()
        .any(|e| matches!(e, SessionEvent::NameBound { .. })));
}

#[test]
fn registration_is_rate_limited_per_source_before_public_key_work() {
    let mut w = World::new(SessionConfig::default());
    let t = w.add_term("term1", ListMode);
    let conn = w.terms[t].conn;
    let junk = enc(&Message::HandshakeInit(crate::wire::HandshakeInit {
        noise: &[0x42; 120],
    }));
    let burst = crate::ratelimit::REGISTRATIONS.capacity();
    for _ in 0..burst {
        w.ss.handle_stream(w.now, conn, &junk);
    }
    w.pump();
    assert_eq!(w.ss.counters().handshake_failures, u64::from(burst));
    // The next one, even a valid one, is refused before any Noise work,
    // told in clear when to retry, and its stream closed once that left.
    w.start_registration(t);
    w.pump();
    assert!(w.terms[t].channel.is_none() && w.terms[t].refused.is_none());
    assert_eq!(w.ss.counters().registrations_rate_limited, 1);
    assert_eq!(w.ss.counters().handshake_failures, u64::from(burst));
    // One token every 50 ms: the wait rounds up to a whole second.
    assert_eq!(w.terms[t].retry_later, Some(1));
    assert!(!w.closed.contains(&conn), "closed before the answer left");
    w.advance(crate::session_server::RETRY_LATER_LINGER);
    assert!(w.closed.contains(&conn));
    assert_eq!(w.ss.stream_guard_counters().closed_after_answer, 1);
    // The stream is forgotten; another source is not affected.
    w.ss.handle_stream(w.now, conn, &junk);
    assert_eq!(w.ss.counters().unknown_connection, 1);
    let other = w.term("term3", ListMode);
    assert!(w.terms[other].channel.is_some());
    // After the refill interval the source may register again.
    w.advance(crate::ratelimit::REGISTRATIONS.interval());
    w.reconnect(t);
    w.register(t);
    assert!(w.ss.live_device("term1").is_some());
}

// ----------------------------------------------------------- trigger link

#[test]
fn s503_trigger_is_requested_for_the_target() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    assert_eq!(w.ts.handshakes, 1, "one link for everything so far");
    w.connect(t3, "term1", 7, 0);
    let triggers = w.ts_triggers();
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0].device_id.0, w.device(t1));
    assert!(w.ss.upstream_established());
}

#[test]
fn upstream_link_queues_while_down_and_handshakes_again_when_needed() {
    let mut w = World::new(SessionConfig::default());
    w.ts.accepting = false;
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    // No reply from the trigger server: both key installs wait in the queue.
    assert!(!w.ss.upstream_established());
    assert!(w.ts_installs().is_empty());
    w.ts.accepting = true;
    // The handshake times out, then a new one (after the backoff) succeeds.
    w.advance(crate::crypto::HANDSHAKE_TIMEOUT + UPSTREAM_RETRY_MIN);
    assert!(w.ss.upstream_established());
    let installs = w.ts_installs();
    assert_eq!(installs.len(), 2);
    assert_eq!(installs[0].device_id.0, w.device(t1));
    assert_eq!(installs[1].device_id.0, w.device(t3));
    // Lost link: nothing is re-installed; the next need handshakes again.
    w.ss.handle_upstream_closed(w.now);
    w.pump();
    assert!(!w.ss.upstream_established());
    let handshakes = w.ts.handshakes;
    w.advance(secs(5));
    assert_eq!(
        w.ts.handshakes, handshakes,
        "no handshake while nothing is needed"
    );
    w.connect(t3, "term1", 1, 0);
    assert_eq!(w.ts.handshakes, handshakes + 1);
    assert_eq!(w.ts_triggers().len(), 1);
    assert_eq!(w.ts_installs().len(), 2);
}

/// Found by the `session_server_ops` fuzz target: with the link needed and
/// unanswered, `handle_timeout(Instant::MAX)` started a new handshake for
/// ever, as every deadline saturated to `now`.
#[test]
fn upstream_link_does_not_spin_at_the_end_of_the_clock() {
    let mut w = World::new(SessionConfig::default());
    w.ts.accepting = false;
    w.term("term1", ListMode);
    assert!(!w.ss.upstream_established());
    assert!(w.ss.poll_timeout().is_some(), "the handshake is in flight");
    w.ss.handle_timeout(Instant::MAX);
    assert_eq!(w.ss.poll_timeout(), None);
    // Later inputs at the end of the clock return too.
    w.ss.handle_upstream_closed(Instant::MAX);
    w.ss.handle_timeout(Instant::MAX);
    assert_eq!(w.ss.poll_timeout(), None);
}

#[test]
fn upstream_queue_is_bounded() {
    let mut config = SessionConfig::default();
    config.limits.max_upstream_queue = 2;
    let mut w = World::new(config);
    w.ts.accepting = false;
    for name in ["a", "b", "c", "d"] {
        w.term(name, ListMode);
    }
    assert_eq!(w.ss.counters().upstream_queue_dropped, 2);
    w.ts.accepting = true;
    w.advance(crate::crypto::HANDSHAKE_TIMEOUT + UPSTREAM_RETRY_MIN);
    let installed: Vec<u64> = w.ts_installs().iter().map(|k| k.device_id.0).collect();
    assert_eq!(
        installed,
        vec![w.device(2), w.device(3)],
        "the oldest were dropped"
    );
}

// ------------------------------------------------- requests and decisions

#[test]
fn s505_s506_permission_list_search_permits_a_listed_requester() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    w.connect(t3, "term1", 7, 0);
    w.ts_answer_triggers(TriggerOutcome::Delivered);
    // S503: the target is asked for its list after it polled.
    assert!(w
        .received(t1)
        .iter()
        .any(|(_, m)| matches!(m, Message::PermissionListRequest(_))));
    w.answer_lists(t1, &["phone-of-anna", "term3"]);
    let inquiries = w.ts_inquiries();
    assert_eq!(inquiries.len(), 1);
    assert_eq!(inquiries[0].first.0, w.device(t3));
    assert_eq!(inquiries[0].second.0, w.device(t1));
    w.ts_answer_addresses();
    assert_eq!(w.started().len(), 1);
    assert_eq!(notifications(&w, t1).len(), 1);
    assert_eq!(notifications(&w, t3).len(), 1);
    assert!(w.errors(t3).is_empty());
    // No deny follows a success.
    w.advance(DENY_DELAY + secs(1));
    assert!(w.errors(t3).is_empty());
    assert_eq!(w.ss.pending_request_count(), 0);
}

#[test]
fn s505_names_are_compared_in_their_canonical_form_everywhere() {
    let mut w = World::new(SessionConfig::default());
    // Registered as "Home", bound and shown as "home".
    let home = w.term("Home", ListMode);
    let phone = w.term("phone", ListMode);
    let live = w.ss.live_device("HOME");
    assert!(live.is_some());
    assert_eq!(
        w.ss.live_terminals().map(|(n, _)| n).collect::<Vec<_>>(),
        ["home", "phone"]
    );
    // Asked for as fullwidth "ＨＯＭＥ", listed as "PHONE": one name each.
    w.connect(phone, "\u{ff28}\u{ff2f}\u{ff2d}\u{ff25}", 7, 0);
    w.ts_answer_triggers(TriggerOutcome::Delivered);
    w.answer_lists(home, &["PHONE"]);
    w.ts_answer_addresses();
    let started = w.started();
    assert_eq!(started.len(), 1, "{:?}", w.denials());
    assert_eq!(
        (started[0].requester.as_str(), started[0].target.as_str()),
        ("phone", "home")
    );
    // A look-alike from another key cannot take the bound name.
    let other = w.add_term("HOME", ListMode);
    w.register(other);
    assert!(w.events.iter().any(|(_, e)| matches!(
        e,
        SessionEvent::ImpersonationAttempt(a) if a.name == "home"
    )));
    assert_eq!(
        w.ss.live_device("home"),
        live,
        "the owner's registration stays"
    );
}

#[test]
fn s503_permission_list_search_denies_unknown_requester() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let asked = w.now;
    w.connect(t3, "term1", 7, 0);
    w.ts_answer_triggers(TriggerOutcome::Delivered);
    w.answer_lists(t1, &["phone-of-anna"]);
    assert!(w.ts_inquiries().is_empty(), "no address is looked up");
    assert!(w.errors(t3).is_empty(), "not before the deny delay");
    w.advance(DENY_DELAY);
    let errors = w.errors(t3);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, asked + DENY_DELAY);
    assert_eq!(w.denials(), vec![(7, DenyReason::NotInList)]);
    assert!(notifications(&w, t1).is_empty());
    assert!(w.started().is_empty());
}

#[test]
fn s1101_terminal_verdict_permit_starts_a_session() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", JudgeMode);
    let t3 = w.term("term3", ListMode);
    w.connect(t3, "term1", 7, 0);
    w.ts_answer_triggers(TriggerOutcome::Delivered);
    // S1202: the target is told who asks.
    let asked = w.answer_inquiries(t1, Verdict::Permit);
    assert_eq!(asked, vec!["term3".to_string()]);
    assert!(!w
        .received(t1)
        .iter()
        .any(|(_, m)| matches!(m, Message::PermissionListRequest(_))));
    w.ts_answer_addresses();
    let started = w.started();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].requester, "term3");
    assert_eq!(started[0].target, "term1");
    assert_eq!(notifications(&w, t3).len(), 1);
}

/// The plaintext of the reference deny and its sealed length.
fn reference_error(request_id: u32) -> Vec<u8> {
    enc(&Message::Error(ErrorReply {
        request_id,
        code: ErrorCode::NotPermitted,
    }))
}

/// Runs one failing scenario and returns (plaintext, record length, delay
/// after the request) of the only Error the requester got.
fn failing_scenario(kind: DenyReason) -> (Vec<u8>, usize, core::time::Duration) {
    let mut w = World::new(SessionConfig::default());
    let mode = if kind == DenyReason::Refused {
        JudgeMode
    } else {
        ListMode
    };
    let t1 = w.term("term1", mode);
    let t3 = w.term("term3", ListMode);
    if kind == DenyReason::TargetOffline {
        w.ss.registry
            .enroll(Name::new("term9").unwrap(), w.terms[t1].kp.public_key())
            .unwrap();
    }
    if kind == DenyReason::RateLimited {
        for id in 100..100 + crate::ratelimit::CONNECTION_REQUESTS.capacity() {
            w.connect(t3, "nobody", id, 0);
        }
    }
    if kind == DenyReason::AddressMissing {
        w.terms[t1].online = false;
    }
    let target = match kind {
        DenyReason::UnknownTarget | DenyReason::RateLimited => "nobody",
        DenyReason::TargetOffline => "term9",
        _ => "term1",
    };
    let asked = w.now;
    if kind == DenyReason::BadRequester {
        w.connect_as(t3, "term1", target, 7, 0);
    } else {
        w.connect(t3, target, 7, 0);
    }
    match kind {
        DenyReason::TriggerOffline => w.ts_answer_triggers(TriggerOutcome::Offline),
        DenyReason::TriggerUnacknowledged => w.ts_answer_triggers(TriggerOutcome::Unacknowledged),
        DenyReason::NotInList => {
            w.ts_answer_triggers(TriggerOutcome::Delivered);
            w.answer_lists(t1, &["someone-else"]);
        }
        DenyReason::Refused => {
            w.ts_answer_triggers(TriggerOutcome::Delivered);
            w.answer_inquiries(t1, Verdict::Deny);
        }
        DenyReason::AddressMissing => {
            w.ts_answer_triggers(TriggerOutcome::Delivered);
            w.answer_lists(t1, &["term3"]);
            w.ts_answer_addresses();
        }
        DenyReason::NoAnswer => {
            // Triggered, polled, asked: the target never answers.
            w.ts_answer_triggers(TriggerOutcome::Delivered);
        }
        _ => {}
    }
    w.run_until(just_before(asked + DENY_DELAY));
    let early: Vec<_> = w
        .errors(t3)
        .into_iter()
        .filter(|(_, p, _)| *p == reference_error(7))
        .collect();
    assert!(early.is_empty(), "{kind:?}: deny before the delay");
    w.advance(secs(30));
    let errors: Vec<_> = w
        .errors(t3)
        .into_iter()
        .filter(
            |(_, p, _)| matches!(Message::decode(p), Ok(Message::Error(e)) if e.request_id == 7),
        )
        .collect();
    assert_eq!(errors.len(), 1, "{kind:?}: exactly one answer");
    assert!(
        w.denials().contains(&(7, kind)),
        "{kind:?}: the scenario took another path: {:?}",
        w.denials()
    );
    assert!(w.started().is_empty());
    assert!(notifications(&w, t1).is_empty() && notifications(&w, t3).is_empty());
    let (at, plain, len) = errors[0].clone();
    (plain, len, at - asked)
}

#[test]
fn s511_every_failure_gives_identical_error_bytes_at_the_same_time() {
    let kinds = [
        DenyReason::UnknownTarget,
        DenyReason::TargetOffline,
        DenyReason::TriggerOffline,
        DenyReason::TriggerUnacknowledged,
        DenyReason::NotInList,
        DenyReason::Refused,
        DenyReason::NoAnswer,
        DenyReason::RateLimited,
        DenyReason::AddressMissing,
        DenyReason::BadRequester,
    ];
    let reference = reference_error(7);
    let mut lengths = Vec::new();
    for kind in kinds {
        let (plain, len, delay) = failing_scenario(kind);
        assert_eq!(plain, reference, "{kind:?}: other bytes");
        assert_eq!(delay, DENY_DELAY, "{kind:?}: other time");
        lengths.push(len);
    }
    assert!(
        lengths.windows(2).all(|p| p[0] == p[1]),
        "record lengths differ: {lengths:?}"
    );
}

#[test]
fn requester_name_must_match_its_channel() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let _victim = w.term("term5", ListMode);
    let asked = w.now;
    // TERM3 claims to be TERM5, whom TERM1 would permit.
    w.connect_as(t3, "term5", "term1", 7, 0);
    assert!(
        w.ts_triggers().is_empty(),
        "the target is not even triggered"
    );
    w.advance(DENY_DELAY);
    let errors = w.errors(t3);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, asked + DENY_DELAY);
    assert_eq!(errors[0].1, reference_error(7));
    assert_eq!(w.denials(), vec![(7, DenyReason::BadRequester)]);
    assert!(w.received(t1).is_empty());
}

#[test]
fn requests_beyond_the_per_channel_bound_are_dropped_unanswered() {
    let mut w = World::new(SessionConfig::default());
    let t3 = w.term("term3", ListMode);
    for id in 0..MAX_OUTSTANDING_PER_CHANNEL + 5 {
        w.connect(t3, "nobody", id, 0);
    }
    assert_eq!(w.ss.counters().requests_dropped, 5);
    w.advance(DENY_DELAY);
    assert_eq!(w.errors(t3).len(), MAX_OUTSTANDING_PER_CHANNEL as usize);
    // Answered requests free their places.
    w.connect(t3, "nobody", 1000, 0);
    assert_eq!(w.ss.counters().requests_dropped, 5);
}

// ------------------------------------------------------------- sessions

#[test]
fn s508_session_id_key_and_duration_are_fresh_and_bounded() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let a = w.establish(t3, t1, 1, 0);
    let b = w.establish(t3, t1, 2, 100_000);
    let c = w.establish(t3, t1, 3, 30);
    assert!(a != b && b != c && a != c);
    let started = w.started();
    assert_eq!(started[0].duration_secs, 600, "0 asks for the default");
    assert_eq!(started[1].duration_secs, 3600, "bounded by max_duration");
    assert_eq!(started[2].duration_secs, 30);
    let to_target = notifications(&w, t1);
    let to_requester = notifications(&w, t3);
    assert_eq!(to_target.len(), 3);
    let mut keys = Vec::new();
    for k in 0..3 {
        let (t, r) = (&to_target[k].1, &to_requester[k].1);
        assert_eq!(t.session_id, r.session_id);
        assert_eq!(t.session_key, r.session_key, "both sides get the same key");
        assert_eq!(t.duration_secs, r.duration_secs);
        assert_eq!(t.duration_secs, started[k].duration_secs);
        keys.push(t.session_key.0);
    }
    assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
    assert_eq!(w.ss.session_count(), 3);
}

#[test]
fn s509_s510_each_side_is_notified_with_the_other_sides_address() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let id = w.establish(t3, t1, 42, 0);
    let to_target = notifications(&w, t1);
    let to_requester = notifications(&w, t3);
    assert_eq!(to_target.len(), 1);
    assert_eq!(to_requester.len(), 1);
    let (_, n1) = &to_target[0];
    assert_eq!(n1.session_id, id);
    assert_eq!(n1.request_id, 0);
    assert_eq!(n1.role, Role::Connected);
    assert_eq!(n1.peer_addr, w.terms[t3].addr);
    assert_eq!(n1.peer_name.as_str(), "term3");
    assert_eq!(n1.peer_key, w.terms[t3].kp.public_key());
    let (_, n3) = &to_requester[0];
    assert_eq!(n3.session_id, id);
    assert_eq!(n3.request_id, 42);
    assert_eq!(n3.role, Role::Connecting);
    assert_eq!(n3.peer_addr, w.terms[t1].addr);
    assert_eq!(n3.peer_name.as_str(), "term1");
    assert_eq!(n3.peer_key, w.terms[t1].kp.public_key());
}

fn grants(w: &World, i: usize) -> Vec<u32> {
    w.received(i)
        .into_iter()
        .filter_map(|(_, m)| match m {
            Message::ExtensionGrant(g) => Some(g.duration_secs),
            _ => None,
        })
        .collect()
}

fn refusals(w: &World, i: usize) -> usize {
    w.received(i)
        .iter()
        .filter(|(_, m)| matches!(m, Message::ExtensionRefusal(_)))
        .count()
}

#[test]
fn s1602_s1603_extension_is_granted_within_policy_and_refused_beyond() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let id = w.establish(t3, t1, 1, 3600);
    let start = w.started()[0].start;
    w.run_until(start + secs(2520)); // 70 %
    w.extend(t3, id, 3600);
    assert_eq!(grants(&w, t3), vec![7200]);
    assert_eq!(grants(&w, t1), vec![7200], "the grant goes to both sides");
    let extended: Vec<SessionExtended> = w
        .events_since(0)
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::SessionExtended(x) => Some(x),
            _ => None,
        })
        .collect();
    assert_eq!(extended.len(), 1);
    assert_eq!(extended[0].duration_secs, 7200);
    assert_eq!(extended[0].extensions, 1);
    // The other side asked at the same point: it already has what it asks.
    w.extend(t1, id, 3600);
    assert_eq!(grants(&w, t1), vec![7200, 7200]);
    assert_eq!(
        w.events_since(0)
            .iter()
            .filter(|e| matches!(e, SessionEvent::SessionExtended(_)))
            .count(),
        1
    );
    // At 70 % of the new total, more would exceed max_total_duration.
    w.run_until(start + secs(5040));
    w.extend(t3, id, 3600);
    assert_eq!(refusals(&w, t3), 1);
    assert_eq!(grants(&w, t3), vec![7200]);
    // The record comes at the extended deadline (no notifications).
    w.run_until(just_before(start + secs(7200) + END_GRACE));
    assert!(w.records().is_empty());
    w.advance(secs(1));
    let records = w.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].extensions, 1);
    assert_eq!(records[0].permitted_secs, 7200);

    // A policy that never extends.
    let config = SessionConfig {
        extension_policy: ExtensionPolicy::Never,
        ..SessionConfig::default()
    };
    let mut w = World::new(config);
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let id = w.establish(t3, t1, 1, 100);
    w.advance(secs(70));
    w.extend(t3, id, 100);
    assert_eq!(refusals(&w, t3), 1);
    assert!(grants(&w, t1).is_empty());
}

#[test]
fn extension_from_a_stranger_is_ignored() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let t5 = w.term("term5", ListMode);
    let id = w.establish(t3, t1, 1, 100);
    w.advance(secs(90));
    w.extend(t5, id, 100);
    w.end_notification(t5, id, EndReason::Completed, 1);
    assert!(w.received(t5).is_empty());
    assert!(grants(&w, t1).is_empty());
    assert_eq!(w.ss.session_count(), 1);
}

#[test]
fn s1604_s1605_forced_end_triggers_both_parties() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let id = w.establish(t3, t1, 1, 600);
    assert_eq!(
        w.ss.end_session(w.now, SessionId([9; 16])),
        Err(UnknownSession)
    );
    w.advance(secs(60));
    w.ss.end_session(w.now, id).unwrap();
    w.pump();
    let ends = w.ts_end_triggers();
    assert_eq!(ends.len(), 2);
    let mut devices: Vec<u64> = ends.iter().map(|e| e.device_id.0).collect();
    devices.sort();
    let mut expected = vec![w.device(t1), w.device(t3)];
    expected.sort();
    assert_eq!(devices, expected);
    assert!(ends.iter().all(|e| e.session_id == id));
    assert_ne!(ends[0].op_id, ends[1].op_id);
    // Both terminals end with reason Forced and notify.
    w.advance(secs(1));
    w.end_notification(t1, id, EndReason::Forced, 10);
    w.end_notification(t3, id, EndReason::Forced, 20);
    let records = w.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].reason, SessionEndReason::Forced);
    assert_eq!(w.ss.end_session(w.now, id), Err(UnknownSession));
    // Even with no notification, a forced session is recorded soon.
    let id2 = w.establish(t3, t1, 2, 600);
    let forced_at = w.now;
    w.ss.end_session(w.now, id2).unwrap();
    w.pump();
    w.advance(END_GRACE);
    let records = w.records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].reason, SessionEndReason::Forced);
    assert_eq!(records[1].end, forced_at);
}

#[test]
fn s1601_s1606_both_end_notifications_make_one_record() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let id = w.establish(t3, t1, 1, 600);
    let start = w.started()[0].start;
    w.advance(secs(120));
    let first = w.now;
    w.end_notification(t3, id, EndReason::Completed, 1_000_000);
    assert!(w.records().is_empty());
    w.end_notification(t3, id, EndReason::Completed, 1_000_000);
    w.advance(secs(1));
    w.end_notification(t1, id, EndReason::Completed, 2048);
    let records = w.records();
    assert_eq!(records.len(), 1, "recorded at the second notification");
    let r = &records[0];
    assert_eq!(r.session_id, id);
    assert_eq!(r.requester, "term3");
    assert_eq!(r.target, "term1");
    assert_eq!(r.start, start);
    assert_eq!(r.end, first);
    assert_eq!(r.duration, secs(120));
    assert_eq!(r.extensions, 0);
    assert_eq!(r.reason, SessionEndReason::Completed);
    let requester_side = r.requester_side.unwrap();
    let target_side = r.target_side.unwrap();
    assert_eq!(requester_side.bytes_sent, 1_000_000);
    assert_eq!(requester_side.bytes_received, 500_000);
    assert_eq!(target_side.bytes_sent, 2048);
    assert_eq!(r.bytes_requester_to_target(), 1_000_000);
    assert_eq!(r.bytes_target_to_requester(), 500_000);
    // Nothing more, ever.
    w.end_notification(t1, id, EndReason::Completed, 2048);
    w.advance(secs(7200));
    assert_eq!(w.records().len(), 1);
    assert_eq!(w.ss.session_count(), 0);
}

#[test]
fn vanished_terminal_still_gets_a_record_after_the_timeout() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    // One side notifies, the other vanished: recorded END_GRACE later.
    let id = w.establish(t3, t1, 1, 600);
    w.advance(secs(30));
    let first = w.now;
    w.end_notification(t1, id, EndReason::PeerLost, 77);
    w.run_until(just_before(first + END_GRACE));
    assert!(w.records().is_empty());
    w.advance(core::time::Duration::from_micros(1));
    let records = w.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].reason, SessionEndReason::PeerLost);
    assert!(records[0].requester_side.is_none());
    assert_eq!(w.now, first + END_GRACE);
    // Neither side notifies: recorded at start + duration + END_GRACE.
    let id2 = w.establish(t3, t1, 2, 600);
    let start = w.started()[1].start;
    w.run_until(just_before(start + secs(600) + END_GRACE));
    assert_eq!(w.records().len(), 1);
    w.advance(core::time::Duration::from_micros(1));
    let records = w.records();
    assert_eq!(records.len(), 2);
    let r = &records[1];
    assert_eq!(r.session_id, id2);
    assert_eq!(r.reason, SessionEndReason::ServerTimeout);
    assert_eq!(r.end, start + secs(600));
    assert_eq!(r.duration, secs(600));
    assert!(r.requester_side.is_none() && r.target_side.is_none());
    w.advance(secs(10_000));
    assert_eq!(w.records().len(), 2);
}

#[test]
fn restart_mid_session_resumes_and_records_once() {
    let mut rng =
        <rand_chacha::ChaCha20Rng as rand_chacha::rand_core::SeedableRng>::seed_from_u64(77);
    let ss_kp = StaticKeypair::generate(&mut rng);
    let ts_kp = StaticKeypair::generate(&mut rng);
    let mut w = World::with_keys(
        SessionConfig::default(),
        NameRegistry::new(TrustMode::TrustOnFirstUse),
        5,
        ss_kp.clone(),
        ts_kp.clone(),
    );
    let t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    let ended = w.establish(t3, t1, 1, 600);
    let talking = w.establish(t3, t1, 2, 600);
    let silent = w.establish(t3, t1, 3, 600);
    w.advance(secs(100));
    w.extend(t3, talking, 400); // 500 s left: nothing to extend yet
    w.advance(secs(350));
    w.extend(t3, talking, 600); // 75 %: extended to 1200
    w.end_notification(t1, ended, EndReason::Completed, 5);
    w.end_notification(t3, ended, EndReason::Completed, 5);
    assert_eq!(w.records().len(), 1);

    // The driver's store: every durable fact so far.
    let facts: Vec<SessionFact> = w.facts.clone();
    let recorded: Vec<SessionId> = w.records().iter().map(|r| r.session_id).collect();
    let bindings: Vec<(std::string::String, crate::wire::PublicKey)> = facts
        .iter()
        .filter_map(|e| match e {
            SessionFact::NameBound { name, key } => Some((name.clone(), *key)),
            _ => None,
        })
        .collect();
    assert_eq!(bindings.len(), 2);
    let restart_at = w.now + secs(3);

    // A fresh machine with the same identity, fed the stored facts.
    let registry = NameRegistry::from_bindings(
        TrustMode::TrustOnFirstUse,
        bindings.iter().map(|(n, k)| (Name::new(n).unwrap(), *k)),
    )
    .unwrap();
    let mut v = World::with_keys(SessionConfig::default(), registry, 6, ss_kp, ts_kp);
    v.now = restart_at;
    for fact in &facts {
        let id = match fact {
            SessionFact::SessionStarted(s) => s.session_id,
            SessionFact::SessionExtended(x) => x.session_id,
            SessionFact::NameSeen { .. } => {
                // A binding's last-seen time is restored too.
                assert_eq!(v.ss.restore_session(fact), Ok(()));
                continue;
            }
            _ => {
                assert_eq!(
                    v.ss.restore_session(fact),
                    Err(RestoreError::NotASessionFact)
                );
                continue;
            }
        };
        if !recorded.contains(&id) {
            v.ss.restore_session(fact).unwrap();
        }
    }
    assert_eq!(v.ss.session_count(), 2);
    let started = w.started();
    assert_eq!(
        v.ss.restore_session(&SessionFact::SessionStarted(started[1].clone())),
        Err(RestoreError::Duplicate)
    );

    // The terminals re-register with the new server (same keys and names).
    let k1 = w.terms[t1].kp.clone();
    let k3 = w.terms[t3].kp.clone();
    let n1 = v.add_term_with("term1", ListMode, k1, w.terms[t1].addr);
    let n3 = v.add_term_with("term3", ListMode, k3, w.terms[t3].addr);
    v.register(n1);
    v.register(n3);
    assert!(
        !v.events
            .iter()
            .any(|(_, e)| matches!(e, SessionEvent::NameBound { .. })),
        "bindings were restored, not made again"
    );
    // The talking session ends normally on the new server.
    v.advance(secs(200));
    v.end_notification(n3, talking, EndReason::Completed, 9);
    v.end_notification(n1, talking, EndReason::Completed, 9);
    // The silent one times out at its own deadline.
    let silent_start = started[2].start;
    v.run_until(silent_start + secs(600) + END_GRACE + secs(1));
    v.advance(secs(10_000));
    let records = v.records();
    assert_eq!(records.len(), 2, "exactly one record per restored session");
    let r_talking = records.iter().find(|r| r.session_id == talking).unwrap();
    assert_eq!(r_talking.extensions, 1);
    assert_eq!(r_talking.permitted_secs, 1200);
    assert_eq!(r_talking.reason, SessionEndReason::Completed);
    let r_silent = records.iter().find(|r| r.session_id == silent).unwrap();
    assert_eq!(r_silent.reason, SessionEndReason::ServerTimeout);
    assert_eq!(r_silent.start, silent_start);
    assert!(!records.iter().any(|r| r.session_id == ended));
}

// ------------------------------------------------------------ bad input

#[test]
fn sealed_record_from_an_unknown_channel_is_ignored() {
    let mut w = World::new(SessionConfig::default());
    let t1 = w.term("term1", ListMode);
    // A terminal registered with another server: valid record, unknown channel.
    let mut other = World::with_registry(
        SessionConfig::default(),
        NameRegistry::new(TrustMode::TrustOnFirstUse),
        42,
    );
    let stranger = other.term("term3", ListMode);
    let record = other.seal(
        stranger,
        &Message::ConnectionRequest(crate::wire::ConnectionRequest {
            request_id: 1,
            duration_secs: 0,
            requester: Name::new("term3").unwrap(),
            target: Name::new("term1").unwrap(),
        }),
    );
    let before = w.events.len();
    let conn = w.terms[t1].conn;
    w.ss.handle_stream(w.now, conn, &record);
    assert!(w.take_transmits().is_empty());
    w.pump();
    assert_eq!(w.events.len(), before);
    assert_eq!(w.ss.counters().unknown_channel, 1);
    // The same bytes renumbered to TERM1's channel do not open either.
    let mut forged = record.clone();
    forged[6..14].copy_from_slice(&w.terms[t1].channel_no.unwrap().to_be_bytes());
    w.ss.handle_stream(w.now, conn, &forged);
    assert!(w.take_transmits().is_empty());
    assert_eq!(w.ss.counters().open_failures, 1);
    w.advance(DENY_DELAY + secs(1));
    assert!(w.ts_triggers().is_empty());
    assert!(w.received(t1).is_empty());
}

#[test]
fn messages_to_a_closed_connection_are_dropped_and_counted() {
    let mut w = World::new(SessionConfig::default());
    let _t1 = w.term("term1", ListMode);
    let t3 = w.term("term3", ListMode);
    w.connect(t3, "nobody", 1, 0);
    let conn = w.terms[t3].conn;
    w.ss.handle_connection_closed(w.now, conn);
    w.advance(DENY_DELAY);
    assert!(w.errors(t3).is_empty());
    assert_eq!(w.ss.counters().undeliverable, 1);
    // The channel outlives the stream: a new stream carries it again, and
    // answers go there.
    w.reconnect(t3);
    w.connect(t3, "nobody", 2, 0);
    w.advance(DENY_DELAY);
    assert_eq!(w.errors(t3).len(), 1);
}

#[test]
fn output_queue_is_bounded_and_drops_the_oldest() {
    let mut config = SessionConfig::default();
    config.limits.max_queued_transmits = 3;
    let mut w = World::new(config);
    let t3 = w.term("term3", ListMode);
    for id in 0..6 {
        w.connect(t3, "nobody", id, 0);
    }
    // The driver does not poll while the denials fall due together.
    w.now = w.now + DENY_DELAY;
    w.ss.handle_timeout(w.now);
    assert_eq!(w.ss.counters().dropped_transmits, 3);
    w.pump();
    let ids: Vec<u32> = w
        .received(t3)
        .iter()
        .filter_map(|(_, m)| match m {
            Message::Error(e) => Some(e.request_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec![3, 4, 5]);
}

#[test]
fn time_going_back_never_moves_timers_backwards() {
    let mut w = World::new(SessionConfig::default());
    let t3 = w.term("term3", ListMode);
    let asked = w.now;
    w.connect(t3, "nobody", 1, 0);
    w.ss.handle_timeout(Instant::ZERO);
    w.ss.handle_timeout(just_before(asked + DENY_DELAY));
    w.pump();
    assert!(w.errors(t3).is_empty());
    w.ss.handle_timeout(Instant::from_micros(5));
    assert_eq!(w.ss.poll_timeout(), Some(asked + DENY_DELAY));
    w.ss.handle_timeout(asked + DENY_DELAY);
    w.pump();
    assert_eq!(w.errors(t3).len(), 1);
}

#[test]
fn registrations_are_limited_per_proven_identity_as_configured_and_told_when_to_retry() {
    use crate::ratelimit::Limit;
    let mut config = SessionConfig::default();
    config.rates.registrations_per_identity = Limit::one_every(2, secs(30));
    let mut w = World::new(config);
    let t = w.term("term1", ListMode);
    w.reconnect(t);
    w.register(t);
    // The third within the burst's refill is refused once the key is
    // proven, told to come back when a token is there, and the stream
    // stays until that answer left.
    w.reconnect(t);
    w.start_registration(t);
    assert_eq!(w.ss.counters().identity_rate_limited, 1);
    assert_eq!(w.terms[t].retry_later, Some(30));
    let conn = w.terms[t].conn;
    assert!(!w.closed.contains(&conn));
    // Another identity from anywhere is not charged for it.
    let other = w.term("term3", ListMode);
    assert!(w.terms[other].channel.is_some());
    w.advance(RETRY_LATER_LINGER);
    assert!(w.closed.contains(&conn));
    // When the server said, it gets in.
    w.advance(secs(30) - RETRY_LATER_LINGER);
    w.reconnect(t);
    w.register(t);
    assert!(w.ss.live_device("term1").is_some());
}

#[test]
fn a_second_attempt_on_a_lingering_stream_is_taken_and_keeps_the_stream() {
    use crate::ratelimit::Limit;
    let mut config = SessionConfig::default();
    config.rates.registrations_per_identity = Limit::one_every(1, secs(1));
    let mut w = World::new(config);
    let t = w.term("term1", ListMode);
    w.reconnect(t);
    w.start_registration(t);
    assert_eq!(w.terms[t].retry_later, Some(1));
    // It retries on the same stream as told, before the linger ran out.
    w.advance(secs(1));
    w.register(t);
    w.advance(RETRY_LATER_LINGER * 2);
    let conn = w.terms[t].conn;
    assert!(!w.closed.contains(&conn), "a registered stream was closed");
    assert!(w.ss.live_device("term1").is_some());
}

#[test]
fn the_operator_releases_a_name_in_any_spelling_and_another_key_may_take_it() {
    let mut w = World::new(SessionConfig::default());
    let lost = w.term("home", ListMode);
    let lost_key = w.terms[lost].kp.public_key();
    assert_eq!(w.ss.release_name(w.now, "nobody"), Err(UnknownName));
    assert_eq!(w.ss.release_name(w.now, "HOME"), Ok(lost_key));
    w.pump();
    assert!(w.facts.iter().any(|f| matches!(
        f,
        SessionFact::NameUnbound { name, key } if name == "home" && *key == lost_key
    )));
    assert_eq!(
        w.ss.live_device("home"),
        None,
        "its live registration ended"
    );
    assert_eq!(w.ss.registry().key_of(Name::new("home").unwrap()), None);
    // The replacement device gets the name.
    let new = w.term("home", ListMode);
    assert!(w.terms[new].channel.is_some());
    assert_ne!(w.terms[new].kp.public_key(), lost_key);
    assert!(w.ss.live_device("home").is_some());
    assert_eq!(
        w.ss.release_name(w.now, "home"),
        Ok(w.terms[new].kp.public_key())
    );
}
