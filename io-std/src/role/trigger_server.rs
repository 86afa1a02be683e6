//! The trigger server (seed: trigger server 5) as every driver runs it: a
//! UDP socket for terminals and a stream listener for the session
//! server's link (the driver binds both).

use std::net::SocketAddr;

use rand_core::OsRng;
use std::time::Duration;
use tryst_core::crypto::StaticKeypair;
use tryst_core::time::Instant;

use tryst_core::trigger_server::{
    NatGuess, TriggerConfig, TriggerEvent, TriggerServer, TriggerStats,
};
use tryst_core::wire::{DeviceId, PublicKey};

use super::{Answer, Commands, Reply};
use crate::drive::{Driven, Flow};
use crate::observe::drops::{DropReport, DROP_REPORT_PERIOD};

/// What the operator asks of a running trigger server; stopping is
/// dropping every handle (the command channel closes).
#[derive(Debug)]
pub enum TriggerCommand {
    /// Its device table and counters now.
    Snapshot(Answer<TriggerSnapshot>),
}

/// One device of a [`TriggerSnapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStatus {
    /// The device.
    pub device_id: DeviceId,
    /// Its observed address, while live (for the operator only).
    pub addr: Option<SocketAddr>,
    /// How long ago its last valid keepalive came (`None`: none yet).
    pub last_keepalive_ago: Option<Duration>,
    /// The trigger server's guess at its NAT (for the operator only).
    pub nat: NatGuess,
}

/// The trigger server's state as the operator sees it, taken in its loop.
#[derive(Debug, Clone)]
pub struct TriggerSnapshot {
    /// Every device whose key is installed.
    pub devices: Vec<DeviceStatus>,
    /// Its counters of work done, drops and refusals.
    pub stats: TriggerStats,
}

/// The trigger server as the loop runs it: the machine, and where its
/// events go.
pub struct TriggerRole {
    machine: TriggerServer<OsRng>,
    events: flume::Sender<TriggerEvent>,
    /// The machine's payload side: a server has none.
    no_io: (),
    /// Refused keepalives, told at WARN at most once a period.
    drops: DropReport<3>,
}

impl std::fmt::Debug for TriggerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerRole").finish_non_exhaustive()
    }
}

impl TriggerRole {
    /// A fresh trigger server that accepts links from `session_servers`;
    /// its events go to `events`.
    pub fn new(
        config: TriggerConfig,
        keypair: StaticKeypair,
        session_servers: &[PublicKey],
        events: flume::Sender<TriggerEvent>,
    ) -> TriggerRole {
        TriggerRole {
            machine: TriggerServer::new(config, keypair, session_servers, OsRng),
            events,
            no_io: (),
            drops: DropReport::default(),
        }
    }
}

impl Driven for TriggerRole {
    type Machine = TriggerServer<OsRng>;
    type Command = TriggerCommand;

    fn parts(&mut self) -> (&mut TriggerServer<OsRng>, &mut ()) {
        (&mut self.machine, &mut self.no_io)
    }

    fn on_command(&mut self, now: Instant, command: TriggerCommand) -> Flow {
        match command {
            TriggerCommand::Snapshot(reply) => {
                let devices = self
                    .machine
                    .devices()
                    .map(|d| DeviceStatus {
                        device_id: d.device_id,
                        addr: d.addr,
                        last_keepalive_ago: d
                            .last_keepalive
                            .map(|at| now.saturating_duration_since(at)),
                        nat: d.nat,
                    })
                    .collect();
                let _ = reply.send(Ok(TriggerSnapshot {
                    devices,
                    stats: *self.machine.stats(),
                }));
            }
        }
        Flow::Continue
    }

    fn on_event(&mut self, _now: Instant, event: TriggerEvent) {
        // The app may have gone; the machine keeps running regardless.
        let _ = self.events.send(event);
    }

    fn after_drain(&mut self, now: Instant) -> bool {
        let s = self.machine.stats();
        let counts = [
            s.keepalives_forged,
            s.keepalives_replayed,
            s.keepalives_rate_limited,
        ];
        if let Some([forged, replayed, limited]) = self.drops.observe(now, counts) {
            tracing::warn!(
                forged_keepalives = forged,
                replayed_keepalives = replayed,
                rate_limited_keepalives = limited,
                "keepalives refused since the last report (told at most once every {} s)",
                DROP_REPORT_PERIOD.as_secs()
            );
        }
        false
    }

    fn app_deadline(&self) -> Option<Instant> {
        self.drops.deadline()
    }
}

/// A running trigger server; dropping it (every clone of its commands)
/// stops the loop.
#[derive(Debug, Clone)]
pub struct TriggerHandle {
    /// Where terminals send keepalives.
    pub udp_addr: SocketAddr,
    /// Where the session server links (TCP).
    pub link_addr: SocketAddr,
    /// Its static public key.
    pub public_key: PublicKey,
    /// Its loop's commands (held so the loop runs).
    pub commands: Commands<TriggerCommand>,
}

impl TriggerHandle {
    /// Its device table and counters now.
    pub fn snapshot(&self) -> Reply<TriggerSnapshot> {
        self.commands.request(TriggerCommand::Snapshot)
    }
}
