//! tryst's peer-session machine alone: two `tryst_core::peer::session::PeerSession`s
//! in one process and one thread, handing each other their datagrams in
//! memory (no sockets, no kernel), with an in-memory "file" as the source and
//! a sink that checks every byte it is given.
//!
//! Time is the real monotonic clock (so pacing and RTT are real); when
//! neither side has anything to send the harness waits for the earlier
//! `poll_timeout`. CPU per side is the wall time spent inside that side's
//! calls (one thread: wall time there is CPU time); the harness's own queue
//! work and waiting count for neither.

#[cfg(not(feature = "machine"))]
pub fn run_once(_size: u64) -> anyhow::Result<crate::report::Sample> {
    anyhow::bail!("built without the `machine` feature (no tryst_core::peer::session::PeerSession)")
}

#[cfg(feature = "machine")]
pub use imp::run_once;

#[cfg(feature = "machine")]
mod imp {
    use std::collections::VecDeque;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::{Duration, Instant};

    use anyhow::{bail, Result};
    use rand_core::{OsRng, RngCore};
    use tryst_core::crypto::StaticKeypair;
    use tryst_core::peer::packet::MAX_DATAGRAM_LEN;
    use tryst_core::peer::session::{PeerConfig, PeerEvent, PeerSession, SessionParams};
    use tryst_core::peer::transport::{PeerSink, StreamSource};
    use tryst_core::time::Instant as CoreInstant;
    use tryst_core::wire::{Role, SessionId, SessionKey};

    use crate::report::Sample;

    /// The "file": this many pseudo-random bytes repeated (a length that is
    /// no power of two, so packet boundaries wander across it).
    const BLOCK: usize = (1 << 20) - 3;
    /// Datagrams a direction may hold (like a socket buffer); beyond it the
    /// newest is dropped, which the transport sees as loss.
    const QUEUE: usize = 4096;
    /// Datagrams one side may emit before the other gets its turn.
    const BURST: usize = 64;
    /// A transfer that takes longer than this is cut.
    const LIMIT: Duration = Duration::from_secs(900);

    fn block() -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Walks the stream's bytes from `offset` for `len` bytes in pieces of
    /// the block: `f(done, piece)` for each, stopping when it returns false.
    fn pieces(
        block: &[u8],
        mut offset: u64,
        len: usize,
        mut f: impl FnMut(usize, &[u8]) -> bool,
    ) -> bool {
        let mut done = 0;
        while done < len {
            let at = (offset % BLOCK as u64) as usize;
            let n = (BLOCK - at).min(len - done);
            if !f(done, &block[at..at + n]) {
                return false;
            }
            done += n;
            offset += n as u64;
        }
        true
    }

    struct Source<'a> {
        block: &'a [u8],
        len: u64,
    }

    impl StreamSource for Source<'_> {
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> usize {
            let n = self.len.saturating_sub(offset).min(buf.len() as u64) as usize;
            pieces(self.block, offset, n, |done, p| {
                buf[done..done + p.len()].copy_from_slice(p);
                true
            });
            n
        }
    }

    struct Sink<'a> {
        block: &'a [u8],
        first: Option<Instant>,
        bytes: u64,
        bad: u64,
    }

    impl PeerSink for Sink<'_> {
        fn stream_data(&mut self, offset: u64, data: &[u8]) {
            self.first.get_or_insert_with(Instant::now);
            self.bytes += data.len() as u64;
            if !pieces(self.block, offset, data.len(), |done, p| {
                data[done..done + p.len()] == *p
            }) {
                self.bad += 1;
            }
        }
        fn datagram(&mut self, _data: &[u8]) {}
    }

    /// A direction of the in-memory link: datagrams and their lengths.
    struct Link {
        queue: VecDeque<(Box<[u8; MAX_DATAGRAM_LEN]>, usize)>,
        // Boxed so a packet moves between the queue and the pool as a pointer.
        #[allow(clippy::vec_box)]
        free: Vec<Box<[u8; MAX_DATAGRAM_LEN]>>,
        dropped: u64,
    }

    impl Link {
        fn new() -> Link {
            Link {
                queue: VecDeque::with_capacity(QUEUE),
                free: Vec::new(),
                dropped: 0,
            }
        }
        fn buffer(&mut self) -> Box<[u8; MAX_DATAGRAM_LEN]> {
            self.free
                .pop()
                .unwrap_or_else(|| Box::new([0u8; MAX_DATAGRAM_LEN]))
        }
    }

    /// Runs `side`'s timers if due, then moves up to BURST datagrams it
    /// sends to `to` into `link`. Returns how many it sent.
    #[allow(clippy::too_many_arguments)]
    fn transmit(
        side: &mut PeerSession,
        now: CoreInstant,
        to: SocketAddr,
        link: &mut Link,
        source: &mut Source<'_>,
        rng: &mut OsRng,
    ) -> usize {
        if side.poll_timeout().is_some_and(|t| t <= now) {
            side.handle_timeout(now, rng);
        }
        let mut sent = 0;
        while sent < BURST {
            let mut buf = link.buffer();
            let Some((dst, len)) = side.poll_transmit(now, &mut buf[..], source) else {
                link.free.push(buf);
                break;
            };
            sent += 1;
            if dst != to || link.queue.len() >= QUEUE {
                link.dropped += 1;
                link.free.push(buf);
            } else {
                link.queue.push_back((buf, len));
            }
        }
        sent
    }

    /// Hands every queued datagram of `link` to `side`.
    fn deliver(
        side: &mut PeerSession,
        now: CoreInstant,
        from: SocketAddr,
        link: &mut Link,
        sink: &mut impl PeerSink,
        rng: &mut OsRng,
    ) -> usize {
        let n = link.queue.len();
        while let Some((mut buf, len)) = link.queue.pop_front() {
            side.handle_datagram(now, from, &mut buf[..len], sink, rng);
            link.free.push(buf);
        }
        n
    }

    /// One in-memory transfer of `size` bytes from a connecting side `a` to a
    /// connected side `b`.
    pub fn run_once(size: u64) -> Result<Sample> {
        let block = block();
        let mut rng = OsRng;
        let t0 = Instant::now();
        let clock = || CoreInstant::from_micros(t0.elapsed().as_micros() as u64);
        let a_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 40001));
        let b_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 40002));
        let (ka, kb) = (
            StaticKeypair::generate(&mut rng),
            StaticKeypair::generate(&mut rng),
        );
        let mut id = [0u8; 16];
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut key);
        let params = |role, peer_key, peer_addr| SessionParams {
            session_id: SessionId(id),
            role,
            peer_key,
            peer_addr,
            session_key: SessionKey(key),
            duration_secs: 3600,
            relay: None,
        };
        let config = PeerConfig::default();
        let mut a = PeerSession::new(
            clock(),
            config.clone(),
            &ka,
            params(Role::Connecting, kb.public_key(), b_addr),
            &mut rng,
        );
        let mut b = PeerSession::new(
            clock(),
            config,
            &kb,
            params(Role::Connected, ka.public_key(), a_addr),
            &mut rng,
        );
        a.stream_extend(size);
        if let Err(e) = a.stream_finish(size) {
            bail!("stream_finish: {e:?}");
        }
        let mut source = Source {
            block: &block,
            len: size,
        };
        // b sends no stream; its source is empty.
        let mut no_source = Source {
            block: &block,
            len: 0,
        };
        let mut sink = Sink {
            block: &block,
            first: None,
            bytes: 0,
            bad: 0,
        };
        let mut a_sink = Sink {
            block: &block,
            first: None,
            bytes: 0,
            bad: 0,
        };
        let (mut ab, mut ba) = (Link::new(), Link::new());
        let (mut a_cpu, mut b_cpu) = (Duration::ZERO, Duration::ZERO);
        let mut last: Option<Instant> = None;
        loop {
            let t = Instant::now();
            let now = clock();
            let a_sent = transmit(&mut a, now, b_addr, &mut ab, &mut source, &mut rng);
            let t1 = Instant::now();
            a_cpu += t1 - t;
            let now = clock();
            let b_got = deliver(&mut b, now, a_addr, &mut ab, &mut sink, &mut rng);
            let b_sent = transmit(&mut b, now, a_addr, &mut ba, &mut no_source, &mut rng);
            let t2 = Instant::now();
            b_cpu += t2 - t1;
            let now = clock();
            let a_got = deliver(&mut a, now, b_addr, &mut ba, &mut a_sink, &mut rng);
            a_cpu += t2.elapsed();
            while let Some(ev) = b.poll_event() {
                match ev {
                    PeerEvent::StreamReceived { .. } => {
                        last.get_or_insert_with(Instant::now);
                    }
                    PeerEvent::Ended { reason, .. } => bail!("receiver ended: {reason:?}"),
                    _ => {}
                }
            }
            while let Some(ev) = a.poll_event() {
                if let PeerEvent::Ended { reason, .. } = ev {
                    bail!("sender ended: {reason:?}");
                }
            }
            if last.is_some() {
                break;
            }
            if t0.elapsed() > LIMIT {
                bail!("cut after {LIMIT:?}: {} of {size} bytes", sink.bytes);
            }
            if a_sent + b_got + b_sent + a_got == 0 {
                // Nothing moved: wait for the earlier timer (pacing, acks, loss).
                let next = [a.poll_timeout(), b.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                if let Some(next) = next {
                    let wait = next.saturating_duration_since(clock());
                    if wait > Duration::from_millis(2) {
                        std::thread::sleep(wait - Duration::from_millis(1));
                    } else {
                        while clock() < next {
                            std::hint::spin_loop();
                        }
                    }
                } else {
                    bail!("both sides idle with no timer");
                }
            }
        }
        let last = last.unwrap_or_else(Instant::now);
        let first = sink.first.unwrap_or(t0);
        if sink.bad > 0 {
            bail!("{} stream chunks differed from the source", sink.bad);
        }
        // One thread runs both sides; with a core each (as the processes of
        // the other rows have) the busier side would bound the rate.
        let busier = a_cpu.max(b_cpu).as_secs_f64();
        let mut note = format!(
            "one core for both sides; a core each would allow ~{:.0} MB/s",
            size as f64 / busier / 1e6
        );
        if let Some(s) = a.transport_stats() {
            note += &format!(
                "; pkts {} lost {} retx {} B, mtu {}, queue drops {}",
                s.packets_sent, s.packets_lost, s.stream_bytes_retransmitted, s.mtu, ab.dropped
            );
        }
        Ok(Sample {
            bytes: size,
            secs: (last - first).as_secs_f64(),
            snd_cpu: a_cpu.as_secs_f64(),
            rcv_cpu: b_cpu.as_secs_f64(),
            note,
        })
    }
}
