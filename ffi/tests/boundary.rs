//! The C boundary under AddressSanitizer and UndefinedBehaviorSanitizer:
//! `ffi/tests/c/boundary.c`, compiled with Debian's clang
//! (`-fsanitize=address,undefined`, no recovery) against the static
//! library, must run clean (bad pointers as null, short buffers, wrong
//! lengths, misaligned and zeroed memory, use after close, garbage
//! datagrams and streams).

mod support;

use std::process::Command;

#[test]
fn ffi_boundary_is_clean_under_asan_and_ubsan() {
    if !support::require("clang") {
        return;
    }
    let dir = tempfile_dir();
    let exe = dir.join("boundary");
    support::compile(
        "clang",
        &[
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer",
        ],
        &support::ffi_dir().join("tests/c/boundary.c"),
        &exe,
    );
    let run = Command::new(&exe)
        .env(
            "ASAN_OPTIONS",
            "detect_leaks=1:abort_on_error=0:halt_on_error=1",
        )
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        .output()
        .expect("the harness runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("boundary: all checks passed"), "{stdout}");
    assert!(!stderr.contains("Sanitizer"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory for the harness binary.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tryst-ffi-boundary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
