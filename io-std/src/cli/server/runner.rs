//! The long-running server subcommands, written once as blocking code
//! over a binary's [`Driver`]: `server` (both roles), `session-server`
//! and `trigger-server`. Each takes the data dir's lock and keys
//! ([`prepare_server`] and its siblings), starts its roles on the driver,
//! prints its first lines, then logs every event until SIGTERM or SIGINT
//! (listened for from before the first line, so an early signal is never
//! missed) or until its loop stops. A stopping session server ends every
//! live session (end triggers to both terminals, as `tryst end` does) and
//! waits for their records ([`SHUTDOWN_WAIT`]); the lock is released only
//! once the roles are dropped.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tryst_core::identity::SecretKey;
use tryst_core::session_server::{SessionConfig, SessionEvent};
use tryst_core::trigger_server::TriggerEvent;
use tryst_core::wire::PublicKey;

use super::watch::{start_metrics, start_page, status_answer, Roles};
use super::{
    bind_error, combined_up, load_server_store, log_session_event, log_trigger_event,
    open_poll_store, prepare_server, prepare_session_server, prepare_trigger_server,
    server_store_location, session_up, start_command_poller, trigger_up, Applied, CombinedSetup,
    DeviceNames, Learn, ObserveArgs, ServerArgs, ServerIdentity, SessionServerArgs, SessionSetup,
    TriggerServerArgs, TriggerSetup, SHUTDOWN_WAIT, UNKNOWN_COMMAND,
};
use crate::cli::driver::Driver;
use crate::cli::end::store_error;
use crate::cli::keygen::public_key_arg;
use crate::cli::relay::{read_relay_key, RelayArgs};
use crate::cli::CliError;
use crate::drive::{DriverClock, Stopped};
use crate::observe::http::HttpListener;
use crate::observe::metrics::ServerMetrics;
use crate::role::relay::RelayHandle;
use crate::role::relay_link::{RelayLinkClient, RelayLinkHub};
use crate::role::session_server::{start_timed_journal, Durable, SessionCommand, SessionHandle};
use crate::role::trigger_server::TriggerHandle;
use crate::role::Reply;
use crate::store::peers::PeerLink;
use crate::store::{self, key_hex, parse_id, OperatorCommand, PendingCommand, StoreLocation};
use tryst_core::relay::server::{RelayConfig, RelayEvent};
use tryst_core::relay::{RelayIssuer, RelayKey};

/// `server`: both roles in one process on `driver`, the session server
/// linked to the trigger server over loopback.
pub fn run<D: Driver + ?Sized>(driver: &D, args: ServerArgs) -> Result<(), CliError> {
    let stop = StopSignal::install()?;
    let CombinedSetup {
        config,
        session: identity,
        trigger_secret,
        mut trigger_config,
    } = prepare_server(&args)?;
    let _probe_port = start_probe_port(args.probe_listen, &mut trigger_config)?;
    let session_key = identity.secret.public_key();
    let loopback_any = SocketAddr::from(([127, 0, 0, 1], 0));
    let (trigger, trigger_events) = driver
        .trigger_server(
            trigger_config,
            trigger_secret.keypair(),
            &[session_key],
            args.trigger,
            loopback_any,
        )
        .map_err(|e| bind_error("trigger", args.trigger, e))?;
    let trigger_udp = trigger.udp_addr;
    let relay = match args.relay {
        Some(addr) => Some(start_relay(driver, addr, args.relay_public)?),
        None => None,
    };
    let mut linked = None;
    let external = match (args.relay_at, args.relay_key.as_deref()) {
        (Some(addr), Some(key)) => {
            println!("relay: external at {addr}");
            let key = read_relay_key(key)?;
            if let Some(link) = args.relay_link {
                let (client, events) =
                    RelayLinkClient::start(link, identity.secret.keypair(), key.clone())
                        .map_err(|e| CliError::failed(format!("relay link: {e}")))?;
                println!("relay: link to {link}");
                linked = Some((RelayControl::Linked(client), events));
            }
            Some(RelayIssuer {
                addr,
                key,
                unix_at_zero: 0,
            })
        }
        _ => None,
    };
    let start = SessionStart {
        config,
        closed: args.policy.closed,
        trigger_key: trigger.public_key,
        trigger_link: trigger.link_addr,
        control: args.control,
        relay: relay
            .as_ref()
            .map(|(issuer, _)| issuer.clone())
            .or(external),
    };
    let location = server_store_location(&args.data_dir, args.store.as_deref())?;
    run_session(
        driver,
        &stop,
        &location,
        &args.data_dir,
        identity,
        start,
        |key, created, control| combined_up(&args, key, created, control, trigger_udp),
        Some((trigger, trigger_events)),
        relay.map(|(_, running)| running).or(linked),
        &args.observe,
    )
}

/// The relay the session server tells of extensions and ends, and hears
/// the allocations and byte counts of: its own, or a standalone one over
/// the relay link.
type RunningRelay = (RelayControl, flume::Receiver<RelayEvent>);

/// How the session server reaches its relay.
enum RelayControl {
    /// The relay runs in this process.
    Local(RelayHandle),
    /// A standalone `tryst relay`, over the link.
    Linked(RelayLinkClient),
}

impl RelayControl {
    fn extend(&self, session_id: tryst_core::wire::SessionId, secs: u32) {
        match self {
            RelayControl::Local(h) => h.extend(session_id, secs),
            RelayControl::Linked(l) => l.extend(session_id, secs),
        }
    }

    fn end(&self, session_id: tryst_core::wire::SessionId) {
        match self {
            RelayControl::Local(h) => h.end(session_id),
            RelayControl::Linked(l) => l.end(session_id),
        }
    }
}

/// Starts the relay of the all-in-one server on `addr` with a fresh random
/// key (the session server beside it is the only issuer, so the key never
/// leaves the process); what the session server needs to hand out
/// allocations on it, and the running relay.
fn start_relay<D: Driver + ?Sized>(
    driver: &D,
    addr: SocketAddr,
    public: Option<SocketAddr>,
) -> Result<(RelayIssuer, RunningRelay), CliError> {
    use rand_core::RngCore;
    let mut secret = [0u8; tryst_core::relay::RELAY_KEY_LEN];
    rand_core::OsRng.fill_bytes(&mut secret);
    let key = RelayKey(secret);
    // Wall-clock instants: Unix time at the clock's origin is 0.
    let config = RelayConfig::new(key.clone(), 0);
    let (handle, events) = driver
        .relay(config, DriverClock::wall(), addr)
        .map_err(|e| bind_error("relay", addr, e))?;
    let advertised = public.unwrap_or(handle.udp_addr);
    println!(
        "relay: udp {} and tcp {} (told to terminals as {advertised})",
        handle.udp_addr, handle.tcp_addr
    );
    let issuer = RelayIssuer {
        addr: advertised,
        key,
        unix_at_zero: 0,
    };
    Ok((issuer, (RelayControl::Local(handle), events)))
}

/// `relay`: the relay alone on `driver`, for session servers that hand
/// out allocations on it (`server --relay-at`); logs each allocation and
/// its byte counts until SIGTERM or SIGINT.
pub fn run_relay<D: Driver + ?Sized>(driver: &D, args: RelayArgs) -> Result<(), CliError> {
    let stop = StopSignal::install()?;
    let mut config = RelayConfig::new(read_relay_key(&args.key)?, 0);
    config.max_allocations = args.max_allocations.max(1);
    // Wall-clock instants: Unix time at the clock's origin is 0.
    let (handle, events) = driver
        .relay(config, DriverClock::wall(), args.listen)
        .map_err(|e| bind_error("relay", args.listen, e))?;
    println!("relay: udp {}", handle.udp_addr);
    let hub = match args.link_listen {
        Some(addr) => {
            let allowed = args
                .session_server_key
                .iter()
                .map(|k| public_key_arg(k))
                .collect::<Result<Vec<_>, _>>()?;
            let listener =
                std::net::TcpListener::bind(addr).map_err(|e| bind_error("relay link", addr, e))?;
            let hub = RelayLinkHub::start(
                listener,
                read_relay_key(&args.key)?,
                allowed,
                handle.clone(),
            )
            .map_err(|e| bind_error("relay link", addr, e))?;
            println!("relay: link {}", hub.local_addr());
            Some(hub)
        }
        None => None,
    };
    let result = loop {
        let wake = flume::Selector::new()
            .recv(&events, |event| match event {
                Ok(event) => Wake::Relay(event),
                Err(_) => Wake::RelayGone,
            })
            .recv(&stop.rx, |_| Wake::Signal)
            .wait();
        match wake {
            Wake::Relay(event) => {
                log_relay_event(&event);
                if let Some(hub) = &hub {
                    hub.report(event);
                }
            }
            Wake::Signal => break Ok(()),
            _ => break Err(CliError::failed("the relay's loop stopped")),
        }
    };
    if result.is_ok() {
        tracing::info!(target: LOG_TARGET, "relay stopped");
    }
    drop(hub);
    drop(handle);
    result
}

/// `session-server`: the session role alone on `driver`, linked to a
/// trigger server over the authenticated channel.
pub fn run_session_server<D: Driver + ?Sized>(
    driver: &D,
    args: SessionServerArgs,
) -> Result<(), CliError> {
    let stop = StopSignal::install()?;
    let SessionSetup {
        config,
        trigger_key,
        identity,
    } = prepare_session_server(&args)?;
    let start = SessionStart {
        config,
        closed: args.policy.closed,
        trigger_key,
        trigger_link: args.trigger_link,
        control: args.control,
        relay: None,
    };
    let location = server_store_location(&args.data_dir, args.store.as_deref())?;
    run_session(
        driver,
        &stop,
        &location,
        &args.data_dir,
        identity,
        start,
        |key, created, control| session_up(&args, key, created, control),
        None,
        None,
        &args.observe,
    )
}

/// Starts the session server of `identity` on `driver`, tells `up` its
/// key, whether the key is new, and its control address, serves until it
/// stops, and only then releases the data dir's lock. The metrics and
/// the status page (`observe`) start once it is up.
#[allow(clippy::too_many_arguments)]
fn run_session<D: Driver + ?Sized>(
    driver: &D,
    stop: &StopSignal,
    location: &StoreLocation,
    dir: &Path,
    identity: ServerIdentity,
    start: SessionStart,
    up: impl FnOnce(&PublicKey, bool, SocketAddr),
    trigger: Option<(TriggerHandle, flume::Receiver<TriggerEvent>)>,
    relay: Option<RunningRelay>,
    observe: &ObserveArgs,
) -> Result<(), CliError> {
    let ServerIdentity {
        lock,
        secret,
        created,
    } = identity;
    let key = secret.public_key();
    let metrics = Arc::new(ServerMetrics::new());
    let (running, stores) = start_session_server(driver, location, secret, start, &metrics)?;
    let control_addr = running.handle.control_addr;
    let roles = Roles {
        session: Some(running.handle.clone()),
        trigger: trigger.as_ref().map(|(t, _)| t.clone()),
    };
    let mut listeners = Vec::new();
    if let Some(addr) = observe.metrics {
        listeners.push(start_metrics(addr, Arc::clone(&metrics), roles.clone())?);
    }
    if let Some(addr) = observe.http {
        listeners.push(start_page(driver, addr, dir, roles.clone())?);
    }
    let watch = Watch {
        metrics,
        roles,
        _listeners: listeners,
    };
    // Said once everything that needs a descriptor holds one: a flood of
    // streams from then on cannot keep the server from its store.
    up(&key, created, control_addr);
    let result = serve(stop, running, stores, trigger, relay, watch);
    drop(lock);
    result
}

/// The watchers of a running session server: its metrics, the roles
/// they read, and the HTTP listeners (dropped before the roles are).
struct Watch {
    metrics: Arc<ServerMetrics>,
    roles: Roles,
    _listeners: Vec<HttpListener>,
}

/// Starts the probe port (`--probe-listen`), if asked, and tells the
/// trigger server's config its port; the handle keeps it running.
fn start_probe_port(
    addr: Option<SocketAddr>,
    config: &mut tryst_core::trigger_server::TriggerConfig,
) -> Result<Option<crate::netcheck::ProbePortHandle>, CliError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let handle =
        crate::netcheck::spawn_probe_port(addr).map_err(|e| bind_error("probe", addr, e))?;
    config.probe_port = Some(handle.addr.port());
    tracing::info!(probe = %handle.addr, other = %handle.other, "netcheck probe port listening");
    Ok(Some(handle))
}

/// `trigger-server`: the trigger role alone on `driver`.
pub fn run_trigger_server<D: Driver + ?Sized>(
    driver: &D,
    args: TriggerServerArgs,
) -> Result<(), CliError> {
    let stop = StopSignal::install()?;
    let TriggerSetup {
        allowed,
        identity,
        mut config,
    } = prepare_trigger_server(&args)?;
    let _probe_port = start_probe_port(args.probe_listen, &mut config)?;
    let key = identity.secret.public_key();
    let (trigger, events) = driver
        .trigger_server(
            config,
            identity.secret.keypair(),
            &allowed,
            args.trigger,
            args.link,
        )
        .map_err(|e| bind_error("trigger", args.trigger, e))?;
    trigger_up(
        &args,
        &key,
        identity.created,
        trigger.udp_addr,
        trigger.link_addr,
    );
    let metrics = Arc::new(ServerMetrics::new());
    let listener = match args.metrics {
        Some(addr) => {
            let roles = Roles {
                session: None,
                trigger: Some(trigger.clone()),
            };
            Some(start_metrics(addr, metrics, roles)?)
        }
        None => None,
    };
    let result = loop {
        let wake = flume::Selector::new()
            .recv(&events, |event| match event {
                Ok(event) => Wake::Trigger(event),
                Err(_) => Wake::TriggerGone,
            })
            .recv(&stop.rx, |_| Wake::Signal)
            .wait();
        match wake {
            Wake::Trigger(event) => log_trigger_event(&event, &DeviceNames::default()),
            Wake::TriggerGone => break Err(CliError::failed("the trigger server stopped")),
            Wake::Signal => break Ok(()),
            // Not selected here.
            Wake::Session(_)
            | Wake::SessionGone
            | Wake::Stopped(_)
            | Wake::Relay(_)
            | Wake::RelayGone => {}
        }
    };
    if result.is_ok() {
        tracing::info!(target: LOG_TARGET, "trigger server stopped");
    }
    drop(listener);
    drop(trigger);
    drop(identity.lock);
    result
}

/// The log target of every server line, shared with the set-up's lines
/// (`servers up`, the events): one name for an operator's filter.
const LOG_TARGET: &str = "tryst_std::cli::server";

/// What wakes a running server.
enum Wake {
    /// A session server event to log.
    Session(SessionEvent),
    /// The session server's event channel closed: its loop is gone.
    SessionGone,
    /// A trigger server event to log.
    Trigger(TriggerEvent),
    /// The trigger server's event channel closed.
    TriggerGone,
    /// A relay event to log.
    Relay(RelayEvent),
    /// The relay's event channel closed.
    RelayGone,
    /// The session server's loop stopped, and why.
    Stopped(Option<Stopped>),
    /// SIGTERM or SIGINT.
    Signal,
}

/// How the session server is started (besides its store and driver).
struct SessionStart {
    config: SessionConfig,
    closed: bool,
    trigger_key: PublicKey,
    trigger_link: SocketAddr,
    control: SocketAddr,
    relay: Option<RelayIssuer>,
}

/// A session server running on its store.
struct RunningSession {
    handle: SessionHandle,
    events: flume::Receiver<SessionEvent>,
    /// Why its loop stopped, forwarded from its [`Reply`] (one message).
    stopped: flume::Receiver<Option<Stopped>>,
    /// Its store.
    location: StoreLocation,
    /// Who it is in a shared store (its public key, hex).
    owner: String,
}

/// The store connections a running session server's own threads use,
/// opened before it accepts a stream.
struct SessionStores {
    /// The command poller's.
    poll: Box<dyn store::ServerStore>,
    /// Where refused requests are kept for the operator.
    refusals: Box<dyn store::ServerStore>,
    /// The cluster's messages (a shared store), to listen on once serving.
    peers: Option<PeerLink>,
}

/// Opens the store, rebuilds the registry and the live sessions, and
/// starts the session server with its journal on `driver`.
fn start_session_server<D: Driver + ?Sized>(
    driver: &D,
    location: &StoreLocation,
    secret: SecretKey,
    start: SessionStart,
    metrics: &Arc<ServerMetrics>,
) -> Result<(RunningSession, SessionStores), CliError> {
    let owner = key_hex(&secret.public_key());
    let (state, journal_store) = load_server_store(location, &owner, start.closed)?;
    // Every store connection opens before the server accepts a stream: once
    // it does, a flood may take every free descriptor.
    let poll_store = open_poll_store(location, &owner)?;
    let refusal_store = open_poll_store(location, &owner)?;
    // A shared store: the cluster's servers route requests to each other
    // through its notifications.
    let mut peer_link = match location {
        StoreLocation::Postgres(url) => Some(PeerLink::open(url).map_err(store_error)?),
        StoreLocation::DataDir(_) => None,
    };
    let peers = match peer_link.as_mut() {
        Some(link) => Some(
            link.start_sender()
                .map_err(|e| CliError::failed(format!("cannot start the peer sender: {e}")))?,
        ),
        None => None,
    };
    let timing = Arc::clone(metrics);
    let setup = Durable {
        clock: DriverClock::wall(),
        restore: state.live,
        enrol_codes: state.enrol_codes,
        relay: start.relay,
        peers,
        journal: Some(start_timed_journal(journal_store, move |took| {
            timing.observe_store_write(took)
        })),
    };
    let (handle, events, stopped) = driver
        .session_server(
            start.config,
            secret.keypair(),
            state.registry,
            start.trigger_key,
            start.trigger_link,
            start.control,
            setup,
        )
        .map_err(|e| bind_error("control", start.control, e))?;
    Ok((
        RunningSession {
            handle,
            events,
            stopped: forward_stopped(stopped)?,
            location: location.clone(),
            owner,
        },
        SessionStores {
            poll: poll_store,
            refusals: refusal_store,
            peers: peer_link,
        },
    ))
}

/// Waits for `stopped` on a thread of its own and hands the answer (none
/// if the loop went without one) to a channel a [`flume::Selector`] can
/// wait on. The thread ends when the loop stops, which the server's
/// handles being dropped makes happen.
fn forward_stopped(stopped: Reply<Stopped>) -> Result<flume::Receiver<Option<Stopped>>, CliError> {
    let (tx, rx) = flume::bounded(1);
    std::thread::Builder::new()
        .name("tryst-stopped".into())
        .spawn(move || {
            let _ = tx.send(stopped.wait().ok());
        })
        .map_err(|e| CliError::failed(format!("cannot start a thread: {e}")))?;
    Ok(rx)
}

/// SIGTERM or SIGINT, listened for from the moment it is made: made
/// before the server says it is up, so an early signal is never missed.
/// A thread turns each signal into a message on `rx`; dropping this
/// closes the listener and ends the thread.
struct StopSignal {
    rx: flume::Receiver<()>,
    #[cfg(unix)]
    handle: signal_hook::iterator::Handle,
    /// Keeps `rx` open where no signal ever sends on it.
    #[cfg(not(unix))]
    _never: flume::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl StopSignal {
    #[cfg(unix)]
    fn install() -> Result<StopSignal, CliError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
            .map_err(|e| CliError::failed(format!("cannot listen for signals: {e}")))?;
        let handle = signals.handle();
        let (tx, rx) = flume::bounded(1);
        let thread = std::thread::Builder::new()
            .name("tryst-signals".into())
            .spawn(move || {
                for _ in signals.forever() {
                    // One pending stop is enough: a full queue already says it.
                    let _ = tx.try_send(());
                }
            })
            .map_err(|e| CliError::failed(format!("cannot start a thread: {e}")))?;
        Ok(StopSignal {
            rx,
            handle,
            thread: Some(thread),
        })
    }

    /// Without unix signals nothing stops the server but its loop.
    #[cfg(not(unix))]
    fn install() -> Result<StopSignal, CliError> {
        let (tx, rx) = flume::bounded(1);
        Ok(StopSignal {
            rx,
            _never: tx,
            thread: None,
        })
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        #[cfg(unix)]
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Carries out one operator command on the running server (blocking until
/// its loop answers); returns the answer for the store. A forced end is
/// answered later, from its own thread, once both terminals confirmed (or
/// not): the poller goes on meanwhile (heartbeat, other commands).
fn apply_command(
    handle: &SessionHandle,
    roles: &Roles,
    location: &StoreLocation,
    owner: &str,
    command: &PendingCommand,
) -> Applied {
    Applied::Answer(match &command.command {
        Some(OperatorCommand::Status) => status_answer(roles),
        Some(OperatorCommand::End(id)) => {
            // Seed S1604: answered once both terminals confirmed, or the
            // record was written without (the end grace).
            tracing::info!(target: LOG_TARGET, session = %store::id_hex(id), "operator ends the session");
            let reply = handle.end_session_confirmed(*id);
            let (location, owner, row) = (location.clone(), owner.to_owned(), command.id);
            let spawned = std::thread::Builder::new()
                .name("tryst-end".into())
                .spawn(move || {
                    let answer = match reply.wait_timeout(super::super::end::SETTLE_WAIT) {
                        Some(Ok(settled)) => super::super::end::settled_answer(&settled),
                        Some(Err(e)) => format!("{e:#}"),
                        None => super::super::end::UNSETTLED.to_owned(),
                    };
                    let written = open_poll_store(&location, &owner)
                        .map_err(|e| e.to_string())
                        .and_then(|s| s.finish_command(row, &answer).map_err(|e| e.to_string()));
                    if let Err(e) = written {
                        tracing::warn!(target: LOG_TARGET, error = %e, "end answer not written");
                    }
                });
            match spawned {
                Ok(_) => return Applied::Deferred,
                Err(e) => format!("cannot wait for the end: {e}"),
            }
        }
        Some(OperatorCommand::EnrolCode(code)) => {
            match handle.enrol_code(store::core_enrol_code(code)).wait() {
                Ok(()) => {
                    tracing::info!(target: LOG_TARGET, name = %code.name, "enrolment code held");
                    "ok".to_owned()
                }
                Err(e) => e.to_string(),
            }
        }
        Some(OperatorCommand::Release(name)) => match handle.release(name).wait() {
            Ok(key) => {
                tracing::info!(target: LOG_TARGET, %name, key = %super::short(&key), "name released");
                "ok".to_owned()
            }
            Err(e) => e.to_string(),
        },
        Some(OperatorCommand::Enroll { name, key }) => match handle.enroll(name, *key).wait() {
            Ok(()) => {
                tracing::info!(target: LOG_TARGET, %name, key = %super::short(key), "enrolled");
                "ok".to_owned()
            }
            Err(e) => e.to_string(),
        },
        None => UNKNOWN_COMMAND.to_owned(),
    })
}

/// Runs until a stop signal (then ends live sessions and waits for their
/// records) or until the session server fails.
fn serve(
    stop: &StopSignal,
    running: RunningSession,
    stores: SessionStores,
    trigger: Option<(TriggerHandle, flume::Receiver<TriggerEvent>)>,
    relay: Option<RunningRelay>,
    watch: Watch,
) -> Result<(), CliError> {
    let (relay_handle, mut relay_events) = match relay {
        Some((h, e)) => (Some(h), Some(e)),
        None => (None, None),
    };
    let (trigger_handle, mut trigger_events) = match trigger {
        Some((h, e)) => (Some(h), Some(e)),
        None => (None, None),
    };
    let SessionStores {
        poll: poll_store,
        refusals: refusal_store,
        peers,
    } = stores;
    let stop_poller = Arc::new(AtomicBool::new(false));
    if let Some(link) = peers {
        let commands = running.handle.commands.clone();
        let stop = Arc::clone(&stop_poller);
        let listening = link.start_listener(move |message| {
            let sent = message.is_none_or(|m| commands.send(SessionCommand::Peer(m)).is_ok());
            sent && !stop.load(Ordering::Relaxed)
        });
        if let Err(e) = listening {
            tracing::error!(target: LOG_TARGET, error = %e, "cannot listen to the other servers: requests for their terminals are denied");
        }
    }
    let poller = {
        let handle = running.handle.clone();
        // A shared store: other servers' bindings are held here too.
        let learn: Option<Learn> = match &running.location {
            StoreLocation::Postgres(_) => {
                let handle = running.handle.clone();
                Some(Box::new(move |name: String, key| {
                    if let Err(e) = handle.enroll(&name, key).wait() {
                        tracing::warn!(target: LOG_TARGET, %name, error = %e, "a shared binding was not applied");
                    }
                }))
            }
            StoreLocation::DataDir(_) => None,
        };
        let roles = watch.roles.clone();
        let (location, owner) = (running.location.clone(), running.owner.clone());
        start_command_poller(
            poll_store,
            move |command| Some(apply_command(&handle, &roles, &location, &owner, &command)),
            learn,
            stop_poller.clone(),
        )
    };
    let mut names = DeviceNames::default();
    let result = loop {
        let mut selector = flume::Selector::new()
            .recv(&running.events, |event| match event {
                Ok(event) => Wake::Session(event),
                Err(_) => Wake::SessionGone,
            })
            .recv(&running.stopped, |why| Wake::Stopped(why.ok().flatten()))
            .recv(&stop.rx, |_| Wake::Signal);
        if let Some(events) = &trigger_events {
            selector = selector.recv(events, |event| match event {
                Ok(event) => Wake::Trigger(event),
                Err(_) => Wake::TriggerGone,
            });
        }
        if let Some(events) = &relay_events {
            selector = selector.recv(events, |event| match event {
                Ok(event) => Wake::Relay(event),
                Err(_) => Wake::RelayGone,
            });
        }
        match selector.wait() {
            Wake::Relay(event) => {
                log_relay_event(&event);
                watch.metrics.observe_relay_event(&event);
                keep_relayed(&*refusal_store, &event);
            }
            Wake::RelayGone => relay_events = None,
            Wake::Session(event) => {
                if let Some(relay) = &relay_handle {
                    tell_relay(relay, &event);
                }
                names.note(&event);
                watch.metrics.observe_session_event(&event);
                log_session_event(&event);
                keep_refusal(&*refusal_store, &event);
            }
            Wake::Trigger(event) => log_trigger_event(&event, &names),
            // Nothing more comes from it; the session server goes on.
            Wake::TriggerGone => trigger_events = None,
            // The events go with the loop: say why it stopped if it says so soon.
            Wake::SessionGone => {
                let why = running.stopped.recv_timeout(STOPPED_WAIT).ok().flatten();
                break Err(stopped_error(why));
            }
            Wake::Stopped(why) => break Err(stopped_error(why)),
            Wake::Signal => break shut_down(&running, &watch.metrics),
        }
    };
    stop_poller.store(true, Ordering::Relaxed);
    let _ = poller.join();
    // The listeners hold role handles: gone before the roles are.
    drop(watch);
    drop(running);
    drop(trigger_handle);
    drop(relay_handle);
    result
}

/// What the relay must hear of the session server: extensions move an
/// allocation's deadline; a forced end ends it at once (terminals that
/// ignore their end triggers get nothing more through), and a record or a
/// settled forced end ends what is left.
fn tell_relay(relay: &RelayControl, event: &SessionEvent) {
    match event {
        SessionEvent::SessionExtended(x) => relay.extend(x.session_id, x.duration_secs),
        SessionEvent::ForcedEndStarted { session_id } => relay.end(*session_id),
        SessionEvent::SessionRecord(r) => relay.end(r.session_id),
        SessionEvent::ForcedEndSettled(f) => relay.end(f.session_id),
        _ => {}
    }
}

/// The relay's events in the operator's log.
fn log_relay_event(event: &RelayEvent) {
    match event {
        RelayEvent::Allocated { session_id } => {
            tracing::info!(target: LOG_TARGET, session = %store::id_hex(session_id), "relay allocation");
        }
        RelayEvent::Ended {
            session_id,
            reason,
            from_requester,
            from_target,
        } => {
            tracing::info!(target: LOG_TARGET, session = %store::id_hex(session_id), ?reason, from_requester, from_target, "relay allocation ended");
        }
    }
}

/// Keeps the relay's byte count of an ended allocation in its session's
/// row (the record's path: relayed once it carried bytes). The relay ends
/// an allocation at the session's record or before it (its own deadline,
/// idle, budget): the row exists from the session's start either way. A
/// failed write is logged, never fatal.
fn keep_relayed(store: &dyn store::ServerStore, event: &RelayEvent) {
    let RelayEvent::Ended {
        session_id,
        from_requester,
        from_target,
        ..
    } = event
    else {
        return;
    };
    let bytes = from_requester.saturating_add(*from_target);
    if bytes == 0 {
        return;
    }
    if let Err(e) = store.record_relayed(session_id, bytes) {
        tracing::warn!(target: LOG_TARGET, session = %store::id_hex(session_id), error = %e, "relay byte count not written");
    }
}

/// Keeps a refused request in the store with its real reason (for the
/// operator's `tryst sessions --refused`; the requester got the uniform
/// answer). A failed write is logged, never fatal.
fn keep_refusal(store: &dyn store::ServerStore, event: &SessionEvent) {
    let SessionEvent::RequestDenied {
        requester,
        target,
        reason,
        ..
    } = event
    else {
        return;
    };
    let row = store::RefusalRow {
        at_us: store::now_us(),
        requester: requester.clone(),
        target: target.clone(),
        reason: store::refusal_reason(*reason).to_owned(),
    };
    if let Err(e) = store.record_refusal(&row) {
        tracing::warn!(target: LOG_TARGET, error = %e, "a refused request was not kept in the store");
    }
}

/// How long a server whose events ended waits to hear why its loop stopped.
const STOPPED_WAIT: Duration = Duration::from_secs(1);

/// The error of a session server whose loop stopped (`why`, if it said).
fn stopped_error(why: Option<Stopped>) -> CliError {
    match why {
        Some(Stopped::JournalFailed(e)) => {
            CliError::failed(format!("the store failed, stopping: {e}"))
        }
        _ => CliError::failed("the session server stopped"),
    }
}

/// Ends every live session and waits for their records (or [`SHUTDOWN_WAIT`]).
fn shut_down(running: &RunningSession, metrics: &ServerMetrics) -> Result<(), CliError> {
    let live = running
        .location
        .open(&running.owner)
        .and_then(|s| s.live_ids())
        .map_err(store_error)?;
    tracing::info!(target: LOG_TARGET, live_sessions = live.len(), "stopping: ending live sessions");
    let mut waiting: BTreeSet<String> = BTreeSet::new();
    for id in live {
        if let Some(session_id) = parse_id(&id) {
            if running.handle.end_session(session_id).wait().is_ok() {
                waiting.insert(id);
            }
        }
    }
    let deadline = Instant::now() + SHUTDOWN_WAIT;
    while !waiting.is_empty() {
        match running.events.recv_deadline(deadline) {
            Ok(event) => {
                metrics.observe_session_event(&event);
                log_session_event(&event);
                if let SessionEvent::SessionRecord(r) = &event {
                    waiting.remove(&store::id_hex(&r.session_id));
                }
            }
            Err(_) => break,
        }
    }
    if waiting.is_empty() {
        tracing::info!(target: LOG_TARGET, "stopped: every live session ended and recorded");
    } else {
        tracing::warn!(
            target: LOG_TARGET,
            unrecorded = waiting.len(),
            "stopped before every record came; those sessions are restored at the next start"
        );
    }
    Ok(())
}
