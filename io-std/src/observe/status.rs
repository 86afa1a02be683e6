//! What the operator sees of a running server: its live terminals (name,
//! last keepalive, observed address), its live sessions with their
//! remaining time, and its counters, gathered from the roles' loops
//! ([`gather`]: snapshot commands, answered where the state lives), as
//! JSON (what `tryst status` receives through the store), as a text table
//! (`tryst status`) and as the status page's HTML ([`crate::observe::page`]).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::role::session_server::{SessionHandle, SessionSnapshot};
use crate::role::trigger_server::{TriggerHandle, TriggerSnapshot};
use crate::store::id_hex;
use tryst_core::trigger_server::NatGuess;

/// How long a gather waits for each role's loop.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// The NAT type column when nothing is known (no trigger server here, or
/// it cannot tell: [`NatGuess::Unknown`]); the guess itself is the trigger
/// server's ([`NatGuess`], which says how it is made).
pub const NAT_UNKNOWN: &str = "unknown";

/// One live terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct TerminalRow {
    /// Its name.
    pub name: String,
    /// Its device ID (channel number), 16 hex digits.
    pub device: String,
    /// How long ago its last keepalive came (`None`: not known here).
    pub last_keepalive_secs: Option<f64>,
    /// Its address as the trigger server observes it (operator only).
    pub observed: Option<String>,
    /// The NAT type guess.
    pub nat: String,
}

/// One live session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// Its ID, 32 hex digits.
    pub id: String,
    /// Who asked.
    pub requester: String,
    /// Whom it asked for.
    pub target: String,
    /// Seconds since it started.
    pub age_secs: f64,
    /// Seconds of its permitted duration left (0 once over).
    pub remaining_secs: f64,
    /// Extensions granted.
    pub extensions: u32,
    /// The operator ended it; its record is awaited.
    pub forced: bool,
}

/// A running server as the operator sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// Live terminals, by name.
    pub terminals: Vec<TerminalRow>,
    /// Live sessions.
    pub sessions: Vec<SessionRow>,
    /// Counters, by name.
    pub counters: Vec<(String, u64)>,
}

/// The snapshots of both roles, joined into a [`Status`] (the trigger
/// server's table gives each terminal's last keepalive and address; a
/// session server alone leaves them unknown).
pub fn build(session: &SessionSnapshot, trigger: Option<&TriggerSnapshot>) -> Status {
    let terminals = session
        .terminals
        .iter()
        .map(|t| {
            let seen =
                trigger.and_then(|tr| tr.devices.iter().find(|d| d.device_id == t.udp_device_id));
            TerminalRow {
                name: t.name.clone(),
                device: format!("{:016x}", t.device_id.0),
                last_keepalive_secs: seen
                    .and_then(|d| d.last_keepalive_ago)
                    .map(|d| d.as_secs_f64()),
                observed: seen.and_then(|d| d.addr).map(|a: SocketAddr| a.to_string()),
                nat: seen.map_or(NatGuess::Unknown, |d| d.nat).label().to_owned(),
            }
        })
        .collect();
    let now = session.now;
    let sessions = session
        .sessions
        .iter()
        .map(|s| {
            let age = now.saturating_duration_since(s.start);
            let permitted = Duration::from_secs(u64::from(s.duration_secs));
            SessionRow {
                id: id_hex(&s.session_id),
                requester: s.requester.clone(),
                target: s.target.clone(),
                age_secs: age.as_secs_f64(),
                remaining_secs: permitted.saturating_sub(age).as_secs_f64(),
                extensions: s.extensions,
                forced: s.forced,
            }
        })
        .collect();
    let c = &session.counters;
    let mut counters: Vec<(String, u64)> = vec![
        ("terminal_channels".into(), session.channels as u64),
        ("pending_requests".into(), session.pending_requests as u64),
        ("handshake_failures".into(), c.handshake_failures),
        (
            "registrations_rate_limited".into(),
            c.registrations_rate_limited,
        ),
        ("identity_rate_limited".into(), c.identity_rate_limited),
        ("connections_refused".into(), c.connections_refused),
        ("open_failures".into(), c.open_failures),
        ("ignored_messages".into(), c.ignored_messages),
    ];
    if let Some(t) = trigger {
        let s = &t.stats;
        counters.extend([
            ("trigger_devices".into(), t.devices.len() as u64),
            ("keepalives_accepted".into(), s.keepalives_accepted),
            ("keepalives_forged".into(), s.keepalives_forged),
            ("keepalives_rate_limited".into(), s.keepalives_rate_limited),
            ("triggers_sent".into(), s.triggers_sent),
            ("link_handshakes_failed".into(), s.handshakes_failed),
        ]);
    }
    Status {
        terminals,
        sessions,
        counters,
    }
}

/// Asks the running roles for their snapshots (waiting at most
/// [`SNAPSHOT_WAIT`] for each) and joins them.
pub fn gather(session: &SessionHandle, trigger: Option<&TriggerHandle>) -> Result<Status, String> {
    let (s, t) = snapshots(session, trigger)?;
    Ok(build(&s, t.as_ref()))
}

/// Both roles' snapshots (the trigger's only if it runs here and answers).
pub fn snapshots(
    session: &SessionHandle,
    trigger: Option<&TriggerHandle>,
) -> Result<(SessionSnapshot, Option<TriggerSnapshot>), String> {
    // Both asked before either is waited for.
    let t = trigger.map(|t| t.snapshot());
    let s = session
        .snapshot()
        .wait_timeout(SNAPSHOT_WAIT)
        .ok_or("the session server did not answer")?
        .map_err(|e| e.to_string())?;
    let t = t
        .and_then(|r| r.wait_timeout(SNAPSHOT_WAIT))
        .and_then(Result::ok);
    Ok((s, t))
}

impl Status {
    /// As JSON (what `tryst status --json` prints).
    pub fn to_json(&self) -> Value {
        json!({
            "terminals": self.terminals.iter().map(|t| json!({
                "name": t.name,
                "device": t.device,
                "last_keepalive_secs": t.last_keepalive_secs,
                "observed": t.observed,
                "nat": t.nat,
            })).collect::<Vec<_>>(),
            "sessions": self.sessions.iter().map(|s| json!({
                "session_id": s.id,
                "who": s.requester,
                "whom": s.target,
                "age_secs": s.age_secs,
                "remaining_secs": s.remaining_secs,
                "extensions": s.extensions,
                "forced": s.forced,
            })).collect::<Vec<_>>(),
            "counters": self.counters.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })
    }

    /// Reads [`Status::to_json`]'s JSON back; `None` if it is not that.
    pub fn from_json(value: &Value) -> Option<Status> {
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let terminals = value
            .get("terminals")?
            .as_array()?
            .iter()
            .map(|t| {
                Some(TerminalRow {
                    name: text(t, "name")?,
                    device: text(t, "device")?,
                    last_keepalive_secs: t.get("last_keepalive_secs").and_then(Value::as_f64),
                    observed: text(t, "observed"),
                    nat: text(t, "nat").unwrap_or_else(|| NAT_UNKNOWN.to_owned()),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let sessions = value
            .get("sessions")?
            .as_array()?
            .iter()
            .map(|s| {
                Some(SessionRow {
                    id: text(s, "session_id")?,
                    requester: text(s, "who")?,
                    target: text(s, "whom")?,
                    age_secs: s.get("age_secs")?.as_f64()?,
                    remaining_secs: s.get("remaining_secs")?.as_f64()?,
                    extensions: u32::try_from(s.get("extensions")?.as_u64()?).ok()?,
                    forced: s.get("forced")?.as_bool()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let counters = value
            .get("counters")?
            .as_object()?
            .iter()
            .map(|(k, v)| Some((k.clone(), v.as_u64()?)))
            .collect::<Option<Vec<_>>>()?;
        Some(Status {
            terminals,
            sessions,
            counters,
        })
    }

    /// The operator's table (`tryst status`): terminals, sessions, counters.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("terminals ({} live)\n", self.terminals.len()));
        let rows: Vec<Vec<String>> = self
            .terminals
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.device.clone(),
                    t.last_keepalive_secs
                        .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s ago")),
                    t.observed.clone().unwrap_or_else(|| "-".to_owned()),
                    t.nat.clone(),
                ]
            })
            .collect();
        out.push_str(&aligned(
            &["name", "device", "last keepalive", "observed", "nat"],
            &rows,
        ));
        out.push_str(&format!("\nsessions ({} live)\n", self.sessions.len()));
        let rows: Vec<Vec<String>> = self
            .sessions
            .iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.requester.clone(),
                    s.target.clone(),
                    format!("{:.0}s", s.age_secs),
                    if s.forced {
                        "ending".to_owned()
                    } else {
                        format!("{:.0}s", s.remaining_secs)
                    },
                    s.extensions.to_string(),
                ]
            })
            .collect();
        out.push_str(&aligned(
            &["session", "who", "whom", "age", "remaining", "ext"],
            &rows,
        ));
        out.push_str("\ncounters\n");
        let rows: Vec<Vec<String>> = self
            .counters
            .iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect();
        out.push_str(&aligned(&["counter", "value"], &rows));
        out
    }
}

/// `rows` under `header` in aligned columns.
fn aligned(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_survives_its_json_and_tabulates() {
        let status = Status {
            terminals: vec![TerminalRow {
                name: "home".into(),
                device: "00000000000000ab".into(),
                last_keepalive_secs: Some(1.5),
                observed: Some("127.0.0.1:4000".into()),
                nat: NAT_UNKNOWN.into(),
            }],
            sessions: vec![SessionRow {
                id: "ab".repeat(16),
                requester: "phone".into(),
                target: "home".into(),
                age_secs: 3.0,
                remaining_secs: 57.0,
                extensions: 1,
                forced: false,
            }],
            counters: vec![("handshake_failures".into(), 2)],
        };
        let back = Status::from_json(&status.to_json()).expect("parses");
        assert_eq!(back, status);
        let table = status.table();
        assert!(table.contains("home") && table.contains("1.5s ago") && table.contains("57s"));
        assert!(table.contains("handshake_failures  2"), "{table}");
    }
}
