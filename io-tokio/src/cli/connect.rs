//! `tryst connect ... TARGET [--send FILE] [--duration DUR]`: the connecting
//! terminal (seed: terminal 3), one shot. It registers (its key lives in
//! its state directory like a daemon's), asks the session server for
//! TARGET, and on a yes talks to it directly.
//!
//! A request that does not succeed gets the one uniform answer whatever
//! the cause (unknown, offline, refused, no answer): exit code 3 and
//! nothing about the target, its address least of all.

use std::path::PathBuf;
use std::time::Duration;

use tryst_core::terminal::TerminalEvent;
use tryst_core::wire::EndReason;

use super::terminal::{bind_addr, config, Mode, StateDir, TerminalCommon};
use super::CliError;
use crate::terminal::{self as driver, full_session_id};

/// How long the terminal may take to register and be seen online.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the answer to the request may take (the terminal's own
/// request timeout fires first; this only guards against a stuck loop).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the end notification may take to leave before exit.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);

/// `tryst connect`: reach a device and send it a file.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: TerminalCommon,
    /// The device name to reach.
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// The file to send over the direct path. Without it the session is
    /// held open until its duration ends, it is ended, or Ctrl-C.
    #[arg(long, value_name = "FILE")]
    pub send: Option<PathBuf>,
    /// The duration to ask for (e.g. 90s, 5m, 1h; bare numbers are
    /// seconds); the server's default when absent.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// Parses a duration: `90`, `90s`, `5m`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| format!("not a duration: {e}"))
}

/// Whole seconds for the request, at least 1 (0 would ask for the default).
fn duration_secs(d: Option<Duration>) -> Result<u32, CliError> {
    let Some(d) = d else { return Ok(0) };
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).map_err(|_| CliError::usage("--duration is too long"))
}

/// Runs `tryst connect`.
pub async fn run(args: ConnectArgs) -> Result<(), CliError> {
    let state = StateDir::open(&args.common.state_dir)?;
    super::terminal::refuse_if_running(&state).await?;
    let config = config(&args.common, Mode::List)?;
    super::terminal::check_name(&args.target)?;
    let duration_secs = duration_secs(args.duration)?;
    if let Some(path) = &args.send {
        if !path.is_file() {
            return Err(CliError::usage(format!(
                "{}: not a readable file",
                path.display()
            )));
        }
    }
    let keypair = state.keypair()?;
    let (handle, mut events) = driver::spawn(
        config,
        keypair,
        args.common.server,
        bind_addr(&args.common),
        &[],
    )
    .await
    .map_err(|e| CliError::usage(format!("cannot bind the terminal's UDP socket: {e}")))?;

    // Registered with the session server and seen by the trigger server.
    let registered = tokio::time::timeout(REGISTER_TIMEOUT, async {
        while let Some(event) = events.recv().await {
            match event {
                TerminalEvent::Online { .. } => return Ok(()),
                TerminalEvent::RegistrationRefused => {
                    return Err(CliError::failed(format!(
                        "the session server refused the name {} for this key",
                        args.common.name
                    )))
                }
                _ => {}
            }
        }
        Err(CliError::failed("the terminal's event loop stopped"))
    })
    .await;
    match registered {
        Ok(result) => result?,
        Err(_) => {
            return Err(CliError::failed(format!(
                "could not register with the session server at {} and the trigger server at {}",
                args.common.server, args.common.trigger
            )))
        }
    }

    let request = handle.connect(&args.target, duration_secs).await?;
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
        while let Some(event) = events.recv().await {
            match event {
                TerminalEvent::ConnectFailed { request_id } if request_id == request => {
                    return None;
                }
                TerminalEvent::SessionReady {
                    request_id,
                    session_id,
                    duration_secs,
                    peer_addr,
                    ..
                } if request_id == request => return Some((session_id, duration_secs, peer_addr)),
                _ => {}
            }
        }
        None
    })
    .await;
    let Ok(Some((session_id, granted, peer_addr))) = answer else {
        handle.shutdown(EXIT_GRACE).await;
        return Err(CliError::NotPermitted);
    };
    println!(
        "session {} with {} for {granted} s (peer at {peer_addr})",
        full_session_id(&session_id),
        args.target
    );

    if args.send.is_some() {
        // The direct path (issue 7) lands with the peer machine.
        let _ = handle.finish(session_id, EndReason::Failed).await;
        handle.shutdown(EXIT_GRACE).await;
        return Err(CliError::failed(
            "sending files needs the direct peer path, which this build does not have yet",
        ));
    }

    // Hold the session until it ends or the user stops it.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| CliError::failed(format!("cannot handle signals: {e}")))?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::failed(format!("cannot handle signals: {e}")))?;
    let reason = loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(TerminalEvent::SessionEnded { session_id: id, reason, .. }) if id == session_id => break reason,
                Some(TerminalEvent::SessionExtended { session_id: id, duration_secs }) if id == session_id => {
                    println!("session extended to {duration_secs} s");
                }
                Some(_) => {}
                None => return Err(CliError::failed("the terminal's event loop stopped")),
            },
            _ = interrupt.recv() => {
                let _ = handle.finish(session_id, EndReason::Cancelled).await;
            }
            _ = terminate.recv() => {
                let _ = handle.finish(session_id, EndReason::Cancelled).await;
            }
        }
    };
    println!("session ended: {reason:?}");
    handle.shutdown(EXIT_GRACE).await;
    Ok(())
}
