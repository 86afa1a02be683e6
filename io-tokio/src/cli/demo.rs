//! `tryst demo`: the seed's flows, end to end, on loopback. Both servers
//! and three terminals run in this process with real sockets on 127.0.0.1
//! and real cryptography, and a file crosses the direct peer path; the
//! story checks every step and fails loudly if one did not do what it says.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use rand_core::OsRng;
use tryst_core::crypto::StaticKeypair;
use tryst_core::names::{NameRegistry, TrustMode};
use tryst_core::peer::session::PeerEvent;
use tryst_core::session_server::{SessionConfig, SessionEndReason, SessionEvent, SessionRecord};
use tryst_core::terminal::{TerminalConfig, TerminalEvent};
use tryst_core::trigger_server::{TriggerConfig, TriggerEvent};
use tryst_core::wire::{EndReason, PublicKey, Role, SessionId, SessionKey};

use crate::cli::transfer::{hex, human_bytes};
use crate::driver::terminal;
use crate::driver::terminal::{Event, TerminalOptions};
use crate::driver::{session_server as session, trigger_server as trigger};
use tryst_std::transfer::{file_sha256, FileSource};

const LOOPBACK_ANY_PORT: &str = "127.0.0.1:0";
/// How long any one step may take before the demo calls it failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// The permitted duration the phone asks for: short, so the 70% point comes soon.
const DEMO_DURATION_SECS: u32 = 4;
/// The file the phone sends: small, and sent at [`DEMO_RATE`] so that the
/// transfer is still running at 70% of [`DEMO_DURATION_SECS`].
const DEMO_FILE_LEN: usize = 3 << 20;
/// Bytes a second the demo's transfer is held to (about 4 s for the file).
const DEMO_RATE: u64 = 768 << 10;

/// Events of one machine, with a backlog so that waiting for one event
/// never loses another that arrived first.
struct Inbox<E> {
    rx: flume::Receiver<E>,
    backlog: VecDeque<E>,
}

impl<E: Debug> Inbox<E> {
    fn new(rx: flume::Receiver<E>) -> Self {
        Inbox {
            rx,
            backlog: VecDeque::new(),
        }
    }

    /// Takes the first event (old or new) that `pick` accepts.
    async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&E) -> Option<T>,
    ) -> anyhow::Result<T> {
        if let Some(i) = self.backlog.iter().position(|e| pick(e).is_some()) {
            if let Some(event) = self.backlog.remove(i) {
                if let Some(found) = pick(&event) {
                    return Ok(found);
                }
            }
        }
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.rx.recv_async())
                .await
                .with_context(|| format!("timed out waiting for {what}"))?
                .with_context(|| format!("machine stopped before {what}"))?;
            match pick(&event) {
                Some(found) => return Ok(found),
                None => self.backlog.push_back(event),
            }
        }
    }
}

struct DemoTerminal {
    name: &'static str,
    handle: terminal::TerminalHandle,
    events: Inbox<Event>,
    observed: SocketAddr,
}

/// What a terminal learned from its address notification.
struct Ready {
    session_id: SessionId,
    role: Role,
    peer_name: String,
    peer_addr: SocketAddr,
    session_key: SessionKey,
}

fn short(key: &PublicKey) -> String {
    key.0[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        + "…"
}

fn short_id(id: &SessionId) -> String {
    id.0[..4].iter().map(|b| format!("{b:02x}")).collect()
}

async fn start_terminal(
    name: &'static str,
    allow: &[&str],
    trigger_udp: SocketAddr,
    session: &session::SessionHandle,
    recv_dir: Option<PathBuf>,
) -> anyhow::Result<DemoTerminal> {
    let mut config = TerminalConfig::new(name, trigger_udp, session.public_key)
        .map_err(|e| anyhow::anyhow!("bad name {name}: {e}"))?;
    config.extension_secs = Some(DEMO_DURATION_SECS);
    let keypair = StaticKeypair::generate(&mut OsRng);
    let options = TerminalOptions {
        recv_dir,
        ..TerminalOptions::default()
    };
    let (handle, events) = terminal::spawn_with(
        config,
        keypair,
        session.control_addr,
        LOOPBACK_ANY_PORT.parse()?,
        allow,
        options,
    )
    .await?;
    let mut events = Inbox::new(events);
    let device = events
        .expect("registration", |e| match e {
            Event::Terminal(TerminalEvent::Registered { device_id }) => Some(*device_id),
            _ => None,
        })
        .await?;
    let observed = events
        .expect("first keepalive ack", |e| match e {
            Event::Terminal(TerminalEvent::Online { observed }) => Some(*observed),
            _ => None,
        })
        .await?;
    println!(
        "  {name:<8} registered (device {:016x}), keepalives acked, reachable at {observed} as the trigger server sees it",
        device.0
    );
    Ok(DemoTerminal {
        name,
        handle,
        events,
        observed,
    })
}

async fn ready(t: &mut DemoTerminal) -> anyhow::Result<Ready> {
    t.events
        .expect("an address notification", |e| match e {
            Event::Terminal(TerminalEvent::SessionReady {
                session_id,
                role,
                peer_name,
                peer_addr,
                session_key,
                ..
            }) => Some(Ready {
                session_id: *session_id,
                role: *role,
                peer_name: peer_name.to_string(),
                peer_addr: *peer_addr,
                session_key: *session_key,
            }),
            _ => None,
        })
        .await
}

async fn refused(t: &mut DemoTerminal, target: &str) -> anyhow::Result<Duration> {
    let started = tokio::time::Instant::now();
    let request = t.handle.connect(target, DEMO_DURATION_SECS).await?;
    let mut outcome = None;
    t.events
        .expect("an answer", |e| match e {
            Event::Terminal(TerminalEvent::ConnectFailed { request_id })
                if *request_id == request =>
            {
                outcome = Some(false);
                Some(())
            }
            Event::Terminal(TerminalEvent::SessionReady { request_id, .. })
                if *request_id == request =>
            {
                outcome = Some(true);
                Some(())
            }
            _ => None,
        })
        .await?;
    if outcome == Some(true) {
        bail!("{} reached {target}, which must not happen", t.name);
    }
    Ok(started.elapsed())
}

async fn ended(t: &mut DemoTerminal, id: SessionId) -> anyhow::Result<EndReason> {
    t.events
        .expect("the end of the session", |e| match e {
            Event::Terminal(TerminalEvent::SessionEnded {
                session_id, reason, ..
            }) if *session_id == id => Some(*reason),
            _ => None,
        })
        .await
}

async fn record(events: &mut Inbox<SessionEvent>, id: SessionId) -> anyhow::Result<SessionRecord> {
    events
        .expect("the session record", |e| match e {
            SessionEvent::SessionRecord(r) if r.session_id == id => Some(r.clone()),
            _ => None,
        })
        .await
}

/// A scratch directory for the demo's files, removed when dropped.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new() -> std::io::Result<Scratch> {
        let mut tag = [0u8; 6];
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut tag);
        let path = std::env::temp_dir().join(format!("tryst-demo-{}", hex(&tag)));
        std::fs::create_dir_all(&path)?;
        Ok(Scratch { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes `len` random bytes to `path`.
fn write_random_file(path: &Path, len: usize) -> std::io::Result<()> {
    let mut data = vec![0u8; len];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut data);
    std::fs::write(path, data)
}

/// The two servers, and the session server's events.
struct Servers {
    /// What the session server reports (session records among them).
    events: Inbox<SessionEvent>,
    session: session::SessionHandle,
    /// Kept open for as long as the trigger server runs.
    _trigger_events: flume::Receiver<TriggerEvent>,
    trigger: trigger::TriggerHandle,
}

/// The three terminals, and the scratch directory, dropped after them.
struct Cast {
    mallory: DemoTerminal,
    phone: DemoTerminal,
    home: DemoTerminal,
    scratch: Scratch,
}

/// Runs the story; `Ok` only if every step did what it said.
pub async fn run() -> anyhow::Result<()> {
    println!("tryst demo: the seed's flows on loopback, real sockets, real cryptography\n");
    let mut servers = start_servers().await?;
    let mut cast = register_terminals(&servers).await?;
    let id = permitted_request(&mut cast).await?;
    let (photo, digest) = start_transfer(&mut cast, id).await?;
    extend_and_store(&mut cast, id, &photo, digest).await?;
    let first = end_notifications(&mut cast, &mut servers.events, id).await?;
    refused_requests(&mut cast.mallory).await?;
    let forced = forced_end(&mut cast, &mut servers).await?;
    session_log(&first, &forced)?;
    println!("\nevery step did what it said.");
    Ok(())
}

/// [servers]: the trigger server and the session server, on loopback.
async fn start_servers() -> anyhow::Result<Servers> {
    println!("[servers]");
    let trigger_keys = StaticKeypair::generate(&mut OsRng);
    let session_keys = StaticKeypair::generate(&mut OsRng);
    let (trigger, trigger_events) = trigger::spawn(
        TriggerConfig::default(),
        trigger_keys,
        &[session_keys.public_key()],
        LOOPBACK_ANY_PORT.parse()?,
        LOOPBACK_ANY_PORT.parse()?,
    )
    .await?;
    let session_config = SessionConfig {
        max_total_duration: Duration::from_secs(u64::from(DEMO_DURATION_SECS) * 2),
        ..SessionConfig::default()
    };
    let (session, server_events) = session::spawn(
        session_config,
        session_keys,
        NameRegistry::new(TrustMode::TrustOnFirstUse),
        trigger.public_key,
        trigger.link_addr,
        LOOPBACK_ANY_PORT.parse()?,
    )
    .await?;
    let events = Inbox::new(server_events);
    println!(
        "  trigger server: keepalives on udp {}, server link on tcp {}, key {}",
        trigger.udp_addr,
        trigger.link_addr,
        short(&trigger.public_key)
    );
    println!(
        "  session server: terminals on tcp {}, key {}",
        session.control_addr,
        short(&session.public_key)
    );
    Ok(Servers {
        events,
        session,
        _trigger_events: trigger_events,
        trigger,
    })
}

/// [801-804]: TERM1 (with TERM3 on its list), TERM3 and mallory register and go online.
async fn register_terminals(servers: &Servers) -> anyhow::Result<Cast> {
    println!("\n[801-804] terminals register with both servers over Noise IK, then keep their NAT mapping alive");
    let (trigger_udp, session) = (servers.trigger.udp_addr, &servers.session);
    let scratch = Scratch::new()?;
    let inbox = scratch.path.join("TERM1-inbox");
    std::fs::create_dir(&inbox)?;
    let home = start_terminal("TERM1", &["TERM3"], trigger_udp, session, Some(inbox)).await?;
    let phone = start_terminal("TERM3", &[], trigger_udp, session, None).await?;
    let mallory = start_terminal("mallory", &[], trigger_udp, session, None).await?;
    println!("  TERM1's permission list: TERM3");
    Ok(Cast {
        mallory,
        phone,
        home,
        scratch,
    })
}

/// [805-812]: TERM3 asks for TERM1 and both sides are told the same session.
async fn permitted_request(cast: &mut Cast) -> anyhow::Result<SessionId> {
    println!("\n[805-812] TERM3 asks for TERM1; TERM1 is triggered, sends its list, the server searches it");
    let (phone, home) = (&mut cast.phone, &mut cast.home);
    let request = phone.handle.connect("TERM1", DEMO_DURATION_SECS).await?;
    let phone_ready = ready(phone).await?;
    let home_ready = ready(home).await?;
    if phone_ready.session_id != home_ready.session_id
        || phone_ready.session_key != home_ready.session_key
    {
        bail!("the two sides were told different sessions");
    }
    if phone_ready.peer_addr != home.observed || home_ready.peer_addr != phone.observed {
        bail!("a side was told an address other than its peer's observed one");
    }
    if phone_ready.role != Role::Connecting || home_ready.role != Role::Connected {
        bail!("roles are wrong");
    }
    println!(
        "  request {request}: session {} for {DEMO_DURATION_SECS} s, one fresh session key for both sides",
        short_id(&phone_ready.session_id)
    );
    println!(
        "  TERM3 was told {} is at {}; TERM1 was told {} is at {}",
        phone_ready.peer_name, phone_ready.peer_addr, home_ready.peer_name, home_ready.peer_addr
    );
    Ok(phone_ready.session_id)
}

/// [S205-S207]: TERM3 starts sending a random file over the direct path; the file and its digest.
async fn start_transfer(cast: &mut Cast, id: SessionId) -> anyhow::Result<(PathBuf, [u8; 32])> {
    println!("\n[S205-S207] TERM3 sends a file to TERM1 over the direct path");
    let photo = cast.scratch.path.join("photo.jpg");
    write_random_file(&photo, DEMO_FILE_LEN)?;
    let (source, digest) = {
        let photo = photo.clone();
        tokio::task::spawn_blocking(move || {
            let digest = file_sha256(&photo)?;
            let source = FileSource::open(&photo).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok::<_, anyhow::Error>((source, digest))
        })
        .await??
    };
    cast.phone
        .handle
        .send_file(id, source, Some(DEMO_RATE))
        .await?;
    let path = cast
        .phone
        .events
        .expect("the direct path", |e| match e {
            Event::Peer {
                session_id,
                event: PeerEvent::Connected { peer_addr, .. },
            } if *session_id == id => Some(*peer_addr),
            _ => None,
        })
        .await?;
    println!(
        "  both sides punched from their keepalive sockets; Noise KK handshake with the session key as PSK: TERM3 -> {path}"
    );
    println!(
        "  sending photo.jpg ({}, SHA-256 {}…) at {}/s so that it is still running at 70%",
        human_bytes(DEMO_FILE_LEN as u64),
        &hex(&digest)[..16],
        human_bytes(DEMO_RATE)
    );
    Ok((photo, digest))
}

/// [S1504-S1507]: the extension at 70%, then TERM1 stores the file and closes the direct path.
async fn extend_and_store(
    cast: &mut Cast,
    id: SessionId,
    photo: &Path,
    digest: [u8; 32],
) -> anyhow::Result<()> {
    println!("\n[S1504-S1507] the transfer is still running at 70% of the duration: TERM3 asks for more time");
    let granted = extension(&mut cast.phone, id).await?;
    if granted <= DEMO_DURATION_SECS {
        bail!("the extension was refused");
    }
    println!("  granted: the session may now last {granted} s (both sides were told)");
    stored_file(&mut cast.home, id, photo, digest).await?;
    direct_path_completed(&mut cast.phone, id).await
}

/// The duration an extension granted, 0 if it was refused.
async fn extension(phone: &mut DemoTerminal, id: SessionId) -> anyhow::Result<u32> {
    phone
        .events
        .expect("an extension", |e| match e {
            Event::Terminal(TerminalEvent::SessionExtended {
                session_id,
                duration_secs,
            }) if *session_id == id => Some(*duration_secs),
            Event::Terminal(TerminalEvent::ExtensionRefused { session_id })
                if *session_id == id =>
            {
                Some(0)
            }
            _ => None,
        })
        .await
}

/// TERM1 kept the file, and it is byte for byte the one sent.
async fn stored_file(
    home: &mut DemoTerminal,
    id: SessionId,
    photo: &Path,
    digest: [u8; 32],
) -> anyhow::Result<()> {
    let stored = home
        .events
        .expect("the received file", |e| match e {
            Event::Received {
                session_id,
                outcome,
            } if *session_id == id => Some(outcome.clone()),
            _ => None,
        })
        .await?
        .map_err(|why| anyhow::anyhow!("TERM1 did not keep the file: {why}"))?;
    if stored.digest != digest || std::fs::read(&stored.path)? != std::fs::read(photo)? {
        bail!("the stored file differs from the one sent");
    }
    println!(
        "  TERM1 stored {} ({}): SHA-256 matches, checked by TERM1 and again here",
        stored
            .path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        human_bytes(stored.size)
    );
    Ok(())
}

/// The peer closed the direct path as `Completed`.
async fn direct_path_completed(phone: &mut DemoTerminal, id: SessionId) -> anyhow::Result<()> {
    let (reason, by_peer) = phone
        .events
        .expect("the close of the direct path", |e| match e {
            Event::Peer {
                session_id,
                event: PeerEvent::Ended {
                    reason, by_peer, ..
                },
            } if *session_id == id => Some((*reason, *by_peer)),
            _ => None,
        })
        .await?;
    if reason != EndReason::Completed || !by_peer {
        bail!("the direct path ended with {reason:?} (by the peer: {by_peer})");
    }
    Ok(())
}

/// [814/815]: both terminals end the session; the server's record of it.
async fn end_notifications(
    cast: &mut Cast,
    server_events: &mut Inbox<SessionEvent>,
    id: SessionId,
) -> anyhow::Result<SessionRecord> {
    println!("\n[814/815] the transfer is done: both terminals send end notifications");
    ended(&mut cast.phone, id).await?;
    ended(&mut cast.home, id).await?;
    let first = record(server_events, id).await?;
    if first.reason != SessionEndReason::Completed || first.extensions != 1 {
        bail!(
            "the record says {:?} with {} extensions",
            first.reason,
            first.extensions
        );
    }
    if first.bytes_requester_to_target() < DEMO_FILE_LEN as u64 {
        bail!(
            "the record counts {} bytes from TERM3, less than the file",
            first.bytes_requester_to_target()
        );
    }
    println!(
        "  recorded: {:?}, {} extension, {} from TERM3 to TERM1",
        first.reason,
        first.extensions,
        human_bytes(first.bytes_requester_to_target())
    );
    Ok(first)
}

/// [S511]: mallory's two requests get the same answer after about the same time.
async fn refused_requests(mallory: &mut DemoTerminal) -> anyhow::Result<()> {
    println!("\n[S511] requests that may not succeed get one and the same answer");
    let denied = refused(mallory, "TERM1").await?;
    let unknown = refused(mallory, "nobody").await?;
    println!(
        "  mallory -> TERM1 (not on its list): not permitted, after {:.1} s",
        denied.as_secs_f64()
    );
    println!(
        "  mallory -> nobody (no such name):    not permitted, after {:.1} s",
        unknown.as_secs_f64()
    );
    if denied.abs_diff(unknown) > Duration::from_millis(500) {
        bail!("the two refusals took visibly different times");
    }
    Ok(())
}

/// [S1604/S1605]: a second session, ended by the operator; the server's record of it.
async fn forced_end(cast: &mut Cast, servers: &mut Servers) -> anyhow::Result<SessionRecord> {
    println!("\n[S1604/S1605] TERM3 connects again; the operator ends the session through the trigger server");
    let (phone, home) = (&mut cast.phone, &mut cast.home);
    phone.handle.connect("TERM1", DEMO_DURATION_SECS).await?;
    let second = ready(phone).await?.session_id;
    ready(home).await?;
    servers.session.end_session(second).await?;
    let (a, b) = (ended(phone, second).await?, ended(home, second).await?);
    if a != EndReason::Forced || b != EndReason::Forced {
        bail!("the terminals ended with {a:?} and {b:?}, not Forced");
    }
    println!("  both terminals stopped: forced end");
    record(&mut servers.events, second).await
}

/// [S1606]: the session log, both records.
fn session_log(first: &SessionRecord, forced: &SessionRecord) -> anyhow::Result<()> {
    println!("\n[S1606] the session log");
    println!(
        "  {:<9} {:<9} {:<8} {:>9} {:>10} {:>10}  end",
        "session", "who", "whom", "duration", "extensions", "bytes"
    );
    for r in [first, forced] {
        println!(
            "  {:<9} {:<9} {:<8} {:>8.1}s {:>10} {:>10}  {:?}",
            short_id(&r.session_id),
            r.requester,
            r.target,
            r.duration.as_secs_f64(),
            r.extensions,
            r.bytes_requester_to_target() + r.bytes_target_to_requester(),
            r.reason
        );
    }
    if forced.reason != SessionEndReason::Forced {
        bail!("the forced session's record says {:?}", forced.reason);
    }
    Ok(())
}
