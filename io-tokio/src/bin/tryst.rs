//! `tryst`: the reference binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tryst: reach a device behind a NAT only when it said yes.
#[derive(Debug, Parser)]
#[command(version, about)]
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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tryst: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match cli.command {
        Command::Demo => runtime.block_on(tryst_tokio::demo::run()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tryst: {e:#}");
            ExitCode::from(1)
        }
    }
}
