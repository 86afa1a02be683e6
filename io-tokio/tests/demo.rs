//! The README's first command: `tryst demo` runs the whole system on
//! loopback and exits 0 only if every step of its story did what it said.

use std::process::Command;

#[test]
fn demo_runs_every_flow_on_loopback_and_succeeds() {
    let output = Command::new(env!("CARGO_BIN_EXE_tryst"))
        .arg("demo")
        .output()
        .expect("the tryst binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for step in [
        "[801-804]",
        "[805-812]",
        "[S205-S207]",
        "[S1504-S1507]",
        "[814/815]",
        "[S511]",
        "[S1604/S1605]",
        "[S1606]",
        "every step did what it said.",
    ] {
        assert!(stdout.contains(step), "the story lacks {step}:\n{stdout}");
    }
    // Refused requests must never reveal TERM1's address to mallory: the
    // only lines naming TERM1's address are the notifications of permitted sessions.
    let refusals: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("mallory ->"))
        .collect();
    assert_eq!(refusals.len(), 2, "{stdout}");
    assert!(refusals
        .iter()
        .all(|l| l.contains("not permitted") && !l.contains("127.0.0.1")));
}
