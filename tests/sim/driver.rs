//! The one driver every simulated machine runs under: [`drive`] polls a
//! [`Machine`] until [`Output::Timeout`] and hands back what came out, in
//! the order the driver acts on it, checking the contract as it goes.
//!
//! The same function drives the trigger server, the session server and
//! every terminal; only what the caller does with the [`Out`]s differs
//! (route a transmit, commit a fact, log an event).

use tryst_core::machine::{ConnectionId, Destination, Machine, Output, MAX_TRANSMIT_LEN};
use tryst_core::time::Instant;

/// The order in which a driver acts on the facts and transmits of one drain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DriverOrder {
    /// As the contract says: each fact is committed when it comes out,
    /// before the transmits after it.
    #[default]
    StoreFirst,
    /// Deliberately wrong (to show the simulator's durability check works):
    /// every fact of a drain is held back until after that drain's
    /// transmits were sent.
    AckBeforeStore,
}

/// What one drain produced, in the order the driver acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out<F, E> {
    /// Commit this fact to the durable store.
    Store(F),
    /// Close this accepted stream.
    Close(ConnectionId),
    /// Hand this event to the app (or the operator's log).
    Event(E),
    /// Send these bytes.
    Transmit(Destination, Vec<u8>),
}

/// Contract breaches one drain can reveal (besides the spin check of the
/// caller after `handle_timeout`).
fn breach(what: &str) -> ! {
    panic!("driver contract broken: {what}")
}

/// Polls `machine` until [`Output::Timeout`], appending what it produced to
/// `outs` (in `order`), and returns the timeout. Checks on the way: the
/// `Timeout` value equals `poll_timeout()`, and no `Store` comes after a
/// `Transmit` within one drain (every pending fact comes out first).
pub fn drive<M: Machine + ?Sized>(
    machine: &mut M,
    now: Instant,
    io: &mut M::Io,
    order: DriverOrder,
    outs: &mut Vec<Out<M::Fact, M::Event>>,
) -> Option<Instant> {
    let mut buf = [0u8; MAX_TRANSMIT_LEN];
    let mut held = Vec::new();
    let mut transmitted = false;
    loop {
        match machine.poll_output(now, &mut buf, io) {
            Output::Store(fact) => {
                if transmitted {
                    breach("a Store after a Transmit in one drain");
                }
                match order {
                    DriverOrder::StoreFirst => outs.push(Out::Store(fact)),
                    DriverOrder::AckBeforeStore => held.push(fact),
                }
            }
            Output::Close(conn) => outs.push(Out::Close(conn)),
            Output::Event(event) => outs.push(Out::Event(event)),
            Output::Transmit(t) => {
                transmitted = true;
                let Some(bytes) = buf.get(..t.len) else {
                    breach("a Transmit longer than the buffer");
                };
                outs.push(Out::Transmit(t.destination, bytes.to_vec()));
            }
            Output::Timeout(at) => {
                if at != machine.poll_timeout() {
                    breach("Output::Timeout differs from poll_timeout()");
                }
                outs.extend(held.into_iter().map(Out::Store));
                return at;
            }
        }
    }
}
