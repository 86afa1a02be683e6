//! `tryst connect`'s shared half: its flags and their parsing (each binary
//! runs the connection on its driver).
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

use std::path::PathBuf;
use std::time::Duration;

use super::terminal::TerminalCommon;
use super::transfer::parse_rate;
use super::CliError;

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
    /// The file to send over the direct path. Without it the session is
    /// held open until its duration ends, it is ended, or Ctrl-C.
    #[arg(long, value_name = "FILE")]
    pub send: Option<PathBuf>,
    /// The duration to ask for (e.g. 90s, 5m, 1h; bare numbers are
    /// seconds); the server's default when absent.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Send at most this many bytes a second (e.g. 500K, 2M), as fast as
    /// the path allows without it.
    #[arg(long = "limit-rate", value_name = "RATE", value_parser = parse_rate)]
    pub limit_rate: Option<u64>,
}

/// Parses a duration: `90`, `90s`, `5m`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| format!("not a duration: {e}"))
}

/// Whole seconds for the request, at least 1 (0 would ask for the default).
pub fn duration_secs(d: Option<Duration>) -> Result<u32, CliError> {
    let Some(d) = d else { return Ok(0) };
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).map_err(|_| CliError::usage("--duration is too long"))
}
