//! The blocking driver: one thread per role runs [`run`], the loop of the
//! core's contract ([`tryst_core::machine`]) over non-blocking `std::net`
//! sockets on one `mio` poller, sleeping in the poller until the machine's
//! next timeout or the next input (no busy loop, no sleep-polling). It
//! behaves as the tokio driver's loop does:
//!
//! - [`Output::Store`] facts are collected and handed to the [`Journal`]
//!   before the next [`Output::Transmit`] (and at the end of each drain),
//!   without waiting, as the tokio driver does: the loop goes on reading
//!   while the journal writes, and every transmit and close after the
//!   batch is held back ([`HeldBack`]) until the journal says it is stored,
//!   so nothing is acknowledged before it is durable and many drains'
//!   facts share one transaction (group commit). The journal's answers
//!   come through a small thread that waits on them in order and wakes the
//!   poller. At [`MAX_HELD_BATCHES`](crate::drive::MAX_HELD_BATCHES)
//!   batches or [`MAX_HELD_BYTES`](crate::drive::MAX_HELD_BYTES) held, the
//!   loop waits for the oldest batch before it reads on. A journal that
//!   fails stops the loop with nothing after the failed batch sent.
//! - [`Output::Close`] drops a stream at once (or, behind a batch not yet
//!   stored, once it is).
//! - [`Output::Event`] goes to the role's app side ([`Driven::on_event`]).
//! - [`Output::Transmit`] goes to the batched UDP socket ([`BatchSocket`],
//!   GSO) or to a stream's write queue, bounded in bytes
//!   ([`Overflow::budget`]) and written in batches. A full queue closes a
//!   terminal's stream ([`Overflow::Close`]); on an internal link
//!   ([`Overflow::Wait`]) the loop waits for room, at most the policy's
//!   limit, then closes it. The machine is told of every close.
//! - [`Output::Timeout`] is the poller's timeout.
//!
//! Apps send commands on a `flume` channel and wake the loop with the
//! [`Wake`] its [`Poller`] gives (`role::Commands::channel(Some(wake))`
//! does both); the role's threads (a file hasher) wake it the same way.

pub mod relay;
pub mod session_server;
mod stream;
pub mod terminal;
#[cfg(test)]
mod tests;
pub mod trigger_server;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use mio::{Events, Interest, Poll, Token};
use tryst_core::machine::{ConnectionId, Destination, Input, Machine, Output, MAX_TRANSMIT_LEN};
use tryst_core::time::Instant;

use crate::descriptors::AcceptErrors;
use crate::drive::{
    closed_input, quiet, settle, Driven, DriverClock, FactOf, Flow, Framing, Held, HeldBack,
    Journal, Overflow, Stopped, Stored, FIRST_UPSTREAM_STREAM, JOURNAL_GONE,
};
use crate::transfer::Wake;
use crate::udp::BatchSocket;
use stream::{Ended, Full, ReadRound, Stream, READ_CHUNK};

/// Most app commands taken per loop round (more: the loop comes straight
/// back, after the sockets had their turn).
pub const MAX_COMMANDS_PER_ROUND: usize = 64;
/// Most streams accepted per loop round.
pub const MAX_ACCEPTS_PER_ROUND: usize = 64;
/// Most batched UDP receives per loop round.
pub const MAX_UDP_RECEIVES_PER_ROUND: usize = 16;
/// Most readiness events taken from the poller at once.
pub const MAX_EVENTS: usize = 1024;
/// Longest the loop waits for room in the UDP socket's send buffer before
/// it drops the datagram (UDP: the protocol above retransmits).
pub const UDP_SEND_WAIT: Duration = Duration::from_millis(200);

/// The poller's token of its waker.
const WAKE: Token = Token(usize::MAX);
/// The UDP socket's token.
const UDP: Token = Token(usize::MAX - 1);
/// The listener's token.
const LISTENER: Token = Token(usize::MAX - 2);
/// Streams' tokens are below this.
const STREAM_TOKENS: usize = usize::MAX - 2;

/// The loop's poller and its waker, made before the loop starts so that
/// apps (and a role's hasher threads) can be given the [`Wake`] first.
#[derive(Debug)]
pub struct Poller {
    poll: Poll,
    waker: Arc<mio::Waker>,
}

impl Poller {
    /// A poller and the [`Wake`] that interrupts its loop's sleep.
    pub fn new() -> io::Result<(Poller, Wake)> {
        let poll = Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE)?);
        let poller = Poller { poll, waker };
        let wake = poller.wake();
        Ok((poller, wake))
    }

    /// Another [`Wake`] for this poller's loop.
    pub fn wake(&self) -> Wake {
        let waker = Arc::clone(&self.waker);
        Arc::new(move || {
            // A failed wake leaves the loop to its timeout; nothing to do.
            let _ = waker.wake();
        })
    }
}

/// The sockets a role uses; each is optional (the same meaning as the
/// tokio driver's).
#[derive(Debug, Default)]
pub struct Sockets {
    /// The UDP socket (terminal, trigger server), batched.
    pub udp: Option<BatchSocket>,
    /// A listener for streams (session server, trigger server).
    pub listener: Option<std::net::TcpListener>,
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
}

/// Starts [`run`] on a thread of its own named `name` (with `stack` bytes
/// of stack if given), on the role `make` builds there (a terminal's
/// machine is large: it is built on the loop's own stack, not the
/// caller's); returns once the role is built, or why it could not be. The
/// thread returns why the loop stopped.
#[allow(clippy::too_many_arguments)]
pub fn start<D: Driven>(
    name: &str,
    stack: Option<usize>,
    clock: DriverClock,
    make: impl FnOnce() -> io::Result<D> + Send + 'static,
    sockets: Sockets,
    commands: flume::Receiver<D::Command>,
    journal: Option<Journal<FactOf<D>>>,
    poller: Poller,
) -> io::Result<std::thread::JoinHandle<Stopped>>
where
    FactOf<D>: Clone + Send,
{
    let mut thread = std::thread::Builder::new().name(name.to_owned());
    if let Some(stack) = stack {
        thread = thread.stack_size(stack);
    }
    let (ready_tx, ready) = std::sync::mpsc::channel::<io::Result<()>>();
    let thread = thread.spawn(move || match make() {
        Ok(role) => {
            let _ = ready_tx.send(Ok(()));
            run(clock, role, sockets, commands, journal, poller)
        }
        Err(e) => {
            let _ = ready_tx.send(Err(e));
            Stopped::Closed
        }
    })?;
    ready
        .recv()
        .map_err(|_| io::Error::other("the loop's thread stopped"))??;
    Ok(thread)
}

/// Runs `role` on `clock` in this thread until its commands close, a
/// command stops it, or its journal fails; returns why it stopped.
/// Sockets the poller cannot take stop it at once ([`Stopped::Closed`],
/// logged).
/// `poller` is the one whose [`Wake`] the app and the role were given.
pub fn run<D: Driven>(
    clock: DriverClock,
    mut role: D,
    sockets: Sockets,
    commands: flume::Receiver<D::Command>,
    journal: Option<Journal<FactOf<D>>>,
    poller: Poller,
) -> Stopped
where
    FactOf<D>: Clone,
{
    let mut io = match Io::new(poller, sockets, journal) {
        Ok(io) => io,
        Err(e) => {
            tracing::error!(error = %e, "cannot poll the driver's sockets");
            let stopped = Stopped::Closed;
            role.on_stopped(&stopped);
            return stopped;
        }
    };
    let mut buf = vec![0u8; MAX_TRANSMIT_LEN];
    let mut read_buf = vec![0u8; READ_CHUNK];
    let mut messages: Vec<Vec<u8>> = Vec::new();
    let stopped = 'run: loop {
        let next = match drain(&clock, &mut role, &mut io, &mut buf) {
            Ok(next) => next,
            Err(why) => break why,
        };
        let mut deadline = clock.deadline(next);
        if let Some(app) = role.app_deadline() {
            deadline = deadline.min(clock.deadline(Some(app)));
        }
        if let Some(at) = io.deadline() {
            deadline = deadline.min(at);
        }
        let timeout = if io.has_work() {
            Duration::ZERO
        } else {
            deadline.saturating_duration_since(StdInstant::now())
        };
        io.poll_once(Some(timeout));

        // The journal's answers that came meanwhile, oldest first: what
        // each batch held back leaves.
        while let Some(stored) = io.answered() {
            if let Err(why) = release(clock.now(), stored, &mut role, &mut io) {
                break 'run why;
            }
        }

        // The UDP socket: each batch in, then what it caused.
        for _ in 0..MAX_UDP_RECEIVES_PER_ROUND {
            if !io.udp_readable {
                break;
            }
            let Some(socket) = io.udp.as_mut() else {
                break;
            };
            match socket.try_recv() {
                Ok(slots) => {
                    let (machine, app_io) = role.parts();
                    socket.deliver(slots, clock.now(), machine, app_io);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => io.udp_readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => tracing::debug!(error = %e, "udp receive failed"),
            }
            if let Err(why) = drain(&clock, &mut role, &mut io, &mut buf) {
                break 'run why;
            }
        }

        // New streams.
        let now = StdInstant::now();
        if io.accept_paused.is_some_and(|until| until <= now) {
            io.accept_paused = None;
        }
        for _ in 0..MAX_ACCEPTS_PER_ROUND {
            let Some((conn, remote)) = io.accept() else {
                break;
            };
            let (machine, app_io) = role.parts();
            machine.handle_input(
                clock.now(),
                Input::ConnectionOpened { conn, remote },
                app_io,
            );
            if let Err(why) = drain(&clock, &mut role, &mut io, &mut buf) {
                break 'run why;
            }
        }

        // Streams with bytes in, one message at a time.
        let readable: Vec<ConnectionId> = io.readable.iter().copied().collect();
        for conn in readable {
            messages.clear();
            let Some(stream) = io.streams.get_mut(&conn) else {
                io.readable.remove(&conn);
                continue;
            };
            let read = stream.read(&mut read_buf, &mut messages);
            let is_upstream = io.upstream == Some(conn);
            let relay = io.relay_of.get(&conn).copied();
            for message in &mut messages {
                let input = if let Some(relay) = relay {
                    // A packet from the relay over TCP: a datagram from it.
                    Input::Datagram {
                        from: relay,
                        local: None,
                        bytes: message,
                    }
                } else if is_upstream {
                    Input::UpstreamMessage(message)
                } else if conn.0 < FIRST_UPSTREAM_STREAM {
                    Input::ConnectionMessage {
                        conn,
                        bytes: message,
                    }
                } else {
                    // An old outgoing stream: nobody listens any more.
                    break;
                };
                let (machine, app_io) = role.parts();
                machine.handle_input(clock.now(), input, app_io);
                if let Err(why) = drain(&clock, &mut role, &mut io, &mut buf) {
                    break 'run why;
                }
                if !io.streams.contains_key(&conn) {
                    // Closed by what the message caused: the rest is moot.
                    break;
                }
            }
            match read {
                Ok(ReadRound::More) => {}
                Ok(ReadRound::Drained) => {
                    io.readable.remove(&conn);
                }
                Err(why) => io.end(conn, why),
            }
        }

        // App commands.
        for _ in 0..MAX_COMMANDS_PER_ROUND {
            let command = match commands.try_recv() {
                Ok(command) => command,
                Err(flume::TryRecvError::Empty) => {
                    io.commands_waiting = false;
                    break;
                }
                Err(flume::TryRecvError::Disconnected) => break 'run Stopped::Closed,
            };
            io.commands_waiting = true;
            if let Flow::Stop { grace } = role.on_command(clock.now(), command) {
                if let Err(why) = drain(&clock, &mut role, &mut io, &mut buf) {
                    break 'run why;
                }
                if let Err(why) = release_all(&clock, &mut role, &mut io) {
                    break 'run why;
                }
                io.close_upstream(grace);
                break 'run Stopped::Shutdown;
            }
            if let Err(why) = drain(&clock, &mut role, &mut io, &mut buf) {
                break 'run why;
            }
        }

        // Deadlines: streams' writes and connects, then the machine's.
        io.expire(StdInstant::now());
        let now = clock.now();
        let (machine, _) = role.parts();
        if machine.poll_timeout().is_some_and(|at| at <= now) {
            machine.handle_timeout(now);
        }
    };
    role.on_stopped(&stopped);
    stopped
}

/// Polls the machine until [`Output::Timeout`], acting on each output;
/// returns the machine's next timeout, or why the loop must stop.
fn drain<D: Driven>(
    clock: &DriverClock,
    role: &mut D,
    io: &mut Io<FactOf<D>>,
    buf: &mut [u8],
) -> Result<Option<Instant>, Stopped>
where
    FactOf<D>: Clone,
{
    let mut facts: Vec<FactOf<D>> = Vec::new();
    let mut now = clock.now();
    let mut app_rounds = 0;
    loop {
        let (machine, app_io) = role.parts();
        // Streams found lost (while writing, or by the poller) first.
        while let Some(lost) = io.lost.pop_front() {
            machine.handle_input(now, lost, app_io);
        }
        match machine.poll_output(now, buf, app_io) {
            Output::Store(fact) => facts.push(fact),
            Output::Close(conn) => {
                if io.held.is_empty() {
                    io.kill(conn);
                } else {
                    io.held.hold_close(conn);
                }
            }
            Output::Event(event) => {
                tracing::debug!(?event, "event");
                role.on_event(now, event);
            }
            Output::Transmit(t) => {
                commit(io, role, &mut facts)?;
                let Some(bytes) = buf.get(..t.len) else {
                    continue;
                };
                if io.held.is_empty() {
                    send(role, io, t.destination, t.local, bytes);
                } else {
                    io.held.hold_transmit(t.destination, t.local, bytes);
                }
            }
            Output::Timeout(next) => {
                commit(io, role, &mut facts)?;
                io.flush_udp();
                io.flush_streams();
                if !io.lost.is_empty() {
                    continue;
                }
                now = clock.now();
                if let Some(next) = quiet(role, now, &mut app_rounds, next) {
                    return Ok(next);
                }
            }
        }
        if io.held.full() {
            // The bound: wait for the oldest batch before going on.
            let stored = io.wait_answer();
            release(clock.now(), stored, role, io)?;
        }
    }
}

/// Sends one transmit: to the UDP socket's batch, or to a stream.
fn send<D: Driven>(
    role: &mut D,
    io: &mut Io<FactOf<D>>,
    destination: Destination,
    local: Option<IpAddr>,
    bytes: &[u8],
) {
    match destination {
        Destination::Udp(to) => io.send_udp(to, local, bytes),
        destination => {
            let choice = role.parts().0.upstream_choice();
            io.send(destination, bytes, choice);
        }
    }
}

/// Hands `facts` (if any) to the journal without waiting: what follows is
/// held back until they are stored. Without a journal they count as stored
/// at once.
fn commit<D: Driven>(
    io: &mut Io<FactOf<D>>,
    role: &mut D,
    facts: &mut Vec<FactOf<D>>,
) -> Result<(), Stopped>
where
    FactOf<D>: Clone,
{
    if facts.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(facts);
    let (Some(journal), Some(waiter)) = (&io.journal, &io.waiter) else {
        return settle(role, batch, Ok(()));
    };
    match journal.submit(batch.clone()) {
        Ok(stored) => {
            if waiter.waits.send(stored).is_err() {
                return settle(role, batch, Err(JOURNAL_GONE.to_owned()));
            }
            io.held.hold_batch(batch, ());
            Ok(())
        }
        Err(e) => settle(role, batch, Err(e)),
    }
}

/// The oldest batch's answer came (`stored`): on success the app hears its
/// facts and what was held behind it leaves, in order, up to the next
/// batch; on failure the loop stops with none of it sent.
fn release<D: Driven>(
    _now: Instant,
    stored: Result<(), String>,
    role: &mut D,
    io: &mut Io<FactOf<D>>,
) -> Result<(), Stopped>
where
    FactOf<D>: Clone,
{
    let Some(Held::Batch(batch, ())) = io.held.pop() else {
        return Ok(());
    };
    settle(role, batch, stored)?;
    while io.held.head().is_none() {
        match io.held.pop() {
            Some(Held::Transmit {
                destination,
                local,
                bytes,
            }) => send(role, io, destination, local, &bytes),
            Some(Held::Close(conn)) => io.kill(conn),
            Some(Held::Batch(..)) | None => break,
        }
    }
    io.flush_udp();
    io.flush_streams();
    Ok(())
}

/// Waits until every held batch is stored and what follows each has left
/// (a loop that stops).
fn release_all<D: Driven>(
    clock: &DriverClock,
    role: &mut D,
    io: &mut Io<FactOf<D>>,
) -> Result<(), Stopped>
where
    FactOf<D>: Clone,
{
    while !io.held.is_empty() {
        let stored = io.wait_answer();
        release(clock.now(), stored, role, io)?;
    }
    Ok(())
}

/// The thread that waits on the journal's answers in the order the loop
/// handed its batches over, and passes each on with a wake of the poller
/// (a blocking loop sleeps in the poller, not on the answer).
struct Waiter {
    waits: flume::Sender<Stored>,
    answers: flume::Receiver<Result<(), String>>,
}

impl Waiter {
    fn start(waker: Arc<mio::Waker>) -> io::Result<Waiter> {
        let (waits, rx) = flume::unbounded::<Stored>();
        let (tx, answers) = flume::unbounded();
        std::thread::Builder::new()
            .name("tryst-journal-wait".into())
            .spawn(move || {
                // Ends once the loop drops its sender (or its receiver).
                while let Ok(stored) = rx.recv() {
                    let answer = stored
                        .recv()
                        .unwrap_or_else(|_| Err(JOURNAL_GONE.to_owned()));
                    if tx.send(answer).is_err() {
                        return;
                    }
                    // A failed wake leaves the loop to its timeout.
                    let _ = waker.wake();
                }
            })?;
        Ok(Waiter { waits, answers })
    }
}

/// The loop's poller, sockets, streams and journal, with the readiness
/// the poller reported and the loop has not used up yet (the poller is
/// edge-triggered: it says so once).
struct Io<F> {
    poll: Poll,
    events: Events,
    /// Held so the waker stays registered while the loop runs.
    _waker: Arc<mio::Waker>,
    udp: Option<BatchSocket>,
    udp_readable: bool,
    udp_writable: bool,
    listener: Option<mio::net::TcpListener>,
    listener_ready: bool,
    accept_paused: Option<StdInstant>,
    accept_errors: AcceptErrors,
    accepted_overflow: Overflow,
    accepted_framing: Framing,
    next_accepted: u64,
    /// The streams to relays over TCP ([`Destination::RelayStream`]), by
    /// relay, and back.
    relay_streams: BTreeMap<SocketAddr, ConnectionId>,
    relay_of: BTreeMap<ConnectionId, SocketAddr>,
    upstream_addr: Option<SocketAddr>,
    failover_upstreams: Vec<SocketAddr>,
    /// The index of the address the live upstream stream goes to.
    upstream_choice: usize,
    upstream_local: Option<IpAddr>,
    upstream_overflow: Overflow,
    /// The driver's number of the live outgoing stream, if any.
    upstream: Option<ConnectionId>,
    next_upstream: u64,
    streams: BTreeMap<ConnectionId, Stream>,
    tokens: BTreeMap<Token, ConnectionId>,
    next_token: usize,
    /// Streams the poller said are readable and not yet read dry.
    readable: BTreeSet<ConnectionId>,
    /// Streams with messages queued since their last write.
    dirty: BTreeSet<ConnectionId>,
    /// Streams with a write or a connect under a deadline.
    timed: BTreeSet<ConnectionId>,
    /// Ends to tell the machine, oldest first (at most one per stream).
    lost: VecDeque<Input<'static>>,
    /// The last command round stopped at its bound.
    commands_waiting: bool,
    journal: Option<Journal<F>>,
    /// Where the journal's answers come from (with a journal only).
    waiter: Option<Waiter>,
    /// Transmits and closes held back behind batches not yet stored.
    held: HeldBack<F, ()>,
}

impl<F> Io<F> {
    fn new(poller: Poller, sockets: Sockets, journal: Option<Journal<F>>) -> io::Result<Io<F>> {
        let Poller { poll, waker } = poller;
        let waiter = match journal {
            Some(_) => Some(Waiter::start(Arc::clone(&waker))?),
            None => None,
        };
        let registry = poll.registry();
        if let Some(udp) = &sockets.udp {
            let fd = std::os::fd::AsRawFd::as_raw_fd(udp.socket());
            registry.register(
                &mut mio::unix::SourceFd(&fd),
                UDP,
                Interest::READABLE | Interest::WRITABLE,
            )?;
        }
        let listener = match sockets.listener {
            Some(listener) => {
                listener.set_nonblocking(true)?;
                let mut listener = mio::net::TcpListener::from_std(listener);
                registry.register(&mut listener, LISTENER, Interest::READABLE)?;
                Some(listener)
            }
            None => None,
        };
        Ok(Io {
            poll,
            events: Events::with_capacity(MAX_EVENTS),
            _waker: waker,
            udp: sockets.udp,
            udp_readable: true,
            udp_writable: true,
            listener,
            listener_ready: true,
            accept_paused: None,
            accept_errors: AcceptErrors::default(),
            accepted_overflow: sockets.accepted_overflow,
            accepted_framing: sockets.accepted_framing,
            next_accepted: 1,
            relay_streams: BTreeMap::new(),
            relay_of: BTreeMap::new(),
            upstream_addr: sockets.upstream,
            failover_upstreams: sockets.failover_upstreams,
            upstream_choice: 0,
            upstream_local: sockets.upstream_local,
            upstream_overflow: sockets.upstream_overflow,
            upstream: None,
            next_upstream: FIRST_UPSTREAM_STREAM,
            streams: BTreeMap::new(),
            tokens: BTreeMap::new(),
            next_token: 0,
            readable: BTreeSet::new(),
            dirty: BTreeSet::new(),
            timed: BTreeSet::new(),
            lost: VecDeque::new(),
            commands_waiting: false,
            journal,
            waiter,
            held: HeldBack::default(),
        })
    }

    /// The journal's next answer, if it came (oldest batch first).
    fn answered(&mut self) -> Option<Result<(), String>> {
        // No batch at the head: nothing waits for an answer.
        self.held.head()?;
        self.waiter.as_ref()?.answers.try_recv().ok()
    }

    /// Blocks until the journal answers for the oldest batch held.
    fn wait_answer(&mut self) -> Result<(), String> {
        match &self.waiter {
            Some(waiter) => waiter
                .answers
                .recv()
                .unwrap_or_else(|_| Err(JOURNAL_GONE.to_owned())),
            None => Ok(()),
        }
    }

    /// Whether readiness is left over from the last round (so the next
    /// poll must not sleep).
    fn has_work(&self) -> bool {
        self.udp_readable && self.udp.is_some()
            || self.listener_ready && self.listener.is_some() && self.accept_paused.is_none()
            || !self.readable.is_empty()
            || !self.lost.is_empty()
            || self.commands_waiting
            || self
                .waiter
                .as_ref()
                .is_some_and(|w| !w.answers.is_empty() && !self.held.is_empty())
    }

    /// The earliest of the loop's own deadlines (streams' writes and
    /// connects, the end of an accept pause).
    fn deadline(&self) -> Option<StdInstant> {
        let streams = self
            .timed
            .iter()
            .filter_map(|conn| self.streams.get(conn)?.deadline())
            .min();
        match (streams, self.accept_paused) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Waits at most `timeout` for readiness and notes what the poller says.
    fn poll_once(&mut self, timeout: Option<Duration>) {
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "poll failed");
            }
            return;
        }
        let mut ended = Vec::new();
        for event in self.events.iter() {
            match event.token() {
                WAKE => {}
                UDP => {
                    self.udp_readable |= event.is_readable() || event.is_error();
                    self.udp_writable |= event.is_writable() || event.is_error();
                }
                LISTENER => self.listener_ready = true,
                token => {
                    let Some(&conn) = self.tokens.get(&token) else {
                        continue;
                    };
                    let Some(stream) = self.streams.get_mut(&conn) else {
                        continue;
                    };
                    if event.is_writable() || event.is_write_closed() || event.is_error() {
                        if let Err(why) = stream.on_writable() {
                            ended.push((conn, why));
                            continue;
                        }
                        if stream.has_queued() {
                            self.dirty.insert(conn);
                        }
                    }
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        stream.readable = true;
                    }
                    if stream.readable {
                        self.readable.insert(conn);
                    }
                }
            }
        }
        for (conn, why) in ended {
            self.end(conn, why);
        }
        self.flush_streams();
    }

    /// Accepts one stream, if one waits and accepting is not paused.
    fn accept(&mut self) -> Option<(ConnectionId, SocketAddr)> {
        if !self.listener_ready || self.accept_paused.is_some() {
            return None;
        }
        let listener = self.listener.as_ref()?;
        let (mut socket, remote) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.listener_ready = false;
                return None;
            }
            Err(e) => {
                // Out of descriptors (or another failure): the error is
                // logged and accepting pauses; the listener stays ready,
                // so the loop tries again once the pause ends.
                self.accept_paused = Some(StdInstant::now() + self.accept_errors.failed(&e));
                return None;
            }
        };
        let token = self.next_token()?;
        if let Err(e) = self.poll.registry().register(
            &mut socket,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::debug!(error = %e, "cannot poll an accepted stream: dropping it");
            return None;
        }
        let conn = ConnectionId(self.next_accepted);
        self.next_accepted += 1;
        self.tokens.insert(token, conn);
        self.streams.insert(
            conn,
            Stream::accepted(socket, token, self.accepted_overflow, self.accepted_framing),
        );
        Some((conn, remote))
    }

    /// A poller token no live stream has.
    fn next_token(&mut self) -> Option<Token> {
        for _ in 0..=self.tokens.len() {
            let token = Token(self.next_token);
            self.next_token = (self.next_token + 1) % STREAM_TOKENS;
            if !self.tokens.contains_key(&token) {
                return Some(token);
            }
        }
        None
    }

    /// Opens the upstream stream (connecting in the background); the
    /// machine hears at once if it cannot even start.
    fn open_upstream(&mut self, choice: usize) -> Option<ConnectionId> {
        let addr = match choice.checked_sub(1) {
            None => self.upstream_addr?,
            Some(i) => *self.failover_upstreams.get(i)?,
        };
        self.upstream_choice = choice;
        let conn = ConnectionId(self.next_upstream);
        self.next_upstream += 1;
        let opened = self
            .next_token()
            .ok_or_else(|| io::Error::other("no poller token"));
        let stream = opened.and_then(|token| {
            let mut stream = Stream::connect(
                addr,
                self.upstream_local,
                token,
                self.upstream_overflow,
                Framing::Messages,
                StdInstant::now(),
            )?;
            self.poll.registry().register(
                &mut stream.socket,
                token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match stream {
            Ok(stream) => {
                self.tokens.insert(stream.token, conn);
                self.streams.insert(conn, stream);
                self.timed.insert(conn);
                self.upstream = Some(conn);
                Some(conn)
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "upstream stream not opened");
                self.lost.push_back(Input::UpstreamClosed);
                None
            }
        }
    }

    /// Queues one message on a stream, opening the upstream one if needed
    /// (and waiting for room on an internal link); a lost stream is noted
    /// for the machine.
    /// `choice` is the upstream address the machine names: a live upstream
    /// stream to another is dropped first (nobody waits for its end).
    fn send(&mut self, destination: Destination, bytes: &[u8], choice: usize) {
        if let (Destination::Upstream, Some(old)) = (destination, self.upstream) {
            if self.upstream_choice != choice {
                self.kill(old);
            }
        }
        let conn = match destination {
            Destination::Udp(_) => return,
            Destination::RelayStream(relay) => match self.relay_stream(relay) {
                Some(conn) => conn,
                None => return,
            },
            Destination::Connection(conn) => conn,
            Destination::Upstream => match self.upstream {
                Some(conn) => conn,
                None => match self.open_upstream(choice) {
                    Some(conn) => conn,
                    None => return,
                },
            },
        };
        let Some(stream) = self.streams.get_mut(&conn) else {
            return;
        };
        let pushed = match stream.push(bytes) {
            Err(Full::Now) => match stream.overflow {
                Overflow::Drop => {
                    tracing::trace!(?conn, "relay stream queue full: frame dropped");
                    return;
                }
                Overflow::Close => {
                    tracing::debug!(?conn, "stream too slow: closing it");
                    Err(Ended::Lost)
                }
                Overflow::Wait(limit) => {
                    tracing::debug!(bytes = bytes.len(), "link queue full: waiting for room");
                    if self.wait_for_room(conn, bytes.len(), limit) {
                        self.streams
                            .get_mut(&conn)
                            .map_or(Err(Ended::Lost), |s| s.push(bytes).map_err(|_| Ended::Lost))
                    } else if self.streams.contains_key(&conn) {
                        tracing::debug!(?conn, waited = ?limit, "link queue still full");
                        Err(Ended::TimedOut)
                    } else {
                        // It ended while the loop waited (and was reported).
                        return;
                    }
                }
            },
            Err(Full::Never) => Err(Ended::Lost),
            Ok(()) => Ok(()),
        };
        match pushed {
            Ok(()) => {
                self.dirty.insert(conn);
                if self
                    .streams
                    .get(&conn)
                    .is_some_and(|s| s.queued_bytes() >= crate::drive::WRITE_BATCH_BYTES)
                {
                    self.flush_stream(conn);
                }
            }
            Err(why) => self.end(conn, why),
        }
    }

    /// The live stream to `relay`, connecting one (in the background) if
    /// there is none; `None` if it cannot even start.
    fn relay_stream(&mut self, relay: SocketAddr) -> Option<ConnectionId> {
        if let Some(&conn) = self.relay_streams.get(&relay) {
            return Some(conn);
        }
        let token = self.next_token()?;
        let conn = ConnectionId(self.next_upstream);
        self.next_upstream += 1;
        let stream = Stream::connect(
            relay,
            None,
            token,
            Overflow::Drop,
            Framing::Relay,
            StdInstant::now(),
        )
        .and_then(|mut stream| {
            self.poll.registry().register(
                &mut stream.socket,
                token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        });
        match stream {
            Ok(stream) => {
                tracing::debug!(%relay, "connecting to the relay over tcp");
                self.tokens.insert(stream.token, conn);
                self.streams.insert(conn, stream);
                self.timed.insert(conn);
                self.relay_streams.insert(relay, conn);
                self.relay_of.insert(conn, relay);
                Some(conn)
            }
            Err(e) => {
                tracing::debug!(%relay, error = %e, "relay stream not opened");
                None
            }
        }
    }

    /// Blocks the loop until stream `conn` has room for `len` bytes, at
    /// most `limit`; whether it has. Other readiness the poller reports
    /// meanwhile is kept for later.
    fn wait_for_room(&mut self, conn: ConnectionId, len: usize, limit: Duration) -> bool {
        let until = StdInstant::now() + limit;
        loop {
            self.flush_stream(conn);
            let Some(stream) = self.streams.get(&conn) else {
                return false;
            };
            if stream.has_room(len) {
                return true;
            }
            let now = StdInstant::now();
            if now >= until {
                return false;
            }
            let wait = stream.deadline().map_or(until, |at| at.min(until));
            self.poll_once(Some(wait.saturating_duration_since(now)));
            self.expire(StdInstant::now());
        }
    }

    /// Sends one datagram (from local address `local`, if set), through
    /// the GSO batch; waits for room in the socket's buffer at most
    /// [`UDP_SEND_WAIT`].
    fn send_udp(&mut self, to: SocketAddr, local: Option<IpAddr>, bytes: &[u8]) {
        let until = StdInstant::now() + UDP_SEND_WAIT;
        loop {
            let Some(socket) = self.udp.as_mut() else {
                return;
            };
            match socket.try_queue(to, local, bytes) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.udp_writable = false;
                    if !self.wait_udp_writable(until) {
                        tracing::debug!(%to, "udp send buffer full: datagram dropped");
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(%to, error = %e, "datagram not sent");
                    return;
                }
                Ok(()) => return,
            }
        }
    }

    /// Sends the pending GSO batch, waiting for room at most
    /// [`UDP_SEND_WAIT`].
    fn flush_udp(&mut self) {
        let until = StdInstant::now() + UDP_SEND_WAIT;
        loop {
            let Some(socket) = self.udp.as_mut() else {
                return;
            };
            match socket.try_flush() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.udp_writable = false;
                    if !self.wait_udp_writable(until) {
                        tracing::debug!("udp send buffer full: batch kept for later");
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(error = %e, "datagrams not sent");
                    return;
                }
                Ok(()) => return,
            }
        }
    }

    /// Waits until the UDP socket is writable or `until`; whether it is.
    fn wait_udp_writable(&mut self, until: StdInstant) -> bool {
        while !self.udp_writable {
            let now = StdInstant::now();
            if now >= until {
                return false;
            }
            self.poll_once(Some(until - now));
        }
        true
    }

    /// Writes what every stream with news has queued, as far as each takes it.
    fn flush_streams(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for conn in dirty {
            self.flush_stream(conn);
        }
    }

    /// Writes what stream `conn` has queued, as far as it takes it.
    fn flush_stream(&mut self, conn: ConnectionId) {
        let Some(stream) = self.streams.get_mut(&conn) else {
            return;
        };
        match stream.flush(StdInstant::now()) {
            Ok(()) => {
                if stream.deadline().is_some() {
                    self.timed.insert(conn);
                } else {
                    self.timed.remove(&conn);
                }
            }
            Err(why) => self.end(conn, why),
        }
    }

    /// Closes the streams whose write or connect is overdue.
    fn expire(&mut self, now: StdInstant) {
        let overdue: Vec<ConnectionId> = self
            .timed
            .iter()
            .copied()
            .filter(|conn| self.streams.get(conn).is_none_or(|s| s.overdue(now)))
            .collect();
        for conn in overdue {
            self.timed.remove(&conn);
            if self.streams.contains_key(&conn) {
                tracing::debug!(?conn, "stream write or connect timed out: closing it");
                self.end(conn, Ended::TimedOut);
            }
        }
    }

    /// A stream ended on its own (or the loop gave up on it): drops it and
    /// notes its end for the machine (an old upstream stream's is ignored).
    fn end(&mut self, conn: ConnectionId, why: Ended) {
        let Some(stream) = self.streams.get(&conn) else {
            return;
        };
        let lost = closed_input(conn, self.upstream);
        if matches!(stream.overflow, Overflow::Wait(_)) {
            // Lost: gone or closed by its peer; TimedOut: its peer stopped
            // reading (the queue stayed full, or a write stalled).
            tracing::warn!(?conn, ?why, "internal link closed");
        } else {
            tracing::debug!(?conn, ?why, "stream ended");
        }
        self.kill(conn);
        if let Some(lost) = lost {
            self.lost.push_back(lost);
        }
    }

    /// Drops a stream at once, discarding what is queued.
    fn kill(&mut self, conn: ConnectionId) {
        if let Some(mut stream) = self.streams.remove(&conn) {
            let _ = self.poll.registry().deregister(&mut stream.socket);
            self.tokens.remove(&stream.token);
        }
        self.readable.remove(&conn);
        self.dirty.remove(&conn);
        self.timed.remove(&conn);
        if self.upstream == Some(conn) {
            self.upstream = None;
        }
        if let Some(relay) = self.relay_of.remove(&conn) {
            self.relay_streams.remove(&relay);
        }
    }

    /// Writes what the upstream stream has queued, for at most `grace`,
    /// then closes it (a stopping terminal's last message must leave).
    fn close_upstream(&mut self, grace: Duration) {
        let Some(conn) = self.upstream else {
            return;
        };
        let until = StdInstant::now() + grace;
        loop {
            self.flush_stream(conn);
            let Some(stream) = self.streams.get(&conn) else {
                return;
            };
            let now = StdInstant::now();
            if !stream.has_queued() || now >= until {
                break;
            }
            self.poll_once(Some(until - now));
        }
        if let Some(stream) = self.streams.get(&conn) {
            let _ = stream.socket.shutdown(std::net::Shutdown::Write);
        }
        self.kill(conn);
    }
}
