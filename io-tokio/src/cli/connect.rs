//! `tryst connect` on tokio (its flags are shared:
//! [`tryst_std::cli::connect`]).
//!
//! `tryst connect ... TARGET [--send FILE] [--duration DUR]`: the connecting
//! terminal (seed: terminal 3), one shot. It registers (its key lives in
//! its state directory like a daemon's), asks the session server for
//! TARGET, and on a yes talks to it directly. A file to send is opened and
//! its name checked (the one file-name policy of both sides) before
//! anything is asked of a server, so a file that cannot be sent never
//! costs a session.
//!
//! A request that does not succeed gets the one uniform answer whatever
//! the cause (unknown, offline, refused, no answer): exit code 3 and
//! nothing about the target, its address least of all.

use std::net::SocketAddr;

use tokio::time::Instant;
use tryst_core::peer::session::PeerEvent;
use tryst_core::terminal::TerminalEvent;
use tryst_core::wire::{EndReason, SessionId};

use super::CliError;
use crate::driver::terminal::{
    self as driver, full_session_id, Event, TerminalHandle, TerminalOptions,
};
use tryst_std::cli::connect::{
    duration_secs, ConnectArgs, ANSWER_TIMEOUT, CONFIRM_WAIT, EXIT_GRACE, REGISTER_TIMEOUT,
};
use tryst_std::cli::terminal::{
    bind_addr, check_name, config, refuse_if_running, Mode, StateDir, TerminalCommon,
};
use tryst_std::cli::transfer::{hex, human_bytes, Progress};
use tryst_std::transfer::{FileDigest, FileSource, HashError, OpenError};

/// Runs `tryst connect`.
pub async fn run(args: ConnectArgs) -> Result<(), CliError> {
    let state = StateDir::open(&args.common.state_dir)?;
    refuse_if_running(&state)?;
    let config = config(&args.common, Mode::List)?;
    check_name(&args.target)?;
    let duration_secs = duration_secs(args.duration)?;
    let mut outgoing = match &args.send {
        Some(path) => Some(open_file(path).await?),
        None => None,
    };
    let keypair = state.keypair()?;
    let (handle, mut events) = driver::spawn_with(
        config,
        keypair,
        args.common.server,
        bind_addr(&args.common),
        &[],
        TerminalOptions::default(),
    )
    .await
    .map_err(|e| CliError::usage(format!("cannot bind the terminal's UDP socket: {e}")))?;

    wait_online(&mut events, &args.common).await?;
    let answer = wait_for_session(&handle, &mut events, &args.target, duration_secs).await?;
    let Some((session_id, granted, peer_addr)) = answer else {
        let _ = handle.shutdown(EXIT_GRACE).await;
        return Err(CliError::NotPermitted);
    };
    println!(
        "session {} with {} for {granted} s (peer at {peer_addr})",
        full_session_id(&session_id),
        args.target
    );

    if let Some((source, name)) = outgoing.take() {
        let result = send(
            &handle,
            &mut events,
            session_id,
            source,
            name,
            args.limit_rate,
        )
        .await;
        let _ = handle.shutdown(EXIT_GRACE).await;
        return result;
    }
    hold(&handle, &mut events, session_id).await
}

/// Waits until the session server registered the terminal and the trigger server sees it.
async fn wait_online(
    events: &mut flume::Receiver<Event>,
    common: &TerminalCommon,
) -> Result<(), CliError> {
    let registered = tokio::time::timeout(REGISTER_TIMEOUT, async {
        while let Ok(event) = events.recv_async().await {
            match event {
                Event::Terminal(TerminalEvent::Online { .. }) => return Ok(()),
                Event::Terminal(TerminalEvent::RegistrationRefused) => {
                    return Err(CliError::failed(format!(
                        "the session server refused the name {} for this key",
                        common.name
                    )))
                }
                _ => {}
            }
        }
        Err(CliError::failed("the terminal's event loop stopped"))
    })
    .await;
    match registered {
        Ok(result) => result,
        Err(_) => Err(CliError::failed(format!(
            "could not register with the session server at {} and the trigger server at {}",
            common.server, common.trigger
        ))),
    }
}

/// Asks for `target`: the session, its duration and the peer's address, or `None` if refused.
async fn wait_for_session(
    handle: &TerminalHandle,
    events: &mut flume::Receiver<Event>,
    target: &str,
    duration_secs: u32,
) -> Result<Option<(SessionId, u32, SocketAddr)>, CliError> {
    let request = handle.connect(target, duration_secs).await?;
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
        while let Ok(event) = events.recv_async().await {
            match event {
                Event::Terminal(TerminalEvent::ConnectFailed { request_id })
                    if request_id == request =>
                {
                    return None;
                }
                Event::Terminal(TerminalEvent::SessionReady {
                    request_id,
                    session_id,
                    duration_secs,
                    peer_addr,
                    ..
                }) if request_id == request => return Some((session_id, duration_secs, peer_addr)),
                _ => {}
            }
        }
        None
    })
    .await;
    Ok(answer.ok().flatten())
}

/// Holds the session until it ends or the user stops it.
async fn hold(
    handle: &TerminalHandle,
    events: &mut flume::Receiver<Event>,
    session_id: SessionId,
) -> Result<(), CliError> {
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| CliError::failed(format!("cannot handle signals: {e}")))?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::failed(format!("cannot handle signals: {e}")))?;
    let reason = loop {
        tokio::select! {
            event = events.recv_async() => match event {
                Ok(Event::Terminal(TerminalEvent::SessionEnded { session_id: id, reason, .. })) if id == session_id => break reason,
                Ok(Event::Terminal(TerminalEvent::SessionExtended { session_id: id, duration_secs })) if id == session_id => {
                    println!("session extended to {duration_secs} s");
                }
                Ok(_) => {}
                Err(_) => return Err(CliError::failed("the terminal's event loop stopped")),
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
    let _ = handle.shutdown(EXIT_GRACE).await;
    Ok(())
}

/// Sends `path` on the session's stream and waits for the end: `Ok` once
/// the receiver closed the session as `Completed` (it stores the file only
/// when the SHA-256 matches), or, failing its word, once every byte was
/// acknowledged.
async fn send(
    handle: &TerminalHandle,
    events: &mut flume::Receiver<Event>,
    session_id: SessionId,
    source: FileSource,
    name: String,
    rate: Option<u64>,
) -> Result<(), CliError> {
    let file = start_file(handle, session_id, source, name, rate).await?;
    let ended = follow_transfer(handle, events, session_id, &file).await?;
    finish_send(&file, &ended)
}

/// The file being sent.
struct Outgoing {
    /// Its name, as the progress and the summary show it.
    name: String,
    /// Its size in bytes.
    size: u64,
    /// Hashed as it is sent: complete once the last byte was read.
    digest: FileDigest,
}

/// How the direct path ended, and when the transfer could start.
struct Ended {
    /// The reason the session ended with.
    reason: EndReason,
    /// Whether the receiver closed it.
    by_peer: bool,
    /// Payload bytes this side sent.
    bytes_sent: u64,
    /// When the direct path came up, if it did.
    connected_at: Option<Instant>,
    /// When the file was handed to the terminal.
    started: Instant,
}

/// Opens `path` to send it, before any request: a file that cannot be
/// read, or whose name the receiver would refuse ([`FileSource::open`]
/// checks it with the core's file-name policy), fails here with its
/// one-line error (exit 2). Returns the source and the file's name.
async fn open_file(path: &std::path::Path) -> Result<(FileSource, String), CliError> {
    let owned = path.to_path_buf();
    let source = tokio::task::spawn_blocking(move || FileSource::open(&owned))
        .await
        .map_err(|e| CliError::failed(format!("opening task failed: {e}")))?
        .map_err(|e| match e {
            OpenError::Hasher(..) => CliError::failed(e),
            _ => CliError::usage(e),
        })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((source, name))
}

/// Hands the opened file to the terminal to send on the session's stream.
async fn start_file(
    handle: &TerminalHandle,
    session_id: SessionId,
    source: FileSource,
    name: String,
    rate: Option<u64>,
) -> Result<Outgoing, CliError> {
    let size = source.file_size();
    let digest = source.digest_handle();
    handle.send_file(session_id, source, rate).await?;
    Ok(Outgoing { name, size, digest })
}

/// The sender's view of the transfer while it runs.
struct Watch {
    /// The progress on stdout.
    progress: Progress,
    /// The file's size.
    size: u64,
    /// When the direct path came up.
    connected_at: Option<Instant>,
    /// Set once everything is acknowledged or the terminal's side ended:
    /// past it, stop waiting for the peer's close.
    give_up: Option<Instant>,
    /// Every byte was acknowledged and the session is not yet closed.
    acked_all: bool,
}

impl Watch {
    /// Follows one event of the session; the direct path's end once it came.
    fn on_event(&mut self, session_id: SessionId, event: Event) -> Option<(EndReason, bool, u64)> {
        match event {
            Event::Sending {
                session_id: id,
                acked,
                ..
            } if id == session_id => {
                self.progress.set(acked);
            }
            Event::Peer {
                session_id: id,
                event,
            } if id == session_id => {
                return self.on_peer_event(event);
            }
            Event::Terminal(TerminalEvent::SessionExtended {
                session_id: id,
                duration_secs,
            }) if id == session_id => {
                self.progress.println(&format!("the transfer was still running at the threshold: session extended to {duration_secs} s"));
            }
            Event::Terminal(TerminalEvent::ExtensionRefused { session_id: id })
                if id == session_id =>
            {
                self.progress
                    .println("the session server refused an extension");
            }
            Event::Terminal(TerminalEvent::SessionEnded { session_id: id, .. })
                if id == session_id =>
            {
                self.give_up.get_or_insert(Instant::now() + CONFIRM_WAIT);
            }
            _ => {}
        }
        None
    }

    /// Follows one event of the direct path; its end once it came.
    fn on_peer_event(&mut self, event: PeerEvent) -> Option<(EndReason, bool, u64)> {
        match event {
            PeerEvent::Connected { peer_addr } => {
                self.connected_at = Some(Instant::now());
                self.progress.println(&format!(
                    "direct path up to {peer_addr} (Noise KK, session key as PSK)"
                ));
            }
            PeerEvent::StreamAcked { .. } => {
                self.progress.set(self.size);
                self.acked_all = true;
                self.give_up.get_or_insert(Instant::now() + CONFIRM_WAIT);
            }
            PeerEvent::Ended {
                reason,
                by_peer,
                bytes_sent,
                ..
            } => return Some((reason, by_peer, bytes_sent)),
            _ => {}
        }
        None
    }
}

/// Follows the progress until the direct path ends; closes the session once all is acked.
async fn follow_transfer(
    handle: &TerminalHandle,
    events: &mut flume::Receiver<Event>,
    session_id: SessionId,
    file: &Outgoing,
) -> Result<Ended, CliError> {
    let progress = Progress::new(&format!("sending {}", file.name), file.size);
    let started = Instant::now();
    let mut watch = Watch {
        progress,
        size: file.size,
        connected_at: None,
        give_up: None,
        acked_all: false,
    };
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| CliError::failed(format!("cannot handle signals: {e}")))?;
    let (reason, by_peer, bytes_sent) = loop {
        let give_up = watch.give_up;
        let wait = async move {
            match give_up {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv_async() => match event {
                Err(_) => return Err(CliError::failed("the terminal's event loop stopped")),
                Ok(event) => if let Some(ended) = watch.on_event(session_id, event) {
                    break ended;
                },
            },
            _ = interrupt.recv() => {
                watch.progress.println("interrupted: closing the session");
                let _ = handle.close(session_id, EndReason::Cancelled).await;
                watch.acked_all = false;
                watch.give_up = Some(Instant::now() + CONFIRM_WAIT);
            }
            () = wait => {
                if watch.acked_all {
                    let _ = handle.close(session_id, EndReason::Completed).await;
                    watch.give_up = Some(Instant::now() + CONFIRM_WAIT);
                    watch.acked_all = false;
                } else {
                    watch.progress.finish();
                    return Err(CliError::failed("the session ended before the transfer did"));
                }
            }
        }
    };
    watch.progress.finish();
    Ok(Ended {
        reason,
        by_peer,
        bytes_sent,
        connected_at: watch.connected_at,
        started,
    })
}

/// The summary and the exit code: `Ok` for a completed session, the cause otherwise.
fn finish_send(file: &Outgoing, ended: &Ended) -> Result<(), CliError> {
    let (name, size, bytes_sent) = (&file.name, file.size, ended.bytes_sent);
    // The file could not be hashed (it shrank while it was sent): its
    // trailer never left, and the loop ended the session.
    let digest = match file.digest.get() {
        Some(Ok(digest)) => hex(&digest),
        Some(Err(HashError::Cancelled)) | None => "not computed".to_owned(),
        Some(Err(e)) => return Err(CliError::failed(format!("{name} was not sent: {e}"))),
    };
    let elapsed = ended
        .connected_at
        .unwrap_or(ended.started)
        .elapsed()
        .as_secs_f64()
        .max(1e-3);
    match (ended.reason, ended.by_peer) {
        (EndReason::Completed, true) => {
            println!(
                "sent {name}: {} in {elapsed:.1} s ({}/s); the receiver verified SHA-256 {}",
                human_bytes(size),
                human_bytes((size as f64 / elapsed) as u64),
                digest
            );
            println!("session ended: Completed ({bytes_sent} payload bytes sent)");
            Ok(())
        }
        (EndReason::Completed, false) => {
            println!(
                "sent {name}: {} in {elapsed:.1} s, every byte acknowledged (SHA-256 {}; the receiver did not confirm it)",
                human_bytes(size),
                digest
            );
            println!("session ended: Completed ({bytes_sent} payload bytes sent)");
            Ok(())
        }
        (EndReason::Failed, true) => Err(CliError::failed(format!(
            "the receiver did not keep {name} (checksum mismatch, or it takes no files)"
        ))),
        (EndReason::Failed, false) if ended.connected_at.is_none() => Err(CliError::failed(
            "no direct path to the peer: hole punching did not get through",
        )),
        (reason, _) => Err(CliError::failed(format!(
            "the transfer was cut: session ended ({reason:?}) after {} of {}",
            human_bytes(bytes_sent.min(size)),
            human_bytes(size)
        ))),
    }
}
