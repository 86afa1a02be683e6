//! The trigger server (seed: trigger server 5) on a UDP socket for
//! terminals and a stream listener for the session server's link.

use std::net::SocketAddr;

use rand_core::OsRng;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tryst_core::crypto::StaticKeypair;
use tryst_core::time::Instant;
use tryst_core::trigger_server::{TriggerConfig, TriggerEvent, TriggerServer};
use tryst_core::wire::PublicKey;

use super::udp::BatchSocket;
use super::{run, Driven, Flow, Sockets};

/// The trigger server takes no commands yet; stopping is closing the handle.
#[derive(Debug)]
pub enum TriggerCommand {}

/// The trigger server as the loop runs it: the machine, and where its
/// events go.
struct TriggerRole {
    machine: TriggerServer<OsRng>,
    events: mpsc::UnboundedSender<TriggerEvent>,
    /// The machine's payload side: a server has none.
    no_io: (),
}

impl Driven for TriggerRole {
    type Machine = TriggerServer<OsRng>;
    type Command = TriggerCommand;

    fn parts(&mut self) -> (&mut TriggerServer<OsRng>, &mut ()) {
        (&mut self.machine, &mut self.no_io)
    }

    fn on_command(&mut self, _now: Instant, command: TriggerCommand) -> Flow {
        match command {}
    }

    fn on_event(&mut self, _now: Instant, event: TriggerEvent) {
        // The app may have gone; the machine keeps running regardless.
        let _ = self.events.send(event);
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
    super::session_server::raise_descriptor_limit();
    let udp = BatchSocket::bind(udp_addr)?;
    let listener = TcpListener::bind(link_addr).await?;
    let handle_addrs = (udp.local_addr()?, listener.local_addr()?);
    let public_key = keypair.public_key();
    let machine = TriggerServer::new(config, keypair, session_servers, OsRng);
    let (commands, command_rx) = mpsc::channel(16);
    let (event_tx, events) = mpsc::unbounded_channel();
    let sockets = Sockets {
        udp: Some(udp),
        listener: Some(listener),
        // Its accepted streams are session-server links: they wait.
        accepted_overflow: crate::stream::Overflow::LINK,
        ..Sockets::default()
    };
    let role = TriggerRole {
        machine,
        events: event_tx,
        no_io: (),
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
            _commands: commands,
        },
        events,
    ))
}
