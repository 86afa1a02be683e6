//! The relay ([`crate::role::relay`]) on the blocking driver: one UDP
//! socket and a TCP listener at the same address, on a thread of its own.

use std::net::SocketAddr;

use tryst_core::relay::server::{RelayConfig, RelayEvent};

use super::{start, Poller, Sockets};
use crate::drive::DriverClock;
use crate::role::relay::{RelayHandle, RelayRole};
use crate::role::Commands;
use crate::udp::BatchSocket;

/// Binds the relay's UDP socket, and a TCP listener at the same address
/// (its relay frames: [`tryst_core::relay::framing`]), and starts it; its
/// handle and events.
/// `clock` must be the one whose origin `config.unix_at_zero` names.
pub fn spawn(
    config: RelayConfig,
    clock: DriverClock,
    udp_addr: SocketAddr,
) -> std::io::Result<(RelayHandle, flume::Receiver<RelayEvent>)> {
    let udp = BatchSocket::bind(udp_addr)?;
    let udp_addr = udp.local_addr()?;
    let listener = std::net::TcpListener::bind(udp_addr)?;
    let tcp_addr = listener.local_addr()?;
    let (event_tx, events) = flume::unbounded();
    let make = move || Ok(RelayRole::new(config, event_tx));
    let (poller, wake) = Poller::new()?;
    let (commands, command_rx) = Commands::channel(Some(wake));
    let sockets = Sockets {
        udp: Some(udp),
        listener: Some(listener),
        accepted_overflow: crate::drive::Overflow::Drop,
        accepted_framing: crate::drive::Framing::Relay,
        ..Sockets::default()
    };
    start(
        "tryst-relay",
        None,
        clock,
        make,
        sockets,
        command_rx,
        None,
        poller,
    )?;
    Ok((
        RelayHandle {
            udp_addr,
            tcp_addr,
            commands,
        },
        events,
    ))
}
