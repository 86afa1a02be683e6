//! `tryst terminal` on tokio: the long-running device (seed: connected
//! terminal 1). Its flags, state dir and control protocol are shared
//! ([`tryst_std::cli::terminal`]); this runs the device on the async
//! driver and serves the control socket `tryst allow` talks to.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tryst_core::wire::EndReason;
use tryst_std::cli::terminal::{
    bind_addr, control_error, control_ok, control_request, prepare_control_socket,
    prepare_terminal, StateDir, TerminalArgs, TerminalLines, TerminalSetup, CONTROL_SOCKET,
    CONTROL_TIMEOUT, MAX_CONTROL_LINE, SHUTDOWN_GRACE,
};

use super::CliError;
use crate::driver::terminal::{self as driver, Event, TerminalHandle, TerminalOptions};
use tryst_core::peer::session::PeerEvent;

/// Runs the terminal until SIGINT or SIGTERM; live sessions are ended
/// (and their end notifications sent) before it exits.
pub async fn run(args: TerminalArgs) -> Result<(), CliError> {
    let TerminalSetup {
        state,
        config,
        keypair,
        names,
    } = prepare_terminal(&args)?;
    let public = keypair.public_key();
    let control = bind_control_socket(&state)?;
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let options = TerminalOptions {
        recv_dir: args.recv_dir.clone(),
        ..TerminalOptions::default()
    };
    let (handle, events) = driver::spawn_with(
        config,
        keypair,
        args.common.server,
        bind_addr(&args.common),
        &name_refs,
        options,
    )
    .await
    .map_err(|e| CliError::usage(format!("cannot bind the terminal's UDP socket: {e}")))?;
    let mut lines = TerminalLines::new(&args.common.name);
    lines.started(&public, handle.udp_addr, &names);
    tokio::spawn(serve_control(control, state.clone(), handle.clone()));

    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        tokio::select! {
            event = events.recv_async() => {
                let Ok(event) = event else {
                    return Err(CliError::failed("the terminal's event loop stopped"));
                };
                match event {
                    Event::Terminal(event) => {
                        if let Some(stop) = lines.terminal_event(event) {
                            return Err(stop);
                        }
                    }
                    Event::Peer { session_id, event: PeerEvent::Connected { peer_addr } } => {
                        lines.direct_path(&session_id, peer_addr);
                    }
                    Event::Received { session_id, outcome } => match outcome {
                        Ok(file) => lines.received(&session_id, &file.path, file.size, &file.digest),
                        Err(why) => lines.not_kept(&session_id, &why),
                    },
                    _ => {}
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    for id in lines.live() {
        let _ = handle.finish(id, EndReason::Cancelled).await;
    }
    let _ = handle.shutdown(SHUTDOWN_GRACE).await;
    let _ = std::fs::remove_file(state.file(CONTROL_SOCKET));
    lines.stopped();
    Ok(())
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
