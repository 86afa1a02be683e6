//! The control socket of a running terminal (`control.sock` in its state
//! dir), written once for both binaries: one identity, both roles at once.
//!
//! A daemon (`tryst terminal`) listens on it; `tryst allow` has it read its
//! permission list again, and `tryst connect` / `tryst ping` with the same
//! state dir have it make their requests and move their bytes on its one
//! registration (no second registration, no wait for a first keepalive).
//! The connect side gets a [`TerminalHandle`] whose commands go over the
//! socket and an event channel fed from it, so the connect code is the same
//! whether it runs alone or through a daemon.
//!
//! # Who may connect
//! The socket file is mode 0600 inside the 0700 state dir, and each client's
//! uid is checked with `SO_PEERCRED` (rustix): a client of another uid gets
//! a `forbidden` error frame and is closed.
//!
//! # Frames
//! Each frame is a 4-byte big-endian length then that many bytes of a JSON
//! object (UTF-8), at most [`MAX_CONTROL_FRAME`] bytes. A frame's bytes must
//! arrive within [`FRAME_TIMEOUT`] once its first byte came. A frame that is
//! too long, not JSON or not a known operation gets an error frame and the
//! connection is closed; nothing in it can panic or hold the daemon's loop
//! (each client has threads of its own, at most [`MAX_CONTROL_CLIENTS`] at
//! once, and events reach a client through a bounded queue: a client that
//! does not read its events is dropped, the daemon never waits for it).
//!
//! The client speaks first: `{"op":"hello","version":1}`; the daemon answers
//! `{"re":"hello","version":1,"udp":"ADDR"}` once it is online, or an error.
//! Then requests, one at a time, each answered by one `re` frame:
//! `{"re":OP,"ok":VALUE}` or `{"re":OP,"error":{"kind":KIND,"message":TEXT}}`.
//!
//! | op | fields | ok |
//! |---|---|---|
//! | `reload` | | names on the list |
//! | `connect` | `target`, `duration` (s, 0 = default) | request id |
//! | `send` | `session` (32 hex), `rate` (B/s or null); the file's descriptor as `SCM_RIGHTS` on the frame's bytes, its name in `name` | null |
//! | `request` | `session`, `message` (hex of a share message), `recv_dir` (absolute, or null) | null |
//! | `ping` | `session`, `timeout_ms` | ping id |
//! | `close` / `finish` | `session`, `reason` (the wire byte of the end reason) | null |
//! | `bye` | | null |
//!
//! Error kinds: `version`, `bad_frame`, `unknown_op`, `forbidden`, `busy`,
//! `no_such_session`, `not_running`, `not_registered`, `too_many_pending`,
//! `too_many_sessions`, `invalid_name`, `not_connected`, `too_many_pings`,
//! `bad_file`, `stopped`, `failed`.
//!
//! Events (`{"ev":KIND,...}`) come between answers, only those of the
//! client's own requests and sessions: `connect_failed` (`request`),
//! `session_ready` (`request`, `session`, `duration`, `peer`),
//! `session_extended`, `extension_refused`, `session_ended` (`reason`,
//! `sent`, `received`, `ms`), `connected` / `path_changed` (`peer`),
//! `acked` (`len`), `peer_ended` (`reason`, `by_peer`, `sent`, `received`),
//! `pong` (`id`, `rtt_us`), `ping_lost` (`id`), `sending` (`acked`, `size`),
//! `receiving` (`name`, `done`, `size`), `stored` (`name`), `listing`
//! (`files`: `[path, size, mtime]`), `no_such_file`, `received` (`path`,
//! `size`, `digest`, or `error`). A session a client opened and left
//! running when it goes is ended (`Cancelled`).

use std::collections::{BTreeSet, VecDeque};
use std::io::{IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tryst_core::peer::session::PeerEvent;
use tryst_core::peer::transport::ping::PingError;
use tryst_core::terminal::{ConnectError, TerminalEvent};
use tryst_core::wire::{EndReason, PublicKey, Role, SessionId, SessionKey};

use super::terminal::{StateDir, CONTROL_SOCKET, CONTROL_TIMEOUT};
use super::CliError;
use crate::role::terminal::{
    Event, ReceivedFile, ShareAnswer, TerminalCommand, TerminalError, TerminalHandle,
};
use crate::role::Commands;
use crate::transfer::share::SharedFile;
use crate::transfer::FileSource;

/// The control protocol's version (the `hello` frame's).
pub const CONTROL_VERSION: u64 = 1;
/// Longest frame body, either way.
pub const MAX_CONTROL_FRAME: usize = 256 * 1024;
/// Control clients served at once; one more gets a `busy` error.
pub const MAX_CONTROL_CLIENTS: usize = 8;
/// Events queued for a client before it counts as not reading (dropped).
pub const CLIENT_QUEUE: usize = 1024;
/// How long the rest of a frame may take once its first byte came.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `hello` waits for the daemon to be online.
pub const ONLINE_WAIT: Duration = Duration::from_secs(15);
/// Unclaimed connect outcomes kept (a request's outcome may come before
/// its client registered the request id).
const UNCLAIMED: usize = 32;

/// Why a control frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The other side closed between frames.
    #[error("closed")]
    Closed,
    /// The length says more than [`MAX_CONTROL_FRAME`].
    #[error("frame of {0} bytes, more than {MAX_CONTROL_FRAME}")]
    TooLong(usize),
    /// The frame did not arrive in time, or the stream closed inside it.
    #[error("frame cut short")]
    Cut,
    /// The body is not a JSON object.
    #[error("not a JSON object")]
    NotJson,
    /// The socket failed.
    #[error("{0}")]
    Io(std::io::Error),
}

/// Encodes one frame.
pub fn encode_frame(body: &Value) -> Vec<u8> {
    let text = body.to_string();
    let mut out = Vec::with_capacity(4 + text.len());
    out.extend_from_slice(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// Reads frames, and the descriptors sent with them (`SCM_RIGHTS`).
pub struct FrameReader {
    stream: UnixStream,
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

/// Descriptors kept waiting for the operation that takes them.
const MAX_PENDING_FDS: usize = 2;

impl FrameReader {
    /// Reads from `stream`.
    pub fn new(stream: UnixStream) -> FrameReader {
        FrameReader {
            stream,
            buf: Vec::new(),
            fds: VecDeque::new(),
        }
    }

    /// The oldest descriptor received and not taken.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fds.pop_front()
    }

    /// Reads more bytes (waiting at most `timeout`, forever if `None`).
    fn fill(&mut self, timeout: Option<Duration>) -> Result<usize, std::io::Error> {
        self.stream.set_read_timeout(timeout)?;
        let mut chunk = [0u8; 4096];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let n = loop {
            match rustix::net::recvmsg(
                self.stream.as_fd(),
                &mut [IoSliceMut::new(&mut chunk)],
                &mut control,
                rustix::net::RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(msg) => break msg.bytes,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        for message in control.drain() {
            if let rustix::net::RecvAncillaryMessage::ScmRights(fds) = message {
                for fd in fds {
                    if self.fds.len() < MAX_PENDING_FDS {
                        self.fds.push_back(fd);
                    }
                }
            }
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next frame; waits for its first byte as long as `idle` allows
    /// (forever if `None`), for the rest at most [`FRAME_TIMEOUT`].
    pub fn read(&mut self, idle: Option<Duration>) -> Result<Value, FrameError> {
        let mut deadline: Option<Instant> = None;
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if len > MAX_CONTROL_FRAME {
                    return Err(FrameError::TooLong(len));
                }
                if self.buf.len() >= 4 + len {
                    let body: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
                    return match serde_json::from_slice::<Value>(&body) {
                        Ok(value) if value.is_object() => Ok(value),
                        _ => Err(FrameError::NotJson),
                    };
                }
            }
            let timeout = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Err(FrameError::Cut),
                },
                None if self.buf.is_empty() => idle,
                None => {
                    deadline = Some(Instant::now() + FRAME_TIMEOUT);
                    Some(FRAME_TIMEOUT)
                }
            };
            match self.fill(timeout) {
                Ok(0) if self.buf.is_empty() => return Err(FrameError::Closed),
                Ok(0) => return Err(FrameError::Cut),
                Ok(_) => {
                    deadline.get_or_insert(Instant::now() + FRAME_TIMEOUT);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(if self.buf.is_empty() {
                        FrameError::Io(e)
                    } else {
                        FrameError::Cut
                    })
                }
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
    }
}

/// An error answer to `op`.
pub fn error_frame(op: &str, kind: &str, message: &dyn std::fmt::Display) -> Value {
    json!({"re": op, "error": {"kind": kind, "message": message.to_string()}})
}

/// The error kind for a terminal's refusal.
fn error_kind(e: &TerminalError) -> &'static str {
    match e {
        TerminalError::Stopped => "stopped",
        TerminalError::Connect(ConnectError::InvalidName(_)) => "invalid_name",
        TerminalError::Connect(ConnectError::NotRegistered) => "not_registered",
        TerminalError::Connect(ConnectError::TooManyPendingRequests) => "too_many_pending",
        TerminalError::Connect(ConnectError::TooManySessions) => "too_many_sessions",
        TerminalError::NoSuchSession => "no_such_session",
        TerminalError::NotRunning => "not_running",
        TerminalError::Ping(PingError::NotConnected) => "not_connected",
        TerminalError::Ping(PingError::TooMany) => "too_many_pings",
        TerminalError::Permissions(_) | TerminalError::Query(_) => "failed",
    }
}

/// The terminal's refusal an error kind stands for (the connect side).
fn terminal_error(kind: &str) -> TerminalError {
    match kind {
        "not_registered" => TerminalError::Connect(ConnectError::NotRegistered),
        "too_many_pending" => TerminalError::Connect(ConnectError::TooManyPendingRequests),
        "too_many_sessions" => TerminalError::Connect(ConnectError::TooManySessions),
        "no_such_session" => TerminalError::NoSuchSession,
        "not_running" | "bad_file" => TerminalError::NotRunning,
        "not_connected" => TerminalError::Ping(PingError::NotConnected),
        "too_many_pings" => TerminalError::Ping(PingError::TooMany),
        _ => TerminalError::Stopped,
    }
}

fn hex_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn session_field(v: &Value) -> Option<SessionId> {
    let bytes = parse_hex(v.get("session")?.as_str()?)?;
    Some(SessionId(bytes.try_into().ok()?))
}

fn u64_field(v: &Value, key: &str) -> Option<u64> {
    v.get(key)?.as_u64()
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.as_str()
}

fn reason_field(v: &Value) -> Option<EndReason> {
    EndReason::from_wire(u8::try_from(u64_field(v, "reason")?).ok()?).ok()
}

fn addr_field(v: &Value, key: &str) -> Option<SocketAddr> {
    str_field(v, key)?.parse().ok()
}

/// Whose event this is: a connect request's id, or a session's.
enum Owner {
    Request(u32),
    Session([u8; 16]),
}

/// An event as a frame for the client that owns it; `None` for the
/// daemon's own events.
fn encode_event(event: &Event) -> Option<(Owner, Value)> {
    let s = |id: &SessionId| hex_bytes(&id.0);
    Some(match event {
        Event::Terminal(t) => match t {
            TerminalEvent::ConnectFailed { request_id } => (
                Owner::Request(*request_id),
                json!({"ev": "connect_failed", "request": request_id}),
            ),
            TerminalEvent::SessionReady {
                session_id,
                role: Role::Connecting,
                request_id,
                peer_name,
                peer_addr,
                duration_secs,
                ..
            } => (
                Owner::Request(*request_id),
                json!({"ev": "session_ready", "request": request_id, "session": s(session_id),
                       "duration": duration_secs, "peer": peer_addr.to_string(),
                       "name": peer_name.as_str()}),
            ),
            TerminalEvent::SessionExtended {
                session_id,
                duration_secs,
            } => (
                Owner::Session(session_id.0),
                json!({"ev": "session_extended", "session": s(session_id), "duration": duration_secs}),
            ),
            TerminalEvent::ExtensionRefused { session_id } => (
                Owner::Session(session_id.0),
                json!({"ev": "extension_refused", "session": s(session_id)}),
            ),
            TerminalEvent::SessionEnded {
                session_id,
                reason,
                bytes_sent,
                bytes_received,
                duration_ms,
            } => (
                Owner::Session(session_id.0),
                json!({"ev": "session_ended", "session": s(session_id), "reason": reason.to_wire(),
                       "sent": bytes_sent, "received": bytes_received, "ms": duration_ms}),
            ),
            _ => return None,
        },
        // The receiver held part of the file being sent: where it resumes.
        Event::Resumed {
            session_id,
            offset,
            size,
        } => (
            Owner::Session(session_id.0),
            json!({"ev": "resumed", "session": s(session_id), "offset": offset, "size": size}),
        ),
        // A live stream's datagram, for the client whose session it is.
        Event::Datagram { session_id, data } => (
            Owner::Session(session_id.0),
            json!({"ev": "datagram", "session": s(session_id), "data": hex_bytes(data)}),
        ),
        Event::Peer { session_id, event } => {
            let body = match event {
                PeerEvent::Connected { peer_addr, relayed } => {
                    json!({"ev": "connected", "peer": peer_addr.to_string(), "relayed": relayed})
                }
                PeerEvent::PathChanged { peer_addr, relayed } => {
                    json!({"ev": "path_changed", "peer": peer_addr.to_string(), "relayed": relayed})
                }
                PeerEvent::StreamAcked { len } => json!({"ev": "acked", "len": len}),
                PeerEvent::Pong { id, rtt } => {
                    json!({"ev": "pong", "id": id, "rtt_us": u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX)})
                }
                PeerEvent::PingLost { id } => json!({"ev": "ping_lost", "id": id}),
                PeerEvent::Ended {
                    reason,
                    by_peer,
                    bytes_sent,
                    bytes_received,
                } => json!({"ev": "peer_ended", "reason": reason.to_wire(), "by_peer": by_peer,
                            "sent": bytes_sent, "received": bytes_received}),
                _ => return None,
            };
            with_session(body, session_id)
        }
        Event::Sending {
            session_id,
            acked,
            size,
        } => with_session(
            json!({"ev": "sending", "acked": acked, "size": size}),
            session_id,
        ),
        Event::Receiving {
            session_id,
            name,
            done,
            size,
        } => with_session(
            json!({"ev": "receiving", "name": name, "done": done, "size": size}),
            session_id,
        ),
        Event::Answer { session_id, answer } => {
            let body = match answer {
                ShareAnswer::Stored(name) => json!({"ev": "stored", "name": name}),
                ShareAnswer::NotKept(reason) => json!({"ev": "not_kept", "reason": *reason as u8}),
                ShareAnswer::NoSuchFile => json!({"ev": "no_such_file"}),
                ShareAnswer::Listing(files) => {
                    let files: Vec<Value> = files
                        .iter()
                        .map(|f| json!([f.path, f.size, f.mtime]))
                        .collect();
                    json!({"ev": "listing", "files": files})
                }
            };
            with_session(body, session_id)
        }
        Event::Received {
            session_id,
            outcome,
        } => {
            let body = match outcome {
                Ok(file) => json!({"ev": "received", "path": file.path.to_string_lossy(),
                                   "size": file.size, "digest": hex_bytes(&file.digest),
                                   "resumed_from": file.resumed_from}),
                Err(why) => json!({"ev": "received", "error": why}),
            };
            with_session(body, session_id)
        }
    })
}

fn with_session(mut body: Value, session_id: &SessionId) -> (Owner, Value) {
    if let Some(map) = body.as_object_mut() {
        map.insert("session".to_owned(), Value::from(hex_bytes(&session_id.0)));
    }
    (Owner::Session(session_id.0), body)
}

/// The event a frame stands for (the connect side); `None` if it is not one.
fn decode_event(v: &Value) -> Option<Event> {
    let kind = str_field(v, "ev")?;
    let request = || u32::try_from(u64_field(v, "request")?).ok();
    let peer = |event| -> Option<Event> {
        Some(Event::Peer {
            session_id: session_field(v)?,
            event,
        })
    };
    Some(match kind {
        "resumed" => Event::Resumed {
            session_id: session_field(v)?,
            offset: u64_field(v, "offset")?,
            size: u64_field(v, "size")?,
        },
        "datagram" => Event::Datagram {
            session_id: session_field(v)?,
            data: parse_hex(str_field(v, "data")?)?,
        },
        "connect_failed" => Event::Terminal(TerminalEvent::ConnectFailed {
            request_id: request()?,
        }),
        "session_ready" => Event::Terminal(TerminalEvent::SessionReady {
            session_id: session_field(v)?,
            role: Role::Connecting,
            request_id: request()?,
            peer_name: tryst_core::terminal::NameBuf::try_from(str_field(v, "name")?).ok()?,
            // Neither leaves the daemon: the connect side does not need them.
            peer_key: PublicKey([0; 32]),
            peer_addr: addr_field(v, "peer")?,
            session_key: SessionKey([0; 32]),
            duration_secs: u32::try_from(u64_field(v, "duration")?).ok()?,
            relay: None,
        }),
        "session_extended" => Event::Terminal(TerminalEvent::SessionExtended {
            session_id: session_field(v)?,
            duration_secs: u32::try_from(u64_field(v, "duration")?).ok()?,
        }),
        "extension_refused" => Event::Terminal(TerminalEvent::ExtensionRefused {
            session_id: session_field(v)?,
        }),
        "session_ended" => Event::Terminal(TerminalEvent::SessionEnded {
            session_id: session_field(v)?,
            reason: reason_field(v)?,
            bytes_sent: u64_field(v, "sent")?,
            bytes_received: u64_field(v, "received")?,
            duration_ms: u64_field(v, "ms")?,
        }),
        "connected" => peer(PeerEvent::Connected {
            peer_addr: addr_field(v, "peer")?,
            relayed: v.get("relayed").and_then(|r| r.as_bool()).unwrap_or(false),
        })?,
        "path_changed" => peer(PeerEvent::PathChanged {
            peer_addr: addr_field(v, "peer")?,
            relayed: v.get("relayed").and_then(|r| r.as_bool()).unwrap_or(false),
        })?,
        "acked" => peer(PeerEvent::StreamAcked {
            len: u64_field(v, "len")?,
        })?,
        "pong" => peer(PeerEvent::Pong {
            id: u32::try_from(u64_field(v, "id")?).ok()?,
            rtt: Duration::from_micros(u64_field(v, "rtt_us")?),
        })?,
        "ping_lost" => peer(PeerEvent::PingLost {
            id: u32::try_from(u64_field(v, "id")?).ok()?,
        })?,
        "peer_ended" => peer(PeerEvent::Ended {
            reason: reason_field(v)?,
            by_peer: v.get("by_peer")?.as_bool()?,
            bytes_sent: u64_field(v, "sent")?,
            bytes_received: u64_field(v, "received")?,
        })?,
        "sending" => Event::Sending {
            session_id: session_field(v)?,
            acked: u64_field(v, "acked")?,
            size: u64_field(v, "size")?,
        },
        "receiving" => Event::Receiving {
            session_id: session_field(v)?,
            name: str_field(v, "name")?.to_owned(),
            done: u64_field(v, "done")?,
            size: u64_field(v, "size")?,
        },
        "stored" | "not_kept" | "no_such_file" | "listing" => Event::Answer {
            session_id: session_field(v)?,
            answer: match kind {
                "stored" => ShareAnswer::Stored(str_field(v, "name")?.to_owned()),
                "not_kept" => ShareAnswer::NotKept(
                    tryst_core::peer::share::NotKeptReason::from_wire(
                        u8::try_from(u64_field(v, "reason")?).ok()?,
                    )
                    .ok()?,
                ),
                "no_such_file" => ShareAnswer::NoSuchFile,
                _ => ShareAnswer::Listing(
                    v.get("files")?
                        .as_array()?
                        .iter()
                        .map(|f| {
                            Some(SharedFile {
                                path: f.get(0)?.as_str()?.to_owned(),
                                size: f.get(1)?.as_u64()?,
                                mtime: f.get(2)?.as_u64()?,
                            })
                        })
                        .collect::<Option<Vec<_>>>()?,
                ),
            },
        },
        "received" => Event::Received {
            session_id: session_field(v)?,
            outcome: match str_field(v, "error") {
                Some(why) => Err(why.to_owned()),
                None => Ok(ReceivedFile {
                    path: PathBuf::from(str_field(v, "path")?),
                    size: u64_field(v, "size")?,
                    digest: parse_hex(str_field(v, "digest")?)?.try_into().ok()?,
                    resumed_from: u64_field(v, "resumed_from").unwrap_or(0),
                }),
            },
        },
        _ => return None,
    })
}

// ---------------------------------------------------------------- daemon side

/// One client's place in the [`ControlHub`].
struct Subscriber {
    id: u64,
    requests: BTreeSet<u32>,
    sessions: BTreeSet<[u8; 16]>,
    tx: flume::Sender<Vec<u8>>,
    /// Its connection, shut down when it falls behind (its thread then
    /// ends its sessions).
    conn: Option<UnixStream>,
    /// It fell behind: nothing more is routed to it.
    dead: bool,
}

#[derive(Default)]
struct HubState {
    next_id: u64,
    clients: Vec<Subscriber>,
    /// Connect outcomes no client claimed yet, by request id.
    unclaimed: VecDeque<(u32, Option<[u8; 16]>, Vec<u8>)>,
}

/// Routes the daemon's events to the control clients that own them. The
/// daemon's loop calls [`ControlHub::dispatch`] for each event; it never
/// blocks (a client whose queue is full is dropped).
#[derive(Default)]
pub struct ControlHub {
    state: Mutex<HubState>,
    online: AtomicBool,
    clients: AtomicUsize,
}

impl std::fmt::Debug for ControlHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlHub")
            .field("clients", &self.clients.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ControlHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `event` to the client that owns it, if one does.
    pub fn dispatch(&self, event: &Event) {
        if let Event::Terminal(TerminalEvent::Online { .. }) = event {
            self.online.store(true, Ordering::Release);
        }
        let Some((owner, body)) = encode_event(event) else {
            return;
        };
        let ready = match event {
            Event::Terminal(TerminalEvent::SessionReady { session_id, .. }) => Some(session_id.0),
            _ => None,
        };
        let ended = matches!(event, Event::Terminal(TerminalEvent::SessionEnded { .. }));
        let frame = encode_frame(&body);
        let mut state = self.lock();
        let index = state.clients.iter().position(|c| match owner {
            Owner::Request(id) => c.requests.contains(&id),
            Owner::Session(id) => c.sessions.contains(&id),
        });
        if index.is_some_and(|i| state.clients[i].dead) {
            return;
        }
        let Some(index) = index else {
            if let Owner::Request(id) = owner {
                if state.unclaimed.len() == UNCLAIMED {
                    state.unclaimed.pop_front();
                }
                state.unclaimed.push_back((id, ready, frame));
            }
            return;
        };
        let client = &mut state.clients[index];
        if let (Owner::Request(id), Some(session)) = (&owner, ready) {
            client.requests.remove(id);
            client.sessions.insert(session);
        }
        if let (Owner::Request(id), None) = (&owner, ready) {
            client.requests.remove(id);
        }
        if ended {
            if let Owner::Session(id) = owner {
                client.sessions.remove(&id);
            }
        }
        if client.tx.try_send(frame).is_err() {
            // Not reading its events: dropped, its sessions ended by its thread.
            tracing::warn!("a control client fell behind its events: dropped");
            client.dead = true;
            if let Some(conn) = &client.conn {
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    fn subscribe(&self, tx: flume::Sender<Vec<u8>>, conn: Option<UnixStream>) -> u64 {
        let mut state = self.lock();
        state.next_id += 1;
        let id = state.next_id;
        state.clients.push(Subscriber {
            id,
            requests: BTreeSet::new(),
            sessions: BTreeSet::new(),
            tx,
            conn,
            dead: false,
        });
        id
    }

    /// Claims request `request` for client `id` (and its outcome if it came).
    fn claim(&self, id: u64, request: u32) {
        let mut state = self.lock();
        let early = state
            .unclaimed
            .iter()
            .position(|(r, _, _)| *r == request)
            .and_then(|i| state.unclaimed.remove(i));
        let Some(client) = state.clients.iter_mut().find(|c| c.id == id) else {
            return;
        };
        match early {
            Some((_, session, frame)) => {
                if let Some(session) = session {
                    client.sessions.insert(session);
                }
                let _ = client.tx.try_send(frame);
            }
            None => {
                client.requests.insert(request);
            }
        }
    }

    fn owns(&self, id: u64, session: &SessionId) -> bool {
        self.lock()
            .clients
            .iter()
            .any(|c| c.id == id && c.sessions.contains(&session.0))
    }

    /// Removes client `id`; the sessions it leaves running.
    fn unsubscribe(&self, id: u64) -> Vec<SessionId> {
        let mut state = self.lock();
        match state.clients.iter().position(|c| c.id == id) {
            Some(i) => state
                .clients
                .remove(i)
                .sessions
                .into_iter()
                .map(SessionId)
                .collect(),
            None => Vec::new(),
        }
    }
}

/// Whether the peer of `stream` runs as this process's user (`SO_PEERCRED`).
pub fn peer_is_same_user(stream: &UnixStream) -> bool {
    peer_has_uid(stream, rustix::process::geteuid().as_raw())
}

/// Whether the peer of `stream` runs as `uid`.
fn peer_has_uid(stream: &UnixStream, uid: u32) -> bool {
    match rustix::net::sockopt::socket_peercred(stream) {
        Ok(cred) => cred.uid.as_raw() == uid,
        Err(_) => false,
    }
}

/// What the daemon needs to serve a control client.
#[derive(Clone)]
pub struct ControlContext {
    /// The state directory (the permission list for `reload`).
    pub state: StateDir,
    /// The daemon's terminal.
    pub handle: TerminalHandle,
    /// The event routes.
    pub hub: Arc<ControlHub>,
}

impl std::fmt::Debug for ControlContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlContext").finish_non_exhaustive()
    }
}

/// Serves one accepted client on threads of its own (refused at once when
/// it runs as another user or too many are served).
pub fn serve_client(stream: UnixStream, ctx: &ControlContext) {
    let refuse = |mut stream: UnixStream, kind: &str, why: &str| {
        let _ = stream.set_write_timeout(Some(CONTROL_TIMEOUT));
        let _ = stream.write_all(&encode_frame(&error_frame("hello", kind, &why)));
    };
    if !peer_is_same_user(&stream) {
        tracing::warn!("control socket: refused a client of another user");
        refuse(
            stream,
            "forbidden",
            "the control socket serves its owner only",
        );
        return;
    }
    if ctx.hub.clients.fetch_add(1, Ordering::AcqRel) >= MAX_CONTROL_CLIENTS {
        ctx.hub.clients.fetch_sub(1, Ordering::AcqRel);
        refuse(stream, "busy", "too many control clients");
        return;
    }
    let ctx = ctx.clone();
    let spawned = std::thread::Builder::new()
        .name("tryst-control-client".to_owned())
        .spawn(move || {
            client_thread(stream, &ctx);
            ctx.hub.clients.fetch_sub(1, Ordering::AcqRel);
        });
    if spawned.is_err() {
        tracing::warn!("control socket: cannot start a client thread");
    }
}

/// A client's reader (this thread) and writer: requests in, answers and
/// events out through one bounded queue.
fn client_thread(stream: UnixStream, ctx: &ControlContext) {
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let (tx, rx) = flume::bounded::<Vec<u8>>(CLIENT_QUEUE);
    let write_thread = std::thread::Builder::new()
        .name("tryst-control-write".to_owned())
        .spawn(move || {
            let mut writer = writer;
            let _ = writer.set_write_timeout(Some(CONTROL_TIMEOUT));
            for frame in rx.iter() {
                if writer.write_all(&frame).is_err() {
                    break;
                }
            }
            let _ = writer.shutdown(std::net::Shutdown::Both);
        });
    let Ok(write_thread) = write_thread else {
        return;
    };
    let id = ctx.hub.subscribe(tx.clone(), stream.try_clone().ok());
    let mut reader = FrameReader::new(stream);
    let answer = |frame: Value| {
        let _ = tx.send_timeout(encode_frame(&frame), CONTROL_TIMEOUT);
    };
    let mut hello = false;
    loop {
        // Between requests a client may wait as long as it holds a session.
        let idle = if hello { None } else { Some(CONTROL_TIMEOUT) };
        let frame = match reader.read(idle) {
            Ok(frame) => frame,
            Err(FrameError::Closed) => break,
            Err(FrameError::Io(_)) if !hello => break,
            Err(e) => {
                tracing::warn!(error = %e, "control socket: a bad frame");
                answer(error_frame("?", "bad_frame", &e));
                break;
            }
        };
        let op = str_field(&frame, "op").unwrap_or("?").to_owned();
        if !hello {
            if op != "hello" || u64_field(&frame, "version") != Some(CONTROL_VERSION) {
                answer(error_frame(
                    "hello",
                    "version",
                    &format!("this daemon speaks control version {CONTROL_VERSION}, hello first"),
                ));
                break;
            }
            hello = true;
            let started = Instant::now();
            while !ctx.hub.online.load(Ordering::Acquire) && started.elapsed() < ONLINE_WAIT {
                std::thread::sleep(Duration::from_millis(20));
            }
            answer(json!({"re": "hello", "version": CONTROL_VERSION,
                          "udp": ctx.handle.udp_addr.to_string()}));
            continue;
        }
        if op == "bye" {
            answer(json!({"re": "bye", "ok": null}));
            break;
        }
        match serve_op(&op, &frame, &mut reader, ctx, id) {
            Ok(value) => answer(json!({"re": op, "ok": value})),
            Err((kind, message)) => {
                let unknown = kind == "unknown_op";
                answer(error_frame(&op, kind, &message));
                if unknown {
                    break;
                }
            }
        }
    }
    for session in ctx.hub.unsubscribe(id) {
        let _ = ctx.handle.finish(session, EndReason::Cancelled).wait();
    }
    drop(tx);
    let _ = write_thread.join();
}

/// Carries out one operation; its `ok` value or its error kind and text.
fn serve_op(
    op: &str,
    frame: &Value,
    reader: &mut FrameReader,
    ctx: &ControlContext,
    id: u64,
) -> Result<Value, (&'static str, String)> {
    let bad = |what: &str| ("bad_frame", format!("{op}: {what}"));
    let refused = |e: TerminalError| (error_kind(&e), e.to_string());
    let owned = |session: &SessionId| {
        if ctx.hub.owns(id, session) {
            Ok(())
        } else {
            Err(("no_such_session", "no such session".to_owned()))
        }
    };
    // The frame's session, which this client must have opened.
    let own_session = || {
        let session = session_field(frame).ok_or_else(|| bad("no session"))?;
        owned(&session)?;
        Ok(session)
    };
    match op {
        "reload" => {
            let names = ctx
                .state
                .permissions()
                .map_err(|e| ("failed", e.to_string()))?;
            let count = names.len();
            ctx.handle.set_permissions(names).wait().map_err(refused)?;
            Ok(Value::from(count))
        }
        "connect" => {
            let target = str_field(frame, "target").ok_or_else(|| bad("no target"))?;
            let duration = u64_field(frame, "duration")
                .and_then(|d| u32::try_from(d).ok())
                .ok_or_else(|| bad("no duration"))?;
            let request = ctx
                .handle
                .connect(target, duration)
                .wait()
                .map_err(refused)?;
            ctx.hub.claim(id, request);
            Ok(Value::from(request))
        }
        "send" => {
            let session = session_field(frame).ok_or_else(|| bad("no session"))?;
            let fd = reader.take_fd().ok_or_else(|| bad("no file descriptor"))?;
            owned(&session)?;
            let name = str_field(frame, "name").ok_or_else(|| bad("no name"))?;
            let rate = u64_field(frame, "rate");
            let file = std::fs::File::from(fd);
            let source = FileSource::from_file(Path::new(name), file, name)
                .map_err(|e| ("bad_file", e.to_string()))?;
            ctx.handle
                .send_file(session, source, rate)
                .wait()
                .map_err(refused)?;
            Ok(Value::Null)
        }
        "request" => {
            let session = own_session()?;
            let message = str_field(frame, "message")
                .and_then(parse_hex)
                .filter(|m| m.len() <= tryst_core::peer::share::MAX_SHARE_MESSAGE_LEN)
                .ok_or_else(|| bad("no share message"))?;
            let recv_dir = match str_field(frame, "recv_dir") {
                Some(dir) => {
                    let dir = PathBuf::from(dir);
                    if !dir.is_absolute() {
                        return Err(bad("recv_dir is not absolute"));
                    }
                    crate::transfer::check_recv_dir(&dir).map_err(|e| ("failed", e.to_string()))?;
                    Some(dir)
                }
                None => None,
            };
            ctx.handle
                .request_bytes(session, message, recv_dir)
                .wait()
                .map_err(refused)?;
            Ok(Value::Null)
        }
        "datagram" => {
            let session = own_session()?;
            let data = str_field(frame, "data")
                .and_then(parse_hex)
                .filter(|d| d.len() <= crate::transfer::live::MAX_FRAME)
                .ok_or_else(|| bad("no datagram, or one longer than a live frame"))?;
            ctx.handle.datagram(session, data).wait().map_err(refused)?;
            Ok(Value::Null)
        }
        "ping" => {
            let session = own_session()?;
            let timeout = Duration::from_millis(u64_field(frame, "timeout_ms").unwrap_or(1000));
            let ping = ctx.handle.ping(session, timeout).wait().map_err(refused)?;
            Ok(Value::from(ping))
        }
        "close" | "finish" => {
            let session = own_session()?;
            let reason = reason_field(frame).ok_or_else(|| bad("no reason"))?;
            let reply = if op == "close" {
                ctx.handle.close(session, reason)
            } else {
                ctx.handle.finish(session, reason)
            };
            reply.wait().map_err(refused)?;
            Ok(Value::Null)
        }
        _ => Err(("unknown_op", format!("unknown operation {op:?}"))),
    }
}

// --------------------------------------------------------------- client side

/// An open control connection: requests and their answers.
struct Client {
    stream: UnixStream,
    answers: flume::Receiver<Value>,
    /// The daemon's UDP address, as its `hello` said.
    udp: Option<SocketAddr>,
}

/// Why a daemon could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The daemon answered with an error.
    #[error("the running terminal refused: {0}")]
    Refused(String),
    /// The daemon did not answer in time, or the socket failed.
    #[error("the running terminal did not answer: {0}")]
    NoAnswer(String),
}

impl Client {
    /// Connects to the daemon of `state`, if one listens; a socket file no
    /// one listens on is removed (`None`, as if there were none).
    /// A received file's path under `rewrite.0` is shown under `rewrite.1`
    /// (the folder as the user gave it).
    fn open(
        state: &StateDir,
        events: Option<flume::Sender<Event>>,
        rewrite: Option<(PathBuf, PathBuf)>,
    ) -> Result<Option<Client>, AttachError> {
        let path = state.file(CONTROL_SOCKET);
        let stream = match UnixStream::connect(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                // A daemon that did not stop cleanly left it.
                let _ = std::fs::remove_file(&path);
                return Ok(None);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AttachError::NoAnswer(format!("{}: {e}", path.display()))),
        };
        let reader = stream
            .try_clone()
            .map_err(|e| AttachError::NoAnswer(e.to_string()))?;
        let (answers_tx, answers) = flume::bounded(4);
        std::thread::Builder::new()
            .name("tryst-control-read".to_owned())
            .spawn(move || {
                let mut reader = FrameReader::new(reader);
                while let Ok(frame) = reader.read(None) {
                    if frame.get("ev").is_some() {
                        match (decode_event(&frame), &events) {
                            (Some(mut event), Some(events)) => {
                                if let (
                                    Event::Received {
                                        outcome: Ok(file), ..
                                    },
                                    Some((from, to)),
                                ) = (&mut event, &rewrite)
                                {
                                    if let Ok(rest) = file.path.strip_prefix(from) {
                                        file.path = to.join(rest);
                                    }
                                }
                                if events.send(event).is_err() {
                                    break;
                                }
                            }
                            _ => tracing::debug!(%frame, "control: an event not understood"),
                        }
                    } else if answers_tx.send(frame).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| AttachError::NoAnswer(e.to_string()))?;
        let mut client = Client {
            stream,
            answers,
            udp: None,
        };
        let hello = client.call(
            &json!({"op": "hello", "version": CONTROL_VERSION}),
            None,
            ONLINE_WAIT + CONTROL_TIMEOUT,
        )?;
        if hello.get("error").is_some() {
            return Err(AttachError::Refused(error_text(&hello)));
        }
        client.udp = addr_field(&hello, "udp");
        Ok(Some(client))
    }

    /// Sends `request` (with `fd` if given) and waits for its answer.
    fn call(
        &mut self,
        request: &Value,
        fd: Option<&std::fs::File>,
        timeout: Duration,
    ) -> Result<Value, AttachError> {
        let frame = encode_frame(request);
        let io = |e: std::io::Error| AttachError::NoAnswer(e.to_string());
        self.stream
            .set_write_timeout(Some(CONTROL_TIMEOUT))
            .map_err(io)?;
        match fd {
            Some(file) => {
                let fds = [file.as_fd()];
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
                control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
                let sent = rustix::net::sendmsg(
                    self.stream.as_fd(),
                    &[IoSlice::new(&frame)],
                    &mut control,
                    rustix::net::SendFlags::empty(),
                )
                .map_err(|e| io(e.into()))?;
                if let Some(rest) = frame.get(sent..) {
                    self.stream.write_all(rest).map_err(io)?;
                }
            }
            None => self.stream.write_all(&frame).map_err(io)?,
        }
        self.answers
            .recv_timeout(timeout)
            .map_err(|_| AttachError::NoAnswer("no answer".to_owned()))
    }
}

fn error_text(answer: &Value) -> String {
    answer
        .get("error")
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("an error")
        .to_owned()
}

/// Has the daemon of `state`, if one runs, read its permission list again:
/// `Ok(None)`: no daemon runs; `Ok(Some(count))`: it applied `count` names.
pub fn reload(state: &StateDir) -> Result<Option<usize>, CliError> {
    let Some(mut client) = Client::open(state, None, None).map_err(CliError::failed)? else {
        return Ok(None);
    };
    let answer = client
        .call(&json!({"op": "reload"}), None, CONTROL_TIMEOUT)
        .map_err(CliError::failed)?;
    let _ = client.call(&json!({"op": "bye"}), None, CONTROL_TIMEOUT);
    match answer.get("ok").and_then(Value::as_u64) {
        Some(count) => Ok(Some(usize::try_from(count).unwrap_or(usize::MAX))),
        None => Err(CliError::failed(format!(
            "the running terminal refused the list: {}",
            error_text(&answer)
        ))),
    }
}

/// How long a command relayed to the daemon may take to be answered.
const RELAY_TIMEOUT: Duration = Duration::from_secs(30);

/// If a daemon runs on `state`, a terminal handle and event channel that
/// are the daemon's, through its control socket (files fetched are stored
/// in `recv_dir`); `None` if none runs (a stale socket is removed).
pub fn attach(
    state: &StateDir,
    recv_dir: Option<&Path>,
) -> Result<Option<(TerminalHandle, flume::Receiver<Event>)>, CliError> {
    let (events_tx, events) = flume::unbounded();
    // The daemon runs elsewhere: it is given the folder as an absolute path.
    let rewrite = match recv_dir {
        Some(dir) => Some((
            std::path::absolute(dir)
                .map_err(|e| CliError::usage(format!("{}: {e}", dir.display())))?,
            dir.to_path_buf(),
        )),
        None => None,
    };
    let recv_dir = rewrite.as_ref().map(|(absolute, _)| absolute.clone());
    let client = match Client::open(state, Some(events_tx), rewrite) {
        Ok(Some(client)) => client,
        Ok(None) => return Ok(None),
        Err(e) => return Err(CliError::failed(e)),
    };
    let udp_addr = client
        .udp
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (commands, rx) = Commands::channel(None);
    std::thread::Builder::new()
        .name("tryst-control-relay".to_owned())
        .spawn(move || relay(client, &rx, recv_dir.as_deref()))
        .map_err(|e| CliError::failed(format!("cannot start the control relay: {e}")))?;
    // The daemon's socket moves the bytes; this side binds none.
    let handle = TerminalHandle { udp_addr, commands };
    Ok(Some((handle, events)))
}

/// The answer to a relayed request: its `ok` value or the terminal's error.
fn relayed(answer: Result<Value, AttachError>) -> Result<Value, TerminalError> {
    let answer = answer.map_err(|_| TerminalError::Stopped)?;
    match answer.get("ok") {
        Some(value) => Ok(value.clone()),
        None => {
            let kind = answer
                .get("error")
                .and_then(|e| e.get("kind"))
                .and_then(Value::as_str)
                .unwrap_or("failed");
            Err(terminal_error(kind))
        }
    }
}

/// Carries the connect side's commands to the daemon until it shuts down.
fn relay(mut client: Client, rx: &flume::Receiver<TerminalCommand>, recv_dir: Option<&Path>) {
    let s = |id: &SessionId| hex_bytes(&id.0);
    for command in rx.iter() {
        match command {
            TerminalCommand::Connect {
                target,
                duration_secs,
                reply,
            } => {
                let answer = client.call(
                    &json!({"op": "connect", "target": target, "duration": duration_secs}),
                    None,
                    RELAY_TIMEOUT,
                );
                let _ = reply.send(relayed(answer).and_then(|v| {
                    v.as_u64()
                        .and_then(|id| u32::try_from(id).ok())
                        .ok_or(TerminalError::Stopped)
                }));
            }
            TerminalCommand::Send {
                session_id,
                mut source,
                rate,
                reply,
            } => {
                // This side reports the SHA-256; the daemon hashes its own copy for the trailer.
                source.hash_all();
                let answer = client.call(
                    &json!({"op": "send", "session": s(&session_id), "rate": rate,
                            "name": source.name()}),
                    Some(source.file()),
                    RELAY_TIMEOUT,
                );
                let _ = reply.send(relayed(answer).map(drop));
                // Kept until its digest is in: the digest handle outlives it.
                std::thread::spawn(move || {
                    let started = Instant::now();
                    while source.digest().is_none()
                        && source.hash_error().is_none()
                        && started.elapsed() < RELAY_TIMEOUT * 20
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                });
            }
            TerminalCommand::Request {
                session_id,
                message,
                reply,
                ..
            } => {
                let answer = client.call(
                    &json!({"op": "request", "session": s(&session_id),
                            "message": hex_bytes(&message),
                            "recv_dir": recv_dir.map(|d| d.to_string_lossy().into_owned())}),
                    None,
                    RELAY_TIMEOUT,
                );
                let _ = reply.send(relayed(answer).map(drop));
            }
            TerminalCommand::Ping {
                session_id,
                timeout,
                reply,
            } => {
                let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                let answer = client.call(
                    &json!({"op": "ping", "session": s(&session_id), "timeout_ms": ms}),
                    None,
                    RELAY_TIMEOUT,
                );
                let _ = reply.send(relayed(answer).and_then(|v| {
                    v.as_u64()
                        .and_then(|id| u32::try_from(id).ok())
                        .ok_or(TerminalError::Stopped)
                }));
            }
            TerminalCommand::Finish {
                session_id,
                reason,
                reply,
            } => {
                let answer = client.call(
                    &json!({"op": "finish", "session": s(&session_id), "reason": reason.to_wire()}),
                    None,
                    RELAY_TIMEOUT,
                );
                let _ = reply.send(relayed(answer).map(drop));
            }
            TerminalCommand::Datagram { session_id, data } => {
                let _ = client.call(
                    &json!({"op": "datagram", "session": s(&session_id), "data": hex_bytes(&data)}),
                    None,
                    RELAY_TIMEOUT,
                );
            }
            TerminalCommand::Close { session_id, reason } => {
                let _ = client.call(
                    &json!({"op": "close", "session": s(&session_id), "reason": reason.to_wire()}),
                    None,
                    RELAY_TIMEOUT,
                );
            }
            TerminalCommand::UdpCredentials { reply } => {
                // The daemon's UDP key never leaves it.
                let _ = reply.send(Ok(None));
            }
            TerminalCommand::Shutdown { reply, .. } => {
                // The daemon runs on; only this client goes (its sessions left running end).
                let _ = client.call(&json!({"op": "bye"}), None, CONTROL_TIMEOUT);
                let _ = reply.send(Ok(()));
                return;
            }
            TerminalCommand::SetPermissions { reply, .. } => {
                let _ = reply.send(Err(TerminalError::Stopped));
            }
            TerminalCommand::Answer { reply, .. } => {
                let _ = reply.send(Err(TerminalError::Stopped));
            }
            TerminalCommand::Progress { .. } => {}
        }
    }
    let _ = client.call(&json!({"op": "bye"}), None, CONTROL_TIMEOUT);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (UnixStream, UnixStream) {
        UnixStream::pair().expect("a socket pair")
    }

    #[test]
    fn a_frame_round_trips() {
        let (mut a, b) = pair();
        a.write_all(&encode_frame(&json!({"op": "hello", "version": 1})))
            .expect("write");
        let mut reader = FrameReader::new(b);
        let frame = reader.read(Some(Duration::from_secs(1))).expect("a frame");
        assert_eq!(str_field(&frame, "op"), Some("hello"));
    }

    #[test]
    fn an_oversized_frame_is_refused_before_its_body() {
        let (mut a, b) = pair();
        a.write_all(&u32::MAX.to_be_bytes()).expect("write");
        let mut reader = FrameReader::new(b);
        assert!(matches!(
            reader.read(Some(Duration::from_secs(1))),
            Err(FrameError::TooLong(_))
        ));
    }

    #[test]
    fn garbage_and_cut_frames_are_errors() {
        let (mut a, b) = pair();
        a.write_all(&[0, 0, 0, 3, b'x', b'y', b'z']).expect("write");
        let mut reader = FrameReader::new(b);
        assert!(matches!(
            reader.read(Some(Duration::from_secs(1))),
            Err(FrameError::NotJson)
        ));
        a.write_all(&[0, 0, 0, 9, b'{']).expect("write");
        drop(a);
        assert!(matches!(
            reader.read(Some(Duration::from_secs(1))),
            Err(FrameError::Cut)
        ));
    }

    #[test]
    fn a_peer_of_another_uid_is_told_apart() {
        let (a, _b) = pair();
        let me = rustix::process::geteuid().as_raw();
        assert!(peer_is_same_user(&a));
        assert!(!peer_has_uid(&a, me.wrapping_add(1)));
    }

    #[test]
    fn a_descriptor_travels_with_its_frame() {
        let (a, b) = pair();
        let file = tempfile::tempfile().expect("a file");
        let (_tx, answers) = flume::bounded(1);
        let mut client = Client {
            stream: a,
            answers,
            udp: None,
        };
        let _ = client.call(
            &json!({"op": "send"}),
            Some(&file),
            Duration::from_millis(1),
        );
        let mut reader = FrameReader::new(b);
        let frame = reader.read(Some(Duration::from_secs(1))).expect("a frame");
        assert_eq!(str_field(&frame, "op"), Some("send"));
        assert!(reader.take_fd().is_some());
    }

    #[test]
    fn events_round_trip_through_frames() {
        let id = SessionId([7; 16]);
        let events = [
            Event::Terminal(TerminalEvent::SessionEnded {
                session_id: id,
                reason: EndReason::Completed,
                bytes_sent: 5,
                bytes_received: 6,
                duration_ms: 7,
            }),
            Event::Peer {
                session_id: id,
                event: PeerEvent::Ended {
                    reason: EndReason::Cancelled,
                    by_peer: true,
                    bytes_sent: 1,
                    bytes_received: 2,
                },
            },
            Event::Answer {
                session_id: id,
                answer: ShareAnswer::Listing(vec![SharedFile {
                    path: "a/b.jpg".to_owned(),
                    size: 3,
                    mtime: 4,
                }]),
            },
        ];
        for event in events {
            let (_, frame) = encode_event(&event).expect("encoded");
            let back = decode_event(&frame).expect("decoded");
            assert_eq!(format!("{event:?}"), format!("{back:?}"));
        }
    }
    fn ready(request_id: u32, session: u8) -> Event {
        Event::Terminal(TerminalEvent::SessionReady {
            session_id: SessionId([session; 16]),
            role: Role::Connecting,
            request_id,
            peer_name: tryst_core::terminal::NameBuf::try_from("home").expect("a name"),
            peer_key: PublicKey([1; 32]),
            peer_addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            session_key: SessionKey([2; 32]),
            duration_secs: 30,
            relay: None,
        })
    }

    fn sending(session: u8) -> Event {
        Event::Sending {
            session_id: SessionId([session; 16]),
            acked: 1,
            size: 2,
        }
    }

    #[test]
    fn events_go_to_the_client_that_asked_and_an_early_outcome_waits_for_its_claim() {
        let hub = ControlHub::default();
        let (tx_a, rx_a) = flume::bounded(CLIENT_QUEUE);
        let (tx_b, rx_b) = flume::bounded(CLIENT_QUEUE);
        let a = hub.subscribe(tx_a, None);
        let b = hub.subscribe(tx_b, None);
        hub.claim(a, 1);
        hub.dispatch(&ready(1, 0xa));
        // b's outcome comes before b claimed its request id.
        hub.dispatch(&ready(2, 0xb));
        hub.claim(b, 2);
        hub.dispatch(&sending(0xa));
        hub.dispatch(&sending(0xb));
        hub.dispatch(&sending(0xc));
        assert_eq!(rx_a.len(), 2);
        assert_eq!(rx_b.len(), 2);
        let first = rx_a.try_recv().expect("a frame");
        // Never the session key.
        assert!(!String::from_utf8_lossy(&first).contains("0202"));
        assert!(hub.owns(a, &SessionId([0xa; 16])));
        assert!(!hub.owns(a, &SessionId([0xb; 16])));
        assert_eq!(hub.unsubscribe(b), vec![SessionId([0xb; 16])]);
    }

    #[test]
    fn a_client_that_does_not_read_is_dropped_without_blocking_the_daemon() {
        let hub = ControlHub::default();
        let (tx_slow, _rx_slow) = flume::bounded(CLIENT_QUEUE);
        let (tx_ok, rx_ok) = flume::bounded(CLIENT_QUEUE);
        let (conn, mut other_end) = pair();
        let slow = hub.subscribe(tx_slow, Some(conn));
        let ok = hub.subscribe(tx_ok, None);
        hub.claim(slow, 1);
        hub.claim(ok, 2);
        hub.dispatch(&ready(1, 1));
        hub.dispatch(&ready(2, 2));
        let started = Instant::now();
        for _ in 0..CLIENT_QUEUE + 10 {
            hub.dispatch(&sending(1));
        }
        hub.dispatch(&sending(2));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(rx_ok.len(), 2);
        // Its connection was shut down; its thread still ends its session.
        let mut byte = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut other_end, &mut byte).ok(), Some(0));
        assert_eq!(hub.unsubscribe(slow), vec![SessionId([1; 16])]);
    }
}
