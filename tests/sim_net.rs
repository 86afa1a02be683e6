//! The simulator's network model on its own: NAT mapping behaviour, link
//! loss / duplication / reordering, streams, and determinism by seed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tryst_core::time::Instant;
use tryst_tests::sim::nat::{Nat, NatConfig, NatKind};
use tryst_tests::sim::net::{Direction, LinkConfig, NetEvent, Network};

fn addr(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

fn at(secs: u64) -> Instant {
    Instant::from_micros(secs * 1_000_000)
}

const INSIDE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2)), 40_000);

#[test]
fn endpoint_independent_nat_keeps_one_port_for_every_destination() {
    let mut nat = Nat::new(NatConfig::home(), Ipv4Addr::new(198, 18, 0, 1), 5000);
    let ts = addr(203, 0, 113, 10, 7000);
    let peer = addr(203, 0, 113, 99, 9999);
    let a = nat.outbound(at(0), INSIDE, ts);
    let b = nat.outbound(at(1), INSIDE, peer);
    assert_eq!(a, b);
    assert_eq!(a.ip(), IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
    // Inbound from both contacted addresses passes, from a stranger it does not.
    assert_eq!(nat.inbound(at(2), ts, a.port()), Some(INSIDE));
    assert_eq!(
        nat.inbound(at(2), addr(203, 0, 113, 99, 1), a.port()),
        Some(INSIDE)
    );
    assert_eq!(
        nat.inbound(at(2), addr(203, 0, 113, 77, 7000), a.port()),
        None
    );
    assert_eq!(nat.stats().inbound_filtered, 1);
}

#[test]
fn symmetric_nat_gives_a_port_per_destination_and_filters_exactly() {
    let mut nat = Nat::new(NatConfig::symmetric(), Ipv4Addr::new(198, 18, 0, 1), 5000);
    let ts = addr(203, 0, 113, 10, 7000);
    let a = nat.outbound(at(0), INSIDE, ts);
    let b = nat.outbound(at(0), INSIDE, addr(203, 0, 113, 10, 7001));
    assert_ne!(a, b);
    assert_eq!(
        nat.outbound(at(1), INSIDE, ts),
        a,
        "same destination, same mapping"
    );
    assert_eq!(nat.inbound(at(2), ts, a.port()), Some(INSIDE));
    // Same host, other port: refused on the symmetric mapping.
    assert_eq!(
        nat.inbound(at(2), addr(203, 0, 113, 10, 7001), a.port()),
        None
    );
    assert_eq!(
        nat.inbound(at(2), addr(203, 0, 113, 10, 7001), b.port()),
        Some(INSIDE)
    );
}

#[test]
fn an_idle_mapping_expires_and_the_next_packet_gets_a_new_port() {
    let mut nat = Nat::new(
        NatConfig::home().with_timeout(Duration::from_secs(30)),
        Ipv4Addr::new(198, 18, 0, 1),
        5000,
    );
    let ts = addr(203, 0, 113, 10, 7000);
    let a = nat.outbound(at(0), INSIDE, ts);
    // Refreshed by outbound traffic within the timeout: same port.
    assert_eq!(nat.outbound(at(29), INSIDE, ts), a);
    assert_eq!(nat.outbound(at(58), INSIDE, ts), a);
    // Inbound does not refresh (default), and after 30 s idle the mapping is gone.
    assert_eq!(nat.inbound(at(80), ts, a.port()), Some(INSIDE));
    assert_eq!(nat.inbound(at(88), ts, a.port()), None);
    let b = nat.outbound(at(89), INSIDE, ts);
    assert_ne!(a, b, "a new mapping gets a new public port");
    assert_eq!(nat.stats().mappings_expired, 1);
    assert_eq!(nat.stats().mappings_created, 2);
}

#[test]
fn inbound_refresh_is_configurable() {
    let config = NatConfig {
        inbound_refreshes: true,
        ..NatConfig::home()
    };
    let mut nat = Nat::new(config, Ipv4Addr::new(198, 18, 0, 1), 5000);
    let ts = addr(203, 0, 113, 10, 7000);
    let a = nat.outbound(at(0), INSIDE, ts);
    for t in (20..200).step_by(20) {
        assert_eq!(nat.inbound(at(t), ts, a.port()), Some(INSIDE));
    }
}

/// A server on the internet and a client behind a NAT.
fn client_and_server(
    seed: u64,
    link: LinkConfig,
    nat: NatConfig,
) -> (Network, usize, usize, SocketAddr) {
    let mut net = Network::new(seed);
    let server_addr = addr(203, 0, 113, 10, 7000);
    let server = net.add_public_host(server_addr, LinkConfig::clean());
    let n = net.add_nat(nat, link);
    let client = net.add_host_behind(n);
    (net, client, server, server_addr)
}

/// Runs the queue dry, collecting datagram payloads per receiving host.
fn drain(net: &mut Network) -> Vec<(Instant, NetEvent)> {
    let mut out = Vec::new();
    while let Some(e) = net.pop_next() {
        out.push(e);
    }
    out
}

#[test]
fn the_server_sees_the_nat_public_address_and_can_answer_through_it() {
    let (mut net, client, server, server_addr) =
        client_and_server(7, LinkConfig::clean(), NatConfig::home());
    net.send_datagram(at(0), client, server_addr, b"hello");
    let events = drain(&mut net);
    let [(
        t,
        NetEvent::Datagram {
            host,
            from,
            payload,
            ..
        },
    )] = events.as_slice()
    else {
        panic!("one datagram expected: {events:?}");
    };
    assert_eq!(*host, server);
    assert_eq!(payload, b"hello");
    assert_eq!(*t, Instant::from_micros(20_000), "two 10 ms links");
    assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
    // The answer to the observed address reaches the client's private socket.
    net.send_datagram(*t, server, *from, b"ack");
    let events = drain(&mut net);
    let [(_, NetEvent::Datagram { host, to, .. })] = events.as_slice() else {
        panic!("one datagram expected: {events:?}");
    };
    assert_eq!(*host, client);
    assert_eq!(*to, net.host(client).addr);
    // A stranger cannot reach the client through the mapping.
    let stranger = net.add_public_host(addr(203, 0, 113, 66, 1), LinkConfig::clean());
    net.send_datagram(*t, stranger, *from, b"spam");
    assert!(drain(&mut net).is_empty());
    assert_eq!(net.stats().datagrams_dropped_by_nat, 1);
}

#[test]
fn private_addresses_are_unroutable_from_outside() {
    let (mut net, client, server, _) = client_and_server(1, LinkConfig::clean(), NatConfig::home());
    let private = net.host(client).addr;
    net.send_datagram(at(0), server, private, b"x");
    assert!(drain(&mut net).is_empty());
    assert_eq!(net.stats().datagrams_unroutable, 1);
}

/// Sends 1,000 datagrams 1 ms apart over a lossy link and returns what came out.
fn lossy_run(seed: u64) -> Vec<(Instant, Vec<u8>)> {
    let (mut net, client, _, server_addr) =
        client_and_server(seed, LinkConfig::lossy(0.1), NatConfig::home());
    for i in 0u32..1000 {
        net.send_datagram(
            Instant::from_micros(u64::from(i) * 1000),
            client,
            server_addr,
            &i.to_be_bytes(),
        );
    }
    drain(&mut net)
        .into_iter()
        .map(|(t, e)| match e {
            NetEvent::Datagram { payload, .. } => (t, payload),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn loss_duplication_and_reordering_happen_and_are_reproducible_by_seed() {
    let a = lossy_run(42);
    assert_eq!(a, lossy_run(42), "same seed, same run");
    assert_ne!(a, lossy_run(43), "another seed, another run");
    let numbers: Vec<u32> = a
        .iter()
        .map(|(_, p)| u32::from_be_bytes(p.as_slice().try_into().unwrap()))
        .collect();
    let mut unique = numbers.clone();
    unique.sort_unstable();
    unique.dedup();
    // Only the client's side is lossy (10% loss, 10% duplication).
    assert!(
        (850..=950).contains(&unique.len()),
        "delivered {}",
        unique.len()
    );
    assert!(numbers.len() > unique.len(), "some duplicates");
    assert!(numbers.windows(2).any(|w| w[0] > w[1]), "some reordering");
    // Delivery times never go backwards (the queue is ordered by time).
    assert!(a.windows(2).all(|w| w[0].0 <= w[1].0));
}

#[test]
fn streams_are_reliable_and_ordered_despite_jitter() {
    let (mut net, client, server, _) =
        client_and_server(5, LinkConfig::lossy(0.5), NatConfig::home());
    let s = net.open_stream(at(0), client, server);
    for i in 0u32..100 {
        assert!(net.stream_send(
            Instant::from_micros(u64::from(i) * 100),
            s,
            Direction::ToServer,
            &i.to_be_bytes()
        ));
    }
    let events = drain(&mut net);
    assert!(matches!(events[0].1, NetEvent::StreamOpened { server: h, .. } if h == server));
    let got: Vec<u32> = events[1..]
        .iter()
        .map(|(_, e)| match e {
            NetEvent::StreamMessage {
                payload,
                direction: Direction::ToServer,
                ..
            } => u32::from_be_bytes(payload.as_slice().try_into().unwrap()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
}

#[test]
fn a_broken_stream_loses_what_is_in_flight() {
    let (mut net, client, server, _) = client_and_server(5, LinkConfig::clean(), NatConfig::home());
    let s = net.open_stream(at(0), client, server);
    assert!(net.stream_send(at(0), s, Direction::ToServer, b"lost"));
    assert_eq!(net.break_stream(s), Some((client, server)));
    assert_eq!(net.break_stream(s), None);
    assert!(!net.stream_send(at(0), s, Direction::ToClient, b"too late"));
    assert!(drain(&mut net).is_empty());
}

#[test]
fn a_closed_stream_delivers_what_was_sent_before_the_close() {
    let (mut net, client, server, _) = client_and_server(5, LinkConfig::clean(), NatConfig::home());
    let s = net.open_stream(at(0), client, server);
    let _ = drain(&mut net);
    assert!(net.stream_send(at(1), s, Direction::ToClient, b"bye"));
    net.close_stream(at(1), s, Direction::ToClient);
    assert!(!net.stream_send(at(1), s, Direction::ToClient, b"after close"));
    let events: Vec<NetEvent> = drain(&mut net).into_iter().map(|(_, e)| e).collect();
    assert!(
        matches!(&events[0], NetEvent::StreamMessage { payload, host, .. } if payload == b"bye" && *host == client)
    );
    assert!(matches!(&events[1], NetEvent::StreamClosed { host, .. } if *host == client));
    assert_eq!(events.len(), 2);
}

#[test]
fn symmetric_nat_shows_the_server_a_different_port_per_server_port() {
    let mut net = Network::new(3);
    let ts = addr(203, 0, 113, 10, 7000);
    let other = addr(203, 0, 113, 11, 7000);
    let s1 = net.add_public_host(ts, LinkConfig::clean());
    let s2 = net.add_public_host(other, LinkConfig::clean());
    let n = net.add_nat(NatConfig::symmetric(), LinkConfig::clean());
    let c = net.add_host_behind(n);
    net.send_datagram(at(0), c, ts, b"a");
    net.send_datagram(at(0), c, other, b"b");
    let froms: Vec<(usize, SocketAddr)> = drain(&mut net)
        .into_iter()
        .map(|(_, e)| match e {
            NetEvent::Datagram { host, from, .. } => (host, from),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(froms.len(), 2);
    assert_eq!(froms[0].0, s1);
    assert_eq!(froms[1].0, s2);
    assert_ne!(froms[0].1.port(), froms[1].1.port());
    // s2 cannot reach the client through the mapping made for s1.
    net.send_datagram(at(1), s2, froms[0].1, b"x");
    assert!(drain(&mut net).is_empty());
    let _ = NatKind::AddressAndPortDependent;
}
