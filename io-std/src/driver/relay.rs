//! The relay ([`crate::role::relay`]) on the blocking driver: one UDP
//! socket, on a thread of its own.

use std::net::SocketAddr;

use tryst_core::relay::server::{RelayConfig, RelayEvent};

use super::{start, Poller, Sockets};
use crate::drive::DriverClock;
use crate::role::relay::{RelayHandle, RelayRole};
use crate::role::Commands;
use crate::udp::BatchSocket;

/// Binds the relay's UDP socket and starts it; its handle and events.
/// `clock` must be the one whose origin `config.unix_at_zero` names.
pub fn spawn(
    config: RelayConfig,
    clock: DriverClock,
    udp_addr: SocketAddr,
) -> std::io::Result<(RelayHandle, flume::Receiver<RelayEvent>)> {
    let udp = BatchSocket::bind(udp_addr)?;
    let udp_addr = udp.local_addr()?;
    let (event_tx, events) = flume::unbounded();
    let make = move || Ok(RelayRole::new(config, event_tx));
    let (poller, wake) = Poller::new()?;
    let (commands, command_rx) = Commands::channel(Some(wake));
    let sockets = Sockets {
        udp: Some(udp),
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
    Ok((RelayHandle { udp_addr, commands }, events))
}
