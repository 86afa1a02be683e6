//! The loop against the toy role both drivers' tests run
//! ([`tryst_std::testkit`]): durable facts are stored before the transmit
//! that follows them, a failed store sends nothing, and a stream whose
//! peer never reads is closed without stalling the loop.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;
use tryst_std::testkit::{EchoCommand as Cmd, EchoRole, Heard};

use super::*;

fn role() -> (
    EchoRole,
    mpsc::UnboundedReceiver<u32>,
    mpsc::UnboundedReceiver<ConnectionId>,
) {
    let (stored, stored_rx) = mpsc::unbounded_channel();
    let (closed, closed_rx) = mpsc::unbounded_channel();
    let (role, _drains) = EchoRole::new(
        Box::new(move |fact| {
            let _ = stored.send(fact);
        }),
        Box::new(move |heard| {
            if let Heard::Closed(conn) = heard {
                let _ = closed.send(conn);
            }
        }),
    );
    (role, stored_rx, closed_rx)
}

#[tokio::test]
async fn durable_facts_are_stored_before_the_transmit_that_acknowledges_them() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = peer.local_addr().unwrap();
    let udp = BatchSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (journal, stored_batches) = Journal::<u32>::channel();
    // The journal's side, on a thread as a store's is.
    let (batch_tx, mut batches) = mpsc::unbounded_channel::<JournalBatch<u32>>();
    std::thread::spawn(move || {
        while let Ok(batch) = stored_batches.recv() {
            if batch_tx.send(batch).is_err() {
                break;
            }
        }
    });
    let (commands, command_rx) = flume::bounded(4);
    let (role, mut stored, _closed) = role();
    let sockets = Sockets {
        udp: Some(udp),
        ..Sockets::default()
    };
    let task = tokio::spawn(run(
        DriverClock::default(),
        role,
        sockets,
        command_rx,
        Some(journal),
    ));
    let mut buf = [0u8; 16];

    // A transmit with no fact before it does not wait for the journal.
    let say = |durable, n| Cmd::Say { durable, n, to };
    commands.send(say(false, 1)).unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), peer.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], &1u32.to_be_bytes());

    // A fact holds the transmit after it until it is stored.
    commands.send(say(true, 2)).unwrap();
    let (batch, done) = batches.recv().await.unwrap();
    assert_eq!(batch, vec![2]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        peer.try_recv(&mut buf).is_err(),
        "sent before it was stored"
    );
    assert!(
        stored.try_recv().is_err(),
        "the app saw it before it was stored"
    );
    done.send(Ok(())).unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), peer.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], &2u32.to_be_bytes());
    assert_eq!(stored.recv().await, Some(2));

    // A failed store stops the loop with nothing sent.
    commands.send(say(true, 3)).unwrap();
    let (_, done) = batches.recv().await.unwrap();
    done.send(Err("disk full".into())).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped, Stopped::JournalFailed("disk full".into()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        peer.try_recv(&mut buf).is_err(),
        "sent although the store failed"
    );
}

#[tokio::test]
async fn the_loop_reads_on_while_facts_are_stored_and_holds_back_what_follows_them() {
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = peer.local_addr().unwrap();
    let udp = BatchSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (journal, stored_batches) = Journal::<u32>::channel();
    // A store that blocks: each batch waits until the test answers it.
    let (batch_tx, mut batches) = mpsc::unbounded_channel::<JournalBatch<u32>>();
    std::thread::spawn(move || {
        while let Ok(batch) = stored_batches.recv() {
            if batch_tx.send(batch).is_err() {
                break;
            }
        }
    });
    let (commands, command_rx) = flume::bounded(4);
    let (role, mut stored, _closed) = role();
    let sockets = Sockets {
        udp: Some(udp),
        ..Sockets::default()
    };
    let task = tokio::spawn(run(
        DriverClock::default(),
        role,
        sockets,
        command_rx,
        Some(journal),
    ));
    let mut buf = [0u8; 16];
    let say = |durable, n| Cmd::Say { durable, n, to };
    let nothing_sent = |peer: &UdpSocket, buf: &mut [u8], what: &str| {
        assert!(peer.try_recv(buf).is_err(), "{what}");
    };

    // Fact 2 is being stored (the store blocks).
    commands.send(say(true, 2)).unwrap();
    let (batch, done2) = batches.recv().await.unwrap();
    assert_eq!(batch, vec![2]);
    // The loop goes on reading: a plain transmit is taken, and held behind
    // fact 2 (order is kept); fact 4 reaches the journal while fact 2 is
    // still unstored, so the two could share one transaction.
    commands.send(say(false, 3)).unwrap();
    commands.send(say(true, 4)).unwrap();
    let (batch, done4) = tokio::time::timeout(Duration::from_secs(5), batches.recv())
        .await
        .expect("the loop stopped reading while a batch was stored")
        .unwrap();
    assert_eq!(batch, vec![4]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    nothing_sent(&peer, &mut buf, "sent before fact 2 was stored");
    // The later batch stored first releases nothing: 2 is still not durable.
    done4.send(Ok(())).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    nothing_sent(&peer, &mut buf, "sent before fact 2 was stored");
    assert!(stored.try_recv().is_err(), "the app saw a fact too early");
    // Fact 2 stored: 2, 3 and 4 leave, in order.
    done2.send(Ok(())).unwrap();
    for n in [2u32, 3, 4] {
        let got = tokio::time::timeout(Duration::from_secs(5), peer.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..got], &n.to_be_bytes());
    }
    assert_eq!(stored.recv().await, Some(2));
    assert_eq!(stored.recv().await, Some(4));

    // A failed batch stops the loop: what was held behind it never leaves,
    // even when a later batch was stored.
    commands.send(say(true, 5)).unwrap();
    let (_, done5) = batches.recv().await.unwrap();
    commands.send(say(true, 6)).unwrap();
    let (_, done6) = batches.recv().await.unwrap();
    done6.send(Ok(())).unwrap();
    done5.send(Err("disk full".into())).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped, Stopped::JournalFailed("disk full".into()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    nothing_sent(&peer, &mut buf, "sent although its store failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_closed_and_never_stalls_the_loop() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = peer.local_addr().unwrap();
    let (commands, command_rx) = flume::bounded(4);
    let (role, _stored, mut closed) = role();
    let sockets = Sockets {
        udp: Some(BatchSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap()),
        listener: Some(listener),
        ..Sockets::default()
    };
    tokio::spawn(run(DriverClock::default(), role, sockets, command_rx, None));
    // A client that connects and never reads.
    let mut lazy = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Far more than the socket buffers and the queue hold.
    commands.send(Cmd::Flood { count: 20_000 }).unwrap();
    let conn = tokio::time::timeout(Duration::from_secs(5), closed.recv())
        .await
        .expect("the slow stream was closed")
        .unwrap();
    assert_eq!(conn, ConnectionId(1));
    // The loop still answers at once.
    let mut buf = [0u8; 16];
    commands
        .send(Cmd::Say {
            durable: false,
            n: 7,
            to,
        })
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), peer.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], &7u32.to_be_bytes());
    // And the lazy client sees its stream end once it drains what came.
    let mut sink = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match lazy.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the closed stream never ended");
}

/// Starts the toy role with a listener whose accepted streams follow
/// `overflow`; returns its address, commands and closes.
async fn with_listener(
    overflow: Overflow,
) -> (
    SocketAddr,
    flume::Sender<Cmd>,
    mpsc::UnboundedReceiver<ConnectionId>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (commands, command_rx) = flume::bounded(4);
    let (role, _stored, closed) = role();
    let sockets = Sockets {
        listener: Some(listener),
        accepted_overflow: overflow,
        ..Sockets::default()
    };
    tokio::spawn(run(DriverClock::default(), role, sockets, command_rx, None));
    (addr, commands, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_whose_peer_reads_slowly_gets_backpressure_not_a_close() {
    let (addr, commands, mut closed) = with_listener(Overflow::Wait(Duration::from_secs(5))).await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // 20 MB in one drain: more than twice the link's byte budget and far
    // more than the socket buffers hold.
    let count = 20_000;
    commands.send(Cmd::Flood { count }).unwrap();
    let mut sink = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    let read_all = tokio::time::timeout(Duration::from_secs(20), async {
        while got < count * 1000 {
            match slow.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
            // A reader slower than the loop.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(read_all.is_ok(), "the slow reader stalled at {got} bytes");
    assert_eq!(got, count * 1000, "every queued byte arrived");
    assert!(closed.try_recv().is_err(), "the link was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_whose_peer_never_reads_is_closed_after_the_backpressure_timeout() {
    let (addr, commands, mut closed) =
        with_listener(Overflow::Wait(Duration::from_millis(500))).await;
    let _stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    commands.send(Cmd::Flood { count: 20_000 }).unwrap();
    let conn = tokio::time::timeout(Duration::from_secs(10), closed.recv())
        .await
        .expect("the stalled link was closed")
        .unwrap();
    assert_eq!(conn, ConnectionId(1));
}
