//! The config file and the environment, equal to the flags (issue 17):
//! every long-running subcommand ([`CONFIGURABLE`]) takes `--config FILE`
//! (TOML) and `TRYST_*` environment variables. Flags beat the
//! environment, which beats the file.
//!
//! Generic over the clap definition: the subcommand's [`clap::Command`]
//! is walked, a TOML key is a flag's long name (`max-duration = "5m"`),
//! an environment variable is `TRYST_` and the upper-snake long name
//! (`TRYST_MAX_DURATION=5m`). A flag added later is configurable with no
//! code here. A repeatable flag (`--allow`) takes a TOML array, or a
//! comma-separated variable; a switch (`--closed`) takes `true`/`false`.
//! What the environment or the file says becomes the flag's default, so
//! a flag on the command line still wins, and the flag's own parser
//! checks it first (a bad value names its key and where it came from).
//! An unknown key in the file is an error that names it and the file.
//! Relative paths in the file are relative to the working directory.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command};

/// The subcommands that take `--config` and `TRYST_*` variables.
pub const CONFIGURABLE: &[&str] = &[
    "server",
    "session-server",
    "trigger-server",
    "terminal",
    "connect",
    "ping",
];
/// The long name (and id) of the flag that names the config file.
pub const CONFIG_FLAG: &str = "config";
/// The prefix of every environment variable the CLI reads.
pub const ENV_PREFIX: &str = "TRYST_";
/// Longest config file read (a real one is a few hundred bytes).
pub const MAX_CONFIG_LEN: u64 = 256 * 1024;
/// The separator of several values in one environment variable.
pub const ENV_LIST_SEPARATOR: char = ',';

/// Why the config file or the environment cannot be used (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: cannot read the config file: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_LEN`].
    #[error("{}: the config file is longer than {MAX_CONFIG_LEN} bytes", path.display())]
    TooLong {
        /// The file.
        path: PathBuf,
    },
    /// The file is not TOML.
    #[error("{}: not a TOML file: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (one line).
        message: String,
    },
    /// A key in the file that is no flag of the subcommand.
    #[error("{}: unknown key `{key}` (not a flag of `{subcommand}`)", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The subcommand the file configures.
        subcommand: String,
    },
    /// A value that the flag's parser refuses, or of the wrong kind.
    #[error("{origin}: bad value for `{key}`: {message}")]
    BadValue {
        /// Where it came from: the file's path or the variable's name.
        origin: String,
        /// The key (the flag's long name).
        key: String,
        /// Why (one line).
        message: String,
    },
}

/// The environment variable of the flag `--long`: `TRYST_` and its
/// upper-snake name (`max-duration` gives `TRYST_MAX_DURATION`).
pub fn env_name(long: &str) -> String {
    let mut name = String::from(ENV_PREFIX);
    name.extend(long.chars().map(|c| {
        if c == '-' {
            '_'
        } else {
            c.to_ascii_uppercase()
        }
    }));
    name
}

/// Adds `--config FILE` to every subcommand in [`CONFIGURABLE`].
pub fn with_config_flag(command: Command) -> Command {
    CONFIGURABLE.iter().fold(command, |command, name| {
        command.mut_subcommand(name, |sub| {
            sub.arg(
                Arg::new(CONFIG_FLAG)
                    .long(CONFIG_FLAG)
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help(
                        "A TOML file of flags (key = the long flag name); flags and \
                         TRYST_* variables beat it",
                    ),
            )
        })
    })
}

/// The configurable flags of a subcommand: every argument with a long
/// name but help, version and `--config` itself.
pub fn configurable_args(sub: &Command) -> impl Iterator<Item = &Arg> {
    sub.get_arguments().filter(|a| {
        a.get_long()
            .is_some_and(|l| !matches!(l, "help" | "version" | CONFIG_FLAG))
            && !matches!(
                a.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
    })
}

/// `command` (the whole CLI, with [`with_config_flag`]) with the
/// defaults that the environment (read through `env`) and the config
/// file give the subcommand `args` invoke. Nothing changes for a
/// subcommand outside [`CONFIGURABLE`], or arguments that do not parse
/// (the real parse then reports them).
pub fn apply(
    command: Command,
    args: &[OsString],
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Command, ConfigError> {
    let Some((sub_name, file)) = find_subcommand_and_file(&command, args) else {
        return Ok(command);
    };
    let Some(sub) = command.find_subcommand(&sub_name) else {
        return Ok(command);
    };
    let file = match file.or_else(|| env(&env_name(CONFIG_FLAG)).map(PathBuf::from)) {
        Some(path) => Some((read_table(&path)?, path)),
        None => None,
    };
    let mut defaults: Vec<(String, Vec<String>)> = Vec::new();
    if let Some((table, path)) = &file {
        for key in table.keys() {
            if !configurable_args(sub).any(|a| a.get_long() == Some(key.as_str())) {
                return Err(ConfigError::UnknownKey {
                    path: path.clone(),
                    key: key.clone(),
                    subcommand: sub_name.clone(),
                });
            }
        }
    }
    for arg in configurable_args(sub) {
        let Some(long) = arg.get_long() else { continue };
        let var = env_name(long);
        let values = if let Some(value) = env(&var) {
            Some(env_values(arg, &var, &value)?)
        } else if let Some(value) = file.as_ref().and_then(|(t, p)| Some((t.get(long)?, p))) {
            let (value, path) = value;
            Some(toml_values(arg, &path.display().to_string(), long, value)?)
        } else {
            None
        };
        if let Some(values) = values {
            let origin = if env(&var).is_some() {
                var.clone()
            } else {
                file.as_ref()
                    .map(|(_, p)| p.display().to_string())
                    .unwrap_or_default()
            };
            check_values(arg, &origin, long, &values)?;
            defaults.push((arg.get_id().to_string(), values));
        }
    }
    Ok(command.mut_subcommand(&sub_name, move |mut sub| {
        for (id, values) in defaults {
            sub = sub.mut_arg(id, |arg| {
                if is_switch(&arg) {
                    if values.first().is_some_and(|v| v == "true") {
                        arg.default_value("true").required(false)
                    } else {
                        arg
                    }
                } else if values.is_empty() {
                    arg.required(false)
                } else {
                    arg.default_values(values).required(false)
                }
            });
        }
        sub
    }))
}

/// Whether `arg` is a switch (no value: `--closed`).
fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// Whether `arg` may be given several times (`--allow`).
fn is_repeatable(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

/// The subcommand `args` name and the `--config` they give, found by a
/// lenient parse (required arguments not required, errors ignored).
fn find_subcommand_and_file(
    command: &Command,
    args: &[OsString],
) -> Option<(String, Option<PathBuf>)> {
    let lenient = command
        .clone()
        .mut_subcommands(|sub| sub.mut_args(|a| a.required(false)).ignore_errors(true))
        .ignore_errors(true);
    let matches = lenient.try_get_matches_from(args).ok()?;
    let (name, sub) = matches.subcommand()?;
    if !CONFIGURABLE.contains(&name) {
        return None;
    }
    let file = sub
        .try_get_one::<PathBuf>(CONFIG_FLAG)
        .ok()
        .flatten()
        .cloned();
    Some((name.to_owned(), file))
}

/// Reads and parses the config file (bounded).
fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    use std::io::Read;
    let read_error = |error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_LEN + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_CONFIG_LEN {
        return Err(ConfigError::TooLong {
            path: path.to_path_buf(),
        });
    }
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: super::one_line(e.message()),
        })
}

/// The values an environment variable gives `arg`.
fn env_values(arg: &Arg, var: &str, value: &OsStr) -> Result<Vec<String>, ConfigError> {
    let key = arg.get_long().unwrap_or_default().to_owned();
    let bad = |message: &str| ConfigError::BadValue {
        origin: var.to_owned(),
        key: key.clone(),
        message: message.to_owned(),
    };
    let text = value.to_str().ok_or_else(|| bad("not UTF-8"))?;
    if is_switch(arg) {
        return match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(vec!["true".to_owned()]),
            "false" | "0" | "no" | "off" | "" => Ok(vec!["false".to_owned()]),
            _ => Err(bad("expected true or false")),
        };
    }
    if is_repeatable(arg) {
        return Ok(text
            .split(ENV_LIST_SEPARATOR)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect());
    }
    Ok(vec![text.to_owned()])
}

/// The values a TOML value gives `arg`.
fn toml_values(
    arg: &Arg,
    origin: &str,
    key: &str,
    value: &toml::Value,
) -> Result<Vec<String>, ConfigError> {
    let bad = |message: String| ConfigError::BadValue {
        origin: origin.to_owned(),
        key: key.to_owned(),
        message,
    };
    if is_switch(arg) {
        return match value {
            toml::Value::Boolean(b) => Ok(vec![b.to_string()]),
            other => Err(bad(format!(
                "expected true or false, not {}",
                other.type_str()
            ))),
        };
    }
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        other => Err(bad(format!("expected a value, not {}", other.type_str()))),
    };
    match value {
        toml::Value::Array(items) if is_repeatable(arg) => items.iter().map(scalar).collect(),
        toml::Value::Array(_) => Err(bad("takes one value, not a list".to_owned())),
        other => scalar(other).map(|v| vec![v]),
    }
}

/// Runs `values` through `arg`'s own parser (a one-flag command), so a
/// bad value is reported with its key and origin before the real parse.
fn check_values(arg: &Arg, origin: &str, key: &str, values: &[String]) -> Result<(), ConfigError> {
    if is_switch(arg) || values.is_empty() {
        return Ok(());
    }
    let probe = Arg::new("value")
        .long("value")
        .action(if is_repeatable(arg) {
            ArgAction::Append
        } else {
            ArgAction::Set
        })
        .value_parser(arg.get_value_parser().clone());
    let mut argv: Vec<&str> = vec!["check"];
    for value in values {
        argv.push("--value");
        argv.push(value);
    }
    Command::new("check")
        .arg(probe)
        .try_get_matches_from(argv)
        .map(drop)
        .map_err(|e| ConfigError::BadValue {
            origin: origin.to_owned(),
            key: key.to_owned(),
            message: clap_message(&e),
        })
}

/// A clap error's first line, without `error: ` and the probe's flag name.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("bad value");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    first.replace(" for '--value <value>'", "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn cli() -> Command {
        with_config_flag(super::super::Cli::command())
    }

    #[test]
    fn env_names_are_upper_snake() {
        assert_eq!(env_name("max-duration"), "TRYST_MAX_DURATION");
        assert_eq!(env_name("data-dir"), "TRYST_DATA_DIR");
    }

    #[test]
    fn every_configurable_subcommand_takes_config() {
        let cli = cli();
        for name in CONFIGURABLE {
            let sub = cli.find_subcommand(name).expect(name);
            assert!(
                sub.get_arguments()
                    .any(|a| a.get_long() == Some(CONFIG_FLAG)),
                "{name}"
            );
        }
    }
}
