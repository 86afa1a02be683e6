//! A server child process and in-process terminals that speak the real
//! protocol to it: what the operator-side and abuse suites share.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use tryst_tokio::core::crypto::StaticKeypair;
use tryst_tokio::core::terminal::{TerminalConfig, TerminalEvent};
use tryst_tokio::core::wire::{EndReason, PublicKey, SessionId};
use tryst_tokio::driver::terminal::{self, TerminalHandle};

use super::{text, tryst_for, Proc};

/// Longest any one step may take.
pub const STEP: Duration = Duration::from_secs(20);
/// Where servers and terminals bind: loopback, a port the kernel picks.
pub const LOOPBACK_ANY: &str = "127.0.0.1:0";
/// What a terminal asks for at 70% of its duration.
pub const EXTENSION_ASK_SECS: u32 = 4;

pub fn run(args: &[&str]) -> Output {
    tryst_for(args.first().copied().unwrap_or_default())
        .args(args)
        .output()
        .expect("the tryst binary runs")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn parse_key(hex_text: &str) -> PublicKey {
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex_text[2 * i..2 * i + 2], 16).expect("hex key");
    }
    PublicKey(key)
}

/// Both parties finish a session as completed, `first` first. The first
/// end notification may already have made the server end the session on
/// the other side (an end trigger), so the second finish may find it gone.
pub async fn finish_both(first: &Term, second: &Term, id: SessionId) {
    first
        .handle
        .finish(id, EndReason::Completed)
        .await
        .expect("finish");
    if let Err(e) = second.handle.finish(id, EndReason::Completed).await {
        assert!(
            e.to_string().contains("no such session"),
            "the second side's finish failed for another reason: {e:#}"
        );
    }
}

/// A combined server on fresh ports.
pub struct Server {
    pub proc: Proc,
    pub key: PublicKey,
    pub control: SocketAddr,
    pub trigger: SocketAddr,
}

pub fn start_server(dir: &Path, extra: &[&str], log_name: &str) -> Server {
    let args = server_args(dir, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = dir.parent().expect("parent").join(log_name);
    Server::of(Proc::start(&args, log, None))
}

/// The arguments of a combined server in `dir` on fresh loopback ports.
fn server_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let dir_s = dir.to_str().expect("utf-8 path");
    let mut args: Vec<String> = [
        "server",
        "--data-dir",
        dir_s,
        "--control",
        LOOPBACK_ANY,
        "--trigger",
        LOOPBACK_ANY,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

impl Server {
    /// `tryst connect --name NAME ... TARGET --send FILE` through this
    /// server from `state_dir`: asserts that it succeeded and that the
    /// receiver verified the file's SHA-256, and returns that digest.
    pub fn send_verified(&self, state_dir: &Path, name: &str, target: &str, file: &Path) -> String {
        let sent = super::tryst()
            .args(["connect", "--name", name, "--server"])
            .arg(self.control.to_string())
            .arg("--trigger")
            .arg(self.trigger.to_string())
            .args(["--server-key", &hex(&self.key.0), "--state-dir"])
            .arg(state_dir)
            .args([target, "--send"])
            .arg(file)
            .output()
            .expect("tryst connect runs");
        let said = text(&sent.stdout);
        assert!(sent.status.success(), "{said}{}", text(&sent.stderr));
        let digest = super::terminal_flows::sha256_hex(file);
        assert!(
            said.contains(&format!("the receiver verified SHA-256 {digest}")),
            "{said}"
        );
        digest
    }

    /// The server `proc` runs, once it printed its key and addresses.
    fn of(mut proc: Proc) -> Server {
        Server {
            key: parse_key(&proc.value("server key")),
            control: proc.addr("control"),
            trigger: proc.addr("trigger"),
            proc,
        }
    }
}

/// An in-process terminal `name` with `keys`, allowing `allow`, started at
/// `server` and online.
pub async fn online_term(server: &Server, name: &str, keys: StaticKeypair, allow: &[&str]) -> Term {
    let mut term = Term::start(
        name,
        keys,
        allow,
        server.control,
        server.trigger,
        server.key,
    )
    .await;
    term.online().await;
    term
}

/// An in-process terminal and its events.
pub struct Term {
    pub handle: TerminalHandle,
    pub events: flume::Receiver<TerminalEvent>,
    pub backlog: VecDeque<TerminalEvent>,
}

impl Term {
    pub async fn start(
        name: &str,
        keypair: StaticKeypair,
        allow: &[&str],
        control: SocketAddr,
        trigger: SocketAddr,
        server_key: PublicKey,
    ) -> Term {
        let mut config = TerminalConfig::new(name, trigger, server_key).expect("a valid name");
        config.extension_secs = Some(EXTENSION_ASK_SECS);
        let (handle, events) = terminal::spawn(
            config,
            keypair,
            control,
            LOOPBACK_ANY.parse().expect("addr"),
            allow,
        )
        .await
        .expect("the terminal starts");
        Term {
            handle,
            events,
            backlog: VecDeque::new(),
        }
    }

    /// Takes the first event `pick` accepts (earlier ones stay for later).
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&TerminalEvent) -> Option<T>,
    ) -> T {
        if let Some(i) = self.backlog.iter().position(|e| pick(e).is_some()) {
            let event = self.backlog.remove(i).expect("present");
            return pick(&event).expect("picked");
        }
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv_async())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; saw {:?}", self.backlog))
                .unwrap_or_else(|_| panic!("terminal stopped before {what}"));
            match pick(&event) {
                Some(found) => return found,
                None => self.backlog.push_back(event),
            }
        }
    }

    /// Registered and reachable: its registration was confirmed (the
    /// trigger server acknowledged a keepalive under the key installed at
    /// confirmation), so the server acknowledged it.
    pub async fn online(&mut self) {
        self.expect("registration", |e| {
            matches!(e, TerminalEvent::Registered { .. }).then_some(())
        })
        .await;
        self.expect("online", |e| {
            matches!(e, TerminalEvent::Online { .. }).then_some(())
        })
        .await;
    }

    /// Whether the server refused the registration (`true`) or accepted it.
    pub async fn registration_outcome(&mut self) -> bool {
        self.expect("a registration outcome", |e| match e {
            TerminalEvent::RegistrationRefused => Some(true),
            TerminalEvent::Registered { .. } => Some(false),
            _ => None,
        })
        .await
    }

    pub async fn ready(&mut self) -> SessionId {
        self.expect("an address notification", |e| match e {
            TerminalEvent::SessionReady { session_id, .. } => Some(*session_id),
            _ => None,
        })
        .await
    }

    pub async fn ended(&mut self, id: SessionId) -> EndReason {
        self.expect("the end of the session", |e| match e {
            TerminalEvent::SessionEnded {
                session_id, reason, ..
            } if *session_id == id => Some(*reason),
            _ => None,
        })
        .await
    }
}

/// TERM1 (allows TERM3) and TERM3, both online at `server`.
pub async fn pair(server: &Server, home_keys: StaticKeypair) -> (Term, Term) {
    let home = online_term(server, "term1", home_keys, &["term3"]).await;
    let phone = online_term(server, "term3", StaticKeypair::generate(&mut OsRng), &[]).await;
    (home, phone)
}

/// TERM3 connects to TERM1; returns the session both were told.
pub async fn connect(home: &mut Term, phone: &mut Term, secs: u32) -> SessionId {
    phone
        .handle
        .connect("term1", secs)
        .await
        .expect("request sent");
    let a = phone.ready().await;
    let b = home.ready().await;
    assert_eq!(a, b, "both sides were told the same session");
    a
}

/// The session log as JSON.
pub fn sessions_json(dir: &Path) -> Vec<serde_json::Value> {
    let out = run(&[
        "sessions",
        "--data-dir",
        dir.to_str().expect("path"),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "sessions failed: {}",
        text(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("JSON array")
}

pub fn row<'a>(log: &'a [serde_json::Value], id: &SessionId) -> Option<&'a serde_json::Value> {
    let id = hex(&id.0);
    log.iter().find(|r| r["session_id"] == id.as_str())
}

/// Waits until the log has `id` ended; returns its row.
pub async fn recorded(dir: &Path, id: &SessionId, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let log = sessions_json(dir);
        if let Some(r) = row(&log, id).filter(|r| r["live"] == false) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no record of {} in {log:?}",
            hex(&id.0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A raw control stream to a server, for attacks below the terminal
/// machine: whole messages out (they are self-framed), whole messages in.
pub struct RawStream {
    pub socket: std::net::TcpStream,
    frames: tryst_tokio::core::wire::FrameBuffer,
    unread: Vec<u8>,
}

impl RawStream {
    /// Connects to `addr` (a loopback server).
    pub fn connect(addr: SocketAddr) -> std::io::Result<RawStream> {
        let socket = std::net::TcpStream::connect_timeout(&addr, STEP)?;
        socket.set_nodelay(true)?;
        Ok(RawStream {
            socket,
            frames: tryst_tokio::core::wire::FrameBuffer::new(),
            unread: Vec::new(),
        })
    }

    /// Writes `bytes` (one or more encoded messages, or any garbage).
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.socket.write_all(bytes)
    }

    /// Encodes and writes one message.
    pub fn send_message(
        &mut self,
        message: &tryst_tokio::core::wire::Message<'_>,
    ) -> std::io::Result<()> {
        let mut buf = vec![0u8; tryst_tokio::core::wire::MAX_MESSAGE_LEN];
        let n = message
            .encode(&mut buf)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        self.send(&buf[..n])
    }

    /// The next whole message within `within`: `Ok(None)` when the server
    /// closed the stream, `Err` (kind `WouldBlock`/`TimedOut`) when
    /// nothing came.
    pub fn recv(&mut self, within: Duration) -> std::io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        let deadline = Instant::now() + within;
        loop {
            let mut input: &[u8] = &self.unread;
            let got = self
                .frames
                .push(&mut input)
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?
                .map(<[u8]>::to_vec);
            let taken = self.unread.len() - input.len();
            self.unread.drain(..taken);
            if let Some(message) = got {
                return Ok(Some(message));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            self.socket.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 4096];
            match self.socket.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.unread.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the server refused this stream's registration within
    /// `within`: a `RetryLater` arrived, or the stream closed.
    pub fn refused_within(&mut self, within: Duration) -> bool {
        use tryst_tokio::core::wire::Message;
        self.ends_within(within, |m| {
            matches!(Message::decode(m), Ok(Message::RetryLater(_)))
        })
    }

    /// Whether the server closed the stream within `within` (reading and
    /// discarding whatever it sent first).
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.ends_within(within, |_| false)
    }

    /// Reads until the stream closes (`true`), a message `last` picks
    /// arrives (`true`), or `within` passes (`false`).
    fn ends_within(&mut self, within: Duration, last: impl Fn(&[u8]) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.recv(left) {
                Ok(None) => return true,
                Ok(Some(m)) if last(&m) => return true,
                Ok(Some(_)) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                    ) =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }
}

// ----- Abuse suite, requests part: raw registered terminals -------------

/// A core time for the raw clients: microseconds since the first call.
pub fn raw_now() -> tryst_tokio::core::time::Instant {
    use std::sync::OnceLock;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let micros = u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX);
    tryst_tokio::core::time::Instant::from_micros(micros)
}

impl RawStream {
    /// Connects to `server` from the loopback address `local` (any of
    /// 127.0.0.0/8 works on Linux), so one test can play many sources.
    pub async fn connect_from(
        local: std::net::IpAddr,
        server: SocketAddr,
    ) -> std::io::Result<RawStream> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(local, 0))?;
        let stream = tokio::time::timeout(STEP, socket.connect(server))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let socket = stream.into_std()?;
        socket.set_nonblocking(false)?;
        socket.set_nodelay(true)?;
        Ok(RawStream {
            socket,
            frames: tryst_tokio::core::wire::FrameBuffer::new(),
            unread: Vec::new(),
        })
    }
}

/// What a raw registration got back in its handshake reply.
#[derive(Debug)]
pub enum RawAnswer {
    /// A `RegisterAck`: a channel, a device ID and a UDP key.
    Ack(Box<RawTerminal>),
    /// An `Error` with this code.
    Refused(tryst_tokio::core::wire::ErrorCode),
}

/// A terminal registered by hand over a [`RawStream`]: it speaks the real
/// protocol (Noise IK, sealed records) without the terminal machine, so a
/// test can send what a well-behaved terminal never would.
pub struct RawTerminal {
    pub stream: RawStream,
    pub channel: tryst_tokio::core::crypto::SecureChannel,
    pub device: u64,
    pub udp_key: tryst_tokio::core::wire::UdpKey,
    /// The wire length of the handshake reply.
    pub reply_len: usize,
}

impl std::fmt::Debug for RawTerminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawTerminal")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl RawTerminal {
    /// Registers `name` with `keys` at `server` from `local` (permission
    /// list mode) and returns what the server answered; an `Ack` is
    /// confirmed at once with a sealed `Poll`.
    pub async fn register(
        local: std::net::IpAddr,
        server: SocketAddr,
        server_key: PublicKey,
        name: &str,
        keys: &StaticKeypair,
    ) -> std::io::Result<(RawAnswer, usize)> {
        use tryst_tokio::core::crypto::Initiator;
        use tryst_tokio::core::wire::{
            DecisionMode, HandshakeInit, Message, Name, Poll, Register, MAX_MESSAGE_LEN,
        };
        let bad = |what: &str| std::io::Error::other(what.to_owned());
        let mut stream = RawStream::connect_from(local, server).await?;
        let mut register = vec![0u8; 256];
        let n = Message::Register(Register {
            mode: DecisionMode::PermissionList,
            identity: keys.public_key(),
            name: Name::new(name).map_err(|_| bad("bad name"))?,
            local: None,
        })
        .encode(&mut register)
        .map_err(|_| bad("encode"))?;
        let mut noise = vec![0u8; MAX_MESSAGE_LEN];
        let (mut initiator, len) = Initiator::start(
            &mut OsRng,
            raw_now(),
            keys,
            &server_key,
            &register[..n],
            &mut noise,
        )
        .map_err(|_| bad("handshake start"))?;
        stream.send_message(&Message::HandshakeInit(HandshakeInit {
            noise: &noise[..len],
        }))?;
        let reply = stream
            .recv(STEP)?
            .ok_or_else(|| bad("closed before a reply"))?;
        let reply_len = reply.len();
        let Ok(Message::HandshakeReply(hs)) = Message::decode(&reply) else {
            return Err(bad("not a handshake reply"));
        };
        let mut payload = vec![0u8; MAX_MESSAGE_LEN];
        let (channel, m) = initiator
            .finish(raw_now(), &hs, &mut payload)
            .map_err(|_| bad("handshake finish"))?;
        match Message::decode(&payload[..m]) {
            Ok(Message::RegisterAck(ack)) => {
                let mut raw = RawTerminal {
                    stream,
                    channel,
                    device: ack.device_id.0,
                    udp_key: ack.udp_key,
                    reply_len,
                };
                raw.send_sealed(&Message::Poll(Poll))?;
                Ok((RawAnswer::Ack(Box::new(raw)), reply_len))
            }
            Ok(Message::Error(e)) => Ok((RawAnswer::Refused(e.code), reply_len)),
            _ => Err(bad("unexpected handshake payload")),
        }
    }

    /// Seals `message` on the channel and writes it.
    pub fn send_sealed(
        &mut self,
        message: &tryst_tokio::core::wire::Message<'_>,
    ) -> std::io::Result<()> {
        let bytes = self.seal(message)?;
        self.stream.send(&bytes)
    }

    /// `message` sealed on the channel, as stream bytes.
    pub fn seal(
        &mut self,
        message: &tryst_tokio::core::wire::Message<'_>,
    ) -> std::io::Result<Vec<u8>> {
        let mut plain = vec![0u8; tryst_tokio::core::wire::MAX_MESSAGE_LEN];
        let n = message
            .encode(&mut plain)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let mut sealed = vec![0u8; n + 128];
        let m = self
            .channel
            .seal(&plain[..n], &mut sealed)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        sealed.truncate(m);
        Ok(sealed)
    }

    /// The next sealed record's plaintext within `within` (`Ok(None)`: closed).
    pub fn recv_sealed(&mut self, within: Duration) -> std::io::Result<Option<Vec<u8>>> {
        use tryst_tokio::core::wire::Message;
        let Some(record) = self.stream.recv(within)? else {
            return Ok(None);
        };
        let Ok(Message::Sealed(sealed)) = Message::decode(&record) else {
            return Err(std::io::Error::other("not a sealed record"));
        };
        let mut plain = vec![0u8; tryst_tokio::core::wire::MAX_MESSAGE_LEN];
        let n = self
            .channel
            .open(&sealed, &mut plain)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        plain.truncate(n);
        Ok(Some(plain))
    }
}
// ---- Issue 12, part abuse-streams: terminals from a chosen loopback
// address, servers under a low descriptor limit, split servers. ----

impl Term {
    /// [`Term::start`] with both its sockets (control stream and UDP) on
    /// `ip` (another loopback address, e.g. 127.0.0.2, is another source).
    pub async fn start_from(
        ip: std::net::IpAddr,
        name: &str,
        keypair: StaticKeypair,
        allow: &[&str],
        server: &Server,
    ) -> Term {
        let mut config =
            TerminalConfig::new(name, server.trigger, server.key).expect("a valid name");
        config.extension_secs = Some(EXTENSION_ASK_SECS);
        let options = terminal::TerminalOptions {
            control_local: Some(ip),
            ..terminal::TerminalOptions::default()
        };
        let (handle, all) = terminal::spawn_with(
            config,
            keypair,
            server.control,
            SocketAddr::new(ip, 0),
            allow,
            options,
        )
        .await
        .expect("the terminal starts");
        let (tx, events) = flume::unbounded();
        tokio::spawn(async move {
            while let Ok(event) = all.recv_async().await {
                let terminal::Event::Terminal(event) = event else {
                    continue;
                };
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        Term {
            handle,
            events,
            backlog: VecDeque::new(),
        }
    }
}

impl Proc {
    /// `tryst ARGS` run by `sh` after `ulimit NOFILE` (e.g. `-Sn 300`, a
    /// low soft descriptor limit the binary inherits, or `-n 200`, soft and
    /// hard), stderr to `log`.
    pub fn start_with_nofile(
        args: &[&str],
        nofile: &str,
        log: std::path::PathBuf,
        rust_log: Option<&str>,
    ) -> Proc {
        let mut cmd = std::process::Command::new("sh");
        cmd.env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let script = format!("ulimit {nofile} && exec \"$0\" \"$@\"");
        cmd.arg("-c")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_tryst"))
            .args(args);
        Proc::spawn(cmd, log)
    }
}

/// A combined server under a soft descriptor limit of `nofile`.
pub fn start_server_with_nofile(
    dir: &Path,
    extra: &[&str],
    nofile: &str,
    log_name: &str,
) -> Server {
    let args = server_args(dir, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = dir.parent().expect("parent").join(log_name);
    Server::of(Proc::start_with_nofile(&args, nofile, log, Some("info")))
}

/// Fresh key pairs for split servers under `root`: the session server's
/// in `root/session`, the trigger server's in `root/trigger`; returns their
/// public keys in hex.
pub fn split_keys(root: &Path) -> (String, String) {
    let mut keys = Vec::new();
    for (dir, file) in [("session", "server.key"), ("trigger", "trigger.key")] {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let out = run(&["keygen", "--out", dir.join(file).to_str().expect("path")]);
        assert!(out.status.success(), "keygen: {}", text(&out.stderr));
        keys.push(text(&out.stdout).trim().to_owned());
    }
    let trigger = keys.pop().expect("two keys");
    let session = keys.pop().expect("two keys");
    (session, trigger)
}

/// `tryst trigger-server` with the keys of [`split_keys`], on `udp` and
/// `link` (`127.0.0.1:0` for kernel-picked ports).
pub fn start_trigger_server(
    root: &Path,
    session_key: &str,
    udp: &str,
    link: &str,
    rust_log: &str,
) -> Proc {
    let tdir = root.join("trigger");
    let args = [
        "trigger-server",
        "--data-dir",
        tdir.to_str().expect("path"),
        "--trigger",
        udp,
        "--link",
        link,
        "--session-server-key",
        session_key,
    ];
    Proc::start(&args, root.join("trigger.log"), Some(rust_log))
}

/// `tryst session-server` with the keys of [`split_keys`], linked to
/// `link` (the trigger server's key: `trigger_key`, hex); terminals are
/// told the trigger server is at `trigger_udp`.
pub fn start_session_server(
    root: &Path,
    session_key: &str,
    trigger_key: &str,
    trigger_udp: SocketAddr,
    link: &str,
    rust_log: &str,
) -> Server {
    let sdir = root.join("session");
    let args = [
        "session-server",
        "--data-dir",
        sdir.to_str().expect("path"),
        "--control",
        LOOPBACK_ANY,
        "--trigger-link",
        link,
        "--trigger-key",
        trigger_key,
    ];
    let mut proc = Proc::start(&args, root.join("session.log"), Some(rust_log));
    Server {
        key: parse_key(session_key),
        control: proc.addr("control"),
        trigger: trigger_udp,
        proc,
    }
}

/// A loopback address with a port free right now (for a server started later).
pub fn free_loopback_port(udp: bool) -> SocketAddr {
    if udp {
        std::net::UdpSocket::bind(LOOPBACK_ANY).and_then(|s| s.local_addr())
    } else {
        std::net::TcpListener::bind(LOOPBACK_ANY).and_then(|s| s.local_addr())
    }
    .expect("a free port")
}

/// A trigger server and a session server as two processes, linked; the
/// trigger server's process is kept in the second field. Both log at
/// `rust_log`.
pub fn start_split_servers(root: &Path, rust_log: &str) -> (Server, Proc) {
    let (session_key, trigger_key) = split_keys(root);
    let mut trig = start_trigger_server(root, &session_key, LOOPBACK_ANY, LOOPBACK_ANY, rust_log);
    let trigger_udp = trig.addr("trigger");
    let link = trig.addr("link").to_string();
    let server = start_session_server(
        root,
        &session_key,
        &trigger_key,
        trigger_udp,
        &link,
        rust_log,
    );
    (server, trig)
}

// ----- issue 12, part c (registration handshake): on-path relays ------------

/// An on-path TCP relay on loopback in front of `upstream`: a terminal given
/// its address as the control server reaches the server through it, and
/// [`TcpRelay::cut`] closes every relayed stream at once (a lost stream, as
/// a NAT timeout or a flaky link would cause).
pub struct TcpRelay {
    pub addr: SocketAddr,
    live: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl TcpRelay {
    /// Listens on a kernel-picked loopback port and relays to `upstream`.
    pub fn start(upstream: SocketAddr) -> TcpRelay {
        let listener = std::net::TcpListener::bind(LOOPBACK_ANY).expect("relay listens");
        let addr = listener.local_addr().expect("relay address");
        let live = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = live.clone();
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { break };
                let Ok(up) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else {
                    continue;
                };
                if let Ok(mut streams) = kept.lock() {
                    streams.extend(down.try_clone().ok());
                    streams.extend(up.try_clone().ok());
                }
                for (mut from, mut to) in [(down, up), (up2, down2)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        TcpRelay { addr, live }
    }

    /// Closes every stream relayed so far, both ways.
    pub fn cut(&self) {
        if let Ok(mut streams) = self.live.lock() {
            for s in streams.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// An on-path UDP relay on loopback in front of a trigger server: a terminal
/// given its address as `--trigger` sends through it; it records every
/// datagram the terminal sent, so a test can replay one from another socket.
pub struct UdpRelay {
    /// Where the terminal sends.
    pub addr: SocketAddr,
    /// The relay's own address towards the server: what the server observes.
    pub outer: SocketAddr,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl UdpRelay {
    /// Binds two kernel-picked loopback sockets and relays for one terminal.
    pub fn start(upstream: SocketAddr) -> UdpRelay {
        UdpRelay::start_filtered(upstream, |_| false)
    }

    /// As [`UdpRelay::start`], a NAT in front of the terminal that drops
    /// every datagram for which `drop` holds, both ways (e.g. the peer
    /// packets, so no direct path opens and only the tryst relay works).
    pub fn start_filtered(upstream: SocketAddr, drop: fn(&[u8]) -> bool) -> UdpRelay {
        use std::sync::{Arc, Mutex};
        let front = std::net::UdpSocket::bind(LOOPBACK_ANY).expect("relay binds");
        let back = std::net::UdpSocket::bind(LOOPBACK_ANY).expect("relay binds");
        let addr = front.local_addr().expect("relay address");
        let outer = back.local_addr().expect("relay address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let (front2, back2) = (
            front.try_clone().expect("clone"),
            back.try_clone().expect("clone"),
        );
        let (seen2, client2) = (seen.clone(), client.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = front.recv_from(&mut buf) {
                if let Ok(mut c) = client2.lock() {
                    *c = Some(from);
                }
                if let Ok(mut s) = seen2.lock() {
                    s.push(buf[..n].to_vec());
                }
                if !drop(&buf[..n]) {
                    let _ = back.send_to(&buf[..n], upstream);
                }
            }
        });
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, _)) = back2.recv_from(&mut buf) {
                if drop(&buf[..n]) {
                    continue;
                }
                let to = client.lock().ok().and_then(|c| *c);
                if let Some(to) = to {
                    let _ = front2.send_to(&buf[..n], to);
                }
            }
        });
        UdpRelay { addr, outer, seen }
    }

    /// Every datagram the terminal sent through the relay so far, in order.
    pub fn sent(&self) -> Vec<Vec<u8>> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}
