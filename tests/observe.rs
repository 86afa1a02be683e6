//! Issue 17 through the real binaries: the Prometheus metrics of a
//! server (`--metrics`) and of a terminal daemon, and `tryst status`, the
//! operator's table. A server child process on loopback, in-process
//! terminals that speak the real protocol to it; the test scrapes
//! `/metrics` after a registration, a set-up, a refused request and a
//! junk handshake, and asserts each counted by outcome. Runs with `tryst`
//! and with `tryst-std` as the server.
//!
//! Declared as a test of the `tryst-tokio` package (see its Cargo.toml) so
//! that `CARGO_BIN_EXE_tryst` names the binary that `cargo test` built.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use tryst_tokio::core::crypto::StaticKeypair;
use tryst_tokio::core::terminal::TerminalEvent;
use tryst_tokio::core::wire::{HandshakeInit, Message};

#[path = "e2e_support/mod.rs"]
mod support;
use support::cluster::*;
use support::{with_mix, Bin, Mix, Proc};

/// A fresh directory under the system's temp dir.
fn scratch(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "tryst-observe-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `GET path` on `addr` (HTTP/1.1, one request): status and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, STEP).expect("connects");
    s.set_read_timeout(Some(STEP)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request sent");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("response read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `name` (with its labels as printed, e.g.
/// `tryst_setups_total{outcome="started"}`) in an exposition; 0 if absent.
fn sample(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Scrapes until `ready` holds for the exposition (the values move as
/// events arrive), or fails after [`STEP`] with the last one.
fn scrape_until(addr: SocketAddr, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        let (status, body) = http_get(addr, "/metrics");
        assert_eq!(status, 200, "{body}");
        if ready(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{what} never showed:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metrics_addr(proc: &mut Proc) -> SocketAddr {
    let url = proc.value("metrics");
    url.strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not a metrics URL: {url}"))
}

fn server_metrics_move_with_registrations_setups_refusals_and_bad_handshakes() {
    let root = scratch("metrics");
    let dir = root.join("server");
    let mut server = start_server(&dir, &["--metrics", LOOPBACK_ANY], "server.log");
    let metrics = metrics_addr(&mut server.proc);
    let before = scrape_until(metrics, "the families", |m| m.contains("tryst_setups"));
    assert_eq!(sample(&before, "tryst_terminals_live"), 0.0, "{before}");
    for family in [
        "# TYPE tryst_registrations counter",
        "# TYPE tryst_setup_duration_seconds histogram",
        "# TYPE tryst_store_write_duration_seconds histogram",
        "# TYPE tryst_sessions_live gauge",
        "# TYPE tryst_keepalives counter",
    ] {
        assert!(before.contains(family), "{family} missing:\n{before}");
    }

    support::block_on(async {
        let (mut home, mut phone) = pair(&server, StaticKeypair::generate(&mut OsRng)).await;
        let id = connect(&mut home, &mut phone, 60).await;
        // A refused request: no such name (denied at its deny time).
        phone
            .handle
            .connect("NOBODY", 5)
            .await
            .expect("request sent");
        phone
            .expect("the refusal", |e| {
                matches!(e, TerminalEvent::ConnectFailed { .. }).then_some(())
            })
            .await;
        // A junk handshake on the control port.
        let mut raw = RawStream::connect(server.control).expect("connects");
        raw.send_message(&Message::HandshakeInit(HandshakeInit {
            noise: &[0x42; 96],
        }))
        .expect("sent");

        let m = scrape_until(metrics, "every outcome", |m| {
            sample(m, "tryst_handshake_failures_total{role=\"session\"}") >= 1.0
                && sample(m, "tryst_setups_total{outcome=\"unknown_target\"}") >= 1.0
                && sample(m, "tryst_keepalives_total") >= 2.0
        });
        assert_eq!(
            sample(&m, "tryst_registrations_total{outcome=\"accepted\"}"),
            2.0,
            "{m}"
        );
        assert_eq!(sample(&m, "tryst_setups_total{outcome=\"started\"}"), 1.0);
        assert_eq!(
            sample(&m, "tryst_sessions_started_total{path=\"direct\"}"),
            1.0
        );
        assert_eq!(sample(&m, "tryst_setup_duration_seconds_count"), 1.0);
        assert!(sample(&m, "tryst_store_write_duration_seconds_count") >= 1.0);
        assert_eq!(sample(&m, "tryst_terminals_live"), 2.0);
        assert_eq!(sample(&m, "tryst_sessions_live"), 1.0);
        assert_eq!(sample(&m, "tryst_trigger_devices"), 2.0);

        // `tryst status`: both terminals with their keepalives, the session.
        let out = run(&["status", "--data-dir", dir.to_str().expect("utf-8")]);
        let table = support::text(&out.stdout);
        assert!(
            out.status.success(),
            "{table}{}",
            support::text(&out.stderr)
        );
        let session = hex(&id.0);
        for needle in [
            "term1",
            "term3",
            "s ago",
            session.as_str(),
            "handshake_failures",
        ] {
            assert!(table.contains(needle), "{needle} not in:\n{table}");
        }
        let out = run(&[
            "status",
            "--json",
            "--data-dir",
            dir.to_str().expect("utf-8"),
        ]);
        assert!(out.status.success(), "{}", support::text(&out.stderr));
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let terminals = status["terminals"].as_array().expect("terminals");
        assert_eq!(terminals.len(), 2, "{status}");
        for t in terminals {
            assert!(t["last_keepalive_secs"].is_number(), "{t}");
            assert!(
                t["observed"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("127.0.0.1:")),
                "{t}"
            );
            // In-process terminals on loopback: nothing translates.
            assert_eq!(t["nat"], "none (public address)", "{t}");
        }
        let sessions = status["sessions"].as_array().expect("sessions");
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0]["session_id"], session.as_str());
        let left = sessions[0]["remaining_secs"].as_f64().expect("remaining");
        assert!(left > 0.0 && left <= 60.0, "{left}");

        finish_both(&phone, &home, id).await;
        let m = scrape_until(metrics, "the session's record", |m| {
            sample(m, "tryst_sessions_ended_total{reason=\"completed\"}") >= 1.0
        });
        assert_eq!(sample(&m, "tryst_sessions_live"), 0.0, "{m}");
    });
    // Unknown paths are not metrics.
    assert_eq!(http_get(metrics, "/").0, 404);
    drop(server);
}

#[test]
fn metrics_server_counts_registrations_setups_refusals_and_bad_handshakes() {
    server_metrics_move_with_registrations_setups_refusals_and_bad_handshakes();
}

#[test]
fn metrics_server_counts_the_same_on_tryst_std() {
    let mix = Mix {
        server: Bin::TrystStd,
        ..Mix::TRYST
    };
    with_mix(
        mix,
        server_metrics_move_with_registrations_setups_refusals_and_bad_handshakes,
    );
}

/// A `tryst terminal` daemon (the mix's daemon binary) on loopback: the
/// servers' NAT type guess compares the local address its registration
/// named (0.0.0.0 resolved toward the trigger server: 127.0.0.1) with the
/// source its keepalives come from, and loopback translates nothing, so
/// `tryst status` (table and --json) and the metrics say "no NAT".
fn status_guesses_no_nat_for_a_daemon_on_loopback() {
    let root = scratch("nat");
    let dir = root.join("server");
    let mut server = start_server(&dir, &["--metrics", LOOPBACK_ANY], "server.log");
    let metrics = metrics_addr(&mut server.proc);
    let key = hex(&server.key.0);
    let control = server.control.to_string();
    let trigger = server.trigger.to_string();
    let state = root.join("home-state");
    let args = [
        "terminal",
        "--name",
        "home",
        "--server",
        &control,
        "--trigger",
        &trigger,
        "--server-key",
        &key,
        "--state-dir",
        state.to_str().expect("utf-8"),
    ];
    let mut daemon = Proc::start(&args, root.join("home.log"), None);
    daemon.expect_line("online:");
    let data_dir = dir.to_str().expect("utf-8");
    let deadline = Instant::now() + STEP;
    let home = loop {
        let out = run(&["status", "--json", "--data-dir", data_dir]);
        assert!(out.status.success(), "{}", support::text(&out.stderr));
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let home = status["terminals"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == "home").cloned());
        if let Some(home) = home.filter(|t| t["observed"].is_string()) {
            break home;
        }
        assert!(Instant::now() < deadline, "home never observed: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(home["nat"], "none (public address)", "{home}");
    let out = run(&["status", "--data-dir", data_dir]);
    let table = support::text(&out.stdout);
    assert!(table.contains("none (public address)"), "{table}");
    let m = scrape_until(metrics, "the guess", |m| {
        sample(m, "tryst_terminals{nat=\"public\"}") == 1.0
    });
    assert_eq!(sample(&m, "tryst_terminals{nat=\"unknown\"}"), 0.0, "{m}");
    assert!(m.contains("# TYPE tryst_terminals gauge"), "{m}");
    drop(daemon);
    drop(server);
}

#[test]
fn status_nat_guess_on_loopback_is_no_nat() {
    status_guesses_no_nat_for_a_daemon_on_loopback();
}

#[test]
fn status_nat_guess_on_loopback_is_no_nat_on_tryst_std() {
    with_mix(Mix::STD, status_guesses_no_nat_for_a_daemon_on_loopback);
}

#[test]
fn status_without_a_running_server_fails_with_one_line() {
    let root = scratch("status-none");
    let dir = root.join("server");
    // A store with no server on it: start one, then stop it.
    let mut server = start_server(&dir, &[], "server.log");
    let _ = server.proc.term(STEP);
    let out = run(&["status", "--data-dir", dir.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "{}", support::text(&out.stdout));
    let err = support::text(&out.stderr);
    assert!(err.contains("no server is running"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn metrics_terminal_daemon_reports_its_registration_and_online_state() {
    let root = scratch("terminal");
    let server = start_server(&root.join("server"), &[], "server.log");
    let state = root.join("home-state");
    let key = hex(&server.key.0);
    let control = server.control.to_string();
    let trigger = server.trigger.to_string();
    let args = [
        "terminal",
        "--name",
        "home",
        "--server",
        &control,
        "--trigger",
        &trigger,
        "--server-key",
        &key,
        "--state-dir",
        state.to_str().expect("utf-8"),
        "--metrics",
        LOOPBACK_ANY,
    ];
    let mut daemon = Proc::start(&args, root.join("home.log"), None);
    let metrics = metrics_addr(&mut daemon);
    daemon.expect_line("online:");
    let m = scrape_until(metrics, "online", |m| {
        sample(m, "tryst_terminal_online") == 1.0
    });
    assert_eq!(
        sample(
            &m,
            "tryst_terminal_registrations_total{outcome=\"accepted\"}"
        ),
        1.0,
        "{m}"
    );
    drop(daemon);
    drop(server);
}
