//! One-time enrolment codes on a closed server: accepted once, the fact
//! stored before the acknowledgement; reuse, expiry, a wrong code and
//! another name's code refused with the closed server's usual answer.

use std::string::String;
use std::vec::Vec;

use super::harness::*;
use super::*;
use crate::machine::Output;
use crate::wire::ENROL_CODE_LEN;

const CODE: [u8; ENROL_CODE_LEN] = [0x42; ENROL_CODE_LEN];

fn closed_world() -> World {
    World::with_registry(
        SessionConfig::default(),
        NameRegistry::new(TrustMode::Closed),
        11,
    )
}

/// Holds `code` for `name`, valid for `valid` from now.
fn hold(w: &mut World, name: &str, code: &[u8; ENROL_CODE_LEN], valid: core::time::Duration) {
    w.ss.handle_timeout(w.now);
    w.ss.add_enrol_code(EnrolCode {
        name: name.into(),
        hash: enrol_code_hash(code),
        expires: w.now + valid,
    })
    .expect("held");
}

/// A terminal for `name` that sends `code`.
fn enrolling(w: &mut World, name: &str, code: [u8; ENROL_CODE_LEN]) -> usize {
    let i = w.add_term(name, ListMode);
    w.terms[i].enrol_code = Some(code);
    i
}

fn code_facts(w: &World) -> Vec<(String, PublicKey)> {
    w.facts
        .iter()
        .filter_map(|f| match f {
            SessionFact::EnrolCodeUsed { name, key, hash } => {
                assert_eq!(*hash, enrol_code_hash(&CODE));
                Some((name.clone(), *key))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn enrol_code_enrols_the_key_once_and_stores_the_fact_before_the_ack() {
    let mut w = closed_world();
    hold(&mut w, "home", &CODE, secs(3600));
    assert_eq!(w.ss.enrol_code_count(), 1);
    let home = enrolling(&mut w, "home", CODE);
    // Drive the handshake by hand: the first output is the stored fact,
    // before the transmit that carries the RegisterAck.
    w.terms[home].enrol_code = Some(CODE);
    let before = w.facts.len();
    w.start_registration(home);
    assert_eq!(w.facts.len(), before + 1);
    assert!(w.terms[home].channel.is_some(), "registered");
    let key = w.terms[home].kp.public_key();
    assert_eq!(code_facts(&w), [("home".to_string(), key)]);
    assert_eq!(
        w.ss.registry().key_of(Name::new("home").unwrap()),
        Some(key)
    );
    assert_eq!(w.ss.enrol_code_count(), 0, "the code is spent");
    w.send(home, &Message::Poll(crate::wire::Poll));
    assert!(w.ss.live_device("home").is_some(), "reachable by its name");
    assert_eq!(w.ss.counters().enrol_codes_used, 1);

    // The same terminal registering again with the same invite: its key
    // is the name's, the code is not looked at.
    w.reconnect(home);
    w.register(home);
    assert_eq!(w.terms[home].refused, None);
    assert_eq!(code_facts(&w).len(), 1);
}

#[test]
fn enrol_code_fact_comes_out_before_any_transmit() {
    let mut w = closed_world();
    hold(&mut w, "home", &CODE, secs(3600));
    let home = enrolling(&mut w, "home", CODE);
    // Build the handshake as the harness does, but poll the outputs here.
    let term = &w.terms[home];
    let register = crate::wire::EnrolRegister {
        register: crate::wire::Register {
            mode: ListMode,
            identity: term.kp.public_key(),
            name: Name::new("home").unwrap(),
            local: term.local,
        },
        code: CODE,
    };
    let payload = enc(&Message::EnrolRegister(register));
    let mut noise = vec![0u8; 4096];
    let (_init, n) = crate::crypto::Initiator::start(
        &mut w.rng, w.now, &term.kp, &w.ss_key, &payload, &mut noise,
    )
    .unwrap();
    let bytes = enc(&Message::HandshakeInit(crate::wire::HandshakeInit {
        noise: &noise[..n],
    }));
    let conn = term.conn;
    w.ss.handle_stream(w.now, conn, &bytes);
    let mut buf = [0u8; crate::machine::MAX_TRANSMIT_LEN];
    let mut order = Vec::new();
    loop {
        match w.ss.poll_output(&mut buf) {
            Output::Store(SessionFact::EnrolCodeUsed { .. }) => order.push("fact"),
            Output::Transmit(_) => order.push("transmit"),
            Output::Timeout(_) => break,
            _ => {}
        }
    }
    assert_eq!(order.first(), Some(&"fact"), "{order:?}");
    assert!(order.contains(&"transmit"));
}

#[test]
fn enrol_code_reuse_by_another_key_is_refused() {
    let mut w = closed_world();
    hold(&mut w, "home", &CODE, secs(3600));
    let first = enrolling(&mut w, "home", CODE);
    w.register(first);
    let second = enrolling(&mut w, "home", CODE);
    w.start_registration(second);
    assert_eq!(
        w.terms[second].refused,
        Some(ErrorCode::RegistrationRefused)
    );
    assert_eq!(code_facts(&w).len(), 1);
    assert_eq!(
        w.ss.registry().key_of(Name::new("home").unwrap()),
        Some(w.terms[first].kp.public_key()),
        "the name stays the first key's"
    );
}

#[test]
fn enrol_code_reuse_after_an_unbind_is_refused() {
    // Spent for good: even once the name is free again, the code enrols nothing.
    let mut w = closed_world();
    hold(&mut w, "home", &CODE, secs(3600));
    let first = enrolling(&mut w, "home", CODE);
    w.register(first);
    w.ss.registry_mut().unbind(Name::new("home").unwrap());
    let second = enrolling(&mut w, "home", CODE);
    w.start_registration(second);
    assert_eq!(
        w.terms[second].refused,
        Some(ErrorCode::RegistrationRefused)
    );
    assert_eq!(w.ss.counters().enrol_codes_refused, 1);
}

#[test]
fn enrol_code_expires_by_the_injected_clock() {
    let mut w = closed_world();
    hold(&mut w, "home", &CODE, secs(60));
    w.advance(secs(60));
    let home = enrolling(&mut w, "home", CODE);
    w.start_registration(home);
    assert_eq!(w.terms[home].refused, Some(ErrorCode::RegistrationRefused));
    assert!(code_facts(&w).is_empty());
    assert_eq!(w.ss.enrol_code_count(), 0);
    // One microsecond before its expiry it still works.
    let mut w = closed_world();
    hold(&mut w, "home", &CODE, secs(60));
    w.advance(secs(59));
    let home = enrolling(&mut w, "home", CODE);
    w.start_registration(home);
    assert_eq!(w.terms[home].refused, None);
    assert_eq!(code_facts(&w).len(), 1);
}

#[test]
fn enrol_code_for_another_name_or_a_wrong_code_is_refused() {
    let mut w = closed_world();
    hold(&mut w, "home", &CODE, secs(3600));
    let other = enrolling(&mut w, "garage", CODE);
    w.start_registration(other);
    assert_eq!(w.terms[other].refused, Some(ErrorCode::RegistrationRefused));
    let mut wrong = CODE;
    wrong[0] ^= 1;
    let guess = enrolling(&mut w, "home", wrong);
    w.start_registration(guess);
    assert_eq!(w.terms[guess].refused, Some(ErrorCode::RegistrationRefused));
    assert!(code_facts(&w).is_empty());
    assert_eq!(w.ss.counters().enrol_codes_refused, 2);
    // The real one still works afterwards: failed tries do not spend it.
    let home = enrolling(&mut w, "home", CODE);
    w.start_registration(home);
    assert_eq!(w.terms[home].refused, None);
    assert_eq!(code_facts(&w).len(), 1);
}

#[test]
fn enrol_codes_are_bounded_and_expired_ones_refused_at_once() {
    let mut w = closed_world();
    w.ss.handle_timeout(w.now);
    assert_eq!(
        w.ss.add_enrol_code(EnrolCode {
            name: "home".into(),
            hash: enrol_code_hash(&CODE),
            expires: w.now,
        }),
        Err(EnrolCodeError::Expired)
    );
    for i in 0..MAX_ENROL_CODES {
        let mut code = [0u8; ENROL_CODE_LEN];
        code[..8].copy_from_slice(&(i as u64).to_be_bytes());
        hold(&mut w, "home", &code, secs(60));
    }
    assert_eq!(
        w.ss.add_enrol_code(EnrolCode {
            name: "home".into(),
            hash: enrol_code_hash(&CODE),
            expires: w.now + secs(60),
        }),
        Err(EnrolCodeError::Full)
    );
}
