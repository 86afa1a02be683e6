//! Time to first byte of a one-shot `tryst connect --send` (issue 16): from
//! the start of the sender's process to the first file byte in the
//! receiver's folder, on loopback, with the server and the receiving
//! terminal already running (as a phone finds its home device).
//!
//! The baseline in the same run is the floor any one-shot command pays:
//! `tryst --version`, process start to exit. Each run is interleaved with a
//! baseline run, so both see the same load.
//!
//! Runs are paced [`PACE`] apart, under the server's per-identity
//! registration limit.
//!
//! The receive folder is polled every 200 us, so the first-byte time is
//! late by at most that (plus one scheduling delay).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::binary::{self, Stack};
use crate::procs;

/// How often the receive folder is looked at.
const POLL: Duration = Duration::from_micros(200);
/// Most tries of the warm-up connect while the terminal registers.
const WARM_UP_TRIES: usize = 20;
/// The least time between two measured runs' starts: the session server
/// lets one identity register 5 times at once and then once every 10 s
/// (`IDENTITY_REGISTRATIONS`), and each one-shot `connect` registers, so
/// faster runs would measure the limit's backoff, not the set-up.
const PACE: Duration = Duration::from_millis(10_500);

/// One run's three clocks, in seconds from the sender's spawn.
struct Times {
    first_byte: f64,
    exit: f64,
    baseline: f64,
}

/// Runs `runs` one-shot sends of a `size`-byte file through `tryst` and
/// prints each run and the medians.
pub fn run(tryst: &Path, size: u64, runs: usize, work: &Path) -> Result<()> {
    binary::check(tryst)?;
    let file = work.join("ttfb.dat");
    binary::make_file(&file, size)?;
    let stack = Stack::start(tryst, work, "ttfb-run")?;
    warm_up(tryst, &stack, &file)?;
    println!(
        "tryst-bench ttfb: {} (server and receiving terminal running), {size} bytes, {runs} run(s)",
        tryst.display()
    );
    let mut all = Vec::with_capacity(runs);
    let mut last_start: Option<Instant> = None;
    for run in 1..=runs {
        if let Some(at) = last_start {
            std::thread::sleep(PACE.saturating_sub(at.elapsed()));
        }
        last_start = Some(Instant::now());
        let t = once(tryst, &stack, &file)?;
        println!(
            "  run {run}: first byte {:7.1} ms, connect exit {:7.1} ms, baseline (tryst --version) {:5.1} ms",
            t.first_byte * 1e3,
            t.exit * 1e3,
            t.baseline * 1e3
        );
        all.push(t);
    }
    let median = |pick: fn(&Times) -> f64| {
        let mut v: Vec<f64> = all.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (first, exit, base) = (
        median(|t| t.first_byte),
        median(|t| t.exit),
        median(|t| t.baseline),
    );
    println!(
        "median: first byte {:.1} ms, exit {:.1} ms, baseline {:.1} ms; first byte = {:.1}x the baseline",
        first * 1e3,
        exit * 1e3,
        base * 1e3,
        first / base
    );
    Ok(())
}

/// Sends once, retrying while the terminal is not yet registered (the
/// server's one answer for that is "not permitted", exit 3).
fn warm_up(tryst: &Path, stack: &Stack, file: &Path) -> Result<()> {
    for _ in 0..WARM_UP_TRIES {
        std::thread::sleep(Duration::from_millis(300));
        clear(&stack.recv_dir)?;
        let connect = stack.spawn_connect(tryst, file)?;
        let exit = procs::wait(&connect)?;
        if exit.success() {
            return Ok(());
        }
        if exit.code != Some(3) {
            bail!(
                "tryst connect exited {:?}: {}",
                exit.code,
                stack.connect_error()
            );
        }
    }
    bail!("the receiving terminal was not reachable after {WARM_UP_TRIES} tries")
}

/// One measured send and one baseline run.
fn once(tryst: &Path, stack: &Stack, file: &Path) -> Result<Times> {
    clear(&stack.recv_dir)?;
    let start = Instant::now();
    let connect = stack.spawn_connect(tryst, file)?;
    let (first, exit) = binary::first_byte_or_exit(&connect, &stack.recv_dir, POLL)?;
    let exit_at = start.elapsed();
    if !exit.success() {
        bail!(
            "tryst connect exited {:?}: {}",
            exit.code,
            stack.connect_error()
        );
    }
    let first = first.context("connect ended before any byte reached the receive folder")?;
    let name = file.file_name().context("file name")?;
    let received = stack.recv_dir.join(name);
    let t = Instant::now();
    while !received.exists() {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("{} did not arrive", received.display());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if !binary::same_file(file, &received)? {
        bail!("received file differs from the sent one");
    }
    let base_start = Instant::now();
    let status = Command::new(tryst)
        .arg("--version")
        .output()
        .context("running tryst --version")?;
    let baseline = base_start.elapsed();
    if !status.status.success() {
        bail!("tryst --version failed");
    }
    Ok(Times {
        first_byte: (first - start).as_secs_f64(),
        exit: exit_at.as_secs_f64(),
        baseline: baseline.as_secs_f64(),
    })
}

/// Empties the receive folder, so the next first byte is the next file's.
fn clear(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        std::fs::remove_file(entry?.path())?;
    }
    Ok(())
}
