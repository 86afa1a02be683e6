//! `tryst-std`: the `tryst` binary on the blocking std layer (no async
//! runtime), for devices and servers that run none. Same subcommands,
//! flags, output, exit codes and files as `tryst` (the CLI is
//! [`tryst_std::cli`], shared).
//!
//! The one-shot commands (`keygen`, `allow`, `sessions`, `end`, `enroll`)
//! and the servers (`server`, `session-server`, `trigger-server`: the
//! shared runners on [`StdDriver`], this binary's [`Runtime::Driver`]) run here; `terminal` and `connect`
//! answer "not yet available" (exit 1) until they are wired into
//! [`StdRuntime`].
#![forbid(unsafe_code)]

use std::process::ExitCode;

use tryst_std::cli::connect::ConnectArgs;
use tryst_std::cli::driver::StdDriver;
use tryst_std::cli::terminal::TerminalArgs;
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
    type Driver = StdDriver;

    fn driver(&self) -> Result<StdDriver, CliError> {
        Ok(StdDriver)
    }

    fn terminal(&self, _args: TerminalArgs) -> Result<(), CliError> {
        unavailable("terminal")
    }

    fn connect(&self, _args: ConnectArgs) -> Result<(), CliError> {
        unavailable("connect")
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
