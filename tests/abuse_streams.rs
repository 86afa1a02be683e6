//! Issue 12, streams and internal links, against the real `tryst` binary on
//! loopback: a burst of connection requests does not tear down the
//! session-server <-> trigger-server link (backpressure instead of
//! teardown); idle and trickling streams are closed after the first-message
//! bound; one source cannot hold more than its stream cap; and a server
//! started under a low soft descriptor limit still serves a real terminal
//! while hundreds of idle attacker streams are open.

#[path = "e2e_support/mod.rs"]
mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use support::cluster::{
    connect, start_server, start_server_with_nofile, start_split_servers, RawStream, Server, Term,
};
use tryst_tokio::core::crypto::StaticKeypair;
use tryst_tokio::core::terminal::TerminalEvent;
use tryst_tokio::core::wire::{HandshakeInit, Message};

/// The server's bound for a stream's first whole message (the core's
/// `FIRST_MESSAGE_TIMEOUT`), plus scheduling slack on a slow box.
const FIRST_MESSAGE_BOUND: Duration = Duration::from_secs(10);
const SLACK: Duration = Duration::from_secs(5);

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP address")
}

/// TERM1 (allows TERM3) from 127.0.0.2 and TERM3 from 127.0.0.3, both
/// online: sources other than the attackers' 127.0.0.1.
async fn pair_from_other_sources(server: &Server) -> (Term, Term) {
    let mut home = fresh(ip("127.0.0.2"), "term1", &["term3"], server).await;
    home.online().await;
    let mut phone = fresh(ip("127.0.0.3"), "term3", &[], server).await;
    phone.online().await;
    (home, phone)
}

/// A terminal with a fresh key, both its sockets on `from`.
async fn fresh(from: IpAddr, name: &str, allow: &[&str], server: &Server) -> Term {
    Term::start_from(
        from,
        name,
        StaticKeypair::generate(&mut OsRng),
        allow,
        server,
    )
    .await
}

/// A `HandshakeInit` that is well framed (so the server waits for the rest
/// of it) but whose Noise bytes are junk.
fn junk_handshake() -> Vec<u8> {
    let noise = [0x42u8; 96];
    let mut buf = vec![0u8; 256];
    let n = Message::HandshakeInit(HandshakeInit { noise: &noise })
        .encode(&mut buf)
        .expect("encodes");
    buf.truncate(n);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_one_byte_per_second_streams_are_closed_after_the_first_message_bound() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = start_server(&tmp.path().join("srv"), &[], "server.log");
    let opened = Instant::now();
    let mut idle: Vec<RawStream> = (0..10)
        .map(|_| RawStream::connect(server.control).expect("connects"))
        .collect();
    // Trickling streams: one byte of a (long) message per second.
    let bytes = junk_handshake();
    let trickles: Vec<std::thread::JoinHandle<bool>> = (0..3)
        .map(|_| {
            let mut s = RawStream::connect(server.control).expect("connects");
            let bytes = bytes.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + FIRST_MESSAGE_BOUND + SLACK;
                for b in bytes {
                    if s.send(&[b]).is_err() {
                        return true;
                    }
                    if s.closed_within(Duration::from_secs(1)) {
                        return true;
                    }
                    if Instant::now() > deadline {
                        return false;
                    }
                }
                false
            })
        })
        .collect();
    for (i, s) in idle.iter_mut().enumerate() {
        let left = (FIRST_MESSAGE_BOUND + SLACK).saturating_sub(opened.elapsed());
        assert!(s.closed_within(left), "idle stream {i} still open");
    }
    assert!(
        opened.elapsed() >= FIRST_MESSAGE_BOUND - Duration::from_secs(1),
        "closed before the bound"
    );
    for t in trickles {
        assert!(
            t.join().expect("trickler"),
            "a trickling stream stayed open"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_per_source_cap_are_refused_while_another_source_registers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = start_server(
        &tmp.path().join("srv"),
        &["--max-streams-per-source", "8"],
        "server.log",
    );
    let mut held: Vec<RawStream> = (0..8)
        .map(|_| RawStream::connect(server.control).expect("connects"))
        .collect();
    // Let the server take all eight before the ones beyond.
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..4 {
        let mut extra = RawStream::connect(server.control).expect("the kernel accepts");
        assert!(
            extra.closed_within(Duration::from_secs(3)),
            "stream {} beyond the cap was kept",
            9 + i
        );
    }
    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            !s.closed_within(Duration::from_millis(100)),
            "stream {i} under the cap was closed"
        );
    }
    // Another source registers and comes online.
    let mut other = fresh(ip("127.0.0.2"), "OTHER", &[], &server).await;
    other.online().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_registers_and_connects_under_a_low_descriptor_limit_and_hundreds_of_idle_streams(
) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut server =
        start_server_with_nofile(&tmp.path().join("srv"), &[], "-Sn 300", "server.log");
    server.proc.expect_line("control:");
    // More idle streams than the inherited soft limit has descriptors.
    let idle: Vec<RawStream> = (0..400)
        .filter_map(|_| RawStream::connect(server.control).ok())
        .collect();
    assert!(
        idle.len() > 300,
        "the attacker opened {} streams",
        idle.len()
    );
    std::thread::sleep(Duration::from_millis(500));
    let (mut home, mut phone) = pair_from_other_sources(&server).await;
    connect(&mut home, &mut phone, 60).await;
    let log = server.proc.log();
    assert!(
        !log.contains("limit=300"),
        "the soft descriptor limit was not raised:\n{log}"
    );
    drop(idle);
}

/// Throwaway requesters: this many sources, five names each (the
/// per-source registration burst), ten requests each (the per-requester
/// burst; a terminal holds at most four requests open).
const BURST_SOURCES: u8 = 60;
const NAMES_PER_SOURCE: u8 = 5;
const REQUESTS_EACH: usize = 4;
/// Targets of the burst (none permits the requesters).
const BURST_TARGETS: [&str; 3] = ["TGT1", "TGT2", "TGT3"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_from_hundreds_of_names_keeps_the_server_link_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (server, trig) = start_split_servers(tmp.path(), "info");
    let mut sess = server;
    sess.proc.expect_line("control:");
    // The permitted pair and the burst's targets, each from its own source.
    let (mut home, mut phone) = pair_from_other_sources(&sess).await;
    let mut targets = Vec::new();
    for (i, name) in BURST_TARGETS.iter().enumerate() {
        let mut t = fresh(ip(&format!("127.0.0.{}", 10 + i)), name, &[], &sess).await;
        t.online().await;
        targets.push(t);
    }
    // The requesters register (registered is enough to send requests).
    let requesters = register_requesters(&sess, BURST_SOURCES).await;
    // The burst: every requester sends its requests at once.
    let burst: Vec<_> = requesters
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            tokio::spawn(async move {
                for k in 0..REQUESTS_EACH {
                    let target = BURST_TARGETS[(i + k) % BURST_TARGETS.len()];
                    let _ = t.handle.connect(target, 60).await;
                }
                t
            })
        })
        .collect();
    // During it, a new terminal registers and comes online (its key
    // install crosses the link) and a permitted request succeeds.
    let mut late = fresh(ip("127.0.0.20"), "LATE", &[], &sess).await;
    connect(&mut home, &mut phone, 60).await;
    late.online().await;
    let mut kept = Vec::new();
    for b in burst {
        kept.push(b.await.expect("burst task"));
    }
    // Every request of the burst was triggered over the link and denied
    // (at the uniform deny time).
    let want = usize::from(BURST_SOURCES) * usize::from(NAMES_PER_SOURCE) * REQUESTS_EACH;
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut denied = 0;
    while Instant::now() < deadline {
        denied = sess.proc.log().matches("request denied").count();
        if denied >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(denied, want, "not every request of the burst was answered");
    let session_log = sess.proc.log();
    let trigger_log = trig.log();
    assert_eq!(
        session_log.matches("linked to the trigger server").count(),
        1,
        "the link was lost and set up again:\n{session_log}"
    );
    for (who, log) in [("session", &session_log), ("trigger", &trigger_log)] {
        assert!(
            !log.contains("internal link closed"),
            "the {who} server closed the link:\n{log}"
        );
    }
    drop(kept);
}

/// Registers throwaway requesters, five per source (the per-source
/// registration burst), from 127.0.1.1 up.
async fn register_requesters(server: &Server, sources: u8) -> Vec<Term> {
    let mut requesters = Vec::new();
    for s in 0..sources {
        for n in 0..NAMES_PER_SOURCE {
            let from = ip(&format!("127.0.1.{}", 1 + s));
            requesters.push(fresh(from, &format!("R{s}X{n}"), &[], server).await);
        }
    }
    for t in &mut requesters {
        t.expect("registration", |e| {
            matches!(e, TerminalEvent::Registered { .. }).then_some(())
        })
        .await;
    }
    requesters
}

/// [`register_requesters`], then each sends `requests` connection requests
/// to the burst's targets; returns them once every request was handed to
/// its terminal.
async fn burst_of_requests(server: &Server, sources: u8, requests: usize) -> Vec<Term> {
    let requesters = register_requesters(server, sources).await;
    for (i, t) in requesters.iter().enumerate() {
        for k in 0..requests {
            let target = BURST_TARGETS[(i + k) % BURST_TARGETS.len()];
            let _ = t.handle.connect(target, 60).await;
        }
    }
    requesters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_requests_and_key_installs_flushed_at_link_setup_keeps_the_link() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let (session_key, trigger_key) = support::cluster::split_keys(root);
    // The session server starts first: until the trigger server is up,
    // everything for it (key installs, triggers) waits in its queue.
    let udp = support::cluster::free_loopback_port(true);
    let link = support::cluster::free_loopback_port(false).to_string();
    let mut sess = support::cluster::start_session_server(
        root,
        &session_key,
        &trigger_key,
        udp,
        &link,
        "info",
    );
    let mut targets = Vec::new();
    for (i, name) in BURST_TARGETS.iter().enumerate() {
        let t = fresh(ip(&format!("127.0.0.{}", 10 + i)), name, &[], &sess).await;
        targets.push(t);
    }
    let requesters = burst_of_requests(&sess, 40, 2).await;
    // The permitted pair registers last: its key installs are the newest.
    let mut home = fresh(ip("127.0.0.2"), "term1", &["term3"], &sess).await;
    let mut phone = fresh(ip("127.0.0.3"), "term3", &[], &sess).await;
    for t in [&mut home, &mut phone] {
        t.expect("registration", |e| {
            matches!(e, TerminalEvent::Registered { .. }).then_some(())
        })
        .await;
    }
    // The link comes up with the whole backlog to send in one go.
    let udp_s = udp.to_string();
    let trig = support::cluster::start_trigger_server(root, &session_key, &udp_s, &link, "info");
    // Their key installs crossed the link: the trigger server acknowledges
    // their keepalives.
    for t in [&mut home, &mut phone] {
        t.expect("online", |e| {
            matches!(e, TerminalEvent::Online { .. }).then_some(())
        })
        .await;
    }
    connect(&mut home, &mut phone, 60).await;
    let session_log = sess.proc.log();
    let trigger_log = trig.log();
    assert_eq!(
        session_log.matches("linked to the trigger server").count(),
        1,
        "the link was lost and set up again:\n{session_log}"
    );
    // Connects refused before the trigger server was up do not count.
    let linked = session_log
        .split_once("linked to the trigger server")
        .map_or("", |(_, after)| after);
    for (who, log) in [("session", linked), ("trigger", trigger_log.as_str())] {
        assert!(
            !log.contains("internal link closed"),
            "the {who} server closed the link:\n{log}"
        );
    }
    sess.proc.expect_line("control:");
    drop((requesters, targets));
}

/// An idle TCP stream to `to` from `from` (any port).
async fn idle_stream_from(
    from: IpAddr,
    to: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(from, 0))?;
    tokio::time::timeout(Duration::from_secs(2), socket.connect(to))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_is_logged_and_idle_streams_free_them_for_a_real_terminal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Soft and hard limit 200: the server cannot raise it.
    let mut server = start_server_with_nofile(&tmp.path().join("srv"), &[], "-n 200", "server.log");
    server.proc.expect_line("control:");
    // 300 idle streams from ten sources, each under its per-source cap:
    // more than the server has descriptors.
    let mut idle = Vec::new();
    for i in 0..300u16 {
        let from = ip(&format!("127.0.2.{}", 1 + i % 10));
        if let Ok(s) = idle_stream_from(from, server.control).await {
            idle.push(s);
        }
    }
    assert!(
        idle.len() > 200,
        "the attacker opened {} streams",
        idle.len()
    );
    // The accept loop says so at WARN, rate-limited, and does not spin.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.proc.log().contains("out of file descriptors") {
        assert!(
            Instant::now() < deadline,
            "no WARN about descriptors:\n{}",
            server.proc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A real terminal gets in once the idle streams hit their first-message bound.
    let mut term = fresh(ip("127.0.0.2"), "REAL", &[], &server).await;
    term.online().await;
    let warnings = server.proc.log().matches("out of file descriptors").count();
    assert!(warnings <= 3, "{warnings} WARN lines: not rate-limited");
    drop(idle);
}
