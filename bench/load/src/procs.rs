//! Processes: the CPU and memory of a server from `/proc`, the descriptor
//! limit, and a `tryst server` (or an echo responder) started for a run.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a spawned server may take to print its key and addresses.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a process could not be started or read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The program would not start.
    #[error("cannot start {path}: {source}")]
    Start {
        /// The program.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It started but did not print what it should in time.
    #[error("{what} did not print {missing} within {secs} s (log: {log})")]
    NoAnnouncement {
        /// Which process.
        what: &'static str,
        /// What was missing.
        missing: &'static str,
        /// The wait.
        secs: u64,
        /// Where its stderr went.
        log: String,
    },
}

/// CPU seconds (user + system) that process `pid` used so far, from
/// `/proc/PID/stat`; `None` if it cannot be read.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields start after its ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    Some((utime + stime) / ticks)
}

/// The resident set of process `pid` in KiB (`VmRSS`), if readable.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Raises this process's open-file limit to its hard limit (each terminal
/// holds a UDP socket and a stream); children inherit it. Returns the limit.
pub fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        limit.maximum.unwrap_or(u64::MAX)
    } else {
        limit.current.unwrap_or(u64::MAX)
    }
}

/// A child process that is killed (and reaped) when dropped, with its
/// scratch directory removed.
pub struct Spawned {
    child: Child,
    scratch: Option<PathBuf>,
    /// Its stderr log, removed with it (kept when it failed to start).
    log: Option<PathBuf>,
    /// The stdout lines it printed before it was ready.
    pub lines: Vec<String>,
}

impl Spawned {
    /// Its process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The value of its first stdout line `label: value`.
    pub fn value(&self, label: &str) -> Option<&str> {
        let prefix = format!("{label}: ");
        self.lines.iter().find_map(|l| l.strip_prefix(&prefix))
    }

    /// Its data dir (a spawned server's), if it has one.
    pub fn dir(&self) -> Option<&Path> {
        self.scratch.as_deref()
    }

    /// The address on its first stdout line `label: ADDR`.
    pub fn addr(&self, label: &str) -> Option<SocketAddr> {
        self.value(label).and_then(|v| v.parse().ok())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(log) = &self.log {
            let _ = std::fs::remove_file(log);
        }
    }
}

/// A fresh scratch directory path under `parent` (not created: `tryst
/// server` creates its data dir with mode 0700 itself).
pub fn scratch_path(parent: &Path, what: &str) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    parent.join(format!("tryst-load-{what}-{}-{stamp}", std::process::id()))
}

/// Starts `command` (stdout piped, stderr to `log`) and waits until its
/// stdout has lines for every label in `labels`; later lines are read and
/// dropped so it never blocks on a full pipe.
pub fn spawn_announcing(
    what: &'static str,
    mut command: Command,
    log: &Path,
    labels: &[&'static str],
    scratch: Option<PathBuf>,
) -> Result<Spawned, ProcError> {
    let path = format!("{:?}", command.get_program());
    let stderr = std::fs::File::create(log).map_err(|source| ProcError::Start {
        path: path.clone(),
        source,
    })?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|source| ProcError::Start {
            path: path.clone(),
            source,
        })?;
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The receiver is gone once the process is ready: drop the rest.
                let _ = tx.send(line);
            }
        });
    }
    let mut spawned = Spawned {
        child,
        scratch,
        log: Some(log.to_path_buf()),
        lines: Vec::new(),
    };
    let deadline = Instant::now() + SPAWN_TIMEOUT;
    for label in labels {
        while spawned.value(label).is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => spawned.lines.push(line),
                Err(_) => {
                    spawned.log = None;
                    return Err(ProcError::NoAnnouncement {
                        what,
                        missing: label,
                        secs: SPAWN_TIMEOUT.as_secs(),
                        log: log.display().to_string(),
                    });
                }
            }
        }
    }
    Ok(spawned)
}

/// The session-server limits a spawned server gets for `terminals`
/// simulated terminals: `--max-channels` with room for every terminal and
/// its re-registrations (the default, 100,000, already suffices up to
/// 50,000 terminals). The per-source and per-identity rate limits are
/// compile-time constants of the core and stay as they are: the load
/// spreads its terminals over 127.0.0.0/8 and honours them instead.
pub fn server_limits(terminals: usize) -> Vec<String> {
    let channels = (terminals * 2 + 1024).max(tryst_core::session_server::DEFAULT_MAX_CHANNELS);
    vec!["--max-channels".into(), channels.to_string()]
}

/// Starts `tryst server` from `tryst` on kernel-picked loopback ports with
/// a fresh data dir under `parent`, logging warnings only (per-event info
/// logs would be part of what is measured).
pub fn spawn_server(
    tryst: &Path,
    parent: &Path,
    terminals: usize,
    extra: &[String],
) -> Result<Spawned, ProcError> {
    let dir = scratch_path(parent, "server");
    let log = PathBuf::from(format!("{}.log", dir.display()));
    let mut command = Command::new(tryst);
    command
        .arg("server")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--control", "127.0.0.1:0", "--trigger", "127.0.0.1:0"])
        .args(server_limits(terminals))
        .args(extra)
        .env("RUST_LOG", "warn");
    spawn_announcing(
        "tryst server",
        command,
        &log,
        &["server key", "control", "trigger"],
        Some(dir),
    )
}

/// How many sessions the store in data dir `dir` holds, from `tryst
/// sessions --data-dir DIR --json` (bounded: it is killed after
/// [`SPAWN_TIMEOUT`]); `None` if that fails.
pub fn stored_sessions(tryst: &Path, dir: &Path) -> Option<u64> {
    let mut child = Command::new(tryst)
        .arg("sessions")
        .arg("--data-dir")
        .arg(dir)
        .arg("--json")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).map(|_| text)
    });
    let deadline = Instant::now() + SPAWN_TIMEOUT;
    while child.try_wait().ok()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = reader.join().ok()?.ok()?;
    let list: serde_json::Value = serde_json::from_str(&text).ok()?;
    list.as_array().map(|a| a.len() as u64)
}

/// A process's CPU and memory over a measured window.
#[derive(Debug, Default, Clone, Copy)]
pub struct WindowUsage {
    /// CPU seconds it used inside the window.
    pub cpu_s: Option<f64>,
    /// Its resident set at the window's start, KiB.
    pub rss_start_kib: Option<u64>,
    /// Its resident set at the window's end, KiB.
    pub rss_end_kib: Option<u64>,
}

/// Samples process `pid` at `start` and at `end` (sleeping between).
pub async fn sample_window(pid: Option<u32>, start: Instant, end: Instant) -> WindowUsage {
    let Some(pid) = pid else {
        return WindowUsage::default();
    };
    tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
    let cpu0 = cpu_seconds(pid);
    let rss_start_kib = rss_kib(pid);
    tokio::time::sleep_until(tokio::time::Instant::from_std(end)).await;
    let cpu1 = cpu_seconds(pid);
    WindowUsage {
        cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
        rss_start_kib,
        rss_end_kib: rss_kib(pid),
    }
}
