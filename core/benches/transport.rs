//! What the peer transport costs without crypto or sockets:
//! `cargo bench -p tryst-core --bench transport`.
//!
//! Two [`Transport`]s pass plaintext packets in memory (no loss, a virtual
//! clock with a 50 µs round trip, like loopback): one sends a 16 MiB stream,
//! the other receives and acknowledges it. Criterion reports MB/s of stream
//! bytes moved, i.e. the machine's ceiling per core (both sides on one
//! thread) before AES-GCM and the UDP syscalls.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tryst_core::peer::transport::{
    PeerSink, StreamSource, Transport, TransportConfig, MAX_PAYLOAD_LEN,
};
use tryst_core::time::Instant;

/// Bytes moved per iteration.
const STREAM_LEN: u64 = 16 << 20;
/// One-way delay of the in-memory pipe (µs).
const ONE_WAY_US: u64 = 25;

struct Source;

impl StreamSource for Source {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> usize {
        let n = (STREAM_LEN - offset.min(STREAM_LEN)).min(buf.len() as u64) as usize;
        // A file read would copy too; keep it one memcpy-like fill.
        buf[..n].fill(offset as u8);
        n
    }
}

#[derive(Default)]
struct Sink {
    bytes: u64,
}

impl PeerSink for Sink {
    fn stream_data(&mut self, _offset: u64, data: &[u8]) {
        self.bytes += data.len() as u64;
        black_box(data);
    }

    fn datagram(&mut self, data: &[u8]) {
        black_box(data);
    }
}

/// A packet in flight: arrival time, pn, length, bytes.
struct InFlight {
    at: u64,
    pn: u64,
    len: usize,
    buf: [u8; MAX_PAYLOAD_LEN],
}

fn transfer() -> u64 {
    let config = TransportConfig {
        initial_rtt: Duration::from_micros(2 * ONE_WAY_US),
        max_mtu: 1452,
        ..TransportConfig::default()
    };
    let mut a = Box::new(Transport::new(Instant::ZERO, config));
    let mut b = Box::new(Transport::new(Instant::ZERO, config));
    a.stream_extend(STREAM_LEN);
    a.stream_finish(STREAM_LEN).unwrap();
    let (mut pa, mut pb) = (0u64, 0u64);
    let mut source = Source;
    let mut sink = Sink::default();
    let mut nothing = Sink::default();
    let mut to_b: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
    let mut to_a: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
    let mut now = 0u64;
    let mut done = false;
    while !done {
        let t = Instant::from_micros(now);
        // a sends what it may.
        loop {
            let mut p = InFlight {
                at: now + ONE_WAY_US,
                pn: pa,
                len: 0,
                buf: [0; MAX_PAYLOAD_LEN],
            };
            let size = a.max_payload();
            match a.write_packet(t, pa, &mut p.buf[..size], &mut source) {
                Some(n) => {
                    p.len = n;
                    pa += 1;
                    to_b.push_back(p);
                }
                None => break,
            }
        }
        // b receives what arrived and answers.
        while to_b.front().is_some_and(|p| p.at <= now) {
            let p = to_b.pop_front().unwrap();
            b.handle_packet(t, p.pn, &p.buf[..p.len], &mut sink)
                .unwrap();
        }
        loop {
            let mut p = InFlight {
                at: now + ONE_WAY_US,
                pn: pb,
                len: 0,
                buf: [0; MAX_PAYLOAD_LEN],
            };
            let size = b.max_payload();
            match b.write_packet(t, pb, &mut p.buf[..size], &mut Source) {
                Some(n) => {
                    p.len = n;
                    pb += 1;
                    to_a.push_back(p);
                }
                None => break,
            }
        }
        while to_a.front().is_some_and(|p| p.at <= now) {
            let p = to_a.pop_front().unwrap();
            a.handle_packet(t, p.pn, &p.buf[..p.len], &mut nothing)
                .unwrap();
        }
        while let Some(e) = a.poll_event() {
            if matches!(
                e,
                tryst_core::peer::transport::TransportEvent::StreamAcked { .. }
            ) {
                done = true;
            }
        }
        while b.poll_event().is_some() {}
        // Next event: a packet arrival or a timer.
        let mut next = [to_b.front().map(|p| p.at), to_a.front().map(|p| p.at)]
            .into_iter()
            .flatten()
            .chain(a.poll_timeout().map(|i| i.as_micros()))
            .chain(b.poll_timeout().map(|i| i.as_micros()))
            .min()
            .unwrap_or(now + 1);
        next = next.max(now + 1);
        now = next;
        let t = Instant::from_micros(now);
        a.handle_timeout(t);
        b.handle_timeout(t);
    }
    assert_eq!(sink.bytes, STREAM_LEN);
    sink.bytes
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("transport");
    group.throughput(Throughput::Bytes(STREAM_LEN));
    group.sample_size(10);
    group.bench_function("stream_16MiB_in_memory", |bench| {
        bench.iter(|| black_box(transfer()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
