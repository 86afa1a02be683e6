//! Binary interop for the one-shot commands: `tryst-std keygen`, `allow`,
//! `sessions`, `end` and `enroll` work on the files (key files, a
//! terminal's state dir, a server's data dir) that `tryst` wrote and on
//! the servers and terminals `tryst` runs, with the same output and exit
//! codes as `tryst` (bar the binary name in error lines).
//!
//! Declared as a test of the `tryst-std` package, so `CARGO_BIN_EXE_tryst-std`
//! names the binary `cargo test` built. The `tryst` binary is another
//! package's, which `cargo test -p tryst-std` does not build: it is taken
//! from `$TRYST_BIN`, or else beside this test's executable
//! (`target/debug/tryst`, one directory above `deps/`), so build it first:
//! `cargo build -p tryst-tokio --bin tryst && cargo test -p tryst-std --test interop_std`.
//! A missing `tryst` fails the test (it never passes without running).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

#[path = "e2e_support/proc.rs"]
mod proc;
use proc::{text, Proc, WAIT};

/// The `tryst` binary: `$TRYST_BIN`, or `tryst` beside the test's `deps/`.
fn tryst_path() -> PathBuf {
    if let Some(path) = std::env::var_os("TRYST_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("tryst");
    assert!(
        path.is_file(),
        "{} missing: run `cargo build -p tryst-tokio --bin tryst` first (or set TRYST_BIN)",
        path.display()
    );
    path
}

/// `tryst` (tokio) with no inherited `RUST_LOG`.
fn tryst() -> Command {
    let mut c = Command::new(tryst_path());
    c.env_remove("RUST_LOG");
    c
}

/// `tryst-std` with no inherited `RUST_LOG`.
fn tryst_std() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tryst-std"));
    c.env_remove("RUST_LOG");
    c
}

fn run(mut cmd: Command, args: &[&str]) -> Output {
    cmd.args(args).output().expect("the binary runs")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", text(&out.stderr));
    text(&out.stdout)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Starts `cmd ARGS` (a long-running command), stderr to `log`.
fn start(mut cmd: Command, args: &[&str], log: PathBuf) -> Proc {
    cmd.args(args);
    Proc::spawn(cmd, log)
}

/// A private (0700) directory, as a state dir must be.
fn private_dir(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).expect("mkdir");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).expect("chmod");
}

#[test]
fn keygen_keys_are_read_by_the_other_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a.key"), dir.path().join("b.key"));
    let a_pub = ok(&run(tryst(), &["keygen", "--out", path(&a)]));
    // tryst-std sees tryst's key file: it refuses to overwrite it, as tryst does.
    let again = run(tryst_std(), &["keygen", "--out", path(&a)]);
    assert_eq!(again.status.code(), Some(2));
    let err = text(&again.stderr);
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.starts_with("tryst-std: ") && err.contains("refusing to overwrite"),
        "{err:?}"
    );
    let b_pub = ok(&run(tryst_std(), &["keygen", "--out", path(&b)]));
    assert_eq!(b_pub.trim().len(), 64, "{b_pub:?}");
    assert_ne!(a_pub, b_pub);
    // Each binary takes the other's public key file as an enrolment key.
    let data = dir.path().join("data");
    let b_pub_file = dir.path().join("b.key.pub");
    ok(&run(
        tryst(),
        &[
            "enroll",
            "STD1",
            path(&b_pub_file),
            "--data-dir",
            path(&data),
        ],
    ));
    let a_pub_file = dir.path().join("a.key.pub");
    let enrolled = ok(&run(
        tryst_std(),
        &[
            "enroll",
            "TOK1",
            path(&a_pub_file),
            "--data-dir",
            path(&data),
        ],
    ));
    assert_eq!(
        enrolled,
        "enrolled tok1 (the server applies it when it starts)\n"
    );
    // The same name for another key: refused by either binary alike.
    let refused = run(
        tryst_std(),
        &["enroll", "STD1", a_pub.trim(), "--data-dir", path(&data)],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        text(&refused.stderr),
        "tryst-std: std1 is already bound to another key\n"
    );
}

#[test]
fn allow_edits_a_state_dir_the_other_binary_wrote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    private_dir(&state);
    let added = ok(&run(
        tryst(),
        &["allow", "add", "phone", "--state-dir", path(&state)],
    ));
    let listed = ok(&run(
        tryst_std(),
        &["allow", "list", "--state-dir", path(&state)],
    ));
    assert_eq!(listed, "phone\n");
    let std_added = ok(&run(
        tryst_std(),
        &["allow", "add", "laptop", "--state-dir", path(&state)],
    ));
    // The same lines, name aside.
    assert_eq!(std_added, added.replace("phone", "laptop"));
    let removed = ok(&run(
        tryst_std(),
        &["allow", "remove", "phone", "--state-dir", path(&state)],
    ));
    assert!(removed.starts_with("phone: removed\n"), "{removed:?}");
    assert_eq!(
        ok(&run(
            tryst(),
            &["allow", "list", "--state-dir", path(&state)]
        )),
        "laptop\n"
    );
    // A missing state dir: the same usage error from both.
    let missing = dir.path().join("nope");
    let (t, s) = (
        run(tryst(), &["allow", "list", "--state-dir", path(&missing)]),
        run(
            tryst_std(),
            &["allow", "list", "--state-dir", path(&missing)],
        ),
    );
    assert_eq!((t.status.code(), s.status.code()), (Some(2), Some(2)));
    assert_eq!(
        text(&s.stderr).strip_prefix("tryst-std: "),
        text(&t.stderr).strip_prefix("tryst: ")
    );
}

/// A usage error is one line, exit 2, named for this binary.
#[test]
fn bad_flags_are_a_usage_error_named_for_this_binary() {
    let bad = run(tryst_std(), &["server", "--bogus"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = text(&bad.stderr);
    assert!(err.starts_with("tryst-std: ") && err.ends_with("(see `tryst-std --help`)\n"));
}

/// A `tryst` server and terminals: `tryst-std` edits the running terminal's
/// list (its control socket), ends a live session through the running
/// server's command table, enrolls on it, and prints the log exactly as
/// `tryst` does.
#[test]
fn one_shot_commands_reach_a_running_tryst_server_and_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = start(
        tryst(),
        &[
            "server",
            "--data-dir",
            path(&data),
            "--control",
            "127.0.0.1:0",
            "--trigger",
            "127.0.0.1:0",
        ],
        dir.path().join("server.log"),
    );
    let key = server.value("server key");
    let control: SocketAddr = server.value("control").parse().expect("addr");
    let trigger: SocketAddr = server.value("trigger").parse().expect("addr");
    let flags = |name: &str, state: &Path| -> Vec<String> {
        [
            "--name",
            name,
            "--server",
            &control.to_string(),
            "--trigger",
            &trigger.to_string(),
            "--server-key",
            &key,
            "--state-dir",
            path(state),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let home_state = dir.path().join("home-state");
    let mut args = vec!["terminal".to_owned()];
    args.extend(flags("home", &home_state));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut home = start(tryst(), &refs, dir.path().join("home.log"));
    home.wait_for("online", |l| l.starts_with("online: ").then_some(()));

    // tryst-std allows the phone on the running tryst terminal.
    let allowed = ok(&run(
        tryst_std(),
        &["allow", "add", "phone", "--state-dir", path(&home_state)],
    ));
    assert_eq!(
        allowed,
        "phone: added\nthe running terminal applied the list (1 names); it holds for the next request\n"
    );

    let mut args = vec!["connect".to_owned()];
    args.extend(flags("phone", &dir.path().join("phone-state")));
    args.extend(["home", "--duration", "60s"].map(str::to_owned));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut phone = start(tryst(), &refs, dir.path().join("phone.log"));
    let id = phone.wait_for("the session line", |l| {
        l.strip_prefix("session ")
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    });

    // tryst-std ends it through the running tryst server.
    let ended = ok(&run(tryst_std(), &["end", &id, "--data-dir", path(&data)]));
    // Both terminals acknowledged their end triggers: the answer says so.
    assert_eq!(
        ended,
        format!("session {id} ended: phone confirmed, home confirmed\n")
    );
    home.wait_for("the end line", |l| {
        (l.starts_with(&format!("session {id} ended: ")) && l.contains("Forced")).then_some(())
    });
    // The record is written once both sides reported (or the grace ran out).
    let deadline = std::time::Instant::now() + WAIT;
    let json = loop {
        let json = ok(&run(
            tryst_std(),
            &["sessions", "--data-dir", path(&data), "--json"],
        ));
        if json.contains("\"live\": false") {
            break json;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recorded: {json}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        json.contains(&id) && json.contains("\"end_reason\": \"forced\""),
        "{json}"
    );
    for extra in [&[][..], &["--json"][..]] {
        let mut args = vec!["sessions", "--data-dir", path(&data)];
        args.extend(extra);
        let (t, s) = (ok(&run(tryst(), &args)), ok(&run(tryst_std(), &args)));
        assert_eq!(t, s, "sessions {extra:?} differ");
    }
    let table = ok(&run(tryst_std(), &["sessions", "--data-dir", path(&data)]));
    assert!(
        table.starts_with("session") && table.contains(&id),
        "{table}"
    );

    // An enrolment while the server runs is applied by it at once.
    let spare = dir.path().join("spare.key");
    let spare_pub = ok(&run(tryst_std(), &["keygen", "--out", path(&spare)]));
    let enrolled = ok(&run(
        tryst_std(),
        &[
            "enroll",
            "spare",
            spare_pub.trim(),
            "--data-dir",
            path(&data),
        ],
    ));
    assert_eq!(
        enrolled,
        "enrolled spare (the running server applies it now)\n"
    );
    // A session prefix that names nothing: the same usage error as tryst's.
    let (t, s) = (
        run(tryst(), &["end", "00000000", "--data-dir", path(&data)]),
        run(tryst_std(), &["end", "00000000", "--data-dir", path(&data)]),
    );
    assert_eq!((t.status.code(), s.status.code()), (Some(2), Some(2)));
    assert_eq!(
        text(&s.stderr).strip_prefix("tryst-std: "),
        text(&t.stderr).strip_prefix("tryst: ")
    );
    drop(phone);
}
