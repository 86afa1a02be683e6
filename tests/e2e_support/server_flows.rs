//! The operator's side end to end, as flows any [`Mix`](super::Mix) of
//! the binaries runs: servers are child processes on 127.0.0.1 with ports
//! the kernel picks (each prints its bound addresses, which the flows
//! read); the terminals that drive them run in the test's process (the
//! tokio driver), so the flows see every terminal event. `e2e_servers`
//! runs them with `tryst`; `interop_flows` with `tryst-std` as the servers
//! ([`server_flows!`] makes one `#[test]` per flow for a mix).
#![allow(dead_code)]

use std::fs;
use std::process::Output;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use tryst_tokio::core::crypto::StaticKeypair;
use tryst_tokio::core::identity::{parse_secret_key, SecretKey};
use tryst_tokio::core::terminal::TerminalEvent;
use tryst_tokio::core::wire::EndReason;

use super::cluster::*;
use super::{text, tryst_for, Proc};

fn one_line_error(out: &Output) -> String {
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(
        err.starts_with("tryst: ") || err.starts_with("tryst-std: "),
        "{err:?}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err:?}"
    );
    err
}

pub fn keygen_writes_a_0600_secret_key_and_prints_the_public_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("device.key");
    let out = run(&["keygen", "--out", path.to_str().expect("path")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout).trim().to_owned();
    assert_eq!(printed.len(), 64, "{printed:?}");
    let mode = fs::metadata(&path).expect("key file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let secret: SecretKey = parse_secret_key(&fs::read(&path).expect("read")).expect("a key file");
    assert_eq!(hex(&secret.public_key().0), printed);
    let public = fs::read_to_string(dir.path().join("device.key.pub")).expect("pub file");
    assert!(public.contains(&printed));

    let again = run(&["keygen", "--out", path.to_str().expect("path")]);
    assert_eq!(again.status.code(), Some(2));
    assert!(one_line_error(&again).contains("refusing to overwrite"));
    let forced = run(&["keygen", "--out", path.to_str().expect("path"), "--force"]);
    assert!(forced.status.success());
    assert_ne!(text(&forced.stdout).trim(), printed);
}

pub fn bad_flags_exit_2_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("path");
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["no-such-command"],
        vec!["server", "--bogus"],
        vec!["server"],
        vec!["server", "--data-dir", d, "--max-duration", "banana"],
        vec!["server", "--data-dir", d, "--control", "not-an-address"],
        vec!["sessions", "--data-dir", d],
        vec!["sessions", "--store", "mysql://nobody@nowhere/db"],
        vec!["end", "0123456789abcdef", "--store", "sqlite"],
        vec!["end", "xyz", "--data-dir", d],
        vec!["enroll", "term1", "not-a-key", "--data-dir", d],
        vec!["keygen"],
        vec!["trigger-server", "--data-dir", d],
    ];
    for args in cases {
        let out = run(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        one_line_error(&out);
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {:?}",
            text(&out.stdout)
        );
    }
}

pub fn a_server_that_cannot_listen_exits_2_with_one_line() {
    let taken = std::net::TcpListener::bind(LOOPBACK_ANY).expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    // Logs off: stderr is then exactly the error line.
    let out = tryst_for("server")
        .env("RUST_LOG", "off")
        .args([
            "server",
            "--data-dir",
            dir.to_str().expect("path"),
            "--control",
            &addr,
        ])
        .args(["--trigger", LOOPBACK_ANY])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(one_line_error(&out).contains(&addr));
}

pub fn server_prints_its_key_and_writes_server_pub_and_keeps_it_across_restarts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let mut first = start_server(&dir, &[], "first.log");
    let public = fs::read_to_string(dir.join("server.pub")).expect("server.pub");
    assert!(public.contains(&hex(&first.key.0)));
    first.proc.expect_line("created a new key");
    first.proc.kill9();
    let mut second = start_server(&dir, &[], "second.log");
    assert_eq!(second.key, first.key, "the key is created once");
    assert_ne!(second.control.port(), 0);
    assert!(second.proc.term(STEP).success(), "{}", second.proc.log());
}

pub async fn kill_9_loses_no_acknowledged_binding_or_record() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let mut server = start_server(&dir, &[], "before.log");
    let home_secret = SecretKey::generate(&mut OsRng);
    let (mut home, mut phone) = pair(&server, home_secret.keypair()).await;

    // One session runs to its end and is recorded.
    let done = connect(&mut home, &mut phone, 60).await;
    phone
        .handle
        .progress(done, 4096, 0, false)
        .await
        .expect("progress");
    home.handle
        .progress(done, 0, 4096, false)
        .await
        .expect("progress");
    finish_both(&phone, &home, done).await;
    phone.ended(done).await;
    home.ended(done).await;
    recorded(&dir, &done, STEP).await;
    // Another starts (both sides were notified: acknowledged) and stays live.
    let live = connect(&mut home, &mut phone, 600).await;

    server.proc.kill9();
    let mut server = start_server(&dir, &[], "after.log");

    let log = sessions_json(&dir);
    let first = row(&log, &done).expect("the finished session survived");
    assert_eq!(first["end_reason"], "completed");
    assert_eq!(first["who"], "term3");
    assert_eq!(first["whom"], "term1");
    assert_eq!(first["bytes"], 4096);
    let second = row(&log, &live).expect("the live session survived");
    assert_eq!(second["live"], true, "{second}");

    // The binding survived: another key cannot take TERM1, its own key can.
    let mut thief = Term::start(
        "term1",
        StaticKeypair::generate(&mut OsRng),
        &[],
        server.control,
        server.trigger,
        server.key,
    )
    .await;
    // Answered like any registration (a registration tells no one whether
    // a name exists), but the server knows TERM1 is another key's.
    thief.registration_outcome().await;
    let deadline = Instant::now() + STEP;
    while !server.proc.log().contains("impersonation attempt") {
        assert!(Instant::now() < deadline, "another key took term1");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut owner = Term::start(
        "term1",
        home_secret.keypair(),
        &[],
        server.control,
        server.trigger,
        server.key,
    )
    .await;
    assert!(
        !owner.registration_outcome().await,
        "term1's own key was refused"
    );

    // The live session was restored into the machine: it can be ended, and
    // gets its one record.
    let id = hex(&live.0);
    let out = run(&["end", &id, "--data-dir", dir.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "end: {}\n{}",
        text(&out.stderr),
        server.proc.log()
    );
    let forced = recorded(&dir, &live, Duration::from_secs(30)).await;
    assert_eq!(forced["end_reason"], "forced");
    assert!(server.proc.term(STEP).success(), "{}", server.proc.log());
}

pub async fn tryst_end_forces_a_live_session_to_end_s1604() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let mut server = start_server(&dir, &[], "server.log");
    let (mut home, mut phone) = pair(&server, StaticKeypair::generate(&mut OsRng)).await;
    let id = connect(&mut home, &mut phone, 600).await;

    let log = sessions_json(&dir);
    assert_eq!(row(&log, &id).expect("listed while live")["live"], true);
    let prefix = &hex(&id.0)[..12];
    let out = run(&["end", prefix, "--data-dir", dir.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "end: {}\n{}",
        text(&out.stderr),
        server.proc.log()
    );
    assert_eq!(phone.ended(id).await, EndReason::Forced);
    assert_eq!(home.ended(id).await, EndReason::Forced);
    let record = recorded(&dir, &id, STEP).await;
    assert_eq!(record["end_reason"], "forced");
    let table = run(&["sessions", "--data-dir", dir.to_str().expect("path")]);
    assert!(table.status.success());
    let table = text(&table.stdout);
    let header = table.lines().next().expect("a header");
    for column in [
        "who", "whom", "start", "duration", "ext", "bytes", "end", "who end", "whom end",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let line = table
        .lines()
        .find(|l| l.starts_with(&hex(&id.0)))
        .expect("the session's line");
    assert!(
        line.contains("term3")
            && line.contains("term1")
            && line.split_whitespace().nth(7) == Some("forced"),
        "{line}"
    );

    // Ending it again, or a session that never was, fails in one line.
    let again = run(&[
        "end",
        &hex(&id.0),
        "--data-dir",
        dir.to_str().expect("path"),
    ]);
    assert_eq!(again.status.code(), Some(1));
    one_line_error(&again);
    let unknown = run(&[
        "end",
        "00000000000000000000000000000000",
        "--data-dir",
        dir.to_str().expect("path"),
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    one_line_error(&unknown);
    assert!(server.proc.term(STEP).success());
}

pub async fn sigterm_ends_live_sessions_cleanly_and_records_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let mut server = start_server(&dir, &[], "server.log");
    let (mut home, mut phone) = pair(&server, StaticKeypair::generate(&mut OsRng)).await;
    let id = connect(&mut home, &mut phone, 600).await;

    assert!(server.proc.term(STEP).success(), "{}", server.proc.log());
    assert_eq!(phone.ended(id).await, EndReason::Forced);
    assert_eq!(home.ended(id).await, EndReason::Forced);
    let log = sessions_json(&dir);
    let record = row(&log, &id).expect("recorded");
    assert_eq!(record["live"], false, "{record}");
    assert_eq!(record["end_reason"], "forced");
}

pub async fn closed_server_admits_only_enrolled_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let d = dir.to_str().expect("path").to_owned();
    let camera = SecretKey::generate(&mut OsRng);
    let camera_hex = hex(&camera.public_key().0);
    // Enrolled before the first start...
    let out = run(&["enroll", "camera", &camera_hex, "--data-dir", &d]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut server = start_server(&dir, &["--closed"], "server.log");
    let mut cam = Term::start(
        "camera",
        camera.keypair(),
        &[],
        server.control,
        server.trigger,
        server.key,
    )
    .await;
    assert!(
        !cam.registration_outcome().await,
        "an enrolled name was refused"
    );

    // ...or while it runs.
    let phone = SecretKey::generate(&mut OsRng);
    let mut early = Term::start(
        "phone",
        phone.keypair(),
        &[],
        server.control,
        server.trigger,
        server.key,
    )
    .await;
    assert!(
        early.registration_outcome().await,
        "a name nobody enrolled registered"
    );
    let out = run(&[
        "enroll",
        "phone",
        &hex(&phone.public_key().0),
        "--data-dir",
        &d,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("running server"),
        "{}",
        text(&out.stdout)
    );
    let mut late = Term::start(
        "phone",
        phone.keypair(),
        &[],
        server.control,
        server.trigger,
        server.key,
    )
    .await;
    assert!(
        !late.registration_outcome().await,
        "enrolled at run time, still refused"
    );

    // The enrolled name is the key's alone.
    let mut other = Term::start(
        "phone",
        StaticKeypair::generate(&mut OsRng),
        &[],
        server.control,
        server.trigger,
        server.key,
    )
    .await;
    assert!(other.registration_outcome().await);
    let clash = run(&["enroll", "phone", &camera_hex, "--data-dir", &d]);
    assert_eq!(clash.status.code(), Some(1));
    one_line_error(&clash);
    assert!(server.proc.term(STEP).success());
}

pub async fn split_servers_link_over_the_authenticated_channel() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sdir = tmp.path().join("session");
    let tdir = tmp.path().join("trigger");
    fs::create_dir(&sdir).expect("mkdir");
    fs::create_dir(&tdir).expect("mkdir");
    // Each side needs the other's key: make the session server's first.
    let out = run(&[
        "keygen",
        "--out",
        sdir.join("server.key").to_str().expect("path"),
    ]);
    assert!(out.status.success());
    let session_key = text(&out.stdout).trim().to_owned();
    let mut trig = Proc::start(
        &[
            "trigger-server",
            "--data-dir",
            tdir.to_str().expect("path"),
            "--trigger",
            LOOPBACK_ANY,
            "--link",
            LOOPBACK_ANY,
            "--session-server-key",
            &session_key,
        ],
        tmp.path().join("trigger.log"),
        None,
    );
    let trigger_key = trig.value("trigger key");
    let trigger_udp = trig.addr("trigger");
    let link = trig.addr("link").to_string();
    let mut sess = Proc::start(
        &[
            "session-server",
            "--data-dir",
            sdir.to_str().expect("path"),
            "--control",
            LOOPBACK_ANY,
            "--trigger-link",
            &link,
            "--trigger-key",
            tdir.join("trigger.pub").to_str().expect("path"),
        ],
        tmp.path().join("session.log"),
        None,
    );
    assert_eq!(
        sess.value("server key"),
        session_key,
        "the keygen'd key is used"
    );
    let server = Server {
        key: parse_key(&session_key),
        control: sess.addr("control"),
        trigger: trigger_udp,
        proc: sess,
    };
    assert_eq!(hex(&parse_key(&trigger_key).0), trigger_key);
    let (mut home, mut phone) = pair(&server, StaticKeypair::generate(&mut OsRng)).await;
    let id = connect(&mut home, &mut phone, 60).await;
    let mut server = server;
    let out = run(&[
        "end",
        &hex(&id.0),
        "--data-dir",
        sdir.to_str().expect("path"),
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        server.proc.log()
    );
    assert_eq!(home.ended(id).await, EndReason::Forced);
    assert!(server.proc.term(STEP).success(), "{}", server.proc.log());
    assert!(trig.term(STEP).success(), "{}", trig.log());
}

/// Runs a 4-second session whose transfer is still going at 70%; returns
/// what the requester heard and the session's record.
async fn session_that_asks_for_more(extra: &[&str]) -> (Option<u32>, serde_json::Value) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let mut args = vec!["--max-duration", "4s"];
    args.extend_from_slice(extra);
    let mut server = start_server(&dir, &args, "server.log");
    let (mut home, mut phone) = pair(&server, StaticKeypair::generate(&mut OsRng)).await;
    let id = connect(&mut home, &mut phone, 4).await;
    phone
        .handle
        .progress(id, 1000, 0, true)
        .await
        .expect("progress");
    home.handle
        .progress(id, 0, 1000, true)
        .await
        .expect("progress");
    let granted = phone
        .expect("an answer to the extension request", |e| match e {
            TerminalEvent::SessionExtended {
                session_id,
                duration_secs,
            } if *session_id == id => Some(Some(*duration_secs)),
            TerminalEvent::ExtensionRefused { session_id } if *session_id == id => Some(None),
            _ => None,
        })
        .await;
    phone
        .handle
        .progress(id, 2000, 0, false)
        .await
        .expect("progress");
    home.handle
        .progress(id, 0, 2000, false)
        .await
        .expect("progress");
    finish_both(&phone, &home, id).await;
    let record = recorded(&dir, &id, STEP).await;
    assert!(server.proc.term(STEP).success(), "{}", server.proc.log());
    (granted, record)
}

pub async fn s1602_extension_is_granted_within_the_extension_allowance_and_logged() {
    let (granted, record) = session_that_asks_for_more(&["--extension", "10s"]).await;
    assert_eq!(granted, Some(4 + EXTENSION_ASK_SECS));
    assert_eq!(record["extensions"], 1, "{record}");
    assert_eq!(record["permitted_secs"], 4 + EXTENSION_ASK_SECS, "{record}");
    assert_eq!(record["end_reason"], "completed");
    assert_eq!(record["bytes"], 2000, "one way, as both sides reported it");
}

pub async fn extension_0s_refuses_every_extension() {
    let (granted, record) = session_that_asks_for_more(&["--extension", "0s"]).await;
    assert_eq!(granted, None);
    assert_eq!(record["extensions"], 0, "{record}");
    assert_eq!(record["permitted_secs"], 4, "{record}");
}

/// One `#[test]` per flow of [`self`], each run with the mix `$mix` (the
/// async ones on a two-worker runtime whose main future runs on the test's
/// thread, where the mix is set).
#[macro_export]
macro_rules! server_flows {
    ($mix:expr) => {
        #[test]
        fn keygen_writes_a_0600_secret_key_and_prints_the_public_key() {
            support::with_mix($mix, support::server_flows::keygen_writes_a_0600_secret_key_and_prints_the_public_key);
        }
        #[test]
        fn bad_flags_exit_2_with_one_line() {
            support::with_mix($mix, support::server_flows::bad_flags_exit_2_with_one_line);
        }
        #[test]
        fn a_server_that_cannot_listen_exits_2_with_one_line() {
            support::with_mix($mix, support::server_flows::a_server_that_cannot_listen_exits_2_with_one_line);
        }
        #[test]
        fn server_prints_its_key_and_writes_server_pub_and_keeps_it_across_restarts() {
            support::with_mix($mix, support::server_flows::server_prints_its_key_and_writes_server_pub_and_keeps_it_across_restarts);
        }
        #[test]
        fn kill_9_loses_no_acknowledged_binding_or_record() {
            support::with_mix($mix, || support::block_on(support::server_flows::kill_9_loses_no_acknowledged_binding_or_record()));
        }
        #[test]
        fn tryst_end_forces_a_live_session_to_end_s1604() {
            support::with_mix($mix, || support::block_on(support::server_flows::tryst_end_forces_a_live_session_to_end_s1604()));
        }
        #[test]
        fn sigterm_ends_live_sessions_cleanly_and_records_them() {
            support::with_mix($mix, || support::block_on(support::server_flows::sigterm_ends_live_sessions_cleanly_and_records_them()));
        }
        #[test]
        fn closed_server_admits_only_enrolled_names() {
            support::with_mix($mix, || support::block_on(support::server_flows::closed_server_admits_only_enrolled_names()));
        }
        #[test]
        fn split_servers_link_over_the_authenticated_channel() {
            support::with_mix($mix, || support::block_on(support::server_flows::split_servers_link_over_the_authenticated_channel()));
        }
        #[test]
        fn s1602_extension_is_granted_within_the_extension_allowance_and_logged() {
            support::with_mix($mix, || support::block_on(support::server_flows::s1602_extension_is_granted_within_the_extension_allowance_and_logged()));
        }
        #[test]
        fn extension_0s_refuses_every_extension() {
            support::with_mix($mix, || support::block_on(support::server_flows::extension_0s_refuses_every_extension()));
        }
    };
}

/// The flows that read or write the store, each on a PostgreSQL database
/// of its own (`--store postgres://...`, through `TRYST_STORE`); skipped,
/// saying why, when `TRYST_TEST_POSTGRES` is unset.
#[macro_export]
macro_rules! server_flows_on_postgres {
    ($mix:expr) => {
        $crate::server_flows_on_postgres!(@flows $mix;
            kill_9_loses_no_acknowledged_binding_or_record,
            tryst_end_forces_a_live_session_to_end_s1604,
            sigterm_ends_live_sessions_cleanly_and_records_them,
            closed_server_admits_only_enrolled_names,
            split_servers_link_over_the_authenticated_channel,
            s1602_extension_is_granted_within_the_extension_allowance_and_logged,
        );
    };
    (@flows $mix:expr; $($flow:ident),* $(,)?) => {
        $(
            #[test]
            fn $flow() {
                let Some(db) = support::pg::test_db(stringify!($flow)) else {
                    return;
                };
                support::with_store(&db.url, || {
                    support::with_mix($mix, || support::block_on(support::server_flows::$flow()))
                });
            }
        )*
    };
}
