//! The data dir lock through the real `tryst` binary: while a server runs
//! on a data dir, a second server of any kind (`server`, `session-server`,
//! `trigger-server`) on that dir refuses to start with one usage line
//! (exit 2) naming the dir, instead of sharing its store and keys; once
//! the first stops (SIGTERM or kill -9), the dir can be used again.
//!
//! Declared as a test of the `tryst-tokio` package so that
//! `CARGO_BIN_EXE_tryst` names the binary `cargo test` built.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[path = "e2e_support/mod.rs"]
mod support;
use support::cluster::*;
use support::{text, tryst};

/// How long a refused start may take before the test calls it a start.
const REFUSAL_WITHIN: Duration = Duration::from_secs(10);

/// Runs `tryst ARGS`, which must exit by itself within [`REFUSAL_WITHIN`]
/// (a second server that starts anyway is killed and fails the test);
/// returns its exit code, stdout and stderr.
fn run_refused(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = tryst()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tryst starts");
    let deadline = Instant::now() + REFUSAL_WITHIN;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{args:?} started on a data dir another server holds; stdout {:?}",
                text(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The refusal: exit 2, nothing on stdout, one `tryst: ` line naming `dir`.
fn assert_refused(args: &[&str], dir: &Path) {
    let (code, stdout, stderr) = run_refused(args);
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    assert!(stdout.is_empty(), "{args:?} printed {stdout:?}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.starts_with("tryst: "), "{stderr:?}");
    assert!(
        stderr.contains(&dir.display().to_string()) && stderr.contains("another server holds it"),
        "{stderr:?}"
    );
}

#[test]
fn a_second_server_on_a_held_data_dir_refuses_to_start() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("data");
    let mut first = start_server(&dir, &[], "first.log");
    let d = dir.to_str().expect("path");
    let key = hex(&first.key.0);

    assert_refused(
        &[
            "server",
            "--data-dir",
            d,
            "--control",
            LOOPBACK_ANY,
            "--trigger",
            LOOPBACK_ANY,
        ],
        &dir,
    );
    assert_refused(
        &[
            "session-server",
            "--data-dir",
            d,
            "--control",
            LOOPBACK_ANY,
            "--trigger-link",
            LOOPBACK_ANY,
            "--trigger-key",
            &key,
        ],
        &dir,
    );
    assert_refused(
        &[
            "trigger-server",
            "--data-dir",
            d,
            "--trigger",
            LOOPBACK_ANY,
            "--link",
            LOOPBACK_ANY,
            "--session-server-key",
            &key,
        ],
        &dir,
    );
    // The refused starts touched nothing: the first still serves its key.
    let log = first.proc.log();
    assert!(!log.contains("ERROR"), "{log}");

    // Stopped, the dir is free again; the same key comes back.
    assert!(first.proc.term(Duration::from_secs(20)).success());
    let second = start_server(&dir, &[], "second.log");
    assert_eq!(second.key, first.key);
}

#[test]
fn a_killed_server_leaves_no_stale_lock() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("data");
    let mut first = start_server(&dir, &[], "first.log");
    first.proc.kill9();
    let second = start_server(&dir, &[], "second.log");
    assert_eq!(second.key, first.key);
}
