//! `tryst server`, `tryst session-server` and `tryst trigger-server` (the
//! operator's side), written once for both binaries: flags, data dir,
//! keys, policy, store loading, the operator-command poller, the log lines
//! and the blocking runners ([`run`], [`run_session_server`],
//! [`run_trigger_server`]) over a binary's [`crate::cli::driver::Driver`].
//! `server` runs both roles in one process, linked over loopback with the
//! same authenticated channel the split roles use across machines.
//!
//! The session server keeps its durable facts in `DIR/tryst.db` (see
//! [`crate::store`]): the facts the machine hands out are committed
//! before the next transmit (which may acknowledge them) goes out, and at
//! start the bindings and the live sessions are replayed into the fresh
//! machine ([`crate::store::ServerStore::server_state`]); `--store postgres://...` puts the store in a
//! shared PostgreSQL database instead ([`crate::store::pg`]). SIGTERM (or Ctrl-C) ends every live session (end triggers to
//! both terminals, as `tryst end` does), waits for their records, and
//! stops. Operator commands (`tryst end`, `tryst enroll`) arrive through
//! the store's command table, polled every [`COMMAND_POLL`].

mod runner;
pub mod watch;

pub use runner::{run, run_relay, run_session_server, run_trigger_server};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tryst_core::identity::SecretKey;
use tryst_core::names::TrustMode;
use tryst_core::ratelimit::Limit;
use tryst_core::session_server::{
    ExtensionPolicy, RateLimits, SessionConfig, SessionEvent, SessionFact, SessionLimits,
    DEFAULT_BINDING_TTL, DEFAULT_DURATION, DEFAULT_MAX_CHANNELS, DEFAULT_MAX_PENDING_REQUESTS,
    END_GRACE,
};
use tryst_core::trigger_server::{TriggerConfig, TriggerEvent};
use tryst_core::wire::PublicKey;

use super::end::store_error;
use super::keygen::{key_error, public_key_arg};
use super::CliError;
use crate::datadir::DataDirLock;
use crate::keyfile::{self, IfExists};
use crate::store::{self, key_hex, PendingCommand, ServerState, ServerStore, StoreLocation};

/// How often the server looks for operator commands in the store.
pub const COMMAND_POLL: Duration = Duration::from_millis(200);
/// How often the server notes in the store that it runs.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a stopping server waits for the records of the sessions it ended.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(END_GRACE.as_secs() + 3);
/// Answered commands are kept this long, then pruned.
const COMMAND_KEEP: Duration = Duration::from_secs(3600);
/// The session server's secret key in the data dir.
pub const SERVER_KEY_FILE: &str = "server.key";
/// The session server's public key in the data dir (what terminals need).
pub const SERVER_PUB_FILE: &str = "server.pub";
/// The trigger server's secret key in the data dir.
pub const TRIGGER_KEY_FILE: &str = "trigger.key";
/// The trigger server's public key in the data dir.
pub const TRIGGER_PUB_FILE: &str = "trigger.pub";
/// Default control address (TCP, terminals to the session server).
pub const DEFAULT_CONTROL: &str = "127.0.0.1:7400";
/// Default trigger address (UDP, keepalives and triggers).
pub const DEFAULT_TRIGGER: &str = "127.0.0.1:7401";
/// Default link address (TCP, session server to trigger server, split mode).
pub const DEFAULT_LINK: &str = "127.0.0.1:7402";

/// The session policy flags both session-server commands take.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Longest duration one connection request is granted (e.g. 90s, 5m, 1h).
    #[arg(long, value_name = "DUR", default_value = "1h", value_parser = parse_duration)]
    pub max_duration: Duration,
    /// How much time extensions may add to a session in total beyond
    /// --max-duration; 0s refuses every extension.
    #[arg(long, value_name = "DUR", default_value = "1h", value_parser = parse_duration)]
    pub extension: Duration,
    /// The duration granted to a request that names none (at most
    /// --max-duration); 10m, or --max-duration if shorter, when absent.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub default_duration: Option<Duration>,
    /// Closed deployment: only names enrolled with `tryst enroll` may register.
    #[arg(long)]
    pub closed: bool,
    /// How long a name binding may go without a registration before it is
    /// removed and the name is free again (e.g. 90d); 0s keeps bindings
    /// forever. Default: 180 days, or forever with --closed.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub binding_ttl: Option<Duration>,
    /// Most terminal registrations held (live and pending); at the cap the
    /// owner of a bound name still gets in.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CHANNELS)]
    pub max_channels: usize,
    /// Most connection requests being decided at once; when full, the
    /// requester holding the most gives way.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PENDING_REQUESTS)]
    pub max_pending_requests: usize,
    /// Most control streams one source (an IPv4 address or an IPv6 /64) may
    /// hold open at once; one more is closed at once. The default leaves
    /// room for a carrier-grade NAT.
    #[arg(long, value_name = "N", default_value_t = tryst_core::conn_guard::DEFAULT_STREAMS_PER_SOURCE)]
    pub max_streams_per_source: usize,
    /// Registrations one source address (an IPv4 address or an IPv6 /64)
    /// may start, checked before any public-key work: a burst, then one
    /// every interval (BURST,EVERY). Size it for the most devices behind one
    /// NAT; over it, the terminal is told when to retry.
    #[arg(long, value_name = "BURST,EVERY", default_value = "64,50ms", value_parser = parse_limit)]
    pub registrations_per_source: Limit,
    /// Registrations one identity (a terminal's key, once its handshake
    /// proved it) may make: a burst, then one every interval (BURST,EVERY).
    #[arg(long, value_name = "BURST,EVERY", default_value = "10,2s", value_parser = parse_limit)]
    pub registrations_per_identity: Limit,
    /// Connection requests one registered terminal may make: a burst, then
    /// one every interval (BURST,EVERY); over it, the one uniform refusal.
    #[arg(long, value_name = "BURST,EVERY", default_value = "10,1s", value_parser = parse_limit)]
    pub requests_per_identity: Limit,
}

/// Parses a rate limit `BURST,EVERY`: at most BURST at once (at least 1),
/// then one more every EVERY (a duration above zero), e.g. `64,50ms`.
pub fn parse_limit(text: &str) -> Result<Limit, String> {
    let usage = "a limit is BURST,EVERY: a burst, then one every interval (e.g. 64,50ms)";
    let (burst, every) = text.split_once(',').ok_or_else(|| usage.to_owned())?;
    let burst: u32 = burst
        .trim()
        .parse()
        .map_err(|_| format!("{usage}; {:?} is not a whole number", burst.trim()))?;
    if burst == 0 {
        return Err(format!("{usage}; a burst of 0 would refuse everything"));
    }
    let every = humantime::parse_duration(every.trim())
        .map_err(|e| format!("{usage}; {:?} is not a duration ({e})", every.trim()))?;
    if every.is_zero() {
        return Err(format!("{usage}; an interval of 0 is no limit"));
    }
    Ok(Limit::one_every(burst, every))
}

/// How an operator watches a session server (`server`, `session-server`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ObserveArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9400).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Serve the operator's status page at http://ADDR/ (login with the
    /// token in DATA_DIR/operator.token).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
}

/// Arguments of `tryst server` (both roles in one process).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Where the keys and the store live (created if missing, mode 0700).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Where terminals reach the session server (TCP).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_CONTROL)]
    pub control: SocketAddr,
    /// Where terminals send keepalives to the trigger server (UDP).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_TRIGGER)]
    pub trigger: SocketAddr,
    /// Also run the relay on this UDP address, and on TCP at the same
    /// address (for a peer whose network drops UDP): a permitted session
    /// whose peers cannot punch (symmetric NATs) goes through it, still
    /// end-to-end encrypted. Off by default.
    #[arg(long, value_name = "ADDR", conflicts_with = "relay_at")]
    pub relay: Option<SocketAddr>,
    /// Hand out allocations on a standalone `tryst relay` that terminals
    /// reach at this UDP address (instead of running one here); needs
    /// `--relay-key`, the key file that relay was started with.
    #[arg(long, value_name = "ADDR", requires = "relay_key")]
    pub relay_at: Option<SocketAddr>,
    /// The key file shared with the `--relay-at` relay (`tryst keygen --out
    /// FILE`, mode 0600).
    #[arg(long, value_name = "FILE", requires = "relay_at")]
    pub relay_key: Option<PathBuf>,
    /// Link to the `--relay-at` relay's `--link-listen` TCP address, so
    /// forced ends and extensions reach it and its byte counts come back
    /// into the session records (the relay must list this server's key
    /// with `--session-server-key`).
    #[arg(long, value_name = "ADDR", requires = "relay_at")]
    pub relay_link: Option<SocketAddr>,
    /// The relay's address as terminals reach it (default: `--relay`'s;
    /// needed when it listens on 0.0.0.0 or [::]).
    #[arg(long, value_name = "ADDR", requires = "relay")]
    pub relay_public: Option<SocketAddr>,
    /// Keepalive interval told to terminals (e.g. 25s; the core's default
    /// suits common NATs).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub keepalive: Option<Duration>,
    /// Authentic keepalives allowed per device: a burst, then one every
    /// interval (BURST,EVERY; the core's default is 4,5s). A load test
    /// raises it to offer more keepalives per device than a real one sends.
    #[arg(long, value_name = "BURST,EVERY", value_parser = parse_limit)]
    pub keepalive_limit: Option<Limit>,
    /// Also answer `tryst netcheck`'s address probes on this UDP address
    /// (the trigger server's IP, another port, e.g. 0.0.0.0:7403; its echo
    /// for the filtering test leaves from a further ephemeral port). Off
    /// when absent: netcheck then cannot tell the mapping or filtering.
    #[arg(long = "probe-listen", value_name = "ADDR")]
    pub probe_listen: Option<SocketAddr>,
    /// The host devices reach this server at (an IP address or a DNS
    /// name), put in the invite; needed when it listens on 0.0.0.0 or [::].
    #[arg(long, value_name = "HOST", value_parser = super::invite::Host::parse)]
    pub public_addr: Option<super::invite::Host>,
    /// Also show the invite as a QR code.
    #[arg(long)]
    pub qr: bool,
    /// Session policy.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Where the durable store is: `postgres://USER@HOST/DB` for a
    /// PostgreSQL database that several servers share; default (or
    /// `sqlite`): `tryst.db` in the data dir. Also read from `TRYST_STORE`.
    #[arg(long, value_name = "URL", env = "TRYST_STORE")]
    pub store: Option<String>,
    /// Metrics and the status page.
    #[command(flatten)]
    pub observe: ObserveArgs,
}

/// Arguments of `tryst session-server` (the session role alone).
#[derive(Debug, Clone, clap::Args)]
pub struct SessionServerArgs {
    /// Where the keys and the store live (created if missing, mode 0700).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Where terminals reach the session server (TCP).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_CONTROL)]
    pub control: SocketAddr,
    /// The trigger server's link address (TCP).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LINK)]
    pub trigger_link: SocketAddr,
    /// The trigger server's public key: 64 hex digits or a public key file.
    #[arg(long, value_name = "KEY|FILE")]
    pub trigger_key: String,
    /// Session policy.
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Where the durable store is: `postgres://USER@HOST/DB` for a
    /// PostgreSQL database that several servers share; default (or
    /// `sqlite`): `tryst.db` in the data dir. Also read from `TRYST_STORE`.
    #[arg(long, value_name = "URL", env = "TRYST_STORE")]
    pub store: Option<String>,
    /// Metrics and the status page.
    #[command(flatten)]
    pub observe: ObserveArgs,
}

/// Arguments of `tryst trigger-server` (the trigger role alone).
#[derive(Debug, Clone, clap::Args)]
pub struct TriggerServerArgs {
    /// Where its key lives (`trigger.key`, `trigger.pub`; created if missing).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Where terminals send keepalives (UDP).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_TRIGGER)]
    pub trigger: SocketAddr,
    /// Where session servers link (TCP).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LINK)]
    pub link: SocketAddr,
    /// A session server allowed to link: its public key (hex or file). Repeatable.
    #[arg(long = "session-server-key", value_name = "KEY|FILE", required = true)]
    pub session_server_keys: Vec<String>,
    /// Keepalive interval told to terminals (e.g. 25s).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub keepalive: Option<Duration>,
    /// Authentic keepalives allowed per device: a burst, then one every
    /// interval (BURST,EVERY; the core's default is 4,5s). A load test
    /// raises it to offer more keepalives per device than a real one sends.
    #[arg(long, value_name = "BURST,EVERY", value_parser = parse_limit)]
    pub keepalive_limit: Option<Limit>,
    /// Also answer `tryst netcheck`'s address probes on this UDP address
    /// (the trigger server's IP, another port, e.g. 0.0.0.0:7403; its echo
    /// for the filtering test leaves from a further ephemeral port). Off
    /// when absent: netcheck then cannot tell the mapping or filtering.
    #[arg(long = "probe-listen", value_name = "ADDR")]
    pub probe_listen: Option<SocketAddr>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
}

/// Parses `90s`, `5m`, `1h`, `1h 30m`, ...
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration ({e})"))
}

/// Creates `dir` (mode 0700) if missing; refuses a path that is not a
/// directory, and one that group or others may write or another user owns.
pub fn ensure_data_dir(dir: &Path) -> Result<(), CliError> {
    if dir.is_dir() {
        return keyfile::check_private_dir(dir)
            .map_err(|e| CliError::usage(format!("data dir: {e}")));
    }
    if dir.exists() {
        return Err(CliError::usage(format!(
            "{}: not a directory",
            dir.display()
        )));
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| {
        CliError::usage(format!(
            "{}: cannot create the data dir: {e}",
            dir.display()
        ))
    })
}

/// [`ensure_data_dir`], then takes the data dir's lock (held by the
/// caller for the server's life): a second server on one dir refuses to
/// start (exit 2) instead of sharing the store and the keys.
pub fn ensure_locked_data_dir(dir: &Path) -> Result<DataDirLock, CliError> {
    ensure_data_dir(dir)?;
    DataDirLock::take(dir).map_err(CliError::usage)
}

/// Reads `dir/secret_name`, or creates it; (re)writes `dir/public_name`.
/// Returns the key and whether it is new.
pub fn server_key(
    dir: &Path,
    secret_name: &str,
    public_name: &str,
) -> Result<(SecretKey, bool), CliError> {
    let secret_path = dir.join(secret_name);
    let created = !secret_path.exists();
    let secret = if created {
        let secret = SecretKey::generate(&mut rand_core::OsRng);
        keyfile::write_secret_key(&secret_path, &secret, IfExists::Refuse).map_err(key_error)?;
        secret
    } else {
        keyfile::read_secret_key(&secret_path).map_err(key_error)?
    };
    keyfile::write_public_key(
        &dir.join(public_name),
        &secret.public_key(),
        IfExists::Replace,
    )
    .map_err(key_error)?;
    Ok((secret, created))
}

/// The session server's policy from the flags.
pub fn session_config(policy: &PolicyArgs) -> Result<SessionConfig, CliError> {
    if policy.max_duration < Duration::from_secs(1) {
        return Err(CliError::usage("--max-duration must be at least 1s"));
    }
    let default_duration = match policy.default_duration {
        None => DEFAULT_DURATION.min(policy.max_duration),
        Some(d) if d < Duration::from_secs(1) => {
            return Err(CliError::usage("--default-duration must be at least 1s"))
        }
        Some(d) if d > policy.max_duration => {
            return Err(CliError::usage(format!(
                "--default-duration ({}) is longer than --max-duration ({})",
                humantime::format_duration(d),
                humantime::format_duration(policy.max_duration)
            )))
        }
        Some(d) => d,
    };
    let max_total = policy
        .max_duration
        .checked_add(policy.extension)
        .ok_or_else(|| CliError::usage("--extension is too long"))?;
    Ok(SessionConfig {
        max_duration: policy.max_duration,
        default_duration,
        max_total_duration: max_total,
        extension_policy: if policy.extension.is_zero() {
            ExtensionPolicy::Never
        } else {
            ExtensionPolicy::UpToTotal
        },
        limits: policy_limits(policy),
        rates: RateLimits {
            registrations_per_source: policy.registrations_per_source,
            registrations_per_identity: policy.registrations_per_identity,
            requests_per_identity: policy.requests_per_identity,
        },
        binding_ttl: match policy.binding_ttl {
            Some(ttl) if ttl.is_zero() => None,
            Some(ttl) => Some(ttl),
            None => (!policy.closed).then_some(DEFAULT_BINDING_TTL),
        },
        ..SessionConfig::default()
    })
}

/// The bounds the policy flags set.
pub fn policy_limits(policy: &PolicyArgs) -> SessionLimits {
    let mut limits = SessionLimits {
        max_channels: policy.max_channels.max(1),
        max_pending_requests: policy.max_pending_requests.max(1),
        ..SessionLimits::default()
    };
    limits.streams.per_source = policy.max_streams_per_source.max(1);
    limits
}

/// Prints a server's public key, and where its public half went if the
/// key is new.
pub fn announce_key(label: &str, key: &PublicKey, created: bool, public_file: &Path) {
    println!("{label}: {}", key_hex(key));
    if created {
        println!(
            "created a new key; its public half is in {}",
            public_file.display()
        );
    }
}

/// A listen address that cannot be bound: a configuration error.
pub fn bind_error(what: &str, addr: SocketAddr, e: std::io::Error) -> CliError {
    CliError::usage(format!("cannot listen on {addr} ({what}): {e}"))
}

/// How far back a server looks for bindings other servers made on a
/// shared store, beyond its last look (commit delays, clock skew).
pub const LEARN_MARGIN: Duration = Duration::from_secs(10);

/// What a server does with a binding another server made on a shared
/// store (applies it to its registry).
pub type Learn = Box<dyn FnMut(String, PublicKey) + Send>;

/// What became of one operator command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Carried out: the answer to store.
    Answer(String),
    /// Taken, answered later by whoever took it (a forced end waits for
    /// both terminals); the poller neither answers nor repeats it.
    Deferred,
}

/// Polls the store's command table and keeps the heartbeat, on its own
/// thread (store calls block), every [`COMMAND_POLL`], until `stop` is
/// set. Each pending command goes to `apply`, which carries it out on the
/// running server and gives the answer to store (or takes it to answer
/// later: [`Applied::Deferred`]), or `None` when the server is gone (the
/// poller then stops). With `learn`, every [`HEARTBEAT_EVERY`]
/// the bindings other servers made on a shared store go to it, so this
/// server holds their names against other keys before it would try to
/// bind them (the database refuses that, and the server stops rather than
/// acknowledge it). The heartbeat is cleared at the end.
pub fn start_command_poller<S, A>(
    store: S,
    mut apply: A,
    mut learn: Option<Learn>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()>
where
    S: ServerStore + 'static,
    A: FnMut(PendingCommand) -> Option<Applied> + Send + 'static,
{
    std::thread::spawn(move || {
        let mut last_beat: Option<std::time::Instant> = None;
        let mut deferred: std::collections::HashSet<i64> = std::collections::HashSet::new();
        let mut last_prune = std::time::Instant::now();
        let margin = u64::try_from(LEARN_MARGIN.as_micros()).unwrap_or(u64::MAX);
        let mut looked_at = store::now_us();
        // What was applied since the last look's margin (nothing twice).
        let mut learned: std::collections::HashMap<String, (PublicKey, u64)> =
            std::collections::HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            if last_beat.is_none_or(|at| at.elapsed() >= HEARTBEAT_EVERY) {
                if let Err(e) = store.set_heartbeat(Some(store::now_us())) {
                    tracing::warn!(error = %e, "heartbeat not written");
                }
                last_beat = Some(std::time::Instant::now());
                if let Some(learn) = learn.as_mut() {
                    let since = looked_at.saturating_sub(margin);
                    let now = store::now_us();
                    match store.bound_since(since) {
                        Ok(rows) => {
                            for (name, key, at) in rows {
                                if learned.get(&name).is_some_and(|(k, _)| *k == key) {
                                    continue;
                                }
                                tracing::info!(%name, key = %key_hex(&key), "binding from the shared store applied");
                                learned.insert(name.clone(), (key, at));
                                learn(name, key);
                            }
                            learned.retain(|_, (_, at)| *at >= since);
                            looked_at = now;
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot read the shared bindings"),
                    }
                }
            }
            if last_prune.elapsed() >= COMMAND_KEEP / 4 {
                let _ = store.prune_commands(COMMAND_KEEP);
                last_prune = std::time::Instant::now();
            }
            match store.pending_commands() {
                Ok(pending) => {
                    // Deferred commands stay pending until answered: not again.
                    deferred.retain(|id| pending.iter().any(|c| c.id == *id));
                    for command in pending {
                        let id = command.id;
                        if deferred.contains(&id) {
                            continue;
                        }
                        match apply(command) {
                            None => return,
                            Some(Applied::Deferred) => {
                                deferred.insert(id);
                            }
                            Some(Applied::Answer(result)) => {
                                if let Err(e) = store.finish_command(id, &result) {
                                    tracing::warn!(error = %e, "command result not written");
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read operator commands"),
            }
            std::thread::sleep(COMMAND_POLL);
        }
        let _ = store.set_heartbeat(None);
    })
}

/// Where a server's store is: `--store` if given, else the data dir's file.
pub fn server_store_location(
    data_dir: &Path,
    store: Option<&str>,
) -> Result<StoreLocation, CliError> {
    StoreLocation::from_args(Some(data_dir), store).map_err(CliError::usage)
}

/// The store connection the command poller uses (cheap commits: it writes
/// only heartbeats and answers); `owner` as for [`load_server_store`].
pub fn open_poll_store(
    location: &StoreLocation,
    owner: &str,
) -> Result<Box<dyn ServerStore>, CliError> {
    let store = location.open(owner).map_err(store_error)?;
    store.relax_durability().map_err(store_error)?;
    Ok(store)
}

/// Opens (creating or migrating if needed) the session server's store and
/// rebuilds what it starts from (bindings in the trust mode `--closed`
/// chose, live sessions), logging what was skipped and loaded. `owner`
/// names this server in a shared store (its public key): it restores the
/// live sessions it started. Returns the state and the store for the journal.
pub fn load_server_store(
    location: &StoreLocation,
    owner: &str,
    closed: bool,
) -> Result<(ServerState, Box<dyn ServerStore>), CliError> {
    let mode = if closed {
        TrustMode::Closed
    } else {
        TrustMode::TrustOnFirstUse
    };
    let store = location.create(owner).map_err(store_error)?;
    let state = store.server_state(mode).map_err(store_error)?;
    for (name, why) in &state.skipped {
        tracing::warn!(%name, error = %why, "stored binding not restored");
    }
    let live = state
        .live
        .iter()
        .filter(|f| matches!(f, SessionFact::SessionStarted(_)))
        .count();
    tracing::info!(
        store = %location.describe(),
        names = state.registry.bindings().count(),
        live_sessions = live,
        "store loaded"
    );
    Ok((state, store))
}

/// The trigger server's configuration from `--keepalive` and
/// `--keepalive-limit`.
pub fn trigger_config(keepalive: Option<Duration>, limit: Option<Limit>) -> TriggerConfig {
    let mut config = TriggerConfig::default();
    if let Some(interval) = keepalive {
        config.keepalive_interval = interval;
    }
    if let Some(limit) = limit {
        config.keepalive_limit = limit;
    }
    config
}

/// A server's identity in its data dir: the dir's lock (held for the
/// server's life) and its secret key, read or created.
#[derive(Debug)]
pub struct ServerIdentity {
    /// The data dir's lock: drop it only when the server has stopped.
    pub lock: DataDirLock,
    /// The server's secret key.
    pub secret: SecretKey,
    /// Whether the key was created now.
    pub created: bool,
}

/// Creates and locks `dir`, then reads or creates the key `secret_name`
/// (its public half rewritten to `public_name`).
pub fn server_identity(
    dir: &Path,
    secret_name: &str,
    public_name: &str,
) -> Result<ServerIdentity, CliError> {
    let lock = ensure_locked_data_dir(dir)?;
    let (secret, created) = server_key(dir, secret_name, public_name)?;
    Ok(ServerIdentity {
        lock,
        secret,
        created,
    })
}

/// What `server` starts from, checked in the order errors are reported:
/// the policy, then the data dir, its lock and both keys.
#[derive(Debug)]
pub struct CombinedSetup {
    /// The session policy.
    pub config: SessionConfig,
    /// The session server's identity (and the dir's lock).
    pub session: ServerIdentity,
    /// The trigger server's secret key (same data dir).
    pub trigger_secret: SecretKey,
    /// The trigger server's configuration.
    pub trigger_config: TriggerConfig,
}

/// Checks `server`'s flags and prepares its data dir and keys.
pub fn prepare_server(args: &ServerArgs) -> Result<CombinedSetup, CliError> {
    let config = session_config(&args.policy)?;
    let session = server_identity(&args.data_dir, SERVER_KEY_FILE, SERVER_PUB_FILE)?;
    let (trigger_secret, _) = server_key(&args.data_dir, TRIGGER_KEY_FILE, TRIGGER_PUB_FILE)?;
    Ok(CombinedSetup {
        config,
        session,
        trigger_secret,
        trigger_config: trigger_config(args.keepalive, args.keepalive_limit),
    })
}

/// What `session-server` starts from.
#[derive(Debug)]
pub struct SessionSetup {
    /// The session policy.
    pub config: SessionConfig,
    /// The trigger server's key it links to.
    pub trigger_key: PublicKey,
    /// Its identity (and the dir's lock).
    pub identity: ServerIdentity,
}

/// Checks `session-server`'s flags (policy, then the trigger key) and
/// prepares its data dir and key.
pub fn prepare_session_server(args: &SessionServerArgs) -> Result<SessionSetup, CliError> {
    let config = session_config(&args.policy)?;
    let trigger_key = public_key_arg(&args.trigger_key)?;
    let identity = server_identity(&args.data_dir, SERVER_KEY_FILE, SERVER_PUB_FILE)?;
    Ok(SessionSetup {
        config,
        trigger_key,
        identity,
    })
}

/// What `trigger-server` starts from.
#[derive(Debug)]
pub struct TriggerSetup {
    /// The session servers allowed to link.
    pub allowed: Vec<PublicKey>,
    /// Its identity (and the dir's lock).
    pub identity: ServerIdentity,
    /// Its configuration.
    pub config: TriggerConfig,
}

/// Checks `trigger-server`'s flags (the allowed keys) and prepares its
/// data dir and key.
pub fn prepare_trigger_server(args: &TriggerServerArgs) -> Result<TriggerSetup, CliError> {
    let allowed = args
        .session_server_keys
        .iter()
        .map(|k| public_key_arg(k))
        .collect::<Result<Vec<PublicKey>, CliError>>()?;
    let identity = server_identity(&args.data_dir, TRIGGER_KEY_FILE, TRIGGER_PUB_FILE)?;
    Ok(TriggerSetup {
        allowed,
        identity,
        config: trigger_config(args.keepalive, args.keepalive_limit),
    })
}

/// `server`'s first lines once both roles listen.
pub fn combined_up(
    args: &ServerArgs,
    key: &PublicKey,
    created: bool,
    control: SocketAddr,
    trigger: SocketAddr,
) {
    announce_key(
        "server key",
        key,
        created,
        &args.data_dir.join(SERVER_PUB_FILE),
    );
    println!("control: {control}");
    println!("trigger: {trigger}");
    announce_invite(args, key, control, trigger);
    tracing::info!(%control, %trigger, closed = args.policy.closed, "servers up");
}

/// `server`'s invite: stored in the data dir and printed, or why there is none.
fn announce_invite(args: &ServerArgs, key: &PublicKey, control: SocketAddr, trigger: SocketAddr) {
    use super::invite;
    let invite = invite::server_invite(control, trigger, args.public_addr.as_ref(), key);
    if let Err(e) = invite::store_invite(&args.data_dir, invite.as_ref()) {
        tracing::warn!(error = %e, "invite not stored");
    }
    match &invite {
        Some(invite) => {
            if let Err(e) = invite::print_invite(invite, args.qr) {
                tracing::warn!(error = %e, "invite not shown");
            }
        }
        None => println!(
            "invite: none: the server listens on every address; give --public-addr HOST (the address devices reach it at) for an invite"
        ),
    }
    if args.policy.closed {
        println!(
            "closed server: enrol each device's key first (`tryst enroll NAME PUBKEY --data-dir {}`), or give a device a one-time invite (`tryst invite --data-dir {} --enrol NAME`)",
            args.data_dir.display(),
            args.data_dir.display()
        );
    }
}

/// `session-server`'s first lines once it listens.
pub fn session_up(args: &SessionServerArgs, key: &PublicKey, created: bool, control: SocketAddr) {
    announce_key(
        "server key",
        key,
        created,
        &args.data_dir.join(SERVER_PUB_FILE),
    );
    println!("control: {control}");
    println!("trigger link: {}", args.trigger_link);
    tracing::info!(%control, trigger_link = %args.trigger_link, "session server up");
}

/// `trigger-server`'s first lines once it listens.
pub fn trigger_up(
    args: &TriggerServerArgs,
    key: &PublicKey,
    created: bool,
    udp: SocketAddr,
    link: SocketAddr,
) {
    announce_key(
        "trigger key",
        key,
        created,
        &args.data_dir.join(TRIGGER_PUB_FILE),
    );
    println!("trigger: {udp}");
    println!("link: {link}");
    tracing::info!(trigger = %udp, %link, "trigger server up");
}

/// The answer stored for an operator command this server cannot read.
pub const UNKNOWN_COMMAND: &str = "not a command this server knows";

/// A key in log lines: its first 16 hex digits (enough to tell keys apart).
pub fn short(key: &PublicKey) -> String {
    key_hex(key).chars().take(16).collect()
}

/// A device ID in log lines and output: 16 hex digits, as the terminal prints it.
pub fn device_hex(device_id: tryst_core::wire::DeviceId) -> String {
    format!("{:016x}", device_id.0)
}

/// Most device names a combined server remembers for its trigger log lines.
pub const MAX_DEVICE_NAMES: usize = 1 << 16;

/// The names of the devices that registered, by device ID, so a trigger
/// server line can name the device next to its ID (only the combined
/// `server` knows both; a lone trigger server prints `-`). Bounded by
/// [`MAX_DEVICE_NAMES`]: past it, new devices go unnamed in the log.
#[derive(Debug, Default)]
pub struct DeviceNames(std::collections::BTreeMap<u64, String>);

impl DeviceNames {
    /// Notes a registration's name for its device ID.
    pub fn note(&mut self, event: &SessionEvent) {
        if let SessionEvent::Registered {
            name,
            udp_device_id,
            ..
        } = event
        {
            if self.0.len() < MAX_DEVICE_NAMES || self.0.contains_key(&udp_device_id.0) {
                self.0.insert(udp_device_id.0, name.to_string());
            }
        }
    }

    /// The name of `device_id`, or `-` if unknown here.
    pub fn of(&self, device_id: tryst_core::wire::DeviceId) -> &str {
        self.0.get(&device_id.0).map_or("-", String::as_str)
    }
}

/// One info line per protocol event of the session server (no secrets:
/// events carry public keys and names only). Keys are [`short`], device
/// IDs [`device_hex`], durations in seconds.
pub fn log_session_event(event: &SessionEvent) {
    match event {
        SessionEvent::NameBound { name, key } => {
            tracing::info!(%name, key = %short(key), "name bound to its first key");
        }
        SessionEvent::EnrolCodeUsed { name, key, .. } => {
            tracing::info!(%name, key = %short(key), "enrolled by a one-time invite code");
        }
        SessionEvent::NameSeen { name, .. } => {
            tracing::debug!(%name, "binding seen");
        }
        SessionEvent::NameUnbound { name, key } => {
            tracing::info!(%name, key = %short(key), "binding expired unused: the name is free");
        }
        // Seed S702, 801/802.
        SessionEvent::Registered {
            name,
            udp_device_id,
            mode,
            ..
        } => {
            tracing::info!(%name, device = %device_hex(*udp_device_id), ?mode, "registered");
        }
        SessionEvent::RegistrationRefused { name, key, reason } => {
            tracing::info!(%name, key = %short(key), ?reason, "registration refused");
        }
        SessionEvent::ImpersonationAttempt(a) => {
            tracing::warn!(name = %a.name, key = %short(&a.presented_key), "impersonation attempt");
        }
        // Seed S511.
        SessionEvent::RequestDenied {
            requester,
            target,
            request_id,
            reason,
        } => {
            tracing::info!(%requester, %target, request_id, ?reason, "request denied");
        }
        // Seed S508-S510.
        SessionEvent::SessionStarted(s) => {
            tracing::info!(session = %store::id_hex(&s.session_id), requester = %s.requester, target = %s.target, duration_secs = s.duration_secs, "session started");
        }
        // Seed S1602/S1603.
        SessionEvent::SessionExtended(x) => {
            tracing::info!(session = %store::id_hex(&x.session_id), duration_secs = x.duration_secs, extensions = x.extensions, "session extended");
        }
        // Seed S1606.
        SessionEvent::SessionRecord(r) => {
            tracing::info!(
                session = %store::id_hex(&r.session_id),
                requester = %r.requester,
                target = %r.target,
                duration_secs = r.duration.as_secs(),
                extensions = r.extensions,
                bytes = r.bytes_requester_to_target().saturating_add(r.bytes_target_to_requester()),
                reason = store::reason_name(r.reason),
                "session recorded"
            );
        }
        // Seed S1606: a side's report after the record joins it.
        SessionEvent::LateReport(l) => {
            tracing::info!(session = %store::id_hex(&l.session_id), party = ?l.party, bytes_sent = l.report.bytes_sent, bytes_received = l.report.bytes_received, "late end notification added to the record");
        }
        SessionEvent::ForcedEndStarted { session_id } => {
            tracing::debug!(session = %store::id_hex(session_id), "forced end: end triggers sent");
        }
        // Seed S1605.
        SessionEvent::ForcedEndSettled(f) => {
            tracing::info!(
                session = %store::id_hex(&f.session_id),
                requester = %f.requester,
                requester_end = ?f.requester_end,
                target = %f.target,
                target_end = ?f.target_end,
                "forced end settled"
            );
        }
        SessionEvent::UpstreamEstablished => tracing::info!("linked to the trigger server"),
        SessionEvent::SessionSetUp { session_id, took } => {
            tracing::debug!(session = %store::id_hex(session_id), took_ms = took.as_millis() as u64, "session set up");
        }
    }
}

/// One info line per protocol event of the trigger server; `names` puts
/// the device's name next to its ID where this process knows it.
pub fn log_trigger_event(event: &TriggerEvent, names: &DeviceNames) {
    match event {
        TriggerEvent::AddressChanged { device_id, addr } => {
            tracing::info!(device = %device_hex(*device_id), name = names.of(*device_id), %addr, "observed address (keepalive)");
        }
        TriggerEvent::AddressExpired { device_id } => {
            tracing::info!(device = %device_hex(*device_id), name = names.of(*device_id), "address expired: device offline");
        }
        TriggerEvent::KeyInstalled { device_id } => {
            tracing::info!(device = %device_hex(*device_id), name = names.of(*device_id), "udp key installed");
        }
        TriggerEvent::KeyInstallRefused { device_id } => {
            tracing::warn!(device = %device_hex(*device_id), name = names.of(*device_id), "udp key refused: table full");
        }
        TriggerEvent::KeyRevoked { device_id } => {
            tracing::info!(device = %device_hex(*device_id), name = names.of(*device_id), "udp key revoked");
        }
        TriggerEvent::SessionServerLinked { key } => {
            tracing::info!(key = %short(key), "session server linked");
        }
        TriggerEvent::LinkRefused { key, .. } => {
            tracing::warn!(key = %short(key), "link refused: unknown session server key");
        }
        // Seed S603, 807.
        TriggerEvent::TriggerDelivered { op_id, device_id } => {
            tracing::info!(op_id, device = %device_hex(*device_id), name = names.of(*device_id), "trigger delivered");
        }
        TriggerEvent::TriggerUnacknowledged { op_id, device_id } => {
            tracing::info!(op_id, device = %device_hex(*device_id), name = names.of(*device_id), "trigger unacknowledged");
        }
        TriggerEvent::Offline { op_id, device_id } => {
            tracing::info!(op_id, device = %device_hex(*device_id), name = names.of(*device_id), "trigger for an offline device");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s301_keepalive_limit_parses_burst_and_interval_and_refuses_the_rest() {
        assert_eq!(
            parse_limit("100,1s"),
            Ok(Limit::one_every(100, Duration::from_secs(1)))
        );
        assert_eq!(
            parse_limit("4 , 5s"),
            Ok(Limit::one_every(4, Duration::from_secs(5)))
        );
        for bad in ["", "4", "0,1s", "4,0s", "x,1s", "4,soon", "-1,1s", "4/5s"] {
            assert!(parse_limit(bad).is_err(), "{bad:?} accepted");
        }
        let config = trigger_config(None, parse_limit("1000,1ms").ok());
        assert_eq!(config.keepalive_limit.capacity(), 1000);
    }
}
