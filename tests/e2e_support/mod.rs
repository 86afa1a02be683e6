//! What the end-to-end tests share: the binaries that `cargo test` built
//! (`tryst`, and `tryst-std` beside it, chosen per place by a [`Mix`]), and
//! [`Proc`], a child process whose stdout lines the test reads. Included by
//! each e2e test file with `#[path]`; each uses a subset.
#![allow(dead_code)]

pub mod cluster;
pub mod server_flows;
pub mod terminal_flows;

use std::cell::Cell;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest a child may take to print an awaited line or to exit.
pub const WAIT: Duration = Duration::from_secs(30);

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
    /// `connect`.
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
            "server" | "session-server" | "trigger-server" => self.server,
            "terminal" => self.daemon,
            "connect" => self.connect,
            _ => self.tool,
        }
    }
}

thread_local! {
    /// The mix of the test running on this thread.
    static MIX: Cell<Mix> = const { Cell::new(Mix::TRYST) };
}

/// Runs `flow` with `mix` deciding which binary runs each subcommand it
/// starts (on this thread).
pub fn with_mix<T>(mix: Mix, flow: impl FnOnce() -> T) -> T {
    let before = MIX.with(|m| m.replace(mix));
    let out = flow();
    MIX.with(|m| m.set(before));
    out
}

/// The binary this thread's mix runs `subcommand` with, with no inherited
/// `RUST_LOG` (the subcommand is not added).
pub fn tryst_for(subcommand: &str) -> Command {
    let bin = MIX.with(|m| m.get()).binary_for(subcommand);
    let mut c = Command::new(bin.path());
    c.env_remove("RUST_LOG");
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

/// Bytes as text, lossily.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A long-running child; killed (SIGKILL) when dropped.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    log: PathBuf,
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

    /// Starts `cmd` (which runs the binary), stdout read line by line,
    /// stderr to `log`.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(fs::File::create(&log).expect("log file")))
            .spawn()
            .expect("the tryst binary starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
            log,
        }
    }

    /// The first stdout line (old or new) for which `pick` gives a value.
    pub fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        if let Some(v) = self.seen.iter().find_map(|l| pick(l)) {
            return v;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = pick(&line);
                    self.seen.push(line);
                    if let Some(v) = found {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no {what} from the process; stdout so far: {:#?}\nstderr:\n{}",
                    self.seen,
                    self.log()
                ),
            }
        }
    }

    /// The value of the first stdout line `label: value`.
    pub fn value(&mut self, label: &str) -> String {
        let prefix = format!("{label}: ");
        self.wait_for(label, |l| l.strip_prefix(&prefix).map(str::to_owned))
    }

    /// The address printed on the first stdout line `label: ADDR`.
    pub fn addr(&mut self, label: &str) -> SocketAddr {
        self.value(label).parse().expect("an address")
    }

    /// Waits for a line containing `needle`.
    pub fn expect_line(&mut self, needle: &str) -> String {
        self.wait_for(needle, |l| l.contains(needle).then(|| l.to_owned()))
    }

    /// Kills the process with SIGKILL, as a crash or `kill -9` would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `within` for the exit status.
    pub fn term(&mut self, within: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not stop after SIGTERM; stderr:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the exit (it must come by itself): status, all of stdout,
    /// stderr.
    pub fn finish(mut self) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit; stdout so far: {:#?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status, self.seen.join("\n"), self.log())
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
