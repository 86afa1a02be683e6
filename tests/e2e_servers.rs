//! End to end through the real `tryst` binary: the operator's side (the
//! flows are in `e2e_support/server_flows.rs`; `interop_flows` runs the
//! same flows with `tryst-std` as the servers).
//!
//! Declared as a test of the `tryst-tokio` package (see its Cargo.toml) so
//! that `CARGO_BIN_EXE_tryst` names the binary that `cargo test` built.

#[path = "e2e_support/mod.rs"]
mod support;

server_flows!(support::Mix::TRYST);
