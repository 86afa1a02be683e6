//! The one event loop every role runs in: sockets, streams, timers and app
//! commands in; the machine's transmits out; its events to the app.
//!
//! Durable facts come first: when a [`Journal`] is given, every drain hands
//! the machine's durable events to it and waits until they are stored
//! before any transmit of the same drain (which may acknowledge them) goes
//! out. Streams are written by their own tasks from bounded queues (see
//! [`crate::stream`]), so the loop never waits on a slow peer.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::SocketAddr;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tryst_core::machine::{ConnectionId, Destination, Transmit};
use tryst_core::time::Instant;

use crate::clock::DriverClock;
use crate::stream::{accept_streams, connect_upstream, StreamInput, StreamWriter};

/// The connection number a machine sees for its own outgoing stream
/// (accepted streams are numbered from 1).
pub const UPSTREAM: ConnectionId = ConnectionId(0);
/// Each outgoing stream the driver opens gets its own number from here up,
/// so a late message or close from an old one is never taken for the new one.
const FIRST_UPSTREAM_STREAM: u64 = 1 << 63;
/// Most stream inputs (messages, opens, closes) waiting for the loop.
const STREAM_INPUT_QUEUE: usize = 1024;

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
    /// A copy of `event` if it is a durable fact, to be stored before
    /// anything that follows it goes out.
    fn durable_copy(_event: &Self::Event) -> Option<Self::Event> {
        None
    }
    /// The accepted stream `event` asks the driver to close, if any.
    fn close_request(_event: &Self::Event) -> Option<ConnectionId> {
        None
    }
}

/// One batch of durable events and where to say they are stored (or why not).
pub type JournalBatch<E> = (Vec<E>, oneshot::Sender<Result<(), String>>);

/// Where durable events go: a task or thread that stores each batch and
/// answers once it is on disk. An error (or a journal that went away)
/// stops the loop before anything of that drain is sent.
pub type Journal<E> = mpsc::Sender<JournalBatch<E>>;

/// Why a driver loop stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The app closed the command channel.
    Closed,
    /// The journal failed: nothing it did not store was acknowledged.
    JournalFailed(String),
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
    machine: M,
    sockets: Sockets,
    commands: mpsc::Receiver<M::Command>,
    events: mpsc::UnboundedSender<M::Event>,
) {
    let _ = run_journaled(clock, machine, sockets, commands, events, None).await;
}

/// [`run`], storing durable events in `journal` before sending anything
/// that follows them; returns why it stopped.
pub async fn run_journaled<M: Driven>(
    clock: DriverClock,
    mut machine: M,
    sockets: Sockets,
    mut commands: mpsc::Receiver<M::Command>,
    events: mpsc::UnboundedSender<M::Event>,
    journal: Option<Journal<M::Event>>,
) -> Stopped {
    let (stream_tx, mut stream_rx) = mpsc::channel::<StreamInput>(STREAM_INPUT_QUEUE);
    let acceptor = sockets
        .listener
        .map(|listener| tokio::spawn(accept_streams(listener, stream_tx.clone())));
    let mut io = Io {
        udp: sockets.udp,
        upstream_addr: sockets.upstream,
        writers: BTreeMap::new(),
        stream_tx,
        upstream: None,
        next_upstream: FIRST_UPSTREAM_STREAM,
        journal,
    };
    let mut buf = vec![0u8; 65_536];
    let mut stopped = drain(&clock, &mut machine, &mut io, &events).await;
    while stopped.is_none() {
        let deadline = clock.deadline(machine.poll_timeout());
        tokio::select! {
            received = recv_udp(&io.udp, &mut buf) => {
                if let Some((n, from)) = received {
                    machine.on_udp(clock.now(), from, &buf[..n]);
                }
            }
            Some(input) = stream_rx.recv() => match input {
                StreamInput::Opened(conn, remote, writer) => {
                    io.writers.insert(conn, writer);
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
                None => stopped = Some(Stopped::Closed),
            },
            _ = tokio::time::sleep_until(deadline) => machine.on_timeout(clock.now()),
        }
        if stopped.is_none() {
            stopped = drain(&clock, &mut machine, &mut io, &events).await;
        }
    }
    if let Some(acceptor) = acceptor {
        acceptor.abort();
    }
    for writer in io.writers.values() {
        writer.abort();
    }
    stopped.unwrap_or(Stopped::Closed)
}

/// Waits for a datagram, or forever when the role has no UDP socket.
async fn recv_udp(udp: &Option<UdpSocket>, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    match udp {
        Some(socket) => socket.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}

struct Io<E> {
    udp: Option<UdpSocket>,
    upstream_addr: Option<SocketAddr>,
    writers: BTreeMap<ConnectionId, StreamWriter>,
    stream_tx: mpsc::Sender<StreamInput>,
    /// The driver's number of the live outgoing stream, if any.
    upstream: Option<ConnectionId>,
    next_upstream: u64,
    journal: Option<Journal<E>>,
}

impl<E> Io<E> {
    /// The number the machine knows a live stream by; `None` for a stream
    /// that is gone (or an old outgoing one).
    fn seen_as(&self, conn: ConnectionId) -> Option<ConnectionId> {
        if conn.0 >= FIRST_UPSTREAM_STREAM {
            (self.upstream == Some(conn)).then_some(UPSTREAM)
        } else {
            self.writers.contains_key(&conn).then_some(conn)
        }
    }

    /// Drops a stream: its task writes what is queued, then closes it.
    fn forget(&mut self, conn: ConnectionId) {
        self.writers.remove(&conn);
        if self.upstream == Some(conn) {
            self.upstream = None;
        }
    }

    /// Drops a stream at once, discarding what is queued.
    fn kill(&mut self, conn: ConnectionId) {
        if let Some(writer) = self.writers.get(&conn) {
            writer.abort();
        }
        self.forget(conn);
    }

    /// Stores `batch` and waits until it is durable.
    async fn store(&self, batch: Vec<E>) -> Result<(), String> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let (done, stored) = oneshot::channel();
        journal
            .send((batch, done))
            .await
            .map_err(|_| "the store stopped".to_owned())?;
        stored.await.map_err(|_| "the store stopped".to_owned())?
    }
}

/// Stores the durable events, then sends every transmit and forwards every
/// event, until the machine has none; `Some` when the loop must stop.
async fn drain<M: Driven>(
    clock: &DriverClock,
    machine: &mut M,
    io: &mut Io<M::Event>,
    events: &mpsc::UnboundedSender<M::Event>,
) -> Option<Stopped> {
    loop {
        let mut batch = Vec::new();
        while let Some(event) = machine.poll_event() {
            batch.push(event);
        }
        let durable: Vec<M::Event> = batch.iter().filter_map(M::durable_copy).collect();
        if !durable.is_empty() {
            if let Err(e) = io.store(durable).await {
                tracing::error!(error = %e, "durable events not stored: stopping before acknowledging them");
                return Some(Stopped::JournalFailed(e));
            }
        }
        let mut any = !batch.is_empty();
        for event in batch {
            tracing::debug!(?event, "event");
            if let Some(conn) = M::close_request(&event) {
                io.kill(conn);
            }
            // The app may have gone; the machine keeps running regardless.
            let _ = events.send(event);
        }
        while let Some(transmit) = machine.poll_transmit() {
            any = true;
            if let Some(lost) = send(io, transmit).await {
                // The loss is an input: what it makes the machine say
                // (durable events included) goes first; its other
                // transmits wait in its queue for the next round.
                machine.on_closed(clock.now(), lost);
                break;
            }
        }
        if !any {
            return None;
        }
    }
}

/// Queues one transmit; returns the stream that failed, if one did.
async fn send<E>(io: &mut Io<E>, transmit: Transmit) -> Option<ConnectionId> {
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
                let writer = connect_upstream(addr, conn, io.stream_tx.clone());
                io.writers.insert(conn, writer);
                io.upstream = Some(conn);
                conn
            }
        },
    };
    let writer = io.writers.get(&conn)?;
    if writer.send(transmit.payload.to_vec()).is_err() {
        tracing::debug!(?conn, "stream too slow or gone: closing it");
        let seen_as = io.seen_as(conn);
        io.kill(conn);
        return seen_as;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tryst_core::machine::Payload;

    /// A machine that, on a command, emits one event (durable when the
    /// command says so) and transmits `count` copies of `payload` to `to`.
    struct Echo {
        out: std::collections::VecDeque<Transmit>,
        events: std::collections::VecDeque<Fact>,
        closed: Option<mpsc::UnboundedSender<ConnectionId>>,
        opened: Option<ConnectionId>,
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Fact {
        Durable(u32),
        Passing(u32),
    }

    enum Cmd {
        Say {
            durable: bool,
            n: u32,
            to: SocketAddr,
        },
        Flood {
            count: usize,
        },
    }

    impl Driven for Echo {
        type Event = Fact;
        type Command = Cmd;
        fn on_opened(&mut self, _now: Instant, conn: ConnectionId, _remote: SocketAddr) {
            self.opened = Some(conn);
        }
        fn on_message(&mut self, _now: Instant, _conn: ConnectionId, _message: &[u8]) {}
        fn on_closed(&mut self, _now: Instant, conn: ConnectionId) {
            if let Some(tx) = &self.closed {
                let _ = tx.send(conn);
            }
        }
        fn on_command(&mut self, _now: Instant, command: Cmd) {
            match command {
                Cmd::Say { durable, n, to } => {
                    self.events.push_back(if durable {
                        Fact::Durable(n)
                    } else {
                        Fact::Passing(n)
                    });
                    let mut payload = Payload::new();
                    let _ = payload.extend_from_slice(&n.to_be_bytes());
                    self.out.push_back(Transmit {
                        destination: Destination::Udp(to),
                        payload,
                    });
                }
                Cmd::Flood { count } => {
                    let Some(conn) = self.opened else { return };
                    let mut payload = Payload::new();
                    payload.resize(payload.capacity(), 0x55).unwrap_or_default();
                    for _ in 0..count {
                        self.out.push_back(Transmit {
                            destination: Destination::Connection(conn),
                            payload: payload.clone(),
                        });
                    }
                }
            }
        }
        fn on_timeout(&mut self, _now: Instant) {}
        fn poll_transmit(&mut self) -> Option<Transmit> {
            self.out.pop_front()
        }
        fn poll_event(&mut self) -> Option<Fact> {
            self.events.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn durable_copy(event: &Fact) -> Option<Fact> {
            matches!(event, Fact::Durable(_)).then(|| event.clone())
        }
    }

    fn echo() -> Echo {
        Echo {
            out: Default::default(),
            events: Default::default(),
            closed: None,
            opened: None,
        }
    }

    #[tokio::test]
    async fn durable_events_are_stored_before_the_transmit_that_acknowledges_them() {
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = peer.local_addr().unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (journal, mut batches) = mpsc::channel::<JournalBatch<Fact>>(4);
        let (commands, command_rx) = mpsc::channel(4);
        let (events, mut event_rx) = mpsc::unbounded_channel();
        let sockets = Sockets {
            udp: Some(udp),
            ..Sockets::default()
        };
        let task = tokio::spawn(run_journaled(
            DriverClock::default(),
            echo(),
            sockets,
            command_rx,
            events,
            Some(journal),
        ));
        let mut buf = [0u8; 16];

        // A passing event does not wait for the journal.
        commands
            .send(Cmd::Say {
                durable: false,
                n: 1,
                to,
            })
            .await
            .unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), peer.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], &1u32.to_be_bytes());

        // A durable one holds its drain's transmits until it is stored.
        commands
            .send(Cmd::Say {
                durable: true,
                n: 2,
                to,
            })
            .await
            .unwrap();
        let (batch, done) = batches.recv().await.unwrap();
        assert_eq!(batch, vec![Fact::Durable(2)]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            peer.try_recv(&mut buf).is_err(),
            "sent before it was stored"
        );
        assert_eq!(event_rx.try_recv().ok(), Some(Fact::Passing(1)));
        assert!(
            event_rx.try_recv().is_err(),
            "the app saw it before it was stored"
        );
        done.send(Ok(())).unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), peer.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], &2u32.to_be_bytes());
        assert_eq!(event_rx.recv().await, Some(Fact::Durable(2)));

        // A failed store stops the loop with nothing sent.
        commands
            .send(Cmd::Say {
                durable: true,
                n: 3,
                to,
            })
            .await
            .unwrap();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_never_reads_is_closed_and_never_stalls_the_loop() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = peer.local_addr().unwrap();
        let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
        let mut machine = echo();
        machine.closed = Some(closed_tx);
        let (commands, command_rx) = mpsc::channel(4);
        let (events, _event_rx) = mpsc::unbounded_channel();
        let sockets = Sockets {
            udp: Some(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
            listener: Some(listener),
            upstream: None,
        };
        tokio::spawn(run(
            DriverClock::default(),
            machine,
            sockets,
            command_rx,
            events,
        ));
        // A client that connects and never reads.
        let mut lazy = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Far more than the socket buffers and the queue hold.
        commands.send(Cmd::Flood { count: 20_000 }).await.unwrap();
        let conn = tokio::time::timeout(Duration::from_secs(5), closed_rx.recv())
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
            .await
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
}
