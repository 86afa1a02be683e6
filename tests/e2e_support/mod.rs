//! What the end-to-end tests share: the binaries that `cargo test` built
//! (`tryst`, and `tryst-std` beside it, chosen per place by a [`Mix`]), and
//! [`Proc`], a child process whose stdout lines the test reads. Included by
//! each e2e test file with `#[path]`; each uses a subset.
#![allow(dead_code)]

pub mod cluster;
#[path = "../pg_support/mod.rs"]
pub mod pg;
pub mod proc;
pub mod server_flows;
pub mod terminal_flows;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;

// Not every test file uses every item.
#[allow(unused_imports)]
pub use proc::{text, Proc, WAIT};

/// One of the two binaries, which take the same subcommands, flags and
/// files: `tryst` (the tokio driver) and `tryst-std` (the blocking one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bin {
    /// `tryst`.
    Tryst,
    /// `tryst-std`.
    TrystStd,
}

impl Bin {
    /// Where `cargo test` built it: `tryst-std` is a binary of the
    /// `tryst-std` package, built beside `tryst` by `cargo test --workspace`.
    pub fn path(self) -> PathBuf {
        let tryst = Path::new(env!("CARGO_BIN_EXE_tryst"));
        match self {
            Bin::Tryst => tryst.to_path_buf(),
            Bin::TrystStd => {
                let path = tryst.with_file_name("tryst-std");
                assert!(
                    path.exists(),
                    "{} is missing: build it (cargo build -p tryst-std) or run cargo test --workspace",
                    path.display()
                );
                path
            }
        }
    }
}

/// Which binary runs in each place of a test: the servers, the terminal
/// daemon, the one-shot `connect`, and the one-shot tools (`allow`, `end`,
/// `sessions`, `keygen`, `enroll`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// `server`, `session-server`, `trigger-server`.
    pub server: Bin,
    /// `terminal`.
    pub daemon: Bin,
    /// `connect` (and `ping`, the other one-shot connecting terminal).
    pub connect: Bin,
    /// Every other subcommand.
    pub tool: Bin,
}

impl Mix {
    /// `tryst` everywhere.
    pub const TRYST: Mix = Mix {
        server: Bin::Tryst,
        daemon: Bin::Tryst,
        connect: Bin::Tryst,
        tool: Bin::Tryst,
    };
    /// `tryst-std` everywhere.
    pub const STD: Mix = Mix {
        server: Bin::TrystStd,
        daemon: Bin::TrystStd,
        connect: Bin::TrystStd,
        tool: Bin::TrystStd,
    };

    /// The binary that runs `subcommand` in this mix.
    pub fn binary_for(self, subcommand: &str) -> Bin {
        match subcommand {
            "server" | "session-server" | "trigger-server" | "relay" => self.server,
            "terminal" => self.daemon,
            "connect" | "ping" => self.connect,
            _ => self.tool,
        }
    }
}

thread_local! {
    /// The mix of the test running on this thread.
    static MIX: Cell<Mix> = const { Cell::new(Mix::TRYST) };
}

/// The mix of the test running on this thread, for its printed figures.
pub fn current_mix() -> String {
    let m = MIX.with(|m| m.get());
    format!(
        "server {:?}, daemon {:?}, connect {:?}",
        m.server, m.daemon, m.connect
    )
}

/// Runs `flow` with `mix` deciding which binary runs each subcommand it
/// starts (on this thread).
pub fn with_mix<T>(mix: Mix, flow: impl FnOnce() -> T) -> T {
    let before = MIX.with(|m| m.replace(mix));
    let out = flow();
    MIX.with(|m| m.set(before));
    out
}

thread_local! {
    /// The shared store of the test running on this thread (a
    /// `postgres://` URL), if it runs on one.
    static STORE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `flow` with every command it starts on the store at `url`
/// (through `TRYST_STORE`, which `--store` reads), on this thread.
pub fn with_store<T>(url: &str, flow: impl FnOnce() -> T) -> T {
    let before = STORE.with(|s| s.replace(Some(url.to_owned())));
    let out = flow();
    STORE.with(|s| *s.borrow_mut() = before);
    out
}

/// The binary this thread's mix runs `subcommand` with, with no inherited
/// `RUST_LOG` (the subcommand is not added), on this thread's store.
pub fn tryst_for(subcommand: &str) -> Command {
    let bin = MIX.with(|m| m.get()).binary_for(subcommand);
    let mut c = Command::new(bin.path());
    c.env_remove("RUST_LOG");
    match STORE.with(|s| s.borrow().clone()) {
        Some(url) => c.env("TRYST_STORE", url),
        None => c.env_remove("TRYST_STORE"),
    };
    c
}

/// Runs `flow` to its end on a two-worker runtime; the main future runs on
/// this thread (where [`with_mix`] set the mix).
pub fn block_on<T>(flow: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(flow)
}

/// The `tryst` binary, with no inherited `RUST_LOG`.
pub fn tryst() -> Command {
    let mut c = Command::new(Bin::Tryst.path());
    c.env_remove("RUST_LOG");
    c
}

impl Proc {
    /// Starts `tryst ARGS` (the binary of this thread's [`Mix`] for its
    /// subcommand), stderr to `log`, with `RUST_LOG` if given.
    pub fn start(args: &[&str], log: PathBuf, rust_log: Option<&str>) -> Proc {
        let mut cmd = tryst_for(args.first().copied().unwrap_or_default());
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        cmd.args(args);
        Proc::spawn(cmd, log)
    }
}
