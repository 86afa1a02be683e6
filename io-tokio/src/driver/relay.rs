//! The relay ([`tryst_std::role::relay`]) on tokio: one UDP socket and a
//! TCP listener at the same address, run by the one loop ([`super::run`]).

use std::net::SocketAddr;

use tryst_core::relay::server::{RelayConfig, RelayEvent};
use tryst_std::role::relay::{RelayHandle, RelayRole};
use tryst_std::role::Commands;

use super::udp::BatchSocket;
use super::{run, Sockets};

/// Binds the relay's UDP socket, and a TCP listener at the same address
/// (its relay frames: [`tryst_core::relay::framing`]), and starts it; its
/// handle and events.
/// `clock` must be the one whose origin `config.unix_at_zero` names.
pub async fn spawn(
    config: RelayConfig,
    clock: tryst_std::drive::DriverClock,
    udp_addr: SocketAddr,
) -> std::io::Result<(RelayHandle, flume::Receiver<RelayEvent>)> {
    let udp = BatchSocket::bind(udp_addr)?;
    let udp_addr = udp.local_addr()?;
    let listener = tokio::net::TcpListener::bind(udp_addr).await?;
    let tcp_addr = listener.local_addr()?;
    let (event_tx, events) = flume::unbounded();
    let role = RelayRole::new(config, event_tx);
    let (commands, command_rx) = Commands::channel(None);
    let sockets = Sockets {
        udp: Some(udp),
        listener: Some(listener),
        accepted_overflow: tryst_std::drive::Overflow::Drop,
        accepted_framing: tryst_std::drive::Framing::Relay,
        ..Sockets::default()
    };
    tokio::spawn(run(clock, role, sockets, command_rx, None));
    Ok((
        RelayHandle {
            udp_addr,
            tcp_addr,
            commands,
        },
        events,
    ))
}
