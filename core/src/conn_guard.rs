//! Bounds on the streams a server accepts (needs the `alloc` feature),
//! shared by the session server and the trigger server.
//!
//! An accepted stream costs a descriptor and a task before it has proved
//! anything, so a stream that carries nothing is closed:
//!
//! - its first complete message must arrive within
//!   [`StreamBounds::first_message`] of the open (a connect-and-wait or a
//!   one-byte-per-second stream never gets there);
//! - after that, a stream that carries no channel (the session server: no
//!   registration on it, or its registration went away; the trigger server:
//!   no established link) lives at most [`StreamBounds::idle`], whatever it
//!   sends; one that carries a channel has no deadline, and gets one again
//!   when its last channel leaves it;
//! - one source (an IPv4 address, or an IPv6 /64: [`SourceKey`]) holds at
//!   most [`StreamBounds::per_source`] streams at once; one more is refused.
//!
//! The machine owning a [`ConnGuard`] tells it of opens, messages, channels
//! that come and go, and closes, asks it for [`ConnGuard::next_deadline`]
//! in its `poll_timeout`, and closes (with `Output::Close`) every stream
//! [`ConnGuard::pop_expired`] returns. Deadlines sit in one ordered set, so
//! the next is a lookup whatever the number of streams.

use alloc::collections::{BTreeMap, BTreeSet};
use core::net::SocketAddr;
use core::time::Duration;

use crate::machine::ConnectionId;
use crate::ratelimit::SourceKey;
use crate::time::Instant;

/// Default time an accepted stream has to deliver its first whole message.
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default lifetime, after its first message, of a stream that carries no
/// channel.
pub const IDLE_STREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Default most streams one source may hold open: room for a carrier-grade
/// NAT's or a household's many devices behind one address.
pub const DEFAULT_STREAMS_PER_SOURCE: usize = 64;

/// The bounds a [`ConnGuard`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamBounds {
    /// Time from the open to the first whole message ([`FIRST_MESSAGE_TIMEOUT`]).
    pub first_message: Duration,
    /// Lifetime after the first message of a stream without a channel
    /// ([`IDLE_STREAM_TIMEOUT`]).
    pub idle: Duration,
    /// Most streams open at once from one source ([`DEFAULT_STREAMS_PER_SOURCE`]);
    /// taken as at least 1.
    pub per_source: usize,
}

impl Default for StreamBounds {
    fn default() -> Self {
        StreamBounds {
            first_message: FIRST_MESSAGE_TIMEOUT,
            idle: IDLE_STREAM_TIMEOUT,
            per_source: DEFAULT_STREAMS_PER_SOURCE,
        }
    }
}

/// Why a stream was refused at its open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRefused {
    /// Its source already holds [`StreamBounds::per_source`] streams.
    SourceFull,
    /// The guard already tracks as many streams as its owner allows.
    TableFull,
}

/// What the guard did, for the owner's counters and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuardCounters {
    /// Streams refused because their source held too many.
    pub refused_per_source: u64,
    /// Streams refused because the table was full.
    pub refused_table_full: u64,
    /// Streams closed for want of a first message in time.
    pub closed_no_first_message: u64,
    /// Streams closed because they carried no channel for too long.
    pub closed_idle: u64,
    /// Streams closed after the owner's last answer on them ([`ConnGuard::linger`]).
    pub closed_after_answer: u64,
}

/// What the guard knows of one open stream.
#[derive(Debug, Clone, Copy)]
struct Guarded {
    source: SourceKey,
    /// Its deadline, if armed (also in the index).
    deadline: Option<Instant>,
    /// Whether its first whole message arrived.
    heard: bool,
    /// Answered and waiting to be closed ([`ConnGuard::linger`]).
    lingering: bool,
    /// Channels that point at it.
    channels: u32,
}

/// The open streams of one server, their sources and deadlines. See the
/// [module](self) documentation.
#[derive(Debug)]
pub struct ConnGuard {
    bounds: StreamBounds,
    /// Most streams tracked (the owner's own connection bound).
    max_streams: usize,
    streams: BTreeMap<ConnectionId, Guarded>,
    /// Open streams per source; an entry exists only while its count is nonzero.
    per_source: BTreeMap<SourceKey, usize>,
    deadlines: BTreeSet<(Instant, ConnectionId)>,
    counters: GuardCounters,
}

impl ConnGuard {
    /// A guard with these bounds, tracking at most `max_streams` streams.
    pub fn new(bounds: StreamBounds, max_streams: usize) -> Self {
        ConnGuard {
            bounds,
            max_streams,
            streams: BTreeMap::new(),
            per_source: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            counters: GuardCounters::default(),
        }
    }

    /// The bounds in force.
    pub fn bounds(&self) -> &StreamBounds {
        &self.bounds
    }

    /// What it refused and closed so far.
    pub fn counters(&self) -> GuardCounters {
        self.counters
    }

    /// Streams tracked.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether no stream is tracked.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Open streams from `remote`'s source.
    pub fn from_source(&self, remote: &SocketAddr) -> usize {
        self.per_source
            .get(&SourceKey::from_addr(remote))
            .copied()
            .unwrap_or(0)
    }

    /// A stream from `remote` opened at `now`: tracked with its
    /// first-message deadline, or refused (the owner closes it). Opening a
    /// number already tracked starts it afresh.
    pub fn open(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        remote: SocketAddr,
    ) -> Result<(), StreamRefused> {
        self.close(conn);
        let source = SourceKey::from_addr(&remote);
        let held = self.per_source.get(&source).copied().unwrap_or(0);
        if held >= self.bounds.per_source.max(1) {
            self.counters.refused_per_source += 1;
            return Err(StreamRefused::SourceFull);
        }
        if self.streams.len() >= self.max_streams {
            self.counters.refused_table_full += 1;
            return Err(StreamRefused::TableFull);
        }
        self.per_source.insert(source, held + 1);
        let mut guarded = Guarded {
            source,
            deadline: None,
            heard: false,
            lingering: false,
            channels: 0,
        };
        let at = now.saturating_add(self.bounds.first_message);
        self.deadlines.insert((at, conn));
        guarded.deadline = Some(at);
        self.streams.insert(conn, guarded);
        Ok(())
    }

    /// A whole message arrived on `conn`: the first one trades the
    /// first-message deadline for the idle one (unless a channel already
    /// holds it). Later messages change nothing.
    pub fn heard(&mut self, now: Instant, conn: ConnectionId) {
        let Some(g) = self.streams.get_mut(&conn) else {
            return;
        };
        if g.heard {
            return;
        }
        g.heard = true;
        let (deadline, channels) = (g.deadline.take(), g.channels);
        if let Some(old) = deadline {
            self.deadlines.remove(&(old, conn));
        }
        if channels == 0 {
            self.arm(conn, now.saturating_add(self.bounds.idle));
        }
    }

    /// A channel now points at `conn` (it was created or heard on it): the
    /// stream has no deadline while one does.
    pub fn attach(&mut self, conn: ConnectionId) {
        let Some(g) = self.streams.get_mut(&conn) else {
            return;
        };
        g.channels = g.channels.saturating_add(1);
        g.heard = true;
        g.lingering = false;
        if let Some(old) = g.deadline.take() {
            self.deadlines.remove(&(old, conn));
        }
    }

    /// A channel that pointed at `conn` went away or moved: when it was the
    /// last, the stream's idle deadline starts at `now`.
    pub fn detach(&mut self, now: Instant, conn: ConnectionId) {
        let Some(g) = self.streams.get_mut(&conn) else {
            return;
        };
        g.channels = g.channels.saturating_sub(1);
        if g.channels == 0 {
            self.arm(conn, now.saturating_add(self.bounds.idle));
        }
    }

    /// A channel moved from `from` (if any) to `to`; nothing if it stayed.
    pub fn moved(&mut self, now: Instant, from: Option<ConnectionId>, to: ConnectionId) {
        if from == Some(to) {
            return;
        }
        if let Some(old) = from {
            self.detach(now, old);
        }
        self.attach(to);
    }

    /// `conn` closed (or the owner closed it): forgotten.
    pub fn close(&mut self, conn: ConnectionId) {
        let Some(g) = self.streams.remove(&conn) else {
            return;
        };
        if let Some(at) = g.deadline {
            self.deadlines.remove(&(at, conn));
        }
        if let Some(count) = self.per_source.get_mut(&g.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_source.remove(&g.source);
            }
        }
    }

    /// The owner answered `conn` and will close it: it stays tracked (and
    /// counted against its source) until `now + within`, when
    /// [`Self::pop_expired`] hands it back for closing, so that the answer
    /// leaves before the close drops it. A stream already lingering keeps
    /// its deadline (more answers never keep it open longer); a channel
    /// attached meanwhile cancels the close. Nothing if it is not tracked.
    pub fn linger(&mut self, now: Instant, conn: ConnectionId, within: Duration) {
        let Some(g) = self.streams.get_mut(&conn) else {
            return;
        };
        if g.lingering && g.deadline.is_some() {
            return;
        }
        g.heard = true;
        g.lingering = true;
        self.arm(conn, now.saturating_add(within));
    }

    /// The earliest deadline of any stream.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Removes and returns one stream whose deadline is due at `now`; the
    /// owner closes it. Call until `None`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<ConnectionId> {
        let &(at, conn) = self.deadlines.first()?;
        if at > now {
            return None;
        }
        let (heard, lingering) = self
            .streams
            .get(&conn)
            .map_or((false, false), |g| (g.heard, g.lingering));
        if lingering {
            self.counters.closed_after_answer += 1;
        } else if heard {
            self.counters.closed_idle += 1;
        } else {
            self.counters.closed_no_first_message += 1;
        }
        self.close(conn);
        // Never stuck: a deadline without its stream is dropped too.
        self.deadlines.remove(&(at, conn));
        Some(conn)
    }

    /// Sets `conn`'s deadline to `at`.
    fn arm(&mut self, conn: ConnectionId, at: Instant) {
        let Some(g) = self.streams.get_mut(&conn) else {
            return;
        };
        if let Some(old) = g.deadline.replace(at) {
            self.deadlines.remove(&(old, conn));
        }
        self.deadlines.insert((at, conn));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("addr")
    }

    fn at(secs: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(secs)
    }

    fn guard() -> ConnGuard {
        ConnGuard::new(StreamBounds::default(), 1000)
    }

    #[test]
    fn a_lingering_stream_closes_at_its_first_linger_deadline_unless_a_channel_takes_it() {
        let mut g = guard();
        let (a, b) = (ConnectionId(1), ConnectionId(2));
        g.open(at(0), a, addr("192.0.2.1:1")).unwrap();
        g.open(at(0), b, addr("192.0.2.1:2")).unwrap();
        g.heard(at(0), a);
        g.linger(at(1), a, Duration::from_secs(2));
        // More answers never keep it open longer.
        g.linger(at(2), a, Duration::from_secs(2));
        assert_eq!(g.from_source(&addr("192.0.2.1:9")), 2, "still counted");
        assert_eq!(g.pop_expired(at(2)), None);
        assert_eq!(g.pop_expired(at(3)), Some(a));
        assert_eq!(g.counters().closed_after_answer, 1);
        assert_eq!(g.counters().closed_idle, 0);
        // A channel attached before the deadline cancels the close.
        g.linger(at(3), b, Duration::from_secs(2));
        g.attach(b);
        assert_eq!(g.pop_expired(at(100)), None);
        g.detach(at(100), b);
        assert_eq!(g.pop_expired(at(100 + 60)), Some(b));
        assert_eq!(g.counters().closed_idle, 1, "an idle close, not a linger");
    }

    #[test]
    fn a_stream_that_sends_nothing_is_closed_at_the_first_message_deadline() {
        let mut g = guard();
        g.open(at(0), ConnectionId(1), addr("10.0.0.1:1000"))
            .expect("opened");
        assert_eq!(g.next_deadline(), Some(at(10)));
        assert_eq!(g.pop_expired(at(9)), None);
        assert_eq!(g.pop_expired(at(10)), Some(ConnectionId(1)));
        assert_eq!(g.counters().closed_no_first_message, 1);
        assert!(g.is_empty());
        assert_eq!(g.next_deadline(), None);
    }

    #[test]
    fn a_stream_without_a_channel_is_closed_after_the_idle_bound_whatever_it_sends() {
        let mut g = guard();
        g.open(at(0), ConnectionId(1), addr("10.0.0.1:1000"))
            .expect("opened");
        g.heard(at(5), ConnectionId(1));
        assert_eq!(g.next_deadline(), Some(at(65)));
        // More junk does not extend it.
        g.heard(at(30), ConnectionId(1));
        assert_eq!(g.pop_expired(at(64)), None);
        assert_eq!(g.pop_expired(at(65)), Some(ConnectionId(1)));
        assert_eq!(g.counters().closed_idle, 1);
    }

    #[test]
    fn a_stream_with_a_channel_has_no_deadline_until_its_last_channel_leaves() {
        let mut g = guard();
        let c = ConnectionId(1);
        g.open(at(0), c, addr("10.0.0.1:1000")).expect("opened");
        g.heard(at(1), c);
        g.attach(c);
        g.attach(c);
        assert_eq!(g.next_deadline(), None);
        assert_eq!(g.pop_expired(at(10_000)), None);
        g.detach(at(100), c);
        assert_eq!(g.next_deadline(), None, "one channel is still on it");
        g.detach(at(200), c);
        assert_eq!(g.next_deadline(), Some(at(260)));
        // A channel that moves to another stream leaves this one.
        let d = ConnectionId(2);
        g.open(at(200), d, addr("10.0.0.2:1000")).expect("opened");
        g.moved(at(210), None, c);
        g.moved(at(220), Some(c), d);
        assert_eq!(g.pop_expired(at(280)), Some(c));
        assert_eq!(g.pop_expired(at(10_000)), None, "d carries the channel");
    }

    #[test]
    fn streams_beyond_the_per_source_cap_are_refused_and_other_sources_are_not() {
        let bounds = StreamBounds {
            per_source: 3,
            ..StreamBounds::default()
        };
        let mut g = ConnGuard::new(bounds, 1000);
        for i in 0..3 {
            g.open(at(0), ConnectionId(i), addr("10.0.0.1:1000"))
                .expect("under the cap");
        }
        assert_eq!(
            g.open(at(0), ConnectionId(3), addr("10.0.0.1:2000")),
            Err(StreamRefused::SourceFull)
        );
        // The same IPv6 /64 is one source, another /64 is not.
        for i in 10..13 {
            g.open(at(0), ConnectionId(i), addr(&format!("[2001:db8::{i}]:1")))
                .expect("under the cap");
        }
        assert_eq!(
            g.open(at(0), ConnectionId(13), addr("[2001:db8::ffff]:1")),
            Err(StreamRefused::SourceFull)
        );
        g.open(at(0), ConnectionId(14), addr("[2001:db8:0:1::1]:1"))
            .expect("another /64");
        g.open(at(0), ConnectionId(20), addr("10.0.0.2:1000"))
            .expect("another address");
        // A close makes room again.
        g.close(ConnectionId(0));
        assert_eq!(g.from_source(&addr("10.0.0.1:9")), 2);
        g.open(at(1), ConnectionId(21), addr("10.0.0.1:3000"))
            .expect("room again");
        assert_eq!(g.counters().refused_per_source, 2);
    }

    #[test]
    fn the_table_is_bounded_by_its_owner() {
        let mut g = ConnGuard::new(StreamBounds::default(), 2);
        g.open(at(0), ConnectionId(1), addr("10.0.0.1:1"))
            .expect("1");
        g.open(at(0), ConnectionId(2), addr("10.0.0.2:1"))
            .expect("2");
        assert_eq!(
            g.open(at(0), ConnectionId(3), addr("10.0.0.3:1")),
            Err(StreamRefused::TableFull)
        );
    }
}
