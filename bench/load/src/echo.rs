//! The keepalive baseline: a minimal UDP echo responder (std, one
//! `recv_from` and one `send_to` per datagram, no crypto, no state) and a
//! load on it shaped like the keepalive load: many sockets on distinct
//! loopback sources, each with one datagram of a keepalive's size in
//! flight at a time.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::run::{source, Pace, MAX_TERMINALS};
use crate::stats::Tally;

/// Bytes of each echo datagram: a keepalive's size on the wire (shared
/// header, device ID, counter, AES-GCM tag; the ack is a little larger).
pub const ECHO_DATAGRAM_LEN: usize = 48;
/// How long an echo may take before it counts as an error.
pub const ECHO_TIMEOUT: Duration = Duration::from_secs(2);
/// Room for one datagram at the responder.
const RESPONDER_BUF: usize = 2048;

/// Answers every datagram on `socket` with itself, forever (until killed).
pub fn serve(socket: &UdpSocket) -> std::io::Result<()> {
    let mut buf = [0u8; RESPONDER_BUF];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        // A send that fails (the sender's buffer is gone) is a lost echo.
        let _ = socket.send_to(buf.get(..n).unwrap_or_default(), from);
    }
}

/// Drives the responder at `target` from `sockets` sockets from `start` to `end`,
/// closed loop (each socket sends its next datagram when the last came
/// back) or open loop at `rate` datagrams per second in total.
pub async fn load(
    target: SocketAddr,
    sockets: usize,
    start: Instant,
    end: Instant,
    rate: Option<f64>,
) -> Tally {
    let sockets = sockets.clamp(1, MAX_TERMINALS);
    let pace = Arc::new(Pace::new(start, end, rate));
    let mut tasks = Vec::new();
    for index in 0..sockets {
        let pace = pace.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let Ok(socket) = tokio::net::UdpSocket::bind(SocketAddr::new(source(index), 0)).await
            else {
                tally.error();
                return tally;
            };
            if socket.connect(target).await.is_err() {
                tally.error();
                return tally;
            }
            tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
            let mut out = [0u8; ECHO_DATAGRAM_LEN];
            let mut back = [0u8; RESPONDER_BUF];
            let mut counter: u64 = 0;
            loop {
                let Some(t0) = pace.next_op().await else {
                    break;
                };
                counter += 1;
                if let Some(head) = out.get_mut(..8) {
                    head.copy_from_slice(&counter.to_le_bytes());
                }
                if socket.send(&out).await.is_err() {
                    tally.error();
                    continue;
                }
                let deadline = tokio::time::Instant::from_std(t0 + ECHO_TIMEOUT);
                let got = loop {
                    tokio::select! {
                        r = socket.recv(&mut back) => match r {
                            Ok(n) if back.get(..8) == out.get(..8) && n == ECHO_DATAGRAM_LEN => break true,
                            Ok(_) => {}
                            Err(_) => break false,
                        },
                        () = tokio::time::sleep_until(deadline) => break false,
                    }
                };
                if got {
                    tally.complete(t0.elapsed());
                } else {
                    tally.error();
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        if let Ok(t) = task.await {
            tally.merge(t);
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A responder on a thread of its own, and a runtime for the load.
    fn responder() -> (SocketAddr, tokio::runtime::Runtime) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let target = socket.local_addr().expect("addr");
        std::thread::spawn(move || serve(&socket));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        (target, runtime)
    }

    #[test]
    fn every_echo_of_a_closed_loop_comes_back() {
        let (target, runtime) = responder();
        let start = Instant::now() + Duration::from_millis(20);
        let end = start + Duration::from_millis(300);
        let tally = runtime.block_on(load(target, 3, start, end, None));
        assert!(tally.completed > 10, "{tally:?}");
        assert_eq!(tally.errors, 0);
        assert_eq!(tally.latencies_us.len() as u64, tally.completed);
    }

    #[test]
    fn an_open_loop_offers_its_rate_and_stops_at_the_end() {
        let (target, runtime) = responder();
        let start = Instant::now() + Duration::from_millis(20);
        let end = start + Duration::from_millis(500);
        // 200/s for 0.5 s: slots 0..100, whatever the number of sockets.
        let tally = runtime.block_on(load(target, 8, start, end, Some(200.0)));
        assert_eq!(tally.completed + tally.errors, 100, "{tally:?}");
        assert!(Instant::now() < end + ECHO_TIMEOUT);
    }
}
