//! The trigger server's probe port: a stateless address echo for `tryst
//! netcheck`, run by the driver on a second UDP socket beside the trigger
//! server's own (`--probe-listen`).
//!
//! An [`AddressProbe`] is answered with an [`AddressEcho`] naming the
//! source address it came from, from the probe socket itself, or, when it
//! asks for `other_port`, from a third socket (an ephemeral port of the
//! same host the prober never sent to: a filtering test). Comparing the
//! echo with the address the trigger server's own port observed tells
//! whether the prober's NAT maps per destination.
//!
//! # Why unauthenticated, and why that is safe
//! Like a STUN binding request, the probe carries no identity, so the echo
//! works before (and without) any registration and costs no key lookup.
//! What bounds it instead:
//! - **no amplification**: the echo is never longer than the probe
//!   ([`ADDRESS_PROBE_PADDING`] pads the probe past the longest echo, IPv6
//!   included), and one probe draws at most one echo;
//! - **a per-source bucket** ([`PROBE_PORT_LIMIT`], IPv4 address or IPv6
//!   /64, [`TRACKED_PROBE_SOURCES`] sources in a fixed table): a spoofed
//!   source can make the port send to a victim no faster than that, and no
//!   more bytes than the spoofer sends;
//! - **no other state**: nothing is kept per probe, there is no timer.

use core::net::SocketAddr;
use core::time::Duration;

use crate::ratelimit::{Limit, RateLimiter, SourceKey};
use crate::time::Instant;
use crate::wire::{AddressEcho, Message};

pub use crate::wire::ADDRESS_PROBE_PADDING;

/// Address probes answered per source: a burst of 16, then one every 100 ms.
pub const PROBE_PORT_LIMIT: Limit = Limit::one_every(16, Duration::from_millis(100));
/// Sources the probe port's limiter tracks at once.
pub const TRACKED_PROBE_SOURCES: usize = 1024;

/// Which socket an echo leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The probe socket, where the probe arrived.
    ProbeSocket,
    /// The other socket (a port the prober did not send to).
    OtherSocket,
}

/// An echo to send: `len` bytes of the caller's buffer, to `to`, via `via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an echo must be sent"]
pub struct Echo {
    /// The socket it leaves from.
    pub via: Via,
    /// The prober's observed address.
    pub to: SocketAddr,
    /// Bytes of the caller's buffer.
    pub len: usize,
}

/// Counters of the probe port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbePortStats {
    /// Probes answered.
    pub answered: u64,
    /// Probes over their source's limit.
    pub rate_limited: u64,
    /// Datagrams that are not address probes.
    pub ignored: u64,
}

/// The probe port's machine: a per-source limiter and counters, nothing else.
#[derive(Debug, Clone)]
pub struct ProbePort {
    limiter: RateLimiter<SourceKey, TRACKED_PROBE_SOURCES>,
    stats: ProbePortStats,
}

impl ProbePort {
    /// A probe port whose limiter's hash chains depend on `seed` (from the
    /// driver's random source).
    pub fn new(seed: u64) -> ProbePort {
        ProbePort {
            limiter: RateLimiter::with_seed(PROBE_PORT_LIMIT, seed),
            stats: ProbePortStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &ProbePortStats {
        &self.stats
    }

    /// A datagram arrived on the probe socket from `from`: the echo to
    /// send, written into `out`, or `None` (not a probe, over the limit, or
    /// `out` too small).
    pub fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Option<Echo> {
        let Ok(Message::AddressProbe(probe)) = Message::decode(datagram) else {
            self.stats.ignored += 1;
            return None;
        };
        if self
            .limiter
            .check(now, &SourceKey::from_addr(&from))
            .is_err()
        {
            self.stats.rate_limited += 1;
            return None;
        }
        let echo = Message::AddressEcho(AddressEcho {
            txid: probe.txid,
            observed: from,
        });
        let len = echo.encode(out).ok()?;
        // Never more bytes out than in (see the module docs).
        if len > datagram.len() {
            self.stats.ignored += 1;
            return None;
        }
        self.stats.answered += 1;
        Some(Echo {
            via: if probe.other_port {
                Via::OtherSocket
            } else {
                Via::ProbeSocket
            },
            to: from,
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AddressProbe, MAX_MESSAGE_LEN};

    fn probe(other_port: bool) -> ([u8; 64], usize) {
        let mut buf = [0u8; 64];
        let n = Message::AddressProbe(AddressProbe {
            txid: 77,
            other_port,
        })
        .encode(&mut buf)
        .unwrap();
        (buf, n)
    }

    #[test]
    fn netcheck_probe_port_echoes_the_observed_address_from_the_asked_socket() {
        let mut port = ProbePort::new(1);
        let from: SocketAddr = "198.51.100.9:4444".parse().unwrap();
        for (other, via) in [(false, Via::ProbeSocket), (true, Via::OtherSocket)] {
            let (p, n) = probe(other);
            let mut out = [0u8; MAX_MESSAGE_LEN];
            let echo = port.handle(Instant::ZERO, from, &p[..n], &mut out).unwrap();
            assert_eq!((echo.via, echo.to), (via, from));
            assert_eq!(
                Message::decode(&out[..echo.len]).unwrap(),
                Message::AddressEcho(AddressEcho {
                    txid: 77,
                    observed: from
                })
            );
        }
    }

    #[test]
    fn netcheck_probe_port_echo_is_never_longer_than_the_probe() {
        let mut port = ProbePort::new(1);
        let (p, n) = probe(false);
        for from in [
            "198.51.100.9:4444",
            "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
        ] {
            let mut out = [0u8; MAX_MESSAGE_LEN];
            let echo = port
                .handle(Instant::ZERO, from.parse().unwrap(), &p[..n], &mut out)
                .unwrap();
            assert!(echo.len <= n, "{} > {n}", echo.len);
        }
    }

    #[test]
    fn netcheck_probe_port_limits_each_source_and_ignores_other_messages() {
        let mut port = ProbePort::new(1);
        let (p, n) = probe(false);
        let from: SocketAddr = "198.51.100.9:4444".parse().unwrap();
        let mut out = [0u8; MAX_MESSAGE_LEN];
        let answered = (0..100)
            .filter(|_| {
                port.handle(Instant::ZERO, from, &p[..n], &mut out)
                    .is_some()
            })
            .count();
        assert_eq!(answered, PROBE_PORT_LIMIT.capacity() as usize);
        assert_eq!(port.stats().rate_limited, 100 - answered as u64);
        // Another source still gets its answer.
        let other: SocketAddr = "198.51.100.10:4444".parse().unwrap();
        assert!(port
            .handle(Instant::ZERO, other, &p[..n], &mut out)
            .is_some());
        // Anything else: nothing.
        assert!(port
            .handle(
                Instant::ZERO,
                other,
                &crate::wire::vectors::KEEPALIVE,
                &mut out
            )
            .is_none());
        assert!(port
            .handle(Instant::ZERO, other, b"junk", &mut out)
            .is_none());
        assert_eq!(port.stats().ignored, 2);
    }
}
