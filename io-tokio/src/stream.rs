//! Message streams over TCP. Each stream has one task that reads whole
//! messages (reassembled with the core's [`FrameBuffer`]) for the machine's
//! task and writes what the machine sends from a bounded queue, so a peer
//! that reads slowly (or not at all) never stalls the machine's loop: when
//! its queue is full, or one write takes longer than [`WRITE_TIMEOUT`], the
//! stream is closed and the machine told.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tryst_core::machine::ConnectionId;
use tryst_core::wire::FrameBuffer;

/// Most messages waiting to be written on one stream; a stream whose peer
/// lets more pile up is closed.
pub const WRITE_QUEUE_MESSAGES: usize = 256;
/// Longest one message's write may block on a peer that does not read
/// before the stream is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest an outgoing stream's connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The machine's side of a stream: a bounded queue to its task.
#[derive(Debug)]
pub struct StreamWriter {
    queue: mpsc::Sender<Vec<u8>>,
    task: AbortHandle,
}

/// A message could not be queued: the stream is gone or its peer too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamGone;

impl StreamWriter {
    /// Queues one message without waiting.
    pub fn send(&self, message: Vec<u8>) -> Result<(), StreamGone> {
        self.queue.try_send(message).map_err(|_| StreamGone)
    }

    /// Closes the stream at once, dropping what is still queued.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Closes the stream after what is queued is written (helper C: a
    /// stopping terminal's last end notification must leave), waiting at
    /// most `limit` for that.
    pub async fn close(self, limit: Duration) {
        let StreamWriter { queue, task } = self;
        drop(queue);
        let deadline = tokio::time::Instant::now() + limit;
        while !task.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Starts the task of a connected stream; dropping the returned writer
/// closes the stream once its queue is written.
fn start(conn: ConnectionId, socket: TcpStream, to: mpsc::Sender<StreamInput>) -> StreamWriter {
    let (queue, rx) = mpsc::channel(WRITE_QUEUE_MESSAGES);
    let task = tokio::spawn(run_stream(conn, Ok(socket), rx, to)).abort_handle();
    StreamWriter { queue, task }
}

/// Reads and writes one stream until either side ends.
async fn run_stream(
    conn: ConnectionId,
    socket: std::io::Result<TcpStream>,
    queue: mpsc::Receiver<Vec<u8>>,
    to: mpsc::Sender<StreamInput>,
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
        () = read_messages(conn, read, to.clone()) => {
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

/// Writes queued messages until the queue closes (`false`) or a write fails
/// or stalls (`true`).
async fn write_messages(mut write: OwnedWriteHalf, mut queue: mpsc::Receiver<Vec<u8>>) -> bool {
    while let Some(message) = queue.recv().await {
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&message)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return true,
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, write.shutdown()).await;
    false
}

/// Reads messages from `read` until it ends, sending each to `to`.
async fn read_messages(conn: ConnectionId, mut read: OwnedReadHalf, to: mpsc::Sender<StreamInput>) {
    let mut frames = FrameBuffer::new();
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

/// Accepts streams forever, numbering them from 1 and starting a task for each.
pub async fn accept_streams(listener: TcpListener, to: mpsc::Sender<StreamInput>) {
    let mut next = 1u64;
    loop {
        let (socket, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let conn = ConnectionId(next);
        next += 1;
        let writer = start(conn, socket, to.clone());
        if to
            .send(StreamInput::Opened(conn, remote, writer))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Opens an outgoing stream (a machine's `Upstream`) in the background:
/// messages queue at once and go out once it is connected; a failed
/// connect comes back as [`StreamInput::Closed`].
pub fn connect_upstream(
    addr: SocketAddr,
    conn: ConnectionId,
    to: mpsc::Sender<StreamInput>,
) -> StreamWriter {
    let (queue, rx) = mpsc::channel(WRITE_QUEUE_MESSAGES);
    let task = tokio::spawn(async move {
        let socket = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        };
        run_stream(conn, socket, rx, to).await;
    })
    .abort_handle();
    StreamWriter { queue, task }
}
