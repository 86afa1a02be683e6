//! A terminal (seed: terminals 1 and 3) on one UDP socket, with its stream
//! to the session server opened when it has something to say.

use std::net::SocketAddr;

use rand_core::OsRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tryst_core::crypto::StaticKeypair;
use tryst_core::machine::{ConnectionId, Transmit};
use tryst_core::terminal::{ConnectError, Terminal, TerminalConfig, TerminalEvent, UnknownSession};
use tryst_core::time::Instant;
use tryst_core::wire::{EndReason, SessionId};

use crate::driver::{run, Driven, Sockets};

/// What the app asks of a running terminal.
#[derive(Debug)]
pub enum TerminalCommand {
    /// Ask the session server for `target` (S203/S204).
    Connect {
        /// The name to reach.
        target: String,
        /// Seconds asked for.
        duration_secs: u32,
        /// The request ID, or why no request was sent.
        reply: oneshot::Sender<Result<u32, ConnectError>>,
    },
    /// Report how a session's transfer goes (drives the 70% extension).
    Progress {
        /// The session.
        session_id: SessionId,
        /// Payload bytes sent so far.
        bytes_sent: u64,
        /// Payload bytes received so far.
        bytes_received: u64,
        /// Whether the transfer is still running.
        active: bool,
    },
    /// End a session and send the end notification (S1508, 814/815).
    Finish {
        /// The session.
        session_id: SessionId,
        /// Why.
        reason: EndReason,
        /// Whether the session was known.
        reply: oneshot::Sender<Result<(), UnknownSession>>,
    },
}

impl Driven for Terminal<OsRng> {
    type Event = TerminalEvent;
    type Command = TerminalCommand;
    fn on_udp(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.handle_udp(now, from, datagram);
    }
    fn on_message(&mut self, now: Instant, _conn: ConnectionId, message: &[u8]) {
        self.handle_upstream(now, message);
    }
    fn on_closed(&mut self, now: Instant, _conn: ConnectionId) {
        self.handle_upstream_closed(now);
    }
    fn on_command(&mut self, now: Instant, command: TerminalCommand) {
        match command {
            TerminalCommand::Connect {
                target,
                duration_secs,
                reply,
            } => {
                let _ = reply.send(self.connect(now, &target, duration_secs));
            }
            TerminalCommand::Progress {
                session_id,
                bytes_sent,
                bytes_received,
                active,
            } => {
                let _ = self.transfer_progress(&session_id, bytes_sent, bytes_received, active);
            }
            TerminalCommand::Finish {
                session_id,
                reason,
                reply,
            } => {
                let _ = reply.send(self.finish_session(now, &session_id, reason));
            }
        }
    }
    fn on_timeout(&mut self, now: Instant) {
        self.handle_timeout(now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Terminal::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<TerminalEvent> {
        Terminal::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Terminal::poll_timeout(self)
    }
}

/// A running terminal.
#[derive(Debug)]
pub struct TerminalHandle {
    /// Its UDP socket's local address (keepalives and, later, the peer path).
    pub udp_addr: SocketAddr,
    commands: mpsc::Sender<TerminalCommand>,
}

impl TerminalHandle {
    /// Asks for `target`; the answer comes as an event.
    pub async fn connect(&self, target: &str, duration_secs: u32) -> anyhow::Result<u32> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(TerminalCommand::Connect {
                target: target.to_owned(),
                duration_secs,
                reply,
            })
            .await?;
        answer
            .await?
            .map_err(|e| anyhow::anyhow!("request not sent: {e:?}"))
    }

    /// Reports a session's transfer.
    pub async fn progress(
        &self,
        session_id: SessionId,
        bytes_sent: u64,
        bytes_received: u64,
        active: bool,
    ) -> anyhow::Result<()> {
        self.commands
            .send(TerminalCommand::Progress {
                session_id,
                bytes_sent,
                bytes_received,
                active,
            })
            .await?;
        Ok(())
    }

    /// Ends a session.
    pub async fn finish(&self, session_id: SessionId, reason: EndReason) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(TerminalCommand::Finish {
                session_id,
                reason,
                reply,
            })
            .await?;
        answer
            .await?
            .map_err(|_| anyhow::anyhow!("no such session"))
    }
}

/// Binds the terminal's UDP socket and starts it with this permission list:
/// it registers at once. Returns its handle and its events.
pub async fn spawn(
    config: TerminalConfig,
    keypair: StaticKeypair,
    session_server: SocketAddr,
    udp_addr: SocketAddr,
    permissions: &[&str],
) -> std::io::Result<(TerminalHandle, mpsc::UnboundedReceiver<TerminalEvent>)> {
    let udp = UdpSocket::bind(udp_addr).await?;
    let udp_addr = udp.local_addr()?;
    let clock = crate::clock::DriverClock::default();
    let mut machine = Terminal::new(config, keypair, OsRng);
    machine
        .set_permissions(permissions)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e:?}")))?;
    machine.start(clock.now());
    let (commands, command_rx) = mpsc::channel(16);
    let (event_tx, events) = mpsc::unbounded_channel();
    let sockets = Sockets {
        udp: Some(udp),
        listener: None,
        upstream: Some(session_server),
    };
    tokio::spawn(run(clock, machine, sockets, command_rx, event_tx));
    Ok((TerminalHandle { udp_addr, commands }, events))
}
