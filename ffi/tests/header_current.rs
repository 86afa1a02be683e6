//! The checked-in header `ffi/include/tryst.h` is what cbindgen makes of
//! the crate now: a stale header fails `cargo test --workspace`.
//! `TRYST_BLESS=1 cargo test -p tryst-ffi --test header_current` rewrites it.

use std::path::Path;

#[test]
fn the_checked_in_header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("utf-8");
    let path = crate_dir.join("include").join("tryst.h");
    if std::env::var_os("TRYST_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write the header");
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == generated,
        "ffi/include/tryst.h is stale: regenerate it with\n    \
         TRYST_BLESS=1 cargo test -p tryst-ffi --test header_current\nand commit it"
    );
}
