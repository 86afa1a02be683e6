//! The session management server (seed: session management server 4) as
//! every driver runs it: a stream listener for terminals, linked upstream
//! to the trigger server (the driver binds and connects them), its durable
//! facts stored by a journal thread before anything acknowledges them.

use std::net::SocketAddr;

use rand_core::OsRng;
use tryst_core::crypto::StaticKeypair;
use tryst_core::names::{EnrollError, NameRegistry};
use tryst_core::session_server::{
    EnrolCode, EnrolCodeError, ForcedEnd, LiveSession, PeerMessage, SessionConfig, SessionCounters,
    SessionEvent, SessionFact, SessionServer, UnknownSession,
};
use tryst_core::time::Instant;
use tryst_core::wire::{DeviceId, Name, PublicKey, SessionId};

use super::{Answer, Commands, Reply, RoleStopped};
use crate::drive::{Driven, DriverClock, Flow, Journal};
use crate::observe::drops::{DropReport, DROP_REPORT_PERIOD};
use crate::store::ServerStore;

/// What the operator asks of a running session server.
#[derive(Debug)]
pub enum SessionCommand {
    /// End a live session now (S1604).
    EndSession(SessionId, Answer<(), SessionError>),
    /// End a live session now and answer once the forced end is settled:
    /// how each terminal answered its end trigger (S1604/S1605).
    EndConfirmed(SessionId, Answer<ForcedEnd, SessionError>),
    /// Bind a name to a key ahead of its registration (the operator's
    /// enrolment; the caller persists it).
    Enroll(String, PublicKey, Answer<(), SessionError>),
    /// Hold a one-time enrolment code (`tryst invite --enrol`).
    EnrolCode(EnrolCode, Answer<(), SessionError>),
    /// Free a bound name (`tryst names release`): the key it was bound to.
    Release(String, Answer<PublicKey, SessionError>),
    /// What the server holds now: live terminals, live sessions, counters
    /// (the operator's status page, `tryst status`, the metrics).
    Snapshot(Answer<SessionSnapshot, SessionError>),
    /// A message from another session server of the cluster.
    Peer(PeerMessage),
}

/// A name with a live registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTerminal {
    /// The name.
    pub name: String,
    /// Its channel's device ID (the control stream's).
    pub device_id: DeviceId,
    /// The device ID the trigger server knows it by (its keepalives').
    pub udp_device_id: DeviceId,
}

/// The session server's state as the operator sees it, taken in its loop.
#[derive(Debug, Clone)]
pub struct SessionSnapshot {
    /// When it was taken (the server's clock).
    pub now: Instant,
    /// Names with a live registration.
    pub terminals: Vec<LiveTerminal>,
    /// The live sessions.
    pub sessions: Vec<LiveSession>,
    /// What the server ignored, dropped or refused so far.
    pub counters: SessionCounters,
    /// Terminal channels held, live and pending.
    pub channels: usize,
    /// Connection requests being decided.
    pub pending_requests: usize,
}

/// Why an enrolment was refused by the running server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollRefused {
    /// Not a valid device name.
    #[error("not a valid device name")]
    BadName,
    /// The registry refused (bound to another key, full, weak key).
    #[error("{0}")]
    Registry(EnrollError),
    /// The enrolment code was refused (expired, too many held).
    #[error("{0}")]
    Code(EnrolCodeError),
}

/// Why a session server's command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The server's loop stopped.
    #[error("the session server's event loop stopped")]
    Stopped,
    /// No live session has that ID.
    #[error("no live session with that ID")]
    NoSuchSession,
    /// The enrolment was refused.
    #[error("{0}")]
    Enroll(EnrollRefused),
    /// No name of that spelling is bound.
    #[error("no such name is bound")]
    NoSuchName,
}

impl From<RoleStopped> for SessionError {
    fn from(_: RoleStopped) -> Self {
        SessionError::Stopped
    }
}

/// The session server as the loop runs it: the machine, and where its
/// events (and its facts, once stored) go.
pub struct SessionRole {
    machine: SessionServer<OsRng>,
    events: flume::Sender<SessionEvent>,
    /// `EndConfirmed` commands waiting for their session's settlement.
    settling: Vec<(SessionId, Answer<ForcedEnd, SessionError>)>,
    /// The machine's payload side: a server has none.
    no_io: (),
    /// Refused registrations, told at WARN at most once a period.
    drops: DropReport<3>,
    /// Where messages for the other servers of the cluster go, if any.
    peers: Option<PeerOut>,
}

/// Messages for other servers, each held until the facts emitted before
/// it are stored (it may acknowledge them: a grant follows its session's
/// start).
#[derive(Debug)]
struct PeerOut {
    tx: flume::Sender<PeerMessage>,
    /// (facts that must be stored first, message), in order.
    held: std::collections::VecDeque<(u64, PeerMessage)>,
    /// Facts stored so far.
    stored: u64,
}

impl PeerOut {
    /// Sends every held message whose facts are stored.
    fn release(&mut self) {
        while self
            .held
            .front()
            .is_some_and(|(after, _)| *after <= self.stored)
        {
            if let Some((_, message)) = self.held.pop_front() {
                // The transport may have gone: the requests then time out.
                let _ = self.tx.send(message);
            }
        }
    }
}

impl std::fmt::Debug for SessionRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRole").finish_non_exhaustive()
    }
}

impl SessionRole {
    /// The role around `machine` (a fresh one from [`restore`]); its events
    /// and stored facts go to `events`.
    pub fn new(machine: SessionServer<OsRng>, events: flume::Sender<SessionEvent>) -> SessionRole {
        SessionRole::with_peers(machine, events, None)
    }

    /// [`Self::new`] in a cluster: requests for targets registered at
    /// other servers are routed through `peers` (the transport to them),
    /// whose messages come back as [`SessionCommand::Peer`].
    pub fn with_peers(
        mut machine: SessionServer<OsRng>,
        events: flume::Sender<SessionEvent>,
        peers: Option<flume::Sender<PeerMessage>>,
    ) -> SessionRole {
        machine.set_peers(peers.is_some());
        SessionRole {
            machine,
            events,
            settling: Vec::new(),
            no_io: (),
            drops: DropReport::default(),
            peers: peers.map(|tx| PeerOut {
                tx,
                held: std::collections::VecDeque::new(),
                stored: 0,
            }),
        }
    }
}

/// A fresh session server with the live sessions of `facts` (stored
/// `SessionStarted` / `SessionExtended` facts, in the order they were
/// emitted) restored into it; a fact that cannot be restored is logged and
/// skipped.
pub fn restore(
    config: SessionConfig,
    keypair: StaticKeypair,
    trigger_key: PublicKey,
    registry: NameRegistry,
    facts: &[SessionFact],
    codes: &[EnrolCode],
) -> SessionServer<OsRng> {
    let mut machine = SessionServer::new(config, keypair, trigger_key, registry, OsRng);
    for fact in facts {
        if let Err(e) = machine.restore_session(fact) {
            tracing::warn!(error = %e, "a stored session fact was not restored");
        }
    }
    for code in codes {
        if let Err(e) = machine.add_enrol_code(code.clone()) {
            tracing::warn!(name = %code.name, error = %e, "a stored enrolment code was not restored");
        }
    }
    machine
}

impl Driven for SessionRole {
    type Machine = SessionServer<OsRng>;
    type Command = SessionCommand;

    fn parts(&mut self) -> (&mut SessionServer<OsRng>, &mut ()) {
        (&mut self.machine, &mut self.no_io)
    }

    fn on_command(&mut self, now: Instant, command: SessionCommand) -> Flow {
        match command {
            SessionCommand::EndSession(id, reply) => {
                let result = self
                    .machine
                    .end_session(now, id)
                    .map_err(|UnknownSession| SessionError::NoSuchSession);
                let _ = reply.send(result);
            }
            SessionCommand::EndConfirmed(id, reply) => match self.machine.end_session(now, id) {
                Ok(()) => {
                    // Answered by the ForcedEndSettled event; a withdrawn
                    // caller's answer is dropped then.
                    self.settling.retain(|(_, waiting)| !waiting.is_closed());
                    self.settling.push((id, reply));
                }
                Err(UnknownSession) => {
                    let _ = reply.send(Err(SessionError::NoSuchSession));
                }
            },
            SessionCommand::Enroll(name, key, reply) => {
                let result = match Name::new(&name) {
                    Ok(name) => self
                        .machine
                        .registry_mut()
                        .enroll(name, key)
                        .map_err(EnrollRefused::Registry),
                    Err(_) => Err(EnrollRefused::BadName),
                };
                let _ = reply.send(result.map_err(SessionError::Enroll));
            }
            SessionCommand::Release(name, reply) => {
                let result = self
                    .machine
                    .release_name(now, &name)
                    .map_err(|_| SessionError::NoSuchName);
                let _ = reply.send(result);
            }
            SessionCommand::EnrolCode(code, reply) => {
                let result = self
                    .machine
                    .add_enrol_code(code)
                    .map_err(|e| SessionError::Enroll(EnrollRefused::Code(e)));
                let _ = reply.send(result);
            }
            SessionCommand::Peer(message) => self.machine.handle_peer(now, &message),
            SessionCommand::Snapshot(reply) => {
                let m = &self.machine;
                let _ = reply.send(Ok(SessionSnapshot {
                    now,
                    terminals: m
                        .live_terminals()
                        .map(|(name, d)| LiveTerminal {
                            name: name.to_owned(),
                            device_id: d,
                            udp_device_id: m.udp_device_id(d),
                        })
                        .collect(),
                    sessions: m.live_sessions().collect(),
                    counters: m.counters(),
                    channels: m.channel_count(),
                    pending_requests: m.pending_request_count(),
                }));
            }
        }
        Flow::Continue
    }

    fn on_event(&mut self, _now: Instant, event: SessionEvent) {
        if let SessionEvent::ForcedEndSettled(settled) = &event {
            let (done, waiting) = std::mem::take(&mut self.settling)
                .into_iter()
                .partition(|(id, _)| *id == settled.session_id);
            self.settling = waiting;
            for (_, reply) in done {
                let _ = reply.send(Ok(settled.clone()));
            }
        }
        // The app may have gone; the machine keeps running regardless.
        let _ = self.events.send(event);
    }

    fn on_stored(&mut self, fact: SessionFact) {
        if let Some(peers) = self.peers.as_mut() {
            peers.stored += 1;
            peers.release();
        }
        let _ = self.events.send(SessionEvent::from(fact));
    }

    fn after_drain(&mut self, now: Instant) -> bool {
        match self.peers.as_mut() {
            Some(peers) => {
                while let Some(message) = self.machine.poll_peer() {
                    peers.held.push_back(message);
                }
                peers.release();
            }
            // A lone server makes none; nothing to hold.
            None => while self.machine.poll_peer().is_some() {},
        }
        let c = self.machine.counters();
        let counts = [
            c.handshake_failures,
            c.registrations_rate_limited,
            c.identity_rate_limited,
        ];
        if let Some([failed, by_source, by_identity]) = self.drops.observe(now, counts) {
            tracing::warn!(
                failed_handshakes = failed,
                rate_limited_by_source = by_source,
                rate_limited_by_identity = by_identity,
                "registrations refused since the last report (told at most once every {} s)",
                DROP_REPORT_PERIOD.as_secs()
            );
        }
        false
    }

    fn app_deadline(&self) -> Option<Instant> {
        self.drops.deadline()
    }
}

/// A running session server.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// Where terminals connect (TCP).
    pub control_addr: SocketAddr,
    /// Its static public key, which terminals must know.
    pub public_key: PublicKey,
    /// Its loop's commands.
    pub commands: Commands<SessionCommand>,
}

impl SessionHandle {
    /// Binds `name` to `key` in the running server's registry.
    pub fn enroll(&self, name: &str, key: PublicKey) -> Reply<(), SessionError> {
        let name = name.to_owned();
        self.commands
            .request(|reply| SessionCommand::Enroll(name, key, reply))
    }

    /// Frees a bound name on the running server (its binding and any live
    /// registration of it); the key it was bound to.
    pub fn release(&self, name: &str) -> Reply<PublicKey, SessionError> {
        let name = name.to_owned();
        self.commands
            .request(|reply| SessionCommand::Release(name, reply))
    }

    /// Holds a one-time enrolment code on the running server.
    pub fn enrol_code(&self, code: EnrolCode) -> Reply<(), SessionError> {
        self.commands
            .request(|reply| SessionCommand::EnrolCode(code, reply))
    }

    /// What the running server holds now (terminals, sessions, counters).
    pub fn snapshot(&self) -> Reply<SessionSnapshot, SessionError> {
        self.commands.request(SessionCommand::Snapshot)
    }

    /// Forces a live session to end (S1604/S1605).
    pub fn end_session(&self, id: SessionId) -> Reply<(), SessionError> {
        self.commands
            .request(|reply| SessionCommand::EndSession(id, reply))
    }

    /// Forces a live session to end and answers once each terminal has
    /// confirmed, or the session was recorded without (its end grace).
    pub fn end_session_confirmed(&self, id: SessionId) -> Reply<ForcedEnd, SessionError> {
        self.commands
            .request(|reply| SessionCommand::EndConfirmed(id, reply))
    }
}

/// What a session server that keeps its facts starts from.
#[derive(Debug)]
pub struct Durable {
    /// Its clock; keep the origin across restarts ([`DriverClock::wall`]).
    pub clock: DriverClock,
    /// Stored `SessionStarted` / `SessionExtended` facts of sessions that
    /// have no record yet, in the order they were emitted ([`restore`]).
    pub restore: Vec<SessionFact>,
    /// Where durable facts are stored before what acknowledges them is sent.
    pub journal: Option<Journal<SessionFact>>,
    /// The stored one-time enrolment codes neither spent nor expired.
    pub enrol_codes: Vec<EnrolCode>,
    /// The relay whose allocations it hands out, if any.
    pub relay: Option<tryst_core::relay::RelayIssuer>,
    /// Where messages for the other servers of its cluster go (see
    /// [`SessionRole::with_peers`]), if it is in one.
    pub peers: Option<flume::Sender<PeerMessage>>,
}

impl Default for Durable {
    /// A server that stores nothing: its clock starts now.
    fn default() -> Self {
        Durable {
            clock: DriverClock::default(),
            restore: Vec::new(),
            journal: None,
            enrol_codes: Vec::new(),
            relay: None,
            peers: None,
        }
    }
}

/// Starts the journal: a thread that owns `store` (any [`ServerStore`]
/// backend) and writes each batch of durable facts, answering once it is
/// committed.
pub fn start_journal<S: ServerStore + 'static>(store: S) -> Journal<SessionFact> {
    start_timed_journal(store, |_| {})
}

/// Most queued batches the journal thread stores in one transaction.
pub const MAX_GROUP_BATCHES: usize = 256;

/// [`start_journal`], telling `took` how long each transaction's write
/// took (the store write latency of the metrics). Batches that queue up
/// while one is written are stored together in the next transaction (at
/// most [`MAX_GROUP_BATCHES`]), all or none.
pub fn start_timed_journal<S, T>(mut store: S, took: T) -> Journal<SessionFact>
where
    S: ServerStore + 'static,
    T: Fn(std::time::Duration) + Send + 'static,
{
    let (journal, batches) = Journal::channel();
    let spawned = std::thread::Builder::new()
        .name("tryst-journal".into())
        .spawn(move || {
            while let Ok(first) = batches.recv() {
                // Group commit: every batch that queued up while the last
                // transaction was written goes into this one (one fsync),
                // and each hears the one outcome.
                let mut facts = first.0;
                let mut answers = vec![first.1];
                while answers.len() < MAX_GROUP_BATCHES {
                    match batches.try_recv() {
                        Ok((more, done)) => {
                            facts.extend(more);
                            answers.push(done);
                        }
                        Err(_) => break,
                    }
                }
                let started = std::time::Instant::now();
                let result = store.record(&facts).map_err(|e| e.to_string());
                took(started.elapsed());
                for done in answers {
                    let _ = done.send(result.clone());
                }
            }
        });
    if let Err(e) = spawned {
        // The receiver is gone with the closure: the first durable batch
        // fails and the server stops before acknowledging it.
        tracing::error!(error = %e, "cannot start the journal thread");
    }
    journal
}

#[cfg(test)]
mod tests {
    use super::*;
    use tryst_core::names::TrustMode;

    fn role() -> (SessionRole, flume::Receiver<SessionEvent>) {
        let trigger = StaticKeypair::generate(&mut OsRng);
        let machine = restore(
            SessionConfig::default(),
            StaticKeypair::generate(&mut OsRng),
            trigger.public_key(),
            NameRegistry::new(TrustMode::TrustOnFirstUse),
            &[],
            &[],
        );
        let (events, rx) = flume::unbounded();
        (SessionRole::new(machine, events), rx)
    }

    /// The session machine is built on its loop's thread: its rate limiters
    /// (hundreds of KiB each) must not all pass through one stack frame, or
    /// a debug build overflows a thread's default 2 MiB (it did).
    #[test]
    fn the_session_machine_builds_on_a_thread_with_half_the_default_stack() {
        let built = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(|| drop(role()))
            .expect("spawn")
            .join();
        assert!(built.is_ok());
    }

    #[test]
    fn commands_answer_their_replies() {
        let (mut role, _events) = role();
        let (commands, rx) = Commands::channel(None);
        let handle = SessionHandle {
            control_addr: "127.0.0.1:1".parse().expect("addr"),
            public_key: PublicKey([1; 32]),
            commands,
        };
        let ended = handle.end_session(SessionId([9; 16]));
        let bad = handle.enroll("bad\nname", PublicKey([2; 32]));
        let key = StaticKeypair::generate(&mut OsRng).public_key();
        let good = handle.enroll("CAM1", key);
        let now = Instant::from_micros(1);
        for command in rx.try_iter() {
            assert_eq!(role.on_command(now, command), Flow::Continue);
        }
        assert_eq!(ended.wait(), Err(SessionError::NoSuchSession));
        assert_eq!(
            bad.wait(),
            Err(SessionError::Enroll(EnrollRefused::BadName))
        );
        assert_eq!(good.wait(), Ok(()));
        // Bound now: another key for the name is refused by the registry.
        let other = handle.enroll("CAM1", StaticKeypair::generate(&mut OsRng).public_key());
        for command in rx.try_iter() {
            role.on_command(now, command);
        }
        assert!(matches!(
            other.wait(),
            Err(SessionError::Enroll(EnrollRefused::Registry(_)))
        ));
        drop(rx);
        assert_eq!(
            handle.end_session(SessionId([9; 16])).wait(),
            Err(SessionError::Stopped)
        );
    }

    #[test]
    fn batches_queued_while_one_is_written_share_the_next_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::create(dir.path()).unwrap();
        let (writes_tx, writes) = std::sync::mpsc::channel::<()>();
        let (go_tx, go) = std::sync::mpsc::channel::<()>();
        let go = std::sync::Mutex::new(go);
        // The first write holds the journal thread until three more batches
        // are queued.
        let journal = start_timed_journal(store, move |_| {
            let _ = writes_tx.send(());
            if let Ok(go) = go.lock() {
                let _ = go.recv_timeout(std::time::Duration::from_secs(5));
            }
        });
        let bound = |name: &str, b: u8| SessionFact::NameBound {
            name: name.into(),
            key: PublicKey([b; 32]),
        };
        let first = journal.submit(vec![bound("a", 1)]).unwrap();
        writes.recv().unwrap();
        let rest: Vec<_> = [("b", 2), ("c", 3), ("d", 4)]
            .into_iter()
            .map(|(n, b)| journal.submit(vec![bound(n, b)]).unwrap())
            .collect();
        go_tx.send(()).unwrap();
        assert_eq!(first.recv().unwrap(), Ok(()));
        writes.recv().unwrap();
        go_tx.send(()).unwrap();
        for stored in rest {
            assert_eq!(stored.recv().unwrap(), Ok(()));
        }
        // Two transactions for four batches, and every fact is stored.
        assert!(writes.try_recv().is_err(), "a third write");
        let names: Vec<String> = crate::store::Store::open(dir.path())
            .unwrap()
            .bindings()
            .unwrap()
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
    }
}
