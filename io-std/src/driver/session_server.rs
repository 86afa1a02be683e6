//! The session management server ([`crate::role::session_server`]) on the
//! blocking driver: a stream listener for terminals, linked upstream to the
//! trigger server, on a thread of its own.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tryst_core::crypto::StaticKeypair;
use tryst_core::names::NameRegistry;
use tryst_core::session_server::{SessionConfig, SessionEvent};
use tryst_core::wire::PublicKey;

use super::{start, Poller, Sockets};
use crate::drive::{Overflow, Stopped};
use crate::role::session_server::{restore, Durable, SessionHandle, SessionRole};
use crate::role::Commands;

/// Binds the control listener and starts the session server, linked to
/// the trigger server at `trigger_link`; returns its handle and its events.
/// Nothing is stored: for a server that keeps its facts, see [`spawn_durable`].
pub fn spawn(
    config: SessionConfig,
    keypair: StaticKeypair,
    registry: NameRegistry,
    trigger_key: PublicKey,
    trigger_link: SocketAddr,
    control_addr: SocketAddr,
) -> std::io::Result<(SessionHandle, flume::Receiver<SessionEvent>)> {
    let setup = Durable::default();
    spawn_durable(
        config,
        keypair,
        registry,
        trigger_key,
        trigger_link,
        control_addr,
        setup,
    )
    .map(|(handle, events, _thread)| (handle, events))
}

/// [`spawn`] for a server that restores its live sessions and stores its
/// durable facts as `setup` says; also returns the loop's thread (joined:
/// why it stopped).
pub fn spawn_durable(
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
    JoinHandle<Stopped>,
)> {
    crate::role::raise_descriptor_limit();
    let listener = std::net::TcpListener::bind(control_addr)?;
    let control_addr = listener.local_addr()?;
    let public_key = keypair.public_key();
    let (event_tx, events) = flume::unbounded();
    let Durable {
        clock,
        restore: facts,
        journal,
        enrol_codes,
        relay,
        peers,
    } = setup;
    let make = move || {
        let mut machine = restore(config, keypair, trigger_key, registry, &facts, &enrol_codes);
        machine.set_relay(relay);
        Ok(SessionRole::with_peers(machine, event_tx, peers))
    };
    let (poller, wake) = Poller::new()?;
    let (commands, command_rx) = Commands::channel(Some(wake));
    let sockets = Sockets {
        listener: Some(listener),
        upstream: Some(trigger_link),
        // Terminals' streams close on a full queue; the link waits.
        upstream_overflow: Overflow::LINK,
        ..Sockets::default()
    };
    let thread = start(
        "tryst-session",
        None,
        clock,
        make,
        sockets,
        command_rx,
        journal,
        poller,
    )?;
    let handle = SessionHandle {
        control_addr,
        public_key,
        commands,
    };
    Ok((handle, events, thread))
}
