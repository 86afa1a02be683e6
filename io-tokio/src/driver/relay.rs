//! The relay ([`tryst_std::role::relay`]) on tokio: one UDP socket, run by
//! the one loop ([`super::run`]).

use std::net::SocketAddr;

use tryst_core::relay::server::{RelayConfig, RelayEvent};
use tryst_std::role::relay::{RelayHandle, RelayRole};
use tryst_std::role::Commands;

use super::udp::BatchSocket;
use super::{run, Sockets};

/// Binds the relay's UDP socket and starts it; its handle and events.
/// `clock` must be the one whose origin `config.unix_at_zero` names.
pub async fn spawn(
    config: RelayConfig,
    clock: tryst_std::drive::DriverClock,
    udp_addr: SocketAddr,
) -> std::io::Result<(RelayHandle, flume::Receiver<RelayEvent>)> {
    let udp = BatchSocket::bind(udp_addr)?;
    let udp_addr = udp.local_addr()?;
    let (event_tx, events) = flume::unbounded();
    let role = RelayRole::new(config, event_tx);
    let (commands, command_rx) = Commands::channel(None);
    let sockets = Sockets {
        udp: Some(udp),
        ..Sockets::default()
    };
    tokio::spawn(run(clock, role, sockets, command_rx, None));
    Ok((RelayHandle { udp_addr, commands }, events))
}
