//! The PostgreSQL store (`--store postgres://USER@HOST/DB`): the same
//! facts as the SQLite store, in a database several session servers share.
//!
//! - A name binding is decided by the database: `names.name` is the
//!   primary key, and a `NameBound` fact inserts with `ON CONFLICT DO
//!   NOTHING` and then checks the key in the same transaction; a name
//!   bound to another key fails the whole batch ([`StoreError::NameTaken`]),
//!   so nothing that follows it is acknowledged. Two servers never bind
//!   one name to two keys.
//! - Durability: each batch is one transaction, committed with the
//!   server's default `synchronous_commit = on` (on disk when `COMMIT`
//!   returns); [`PgStore::relax_durability`] turns that off for the
//!   heartbeat and command connection only.
//! - Each session row notes its `owner` (the server that started it, see
//!   [`PgStore::with_owner`]): a server restores only its own live
//!   sessions, and an `end` command is addressed to the owner.
//! - Schema migrations are numbered ([`MIGRATIONS`]); the `schema_version`
//!   table holds the versions applied, and every start applies the missing
//!   ones under an advisory lock (two servers starting at once migrate once).
//!
//! - Every statement is prepared once per connection and kept
//!   ([`Statements`], as `prepare_cached` on SQLite): a repeated statement
//!   is not parsed and planned again.
//!
//! The connection has no TLS: run it over a Unix socket or a trusted
//! network (see SECURITY.md).

use std::cell::RefCell;
use std::time::Duration;

use ::postgres::{Client, GenericClient, NoTls, Row, Statement};
use tryst_core::session_server::{SessionExtended, SessionFact, SessionStarted};
use tryst_core::time::Instant;
use tryst_core::wire::{PublicKey, SessionId};

use super::{
    hash_hex, id_hex, key_hex, now_us, parse_hash, parse_id, parse_key, reason_name,
    side_reason_name, to_i64, to_u32, to_u64, LogRow, OperatorCommand, Origin, PendingCommand,
    RefusalRow, ServerStore, ShardRow, SideEnd, StoreError, StoredEnrolCode,
};

/// The migrations, in order: migration `i` brings the schema to version `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // Version 1: everything the SQLite store holds, plus session owners,
    // addressed commands and one heartbeat per server.
    "CREATE TABLE names (
        name TEXT PRIMARY KEY,
        key TEXT NOT NULL,
        origin TEXT NOT NULL CHECK (origin IN ('tofu', 'enrolled')),
        bound_us BIGINT NOT NULL,
        seen_us BIGINT
    );
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL DEFAULT '',
        requester TEXT NOT NULL,
        requester_key TEXT NOT NULL,
        target TEXT NOT NULL,
        target_key TEXT NOT NULL,
        start_us BIGINT NOT NULL,
        duration_secs BIGINT NOT NULL,
        extensions BIGINT NOT NULL DEFAULT 0,
        extended_us BIGINT,
        ended BOOLEAN NOT NULL DEFAULT FALSE,
        end_us BIGINT,
        duration_us BIGINT,
        permitted_secs BIGINT,
        reason TEXT,
        bytes_r2t BIGINT,
        bytes_t2r BIGINT,
        r_reason TEXT, r_sent BIGINT, r_received BIGINT, r_duration_ms BIGINT,
        t_reason TEXT, t_sent BIGINT, t_received BIGINT, t_duration_ms BIGINT
    );
    CREATE INDEX sessions_live ON sessions (ended, owner, start_us);
    CREATE TABLE commands (
        id BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL,
        arg TEXT NOT NULL,
        target TEXT,
        created_us BIGINT NOT NULL,
        done_us BIGINT,
        result TEXT
    );
    CREATE TABLE heartbeats (
        server TEXT PRIMARY KEY,
        at_us BIGINT NOT NULL
    );",
    // Version 2: one-time enrolment codes (`tryst invite --enrol`), by the
    // hex SHA-256 of the code; spent once, by the first server to commit.
    "CREATE TABLE enrol_codes (
        hash TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_us BIGINT NOT NULL,
        expires_us BIGINT NOT NULL,
        used_us BIGINT,
        used_key TEXT
    );",
    // Version 3: refused requests with their reasons, for the operator.
    "CREATE TABLE refusals (
        id BIGSERIAL PRIMARY KEY,
        at_us BIGINT NOT NULL,
        requester TEXT NOT NULL,
        target TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX refusals_at ON refusals (at_us);",
    // Version 4: the bytes the relay carried for a session (its path:
    // relayed when some, direct otherwise).
    "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS relayed_bytes BIGINT;",
    // Version 5: the shard map, the trigger servers devices are spread
    // over (rendezvous hashing on the shard's name; `tryst shards add`).
    "CREATE TABLE IF NOT EXISTS trigger_shards (
        name TEXT PRIMARY KEY,
        link TEXT NOT NULL,
        udp TEXT NOT NULL,
        key TEXT NOT NULL,
        added_us BIGINT NOT NULL
    );",
];

/// The schema version this code writes.
pub const PG_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The advisory lock key the migrations run under ("tryst" in ASCII).
const MIGRATION_LOCK: i64 = 0x0074_7279_7374;

/// Whether `text` names a PostgreSQL store (a `postgres://` or
/// `postgresql://` URL).
pub fn is_postgres_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// `url` without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((auth, host)) => (Some(auth), host),
        None => (None, rest),
    };
    match auth {
        Some(auth) => {
            let user = auth.split_once(':').map_or(auth, |(u, _)| u);
            format!("{scheme}://{user}@{host}")
        }
        None => format!("{scheme}://{host}"),
    }
}

/// The statements one connection prepared, by their SQL text: each is
/// parsed once per connection (a prepared statement lives as long as its
/// session, whatever the transactions around it do). Bounded by the
/// store's own SQL: a fixed set of texts.
#[derive(Default)]
struct Statements(std::collections::HashMap<String, Statement>);

impl Statements {
    /// `sql` prepared on `client`'s connection, once.
    fn get(
        &mut self,
        client: &mut impl GenericClient,
        sql: &str,
    ) -> Result<Statement, ::postgres::Error> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql)?;
        self.0.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// [`Statements::get`], then runs it in `tx`.
fn execute_cached(
    tx: &mut ::postgres::Transaction<'_>,
    statements: &mut Statements,
    sql: &str,
    params: &[&(dyn ::postgres::types::ToSql + Sync)],
) -> Result<u64, ::postgres::Error> {
    let statement = statements.get(tx, sql)?;
    tx.execute(&statement, params)
}

/// [`Statements::get`], then its one row in `tx`.
fn query_one_cached(
    tx: &mut ::postgres::Transaction<'_>,
    statements: &mut Statements,
    sql: &str,
    params: &[&(dyn ::postgres::types::ToSql + Sync)],
) -> Result<Row, ::postgres::Error> {
    let statement = statements.get(tx, sql)?;
    tx.query_one(&statement, params)
}

/// A connection to the PostgreSQL store.
pub struct PgStore {
    client: RefCell<Client>,
    /// What `client` prepared.
    statements: RefCell<Statements>,
    /// The URL without its password (for errors).
    shown: String,
    /// Who this server is in `sessions.owner`, `commands.target` and
    /// `heartbeats.server` (empty for the one-shot tools).
    owner: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.shown)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` and brings the schema up to date (for the
    /// servers and `enroll`).
    pub fn create(url: &str) -> Result<PgStore, StoreError> {
        let store = PgStore::connect(url)?;
        store.migrate()?;
        Ok(store)
    }

    /// Connects to `url`, whose schema must exist (for `sessions`, `end`).
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let store = PgStore::connect(url)?;
        let version = store.version()?;
        if version == 0 {
            return Err(StoreError::MissingDatabase(store.shown.clone()));
        }
        if version > PG_SCHEMA_VERSION {
            return Err(StoreError::TooNew(version));
        }
        Ok(store)
    }

    fn connect(url: &str) -> Result<PgStore, StoreError> {
        let shown = redact(url);
        let client = Client::connect(url, NoTls).map_err(|source| StoreError::Postgres {
            url: shown.clone(),
            source,
        })?;
        Ok(PgStore {
            client: RefCell::new(client),
            statements: RefCell::default(),
            shown,
            owner: String::new(),
        })
    }

    /// The same store as server `owner` (stable across its restarts; the
    /// servers use their control address): it restores only the live
    /// sessions it started, takes the commands addressed to it, and beats
    /// its own heartbeat.
    pub fn with_owner(mut self, owner: &str) -> PgStore {
        owner.clone_into(&mut self.owner);
        self
    }

    fn pg(&self, source: ::postgres::Error) -> StoreError {
        StoreError::Postgres {
            url: self.shown.clone(),
            source,
        }
    }

    fn query(
        &self,
        sql: &str,
        params: &[&(dyn ::postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let mut client = self.client.borrow_mut();
        let statement = self
            .statements
            .borrow_mut()
            .get(&mut *client, sql)
            .map_err(|e| self.pg(e))?;
        client.query(&statement, params).map_err(|e| self.pg(e))
    }

    fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ::postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let mut client = self.client.borrow_mut();
        let statement = self
            .statements
            .borrow_mut()
            .get(&mut *client, sql)
            .map_err(|e| self.pg(e))?;
        client.execute(&statement, params).map_err(|e| self.pg(e))
    }

    /// The highest schema version applied (0: none).
    fn version(&self) -> Result<i64, StoreError> {
        let exists = self.query(
            "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'schema_version'",
            &[],
        )?;
        if exists.is_empty() {
            return Ok(0);
        }
        let rows = self.query("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)))
    }

    /// Applies the missing migrations, each in the one transaction that
    /// also notes its version, under an advisory lock.
    fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(|e| self.pg(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(|e| self.pg(e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                version BIGINT PRIMARY KEY,
                applied_us BIGINT NOT NULL
            )",
        )
        .map_err(|e| self.pg(e))?;
        let current: i64 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
            .map_err(|e| self.pg(e))?
            .get(0);
        if current > PG_SCHEMA_VERSION {
            return Err(StoreError::TooNew(current));
        }
        for (i, migration) in MIGRATIONS.iter().enumerate() {
            let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
            if version <= current {
                continue;
            }
            tx.batch_execute(migration).map_err(|e| self.pg(e))?;
            tx.execute(
                "INSERT INTO schema_version (version, applied_us) VALUES ($1, $2)",
                &[&version, &to_i64(now_us())],
            )
            .map_err(|e| self.pg(e))?;
        }
        tx.commit().map_err(|e| self.pg(e))
    }

    /// Every applied schema version, oldest first (for tests and operators).
    pub fn applied_versions(&self) -> Result<Vec<i64>, StoreError> {
        Ok(self
            .query("SELECT version FROM schema_version ORDER BY version", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }
}

fn side_values(
    side: Option<tryst_core::session_server::SideReport>,
) -> (Option<&'static str>, Option<i64>, Option<i64>, Option<i64>) {
    match side {
        Some(s) => (
            Some(side_reason_name(s.reason)),
            Some(to_i64(s.bytes_sent)),
            Some(to_i64(s.bytes_received)),
            Some(to_i64(s.duration_ms)),
        ),
        None => (None, None, None, None),
    }
}

/// Stores one fact inside `tx`.
fn record_fact(
    tx: &mut ::postgres::Transaction<'_>,
    statements: &mut Statements,
    owner: &str,
    fact: &SessionFact,
) -> Result<Result<(), String>, ::postgres::Error> {
    match fact {
        SessionFact::NameBound { name, key } => {
            let hex = key_hex(key);
            execute_cached(
                tx,
                statements,
                "INSERT INTO names (name, key, origin, bound_us) VALUES ($1, $2, 'tofu', $3)
                 ON CONFLICT (name) DO NOTHING",
                &[name, &hex, &to_i64(now_us())],
            )?;
            // Whoever committed first holds the name; the unique key made
            // this insert wait for it.
            let bound: String = query_one_cached(
                tx,
                statements,
                "SELECT key FROM names WHERE name = $1",
                &[name],
            )?
            .get(0);
            if bound != hex {
                return Ok(Err(name.clone()));
            }
        }
        SessionFact::EnrolCodeUsed { name, key, hash } => {
            let hex = key_hex(key);
            // Spent once: a second server spending the same code updates
            // nothing, and its batch fails like a name taken.
            let spent = execute_cached(
                tx,
                statements,
                "UPDATE enrol_codes SET used_us = $3, used_key = $4
                 WHERE hash = $1 AND name = $2 AND used_us IS NULL",
                &[&hash_hex(hash), name, &to_i64(now_us()), &hex],
            )?;
            if spent != 1 {
                return Ok(Err(name.clone()));
            }
            execute_cached(
                tx,
                statements,
                "INSERT INTO names (name, key, origin, bound_us) VALUES ($1, $2, 'enrolled', $3)
                 ON CONFLICT (name) DO NOTHING",
                &[name, &hex, &to_i64(now_us())],
            )?;
            let bound: String = query_one_cached(
                tx,
                statements,
                "SELECT key FROM names WHERE name = $1",
                &[name],
            )?
            .get(0);
            if bound != hex {
                return Ok(Err(name.clone()));
            }
        }
        SessionFact::NameSeen { name, at } => {
            execute_cached(
                tx,
                statements,
                "UPDATE names SET seen_us = $2 WHERE name = $1",
                &[name, &to_i64(at.as_micros())],
            )?;
        }
        SessionFact::NameUnbound { name, key } => {
            execute_cached(
                tx,
                statements,
                "DELETE FROM names WHERE name = $1 AND key = $2",
                &[name, &key_hex(key)],
            )?;
        }
        SessionFact::SessionStarted(s) => {
            execute_cached(
                tx,
                statements,
                "INSERT INTO sessions (id, owner, requester, requester_key, target, target_key,
                 start_us, duration_secs) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &id_hex(&s.session_id),
                    &owner,
                    &s.requester,
                    &key_hex(&s.requester_key),
                    &s.target,
                    &key_hex(&s.target_key),
                    &to_i64(s.start.as_micros()),
                    &i64::from(s.duration_secs),
                ],
            )?;
        }
        SessionFact::SessionExtended(x) => {
            execute_cached(
                tx,
                statements,
                "UPDATE sessions SET duration_secs = $2, extensions = $3, extended_us = $4
                 WHERE id = $1 AND NOT ended",
                &[
                    &id_hex(&x.session_id),
                    &i64::from(x.duration_secs),
                    &i64::from(x.extensions),
                    &to_i64(x.at.as_micros()),
                ],
            )?;
        }
        SessionFact::LateReport(l) => {
            let (side, sent_col, received_col) = super::late_columns(l.party);
            let (reason, sent, received, ms) = side_values(Some(l.report));
            execute_cached(
                tx,
                statements,
                &format!(
                    "UPDATE sessions SET {side}_reason = $2, {side}_sent = $3,
                     {side}_received = $4, {side}_duration_ms = $5,
                     {sent_col} = GREATEST(COALESCE({sent_col}, 0), $3),
                     {received_col} = GREATEST(COALESCE({received_col}, 0), $4)
                     WHERE id = $1 AND {side}_reason IS NULL"
                ),
                &[&id_hex(&l.session_id), &reason, &sent, &received, &ms],
            )?;
        }
        SessionFact::SessionRecord(r) => {
            let id = id_hex(&r.session_id);
            execute_cached(
                tx,
                statements,
                "INSERT INTO sessions (id, owner, requester, requester_key, target, target_key,
                 start_us, duration_secs) VALUES ($1, $2, $3, '', $4, '', $5, $6)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &id,
                    &owner,
                    &r.requester,
                    &r.target,
                    &to_i64(r.start.as_micros()),
                    &i64::from(r.permitted_secs),
                ],
            )?;
            let (rr, rs, rv, rd) = side_values(r.requester_side);
            let (tr, ts, tv, td) = side_values(r.target_side);
            execute_cached(
                tx,
                statements,
                "UPDATE sessions SET ended = TRUE, end_us = $2, duration_us = $3, permitted_secs = $4,
                 extensions = $5, reason = $6, bytes_r2t = $7, bytes_t2r = $8,
                 r_reason = $9, r_sent = $10, r_received = $11, r_duration_ms = $12,
                 t_reason = $13, t_sent = $14, t_received = $15, t_duration_ms = $16
                 WHERE id = $1",
                &[
                    &id,
                    &to_i64(r.end.as_micros()),
                    &to_i64(u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX)),
                    &i64::from(r.permitted_secs),
                    &i64::from(r.extensions),
                    &reason_name(r.reason),
                    &to_i64(r.bytes_requester_to_target()),
                    &to_i64(r.bytes_target_to_requester()),
                    &rr,
                    &rs,
                    &rv,
                    &rd,
                    &tr,
                    &ts,
                    &tv,
                    &td,
                ],
            )?;
        }
    }
    Ok(Ok(()))
}

impl ServerStore for PgStore {
    fn record(&mut self, facts: &[SessionFact]) -> Result<(), StoreError> {
        let owner = self.owner.clone();
        let mut client = self.client.borrow_mut();
        let mut statements = self.statements.borrow_mut();
        let mut tx = client.transaction().map_err(|e| self.pg(e))?;
        for fact in facts {
            if let Err(name) =
                record_fact(&mut tx, &mut statements, &owner, fact).map_err(|e| self.pg(e))?
            {
                // Dropping the transaction rolls the whole batch back.
                return Err(StoreError::NameTaken(name));
            }
        }
        tx.commit().map_err(|e| self.pg(e))
    }

    fn bindings(&self) -> Result<Vec<(String, PublicKey, Origin)>, StoreError> {
        let rows = self.query("SELECT name, key, origin FROM names ORDER BY name", &[])?;
        rows.iter()
            .map(|r| {
                let origin = if r.get::<_, &str>(2) == "enrolled" {
                    Origin::Enrolled
                } else {
                    Origin::Tofu
                };
                Ok((r.get(0), parse_key(r.get(1))?, origin))
            })
            .collect()
    }

    fn key_of(&self, name: &str) -> Result<Option<PublicKey>, StoreError> {
        let rows = self.query("SELECT key FROM names WHERE name = $1", &[&name])?;
        rows.first().map(|r| parse_key(r.get(0))).transpose()
    }

    fn enroll(&self, name: &str, key: &PublicKey) -> Result<bool, StoreError> {
        let hex = key_hex(key);
        self.execute(
            "INSERT INTO names (name, key, origin, bound_us) VALUES ($1, $2, 'enrolled', $3)
             ON CONFLICT (name) DO NOTHING",
            &[&name, &hex, &to_i64(now_us())],
        )?;
        Ok(self.key_of(name)? == Some(*key))
    }

    fn add_enrol_code(&self, code: &StoredEnrolCode) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO enrol_codes (hash, name, created_us, expires_us) VALUES ($1, $2, $3, $4)",
            &[
                &hash_hex(&code.hash),
                &code.name,
                &to_i64(now_us()),
                &to_i64(code.expires_us),
            ],
        )?;
        Ok(())
    }

    fn enrol_codes(&self, now_us: u64) -> Result<Vec<StoredEnrolCode>, StoreError> {
        let rows = self.query(
            "SELECT hash, name, expires_us FROM enrol_codes
             WHERE used_us IS NULL AND expires_us > $1 ORDER BY created_us, hash",
            &[&to_i64(now_us)],
        )?;
        rows.iter()
            .map(|r| {
                Ok(StoredEnrolCode {
                    hash: parse_hash(r.get(0))?,
                    name: r.get(1),
                    expires_us: to_u64(r.get(2)),
                })
            })
            .collect()
    }

    fn seen_facts(&self) -> Result<Vec<SessionFact>, StoreError> {
        let now = now_us();
        self.execute(
            "UPDATE names SET seen_us = $1 WHERE seen_us IS NULL",
            &[&to_i64(now)],
        )?;
        let rows = self.query("SELECT name, seen_us FROM names ORDER BY name", &[])?;
        Ok(rows
            .iter()
            .map(|r| SessionFact::NameSeen {
                name: r.get(0),
                at: Instant::from_micros(r.get::<_, Option<i64>>(1).map_or(now, to_u64)),
            })
            .collect())
    }

    fn live_facts(&self) -> Result<Vec<SessionFact>, StoreError> {
        let rows = self.query(
            "SELECT id, requester, requester_key, target, target_key, start_us,
                    duration_secs, extensions, extended_us
             FROM sessions WHERE NOT ended AND owner = $1 ORDER BY start_us, id",
            &[&self.owner],
        )?;
        let mut facts = Vec::new();
        for r in &rows {
            let id: &str = r.get(0);
            let session_id =
                parse_id(id).ok_or_else(|| StoreError::Corrupt(format!("session id {id:?}")))?;
            let start = Instant::from_micros(to_u64(r.get(5)));
            let duration = to_u32(r.get(6));
            let extensions: i64 = r.get(7);
            facts.push(SessionFact::SessionStarted(SessionStarted {
                session_id,
                requester: r.get(1),
                requester_key: parse_key(r.get(2))?,
                target: r.get(3),
                target_key: parse_key(r.get(4))?,
                start,
                duration_secs: duration,
            }));
            if extensions > 0 {
                let extended: Option<i64> = r.get(8);
                facts.push(SessionFact::SessionExtended(SessionExtended {
                    session_id,
                    duration_secs: duration,
                    extensions: to_u32(extensions),
                    at: extended.map_or(start, |at| Instant::from_micros(to_u64(at))),
                }));
            }
        }
        Ok(facts)
    }

    fn log(&self) -> Result<Vec<LogRow>, StoreError> {
        let rows = self.query(
            "SELECT id, requester, target, start_us, duration_us,
                    COALESCE(permitted_secs, duration_secs), extensions,
                    COALESCE(bytes_r2t, 0), COALESCE(bytes_t2r, 0), reason, ended,
                    r_reason, r_duration_ms, t_reason, t_duration_ms, COALESCE(relayed_bytes, 0)
             FROM sessions ORDER BY start_us, id",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                let ended: bool = r.get(10);
                LogRow {
                    id: r.get(0),
                    requester: r.get(1),
                    target: r.get(2),
                    start_us: to_u64(r.get(3)),
                    duration_us: if ended {
                        r.get::<_, Option<i64>>(4).map(to_u64)
                    } else {
                        None
                    },
                    permitted_secs: to_u32(r.get(5)),
                    extensions: to_u32(r.get(6)),
                    bytes_r2t: to_u64(r.get(7)),
                    bytes_t2r: to_u64(r.get(8)),
                    reason: if ended { r.get(9) } else { None },
                    who_end: SideEnd::from_columns(r.get(11), r.get(12)),
                    whom_end: SideEnd::from_columns(r.get(13), r.get(14)),
                    relayed_bytes: to_u64(r.get(15)),
                }
            })
            .collect())
    }

    fn live_ids(&self) -> Result<Vec<String>, StoreError> {
        // The server asks at shutdown: its own live sessions. A one-shot
        // tool (no owner) sees every live session.
        let rows = self.query(
            "SELECT id FROM sessions WHERE NOT ended AND ($1 = '' OR owner = $1)
             ORDER BY start_us, id",
            &[&self.owner],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn find_sessions(&self, prefix: &str) -> Result<Vec<(String, bool)>, StoreError> {
        let rows = self.query(
            "SELECT id, ended FROM sessions WHERE left(id, length($1)) = $1 ORDER BY id LIMIT 2",
            &[&prefix],
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), !r.get::<_, bool>(1)))
            .collect())
    }

    fn relax_durability(&self) -> Result<(), StoreError> {
        self.execute("SET synchronous_commit = off", &[])?;
        Ok(())
    }

    fn set_heartbeat(&self, at_us: Option<u64>) -> Result<(), StoreError> {
        match at_us {
            Some(at) => self.execute(
                "INSERT INTO heartbeats (server, at_us) VALUES ($1, $2)
                 ON CONFLICT (server) DO UPDATE SET at_us = excluded.at_us",
                &[&self.owner, &to_i64(at)],
            )?,
            None => self.execute("DELETE FROM heartbeats WHERE server = $1", &[&self.owner])?,
        };
        Ok(())
    }

    fn server_running(&self, fresh: Duration) -> Result<bool, StoreError> {
        let fresh = u64::try_from(fresh.as_micros()).unwrap_or(u64::MAX);
        let since = to_i64(now_us().saturating_sub(fresh));
        let rows = self.query("SELECT 1 FROM heartbeats WHERE at_us >= $1", &[&since])?;
        Ok(!rows.is_empty())
    }

    fn push_command(&self, command: &OperatorCommand) -> Result<i64, StoreError> {
        let (kind, arg) = command.to_row();
        // An end goes to the server that owns the session; an enrolment
        // to whichever server takes it first (the others read the binding).
        let rows = self.query(
            "INSERT INTO commands (kind, arg, target, created_us)
             VALUES ($1, $2, (SELECT owner FROM sessions WHERE $1 = 'end' AND id = $2), $3)
             RETURNING id",
            &[&kind, &arg, &to_i64(now_us())],
        )?;
        rows.first()
            .map(|r| r.get(0))
            .ok_or_else(|| StoreError::Corrupt("no command id returned".into()))
    }

    fn command_result(&self, id: i64) -> Result<Option<String>, StoreError> {
        let rows = self.query(
            "SELECT result FROM commands WHERE id = $1 AND done_us IS NOT NULL",
            &[&id],
        )?;
        Ok(rows
            .first()
            .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default()))
    }

    fn withdraw_command(&self, id: i64) -> Result<bool, StoreError> {
        let n = self.execute(
            "DELETE FROM commands WHERE id = $1 AND done_us IS NULL",
            &[&id],
        )?;
        Ok(n == 1)
    }

    fn pending_commands(&self) -> Result<Vec<PendingCommand>, StoreError> {
        let rows = self.query(
            "SELECT id, kind, arg FROM commands
             WHERE done_us IS NULL AND (target IS NULL OR target = $1)
             ORDER BY id LIMIT 64",
            &[&self.owner],
        )?;
        Ok(rows
            .iter()
            .map(|r| PendingCommand {
                id: r.get(0),
                command: OperatorCommand::from_row(r.get(1), r.get(2)),
            })
            .collect())
    }

    fn finish_command(&self, id: i64, result: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE commands SET done_us = $2, result = $3 WHERE id = $1 AND done_us IS NULL",
            &[&id, &to_i64(now_us()), &result],
        )?;
        Ok(())
    }

    fn bound_since(&self, since_us: u64) -> Result<Vec<(String, PublicKey, u64)>, StoreError> {
        let rows = self.query(
            "SELECT name, key, bound_us FROM names WHERE bound_us >= $1 ORDER BY bound_us LIMIT 10000",
            &[&to_i64(since_us)],
        )?;
        rows.iter()
            .map(|r| Ok((r.get(0), parse_key(r.get(1))?, to_u64(r.get(2)))))
            .collect()
    }

    fn prune_commands(&self, age: Duration) -> Result<(), StoreError> {
        let before = now_us().saturating_sub(u64::try_from(age.as_micros()).unwrap_or(u64::MAX));
        self.execute(
            "DELETE FROM commands WHERE done_us IS NOT NULL AND done_us < $1",
            &[&to_i64(before)],
        )?;
        Ok(())
    }

    fn record_refusal(&self, r: &RefusalRow) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO refusals (at_us, requester, target, reason) VALUES ($1, $2, $3, $4)",
            &[&to_i64(r.at_us), &r.requester, &r.target, &r.reason],
        )?;
        self.execute(
            "DELETE FROM refusals WHERE id <= (SELECT MAX(id) FROM refusals) - $1",
            &[&super::MAX_REFUSALS],
        )?;
        Ok(())
    }

    fn record_relayed(&self, id: &SessionId, bytes: u64) -> Result<(), StoreError> {
        self.execute(
            "UPDATE sessions SET relayed_bytes = GREATEST(COALESCE(relayed_bytes, 0), $1) WHERE id = $2",
            &[&to_i64(bytes), &super::id_hex(id)],
        )?;
        Ok(())
    }

    fn add_shard(&self, shard: &ShardRow) -> Result<bool, StoreError> {
        // `xmax = 0` only on a row this statement inserted.
        let rows = self.query(
            "INSERT INTO trigger_shards (name, link, udp, key, added_us) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET link = $2, udp = $3, key = $4
             RETURNING (xmax = 0)",
            &[
                &shard.name,
                &shard.link.to_string(),
                &shard.udp.to_string(),
                &key_hex(&shard.key),
                &to_i64(now_us()),
            ],
        )?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    fn remove_shard(&self, name: &str) -> Result<bool, StoreError> {
        let n = self.execute("DELETE FROM trigger_shards WHERE name = $1", &[&name])?;
        Ok(n > 0)
    }

    fn shards(&self) -> Result<Vec<ShardRow>, StoreError> {
        let rows = self.query(
            "SELECT name, link, udp, key FROM trigger_shards ORDER BY name",
            &[],
        )?;
        rows.iter()
            .map(|r| ShardRow::from_columns(r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    fn refusals(&self) -> Result<Vec<RefusalRow>, StoreError> {
        let rows = self.query(
            "SELECT at_us, requester, target, reason FROM refusals ORDER BY at_us, id",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| RefusalRow {
                at_us: to_u64(r.get(0)),
                requester: r.get(1),
                target: r.get(2),
                reason: r.get(3),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_recognised_and_passwords_redacted() {
        assert!(is_postgres_url("postgres://u@h/db"));
        assert!(is_postgres_url("postgresql://u@h/db"));
        assert!(!is_postgres_url("/var/lib/tryst"));
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
