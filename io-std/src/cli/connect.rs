//! `tryst connect`, written once for both binaries: its flags and
//! [`run`], blocking code over the binary's [`Driver`].
//!
//! `tryst connect ... TARGET [--send PATH...] [--list] [--get NAME...
//! --recv-dir DIR] [--live [--frame BYTES]] [--duration DUR]`: the
//! connecting terminal (seed:
//! terminal 3), one shot. It registers (its key lives in
//! its state directory like a daemon's; when a daemon, `tryst terminal`,
//! runs on that state dir, the daemon makes the requests and moves the
//! bytes on its own registration, through its control socket), asks the session server for
//! TARGET, and on a yes talks to it directly. A file to send is opened and
//! its name checked (the one file-name policy of both sides) before
//! anything is asked of a server, so a file that cannot be sent never
//! costs a session.
//!
//! Several files (and folders, their trees recreated under the receiver's
//! folder) go one session each, in turn, on the one registration; so does
//! each file fetched from a peer's share (`--get`, a folder fetching every
//! file under it as the peer's listing shows them).
//!
//! A request that does not succeed gets the one uniform answer whatever
//! the cause (unknown, offline, refused, no answer): exit code 3 and
//! nothing about the target, its address least of all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tryst_core::peer::session::PeerEvent;
use tryst_core::peer::share::NotKeptReason;
use tryst_core::terminal::{HandshakeFailure, TerminalEvent};
use tryst_core::wire::{EndReason, SessionId};

use super::driver::Driver;
use super::signals::{self, Next, StopSignal, StopSignals};
use super::terminal::{self, check_name, config, Mode, StateDir, TerminalCommon};
use super::transfer::{hex, human_bytes, parse_rate, Progress};
use super::CliError;
use crate::role::terminal::{full_session_id, Event, ShareAnswer, TerminalHandle, TerminalOptions};
use crate::transfer::share::SharedFile;
use crate::transfer::{FileDigest, FileSource, HashError, OpenError};
use tryst_core::peer::share::ShareMessage;
use tryst_core::peer::transfer::{check_file_name, check_relative_path};

/// How long the terminal may take to register and be seen online.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the answer to the request may take (the terminal's own
/// request timeout fires first; this only guards against a stuck loop).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the sender waits, after everything was acknowledged, for the
/// receiver to close the session (which tells it the checksum matched).
pub const CONFIRM_WAIT: Duration = Duration::from_secs(5);
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
    /// Files and folders to send over the direct path (a folder's tree is
    /// recreated under the receiver's folder; hidden files and symlinks are
    /// skipped). Without `--send`, `--list` or `--get` the session is held
    /// open until its duration ends, it is ended, or Ctrl-C.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub send: Vec<PathBuf>,
    /// Print the target's shared files (name, size, modification time).
    #[arg(long, conflicts_with_all = ["send", "get"])]
    pub list: bool,
    /// A file or folder of the target's share to fetch into `--recv-dir`;
    /// repeatable.
    #[arg(long, value_name = "NAME", num_args = 1.., requires = "recv_dir", conflicts_with = "send")]
    pub get: Vec<String>,
    /// Where fetched files are stored (created if missing).
    #[arg(long = "recv-dir", value_name = "DIR")]
    pub recv_dir: Option<PathBuf>,
    /// The duration to ask for (e.g. 90s, 5m, 1h; bare numbers are
    /// seconds); the server's default when absent.
    #[arg(long, value_name = "DUR", value_parser = parse_session_duration)]
    pub duration: Option<Duration>,
    /// Send at most this many bytes a second (e.g. 500K, 2M), as fast as
    /// the path allows without it.
    #[arg(long = "limit-rate", value_name = "RATE", value_parser = parse_rate)]
    pub limit_rate: Option<u64>,
    /// Ask for the target's live stream (`tryst terminal --live-from`):
    /// its datagrams go to stdout as they arrive (e.g. `| aplay`), and
    /// stdin, when it is not a terminal, is sent the same way, until
    /// Ctrl-C or the session's end. Messages go to stderr.
    #[arg(long, conflicts_with_all = ["send", "list", "get"])]
    pub live: bool,
    /// Bytes of each datagram `--live` sends from stdin (1 to 1200).
    #[arg(long, value_name = "BYTES", default_value_t = crate::transfer::live::DEFAULT_FRAME,
          value_parser = super::terminal::parse_frame, requires = "live")]
    pub frame: usize,
}

/// Parses a duration: `90`, `90s`, `5m`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if text.trim_start().starts_with('-') {
        return Err("a duration cannot be negative (e.g. 90s, 5m, 1h30m)".to_owned());
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("not a duration (e.g. 90s, 5m, 1h30m): {e}"))
}

/// Parses the duration a session is asked for: as [`parse_duration`], and
/// more than zero (a zero would silently become the server's default).
pub fn parse_session_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(
            "a session must last more than 0 s (leave --duration out for the server's default)"
                .to_owned(),
        );
    }
    Ok(d)
}

/// Whole seconds for the request, at least 1 (0 would ask for the default).
pub fn duration_secs(d: Option<Duration>) -> Result<u32, CliError> {
    let Some(d) = d else { return Ok(0) };
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).map_err(|_| CliError::usage("--duration is too long"))
}

/// Runs `tryst connect` on `driver`: registers, asks for the target, then
/// sends the files, lists or fetches, or holds the session; the error
/// decides the exit code.
pub fn run<D: Driver>(driver: &D, args: ConnectArgs) -> Result<(), CliError> {
    let checked = Checked::new(&args.common, &args.target)?;
    let duration_secs = duration_secs(args.duration)?;
    let outgoing = plan_send(&args.send)?;
    if let Some(dir) = &args.recv_dir {
        crate::transfer::check_recv_dir(dir).map_err(CliError::usage)?;
        let swept = crate::transfer::sweep_partials(dir);
        if swept > 0 {
            println!("removed {swept} partial file(s) of interrupted transfers");
        }
    }
    let options = TerminalOptions {
        recv_dir: args.recv_dir.clone(),
        partial_limits: args.common.partial_limits(),
        ..TerminalOptions::default()
    };
    let (handle, events) = checked.start(driver, options)?;
    let session = |events: &flume::Receiver<Event>| -> Result<SessionId, CliError> {
        open_session_to(&handle, events, &args.target, duration_secs, args.live)
    };

    if !outgoing.is_empty() {
        let mut result = Ok(());
        for (path, name) in outgoing {
            let source = open_file(&path, &name)?;
            let session_id = session(&events)?;
            result = send(&handle, &events, session_id, source, name, args.limit_rate);
            if result.is_err() {
                break;
            }
        }
        let _ = handle.shutdown(EXIT_GRACE).wait();
        return result;
    }
    if args.list {
        let session_id = session(&events)?;
        let files = list(&handle, &events, session_id);
        let _ = handle.shutdown(EXIT_GRACE).wait();
        print_listing(&files?);
        return Ok(());
    }
    if !args.get.is_empty() {
        // The listing first: a folder fetches what the share lists under it.
        let session_id = session(&events)?;
        let files = list(&handle, &events, session_id)?;
        let wanted = expand_gets(&args.get, &files);
        let mut missing = Vec::new();
        let mut result = Ok(());
        for name in wanted {
            let session_id = session(&events)?;
            match fetch(&handle, &events, session_id, &name) {
                Ok(true) => {}
                Ok(false) => missing.push(name),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let _ = handle.shutdown(EXIT_GRACE).wait();
        result?;
        if !missing.is_empty() {
            return Err(CliError::failed(format!(
                "no such file in {}'s share: {}",
                args.target,
                missing.join(", ")
            )));
        }
        return Ok(());
    }
    let session_id = session(&events)?;
    if args.live {
        return live(&handle, &events, session_id, &args.target, args.frame);
    }
    hold(&handle, &events, session_id)
}

/// Plays the peer's live stream: asks for it, writes each datagram to
/// stdout as it arrives, and sends stdin (when it is not a terminal) as
/// datagrams of `frame` bytes, until the session ends or Ctrl-C.
fn live(
    handle: &TerminalHandle,
    events: &flume::Receiver<Event>,
    session_id: SessionId,
    target: &str,
    frame: usize,
) -> Result<(), CliError> {
    use std::io::{IsTerminal, Write};
    let signals = StopSignals::listen(&[StopSignal::Interrupt, StopSignal::Terminate])?;
    handle.request(session_id, &ShareMessage::Live).wait()?;
    // Stdin is sent once the direct path is up (the request's
    // acknowledgement or the peer's first datagram shows it).
    let mut stdin_pending = !std::io::stdin().is_terminal();
    let mut stdout = std::io::stdout().lock();
    let mut received = 0u64;
    let mut stdout_open = true;
    let reason = loop {
        match signals::next(events, signals.receiver(), None) {
            Next::Event(Event::Datagram {
                session_id: id,
                data,
            }) if id == session_id => {
                if std::mem::take(&mut stdin_pending) {
                    send_stdin(handle, session_id, frame);
                }
                received += 1;
                // A reader that went away (`| head`) ends the output, not the session.
                if stdout_open && (stdout.write_all(&data).is_err() || stdout.flush().is_err()) {
                    stdout_open = false;
                }
            }
            Next::Event(Event::Answer {
                session_id: id,
                answer: ShareAnswer::NoSuchFile,
            }) if id == session_id => {
                let _ = handle.shutdown(EXIT_GRACE).wait();
                return Err(CliError::failed(format!("{target} has no live stream")));
            }
            Next::Event(Event::Peer {
                session_id: id,
                event: PeerEvent::StreamAcked { .. },
            }) if id == session_id => {
                if std::mem::take(&mut stdin_pending) {
                    send_stdin(handle, session_id, frame);
                }
            }
            Next::Event(Event::Terminal(TerminalEvent::SessionEnded {
                session_id: id,
                reason,
                ..
            })) if id == session_id => break reason,
            Next::Event(Event::Terminal(TerminalEvent::SessionExtended {
                session_id: id,
                duration_secs,
            })) if id == session_id => {
                eprintln!("session extended to {duration_secs} s");
            }
            Next::Event(_) | Next::Timeout => {}
            Next::Closed => return Err(CliError::failed("the terminal's event loop stopped")),
            Next::Signal(_) => {
                let _ = handle.finish(session_id, EndReason::Cancelled).wait();
            }
        }
    };
    eprintln!("session ended: {reason:?}; {received} datagrams received");
    let _ = handle.shutdown(EXIT_GRACE).wait();
    Ok(())
}

/// A connecting terminal's flags, checked before anything is started:
/// its state directory (no daemon runs on it), its configuration and the
/// target's name. `tryst connect` and `tryst ping` both begin here.
pub(crate) struct Checked<'a> {
    /// The flags.
    common: &'a TerminalCommon,
    /// The state directory.
    state: StateDir,
    /// The terminal's configuration.
    config: tryst_core::terminal::TerminalConfig,
}

impl<'a> Checked<'a> {
    /// Checks the flags and `target` (a usage error, exit 2, before any
    /// network).
    pub(crate) fn new(common: &'a TerminalCommon, target: &str) -> Result<Checked<'a>, CliError> {
        let state = StateDir::open(&common.state_dir)?;
        let config = config(common, Mode::List)?;
        check_name(target)?;
        Ok(Checked {
            common,
            state,
            config,
        })
    }

    /// Starts the terminal on `driver` and waits until it is registered
    /// and online; or, when a daemon runs on the state dir, uses the
    /// daemon's terminal through its control socket (its registration, no
    /// wait; a stale socket is removed and the terminal runs alone).
    pub(crate) fn start<D: Driver>(
        self,
        driver: &D,
        options: TerminalOptions,
    ) -> Result<(TerminalHandle, flume::Receiver<Event>), CliError> {
        if let Some(daemon) = super::control::attach(&self.state, options.recv_dir.as_deref())? {
            tracing::info!("a terminal runs on this state dir: requests go through it");
            return Ok(daemon);
        }
        let keypair = self.state.keypair()?;
        let (handle, events) =
            terminal::start(driver, self.common, self.config, keypair, &[], options)?;
        wait_online(&events, self.common)?;
        Ok((handle, events))
    }
}

/// Asks for `target` and prints the session granted; a request that does
/// not succeed shuts the terminal down and is the one uniform answer
/// ([`CliError::NotPermitted`], exit 3).
pub(crate) fn open_session(
    handle: &TerminalHandle,
    events: &flume::Receiver<Event>,
    target: &str,
    duration_secs: u32,
) -> Result<SessionId, CliError> {
    open_session_to(handle, events, target, duration_secs, false)
}

/// [`open_session`], its lines on stderr when `to_stderr` (stdout carries
/// a live stream).
fn open_session_to(
    handle: &TerminalHandle,
    events: &flume::Receiver<Event>,
    target: &str,
    duration_secs: u32,
    to_stderr: bool,
) -> Result<SessionId, CliError> {
    let say = |line: String| {
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let answer = wait_for_session(handle, events, target, duration_secs)?;
    let Some((session_id, granted, peer_addr)) = answer else {
        let _ = handle.shutdown(EXIT_GRACE).wait();
        return Err(CliError::NotPermitted);
    };
    say(format!(
        "session {} with {target} for {granted} s (peer at {peer_addr})",
        full_session_id(&session_id),
    ));
    if duration_secs > granted {
        say(format!(
            "asked for {duration_secs} s, granted {granted} s: the server's maximum"
        ));
    }
    Ok(session_id)
}

/// The files `--send` names, each with the name it travels under (a file
/// inside a folder under its path from that folder's parent), checked with
/// the core's path policy before any request. Hidden files and symlinks
/// inside folders are skipped with a note; a path given that is neither a
/// file nor a folder is a usage error.
fn plan_send(paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, CliError> {
    let mut plan = Vec::new();
    for path in paths {
        let meta = std::fs::symlink_metadata(path)
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| CliError::usage(format!("{}: not a file name", path.display())))?
            .to_owned();
        if meta.file_type().is_symlink() {
            // A symlink named on the command line is followed, as a shell user expects.
            let meta = std::fs::metadata(path)
                .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
            if meta.is_dir() {
                walk_send(path, &name, &mut plan);
                continue;
            }
        } else if meta.is_dir() {
            walk_send(path, &name, &mut plan);
            continue;
        }
        check_relative_path(&name)
            .map_err(|e| CliError::usage(format!("{:?}: cannot be sent: {e}", path)))?;
        plan.push((path.clone(), name));
    }
    Ok(plan)
}

/// Adds the files under folder `dir` (sent as `prefix/...`), in name order.
fn walk_send(dir: &std::path::Path, prefix: &str, plan: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        println!("skipping {}: cannot read it", dir.display());
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            println!("skipping {}: not a UTF-8 name", path.display());
            continue;
        };
        if kind.is_symlink() {
            println!("skipping {}: a symlink", path.display());
            continue;
        }
        if check_file_name(&name).is_err() {
            println!("skipping {}: hidden or not a plain name", path.display());
            continue;
        }
        let rel = format!("{prefix}/{name}");
        if kind.is_dir() {
            walk_send(&path, &rel, plan);
        } else if kind.is_file() {
            match check_relative_path(&rel) {
                Ok(()) => plan.push((path, rel)),
                Err(e) => println!("skipping {}: {e}", path.display()),
            }
        }
    }
}

/// What `--get` names, as files: a name the listing has is fetched; a
/// folder fetches every listed file under it; another name is asked for
/// as it is (the peer answers "no such file").
fn expand_gets(names: &[String], files: &[SharedFile]) -> Vec<String> {
    let mut wanted = Vec::new();
    for name in names {
        let folder = format!("{}/", name.trim_end_matches('/'));
        let under: Vec<String> = files
            .iter()
            .filter(|f| f.path.starts_with(&folder))
            .map(|f| f.path.clone())
            .collect();
        if files.iter().any(|f| &f.path == name) || under.is_empty() {
            wanted.push(name.clone());
        } else {
            wanted.extend(under);
        }
    }
    wanted
}

/// Prints a listing: size, modification time (UTC) and path, one a line.
fn print_listing(files: &[SharedFile]) {
    println!("{} shared files", files.len());
    for file in files {
        let mtime = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_secs(file.mtime),
        );
        println!("{:>12}  {mtime}  {}", file.size, file.path);
    }
}

/// What a session brought back: the peer's share answer and the file
/// fetched (stored, or why not), each if it came.
type Answered = (
    Option<ShareAnswer>,
    Option<Result<crate::role::terminal::ReceivedFile, String>>,
);

/// Waits for one share answer on the session, or its end.
fn wait_answer(
    events: &flume::Receiver<Event>,
    session_id: SessionId,
    progress: &mut Option<Progress>,
) -> Result<Answered, CliError> {
    let mut answer = None;
    let mut received = None;
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        let event = match events.recv_deadline(deadline) {
            Ok(event) => event,
            Err(flume::RecvTimeoutError::Disconnected) => {
                return Err(CliError::failed("the terminal's event loop stopped"))
            }
            Err(flume::RecvTimeoutError::Timeout) if answer.is_some() || received.is_some() => {
                return Ok((answer, received))
            }
            Err(flume::RecvTimeoutError::Timeout) => {
                return Err(CliError::failed("the peer did not answer"))
            }
        };
        match event {
            Event::Answer {
                session_id: id,
                answer: a,
            } if id == session_id => answer = Some(a),
            Event::Receiving {
                session_id: id,
                name,
                done,
                size,
            } if id == session_id => {
                progress
                    .get_or_insert_with(|| Progress::new(&format!("fetching {name}"), size))
                    .set(done);
            }
            Event::Received {
                session_id: id,
                outcome,
            } if id == session_id => received = Some(outcome),
            Event::Peer {
                session_id: id,
                event: PeerEvent::Ended { .. },
            } if id == session_id => return Ok((answer, received)),
            _ => {}
        }
    }
}

/// Lists the peer's share on the session.
fn list(
    handle: &TerminalHandle,
    events: &flume::Receiver<Event>,
    session_id: SessionId,
) -> Result<Vec<SharedFile>, CliError> {
    handle.request(session_id, &ShareMessage::List).wait()?;
    match wait_answer(events, session_id, &mut None)? {
        (Some(ShareAnswer::Listing(files)), _) => Ok(files),
        _ => Err(CliError::failed("the peer sent no listing")),
    }
}

/// Fetches `name` from the peer's share on the session: `Ok(true)` once it
/// is stored with a matching SHA-256, `Ok(false)` for "no such file".
fn fetch(
    handle: &TerminalHandle,
    events: &flume::Receiver<Event>,
    session_id: SessionId,
    name: &str,
) -> Result<bool, CliError> {
    if name.is_empty() || name.len() > tryst_core::peer::share::MAX_PATH_LEN {
        println!("{name:?}: no such file");
        return Ok(false);
    }
    handle
        .request(session_id, &ShareMessage::Get(name))
        .wait()?;
    let mut progress = None;
    let started = Instant::now();
    let (answer, received) = wait_answer(events, session_id, &mut progress)?;
    if let Some(p) = &progress {
        p.finish();
    }
    match (answer, received) {
        (_, Some(Ok(file))) => {
            let elapsed = started.elapsed().as_secs_f64().max(1e-3);
            let what = if file.resumed_from > 0 {
                format!(
                    "{} of {} (resumed at byte {})",
                    human_bytes(file.size - file.resumed_from.min(file.size)),
                    human_bytes(file.size),
                    file.resumed_from
                )
            } else {
                human_bytes(file.size)
            };
            println!(
                "fetched {name}: {what} in {elapsed:.1} s, stored as {}, SHA-256 {} verified",
                file.path.display(),
                hex(&file.digest)
            );
            Ok(true)
        }
        (_, Some(Err(why))) => Err(CliError::failed(format!("{name} was not kept: {why}"))),
        (Some(ShareAnswer::NoSuchFile), None) => {
            println!("{name}: no such file");
            Ok(false)
        }
        _ => Err(CliError::failed(format!(
            "the session ended before {name} arrived"
        ))),
    }
}

/// Waits until the session server registered the terminal and the trigger
/// server sees it. A failure is reported as soon as it is clear, naming what
/// is wrong: nothing listening at `--server`, a server that drops or does
/// not answer the handshake (a wrong `--server-key`, or not a tryst
/// server), or a trigger server that never acknowledges a keepalive.
fn wait_online(events: &flume::Receiver<Event>, common: &TerminalCommon) -> Result<(), CliError> {
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    let mut registered = false;
    let mut dropped = false;
    loop {
        match events.recv_deadline(deadline) {
            Ok(Event::Terminal(TerminalEvent::Online { .. })) => return Ok(()),
            Ok(Event::Terminal(TerminalEvent::Registered { .. })) => registered = true,
            Ok(Event::Terminal(TerminalEvent::RegistrationRefused)) => {
                let enrolling = common
                    .invite
                    .as_deref()
                    .and_then(|text| super::invite::Invite::decode(text).ok())
                    .is_some_and(|invite| invite.code.is_some());
                return Err(CliError::failed(super::terminal::refused_message(
                    &common.name,
                    enrolling,
                )));
            }
            Ok(Event::Terminal(TerminalEvent::HandshakeFailed {
                cause: HandshakeFailure::RateLimited,
                retry_in,
                ..
            })) => {
                let secs = retry_in.as_secs_f64().ceil();
                if Instant::now() + retry_in + RATE_LIMIT_MARGIN >= deadline {
                    return Err(CliError::failed(format!(
                        "the session server at {} limits registrations from this address or \
                         this device: try again in {secs:.0} s",
                        common.servers_text()
                    )));
                }
                eprintln!(
                    "the session server limits registrations from this address or this device: \
                     retrying in {secs:.0} s"
                );
            }
            // Several servers: the terminal moves on to the next; only
            // the end of the wait says none answered.
            Ok(Event::Terminal(TerminalEvent::HandshakeFailed { cause, .. }))
                if common.server.len() > 1 && cause != HandshakeFailure::BadServerKey => {}
            Ok(Event::Terminal(TerminalEvent::HandshakeFailed { cause, .. })) => {
                match handshake_failure(common.first_server()?, cause) {
                    HandshakeVerdict::Retry => {}
                    HandshakeVerdict::Dropped => dropped = true,
                    HandshakeVerdict::Fatal(message) => return Err(CliError::failed(message)),
                }
            }
            Ok(_) => {}
            Err(flume::RecvTimeoutError::Disconnected) => {
                return Err(CliError::failed("the terminal's event loop stopped"))
            }
            Err(flume::RecvTimeoutError::Timeout) if dropped && !registered => {
                return Err(CliError::failed(format!(
                    "the server at {} accepted the connection but dropped every handshake: wrong \
                     server key (--server-key), or not a tryst server",
                    common.servers_text()
                )))
            }
            Err(flume::RecvTimeoutError::Timeout) if registered => {
                return Err(CliError::failed(format!(
                    "registered with the session server, but the trigger server at {} never \
                     acknowledged a keepalive: is --trigger its UDP address, and does UDP reach it?",
                    common.trigger
                )))
            }
            Err(flume::RecvTimeoutError::Timeout) => {
                return Err(CliError::failed(format!(
                    "could not register with the session server at {} and the trigger server at {}",
                    common.servers_text(), common.trigger
                )))
            }
        }
    }
}

/// Time left after a rate limit's wait for the registration to finish; a
/// wait that leaves less gives up at once, saying when to try again.
const RATE_LIMIT_MARGIN: Duration = Duration::from_secs(3);

/// How long the check of a failed handshake's TCP connection may take.
const DIAGNOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a failed registration handshake means for a one-shot command.
enum HandshakeVerdict {
    /// Wait for the next attempt (a busy server).
    Retry,
    /// The server accepted the stream and dropped the handshake: a wrong
    /// key or not a tryst server (a rate limit says `RetryLater` instead);
    /// told at the timeout, since a later attempt may still pass.
    Dropped,
    /// Give up now with this message.
    Fatal(String),
}

/// What a failed registration handshake with the session server at
/// `server` means. A stream that closed before any reply is told apart by
/// connecting once more: refused (nothing listens there, fatal at once) or
/// accepted (the server dropped the handshake).
fn handshake_failure(server: SocketAddr, cause: HandshakeFailure) -> HandshakeVerdict {
    match cause {
        HandshakeFailure::Rejected | HandshakeFailure::RateLimited => HandshakeVerdict::Retry,
        HandshakeFailure::BadServerKey => HandshakeVerdict::Fatal(
            "the session server key cannot be used (a weak key): check --server-key".to_owned(),
        ),
        // A tryst server with this key answers within the handshake
        // timeout, busy or not.
        HandshakeFailure::NoReply => HandshakeVerdict::Fatal(format!(
            "the server at {server} accepted the connection but never answered the handshake: \
             wrong server key (--server-key), or not a tryst server"
        )),
        HandshakeFailure::StreamClosed => {
            match std::net::TcpStream::connect_timeout(&server, DIAGNOSE_TIMEOUT) {
                Ok(_) => HandshakeVerdict::Dropped,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    HandshakeVerdict::Fatal(format!(
                        "nothing accepts connections at {server} (connection refused): is the \
                         session server running, and is --server its control port?"
                    ))
                }
                Err(e) => HandshakeVerdict::Fatal(format!(
                    "could not reach the session server at {server}: {e}"
                )),
            }
        }
    }
}

/// Asks for `target`: the session, its duration and the peer's address, or `None` if refused.
fn wait_for_session(
    handle: &TerminalHandle,
    events: &flume::Receiver<Event>,
    target: &str,
    duration_secs: u32,
) -> Result<Option<(SessionId, u32, SocketAddr)>, CliError> {
    let request = handle.connect(target, duration_secs).wait()?;
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    // A stopped loop or no answer in time: the one uniform answer.
    while let Ok(event) = events.recv_deadline(deadline) {
        match event {
            Event::Terminal(TerminalEvent::ConnectFailed { request_id })
                if request_id == request =>
            {
                return Ok(None);
            }
            Event::Terminal(TerminalEvent::SessionReady {
                request_id,
                session_id,
                duration_secs,
                peer_addr,
                ..
            }) if request_id == request => return Ok(Some((session_id, duration_secs, peer_addr))),
            _ => {}
        }
    }
    Ok(None)
}

/// Sends stdin as datagrams of `frame` bytes on the session, from a
/// detached thread (it ends with stdin's end or the process).
fn send_stdin(handle: &TerminalHandle, session_id: SessionId, frame: usize) {
    use std::io::Read;
    let handle = handle.clone();
    // Detached: it ends with stdin's end or the process.
    let _ = std::thread::Builder::new()
        .name("tryst-live-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; frame];
            loop {
                let mut filled = 0;
                while filled < frame {
                    match stdin.read(&mut buf[filled..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => filled += n,
                    }
                }
                if filled == 0
                    || handle
                        .datagram(session_id, buf[..filled].to_vec())
                        .wait()
                        .is_err()
                {
                    return;
                }
                if filled < frame {
                    return;
                }
            }
        });
}

/// Holds the session until it ends or the user stops it.
fn hold(
    handle: &TerminalHandle,
    events: &flume::Receiver<Event>,
    session_id: SessionId,
) -> Result<(), CliError> {
    let signals = StopSignals::listen(&[StopSignal::Interrupt, StopSignal::Terminate])?;
    let reason = loop {
        match signals::next(events, signals.receiver(), None) {
            Next::Event(Event::Terminal(TerminalEvent::SessionEnded {
                session_id: id,
                reason,
                ..
            })) if id == session_id => break reason,
            Next::Event(Event::Terminal(TerminalEvent::SessionExtended {
                session_id: id,
                duration_secs,
            })) if id == session_id => {
                println!("session extended to {duration_secs} s");
            }
            Next::Event(_) | Next::Timeout => {}
            Next::Closed => return Err(CliError::failed("the terminal's event loop stopped")),
            Next::Signal(_) => {
                let _ = handle.finish(session_id, EndReason::Cancelled).wait();
            }
        }
    };
    println!("session ended: {reason:?}");
    let _ = handle.shutdown(EXIT_GRACE).wait();
    Ok(())
}

/// Sends `path` on the session's stream and waits for the end: `Ok` once
/// the receiver closed the session as `Completed` (it stores the file only
/// when the SHA-256 matches), or, failing its word, once every byte was
/// acknowledged.
fn send(
    handle: &TerminalHandle,
    events: &flume::Receiver<Event>,
    session_id: SessionId,
    source: FileSource,
    name: String,
    rate: Option<u64>,
) -> Result<(), CliError> {
    let file = start_file(handle, session_id, source, name, rate)?;
    let ended = follow_transfer(handle, events, session_id, &file)?;
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
    /// The name the receiver stored the file under, if it said.
    stored: Option<String>,
    /// Why the receiver did not keep the file, if it said.
    not_kept: Option<NotKeptReason>,
    /// The file offset the send resumed at (0: from the start).
    resumed: u64,
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
/// read, or whose name the receiver would refuse (the core's path policy),
/// fails here with its one-line error (exit 2), before its session is asked
/// for. `name` is what it travels under.
fn open_file(path: &std::path::Path, name: &str) -> Result<FileSource, CliError> {
    let file = std::fs::File::open(path)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    FileSource::from_file(path, file, name)
        .map(FileSource::resumable)
        .map_err(|e| match e {
            OpenError::Hasher(..) => CliError::failed(e),
            _ => CliError::usage(e),
        })
}

/// Hands the opened file to the terminal to send on the session's stream.
fn start_file(
    handle: &TerminalHandle,
    session_id: SessionId,
    source: FileSource,
    name: String,
    rate: Option<u64>,
) -> Result<Outgoing, CliError> {
    let size = source.file_size();
    let digest = source.digest_handle();
    handle.send_file(session_id, source, rate).wait()?;
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
    /// The name the receiver stored the file under, once it said.
    stored: Option<String>,
    /// Why the receiver did not keep the file, once it said.
    not_kept: Option<NotKeptReason>,
    /// The file offset the send resumed at (0: from the start).
    resumed: u64,
    /// Whether this side reaches the relay over TCP (nothing came over UDP).
    relay_tcp: bool,
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
            Event::Answer {
                session_id: id,
                answer: ShareAnswer::Stored(name),
            } if id == session_id => {
                self.stored = Some(name);
            }
            Event::Answer {
                session_id: id,
                answer: ShareAnswer::NotKept(reason),
            } if id == session_id => {
                self.not_kept = Some(reason);
            }
            Event::Resumed {
                session_id: id,
                offset,
                size,
            } if id == session_id && offset > 0 => {
                self.progress.println(&format!(
                    "resuming at byte {offset}: the receiver already holds {} of {} from a cut transfer",
                    human_bytes(offset),
                    human_bytes(size)
                ));
                self.progress.set(offset);
                self.resumed = offset;
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
            PeerEvent::Connected { peer_addr, relayed } => {
                self.connected_at = Some(Instant::now());
                if relayed && self.relay_tcp {
                    self.progress.println(&format!(
                        "relayed path up through {peer_addr} (tcp) (UDP is blocked here; Noise KK end to end, session key as PSK)"
                    ));
                } else if relayed {
                    self.progress.println(&format!(
                        "relayed path up through {peer_addr} (punching did not get through; Noise KK end to end, session key as PSK)"
                    ));
                } else {
                    self.progress.println(&format!(
                        "direct path up to {peer_addr} (Noise KK, session key as PSK)"
                    ));
                }
            }
            PeerEvent::RelayOverTcp { relay } => {
                self.relay_tcp = true;
                self.progress.println(&format!(
                    "nothing heard over UDP: reaching the relay {relay} over tcp"
                ));
            }
            PeerEvent::PathChanged { peer_addr, relayed } => {
                let path = if relayed { "relayed" } else { "direct" };
                self.progress
                    .println(&format!("path now {path}, to {peer_addr}"));
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
fn follow_transfer(
    handle: &TerminalHandle,
    events: &flume::Receiver<Event>,
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
        stored: None,
        not_kept: None,
        resumed: 0,
        relay_tcp: false,
    };
    let signals = StopSignals::listen(&[StopSignal::Interrupt])?;
    let (reason, by_peer, bytes_sent) = loop {
        match signals::next(events, signals.receiver(), watch.give_up) {
            Next::Closed => return Err(CliError::failed("the terminal's event loop stopped")),
            Next::Event(event) => {
                if let Some(ended) = watch.on_event(session_id, event) {
                    break ended;
                }
            }
            Next::Signal(_) => {
                watch.progress.println("interrupted: closing the session");
                let _ = handle.close(session_id, EndReason::Cancelled).wait();
                watch.acked_all = false;
                watch.give_up = Some(Instant::now() + CONFIRM_WAIT);
            }
            Next::Timeout => {
                if watch.acked_all {
                    let _ = handle.close(session_id, EndReason::Completed).wait();
                    watch.give_up = Some(Instant::now() + CONFIRM_WAIT);
                    watch.acked_all = false;
                } else {
                    watch.progress.finish();
                    return Err(CliError::failed(
                        "the session ended before the transfer did",
                    ));
                }
            }
        }
    };
    watch.progress.finish();
    Ok(Ended {
        stored: watch.stored,
        not_kept: watch.not_kept,
        resumed: watch.resumed,
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
            // A resumed send moved only the rest of the file.
            let moved = size - ended.resumed.min(size);
            let what = if ended.resumed > 0 {
                format!(
                    "{} of {} (resumed at byte {})",
                    human_bytes(moved),
                    human_bytes(size),
                    ended.resumed
                )
            } else {
                human_bytes(size)
            };
            println!(
                "sent {name}: {what} in {elapsed:.1} s ({}/s); the receiver verified SHA-256 {}",
                human_bytes((moved as f64 / elapsed) as u64),
                digest
            );
            if let Some(stored) = &ended.stored {
                println!("the receiver stored {name} as {stored}");
            }
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
        // What the receiver said; a write error is never called a checksum
        // mismatch.
        (EndReason::Failed, true) => Err(CliError::failed(format!(
            "the receiver did not keep {name}: {}",
            match ended.not_kept {
                Some(NotKeptReason::TakesNoFiles) => "it takes no files (no --recv-dir)",
                Some(NotKeptReason::CouldNotWrite) => {
                    "it could not write it (its disk or its folder's permissions)"
                }
                Some(NotKeptReason::ChecksumMismatch) => {
                    "the bytes it got did not match their SHA-256 (damaged on the way)"
                }
                Some(NotKeptReason::RefusedName) => "it refused the file's name",
                Some(NotKeptReason::Malformed) => "the transfer broke the protocol",
                None => "it did not say why (see its log)",
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_negative_and_zero_sessions() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("-5s")
            .unwrap_err()
            .contains("cannot be negative"));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("not a duration"));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_session_duration("0")
            .unwrap_err()
            .contains("more than 0 s"));
        assert!(parse_session_duration("0s").is_err());
        assert_eq!(parse_session_duration("5m"), Ok(Duration::from_secs(300)));
    }
}
