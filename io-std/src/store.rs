//! The server's durable store: one SQLite database, `DIR/tryst.db`, in WAL
//! mode with `synchronous=FULL`, so a fact is on disk when its write
//! returns and `tryst sessions` can read while the server writes.
//!
//! Tables:
//! - `names(name PRIMARY KEY, key, origin 'tofu'|'enrolled', bound_us)`: the
//!   name bindings (the session server's `NameBound` facts, and the
//!   operator's enrolments).
//! - `sessions(id PRIMARY KEY, requester, requester_key, target, target_key,
//!   start_us, duration_secs, extensions, extended_us, ended, end_us,
//!   duration_us, permitted_secs, reason, bytes_r2t, bytes_t2r,
//!   r_reason, r_sent, r_received, r_duration_ms,
//!   t_reason, t_sent, t_received, t_duration_ms)`: one row per session,
//!   written at `SessionStarted`, updated at each `SessionExtended`, closed
//!   by its `SessionRecord`. Rows with `ended = 0` are replayed into the
//!   machine at start.
//! - `enrol_codes(hash PRIMARY KEY, name, created_us, expires_us, used_us,
//!   used_key)`: the one-time enrolment codes of `tryst invite --enrol`, by
//!   the hex SHA-256 of the code (never the code); `used_us` and `used_key`
//!   are set when a registration spends it (the `EnrolCodeUsed` fact).
//! - `refusals(id PRIMARY KEY, at_us, requester, target, reason)`: the
//!   connection requests the server refused, with the reason it knows
//!   ([`refusal_reason`]); for the operator only (the requester got the one
//!   uniform answer). The newest [`MAX_REFUSALS`] are kept.
//! - `commands(id PRIMARY KEY, kind 'end'|'enroll'|'enrol-code', arg, created_us,
//!   done_us, result)`: what `tryst end` and `tryst enroll` ask of the
//!   running server, which polls this table and writes the result.
//!
//! Times are microseconds since the Unix epoch (the session server runs on
//! wall clock (microseconds since the epoch), so its `Instant`s are these).
//!
//! The store is blocking (rusqlite); every driver shares it. A shared
//! PostgreSQL database is the other backend ([`pg`], `--store
//! postgres://...`); [`StoreLocation`] says which one a command uses.

pub mod peers;
pub mod pg;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tryst_core::identity;
use tryst_core::names::{NameRegistry, TrustMode};
use tryst_core::session_server::{
    DenyReason, EnrolCode, Party, SessionEndReason, SessionExtended, SessionFact, SessionRecord,
    SessionStarted, SideReport,
};
use tryst_core::time::Instant;
use tryst_core::wire::{EndReason, Name, PublicKey, SessionId};

/// The database file inside the data dir.
pub const DB_FILE: &str = "tryst.db";
/// How long a write waits for another connection's lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = 6;
/// Refused requests kept in the store (the oldest go first).
pub const MAX_REFUSALS: i64 = 10_000;

/// The shard map (schema version 6): the trigger servers devices are
/// spread over (rendezvous hashing on the shard's name).
const SHARDS_TABLE: &str = "CREATE TABLE IF NOT EXISTS trigger_shards (
    name TEXT PRIMARY KEY,
    link TEXT NOT NULL,
    udp TEXT NOT NULL,
    key TEXT NOT NULL,
    added_us INTEGER NOT NULL
);";

/// The refusals table (schema version 4).
const REFUSALS_TABLE: &str = "CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_us INTEGER NOT NULL,
    requester TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refusals_at ON refusals (at_us);";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('tofu', 'enrolled')),
    bound_us INTEGER NOT NULL,
    seen_us INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    requester_key TEXT NOT NULL,
    target TEXT NOT NULL,
    target_key TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    duration_secs INTEGER NOT NULL,
    extensions INTEGER NOT NULL DEFAULT 0,
    extended_us INTEGER,
    ended INTEGER NOT NULL DEFAULT 0,
    end_us INTEGER,
    duration_us INTEGER,
    permitted_secs INTEGER,
    reason TEXT,
    bytes_r2t INTEGER,
    bytes_t2r INTEGER,
    r_reason TEXT, r_sent INTEGER, r_received INTEGER, r_duration_ms INTEGER,
    t_reason TEXT, t_sent INTEGER, t_received INTEGER, t_duration_ms INTEGER,
    relayed_bytes INTEGER
);
CREATE INDEX IF NOT EXISTS sessions_live ON sessions (ended, start_us);
CREATE TABLE IF NOT EXISTS enrol_codes (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    expires_us INTEGER NOT NULL,
    used_us INTEGER,
    used_key TEXT
);
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_us INTEGER NOT NULL,
    requester TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refusals_at ON refusals (at_us);
CREATE TABLE IF NOT EXISTS trigger_shards (
    name TEXT PRIMARY KEY,
    link TEXT NOT NULL,
    udp TEXT NOT NULL,
    key TEXT NOT NULL,
    added_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    arg TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    done_us INTEGER,
    result TEXT
);
";

/// One trigger server of the shard map: the session servers sharing the
/// store spread devices over these by rendezvous hashing on `name`
/// ([`tryst_core::shard::pick`]), link to each at `link` with `key`, and
/// tell each terminal the `udp` address of its shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRow {
    /// The shard's name: what the hashing scores, so renaming a shard
    /// moves its devices, and moving it to another address does not.
    pub name: String,
    /// The trigger server's link address (TCP, from the session servers).
    pub link: SocketAddr,
    /// Its keepalive address (UDP): what its terminals are told.
    pub udp: SocketAddr,
    /// Its public key, which the link's handshake proves.
    pub key: PublicKey,
}

impl ShardRow {
    /// A row read back: its columns parsed, or `Corrupt` naming the field.
    fn from_columns(
        name: String,
        link: &str,
        udp: &str,
        key: &str,
    ) -> Result<ShardRow, StoreError> {
        let addr = |what: &str, text: &str| {
            text.parse::<SocketAddr>()
                .map_err(|e| StoreError::Corrupt(format!("shard {name:?} {what} {text:?}: {e}")))
        };
        Ok(ShardRow {
            link: addr("link", link)?,
            udp: addr("udp", udp)?,
            key: parse_key(key)?,
            name,
        })
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data dir holds no store (no server ever ran there).
    #[error("{}: no tryst store here (start `tryst server --data-dir` on it first)", .0.display())]
    Missing(PathBuf),
    /// SQLite failed.
    #[error("store {}: {source}", path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A row holds something this code cannot read.
    #[error("store: bad row: {0}")]
    Corrupt(String),
    /// The store was written by a newer tryst.
    #[error("store: schema version {0} is newer than this tryst")]
    TooNew(i64),
    /// PostgreSQL failed (the URL is shown without its password).
    #[error("store {url}: {source}")]
    Postgres {
        /// The database URL, redacted.
        url: String,
        /// The client's error.
        source: ::postgres::Error,
    },
    /// The database holds no tryst schema (no server ever ran on it).
    #[error("{0}: no tryst store here (start `tryst server --store` on it first)")]
    MissingDatabase(String),
    /// The database has bound this name to another key (another server
    /// bound it first): the batch was not stored.
    #[error("store: the name {0:?} is bound to another key in the shared store")]
    NameTaken(String),
}

/// Where a command's store is: the SQLite file in a data dir (the
/// default), or a PostgreSQL database several servers share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `DIR/tryst.db`.
    DataDir(PathBuf),
    /// A `postgres://` URL.
    Postgres(String),
}

impl StoreLocation {
    /// The location `--store` (if given) or `--data-dir` names; `None`
    /// when neither is given. `--store` takes a `postgres://` URL, or
    /// `sqlite` for the data dir's file.
    pub fn from_args(
        data_dir: Option<&Path>,
        store: Option<&str>,
    ) -> Result<StoreLocation, String> {
        match (store, data_dir) {
            (Some(url), _) if pg::is_postgres_url(url) => {
                Ok(StoreLocation::Postgres(url.to_owned()))
            }
            (Some("sqlite") | None, Some(dir)) => Ok(StoreLocation::DataDir(dir.to_path_buf())),
            (Some("sqlite") | None, None) => {
                Err("give --data-dir DIR or --store postgres://...".into())
            }
            (Some(other), _) => Err(format!(
                "--store {other:?}: expected a postgres:// URL or `sqlite`"
            )),
        }
    }

    /// How messages name it (a URL without its password).
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::DataDir(dir) => dir.display().to_string(),
            StoreLocation::Postgres(url) => pg::redact(url),
        }
    }

    /// Opens the store, creating (or migrating) it if needed: for the
    /// servers and `enroll`. `owner` names the server in a shared store
    /// (its control address); empty for a one-shot tool.
    pub fn create(&self, owner: &str) -> Result<Box<dyn ServerStore>, StoreError> {
        Ok(match self {
            StoreLocation::DataDir(dir) => Box::new(Store::create(dir)?),
            StoreLocation::Postgres(url) => Box::new(pg::PgStore::create(url)?.with_owner(owner)),
        })
    }

    /// Opens the existing store (for `sessions`, `end`, the server's
    /// command poller); `owner` as for [`StoreLocation::create`].
    pub fn open(&self, owner: &str) -> Result<Box<dyn ServerStore>, StoreError> {
        Ok(match self {
            StoreLocation::DataDir(dir) => Box::new(Store::open(dir)?),
            StoreLocation::Postgres(url) => Box::new(pg::PgStore::open(url)?.with_owner(owner)),
        })
    }
}

/// Where a binding came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Bound by the first key that registered the name.
    Tofu,
    /// Enrolled by the operator.
    Enrolled,
}

/// One row of the session log, as `tryst sessions` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    /// The session ID, 32 hex digits.
    pub id: String,
    /// The requester's name (who asked).
    pub requester: String,
    /// The target's name (whom it asked for).
    pub target: String,
    /// When it started (µs since the Unix epoch).
    pub start_us: u64,
    /// How long it lasted (µs); `None` while it is live.
    pub duration_us: Option<u64>,
    /// The permitted duration now (s).
    pub permitted_secs: u32,
    /// Extensions granted.
    pub extensions: u32,
    /// Bytes requester -> target (known once ended).
    pub bytes_r2t: u64,
    /// Bytes target -> requester (known once ended).
    pub bytes_t2r: u64,
    /// Why it ended (`None` while live).
    pub reason: Option<String>,
    /// What the requester's end notification said, if it came.
    pub who_end: Option<SideEnd>,
    /// What the target's end notification said, if it came.
    pub whom_end: Option<SideEnd>,
    /// Bytes the relay carried for it, both directions (as the relay
    /// reported when its allocation ended; 0 if it never carried any).
    pub relayed_bytes: u64,
}

/// The path a session took, as its record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionPath {
    /// The peers reached each other directly (the relay carried nothing).
    Direct,
    /// The relay carried some of its packets.
    Relayed,
}

impl SessionPath {
    /// Its name in `tryst sessions` and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            SessionPath::Direct => "direct",
            SessionPath::Relayed => "relayed",
        }
    }

    /// Reads `direct` or `relayed`.
    pub fn parse(text: &str) -> Option<SessionPath> {
        match text {
            "direct" => Some(SessionPath::Direct),
            "relayed" => Some(SessionPath::Relayed),
            _ => None,
        }
    }
}

impl LogRow {
    /// The path it took: relayed once the relay carried any of its bytes.
    pub fn path(&self) -> SessionPath {
        if self.relayed_bytes > 0 {
            SessionPath::Relayed
        } else {
            SessionPath::Direct
        }
    }
}

/// One side's end as its notification told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideEnd {
    /// Why it ended on that side (as [`reason_name`] writes it).
    pub reason: String,
    /// How long the session ran on that side (ms).
    pub duration_ms: u64,
}

impl SideEnd {
    /// The side's end from its stored columns (reason, duration).
    pub fn from_columns(reason: Option<String>, duration_ms: Option<i64>) -> Option<SideEnd> {
        Some(SideEnd {
            reason: reason?,
            duration_ms: duration_ms.map_or(0, to_u64),
        })
    }
}

/// One refused connection request, as the operator's log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalRow {
    /// When the uniform answer went out (µs since the Unix epoch).
    pub at_us: u64,
    /// The requester's name.
    pub requester: String,
    /// The name it asked for.
    pub target: String,
    /// Why ([`refusal_reason`]).
    pub reason: String,
}

/// The operator's words for why a request was refused (the requester only
/// ever gets the uniform `NotPermitted`).
pub fn refusal_reason(reason: DenyReason) -> &'static str {
    match reason {
        DenyReason::BadRequester => "bad requester (unconfirmed channel or wrong name)",
        DenyReason::RateLimited => "rate limited",
        DenyReason::UnknownTarget => "unknown target",
        DenyReason::TargetOffline => "target offline",
        DenyReason::SelfTarget => "asked for itself",
        DenyReason::Overloaded => "server overloaded",
        DenyReason::TriggerOffline => "target offline (no live address)",
        DenyReason::TriggerUnacknowledged => "target did not acknowledge the trigger",
        DenyReason::NotInList => "not permitted (not in the target's list)",
        DenyReason::Refused => "not permitted (the target refused)",
        DenyReason::WrongAnswerKind => "target answered in the wrong mode",
        DenyReason::NoAnswer => "no decision in time",
        DenyReason::AddressMissing => "an address was missing",
        DenyReason::TargetGone => "target went away during the decision",
    }
}

/// One stored enrolment code (its hash, never the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnrolCode {
    /// SHA-256 of the code.
    pub hash: [u8; 32],
    /// The device name it enrols.
    pub name: String,
    /// It is refused from this time on (µs since the Unix epoch).
    pub expires_us: u64,
}

/// What the operator asks of the running server (`tryst end`, `tryst enroll`, `tryst status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorCommand {
    /// End a live session now (S1604).
    End(SessionId),
    /// Bind `name` to `key` ahead of its registration.
    Enroll {
        /// The device name.
        name: String,
        /// Its identity key.
        key: PublicKey,
    },
    /// Its live terminals, sessions and counters, answered as JSON.
    Status,
    /// Hold a fresh one-time enrolment code (`tryst invite --enrol`).
    EnrolCode(StoredEnrolCode),
    /// Free a bound name (`tryst names release`).
    Release(String),
}

impl OperatorCommand {
    /// The command's row: its kind and argument.
    fn to_row(&self) -> (&'static str, String) {
        match self {
            OperatorCommand::End(id) => ("end", id_hex(id)),
            OperatorCommand::Enroll { name, key } => ("enroll", format!("{} {name}", key_hex(key))),
            OperatorCommand::Status => ("status", String::new()),
            OperatorCommand::Release(name) => ("release", name.clone()),
            OperatorCommand::EnrolCode(code) => (
                "enrol-code",
                format!("{} {} {}", hash_hex(&code.hash), code.expires_us, code.name),
            ),
        }
    }

    /// Reads a command's row back; `None` for one this version does not know
    /// or a malformed argument.
    fn from_row(kind: &str, arg: &str) -> Option<OperatorCommand> {
        match kind {
            "end" => parse_id(arg).map(OperatorCommand::End),
            "enroll" => {
                let (key, name) = arg.split_once(' ')?;
                let key = parse_key(key).ok()?;
                Some(OperatorCommand::Enroll {
                    name: name.to_owned(),
                    key,
                })
            }
            "status" => Some(OperatorCommand::Status),
            "release" => Some(OperatorCommand::Release(arg.to_owned())),
            "enrol-code" => {
                let mut parts = arg.splitn(3, ' ');
                let hash = parse_hash(parts.next()?).ok()?;
                let expires_us = parts.next()?.parse().ok()?;
                let name = parts.next()?.to_owned();
                Some(OperatorCommand::EnrolCode(StoredEnrolCode {
                    hash,
                    name,
                    expires_us,
                }))
            }
            _ => None,
        }
    }
}

/// A pending operator command for the running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCommand {
    /// Its row.
    pub id: i64,
    /// What it asks; `None` for a row this version cannot read (answered
    /// as such, never acted on).
    pub command: Option<OperatorCommand>,
}

/// What the session server starts from: its name bindings and the facts of
/// its sessions that have no record yet.
#[derive(Debug)]
pub struct ServerState {
    /// The name registry, rebuilt from the stored bindings.
    pub registry: NameRegistry,
    /// Facts to replay with `SessionServer::restore_session`, in order.
    pub live: Vec<SessionFact>,
    /// Stored names that could not be restored (invalid, or refused by
    /// the registry), with why.
    pub skipped: Vec<(String, String)>,
    /// The one-time enrolment codes neither spent nor expired.
    pub enrol_codes: Vec<EnrolCode>,
}

/// A stored code as the session server holds it.
pub fn core_enrol_code(code: &StoredEnrolCode) -> EnrolCode {
    EnrolCode {
        name: code.name.clone(),
        hash: code.hash,
        expires: Instant::from_micros(code.expires_us),
    }
}

/// A connection to the store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A key as 64 hex digits.
pub fn key_hex(key: &PublicKey) -> String {
    identity::format_public_key(key).hex().to_owned()
}

/// A session ID as 32 hex digits.
pub fn id_hex(id: &SessionId) -> String {
    id.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 32 hex digits as a session ID.
pub fn parse_id(text: &str) -> Option<SessionId> {
    let text = text.trim();
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(SessionId(id))
}

/// A code's SHA-256 as 64 hex digits.
pub fn hash_hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hash(text: &str) -> Result<[u8; 32], StoreError> {
    let bad = || StoreError::Corrupt(format!("enrolment code hash {text:?}"));
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        let pair = text.get(2 * i..2 * i + 2).ok_or_else(bad)?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(hash)
}

fn parse_key(text: &str) -> Result<PublicKey, StoreError> {
    identity::parse_public_key(text.as_bytes())
        .map_err(|e| StoreError::Corrupt(format!("key {text:?}: {e}")))
}

/// The stored name of an end reason.
pub fn reason_name(reason: SessionEndReason) -> &'static str {
    match reason {
        SessionEndReason::Completed => "completed",
        SessionEndReason::DurationExpired => "duration-expired",
        SessionEndReason::Forced => "forced",
        SessionEndReason::PeerLost => "peer-lost",
        SessionEndReason::Cancelled => "cancelled",
        SessionEndReason::Failed => "failed",
        SessionEndReason::ServerTimeout => "server-timeout",
    }
}

fn side_reason_name(reason: EndReason) -> &'static str {
    reason_name(reason.into())
}

/// Prepared statements each connection keeps ([`exec`]): more than the
/// distinct statements it runs, so none is ever parsed twice.
const STATEMENT_CACHE_CAPACITY: usize = 64;

impl Store {
    /// Opens (creating if needed) the store in `dir`, for the server.
    pub fn create(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        // The log says who talked to whom: for the operator only. SQLite
        // gives its -wal and -shm files the database file's mode.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        let store = Store { conn, path };
        store.setup(true)?;
        Ok(store)
    }

    /// Opens the existing store in `dir` (for `sessions`, `end`, `enroll`).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(DB_FILE);
        if !path.is_file() {
            return Err(StoreError::Missing(dir.to_path_buf()));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(&path, flags).map_err(|source| StoreError::Sqlite {
                path: path.clone(),
                source,
            })?;
        let store = Store { conn, path };
        store.setup(false)?;
        Ok(store)
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn setup(&self, create: bool) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.sql(e))?;
        self.conn
            .set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        if create {
            self.conn
                .pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| self.sql(e))?;
        }
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.sql(e))?;
        if create {
            self.conn.execute_batch(SCHEMA).map_err(|e| self.sql(e))?;
            exec(
                &self.conn,
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?1)",
                params![SCHEMA_VERSION.to_string()],
            )
            .map_err(|e| self.sql(e))?;
        }
        let version: Option<String> = query_one(
            &self.conn,
            "SELECT value FROM meta WHERE key = 'schema'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.sql(e))?;
        let version = version.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew(version));
        }
        if create && version < 2 {
            // Version 2: each binding's last-seen time (binding expiry).
            self.conn
                .execute_batch(
                    "BEGIN;
                     ALTER TABLE names ADD COLUMN seen_us INTEGER;
                     UPDATE meta SET value = '2' WHERE key = 'schema';
                     COMMIT;",
                )
                .map_err(|e| self.sql(e))?;
        }
        if create && version < 3 {
            // Version 3: one-time enrolment codes (the table is in SCHEMA).
            self.conn
                .execute_batch(
                    "BEGIN;
                     CREATE TABLE IF NOT EXISTS enrol_codes (
                         hash TEXT PRIMARY KEY,
                         name TEXT NOT NULL,
                         created_us INTEGER NOT NULL,
                         expires_us INTEGER NOT NULL,
                         used_us INTEGER,
                         used_key TEXT
                     );
                     UPDATE meta SET value = '3' WHERE key = 'schema';
                     COMMIT;",
                )
                .map_err(|e| self.sql(e))?;
        }
        if create && version < 4 {
            // Version 4: refused requests, with their reasons (the operator's).
            self.migration_step(4, REFUSALS_TABLE)?;
        }
        if create && version < 5 {
            // Version 5: the bytes the relay carried for a session (its
            // path: relayed when some, direct otherwise). A sessions table
            // that SCHEMA created just now has the column already.
            let has_column: bool = self
                .conn
                .query_row(
                    "SELECT COUNT(*) > 0 FROM pragma_table_info('sessions') \
                     WHERE name = 'relayed_bytes'",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| self.sql(e))?;
            let add = if has_column {
                ""
            } else {
                "ALTER TABLE sessions ADD COLUMN relayed_bytes INTEGER;"
            };
            self.migration_step(5, add)?;
        }
        if create && version < 6 {
            // Version 6: the shard map (`tryst shards add`).
            self.migration_step(6, SHARDS_TABLE)?;
        }
        Ok(())
    }

    /// Runs `sql` and notes schema `version`, in one transaction.
    fn migration_step(&self, version: i64, sql: &str) -> Result<(), StoreError> {
        self.conn
            .execute_batch(&format!(
                "BEGIN;
                 {sql}
                 UPDATE meta SET value = '{version}' WHERE key = 'schema';
                 COMMIT;"
            ))
            .map_err(|e| self.sql(e))
    }

    /// Every name binding, in name order.
    pub fn bindings(&self) -> Result<Vec<(String, PublicKey, Origin)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, key, origin FROM names ORDER BY name")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, key, origin) = row.map_err(|e| self.sql(e))?;
            let origin = if origin == "enrolled" {
                Origin::Enrolled
            } else {
                Origin::Tofu
            };
            out.push((name, parse_key(&key)?, origin));
        }
        Ok(out)
    }

    /// The key `name` is bound to.
    pub fn key_of(&self, name: &str) -> Result<Option<PublicKey>, StoreError> {
        let key: Option<String> = query_one(
            &self.conn,
            "SELECT key FROM names WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.sql(e))?;
        key.map(|k| parse_key(&k)).transpose()
    }

    /// Enrolls `name` for `key`. `Ok(false)`: the name is bound to another key.
    pub fn enroll(&self, name: &str, key: &PublicKey) -> Result<bool, StoreError> {
        match self.key_of(name)? {
            Some(bound) if bound == *key => Ok(true),
            Some(_) => Ok(false),
            None => {
                exec(&self.conn,
                        "INSERT INTO names (name, key, origin, bound_us) VALUES (?1, ?2, 'enrolled', ?3)",
                        params![name, key_hex(key), to_i64(now_us())],
                    )
                    .map_err(|e| self.sql(e))?;
                Ok(true)
            }
        }
    }

    /// Stores a fresh one-time enrolment code for `name` by its hash.
    pub fn add_enrol_code(&self, code: &StoredEnrolCode) -> Result<(), StoreError> {
        exec(
            &self.conn,
            "INSERT INTO enrol_codes (hash, name, created_us, expires_us) VALUES (?1, ?2, ?3, ?4)",
            params![
                hash_hex(&code.hash),
                code.name,
                to_i64(now_us()),
                to_i64(code.expires_us)
            ],
        )
        .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// The enrolment codes neither spent nor expired at `now_us`.
    pub fn enrol_codes(&self, now_us: u64) -> Result<Vec<StoredEnrolCode>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT hash, name, expires_us FROM enrol_codes
                 WHERE used_us IS NULL AND expires_us > ?1 ORDER BY created_us, hash",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![to_i64(now_us)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (hash, name, expires) = row.map_err(|e| self.sql(e))?;
            out.push(StoredEnrolCode {
                hash: parse_hash(&hash)?,
                name,
                expires_us: to_u64(expires),
            });
        }
        Ok(out)
    }

    /// The stored facts of every session without a record, in the order
    /// the machine emitted them (start, then its latest extension).
    pub fn live_facts(&self) -> Result<Vec<SessionFact>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, requester, requester_key, target, target_key, start_us,
                        duration_secs, extensions, extended_us
                 FROM sessions WHERE ended = 0 ORDER BY start_us",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, Option<i64>>(8)?,
                ))
            })
            .map_err(|e| self.sql(e))?;
        let mut facts = Vec::new();
        for row in rows {
            let (id, requester, rkey, target, tkey, start, duration, extensions, extended) =
                row.map_err(|e| self.sql(e))?;
            let session_id =
                parse_id(&id).ok_or_else(|| StoreError::Corrupt(format!("session id {id:?}")))?;
            let start = Instant::from_micros(to_u64(start));
            // The row holds the current duration; the extension fact (if
            // any) restores the count of extensions with it.
            facts.push(SessionFact::SessionStarted(SessionStarted {
                session_id,
                requester,
                requester_key: parse_key(&rkey)?,
                target,
                target_key: parse_key(&tkey)?,
                start,
                duration_secs: to_u32(duration),
            }));
            if extensions > 0 {
                facts.push(SessionFact::SessionExtended(SessionExtended {
                    session_id,
                    duration_secs: to_u32(duration),
                    extensions: to_u32(extensions),
                    at: extended.map_or(start, |at| Instant::from_micros(to_u64(at))),
                }));
            }
        }
        Ok(facts)
    }

    /// Rebuilds what a session server starts from, in `mode` (see
    /// [`ServerStore::server_state`]).
    pub fn server_state(&self, mode: TrustMode) -> Result<ServerState, StoreError> {
        ServerStore::server_state(self, mode)
    }

    /// A `NameSeen` fact for every binding: its stored last-seen time, or
    /// now for one that has none.
    pub fn seen_facts(&self) -> Result<Vec<SessionFact>, StoreError> {
        let now = now_us();
        // Bindings from before last-seen times were kept start their clock now.
        exec(
            &self.conn,
            "UPDATE names SET seen_us = ?1 WHERE seen_us IS NULL",
            params![to_i64(now)],
        )
        .map_err(|e| self.sql(e))?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, seen_us FROM names ORDER BY name")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?))
            })
            .map_err(|e| self.sql(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, seen) = row.map_err(|e| self.sql(e))?;
            let at = seen.map_or(now, to_u64);
            out.push(SessionFact::NameSeen {
                name,
                at: Instant::from_micros(at),
            });
        }
        Ok(out)
    }

    /// Stores a batch of durable facts in one transaction (one fsync).
    pub fn record(&mut self, facts: &[SessionFact]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        for fact in facts {
            match fact {
                SessionFact::NameBound { name, key } => {
                    exec(&tx,
                        "INSERT INTO names (name, key, origin, bound_us) VALUES (?1, ?2, 'tofu', ?3)
                         ON CONFLICT (name) DO UPDATE SET key = excluded.key, origin = 'tofu',
                         bound_us = excluded.bound_us WHERE names.key <> excluded.key",
                        params![name, key_hex(key), to_i64(now_us())],
                    )
                    .map_err(sql)?;
                }
                SessionFact::EnrolCodeUsed { name, key, hash } => {
                    exec(
                        &tx,
                        "UPDATE enrol_codes SET used_us = ?3, used_key = ?4
                         WHERE hash = ?1 AND name = ?2 AND used_us IS NULL",
                        params![hash_hex(hash), name, to_i64(now_us()), key_hex(key)],
                    )
                    .map_err(sql)?;
                    exec(&tx,
                        "INSERT INTO names (name, key, origin, bound_us) VALUES (?1, ?2, 'enrolled', ?3)
                         ON CONFLICT (name) DO NOTHING",
                        params![name, key_hex(key), to_i64(now_us())],
                    )
                    .map_err(sql)?;
                }
                SessionFact::NameSeen { name, at } => {
                    exec(
                        &tx,
                        "UPDATE names SET seen_us = ?2 WHERE name = ?1",
                        params![name, to_i64(at.as_micros())],
                    )
                    .map_err(sql)?;
                }
                SessionFact::NameUnbound { name, key } => {
                    exec(
                        &tx,
                        "DELETE FROM names WHERE name = ?1 AND key = ?2",
                        params![name, key_hex(key)],
                    )
                    .map_err(sql)?;
                }
                SessionFact::SessionStarted(s) => {
                    exec(&tx,
                        "INSERT OR IGNORE INTO sessions (id, requester, requester_key, target, target_key,
                         start_us, duration_secs) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![
                            id_hex(&s.session_id),
                            s.requester,
                            key_hex(&s.requester_key),
                            s.target,
                            key_hex(&s.target_key),
                            to_i64(s.start.as_micros()),
                            i64::from(s.duration_secs)
                        ],
                    )
                    .map_err(sql)?;
                }
                SessionFact::SessionExtended(x) => {
                    exec(
                        &tx,
                        "UPDATE sessions SET duration_secs = ?2, extensions = ?3, extended_us = ?4
                         WHERE id = ?1 AND ended = 0",
                        params![
                            id_hex(&x.session_id),
                            i64::from(x.duration_secs),
                            i64::from(x.extensions),
                            to_i64(x.at.as_micros())
                        ],
                    )
                    .map_err(sql)?;
                }
                SessionFact::SessionRecord(r) => record_row(&tx, r).map_err(sql)?,
                SessionFact::LateReport(l) => {
                    let (side, sent_col, received_col) = late_columns(l.party);
                    let (reason, sent, received, ms) = side_params(Some(l.report));
                    exec(
                        &tx,
                        &format!(
                            "UPDATE sessions SET {side}_reason = ?2, {side}_sent = ?3,
                             {side}_received = ?4, {side}_duration_ms = ?5,
                             {sent_col} = MAX(COALESCE({sent_col}, 0), ?3),
                             {received_col} = MAX(COALESCE({received_col}, 0), ?4)
                             WHERE id = ?1 AND {side}_reason IS NULL"
                        ),
                        params![id_hex(&l.session_id), reason, sent, received, ms],
                    )
                    .map_err(sql)?;
                }
            }
        }
        tx.commit().map_err(sql)
    }

    /// The session log, oldest first.
    pub fn log(&self) -> Result<Vec<LogRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
                "SELECT id, requester, target, start_us, duration_us, COALESCE(permitted_secs, duration_secs),
                        extensions, COALESCE(bytes_r2t, 0), COALESCE(bytes_t2r, 0), reason, ended,
                        r_reason, r_duration_ms, t_reason, t_duration_ms, COALESCE(relayed_bytes, 0)
                 FROM sessions ORDER BY start_us, id",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                let ended: i64 = r.get(10)?;
                Ok(LogRow {
                    id: r.get(0)?,
                    requester: r.get(1)?,
                    target: r.get(2)?,
                    start_us: to_u64(r.get(3)?),
                    duration_us: if ended != 0 {
                        r.get::<_, Option<i64>>(4)?.map(to_u64)
                    } else {
                        None
                    },
                    permitted_secs: to_u32(r.get(5)?),
                    extensions: to_u32(r.get(6)?),
                    bytes_r2t: to_u64(r.get(7)?),
                    bytes_t2r: to_u64(r.get(8)?),
                    reason: if ended != 0 { r.get(9)? } else { None },
                    who_end: SideEnd::from_columns(r.get(11)?, r.get(12)?),
                    whom_end: SideEnd::from_columns(r.get(13)?, r.get(14)?),
                    relayed_bytes: to_u64(r.get(15)?),
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    /// IDs of live sessions (started, not yet recorded).
    pub fn live_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM sessions WHERE ended = 0 ORDER BY start_us")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    /// Session IDs starting with `prefix` (lower-case hex), and whether each is live.
    pub fn find_sessions(&self, prefix: &str) -> Result<Vec<(String, bool)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, ended FROM sessions WHERE substr(id, 1, length(?1)) = ?1 LIMIT 2",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![prefix], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? == 0))
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    /// Makes this connection's commits cheap (no fsync per commit): for the
    /// server's heartbeat and command answers, never for facts.
    pub fn relax_durability(&self) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| self.sql(e))
    }

    /// Notes that a server runs on this store (now), or that none does (`None`).
    pub fn set_heartbeat(&self, at_us: Option<u64>) -> Result<(), StoreError> {
        match at_us {
            Some(at) => exec(
                &self.conn,
                "INSERT INTO meta (key, value) VALUES ('heartbeat_us', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![at.to_string()],
            ),
            None => exec(
                &self.conn,
                "DELETE FROM meta WHERE key = 'heartbeat_us'",
                [],
            ),
        }
        .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Whether a server noted a heartbeat within `fresh`.
    pub fn server_running(&self, fresh: Duration) -> Result<bool, StoreError> {
        let beat: Option<String> = query_one(
            &self.conn,
            "SELECT value FROM meta WHERE key = 'heartbeat_us'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.sql(e))?;
        let Some(beat) = beat.and_then(|b| b.parse::<u64>().ok()) else {
            return Ok(false);
        };
        let fresh = u64::try_from(fresh.as_micros()).unwrap_or(u64::MAX);
        Ok(now_us().saturating_sub(beat) <= fresh)
    }

    /// Queues a command for the running server; returns its row.
    pub fn push_command(&self, command: &OperatorCommand) -> Result<i64, StoreError> {
        let (kind, arg) = command.to_row();
        exec(
            &self.conn,
            "INSERT INTO commands (kind, arg, created_us) VALUES (?1, ?2, ?3)",
            params![kind, arg, to_i64(now_us())],
        )
        .map_err(|e| self.sql(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The result of a command, once the server wrote it.
    pub fn command_result(&self, id: i64) -> Result<Option<String>, StoreError> {
        let result: Option<Option<String>> = query_one(
            &self.conn,
            "SELECT result FROM commands WHERE id = ?1 AND done_us IS NOT NULL",
            params![id],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.sql(e))?;
        Ok(result.map(Option::unwrap_or_default))
    }

    /// Withdraws a command no server took; `false` if one took it meanwhile.
    pub fn withdraw_command(&self, id: i64) -> Result<bool, StoreError> {
        let n = exec(
            &self.conn,
            "DELETE FROM commands WHERE id = ?1 AND done_us IS NULL",
            params![id],
        )
        .map_err(|e| self.sql(e))?;
        Ok(n == 1)
    }

    /// Commands no server has answered yet, oldest first.
    pub fn pending_commands(&self) -> Result<Vec<PendingCommand>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, kind, arg FROM commands WHERE done_us IS NULL ORDER BY id LIMIT 64",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                let (kind, arg): (String, String) = (r.get(1)?, r.get(2)?);
                Ok(PendingCommand {
                    id: r.get(0)?,
                    command: OperatorCommand::from_row(&kind, &arg),
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    /// Writes a command's result.
    pub fn finish_command(&self, id: i64, result: &str) -> Result<(), StoreError> {
        exec(
            &self.conn,
            "UPDATE commands SET done_us = ?2, result = ?3 WHERE id = ?1",
            params![id, to_i64(now_us()), result],
        )
        .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Adds what the relay reported for a session (bytes it carried, both
    /// directions) to its row; a repeated report keeps the larger count.
    pub fn record_relayed(&self, id: &SessionId, bytes: u64) -> Result<(), StoreError> {
        exec(
            &self.conn,
            "UPDATE sessions SET relayed_bytes = MAX(COALESCE(relayed_bytes, 0), ?1) WHERE id = ?2",
            params![to_i64(bytes), id_hex(id)],
        )
        .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Adds a trigger server to the shard map, or gives the shard of that
    /// name new addresses and a new key; true if the name is new.
    pub fn add_shard(&self, shard: &ShardRow) -> Result<bool, StoreError> {
        let known: bool = query_one(
            &self.conn,
            "SELECT COUNT(*) > 0 FROM trigger_shards WHERE name = ?1",
            params![shard.name],
            |r| r.get(0),
        )
        .map_err(|e| self.sql(e))?;
        exec(
            &self.conn,
            "INSERT INTO trigger_shards (name, link, udp, key, added_us) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name) DO UPDATE SET link = ?2, udp = ?3, key = ?4",
            params![
                shard.name,
                shard.link.to_string(),
                shard.udp.to_string(),
                key_hex(&shard.key),
                to_i64(now_us())
            ],
        )
        .map_err(|e| self.sql(e))?;
        Ok(!known)
    }

    /// Takes a trigger server out of the shard map; false if it was not in it.
    pub fn remove_shard(&self, name: &str) -> Result<bool, StoreError> {
        let n = exec(
            &self.conn,
            "DELETE FROM trigger_shards WHERE name = ?1",
            params![name],
        )
        .map_err(|e| self.sql(e))?;
        Ok(n > 0)
    }

    /// The shard map, in name order.
    pub fn shards(&self) -> Result<Vec<ShardRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, link, udp, key FROM trigger_shards ORDER BY name")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        rows.into_iter()
            .map(|(name, link, udp, key)| ShardRow::from_columns(name, &link, &udp, &key))
            .collect()
    }

    /// Keeps a refused request (and drops the oldest beyond [`MAX_REFUSALS`]).
    pub fn record_refusal(&self, r: &RefusalRow) -> Result<(), StoreError> {
        exec(
            &self.conn,
            "INSERT INTO refusals (at_us, requester, target, reason) VALUES (?1, ?2, ?3, ?4)",
            params![to_i64(r.at_us), r.requester, r.target, r.reason],
        )
        .map_err(|e| self.sql(e))?;
        exec(
            &self.conn,
            "DELETE FROM refusals WHERE id <= (SELECT MAX(id) FROM refusals) - ?1",
            params![MAX_REFUSALS],
        )
        .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// The refused requests kept, oldest first.
    pub fn refusals(&self) -> Result<Vec<RefusalRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT at_us, requester, target, reason FROM refusals ORDER BY at_us, id",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RefusalRow {
                    at_us: to_u64(r.get(0)?),
                    requester: r.get(1)?,
                    target: r.get(2)?,
                    reason: r.get(3)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql(e))
    }

    /// Drops answered commands older than `age` (the table stays small).
    pub fn prune_commands(&self, age: Duration) -> Result<(), StoreError> {
        let before = now_us().saturating_sub(u64::try_from(age.as_micros()).unwrap_or(u64::MAX));
        exec(
            &self.conn,
            "DELETE FROM commands WHERE done_us IS NOT NULL AND done_us < ?1",
            params![to_i64(before)],
        )
        .map_err(|e| self.sql(e))?;
        Ok(())
    }
}

fn side_params(
    side: Option<SideReport>,
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

/// A late report's columns: its side's prefix (`r`/`t`), the byte column
/// its sent count goes to and the one its received count goes to.
pub(crate) fn late_columns(party: Party) -> (&'static str, &'static str, &'static str) {
    match party {
        Party::Requester => ("r", "bytes_r2t", "bytes_t2r"),
        Party::Target => ("t", "bytes_t2r", "bytes_r2t"),
    }
}

/// Runs one statement through the connection's prepared-statement cache,
/// so SQL run again and again (every fact, heartbeat and command poll) is
/// parsed once per connection rather than on every call.
fn exec<P: rusqlite::Params>(conn: &Connection, sql: &str, params: P) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// [`exec`] for a statement that reads one row.
fn query_one<T, P, F>(conn: &Connection, sql: &str, params: P, f: F) -> rusqlite::Result<T>
where
    P: rusqlite::Params,
    F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
{
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// Closes a session's row with its record (inserting the row if the start
/// was somehow never stored).
fn record_row(tx: &rusqlite::Transaction<'_>, r: &SessionRecord) -> rusqlite::Result<()> {
    let id = id_hex(&r.session_id);
    exec(tx,
        "INSERT OR IGNORE INTO sessions (id, requester, requester_key, target, target_key, start_us,
         duration_secs) VALUES (?1, ?2, '', ?3, '', ?4, ?5)",
        params![
            id,
            r.requester,
            r.target,
            to_i64(r.start.as_micros()),
            i64::from(r.permitted_secs)
        ],
    )?;
    let (rr, rs, rv, rd) = side_params(r.requester_side);
    let (tr, ts, tv, td) = side_params(r.target_side);
    exec(
        tx,
        "UPDATE sessions SET ended = 1, end_us = ?2, duration_us = ?3, permitted_secs = ?4,
         extensions = ?5, reason = ?6, bytes_r2t = ?7, bytes_t2r = ?8,
         r_reason = ?9, r_sent = ?10, r_received = ?11, r_duration_ms = ?12,
         t_reason = ?13, t_sent = ?14, t_received = ?15, t_duration_ms = ?16
         WHERE id = ?1",
        params![
            id,
            to_i64(r.end.as_micros()),
            to_i64(u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX)),
            i64::from(r.permitted_secs),
            i64::from(r.extensions),
            reason_name(r.reason),
            to_i64(r.bytes_requester_to_target()),
            to_i64(r.bytes_target_to_requester()),
            rr,
            rs,
            rv,
            rd,
            tr,
            ts,
            tv,
            td
        ],
    )?;
    Ok(())
}

/// What the servers and the one-shot commands need of a durable store:
/// the session server's facts and their restore, the name bindings and
/// enrolments, the session log, and the operator-command table through
/// which `end` and `enroll` reach a running server. [`Store`] (SQLite, one
/// file in the data dir) is the default implementation; another backend
/// implements this trait and nothing above it
/// changes; [`pg::PgStore`] is the shared PostgreSQL one. Every method blocks.
pub trait ServerStore: Send {
    /// Stores a batch of durable facts atomically; on `Ok` they are durable
    /// (the driver sends what acknowledges them only after this).
    fn record(&mut self, facts: &[SessionFact]) -> Result<(), StoreError>;
    /// Every name binding: name, key, where it came from.
    fn bindings(&self) -> Result<Vec<(String, PublicKey, Origin)>, StoreError>;
    /// The key bound to `name`, if any.
    fn key_of(&self, name: &str) -> Result<Option<PublicKey>, StoreError>;
    /// Binds `name` to `key` as an enrolment; `false` if it is bound to
    /// another key (a binding to the same key is left as it is).
    fn enroll(&self, name: &str, key: &PublicKey) -> Result<bool, StoreError>;
    /// Stores a fresh one-time enrolment code (by its hash).
    fn add_enrol_code(&self, code: &StoredEnrolCode) -> Result<(), StoreError>;
    /// The enrolment codes neither spent nor expired at `now_us`.
    fn enrol_codes(&self, now_us: u64) -> Result<Vec<StoredEnrolCode>, StoreError>;
    /// A `NameSeen` fact for every binding (its last confirmed registration).
    fn seen_facts(&self) -> Result<Vec<SessionFact>, StoreError>;
    /// The facts of the sessions that have no record yet, in order.
    fn live_facts(&self) -> Result<Vec<SessionFact>, StoreError>;
    /// The session log, oldest first.
    fn log(&self) -> Result<Vec<LogRow>, StoreError>;
    /// The IDs (hex) of the sessions that have no record yet.
    fn live_ids(&self) -> Result<Vec<String>, StoreError>;
    /// The sessions whose ID starts with `prefix` (lower-case hex): ID and
    /// whether it is live.
    fn find_sessions(&self, prefix: &str) -> Result<Vec<(String, bool)>, StoreError>;
    /// Makes this handle's writes cheap (no sync per write): for the
    /// heartbeat and command answers, never for facts.
    fn relax_durability(&self) -> Result<(), StoreError>;
    /// Notes that a server runs on this store (now), or that none does.
    fn set_heartbeat(&self, at_us: Option<u64>) -> Result<(), StoreError>;
    /// Whether a server noted a heartbeat within `fresh`.
    fn server_running(&self, fresh: Duration) -> Result<bool, StoreError>;
    /// Queues an operator command for the running server; its row ID.
    fn push_command(&self, command: &OperatorCommand) -> Result<i64, StoreError>;
    /// The running server's answer to command `id`, once there is one.
    fn command_result(&self, id: i64) -> Result<Option<String>, StoreError>;
    /// Withdraws unanswered command `id`; `false` if it was answered meanwhile.
    fn withdraw_command(&self, id: i64) -> Result<bool, StoreError>;
    /// The commands waiting for the server, oldest first.
    fn pending_commands(&self) -> Result<Vec<PendingCommand>, StoreError>;
    /// Stores the server's answer to command `id`.
    fn finish_command(&self, id: i64, result: &str) -> Result<(), StoreError>;
    /// Removes answered commands older than `age`.
    fn prune_commands(&self, age: Duration) -> Result<(), StoreError>;
    /// Keeps a refused request with its reason (the newest [`MAX_REFUSALS`]).
    fn record_refusal(&self, refusal: &RefusalRow) -> Result<(), StoreError>;
    /// The refused requests kept, oldest first.
    fn refusals(&self) -> Result<Vec<RefusalRow>, StoreError>;
    /// Adds the relay's byte count for a session to its row (the larger
    /// of a repeated report is kept).
    fn record_relayed(&self, id: &SessionId, bytes: u64) -> Result<(), StoreError>;
    /// Adds a trigger server to the shard map (or updates the one of that
    /// name); true if the name is new.
    fn add_shard(&self, shard: &ShardRow) -> Result<bool, StoreError>;
    /// Takes a trigger server out of the shard map; false if it was not in it.
    fn remove_shard(&self, name: &str) -> Result<bool, StoreError>;
    /// The shard map, in name order.
    fn shards(&self) -> Result<Vec<ShardRow>, StoreError>;

    /// The bindings made at or after `since_us` (µs since the epoch, the
    /// binding server's clock) by any server sharing the store: name, key,
    /// when. A store only one server uses has nothing to tell (the default).
    fn bound_since(&self, _since_us: u64) -> Result<Vec<(String, PublicKey, u64)>, StoreError> {
        Ok(Vec::new())
    }

    /// Rebuilds what a session server starts from, in `mode`: the registry
    /// from the bindings, then every binding's last-seen time and the live
    /// sessions' facts to replay. The same for every backend.
    fn server_state(&self, mode: TrustMode) -> Result<ServerState, StoreError> {
        let mut registry = NameRegistry::new(mode);
        let mut skipped = Vec::new();
        for (name, key, _) in self.bindings()? {
            let Ok(wire_name) = Name::new(&name) else {
                skipped.push((name, "not a valid device name".to_owned()));
                continue;
            };
            if let Err(e) = registry.enroll(wire_name, key) {
                skipped.push((name, e.to_string()));
            }
        }
        // Every binding's last-seen time first (a binding never seen since
        // this version counts as seen now), then the live sessions.
        let mut live = self.seen_facts()?;
        live.extend(self.live_facts()?);
        let enrol_codes = self
            .enrol_codes(now_us())?
            .iter()
            .map(core_enrol_code)
            .collect();
        Ok(ServerState {
            registry,
            live,
            skipped,
            enrol_codes,
        })
    }
}

/// A boxed backend is a backend (what [`StoreLocation`] opens).
impl<S: ServerStore + ?Sized> ServerStore for Box<S> {
    fn record(&mut self, facts: &[SessionFact]) -> Result<(), StoreError> {
        (**self).record(facts)
    }
    fn bindings(&self) -> Result<Vec<(String, PublicKey, Origin)>, StoreError> {
        (**self).bindings()
    }
    fn key_of(&self, name: &str) -> Result<Option<PublicKey>, StoreError> {
        (**self).key_of(name)
    }
    fn enroll(&self, name: &str, key: &PublicKey) -> Result<bool, StoreError> {
        (**self).enroll(name, key)
    }
    fn add_enrol_code(&self, code: &StoredEnrolCode) -> Result<(), StoreError> {
        (**self).add_enrol_code(code)
    }
    fn enrol_codes(&self, now_us: u64) -> Result<Vec<StoredEnrolCode>, StoreError> {
        (**self).enrol_codes(now_us)
    }
    fn seen_facts(&self) -> Result<Vec<SessionFact>, StoreError> {
        (**self).seen_facts()
    }
    fn live_facts(&self) -> Result<Vec<SessionFact>, StoreError> {
        (**self).live_facts()
    }
    fn log(&self) -> Result<Vec<LogRow>, StoreError> {
        (**self).log()
    }
    fn live_ids(&self) -> Result<Vec<String>, StoreError> {
        (**self).live_ids()
    }
    fn find_sessions(&self, prefix: &str) -> Result<Vec<(String, bool)>, StoreError> {
        (**self).find_sessions(prefix)
    }
    fn relax_durability(&self) -> Result<(), StoreError> {
        (**self).relax_durability()
    }
    fn set_heartbeat(&self, at_us: Option<u64>) -> Result<(), StoreError> {
        (**self).set_heartbeat(at_us)
    }
    fn server_running(&self, fresh: Duration) -> Result<bool, StoreError> {
        (**self).server_running(fresh)
    }
    fn push_command(&self, command: &OperatorCommand) -> Result<i64, StoreError> {
        (**self).push_command(command)
    }
    fn command_result(&self, id: i64) -> Result<Option<String>, StoreError> {
        (**self).command_result(id)
    }
    fn withdraw_command(&self, id: i64) -> Result<bool, StoreError> {
        (**self).withdraw_command(id)
    }
    fn pending_commands(&self) -> Result<Vec<PendingCommand>, StoreError> {
        (**self).pending_commands()
    }
    fn finish_command(&self, id: i64, result: &str) -> Result<(), StoreError> {
        (**self).finish_command(id, result)
    }
    fn prune_commands(&self, age: Duration) -> Result<(), StoreError> {
        (**self).prune_commands(age)
    }
    fn record_refusal(&self, refusal: &RefusalRow) -> Result<(), StoreError> {
        (**self).record_refusal(refusal)
    }
    fn refusals(&self) -> Result<Vec<RefusalRow>, StoreError> {
        (**self).refusals()
    }
    fn record_relayed(&self, id: &SessionId, bytes: u64) -> Result<(), StoreError> {
        (**self).record_relayed(id, bytes)
    }
    fn add_shard(&self, shard: &ShardRow) -> Result<bool, StoreError> {
        (**self).add_shard(shard)
    }
    fn remove_shard(&self, name: &str) -> Result<bool, StoreError> {
        (**self).remove_shard(name)
    }
    fn shards(&self) -> Result<Vec<ShardRow>, StoreError> {
        (**self).shards()
    }
    fn bound_since(&self, since_us: u64) -> Result<Vec<(String, PublicKey, u64)>, StoreError> {
        (**self).bound_since(since_us)
    }
}

/// The SQLite store behind the trait: each method is the inherent one.
impl ServerStore for Store {
    fn record(&mut self, facts: &[SessionFact]) -> Result<(), StoreError> {
        Store::record(self, facts)
    }
    fn bindings(&self) -> Result<Vec<(String, PublicKey, Origin)>, StoreError> {
        Store::bindings(self)
    }
    fn key_of(&self, name: &str) -> Result<Option<PublicKey>, StoreError> {
        Store::key_of(self, name)
    }
    fn enroll(&self, name: &str, key: &PublicKey) -> Result<bool, StoreError> {
        Store::enroll(self, name, key)
    }
    fn add_enrol_code(&self, code: &StoredEnrolCode) -> Result<(), StoreError> {
        Store::add_enrol_code(self, code)
    }
    fn enrol_codes(&self, now_us: u64) -> Result<Vec<StoredEnrolCode>, StoreError> {
        Store::enrol_codes(self, now_us)
    }
    fn seen_facts(&self) -> Result<Vec<SessionFact>, StoreError> {
        Store::seen_facts(self)
    }
    fn live_facts(&self) -> Result<Vec<SessionFact>, StoreError> {
        Store::live_facts(self)
    }
    fn log(&self) -> Result<Vec<LogRow>, StoreError> {
        Store::log(self)
    }
    fn live_ids(&self) -> Result<Vec<String>, StoreError> {
        Store::live_ids(self)
    }
    fn find_sessions(&self, prefix: &str) -> Result<Vec<(String, bool)>, StoreError> {
        Store::find_sessions(self, prefix)
    }
    fn relax_durability(&self) -> Result<(), StoreError> {
        Store::relax_durability(self)
    }
    fn set_heartbeat(&self, at_us: Option<u64>) -> Result<(), StoreError> {
        Store::set_heartbeat(self, at_us)
    }
    fn server_running(&self, fresh: Duration) -> Result<bool, StoreError> {
        Store::server_running(self, fresh)
    }
    fn push_command(&self, command: &OperatorCommand) -> Result<i64, StoreError> {
        Store::push_command(self, command)
    }
    fn command_result(&self, id: i64) -> Result<Option<String>, StoreError> {
        Store::command_result(self, id)
    }
    fn withdraw_command(&self, id: i64) -> Result<bool, StoreError> {
        Store::withdraw_command(self, id)
    }
    fn pending_commands(&self) -> Result<Vec<PendingCommand>, StoreError> {
        Store::pending_commands(self)
    }
    fn finish_command(&self, id: i64, result: &str) -> Result<(), StoreError> {
        Store::finish_command(self, id, result)
    }
    fn prune_commands(&self, age: Duration) -> Result<(), StoreError> {
        Store::prune_commands(self, age)
    }
    fn record_refusal(&self, refusal: &RefusalRow) -> Result<(), StoreError> {
        Store::record_refusal(self, refusal)
    }
    fn refusals(&self) -> Result<Vec<RefusalRow>, StoreError> {
        Store::refusals(self)
    }
    fn record_relayed(&self, id: &SessionId, bytes: u64) -> Result<(), StoreError> {
        Store::record_relayed(self, id, bytes)
    }
    fn add_shard(&self, shard: &ShardRow) -> Result<bool, StoreError> {
        Store::add_shard(self, shard)
    }
    fn remove_shard(&self, name: &str) -> Result<bool, StoreError> {
        Store::remove_shard(self, name)
    }
    fn shards(&self) -> Result<Vec<ShardRow>, StoreError> {
        Store::shards(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration as CoreDuration;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    #[test]
    fn started_extended_and_recorded_sessions_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(dir.path()).unwrap();
        let id = SessionId([7; 16]);
        let start = Instant::from_micros(1_700_000_000_000_000);
        store
            .record(&[
                SessionFact::NameBound {
                    name: "TERM1".into(),
                    key: key(9),
                },
                SessionFact::SessionStarted(SessionStarted {
                    session_id: id,
                    requester: "TERM3".into(),
                    requester_key: key(3),
                    target: "TERM1".into(),
                    target_key: key(9),
                    start,
                    duration_secs: 60,
                }),
                SessionFact::SessionExtended(SessionExtended {
                    session_id: id,
                    duration_secs: 120,
                    extensions: 1,
                    at: start + CoreDuration::from_secs(42),
                }),
            ])
            .unwrap();
        drop(store);
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.bindings().unwrap(),
            vec![("TERM1".to_owned(), key(9), Origin::Tofu)]
        );
        let facts = store.live_facts().unwrap();
        assert_eq!(facts.len(), 2);
        assert!(matches!(&facts[1], SessionFact::SessionExtended(x) if x.duration_secs == 120));
        store
            .record(&[SessionFact::SessionRecord(SessionRecord {
                session_id: id,
                requester: "TERM3".into(),
                target: "TERM1".into(),
                start,
                end: start + CoreDuration::from_secs(90),
                duration: CoreDuration::from_secs(90),
                permitted_secs: 120,
                extensions: 1,
                requester_side: None,
                target_side: None,
                reason: SessionEndReason::Forced,
            })])
            .unwrap();
        assert!(store.live_facts().unwrap().is_empty());
        let log = store.log().unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].reason.as_deref(), Some("forced"));
        assert_eq!(log[0].duration_us, Some(90_000_000));
        assert_eq!(parse_id(&log[0].id), Some(id));
    }

    #[test]
    fn enrolment_refuses_a_name_bound_to_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        assert!(store.enroll("cam", &key(1)).unwrap());
        assert!(store.enroll("cam", &key(1)).unwrap());
        assert!(!store.enroll("cam", &key(2)).unwrap());
    }

    #[test]
    fn commands_are_answered_once_and_withdrawn_only_unanswered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let end = OperatorCommand::End(SessionId([0xab; 16]));
        let enroll = OperatorCommand::Enroll {
            name: "TERM1".into(),
            key: key(4),
        };
        let a = store.push_command(&end).unwrap();
        let b = store.push_command(&enroll).unwrap();
        let c = store.push_command(&OperatorCommand::Status).unwrap();
        let pending = store.pending_commands().unwrap();
        let commands: Vec<_> = pending.iter().map(|p| p.command.clone()).collect();
        assert!(store.withdraw_command(c).unwrap());
        assert_eq!(
            commands,
            [Some(end), Some(enroll), Some(OperatorCommand::Status)],
            "typed commands round-trip"
        );
        store.finish_command(a, "ok").unwrap();
        assert_eq!(store.command_result(a).unwrap().as_deref(), Some("ok"));
        assert!(!store.withdraw_command(a).unwrap());
        assert!(store.withdraw_command(b).unwrap());
        assert!(store.pending_commands().unwrap().is_empty());
    }

    #[test]
    fn a_command_row_this_version_cannot_read_is_never_acted_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        for (kind, arg) in [("end", "not hex"), ("enroll", "nokey"), ("reboot", "")] {
            store
                .conn
                .execute(
                    "INSERT INTO commands (kind, arg, created_us) VALUES (?1, ?2, 0)",
                    params![kind, arg],
                )
                .unwrap();
        }
        let pending = store.pending_commands().unwrap();
        assert_eq!(pending.len(), 3);
        assert!(pending.iter().all(|p| p.command.is_none()));
    }

    #[test]
    fn server_state_rebuilds_bindings_and_live_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(dir.path()).unwrap();
        let started = SessionStarted {
            session_id: SessionId([5; 16]),
            requester: "TERM3".into(),
            requester_key: key(3),
            target: "TERM1".into(),
            target_key: key(1),
            start: Instant::from_micros(1_700_000_000_000_000),
            duration_secs: 60,
        };
        store
            .record(&[
                SessionFact::NameBound {
                    name: "TERM1".into(),
                    key: key(1),
                },
                SessionFact::SessionStarted(started.clone()),
            ])
            .unwrap();
        let state = store.server_state(TrustMode::TrustOnFirstUse).unwrap();
        assert_eq!(state.registry.bindings().count(), 1);
        assert!(matches!(&state.live[0], SessionFact::NameSeen { name, .. } if name == "TERM1"));
        assert_eq!(state.live[1..], [SessionFact::SessionStarted(started)]);
        assert!(state.skipped.is_empty());
    }

    #[test]
    fn binding_seen_times_are_kept_and_an_expired_binding_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::create(dir.path()).unwrap();
        let at = Instant::from_micros(1_700_000_000_000_000);
        store
            .record(&[
                SessionFact::NameBound {
                    name: "TERM1".into(),
                    key: key(1),
                },
                SessionFact::NameSeen {
                    name: "TERM1".into(),
                    at,
                },
            ])
            .unwrap();
        let state = store.server_state(TrustMode::TrustOnFirstUse).unwrap();
        assert_eq!(
            state.live,
            [SessionFact::NameSeen {
                name: "TERM1".into(),
                at
            }]
        );
        // An unbind for another key changes nothing; the bound key's removes it.
        store
            .record(&[SessionFact::NameUnbound {
                name: "TERM1".into(),
                key: key(2),
            }])
            .unwrap();
        assert_eq!(store.bindings().unwrap().len(), 1);
        store
            .record(&[SessionFact::NameUnbound {
                name: "TERM1".into(),
                key: key(1),
            }])
            .unwrap();
        assert!(store.bindings().unwrap().is_empty());
    }

    #[test]
    fn a_version_1_store_gains_seen_times_and_keeps_its_bindings() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('schema', '1');
                 CREATE TABLE names (name TEXT PRIMARY KEY, key TEXT NOT NULL,
                     origin TEXT NOT NULL CHECK (origin IN ('tofu', 'enrolled')),
                     bound_us INTEGER NOT NULL);",
            )
            .unwrap();
            exec(
                &conn,
                "INSERT INTO names VALUES ('TERM1', ?1, 'tofu', 1)",
                params![key_hex(&key(1))],
            )
            .unwrap();
        }
        let store = Store::create(dir.path()).unwrap();
        let state = store.server_state(TrustMode::TrustOnFirstUse).unwrap();
        assert_eq!(state.registry.bindings().count(), 1);
        assert!(matches!(&state.live[..], [SessionFact::NameSeen { name, .. }] if name == "TERM1"));
        // Version 3 on the way: the enrolment codes' table.
        let version: String = store
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION.to_string());
        assert!(store.enrol_codes(0).unwrap().is_empty());
    }

    #[test]
    fn a_version_3_store_gains_the_refusals_table_and_keeps_its_sessions() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::create(dir.path()).unwrap();
            store
                .record(&[SessionFact::SessionStarted(SessionStarted {
                    session_id: SessionId([5; 16]),
                    requester: "phone".into(),
                    requester_key: key(2),
                    target: "home".into(),
                    target_key: key(1),
                    start: Instant::from_micros(1_700_000_000_000_000),
                    duration_secs: 30,
                })])
                .unwrap();
            // Back to what version 3 wrote.
            store
                .conn
                .execute_batch(
                    "DROP TABLE refusals; UPDATE meta SET value = '3' WHERE key = 'schema';",
                )
                .unwrap();
        }
        let store = Store::create(dir.path()).unwrap();
        let version: String = store
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION.to_string());
        assert!(store.refusals().unwrap().is_empty());
        store
            .record_refusal(&RefusalRow {
                at_us: 1,
                requester: "mallory".into(),
                target: "home".into(),
                reason: refusal_reason(DenyReason::NotInList).into(),
            })
            .unwrap();
        assert_eq!(store.refusals().unwrap().len(), 1);
        assert_eq!(store.live_ids().unwrap().len(), 1);
    }

    /// The trait is what a server or command holds: a boxed backend
    /// records, restores, enrols and answers commands as the store does.
    #[test]
    fn the_store_works_behind_the_trait_object() {
        let dir = tempfile::tempdir().unwrap();
        let mut store: Box<dyn ServerStore> = Box::new(Store::create(dir.path()).unwrap());
        let started = SessionStarted {
            session_id: SessionId([9; 16]),
            requester: "TERM2".into(),
            requester_key: key(2),
            target: "TERM1".into(),
            target_key: key(1),
            start: Instant::from_micros(1_700_000_000_000_000),
            duration_secs: 30,
        };
        store
            .record(&[SessionFact::SessionStarted(started.clone())])
            .unwrap();
        assert!(store.enroll("TERM1", &key(1)).unwrap());
        assert!(!store.enroll("TERM1", &key(4)).unwrap());
        let state = store.server_state(TrustMode::Closed).unwrap();
        assert_eq!(state.registry.bindings().count(), 1);
        assert_eq!(
            state.live.last(),
            Some(&SessionFact::SessionStarted(started))
        );
        assert_eq!(store.live_ids().unwrap(), vec![id_hex(&SessionId([9; 16]))]);
        assert_eq!(store.log().unwrap().len(), 1);
        let id = store
            .push_command(&OperatorCommand::End(SessionId([9; 16])))
            .unwrap();
        assert_eq!(store.pending_commands().unwrap().len(), 1);
        store.finish_command(id, "ok").unwrap();
        assert_eq!(store.command_result(id).unwrap().as_deref(), Some("ok"));
        assert!(!store.server_running(Duration::from_secs(5)).unwrap());
        store.set_heartbeat(Some(now_us())).unwrap();
        assert!(store.server_running(Duration::from_secs(5)).unwrap());
    }
}
