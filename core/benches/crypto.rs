//! What tryst's cryptography costs: `cargo bench -p tryst-core --bench crypto`.
//!
//! - one Noise IK handshake, both sides (the cost of a registration),
//! - one seal and open of a 100-byte record (every control message after it),
//! - one keepalive tag verification (the trigger server's per-packet work).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tryst_core::crypto::udp_auth;
use tryst_core::crypto::{Initiator, Responder, SecureChannel, StaticKeypair};
use tryst_core::time::Instant;
use tryst_core::wire::{DeviceId, HandshakeInit, HandshakeReply, Message, UdpKey};

fn handshake(
    rng: &mut ChaCha20Rng,
    term: &StaticKeypair,
    server: &StaticKeypair,
) -> (SecureChannel, SecureChannel) {
    let now = Instant::ZERO;
    let (mut m1, mut m2, mut p) = ([0u8; 256], [0u8; 256], [0u8; 256]);
    let (mut init, n1) =
        Initiator::start(rng, now, term, &server.public_key(), b"register", &mut m1).unwrap();
    let msg = HandshakeInit { noise: &m1[..n1] };
    let (resp, _) = Responder::accept(rng, now, server, &msg, &mut p).unwrap();
    let (s, n2) = resp.reply(7, b"ack", &mut m2).unwrap();
    let reply = HandshakeReply {
        channel: 7,
        noise: &m2[..n2],
    };
    let (t, _) = init.finish(now, &reply, &mut p).unwrap();
    (t, s)
}

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let server = StaticKeypair::generate(&mut rng);
    let term = StaticKeypair::generate(&mut rng);

    c.bench_function("ik_handshake_both_sides", |b| {
        b.iter(|| black_box(handshake(&mut rng, &term, &server)))
    });

    let (mut t, mut s) = handshake(&mut rng, &term, &server);
    let plaintext = [0x42u8; 100];
    let (mut wire, mut out) = ([0u8; 256], [0u8; 256]);
    c.bench_function("seal_open_100_byte_record", |b| {
        b.iter(|| {
            let n = t.seal(black_box(&plaintext), &mut wire).unwrap();
            let Ok(Message::Sealed(record)) = Message::decode(&wire[..n]) else {
                unreachable!()
            };
            black_box(s.open(&record, &mut out).unwrap())
        })
    });

    let key = UdpKey([0x77; 32]);
    let keepalive = udp_auth::seal_keepalive(&key, DeviceId(1), 12345);
    c.bench_function("keepalive_tag_verify", |b| {
        b.iter(|| udp_auth::verify(black_box(&key), black_box(&keepalive)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
