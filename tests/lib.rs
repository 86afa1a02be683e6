//! Shared helpers of the cross-crate test suites.

pub mod sim;

use std::path::PathBuf;

/// The repository root, where README.md and PROTOCOL.md live.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}
