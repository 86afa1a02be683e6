//! `tryst names list | release NAME --data-dir DIR | --store URL`: the
//! operator's view of the name bindings (which key owns which device name,
//! and how it got it), and the way to free a name whose key was lost, so a
//! replacement device can take it (or the operator enrols its key).
//!
//! Names are shown and matched in their canonical form
//! ([`tryst_core::names::canonical`]): `tryst names release HOME` frees
//! `home`. A running server is told through the store's command table (as
//! `tryst enroll` does) and frees the name at once, ending a live
//! registration of it; with no server running, the binding is removed from
//! the store and the next start does not load it.

use std::path::PathBuf;

use tryst_core::session_server::SessionFact;

use super::end::{ask_server, store_error, store_location};
use super::CliError;
use crate::store::{key_hex, OperatorCommand, Origin};

/// Arguments of `tryst names`.
#[derive(Debug, clap::Args)]
pub struct NamesArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: NamesAction,
}

/// What `tryst names` does.
#[derive(Debug, clap::Subcommand)]
pub enum NamesAction {
    /// Lists every bound name: its key and how it was bound.
    List {
        /// Where the store is.
        #[command(flatten)]
        store: NamesStore,
        /// One JSON object per line instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Frees a name (a device whose key was lost or retired).
    Release {
        /// The device name, in any spelling (`HOME` frees `home`).
        #[arg(value_name = "NAME")]
        name: String,
        /// Where the store is.
        #[command(flatten)]
        store: NamesStore,
    },
}

/// The server's store, as the other operator commands take it.
#[derive(Debug, clap::Args)]
pub struct NamesStore {
    /// The server's data dir (its `tryst.db`).
    #[arg(long, value_name = "DIR", required_unless_present = "store")]
    pub data_dir: Option<PathBuf>,
    /// The server's store instead: a `postgres://USER@HOST/DB` URL (or
    /// `sqlite` for the data dir's file); or `TRYST_STORE`.
    #[arg(long, value_name = "URL", env = "TRYST_STORE")]
    pub store: Option<String>,
}

/// Runs `tryst names`.
pub fn run(args: NamesArgs) -> Result<(), CliError> {
    match args.action {
        NamesAction::List { store, json } => list(&store, json),
        NamesAction::Release { name, store } => release(&name, &store),
    }
}

fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::Tofu => "first key",
        Origin::Enrolled => "enrolled",
    }
}

fn list(at: &NamesStore, json: bool) -> Result<(), CliError> {
    let location = store_location(at.data_dir.as_deref(), at.store.as_deref())?;
    let store = location.open("").map_err(store_error)?;
    let bindings = store.bindings().map_err(store_error)?;
    if json {
        for (name, key, origin) in &bindings {
            println!(
                "{}",
                serde_json::json!({"name": name, "key": key_hex(key), "origin": origin_name(*origin)})
            );
        }
        return Ok(());
    }
    if bindings.is_empty() {
        println!("no bound names");
        return Ok(());
    }
    let width = bindings
        .iter()
        .map(|(name, _, _)| name.chars().count())
        .max()
        .unwrap_or(0)
        .max("NAME".len());
    println!("{:<width$}  {:<64}  BOUND BY", "NAME", "KEY");
    for (name, key, origin) in &bindings {
        println!("{name:<width$}  {}  {}", key_hex(key), origin_name(*origin));
    }
    Ok(())
}

fn release(name: &str, at: &NamesStore) -> Result<(), CliError> {
    let canonical = tryst_core::names::canonical(name)
        .map_err(|e| CliError::usage(format!("{name:?} is not a device name: {e}")))?;
    let location = store_location(at.data_dir.as_deref(), at.store.as_deref())?;
    let mut store = location.open("").map_err(store_error)?;
    let Some(key) = store.key_of(&canonical).map_err(store_error)? else {
        return Err(CliError::failed(format!("no name {canonical:?} is bound")));
    };
    match ask_server(&location, OperatorCommand::Release(canonical.clone()))? {
        Some(answer) if answer == "ok" => {
            println!(
                "released {canonical} (was bound to {}); the running server freed it now",
                key_hex(&key)
            );
            Ok(())
        }
        Some(answer) => Err(CliError::failed(format!("{canonical}: {answer}"))),
        None => {
            store
                .record(&[SessionFact::NameUnbound {
                    name: canonical.clone(),
                    key,
                }])
                .map_err(store_error)?;
            println!(
                "released {canonical} (was bound to {}); no server is running",
                key_hex(&key)
            );
            Ok(())
        }
    }
}
