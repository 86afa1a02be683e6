//! The two binaries swapped in every place (issue 13): the end-to-end
//! flows of `e2e_terminal` (`e2e_support/terminal_flows.rs`, run there with
//! `tryst` everywhere) with `tryst-std` as the server, as the receiving
//! daemon, as the connecting terminal, and everywhere (the operator's flows
//! with `tryst-std` as the servers, kill -9 included, are `interop_servers`). Each place reads and writes the files the
//! other binary wrote (keys, state dirs, the server's data dir); the
//! one-shot tools' interop is `tryst-std`'s own `interop_std` test.
//!
//! Declared as a test of the `tryst-tokio` package; `tryst-std` is the
//! binary `cargo test --workspace` builds beside `tryst`.

#[path = "e2e_support/mod.rs"]
mod support;

use support::{Bin, Mix};

/// `tryst-std` runs the servers; `tryst` the terminals and tools.
mod std_server {
    use super::*;
    terminal_flows!(Mix {
        server: Bin::TrystStd,
        ..Mix::TRYST
    });
}

/// `tryst-std` runs the daemon that receives (and its `allow`).
mod std_daemon {
    use super::*;
    terminal_flows!(Mix {
        daemon: Bin::TrystStd,
        tool: Bin::TrystStd,
        ..Mix::TRYST
    });
}

/// `tryst-std` runs the connecting, sending terminal (and `end`).
mod std_connect {
    use super::*;
    terminal_flows!(Mix {
        connect: Bin::TrystStd,
        tool: Bin::TrystStd,
        ..Mix::TRYST
    });
}

/// `tryst-std` everywhere.
mod all_std {
    use super::*;
    terminal_flows!(Mix::STD);
}
