//! Finding the static library and compiling C against it: shared by the
//! sanitizer harness (`ffi/tests/boundary.rs`) and the device test
//! (`tests/ffi_device.rs`, which includes this file by path).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The crate's directory (`ffi/`).
pub fn ffi_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .join("ffi")
}

/// Libraries the static library needs (`cargo rustc -p tryst-ffi --lib
/// --crate-type staticlib -- --print native-static-libs` lists them).
pub const NATIVE_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

/// `libtryst_ffi.a` as cargo built it beside the test binaries (the
/// crate's lib target is built whole, every crate type, before any test
/// that depends on it).
pub fn staticlib(profile_dir: &Path) -> PathBuf {
    for dir in [profile_dir.to_path_buf(), profile_dir.join("deps")] {
        let lib = dir.join("libtryst_ffi.a");
        if lib.exists() {
            return lib;
        }
    }
    panic!(
        "libtryst_ffi.a is missing under {}: cargo build -p tryst-ffi",
        profile_dir.display()
    );
}

/// The profile directory (`target/debug`) of the running test binary.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    // target/<profile>/deps/<test>
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Whether `tool` runs here.
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Skips (returns false) when `tool` is missing, except under CI, where
/// `.ci/run` installs it and a missing tool is a failure.
pub fn require(tool: &str) -> bool {
    if have(tool) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{tool} is missing (apt-get install {tool}); .ci/run installs it"
    );
    eprintln!("skipped: {tool} is not installed (apt-get install {tool})");
    false
}

/// Compiles `source` with `compiler` and `flags` against the static
/// library into `out`; panics with the compiler's output on failure.
pub fn compile(compiler: &str, flags: &[&str], source: &Path, out: &Path) {
    let lib = staticlib(&profile_dir());
    let result = Command::new(compiler)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-g"])
        .args(flags)
        .arg("-I")
        .arg(ffi_dir().join("include"))
        .arg(source)
        .arg(&lib)
        .args(NATIVE_LIBS)
        .arg("-o")
        .arg(out)
        .output()
        .expect("the C compiler runs");
    assert!(
        result.status.success(),
        "{compiler} {} failed:\n{}{}",
        source.display(),
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
}
