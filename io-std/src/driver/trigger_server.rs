//! The trigger server ([`crate::role::trigger_server`]) on the blocking
//! driver: a UDP socket for terminals and a stream listener for the
//! session server's link, on a thread of its own.

use std::net::SocketAddr;

use tryst_core::crypto::StaticKeypair;
use tryst_core::trigger_server::{TriggerConfig, TriggerEvent};
use tryst_core::wire::PublicKey;

use super::{start, Poller, Sockets};
use crate::drive::{DriverClock, Overflow};
use crate::role::trigger_server::{TriggerHandle, TriggerRole};
use crate::role::Commands;
use crate::udp::BatchSocket;

/// Binds the trigger server's UDP socket and link listener and starts it;
/// returns its handle and its events.
pub fn spawn(
    config: TriggerConfig,
    keypair: StaticKeypair,
    session_servers: &[PublicKey],
    udp_addr: SocketAddr,
    link_addr: SocketAddr,
) -> std::io::Result<(TriggerHandle, flume::Receiver<TriggerEvent>)> {
    crate::role::raise_descriptor_limit();
    let udp = BatchSocket::bind(udp_addr)?;
    let listener = std::net::TcpListener::bind(link_addr)?;
    let (udp_addr, link_addr) = (udp.local_addr()?, listener.local_addr()?);
    let public_key = keypair.public_key();
    let (event_tx, events) = flume::unbounded();
    let session_servers = session_servers.to_vec();
    let make = move || {
        Ok(TriggerRole::new(
            config,
            keypair,
            &session_servers,
            event_tx,
        ))
    };
    let (poller, wake) = Poller::new()?;
    let (commands, command_rx) = Commands::channel(Some(wake));
    let sockets = Sockets {
        udp: Some(udp),
        listener: Some(listener),
        // Its accepted streams are session-server links: they wait.
        accepted_overflow: Overflow::LINK,
        ..Sockets::default()
    };
    let clock = DriverClock::default();
    start(
        "tryst-trigger",
        None,
        clock,
        make,
        sockets,
        command_rx,
        None,
        poller,
    )?;
    let handle = TriggerHandle {
        udp_addr,
        link_addr,
        public_key,
        commands,
    };
    Ok((handle, events))
}
