//! The operator's end-to-end flows (`e2e_support/server_flows.rs`) with
//! `tryst-std` running the servers (`server`, `session-server`,
//! `trigger-server`, the shared runners on the blocking driver) and
//! `tryst` everything else: same lines, exit codes and files as with
//! `tryst` everywhere (`e2e_servers`). Needs `cargo build -p tryst-std`
//! (or `cargo test --workspace`) first.

#[path = "e2e_support/mod.rs"]
mod support;

server_flows!(support::Mix {
    server: support::Bin::TrystStd,
    ..support::Mix::TRYST
});
