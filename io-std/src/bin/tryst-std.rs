//! `tryst-std`: the `tryst` binary on the blocking std layer (no async
//! runtime), for devices and servers that run none. Same subcommands,
//! flags, output, exit codes and files as `tryst` (the CLI is
//! [`tryst_std::cli`], shared).
//!
//! For now only the one-shot commands (`keygen`, `allow`, `sessions`,
//! `end`, `enroll`) run here; the long-running ones answer "not yet
//! available" (exit 1) until the std driver is wired into [`StdRuntime`].
#![forbid(unsafe_code)]

use std::process::ExitCode;

use tryst_std::cli::connect::ConnectArgs;
use tryst_std::cli::server::{ServerArgs, SessionServerArgs, TriggerServerArgs};
use tryst_std::cli::terminal::TerminalArgs;
use tryst_std::cli::driver::StdDriver;
use tryst_std::cli::{self, CliError, Runtime};

/// The name errors and help use.
const BINARY: &str = "tryst-std";

/// Runs the long-running subcommands on the std driver.
struct StdRuntime;

/// The answer of a subcommand this binary does not run (yet).
fn unavailable(command: &str) -> Result<(), CliError> {
    Err(CliError::failed(format!(
        "`{command}` is not yet available in {BINARY} (use `tryst {command}`)"
    )))
}

impl Runtime for StdRuntime {
    fn server(&self, _args: ServerArgs) -> Result<(), CliError> {
        unavailable("server")
    }

    fn session_server(&self, _args: SessionServerArgs) -> Result<(), CliError> {
        unavailable("session-server")
    }

    fn trigger_server(&self, _args: TriggerServerArgs) -> Result<(), CliError> {
        unavailable("trigger-server")
    }

    fn terminal(&self, args: TerminalArgs) -> Result<(), CliError> {
        cli::terminal::run(&StdDriver, args)
    }

    fn connect(&self, args: ConnectArgs) -> Result<(), CliError> {
        cli::connect::run(&StdDriver, args)
    }

    fn demo(&self) -> Result<(), CliError> {
        Err(CliError::failed(format!(
            "`demo` is not part of {BINARY}; run `tryst demo`"
        )))
    }
}

fn main() -> ExitCode {
    cli::main(BINARY, StdRuntime)
}
