use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::time::Instant;

const SID: SessionId = SessionId([0x5e; SESSION_ID_LEN]);

use super::vectors::{LINK_ALLOCATED, LINK_END, LINK_ENDED, LINK_EXTEND};

fn vectors() -> [(&'static [u8], LinkMessage); 4] {
    [
        (
            LINK_EXTEND,
            LinkMessage::Extend {
                session_id: SID,
                duration_secs: 3600,
            },
        ),
        (LINK_END, LinkMessage::End { session_id: SID }),
        (LINK_ALLOCATED, LinkMessage::Allocated { session_id: SID }),
        (
            LINK_ENDED,
            LinkMessage::Ended {
                session_id: SID,
                reason: RelayEndReason::Ended,
                from_requester: 65_536,
                from_target: 8_192,
            },
        ),
    ]
}

#[test]
fn link_messages_match_their_vectors_both_ways() {
    for (bytes, message) in vectors() {
        let mut out = [0u8; MAX_LINK_MESSAGE_LEN];
        let n = message.encode(&mut out);
        assert_eq!(&out[..n], bytes, "{message:?}");
        assert_eq!(LinkMessage::decode(bytes), Ok(message));
    }
}

#[test]
fn link_message_decoder_refuses_other_lengths_types_and_reasons() {
    let mut longer = LINK_END.to_vec();
    longer.push(0);
    assert_eq!(
        LinkMessage::decode(&longer),
        Err(LinkDecodeError::BadLength)
    );
    assert_eq!(
        LinkMessage::decode(&LINK_END[..LINK_END.len() - 1]),
        Err(LinkDecodeError::BadLength)
    );
    let mut other = LINK_END.to_vec();
    other[3] = 0x3c;
    assert_eq!(
        LinkMessage::decode(&other),
        Err(LinkDecodeError::UnknownType(0x3c))
    );
    let mut reason = LINK_ENDED.to_vec();
    reason[HEADER_LEN + SESSION_ID_LEN] = 0;
    assert_eq!(
        LinkMessage::decode(&reason),
        Err(LinkDecodeError::BadReason(0))
    );
    let mut version = LINK_END.to_vec();
    version[2] = 2;
    assert_eq!(
        LinkMessage::decode(&version),
        Err(LinkDecodeError::BadHeader)
    );
}

fn relay_key() -> RelayKey {
    RelayKey([7; 32])
}

/// Runs bytes both ways until neither end has any to write.
fn pump(rng: &mut ChaCha20Rng, init: &mut LinkInitiator, resp: &mut LinkResponder) {
    for _ in 0..8 {
        let up = init.take_output();
        resp.receive(rng, Instant::ZERO, &up)
            .expect("relay takes it");
        let down = resp.take_output();
        init.receive(Instant::ZERO, &down).expect("server takes it");
        if up.is_empty() && down.is_empty() {
            return;
        }
    }
}

#[test]
fn relay_link_carries_ends_and_extensions_up_and_byte_counts_down() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let server = StaticKeypair::generate(&mut rng);
    let mut init = LinkInitiator::start(&mut rng, Instant::ZERO, &server, &relay_key()).unwrap();
    // Queued before the reply, sent after it.
    init.send(LinkMessage::Extend {
        session_id: SID,
        duration_secs: 600,
    })
    .unwrap();
    let mut resp = LinkResponder::new(&relay_key(), &[server.public_key()]);
    pump(&mut rng, &mut init, &mut resp);
    assert!(init.is_open());
    assert_eq!(resp.peer(), Some(server.public_key()));
    init.send(LinkMessage::End { session_id: SID }).unwrap();
    pump(&mut rng, &mut init, &mut resp);
    assert_eq!(
        resp.poll_message(),
        Some(LinkMessage::Extend {
            session_id: SID,
            duration_secs: 600
        })
    );
    assert_eq!(
        resp.poll_message(),
        Some(LinkMessage::End { session_id: SID })
    );
    assert_eq!(resp.poll_message(), None);
    let ended = RelayEvent::Ended {
        session_id: SID,
        reason: RelayEndReason::Ended,
        from_requester: 10,
        from_target: 20,
    };
    resp.send(&ended).unwrap();
    pump(&mut rng, &mut init, &mut resp);
    assert_eq!(init.poll_event(), Some(ended));
    assert_eq!(init.poll_event(), None);
}

#[test]
fn relay_link_refuses_an_unlisted_session_server_without_a_reply() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let listed = StaticKeypair::generate(&mut rng);
    let stranger = StaticKeypair::generate(&mut rng);
    let mut init = LinkInitiator::start(&mut rng, Instant::ZERO, &stranger, &relay_key()).unwrap();
    let mut resp = LinkResponder::new(&relay_key(), &[listed.public_key()]);
    let up = init.take_output();
    assert_eq!(
        resp.receive(&mut rng, Instant::ZERO, &up),
        Err(LinkError::NotPermitted)
    );
    assert!(resp.take_output().is_empty());
    assert_eq!(resp.peer(), None);
}

#[test]
fn relay_link_to_a_relay_with_another_key_never_opens() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let server = StaticKeypair::generate(&mut rng);
    let mut init =
        LinkInitiator::start(&mut rng, Instant::ZERO, &server, &RelayKey([8; 32])).unwrap();
    let mut resp = LinkResponder::new(&relay_key(), &[server.public_key()]);
    let up = init.take_output();
    assert_eq!(
        resp.receive(&mut rng, Instant::ZERO, &up),
        Err(LinkError::Handshake)
    );
    assert!(!init.is_open());
}

#[test]
fn relay_link_refuses_messages_from_the_wrong_side_and_before_the_handshake() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let server = StaticKeypair::generate(&mut rng);
    let mut init = LinkInitiator::start(&mut rng, Instant::ZERO, &server, &relay_key()).unwrap();
    assert_eq!(
        init.send(LinkMessage::Allocated { session_id: SID }),
        Err(LinkError::Unexpected)
    );
    let mut resp = LinkResponder::new(&relay_key(), &[server.public_key()]);
    // Nothing to report to before the handshake.
    assert_eq!(
        resp.send(&RelayEvent::Allocated { session_id: SID }),
        Err(LinkError::Unexpected)
    );
    // Garbage is a stream error.
    assert_eq!(
        resp.receive(&mut rng, Instant::ZERO, b"GET / HTTP/1.1\r\n"),
        Err(LinkError::Stream)
    );
}

#[test]
fn relay_link_queue_is_bounded_while_the_handshake_runs() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let server = StaticKeypair::generate(&mut rng);
    let mut init = LinkInitiator::start(&mut rng, Instant::ZERO, &server, &relay_key()).unwrap();
    for _ in 0..MAX_QUEUED {
        init.send(LinkMessage::End { session_id: SID }).unwrap();
    }
    assert_eq!(
        init.send(LinkMessage::End { session_id: SID }),
        Err(LinkError::QueueFull)
    );
}
