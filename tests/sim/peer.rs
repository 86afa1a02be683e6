//! Two peer sessions on the simulated network: each terminal behind its own
//! NAT, a public "trigger server" host that both have sent to (so each
//! knows the other's public address, as an address notification would say),
//! and a driver that follows the sans-IO contract on the virtual clock.
//!
//! The harness keeps each side's outgoing stream (a byte vector read by
//! offset), what arrived (stream bytes placed by offset, datagrams with their
//! arrival time) and every event with its time, so tests assert on bytes
//! and checksums. A hook sees every datagram as it leaves a host and may
//! drop it, keep a copy (to replay it later) or let it pass.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tryst_core::crypto::StaticKeypair;
use tryst_core::machine::{Destination, Input, Machine, Output, MAX_TRANSMIT_LEN};
use tryst_core::peer::packet::MAX_DATAGRAM_LEN;
use tryst_core::peer::session::{PeerConfig, PeerEvent, PeerSession, SessionParams};
use tryst_core::peer::transport::{PeerSink, StreamSource};
use tryst_core::relay::server::{Relay, RelayConfig};
use tryst_core::relay::{RelayIssuer, RelayKey, RELAY_KEY_LEN};
use tryst_core::time::Instant;
use tryst_core::wire::{RelayAllocation, Role, SessionId, SessionKey, SESSION_ID_LEN};

use super::nat::NatConfig;
use super::net::{HostId, LinkConfig, NetEvent, Network};

/// The public host both terminals contact first (stands in for the trigger server).
pub const RENDEZVOUS: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)), 7000);

/// The public relay host of [`PeerPair::with_relay`].
pub const RELAY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 20)), 7100);
/// The key the sim's "session server" and relay share.
pub const RELAY_SECRET: [u8; RELAY_KEY_LEN] = [0x2d; RELAY_KEY_LEN];
/// Unix time at the sim's clock origin (tokens carry wall-clock expiry).
pub const UNIX_AT_ZERO: u64 = 1_800_000_000;

/// The app side of one session: what it sends and what it got.
#[derive(Debug, Default)]
pub struct App {
    /// The outgoing stream's bytes.
    pub outgoing: Vec<u8>,
    /// The incoming stream, placed by offset.
    pub incoming: Vec<u8>,
    /// Bytes of `incoming` actually written (overlaps counted once per call).
    pub incoming_writes: u64,
    /// Datagrams received, with their arrival time.
    pub datagrams: Vec<(Instant, Vec<u8>)>,
}

/// [`App`] as the session's source and sink, at the current time.
struct Io<'a> {
    app: &'a mut App,
    now: Instant,
}

impl StreamSource for Io<'_> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> usize {
        let Ok(offset) = usize::try_from(offset) else {
            return 0;
        };
        let Some(rest) = self.app.outgoing.get(offset..) else {
            return 0;
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        n
    }
}

impl PeerSink for Io<'_> {
    fn stream_data(&mut self, offset: u64, data: &[u8]) {
        let start = usize::try_from(offset).expect("offsets fit in memory");
        let end = start + data.len();
        if self.app.incoming.len() < end {
            self.app.incoming.resize(end, 0);
        }
        self.app.incoming[start..end].copy_from_slice(data);
        self.app.incoming_writes += data.len() as u64;
    }

    fn datagram(&mut self, data: &[u8]) {
        self.app.datagrams.push((self.now, data.to_vec()));
    }
}

/// One terminal: its host, session and app.
pub struct Peer {
    /// Its host on the network.
    pub host: HostId,
    /// Its public address (the NAT's side).
    pub public: SocketAddr,
    /// The session machine.
    pub session: PeerSession,
    /// What it sends and received.
    pub app: App,
    /// Every event with the time it was polled.
    pub events: Vec<(Instant, PeerEvent)>,
}

impl Peer {
    /// The `Ended` event, if the session ended.
    pub fn ended(&self) -> Option<(Instant, PeerEvent)> {
        self.events
            .iter()
            .copied()
            .find(|(_, e)| matches!(e, PeerEvent::Ended { .. }))
    }

    /// When the first event matching `f` came.
    pub fn first_event(&self, f: impl Fn(&PeerEvent) -> bool) -> Option<Instant> {
        self.events.iter().find(|(_, e)| f(e)).map(|(t, _)| *t)
    }
}

/// What the hook decides for a datagram leaving a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it on.
    Pass,
    /// Drop it before the network sees it.
    Drop,
}

/// A hook on every datagram: (time, sender is A, destination, bytes).
pub type Hook = Box<dyn FnMut(Instant, bool, SocketAddr, &[u8]) -> Verdict>;

/// Two terminals with a peer session between them.
pub struct PeerPair {
    /// The network.
    pub net: Network,
    /// The virtual clock.
    pub now: Instant,
    /// The connecting side (initiator).
    pub a: Peer,
    /// The connected side.
    pub b: Peer,
    /// The generator the sessions use for keys.
    pub rng: ChaCha20Rng,
    /// Sees every datagram as it leaves.
    pub hook: Option<Hook>,
    /// Steps taken (deliveries and timer runs), a guard against a spinning driver.
    pub steps: u64,
    /// The relay and its host, if the pair has one.
    pub relay: Option<(HostId, Relay)>,
}

/// The session both sides run.
pub const SESSION: SessionId = SessionId([0x5e; SESSION_ID_LEN]);
const KEY: SessionKey = SessionKey([0x4b; 32]);

impl PeerPair {
    /// Two terminals behind endpoint-independent NATs whose uplinks are
    /// `link_a` and `link_b`; each has sent to the rendezvous host, so its
    /// NAT mapping exists. Sessions of `duration_secs` start at once.
    pub fn new(
        seed: u64,
        link_a: LinkConfig,
        link_b: LinkConfig,
        config: PeerConfig,
        duration_secs: u32,
    ) -> PeerPair {
        let nats = (NatConfig::home(), NatConfig::home());
        PeerPair::with_nats(seed, nats, link_a, link_b, config, duration_secs)
    }

    /// As [`PeerPair::new`], with A behind a NAT like `nats.0` and B like `nats.1`.
    pub fn with_nats(
        seed: u64,
        nats: (NatConfig, NatConfig),
        link_a: LinkConfig,
        link_b: LinkConfig,
        config: PeerConfig,
        duration_secs: u32,
    ) -> PeerPair {
        PeerPair::build(seed, nats, link_a, link_b, config, duration_secs, false)
    }

    /// As [`PeerPair::with_nats`] on clean links, with a relay at [`RELAY`]
    /// whose allocations both sessions hold (as the session server would
    /// hand them out).
    pub fn with_relay(
        seed: u64,
        nats: (NatConfig, NatConfig),
        config: PeerConfig,
        duration_secs: u32,
    ) -> PeerPair {
        let clean = LinkConfig::clean();
        PeerPair::build(seed, nats, clean, clean, config, duration_secs, true)
    }

    fn build(
        seed: u64,
        nats: (NatConfig, NatConfig),
        link_a: LinkConfig,
        link_b: LinkConfig,
        config: PeerConfig,
        duration_secs: u32,
        with_relay: bool,
    ) -> PeerPair {
        let mut net = Network::new(seed);
        net.add_public_host(RENDEZVOUS, LinkConfig::clean());
        let nat_a = net.add_nat(nats.0, link_a);
        let nat_b = net.add_nat(nats.1, link_b);
        let host_a = net.add_host_behind(nat_a);
        let host_b = net.add_host_behind(nat_b);
        let now = Instant::from_micros(1_000_000);
        // Keepalives: each terminal's mapping, as the trigger server sees it.
        net.send_datagram(now, host_a, RENDEZVOUS, b"keepalive");
        net.send_datagram(now, host_b, RENDEZVOUS, b"keepalive");
        let public_a = net
            .public_addr_of(now, host_a, RENDEZVOUS)
            .expect("A's mapping");
        let public_b = net
            .public_addr_of(now, host_b, RENDEZVOUS)
            .expect("B's mapping");
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x9e37_79b9);
        let key_a = StaticKeypair::generate(&mut rng);
        let key_b = StaticKeypair::generate(&mut rng);
        let relay = with_relay.then(|| {
            let host = net.add_public_host(RELAY, LinkConfig::clean());
            let config = RelayConfig::new(RelayKey(RELAY_SECRET), UNIX_AT_ZERO);
            (host, Relay::new(config))
        });
        let issuer = RelayIssuer {
            addr: RELAY,
            key: RelayKey(RELAY_SECRET),
            unix_at_zero: UNIX_AT_ZERO,
        };
        let allocation = |role| -> Option<RelayAllocation> {
            with_relay.then(|| {
                issuer.allocation(now, SESSION, role, duration_secs, Duration::from_secs(3600))
            })
        };
        let params = |role, peer_key, peer_addr| SessionParams {
            session_id: SESSION,
            role,
            peer_key,
            peer_addr,
            session_key: KEY,
            duration_secs,
            relay: allocation(role),
        };
        let session_a = PeerSession::new(
            now,
            config.clone(),
            &key_a,
            params(Role::Connecting, key_b.public_key(), public_b),
            &mut rng,
        );
        let session_b = PeerSession::new(
            now,
            config,
            &key_b,
            params(Role::Connected, key_a.public_key(), public_a),
            &mut rng,
        );
        let peer = |host, public, session| Peer {
            host,
            public,
            session,
            app: App::default(),
            events: Vec::new(),
        };
        PeerPair {
            net,
            now,
            a: peer(host_a, public_a, session_a),
            b: peer(host_b, public_b, session_b),
            rng,
            hook: None,
            steps: 0,
            relay,
        }
    }

    /// Sends everything both sessions have to send, and collects events.
    pub fn flush(&mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM_LEN];
        for is_a in [true, false] {
            let now = self.now;
            loop {
                let peer = if is_a { &mut self.a } else { &mut self.b };
                let mut io = Io {
                    app: &mut peer.app,
                    now,
                };
                let Some((to, n)) = peer.session.poll_transmit(now, &mut buf, &mut io) else {
                    break;
                };
                let host = peer.host;
                let verdict = match &mut self.hook {
                    Some(hook) => hook(now, is_a, to, &buf[..n]),
                    None => Verdict::Pass,
                };
                if verdict == Verdict::Pass {
                    self.net.send_datagram(now, host, to, &buf[..n]);
                }
            }
            let peer = if is_a { &mut self.a } else { &mut self.b };
            while let Some(e) = peer.session.poll_event() {
                peer.events.push((now, e));
            }
        }
    }

    /// Hands `bytes` to a side as if they came from `from`, now.
    pub fn inject(&mut self, to_a: bool, from: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        let mut bytes = bytes.to_vec();
        let peer = if to_a { &mut self.a } else { &mut self.b };
        let mut io = Io {
            app: &mut peer.app,
            now,
        };
        peer.session
            .handle_datagram(now, from, &mut bytes, &mut io, &mut self.rng);
        self.flush();
    }

    /// Runs until `until`, or until `stop` holds (checked after every step).
    /// Asserts the driver contract: a timer that fired is not due again at
    /// the same instant once the transmits are drained.
    pub fn run_until(&mut self, until: Instant, mut stop: impl FnMut(&PeerPair) -> bool) {
        self.flush();
        loop {
            if stop(self) {
                return;
            }
            let timers = [
                self.a.session.poll_timeout(),
                self.b.session.poll_timeout(),
                self.relay.as_ref().and_then(|(_, r)| r.poll_timeout()),
            ];
            let next_timer = timers.iter().flatten().min().copied();
            let next = match (self.net.next_time(), next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            self.steps += 1;
            if self.net.next_time().is_some_and(|t| t <= self.now) {
                if let Some((_, event)) = self.net.pop_due(self.now) {
                    self.on_net_event(event);
                }
                if self.net.next_time().is_none_or(|t| t > self.now) {
                    self.drain_relay();
                }
                continue;
            }
            let now = self.now;
            if let Some((_, relay)) = &mut self.relay {
                if relay.poll_timeout().is_some_and(|t| t <= now) {
                    relay.handle_timeout(now);
                }
            }
            self.drain_relay();
            let mut fired = [false; 2];
            for (k, peer) in [&mut self.a, &mut self.b].into_iter().enumerate() {
                if peer.session.poll_timeout().is_some_and(|t| t <= now) {
                    peer.session.handle_timeout(now, &mut self.rng);
                    fired[k] = true;
                }
            }
            self.flush();
            for (k, peer) in [&self.a, &self.b].into_iter().enumerate() {
                let after = peer.session.poll_timeout();
                assert!(
                    !fired[k] || after.is_none_or(|t| t > now),
                    "driver would spin: poll_timeout {after:?} at {now:?}"
                );
            }
        }
        self.now = self.now.max(until);
        self.flush();
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until, |_| false);
    }

    fn on_net_event(&mut self, event: NetEvent) {
        let NetEvent::Datagram {
            host,
            from,
            mut payload,
            ..
        } = event
        else {
            return;
        };
        let now = self.now;
        if let Some((relay_host, relay)) = &mut self.relay {
            if host == *relay_host {
                // As a driver does with a receive batch: every datagram due
                // now goes in before the relay is polled once
                // ([`Self::drain_relay`]).
                let input = Input::Datagram {
                    from,
                    local: None,
                    bytes: &mut payload,
                };
                Machine::handle_input(relay, now, input, &mut ());
                return;
            }
        }
        let peer = if host == self.a.host {
            &mut self.a
        } else if host == self.b.host {
            &mut self.b
        } else {
            return; // the rendezvous host ignores what it gets
        };
        let mut io = Io {
            app: &mut peer.app,
            now,
        };
        peer.session
            .handle_datagram(now, from, &mut payload, &mut io, &mut self.rng);
        self.flush();
    }

    /// Sends what the relay's inputs since its last poll asked for, as a
    /// driver does once a receive batch is in.
    fn drain_relay(&mut self) {
        let now = self.now;
        let Some((host, relay)) = &mut self.relay else {
            return;
        };
        let mut buf = [0u8; MAX_TRANSMIT_LEN];
        loop {
            match Machine::poll_output(relay, now, &mut buf, &mut ()) {
                Output::Transmit(t) => {
                    if let Destination::Udp(to) = t.destination {
                        self.net.send_datagram(now, *host, to, &buf[..t.len]);
                    }
                }
                Output::Timeout(_) => return,
                _ => {}
            }
        }
    }

    /// Both sides connected and not ended.
    pub fn connected(&self) -> bool {
        self.a.session.is_connected() && self.b.session.is_connected()
    }
}

/// Runs `f` on a thread with a large stack: sessions hold their transport
/// inline (about 160 KB each) and unoptimised builds copy them between frames.
pub fn big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(f)
        .expect("spawn a test thread");
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
