//! The session management server ([`tryst_std::role::session_server`]) on
//! tokio: a stream listener for terminals, linked upstream to the trigger
//! server, run by the one loop ([`super::run`]).

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tryst_core::crypto::StaticKeypair;
use tryst_core::names::NameRegistry;
use tryst_core::session_server::{SessionConfig, SessionEvent};
use tryst_core::wire::PublicKey;
pub use tryst_std::role::session_server::{
    restore, start_journal, Durable, EnrollRefused, SessionCommand, SessionError, SessionHandle,
    SessionRole,
};
use tryst_std::role::Commands;

use super::{run, Sockets, Stopped};
use crate::stream::Overflow;

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
) -> std::io::Result<(SessionHandle, flume::Receiver<SessionEvent>)> {
    let (handle, events, _stopped) = spawn_durable(
        config,
        keypair,
        registry,
        trigger_key,
        trigger_link,
        control_addr,
        Durable::default(),
    )
    .await?;
    Ok((handle, events))
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
    flume::Receiver<SessionEvent>,
    oneshot::Receiver<Stopped>,
)> {
    tryst_std::role::raise_descriptor_limit();
    let listener = TcpListener::bind(control_addr).await?;
    let control_addr = listener.local_addr()?;
    let public_key = keypair.public_key();
    let mut machine = restore(
        config,
        keypair,
        trigger_key,
        registry,
        &setup.restore,
        &setup.enrol_codes,
    );
    machine.set_relay(setup.relay.clone());
    let (event_tx, events) = flume::unbounded();
    let role = SessionRole::with_peers(machine, event_tx, setup.peers.clone());
    let (commands, command_rx) = Commands::channel(None);
    let (stopped_tx, stopped) = oneshot::channel();
    let sockets = Sockets {
        listener: Some(listener),
        upstream: Some(trigger_link),
        // Terminals' streams close on a full queue; the link waits.
        upstream_overflow: Overflow::LINK,
        ..Sockets::default()
    };
    tokio::spawn(async move {
        let why = run(setup.clock, role, sockets, command_rx, setup.journal).await;
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
