//! The trigger server (seed: trigger server 5) on a UDP socket for
//! terminals and a stream listener for the session server's link.

use std::net::SocketAddr;

use rand_core::OsRng;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tryst_core::crypto::StaticKeypair;
use tryst_core::machine::{ConnectionId, Transmit};
use tryst_core::time::Instant;
use tryst_core::trigger_server::{TriggerConfig, TriggerEvent, TriggerServer};
use tryst_core::wire::PublicKey;

use crate::driver::{run, Driven, Sockets};

/// The trigger server takes no commands yet; stopping is closing the handle.
#[derive(Debug)]
pub enum TriggerCommand {}

impl Driven for TriggerServer<OsRng> {
    type Event = TriggerEvent;
    type Command = TriggerCommand;
    fn on_udp(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.handle_udp(now, from, datagram);
    }
    fn on_opened(&mut self, now: Instant, conn: ConnectionId, remote: SocketAddr) {
        self.handle_connection_opened(now, conn, remote);
    }
    fn on_message(&mut self, now: Instant, conn: ConnectionId, message: &[u8]) {
        self.handle_stream(now, conn, message);
    }
    fn on_closed(&mut self, now: Instant, conn: ConnectionId) {
        self.handle_connection_closed(now, conn);
    }
    fn on_command(&mut self, _now: Instant, command: TriggerCommand) {
        match command {}
    }
    fn on_timeout(&mut self, now: Instant) {
        self.handle_timeout(now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        TriggerServer::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<TriggerEvent> {
        TriggerServer::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        TriggerServer::poll_timeout(self)
    }
}

/// A running trigger server.
#[derive(Debug)]
pub struct TriggerHandle {
    /// Where terminals send keepalives.
    pub udp_addr: SocketAddr,
    /// Where the session server links (TCP).
    pub link_addr: SocketAddr,
    /// Its static public key.
    pub public_key: PublicKey,
    _commands: mpsc::Sender<TriggerCommand>,
}

/// Binds the trigger server's UDP socket and link listener and starts it;
/// returns its handle and its events.
pub async fn spawn(
    config: TriggerConfig,
    keypair: StaticKeypair,
    session_servers: &[PublicKey],
    udp_addr: SocketAddr,
    link_addr: SocketAddr,
) -> std::io::Result<(TriggerHandle, mpsc::UnboundedReceiver<TriggerEvent>)> {
    let udp = UdpSocket::bind(udp_addr).await?;
    let listener = TcpListener::bind(link_addr).await?;
    let handle_addrs = (udp.local_addr()?, listener.local_addr()?);
    let public_key = keypair.public_key();
    let machine = TriggerServer::new(config, keypair, session_servers, OsRng);
    let (commands, command_rx) = mpsc::channel(16);
    let (event_tx, events) = mpsc::unbounded_channel();
    let sockets = Sockets {
        udp: Some(udp),
        listener: Some(listener),
        upstream: None,
    };
    tokio::spawn(run(
        crate::clock::DriverClock::default(),
        machine,
        sockets,
        command_rx,
        event_tx,
    ));
    Ok((
        TriggerHandle {
            udp_addr: handle_addrs.0,
            link_addr: handle_addrs.1,
            public_key,
            _commands: commands,
        },
        events,
    ))
}
