//! Issue 12, the registration handshake, attacked through the real `tryst`
//! binary (a `tryst server` child on loopback; terminals in this process):
//! a neighbour behind the same address cannot starve a ticket holder's
//! registrations.
//!
//! Declared as a test of the `tryst-tokio` package (see its Cargo.toml) so
//! that `CARGO_BIN_EXE_tryst` names the binary that `cargo test` built.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use tryst_tokio::core::crypto::StaticKeypair;
use tryst_tokio::core::terminal::TerminalEvent;
use tryst_tokio::core::wire::{HandshakeInit, Message};

#[path = "e2e_support/mod.rs"]
mod support;
use support::cluster::*;

/// How long the victim may take to register again while the flood runs.
const REREGISTER_WITHIN: Duration = Duration::from_secs(6);

/// A neighbour on the same address: keyless 102-byte `HandshakeInit`s, as
/// fast as the server takes them, until `stop`; counts the streams the
/// server closed on it (its registration bucket was empty).
fn flood_keyless_inits(control: SocketAddr, stop: Arc<AtomicBool>, closed: Arc<AtomicU64>) {
    let junk = Message::HandshakeInit(HandshakeInit { noise: &[0x42; 96] });
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = RawStream::connect(control) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            if stream.send_message(&junk).is_err() {
                break;
            }
            if stream.closed_within(Duration::from_millis(100)) {
                closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neighbour_draining_the_source_bucket_cannot_lock_out_a_ticket_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(&dir.path().join("server"), &[], "server.log");
    let relay = TcpRelay::start(server.control);
    let mut victim = Term::start(
        "TERM1",
        StaticKeypair::generate(&mut OsRng),
        &[],
        relay.addr,
        server.trigger,
        server.key,
    )
    .await;
    victim.online().await;

    // The neighbour on 127.0.0.1 empties the per-source bucket and keeps it empty.
    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, closed) = (stop.clone(), closed.clone());
        let control = server.control;
        std::thread::spawn(move || flood_keyless_inits(control, stop, closed))
    };
    let drained = Instant::now() + STEP;
    while closed.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < drained,
            "the flood never drained the bucket"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The victim loses its stream and registers again from the same address.
    relay.cut();
    victim
        .expect("re-registering", |e| {
            matches!(e, TerminalEvent::Reregistering { .. }).then_some(())
        })
        .await;
    let started = Instant::now();
    let again = tokio::time::timeout(
        REREGISTER_WITHIN,
        victim.expect("registered again", |e| {
            matches!(e, TerminalEvent::Registered { .. }).then_some(())
        }),
    )
    .await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = flood.join();
    assert!(
        again.is_ok(),
        "the victim did not register again within {REREGISTER_WITHIN:?} while its neighbour flooded"
    );
    assert!(
        closed.load(Ordering::Relaxed) >= 2,
        "the neighbour's inits were refused throughout"
    );
    eprintln!("re-registered in {took:?} under the flood");
}
