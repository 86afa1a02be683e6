//! `tryst-load`: drives a running `tryst server` (or one it starts) with
//! many simulated terminals speaking the real protocol, on loopback only,
//! and measures connection set-ups, registrations or keepalives per second
//! with their latency and the server's CPU; and the keepalive baseline, a
//! minimal UDP echo responder under the same shape of load (issue 16).
//!
//! Every loop is bounded: in count by `--terminals` (at most
//! [`run::MAX_TERMINALS`]), in time by `--seconds` plus fixed per-operation
//! timeouts; the process stops by itself.

#![forbid(unsafe_code)]

mod echo;
mod node;
mod procs;
mod run;
mod stats;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::procs::{Spawned, WindowUsage};
use crate::run::{Mode, Plan};
use crate::stats::{percentiles, Tally};

/// Longest measured window a run accepts, seconds.
const MAX_SECONDS: f64 = 600.0;

#[derive(Debug, Parser)]
#[command(name = "tryst-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Connection set-ups between pairs of terminals: request, trigger,
    /// poll, permission list (or inquiry), address inquiry, both address
    /// notifications; each session is then ended by both.
    Setups {
        #[command(flatten)]
        load: LoadArgs,
        /// The second embodiment: the target is asked about the requester
        /// (permission inquiry) instead of sending its list.
        #[arg(long)]
        inquiry: bool,
    },
    /// Registrations: each terminal registers again and again (a Noise IK
    /// handshake on a new stream each time).
    Registrations {
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Keepalives: each terminal sends tagged keepalives and waits for
    /// each tagged ack, as fast as the per-device limit allows.
    Keepalives {
        #[command(flatten)]
        load: LoadArgs,
    },
    /// The keepalive baseline's responder: echoes every datagram, one
    /// recv and one send each, until killed.
    EchoServer {
        /// Where to listen (loopback only).
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: SocketAddr,
    },
    /// Load on an echo responder shaped like the keepalive load.
    Echo {
        /// The responder; without it one is started (this binary's
        /// `echo-server`) and measured.
        #[arg(long)]
        target: Option<SocketAddr>,
        #[command(flatten)]
        common: CommonArgs,
    },
}

/// Flags every load shares.
#[derive(Debug, Args)]
struct CommonArgs {
    /// Simulated terminals (set-ups use them in pairs), or echo sockets.
    #[arg(long, default_value_t = 200)]
    terminals: usize,
    /// Length of the measured window.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Operations per second offered in total (open loop); without it
    /// each terminal starts its next operation when the last one ended.
    #[arg(long)]
    rate: Option<f64>,
    /// The server's process: its CPU seconds and memory over the window
    /// are reported (from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object on stdout (the human line goes to stderr).
    #[arg(long)]
    json: bool,
    /// Worker threads of the load's own runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Flags of the loads on a tryst server.
#[derive(Debug, Args)]
struct LoadArgs {
    /// The session server's control address (TCP, loopback).
    #[arg(long, required_unless_present = "spawn")]
    server: Option<SocketAddr>,
    /// The trigger server's address (UDP, loopback).
    #[arg(long, required_unless_present = "spawn")]
    trigger: Option<SocketAddr>,
    /// The session server's public key: 64 hex digits or its key file
    /// (`server.pub` in its data dir).
    #[arg(long, value_name = "KEY|FILE", required_unless_present = "spawn")]
    server_key: Option<String>,
    /// Start `tryst server` from this binary for the run (kernel-picked
    /// loopback ports, a fresh data dir, limits raised for the load) and
    /// measure it.
    #[arg(long, value_name = "PATH_TO_TRYST", conflicts_with_all = ["server", "trigger", "server_key"])]
    spawn: Option<PathBuf>,
    /// Where the spawned server's data dir goes (a fresh directory inside).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    scratch: PathBuf,
    /// One more argument for the spawned server (repeatable), e.g.
    /// `--server-arg=--keepalive-limit=1000,1ms`.
    #[arg(
        long = "server-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        requires = "spawn"
    )]
    server_args: Vec<String>,
    /// After the window, count the sessions the spawned server stored
    /// (`tryst sessions --json` on its data dir) against the set-ups this
    /// run saw complete: `stored_sessions`, `records_missing` in the JSON.
    #[arg(long, requires = "spawn")]
    count_records: bool,
    /// The server's keepalive limit per device (BURST,EVERY, as `tryst
    /// server --keepalive-limit`), which the keepalive load honours; a
    /// spawned server is given it too. Default: the core's 4,5s.
    #[arg(long, value_name = "BURST,EVERY")]
    keepalive_limit: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    /// An address that is not loopback.
    #[error("{0} is not a loopback address: tryst-load only loads servers on this machine")]
    NotLoopback(SocketAddr),
    /// A flag out of range.
    #[error("{0}")]
    Usage(String),
    /// The server key.
    #[error("server key {arg}: {reason}")]
    Key {
        /// The argument.
        arg: String,
        /// Why.
        reason: String,
    },
    /// A spawned process.
    #[error(transparent)]
    Proc(#[from] procs::ProcError),
    /// A socket or the runtime.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_cli(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("tryst-load: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the command; `Ok(false)` when the load completed nothing or
/// failed every operation.
fn run_cli(cli: Cli) -> Result<bool, LoadError> {
    match cli.command {
        Cmd::Setups { load, inquiry } => run_tryst(load, Mode::Setups { inquiry }),
        Cmd::Registrations { load } => run_tryst(load, Mode::Registrations),
        Cmd::Keepalives { load } => run_tryst(load, Mode::Keepalives),
        Cmd::EchoServer { bind } => {
            loopback(bind)?;
            let socket = UdpSocket::bind(bind)?;
            println!("echo: {}", socket.local_addr()?);
            echo::serve(&socket)?;
            Ok(true)
        }
        Cmd::Echo { target, common } => run_echo(target, common),
    }
}

fn loopback(addr: SocketAddr) -> Result<(), LoadError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(LoadError::NotLoopback(addr))
    }
}

fn check_common(common: &CommonArgs) -> Result<(), LoadError> {
    if !(common.seconds > 0.0 && common.seconds <= MAX_SECONDS) {
        return Err(LoadError::Usage(format!(
            "--seconds must be in (0, {MAX_SECONDS}]"
        )));
    }
    if common.terminals == 0 || common.terminals > run::MAX_TERMINALS {
        return Err(LoadError::Usage(format!(
            "--terminals must be in 1..={}",
            run::MAX_TERMINALS
        )));
    }
    if common.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(LoadError::Usage("--rate must be a positive number".into()));
    }
    Ok(())
}

/// What a spawned server is given beyond the defaults. For the keepalive
/// load, the shortest keepalive interval the protocol allows
/// ([`MIN_KEEPALIVE_INTERVAL`](tryst_core::wire::MIN_KEEPALIVE_INTERVAL),
/// unless `--server-arg` names one): each keepalive moves a simulated
/// terminal's clock on by one interval, and every hour of that clock the
/// terminal rekeys (a whole Noise IK registration), so at the default 20 s
/// every 180th keepalive was a registration (a third of the server's CPU
/// in the keepalive row went to X25519); at 5 s every 720th is, the mix of
/// a real device keeping a NAT binding open at that interval.
fn server_args(load: &LoadArgs, mode: Mode) -> Vec<String> {
    let mut args = load.server_args.clone();
    if let Some(limit) = &load.keepalive_limit {
        args.extend(["--keepalive-limit".to_owned(), limit.clone()]);
    }
    let named = args
        .iter()
        .any(|a| a == "--keepalive" || a.starts_with("--keepalive="));
    if mode == Mode::Keepalives && !named {
        let secs = tryst_core::wire::MIN_KEEPALIVE_INTERVAL.as_secs();
        args.extend(["--keepalive".to_owned(), format!("{secs}s")]);
    }
    args
}

/// Checks a `BURST,EVERY` limit (at least 1, an interval above zero),
/// as the server parses it.
fn parse_limit(text: &str) -> Result<tryst_core::ratelimit::Limit, String> {
    let usage = || format!("{text:?} is not a limit BURST,EVERY (e.g. 1000,1ms)");
    let (burst, every) = text.split_once(',').ok_or_else(usage)?;
    let burst: u32 = burst.trim().parse().map_err(|_| usage())?;
    let every = every.trim();
    let (digits, unit) = every.split_at(
        every
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(every.len()),
    );
    let n: u64 = digits.parse().map_err(|_| usage())?;
    let every = match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        _ => return Err(usage()),
    };
    if burst == 0 || every.is_zero() {
        return Err(usage());
    }
    Ok(tryst_core::ratelimit::Limit::one_every(burst, every))
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, LoadError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.clamp(1, 64))
        .enable_all()
        .build()?)
}

fn run_tryst(load: LoadArgs, mode: Mode) -> Result<bool, LoadError> {
    check_common(&load.common)?;
    procs::raise_nofile();
    let spawned: Option<Spawned> = match &load.spawn {
        Some(tryst) => Some(procs::spawn_server(
            tryst,
            &load.scratch,
            load.common.terminals,
            &server_args(&load, mode),
        )?),
        None => None,
    };
    let (control, trigger, key_arg, pid) = match &spawned {
        Some(s) => (
            s.addr("control"),
            s.addr("trigger"),
            s.value("server key").map(str::to_owned),
            Some(s.pid()),
        ),
        None => (
            load.server,
            load.trigger,
            load.server_key.clone(),
            load.common.server_pid,
        ),
    };
    let (Some(control), Some(trigger), Some(key_arg)) = (control, trigger, key_arg) else {
        return Err(LoadError::Usage(
            "--server, --trigger and --server-key (or --spawn) are needed".into(),
        ));
    };
    loopback(control)?;
    loopback(trigger)?;
    let server_key = read_key(&key_arg)?;
    let plan = Plan {
        control,
        trigger,
        server_key,
        terminals: load.common.terminals,
        seconds: load.common.seconds,
        rate: load.common.rate,
        mode,
        server_pid: pid,
        keepalive_limit: match &load.keepalive_limit {
            Some(text) => parse_limit(text).map_err(LoadError::Usage)?,
            None => tryst_core::ratelimit::KEEPALIVES,
        },
    };
    let client_cpu0 = procs::cpu_seconds(std::process::id());
    let outcome = runtime(load.common.threads)?.block_on(run::run(plan));
    let client_cpu = procs::cpu_seconds(std::process::id())
        .zip(client_cpu0)
        .map(|(b, a)| b - a);
    let name = match mode {
        Mode::Setups { inquiry: false } => "setups",
        Mode::Setups { inquiry: true } => "setups-inquiry",
        Mode::Registrations => "registrations",
        Mode::Keepalives => "keepalives",
    };
    let mut extra = json!({
        "prepare_s": round(outcome.prepare_s, 3),
        "prepare_failed": outcome.prepare_failed,
        "spawned": spawned.is_some(),
    });
    if load.count_records {
        if let (Some(tryst), Some(dir)) = (&load.spawn, spawned.as_ref().and_then(Spawned::dir)) {
            let stored = procs::stored_sessions(tryst, dir);
            extra["stored_sessions"] = json!(stored);
            // Every set-up the load saw complete has its row in the store.
            extra["records_missing"] =
                json!(stored.map(|n| outcome.tally.completed.saturating_sub(n)));
        }
    }
    let ok = report(
        name,
        &load.common,
        outcome.tally,
        outcome.server,
        client_cpu,
        extra,
    );
    drop(spawned);
    Ok(ok)
}

fn run_echo(target: Option<SocketAddr>, common: CommonArgs) -> Result<bool, LoadError> {
    check_common(&common)?;
    procs::raise_nofile();
    let spawned = match target {
        Some(t) => {
            loopback(t)?;
            None
        }
        None => {
            let exe = std::env::current_exe()?;
            let mut command = Command::new(exe);
            command.args(["echo-server", "--bind", "127.0.0.1:0"]);
            let log = procs::scratch_path(&std::env::temp_dir(), "echo").with_extension("log");
            Some(procs::spawn_announcing(
                "echo-server",
                command,
                &log,
                &["echo"],
                None,
            )?)
        }
    };
    let target = match (&spawned, target) {
        (_, Some(t)) => t,
        (Some(s), None) => s
            .addr("echo")
            .ok_or_else(|| LoadError::Usage("the echo server printed no address".into()))?,
        (None, None) => return Err(LoadError::Usage("no echo target".into())),
    };
    let pid = spawned.as_ref().map(Spawned::pid).or(common.server_pid);
    let setup = Duration::from_millis(300) + Duration::from_micros(20 * common.terminals as u64);
    let start = Instant::now() + setup;
    let end = start + Duration::from_secs_f64(common.seconds);
    let client_cpu0 = procs::cpu_seconds(std::process::id());
    let (tally, usage) = runtime(common.threads)?.block_on(async {
        let sampler = tokio::spawn(procs::sample_window(pid, start, end));
        let tally = echo::load(target, common.terminals, start, end, common.rate).await;
        (tally, sampler.await.unwrap_or_default())
    });
    let client_cpu = procs::cpu_seconds(std::process::id())
        .zip(client_cpu0)
        .map(|(b, a)| b - a);
    let ok = report(
        "echo",
        &common,
        tally,
        usage,
        client_cpu,
        json!({ "spawned": spawned.is_some() }),
    );
    drop(spawned);
    Ok(ok)
}

fn read_key(arg: &str) -> Result<tryst_core::wire::PublicKey, LoadError> {
    let looks_hex = arg.len() == 64 && arg.bytes().all(|b| b.is_ascii_hexdigit());
    let text = if looks_hex {
        arg.to_owned()
    } else {
        std::fs::read_to_string(arg).map_err(|e| LoadError::Key {
            arg: arg.into(),
            reason: e.to_string(),
        })?
    };
    tryst_core::identity::parse_public_key(text.trim().as_bytes()).map_err(|e| LoadError::Key {
        arg: arg.into(),
        reason: format!("{e:?}"),
    })
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// Prints the run's JSON object and human line; whether it completed
/// something and not only errors.
fn report(
    mode: &str,
    common: &CommonArgs,
    mut tally: Tally,
    server: WindowUsage,
    client_cpu_s: Option<f64>,
    extra: serde_json::Value,
) -> bool {
    let p = percentiles(&mut tally.latencies_us);
    let per_s = tally.completed as f64 / common.seconds;
    let cpu_per_op_us = server
        .cpu_s
        .filter(|_| tally.completed > 0)
        .map(|cpu| round(cpu * 1e6 / tally.completed as f64, 1));
    let mut object = json!({
        "mode": mode,
        "terminals": common.terminals,
        "seconds": common.seconds,
        "rate": common.rate,
        "completed": tally.completed,
        "completed_per_s": round(per_s, 1),
        "errors": tally.errors,
        "p50_ms": round(p.p50_ms, 3),
        "p99_ms": round(p.p99_ms, 3),
        "p999_ms": round(p.p999_ms, 3),
        "max_ms": round(p.max_ms, 3),
        "server_cpu_s": server.cpu_s.map(|c| round(c, 3)),
        "server_cpu_us_per_op": cpu_per_op_us,
        "server_rss_start_kib": server.rss_start_kib,
        "server_rss_end_kib": server.rss_end_kib,
        "client_cpu_s": client_cpu_s.map(|c| round(c, 3)),
        "throttled": tally.throttled,
    });
    if let (Some(o), Some(e)) = (object.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    let rate = common
        .rate
        .map_or("closed loop".to_owned(), |r| format!("offered {r}/s"));
    let cpu = match (server.cpu_s, cpu_per_op_us) {
        (Some(c), Some(us)) => format!(", server {c:.2} CPU s ({us} us/op)"),
        (Some(c), None) => format!(", server {c:.2} CPU s"),
        _ => String::new(),
    };
    let line = format!(
        "{mode}: {} completed in {} s = {per_s:.1}/s ({rate}, {} terminals), p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {} errors, {} throttled{cpu}",
        tally.completed, common.seconds, common.terminals, p.p50_ms, p.p99_ms, p.p999_ms, tally.errors, tally.throttled
    );
    if common.json {
        println!("{object}");
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    tally.completed > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        for ok in ["127.0.0.1:7400", "127.9.8.7:1", "[::1]:7401"] {
            assert!(loopback(ok.parse().expect("addr")).is_ok(), "{ok}");
        }
        for bad in [
            "10.0.0.1:7400",
            "192.168.1.2:1",
            "8.8.8.8:53",
            "[2001:db8::1]:1",
        ] {
            assert!(
                matches!(
                    loopback(bad.parse().expect("addr")),
                    Err(LoadError::NotLoopback(_))
                ),
                "{bad}"
            );
        }
    }

    /// `LoadArgs` as clap parses them from `tryst-load keepalives ARGS`.
    fn load_args(args: &[&str]) -> LoadArgs {
        let cli =
            Cli::try_parse_from(["tryst-load", "keepalives"].iter().chain(args)).expect("flags");
        match cli.command {
            Cmd::Keepalives { load } => load,
            _ => panic!("not the keepalive load"),
        }
    }

    #[test]
    fn a_spawned_keepalive_server_gets_the_shortest_interval_so_few_keepalives_are_rekeys() {
        let load = load_args(&["--spawn", "/bin/true", "--keepalive-limit", "1000,1ms"]);
        let args = server_args(&load, Mode::Keepalives);
        assert_eq!(
            args,
            ["--keepalive-limit", "1000,1ms", "--keepalive", "5s"].map(String::from)
        );
        // The other loads keep the server's default, and one named wins.
        assert!(!server_args(&load, Mode::Registrations).contains(&"--keepalive".to_owned()));
        let named = load_args(&["--spawn", "/bin/true", "--server-arg=--keepalive=30s"]);
        assert_eq!(
            server_args(&named, Mode::Keepalives),
            ["--keepalive=30s".to_owned()]
        );
    }

    #[test]
    fn the_server_key_is_read_from_hex_or_a_file() {
        let hex = "11".repeat(32);
        let key = read_key(&hex).expect("hex key");
        let file = std::env::temp_dir().join(format!("tryst-load-key-{}", std::process::id()));
        std::fs::write(&file, format!("{hex}\n")).expect("write");
        let from_file = read_key(file.to_str().expect("path"));
        let _ = std::fs::remove_file(&file);
        assert_eq!(from_file.expect("file key"), key);
        assert!(read_key("not-a-key-and-no-such-file").is_err());
    }
}
