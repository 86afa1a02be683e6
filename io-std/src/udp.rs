//! The batched UDP socket both drivers use: batched receive (recvmmsg,
//! GRO) into one buffer whose datagrams the machine decrypts in place, and
//! batched send (GSO: equal-sized segments to one destination, under the
//! kernel's 64 KiB payload limit), through `quinn-udp`; single datagrams to
//! many destinations (a server's acks, one per terminal) leave together in
//! one `sendmmsg` (Linux, through rustix) instead of one syscall each.
//!
//! [`UdpBatch`] is the batching state without a socket: its methods act on
//! a non-blocking socket they are given and return
//! [`io::ErrorKind::WouldBlock`] when it is not ready, so each driver waits
//! for readiness its own way (the blocking driver on its poller, the tokio
//! driver with `try_io`, as quinn does). [`BatchSocket`] is a std socket
//! with its batch, for the blocking driver.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;

use quinn_udp::{RecvMeta, UdpSocketState, BATCH_SIZE};
use tryst_core::machine::{Input, Machine};
use tryst_core::time::Instant;

/// The local address that datagrams from a socket bound to `bound` carry
/// toward `toward`: `bound` itself, or, when its IP is unspecified, its port
/// with the source address the host's routing picks for `toward` (asked of
/// a throwaway connected socket; nothing is sent). `None` if the routing
/// has no answer. A terminal tells this to the servers for the operator's
/// NAT type guess ([`tryst_core::trigger_server::NatGuess`]).
pub fn local_address_toward(bound: SocketAddr, toward: SocketAddr) -> Option<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return Some(bound);
    }
    let any: SocketAddr = match toward {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let probe = std::net::UdpSocket::bind(any).ok()?;
    probe.connect(toward).ok()?;
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(SocketAddr::new(ip, bound.port()))
}

/// Fills in `config.local_udp` for a terminal whose UDP socket is bound to
/// `bound`, unless the app gave one ([`local_address_toward`] the trigger
/// server). Both drivers call it once, after binding.
pub fn fill_local_udp(config: &mut tryst_core::terminal::TerminalConfig, bound: SocketAddr) {
    if config.local_udp.is_none() {
        config.local_udp = local_address_toward(bound, config.trigger_server);
    }
}

/// Bytes of one receive slot: room for a GRO batch of full-sized datagrams
/// (the kernel never coalesces more than 64 KiB).
pub const RECV_SLOT_LEN: usize = 64 * 1024;
// The relay machine keeps every forward one receive batch asks for.
const _: () = assert!(BATCH_SIZE * RECV_SLOT_LEN <= tryst_core::relay::queue::MAX_BATCH_BYTES);
/// Room per datagram in a GSO batch: an Ethernet-sized datagram; a larger
/// one is sent alone.
pub const BATCH_SLOT_LEN: usize = 1500;
/// Most bytes one GSO send may carry in all: a UDP payload's limit over
/// IPv6 (65535 - 40 - 8); the kernel refuses a larger batch with EMSGSIZE.
pub const MAX_GSO_PAYLOAD: usize = 65_487;
/// Socket buffer size asked of the kernel for each direction, so a burst
/// of paced packets is not dropped by the socket itself.
pub const SOCKET_BUFFER_LEN: usize = 4 * 1024 * 1024;
/// Most single datagrams (to different destinations) one `sendmmsg` sends:
/// a receive batch's worth of answers.
pub const MMSG_SLOTS: usize = 32;

/// Whether an error only says the socket is not ready.
fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// The batching state of one UDP socket: quinn-udp's socket state, the
/// receive slots with their metadata, and the GSO batch waiting to go out.
#[derive(Debug)]
pub struct UdpBatch {
    state: UdpSocketState,
    /// `BATCH_SIZE` receive slots of [`RECV_SLOT_LEN`] bytes, one buffer.
    recv_buf: Vec<u8>,
    recv_meta: [RecvMeta; BATCH_SIZE],
    /// Datagrams waiting to go out as one GSO batch.
    batch: SendBatch,
    /// Single datagrams to several destinations waiting for one
    /// `sendmmsg`, all queued before what `batch` holds.
    singles: Singles,
}

impl UdpBatch {
    /// Sets `socket` up for batching (non-blocking, buffers of
    /// [`SOCKET_BUFFER_LEN`] where the system allows: best effort, a
    /// smaller buffer still works, it only drops sooner) and makes its state.
    pub fn new<S: AsFd>(socket: &S) -> io::Result<UdpBatch> {
        quinn_udp::UdpSockRef::from(socket).set_nonblocking(true)?;
        let state = UdpSocketState::new(socket.into())?;
        let _ = state.set_recv_buffer_size(socket.into(), SOCKET_BUFFER_LEN);
        let _ = state.set_send_buffer_size(socket.into(), SOCKET_BUFFER_LEN);
        let max_segments = state.max_gso_segments().max(1);
        tracing::debug!(
            gso_segments = max_segments,
            gro_segments = state.gro_segments(),
            "udp socket ready"
        );
        let bound = rustix::net::getsockname(socket)
            .ok()
            .and_then(|a| SocketAddr::try_from(a).ok());
        Ok(UdpBatch {
            state,
            recv_buf: vec![0; BATCH_SIZE * RECV_SLOT_LEN],
            recv_meta: [RecvMeta::default(); BATCH_SIZE],
            batch: SendBatch::new(max_segments),
            singles: Singles::new(bound),
        })
    }

    /// Receives what is waiting on `socket`; how many slots were filled,
    /// or `WouldBlock` when nothing is.
    pub fn try_recv<S: AsFd>(&mut self, socket: &S) -> io::Result<usize> {
        let mut slots = self.recv_buf.chunks_mut(RECV_SLOT_LEN);
        let mut iovs: [IoSliceMut<'_>; BATCH_SIZE] =
            std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
        self.state
            .recv(socket.into(), &mut iovs, &mut self.recv_meta)
    }

    /// The datagrams of receive slot `slot` (several when GRO coalesced
    /// them), each mutable so the endpoint can decrypt in place.
    pub fn received(&mut self, slot: usize) -> (SocketAddr, std::slice::ChunksMut<'_, u8>) {
        let meta = self.recv_meta.get(slot).copied().unwrap_or_default();
        let start = slot.saturating_mul(RECV_SLOT_LEN);
        let len = meta.len.min(RECV_SLOT_LEN);
        let data = self
            .recv_buf
            .get_mut(start..start.saturating_add(len))
            .unwrap_or_default();
        (meta.addr, data.chunks_mut(meta.stride.max(1)))
    }

    /// Feeds `machine` every datagram of the first `slots` receive slots
    /// (what [`Self::try_recv`] filled), in place.
    pub fn deliver<M: Machine + ?Sized>(
        &mut self,
        slots: usize,
        now: Instant,
        machine: &mut M,
        io: &mut M::Io,
    ) {
        for slot in 0..slots {
            // Where it arrived (IP_PKTINFO, which quinn-udp turns on): on a
            // socket bound to an unspecified address of a host with several,
            // the machine answers from there.
            let local = self
                .recv_meta
                .get(slot)
                .and_then(|meta| meta.dst_ip)
                .filter(|ip| answerable_from(*ip));
            let (from, datagrams) = self.received(slot);
            for bytes in datagrams {
                let input = Input::Datagram { from, local, bytes };
                machine.handle_input(now, input, io);
            }
        }
    }

    /// Sends one whole buffer (one datagram, or a GSO batch of
    /// `segment`-sized ones); `WouldBlock` when the send buffer is full.
    /// Any other failure is logged and the datagrams dropped (UDP: the
    /// protocol above retransmits; a datagram too big for the path, a PMTU
    /// probe, is expected).
    fn send<S: AsFd>(
        state: &UdpSocketState,
        socket: &S,
        (to, local): Path,
        contents: &[u8],
        segment: Option<usize>,
    ) -> io::Result<()> {
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: segment.filter(|s| *s < contents.len()),
            src_ip: local,
        };
        match state.try_send(socket.into(), &transmit) {
            Err(e) if would_block(&e) => Err(e),
            Err(e) => {
                tracing::debug!(%to, len = contents.len(), error = %e, "datagram not sent");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Whether a GSO batch is waiting to be sent.
    pub fn has_pending(&self) -> bool {
        self.batch.count > 0 || self.singles.pending()
    }

    /// Sends what is pending: the single datagrams (one `sendmmsg`, a lone
    /// datagram in the GSO batch joining them), then the GSO batch, if any;
    /// `WouldBlock` (the rest kept) when the socket is not ready.
    pub fn try_flush<S: AsFd>(&mut self, socket: &S) -> io::Result<()> {
        self.park_single(socket)?;
        self.singles.flush(socket)?;
        let Some((path, len, segment)) = self.batch.peek() else {
            return Ok(());
        };
        let contents = self.batch.buf.get(..len).unwrap_or_default();
        UdpBatch::send(&self.state, socket, path, contents, Some(segment))?;
        self.batch.clear();
        Ok(())
    }

    /// Takes a datagram for `to`, to leave from local address `local`
    /// (`None`: the system chooses; see
    /// [`Transmit::local`](tryst_core::machine::Transmit::local)): adds it
    /// to the GSO batch, sending the batch first if the datagram cannot
    /// join it (one larger than the batch buffer goes alone). `Ok` once it
    /// is taken (a batch it filled is sent then, or kept for the next call
    /// if the socket is not ready); `WouldBlock` when it was not taken:
    /// wait until the socket is writable and offer it again.
    pub fn try_queue<S: AsFd>(
        &mut self,
        socket: &S,
        to: SocketAddr,
        local: Option<IpAddr>,
        datagram: &[u8],
    ) -> io::Result<()> {
        let path = (to, local);
        if !self.batch.push(path, datagram) {
            if !self.park_single(socket)? {
                self.try_flush(socket)?;
            }
            if !self.batch.push(path, datagram) {
                // Too large for the batch: alone, after what came before.
                self.singles.flush(socket)?;
                return UdpBatch::send(&self.state, socket, path, datagram, None);
            }
        }
        if self.batch.is_full() {
            let sent = match self.park_single(socket) {
                Ok(true) => Ok(()),
                Ok(false) => self.try_flush(socket),
                Err(e) => Err(e),
            };
            match sent {
                Err(e) if !would_block(&e) => return Err(e),
                // Taken: a batch the socket had no room for goes next time.
                _ => {}
            }
        }
        Ok(())
    }

    /// Moves a GSO batch of one datagram to the singles (sending those
    /// first if they are full), when `sendmmsg` can carry it; whether it
    /// did. `WouldBlock` when the singles were full and the socket is not
    /// ready (nothing moved).
    fn park_single<S: AsFd>(&mut self, socket: &S) -> io::Result<bool> {
        let Some((path, len, _)) = self.batch.peek() else {
            return Ok(false);
        };
        if self.batch.count != 1 || !self.singles.carries(path, len) {
            return Ok(false);
        }
        if self.singles.is_full() {
            self.singles.flush(socket)?;
        }
        let bytes = self.batch.buf.get(..len).unwrap_or_default();
        let parked = self.singles.push(path.0, bytes);
        if parked {
            self.batch.clear();
        }
        Ok(parked)
    }

    /// Most datagrams one GSO send carries on this socket.
    pub fn max_segments(&self) -> usize {
        self.batch.max_segments
    }
}

/// A std UDP socket (non-blocking) with its batching state: the blocking
/// driver's socket, polled for readiness by its loop.
#[derive(Debug)]
pub struct BatchSocket {
    socket: std::net::UdpSocket,
    batch: UdpBatch,
}

impl BatchSocket {
    /// Binds a batching socket to `addr`.
    pub fn bind(addr: SocketAddr) -> io::Result<BatchSocket> {
        BatchSocket::from_std(std::net::UdpSocket::bind(addr)?)
    }

    /// Takes a bound socket (made non-blocking).
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<BatchSocket> {
        let batch = UdpBatch::new(&socket)?;
        Ok(BatchSocket { socket, batch })
    }

    /// The socket, for a poller to watch.
    pub fn socket(&self) -> &std::net::UdpSocket {
        &self.socket
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// [`UdpBatch::try_recv`] on this socket.
    pub fn try_recv(&mut self) -> io::Result<usize> {
        self.batch.try_recv(&self.socket)
    }

    /// [`UdpBatch::received`].
    pub fn received(&mut self, slot: usize) -> (SocketAddr, std::slice::ChunksMut<'_, u8>) {
        self.batch.received(slot)
    }

    /// [`UdpBatch::deliver`].
    pub fn deliver<M: Machine + ?Sized>(
        &mut self,
        slots: usize,
        now: Instant,
        machine: &mut M,
        io: &mut M::Io,
    ) {
        self.batch.deliver(slots, now, machine, io);
    }

    /// [`UdpBatch::try_queue`] on this socket.
    pub fn try_queue(
        &mut self,
        to: SocketAddr,
        local: Option<IpAddr>,
        datagram: &[u8],
    ) -> io::Result<()> {
        self.batch.try_queue(&self.socket, to, local, datagram)
    }

    /// [`UdpBatch::try_flush`] on this socket.
    pub fn try_flush(&mut self) -> io::Result<()> {
        self.batch.try_flush(&self.socket)
    }

    /// Whether a GSO batch is waiting to be sent.
    pub fn has_pending(&self) -> bool {
        self.batch.has_pending()
    }
}

/// Where a datagram goes and the local address it leaves from (`None`: the
/// system chooses); one GSO batch has one path.
type Path = (SocketAddr, Option<IpAddr>);

/// Whether an answer can leave from `ip`, the address a datagram arrived
/// at: a unicast address (never a broadcast or multicast one, which no
/// datagram can be sent from).
fn answerable_from(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// Single datagrams to any destinations, each in a slot of
/// [`BATCH_SLOT_LEN`] bytes, sent together by one `sendmmsg` (Linux): the
/// many answers of a server (keepalive acks, one per terminal) cost one
/// syscall per [`MMSG_SLOTS`] instead of one each. Only datagrams that need
/// no ancillary data join (rustix's `sendmmsg` carries none): no GSO, and a
/// source address that is the socket's own (or none); the rest take
/// quinn-udp's path.
#[derive(Debug)]
struct Singles {
    /// [`MMSG_SLOTS`] slots of [`BATCH_SLOT_LEN`] bytes.
    buf: Vec<u8>,
    /// Each queued datagram's destination (as the socket's family) and
    /// length, in slot order.
    queued: Vec<(rustix::net::SocketAddrAny, usize)>,
    /// How many of `queued` a partial send already sent.
    sent: usize,
    /// The socket's bound address, if known (none: nothing joins).
    bound: Option<SocketAddr>,
}

impl Singles {
    fn new(bound: Option<SocketAddr>) -> Singles {
        Singles {
            buf: vec![0; MMSG_SLOTS * BATCH_SLOT_LEN],
            queued: Vec::with_capacity(MMSG_SLOTS),
            sent: 0,
            bound: bound.filter(|_| cfg!(target_os = "linux")),
        }
    }

    /// Whether a datagram of `len` bytes on `path` can go by `sendmmsg`:
    /// it fits a slot, and it leaves from the socket's own address (a
    /// socket on an unspecified address answering from a chosen one needs
    /// IP_PKTINFO, which only quinn-udp's path sets).
    fn carries(&self, (_, local): Path, len: usize) -> bool {
        let Some(bound) = self.bound else {
            return false;
        };
        len <= BATCH_SLOT_LEN
            && match local {
                None => true,
                Some(ip) => !bound.ip().is_unspecified() && bound.ip() == ip,
            }
    }

    fn pending(&self) -> bool {
        self.sent < self.queued.len()
    }

    fn is_full(&self) -> bool {
        self.queued.len() >= MMSG_SLOTS
    }

    /// Queues a datagram for `to` (one [`Self::carries`] took); whether it
    /// was queued (a full queue takes nothing).
    fn push(&mut self, to: SocketAddr, datagram: &[u8]) -> bool {
        let Some(bound) = self.bound else {
            return false;
        };
        // A dual-stack IPv6 socket sends to an IPv4 peer at its mapped address.
        let to =
            match (bound, to) {
                (SocketAddr::V6(_), SocketAddr::V4(v4)) => SocketAddr::V6(
                    std::net::SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
                ),
                _ => to,
            };
        if self.is_full() || datagram.len() > BATCH_SLOT_LEN {
            return false;
        }
        let start = self.queued.len() * BATCH_SLOT_LEN;
        let Some(slot) = self.buf.get_mut(start..start + datagram.len()) else {
            return false;
        };
        slot.copy_from_slice(datagram);
        self.queued
            .push((rustix::net::SocketAddrAny::from(to), datagram.len()));
        true
    }

    /// Sends every queued datagram (`sendmmsg`, as many calls as the kernel
    /// needs); `WouldBlock` with the unsent ones kept when the socket is
    /// not ready. A datagram the kernel refuses for another reason is
    /// logged and dropped, as [`UdpBatch::send`] does.
    #[cfg(target_os = "linux")]
    fn flush<S: AsFd>(&mut self, socket: &S) -> io::Result<()> {
        use rustix::io::Errno;
        use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags};
        while self.pending() {
            let mut iovs: [[io::IoSlice<'_>; 1]; MMSG_SLOTS] =
                std::array::from_fn(|_| [io::IoSlice::new(&[])]);
            let mut controls: [SendAncillaryBuffer<'_, '_, '_>; MMSG_SLOTS] =
                std::array::from_fn(|_| SendAncillaryBuffer::default());
            for (i, (iov, (_, len))) in iovs.iter_mut().zip(&self.queued).enumerate() {
                let start = i * BATCH_SLOT_LEN;
                *iov = [io::IoSlice::new(
                    self.buf.get(start..start + len).unwrap_or_default(),
                )];
            }
            let mut msgs: Vec<MMsgHdr<'_>> = self
                .queued
                .iter()
                .zip(iovs.iter())
                .zip(controls.iter_mut())
                .skip(self.sent)
                .map(|(((to, _), iov), control)| MMsgHdr::new_with_addr(to, iov, control))
                .collect();
            match rustix::net::sendmmsg(socket, &mut msgs, SendFlags::DONTWAIT) {
                Ok(n) if n > 0 => self.sent += n,
                Err(Errno::INTR) => {}
                Err(e) if e == Errno::WOULDBLOCK || e == Errno::AGAIN => {
                    return Err(io::Error::from(e))
                }
                // Refused (or nothing sent): drop the first and go on.
                result => {
                    tracing::debug!(?result, "datagram not sent");
                    self.sent += 1;
                }
            }
        }
        self.queued.clear();
        self.sent = 0;
        Ok(())
    }

    /// Nothing is ever queued off Linux ([`Self::carries`] says no).
    #[cfg(not(target_os = "linux"))]
    fn flush<S: AsFd>(&mut self, _socket: &S) -> io::Result<()> {
        self.queued.clear();
        self.sent = 0;
        Ok(())
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
    destination: Option<Path>,
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

    /// Whether a datagram of `len` bytes on `to` may join the batch.
    fn fits(&self, to: Path, len: usize) -> bool {
        self.count > 0
            && !self.closed
            && self.destination == Some(to)
            && self.count < self.max_segments
            && len <= self.segment
            && self.len + len <= self.buf.len()
    }

    /// Adds a datagram if it may join (an empty batch takes any that fits
    /// the buffer); whether it did.
    fn push(&mut self, to: Path, datagram: &[u8]) -> bool {
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

    /// The batch, if any: (path, bytes, segment size).
    fn peek(&self) -> Option<(Path, usize, usize)> {
        if self.count == 0 {
            return None;
        }
        Some((self.destination?, self.len, self.segment))
    }

    /// Empties the batch (it was sent).
    fn clear(&mut self) {
        self.count = 0;
        self.len = 0;
        self.closed = false;
    }

    /// Empties the batch: (path, bytes, segment size).
    #[cfg(test)]
    fn take(&mut self) -> Option<(Path, usize, usize)> {
        let out = self.peek();
        self.clear();
        out
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
    fn local_address_toward_fills_in_an_unspecified_bind_from_the_route() {
        // A specific bind is its own answer.
        assert_eq!(
            local_address_toward(addr(4000), addr(7401)),
            Some(addr(4000))
        );
        // 0.0.0.0 toward loopback: the loopback source, the bound port.
        let any = SocketAddr::from(([0, 0, 0, 0], 4000));
        assert_eq!(local_address_toward(any, addr(7401)), Some(addr(4000)));
    }

    #[test]
    fn gso_batch_takes_equal_segments_to_one_destination() {
        let mut batch = SendBatch::new(4);
        assert!(batch.push((addr(1), None), &[1; 100]));
        assert!(batch.push((addr(1), None), &[2; 100]));
        // Another destination, or a larger datagram, cannot join.
        assert!(!batch.push((addr(2), None), &[3; 100]));
        assert!(!batch.push((addr(1), None), &[3; 101]));
        // A shorter one can, and ends the batch.
        assert!(batch.push((addr(1), None), &[4; 50]));
        assert!(batch.is_full());
        assert!(!batch.push((addr(1), None), &[5; 50]));
        assert_eq!(batch.take(), Some(((addr(1), None), 250, 100)));
        assert_eq!(batch.take(), None);
    }

    #[test]
    fn gso_batch_is_full_at_the_kernel_segment_limit() {
        let mut batch = SendBatch::new(2);
        assert!(batch.push((addr(1), None), &[0; 10]));
        assert!(!batch.is_full());
        assert!(batch.push((addr(1), None), &[0; 10]));
        assert!(batch.is_full());
        assert!(!batch.push((addr(1), None), &[0; 10]));
    }

    #[test]
    fn gso_batch_never_passes_the_kernels_64_kib_payload_limit() {
        // 64 segments of 1452 bytes would be 92,928 bytes: the kernel
        // refuses such a send whole (EMSGSIZE), losing every packet in it.
        let mut batch = SendBatch::new(64);
        let mut pushed = 0;
        while !batch.is_full() && batch.push((addr(1), None), &[7; 1452]) {
            pushed += 1;
        }
        assert_eq!(pushed, MAX_GSO_PAYLOAD / 1452);
        let (_, len, segment) = batch.take().expect("a batch");
        assert!(len <= MAX_GSO_PAYLOAD);
        assert_eq!(segment, 1452);
    }

    #[test]
    fn batched_socket_delivers_a_gso_batch_as_separate_datagrams() {
        let mut a = BatchSocket::bind(addr(0)).expect("bind");
        let b = std::net::UdpSocket::bind(addr(0)).expect("bind");
        let to = b.local_addr().expect("addr");
        let from = a.local_addr().expect("addr");
        let n = a.batch.max_segments().min(3);
        for i in 0..n as u8 {
            a.try_queue(to, None, &[i; 1200]).expect("queued");
        }
        // A batch the kernel's segment limit did not fill waits for a flush.
        assert_eq!(a.has_pending(), a.batch.max_segments() > n);
        a.try_flush().expect("sent");
        assert!(!a.has_pending());
        b.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 2000];
        for i in 0..n as u8 {
            let (len, src) = b.recv_from(&mut buf).expect("datagram");
            assert_eq!((len, src), (1200, from));
            assert!(buf[..len].iter().all(|x| *x == i));
        }
        // Nothing waiting: the non-blocking receive says so at once.
        let nothing = a.try_recv().expect_err("nothing yet");
        assert_eq!(nothing.kind(), io::ErrorKind::WouldBlock);
        // And the batched receive side splits what arrives.
        b.send_to(&[9; 700], from).expect("sent");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let slots = loop {
            match a.try_recv() {
                Ok(n) => break n,
                Err(e) if would_block(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("receive failed: {e}"),
            }
        };
        assert_eq!(slots, 1);
        let (src, mut datagrams) = a.received(0);
        assert_eq!(src, to);
        assert_eq!(datagrams.next().map(|d| d.len()), Some(700));
    }

    /// Receives one datagram on `socket` within 5 s: its bytes and sender.
    fn recv_one(socket: &std::net::UdpSocket) -> (Vec<u8>, SocketAddr) {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 2000];
        let (n, from) = socket.recv_from(&mut buf).expect("a datagram");
        (buf[..n].to_vec(), from)
    }

    #[test]
    fn answers_to_many_destinations_wait_for_one_sendmmsg_and_all_arrive_in_order() {
        let mut a = BatchSocket::bind(addr(0)).expect("bind");
        let from = a.local_addr().expect("addr");
        let peers: Vec<std::net::UdpSocket> = (0..3)
            .map(|_| std::net::UdpSocket::bind(addr(0)).expect("bind"))
            .collect();
        // More than one sendmmsg's worth, round robin over the peers: no two
        // consecutive datagrams share a destination, so GSO joins none.
        let total = MMSG_SLOTS + 7;
        for i in 0..total {
            let to = peers[i % peers.len()].local_addr().expect("addr");
            a.try_queue(to, Some(from.ip()), &[i as u8; 48])
                .expect("queued");
        }
        // The last ones wait for the flush (one syscall for them all).
        assert!(a.has_pending());
        if cfg!(target_os = "linux") {
            assert!(a.batch.singles.pending(), "answers were sent one by one");
        }
        a.try_flush().expect("sent");
        assert!(!a.has_pending());
        for i in 0..total {
            let (bytes, src) = recv_one(&peers[i % peers.len()]);
            assert_eq!(src, from);
            assert_eq!(bytes, [i as u8; 48]);
        }
    }

    #[test]
    fn a_gso_run_after_single_answers_leaves_after_them() {
        let mut a = BatchSocket::bind(addr(0)).expect("bind");
        let b = std::net::UdpSocket::bind(addr(0)).expect("bind");
        let c = std::net::UdpSocket::bind(addr(0)).expect("bind");
        let (to_b, to_c) = (b.local_addr().expect("addr"), c.local_addr().expect("addr"));
        a.try_queue(to_b, None, &[1; 100]).expect("queued");
        a.try_queue(to_c, None, &[2; 100]).expect("queued");
        a.try_queue(to_b, None, &[3; 100]).expect("queued");
        a.try_queue(to_b, None, &[4; 100]).expect("queued");
        a.try_flush().expect("sent");
        assert_eq!(recv_one(&b).0, [1; 100]);
        assert_eq!(recv_one(&b).0, [3; 100]);
        assert_eq!(recv_one(&b).0, [4; 100]);
        assert_eq!(recv_one(&c).0, [2; 100]);
    }

    /// Answers each datagram to its sender, from where it arrived.
    #[derive(Default)]
    struct Answerer {
        heard: Vec<(SocketAddr, Option<IpAddr>)>,
        out: Vec<tryst_core::machine::OwnedTransmit>,
    }

    impl Machine for Answerer {
        type Fact = ();
        type Event = ();
        type Io = ();
        fn handle_input(&mut self, _now: Instant, input: Input<'_>, _io: &mut ()) {
            if let Input::Datagram { from, local, bytes } = input {
                self.heard.push((from, local));
                let to = tryst_core::machine::Destination::Udp(from);
                self.out.extend(
                    tryst_core::machine::OwnedTransmit::from_bytes(to, bytes)
                        .map(|t| t.from_local(local)),
                );
            }
        }
        fn handle_timeout(&mut self, _now: Instant) {}
        fn poll_output(
            &mut self,
            _now: Instant,
            buf: &mut [u8],
            _io: &mut (),
        ) -> tryst_core::machine::Output<(), ()> {
            match self.out.pop().and_then(|t| t.write_into(buf)) {
                Some(t) => tryst_core::machine::Output::Transmit(t),
                None => tryst_core::machine::Output::Timeout(None),
            }
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
    }

    #[test]
    fn an_answer_leaves_from_the_address_its_request_arrived_at() {
        // A server on 0.0.0.0 of a host with two addresses (127.0.0.1 and
        // 127.0.0.2 on loopback); a client talks to the second. Without the
        // arrival address the kernel would answer from 127.0.0.1 (the one it
        // picks for the client), which a NAT in front of the client drops.
        let mut server = BatchSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).expect("bind");
        let port = server.local_addr().expect("addr").port();
        let second = SocketAddr::from(([127, 0, 0, 2], port));
        let client = std::net::UdpSocket::bind(addr(0)).expect("bind");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        client.send_to(b"hello", second).expect("sent");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let slots = loop {
            match server.try_recv() {
                Ok(n) => break n,
                Err(e) if would_block(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("receive failed: {e}"),
            }
        };
        let mut machine = Answerer::default();
        let now = Instant::from_micros(1);
        server.deliver(slots, now, &mut machine, &mut ());
        let client_addr = client.local_addr().expect("addr");
        assert_eq!(machine.heard, [(client_addr, Some(second.ip()))]);
        let mut buf = [0u8; 64];
        while let tryst_core::machine::Output::Transmit(t) =
            machine.poll_output(now, &mut buf, &mut ())
        {
            let tryst_core::machine::Destination::Udp(to) = t.destination else {
                panic!("not a datagram");
            };
            server
                .try_queue(to, t.local, &buf[..t.len])
                .expect("queued");
        }
        server.try_flush().expect("sent");
        let mut answer = [0u8; 64];
        let (n, from) = client.recv_from(&mut answer).expect("an answer");
        assert_eq!(&answer[..n], b"hello");
        assert_eq!(from, second, "answered from the wrong address");
    }
}
