//! The C example (`ffi/examples/device.c`: plain BSD sockets on the C API
//! of `tryst-ffi`) run for real: built with gcc against the static
//! library, it registers with a `tryst server`, allows `phone`, answers
//! the trigger, and `tryst connect --send` delivers a file into its folder
//! with a matching SHA-256.
//!
//! Declared as a test of the `tryst-tokio` package (which builds the
//! static library as its dev-dependency, and the `tryst` binary).

#[path = "e2e_support/mod.rs"]
mod support;

#[path = "../ffi/tests/support/mod.rs"]
mod ffi;

use std::process::Command;

use support::cluster::{hex, start_server};
use support::terminal_flows::{sha256_hex, write_test_file};
use support::Proc;

#[test]
fn ffi_c_device_registers_answers_the_trigger_and_receives_a_file_intact() {
    if !ffi::require("gcc") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let exe = dir.join("device");
    ffi::compile(
        "gcc",
        &["-O2"],
        &ffi::ffi_dir().join("examples/device.c"),
        &exe,
    );
    let server = start_server(&dir.join("server"), &[], "server.log");
    let key = hex(&server.key.0);
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).expect("inbox");
    let mut device = Command::new(&exe);
    device.args([
        "home",
        &server.control.to_string(),
        &server.trigger.to_string(),
        &key,
        "phone",
        inbox.to_str().expect("utf-8"),
    ]);
    let mut device = Proc::spawn(device, dir.join("device.log"));
    device.expect_line("online as home");
    let file = dir.join("picture.bin");
    write_test_file(&file, 3 << 20);
    let digest = server.send_verified(&dir.join("phone-state"), "phone", "home", &file);
    let (status, stdout, stderr) = device.finish();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("SHA-256 {digest} verified")),
        "{stdout}"
    );
    assert_eq!(sha256_hex(&inbox.join("picture.bin")), digest);
    // Nothing else was left in the folder (the partial file was linked, then removed).
    let names: Vec<_> = std::fs::read_dir(&inbox)
        .expect("inbox")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("picture.bin")]);
}
