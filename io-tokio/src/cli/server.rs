//! `tryst server`, `tryst session-server` and `tryst trigger-server` on
//! tokio. Flags, data dir, keys, policy, store loading, the command poller
//! and the log lines are shared ([`tryst_std::cli::server`]); this runs the
//! roles on the async driver. SIGTERM (or Ctrl-C) ends every live session
//! (end triggers to both terminals, as `tryst end` does), waits for their
//! records, and stops.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tryst_core::identity::SecretKey;
use tryst_core::session_server::{SessionConfig, SessionEvent};
use tryst_core::trigger_server::TriggerEvent;
use tryst_core::wire::PublicKey;
use tryst_std::cli::end::store_error;
use tryst_std::cli::server::{
    bind_error, combined_up, load_server_store, log_session_event, log_trigger_event,
    open_poll_store, prepare_server, prepare_session_server, prepare_trigger_server, session_up,
    start_command_poller, trigger_up, CombinedSetup, ServerArgs, SessionServerArgs, SessionSetup,
    TriggerServerArgs, TriggerSetup, SHUTDOWN_WAIT, UNKNOWN_COMMAND,
};

use super::{blocking, CliError};
use crate::clock::DriverClock;
use crate::driver::session_server::{self as session, Durable, SessionHandle};
use crate::driver::trigger_server::{self as trigger, TriggerHandle};
use crate::driver::Stopped;
use tryst_std::store::{self, key_hex, parse_id, OperatorCommand, PendingCommand, Store};

/// `tryst server`: both roles in one process.
pub async fn run(args: ServerArgs) -> Result<(), CliError> {
    let stop = StopSignal::install();
    let setup = {
        let args = args.clone();
        blocking(move || prepare_server(&args)).await?
    };
    let CombinedSetup {
        config,
        session: identity,
        trigger_secret,
        trigger_config,
    } = setup;
    let session_key = identity.secret.public_key();
    let loopback_any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let (trigger, trigger_events) = trigger::spawn(
        trigger_config,
        trigger_secret.keypair(),
        &[session_key],
        args.trigger,
        loopback_any,
    )
    .await
    .map_err(|e| bind_error("trigger", args.trigger, e))?;
    let running = start_session_server(
        &args.data_dir,
        config,
        identity.secret,
        args.policy.closed,
        trigger.public_key,
        trigger.link_addr,
        args.control,
    )
    .await?;
    combined_up(
        &args,
        &session_key,
        identity.created,
        running.handle.control_addr,
        trigger.udp_addr,
    );
    let result = serve(stop, running, Some((trigger, trigger_events))).await;
    drop(identity.lock);
    result
}

/// `tryst session-server`: the session role alone, linked to a trigger
/// server over the authenticated channel.
pub async fn run_session_server(args: SessionServerArgs) -> Result<(), CliError> {
    let stop = StopSignal::install();
    let SessionSetup {
        config,
        trigger_key,
        identity,
    } = {
        let args = args.clone();
        blocking(move || prepare_session_server(&args)).await?
    };
    let key = identity.secret.public_key();
    let running = start_session_server(
        &args.data_dir,
        config,
        identity.secret,
        args.policy.closed,
        trigger_key,
        args.trigger_link,
        args.control,
    )
    .await?;
    session_up(&args, &key, identity.created, running.handle.control_addr);
    let result = serve(stop, running, None).await;
    drop(identity.lock);
    result
}

/// `tryst trigger-server`: the trigger role alone.
pub async fn run_trigger_server(args: TriggerServerArgs) -> Result<(), CliError> {
    let mut stop = StopSignal::install();
    let TriggerSetup {
        allowed,
        identity,
        config,
    } = {
        let args = args.clone();
        blocking(move || prepare_trigger_server(&args)).await?
    };
    let key = identity.secret.public_key();
    let (trigger, events) = trigger::spawn(
        config,
        identity.secret.keypair(),
        &allowed,
        args.trigger,
        args.link,
    )
    .await
    .map_err(|e| bind_error("trigger", args.trigger, e))?;
    trigger_up(
        &args,
        &key,
        identity.created,
        trigger.udp_addr,
        trigger.link_addr,
    );
    loop {
        tokio::select! {
            event = events.recv_async() => match event {
                Ok(event) => log_trigger_event(&event),
                Err(_) => return Err(CliError::failed("the trigger server stopped")),
            },
            () = stop.recv() => break,
        }
    }
    tracing::info!("trigger server stopped");
    drop(trigger);
    drop(identity.lock);
    Ok(())
}

/// A session server running on its store.
struct RunningSession {
    handle: SessionHandle,
    events: flume::Receiver<SessionEvent>,
    stopped: oneshot::Receiver<Stopped>,
    dir: PathBuf,
}

/// Opens the store, rebuilds the registry and the live sessions, and
/// starts the session server with its journal.
async fn start_session_server(
    dir: &Path,
    config: SessionConfig,
    secret: SecretKey,
    closed: bool,
    trigger_key: PublicKey,
    trigger_link: SocketAddr,
    control: SocketAddr,
) -> Result<RunningSession, CliError> {
    let dir2 = dir.to_path_buf();
    let (state, journal_store) = blocking(move || load_server_store(&dir2, closed)).await?;
    let (registry, facts) = (state.registry, state.live);
    let setup = Durable {
        clock: DriverClock::wall(),
        restore: facts,
        journal: Some(session::start_journal(journal_store)),
    };
    let (handle, events, stopped) = session::spawn_durable(
        config,
        secret.keypair(),
        registry,
        trigger_key,
        trigger_link,
        control,
        setup,
    )
    .await
    .map_err(|e| bind_error("control", control, e))?;
    Ok(RunningSession {
        handle,
        events,
        stopped,
        dir: dir.to_path_buf(),
    })
}

/// SIGTERM or Ctrl-C, listened for from the moment it is made: made
/// before the server says it is up, so an early signal is never missed.
struct StopSignal {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl StopSignal {
    fn install() -> StopSignal {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            StopSignal {
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        StopSignal {}
    }

    /// Resolves at the signal.
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(term) = &mut self.term {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A pending operator command and where its answer goes.
type CommandRequest = (PendingCommand, oneshot::Sender<String>);

/// Operator commands queued from the poller thread to the server's loop.
const COMMAND_QUEUE: usize = 16;

/// Carries out one operator command; returns the answer for the store.
async fn apply_command(handle: &SessionHandle, command: &PendingCommand) -> String {
    match &command.command {
        Some(OperatorCommand::End(id)) => match handle.end_session(*id).await {
            Ok(()) => {
                tracing::info!(session = %store::id_hex(id), "operator ended the session (S1604)");
                "ok".to_owned()
            }
            Err(e) => format!("{e:#}"),
        },
        Some(OperatorCommand::Enroll { name, key }) => match handle.enroll(name, *key).await {
            Ok(()) => {
                tracing::info!(%name, key = %key_hex(key), "enrolled");
                "ok".to_owned()
            }
            Err(e) => e.to_string(),
        },
        None => UNKNOWN_COMMAND.to_owned(),
    }
}

/// Runs until a stop signal (then ends live sessions and waits for their
/// records) or until the session server fails.
async fn serve(
    mut stop: StopSignal,
    mut running: RunningSession,
    trigger: Option<(TriggerHandle, flume::Receiver<TriggerEvent>)>,
) -> Result<(), CliError> {
    let (trigger_handle, trigger_events) = match trigger {
        Some((h, e)) => (Some(h), Some(e)),
        None => (None, None),
    };
    let poll_store = {
        let dir = running.dir.clone();
        blocking(move || open_poll_store(&dir)).await?
    };
    let (command_tx, mut command_rx) = mpsc::channel::<CommandRequest>(COMMAND_QUEUE);
    let stop_poller = Arc::new(AtomicBool::new(false));
    let poller = start_command_poller(
        poll_store,
        move |command| {
            let (reply, answer) = oneshot::channel();
            command_tx.blocking_send((command, reply)).ok()?;
            Some(
                answer
                    .blocking_recv()
                    .unwrap_or_else(|_| "the server is stopping".to_owned()),
            )
        },
        stop_poller.clone(),
    );
    let result = loop {
        tokio::select! {
            event = running.events.recv_async() => match event {
                Ok(event) => log_session_event(&event),
                Err(_) => break Err(CliError::failed("the session server stopped")),
            },
            event = next_trigger_event(&trigger_events) => log_trigger_event(&event),
            Some((command, reply)) = command_rx.recv() => {
                let answer = apply_command(&running.handle, &command).await;
                let _ = reply.send(answer);
            }
            why = &mut running.stopped => break Err(match why {
                Ok(Stopped::JournalFailed(e)) => CliError::failed(format!("the store failed, stopping: {e}")),
                _ => CliError::failed("the session server stopped"),
            }),
            () = stop.recv() => break shut_down(&mut running).await,
        }
    };
    stop_poller.store(true, Ordering::Relaxed);
    drop(command_rx);
    let _ = tokio::task::spawn_blocking(move || poller.join()).await;
    drop(trigger_handle);
    result
}

/// The next trigger event, or never when there is no trigger server here.
async fn next_trigger_event(events: &Option<flume::Receiver<TriggerEvent>>) -> TriggerEvent {
    match events {
        Some(rx) => match rx.recv_async().await {
            Ok(e) => e,
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Ends every live session and waits for their records (or [`SHUTDOWN_WAIT`]).
async fn shut_down(running: &mut RunningSession) -> Result<(), CliError> {
    let dir = running.dir.clone();
    let live = blocking(move || {
        Store::open(&dir)
            .and_then(|s| s.live_ids())
            .map_err(store_error)
    })
    .await?;
    tracing::info!(live_sessions = live.len(), "stopping: ending live sessions");
    let mut waiting: BTreeSet<String> = BTreeSet::new();
    for id in live {
        if let Some(session_id) = parse_id(&id) {
            if running.handle.end_session(session_id).await.is_ok() {
                waiting.insert(id);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
    while !waiting.is_empty() {
        match tokio::time::timeout_at(deadline, running.events.recv_async()).await {
            Ok(Ok(event)) => {
                log_session_event(&event);
                if let SessionEvent::SessionRecord(r) = &event {
                    waiting.remove(&store::id_hex(&r.session_id));
                }
            }
            Ok(Err(_)) | Err(_) => break,
        }
    }
    if waiting.is_empty() {
        tracing::info!("stopped: every live session ended and recorded");
    } else {
        tracing::warn!(
            unrecorded = waiting.len(),
            "stopped before every record came; those sessions are restored at the next start"
        );
    }
    Ok(())
}
