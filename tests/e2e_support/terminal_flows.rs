//! The terminals' side end to end, as flows any [`Mix`] of the two
//! binaries runs: a server, a `terminal` daemon and one-shot `connect`
//! runs are child processes on 127.0.0.1 with ports the kernel picks; the
//! flows read what each prints. `e2e_terminal` runs them with `tryst`
//! everywhere; `interop_std` with `tryst-std` in each place
//! ([`terminal_flows!`] makes one `#[test]` per flow for a mix).
#![allow(dead_code)]

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use super::{text, tryst_for, Proc};

/// Longest any one step may take.
const STEP: Duration = Duration::from_secs(30);

/// A fresh directory under the system's temp dir.
fn scratch(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("tryst-e2e-{tag}-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A `tryst server` on loopback with kernel-picked ports.
struct Server {
    /// Kept so the server runs as long as the test.
    _proc: Proc,
    data: PathBuf,
    control: SocketAddr,
    trigger: SocketAddr,
    key: String,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let data = dir.join("server");
        let mut args = vec![
            "server",
            "--data-dir",
            data.to_str().expect("utf-8 path"),
            "--control",
            "127.0.0.1:0",
            "--trigger",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut proc = Proc::start(&args, dir.join("server.log"), None);
        let key = proc.value("server key");
        let control = proc.value("control").parse().expect("control address");
        let trigger = proc.value("trigger").parse().expect("trigger address");
        Server {
            _proc: proc,
            data,
            control,
            trigger,
            key,
        }
    }

    /// What the server wrote to stderr so far (its log).
    fn log(&self) -> String {
        self._proc.log()
    }

    /// The flags every terminal-side command takes, for device `name`.
    fn terminal_flags(&self, name: &str, state: &Path) -> Vec<String> {
        self.terminal_flags_via(name, state, self.trigger)
    }

    /// [`Server::terminal_flags`] with keepalives sent to `trigger` (an
    /// on-path UDP hop in front of the trigger server).
    fn terminal_flags_via(&self, name: &str, state: &Path, trigger: SocketAddr) -> Vec<String> {
        vec![
            "--name".into(),
            name.into(),
            "--server".into(),
            self.control.to_string(),
            "--trigger".into(),
            trigger.to_string(),
            "--server-key".into(),
            self.key.clone(),
            "--state-dir".into(),
            state.to_str().expect("utf-8 path").into(),
        ]
    }
}

/// A running `tryst terminal`, online.
struct Daemon {
    proc: Proc,
    state: PathBuf,
    /// Its address as the trigger server sees it.
    observed: String,
}

fn start_daemon(server: &Server, dir: &Path, name: &str, extra: &[&str]) -> Daemon {
    let state = dir.join(format!("{name}-state"));
    let mut args = vec!["terminal".to_owned()];
    args.extend(server.terminal_flags(name, &state));
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut proc = Proc::start(&refs, dir.join(format!("{name}.log")), None);
    let observed = proc.wait_for("the online line", |l| {
        l.strip_prefix("online: the trigger server sees this terminal at ")
            .map(str::to_owned)
    });
    Daemon {
        proc,
        state,
        observed,
    }
}

/// Runs `tryst connect` to the end.
fn connect(server: &Server, dir: &Path, name: &str, target: &str, extra: &[&str]) -> Output {
    let state = dir.join(format!("{name}-state"));
    let mut cmd = tryst_for("connect");
    // Every log line the requester can print, to show none names the target.
    cmd.env("RUST_LOG", "trace");
    cmd.arg("connect")
        .args(server.terminal_flags(name, &state))
        .arg(target)
        .args(extra);
    cmd.output().expect("tryst connect runs")
}

/// Starts `tryst connect` for device `name` as a child whose stdout lines
/// a test reads (stderr to `dir/log`); killed when dropped.
fn spawn_connect(server: &Server, dir: &Path, name: &str, extra: &[&str], log: &str) -> Proc {
    let state = dir.join(format!("{name}-state"));
    let mut args = vec!["connect".to_owned()];
    args.extend(server.terminal_flags(name, &state));
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::start(&refs, dir.join(log), None)
}

/// Runs `tryst ping` to the end.
fn ping(server: &Server, dir: &Path, name: &str, target: &str, extra: &[&str]) -> Output {
    let state = dir.join(format!("{name}-state"));
    let mut cmd = tryst_for("ping");
    // Every log line the requester can print, to show none names the target.
    cmd.env("RUST_LOG", "trace");
    cmd.arg("ping")
        .args(server.terminal_flags(name, &state))
        .arg(target)
        .args(extra);
    cmd.output().expect("tryst ping runs")
}

fn allow(action: &str, name: Option<&str>, state: &Path) -> Output {
    let mut cmd = tryst_for("allow");
    cmd.args(["allow", action]);
    if let Some(name) = name {
        cmd.arg(name);
    }
    cmd.arg("--state-dir").arg(state);
    cmd.output().expect("tryst allow runs")
}

/// The port of an address as printed, e.g. "127.0.0.1:40001" → "40001".
fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or(addr)
}

/// Whether `text` names port `port` as in "host:port" (not as digits
/// inside a longer number, such as a timestamp).
fn names_port(text: &str, port: &str) -> bool {
    let needle = format!(":{port}");
    text.match_indices(&needle).any(|(at, _)| {
        !text[at + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

fn assert_refused_without_address(out: &Output, target: &Daemon) {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "expected exit 3:\n{all}");
    assert!(
        !all.contains(&target.observed) && !names_port(&all, port_of(&target.observed)),
        "the refused requester's output names the target's address {}:\n{all}",
        target.observed
    );
    assert!(all.contains("not permitted"), "{all}");
}

pub fn s511_refused_request_exits_3_and_leaves_no_trace_of_the_target() {
    let dir = scratch("refused");
    let server = Server::start(&dir, &[]);
    let home = start_daemon(&server, &dir, "home", &["--allow", "phone"]);
    // Not on the list, and a name nobody has: the same answer.
    let denied = connect(&server, &dir, "mallory", "home", &["--duration", "5s"]);
    assert_refused_without_address(&denied, &home);
    let unknown = connect(&server, &dir, "mallory", "nobody", &["--duration", "5s"]);
    assert_refused_without_address(&unknown, &home);
    assert_eq!(
        text(&denied.stdout),
        text(&unknown.stdout),
        "the two refusals must look the same"
    );
}

/// `tryst sessions ARGS --data-dir DATA` (this thread's binary) to the end.
fn sessions(server: &Server, args: &[&str]) -> Output {
    tryst_for("sessions")
        .arg("sessions")
        .args(args)
        .arg("--data-dir")
        .arg(&server.data)
        .output()
        .expect("tryst sessions runs")
}

/// `tryst connect` to the end with no log variables: what a user sees.
fn connect_plain(server: &Server, dir: &Path, name: &str, target: &str) -> Output {
    let state = dir.join(format!("{name}-state"));
    tryst_for("connect")
        .env_remove("RUST_LOG")
        .arg("connect")
        .args(server.terminal_flags(name, &state))
        .args([target, "--duration", "5s"])
        .output()
        .expect("tryst connect runs")
}

pub fn s511_operator_sees_the_real_refusal_reasons_the_requesters_never_do() {
    let dir = scratch("refusals");
    let server = Server::start(&dir, &[]);
    let _home = start_daemon(&server, &dir, "home", &["--allow", "phone"]);
    // Two strangers: one not on home's list, one asking for a name nobody has.
    let denied = connect_plain(&server, &dir, "mallory", "home");
    let unknown = connect_plain(&server, &dir, "eve", "nobody");
    assert_eq!(denied.status.code(), Some(3), "{}", text(&denied.stderr));
    assert_eq!(unknown.status.code(), Some(3), "{}", text(&unknown.stderr));
    assert_eq!(denied.stdout, unknown.stdout, "stdout differs");
    assert_eq!(denied.stderr, unknown.stderr, "stderr differs");
    // The operator sees why (the server keeps the row as it answers).
    let deadline = std::time::Instant::now() + STEP;
    let table = loop {
        let out = sessions(&server, &["--refused"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let table = text(&out.stdout);
        if table.lines().count() >= 3 || std::time::Instant::now() > deadline {
            break table;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let row = |who: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(who))
            .unwrap_or_else(|| panic!("no row for {who}:\n{table}"))
            .to_owned()
    };
    assert!(row("mallory").contains("home"), "{table}");
    assert!(
        row("mallory").ends_with("not permitted (not in the target's list)"),
        "{table}"
    );
    assert!(row("eve").contains("nobody"), "{table}");
    assert!(row("eve").ends_with("unknown target"), "{table}");
    // Filters apply; JSON says the same.
    let mallory = text(&sessions(&server, &["--refused", "--name", "mallory", "--json"]).stdout);
    let list: serde_json::Value = serde_json::from_str(&mallory).expect("json");
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 1, "{mallory}");
    assert_eq!(list[0]["whom"], "home");
    assert_eq!(
        list[0]["reason"],
        "not permitted (not in the target's list)"
    );
    let none = text(&sessions(&server, &["--refused", "--since", "2099-01-01T00:00:00Z"]).stdout);
    assert_eq!(none, "at  who  whom  reason\n(no refused requests)\n");
    // The session log holds no session for either.
    let log = text(&sessions(&server, &[]).stdout);
    assert!(!log.contains("mallory") && !log.contains("eve"), "{log}");
}

pub fn s1606_sessions_shows_each_sides_end_and_filters_live_name_since() {
    let dir = scratch("sessionlog");
    let server = Server::start(&dir, &[]);
    let _home = start_daemon(
        &server,
        &dir,
        "home",
        &["--allow", "phone", "--allow", "cam"],
    );
    // A session that runs out its duration: both sides report.
    let done = connect(&server, &dir, "phone", "home", &["--duration", "1s"]);
    assert!(done.status.success(), "{}", text(&done.stderr));
    // A second one stays live.
    let mut cam = spawn_connect(
        &server,
        &dir,
        "cam",
        &["home", "--duration", "60s"],
        "cam.log",
    );
    let live_id = cam.wait_for("the session line", |l| {
        l.strip_prefix("session ")
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    });
    let json = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = sessions(&server, &all);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .expect("json")
            .as_array()
            .expect("array")
            .clone()
    };
    // The ended session's record holds both sides (wait for it).
    let deadline = std::time::Instant::now() + STEP;
    let ended = loop {
        let rows = json(&["--name", "phone"]);
        if rows.len() == 1 && rows[0]["live"] == false && !rows[0]["whom_end"].is_null() {
            break rows[0].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recorded: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for side in ["who_end", "whom_end"] {
        assert_eq!(ended[side]["reason"], "duration-expired", "{ended}");
        let secs = ended[side]["duration_secs"].as_f64().expect("duration");
        assert!((0.5..5.0).contains(&secs), "{side}: {secs} s in {ended}");
    }
    // Issue 15, item 4: loopback punches at once, the record says direct
    // (this server has no relay), and `--path` filters on it.
    assert_eq!(ended["path"], "direct", "{ended}");
    assert_eq!(ended["relayed_bytes"], 0, "{ended}");
    assert_eq!(json(&["--path", "direct", "--name", "phone"]).len(), 1);
    assert_eq!(json(&["--path", "relayed"]).len(), 0);
    // The table shows them too.
    let table = text(&sessions(&server, &["--name", "phone"]).stdout);
    let header = table.lines().next().expect("header");
    assert!(
        header.contains("who end")
            && header.contains("whom end")
            && header.contains(" path ")
            && header.ends_with(" relayed"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.matches("duration-expired").count() == 3),
        "{table}"
    );
    // --live: only cam's.
    let live = json(&["--live"]);
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["session_id"], live_id.as_str());
    assert_eq!(live[0]["who_end"], serde_json::Value::Null);
    // --name either side; --since a duration or a time.
    assert_eq!(json(&["--name", "home"]).len(), 2);
    assert_eq!(json(&["--name", "nobody"]).len(), 0);
    assert_eq!(json(&["--since", "1h"]).len(), 2);
    assert_eq!(
        json(&["--since", "2020-01-01T00:00:00Z", "--name", "cam"]).len(),
        1
    );
    assert_eq!(json(&["--since", "2099-01-01T00:00:00Z"]).len(), 0);
    let bad = sessions(&server, &["--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("neither a duration"),
        "{}",
        text(&bad.stderr)
    );
    drop(cam);
}

pub fn first_embodiment_allow_edits_apply_to_the_next_request_of_a_running_terminal() {
    let dir = scratch("allow");
    let server = Server::start(&dir, &[]);
    let mut home = start_daemon(&server, &dir, "home", &["--mode", "list"]);

    let before = connect(&server, &dir, "phone", "home", &["--duration", "1s"]);
    assert_refused_without_address(&before, &home);

    let added = allow("add", Some("phone"), &home.state);
    let said = text(&added.stdout);
    assert!(added.status.success(), "{said}{}", text(&added.stderr));
    assert!(said.contains("running terminal applied"), "{said}");
    let listed = allow("list", None, &home.state);
    assert_eq!(text(&listed.stdout).trim(), "phone");

    let permitted = connect(&server, &dir, "phone", "home", &["--duration", "1s"]);
    let said = text(&permitted.stdout);
    assert!(
        permitted.status.success(),
        "{said}{}",
        text(&permitted.stderr)
    );
    assert!(said.contains("with home"), "{said}");
    assert!(said.contains("session ended"), "{said}");
    home.proc.expect_line("with phone");

    let removed = allow("remove", Some("phone"), &home.state);
    assert!(removed.status.success());
    let after = connect(&server, &dir, "phone", "home", &["--duration", "1s"]);
    assert_refused_without_address(&after, &home);
}

pub fn second_embodiment_the_terminal_judges_the_named_requester() {
    let dir = scratch("judge");
    let server = Server::start(&dir, &[]);
    let mut home = start_daemon(
        &server,
        &dir,
        "home",
        &["--mode", "judge", "--allow", "phone"],
    );
    let permitted = connect(&server, &dir, "phone", "home", &["--duration", "1s"]);
    let said = text(&permitted.stdout);
    assert!(
        permitted.status.success(),
        "{said}{}",
        text(&permitted.stderr)
    );
    home.proc.expect_line("asked about phone: Permit");
    let denied = connect(&server, &dir, "mallory", "home", &["--duration", "1s"]);
    assert_refused_without_address(&denied, &home);
    home.proc.expect_line("asked about mallory: Deny");
}

pub fn allow_edits_the_stored_list_when_no_terminal_runs_and_the_key_is_private() {
    let dir = scratch("offline");
    let server = Server::start(&dir, &[]);
    let mut home = start_daemon(&server, &dir, "home", &[]);
    let state = home.state.clone();
    // A second terminal on a running terminal's state dir is refused (a
    // connect goes through the running one).
    let again = Proc::start(
        &["terminal"]
            .into_iter()
            .map(str::to_owned)
            .chain(server.terminal_flags("home", &state))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        dir.join("again.log"),
        None,
    );
    let (status, _, stderr) = again.finish();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("already runs"), "{stderr}");
    assert_eq!(home.proc.term(STEP).code(), Some(0));
    let added = allow("add", Some("phone"), &state);
    let said = text(&added.stdout);
    assert!(added.status.success(), "{said}");
    assert!(said.contains("no terminal is running"), "{said}");
    let bad = allow("add", Some(&"x".repeat(300)), &state);
    assert_eq!(bad.status.code(), Some(2));
    let missing = allow("list", None, &dir.join("no-such-state"));
    assert_eq!(missing.status.code(), Some(2));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(state.join("terminal.key"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key file is readable by others");
    }
    // The same key and the stored list on the next start.
    let key_before = fs::read(state.join("terminal.pub")).expect("public key");
    let home = start_daemon(&server, &dir, "home", &[]);
    assert_eq!(fs::read(state.join("terminal.pub")).unwrap(), key_before);
    let permitted = connect(&server, &dir, "phone", "home", &["--duration", "1s"]);
    assert!(permitted.status.success(), "{}", text(&permitted.stderr));
    drop(home);
}

pub fn s1604_forced_end_stops_both_terminals() {
    let dir = scratch("forced");
    let server = Server::start(&dir, &[]);
    let mut home = start_daemon(&server, &dir, "home", &["--allow", "phone"]);
    let mut phone = spawn_connect(
        &server,
        &dir,
        "phone",
        &["home", "--duration", "60s"],
        "phone.log",
    );
    let id = phone.wait_for("the session line", |l| {
        l.strip_prefix("session ")
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    });
    let ended = tryst_for("end")
        .args(["end", &id, "--data-dir"])
        .arg(&server.data)
        .output()
        .expect("tryst end runs");
    assert!(
        ended.status.success(),
        "{}{}",
        text(&ended.stdout),
        text(&ended.stderr)
    );
    // Both terminals acknowledged their end triggers (S1605).
    assert_eq!(
        text(&ended.stdout),
        format!("session {id} ended: phone confirmed, home confirmed\n")
    );
    let (status, stdout, stderr) = phone.finish();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("session ended: Forced"), "{stdout}");
    home.proc.expect_line("ended: Forced");
    drop(server);
}

pub fn s1605_forced_end_names_the_terminal_that_did_not_confirm() {
    let dir = scratch("unconfirmed");
    let server = Server::start(&dir, &[]);
    let home = start_daemon(&server, &dir, "home", &["--allow", "phone"]);
    let mut phone = spawn_connect(
        &server,
        &dir,
        "phone",
        &["home", "--duration", "60s"],
        "phone.log",
    );
    let id = phone.wait_for("the session line", |l| {
        l.strip_prefix("session ")
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    });
    // Home is frozen: it never acknowledges its end trigger nor reports.
    home.proc.signal("STOP");
    let started = std::time::Instant::now();
    let waiting = tryst_for("end")
        .args(["end", &id, "--data-dir"])
        .arg(&server.data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tryst end runs");
    // While the end waits for home, the server still answers other
    // commands and keeps its heartbeat (older than 5 s would say "no server").
    std::thread::sleep(Duration::from_secs(6));
    let status = tryst_for("status")
        .args(["status", "--data-dir"])
        .arg(&server.data)
        .output()
        .expect("tryst status runs");
    assert!(
        status.status.success(),
        "status while an end waits: {}{}",
        text(&status.stdout),
        text(&status.stderr)
    );
    let ended = waiting.wait_with_output().expect("tryst end finishes");
    let waited = started.elapsed();
    home.proc.signal("CONT");
    let said = text(&ended.stdout);
    assert!(ended.status.success(), "{said}{}", text(&ended.stderr));
    assert!(
        said.starts_with(&format!(
            "session {id} ended: phone confirmed, home did not confirm"
        )),
        "{said}"
    );
    // It waited for home (resends, then the end grace), not forever.
    assert!(
        waited >= Duration::from_secs(6),
        "answered after {waited:?}: {said}"
    );
    assert!(
        waited < Duration::from_secs(20),
        "answered after {waited:?}"
    );
    eprintln!("tryst end answered after {waited:?}: {said}");
    let (status, stdout, stderr) = phone.finish();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("session ended: Forced"), "{stdout}");
    drop(home);
    drop(server);
}

/// A target frozen (SIGSTOP) through a forced end, and woken (SIGCONT)
/// once `tryst end` said it did not confirm, reports its end late: its
/// side (reason and duration) still reaches the record (S1606).
pub fn s1606_a_frozen_targets_late_end_report_joins_the_record() {
    let dir = scratch("lateend");
    let server = Server::start(&dir, &[]);
    let mut home = start_daemon(&server, &dir, "home", &["--allow", "phone"]);
    let mut phone = spawn_connect(
        &server,
        &dir,
        "phone",
        &["home", "--duration", "60s"],
        "phone.log",
    );
    let id = phone.wait_for("the session line", |l| {
        l.strip_prefix("session ")
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    });
    home.proc.signal("STOP");
    let ended = tryst_for("end")
        .args(["end", &id, "--data-dir"])
        .arg(&server.data)
        .output()
        .expect("tryst end runs");
    home.proc.signal("CONT");
    let said = text(&ended.stdout);
    assert!(ended.status.success(), "{said}{}", text(&ended.stderr));
    assert!(said.contains("home did not confirm"), "{said}");
    let (status, stdout, stderr) = phone.finish();
    assert!(status.success(), "{stdout}\n{stderr}");
    home.proc.expect_line("ended: Forced");
    let json = || -> Vec<serde_json::Value> {
        let out = tryst_for("sessions")
            .args(["sessions", "--json", "--data-dir"])
            .arg(&server.data)
            .output()
            .expect("tryst sessions runs");
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .expect("json")
            .as_array()
            .expect("array")
            .clone()
    };
    let deadline = std::time::Instant::now() + STEP;
    let record = loop {
        let rows = json();
        let row = rows
            .iter()
            .find(|r| r["session_id"] == id.as_str())
            .cloned();
        if let Some(row) = row.filter(|r| r["live"] == false && !r["whom_end"].is_null()) {
            break row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the target's late end never joined the record: {rows:?}\nserver:\n{}\nhome:\n{}",
            server.log(),
            home.proc.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(record["end_reason"], "forced", "{record}");
    assert_eq!(record["who_end"]["reason"], "forced", "{record}");
    assert_eq!(record["whom_end"]["reason"], "forced", "{record}");
    let secs = record["whom_end"]["duration_secs"]
        .as_f64()
        .expect("duration");
    assert!(secs > 0.0, "{record}");
    drop(home);
    drop(server);
}

pub fn ping_a_permitted_peer_prints_one_pong_a_ping_and_exits_0() {
    let dir = scratch("ping");
    let server = Server::start(&dir, &[]);
    let mut home = start_daemon(&server, &dir, "home", &["--allow", "phone"]);
    let out = ping(
        &server,
        &dir,
        "phone",
        "home",
        &["--count", "3", "--interval", "200ms", "--timeout", "2s"],
    );
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    let pongs: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("pong from home ("))
        .collect();
    assert_eq!(pongs.len(), 3, "{said}");
    for pong in &pongs {
        // e.g. `pong from home (127.0.0.1:40001) via direct in 0.42 ms`
        let (addr, rest) = pong["pong from home (".len()..]
            .split_once(") via direct in ")
            .unwrap_or_else(|| panic!("{pong:?}"));
        assert_eq!(addr, home.observed, "{pong:?}");
        let ms: f64 = rest
            .strip_suffix(" ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{pong:?}"));
        assert!(ms > 0.0 && ms < 500.0, "a loopback round trip of {ms} ms");
    }
    assert!(said.contains("--- home ping statistics ---"), "{said}");
    assert!(said.contains("3 sent, 3 received, 0% loss"), "{said}");
    assert!(
        said.lines()
            .any(|l| l.starts_with("round trip min/median/max = ") && l.ends_with(" ms")),
        "{said}"
    );
    // The daemon answered from its transport alone, and runs on.
    home.proc.expect_line("with phone");
    let again = ping(&server, &dir, "phone", "home", &["--count", "1"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
}

pub fn ping_a_peer_that_does_not_permit_gets_connects_uniform_refusal() {
    let dir = scratch("ping-refused");
    let server = Server::start(&dir, &[]);
    let home = start_daemon(&server, &dir, "home", &["--allow", "phone"]);
    let denied = ping(&server, &dir, "mallory", "home", &["--count", "2"]);
    assert_refused_without_address(&denied, &home);
    let unknown = ping(&server, &dir, "mallory", "nobody", &["--count", "2"]);
    assert_refused_without_address(&unknown, &home);
    let connected = connect(&server, &dir, "mallory", "home", &["--duration", "5s"]);
    assert_refused_without_address(&connected, &home);
    assert_eq!(text(&denied.stdout), text(&unknown.stdout));
    assert_eq!(
        text(&denied.stdout),
        text(&connected.stdout),
        "ping's refusal must look like connect's"
    );
    // The refusal is the last line the command itself says; timestamped trace
    // lines of the runtime (RUST_LOG=trace here) may follow it in any order.
    let last_said = |out: &Output| {
        text(&out.stderr)
            .lines()
            .rfind(|l| !l.starts_with(|c: char| c.is_ascii_digit()))
            .map(str::to_owned)
    };
    let said = last_said(&denied).unwrap_or_default();
    assert!(said.ends_with(": not permitted"), "{said:?}");
    assert_eq!(last_said(&denied), last_said(&connected));
    assert!(
        !text(&denied.stdout).contains("pong"),
        "{}",
        text(&denied.stdout)
    );
}

/// Item 10 of issue 14: a household's devices share one address, and a
/// one-shot command registers each time; six back-to-back pings after the
/// daemon's own registration all get through (the old five-per-address
/// limit refused the fifth).
pub fn registration_limits_let_a_household_ping_back_to_back() {
    let dir = scratch("household");
    let server = Server::start(&dir, &[]);
    let _home = start_daemon(&server, &dir, "home", &["--allow", "phone"]);
    for round in 1..=6 {
        let out = ping(&server, &dir, "phone", "home", &["--count", "1"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "ping {round}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    assert!(
        !server.log().contains("registrations refused"),
        "{}",
        server.log()
    );
}

/// Item 9: a registration over the server's per-identity limit is told so
/// and when to try again, and the server says it refused one at WARN.
pub fn a_rate_limited_registration_says_so_and_when_to_retry() {
    let dir = scratch("rate-limited");
    let server = Server::start(&dir, &["--registrations-per-identity", "2,40s"]);
    let mut home = start_daemon(&server, &dir, "home", &["--allow", "phone"]);
    for _ in 0..2 {
        let out = ping(&server, &dir, "phone", "home", &["--count", "1"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let limited = ping(&server, &dir, "phone", "home", &["--count", "1"]);
    let said = text(&limited.stderr);
    assert_eq!(limited.status.code(), Some(1), "{said}");
    let last = said
        .lines()
        .rfind(|l| !l.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or_default();
    let wait: u64 = last
        .split_once("limits registrations from this address or this device: try again in ")
        .and_then(|(_, rest)| rest.strip_suffix(" s"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no retry time in {last:?}"));
    assert!(
        (20..=40).contains(&wait),
        "asked to wait {wait} s of 40: {last:?}"
    );
    // The server told its operator, once, at WARN (its log line may land
    // just after the answer did).
    let told = |log: &str| log.contains("registrations refused since the last report");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !told(&server.log()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.log();
    let warned: Vec<&str> = log.lines().filter(|l| told(l)).collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(warned[0].contains("WARN"), "{}", warned[0]);
    assert!(
        warned[0].contains("rate_limited_by_identity=1"),
        "{}",
        warned[0]
    );
    // The daemon of another identity at the same address is untouched.
    home.proc.expect_line("online: ");
}

/// A folder nobody may create files in while it lives, root included:
/// `chattr +i` as root (who ignores modes), mode 0500 otherwise.
struct ReadOnlyDir(PathBuf);

impl ReadOnlyDir {
    fn new(path: PathBuf) -> ReadOnlyDir {
        fs::create_dir_all(&path).expect("dir");
        if is_root() {
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(&path)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "chattr +i {} (root needs it to make a folder read-only)",
                path.display()
            );
        } else {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o500)).expect("chmod");
        }
        ReadOnlyDir(path)
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        if is_root() {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&self.0, fs::Permissions::from_mode(0o700));
        }
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| text(&o.stdout).trim() == "0")
}

/// Runs `cmd` to its end, at most `within`; `None` (killed) if it ran on.
fn run_within(mut cmd: std::process::Command, within: Duration) -> Option<Output> {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Item 9: a receive folder no file can be created in is refused when the
/// daemon or `connect --get` starts, not at the first file.
pub fn a_recv_dir_that_is_not_writable_is_refused_at_start() {
    let dir = scratch("recv-ro");
    let server = Server::start(&dir, &[]);
    let ro = ReadOnlyDir::new(dir.join("inbox"));
    let ro_path = ro.0.to_str().expect("utf-8").to_owned();
    let mut daemon = tryst_for("terminal");
    daemon
        .arg("terminal")
        .args(server.terminal_flags("home", &dir.join("home-state")))
        .args(["--recv-dir", &ro_path]);
    let out = run_within(daemon, Duration::from_secs(10))
        .expect("the daemon ran on with a receive dir it cannot write");
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!("receive dir {ro_path} is not writable")),
        "{said}"
    );
    let mut get = tryst_for("connect");
    get.arg("connect")
        .args(server.terminal_flags("phone", &dir.join("phone-state")))
        .args(["home", "--get", "a.jpg", "--recv-dir", &ro_path]);
    let out = run_within(get, Duration::from_secs(20)).expect("connect ran on");
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("is not writable"), "{said}");
    drop(ro);
    assert_eq!(
        fs::read_dir(dir.join("inbox")).expect("inbox").count(),
        0,
        "the check left a file behind"
    );
}

/// The live source of the live flows: `frames` frames of 160 bytes every
/// 20 ms, each `SEQ NANOS` (its sequence number and the wall clock in ns
/// when written) padded with spaces and a newline; `sleep_first` seconds
/// of silence first.
fn live_script(frames: u32, sleep_first: u32) -> String {
    format!(
        "sleep {sleep_first}; i=0; while [ $i -lt {frames} ]; do \
         printf '%-159s\\n' \"$i $(date +%s%N)\"; i=$((i+1)); sleep 0.02; done"
    )
}

/// What a `--live` connect received: frames in order of arrival, each
/// (sequence number, one-way delay in µs), and how it exited.
struct LiveRun {
    frames: Vec<(u32, f64)>,
    code: Option<i32>,
    stderr: String,
}

/// Runs `tryst connect --live` with `stdin` (a file, or nothing), reading
/// its stdout as it comes and timestamping each 160-byte frame.
fn connect_live(
    server: &Server,
    dir: &Path,
    name: &str,
    target: &str,
    extra: &[&str],
    stdin: Option<&Path>,
) -> LiveRun {
    use std::io::Read;
    let state = dir.join(format!("{name}-state"));
    let log = dir.join(format!("{name}-live.log"));
    let mut cmd = tryst_for("connect");
    cmd.arg("connect")
        .args(server.terminal_flags(name, &state))
        .arg(target)
        .arg("--live")
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(fs::File::create(&log).expect("log"));
    match stdin {
        Some(path) => cmd.stdin(fs::File::open(path).expect("stdin file")),
        None => cmd.stdin(std::process::Stdio::null()),
    };
    let mut child = cmd.spawn().expect("tryst connect runs");
    let mut out = child.stdout.take().expect("stdout");
    let mut frames = Vec::new();
    let mut frame = [0u8; 160];
    while out.read_exact(&mut frame).is_ok() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as f64;
        let line = String::from_utf8_lossy(&frame);
        let mut fields = line.split_whitespace();
        let seq: u32 = fields
            .next()
            .and_then(|f| f.parse().ok())
            .expect("a sequence number");
        let sent: f64 = fields
            .next()
            .and_then(|f| f.parse().ok())
            .expect("a timestamp");
        frames.push((seq, (now - sent) / 1000.0));
    }
    let code = child.wait().expect("exit").code();
    LiveRun {
        frames,
        code,
        stderr: fs::read_to_string(&log).unwrap_or_default(),
    }
}

/// The `q` quantile of `values` (sorted here).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Waits until `proc`'s log (its stderr) contains `needle`.
fn wait_log(proc: &super::Proc, needle: &str) -> String {
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let log = proc.log();
        if log.contains(needle) {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn live_stream_of_a_20ms_cadence_arrives_whole_and_in_order_on_loopback() {
    let dir = scratch("live");
    let server = Server::start(&dir, &[]);
    const FRAMES: u32 = 100;
    let home = start_daemon(
        &server,
        &dir,
        "home",
        &["--allow", "phone", "--live-from", &live_script(FRAMES, 0)],
    );
    // Two-way: the phone's stdin (ten frames) goes to home as datagrams.
    let talk = dir.join("talk.raw");
    fs::write(&talk, vec![b'x'; 1600]).expect("stdin file");
    let run = connect_live(
        &server,
        &dir,
        "phone",
        "home",
        &["--duration", "60s"],
        Some(&talk),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let seqs: Vec<u32> = run.frames.iter().map(|f| f.0).collect();
    assert_eq!(
        seqs,
        (0..FRAMES).collect::<Vec<_>>(),
        "every frame, in order, on loopback"
    );
    let delays: Vec<f64> = run.frames.iter().map(|f| f.1).collect();
    let (p50, p99) = (quantile(&delays, 0.5), quantile(&delays, 0.99));
    println!(
        "live loopback ({}): {FRAMES} frames of 160 B every 20 ms, loss 0/{FRAMES}, one-way delay p50 {:.0} us, p99 {:.0} us",
        super::current_mix(),
        p50,
        p99
    );
    // Loopback on one clock: a frame takes far less than its cadence
    // times ten (no speed is asserted, only that nothing waits behind).
    assert!(p50 >= 0.0 && p99 < 200_000.0, "p50 {p50} us, p99 {p99} us");
    assert!(
        run.stderr
            .contains("session ended: Completed; 100 datagrams received"),
        "{}",
        run.stderr
    );
    // The daemon's source ended the session, and it heard the phone.
    let log = wait_log(&home.proc, "peer datagrams ignored");
    assert!(log.contains("datagrams=10"), "{log}");
    assert!(log.contains("live source ended"), "{log}");
}

pub fn s1504_a_live_only_session_outlives_its_duration_and_a_silent_one_ends_at_it() {
    let dir = scratch("live-extension");
    let server = Server::start(&dir, &[]);
    const FRAMES: u32 = 200;
    let mut home = start_daemon(
        &server,
        &dir,
        "home",
        &["--allow", "phone", "--live-from", &live_script(FRAMES, 0)],
    );
    // 200 frames every 20 ms: 4 s and more, past the 3 s asked for; at 50%
    // of it the session is in use (datagrams flowing, --live holding it).
    let started = std::time::Instant::now();
    let run = connect_live(
        &server,
        &dir,
        "phone",
        "home",
        &[
            "--duration",
            "3s",
            "--extension-threshold",
            "50",
            "--extension-step",
            "3s",
        ],
        None,
    );
    let took = started.elapsed();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("session extended to "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "session ended: Completed; {FRAMES} datagrams received"
        )),
        "the source's end, not the duration, ended it:\n{}",
        run.stderr
    );
    assert_eq!(run.frames.len(), FRAMES as usize);
    assert!(
        took > Duration::from_secs(3),
        "it outlived its 3 s ({took:?})"
    );
    home.proc.expect_line("extended to");
    // Without traffic (a held session, no stream, no datagram): it ends at
    // its duration, never extended.
    let quiet = connect(
        &server,
        &dir,
        "phone",
        "home",
        &[
            "--duration",
            "2s",
            "--extension-threshold",
            "50",
            "--extension-step",
            "3s",
        ],
    );
    let said = text(&quiet.stdout);
    assert!(quiet.status.success(), "{said}{}", text(&quiet.stderr));
    assert!(said.contains("session ended: DurationExpired"), "{said}");
    assert!(!said.contains("extended"), "{said}");
}

pub fn live_ctrl_c_ends_the_session_and_the_daemon_kills_its_source() {
    let dir = scratch("live-kill");
    let server = Server::start(&dir, &[]);
    let pidfile = dir.join("source.pid");
    // A source that says nothing for a minute (held open by --live, so it
    // is extended rather than ended at its duration).
    let source = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let mut home = start_daemon(
        &server,
        &dir,
        "home",
        &["--allow", "phone", "--live-from", &source],
    );
    let state = dir.join("phone-state");
    let mut cmd = tryst_for("connect");
    cmd.arg("connect")
        .args(server.terminal_flags("phone", &state))
        .args(["home", "--live", "--duration", "30s"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(dir.join("phone.log")).expect("log"));
    let mut phone = cmd.spawn().expect("tryst connect runs");
    let deadline = std::time::Instant::now() + STEP;
    let pid = loop {
        if let Some(pid) = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the source never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &phone.id().to_string()])
        .status()
        .expect("kill");
    assert!(interrupted.success());
    let status = phone.wait().expect("exit");
    let said = fs::read_to_string(dir.join("phone.log")).unwrap_or_default();
    assert!(status.success(), "{said}");
    assert!(said.contains("session ended: Cancelled"), "{said}");
    // The daemon's side ended with it, and its source is gone (killed and reaped).
    wait_log(&home.proc, "live source stopped");
    let deadline = std::time::Instant::now() + STEP;
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "source {pid} still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    home.proc.expect_line("ended: Cancelled");
}

pub fn live_request_to_a_terminal_without_a_source_is_no_such_stream() {
    let dir = scratch("live-none");
    let server = Server::start(&dir, &[]);
    let _home = start_daemon(&server, &dir, "home", &["--allow", "phone"]);
    let run = connect_live(&server, &dir, "phone", "home", &[], None);
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("home has no live stream"),
        "{}",
        run.stderr
    );
    assert!(run.frames.is_empty());
}

/// Runs `tryst names ARGS... --data-dir` on the server's store to the end.
fn names(server: &Server, args: &[&str]) -> Output {
    let mut cmd = tryst_for("names");
    cmd.arg("names")
        .args(args)
        .args(["--data-dir", server.data.to_str().expect("utf-8 path")]);
    cmd.output().expect("tryst names runs")
}

/// A daemon's public key, as `terminal.pub` holds it (64 hex digits).
fn public_key_of(daemon: &Daemon) -> String {
    let text = fs::read_to_string(daemon.state.join("terminal.pub")).expect("terminal.pub");
    // `LABEL: HEX` (or the bare hex).
    let hex = text.trim().rsplit([' ', ':']).next().unwrap_or_default();
    assert_eq!(hex.len(), 64, "{text:?}");
    hex.to_owned()
}

/// Item 11 of issue 14: `HOME`, `Home` and `home` are one name, and the
/// operator frees a name whose key was lost so a new device can take it.
pub fn names_are_one_in_every_spelling_and_release_frees_a_lost_keys_name() {
    let dir = scratch("names");
    let server = Server::start(&dir, &[]);
    let mut lost = start_daemon(&server, &dir, "Home", &["--allow", "phone"]);
    let lost_key = public_key_of(&lost);
    let listed = names(&server, &["list"]);
    let table = text(&listed.stdout);
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    let row = table
        .lines()
        .find(|l| l.starts_with("home "))
        .unwrap_or_else(|| panic!("no row for home:\n{table}"));
    assert!(
        row.contains(&lost_key) && row.ends_with("first key"),
        "{row}"
    );
    // Asked for in another spelling, the same device answers.
    let pinged = ping(&server, &dir, "phone", "HOME", &["--count", "1"]);
    assert_eq!(pinged.status.code(), Some(0), "{}", text(&pinged.stderr));
    // Its key is lost: the device is gone, the operator frees the name.
    lost.proc.kill9();
    let unknown = names(&server, &["release", "nobody"]);
    assert_ne!(unknown.status.code(), Some(0));
    assert!(
        text(&unknown.stderr).contains("no name \"nobody\" is bound"),
        "{}",
        text(&unknown.stderr)
    );
    let released = names(&server, &["release", "HOME"]);
    let said = text(&released.stdout);
    assert_eq!(
        released.status.code(),
        Some(0),
        "{}",
        text(&released.stderr)
    );
    assert!(
        said.contains(&format!("released home (was bound to {lost_key})")),
        "{said}"
    );
    assert!(said.contains("the running server freed it now"), "{said}");
    let after = text(&names(&server, &["list", "--json"]).stdout);
    assert!(
        !after.contains("\"name\":\"home\"") && after.contains("\"name\":\"phone\""),
        "after the release: {after}"
    );
    // A new device (a new key) takes the name.
    let new = start_daemon(&server, &dir, "HOME", &["--allow", "phone"]);
    let new_key = public_key_of(&new);
    assert_ne!(new_key, lost_key);
    let listed = text(&names(&server, &["list", "--json"]).stdout);
    assert!(
        listed.contains("\"name\":\"home\"") && listed.contains(&new_key),
        "{listed}"
    );
    let pinged = ping(&server, &dir, "phone", "home", &["--count", "1"]);
    assert_eq!(pinged.status.code(), Some(0), "{}", text(&pinged.stderr));
}

/// Item 3, the fetch side: a `--get` cut by kill -9 of the fetching
/// `connect` resumes from what its receive folder holds and verified; less
/// than the whole file crosses the second time.
pub fn a_fetch_cut_by_kill_9_of_the_fetcher_resumes_from_what_it_holds() {
    let dir = scratch("fetch-resume");
    let server = Server::start(&dir, &[]);
    let share = dir.join("share");
    fs::create_dir_all(&share).expect("share");
    const SIZE: u64 = 50 * 1000 * 1000;
    write_test_file(&share.join("big.bin"), SIZE as usize);
    let share_arg = share.to_str().expect("utf-8").to_owned();
    // Throttled so that the kill lands midway.
    let mut home = start_daemon(
        &server,
        &dir,
        "home",
        &[
            "--allow",
            "phone",
            "--share",
            &share_arg,
            "--limit-rate",
            "20M",
        ],
    );
    let inbox = dir.join("inbox");
    let inbox_arg = inbox.to_str().expect("utf-8").to_owned();
    let get = [
        "home",
        "--get",
        "big.bin",
        "--recv-dir",
        &inbox_arg,
        "--duration",
        "10m",
    ];
    let mut phone = spawn_connect(&server, &dir, "phone", &get, "phone-1.log");
    phone.expect_line("fetching big.bin: 40%");
    phone.kill9();
    drop(phone);
    let left = fs::read_dir(&inbox)
        .expect("inbox")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
        })
        .count();
    assert_eq!(left, 2, "the partial file and its record");
    let got = connect(&server, &dir, "phone", "home", &get[1..]);
    let said = text(&got.stdout);
    assert!(got.status.success(), "{said}\n{}", text(&got.stderr));
    let resumed_at: u64 = said
        .lines()
        .find_map(|l| l.split_once("(resumed at byte ").map(|(_, r)| r))
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume in:\n{said}"));
    assert!(
        resumed_at > 10_000_000 && resumed_at < SIZE,
        "resumed at {resumed_at}"
    );
    assert_eq!(
        sha256_hex(&inbox.join("big.bin")),
        sha256_hex(&share.join("big.bin"))
    );
    // The sharer sent only the rest.
    home.proc.expect_line("with phone");
    let logged = home.proc.log();
    assert!(logged.contains("resuming"), "{logged}");
}

/// Writes `len` bytes of a pattern that no two offsets share cheaply.
pub fn write_test_file(path: &Path, len: usize) {
    let mut data = vec![0u8; len];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    fs::write(path, data).expect("test file");
}

pub fn sha256_hex(path: &Path) -> String {
    use sha2::Digest;
    let data = fs::read(path).expect("readable");
    sha2::Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn s207_a_50_mb_file_crosses_the_direct_path_with_matching_sha256() {
    let dir = scratch("transfer");
    let server = Server::start(&dir, &[]);
    let inbox = dir.join("inbox");
    let mut home = start_daemon(
        &server,
        &dir,
        "home",
        &[
            "--allow",
            "phone",
            "--recv-dir",
            inbox.to_str().expect("utf-8"),
        ],
    );
    let file = dir.join("big.bin");
    write_test_file(&file, 50 * 1000 * 1000);
    let sent = connect(
        &server,
        &dir,
        "phone",
        "home",
        &["--send", file.to_str().expect("utf-8"), "--duration", "10m"],
    );
    let said = text(&sent.stdout);
    assert!(sent.status.success(), "{said}\n{}", text(&sent.stderr));
    let digest = sha256_hex(&file);
    assert!(
        said.contains(&format!("the receiver verified SHA-256 {digest}")),
        "{said}"
    );
    let line = home.proc.expect_line("received");
    assert!(
        line.contains(&digest) && line.contains("verified"),
        "{line}"
    );
    assert_eq!(sha256_hex(&inbox.join("big.bin")), digest);
    // Only the file: no partial file is left beside it.
    let names: Vec<_> = fs::read_dir(&inbox)
        .expect("inbox")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["big.bin"]);
}

/// Puts `home` (a daemon) and `phone` behind hops that pass the servers'
/// traffic and drop every peer packet (no direct path opens, as between
/// two symmetric NATs), sends a file of `len` bytes from `phone` with
/// `tryst connect --send` and checks it arrived intact; what connect said,
/// and the daemon (still running).
fn send_where_no_peer_packet_passes(server: &Server, dir: &Path, len: usize) -> (String, Proc) {
    use super::cluster::UdpRelay;
    fn is_peer_packet(d: &[u8]) -> bool {
        d.len() > 4 && d[..2] == *b"TY" && (0x80..=0x84).contains(&d[3])
    }
    let home_hop = UdpRelay::start_filtered(server.trigger, is_peer_packet);
    let phone_hop = UdpRelay::start_filtered(server.trigger, is_peer_packet);
    let inbox = dir.join("inbox");
    let home_state = dir.join("home-state");
    let mut args = vec!["terminal".to_owned()];
    args.extend(server.terminal_flags_via("home", &home_state, home_hop.addr));
    args.extend(
        [
            "--allow",
            "phone",
            "--recv-dir",
            inbox.to_str().expect("utf-8"),
        ]
        .map(String::from),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut home = Proc::start(&refs, dir.join("home.log"), None);
    home.wait_for("the online line", |l| {
        l.starts_with("online: ").then_some(())
    });
    let file = dir.join("photo.bin");
    write_test_file(&file, len);
    let phone_state = dir.join("phone-state");
    let mut cmd = tryst_for("connect");
    cmd.arg("connect")
        .args(server.terminal_flags_via("phone", &phone_state, phone_hop.addr))
        .args([
            "home",
            "--send",
            file.to_str().expect("utf-8"),
            "--duration",
            "5m",
        ]);
    let sent = run_within(cmd, Duration::from_secs(60)).expect("connect finished within 60 s");
    let said = text(&sent.stdout);
    assert!(sent.status.success(), "{said}\n{}", text(&sent.stderr));
    let digest = sha256_hex(&file);
    assert!(
        said.contains(&format!("the receiver verified SHA-256 {digest}")),
        "{said}"
    );
    assert_eq!(sha256_hex(&inbox.join("photo.bin")), digest);
    (said, home)
}

/// Issue 15, item 2: both terminals sit behind a hop that passes the
/// servers' traffic but drops every peer packet (so no direct path can
/// open, as between two symmetric NATs); `tryst connect --send` still
/// delivers the file intact, through the server's relay. Without the relay
/// the same request ends `Failed` after the punch window.
pub fn relay_carries_a_file_when_no_direct_peer_packet_passes() {
    let dir = scratch("relay");
    let server = Server::start(&dir, &["--relay", "127.0.0.1:0"]);
    let (said, _home) = send_where_no_peer_packet_passes(&server, &dir, 2 * 1000 * 1000);
    // Item 4: `tryst connect` says the path was relayed.
    assert!(said.contains("relayed path up through"), "{said}");
    let log = server.log();
    assert!(log.contains("relay allocation"), "{log}");
    // Issue 15, item 4: the session's record says relayed, with the bytes
    // the relay carried (at least the file's), and `--path` finds it.
    let row = relayed_row(&server, |r| r["live"] == false);
    assert_eq!(row["who"], "phone", "{row}");
    let relayed = row["relayed_bytes"].as_u64().expect("relayed_bytes");
    assert!(relayed >= 2 * 1000 * 1000, "{row}");
    let direct = text(&sessions(&server, &["--json", "--path", "direct"]).stdout);
    assert_eq!(direct.trim(), "[]", "{direct}");
    let table = text(&sessions(&server, &[]).stdout);
    let line = table.lines().nth(1).expect("the session's line");
    assert!(line.ends_with(&format!("relayed  {relayed}")), "{table}");
}

/// The first session row `tryst sessions --path relayed` lists that
/// `pick` takes, waited for up to [`STEP`].
fn relayed_row(server: &Server, pick: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let out = sessions(server, &["--json", "--path", "relayed"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
        if let Some(r) = rows.iter().find(|r| pick(r)) {
            return r.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never recorded as relayed: {rows:?}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A standalone `tryst relay` that takes links from the session server
/// whose data dir is `dir/server` (its key made here, before the server
/// starts) or, with `listed`, only from that other key; the relay and the
/// flags that make a `tryst server` hand out allocations on it and link
/// to it.
fn linked_relay(dir: &Path, listed: Option<&str>) -> (Proc, Vec<String>) {
    use std::os::unix::fs::DirBuilderExt;
    let keygen = |path: &Path| {
        let made = tryst_for("keygen")
            .args(["keygen", "--out", path.to_str().expect("utf-8")])
            .output()
            .expect("keygen runs");
        assert!(made.status.success(), "{}", text(&made.stderr));
        text(&made.stdout).trim().to_owned()
    };
    let data = dir.join("server");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&data)
        .expect("server data dir");
    let server_key = keygen(&data.join("server.key"));
    let relay_key = dir.join("relay.key");
    keygen(&relay_key);
    let listed = listed.map_or(server_key, str::to_owned);
    let mut relay = Proc::start(
        &[
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--key",
            relay_key.to_str().expect("utf-8"),
            "--link-listen",
            "127.0.0.1:0",
            "--session-server-key",
            &listed,
        ],
        dir.join("relay.log"),
        None,
    );
    let udp = relay.wait_for("the relay's address", |l| {
        l.strip_prefix("relay: udp ").map(str::to_owned)
    });
    let link = relay.wait_for("the link address", |l| {
        l.strip_prefix("relay: link ").map(str::to_owned)
    });
    let flags = vec![
        "--relay-at".to_owned(),
        udp,
        "--relay-key".to_owned(),
        relay_key.to_str().expect("utf-8").to_owned(),
        "--relay-link".to_owned(),
        link,
    ];
    (relay, flags)
}

/// Issue 15, relay item 1: a standalone `tryst relay` linked to its
/// session server sends back each allocation's byte counts: the session
/// record of a file carried through it says relayed, with at least the
/// file's bytes, as with the relay inside the server.
pub fn standalone_relay_linked_returns_the_relayed_bytes_into_the_record() {
    let dir = scratch("relaylinked");
    let (relay, flags) = linked_relay(&dir, None);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start(&dir, &flags);
    let (said, _home) = send_where_no_peer_packet_passes(&server, &dir, 1000 * 1000);
    assert!(said.contains("relayed path up through"), "{said}");
    let row = relayed_row(&server, |r| r["live"] == false);
    assert!(
        row["relayed_bytes"].as_u64().expect("relayed_bytes") >= 1000 * 1000,
        "{row}\n{}",
        relay.log()
    );
    assert!(relay.log().contains("relay link up"), "{}", relay.log());
}

/// Issue 15, relay item 1: a standalone relay given another session
/// server's key refuses this server's link (no reply, logged), so none of
/// its commands reach the relay.
pub fn standalone_relay_refuses_a_link_from_a_server_it_was_not_given() {
    let dir = scratch("relaywrongkey");
    let other = "11".repeat(32);
    let (relay, flags) = linked_relay(&dir, Some(&other));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start(&dir, &flags);
    let deadline = std::time::Instant::now() + STEP;
    while !relay.log().contains("relay link refused") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}\n{}",
            relay.log(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        relay
            .log()
            .contains("a session server key not given to this relay"),
        "{}",
        relay.log()
    );
    assert!(!relay.log().contains("relay link up"), "{}", relay.log());
    assert!(server.log().contains("relay link lost"), "{}", server.log());
}

/// Issue 15, relay item 3: a standalone `tryst relay` process (the mix's
/// server binary) carries a file between terminals that cannot punch, for
/// a `tryst server --relay-at ADDR --relay-key FILE` that runs no relay
/// itself; the two share only the key file.
pub fn standalone_relay_carries_a_file_for_a_server_with_relay_at() {
    let dir = scratch("relayalone");
    let key = dir.join("relay.key");
    let made = tryst_for("keygen")
        .args(["keygen", "--out", key.to_str().expect("utf-8")])
        .output()
        .expect("keygen runs");
    assert!(made.status.success(), "{}", text(&made.stderr));
    let mut relay = Proc::start(
        &[
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--key",
            key.to_str().expect("utf-8"),
        ],
        dir.join("relay.log"),
        None,
    );
    let relay_addr = relay.value("relay");
    let relay_addr = relay_addr
        .strip_prefix("udp ")
        .expect("udp ADDR")
        .to_owned();
    let server = Server::start(
        &dir,
        &[
            "--relay-at",
            &relay_addr,
            "--relay-key",
            key.to_str().expect("utf-8"),
        ],
    );
    let (said, _home) = send_where_no_peer_packet_passes(&server, &dir, 1000 * 1000);
    assert!(
        said.contains(&format!("relayed path up through {relay_addr}")),
        "{said}"
    );
    // The relay process took the allocation, the server ran no relay.
    assert!(relay.log().contains("relay allocation"), "{}", relay.log());
    assert!(
        !server.log().contains("relay allocation"),
        "{}",
        server.log()
    );
    // A relay without its key file does not start (exit 2, one line).
    let missing = tryst_for("relay")
        .args(["relay", "--listen", "127.0.0.1:0", "--key"])
        .arg(dir.join("nope.key"))
        .output()
        .expect("relay runs");
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing.stderr));
    assert!(
        text(&missing.stderr).contains("relay key"),
        "{}",
        text(&missing.stderr)
    );
}

/// Issue 15, relay item 2: the operator's `tryst end` of a relayed session
/// whose terminals never get their end triggers (their hops drop them, and
/// every direct peer packet): the relay stops forwarding the session at
/// once, not when the end is settled or recorded (both 10 s or more later
/// here, as the end triggers go unacknowledged).
pub fn relay_stops_carrying_a_forced_session_whose_peers_ignore_the_end() {
    let dir = scratch("relayend");
    let server = Server::start(&dir, &["--relay", "127.0.0.1:0"]);
    forced_end_stops_the_relay(&dir, &server);
}

/// Issue 15, relay item 1: the same forced end with a standalone `tryst
/// relay` linked to the server: the end crosses the link and stops the
/// relay at once, and the ended allocation's reason and bytes come back
/// (the server logs them and the live session's row holds the bytes).
pub fn standalone_relay_linked_stops_carrying_a_forced_session() {
    let dir = scratch("relaylinkend");
    let (relay, flags) = linked_relay(&dir, None);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start(&dir, &flags);
    forced_end_stops_the_relay(&dir, &server);
    let relay_log = relay.log();
    let line = relay_log
        .lines()
        .find(|l| l.contains("relay allocation ended"))
        .unwrap_or_else(|| panic!("the relay never ended it: {relay_log}"));
    assert!(line.contains("reason=Ended"), "{line}");
    let row = relayed_row(&server, |_| true);
    assert!(
        row["relayed_bytes"].as_u64().is_some_and(|b| b > 0),
        "{row}"
    );
}

/// `tryst end` of a relayed session whose terminals ignore their end
/// triggers: the server hears the relay end its allocation within 5 s.
fn forced_end_stops_the_relay(dir: &Path, server: &Server) {
    use super::cluster::UdpRelay;
    fn peer_packet_or_end_trigger(d: &[u8]) -> bool {
        d.len() > 4 && d[..2] == *b"TY" && ((0x80..=0x83).contains(&d[3]) || d[3] == 0x13)
    }
    let home_hop = UdpRelay::start_filtered(server.trigger, peer_packet_or_end_trigger);
    let phone_hop = UdpRelay::start_filtered(server.trigger, peer_packet_or_end_trigger);
    let mut args = vec!["terminal".to_owned()];
    args.extend(server.terminal_flags_via("home", &dir.join("home-state"), home_hop.addr));
    args.extend(["--allow", "phone"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut home = Proc::start(&refs, dir.join("home.log"), None);
    home.wait_for("the online line", |l| {
        l.starts_with("online: ").then_some(())
    });
    let mut args = vec!["connect".to_owned()];
    args.extend(server.terminal_flags_via("phone", &dir.join("phone-state"), phone_hop.addr));
    args.extend(["home", "--duration", "5m"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut phone = Proc::start(&refs, dir.join("phone.log"), None);
    let id = phone.wait_for("the session line", |l| {
        l.strip_prefix("session ")
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    });
    // The session runs through the relay (punching cannot get through).
    let deadline = std::time::Instant::now() + STEP;
    while !server.log().contains("relay allocation") {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !server.log().contains("relay allocation ended"),
        "{}",
        server.log()
    );
    let forced = std::time::Instant::now();
    let mut end = tryst_for("end")
        .arg("end")
        .arg(&id)
        .arg("--data-dir")
        .arg(&server.data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tryst end runs");
    let line = loop {
        let log = server.log();
        if let Some(l) = log.lines().find(|l| l.contains("relay allocation ended")) {
            break l.to_owned();
        }
        assert!(
            forced.elapsed() < Duration::from_secs(5),
            "the relay still carries the forced session: {log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = end.kill();
    let _ = end.wait();
    assert!(line.contains("reason=Ended"), "{line}");
    // Neither terminal heard of the end: not settled, not recorded yet.
    let log = server.log();
    assert!(
        !log.contains("forced end settled") && !log.contains("session recorded"),
        "{log}"
    );
    drop(phone);
}

/// A relay's front on loopback for a phone whose network drops all UDP:
/// one port, UDP and TCP. Its UDP side forwards to the relay's UDP
/// address, and back, for every source except one that binds the
/// connecting side (the phone): from then on all its datagrams are
/// dropped, both ways. Its TCP side passes every connection through to
/// the relay's TCP listener.
struct UdpHostileRelayFront {
    addr: SocketAddr,
    phone_udp_dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
    tcp_accepted: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl UdpHostileRelayFront {
    fn start(relay: SocketAddr) -> UdpHostileRelayFront {
        use std::net::{TcpListener, TcpStream, UdpSocket};
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        let (front, listener) = loop {
            let front = UdpSocket::bind("127.0.0.1:0").expect("front binds");
            let addr = front.local_addr().expect("front address");
            if let Ok(listener) = TcpListener::bind(addr) {
                break (front, listener);
            }
        };
        let addr = front.local_addr().expect("front address");
        let back = UdpSocket::bind("127.0.0.1:0").expect("back binds");
        let dropped = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let blocked: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (front2, back2) = (
            front.try_clone().expect("clone"),
            back.try_clone().expect("clone"),
        );
        let (dropped2, client2) = (dropped.clone(), client.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = front.recv_from(&mut buf) {
                let d = &buf[..n];
                // A bind (0x84) whose token's role byte (at 30) is 1: the phone.
                let phone_bind = n == 55 && d[..2] == *b"TY" && d[3] == 0x84 && d[30] == 1;
                let mut blocked = blocked.lock().expect("lock");
                if phone_bind && !blocked.contains(&from) {
                    blocked.push(from);
                }
                if blocked.contains(&from) {
                    dropped2.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                *client2.lock().expect("lock") = Some(from);
                let _ = back.send_to(d, relay);
            }
        });
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, _)) = back2.recv_from(&mut buf) {
                if let Some(to) = *client.lock().expect("lock") {
                    let _ = front2.send_to(&buf[..n], to);
                }
            }
        });
        let accepted2 = accepted.clone();
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                accepted2.fetch_add(1, Ordering::Relaxed);
                let Ok(outbound) = TcpStream::connect(relay) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (inbound.try_clone(), outbound.try_clone()),
                    (outbound.try_clone(), inbound.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        UdpHostileRelayFront {
            addr,
            phone_udp_dropped: dropped,
            tcp_accepted: accepted,
        }
    }
}

/// Issue 15, item 2 (UDP blocked): the phone's network drops all its UDP
/// peer traffic (no direct path, and its UDP binds to the relay never
/// arrive); the home keeps UDP. After nothing is heard over UDP, the phone
/// reaches the relay over TCP, the relay forwards to the home over UDP,
/// and `tryst connect --send` delivers the file intact, saying "relayed
/// path up through ADDR (tcp)". Without the TCP fallback the request ends
/// `Failed` after the punch window.
pub fn relay_over_tcp_carries_a_file_when_the_phone_has_no_udp() {
    use std::sync::atomic::Ordering;
    let dir = scratch("relay-tcp");
    // The relay's own port, free now; the terminals are told the front's.
    let relay = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe binds");
        probe.local_addr().expect("probe address")
    };
    let front = UdpHostileRelayFront::start(relay);
    let relay_arg = relay.to_string();
    let public_arg = front.addr.to_string();
    let server = Server::start(
        &dir,
        &["--relay", &relay_arg, "--relay-public", &public_arg],
    );
    let (said, _home) = send_where_no_peer_packet_passes(&server, &dir, 2 * 1000 * 1000);
    assert!(
        said.contains(&format!("relayed path up through {} (tcp)", front.addr)),
        "{said}"
    );
    assert!(front.phone_udp_dropped.load(Ordering::Relaxed) > 0);
    assert!(front.tcp_accepted.load(Ordering::Relaxed) >= 1);
}

pub fn s1504_a_transfer_still_running_at_70_percent_is_extended_and_completes() {
    let dir = scratch("extension");
    let server = Server::start(&dir, &[]);
    let inbox = dir.join("inbox");
    let mut home = start_daemon(
        &server,
        &dir,
        "home",
        &[
            "--allow",
            "phone",
            "--recv-dir",
            inbox.to_str().expect("utf-8"),
        ],
    );
    let file = dir.join("slow.bin");
    write_test_file(&file, 2 << 20);
    // 2 MiB at 512 KiB/s: about 4 s, past 70% of the 3 s asked for.
    let sent = connect(
        &server,
        &dir,
        "phone",
        "home",
        &[
            "--send",
            file.to_str().expect("utf-8"),
            "--duration",
            "3s",
            "--limit-rate",
            "512K",
        ],
    );
    let said = text(&sent.stdout);
    assert!(sent.status.success(), "{said}\n{}", text(&sent.stderr));
    assert!(said.contains("session extended to 6 s"), "{said}");
    assert!(said.contains("the receiver verified"), "{said}");
    home.proc.expect_line("extended to 6 s");
    home.proc.expect_line("received");
    assert_eq!(sha256_hex(&inbox.join("slow.bin")), sha256_hex(&file));
}

pub fn a_terminal_without_a_receive_dir_keeps_no_file() {
    let dir = scratch("norecv");
    let server = Server::start(&dir, &[]);
    let home = start_daemon(&server, &dir, "home", &["--allow", "phone"]);
    let file = dir.join("f.bin");
    write_test_file(&file, 100_000);
    let sent = connect(
        &server,
        &dir,
        "phone",
        "home",
        &["--send", file.to_str().expect("utf-8"), "--duration", "30s"],
    );
    let said = format!("{}{}", text(&sent.stdout), text(&sent.stderr));
    assert_eq!(sent.status.code(), Some(1), "{said}");
    assert!(
        said.contains("the receiver did not keep f.bin: it takes no files"),
        "{said}"
    );
    drop(home);
}

/// Item 9: a receiver that cannot write the file tells the sender so; the
/// sender never calls it a checksum mismatch, and neither side's messages
/// name the hidden partial file.
pub fn a_receiver_that_cannot_write_says_so_and_never_names_its_partial_file() {
    let dir = scratch("recv-fails");
    let server = Server::start(&dir, &[]);
    let inbox = dir.join("inbox");
    let home = start_daemon(
        &server,
        &dir,
        "home",
        &[
            "--allow",
            "phone",
            "--recv-dir",
            inbox.to_str().expect("utf-8"),
        ],
    );
    // Writable at start, read-only by the time the file comes.
    let ro = ReadOnlyDir::new(inbox.clone());
    let file = dir.join("g.bin");
    write_test_file(&file, 100_000);
    let sent = connect(
        &server,
        &dir,
        "phone",
        "home",
        &["--send", file.to_str().expect("utf-8"), "--duration", "30s"],
    );
    let said = format!("{}{}", text(&sent.stdout), text(&sent.stderr));
    assert_eq!(sent.status.code(), Some(1), "{said}");
    assert!(
        said.contains("the receiver did not keep g.bin: it could not write it"),
        "{said}"
    );
    drop(ro);
    let logged = home.proc.log();
    assert!(logged.contains("file refused"), "{logged}");
    for out in [&said, &logged] {
        assert!(!out.to_lowercase().contains("checksum"), "{out}");
        assert!(!out.contains(".tryst-partial"), "{out}");
    }
}

pub fn s1605_a_forced_end_cuts_a_running_transfer_and_stores_no_file() {
    let dir = scratch("forcedsend");
    let server = Server::start(&dir, &[]);
    let inbox = dir.join("inbox");
    let mut home = start_daemon(
        &server,
        &dir,
        "home",
        &[
            "--allow",
            "phone",
            "--recv-dir",
            inbox.to_str().expect("utf-8"),
        ],
    );
    let file = dir.join("long.bin");
    write_test_file(&file, 4 << 20);
    let mut phone = spawn_connect(
        &server,
        &dir,
        "phone",
        &[
            "home",
            "--duration",
            "60s",
            "--send",
            file.to_str().expect("utf-8"),
            "--limit-rate",
            "256K",
        ],
        "phone.log",
    );
    let id = phone.wait_for("the session line", |l| {
        l.strip_prefix("session ")
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    });
    phone.expect_line("direct path up");
    std::thread::sleep(Duration::from_millis(500));
    let ended = tryst_for("end")
        .args(["end", &id, "--data-dir"])
        .arg(&server.data)
        .output()
        .expect("tryst end runs");
    assert!(ended.status.success(), "{}", text(&ended.stderr));
    let (status, stdout, stderr) = phone.finish();
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("Forced"), "{stderr}");
    home.proc.expect_line("file not kept");
    home.proc.expect_line("ended: Forced");
    // Nothing under a visible name: at most the hidden partial file and its
    // record, kept for a resume of the same file from the same peer.
    let left: Vec<String> = fs::read_dir(&inbox)
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.iter().all(|n| n.starts_with(".tryst-partial-")),
        "left in the inbox: {left:?}"
    );
}

/// The number in the last line of `text` that holds `marker` and ends
/// with `(N ...)`.
fn count_before(text: &str, marker: &str) -> u64 {
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no line with {marker:?} in:\n{text}"));
    line.rsplit_once('(')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"))
}

/// Ctrl-C (SIGINT) of the sending `connect` midway: the next send of the
/// same file resumes from what the daemon kept, so less than the whole
/// file crosses the second time.
pub fn resume_after_ctrl_c_of_the_sending_connect_sends_only_the_rest() {
    let dir = scratch("resume-int");
    let server = Server::start(&dir, &[]);
    let inbox = dir.join("inbox");
    let inbox_arg = inbox.to_str().expect("utf-8").to_owned();
    let _home = start_daemon(
        &server,
        &dir,
        "home",
        &["--allow", "phone", "--recv-dir", inbox_arg.as_str()],
    );
    let file = dir.join("big.bin");
    const SIZE: u64 = 50 * 1000 * 1000;
    write_test_file(&file, SIZE as usize);
    let mut phone = spawn_connect(
        &server,
        &dir,
        "phone",
        &[
            "home",
            "--duration",
            "10m",
            "--send",
            file.to_str().expect("utf-8"),
            "--limit-rate",
            "20M",
        ],
        "phone-1.log",
    );
    phone.expect_line("direct path up");
    phone.expect_line("sending big.bin: 40%");
    phone.signal("INT");
    let (_, first_out, first_err) = phone.finish();
    let sent = connect(
        &server,
        &dir,
        "phone",
        "home",
        &["--send", file.to_str().expect("utf-8"), "--duration", "10m"],
    );
    let said = text(&sent.stdout);
    assert!(
        sent.status.success(),
        "{said}\n{}\nfirst:\n{first_out}\n{first_err}",
        text(&sent.stderr)
    );
    let digest = sha256_hex(&file);
    assert!(
        said.contains(&format!("the receiver verified SHA-256 {digest}")),
        "{said}"
    );
    let resumed_at: u64 = said
        .lines()
        .find_map(|l| l.strip_prefix("resuming at byte "))
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume line in:\n{said}"));
    assert!(
        resumed_at > 10_000_000 && resumed_at < SIZE,
        "resumed at {resumed_at}"
    );
    assert_eq!(sha256_hex(&inbox.join("big.bin")), digest);
}

/// A send cut at the end of its permitted time (no extension on this
/// server) resumes on the next connect: less than the whole file crosses.
pub fn resume_after_a_duration_cut_sends_only_the_rest() {
    let dir = scratch("resume-cut");
    let server = Server::start(&dir, &["--extension", "0s"]);
    let inbox = dir.join("inbox");
    let inbox_arg = inbox.to_str().expect("utf-8").to_owned();
    let _home = start_daemon(
        &server,
        &dir,
        "home",
        &["--allow", "phone", "--recv-dir", inbox_arg.as_str()],
    );
    let file = dir.join("big.bin");
    const SIZE: u64 = 50 * 1000 * 1000;
    write_test_file(&file, SIZE as usize);
    let file_arg = file.to_str().expect("utf-8");
    let cut = connect(
        &server,
        &dir,
        "phone",
        "home",
        &[
            "--duration",
            "3s",
            "--send",
            file_arg,
            "--limit-rate",
            "10M",
        ],
    );
    let cut_said = format!("{}{}", text(&cut.stdout), text(&cut.stderr));
    assert!(!inbox.join("big.bin").exists(), "{cut_said}");
    // Resent at once, while the old direct path may still be closing: the
    // daemon settled the cut partial when the session ended, not when the
    // path closed, so the resend is offered what it holds.
    let sent = connect(
        &server,
        &dir,
        "phone",
        "home",
        &["--send", file_arg, "--duration", "10m"],
    );
    let said = text(&sent.stdout);
    assert!(
        sent.status.success(),
        "{said}\n{}\nfirst:\n{cut_said}",
        text(&sent.stderr)
    );
    let digest = sha256_hex(&file);
    assert!(
        said.contains(&format!("the receiver verified SHA-256 {digest}")),
        "{said}"
    );
    let resumed_at: u64 = said
        .lines()
        .find_map(|l| l.strip_prefix("resuming at byte "))
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume line in:\n{said}\nfirst:\n{cut_said}"));
    assert!(
        resumed_at > 5_000_000 && resumed_at < SIZE,
        "resumed at {resumed_at}"
    );
    assert_eq!(sha256_hex(&inbox.join("big.bin")), digest);
}

/// The names as sent of the cut transfers whose partial file (and record)
/// `inbox` keeps, sorted (read from the records, in the
/// receiver's own format, `io-std/src/transfer/resume.rs`).
fn kept_partials(inbox: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(inbox)
        .map(|d| {
            d.filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().into_owned();
                let partial = name.strip_suffix(".resume")?;
                if !name.starts_with(".tryst-partial-") || !inbox.join(partial).is_file() {
                    return None;
                }
                let bytes = fs::read(inbox.join(&name)).ok()?;
                // "TRSM", version, key, size, mtime, verified, SHA-256, name length, name, SHA-256.
                let body = bytes.get(..bytes.len().checked_sub(32)?)?;
                let len = usize::from(*body.get(93)?);
                String::from_utf8(body.get(94..94 + len)?.to_vec()).ok()
            })
            .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A permitted peer that cuts sends to new names keeps at most
/// `--max-partials` partial files on the receiver: its oldest go first,
/// and another peer's partial is never taken for its room.
pub fn kept_partials_are_capped_per_peer_and_another_peers_partial_survives() {
    let dir = scratch("partial-cap");
    let server = Server::start(&dir, &["--extension", "0s"]);
    let inbox = dir.join("inbox");
    let inbox_arg = inbox.to_str().expect("utf-8").to_owned();
    let home = start_daemon(
        &server,
        &dir,
        "home",
        &[
            "--allow",
            "phone",
            "--allow",
            "tablet",
            "--recv-dir",
            inbox_arg.as_str(),
            "--max-partials",
            "2",
        ],
    );
    let cut_send = |from: &str, name: &str| {
        let file = dir.join(name);
        write_test_file(&file, 20 << 20);
        let cut = connect(
            &server,
            &dir,
            from,
            "home",
            &[
                "--duration",
                "2s",
                "--send",
                file.to_str().expect("utf-8"),
                "--limit-rate",
                "2M",
            ],
        );
        assert!(!cut.status.success(), "{}", text(&cut.stdout));
    };
    // The other peer's partial is the oldest in the folder.
    cut_send("tablet", "t.bin");
    for name in ["a.bin", "b.bin", "c.bin"] {
        cut_send("phone", name);
    }
    let want = ["b.bin", "c.bin", "t.bin"];
    let deadline = std::time::Instant::now() + STEP;
    while kept_partials(&inbox) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "kept: {:?}\n{}",
            kept_partials(&inbox),
            home.proc.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Only partials and their records: nothing else was left.
    let left = fs::read_dir(&inbox).expect("inbox").count();
    assert_eq!(left, 6, "{:?}", kept_partials(&inbox));
}

pub fn resume_after_kill_9_of_the_receiving_daemon_sends_only_the_rest() {
    let dir = scratch("resume");
    let server = Server::start(&dir, &[]);
    let inbox = dir.join("inbox");
    let inbox_arg = inbox.to_str().expect("utf-8").to_owned();
    let home_args = ["--allow", "phone", "--recv-dir", inbox_arg.as_str()];
    let mut home = start_daemon(&server, &dir, "home", &home_args);
    let file = dir.join("big.bin");
    const SIZE: u64 = 50 * 1000 * 1000;
    write_test_file(&file, SIZE as usize);
    // The first send, throttled so that the kill lands midway.
    let mut phone = spawn_connect(
        &server,
        &dir,
        "phone",
        &[
            "home",
            "--duration",
            "10m",
            "--send",
            file.to_str().expect("utf-8"),
            "--limit-rate",
            "20M",
        ],
        "phone-1.log",
    );
    phone.expect_line("direct path up");
    phone.expect_line("sending big.bin: 40%");
    home.proc.kill9();
    phone.kill9();
    drop(phone);
    drop(home);
    // What the killed daemon left: its partial file and the record (and a
    // record's temporary file, when the kill came while it was rewritten;
    // the start sweep removes that one).
    let left: Vec<String> = fs::read_dir(&inbox)
        .expect("inbox")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".tmp"))
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter().all(|n| n.starts_with(".tryst-partial-")),
        "{left:?}"
    );
    // The daemon starts again on the same folder: its start sweep keeps them.
    let mut home = start_daemon(&server, &dir, "home", &home_args);
    let sent = connect(
        &server,
        &dir,
        "phone",
        "home",
        &["--send", file.to_str().expect("utf-8"), "--duration", "10m"],
    );
    let said = text(&sent.stdout);
    assert!(sent.status.success(), "{said}\n{}", text(&sent.stderr));
    let digest = sha256_hex(&file);
    assert!(
        said.contains(&format!("the receiver verified SHA-256 {digest}")),
        "{said}"
    );
    // The sender is told where it resumed.
    let resumed_at: u64 = said
        .lines()
        .find_map(|l| l.strip_prefix("resuming at byte "))
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume line in:\n{said}"));
    assert!(
        resumed_at > 10_000_000 && resumed_at < SIZE,
        "resumed at {resumed_at}"
    );
    assert!(
        said.contains(&format!("(resumed at byte {resumed_at})")),
        "{said}"
    );
    // Less than the whole file crossed the second time, by both counts.
    let sent_bytes = count_before(&said, "session ended: Completed");
    assert!(
        sent_bytes < SIZE - resumed_at + 1_000_000,
        "{sent_bytes} bytes sent after resuming at {resumed_at}"
    );
    let line = home.proc.expect_line("ended: Completed");
    let received = count_before(&line, "ended: Completed");
    assert!(received < SIZE, "{line}");
    assert_eq!(sha256_hex(&inbox.join("big.bin")), digest);
    let names: Vec<_> = fs::read_dir(&inbox)
        .expect("inbox")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["big.bin"], "no partial file or record is left");
}

/// A home share: two pictures, a folder of two, and what must never be
/// served: a hidden file, a hidden folder, a symlink out of the share.
/// Returns the share and a file outside it.
fn home_share(dir: &Path) -> (PathBuf, PathBuf) {
    let share = dir.join("share");
    let outside = dir.join("outside");
    fs::create_dir_all(share.join("trip")).expect("share");
    fs::create_dir_all(share.join(".private")).expect("hidden folder");
    fs::create_dir_all(&outside).expect("outside");
    write_test_file(&share.join("a.jpg"), 300_000);
    write_test_file(&share.join("b.jpg"), 70_000);
    write_test_file(&share.join("trip/c.jpg"), 1_500_000);
    write_test_file(&share.join("trip/d.jpg"), 10);
    fs::write(share.join(".secret"), b"hidden").expect("hidden");
    fs::write(share.join(".private/key"), b"hidden").expect("hidden");
    let secret = outside.join("secret.txt");
    fs::write(&secret, b"outside the share").expect("outside");
    std::os::unix::fs::symlink(&secret, share.join("link.txt")).expect("symlink");
    (share, secret)
}

pub fn s207_fetch_a_phone_fetches_two_pictures_and_a_folder_from_homes_share() {
    let dir = scratch("fetch");
    let server = Server::start(&dir, &[]);
    let (share, _) = home_share(&dir);
    let mut home = start_daemon(
        &server,
        &dir,
        "home",
        &[
            "--allow",
            "phone",
            "--share",
            share.to_str().expect("utf-8"),
        ],
    );
    let inbox = dir.join("phone-inbox");
    let got = connect(
        &server,
        &dir,
        "phone",
        "home",
        &[
            "--get",
            "a.jpg",
            "b.jpg",
            "trip",
            "--recv-dir",
            inbox.to_str().expect("utf-8"),
            "--duration",
            "1m",
        ],
    );
    let said = text(&got.stdout);
    assert!(got.status.success(), "{said}\n{}", text(&got.stderr));
    for name in ["a.jpg", "b.jpg", "trip/c.jpg", "trip/d.jpg"] {
        assert_eq!(
            sha256_hex(&inbox.join(name)),
            sha256_hex(&share.join(name)),
            "{name}"
        );
        let digest = sha256_hex(&share.join(name));
        assert!(
            said.contains(&format!("fetched {name}:")) && said.contains(&digest),
            "{said}"
        );
    }
    let mut top: Vec<_> = fs::read_dir(&inbox)
        .expect("inbox")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["a.jpg", "b.jpg", "trip"]);
    home.proc.expect_line("ended: Completed");
}

pub fn fetch_list_prints_the_share_without_hidden_files_or_symlinks() {
    let dir = scratch("list");
    let server = Server::start(&dir, &[]);
    let (share, _) = home_share(&dir);
    let _home = start_daemon(
        &server,
        &dir,
        "home",
        &[
            "--allow",
            "phone",
            "--share",
            share.to_str().expect("utf-8"),
        ],
    );
    let listed = connect(&server, &dir, "phone", "home", &["--list"]);
    let said = text(&listed.stdout);
    assert!(listed.status.success(), "{said}\n{}", text(&listed.stderr));
    assert!(said.contains("4 shared files"), "{said}");
    for (name, size) in [
        ("a.jpg", 300_000),
        ("b.jpg", 70_000),
        ("trip/c.jpg", 1_500_000),
        ("trip/d.jpg", 10),
    ] {
        let line = said
            .lines()
            .find(|l| l.ends_with(&format!("  {name}")))
            .unwrap_or_else(|| panic!("{name} not listed: {said}"));
        assert!(line.trim_start().starts_with(&format!("{size} ")), "{line}");
        // The modification time, in UTC.
        assert!(line.contains('T') && line.contains('Z'), "{line}");
    }
    for never in [".secret", ".private", "link.txt", "secret.txt"] {
        assert!(!said.contains(never), "{never} listed: {said}");
    }
}

pub fn fetch_an_escaping_name_a_symlink_out_and_a_hidden_file_get_the_one_answer() {
    let dir = scratch("escape");
    let server = Server::start(&dir, &[]);
    let (share, _) = home_share(&dir);
    let _home = start_daemon(
        &server,
        &dir,
        "home",
        &[
            "--allow",
            "phone",
            "--share",
            share.to_str().expect("utf-8"),
        ],
    );
    let inbox = dir.join("phone-inbox");
    let refused = [
        "../outside/secret.txt",
        "link.txt",
        ".secret",
        ".private/key",
        "missing.jpg",
    ];
    let mut args = vec!["--get"];
    args.extend(refused);
    args.extend(["--recv-dir", inbox.to_str().expect("utf-8")]);
    let got = connect(&server, &dir, "phone", "home", &args);
    let said = text(&got.stdout);
    assert_eq!(got.status.code(), Some(1), "{said}\n{}", text(&got.stderr));
    for name in refused {
        assert!(
            said.contains(&format!("{name}: no such file")),
            "{name}: {said}"
        );
    }
    assert!(!said.contains("fetched"), "{said}");
    let kept: Vec<_> = fs::read_dir(&inbox)
        .map(|d| d.map(|e| e.expect("entry").file_name()).collect())
        .unwrap_or_default();
    assert!(kept.is_empty(), "kept: {kept:?}");
}

pub fn send_several_files_and_a_folder_in_one_connect() {
    let dir = scratch("multisend");
    let server = Server::start(&dir, &[]);
    let inbox = dir.join("inbox");
    // A partial file a killed terminal left: swept when the terminal starts.
    fs::create_dir_all(&inbox).expect("inbox");
    fs::write(inbox.join(".tryst-partial-0123456789abcdef"), b"half").expect("partial");
    let mut home = start_daemon(
        &server,
        &dir,
        "home",
        &[
            "--allow",
            "phone",
            "--recv-dir",
            inbox.to_str().expect("utf-8"),
        ],
    );
    let out = dir.join("out");
    fs::create_dir_all(out.join("album/day1")).expect("folder");
    write_test_file(&out.join("one.bin"), 200_000);
    write_test_file(&out.join("two.bin"), 1000);
    write_test_file(&out.join("album/x.jpg"), 50_000);
    write_test_file(&out.join("album/day1/y.jpg"), 60_000);
    fs::write(out.join("album/.hidden"), b"no").expect("hidden");
    std::os::unix::fs::symlink(out.join("one.bin"), out.join("album/link.bin")).expect("symlink");
    // one.bin is taken at the receiver: the sender learns the other name.
    fs::write(inbox.join("one.bin"), b"already here").expect("taken");
    let p = |n: &str| out.join(n).to_str().expect("utf-8").to_owned();
    let sent = connect(
        &server,
        &dir,
        "phone",
        "home",
        &[
            "--send",
            &p("one.bin"),
            &p("two.bin"),
            &p("album"),
            "--duration",
            "1m",
        ],
    );
    let said = text(&sent.stdout);
    assert!(sent.status.success(), "{said}\n{}", text(&sent.stderr));
    for (sent_name, stored) in [
        ("one.bin", "one.bin.1"),
        ("two.bin", "two.bin"),
        ("album/x.jpg", "album/x.jpg"),
        ("album/day1/y.jpg", "album/day1/y.jpg"),
    ] {
        assert!(
            said.contains(&format!("the receiver stored {sent_name} as {stored}")),
            "{sent_name}: {said}"
        );
        assert_eq!(
            sha256_hex(&inbox.join(stored)),
            sha256_hex(&out.join(sent_name))
        );
    }
    assert!(
        said.contains("skipping") && said.contains(".hidden"),
        "{said}"
    );
    assert!(said.contains("link.bin: a symlink"), "{said}");
    assert!(!inbox.join("album/.hidden").exists());
    assert!(!inbox.join("album/link.bin").exists());
    assert!(!inbox.join(".tryst-partial-0123456789abcdef").exists());
    assert_eq!(
        fs::read(inbox.join("one.bin")).expect("kept"),
        b"already here"
    );
    home.proc.expect_line("received");
}

/// Runs `tryst connect` as `name` with these server flags instead of a
/// server's own, to a target nobody has.
fn connect_with(dir: &Path, control: &str, trigger: &str, key: &str) -> (Option<i32>, String) {
    let state = dir.join("phone-state");
    let out = tryst_for("connect")
        .args([
            "connect",
            "--name",
            "phone",
            "--server",
            control,
            "--trigger",
            trigger,
        ])
        .args(["--server-key", key, "--state-dir"])
        .arg(&state)
        .arg("home")
        .output()
        .expect("tryst connect runs");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    (out.status.code(), all)
}

/// A key nobody serves: 32 bytes of a real public key's form.
const STRANGER_KEY: &str = "e25d550aef3139d66593855ad7a587a031fe022d254b1575217516e44f252c7e";

/// The message of the registration timeout, which the causes below must
/// be told apart from.
const TIMEOUT_MESSAGE: &str = "could not register";

pub fn a_missing_required_argument_is_named_in_the_error() {
    let out = tryst_for("connect")
        .args(["connect", "home"])
        .output()
        .expect("tryst connect runs");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for flag in [
        "--name",
        "--server",
        "--trigger",
        "--server-key",
        "--state-dir",
    ] {
        assert!(err.contains(flag), "the error names {flag}: {err}");
    }
}

/// The flags of a terminal-side command for device `name` with the
/// session servers `servers` (a comma list) and keys `keys`, and
/// `server`'s trigger server.
fn failover_flags(
    server: &Server,
    name: &str,
    state: &Path,
    servers: &str,
    keys: &str,
) -> Vec<String> {
    let mut flags = server.terminal_flags(name, state);
    let at = |flags: &[String], flag: &str| {
        flags
            .iter()
            .position(|f| f == flag)
            .map(|i| i + 1)
            .expect("the flag")
    };
    let i = at(&flags, "--server");
    flags[i] = servers.to_owned();
    let i = at(&flags, "--server-key");
    flags[i] = keys.to_owned();
    flags
}

/// A terminal given several session servers registers with the next one
/// when the first is down (connection refused) or refuses the handshake
/// (a key it does not hold): `terminal` with a dead address first, then
/// `ping` with a wrong key for the first server (one key per --server),
/// and `connect` with the servers given as repeated flags.
pub fn a_terminal_fails_over_to_the_next_session_server_when_one_is_down_or_refuses() {
    let dir = scratch("failover");
    let server = Server::start(&dir, &[]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let live = server.control.to_string();
    // Down first: one key for every server.
    let state = dir.join("home-state");
    let mut args = vec!["terminal".to_owned()];
    args.extend(failover_flags(
        &server,
        "home",
        &state,
        &format!("{dead},{live}"),
        &server.key,
    ));
    args.extend(["--allow".to_owned(), "phone".to_owned()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut home = Proc::start(&refs, dir.join("home.log"), None);
    home.expect_line("online: the trigger server sees this terminal at ");
    // Refusing first: a key per server, the first one wrong.
    let state = dir.join("phone-state");
    let out = tryst_for("ping")
        .arg("ping")
        .args(failover_flags(
            &server,
            "phone",
            &state,
            &format!("{live},{live}"),
            &format!("{STRANGER_KEY},{}", server.key),
        ))
        .args(["home", "--count", "1"])
        .output()
        .expect("tryst ping runs");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("1 sent, 1 received"), "{all}");
    // Repeated flags, the dead one first again, for connect.
    let mut cmd = tryst_for("connect");
    cmd.arg("connect")
        .args(failover_flags(&server, "phone", &state, &dead, &server.key))
        .args(["--server", &live, "home", "--duration", "1s"])
        .stdin(std::process::Stdio::null());
    let out = cmd.output().expect("tryst connect runs");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains(" with home for "), "{all}");
    // A key count that matches neither one nor the servers is a usage error.
    let out = tryst_for("ping")
        .arg("ping")
        .args(failover_flags(
            &server,
            "phone",
            &state,
            &format!("{live},{live},{live}"),
            &format!("{STRANGER_KEY},{}", server.key),
        ))
        .arg("home")
        .output()
        .expect("tryst ping runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("2 --server-key for 3 --server"),
        "{}",
        text(&out.stderr)
    );
}

pub fn a_refused_tcp_connection_is_reported_as_refused() {
    let dir = scratch("refused-tcp");
    // A port that was free a moment ago: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let (code, all) = connect_with(&dir, &port, "127.0.0.1:9", STRANGER_KEY);
    assert_eq!(code, Some(1), "{all}");
    assert!(all.contains("connection refused"), "{all}");
    assert!(all.contains(&port), "names the address: {all}");
    assert!(
        !all.contains(TIMEOUT_MESSAGE),
        "not left to the timeout: {all}"
    );
}

pub fn a_wrong_server_key_is_reported_as_such() {
    let dir = scratch("wrong-key");
    let server = Server::start(&dir, &[]);
    let (code, all) = connect_with(
        &dir,
        &server.control.to_string(),
        &server.trigger.to_string(),
        STRANGER_KEY,
    );
    assert_eq!(code, Some(1), "{all}");
    assert!(all.contains("wrong server key"), "{all}");
    assert!(!all.contains(TIMEOUT_MESSAGE), "{all}");
}

pub fn a_server_that_never_answers_the_handshake_is_reported() {
    let dir = scratch("silent-server");
    // Accepts, reads, never answers: not a tryst server.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let addr = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten().take(8) {
            held.push(stream);
        }
    });
    let (code, all) = connect_with(&dir, &addr, "127.0.0.1:9", STRANGER_KEY);
    assert_eq!(code, Some(1), "{all}");
    assert!(all.contains("not a tryst server"), "{all}");
    assert!(!all.contains(TIMEOUT_MESSAGE), "{all}");
}

pub fn a_trigger_port_that_never_acknowledges_is_reported() {
    let dir = scratch("silent-trigger");
    let server = Server::start(&dir, &[]);
    // A UDP socket that takes keepalives and never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let trigger = silent.local_addr().expect("address").to_string();
    let (code, all) = connect_with(&dir, &server.control.to_string(), &trigger, &server.key);
    drop(silent);
    assert_eq!(code, Some(1), "{all}");
    assert!(all.contains("never acknowledged a keepalive"), "{all}");
    assert!(all.contains(&trigger), "names the address: {all}");
}

pub fn the_servers_default_duration_and_the_extension_flags_are_flags() {
    let dir = scratch("default-duration");
    // Longer than the maximum, or zero: refused at start, naming the flag.
    for bad in [["--default-duration", "2h"], ["--default-duration", "0s"]] {
        let data = dir.join(format!("bad-{}", bad[1]));
        let out = tryst_for("server")
            .args(["server", "--data-dir", data.to_str().expect("utf-8")])
            .args(["--control", "127.0.0.1:0", "--trigger", "127.0.0.1:0"])
            .args(bad)
            .output()
            .expect("tryst server runs");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
        assert!(err.contains("--default-duration"), "{bad:?}: {err}");
    }
    let server = Server::start(&dir, &["--default-duration", "7s"]);
    let _home = start_daemon(&server, &dir, "home", &["--allow", "phone"]);
    // A request that names no duration gets the server's default; the
    // terminal's extension flags are checked like every value.
    let held = connect(
        &server,
        &dir,
        "phone",
        "home",
        &["--extension-threshold", "90"],
    );
    let said = text(&held.stdout);
    assert!(held.status.success(), "{said}{}", text(&held.stderr));
    assert!(said.contains("for 7 s"), "{said}");
    for bad in [["--extension-threshold", "0"], ["--extension-step", "0s"]] {
        let out = connect(&server, &dir, "phone", "home", &bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
    }
}

pub fn session_durations_are_checked_and_a_clamp_is_reported() {
    let dir = scratch("durations");
    let server = Server::start(&dir, &["--max-duration", "30s"]);
    // Refused before anything is asked: zero, negative.
    for (value, says) in [("0", "more than 0 s"), ("-5s", "cannot be negative")] {
        let out = connect(
            &server,
            &dir,
            "phone",
            "home",
            &[&format!("--duration={value}")],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--duration {value}: {err}");
        assert!(err.contains(says), "--duration {value}: {err}");
    }
    // Asked for more than the server's maximum: granted 30 s, and told so.
    let inbox = dir.join("inbox");
    let _home = start_daemon(
        &server,
        &dir,
        "home",
        &[
            "--allow",
            "phone",
            "--recv-dir",
            inbox.to_str().expect("utf-8"),
        ],
    );
    let file = dir.join("small.bin");
    write_test_file(&file, 1000);
    let sent = connect(
        &server,
        &dir,
        "phone",
        "home",
        &[
            "--send",
            file.to_str().expect("utf-8"),
            "--duration",
            "99999h",
        ],
    );
    let said = text(&sent.stdout);
    assert!(sent.status.success(), "{said}\n{}", text(&sent.stderr));
    assert!(said.contains("for 30 s"), "{said}");
    assert!(
        said.contains("asked for 359996400 s, granted 30 s: the server's maximum"),
        "{said}"
    );
}

/// How many times the server's log says device `name` registered.
fn registrations_of(dir: &Path, name: &str) -> usize {
    let log = fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let needle = format!("registered name={name} ");
    log.lines().filter(|l| l.contains(&needle)).count()
}

pub fn a_daemon_run_terminal_sends_through_its_control_socket_on_its_one_registration() {
    let dir = scratch("control-send");
    let server = Server::start(&dir, &[]);
    let inbox = dir.join("inbox");
    let (share, _) = home_share(&dir);
    let mut home = start_daemon(
        &server,
        &dir,
        "home",
        &[
            "--allow",
            "phone",
            "--recv-dir",
            inbox.to_str().expect("utf-8"),
            "--share",
            share.to_str().expect("utf-8"),
        ],
    );
    // phone runs a daemon of its own (reachable by nobody yet) and reaches home from it.
    let mut phone = start_daemon(&server, &dir, "phone", &[]);
    assert_eq!(registrations_of(&dir, "phone"), 1);
    let file = dir.join("picture.jpg");
    write_test_file(&file, 300 * 1000);
    let started = std::time::Instant::now();
    let sent = connect(
        &server,
        &dir,
        "phone",
        "home",
        &["--send", file.to_str().expect("utf-8"), "--duration", "30s"],
    );
    let through_daemon = started.elapsed();
    let said = text(&sent.stdout);
    assert!(sent.status.success(), "{said}\n{}", text(&sent.stderr));
    let digest = sha256_hex(&file);
    assert!(said.contains("session "), "{said}");
    assert!(said.contains(" with home for "), "{said}");
    assert!(
        said.contains(&format!("the receiver verified SHA-256 {digest}")),
        "{said}"
    );
    assert!(
        said.contains("the receiver stored picture.jpg as picture.jpg"),
        "{said}"
    );
    assert!(said.contains("session ended: Completed"), "{said}");
    assert_eq!(sha256_hex(&inbox.join("picture.jpg")), digest);
    home.proc.expect_line("received");
    // The daemon made the request: its own session line, no second registration.
    phone.proc.expect_line("with home for");
    assert_eq!(
        registrations_of(&dir, "phone"),
        1,
        "the connect registered phone a second time"
    );

    // Fetching through the daemon stores into the connect's --recv-dir
    // (the daemon has none of its own), checked as every received file is.
    let fetched = dir.join("phone-fetched");
    let got = connect(
        &server,
        &dir,
        "phone",
        "home",
        &[
            "--get",
            "a.jpg",
            "trip",
            "--recv-dir",
            fetched.to_str().expect("utf-8"),
        ],
    );
    let said = text(&got.stdout);
    assert!(got.status.success(), "{said}\n{}", text(&got.stderr));
    for name in ["a.jpg", "trip/c.jpg", "trip/d.jpg"] {
        let digest = sha256_hex(&share.join(name));
        assert_eq!(sha256_hex(&fetched.join(name)), digest, "{name}");
        assert!(said.contains(&format!("fetched {name}:")), "{said}");
    }
    assert!(
        said.contains(&format!("stored as {}", fetched.join("a.jpg").display())),
        "{said}"
    );
    let listed = connect(&server, &dir, "phone", "home", &["--list"]);
    assert!(
        text(&listed.stdout).contains("trip/c.jpg"),
        "{}",
        text(&listed.stdout)
    );
    assert_eq!(registrations_of(&dir, "phone"), 1);

    // The same send by a terminal that runs alone, for the comparison.
    let mut args = vec!["--allow", "phone", "--allow", "tablet"];
    args.extend(["--recv-dir", inbox.to_str().expect("utf-8")]);
    args.extend(["--share", share.to_str().expect("utf-8")]);
    drop(home);
    let _home = start_daemon(&server, &dir, "home", &args);
    let alone_started = std::time::Instant::now();
    let lone = connect(
        &server,
        &dir,
        "tablet",
        "home",
        &["--send", file.to_str().expect("utf-8"), "--duration", "30s"],
    );
    let alone = alone_started.elapsed();
    assert!(lone.status.success(), "{}", text(&lone.stderr));
    println!(
        "connect --send of 300 kB: {:.0} ms through phone's daemon, {:.0} ms alone (registration and first keepalive)",
        through_daemon.as_secs_f64() * 1e3,
        alone.as_secs_f64() * 1e3
    );

    // A refused target: the one uniform answer, exit 3, through the daemon too.
    let refused = connect(&server, &dir, "phone", "nobody", &["--duration", "5s"]);
    let all = format!("{}{}", text(&refused.stdout), text(&refused.stderr));
    assert_eq!(refused.status.code(), Some(3), "{all}");
    assert!(all.contains("not permitted"), "{all}");
    // And ping goes through it as well; the daemon runs on, registered once.
    let pinged = ping(&server, &dir, "phone", "home", &["--count", "1"]);
    assert_eq!(pinged.status.code(), Some(0), "{}", text(&pinged.stderr));
    assert!(text(&pinged.stdout).contains("pong from home ("));
    assert_eq!(registrations_of(&dir, "phone"), 1);

    // A daemon that died leaves its socket: the next connect removes it and runs alone.
    let socket = phone.state.join("control.sock");
    phone.proc.kill9();
    assert!(socket.exists());
    let alone = connect(&server, &dir, "phone", "home", &["--duration", "1s"]);
    assert!(alone.status.success(), "{}", text(&alone.stderr));
    assert!(!socket.exists(), "the stale socket was left");
    assert_eq!(registrations_of(&dir, "phone"), 2);
}

/// Sends `bytes` to a control socket and reads the answer frame's body
/// (empty if the daemon closed without one).
fn control_exchange(socket: &Path, bytes: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("control socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = stream.write_all(bytes);
    let mut len = [0u8; 4];
    if stream.read_exact(&mut len).is_err() {
        return String::new();
    }
    let mut body = vec![0u8; u32::from_be_bytes(len).min(1 << 20) as usize];
    let _ = stream.read_exact(&mut body);
    String::from_utf8_lossy(&body).into_owned()
}

fn frame(body: &str) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body.as_bytes());
    out
}

/// One answer frame read from a held control client.
fn read_frame(stream: &mut std::os::unix::net::UnixStream) -> String {
    use std::io::Read;
    let mut len = [0u8; 4];
    if stream.read_exact(&mut len).is_err() {
        return String::new();
    }
    let mut body = vec![0u8; u32::from_be_bytes(len).min(1 << 20) as usize];
    let _ = stream.read_exact(&mut body);
    String::from_utf8_lossy(&body).into_owned()
}

/// The control socket serves at most 8 clients at once: a 9th is refused
/// with a `busy` error that says why, and a place freed serves the next.
pub fn the_control_socket_refuses_a_ninth_client_as_busy() {
    use std::io::Write;
    let dir = scratch("control-busy");
    let server = Server::start(&dir, &[]);
    let home = start_daemon(&server, &dir, "home", &[]);
    let socket = home.state.join("control.sock");
    let hello = frame(r#"{"op":"hello","version":1}"#);
    let mut held = Vec::new();
    for i in 0..8 {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(&hello).expect("write");
        let said = read_frame(&mut stream);
        assert!(said.contains("\"re\":\"hello\""), "client {i}: {said}");
        held.push(stream);
    }
    let ninth = control_exchange(&socket, &hello);
    assert!(
        ninth.contains("busy") && ninth.contains("too many control clients"),
        "{ninth}"
    );
    // One leaves: the next is served.
    drop(held.pop());
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let again = control_exchange(&socket, &hello);
        if again.contains("\"re\":\"hello\"") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{again}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(held);
    drop(home);
    drop(server);
}

pub fn the_control_socket_refuses_garbage_and_clients_of_another_user() {
    let dir = scratch("control-refuse");
    let server = Server::start(&dir, &[]);
    let _home = start_daemon(&server, &dir, "home", &["--allow", "phone"]);
    let phone = start_daemon(&server, &dir, "phone", &[]);
    let socket = phone.state.join("control.sock");
    let hello = frame(r#"{"op":"hello","version":1}"#);

    let garbage = control_exchange(&socket, &frame("not json at all"));
    assert!(garbage.contains("bad_frame"), "{garbage}");
    let oversized = control_exchange(&socket, &[0xff, 0xff, 0xff, 0xff, b'{']);
    assert!(oversized.contains("bad_frame"), "{oversized}");
    let old = control_exchange(&socket, &frame(r#"{"op":"hello","version":99}"#));
    assert!(old.contains("\"version\""), "{old}");
    let mut unknown = hello.clone();
    unknown.extend(frame(r#"{"op":"format-disk"}"#));
    let said = {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(&unknown).expect("write");
        let mut all = Vec::new();
        let _ = stream.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    };
    assert!(said.contains("unknown_op"), "{said}");
    // A client that sends half a frame and stalls holds nobody else up.
    let stalled = std::os::unix::net::UnixStream::connect(&socket).expect("socket");
    {
        use std::io::Write;
        (&stalled).write_all(&[0, 0, 0, 40, b'{']).expect("write");
    }
    let started = std::time::Instant::now();
    let ok = control_exchange(&socket, &hello);
    assert!(ok.contains("\"re\":\"hello\""), "{ok}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(stalled);
    // The daemon still serves connects after all that.
    let sent = connect(&server, &dir, "phone", "home", &["--duration", "1s"]);
    assert!(sent.status.success(), "{}", text(&sent.stderr));

    // Another user: the socket made reachable for the test, the uid check
    // alone must refuse (root only: it takes a setuid child).
    let root = fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        println!("not root: the other-uid client is not tried (the unit test covers the check)");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    fs::set_permissions(&phone.state, fs::Permissions::from_mode(0o711)).expect("chmod dir");
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).expect("chmod socket");
    let script = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
b = b'{"op":"hello","version":1}'
try:
    s.sendall(struct.pack('>I', len(b)) + b)
except OSError:
    pass  # refused before it spoke: the answer is still there to read
h = s.recv(4)
n = struct.unpack('>I', h)[0] if len(h) == 4 else 0
d = b''
while len(d) < n:
    c = s.recv(n - len(d))
    if not c:
        break
    d += c
print(d.decode())
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&socket)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("python3 runs");
    let said = text(&out.stdout);
    assert!(said.contains("forbidden"), "{said}{}", text(&out.stderr));
    assert!(!said.contains("udp"), "{said}");
}

/// `tryst netcheck` against a running `tryst server --probe-listen`, on
/// loopback: the address the trigger server observes is the socket's own,
/// the mapping is endpoint-independent, the echo from the other port gets
/// in, the mapping survives the shortest probe; without a probe port the
/// mapping is unknown (not guessed).
pub fn netcheck_against_a_running_server_reports_its_address_and_mapping() {
    let dir = scratch("netcheck");
    let server = Server::start(&dir, &["--probe-listen", "127.0.0.1:0"]);
    let mut cmd = tryst_for("netcheck");
    cmd.arg("netcheck")
        .args(server.terminal_flags("probe", &dir.join("probe-state")))
        .args(["--max-idle", "5s", "--json"]);
    let out = run_within(cmd, Duration::from_secs(40)).expect("netcheck ends");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(text(&out.stdout).trim()).expect("one JSON object");
    let observed = report["observed"].as_str().expect("an observed address");
    assert!(observed.starts_with("127.0.0.1:"), "{report}");
    assert_eq!(report["probe_observed"], report["observed"], "{report}");
    assert_eq!(report["mapping"], "endpoint-independent", "{report}");
    assert_eq!(
        report["filtering"], "endpoint-independent or address-dependent",
        "{report}"
    );
    assert!(
        report["survived_secs"].as_u64().is_some_and(|s| s >= 5),
        "{report}"
    );
    assert_eq!(report["verdict"], "direct likely", "{report}");
    // Text form, against a server without a probe port.
    std::fs::create_dir_all(dir.join("plain")).expect("scratch dir");
    let plain = Server::start(&dir.join("plain"), &[]);
    let mut cmd = tryst_for("netcheck");
    cmd.arg("netcheck")
        .args(plain.terminal_flags("probe2", &dir.join("probe2-state")))
        .args(["--max-idle", "1s"]);
    let out = run_within(cmd, Duration::from_secs(40)).expect("netcheck ends");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("observed address: 127.0.0.1:"), "{said}");
    assert!(said.contains("mapping: unknown"), "{said}");
    assert!(said.contains("verdict: "), "{said}");
}

/// One `#[test]` per flow of [`self`], each run with the mix `$mix`
/// (the invoking file declares `mod support` from `e2e_support/mod.rs`).
#[macro_export]
macro_rules! terminal_flows {
    ($mix:expr) => {
        #[test]
        fn netcheck_against_a_running_server_reports_its_address_and_mapping() {
            support::with_mix($mix, support::terminal_flows::netcheck_against_a_running_server_reports_its_address_and_mapping);
        }
        #[test]
        fn s511_refused_request_exits_3_and_leaves_no_trace_of_the_target() {
            support::with_mix($mix, support::terminal_flows::s511_refused_request_exits_3_and_leaves_no_trace_of_the_target);
        }
        #[test]
        fn s511_operator_sees_the_real_refusal_reasons_the_requesters_never_do() {
            support::with_mix($mix, support::terminal_flows::s511_operator_sees_the_real_refusal_reasons_the_requesters_never_do);
        }
        #[test]
        fn s1606_sessions_shows_each_sides_end_and_filters_live_name_since() {
            support::with_mix($mix, support::terminal_flows::s1606_sessions_shows_each_sides_end_and_filters_live_name_since);
        }
        #[test]
        fn first_embodiment_allow_edits_apply_to_the_next_request_of_a_running_terminal() {
            support::with_mix($mix, support::terminal_flows::first_embodiment_allow_edits_apply_to_the_next_request_of_a_running_terminal);
        }
        #[test]
        fn second_embodiment_the_terminal_judges_the_named_requester() {
            support::with_mix($mix, support::terminal_flows::second_embodiment_the_terminal_judges_the_named_requester);
        }
        #[test]
        fn allow_edits_the_stored_list_when_no_terminal_runs_and_the_key_is_private() {
            support::with_mix($mix, support::terminal_flows::allow_edits_the_stored_list_when_no_terminal_runs_and_the_key_is_private);
        }
        #[test]
        fn s1604_forced_end_stops_both_terminals() {
            support::with_mix($mix, support::terminal_flows::s1604_forced_end_stops_both_terminals);
        }
        #[test]
        fn s1605_forced_end_names_the_terminal_that_did_not_confirm() {
            support::with_mix($mix, support::terminal_flows::s1605_forced_end_names_the_terminal_that_did_not_confirm);
        }
        #[test]
        fn s1606_a_frozen_targets_late_end_report_joins_the_record() {
            support::with_mix($mix, support::terminal_flows::s1606_a_frozen_targets_late_end_report_joins_the_record);
        }
        #[test]
        fn s207_a_50_mb_file_crosses_the_direct_path_with_matching_sha256() {
            support::with_mix($mix, support::terminal_flows::s207_a_50_mb_file_crosses_the_direct_path_with_matching_sha256);
        }
        #[test]
        fn relay_carries_a_file_when_no_direct_peer_packet_passes() {
            support::with_mix($mix, support::terminal_flows::relay_carries_a_file_when_no_direct_peer_packet_passes);
        }
        #[test]
        fn relay_over_tcp_carries_a_file_when_the_phone_has_no_udp() {
            support::with_mix($mix, support::terminal_flows::relay_over_tcp_carries_a_file_when_the_phone_has_no_udp);
        }
        #[test]
        fn standalone_relay_carries_a_file_for_a_server_with_relay_at() {
            support::with_mix($mix, support::terminal_flows::standalone_relay_carries_a_file_for_a_server_with_relay_at);
        }
        #[test]
        fn relay_stops_carrying_a_forced_session_whose_peers_ignore_the_end() {
            support::with_mix($mix, support::terminal_flows::relay_stops_carrying_a_forced_session_whose_peers_ignore_the_end);
        }
        #[test]
        fn standalone_relay_linked_stops_carrying_a_forced_session() {
            support::with_mix($mix, support::terminal_flows::standalone_relay_linked_stops_carrying_a_forced_session);
        }
        #[test]
        fn standalone_relay_linked_returns_the_relayed_bytes_into_the_record() {
            support::with_mix($mix, support::terminal_flows::standalone_relay_linked_returns_the_relayed_bytes_into_the_record);
        }
        #[test]
        fn standalone_relay_refuses_a_link_from_a_server_it_was_not_given() {
            support::with_mix($mix, support::terminal_flows::standalone_relay_refuses_a_link_from_a_server_it_was_not_given);
        }
        #[test]
        fn s1504_a_transfer_still_running_at_70_percent_is_extended_and_completes() {
            support::with_mix($mix, support::terminal_flows::s1504_a_transfer_still_running_at_70_percent_is_extended_and_completes);
        }
        #[test]
        fn a_terminal_without_a_receive_dir_keeps_no_file() {
            support::with_mix($mix, support::terminal_flows::a_terminal_without_a_receive_dir_keeps_no_file);
        }
        #[test]
        fn s1605_a_forced_end_cuts_a_running_transfer_and_stores_no_file() {
            support::with_mix($mix, support::terminal_flows::s1605_a_forced_end_cuts_a_running_transfer_and_stores_no_file);
        }
        #[test]
        fn resume_after_ctrl_c_of_the_sending_connect_sends_only_the_rest() {
            support::with_mix($mix, support::terminal_flows::resume_after_ctrl_c_of_the_sending_connect_sends_only_the_rest);
        }
        #[test]
        fn kept_partials_are_capped_per_peer_and_another_peers_partial_survives() {
            support::with_mix($mix, support::terminal_flows::kept_partials_are_capped_per_peer_and_another_peers_partial_survives);
        }
        #[test]
        fn resume_after_a_duration_cut_sends_only_the_rest() {
            support::with_mix($mix, support::terminal_flows::resume_after_a_duration_cut_sends_only_the_rest);
        }
        #[test]
        fn resume_after_kill_9_of_the_receiving_daemon_sends_only_the_rest() {
            support::with_mix($mix, support::terminal_flows::resume_after_kill_9_of_the_receiving_daemon_sends_only_the_rest);
        }
        #[test]
        fn s207_fetch_a_phone_fetches_two_pictures_and_a_folder_from_homes_share() {
            support::with_mix($mix, support::terminal_flows::s207_fetch_a_phone_fetches_two_pictures_and_a_folder_from_homes_share);
        }
        #[test]
        fn fetch_list_prints_the_share_without_hidden_files_or_symlinks() {
            support::with_mix($mix, support::terminal_flows::fetch_list_prints_the_share_without_hidden_files_or_symlinks);
        }
        #[test]
        fn fetch_an_escaping_name_a_symlink_out_and_a_hidden_file_get_the_one_answer() {
            support::with_mix($mix, support::terminal_flows::fetch_an_escaping_name_a_symlink_out_and_a_hidden_file_get_the_one_answer);
        }
        #[test]
        fn ping_a_permitted_peer_prints_one_pong_a_ping_and_exits_0() {
            support::with_mix($mix, support::terminal_flows::ping_a_permitted_peer_prints_one_pong_a_ping_and_exits_0);
        }
        #[test]
        fn registration_limits_let_a_household_ping_back_to_back() {
            support::with_mix($mix, support::terminal_flows::registration_limits_let_a_household_ping_back_to_back);
        }
        #[test]
        fn a_rate_limited_registration_says_so_and_when_to_retry() {
            support::with_mix($mix, support::terminal_flows::a_rate_limited_registration_says_so_and_when_to_retry);
        }
        #[test]
        fn a_recv_dir_that_is_not_writable_is_refused_at_start() {
            support::with_mix($mix, support::terminal_flows::a_recv_dir_that_is_not_writable_is_refused_at_start);
        }
        #[test]
        fn names_are_one_in_every_spelling_and_release_frees_a_lost_keys_name() {
            support::with_mix($mix, support::terminal_flows::names_are_one_in_every_spelling_and_release_frees_a_lost_keys_name);
        }
        #[test]
        fn a_receiver_that_cannot_write_says_so_and_never_names_its_partial_file() {
            support::with_mix($mix, support::terminal_flows::a_receiver_that_cannot_write_says_so_and_never_names_its_partial_file);
        }
        #[test]
        fn a_fetch_cut_by_kill_9_of_the_fetcher_resumes_from_what_it_holds() {
            support::with_mix($mix, support::terminal_flows::a_fetch_cut_by_kill_9_of_the_fetcher_resumes_from_what_it_holds);
        }
        #[test]
        fn ping_a_peer_that_does_not_permit_gets_connects_uniform_refusal() {
            support::with_mix($mix, support::terminal_flows::ping_a_peer_that_does_not_permit_gets_connects_uniform_refusal);
        }
        #[test]
        fn send_several_files_and_a_folder_in_one_connect() {
            support::with_mix($mix, support::terminal_flows::send_several_files_and_a_folder_in_one_connect);
        }
        #[test]
        fn a_missing_required_argument_is_named_in_the_error() {
            support::with_mix($mix, support::terminal_flows::a_missing_required_argument_is_named_in_the_error);
        }
        #[test]
        fn a_terminal_fails_over_to_the_next_session_server_when_one_is_down_or_refuses() {
            support::with_mix($mix, support::terminal_flows::a_terminal_fails_over_to_the_next_session_server_when_one_is_down_or_refuses);
        }
        #[test]
        fn a_refused_tcp_connection_is_reported_as_refused() {
            support::with_mix($mix, support::terminal_flows::a_refused_tcp_connection_is_reported_as_refused);
        }
        #[test]
        fn a_wrong_server_key_is_reported_as_such() {
            support::with_mix($mix, support::terminal_flows::a_wrong_server_key_is_reported_as_such);
        }
        #[test]
        fn a_server_that_never_answers_the_handshake_is_reported() {
            support::with_mix($mix, support::terminal_flows::a_server_that_never_answers_the_handshake_is_reported);
        }
        #[test]
        fn a_trigger_port_that_never_acknowledges_is_reported() {
            support::with_mix($mix, support::terminal_flows::a_trigger_port_that_never_acknowledges_is_reported);
        }
        #[test]
        fn a_daemon_run_terminal_sends_through_its_control_socket_on_its_one_registration() {
            support::with_mix($mix, support::terminal_flows::a_daemon_run_terminal_sends_through_its_control_socket_on_its_one_registration);
        }
        #[test]
        fn the_control_socket_refuses_a_ninth_client_as_busy() {
            support::with_mix($mix, support::terminal_flows::the_control_socket_refuses_a_ninth_client_as_busy);
        }
        #[test]
        fn the_control_socket_refuses_garbage_and_clients_of_another_user() {
            support::with_mix($mix, support::terminal_flows::the_control_socket_refuses_garbage_and_clients_of_another_user);
        }
        #[test]
        fn live_stream_of_a_20ms_cadence_arrives_whole_and_in_order_on_loopback() {
            support::with_mix($mix, support::terminal_flows::live_stream_of_a_20ms_cadence_arrives_whole_and_in_order_on_loopback);
        }
        #[test]
        fn s1504_a_live_only_session_outlives_its_duration_and_a_silent_one_ends_at_it() {
            support::with_mix($mix, support::terminal_flows::s1504_a_live_only_session_outlives_its_duration_and_a_silent_one_ends_at_it);
        }
        #[test]
        fn live_ctrl_c_ends_the_session_and_the_daemon_kills_its_source() {
            support::with_mix($mix, support::terminal_flows::live_ctrl_c_ends_the_session_and_the_daemon_kills_its_source);
        }
        #[test]
        fn live_request_to_a_terminal_without_a_source_is_no_such_stream() {
            support::with_mix($mix, support::terminal_flows::live_request_to_a_terminal_without_a_source_is_no_such_stream);
        }
        #[test]
        fn the_servers_default_duration_and_the_extension_flags_are_flags() {
            support::with_mix($mix, support::terminal_flows::the_servers_default_duration_and_the_extension_flags_are_flags);
        }
        #[test]
        fn session_durations_are_checked_and_a_clamp_is_reported() {
            support::with_mix($mix, support::terminal_flows::session_durations_are_checked_and_a_clamp_is_reported);
        }
    };
}
