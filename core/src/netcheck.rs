//! `tryst netcheck` as a sans-IO machine: what the terminal's NAT does,
//! measured against the trigger server, before any session (in the manner
//! of `tailscale netcheck` and `iroh-doctor report`).
//!
//! The driver opens [`Netcheck::sockets`] UDP sockets (socket 0 the
//! mapping socket, 1 the filtering socket, then one per survive probe),
//! feeds what each receives to [`Netcheck::handle_datagram`], sends what
//! [`Netcheck::poll_transmit`] hands out from the socket it names, and
//! calls [`Netcheck::handle_timeout`] at [`Netcheck::poll_timeout`]; once
//! [`Netcheck::report`] is `Some`, it is done. It needs a registration's
//! device ID and UDP key: every probe to the trigger server's own port is
//! a tagged [`NatProbe`](crate::wire::NatProbe) and every answer is
//! verified.
//!
//! # What is measured
//! - **Observed address**: the trigger server's answer to socket 0.
//! - **Mapping**: socket 0 also sends an [`AddressProbe`] to the probe
//!   port (the port the answer names, same IP). The same public address
//!   from both: endpoint-independent mapping (EIM); a different one: the
//!   mapping varies by destination ("symmetric"). With one server IP this
//!   tells port-dependence only: a NAT whose mapping depends on the
//!   destination *address* but not its port looks like EIM here.
//! - **Filtering**: socket 1 sends only to the probe port and asks for the
//!   echo from another port of the server. It gets through: the NAT lets in
//!   packets from a port the terminal never sent to (endpoint-independent
//!   or address-dependent filtering; one server IP cannot tell those two
//!   apart). It does not: address-and-port-dependent filtering (or the
//!   echo was lost: it is asked for [`TRIES`] times).
//! - **Survive interval**: each survive socket primes its mapping like a
//!   keepalive does (a probe answered at once), then sends one probe that
//!   asks for its answer after its delay ([`survive_delays`]: 5, 10, 20,
//!   40 s... up to `max_idle`) and stays silent. An answer that arrives
//!   shows the mapping outlived that much idle time.

use core::net::SocketAddr;
use core::time::Duration;

use crate::crypto::udp_auth;
use crate::time::{Clock, Instant};
use crate::wire::{AddressProbe, DeviceId, Message, UdpKey, MAX_NAT_PROBE_DELAY_SECS};

/// Socket 0: the observed address and the mapping test.
pub const MAPPING_SOCKET: usize = 0;
/// Socket 1: the filtering test (it sends to the probe port only).
pub const FILTERING_SOCKET: usize = 1;
/// The most survive probes (one socket each).
pub const MAX_SURVIVE_PROBES: usize = 8;
/// The most sockets a netcheck uses.
pub const MAX_SOCKETS: usize = 2 + MAX_SURVIVE_PROBES;
/// The survive delays tried, shortest first, those up to `max_idle` used.
pub const SURVIVE_LADDER: [u16; MAX_SURVIVE_PROBES] = [5, 10, 20, 40, 80, 160, 320, 600];
/// Time between two sends of an unanswered immediate probe.
pub const RETRY: Duration = Duration::from_millis(400);
/// Sends of an immediate probe before it counts as unanswered.
pub const TRIES: u8 = 5;
/// How long after its delay a delayed answer may still arrive.
pub const SURVIVE_GRACE: Duration = Duration::from_secs(2);
/// Default `--max-idle`: netcheck ends in about 22 s.
pub const DEFAULT_MAX_IDLE: Duration = Duration::from_secs(20);
/// Room for one probe (the longest, an IPv6 [`AddressProbe`], is 33 bytes).
pub const PROBE_BUF: usize = 48;
/// Transmits queued at most.
const MAX_QUEUED: usize = 2 * MAX_SOCKETS;

/// The survive delays for `max_idle`: the ladder's steps up to it, or one
/// probe of `max_idle` itself (at least 1 s) when it is below the first.
pub fn survive_delays(max_idle: Duration) -> heapless::Vec<u16, MAX_SURVIVE_PROBES> {
    let max = u16::try_from(max_idle.as_secs())
        .unwrap_or(u16::MAX)
        .min(MAX_NAT_PROBE_DELAY_SECS);
    let mut delays: heapless::Vec<u16, MAX_SURVIVE_PROBES> = SURVIVE_LADDER
        .iter()
        .copied()
        .filter(|d| *d <= max)
        .collect();
    if delays.is_empty() {
        let _ = delays.push(max.max(1));
    }
    delays
}

/// What netcheck needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetcheckConfig {
    /// The trigger server's UDP address.
    pub server: SocketAddr,
    /// The registration's device ID.
    pub device_id: DeviceId,
    /// The registration's UDP key.
    pub key: UdpKey,
    /// The longest idle time tried ([`survive_delays`]).
    pub max_idle: Duration,
    /// The mapping socket's own local address, if known (a public address
    /// shows as observed == local).
    pub local: Option<SocketAddr>,
    /// Random bits for the address probes' txids.
    pub txid_seed: u64,
}

/// Whether the NAT's mapping depends on the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// The same public address towards both server ports.
    EndpointIndependent,
    /// A different public address towards the probe port.
    VariesByDestination,
    /// Not measured: no probe port, or it never answered.
    Unknown,
}

impl Mapping {
    /// What a user reads (and `--json` carries).
    pub fn label(self) -> &'static str {
        match self {
            Mapping::EndpointIndependent => "endpoint-independent",
            Mapping::VariesByDestination => "varies by destination",
            Mapping::Unknown => "unknown",
        }
    }
}

/// Whether packets from a server port the terminal never sent to get in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filtering {
    /// They do: endpoint-independent or address-dependent filtering.
    OpenToOtherPorts,
    /// They do not: address-and-port-dependent filtering.
    PortDependent,
    /// Not measured (no probe port, or it never answered).
    Unknown,
}

impl Filtering {
    /// What a user reads (and `--json` carries).
    pub fn label(self) -> &'static str {
        match self {
            Filtering::OpenToOtherPorts => "endpoint-independent or address-dependent",
            Filtering::PortDependent => "address-and-port-dependent",
            Filtering::Unknown => "unknown",
        }
    }
}

/// Whether a session from this network will likely go direct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A public address, or a mapping that does not vary by destination.
    DirectLikely,
    /// The mapping varies (or could not be measured): direct only with a
    /// peer whose NAT is easy (public, or neither maps nor filters by port).
    DirectNeedsEasyPeer,
    /// No answer over UDP at all.
    RelayNeeded,
}

impl Verdict {
    /// The verdict line's text.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::DirectLikely => "direct likely",
            Verdict::DirectNeedsEasyPeer => "direct needs the peer to be easy",
            Verdict::RelayNeeded => "relay needed",
        }
    }
}

/// One survive probe's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SurviveProbe {
    /// Its idle time, in seconds.
    pub delay_secs: u16,
    /// Whether its delayed answer arrived.
    pub survived: bool,
}

/// What netcheck found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetcheckReport {
    /// The public address the trigger server observed (`None`: no answer).
    pub observed: Option<SocketAddr>,
    /// The address the probe port observed from the same socket.
    pub probe_observed: Option<SocketAddr>,
    /// The server's probe port (`None`: it runs none).
    pub probe_port: Option<u16>,
    /// Whether the observed address is the socket's own: no NAT.
    pub public: bool,
    /// The mapping test.
    pub mapping: Mapping,
    /// The filtering test.
    pub filtering: Filtering,
    /// Every survive probe, shortest first.
    pub survive: heapless::Vec<SurviveProbe, MAX_SURVIVE_PROBES>,
    /// The longest idle time survived with every shorter one survived too.
    pub survived_secs: Option<u16>,
    /// The verdict.
    pub verdict: Verdict,
}

/// An immediate exchange that is retried until answered.
#[derive(Debug, Clone, Copy, Default)]
struct Retried {
    /// Sends made.
    sends: u8,
    /// When the next send (or the give-up) is due.
    next: Option<Instant>,
    /// Answered.
    done: bool,
}

impl Retried {
    fn active(&self) -> bool {
        !self.done && self.next.is_some()
    }
    fn given_up(&self) -> bool {
        !self.done && self.sends >= TRIES && self.next.is_none()
    }
}

/// One survive socket.
#[derive(Debug, Clone, Copy)]
struct Survive {
    delay_secs: u16,
    /// The priming probe (answered at once).
    prime: Retried,
    /// The counter of the priming probe's last send.
    prime_counter: u64,
    /// The delayed probe's counter and deadline, once sent.
    delayed: Option<(u64, Instant)>,
    /// The outcome.
    survived: Option<bool>,
}

/// The netcheck machine. See the [module](self) docs.
#[derive(Debug)]
pub struct Netcheck {
    config: NetcheckConfig,
    clock: Clock,
    started: bool,
    next_counter: u64,
    /// Counters the mapping socket's probes used (the last [`TRIES`]).
    main_counters: heapless::Vec<u64, { TRIES as usize }>,
    main: Retried,
    observed: Option<SocketAddr>,
    probe_port: Option<u16>,
    mapping: Retried,
    probe_observed: Option<SocketAddr>,
    filtering: Retried,
    survive: heapless::Vec<Survive, MAX_SURVIVE_PROBES>,
    queue: heapless::Deque<(usize, SocketAddr, [u8; PROBE_BUF], usize), MAX_QUEUED>,
}

impl Netcheck {
    /// A netcheck against `config.server`; it starts at the first
    /// [`Self::handle_timeout`].
    pub fn new(config: NetcheckConfig) -> Netcheck {
        let survive = survive_delays(config.max_idle)
            .iter()
            .map(|&delay_secs| Survive {
                delay_secs,
                prime: Retried::default(),
                prime_counter: 0,
                delayed: None,
                survived: None,
            })
            .collect();
        Netcheck {
            config,
            clock: Clock::default(),
            started: false,
            next_counter: 1,
            main_counters: heapless::Vec::new(),
            main: Retried::default(),
            observed: None,
            probe_port: None,
            mapping: Retried::default(),
            probe_observed: None,
            filtering: Retried::default(),
            survive,
            queue: heapless::Deque::new(),
        }
    }

    /// How many sockets the driver must open (indices `0..sockets()`).
    pub fn sockets(&self) -> usize {
        2 + self.survive.len()
    }

    fn mapping_txid(&self) -> u64 {
        self.config.txid_seed
    }

    fn filtering_txid(&self) -> u64 {
        self.config.txid_seed ^ 0x5a5a_5a5a_5a5a_5a5a
    }

    fn probe_target(&self) -> Option<SocketAddr> {
        let port = self.probe_port.filter(|p| *p != 0)?;
        Some(SocketAddr::new(self.config.server.ip(), port))
    }

    fn queue(&mut self, socket: usize, to: SocketAddr, message: Message<'_>) {
        let mut buf = [0u8; PROBE_BUF];
        if let Ok(len) = message.encode(&mut buf) {
            // Bounded: at most one transmit per socket and exchange is due at once.
            let _ = self.queue.push_back((socket, to, buf, len));
        }
    }

    fn nat_probe(&mut self, socket: usize, delay_secs: u16) -> u64 {
        let counter = self.next_counter;
        self.next_counter = self.next_counter.saturating_add(1);
        let probe =
            udp_auth::seal_nat_probe(&self.config.key, self.config.device_id, counter, delay_secs);
        self.queue(socket, self.config.server, probe.into());
        counter
    }

    /// Sends or retries every immediate exchange due at `now`.
    fn send_due(&mut self, now: Instant) {
        let due = |r: &Retried| r.active() && r.next.is_some_and(|t| t <= now);
        if due(&self.main) && step(&mut self.main, now) {
            let counter = self.nat_probe(MAPPING_SOCKET, 0);
            if self.main_counters.is_full() {
                self.main_counters.remove(0);
            }
            let _ = self.main_counters.push(counter);
        }
        if let Some(target) = self.probe_target() {
            if due(&self.mapping) && step(&mut self.mapping, now) {
                let probe = AddressProbe {
                    txid: self.mapping_txid(),
                    other_port: false,
                };
                self.queue(MAPPING_SOCKET, target, probe.into());
            }
            if due(&self.filtering) && step(&mut self.filtering, now) {
                let probe = AddressProbe {
                    txid: self.filtering_txid(),
                    other_port: true,
                };
                self.queue(FILTERING_SOCKET, target, probe.into());
            }
        }
        for i in 0..self.survive.len() {
            let Some(s) = self.survive.get_mut(i) else {
                continue;
            };
            if due(&s.prime) && step(&mut s.prime, now) {
                let counter = self.nat_probe(2 + i, 0);
                if let Some(s) = self.survive.get_mut(i) {
                    s.prime_counter = counter;
                }
            }
        }
        // A survive socket whose prime was never answered fails.
        for s in &mut self.survive {
            if s.prime.given_up() && s.survived.is_none() {
                s.survived = Some(false);
            }
            if let Some((_, deadline)) = s.delayed {
                if s.survived.is_none() && deadline <= now {
                    s.survived = Some(false);
                }
            }
        }
    }

    /// A datagram arrived on socket `socket` from `from`.
    pub fn handle_datagram(&mut self, now: Instant, socket: usize, from: SocketAddr, bytes: &[u8]) {
        let now = self.clock.observe(now);
        match Message::decode(bytes) {
            Ok(Message::NatProbeAnswer(a)) => {
                if from != self.config.server || udp_auth::verify(&self.config.key, &a).is_err() {
                    return;
                }
                if socket == MAPPING_SOCKET && self.main_counters.contains(&a.counter) {
                    if !self.main.done {
                        self.main.done = true;
                        self.main.next = None;
                        self.observed = Some(a.observed);
                        self.probe_port = Some(a.probe_port);
                        if a.probe_port != 0 {
                            self.mapping.next = Some(now);
                            self.filtering.next = Some(now);
                        }
                    }
                } else if let Some(i) = socket.checked_sub(2) {
                    self.survive_answer(now, i, a.counter, a.delay_secs);
                }
            }
            Ok(Message::AddressEcho(e)) => {
                let Some(target) = self.probe_target() else {
                    return;
                };
                if socket == MAPPING_SOCKET
                    && from == target
                    && e.txid == self.mapping_txid()
                    && !self.mapping.done
                {
                    self.mapping.done = true;
                    self.mapping.next = None;
                    self.probe_observed = Some(e.observed);
                } else if socket == FILTERING_SOCKET
                    && from.ip() == target.ip()
                    && from.port() != target.port()
                    && e.txid == self.filtering_txid()
                {
                    self.filtering.done = true;
                    self.filtering.next = None;
                }
            }
            _ => {}
        }
    }

    /// A tagged answer on survive socket `i`: its prime's (then the
    /// delayed probe goes out) or its delayed probe's.
    fn survive_answer(&mut self, now: Instant, i: usize, counter: u64, delay_secs: u16) {
        let Some(s) = self.survive.get_mut(i) else {
            return;
        };
        if !s.prime.done && delay_secs == 0 && counter == s.prime_counter {
            s.prime.done = true;
            s.prime.next = None;
            let delay = s.delay_secs;
            let deadline = now + Duration::from_secs(u64::from(delay)) + SURVIVE_GRACE;
            let sent = self.nat_probe(2 + i, delay);
            if let Some(s) = self.survive.get_mut(i) {
                s.delayed = Some((sent, deadline));
            }
        } else if s.survived.is_none()
            && s.delay_secs == delay_secs
            && s.delayed.is_some_and(|(c, _)| c == counter)
        {
            s.survived = Some(true);
        }
    }

    /// Does what is due at `now` (the first call starts the netcheck).
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.observe(now);
        if !self.started {
            self.started = true;
            self.main.next = Some(now);
            for s in &mut self.survive {
                s.prime.next = Some(now);
            }
        }
        self.send_due(now);
        // No answer at all from the server: nothing else can be learnt.
        if self.main.given_up() {
            self.mapping.next = None;
            self.filtering.next = None;
            for s in &mut self.survive {
                s.prime.next = None;
                s.survived.get_or_insert(false);
            }
        }
    }

    /// The next datagram to send: `(socket, destination, length)` of the
    /// bytes written into `buf` (at least [`PROBE_BUF`] bytes).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(usize, SocketAddr, usize)> {
        let (socket, to, bytes, len) = self.queue.pop_front()?;
        let out = buf.get_mut(..len)?;
        out.copy_from_slice(bytes.get(..len)?);
        Some((socket, to, len))
    }

    /// When [`Self::handle_timeout`] is next due (`None` once done, or
    /// before the start: call it at once then).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.started {
            return Some(self.clock.latest());
        }
        if self.report().is_some() {
            return None;
        }
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for r in [&self.main, &self.mapping, &self.filtering] {
            consider(r.next.filter(|_| !r.done));
        }
        for s in &self.survive {
            consider(s.prime.next.filter(|_| !s.prime.done));
            if s.survived.is_none() {
                consider(s.delayed.map(|(_, d)| d));
            }
        }
        next
    }

    /// The result, once every test has ended.
    pub fn report(&self) -> Option<NetcheckReport> {
        if !self.started {
            return None;
        }
        let main_over = self.main.done || self.main.given_up();
        let probes = self.probe_port.is_some_and(|p| p != 0);
        let mapping_over = !probes || self.mapping.done || self.mapping.given_up();
        let filtering_over = !probes || self.filtering.done || self.filtering.given_up();
        let survive_over = self.survive.iter().all(|s| s.survived.is_some());
        if !(main_over
            && (self.observed.is_none() || (mapping_over && filtering_over))
            && survive_over)
        {
            return None;
        }
        let mapping = match (self.observed, self.probe_observed) {
            (Some(a), Some(b)) if a == b => Mapping::EndpointIndependent,
            (Some(_), Some(_)) => Mapping::VariesByDestination,
            _ => Mapping::Unknown,
        };
        let filtering = if self.filtering.done {
            Filtering::OpenToOtherPorts
        } else if self.probe_observed.is_some() && self.filtering.given_up() {
            // The probe port answered the mapping socket, so it is
            // reachable: the echo from the other port was filtered.
            Filtering::PortDependent
        } else {
            Filtering::Unknown
        };
        let survive: heapless::Vec<SurviveProbe, MAX_SURVIVE_PROBES> = self
            .survive
            .iter()
            .map(|s| SurviveProbe {
                delay_secs: s.delay_secs,
                survived: s.survived == Some(true),
            })
            .collect();
        let survived_secs = survive
            .iter()
            .take_while(|s| s.survived)
            .last()
            .map(|s| s.delay_secs);
        let public = match (self.observed, self.config.local) {
            (Some(o), Some(l)) => {
                o.port() == l.port() && o.ip().to_canonical() == l.ip().to_canonical()
            }
            _ => false,
        };
        let verdict = match (self.observed, mapping) {
            (None, _) => Verdict::RelayNeeded,
            _ if public => Verdict::DirectLikely,
            (_, Mapping::EndpointIndependent) => Verdict::DirectLikely,
            _ => Verdict::DirectNeedsEasyPeer,
        };
        Some(NetcheckReport {
            observed: self.observed,
            probe_observed: self.probe_observed,
            probe_port: self.probe_port.filter(|p| *p != 0),
            public,
            mapping,
            filtering,
            survive,
            survived_secs,
            verdict,
        })
    }
}

/// One send of a retried exchange at `now`: whether to send (false once
/// its tries are spent: it has given up).
fn step(r: &mut Retried, now: Instant) -> bool {
    if r.sends >= TRIES {
        r.next = None;
        return false;
    }
    r.sends += 1;
    r.next = Some(now + RETRY);
    true
}

#[cfg(test)]
mod tests;
