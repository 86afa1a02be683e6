//! [`Proc`], a child process whose stdout lines a test reads, for any
//! binary (`tryst`, `tryst-std`): the part of the e2e support that needs
//! neither a driver crate nor a `CARGO_BIN_EXE_*`, so tests of either
//! package include it (`#[path = "e2e_support/proc.rs"]`).
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest a child may take to print an awaited line or to exit.
pub const WAIT: Duration = Duration::from_secs(30);

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

    /// Sends `signal` (e.g. `STOP`, `CONT`) with `kill -SIGNAL`.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} failed");
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
