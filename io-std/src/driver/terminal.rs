//! The terminal ([`crate::role::terminal`]) on the blocking driver: one
//! UDP socket for keepalives, triggers and the direct peer channel
//! (batched: `recvmmsg`/GRO in, GSO out), and the stream to the session
//! server, on a thread of its own; a file's hasher thread wakes the loop
//! through its poller.

use std::io;
use std::net::SocketAddr;

use tryst_core::crypto::StaticKeypair;
use tryst_core::terminal::{TerminalConfig, TerminalEvent};

use super::{start, Poller, Sockets};
use crate::drive::DriverClock;
use crate::role::terminal::{Event, TerminalHandle, TerminalOptions, TerminalRole, LOOP_STACK};
use crate::role::Commands;
use crate::udp::BatchSocket;

/// Binds the terminal's UDP socket and starts it with this permission list
/// and default options (files from peers refused): it registers at once.
/// Returns its handle and the terminal's events (peer events are left out,
/// by a thread that forwards the rest).
pub fn spawn(
    config: TerminalConfig,
    keypair: StaticKeypair,
    session_server: SocketAddr,
    udp_addr: SocketAddr,
    permissions: &[&str],
) -> io::Result<(TerminalHandle, flume::Receiver<TerminalEvent>)> {
    let options = TerminalOptions::default();
    let (handle, all) = spawn_with(
        config,
        keypair,
        session_server,
        udp_addr,
        permissions,
        options,
    )?;
    let (tx, events) = flume::unbounded();
    std::thread::Builder::new()
        .name("tryst-terminal-events".to_owned())
        .spawn(move || {
            for event in all.iter() {
                if let Event::Terminal(event) = event {
                    if tx.send(event).is_err() {
                        break;
                    }
                }
            }
        })?;
    Ok((handle, events))
}

/// Binds the terminal's UDP socket and starts it: it registers at once.
/// Returns its handle and all its events; the loop runs until every handle
/// is dropped or one asks it to shut down.
pub fn spawn_with(
    config: TerminalConfig,
    keypair: StaticKeypair,
    session_server: SocketAddr,
    udp_addr: SocketAddr,
    permissions: &[&str],
    options: TerminalOptions,
) -> io::Result<(TerminalHandle, flume::Receiver<Event>)> {
    let udp = BatchSocket::bind(udp_addr)?;
    let udp_addr = udp.local_addr()?;
    let mut config = config;
    crate::udp::fill_local_udp(&mut config, udp_addr);
    let (poller, wake) = Poller::new()?;
    let (commands, command_rx) = Commands::channel(Some(poller.wake()));
    let (event_tx, events) = flume::unbounded();
    let clock = DriverClock::default();
    let permissions: Vec<String> = permissions.iter().map(|p| (*p).to_owned()).collect();
    let upstream_local = options.control_local;
    let failover_upstreams = options.failover_servers.clone();
    let make = move || {
        let names: Vec<&str> = permissions.iter().map(String::as_str).collect();
        let now = clock.now();
        TerminalRole::new(config, keypair, &names, &options, event_tx, wake, now)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    };
    let sockets = Sockets {
        udp: Some(udp),
        upstream: Some(session_server),
        failover_upstreams,
        upstream_local,
        ..Sockets::default()
    };
    start(
        "tryst-terminal",
        Some(LOOP_STACK),
        clock,
        make,
        sockets,
        command_rx,
        None,
        poller,
    )?;
    Ok((TerminalHandle { udp_addr, commands }, events))
}
