//! The `relay_link` harness: the relay link's codec and both its ends,
//! driven by arbitrary bytes.
//! - [`LinkMessage::decode`] never panics, and whatever it accepts encodes
//!   back to the same bytes (the codec is canonical);
//! - a [`LinkResponder`] (the relay) fed the input in chunks the input
//!   chooses never panics, gives nothing to an initiator it did not list,
//!   and writes nothing before a valid handshake (random bytes cannot
//!   make one: no message comes out of it);
//! - a [`LinkInitiator`] (the session server) fed the input as the
//!   relay's stream never panics and never opens on forged bytes.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tryst_core::crypto::StaticKeypair;
use tryst_core::relay::link::{LinkInitiator, LinkMessage, LinkResponder, MAX_LINK_MESSAGE_LEN};
use tryst_core::relay::RelayKey;
use tryst_core::time::Instant;

/// Runs every property on `data`.
pub fn run(data: &[u8]) {
    if let Ok(message) = LinkMessage::decode(data) {
        let mut out = [0u8; MAX_LINK_MESSAGE_LEN];
        let n = message.encode(&mut out);
        assert_eq!(&out[..n], data, "a decoded link message re-encodes");
    }
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let key = RelayKey([0x42; 32]);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let listed = StaticKeypair::from_secret([9; 32]);
    let mut relay = LinkResponder::new(&key, &[listed.public_key()]);
    for piece in rest.chunks(chunk) {
        if relay.receive(&mut rng, Instant::ZERO, piece).is_err() {
            break;
        }
    }
    assert!(relay.peer().is_none(), "no forged handshake links");
    assert!(relay.take_output().is_empty(), "nothing to a stranger");
    assert!(relay.poll_message().is_none());
    let Ok(mut server) = LinkInitiator::start(&mut rng, Instant::ZERO, &listed, &key) else {
        return;
    };
    let _ = server.take_output();
    for piece in rest.chunks(chunk) {
        if server.receive(Instant::ZERO, piece).is_err() {
            break;
        }
    }
    assert!(!server.is_open(), "a forged reply opens nothing");
    assert!(server.poll_event().is_none());
}
