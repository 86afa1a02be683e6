//! The operator's end-to-end flows that touch the store
//! (`e2e_support/server_flows.rs`) with the servers and tools on a
//! PostgreSQL database (`--store postgres://...`), each flow on a database
//! of its own: kill -9 loses no acknowledged binding or record, `tryst
//! end` reaches the server through the shared command table, enrolments,
//! the split servers, extensions. Once with `tryst` everywhere, once with
//! `tryst-std` running the servers. Skipped, saying why, without
//! `TRYST_TEST_POSTGRES` (`.ci/run` sets it).
//!
//! Declared as a test of the `tryst-tokio` package (see its Cargo.toml).

#[path = "e2e_support/mod.rs"]
mod support;

mod tryst {
    use super::support;
    use crate::server_flows_on_postgres;
    server_flows_on_postgres!(support::Mix::TRYST);
}

mod tryst_std_servers {
    use super::support;
    use crate::server_flows_on_postgres;
    server_flows_on_postgres!(support::Mix {
        server: support::Bin::TrystStd,
        ..support::Mix::TRYST
    });
}
