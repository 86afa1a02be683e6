//! Abuse of the peer path and of the terminal's files, through the real
//! `tryst` binary on loopback (issue 12, point 6): a replayed peer
//! handshake init, file names that show as another name or do not fit
//! `NAME_MAX`, a file checked only after a session was granted, and state
//! or data dirs (and key files) that another user could swap.
//!
//! Declared as a test of the `tryst-tokio` package (see its Cargo.toml) so
//! that `CARGO_BIN_EXE_tryst` names the binary that `cargo test` built.

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "e2e_support/mod.rs"]
mod support;
use support::cluster::{hex, sessions_json, start_server, Server};
use support::{text, tryst, Proc};
use tryst_tokio::core::peer::packet::{peek_channel, PacketType};
use tryst_tokio::core::peer::session::MAX_CACHED_REPLY_RESENDS_ELSEWHERE;
use tryst_tokio::core::peer::transfer::{MAX_STORED_FILE_NAME_LEN, NAME_MAX};

/// The peer packet type of `datagram`, if it is a valid peer packet.
fn peer_type(datagram: &[u8]) -> Option<PacketType> {
    peek_channel(datagram).map(|(kind, _)| kind)
}
/// Copies of the recorded init the attacker replays, and their spacing
/// (longer than the responder's shortest re-send interval, so only the
/// budget can stop them).
const REPLAYS: usize = 150;
const REPLAY_SPACING: Duration = Duration::from_millis(25);
/// Longest a refused command may take: it must fail before any request.
const AT_ONCE: Duration = Duration::from_secs(5);

/// A fresh directory under the system's temp dir, mode 0700.
fn scratch(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "tryst-abuse-peer-{tag}-{}-{nanos}",
        std::process::id()
    ));
    fs::create_dir_all(&dir).expect("scratch dir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

/// The flags of a terminal-side command for device `name`, whose trigger
/// server address is `trigger`.
fn flags(server: &Server, name: &str, state: &Path, trigger: SocketAddr) -> Vec<String> {
    vec![
        "--name".into(),
        name.into(),
        "--server".into(),
        server.control.to_string(),
        "--trigger".into(),
        trigger.to_string(),
        "--server-key".into(),
        hex(&server.key.0),
        "--state-dir".into(),
        state.to_str().expect("utf-8 path").into(),
    ]
}

/// Starts `tryst terminal` for `name` and waits until it is online.
fn start_home(server: &Server, dir: &Path, trigger: SocketAddr, extra: &[&str]) -> Proc {
    let state = dir.join("home-state");
    let mut args = vec!["terminal".to_owned()];
    args.extend(flags(server, "home", &state, trigger));
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut proc = Proc::start(&refs, dir.join("home.log"), None);
    proc.expect_line("online: the trigger server sees this terminal at ");
    proc
}

/// The connecting side's `tryst connect` arguments (its own state dir).
fn connect_args(server: &Server, dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["connect".to_owned()];
    args.extend(flags(
        server,
        "phone",
        &dir.join("phone-state"),
        server.trigger,
    ));
    args.push("home".to_owned());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs `tryst connect phone -> home` to the end.
fn connect(server: &Server, dir: &Path, extra: &[&str]) -> Output {
    tryst()
        .args(connect_args(server, dir, extra))
        .output()
        .expect("tryst connect runs")
}

// ----- the replayed handshake init ---------------------------------------

/// What the on-path forwarder saw.
#[derive(Default)]
struct Seen {
    /// The home terminal's socket (the source of its keepalives).
    home: Option<SocketAddr>,
    /// The first peer handshake init that crossed towards the home.
    init: Option<Vec<u8>>,
    /// Handshake replies the home sent back through the forwarder.
    replies: usize,
}

/// A UDP forwarder that the home terminal uses as its trigger server: the
/// home's keepalives leave from `outer`, so the servers hand out `outer` as
/// the home's address, and every peer packet to the home crosses it (from
/// one inner socket per outside source, since the home tells trigger-server
/// traffic by its source). It records the first handshake init.
struct Forwarder {
    /// What the home uses as its trigger server.
    inner: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    fn start(trigger: SocketAddr) -> Forwarder {
        let inner = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
        let outer = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
        for s in [&inner, &outer] {
            s.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let inner_addr = inner.local_addr().expect("addr");
        // Home -> trigger server.
        {
            let (inner, outer, seen, stop) =
                (inner.clone(), outer.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = inner.recv_from(&mut buf) {
                        seen.lock().expect("lock").home = Some(from);
                        let _ = outer.send_to(&buf[..n], trigger);
                    }
                }
            });
        }
        // Outside -> home: trigger-server traffic through `inner`, peer
        // traffic through one mapped socket per source.
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut maps: Vec<(SocketAddr, Arc<UdpSocket>)> = Vec::new();
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = outer.recv_from(&mut buf) else {
                        continue;
                    };
                    let Some(home) = seen.lock().expect("lock").home else {
                        continue;
                    };
                    if from == trigger {
                        let _ = inner.send_to(&buf[..n], home);
                        continue;
                    }
                    if peer_type(&buf[..n]) == Some(PacketType::HandshakeInit) {
                        seen.lock()
                            .expect("lock")
                            .init
                            .get_or_insert(buf[..n].to_vec());
                    }
                    let mapped = match maps.iter().find(|(s, _)| *s == from) {
                        Some((_, m)) => m.clone(),
                        None => {
                            let m = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
                            m.set_read_timeout(Some(Duration::from_millis(50)))
                                .expect("timeout");
                            maps.push((from, m.clone()));
                            let (outer, seen, stop, m2) =
                                (outer.clone(), seen.clone(), stop.clone(), m.clone());
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 2048];
                                while !stop.load(Ordering::Relaxed) {
                                    if let Ok((n, _)) = m2.recv_from(&mut buf) {
                                        if peer_type(&buf[..n]) == Some(PacketType::HandshakeReply)
                                        {
                                            seen.lock().expect("lock").replies += 1;
                                        }
                                        let _ = outer.send_to(&buf[..n], from);
                                    }
                                }
                            });
                            m
                        }
                    };
                    let _ = mapped.send_to(&buf[..n], home);
                }
            });
        }
        Forwarder {
            inner: inner_addr,
            seen,
            stop,
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn replayed_peer_handshake_init_draws_at_most_the_cached_reply_budget() {
    let dir = scratch("replay");
    let server = start_server(&dir.join("server"), &[], "server.log");
    let forwarder = Forwarder::start(server.trigger);
    let mut home = start_home(&server, &dir, forwarder.inner, &["--allow", "phone"]);
    let args = connect_args(&server, &dir, &["--duration", "60s"]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut phone = Proc::start(&refs, dir.join("phone.log"), None);
    phone.expect_line("session ");
    home.expect_line("direct path up");
    // The init crossed the forwarder and was answered through it.
    let (init, home_addr) = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = forwarder.seen.lock().expect("lock");
            if let (Some(init), Some(home), true) = (&seen.init, seen.home, seen.replies > 0) {
                break (init.clone(), home);
            }
            assert!(
                Instant::now() < deadline,
                "no handshake crossed the forwarder (home {:?}, init {}, replies {}); home said {:?}",
                seen.home,
                seen.init.is_some(),
                seen.replies,
                home.expect_line("online")
            );
            drop(seen);
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // The attacker replays the recorded init from a third address.
    let third = UdpSocket::bind("127.0.0.1:0").expect("bind");
    third
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("timeout");
    let mut replies = 0;
    let mut buf = [0u8; 2048];
    let mut count = |third: &UdpSocket| {
        while let Ok((n, _)) = third.recv_from(&mut buf) {
            if peer_type(&buf[..n]) == Some(PacketType::HandshakeReply) {
                replies += 1;
            }
        }
    };
    for _ in 0..REPLAYS {
        third.send_to(&init, home_addr).expect("send");
        std::thread::sleep(REPLAY_SPACING);
        count(&third);
    }
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    count(&third);
    println!("{REPLAYS} replayed inits drew {replies} replies");
    assert!(
        replies <= usize::from(MAX_CACHED_REPLY_RESENDS_ELSEWHERE),
        "{REPLAYS} replayed inits drew {replies} cached replies"
    );
    // The session is still up: the replays moved nothing.
    phone.kill9();
    drop(home);
}

// ----- file names ---------------------------------------------------------

/// Asserts `out` is a refusal before any request: exit 2, one line naming
/// `why`, and no session in the server's log.
fn assert_refused_before_request(out: &Output, took: Duration, why: &str, server_dir: &Path) {
    assert_exit_2(out, why);
    assert!(took < AT_ONCE, "took {took:?}: not before the request");
    let log = sessions_json(server_dir);
    assert!(log.is_empty(), "a session was logged: {log:?}");
}

/// A server and a `tryst terminal` "home" that allows "phone" and keeps
/// received files in the returned inbox: the scratch dir, the server, the
/// inbox and the home.
fn receiving_home(tag: &str) -> (PathBuf, Server, PathBuf, Proc) {
    let dir = scratch(tag);
    let server = start_server(&dir.join("server"), &[], "server.log");
    let inbox = dir.join("inbox");
    fs::create_dir(&inbox).expect("inbox");
    let recv = [
        "--allow",
        "phone",
        "--recv-dir",
        inbox.to_str().expect("utf-8"),
    ];
    let home = start_home(&server, &dir, server.trigger, &recv);
    (dir, server, inbox, home)
}

#[test]
fn bad_file_names_are_refused_before_a_session_is_requested() {
    let (dir, server, inbox, _home) = receiving_home("names");
    let server_dir = dir.join("server");
    let files = dir.join("files");
    fs::create_dir(&files).expect("files");
    let long = "y".repeat(MAX_STORED_FILE_NAME_LEN + 1);
    for (name, why) in [
        ("invoice\u{202e}txt.exe", "format character (U+202E)"),
        ("zero\u{200b}width.txt", "format character (U+200B)"),
        (long.as_str(), "longer than"),
    ] {
        let path = files.join(name);
        fs::write(&path, b"payload").expect("write");
        let started = Instant::now();
        let out = connect(&server, &dir, &["--send", path.to_str().expect("utf-8")]);
        assert_refused_before_request(&out, started.elapsed(), why, &server_dir);
        // The refused name is escaped, never printed raw.
        assert!(!text(&out.stderr).contains('\u{202e}'), "raw bidi override");
    }
    // A file that cannot be read fails the same way.
    let missing = files.join("missing.txt");
    let started = Instant::now();
    let out = connect(&server, &dir, &["--send", missing.to_str().expect("utf-8")]);
    assert_refused_before_request(&out, started.elapsed(), "missing.txt", &server_dir);
    assert_eq!(fs::read_dir(&inbox).expect("inbox").count(), 0);
}

#[test]
fn longest_accepted_name_is_stored_twice_within_name_max() {
    let (dir, server, inbox, mut home) = receiving_home("namemax");
    let name = "n".repeat(MAX_STORED_FILE_NAME_LEN);
    let path = dir.join(&name);
    fs::write(&path, b"the same long name, twice").expect("write");
    for round in 0..2 {
        let out = connect(
            &server,
            &dir,
            &["--send", path.to_str().expect("utf-8"), "--duration", "30s"],
        );
        assert!(
            out.status.success(),
            "round {round}: {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        home.expect_line(if round == 0 { "received" } else { ".1 (" });
    }
    let mut stored: Vec<String> = fs::read_dir(&inbox)
        .expect("inbox")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    stored.sort();
    assert_eq!(stored, [name.clone(), format!("{name}.1")]);
    assert!(stored.iter().all(|n| n.len() <= NAME_MAX));
}

// ----- state dir, data dir and key ownership ------------------------------

/// Whether this process may give files away (the owner cases need root).
fn is_root() -> bool {
    let probe = scratch("uid");
    use std::os::unix::fs::MetadataExt;
    let uid = fs::metadata(&probe).map(|m| m.uid()).unwrap_or(u32::MAX);
    let _ = fs::remove_dir(&probe);
    uid == 0
}

/// Runs `tryst terminal` with state dir `state` (no server needed: it must
/// fail before it connects anywhere).
fn terminal_with_state(state: &Path) -> Output {
    let nowhere: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let mut cmd = tryst();
    cmd.args([
        "terminal",
        "--name",
        "home",
        "--server",
        &nowhere.to_string(),
        "--trigger",
        &nowhere.to_string(),
        "--server-key",
        &"ab".repeat(32),
        "--state-dir",
        state.to_str().expect("utf-8"),
    ]);
    exit_at_once(cmd)
}

/// Runs `tryst server` on `data` (it must fail at once).
fn server_with_data_dir(data: &Path) -> Output {
    let mut cmd = tryst();
    cmd.args(["server", "--data-dir", data.to_str().expect("utf-8")])
        .args(["--control", "127.0.0.1:0", "--trigger", "127.0.0.1:0"]);
    exit_at_once(cmd)
}

/// Runs `cmd` and returns its output; fails the test if it is still
/// running after [`AT_ONCE`] (it was not stopped by the check).
fn exit_at_once(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tryst binary starts");
    let deadline = Instant::now() + AT_ONCE;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "still running after {AT_ONCE:?}: not refused\n{}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Asserts `out` is a usage refusal: exit 2 and one line naming `why`.
fn assert_exit_2(out: &Output, why: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}\n{stderr}",
        text(&out.stdout)
    );
    assert!(stderr.contains(why), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn world_or_group_writable_state_and_data_dirs_are_refused() {
    let dir = scratch("dirmode");
    let state = dir.join("state");
    fs::create_dir(&state).expect("state");
    let data = dir.join("data");
    fs::create_dir(&data).expect("data");
    for mode in [0o777, 0o770] {
        fs::set_permissions(&state, fs::Permissions::from_mode(mode)).expect("chmod");
        assert_exit_2(&terminal_with_state(&state), "writable by group or others");
        fs::set_permissions(&data, fs::Permissions::from_mode(mode)).expect("chmod");
        assert_exit_2(&server_with_data_dir(&data), "writable by group or others");
    }
    // Nothing was written into them.
    assert_eq!(fs::read_dir(&state).expect("state").count(), 0);
    assert_eq!(fs::read_dir(&data).expect("data").count(), 0);
}

#[test]
fn key_file_or_state_dir_owned_by_another_user_is_refused() {
    if !is_root() {
        println!("not root: the other-owner case was not exercised (only the mode case ran)");
        return;
    }
    let dir = scratch("owner");
    // A key file in the documented format, mode 0600, owned by nobody.
    let state = dir.join("state");
    fs::create_dir(&state).expect("state");
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).expect("chmod");
    let key = state.join("terminal.key");
    fs::write(&key, format!("tryst-secret-key-v1 {}\n", "11".repeat(32))).expect("key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::chown(&key, Some(65534), None).expect("chown");
    assert_exit_2(&terminal_with_state(&state), "owned by uid 65534");
    // A state dir owned by nobody.
    let foreign = dir.join("foreign");
    fs::create_dir(&foreign).expect("foreign");
    fs::set_permissions(&foreign, fs::Permissions::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::chown(&foreign, Some(65534), None).expect("chown");
    assert_exit_2(&terminal_with_state(&foreign), "owned by uid 65534");
    // A server data dir owned by nobody.
    assert_exit_2(&server_with_data_dir(&foreign), "owned by uid 65534");
}
