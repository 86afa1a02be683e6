//! Operating tryst (issue 17, items 4, 5 and 7) through the real binaries,
//! `tryst` and `tryst-std` alike: the config file and the `TRYST_*`
//! variables (a server started with only `--config`, flag > environment >
//! file, an unknown key named with its file, a bad value named with its
//! key, every flag of every long-running subcommand reachable from a file
//! and from the environment), invites (`server` prints one, `tryst invite`
//! prints it again, a terminal joins with `--invite` alone, a corrupted or
//! foreign invite is refused with a clear line, an unspecified listen
//! address needs `--public-addr`, `--qr` draws it, `--enrol` mints a
//! one-time enrolment code a `--closed` server accepts once) and JSON logs
//! (`--log-format json`: every stderr line is an object, registrations and
//! keepalives name the device next to its ID, no seed step numbers).
//!
//! Declared as a test of the `tryst-tokio` package so that
//! `CARGO_BIN_EXE_tryst` names the binary `cargo test` built.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

#[path = "e2e_support/mod.rs"]
mod support;
use support::{text, tryst_for, with_mix, Mix, Proc};

use tryst_std::cli::config::{self, ConfigError};

/// Both binaries, each everywhere.
const MIXES: [Mix; 2] = [Mix::TRYST, Mix::STD];

/// A command for `subcommand` (this thread's binary) with no inherited
/// `TRYST_*` variables or `RUST_LOG`.
fn cmd(subcommand: &str) -> Command {
    let mut c = tryst_for(subcommand);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with(config::ENV_PREFIX) {
            c.env_remove(name);
        }
    }
    c.arg(subcommand);
    c
}

/// Runs a command that must exit by itself.
fn output(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("the binary runs")
}

fn write(path: &Path, body: &str) {
    std::fs::write(path, body).expect("write the config file");
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A server config in `root`: data dir, loopback addresses on `ip`.
fn server_config(root: &Path, ip: &str, extra: &str) -> std::path::PathBuf {
    let file = root.join("server.toml");
    write(
        &file,
        &format!(
            "# tryst server\ndata-dir = \"{}\"\ncontrol = \"{ip}:0\"\ntrigger = \"{ip}:0\"\nmax-duration = \"5m\"\n{extra}",
            path_str(&root.join("data"))
        ),
    );
    file
}

#[test]
fn config_file_alone_starts_a_server() {
    for mix in MIXES {
        with_mix(mix, || {
            let root = tempfile::tempdir().expect("tempdir");
            let file = server_config(root.path(), "127.0.0.1", "closed = false\n");
            let mut c = cmd("server");
            c.args(["--config", path_str(&file)]);
            let mut server = Proc::spawn(c, root.path().join("server.log"));
            let control = server.addr("control");
            assert!(control.ip().is_loopback(), "{control}");
            assert_ne!(control.port(), 0);
            assert!(root.path().join("data/server.key").exists(), "{mix:?}");
            assert!(server.term(Duration::from_secs(20)).success());
        });
    }
}

#[test]
fn config_flag_beats_environment_beats_file() {
    for mix in MIXES {
        with_mix(mix, || {
            let root = tempfile::tempdir().expect("tempdir");
            // The file says 127.0.0.2 for both addresses.
            let file = server_config(root.path(), "127.0.0.2", "");
            // File only.
            let mut c = cmd("server");
            c.args(["--config", path_str(&file)]);
            let mut server = Proc::spawn(c, root.path().join("a.log"));
            assert_eq!(server.addr("control").ip().to_string(), "127.0.0.2");
            assert_eq!(server.addr("trigger").ip().to_string(), "127.0.0.2");
            assert!(server.term(Duration::from_secs(20)).success());
            drop(server);
            // The environment beats the file; the flag beats both.
            let mut c = cmd("server");
            c.env("TRYST_CONTROL", "127.0.0.3:0")
                .env("TRYST_TRIGGER", "127.0.0.3:0")
                .args(["--config", path_str(&file), "--control", "127.0.0.4:0"]);
            let mut server = Proc::spawn(c, root.path().join("b.log"));
            assert_eq!(server.addr("control").ip().to_string(), "127.0.0.4");
            assert_eq!(server.addr("trigger").ip().to_string(), "127.0.0.3");
            assert!(server.term(Duration::from_secs(20)).success());
            drop(server);
            // TRYST_CONFIG names the file too.
            let mut c = cmd("server");
            c.env("TRYST_CONFIG", &file);
            let mut server = Proc::spawn(c, root.path().join("c.log"));
            assert_eq!(server.addr("control").ip().to_string(), "127.0.0.2");
            assert!(server.term(Duration::from_secs(20)).success());
        });
    }
}

#[test]
fn config_unknown_key_names_it_and_the_file() {
    for mix in MIXES {
        with_mix(mix, || {
            let root = tempfile::tempdir().expect("tempdir");
            let file = server_config(root.path(), "127.0.0.1", "max-durration = \"1h\"\n");
            let mut c = cmd("server");
            c.args(["--config", path_str(&file)]);
            let out = output(c);
            assert_eq!(out.status.code(), Some(2), "{mix:?}");
            let err = text(&out.stderr);
            assert!(err.contains("unknown key `max-durration`"), "{err}");
            assert!(err.contains(path_str(&file)), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(!root.path().join("data").exists(), "nothing started");
        });
    }
}

#[test]
fn config_bad_value_names_the_key_and_where_it_came_from() {
    for mix in MIXES {
        with_mix(mix, || {
            let root = tempfile::tempdir().expect("tempdir");
            let file = server_config(root.path(), "127.0.0.1", "max-channels = \"many\"\n");
            let mut c = cmd("server");
            c.args(["--config", path_str(&file)]);
            let out = output(c);
            assert_eq!(out.status.code(), Some(2));
            let err = text(&out.stderr);
            assert!(err.contains("bad value for `max-channels`"), "{err}");
            assert!(err.contains(path_str(&file)), "{err}");
            // From the environment: the variable is named.
            let file = server_config(root.path(), "127.0.0.1", "");
            let mut c = cmd("server");
            c.env("TRYST_MAX_DURATION", "soon")
                .args(["--config", path_str(&file)]);
            let out = output(c);
            assert_eq!(out.status.code(), Some(2));
            let err = text(&out.stderr);
            assert!(
                err.contains("TRYST_MAX_DURATION: bad value for `max-duration`"),
                "{err}"
            );
            // A list where one value goes, and a file that is not TOML.
            write(&file, "control = [\"127.0.0.1:0\"]\n");
            let mut c = cmd("server");
            c.args(["--config", path_str(&file), "--data-dir", "/nonexistent/x"]);
            let err = text(&output(c).stderr);
            assert!(
                err.contains("bad value for `control`: takes one value"),
                "{err}"
            );
            write(&file, "control = \n");
            let mut c = cmd("server");
            c.args(["--config", path_str(&file)]);
            let out = output(c);
            assert_eq!(out.status.code(), Some(2));
            assert!(text(&out.stderr).contains("not a TOML file"));
        });
    }
}

#[test]
fn config_repeated_flags_take_arrays_and_switches_booleans() {
    with_mix(Mix::STD, || {
        let root = tempfile::tempdir().expect("tempdir");
        let file = server_config(root.path(), "127.0.0.1", "closed = true\n");
        let mut c = cmd("server");
        c.args(["--config", path_str(&file)]);
        let mut server = Proc::spawn(c, root.path().join("server.log"));
        // `closed = true` reached the server: it says so.
        server.expect_line("closed server: enrol each device");
        let control = server.addr("control").to_string();
        let trigger = server.addr("trigger").to_string();
        let key = server.value("server key");
        // A terminal whose permission list comes from a TOML array.
        let term = root.path().join("term.toml");
        write(
            &term,
            &format!(
                "name = \"desk\"\nserver = \"{control}\"\ntrigger = \"{trigger}\"\nserver-key = \"{key}\"\nstate-dir = \"{}\"\nallow = [\"alice\", \"bob\"]\n",
                path_str(&root.path().join("desk"))
            ),
        );
        let mut c = cmd("terminal");
        c.args(["--config", path_str(&term)])
            .env("TRYST_ALLOW", "carol");
        let mut desk = Proc::spawn(c, root.path().join("desk.log"));
        // The environment beats the file: carol, not alice and bob.
        let line = desk.expect_line("permission list:");
        assert!(line.ends_with("permission list: carol"), "{line}");
        drop(desk);
        let mut c = cmd("terminal");
        c.args(["--config", path_str(&term)]);
        let mut desk = Proc::spawn(c, root.path().join("desk2.log"));
        let line = desk.expect_line("permission list:");
        assert!(line.ends_with("carol, alice, bob"), "{line}");
    });
}

/// What the generic layer makes of `key = VALUE` in a file and of its
/// variable: the key must be reached (a default set or a bad value
/// reported for that key), never unknown.
fn reached(
    result: Result<clap::Command, ConfigError>,
    sub: &str,
    id: &str,
    key: &str,
    origin: &str,
    value: &str,
) {
    match result {
        Ok(command) => {
            let sub = command.find_subcommand(sub).expect("subcommand");
            let arg = sub
                .get_arguments()
                .find(|a| a.get_id() == id)
                .expect("the flag");
            assert!(
                arg.get_default_values().iter().any(|v| v == value),
                "{origin} did not reach --{key} of {sub:?}"
            );
            assert!(!arg.is_required_set(), "--{key} still required");
        }
        Err(ConfigError::BadValue { key: named, .. }) => assert_eq!(named, key),
        Err(e) => panic!("{origin}: --{key}: {e}"),
    }
}

#[test]
fn config_every_flag_of_every_long_running_subcommand_is_reachable() {
    let root = tempfile::tempdir().expect("tempdir");
    let file = root.path().join("one.toml");
    let cli = tryst_std::cli::command();
    let mut checked = 0;
    for name in config::CONFIGURABLE {
        let sub = cli
            .find_subcommand(name)
            .expect("a configurable subcommand");
        for arg in config::configurable_args(sub) {
            let key = arg.get_long().expect("a long flag");
            let id = arg.get_id().to_string();
            let switch = matches!(arg.get_action(), clap::ArgAction::SetTrue);
            let repeated = matches!(arg.get_action(), clap::ArgAction::Append);
            // A value the flag may or may not accept: either way it must be
            // reached, and named if refused.
            let value = match (switch, repeated) {
                (true, _) => "true".to_owned(),
                (_, true) => "[\"x1\", \"x2\"]".to_owned(),
                _ => "\"x1\"".to_owned(),
            };
            write(&file, &format!("{key} = {value}\n"));
            let args: Vec<OsString> = vec![
                "tryst".into(),
                (*name).into(),
                "--config".into(),
                file.clone().into(),
            ];
            let result = config::apply(tryst_std::cli::command(), &args, &|_| None);
            let expected = if switch { "true" } else { "x1" };
            reached(result, name, &id, key, "the file", expected);
            let var = config::env_name(key);
            let env_value = if switch { "true" } else { "x1" };
            let args: Vec<OsString> = vec!["tryst".into(), (*name).into()];
            let result = config::apply(tryst_std::cli::command(), &args, &|v| {
                (v == var).then(|| env_value.into())
            });
            reached(result, name, &id, key, &var, env_value);
            checked += 1;
        }
    }
    // server alone has more than ten flags: the walk found them.
    assert!(checked > 40, "only {checked} flags walked");
}

/// The invite a server's stdout printed.
fn printed_invite(server: &mut Proc) -> String {
    server.value("invite")
}

#[test]
fn invite_lets_a_terminal_join_with_nothing_else() {
    for mix in MIXES {
        with_mix(mix, || {
            let root = tempfile::tempdir().expect("tempdir");
            let file = server_config(root.path(), "127.0.0.1", "");
            let mut c = cmd("server");
            c.args(["--config", path_str(&file)]);
            let mut server = Proc::spawn(c, root.path().join("server.log"));
            let invite = printed_invite(&mut server);
            assert!(invite.starts_with("TRYST1:"), "{invite}");
            assert!(invite.len() < 200, "short enough for a QR code: {invite}");
            // `tryst invite` prints the same invite again.
            let mut c = cmd("invite");
            c.args(["--data-dir", path_str(&root.path().join("data"))]);
            let out = output(c);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let again = text(&out.stdout);
            assert!(again.contains(&format!("invite: {invite}")), "{again}");
            // With --name the invite names the device: a terminal needs
            // only the invite and its state dir.
            let mut c = cmd("invite");
            c.args([
                "--data-dir",
                path_str(&root.path().join("data")),
                "--name",
                "kitchen",
                "--qr",
            ]);
            let out = output(c);
            assert!(out.status.success());
            let shown = text(&out.stdout);
            assert!(shown.contains('█'), "a QR code: {shown}");
            let named = shown
                .lines()
                .find_map(|l| l.strip_prefix("invite: "))
                .expect("an invite line")
                .to_owned();
            assert_ne!(named, invite);
            let mut c = cmd("terminal");
            c.args([
                "--invite",
                &named.to_lowercase(),
                "--state-dir",
                path_str(&root.path().join("kitchen")),
            ]);
            let mut kitchen = Proc::spawn(c, root.path().join("kitchen.log"));
            kitchen.expect_line("registered as kitchen");
            kitchen.expect_line("online:");
            // The unnamed invite with --name, from a config file.
            let term = root.path().join("hall.toml");
            write(
                &term,
                &format!(
                    "invite = \"{invite}\"\nname = \"hall\"\nstate-dir = \"{}\"\n",
                    path_str(&root.path().join("hall"))
                ),
            );
            let mut c = cmd("terminal");
            c.args(["--config", path_str(&term)]);
            let mut hall = Proc::spawn(c, root.path().join("hall.log"));
            hall.expect_line("registered as hall");
        });
    }
}

/// `tryst invite --data-dir DIR --enrol NAME [--expires DUR]` on a running
/// server: the invite line and the one-time code's line.
fn enrol_invite(data: &Path, name: &str, expires: Option<&str>) -> String {
    let mut c = cmd("invite");
    c.args(["--data-dir", path_str(data), "--enrol", name]);
    if let Some(expires) = expires {
        c.args(["--expires", expires]);
    }
    let out = output(c);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("one-time enrolment code for {name}")),
        "{shown}"
    );
    shown
        .lines()
        .find_map(|l| l.strip_prefix("invite: "))
        .expect("an invite line")
        .to_owned()
}

/// A terminal with `invite` in `state` that the closed server must refuse:
/// it exits with the line that says the code was not accepted.
fn refused_with_the_code_message(invite: &str, state: &Path) {
    let mut c = cmd("terminal");
    c.args(["--invite", invite, "--state-dir", path_str(state)]);
    let out = output(c);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("the enrolment code was not accepted (used, expired or wrong)")
            && err.contains("ask the operator for a new invite"),
        "{err}"
    );
}

#[test]
fn invite_enrol_code_enrols_once_and_refuses_reuse_and_expiry() {
    for mix in MIXES {
        with_mix(mix, || {
            let root = tempfile::tempdir().expect("tempdir");
            let file = server_config(root.path(), "127.0.0.1", "closed = true\n");
            let mut c = cmd("server");
            c.args(["--config", path_str(&file)]);
            let mut server = Proc::spawn(c, root.path().join("server.log"));
            let plain = printed_invite(&mut server);
            server.expect_line("--enrol NAME");
            let data = root.path().join("data");
            // Without a code, the closed server refuses an unenrolled name.
            let mut c = cmd("terminal");
            c.args([
                "--invite",
                &plain,
                "--name",
                "home",
                "--state-dir",
                path_str(&root.path().join("stranger")),
            ]);
            let out = output(c);
            assert!(!out.status.success());
            let err = text(&out.stderr);
            assert!(err.contains("refused the name home"), "{err}");
            assert!(!err.contains("enrolment code"), "{err}");

            let home_invite = enrol_invite(&data, "home", None);
            let phone_invite = enrol_invite(&data, "phone", Some("10m"));
            assert_ne!(home_invite, plain);
            let mut c = cmd("terminal");
            c.args([
                "--invite",
                &home_invite,
                "--state-dir",
                path_str(&root.path().join("home")),
                "--allow",
                "phone",
            ]);
            let mut home = Proc::spawn(c, root.path().join("home.log"));
            home.expect_line("registered as home");
            home.expect_line("online:");
            // Reachable: the phone, enrolled by its own invite, connects.
            let mut c = cmd("connect");
            c.args([
                "--invite",
                &phone_invite,
                "--state-dir",
                path_str(&root.path().join("phone")),
                "home",
                "--duration",
                "60s",
            ]);
            let mut phone = Proc::spawn(c, root.path().join("phone.log"));
            phone.expect_line("with home for");
            phone.term(Duration::from_secs(10));

            // The same invite on another state dir (another key): refused.
            refused_with_the_code_message(&home_invite, &root.path().join("home2"));
            // The enrolled device restarts with its invite: still home.
            home.term(Duration::from_secs(10));
            let mut c = cmd("terminal");
            c.args([
                "--invite",
                &home_invite,
                "--state-dir",
                path_str(&root.path().join("home")),
            ]);
            let mut again = Proc::spawn(c, root.path().join("home-again.log"));
            again.expect_line("registered as home");
            again.term(Duration::from_secs(10));

            // An expired code: refused, and nothing is enrolled.
            let late = enrol_invite(&data, "garage", Some("1s"));
            std::thread::sleep(Duration::from_millis(1500));
            refused_with_the_code_message(&late, &root.path().join("garage"));

            // The store holds the codes' hashes, never a code: the invites'
            // codes are not in the database file.
            let db = std::fs::read(data.join("tryst.db")).expect("the store");
            let wal = std::fs::read(data.join("tryst.db-wal")).unwrap_or_default();
            for invite in [&home_invite, &phone_invite, &late] {
                let code = code_of(invite);
                for bytes in [&db, &wal] {
                    assert!(
                        !bytes.windows(code.len()).any(|w| w == code.as_slice()),
                        "a raw code is in the store"
                    );
                }
                let hex: String = code.iter().map(|b| format!("{b:02x}")).collect();
                for bytes in [&db, &wal] {
                    assert!(
                        !bytes.windows(hex.len()).any(|w| w == hex.as_bytes()),
                        "a code's hex is in the store"
                    );
                }
            }
        });
    }
}

/// The 16-byte enrolment code of an invite (the field before the checksum).
fn code_of(invite: &str) -> Vec<u8> {
    let parsed = tryst_std::cli::invite::Invite::decode(invite).expect("an invite");
    parsed.code.expect("a code").to_vec()
}

#[test]
fn invite_corrupted_or_foreign_is_refused_with_a_clear_line() {
    for mix in MIXES {
        with_mix(mix, || {
            let root = tempfile::tempdir().expect("tempdir");
            let file = server_config(root.path(), "127.0.0.1", "");
            let mut c = cmd("server");
            c.args(["--config", path_str(&file)]);
            let mut server = Proc::spawn(c, root.path().join("server.log"));
            let invite = printed_invite(&mut server);
            let mut chars: Vec<char> = invite.chars().collect();
            let i = chars.len() / 2;
            chars[i] = if chars[i] == 'Q' { 'R' } else { 'Q' };
            let typo: String = chars.into_iter().collect();
            let cut = &invite[..invite.len() - 5];
            let state = root.path().join("t");
            for (bad, says) in [
                (typo.as_str(), "the invite is corrupted"),
                (cut, "the invite is corrupted"),
                ("TRYST9:ABCDEF", "version 9"),
                ("https://example.org/join", "not a tryst invite"),
            ] {
                let mut c = cmd("terminal");
                c.args([
                    "--invite",
                    bad,
                    "--name",
                    "x",
                    "--state-dir",
                    path_str(&state),
                ]);
                let out = output(c);
                assert_eq!(out.status.code(), Some(2), "{bad}");
                let err = text(&out.stderr);
                assert!(err.contains(says), "{bad}: {err}");
                assert_eq!(err.lines().count(), 1, "{err}");
            }
            // An invite plus the flags it replaces is a usage error.
            let mut c = cmd("connect");
            c.args([
                "--invite",
                &invite,
                "--server",
                "127.0.0.1:1",
                "--name",
                "x",
                "--state-dir",
                path_str(&state),
                "peer",
            ]);
            let out = output(c);
            assert_eq!(out.status.code(), Some(2));
            assert!(text(&out.stderr).contains("cannot be used with"));
            // `tryst invite` on a dir with no server yet says what to do.
            let mut c = cmd("invite");
            c.args(["--data-dir", path_str(&root.path().join("none"))]);
            let out = output(c);
            assert_eq!(out.status.code(), Some(2));
            assert!(text(&out.stderr).contains("start `tryst server"));
        });
    }
}

#[test]
fn invite_of_a_server_on_every_address_needs_public_addr() {
    for mix in MIXES {
        with_mix(mix, || {
            let root = tempfile::tempdir().expect("tempdir");
            let data = root.path().join("data");
            let mut c = cmd("server");
            c.args([
                "--data-dir",
                path_str(&data),
                "--control",
                "0.0.0.0:0",
                "--trigger",
                "127.0.0.1:0",
            ]);
            let mut server = Proc::spawn(c, root.path().join("a.log"));
            let said = server.value("invite");
            assert!(said.contains("--public-addr"), "{said}");
            assert!(server.term(Duration::from_secs(20)).success());
            drop(server);
            assert!(!data.join("invite").exists(), "no stale invite");
            // With --public-addr the invite points there (127.0.0.1 is
            // where this test's terminal reaches it).
            let mut c = cmd("server");
            c.args([
                "--data-dir",
                path_str(&data),
                "--control",
                "0.0.0.0:0",
                "--trigger",
                "0.0.0.0:0",
                "--public-addr",
                "127.0.0.1",
            ]);
            let mut server = Proc::spawn(c, root.path().join("b.log"));
            let invite = server.value("invite");
            let control = server.addr("control");
            server.expect_line(&format!("session server 127.0.0.1:{}", control.port()));
            let mut c = cmd("terminal");
            c.args([
                "--invite",
                &invite,
                "--name",
                "porch",
                "--state-dir",
                path_str(&root.path().join("porch")),
            ]);
            let mut porch = Proc::spawn(c, root.path().join("porch.log"));
            porch.expect_line("registered as porch");
        });
    }
}

/// The JSON objects of a log file: every non-empty line must be one.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn message(line: &serde_json::Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

#[test]
fn log_format_json_lines_name_devices_next_to_their_ids() {
    for mix in MIXES {
        with_mix(mix, || {
            let root = tempfile::tempdir().expect("tempdir");
            let file = server_config(root.path(), "127.0.0.1", "log-format = \"json\"\n");
            let mut c = cmd("server");
            c.args(["--config", path_str(&file)]);
            let mut server = Proc::spawn(c, root.path().join("server.log"));
            let invite = printed_invite(&mut server);
            let mut c = cmd("terminal");
            c.args([
                "--invite",
                &invite,
                "--name",
                "garage",
                "--log-format",
                "json",
                "--state-dir",
                path_str(&root.path().join("garage")),
            ]);
            let mut garage = Proc::spawn(c, root.path().join("garage.log"));
            let device = garage.wait_for("registered", |l| {
                l.strip_prefix("registered as garage (device ")
                    .and_then(|r| r.strip_suffix(')'))
                    .map(str::to_owned)
            });
            garage.expect_line("online:");
            assert!(garage.term(Duration::from_secs(20)).success());
            assert!(server.term(Duration::from_secs(20)).success());
            let lines = json_lines(&server.log());
            for line in &lines {
                assert!(
                    line["level"].is_string() && line["timestamp"].is_string(),
                    "{line}"
                );
                let m = message(line);
                assert!(
                    !m.contains("(S") && !m.contains("S1"),
                    "a seed step number in an operator log line: {m}"
                );
            }
            let registered = lines
                .iter()
                .find(|l| message(l) == "registered")
                .expect("a registered line");
            assert_eq!(registered["fields"]["name"], "garage");
            assert_eq!(
                registered["fields"]["device"],
                device.as_str(),
                "{lines:#?}"
            );
            let keepalive = lines
                .iter()
                .find(|l| message(l) == "observed address (keepalive)")
                .expect("an observed address line");
            assert_eq!(keepalive["fields"]["name"], "garage", "{keepalive}");
            assert_eq!(keepalive["fields"]["device"], device.as_str());
            // The terminal's own log is JSON too.
            let term_lines = json_lines(&garage.log());
            assert!(
                term_lines
                    .iter()
                    .any(|l| l["fields"]["device"] == device.as_str()),
                "{term_lines:?}"
            );
        });
    }
}

/// Issue 18 item 3: `shards add` puts a trigger server in the store's
/// shard map (again: moves it), `shards list` shows it in name order
/// (`--json` too), `shards remove` takes it out and fails for one not in
/// it; a bad name or key is a usage error that stores nothing. The map one
/// binary wrote is the map the other reads.
#[test]
fn shards_add_list_and_remove_keep_the_shard_map_in_the_store() {
    let key_a = "11".repeat(32);
    let key_b = "22".repeat(32);
    for (writer, reader) in [(Mix::TRYST, Mix::STD), (Mix::STD, Mix::TRYST)] {
        let root = tempfile::tempdir().expect("tempdir");
        let data = path_str(root.path()).to_owned();
        let shards = |mix: Mix, args: &[&str]| {
            with_mix(mix, || {
                let mut c = cmd("shards");
                c.args(args).args(["--data-dir", &data]);
                output(c)
            })
        };
        let add = |name: &str, port: u16, key: &str| {
            let (link, udp) = (
                format!("127.0.0.1:{port}"),
                format!("127.0.0.1:{}", port + 1),
            );
            shards(
                writer,
                &["add", name, "--link", &link, "--udp", &udp, "--key", key],
            )
        };
        let out = add("ts-b", 7500, &key_b);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("added shard ts-b"));
        assert!(add("ts-a", 7400, &key_a).status.success());
        // The same name again: new addresses, still one shard.
        let out = add("ts-b", 7600, &key_b);
        assert!(
            text(&out.stdout).contains("updated shard ts-b"),
            "{}",
            text(&out.stdout)
        );
        // Refused, nothing stored.
        assert_eq!(add("a b", 7700, &key_a).status.code(), Some(2));
        assert_eq!(add("ts-c", 7700, "beef").status.code(), Some(2));
        let out = shards(reader, &["list", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let rows: Vec<serde_json::Value> = text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        let names: Vec<&str> = rows
            .iter()
            .map(|r| r["name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(names, ["ts-a", "ts-b"]);
        assert_eq!(rows[1]["link"], "127.0.0.1:7600");
        assert_eq!(rows[1]["udp"], "127.0.0.1:7601");
        assert_eq!(rows[0]["key"], key_a.as_str());
        let table = text(&shards(reader, &["list"]).stdout);
        assert!(table.starts_with("NAME"), "{table}");
        assert!(shards(reader, &["remove", "ts-a"]).status.success());
        let out = shards(reader, &["remove", "ts-a"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("no shard"),
            "{}",
            text(&out.stderr)
        );
        let left = text(&shards(writer, &["list", "--json"]).stdout);
        assert_eq!(left.lines().count(), 1, "{left}");
    }
}

#[test]
fn dist_example_configs_have_only_known_keys_and_good_values() {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist");
    for (sub, file) in [("server", "server.toml"), ("terminal", "terminal.toml")] {
        let path = dist.join(file);
        assert!(path.exists(), "{}", path.display());
        let args: Vec<OsString> = vec!["tryst".into(), sub.into(), "--config".into(), path.into()];
        if let Err(e) = config::apply(tryst_std::cli::command(), &args, &|_| None) {
            panic!("dist/{file}: {e}");
        }
    }
}
