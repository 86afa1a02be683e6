//! The operator's status page (`--http ADDR`): live terminals, live
//! sessions with their remaining time and an "end" button, and the
//! session log with filters (name, live, since).
//!
//! Who may see it: whoever holds the operator token, a file in the data
//! dir ([`OPERATOR_TOKEN_FILE`], 32 random bytes as hex, mode 0600,
//! created at the first start). The token is posted once by a login form
//! (never in a URL, never logged) and compared in constant time
//! (`subtle`); the login gets a random session cookie (`HttpOnly;
//! SameSite=Strict`) and a random CSRF token of its own. Every POST must
//! carry an `Origin` equal to the page's own (`http://` + `Host`), and
//! every state-changing POST the login's CSRF token in its form (compared
//! in constant time): a page elsewhere cannot end a session through the
//! operator's browser.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand_core::{OsRng, RngCore};
use subtle::ConstantTimeEq;
use tryst_core::wire::SessionId;

use super::http::{escape_html, form_pairs, form_value, HttpApp, HttpRequest, HttpResponse};
use super::status::Status;
use crate::store::{parse_id, LogRow, RefusalRow, SideEnd};

/// The operator token's file in the data dir.
pub const OPERATOR_TOKEN_FILE: &str = "operator.token";
/// The session cookie's name.
pub const COOKIE: &str = "tryst_operator";
/// Most logins held at once; a new one past it pushes out the oldest.
pub const MAX_LOGINS: usize = 16;
/// How long a login lasts.
pub const LOGIN_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most session log rows the page shows (the newest).
pub const MAX_LOG_ROWS: usize = 200;

/// Why the operator token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is readable or writable by others than its owner.
    #[error("{}: readable or writable by others (chmod 600 it)", .0.display())]
    NotPrivate(PathBuf),
    /// The file does not hold 64 hex digits.
    #[error("{}: not an operator token (64 hex digits)", .0.display())]
    Malformed(PathBuf),
}

/// Random bytes as lower-case hex.
fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    OsRng.fill_bytes(&mut raw);
    raw.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Reads `dir/operator.token`, or creates it (mode 0600, 32 random bytes
/// as hex); whether it is new.
pub fn operator_token(dir: &Path) -> Result<(String, bool), TokenError> {
    let path = dir.join(OPERATOR_TOKEN_FILE);
    let io = |source| TokenError::Io {
        path: path.clone(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            let token = random_hex(32);
            file.write_all(format!("{token}\n").as_bytes())
                .map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok((token, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                let meta = std::fs::metadata(&path).map_err(io)?;
                if meta.mode() & 0o077 != 0 {
                    return Err(TokenError::NotPrivate(path));
                }
            }
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let token = text.trim();
            if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(TokenError::Malformed(path));
            }
            Ok((token.to_ascii_lowercase(), false))
        }
        Err(e) => Err(io(e)),
    }
}

/// What the page asks of the running server.
pub trait Operator: Send + Sync + 'static {
    /// Its live terminals, sessions and counters.
    fn status(&self) -> Result<Status, String>;
    /// Ends a live session (as `tryst end` does).
    fn end(&self, id: SessionId) -> Result<(), String>;
    /// The session log, oldest first.
    fn log(&self) -> Result<Vec<LogRow>, String>;
    /// The refused requests with their real reasons, oldest first.
    fn refusals(&self) -> Result<Vec<RefusalRow>, String> {
        Ok(Vec::new())
    }
}

/// One login: its cookie and its CSRF token.
struct Login {
    cookie: String,
    csrf: String,
    since: Instant,
}

/// The status page as an [`HttpApp`].
pub struct StatusPage {
    token: String,
    operator: Arc<dyn Operator>,
    logins: Mutex<VecDeque<Login>>,
}

impl std::fmt::Debug for StatusPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusPage").finish_non_exhaustive()
    }
}

/// Headers every page carries: nothing cached, framed, or loaded from
/// elsewhere; forms post only to this page.
fn guarded(mut r: HttpResponse) -> HttpResponse {
    for (name, value) in [
        ("Cache-Control", "no-store"),
        ("X-Frame-Options", "DENY"),
        // Not `no-referrer`: under it a browser sends `Origin: null` on the
        // page's own POSTs, which the origin check refuses.
        ("Referrer-Policy", "same-origin"),
        (
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    ] {
        r.headers.push((name.into(), value.into()));
    }
    r
}

fn html(status: u16, body: String) -> HttpResponse {
    guarded(HttpResponse::new(status, "text/html; charset=utf-8", body))
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Constant-time equality of two secrets' texts.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl StatusPage {
    /// The page for the holder of `token`, over `operator`.
    pub fn new(token: String, operator: Arc<dyn Operator>) -> StatusPage {
        StatusPage {
            token,
            operator,
            logins: Mutex::new(VecDeque::new()),
        }
    }

    /// The CSRF token of the request's login, if its cookie is one.
    fn login_of(&self, req: &HttpRequest) -> Option<String> {
        let cookie = cookie_value(req.header("cookie")?, COOKIE)?;
        let mut logins = self.logins.lock().ok()?;
        logins.retain(|l| l.since.elapsed() < LOGIN_TTL);
        // Every login compared, in constant time each.
        let mut found = None;
        for login in logins.iter() {
            if same_secret(&login.cookie, cookie) {
                found = Some(login.csrf.clone());
            }
        }
        found
    }

    /// Whether a POST comes from this page: its `Origin` is `http://HOST`.
    fn same_origin(req: &HttpRequest) -> bool {
        match (req.header("origin"), req.header("host")) {
            (Some(origin), Some(host)) => origin == format!("http://{host}"),
            _ => false,
        }
    }

    fn login(&self, req: &HttpRequest) -> HttpResponse {
        let form = form_pairs(&String::from_utf8_lossy(&req.body));
        let given = form_value(&form, "token").unwrap_or("").trim();
        if !same_secret(given, &self.token) {
            return html(401, login_form(Some("wrong operator token")));
        }
        let login = Login {
            cookie: random_hex(32),
            csrf: random_hex(32),
            since: Instant::now(),
        };
        let cookie = format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            login.cookie,
            LOGIN_TTL.as_secs()
        );
        if let Ok(mut logins) = self.logins.lock() {
            if logins.len() >= MAX_LOGINS {
                logins.pop_front();
            }
            logins.push_back(login);
        }
        guarded(HttpResponse::redirect("/")).with_header("Set-Cookie", cookie)
    }

    fn end(&self, req: &HttpRequest, csrf: &str) -> HttpResponse {
        let form = form_pairs(&String::from_utf8_lossy(&req.body));
        if !same_secret(form_value(&form, "csrf").unwrap_or(""), csrf) {
            return guarded(HttpResponse::text(403, "bad or missing CSRF token"));
        }
        let Some(id) = form_value(&form, "session").and_then(parse_id) else {
            return guarded(HttpResponse::text(400, "not a session ID"));
        };
        match self.operator.end(id) {
            Ok(()) => guarded(HttpResponse::redirect("/")),
            Err(e) => guarded(HttpResponse::text(409, e)),
        }
    }

    fn page(&self, req: &HttpRequest, csrf: &str) -> HttpResponse {
        let filter = LogFilter::from_query(&req.query);
        let status = self.operator.status();
        let log = self.operator.log();
        let refusals = self.operator.refusals();
        html(200, status_html(status, log, refusals, &filter, csrf))
    }
}

impl HttpApp for StatusPage {
    fn handle(&self, req: HttpRequest) -> HttpResponse {
        let login = self.login_of(&req);
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/") => match login {
                Some(csrf) => self.page(&req, &csrf),
                None => html(200, login_form(None)),
            },
            ("POST", _) if !Self::same_origin(&req) => {
                guarded(HttpResponse::text(403, "cross-origin request refused"))
            }
            ("POST", "/login") => self.login(&req),
            ("POST", "/end") => match login {
                Some(csrf) => self.end(&req, &csrf),
                None => guarded(HttpResponse::text(401, "log in first")),
            },
            ("POST", "/logout") => {
                let form = form_pairs(&String::from_utf8_lossy(&req.body));
                let given = form_value(&form, "csrf").unwrap_or("");
                match login {
                    Some(csrf) if same_secret(given, &csrf) => {
                        if let Ok(mut logins) = self.logins.lock() {
                            logins.retain(|l| l.csrf != csrf);
                        }
                    }
                    _ => return guarded(HttpResponse::text(403, "bad or missing CSRF token")),
                }
                guarded(HttpResponse::redirect("/")).with_header(
                    "Set-Cookie",
                    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
                )
            }
            ("GET", _) | ("POST", _) => guarded(HttpResponse::text(404, "not found")),
            _ => guarded(HttpResponse::text(405, "method not allowed")),
        }
    }
}

/// The session log's filters, from the page's query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only sessions whose requester or target is this name.
    pub name: String,
    /// Only live sessions.
    pub live: bool,
    /// Only sessions started within this long (e.g. `1h`).
    pub since: Option<Duration>,
    /// The `since` text as given.
    pub since_text: String,
}

impl LogFilter {
    /// The filters in `query` (`name=`, `live=on`, `since=1h`).
    pub fn from_query(query: &str) -> LogFilter {
        let pairs = form_pairs(query);
        let since_text = form_value(&pairs, "since").unwrap_or("").trim().to_owned();
        LogFilter {
            name: form_value(&pairs, "name").unwrap_or("").trim().to_owned(),
            live: form_value(&pairs, "live").is_some_and(|v| !v.is_empty()),
            since: humantime::parse_duration(&since_text).ok(),
            since_text,
        }
    }

    /// Whether `row` passes.
    pub fn keeps(&self, row: &LogRow, now_us: u64) -> bool {
        let named = self.name.is_empty() || row.requester == self.name || row.target == self.name;
        let live = !self.live || row.reason.is_none();
        let recent = self.since.is_none_or(|d| {
            row.start_us >= now_us.saturating_sub(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        });
        named && live && recent
    }
}

/// A side's end in the log table: `forced 12.3s`, or `-`.
fn side_cell(side: Option<&SideEnd>) -> String {
    side.map_or_else(
        || "-".to_owned(),
        |s| format!("{} {:.1}s", s.reason, s.duration_ms as f64 / 1e3),
    )
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;background:#fafafa;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em;background:#fff}\
th,td{border:1px solid #bbb;padding:.3em .6em;text-align:left}th{background:#dde6f0}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1em}.err{color:#a00}\
button.end{background:#c33;color:#fff;border:0;padding:.3em .8em;cursor:pointer}";

fn head(title: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>",
        escape_html(title)
    )
}

/// The login form, with an error line if given.
pub fn login_form(error: Option<&str>) -> String {
    let mut out = head("tryst: log in");
    out.push_str("<h1>tryst server</h1>");
    if let Some(e) = error {
        let _ = write!(out, "<p class=\"err\" id=\"error\">{}</p>", escape_html(e));
    }
    out.push_str(
        "<form method=\"post\" action=\"/login\"><label>Operator token (the file operator.token in the data dir) \
         <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" size=\"66\"></label> \
         <button type=\"submit\" id=\"login\">Log in</button></form></body></html>",
    );
    out
}

fn secs(s: f64) -> String {
    format!("{s:.0}s")
}

fn rfc3339(us: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_micros(us)).to_string()
}

/// The whole status page.
pub fn status_html(
    status: Result<Status, String>,
    log: Result<Vec<LogRow>, String>,
    refusals: Result<Vec<RefusalRow>, String>,
    filter: &LogFilter,
    csrf: &str,
) -> String {
    let mut out = head("tryst: status");
    let _ = write!(
        out,
        "<h1>tryst server</h1><form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\" id=\"logout\">Log out</button></form>",
        escape_html(csrf)
    );
    match status {
        Err(e) => {
            let _ = write!(
                out,
                "<p class=\"err\">server state not available: {}</p>",
                escape_html(&e)
            );
        }
        Ok(status) => {
            let _ = write!(out, "<h2>Live terminals ({})</h2>", status.terminals.len());
            out.push_str("<table id=\"terminals\"><tr><th>name</th><th>device</th><th>last keepalive</th><th>observed address</th><th>NAT type</th></tr>");
            for t in &status.terminals {
                let _ = write!(
                    out,
                    "<tr data-name=\"{n}\"><td>{n}</td><td>{d}</td><td>{k}</td><td>{o}</td><td>{nat}</td></tr>",
                    n = escape_html(&t.name),
                    d = escape_html(&t.device),
                    k = t.last_keepalive_secs.map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s ago")),
                    o = escape_html(t.observed.as_deref().unwrap_or("-")),
                    nat = escape_html(&t.nat),
                );
            }
            out.push_str("</table>");
            let _ = write!(out, "<h2>Live sessions ({})</h2>", status.sessions.len());
            out.push_str("<table id=\"sessions\"><tr><th>session</th><th>who</th><th>whom</th><th>age</th><th>remaining</th><th>ext</th><th></th></tr>");
            for s in &status.sessions {
                let id = escape_html(&s.id);
                let action = if s.forced {
                    "ending".to_owned()
                } else {
                    format!(
                        "<form method=\"post\" action=\"/end\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                         <input type=\"hidden\" name=\"session\" value=\"{id}\"><button class=\"end\" type=\"submit\">end</button></form>",
                        escape_html(csrf)
                    )
                };
                let _ = write!(
                    out,
                    "<tr data-session=\"{id}\"><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
                    escape_html(&s.requester),
                    escape_html(&s.target),
                    secs(s.age_secs),
                    secs(s.remaining_secs),
                    s.extensions,
                );
            }
            out.push_str("</table>");
            out.push_str("<h2>Counters</h2><table id=\"counters\">");
            for (k, v) in &status.counters {
                let _ = write!(out, "<tr><td>{}</td><td>{v}</td></tr>", escape_html(k));
            }
            out.push_str("</table>");
        }
    }
    out.push_str("<h2>Session log</h2>");
    let _ = write!(
        out,
        "<form method=\"get\" action=\"/\" id=\"filter\"><label>name <input name=\"name\" value=\"{}\"></label> \
         <label><input type=\"checkbox\" name=\"live\" value=\"on\"{}> live only</label> \
         <label>since <input name=\"since\" size=\"6\" placeholder=\"1h\" value=\"{}\"></label> <button type=\"submit\">filter</button></form>",
        escape_html(&filter.name),
        if filter.live { " checked" } else { "" },
        escape_html(&filter.since_text),
    );
    match log {
        Err(e) => {
            let _ = write!(
                out,
                "<p class=\"err\">session log not available: {}</p>",
                escape_html(&e)
            );
        }
        Ok(rows) => {
            let now_us = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
            let kept: Vec<&LogRow> = rows.iter().filter(|r| filter.keeps(r, now_us)).collect();
            let skip = kept.len().saturating_sub(MAX_LOG_ROWS);
            out.push_str("<table id=\"log\"><tr><th>session</th><th>who</th><th>whom</th><th>start</th><th>duration</th><th>ext</th><th>bytes</th><th>end</th><th>who end</th><th>whom end</th></tr>");
            for r in kept.iter().skip(skip).rev() {
                let _ = write!(
                    out,
                    "<tr data-session=\"{id}\"><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"reason\">{}</td><td>{}</td><td>{}</td></tr>",
                    escape_html(&r.requester),
                    escape_html(&r.target),
                    rfc3339(r.start_us),
                    r.duration_us.map_or_else(|| "-".to_owned(), |d| format!("{:.1}s", d as f64 / 1e6)),
                    r.extensions,
                    r.bytes_r2t.saturating_add(r.bytes_t2r),
                    escape_html(r.reason.as_deref().unwrap_or("live")),
                    escape_html(&side_cell(r.who_end.as_ref())),
                    escape_html(&side_cell(r.whom_end.as_ref())),
                    id = escape_html(&r.id),
                );
            }
            out.push_str("</table>");
        }
    }
    out.push_str("<h2>Refused requests</h2>");
    match refusals {
        Err(e) => {
            let _ = write!(
                out,
                "<p class=\"err\">refused requests not available: {}</p>",
                escape_html(&e)
            );
        }
        Ok(rows) => {
            let kept: Vec<&RefusalRow> = rows
                .iter()
                .filter(|r| {
                    filter.name.is_empty() || r.requester == filter.name || r.target == filter.name
                })
                .collect();
            let skip = kept.len().saturating_sub(MAX_LOG_ROWS);
            out.push_str("<table id=\"refused\"><tr><th>at</th><th>who</th><th>whom</th><th>reason</th></tr>");
            for r in kept.iter().skip(skip).rev() {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"reason\">{}</td></tr>",
                    rfc3339(r.at_us),
                    escape_html(&r.requester),
                    escape_html(&r.target),
                    escape_html(&r.reason),
                );
            }
            out.push_str("</table>");
        }
    }
    out.push_str("</body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl Operator for Nothing {
        fn status(&self) -> Result<Status, String> {
            Ok(Status::default())
        }
        fn end(&self, _id: SessionId) -> Result<(), String> {
            Ok(())
        }
        fn log(&self) -> Result<Vec<LogRow>, String> {
            Ok(Vec::new())
        }
    }

    fn post(path: &str, body: &str, origin: Option<&str>, cookie: Option<&str>) -> HttpRequest {
        let mut headers = vec![("host".to_owned(), "127.0.0.1:9".to_owned())];
        if let Some(o) = origin {
            headers.push(("origin".into(), o.into()));
        }
        if let Some(c) = cookie {
            headers.push(("cookie".into(), format!("{COOKIE}={c}")));
        }
        HttpRequest {
            method: "POST".into(),
            path: path.into(),
            query: String::new(),
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn login_needs_the_token_and_the_origin_and_end_needs_the_csrf_token() {
        let token = "ab".repeat(32);
        let page = StatusPage::new(token.clone(), Arc::new(Nothing));
        let origin = Some("http://127.0.0.1:9");
        assert_eq!(
            page.handle(post("/login", "token=00", origin, None)).status,
            401
        );
        let body = format!("token={token}");
        assert_eq!(page.handle(post("/login", &body, None, None)).status, 403);
        assert_eq!(
            page.handle(post("/login", &body, Some("http://evil"), None))
                .status,
            403
        );
        let ok = page.handle(post("/login", &body, origin, None));
        assert_eq!(ok.status, 303);
        let set = ok
            .headers
            .iter()
            .find(|(k, _)| k == "Set-Cookie")
            .expect("a cookie");
        assert!(set.1.contains("HttpOnly") && set.1.contains("SameSite=Strict"));
        let cookie = cookie_value(&set.1, COOKIE).expect("value").to_owned();
        let id = "cd".repeat(16);
        let end = format!("session={id}");
        assert_eq!(
            page.handle(post("/end", &end, origin, Some(&cookie)))
                .status,
            403
        );
        assert_eq!(page.handle(post("/end", &end, origin, None)).status, 401);
        let csrf = page
            .login_of(&post("/", "", None, Some(&cookie)))
            .expect("logged in");
        let end = format!("session={id}&csrf={csrf}");
        assert_eq!(
            page.handle(post("/end", &end, Some("http://evil"), Some(&cookie)))
                .status,
            403
        );
        assert_eq!(
            page.handle(post("/end", &end, origin, Some(&cookie)))
                .status,
            303
        );
    }

    #[test]
    fn the_page_shows_each_sides_end_and_the_refused_requests_escaped() {
        let row = LogRow {
            id: "ab".repeat(16),
            requester: "phone".into(),
            target: "home".into(),
            start_us: 1_700_000_000_000_000,
            duration_us: Some(2_000_000),
            permitted_secs: 60,
            extensions: 0,
            bytes_r2t: 10,
            bytes_t2r: 0,
            reason: Some("forced".into()),
            who_end: Some(SideEnd {
                reason: "forced".into(),
                duration_ms: 1_900,
            }),
            whom_end: None,
            relayed_bytes: 0,
        };
        let refused = |who: &str, reason: &str| RefusalRow {
            at_us: 1_700_000_000_000_000,
            requester: who.into(),
            target: "home".into(),
            reason: reason.into(),
        };
        let html = status_html(
            Ok(Status::default()),
            Ok(vec![row]),
            Ok(vec![
                refused("<mallory>", "not permitted (not in the target's list)"),
                refused("eve", "rate limited"),
            ]),
            &LogFilter::default(),
            "csrf",
        );
        assert!(html.contains("<td>forced 1.9s</td><td>-</td>"), "{html}");
        assert!(html.contains("<table id=\"refused\">"), "{html}");
        assert!(html.contains("&lt;mallory&gt;"), "{html}");
        assert!(!html.contains("<mallory>"), "{html}");
        assert!(html.contains("rate limited"), "{html}");
        // The name filter applies to the refusals too.
        let filter = LogFilter {
            name: "eve".into(),
            ..LogFilter::default()
        };
        let html = status_html(
            Ok(Status::default()),
            Ok(Vec::new()),
            Ok(vec![
                refused("mallory", "unknown target"),
                refused("eve", "rate limited"),
            ]),
            &filter,
            "csrf",
        );
        assert!(
            html.contains("rate limited") && !html.contains("unknown target"),
            "{html}"
        );
    }

    #[test]
    fn the_token_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().expect("dir");
        let (token, created) = operator_token(dir.path()).expect("created");
        assert!(created && token.len() == 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(OPERATOR_TOKEN_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(operator_token(dir.path()).expect("read"), (token, false));
    }
}
