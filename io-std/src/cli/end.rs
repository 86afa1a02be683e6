//! `tryst end SESSION_ID --data-dir DIR | --store URL`: the operator forces a live
//! session to end (seed S1604/S1605).
//!
//! How it reaches the server: through the store. The command writes a row
//! in the `commands` table of `DIR/tryst.db`; the running server polls that
//! table (every [`super::server::COMMAND_POLL`]), calls the session
//! server's `end_session` (end triggers to both terminals through the
//! trigger server) and writes the result into the row, which this command
//! waits for. A server that runs notes a heartbeat in the store, so with no
//! server running the command fails at once instead of waiting.
//!
//! The server answers once the forced end is settled: each terminal
//! confirmed (acknowledged its end trigger, resent up to three times, or
//! sent its end notification), or the session was recorded without its
//! confirmation (the server's end grace, 10 s). The command prints
//! `ended: HOME confirmed, PHONE confirmed`, or names the one that did not
//! confirm, and exits 0 either way: the session has ended on the server.

use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use super::CliError;
use tryst_core::session_server::{EndConfirmation, ForcedEnd};

use crate::store::{parse_id, OperatorCommand, ServerStore, StoreError, StoreLocation};

/// How long `end` and `enroll` wait for the running server's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// A heartbeat older than this means no server runs on the store.
pub const HEARTBEAT_FRESH: Duration = Duration::from_secs(5);
/// How long the server waits for a forced end to settle before it
/// answers `tryst end` without (the record comes after the end grace).
pub const SETTLE_WAIT: Duration = Duration::from_secs(15);
/// How long `tryst end` waits for the server's answer.
pub const END_ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// The server's answer when the forced end did not settle in [`SETTLE_WAIT`].
pub const UNSETTLED: &str = "ended: no confirmation came from either terminal";
/// The prefix of an answer that says the session was ended.
const ENDED: &str = "ended:";
/// How often the answer is looked for.
const ANSWER_POLL: Duration = Duration::from_millis(100);
/// Shortest session ID prefix taken.
pub const MIN_ID_PREFIX: usize = 8;

/// Arguments of `tryst end`.
#[derive(Debug, clap::Args)]
pub struct EndArgs {
    /// The session to end: its ID as `tryst sessions` shows it (32 hex
    /// digits, or a unique prefix of at least 8).
    #[arg(value_name = "SESSION_ID")]
    pub session_id: String,
    /// The server's data dir (its `tryst.db`).
    #[arg(long, value_name = "DIR", required_unless_present = "store")]
    pub data_dir: Option<PathBuf>,
    /// The server's store instead: a `postgres://USER@HOST/DB` URL (or
    /// `sqlite` for the data dir's file); or `TRYST_STORE`.
    #[arg(long, value_name = "URL", env = "TRYST_STORE")]
    pub store: Option<String>,
}

/// Store errors: a missing store is a usage error, the rest failures.
pub fn store_error(e: StoreError) -> CliError {
    match e {
        StoreError::Missing(_) | StoreError::MissingDatabase(_) | StoreError::TooNew(_) => {
            CliError::usage(e)
        }
        _ => CliError::failed(e),
    }
}

/// Where a one-shot tool's store is: `--store` if given, else `--data-dir`.
pub fn store_location(
    data_dir: Option<&Path>,
    store: Option<&str>,
) -> Result<StoreLocation, CliError> {
    StoreLocation::from_args(data_dir, store).map_err(CliError::usage)
}

/// What the running server answered to a command, or `None` when no server
/// runs on the store (the command was withdrawn, or never queued). The store is
/// the only channel to the server, so the answer is looked for every
/// [`ANSWER_POLL`] until [`ANSWER_TIMEOUT`].
pub fn ask_server(
    location: &StoreLocation,
    command: OperatorCommand,
) -> Result<Option<String>, CliError> {
    let store = location.open("").map_err(store_error)?;
    ask(&*store, &command)
}

/// [`ask_server`] on an open store (any backend).
pub fn ask(store: &dyn ServerStore, command: &OperatorCommand) -> Result<Option<String>, CliError> {
    let timeout = match command {
        OperatorCommand::End(_) => END_ANSWER_TIMEOUT,
        _ => ANSWER_TIMEOUT,
    };
    if !store.server_running(HEARTBEAT_FRESH).map_err(store_error)? {
        return Ok(None);
    }
    let id = store.push_command(command).map_err(store_error)?;
    let deadline = Instant::now() + timeout;
    loop {
        let answer = store.command_result(id).map_err(store_error)?;
        if answer.is_some() {
            return Ok(answer);
        }
        if Instant::now() >= deadline && store.withdraw_command(id).map_err(store_error)? {
            return Ok(None);
        }
        std::thread::sleep(ANSWER_POLL);
    }
}

/// What one party's answer reads as in `tryst end`'s line.
fn party_answer(name: &str, end: EndConfirmation, waited: Duration) -> String {
    let secs = waited.as_secs_f64().round();
    match end {
        EndConfirmation::Confirmed => format!("{name} confirmed"),
        EndConfirmation::Offline => format!("{name} did not confirm: offline (no live address)"),
        EndConfirmation::NotRegistered => format!("{name} did not confirm: not registered"),
        EndConfirmation::Unacknowledged => {
            format!("{name} did not confirm: its end trigger was never acknowledged")
        }
        EndConfirmation::NoAnswer => format!("{name} did not confirm within {secs} s"),
    }
}

/// The server's answer to `tryst end` once the forced end is settled, e.g.
/// `ended: home confirmed, phone confirmed` or `ended: home confirmed,
/// phone did not confirm within 10 s`.
pub fn settled_answer(settled: &ForcedEnd) -> String {
    format!(
        "{ENDED} {}, {}",
        party_answer(&settled.requester, settled.requester_end, settled.waited),
        party_answer(&settled.target, settled.target_end, settled.waited)
    )
}

/// Finds the one session `text` names; its full ID and whether it is live.
fn resolve(location: &StoreLocation, text: &str) -> Result<(String, bool), CliError> {
    let prefix = text.trim().to_ascii_lowercase();
    if prefix.len() < MIN_ID_PREFIX
        || prefix.len() > 32
        || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(CliError::usage(format!(
            "{text:?} is not a session ID (32 hex digits, or a prefix of at least {MIN_ID_PREFIX})"
        )));
    }
    let store = location.open("").map_err(store_error)?;
    let mut found = store.find_sessions(&prefix).map_err(store_error)?;
    match found.len() {
        0 => Err(CliError::usage(format!("no session {prefix} in the log"))),
        1 => Ok(found.remove(0)),
        _ => Err(CliError::usage(format!(
            "{prefix} names more than one session: give more digits"
        ))),
    }
}

/// Asks the running server to end the session.
pub fn run(args: EndArgs) -> Result<(), CliError> {
    let location = store_location(args.data_dir.as_deref(), args.store.as_deref())?;
    let (id, live) = resolve(&location, &args.session_id)?;
    if !live {
        return Err(CliError::failed(format!("session {id} has already ended")));
    }
    let session_id =
        parse_id(&id).ok_or_else(|| CliError::failed(format!("bad stored id {id}")))?;
    match ask_server(&location, OperatorCommand::End(session_id))? {
        None => Err(CliError::failed(format!(
            "no server is running on {}",
            location.describe()
        ))),
        Some(answer) if answer.starts_with(ENDED) => {
            println!("session {id} {answer}");
            Ok(())
        }
        Some(answer) => Err(CliError::failed(format!("session {id}: {answer}"))),
    }
}
