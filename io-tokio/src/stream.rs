//! Message streams over TCP: reader tasks that reassemble whole messages
//! with the core's [`FrameBuffer`] and hand them to the machine's task.

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tryst_core::machine::ConnectionId;
use tryst_core::wire::FrameBuffer;

/// What a reader task tells the machine's task.
#[derive(Debug)]
pub enum StreamInput {
    /// A stream was accepted (server side).
    Opened(ConnectionId, SocketAddr, OwnedWriteHalf),
    /// One whole message arrived.
    Message(ConnectionId, Vec<u8>),
    /// The stream ended (closed, reset, or not tryst traffic).
    Closed(ConnectionId),
}

/// Reads messages from `read` until it ends, sending each to `to`.
pub async fn read_messages(
    conn: ConnectionId,
    mut read: OwnedReadHalf,
    to: mpsc::Sender<StreamInput>,
) {
    let mut frames = FrameBuffer::new();
    let mut buf = vec![0u8; 16 * 1024];
    'stream: loop {
        let n = match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
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
                    break 'stream;
                }
            }
        }
    }
    let _ = to.send(StreamInput::Closed(conn)).await;
}

/// Accepts streams forever, numbering them from 1 and starting a reader for each.
pub async fn accept_streams(listener: TcpListener, to: mpsc::Sender<StreamInput>) {
    let mut next = 1u64;
    loop {
        let Ok((socket, remote)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        let conn = ConnectionId(next);
        next += 1;
        let (read, write) = socket.into_split();
        if to
            .send(StreamInput::Opened(conn, remote, write))
            .await
            .is_err()
        {
            return;
        }
        tokio::spawn(read_messages(conn, read, to.clone()));
    }
}

/// Opens an outgoing stream (a machine's `Upstream`) and starts its reader.
pub async fn connect_upstream(
    addr: SocketAddr,
    conn: ConnectionId,
    to: mpsc::Sender<StreamInput>,
) -> std::io::Result<OwnedWriteHalf> {
    let socket = TcpStream::connect(addr).await?;
    let _ = socket.set_nodelay(true);
    let (read, write) = socket.into_split();
    tokio::spawn(read_messages(conn, read, to));
    Ok(write)
}
