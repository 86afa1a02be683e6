//! The bounded queue of outgoing unreliable datagrams.
//!
//! Real-time data prefers fresh: when the queue is full the oldest datagram
//! is dropped (and counted). Datagrams go out before stream data and are
//! never retransmitted.

use heapless::Deque;

/// Most datagrams waiting to be sent.
pub const MAX_QUEUED_DATAGRAMS: usize = 16;
/// Most bytes in one datagram (fits a DATAGRAM frame in a 1452-byte packet
/// after the 38-byte outer overhead; the current PMTU may allow less).
pub const MAX_APP_DATAGRAM_LEN: usize = 1411;

/// Why a datagram was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramError {
    /// Larger than the current path allows (see `Transport::max_datagram_len`).
    TooLarge {
        /// The most bytes a datagram may hold now.
        max: usize,
    },
    /// The transport is closing or closed.
    Closed,
}

impl core::fmt::Display for DatagramError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DatagramError::TooLarge { max } => write!(f, "datagram larger than {max} bytes"),
            DatagramError::Closed => f.write_str("transport closed"),
        }
    }
}

impl core::error::Error for DatagramError {}

/// One queued datagram.
#[derive(Clone)]
pub struct Datagram {
    len: u16,
    data: [u8; MAX_APP_DATAGRAM_LEN],
}

impl core::fmt::Debug for Datagram {
    /// The length only.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Datagram").field("len", &self.len).finish()
    }
}

impl Datagram {
    /// The datagram's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

/// The queue.
#[derive(Debug, Clone)]
pub struct DatagramQueue {
    queue: Deque<Datagram, MAX_QUEUED_DATAGRAMS>,
}

impl Default for DatagramQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl DatagramQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        DatagramQueue {
            queue: Deque::new(),
        }
    }

    /// Queues `data` (at most [`MAX_APP_DATAGRAM_LEN`] bytes, checked by the
    /// caller); returns whether an older datagram was dropped to make room.
    pub fn push(&mut self, data: &[u8]) -> bool {
        let len = data.len().min(MAX_APP_DATAGRAM_LEN);
        let mut dropped = false;
        if self.queue.is_full() {
            self.queue.pop_front();
            dropped = true;
        }
        let mut d = Datagram {
            len: len as u16,
            data: [0; MAX_APP_DATAGRAM_LEN],
        };
        d.data[..len].copy_from_slice(&data[..len]);
        // Cannot fail: one slot was freed above if needed.
        let _ = self.queue.push_back(d);
        dropped
    }

    /// The oldest queued datagram.
    pub fn front(&self) -> Option<&Datagram> {
        self.queue.front()
    }

    /// Drops the oldest queued datagram.
    pub fn pop(&mut self) {
        self.queue.pop_front();
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// How many are queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Drops everything queued; returns how many.
    pub fn clear(&mut self) -> usize {
        let n = self.queue.len();
        self.queue.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_oldest() {
        let mut q = DatagramQueue::new();
        for i in 0..MAX_QUEUED_DATAGRAMS as u8 {
            assert!(!q.push(&[i]));
        }
        assert!(q.push(&[99]));
        assert_eq!(q.front().unwrap().bytes(), &[1]);
        assert_eq!(q.len(), MAX_QUEUED_DATAGRAMS);
    }
}
