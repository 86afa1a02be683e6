//! The session management server (seed: session management server 4) on a
//! stream listener for terminals, linked upstream to the trigger server.

use std::net::SocketAddr;

use rand_core::OsRng;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tryst_core::crypto::StaticKeypair;
use tryst_core::machine::{ConnectionId, Transmit};
use tryst_core::names::{EnrollError, NameRegistry};
use tryst_core::session_server::{SessionConfig, SessionEvent, SessionServer, UnknownSession};
use tryst_core::time::Instant;
use tryst_core::wire::{Name, PublicKey, SessionId};

use crate::clock::DriverClock;
use crate::driver::{run_journaled, Driven, Journal, Sockets, Stopped, UPSTREAM};

/// What the operator asks of a running session server.
#[derive(Debug)]
pub enum SessionCommand {
    /// End a live session now (S1604).
    EndSession(SessionId, oneshot::Sender<Result<(), UnknownSession>>),
    /// Bind a name to a key ahead of its registration (the operator's
    /// enrolment; the caller persists it).
    Enroll(
        String,
        PublicKey,
        oneshot::Sender<Result<(), EnrollRefused>>,
    ),
}

/// Why an enrolment was refused by the running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollRefused {
    /// Not a valid device name.
    BadName,
    /// The registry refused (bound to another key, full, weak key).
    Registry(EnrollError),
}

impl std::fmt::Display for EnrollRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnrollRefused::BadName => f.write_str("not a valid device name"),
            EnrollRefused::Registry(e) => write!(f, "{e}"),
        }
    }
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
            SessionCommand::Enroll(name, key, reply) => {
                let result = match Name::new(&name) {
                    Ok(name) => self
                        .registry_mut()
                        .enroll(name, key)
                        .map_err(EnrollRefused::Registry),
                    Err(_) => Err(EnrollRefused::BadName),
                };
                let _ = reply.send(result);
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
    fn durable_copy(event: &SessionEvent) -> Option<SessionEvent> {
        matches!(
            event,
            SessionEvent::NameBound { .. }
                | SessionEvent::SessionStarted(_)
                | SessionEvent::SessionExtended(_)
                | SessionEvent::SessionRecord(_)
        )
        .then(|| event.clone())
    }
    fn close_request(event: &SessionEvent) -> Option<ConnectionId> {
        match event {
            SessionEvent::CloseConnection(conn) => Some(*conn),
            _ => None,
        }
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
    /// Binds `name` to `key` in the running server's registry.
    pub async fn enroll(
        &self,
        name: &str,
        key: PublicKey,
    ) -> anyhow::Result<Result<(), EnrollRefused>> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(SessionCommand::Enroll(name.to_owned(), key, reply))
            .await?;
        Ok(answer.await?)
    }

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
/// Nothing is stored: for a server that keeps its facts, see [`spawn_durable`].
pub async fn spawn(
    config: SessionConfig,
    keypair: StaticKeypair,
    registry: NameRegistry,
    trigger_key: PublicKey,
    trigger_link: SocketAddr,
    control_addr: SocketAddr,
) -> std::io::Result<(SessionHandle, mpsc::UnboundedReceiver<SessionEvent>)> {
    let setup = Durable {
        clock: DriverClock::default(),
        restore: Vec::new(),
        journal: None,
    };
    let (handle, events, _stopped) = spawn_durable(
        config,
        keypair,
        registry,
        trigger_key,
        trigger_link,
        control_addr,
        setup,
    )
    .await?;
    Ok((handle, events))
}

/// What a session server that keeps its facts starts from.
#[derive(Debug)]
pub struct Durable {
    /// Its clock; keep the origin across restarts ([`DriverClock::wall`]).
    pub clock: DriverClock,
    /// Stored `SessionStarted` / `SessionExtended` facts of sessions that
    /// have no record yet, in the order they were emitted.
    pub restore: Vec<SessionEvent>,
    /// Where durable events are stored before what acknowledges them is sent.
    pub journal: Option<Journal<SessionEvent>>,
}

/// [`spawn`] for a server that restores its live sessions and stores its
/// durable facts; also returns a receiver that says why the loop stopped.
pub async fn spawn_durable(
    config: SessionConfig,
    keypair: StaticKeypair,
    registry: NameRegistry,
    trigger_key: PublicKey,
    trigger_link: SocketAddr,
    control_addr: SocketAddr,
    setup: Durable,
) -> std::io::Result<(
    SessionHandle,
    mpsc::UnboundedReceiver<SessionEvent>,
    oneshot::Receiver<Stopped>,
)> {
    let listener = TcpListener::bind(control_addr).await?;
    let control_addr = listener.local_addr()?;
    let public_key = keypair.public_key();
    let mut machine = SessionServer::new(config, keypair, trigger_key, registry, OsRng);
    for fact in &setup.restore {
        if let Err(e) = machine.restore_session(fact) {
            tracing::warn!(error = %e, "a stored session fact was not restored");
        }
    }
    let (commands, command_rx) = mpsc::channel(16);
    let (event_tx, events) = mpsc::unbounded_channel();
    let (stopped_tx, stopped) = oneshot::channel();
    let sockets = Sockets {
        udp: None,
        listener: Some(listener),
        upstream: Some(trigger_link),
    };
    tokio::spawn(async move {
        let why = run_journaled(
            setup.clock,
            machine,
            sockets,
            command_rx,
            event_tx,
            setup.journal,
        )
        .await;
        let _ = stopped_tx.send(why);
    });
    Ok((
        SessionHandle {
            control_addr,
            public_key,
            commands,
        },
        events,
        stopped,
    ))
}
