//! The blocking loop against a toy machine: durable facts are stored
//! before the transmit that follows them, a failed store sends nothing, a
//! stream whose peer never reads is closed without stalling the loop, a
//! link gets backpressure (then a close), the loop sleeps when idle and
//! wakes at once for a command, and outgoing streams are numbered anew.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::*;
use crate::drive::JournalBatch;
use crate::role::Commands;
use crate::testkit::{frame, EchoCommand as Cmd, EchoRole, Heard};

/// A running toy loop and what its app hears.
struct Running {
    commands: Commands<Cmd>,
    stored: mpsc::Receiver<u32>,
    heard: mpsc::Receiver<Heard>,
    drains: Arc<AtomicUsize>,
    thread: JoinHandle<Stopped>,
}

fn start(sockets: Sockets, journal: Option<Journal<u32>>) -> Running {
    let (poller, wake) = Poller::new().expect("poller");
    let (commands, command_rx) = Commands::channel(Some(wake));
    let (stored, stored_rx) = mpsc::channel();
    let (heard, heard_rx) = mpsc::channel();
    let (role, drains) = EchoRole::new(
        Box::new(move |fact| {
            let _ = stored.send(fact);
        }),
        Box::new(move |heard_| {
            let _ = heard.send(heard_);
        }),
    );
    let thread = std::thread::spawn(move || {
        run(
            DriverClock::default(),
            role,
            sockets,
            command_rx,
            journal,
            poller,
        )
    });
    Running {
        commands,
        stored: stored_rx,
        heard: heard_rx,
        drains,
        thread,
    }
}

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn udp_peer() -> (UdpSocket, SocketAddr) {
    let peer = UdpSocket::bind(localhost()).expect("bind");
    peer.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let to = peer.local_addr().expect("addr");
    (peer, to)
}

fn udp_sockets() -> Sockets {
    Sockets {
        udp: Some(BatchSocket::bind(localhost()).expect("bind")),
        ..Sockets::default()
    }
}

#[test]
fn durable_facts_are_stored_before_the_transmit_that_acknowledges_them() {
    let (peer, to) = udp_peer();
    let (journal, batches) = Journal::<u32>::channel();
    let running = start(udp_sockets(), Some(journal));
    let mut buf = [0u8; 16];

    // A transmit with no fact before it does not wait for the journal.
    let say = |durable, n| Cmd::Say { durable, n, to };
    running.commands.send(say(false, 1)).expect("sent");
    let n = peer.recv(&mut buf).expect("first datagram");
    assert_eq!(&buf[..n], &1u32.to_be_bytes());

    // A fact holds the transmit after it until it is stored.
    running.commands.send(say(true, 2)).expect("sent");
    let (batch, done): JournalBatch<u32> = batches
        .recv_timeout(Duration::from_secs(5))
        .expect("a batch");
    assert_eq!(batch, vec![2]);
    peer.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    assert!(peer.recv(&mut buf).is_err(), "sent before it was stored");
    assert!(
        running.stored.try_recv().is_err(),
        "the app saw it before it was stored"
    );
    done.send(Ok(())).expect("answer");
    peer.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let n = peer.recv(&mut buf).expect("second datagram");
    assert_eq!(&buf[..n], &2u32.to_be_bytes());
    assert_eq!(running.stored.recv_timeout(Duration::from_secs(5)), Ok(2));

    // A failed store stops the loop with nothing sent.
    running.commands.send(say(true, 3)).expect("sent");
    let (_, done) = batches
        .recv_timeout(Duration::from_secs(5))
        .expect("a batch");
    done.send(Err("disk full".into())).expect("answer");
    let stopped = running.thread.join().expect("loop thread");
    assert_eq!(stopped, Stopped::JournalFailed("disk full".into()));
    peer.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    assert!(
        peer.recv(&mut buf).is_err(),
        "sent although the store failed"
    );
}

#[test]
fn group_commit_the_loop_reads_on_while_a_batch_is_stored_and_sends_in_order() {
    let (peer, to) = udp_peer();
    let (journal, batches) = Journal::<u32>::channel();
    let running = start(udp_sockets(), Some(journal));
    let mut buf = [0u8; 16];
    let say = |durable, n| Cmd::Say { durable, n, to };
    let wait = Duration::from_secs(5);

    running.commands.send(say(true, 1)).expect("sent");
    let (first, stored_first): JournalBatch<u32> = batches.recv_timeout(wait).expect("a batch");
    assert_eq!(first, vec![1]);
    // The first batch is not stored yet: the loop still takes the next
    // command and hands its batch over (a loop that waited could not).
    running.commands.send(say(true, 2)).expect("sent");
    let (second, stored_second): JournalBatch<u32> = batches
        .recv_timeout(wait)
        .expect("a second batch while the first was being stored");
    assert_eq!(second, vec![2]);
    // A transmit with no fact of its own still waits behind both.
    running.commands.send(say(false, 3)).expect("sent");
    peer.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    assert!(peer.recv(&mut buf).is_err(), "sent before it was stored");

    // Each batch's answer releases what follows it, in order.
    stored_first.send(Ok(())).expect("answer");
    peer.set_read_timeout(Some(wait)).expect("timeout");
    let n = peer.recv(&mut buf).expect("the first datagram");
    assert_eq!(&buf[..n], &1u32.to_be_bytes());
    assert_eq!(running.stored.recv_timeout(wait), Ok(1));
    peer.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    assert!(
        peer.recv(&mut buf).is_err(),
        "sent before its own batch was stored"
    );
    assert!(running.stored.try_recv().is_err(), "heard before stored");
    stored_second.send(Ok(())).expect("answer");
    peer.set_read_timeout(Some(wait)).expect("timeout");
    for expected in [2u32, 3] {
        let n = peer.recv(&mut buf).expect("a datagram");
        assert_eq!(&buf[..n], &expected.to_be_bytes());
    }
    assert_eq!(running.stored.recv_timeout(wait), Ok(2));
}

/// Waits for the next thing the app hears.
fn next_heard(running: &Running, within: Duration) -> Option<Heard> {
    running.heard.recv_timeout(within).ok()
}

#[test]
fn a_peer_that_never_reads_is_closed_and_never_stalls_the_loop() {
    let listener = TcpListener::bind(localhost()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (peer, to) = udp_peer();
    let mut sockets = udp_sockets();
    sockets.listener = Some(listener);
    let running = start(sockets, None);
    // A client that connects and never reads.
    let mut lazy = TcpStream::connect(addr).expect("connect");
    std::thread::sleep(Duration::from_millis(100));
    // Far more than the socket buffers and the queue hold.
    running
        .commands
        .send(Cmd::Flood { count: 20_000 })
        .expect("sent");
    assert_eq!(
        next_heard(&running, Duration::from_secs(5)),
        Some(Heard::Closed(ConnectionId(1))),
        "the slow stream was closed"
    );
    // The loop still answers at once.
    let mut buf = [0u8; 16];
    running
        .commands
        .send(Cmd::Say {
            durable: false,
            n: 7,
            to,
        })
        .expect("sent");
    peer.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let n = peer.recv(&mut buf).expect("the loop answered");
    assert_eq!(&buf[..n], &7u32.to_be_bytes());
    // And the lazy client sees its stream end once it drains what came.
    lazy.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut sink = vec![0u8; 1 << 16];
    let ended = loop {
        match lazy.read(&mut sink) {
            Ok(0) => break true,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
            Ok(_) => {}
        }
    };
    assert!(ended, "the closed stream never ended");
}

/// Starts the toy role with a listener whose accepted streams follow
/// `overflow`; returns its address and the running loop.
fn with_listener(overflow: Overflow) -> (SocketAddr, Running) {
    let listener = TcpListener::bind(localhost()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sockets = Sockets {
        listener: Some(listener),
        accepted_overflow: overflow,
        ..Sockets::default()
    };
    (addr, start(sockets, None))
}

#[test]
fn a_link_whose_peer_reads_slowly_gets_backpressure_not_a_close() {
    let (addr, running) = with_listener(Overflow::Wait(Duration::from_secs(5)));
    let mut slow = TcpStream::connect(addr).expect("connect");
    std::thread::sleep(Duration::from_millis(100));
    // 20 MB in one drain: more than twice the link's byte budget and far
    // more than the socket buffers hold.
    let count = 20_000;
    running.commands.send(Cmd::Flood { count }).expect("sent");
    slow.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut sink = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    let started = std::time::Instant::now();
    while got < count * 1000 && started.elapsed() < Duration::from_secs(20) {
        match slow.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        // A reader slower than the loop.
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(got, count * 1000, "every queued byte arrived");
    assert!(running.heard.try_recv().is_err(), "the link was closed");
}

#[test]
fn a_link_whose_peer_never_reads_is_closed_after_the_backpressure_timeout() {
    let (addr, running) = with_listener(Overflow::Wait(Duration::from_millis(500)));
    let _stalled = TcpStream::connect(addr).expect("connect");
    std::thread::sleep(Duration::from_millis(100));
    let started = std::time::Instant::now();
    running
        .commands
        .send(Cmd::Flood { count: 20_000 })
        .expect("sent");
    assert_eq!(
        next_heard(&running, Duration::from_secs(10)),
        Some(Heard::Closed(ConnectionId(1))),
        "the stalled link was closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "closed before the backpressure timeout"
    );
}

#[test]
fn the_loop_sleeps_when_idle_and_a_wake_delivers_a_command() {
    let (peer, to) = udp_peer();
    let listener = TcpListener::bind(localhost()).expect("bind");
    let mut sockets = udp_sockets();
    sockets.listener = Some(listener);
    let running = start(sockets, None);
    std::thread::sleep(Duration::from_millis(100));
    let before = running.drains.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    let idle = running.drains.load(Ordering::Relaxed) - before;
    assert!(idle <= 2, "the idle loop went round {idle} times in 1 s");

    // A command from another thread wakes it: the loop's own timeout is a
    // day away, so the datagram arrives within the peer's 5 s read timeout
    // only if the send woke it.
    let commands = running.commands.clone();
    std::thread::spawn(move || {
        commands
            .send(Cmd::Say {
                durable: false,
                n: 9,
                to,
            })
            .expect("sent");
    });
    let mut buf = [0u8; 16];
    let n = peer.recv(&mut buf).expect("the command's datagram");
    assert_eq!(&buf[..n], &9u32.to_be_bytes());

    // Dropping the last sender wakes it too, and it stops.
    let Running {
        commands, thread, ..
    } = running;
    drop(commands);
    // Bounded, so a missed wake fails the test instead of hanging it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !thread.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        thread.is_finished(),
        "the loop slept on after its last sender went"
    );
    let stopped = thread.join().expect("loop thread");
    assert_eq!(stopped, Stopped::Closed);
}

/// Accepts one stream on `listener` within 5 s.
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).expect("nonblocking");
    let started = std::time::Instant::now();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking");
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                return stream;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(started.elapsed() < Duration::from_secs(5), "no stream came");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept failed: {e}"),
        }
    }
}

#[test]
fn each_upstream_stream_is_new_and_an_old_ones_close_is_told_once() {
    let upstream = TcpListener::bind(localhost()).expect("bind");
    let sockets = Sockets {
        upstream: Some(upstream.local_addr().expect("addr")),
        upstream_local: Some(IpAddr::from([127, 0, 0, 1])),
        ..Sockets::default()
    };
    let running = start(sockets, None);
    let within = Duration::from_secs(5);

    // The first message opens the stream.
    let hello = frame(10, 1);
    running.commands.send(Cmd::Up(hello.clone())).expect("sent");
    let mut first = accept(&upstream);
    let mut got = vec![0u8; hello.len()];
    first.read_exact(&mut got).expect("the first message");
    assert_eq!(got, hello);
    // What the server says comes back as the upstream's message.
    let answer = frame(3, 2);
    first.write_all(&answer).expect("written");
    assert_eq!(next_heard(&running, within), Some(Heard::Upstream(answer)));
    // Its close is told once.
    drop(first);
    assert_eq!(next_heard(&running, within), Some(Heard::UpstreamClosed));

    // The next message opens a new stream, whose messages arrive as the
    // upstream's; nothing of the old one comes back.
    let again = frame(4, 3);
    running.commands.send(Cmd::Up(again.clone())).expect("sent");
    let mut second = accept(&upstream);
    let mut got = vec![0u8; again.len()];
    second.read_exact(&mut got).expect("the second message");
    assert_eq!(got, again);
    let answer = frame(5, 4);
    second.write_all(&answer).expect("written");
    assert_eq!(next_heard(&running, within), Some(Heard::Upstream(answer)));
    assert!(running.heard.try_recv().is_err(), "an extra close was told");

    // Bytes that are not tryst traffic close it, and the machine is told.
    second
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .expect("written");
    assert_eq!(next_heard(&running, within), Some(Heard::UpstreamClosed));

    // An upstream that refuses: the machine hears the close.
    drop(upstream);
    running.commands.send(Cmd::Up(frame(1, 5))).expect("sent");
    assert_eq!(next_heard(&running, within), Some(Heard::UpstreamClosed));
}

mod roles {
    //! The three roles on the blocking driver, in one process: two
    //! terminals register through the session server, come online at the
    //! trigger server, and one reaches the other with its permission.

    use rand_core::OsRng;
    use tryst_core::crypto::StaticKeypair;
    use tryst_core::names::{NameRegistry, TrustMode};
    use tryst_core::session_server::SessionConfig;
    use tryst_core::terminal::{TerminalConfig, TerminalEvent};
    use tryst_core::trigger_server::TriggerConfig;

    use super::super::{session_server, terminal, trigger_server};
    use super::localhost;
    use crate::role::session_server::Durable;
    use crate::role::terminal::{Event, FileSource, TerminalOptions};
    use sha2::Digest;

    use std::time::{Duration, Instant};

    /// Waits for the first event `pick` accepts.
    fn expect_any<T>(
        events: &flume::Receiver<Event>,
        what: &str,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(event) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Waits for the first terminal event `pick` accepts.
    fn expect<T>(
        events: &flume::Receiver<Event>,
        what: &str,
        mut pick: impl FnMut(&TerminalEvent) -> Option<T>,
    ) -> T {
        expect_any(events, what, |event| match event {
            Event::Terminal(event) => pick(event),
            _ => None,
        })
    }

    #[test]
    fn terminals_register_come_online_and_connect_on_the_blocking_driver() {
        let trigger_keys = StaticKeypair::generate(&mut OsRng);
        let session_keys = StaticKeypair::generate(&mut OsRng);
        let (trigger, _trigger_events) = trigger_server::spawn(
            TriggerConfig::default(),
            trigger_keys,
            &[session_keys.public_key()],
            localhost(),
            localhost(),
        )
        .expect("the trigger server starts");
        let (session, _session_events, _thread) = session_server::spawn_durable(
            SessionConfig::default(),
            session_keys,
            NameRegistry::new(TrustMode::TrustOnFirstUse),
            trigger.public_key,
            trigger.link_addr,
            localhost(),
            Durable::default(),
        )
        .expect("the session server starts");
        let inbox = tempfile::tempdir().expect("a receive folder");
        let start = |name: &str, allow: &[&str], recv_dir: Option<std::path::PathBuf>| {
            let config = TerminalConfig::new(name, trigger.udp_addr, session.public_key)
                .expect("a valid name");
            terminal::spawn_with(
                config,
                StaticKeypair::generate(&mut OsRng),
                session.control_addr,
                localhost(),
                allow,
                TerminalOptions {
                    recv_dir,
                    ..TerminalOptions::default()
                },
            )
            .expect("the terminal starts")
        };
        let (camera, camera_events) = start("camera", &["phone"], Some(inbox.path().into()));
        let (phone, phone_events) = start("phone", &[], None);
        for events in [&camera_events, &phone_events] {
            expect(events, "registration", |e| {
                matches!(e, TerminalEvent::Registered { .. }).then_some(())
            });
            expect(events, "online", |e| {
                matches!(e, TerminalEvent::Online { .. }).then_some(())
            });
        }
        // The phone reaches the camera, which allows it.
        phone
            .connect("camera", 60)
            .wait()
            .expect("the connect was sent");
        let session_id = expect(&phone_events, "the session", |e| match e {
            TerminalEvent::SessionReady { session_id, .. } => Some(*session_id),
            _ => None,
        });
        expect(&camera_events, "the session", |e| {
            matches!(e, TerminalEvent::SessionReady { .. }).then_some(())
        });
        // A file crosses the direct path (its hashers wake the loops
        // through their pollers) and is stored with the sender's digest.
        let outbox = tempfile::tempdir().expect("a send folder");
        let photo = outbox.path().join("photo.jpg");
        let bytes: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&photo, &bytes).expect("written");
        let source = FileSource::open(&photo).expect("opened");
        phone
            .send_file(session_id, source, None)
            .wait()
            .expect("the send was queued");
        let stored = expect_any(&camera_events, "the stored file", |e| match e {
            Event::Received { outcome, .. } => Some(outcome.clone()),
            _ => None,
        })
        .expect("the file was stored");
        let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        assert_eq!(stored.digest, digest);
        assert_eq!(stored.size, bytes.len() as u64);
        assert_eq!(std::fs::read(&stored.path).expect("stored"), bytes);
        // A stopped terminal stops its loop.
        camera
            .shutdown(Duration::from_millis(200))
            .wait()
            .expect("stopped");
    }
}
