//! The `tryst` binary's subcommands: each module has a `clap::Args` struct
//! and an async `run` returning [`CliError`], which carries the exit code.

pub mod allow;
pub mod connect;
pub mod demo;
pub mod end;
pub mod enroll;
pub mod keygen;
pub mod server;
pub mod sessions;
pub mod terminal;
pub mod transfer;

use std::fmt::Display;

/// Why a subcommand failed; each kind has its exit code (issue 6):
/// 2 usage or configuration, 3 not permitted, 1 anything else.
/// Displayed as one line (the binary prints `tryst: <error>`).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or configuration (a missing or unreadable key file,
    /// a bad address, a data dir that is not one): exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The one uniform answer for a request that did not succeed (unknown,
    /// offline, refused, no answer): exit code 3.
    #[error("not permitted")]
    NotPermitted,
    /// Anything else (I/O, a server that stopped, a store that failed): exit code 1.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// A usage or configuration error (exit 2).
    pub fn usage(message: impl Display) -> CliError {
        CliError::Usage(one_line(message))
    }

    /// Any other failure (exit 1).
    pub fn failed(message: impl Display) -> CliError {
        CliError::Failed(one_line(message))
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::NotPermitted => 3,
            CliError::Failed(_) => 1,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> CliError {
        CliError::failed(e)
    }
}

impl From<crate::driver::terminal::TerminalError> for CliError {
    fn from(e: crate::driver::terminal::TerminalError) -> CliError {
        CliError::failed(e)
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> CliError {
        CliError::failed(format!("{e:#}"))
    }
}

/// `message` on one line: line breaks become "; ", so an error never
/// spreads over several lines.
fn one_line(message: impl Display) -> String {
    let text = message.to_string();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
