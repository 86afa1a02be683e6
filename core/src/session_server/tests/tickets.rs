//! Registration tickets (issue 12, point 4): a valid ticket skips the
//! per-source bucket and is charged to its identity; forged, expired and
//! other-key tickets get nothing from it; every registration is charged to
//! its proven identity. Also: `KeyInstallAck` from the trigger server becomes
//! the terminal's `KeyReady`.

use super::harness::*;
use super::*;
use crate::crypto::ticket::TICKET_LIFETIME;
use crate::ratelimit::REGISTRATIONS;
use crate::wire::{HandshakeInit, TicketedHandshakeInit, TICKET_LEN};

/// Drains the per-source bucket of terminal `t`'s address with keyless
/// garbage inits from another stream, as a neighbour behind the same NAT would.
fn drain_source_bucket(w: &mut World, t: usize) {
    let attacker = ConnectionId(77_777);
    let mut addr = w.terms[t].addr;
    addr.set_port(addr.port().wrapping_add(1));
    w.ss.handle_connection_opened(w.now, attacker, addr);
    let junk = enc(&Message::HandshakeInit(HandshakeInit {
        noise: &[0x42; 96],
    }));
    for _ in 0..=REGISTRATIONS.capacity() {
        w.ss.handle_stream(w.now, attacker, &junk);
    }
    w.pump();
    assert!(
        w.ss.counters().registrations_rate_limited >= 1,
        "bucket drained"
    );
}

/// Terminal `t`'s stream is lost; it registers again on a new one.
fn register_again(w: &mut World, t: usize) {
    w.terms[t].channel = None;
    w.terms[t].device = None;
    w.reconnect(t);
    w.start_registration(t);
}

#[test]
fn ticket_skips_the_drained_source_bucket() {
    let mut w = World::new(SessionConfig::default());
    let t = w.term("term1", ListMode);
    assert!(
        w.terms[t].ticket.is_some(),
        "a registration hands out a ticket"
    );
    drain_source_bucket(&mut w, t);
    let limited = w.ss.counters().registrations_rate_limited;
    register_again(&mut w, t);
    assert!(w.terms[t].channel.is_some(), "the ticket let it in");
    assert_eq!(w.ss.counters().registrations_rate_limited, limited);
    w.send(t, &Message::Poll(crate::wire::Poll));
    assert_eq!(
        w.ss.live_device("term1").map(|d| d.0),
        w.terms[t].channel_no
    );
}

#[test]
fn without_a_ticket_the_drained_source_bucket_locks_the_victim_out() {
    let mut w = World::new(SessionConfig::default());
    w.use_tickets = false;
    let t = w.term("term1", ListMode);
    drain_source_bucket(&mut w, t);
    register_again(&mut w, t);
    assert!(w.terms[t].channel.is_none());
}

#[test]
fn forged_ticket_is_counted_and_falls_back_to_the_source_bucket() {
    let mut w = World::new(SessionConfig::default());
    let t = w.term("term1", ListMode);
    if let Some(ticket) = w.terms[t].ticket.as_mut() {
        ticket.ticket = [0x7c; TICKET_LEN];
    }
    // With room in the source bucket, it still registers (as without a ticket).
    register_again(&mut w, t);
    assert!(w.terms[t].channel.is_some());
    assert_eq!(w.ss.counters().tickets_refused, 1);
    // With the bucket drained, a forged ticket does not let it in.
    w.terms[t].ticket = Some(crate::wire::RegistrationTicket {
        ticket: [0x7c; TICKET_LEN],
        secret: [0; 32],
    });
    drain_source_bucket(&mut w, t);
    register_again(&mut w, t);
    assert!(w.terms[t].channel.is_none());
    assert_eq!(w.ss.counters().tickets_refused, 2);
}

#[test]
fn expired_ticket_is_refused() {
    let mut w = World::new(SessionConfig::default());
    let t = w.term("term1", ListMode);
    let ticket = w.terms[t].ticket;
    w.advance(TICKET_LIFETIME + secs(1));
    w.terms[t].ticket = ticket;
    drain_source_bucket(&mut w, t);
    register_again(&mut w, t);
    assert!(
        w.terms[t].channel.is_none(),
        "an expired ticket skips nothing"
    );
    assert_eq!(w.ss.counters().tickets_refused, 1);
}

#[test]
fn ticket_of_another_key_is_refused_after_the_handshake() {
    let mut w = World::new(SessionConfig::default());
    let victim = w.term("term1", ListMode);
    let thief = w.add_term("term3", ListMode);
    // The thief holds the victim's ticket and even its secret.
    w.terms[thief].ticket = w.terms[victim].ticket;
    w.start_registration(thief);
    assert!(w.terms[thief].channel.is_none());
    assert_eq!(w.ss.counters().ticket_key_mismatches, 1);
    assert!(w.closed.contains(&w.terms[thief].conn));
    assert!(w.ss.live_device("term3").is_none());
}

#[test]
fn copied_ticket_on_garbage_noise_is_refused_before_any_public_key_work() {
    let mut w = World::new(SessionConfig::default());
    let t = w.term("term1", ListMode);
    let ticket = w.terms[t].ticket.expect("ticket");
    let conn = ConnectionId(55_555);
    w.ss.handle_connection_opened(w.now, conn, w.terms[t].addr);
    let forged = enc(&Message::TicketedHandshakeInit(TicketedHandshakeInit {
        ticket: ticket.ticket,
        binder: [0; 32],
        noise: &[0x42; 96],
    }));
    let failures = w.ss.counters().handshake_failures;
    w.ss.handle_stream(w.now, conn, &forged);
    assert_eq!(w.ss.counters().tickets_refused, 1);
    // It fell back to the source bucket, and only then to the Noise layer.
    assert_eq!(w.ss.counters().handshake_failures, failures + 1);
}

#[test]
fn one_key_cannot_reregister_in_a_loop() {
    let mut w = World::new(SessionConfig::default());
    w.use_tickets = false;
    let t = w.term("term1", ListMode);
    for i in 1..crate::session_server::IDENTITY_REGISTRATIONS.capacity() {
        // A fresh source each time: only the identity bucket can stop it.
        w.terms[t]
            .addr
            .set_ip(core::net::IpAddr::V4(core::net::Ipv4Addr::new(
                203, 0, 113, i as u8,
            )));
        register_again(&mut w, t);
        assert!(w.terms[t].channel.is_some(), "registration {i} fits");
    }
    w.terms[t]
        .addr
        .set_ip(core::net::IpAddr::V4(core::net::Ipv4Addr::new(
            203, 0, 113, 200,
        )));
    register_again(&mut w, t);
    assert!(w.terms[t].channel.is_none());
    assert_eq!(w.ss.counters().identity_rate_limited, 1);
}

#[test]
fn key_install_ack_tells_the_terminal_it_may_start_keepalives() {
    let mut w = World::new(SessionConfig::default());
    let t = w.term("term1", ListMode);
    let installed = w.ts_installs();
    assert_eq!(
        installed.len(),
        1,
        "the confirmed channel's key went to the trigger server"
    );
    assert_eq!(
        w.terms[t].key_ready, 0,
        "no KeyReady before the trigger server has the key"
    );
    w.ts_send(&Message::KeyInstallAck(crate::wire::KeyInstallAck {
        device_id: installed[0].device_id,
    }));
    assert_eq!(w.terms[t].key_ready, 1);
    // An acknowledgement for no live channel is counted, not forwarded.
    let stale = w.ss.counters().stale_answers;
    w.ts_send(&Message::KeyInstallAck(crate::wire::KeyInstallAck {
        device_id: crate::wire::DeviceId(0xdead),
    }));
    assert_eq!(w.ss.counters().stale_answers, stale + 1);
}

#[test]
fn udp_device_id_is_not_the_streams_channel_number() {
    let mut w = World::new(SessionConfig::default());
    let t = w.term("term1", ListMode);
    let channel = w.terms[t].channel_no.expect("channel");
    let device = w.device(t);
    assert_ne!(channel, device, "the keepalives would name the stream");
    // The trigger server knows it by the device ID of its RegisterAck.
    assert_eq!(w.ts_installs()[0].device_id.0, device);
    // Records on the stream carry the channel number.
    let record = w.seal(t, &Message::Poll(crate::wire::Poll));
    let Ok(Message::Sealed(sealed)) = Message::decode(&record) else {
        panic!("a sealed record");
    };
    assert_eq!(sealed.channel, channel);
    // A second registration gets another pair, again unlinked.
    register_again(&mut w, t);
    assert_ne!(w.terms[t].channel_no, Some(channel));
    assert_ne!(w.terms[t].channel_no, w.terms[t].device);
}

#[test]
fn replayed_ticketed_init_is_refused_and_not_charged_to_the_identity() {
    let mut w = World::new(SessionConfig::default());
    let t = w.term("term1", ListMode);
    register_again(&mut w, t);
    let captured = w.terms[t].last_init.clone();
    assert!(matches!(
        Message::decode(&captured),
        Ok(Message::TicketedHandshakeInit(_))
    ));
    // An on-path observer replays the whole ticketed init, again and again,
    // from the victim's own address once its bucket is empty.
    drain_source_bucket(&mut w, t);
    for i in 0..2 * crate::session_server::IDENTITY_REGISTRATIONS.capacity() {
        let conn = ConnectionId(60_000 + u64::from(i));
        w.ss.handle_connection_opened(w.now, conn, w.terms[t].addr);
        w.ss.handle_stream(w.now, conn, &captured);
    }
    w.pump();
    assert!(w.ss.counters().tickets_refused >= 1);
    assert_eq!(w.ss.counters().identity_rate_limited, 0);
    // The victim's own next registration still fits its identity.
    register_again(&mut w, t);
    assert!(w.terms[t].channel.is_some());
}
