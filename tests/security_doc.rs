//! SECURITY.md names, for every defence, the tests that fail without it.
//! This keeps those names true: each must be a test function in the tree.

use std::fs;
use std::path::Path;

use tryst_tests::repo_root;

/// Every `.rs` file under `dir`, skipping build output.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_test_security_md_names_exists() {
    let root = repo_root();
    let doc = fs::read_to_string(root.join("SECURITY.md")).expect("SECURITY.md is readable");
    let mut files = Vec::new();
    for dir in ["core", "io-std", "io-tokio", "tests", "ffi"] {
        rust_files(&root.join(dir), &mut files);
    }
    let source: String = files
        .iter()
        .filter_map(|f| fs::read_to_string(f).ok())
        .collect();
    let named: Vec<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.len() > 12
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    assert!(named.len() > 40, "SECURITY.md names its tests");
    for name in named {
        assert!(
            source.contains(&format!("fn {name}(")),
            "SECURITY.md names `{name}`, which is no test in the tree"
        );
    }
}
