//! The relay's forwards waiting for the driver's next `poll_output`.
//!
//! A driver may hand the relay a whole receive batch (`recvmmsg` slots,
//! GRO-coalesced segments: [`MAX_BATCH_BYTES`] at most) before it polls
//! once; each datagram of it can ask for one forward. A single output
//! slot kept only the last of them and silently dropped the rest (a
//! quarter of a relayed transfer's packets on loopback, counted as
//! forwarded). This queue keeps every forward of such a batch, in order,
//! in one buffer, bounded in bytes and in entries: what does not fit is
//! dropped and counted, never kept.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::net::IpAddr;

use crate::machine::{Destination, Transmit};

/// Most bytes of forwards waiting at once: at least one driver receive
/// batch of forwards ([`MAX_BATCH_BYTES`]), framed, with room to spare.
pub const MAX_QUEUED_FORWARD_BYTES: usize = 2 * MAX_BATCH_BYTES;
/// Most forwards waiting at once (small packets cost an entry each).
pub const MAX_QUEUED_FORWARDS: usize = 8192;
/// The most bytes one driver receive batch holds (the std layer's
/// `BATCH_SIZE` slots of 64 KiB, checked there at compile time).
pub const MAX_BATCH_BYTES: usize = 32 * 64 * 1024;

// A driver's whole receive batch of forwards fits, framed for TCP.
const _: () = assert!(MAX_QUEUED_FORWARD_BYTES >= MAX_BATCH_BYTES + MAX_BATCH_BYTES / 1472 * 2);

/// Forwards in arrival order; see the [module](self) docs.
#[derive(Debug, Default)]
pub struct ForwardQueue {
    /// Where each goes, from which local address, and its length in `bytes`.
    entries: VecDeque<(Destination, Option<IpAddr>, usize)>,
    /// The forwards' bytes, back to back; emptied whenever the queue is.
    bytes: Vec<u8>,
    /// Offset in `bytes` of the first entry's bytes.
    head: usize,
    /// Forwards dropped because the queue was full.
    overflowed: u64,
}

impl ForwardQueue {
    /// An empty queue.
    pub fn new() -> ForwardQueue {
        ForwardQueue::default()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forwards waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Forwards dropped so far because the queue was full.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Queues `parts` (concatenated: a frame header and a packet, or just a
    /// packet) for `destination`. Returns false (and counts it) when the
    /// queue is full.
    pub fn push(
        &mut self,
        destination: Destination,
        local: Option<IpAddr>,
        parts: &[&[u8]],
    ) -> bool {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if self.entries.len() >= MAX_QUEUED_FORWARDS
            || self.bytes.len() - self.head + len > MAX_QUEUED_FORWARD_BYTES
        {
            self.overflowed += 1;
            return false;
        }
        for part in parts {
            self.bytes.extend_from_slice(part);
        }
        self.entries.push_back((destination, local, len));
        true
    }

    /// The oldest forward, copied into `buf`, as a transmit. A forward
    /// longer than `buf` is dropped (and counted).
    pub fn pop(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some((destination, local, len)) = self.entries.pop_front() {
            let start = self.head;
            self.head += len;
            let copied = match (buf.get_mut(..len), self.bytes.get(start..start + len)) {
                (Some(out), Some(bytes)) => {
                    out.copy_from_slice(bytes);
                    true
                }
                _ => false,
            };
            if self.entries.is_empty() {
                self.bytes.clear();
                self.head = 0;
            }
            if copied {
                return Some(Transmit {
                    destination,
                    local,
                    len,
                });
            }
            self.overflowed += 1;
        }
        None
    }

    /// Drops every forward to `destination` (a connection that closed).
    pub fn forget(&mut self, destination: Destination) {
        if !self.entries.iter().any(|(d, _, _)| *d == destination) {
            return;
        }
        let mut kept = ForwardQueue {
            overflowed: self.overflowed,
            ..ForwardQueue::default()
        };
        let mut offset = self.head;
        for (d, local, len) in self.entries.drain(..) {
            if d != destination {
                if let Some(bytes) = self.bytes.get(offset..offset + len) {
                    kept.bytes.extend_from_slice(bytes);
                    kept.entries.push_back((d, local, len));
                }
            }
            offset += len;
        }
        *self = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::ConnectionId;
    use core::net::SocketAddr;

    fn udp(port: u16) -> Destination {
        Destination::Udp(SocketAddr::from(([192, 0, 2, 1], port)))
    }

    #[test]
    fn relay_queue_keeps_every_forward_of_a_batch_in_order() {
        let mut q = ForwardQueue::new();
        for i in 0..100u8 {
            assert!(q.push(udp(u16::from(i)), None, &[&[i; 1200]]));
        }
        let mut buf = [0u8; 1500];
        for i in 0..100u8 {
            let t = q.pop(&mut buf).expect("queued");
            assert_eq!(t.destination, udp(u16::from(i)));
            assert_eq!(t.len, 1200);
            assert!(buf[..1200].iter().all(|b| *b == i));
        }
        assert!(q.pop(&mut buf).is_none());
        assert!(q.is_empty() && q.bytes.is_empty());
    }

    #[test]
    fn relay_queue_is_bounded_in_bytes_and_entries() {
        let mut q = ForwardQueue::new();
        let big = [7u8; 1472];
        let fit = MAX_QUEUED_FORWARD_BYTES / big.len();
        for _ in 0..fit {
            assert!(q.push(udp(1), None, &[&big]));
        }
        assert!(!q.push(udp(1), None, &[&big]));
        assert_eq!(q.overflowed(), 1);
        assert!(q.bytes.len() <= MAX_QUEUED_FORWARD_BYTES);
        let mut q = ForwardQueue::new();
        for _ in 0..MAX_QUEUED_FORWARDS {
            assert!(q.push(udp(1), None, &[&[1]]));
        }
        assert!(!q.push(udp(1), None, &[&[1]]));
        assert_eq!(q.len(), MAX_QUEUED_FORWARDS);
    }

    #[test]
    fn relay_queue_forgets_a_closed_connection_and_drops_what_does_not_fit() {
        let mut q = ForwardQueue::new();
        let conn = Destination::Connection(ConnectionId(3));
        assert!(q.push(udp(1), None, &[&[1; 10]]));
        assert!(q.push(conn, None, &[&[0, 8], &[2; 8]]));
        assert!(q.push(udp(2), None, &[&[3; 10]]));
        q.forget(conn);
        let mut small = [0u8; 9];
        // Too long for the buffer: dropped and counted; the next one comes.
        assert!(q.pop(&mut small).is_none());
        assert_eq!(q.overflowed(), 2);
        let mut q2 = ForwardQueue::new();
        assert!(q2.push(udp(1), None, &[&[1; 10]]));
        assert!(q2.push(conn, None, &[&[0, 8], &[2; 8]]));
        assert!(q2.push(udp(2), None, &[&[3; 10]]));
        q2.forget(conn);
        let mut buf = [0u8; 64];
        assert_eq!(q2.pop(&mut buf).map(|t| t.destination), Some(udp(1)));
        let t = q2.pop(&mut buf).expect("the third");
        assert_eq!((t.destination, &buf[..t.len]), (udp(2), &[3u8; 10][..]));
        assert!(q2.pop(&mut buf).is_none());
    }
}
