//! The UDP socket every role's loop uses: the shared batching of
//! [`tryst_std::udp`] (recvmmsg/GRO receive, GSO send) on a tokio socket,
//! waiting for readiness with `try_io` as quinn does.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tryst_core::machine::Machine;
use tryst_core::time::Instant;
use tryst_std::udp::UdpBatch;

/// The UDP socket with its batching state and buffers.
#[derive(Debug)]
pub struct BatchSocket {
    socket: UdpSocket,
    batch: UdpBatch,
}

impl BatchSocket {
    /// Binds a batching socket to `addr` (inside the runtime that polls it).
    pub fn bind(addr: SocketAddr) -> io::Result<BatchSocket> {
        BatchSocket::from_std(std::net::UdpSocket::bind(addr)?)
    }

    /// Takes a bound socket (inside the runtime that polls it).
    pub fn from_std(std_socket: std::net::UdpSocket) -> io::Result<BatchSocket> {
        let batch = UdpBatch::new(&std_socket)?;
        Ok(BatchSocket {
            socket: UdpSocket::from_std(std_socket)?,
            batch,
        })
    }

    /// Waits for datagrams; returns how many slots were filled.
    pub async fn recv(&mut self) -> io::Result<usize> {
        let (socket, batch) = (&self.socket, &mut self.batch);
        socket
            .async_io(Interest::READABLE, || batch.try_recv(socket))
            .await
    }

    /// The datagrams of receive slot `slot` (several when GRO coalesced
    /// them), each mutable so the endpoint can decrypt in place.
    pub fn received(&mut self, slot: usize) -> (SocketAddr, std::slice::ChunksMut<'_, u8>) {
        self.batch.received(slot)
    }

    /// Feeds `machine` the datagrams [`Self::recv`] received, in place.
    pub fn deliver<M: Machine + ?Sized>(
        &mut self,
        slots: usize,
        now: Instant,
        machine: &mut M,
        io: &mut M::Io,
    ) {
        self.batch.deliver(slots, now, machine, io);
    }

    /// Sends the pending GSO batch, if any.
    pub async fn flush(&mut self) {
        let (socket, batch) = (&self.socket, &mut self.batch);
        if let Err(e) = socket
            .async_io(Interest::WRITABLE, || batch.try_flush(socket))
            .await
        {
            tracing::debug!(error = %e, "udp socket not writable");
        }
    }

    /// Adds a datagram to the GSO batch, sending the batch first if the
    /// datagram cannot join it, and after if it is full.
    pub async fn queue(&mut self, to: SocketAddr, local: Option<IpAddr>, datagram: &[u8]) {
        let (socket, batch) = (&self.socket, &mut self.batch);
        if let Err(e) = socket
            .async_io(Interest::WRITABLE, || {
                batch.try_queue(socket, to, local, datagram)
            })
            .await
        {
            tracing::debug!(%to, error = %e, "datagram not sent");
        }
    }

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

    #[tokio::test]
    async fn batched_socket_delivers_a_gso_batch_as_separate_datagrams() {
        let mut a = BatchSocket::bind(addr(0)).unwrap();
        let b = std::net::UdpSocket::bind(addr(0)).unwrap();
        let to = b.local_addr().unwrap();
        let from = a.local_addr().unwrap();
        let n = a.batch.max_segments().min(3);
        for i in 0..n as u8 {
            a.queue(to, None, &[i; 1200]).await;
        }
        a.flush().await;
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2000];
        for i in 0..n as u8 {
            let (len, src) = b.recv_from(&mut buf).unwrap();
            assert_eq!((len, src), (1200, from));
            assert!(buf[..len].iter().all(|x| *x == i));
        }
        // And the batched receive side splits what arrives, once readable.
        b.send_to(&[9; 700], from).unwrap();
        let slots = tokio::time::timeout(Duration::from_secs(5), a.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(slots, 1);
        let (src, mut datagrams) = a.received(0);
        assert_eq!(src, to);
        assert_eq!(datagrams.next().map(|d| d.len()), Some(700));
    }
}
