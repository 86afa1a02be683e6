//! `tryst shards add | remove | list --data-dir DIR | --store URL`: the
//! operator's shard map, the trigger servers that devices are spread over
//! by device ID (rendezvous hashing on each shard's name,
//! [`tryst_core::shard::pick`]). The map lives in the store, so every
//! session server that shares a PostgreSQL database reads the same one.
//!
//! A shard is a name, the trigger server's link address (TCP, where the
//! session servers reach it), its keepalive address (UDP, what its
//! terminals are told) and its public key. Adding a name that is in the
//! map gives it the new addresses and key; its devices stay with it.

use std::net::SocketAddr;

use super::end::{store_error, store_location};
use super::keygen::public_key_arg;
use super::names::NamesStore;
use super::CliError;
use crate::store::{key_hex, ShardRow};

/// Longest shard name: it is hashed and shown, never sent on the wire.
pub const MAX_SHARD_NAME_LEN: usize = 64;

/// Arguments of `tryst shards`.
#[derive(Debug, clap::Args)]
pub struct ShardsArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ShardsAction,
}

/// What `tryst shards` does.
#[derive(Debug, clap::Subcommand)]
pub enum ShardsAction {
    /// Adds a trigger server to the shard map (or moves the one of that name).
    Add {
        /// The shard's name (1 to 64 printable ASCII characters); devices
        /// are spread by it, so keep it when the server moves.
        #[arg(value_name = "NAME")]
        name: String,
        /// The trigger server's link address (TCP), its `--link`.
        #[arg(long, value_name = "ADDR")]
        link: SocketAddr,
        /// Its keepalive address (UDP) as terminals reach it, its `--trigger`.
        #[arg(long, value_name = "ADDR")]
        udp: SocketAddr,
        /// Its public key: 64 hex digits or a public key file.
        #[arg(long, value_name = "KEY|FILE")]
        key: String,
        /// Where the store is.
        #[command(flatten)]
        store: NamesStore,
    },
    /// Takes a trigger server out of the shard map.
    Remove {
        /// The shard's name.
        #[arg(value_name = "NAME")]
        name: String,
        /// Where the store is.
        #[command(flatten)]
        store: NamesStore,
    },
    /// Lists the shard map.
    List {
        /// Where the store is.
        #[command(flatten)]
        store: NamesStore,
        /// One JSON object per line instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `tryst shards`.
pub fn run(args: ShardsArgs) -> Result<(), CliError> {
    match args.action {
        ShardsAction::Add {
            name,
            link,
            udp,
            key,
            store,
        } => {
            let row = ShardRow {
                name: shard_name(&name)?,
                link,
                udp,
                key: public_key_arg(&key)?,
            };
            let location = store_location(store.data_dir.as_deref(), store.store.as_deref())?;
            let new = location
                .create("")
                .map_err(store_error)?
                .add_shard(&row)
                .map_err(store_error)?;
            let what = if new { "added" } else { "updated" };
            println!(
                "{what} shard {} (link {}, udp {})",
                row.name, row.link, row.udp
            );
            Ok(())
        }
        ShardsAction::Remove { name, store } => {
            let location = store_location(store.data_dir.as_deref(), store.store.as_deref())?;
            let store = location.open("").map_err(store_error)?;
            if store.remove_shard(&name).map_err(store_error)? {
                println!("removed shard {name}");
                Ok(())
            } else {
                Err(CliError::failed(format!("no shard {name:?} in the map")))
            }
        }
        ShardsAction::List { store, json } => {
            let location = store_location(store.data_dir.as_deref(), store.store.as_deref())?;
            let shards = location
                .open("")
                .map_err(store_error)?
                .shards()
                .map_err(store_error)?;
            print_shards(&shards, json);
            Ok(())
        }
    }
}

/// A shard name the map takes: 1 to [`MAX_SHARD_NAME_LEN`] printable ASCII
/// characters, no spaces (it is shown in tables and logs).
fn shard_name(name: &str) -> Result<String, CliError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SHARD_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(name.to_owned())
    } else {
        Err(CliError::usage(format!(
            "{name:?} is not a shard name: 1 to {MAX_SHARD_NAME_LEN} printable ASCII characters, no spaces"
        )))
    }
}

fn print_shards(shards: &[ShardRow], json: bool) {
    if json {
        for s in shards {
            println!(
                "{}",
                serde_json::json!({
                    "name": s.name,
                    "link": s.link.to_string(),
                    "udp": s.udp.to_string(),
                    "key": key_hex(&s.key),
                })
            );
        }
        return;
    }
    if shards.is_empty() {
        println!("no shards: one trigger server (the session server's --trigger-link)");
        return;
    }
    let width = shards
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        .max("NAME".len());
    println!("{:<width$}  {:<21}  {:<21}  KEY", "NAME", "LINK", "UDP");
    for s in shards {
        println!(
            "{:<width$}  {:<21}  {:<21}  {}",
            s.name,
            s.link.to_string(),
            s.udp.to_string(),
            key_hex(&s.key)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_name_is_printable_ascii_without_spaces() {
        assert_eq!(shard_name("ts-1").ok().as_deref(), Some("ts-1"));
        for bad in ["", "a b", "tab\t", "é", &"x".repeat(MAX_SHARD_NAME_LEN + 1)] {
            assert!(shard_name(bad).is_err(), "{bad:?}");
        }
        assert!(shard_name(&"x".repeat(MAX_SHARD_NAME_LEN)).is_ok());
    }
}
