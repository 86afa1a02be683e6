//! Message streams over TCP. Each stream has one task that reads whole
//! messages (reassembled with the core's buffer of the stream's
//! [`Framing`], [`Framer`]) for the machine's
//! task and writes what the machine sends from a queue bounded in bytes,
//! in batches (one `write_all` of every message queued, up to
//! [`WRITE_BATCH_BYTES`]). What a full queue does is the stream's
//! [`Overflow`] policy, chosen by the role: a terminal's stream at a server
//! is closed (a peer that does not read must never stall the machine's
//! loop), an internal link between the servers makes the loop wait for room
//! (backpressure), bounded by a timeout after which it is closed too. A
//! write that takes longer than [`WRITE_TIMEOUT`] closes the stream.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::AbortHandle;
use tryst_core::machine::ConnectionId;

pub use tryst_std::drive::{
    Framer, Framing, Overflow, CONNECT_TIMEOUT, LINK_BACKPRESSURE_TIMEOUT, LINK_QUEUE_BYTES,
    WRITE_BATCH_BYTES, WRITE_QUEUE_BYTES, WRITE_TIMEOUT,
};

/// What a stream task tells the machine's task.
#[derive(Debug)]
pub enum StreamInput {
    /// A stream was accepted (server side).
    Opened(ConnectionId, SocketAddr, StreamWriter),
    /// One whole message arrived.
    Message(ConnectionId, Vec<u8>),
    /// The stream ended (closed, reset, failed to connect, too slow, or not
    /// tryst traffic).
    Closed(ConnectionId),
}

/// The machine's side of a stream: a queue to its task, bounded in bytes
/// by a semaphore whose permits are the free bytes (the task gives them
/// back once a batch is written).
#[derive(Debug)]
pub struct StreamWriter {
    queue: mpsc::UnboundedSender<Vec<u8>>,
    room: Arc<Semaphore>,
    overflow: Overflow,
    task: AbortHandle,
}

/// A message could not be queued: the stream is gone or its peer too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamGone;

impl StreamWriter {
    /// Queues one message; on a full queue, closes (fails at once) or waits
    /// for room as the stream's [`Overflow`] policy says. A message longer
    /// than the whole budget is refused.
    pub async fn send(&self, message: Vec<u8>) -> Result<(), StreamGone> {
        let n = u32::try_from(message.len()).map_err(|_| StreamGone)?;
        let permit = match self.room.try_acquire_many(n) {
            Ok(permit) => permit,
            Err(_) => match self.overflow {
                Overflow::Close => return Err(StreamGone),
                Overflow::Drop => {
                    tracing::trace!(
                        bytes = message.len(),
                        "relay stream queue full: frame dropped"
                    );
                    return Ok(());
                }
                Overflow::Wait(limit) => {
                    tracing::debug!(bytes = message.len(), "link queue full: waiting for room");
                    match tokio::time::timeout(limit, self.room.acquire_many(n)).await {
                        Ok(Ok(permit)) => permit,
                        Ok(Err(_)) | Err(_) => return Err(StreamGone),
                    }
                }
            },
        };
        // The task gives the bytes back once they are written.
        permit.forget();
        self.queue.send(message).map_err(|_| StreamGone)
    }

    /// This stream's policy on a full queue.
    pub fn overflow(&self) -> Overflow {
        self.overflow
    }

    /// Closes the stream at once, dropping what is still queued.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Closes the stream after what is queued is written (helper C: a
    /// stopping terminal's last end notification must leave), waiting at
    /// most `limit` for that.
    pub async fn close(self, limit: Duration) {
        let StreamWriter { queue, task, .. } = self;
        drop(queue);
        let deadline = tokio::time::Instant::now() + limit;
        while !task.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A writer's queue and the receiving end its task drains.
fn queue(overflow: Overflow) -> (mpsc::UnboundedSender<Vec<u8>>, WriteQueue) {
    let (tx, rx) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(overflow.budget()));
    (tx, WriteQueue { rx, room })
}

/// The task's end of a writer's queue.
struct WriteQueue {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    room: Arc<Semaphore>,
}

/// Starts the task of a connected stream; dropping the returned writer
/// closes the stream once its queue is written.
fn start(
    conn: ConnectionId,
    socket: TcpStream,
    to: mpsc::Sender<StreamInput>,
    overflow: Overflow,
    framing: Framing,
) -> StreamWriter {
    let (queue, rx) = queue(overflow);
    let room = Arc::clone(&rx.room);
    let task = tokio::spawn(run_stream(conn, Ok(socket), rx, to, framing)).abort_handle();
    StreamWriter {
        queue,
        room,
        overflow,
        task,
    }
}

/// Reads and writes one stream until either side ends.
async fn run_stream(
    conn: ConnectionId,
    socket: std::io::Result<TcpStream>,
    queue: WriteQueue,
    to: mpsc::Sender<StreamInput>,
    framing: Framing,
) {
    let socket = match socket {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(?conn, error = %e, "stream not connected");
            let _ = to.send(StreamInput::Closed(conn)).await;
            return;
        }
    };
    let _ = socket.set_nodelay(true);
    let (read, write) = socket.into_split();
    tokio::select! {
        () = read_messages(conn, read, to.clone(), framing) => {
            let _ = to.send(StreamInput::Closed(conn)).await;
        }
        failed = write_messages(write, queue) => {
            // A failed write is a lost stream; a closed queue means the
            // machine's task dropped the stream and already forgot it.
            if failed {
                let _ = to.send(StreamInput::Closed(conn)).await;
            }
        }
    }
}

/// Writes queued messages in batches until the queue closes (`false`) or a
/// write fails or stalls (`true`); each batch's bytes go back to the
/// queue's budget once written.
async fn write_messages(mut write: OwnedWriteHalf, mut queue: WriteQueue) -> bool {
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH_BYTES);
    while let Some(first) = queue.rx.recv().await {
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH_BYTES {
            match queue.rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&batch)).await {
            Ok(Ok(())) => queue.room.add_permits(batch.len()),
            Ok(Err(_)) | Err(_) => return true,
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, write.shutdown()).await;
    false
}

/// Reads messages from `read` until it ends, sending each to `to`.
async fn read_messages(
    conn: ConnectionId,
    mut read: OwnedReadHalf,
    to: mpsc::Sender<StreamInput>,
    framing: Framing,
) {
    let mut frames = Framer::new(framing);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut input = &buf[..n];
        while !input.is_empty() {
            match frames.push(&mut input) {
                Ok(Some(message)) => {
                    if to
                        .send(StreamInput::Message(conn, message.to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(?conn, error = %e, "dropping a stream that is not tryst traffic");
                    return;
                }
            }
        }
    }
}

use tryst_std::descriptors::AcceptErrors;
pub use tryst_std::descriptors::{ACCEPT_ERROR_PAUSE, DESCRIPTOR_PAUSE, DESCRIPTOR_WARN_EVERY};

/// Accepts streams forever, numbering them from 1 and starting a task for
/// each, with `overflow` as its full-queue policy and `framing` as its
/// framing. Out of descriptors, it
/// says so at WARN (at most every [`DESCRIPTOR_WARN_EVERY`]) and pauses.
pub async fn accept_streams(
    listener: TcpListener,
    to: mpsc::Sender<StreamInput>,
    overflow: Overflow,
    framing: Framing,
) {
    let mut next = 1u64;
    let mut errors = AcceptErrors::default();
    loop {
        let (socket, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tokio::time::sleep(errors.failed(&e)).await;
                continue;
            }
        };
        let conn = ConnectionId(next);
        next += 1;
        let writer = start(conn, socket, to.clone(), overflow, framing);
        if to
            .send(StreamInput::Opened(conn, remote, writer))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Connects to `addr`, from `local` (any port) if given.
async fn connect(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = local else {
        return TcpStream::connect(addr).await;
    };
    let socket = match ip {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

/// Opens an outgoing stream (a machine's `Upstream`, or a stream to a
/// relay) in the background, from `local` if given, with `overflow` as its
/// full-queue policy and `framing` as its framing:
/// messages queue at once and go out once it is connected; a failed
/// connect comes back as [`StreamInput::Closed`].
pub fn connect_upstream(
    addr: SocketAddr,
    local: Option<IpAddr>,
    conn: ConnectionId,
    to: mpsc::Sender<StreamInput>,
    overflow: Overflow,
    framing: Framing,
) -> StreamWriter {
    let (queue, rx) = queue(overflow);
    let room = Arc::clone(&rx.room);
    let task = tokio::spawn(async move {
        let socket = match tokio::time::timeout(CONNECT_TIMEOUT, connect(addr, local)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        };
        run_stream(conn, socket, rx, to, framing).await;
    })
    .abort_handle();
    StreamWriter {
        queue,
        room,
        overflow,
        task,
    }
}

/// Raises the soft limit on open file descriptors (shared with the blocking
/// driver: `tryst_std::role`).
pub use tryst_std::role::raise_descriptor_limit;
