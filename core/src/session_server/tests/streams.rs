//! Issue 12 (abuse-streams): the session server's stream bounds
//! ([`crate::conn_guard`]) through its real inputs.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::format;
use std::vec;
use std::vec::Vec;

use super::harness::*;
use super::*;
use crate::conn_guard::{FIRST_MESSAGE_TIMEOUT, IDLE_STREAM_TIMEOUT};
use crate::wire::Poll;

const ONE: Duration = Duration::from_secs(1);

#[test]
fn a_stream_that_never_sends_a_message_is_closed_at_the_first_message_bound() {
    let mut w = World::new(SessionConfig::default());
    let i = w.add_term("SILENT", ListMode);
    let conn = w.terms[i].conn;
    w.advance(FIRST_MESSAGE_TIMEOUT - ONE);
    assert!(w.closed.is_empty(), "closed before the bound");
    w.advance(ONE);
    assert_eq!(w.closed, vec![conn]);
    assert_eq!(w.ss.stream_guard_counters().closed_no_first_message, 1);
}

#[test]
fn a_registered_terminal_stream_outlives_the_idle_bound() {
    let mut w = World::new(SessionConfig::default());
    let i = w.term("LIVE", ListMode);
    w.advance(IDLE_STREAM_TIMEOUT * 5);
    assert!(
        w.closed.is_empty(),
        "a stream carrying a channel was closed"
    );
    assert!(w.ss.live_device("LIVE").is_some());
    let _ = i;
}

#[test]
fn a_stream_whose_registration_moved_to_another_stream_is_closed_after_the_idle_bound() {
    let mut w = World::new(SessionConfig::default());
    let i = w.term("MOVER", ListMode);
    let old = w.terms[i].conn;
    w.reconnect(i);
    w.register(i);
    let new = w.terms[i].conn;
    w.advance(IDLE_STREAM_TIMEOUT - ONE);
    assert!(w.closed.is_empty(), "closed before the idle bound");
    w.advance(ONE * 2);
    assert_eq!(
        w.closed,
        vec![old],
        "only the stream left without a channel"
    );
    assert_ne!(old, new);
    assert_eq!(w.ss.stream_guard_counters().closed_idle, 1);
}

#[test]
fn a_stream_that_sends_only_junk_is_closed_after_the_idle_bound() {
    let mut w = World::new(SessionConfig::default());
    let i = w.add_term("JUNK", ListMode);
    let conn = w.terms[i].conn;
    for _ in 0..10 {
        w.ss.handle_stream(w.now, conn, &enc(&Message::Poll(Poll)));
        w.advance(IDLE_STREAM_TIMEOUT / 10);
    }
    w.advance(ONE);
    assert_eq!(w.closed, vec![conn]);
}

#[test]
fn streams_beyond_the_per_source_cap_are_closed_at_once_and_other_sources_are_not() {
    let mut config = SessionConfig::default();
    config.limits.streams.per_source = 2;
    let mut w = World::new(config);
    let shared = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 1);
    let mut conns = Vec::new();
    for n in 0..3 {
        let kp = StaticKeypair::generate(&mut w.rng);
        let i = w.add_term_with(&format!("NAT{n}"), ListMode, kp, shared);
        conns.push(w.terms[i].conn);
    }
    assert_eq!(w.closed, vec![conns[2]], "the third stream of one source");
    let other = w.term("OTHER", ListMode);
    assert!(w.terms[other].channel.is_some(), "another source registers");
    assert_eq!(w.ss.stream_guard_counters().refused_per_source, 1);
}
