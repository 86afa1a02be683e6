//! The one event loop every role runs in (trigger server, session server,
//! terminal): sockets, streams, timers and app commands in; the machine's
//! outputs out, in the order of the core's contract
//! ([`tryst_core::machine`]).
//!
//! - [`Output::Store`] facts are collected and handed to the [`Journal`]
//!   before the next [`Output::Transmit`] (and at the end of each drain),
//!   without waiting: the loop goes on reading while the journal writes,
//!   and every transmit and close after the batch is held back
//!   ([`HeldBack`]) until the journal says it is stored, so nothing is
//!   acknowledged before it is durable and many drains' facts share one
//!   transaction (group commit). At [`MAX_HELD_BATCHES`] batches or
//!   [`MAX_HELD_BYTES`] held, the loop waits for the oldest batch before it
//!   reads on. A journal that fails stops the loop with nothing after the
//!   failed batch sent.
//! - [`Output::Close`] drops a stream at once.
//! - [`Output::Event`] goes to the role's app side ([`Driven::on_event`]).
//! - [`Output::Transmit`] goes to the UDP socket (batched with GSO) or to a
//!   stream's writer task ([`crate::stream`]), whose queue is bounded in
//!   bytes. What a full queue does is the role's choice ([`Sockets`]): a
//!   terminal's stream at a server is closed (the loop never waits on a
//!   slow terminal), an internal link makes the loop wait for room, for a
//!   bounded time ([`Overflow::Wait`]), then it is closed; the machine is
//!   told of every close.
//! - [`Output::Timeout`] is the loop's next timer.
//!
//! The roles (which machine, what its app does with events and commands)
//! are `tryst_std::role`'s, shared with the blocking driver; the modules
//! [`session_server`], [`trigger_server`] and [`terminal`] only bind their
//! sockets and start them here. None of it has protocol logic.

pub mod relay;
pub mod session_server;
pub mod terminal;
pub mod trigger_server;
pub mod udp;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tryst_core::machine::{ConnectionId, Destination, Input, Machine, Output, MAX_TRANSMIT_LEN};
use tryst_core::time::Instant;

use tryst_std::drive::{closed_input, quiet, settle, Held, StoredFuture};
pub use tryst_std::drive::{
    Driven, EventOf, FactOf, Flow, HeldBack, IoOf, Journal, JournalBatch, Stopped,
    FIRST_UPSTREAM_STREAM, JOURNAL_GONE, MAX_APP_ROUNDS, MAX_HELD_BATCHES, MAX_HELD_BYTES,
};

use crate::clock::{tokio_deadline, DriverClock};
use crate::stream::{
    accept_streams, connect_upstream, Framing, Overflow, StreamInput, StreamWriter,
};
use udp::BatchSocket;

/// Most stream inputs (messages, opens, closes) waiting for the loop.
const STREAM_INPUT_QUEUE: usize = 1024;

/// The sockets and wake-ups a role uses; each is optional.
#[derive(Debug, Default)]
pub struct Sockets {
    /// The UDP socket (terminal, trigger server), batched.
    pub udp: Option<BatchSocket>,
    /// A listener for streams (session server, trigger server).
    pub listener: Option<TcpListener>,
    /// Where `Destination::Upstream` connects (terminal, session server).
    pub upstream: Option<SocketAddr>,
    /// More addresses `Destination::Upstream` may connect to, numbered
    /// from 1 after [`Self::upstream`]: the machine names the one
    /// ([`tryst_core::machine::Machine::upstream_choice`]; a terminal's
    /// other session servers).
    pub failover_upstreams: Vec<SocketAddr>,
    /// The local address the upstream stream is bound to (any port);
    /// `None` lets the system choose.
    pub upstream_local: Option<IpAddr>,
    /// What a full queue does on the upstream stream: the session server's
    /// link to the trigger server waits ([`Overflow::LINK`]).
    pub upstream_overflow: Overflow,
    /// What a full queue does on accepted streams: terminals' streams at
    /// the session server close; the trigger server's accepted streams are
    /// session-server links and wait ([`Overflow::LINK`]).
    pub accepted_overflow: Overflow,
    /// How accepted streams' bytes are cut into messages (the relay's
    /// streams carry relay frames).
    pub accepted_framing: Framing,
    /// Notified by the app's threads (a file hasher) when
    /// [`Driven::after_drain`] has work.
    pub wake: Option<Arc<Notify>>,
}

/// Runs `role` on `clock` until its commands close, a command stops it, or
/// its journal fails; returns why it stopped.
pub async fn run<D: Driven>(
    clock: DriverClock,
    mut role: D,
    sockets: Sockets,
    commands: flume::Receiver<D::Command>,
    journal: Option<Journal<FactOf<D>>>,
) -> Stopped
where
    FactOf<D>: Clone + Send,
{
    let (stream_tx, mut stream_rx) = mpsc::channel::<StreamInput>(STREAM_INPUT_QUEUE);
    let acceptor = sockets.listener.map(|listener| {
        tokio::spawn(accept_streams(
            listener,
            stream_tx.clone(),
            sockets.accepted_overflow,
            sockets.accepted_framing,
        ))
    });
    let wake = sockets.wake.unwrap_or_default();
    let mut udp = sockets.udp;
    let mut io = Links {
        upstream_addr: sockets.upstream,
        failover_upstreams: sockets.failover_upstreams,
        upstream_choice: 0,
        upstream_local: sockets.upstream_local,
        upstream_overflow: sockets.upstream_overflow,
        writers: BTreeMap::new(),
        relay_streams: BTreeMap::new(),
        relay_of: BTreeMap::new(),
        stream_tx,
        upstream: None,
        next_upstream: FIRST_UPSTREAM_STREAM,
        journal,
    };
    let mut held = Holding::default();
    let mut buf = vec![0u8; MAX_TRANSMIT_LEN];
    let stopped = loop {
        let drained = drain(&clock, &mut role, &mut io, &mut held, &mut udp, &mut buf).await;
        let next = match drained {
            Ok(next) => next,
            Err(why) => break why,
        };
        let mut deadline = tokio_deadline(&clock, next);
        if let Some(app) = role.app_deadline() {
            deadline = deadline.min(tokio_deadline(&clock, Some(app)));
        }
        tokio::select! {
            stored = head_stored(&mut held) => {
                let now = clock.now();
                if let Err(why) = release(now, stored, &mut role, &mut io, &mut held, &mut udp).await {
                    break why;
                }
            }
            received = recv_udp(&mut udp) => match received {
                Ok(slots) => {
                    if let Some(socket) = udp.as_mut() {
                        let (machine, app_io) = role.parts();
                        socket.deliver(slots, clock.now(), machine, app_io);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "udp receive failed"),
            },
            Some(input) = stream_rx.recv() => {
                let now = clock.now();
                let (machine, app_io) = role.parts();
                io.on_stream(now, input, machine, app_io);
            }
            () = wake.notified() => {}
            command = commands.recv_async() => match command {
                Ok(command) => {
                    if let Flow::Stop { grace } = role.on_command(clock.now(), command) {
                        let drained = drain(&clock, &mut role, &mut io, &mut held, &mut udp, &mut buf).await;
                        if let Err(why) = drained {
                            break why;
                        }
                        if let Err(why) = release_all(&clock, &mut role, &mut io, &mut held, &mut udp).await {
                            break why;
                        }
                        if let Some((_, writer)) = io.take_upstream() {
                            writer.close(grace).await;
                        }
                        break Stopped::Shutdown;
                    }
                }
                Err(flume::RecvError::Disconnected) => break Stopped::Closed,
            },
            _ = tokio::time::sleep_until(deadline) => {
                let now = clock.now();
                let (machine, _) = role.parts();
                if machine.poll_timeout().is_some_and(|at| at <= now) {
                    machine.handle_timeout(now);
                }
            }
        }
    };
    role.on_stopped(&stopped);
    if let Some(acceptor) = acceptor {
        acceptor.abort();
    }
    for writer in io.writers.values() {
        writer.abort();
    }
    stopped
}

/// Waits for datagrams (the number of receive slots filled), or forever
/// when the role has no UDP socket.
async fn recv_udp(udp: &mut Option<BatchSocket>) -> std::io::Result<usize> {
    match udp {
        Some(socket) => socket.recv().await,
        None => std::future::pending().await,
    }
}

/// What the loop holds back behind unstored facts, with the journal's
/// answers as futures.
type Holding<F> = HeldBack<F, StoredFuture>;

/// Polls the machine until [`Output::Timeout`], acting on each output;
/// returns the machine's next timeout, or why the loop must stop.
async fn drain<D: Driven>(
    clock: &DriverClock,
    role: &mut D,
    io: &mut Links<FactOf<D>>,
    held: &mut Holding<FactOf<D>>,
    udp: &mut Option<BatchSocket>,
    buf: &mut [u8],
) -> Result<Option<Instant>, Stopped>
where
    FactOf<D>: Clone + Send,
{
    let mut facts: Vec<FactOf<D>> = Vec::new();
    let mut now = clock.now();
    let mut app_rounds = 0;
    loop {
        let (machine, app_io) = role.parts();
        match machine.poll_output(now, buf, app_io) {
            Output::Store(fact) => facts.push(fact),
            Output::Close(conn) => {
                if held.is_empty() {
                    io.kill(conn);
                } else {
                    held.hold_close(conn);
                }
            }
            Output::Event(event) => {
                tracing::debug!(?event, "event");
                role.on_event(now, event);
            }
            Output::Transmit(t) => {
                commit(io, role, held, &mut facts)?;
                let Some(bytes) = buf.get(..t.len) else {
                    continue;
                };
                if held.is_empty() {
                    send(now, role, io, udp, t.destination, t.local, bytes).await;
                } else {
                    held.hold_transmit(t.destination, t.local, bytes);
                }
            }
            Output::Timeout(next) => {
                commit(io, role, held, &mut facts)?;
                if let Some(socket) = udp.as_mut() {
                    socket.flush().await;
                }
                now = clock.now();
                if let Some(next) = quiet(role, now, &mut app_rounds, next) {
                    return Ok(next);
                }
            }
        }
        if held.full() {
            // The bound: wait for the oldest batch before going on.
            let stored = head_stored(held).await;
            release(clock.now(), stored, role, io, held, udp).await?;
        }
    }
}

/// Hands `facts` (if any) to the journal without waiting: what follows is
/// held back until they are stored. Without a journal they count as stored
/// at once.
fn commit<D: Driven>(
    io: &Links<FactOf<D>>,
    role: &mut D,
    held: &mut Holding<FactOf<D>>,
    facts: &mut Vec<FactOf<D>>,
) -> Result<(), Stopped>
where
    FactOf<D>: Clone + Send,
{
    if facts.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(facts);
    let Some(journal) = &io.journal else {
        return settle(role, batch, Ok(()));
    };
    match journal.submit(batch.clone()) {
        Ok(stored) => {
            held.hold_batch(batch, std::future::IntoFuture::into_future(stored));
            Ok(())
        }
        Err(e) => settle(role, batch, Err(e)),
    }
}

/// The journal's answer for the oldest batch held; never, when nothing is.
async fn head_stored<F>(held: &mut Holding<F>) -> Result<(), String> {
    match held.head() {
        Some(stored) => stored.await.map_err(|_| JOURNAL_GONE.to_owned())?,
        None => std::future::pending().await,
    }
}

/// The oldest batch's answer came (`stored`): on success the app hears its
/// facts and what was held behind it leaves, in order, up to the next
/// batch not yet answered (batches answered meanwhile are settled on the
/// way); on failure the loop stops with none of it sent.
async fn release<D: Driven>(
    now: Instant,
    mut stored: Result<(), String>,
    role: &mut D,
    io: &mut Links<FactOf<D>>,
    held: &mut Holding<FactOf<D>>,
    udp: &mut Option<BatchSocket>,
) -> Result<(), Stopped>
where
    FactOf<D>: Clone + Send,
{
    let Some(Held::Batch(batch, _)) = held.pop() else {
        return Ok(());
    };
    settle(role, batch, stored)?;
    loop {
        if let Some(next) = held.head() {
            if !(next.has_message() || next.is_closed()) {
                break;
            }
            // Answered already: this poll returns at once.
            stored = next.await.unwrap_or_else(|_| Err(JOURNAL_GONE.to_owned()));
            if let Some(Held::Batch(batch, _)) = held.pop() {
                settle(role, batch, stored)?;
            }
            continue;
        }
        match held.pop() {
            Some(Held::Transmit {
                destination,
                local,
                bytes,
            }) => send(now, role, io, udp, destination, local, &bytes).await,
            Some(Held::Close(conn)) => io.kill(conn),
            Some(Held::Batch(..)) | None => break,
        }
    }
    if let Some(socket) = udp.as_mut() {
        socket.flush().await;
    }
    Ok(())
}

/// Waits until every held batch is stored and what follows each has left
/// (a loop that stops).
async fn release_all<D: Driven>(
    clock: &DriverClock,
    role: &mut D,
    io: &mut Links<FactOf<D>>,
    held: &mut Holding<FactOf<D>>,
    udp: &mut Option<BatchSocket>,
) -> Result<(), Stopped>
where
    FactOf<D>: Clone + Send,
{
    while !held.is_empty() {
        let stored = head_stored(held).await;
        release(clock.now(), stored, role, io, held, udp).await?;
    }
    Ok(())
}

/// Sends one transmit: to the UDP socket's batch, or to a stream (whose
/// loss is an input to the machine; the next drain polls it).
async fn send<D: Driven>(
    now: Instant,
    role: &mut D,
    io: &mut Links<FactOf<D>>,
    udp: &mut Option<BatchSocket>,
    destination: Destination,
    local: Option<IpAddr>,
    bytes: &[u8],
) {
    match destination {
        Destination::Udp(to) => {
            if let Some(socket) = udp.as_mut() {
                socket.queue(to, local, bytes).await;
            }
        }
        destination => {
            let choice = role.parts().0.upstream_choice();
            if let Some(lost) = io.send(destination, bytes, choice).await {
                // The loss is an input; polling goes on.
                let (machine, app_io) = role.parts();
                machine.handle_input(now, lost, app_io);
            }
        }
    }
}

/// The loop's streams and journal.
struct Links<F> {
    upstream_addr: Option<SocketAddr>,
    failover_upstreams: Vec<SocketAddr>,
    /// The index of the address the live upstream stream goes to.
    upstream_choice: usize,
    upstream_local: Option<IpAddr>,
    upstream_overflow: Overflow,
    writers: BTreeMap<ConnectionId, StreamWriter>,
    /// The streams to relays over TCP ([`Destination::RelayStream`]), by
    /// relay, and back.
    relay_streams: BTreeMap<SocketAddr, ConnectionId>,
    relay_of: BTreeMap<ConnectionId, SocketAddr>,
    stream_tx: mpsc::Sender<StreamInput>,
    /// The driver's number of the live outgoing stream, if any.
    upstream: Option<ConnectionId>,
    next_upstream: u64,
    journal: Option<Journal<F>>,
}

impl<F> Links<F> {
    /// A stream task's news, as the machine's input.
    fn on_stream<M: Machine + ?Sized>(
        &mut self,
        now: Instant,
        input: StreamInput,
        machine: &mut M,
        app_io: &mut M::Io,
    ) {
        match input {
            StreamInput::Opened(conn, remote, writer) => {
                self.writers.insert(conn, writer);
                machine.handle_input(now, Input::ConnectionOpened { conn, remote }, app_io);
            }
            StreamInput::Message(conn, mut message) => {
                if let Some(&relay) = self.relay_of.get(&conn) {
                    // A packet from the relay over TCP: a datagram from it.
                    let input = Input::Datagram {
                        from: relay,
                        local: None,
                        bytes: &mut message,
                    };
                    machine.handle_input(now, input, app_io);
                } else if self.upstream == Some(conn) {
                    machine.handle_input(now, Input::UpstreamMessage(&message), app_io);
                } else if self.writers.contains_key(&conn) && conn.0 < FIRST_UPSTREAM_STREAM {
                    let input = Input::ConnectionMessage {
                        conn,
                        bytes: &message,
                    };
                    machine.handle_input(now, input, app_io);
                }
            }
            StreamInput::Closed(conn) => {
                if let Some(relay) = self.relay_of.remove(&conn) {
                    // The next frame for it connects again.
                    self.relay_streams.remove(&relay);
                    self.writers.remove(&conn);
                    return;
                }
                if let Some(lost) = self.closed_input(conn) {
                    if self
                        .writers
                        .get(&conn)
                        .is_some_and(|w| matches!(w.overflow(), Overflow::Wait(_)))
                    {
                        tracing::warn!(?conn, "internal link closed: lost or closed by its peer");
                    }
                    self.forget(conn);
                    machine.handle_input(now, lost, app_io);
                }
            }
        }
    }

    /// The input that says stream `conn` ended; `None` for a stream that is
    /// gone (or an old outgoing one).
    fn closed_input(&self, conn: ConnectionId) -> Option<Input<'static>> {
        closed_input(conn, self.upstream)
            .filter(|_| conn.0 >= FIRST_UPSTREAM_STREAM || self.writers.contains_key(&conn))
    }

    /// Drops a stream: its task writes what is queued, then closes it.
    fn forget(&mut self, conn: ConnectionId) {
        self.writers.remove(&conn);
        if let Some(relay) = self.relay_of.remove(&conn) {
            self.relay_streams.remove(&relay);
        }
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

    /// The live upstream stream, taken out of the loop's care.
    fn take_upstream(&mut self) -> Option<(ConnectionId, StreamWriter)> {
        let conn = self.upstream.take()?;
        self.writers.remove(&conn).map(|writer| (conn, writer))
    }

    /// Queues one message on a stream, opening the upstream one if needed
    /// (and waiting for room on an internal link); the input that says the
    /// stream was lost, if it was.
    /// `choice` is the upstream address the machine names: a live upstream
    /// stream to another is dropped first (nobody waits for its end).
    async fn send(
        &mut self,
        destination: Destination,
        bytes: &[u8],
        choice: usize,
    ) -> Option<Input<'static>> {
        if let (Destination::Upstream, Some(old)) = (destination, self.upstream) {
            if self.upstream_choice != choice {
                self.kill(old);
            }
        }
        let conn = match destination {
            Destination::Udp(_) => return None,
            Destination::RelayStream(relay) => match self.relay_streams.get(&relay) {
                Some(&conn) => conn,
                None => {
                    tracing::debug!(%relay, "connecting to the relay over tcp");
                    let conn = ConnectionId(self.next_upstream);
                    self.next_upstream += 1;
                    let writer = connect_upstream(
                        relay,
                        None,
                        conn,
                        self.stream_tx.clone(),
                        Overflow::Drop,
                        Framing::Relay,
                    );
                    self.writers.insert(conn, writer);
                    self.relay_streams.insert(relay, conn);
                    self.relay_of.insert(conn, relay);
                    conn
                }
            },
            Destination::Connection(conn) => conn,
            Destination::Upstream => match self.upstream {
                Some(conn) => conn,
                None => {
                    let addr = match choice.checked_sub(1) {
                        None => self.upstream_addr?,
                        Some(i) => *self.failover_upstreams.get(i)?,
                    };
                    self.upstream_choice = choice;
                    let conn = ConnectionId(self.next_upstream);
                    self.next_upstream += 1;
                    let writer = connect_upstream(
                        addr,
                        self.upstream_local,
                        conn,
                        self.stream_tx.clone(),
                        self.upstream_overflow,
                        Framing::Messages,
                    );
                    self.writers.insert(conn, writer);
                    self.upstream = Some(conn);
                    conn
                }
            },
        };
        let writer = self.writers.get(&conn)?;
        if writer.send(bytes.to_vec()).await.is_err() {
            match writer.overflow() {
                Overflow::Close | Overflow::Drop => {
                    tracing::debug!(?conn, "stream too slow or gone: closing it")
                }
                Overflow::Wait(limit) => tracing::warn!(
                    ?conn,
                    waited = ?limit,
                    "internal link closed: its peer stopped reading or it is gone"
                ),
            }
            let lost = self.closed_input(conn);
            self.kill(conn);
            return lost;
        }
        None
    }
}

#[cfg(test)]
mod tests;
