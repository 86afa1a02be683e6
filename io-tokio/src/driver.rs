//! The one event loop every role runs in: sockets, streams, timers and app
//! commands in; the machine's transmits out; its events to the app.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tryst_core::machine::{ConnectionId, Destination, Transmit};
use tryst_core::time::Instant;

use crate::clock::DriverClock;
use crate::stream::{accept_streams, connect_upstream, StreamInput};

/// The connection number a machine sees for its own outgoing stream
/// (accepted streams are numbered from 1).
pub const UPSTREAM: ConnectionId = ConnectionId(0);
/// Each outgoing stream the driver opens gets its own number from here up,
/// so a late message or close from an old one is never taken for the new one.
const FIRST_UPSTREAM_STREAM: u64 = 1 << 63;

/// A role's machine as the loop sees it. Implemented for each role in its
/// module by forwarding to the core's `handle_*` / `poll_*` methods.
pub trait Driven: Send + 'static {
    /// What the machine reports to the app.
    type Event: Send + Debug + 'static;
    /// What the app asks of the machine.
    type Command: Send + 'static;
    /// A datagram arrived on the machine's UDP socket.
    fn on_udp(&mut self, _now: Instant, _from: SocketAddr, _datagram: &[u8]) {}
    /// A stream was accepted.
    fn on_opened(&mut self, _now: Instant, _conn: ConnectionId, _remote: SocketAddr) {}
    /// A whole message arrived on a stream ([`UPSTREAM`] for the machine's own).
    fn on_message(&mut self, now: Instant, conn: ConnectionId, message: &[u8]);
    /// A stream ended ([`UPSTREAM`] for the machine's own).
    fn on_closed(&mut self, now: Instant, conn: ConnectionId);
    /// The app's command.
    fn on_command(&mut self, now: Instant, command: Self::Command);
    /// `handle_timeout`.
    fn on_timeout(&mut self, now: Instant);
    /// `poll_transmit`.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// `poll_event`.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// `poll_timeout`.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// The sockets a role uses; each is optional.
#[derive(Debug, Default)]
pub struct Sockets {
    /// The UDP socket (terminal, trigger server).
    pub udp: Option<UdpSocket>,
    /// A listener for streams (session server, trigger server).
    pub listener: Option<TcpListener>,
    /// Where `Destination::Upstream` connects (terminal, session server).
    pub upstream: Option<SocketAddr>,
}

/// Runs `machine` on `clock` until `commands` closes, sending its events to `events`.
pub async fn run<M: Driven>(
    clock: DriverClock,
    mut machine: M,
    sockets: Sockets,
    mut commands: mpsc::Receiver<M::Command>,
    events: mpsc::UnboundedSender<M::Event>,
) {
    let (stream_tx, mut stream_rx) = mpsc::channel::<StreamInput>(1024);
    if let Some(listener) = sockets.listener {
        tokio::spawn(accept_streams(listener, stream_tx.clone()));
    }
    let mut io = Io {
        udp: sockets.udp,
        upstream_addr: sockets.upstream,
        writers: BTreeMap::new(),
        stream_tx,
        upstream: None,
        next_upstream: FIRST_UPSTREAM_STREAM,
    };
    let mut buf = vec![0u8; 65_536];
    drain(&clock, &mut machine, &mut io, &events).await;
    loop {
        let deadline = clock.deadline(machine.poll_timeout());
        tokio::select! {
            received = recv_udp(&io.udp, &mut buf) => {
                if let Some((n, from)) = received {
                    machine.on_udp(clock.now(), from, &buf[..n]);
                }
            }
            Some(input) = stream_rx.recv() => match input {
                StreamInput::Opened(conn, remote, write) => {
                    io.writers.insert(conn, write);
                    machine.on_opened(clock.now(), conn, remote);
                }
                StreamInput::Message(conn, message) => {
                    if let Some(seen_as) = io.seen_as(conn) {
                        machine.on_message(clock.now(), seen_as, &message);
                    }
                }
                StreamInput::Closed(conn) => {
                    if let Some(seen_as) = io.seen_as(conn) {
                        io.forget(conn);
                        machine.on_closed(clock.now(), seen_as);
                    }
                }
            },
            command = commands.recv() => match command {
                Some(command) => machine.on_command(clock.now(), command),
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => machine.on_timeout(clock.now()),
        }
        drain(&clock, &mut machine, &mut io, &events).await;
    }
}

/// Waits for a datagram, or forever when the role has no UDP socket.
async fn recv_udp(udp: &Option<UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match udp {
        Some(socket) => socket.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}

struct Io {
    udp: Option<UdpSocket>,
    upstream_addr: Option<SocketAddr>,
    writers: BTreeMap<ConnectionId, OwnedWriteHalf>,
    stream_tx: mpsc::Sender<StreamInput>,
    /// The driver's number of the live outgoing stream, if any.
    upstream: Option<ConnectionId>,
    next_upstream: u64,
}

impl Io {
    /// The number the machine knows a live stream by; `None` for a stream
    /// that is gone (or an old outgoing one).
    fn seen_as(&self, conn: ConnectionId) -> Option<ConnectionId> {
        if conn.0 >= FIRST_UPSTREAM_STREAM {
            (self.upstream == Some(conn)).then_some(UPSTREAM)
        } else {
            self.writers.contains_key(&conn).then_some(conn)
        }
    }

    fn forget(&mut self, conn: ConnectionId) {
        self.writers.remove(&conn);
        if self.upstream == Some(conn) {
            self.upstream = None;
        }
    }
}

/// Sends every transmit and forwards every event, until the machine has none.
async fn drain<M: Driven>(
    clock: &DriverClock,
    machine: &mut M,
    io: &mut Io,
    events: &mpsc::UnboundedSender<M::Event>,
) {
    loop {
        while let Some(transmit) = machine.poll_transmit() {
            if let Some(lost) = send(io, transmit).await {
                machine.on_closed(clock.now(), lost);
            }
        }
        let mut any = false;
        while let Some(event) = machine.poll_event() {
            any = true;
            tracing::debug!(?event, "event");
            // The app may have gone; the machine keeps running regardless.
            let _ = events.send(event);
        }
        if !any {
            break;
        }
    }
}

/// Sends one transmit; returns the stream that failed, if one did.
async fn send(io: &mut Io, transmit: Transmit) -> Option<ConnectionId> {
    let conn = match transmit.destination {
        Destination::Udp(to) => {
            if let Some(udp) = &io.udp {
                if let Err(e) = udp.send_to(&transmit.payload, to).await {
                    tracing::debug!(%to, error = %e, "datagram not sent");
                }
            }
            return None;
        }
        Destination::Connection(conn) => conn,
        Destination::Upstream => match io.upstream {
            Some(conn) => conn,
            None => {
                let addr = io.upstream_addr?;
                let conn = ConnectionId(io.next_upstream);
                io.next_upstream += 1;
                match connect_upstream(addr, conn, io.stream_tx.clone()).await {
                    Ok(write) => {
                        io.writers.insert(conn, write);
                        io.upstream = Some(conn);
                        conn
                    }
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "upstream connect failed");
                        return Some(UPSTREAM);
                    }
                }
            }
        },
    };
    let writer = io.writers.get_mut(&conn)?;
    if writer.write_all(&transmit.payload).await.is_err() {
        let seen_as = io.seen_as(conn);
        io.forget(conn);
        return seen_as;
    }
    None
}
