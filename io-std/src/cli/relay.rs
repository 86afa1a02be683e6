//! `tryst relay --listen ADDR --key FILE`: the relay (PROTOCOL.md, "The
//! relay") as a process of its own, for session servers started with
//! `tryst server --relay-at ADDR --relay-key FILE`. The two share only the
//! key file: the session servers mint allocation tokens with it, the relay
//! checks them. With `--link-listen ADDR` and `--session-server-key KEY`
//! (repeated) it also takes links from those session servers
//! (`server --relay-link ADDR`, [`crate::role::relay_link`]): their
//! extensions and forced ends reach it, and its allocations and byte
//! counts go back into their session records. Without a link it keeps to
//! the token's duration, its idle timeout and its limits, and counts each
//! allocation's bytes into its own log only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tryst_core::relay::server::DEFAULT_MAX_ALLOCATIONS;
use tryst_core::relay::RelayKey;

use super::CliError;
use crate::keyfile::read_secret_key;

/// Arguments of `tryst relay`.
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// The UDP address peers send to (and the session servers' `--relay-at`).
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The key shared with the session servers that hand out allocations on
    /// this relay: a file written by `tryst keygen --out FILE` (mode 0600),
    /// used for nothing else.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Most allocations at once.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ALLOCATIONS)]
    pub max_allocations: usize,
    /// Also listen on this TCP address for the links of the session
    /// servers named by `--session-server-key` (their `--relay-link`).
    #[arg(long, value_name = "ADDR", requires = "session_server_key")]
    pub link_listen: Option<SocketAddr>,
    /// A session server allowed to link (its public key: 64 hex digits or
    /// its `server.pub` file); repeat for each. Any other is refused.
    #[arg(long, value_name = "KEY|FILE", requires = "link_listen")]
    pub session_server_key: Vec<String>,
}

/// Reads the relay key shared by a relay and its session servers (a
/// secret key file's 32 bytes; the file must be private).
pub fn read_relay_key(path: &Path) -> Result<RelayKey, CliError> {
    let secret = read_secret_key(path).map_err(|e| {
        CliError::usage(format!(
            "relay key: {e} (make one with `tryst keygen --out FILE`)"
        ))
    })?;
    Ok(RelayKey(*secret.as_bytes()))
}
