//! `tryst`: the reference binary.
//!
//! Exit codes: 0 success; 2 usage or configuration error; 3 not permitted
//! (the one answer for unknown, offline, refused, no answer); 1 anything
//! else. Errors are one line on stderr (`tryst: ...`), never a backtrace.
//! Logs go to stderr through `tracing`; `RUST_LOG` sets the filter (the
//! long-running roles default to `info`, one line per protocol event; the
//! one-shot commands to `warn`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tryst_tokio::cli::{self, CliError};

/// tryst: reach a device behind a NAT only when it said yes.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs both servers and three terminals on loopback and walks through
    /// the seed's flows: registration, a permitted request, an extension at
    /// 70%, refused requests, a forced end and the session log.
    Demo,
    /// Writes a new secret key (mode 0600) and prints its public key.
    Keygen(cli::keygen::KeygenArgs),
    /// Runs the session server and the trigger server in one process.
    Server(cli::server::ServerArgs),
    /// Runs the session server alone, linked to a trigger server.
    SessionServer(cli::server::SessionServerArgs),
    /// Runs the trigger server alone.
    TriggerServer(cli::server::TriggerServerArgs),
    /// Enrolls a terminal's public key for a name (for --closed servers).
    Enroll(cli::enroll::EnrollArgs),
    /// Prints the session log.
    Sessions(cli::sessions::SessionsArgs),
    /// Forces a live session to end.
    End(cli::end::EndArgs),
    /// Runs a terminal (the device that others connect to).
    Terminal(cli::terminal::TerminalArgs),
    /// Connects to a peer by name and sends it a file (one shot).
    Connect(cli::connect::ConnectArgs),
    /// Edits the permission list of a running terminal.
    Allow(cli::allow::AllowArgs),
}

impl Command {
    /// The log filter when `RUST_LOG` is not set.
    fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Server(_)
            | Command::SessionServer(_)
            | Command::TriggerServer(_)
            | Command::Terminal(_) => "info",
            _ => "warn",
        }
    }
}

async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Demo => tryst_tokio::cli::demo::run().await.map_err(CliError::from),
        Command::Keygen(args) => cli::keygen::run(args).await,
        Command::Server(args) => cli::server::run(args).await,
        Command::SessionServer(args) => cli::server::run_session_server(args).await,
        Command::TriggerServer(args) => cli::server::run_trigger_server(args).await,
        Command::Enroll(args) => cli::enroll::run(args).await,
        Command::Sessions(args) => cli::sessions::run(args).await,
        Command::End(args) => cli::end::run(args).await,
        Command::Terminal(args) => cli::terminal::run(args).await,
        Command::Connect(args) => cli::connect::run(args).await,
        Command::Allow(args) => cli::allow::run(args).await,
    }
}

/// A clap error as one line: its first line without the `error: ` prefix.
fn usage_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("bad arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    format!("{first} (see `tryst --help`)")
}

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string().replace('\n', " ");
        eprintln!("tryst: internal error: {message}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    eprintln!("tryst: a command is required (see `tryst --help`)");
                    ExitCode::from(2)
                }
                _ => {
                    eprintln!("tryst: {}", usage_line(&e));
                    ExitCode::from(2)
                }
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(cli.command.default_log_filter())
            }),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tryst: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli.command));
    // Background tasks (stream writers, pollers) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tryst: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
