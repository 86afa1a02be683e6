//! The terminal ([`tryst_std::role::terminal`]) on tokio: one UDP socket
//! for keepalives, triggers and the direct peer channel, and the stream to
//! the session server, run by the one loop ([`super::run`]).
//!
//! The loop runs on its own thread with its own single-threaded runtime, so
//! the data path never waits behind the app's tasks. It moves bytes only:
//! datagrams are received in batches (`recvmmsg`, and GRO where the kernel
//! offers it, through the `quinn-udp` crate) into one mutable buffer that
//! the endpoint decrypts in place; datagrams to send are written into the
//! driver's buffer and go out in batches of equal-sized segments to one
//! destination per system call (GSO) where the kernel offers it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{oneshot, Notify};
use tryst_core::crypto::StaticKeypair;
use tryst_core::terminal::{TerminalConfig, TerminalEvent};
pub use tryst_std::role::terminal::{
    full_session_id, short_session_id, Event, FileSource, ReceivedFile, TerminalCommand,
    TerminalError, TerminalHandle, TerminalOptions, TerminalRole, LOOP_STACK, PROGRESS_INTERVAL,
};
use tryst_std::role::Commands;
use tryst_std::transfer::Wake;

use super::udp::BatchSocket;
use super::{run, Sockets};
use crate::clock::DriverClock;

/// Binds the terminal's UDP socket and starts it with this permission list
/// and default options (files from peers refused): it registers at once.
/// Returns its handle and the terminal's events (peer events are left out).
pub async fn spawn(
    config: TerminalConfig,
    keypair: StaticKeypair,
    session_server: SocketAddr,
    udp_addr: SocketAddr,
    permissions: &[&str],
) -> io::Result<(TerminalHandle, flume::Receiver<TerminalEvent>)> {
    let (handle, all) = spawn_with(
        config,
        keypair,
        session_server,
        udp_addr,
        permissions,
        TerminalOptions::default(),
    )
    .await?;
    let (tx, events) = flume::unbounded();
    tokio::spawn(async move {
        while let Ok(event) = all.recv_async().await {
            if let Event::Terminal(event) = event {
                if tx.send(event).is_err() {
                    break;
                }
            }
        }
    });
    Ok((handle, events))
}

/// Binds the terminal's UDP socket and starts it: it registers at once.
/// Returns its handle and all its events; the loop runs until every handle
/// is dropped or one asks it to shut down.
pub async fn spawn_with(
    config: TerminalConfig,
    keypair: StaticKeypair,
    session_server: SocketAddr,
    udp_addr: SocketAddr,
    permissions: &[&str],
    options: TerminalOptions,
) -> io::Result<(TerminalHandle, flume::Receiver<Event>)> {
    // Bound here, so the caller learns its address; the batching socket is
    // made inside the loop's own runtime (which must poll it).
    let std_socket = std::net::UdpSocket::bind(udp_addr)?;
    let udp_addr = std_socket.local_addr()?;
    let mut config = config;
    tryst_std::udp::fill_local_udp(&mut config, udp_addr);
    let permissions: Vec<String> = permissions.iter().map(|p| (*p).to_owned()).collect();
    let (commands, command_rx) = Commands::channel(None);
    let (event_tx, events) = flume::unbounded();
    let (ready_tx, ready) = oneshot::channel::<io::Result<()>>();
    std::thread::Builder::new()
        .name("tryst-terminal".to_owned())
        .stack_size(LOOP_STACK)
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let udp = match BatchSocket::from_std(std_socket) {
                    Ok(udp) => udp,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let clock = DriverClock::default();
                let hashed = Arc::new(Notify::new());
                let notify = Arc::clone(&hashed);
                let wake: Wake = Arc::new(move || notify.notify_one());
                let names: Vec<&str> = permissions.iter().map(String::as_str).collect();
                let role = match TerminalRole::new(
                    config,
                    keypair,
                    &names,
                    &options,
                    event_tx,
                    wake,
                    clock.now(),
                ) {
                    Ok(role) => role,
                    Err(e) => {
                        let _ = ready_tx.send(Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            e.to_string(),
                        )));
                        return;
                    }
                };
                let sockets = Sockets {
                    udp: Some(udp),
                    upstream: Some(session_server),
                    failover_upstreams: options.failover_servers.clone(),
                    upstream_local: options.control_local,
                    wake: Some(hashed),
                    ..Sockets::default()
                };
                let _ = ready_tx.send(Ok(()));
                run(clock, role, sockets, command_rx, None).await;
            });
        })?;
    ready
        .await
        .map_err(|_| io::Error::other("the terminal's thread stopped"))??;
    Ok((TerminalHandle { udp_addr, commands }, events))
}
