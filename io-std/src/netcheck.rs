//! `tryst netcheck`'s two halves in the std layer both binaries share: the
//! trigger server's probe port ([`ProbePortHandle`], the core's stateless
//! [`tryst_core::trigger_server::probe_port`] echo on two sockets of its
//! own, on a thread) and the terminal side ([`run_netcheck`], the core's
//! [`tryst_core::netcheck`] machine on a few blocking sockets). Neither
//! needs an async runtime: each is a handful of datagrams.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand_core::{OsRng, RngCore};
use tryst_core::netcheck::{Netcheck, NetcheckConfig, NetcheckReport, PROBE_BUF};
use tryst_core::time::Instant;
use tryst_core::trigger_server::probe_port::{ProbePort, Via};
use tryst_core::wire::MAX_MESSAGE_LEN;

/// How often the probe port's thread looks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(200);

/// A running probe port: the probe socket (`--probe-listen`) and the other
/// socket the filtering echo leaves from (same IP, an ephemeral port).
/// Dropping it stops the thread.
#[derive(Debug)]
pub struct ProbePortHandle {
    /// The probe socket's bound address.
    pub addr: SocketAddr,
    /// The other socket's bound address.
    pub other: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for ProbePortHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Binds the probe port on `addr` (and its other socket on the same IP)
/// and answers address probes on a thread until the handle is dropped.
pub fn spawn_probe_port(addr: SocketAddr) -> io::Result<ProbePortHandle> {
    let probe = UdpSocket::bind(addr)?;
    let other = UdpSocket::bind(SocketAddr::new(addr.ip(), 0))?;
    probe.set_read_timeout(Some(STOP_POLL))?;
    let handle = ProbePortHandle {
        addr: probe.local_addr()?,
        other: other.local_addr()?,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let stop = handle.stop.clone();
    let mut machine = ProbePort::new(OsRng.next_u64());
    std::thread::Builder::new()
        .name("probe-port".into())
        .spawn(move || {
            let origin = std::time::Instant::now();
            let mut buf = [0u8; MAX_MESSAGE_LEN];
            let mut out = [0u8; MAX_MESSAGE_LEN];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = probe.recv_from(&mut buf) else {
                    continue;
                };
                let now = Instant::from_micros(origin.elapsed().as_micros() as u64);
                let Some(echo) = buf
                    .get(..n)
                    .and_then(|bytes| machine.handle(now, from, bytes, &mut out))
                else {
                    continue;
                };
                let socket = match echo.via {
                    Via::ProbeSocket => &probe,
                    Via::OtherSocket => &other,
                };
                if let Some(bytes) = out.get(..echo.len) {
                    // A lost echo is the prober's to retry.
                    let _ = socket.send_to(bytes, echo.to);
                }
            }
        })?;
    Ok(handle)
}

/// Runs a netcheck with `config` (its `local` and `txid_seed` are filled
/// in here) on fresh sockets bound to `bind` (port 0 each) until it
/// reports, or `deadline` passes (then `None`).
pub fn run_netcheck(
    mut config: NetcheckConfig,
    bind: SocketAddr,
    deadline: Duration,
) -> io::Result<Option<NetcheckReport>> {
    config.txid_seed = OsRng.next_u64();
    let count = Netcheck::new(config).sockets();
    let sockets: Vec<UdpSocket> = (0..count)
        .map(|_| UdpSocket::bind(SocketAddr::new(bind.ip(), 0)))
        .collect::<io::Result<_>>()?;
    // The mapping socket's own address (with an unspecified bind, the IP
    // the system routes towards the server from).
    let port = sockets
        .first()
        .map(UdpSocket::local_addr)
        .transpose()?
        .map(|a| a.port());
    let ip = if bind.ip().is_unspecified() {
        route_ip(bind, config.server)
    } else {
        Some(bind.ip())
    };
    config.local = ip.zip(port).map(|(ip, port)| SocketAddr::new(ip, port));
    let (tx, rx) = flume::unbounded::<(usize, SocketAddr, Vec<u8>)>();
    let stop = Arc::new(AtomicBool::new(false));
    for (i, socket) in sockets.iter().enumerate() {
        let socket = socket.try_clone()?;
        socket.set_read_timeout(Some(STOP_POLL))?;
        let (tx, stop) = (tx.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("netcheck-{i}"))
            .spawn(move || {
                let mut buf = [0u8; MAX_MESSAGE_LEN];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        if tx.send((i, from, buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            })?;
    }
    drop(tx);
    let origin = std::time::Instant::now();
    let now = || Instant::from_micros(origin.elapsed().as_micros() as u64);
    let mut machine = Netcheck::new(config);
    let result = loop {
        if machine.poll_timeout().is_some_and(|t| t <= now()) {
            machine.handle_timeout(now());
        }
        let mut buf = [0u8; PROBE_BUF];
        while let Some((socket, to, len)) = machine.poll_transmit(&mut buf) {
            if let (Some(s), Some(bytes)) = (sockets.get(socket), buf.get(..len)) {
                // A lost probe is retried by the machine, or counts as lost.
                let _ = s.send_to(bytes, to);
            }
        }
        if let Some(report) = machine.report() {
            break Some(report);
        }
        if origin.elapsed() >= deadline {
            break None;
        }
        let wait = machine
            .poll_timeout()
            .map(|t| Duration::from_micros(t.as_micros().saturating_sub(now().as_micros())))
            .unwrap_or(STOP_POLL)
            .min(STOP_POLL);
        match rx.recv_timeout(wait) {
            Ok((socket, from, bytes)) => machine.handle_datagram(now(), socket, from, &bytes),
            Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => break None,
        }
    };
    stop.store(true, Ordering::Relaxed);
    Ok(result)
}

/// The local IP the system sends from towards `server` (a connected
/// throwaway socket; nothing is sent).
fn route_ip(bind: SocketAddr, server: SocketAddr) -> Option<std::net::IpAddr> {
    let probe = UdpSocket::bind(SocketAddr::new(bind.ip(), 0)).ok()?;
    probe.connect(server).ok()?;
    probe.local_addr().ok().map(|a| a.ip())
}
