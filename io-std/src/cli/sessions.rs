//! `tryst sessions --data-dir DIR | --store URL [--json] [--live] [--name NAME]
//! [--since WHEN] [--path direct|relayed] [--refused]`: the session log
//! (S1606) as a table, or as JSON for scripts, with each side's end reason
//! and duration as its end notification told them, and the path it took
//! (`relayed` once the relay carried any of its bytes, with that count). `--refused` lists the refused requests instead,
//! with the reason the server knows (the requester only ever got the
//! uniform answer). It reads the store through its own connection, so it
//! works while the server runs (WAL mode).

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::end::{store_error, store_location};
use super::CliError;
use crate::store::{now_us, LogRow, RefusalRow, SessionPath, SideEnd};

/// Arguments of `tryst sessions`.
#[derive(Debug, clap::Args)]
pub struct SessionsArgs {
    /// The server's data dir (its `tryst.db`).
    #[arg(long, value_name = "DIR", required_unless_present = "store")]
    pub data_dir: Option<PathBuf>,
    /// The server's store instead: a `postgres://USER@HOST/DB` URL (or
    /// `sqlite` for the data dir's file); or `TRYST_STORE`.
    #[arg(long, value_name = "URL", env = "TRYST_STORE")]
    pub store: Option<String>,
    /// One JSON array of session objects instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Only the live sessions (started, not yet recorded).
    #[arg(long, conflicts_with = "refused")]
    pub live: bool,
    /// Only the sessions (or refusals) NAME took part in, on either side.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Only what started (or was refused) since WHEN: a duration back from
    /// now (`90s`, `2h`, `7d`) or a UTC time (`2026-12-04T21:00:00Z`).
    #[arg(long, value_name = "WHEN", value_parser = parse_since)]
    pub since: Option<Since>,
    /// Only the sessions that took this path: `direct`, or `relayed` (the
    /// relay carried some of their bytes).
    #[arg(long, value_name = "PATH", value_parser = parse_path, conflicts_with = "refused")]
    pub path: Option<SessionPath>,
    /// The refused connection requests instead, each with its real reason.
    #[arg(long)]
    pub refused: bool,
}

/// Parses `--path`.
fn parse_path(text: &str) -> Result<SessionPath, String> {
    SessionPath::parse(text).ok_or_else(|| format!("{text:?} is neither `direct` nor `relayed`"))
}

/// A `--since` value: a duration back from now, or a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This long before now.
    Ago(Duration),
    /// From this time on (µs since the Unix epoch).
    At(u64),
}

impl Since {
    /// The earliest time it admits, µs since the Unix epoch, at `now_us`.
    pub fn from_us(self, now_us: u64) -> u64 {
        match self {
            Since::Ago(d) => {
                now_us.saturating_sub(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            }
            Since::At(at) => at,
        }
    }
}

/// Parses `--since`: a duration (`90s`, `2h`) or an RFC 3339 UTC time.
pub fn parse_since(text: &str) -> Result<Since, String> {
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(Since::Ago(d));
    }
    match humantime::parse_rfc3339_weak(text) {
        Ok(at) => {
            let us = at
                .duration_since(UNIX_EPOCH)
                .map_err(|_| format!("{text:?} is before 1970"))?
                .as_micros();
            Ok(Since::At(u64::try_from(us).unwrap_or(u64::MAX)))
        }
        Err(_) => Err(format!(
            "{text:?} is neither a duration (90s, 2h, 7d) nor a UTC time (2026-12-04T21:00:00Z)"
        )),
    }
}

/// Whether `row` passes the filters.
fn keep_session(args: &SessionsArgs, row: &LogRow, since_us: Option<u64>) -> bool {
    (!args.live || row.reason.is_none())
        && args
            .name
            .as_deref()
            .is_none_or(|n| row.requester == n || row.target == n)
        && since_us.is_none_or(|at| row.start_us >= at)
        && args.path.is_none_or(|p| row.path() == p)
}

/// Whether `row` passes the filters.
fn keep_refusal(args: &SessionsArgs, row: &RefusalRow, since_us: Option<u64>) -> bool {
    args.name
        .as_deref()
        .is_none_or(|n| row.requester == n || row.target == n)
        && since_us.is_none_or(|at| row.at_us >= at)
}

/// Prints the log.
pub fn run(args: SessionsArgs) -> Result<(), CliError> {
    let location = store_location(args.data_dir.as_deref(), args.store.as_deref())?;
    let store = location.open("").map_err(store_error)?;
    let since_us = args.since.map(|s| s.from_us(now_us()));
    if args.refused {
        let rows: Vec<RefusalRow> = store
            .refusals()
            .map_err(store_error)?
            .into_iter()
            .filter(|r| keep_refusal(&args, r, since_us))
            .collect();
        if args.json {
            let list: Vec<serde_json::Value> = rows.iter().map(refusal_json).collect();
            let text = serde_json::to_string_pretty(&list).map_err(CliError::failed)?;
            println!("{text}");
        } else {
            print!("{}", refusal_table(&rows));
        }
        return Ok(());
    }
    let rows: Vec<LogRow> = store
        .log()
        .map_err(store_error)?
        .into_iter()
        .filter(|r| keep_session(&args, r, since_us))
        .collect();
    if args.json {
        let list: Vec<serde_json::Value> = rows.iter().map(to_json).collect();
        let text = serde_json::to_string_pretty(&list).map_err(CliError::failed)?;
        println!("{text}");
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

/// A start time as RFC 3339 (UTC, seconds).
fn start_text(start_us: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_micros(start_us);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A side's end as JSON: its reason and duration, or `null`.
fn side_json(side: Option<&SideEnd>) -> serde_json::Value {
    match side {
        Some(s) => json!({
            "reason": s.reason,
            "duration_secs": s.duration_ms as f64 / 1e3,
        }),
        None => serde_json::Value::Null,
    }
}

/// A side's end in the table: `forced 12.3s`, or `-` when it never said.
fn side_text(side: Option<&SideEnd>) -> String {
    side.map_or_else(
        || "-".to_owned(),
        |s| format!("{} {:.1}s", s.reason, s.duration_ms as f64 / 1e3),
    )
}

fn refusal_json(r: &RefusalRow) -> serde_json::Value {
    json!({
        "at": start_text(r.at_us),
        "at_unix_us": r.at_us,
        "who": r.requester,
        "whom": r.target,
        "reason": r.reason,
    })
}

/// The refused requests as an aligned text table.
pub fn refusal_table(rows: &[RefusalRow]) -> String {
    let header = ["at", "who", "whom", "reason"];
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                start_text(r.at_us),
                r.requester.clone(),
                r.target.clone(),
                r.reason.clone(),
            ]
        })
        .collect();
    let mut out = aligned(&header, &cells);
    if rows.is_empty() {
        out.push_str("(no refused requests)\n");
    }
    out
}

fn to_json(r: &LogRow) -> serde_json::Value {
    json!({
        "session_id": r.id,
        "who": r.requester,
        "whom": r.target,
        "start": start_text(r.start_us),
        "start_unix_us": r.start_us,
        "duration_secs": r.duration_us.map(|d| d as f64 / 1e6),
        "permitted_secs": r.permitted_secs,
        "extensions": r.extensions,
        "bytes": r.bytes_r2t.saturating_add(r.bytes_t2r),
        "bytes_who_to_whom": r.bytes_r2t,
        "bytes_whom_to_who": r.bytes_t2r,
        "end_reason": r.reason,
        "who_end": side_json(r.who_end.as_ref()),
        "whom_end": side_json(r.whom_end.as_ref()),
        "path": r.path().name(),
        "relayed_bytes": r.relayed_bytes,
        "live": r.reason.is_none(),
    })
}

/// The log as an aligned text table.
pub fn table(rows: &[LogRow]) -> String {
    let header = [
        "session", "who", "whom", "start", "duration", "ext", "bytes", "end", "who end",
        "whom end", "path", "relayed",
    ];
    let cells: Vec<[String; 12]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.requester.clone(),
                r.target.clone(),
                start_text(r.start_us),
                r.duration_us
                    .map_or_else(|| "-".to_owned(), |d| format!("{:.1}s", d as f64 / 1e6)),
                r.extensions.to_string(),
                r.bytes_r2t.saturating_add(r.bytes_t2r).to_string(),
                r.reason.clone().unwrap_or_else(|| "live".to_owned()),
                side_text(r.who_end.as_ref()),
                side_text(r.whom_end.as_ref()),
                r.path().name().to_owned(),
                r.relayed_bytes.to_string(),
            ]
        })
        .collect();
    let mut out = aligned(&header, &cells);
    if rows.is_empty() {
        out.push_str("(no sessions yet)\n");
    }
    out
}

/// `header` and `cells` as columns padded to their widest cell.
fn aligned<const N: usize>(header: &[&str; N], cells: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |row: &[String]| {
        let text: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(&header.map(str::to_owned));
    for row in cells {
        line(row);
    }
    out
}
