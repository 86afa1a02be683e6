//! A toy role both drivers' loop tests run (test builds and the
//! `test-support` feature only): a machine that stores a fact when asked,
//! transmits what its commands say, and tells its app of every stream that
//! closed and every message of its upstream stream.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tryst_core::machine::{ConnectionId, Destination, Input, Machine, Output, OwnedTransmit};
use tryst_core::time::Instant;

use crate::drive::{Driven, Flow};

/// What the toy machine tells its app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// An accepted stream ended.
    Closed(ConnectionId),
    /// A message of the upstream stream.
    Upstream(Vec<u8>),
    /// The upstream stream ended.
    UpstreamClosed,
}

/// The toy machine.
#[derive(Debug, Default)]
pub struct Echo {
    facts: VecDeque<u32>,
    heard: VecDeque<Heard>,
    out: VecDeque<OwnedTransmit>,
    opened: Option<ConnectionId>,
}

impl Machine for Echo {
    type Fact = u32;
    type Event = Heard;
    type Io = ();
    fn handle_input(&mut self, _now: Instant, input: Input<'_>, _io: &mut ()) {
        match input {
            Input::ConnectionOpened { conn, .. } => self.opened = Some(conn),
            Input::ConnectionClosed(conn) => self.heard.push_back(Heard::Closed(conn)),
            Input::UpstreamMessage(bytes) => self.heard.push_back(Heard::Upstream(bytes.to_vec())),
            Input::UpstreamClosed => self.heard.push_back(Heard::UpstreamClosed),
            _ => {}
        }
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_output(&mut self, _now: Instant, buf: &mut [u8], _io: &mut ()) -> Output<u32, Heard> {
        if let Some(fact) = self.facts.pop_front() {
            return Output::Store(fact);
        }
        if let Some(heard) = self.heard.pop_front() {
            return Output::Event(heard);
        }
        match self.out.pop_front().and_then(|t| t.write_into(buf)) {
            Some(t) => Output::Transmit(t),
            None => Output::Timeout(None),
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// What the toy role's app asks.
#[derive(Debug)]
pub enum EchoCommand {
    /// Send `n` to `to` over UDP, after storing it as a fact if `durable`.
    Say {
        /// Store it first.
        durable: bool,
        /// The number sent (big-endian).
        n: u32,
        /// Where.
        to: SocketAddr,
    },
    /// Queue `count` messages of 1000 bytes on the last accepted stream.
    Flood {
        /// How many.
        count: usize,
    },
    /// Send these bytes on the upstream stream.
    Up(Vec<u8>),
}

/// Where the toy role reports (each driver's test gives its own channel).
pub type Report<T> = Box<dyn Fn(T) + Send>;

/// The toy role: the machine, and the app's reports.
pub struct EchoRole {
    machine: Echo,
    stored: Report<u32>,
    heard: Report<Heard>,
    drains: Arc<AtomicUsize>,
    no_io: (),
}

impl EchoRole {
    /// A role that reports stored facts to `stored` and what it hears to
    /// `heard`; the counter counts its drains (an idle loop's rounds).
    pub fn new(stored: Report<u32>, heard: Report<Heard>) -> (EchoRole, Arc<AtomicUsize>) {
        let drains = Arc::new(AtomicUsize::new(0));
        let role = EchoRole {
            machine: Echo::default(),
            stored,
            heard,
            drains: Arc::clone(&drains),
            no_io: (),
        };
        (role, drains)
    }
}

impl Driven for EchoRole {
    type Machine = Echo;
    type Command = EchoCommand;
    fn parts(&mut self) -> (&mut Echo, &mut ()) {
        (&mut self.machine, &mut self.no_io)
    }
    fn on_command(&mut self, _now: Instant, command: EchoCommand) -> Flow {
        let m = &mut self.machine;
        match command {
            EchoCommand::Say { durable, n, to } => {
                if durable {
                    m.facts.push_back(n);
                }
                m.out.extend(OwnedTransmit::from_bytes(
                    Destination::Udp(to),
                    &n.to_be_bytes(),
                ));
            }
            EchoCommand::Flood { count } => {
                if let Some(conn) = m.opened {
                    let bytes = [0x55; 1000];
                    for _ in 0..count {
                        let to = Destination::Connection(conn);
                        m.out.extend(OwnedTransmit::from_bytes(to, &bytes));
                    }
                }
            }
            EchoCommand::Up(bytes) => {
                m.out
                    .extend(OwnedTransmit::from_bytes(Destination::Upstream, &bytes));
            }
        }
        Flow::Continue
    }
    fn on_event(&mut self, _now: Instant, heard: Heard) {
        (self.heard)(heard);
    }
    fn on_stored(&mut self, fact: u32) {
        (self.stored)(fact);
    }
    fn after_drain(&mut self, _now: Instant) -> bool {
        self.drains.fetch_add(1, Ordering::Relaxed);
        false
    }
}

/// One tryst frame (a header the stream framing accepts) whose body is
/// `body` bytes of `fill`.
pub fn frame(body: u16, fill: u8) -> Vec<u8> {
    let mut bytes = vec![b'T', b'Y', 1, 0x01];
    bytes.extend_from_slice(&body.to_be_bytes());
    bytes.resize(tryst_core::wire::HEADER_LEN + usize::from(body), fill);
    bytes
}
