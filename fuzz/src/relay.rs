//! The `relay` harness: the relay's bind decoder and its machine, driven by
//! arbitrary bytes.
//! - [`decode_bind`] never panics on any bytes, and accepts only what a
//!   token minted under the relay's key encodes to;
//! - a [`Relay`] fed a sequence of operations chosen by the input (valid
//!   binds for a few sessions and sides from a few addresses, raw bytes,
//!   peer packets, time steps, extensions, forced ends) never panics,
//!   never holds more allocations than its capacity, never forwards to the
//!   sender, never forwards a packet that is not a peer packet, and after
//!   `handle_timeout(now)` its next timeout is later than `now`.

use std::net::SocketAddr;
use std::time::Duration;

use tryst_core::peer::packet::{Packet, MAX_DATAGRAM_LEN};
use tryst_core::relay::server::{Relay, RelayConfig};
use tryst_core::relay::{decode_bind, encode_bind, RelayKey, RelayToken, RELAY_BIND_LEN};
use tryst_core::time::Instant;
use tryst_core::wire::{Role, SessionId};

const KEY: [u8; 32] = [0x42; 32];
const UNIX0: u64 = 1_800_000_000;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, i % 4 + 1], 4000 + u16::from(i % 3)))
}

fn session(i: u8) -> SessionId {
    SessionId([i % 3 + 1; 16])
}

/// Runs every check on one input.
pub fn run(data: &[u8]) {
    let key = RelayKey(KEY);
    // Raw bytes into the decoder.
    if let Ok(token) = decode_bind(data, &key, UNIX0) {
        let mut again = [0u8; RELAY_BIND_LEN];
        assert_eq!(encode_bind(&token, &mut again), Some(RELAY_BIND_LEN));
        assert_eq!(&again[..], data, "an accepted bind is canonical");
        assert!(token.verify(&key));
    }
    let mut config = RelayConfig::new(RelayKey(KEY), UNIX0);
    config.max_allocations = 2;
    config.burst_bytes = 4096;
    config.bytes_per_second = 10_000;
    config.max_bytes_per_session = 20_000;
    let mut relay = Relay::new(config);
    let mut now = Instant::ZERO;
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let arg = rest.first().copied().unwrap_or(0);
        match op % 6 {
            0 => {
                // A valid bind.
                let role = if arg & 1 == 0 {
                    Role::Connecting
                } else {
                    Role::Connected
                };
                let token = RelayToken::mint(
                    &key,
                    session(arg >> 1),
                    role,
                    (UNIX0 + 60) as u32,
                    u32::from(arg % 16),
                );
                let mut bind = [0u8; RELAY_BIND_LEN];
                let _ = encode_bind(&token, &mut bind);
                assert_eq!(relay.handle_datagram(now, addr(arg >> 3), &bind), None);
            }
            1 => {
                // A peer packet of some session from some address.
                let mut buf = [0u8; MAX_DATAGRAM_LEN];
                let n = Packet::Probe {
                    channel: tryst_core::peer::handshake::channel_id(&session(arg)),
                    seq: 0,
                }
                .encode(&mut buf)
                .unwrap_or(0);
                let from = addr(arg >> 2);
                if let Some(to) = relay.handle_datagram(now, from, &buf[..n]) {
                    assert_ne!(to, from, "forwarded back to the sender");
                }
            }
            2 => {
                // Raw bytes (up to 64) from some address.
                let len = usize::from(arg % 64).min(rest.len());
                let bytes = &rest[..len];
                if let Some(to) = relay.handle_datagram(now, addr(arg), bytes) {
                    assert!(Packet::decode(bytes).is_ok(), "forwarded a non-peer packet");
                    assert_ne!(to, addr(arg));
                }
                rest = &rest[len..];
            }
            3 => {
                now = now + Duration::from_millis(u64::from(arg) * 100);
                relay.handle_timeout(now);
                if let Some(t) = relay.poll_timeout() {
                    assert!(t > now, "timeout {t:?} not past {now:?}");
                }
            }
            4 => relay.extend(&session(arg), u32::from(arg)),
            _ => relay.end_session(&session(arg)),
        }
        while relay.poll_event().is_some() {}
        assert!(relay.allocations() <= 2);
        let stats = relay.stats();
        assert!(stats.forwarded <= stats.forwarded_bytes);
    }
}
