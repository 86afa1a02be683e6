//! `tryst allow add|remove|list [NAME] --state-dir DIR`: edits a terminal's
//! permission list L. The list file in the state directory is written
//! atomically under an edit lock; a terminal running with that state
//! directory is then told (through its control socket) to read it again,
//! and answers once the next request will see the change. With no terminal
//! running, the file alone changes and the next start reads it.

use std::path::PathBuf;

use super::terminal::{check_name, reload_daemon, StateDir};
use super::CliError;
use tryst_core::terminal::MAX_PERMISSIONS;

/// `tryst allow`: edit the permission list.
#[derive(Debug, clap::Args)]
pub struct AllowArgs {
    #[command(subcommand)]
    pub action: AllowAction,
}

/// What to do with the list.
#[derive(Debug, clap::Subcommand)]
pub enum AllowAction {
    /// Permits NAME to connect.
    Add {
        /// The device name to permit.
        name: String,
        /// The terminal's state directory.
        #[arg(long = "state-dir", value_name = "DIR")]
        state_dir: PathBuf,
    },
    /// No longer permits NAME.
    Remove {
        /// The device name to remove.
        name: String,
        /// The terminal's state directory.
        #[arg(long = "state-dir", value_name = "DIR")]
        state_dir: PathBuf,
    },
    /// Prints the list, one name a line.
    List {
        /// The terminal's state directory.
        #[arg(long = "state-dir", value_name = "DIR")]
        state_dir: PathBuf,
    },
}

/// Runs `tryst allow`.
pub fn run(args: AllowArgs) -> Result<(), CliError> {
    match args.action {
        AllowAction::List { state_dir } => {
            let state = existing(&state_dir)?;
            for name in state.permissions()? {
                println!("{name}");
            }
            Ok(())
        }
        AllowAction::Add { name, state_dir } => {
            check_name(&name)?;
            let state = existing(&state_dir)?;
            edit(&state, |names| {
                if names.contains(&name) {
                    return Ok(false);
                }
                if names.len() >= MAX_PERMISSIONS {
                    return Err(CliError::usage(format!(
                        "the permission list is full ({MAX_PERMISSIONS} names)"
                    )));
                }
                names.push(name.clone());
                Ok(true)
            })
            .map(|changed| report(&name, changed, "added", "was already on the list"))
        }
        AllowAction::Remove { name, state_dir } => {
            let state = existing(&state_dir)?;
            edit(&state, |names| {
                let before = names.len();
                names.retain(|n| *n != name);
                Ok(names.len() != before)
            })
            .map(|changed| report(&name, changed, "removed", "was not on the list"))
        }
    }
}

/// The state directory, which must exist (a typo must not create a new one).
fn existing(dir: &std::path::Path) -> Result<StateDir, CliError> {
    if !dir.is_dir() {
        return Err(CliError::usage(format!(
            "no terminal state dir at {}",
            dir.display()
        )));
    }
    StateDir::open(dir)
}

/// What changed, and whether a running terminal applied it.
struct Edited {
    changed: bool,
    applied_by: Option<usize>,
}

fn report(name: &str, edited: Edited, done: &str, unchanged: &str) {
    if edited.changed {
        println!("{name}: {done}");
    } else {
        println!("{name}: {unchanged}");
    }
    match edited.applied_by {
        Some(count) => println!(
            "the running terminal applied the list ({count} names); it holds for the next request"
        ),
        None => {
            println!("no terminal is running with this state dir; it reads the list when it starts")
        }
    }
}

/// Applies `change` to the stored list under the edit lock, stores it if it
/// changed, and has a running terminal reload it.
fn edit(
    state: &StateDir,
    change: impl FnOnce(&mut Vec<String>) -> Result<bool, CliError>,
) -> Result<Edited, CliError> {
    let _lock = state.lock()?;
    let mut names = state.permissions()?;
    let changed = change(&mut names)?;
    if changed {
        state.store_permissions(&names)?;
    }
    let applied_by = reload_daemon(state)?;
    Ok(Edited {
        changed,
        applied_by,
    })
}
