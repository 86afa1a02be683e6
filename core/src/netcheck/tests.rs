//! The netcheck machine against a small model: a trigger server (tagged
//! answers, delayed ones included), its probe port, and a NAT between
//! them whose mapping, filtering and idle timeout each test picks.

use super::*;
use crate::wire::{AddressEcho, NatProbe};
use std::vec::Vec;

const T0: Instant = Instant::from_micros(1_000_000);
const KEY: UdpKey = UdpKey([0x42; 32]);
const DEVICE: DeviceId = DeviceId(7);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn main_port() -> SocketAddr {
    addr("203.0.113.1:7401")
}
fn probe_port() -> SocketAddr {
    addr("203.0.113.1:7403")
}
fn other_port() -> SocketAddr {
    addr("203.0.113.1:7404")
}

/// The NAT in front of the terminal's sockets.
#[derive(Clone, Copy)]
struct Nat {
    /// The public port depends on the destination.
    symmetric: bool,
    /// Inbound only from an (address, port) the socket sent to.
    port_filtering: bool,
    /// A mapping idle longer than this is gone.
    timeout: Option<Duration>,
    /// No NAT: the public address is the local one.
    none: bool,
}

const EASY: Nat = Nat {
    symmetric: false,
    port_filtering: false,
    timeout: None,
    none: false,
};

struct World {
    nat: Nat,
    /// (socket, destination) pairs sent to, and each socket's last activity.
    sent_to: Vec<(usize, SocketAddr)>,
    last: [Option<Instant>; MAX_SOCKETS],
    /// Datagrams from the servers: when, from, to (public), bytes.
    inbound: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    blocked: bool,
    with_probe_port: bool,
}

impl World {
    fn local(socket: usize) -> SocketAddr {
        SocketAddr::new(addr("192.168.1.2:1").ip(), 5000 + socket as u16)
    }

    fn public(&self, socket: usize, to: SocketAddr) -> SocketAddr {
        if self.nat.none {
            return World::local(socket);
        }
        let port = if self.nat.symmetric {
            40000 + socket as u16 * 10 + to.port() % 10
        } else {
            40000 + socket as u16
        };
        SocketAddr::new(addr("198.51.100.7:1").ip(), port)
    }

    fn socket_of(&self, public: SocketAddr) -> Option<usize> {
        (0..MAX_SOCKETS).find(|s| {
            [main_port(), probe_port(), other_port()]
                .iter()
                .any(|d| self.public(*s, *d) == public)
        })
    }

    /// One datagram from the terminal's `socket`: the servers' answers.
    fn outbound(&mut self, now: Instant, socket: usize, to: SocketAddr, bytes: &[u8]) {
        if self.blocked {
            return;
        }
        self.sent_to.push((socket, to));
        self.last[socket] = Some(now);
        let from = self.public(socket, to);
        match Message::decode(bytes) {
            Ok(Message::NatProbe(NatProbe {
                device_id,
                counter,
                delay_secs,
                ..
            })) if to == main_port() => {
                let probe = udp_auth::seal_nat_probe(&KEY, device_id, counter, delay_secs);
                if Message::decode(bytes) != Ok(Message::NatProbe(probe)) {
                    return;
                }
                let port = if self.with_probe_port { 7403 } else { 0 };
                let answer = udp_auth::seal_nat_probe_answer(&KEY, counter, delay_secs, port, from);
                let at = now + Duration::from_secs(u64::from(delay_secs));
                self.inbound
                    .push((at, main_port(), from, encode(answer.into())));
            }
            Ok(Message::AddressProbe(p)) if to == probe_port() && self.with_probe_port => {
                let echo = AddressEcho {
                    txid: p.txid,
                    observed: from,
                };
                let via = if p.other_port {
                    other_port()
                } else {
                    probe_port()
                };
                self.inbound.push((now, via, from, encode(echo.into())));
            }
            _ => {}
        }
    }

    /// Whether the NAT lets `from` in to `public` at `now`; its socket.
    fn admit(&mut self, now: Instant, from: SocketAddr, public: SocketAddr) -> Option<usize> {
        let socket = self.socket_of(public)?;
        if self.nat.none {
            return Some(socket);
        }
        let last = self.last[socket]?;
        if self
            .nat
            .timeout
            .is_some_and(|t| now.saturating_duration_since(last) > t)
        {
            return None;
        }
        let allowed = if self.nat.port_filtering {
            self.sent_to.contains(&(socket, from))
        } else {
            self.sent_to
                .iter()
                .any(|(s, d)| *s == socket && d.ip() == from.ip())
        };
        if allowed {
            self.last[socket] = Some(now);
            Some(socket)
        } else {
            None
        }
    }
}

fn encode(m: Message<'_>) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let n = m.encode(&mut buf).unwrap();
    buf[..n].to_vec()
}

fn run_with(
    nat: Nat,
    max_idle: u64,
    blocked: bool,
    with_probe_port: bool,
) -> (NetcheckReport, Instant) {
    let mut world = World {
        nat,
        sent_to: Vec::new(),
        last: [None; MAX_SOCKETS],
        inbound: Vec::new(),
        blocked,
        with_probe_port,
    };
    let mut nc = Netcheck::new(NetcheckConfig {
        server: main_port(),
        device_id: DEVICE,
        key: KEY,
        max_idle: Duration::from_secs(max_idle),
        local: Some(World::local(MAPPING_SOCKET)),
        txid_seed: 99,
    });
    let mut now = T0;
    for _ in 0..100_000 {
        if nc.poll_timeout().is_some_and(|t| t <= now) {
            nc.handle_timeout(now);
        }
        let mut buf = [0u8; PROBE_BUF];
        while let Some((socket, to, len)) = nc.poll_transmit(&mut buf) {
            assert!(socket < nc.sockets());
            world.outbound(now, socket, to, &buf[..len]);
        }
        let due: Vec<_> = world
            .inbound
            .iter()
            .filter(|i| i.0 <= now)
            .cloned()
            .collect();
        world.inbound.retain(|i| i.0 > now);
        for (_, from, to, bytes) in due {
            if let Some(socket) = world.admit(now, from, to) {
                nc.handle_datagram(now, socket, from, &bytes);
            }
        }
        // What the answers made it send goes out now, as a driver does.
        while let Some((socket, to, len)) = nc.poll_transmit(&mut buf) {
            world.outbound(now, socket, to, &buf[..len]);
        }
        if let Some(report) = nc.report() {
            assert_eq!(nc.poll_timeout(), None);
            return (report, now);
        }
        let next_in = world.inbound.iter().map(|i| i.0).min();
        let next = [nc.poll_timeout(), next_in].into_iter().flatten().min();
        now = next.unwrap_or(now).max(now + Duration::from_millis(1));
    }
    panic!("netcheck never ended");
}

fn run(nat: Nat, max_idle: u64) -> NetcheckReport {
    run_with(nat, max_idle, false, true).0
}

#[test]
fn netcheck_survive_delays_follow_max_idle() {
    assert_eq!(&survive_delays(Duration::from_secs(20))[..], &[5, 10, 20]);
    assert_eq!(&survive_delays(Duration::from_secs(2))[..], &[2]);
    assert_eq!(&survive_delays(Duration::from_secs(0))[..], &[1]);
    assert_eq!(
        survive_delays(Duration::from_secs(100_000)).len(),
        MAX_SURVIVE_PROBES
    );
}

#[test]
fn netcheck_endpoint_independent_nat_says_direct_likely() {
    let (r, ended) = run_with(EASY, 20, false, true);
    assert_eq!(r.observed, Some(addr("198.51.100.7:40000")));
    assert_eq!(r.probe_observed, r.observed);
    assert_eq!(r.probe_port, Some(7403));
    assert_eq!(r.mapping, Mapping::EndpointIndependent);
    assert_eq!(r.filtering, Filtering::OpenToOtherPorts);
    assert_eq!(r.survived_secs, Some(20));
    assert!(!r.public);
    assert_eq!(r.verdict, Verdict::DirectLikely);
    // Bounded by max-idle: ends right after the longest delay.
    assert!(ended.saturating_duration_since(T0) <= Duration::from_secs(21));
}

#[test]
fn netcheck_symmetric_nat_says_the_mapping_varies() {
    let r = run(
        Nat {
            symmetric: true,
            port_filtering: true,
            ..EASY
        },
        5,
    );
    assert_eq!(r.mapping, Mapping::VariesByDestination);
    assert_ne!(r.observed, r.probe_observed);
    assert_eq!(r.filtering, Filtering::PortDependent);
    assert_eq!(r.verdict, Verdict::DirectNeedsEasyPeer);
}

#[test]
fn netcheck_port_dependent_filtering_is_told_apart() {
    let r = run(
        Nat {
            port_filtering: true,
            ..EASY
        },
        5,
    );
    assert_eq!(r.mapping, Mapping::EndpointIndependent);
    assert_eq!(r.filtering, Filtering::PortDependent);
    assert_eq!(r.verdict, Verdict::DirectLikely);
}

#[test]
fn netcheck_short_nat_timeout_gives_a_survive_interval_below_it() {
    let r = run(
        Nat {
            timeout: Some(Duration::from_secs(15)),
            ..EASY
        },
        40,
    );
    assert_eq!(r.survived_secs, Some(10));
    let survived: Vec<_> = r
        .survive
        .iter()
        .map(|s| (s.delay_secs, s.survived))
        .collect();
    assert_eq!(survived, [(5, true), (10, true), (20, false), (40, false)]);
}

#[test]
fn netcheck_public_address_and_no_udp_at_all() {
    let r = run(Nat { none: true, ..EASY }, 5);
    assert!(r.public);
    assert_eq!(r.verdict, Verdict::DirectLikely);
    let (r, ended) = run_with(EASY, 20, true, true);
    assert_eq!(r.observed, None);
    assert_eq!(r.verdict, Verdict::RelayNeeded);
    assert!(r.survive.iter().all(|s| !s.survived));
    // Gives up after its tries, without waiting out the delays.
    assert!(ended.saturating_duration_since(T0) < Duration::from_secs(5));
}

#[test]
fn netcheck_without_probe_port_reports_mapping_unknown() {
    let (r, _) = run_with(EASY, 5, false, false);
    assert_eq!(r.probe_port, None);
    assert_eq!(r.mapping, Mapping::Unknown);
    assert_eq!(r.filtering, Filtering::Unknown);
    assert_eq!(r.survived_secs, Some(5));
    assert_eq!(r.verdict, Verdict::DirectNeedsEasyPeer);
}

#[test]
fn netcheck_ignores_forged_and_foreign_answers() {
    let mut nc = Netcheck::new(NetcheckConfig {
        server: main_port(),
        device_id: DEVICE,
        key: KEY,
        max_idle: Duration::from_secs(5),
        local: None,
        txid_seed: 1,
    });
    nc.handle_timeout(T0);
    let mut buf = [0u8; PROBE_BUF];
    while nc.poll_transmit(&mut buf).is_some() {}
    let observed = addr("198.51.100.7:1");
    let other_key = UdpKey([0x43; 32]);
    for (from, key) in [(main_port(), other_key), (probe_port(), KEY)] {
        let answer = udp_auth::seal_nat_probe_answer(&key, 1, 0, 7403, observed);
        nc.handle_datagram(T0, MAPPING_SOCKET, from, &encode(answer.into()));
    }
    nc.handle_datagram(T0, MAPPING_SOCKET, main_port(), b"junk");
    assert_eq!(nc.observed, None);
    let answer = udp_auth::seal_nat_probe_answer(&KEY, 1, 0, 7403, observed);
    nc.handle_datagram(T0, MAPPING_SOCKET, main_port(), &encode(answer.into()));
    assert_eq!(nc.observed, Some(observed));
}
