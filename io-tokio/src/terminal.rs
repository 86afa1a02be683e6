//! A terminal (seed: terminals 1 and 3) in its own event loop: one UDP
//! socket for keepalives, triggers and (with the peer path) the direct
//! channel, and the stream to the session server, opened when the machine
//! has something to say.
//!
//! The loop owns the machine and moves bytes only: datagrams are received
//! in batches (`recvmmsg`, and GRO where the kernel offers it, through the
//! `quinn-udp` crate) into one mutable buffer that the machine may decrypt
//! in place; datagrams to send are written into a send buffer and go out in
//! batches of equal-sized segments to one destination per system call (GSO)
//! where the kernel offers it.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::time::Duration;

use quinn_udp::{RecvMeta, UdpSocketState, BATCH_SIZE};
use rand_core::OsRng;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tryst_core::crypto::StaticKeypair;
use tryst_core::machine::{ConnectionId, Destination, Transmit};
use tryst_core::terminal::{
    ConnectError, PermissionError, Terminal, TerminalConfig, TerminalEvent, UnknownQuery,
    UnknownSession,
};
use tryst_core::wire::{EndReason, SessionId, Verdict};

use crate::clock::DriverClock;
use crate::stream::{connect_upstream, StreamInput, StreamWriter};

/// Bytes of one receive slot: room for a GRO batch of full-sized datagrams
/// (the kernel never coalesces more than 64 KiB).
pub const RECV_SLOT_LEN: usize = 64 * 1024;
/// Room per datagram in a GSO batch: an Ethernet-sized datagram; a larger
/// one is sent alone.
pub const BATCH_SLOT_LEN: usize = 1500;
/// Socket buffer size asked of the kernel for each direction, so a burst
/// of paced packets is not dropped by the socket itself.
pub const SOCKET_BUFFER_LEN: usize = 4 * 1024 * 1024;
/// Commands the app may queue before `send` waits.
const COMMAND_QUEUE: usize = 64;

/// What the app asks of a running terminal.
#[derive(Debug)]
pub enum TerminalCommand {
    /// Ask the session server for `target` (S203/S204).
    Connect {
        /// The name to reach.
        target: String,
        /// Seconds asked for.
        duration_secs: u32,
        /// The request ID, or why no request was sent.
        reply: oneshot::Sender<Result<u32, ConnectError>>,
    },
    /// Report how a session's transfer goes (drives the 70% extension).
    Progress {
        /// The session.
        session_id: SessionId,
        /// Payload bytes sent so far.
        bytes_sent: u64,
        /// Payload bytes received so far.
        bytes_received: u64,
        /// Whether the transfer is still running.
        active: bool,
    },
    /// End a session and send the end notification (S1508, 814/815).
    Finish {
        /// The session.
        session_id: SessionId,
        /// Why.
        reason: EndReason,
        /// Whether the session was known.
        reply: oneshot::Sender<Result<(), UnknownSession>>,
    },
    /// Replace the permission list L; it applies to the next request.
    SetPermissions {
        /// The whole new list.
        names: Vec<String>,
        /// Whether the list was taken (on error it is unchanged).
        reply: oneshot::Sender<Result<(), PermissionError>>,
    },
    /// The app's verdict on a permission inquiry (judge policy `Ask`).
    Answer {
        /// The inquiry.
        query_id: u32,
        /// Yes or no.
        verdict: Verdict,
        /// Whether the inquiry was still waiting.
        reply: oneshot::Sender<Result<(), UnknownQuery>>,
    },
    /// Stop: send what is queued (end notifications), close the stream to
    /// the session server, and end the loop.
    Shutdown {
        /// Longest to wait for the queued records to leave.
        grace: Duration,
        /// Answered when the loop has stopped.
        reply: oneshot::Sender<()>,
    },
}

/// A running terminal.
#[derive(Debug, Clone)]
pub struct TerminalHandle {
    /// Its UDP socket's local address (keepalives and the peer path).
    pub udp_addr: SocketAddr,
    commands: mpsc::Sender<TerminalCommand>,
}

/// The loop stopped before it answered.
fn stopped<T>(_: T) -> anyhow::Error {
    anyhow::anyhow!("the terminal's event loop stopped")
}

impl TerminalHandle {
    /// Asks for `target`; the answer comes as an event with the returned request ID.
    pub async fn connect(&self, target: &str, duration_secs: u32) -> anyhow::Result<u32> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(TerminalCommand::Connect {
                target: target.to_owned(),
                duration_secs,
                reply,
            })
            .await
            .map_err(stopped)?;
        answer
            .await
            .map_err(stopped)?
            .map_err(|e| anyhow::anyhow!("request not sent: {e}"))
    }

    /// Reports a session's transfer.
    pub async fn progress(
        &self,
        session_id: SessionId,
        bytes_sent: u64,
        bytes_received: u64,
        active: bool,
    ) -> anyhow::Result<()> {
        self.commands
            .send(TerminalCommand::Progress {
                session_id,
                bytes_sent,
                bytes_received,
                active,
            })
            .await
            .map_err(stopped)
    }

    /// Ends a session.
    pub async fn finish(&self, session_id: SessionId, reason: EndReason) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(TerminalCommand::Finish {
                session_id,
                reason,
                reply,
            })
            .await
            .map_err(stopped)?;
        answer
            .await
            .map_err(stopped)?
            .map_err(|_| anyhow::anyhow!("no such session"))
    }

    /// Replaces the permission list; it applies to the next request.
    pub async fn set_permissions(&self, names: Vec<String>) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(TerminalCommand::SetPermissions { names, reply })
            .await
            .map_err(stopped)?;
        answer
            .await
            .map_err(stopped)?
            .map_err(|e| anyhow::anyhow!("permission list refused: {e}"))
    }

    /// Answers a permission inquiry.
    pub async fn answer(&self, query_id: u32, verdict: Verdict) -> anyhow::Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(TerminalCommand::Answer {
                query_id,
                verdict,
                reply,
            })
            .await
            .map_err(stopped)?;
        answer
            .await
            .map_err(stopped)?
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Stops the terminal after its queued messages (end notifications)
    /// left, waiting at most `grace` for them.
    pub async fn shutdown(&self, grace: Duration) {
        let (reply, done) = oneshot::channel();
        if self
            .commands
            .send(TerminalCommand::Shutdown { grace, reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
    }
}

/// Binds the terminal's UDP socket and starts it with this permission list:
/// it registers at once. Returns its handle and its events; the loop runs
/// until every handle is dropped or one asks it to shut down.
pub async fn spawn(
    config: TerminalConfig,
    keypair: StaticKeypair,
    session_server: SocketAddr,
    udp_addr: SocketAddr,
    permissions: &[&str],
) -> io::Result<(TerminalHandle, mpsc::UnboundedReceiver<TerminalEvent>)> {
    let udp = BatchSocket::bind(udp_addr)?;
    let udp_addr = udp.socket.local_addr()?;
    let clock = DriverClock::default();
    let mut machine = Terminal::new(config, keypair, OsRng);
    machine
        .set_permissions(permissions)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    machine.start(clock.now());
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (event_tx, events) = mpsc::unbounded_channel();
    let (stream_tx, stream_rx) = mpsc::channel(256);
    let event_loop = Loop {
        clock,
        machine,
        udp,
        session_server,
        upstream: None,
        next_upstream: 0,
        stream_tx,
        events: event_tx,
    };
    tokio::spawn(event_loop.run(command_rx, stream_rx));
    Ok((TerminalHandle { udp_addr, commands }, events))
}

/// The UDP socket with its batching state and buffers.
struct BatchSocket {
    socket: UdpSocket,
    state: UdpSocketState,
    /// `BATCH_SIZE` receive slots of [`RECV_SLOT_LEN`] bytes, one buffer.
    recv_buf: Vec<u8>,
    recv_meta: [RecvMeta; BATCH_SIZE],
    /// Datagrams waiting to go out as one GSO batch.
    batch: SendBatch,
}

impl BatchSocket {
    fn bind(addr: SocketAddr) -> io::Result<BatchSocket> {
        let std_socket = std::net::UdpSocket::bind(addr)?;
        std_socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&std_socket).into())?;
        // Best effort: a smaller buffer still works, it only drops sooner.
        let _ = state.set_recv_buffer_size((&std_socket).into(), SOCKET_BUFFER_LEN);
        let _ = state.set_send_buffer_size((&std_socket).into(), SOCKET_BUFFER_LEN);
        let max_segments = state.max_gso_segments().max(1);
        tracing::debug!(
            gso_segments = max_segments,
            gro_segments = state.gro_segments(),
            "udp socket ready"
        );
        Ok(BatchSocket {
            socket: UdpSocket::from_std(std_socket)?,
            state,
            recv_buf: vec![0; BATCH_SIZE * RECV_SLOT_LEN],
            recv_meta: [RecvMeta::default(); BATCH_SIZE],
            batch: SendBatch::new(max_segments),
        })
    }

    /// Waits for datagrams; returns how many slots were filled.
    async fn recv(&mut self) -> io::Result<usize> {
        loop {
            self.socket.readable().await?;
            let mut slots = self.recv_buf.chunks_mut(RECV_SLOT_LEN);
            let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] =
                std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
            let (socket, state, meta) = (&self.socket, &self.state, &mut self.recv_meta);
            match socket.try_io(Interest::READABLE, || {
                state.recv(socket.into(), &mut iovs, meta)
            }) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The datagrams of receive slot `slot` (several when GRO coalesced
    /// them), each mutable so the machine can decrypt in place.
    fn received(&mut self, slot: usize) -> (SocketAddr, std::slice::ChunksMut<'_, u8>) {
        let meta = self.recv_meta.get(slot).copied().unwrap_or_default();
        let start = slot * RECV_SLOT_LEN;
        let len = meta.len.min(RECV_SLOT_LEN);
        let data = self
            .recv_buf
            .get_mut(start..start + len)
            .unwrap_or_default();
        (meta.addr, data.chunks_mut(meta.stride.max(1)))
    }

    /// Sends one whole buffer (one datagram, or a GSO batch of `segment`-sized ones).
    async fn send(&self, to: SocketAddr, contents: &[u8], segment: Option<usize>) {
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: segment.filter(|s| *s < contents.len()),
            src_ip: None,
        };
        loop {
            let result = match self.socket.writable().await {
                Ok(()) => self.socket.try_io(Interest::WRITABLE, || {
                    self.state.try_send((&self.socket).into(), &transmit)
                }),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    // UDP: the protocol above retransmits; a datagram too big
                    // for the path (EMSGSIZE, a PMTU probe) is expected.
                    tracing::debug!(%to, len = contents.len(), error = %e, "datagram not sent");
                    return;
                }
            }
        }
    }

    /// Sends the pending GSO batch, if any.
    async fn flush(&mut self) {
        if let Some((to, len, segment)) = self.batch.take() {
            let contents = self.batch.buf.get(..len).unwrap_or_default();
            self.send(to, contents, Some(segment)).await;
        }
    }
}

/// Datagrams to one destination, all `segment` bytes long except possibly
/// the last (the GSO rule), laid end to end in one buffer.
struct SendBatch {
    buf: Vec<u8>,
    len: usize,
    segment: usize,
    count: usize,
    max_segments: usize,
    destination: Option<SocketAddr>,
    /// The last segment was shorter: nothing more may join.
    closed: bool,
}

impl SendBatch {
    fn new(max_segments: usize) -> SendBatch {
        SendBatch {
            buf: vec![0; max_segments * BATCH_SLOT_LEN],
            len: 0,
            segment: 0,
            count: 0,
            max_segments,
            destination: None,
            closed: false,
        }
    }

    /// Whether a datagram of `len` bytes to `to` may join the batch.
    fn fits(&self, to: SocketAddr, len: usize) -> bool {
        self.count > 0
            && !self.closed
            && self.destination == Some(to)
            && self.count < self.max_segments
            && len <= self.segment
            && self.len + len <= self.buf.len()
    }

    /// Adds a datagram if it may join (an empty batch takes any that fits
    /// the buffer); whether it did.
    fn push(&mut self, to: SocketAddr, datagram: &[u8]) -> bool {
        if self.count == 0 {
            if datagram.len() > self.buf.len() || datagram.is_empty() {
                return false;
            }
            self.destination = Some(to);
            self.segment = datagram.len();
            self.closed = false;
            self.len = 0;
        } else if !self.fits(to, datagram.len()) {
            return false;
        }
        let Some(slot) = self.buf.get_mut(self.len..self.len + datagram.len()) else {
            return false;
        };
        slot.copy_from_slice(datagram);
        self.len += datagram.len();
        self.count += 1;
        if datagram.len() < self.segment {
            self.closed = true;
        }
        true
    }

    /// Whether the batch can take nothing more.
    fn is_full(&self) -> bool {
        self.count >= self.max_segments || self.closed
    }

    /// Empties the batch: (destination, bytes, segment size).
    fn take(&mut self) -> Option<(SocketAddr, usize, usize)> {
        if self.count == 0 {
            return None;
        }
        let to = self.destination?;
        let out = (to, self.len, self.segment);
        self.count = 0;
        self.len = 0;
        self.closed = false;
        Some(out)
    }
}

/// The terminal's event loop and everything it owns.
struct Loop {
    clock: DriverClock,
    machine: Terminal<OsRng>,
    udp: BatchSocket,
    session_server: SocketAddr,
    /// The live stream to the session server: its number and writer.
    upstream: Option<(ConnectionId, StreamWriter)>,
    next_upstream: u64,
    stream_tx: mpsc::Sender<StreamInput>,
    events: mpsc::UnboundedSender<TerminalEvent>,
}

impl Loop {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<TerminalCommand>,
        mut streams: mpsc::Receiver<StreamInput>,
    ) {
        loop {
            self.drain().await;
            let deadline = self.clock.deadline(self.machine.poll_timeout());
            tokio::select! {
                received = self.udp.recv() => match received {
                    Ok(slots) => self.on_datagrams(slots),
                    Err(e) => tracing::debug!(error = %e, "udp receive failed"),
                },
                Some(input) = streams.recv() => self.on_stream(input),
                command = commands.recv() => match command {
                    Some(TerminalCommand::Shutdown { grace, reply }) => {
                        self.drain().await;
                        if let Some((_, writer)) = self.upstream.take() {
                            writer.close(grace).await;
                        }
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.on_command(command),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    self.machine.handle_timeout(self.clock.now());
                }
            }
        }
    }

    fn on_datagrams(&mut self, slots: usize) {
        let now = self.clock.now();
        for slot in 0..slots {
            let (from, datagrams) = self.udp.received(slot);
            for datagram in datagrams {
                self.machine.handle_udp(now, from, datagram);
            }
        }
    }

    fn on_stream(&mut self, input: StreamInput) {
        let now = self.clock.now();
        let current = self.upstream.as_ref().map(|(conn, _)| *conn);
        match input {
            StreamInput::Message(conn, message) if Some(conn) == current => {
                self.machine.handle_upstream(now, &message);
            }
            StreamInput::Closed(conn) if Some(conn) == current => {
                self.upstream = None;
                self.machine.handle_upstream_closed(now);
            }
            // An old stream's late input, or an accepted stream (never: the
            // terminal listens on none).
            _ => {}
        }
    }

    fn on_command(&mut self, command: TerminalCommand) {
        let now = self.clock.now();
        match command {
            TerminalCommand::Connect {
                target,
                duration_secs,
                reply,
            } => {
                let _ = reply.send(self.machine.connect(now, &target, duration_secs));
            }
            TerminalCommand::Progress {
                session_id,
                bytes_sent,
                bytes_received,
                active,
            } => {
                let _ =
                    self.machine
                        .transfer_progress(&session_id, bytes_sent, bytes_received, active);
            }
            TerminalCommand::Finish {
                session_id,
                reason,
                reply,
            } => {
                let _ = reply.send(self.machine.finish_session(now, &session_id, reason));
            }
            TerminalCommand::SetPermissions { names, reply } => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let result = self.machine.set_permissions(&names);
                if result.is_ok() {
                    tracing::info!(count = names.len(), "permission list updated");
                }
                let _ = reply.send(result);
            }
            TerminalCommand::Answer {
                query_id,
                verdict,
                reply,
            } => {
                let _ = reply.send(self.machine.answer(now, query_id, verdict));
            }
            // The loop handles it before it gets here.
            TerminalCommand::Shutdown { reply, .. } => {
                let _ = reply.send(());
            }
        }
    }

    /// Sends every transmit and forwards every event, until the machine has none.
    async fn drain(&mut self) {
        loop {
            while let Some(transmit) = self.machine.poll_transmit() {
                self.transmit(transmit).await;
            }
            self.udp.flush().await;
            let mut any = false;
            while let Some(event) = self.machine.poll_event() {
                any = true;
                log_event(&event);
                // The app may have gone; the machine keeps running regardless.
                let _ = self.events.send(event);
            }
            if !any {
                break;
            }
        }
    }

    async fn transmit(&mut self, transmit: Transmit) {
        match transmit.destination {
            Destination::Udp(to) => self.queue_datagram(to, &transmit.payload).await,
            Destination::Upstream => self.send_upstream(&transmit.payload),
            // A terminal accepts no streams.
            Destination::Connection(_) => {}
        }
    }

    /// Adds a datagram to the GSO batch, sending the batch first if the
    /// datagram cannot join it, and after if it is full.
    async fn queue_datagram(&mut self, to: SocketAddr, datagram: &[u8]) {
        if !self.udp.batch.push(to, datagram) {
            self.udp.flush().await;
            if !self.udp.batch.push(to, datagram) {
                // Larger than the batch buffer: alone, straight from the caller's bytes.
                self.udp.send(to, datagram, None).await;
                return;
            }
        }
        if self.udp.batch.is_full() {
            self.udp.flush().await;
        }
    }

    /// Queues a record on the stream to the session server, opening the
    /// stream first if needed (a failed connect comes back as `Closed`).
    fn send_upstream(&mut self, record: &[u8]) {
        let writer = match &self.upstream {
            Some((_, writer)) => writer,
            None => {
                let conn = ConnectionId(self.next_upstream);
                self.next_upstream += 1;
                let writer = connect_upstream(self.session_server, conn, self.stream_tx.clone());
                &self.upstream.insert((conn, writer)).1
            }
        };
        if writer.send(record.to_vec()).is_err() {
            tracing::info!("stream to the session server lost");
            if let Some((_, writer)) = self.upstream.take() {
                writer.abort();
            }
            self.machine.handle_upstream_closed(self.clock.now());
        }
    }
}

/// The first bytes of a session ID, enough to tell sessions apart in logs.
pub fn short_session_id(id: &SessionId) -> String {
    id.0.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// A session ID as 32 hex digits (what `tryst end` and `tryst sessions` take).
pub fn full_session_id(id: &SessionId) -> String {
    id.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// One log line per protocol event, at info; keys never appear.
fn log_event(event: &TerminalEvent) {
    match event {
        TerminalEvent::Registered { device_id } => {
            tracing::info!(device = %format_args!("{:016x}", device_id.0), "registered with the session server");
        }
        TerminalEvent::RegistrationRefused => {
            tracing::warn!("the session server refused this name or key");
        }
        TerminalEvent::Reregistering { cause } => {
            tracing::info!(?cause, "registering again");
        }
        TerminalEvent::Online { observed } => {
            tracing::info!(%observed, "keepalive acknowledged: reachable");
        }
        TerminalEvent::PermissionAsked {
            query_id,
            requester,
        } => {
            tracing::info!(query_id, requester = %requester, "permission asked");
        }
        TerminalEvent::PermissionAnswered {
            query_id,
            requester,
            verdict,
        } => {
            tracing::info!(query_id, requester = %requester, ?verdict, "permission answered");
        }
        TerminalEvent::SessionReady {
            session_id,
            role,
            request_id,
            peer_name,
            peer_addr,
            duration_secs,
            ..
        } => {
            tracing::info!(
                session = %short_session_id(session_id),
                ?role,
                request_id,
                peer = %peer_name,
                %peer_addr,
                duration_secs,
                "session ready"
            );
        }
        TerminalEvent::ConnectFailed { request_id } => {
            tracing::info!(request_id, "connection request not permitted");
        }
        TerminalEvent::ExtensionRequested {
            session_id,
            extra_secs,
        } => {
            tracing::info!(session = %short_session_id(session_id), extra_secs, "extension requested");
        }
        TerminalEvent::SessionExtended {
            session_id,
            duration_secs,
        } => {
            tracing::info!(session = %short_session_id(session_id), duration_secs, "session extended");
        }
        TerminalEvent::ExtensionRefused { session_id } => {
            tracing::info!(session = %short_session_id(session_id), "extension refused");
        }
        TerminalEvent::SessionEnded {
            session_id,
            reason,
            bytes_sent,
            bytes_received,
            duration_ms,
        } => {
            tracing::info!(
                session = %short_session_id(session_id),
                ?reason,
                bytes_sent,
                bytes_received,
                duration_ms,
                "session ended"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn gso_batch_takes_equal_segments_to_one_destination() {
        let mut batch = SendBatch::new(4);
        assert!(batch.push(addr(1), &[1; 100]));
        assert!(batch.push(addr(1), &[2; 100]));
        // Another destination, or a larger datagram, cannot join.
        assert!(!batch.push(addr(2), &[3; 100]));
        assert!(!batch.push(addr(1), &[3; 101]));
        // A shorter one can, and ends the batch.
        assert!(batch.push(addr(1), &[4; 50]));
        assert!(batch.is_full());
        assert!(!batch.push(addr(1), &[5; 50]));
        assert_eq!(batch.take(), Some((addr(1), 250, 100)));
        assert_eq!(batch.take(), None);
    }

    #[test]
    fn gso_batch_is_full_at_the_kernel_segment_limit() {
        let mut batch = SendBatch::new(2);
        assert!(batch.push(addr(1), &[0; 10]));
        assert!(!batch.is_full());
        assert!(batch.push(addr(1), &[0; 10]));
        assert!(batch.is_full());
        assert!(!batch.push(addr(1), &[0; 10]));
    }

    #[tokio::test]
    async fn batched_socket_delivers_a_gso_batch_as_separate_datagrams() {
        let mut a = BatchSocket::bind(addr(0)).unwrap();
        let b = std::net::UdpSocket::bind(addr(0)).unwrap();
        let to = b.local_addr().unwrap();
        let from = a.socket.local_addr().unwrap();
        let n = a.batch.max_segments.min(3);
        for i in 0..n as u8 {
            assert!(a.batch.push(to, &[i; 1200]));
        }
        a.flush().await;
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2000];
        for i in 0..n as u8 {
            let (len, src) = b.recv_from(&mut buf).unwrap();
            assert_eq!((len, src), (1200, from));
            assert!(buf[..len].iter().all(|x| *x == i));
        }
        // And the batched receive side splits what arrives.
        b.send_to(&[9; 700], from).unwrap();
        let slots = a.recv().await.unwrap();
        assert_eq!(slots, 1);
        let (src, mut datagrams) = a.received(0);
        assert_eq!(src, to);
        assert_eq!(datagrams.next().map(|d| d.len()), Some(700));
    }
}
