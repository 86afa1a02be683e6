//! The session management server (seed: session management server 4) on a
//! stream listener for terminals, linked upstream to the trigger server.

use std::net::SocketAddr;

use rand_core::OsRng;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tryst_core::crypto::StaticKeypair;
use tryst_core::machine::{ConnectionId, Transmit};
use tryst_core::names::NameRegistry;
use tryst_core::session_server::{SessionConfig, SessionEvent, SessionServer, UnknownSession};
use tryst_core::time::Instant;
use tryst_core::wire::{PublicKey, SessionId};

use crate::driver::{run, Driven, Sockets, UPSTREAM};

/// What the operator asks of a running session server.
#[derive(Debug)]
pub enum SessionCommand {
    /// End a live session now (S1604).
    EndSession(SessionId, oneshot::Sender<Result<(), UnknownSession>>),
}

impl Driven for SessionServer<OsRng> {
    type Event = SessionEvent;
    type Command = SessionCommand;
    fn on_opened(&mut self, now: Instant, conn: ConnectionId, remote: SocketAddr) {
        self.handle_connection_opened(now, conn, remote);
    }
    fn on_message(&mut self, now: Instant, conn: ConnectionId, message: &[u8]) {
        if conn == UPSTREAM {
            self.handle_upstream(now, message);
        } else {
            self.handle_stream(now, conn, message);
        }
    }
    fn on_closed(&mut self, now: Instant, conn: ConnectionId) {
        if conn == UPSTREAM {
            self.handle_upstream_closed(now);
        } else {
            self.handle_connection_closed(now, conn);
        }
    }
    fn on_command(&mut self, now: Instant, command: SessionCommand) {
        match command {
            SessionCommand::EndSession(id, reply) => {
                let _ = reply.send(self.end_session(now, id));
            }
        }
    }
    fn on_timeout(&mut self, now: Instant) {
        self.handle_timeout(now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        SessionServer::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<SessionEvent> {
        SessionServer::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        SessionServer::poll_timeout(self)
    }
}

/// A running session server.
#[derive(Debug)]
pub struct SessionHandle {
    /// Where terminals connect (TCP).
    pub control_addr: SocketAddr,
    /// Its static public key, which terminals must know.
    pub public_key: PublicKey,
    commands: mpsc::Sender<SessionCommand>,
}

impl SessionHandle {
    /// Forces a live session to end (S1604/S1605).
    pub async fn end_session(&self, id: SessionId) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(SessionCommand::EndSession(id, reply))
            .await?;
        answer
            .await?
            .map_err(|_| anyhow::anyhow!("no live session with that ID"))
    }
}

/// Binds the control listener and starts the session server, linked to
/// the trigger server at `trigger_link`; returns its handle and its events.
pub async fn spawn(
    config: SessionConfig,
    keypair: StaticKeypair,
    registry: NameRegistry,
    trigger_key: PublicKey,
    trigger_link: SocketAddr,
    control_addr: SocketAddr,
) -> std::io::Result<(SessionHandle, mpsc::UnboundedReceiver<SessionEvent>)> {
    let listener = TcpListener::bind(control_addr).await?;
    let control_addr = listener.local_addr()?;
    let public_key = keypair.public_key();
    let machine = SessionServer::new(config, keypair, trigger_key, registry, OsRng);
    let (commands, command_rx) = mpsc::channel(16);
    let (event_tx, events) = mpsc::unbounded_channel();
    let sockets = Sockets {
        udp: None,
        listener: Some(listener),
        upstream: Some(trigger_link),
    };
    tokio::spawn(run(
        crate::clock::DriverClock::default(),
        machine,
        sockets,
        command_rx,
        event_tx,
    ));
    Ok((
        SessionHandle {
            control_addr,
            public_key,
            commands,
        },
        events,
    ))
}
