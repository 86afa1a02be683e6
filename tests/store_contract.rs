//! The contract of `ServerStore`, run against both backends: the embedded
//! SQLite store and the shared PostgreSQL one. Each contract is one
//! function over a `StoreLocation`; the `contract!` macro runs it once per
//! backend. The PostgreSQL runs skip (saying why) when
//! `TRYST_TEST_POSTGRES` is unset; `.ci/run` always sets it. After the
//! contract: what only the shared store promises (the database decides a
//! name binding between servers, migrations, owners).
//!
//! Declared as a test of the `tryst-std` package (see its Cargo.toml).

#[path = "pg_support/mod.rs"]
mod pg_support;

use std::time::Duration;

use tryst_core::names::TrustMode;
use tryst_core::session_server::{
    LateReport, Party, SessionEndReason, SessionExtended, SessionFact, SessionRecord,
    SessionStarted, SideReport,
};
use tryst_core::time::Instant;
use tryst_core::wire::{PublicKey, SessionId};
use tryst_std::store::pg::{PgStore, PG_SCHEMA_VERSION};
use tryst_std::store::{
    id_hex, now_us, parse_id, OperatorCommand, Origin, RefusalRow, ServerStore, SessionPath,
    ShardRow, SideEnd, StoreError, StoreLocation, StoredEnrolCode,
};

fn key(b: u8) -> PublicKey {
    PublicKey([b; 32])
}

fn started(id: u8, requester: &str, target: &str) -> SessionStarted {
    SessionStarted {
        session_id: SessionId([id; 16]),
        requester: requester.into(),
        requester_key: key(3),
        target: target.into(),
        target_key: key(1),
        start: Instant::from_micros(1_700_000_000_000_000 + u64::from(id)),
        duration_secs: 60,
    }
}

fn record_of(s: &SessionStarted, secs: u64) -> SessionRecord {
    SessionRecord {
        session_id: s.session_id,
        requester: s.requester.clone(),
        target: s.target.clone(),
        start: s.start,
        end: s.start + core::time::Duration::from_secs(secs),
        duration: core::time::Duration::from_secs(secs),
        permitted_secs: 120,
        extensions: 1,
        requester_side: None,
        target_side: None,
        reason: SessionEndReason::Forced,
    }
}

/// Started, extended and recorded sessions survive a reopen; the live
/// ones are the ones without a record.
fn sessions_round_trip_and_survive_a_reopen(at: &StoreLocation) {
    let s = started(7, "TERM3", "TERM1");
    {
        let mut store = at.create("a").expect("create");
        store
            .record(&[
                SessionFact::NameBound {
                    name: "TERM1".into(),
                    key: key(1),
                },
                SessionFact::SessionStarted(s.clone()),
                SessionFact::SessionExtended(SessionExtended {
                    session_id: s.session_id,
                    duration_secs: 120,
                    extensions: 1,
                    at: s.start + core::time::Duration::from_secs(42),
                }),
            ])
            .expect("record");
    }
    let mut store = at.create("a").expect("reopen");
    assert_eq!(
        store.bindings().expect("bindings"),
        vec![("TERM1".to_owned(), key(1), Origin::Tofu)]
    );
    let facts = store.live_facts().expect("live facts");
    assert_eq!(facts.len(), 2);
    // The row holds the current duration; the extension fact restores the count.
    assert_eq!(
        facts[0],
        SessionFact::SessionStarted(SessionStarted {
            duration_secs: 120,
            ..s.clone()
        })
    );
    assert!(matches!(&facts[1], SessionFact::SessionExtended(x) if x.duration_secs == 120));
    assert_eq!(
        store.live_ids().expect("live ids"),
        vec![id_hex(&s.session_id)]
    );
    let prefix = &id_hex(&s.session_id)[..8];
    assert_eq!(
        store.find_sessions(prefix).expect("find"),
        vec![(id_hex(&s.session_id), true)]
    );
    store
        .record(&[SessionFact::SessionRecord(record_of(&s, 90))])
        .expect("record");
    assert!(store.live_facts().expect("live facts").is_empty());
    assert!(store.live_ids().expect("live ids").is_empty());
    let log = store.log().expect("log");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].reason.as_deref(), Some("forced"));
    assert_eq!(log[0].duration_us, Some(90_000_000));
    assert_eq!(log[0].permitted_secs, 120);
    assert_eq!(parse_id(&log[0].id), Some(s.session_id));
    assert_eq!(
        store.find_sessions(prefix).expect("find"),
        vec![(id_hex(&s.session_id), false)]
    );
    // A one-shot tool's read-only open sees the same log.
    assert_eq!(at.open("").expect("open").log().expect("log"), log);
}

/// An enrolment holds its name against any other key.
fn enrolment_refuses_a_name_bound_to_another_key(at: &StoreLocation) {
    let store = at.create("").expect("create");
    assert!(store.enroll("cam", &key(1)).expect("enroll"));
    assert!(store.enroll("cam", &key(1)).expect("enroll again"));
    assert!(!store.enroll("cam", &key(2)).expect("enroll another key"));
    assert_eq!(store.key_of("cam").expect("key_of"), Some(key(1)));
    assert_eq!(store.key_of("nobody").expect("key_of"), None);
    assert_eq!(
        store.bindings().expect("bindings"),
        vec![("cam".to_owned(), key(1), Origin::Enrolled)]
    );
}

/// Commands are answered once, and withdrawn only while unanswered.
fn commands_are_answered_once_and_withdrawn_only_unanswered(at: &StoreLocation) {
    let store = at.create("").expect("create");
    let end = OperatorCommand::End(SessionId([0xab; 16]));
    let enroll = OperatorCommand::Enroll {
        name: "TERM1".into(),
        key: key(4),
    };
    let a = store.push_command(&end).expect("push");
    let b = store.push_command(&enroll).expect("push");
    let pending: Vec<_> = store
        .pending_commands()
        .expect("pending")
        .into_iter()
        .map(|p| p.command)
        .collect();
    assert_eq!(pending, [Some(end), Some(enroll)]);
    assert_eq!(store.command_result(a).expect("result"), None);
    store.finish_command(a, "ok").expect("finish");
    assert_eq!(
        store.command_result(a).expect("result").as_deref(),
        Some("ok")
    );
    assert!(!store.withdraw_command(a).expect("withdraw"));
    assert!(store.withdraw_command(b).expect("withdraw"));
    assert!(store.pending_commands().expect("pending").is_empty());
    store.prune_commands(Duration::ZERO).expect("prune");
}

/// What a server starts from: the registry, every binding's last-seen
/// time, then the live sessions; an unbind removes only the bound key's
/// binding.
fn server_state_rebuilds_bindings_seen_times_and_live_sessions(at: &StoreLocation) {
    let mut store = at.create("a").expect("create");
    let s = started(5, "TERM3", "TERM1");
    let seen = Instant::from_micros(1_700_000_000_000_000);
    store
        .record(&[
            SessionFact::NameBound {
                name: "TERM1".into(),
                key: key(1),
            },
            SessionFact::NameSeen {
                name: "TERM1".into(),
                at: seen,
            },
            SessionFact::SessionStarted(s.clone()),
        ])
        .expect("record");
    let state = store
        .server_state(TrustMode::TrustOnFirstUse)
        .expect("state");
    assert_eq!(state.registry.bindings().count(), 1);
    assert!(state.skipped.is_empty());
    assert_eq!(
        state.live,
        [
            SessionFact::NameSeen {
                name: "TERM1".into(),
                at: seen
            },
            SessionFact::SessionStarted(s)
        ]
    );
    store
        .record(&[SessionFact::NameUnbound {
            name: "TERM1".into(),
            key: key(2),
        }])
        .expect("unbind other key");
    assert_eq!(store.bindings().expect("bindings").len(), 1);
    store
        .record(&[SessionFact::NameUnbound {
            name: "TERM1".into(),
            key: key(1),
        }])
        .expect("unbind");
    assert!(store.bindings().expect("bindings").is_empty());
}

/// A heartbeat says a server runs; clearing it says none does.
fn the_heartbeat_says_whether_a_server_runs(at: &StoreLocation) {
    let store = at.create("a").expect("create");
    let fresh = Duration::from_secs(5);
    assert!(!store.server_running(fresh).expect("running"));
    store.set_heartbeat(Some(now_us())).expect("beat");
    let tool = at.open("").expect("open");
    assert!(tool.server_running(fresh).expect("running"));
    store
        .set_heartbeat(Some(now_us() - 60_000_000))
        .expect("old beat");
    assert!(!tool.server_running(fresh).expect("running"));
    store.set_heartbeat(None).expect("clear");
    assert!(!tool.server_running(fresh).expect("running"));
    store.relax_durability().expect("relax");
    store.set_heartbeat(Some(now_us())).expect("beat");
    assert!(tool.server_running(fresh).expect("running"));
}

/// One-time enrolment codes: stored by their hash with an expiry, listed
/// while unspent and unexpired, carried by the operator command, and spent
/// by the `EnrolCodeUsed` fact, which enrols the name for the key.
fn enrol_codes_are_kept_by_hash_until_spent_or_expired(at: &StoreLocation) {
    let mut store = at.create("a").expect("create");
    let now = now_us();
    let home = StoredEnrolCode {
        hash: [0xa1; 32],
        name: "home".into(),
        expires_us: now + 3_600_000_000,
    };
    let stale = StoredEnrolCode {
        hash: [0xb2; 32],
        name: "garage".into(),
        expires_us: now - 1,
    };
    store.add_enrol_code(&home).expect("add");
    store.add_enrol_code(&stale).expect("add expired");
    assert_eq!(
        store.enrol_codes(now).expect("codes"),
        std::slice::from_ref(&home)
    );
    // The same hash twice is refused (a code is minted once).
    assert!(store.add_enrol_code(&home).is_err());
    // What `tryst invite --enrol` tells the running server.
    let command = OperatorCommand::EnrolCode(home.clone());
    let id = store.push_command(&command).expect("push");
    let pending = store.pending_commands().expect("pending");
    assert_eq!(
        pending.last().map(|p| (p.id, p.command.clone())),
        Some((id, Some(command)))
    );
    let state = store.server_state(TrustMode::Closed).expect("state");
    assert_eq!(state.enrol_codes.len(), 1);
    assert_eq!(state.enrol_codes[0].name, "home");
    assert_eq!(state.enrol_codes[0].hash, [0xa1; 32]);
    store
        .record(&[SessionFact::EnrolCodeUsed {
            name: "home".into(),
            key: key(7),
            hash: [0xa1; 32],
        }])
        .expect("spend");
    assert!(store.enrol_codes(now).expect("codes").is_empty());
    assert_eq!(
        store.bindings().expect("bindings"),
        vec![("home".to_owned(), key(7), Origin::Enrolled)]
    );
    let state = at
        .open("")
        .expect("open")
        .server_state(TrustMode::Closed)
        .expect("state");
    assert!(state.enrol_codes.is_empty());
    assert_eq!(
        state
            .registry
            .key_of(tryst_core::wire::Name::new("home").expect("name")),
        Some(key(7))
    );
}

/// A side's report: `sent` bytes out, half of that in, `ms` long.
fn side(reason: tryst_core::wire::EndReason, sent: u64, ms: u64) -> SideReport {
    SideReport {
        reason,
        bytes_sent: sent,
        bytes_received: sent / 2,
        duration_ms: ms,
        received: Instant::from_micros(1_700_000_000_000_000),
    }
}

/// The log shows each side's end (reason, duration); a late report fills
/// in a side the record lacked, with its bytes, and never overwrites one.
fn a_late_report_joins_the_record_and_never_overwrites_a_side(at: &StoreLocation) {
    use tryst_core::wire::EndReason;
    let s = started(8, "phone", "home");
    let mut store = at.create("a").expect("create");
    let record = SessionRecord {
        requester_side: Some(side(EndReason::Forced, 100, 2500)),
        ..record_of(&s, 12)
    };
    store
        .record(&[
            SessionFact::SessionStarted(s.clone()),
            SessionFact::SessionRecord(record),
        ])
        .expect("record");
    let log = store.log().expect("log");
    assert_eq!(
        log[0].who_end,
        Some(SideEnd {
            reason: "forced".into(),
            duration_ms: 2500
        })
    );
    assert_eq!(log[0].whom_end, None);
    assert_eq!((log[0].bytes_r2t, log[0].bytes_t2r), (100, 50));
    let late = |party, sent, ms| {
        SessionFact::LateReport(LateReport {
            session_id: s.session_id,
            party,
            report: side(EndReason::Forced, sent, ms),
        })
    };
    store
        .record(&[late(Party::Target, 300, 4000)])
        .expect("late target");
    // A requester's report again changes nothing: the record has one.
    store
        .record(&[late(Party::Requester, 9_999, 1)])
        .expect("late requester");
    let log = at.open("").expect("open").log().expect("log");
    assert_eq!(
        log[0].whom_end,
        Some(SideEnd {
            reason: "forced".into(),
            duration_ms: 4000
        })
    );
    assert_eq!(log[0].who_end.as_ref().map(|e| e.duration_ms), Some(2500));
    // Target sent 300 (to the requester), received 150 (of the 100 sent: the larger).
    assert_eq!((log[0].bytes_r2t, log[0].bytes_t2r), (150, 300));
}

/// Refused requests are kept with their reasons, oldest first.
fn refused_requests_are_kept_with_their_reasons(at: &StoreLocation) {
    let store = at.create("a").expect("create");
    assert!(store.refusals().expect("refusals").is_empty());
    let row = |at_us, requester: &str, target: &str, reason: &str| RefusalRow {
        at_us,
        requester: requester.into(),
        target: target.into(),
        reason: reason.into(),
    };
    let b = row(
        20,
        "mallory",
        "home",
        "not permitted (not in the target's list)",
    );
    let a = row(10, "phone", "ghost", "unknown target");
    store.record_refusal(&b).expect("keep");
    store.record_refusal(&a).expect("keep");
    assert_eq!(
        at.open("").expect("open").refusals().expect("refusals"),
        vec![a, b]
    );
}

/// Issue 15: the relay's byte count joins its session's row, before or
/// after the record (the larger of two reports is kept), and gives the
/// path: `relayed` once it carried bytes, `direct` otherwise.
fn the_relays_byte_count_gives_the_sessions_path(at: &StoreLocation) {
    let mut store = at.create("a").expect("create");
    let (relayed, direct) = (started(5, "phone", "home"), started(6, "cam", "home"));
    store
        .record(&[
            SessionFact::SessionStarted(relayed.clone()),
            SessionFact::SessionStarted(direct.clone()),
        ])
        .expect("record");
    store
        .record_relayed(&relayed.session_id, 2_000)
        .expect("relayed");
    store
        .record(&[
            SessionFact::SessionRecord(record_of(&relayed, 5)),
            SessionFact::SessionRecord(record_of(&direct, 5)),
        ])
        .expect("record");
    store
        .record_relayed(&relayed.session_id, 1_500)
        .expect("a smaller, stale report");
    // A session that was never started is no error and makes no row.
    store
        .record_relayed(&SessionId([0xee; 16]), 9)
        .expect("unknown session");
    let log = at.open("").expect("open").log().expect("log");
    assert_eq!(log.len(), 2);
    let row = |id: &SessionId| {
        log.iter()
            .find(|r| r.id == id_hex(id))
            .expect("the session's row")
    };
    assert_eq!(row(&relayed.session_id).relayed_bytes, 2_000);
    assert_eq!(row(&relayed.session_id).path(), SessionPath::Relayed);
    assert_eq!(row(&direct.session_id).relayed_bytes, 0);
    assert_eq!(row(&direct.session_id).path(), SessionPath::Direct);
}

fn shard(name: &str, port: u16, k: u8) -> ShardRow {
    ShardRow {
        name: name.to_owned(),
        link: format!("127.0.0.1:{port}").parse().expect("addr"),
        udp: format!("127.0.0.1:{}", port + 1).parse().expect("addr"),
        key: key(k),
    }
}

/// Issue 18 item 3: the shard map holds each trigger server once by name
/// (adding it again gives it new addresses and key), in name order, and
/// every server sharing the store reads the same map.
fn the_shard_map_holds_each_trigger_server_once_by_name(at: &StoreLocation) {
    let store = at.create("a").expect("create");
    assert!(store.shards().expect("shards").is_empty());
    assert!(store.add_shard(&shard("ts-b", 7500, 2)).expect("add"));
    assert!(store.add_shard(&shard("ts-a", 7400, 1)).expect("add"));
    // The same name again: moved, not added.
    assert!(!store.add_shard(&shard("ts-b", 7600, 3)).expect("update"));
    let other = at.open("").expect("open");
    assert_eq!(
        other.shards().expect("shards"),
        vec![shard("ts-a", 7400, 1), shard("ts-b", 7600, 3)]
    );
    assert!(other.remove_shard("ts-a").expect("remove"));
    assert!(!other.remove_shard("ts-a").expect("again"));
    assert_eq!(
        store.shards().expect("shards"),
        vec![shard("ts-b", 7600, 3)]
    );
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    super::$name(&super::StoreLocation::DataDir(dir.path().to_path_buf()));
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let Some(db) = super::pg_support::test_db(stringify!($name)) else {
                        return;
                    };
                    super::$name(&super::StoreLocation::Postgres(db.url.clone()));
                }
            )*
        }
    };
}

contract!(
    sessions_round_trip_and_survive_a_reopen,
    enrolment_refuses_a_name_bound_to_another_key,
    commands_are_answered_once_and_withdrawn_only_unanswered,
    server_state_rebuilds_bindings_seen_times_and_live_sessions,
    the_heartbeat_says_whether_a_server_runs,
    enrol_codes_are_kept_by_hash_until_spent_or_expired,
    a_late_report_joins_the_record_and_never_overwrites_a_side,
    refused_requests_are_kept_with_their_reasons,
    the_relays_byte_count_gives_the_sessions_path,
    the_shard_map_holds_each_trigger_server_once_by_name,
);

/// A version 5 SQLite store (before the shard map) gains the table at the
/// next server start.
#[test]
fn sqlite_a_version_5_store_gains_the_shard_map() {
    let dir = tempfile::tempdir().expect("tempdir");
    let at = StoreLocation::DataDir(dir.path().to_path_buf());
    drop(at.create("a").expect("first start"));
    let db = rusqlite::Connection::open(dir.path().join("tryst.db")).expect("open");
    db.execute_batch(
        "DROP TABLE trigger_shards;
         UPDATE meta SET value = '5' WHERE key = 'schema';",
    )
    .expect("back to version 5");
    drop(db);
    let store = at.create("a").expect("migrating start");
    assert!(store.add_shard(&shard("ts-a", 7400, 1)).expect("add"));
    assert_eq!(store.shards().expect("shards").len(), 1);
}

/// A version 4 database (before the shard map) gains it at the next start.
#[test]
fn pg_a_version_4_database_gains_the_shard_map() {
    let Some(db) = pg_support::test_db("pg_migration_v5") else {
        return;
    };
    {
        drop(PgStore::create(&db.url).expect("first start"));
        let mut client = ::postgres::Client::connect(&db.url, ::postgres::NoTls).expect("connect");
        client
            .batch_execute(
                "DROP TABLE trigger_shards; DELETE FROM schema_version WHERE version >= 5;",
            )
            .expect("back to version 4");
    }
    let store = PgStore::create(&db.url).expect("migrating start");
    let all: Vec<i64> = (1..=PG_SCHEMA_VERSION).collect();
    assert_eq!(store.applied_versions().expect("versions"), all);
    assert_eq!(PG_SCHEMA_VERSION, 5);
    assert!(store.add_shard(&shard("ts-a", 7400, 1)).expect("add"));
}

/// A version 4 SQLite store (before the relay's byte count) gains the
/// column at the next server start and keeps its sessions.
#[test]
fn sqlite_a_version_4_store_gains_the_relayed_bytes_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let at = StoreLocation::DataDir(dir.path().to_path_buf());
    {
        let mut store = at.create("a").expect("first start");
        store
            .record(&[SessionFact::SessionStarted(started(4, "phone", "home"))])
            .expect("record");
    }
    let db = rusqlite::Connection::open(dir.path().join("tryst.db")).expect("open");
    db.execute_batch(
        "ALTER TABLE sessions DROP COLUMN relayed_bytes;
         UPDATE meta SET value = '4' WHERE key = 'schema';",
    )
    .expect("back to version 4");
    drop(db);
    let store = at.create("a").expect("migrating start");
    store
        .record_relayed(&SessionId([4; 16]), 77)
        .expect("relayed");
    let log = store.log().expect("log");
    assert_eq!(log[0].relayed_bytes, 77);
}

/// A database at the previous schema version (no refusals table) gains
/// it at the next server start, and keeps its sessions.
#[test]
fn pg_a_version_2_database_gains_the_refusals_table() {
    let Some(db) = pg_support::test_db("pg_migration_v3") else {
        return;
    };
    {
        let mut store = PgStore::create(&db.url).expect("first start");
        store
            .record(&[SessionFact::SessionStarted(started(4, "phone", "home"))])
            .expect("record");
        let mut client = ::postgres::Client::connect(&db.url, ::postgres::NoTls).expect("connect");
        client
            .batch_execute(
                "DROP TABLE refusals; ALTER TABLE sessions DROP COLUMN relayed_bytes;
                 DROP TABLE trigger_shards; DELETE FROM schema_version WHERE version >= 3;",
            )
            .expect("back to version 2");
    }
    let store = PgStore::create(&db.url).expect("migrating start");
    let all: Vec<i64> = (1..=PG_SCHEMA_VERSION).collect();
    assert_eq!(store.applied_versions().expect("versions"), all);
    assert!(store.refusals().expect("refusals").is_empty());
    assert_eq!(store.live_ids().expect("live").len(), 1);
}

/// A version 3 database (before the relay's byte count) gains the column
/// at the next server start and keeps its sessions.
#[test]
fn pg_a_version_3_database_gains_the_relayed_bytes_column() {
    let Some(db) = pg_support::test_db("pg_migration_v4") else {
        return;
    };
    {
        let mut store = PgStore::create(&db.url).expect("first start");
        store
            .record(&[SessionFact::SessionStarted(started(4, "phone", "home"))])
            .expect("record");
        let mut client = ::postgres::Client::connect(&db.url, ::postgres::NoTls).expect("connect");
        client
            .batch_execute(
                "ALTER TABLE sessions DROP COLUMN relayed_bytes; DROP TABLE trigger_shards;
                 DELETE FROM schema_version WHERE version >= 4;",
            )
            .expect("back to version 3");
    }
    let store = PgStore::create(&db.url).expect("migrating start");
    let all: Vec<i64> = (1..=PG_SCHEMA_VERSION).collect();
    assert_eq!(store.applied_versions().expect("versions"), all);
    store
        .record_relayed(&SessionId([4; 16]), 77)
        .expect("relayed");
    assert_eq!(store.log().expect("log")[0].relayed_bytes, 77);
}

/// Two servers spend one enrolment code at once (each for its own key):
/// only one batch commits, so the code enrols exactly one key.
#[test]
fn pg_an_enrolment_code_is_spent_once_across_servers() {
    let Some(db) = pg_support::test_db("pg_enrol_code_spent_once") else {
        return;
    };
    let mut a = PgStore::create(&db.url).expect("a").with_owner("a");
    let mut b = PgStore::create(&db.url).expect("b").with_owner("b");
    a.add_enrol_code(&StoredEnrolCode {
        hash: [0xc3; 32],
        name: "home".into(),
        expires_us: now_us() + 3_600_000_000,
    })
    .expect("add");
    let spend = |k: u8| SessionFact::EnrolCodeUsed {
        name: "home".into(),
        key: key(k),
        hash: [0xc3; 32],
    };
    a.record(&[spend(1)]).expect("first spends");
    assert!(matches!(
        b.record(&[spend(2)]),
        Err(StoreError::NameTaken(ref n)) if n == "home"
    ));
    assert_eq!(a.key_of("home").expect("key_of"), Some(key(1)));
}

/// Two servers bind one name at once, each for its own key: the database
/// lets exactly one commit, and the other's whole batch fails (its start
/// fact with it), so nothing of it is acknowledged.
#[test]
fn pg_two_servers_never_bind_one_name_to_two_keys() {
    let Some(db) = pg_support::test_db("pg_two_servers_never_bind") else {
        return;
    };
    let mut a = PgStore::create(&db.url).expect("a").with_owner("a");
    let mut b = PgStore::create(&db.url).expect("b").with_owner("b");
    let bind = |k: u8| SessionFact::NameBound {
        name: "CAM".into(),
        key: key(k),
    };
    // Both at once: each on its own thread, through the unique key.
    let (ra, rb) = std::thread::scope(|scope| {
        let ta = scope.spawn(|| a.record(&[bind(1)]));
        let tb = scope
            .spawn(|| b.record(&[bind(2), SessionFact::SessionStarted(started(9, "X", "CAM"))]));
        (ta.join().expect("a joins"), tb.join().expect("b joins"))
    });
    let won: Vec<bool> = [&ra, &rb].iter().map(|r| r.is_ok()).collect();
    assert_eq!(
        won.iter().filter(|w| **w).count(),
        1,
        "one commits: {ra:?} {rb:?}"
    );
    let lost = if ra.is_ok() { rb } else { ra };
    assert!(
        matches!(lost, Err(StoreError::NameTaken(ref n)) if n == "CAM"),
        "{lost:?}"
    );
    let bound = a.key_of("CAM").expect("key_of").expect("bound");
    assert!(bound == key(1) || bound == key(2));
    // The same key again is no conflict; the other key still is.
    let winner = if bound == key(1) { 1 } else { 2 };
    a.record(&[bind(winner)]).expect("same key again");
    assert!(matches!(
        b.record(&[bind(3 - winner)]),
        Err(StoreError::NameTaken(_))
    ));
    if winner == 1 {
        // b's batch rolled back whole: its session start is not there.
        assert!(a.log().expect("log").is_empty());
    }
}

/// Migrations are numbered and applied once, whoever starts first; a
/// tool's read-only open of a database no server set up is refused.
#[test]
fn pg_migrations_are_versioned_and_run_once() {
    let Some(db) = pg_support::test_db("pg_migrations") else {
        return;
    };
    assert!(matches!(
        PgStore::open(&db.url),
        Err(StoreError::MissingDatabase(_))
    ));
    let a = PgStore::create(&db.url).expect("first start");
    let b = PgStore::create(&db.url).expect("second start");
    let all: Vec<i64> = (1..=PG_SCHEMA_VERSION).collect();
    assert_eq!(a.applied_versions().expect("versions"), all);
    assert_eq!(b.applied_versions().expect("versions"), all);
    PgStore::open(&db.url).expect("open after set-up");
}

/// In a shared store each server restores only the live sessions it
/// started, and an `end` goes to the owner of the session.
#[test]
fn pg_each_server_restores_its_own_sessions_and_gets_its_ends() {
    let Some(db) = pg_support::test_db("pg_owners") else {
        return;
    };
    let mut a = PgStore::create(&db.url).expect("a").with_owner("a");
    let mut b = PgStore::create(&db.url).expect("b").with_owner("b");
    let sa = started(1, "P", "Q");
    let sb = started(2, "R", "S");
    a.record(&[SessionFact::SessionStarted(sa.clone())])
        .expect("a");
    b.record(&[SessionFact::SessionStarted(sb.clone())])
        .expect("b");
    assert_eq!(
        a.live_facts().expect("a live"),
        [SessionFact::SessionStarted(sa.clone())]
    );
    assert_eq!(
        b.live_facts().expect("b live"),
        [SessionFact::SessionStarted(sb.clone())]
    );
    let tool = PgStore::open(&db.url).expect("tool");
    assert_eq!(tool.live_ids().expect("all live").len(), 2);
    let end_b = tool
        .push_command(&OperatorCommand::End(sb.session_id))
        .expect("push");
    assert!(a.pending_commands().expect("a pending").is_empty());
    let pending = b.pending_commands().expect("b pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, end_b);
}

/// `--store` picks the backend: a `postgres://` URL, or `sqlite` (and by
/// default) the data dir's file; anything else is refused.
#[test]
fn store_location_comes_from_store_or_the_data_dir() {
    let dir = std::path::Path::new("/var/lib/tryst");
    let url = "postgres://tryst:pw@db/tryst";
    assert_eq!(
        StoreLocation::from_args(Some(dir), Some(url)),
        Ok(StoreLocation::Postgres(url.to_owned()))
    );
    assert_eq!(
        StoreLocation::from_args(None, Some("postgresql://h/d")),
        Ok(StoreLocation::Postgres("postgresql://h/d".to_owned()))
    );
    for store in [None, Some("sqlite")] {
        assert_eq!(
            StoreLocation::from_args(Some(dir), store),
            Ok(StoreLocation::DataDir(dir.to_path_buf()))
        );
    }
    assert!(StoreLocation::from_args(None, None).is_err());
    assert!(StoreLocation::from_args(None, Some("sqlite")).is_err());
    assert!(StoreLocation::from_args(Some(dir), Some("mysql://h/d")).is_err());
    // The password never shows.
    let shown = StoreLocation::Postgres(url.to_owned()).describe();
    assert_eq!(shown, "postgres://tryst@db/tryst");
}

/// A database nobody listens on is a typed error that shows no password.
#[test]
fn an_unreachable_database_is_a_typed_error_without_the_password() {
    let at = StoreLocation::Postgres("postgres://tryst:hunter2@127.0.0.1:1/tryst".to_owned());
    let Err(err) = at.open("") else {
        panic!("nothing listens on port 1");
    };
    assert!(matches!(err, StoreError::Postgres { .. }), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}
