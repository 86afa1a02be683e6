//! One message stream of the blocking loop: a non-blocking TCP socket on
//! the loop's poller, read into the core's buffer of its [`Framing`]
//! ([`Framer`], the framing the tokio driver's streams use), written from a queue bounded in bytes by
//! its [`Overflow`] budget, in batches of up to [`WRITE_BATCH_BYTES`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use mio::net::TcpStream;
use mio::Token;

use crate::drive::{Framer, Framing, Overflow, CONNECT_TIMEOUT, WRITE_BATCH_BYTES, WRITE_TIMEOUT};

/// Bytes one read takes from a stream.
pub(super) const READ_CHUNK: usize = 16 * 1024;
/// Most reads from one stream per readiness round, so one busy peer
/// cannot starve the others (the loop comes straight back to it).
pub(super) const MAX_READS_PER_ROUND: usize = 16;

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// The peer closed it, it failed, or it could not connect.
    Lost,
    /// It sent bytes that are not tryst messages.
    NotTryst,
    /// A batch could not be written within [`WRITE_TIMEOUT`], or the
    /// connect took longer than [`CONNECT_TIMEOUT`].
    TimedOut,
}

/// A message did not fit the stream's byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    /// No room now; room comes as the queue is written.
    Now,
    /// Longer than the whole budget: never.
    Never,
}

/// What one read round found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadRound {
    /// Everything waiting was read.
    Drained,
    /// The round's reads ran out with more perhaps waiting.
    More,
}

/// One stream and its queues.
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) socket: TcpStream,
    pub(super) token: Token,
    pub(super) overflow: Overflow,
    frames: Framer,
    queue: VecDeque<Vec<u8>>,
    /// Bytes queued and not yet written (the batch in flight included).
    queued: usize,
    batch: Vec<u8>,
    written: usize,
    /// When the batch in flight must be written by.
    batch_deadline: Option<Instant>,
    /// When a connect in progress must be done by.
    connecting: Option<Instant>,
    /// Readiness seen and not yet used up (the poller is edge-triggered).
    pub(super) readable: bool,
    pub(super) writable: bool,
}

impl Stream {
    /// A connected (accepted) stream.
    pub(super) fn accepted(
        socket: TcpStream,
        token: Token,
        overflow: Overflow,
        framing: Framing,
    ) -> Stream {
        let _ = socket.set_nodelay(true);
        Stream::new(socket, token, overflow, framing, None)
    }

    fn new(
        socket: TcpStream,
        token: Token,
        overflow: Overflow,
        framing: Framing,
        connecting: Option<Instant>,
    ) -> Stream {
        Stream {
            socket,
            token,
            overflow,
            frames: Framer::new(framing),
            queue: VecDeque::new(),
            queued: 0,
            batch: Vec::new(),
            written: 0,
            batch_deadline: None,
            connecting,
            // Readiness comes from the poller (it reports what is ready at
            // registration); an accepted stream may try to write at once.
            readable: false,
            writable: connecting.is_none(),
        }
    }

    /// Starts connecting to `addr` without blocking, from `local` (any
    /// port) if given; done when the poller says it is writable.
    pub(super) fn connect(
        addr: SocketAddr,
        local: Option<IpAddr>,
        token: Token,
        overflow: Overflow,
        framing: Framing,
        now: Instant,
    ) -> io::Result<Stream> {
        let socket = match local {
            None => TcpStream::connect(addr)?,
            Some(ip) => {
                use socket2::{Domain, Protocol, Socket, Type};
                let socket =
                    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
                socket.set_nonblocking(true)?;
                socket.bind(&SocketAddr::new(ip, 0).into())?;
                match socket.connect(&addr.into()) {
                    Ok(()) => {}
                    Err(e) if in_progress(&e) => {}
                    Err(e) => return Err(e),
                }
                TcpStream::from_std(socket.into())
            }
        };
        Ok(Stream::new(
            socket,
            token,
            overflow,
            framing,
            Some(now + CONNECT_TIMEOUT),
        ))
    }

    /// Queues one message, within the byte budget.
    pub(super) fn push(&mut self, message: &[u8]) -> Result<(), Full> {
        let budget = self.overflow.budget();
        if message.len() > budget {
            return Err(Full::Never);
        }
        if self.queued.saturating_add(message.len()) > budget {
            return Err(Full::Now);
        }
        self.queued += message.len();
        self.queue.push_back(message.to_vec());
        Ok(())
    }

    /// Whether anything waits to be written.
    pub(super) fn has_queued(&self) -> bool {
        self.queued > 0
    }

    /// Bytes queued and not yet written.
    pub(super) fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Whether a message of `len` bytes fits now.
    pub(super) fn has_room(&self, len: usize) -> bool {
        self.queued.saturating_add(len) <= self.overflow.budget()
    }

    /// The socket became writable: finishes a connect in progress.
    pub(super) fn on_writable(&mut self) -> Result<(), Ended> {
        self.writable = true;
        if self.connecting.is_none() {
            return Ok(());
        }
        if let Ok(Some(_)) | Err(_) = self.socket.take_error() {
            return Err(Ended::Lost);
        }
        match self.socket.peer_addr() {
            Ok(_) => {
                self.connecting = None;
                self.readable = true;
                let _ = self.socket.set_nodelay(true);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected || in_progress(&e) => {
                self.writable = false;
                Ok(())
            }
            Err(_) => Err(Ended::Lost),
        }
    }

    /// Writes what is queued while the socket takes it.
    pub(super) fn flush(&mut self, now: Instant) -> Result<(), Ended> {
        while self.writable && self.connecting.is_none() {
            if self.written >= self.batch.len() {
                self.batch.clear();
                self.written = 0;
                while self.batch.len() < WRITE_BATCH_BYTES {
                    match self.queue.pop_front() {
                        Some(message) => self.batch.extend_from_slice(&message),
                        None => break,
                    }
                }
                if self.batch.is_empty() {
                    self.batch_deadline = None;
                    return Ok(());
                }
                self.batch_deadline = Some(now + WRITE_TIMEOUT);
            }
            let rest = self.batch.get(self.written..).unwrap_or_default();
            match self.socket.write(rest) {
                Ok(0) => return Err(Ended::Lost),
                Ok(n) => {
                    self.written += n;
                    if self.written >= self.batch.len() {
                        self.queued = self.queued.saturating_sub(self.batch.len());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(Ended::Lost),
            }
        }
        Ok(())
    }

    /// Reads whole messages into `messages` (at most
    /// [`MAX_READS_PER_ROUND`] reads).
    pub(super) fn read(
        &mut self,
        buf: &mut [u8],
        messages: &mut Vec<Vec<u8>>,
    ) -> Result<ReadRound, Ended> {
        if self.connecting.is_some() {
            return Ok(ReadRound::Drained);
        }
        for _ in 0..MAX_READS_PER_ROUND {
            let n = match self.socket.read(buf) {
                Ok(0) => return Err(Ended::Lost),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok(ReadRound::Drained);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(Ended::Lost),
            };
            let mut input = buf.get(..n).unwrap_or_default();
            while !input.is_empty() {
                match self.frames.push(&mut input) {
                    Ok(Some(message)) => messages.push(message.to_vec()),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "dropping a stream that is not tryst traffic");
                        return Err(Ended::NotTryst);
                    }
                }
            }
        }
        Ok(ReadRound::More)
    }

    /// When this stream must next be looked at: its connect's or its
    /// batch's deadline.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match (self.connecting, self.batch_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether its connect or its batch is past its deadline.
    pub(super) fn overdue(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|at| at <= now)
    }
}

/// Whether a connect error only says it is under way.
fn in_progress(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
        || e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error())
}
