//! End to end through the real `tryst` binary: the terminals' side (the
//! flows are in `e2e_support/terminal_flows.rs`; `interop_std` runs the
//! same flows with `tryst-std` in each place).
//!
//! Declared as a test of the `tryst-tokio` package (see its Cargo.toml) so
//! that `CARGO_BIN_EXE_tryst` names the binary that `cargo test` built.

#[path = "e2e_support/mod.rs"]
mod support;

terminal_flows!(support::Mix::TRYST);
