//! Issue 12, the registration handshake, attacked through the real `tryst`
//! binary (a `tryst server` child on loopback; terminals in this process):
//! a neighbour behind the same address cannot starve a ticket holder's
//! registrations; a terminal's first keepalive is acknowledged (the key is
//! installed before it goes), so an on-path copy of it replayed later
//! cannot move the address the server hands out; the device ID in clear in
//! the keepalives is not the stream's channel number.
//!
//! Declared as a test of the `tryst-tokio` package (see its Cargo.toml) so
//! that `CARGO_BIN_EXE_tryst` names the binary that `cargo test` built.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use tryst_tokio::core::crypto::StaticKeypair;
use tryst_tokio::core::terminal::TerminalEvent;
use tryst_tokio::core::wire::{HandshakeInit, Message, MessageType};

#[path = "e2e_support/mod.rs"]
mod support;
use support::cluster::*;
use support::{current_mix, with_mix, Mix};

/// An in-process terminal with a fresh identity key.
async fn fresh_term(
    name: &str,
    allow: &[&str],
    control: SocketAddr,
    trigger: SocketAddr,
    server_key: tryst_tokio::core::wire::PublicKey,
) -> Term {
    let keys = StaticKeypair::generate(&mut OsRng);
    Term::start(name, keys, allow, control, trigger, server_key).await
}

/// How long the victim may take to register again while the flood runs.
const REREGISTER_WITHIN: Duration = Duration::from_secs(6);

/// A neighbour on the same address: keyless 102-byte `HandshakeInit`s, as
/// fast as the server takes them, until `stop`; counts the streams the
/// server refused (its registration bucket was empty: a `RetryLater`, or
/// the stream closed).
fn flood_keyless_inits(control: SocketAddr, stop: Arc<AtomicBool>, closed: Arc<AtomicU64>) {
    let junk = Message::HandshakeInit(HandshakeInit { noise: &[0x42; 96] });
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = RawStream::connect(control) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            if stream.send_message(&junk).is_err() {
                break;
            }
            if stream.refused_within(Duration::from_millis(100)) {
                closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neighbour_draining_the_source_bucket_cannot_lock_out_a_ticket_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A per-source bucket one flooder can keep empty (the default, 64 then
    // 20 a second, is sized for a NAT full of devices).
    let server = start_server(
        &dir.path().join("server"),
        &["--registrations-per-source", "5,10s"],
        "server.log",
    );
    let relay = TcpRelay::start(server.control);
    let mut victim = fresh_term("term1", &[], relay.addr, server.trigger, server.key).await;
    victim.online().await;

    // The neighbour on 127.0.0.1 empties the per-source bucket and keeps it empty.
    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, closed) = (stop.clone(), closed.clone());
        let control = server.control;
        std::thread::spawn(move || flood_keyless_inits(control, stop, closed))
    };
    let drained = Instant::now() + STEP;
    while closed.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < drained,
            "the flood never drained the bucket"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The victim loses its stream and registers again from the same address.
    relay.cut();
    victim
        .expect("re-registering", |e| {
            matches!(e, TerminalEvent::Reregistering { .. }).then_some(())
        })
        .await;
    let started = Instant::now();
    let again = tokio::time::timeout(
        REREGISTER_WITHIN,
        victim.expect("registered again", |e| {
            matches!(e, TerminalEvent::Registered { .. }).then_some(())
        }),
    )
    .await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = flood.join();
    assert!(
        again.is_ok(),
        "the victim did not register again within {REREGISTER_WITHIN:?} while its neighbour flooded"
    );
    assert!(
        closed.load(Ordering::Relaxed) >= 2,
        "the neighbour's inits were refused throughout"
    );
    eprintln!("re-registered in {took:?} under the flood");
}

/// The keepalives among the datagrams a terminal sent.
fn keepalives(datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
    datagrams
        .iter()
        .filter(|d| Message::decode(d).is_ok_and(|m| m.message_type() == MessageType::Keepalive))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_keepalive_is_acknowledged_and_its_replay_cannot_move_the_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(&dir.path().join("server"), &[], "server.log");
    let mut phone = fresh_term("term3", &[], server.control, server.trigger, server.key).await;
    phone.online().await;

    // TERM1 reaches the trigger server through an on-path relay that
    // records its datagrams.
    let relay = UdpRelay::start(server.trigger);
    let started = Instant::now();
    let mut home = fresh_term("term1", &["term3"], server.control, relay.addr, server.key).await;
    let seen_by = Instant::now() + STEP;
    let first = loop {
        if let Some(k) = keepalives(&relay.sent()).into_iter().next() {
            break k;
        }
        assert!(Instant::now() < seen_by, "no keepalive went");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // The attacker replays that first keepalive from its own socket once
    // the key is surely installed, before any second keepalive is due.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let attacker = std::net::UdpSocket::bind(LOOPBACK_ANY).expect("attacker binds");
    let attacker_addr = attacker.local_addr().expect("addr");
    for _ in 0..3 {
        attacker.send_to(&first, server.trigger).expect("replay");
    }
    home.online().await;
    let to_online = started.elapsed();
    let sent = keepalives(&relay.sent());
    eprintln!("online after {to_online:?} and {} keepalive(s)", sent.len());
    assert_eq!(
        sent.len(),
        1,
        "the first keepalive was acknowledged (none dropped for want of the key)"
    );

    // The trigger server never stored the attacker's address...
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(dir.path().join("server.log")).expect("server log");
    assert!(
        !log.contains(&attacker_addr.to_string()),
        "the replay moved the address to the attacker:\n{log}"
    );
    // ...and the address it hands out is the terminal's (the relay's outer side).
    phone
        .handle
        .connect("term1", 30)
        .await
        .expect("request sent");
    let peer_addr = phone
        .expect("an address notification", |e| match e {
            TerminalEvent::SessionReady { peer_addr, .. } => Some(*peer_addr),
            _ => None,
        })
        .await;
    assert_eq!(peer_addr, relay.outer);
}

/// A raw client's registration with the real handshake: its open stream
/// (kept open, so the channel stays live), the server's `RegisterAck`,
/// the sealed channel and the stream's channel number.
fn raw_register(
    server: &Server,
    name: &str,
) -> (
    RawStream,
    tryst_tokio::core::wire::RegisterAck,
    tryst_tokio::core::crypto::SecureChannel,
    u64,
) {
    use tryst_tokio::core::crypto::Initiator;
    use tryst_tokio::core::time::Instant as CoreInstant;
    use tryst_tokio::core::wire::{DecisionMode, Name, Register};

    let keypair = StaticKeypair::generate(&mut OsRng);
    let register = Message::Register(Register {
        mode: DecisionMode::PermissionList,
        identity: keypair.public_key(),
        name: Name::new(name).expect("name"),
        local: None,
    });
    let mut plain = [0u8; 128];
    let n = register.encode(&mut plain).expect("encodes");
    let mut noise = [0u8; 512];
    let now = CoreInstant::from_micros(1);
    let (mut initiator, m) = Initiator::start(
        &mut OsRng,
        now,
        &keypair,
        &server.key,
        &plain[..n],
        &mut noise,
    )
    .expect("handshake starts");
    let mut stream = RawStream::connect(server.control).expect("connects");
    stream
        .send_message(&Message::HandshakeInit(HandshakeInit {
            noise: &noise[..m],
        }))
        .expect("sends");
    let reply = stream.recv(STEP).expect("a reply").expect("not closed");
    let Ok(Message::HandshakeReply(reply)) = Message::decode(&reply) else {
        panic!("expected a handshake reply");
    };
    let mut payload = [0u8; 256];
    let (channel, len) = initiator
        .finish(now, &reply, &mut payload)
        .expect("finishes");
    let Ok(Message::RegisterAck(ack)) = Message::decode(&payload[..len]) else {
        panic!("expected a RegisterAck");
    };
    (stream, ack, channel, reply.channel)
}

/// Confirms a raw registration with a sealed `Poll` (the server then
/// installs its UDP key at the trigger server) and waits for the two
/// records that follow: the registration ticket and `KeyReady`.
fn confirm(stream: &mut RawStream, channel: &mut tryst_tokio::core::crypto::SecureChannel) {
    use tryst_tokio::core::wire::Poll;
    let mut plain = [0u8; 64];
    let n = Message::Poll(Poll).encode(&mut plain).expect("encodes");
    let mut sealed = [0u8; 256];
    let m = channel.seal(&plain[..n], &mut sealed).expect("seals");
    stream.send(&sealed[..m]).expect("sends");
    for _ in 0..2 {
        match stream.recv(Duration::from_secs(3)) {
            Ok(Some(record)) => {
                assert!(matches!(Message::decode(&record), Ok(Message::Sealed(_))));
            }
            _ => break,
        }
    }
}

#[test]
fn device_id_of_the_keepalives_is_not_the_streams_channel_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(&dir.path().join("server"), &[], "server.log");
    let (mut stream, ack, _, channel) = raw_register(&server, "term1");
    // The keepalives name the device ID; the stream's records name the channel.
    assert_ne!(ack.device_id.0, channel);
    // The sealed ticket that follows names the channel, not the device ID.
    let record = stream.recv(STEP).expect("a record").expect("not closed");
    let Ok(Message::Sealed(sealed)) = Message::decode(&record) else {
        panic!("expected a sealed record");
    };
    assert_eq!(sealed.channel, channel);
    assert_ne!(sealed.channel, ack.device_id.0);
}

/// How long a keepalive's ack may take before it counts as dropped.
const ACK_WAIT: Duration = Duration::from_millis(700);

/// Sends the keepalives with counters `counters` from `socket` for `ack`'s
/// device, one at a time, and returns which were acknowledged.
fn acked_keepalives(
    socket: &std::net::UdpSocket,
    trigger: SocketAddr,
    ack: &tryst_tokio::core::wire::RegisterAck,
    counters: std::ops::RangeInclusive<u64>,
) -> Vec<bool> {
    use tryst_tokio::core::crypto::udp_auth;
    socket.set_read_timeout(Some(ACK_WAIT)).expect("timeout");
    let mut acked = Vec::new();
    for counter in counters {
        let keepalive: Message<'_> =
            udp_auth::seal_keepalive(&ack.udp_key, ack.device_id, counter).into();
        let mut bytes = [0u8; 256];
        let n = keepalive.encode(&mut bytes).expect("encodes");
        socket.send_to(&bytes[..n], trigger).expect("sends");
        let mut got = false;
        let mut buf = [0u8; 512];
        while let Ok((len, _)) = socket.recv_from(&mut buf) {
            if let Ok(Message::KeepaliveAck(a)) = Message::decode(&buf[..len]) {
                if a.counter == counter {
                    got = true;
                    break;
                }
            }
        }
        acked.push(got);
    }
    acked
}

/// `--keepalive-limit 2,1h` through the real server binary (both of them):
/// a device's first two keepalives are acknowledged, those after the
/// burst are dropped with no ack, while another device, under its own
/// limit, is still acknowledged. With the default limit (4, then one per
/// 5 s) the third and fourth would be acknowledged.
fn keepalive_limit_drops_a_device_over_it_and_acks_one_under_it(mix: Mix) {
    with_mix(mix, || {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = start_server(
            &dir.path().join("server"),
            &["--keepalive-limit", "2,1h"],
            "server.log",
        );
        let (mut loud_stream, loud, mut loud_channel, _) = raw_register(&server, "term1");
        confirm(&mut loud_stream, &mut loud_channel);
        let (mut quiet_stream, quiet, mut quiet_channel, _) = raw_register(&server, "term2");
        confirm(&mut quiet_stream, &mut quiet_channel);
        let loud_socket = std::net::UdpSocket::bind(LOOPBACK_ANY).expect("binds");
        let quiet_socket = std::net::UdpSocket::bind(LOOPBACK_ANY).expect("binds");

        let over = acked_keepalives(&loud_socket, server.trigger, &loud, 1..=5);
        assert_eq!(
            over,
            [true, true, false, false, false],
            "the burst of 2 is acknowledged, every keepalive after it dropped ({})",
            current_mix()
        );
        let under = acked_keepalives(&quiet_socket, server.trigger, &quiet, 1..=2);
        assert_eq!(
            under,
            [true, true],
            "a device under its own limit is acknowledged ({})",
            current_mix()
        );
    });
}

#[test]
fn keepalive_limit_drops_a_device_over_it_and_acks_one_under_it_tryst() {
    keepalive_limit_drops_a_device_over_it_and_acks_one_under_it(Mix::TRYST);
}

#[test]
fn keepalive_limit_drops_a_device_over_it_and_acks_one_under_it_tryst_std() {
    keepalive_limit_drops_a_device_over_it_and_acks_one_under_it(Mix::STD);
}
