//! A NAT box in front of one or more simulated hosts.
//!
//! Two mapping behaviours (RFC 4787 terms):
//!
//! - [`NatKind::EndpointIndependent`]: an inside socket keeps one public port
//!   for every destination; inbound datagrams pass from any address the
//!   inside socket has sent to ("address-restricted cone").
//! - [`NatKind::AddressAndPortDependent`]: a new public port for every
//!   destination ("symmetric"); inbound datagrams pass only from that exact
//!   destination.
//!
//! A mapping idle for longer than [`NatConfig::udp_timeout`] is dropped; the
//! next outbound datagram gets a NEW public port (so the trigger server sees
//! a changed address). Only outbound traffic refreshes a mapping unless
//! [`NatConfig::inbound_refreshes`] is set. Expiry is lazy (checked when a
//! mapping is used) plus [`Nat::sweep`], so memory stays bounded by the
//! number of live flows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tryst_core::time::Instant;

/// How a NAT maps inside sockets to public ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// One public port per inside socket; inbound from addresses it sent to.
    EndpointIndependent,
    /// One public port per (inside socket, destination); inbound only from it.
    AddressAndPortDependent,
}

/// A NAT's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatConfig {
    /// The mapping behaviour.
    pub kind: NatKind,
    /// Idle time after which a UDP mapping is dropped.
    pub udp_timeout: Duration,
    /// Whether inbound datagrams refresh a mapping (many home routers: no).
    pub inbound_refreshes: bool,
}

impl NatConfig {
    /// A common home router: endpoint-independent, 30 s UDP timeout (the
    /// short end of what real routers do), outbound refresh only.
    pub const fn home() -> NatConfig {
        NatConfig {
            kind: NatKind::EndpointIndependent,
            udp_timeout: Duration::from_secs(30),
            inbound_refreshes: false,
        }
    }

    /// A symmetric NAT (carrier-grade or corporate), 30 s UDP timeout.
    pub const fn symmetric() -> NatConfig {
        NatConfig {
            kind: NatKind::AddressAndPortDependent,
            udp_timeout: Duration::from_secs(30),
            inbound_refreshes: false,
        }
    }

    /// The same NAT with another idle timeout.
    pub const fn with_timeout(mut self, udp_timeout: Duration) -> NatConfig {
        self.udp_timeout = udp_timeout;
        self
    }
}

impl Default for NatConfig {
    fn default() -> Self {
        NatConfig::home()
    }
}

/// Counters of what a NAT did, for assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatStats {
    /// Mappings created (a refreshed mapping is not counted again).
    pub mappings_created: u64,
    /// Mappings dropped because they sat idle past the timeout.
    pub mappings_expired: u64,
    /// Inbound datagrams with no live mapping for their port.
    pub inbound_no_mapping: u64,
    /// Inbound datagrams refused by the filter (sender not contacted).
    pub inbound_filtered: u64,
    /// Inbound datagrams let through.
    pub inbound_passed: u64,
}

/// One UDP mapping.
#[derive(Debug, Clone)]
struct Mapping {
    inside: SocketAddr,
    /// The only peer of a symmetric mapping; `None` on an endpoint-independent one.
    dest: Option<SocketAddr>,
    /// Addresses the inside socket sent to through this mapping.
    contacted: BTreeSet<IpAddr>,
    last_used: Instant,
}

/// The lowest public port a NAT hands out.
const FIRST_PORT: u16 = 1024;

/// A simulated NAT box with one public IPv4 address.
#[derive(Debug, Clone)]
pub struct Nat {
    config: NatConfig,
    public_ip: Ipv4Addr,
    next_udp_port: u16,
    next_tcp_port: u16,
    /// (inside socket, destination for symmetric mappings) -> public port.
    by_inside: BTreeMap<(SocketAddr, Option<SocketAddr>), u16>,
    /// Public port -> mapping.
    by_port: BTreeMap<u16, Mapping>,
    stats: NatStats,
}

impl Nat {
    /// A NAT with this public address; the first port it hands out is
    /// `first_port` (a seeded value, so runs differ in ports but not in shape).
    pub fn new(config: NatConfig, public_ip: Ipv4Addr, first_port: u16) -> Nat {
        let first = first_port.max(FIRST_PORT);
        Nat {
            config,
            public_ip,
            next_udp_port: first,
            next_tcp_port: first,
            by_inside: BTreeMap::new(),
            by_port: BTreeMap::new(),
            stats: NatStats::default(),
        }
    }

    /// The NAT's public IP address.
    pub fn public_ip(&self) -> Ipv4Addr {
        self.public_ip
    }

    /// Its configuration.
    pub fn config(&self) -> NatConfig {
        self.config
    }

    /// What it did so far.
    pub fn stats(&self) -> NatStats {
        self.stats
    }

    /// Live mappings (after dropping those idle past the timeout at `now`).
    pub fn live_mappings(&mut self, now: Instant) -> usize {
        self.sweep(now);
        self.by_port.len()
    }

    /// The public address the inside socket `inside` currently has towards
    /// `dest`, if a live mapping exists (no refresh, no creation).
    pub fn peek_mapping(
        &self,
        now: Instant,
        inside: SocketAddr,
        dest: SocketAddr,
    ) -> Option<SocketAddr> {
        let port = *self.by_inside.get(&(inside, self.key_dest(dest)))?;
        let m = self.by_port.get(&port)?;
        (!self.expired(m, now)).then_some(SocketAddr::new(IpAddr::V4(self.public_ip), port))
    }

    fn key_dest(&self, dest: SocketAddr) -> Option<SocketAddr> {
        match self.config.kind {
            NatKind::EndpointIndependent => None,
            NatKind::AddressAndPortDependent => Some(dest),
        }
    }

    fn expired(&self, m: &Mapping, now: Instant) -> bool {
        now.saturating_duration_since(m.last_used) >= self.config.udp_timeout
    }

    /// Translates an outbound datagram from `inside` to `dest`: refreshes the
    /// mapping, or creates one (a fresh public port) if there is none or it
    /// expired. Returns the public source address.
    pub fn outbound(&mut self, now: Instant, inside: SocketAddr, dest: SocketAddr) -> SocketAddr {
        let key = (inside, self.key_dest(dest));
        if let Some(&port) = self.by_inside.get(&key) {
            let live = self
                .by_port
                .get(&port)
                .is_some_and(|m| !self.expired(m, now));
            if live {
                if let Some(m) = self.by_port.get_mut(&port) {
                    m.last_used = now;
                    m.contacted.insert(dest.ip());
                }
                return SocketAddr::new(IpAddr::V4(self.public_ip), port);
            }
            self.by_inside.remove(&key);
            self.by_port.remove(&port);
            self.stats.mappings_expired += 1;
        }
        let port = self.allocate_udp_port();
        let mut contacted = BTreeSet::new();
        contacted.insert(dest.ip());
        self.by_port.insert(
            port,
            Mapping {
                inside,
                dest: key.1,
                contacted,
                last_used: now,
            },
        );
        self.by_inside.insert(key, port);
        self.stats.mappings_created += 1;
        SocketAddr::new(IpAddr::V4(self.public_ip), port)
    }

    /// Filters and translates an inbound datagram from `from` to public port
    /// `port`: the inside socket it goes to, or `None` if it is dropped.
    pub fn inbound(&mut self, now: Instant, from: SocketAddr, port: u16) -> Option<SocketAddr> {
        let Some(m) = self.by_port.get(&port) else {
            self.stats.inbound_no_mapping += 1;
            return None;
        };
        if self.expired(m, now) {
            let key = (m.inside, m.dest);
            self.by_port.remove(&port);
            self.by_inside.remove(&key);
            self.stats.mappings_expired += 1;
            self.stats.inbound_no_mapping += 1;
            return None;
        }
        let allowed = match m.dest {
            None => m.contacted.contains(&from.ip()),
            Some(dest) => dest == from,
        };
        if !allowed {
            self.stats.inbound_filtered += 1;
            return None;
        }
        let inside = m.inside;
        if self.config.inbound_refreshes {
            if let Some(m) = self.by_port.get_mut(&port) {
                m.last_used = now;
            }
        }
        self.stats.inbound_passed += 1;
        Some(inside)
    }

    /// Drops every mapping idle past the timeout at `now`.
    pub fn sweep(&mut self, now: Instant) {
        let timeout = self.config.udp_timeout;
        let stale: Vec<u16> = self
            .by_port
            .iter()
            .filter(|(_, m)| now.saturating_duration_since(m.last_used) >= timeout)
            .map(|(&p, _)| p)
            .collect();
        for port in stale {
            if let Some(m) = self.by_port.remove(&port) {
                self.by_inside.remove(&(m.inside, m.dest));
                self.stats.mappings_expired += 1;
            }
        }
    }

    /// A public port for a new outbound TCP connection (TCP mappings live as
    /// long as the connection; they are not modelled further).
    pub fn tcp_port(&mut self) -> u16 {
        let port = self.next_tcp_port;
        self.next_tcp_port = if port == u16::MAX {
            FIRST_PORT
        } else {
            port + 1
        };
        port
    }

    /// The next free UDP port, never one in use; ports are not reused until
    /// the counter wraps, so an expired mapping's successor has a new port.
    fn allocate_udp_port(&mut self) -> u16 {
        loop {
            let port = self.next_udp_port;
            self.next_udp_port = if port == u16::MAX {
                FIRST_PORT
            } else {
                port + 1
            };
            if !self.by_port.contains_key(&port) {
                return port;
            }
        }
    }
}
