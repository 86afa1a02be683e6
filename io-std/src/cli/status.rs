//! `tryst status --data-dir DIR [--json]`: the operator's table of a
//! running server (like `kamcmd ul.dump`): its live terminals with their
//! last keepalive and observed address, its live sessions with their
//! remaining time, and its counters. Asked through the store's command
//! queue, as `tryst end` asks ([`super::end::ask_server`]); the running
//! server answers from its roles' loops.

use std::path::PathBuf;

use super::end::{ask_server, store_location};
use super::CliError;
use crate::observe::status::Status;
use crate::store::OperatorCommand;

/// Arguments of `tryst status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The server's data dir.
    #[arg(long, value_name = "DIR", required_unless_present = "store")]
    pub data_dir: Option<PathBuf>,
    /// The server's store instead: a `postgres://USER@HOST/DB` URL (one of
    /// the servers sharing it answers).
    #[arg(long, value_name = "URL", env = "TRYST_STORE")]
    pub store: Option<String>,
    /// One JSON object (terminals, sessions, counters) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Asks the running server and prints its answer.
pub fn run(args: StatusArgs) -> Result<(), CliError> {
    let location = store_location(args.data_dir.as_deref(), args.store.as_deref())?;
    let answer = ask_server(&location, OperatorCommand::Status)?.ok_or_else(|| {
        CliError::failed(format!("no server is running on {}", location.describe()))
    })?;
    if let Some(e) = answer.strip_prefix("error: ") {
        return Err(CliError::failed(e));
    }
    let value: serde_json::Value = serde_json::from_str(&answer)
        .map_err(|_| CliError::failed(format!("the server answered: {answer}")))?;
    let status = Status::from_json(&value)
        .ok_or_else(|| CliError::failed("the server's status is not one this version reads"))?;
    if args.json {
        let text = serde_json::to_string_pretty(&status.to_json()).map_err(CliError::failed)?;
        println!("{text}");
    } else {
        print!("{}", status.table());
    }
    Ok(())
}
