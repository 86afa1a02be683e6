//! `tryst-std`: the `tryst` binary on the blocking std layer (no async
//! runtime), for devices and servers that run none. Same subcommands,
//! flags, output, exit codes and files as `tryst` (the CLI is
//! [`tryst_std::cli`], shared).
//!
//! Every subcommand but `demo` runs here: the shared runners on
//! [`StdDriver`] (each role on a thread of its own, one `mio` poller each).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use tryst_std::cli::driver::StdDriver;
use tryst_std::cli::{self, CliError, Runtime};

/// The name errors and help use.
const BINARY: &str = "tryst-std";

/// Runs the long-running subcommands on the std driver.
struct StdRuntime;

impl Runtime for StdRuntime {
    type Driver = StdDriver;

    fn driver(&self) -> Result<StdDriver, CliError> {
        Ok(StdDriver)
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
