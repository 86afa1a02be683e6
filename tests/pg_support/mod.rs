//! A PostgreSQL database of its own for one test: created on the server
//! `TRYST_TEST_POSTGRES` names (`.ci/run` starts one and sets it) and
//! dropped at the end, so tests run in parallel. Without the variable the
//! caller skips, saying why.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

/// The variable that names the test server (a `postgres://` URL whose
/// role may create databases).
pub const ENV: &str = "TRYST_TEST_POSTGRES";

/// A database that is dropped with this value.
pub struct TestDb {
    /// Its URL (the server's, with this database's name).
    pub url: String,
    admin: String,
    name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, format!("?{q}")),
        None => (rest, String::new()),
    };
    let host = rest.split_once('/').map_or(rest, |(h, _)| h);
    format!("{scheme}://{host}/{db}{query}")
}

/// A fresh database for `test`, or `None` (after printing why) when
/// `TRYST_TEST_POSTGRES` is unset.
pub fn test_db(test: &str) -> Option<TestDb> {
    let Ok(admin) = std::env::var(ENV) else {
        eprintln!("skipped {test}: {ENV} is unset (`.ci/run` starts PostgreSQL and sets it)");
        return None;
    };
    let short: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(30)
        .collect::<String>()
        .to_ascii_lowercase();
    let name = format!(
        "tryst_t_{}_{}_{short}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut client = postgres::Client::connect(&admin, postgres::NoTls)
        .unwrap_or_else(|e| panic!("{ENV}={admin}: cannot connect: {e}"));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create the test database");
    Some(TestDb {
        url: with_database(&admin, &name),
        admin,
        name,
    })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
