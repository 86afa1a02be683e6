//! Issue 17, the operator's status page (`tryst server --http`), end to
//! end in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs) driven over WebDriver by
//! `fantoccini`. The test logs in with the token file, sees a live session
//! appear, clicks its "end" button, sees it end (the session log says
//! `forced`), and checks the screenshots it took (decoded, sized, not
//! blank; kept under `target/tmp/`). Raw HTTP requests check what a
//! browser would not send: a wrong token (401), a POST without the CSRF
//! token or from another origin (403). `tryst-std` serves the same page
//! with its blocking listener (checked over raw HTTP).
//!
//! Declared as a test of the `tryst-tokio` package (see its Cargo.toml) so
//! that `CARGO_BIN_EXE_tryst` names the binary that `cargo test` built.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use rand_core::OsRng;
use tryst_tokio::core::crypto::StaticKeypair;
use tryst_tokio::core::wire::EndReason;

#[path = "e2e_support/mod.rs"]
mod support;
use support::cluster::*;
use support::{with_mix, Bin, Mix, Proc};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn scratch(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("tryst-page-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// One raw HTTP/1.1 request: status, headers (lower-case names), body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect_timeout(&addr, STEP).expect("connects");
    s.set_read_timeout(Some(STEP)).expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if method == "POST" {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("sent");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn page_addr(proc: &mut Proc) -> SocketAddr {
    let url = proc.value("status page");
    url.strip_prefix("http://")
        .and_then(|r| r.strip_suffix('/'))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not a page URL: {url}"))
}

fn token_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("operator.token"))
        .expect("the token file")
        .trim()
        .to_owned()
}

/// Logs in over raw HTTP: the session cookie, and the CSRF token the
/// page's forms carry.
fn raw_login(addr: SocketAddr, token: &str) -> (String, String) {
    let origin = format!("http://{addr}");
    let (status, headers, _) = http(
        addr,
        "POST",
        "/login",
        &[("Origin", &origin)],
        &format!("token={token}"),
    );
    assert_eq!(status, 303);
    let set = headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.clone())
        .expect("a session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().expect("name=value").to_owned();
    let (status, _, body) = http(addr, "GET", "/", &[("Cookie", &cookie)], "");
    assert_eq!(status, 200);
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token in the page")
        .to_owned();
    (cookie, csrf)
}

/// What a browser never sends must be refused: a wrong token (401), a
/// POST from another origin or without one (403), an end without the
/// CSRF token or with a wrong one (403), an end without a login (401).
fn refuses_forged_requests(addr: SocketAddr, token: &str, session: &str) {
    let origin = format!("http://{addr}");
    let wrong = "0".repeat(64);
    let (status, headers, _) = http(
        addr,
        "POST",
        "/login",
        &[("Origin", &origin)],
        &format!("token={wrong}"),
    );
    assert_eq!(status, 401, "a wrong token");
    assert!(!headers.iter().any(|(k, _)| k == "set-cookie"));
    let right = format!("token={token}");
    for bad in [vec![("Origin", "http://evil.example")], vec![]] {
        let (status, _, _) = http(addr, "POST", "/login", &bad, &right);
        assert_eq!(status, 403, "a login from {bad:?}");
    }
    let (cookie, csrf) = raw_login(addr, token);
    let cookie_h = ("Cookie", cookie.as_str());
    let end_without = format!("session={session}");
    let (status, _, _) = http(
        addr,
        "POST",
        "/end",
        &[cookie_h, ("Origin", &origin)],
        &end_without,
    );
    assert_eq!(status, 403, "an end without the CSRF token");
    let end_wrong = format!("session={session}&csrf={}", "1".repeat(64));
    let (status, _, _) = http(
        addr,
        "POST",
        "/end",
        &[cookie_h, ("Origin", &origin)],
        &end_wrong,
    );
    assert_eq!(status, 403, "an end with a wrong CSRF token");
    let end_right = format!("session={session}&csrf={csrf}");
    let (status, _, _) = http(
        addr,
        "POST",
        "/end",
        &[cookie_h, ("Origin", "http://evil.example")],
        &end_right,
    );
    assert_eq!(status, 403, "an end from another origin");
    let (status, _, _) = http(addr, "POST", "/end", &[("Origin", &origin)], &end_right);
    assert_eq!(status, 401, "an end without a login");
    // The token never appears in what the page serves.
    let (_, _, body) = http(addr, "GET", "/", &[cookie_h], "");
    assert!(!body.contains(token), "the page shows the token");
}

/// chromedriver on a free loopback port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(log: &Path) -> Driver {
        assert!(
            Path::new(CHROMEDRIVER).exists(),
            "{CHROMEDRIVER} is missing: apt-get install chromium chromium-driver (.ci/run does)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(log).expect("log")))
            .spawn()
            .expect("chromedriver starts");
        // Ready once it accepts connections.
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + STEP;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            url: format!("http://{addr}"),
        }
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,900"],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a headless chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Decodes a PNG screenshot, checks its size and that it is not blank
/// (a page with tables has many colours and many non-background pixels),
/// and keeps it under `target/tmp/`.
fn check_screenshot(png_bytes: &[u8], name: &str) {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&out, png_bytes).expect("screenshot saved");
    let decoder = png::Decoder::new(png_bytes);
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    assert!(
        info.width >= 800 && info.height >= 600,
        "{}x{}",
        info.width,
        info.height
    );
    let channels = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let first = &pixels[..channels];
    let differing = pixels
        .chunks(channels)
        .filter(|p| p[..3.min(channels)] != first[..3.min(channels)])
        .count();
    let total = (info.width * info.height) as usize;
    assert!(
        differing * 100 > total,
        "{} looks blank: {differing} of {total} pixels differ from the first",
        out.display()
    );
}

/// The element `locator` finds, once the page (after a click) shows it.
async fn appears(
    browser: &Client,
    locator: Locator<'_>,
    what: &str,
) -> fantoccini::elements::Element {
    match browser.wait().at_most(STEP).for_element(locator).await {
        Ok(element) => element,
        Err(e) => {
            let source = browser.source().await.unwrap_or_default();
            panic!("{what} never showed ({e}):\n{source}")
        }
    }
}

/// Reloads `/` until `ready` finds what it waits for in the page source.
async fn reload_until(browser: &Client, base: &str, what: &str, ready: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + STEP;
    loop {
        browser.goto(base).await.expect("page loads");
        let source = browser.source().await.expect("page source");
        if ready(&source) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} never showed:\n{source}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn status_page_in_chromium_shows_a_live_session_and_its_end_button_ends_it() {
    let root = scratch("browser");
    let dir = root.join("server");
    let mut server = start_server(&dir, &["--http", LOOPBACK_ANY], "server.log");
    let addr = page_addr(&mut server.proc);
    let token = token_of(&dir);
    let base = format!("http://{addr}/");
    let driver = Driver::start(&root.join("chromedriver.log"));
    support::block_on(async {
        let browser = driver.browser().await;
        // A wrong token: the login form again, with its error.
        browser.goto(&base).await.expect("page loads");
        let field = browser
            .find(Locator::Id("token"))
            .await
            .expect("token field");
        field.send_keys(&"0".repeat(64)).await.expect("typed");
        browser
            .find(Locator::Id("login"))
            .await
            .expect("button")
            .click()
            .await
            .expect("click");
        let error = appears(&browser, Locator::Id("error"), "the login error").await;
        assert_eq!(error.text().await.expect("text"), "wrong operator token");
        // The right token: the status page.
        let field = browser
            .find(Locator::Id("token"))
            .await
            .expect("token field");
        field.send_keys(&token).await.expect("typed");
        browser
            .find(Locator::Id("login"))
            .await
            .expect("button")
            .click()
            .await
            .expect("click");
        appears(&browser, Locator::Id("sessions"), "the sessions table").await;

        let (mut home, mut phone) = pair(&server, StaticKeypair::generate(&mut OsRng)).await;
        let id = connect(&mut home, &mut phone, 120).await;
        let session = hex(&id.0);
        let row = format!("data-session=\"{session}\"");
        reload_until(&browser, &base, "the live session", |s| {
            s.contains(&row)
                && s.contains("data-name=\"term1\"")
                && s.contains("data-name=\"term3\"")
        })
        .await;
        let shot = browser.screenshot().await.expect("a screenshot");
        check_screenshot(&shot, "status-page-live.png");

        refuses_forged_requests(addr, &token, &session);

        let button = browser
            .find(Locator::Css(&format!(
                "#sessions tr[data-session=\"{session}\"] button.end"
            )))
            .await
            .expect("the end button");
        button.click().await.expect("click");
        assert_eq!(home.ended(id).await, EndReason::Forced);
        assert_eq!(phone.ended(id).await, EndReason::Forced);
        let forced = format!("<tr {row}><td>{session}</td>");
        reload_until(&browser, &base, "the forced end in the log", |s| {
            s.contains("Live sessions (0)")
                && s.split(&forced).nth(1).is_some_and(|rest| {
                    rest.split("</tr>")
                        .next()
                        .is_some_and(|r| r.contains("class=\"reason\">forced<"))
                })
        })
        .await;
        // The log's filters: by name, and live only.
        browser
            .goto(&format!("{base}?name=term3&live=on"))
            .await
            .expect("filtered");
        let source = browser.source().await.expect("source");
        let log = source.split("id=\"log\"").nth(1).expect("the log table");
        assert!(
            !log.contains(&session),
            "a live-only log shows an ended session"
        );
        browser
            .goto(&format!("{base}?name=term3&since=1h"))
            .await
            .expect("filtered");
        let source = browser.source().await.expect("source");
        let log = source.split("id=\"log\"").nth(1).expect("the log table");
        assert!(log.contains(&session), "the named log lacks the session");
        let shot = browser.screenshot().await.expect("a screenshot");
        check_screenshot(&shot, "status-page-ended.png");
        browser.close().await.expect("browser closed");
    });
    let log = support::text(&std::fs::read(root.join("server.log")).expect("server log"));
    assert!(
        !log.contains(&token),
        "the server logged the operator token"
    );
    drop(server);
}

#[test]
fn status_page_on_tryst_std_logs_in_and_refuses_forged_posts() {
    let mix = Mix {
        server: Bin::TrystStd,
        ..Mix::TRYST
    };
    with_mix(mix, || {
        let root = scratch("std");
        let dir = root.join("server");
        let mut server = start_server(&dir, &["--http", LOOPBACK_ANY], "server.log");
        let addr = page_addr(&mut server.proc);
        let token = token_of(&dir);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("operator.token"))
                .expect("token file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        refuses_forged_requests(addr, &token, &"ab".repeat(16));
        drop(server);
    });
}
