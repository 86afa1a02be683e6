//! `tryst terminal`, written once for both binaries: its flags, its state
//! dir, the control-socket protocol and [`run`], blocking code over the
//! binary's [`Driver`].
//! The terminal is the long-running device (seed: connected terminal 1).
//!
//! It keeps its key and its permission list L in its state directory
//! (created on first start, mode 0700), registers with the session server,
//! keeps its NAT mapping alive with the trigger server, answers triggers
//! and accepts the peers its list permits. `tryst allow` edits the list of
//! a running terminal through a unix socket in the state directory (the
//! list file is the truth; the socket only says "read it again").
//!
//! Files in the state directory:
//! - `terminal.key` (mode 0600) and `terminal.pub`: the terminal's identity;
//! - `allow.list`: the permission list, one name a line;
//! - `control.sock`: the running daemon's control socket;
//! - `allow.lock`: held while `tryst allow` edits the list.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::keyfile::{self, IfExists, KeyFileError};
use tryst_core::crypto::StaticKeypair;
use tryst_core::identity::SecretKey;
use tryst_core::peer::session::PeerEvent;
use tryst_core::terminal::{
    JudgePolicy, TerminalConfig, TerminalEvent, MAX_PERMISSIONS, MAX_SESSION_SERVERS,
};
use tryst_core::wire::{DecisionMode, EndReason, Name, PublicKey, SessionId};

use super::control::{ControlContext, ControlHub};
use super::driver::Driver;
use super::signals::{self, Next, StopSignal, StopSignals};
use super::transfer::{hex, human_bytes};
use super::CliError;
use crate::observe::http::{serve_blocking, HttpListener, HttpRequest, HttpResponse};
use crate::observe::metrics::{self, TerminalMetrics};
use crate::role::terminal::{Event, TerminalHandle, TerminalOptions};
use crate::store::id_hex;

/// The terminal's secret key file in its state directory.
pub const KEY_FILE: &str = "terminal.key";
/// The terminal's public key file in its state directory.
pub const PUBLIC_KEY_FILE: &str = "terminal.pub";
/// The permission list file in the state directory: one name a line.
pub const PERMISSIONS_FILE: &str = "allow.list";
/// The running daemon's control socket in the state directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// The lock file `tryst allow` holds while it edits the list.
pub const LOCK_FILE: &str = "allow.lock";
/// Longest the permission list file may be (every name at its longest).
pub const MAX_PERMISSIONS_FILE_LEN: u64 = 64 * 1024;
/// How long a daemon has to answer a control request.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping terminal waits for its end notifications to leave.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Who judges the requests aimed at this terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// First embodiment: the session server fetches this terminal's list and searches it.
    List,
    /// Second embodiment: the server names the requester and this terminal answers from its list.
    Judge,
}

/// Where and how to reach the servers, and where the terminal keeps its state:
/// the flags `tryst terminal` and `tryst connect` share.
#[derive(Debug, Clone, clap::Args)]
pub struct TerminalCommon {
    /// The invite `tryst server` or `tryst invite` printed: it gives
    /// --server, --trigger, --server-key (and --name if it names the device).
    #[arg(long, value_name = "INVITE", conflicts_with_all = ["server", "trigger", "server_key"])]
    pub invite: Option<String>,
    /// This terminal's device name.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// The session server's control address (TCP), e.g. 127.0.0.1:7400
    /// (not needed with --invite). Several (repeated, or a comma list):
    /// the session servers of one cluster, tried in order, the next when
    /// one is down or refuses the handshake.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr, value_delimiter = ',',
          required = true)]
    pub server: Vec<SocketAddr>,
    /// The trigger server's address (UDP), e.g. 127.0.0.1:7401.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub trigger: SocketAddr,
    /// The session server's public key: 64 hex digits, or a file holding it
    /// (the server writes `server.pub` in its data dir). With several
    /// --server: one key for all (servers sharing a key file), or one per
    /// --server in the same order (repeated, or a comma list).
    #[arg(
        long = "server-key",
        value_name = "KEY|FILE",
        value_delimiter = ',',
        required = true
    )]
    pub server_key: Vec<String>,
    /// Where the terminal keeps its key and permission list (created if missing).
    #[arg(long = "state-dir", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The local UDP address (keepalives and the peer path); any port by default.
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// Share of a session's permitted duration, in percent (1-100), at
    /// which a session still in use (a file moving, datagrams in the last
    /// 5 s, or `connect --live` holding it) asks for more time.
    #[arg(long = "extension-threshold", value_name = "PERCENT",
          default_value_t = tryst_core::terminal::DEFAULT_EXTENSION_THRESHOLD_PERCENT,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub extension_threshold: u8,
    /// How much more time an extension asks for (e.g. 30s, 5m); the
    /// session's original duration when absent.
    #[arg(long = "extension-step", value_name = "DUR", value_parser = super::connect::parse_session_duration)]
    pub extension_step: Option<std::time::Duration>,
    /// The most partial files of cut transfers kept per peer, to resume
    /// (0 keeps none); past it, that peer's oldest go first, never another
    /// peer's. Through a running daemon, the daemon's cap applies.
    #[arg(long = "max-partials", value_name = "N",
          default_value_t = crate::transfer::DEFAULT_MAX_PARTIALS)]
    pub max_partials: usize,
    /// The most bytes of kept partial files per peer (e.g. 500M, 4G); past
    /// it, that peer's oldest go first.
    #[arg(long = "max-partial-bytes", value_name = "SIZE",
          default_value_t = crate::transfer::DEFAULT_MAX_PARTIAL_BYTES,
          value_parser = super::transfer::parse_size)]
    pub max_partial_bytes: u64,
}

impl TerminalCommon {
    /// What is kept of each peer's cut transfers (`--max-partials`,
    /// `--max-partial-bytes`).
    pub fn partial_limits(&self) -> crate::transfer::PartialLimits {
        crate::transfer::PartialLimits {
            files: self.max_partials,
            bytes: self.max_partial_bytes,
        }
    }

    /// The first session server's address (the one tried first).
    pub fn first_server(&self) -> Result<SocketAddr, CliError> {
        self.server
            .first()
            .copied()
            .ok_or_else(|| CliError::usage("--server is required"))
    }

    /// The session servers' addresses as the messages name them.
    pub fn servers_text(&self) -> String {
        let all: Vec<String> = self.server.iter().map(ToString::to_string).collect();
        all.join(", ")
    }

    /// One key per --server: the one --server-key given for all, or the
    /// keys in --server's order.
    pub fn server_keys(&self) -> Result<Vec<PublicKey>, CliError> {
        if self.server.len() > MAX_SESSION_SERVERS {
            return Err(CliError::usage(format!(
                "more than {MAX_SESSION_SERVERS} --server"
            )));
        }
        let keys = self
            .server_key
            .iter()
            .map(|k| keyfile::read_public_key(k).map_err(CliError::usage))
            .collect::<Result<Vec<PublicKey>, CliError>>()?;
        match keys.as_slice() {
            [one] => Ok(vec![*one; self.server.len().max(1)]),
            _ if keys.len() == self.server.len() => Ok(keys),
            _ => Err(CliError::usage(format!(
                "{} --server-key for {} --server: give one key for all, or one per --server",
                keys.len(),
                self.server.len()
            ))),
        }
    }
}

/// `tryst terminal`: run the device.
#[derive(Debug, clap::Args)]
pub struct TerminalArgs {
    #[command(flatten)]
    pub common: TerminalCommon,
    /// A name that may connect (added to the stored permission list); repeatable.
    #[arg(long = "allow", value_name = "NAME")]
    pub allow: Vec<String>,
    /// Who judges requests: `list` (the server searches this terminal's
    /// list) or `judge` (the terminal is asked and answers from its list).
    #[arg(long, value_enum, default_value_t = Mode::List)]
    pub mode: Mode,
    /// Where files sent by permitted peers are stored.
    #[arg(long = "recv-dir", value_name = "DIR")]
    pub recv_dir: Option<PathBuf>,
    /// Serve this terminal's Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// A folder permitted peers may list and fetch from (`tryst connect
    /// --list`, `--get`), read-only: hidden files and symlinks are never
    /// listed or served, and nothing outside it is.
    #[arg(long = "share", value_name = "DIR")]
    pub share: Option<PathBuf>,
    /// The most a shared file is sent at, in bytes a second (e.g. 500K,
    /// 20M), so that a fetch leaves room on the uplink.
    #[arg(long = "limit-rate", value_name = "RATE", value_parser = super::transfer::parse_rate)]
    pub limit_rate: Option<u64>,
    /// A command (run with `sh -c`, no stdin, its stderr to this log) whose
    /// stdout a permitted peer gets as real-time datagrams when it asks
    /// (`tryst connect --live`); it starts with the peer's request and is
    /// killed when the session ends.
    #[arg(long = "live-from", value_name = "CMD")]
    pub live_from: Option<String>,
    /// Bytes of each live datagram (1 to 1200).
    #[arg(long, value_name = "BYTES", default_value_t = crate::transfer::live::DEFAULT_FRAME,
          value_parser = parse_frame)]
    pub frame: usize,
}

/// Parses a live frame size: 1 to [`crate::transfer::live::MAX_FRAME`] bytes.
pub fn parse_frame(text: &str) -> Result<usize, String> {
    let max = crate::transfer::live::MAX_FRAME;
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("a frame is 1 to {max} bytes")),
    }
}

/// Parses `host:port` (an IP address or a name resolved now).
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|e| format!("not an address: {e}"))?
        .next()
        .ok_or_else(|| "the name has no address".to_owned())
}

/// The terminal's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Opens `path`, creating it (mode 0700) if missing; refuses one that
    /// group or others may write, or that another user owns.
    pub fn open(path: &Path) -> Result<StateDir, CliError> {
        if !path.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(path).map_err(|e| {
                CliError::usage(format!("cannot create state dir {}: {e}", path.display()))
            })?;
        }
        if !path.is_dir() {
            return Err(CliError::usage(format!(
                "state dir {} is not a directory",
                path.display()
            )));
        }
        // Whoever may write here may swap the key or the permission list.
        keyfile::check_private_dir(path).map_err(|e| CliError::usage(format!("state dir: {e}")))?;
        Ok(StateDir {
            path: path.to_path_buf(),
        })
    }

    /// A file in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The terminal's key pair: read from `terminal.key`, or created there
    /// (mode 0600, with `terminal.pub` beside it) on first start.
    pub fn keypair(&self) -> Result<StaticKeypair, CliError> {
        let path = self.file(KEY_FILE);
        match keyfile::read_secret_key(&path) {
            Ok(secret) => return Ok(secret.keypair()),
            Err(KeyFileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CliError::usage(e)),
        }
        let secret = SecretKey::generate(&mut rand_core::OsRng);
        match keyfile::write_secret_key(&path, &secret, IfExists::Refuse) {
            Ok(()) => {}
            // Another process created it first: use that one.
            Err(KeyFileError::AlreadyExists { .. }) => {
                return keyfile::read_secret_key(&path)
                    .map(|s| s.keypair())
                    .map_err(CliError::usage)
            }
            Err(e) => return Err(CliError::usage(e)),
        }
        keyfile::write_public_key(
            &self.file(PUBLIC_KEY_FILE),
            &secret.public_key(),
            IfExists::Replace,
        )
        .map_err(CliError::usage)?;
        tracing::info!(path = %path.display(), "created the terminal's key");
        Ok(secret.keypair())
    }

    /// The stored permission list (empty if there is none yet).
    pub fn permissions(&self) -> Result<Vec<String>, CliError> {
        read_permissions(&self.file(PERMISSIONS_FILE))
    }

    /// Stores the permission list atomically.
    pub fn store_permissions(&self, names: &[String]) -> Result<(), CliError> {
        write_permissions(&self.file(PERMISSIONS_FILE), names)
    }

    /// Takes the edit lock of the permission list.
    pub fn lock(&self) -> Result<EditLock, CliError> {
        EditLock::take(self.file(LOCK_FILE))
    }
}

/// Checks a device name for the permission list (which also must not
/// start with `#` or blank space, so it reads back from the list file as
/// it was written).
pub fn check_name(name: &str) -> Result<(), CliError> {
    Name::new(name)
        .map_err(|e| CliError::usage(format!("{name:?} is not a valid device name: {e}")))?;
    if name.starts_with('#') || name.trim() != name {
        return Err(CliError::usage(format!(
            "{name:?}: a name on the permission list may not start with '#' or blank space"
        )));
    }
    Ok(())
}

/// Reads a permission list file: one name a line, blank lines and lines
/// starting with `#` ignored, duplicates kept once.
pub fn read_permissions(path: &Path) -> Result<Vec<String>, CliError> {
    let text = match std::fs::metadata(path) {
        Ok(meta) if meta.len() > MAX_PERMISSIONS_FILE_LEN => {
            return Err(CliError::usage(format!(
                "{}: too large for a permission list",
                path.display()
            )))
        }
        Ok(_) => std::fs::read_to_string(path)
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CliError::usage(format!("{}: {e}", path.display()))),
    };
    let mut names = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        check_name(line).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
        // Held in the canonical form the server sends requester names in,
        // so `Phone` on the list permits the device `phone`.
        let name = tryst_core::names::canonical(line).map_err(|e| {
            CliError::usage(format!("{}: {line:?}: {e} once normalised", path.display()))
        })?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.len() > MAX_PERMISSIONS {
        return Err(CliError::usage(format!(
            "{}: more than {MAX_PERMISSIONS} names",
            path.display()
        )));
    }
    Ok(names)
}

/// Writes a permission list file atomically: a temporary file in the same
/// directory, flushed to disk, renamed over the old one, directory synced.
pub fn write_permissions(path: &Path, names: &[String]) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::failed(format!("{}: {e}", path.display()));
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{PERMISSIONS_FILE}.{}.tmp", std::process::id()));
    let mut text = String::from("# tryst permission list: names that may connect, one a line\n");
    for name in names {
        text.push_str(name);
        text.push('\n');
    }
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

/// The permission list's edit lock: a file created exclusively, removed on drop.
#[derive(Debug)]
pub struct EditLock {
    path: PathBuf,
}

/// How long `tryst allow` waits for another edit to finish.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// A lock file older than this was left by a process that died.
const STALE_LOCK: Duration = Duration::from_secs(30);

impl EditLock {
    fn take(path: PathBuf) -> Result<EditLock, CliError> {
        let started = std::time::Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Ok(EditLock { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE_LOCK);
                    if stale {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if started.elapsed() > LOCK_WAIT {
                        return Err(CliError::failed(format!(
                            "{} is held by another edit",
                            path.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(CliError::failed(format!("{}: {e}", path.display()))),
            }
        }
    }
}

impl Drop for EditLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The terminal configuration both `tryst terminal` and `tryst connect` use.
pub fn config(common: &TerminalCommon, mode: Mode) -> Result<TerminalConfig, CliError> {
    let keys = common.server_keys()?;
    let (server_key, failover) = keys
        .split_first()
        .ok_or_else(|| CliError::usage("--server-key is required"))?;
    let mut config =
        TerminalConfig::new(&common.name, common.trigger, *server_key).map_err(|e| {
            CliError::usage(format!("{:?} is not a valid device name: {e}", common.name))
        })?;
    for key in failover {
        config
            .failover_server_keys
            .push(*key)
            .map_err(|_| CliError::usage(format!("more than {MAX_SESSION_SERVERS} --server")))?;
    }
    config.mode = match mode {
        Mode::List => DecisionMode::PermissionList,
        Mode::Judge => DecisionMode::TerminalJudges,
    };
    config.judge = JudgePolicy::List;
    config.extension_threshold_percent = common.extension_threshold;
    config.extension_secs = match common.extension_step {
        None => None,
        Some(step) => Some(
            super::connect::duration_secs(Some(step))
                .map_err(|_| CliError::usage("--extension-step is too long"))?,
        ),
    };
    if let Some(text) = &common.invite {
        let invite = super::invite::Invite::decode(text)
            .map_err(|e| CliError::usage(format!("--invite: {e}")))?;
        config.enrol_code = invite.code;
    }
    Ok(config)
}

/// What a refused registration means for the operator: the name is not
/// this key's, or (when the terminal sent an invite's enrolment code) the
/// code was not accepted.
pub fn refused_message(name: &str, enrolling: bool) -> String {
    if enrolling {
        format!(
            "the session server refused the name {name} for this key: the enrolment code was not accepted (used, expired or wrong); ask the operator for a new invite (`tryst invite --enrol {name}`)"
        )
    } else {
        format!("the session server refused the name {name} for this key")
    }
}

/// The local UDP address: `--bind`, or any port on the trigger server's family.
pub fn bind_addr(common: &TerminalCommon) -> SocketAddr {
    common.bind.unwrap_or_else(|| {
        if common.trigger.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        }
    })
}

/// Refuses a state directory that a running terminal uses: two terminals
/// with one key would take each other's registration.
pub fn refuse_if_running(state: &StateDir) -> Result<(), CliError> {
    if UnixStream::connect(state.file(CONTROL_SOCKET)).is_ok() {
        return Err(CliError::usage(format!(
            "a terminal already runs with state dir {}; give this one its own --state-dir",
            state.path.display()
        )));
    }
    Ok(())
}

/// Makes way for a daemon's control socket: refuses if a daemon already
/// answers on it, removes one left by a terminal that did not stop
/// cleanly. The caller binds [`CONTROL_SOCKET`] next.
pub fn prepare_control_socket(state: &StateDir) -> Result<PathBuf, CliError> {
    let path = state.file(CONTROL_SOCKET);
    if path.exists() {
        refuse_if_running(state)?;
        let _ = std::fs::remove_file(&path);
    }
    Ok(path)
}

/// Asks the daemon with this state directory, if one runs, to read its
/// permission list again. `Ok(None)`: no daemon runs; `Ok(Some(count))`: it
/// applied the list of `count` names.
pub fn reload_daemon(state: &StateDir) -> Result<Option<usize>, CliError> {
    super::control::reload(state)
}

/// What `tryst terminal` starts from, read and checked before any socket
/// is bound: its state dir, configuration, key pair and permission list
/// (the stored list plus the `--allow` names, stored back).
pub struct TerminalSetup {
    /// The state directory.
    pub state: StateDir,
    /// The terminal's configuration from the flags.
    pub config: TerminalConfig,
    /// Its identity (created on first start).
    pub keypair: StaticKeypair,
    /// The permission list it starts with.
    pub names: Vec<String>,
}

impl std::fmt::Debug for TerminalSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key pair holds the secret key: never printed.
        f.debug_struct("TerminalSetup")
            .field("state", &self.state)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// Checks the flags, opens the state dir, reads or creates the key, and
/// merges `--allow` into the stored permission list (under its edit lock).
pub fn prepare_terminal(args: &TerminalArgs) -> Result<TerminalSetup, CliError> {
    let state = StateDir::open(&args.common.state_dir)?;
    let config = config(&args.common, args.mode)?;
    for name in &args.allow {
        check_name(name)?;
    }
    if let Some(dir) = &args.recv_dir {
        crate::transfer::check_recv_dir(dir).map_err(CliError::usage)?;
        let swept = crate::transfer::sweep_partials(dir);
        if swept > 0 {
            println!("removed {swept} partial file(s) of interrupted transfers");
        }
    }
    if let Some(dir) = &args.share {
        crate::transfer::share::Share::open(dir).map_err(CliError::usage)?;
    }
    let keypair = state.keypair()?;
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
    Ok(TerminalSetup {
        state,
        config,
        keypair,
        names,
    })
}

/// What a running terminal prints for its operator (stdout, one line an
/// event), and which of its sessions are live (to end them at a stop).
/// The live set holds only sessions the core made ready, so the core's
/// own session bound bounds it.
#[derive(Debug)]
pub struct TerminalLines {
    name: String,
    live: BTreeSet<[u8; 16]>,
    /// It registers with an invite's enrolment code.
    enrolling: bool,
}

impl TerminalLines {
    /// Lines for the terminal called `name`.
    pub fn new(name: &str) -> TerminalLines {
        TerminalLines {
            name: name.to_owned(),
            live: BTreeSet::new(),
            enrolling: false,
        }
    }

    /// Says the terminal registers with an enrolment code (so a refusal
    /// says the code was not accepted).
    pub fn with_enrol_code(mut self, enrolling: bool) -> TerminalLines {
        self.enrolling = enrolling;
        self
    }

    /// The first lines, once the UDP socket is bound: key, address, list.
    pub fn started(&self, public: &PublicKey, udp: SocketAddr, names: &[String]) {
        println!(
            "terminal {}: public key {}",
            self.name,
            tryst_core::identity::format_public_key(public).hex()
        );
        println!(
            "  udp {udp}, permission list: {}",
            if names.is_empty() {
                "(empty)".to_owned()
            } else {
                names.join(", ")
            }
        );
    }

    /// Prints what a terminal event means for the operator; `Some` stops
    /// the daemon (its name was refused for its key).
    pub fn terminal_event(&mut self, event: TerminalEvent) -> Option<CliError> {
        match event {
            TerminalEvent::Registered { device_id } => {
                println!("registered as {} (device {:016x})", self.name, device_id.0);
            }
            TerminalEvent::Online { observed } => {
                println!("online: the trigger server sees this terminal at {observed}");
            }
            TerminalEvent::RegistrationRefused => {
                return Some(CliError::failed(refused_message(
                    &self.name,
                    self.enrolling,
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
                self.live.insert(session_id.0);
                println!(
                    "session {} with {peer_name} for {duration_secs} s",
                    id_hex(&session_id)
                );
            }
            TerminalEvent::SessionExtended {
                session_id,
                duration_secs,
            } => {
                println!(
                    "session {} extended to {duration_secs} s",
                    id_hex(&session_id)
                );
            }
            TerminalEvent::SessionEnded {
                session_id,
                reason,
                bytes_received,
                ..
            } => {
                self.live.remove(&session_id.0);
                println!(
                    "session {} ended: {reason:?} ({bytes_received} bytes received)",
                    id_hex(&session_id)
                );
            }
            _ => {}
        }
        None
    }

    /// A session's direct path is up.
    pub fn direct_path(&self, session_id: &SessionId, peer_addr: SocketAddr, relayed: bool) {
        if relayed {
            println!(
                "session {}: path up through the relay {peer_addr} (punching did not get through; still end-to-end encrypted)",
                id_hex(session_id)
            );
        } else {
            println!(
                "session {}: direct path up to {peer_addr}",
                id_hex(session_id)
            );
        }
    }

    /// The session's path moved (to a direct path opened later, or to the relay).
    pub fn path_changed(&self, session_id: &SessionId, peer_addr: SocketAddr, relayed: bool) {
        let path = if relayed { "relayed" } else { "direct" };
        println!(
            "session {}: path now {path}, to {peer_addr}",
            id_hex(session_id)
        );
    }

    /// A received file was stored (its digest matched).
    pub fn received(&self, session_id: &SessionId, path: &Path, size: u64, digest: &[u8]) {
        println!(
            "session {}: received {} ({}), SHA-256 {} verified",
            id_hex(session_id),
            path.display(),
            human_bytes(size),
            hex(digest)
        );
    }

    /// A received file was not kept, and why.
    pub fn not_kept(&self, session_id: &SessionId, why: &str) {
        println!("session {}: file not kept: {why}", id_hex(session_id));
    }

    /// The sessions live now (to end at a stop).
    pub fn live(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.live.iter().map(|id| SessionId(*id))
    }

    /// The last line.
    pub fn stopped(&self) {
        println!("terminal {} stopped", self.name);
    }
}

/// Runs `tryst terminal` on `driver` until SIGINT or SIGTERM; live
/// sessions are ended (and their end notifications sent) before it exits.
pub fn run<D: Driver>(driver: &D, args: TerminalArgs) -> Result<(), CliError> {
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
        share: args.share.clone(),
        live: args
            .live_from
            .as_ref()
            .map(|command| crate::transfer::live::LiveSource {
                command: command.clone(),
                frame: args.frame,
            }),
        share_rate: args.limit_rate,
        partial_limits: args.common.partial_limits(),
        ..TerminalOptions::default()
    };
    let enrolling = config.enrol_code.is_some();
    let (handle, events) = start(driver, &args.common, config, keypair, &name_refs, options)?;
    let mut lines = TerminalLines::new(&args.common.name).with_enrol_code(enrolling);
    lines.started(&public, handle.udp_addr, &names);
    let hub = Arc::new(ControlHub::default());
    let control = ControlServer::start(
        control,
        ControlContext {
            state: state.clone(),
            handle: handle.clone(),
            hub: Arc::clone(&hub),
        },
    )?;
    let metrics = Arc::new(TerminalMetrics::new());
    let metrics_listener = match args.metrics {
        Some(addr) => Some(start_terminal_metrics(addr, Arc::clone(&metrics))?),
        None => None,
    };

    let signals = StopSignals::listen(&[StopSignal::Terminate, StopSignal::Interrupt])?;
    loop {
        let next = signals::next(&events, signals.receiver(), None);
        if let Next::Event(event) = &next {
            // The events of a `tryst connect` served through the control socket.
            hub.dispatch(event);
        }
        match next {
            Next::Event(Event::Terminal(event)) => {
                metrics.observe(&event);
                if let Some(stop) = lines.terminal_event(event) {
                    return Err(stop);
                }
            }
            Next::Event(Event::Peer {
                session_id,
                event: PeerEvent::Connected { peer_addr, relayed },
            }) => lines.direct_path(&session_id, peer_addr, relayed),
            Next::Event(Event::Peer {
                session_id,
                event: PeerEvent::PathChanged { peer_addr, relayed },
            }) => lines.path_changed(&session_id, peer_addr, relayed),
            Next::Event(Event::Received {
                session_id,
                outcome,
            }) => match outcome {
                Ok(file) => lines.received(&session_id, &file.path, file.size, &file.digest),
                Err(why) => lines.not_kept(&session_id, &why),
            },
            Next::Event(_) | Next::Timeout => {}
            Next::Closed => return Err(CliError::failed("the terminal's event loop stopped")),
            Next::Signal(_) => break,
        }
    }
    for id in lines.live() {
        let _ = handle.finish(id, EndReason::Cancelled).wait();
    }
    let _ = handle.shutdown(SHUTDOWN_GRACE).wait();
    drop(metrics_listener);
    drop(control);
    let _ = std::fs::remove_file(state.file(CONTROL_SOCKET));
    lines.stopped();
    Ok(())
}

/// Serves `metrics` at http://ADDR/metrics and prints where.
fn start_terminal_metrics(
    addr: SocketAddr,
    metrics: Arc<TerminalMetrics>,
) -> Result<HttpListener, CliError> {
    let app = move |req: HttpRequest| {
        if req.method != "GET" || req.path != "/metrics" {
            return HttpResponse::text(404, "not found: try /metrics");
        }
        HttpResponse::new(200, metrics::CONTENT_TYPE, metrics.encode())
    };
    let listener = serve_blocking(addr, Arc::new(app))
        .map_err(|e| CliError::usage(format!("cannot listen on {addr} (metrics): {e}")))?;
    println!("metrics: http://{}/metrics", listener.addr);
    Ok(listener)
}

/// Starts a terminal (`tryst terminal`'s or `tryst connect`'s) on
/// `driver`, at the flags' addresses; a socket that cannot be bound is a
/// configuration error (exit 2).
pub fn start<D: Driver>(
    driver: &D,
    common: &TerminalCommon,
    config: TerminalConfig,
    keypair: StaticKeypair,
    permissions: &[&str],
    options: TerminalOptions,
) -> Result<(TerminalHandle, flume::Receiver<Event>), CliError> {
    let mut options = options;
    options.failover_servers = common.server.iter().skip(1).copied().collect();
    driver
        .terminal(
            config,
            keypair,
            common.first_server()?,
            bind_addr(common),
            permissions,
            options,
        )
        .map_err(|e| CliError::usage(format!("cannot bind the terminal's UDP socket: {e}")))
}

/// Binds the control socket; refuses if a daemon already answers on it.
fn bind_control_socket(state: &StateDir) -> Result<UnixListener, CliError> {
    let path = prepare_control_socket(state)?;
    let listener = UnixListener::bind(&path)
        .map_err(|e| CliError::usage(format!("cannot bind {}: {e}", path.display())))?;
    // Its owner only (the state dir is 0700 too; each client's uid is checked).
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| CliError::usage(format!("cannot restrict {}: {e}", path.display())))?;
    Ok(listener)
}

/// The control socket's accept thread: each client is served on threads
/// of its own ([`super::control`]), so a client holds nothing but itself.
/// Dropping it ends the thread.
struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

/// How long the control thread waits before it accepts again after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

impl ControlServer {
    /// Serves `listener` on a thread of its own.
    fn start(listener: UnixListener, ctx: ControlContext) -> Result<ControlServer, CliError> {
        let stop = Arc::new(AtomicBool::new(false));
        let server = ControlServer {
            path: ctx.state.file(CONTROL_SOCKET),
            stop: Arc::clone(&stop),
        };
        std::thread::Builder::new()
            .name("tryst-control".to_owned())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((stream, _)) if !stop.load(Ordering::Acquire) => {
                            super::control::serve_client(stream, &ctx);
                        }
                        Ok(_) => {}
                        Err(_) => std::thread::sleep(ACCEPT_RETRY),
                    }
                }
            })
            .map_err(|e| CliError::failed(format!("cannot start the control socket: {e}")))?;
        Ok(server)
    }
}

impl Drop for ControlServer {
    /// Ends the thread (it drops its terminal handle): wakes its accept.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = UnixStream::connect(&self.path);
    }
}
