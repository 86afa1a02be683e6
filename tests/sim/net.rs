//! The simulated network: hosts with virtual addresses, NAT boxes, lossy
//! links for datagrams, reliable ordered streams, and one event queue.
//!
//! Nothing here touches a socket or a clock. Every delivery is an entry in a
//! queue ordered by (time, sequence number), and every random choice (loss,
//! duplication, jitter, NAT ports) comes from one seeded ChaCha8 generator,
//! so a seed reproduces a run exactly.
//!
//! Addressing: a host sits either on the public internet (its socket address
//! is public) or behind a [`Nat`] (its socket address is private and only
//! the NAT can reach it). A datagram crosses the sender's access link and
//! the receiver's access link; a host behind a NAT uses the NAT's link (the
//! home's uplink), so terminals behind one NAT share it. A datagram's fate
//! on each link: lost with the link's loss probability, duplicated with its
//! duplication probability, delayed by latency plus a uniform jitter (jitter
//! larger than the spacing of two datagrams reorders them). A link may also
//! have a path MTU (a larger datagram is dropped, as with the IPv4 DF bit or
//! IPv6) and a bottleneck: its uplink sends at most `rate_bytes_per_sec`,
//! queues up to `queue_bytes` behind that, and drops the rest (tail drop),
//! so congestion control meets a real queue.
//!
//! Streams model TCP connections between a client host and a server host:
//! reliable, in order, latency without loss, carrying whole messages. A
//! stream can be broken (both ends closed at once, in-flight messages lost)
//! or closed by one side (the other side learns it after the latency, after
//! the data sent before the close).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tryst_core::time::Instant;

use super::nat::{Nat, NatConfig};

/// A host on the simulated network (index into the network's host table).
pub type HostId = usize;
/// A NAT box (index into the network's NAT table).
pub type NatId = usize;
/// A stream (TCP connection), numbered from 1 in order of opening.
pub type StreamId = u64;

/// How an access link treats datagrams (streams only see its latency).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// One-way base latency.
    pub latency: Duration,
    /// Extra one-way delay, uniform in `[0, jitter]`, drawn per datagram.
    pub jitter: Duration,
    /// Probability that a datagram is lost on this link.
    pub loss: f64,
    /// Probability that a datagram is delivered twice (each copy with its own delay).
    pub duplicate: f64,
    /// Largest UDP payload that crosses this link; a larger datagram is
    /// dropped (no fragmentation). `None`: no limit.
    pub mtu: Option<usize>,
    /// Uplink bottleneck: bytes per second the link sends; datagrams queue
    /// behind each other. `None`: no limit.
    pub rate_bytes_per_sec: Option<u64>,
    /// Bytes the bottleneck queue holds; a datagram that would exceed it is
    /// dropped. Only with `rate_bytes_per_sec`.
    pub queue_bytes: usize,
}

impl LinkConfig {
    /// No loss, no duplication, 10 ms latency, no jitter.
    pub const fn clean() -> LinkConfig {
        LinkConfig {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            mtu: None,
            rate_bytes_per_sec: None,
            queue_bytes: 0,
        }
    }

    /// A bad link: `loss` loss and duplication probability, 10 ms latency
    /// and 40 ms jitter (datagrams closer than that reorder).
    pub const fn lossy(loss: f64) -> LinkConfig {
        LinkConfig {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(40),
            loss,
            duplicate: loss,
            mtu: None,
            rate_bytes_per_sec: None,
            queue_bytes: 0,
        }
    }

    /// The same link with a path MTU: larger datagrams are dropped.
    pub const fn with_mtu(mut self, mtu: usize) -> LinkConfig {
        self.mtu = Some(mtu);
        self
    }

    /// The same link with an uplink bottleneck of `rate_bytes_per_sec` and a
    /// queue of `queue_bytes`.
    pub const fn with_bottleneck(
        mut self,
        rate_bytes_per_sec: u64,
        queue_bytes: usize,
    ) -> LinkConfig {
        self.rate_bytes_per_sec = Some(rate_bytes_per_sec);
        self.queue_bytes = queue_bytes;
        self
    }
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig::clean()
    }
}

/// Counters of what the network did, for assertions and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams handed to the network by hosts.
    pub datagrams_sent: u64,
    /// Datagrams delivered to a host (copies counted).
    pub datagrams_delivered: u64,
    /// Datagrams lost on a link.
    pub datagrams_lost: u64,
    /// Extra copies made by duplication.
    pub datagrams_duplicated: u64,
    /// Datagrams to an address nobody has (or to a private address from outside).
    pub datagrams_unroutable: u64,
    /// Datagrams dropped by a NAT (no mapping, or filtered).
    pub datagrams_dropped_by_nat: u64,
    /// Streams opened.
    pub streams_opened: u64,
    /// Stream messages delivered.
    pub stream_messages_delivered: u64,
    /// Stream messages lost because the stream broke or closed while they flew.
    pub stream_messages_lost: u64,
    /// Datagrams dropped for being larger than a link's MTU.
    pub datagrams_too_big: u64,
    /// Datagrams dropped because a bottleneck queue was full.
    pub datagrams_queue_dropped: u64,
}

/// Which way a stream message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// From the host that opened the stream to the host that accepted it.
    ToServer,
    /// From the accepting host back to the opener.
    ToClient,
}

/// Something the network delivers to a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// A datagram arrives at `host`'s socket `to` (after NAT translation).
    Datagram {
        /// The receiving host.
        host: HostId,
        /// The source as the receiver sees it (a NAT's public side, if any).
        from: SocketAddr,
        /// The receiver's own socket address.
        to: SocketAddr,
        /// The bytes.
        payload: Vec<u8>,
    },
    /// A stream that a client opened reaches the server: accept it.
    StreamOpened {
        /// The stream.
        stream: StreamId,
        /// The accepting host.
        server: HostId,
        /// The client's address as the server sees it.
        remote: SocketAddr,
    },
    /// A message on a stream.
    StreamMessage {
        /// The stream.
        stream: StreamId,
        /// The receiving host.
        host: HostId,
        /// Which way it went (`ToServer`: the server receives it).
        direction: Direction,
        /// The whole message.
        payload: Vec<u8>,
    },
    /// The other side closed (or the network broke) the stream.
    StreamClosed {
        /// The stream.
        stream: StreamId,
        /// The host that learns it.
        host: HostId,
        /// `ToServer`: the server learns it; `ToClient`: the client.
        direction: Direction,
    },
}

/// A host's attachment.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its socket address (private if behind a NAT).
    pub addr: SocketAddr,
    /// The NAT in front of it, if any.
    pub nat: Option<NatId>,
    /// Its access link (unused behind a NAT, where the NAT's link counts).
    pub link: LinkConfig,
    /// Whether it is switched off: everything to it is dropped.
    pub down: bool,
}

/// A NAT's place in the network.
#[derive(Debug, Clone)]
struct NatBox {
    nat: Nat,
    link: LinkConfig,
    /// Inside socket address -> host.
    inside: BTreeMap<SocketAddr, HostId>,
}

/// Who owns a public IP.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Host(HostId),
    Nat(NatId),
}

/// A stream's state.
#[derive(Debug, Clone)]
struct Stream {
    client: HostId,
    server: HostId,
    /// The client's address as the server sees it.
    remote: SocketAddr,
    /// Whether the server was told of it (its open event arrived).
    accepted: bool,
    /// Whether each end still considers it open.
    client_open: bool,
    server_open: bool,
    /// Latest delivery time so far in each direction (keeps order).
    last_to_server: Instant,
    last_to_client: Instant,
}

/// What a queue entry carries.
#[derive(Debug, Clone)]
enum Pending {
    Datagram {
        from: SocketAddr,
        to: SocketAddr,
        payload: Vec<u8>,
    },
    StreamOpened(StreamId),
    StreamMessage(StreamId, Direction, Vec<u8>),
    StreamClosed(StreamId, Direction),
}

/// An entry of the event queue, ordered by (time, sequence).
#[derive(Debug)]
struct Queued {
    at: Instant,
    seq: u64,
    what: Pending,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    // Reversed, so the BinaryHeap (a max-heap) pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The port every simulated terminal binds its UDP socket to.
pub const TERMINAL_PORT: u16 = 40_000;

/// The whole simulated network.
#[derive(Debug)]
pub struct Network {
    rng: ChaCha8Rng,
    hosts: Vec<Host>,
    nats: Vec<NatBox>,
    owners: BTreeMap<IpAddr, Owner>,
    queue: BinaryHeap<Queued>,
    seq: u64,
    streams: BTreeMap<StreamId, Stream>,
    next_stream: StreamId,
    stats: NetStats,
    /// When each bottlenecked uplink finishes sending what it queued.
    uplink_busy: BTreeMap<UplinkId, Instant>,
}

/// Whose uplink a bottleneck queue belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum UplinkId {
    Host(HostId),
    Nat(NatId),
}

impl Network {
    /// An empty network whose random choices all come from `seed`.
    pub fn new(seed: u64) -> Network {
        Network {
            rng: ChaCha8Rng::seed_from_u64(seed),
            hosts: Vec::new(),
            nats: Vec::new(),
            owners: BTreeMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            streams: BTreeMap::new(),
            next_stream: 1,
            stats: NetStats::default(),
            uplink_busy: BTreeMap::new(),
        }
    }

    /// Adds a host with a public address. Panics if the IP is taken (a test bug).
    pub fn add_public_host(&mut self, addr: SocketAddr, link: LinkConfig) -> HostId {
        let id = self.hosts.len();
        let previous = self.owners.insert(addr.ip(), Owner::Host(id));
        assert!(previous.is_none(), "public address {addr} used twice");
        self.hosts.push(Host {
            addr,
            nat: None,
            link,
            down: false,
        });
        id
    }

    /// Adds a NAT box; its public IP is the next one of 198.18.0.0/15 (a
    /// range reserved for benchmarks, so clearly virtual).
    pub fn add_nat(&mut self, config: NatConfig, link: LinkConfig) -> NatId {
        let id = self.nats.len();
        let n = u32::try_from(id).expect("too many NATs");
        assert!(n < (1 << 17) - 2, "too many NATs for 198.18.0.0/15");
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + n);
        let first_port = 1024 + (self.rng.next_u32() % 50_000) as u16;
        self.owners.insert(IpAddr::V4(ip), Owner::Nat(id));
        self.nats.push(NatBox {
            nat: Nat::new(config, ip, first_port),
            link,
            inside: BTreeMap::new(),
        });
        id
    }

    /// Adds a host behind `nat` at the next private address 192.168.1.x
    /// (x from 2), UDP port [`TERMINAL_PORT`].
    pub fn add_host_behind(&mut self, nat: NatId) -> HostId {
        let id = self.hosts.len();
        let nb = &mut self.nats[nat];
        let k = u8::try_from(nb.inside.len() + 2).expect("at most 253 hosts behind one NAT");
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, k)), TERMINAL_PORT);
        nb.inside.insert(addr, id);
        self.hosts.push(Host {
            addr,
            nat: Some(nat),
            link: nb.link,
            down: false,
        });
        id
    }

    /// A host's attachment.
    pub fn host(&self, id: HostId) -> &Host {
        &self.hosts[id]
    }

    /// Number of hosts.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// A NAT box.
    pub fn nat(&self, id: NatId) -> &Nat {
        &self.nats[id].nat
    }

    /// A NAT box, mutably (to sweep or inspect mappings).
    pub fn nat_mut(&mut self, id: NatId) -> &mut Nat {
        &mut self.nats[id].nat
    }

    /// Number of NATs.
    pub fn nat_count(&self) -> usize {
        self.nats.len()
    }

    /// Replaces a host's access link (behind a NAT: the NAT's link).
    pub fn set_link(&mut self, host: HostId, link: LinkConfig) {
        match self.hosts[host].nat {
            Some(nat) => self.set_nat_link(nat, link),
            None => self.hosts[host].link = link,
        }
    }

    /// Replaces a NAT's uplink (for every host behind it).
    pub fn set_nat_link(&mut self, nat: NatId, link: LinkConfig) {
        self.nats[nat].link = link;
        for (_, &h) in self.nats[nat].inside.iter() {
            self.hosts[h].link = link;
        }
    }

    /// Switches a host off (true) or on: a host that is down receives nothing.
    pub fn set_down(&mut self, host: HostId, down: bool) {
        self.hosts[host].down = down;
    }

    /// What the network did so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The public address `host`'s socket currently has towards `dest`
    /// (its own address if it is public; `None` behind a NAT with no live mapping).
    pub fn public_addr_of(
        &self,
        now: Instant,
        host: HostId,
        dest: SocketAddr,
    ) -> Option<SocketAddr> {
        let h = &self.hosts[host];
        match h.nat {
            None => Some(h.addr),
            Some(nat) => self.nats[nat].nat.peek_mapping(now, h.addr, dest),
        }
    }

    fn link_of_host(&self, host: HostId) -> LinkConfig {
        match self.hosts[host].nat {
            Some(nat) => self.nats[nat].link,
            None => self.hosts[host].link,
        }
    }

    fn link_of_owner(&self, owner: Owner) -> LinkConfig {
        match owner {
            Owner::Host(h) => self.hosts[h].link,
            Owner::Nat(n) => self.nats[n].link,
        }
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let x = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        x < p
    }

    /// Latency plus a uniform jitter.
    fn delay(&mut self, link: LinkConfig) -> Duration {
        let jitter = u64::try_from(link.jitter.as_micros()).unwrap_or(u64::MAX);
        let extra = if jitter == 0 {
            0
        } else {
            self.rng.next_u64() % (jitter + 1)
        };
        link.latency + Duration::from_micros(extra)
    }

    fn push(&mut self, at: Instant, what: Pending) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            what,
        });
    }

    /// `host` sends a datagram from its socket to `to`. The NAT in front of
    /// it (if any) translates the source now; the receiving NAT filters on
    /// arrival.
    pub fn send_datagram(&mut self, now: Instant, host: HostId, to: SocketAddr, payload: &[u8]) {
        self.stats.datagrams_sent += 1;
        let h = &self.hosts[host];
        let from = match h.nat {
            None => h.addr,
            Some(nat) => {
                let inside = h.addr;
                self.nats[nat].nat.outbound(now, inside, to)
            }
        };
        let Some(&owner) = self.owners.get(&to.ip()) else {
            self.stats.datagrams_unroutable += 1;
            return;
        };
        let up = self.link_of_host(host);
        let down = self.link_of_owner(owner);
        let too_big = |link: LinkConfig| link.mtu.is_some_and(|mtu| payload.len() > mtu);
        if too_big(up) || too_big(down) {
            self.stats.datagrams_too_big += 1;
            return;
        }
        // The uplink's bottleneck: serialise behind what is queued, or drop.
        let mut departs = now;
        if let Some(rate) = up.rate_bytes_per_sec.filter(|&r| r > 0) {
            let uplink = match self.hosts[host].nat {
                Some(nat) => UplinkId::Nat(nat),
                None => UplinkId::Host(host),
            };
            let busy = self
                .uplink_busy
                .get(&uplink)
                .copied()
                .unwrap_or(now)
                .max(now);
            let queued_micros = (busy - now).as_micros();
            let queued_bytes = queued_micros * u128::from(rate) / 1_000_000;
            if queued_bytes + payload.len() as u128 > up.queue_bytes as u128 + 1500 {
                self.stats.datagrams_queue_dropped += 1;
                return;
            }
            let send_micros = (payload.len() as u128 * 1_000_000).div_ceil(u128::from(rate));
            departs = busy + Duration::from_micros(u64::try_from(send_micros).unwrap_or(u64::MAX));
            self.uplink_busy.insert(uplink, departs);
        }
        if self.chance(up.loss) || self.chance(down.loss) {
            self.stats.datagrams_lost += 1;
            return;
        }
        let mut copies = 1;
        if self.chance(up.duplicate) {
            copies += 1;
        }
        if self.chance(down.duplicate) {
            copies += 1;
        }
        self.stats.datagrams_duplicated += copies - 1;
        for _ in 0..copies {
            let d = self.delay(up) + self.delay(down);
            self.push(
                departs + d,
                Pending::Datagram {
                    from,
                    to,
                    payload: payload.to_vec(),
                },
            );
        }
    }

    /// One-way stream latency between two hosts (base plus jitter; order is
    /// kept by the stream itself).
    fn stream_delay(&mut self, a: HostId, b: HostId) -> Duration {
        let (la, lb) = (self.link_of_host(a), self.link_of_host(b));
        self.delay(la) + self.delay(lb)
    }

    /// `client` opens a stream to `server`; the server is told after the
    /// latency. Messages may be sent at once (they arrive after the open).
    pub fn open_stream(&mut self, now: Instant, client: HostId, server: HostId) -> StreamId {
        let id = self.next_stream;
        self.next_stream += 1;
        self.stats.streams_opened += 1;
        let h = &self.hosts[client];
        let remote = match h.nat {
            None => h.addr,
            Some(nat) => {
                let port = self.nats[nat].nat.tcp_port();
                SocketAddr::new(IpAddr::V4(self.nats[nat].nat.public_ip()), port)
            }
        };
        let at = now + self.stream_delay(client, server);
        self.streams.insert(
            id,
            Stream {
                client,
                server,
                remote,
                accepted: false,
                client_open: true,
                server_open: true,
                last_to_server: at,
                last_to_client: at,
            },
        );
        self.push(at, Pending::StreamOpened(id));
        id
    }

    /// Whether `host`'s end of `stream` is open.
    pub fn stream_open(&self, stream: StreamId, direction_of_sender: Direction) -> bool {
        self.streams
            .get(&stream)
            .is_some_and(|s| match direction_of_sender {
                Direction::ToServer => s.client_open,
                Direction::ToClient => s.server_open,
            })
    }

    /// Whether the server end was told of the stream (so it must be told of its end).
    pub fn stream_accepted(&self, stream: StreamId) -> bool {
        self.streams.get(&stream).is_some_and(|s| s.accepted)
    }

    /// The (client, server) hosts of a stream.
    pub fn stream_ends(&self, stream: StreamId) -> Option<(HostId, HostId)> {
        self.streams.get(&stream).map(|s| (s.client, s.server))
    }

    /// Sends a message on a stream; `false` if the sender's end is closed
    /// (the message is lost, as on a dead socket).
    pub fn stream_send(
        &mut self,
        now: Instant,
        stream: StreamId,
        direction: Direction,
        payload: &[u8],
    ) -> bool {
        let Some(s) = self.streams.get(&stream) else {
            return false;
        };
        let (open, a, b, last) = match direction {
            Direction::ToServer => (s.client_open, s.client, s.server, s.last_to_server),
            Direction::ToClient => (s.server_open, s.server, s.client, s.last_to_client),
        };
        if !open {
            self.stats.stream_messages_lost += 1;
            return false;
        }
        let at = (now + self.stream_delay(a, b)).max(last);
        if let Some(s) = self.streams.get_mut(&stream) {
            match direction {
                Direction::ToServer => s.last_to_server = at,
                Direction::ToClient => s.last_to_client = at,
            }
        }
        self.push(
            at,
            Pending::StreamMessage(stream, direction, payload.to_vec()),
        );
        true
    }

    /// Breaks a stream: both ends are closed at once and every message in
    /// flight is lost. Returns the (client, server) hosts, whose machines the
    /// caller tells now; `None` if the stream was already fully closed.
    pub fn break_stream(&mut self, stream: StreamId) -> Option<(HostId, HostId)> {
        let s = self.streams.get_mut(&stream)?;
        if !s.client_open && !s.server_open {
            return None;
        }
        s.client_open = false;
        s.server_open = false;
        Some((s.client, s.server))
    }

    /// One side closes a stream: its own end closes now (the caller does not
    /// tell its own machine), the other side learns it after the data sent
    /// before. `closer` is the direction the close travels (`ToServer`: the
    /// client closed).
    pub fn close_stream(&mut self, now: Instant, stream: StreamId, closer: Direction) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let (open, a, b, last) = match closer {
            Direction::ToServer => (s.client_open, s.client, s.server, s.last_to_server),
            Direction::ToClient => (s.server_open, s.server, s.client, s.last_to_client),
        };
        if !open {
            return;
        }
        match closer {
            Direction::ToServer => s.client_open = false,
            Direction::ToClient => s.server_open = false,
        }
        let at = (now + self.stream_delay(a, b)).max(last);
        self.push(at, Pending::StreamClosed(stream, closer));
    }

    /// Forgets streams closed at both ends (call now and then in long runs).
    pub fn forget_closed_streams(&mut self) {
        self.streams.retain(|_, s| s.client_open || s.server_open);
    }

    /// Number of streams open at either end.
    pub fn open_streams(&self) -> usize {
        self.streams
            .values()
            .filter(|s| s.client_open || s.server_open)
            .count()
    }

    /// When the next delivery is due, if any (it may still be dropped on arrival).
    pub fn next_time(&self) -> Option<Instant> {
        self.queue.peek().map(|q| q.at)
    }

    /// Pops the next delivery due at or before `now`, skipping those dropped
    /// on arrival (NAT filter, closed stream, host down).
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, NetEvent)> {
        while self.queue.peek().is_some_and(|q| q.at <= now) {
            let q = self.queue.pop()?;
            if let Some(ev) = self.arrive(q.at, q.what) {
                return Some((q.at, ev));
            }
        }
        None
    }

    /// Pops the next entry whatever its time (for a driver that advances the
    /// clock to it), skipping dropped ones.
    pub fn pop_next(&mut self) -> Option<(Instant, NetEvent)> {
        while let Some(q) = self.queue.pop() {
            if let Some(ev) = self.arrive(q.at, q.what) {
                return Some((q.at, ev));
            }
        }
        None
    }

    fn arrive(&mut self, at: Instant, what: Pending) -> Option<NetEvent> {
        match what {
            Pending::Datagram { from, to, payload } => {
                let host = match self.owners.get(&to.ip()).copied() {
                    None => {
                        self.stats.datagrams_unroutable += 1;
                        return None;
                    }
                    Some(Owner::Host(h)) => {
                        if self.hosts[h].addr != to {
                            self.stats.datagrams_unroutable += 1;
                            return None;
                        }
                        h
                    }
                    Some(Owner::Nat(n)) => {
                        let nb = &mut self.nats[n];
                        let Some(inside) = nb.nat.inbound(at, from, to.port()) else {
                            self.stats.datagrams_dropped_by_nat += 1;
                            return None;
                        };
                        let Some(&h) = nb.inside.get(&inside) else {
                            self.stats.datagrams_unroutable += 1;
                            return None;
                        };
                        h
                    }
                };
                if self.hosts[host].down {
                    self.stats.datagrams_unroutable += 1;
                    return None;
                }
                self.stats.datagrams_delivered += 1;
                Some(NetEvent::Datagram {
                    host,
                    from,
                    to: self.hosts[host].addr,
                    payload,
                })
            }
            Pending::StreamOpened(id) => {
                let s = self.streams.get_mut(&id)?;
                if !s.server_open {
                    return None;
                }
                s.accepted = true;
                Some(NetEvent::StreamOpened {
                    stream: id,
                    server: s.server,
                    remote: s.remote,
                })
            }
            Pending::StreamMessage(id, direction, payload) => {
                let s = self.streams.get(&id)?;
                let (receiver_open, host) = match direction {
                    Direction::ToServer => (s.server_open, s.server),
                    Direction::ToClient => (s.client_open, s.client),
                };
                if !receiver_open {
                    self.stats.stream_messages_lost += 1;
                    return None;
                }
                self.stats.stream_messages_delivered += 1;
                Some(NetEvent::StreamMessage {
                    stream: id,
                    host,
                    direction,
                    payload,
                })
            }
            Pending::StreamClosed(id, closer) => {
                let s = self.streams.get_mut(&id)?;
                if closer == Direction::ToServer && !s.accepted {
                    s.server_open = false;
                    return None;
                }
                let host = match closer {
                    Direction::ToServer if s.server_open => {
                        s.server_open = false;
                        s.server
                    }
                    Direction::ToClient if s.client_open => {
                        s.client_open = false;
                        s.client
                    }
                    _ => return None,
                };
                Some(NetEvent::StreamClosed {
                    stream: id,
                    host,
                    direction: closer,
                })
            }
        }
    }
}
