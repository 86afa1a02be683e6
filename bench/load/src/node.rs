//! One simulated terminal: the core's [`Terminal`] machine (Noise IK
//! registration, sealed records, tagged keepalives) on its own UDP socket
//! and its own stream to the session server, both bound to one loopback
//! source address, driven by a compact loop ([`Node::turn`]).
//!
//! The loop is the load generator's, not a driver of the product: it has no
//! peer sessions, no store and no app, only what the servers see of a
//! terminal. Every call is cancel-safe, so a task can `select!` over the
//! turns of several nodes.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant as StdInstant};

use rand_core::OsRng;
use tokio::io::Interest;
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tryst_core::crypto::StaticKeypair;
use tryst_core::machine::Destination;
use tryst_core::terminal::{Terminal, TerminalConfig};
use tryst_core::time::Instant;
use tryst_core::wire::{FrameBuffer, Message};

/// Most bytes waiting for the stream to the session server; beyond it the
/// stream is dropped as lost (the machine then registers again).
pub const MAX_OUTBOUND: usize = 64 * 1024;
/// Bytes read from the stream per call.
const READ_CHUNK: usize = 4096;
/// Room for one datagram from the trigger server.
const DATAGRAM_BUF: usize = 2048;
/// How long a stream connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a turn waits when the machine has no timer.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// A node's socket failed in a way the machine cannot recover from.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Binding or using the UDP socket failed.
    #[error("udp socket: {0}")]
    Udp(#[source] io::Error),
}

/// What one turn's wait produced.
enum Ready {
    Stream(io::Result<tokio::io::Ready>),
    Datagram(io::Result<(usize, SocketAddr)>),
    Timer,
}

/// One terminal and its sockets.
pub struct Node {
    /// The terminal machine (boxed: its fixed-capacity tables are large).
    pub term: Box<Terminal<OsRng>>,
    udp: UdpSocket,
    stream: Option<TcpStream>,
    out: Vec<u8>,
    frames: Box<FrameBuffer>,
    read_buf: Box<[u8; READ_CHUNK]>,
    datagram_buf: Box<[u8; DATAGRAM_BUF]>,
    source: IpAddr,
    control: SocketAddr,
    trigger: SocketAddr,
    origin: StdInstant,
    /// How far this node's clock runs ahead of real time: the keepalive
    /// mode moves it to the machine's next keepalive instead of waiting.
    offset: Duration,
    /// The last keepalive sent: its counter and when it went.
    pub keepalive_sent: Option<(u64, StdInstant)>,
    /// The last keepalive acknowledged: its counter and its round trip.
    pub keepalive_acked: Option<(u64, Duration)>,
    /// Datagrams the socket would not take (buffer full).
    pub send_drops: u64,
}

impl Node {
    /// A node for `config` and `keypair` whose sockets are bound to
    /// `source`; it reaches the session server at `control`. `origin` is
    /// the run's clock origin.
    pub async fn bind(
        origin: StdInstant,
        source: IpAddr,
        control: SocketAddr,
        config: TerminalConfig,
        keypair: StaticKeypair,
    ) -> Result<Node, NodeError> {
        let udp = UdpSocket::bind(SocketAddr::new(source, 0))
            .await
            .map_err(NodeError::Udp)?;
        let trigger = config.trigger_server;
        Ok(Node {
            term: Box::new(Terminal::new(config, keypair, OsRng)),
            udp,
            stream: None,
            out: Vec::new(),
            frames: Box::new(FrameBuffer::new()),
            read_buf: Box::new([0; READ_CHUNK]),
            datagram_buf: Box::new([0; DATAGRAM_BUF]),
            source,
            control,
            trigger,
            origin,
            offset: Duration::ZERO,
            keepalive_sent: None,
            keepalive_acked: None,
            send_drops: 0,
        })
    }

    /// This node's clock (real time since the origin plus its offset).
    pub fn now(&self) -> Instant {
        let micros = (self.origin.elapsed() + self.offset).as_micros();
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// The real time at which this node's clock reads `t`.
    fn real(&self, t: Instant) -> tokio::time::Instant {
        let since_origin = Duration::from_micros(t.as_micros()).saturating_sub(self.offset);
        tokio::time::Instant::from_std(self.origin + since_origin)
    }

    /// Moves this node's clock to the machine's next timer (if it is in
    /// the future) and runs the timers due then: the next keepalive goes
    /// now instead of after the interval. Returns whether a timer ran.
    pub fn skip_to_next_timer(&mut self) -> bool {
        let now = self.now();
        let Some(due) = self.term.poll_timeout() else {
            return false;
        };
        if due > now {
            self.offset += due.saturating_duration_since(now);
        }
        self.term.handle_timeout(self.now());
        self.flush();
        true
    }

    /// Drops the stream to the session server as if it were lost: the
    /// machine registers again on a new one.
    pub fn drop_stream(&mut self) {
        self.lose_stream();
        self.flush();
    }

    fn lose_stream(&mut self) {
        self.stream = None;
        self.out.clear();
        *self.frames = FrameBuffer::new();
        let now = self.now();
        self.term.handle_upstream_closed(now);
    }

    /// Hands the machine's transmits to the sockets (never waits: a full
    /// UDP buffer drops the datagram, a full stream keeps the bytes).
    pub fn flush(&mut self) {
        while let Some(transmit) = self.term.poll_transmit() {
            let payload: &[u8] = &transmit.payload;
            match transmit.destination {
                Destination::Udp(addr) => {
                    if let Ok(Message::Keepalive(k)) = Message::decode(payload) {
                        self.keepalive_sent = Some((k.counter, StdInstant::now()));
                    }
                    if self.udp.try_send_to(payload, addr).is_err() {
                        self.send_drops += 1;
                    }
                }
                Destination::Upstream => {
                    if self.out.len() + payload.len() > MAX_OUTBOUND {
                        self.lose_stream();
                    } else {
                        self.out.extend_from_slice(payload);
                    }
                }
                // A load terminal never opens a peer path, so neither a
                // server's stream nor the relay's TCP stream is one of its.
                Destination::Connection(_) | Destination::RelayStream(_) => {}
            }
        }
        self.write_out();
    }

    fn write_out(&mut self) {
        let Some(stream) = &self.stream else {
            return;
        };
        while !self.out.is_empty() {
            match stream.try_write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.lose_stream();
                    return;
                }
            }
        }
    }

    /// One turn: connects the stream if the machine has something for it,
    /// waits for one input (stream bytes, a datagram, or the machine's
    /// timer), feeds it to the machine and sends what it produced.
    /// Cancel-safe: dropped mid-wait, nothing is lost.
    pub async fn turn(&mut self) {
        self.flush();
        if self.stream.is_none() && !self.out.is_empty() {
            match connect_from(self.source, self.control).await {
                Ok(stream) => {
                    self.stream = Some(stream);
                    self.write_out();
                }
                Err(_) => {
                    self.lose_stream();
                    self.flush();
                    return;
                }
            }
        }
        let deadline = match self.term.poll_timeout() {
            Some(t) => self.real(t),
            None => tokio::time::Instant::now() + IDLE_WAIT,
        };
        let want_write = !self.out.is_empty();
        let ready = {
            let stream = self.stream.as_ref();
            let udp = &self.udp;
            let buf = &mut self.datagram_buf[..];
            tokio::select! {
                r = stream_ready(stream, want_write) => Ready::Stream(r),
                r = udp.recv_from(buf) => Ready::Datagram(r),
                () = tokio::time::sleep_until(deadline) => Ready::Timer,
            }
        };
        match ready {
            Ready::Stream(Ok(r)) => {
                if r.is_writable() {
                    self.write_out();
                }
                if r.is_readable() || r.is_read_closed() {
                    self.read_stream();
                }
            }
            Ready::Stream(Err(_)) => self.lose_stream(),
            Ready::Datagram(Ok((n, from))) => self.on_datagram(n, from),
            Ready::Datagram(Err(_)) => {}
            Ready::Timer => {
                let now = self.now();
                self.term.handle_timeout(now);
            }
        }
        self.flush();
    }

    fn read_stream(&mut self) {
        let Some(stream) = &self.stream else {
            return;
        };
        let n = match stream.try_read(&mut self.read_buf[..]) {
            Ok(0) => return self.lose_stream(),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => return self.lose_stream(),
        };
        let now = self.now();
        let mut input: &[u8] = self.read_buf.get(..n).unwrap_or_default();
        let mut broken = false;
        while !input.is_empty() {
            match self.frames.push(&mut input) {
                Ok(Some(message)) => self.term.handle_upstream(now, message),
                Ok(None) => break,
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        if broken {
            self.lose_stream();
        }
    }

    fn on_datagram(&mut self, n: usize, from: SocketAddr) {
        let datagram = self.datagram_buf.get(..n).unwrap_or_default();
        if from == self.trigger {
            if let (Some((counter, sent)), Ok(Message::KeepaliveAck(ack))) =
                (self.keepalive_sent, Message::decode(datagram))
            {
                if ack.counter == counter {
                    self.keepalive_acked = Some((counter, sent.elapsed()));
                    self.keepalive_sent = None;
                }
            }
        }
        let now = self.now();
        self.term.handle_udp(now, from, datagram);
    }
}

/// Waits until the stream is readable (or writable, when bytes wait);
/// never returns without a stream.
async fn stream_ready(
    stream: Option<&TcpStream>,
    want_write: bool,
) -> io::Result<tokio::io::Ready> {
    let Some(stream) = stream else {
        return std::future::pending().await;
    };
    let interest = if want_write {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    stream.ready(interest).await
}

/// A stream to `server` from the loopback address `source`.
async fn connect_from(source: IpAddr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(server))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}
