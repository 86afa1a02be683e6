//! The operator's end-to-end flows that touch the store
//! (`e2e_support/server_flows.rs`) with the servers and tools on a
//! PostgreSQL database (`--store postgres://...`), each flow on a database
//! of its own: kill -9 loses no acknowledged binding or record, `tryst
//! end` reaches the server through the shared command table, enrolments,
//! the split servers, extensions. Once with `tryst` everywhere, once with
//! `tryst-std` running the servers. Skipped, saying why, without
//! `TRYST_TEST_POSTGRES` (`.ci/run` sets it).
//!
//! Declared as a test of the `tryst-tokio` package (see its Cargo.toml).

#[path = "e2e_support/mod.rs"]
mod support;

mod tryst {
    use super::support;
    use crate::server_flows_on_postgres;
    server_flows_on_postgres!(support::Mix::TRYST);
}

mod tryst_std_servers {
    use super::support;
    use crate::server_flows_on_postgres;
    server_flows_on_postgres!(support::Mix {
        server: support::Bin::TrystStd,
        ..support::Mix::TRYST
    });
}

use std::time::{Duration, Instant};

use rand_core::OsRng;
use support::cluster::{
    connect, hex, online_term, pair, recorded, run, start_server, Term, LOOPBACK_ANY, STEP,
};
use tryst_tokio::core::crypto::StaticKeypair;
use tryst_tokio::core::wire::EndReason;

/// Waits until `proc`'s log has a line with every one of `needles`.
async fn log_line(proc: &support::Proc, needles: &[&str]) {
    let deadline = Instant::now() + STEP;
    while !proc
        .log()
        .lines()
        .any(|l| needles.iter().all(|n| l.contains(n)))
    {
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?}:\n{}",
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two servers on one database: a name bound through one is held on the
/// other against another key (the other server applies the shared binding,
/// so it never tries to bind the name itself, which the database would
/// refuse and which would stop it), and the other server goes on serving.
#[test]
fn pg_a_name_bound_on_one_server_is_held_on_another_sharing_the_store() {
    let Some(db) = support::pg::test_db("pg_name_held_on_another") else {
        return;
    };
    support::with_store(&db.url, || {
        support::block_on(async {
            let tmp = tempfile::tempdir().expect("tempdir");
            let a = start_server(&tmp.path().join("a"), &[], "a.log");
            let b = start_server(&tmp.path().join("b"), &[], "b.log");
            let _home = online_term(&a, "term1", StaticKeypair::generate(&mut OsRng), &[]).await;
            log_line(&b.proc, &["binding from the shared store applied", "term1"]).await;
            let mut thief = Term::start(
                "term1",
                StaticKeypair::generate(&mut OsRng),
                &[],
                b.control,
                b.trigger,
                b.key,
            )
            .await;
            // Answered like any registration (no existence oracle).
            thief.registration_outcome().await;
            log_line(&b.proc, &["impersonation attempt"]).await;
            // B still serves: a new name registers and comes online there.
            let _other = online_term(&b, "term2", StaticKeypair::generate(&mut OsRng), &[]).await;
        });
    });
}

/// S1604 with two session servers on one store: `tryst end` given the
/// other server's data dir (any server's operator, the shared command
/// table) ends a session that lives on the first: the command is
/// addressed to the session's owner, so the other server, which polls the
/// same table, leaves it alone, and the forced end is recorded once in
/// the shared log.
#[test]
fn pg_s1604_a_forced_end_from_either_server_reaches_the_session_where_it_lives() {
    let Some(db) = support::pg::test_db("pg_forced_end_two_servers") else {
        return;
    };
    support::with_store(&db.url, || {
        support::block_on(async {
            let tmp = tempfile::tempdir().expect("tempdir");
            let b_dir = tmp.path().join("b");
            let a = start_server(&tmp.path().join("a"), &[], "a.log");
            let b = start_server(&b_dir, &[], "b.log");
            let (mut home, mut phone) = pair(&a, StaticKeypair::generate(&mut OsRng)).await;
            let id = connect(&mut home, &mut phone, 600).await;
            let b_path = b_dir.to_str().expect("path");
            let out = run(&["end", &hex(&id.0), "--data-dir", b_path]);
            assert!(
                out.status.success(),
                "end: {}\nA:\n{}\nB:\n{}",
                support::text(&out.stderr),
                a.proc.log(),
                b.proc.log()
            );
            assert_eq!(phone.ended(id).await, EndReason::Forced);
            assert_eq!(home.ended(id).await, EndReason::Forced);
            let record = recorded(&b_dir, &id, STEP).await;
            assert_eq!(record["end_reason"], "forced");
        });
    });
}

/// Generates a key pair into `dir/file` (`tryst keygen`); its public key, hex.
fn keygen(dir: &std::path::Path, file: &str) -> String {
    std::fs::create_dir_all(dir).expect("mkdir");
    let out = run(&["keygen", "--out", dir.join(file).to_str().expect("path")]);
    assert!(
        out.status.success(),
        "keygen: {}",
        support::text(&out.stderr)
    );
    support::text(&out.stdout).trim().to_owned()
}

/// `tryst ping NAME -> home` through the session servers `servers` (keys
/// `keys`, comma lists) and the trigger server `trigger`, to the end.
fn ping_through(
    state: &std::path::Path,
    servers: &str,
    keys: &str,
    trigger: std::net::SocketAddr,
) -> std::process::Output {
    support::tryst_for("ping")
        .args([
            "ping",
            "--name",
            "phone",
            "--server",
            servers,
            "--server-key",
            keys,
        ])
        .args(["--trigger", &trigger.to_string(), "--state-dir"])
        .arg(state)
        .args(["home", "--count", "1", "--timeout", "3s"])
        .output()
        .expect("tryst ping runs")
}

/// Two session servers (their own keys) on one store, linked to one
/// trigger server; a `tryst terminal` given both (`--server A,B`, a key
/// per server) registers with A, and `tryst ping` through the same list
/// reaches it. After kill -9 of A the terminal registers with B, the next
/// ping reaches it there, and the session A recorded before it died is
/// still in the shared log.
#[test]
fn pg_kill_9_of_a_session_server_moves_its_terminals_to_the_next_and_loses_no_record() {
    let Some(db) = support::pg::test_db("pg_kill_9_session_server") else {
        return;
    };
    support::with_store(&db.url, || {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let key_a = keygen(&root.join("a"), "server.key");
        let key_b = keygen(&root.join("b"), "server.key");
        let trigger_key = keygen(&root.join("trigger"), "trigger.key");
        let mut trigger = support::Proc::start(
            &[
                "trigger-server",
                "--data-dir",
                root.join("trigger").to_str().expect("path"),
                "--trigger",
                LOOPBACK_ANY,
                "--link",
                LOOPBACK_ANY,
                "--session-server-key",
                &key_a,
                "--session-server-key",
                &key_b,
            ],
            root.join("trigger.log"),
            None,
        );
        let trigger_udp = trigger.addr("trigger");
        let link = trigger.addr("link").to_string();
        let session = |name: &str| {
            let mut proc = support::Proc::start(
                &[
                    "session-server",
                    "--data-dir",
                    root.join(name).to_str().expect("path"),
                    "--control",
                    LOOPBACK_ANY,
                    "--trigger-link",
                    &link,
                    "--trigger-key",
                    &trigger_key,
                ],
                root.join(format!("{name}.log")),
                None,
            );
            let control = proc.addr("control");
            (proc, control)
        };
        let (mut a, control_a) = session("a");
        let (b, control_b) = session("b");
        let servers = format!("{control_a},{control_b}");
        let keys = format!("{key_a},{key_b}");
        let home_state = root.join("home-state");
        let mut home = support::Proc::start(
            &[
                "terminal",
                "--name",
                "home",
                "--server",
                &servers,
                "--server-key",
                &keys,
                "--trigger",
                &trigger_udp.to_string(),
                "--state-dir",
                home_state.to_str().expect("path"),
                "--allow",
                "phone",
            ],
            root.join("home.log"),
            None,
        );
        home.expect_line("online: the trigger server sees this terminal at ");
        let phone_state = root.join("phone-state");
        let out = ping_through(&phone_state, &servers, &keys, trigger_udp);
        let all = format!(
            "{}{}",
            support::text(&out.stdout),
            support::text(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{all}\nA:\n{}", a.log());
        assert!(all.contains("1 sent, 1 received"), "{all}");

        a.kill9();
        home.expect_line("registered as home");
        let deadline = std::time::Instant::now() + STEP;
        loop {
            let out = ping_through(&phone_state, &servers, &keys, trigger_udp);
            if out.status.code() == Some(0) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no pong through B after A died: {}{}\nB:\n{}\nhome:\n{}",
                support::text(&out.stdout),
                support::text(&out.stderr),
                b.log(),
                home.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        // Both sessions are in the shared log: A's (stored before its
        // grant was sent, so before A died) and B's.
        let out = run(&["sessions", "--json"]);
        assert!(out.status.success(), "{}", support::text(&out.stderr));
        let log: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
        let home_sessions = log.iter().filter(|r| r["whom"] == "home").count();
        assert!(home_sessions >= 2, "{log:?}");
    });
}
