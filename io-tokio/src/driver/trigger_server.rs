//! The trigger server ([`tryst_std::role::trigger_server`]) on tokio: a
//! UDP socket for terminals and a stream listener for the session server's
//! link, run by the one loop ([`super::run`]).

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tryst_core::crypto::StaticKeypair;
use tryst_core::trigger_server::{TriggerConfig, TriggerEvent};
use tryst_core::wire::PublicKey;
pub use tryst_std::role::trigger_server::{TriggerCommand, TriggerHandle, TriggerRole};
use tryst_std::role::Commands;

use super::udp::BatchSocket;
use super::{run, Sockets};

/// Binds the trigger server's UDP socket and link listener and starts it;
/// returns its handle and its events.
pub async fn spawn(
    config: TriggerConfig,
    keypair: StaticKeypair,
    session_servers: &[PublicKey],
    udp_addr: SocketAddr,
    link_addr: SocketAddr,
) -> std::io::Result<(TriggerHandle, flume::Receiver<TriggerEvent>)> {
    tryst_std::role::raise_descriptor_limit();
    let udp = BatchSocket::bind(udp_addr)?;
    let listener = TcpListener::bind(link_addr).await?;
    let handle_addrs = (udp.local_addr()?, listener.local_addr()?);
    let public_key = keypair.public_key();
    let (event_tx, events) = flume::unbounded();
    let role = TriggerRole::new(config, keypair, session_servers, event_tx);
    let (commands, command_rx) = Commands::channel(None);
    let sockets = Sockets {
        udp: Some(udp),
        listener: Some(listener),
        // Its accepted streams are session-server links: they wait.
        accepted_overflow: crate::stream::Overflow::LINK,
        ..Sockets::default()
    };
    tokio::spawn(run(
        crate::clock::DriverClock::default(),
        role,
        sockets,
        command_rx,
        None,
    ));
    Ok((
        TriggerHandle {
            udp_addr: handle_addrs.0,
            link_addr: handle_addrs.1,
            public_key,
            commands,
        },
        events,
    ))
}
