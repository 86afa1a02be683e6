//! tryst through the real binary: `tryst server`, a `tryst terminal
//! --recv-dir` (the receiver) and `tryst connect --send FILE` (the sender),
//! all on 127.0.0.1, with the command lines of issue 6.
//!
//! Goodput: file size over the time from the first byte landing in the
//! receive directory to the complete file being there (the harness polls the
//! directory every few milliseconds); the connect command's whole wall time
//! (registration, request, punching, handshake, transfer, close) is in the note.
//! CPU: the connect process's rusage (sender) and the terminal's CPU from
//! `/proc` over the connect's lifetime (receiver).

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::procs;
use crate::report::Sample;

/// Where the workspace builds the binary by default (relative to this crate).
pub fn default_tryst() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tryst")
}

/// `../target/release/tryst-std` next to this crate: the release build of
/// the same CLI on the blocking std driver (`cargo build --release -p tryst-std --bin tryst-std`).
pub fn default_tryst_std() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tryst-std")
}

/// Checks that `tryst` exists and has the three subcommands this needs;
/// the error says what is missing.
pub fn check(tryst: &Path) -> Result<()> {
    if !tryst.exists() {
        bail!(
            "{} does not exist (build it: cargo build --release -p tryst-tokio --bin tryst)",
            tryst.display()
        );
    }
    let help = Command::new(tryst)
        .arg("--help")
        .output()
        .with_context(|| format!("running {} --help", tryst.display()))?;
    let text = String::from_utf8_lossy(&help.stdout);
    let missing: Vec<&str> = ["server", "terminal", "connect"]
        .into_iter()
        .filter(|c| !text.lines().any(|l| l.trim_start().starts_with(c)))
        .collect();
    if !missing.is_empty() {
        bail!("this tryst has no `{}` command yet", missing.join("`, `"));
    }
    Ok(())
}

/// Writes `size` bytes of pseudo-random data to `path` unless a file of that
/// size is already there (reused across runs).
pub fn make_file(path: &Path, size: u64) -> Result<()> {
    if std::fs::metadata(path).map(|m| m.len()).ok() == Some(size) {
        return Ok(());
    }
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            // xorshift64*: incompressible enough, fast.
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            w.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

struct Killer(Vec<Child>);

impl Drop for Killer {
    fn drop(&mut self) {
        for c in &self.0 {
            procs::terminate(c);
        }
        for c in &self.0 {
            if procs::wait_timeout(c, Duration::from_secs(5)).is_err() {
                procs::kill(c);
            }
        }
    }
}

fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let r = f.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(n)
}

/// Bytes written so far to the biggest file in the receive directory
/// (partial or final). The receiver sizes its partial file up front
/// (`set_len`), so this counts allocated blocks, not the length: on tmpfs
/// and most file systems a block exists only once data was written to it.
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.blocks() * 512)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// A `tryst server` and a receiving `tryst terminal --recv-dir` on
/// loopback, started fresh in one scratch folder; both are stopped when
/// this is dropped.
pub struct Stack {
    /// Kept for its `Drop`: stops the server and the terminal.
    _processes: Killer,
    /// The receiving terminal's process id (for its CPU time).
    pub term_pid: u32,
    /// `--name bench-send ...`: what a sender passes to `tryst connect`.
    pub sender_args: Vec<OsString>,
    /// The receiver's folder.
    pub recv_dir: PathBuf,
    /// The scratch folder (logs are written here).
    pub dir: PathBuf,
}

impl Stack {
    /// Starts the server and the receiving terminal in `work/<name>`
    /// (removed first), once the server wrote its public key.
    pub fn start(tryst: &Path, work: &Path, name: &str) -> Result<Stack> {
        let dir = work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let (data, recv_state, send_state, recv_dir) = (
            dir.join("server"),
            dir.join("recv-state"),
            dir.join("send-state"),
            dir.join("recv"),
        );
        for d in [&data, &recv_state, &send_state, &recv_dir] {
            std::fs::create_dir_all(d)?;
        }
        let control = format!("127.0.0.1:{}", procs::free_port()?);
        let trigger = format!("127.0.0.1:{}", procs::free_port()?);
        let mut guard = Killer(Vec::new());
        guard.0.push(
            Command::new(tryst)
                .arg("server")
                .arg("--data-dir")
                .arg(&data)
                .args(["--control", &control, "--trigger", &trigger])
                .stdout(log(&dir, "server.out")?)
                .stderr(log(&dir, "server.err")?)
                .spawn()
                .context("starting tryst server")?,
        );
        let server_pub = data.join("server.pub");
        let t = Instant::now();
        while !server_pub.exists() {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("tryst server wrote no {} in 10 s", server_pub.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        let role_args = |name: &str, state: &Path| -> Vec<OsString> {
            let mut v: Vec<OsString> =
                ["--name", name, "--server", &control, "--trigger", &trigger]
                    .iter()
                    .map(OsString::from)
                    .collect();
            v.extend([
                OsString::from("--server-key"),
                server_pub.clone().into(),
                OsString::from("--state-dir"),
                state.into(),
            ]);
            v
        };
        guard.0.push(
            Command::new(tryst)
                .arg("terminal")
                .args(role_args("bench-recv", &recv_state))
                .args(["--allow", "bench-send", "--recv-dir"])
                .arg(&recv_dir)
                .stdout(log(&dir, "terminal.out")?)
                .stderr(log(&dir, "terminal.err")?)
                .spawn()
                .context("starting tryst terminal")?,
        );
        let term_pid = guard.0[1].id();
        Ok(Stack {
            _processes: guard,
            term_pid,
            sender_args: role_args("bench-send", &send_state),
            recv_dir,
            dir,
        })
    }

    /// Starts `tryst connect ... bench-recv --send FILE` (logs in the scratch folder).
    pub fn spawn_connect(&self, tryst: &Path, file: &Path) -> Result<Child> {
        Command::new(tryst)
            .arg("connect")
            .args(&self.sender_args)
            .arg("bench-recv")
            .arg("--send")
            .arg(file)
            .stdout(log(&self.dir, "connect.out")?)
            .stderr(log(&self.dir, "connect.err")?)
            .spawn()
            .context("starting tryst connect")
    }

    /// The last line the last connect printed on stderr.
    pub fn connect_error(&self) -> String {
        let err = std::fs::read_to_string(self.dir.join("connect.err")).unwrap_or_default();
        err.lines().last().unwrap_or("").to_owned()
    }
}

/// A log file in `dir` as a child's stdout or stderr.
fn log(dir: &Path, name: &str) -> Result<Stdio> {
    Ok(File::create(dir.join(name))?.into())
}

/// Polls the receive folder until a received file has bytes; whether it did before `connect` ended.
pub fn first_byte_or_exit(
    connect: &Child,
    recv_dir: &Path,
    every: Duration,
) -> Result<(Option<Instant>, procs::Exit)> {
    let start = Instant::now();
    loop {
        if let Some(exit) = procs::try_wait(connect)? {
            return Ok((None, exit));
        }
        if dir_bytes(recv_dir) > 0 {
            return Ok((Some(Instant::now()), procs::wait(connect)?));
        }
        if start.elapsed() > Duration::from_secs(900) {
            procs::kill(connect);
            let _ = procs::wait(connect);
            bail!("tryst connect ran for 15 minutes");
        }
        std::thread::sleep(every);
    }
}

/// One transfer of `file` (`size` bytes) through fresh server, terminal and
/// connect processes in `work/binary-run`.
pub fn run_once(tryst: &Path, file: &Path, size: u64, work: &Path) -> Result<Sample> {
    let stack = Stack::start(tryst, work, "binary-run")?;
    let recv_dir = &stack.recv_dir;
    // The terminal needs a moment to register; connect answers "not permitted"
    // (exit 3) until it has, so retry a few times.
    let received = recv_dir.join(file.file_name().context("file name")?);
    let mut attempt = 0;
    loop {
        attempt += 1;
        std::thread::sleep(Duration::from_millis(if attempt == 1 { 500 } else { 300 }));
        let rcv_cpu0 = procs::proc_cpu_secs(stack.term_pid)?;
        let start = Instant::now();
        let connect = stack.spawn_connect(tryst, file)?;
        let (mut first, mut last) = (None, None);
        let exit = loop {
            if let Some(e) = procs::try_wait(&connect)? {
                break e;
            }
            let n = dir_bytes(recv_dir);
            if n > 0 && first.is_none() {
                first = Some(Instant::now());
            }
            if last.is_none() && std::fs::metadata(&received).map(|m| m.len()).ok() == Some(size) {
                last = Some(Instant::now());
            }
            if start.elapsed() > Duration::from_secs(900) {
                procs::kill(&connect);
                let _ = procs::wait(&connect);
                bail!("tryst connect ran for 15 minutes");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let wall = start.elapsed();
        if exit.code == Some(3) && attempt < 10 && first.is_none() {
            continue;
        }
        if !exit.success() {
            bail!(
                "tryst connect exited {:?}: {}",
                exit.code,
                stack.connect_error()
            );
        }
        // The terminal may still be checking and linking the file.
        let t = Instant::now();
        while std::fs::metadata(&received).map(|m| m.len()).ok() != Some(size) {
            if t.elapsed() > Duration::from_secs(10) {
                bail!("{} did not arrive complete", received.display());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let last = last.unwrap_or_else(Instant::now);
        if first.is_none() {
            bail!("never saw the file being written in {}", recv_dir.display());
        }
        let rcv_cpu = procs::proc_cpu_secs(stack.term_pid)? - rcv_cpu0;
        let first = first.unwrap_or(start);
        let ok = same_contents(file, &received)?;
        if !ok {
            bail!("received file differs from the sent one");
        }
        return Ok(Sample {
            bytes: size,
            secs: (last - first).as_secs_f64(),
            snd_cpu: exit.cpu_secs,
            rcv_cpu,
            note: format!("connect wall {:.3} s incl. setup", wall.as_secs_f64()),
        });
    }
}

/// Whether `a` and `b` hold the same bytes.
pub fn same_file(a: &Path, b: &Path) -> Result<bool> {
    same_contents(a, b)
}
