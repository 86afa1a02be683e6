//! The `relay` harness: the relay's bind decoder and its machine, driven by
//! arbitrary bytes.
//! - [`decode_bind`] never panics on any bytes, and accepts only what a
//!   token minted under the relay's key encodes to;
//! - a [`Relay`] fed a sequence of operations chosen by the input (valid
//!   binds for a few sessions and sides from a few addresses, raw bytes,
//!   peer packets, time steps, extensions, forced ends) never panics,
//!   never holds more allocations than its capacity, never forwards to the
//!   sender, never forwards a packet that is not a peer packet, and after
//!   `handle_timeout(now)` its next timeout is later than `now`;
//! - the TCP framing ([`RelayFrameBuffer`]) never panics on any bytes,
//!   fed in any chunks, holds at most one frame, and every frame it gives
//!   encodes back to the bytes it came from;
//! - a [`RelayFront`] fed the same operations over UDP and TCP never holds
//!   more connections than its caps, never forwards to the sender, and
//!   frames every packet it sends on a connection.

use std::net::SocketAddr;
use std::time::Duration;

use tryst_core::machine::{ConnectionId, Destination, Input, Machine, Output, MAX_TRANSMIT_LEN};
use tryst_core::peer::packet::{Packet, MAX_DATAGRAM_LEN};
use tryst_core::relay::framing::{encode_frame, RelayFrameBuffer, MAX_RELAY_FRAME_LEN};
use tryst_core::relay::server::{Relay, RelayConfig};
use tryst_core::relay::tcp::{RelayFront, TcpLimits};
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

/// The framing on arbitrary bytes, in chunks the input chooses.
fn frames(data: &[u8]) {
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut frames = RelayFrameBuffer::new();
    let mut consumed: Vec<u8> = Vec::new();
    for piece in data.chunks(chunk) {
        let mut input = piece;
        while !input.is_empty() {
            let before = input;
            let result = frames.push(&mut input);
            consumed.extend_from_slice(&before[..before.len() - input.len()]);
            match result {
                Ok(Some(packet)) => {
                    assert!(!packet.is_empty() && packet.len() <= MAX_RELAY_FRAME_LEN);
                    let mut again = [0u8; MAX_RELAY_FRAME_LEN + 2];
                    let n = encode_frame(packet, &mut again).expect("a frame encodes");
                    assert_eq!(&again[..n], &consumed[consumed.len() - n..], "canonical");
                    consumed.clear();
                }
                Ok(None) => assert!(frames.pending() <= MAX_RELAY_FRAME_LEN + 2),
                Err(_) => return,
            }
        }
    }
}

/// The relay behind UDP and TCP, driven by the input.
fn front(data: &[u8]) {
    let key = RelayKey(KEY);
    let mut config = RelayConfig::new(RelayKey(KEY), UNIX0);
    config.max_allocations = 2;
    let limits = TcpLimits {
        max_connections: 3,
        max_per_ip: 2,
        bind_timeout: Duration::from_secs(1),
    };
    let mut relay = RelayFront::new(config, limits);
    let mut now = Instant::ZERO;
    let mut buf = vec![0u8; MAX_TRANSMIT_LEN];
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let arg = rest.first().copied().unwrap_or(0);
        let conn = ConnectionId(u64::from(arg % 5));
        let mut from_conn = None;
        let mut from_udp = None;
        match op % 6 {
            0 => {
                let remote = SocketAddr::from(([192, 0, 2, arg % 3], 1000 + u16::from(arg)));
                Machine::handle_input(
                    &mut relay,
                    now,
                    Input::ConnectionOpened { conn, remote },
                    &mut (),
                );
            }
            1 | 2 => {
                // A valid bind, or a probe, over TCP or UDP.
                let role = if arg & 1 == 0 {
                    Role::Connecting
                } else {
                    Role::Connected
                };
                let mut bytes = [0u8; RELAY_BIND_LEN];
                let n = if op % 6 == 1 {
                    let token =
                        RelayToken::mint(&key, session(arg >> 1), role, (UNIX0 + 60) as u32, 30);
                    encode_bind(&token, &mut bytes).unwrap_or(0)
                } else {
                    Packet::Probe {
                        channel: tryst_core::peer::handshake::channel_id(&session(arg >> 1)),
                        seq: 0,
                    }
                    .encode(&mut bytes)
                    .unwrap_or(0)
                };
                if arg & 0x40 == 0 {
                    from_conn = Some(conn);
                    let input = Input::ConnectionMessage {
                        conn,
                        bytes: &bytes[..n],
                    };
                    Machine::handle_input(&mut relay, now, input, &mut ());
                } else {
                    let from = addr(arg >> 2);
                    from_udp = Some(from);
                    let input = Input::Datagram {
                        from,
                        local: None,
                        bytes: &mut bytes[..n],
                    };
                    Machine::handle_input(&mut relay, now, input, &mut ());
                }
            }
            3 => Machine::handle_input(&mut relay, now, Input::ConnectionClosed(conn), &mut ()),
            4 => {
                now = now + Duration::from_millis(u64::from(arg) * 20);
                Machine::handle_timeout(&mut relay, now);
                if let Some(t) = Machine::poll_timeout(&relay) {
                    assert!(t > now, "timeout {t:?} not past {now:?}");
                }
            }
            _ => relay.end_session(&session(arg)),
        }
        loop {
            match Machine::poll_output(&mut relay, now, &mut buf, &mut ()) {
                Output::Transmit(t) => match t.destination {
                    Destination::Connection(c) => {
                        assert_ne!(Some(c), from_conn, "forwarded back to the sender");
                        let mut frames = RelayFrameBuffer::new();
                        let mut input = &buf[..t.len];
                        let packet = frames.push(&mut input).expect("framed").expect("whole");
                        assert!(Packet::decode(packet).is_ok());
                        assert!(input.is_empty());
                    }
                    Destination::Udp(to) => assert_ne!(Some(to), from_udp),
                    other => panic!("the relay sent to {other:?}"),
                },
                Output::Timeout(_) => break,
                _ => {}
            }
        }
        assert!(relay.connections() <= 3);
        assert!(relay.relay().allocations() <= 2);
    }
}

/// Runs every check on one input.
pub fn run(data: &[u8]) {
    frames(data);
    front(data);
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
                // What waited for its rate and is due leaves, once.
                let mut out = [0u8; MAX_DATAGRAM_LEN];
                let before = relay.stats().forwarded;
                let mut released = 0;
                while relay.poll_release(now, &mut out).is_some() {
                    released += 1;
                }
                assert_eq!(relay.stats().forwarded, before + released);
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
