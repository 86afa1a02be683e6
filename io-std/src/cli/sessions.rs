//! `tryst sessions --data-dir DIR | --store URL [--json]`: the session log (S1606) as a
//! table, or as JSON for scripts. It reads the store through its own
//! connection, so it works while the server runs (WAL mode).

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::end::{store_error, store_location};
use super::CliError;
use crate::store::LogRow;

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
}

/// Prints the log.
pub fn run(args: SessionsArgs) -> Result<(), CliError> {
    let location = store_location(args.data_dir.as_deref(), args.store.as_deref())?;
    let rows = location
        .open("")
        .and_then(|s| s.log())
        .map_err(store_error)?;
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
        "live": r.reason.is_none(),
    })
}

/// The log as an aligned text table.
pub fn table(rows: &[LogRow]) -> String {
    let header = [
        "session", "who", "whom", "start", "duration", "ext", "bytes", "end",
    ];
    let cells: Vec<[String; 8]> = rows
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
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
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
    for row in &cells {
        line(row);
    }
    if rows.is_empty() {
        out.push_str("(no sessions yet)\n");
    }
    out
}
