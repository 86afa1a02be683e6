//! Issue 12 through the real `tryst` binary: floods of connection requests
//! and registrations from strangers who speak the real protocol (Noise IK
//! registration, sealed records) against a `tryst server` on loopback.
//! Each test performs one attack and asserts the defence that holds it.
//!
//! Declared as a test of the `tryst-tokio` package (see its Cargo.toml) so
//! that `CARGO_BIN_EXE_tryst` names the binary that `cargo test` built.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use rand_core::OsRng;
use tryst_tokio::core::crypto::{udp_auth, StaticKeypair};
use tryst_tokio::core::wire::{ConnectionRequest, DeviceId, ErrorCode, Message, Name};

#[path = "e2e_support/mod.rs"]
mod support;
use support::cluster::*;

/// A loopback source address for the next stranger: five registrations
/// from each (the per-source registration burst), never reused in this
/// test process.
fn next_source() -> IpAddr {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let i = NEXT.fetch_add(1, Ordering::Relaxed) / 5;
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        1 + (i / 200) as u8,
        10 + (i % 200) as u8,
    ))
}

/// `n` strangers named `{prefix}{i}`, registered and confirmed.
async fn strangers(server: &Server, prefix: &str, n: usize) -> Vec<RawTerminal> {
    let mut out = Vec::new();
    for i in 0..n {
        let keys = StaticKeypair::generate(&mut OsRng);
        let (answer, _) = RawTerminal::register(
            next_source(),
            server.control,
            server.key,
            &format!("{prefix}{i}"),
            &keys,
        )
        .await
        .expect("the stranger registers");
        match answer {
            RawAnswer::Ack(t) => out.push(*t),
            RawAnswer::Refused(code) => panic!("stranger {i} refused: {code:?}"),
        }
    }
    out
}

/// Sends `count` connection requests from `t` (named `me`) for `target`.
fn request_many(t: &mut RawTerminal, me: &str, target: &str, first_id: u32, count: u32) {
    let mut burst = Vec::new();
    for id in first_id..first_id + count {
        let m = Message::ConnectionRequest(ConnectionRequest {
            request_id: id,
            duration_secs: 60,
            requester: Name::new(me).expect("name"),
            target: Name::new(target).expect("name"),
        });
        burst.extend(t.seal(&m).expect("sealed"));
    }
    t.stream.send(&burst).expect("burst written");
}

/// The first `want` `Error` replies `t` gets within `within`, with when
/// each came.
fn errors_within(
    t: &mut RawTerminal,
    want: usize,
    within: Duration,
) -> Vec<(Instant, u32, ErrorCode)> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || out.len() >= want {
            return out;
        }
        match t.recv_sealed(left) {
            Ok(Some(plain)) => {
                if let Ok(Message::Error(e)) = Message::decode(&plain) {
                    out.push((Instant::now(), e.request_id, e.code));
                }
            }
            Ok(None) | Err(_) => return out,
        }
    }
}

/// What the hand-played target saw while it answered for `secs`.
#[derive(Debug, Default)]
struct TargetLog {
    triggers: usize,
    list_requests: usize,
    closed: bool,
}

/// Plays target `t` (online with `udp`) for `within`: acknowledges each
/// trigger and polls (S703), answers each permission list request with
/// `allow` (S704), and counts both.
fn play_target(
    mut t: RawTerminal,
    udp: UdpSocket,
    trigger: std::net::SocketAddr,
    allow: &'static str,
    within: Duration,
) -> TargetLog {
    use tryst_tokio::core::wire::{NameSeq, PermissionList, Poll};
    let mut log = TargetLog::default();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 2048];
    udp.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    while Instant::now() < deadline {
        if let Ok((len, _)) = udp.recv_from(&mut buf) {
            if let Ok(Message::Trigger(trig)) = Message::decode(&buf[..len]) {
                log.triggers += 1;
                let ack = udp_auth::seal_trigger_ack(&t.udp_key, DeviceId(t.device), trig.counter);
                let mut out = [0u8; 256];
                let n = Message::TriggerAck(ack).encode(&mut out).expect("encoded");
                udp.send_to(&out[..n], trigger).expect("sent");
                t.send_sealed(&Message::Poll(Poll)).expect("poll sent");
            }
        }
        match t.recv_sealed(Duration::from_millis(20)) {
            Ok(Some(plain)) => {
                if let Ok(Message::PermissionListRequest(q)) = Message::decode(&plain) {
                    log.list_requests += 1;
                    let names = [Name::new(allow).expect("name")];
                    let answer = Message::PermissionList(PermissionList {
                        query_id: q.query_id,
                        names: NameSeq::from_slice(&names).expect("names"),
                    });
                    t.send_sealed(&answer).expect("list sent");
                }
            }
            Ok(None) => {
                log.closed = true;
                return log;
            }
            Err(_) => {}
        }
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_requests_for_one_target_keeps_its_stream_and_a_permitted_request_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = start_server(&data, &[], "server.log");
    // The target, played by hand so that the test sees what reaches it.
    let home = strangers(&server, "TERM", 1).await.remove(0);
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let mut counter = 0;
    assert!(keepalive_acked(
        &udp,
        server.trigger,
        &home,
        &mut counter,
        Duration::from_secs(5)
    ));
    let trigger = server.trigger;
    let target = tokio::task::spawn_blocking(move || {
        play_target(home, udp, trigger, "FRIEND", Duration::from_secs(9))
    });
    let mut friend = online_term(&server, "FRIEND", StaticKeypair::generate(&mut OsRng), &[]).await;
    // 30 throwaway names from 6 addresses, 10 requests each: 300 requests
    // for one target in a few milliseconds.
    let mut attackers = strangers(&server, "R", 30).await;
    let sent = Instant::now();
    for (i, a) in attackers.iter_mut().enumerate() {
        request_many(a, &format!("R{i}"), "term0", 1, 10);
    }
    // A permitted request during the flood succeeds.
    friend
        .handle
        .connect("term0", 60)
        .await
        .expect("request sent");
    friend.ready().await;
    // Every flooding request got the uniform deny, at its deny time.
    for a in &mut attackers {
        let errors = errors_within(a, 10, Duration::from_secs(8));
        assert_eq!(errors.len(), 10, "every request answered");
        for (at, _, code) in errors {
            assert_eq!(code, ErrorCode::NotPermitted);
            assert!(at.duration_since(sent) >= Duration::from_millis(4900));
        }
    }
    let log = target.await.expect("the target ran");
    eprintln!("300 flooding requests and 1 permitted one: the target saw {log:?}");
    assert!(!log.closed, "the target's stream was closed in the flood");
    // One trigger and one list request per coalescing window, not one per
    // request.
    assert!(log.triggers <= 8, "{log:?}");
    assert!(log.list_requests <= 8, "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_denial_budget_answers_unknown_and_existing_names_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = start_server(&data, &[], "server.log");
    let _home = online_term(&server, "term1", StaticKeypair::generate(&mut OsRng), &[]).await;
    // 260 names x 32 requests for unknown names: more denials waiting for
    // their time than the old table-wide bound of 8,192.
    let mut attackers = strangers(&server, "F", 260).await;
    for (i, a) in attackers.iter_mut().enumerate() {
        request_many(a, &format!("F{i}"), "NOBODY", 1, 32);
    }
    // The flood is taken in; its denials wait for their time (5 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let keys = StaticKeypair::generate(&mut OsRng);
    let (answer, _) = RawTerminal::register(
        IpAddr::V4(Ipv4Addr::new(127, 0, 9, 9)),
        server.control,
        server.key,
        "PROBE",
        &keys,
    )
    .await
    .expect("the probe registers");
    let RawAnswer::Ack(mut probe) = answer else {
        panic!("the probe was refused");
    };
    let sent = Instant::now();
    request_many(&mut probe, "PROBE", "term1", 1, 1);
    request_many(&mut probe, "PROBE", "NOBODY2", 2, 1);
    let errors = errors_within(&mut probe, 2, Duration::from_secs(9));
    let ids: Vec<u32> = errors.iter().map(|e| e.1).collect();
    assert_eq!(ids.len(), 2, "both names answered: {ids:?}");
    for (at, _, code) in &errors {
        assert_eq!(*code, ErrorCode::NotPermitted);
        let after = at.duration_since(sent);
        assert!(
            after >= Duration::from_millis(4900),
            "answered {after:?} after the request: before the deny time"
        );
    }
    // The same timing class: both at the deny time, whatever the name.
    let apart = errors[1].0.duration_since(errors[0].0);
    assert!(
        apart < Duration::from_millis(500),
        "answers {apart:?} apart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_answer_does_not_depend_on_whether_the_name_is_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = start_server(&data, &[], "server.log");
    let mut home = online_term(
        &server,
        "term1",
        StaticKeypair::generate(&mut OsRng),
        &["FRIEND"],
    )
    .await;
    let probe = |name: &'static str, i: u8| {
        let server_control = server.control;
        let server_key = server.key;
        async move {
            let keys = StaticKeypair::generate(&mut OsRng);
            RawTerminal::register(
                IpAddr::V4(Ipv4Addr::new(127, 0, 8, i)),
                server_control,
                server_key,
                name,
                &keys,
            )
            .await
            .expect("a reply")
        }
    };
    let (bound, bound_len) = probe("term1", 1).await;
    let (free, free_len) = probe("FREE1", 2).await;
    assert!(matches!(bound, RawAnswer::Ack(_)), "bound name: {bound:?}");
    assert!(matches!(free, RawAnswer::Ack(_)), "free name: {free:?}");
    assert_eq!(bound_len, free_len, "the same bytes on the wire");
    // The name still belongs to its owner: a permitted request reaches it.
    let mut friend = online_term(&server, "FRIEND", StaticKeypair::generate(&mut OsRng), &[]).await;
    friend
        .handle
        .connect("term1", 60)
        .await
        .expect("request sent");
    friend.ready().await;
    home.ready().await;
}

/// Sends keepalives for `t` to the trigger server until one is acknowledged
/// (true) or `within` passes (false).
fn keepalive_acked(
    udp: &UdpSocket,
    trigger: std::net::SocketAddr,
    t: &RawTerminal,
    counter: &mut u64,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        *counter += 1;
        let ka = udp_auth::seal_keepalive(&t.udp_key, DeviceId(t.device), *counter);
        let mut out = [0u8; 256];
        let n = Message::Keepalive(ka).encode(&mut out).expect("encoded");
        udp.send_to(&out[..n], trigger).expect("sent");
        let wait_until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < wait_until {
            udp.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            if let Ok((len, _)) = udp.recv_from(&mut buf) {
                if matches!(Message::decode(&buf[..len]), Ok(Message::KeepaliveAck(a)) if a.counter == *counter)
                {
                    return true;
                }
            }
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_of_a_closed_stream_loses_its_key_after_the_grace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = start_server(&data, &[], "server.log");
    let orphan = strangers(&server, "ORPHAN", 1).await.remove(0);
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let mut counter = 0;
    assert!(
        keepalive_acked(
            &udp,
            server.trigger,
            &orphan,
            &mut counter,
            Duration::from_secs(5)
        ),
        "a registered terminal's keepalive is acknowledged"
    );
    // Its stream goes; the channel (and its UDP key) must not outlive it.
    orphan
        .stream
        .socket
        .shutdown(std::net::Shutdown::Both)
        .expect("closed");
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        !keepalive_acked(
            &udp,
            server.trigger,
            &orphan,
            &mut counter,
            Duration::from_secs(2)
        ),
        "the channel outlived its stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_re_registers_at_the_channel_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = start_server(&data, &["--max-channels", "3"], "server.log");
    let owner_keys = StaticKeypair::generate(&mut OsRng);
    let register = |name: &'static str, keys: StaticKeypair, i: u8| {
        let (control, key) = (server.control, server.key);
        async move {
            RawTerminal::register(
                IpAddr::V4(Ipv4Addr::new(127, 0, 7, i)),
                control,
                key,
                name,
                &keys,
            )
            .await
            .expect("a reply")
            .0
        }
    };
    let _owner = register("OWNER", owner_keys.clone(), 1).await;
    let _a = register("A1", StaticKeypair::generate(&mut OsRng), 2).await;
    let _b = register("B1", StaticKeypair::generate(&mut OsRng), 3).await;
    let stranger = register("C1", StaticKeypair::generate(&mut OsRng), 4).await;
    assert!(
        matches!(stranger, RawAnswer::Refused(ErrorCode::Busy)),
        "a fresh key at the cap: {stranger:?}"
    );
    let again = register("OWNER", owner_keys, 5).await;
    assert!(
        matches!(again, RawAnswer::Ack(_)),
        "the owner at the cap: {again:?}"
    );
}

/// Lines of `server`'s log that contain every one of `needles`.
fn log_lines(server: &Server, needles: &[&str]) -> usize {
    server
        .proc
        .log()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_binding_expires_and_the_name_is_free_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = start_server(&data, &["--binding-ttl", "2s"], "server.log");
    let squatter = strangers(&server, "gone", 1).await.remove(0);
    squatter
        .stream
        .socket
        .shutdown(std::net::Shutdown::Both)
        .expect("closed");
    // The channel goes 10 s after its stream, the binding 2 s unused later.
    let deadline = Instant::now() + Duration::from_secs(25);
    while log_lines(&server, &["binding expired unused", "gone0"]) == 0 {
        assert!(Instant::now() < deadline, "the binding never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A new key gets the name for real.
    let keys = StaticKeypair::generate(&mut OsRng);
    let (answer, _) =
        RawTerminal::register(next_source(), server.control, server.key, "gone0", &keys)
            .await
            .expect("a reply");
    assert!(matches!(answer, RawAnswer::Ack(_)));
    let deadline = Instant::now() + STEP;
    while log_lines(&server, &["name bound to its first key", "gone0"]) < 2 {
        assert!(Instant::now() < deadline, "the name was not bound again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
