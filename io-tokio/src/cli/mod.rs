//! The `tryst` binary's long-running subcommands on tokio. The CLI itself
//! (flags, the one-shot commands, errors and exit codes, `main`) is shared
//! with `tryst-std`: [`tryst_std::cli`]. [`TokioRuntime`] is what this
//! binary plugs into it: each long-running subcommand runs in a fresh tokio
//! runtime on the async driver.

pub mod demo;
pub mod driver;
pub mod server;

pub use tryst_std::cli::{allow, end, enroll, keygen, sessions, transfer, CliError, Runtime};
// `terminal` and `connect` are written once, blocking, over the driver.
pub use tryst_std::cli::{connect, terminal};

use std::future::Future;
use std::time::Duration;

use tryst_std::cli::connect::ConnectArgs;
use tryst_std::cli::server::{ServerArgs, SessionServerArgs, TriggerServerArgs};
use tryst_std::cli::terminal::TerminalArgs;

/// How long background tasks (stream writers, pollers) may hold the exit.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(200);

/// The tokio driver as the shared CLI's [`Runtime`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioRuntime;

impl TokioRuntime {
    /// Runs `future` to its end in a new multi-threaded runtime.
    fn block_on<F: Future<Output = Result<(), CliError>>>(future: F) -> Result<(), CliError> {
        let runtime = tokio::runtime::Runtime::new()
            .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
        let result = runtime.block_on(future);
        // Background tasks (stream writers, pollers) must not hold the exit.
        runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
        result
    }

    /// The tokio driver the shared blocking runners start roles on.
    fn driver() -> Result<driver::TokioDriver, CliError> {
        driver::TokioDriver::new()
            .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))
    }
}

impl Runtime for TokioRuntime {
    fn server(&self, args: ServerArgs) -> Result<(), CliError> {
        Self::block_on(server::run(args))
    }

    fn session_server(&self, args: SessionServerArgs) -> Result<(), CliError> {
        Self::block_on(server::run_session_server(args))
    }

    fn trigger_server(&self, args: TriggerServerArgs) -> Result<(), CliError> {
        Self::block_on(server::run_trigger_server(args))
    }

    fn terminal(&self, args: TerminalArgs) -> Result<(), CliError> {
        terminal::run(&Self::driver()?, args)
    }

    fn connect(&self, args: ConnectArgs) -> Result<(), CliError> {
        connect::run(&Self::driver()?, args)
    }

    fn demo(&self) -> Result<(), CliError> {
        Self::block_on(async { demo::run().await.map_err(CliError::from) })
    }
}

/// Runs a blocking store or file operation off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CliError> + Send + 'static,
) -> Result<T, CliError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CliError::failed(format!("store task failed: {e}")))?
}
