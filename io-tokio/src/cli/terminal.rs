//! `tryst terminal` on tokio: the long-running device (seed: connected
//! terminal 1). Its flags, state dir and control protocol are shared
//! ([`tryst_std::cli::terminal`]); this runs the device on the async
//! driver and serves the control socket `tryst allow` talks to.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tryst_core::terminal::{TerminalEvent, MAX_PERMISSIONS};
use tryst_core::wire::{EndReason, SessionId};
use tryst_std::cli::terminal::{
    bind_addr, check_name, config, control_error, control_ok, control_request,
    prepare_control_socket, StateDir, TerminalArgs, CONTROL_SOCKET, CONTROL_TIMEOUT,
    MAX_CONTROL_LINE, SHUTDOWN_GRACE,
};
use tryst_std::cli::transfer::{hex, human_bytes};

use super::CliError;
use crate::driver::terminal::{self as driver, Event, TerminalHandle, TerminalOptions};
use tryst_core::peer::session::PeerEvent;

/// Runs the terminal until SIGINT or SIGTERM; live sessions are ended
/// (and their end notifications sent) before it exits.
pub async fn run(args: TerminalArgs) -> Result<(), CliError> {
    let state = StateDir::open(&args.common.state_dir)?;
    let config = config(&args.common, args.mode)?;
    for name in &args.allow {
        check_name(name)?;
    }
    if let Some(dir) = &args.recv_dir {
        tryst_std::transfer::check_recv_dir(dir).map_err(CliError::usage)?;
    }
    let keypair = state.keypair()?;
    let public = keypair.public_key();
    // The stored list plus the names given now, stored back.
    let names = {
        let _lock = state.lock()?;
        let mut names = state.permissions()?;
        for name in &args.allow {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        if names.len() > MAX_PERMISSIONS {
            return Err(CliError::usage(format!(
                "more than {MAX_PERMISSIONS} names on the permission list"
            )));
        }
        state.store_permissions(&names)?;
        names
    };
    let control = bind_control_socket(&state)?;
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let options = TerminalOptions {
        recv_dir: args.recv_dir.clone(),
        ..TerminalOptions::default()
    };
    let (handle, mut events) = driver::spawn_with(
        config,
        keypair,
        args.common.server,
        bind_addr(&args.common),
        &name_refs,
        options,
    )
    .await
    .map_err(|e| CliError::usage(format!("cannot bind the terminal's UDP socket: {e}")))?;
    println!(
        "terminal {}: public key {}",
        args.common.name,
        tryst_core::identity::format_public_key(&public).hex()
    );
    println!(
        "  udp {}, permission list: {}",
        handle.udp_addr,
        if names.is_empty() {
            "(empty)".to_owned()
        } else {
            names.join(", ")
        }
    );
    tokio::spawn(serve_control(control, state.clone(), handle.clone()));

    let mut live: BTreeSet<[u8; 16]> = BTreeSet::new();
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else {
                    return Err(CliError::failed("the terminal's event loop stopped"));
                };
                match event {
                    Event::Terminal(event) => {
                        if let Some(stop) = on_terminal_event(&args, &mut live, event) {
                            return Err(stop);
                        }
                    }
                    Event::Peer { session_id, event: PeerEvent::Connected { peer_addr } } => {
                        println!(
                            "session {}: direct path up to {peer_addr}",
                            driver::full_session_id(&session_id)
                        );
                    }
                    Event::Received { session_id, outcome } => match outcome {
                        Ok(file) => println!(
                            "session {}: received {} ({}), SHA-256 {} verified",
                            driver::full_session_id(&session_id),
                            file.path.display(),
                            human_bytes(file.size),
                            hex(&file.digest)
                        ),
                        Err(why) => println!(
                            "session {}: file not kept: {why}",
                            driver::full_session_id(&session_id)
                        ),
                    },
                    _ => {}
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    for id in &live {
        let _ = handle.finish(SessionId(*id), EndReason::Cancelled).await;
    }
    handle.shutdown(SHUTDOWN_GRACE).await;
    let _ = std::fs::remove_file(state.file(CONTROL_SOCKET));
    println!("terminal {} stopped", args.common.name);
    Ok(())
}

/// Prints what a terminal event means for the operator; `Some` stops the daemon.
fn on_terminal_event(
    args: &TerminalArgs,
    live: &mut BTreeSet<[u8; 16]>,
    event: TerminalEvent,
) -> Option<CliError> {
    match event {
        TerminalEvent::Registered { device_id } => {
            println!(
                "registered as {} (device {:016x})",
                args.common.name, device_id.0
            );
        }
        TerminalEvent::Online { observed } => {
            println!("online: the trigger server sees this terminal at {observed}");
        }
        TerminalEvent::RegistrationRefused => {
            return Some(CliError::failed(format!(
                "the session server refused the name {} for this key",
                args.common.name
            )));
        }
        TerminalEvent::PermissionAnswered {
            requester, verdict, ..
        } => {
            println!("asked about {requester}: {verdict:?}");
        }
        TerminalEvent::SessionReady {
            session_id,
            peer_name,
            duration_secs,
            ..
        } => {
            live.insert(session_id.0);
            println!(
                "session {} with {peer_name} for {duration_secs} s",
                driver::full_session_id(&session_id)
            );
        }
        TerminalEvent::SessionExtended {
            session_id,
            duration_secs,
        } => {
            println!(
                "session {} extended to {duration_secs} s",
                driver::full_session_id(&session_id)
            );
        }
        TerminalEvent::SessionEnded {
            session_id,
            reason,
            bytes_received,
            ..
        } => {
            live.remove(&session_id.0);
            println!(
                "session {} ended: {reason:?} ({bytes_received} bytes received)",
                driver::full_session_id(&session_id)
            );
        }
        _ => {}
    }
    None
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal, CliError> {
    tokio::signal::unix::signal(kind)
        .map_err(|e| CliError::failed(format!("cannot handle signals: {e}")))
}

/// Binds the control socket; refuses if a daemon already answers on it.
fn bind_control_socket(state: &StateDir) -> Result<UnixListener, CliError> {
    let path = prepare_control_socket(state)?;
    UnixListener::bind(&path)
        .map_err(|e| CliError::usage(format!("cannot bind {}: {e}", path.display())))
}

/// Answers control requests, one line each:
/// `reload` → the daemon reads the permission list file again and applies it,
/// answering `ok <count>` once the next request will see it, or `error <why>`.
async fn serve_control(listener: UnixListener, state: StateDir, handle: TerminalHandle) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        let handle = handle.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let read = tokio::time::timeout(
                CONTROL_TIMEOUT,
                BufReader::new(read.take(MAX_CONTROL_LINE)).read_line(&mut line),
            )
            .await;
            if !matches!(read, Ok(Ok(_))) {
                return;
            }
            let answer = match control_request(&line, &state) {
                Ok(names) => {
                    let count = names.len();
                    match handle.set_permissions(names).await {
                        Ok(()) => control_ok(count),
                        Err(e) => control_error(&e),
                    }
                }
                Err(answer) => answer,
            };
            let _ = write.write_all(answer.as_bytes()).await;
        });
    }
}
