//! The relay ([`tryst_core::relay`]) as every driver runs it: one UDP
//! socket and a TCP listener at the same address (for peers whose network
//! drops UDP: [`tryst_core::relay::tcp`]), the machine that forwards the
//! peers' packets of permitted sessions, and the operator's commands (the session server's forced end
//! and extensions, in the all-in-one `server`).

use std::net::SocketAddr;

use tryst_core::relay::server::{RelayConfig, RelayEvent, RelayStats};
use tryst_core::relay::tcp::{RelayFront, TcpLimits, TcpStats};
use tryst_core::time::Instant;
use tryst_core::wire::SessionId;

use super::{Answer, Commands, Reply};
use crate::drive::{Driven, Flow};

/// What the operator (or the session server beside it) asks of a relay.
#[derive(Debug)]
pub enum RelayCommand {
    /// Its counters and allocations now.
    Snapshot(Answer<RelaySnapshot>),
    /// The session was ended: its allocation ends now.
    End(SessionId),
    /// The session's whole permitted duration is now this many seconds.
    Extend(SessionId, u32),
}

/// The relay's state as the operator sees it.
#[derive(Debug, Clone, Copy)]
pub struct RelaySnapshot {
    /// Allocations now.
    pub allocations: usize,
    /// Its counters.
    pub stats: RelayStats,
    /// TCP connections now.
    pub connections: usize,
    /// Its TCP counters.
    pub tcp: TcpStats,
}

/// The relay as the loop runs it.
pub struct RelayRole {
    machine: RelayFront,
    events: flume::Sender<RelayEvent>,
    no_io: (),
}

impl std::fmt::Debug for RelayRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayRole").finish_non_exhaustive()
    }
}

impl RelayRole {
    /// A relay with no allocations; its events go to `events`.
    pub fn new(config: RelayConfig, events: flume::Sender<RelayEvent>) -> RelayRole {
        RelayRole {
            machine: RelayFront::new(config, TcpLimits::default()),
            events,
            no_io: (),
        }
    }
}

impl Driven for RelayRole {
    type Machine = RelayFront;
    type Command = RelayCommand;

    fn parts(&mut self) -> (&mut RelayFront, &mut ()) {
        (&mut self.machine, &mut self.no_io)
    }

    fn on_command(&mut self, _now: Instant, command: RelayCommand) -> Flow {
        match command {
            RelayCommand::Snapshot(reply) => {
                let _ = reply.send(Ok(RelaySnapshot {
                    allocations: self.machine.relay().allocations(),
                    stats: *self.machine.relay().stats(),
                    connections: self.machine.connections(),
                    tcp: *self.machine.tcp_stats(),
                }));
            }
            RelayCommand::End(session_id) => self.machine.end_session(&session_id),
            RelayCommand::Extend(session_id, secs) => self.machine.extend(&session_id, secs),
        }
        Flow::Continue
    }

    fn on_event(&mut self, _now: Instant, event: RelayEvent) {
        let _ = self.events.send(event);
    }
}

/// A running relay; dropping every clone stops its loop.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    /// Its bound UDP address.
    pub udp_addr: SocketAddr,
    /// Its TCP listener's address (the same).
    pub tcp_addr: SocketAddr,
    /// Its loop's commands.
    pub commands: Commands<RelayCommand>,
}

impl RelayHandle {
    /// Its counters now.
    pub fn snapshot(&self) -> Reply<RelaySnapshot> {
        self.commands.request(RelayCommand::Snapshot)
    }

    /// Ends a session's allocation now (a forced end or a recorded end).
    pub fn end(&self, session_id: SessionId) {
        let _ = self.commands.send(RelayCommand::End(session_id));
    }

    /// A session's whole permitted duration is now `secs` (an extension).
    pub fn extend(&self, session_id: SessionId, secs: u32) {
        let _ = self.commands.send(RelayCommand::Extend(session_id, secs));
    }
}
