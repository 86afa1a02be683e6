//! `tryst enroll NAME PUBKEY --data-dir DIR | --store URL`: the operator binds a name to
//! a terminal's public key ahead of its first registration: the only way a
//! name gets bound on a `--closed` server; on an open one it reserves the
//! name. The binding is written to the store at once (creating the data
//! dir and store if needed, so enrolment can precede the first start); a
//! running server is told through the store's command table (see
//! [`super::end`]) and applies it to its next registration.

use std::path::PathBuf;

use tryst_core::identity::is_weak_public_key;
use tryst_core::wire::Name;

use super::end::{ask_server, store_error, store_location};
use super::keygen::public_key_arg;
use super::server::ensure_data_dir;
use super::CliError;
use crate::store::{OperatorCommand, StoreLocation};

/// Arguments of `tryst enroll`.
#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// The device name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Its public key: 64 hex digits (as `tryst keygen` prints), or a public key file.
    #[arg(value_name = "PUBKEY")]
    pub key: String,
    /// The server's data dir (its `tryst.db`).
    #[arg(long, value_name = "DIR", required_unless_present = "store")]
    pub data_dir: Option<PathBuf>,
    /// The server's store instead: a `postgres://USER@HOST/DB` URL (or
    /// `sqlite` for the data dir's file); or `TRYST_STORE`.
    #[arg(long, value_name = "URL", env = "TRYST_STORE")]
    pub store: Option<String>,
}

/// Enrolls the pair.
pub fn run(mut args: EnrollArgs) -> Result<(), CliError> {
    if let Err(e) = Name::new(&args.name) {
        return Err(CliError::usage(format!(
            "{:?} is not a device name: {e}",
            args.name
        )));
    }
    // Stored as the server binds it: `HOME` enrols `home`.
    args.name = tryst_core::names::canonical(&args.name).map_err(|e| {
        CliError::usage(format!(
            "{:?} is not a device name: {e} once normalised",
            args.name
        ))
    })?;
    let key = public_key_arg(&args.key)?;
    if is_weak_public_key(&key) {
        return Err(CliError::usage(
            "that key is a small-order point and can never be an identity",
        ));
    }
    let location = store_location(args.data_dir.as_deref(), args.store.as_deref())?;
    if let StoreLocation::DataDir(dir) = &location {
        ensure_data_dir(dir)?;
    }
    let store = location.create("").map_err(store_error)?;
    let enrolled = store.enroll(&args.name, &key).map_err(store_error)?;
    drop(store);
    if !enrolled {
        return Err(CliError::failed(format!(
            "{} is already bound to another key",
            args.name
        )));
    }
    let command = OperatorCommand::Enroll {
        name: args.name.clone(),
        key,
    };
    match ask_server(&location, command)? {
        None => println!(
            "enrolled {} (the server applies it when it starts)",
            args.name
        ),
        Some(answer) if answer == "ok" => {
            println!("enrolled {} (the running server applies it now)", args.name);
        }
        Some(answer) => return Err(CliError::failed(format!("{}: {answer}", args.name))),
    }
    Ok(())
}
