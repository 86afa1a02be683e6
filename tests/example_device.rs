//! The embedding example (`io-std/examples/device.rs`: the blocking std
//! terminal inside a vendor's own program) run for real: it registers with
//! a `tryst server`, allows `phone`, and `tryst connect --send` delivers a
//! file into its receive folder with a matching SHA-256.
//!
//! Declared as a test of the `tryst-tokio` package; the example is built
//! beside the binaries by `cargo test --workspace` (or
//! `cargo build -p tryst-std --example device`).

#[path = "e2e_support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;

use support::cluster::{hex, start_server};
use support::terminal_flows::{sha256_hex, write_test_file};
use support::Proc;

/// Where cargo put the example: `target/<profile>/examples/device`.
fn example() -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_tryst"))
        .with_file_name("examples")
        .join("device");
    assert!(
        path.exists(),
        "{} is missing: cargo build -p tryst-std --example device (or cargo test --workspace)",
        path.display()
    );
    path
}

#[test]
fn the_embedding_example_registers_allows_a_peer_and_stores_its_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let server = start_server(&dir.join("server"), &[], "server.log");
    let key = hex(&server.key.0);
    let inbox = dir.join("inbox");
    let mut device = Command::new(example());
    device.args([
        "home",
        &server.control.to_string(),
        &server.trigger.to_string(),
        &key,
        dir.join("home-state").to_str().expect("utf-8"),
        "phone",
        inbox.to_str().expect("utf-8"),
    ]);
    let mut device = Proc::spawn(device, dir.join("device.log"));
    device.expect_line("online as home");
    let file = dir.join("picture.bin");
    write_test_file(&file, 20 << 20);
    let digest = server.send_verified(&dir.join("phone-state"), "phone", "home", &file);
    let (status, stdout, stderr) = device.finish();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("stored "), "{stdout}");
    assert_eq!(sha256_hex(&inbox.join("picture.bin")), digest);
}
