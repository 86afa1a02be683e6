//! The UDP socket every role's loop uses: batched receive (recvmmsg, GRO)
//! into one buffer whose datagrams the machine decrypts in place, and
//! batched send (GSO: equal-sized segments to one destination, under the
//! kernel's 64 KiB payload limit), through `quinn-udp`.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, UdpSocketState, BATCH_SIZE};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Bytes of one receive slot: room for a GRO batch of full-sized datagrams
/// (the kernel never coalesces more than 64 KiB).
pub const RECV_SLOT_LEN: usize = 64 * 1024;
/// Room per datagram in a GSO batch: an Ethernet-sized datagram; a larger
/// one is sent alone.
pub const BATCH_SLOT_LEN: usize = 1500;
/// Most bytes one GSO send may carry in all: a UDP payload's limit over
/// IPv6 (65535 - 40 - 8); the kernel refuses a larger batch with EMSGSIZE.
pub const MAX_GSO_PAYLOAD: usize = 65_487;
/// Socket buffer size asked of the kernel for each direction, so a burst
/// of paced packets is not dropped by the socket itself.
pub const SOCKET_BUFFER_LEN: usize = 4 * 1024 * 1024;
/// The UDP socket with its batching state and buffers.
#[derive(Debug)]
pub struct BatchSocket {
    socket: UdpSocket,
    state: UdpSocketState,
    /// `BATCH_SIZE` receive slots of [`RECV_SLOT_LEN`] bytes, one buffer.
    recv_buf: Vec<u8>,
    recv_meta: [RecvMeta; BATCH_SIZE],
    /// Datagrams waiting to go out as one GSO batch.
    batch: SendBatch,
}

impl BatchSocket {
    /// Binds a batching socket to `addr` (inside the runtime that polls it).
    pub fn bind(addr: SocketAddr) -> io::Result<BatchSocket> {
        BatchSocket::from_std(std::net::UdpSocket::bind(addr)?)
    }

    /// Takes a bound socket (inside the runtime that polls it).
    pub fn from_std(std_socket: std::net::UdpSocket) -> io::Result<BatchSocket> {
        std_socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&std_socket).into())?;
        // Best effort: a smaller buffer still works, it only drops sooner.
        let _ = state.set_recv_buffer_size((&std_socket).into(), SOCKET_BUFFER_LEN);
        let _ = state.set_send_buffer_size((&std_socket).into(), SOCKET_BUFFER_LEN);
        let max_segments = state.max_gso_segments().max(1);
        tracing::debug!(
            gso_segments = max_segments,
            gro_segments = state.gro_segments(),
            "udp socket ready"
        );
        Ok(BatchSocket {
            socket: UdpSocket::from_std(std_socket)?,
            state,
            recv_buf: vec![0; BATCH_SIZE * RECV_SLOT_LEN],
            recv_meta: [RecvMeta::default(); BATCH_SIZE],
            batch: SendBatch::new(max_segments),
        })
    }

    /// Waits for datagrams; returns how many slots were filled.
    pub async fn recv(&mut self) -> io::Result<usize> {
        loop {
            self.socket.readable().await?;
            let mut slots = self.recv_buf.chunks_mut(RECV_SLOT_LEN);
            let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] =
                std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
            let (socket, state, meta) = (&self.socket, &self.state, &mut self.recv_meta);
            match socket.try_io(Interest::READABLE, || {
                state.recv(socket.into(), &mut iovs, meta)
            }) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The datagrams of receive slot `slot` (several when GRO coalesced
    /// them), each mutable so the endpoint can decrypt in place.
    pub fn received(&mut self, slot: usize) -> (SocketAddr, std::slice::ChunksMut<'_, u8>) {
        let meta = self.recv_meta.get(slot).copied().unwrap_or_default();
        let start = slot * RECV_SLOT_LEN;
        let len = meta.len.min(RECV_SLOT_LEN);
        let data = self
            .recv_buf
            .get_mut(start..start + len)
            .unwrap_or_default();
        (meta.addr, data.chunks_mut(meta.stride.max(1)))
    }

    /// Sends one whole buffer (one datagram, or a GSO batch of `segment`-sized ones).
    async fn send(&self, to: SocketAddr, contents: &[u8], segment: Option<usize>) {
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: segment.filter(|s| *s < contents.len()),
            src_ip: None,
        };
        loop {
            let result = match self.socket.writable().await {
                Ok(()) => self.socket.try_io(Interest::WRITABLE, || {
                    self.state.try_send((&self.socket).into(), &transmit)
                }),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    // UDP: the protocol above retransmits; a datagram too big
                    // for the path (EMSGSIZE, a PMTU probe) is expected.
                    tracing::debug!(%to, len = contents.len(), error = %e, "datagram not sent");
                    return;
                }
            }
        }
    }

    /// Sends the pending GSO batch, if any.
    pub async fn flush(&mut self) {
        if let Some((to, len, segment)) = self.batch.take() {
            let contents = self.batch.buf.get(..len).unwrap_or_default();
            self.send(to, contents, Some(segment)).await;
        }
    }

    /// Adds a datagram to the GSO batch, sending the batch first if the
    /// datagram cannot join it, and after if it is full.
    pub async fn queue(&mut self, to: SocketAddr, datagram: &[u8]) {
        if !self.batch.push(to, datagram) {
            self.flush().await;
            if !self.batch.push(to, datagram) {
                // Larger than the batch buffer: alone.
                self.send(to, datagram, None).await;
                return;
            }
        }
        if self.batch.is_full() {
            self.flush().await;
        }
    }
}

/// Datagrams to one destination, all `segment` bytes long except possibly
/// the last (the GSO rule), laid end to end in one buffer.
#[derive(Debug)]
struct SendBatch {
    buf: Vec<u8>,
    len: usize,
    segment: usize,
    count: usize,
    max_segments: usize,
    destination: Option<SocketAddr>,
    /// The last segment was shorter: nothing more may join.
    closed: bool,
}

impl SendBatch {
    fn new(max_segments: usize) -> SendBatch {
        SendBatch {
            // The kernel refuses a GSO send whose whole UDP payload passes
            // 64 KiB (EMSGSIZE): the batch never grows past that.
            buf: vec![0; (max_segments * BATCH_SLOT_LEN).min(MAX_GSO_PAYLOAD)],
            len: 0,
            segment: 0,
            count: 0,
            max_segments,
            destination: None,
            closed: false,
        }
    }

    /// Whether a datagram of `len` bytes to `to` may join the batch.
    fn fits(&self, to: SocketAddr, len: usize) -> bool {
        self.count > 0
            && !self.closed
            && self.destination == Some(to)
            && self.count < self.max_segments
            && len <= self.segment
            && self.len + len <= self.buf.len()
    }

    /// Adds a datagram if it may join (an empty batch takes any that fits
    /// the buffer); whether it did.
    fn push(&mut self, to: SocketAddr, datagram: &[u8]) -> bool {
        if self.count == 0 {
            if datagram.len() > self.buf.len() || datagram.is_empty() {
                return false;
            }
            self.destination = Some(to);
            self.segment = datagram.len();
            self.closed = false;
            self.len = 0;
        } else if !self.fits(to, datagram.len()) {
            return false;
        }
        let Some(slot) = self.buf.get_mut(self.len..self.len + datagram.len()) else {
            return false;
        };
        slot.copy_from_slice(datagram);
        self.len += datagram.len();
        self.count += 1;
        if datagram.len() < self.segment {
            self.closed = true;
        }
        true
    }

    /// Whether the batch can take nothing more.
    fn is_full(&self) -> bool {
        self.count >= self.max_segments || self.closed || self.len + self.segment > self.buf.len()
    }

    /// Empties the batch: (destination, bytes, segment size).
    fn take(&mut self) -> Option<(SocketAddr, usize, usize)> {
        if self.count == 0 {
            return None;
        }
        let to = self.destination?;
        let out = (to, self.len, self.segment);
        self.count = 0;
        self.len = 0;
        self.closed = false;
        Some(out)
    }
}

impl BatchSocket {
    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn gso_batch_takes_equal_segments_to_one_destination() {
        let mut batch = SendBatch::new(4);
        assert!(batch.push(addr(1), &[1; 100]));
        assert!(batch.push(addr(1), &[2; 100]));
        // Another destination, or a larger datagram, cannot join.
        assert!(!batch.push(addr(2), &[3; 100]));
        assert!(!batch.push(addr(1), &[3; 101]));
        // A shorter one can, and ends the batch.
        assert!(batch.push(addr(1), &[4; 50]));
        assert!(batch.is_full());
        assert!(!batch.push(addr(1), &[5; 50]));
        assert_eq!(batch.take(), Some((addr(1), 250, 100)));
        assert_eq!(batch.take(), None);
    }

    #[test]
    fn gso_batch_is_full_at_the_kernel_segment_limit() {
        let mut batch = SendBatch::new(2);
        assert!(batch.push(addr(1), &[0; 10]));
        assert!(!batch.is_full());
        assert!(batch.push(addr(1), &[0; 10]));
        assert!(batch.is_full());
        assert!(!batch.push(addr(1), &[0; 10]));
    }

    #[test]
    fn gso_batch_never_passes_the_kernels_64_kib_payload_limit() {
        // 64 segments of 1452 bytes would be 92,928 bytes: the kernel
        // refuses such a send whole (EMSGSIZE), losing every packet in it.
        let mut batch = SendBatch::new(64);
        let mut pushed = 0;
        while !batch.is_full() && batch.push(addr(1), &[7; 1452]) {
            pushed += 1;
        }
        assert_eq!(pushed, MAX_GSO_PAYLOAD / 1452);
        let (_, len, segment) = batch.take().unwrap();
        assert!(len <= MAX_GSO_PAYLOAD);
        assert_eq!(segment, 1452);
    }

    #[tokio::test]
    async fn batched_socket_delivers_a_gso_batch_as_separate_datagrams() {
        let mut a = BatchSocket::bind(addr(0)).unwrap();
        let b = std::net::UdpSocket::bind(addr(0)).unwrap();
        let to = b.local_addr().unwrap();
        let from = a.socket.local_addr().unwrap();
        let n = a.batch.max_segments.min(3);
        for i in 0..n as u8 {
            assert!(a.batch.push(to, &[i; 1200]));
        }
        a.flush().await;
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2000];
        for i in 0..n as u8 {
            let (len, src) = b.recv_from(&mut buf).unwrap();
            assert_eq!((len, src), (1200, from));
            assert!(buf[..len].iter().all(|x| *x == i));
        }
        // And the batched receive side splits what arrives.
        b.send_to(&[9; 700], from).unwrap();
        let slots = a.recv().await.unwrap();
        assert_eq!(slots, 1);
        let (src, mut datagrams) = a.received(0);
        assert_eq!(src, to);
        assert_eq!(datagrams.next().map(|d| d.len()), Some(700));
    }
}
