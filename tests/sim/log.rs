//! Bounded event logs and the session server's durable store.

use tryst_core::time::Instant;

/// The most events a log keeps by default (per machine); later ones are
/// counted, not kept, so a long run cannot grow without bound.
pub const DEFAULT_LOG_LIMIT: usize = 10_000;

/// What one machine reported, in order, with the time it was polled.
#[derive(Debug, Clone)]
pub struct EventLog<E> {
    events: Vec<(Instant, E)>,
    limit: usize,
    dropped: u64,
    total: u64,
}

impl<E> EventLog<E> {
    /// An empty log keeping at most `limit` events.
    pub fn new(limit: usize) -> Self {
        EventLog {
            events: Vec::new(),
            limit,
            dropped: 0,
            total: 0,
        }
    }

    /// Records an event (or counts it, once the log is full).
    pub fn push(&mut self, at: Instant, event: E) {
        self.total += 1;
        if self.events.len() < self.limit {
            self.events.push((at, event));
        } else {
            self.dropped += 1;
        }
    }

    /// The kept events, oldest first.
    pub fn events(&self) -> &[(Instant, E)] {
        &self.events
    }

    /// Iterates the kept events without their times.
    pub fn iter(&self) -> impl Iterator<Item = &E> + '_ {
        self.events.iter().map(|(_, e)| e)
    }

    /// Events recorded in all, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Events that did not fit.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Forgets the kept events (counters stay).
    pub fn clear(&mut self) {
        self.events.clear();
    }
}
