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

/// A loopback cluster on one store: a trigger server and two session
/// servers, A and B (their own keys), linked to it.
struct Cluster {
    root: std::path::PathBuf,
    _trigger: support::Proc,
    trigger_udp: std::net::SocketAddr,
    a: support::Proc,
    b: support::Proc,
    control_a: std::net::SocketAddr,
    control_b: std::net::SocketAddr,
    key_a: String,
    key_b: String,
}

impl Cluster {
    fn start(root: &std::path::Path) -> Cluster {
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
        let (a, control_a) = session("a");
        let (b, control_b) = session("b");
        Cluster {
            root: root.to_owned(),
            _trigger: trigger,
            trigger_udp,
            a,
            b,
            control_a,
            control_b,
            key_a,
            key_b,
        }
    }

    /// Both servers, A first, and their keys: the `--server` and
    /// `--server-key` lists of a terminal that may use either.
    fn both(&self) -> (String, String) {
        (
            format!("{},{}", self.control_a, self.control_b),
            format!("{},{}", self.key_a, self.key_b),
        )
    }

    /// `tryst terminal --name home` given `servers` (keys `keys`),
    /// allowing `phone`, once online.
    fn home(&self, servers: &str, keys: &str) -> support::Proc {
        let state = self.root.join("home-state");
        let inbox = self.root.join("inbox");
        let mut home = support::Proc::start(
            &[
                "terminal",
                "--name",
                "home",
                "--server",
                servers,
                "--server-key",
                keys,
                "--trigger",
                &self.trigger_udp.to_string(),
                "--state-dir",
                state.to_str().expect("path"),
                "--allow",
                "phone",
                "--recv-dir",
                inbox.to_str().expect("path"),
            ],
            self.root.join("home.log"),
            None,
        );
        home.expect_line("online: the trigger server sees this terminal at ");
        home
    }

    /// `tryst connect --name NAME ... home --send FILE` through B alone.
    fn connect_via_b(&self, name: &str, file: &std::path::Path) -> std::process::Output {
        let state = self.root.join(format!("{name}-state"));
        support::tryst_for("connect")
            .args(["connect", "--name", name, "--server"])
            .arg(self.control_b.to_string())
            .args(["--server-key", &self.key_b, "--trigger"])
            .arg(self.trigger_udp.to_string())
            .arg("--state-dir")
            .arg(&state)
            .args(["home", "--duration", "10s", "--send"])
            .arg(file)
            .output()
            .expect("tryst connect runs")
    }
}

/// Waits (blocking) until `proc`'s log has a line with every one of `needles`.
fn wait_log(proc: &support::Proc, needles: &[&str]) {
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
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Both outputs of a finished command.
fn said(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        support::text(&out.stdout),
        support::text(&out.stderr)
    )
}

/// A file of `len` pseudo-random bytes in `dir`.
fn payload(dir: &std::path::Path, len: usize) -> std::path::PathBuf {
    let file = dir.join("payload.bin");
    let bytes: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
    std::fs::write(&file, bytes).expect("write payload");
    file
}

/// Two session servers on one store: the target registered at A, the
/// requester at B. B hands the request to the cluster, A triggers the
/// target, checks its permission list, locates it and starts the session
/// (one record, A's), B gives the requester its notification: the file
/// arrives, verified. A requester the target does not allow, on B, gets
/// the uniform refusal (exit 3, "not permitted"), the same as for a name
/// nobody holds.
fn routed_request_reaches_a_target_on_the_other_server() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(tmp.path());
    // The target may use only A.
    let home = cluster.home(&cluster.control_a.to_string(), &cluster.key_a);
    wait_log(
        &cluster.b,
        &["binding from the shared store applied", "home"],
    );
    let file = payload(tmp.path(), 200_000);
    let out = cluster.connect_via_b("phone", &file);
    let all = said(&out);
    let digest = support::terminal_flows::sha256_hex(&file);
    assert!(
        out.status.success() && all.contains(&format!("the receiver verified SHA-256 {digest}")),
        "{all}\nA:\n{}\nB:\n{}\nhome:\n{}",
        cluster.a.log(),
        cluster.b.log(),
        home.log()
    );
    // The unpermitted requester and one asking for nobody: the same answer.
    let refused = cluster.connect_via_b("mallory", &file);
    assert_eq!(refused.status.code(), Some(3), "{}", said(&refused));
    assert!(
        said(&refused).contains("not permitted"),
        "{}",
        said(&refused)
    );
    let state = cluster.root.join("mallory-state");
    let nobody = support::tryst_for("connect")
        .args(["connect", "--name", "mallory", "--server"])
        .arg(cluster.control_b.to_string())
        .args(["--server-key", &cluster.key_b, "--trigger"])
        .arg(cluster.trigger_udp.to_string())
        .arg("--state-dir")
        .arg(&state)
        .args(["nobody", "--duration", "10s"])
        .output()
        .expect("tryst connect runs");
    assert_eq!(nobody.status.code(), Some(3), "{}", said(&nobody));
    assert_eq!(
        support::text(&refused.stdout),
        support::text(&nobody.stdout),
        "the two refusals must look the same"
    );
    // One record of the routed session, written by A (its owner), with
    // both sides' end notifications (the requester's came through B).
    let deadline = Instant::now() + STEP;
    loop {
        let out = run(&["sessions", "--json"]);
        assert!(out.status.success(), "{}", support::text(&out.stderr));
        let log: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
        let routed: Vec<_> = log.iter().filter(|r| r["whom"] == "home").collect();
        assert_eq!(routed.len(), 1, "{log:?}");
        let r = routed[0];
        if r["live"] == false {
            assert_eq!(r["who"], "phone", "{r}");
            assert_eq!(r["end_reason"], "completed", "{r}");
            assert!(!r["who_end"].is_null() && !r["whom_end"].is_null(), "{r}");
            break;
        }
        assert!(Instant::now() < deadline, "not recorded: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// S1604 across servers: the target on A, the requester on B, a live
/// session A owns; `tryst end` given B's data dir reaches A (the
/// command's owner), which end-triggers its target and has B end-trigger
/// the requester: both end as forced, and A records the end once, with
/// the requester's notification (through B).
fn routed_session_ends_by_tryst_end_from_the_requesters_server() {
    support::block_on(async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cluster = Cluster::start(tmp.path());
        let key_a = support::cluster::parse_key(&cluster.key_a);
        let key_b = support::cluster::parse_key(&cluster.key_b);
        let keys = StaticKeypair::generate(&mut OsRng);
        let mut home = Term::start(
            "term1",
            keys,
            &["term3"],
            cluster.control_a,
            cluster.trigger_udp,
            key_a,
        )
        .await;
        home.online().await;
        log_line(
            &cluster.b,
            &["binding from the shared store applied", "term1"],
        )
        .await;
        let keys = StaticKeypair::generate(&mut OsRng);
        let mut phone = Term::start(
            "term3",
            keys,
            &[],
            cluster.control_b,
            cluster.trigger_udp,
            key_b,
        )
        .await;
        phone.online().await;
        let id = connect(&mut home, &mut phone, 600).await;
        let b_dir = tmp.path().join("b");
        let out = run(&[
            "end",
            &hex(&id.0),
            "--data-dir",
            b_dir.to_str().expect("path"),
        ]);
        assert!(
            out.status.success(),
            "end: {}\nA:\n{}\nB:\n{}",
            support::text(&out.stderr),
            cluster.a.log(),
            cluster.b.log()
        );
        assert_eq!(phone.ended(id).await, EndReason::Forced);
        assert_eq!(home.ended(id).await, EndReason::Forced);
        let record = recorded(&b_dir, &id, STEP).await;
        assert_eq!(record["end_reason"], "forced", "{record}");
        assert!(
            !record["who_end"].is_null() && !record["whom_end"].is_null(),
            "{record}"
        );
    });
}

/// kill -9 of the target's server: a request through B for it fails
/// cleanly (the uniform refusal at its deny time, no hang); the target
/// registers with B, the next server on its list, and is reachable again.
fn routed_request_after_kill_9_of_the_targets_server_fails_cleanly_then_reaches_it_at_b() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(tmp.path());
    let (servers, keys) = cluster.both();
    let mut home = cluster.home(&servers, &keys);
    wait_log(
        &cluster.b,
        &["binding from the shared store applied", "home"],
    );
    let file = payload(tmp.path(), 50_000);
    let out = cluster.connect_via_b("phone", &file);
    assert!(
        out.status.success(),
        "{}\nB:\n{}",
        said(&out),
        cluster.b.log()
    );

    cluster.a.kill9();
    let asked = Instant::now();
    let failed = cluster.connect_via_b("phone", &file);
    assert!(!failed.status.success(), "{}", said(&failed));
    assert!(asked.elapsed() < STEP, "the request hung");
    home.expect_line("registered as home");
    let deadline = Instant::now() + STEP;
    loop {
        let out = cluster.connect_via_b("phone", &file);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not reachable at B after A died: {}\nB:\n{}\nhome:\n{}",
            said(&out),
            cluster.b.log(),
            home.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Runs `flow` on a database of its own (`label`), with `mix` deciding
/// the binaries; skipped without `TRYST_TEST_POSTGRES`.
fn on_postgres(label: &str, mix: support::Mix, flow: fn()) {
    let Some(db) = support::pg::test_db(label) else {
        return;
    };
    support::with_mix(mix, || support::with_store(&db.url, flow));
}

/// The cross-server flows with `mix` deciding the binaries.
macro_rules! routing_flows {
    ($mix:expr) => {
        #[test]
        fn pg_routed_request_reaches_a_target_on_the_other_server() {
            crate::on_postgres(
                concat!("pg_routed_", module_path!()),
                $mix,
                crate::routed_request_reaches_a_target_on_the_other_server,
            );
        }

        #[test]
        fn pg_s1604_tryst_end_from_the_requesters_server_ends_a_routed_session() {
            crate::on_postgres(
                concat!("pg_routed_end_", module_path!()),
                $mix,
                crate::routed_session_ends_by_tryst_end_from_the_requesters_server,
            );
        }

        #[test]
        fn pg_routed_request_after_kill_9_of_the_targets_server_fails_cleanly_then_reaches_it_at_b() {
            crate::on_postgres(
                concat!("pg_routed_kill_", module_path!()),
                $mix,
                crate::routed_request_after_kill_9_of_the_targets_server_fails_cleanly_then_reaches_it_at_b,
            );
        }
    };
}

mod routing_tryst {
    use super::support;
    routing_flows!(support::Mix::TRYST);
}

mod routing_tryst_std {
    use super::support;
    routing_flows!(support::Mix::STD);
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
        let mut cluster = Cluster::start(tmp.path());
        let (servers, keys) = cluster.both();
        let trigger_udp = cluster.trigger_udp;
        let mut home = cluster.home(&servers, &keys);
        let phone_state = tmp.path().join("phone-state");
        let out = ping_through(&phone_state, &servers, &keys, trigger_udp);
        let all = said(&out);
        assert_eq!(out.status.code(), Some(0), "{all}\nA:\n{}", cluster.a.log());
        assert!(all.contains("1 sent, 1 received"), "{all}");

        cluster.a.kill9();
        home.expect_line("registered as home");
        let deadline = std::time::Instant::now() + STEP;
        loop {
            let out = ping_through(&phone_state, &servers, &keys, trigger_udp);
            if out.status.code() == Some(0) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no pong through B after A died: {}\nB:\n{}\nhome:\n{}",
                said(&out),
                cluster.b.log(),
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
