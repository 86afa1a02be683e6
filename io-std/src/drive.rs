//! What every driver loop shares, whatever runs it (the tokio driver of
//! `tryst-tokio`, the blocking one of this crate): the [`Driven`] role a
//! loop runs, why a loop stopped, the [`Journal`] that makes facts durable
//! before anything acknowledges them, the [`DriverClock`] that maps the
//! monotonic clock to the core's [`Instant`], and the [`Overflow`] policy of
//! a stream whose write queue is full.
//!
//! Nothing here waits on a runtime: the journal answers through a
//! `oneshot` channel that a blocking loop receives on and an async one
//! awaits.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tryst_core::machine::{ConnectionId, Destination, Input, Machine};
use tryst_core::time::Instant;

/// The fact type of a role's machine.
pub type FactOf<D> = <<D as Driven>::Machine as Machine>::Fact;
/// The event type of a role's machine.
pub type EventOf<D> = <<D as Driven>::Machine as Machine>::Event;
/// The payload side of a role's machine.
pub type IoOf<D> = <<D as Driven>::Machine as Machine>::Io;

/// What the loop does after an app command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// Send what is queued, close the upstream stream (waiting at most
    /// `grace` for its queue to be written) and stop.
    Stop {
        /// Longest to wait for the upstream stream's queue.
        grace: Duration,
    },
}

/// A role as a loop runs it: its machine, the app's side of its payloads,
/// and what the app does with events and commands. Implemented once per
/// role; both drivers run the same implementations.
pub trait Driven: Send + 'static {
    /// The core machine.
    type Machine: Machine;
    /// What the app asks of it.
    type Command: Send + 'static;
    /// The machine and the payload side it reads and writes, borrowed together.
    fn parts(&mut self) -> (&mut Self::Machine, &mut IoOf<Self>);
    /// An app command; the role calls the machine (the next poll picks up
    /// what that changed) and answers the command's reply channel.
    fn on_command(&mut self, now: Instant, command: Self::Command) -> Flow;
    /// An event of the machine.
    fn on_event(&mut self, now: Instant, event: EventOf<Self>);
    /// A durable fact, once the journal stored it.
    fn on_stored(&mut self, _fact: FactOf<Self>) {}
    /// App work once the machine is quiet (payload bookkeeping); whether it
    /// called the machine, so the loop polls again.
    fn after_drain(&mut self, _now: Instant) -> bool {
        false
    }
    /// When the app wants [`Self::after_drain`] again without any input.
    fn app_deadline(&self) -> Option<Instant> {
        None
    }
    /// The loop stopped (a [`Flow::Stop`] command, the command channel
    /// closed, or the journal failed).
    fn on_stopped(&mut self, _why: &Stopped) {}
}

/// Why a driver loop stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The app closed the command channel.
    Closed,
    /// A command asked the loop to stop.
    Shutdown,
    /// The journal failed: nothing it did not store was acknowledged.
    JournalFailed(String),
}

/// Where a journal says a batch is stored, or why it is not.
pub type Stored = oneshot::Receiver<Result<(), String>>;

/// [`Stored`] as an async loop awaits it (`IntoFuture` of the receiver).
pub type StoredFuture = oneshot::AsyncReceiver<Result<(), String>>;

/// One batch of durable facts and where to say they are stored (or why not).
pub type JournalBatch<F> = (Vec<F>, oneshot::Sender<Result<(), String>>);

/// Where durable facts go: a thread that stores each batch and answers
/// once it is on disk. An error (or a journal that went away) stops the
/// loop before anything that follows the batch is sent. A loop has at most
/// [`MAX_HELD_BATCHES`] batches in flight ([`HeldBack`]), so the queue
/// needs no bound of its own.
#[derive(Debug)]
pub struct Journal<F> {
    batches: std::sync::mpsc::Sender<JournalBatch<F>>,
}

impl<F> Clone for Journal<F> {
    fn clone(&self) -> Self {
        Journal {
            batches: self.batches.clone(),
        }
    }
}

/// The message of a journal that went away.
pub const JOURNAL_GONE: &str = "the store stopped";

impl<F> Journal<F> {
    /// A journal and the receiving end its thread stores batches from.
    pub fn channel() -> (Journal<F>, std::sync::mpsc::Receiver<JournalBatch<F>>) {
        let (batches, rx) = std::sync::mpsc::channel();
        (Journal { batches }, rx)
    }

    /// Hands `facts` to the journal; the answer comes on the returned
    /// receiver (received on by a blocking loop, awaited by an async one).
    pub fn submit(&self, facts: Vec<F>) -> Result<Stored, String> {
        let (done, stored) = oneshot::channel();
        self.batches
            .send((facts, done))
            .map_err(|_| JOURNAL_GONE.to_owned())?;
        Ok(stored)
    }

    /// Hands `facts` to the journal and blocks until they are stored.
    pub fn store_blocking(&self, facts: Vec<F>) -> Result<(), String> {
        self.submit(facts)?
            .recv()
            .map_err(|_| JOURNAL_GONE.to_owned())?
    }
}

/// Most batches a loop has handed to its journal and not yet heard back
/// about (group commit: the journal stores what queued up in one
/// transaction). At this bound the loop waits for the oldest one before it
/// reads anything else, so a slow disk slows the inputs down instead of
/// growing a queue.
pub const MAX_HELD_BATCHES: usize = 256;
/// Most bytes of transmits a loop holds back behind batches not yet
/// stored; at this bound it waits for the oldest batch, as at
/// [`MAX_HELD_BATCHES`].
pub const MAX_HELD_BYTES: usize = 16 << 20;

/// What a loop holds back until the batch of facts before it is durable.
#[derive(Debug)]
pub enum Held<F, R> {
    /// Facts handed to the journal, and where its answer comes (`R`: the
    /// [`Stored`] receiver, or its future for an async loop).
    Batch(Vec<F>, R),
    /// A transmit that followed a batch not yet stored.
    Transmit {
        /// Where it goes.
        destination: Destination,
        /// The local address a datagram leaves from.
        local: Option<IpAddr>,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// A close that followed a batch not yet stored (after the transmits
    /// before it, as the machine ordered them).
    Close(ConnectionId),
}

/// The loop's outputs held back behind durable facts, in the machine's
/// order: a batch is always at the head, and what follows it leaves only
/// once it is stored. So the loop goes on reading while the journal
/// writes, many drains' facts share one transaction, and still nothing is
/// acknowledged before it is durable.
#[derive(Debug)]
pub struct HeldBack<F, R> {
    items: VecDeque<Held<F, R>>,
    batches: usize,
    bytes: usize,
}

impl<F, R> Default for HeldBack<F, R> {
    fn default() -> Self {
        HeldBack {
            items: VecDeque::new(),
            batches: 0,
            bytes: 0,
        }
    }
}

impl<F, R> HeldBack<F, R> {
    /// Nothing is held: a transmit may leave at once.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// At a bound ([`MAX_HELD_BATCHES`], [`MAX_HELD_BYTES`]): the loop
    /// must wait for the oldest batch before it goes on.
    pub fn full(&self) -> bool {
        self.batches >= MAX_HELD_BATCHES || self.bytes >= MAX_HELD_BYTES
    }

    /// Batches handed to the journal and not yet answered.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// Holds a batch the journal is storing.
    pub fn hold_batch(&mut self, facts: Vec<F>, stored: R) {
        self.batches += 1;
        self.items.push_back(Held::Batch(facts, stored));
    }

    /// Holds a transmit behind the batches before it.
    pub fn hold_transmit(&mut self, destination: Destination, local: Option<IpAddr>, bytes: &[u8]) {
        self.bytes += bytes.len();
        self.items.push_back(Held::Transmit {
            destination,
            local,
            bytes: bytes.to_vec(),
        });
    }

    /// Holds a close behind the batches before it.
    pub fn hold_close(&mut self, conn: ConnectionId) {
        self.items.push_back(Held::Close(conn));
    }

    /// The oldest batch's answer, to wait on or look at; `None` when
    /// nothing is held.
    pub fn head(&mut self) -> Option<&mut R> {
        match self.items.front_mut() {
            Some(Held::Batch(_, stored)) => Some(stored),
            _ => None,
        }
    }

    /// Takes the oldest item (call once the head batch's answer came: then
    /// the transmits and closes up to the next batch, one by one).
    pub fn pop(&mut self) -> Option<Held<F, R>> {
        let item = self.items.pop_front()?;
        match &item {
            Held::Batch(..) => self.batches -= 1,
            Held::Transmit { bytes, .. } => self.bytes -= bytes.len(),
            Held::Close(_) => {}
        }
        Some(item)
    }
}

/// Each outgoing stream a driver opens gets its own number from here up,
/// so a late message or close from an old one is never taken for the new one.
pub const FIRST_UPSTREAM_STREAM: u64 = 1 << 63;

/// Most rounds of [`Driven::after_drain`] work one drain runs before the
/// loop looks at its sockets again (and comes straight back): app work that
/// keeps finding more can never starve the inputs.
pub const MAX_APP_ROUNDS: usize = 16;

/// The input that tells a machine stream `conn` ended, given the live
/// upstream stream's number; `None` for an old outgoing stream, whose end
/// nobody waits for.
pub fn closed_input(conn: ConnectionId, upstream: Option<ConnectionId>) -> Option<Input<'static>> {
    if conn.0 >= FIRST_UPSTREAM_STREAM {
        (upstream == Some(conn)).then_some(Input::UpstreamClosed)
    } else {
        Some(Input::ConnectionClosed(conn))
    }
}

/// The end of a drain, once the machine is quiet and its facts stored:
/// runs the app's [`Driven::after_drain`] work. `None`: poll the machine
/// again; `Some(next)`: the drain is over, wake at `next` (at once after
/// [`MAX_APP_ROUNDS`] rounds that kept finding work, so the inputs get
/// their turn).
pub fn quiet<D: Driven>(
    role: &mut D,
    now: Instant,
    rounds: &mut usize,
    next: Option<Instant>,
) -> Option<Option<Instant>> {
    if !role.after_drain(now) {
        return Some(next);
    }
    *rounds += 1;
    if *rounds < MAX_APP_ROUNDS {
        return None;
    }
    Some(Some(now))
}

/// The journal's answer for `batch`: the app hears each fact once it is
/// stored; a failure stops the loop before anything acknowledges them.
pub fn settle<D: Driven>(
    role: &mut D,
    batch: Vec<FactOf<D>>,
    stored: Result<(), String>,
) -> Result<(), Stopped> {
    if let Err(e) = stored {
        tracing::error!(error = %e, "durable facts not stored: stopping before acknowledging them");
        return Err(Stopped::JournalFailed(e));
    }
    for fact in batch {
        role.on_stored(fact);
    }
    Ok(())
}

/// Maps the monotonic clock to the core's microsecond [`Instant`] and back.
///
/// The default origin is the driver's start. A server whose durable facts
/// carry times ([`DriverClock::wall`]) counts from the Unix epoch instead,
/// so the times it stored before a restart still mean the same thing after.
#[derive(Debug, Clone, Copy)]
pub struct DriverClock {
    origin: std::time::Instant,
    /// The core time at `origin`, in microseconds.
    offset_micros: u64,
}

impl Default for DriverClock {
    fn default() -> Self {
        DriverClock {
            origin: std::time::Instant::now(),
            offset_micros: 0,
        }
    }
}

/// How far away "never" is: a loop that also wakes on every input.
pub const NEVER: Duration = Duration::from_secs(86_400);

impl DriverClock {
    /// A clock whose `Instant`s are microseconds since the Unix epoch (read
    /// once from the system clock, then advanced by the monotonic clock).
    pub fn wall() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        DriverClock {
            origin: std::time::Instant::now(),
            offset_micros: u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// The current time, for a `handle_*` call.
    pub fn now(&self) -> Instant {
        let micros = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        Instant::from_micros(self.offset_micros.saturating_add(micros))
    }

    /// When to wake for a machine's `poll_timeout`; [`NEVER`] from now for
    /// `None`.
    pub fn deadline(&self, at: Option<Instant>) -> std::time::Instant {
        let never = std::time::Instant::now() + NEVER;
        match at {
            Some(at) => {
                let after =
                    Duration::from_micros(at.as_micros().saturating_sub(self.offset_micros));
                self.origin
                    .checked_add(after)
                    .map_or(never, |d| d.min(never))
            }
            None => never,
        }
    }
}

/// Most bytes waiting to be written on a stream whose policy is
/// [`Overflow::Close`] (a terminal's stream at a server): far above what a
/// well-behaved terminal is ever sent at once (a few hundred bytes per
/// request), so only a peer that stopped reading reaches it.
pub const WRITE_QUEUE_BYTES: usize = 1 << 20;
/// Most bytes waiting to be written on an internal link
/// ([`Overflow::Wait`]): generous, so a burst the machine queues in one
/// drain (thousands of requests) never has to wait at all.
pub const LINK_QUEUE_BYTES: usize = 8 << 20;
/// Longest the loop waits for room on an internal link whose queue is full
/// before it closes the link (the peer stopped reading).
pub const LINK_BACKPRESSURE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes one write of a batch carries.
pub const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Longest one batch's write may block on a peer that does not read
/// before the stream is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest an outgoing stream's connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a stream whose write queue is full does with the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Close the stream and drop what is queued (a terminal's stream: it
    /// must not stall the loop); the queue holds [`WRITE_QUEUE_BYTES`].
    #[default]
    Close,
    /// Make the sender wait for room, at most this long, then close it (an
    /// internal link: nothing may be lost to a burst); the queue holds
    /// [`LINK_QUEUE_BYTES`].
    Wait(Duration),
    /// Drop the message and keep the stream (a relay stream: it carries
    /// datagrams, and the peers' transport resends what is lost); the
    /// queue holds [`WRITE_QUEUE_BYTES`].
    Drop,
}

impl Overflow {
    /// The internal links' policy: wait up to [`LINK_BACKPRESSURE_TIMEOUT`].
    pub const LINK: Overflow = Overflow::Wait(LINK_BACKPRESSURE_TIMEOUT);

    /// The queue's byte budget under this policy.
    pub fn budget(self) -> usize {
        match self {
            Overflow::Close | Overflow::Drop => WRITE_QUEUE_BYTES,
            Overflow::Wait(_) => LINK_QUEUE_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_answers_a_blocking_loop() {
        let (journal, batches) = Journal::<u32>::channel();
        let store = std::thread::spawn(move || {
            let (facts, done) = batches.recv().expect("a batch");
            let _ = done.send(if facts == [7] {
                Ok(())
            } else {
                Err("wrong".into())
            });
            let (_, done) = batches.recv().expect("a second batch");
            let _ = done.send(Err("disk full".into()));
        });
        assert_eq!(journal.store_blocking(vec![7]), Ok(()));
        assert_eq!(journal.store_blocking(vec![8]), Err("disk full".into()));
        store.join().expect("journal thread");
        assert_eq!(
            journal.store_blocking(vec![9]),
            Err(JOURNAL_GONE.to_owned())
        );
    }

    #[test]
    fn clock_deadlines_round_trip_and_never_overflow() {
        let clock = DriverClock::wall();
        let now = clock.now();
        let at = Instant::from_micros(now.as_micros() + 1_000_000);
        let deadline = clock.deadline(Some(at));
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(left <= Duration::from_secs(1) && left > Duration::from_millis(500));
        let far = clock.deadline(Some(Instant::from_micros(u64::MAX)));
        assert!(far <= std::time::Instant::now() + NEVER);
    }
}

/// How the bytes of a stream are cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// tryst messages, each carrying its length in its header
    /// ([`tryst_core::wire::FrameBuffer`]).
    #[default]
    Messages,
    /// Relay frames: a 2-byte length, then a peer packet
    /// ([`tryst_core::relay::framing`]).
    Relay,
}

/// Why a stream's bytes are not what its [`Framing`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// Not tryst messages.
    Message(tryst_core::wire::DecodeError),
    /// Not relay frames.
    Relay(tryst_core::relay::framing::RelayFrameError),
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FramingError::Message(e) => e.fmt(f),
            FramingError::Relay(e) => e.fmt(f),
        }
    }
}

/// The core's reassembly buffer of a stream's [`Framing`], shared by both
/// drivers' stream readers.
#[derive(Debug)]
pub enum Framer {
    /// tryst messages.
    Messages(Box<tryst_core::wire::FrameBuffer>),
    /// Relay frames.
    Relay(Box<tryst_core::relay::framing::RelayFrameBuffer>),
}

impl Framer {
    /// An empty buffer for `framing`.
    pub fn new(framing: Framing) -> Framer {
        match framing {
            Framing::Messages => Framer::Messages(Box::default()),
            Framing::Relay => Framer::Relay(Box::default()),
        }
    }

    /// Takes bytes from the front of `input` and returns the next whole
    /// message once it is complete (see the core's buffers).
    pub fn push(&mut self, input: &mut &[u8]) -> Result<Option<&[u8]>, FramingError> {
        match self {
            Framer::Messages(b) => b.push(input).map_err(FramingError::Message),
            Framer::Relay(b) => b.push(input).map_err(FramingError::Relay),
        }
    }
}
