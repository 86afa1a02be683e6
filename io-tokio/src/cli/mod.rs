//! The `tryst` binary's long-running subcommands on tokio. The CLI itself
//! (flags, the one-shot commands, errors and exit codes, `main`) is shared
//! with `tryst-std`: [`tryst_std::cli`]. [`TokioRuntime`] is what this
//! binary plugs into it: its driver ([`driver::TokioDriver`], the roles on
//! one tokio runtime), on which the shared blocking runners of every
//! long-running subcommand run, and the async `demo`.

pub mod demo;
pub mod driver;
pub mod http;

pub use tryst_std::cli::{allow, end, enroll, keygen, sessions, transfer, CliError, Runtime};
// `terminal` and `connect` are written once, blocking, over the driver.
pub use tryst_std::cli::{connect, terminal};

use std::future::Future;
use std::time::Duration;

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
}

impl Runtime for TokioRuntime {
    type Driver = driver::TokioDriver;

    fn driver(&self) -> Result<driver::TokioDriver, CliError> {
        driver::TokioDriver::new()
            .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))
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
