//! The terminal (seed: terminals 1 and 3) as every driver runs it: one UDP
//! socket for keepalives, triggers and the direct peer channel, and the
//! stream to the session server, opened when the machine has something to
//! say (the driver binds and opens them). The machine is the core's
//! [`Endpoint`]: the terminal and its peer sessions, with the glue between
//! them.
//!
//! File payloads are read and written by offset ([`FileSource`],
//! [`FileSink`] of [`crate::transfer`]): the endpoint never copies or keeps
//! them. What each stream byte is, how fast a send goes, and when a
//! transfer ends its session are the core's transfer machines' decisions
//! (`tryst_core::peer::transfer`); the role only applies them. Their
//! SHA-256 runs on a thread of each file's own, which wakes the loop (the
//! [`Wake`] the driver gives [`TerminalRole::new`]) when it is done (the
//! sender's trailer became readable, the receiver's file can be checked).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rand_core::OsRng;
use tryst_core::crypto::StaticKeypair;
use tryst_core::peer::endpoint::{Endpoint, EndpointEvent, SessionIo};
use tryst_core::peer::session::{PeerConfig, PeerEvent};
use tryst_core::peer::share::{NotKeptReason, ShareMessage};
use tryst_core::peer::transfer::{session_end, SendStep};
use tryst_core::peer::transport::{PingError, TransportStats};
use tryst_core::terminal::{
    ConnectError, PermissionError, TerminalConfig, TerminalEvent, UnknownQuery, UnknownSession,
};
use tryst_core::time::Instant;
use tryst_core::wire::{EndReason, Role, SessionId, Verdict};

use super::{Answer, Commands, Reply, RoleStopped};
use crate::drive::{Driven, Flow, IoOf, Stopped};
use crate::transfer::live::{LiveChild, LiveChunk, LiveSource};
use crate::transfer::share::{listed_files, Share, SharedFile};
pub use crate::transfer::FileSource;
use crate::transfer::{FileSink, Incoming, PartialLimits, ReceiveState, Wake};

/// How often transfer progress is reported to the app.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// Stack of the terminal's thread: the endpoint and its sessions are large
/// fixed-size values (no allocator in the core), and debug builds copy them.
pub const LOOP_STACK: usize = 16 * 1024 * 1024;

/// How the terminal's loop treats payloads.
#[derive(Debug, Clone, Default)]
pub struct TerminalOptions {
    /// Where files from permitted peers are stored; `None` refuses them
    /// (the session is closed, `Failed`).
    pub recv_dir: Option<PathBuf>,
    /// What is kept of each peer's cut transfers in `recv_dir` (and in a
    /// fetch's folder): past it, that peer's oldest partial files go.
    pub partial_limits: PartialLimits,
    /// The folder permitted peers may list and fetch from, read-only
    /// (`tryst terminal --share`); `None` shares nothing (a listing is
    /// empty, every file is "no such file").
    pub share: Option<PathBuf>,
    /// The live source a permitted peer may ask for (`tryst terminal
    /// --live-from`); `None` answers a live request "no such file".
    pub live: Option<LiveSource>,
    /// The most bytes a second a shared file is sent at (`tryst terminal
    /// --limit-rate`), so that fetches leave room on the uplink; `None`:
    /// as fast as the path takes.
    pub share_rate: Option<u64>,
    /// The peer sessions' configuration.
    pub peer: PeerConfig,
    /// The local address of its stream to the session server (any port);
    /// `None` lets the system choose.
    pub control_local: Option<std::net::IpAddr>,
    /// The other session servers' control addresses, in the order of the
    /// configuration's `failover_server_keys` (the first server is the
    /// address the terminal is started with).
    pub failover_servers: Vec<SocketAddr>,
}

/// What happened, for the app.
#[derive(Debug)]
pub enum Event {
    /// The terminal's event (registration, sessions, permissions...).
    Terminal(TerminalEvent),
    /// A peer session's event (connected, stream acknowledged, ended...).
    Peer {
        /// The session.
        session_id: SessionId,
        /// What happened.
        event: PeerEvent,
    },
    /// How a file this terminal sends is going (every [`PROGRESS_INTERVAL`]).
    Sending {
        /// The session.
        session_id: SessionId,
        /// File bytes the peer acknowledged.
        acked: u64,
        /// The file's size.
        size: u64,
    },
    /// How a file sent to this terminal is going (every [`PROGRESS_INTERVAL`]).
    Receiving {
        /// The session.
        session_id: SessionId,
        /// The file's name as sent.
        name: String,
        /// File bytes stored and hashed.
        done: u64,
        /// The file's size.
        size: u64,
    },
    /// The peer's share message on a session this terminal asked for: a
    /// listing, "no such file", or the name a sent file was stored under.
    Answer {
        /// The session.
        session_id: SessionId,
        /// What the peer said.
        answer: ShareAnswer,
    },
    /// A real-time datagram of the peer, on a session whose live stream
    /// this terminal asked for (the sharer's side counts and drops them).
    Datagram {
        /// The session.
        session_id: SessionId,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// The receiver of a file this terminal sends already held part of it
    /// (a cut transfer's partial file): the send starts at `offset`.
    Resumed {
        /// The session.
        session_id: SessionId,
        /// The file offset the bytes start at (what the receiver held).
        offset: u64,
        /// The file's size.
        size: u64,
    },
    /// A file sent to this terminal was stored with a matching SHA-256, or
    /// refused (nothing kept).
    Received {
        /// The session.
        session_id: SessionId,
        /// What was stored, or why nothing was.
        outcome: Result<ReceivedFile, String>,
    },
}

/// A peer's answer on the share protocol (`tryst_core::peer::share`), owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareAnswer {
    /// The peer's shared files.
    Listing(Vec<SharedFile>),
    /// The one answer for a file the peer does not share.
    NoSuchFile,
    /// The file this terminal sent was stored under this path (relative to
    /// the peer's receive folder).
    Stored(String),
    /// The file this terminal sent was not kept, and why.
    NotKept(NotKeptReason),
}

/// A file stored in the receive directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedFile {
    /// Where.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its SHA-256, which matched the sender's.
    pub digest: [u8; 32],
    /// The file offset this transfer started at: what this side already
    /// held of it from a cut one (0: the whole file crossed).
    pub resumed_from: u64,
}

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
        reply: Answer<u32, TerminalError>,
    },
    /// Report a session's transfer to the terminal directly (for sessions
    /// whose payload does not go through the peer channel).
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
    /// End a session's terminal side now and send the end notification
    /// with the last reported counts (S1508, 814/815); the peer session,
    /// if any, closes with it.
    Finish {
        /// The session.
        session_id: SessionId,
        /// Why.
        reason: EndReason,
        /// Whether the session was known.
        reply: Answer<(), TerminalError>,
    },
    /// Close a session through its peer channel (CLOSE to the peer, then
    /// the end notification with the channel's byte counts).
    Close {
        /// The session.
        session_id: SessionId,
        /// Why.
        reason: EndReason,
    },
    /// Send a file on a session's stream, optionally at most `rate` bytes a second.
    Send {
        /// The session.
        session_id: SessionId,
        /// The file.
        source: Box<FileSource>,
        /// Bytes per second; `None` as fast as the path allows.
        rate: Option<u64>,
        /// Whether the session runs.
        reply: Answer<(), TerminalError>,
    },
    /// Send a share message (a list or get request, encoded by the core's
    /// `ShareMessage`) as a session's whole stream.
    Request {
        /// The session.
        session_id: SessionId,
        /// The encoded message.
        message: Vec<u8>,
        /// Where a file the peer sends back is stored, instead of the
        /// terminal's own receive folder (a `tryst connect --recv-dir`
        /// served by a daemon through its control socket).
        recv_dir: Option<PathBuf>,
        /// Whether the session runs.
        reply: Answer<(), TerminalError>,
    },
    /// Send one real-time datagram on a session (never retransmitted; one
    /// that cannot go is dropped and counted in the path's statistics).
    Datagram {
        /// The session.
        session_id: SessionId,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// Ping a session's peer over its direct path; the answer comes as
    /// [`PeerEvent::Pong`] or [`PeerEvent::PingLost`] with the ping's id.
    Ping {
        /// The session.
        session_id: SessionId,
        /// How long the answer may take before the ping counts as lost.
        timeout: Duration,
        /// The ping's id, or why it was not sent.
        reply: Answer<u32, TerminalError>,
    },
    /// Replace the permission list L; it applies to the next request.
    SetPermissions {
        /// The whole new list.
        names: Vec<String>,
        /// Whether the list was taken (on error it is unchanged).
        reply: Answer<(), TerminalError>,
    },
    /// The app's verdict on a permission inquiry (judge policy `Ask`).
    Answer {
        /// The inquiry.
        query_id: u32,
        /// Yes or no.
        verdict: Verdict,
        /// Whether the inquiry was still waiting.
        reply: Answer<(), TerminalError>,
    },
    /// The registration's device ID and UDP key (`tryst netcheck`), if registered.
    UdpCredentials {
        /// The answer.
        reply: Answer<Option<(tryst_core::wire::DeviceId, tryst_core::wire::UdpKey)>>,
    },
    /// Stop: send what is queued (end notifications), close the stream to
    /// the session server, and end the loop.
    Shutdown {
        /// Longest to wait for the queued records to leave.
        grace: Duration,
        /// Answered when the loop has stopped.
        reply: Answer<()>,
    },
}

/// Why a terminal's command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TerminalError {
    /// The terminal's loop stopped (before it answered).
    #[error("the terminal's event loop stopped")]
    Stopped,
    /// The connection request was not sent.
    #[error("request not sent: {0}")]
    Connect(ConnectError),
    /// No session has that ID.
    #[error("no such session")]
    NoSuchSession,
    /// The session a file was to go on is not running.
    #[error("the session is not running")]
    NotRunning,
    /// The permission list was refused (it is unchanged).
    #[error("permission list refused: {0}")]
    Permissions(PermissionError),
    /// The inquiry answered is not waiting.
    #[error("{0}")]
    Query(UnknownQuery),
    /// The ping was not sent (the direct path is not up, or too many pings
    /// wait for their answer).
    #[error("ping not sent: {0}")]
    Ping(PingError),
}

impl From<RoleStopped> for TerminalError {
    fn from(_: RoleStopped) -> Self {
        TerminalError::Stopped
    }
}

/// A running terminal. Each method returns a [`Reply`] at once: `.await`
/// it (async) or `.wait()` on it (blocking).
#[derive(Debug, Clone)]
pub struct TerminalHandle {
    /// Its UDP socket's local address (keepalives and the peer path).
    pub udp_addr: SocketAddr,
    /// Its loop's commands.
    pub commands: Commands<TerminalCommand>,
}

impl TerminalHandle {
    /// Asks for `target`; the answer is the request ID, and the outcome
    /// comes as an event with it.
    pub fn connect(&self, target: &str, duration_secs: u32) -> Reply<u32, TerminalError> {
        let target = target.to_owned();
        self.commands.request(|reply| TerminalCommand::Connect {
            target,
            duration_secs,
            reply,
        })
    }

    /// Reports a session's transfer to the terminal directly; the reply
    /// says it was queued.
    pub fn progress(
        &self,
        session_id: SessionId,
        bytes_sent: u64,
        bytes_received: u64,
        active: bool,
    ) -> Reply<(), TerminalError> {
        self.commands.tell(TerminalCommand::Progress {
            session_id,
            bytes_sent,
            bytes_received,
            active,
        })
    }

    /// Ends a session's terminal side now (and its peer session with it).
    pub fn finish(&self, session_id: SessionId, reason: EndReason) -> Reply<(), TerminalError> {
        self.commands.request(|reply| TerminalCommand::Finish {
            session_id,
            reason,
            reply,
        })
    }

    /// Closes a session through its peer channel; the reply says it was
    /// queued.
    pub fn close(&self, session_id: SessionId, reason: EndReason) -> Reply<(), TerminalError> {
        self.commands
            .tell(TerminalCommand::Close { session_id, reason })
    }

    /// Sends a file on a session's stream, at most `rate` bytes a second.
    pub fn send_file(
        &self,
        session_id: SessionId,
        source: FileSource,
        rate: Option<u64>,
    ) -> Reply<(), TerminalError> {
        let source = Box::new(source);
        self.commands.request(|reply| TerminalCommand::Send {
            session_id,
            source,
            rate,
            reply,
        })
    }

    /// Sends a share request on a session's stream; the peer's answer
    /// comes as [`Event::Answer`] (or, for a file, as [`Event::Received`]).
    pub fn request(
        &self,
        session_id: SessionId,
        message: &ShareMessage<'_>,
    ) -> Reply<(), TerminalError> {
        let mut bytes = vec![0u8; tryst_core::peer::share::MAX_SHARE_MESSAGE_LEN];
        let message = match message.encode(&mut bytes) {
            Ok(n) => {
                bytes.truncate(n);
                bytes
            }
            Err(_) => Vec::new(),
        };
        self.request_bytes(session_id, message, None)
    }

    /// Sends an encoded share request on a session's stream, a file the
    /// peer sends back stored in `recv_dir` (the terminal's own receive
    /// folder when `None`), checked as every received file is.
    pub fn request_bytes(
        &self,
        session_id: SessionId,
        message: Vec<u8>,
        recv_dir: Option<PathBuf>,
    ) -> Reply<(), TerminalError> {
        self.commands.request(|reply| TerminalCommand::Request {
            session_id,
            message,
            recv_dir,
            reply,
        })
    }

    /// Sends one real-time datagram on a session; the reply says it was
    /// queued for the loop (whether it left is the path's business).
    pub fn datagram(&self, session_id: SessionId, data: Vec<u8>) -> Reply<(), TerminalError> {
        self.commands
            .tell(TerminalCommand::Datagram { session_id, data })
    }

    /// Pings a session's peer over its direct path: the ping's id; its
    /// answer comes as [`Event::Peer`] with [`PeerEvent::Pong`] (the round
    /// trip) or [`PeerEvent::PingLost`] (none within `timeout`).
    pub fn ping(&self, session_id: SessionId, timeout: Duration) -> Reply<u32, TerminalError> {
        self.commands.request(|reply| TerminalCommand::Ping {
            session_id,
            timeout,
            reply,
        })
    }

    /// Replaces the permission list; it applies to the next request.
    pub fn set_permissions(&self, names: Vec<String>) -> Reply<(), TerminalError> {
        self.commands
            .request(|reply| TerminalCommand::SetPermissions { names, reply })
    }

    /// Answers a permission inquiry.
    pub fn answer(&self, query_id: u32, verdict: Verdict) -> Reply<(), TerminalError> {
        self.commands.request(|reply| TerminalCommand::Answer {
            query_id,
            verdict,
            reply,
        })
    }

    /// The registration's device ID and UDP key, for `tryst netcheck`'s
    /// tagged probes (`None` while not registered).
    pub fn udp_credentials(
        &self,
    ) -> Reply<Option<(tryst_core::wire::DeviceId, tryst_core::wire::UdpKey)>> {
        self.commands
            .request(|reply| TerminalCommand::UdpCredentials { reply })
    }

    /// Stops the terminal after its queued messages (end notifications)
    /// left, waiting at most `grace` for them; answered once the loop
    /// stopped (`RoleStopped` if it had stopped already).
    pub fn shutdown(&self, grace: Duration) -> Reply<()> {
        self.commands
            .request(|reply| TerminalCommand::Shutdown { grace, reply })
    }
}

/// One session's payloads: the file or share message it sends and what it
/// receives (each the core's machine with its files, `tryst_std::transfer`).
struct Payload {
    /// Which side of the session this terminal is.
    role: Role,
    outgoing: Option<FileSource>,
    /// The share messages this side sends as its stream, back to back.
    outbox: Outbox,
    incoming: Incoming,
    /// The peer's share message was acted on.
    answered: bool,
    /// Stream offset of the peer's next share message (past the `Resume`
    /// offers taken).
    consumed: usize,
    /// The peer's public key (a resumable file from it is matched by it).
    peer_key: [u8; 32],
    /// Close with this reason once the peer acknowledged the stream (the
    /// stored name's receipt, `Completed`, or why the file was not kept,
    /// `Failed`, arrived).
    close_on_ack: Option<EndReason>,
    /// The transfer ended the session (and its outcome was reported).
    reported: bool,
    /// This terminal asked for the peer's live stream: its datagrams go to
    /// the app.
    live_wanted: bool,
    /// The live source running for the peer.
    live: Option<LiveChild>,
    /// Datagrams of the peer this terminal threw away (none asked for).
    datagrams_ignored: u64,
    /// Live frames the session refused (closing, or larger than the path).
    live_refused: u64,
}

/// Share messages a session's stream carries, back to back: one request or
/// answer, or a receiver's `Resume` offer and then its `Stored` receipt.
#[derive(Default)]
struct Outbox {
    /// Every message so far.
    bytes: Vec<u8>,
    /// Bytes told to the endpoint.
    told: usize,
    /// No message follows the last one.
    done: bool,
    /// The stream's end was told.
    done_told: bool,
}

impl Outbox {
    /// Adds a message; `last`: none follows it.
    fn send(&mut self, message: &[u8], last: bool) {
        if !self.done {
            self.bytes.extend_from_slice(message);
            self.done = last;
        }
    }

    /// Whether it carries anything.
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Every session's payloads, as the endpoint reads and writes them.
struct Payloads {
    recv_dir: Option<PathBuf>,
    partial_limits: PartialLimits,
    share: Option<Share>,
    share_rate: Option<u64>,
    live: Option<LiveSource>,
    events: flume::Sender<Event>,
    sessions: BTreeMap<[u8; 16], Payload>,
}

impl SessionIo for Payloads {
    fn read_at(&mut self, session: &SessionId, offset: u64, buf: &mut [u8]) -> usize {
        let Some(payload) = self.sessions.get_mut(&session.0) else {
            return 0;
        };
        if let Some(source) = payload.outgoing.as_mut() {
            return source.read_at(offset, buf);
        }
        if payload.outbox.is_empty() {
            return 0;
        }
        let Some(rest) = usize::try_from(offset)
            .ok()
            .and_then(|at| payload.outbox.bytes.get(at..))
        else {
            return 0;
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        n
    }

    fn stream_data(&mut self, session: &SessionId, offset: u64, data: &[u8]) {
        if let Some(payload) = self.sessions.get_mut(&session.0) {
            payload.incoming.stream_data(offset, data);
        }
    }

    fn datagram(&mut self, session: &SessionId, data: &[u8]) {
        let Some(payload) = self.sessions.get_mut(&session.0) else {
            return;
        };
        if payload.live_wanted {
            let _ = self.events.send(Event::Datagram {
                session_id: *session,
                data: data.to_vec(),
            });
        } else {
            payload.datagrams_ignored += 1;
        }
    }
}

/// The terminal as the loop runs it: the endpoint, its payloads (the
/// files of each session), and where the app's events go.
pub struct TerminalRole {
    /// Boxed: the endpoint holds every session's state inline (hundreds of KiB).
    endpoint: Box<Endpoint<OsRng>>,
    payloads: Payloads,
    events: flume::Sender<Event>,
    next_progress: std::time::Instant,
    /// Notified by the files' hasher threads when a digest is ready.
    hashed: Wake,
    /// Answered once the loop stopped on a shutdown command.
    shutdown: Option<Answer<()>>,
}

impl std::fmt::Debug for TerminalRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalRole")
            .field("sessions", &self.payloads.sessions.len())
            .finish_non_exhaustive()
    }
}

impl TerminalRole {
    /// A terminal with this identity and permission list, its endpoint
    /// (boxed) started at `now`: it registers at once. Its events go to
    /// `events`; `wake` is what a file's hasher thread calls when its digest
    /// is ready (the loop then runs [`Driven::after_drain`]). Only
    /// `recv_dir` and `peer` of `options` are the role's (the driver binds
    /// `control_local`).
    pub fn new(
        config: TerminalConfig,
        keypair: StaticKeypair,
        permissions: &[&str],
        options: &TerminalOptions,
        events: flume::Sender<Event>,
        wake: Wake,
        now: Instant,
    ) -> Result<TerminalRole, PermissionError> {
        let mut endpoint = Box::new(Endpoint::new(
            config,
            keypair,
            OsRng,
            OsRng,
            options.peer.clone(),
        ));
        endpoint.set_permissions(permissions)?;
        endpoint.start(now);
        Ok(TerminalRole {
            endpoint,
            payloads: Payloads {
                recv_dir: options.recv_dir.clone(),
                partial_limits: options.partial_limits,
                share: options
                    .share
                    .as_deref()
                    .and_then(|dir| match Share::open(dir) {
                        Ok(share) => Some(share),
                        Err(e) => {
                            tracing::warn!(error = %e, "sharing nothing");
                            None
                        }
                    }),
                live: options.live.clone(),
                share_rate: options.share_rate,
                events: events.clone(),
                sessions: BTreeMap::new(),
            },
            events,
            next_progress: std::time::Instant::now(),
            hashed: wake,
            shutdown: None,
        })
    }
}

impl Driven for TerminalRole {
    type Machine = Endpoint<OsRng>;
    type Command = TerminalCommand;

    fn parts(&mut self) -> (&mut Endpoint<OsRng>, &mut IoOf<Self>) {
        (&mut self.endpoint, &mut self.payloads)
    }

    fn on_command(&mut self, now: Instant, command: TerminalCommand) -> Flow {
        match command {
            TerminalCommand::Shutdown { grace, reply } => {
                self.shutdown = Some(reply);
                Flow::Stop { grace }
            }
            command => {
                self.apply(now, command);
                Flow::Continue
            }
        }
    }

    fn on_event(&mut self, now: Instant, event: EndpointEvent) {
        TerminalRole::on_event(self, now, event);
    }

    fn after_drain(&mut self, now: Instant) -> bool {
        let live = self.pump_live(now);
        let fed = self.feed_outgoing(now) || live;
        let closed = self.check_payloads(now);
        self.report_progress();
        fed || closed
    }

    fn app_deadline(&self) -> Option<Instant> {
        self.payload_timeout()
    }

    fn on_stopped(&mut self, _why: &Stopped) {
        if let Some(reply) = self.shutdown.take() {
            let _ = reply.send(Ok(()));
        }
    }
}

impl TerminalRole {
    /// An app command other than shutdown.
    fn apply(&mut self, now: Instant, command: TerminalCommand) {
        match command {
            TerminalCommand::Connect {
                target,
                duration_secs,
                reply,
            } => {
                let result = self.endpoint.connect(now, &target, duration_secs);
                let _ = reply.send(result.map_err(TerminalError::Connect));
            }
            TerminalCommand::Progress {
                session_id,
                bytes_sent,
                bytes_received,
                active,
            } => {
                let _ = self.endpoint.transfer_progress(
                    &session_id,
                    bytes_sent,
                    bytes_received,
                    active,
                );
            }
            TerminalCommand::Finish {
                session_id,
                reason,
                reply,
            } => {
                let result = self.endpoint.end_session(now, &session_id, reason);
                let _ = reply.send(result.map_err(|UnknownSession| TerminalError::NoSuchSession));
            }
            TerminalCommand::Close { session_id, reason } => {
                let _ = self.endpoint.end_session(now, &session_id, reason);
            }
            TerminalCommand::Send {
                session_id,
                source,
                rate,
                reply,
            } => {
                let result = self.start_send(now, session_id, *source, rate);
                let _ = reply.send(result.map_err(|UnknownSession| TerminalError::NotRunning));
            }
            TerminalCommand::Request {
                session_id,
                message,
                recv_dir,
                reply,
            } => {
                let wake = self.hash_wake();
                let result = match self.payloads.sessions.get_mut(&session_id.0) {
                    Some(payload) if self.endpoint.session(&session_id).is_some() => {
                        // A fetch (a receive dir) keeps this side's stream
                        // open after its Get: the file may come resumable,
                        // and the `Resume` offer goes on it.
                        let fetch = matches!(
                            ShareMessage::decode(&message),
                            Ok(Some((ShareMessage::Get(_), _)))
                        );
                        if let Some(dir) = recv_dir {
                            // Nothing was received yet: the request goes first.
                            payload.incoming = Incoming::new(Some(&dir), wake);
                            payload.incoming.set_peer(payload.peer_key);
                            payload.incoming.set_limits(self.payloads.partial_limits);
                        }
                        if message == tryst_core::peer::share::vectors::LIVE {
                            // The app plays the stream for as long as it
                            // runs: the session is in use (S1504).
                            payload.live_wanted = true;
                            let _ = self.endpoint.hold_open(&session_id, true);
                        }
                        payload.outbox.send(&message, !fetch);
                        Ok(())
                    }
                    _ => Err(TerminalError::NotRunning),
                };
                self.feed_outgoing(now);
                let _ = reply.send(result);
            }
            TerminalCommand::Datagram { session_id, data } => {
                // A refused one (not connected, too large) is counted by
                // nobody but the app's own loss: real-time data is not retried.
                if let Ok(Err(e)) = self.endpoint.send_datagram(&session_id, &data) {
                    tracing::trace!(session = %short_session_id(&session_id), error = %e, "datagram not sent");
                }
            }
            TerminalCommand::Ping {
                session_id,
                timeout,
                reply,
            } => {
                let result = match self.endpoint.ping(now, &session_id, timeout) {
                    Ok(Ok(id)) => Ok(id),
                    Ok(Err(e)) => Err(TerminalError::Ping(e)),
                    Err(UnknownSession) => Err(TerminalError::NoSuchSession),
                };
                let _ = reply.send(result);
            }
            TerminalCommand::SetPermissions { names, reply } => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let result = self.endpoint.set_permissions(&names);
                if result.is_ok() {
                    tracing::info!(count = names.len(), "permission list updated");
                }
                let _ = reply.send(result.map_err(TerminalError::Permissions));
            }
            TerminalCommand::Answer {
                query_id,
                verdict,
                reply,
            } => {
                let result = self.endpoint.answer(now, query_id, verdict);
                let _ = reply.send(result.map_err(TerminalError::Query));
            }
            TerminalCommand::UdpCredentials { reply } => {
                let _ = reply.send(Ok(self.endpoint.terminal().udp_credentials()));
            }
            // `on_command` takes it before it gets here.
            TerminalCommand::Shutdown { reply, .. } => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Puts a file on a session's stream: all of it at once, or (throttled)
    /// a growing prefix once the data channel is up.
    fn start_send(
        &mut self,
        now: Instant,
        session_id: SessionId,
        source: FileSource,
        rate: Option<u64>,
    ) -> Result<(), UnknownSession> {
        let Some(session) = self.endpoint.session(&session_id) else {
            return Err(UnknownSession);
        };
        let connected = session.is_connected();
        let mut source = source;
        source.set_rate(rate);
        if connected {
            source.start(now);
        }
        source.set_wake(self.hash_wake());
        let Some(payload) = self.payloads.sessions.get_mut(&session_id.0) else {
            return Err(UnknownSession);
        };
        payload.outgoing = Some(source);
        // The header and the file at once (unthrottled); the trailer when
        // the hash is ready.
        self.feed_outgoing(now);
        Ok(())
    }

    /// What a file's hasher thread calls when its digest is ready.
    fn hash_wake(&self) -> Wake {
        std::sync::Arc::clone(&self.hashed)
    }

    /// When the first throttled send next needs the clock (its machine says).
    fn payload_timeout(&self) -> Option<tryst_core::time::Instant> {
        self.payloads
            .sessions
            .values()
            .filter_map(|p| p.outgoing.as_ref())
            .filter_map(FileSource::poll_timeout)
            .min()
    }

    /// Tells each session what its file's machine makes available: all
    /// that is readable (the trailer once the hash is ready), or at its
    /// rate when throttled. Whether it told the endpoint anything (or a
    /// file could not be hashed: [`TerminalRole::check_payloads`] closes it).
    fn feed_outgoing(&mut self, now: Instant) -> bool {
        let mut any = false;
        for (id, payload) in &mut self.payloads.sessions {
            let id = SessionId(*id);
            if self.endpoint.session(&id).is_none() {
                continue;
            }
            let outbox = &mut payload.outbox;
            if outbox.bytes.len() > outbox.told || (outbox.done && !outbox.done_told) {
                any = true;
                outbox.told = outbox.bytes.len();
                let len = outbox.told as u64;
                if outbox.done {
                    outbox.done_told = true;
                    let _ = self.endpoint.stream_finish(&id, len);
                } else {
                    let _ = self.endpoint.stream_extend(&id, len);
                }
            }
            let Some(source) = payload.outgoing.as_mut() else {
                continue;
            };
            while let Some(step) = source.poll(now) {
                any = true;
                match step {
                    SendStep::Extend(available) => {
                        let _ = self.endpoint.stream_extend(&id, available);
                    }
                    // A fresh stream: its length is always acceptable.
                    SendStep::Finish(total) => {
                        let _ = self.endpoint.stream_finish(&id, total);
                    }
                    SendStep::Fail(why) => {
                        tracing::warn!(session = %short_session_id(&id), error = %why, "file not sent");
                    }
                }
            }
        }
        any
    }

    fn on_event(&mut self, now: Instant, event: EndpointEvent) {
        match event {
            EndpointEvent::Terminal(event) => {
                log_event(&event);
                match &event {
                    TerminalEvent::SessionReady {
                        session_id,
                        role,
                        peer_key,
                        ..
                    } => {
                        let mut incoming =
                            Incoming::new(self.payloads.recv_dir.as_deref(), self.hash_wake());
                        incoming.set_peer(peer_key.0);
                        incoming.set_limits(self.payloads.partial_limits);
                        self.payloads.sessions.insert(
                            session_id.0,
                            Payload {
                                role: *role,
                                outgoing: None,
                                outbox: Outbox::default(),
                                incoming,
                                peer_key: peer_key.0,
                                answered: false,
                                consumed: 0,
                                close_on_ack: None,
                                reported: false,
                                live_wanted: false,
                                live: None,
                                datagrams_ignored: 0,
                                live_refused: 0,
                            },
                        );
                    }
                    TerminalEvent::SessionEnded { session_id, .. } => {
                        if self.endpoint.session(session_id).is_none() {
                            self.end_payload(session_id, "the session ended");
                        } else {
                            // The direct path closes a moment later: a
                            // cut file is settled now, so that a resend
                            // in between finds its partial.
                            self.cut_payload(session_id, "the session ended");
                        }
                    }
                    _ => {}
                }
                let _ = self.events.send(Event::Terminal(event));
            }
            EndpointEvent::Peer { session_id, event } => {
                log_peer_event(&session_id, &event);
                if matches!(
                    event,
                    PeerEvent::Ended { .. }
                        | PeerEvent::StreamAcked { .. }
                        | PeerEvent::StreamReceived { .. }
                ) {
                    if let Some(stats) = self
                        .endpoint
                        .session(&session_id)
                        .and_then(|s| s.transport_stats())
                    {
                        log_path_stats(&session_id, stats);
                    }
                }
                match event {
                    PeerEvent::Connected { .. } => {
                        if let Some(source) = self
                            .payloads
                            .sessions
                            .get_mut(&session_id.0)
                            .and_then(|p| p.outgoing.as_mut())
                        {
                            source.start(now);
                        }
                    }
                    PeerEvent::StreamAcked { .. } => {
                        let close = self
                            .payloads
                            .sessions
                            .get(&session_id.0)
                            .and_then(|p| p.close_on_ack);
                        if let Some(reason) = close {
                            let _ = self.endpoint.end_session(now, &session_id, reason);
                        }
                    }
                    PeerEvent::Ended { reason, .. } => {
                        self.end_payload(&session_id, &format!("the session ended ({reason:?})"));
                    }
                    _ => {}
                }
                let _ = self.events.send(Event::Peer { session_id, event });
            }
        }
    }

    /// A session ended while its direct path is still closing: a file still
    /// arriving is cut now (a resumable one keeps its partial and record at
    /// once); one whose every byte is in and being checked is left to
    /// finish.
    fn cut_payload(&mut self, session_id: &SessionId, why: &str) {
        let Some(payload) = self.payloads.sessions.get_mut(&session_id.0) else {
            return;
        };
        if payload.reported {
            return;
        }
        let Some(sink) = payload.incoming.sink_mut() else {
            return;
        };
        if sink.receiver().phase() != tryst_core::peer::transfer::ReceivePhase::Receiving {
            return;
        }
        sink.abort();
        payload.reported = true;
        let _ = self.events.send(Event::Received {
            session_id: *session_id,
            outcome: Err(format!("transfer cut: {why}")),
        });
    }

    /// A session is over: an unfinished incoming file is thrown away.
    fn end_payload(&mut self, session_id: &SessionId, why: &str) {
        let Some(mut payload) = self.payloads.sessions.remove(&session_id.0) else {
            return;
        };
        if let Some(live) = payload.live.take() {
            tracing::info!(
                session = %short_session_id(session_id),
                dropped_before_sending = live.dropped(),
                refused = payload.live_refused,
                "live source stopped"
            );
        }
        if payload.datagrams_ignored > 0 {
            tracing::info!(
                session = %short_session_id(session_id),
                datagrams = payload.datagrams_ignored,
                "peer datagrams ignored (this terminal plays none)"
            );
        }
        if let Some(sink) = payload.incoming.sink_mut() {
            if !payload.reported && sink.file_size().is_some() {
                sink.abort();
                let _ = self.events.send(Event::Received {
                    session_id: *session_id,
                    outcome: Err(format!("transfer cut: {why}")),
                });
            }
        }
    }

    /// Closes the sessions whose transfer ended them, as the core's
    /// [`session_end`] says: the receiver `Completed` once the file is
    /// stored and checked (the sender learns it from the close), `Failed`
    /// otherwise; `Failed` for a peer that sends to a terminal taking no
    /// files, and for a file that could not be hashed. Reports received
    /// files. Whether any session was closed.
    fn check_payloads(&mut self, now: Instant) -> bool {
        let mut closes = Vec::new();
        let mut answers = Vec::new();
        for (id, payload) in &mut self.payloads.sessions {
            let session_id = SessionId(*id);
            if payload.reported {
                continue;
            }
            // A receiver's offers: where the file this side sends starts.
            while let Some(Ok((ShareMessage::Resume(offset), end))) =
                payload.incoming.message_at(payload.consumed)
            {
                let Some(source) = payload
                    .outgoing
                    .as_mut()
                    .filter(|s| s.sender().awaiting_offer())
                else {
                    break;
                };
                payload.consumed = end;
                if let Some(offset) = source.resume_at(offset) {
                    if offset > 0 {
                        tracing::info!(session = %short_session_id(&session_id), offset, "the receiver holds part of the file: resuming");
                    }
                    let size = source.file_size();
                    let _ = self.events.send(Event::Resumed {
                        session_id,
                        offset,
                        size,
                    });
                }
            }
            if !payload.answered {
                let next = payload.incoming.message_at(payload.consumed).map(|r| {
                    r.map(|(m, end)| {
                        // What follows the request (a fetch's `Resume`) is read from here.
                        payload.consumed = end;
                        m
                    })
                });
                if let Some(message) = next {
                    payload.answered = true;
                    match on_share_message(
                        payload.role,
                        message,
                        self.payloads.share.as_ref(),
                        self.payloads.live.as_ref(),
                    ) {
                        ShareStep::Reply(bytes) => payload.outbox.send(&bytes, true),
                        ShareStep::SendFile(source) => answers.push((session_id, source)),
                        ShareStep::Live(source) => {
                            match LiveChild::spawn(&source, std::sync::Arc::clone(&self.hashed)) {
                                Ok(child) => {
                                    tracing::info!(session = %short_session_id(&session_id), "live stream started");
                                    payload.live = Some(child);
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "live source did not start");
                                    payload.reported = true;
                                    closes.push((session_id, EndReason::Failed));
                                }
                            }
                        }
                        ShareStep::Answer(answer) => {
                            let _ = self.events.send(Event::Answer { session_id, answer });
                            if payload.outgoing.is_none() {
                                payload.reported = true;
                                closes.push((session_id, EndReason::Completed));
                            }
                        }
                        ShareStep::Refuse => {
                            payload.reported = true;
                            closes.push((session_id, EndReason::Failed));
                        }
                    }
                    continue;
                }
            }
            if let Some(sink) = payload.incoming.sink_mut() {
                sink.poll();
                // A resumable file: tell the sender where its bytes start.
                if let Some(offset) = sink.take_offer() {
                    let mut bytes = [0u8; tryst_core::peer::share::SHARE_HEADER_LEN + 8];
                    if payload.outbox.done {
                        // This side's stream already ended (a request): no
                        // word can reach the sender.
                        sink.abort();
                    } else if let Ok(n) = ShareMessage::Resume(offset).encode(&mut bytes) {
                        // The connected side's receipt follows it.
                        payload
                            .outbox
                            .send(&bytes[..n], payload.role == Role::Connecting);
                    }
                }
            }
            let Some(reason) = session_end(
                payload.outgoing.as_ref().map(FileSource::sender),
                payload.incoming.sink().map(FileSink::receiver),
                payload.incoming.is_stray(),
            ) else {
                continue;
            };
            payload.reported = true;
            let Some(sink) = payload.incoming.sink() else {
                if payload.incoming.is_stray() {
                    tracing::info!(session = %short_session_id(&session_id), "peer sent a file; this terminal takes none");
                    if tell_not_kept(payload, NotKeptReason::TakesNoFiles) {
                        continue;
                    }
                }
                closes.push((session_id, reason));
                continue;
            };
            let outcome = match sink.state() {
                ReceiveState::Complete { path, digest, size } => Ok(ReceivedFile {
                    path: path.clone(),
                    size: *size,
                    digest: *digest,
                    resumed_from: sink.resumed_from(),
                }),
                _ => Err(sink
                    .failure_text()
                    .unwrap_or_else(|| "the transfer failed".to_owned())),
            };
            match &outcome {
                Ok(file) => {
                    tracing::info!(
                        session = %short_session_id(&session_id),
                        path = %file.path.display(),
                        size = file.size,
                        "file received, checksum verified"
                    );
                    // The sender is told the name it was stored under; the
                    // session closes once that receipt is acknowledged.
                    let stored = self
                        .payloads
                        .recv_dir
                        .as_deref()
                        .and_then(|dir| file.path.strip_prefix(dir).ok())
                        .and_then(|p| p.to_str())
                        .map(str::to_owned);
                    match stored {
                        Some(name) if payload.role == Role::Connected => {
                            let mut bytes = vec![0u8; 8 + name.len()];
                            match ShareMessage::Stored(&name).encode(&mut bytes) {
                                Ok(_) => {
                                    payload.outbox.send(&bytes, true);
                                    payload.close_on_ack = Some(EndReason::Completed);
                                }
                                Err(_) => closes.push((session_id, reason)),
                            }
                        }
                        _ => closes.push((session_id, reason)),
                    }
                }
                Err(why) => {
                    tracing::warn!(
                        session = %short_session_id(&session_id),
                        error = %why,
                        "file refused"
                    );
                    // The sender is told why, then the session closes.
                    let told = match sink.state() {
                        ReceiveState::Failed(failure) => {
                            NotKeptReason::of(failure).is_some_and(|r| tell_not_kept(payload, r))
                        }
                        _ => false,
                    };
                    if !told {
                        closes.push((session_id, reason));
                    }
                }
            }
            let _ = self.events.send(Event::Received {
                session_id,
                outcome,
            });
        }
        let any = !closes.is_empty() || !answers.is_empty();
        for (id, reason) in closes {
            let _ = self.endpoint.end_session(now, &id, reason);
        }
        let rate = self.payloads.share_rate;
        for (id, source) in answers {
            let _ = self.start_send(now, id, *source, rate);
        }
        self.feed_outgoing(now) || any
    }

    /// Sends what each live source produced, one datagram a frame (one
    /// the path cannot take now is dropped and counted by the transport);
    /// closes `Completed` a session whose source ended. Whether anything
    /// was sent or closed.
    fn pump_live(&mut self, now: Instant) -> bool {
        let mut any = false;
        let mut ended = Vec::new();
        for (id, payload) in &mut self.payloads.sessions {
            let Some(live) = payload.live.as_ref() else {
                continue;
            };
            let id = SessionId(*id);
            while let Some(chunk) = live.next() {
                any = true;
                match chunk {
                    LiveChunk::Frame(frame) => {
                        if !matches!(self.endpoint.send_datagram(&id, &frame), Ok(Ok(()))) {
                            payload.live_refused += 1;
                        }
                    }
                    LiveChunk::End => {
                        ended.push(id);
                        break;
                    }
                }
            }
        }
        for id in ended {
            tracing::info!(session = %short_session_id(&id), "live source ended");
            if let Some(payload) = self.payloads.sessions.get_mut(&id.0) {
                payload.live = None;
                payload.reported = true;
            }
            let _ = self.endpoint.end_session(now, &id, EndReason::Completed);
        }
        any
    }

    /// Progress of every transfer, at most every [`PROGRESS_INTERVAL`].
    fn report_progress(&mut self) {
        let now = std::time::Instant::now();
        if now < self.next_progress {
            return;
        }
        self.next_progress = now + PROGRESS_INTERVAL;
        for (id, payload) in &self.payloads.sessions {
            let session_id = SessionId(*id);
            if let Some(source) = &payload.outgoing {
                let acked = self
                    .endpoint
                    .session(&session_id)
                    .and_then(|s| s.transport_stats())
                    .map_or(0, |s| s.stream_bytes_acked);
                let _ = self.events.send(Event::Sending {
                    session_id,
                    acked: source.file_bytes_in(acked),
                    size: source.file_size(),
                });
            }
            if let Some(sink) = payload.incoming.sink() {
                if let (ReceiveState::Receiving { name, size }, false) =
                    (sink.state(), payload.reported)
                {
                    let _ = self.events.send(Event::Receiving {
                        session_id,
                        name: name.clone(),
                        done: sink.file_bytes_done(),
                        size: *size,
                    });
                }
            }
        }
    }
}

/// What a share message asks of this terminal.
enum ShareStep {
    /// Send this message as the stream (a listing, "no such file").
    Reply(Vec<u8>),
    /// Send this shared file.
    SendFile(Box<FileSource>),
    /// Start the live source for the peer.
    Live(LiveSource),
    /// Tell the app (an answer to this terminal's own request).
    Answer(ShareAnswer),
    /// Close `Failed` (a malformed message, or one out of place).
    Refuse,
}

/// The share protocol's decisions for one message: the connected side
/// answers requests from its share (the one "no such file" for anything not
/// shared), the connecting side takes answers.
fn on_share_message(
    role: Role,
    message: Result<ShareMessage<'_>, tryst_core::peer::share::ShareError>,
    share: Option<&Share>,
    live: Option<&LiveSource>,
) -> ShareStep {
    let no_such_file = || {
        let mut bytes = vec![0u8; tryst_core::peer::share::SHARE_HEADER_LEN];
        match ShareMessage::NoSuchFile.encode(&mut bytes) {
            Ok(_) => ShareStep::Reply(bytes),
            Err(_) => ShareStep::Refuse,
        }
    };
    match (role, message) {
        (_, Err(e)) => {
            tracing::warn!(error = %e, "malformed share message");
            ShareStep::Refuse
        }
        (Role::Connected, Ok(ShareMessage::List)) => {
            tracing::info!("share listed");
            match share {
                Some(share) => ShareStep::Reply(share.listing()),
                None => ShareStep::Reply(Share::empty_listing()),
            }
        }
        (Role::Connected, Ok(ShareMessage::Get(path))) => {
            match share.and_then(|s| s.open_file(path)) {
                Some(source) => {
                    tracing::info!(%path, "shared file requested");
                    // Resumable: the requester says where its bytes start.
                    ShareStep::SendFile(Box::new(source.resumable()))
                }
                None => {
                    tracing::info!("requested file not shared: no such file");
                    no_such_file()
                }
            }
        }
        (Role::Connected, Ok(ShareMessage::Live)) => match live {
            Some(source) => {
                tracing::info!("live stream requested");
                ShareStep::Live(source.clone())
            }
            None => {
                tracing::info!("live stream requested; none here: no such file");
                no_such_file()
            }
        },
        (Role::Connecting, Ok(m @ ShareMessage::Listing(_))) => {
            ShareStep::Answer(ShareAnswer::Listing(listed_files(&m)))
        }
        (Role::Connecting, Ok(ShareMessage::NoSuchFile)) => {
            ShareStep::Answer(ShareAnswer::NoSuchFile)
        }
        (Role::Connecting, Ok(ShareMessage::Stored(name))) => {
            ShareStep::Answer(ShareAnswer::Stored(name.to_owned()))
        }
        (Role::Connecting, Ok(ShareMessage::NotKept(reason))) => {
            ShareStep::Answer(ShareAnswer::NotKept(reason))
        }
        (_, Ok(_)) => ShareStep::Refuse,
    }
}

/// Tells the sender of a file this terminal did not keep why (a
/// `NotKept` on this side's stream; the session closes once it is
/// acknowledged); `false` if it cannot be told (this side asked, or its
/// stream already ended).
fn tell_not_kept(payload: &mut Payload, reason: NotKeptReason) -> bool {
    if payload.role != Role::Connected || payload.outbox.done {
        return false;
    }
    let mut bytes = [0u8; tryst_core::peer::share::SHARE_HEADER_LEN + 1];
    match ShareMessage::NotKept(reason).encode(&mut bytes) {
        Ok(n) => {
            payload.outbox.send(&bytes[..n], true);
            payload.close_on_ack = Some(EndReason::Failed);
            true
        }
        Err(_) => false,
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

/// One log line per peer-session event, at info (progress at debug).
fn log_peer_event(id: &SessionId, event: &PeerEvent) {
    let session = short_session_id(id);
    match event {
        PeerEvent::Connected { peer_addr, relayed } => {
            tracing::info!(%session, %peer_addr, relayed, "path up (handshake done)");
        }
        PeerEvent::PathChanged { peer_addr, relayed } => {
            tracing::info!(%session, %peer_addr, relayed, "peer moved");
        }
        PeerEvent::RelayOverTcp { relay } => {
            tracing::info!(%session, %relay, "nothing heard over UDP: relay over tcp");
        }
        PeerEvent::StreamAcked { len } => {
            tracing::info!(%session, len, "everything sent was acknowledged");
        }
        PeerEvent::StreamReceived { len } => {
            tracing::info!(%session, len, "everything the peer sent arrived");
        }
        PeerEvent::StreamProgress { contiguous } => {
            tracing::trace!(%session, contiguous, "stream progress");
        }
        PeerEvent::MtuChanged { mtu } => {
            tracing::debug!(%session, mtu, "path MTU");
        }
        PeerEvent::Pong { id, rtt } => {
            tracing::debug!(%session, id, rtt_us = rtt.as_micros() as u64, "pong");
        }
        PeerEvent::PingLost { id } => {
            tracing::debug!(%session, id, "ping lost");
        }
        PeerEvent::Ended {
            reason,
            by_peer,
            bytes_sent,
            bytes_received,
        } => {
            tracing::info!(
                %session,
                ?reason,
                by_peer,
                bytes_sent,
                bytes_received,
                "direct path closed"
            );
        }
    }
}

/// How the direct path went, at debug: packets, losses, round trip, window.
fn log_path_stats(id: &SessionId, stats: &TransportStats) {
    tracing::debug!(
        session = %short_session_id(id),
        packets_sent = stats.packets_sent,
        packets_received = stats.packets_received,
        packets_lost = stats.packets_lost,
        spurious_losses = stats.spurious_losses,
        retransmitted = stats.stream_bytes_retransmitted,
        datagrams_sent = stats.datagrams_sent,
        datagrams_received = stats.datagrams_received,
        datagrams_dropped = stats.datagrams_dropped,
        congestion_events = stats.congestion_events,
        pto_fired = stats.pto_fired,
        rtt_us = u64::try_from(stats.rtt.as_micros()).unwrap_or(u64::MAX),
        min_rtt_us = u64::try_from(stats.min_rtt.as_micros()).unwrap_or(u64::MAX),
        cwnd = stats.cwnd,
        mtu = stats.mtu,
        "direct path statistics"
    );
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
        TerminalEvent::HandshakeFailed {
            attempt,
            cause,
            retry_in,
        } => {
            // Once in a series and then at every eighth: a server that is
            // down for hours must not fill the log.
            if *attempt == 1 || *attempt % 8 == 0 {
                tracing::warn!(
                    attempt,
                    ?cause,
                    retry_in_secs = retry_in.as_secs(),
                    "registration handshake with the session server failed; retrying"
                );
            }
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tryst_core::wire::PublicKey;

    /// Runs `test` on a thread with the loop's stack (the endpoint is large).
    fn on_loop_stack(test: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(LOOP_STACK)
            .spawn(test)
            .expect("thread")
            .join()
            .expect("the test passed");
    }

    fn role(events: flume::Sender<Event>, wake: Wake) -> TerminalRole {
        let config = TerminalConfig::new(
            "CAM1",
            "127.0.0.1:9".parse().expect("addr"),
            PublicKey([3; 32]),
        )
        .expect("config");
        let keypair = StaticKeypair::generate(&mut OsRng);
        let options = TerminalOptions::default();
        TerminalRole::new(
            config,
            keypair,
            &["TERM3"],
            &options,
            events,
            wake,
            Instant::from_micros(1),
        )
        .expect("a valid list")
    }

    #[test]
    fn a_bad_permission_list_refuses_the_role() {
        on_loop_stack(|| {
            let (events, _rx) = flume::unbounded();
            let config = TerminalConfig::new(
                "CAM1",
                "127.0.0.1:9".parse().expect("addr"),
                PublicKey([3; 32]),
            )
            .expect("config");
            let refused = TerminalRole::new(
                config,
                StaticKeypair::generate(&mut OsRng),
                &[""],
                &TerminalOptions::default(),
                events,
                Arc::new(|| {}),
                Instant::from_micros(1),
            );
            assert!(matches!(refused, Err(PermissionError::InvalidName(_))));
        });
    }

    #[test]
    fn commands_answer_their_replies_and_shutdown_stops_the_loop() {
        on_loop_stack(|| {
            let (events, _event_rx) = flume::unbounded();
            let woken = Arc::new(AtomicUsize::new(0));
            let count = Arc::clone(&woken);
            let mut role = role(events, Arc::new(|| {}));
            let (tx, rx) = flume::bounded(super::super::COMMAND_QUEUE);
            let handle = TerminalHandle {
                udp_addr: "127.0.0.1:1".parse().expect("addr"),
                commands: Commands::new(
                    tx,
                    Some(Arc::new(move || {
                        count.fetch_add(1, Ordering::SeqCst);
                    })),
                ),
            };
            let unknown = SessionId([7; 16]);
            // Not registered yet (nothing was sent): the request is refused.
            let connect = handle.connect("TERM1", 60);
            let finish = handle.finish(unknown, EndReason::Completed);
            let list = handle.set_permissions(vec!["TERM1".into(), "TERM3".into()]);
            let bad_list = handle.set_permissions(vec!["bad\nname".into()]);
            let answer = handle.answer(42, Verdict::Permit);
            let progress = handle.progress(unknown, 1, 2, true);
            let shutdown = handle.shutdown(Duration::from_millis(10));
            assert_eq!(woken.load(Ordering::SeqCst), 7, "one wake per command");
            let now = Instant::from_micros(2);
            let mut flows = Vec::new();
            for command in rx.try_iter() {
                flows.push(role.on_command(now, command));
            }
            assert_eq!(
                connect.wait(),
                Err(TerminalError::Connect(ConnectError::NotRegistered))
            );
            assert_eq!(finish.wait(), Err(TerminalError::NoSuchSession));
            assert_eq!(list.wait(), Ok(()));
            assert!(matches!(
                bad_list.wait(),
                Err(TerminalError::Permissions(PermissionError::InvalidName(_)))
            ));
            assert_eq!(answer.wait(), Err(TerminalError::Query(UnknownQuery)));
            assert_eq!(progress.wait(), Ok(()));
            // Shutdown stops the loop; it is answered once the loop stopped.
            assert_eq!(
                flows.last(),
                Some(&Flow::Stop {
                    grace: Duration::from_millis(10)
                })
            );
            assert!(flows[..flows.len() - 1]
                .iter()
                .all(|f| *f == Flow::Continue));
            role.on_stopped(&Stopped::Shutdown);
            assert_eq!(shutdown.wait(), Ok(()));
            // A loop that is gone answers everything with "stopped".
            drop(rx);
            assert_eq!(
                handle.connect("TERM1", 60).wait(),
                Err(TerminalError::Stopped)
            );
            assert_eq!(
                handle.close(unknown, EndReason::Cancelled).wait(),
                Err(TerminalError::Stopped)
            );
        });
    }
}
