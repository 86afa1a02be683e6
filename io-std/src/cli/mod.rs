//! The CLI both binaries share (`tryst` on tokio, `tryst-std` on threads):
//! every subcommand's flags (`clap::Args` structs), the one-shot commands
//! that need no network loop (`keygen`, `allow`, `sessions`, `end`,
//! `enroll`, `status`, blocking code), the error type with its exit codes, and
//! [`main`], the entry each binary calls with its [`Runtime`], which runs
//! the long-running subcommands on that binary's driver. So the two
//! binaries take the same flags, print the same lines, exit with the same
//! codes and read and write the same files.
//!
//! Exit codes: 0 success; 2 usage or configuration error; 3 not permitted
//! (the one answer for unknown, offline, refused, no answer); 1 anything
//! else. Errors are one line on stderr (`BINARY: ...`), never a backtrace.
//! Logs go to stderr through `tracing`; `RUST_LOG` sets the filter (the
//! long-running roles default to `info`, one line per protocol event; the
//! one-shot commands to `warn`). `--log-format json` (every subcommand)
//! writes one JSON object a line instead, for machines.
//!
//! The long-running subcommands also read `--config FILE` (TOML) and
//! `TRYST_*` environment variables, equal to their flags (see [`config`]).

pub mod allow;
pub mod config;
pub mod connect;
pub mod control;
pub mod driver;
pub mod end;
pub mod enroll;
pub mod invite;
pub mod keygen;
pub mod names;
pub mod netcheck;
pub mod ping;
pub mod relay;
pub mod server;
pub mod sessions;
pub mod shards;
pub mod signals;
pub mod status;
pub mod terminal;
pub mod transfer;

use std::fmt::Display;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Subcommand};

/// Why a subcommand failed; each kind has its exit code (issue 6):
/// 2 usage or configuration, 3 not permitted, 1 anything else.
/// Displayed as one line (the binary prints `tryst: <error>`).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or configuration (a missing or unreadable key file,
    /// a bad address, a data dir that is not one): exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The one uniform answer for a request that did not succeed (unknown,
    /// offline, refused, no answer): exit code 3.
    #[error("not permitted")]
    NotPermitted,
    /// Anything else (I/O, a server that stopped, a store that failed): exit code 1.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// A usage or configuration error (exit 2).
    pub fn usage(message: impl Display) -> CliError {
        CliError::Usage(one_line(message))
    }

    /// Any other failure (exit 1).
    pub fn failed(message: impl Display) -> CliError {
        CliError::Failed(one_line(message))
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::NotPermitted => 3,
            CliError::Failed(_) => 1,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> CliError {
        CliError::failed(e)
    }
}

impl From<crate::role::terminal::TerminalError> for CliError {
    fn from(e: crate::role::terminal::TerminalError) -> CliError {
        CliError::failed(e)
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> CliError {
        CliError::failed(format!("{e:#}"))
    }
}

/// `message` on one line: line breaks become "; ", so an error never
/// spreads over several lines.
fn one_line(message: impl Display) -> String {
    let text = message.to_string();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a binary supplies to the shared CLI: its driver for the
/// long-running subcommands. Each runs until it ends (or a stop signal)
/// and returns the error that decides the exit code. The servers are the
/// shared runners ([`server::run`] and its siblings) on [`Runtime::driver`].
pub trait Runtime {
    /// The driver the shared runners start the roles on.
    type Driver: driver::Driver;
    /// A driver for one long-running subcommand (it lives as long as the
    /// subcommand runs).
    fn driver(&self) -> Result<Self::Driver, CliError>;
    /// `demo`: both servers and three terminals on loopback (a binary
    /// without it answers with a failure).
    fn demo(&self) -> Result<(), CliError>;
}

/// tryst: reach a device behind a NAT only when it said yes.
#[derive(Debug, clap::Parser)]
#[command(version)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of both binaries.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs both servers and three terminals on loopback and walks through
    /// the seed's flows: registration, a permitted request, an extension at
    /// 70%, refused requests, a forced end and the session log.
    Demo,
    /// Writes a new secret key (mode 0600) and prints its public key.
    Keygen(keygen::KeygenArgs),
    /// Runs the session server and the trigger server in one process.
    Server(server::ServerArgs),
    /// Runs the session server alone, linked to a trigger server.
    SessionServer(server::SessionServerArgs),
    /// Runs the trigger server alone.
    TriggerServer(server::TriggerServerArgs),
    /// Runs the relay alone, for session servers started with `--relay-at`.
    Relay(relay::RelayArgs),
    /// Enrolls a terminal's public key for a name (for --closed servers).
    Enroll(enroll::EnrollArgs),
    /// Prints a server's invite again (what a device needs to join), as
    /// text and, with --qr, as a QR code.
    Invite(invite::InviteArgs),
    /// Lists the bound names, or frees one whose key was lost.
    Names(names::NamesArgs),
    /// Edits or lists the shard map: the trigger servers devices are
    /// spread over by device ID.
    Shards(shards::ShardsArgs),
    /// Prints the session log.
    Sessions(sessions::SessionsArgs),
    /// Forces a live session to end.
    End(end::EndArgs),
    /// Shows a running server's live terminals, sessions and counters.
    Status(status::StatusArgs),
    /// Runs a terminal (the device that others connect to).
    Terminal(terminal::TerminalArgs),
    /// Connects to a peer by name and sends it a file (one shot).
    Connect(connect::ConnectArgs),
    /// Measures the round trip to a peer over the direct path (like
    /// `tailscale ping`).
    Ping(ping::PingArgs),
    /// Edits the permission list of a running terminal.
    Allow(allow::AllowArgs),
    /// Tells what this network's NAT does, measured against the trigger
    /// server (observed address, mapping, filtering, the idle time a
    /// mapping survives) and whether sessions will likely go direct.
    Netcheck(netcheck::NetcheckArgs),
}

impl Command {
    /// The log filter when `RUST_LOG` is not set.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Server(_)
            | Command::SessionServer(_)
            | Command::TriggerServer(_)
            | Command::Relay(_)
            | Command::Terminal(_) => "info",
            _ => "warn",
        }
    }

    /// Runs the subcommand: the one-shot ones here, the long-running ones
    /// on `runtime`.
    pub fn run<R: Runtime>(self, runtime: &R) -> Result<(), CliError> {
        match self {
            Command::Demo => runtime.demo(),
            Command::Keygen(args) => keygen::run(args),
            Command::Server(args) => server::run(&runtime.driver()?, args),
            Command::SessionServer(args) => server::run_session_server(&runtime.driver()?, args),
            Command::TriggerServer(args) => server::run_trigger_server(&runtime.driver()?, args),
            Command::Relay(args) => server::run_relay(&runtime.driver()?, args),
            Command::Enroll(args) => enroll::run(args),
            Command::Invite(args) => invite::run(args),
            Command::Names(args) => names::run(args),
            Command::Shards(args) => shards::run(args),
            Command::Sessions(args) => sessions::run(args),
            Command::End(args) => end::run(args),
            Command::Status(args) => status::run(args),
            Command::Terminal(args) => terminal::run(&runtime.driver()?, args),
            Command::Connect(args) => connect::run(&runtime.driver()?, args),
            Command::Ping(args) => ping::run(&runtime.driver()?, args),
            Command::Allow(args) => allow::run(args),
            Command::Netcheck(args) => netcheck::run(&runtime.driver()?, args),
        }
    }
}

/// A clap error as one line: its first paragraph without the `error: `
/// prefix (the lines clap indents under it, such as the names of missing
/// arguments, joined with commas), pointing at `BINARY --help`.
pub fn usage_line(binary_name: &str, e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    let first = lines.next().map(str::trim).unwrap_or("bad arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let details: Vec<&str> = lines
        .take_while(|l| l.starts_with(' ') && !l.trim().is_empty())
        .map(str::trim)
        .collect();
    if details.is_empty() {
        format!("{first} (see `{binary_name} --help`)")
    } else {
        let first = first.trim_end_matches(':');
        format!(
            "{first}: {} (see `{binary_name} --help`)",
            details.join(", ")
        )
    }
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line an event.
    #[default]
    Text,
    /// One JSON object a line (`timestamp`, `level`, `fields`, `target`).
    Json,
}

/// The long name (and id) of the log format flag every subcommand takes.
pub const LOG_FORMAT_FLAG: &str = "log-format";

/// The whole CLI as a [`clap::Command`]: the derived subcommands, with
/// `--log-format` on every one and `--config` on the long-running ones.
pub fn command() -> clap::Command {
    let command = Cli::command().mut_subcommands(|sub| {
        sub.arg(
            clap::Arg::new(LOG_FORMAT_FLAG)
                .long(LOG_FORMAT_FLAG)
                .value_name("FORMAT")
                .value_parser(clap::builder::EnumValueParser::<LogFormat>::new())
                .default_value("text")
                .help("How log lines (stderr) are written: text, or json (one object a line)"),
        )
    });
    config::with_config_flag(command)
}

/// A parsed command line: the subcommand and how to log.
#[derive(Debug)]
pub struct Invocation {
    /// The subcommand.
    pub command: Command,
    /// `--log-format`.
    pub log_format: LogFormat,
}

/// Parses `args` (the first is the program) as the CLI of `binary_name`:
/// the command, or the exit code to leave with at once (help and version
/// printed, or one usage line on stderr). The environment is not read.
pub fn parse<I, T>(binary_name: &'static str, args: I) -> Result<Command, ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    parse_with_env(binary_name, args, &|_| None).map(|i| i.command)
}

/// [`parse`] with the config file and the `TRYST_*` variables `env` gives
/// (flags beat the environment, which beats the file).
pub fn parse_with_env<I, T>(
    binary_name: &'static str,
    args: I,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Invocation, ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let command = match config::apply(command(), &args, env) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("{binary_name}: {}", one_line(e));
            return Err(ExitCode::from(2));
        }
    };
    let command = match invite::apply(command, &args) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("{binary_name}: {e}");
            return Err(ExitCode::from(e.exit_code()));
        }
    };
    let parsed = command
        .name(binary_name)
        .bin_name(binary_name)
        .try_get_matches_from(args)
        .and_then(|m| {
            let log_format = m
                .subcommand()
                .and_then(|(_, sub)| sub.get_one::<LogFormat>(LOG_FORMAT_FLAG).copied())
                .unwrap_or_default();
            Cli::from_arg_matches(&m).map(|cli| (cli, log_format))
        });
    match parsed {
        Ok((cli, log_format)) => Ok(Invocation {
            command: cli.command,
            log_format,
        }),
        Err(e) => {
            use clap::error::ErrorKind;
            Err(match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    eprintln!("{binary_name}: a command is required (see `{binary_name} --help`)");
                    ExitCode::from(2)
                }
                _ => {
                    eprintln!("{binary_name}: {}", usage_line(binary_name, &e));
                    ExitCode::from(2)
                }
            })
        }
    }
}

/// Sets up the log subscriber: stderr, `RUST_LOG` or `default_filter`,
/// text or JSON lines.
pub fn init_logs(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// A binary's whole `main`: a panic becomes one `BINARY: internal error`
/// line, the arguments are parsed (with the config file and `TRYST_*`
/// variables), logs set up (stderr, `RUST_LOG` or the command's default,
/// `--log-format`), the command run (long-running ones on `runtime`),
/// and its error printed as one `BINARY: ...` line with its exit code.
pub fn main<R: Runtime>(binary_name: &'static str, runtime: R) -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    let name = binary_name;
    std::panic::set_hook(Box::new(move |info| {
        let message = info.to_string().replace('\n', " ");
        eprintln!("{name}: internal error: {message}");
    }));
    let invocation = match parse_with_env(binary_name, std::env::args_os(), &|name| {
        std::env::var_os(name)
    }) {
        Ok(invocation) => invocation,
        Err(code) => return code,
    };
    let command = invocation.command;
    init_logs(invocation.log_format, command.default_log_filter());
    match command.run(&runtime) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{binary_name}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_error_kind() {
        assert_eq!(CliError::usage("x").exit_code(), 2);
        assert_eq!(CliError::NotPermitted.exit_code(), 3);
        assert_eq!(CliError::failed("x").exit_code(), 1);
    }

    #[test]
    fn errors_are_one_line() {
        let e = CliError::failed("first\n\n  second  \nthird");
        assert_eq!(e.to_string(), "first; second; third");
    }

    #[test]
    fn flags_parse_into_the_shared_commands() {
        let command =
            parse("tryst", ["tryst", "sessions", "--data-dir", "/d", "--json"]).expect("parses");
        assert!(matches!(&command, Command::Sessions(a) if a.json));
        assert_eq!(command.default_log_filter(), "warn");
        let command = parse(
            "tryst-std",
            [
                "tryst-std",
                "server",
                "--data-dir",
                "/d",
                "--max-duration",
                "5m",
            ],
        )
        .expect("parses");
        match command {
            Command::Server(a) => {
                assert_eq!(a.policy.max_duration, std::time::Duration::from_secs(300));
                assert_eq!(a.control.to_string(), server::DEFAULT_CONTROL);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_usage_line_names_the_binary_and_is_one_line() {
        let e = Cli::command()
            .name("tryst-std")
            .try_get_matches_from(["tryst-std", "server", "--bogus"])
            .expect_err("bad flag");
        let line = usage_line("tryst-std", &e);
        assert!(!line.contains('\n'), "{line:?}");
        assert!(line.ends_with("(see `tryst-std --help`)"), "{line:?}");
        assert!(!line.starts_with("error: "), "{line:?}");
    }

    #[test]
    fn a_missing_required_argument_is_named_in_the_usage_line() {
        let e = Cli::command()
            .name("tryst")
            .try_get_matches_from(["tryst", "connect", "home"])
            .expect_err("required flags are missing");
        let line = usage_line("tryst", &e);
        assert!(!line.contains('\n'), "{line:?}");
        assert!(line.contains("--name <NAME>"), "{line:?}");
        assert!(line.contains("--state-dir <DIR>"), "{line:?}");
        assert!(line.ends_with("(see `tryst --help`)"), "{line:?}");
    }
}
