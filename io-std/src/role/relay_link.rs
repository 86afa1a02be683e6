//! The relay link ([`tryst_core::relay::link`]) on blocking TCP threads,
//! the same in both binaries: the session server's side
//! ([`RelayLinkClient`], `server --relay-at ADDR --relay-link ADDR`) and the
//! standalone relay's side ([`RelayLinkHub`], `relay --link-listen ADDR
//! --session-server-key KEY`). The core does the handshake, the records
//! and the checks; these threads only move bytes, the relay's commands
//! and its events.
//!
//! The link carries little (one message per extension, end, allocation
//! and ended allocation), so each connection's thread polls its socket
//! with a short read timeout instead of sharing a driver's event loop.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tryst_core::crypto::StaticKeypair;
use tryst_core::relay::link::{LinkError, LinkInitiator, LinkMessage, LinkResponder, MAX_QUEUED};
use tryst_core::relay::server::RelayEvent;
use tryst_core::relay::RelayKey;
use tryst_core::wire::{PublicKey, SessionId};

use super::relay::RelayHandle;
use crate::drive::DriverClock;

/// How long a link thread waits on its socket before it looks at its
/// channels again.
const TICK: Duration = Duration::from_millis(20);
/// First wait before a lost link is tried again; it doubles up to
/// [`RETRY_MAX`] and is reset by a handshake that completes.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between tries.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// A connection that has not finished its handshake by then is closed.
pub const LINK_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most link connections a relay holds at once (each costs a thread).
pub const MAX_LINK_CONNECTIONS: usize = 64;
/// Most relay events held for session servers while none is linked.
pub const MAX_BACKLOG: usize = 4096;
/// How long a write may block before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const LOG_TARGET: &str = "tryst::relay_link";

/// The session server's side of a link to a standalone relay: extensions
/// and ends go up, the relay's events come back on the receiver
/// [`RelayLinkClient::start`] returns. Dropping every clone stops its
/// thread.
#[derive(Debug, Clone)]
pub struct RelayLinkClient {
    commands: flume::Sender<LinkMessage>,
}

impl RelayLinkClient {
    /// Starts linking to the relay at `addr` (its `--link-listen`) as
    /// `local`, the session server's identity, with the relay key both
    /// hold; the thread connects again after a loss.
    pub fn start(
        addr: SocketAddr,
        local: StaticKeypair,
        key: RelayKey,
    ) -> std::io::Result<(RelayLinkClient, flume::Receiver<RelayEvent>)> {
        let (commands, command_rx) = flume::bounded(MAX_QUEUED);
        let (event_tx, events) = flume::bounded(MAX_BACKLOG);
        std::thread::Builder::new()
            .name("tryst-relay-link".into())
            .spawn(move || client_thread(addr, &local, &key, &command_rx, &event_tx))?;
        Ok((RelayLinkClient { commands }, events))
    }

    /// The session's whole permitted duration is now `secs`.
    pub fn extend(&self, session_id: SessionId, secs: u32) {
        self.send(LinkMessage::Extend {
            session_id,
            duration_secs: secs,
        });
    }

    /// The session ended: its allocation ends.
    pub fn end(&self, session_id: SessionId) {
        self.send(LinkMessage::End { session_id });
    }

    fn send(&self, message: LinkMessage) {
        if self.commands.try_send(message).is_err() {
            tracing::warn!(target: LOG_TARGET, ?message, "relay link queue full: message dropped");
        }
    }
}

/// What ends a client connection.
enum Gone {
    /// The link broke; `opened` says whether its handshake had completed.
    Lost { opened: bool },
    /// Every [`RelayLinkClient`] was dropped.
    Stopped,
}

fn client_thread(
    addr: SocketAddr,
    local: &StaticKeypair,
    key: &RelayKey,
    commands: &flume::Receiver<LinkMessage>,
    events: &flume::Sender<RelayEvent>,
) {
    let clock = DriverClock::default();
    let mut waiting: VecDeque<LinkMessage> = VecDeque::new();
    let mut retry = RETRY_MIN;
    loop {
        match TcpStream::connect_timeout(&addr, LINK_HANDSHAKE_TIMEOUT) {
            Ok(stream) => {
                match client_connection(stream, &clock, local, key, &mut waiting, commands, events)
                {
                    Gone::Stopped => return,
                    Gone::Lost { opened } => {
                        tracing::warn!(target: LOG_TARGET, %addr, opened, "relay link lost");
                        if opened {
                            retry = RETRY_MIN;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, %addr, error = %e, "relay link: no connection")
            }
        }
        let until = std::time::Instant::now() + retry;
        loop {
            match commands.recv_deadline(until) {
                Ok(m) => keep(&mut waiting, m),
                Err(flume::RecvTimeoutError::Timeout) => break,
                Err(flume::RecvTimeoutError::Disconnected) => return,
            }
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// Holds a message for the next connection, the oldest dropped past the bound.
fn keep(waiting: &mut VecDeque<LinkMessage>, message: LinkMessage) {
    if waiting.len() >= MAX_QUEUED {
        waiting.pop_front();
    }
    waiting.push_back(message);
}

fn client_connection(
    mut stream: TcpStream,
    clock: &DriverClock,
    local: &StaticKeypair,
    key: &RelayKey,
    waiting: &mut VecDeque<LinkMessage>,
    commands: &flume::Receiver<LinkMessage>,
    events: &flume::Sender<RelayEvent>,
) -> Gone {
    let lost = |link: &LinkInitiator| Gone::Lost {
        opened: link.is_open(),
    };
    if prepare(&stream).is_err() {
        return Gone::Lost { opened: false };
    }
    let Ok(mut link) = LinkInitiator::start(&mut rand_core::OsRng, clock.now(), local, key) else {
        return Gone::Lost { opened: false };
    };
    // Sent once the handshake is in; kept for the next connection if this
    // one never opens.
    let mut unsent: VecDeque<LinkMessage> = std::mem::take(waiting);
    let mut buf = [0u8; 4096];
    loop {
        if link.is_open() {
            while let Some(m) = unsent.pop_front() {
                if link.send(m).is_err() {
                    return lost(&link);
                }
            }
        }
        loop {
            match commands.try_recv() {
                Ok(m) if link.is_open() => {
                    if link.send(m).is_err() {
                        return lost(&link);
                    }
                }
                Ok(m) => keep(&mut unsent, m),
                Err(flume::TryRecvError::Empty) => break,
                Err(flume::TryRecvError::Disconnected) => return Gone::Stopped,
            }
        }
        let out = link.take_output();
        if !out.is_empty() && stream.write_all(&out).is_err() {
            *waiting = unsent;
            return lost(&link);
        }
        if link.is_stale(clock.now()) {
            *waiting = unsent;
            return lost(&link);
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                *waiting = unsent;
                return lost(&link);
            }
            Ok(n) => {
                if let Err(e) = link.receive(clock.now(), &buf[..n]) {
                    tracing::warn!(target: LOG_TARGET, error = %e, "relay link refused");
                    *waiting = unsent;
                    return lost(&link);
                }
                while let Some(event) = link.poll_event() {
                    let _ = events.try_send(event);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                *waiting = unsent;
                return lost(&link);
            }
        }
    }
}

fn prepare(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(TICK))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))
}

/// The standalone relay's side: a listener for session servers' links,
/// each taking commands for the relay and getting its events. Events
/// while no session server is linked wait (at most [`MAX_BACKLOG`]) for
/// the next one. Dropping it stops the listener and its connections.
#[derive(Debug)]
pub struct RelayLinkHub {
    shared: Arc<Hub>,
    addr: SocketAddr,
}

#[derive(Debug, Default)]
struct Hub {
    stop: AtomicBool,
    connections: AtomicUsize,
    inner: Mutex<HubInner>,
}

#[derive(Debug, Default)]
struct HubInner {
    links: Vec<flume::Sender<RelayEvent>>,
    backlog: VecDeque<RelayEvent>,
}

impl RelayLinkHub {
    /// Listens on `listener` for session servers whose keys are in
    /// `allowed`, under the relay key `key`; their commands go to `relay`.
    pub fn start(
        listener: TcpListener,
        key: RelayKey,
        allowed: Vec<PublicKey>,
        relay: RelayHandle,
    ) -> std::io::Result<RelayLinkHub> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Hub::default());
        let hub = shared.clone();
        std::thread::Builder::new()
            .name("tryst-relay-links".into())
            .spawn(move || accept_thread(&listener, &key, &allowed, &relay, &hub))?;
        Ok(RelayLinkHub { shared, addr })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Tells the linked session servers of a relay event (or keeps it for
    /// the next one to link).
    pub fn report(&self, event: RelayEvent) {
        let Ok(mut inner) = self.shared.inner.lock() else {
            return;
        };
        inner.links.retain(|l| !l.is_disconnected());
        let mut told = false;
        for link in &inner.links {
            told |= link.try_send(event).is_ok();
        }
        if !told {
            if inner.backlog.len() >= MAX_BACKLOG {
                inner.backlog.pop_front();
            }
            inner.backlog.push_back(event);
        }
    }
}

impl Drop for RelayLinkHub {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn accept_thread(
    listener: &TcpListener,
    key: &RelayKey,
    allowed: &[PublicKey],
    relay: &RelayHandle,
    hub: &Arc<Hub>,
) {
    while !hub.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, from)) => {
                if hub.connections.load(Ordering::Relaxed) >= MAX_LINK_CONNECTIONS {
                    continue;
                }
                hub.connections.fetch_add(1, Ordering::Relaxed);
                let (key, allowed, relay, shared) =
                    (key.clone(), allowed.to_vec(), relay.clone(), hub.clone());
                let spawned = std::thread::Builder::new()
                    .name("tryst-relay-link".into())
                    .spawn(move || {
                        let why = hub_connection(stream, &key, &allowed, &relay, &shared);
                        shared.connections.fetch_sub(1, Ordering::Relaxed);
                        match why {
                            Some(LinkError::NotPermitted) => tracing::warn!(target: LOG_TARGET, %from, "relay link refused: a session server key not given to this relay"),
                            Some(e) => tracing::warn!(target: LOG_TARGET, %from, error = %e, "relay link refused"),
                            None => tracing::info!(target: LOG_TARGET, %from, "relay link closed"),
                        }
                    });
                if spawned.is_err() {
                    hub.connections.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(_) => std::thread::sleep(TICK),
        }
    }
}

/// Runs one session server's connection; the link error that ended it,
/// if one did.
fn hub_connection(
    mut stream: TcpStream,
    key: &RelayKey,
    allowed: &[PublicKey],
    relay: &RelayHandle,
    hub: &Hub,
) -> Option<LinkError> {
    if stream.set_nonblocking(false).is_err() || prepare(&stream).is_err() {
        return None;
    }
    let clock = DriverClock::default();
    let accepted = std::time::Instant::now();
    let mut link = LinkResponder::new(key, allowed);
    let (event_tx, event_rx) = flume::bounded(MAX_BACKLOG);
    let mut event_tx = Some(event_tx);
    let mut buf = [0u8; 4096];
    while !hub.stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => {
                if let Err(e) = link.receive(&mut rand_core::OsRng, clock.now(), &buf[..n]) {
                    return Some(e);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
        match link.peer() {
            None if accepted.elapsed() >= LINK_HANDSHAKE_TIMEOUT => {
                return Some(LinkError::Handshake)
            }
            None => {}
            Some(peer) => {
                if let Some(tx) = event_tx.take() {
                    tracing::info!(target: LOG_TARGET, key = ?peer, "relay link up");
                    hub_register(hub, tx);
                }
            }
        }
        while let Some(message) = link.poll_message() {
            match message {
                LinkMessage::Extend {
                    session_id,
                    duration_secs,
                } => relay.extend(session_id, duration_secs),
                LinkMessage::End { session_id } => relay.end(session_id),
                // The responder takes only the session server's messages.
                LinkMessage::Allocated { .. } | LinkMessage::Ended { .. } => {}
            }
        }
        while let Ok(event) = event_rx.try_recv() {
            if let Err(e) = link.send(&event) {
                return Some(e);
            }
        }
        let out = link.take_output();
        if !out.is_empty() && stream.write_all(&out).is_err() {
            return None;
        }
    }
    None
}

/// A newly linked session server: it gets what waited, then every event.
fn hub_register(hub: &Hub, tx: flume::Sender<RelayEvent>) {
    let Ok(mut inner) = hub.inner.lock() else {
        return;
    };
    while let Some(event) = inner.backlog.pop_front() {
        if tx.try_send(event).is_err() {
            break;
        }
    }
    inner.links.push(tx);
}
