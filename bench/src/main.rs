//! `tryst-bench`: file throughput on loopback (127.0.0.1 only) through tryst,
//! beside two baselines measured in the same run: `iperf3 -u -l 1350 -b 0`
//! and a bulk transfer over quinn. Prints each run, then a table of medians,
//! ratios to both baselines and CPU per side. See README.md.

mod aead;
mod binary;
mod iperf;
mod machine;
#[cfg(feature = "machine")]
mod memory;
mod procs;
mod quic;
mod report;
mod ttfb;

/// Every allocation counted per machine (`tryst-bench memory`).
#[cfg(feature = "machine")]
#[global_allocator]
static ALLOCATOR: memory::Counting = memory::Counting;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use report::{Row, Sample};

/// Loopback file-throughput benchmark: tryst beside iperf3 (UDP) and quinn (QUIC).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Every path (or those named by --only), interleaved run by run, then the table.
    Run(RunArgs),
    /// Baseline 1 only: iperf3 -u -l 1350 -b 0.
    Iperf3(Common),
    /// Baseline 2 only: quinn, one unidirectional stream, two processes.
    Quinn(Common),
    /// tryst's peer-session machine alone, two sessions in memory, one process.
    Machine(Common),
    /// tryst through the real binary: server, terminal --recv-dir, connect --send.
    Binary(BinaryArgs),
    /// The same through tryst-std, the binary on the blocking std driver.
    StdBinary(BinaryArgs),
    /// Time to first byte of a one-shot `tryst connect --send`, beside
    /// `tryst --version` (a process's start and exit) in the same run.
    Ttfb {
        /// Bytes of the file sent each run.
        #[arg(long, default_value = "1M", value_parser = parse_size)]
        size: u64,
        /// Measured runs (after one warm-up send); medians are printed.
        #[arg(long, default_value_t = 9)]
        runs: usize,
        /// The binary (default: ../target/release/tryst next to this crate;
        /// pass target/release/tryst-std for the blocking driver).
        #[arg(long)]
        tryst: Option<PathBuf>,
        /// Scratch directory (default: /dev/shm when present).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// AES-256-GCM per packet: aes-gcm (tryst-core's) beside ring (quinn's), no I/O.
    Aead {
        /// Bytes to seal with each.
        #[arg(long, default_value = "256M", value_parser = parse_size)]
        size: u64,
        /// Payload bytes per packet.
        #[arg(long, default_value_t = 1414)]
        packet: usize,
    },
    /// Live heap bytes per registered device in the core's trigger server
    /// and session server, at 10k, 100k and 1M devices (those up to
    /// --devices) and at --devices.
    Memory {
        /// Devices registered (stream, Noise IK, confirm, key install, first keepalive).
        #[arg(long, default_value_t = 1_000_000)]
        devices: u64,
    },
    /// (internal) quinn receiver role.
    #[command(hide = true)]
    QuinnRecv {
        #[arg(long)]
        cert_out: PathBuf,
    },
    /// (internal) quinn sender role.
    #[command(hide = true)]
    QuinnSend {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        size: u64,
    },
}

#[derive(Debug, Clone, Args)]
struct Common {
    /// Bytes per transfer: a number with an optional K, M or G suffix (powers of 1024).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    size: u64,
    /// Runs per path; the table shows medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Scratch directory for the test file, certificates and the binary's state
    /// (default: /dev/shm when present, so file I/O is memory speed).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
struct BinaryArgs {
    #[command(flatten)]
    common: Common,
    /// The tryst binary (default: ../target/release/tryst next to this crate).
    #[arg(long)]
    tryst: Option<PathBuf>,
    /// The tryst-std binary, the same CLI on the blocking std driver
    /// (default: ../target/release/tryst-std next to this crate).
    #[arg(long)]
    tryst_std: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Iperf3,
    Quinn,
    Machine,
    Binary,
    StdBinary,
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    #[command(flatten)]
    binary: BinaryArgs,
    /// Only these paths (comma-separated); default all five.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Which>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let mult = match s[i..].to_ascii_uppercase().as_str() {
                "K" | "KB" | "KIB" => 1u64 << 10,
                "M" | "MB" | "MIB" => 1 << 20,
                "G" | "GB" | "GIB" => 1 << 30,
                other => return Err(format!("unknown size suffix {other:?}")),
            };
            (&s[..i], mult)
        }
        None => (s, 1),
    };
    let n: u64 = num.trim().parse().map_err(|e| format!("{num:?}: {e}"))?;
    match n.checked_mul(mult) {
        Some(0) => Err("size must be more than 0".into()),
        Some(v) => Ok(v),
        None => Err("size too large".into()),
    }
}

fn name(p: Which) -> &'static str {
    match p {
        Which::Iperf3 => "iperf3-udp",
        Which::Quinn => "quinn",
        Which::Machine => "tryst-machine",
        Which::Binary => "tryst-binary",
        Which::StdBinary => "tryst-std-binary",
    }
}

struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn work_dir(common: &Common) -> Result<WorkDir> {
    let base = match &common.work_dir {
        Some(d) => d.clone(),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    let dir = base.join(format!("tryst-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(WorkDir(dir))
}

fn bench(paths: &[Which], args: &BinaryArgs) -> Result<()> {
    let c = &args.common;
    if c.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let work = work_dir(c)?;
    let tryst = args.tryst.clone().unwrap_or_else(binary::default_tryst);
    let tryst_std = args
        .tryst_std
        .clone()
        .unwrap_or_else(binary::default_tryst_std);
    let mut rows: Vec<Row> = paths.iter().map(|&p| Row::new(name(p))).collect();
    // A path that cannot run at all (tool or API missing) is reported once.
    let mut unavailable: Vec<Option<String>> = vec![None; paths.len()];
    let file = work.0.join("tryst-bench.dat");
    for (which, bin) in [(Which::Binary, &tryst), (Which::StdBinary, &tryst_std)] {
        if let Some(i) = paths.iter().position(|&p| p == which) {
            let ready = binary::check(bin).and_then(|()| {
                if file.exists() {
                    Ok(())
                } else {
                    binary::make_file(&file, c.size)
                }
            });
            if let Err(e) = ready {
                unavailable[i] = Some(format!("{e:#}"));
            }
        }
    }
    println!(
        "tryst-bench: {} bytes per transfer, {} run(s) per path, loopback 127.0.0.1, started {}",
        c.size,
        c.runs,
        utc_now()
    );
    for run in 1..=c.runs {
        for (i, &p) in paths.iter().enumerate() {
            if let Some(why) = &unavailable[i] {
                if run == 1 {
                    println!("  {:<15} not available: {why}", name(p));
                    rows[i].failures.push(why.clone());
                }
                continue;
            }
            let result: Result<Sample> = match p {
                Which::Iperf3 => iperf::run_once(c.size),
                Which::Quinn => quic::run_once(c.size, &work.0),
                Which::Machine => machine::run_once(c.size),
                Which::Binary => binary::run_once(&tryst, &file, c.size, &work.0),
                Which::StdBinary => binary::run_once(&tryst_std, &file, c.size, &work.0),
            };
            match result {
                Ok(s) => {
                    println!("{}", report::sample_line(name(p), run, &s));
                    rows[i].samples.push(s);
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    println!("  {:<15} run {run}: FAILED: {why}", name(p));
                    if p == Which::Machine && rows[i].samples.is_empty() {
                        unavailable[i] = Some(why.clone());
                    }
                    rows[i].failures.push(why);
                }
            }
        }
    }
    println!("finished {}\n", utc_now());
    print!("{}", report::table(&rows));
    println!(
        "\nMB/s = 10^6 bytes/s delivered to the receiving app (median of runs); x = ratio of medians;\n\
         CPU % = CPU seconds of that side / transfer seconds (100% = one core); s/GiB = CPU seconds per GiB delivered."
    );
    Ok(())
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `tryst-bench ttfb`: at least one run, in a scratch folder removed after.
fn ttfb_main(size: u64, runs: usize, tryst: Option<PathBuf>, dir: Option<PathBuf>) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let work = work_dir(&Common {
        size,
        runs,
        work_dir: dir,
    })?;
    let tryst = tryst.unwrap_or_else(binary::default_tryst);
    ttfb::run(&tryst, size, runs, &work.0)
}

/// `tryst-bench memory`.
fn memory_main(devices: u64) -> Result<()> {
    if devices == 0 {
        bail!("--devices must be at least 1");
    }
    #[cfg(feature = "machine")]
    return memory::run(devices);
    #[cfg(not(feature = "machine"))]
    bail!("built without the `machine` feature (tryst-core)");
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(a) => {
            let paths = if a.only.is_empty() {
                vec![
                    Which::Iperf3,
                    Which::Quinn,
                    Which::Machine,
                    Which::Binary,
                    Which::StdBinary,
                ]
            } else {
                a.only.clone()
            };
            bench(&paths, &a.binary)
        }
        Cmd::Iperf3(c) => bench(
            &[Which::Iperf3],
            &BinaryArgs {
                common: c,
                tryst: None,
                tryst_std: None,
            },
        ),
        Cmd::Quinn(c) => bench(
            &[Which::Quinn],
            &BinaryArgs {
                common: c,
                tryst: None,
                tryst_std: None,
            },
        ),
        Cmd::Machine(c) => bench(
            &[Which::Machine],
            &BinaryArgs {
                common: c,
                tryst: None,
                tryst_std: None,
            },
        ),
        Cmd::Binary(a) => bench(&[Which::Binary], &a),
        Cmd::StdBinary(a) => bench(&[Which::StdBinary], &a),
        Cmd::Ttfb {
            size,
            runs,
            tryst,
            work_dir: dir,
        } => ttfb_main(size, runs, tryst, dir),
        Cmd::Aead { size, packet } => aead::run(size, packet.max(1)),
        Cmd::Memory { devices } => memory_main(devices),
        Cmd::QuinnRecv { cert_out } => quic::receiver(&cert_out),
        Cmd::QuinnSend {
            connect,
            cert,
            size,
        } => quic::sender(connect, &cert, size),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tryst-bench: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("12345"), Ok(12345));
        assert!(parse_size("0").is_err());
        assert!(parse_size("3T").is_err());
    }
}
