//! What the end-to-end tests share: the `tryst` binary that `cargo test`
//! built, and [`Proc`], a child process whose stdout lines the test reads.
//! Included by each e2e test file with `#[path]`; each uses a subset.
#![allow(dead_code)]

pub mod cluster;
pub mod proc;

use std::path::PathBuf;
use std::process::Command;

// Not every test file uses every item.
#[allow(unused_imports)]
pub use proc::{text, Proc, WAIT};

/// The binary under test, with no inherited `RUST_LOG`.
pub fn tryst() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tryst"));
    c.env_remove("RUST_LOG");
    c
}

impl Proc {
    /// Starts `tryst ARGS`, stderr to `log`, with `RUST_LOG` if given.
    pub fn start(args: &[&str], log: PathBuf, rust_log: Option<&str>) -> Proc {
        let mut cmd = tryst();
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        cmd.args(args);
        Proc::spawn(cmd, log)
    }
}
