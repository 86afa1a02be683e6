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

use std::time::{Duration, Instant};

use rand_core::OsRng;
use support::cluster::{online_term, start_server, Term, STEP};
use tryst_tokio::core::crypto::StaticKeypair;

/// Waits until `proc`'s log has a line with every one of `needles`.
async fn log_line(proc: &support::Proc, needles: &[&str]) {
    let deadline = Instant::now() + STEP;
    while !proc
        .log()
        .lines()
        .any(|l| needles.iter().all(|n| l.contains(n)))
    {
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?}:\n{}",
            proc.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two servers on one database: a name bound through one is held on the
/// other against another key (the other server applies the shared binding,
/// so it never tries to bind the name itself, which the database would
/// refuse and which would stop it), and the other server goes on serving.
#[test]
fn pg_a_name_bound_on_one_server_is_held_on_another_sharing_the_store() {
    let Some(db) = support::pg::test_db("pg_name_held_on_another") else {
        return;
    };
    support::with_store(&db.url, || {
        support::block_on(async {
            let tmp = tempfile::tempdir().expect("tempdir");
            let a = start_server(&tmp.path().join("a"), &[], "a.log");
            let b = start_server(&tmp.path().join("b"), &[], "b.log");
            let _home = online_term(&a, "term1", StaticKeypair::generate(&mut OsRng), &[]).await;
            log_line(&b.proc, &["binding from the shared store applied", "term1"]).await;
            let mut thief = Term::start(
                "term1",
                StaticKeypair::generate(&mut OsRng),
                &[],
                b.control,
                b.trigger,
                b.key,
            )
            .await;
            // Answered like any registration (no existence oracle).
            thief.registration_outcome().await;
            log_line(&b.proc, &["impersonation attempt"]).await;
            // B still serves: a new name registers and comes online there.
            let _other = online_term(&b, "term2", StaticKeypair::generate(&mut OsRng), &[]).await;
        });
    });
}
